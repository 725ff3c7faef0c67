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

/* The initial model from common fixture ("init/<torchvision name>"). */
static dn_model *load_init_model(const fixture *common) {
    dn_tensors ts = {0};
    const dn_json *arr = dn_json_get(common->meta, "tensors");
    for (size_t i = 0; i < dn_json_len(arr); i++) {
        const char *name = dn_json_str(dn_json_get(dn_json_at(arr, i), "name"), "");
        if (strncmp(name, "init/", 5)) continue;
        int64_t numel, shape[8];
        int nd;
        const float *d = fx_get(common, name, &numel, shape, &nd);
        if (!d) { dn_tensors_free(&ts); return NULL; }
        float *copy = malloc((size_t)(numel ? numel : 1) * sizeof(float));
        memcpy(copy, d, (size_t)numel * sizeof(float));
        if (dn_tensors_add(&ts, name + 5, nd, shape, copy)) { free(copy); dn_tensors_free(&ts); return NULL; }
    }
    dn_model *m = NULL;
    if (dn_model_from_tensors(&ts, 0, &m)) printf("  model: %s\n", dn_last_error());
    dn_tensors_free(&ts);
    return m;
}

typedef struct cmp_ctx {
    const fixture *want;     /* case fixture */
    const fixture *common;   /* for the init values */
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
        snprintf(key, sizeof key, "init/%s", name);
        const float *init = fx_get(c->common, key, &n, NULL, NULL);
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
            cmp_ctx c = {&fx, &common, step == 1 ? "step1/" : "step5/", 0, "", 0, 0, ""};
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

TEST(sgd_nesterov_wd_freeze_none) { run_case("sgd_none", 1); }
TEST(sgd_nesterov_wd_freeze_none_2threads) { run_case("sgd_none", 2); }
TEST(adamw_freeze_layer3_warmup_cosine) { run_case("adamw_layer3", 2); }
TEST(sgd_head_only_steplr) { run_case("head_only", 1); }
TEST(label_smoothing_class_weights_freeze_layer2) { run_case("smooth_weights", 2); }

int main(void) {
    RUN(sgd_nesterov_wd_freeze_none);
    RUN(sgd_nesterov_wd_freeze_none_2threads);
    RUN(adamw_freeze_layer3_warmup_cosine);
    RUN(sgd_head_only_steplr);
    RUN(label_smoothing_class_weights_freeze_layer2);
    return REPORT();
}
