/* Runtime CPU feature detection for kernel dispatch. */
#include "core.h"
#include <stdlib.h>
#include <string.h>

unsigned dn_cpu_features(void) {
    static int cached = -1;
    if (cached >= 0) return (unsigned)cached;
    unsigned f = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) f |= DN_CPU_AVX2;
    if (__builtin_cpu_supports("fma")) f |= DN_CPU_FMA;
    if (__builtin_cpu_supports("avx512f")) f |= DN_CPU_AVX512F;
    if (__builtin_cpu_supports("avx512bw")) f |= DN_CPU_AVX512BW;
    if (__builtin_cpu_supports("avx512vl")) f |= DN_CPU_AVX512VL;
    if (__builtin_cpu_supports("avx512vnni")) f |= DN_CPU_AVX512VNNI;
#if __GNUC__ >= 12 || (defined(__clang__) && __clang_major__ >= 14)
    if (__builtin_cpu_supports("avx512bf16")) f |= DN_CPU_AVX512BF16;
#endif
#endif
    const char *e = getenv("DN_FORCE_REF");
    if (e && *e && strcmp(e, "0") != 0) f = 0;
    e = getenv("DN_MAX_ISA");
    if (e && strcmp(e, "avx2") == 0)
        f &= (DN_CPU_AVX2 | DN_CPU_FMA);
    cached = (int)f;
    return f;
}
