/* BatchNorm2d for training (batch statistics, running-stat update as PyTorch)
 * and eval (running statistics), with optional fused ReLU, and its backward.
 * Parallel over channels; per-channel sums run in a fixed order (16 float lanes
 * per image row, rows added in double), so results do not depend on the thread
 * count, and the inner loops vectorise. */
#include "nn/layers.h"
#include <math.h>

#define LANES 16

/* The per-channel loops are compiled for AVX-512 and AVX2 too and picked at
 * load time (GCC function multi-versioning through an ifunc resolver; off under
 * ThreadSanitizer, whose runtime is not up yet when resolvers run); the
 * arithmetic per lane is the same on every path. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define DN_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DN_MULTIVERSION
#endif

/* sum(x - k) and sum((x - k)^2) over n floats (k: a shift near the mean keeps
 * the one-pass variance accurate). */
static inline void sums_shifted(const float *x, int n, float k, double *s1, double *s2) {
    float a[LANES] = {0}, b[LANES] = {0};
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) {
            float d = x[i + l] - k;
            a[l] += d;
            b[l] += d * d;
        }
    double r1 = 0, r2 = 0;
    for (; i < n; i++) { double d = (double)x[i] - k; r1 += d; r2 += d * d; }
    for (int l = 0; l < LANES; l++) { r1 += a[l]; r2 += b[l]; }
    *s1 += r1;
    *s2 += r2;
}

/* sum(g) and sum(g * (x - mean)), g = dy, or 0 where y <= 0 when y != NULL. */
static inline void sums_grad(const float *x, const float *dy, const float *y, int n, float mean, double *sg, double *sgx) {
    float a[LANES] = {0}, b[LANES] = {0};
    int i = 0;
    if (y) {
        for (; i + LANES <= n; i += LANES)
            for (int l = 0; l < LANES; l++) {
                float g = y[i + l] > 0.f ? dy[i + l] : 0.f;
                a[l] += g;
                b[l] += g * (x[i + l] - mean);
            }
    } else {
        for (; i + LANES <= n; i += LANES)
            for (int l = 0; l < LANES; l++) {
                float g = dy[i + l];
                a[l] += g;
                b[l] += g * (x[i + l] - mean);
            }
    }
    double r1 = 0, r2 = 0;
    for (; i < n; i++) {
        float g = (y && !(y[i] > 0.f)) ? 0.f : dy[i];
        r1 += g;
        r2 += (double)g * (x[i] - mean);
    }
    for (int l = 0; l < LANES; l++) { r1 += a[l]; r2 += b[l]; }
    *sg += r1;
    *sgx += r2;
}

typedef struct {
    dn_bn_p *p;
    const float *x, *y, *dy;
    float *out, *dx, *mean, *invstd, *dgamma, *dbeta;
    int n, hw, relu, update;
} bn_job;

static void run(dn_pool *pool, dn_job_fn fn, bn_job *j) {
    if (pool) dn_pool_run(pool, fn, j);
    else fn(j, 0, 1);
}

DN_MULTIVERSION static void fwd_train_fn(void *arg, int ith, int nth) {
    bn_job *j = arg;
    dn_bn_p *p = j->p;
    long c0, c1;
    dn_split(p->c, ith, nth, &c0, &c1);
    size_t cs = (size_t)p->c * j->hw;
    double m = (double)j->n * j->hw;
    for (long c = c0; c < c1; c++) {
        double s1 = 0, s2 = 0;
        float shift = j->x[(size_t)c * j->hw];
        for (int i = 0; i < j->n; i++) sums_shifted(j->x + i * cs + (size_t)c * j->hw, j->hw, shift, &s1, &s2);
        double dm = s1 / m, mean = shift + dm;
        double ss = s2 - s1 * dm; /* sum (x - mean)^2 */
        if (ss < 0) ss = 0;
        double var = ss / m;
        float invstd = (float)(1.0 / sqrt(var + p->eps));
        j->mean[c] = (float)mean;
        j->invstd[c] = invstd;
        if (j->update) {
            double unbiased = m > 1 ? ss / (m - 1) : var;
            p->mean[c] = (float)(0.9 * p->mean[c] + 0.1 * mean);
            p->var[c] = (float)(0.9 * p->var[c] + 0.1 * unbiased);
        }
        float a = p->weight[c] * invstd, b = p->bias[c] - (float)mean * a;
        for (int i = 0; i < j->n; i++) {
            const float *xp = j->x + i * cs + (size_t)c * j->hw;
            float *yp = j->out + i * cs + (size_t)c * j->hw;
            if (j->relu)
                for (int k = 0; k < j->hw; k++) { float v = xp[k] * a + b; yp[k] = v > 0.f ? v : 0.f; }
            else
                for (int k = 0; k < j->hw; k++) yp[k] = xp[k] * a + b;
        }
    }
}

void dn_bn_layer_fwd_train(dn_bn_p *p, const float *x, int n, int hw, float *y, float *save_mean,
                           float *save_invstd, int relu, int update_running, dn_pool *pool) {
    bn_job j = {.p = p, .x = x, .out = y, .mean = save_mean, .invstd = save_invstd,
                .n = n, .hw = hw, .relu = relu, .update = update_running};
    run(pool, fwd_train_fn, &j);
    if (update_running) p->num_batches_tracked += 1;
}

DN_MULTIVERSION static void fwd_eval_fn(void *arg, int ith, int nth) {
    bn_job *j = arg;
    const dn_bn_p *p = j->p;
    long c0, c1;
    dn_split(p->c, ith, nth, &c0, &c1);
    size_t cs = (size_t)p->c * j->hw;
    for (long c = c0; c < c1; c++) {
        /* Same arithmetic as PyTorch's eval batch_norm: alpha = w / sqrt(var + eps),
         * beta = b - mean * alpha, y = x * alpha + beta. */
        float a = p->weight[c] / sqrtf(p->var[c] + p->eps), b = p->bias[c] - p->mean[c] * a;
        for (int i = 0; i < j->n; i++) {
            const float *xp = j->x + i * cs + (size_t)c * j->hw;
            float *yp = j->out + i * cs + (size_t)c * j->hw;
            if (j->relu)
                for (int k = 0; k < j->hw; k++) { float v = xp[k] * a + b; yp[k] = v > 0.f ? v : 0.f; }
            else
                for (int k = 0; k < j->hw; k++) yp[k] = xp[k] * a + b;
        }
    }
}

void dn_bn_layer_fwd_eval(const dn_bn_p *p, const float *x, int n, int hw, float *y, int relu,
                          dn_pool *pool) {
    bn_job j = {.p = (dn_bn_p *)p, .x = x, .out = y, .n = n, .hw = hw, .relu = relu};
    run(pool, fwd_eval_fn, &j);
}

DN_MULTIVERSION static void bwd_fn(void *arg, int ith, int nth) {
    bn_job *j = arg;
    const dn_bn_p *p = j->p;
    long c0, c1;
    dn_split(p->c, ith, nth, &c0, &c1);
    size_t cs = (size_t)p->c * j->hw;
    double m = (double)j->n * j->hw;
    for (long c = c0; c < c1; c++) {
        float mean = j->mean[c], invstd = j->invstd[c];
        /* sums of g and g * xhat, g = dy masked by the ReLU output */
        double sg = 0, sgx = 0;
        for (int i = 0; i < j->n; i++) {
            size_t off = i * cs + (size_t)c * j->hw;
            sums_grad(j->x + off, j->dy + off, j->relu ? j->y + off : NULL, j->hw, mean, &sg, &sgx);
        }
        sgx *= invstd; /* = sum g * xhat */
        if (j->dgamma) j->dgamma[c] += (float)sgx;
        if (j->dbeta) j->dbeta[c] += (float)sg;
        if (!j->dx) continue;
        /* dx = gamma * invstd / M * (M g - sum g - xhat * sum g xhat) */
        float k1 = p->weight[c] * invstd;
        float mg = (float)(sg / m), mgx = (float)(sgx / m);
        for (int i = 0; i < j->n; i++) {
            size_t off = i * cs + (size_t)c * j->hw;
            const float *xp = j->x + off, *dyp = j->dy + off;
            const float *yp = j->relu ? j->y + off : NULL;
            float *dxp = j->dx + off;
            /* dx = k1 * (g - mg) - k2 * (x - mean), k2 = k1 * invstd * mgx */
            float k2 = k1 * invstd * mgx, b0 = -k1 * mg + k2 * mean;
            if (yp)
                for (int k = 0; k < j->hw; k++) {
                    float g = yp[k] > 0.f ? dyp[k] : 0.f;
                    dxp[k] = k1 * g - k2 * xp[k] + b0;
                }
            else
                for (int k = 0; k < j->hw; k++) dxp[k] = k1 * dyp[k] - k2 * xp[k] + b0;
        }
    }
}

void dn_bn_layer_bwd(const dn_bn_p *p, const float *x, const float *y, const float *dy, int n,
                     int hw, const float *save_mean, const float *save_invstd, int relu, float *dx,
                     float *dgamma, float *dbeta, dn_pool *pool) {
    bn_job j = {.p = (dn_bn_p *)p, .x = x, .y = y, .dy = dy, .dx = dx, .mean = (float *)save_mean,
                .invstd = (float *)save_invstd, .dgamma = dgamma, .dbeta = dbeta,
                .n = n, .hw = hw, .relu = relu};
    run(pool, bwd_fn, &j);
}
