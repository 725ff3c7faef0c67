/* Finite-difference gradient checks for every training layer (src/nn/layers.h)
 * and the loss. Each check projects the layer output onto a fixed random
 * direction r (L = sum r * y, accumulated in double), runs the layer's backward
 * with dy = r, and compares every analytic gradient entry with the central
 * difference (L(v + h) - L(v - h)) / 2h. Shapes are tiny and odd; ReLU and
 * max-pool entries whose perturbation crosses a kink / changes an argmax are
 * skipped (and counted, so a check cannot silently skip everything). */
#include "harness.h"
#include "core/core.h"
#include "nn/layers.h"
#include "train/loss.h"

static dn_rng g_rng;

static void fill(float *a, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) a[i] = scale * dn_rng_normal(&g_rng);
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Compares analytic grad g[n] with numeric grads; returns worst relative error
 * (normalised by the largest analytic magnitude). */
typedef double (*loss_fn)(void *ctx);
static double fd_check(const char *what, float *v, const float *g, size_t n, float h, loss_fn f, void *ctx,
                       int *skipped, int (*kink)(void *ctx)) {
    double gmax = 0, worst = 0;
    for (size_t i = 0; i < n; i++) if (fabs(g[i]) > gmax) gmax = fabs(g[i]);
    size_t worst_i = 0;
    for (size_t i = 0; i < n; i++) {
        float keep = v[i];
        v[i] = keep + h;
        double lp = f(ctx);
        int k1 = kink ? kink(ctx) : 0;
        v[i] = keep - h;
        double lm = f(ctx);
        int k2 = kink ? kink(ctx) : 0;
        v[i] = keep;
        if (k1 || k2) { (*skipped)++; continue; }
        double num = (lp - lm) / (2.0 * h);
        double e = fabs(num - g[i]) / (gmax > 1e-6 ? gmax : 1e-6);
        if (e > worst) { worst = e; worst_i = i; }
    }
    if (worst > 2e-3) printf("  %s: worst entry %zu rel err %.3g (grad max %.3g)\n", what, worst_i, worst, gmax);
    return worst;
}

/* ------------------------------------------------------------ conv */
typedef struct {
    dn_conv_p p;
    dn_conv_layer L;
    float *x, *y, *r;
    void *scratch;
    int n, ops;
} conv_ctx;

static double conv_loss(void *vc) {
    conv_ctx *c = vc;
    if (c->ops) dn_conv_layer_prepare(&c->L, 1, 0, c->n); /* ops copy the weights: rebuild after perturbing */
    dn_conv_layer_fwd(&c->L, c->x, c->n, c->y, NULL, c->scratch);
    return dot(c->y, c->r, (size_t)c->n * c->p.cout * c->L.oh * c->L.ow);
}

/* ops = 1: forward and stride-1 data gradient through dn_conv_op; 0: the GEMM
 * paths (im2col + GEMM forward, GEMM + col2im data gradient). Weight gradient
 * is the chunked GEMM in both. */
static void conv_case(int n, int cin, int cout, int h, int w, int k, int s, int pd, dn_pool *pool, int ops) {
    conv_ctx c = {{cin, cout, k, s, pd, NULL}, {0}, 0, 0, 0, 0, n, ops};
    size_t nx = (size_t)n * cin * h * w, nw = (size_t)cout * cin * k * k;
    c.p.w = malloc(nw * 4);
    fill(c.p.w, nw, 0.3f);
    CHECK(dn_conv_layer_init(&c.L, &c.p, h, w, n, DN_CONV_AUTO) == DN_OK);
    c.L.chunk = n > 1 ? n - 1 : 1; /* force more than one chunk when n > 2 */
    size_t ny = (size_t)n * cout * c.L.oh * c.L.ow;
    c.scratch = dn_alloc_aligned(dn_conv_layer_scratch(&c.L, n));
    c.x = malloc(nx * 4); c.y = malloc(ny * 4); c.r = malloc(ny * 4);
    float *dx = malloc(nx * 4), *dw = calloc(nw, 4);
    fill(c.x, nx, 1); fill(c.r, ny, 1);
    if (ops) CHECK(dn_conv_layer_prepare(&c.L, 1, 1, n) == DN_OK);
    dn_conv_layer_fwd(&c.L, c.x, n, c.y, pool, c.scratch);
    dn_conv_layer_bwd_data(&c.L, n, c.r, dx, pool, c.scratch);
    dn_conv_layer_bwd_weight(&c.L, c.x, n, c.r, dw, pool, c.scratch);
    int sk = 0;
    char what[96];
    snprintf(what, sizeof what, "conv%s k%d s%d p%d %dx%d->%d dx", ops ? "(ops)" : "(gemm)", k, s, pd, cin, h, cout);
    CHECK_MSG(fd_check(what, c.x, dx, nx, 1e-2f, conv_loss, &c, &sk, NULL) < 2e-3, "%s", what);
    snprintf(what, sizeof what, "conv%s k%d s%d p%d %dx%d->%d dw", ops ? "(ops)" : "(gemm)", k, s, pd, cin, h, cout);
    CHECK_MSG(fd_check(what, c.p.w, dw, nw, 1e-2f, conv_loss, &c, &sk, NULL) < 2e-3, "%s", what);
    /* weight grads accumulate */
    float *dw1 = calloc(nw, 4);
    dn_conv_layer_bwd_weight(&c.L, c.x, n, c.r, dw, pool, c.scratch);
    dn_conv_layer_bwd_weight(&c.L, c.x, n, c.r, dw1, NULL, c.scratch);
    double e = 0;
    for (size_t i = 0; i < nw; i++) e = fmax(e, fabs(dw[i] - 2 * dw1[i]) / (fabs(dw1[i]) + 1e-3));
    CHECK_MSG(e < 1e-4, "conv dw does not accumulate (%g)", e);
    /* thread count does not change the weight gradient, bit for bit */
    if (pool) {
        float *dw2 = calloc(nw, 4);
        memset(dw1, 0, nw * 4);
        dn_conv_layer_bwd_weight(&c.L, c.x, n, c.r, dw1, NULL, c.scratch);
        dn_conv_layer_bwd_weight(&c.L, c.x, n, c.r, dw2, pool, c.scratch);
        CHECK_MSG(!memcmp(dw1, dw2, nw * 4), "conv dw differs between 1 and 2 threads");
        free(dw2);
    }
    free(dw1);
    dn_conv_layer_release(&c.L);
    free(c.x); free(c.p.w); free(c.y); free(c.r); dn_free_aligned(c.scratch); free(dx); free(dw);
}

TEST(conv_3x3_s1_p1) { conv_case(2, 3, 5, 6, 7, 3, 1, 1, NULL, 1); conv_case(3, 3, 5, 6, 7, 3, 1, 1, NULL, 0); }
TEST(conv_3x3_s2_p1) { conv_case(2, 5, 4, 7, 6, 3, 2, 1, NULL, 1); conv_case(3, 5, 4, 7, 6, 3, 2, 1, NULL, 0); }
TEST(conv_1x1_s2_downsample) { conv_case(3, 4, 6, 5, 5, 1, 2, 0, NULL, 1); conv_case(3, 4, 6, 5, 5, 1, 2, 0, NULL, 0); }
TEST(conv_1x1_s1) { conv_case(1, 3, 2, 4, 3, 1, 1, 0, NULL, 1); conv_case(3, 3, 2, 4, 3, 1, 1, 0, NULL, 0); }
TEST(conv_7x7_s2_p3_stem) { conv_case(2, 3, 4, 9, 8, 7, 2, 3, NULL, 1); conv_case(3, 3, 4, 9, 8, 7, 2, 3, NULL, 0); }
TEST(conv_threaded) {
    dn_pool *pool = dn_pool_new(2);
    conv_case(2, 17, 3, 5, 5, 3, 1, 1, pool, 1);
    conv_case(3, 17, 3, 5, 5, 3, 1, 1, pool, 0);
    conv_case(3, 9, 40, 6, 6, 3, 2, 1, pool, 1);  /* K = 81: several 32-row blocks */
    dn_pool_free(pool);
}

/* ------------------------------------------------------------ BatchNorm */
typedef struct {
    dn_bn_p p;
    float *x, *y, *r, *mean, *invstd;
    int n, hw, relu;
} bn_ctx;

static double bn_loss(void *vc) {
    bn_ctx *c = vc;
    dn_bn_layer_fwd_train(&c->p, c->x, c->n, c->hw, c->y, c->mean, c->invstd, c->relu, 0, NULL);
    return dot(c->y, c->r, (size_t)c->n * c->p.c * c->hw);
}

static void bn_alloc(bn_ctx *c, int n, int ch, int hw) {
    memset(c, 0, sizeof *c);
    c->n = n; c->hw = hw;
    c->p.c = ch; c->p.eps = 1e-5f;
    size_t nx = (size_t)n * ch * hw;
    c->p.weight = malloc(ch * 4); c->p.bias = malloc(ch * 4); c->p.mean = calloc(ch, 4); c->p.var = malloc(ch * 4);
    for (int i = 0; i < ch; i++) c->p.var[i] = 1;
    c->x = malloc(nx * 4); c->y = malloc(nx * 4); c->r = malloc(nx * 4);
    c->mean = malloc(ch * 4); c->invstd = malloc(ch * 4);
    fill(c->x, nx, 1.5f); fill(c->r, nx, 1);
    for (int i = 0; i < ch; i++) { c->p.weight[i] = 0.5f + dn_rng_uniform(&g_rng); c->p.bias[i] = 0.3f * dn_rng_normal(&g_rng); }
    for (size_t i = 0; i < nx; i++) c->x[i] += 0.7f; /* non-zero mean */
}

static void bn_free(bn_ctx *c) {
    free(c->p.weight); free(c->p.bias); free(c->p.mean); free(c->p.var);
    free(c->x); free(c->y); free(c->r); free(c->mean); free(c->invstd);
}

TEST(batchnorm_train_backward) {
    bn_ctx c;
    bn_alloc(&c, 3, 4, 5);
    size_t nx = (size_t)3 * 4 * 5;
    float *dx = malloc(nx * 4), dg[4] = {0}, db[4] = {0};
    bn_loss(&c);
    dn_bn_layer_bwd(&c.p, c.x, c.y, c.r, c.n, c.hw, c.mean, c.invstd, 0, dx, dg, db, NULL);
    int sk = 0;
    CHECK(fd_check("bn dx", c.x, dx, nx, 1e-2f, bn_loss, &c, &sk, NULL) < 2e-3);
    CHECK(fd_check("bn dgamma", c.p.weight, dg, 4, 1e-2f, bn_loss, &c, &sk, NULL) < 2e-3);
    CHECK(fd_check("bn dbeta", c.p.bias, db, 4, 1e-2f, bn_loss, &c, &sk, NULL) < 2e-3);
    /* in place dx == dy gives the same result */
    float *d2 = malloc(nx * 4);
    memcpy(d2, c.r, nx * 4);
    dn_bn_layer_bwd(&c.p, c.x, c.y, d2, c.n, c.hw, c.mean, c.invstd, 0, d2, NULL, NULL, NULL);
    CHECK(!memcmp(d2, dx, nx * 4));
    free(d2); free(dx);
    bn_free(&c);
}

/* BN + fused ReLU: the backward equals the plain BN backward of dy masked by
 * y > 0 (the ReLU kink itself is not differentiable, so no FD across it). */
TEST(batchnorm_relu_fused_backward) {
    bn_ctx c;
    bn_alloc(&c, 2, 3, 7);
    size_t nx = (size_t)2 * 3 * 7;
    c.relu = 1;
    bn_loss(&c);
    float *dx = malloc(nx * 4), *dx2 = malloc(nx * 4), *masked = malloc(nx * 4);
    float dg[3] = {0}, db[3] = {0}, dg2[3] = {0}, db2[3] = {0};
    dn_pool *pool = dn_pool_new(2);
    dn_bn_layer_bwd(&c.p, c.x, c.y, c.r, c.n, c.hw, c.mean, c.invstd, 1, dx, dg, db, pool);
    int zeros = 0;
    for (size_t i = 0; i < nx; i++) { masked[i] = c.y[i] > 0 ? c.r[i] : 0; zeros += !(c.y[i] > 0); }
    CHECK(zeros > 0 && zeros < (int)nx);
    dn_bn_layer_bwd(&c.p, c.x, NULL, masked, c.n, c.hw, c.mean, c.invstd, 0, dx2, dg2, db2, NULL);
    CHECK(!memcmp(dx, dx2, nx * 4) && !memcmp(dg, dg2, sizeof dg) && !memcmp(db, db2, sizeof db));
    dn_pool_free(pool);
    free(dx); free(dx2); free(masked);
    bn_free(&c);
}

TEST(batchnorm_running_stats_as_pytorch) {
    bn_ctx c;
    bn_alloc(&c, 2, 2, 3);
    float m0 = c.p.mean[0], v0 = c.p.var[0];
    dn_bn_layer_fwd_train(&c.p, c.x, c.n, c.hw, c.y, c.mean, c.invstd, 0, 1, NULL);
    double s = 0, ss = 0;
    for (int i = 0; i < 2; i++) for (int k = 0; k < 3; k++) s += c.x[i * 6 + k];
    double mean = s / 6;
    for (int i = 0; i < 2; i++) for (int k = 0; k < 3; k++) ss += pow(c.x[i * 6 + k] - mean, 2);
    CHECK_NEAR(c.p.mean[0], 0.9 * m0 + 0.1 * mean, 1e-6);
    CHECK_NEAR(c.p.var[0], 0.9 * v0 + 0.1 * ss / 5, 1e-6);      /* unbiased */
    CHECK_NEAR(c.invstd[0], 1 / sqrt(ss / 6 + 1e-5), 1e-5);     /* biased for normalising */
    CHECK(c.p.num_batches_tracked == 1);
    bn_free(&c);
}

TEST(batchnorm_eval_uses_running_stats) {
    bn_ctx c;
    bn_alloc(&c, 2, 3, 4);
    for (int i = 0; i < 3; i++) { c.p.mean[i] = 0.1f * i; c.p.var[i] = 0.5f + i; }
    dn_bn_layer_fwd_eval(&c.p, c.x, 2, 4, c.y, 1, NULL);
    for (int i = 0; i < 2; i++)
        for (int ch = 0; ch < 3; ch++)
            for (int k = 0; k < 4; k++) {
                size_t o = ((size_t)i * 3 + ch) * 4 + k;
                double v = (c.x[o] - c.p.mean[ch]) / sqrt(c.p.var[ch] + 1e-5) * c.p.weight[ch] + c.p.bias[ch];
                CHECK_NEAR(c.y[o], v > 0 ? v : 0, 1e-5);
            }
    CHECK(c.p.num_batches_tracked == 0);
    bn_free(&c);
}

/* ------------------------------------------------------------ ReLU, add */
typedef struct { float *x, *y, *r, *b; size_t n; int mode; } ew_ctx;

static double ew_loss(void *vc) {
    ew_ctx *c = vc;
    if (c->mode == 0) dn_relu_fwd(c->x, c->n, c->y, NULL);
    else dn_add_fwd(c->x, c->b, c->n, c->y, 0, NULL);
    return dot(c->y, c->r, c->n);
}

static int relu_kink(void *vc) {
    ew_ctx *c = vc;
    for (size_t i = 0; i < c->n; i++) if (fabsf(c->x[i]) < 1e-2f) return 1;
    return 0;
}

TEST(relu_backward) {
    enum { N = 40 };
    float x[N], y[N], r[N], dx[N];
    fill(x, N, 1); fill(r, N, 1);
    for (int i = 0; i < N; i++) if (fabsf(x[i]) < 0.05f) x[i] = 0.1f; /* keep away from the kink */
    ew_ctx c = {x, y, r, NULL, N, 0};
    ew_loss(&c);
    dn_relu_bwd(y, r, N, dx, NULL);
    int sk = 0;
    CHECK(fd_check("relu", x, dx, N, 1e-3f, ew_loss, &c, &sk, relu_kink) < 1e-3);
    CHECK(sk == 0);
}

TEST(residual_add_backward) {
    enum { N = 30 };
    float a[N], b[N], y[N], r[N], acc[N];
    fill(a, N, 1); fill(b, N, 1); fill(r, N, 1);
    ew_ctx c = {a, y, r, b, N, 1};
    int sk = 0;
    /* d/da = d/db = dy */
    CHECK(fd_check("add a", a, r, N, 1e-2f, ew_loss, &c, &sk, NULL) < 1e-3);
    c.x = b; c.b = a;
    CHECK(fd_check("add b", b, r, N, 1e-2f, ew_loss, &c, &sk, NULL) < 1e-3);
    memcpy(acc, a, sizeof acc);
    dn_add_inplace(acc, b, N, NULL);
    for (int i = 0; i < N; i++) CHECK(acc[i] == a[i] + b[i]);
    dn_add_fwd(a, b, N, y, 1, NULL);
    for (int i = 0; i < N; i++) CHECK(y[i] == fmaxf(a[i] + b[i], 0.f));
}

/* ------------------------------------------------------------ max-pool */
typedef struct { float *x, *y, *r; int32_t *idx, *idx0; int n, c, h, w, oh, ow; } mp_ctx;

static double mp_loss(void *vc) {
    mp_ctx *c = vc;
    dn_maxpool_fwd(c->x, c->n, c->c, c->h, c->w, 3, 2, 1, c->y, c->idx, NULL);
    return dot(c->y, c->r, (size_t)c->n * c->c * c->oh * c->ow);
}

static int mp_kink(void *vc) {
    mp_ctx *c = vc;
    return memcmp(c->idx, c->idx0, sizeof(int32_t) * c->n * c->c * c->oh * c->ow) != 0;
}

TEST(maxpool_backward) {
    mp_ctx c = {0};
    c.n = 2; c.c = 3; c.h = 7; c.w = 6;
    c.oh = dn_pool_out(7, 3, 2, 1); c.ow = dn_pool_out(6, 3, 2, 1);
    size_t nx = (size_t)c.n * c.c * c.h * c.w, ny = (size_t)c.n * c.c * c.oh * c.ow;
    c.x = malloc(nx * 4); c.y = malloc(ny * 4); c.r = malloc(ny * 4);
    c.idx = malloc(ny * 4); c.idx0 = malloc(ny * 4);
    float *dx = malloc(nx * 4);
    fill(c.x, nx, 1); fill(c.r, ny, 1);
    mp_loss(&c);
    memcpy(c.idx0, c.idx, ny * 4);
    dn_maxpool_bwd(c.r, c.idx, c.n, c.c, c.h, c.w, c.oh, c.ow, dx, NULL);
    int sk = 0;
    CHECK(fd_check("maxpool", c.x, dx, nx, 1e-3f, mp_loss, &c, &sk, mp_kink) < 1e-3);
    CHECK(sk < (int)nx / 4);
    free(c.x); free(c.y); free(c.r); free(c.idx); free(c.idx0); free(dx);
}

TEST(maxpool_ties_first_wins_as_pytorch) {
    /* constant plane: every window's first in-range element wins */
    float x[16], y[4];
    int32_t idx[4];
    for (int i = 0; i < 16; i++) x[i] = 1.f;
    dn_maxpool_fwd(x, 1, 1, 4, 4, 3, 2, 1, y, idx, NULL);
    CHECK(idx[0] == 0 && idx[1] == 1 && idx[2] == 4 && idx[3] == 5);
    x[6] = NAN;
    dn_maxpool_fwd(x, 1, 1, 4, 4, 3, 2, 1, y, idx, NULL);
    CHECK(isnan(y[3]) && idx[3] == 6);
}

/* ------------------------------------------------------------ avgpool, linear */
typedef struct { float *x, *w, *b, *y, *r; int n, in, out, hw, mode; } lin_ctx;

static double lin_loss(void *vc) {
    lin_ctx *c = vc;
    if (c->mode == 0) dn_linear_fwd(c->x, c->n, c->in, c->out, c->w, c->b, c->y);
    else dn_avgpool_fwd(c->x, c->n, c->in, c->hw, c->y);
    return dot(c->y, c->r, (size_t)c->n * (c->mode ? c->in : c->out));
}

TEST(linear_backward) {
    enum { NB = 3, IN = 7, OUT = 4 };
    float x[NB * IN], w[OUT * IN], b[OUT], y[NB * OUT], r[NB * OUT], dx[NB * IN], dw[OUT * IN] = {0}, db[OUT] = {0};
    fill(x, NB * IN, 1); fill(w, OUT * IN, 0.5f); fill(b, OUT, 0.5f); fill(r, NB * OUT, 1);
    lin_ctx c = {x, w, b, y, r, NB, IN, OUT, 0, 0};
    dn_linear_bwd(x, r, NB, IN, OUT, w, dx, dw, db);
    int sk = 0;
    CHECK(fd_check("linear dx", x, dx, NB * IN, 1e-2f, lin_loss, &c, &sk, NULL) < 1e-3);
    CHECK(fd_check("linear dw", w, dw, OUT * IN, 1e-2f, lin_loss, &c, &sk, NULL) < 1e-3);
    CHECK(fd_check("linear db", b, db, OUT, 1e-2f, lin_loss, &c, &sk, NULL) < 1e-3);
}

TEST(global_avgpool_backward) {
    enum { NB = 2, C = 3, HW = 5 };
    float x[NB * C * HW], y[NB * C], r[NB * C], dx[NB * C * HW];
    fill(x, NB * C * HW, 1); fill(r, NB * C, 1);
    lin_ctx c = {x, NULL, NULL, y, r, NB, C, 0, HW, 1};
    dn_avgpool_bwd(r, NB, C, HW, dx);
    int sk = 0;
    CHECK(fd_check("avgpool", x, dx, NB * C * HW, 1e-2f, lin_loss, &c, &sk, NULL) < 1e-3);
}

/* ------------------------------------------------------------ loss (double FD on logits) */
typedef struct { float *z; int *lab; int n, c; float *w; float eps; } ce_ctx;

static double ce_val(void *vc) {
    ce_ctx *c = vc;
    float l;
    dn_ce_loss(c->z, c->lab, c->n, c->c, c->w, c->eps, &l, NULL);
    return l;
}

static void ce_case(int weighted, float eps) {
    enum { NB = 4, C = 5 };
    float z[NB * C], d[NB * C], w[C];
    int lab[NB] = {0, 3, 3, 4};
    fill(z, NB * C, 2);
    for (int i = 0; i < C; i++) w[i] = 0.3f + (float)i * 0.4f;
    ce_ctx c = {z, lab, NB, C, weighted ? w : NULL, eps};
    float l;
    CHECK(dn_ce_loss(z, lab, NB, C, c.w, eps, &l, d) == DN_OK);
    int sk = 0;
    CHECK(fd_check("cross-entropy", z, d, NB * C, 1e-2f, ce_val, &c, &sk, NULL) < 2e-3);
}

TEST(cross_entropy_plain) { ce_case(0, 0); }
TEST(cross_entropy_weights_smoothing) { ce_case(1, 0.15f); }

TEST(cross_entropy_value_by_hand) {
    /* two samples, C = 2, logits 0: -log p = log 2 each; weights (1, 3), eps 0.2:
     * nll = (1*log2 + 3*log2) / 4 = log2; smooth = sum_i sum_c w_c log2 / (C * 4) = 2 log2 / ... */
    float z[4] = {0, 0, 0, 0}, w[2] = {1, 3}, l;
    int lab[2] = {0, 1};
    CHECK(dn_ce_loss(z, lab, 2, 2, w, 0.2f, &l, NULL) == DN_OK);
    double nll = log(2.0), smooth = 2 * (1 + 3) * log(2.0) / 4.0;
    CHECK_NEAR(l, 0.8 * nll + 0.2 / 2 * smooth, 1e-6);
}

/* ------------------------------------------------------------ ISA variants
 * The BN / ReLU / add / max-pool loops exist per instruction set; every
 * variant must give the scalar variant's result bit for bit (odd sizes, so the
 * 16-lane main loops and the tails both run). */
static void run_elementwise(float *out, size_t *len, dn_pool *pool) {
    enum { N = 3, C = 5, H = 7, W = 9 };
    size_t nx = (size_t)N * C * H * W, o = 0;
    static float x[N * C * H * W], y[N * C * H * W], dy[N * C * H * W], r[N * C * H * W];
    dn_rng rr;
    dn_rng_seed(&rr, 77);
    for (size_t i = 0; i < nx; i++) { x[i] = dn_rng_normal(&rr) + 0.3f; dy[i] = dn_rng_normal(&rr); r[i] = dn_rng_normal(&rr); }
    float w[C], b[C], m[C], v[C], sm[C], si[C], dg[C] = {0}, db[C] = {0};
    for (int c = 0; c < C; c++) { w[c] = 0.5f + 0.1f * c; b[c] = 0.05f * c; m[c] = 0.1f; v[c] = 1.2f; }
    dn_bn_p p = {C, 1e-5f, w, b, m, v, 0};
    dn_bn_layer_fwd_train(&p, x, N, H * W, y, sm, si, 1, 1, pool);
    memcpy(out + o, y, nx * 4); o += nx;
    memcpy(out + o, m, sizeof m); o += C;
    memcpy(out + o, v, sizeof v); o += C;
    dn_bn_layer_bwd(&p, x, y, dy, N, H * W, sm, si, 1, r, dg, db, pool);
    memcpy(out + o, r, nx * 4); o += nx;
    memcpy(out + o, dg, sizeof dg); o += C;
    memcpy(out + o, db, sizeof db); o += C;
    dn_bn_layer_fwd_eval(&p, x, N, H * W, y, 0, pool);
    memcpy(out + o, y, nx * 4); o += nx;
    dn_relu_fwd(dy, nx, y, pool);
    memcpy(out + o, y, nx * 4); o += nx;
    dn_relu_bwd(x, dy, nx, y, pool);
    memcpy(out + o, y, nx * 4); o += nx;
    dn_add_fwd(x, dy, nx, y, 1, pool);
    memcpy(out + o, y, nx * 4); o += nx;
    int32_t idx[N * C * 4 * 5];
    dn_maxpool_fwd(x, N, C, H, W, 3, 2, 1, y, idx, pool);
    memcpy(out + o, y, sizeof(float) * N * C * 4 * 5); o += N * C * 4 * 5;
    memcpy(out + o, idx, sizeof idx); o += N * C * 4 * 5;
    *len = o;
}

TEST(layer_isa_variants_bit_identical) {
    static float ref[20000], got[20000];
    size_t lr = 0, lg = 0;
    dn_isa old = dn_kernels_force_isa(DN_ISA_SCALAR);
    run_elementwise(ref, &lr, NULL);
    dn_isa isas[2] = {DN_ISA_AVX2, DN_ISA_AVX512};
    dn_pool *pool = dn_pool_new(2);
    int tested = 0;
    for (int i = 0; i < 2; i++) {
        dn_kernels_force_isa(isas[i]);
        if (dn_kernels_isa() != isas[i]) continue; /* CPU lacks it */
        tested++;
        run_elementwise(got, &lg, i ? pool : NULL);
        CHECK_MSG(lg == lr && !memcmp(ref, got, lr * 4), "%s variant differs from scalar", dn_isa_name(isas[i]));
    }
    dn_kernels_force_isa(old);
    dn_pool_free(pool);
    if (!tested) SKIP("CPU has neither AVX2 nor AVX-512: only the scalar variant exists here");
}

int main(void) {
    dn_rng_seed(&g_rng, 42);
    RUN(conv_3x3_s1_p1);
    RUN(conv_3x3_s2_p1);
    RUN(conv_1x1_s2_downsample);
    RUN(conv_1x1_s1);
    RUN(conv_7x7_s2_p3_stem);
    RUN(conv_threaded);
    RUN(batchnorm_train_backward);
    RUN(batchnorm_relu_fused_backward);
    RUN(batchnorm_running_stats_as_pytorch);
    RUN(batchnorm_eval_uses_running_stats);
    RUN(relu_backward);
    RUN(residual_add_backward);
    RUN(maxpool_backward);
    RUN(maxpool_ties_first_wins_as_pytorch);
    RUN(linear_backward);
    RUN(global_avgpool_backward);
    RUN(cross_entropy_plain);
    RUN(cross_entropy_weights_smoothing);
    RUN(cross_entropy_value_by_hand);
    RUN(layer_isa_variants_bit_identical);
    return REPORT();
}
