/* Unknown-input detection (src/ood): metrics, scores against brute-force
 * references, fit on separable synthetic features, model-file round trip on the
 * narrow fixture model tests/fixtures/resnet/r18n.pth, classify decisions, bad input;
 * fp16 conversions (core/half.h) against the F16C instructions, the KNN kernels
 * (ood/knn.h) against their scalar specification on odd shapes, the fp16 bank in
 * the model file (F16 tensor, older F32 banks still load). */
#include "harness.h"
#include "core/core.h"
#include "io/safetensors.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "kernels/kernels.h"
#include "ood/knn.h"
#include "ood/ood.h"
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#endif

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
    /* bank rows have unit length, up to the fp16 storage: each value is rounded by at most
     * 2^-11 of itself, so the squared norm moves by at most ~2^-10 (1e-3) */
    for (int i = 0; i < o->nbank; i++) {
        double s = 0;
        for (int j = 0; j < D; j++) s += (double)dn_f16_to_f32(o->bank[i * D + j]) * dn_f16_to_f32(o->bank[i * D + j]);
        CHECK_NEAR(s, 1.0, 1e-3);
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
        for (int j = 0; j < D; j++) s += (double)zn[j] * dn_f16_to_f32(o->bank[i * D + j]);
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
        CHECK(!memcmp(m2->ood->bank, o->bank, (size_t)o->nbank * D * sizeof(uint16_t))); /* fp16 written and read exactly */
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
    m2 = NULL;
    /* the bank is an F16 tensor in the file; a file with an F32 bank (as written before) still loads,
     * its values rounded to the nearest fp16, and is exactly nbank x D x 2 bytes larger */
    {
        uint8_t *buf = NULL;
        size_t len = 0, len32 = 0;
        CHECK(dn_read_file(path, (size_t)1 << 30, &buf, &len) == DN_OK);
        uint64_t hl = 0;
        for (int i = 7; buf && i >= 0; i--) hl = hl << 8 | buf[i];
        const char *f16 = "\"ood.bank\":{\"dtype\":\"F16\"";
        CHECK(buf && hl < len && memmem(buf + 8, hl, f16, strlen(f16)));
        free(buf);
        dn_tensors t2 = {0};
        dn_meta mt2 = {0};
        CHECK(dn_safetensors_load(path, &t2, &mt2) == DN_OK); /* every tensor float, f16 flags 0: saved as F32 */
        char old[300];
        snprintf(old, sizeof old, "%s.f32", path);
        dn_tensor *tb = dn_tensors_find(&t2, "ood.bank");
        CHECK(tb && tb->ndim == 2 && tb->shape[0] == o->nbank && tb->shape[1] == D);
        if (tb) {
            float v0 = tb->data[0], v1 = tb->data[1]; /* fp16 values; the next half away from zero */
            float up0 = dn_f16_to_f32((uint16_t)(dn_f32_to_f16(v0) + 1)), up1 = dn_f16_to_f32((uint16_t)(dn_f32_to_f16(v1) + 1));
            CHECK(dn_safetensors_save(old, &t2, &mt2) == DN_OK);
            CHECK(dn_read_file(old, (size_t)1 << 30, &buf, &len32) == DN_OK);
            free(buf);
            CHECK_MSG(len32 - len == (size_t)o->nbank * D * 2, "F32 file %zu bytes, F16 file %zu", len32, len);
            CHECK(dn_model_load(old, &m2) == DN_OK && m2 && m2->ood);
            if (m2 && m2->ood) CHECK(!memcmp(m2->ood->bank, o->bank, (size_t)o->nbank * D * sizeof(uint16_t)));
            dn_model_free(m2);
            m2 = NULL;
            tb->data[0] = v0 + 0.25f * (up0 - v0); /* off the fp16 grid: rounded to the nearest half */
            tb->data[1] = v1 + 0.75f * (up1 - v1);
            CHECK(dn_safetensors_save(old, &t2, &mt2) == DN_OK);
            CHECK(dn_model_load(old, &m2) == DN_OK && m2 && m2->ood);
            if (m2 && m2->ood) {
                CHECK(m2->ood->bank[0] == o->bank[0] && m2->ood->bank[1] == (uint16_t)(o->bank[1] + 1));
                CHECK(!memcmp(m2->ood->bank + 2, o->bank + 2, ((size_t)o->nbank * D - 2) * sizeof(uint16_t)));
            }
            dn_model_free(m2);
            m2 = NULL;
            tb->data[0] = 1e6f; /* not representable in fp16: refused, one line naming the file */
            CHECK(dn_safetensors_save(old, &t2, &mt2) == DN_OK);
            CHECK(dn_model_load(old, &m2) == DN_ERR_FORMAT && !m2 && strstr(dn_last_error(), old) &&
                  strstr(dn_last_error(), "fp16 range"));
        }
        dn_tensors_free(&t2);
        dn_meta_free(&mt2);
        unlink(old);
    }
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

/* ------------------------------------------------------------ fp16 and the KNN kernels */

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("f16c"))) static float hw_h2f(uint16_t h) { return _cvtsh_ss(h); }
__attribute__((target("f16c"))) static uint16_t hw_f2h(float f) { return (uint16_t)_cvtss_sh(f, 0); /* nearest even */ }
#endif

TEST(half_conversions) {
    for (uint32_t h = 0; h < 65536; h++) { /* every half widens exactly and comes back (a NaN stays a NaN) */
        float f = dn_f16_to_f32((uint16_t)h);
        uint16_t b = dn_f32_to_f16(f);
        int ok = isnan(f) ? ((h & 0x7c00) == 0x7c00 && (h & 0x3ff) && (b & 0x7c00) == 0x7c00 && (b & 0x3ff)) : b == h;
        if (!ok) { CHECK_MSG(0, "half 0x%04x -> %g -> 0x%04x", (unsigned)h, f, b); break; }
    }
    CHECK(dn_f32_to_f16(1.0f) == 0x3c00 && dn_f16_to_f32(0x3c00) == 1.0f);
    CHECK(dn_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00); /* halfway: to even (down) */
    CHECK(dn_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02); /* halfway: to even (up) */
    CHECK(dn_f32_to_f16(1.0f + 1.01f / 2048) == 0x3c01);
    CHECK(dn_f32_to_f16(65504.0f) == 0x7bff && dn_f32_to_f16(65519.0f) == 0x7bff && dn_f32_to_f16(65520.0f) == 0x7c00);
    CHECK(dn_f32_to_f16(-INFINITY) == 0xfc00 && dn_f16_to_f32(0x7c00) == INFINITY);
    CHECK(dn_f32_to_f16(ldexpf(1, -24)) == 0x0001 && dn_f32_to_f16(ldexpf(1, -25)) == 0x0000 &&
          dn_f32_to_f16(ldexpf(1.5f, -25)) == 0x0001 && dn_f32_to_f16(ldexpf(3, -25)) == 0x0002);
    CHECK(dn_f32_to_f16(ldexpf(1023.5f, -24)) == 0x0400); /* the largest subnormal rounds up into the normals */
    CHECK(dn_f16_to_f32(0x0001) == ldexpf(1, -24) && dn_f16_to_f32(0x83ff) == -ldexpf(1023, -24));
    CHECK(dn_f32_to_f16(-2.0f) == 0xc000 && dn_f32_to_f16(-0.0f) == 0x8000);
}

TEST(half_vs_f16c) {
#if defined(__x86_64__) || defined(__i386__)
    unsigned ca, cb, cc, cd; /* F16C: CPUID.1:ECX bit 29 (clang 14 has no __builtin_cpu_supports("f16c")) */
    if (!__get_cpuid(1, &ca, &cb, &cc, &cd) || !(cc & bit_F16C))
        SKIP("no F16C on this CPU: fp16 conversions checked against hand-picked values only");
    int bad = 0;
    for (uint32_t h = 0; h < 65536 && bad < 3; h++) {
        float a = dn_f16_to_f32((uint16_t)h), b = hw_h2f((uint16_t)h);
        if (memcmp(&a, &b, 4)) { bad++; CHECK_MSG(0, "vcvtph2ps 0x%04x: %a vs %a", (unsigned)h, a, b); }
    }
    dn_rng r;
    dn_rng_seed(&r, 11);
    for (int i = 0; i < 4000000 && bad < 3; i++) {
        uint32_t u = (uint32_t)dn_rng_next(&r);
        if (i & 1) u = (u & 0x807fffffu) | (uint32_t)(100 + (u >> 8) % 46) << 23; /* exponents around the fp16 range */
        float f;
        memcpy(&f, &u, 4);
        uint16_t a = dn_f32_to_f16(f), b = hw_f2h(f);
        if (a != b) { bad++; CHECK_MSG(0, "vcvtps2ph %a (0x%08x): 0x%04x vs 0x%04x", f, u, a, b); }
    }
#else
    SKIP("not an x86 CPU: no F16C to compare with");
#endif
}

static void rand_unit(dn_rng *r, int n, int d, float *x) {
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < d; j++) { x[(size_t)i * d + j] = dn_rng_normal(r); s += (double)x[(size_t)i * d + j] * x[(size_t)i * d + j]; }
        for (int j = 0; j < d; j++) x[(size_t)i * d + j] = (float)(x[(size_t)i * d + j] / sqrt(s));
    }
}

static const dn_isa knn_isas[3] = {DN_ISA_SCALAR, DN_ISA_AVX2, DN_ISA_AVX512};

TEST(knn_spec_by_hand) {
    /* dots of q = (1, 0.5) with the rows: 1, 0.5, 0.75, 1 (a repeat), -1 -> sorted 1, 1, 0.75, 0.5, -1 */
    const float rows[5][2] = {{1, 0}, {0, 1}, {0.5f, 0.5f}, {1, 0}, {-1, 0}};
    uint16_t bank[10];
    for (int i = 0; i < 10; i++) bank[i] = dn_f32_to_f16(rows[i / 2][i % 2]);
    const float q[2] = {1, 0.5f};
    const int ks[6] = {1, 2, 3, 4, 5, 64};
    const float want[6] = {1, 1, 0.75f, 0.5f, -1, -1}; /* k > nbank: the nbank-th, the smallest */
    for (int t = 0; t < 6; t++) {
        float a = NAN, b = NAN;
        CHECK(dn_ood_knn_ref(bank, 5, 2, q, 1, ks[t], &a) == DN_OK && a == want[t]);
        for (int s = 0; s < 3; s++) {
            dn_kernels_force_isa(knn_isas[s]);
            CHECK_MSG(dn_ood_knn(bank, 5, 2, q, 1, ks[t], NULL, &b) == DN_OK && b == want[t], "k=%d %s: %g", ks[t], dn_ood_knn_isa(), b);
        }
        dn_kernels_force_isa(DN_ISA_AUTO);
    }
    float o;
    CHECK(dn_ood_knn(bank, 5, 2, q, 1, 0, NULL, &o) == DN_ERR_ARG && strstr(dn_last_error(), "k 0 outside 1..64"));
    CHECK(dn_ood_knn_ref(bank, 5, 2, q, 1, 65, &o) == DN_ERR_ARG);
    CHECK(dn_ood_knn(bank, 0, 2, q, 1, 1, NULL, &o) == DN_ERR_ARG && dn_ood_knn(bank, 5, 0, q, 1, 1, NULL, &o) == DN_ERR_ARG);
    CHECK(dn_ood_knn(bank, 5, 2, q, 0, 1, NULL, NULL) == DN_OK); /* no queries: nothing to do */
}

/* The fast path against the specification on odd shapes, for every ISA this CPU has,
 * with and without a 2-thread pool. Tolerance 1e-5 (unit rows and queries): the fast path
 * sums in float in 16 (8) lanes, the reference in double; the k-th largest value moves by
 * at most the largest error of a single dot (~(dim/16 + 4) * 2^-24 < 3e-6 for dim 1001).
 * With and without the pool the results must be identical (same operations per dot). */
TEST(knn_fast_matches_ref_odd_shapes) {
    static const struct { int nbank, dim, nq, k; } sh[] = {
        {1, 512, 1, 1},    {1, 512, 3, 5},     {7, 512, 3, 5},    {7, 37, 17, 64},   {7, 15, 1, 3},
        {1001, 512, 17, 5}, {1001, 37, 3, 1},  {1001, 513, 1, 5}, {1001, 1001, 5, 9}, {10007, 512, 1, 5},
        {10007, 512, 17, 5}, {10007, 37, 3, 64}};
    dn_pool *pool = dn_pool_new(2);
    CHECK(pool != NULL);
    dn_rng r;
    dn_rng_seed(&r, 5);
    char seen[64] = "";
    for (size_t t = 0; t < sizeof sh / sizeof sh[0]; t++) {
        int nb = sh[t].nbank, d = sh[t].dim, nq = sh[t].nq, k = sh[t].k;
        float *bf = malloc((size_t)nb * d * sizeof(float)), *q = malloc((size_t)nq * d * sizeof(float));
        uint16_t *bank = malloc((size_t)nb * d * sizeof(uint16_t));
        float ref[17], fast[17], pooled[17];
        rand_unit(&r, nb, d, bf);
        rand_unit(&r, nq, d, q);
        if (nb >= 7) memcpy(bf + (size_t)(nb - 1) * d, bf, (size_t)d * sizeof(float)); /* a repeated row */
        if (nq >= 3 && nb >= 3) memcpy(q + (size_t)2 * d, bf + (size_t)2 * d, (size_t)d * sizeof(float)); /* a query in the bank */
        for (size_t i = 0; i < (size_t)nb * d; i++) bank[i] = dn_f32_to_f16(bf[i]);
        CHECK(dn_ood_knn_ref(bank, nb, d, q, nq, k, ref) == DN_OK);
        if (nq >= 3 && nb >= 3 && k == 1) CHECK_NEAR(ref[2], 1.0, 2e-3); /* itself, up to fp16 rounding */
        for (int s = 0; s < 3; s++) {
            dn_kernels_force_isa(knn_isas[s]);
            const char *isa = dn_ood_knn_isa();
            if (!strstr(seen, isa)) { strcat(seen, " "); strcat(seen, isa); }
            CHECK(dn_ood_knn(bank, nb, d, q, nq, k, NULL, fast) == DN_OK);
            CHECK(dn_ood_knn(bank, nb, d, q, nq, k, pool, pooled) == DN_OK);
            for (int i = 0; i < nq; i++) {
                CHECK_MSG(fabsf(fast[i] - ref[i]) <= 1e-5f, "%s nbank %d dim %d batch %d k %d query %d: %.9g vs ref %.9g", isa, nb, d,
                          nq, k, i, fast[i], ref[i]);
                CHECK_MSG(pooled[i] == fast[i], "%s nbank %d dim %d: 2 threads %.9g vs 1 %.9g", isa, nb, d, pooled[i], fast[i]);
            }
        }
        dn_kernels_force_isa(DN_ISA_AUTO);
        free(bf); free(q); free(bank);
    }
    printf("  knn kernels compared:%s\n", seen);
    dn_pool_free(pool);
}

/* The knn score of an image whose features are in the bank is ~0 (k = 1), up to the fp16 rows. */
TEST(bank_row_scores_zero) {
    enum { D = 64, C = 3, NF = 150, NV = 30 };
    float w[C * D] = {0}, b[C] = {0};
    for (int c = 0; c < C; c++) w[c * D + c] = 1;
    fake f;
    fake_init(&f, D, C, w, b);
    dn_rng r;
    dn_rng_seed(&r, 3);
    static float xf[NF * D], xv[NV * D], lf[NF * C], sc[NF * DN_OOD_NKINDS];
    static int y[NF];
    clusters(&r, D, NF, xf, y, 0);
    clusters(&r, D, NV, xv, NULL, 0);
    dn_ood_cfg cfg;
    dn_ood_cfg_default(&cfg);
    cfg.k = 1;
    dn_ood *o = NULL;
    CHECK(dn_ood_fit(&f.m, xf, y, NF, xv, NV, &cfg, &o) == DN_OK && o && o->nbank == NF);
    if (!o) return;
    dn_ood_logits(&f.m, xf, NF, lf);
    CHECK(dn_ood_scores(o, xf, lf, NF, sc) == DN_OK);
    float worst = 0;
    for (int i = 0; i < NF; i++) worst = fmaxf(worst, fabsf(sc[i * DN_OOD_NKINDS + DN_OOD_KNN]));
    CHECK_MSG(worst < 1e-3f, "largest knn score of a bank row: %g", worst);
    dn_ood_free(o);
}

int main(void) {
    RUN(auroc_fpr);
    RUN(fit_separates_and_matches_reference);
    RUN(fit_bad_input);
    RUN(model_roundtrip_and_decisions);
    RUN(half_conversions);
    RUN(half_vs_f16c);
    RUN(knn_spec_by_hand);
    RUN(knn_fast_matches_ref_odd_shapes);
    RUN(bank_row_scores_zero);
    return REPORT();
}
