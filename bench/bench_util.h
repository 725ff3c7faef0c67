/* Small helpers shared by the C benches in bench/ (header-only: each bench is one
 * program linked against libdefectnet.a). */
#ifndef DN_BENCH_UTIL_H
#define DN_BENCH_UTIL_H
#include <stdio.h>
#include <stdlib.h>

/* The ImageNet ResNet-18 the benches default to: $DN_SHARED/weights/resnet18-imagenet.pth,
 * else ../shared/weights/... (relative to the repository root, where benches run). */
static inline const char *bench_default_weights(char *buf, size_t n) {
    const char *e = getenv("DN_SHARED");
    snprintf(buf, n, "%s/weights/resnet18-imagenet.pth", e && *e ? e : "../shared");
    return buf;
}
#endif
