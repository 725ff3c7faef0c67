/* Max-pool with argmax routing. Tie/NaN rule as PyTorch's CPU kernel: scan the
 * window row-major starting from the first in-range element; a later element
 * replaces the max only if it is strictly greater (or NaN). Parallel over
 * (image, channel) planes; the backward scatter stays within a plane. */
#include "nn/layers.h"
#include <math.h>
#include <string.h>

typedef struct {
    const float *x, *dy;
    float *y, *dx;
    int32_t *idx;
    const int32_t *cidx;
    int planes, h, w, oh, ow, k, s, pd;
} mp_job;

/* Variants per instruction set, see dn_layer_pick in layers.h. */
#define FWD_FN_DEF(SFX) \
static void fwd_fn_##SFX(void *arg, int ith, int nth) { \
    mp_job *j = arg; \
    long b, e; \
    dn_split(j->planes, ith, nth, &b, &e); \
    for (long pl = b; pl < e; pl++) { \
        const float *xp = j->x + (size_t)pl * j->h * j->w; \
        float *yp = j->y + (size_t)pl * j->oh * j->ow; \
        int32_t *ip = j->idx + (size_t)pl * j->oh * j->ow; \
        for (int oy = 0; oy < j->oh; oy++) { \
            int y0 = oy * j->s - j->pd, y1 = y0 + j->k; \
            if (y0 < 0) y0 = 0; \
            if (y1 > j->h) y1 = j->h; \
            for (int ox = 0; ox < j->ow; ox++) { \
                int x0 = ox * j->s - j->pd, x1 = x0 + j->k; \
                if (x0 < 0) x0 = 0; \
                if (x1 > j->w) x1 = j->w; \
                int best = y0 * j->w + x0; \
                float mv = -INFINITY; \
                for (int iy = y0; iy < y1; iy++) \
                    for (int ix = x0; ix < x1; ix++) { \
                        float v = xp[iy * j->w + ix]; \
                        if (v > mv || isnan(v)) { mv = v; best = iy * j->w + ix; } \
                    } \
                yp[oy * j->ow + ox] = mv; \
                ip[oy * j->ow + ox] = best; \
            } \
        } \
    } \
}
FWD_FN_DEF(ref)
#ifdef DN_LAYER_SIMD
#pragma GCC push_options
#pragma GCC target("avx2")
FWD_FN_DEF(avx2)
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f")
FWD_FN_DEF(avx512)
#pragma GCC pop_options
#define FWD_FN_PICK() dn_layer_pick(fwd_fn_ref, fwd_fn_avx2, fwd_fn_avx512)
#else
#define FWD_FN_PICK() dn_layer_pick(fwd_fn_ref, NULL, NULL)
#endif

void dn_maxpool_fwd(const float *x, int n, int c, int h, int w, int k, int s, int pd, float *y,
                    int32_t *idx, dn_pool *pool) {
    mp_job j = {.x = x, .y = y, .idx = idx, .planes = n * c, .h = h, .w = w,
                .oh = dn_pool_out(h, k, s, pd), .ow = dn_pool_out(w, k, s, pd),
                .k = k, .s = s, .pd = pd};
    dn_job_fn fn = FWD_FN_PICK();
    if (pool) dn_pool_run(pool, fn, &j); else fn(&j, 0, 1);
}

static void bwd_fn(void *arg, int ith, int nth) {
    mp_job *j = arg;
    long b, e;
    dn_split(j->planes, ith, nth, &b, &e);
    for (long pl = b; pl < e; pl++) {
        float *dxp = j->dx + (size_t)pl * j->h * j->w;
        const float *dyp = j->dy + (size_t)pl * j->oh * j->ow;
        const int32_t *ip = j->cidx + (size_t)pl * j->oh * j->ow;
        memset(dxp, 0, sizeof(float) * j->h * j->w);
        for (int o = 0; o < j->oh * j->ow; o++) dxp[ip[o]] += dyp[o];
    }
}

void dn_maxpool_bwd(const float *dy, const int32_t *idx, int n, int c, int h, int w, int oh, int ow,
                    float *dx, dn_pool *pool) {
    mp_job j = {.dy = dy, .dx = dx, .cidx = idx, .planes = n * c, .h = h, .w = w, .oh = oh, .ow = ow};
    if (pool) dn_pool_run(pool, bwd_fn, &j); else bwd_fn(&j, 0, 1);
}
