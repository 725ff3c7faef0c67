/* AVX2 int8 convolution row kernel (the fallback on CPUs without AVX-512
 * VNNI; contract and layouts: kernels/int8.h). AVX2's vpmaddubsw would
 * saturate (two u8 x s8 products exceed int16), so the weights are kept as
 * int16 pairs and each pixel's u8 pair is widened: vpmaddwd sums two exact
 * products per s32 lane. 16 output channels = two ymm accumulators per pixel,
 * R <= 6 pixels at a time. NCHW output only (blocked plans need AVX-512). */
#include "kernels/int8.h"
#include <immintrin.h>

static inline __attribute__((always_inline)) void block(const dn_i8_geom *g, const int16_t *W, const uint8_t *xq,
                                                        int img, int cob, int oy, int ox0, const int R, const int S,
                                                        const float *mult, const float *bias, const float *res,
                                                        int relu, float *y) {
    const int CIB = g->cinp / 16, s = S ? S : g->stride, kh = g->kh, kw = g->kw, wp = g->wp;
    __m256i acc[12];
    for (int a = 0; a < 2 * R; a++) acc[a] = _mm256_setzero_si256();
    for (int cib = 0; cib < CIB; cib++) {
        const uint8_t *xc = xq + (size_t)img * g->img + (size_t)cib * g->hp * wp * 16;
        const int16_t *wc = W + ((size_t)cob * CIB + cib) * kh * kw * 256;
        for (int ky = 0; ky < kh; ky++) {
            const uint8_t *xr = xc + ((size_t)(oy * s + ky) * wp + (size_t)ox0 * s) * 16;
            for (int kx = 0; kx < kw; kx++) {
                const uint8_t *xk = xr + kx * 16;
                const int16_t *wk = wc + (ky * kw + kx) * 256;
                for (int p = 0; p < 8; p++) {
                    __m256i w0 = _mm256_load_si256((const __m256i *)(const void *)(wk + p * 32));
                    __m256i w1 = _mm256_load_si256((const __m256i *)(const void *)(wk + p * 32 + 16));
#pragma GCC unroll 6
                    for (int r = 0; r < R; r++) {
                        const uint8_t *px = xk + r * s * 16 + 2 * p;
                        __m256i xv = _mm256_set1_epi32((int)((uint32_t)px[0] | (uint32_t)px[1] << 16));
                        acc[2 * r] = _mm256_add_epi32(acc[2 * r], _mm256_madd_epi16(xv, w0));
                        acc[2 * r + 1] = _mm256_add_epi32(acc[2 * r + 1], _mm256_madd_epi16(xv, w1));
                    }
                }
            }
        }
    }
    float tile[6 * 16] __attribute__((aligned(32)));
    for (int h = 0; h < 2; h++) {
        __m256 m = _mm256_loadu_ps(mult + cob * 16 + h * 8), b = _mm256_loadu_ps(bias + cob * 16 + h * 8);
        for (int r = 0; r < R; r++)
            _mm256_store_ps(tile + r * 16 + h * 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[2 * r + h]), m, b));
    }
    for (int l = 0; l < 16; l++) {
        int co = cob * 16 + l;
        if (co >= g->cout) break;
        size_t o = (((size_t)img * g->cout + co) * g->oh + oy) * g->ow + ox0;
        for (int r = 0; r < R; r++) {
            float v = tile[r * 16 + l];
            if (res) v += res[o + r];
            if (relu && v < 0.0f) v = 0.0f;
            y[o + r] = v;
        }
    }
}

#define CALL_S(X0, R)                                                                                      \
    do {                                                                                                   \
        if (g->stride == 1) block(g, W, xq, img, cob, oy, X0, R, 1, mult, bias, res, relu, y);             \
        else if (g->stride == 2) block(g, W, xq, img, cob, oy, X0, R, 2, mult, bias, res, relu, y);        \
        else block(g, W, xq, img, cob, oy, X0, R, 0, mult, bias, res, relu, y);                            \
    } while (0)

void dn_i8_row_avx2(const dn_i8_geom *g, const int16_t *W, const uint8_t *xq, int img, int cob, int oy,
                    const float *mult, const float *bias, const float *res, int relu, float *y) {
    const int ow = g->ow, nc = (ow + 5) / 6, rb = (ow + nc - 1) / nc;
    for (int ox0 = 0; ox0 < ow; ox0 += rb) {
        switch (ow - ox0 < rb ? ow - ox0 : rb) {
        case 1: CALL_S(ox0, 1); break;
        case 2: CALL_S(ox0, 2); break;
        case 3: CALL_S(ox0, 3); break;
        case 4: CALL_S(ox0, 4); break;
        case 5: CALL_S(ox0, 5); break;
        default: CALL_S(ox0, 6); break;
        }
    }
}
