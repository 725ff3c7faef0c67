/* Blocked (NCHW16c + zero border) activation helpers: layout conversions and
 * the pools the engine runs between convs (kernels.h, dn_blk_*). Plain C: this
 * is memory-bound work and the 16-channel inner loops vectorise as they are. */
#include "kernels/kern_int.h"
#include <float.h>
#include <math.h>
#include <string.h>

typedef struct {
    const float *x;
    float *y;
    int n, c, h, w, xb, oh, ow, yb;
    int vec;              /* max pool: the AVX-512 row kernel */
} blk_job;

int dn_blk_scalar = 0;

/* one (image, channel block) plane per work item */
static void to_blk(void *va, int ith, int nth) {
    const blk_job *j = va;
    const int CB = (j->c + 15) / 16, hp = j->h + 2 * j->yb, wp = j->w + 2 * j->yb;
    long b, e;
    dn_split((long)j->n * CB, ith, nth, &b, &e);
    for (long it = b; it < e; it++) {
        int img = (int)(it / CB), cb = (int)(it % CB);
        float *d = j->y + (size_t)it * hp * wp * 16;
        memset(d, 0, (size_t)hp * wp * 16 * sizeof(float));
        for (int l = 0; l < 16 && cb * 16 + l < j->c; l++) {
            const float *s = j->x + ((size_t)img * j->c + cb * 16 + l) * j->h * j->w;
            for (int yy = 0; yy < j->h; yy++)
                for (int xx = 0; xx < j->w; xx++)
                    d[((size_t)(yy + j->yb) * wp + xx + j->yb) * 16 + l] = s[(size_t)yy * j->w + xx];
        }
    }
}

static void from_blk(void *va, int ith, int nth) {
    const blk_job *j = va;
    const int CB = (j->c + 15) / 16, hp = j->h + 2 * j->xb, wp = j->w + 2 * j->xb;
    long b, e;
    dn_split((long)j->n * CB, ith, nth, &b, &e);
    for (long it = b; it < e; it++) {
        int img = (int)(it / CB), cb = (int)(it % CB);
        const float *s = j->x + (size_t)it * hp * wp * 16;
        for (int l = 0; l < 16 && cb * 16 + l < j->c; l++) {
            float *d = j->y + ((size_t)img * j->c + cb * 16 + l) * j->h * j->w;
            for (int yy = 0; yy < j->h; yy++)
                for (int xx = 0; xx < j->w; xx++)
                    d[(size_t)yy * j->w + xx] = s[((size_t)(yy + j->xb) * wp + xx + j->xb) * 16 + l];
        }
    }
}

void dn_blk_from_nchw(const float *x, int n, int c, int h, int w, int b, float *xb, dn_pool *pool) {
    blk_job j = {x, xb, n, c, h, w, 0, h, w, b, 0};
    dn_pool_run(pool, to_blk, &j);
}

void dn_blk_to_nchw(const float *xb, int n, int c, int h, int w, int b, float *y, dn_pool *pool) {
    blk_job j = {xb, y, n, c, h, w, b, h, w, 0, 0};
    dn_pool_run(pool, from_blk, &j);
}

void dn_maxpool3s2_row(const float *s, int h, int w, int pitch, int lanes, int oy, int ow, float *d) {
    int y0 = oy * 2 - 1, y1 = y0 + 3;
    if (y0 < 0) y0 = 0;
    if (y1 > h) y1 = h;
    for (int ox = 0; ox < ow; ox++) {
        int x0 = ox * 2 - 1, x1 = x0 + 3;
        if (x0 < 0) x0 = 0;
        if (x1 > w) x1 = w;
        float *o = d + (size_t)ox * lanes;
        for (int l = 0; l < lanes; l++) {
            float mx = -FLT_MAX;
            int nan = 0;
            for (int yy = y0; yy < y1; yy++)
                for (int xx = x0; xx < x1; xx++) {
                    float v = s[((size_t)yy * pitch + xx) * lanes + l];
                    if (v != v) nan = 1;
                    if (v > mx) mx = v;
                }
            o[l] = nan ? NAN : mx;
        }
    }
}

/* one (image, channel block) plane per work item; zeroes y's border. The
 * scalar row (dn_maxpool3s2_row) is the spec of the AVX-512 one. */
static void maxpool_blk(void *va, int ith, int nth) {
    const blk_job *j = va;
    const int CB = j->c / 16, wp = j->w + 2 * j->xb, hp = j->h + 2 * j->xb;
    const int ohp = j->oh + 2 * j->yb, owp = j->ow + 2 * j->yb;
    long b, e;
    dn_split((long)j->n * CB, ith, nth, &b, &e);
    for (long it = b; it < e; it++) {
        const float *s = j->x + (size_t)it * hp * wp * 16 + ((size_t)j->xb * wp + j->xb) * 16;
        float *d = j->y + (size_t)it * ohp * owp * 16;
        memset(d, 0, (size_t)j->yb * owp * 16 * sizeof(float));
        memset(d + (size_t)(ohp - j->yb) * owp * 16, 0, (size_t)j->yb * owp * 16 * sizeof(float));
        for (int oy = 0; oy < j->oh; oy++) {
            float *dr = d + (size_t)(oy + j->yb) * owp * 16;
            memset(dr, 0, (size_t)j->yb * 16 * sizeof(float));
            memset(dr + (size_t)(owp - j->yb) * 16, 0, (size_t)j->yb * 16 * sizeof(float));
            if (j->vec) dn_blk_maxpool_row_avx512(s, j->h, j->w, wp, oy, j->ow, dr + (size_t)j->yb * 16);
            else dn_maxpool3s2_row(s, j->h, j->w, wp, 16, oy, j->ow, dr + (size_t)j->yb * 16);
        }
    }
}

void dn_blk_maxpool3s2(const float *x, int n, int c, int h, int w, int xb_, float *y, int oh, int ow, int yb,
                       dn_pool *pool) {
    blk_job j = {x, y, n, c, h, w, xb_, oh, ow, yb, dn_kernels_isa() >= DN_ISA_AVX512 && !dn_blk_scalar};
    dn_pool_run(pool, maxpool_blk, &j);
}

static void avgpool_blk(void *va, int ith, int nth) {
    const blk_job *j = va;
    const int CB = j->c / 16, wp = j->w + 2 * j->xb, hp = j->h + 2 * j->xb;
    long b, e;
    dn_split((long)j->n * CB, ith, nth, &b, &e);
    for (long it = b; it < e; it++) {
        int img = (int)(it / CB), cb = (int)(it % CB);
        const float *s = j->x + (size_t)it * hp * wp * 16;
        double acc[16] = {0};
        for (int yy = 0; yy < j->h; yy++)
            for (int xx = 0; xx < j->w; xx++) {
                const float *v = s + ((size_t)(yy + j->xb) * wp + xx + j->xb) * 16;
                for (int l = 0; l < 16; l++) acc[l] += v[l];
            }
        for (int l = 0; l < 16; l++) j->y[(size_t)img * j->c + cb * 16 + l] = (float)(acc[l] / ((double)j->h * j->w));
    }
}

void dn_blk_avgpool(const float *x, int n, int c, int h, int w, int b, float *feat, dn_pool *pool) {
    blk_job j = {x, feat, n, c, h, w, b, 1, 1, 0, 0};
    dn_pool_run(pool, avgpool_blk, &j);
}
