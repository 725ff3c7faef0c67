/* Convolution layer for training (see layers.h): forward and data gradient
 * through the kernels' dn_conv_op where possible; weight gradient through the
 * Winograd or direct kernels of nn/wgrad.h where they are faster, otherwise
 * (and for the strided data gradient) as chunked GEMMs over several images at
 * once so the GEMMs are large. Chunks run in image order and each GEMM / tile
 * is deterministic, so results do not depend on the number of threads. */
#include "nn/layers.h"
#include "kernels/kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Floats of one GEMM chunk buffer pair we aim for (col + dy^T). */
#define CHUNK_FLOATS (6u << 20)

typedef struct {
    const dn_conv_p *p;
    const float *x;   /* chunk of images [g][cin][h][w] */
    float *col;       /* [cin*k*k][ld], image j at column offset j*oh*ow */
    float *dx;        /* col2im target [g][cin][h][w] */
    int g, h, w, oh, ow;
    size_t ld;
} im2col_job;

/* col rows of input channel ci for image j. */
static void im2col_one(const im2col_job *j, int img, int ci) {
    const dn_conv_p *p = j->p;
    int k = p->k, s = p->stride, pd = p->pad, h = j->h, w = j->w, oh = j->oh, ow = j->ow;
    const float *xp = j->x + ((size_t)img * p->cin + ci) * h * w;
    for (int ky = 0; ky < k; ky++)
        for (int kx = 0; kx < k; kx++) {
            float *row = j->col + ((size_t)(ci * k + ky) * k + kx) * j->ld + (size_t)img * oh * ow;
            for (int oy = 0; oy < oh; oy++) {
                int iy = oy * s - pd + ky;
                float *r = row + (size_t)oy * ow;
                if (iy < 0 || iy >= h) { memset(r, 0, sizeof(float) * ow); continue; }
                const float *xr = xp + (size_t)iy * w;
                if (s == 1) {
                    int ox0 = pd - kx > 0 ? pd - kx : 0;              /* first ox with ix >= 0 */
                    int ox1 = w + pd - kx < ow ? w + pd - kx : ow;    /* first ox with ix >= w */
                    if (ox1 < ox0) ox1 = ox0;
                    for (int ox = 0; ox < ox0; ox++) r[ox] = 0.f;
                    if (ox1 > ox0) memcpy(r + ox0, xr + ox0 - pd + kx, sizeof(float) * (ox1 - ox0));
                    for (int ox = ox1; ox < ow; ox++) r[ox] = 0.f;
                } else {
                    for (int ox = 0; ox < ow; ox++) {
                        int ix = ox * s - pd + kx;
                        r[ox] = (ix >= 0 && ix < w) ? xr[ix] : 0.f;
                    }
                }
            }
        }
}

/* dx plane (img, ci) = sum of its col rows scattered back. */
static void col2im_one(const im2col_job *j, int img, int ci) {
    const dn_conv_p *p = j->p;
    int k = p->k, s = p->stride, pd = p->pad, h = j->h, w = j->w, oh = j->oh, ow = j->ow;
    float *xp = j->dx + ((size_t)img * p->cin + ci) * h * w;
    memset(xp, 0, sizeof(float) * h * w);
    for (int ky = 0; ky < k; ky++)
        for (int kx = 0; kx < k; kx++) {
            const float *row = j->col + ((size_t)(ci * k + ky) * k + kx) * j->ld + (size_t)img * oh * ow;
            for (int oy = 0; oy < oh; oy++) {
                int iy = oy * s - pd + ky;
                if (iy < 0 || iy >= h) continue;
                const float *r = row + (size_t)oy * ow;
                float *xr = xp + (size_t)iy * w;
                for (int ox = 0; ox < ow; ox++) {
                    int ix = ox * s - pd + kx;
                    if (ix >= 0 && ix < w) xr[ix] += r[ox];
                }
            }
        }
}

/* col rows [r0, r1) (row = (ci, ky, kx)) for all g images of the chunk. */
static void im2col_rows(const im2col_job *j, int r0, int r1) {
    const dn_conv_p *p = j->p;
    int k = p->k, s = p->stride, pd = p->pad, h = j->h, w = j->w, oh = j->oh, ow = j->ow;
    for (int rr = r0; rr < r1; rr++) {
        int ci = rr / (k * k), ky = (rr / k) % k, kx = rr % k;
        for (int img = 0; img < j->g; img++) {
            const float *xp = j->x + ((size_t)img * p->cin + ci) * h * w;
            float *row = j->col + (size_t)rr * j->ld + (size_t)img * oh * ow;
            for (int oy = 0; oy < oh; oy++) {
                int iy = oy * s - pd + ky;
                float *r = row + (size_t)oy * ow;
                if (iy < 0 || iy >= h) { memset(r, 0, sizeof(float) * ow); continue; }
                const float *xr = xp + (size_t)iy * w;
                if (s == 1) {
                    int ox0 = pd - kx > 0 ? pd - kx : 0, ox1 = w + pd - kx < ow ? w + pd - kx : ow;
                    if (ox1 < ox0) ox1 = ox0;
                    for (int ox = 0; ox < ox0; ox++) r[ox] = 0.f;
                    if (ox1 > ox0) memcpy(r + ox0, xr + ox0 - pd + kx, sizeof(float) * (ox1 - ox0));
                    for (int ox = ox1; ox < ow; ox++) r[ox] = 0.f;
                } else {
                    for (int ox = 0; ox < ow; ox++) {
                        int ix = ox * s - pd + kx;
                        r[ox] = (ix >= 0 && ix < w) ? xr[ix] : 0.f;
                    }
                }
            }
        }
    }
}

/* Weight gradient of one chunk, split over the rows of dW^T (columns of dW):
 * each worker builds its own rows of col and runs its own single-threaded GEMM
 * dW[:, r0:r1] += dyT * col[r0:r1]^T, so packing is parallel too and every
 * dW element is still produced by one GEMM in the same order whatever the
 * number of workers. Row ranges are multiples of 32 (the widest GEMM panel). */
typedef struct { im2col_job ij; const float *dyt; float *dw; int K; } wgrad_job;
static void wgrad_fn(void *arg, int ith, int nth) {
    wgrad_job *j = arg;
    long b, e, blocks = (j->K + 31) / 32;
    dn_split(blocks, ith, nth, &b, &e);
    int r0 = (int)(b * 32), r1 = (int)(e * 32 < j->K ? e * 32 : j->K);
    if (r0 >= r1) return;
    im2col_rows(&j->ij, r0, r1);
    int ld = (int)j->ij.ld;
    dn_sgemm(0, 1, j->ij.p->cout, r1 - r0, ld, 1.f, j->dyt, ld, j->ij.col + (size_t)r0 * ld, ld, 1.f, j->dw + r0,
             j->K, NULL);
}

/* GEMM data gradient of one chunk, split over input channels: each worker
 * computes its rows of dcol = W^T * dyT with its own single-threaded GEMM and
 * scatters them back (col2im) for its channels; one job, no shared writes. */
typedef struct { im2col_job ij; const float *dyt; int K; } dgrad_job;
static void dgrad_fn(void *arg, int ith, int nth) {
    dgrad_job *j = arg;
    const dn_conv_p *p = j->ij.p;
    long c0, c1;
    dn_split(p->cin, ith, nth, &c0, &c1);
    if (c0 >= c1) return;
    int kk = p->k * p->k, ld = (int)j->ij.ld;
    dn_sgemm(1, 0, (int)(c1 - c0) * kk, ld, p->cout, 1.f, p->w + c0 * kk, j->K, j->dyt, ld, 0.f,
             j->ij.col + (size_t)c0 * kk * ld, ld, NULL);
    for (int img = 0; img < j->ij.g; img++)
        for (long ci = c0; ci < c1; ci++) col2im_one(&j->ij, img, (int)ci);
}

static void im2col_fn(void *arg, int ith, int nth) {
    im2col_job *j = arg;
    long b, e;
    dn_split((long)j->g * j->p->cin, ith, nth, &b, &e);
    for (long t = b; t < e; t++) im2col_one(j, (int)(t / j->p->cin), (int)(t % j->p->cin));
}

/* dyT[co][j*ohw + s] = dy[j][co][s] for a chunk of g images. */
typedef struct { const float *dy; float *dyt; int g, cout; size_t ohw; } tr_job;
static void transpose_fn(void *arg, int ith, int nth) {
    tr_job *t = arg;
    long b, e;
    dn_split((long)t->g * t->cout, ith, nth, &b, &e);
    for (long i = b; i < e; i++) {
        int j = (int)(i / t->cout), co = (int)(i % t->cout);
        memcpy(t->dyt + ((size_t)co * t->g + j) * t->ohw, t->dy + ((size_t)j * t->cout + co) * t->ohw,
               t->ohw * sizeof(float));
    }
}

static void run(dn_pool *pool, dn_job_fn fn, void *j) {
    if (pool) dn_pool_run(pool, fn, j);
    else fn(j, 0, 1);
}

/* dy of images [i0, i0+g) as the [cout][g*ohw] GEMM operand: dy itself for
 * one image, else transposed into dyt. */
static const float *chunk_dyt(int cout, size_t ohw, const float *dy, int i0, int g, float *dyt, dn_pool *pool) {
    const float *a = dy + (size_t)i0 * cout * ohw;
    if (g == 1) return a;
    tr_job t = {a, dyt, g, cout, ohw};
    run(pool, transpose_fn, &t);
    return dyt;
}

/* Images per chunk for a batch of n: at most L->chunk, and chunks of equal
 * size (16 + 16 rather than 23 + 9) so no GEMM gets a short reduction. */
static int chunk_for(const dn_conv_layer *L, int n) {
    int c = (n + L->chunk - 1) / L->chunk;
    return (n + c - 1) / c;
}

static int is_pointwise(const dn_conv_p *p) { return p->k == 1 && p->stride == 1 && p->pad == 0; }
static int bwd_as_conv(const dn_conv_p *p) { return p->stride == 1 && p->k - 1 - p->pad >= 0; }

static dn_conv_desc fwd_desc(const dn_conv_p *p) {
    dn_conv_desc d = {p->cin, p->cout, p->k, p->k, p->stride, p->pad};
    return d;
}
static dn_conv_desc bwd_desc(const dn_conv_p *p) {
    dn_conv_desc d = {p->cout, p->cin, p->k, p->k, 1, p->k - 1 - p->pad};
    return d;
}

dn_status dn_conv_layer_init(dn_conv_layer *L, const dn_conv_p *p, int h, int w, int maxn, int impl) {
    memset(L, 0, sizeof *L);
    if (impl != DN_CONV_AUTO && impl != DN_CONV_DIRECT && impl != DN_CONV_WINOGRAD && impl != DN_CONV_REF)
        return dn_fail(DN_ERR_ARG, "conv layer: implementation %d is not exact enough for training", impl);
    L->impl = impl;
    L->p = p; L->h = h; L->w = w;
    L->oh = dn_conv_out(h, p->k, p->stride, p->pad);
    L->ow = dn_conv_out(w, p->k, p->stride, p->pad);
    if (L->oh < 1 || L->ow < 1) return dn_fail(DN_ERR_ARG, "conv layer: input %dx%d too small", h, w);
    size_t per = ((size_t)p->cin * p->k * p->k + p->cout) * L->oh * L->ow;
    size_t g = CHUNK_FLOATS / (per ? per : 1);
    if (g < 1) g = 1;
    if (g > (size_t)maxn) g = (size_t)maxn;
    L->chunk = (int)g;
    /* Winograd weight gradient where it measured faster (single thread,
     * batch 32): ResNet-18 layer1 ~+12%, layer2/layer3 +20-35% over the
     * direct kernel, layer4 (7x7 planes, where the direct kernel wastes
     * lanes) +30-40% over the GEMM. 3x3 stride-1 convs with 64 x 64 to
     * 512 x 512 channels (with fewer channels the transforms weigh more than
     * the 16/36 multiplies save; 512 x 512 takes 16 MB of accumulators).
     * Not on maps under 4x4 pixels (layer4 of a 64 px input, 2x2: one tile
     * per image, transforms dominate; measured 11-13 ms vs 9-10 ms GEMM), nor
     * for 64 x 64 channels on maps under 20x20 (layer1 of a 64 px input, 16x16:
     * 9 ms vs 7 ms direct; at 56x56 Winograd is 30% faster; sizes between
     * were not measured, 28x28 keeps Winograd). */
    long ohw = (long)L->oh * L->ow, cc = (long)p->cin * p->cout;
    if (impl != DN_CONV_DIRECT && impl != DN_CONV_REF && p->k == 3 && p->stride == 1 && cc >= 64L * 64 &&
        cc <= 512L * 512 && ohw >= 16 && (cc > 64L * 64 || ohw >= 20L * 20) &&
        dn_wgrad_wino_plan(&L->ww, p, h, w, maxn) == DN_OK)
        L->ww_ok = 1;
    /* without a direct plan (shapes it refuses) the GEMM path serves */
    L->wg_ok = dn_wgrad_plan_init(&L->wg, p, h, w, maxn) == DN_OK;
    dn_clear_error();
    return DN_OK;
}

void dn_conv_layer_release(dn_conv_layer *L) {
    if (!L) return;
    dn_conv_op_free(L->fwd);
    dn_conv_op_free(L->bwd);
    free(L->wt);
    L->fwd = L->bwd = NULL;
    L->wt = NULL;
}

/* Implementation for an op over n images with out_pixels output pixels each
 * and in_c input channels: under DN_CONV_AUTO, Winograd where its per-step
 * weight transform (about the cost of 2 x 1.2k FLOP per weight) is repaid by
 * the smaller multiply count, i.e. when n * out_pixels is large, and where the
 * map is not so small for its channel count that the transforms of its border
 * tiles dominate (measured, 1 thread, batch 32: 64 channels at 16x16 — layer1
 * of a 64 px input — 7.6-8.3 ms Winograd vs 6.2 ms direct; 64 at 32x32 and 128
 * at 16x16 still 1.3-1.5x faster with Winograd); the exact direct conv otherwise. */
static dn_conv_impl pick_impl(const dn_conv_layer *L, int n, long out_pixels, int in_c) {
    if (L->impl != DN_CONV_AUTO) return (dn_conv_impl)L->impl;
    const dn_conv_p *p = L->p;
    if (p->k == 3 && p->stride == 1 && (long)n * out_pixels >= DN_CONV_WINO_MIN_PIXELS &&
        out_pixels * in_c >= DN_CONV_WINO_MIN_MAP_CH)
        return DN_CONV_WINOGRAD;
    return DN_CONV_AUTO;
}

/* *op := an op of impl over weights w (+ bias): the existing one re-packed when
 * it was built the same way, else a new one. */
static dn_status op_refresh(dn_conv_op **op, int *op_impl, int *op_bias, const dn_conv_desc *d, const float *w,
                            const float *bias, dn_conv_impl impl) {
    if (*op && *op_impl == (int)impl && *op_bias == !!bias) return dn_conv_op_set_weights(*op, w, bias);
    dn_conv_op_free(*op);
    if (!(*op = dn_conv_op_new(d, w, bias, impl))) return dn_fail_prefix(DN_ERR_NOMEM, "conv layer");
    *op_impl = (int)impl;
    *op_bias = !!bias;
    return DN_OK;
}

dn_status dn_conv_layer_prepare(dn_conv_layer *L, int fwd, int bwd, int n) {
    const dn_conv_p *p = L->p;
    dn_status st;
    if (fwd) {
        dn_conv_desc d = fwd_desc(p);
        if ((st = op_refresh(&L->fwd, &L->fwd_impl, &L->fwd_folded, &d, p->w, NULL,
                             pick_impl(L, n, (long)L->oh * L->ow, p->cin))))
            return st;
    }
    if (bwd && bwd_as_conv(p)) {
        int k = p->k, kk = k * k;
        if (!L->wt && !(L->wt = dn_malloc((size_t)p->cin * p->cout * kk * sizeof(float)))) return DN_ERR_NOMEM;
        for (int co = 0; co < p->cout; co++)
            for (int ci = 0; ci < p->cin; ci++) {
                const float *src = p->w + ((size_t)co * p->cin + ci) * kk;
                float *dst = L->wt + ((size_t)ci * p->cout + co) * kk;
                for (int t = 0; t < kk; t++) dst[t] = src[kk - 1 - t];
            }
        dn_conv_desc d = bwd_desc(p);
        int nobias = 0;
        if ((st = op_refresh(&L->bwd, &L->bwd_impl, &nobias, &d, L->wt, NULL, pick_impl(L, n, (long)L->h * L->w, p->cout))))
            return st;
    }
    return DN_OK;
}

dn_status dn_conv_layer_prepare_folded(dn_conv_layer *L, const dn_bn_p *bn, int n) {
    const dn_conv_p *p = L->p;
    size_t per = (size_t)p->cin * p->k * p->k;
    float *w = dn_malloc(per * p->cout * sizeof(float)), *b = dn_malloc((size_t)p->cout * sizeof(float));
    dn_status st = DN_OK;
    if (!w || !b) { st = DN_ERR_NOMEM; goto done; }
    for (int co = 0; co < p->cout; co++) {
        double sc = (double)bn->weight[co] / sqrt((double)bn->var[co] + bn->eps);
        for (size_t i = 0; i < per; i++) w[co * per + i] = (float)(p->w[co * per + i] * sc);
        b[co] = (float)(bn->bias[co] - bn->mean[co] * sc);
    }
    dn_conv_desc d = fwd_desc(p);
    st = op_refresh(&L->fwd, &L->fwd_impl, &L->fwd_folded, &d, w, b, pick_impl(L, n, (long)L->oh * L->ow, p->cin));
done:
    free(w);
    free(b);
    return st;
}

void dn_conv_layer_fwd_fused(const dn_conv_layer *L, const float *x, int n, const float *res, int relu,
                             float *y, dn_pool *pool, void *scratch) {
    dn_conv_op_run(L->fwd, x, n, L->h, L->w, res, relu, y, pool, scratch);
}

size_t dn_conv_layer_scratch(const dn_conv_layer *L, int maxn) {
    const dn_conv_p *p = L->p;
    size_t ohw = (size_t)L->oh * L->ow, g = (size_t)L->chunk;
    size_t gemm = (((size_t)p->cin * p->k * p->k + p->cout) * g * ohw) * sizeof(float) + 128;
    size_t s = gemm, ws;
    if (L->wg_ok && (ws = dn_wgrad_scratch(&L->wg)) > s) s = ws;
    if (L->ww_ok && (ws = dn_wgrad_wino_scratch(&L->ww)) > s) s = ws;
    dn_conv_desc fd = fwd_desc(p), bd = bwd_desc(p);
    /* The ops' scratch depends only on shapes: measure it on throwaway ops. */
    float *wz = dn_calloc((size_t)p->cin * p->cout * p->k * p->k, sizeof(float));
    /* every impl pick_impl may choose for batches up to maxn */
    for (int c = 0; c < 2 && wz; c++) {
        dn_conv_impl fi = c ? pick_impl(L, maxn, (long)L->oh * L->ow, p->cin) : (dn_conv_impl)L->impl;
        dn_conv_impl bi = c ? pick_impl(L, maxn, (long)L->h * L->w, p->cout) : (dn_conv_impl)L->impl;
        if (c && fi == (dn_conv_impl)L->impl && bi == (dn_conv_impl)L->impl) break;
        dn_conv_op *o = dn_conv_op_new(&fd, wz, NULL, fi);
        if (o) { size_t t = dn_conv_op_scratch(o, maxn, L->h, L->w); if (t > s) s = t; dn_conv_op_free(o); }
        if (bwd_as_conv(p) && (o = dn_conv_op_new(&bd, wz, NULL, bi))) {
            size_t t = dn_conv_op_scratch(o, maxn, L->oh, L->ow);
            if (t > s) s = t;
            dn_conv_op_free(o);
        }
    }
    free(wz);
    return s;
}

/* GEMM fallback forward (no op prepared): im2col per chunk. */
void dn_conv_layer_fwd(const dn_conv_layer *L, const float *x, int n, float *y, dn_pool *pool, void *scratch) {
    const dn_conv_p *p = L->p;
    if (L->fwd) {
        dn_conv_op_run(L->fwd, x, n, L->h, L->w, NULL, 0, y, pool, scratch);
        return;
    }
    int K = p->cin * p->k * p->k, N = L->oh * L->ow;
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * p->cin * L->h * L->w;
        const float *col = xi;
        if (!is_pointwise(p)) {
            im2col_job j = {p, xi, scratch, NULL, 1, L->h, L->w, L->oh, L->ow, (size_t)N};
            run(pool, im2col_fn, &j);
            col = scratch;
        }
        dn_sgemm(0, 0, p->cout, N, K, 1.f, p->w, K, col, N, 0.f, y + (size_t)i * p->cout * N, N, pool);
    }
}

void dn_conv_layer_bwd_weight(const dn_conv_layer *L, const float *x, int n, const float *dy, float *dw,
                              dn_pool *pool, void *scratch) {
    const dn_conv_p *p = L->p;
    if (L->ww_ok && dn_kernels_isa() >= DN_ISA_AVX2) {
        dn_wgrad_wino_run(&L->ww, x, n, dy, dw, pool, scratch);
        return;
    }
    /* Direct kernel where at least 80% of its lanes carry output pixels (padded
     * rows of small planes such as 7x7 waste the rest; measured slower than the
     * GEMM there). */
    if (L->wg_ok && L->impl != DN_CONV_REF && dn_wgrad_available() && (long)L->oh * L->ow * 5 >= (long)L->wg.Qd * 4) {
        dn_wgrad_run(&L->wg, x, n, dy, dw, pool, scratch, 0);
        return;
    }
    int K = p->cin * p->k * p->k;
    size_t ohw = (size_t)L->oh * L->ow;
    int gc = chunk_for(L, n);
    for (int i0 = 0; i0 < n; i0 += gc) {
        int g = n - i0 < gc ? n - i0 : gc;
        size_t ld = (size_t)g * ohw;
        float *col = scratch, *dyt = col + (size_t)K * ld;
        /* dy^T [cout][g*ohw] of the chunk, then col rows + GEMM per worker */
        const float *a = chunk_dyt(p->cout, ohw, dy, i0, g, dyt, pool);
        wgrad_job wj = {{p, x + (size_t)i0 * p->cin * L->h * L->w, col, NULL, g, L->h, L->w, L->oh, L->ow, ld},
                        a, dw, K};
        run(pool, wgrad_fn, &wj);
    }
}

void dn_conv_layer_bwd_data(const dn_conv_layer *L, int n, const float *dy, float *dx, dn_pool *pool,
                            void *scratch) {
    const dn_conv_p *p = L->p;
    if (L->bwd) {
        dn_conv_op_run(L->bwd, dy, n, L->oh, L->ow, NULL, 0, dx, pool, scratch);
        return;
    }
    int K = p->cin * p->k * p->k;
    size_t ohw = (size_t)L->oh * L->ow;
    int gc = chunk_for(L, n);
    for (int i0 = 0; i0 < n; i0 += gc) {
        int g = n - i0 < gc ? n - i0 : gc;
        size_t ld = (size_t)g * ohw;
        float *dcol = scratch, *dyt = dcol + (size_t)K * ld;
        const float *b = chunk_dyt(p->cout, ohw, dy, i0, g, dyt, pool);
        float *dxc = dx + (size_t)i0 * p->cin * L->h * L->w;
        if (is_pointwise(p) && g == 1) {
            dn_sgemm(1, 0, K, (int)ld, p->cout, 1.f, p->w, K, b, (int)ld, 0.f, dxc, (int)ld, pool);
            continue;
        }
        dgrad_job dj = {{p, NULL, dcol, dxc, g, L->h, L->w, L->oh, L->ow, ld}, b, K};
        run(pool, dgrad_fn, &dj);
    }
}
