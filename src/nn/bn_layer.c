/* BatchNorm2d for training (batch statistics, running-stat update as PyTorch)
 * and eval (running statistics), with optional fused ReLU, and its backward.
 * Parallel over channels; per-channel sums run in a fixed order (double
 * accumulators), so results do not depend on the thread count. */
#include "nn/layers.h"
#include <math.h>

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

static void fwd_train_fn(void *arg, int ith, int nth) {
    bn_job *j = arg;
    dn_bn_p *p = j->p;
    long c0, c1;
    dn_split(p->c, ith, nth, &c0, &c1);
    size_t cs = (size_t)p->c * j->hw;
    double m = (double)j->n * j->hw;
    for (long c = c0; c < c1; c++) {
        double s = 0;
        for (int i = 0; i < j->n; i++) {
            const float *xp = j->x + i * cs + (size_t)c * j->hw;
            for (int k = 0; k < j->hw; k++) s += xp[k];
        }
        double mean = s / m, ss = 0;
        for (int i = 0; i < j->n; i++) {
            const float *xp = j->x + i * cs + (size_t)c * j->hw;
            for (int k = 0; k < j->hw; k++) { double d = xp[k] - mean; ss += d * d; }
        }
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

static void fwd_eval_fn(void *arg, int ith, int nth) {
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

static void bwd_fn(void *arg, int ith, int nth) {
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
            const float *xp = j->x + off, *dyp = j->dy + off;
            const float *yp = j->relu ? j->y + off : NULL;
            for (int k = 0; k < j->hw; k++) {
                float g = (yp && !(yp[k] > 0.f)) ? 0.f : dyp[k];
                sg += g;
                sgx += (double)g * (xp[k] - mean);
            }
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
            for (int k = 0; k < j->hw; k++) {
                float g = (yp && !(yp[k] > 0.f)) ? 0.f : dyp[k];
                float xh = (xp[k] - mean) * invstd;
                dxp[k] = k1 * (g - mg - xh * mgx);
            }
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
