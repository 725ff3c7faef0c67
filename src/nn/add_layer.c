/* Residual add (optionally followed by ReLU) and gradient accumulation. */
#include "nn/layers.h"

/* Compiled for AVX-512 / AVX2 / baseline and picked at load time (GCC
 * function multi-versioning); identical arithmetic on every path. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define DN_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DN_MULTIVERSION
#endif

typedef struct { const float *a, *b; float *y; size_t count; int relu; } add_job;

DN_MULTIVERSION static void add_fn(void *arg, int ith, int nth) {
    add_job *j = arg;
    long s, e;
    dn_split((long)j->count, ith, nth, &s, &e);
    if (j->relu)
        for (long i = s; i < e; i++) { float v = j->a[i] + j->b[i]; j->y[i] = v > 0.f ? v : 0.f; }
    else
        for (long i = s; i < e; i++) j->y[i] = j->a[i] + j->b[i];
}

void dn_add_fwd(const float *a, const float *b, size_t count, float *y, int relu, dn_pool *pool) {
    add_job j = {a, b, y, count, relu};
    if (pool) dn_pool_run(pool, add_fn, &j); else add_fn(&j, 0, 1);
}

void dn_add_inplace(float *y, const float *b, size_t count, dn_pool *pool) {
    dn_add_fwd(y, b, count, y, 0, pool);
}
