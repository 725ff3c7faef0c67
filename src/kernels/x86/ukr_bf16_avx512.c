/* AVX512_BF16 micro-kernel: 8 rows x 32 columns, fp32 accumulators, bf16
 * operands. Packed layouts (uint16 bf16, pairs of consecutive k):
 *   A: [kc/2][MR][2]   (one 32-bit broadcast = a[i][k], a[i][k+1])
 *   B: [kc/2][NR][2]   (two zmm per k pair)
 * vdpbf16ps: acc[j] += a0*b[j][0] + a1*b[j][1] (products exact in fp32).
 * kc must be even. Same epilogue contract as the fp32 kernel (kern_int.h);
 * a and b arrive as float pointers and are reinterpreted here. */
#include "kernels/kern_int.h"
#include <immintrin.h>
#include <string.h>

#define MR 8
#define NR 32

static void ukr_bf16_8x32(int kc, const float *af, const float *bf, float *c, long ldc, int mr, int nr, int accum,
                          const float *bias, const float *res, long ldr, int relu) {
    const uint16_t *a = (const uint16_t *)(const void *)af;
    const uint16_t *b = (const uint16_t *)(const void *)bf;
    __m512 c0[MR], c1[MR];
    for (int i = 0; i < MR; i++) { c0[i] = _mm512_setzero_ps(); c1[i] = _mm512_setzero_ps(); }
    for (int k = 0; k < kc; k += 2) {
        __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)b);
        __m512bh b1 = (__m512bh)_mm512_load_si512((const void *)(b + 32));
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            uint32_t pair;
            memcpy(&pair, a + 2 * i, 4);
            __m512bh ai = (__m512bh)_mm512_set1_epi32((int)pair);
            c0[i] = _mm512_dpbf16_ps(c0[i], ai, b0);
            c1[i] = _mm512_dpbf16_ps(c1[i], ai, b1);
        }
        a += 2 * MR;
        b += 2 * NR;
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

const dn_ukr dn_ukr_bf16_avx512 = {MR, NR, ukr_bf16_8x32, NULL, dn_pack_b_avx512, "bf16-avx512-8x32"};
