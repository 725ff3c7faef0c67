/* Convolution layer for training: forward, data gradient and weight gradient
 * through im2col + dn_sgemm, one image at a time (scratch holds one column
 * matrix). The per-image weight-gradient GEMMs accumulate in image order, so
 * the result does not depend on the number of threads. */
#include "nn/layers.h"
#include "kernels/kernels.h"
#include <string.h>

typedef struct {
    const dn_conv_p *p;
    const float *x;   /* one image [cin][h][w] */
    float *col;       /* [cin*k*k][oh*ow] */
    float *dx;        /* col2im target [cin][h][w] */
    int h, w, oh, ow;
} im2col_job;

static int is_pointwise(const dn_conv_p *p) { return p->k == 1 && p->stride == 1 && p->pad == 0; }

size_t dn_conv_layer_scratch(const dn_conv_p *p, int h, int w) {
    if (is_pointwise(p)) return 0;
    int oh = dn_conv_out(h, p->k, p->stride, p->pad), ow = dn_conv_out(w, p->k, p->stride, p->pad);
    return (size_t)p->cin * p->k * p->k * (size_t)oh * ow;
}

/* Rows of col for input channels [c0, c1). */
static void im2col_range(const im2col_job *j, int c0, int c1) {
    const dn_conv_p *p = j->p;
    int k = p->k, s = p->stride, pd = p->pad, h = j->h, w = j->w, oh = j->oh, ow = j->ow;
    for (int ci = c0; ci < c1; ci++) {
        const float *xp = j->x + (size_t)ci * h * w;
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *row = j->col + ((size_t)(ci * k + ky) * k + kx) * oh * ow;
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
}

/* dx[ci] = sum over (ky,kx) of the col rows scattered back, channels [c0, c1). */
static void col2im_range(const im2col_job *j, int c0, int c1) {
    const dn_conv_p *p = j->p;
    int k = p->k, s = p->stride, pd = p->pad, h = j->h, w = j->w, oh = j->oh, ow = j->ow;
    for (int ci = c0; ci < c1; ci++) {
        float *xp = j->dx + (size_t)ci * h * w;
        memset(xp, 0, sizeof(float) * h * w);
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const float *row = j->col + ((size_t)(ci * k + ky) * k + kx) * oh * ow;
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
}

static void im2col_job_fn(void *arg, int ith, int nth) {
    im2col_job *j = arg;
    long b, e;
    dn_split(j->p->cin, ith, nth, &b, &e);
    im2col_range(j, (int)b, (int)e);
}

static void col2im_job_fn(void *arg, int ith, int nth) {
    im2col_job *j = arg;
    long b, e;
    dn_split(j->p->cin, ith, nth, &b, &e);
    col2im_range(j, (int)b, (int)e);
}

static void run(dn_pool *pool, dn_job_fn fn, im2col_job *j) {
    if (pool) dn_pool_run(pool, fn, j);
    else fn(j, 0, 1);
}

void dn_conv_layer_fwd(const dn_conv_p *p, const float *x, int n, int h, int w, float *y,
                       dn_pool *pool, float *scratch) {
    int oh = dn_conv_out(h, p->k, p->stride, p->pad), ow = dn_conv_out(w, p->k, p->stride, p->pad);
    int K = p->cin * p->k * p->k, N = oh * ow;
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * p->cin * h * w;
        const float *col = xi;
        if (!is_pointwise(p)) {
            im2col_job j = {p, xi, scratch, NULL, h, w, oh, ow};
            run(pool, im2col_job_fn, &j);
            col = scratch;
        }
        dn_sgemm(0, 0, p->cout, N, K, 1.f, p->w, K, col, N, 0.f, y + (size_t)i * p->cout * N, N, pool);
    }
}

void dn_conv_layer_bwd(const dn_conv_p *p, const float *x, int n, int h, int w, const float *dy,
                       float *dx, float *dw, dn_pool *pool, float *scratch) {
    int oh = dn_conv_out(h, p->k, p->stride, p->pad), ow = dn_conv_out(w, p->k, p->stride, p->pad);
    int K = p->cin * p->k * p->k, N = oh * ow;
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * p->cin * h * w;
        const float *dyi = dy + (size_t)i * p->cout * N;
        float *dxi = dx ? dx + (size_t)i * p->cin * h * w : NULL;
        im2col_job j = {p, xi, scratch, dxi, h, w, oh, ow};
        if (dw) {
            const float *col = xi;
            if (!is_pointwise(p)) {
                run(pool, im2col_job_fn, &j);
                col = scratch;
            }
            /* dW[cout][K] += dy_i[cout][N] * col[K][N]^T */
            dn_sgemm(0, 1, p->cout, K, N, 1.f, dyi, N, col, N, 1.f, dw, K, pool);
        }
        if (dxi) {
            if (is_pointwise(p)) {
                /* dx_i[cin][N] = W[cout][cin]^T * dy_i[cout][N] */
                dn_sgemm(1, 0, K, N, p->cout, 1.f, p->w, K, dyi, N, 0.f, dxi, N, pool);
            } else {
                dn_sgemm(1, 0, K, N, p->cout, 1.f, p->w, K, dyi, N, 0.f, scratch, N, pool);
                run(pool, col2im_job_fn, &j);
            }
        }
    }
}
