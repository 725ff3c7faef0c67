/* Residual add (optionally followed by ReLU) and gradient accumulation. */
#include "nn/layers.h"

typedef struct { const float *a, *b; float *y; size_t count; int relu; } add_job;

/* Variants per instruction set, see dn_layer_pick in layers.h. */
#define ADD_FN_DEF(SFX) \
static void add_fn_##SFX(void *arg, int ith, int nth) { \
    add_job *j = arg; \
    long s, e; \
    dn_split((long)j->count, ith, nth, &s, &e); \
    if (j->relu) \
        for (long i = s; i < e; i++) { float v = j->a[i] + j->b[i]; j->y[i] = v > 0.f ? v : 0.f; } \
    else \
        for (long i = s; i < e; i++) j->y[i] = j->a[i] + j->b[i]; \
}
ADD_FN_DEF(ref)
#ifdef DN_LAYER_SIMD
#pragma GCC push_options
#pragma GCC target("avx2")
ADD_FN_DEF(avx2)
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f")
ADD_FN_DEF(avx512)
#pragma GCC pop_options
#define ADD_FN_PICK() dn_layer_pick(add_fn_ref, add_fn_avx2, add_fn_avx512)
#else
#define ADD_FN_PICK() dn_layer_pick(add_fn_ref, NULL, NULL)
#endif

void dn_add_fwd(const float *a, const float *b, size_t count, float *y, int relu, dn_pool *pool) {
    add_job j = {a, b, y, count, relu};
    dn_job_fn fn = ADD_FN_PICK();
    if (pool) dn_pool_run(pool, fn, &j); else fn(&j, 0, 1);
}

void dn_add_inplace(float *y, const float *b, size_t count, dn_pool *pool) {
    dn_add_fwd(y, b, count, y, 0, pool);
}
