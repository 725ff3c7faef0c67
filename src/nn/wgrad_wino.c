/* Winograd weight gradient for 3x3 stride-1 convolutions (see wgrad.h).
 *
 * Per 2x2 tile of output pixels the weight gradient is a "3 outputs, 2-tap
 * filter" correlation in each dimension: dW[i][j] += sum_{a,b<2} dy[a][b] *
 * xpad[a+i][b+j] over a 4x4 patch of the padded input. Its Winograd form
 * F(3x3, 2x2) on the points 0, 1, -1, inf (16 products instead of 36):
 *   U = Gt g Gt^T,  g the 2x2 dy tile,  Gt = [1 0; 1 1; 1 -1; 0 1]
 *   V = Bt d Bt^T,  d the 4x4 patch,    Bt = [1 0 -1 0; 0 .5 .5 0; 0 -.5 .5 0; 0 -1 0 1]
 *   dW = At (sum_tiles U .* V) At^T,    At = [1 1 1 0; 0 1 -1 0; 0 1 1 1]
 * (verified symbolically: the identity holds for every g, d). The sum over
 * tiles is 16 GEMMs M_xi[co][ci] = U_xi[co][tiles] * V_xi[ci][tiles]^T, so the
 * multiply count is 16/36 of the direct one; the transforms are linear
 * passes over x and dy.
 *
 * Determinism: each M_xi is produced by one worker with a single-threaded
 * (deterministic) GEMM, chunks of images in image order, accumulating with
 * beta = 1; the chunk size depends only on the shapes and maxn. */
#include "nn/wgrad.h"
#include "kernels/kernels.h"
#include <string.h>

/* Upper bound of U + V floats per chunk. */
#define WW_CHUNK_FLOATS (4u << 20)
/* padded row buffers of the transforms live on the stack up to this width */
#define WW_MAX_ROW 1024
/* stands in for input / dy rows outside the plane */
static const float wino_zeros[WW_MAX_ROW];

dn_status dn_wgrad_wino_plan(dn_wgrad_wino *ww, const dn_conv_p *p, int h, int w, int maxn) {
    memset(ww, 0, sizeof *ww);
    if (p->k != 3 || p->stride != 1 || p->pad < 0 || p->pad > 2 || maxn < 1)
        return dn_fail(DN_ERR_ARG, "Winograd weight gradient: needs a 3x3 stride-1 conv with padding 0..2");
    ww->cin = p->cin; ww->cout = p->cout; ww->pad = p->pad; ww->h = h; ww->w = w;
    ww->oh = dn_conv_out(h, 3, 1, p->pad);
    ww->ow = dn_conv_out(w, 3, 1, p->pad);
    if (ww->oh < 1 || ww->ow < 1) return dn_fail(DN_ERR_ARG, "Winograd weight gradient: input %dx%d too small", h, w);
    ww->th = (ww->oh + 1) / 2;
    ww->tw = (ww->ow + 1) / 2;
    if (2 * ww->tw + 2 > WW_MAX_ROW) return dn_fail(DN_ERR_ARG, "Winograd weight gradient: input width %d too large", w);
    size_t per = (size_t)16 * (p->cin + p->cout) * ww->th * ww->tw;
    size_t g = WW_CHUNK_FLOATS / per;
    if (g < 1) g = 1;
    if (g > (size_t)maxn) g = (size_t)maxn;
    ww->chunk = (int)g;
    return DN_OK;
}

size_t dn_wgrad_wino_scratch(const dn_wgrad_wino *ww) {
    size_t T = (size_t)ww->th * ww->tw;
    size_t ld = (T * ww->chunk + 15) / 16 * 16;
    return ((size_t)16 * (ww->cin + ww->cout) * ld + (size_t)16 * ww->cin * ww->cout) * sizeof(float) + 128;
}

typedef struct {
    const dn_wgrad_wino *ww;
    const float *x, *dy;   /* chunk start */
    float *V, *U, *M;      /* V [16][cin][g*T], U [16][cout][g*T], M [16][cout][cin] */
    float *dw;
    size_t ld;             /* row length of U and V: g*T rounded up to 16, zero tail */
    int g, first, tiles;   /* tiles: AVX-512 dot-product tiles instead of dn_sgemm */
} ww_job;

/* V of input channel ci of image img: 4 padded input rows per tile row,
 * column transform on whole rows (contiguous), then the row transform per
 * tile, written channel-major [xi][ci][tile] (contiguous along tiles). */
static void tr_x(const ww_job *j, int img, int ci) {
    const dn_wgrad_wino *ww = j->ww;
    int h = ww->h, w = ww->w, pd = ww->pad, th = ww->th, tw = ww->tw, W = 2 * tw + 2;
    size_t T = (size_t)th * tw, ld = j->ld, plane = (size_t)ww->cin * ld;
    const float *xp = j->x + ((size_t)img * ww->cin + ci) * h * w;
    float *v = j->V + (size_t)ci * ld + (size_t)img * T;
    if (img == j->g - 1) /* zero the rows' tails up to the padded length ld */
        for (int xi = 0; xi < 16; xi++) memset(v + xi * plane + T, 0, sizeof(float) * (ld - T * j->g));
    float C[4][WW_MAX_ROW];
    /* columns of the padded row: [0, pd) and [pd + w, W) are padding (zero in
     * every row, so zero after the column transform too) */
    int c1 = pd + w < W ? pd + w : W;
    for (int i = 0; i < 4; i++) {
        memset(C[i], 0, sizeof(float) * pd);
        memset(C[i] + c1, 0, sizeof(float) * (W - c1));
    }
    for (int ty = 0; ty < th; ty++) {
        const float *r[4]; /* input rows (or a zero row), indexed by input column */
        for (int a = 0; a < 4; a++) {
            int iy = 2 * ty + a - pd;
            r[a] = iy < 0 || iy >= h ? wino_zeros : xp + (size_t)iy * w;
        }
        const float *r0 = r[0], *r1 = r[1], *r2 = r[2], *r3 = r[3];
        float *C0 = C[0] + pd, *C1 = C[1] + pd, *C2 = C[2] + pd, *C3 = C[3] + pd;
        for (int c = 0; c < c1 - pd; c++) {
            C0[c] = r0[c] - r2[c];
            C1[c] = 0.5f * (r1[c] + r2[c]);
            C2[c] = 0.5f * (r2[c] - r1[c]);
            C3[c] = r3[c] - r1[c];
        }
        size_t o = (size_t)ty * tw;
        for (int i = 0; i < 4; i++) {
            const float *s = C[i];
            float *v0 = v + (size_t)(i * 4 + 0) * plane + o, *v1 = v + (size_t)(i * 4 + 1) * plane + o;
            float *v2 = v + (size_t)(i * 4 + 2) * plane + o, *v3 = v + (size_t)(i * 4 + 3) * plane + o;
            for (int tx = 0; tx < tw; tx++) {
                float s0 = s[2 * tx], s1 = s[2 * tx + 1], s2 = s[2 * tx + 2], s3 = s[2 * tx + 3];
                v0[tx] = s0 - s2;
                v1[tx] = 0.5f * (s1 + s2);
                v2[tx] = 0.5f * (s2 - s1);
                v3[tx] = s3 - s1;
            }
        }
    }
}

/* U of output channel co of image img (dy zero beyond oh x ow), [xi][co][tile]. */
static void tr_dy(const ww_job *j, int img, int co) {
    const dn_wgrad_wino *ww = j->ww;
    int oh = ww->oh, ow = ww->ow, th = ww->th, tw = ww->tw, W = 2 * tw;
    size_t T = (size_t)th * tw, ld = j->ld, plane = (size_t)ww->cout * ld;
    const float *dp = j->dy + ((size_t)img * ww->cout + co) * oh * ow;
    float *u = j->U + (size_t)co * ld + (size_t)img * T;
    if (img == j->g - 1)
        for (int xi = 0; xi < 16; xi++) memset(u + xi * plane + T, 0, sizeof(float) * (ld - T * j->g));
    float C[4][WW_MAX_ROW];
    for (int i = 0; i < 4; i++) memset(C[i] + ow, 0, sizeof(float) * (W - ow)); /* column ow when odd */
    for (int ty = 0; ty < th; ty++) {
        const float *r0 = dp + (size_t)(2 * ty) * ow, *r1 = 2 * ty + 1 < oh ? r0 + ow : wino_zeros;
        float *C0 = C[0], *C1 = C[1], *C2 = C[2], *C3 = C[3];
        for (int c = 0; c < ow; c++) {
            C0[c] = r0[c];
            C1[c] = r0[c] + r1[c];
            C2[c] = r0[c] - r1[c];
            C3[c] = r1[c];
        }
        size_t o = (size_t)ty * tw;
        for (int i = 0; i < 4; i++) {
            const float *s = C[i];
            float *u0 = u + (size_t)(i * 4 + 0) * plane + o, *u1 = u + (size_t)(i * 4 + 1) * plane + o;
            float *u2 = u + (size_t)(i * 4 + 2) * plane + o, *u3 = u + (size_t)(i * 4 + 3) * plane + o;
            for (int tx = 0; tx < tw; tx++) {
                float s0 = s[2 * tx], s1 = s[2 * tx + 1];
                u0[tx] = s0;
                u1[tx] = s0 + s1;
                u2[tx] = s0 - s1;
                u3[tx] = s1;
            }
        }
    }
}

static void tr_fn(void *arg, int ith, int nth) {
    ww_job *j = arg;
    long nx = (long)j->g * j->ww->cin, ny = (long)j->g * j->ww->cout, b, e;
    dn_split(nx + ny, ith, nth, &b, &e);
    for (long t = b; t < e; t++) {
        if (t < nx) tr_x(j, (int)(t / j->ww->cin), (int)(t % j->ww->cin));
        else tr_dy(j, (int)((t - nx) / j->ww->cout), (int)((t - nx) % j->ww->cout));
    }
}

/* M_xi (+)= U_xi V_xi^T, the 16 GEMMs split between the workers. */
static void gemm_fn(void *arg, int ith, int nth) {
    ww_job *j = arg;
    const dn_wgrad_wino *ww = j->ww;
    int K = ww->th * ww->tw * j->g, ld = (int)j->ld;
    long b, e;
    dn_split(16, ith, nth, &b, &e);
    for (long xi = b; xi < e; xi++)
        dn_sgemm(0, 1, ww->cout, ww->cin, K, 1.f, j->U + (size_t)xi * ww->cout * ld, ld,
                 j->V + (size_t)xi * ww->cin * ld, ld, j->first ? 0.f : 1.f,
                 j->M + (size_t)xi * ww->cout * ww->cin, ww->cin, NULL);
}

/* Same products with the direct weight gradient's AVX-512 tile kernel: both
 * U and V rows are contiguous along the tiles (the "NT" case), so every
 * M entry is one dot product and nothing is packed or transposed. Tiles of
 * <= 3 output x <= 9 input channels (channel counts split evenly), in the
 * order xi, output block, input group; each tile owned by one worker, sums
 * added to M (zeroed by the first chunk) in chunk order. */
static void dot_fn(void *arg, int ith, int nth) {
    ww_job *j = arg;
    const dn_wgrad_wino *ww = j->ww;
    int cin = ww->cin, cout = ww->cout;
    long ncb = (cout + 2) / 3, ngr = (cin + 8) / 9, per = ncb * ngr, b, e;
    dn_split(16 * per, ith, nth, &b, &e);
    for (long t = b; t < e; t++) {
        int xi = (int)(t / per), cb = (int)(t % per / ngr), gr = (int)(t % ngr);
        int co0 = (int)(cb * cout / ncb), co1 = (int)((cb + 1) * cout / ncb);
        int ci0 = (int)(gr * cin / ngr), ci1 = (int)((gr + 1) * cin / ngr);
        const float *vp[9];
        for (int c = ci0; c < ci1; c++) vp[c - ci0] = j->V + ((size_t)xi * cin + c) * j->ld;
        float out[27];
        dn_wgrad_tile_avx512(co1 - co0, ci1 - ci0, j->U + ((size_t)xi * cout + co0) * j->ld, j->ld, vp, 1,
                             (int)j->ld, (int)j->ld, out);
        for (int r = 0; r < co1 - co0; r++) {
            float *m = j->M + ((size_t)xi * cout + co0 + r) * cin + ci0;
            for (int c = 0; c < ci1 - ci0; c++) m[c] = j->first ? out[r * (ci1 - ci0) + c] : m[c] + out[r * (ci1 - ci0) + c];
        }
    }
}

/* dw[co][ci] += At M At^T (3x3 from the 16 M values), parallel over co. */
static void out_fn(void *arg, int ith, int nth) {
    ww_job *j = arg;
    const dn_wgrad_wino *ww = j->ww;
    size_t cc = (size_t)ww->cout * ww->cin;
    long b, e;
    dn_split(ww->cout, ith, nth, &b, &e);
    for (long co = b; co < e; co++)
        for (int ci = 0; ci < ww->cin; ci++) {
            size_t o = (size_t)co * ww->cin + ci;
            float m[4][4], t[3][4];
            for (int xi = 0; xi < 16; xi++) m[xi / 4][xi % 4] = j->M[xi * cc + o];
            for (int c = 0; c < 4; c++) {
                t[0][c] = m[0][c] + m[1][c] + m[2][c];
                t[1][c] = m[1][c] - m[2][c];
                t[2][c] = m[1][c] + m[2][c] + m[3][c];
            }
            float *d = j->dw + o * 9;
            for (int r = 0; r < 3; r++) {
                d[r * 3 + 0] += t[r][0] + t[r][1] + t[r][2];
                d[r * 3 + 1] += t[r][1] - t[r][2];
                d[r * 3 + 2] += t[r][1] + t[r][2] + t[r][3];
            }
        }
}

static void run(dn_pool *pool, dn_job_fn fn, void *j) {
    if (pool) dn_pool_run(pool, fn, j);
    else fn(j, 0, 1);
}

void dn_wgrad_wino_run(const dn_wgrad_wino *ww, const float *x, int n, const float *dy, float *dw, dn_pool *pool,
                       void *scratch) {
    int nc = (n + ww->chunk - 1) / ww->chunk, gc = nc ? (n + nc - 1) / nc : 1;
    /* dot-product tiles where rows are long enough to amortise their
     * horizontal sums (measured: layer3's 496 faster than the GEMM, layer4's
     * 256 slower) */
    int tiles = dn_wgrad_available() && (long)gc * ww->th * ww->tw >= 384;
    size_t T = (size_t)ww->th * ww->tw;
    float *M = scratch;
    float *V = M + (size_t)16 * ww->cin * ww->cout;
    for (int i0 = 0; i0 < n; i0 += gc) {
        int g = n - i0 < gc ? n - i0 : gc;
        size_t ld = (T * g + 15) / 16 * 16;
        float *U = V + (size_t)16 * ww->cin * ld;
        ww_job j = {ww, x + (size_t)i0 * ww->cin * ww->h * ww->w, dy + (size_t)i0 * ww->cout * ww->oh * ww->ow,
                    V, U, M, dw, ld, g, i0 == 0, tiles};
        run(pool, tr_fn, &j);
        run(pool, tiles ? dot_fn : gemm_fn, &j);
    }
    if (n < 1) return;
    ww_job j = {ww, NULL, NULL, NULL, NULL, M, dw, 0, 0, 0, 0};
    run(pool, out_fn, &j);
}
