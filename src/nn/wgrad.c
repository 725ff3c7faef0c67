/* Direct weight gradient (see wgrad.h): plan, packing into phase planes,
 * scalar tile kernel, and the chunk/tile driver. */
#include "nn/wgrad.h"
#include "kernels/kernels.h"
#include <string.h>

/* Upper bound of packed x + dy floats per chunk (scratch size). */
#define WG_CHUNK_FLOATS (2u << 20)
#define TR 3 /* output channels per tile */
#define TG 9 /* (ci, tap) columns per tile */
#define SB 8 /* tile rows per super-block */
/* Pixels (images x padded output pixels) per tile and chunk we aim for, so
 * the horizontal sums are amortised while a chunk's dy rows of one
 * super-block stay in L2. */
#define WG_TILE_PIXELS 2048

static int round16(long v) { return (int)((v + 15) / 16 * 16); }

dn_status dn_wgrad_plan_init(dn_wgrad_plan *pl, const dn_conv_p *p, int h, int w, int maxn) {
    memset(pl, 0, sizeof *pl);
    if (p->k < 1 || p->stride < 1 || p->pad < 0 || p->cin < 1 || p->cout < 1 || maxn < 1)
        return dn_fail(DN_ERR_ARG, "weight gradient: bad conv k=%d stride=%d pad=%d", p->k, p->stride, p->pad);
    pl->cin = p->cin; pl->cout = p->cout; pl->k = p->k; pl->s = p->stride; pl->pad = p->pad;
    pl->h = h; pl->w = w;
    pl->oh = dn_conv_out(h, p->k, p->stride, p->pad);
    pl->ow = dn_conv_out(w, p->k, p->stride, p->pad);
    if (pl->oh < 1 || pl->ow < 1) return dn_fail(DN_ERR_ARG, "weight gradient: input %dx%d too small", h, w);
    /* plane sizes are ints: keep (h + 2 pad) x (w + 2 pad) far below 2^31 */
    if ((long)(h + 2 * p->pad) * (w + 2 * p->pad) > (1L << 28))
        return dn_fail(DN_ERR_ARG, "weight gradient: input %dx%d too large", h, w);
    int ext = (p->k - 1) / p->stride;
    pl->S = p->stride < p->k ? p->stride : p->k;
    pl->PH = pl->oh + ext;
    pl->PW = pl->ow + ext;
    pl->Qd = round16((long)pl->oh * pl->PW);
    long need = (long)pl->Qd + (long)ext * pl->PW + ext, plane = (long)pl->PH * pl->PW;
    pl->P = round16(need > plane ? need : plane);
    size_t per = (size_t)pl->cin * pl->S * pl->S * pl->P + (size_t)pl->cout * pl->Qd;
    size_t g = (WG_TILE_PIXELS + pl->Qd - 1) / pl->Qd;
    if (g > WG_CHUNK_FLOATS / per) g = WG_CHUNK_FLOATS / per;
    if (g < 1) g = 1;
    if (g > (size_t)maxn) g = (size_t)maxn;
    pl->chunk = (int)g;
    return DN_OK;
}

size_t dn_wgrad_scratch(const dn_wgrad_plan *pl) {
    size_t per = (size_t)pl->cin * pl->S * pl->S * pl->P + (size_t)pl->cout * pl->Qd;
    return per * (size_t)pl->chunk * sizeof(float) + 64;
}

int dn_wgrad_available(void) { return dn_kernels_isa() == DN_ISA_AVX512; }

void dn_wgrad_tile_ref(int R, int G, const float *dy, size_t dyrow, const float *const *xp, int g, int Qd,
                       int P, float *out) {
    for (int r = 0; r < R; r++)
        for (int j = 0; j < G; j++) {
            double acc = 0;
            for (int img = 0; img < g; img++) {
                const float *d = dy + r * dyrow + (size_t)img * Qd, *x = xp[j] + (size_t)img * P;
                for (int q = 0; q < Qd; q++) acc += (double)d[q] * x[q];
            }
            out[r * G + j] = (float)acc;
        }
}

/* ------------------------------------------------------------ packing */

typedef struct {
    const dn_wgrad_plan *pl;
    const float *x, *dy;   /* chunk start */
    float *xs, *dys;       /* packed: xs [ci][phase][g][P], dys [co][g][Qd] */
    int g;
} pack_job;

/* Phase planes of input channel ci of image img. */
static void pack_x_one(const pack_job *j, int img, int ci) {
    const dn_wgrad_plan *pl = j->pl;
    int S = pl->S, s = pl->s, pd = pl->pad, h = pl->h, w = pl->w, PH = pl->PH, PW = pl->PW;
    const float *xp = j->x + ((size_t)img * pl->cin + ci) * h * w;
    for (int py = 0; py < S; py++)
        for (int px = 0; px < S; px++) {
            float *o = j->xs + (((size_t)ci * S * S + py * S + px) * j->g + img) * pl->P;
            for (int r = 0; r < PH; r++) {
                float *orow = o + (size_t)r * PW;
                int iy = r * s + py - pd;
                if (iy < 0 || iy >= h) { memset(orow, 0, sizeof(float) * PW); continue; }
                const float *xr = xp + (size_t)iy * w;
                if (s == 1) {
                    /* ix = c - pd: valid for c in [pd, pd + w) */
                    int c0 = pd < PW ? pd : PW, c1 = pd + w < PW ? pd + w : PW;
                    if (c1 < c0) c1 = c0;
                    memset(orow, 0, sizeof(float) * c0);
                    memcpy(orow + c0, xr, sizeof(float) * (c1 - c0));
                    memset(orow + c1, 0, sizeof(float) * (PW - c1));
                } else {
                    for (int c = 0; c < PW; c++) {
                        int ix = c * s + px - pd;
                        orow[c] = ix >= 0 && ix < w ? xr[ix] : 0.f;
                    }
                }
            }
            memset(o + (size_t)PH * PW, 0, sizeof(float) * (pl->P - (size_t)PH * PW));
        }
}

static void pack_dy_one(const pack_job *j, int img, int co) {
    const dn_wgrad_plan *pl = j->pl;
    int oh = pl->oh, ow = pl->ow, PW = pl->PW;
    const float *src = j->dy + ((size_t)img * pl->cout + co) * oh * ow;
    float *o = j->dys + ((size_t)co * j->g + img) * pl->Qd;
    for (int oy = 0; oy < oh; oy++) {
        memcpy(o + (size_t)oy * PW, src + (size_t)oy * ow, sizeof(float) * ow);
        memset(o + (size_t)oy * PW + ow, 0, sizeof(float) * (PW - ow));
    }
    memset(o + (size_t)oh * PW, 0, sizeof(float) * (pl->Qd - (size_t)oh * PW));
}

static void pack_fn(void *arg, int ith, int nth) {
    pack_job *j = arg;
    long nx = (long)j->g * j->pl->cin, ny = (long)j->g * j->pl->cout, b, e;
    dn_split(nx + ny, ith, nth, &b, &e);
    for (long t = b; t < e; t++) {
        if (t < nx) pack_x_one(j, (int)(t / j->pl->cin), (int)(t % j->pl->cin));
        else pack_dy_one(j, (int)((t - nx) / j->pl->cout), (int)((t - nx) % j->pl->cout));
    }
}

/* ------------------------------------------------------------ tiles */

typedef struct {
    const dn_wgrad_plan *pl;
    const float *xs, *dys;
    float *dw;
    int g, use_ref;
} tile_job;

static void tile_fn(void *arg, int ith, int nth) {
    tile_job *j = arg;
    const dn_wgrad_plan *pl = j->pl;
    int k = pl->k, kk = k * k, S = pl->S, s = pl->s, K = pl->cin * kk;
    long ncb = (pl->cout + TR - 1) / TR, ngr = (K + TG - 1) / TG, b, e;
    dn_split(ncb * ngr, ith, nth, &b, &e);
    size_t dyrow = (size_t)j->g * pl->Qd;
    for (long t = b; t < e; t++) {
        /* Order: super-blocks of SB tile rows (SB*TR output channels, whose dy
         * rows stay in L2), then column groups, then the tile rows of the
         * super-block (which reuse the column group's x planes from L1/L2). */
        long sbi = t / (SB * ngr), rem = t - sbi * SB * ngr;
        long m = ncb - sbi * SB < SB ? ncb - sbi * SB : SB;
        int gr = (int)(rem / m), cb = (int)(sbi * SB + rem % m);
        int co0 = cb * TR, R = pl->cout - co0 < TR ? pl->cout - co0 : TR;
        int c0 = gr * TG, G = K - c0 < TG ? K - c0 : TG;
        const float *xp[TG];
        for (int jj = 0; jj < G; jj++) {
            int col = c0 + jj, ci = col / kk, tap = col % kk, ky = tap / k, kx = tap % k;
            int phase = (ky % s) * S + kx % s;
            xp[jj] = j->xs + ((size_t)ci * S * S + phase) * j->g * pl->P + (size_t)(ky / s) * pl->PW + kx / s;
        }
        float out[TR * TG];
        const float *dy = j->dys + (size_t)co0 * dyrow;
        if (j->use_ref) dn_wgrad_tile_ref(R, G, dy, dyrow, xp, j->g, pl->Qd, pl->P, out);
        else dn_wgrad_tile_avx512(R, G, dy, dyrow, xp, j->g, pl->Qd, pl->P, out);
        for (int r = 0; r < R; r++) {
            float *d = j->dw + (size_t)(co0 + r) * K + c0;
            for (int jj = 0; jj < G; jj++) d[jj] += out[r * G + jj];
        }
    }
}

static void run(dn_pool *pool, dn_job_fn fn, void *j) {
    if (pool) dn_pool_run(pool, fn, j);
    else fn(j, 0, 1);
}

void dn_wgrad_run(const dn_wgrad_plan *pl, const float *x, int n, const float *dy, float *dw, dn_pool *pool,
                  void *scratch, int use_ref) {
    /* chunks of equal size (at most pl->chunk images) in image order */
    int nc = (n + pl->chunk - 1) / pl->chunk, gc = nc ? (n + nc - 1) / nc : 1;
    float *xs = scratch;
    for (int i0 = 0; i0 < n; i0 += gc) {
        int g = n - i0 < gc ? n - i0 : gc;
        float *dys = xs + (size_t)pl->cin * pl->S * pl->S * g * pl->P;
        pack_job pj = {pl, x + (size_t)i0 * pl->cin * pl->h * pl->w, dy + (size_t)i0 * pl->cout * pl->oh * pl->ow,
                       xs, dys, g};
        run(pool, pack_fn, &pj);
        tile_job tj = {pl, xs, dys, dw, g, use_ref};
        run(pool, tile_fn, &tj);
    }
}
