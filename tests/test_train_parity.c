/* Training parity with PyTorch: fixtures from tools/make_train_fixtures.py
 * (narrow torchvision-layout ResNet, batch 4 of 3x36x36, 3 classes). Each case
 * runs 5 optimizer steps on the fixed batch and compares every loss, every
 * changed parameter/BN buffer after step 1 and 5, and checks that everything
 * else (frozen weights, frozen BN running stats) did not move at all. */
#include "harness.h"
#include "core/core.h"
#include "core/json.h"
#include "nn/model.h"
#include "train/loss.h"
#include "train/net.h"
#include "train/optim.h"
#include "train/sched.h"
#include "nn/engine.h"
#include "io/pth.h"
#include <stdint.h>

#define FIX "tests/fixtures/train/"
#define TOL 1e-4

typedef struct fixture {
    dn_json *meta;
    float *data;
    size_t nfloats;
} fixture;

static void fixture_free(fixture *f) {
    dn_json_free(f->meta);
    free(f->data);
    memset(f, 0, sizeof *f);
}

static int fixture_load(const char *base, fixture *f) {
    char path[256];
    uint8_t *txt = NULL, *bin = NULL;
    size_t tl = 0, bl = 0;
    memset(f, 0, sizeof *f);
    snprintf(path, sizeof path, FIX "%s.json", base);
    if (dn_read_file(path, 1 << 24, &txt, &tl)) return 0;
    f->meta = dn_json_parse((const char *)txt, tl, NULL, 0);
    free(txt);
    snprintf(path, sizeof path, FIX "%s.bin", base);
    if (!f->meta || dn_read_file(path, 1 << 26, &bin, &bl)) { fixture_free(f); free(bin); return 0; }
    f->data = (float *)bin; /* little-endian float32, malloc'ed: alignment fine */
    f->nfloats = bl / 4;
    return 1;
}

/* Tensor by name: data pointer and numel (0 / NULL if absent). */
static const float *fx_get(const fixture *f, const char *name, int64_t *numel, int64_t shape[8], int *ndim) {
    const dn_json *ts = dn_json_get(f->meta, "tensors");
    for (size_t i = 0; i < dn_json_len(ts); i++) {
        const dn_json *t = dn_json_at(ts, i);
        if (strcmp(dn_json_str(dn_json_get(t, "name"), ""), name)) continue;
        const dn_json *sh = dn_json_get(t, "shape");
        int64_t n = 1;
        int nd = (int)dn_json_len(sh);
        for (int d = 0; d < nd && d < 8; d++) {
            int64_t v = (int64_t)dn_json_num(dn_json_at(sh, d), 0);
            if (shape) shape[d] = v;
            n *= v;
        }
        if (ndim) *ndim = nd;
        size_t off = (size_t)dn_json_num(dn_json_get(t, "offset"), 0);
        if (off + (size_t)n > f->nfloats) return NULL;
        *numel = n;
        return f->data + off;
    }
    *numel = 0;
    return NULL;
}

/* The initial state_dict, written by torch.save and read by our .pth reader
 * (so the narrow fixture also checks torchvision's key layout end to end). */
static dn_tensors g_init;

static int load_init_tensors(void) {
    if (g_init.n) return 1;
    if (dn_pth_load(FIX "init.pth", &g_init)) { printf("  %s\n", dn_last_error()); return 0; }
    return 1;
}

static dn_model *load_init_model(const fixture *common) {
    (void)common;
    dn_model *m = NULL;
    if (!load_init_tensors()) return NULL;
    if (dn_model_from_tensors(&g_init, 0, &m)) printf("  model: %s\n", dn_last_error());
    return m;
}

typedef struct cmp_ctx {
    const fixture *want;     /* case fixture */
    const char *prefix;      /* "step1/" */
    double worst;
    char worst_name[96];
    int missing, moved;
    char moved_name[96];
} cmp_ctx;

static void cmp_one(void *vctx, const char *name, float *data, int64_t numel, int is_buffer) {
    cmp_ctx *c = vctx;
    char key[128];
    int64_t n = 0;
    snprintf(key, sizeof key, "%s%s", c->prefix, name);
    const float *w = fx_get(c->want, key, &n, NULL, NULL);
    if (!w) {
        /* PyTorch did not change it: it must be bit-identical to the initial value */
        const dn_tensor *it = dn_tensors_find(&g_init, name);
        const float *init = it ? it->data : NULL;
        n = it ? dn_tensor_numel(it) : 0;
        if (is_buffer && !it && strstr(name, "num_batches_tracked")) return; /* optional key */
        if (!init || n != numel) { c->missing++; return; }
        for (int64_t i = 0; i < n; i++)
            if (data[i] != init[i]) {
                if (!c->moved) snprintf(c->moved_name, sizeof c->moved_name, "%s", name);
                c->moved++;
                break;
            }
        return;
    }
    if (n != numel) { c->missing++; return; }
    double maxref = 0, maxdiff = 0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs(w[i]) > maxref) maxref = fabs(w[i]);
        double d = fabs((double)data[i] - w[i]);
        if (!(d <= maxdiff)) maxdiff = d; /* NaN propagates */
    }
    double err = maxdiff / (maxref > 1e-3 ? maxref : 1e-3);
    if (getenv("DN_TEST_VERBOSE") && err > TOL) printf("    %s%s: rel err %.3g\n", c->prefix, name, err);
    if (!(err <= c->worst)) {
        c->worst = err;
        snprintf(c->worst_name, sizeof c->worst_name, "%s", name);
    }
}

static double cfg_num(const dn_json *cfg, const char *k, double d) { return dn_json_num(dn_json_get(cfg, k), d); }

/* Runs one fixture case; threads for the net. */
static void run_case(const char *name, int threads) {
    fixture common, fx;
    if (!fixture_load("common", &common)) { CHECK_MSG(0, "cannot load %scommon.*", FIX); return; }
    if (!fixture_load(name, &fx)) { CHECK_MSG(0, "cannot load %s%s.*", FIX, name); fixture_free(&common); return; }
    dn_model *m = load_init_model(&common);
    dn_net *net = NULL;
    dn_optim *opt = NULL;
    CHECK(m != NULL);
    if (!m) goto done;
    const dn_json *cfg = dn_json_get(fx.meta, "config");
    int first = (int)cfg_num(cfg, "first_trainable", -1);
    int64_t xn, ln, lossn;
    int64_t xshape[8];
    const float *x = fx_get(&common, "x", &xn, xshape, NULL);
    const float *lab = fx_get(&common, "labels", &ln, NULL, NULL);
    const float *want_loss = fx_get(&fx, "loss", &lossn, NULL, NULL);
    CHECK(x && lab && want_loss && lossn == 5);
    if (!x || !lab || !want_loss) goto done;
    int n = (int)xshape[0], h = (int)xshape[2], w = (int)xshape[3], C = m->num_classes;
    int labels[16];
    for (int i = 0; i < n; i++) labels[i] = (int)lab[i];
    dn_status st = dn_net_new(m, first, n, h, w, threads, &net);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (st) goto done;

    dn_optim_cfg oc;
    int adamw = !strcmp(dn_json_str(dn_json_get(cfg, "optim"), ""), "adamw");
    dn_optim_cfg_default(&oc, adamw ? DN_OPT_ADAMW : DN_OPT_SGD);
    if (!adamw) {
        oc.momentum = (float)cfg_num(cfg, "momentum", 0);
        oc.nesterov = dn_json_bool(dn_json_get(cfg, "nesterov"), 0);
    }
    oc.weight_decay = (float)cfg_num(cfg, "weight_decay", 0);
    oc.group_lr_mult[DN_PARAM_BACKBONE] = (float)cfg_num(cfg, "backbone_lr_mult", 1);
    int np;
    const dn_param *params = dn_net_params(net, &np);
    st = dn_optim_new(&oc, params, np, &opt);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (st) goto done;
    if (threads > 1) dn_optim_set_pool(opt, dn_net_pool(net));

    dn_sched sc = {DN_SCHED_CONST, (float)cfg_num(cfg, "lr", 0), 0, 0, 0, 0, 0, 0};
    const char *sk = dn_json_str(dn_json_get(cfg, "sched"), "");
    if (!strcmp(sk, "warmup_cosine")) {
        sc.kind = DN_SCHED_COSINE;
        sc.warmup = (int)cfg_num(cfg, "warmup", 0);
        sc.warmup_start = (float)cfg_num(cfg, "warmup_start", 1);
        sc.t_max = (int)cfg_num(cfg, "t_max", 1);
        sc.eta_min = (float)cfg_num(cfg, "eta_min", 0);
    } else if (!strcmp(sk, "step")) {
        sc.kind = DN_SCHED_STEP;
        sc.step_size = (int)cfg_num(cfg, "step_size", 1);
        sc.gamma = (float)cfg_num(cfg, "gamma", 1);
    }
    CHECK_MSG(dn_sched_check(&sc) == DN_OK, "%s", dn_last_error());
    const dn_json *lrs = dn_json_get(cfg, "lrs");

    float cw[8], *cwp = NULL;
    const dn_json *jw = dn_json_get(cfg, "class_weights");
    if (dn_json_len(jw) == (size_t)C) {
        for (int i = 0; i < C; i++) cw[i] = (float)dn_json_num(dn_json_at(jw, i), 1);
        cwp = cw;
    }
    float smoothing = (float)cfg_num(cfg, "label_smoothing", 0);
    float logits[64], dlogits[64];
    for (int step = 1; step <= 5; step++) {
        float lr = dn_sched_lr(&sc, step - 1);
        double want_lr = dn_json_num(dn_json_at(lrs, (size_t)step - 1), -1);
        CHECK_MSG(fabs(lr - want_lr) <= 1e-6 * want_lr, "%s step %d: lr %.9g vs torch %.9g", name, step, lr, want_lr);
        dn_net_zero_grad(net);
        float loss;
        st = dn_net_forward(net, x, n, logits);
        if (!st) st = dn_ce_loss(logits, labels, n, C, cwp, smoothing, &loss, dlogits);
        if (!st) st = dn_net_backward(net, dlogits);
        CHECK_MSG(st == DN_OK, "%s step %d: %s", name, step, dn_last_error());
        if (st) goto done;
        CHECK_MSG(fabs(loss - want_loss[step - 1]) <= TOL * fabs(want_loss[step - 1]),
                  "%s step %d: loss %.7f vs torch %.7f", name, step, loss, want_loss[step - 1]);
        if (step == 1) {
            /* gradients of the first backward, when recorded */
            double worst = 0;
            const char *wn = "";
            int have = 0;
            for (int i = 0; i < np; i++) {
                char key[128];
                int64_t gn;
                snprintf(key, sizeof key, "grad0/%s", params[i].name);
                const float *g = fx_get(&fx, key, &gn, NULL, NULL);
                if (!g) continue;
                have++;
                CHECK_MSG(gn == params[i].numel, "%s: grad size", params[i].name);
                if (gn != params[i].numel) continue;
                double mr = 0, md = 0;
                for (int64_t k = 0; k < gn; k++) {
                    if (fabs(g[k]) > mr) mr = fabs(g[k]);
                    double d = fabs((double)params[i].grad[k] - g[k]);
                    if (!(d <= md)) md = d;
                }
                double e = md / (mr > 1e-6 ? mr : 1e-6);
                if (!(e <= worst)) { worst = e; wn = params[i].name; }
            }
            if (have) {
                CHECK_MSG(have == np, "%s: %d of %d grads in fixture", name, have, np);
                CHECK_MSG(worst <= TOL, "%s: worst gradient %s rel err %.3g", name, wn, worst);
                printf("  %s: %d grads, worst %s rel err %.2g\n", name, have, wn, worst);
            }
        }
        st = dn_optim_step(opt, lr);
        CHECK_MSG(st == DN_OK, "%s", dn_last_error());
        if (step == 1 || step == 5) {
            cmp_ctx c = {&fx, step == 1 ? "step1/" : "step5/", 0, "", 0, 0, ""};
            dn_model_foreach(m, cmp_one, &c);
            CHECK_MSG(c.missing == 0, "%s: %d tensors missing or mis-sized", name, c.missing);
            CHECK_MSG(c.moved == 0, "%s step %d: %d tensors changed that PyTorch kept (first: %s)", name,
                      step, c.moved, c.moved_name);
            CHECK_MSG(c.worst <= TOL, "%s after step %d: worst tensor %s rel err %.3g", name, step,
                      c.worst_name, c.worst);
            printf("  %s (threads %d) after step %d: worst %s rel err %.2g\n", name, threads, step,
                   c.worst_name, c.worst);
        }
    }
done:
    dn_optim_free(opt);
    dn_net_free(net);
    dn_model_free(m);
    fixture_free(&fx);
    fixture_free(&common);
}


/* ------------------------------------------------------------ schedules vs torch tables */
TEST(schedules_match_torch) {
    fixture common;
    if (!fixture_load("common", &common)) { CHECK_MSG(0, "cannot load common fixture"); return; }
    const dn_json *arr = dn_json_get(common.meta, "schedules");
    CHECK(dn_json_len(arr) >= 4);
    for (size_t i = 0; i < dn_json_len(arr); i++) {
        const dn_json *c = dn_json_at(arr, i);
        dn_sched sc = {0};
        CHECK(dn_sched_parse_kind(dn_json_str(dn_json_get(c, "kind"), ""), &sc.kind) == DN_OK);
        sc.base_lr = 0.1f;
        sc.step_size = (int)cfg_num(c, "step_size", 0);
        sc.gamma = (float)cfg_num(c, "gamma", 0);
        sc.t_max = (int)cfg_num(c, "t_max", 0);
        sc.eta_min = (float)cfg_num(c, "eta_min", 0);
        sc.warmup = (int)cfg_num(c, "warmup", 0);
        sc.warmup_start = (float)cfg_num(c, "warmup_start", 1);
        CHECK_MSG(dn_sched_check(&sc) == DN_OK, "%s", dn_last_error());
        const dn_json *lrs = dn_json_get(c, "lrs");
        for (size_t t = 0; t < dn_json_len(lrs); t++) {
            double want = dn_json_num(dn_json_at(lrs, t), -1);
            float got = dn_sched_lr(&sc, (long)t);
            CHECK_MSG(fabs(got - want) <= 1e-6 * want + 1e-9, "schedule %zu step %zu: %.9g vs torch %.9g", i, t, got, want);
        }
    }
    fixture_free(&common);
}

/* ------------------------------------------------------------ cached inputs, eval, staging */
static dn_model *fixture_model(const float **x, int *n, int *h, int *w, fixture *common) {
    if (!fixture_load("common", common)) return NULL;
    int64_t xn, xs[8];
    *x = fx_get(common, "x", &xn, xs, NULL);
    *n = (int)xs[0]; *h = (int)xs[2]; *w = (int)xs[3];
    return load_init_model(common);
}

static double max_rel(const float *a, const float *b, int64_t n) {
    double mr = 0, md = 0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs(b[i]) > mr) mr = fabs(b[i]);
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= md)) md = d;
    }
    return md / (mr > 1e-6 ? mr : 1e-6);
}

/* Training from a cached activation (engine forward_to) or cached pooled
 * features must give the same logits and gradients as the full forward. */
static void cached_case(int first, int engine_stage) {
    fixture common;
    const float *x;
    int n, h, w;
    dn_model *ma = fixture_model(&x, &n, &h, &w, &common), *mb = NULL;
    dn_net *na = NULL, *nb = NULL;
    dn_session *ses = NULL;
    float *act = NULL;
    CHECK(ma != NULL);
    if (!ma || dn_model_clone(ma, &mb)) goto done;
    CHECK(dn_net_new(ma, first, n, h, w, 1, &na) == DN_OK);
    CHECK(dn_net_new(mb, first, n, h, w, 2, &nb) == DN_OK);
    dn_session_opts so = {n, 1, h, w, DN_CONV_REF};
    CHECK_MSG(dn_session_new_ex(mb, &so, &ses) == DN_OK, "%s", dn_last_error());
    if (!na || !nb || !ses) goto done;
    int c, hh, ww;
    dn_session_stage_shape(ses, engine_stage, &c, &hh, &ww);
    int nc2, nh2, nw2;
    /* engine "after stage k" (k = 0..4) enters our stage k + 1; engine 5 = pooled = our 5 */
    int stage = engine_stage == 5 ? 5 : engine_stage + 1;
    dn_net_input_shape(nb, stage, &nc2, &nh2, &nw2);
    CHECK(c == nc2 && hh == nh2 && ww == nw2);
    act = malloc(sizeof(float) * n * c * hh * ww);
    CHECK(dn_session_forward_to(ses, x, n, engine_stage, act) == DN_OK);
    float la[64], lb[64], da[64], db[64], loss;
    int labels[4] = {0, 2, 1, 2};
    CHECK(dn_net_forward(na, x, n, la) == DN_OK);
    CHECK(dn_net_forward_from(nb, stage, act, n, lb) == DN_OK);
    CHECK_MSG(max_rel(lb, la, (int64_t)n * ma->num_classes) < 1e-4, "logits differ");
    CHECK(dn_ce_loss(la, labels, n, ma->num_classes, NULL, 0, &loss, da) == DN_OK);
    CHECK(dn_ce_loss(lb, labels, n, mb->num_classes, NULL, 0, &loss, db) == DN_OK);
    dn_net_zero_grad(na);
    dn_net_zero_grad(nb);
    CHECK(dn_net_backward(na, da) == DN_OK);
    CHECK(dn_net_backward(nb, db) == DN_OK);
    int pa, pb;
    const dn_param *A = dn_net_params(na, &pa), *B = dn_net_params(nb, &pb);
    CHECK(pa == pb);
    for (int i = 0; i < pa && i < pb; i++) {
        CHECK(!strcmp(A[i].name, B[i].name));
        double e = max_rel(B[i].grad, A[i].grad, A[i].numel);
        CHECK_MSG(e < 1e-3, "grad %s rel err %g", A[i].name, e);
    }
done:
    free(act);
    dn_session_free(ses);
    dn_net_free(na); dn_net_free(nb);
    dn_model_free(ma); dn_model_free(mb);
    fixture_free(&common);
}

TEST(forward_from_cached_layer3) { cached_case(4, 3); }
TEST(forward_from_pooled_features) { cached_case(5, 5); }
TEST(forward_from_cached_layer2_with_frozen_layer3) { cached_case(4, 2); }

TEST(eval_forward_matches_engine_and_keeps_state) {
    fixture common;
    const float *x;
    int n, h, w;
    dn_model *m = fixture_model(&x, &n, &h, &w, &common), *ref = NULL;
    dn_net *net = NULL;
    dn_session *ses = NULL;
    CHECK(m != NULL);
    if (!m || dn_model_clone(m, &ref)) goto done;
    CHECK(dn_net_new(m, 0, n, h, w, 2, &net) == DN_OK);
    dn_session_opts so = {n, 1, h, w, DN_CONV_REF};
    CHECK(dn_session_new_ex(ref, &so, &ses) == DN_OK);
    if (!net || !ses) goto done;
    float a[64], b[64];
    CHECK(dn_net_eval_forward(net, 0, x, n, a) == DN_OK);
    CHECK(dn_session_forward(ses, x, n, b) == DN_OK);
    CHECK_MSG(max_rel(a, b, (int64_t)n * m->num_classes) < 1e-4, "eval logits differ from engine");
    /* eval forward must not touch BN running stats */
    CHECK(!memcmp(m->bn1.mean, ref->bn1.mean, sizeof(float) * m->bn1.c));
    CHECK(m->bn1.num_batches_tracked == ref->bn1.num_batches_tracked);
    /* and a backward after an eval forward is refused */
    CHECK(dn_net_backward(net, a) == DN_ERR_ARG);
done:
    dn_session_free(ses);
    dn_net_free(net);
    dn_model_free(m); dn_model_free(ref);
    fixture_free(&common);
}

/* Eval forwards keep the conv operators they build; a training step must
 * invalidate them, and dn_net_sync after an outside weight change. Checked
 * against a fresh net (which builds everything from the current weights). */
static double eval_vs_fresh(dn_model *m, dn_net *net, const float *x, int n, int h, int w) {
    float a[64], b[64];
    dn_net *fresh = NULL;
    if (dn_net_eval_forward(net, 0, x, n, a) || dn_net_new(m, dn_net_first_trainable(net), n, h, w, 1, &fresh) ||
        dn_net_eval_forward(fresh, 0, x, n, b)) {
        dn_net_free(fresh);
        return 1e9;
    }
    dn_net_free(fresh);
    return max_rel(a, b, (int64_t)n * m->num_classes);
}

TEST(eval_operators_follow_weight_updates) {
    fixture common;
    const float *x;
    int n, h, w;
    dn_model *m = fixture_model(&x, &n, &h, &w, &common);
    dn_net *net = NULL;
    dn_optim *opt = NULL;
    CHECK(m != NULL);
    if (!m || dn_net_new(m, 3, n, h, w, 2, &net)) goto done;
    CHECK(eval_vs_fresh(m, net, x, n, h, w) == 0);
    int np, labels[4] = {0, 2, 1, 2};
    const dn_param *p = dn_net_params(net, &np);
    dn_optim_cfg oc;
    dn_optim_cfg_default(&oc, DN_OPT_SGD);
    CHECK(dn_optim_new(&oc, p, np, &opt) == DN_OK);
    float lg[64], dl[64], loss;
    for (int step = 0; step < 2 && opt; step++) {
        dn_net_zero_grad(net);
        CHECK(dn_net_forward(net, x, n, lg) == DN_OK);
        CHECK(dn_ce_loss(lg, labels, n, m->num_classes, NULL, 0, &loss, dl) == DN_OK);
        CHECK(dn_net_backward(net, dl) == DN_OK);
        CHECK(dn_optim_step(opt, 0.5f) == DN_OK);
        CHECK_MSG(eval_vs_fresh(m, net, x, n, h, w) == 0, "eval after step %d used stale operators", step);
    }
    /* outside change (e.g. checkpoint restore): dn_net_sync makes eval see it */
    for (int i = 0; i < m->blocks[m->nblocks - 1].conv2.cout; i++) m->blocks[m->nblocks - 1].conv2.w[i] += 0.5f;
    CHECK(dn_net_sync(net) == DN_OK);
    CHECK(eval_vs_fresh(m, net, x, n, h, w) == 0);
done:
    dn_optim_free(opt);
    dn_net_free(net);
    dn_model_free(m);
    fixture_free(&common);
}

/* Odd, non-square input and an odd batch: eval forward equals the inference
 * engine, and a training step runs (shapes planned from the input size). */
TEST(odd_input_size) {
    fixture common;
    const float *x0;
    int n0, h0, w0;
    dn_model *m = fixture_model(&x0, &n0, &h0, &w0, &common);
    dn_net *net = NULL;
    dn_session *ses = NULL;
    enum { N = 3, H = 29, W = 41 };
    float *x = malloc(sizeof(float) * N * 3 * H * W);
    dn_rng r;
    dn_rng_seed(&r, 5);
    for (int i = 0; i < N * 3 * H * W; i++) x[i] = dn_rng_normal(&r);
    CHECK(m != NULL);
    if (!m) goto done;
    CHECK(dn_net_new(m, 0, N, H, W, 2, &net) == DN_OK);
    dn_session_opts so = {N, 1, H, W, DN_CONV_REF};
    CHECK(dn_session_new_ex(m, &so, &ses) == DN_OK);
    if (!net || !ses) goto done;
    float a[64], b[64], dl[64], loss;
    int labels[N] = {2, 0, 1};
    CHECK(dn_net_eval_forward(net, 0, x, N, a) == DN_OK);
    CHECK(dn_session_forward(ses, x, N, b) == DN_OK);
    CHECK_MSG(max_rel(a, b, (int64_t)N * m->num_classes) < 1e-4, "odd-size eval differs from engine");
    CHECK(dn_net_forward(net, x, N, a) == DN_OK);
    CHECK(dn_ce_loss(a, labels, N, m->num_classes, NULL, 0, &loss, dl) == DN_OK && isfinite(loss));
    CHECK(dn_net_backward(net, dl) == DN_OK);
    int np;
    const dn_param *p = dn_net_params(net, &np);
    double gs = 0;
    for (int i = 0; i < np; i++)
        for (int64_t k = 0; k < p[i].numel; k++) gs += fabs(p[i].grad[k]);
    CHECK(isfinite(gs) && gs > 0);
done:
    free(x);
    dn_session_free(ses);
    dn_net_free(net);
    dn_model_free(m);
    fixture_free(&common);
}

TEST(freeze_specs_and_staging) {
    int f = -1;
    CHECK(dn_freeze_parse("backbone", &f) == DN_OK && f == 5);
    CHECK(dn_freeze_parse("layer3", &f) == DN_OK && f == 4);
    CHECK(dn_freeze_parse("none", &f) == DN_OK && f == 0);
    CHECK(dn_freeze_parse("2", &f) == DN_OK && f == 2);
    CHECK(dn_freeze_parse("layer9", &f) == DN_ERR_ARG && strstr(dn_last_error(), "layer9"));
    CHECK(dn_freeze_parse("", &f) == DN_ERR_ARG);
    fixture common;
    const float *x;
    int n, h, w;
    dn_model *m = fixture_model(&x, &n, &h, &w, &common);
    dn_net *net = NULL;
    CHECK(m != NULL);
    if (!m) { fixture_free(&common); return; }
    CHECK(dn_net_new(m, 5, n, h, w, 1, &net) == DN_OK);
    if (net) {
        int np;
        const dn_param *p = dn_net_params(net, &np);
        CHECK(np == 2 && !strcmp(p[0].name, "fc.weight") && p[0].group == DN_PARAM_HEAD);
        CHECK(dn_net_set_first_trainable(net, 4) == DN_OK);
        p = dn_net_params(net, &np);
        CHECK(np == 17 && !strcmp(p[0].name, "layer4.0.conv1.weight") && p[0].group == DN_PARAM_BACKBONE);
        CHECK(!strcmp(p[np - 1].name, "fc.bias") && p[np - 1].is_norm_or_bias);
        float lg[64];
        /* bad calls: each a one-line error, nothing crashes */
        CHECK(dn_net_forward(net, x, n + 1, lg) == DN_ERR_ARG);
        CHECK(dn_net_forward_from(net, 5, x, n, lg) == DN_ERR_ARG && strstr(dn_last_error(), "stage"));
        CHECK(dn_net_backward(net, lg) == DN_ERR_ARG);
        CHECK(dn_net_set_first_trainable(net, 6) == DN_ERR_ARG);
    }
    dn_net_free(net);
    net = NULL;
    CHECK(dn_net_new(m, 7, n, h, w, 1, &net) == DN_ERR_ARG && net == NULL);
    CHECK(dn_net_new(m, 0, 0, h, w, 1, &net) == DN_ERR_ARG);
    CHECK(dn_net_new(m, 0, 1, 4, 4, 1, &net) == DN_ERR_ARG);
    /* batch of 1 image: 2x2 layer4 still gives 4 values per channel; fine */
    CHECK(dn_net_new(m, 0, 1, h, w, 1, &net) == DN_OK);
    dn_net_free(net);
    dn_model_free(m);
    fixture_free(&common);
}

TEST(loss_bad_input) {
    float z[6] = {1, 2, 3, 0, 0, NAN}, d[6], loss;
    int lab[2] = {0, 3};
    CHECK(dn_ce_loss(z, lab, 2, 3, NULL, 0, &loss, d) == DN_ERR_ARG && strstr(dn_last_error(), "label 3"));
    lab[1] = 1;
    CHECK(dn_ce_loss(z, lab, 2, 3, NULL, 0, &loss, d) == DN_ERR_NUMERIC);
    z[5] = 0;
    CHECK(dn_ce_loss(z, lab, 2, 3, NULL, 1.5f, &loss, d) == DN_ERR_ARG);
    float wz[3] = {0, 0, 1};
    CHECK(dn_ce_loss(z, lab, 2, 3, wz, 0, &loss, d) == DN_ERR_ARG);
    float wneg[3] = {1, -1, 1};
    CHECK(dn_ce_loss(z, lab, 2, 3, wneg, 0, &loss, d) == DN_ERR_ARG);
    CHECK(dn_ce_loss(z, lab, 2, 3, NULL, 0, &loss, d) == DN_OK && isfinite(loss));
    dn_sched bad = {DN_SCHED_COSINE, 0.1f, 0, 0, 0, 0, 0, 0};
    CHECK(dn_sched_check(&bad) == DN_ERR_ARG && strstr(dn_last_error(), "t_max"));
    dn_sched_kind k;
    CHECK(dn_sched_parse_kind("exp", &k) == DN_ERR_ARG);
}

/* ------------------------------------------------------------ optimizer checkpoint */
static void fake_grads(float *g, int n, int step) {
    for (int i = 0; i < n; i++) g[i] = sinf(0.7f * i + 1.3f * step) * (i % 3 == 0 ? 1e-3f : 1.f);
}

static void optim_roundtrip(dn_optim_kind kind) {
    enum { N1 = 37, N2 = 5 };
    float w[2][N1 + N2], g[N1 + N2];
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < N1 + N2; i++) w[r][i] = cosf(0.3f * i);
    dn_param p[2][2];
    for (int r = 0; r < 2; r++) {
        p[r][0] = (dn_param){"a.weight", w[r], g, N1, DN_PARAM_BACKBONE, 0};
        p[r][1] = (dn_param){"fc.bias", w[r] + N1, g + N1, N2, DN_PARAM_HEAD, 1};
    }
    dn_optim_cfg c;
    dn_optim_cfg_default(&c, kind);
    c.weight_decay = 0.01f;
    c.nesterov = kind == DN_OPT_SGD;
    c.group_lr_mult[0] = 0.1f;
    dn_optim *a = NULL, *b = NULL, *b2 = NULL;
    dn_pool *pool = dn_pool_new(2);
    CHECK(dn_optim_new(&c, p[0], 2, &a) == DN_OK);
    CHECK(dn_optim_new(&c, p[1], 2, &b) == DN_OK);
    if (!a || !b) goto done;
    dn_optim_set_pool(a, pool); /* threaded vs single-threaded must agree bit for bit */
    dn_tensors st = {0};
    for (int s = 0; s < 5; s++) {
        fake_grads(g, N1 + N2, s);
        CHECK(dn_optim_step(a, 0.05f) == DN_OK);
        if (s < 2) CHECK(dn_optim_step(b, 0.05f) == DN_OK);
        if (s == 1) {
            CHECK(dn_optim_state_save(b, &st) == DN_OK);
            dn_optim_free(b);
            b = NULL;
            CHECK(dn_optim_new(&c, p[1], 2, &b2) == DN_OK);
            CHECK_MSG(dn_optim_state_load(b2, &st) == DN_OK, "%s", dn_last_error());
            CHECK(dn_optim_steps(b2) == 2);
        }
        if (s >= 2 && b2) CHECK(dn_optim_step(b2, 0.05f) == DN_OK);
    }
    CHECK_MSG(!memcmp(w[0], w[1], sizeof w[0]), "resumed single-threaded optimizer diverged from uninterrupted threaded run");
    /* wrong kind and damaged state are refused by name */
    dn_optim_cfg other;
    dn_optim_cfg_default(&other, kind == DN_OPT_SGD ? DN_OPT_ADAMW : DN_OPT_SGD);
    dn_optim *o = NULL;
    CHECK(dn_optim_new(&other, p[1], 2, &o) == DN_OK);
    if (o) CHECK(dn_optim_state_load(o, &st) == DN_ERR_FORMAT);
    dn_optim_free(o);
    dn_tensor *t = dn_tensors_find(&st, kind == DN_OPT_SGD ? "optim.a.weight.momentum_buffer" : "optim.a.weight.exp_avg_sq");
    CHECK(t != NULL);
    if (t && b2) {
        t->shape[0] = 3;
        CHECK(dn_optim_state_load(b2, &st) == DN_ERR_SHAPE && strstr(dn_last_error(), "optim.a.weight"));
    }
    dn_tensors_free(&st);
done:
    dn_optim_free(a); dn_optim_free(b); dn_optim_free(b2);
    dn_pool_free(pool);
}

TEST(sgd_state_save_restore) { optim_roundtrip(DN_OPT_SGD); }
TEST(adamw_state_save_restore) { optim_roundtrip(DN_OPT_ADAMW); }

TEST(optim_bad_config) {
    dn_optim_cfg c;
    dn_optim_cfg_default(&c, DN_OPT_SGD);
    c.momentum = 0;
    c.nesterov = 1;
    dn_optim *o = NULL;
    CHECK(dn_optim_new(&c, NULL, 0, &o) == DN_ERR_ARG && o == NULL && strstr(dn_last_error(), "nesterov"));
    dn_optim_cfg_default(&c, DN_OPT_ADAMW);
    c.beta2 = 1.0f;
    CHECK(dn_optim_new(&c, NULL, 0, &o) == DN_ERR_ARG && strstr(dn_last_error(), "betas"));
}

TEST(sgd_nesterov_wd_freeze_none) { run_case("sgd_none", 1); }
TEST(sgd_nesterov_wd_freeze_none_2threads) { run_case("sgd_none", 2); }
TEST(adamw_freeze_layer3_warmup_cosine) { run_case("adamw_layer3", 2); }
/* Winograd forward / data gradient (the default for large 3x3 stride-1 convs,
 * forced here on the small fixture) must stay within the same tolerance. */
TEST(sgd_nesterov_wd_freeze_none_winograd) {
    setenv("DN_TRAIN_CONV", "winograd", 1);
    run_case("sgd_none", 2);
    unsetenv("DN_TRAIN_CONV");
}
TEST(sgd_head_only_steplr) { run_case("head_only", 1); }
TEST(label_smoothing_class_weights_freeze_layer2) { run_case("smooth_weights", 2); }

int main(void) {
    RUN(sgd_nesterov_wd_freeze_none);
    RUN(sgd_nesterov_wd_freeze_none_2threads);
    RUN(adamw_freeze_layer3_warmup_cosine);
    RUN(sgd_nesterov_wd_freeze_none_winograd);
    RUN(sgd_head_only_steplr);
    RUN(label_smoothing_class_weights_freeze_layer2);
    RUN(schedules_match_torch);
    RUN(forward_from_cached_layer3);
    RUN(forward_from_pooled_features);
    RUN(forward_from_cached_layer2_with_frozen_layer3);
    RUN(eval_forward_matches_engine_and_keeps_state);
    RUN(eval_operators_follow_weight_updates);
    RUN(odd_input_size);
    RUN(freeze_specs_and_staging);
    RUN(loss_bad_input);
    RUN(sgd_state_save_restore);
    RUN(adamw_state_save_restore);
    RUN(optim_bad_config);
    dn_tensors_free(&g_init);
    return REPORT();
}
