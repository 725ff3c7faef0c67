/* Direct (im2col-free) convolution weight gradient for training.
 *
 *   dW[co][ci][ky][kx] += sum_{n,oy,ox} dy[n][co][oy][ox] * x[n][ci][oy*s-p+ky][ox*s-p+kx]
 *
 * Method. Per chunk of images, the input is copied into zero-padded "phase
 * planes": for stride s, plane (py, px) of channel ci holds the padded input at
 * rows r*s+py, columns c*s+px, with PH x PW entries (PH = oh + (k-1)/s,
 * PW = ow + (k-1)/s); dy is copied with the same row stride PW (zeros at
 * columns >= ow and after the last row). Tap (ky, kx) then reads phase plane
 * (ky%s, kx%s) at the flat offset (ky/s)*PW + kx/s, so every dW entry is a
 * plain dot product of two contiguous vectors of length Qd per image: no
 * im2col matrix (k*k times the input) is ever written. Tiles of 3 output
 * channels x 9 (ci, tap) columns accumulate 27 sums in vector registers over
 * all images of the chunk (AVX-512, 16 pixel lanes), then one horizontal sum
 * each is added to dW.
 *
 * Determinism: a tile is computed by one worker, images and pixels in a fixed
 * order, chunks in image order; the chunk size depends only on the shapes and
 * the planned maximum batch, so dW is bit-identical for any thread count.
 * Input values are also multiplied by dy's zero padding, so an infinite input
 * gives NaN here (0 * inf) where the reference might give inf; a diverged net
 * has non-finite gradients either way.
 *
 * Ownership: plans are plain values; the caller owns x, dy, dw and the scratch
 * (dn_wgrad_scratch bytes, 64-byte aligned). Nothing here allocates. */
#ifndef DN_NN_WGRAD_H
#define DN_NN_WGRAD_H
#include "core/core.h"
#include "nn/model.h"

typedef struct dn_wgrad_plan {
    int cin, cout, k, s, pad, h, w, oh, ow;
    int S;        /* phases per dimension: min(s, k) */
    int PH, PW;   /* phase plane rows, columns */
    int Qd;       /* dy floats per (channel, image): oh * PW rounded up to 16 */
    int P;        /* floats per (channel, phase, image) of packed x, multiple of 16,
                   * >= Qd + largest tap offset so every read is inside the plane */
    int chunk;    /* images per chunk (at most maxn) */
} dn_wgrad_plan;

/* Plan for p at input h x w, batches up to maxn. Returns DN_OK or DN_ERR_ARG
 * (shape too small / too large) with the error set. */
dn_status dn_wgrad_plan_init(dn_wgrad_plan *pl, const dn_conv_p *p, int h, int w, int maxn);
/* Scratch bytes dn_wgrad_run needs (packed x and dy of one chunk). */
size_t dn_wgrad_scratch(const dn_wgrad_plan *pl);
/* 1 when the vectorised tile kernel can run now (AVX-512 selected by
 * dn_kernels_isa); otherwise callers use their GEMM path. */
int dn_wgrad_available(void);
/* dw [cout][cin][k][k] += weight gradient of n images (x [n][cin][h][w],
 * dy [n][cout][oh][ow]). use_ref: run the scalar tile kernel (the spec the
 * vector kernel is tested against); otherwise the AVX-512 one, which requires
 * dn_wgrad_available(). */
void dn_wgrad_run(const dn_wgrad_plan *pl, const float *x, int n, const float *dy, float *dw, dn_pool *pool,
                  void *scratch, int use_ref);

/* Tile kernels: out[r*G + j] = sum_{img<g} sum_{q<Qd} dy[r*dyrow + img*Qd + q] * xp[j][img*P + q]
 * for r < R (1..3), j < G (1..9). Qd is a multiple of 16. */
void dn_wgrad_tile_ref(int R, int G, const float *dy, size_t dyrow, const float *const *xp, int g, int Qd,
                       int P, float *out);
void dn_wgrad_tile_avx512(int R, int G, const float *dy, size_t dyrow, const float *const *xp, int g,
                          int Qd, int P, float *out);

/* ------------------------------------------------------------ Winograd
 * Weight gradient of 3x3 stride-1 convs (padding 0..2) as Winograd
 * F(3x3, 2x2) (see wgrad_wino.c): 16 GEMMs over 2x2 output tiles instead of
 * 36 multiplies per tile; relative error ~1e-6 (transform factors 0.5 and 1).
 * The 16 products sum_tiles U V^T run on the AVX-512 tile kernel above (rows
 * padded to 16 with zeros) when available and the rows are long enough,
 * else through dn_sgemm (any ISA). The plan refuses other convs and inputs wider than
 * about 1000 pixels (DN_ERR_ARG); callers then use the direct path. */
typedef struct dn_wgrad_wino {
    int cin, cout, pad, h, w, oh, ow;
    int th, tw;   /* 2x2 output tiles per column, per row */
    int chunk;    /* images per chunk */
} dn_wgrad_wino;
dn_status dn_wgrad_wino_plan(dn_wgrad_wino *ww, const dn_conv_p *p, int h, int w, int maxn);
size_t dn_wgrad_wino_scratch(const dn_wgrad_wino *ww);
/* dw [cout][cin][3][3] += weight gradient (same contract as dn_wgrad_run). */
void dn_wgrad_wino_run(const dn_wgrad_wino *ww, const float *x, int n, const float *dy, float *dw, dn_pool *pool,
                       void *scratch);
#endif
