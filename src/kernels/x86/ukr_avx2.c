/* AVX2+FMA fp32 micro-kernel: 6 rows x 16 columns (12 ymm accumulators).
 * Contract in kern_int.h. Partial column tiles go through a small buffer
 * (AVX2 has no cheap masked float loads/stores for all cases). */
#include "kernels/kern_int.h"
#include <immintrin.h>

#define MR 6
#define NR 16

static inline __attribute__((always_inline)) void body(int kc, const float *a, long a_rs, long a_cs,
                                                       const float *b, float *c, long ldc, int mr, int nr, int accum,
                                                       const float *bias, const float *res, long ldr, int relu) {
    __m256 c0[MR], c1[MR];
    for (int i = 0; i < MR; i++) { c0[i] = _mm256_setzero_ps(); c1[i] = _mm256_setzero_ps(); }
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            __m256 ai = _mm256_broadcast_ss(a + i * a_rs);
            c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
            c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
        }
        a += a_cs;
        b += NR;
    }
    const __m256 zero = _mm256_setzero_ps();
    float buf[NR] __attribute__((aligned(32)));
    for (int i = 0; i < mr; i++) {
        float *ci = c + i * ldc;
        __m256 v0 = c0[i], v1 = c1[i];
        if (nr == NR) {
            if (accum) { v0 = _mm256_add_ps(v0, _mm256_loadu_ps(ci)); v1 = _mm256_add_ps(v1, _mm256_loadu_ps(ci + 8)); }
        } else if (accum) {
            for (int j = 0; j < NR; j++) buf[j] = j < nr ? ci[j] : 0.0f;
            v0 = _mm256_add_ps(v0, _mm256_load_ps(buf));
            v1 = _mm256_add_ps(v1, _mm256_load_ps(buf + 8));
        }
        if (bias) { __m256 bi = _mm256_set1_ps(bias[i]); v0 = _mm256_add_ps(v0, bi); v1 = _mm256_add_ps(v1, bi); }
        if (res) {
            const float *ri = res + i * ldr;
            if (nr == NR) {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(ri)); v1 = _mm256_add_ps(v1, _mm256_loadu_ps(ri + 8));
            } else {
                for (int j = 0; j < NR; j++) buf[j] = j < nr ? ri[j] : 0.0f;
                v0 = _mm256_add_ps(v0, _mm256_load_ps(buf));
                v1 = _mm256_add_ps(v1, _mm256_load_ps(buf + 8));
            }
        }
        if (relu) { v0 = _mm256_max_ps(v0, zero); v1 = _mm256_max_ps(v1, zero); }
        if (nr == NR) {
            _mm256_storeu_ps(ci, v0);
            _mm256_storeu_ps(ci + 8, v1);
        } else {
            _mm256_store_ps(buf, v0);
            _mm256_store_ps(buf + 8, v1);
            for (int j = 0; j < nr; j++) ci[j] = buf[j];
        }
    }
}

static void ukr_6x16(int kc, const float *a, const float *b, float *c, long ldc, int mr, int nr, int accum,
                     const float *bias, const float *res, long ldr, int relu) {
    body(kc, a, 1, MR, b, c, ldc, mr, nr, accum, bias, res, ldr, relu);
}
static void ukr_6x16_strided(int kc, const float *a, long a_rs, long a_cs, const float *b, float *c, long ldc, int mr,
                     int nr, int accum, const float *bias, const float *res, long ldr, int relu) {
    body(kc, a, a_rs, a_cs, b, c, ldc, mr, nr, accum, bias, res, ldr, relu);
}

const dn_ukr dn_ukr_avx2 = {MR, NR, ukr_6x16, ukr_6x16_strided, dn_pack_b_avx2, "avx2-6x16"};
