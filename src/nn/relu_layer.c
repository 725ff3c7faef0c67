/* ReLU forward/backward (backward masks on the OUTPUT, like PyTorch's
 * threshold_backward for an in-place ReLU). Parallel over element ranges. */
#include "nn/layers.h"

/* Compiled for AVX-512 / AVX2 / baseline and picked at load time (GCC
 * function multi-versioning); identical arithmetic on every path. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define DN_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DN_MULTIVERSION
#endif

typedef struct { const float *x, *dy; float *y; size_t count; int bwd; } relu_job;

DN_MULTIVERSION static void relu_fn(void *arg, int ith, int nth) {
    relu_job *j = arg;
    long b, e;
    dn_split((long)j->count, ith, nth, &b, &e);
    if (!j->bwd)
        for (long i = b; i < e; i++) j->y[i] = j->x[i] > 0.f ? j->x[i] : 0.f;
    else
        for (long i = b; i < e; i++) j->y[i] = j->x[i] > 0.f ? j->dy[i] : 0.f;
}

void dn_relu_fwd(const float *x, size_t count, float *y, dn_pool *pool) {
    relu_job j = {x, NULL, y, count, 0};
    if (pool) dn_pool_run(pool, relu_fn, &j); else relu_fn(&j, 0, 1);
}

void dn_relu_bwd(const float *y, const float *dy, size_t count, float *dx, dn_pool *pool) {
    relu_job j = {y, dy, dx, count, 1};
    if (pool) dn_pool_run(pool, relu_fn, &j); else relu_fn(&j, 0, 1);
}
