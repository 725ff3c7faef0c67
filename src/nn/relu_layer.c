/* ReLU forward/backward (backward masks on the OUTPUT, like PyTorch's
 * threshold_backward for an in-place ReLU). Parallel over element ranges. */
#include "nn/layers.h"

typedef struct { const float *x, *dy; float *y; size_t count; int bwd; } relu_job;

/* Variants per instruction set, see dn_layer_pick in layers.h. */
#define RELU_FN_DEF(SFX) \
static void relu_fn_##SFX(void *arg, int ith, int nth) { \
    relu_job *j = arg; \
    long b, e; \
    dn_split((long)j->count, ith, nth, &b, &e); \
    if (!j->bwd) \
        for (long i = b; i < e; i++) j->y[i] = j->x[i] > 0.f ? j->x[i] : 0.f; \
    else \
        for (long i = b; i < e; i++) j->y[i] = j->x[i] > 0.f ? j->dy[i] : 0.f; \
}
RELU_FN_DEF(ref)
#ifdef DN_LAYER_SIMD
#pragma GCC push_options
#pragma GCC target("avx2")
RELU_FN_DEF(avx2)
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f")
RELU_FN_DEF(avx512)
#pragma GCC pop_options
#define RELU_FN_PICK() dn_layer_pick(relu_fn_ref, relu_fn_avx2, relu_fn_avx512)
#else
#define RELU_FN_PICK() dn_layer_pick(relu_fn_ref, NULL, NULL)
#endif

void dn_relu_fwd(const float *x, size_t count, float *y, dn_pool *pool) {
    relu_job j = {x, NULL, y, count, 0};
    dn_job_fn fn = RELU_FN_PICK();
    if (pool) dn_pool_run(pool, fn, &j); else fn(&j, 0, 1);
}

void dn_relu_bwd(const float *y, const float *dy, size_t count, float *dx, dn_pool *pool) {
    relu_job j = {y, dy, dx, count, 1};
    dn_job_fn fn = RELU_FN_PICK();
    if (pool) dn_pool_run(pool, fn, &j); else fn(&j, 0, 1);
}
