/* AVX-512 fp32 micro-kernel: 8 rows x 32 columns (16 zmm accumulators), A
 * broadcast from the packed panel, two B vectors per k. Contract in kern_int.h. */
#include "kernels/kern_int.h"
#include <immintrin.h>

#define MR 8
#define NR 32

static inline __attribute__((always_inline)) void body(int kc, const float *a, long a_rs, long a_cs,
                                                       const float *b, float *c, long ldc, int mr, int nr, int accum,
                                                       const float *bias, const float *res, long ldr, int relu) {
    __m512 c0[MR], c1[MR];
    for (int i = 0; i < MR; i++) { c0[i] = _mm512_setzero_ps(); c1[i] = _mm512_setzero_ps(); }
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
        _mm_prefetch((const char *)(b + 8 * NR), _MM_HINT_T0);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            __m512 ai = _mm512_set1_ps(a[i * a_rs]);
            c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
            c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
        }
        a += a_cs;
        b += NR;
    }
    __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
    const __m512 zero = _mm512_setzero_ps();
    for (int i = 0; i < mr; i++) {
        float *ci = c + i * ldc;
        __m512 v0 = c0[i], v1 = c1[i];
        if (accum) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, ci));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, ci + 16));
        }
        if (bias) {
            __m512 bi = _mm512_set1_ps(bias[i]);
            v0 = _mm512_add_ps(v0, bi);
            v1 = _mm512_add_ps(v1, bi);
        }
        if (res) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, res + i * ldr));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, res + i * ldr + 16));
        }
        if (relu) { v0 = _mm512_max_ps(v0, zero); v1 = _mm512_max_ps(v1, zero); }
        _mm512_mask_storeu_ps(ci, m0, v0);
        _mm512_mask_storeu_ps(ci + 16, m1, v1);
    }
}

static void ukr_8x32(int kc, const float *a, const float *b, float *c, long ldc, int mr, int nr, int accum,
                     const float *bias, const float *res, long ldr, int relu) {
    body(kc, a, 1, MR, b, c, ldc, mr, nr, accum, bias, res, ldr, relu);
}
static void ukr_8x32_strided(int kc, const float *a, long a_rs, long a_cs, const float *b, float *c, long ldc, int mr,
                     int nr, int accum, const float *bias, const float *res, long ldr, int relu) {
    body(kc, a, a_rs, a_cs, b, c, ldc, mr, nr, accum, bias, res, ldr, relu);
}

const dn_ukr dn_ukr_avx512 = {MR, NR, ukr_8x32, ukr_8x32_strided, dn_pack_b_avx512, "avx512-8x32"};
