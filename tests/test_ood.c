/* Unknown-input detection (src/ood): metrics, scores against brute-force
 * references, fit on separable synthetic features, model-file round trip on the
 * narrow fixture model tests/fixtures/resnet/r18n.pth, classify decisions, bad input. */
#include "harness.h"
#include "core/core.h"
#include "io/safetensors.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "ood/ood.h"
#include <unistd.h>

#define MODEL "tests/fixtures/resnet/r18n.pth"

TEST(auroc_fpr) {
    float in[4] = {0.1f, 0.2f, 0.3f, 0.4f}, out[3] = {0.5f, 0.6f, 0.7f};
    CHECK_NEAR(dn_ood_auroc(in, 4, out, 3), 1.0, 1e-12);
    CHECK_NEAR(dn_ood_auroc(out, 3, in, 4), 0.0, 1e-12);
    CHECK_NEAR(dn_ood_auroc(in, 4, in, 4), 0.5, 1e-12); /* ties count half */
    float o2[2] = {0.25f, 0.35f};                      /* beats 2 of 4, 3 of 4 -> 5/8 */
    CHECK_NEAR(dn_ood_auroc(in, 4, o2, 2), 5.0 / 8, 1e-12);
    CHECK_NEAR(dn_ood_fpr_at_tpr(in, 4, out, 3, 0.95), 0.0, 1e-12);
    CHECK_NEAR(dn_ood_fpr_at_tpr(in, 4, o2, 2, 0.5), 0.0, 1e-12); /* threshold 0.2 */
    CHECK_NEAR(dn_ood_fpr_at_tpr(in, 4, o2, 2, 0.75), 0.5, 1e-12); /* threshold 0.3 */
    CHECK_NEAR(dn_ood_quantile(in, 4, 0.95), 0.4, 1e-7);
    CHECK(isnan(dn_ood_auroc(in, 0, out, 3)));
}

/* A headed fake model: only the fields dn_ood_fit reads. */
typedef struct { dn_model m; char *names[3]; } fake;
static void fake_init(fake *f, int d, int C, float *w, float *b) {
    memset(f, 0, sizeof *f);
    static char n0[] = "a", n1[] = "b", n2[] = "c";
    f->names[0] = n0; f->names[1] = n1; f->names[2] = n2;
    f->m.feat_dim = d; f->m.num_classes = C; f->m.fc_w = w; f->m.fc_b = b; f->m.class_names = f->names;
}

/* three Gaussian clusters in d dims; OOD = a fourth cluster elsewhere */
static void clusters(dn_rng *r, int d, int n, float *x, int *y, int ood) {
    for (int i = 0; i < n; i++) {
        int c = ood ? 3 : i % 3;
        if (y) y[i] = c;
        for (int j = 0; j < d; j++) x[(size_t)i * d + j] = (j % 4 == c ? 4.0f : 0.0f) + 0.5f * dn_rng_normal(r) + 1.0f;
    }
}

TEST(fit_separates_and_matches_reference) {
    enum { D = 16, C = 3, NF = 300, NV = 200, NO = 100 };
    float w[C * D], b[C] = {0.1f, -0.2f, 0.05f};
    for (int c = 0; c < C; c++)
        for (int j = 0; j < D; j++) w[c * D + j] = j % 4 == c ? 1.0f : 0.0f;
    fake f;
    fake_init(&f, D, C, w, b);
    dn_rng r;
    dn_rng_seed(&r, 7);
    static float xf[NF * D], xv[NV * D], xo[NO * D];
    static int yf[NF];
    clusters(&r, D, NF, xf, yf, 0);
    clusters(&r, D, NV, xv, NULL, 0);
    clusters(&r, D, NO, xo, NULL, 1);
    dn_ood_cfg cfg;
    dn_ood_cfg_default(&cfg);
    cfg.bank = 120; /* a subset */
    cfg.k = 3;
    dn_ood *o = NULL;
    CHECK(dn_ood_fit(&f.m, xf, yf, NF, xv, NV, &cfg, &o) == DN_OK && o);
    if (!o) return;
    CHECK(o->nbank == 120 && o->k == 3 && o->kind == DN_OOD_COMBO);
    /* bank rows have unit length */
    for (int i = 0; i < o->nbank; i++) {
        double s = 0;
        for (int j = 0; j < D; j++) s += (double)o->bank[i * D + j] * o->bank[i * D + j];
        CHECK_NEAR(s, 1.0, 1e-5);
    }
    static float lv[NV * C], lo[NO * C], sv[NV * DN_OOD_NKINDS], so[NO * DN_OOD_NKINDS];
    for (int i = 0; i < NV + NO; i++) {
        const float *x = i < NV ? xv + (size_t)i * D : xo + (size_t)(i - NV) * D;
        float *l = i < NV ? lv + (size_t)i * C : lo + (size_t)(i - NV) * C;
        for (int c = 0; c < C; c++) {
            double s = b[c];
            for (int j = 0; j < D; j++) s += (double)w[c * D + j] * x[j];
            l[c] = (float)s;
        }
    }
    CHECK(dn_ood_scores(o, xv, lv, NV, sv) == DN_OK);
    CHECK(dn_ood_scores(o, xo, lo, NO, so) == DN_OK);
    /* a few images take the streaming matrix-vector path, batches the GEMM: same scores */
    float few[3 * DN_OOD_NKINDS];
    CHECK(dn_ood_scores(o, xv, lv, 3, few) == DN_OK);
    for (int i = 0; i < 3 * DN_OOD_NKINDS; i++) CHECK_NEAR(few[i], sv[i], 1e-4 * (fabs(sv[i]) + 1));
    /* threshold accepts 95% of validation */
    int acc = 0;
    for (int i = 0; i < NV; i++) acc += sv[i * DN_OOD_NKINDS + DN_OOD_COMBO] <= o->threshold;
    CHECK_MSG(acc == 190, "accepted %d of 200", acc);
    float a[NV], bb[NO];
    for (int k = 0; k < DN_OOD_NKINDS; k++) {
        if (k == DN_OOD_ENERGY) continue; /* a far cluster can have large logits: energy is not expected to catch it */
        for (int i = 0; i < NV; i++) a[i] = sv[i * DN_OOD_NKINDS + k];
        for (int i = 0; i < NO; i++) bb[i] = so[i * DN_OOD_NKINDS + k];
        double au = dn_ood_auroc(a, NV, bb, NO);
        CHECK_MSG(au > 0.99, "%s AUROC %.4f", dn_ood_kind_name(k), au);
    }
    /* brute-force references for one OOD row */
    const float *z = xo;
    float zn[D];
    double nz = 0;
    for (int j = 0; j < D; j++) nz += (double)z[j] * z[j];
    for (int j = 0; j < D; j++) zn[j] = (float)(z[j] / sqrt(nz));
    double sims[200];
    for (int i = 0; i < o->nbank; i++) {
        double s = 0;
        for (int j = 0; j < D; j++) s += (double)zn[j] * o->bank[i * D + j];
        sims[i] = s;
    }
    for (int pass = 0; pass < 2; pass++) /* partial sort: 3rd largest */
        for (int i = 0; i < o->nbank; i++)
            for (int t = i + 1; t < o->nbank; t++)
                if (sims[t] > sims[i]) { double q = sims[i]; sims[i] = sims[t]; sims[t] = q; }
    CHECK_NEAR(so[DN_OOD_KNN], 1.0 - sims[2], 1e-5);
    double mx = lo[0] > lo[1] ? lo[0] : lo[1];
    mx = mx > lo[2] ? mx : lo[2];
    CHECK_NEAR(so[DN_OOD_ENERGY], -(mx + log(exp(lo[0] - mx) + exp(lo[1] - mx) + exp(lo[2] - mx))), 1e-5);
    double best = INFINITY, md0 = 0;
    for (int c = -1; c < C; c++) {
        const float *mu = c < 0 ? o->mu0 : o->mu + c * D;
        const float *P = c < 0 ? o->prec0 : o->prec;
        double q = 0;
        for (int i = 0; i < D; i++)
            for (int j = 0; j < D; j++) q += (z[i] - mu[i]) * (double)P[i * D + j] * (z[j] - mu[j]);
        if (c < 0) md0 = q;
        else if (q < best) best = q;
    }
    CHECK_NEAR(so[DN_OOD_RMD], best - md0, 1e-3 * (fabs(best - md0) + 1));
    dn_ood_free(o);
}

TEST(fit_bad_input) {
    float w[2 * 4] = {0}, b[2] = {0}, x[8 * 4] = {0};
    int y[8] = {0, 1, 0, 1, 0, 1, 0, 1}, ybad[8] = {0, 0, 0, 0, 0, 0, 0, 0}, yrange[8] = {0, 1, 2, 1, 0, 1, 0, 1};
    fake f;
    fake_init(&f, 4, 2, w, b);
    dn_ood *o = NULL;
    CHECK(dn_ood_fit(&f.m, x, y, 8, x, 0, NULL, &o) == DN_ERR_ARG && !o);
    CHECK(strstr(dn_last_error(), "validation"));
    CHECK(dn_ood_fit(&f.m, x, ybad, 8, x, 2, NULL, &o) == DN_ERR_ARG && strstr(dn_last_error(), "class 'b' has no fit images"));
    CHECK(dn_ood_fit(&f.m, x, yrange, 8, x, 2, NULL, &o) == DN_ERR_ARG && strstr(dn_last_error(), "label 2"));
    dn_ood_cfg c;
    dn_ood_cfg_default(&c);
    c.k = 0;
    CHECK(dn_ood_fit(&f.m, x, y, 8, x, 2, &c, &o) == DN_ERR_ARG);
    dn_ood_cfg_default(&c);
    c.tpr = 1.5f;
    CHECK(dn_ood_fit(&f.m, x, y, 8, x, 2, &c, &o) == DN_ERR_ARG);
    CHECK(dn_ood_kind_parse("knn") == DN_OOD_KNN && dn_ood_kind_parse("combo") == DN_OOD_COMBO && dn_ood_kind_parse("x") == -1);
    CHECK(!strcmp(dn_decision_name(DN_DECISION_UNKNOWN), "unknown") && !strcmp(dn_decision_name(9), "?"));
}

/* features of random images through the fixture model */
static int fixture_feats(dn_model *m, int n, uint64_t seed, float shift, float *feat) {
    dn_session *s;
    if (dn_session_new(m, 4, 1, &s)) return -1;
    int hw = m->pp.crop;
    float *x = malloc((size_t)3 * hw * hw * sizeof(float));
    dn_rng r;
    dn_rng_seed(&r, seed);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        for (int j = 0; j < 3 * hw * hw; j++) x[j] = dn_rng_normal(&r) + shift;
        rc = dn_session_features(s, x, 1, feat + (size_t)i * m->feat_dim) ? -1 : 0;
    }
    free(x);
    dn_session_free(s);
    return rc;
}

TEST(model_roundtrip_and_decisions) {
    dn_model *m = NULL;
    if (dn_model_load(MODEL, &m)) { CHECK_MSG(0, "%s", dn_last_error()); return; }
    m->pp.resize = 0;
    m->pp.crop = 32;
    int D = m->feat_dim, C = m->num_classes;
    enum { NF = 60, NV = 40 };
    float *ff = malloc(NF * D * sizeof(float)), *fv = malloc(NV * D * sizeof(float));
    int y[NF];
    CHECK(fixture_feats(m, NF, 1, 0, ff) == 0 && fixture_feats(m, NV, 2, 0, fv) == 0);
    for (int i = 0; i < NF; i++) y[i] = i % C;
    dn_ood *o = NULL;
    dn_ood_cfg cfg;
    dn_ood_cfg_default(&cfg);
    cfg.kind = DN_OOD_KNN;
    CHECK(dn_ood_fit(m, ff, y, NF, fv, NV, &cfg, &o) == DN_OK);
    m->ood = o;
    /* classify: decisions follow the threshold */
    dn_session *s;
    CHECK(dn_session_new(m, 2, 1, &s) == DN_OK);
    float *x = malloc(2 * 3 * 32 * 32 * sizeof(float));
    dn_rng r;
    dn_rng_seed(&r, 2); /* the same stream as the first two validation images */
    for (int j = 0; j < 3 * 32 * 32; j++) x[j] = dn_rng_normal(&r);
    for (int j = 0; j < 3 * 32 * 32; j++) x[3 * 32 * 32 + j] = 50.0f; /* saturated */
    dn_prediction p[2];
    CHECK(dn_session_classify_batch(s, x, 2, p, NULL) == DN_OK);
    float sc[DN_OOD_NKINDS], logit[64];
    CHECK(dn_session_forward(s, x, 1, logit) == DN_OK);
    CHECK(dn_ood_scores(o, fv, logit, 1, sc) == DN_OK);
    CHECK_NEAR(p[0].ood_score, sc[DN_OOD_KNN], 1e-5);
    CHECK(p[0].decision == (p[0].ood_score > o->threshold ? DN_DECISION_UNKNOWN : p[0].uncertain ? DN_DECISION_UNCERTAIN : DN_DECISION_ACCEPTED));
    CHECK_MSG(p[1].decision == DN_DECISION_UNKNOWN, "saturated input: score %g threshold %g", p[1].ood_score, o->threshold);
    /* save + load keeps the OOD data */
    char path[] = "/tmp/dn_test_ood_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CHECK(dn_model_save(m, path) == DN_OK);
    dn_model *m2 = NULL;
    CHECK(dn_model_load(path, &m2) == DN_OK && m2 && m2->ood);
    if (m2 && m2->ood) {
        CHECK(m2->ood->nbank == o->nbank && m2->ood->k == o->k && m2->ood->kind == DN_OOD_KNN);
        CHECK(m2->ood->threshold == o->threshold);
        CHECK(!memcmp(m2->ood->bank, o->bank, (size_t)o->nbank * D * sizeof(float)));
        dn_session *s2;
        dn_prediction q[2];
        CHECK(dn_session_new(m2, 2, 1, &s2) == DN_OK && dn_session_classify_batch(s2, x, 2, q, NULL) == DN_OK);
        CHECK(q[0].ood_score == p[0].ood_score && q[1].decision == p[1].decision);
        dn_session_free(s2);
        /* a clone carries it too */
        dn_model *c = NULL;
        CHECK(dn_model_clone(m2, &c) == DN_OK && c && c->ood && c->ood->threshold == o->threshold);
        dn_model_free(c);
    }
    dn_model_free(m2);
    /* damaged OOD records are refused with a message naming the file */
    dn_tensors ts = {0};
    dn_meta meta = {0};
    CHECK(dn_safetensors_load(path, &ts, &meta) == DN_OK);
    dn_meta_set(&meta, "ood", "{\"version\":1,\"score\":\"nope\"}");
    char bad[300];
    snprintf(bad, sizeof bad, "%s.bad", path);
    CHECK(dn_safetensors_save(bad, &ts, &meta) == DN_OK);
    CHECK(dn_model_load(bad, &m2) == DN_ERR_FORMAT && !m2 && strstr(dn_last_error(), bad));
    dn_meta_set(&meta, "ood", "{oops");
    CHECK(dn_safetensors_save(bad, &ts, &meta) == DN_OK);
    CHECK(dn_model_load(bad, &m2) == DN_ERR_FORMAT && strstr(dn_last_error(), "not valid JSON"));
    dn_tensors_free(&ts);
    dn_meta_free(&meta);
    unlink(bad);
    unlink(path);
    /* without OOD data: NAN score, decisions from confidence only */
    dn_ood_free(m->ood);
    m->ood = NULL;
    dn_session_free(s);
    CHECK(dn_session_new(m, 2, 1, &s) == DN_OK && dn_session_classify_batch(s, x, 2, p, NULL) == DN_OK);
    CHECK(isnan(p[0].ood_score) && p[1].decision != DN_DECISION_UNKNOWN);
    dn_session_free(s);
    free(x); free(ff); free(fv);
    dn_model_free(m);
}

int main(void) {
    RUN(auroc_fpr);
    RUN(fit_separates_and_matches_reference);
    RUN(fit_bad_input);
    RUN(model_roundtrip_and_decisions);
    return REPORT();
}
