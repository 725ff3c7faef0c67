/* AVX-512 VNNI int8 convolution row kernel and the blocked fp32 -> u8
 * quantization (contract and layouts: kernels/int8.h).
 *
 * One call computes output row oy of NB (1, 2) blocks of 16 output channels:
 * R pixels at a time, NB*R zmm s32 accumulators; per (ci group of 4, ky, kx)
 * one 64-byte weight vector per block (16 co x 4 ci) and one broadcast of the
 * pixel's 4 u8 channels, vpdpbusd (u8 x s8, four products summed into each
 * s32 lane, no saturation: |sum| <= 4 * 255 * 127 per step and < 2^31 overall
 * for cin * kh * kw < 66000). Epilogue: cvt, fma with mult/bias, residual,
 * ReLU, stored as whole 16-channel vectors (blocked) or transposed (NCHW). */
#include "kernels/int8.h"
#include <immintrin.h>
#include "kernels/x86/border16.inc"
#include <string.h>

static inline __attribute__((always_inline)) void accum(const dn_i8_geom *g, const int8_t *W, const uint8_t *xq,
                                                        int img, int cob, int oy, int ox0, const int R, const int NB,
                                                        const int S, __m512i *acc) {
    const int CIB = g->cinp / 16, s = S ? S : g->stride, kh = g->kh, kw = g->kw, wp = g->wp;
    const size_t wstride = (size_t)CIB * kh * kw * 256; /* next output-channel block */
    for (int a = 0; a < NB * R; a++) acc[a] = _mm512_setzero_si512();
    for (int cib = 0; cib < CIB; cib++) {
        const uint8_t *xc = xq + (size_t)img * g->img + (size_t)cib * g->hp * wp * 16;
        const int8_t *wc = W + ((size_t)cob * CIB + cib) * kh * kw * 256;
        for (int ky = 0; ky < kh; ky++) {
            const uint8_t *xr = xc + ((size_t)(oy * s + ky) * wp + (size_t)ox0 * s) * 16;
            for (int kx = 0; kx < kw; kx++) {
                const uint8_t *xk = xr + kx * 16;
                const int8_t *wk = wc + (ky * kw + kx) * 256;
                for (int q = 0; q < 4; q++) {
                    __m512i wv[2];
                    for (int nb = 0; nb < NB; nb++) wv[nb] = _mm512_load_si512((const void *)(wk + nb * wstride + q * 64));
#pragma GCC unroll 14
                    for (int r = 0; r < R; r++) {
                        int32_t v;
                        memcpy(&v, xk + r * s * 16 + q * 4, 4);
                        __m512i xv = _mm512_set1_epi32(v);
                        for (int nb = 0; nb < NB; nb++) acc[nb * R + r] = _mm512_dpbusd_epi32(acc[nb * R + r], xv, wv[nb]);
                    }
                }
            }
        }
    }
}

static inline __attribute__((always_inline)) __m512 finish(__m512i a, __m512 m, __m512 b) {
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), m, b);
}

static inline __attribute__((always_inline)) void block(const dn_i8_geom *g, const int8_t *W, const uint8_t *xq,
                                                        int img, int cob, int oy, int ox0, const int R, const int NB,
                                                        const int S, const float *mult, const float *bias,
                                                        const float *res, int relu, float *y) {
    __m512i acc[24];
    accum(g, W, xq, img, cob, oy, ox0, R, NB, S, acc);
    const __m512 z = _mm512_setzero_ps();
    if (g->yb >= 0) { /* blocked output, border yb */
        const int COB = g->coutp / 16, ohp = g->oh + 2 * g->yb, owp = g->ow + 2 * g->yb;
        for (int nb = 0; nb < NB; nb++) {
            size_t off = ((((size_t)img * COB + cob + nb) * ohp + oy + g->yb) * owp + ox0 + g->yb) * 16;
            __m512 m = _mm512_loadu_ps(mult + (cob + nb) * 16), b = _mm512_loadu_ps(bias + (cob + nb) * 16);
            for (int r = 0; r < R; r++) {
                __m512 v = finish(acc[nb * R + r], m, b);
                if (res) v = _mm512_add_ps(v, _mm512_loadu_ps(res + off + r * 16));
                if (relu) v = _mm512_max_ps(z, v); /* NaN stays NaN */
                _mm512_storeu_ps(y + off + r * 16, v);
            }
        }
        return;
    }
    /* NCHW output: transpose through a tile, channels >= cout dropped */
    float tile[24 * 16] __attribute__((aligned(64)));
    for (int nb = 0; nb < NB; nb++) {
        __m512 m = _mm512_loadu_ps(mult + (cob + nb) * 16), b = _mm512_loadu_ps(bias + (cob + nb) * 16);
        for (int r = 0; r < R; r++) _mm512_store_ps(tile + (nb * R + r) * 16, finish(acc[nb * R + r], m, b));
    }
    for (int nb = 0; nb < NB; nb++)
        for (int l = 0; l < 16; l++) {
            int co = (cob + nb) * 16 + l;
            if (co >= g->cout) break;
            size_t o = (((size_t)img * g->cout + co) * g->oh + oy) * g->ow + ox0;
            for (int r = 0; r < R; r++) {
                float v = tile[(nb * R + r) * 16 + l];
                if (res) v += res[o + r];
                if (relu && v < 0.0f) v = 0.0f;
                y[o + r] = v;
            }
        }
}

/* A row in chunks of 12 pixels, the rest in 8/4/2/1 (few compiled variants: the
 * strides 1 and 2 of ResNet as constants, any other stride one pixel at a time). */
#define CALL(X0, R, NB, S) block(g, W, xq, img, cob, oy, X0, R, NB, S, mult, bias, res, relu, y)
#define ROWS(NB, S)                                                                                          \
    do {                                                                                                     \
        int ox0 = 0;                                                                                         \
        for (; ox0 + 12 <= g->ow; ox0 += 12) CALL(ox0, 12, NB, S);                                           \
        if (g->ow - ox0 >= 8) { CALL(ox0, 8, NB, S); ox0 += 8; }                                             \
        if (g->ow - ox0 >= 4) { CALL(ox0, 4, NB, S); ox0 += 4; }                                             \
        if (g->ow - ox0 >= 2) { CALL(ox0, 2, NB, S); ox0 += 2; }                                             \
        if (g->ow - ox0 >= 1) CALL(ox0, 1, NB, S);                                                           \
    } while (0)

static inline void zero_border_row(const dn_i8_geom *g, int img, int cob, int nb, int oy, float *y) {
    zero_border16_row(y, img, cob, nb, g->coutp / 16, g->oh, g->ow, g->yb, oy);
}

void dn_i8_row_avx512(const dn_i8_geom *g, const int8_t *W, const uint8_t *xq, int img, int cob, int nb, int oy,
                      const float *mult, const float *bias, const float *res, int relu, float *y) {
    if (g->stride == 1 && nb >= 2) ROWS(2, 1);
    else if (g->stride == 1) ROWS(1, 1);
    else if (g->stride == 2 && nb >= 2) ROWS(2, 2);
    else if (g->stride == 2) ROWS(1, 2);
    else
        for (int b = 0; b < (nb >= 2 ? 2 : 1); b++)
            for (int ox = 0; ox < g->ow; ox++) block(g, W, xq, img, cob + b, oy, ox, 1, 1, 0, mult, bias, res, relu, y);
    zero_border_row(g, img, cob, nb >= 2 ? 2 : 1, oy, y);
}

void dn_i8_quant_blk_avx512(const float *x, size_t npix, float inv_scale, uint8_t *q) {
    const __m512 inv = _mm512_set1_ps(inv_scale), z = _mm512_setzero_ps(), top = _mm512_set1_ps(255.0f);
    for (size_t p = 0; p < npix; p++) {
        __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + p * 16), inv);
        v = _mm512_max_ps(v, z); /* NaN (first operand) -> 0, as dn_q_u8 */
        v = _mm512_min_ps(v, top);
        __m512i i = _mm512_cvtps_epi32(v); /* round to nearest even (MXCSR default), as nearbyintf */
        _mm_storeu_si128((__m128i *)(void *)(q + p * 16), _mm512_cvtusepi32_epi8(i));
    }
}
