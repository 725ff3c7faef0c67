/* BatchNorm2d for training (batch statistics, running-stat update as PyTorch)
 * and eval (running statistics), with optional fused ReLU, and its backward.
 * Parallel over channels; per-channel sums run in a fixed order (16 float lanes
 * per image row, rows added in double), so results do not depend on the thread
 * count, and the inner loops vectorise. */
#include "nn/layers.h"
#include "kernels/kernels.h"
#include <math.h>

#define LANES 16

typedef struct {
    dn_bn_p *p;
    const float *x, *y, *dy;
    float *out, *dx, *mean, *invstd, *dgamma, *dbeta;
    int n, hw, relu, update;
} bn_job;

/* The per-channel loops (bn_body.inc) are compiled three times: baseline,
 * AVX2 and AVX-512 (GCC target pragmas), and picked at run time by
 * dn_kernels_isa(), so DN_FORCE_REF / DN_MAX_ISA / dn_kernels_force_isa select
 * them like every kernel and tests can compare the variants. The arithmetic
 * per lane is the same on every path (no FMA contraction under -std=c11). */
#define SFX(f) f##_ref
#include "nn/bn_body.inc"
#undef SFX
#ifdef DN_LAYER_SIMD
#define BN_SIMD 1
#pragma GCC push_options
#pragma GCC target("avx2")
#define SFX(f) f##_avx2
#include "nn/bn_body.inc"
#undef SFX
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f")
#define SFX(f) f##_avx512
#include "nn/bn_body.inc"
#undef SFX
#pragma GCC pop_options
#endif

#ifdef BN_SIMD
#define PICK(f) dn_layer_pick(f##_ref, f##_avx2, f##_avx512)
#else
#define PICK(f) dn_layer_pick(f##_ref, NULL, NULL)
#endif

static void run(dn_pool *pool, dn_job_fn fn, bn_job *j) {
    if (pool) dn_pool_run(pool, fn, j);
    else fn(j, 0, 1);
}


void dn_bn_layer_fwd_train(dn_bn_p *p, const float *x, int n, int hw, float *y, float *save_mean,
                           float *save_invstd, int relu, int update_running, dn_pool *pool) {
    bn_job j = {.p = p, .x = x, .out = y, .mean = save_mean, .invstd = save_invstd,
                .n = n, .hw = hw, .relu = relu, .update = update_running};
    run(pool, PICK(fwd_train_fn), &j);
    if (update_running) p->num_batches_tracked += 1;
}


void dn_bn_layer_fwd_eval(const dn_bn_p *p, const float *x, int n, int hw, float *y, int relu,
                          dn_pool *pool) {
    bn_job j = {.p = (dn_bn_p *)p, .x = x, .out = y, .n = n, .hw = hw, .relu = relu};
    run(pool, PICK(fwd_eval_fn), &j);
}


void dn_bn_layer_bwd(const dn_bn_p *p, const float *x, const float *y, const float *dy, int n,
                     int hw, const float *save_mean, const float *save_invstd, int relu, float *dx,
                     float *dgamma, float *dbeta, dn_pool *pool) {
    bn_job j = {.p = (dn_bn_p *)p, .x = x, .y = y, .dy = dy, .dx = dx, .mean = (float *)save_mean,
                .invstd = (float *)save_invstd, .dgamma = dgamma, .dbeta = dbeta,
                .n = n, .hw = hw, .relu = relu};
    run(pool, PICK(bwd_fn), &j);
}
