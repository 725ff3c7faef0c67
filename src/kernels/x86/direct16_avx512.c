/* AVX-512 fp32 direct convolution over channel-blocked activations (NCHW16c),
 * no im2col: the kernel reads the (zero-padded) input in place.
 *
 * Layouts (see kern_int.h, dn_d16_geom):
 *   xp: [n][cin/16][h + 2p][w + 2p][16]   zero border of p, plus slack at the end
 *   W:  [cout/16][cin/16][kh][kw][16 ci][16 co]
 * One call computes output row oy of 16 output channels (block cob) of image
 * img, R output pixels at a time: R zmm accumulators of 16 channels, one
 * weight vector load per (ci, ky, kx) reused by R broadcast FMAs. The epilogue
 * transposes the R x 16 tile into the NCHW output with bias, residual, ReLU. */
#include "kernels/kern_int.h"
#include <immintrin.h>
#include "kernels/x86/border16.inc"

/* Shared epilogue of the fp32 and bf16 blocks: transposes the R x 16 tile of
 * accumulators into the NCHW output (rc valid pixels) with bias, residual, ReLU. */
static inline __attribute__((always_inline)) void epilogue(const dn_d16_geom *g, const __m512 *acc, const int R,
                                                           int img, int cob, int oy, int ox0, int rc,
                                                           const float *bias, const float *res, int relu, float *y) {
    float tile[14 * 16] __attribute__((aligned(64)));
    for (int r = 0; r < R; r++) _mm512_store_ps(tile + r * 16, acc[r]);
    const int oh = g->oh, ow = g->ow;
    for (int l = 0; l < 16; l++) {
        int co = cob * 16 + l;
        size_t off = (((size_t)img * g->cout + co) * oh + oy) * ow + ox0;
        float b = bias ? bias[co] : 0.0f;
        for (int r = 0; r < rc; r++) {
            float v = tile[r * 16 + l] + b;
            if (res) v += res[off + r];
            if (relu && v < 0.0f) v = 0.0f;
            y[off + r] = v;
        }
    }
}

/* acc[nb*R + r] = sum over (ci, ky, kx) of W[cob+nb] x input pixel ox0+r of
 * row oy, for NB (1, 2, 4) output-channel blocks and R pixels (NB*R <= 28):
 * every weight vector feeds R FMAs and every input broadcast NB. S: the
 * stride as a compile-time constant (1, 2) so the broadcast addresses are
 * immediate displacements, or 0 = read g->stride at run time. */
static inline __attribute__((always_inline)) void accum(const dn_d16_geom *g, const float *W, const float *xp, int img,
                                                        int cob, int oy, int ox0, const int R, const int NB,
                                                        const int S, __m512 *acc) {
    const int CIB = g->cin / 16, s = S ? S : g->stride, kh = g->kh, kw = g->kw, hp = g->hp, wp = g->wp;
    const size_t wstride = (size_t)CIB * kh * kw * 256; /* next output-channel block */
    for (int a = 0; a < NB * R; a++) acc[a] = _mm512_setzero_ps();
    for (int cib = 0; cib < CIB; cib++) {
        const float *xc = xp + ((size_t)img * CIB + cib) * hp * wp * 16;
        const float *wc = W + (((size_t)cob * CIB + cib) * kh * kw) * 256;
        for (int ky = 0; ky < kh; ky++) {
            const float *xr = xc + ((size_t)(oy * s + ky) * wp + (size_t)ox0 * s) * 16;
            for (int kx = 0; kx < kw; kx++) {
                const float *xk = xr + kx * 16;
                const float *wk = wc + (ky * kw + kx) * 256;
                for (int ci = 0; ci < 16; ci++) {
                    __m512 wv[4];
                    for (int nb = 0; nb < NB; nb++) wv[nb] = _mm512_load_ps(wk + nb * wstride + ci * 16);
#pragma GCC unroll 14
                    for (int r = 0; r < R; r++) {
                        __m512 xv = _mm512_set1_ps(xk[r * s * 16 + ci]);
                        for (int nb = 0; nb < NB; nb++) acc[nb * R + r] = _mm512_fmadd_ps(xv, wv[nb], acc[nb * R + r]);
                    }
                }
            }
        }
    }
}

/* NCHW output (the packed-input path): one output-channel block. */
static inline __attribute__((always_inline)) void block(const dn_d16_geom *g, const float *W, const float *xp,
                                                        int img, int cob, int oy, int ox0, int rc, const int R,
                                                        const int S, const float *bias, const float *res, int relu,
                                                        float *y) {
    __m512 acc[14];
    accum(g, W, xp, img, cob, oy, ox0, R, 1, S, acc);
    epilogue(g, acc, R, img, cob, oy, ox0, rc, bias, res, relu, y);
}

/* One row in ceil(ow / 14) blocks of equal width R <= 14 (ow 16 -> 8 + 8,
 * ow 4 -> one block of 4), each block compiled for its exact R and stride, so
 * small maps (layer3/4 of small inputs: 4x4, 2x2) do not pay for unused
 * accumulators. */
#define CALL_S(BLOCK, X0, R, ...)                                                                     \
    do {                                                                                              \
        if (g->stride == 1) BLOCK(__VA_ARGS__, X0, R, R, 1, bias, res, relu, y);                     \
        else if (g->stride == 2) BLOCK(__VA_ARGS__, X0, R, R, 2, bias, res, relu, y);                \
        else BLOCK(__VA_ARGS__, X0, R, R, 0, bias, res, relu, y);                                     \
    } while (0)
#define CASE_R(BLOCK, X0, R, ...)                                                                     \
    case R: CALL_S(BLOCK, X0, R, __VA_ARGS__); break;
#define ROWS(BLOCK, ...)                                                                              \
    do {                                                                                              \
        const int ow = g->ow, nb = (ow + 13) / 14, rb = (ow + nb - 1) / nb;                           \
        for (int ox0 = 0; ox0 < ow; ox0 += rb) {                                                      \
            switch (ow - ox0 < rb ? ow - ox0 : rb) {                                                  \
                CASE_R(BLOCK, ox0, 1, __VA_ARGS__)                                                    \
                CASE_R(BLOCK, ox0, 2, __VA_ARGS__)                                                    \
                CASE_R(BLOCK, ox0, 3, __VA_ARGS__)                                                    \
                CASE_R(BLOCK, ox0, 4, __VA_ARGS__)                                                    \
                CASE_R(BLOCK, ox0, 5, __VA_ARGS__)                                                    \
                CASE_R(BLOCK, ox0, 6, __VA_ARGS__)                                                    \
                CASE_R(BLOCK, ox0, 7, __VA_ARGS__)                                                    \
                CASE_R(BLOCK, ox0, 8, __VA_ARGS__)                                                    \
                CASE_R(BLOCK, ox0, 9, __VA_ARGS__)                                                    \
                CASE_R(BLOCK, ox0, 10, __VA_ARGS__)                                                   \
                CASE_R(BLOCK, ox0, 11, __VA_ARGS__)                                                   \
                CASE_R(BLOCK, ox0, 12, __VA_ARGS__)                                                   \
                CASE_R(BLOCK, ox0, 13, __VA_ARGS__)                                                   \
                default: CALL_S(BLOCK, ox0, 14, __VA_ARGS__); break;                                  \
            }                                                                                         \
        }                                                                                             \
    } while (0)

void dn_direct16_row_avx512(const dn_d16_geom *g, const float *W, const float *xp, int img, int cob, int oy,
                            const float *bias, const float *res, int relu, float *y) {
    ROWS(block, g, W, xp, img, cob, oy);
}

/* Narrow rows (ow <= 3, e.g. 2x2 maps): R pixels alone leave the FMA units
 * waiting on R dependent accumulator chains. This block computes row oy of J
 * images at once (img0 .. img0+J-1 of the packed buffer, R*J <= 12
 * accumulators, every weight vector reused R*J times); images from jc on are
 * computed on img0's data and not stored (a short last group). Same sums in
 * the same order per output as block(), so results are bit-identical. */
static inline __attribute__((always_inline)) void block_imgs(const dn_d16_geom *g, const float *W, const float *xp,
                                                             int img0, int jc, int cob, int oy, const int R,
                                                             const int J, const int S, const float *bias,
                                                             const float *res, int relu, float *y) {
    const int CIB = g->cin / 16, s = S ? S : g->stride, kh = g->kh, kw = g->kw, hp = g->hp, wp = g->wp;
    const size_t istride = (size_t)CIB * hp * wp * 16;
    __m512 acc[12];
    for (int a = 0; a < R * J; a++) acc[a] = _mm512_setzero_ps();
    const float *xi[12];
    for (int j = 0; j < J; j++) xi[j] = xp + (size_t)(img0 + (j < jc ? j : 0)) * istride;
    for (int cib = 0; cib < CIB; cib++) {
        const size_t xc = (size_t)cib * hp * wp * 16;
        const float *wc = W + (((size_t)cob * CIB + cib) * kh * kw) * 256;
        for (int ky = 0; ky < kh; ky++) {
            const size_t xr = xc + (size_t)(oy * s + ky) * wp * 16;
            for (int kx = 0; kx < kw; kx++) {
                const size_t xk = xr + (size_t)kx * 16;
                const float *wk = wc + (ky * kw + kx) * 256;
                for (int ci = 0; ci < 16; ci++) {
                    __m512 wv = _mm512_load_ps(wk + ci * 16);
#pragma GCC unroll 12
                    for (int j = 0; j < J; j++)
#pragma GCC unroll 4
                        for (int r = 0; r < R; r++)
                            acc[j * R + r] = _mm512_fmadd_ps(_mm512_set1_ps(xi[j][xk + r * s * 16 + ci]), wv,
                                                             acc[j * R + r]);
                }
            }
        }
    }
    float tile[12 * 16] __attribute__((aligned(64)));
    for (int a = 0; a < R * J; a++) _mm512_store_ps(tile + a * 16, acc[a]);
    const int oh = g->oh, ow = g->ow;
    for (int j = 0; j < jc; j++)
        for (int l = 0; l < 16; l++) {
            int co = cob * 16 + l;
            size_t off = (((size_t)(img0 + j) * g->cout + co) * oh + oy) * ow;
            float b = bias ? bias[co] : 0.0f;
            for (int r = 0; r < R; r++) {
                float v = tile[(j * R + r) * 16 + l] + b;
                if (res) v += res[off + r];
                if (relu && v < 0.0f) v = 0.0f;
                y[off + r] = v;
            }
        }
}

/* ow 4 measured no faster than image by image (4 accumulators already keep
 * up there), ow 1..3 up to 1.7x (2x2 maps: 47 -> 80 GFLOP/s, 1 thread). */
int dn_direct16_imgs_per_call(int ow) { return ow >= 1 && ow <= 3 ? 12 / ow : 0; }

#define IMGS_S(R, J)                                                                                   \
    do {                                                                                               \
        if (g->stride == 1) block_imgs(g, W, xp, img0, nimg, cob, oy, R, J, 1, bias, res, relu, y);    \
        else if (g->stride == 2) block_imgs(g, W, xp, img0, nimg, cob, oy, R, J, 2, bias, res, relu, y); \
        else block_imgs(g, W, xp, img0, nimg, cob, oy, R, J, 0, bias, res, relu, y);                   \
    } while (0)

void dn_direct16_rows_avx512(const dn_d16_geom *g, const float *W, const float *xp, int img0, int nimg, int cob,
                             int oy, const float *bias, const float *res, int relu, float *y) {
    switch (g->ow) {
    case 1: IMGS_S(1, 12); break;
    case 2: IMGS_S(2, 6); break;
    case 3: IMGS_S(3, 4); break;
    default: /* wider rows have enough accumulators: one image at a time */
        for (int j = 0; j < nimg; j++) dn_direct16_row_avx512(g, W, xp, img0 + j, cob, oy, bias, res, relu, y);
    }
}

/* NCHW -> zero-padded NCHW16c for channel block cib of image img. */
void dn_direct16_pack_avx512(const dn_d16_geom *g, const float *x, int img, int cib, float *xp) {
    const int h = g->h, w = g->w, p = g->pad, hp = g->hp, wp = g->wp, CIB = g->cin / 16;
    float *dst = xp + ((size_t)img * CIB + cib) * hp * wp * 16;
    const float *src = x + ((size_t)img * g->cin + (size_t)cib * 16) * h * w;
    for (int yy = 0; yy < hp; yy++) {
        float *d = dst + (size_t)yy * wp * 16;
        int iy = yy - p;
        if (iy < 0 || iy >= h) {
            for (int q = 0; q < wp; q++) _mm512_store_ps(d + q * 16, _mm512_setzero_ps());
            continue;
        }
        for (int q = 0; q < p; q++) {
            _mm512_store_ps(d + q * 16, _mm512_setzero_ps());
            _mm512_store_ps(d + (size_t)(wp - 1 - q) * 16, _mm512_setzero_ps());
        }
        /* transpose 16 channel rows into pixel-major vectors, 16 pixels at a time */
        const __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        for (int ix = 0; ix < w; ix++) {
            __m512 v = _mm512_i32gather_ps(_mm512_mullo_epi32(idx, _mm512_set1_epi32(h * w)),
                                           src + (size_t)iy * w + ix, 4);
            _mm512_store_ps(d + (size_t)(ix + p) * 16, v);
        }
    }
}

/* ---------------------------------------------------------------- bf16
 * Same scheme with bf16 operands (AVX512_BF16) and fp32 accumulation:
 *   xp: [n][cin/16][hp][wp][16] bf16;  W: [cout/16][cin/16][kh][kw][8 ci pairs][16 co][2] bf16.
 * vdpbf16ps adds x[2p]*w[2p][co] + x[2p+1]*w[2p+1][co] per output channel lane. */
static inline __attribute__((always_inline)) void block_bf16(const dn_d16_geom *g, const uint16_t *W,
                                                             const uint16_t *xp, int img, int cob, int oy, int ox0,
                                                             int rc, const int R, const int S, const float *bias,
                                                             const float *res, int relu, float *y) {
    const int CIB = g->cin / 16, s = S ? S : g->stride, kh = g->kh, kw = g->kw, hp = g->hp, wp = g->wp;
    __m512 acc[14];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    for (int cib = 0; cib < CIB; cib++) {
        const uint16_t *xc = xp + ((size_t)img * CIB + cib) * hp * wp * 16;
        const uint16_t *wc = W + (((size_t)cob * CIB + cib) * kh * kw) * 256;
        for (int ky = 0; ky < kh; ky++) {
            const uint16_t *xr = xc + ((size_t)(oy * s + ky) * wp + (size_t)ox0 * s) * 16;
            for (int kx = 0; kx < kw; kx++) {
                const uint16_t *xk = xr + kx * 16;
                const uint16_t *wk = wc + (ky * kw + kx) * 256;
                for (int cp = 0; cp < 8; cp++) {
                    __m512bh wv = (__m512bh)_mm512_load_si512((const void *)(wk + cp * 32));
#pragma GCC unroll 14
                    for (int r = 0; r < R; r++) {
                        uint32_t pair;
                        __builtin_memcpy(&pair, xk + r * s * 16 + 2 * cp, 4);
                        acc[r] = _mm512_dpbf16_ps(acc[r], (__m512bh)_mm512_set1_epi32((int)pair), wv);
                    }
                }
            }
        }
    }
    epilogue(g, acc, R, img, cob, oy, ox0, rc, bias, res, relu, y);
}

void dn_direct16_row_bf16_avx512(const dn_d16_geom *g, const uint16_t *W, const uint16_t *xp, int img, int cob,
                                 int oy, const float *bias, const float *res, int relu, float *y) {
    ROWS(block_bf16, g, W, xp, img, cob, oy);
}

void dn_direct16_pack_bf16_avx512(const dn_d16_geom *g, const float *x, int img, int cib, uint16_t *xp) {
    const int h = g->h, w = g->w, p = g->pad, hp = g->hp, wp = g->wp, CIB = g->cin / 16;
    uint16_t *dst = xp + ((size_t)img * CIB + cib) * hp * wp * 16;
    const float *src = x + ((size_t)img * g->cin + (size_t)cib * 16) * h * w;
    const __m512i vidx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(h * w));
    for (int yy = 0; yy < hp; yy++) {
        uint16_t *d = dst + (size_t)yy * wp * 16;
        int iy = yy - p;
        if (iy < 0 || iy >= h) {
            for (int q = 0; q < wp; q++) _mm256_store_si256((__m256i *)(void *)(d + q * 16), _mm256_setzero_si256());
            continue;
        }
        for (int q = 0; q < p; q++) {
            _mm256_store_si256((__m256i *)(void *)(d + q * 16), _mm256_setzero_si256());
            _mm256_store_si256((__m256i *)(void *)(d + (size_t)(wp - 1 - q) * 16), _mm256_setzero_si256());
        }
        for (int ix = 0; ix < w; ix++) {
            __m512 v = _mm512_i32gather_ps(vidx, src + (size_t)iy * w + ix, 4);
            _mm256_store_si256((__m256i *)(void *)(d + (size_t)(ix + p) * 16), (__m256i)_mm512_cvtneps_pbh(v));
        }
    }
}

/* ---------------------------------------------------------------- blocked in, blocked out
 * (kern_int.h: dn_direct16b_row_avx512.) accum() with NB = 2 output-channel
 * blocks where cout allows, so loads stay below the FMA rate. */

/* Stores the NB x R accumulator tile into the blocked output with bias,
 * residual and ReLU on whole 16-channel vectors. */
static inline __attribute__((always_inline)) void epilogue_b(const dn_d16_geom *g, const __m512 *acc, const int R,
                                                             const int NB, int img, int cob, int oy, int ox0,
                                                             const float *bias, const float *res, int relu, float *y) {
    const int COB = g->cout / 16, ohp = g->oh + 2 * g->ob, owp = g->ow + 2 * g->ob;
    for (int nb = 0; nb < NB; nb++) {
        size_t off = ((((size_t)img * COB + cob + nb) * ohp + oy + g->ob) * owp + ox0 + g->ob) * 16;
        __m512 b = bias ? _mm512_loadu_ps(bias + (cob + nb) * 16) : _mm512_setzero_ps();
        for (int r = 0; r < R; r++) {
            __m512 v = _mm512_add_ps(acc[nb * R + r], b);
            if (res) v = _mm512_add_ps(v, _mm512_load_ps(res + off + r * 16));
            if (relu) v = _mm512_max_ps(_mm512_setzero_ps(), v); /* NaN stays NaN (the second operand) */
            _mm512_store_ps(y + off + r * 16, v);
        }
    }
}

/* Zeroes the border pixels of output row oy (and the top/bottom border rows
 * with the first/last row) for blocks cob .. cob+nb-1. */
static inline void zero_border_row(const dn_d16_geom *g, int img, int cob, int nb, int oy, float *y) {
    zero_border16_row(y, img, cob, nb, g->cout / 16, g->oh, g->ow, g->ob, oy);
}

/* Blocked input: xp [n][cin/16][hp][wp][16], W [cout/16][cin/16][kh][kw][16 ci][16 co]. */
static inline __attribute__((always_inline)) void blockb(const dn_d16_geom *g, const float *W, const float *xp,
                                                         int img, int cob, int oy, int ox0, const int R, const int NB,
                                                         const int S, const float *bias, const float *res, int relu,
                                                         float *y) {
    __m512 acc[28];
    accum(g, W, xp, img, cob, oy, ox0, R, NB, S, acc);
    epilogue_b(g, acc, R, NB, img, cob, oy, ox0, bias, res, relu, y);
}

/* Planar padded input (first layer): xp [n][cin][hp][wp], Ws [cout/16][cin][kh][kw][16]. */
static inline __attribute__((always_inline)) void blocks(const dn_d16_geom *g, const float *Ws, const float *xp,
                                                         int img, int cob, int oy, int ox0, const int R, const int NB,
                                                         const int S, const float *bias, const float *res, int relu,
                                                         float *y) {
    const int cin = g->cin, s = S ? S : g->stride, kh = g->kh, kw = g->kw, hp = g->hp, wp = g->wp;
    const size_t wstride = (size_t)cin * kh * kw * 16;
    __m512 acc[28];
    for (int a = 0; a < NB * R; a++) acc[a] = _mm512_setzero_ps();
    for (int ci = 0; ci < cin; ci++) {
        const float *xc = xp + ((size_t)img * cin + ci) * hp * wp;
        const float *wc = Ws + ((size_t)cob * cin + ci) * kh * kw * 16;
        for (int ky = 0; ky < kh; ky++) {
            const float *xr = xc + (size_t)(oy * s + ky) * wp + (size_t)ox0 * s;
            for (int kx = 0; kx < kw; kx++) {
                __m512 wv[4];
                for (int nb = 0; nb < NB; nb++) wv[nb] = _mm512_load_ps(wc + nb * wstride + (ky * kw + kx) * 16);
#pragma GCC unroll 14
                for (int r = 0; r < R; r++) {
                    __m512 xv = _mm512_set1_ps(xr[r * s + kx]);
                    for (int nb = 0; nb < NB; nb++) acc[nb * R + r] = _mm512_fmadd_ps(xv, wv[nb], acc[nb * R + r]);
                }
            }
        }
    }
    epilogue_b(g, acc, R, NB, img, cob, oy, ox0, bias, res, relu, y);
}

/* One row in ceil(ow / RMAX) blocks of equal width R <= RMAX, each compiled for
 * its exact R, NB and stride (1, 2 or any). */
#define B_S(BLOCK, R, NB)                                                                                    \
    do {                                                                                                     \
        if (g->stride == 1) BLOCK(g, W, xp, img, cob, oy, ox0, R, NB, 1, bias, res, relu, y);                \
        else if (g->stride == 2) BLOCK(g, W, xp, img, cob, oy, ox0, R, NB, 2, bias, res, relu, y);           \
        else BLOCK(g, W, xp, img, cob, oy, ox0, R, NB, 0, bias, res, relu, y);                               \
    } while (0)
#define B_R(BLOCK, R, NB) case R: B_S(BLOCK, R, NB); break;
#define B_ROWS(BLOCK, NB, RMAX)                                                                              \
    do {                                                                                                     \
        const int ow = g->ow, nbk = (ow + RMAX - 1) / RMAX, rb = (ow + nbk - 1) / nbk;                       \
        for (int ox0 = 0; ox0 < ow; ox0 += rb) {                                                             \
            switch (ow - ox0 < rb ? ow - ox0 : rb) {                                                         \
                B_R(BLOCK, 1, NB) B_R(BLOCK, 2, NB) B_R(BLOCK, 3, NB) B_R(BLOCK, 4, NB) B_R(BLOCK, 5, NB)    \
                B_R(BLOCK, 6, NB) B_R(BLOCK, 7, NB)                                                          \
                default:                                                                                     \
                    if (RMAX > 7) {                                                                          \
                        switch (ow - ox0 < rb ? ow - ox0 : rb) {                                             \
                            B_R(BLOCK, 8, NB) B_R(BLOCK, 9, NB) B_R(BLOCK, 10, NB) B_R(BLOCK, 11, NB)        \
                            B_R(BLOCK, 12, NB) B_R(BLOCK, 13, NB)                                            \
                            default: B_S(BLOCK, RMAX > 7 ? 14 : 1, NB); break;                               \
                        }                                                                                    \
                    }                                                                                        \
                    break;                                                                                   \
            }                                                                                                \
        }                                                                                                    \
    } while (0)

void dn_direct16b_row_avx512(const dn_d16_geom *g, const float *W, const float *xp, int img, int cob, int nb, int oy,
                             const float *bias, const float *res, int relu, float *y) {
    if (nb >= 2) B_ROWS(blockb, 2, 14);
    else B_ROWS(blockb, 1, 14);
    zero_border_row(g, img, cob, nb >= 2 ? 2 : 1, oy, y);
}

void dn_direct16s_row_avx512(const dn_d16_geom *g, const float *Ws, const float *xp, int img, int cob, int nb, int oy,
                             const float *bias, const float *res, int relu, float *y) {
    const float *W = Ws;
    if (nb >= 4) B_ROWS(blocks, 4, 6);
    else if (nb >= 2) B_ROWS(blocks, 2, 14);
    else B_ROWS(blocks, 1, 14);
    zero_border_row(g, img, cob, nb >= 4 ? 4 : nb >= 2 ? 2 : 1, oy, y);
}

/* ---------------------------------------------------------------- blocked max pool
 * Output row oy of a 3x3 stride-2 pad-1 max pool on one blocked plane (16
 * channels), the vector form of blocked.c's maxpool_blk (its spec): windows
 * clipped to the map, NaN propagates. s: the plane's interior origin, wp its
 * row pitch in pixels; d: the output row's first interior pixel. */
void dn_blk_maxpool_row_avx512(const float *s, int h, int w, int wp, int oy, int ow, float *d) {
    const __m512 lo = _mm512_set1_ps(-3.402823466e38f), qnan = _mm512_set1_ps(__builtin_nanf(""));
    int y0 = oy * 2 - 1, y1 = y0 + 3;
    if (y0 < 0) y0 = 0;
    if (y1 > h) y1 = h;
    for (int ox = 0; ox < ow; ox++) {
        int x0 = ox * 2 - 1, x1 = x0 + 3;
        if (x0 < 0) x0 = 0;
        if (x1 > w) x1 = w;
        __m512 m = lo;
        __mmask16 nan = 0;
        for (int yy = y0; yy < y1; yy++)
            for (int xx = x0; xx < x1; xx++) {
                __m512 v = _mm512_load_ps(s + ((size_t)yy * wp + xx) * 16);
                nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
                m = _mm512_max_ps(m, v);
            }
        _mm512_store_ps(d + (size_t)ox * 16, _mm512_mask_mov_ps(m, nan, qnan));
    }
}
