/* Metrics against hand-computed cases (sklearn conventions, zero_division=0). */
#include "core/core.h"
#include "eval/metrics.h"
#include "eval/quality.h"
#include "nn/model.h"
#include "harness.h"

TEST(confusion_and_f1) {
    int yt[] = {0, 0, 1, 1, 2, 2};
    int yp[] = {0, 1, 1, 1, 0, 2};
    dn_eval_metrics m;
    CHECK(dn_eval_metrics_compute(3, 6, yt, NULL, yp, 1, &m) == DN_OK);
    int64_t cm[9] = {1, 1, 0, 0, 2, 0, 1, 0, 1};
    for (int i = 0; i < 9; i++) CHECK(m.cm[i] == cm[i]);
    CHECK_NEAR(m.accuracy, 4.0 / 6, 1e-12);
    CHECK_NEAR(m.precision[0], 0.5, 1e-12);
    CHECK_NEAR(m.recall[0], 0.5, 1e-12);
    CHECK_NEAR(m.precision[1], 2.0 / 3, 1e-12);
    CHECK_NEAR(m.recall[1], 1.0, 1e-12);
    CHECK_NEAR(m.f1[1], 0.8, 1e-12);
    CHECK_NEAR(m.f1[2], 2.0 / 3, 1e-12);
    CHECK_NEAR(m.macro_f1, (0.5 + 0.8 + 2.0 / 3) / 3, 1e-12);
    CHECK_NEAR(m.weighted_f1, (0.5 + 0.8 + 2.0 / 3) / 3, 1e-12);
    CHECK_NEAR(m.macro_precision, (0.5 + 2.0 / 3 + 1) / 3, 1e-12);
    CHECK(m.support[0] == 2 && m.support[1] == 2 && m.support[2] == 2);
    CHECK(!m.has_probs);
    dn_eval_metrics_free(&m);
}

TEST(zero_support_like_sklearn) {
    /* class 2 predicted but never true; class 3 neither (excluded from macro) */
    int yt[] = {0, 0, 1};
    int yp[] = {0, 2, 1};
    dn_eval_metrics m;
    CHECK(dn_eval_metrics_compute(4, 3, yt, NULL, yp, 1, &m) == DN_OK);
    CHECK_NEAR(m.precision[2], 0, 0);
    CHECK_NEAR(m.recall[2], 0, 0);
    CHECK_NEAR(m.f1[2], 0, 0);
    CHECK_NEAR(m.f1[0], 2.0 / 3, 1e-12);
    /* sklearn f1_score(average='macro', zero_division=0) = 0.5555... */
    CHECK_NEAR(m.macro_f1, (2.0 / 3 + 1 + 0) / 3, 1e-12);
    /* weighted: (2/3*2 + 1*1 + 0*0) / 3 */
    CHECK_NEAR(m.weighted_f1, 7.0 / 9, 1e-12);
    CHECK_NEAR(m.macro_precision, (1 + 1 + 0) / 3.0, 1e-12);
    dn_eval_metrics_free(&m);
}

TEST(ece_and_topk) {
    /* 2 classes; bins of width 1/15, values chosen away from bin edges. */
    float p[] = {0.95f, 0.05f, 0.85f, 0.15f, 0.38f, 0.62f, 0.3f, 0.7f, 0.96f, 0.04f, 0.94f, 0.06f};
    int yt[] = {0, 1, 1, 0, 0, 1};
    dn_eval_metrics m;
    CHECK(dn_eval_metrics_compute(2, 6, yt, p, NULL, 1, &m) == DN_OK);
    CHECK(m.has_probs);
    CHECK_NEAR(m.accuracy, 3.0 / 6, 1e-12);
    /* bin 14: {0.95 ok, 0.96 ok, 0.94 wrong}; bins 12, 9, 10 hold one each */
    CHECK(m.bin_count[14] == 3 && m.bin_count[12] == 1 && m.bin_count[9] == 1 && m.bin_count[10] == 1);
    double ece = 3.0 / 6 * fabs(2.0 / 3 - 0.95) + (0.85 + (1 - 0.62) + 0.7) / 6;
    CHECK_NEAR(m.ece, ece, 1e-6);
    CHECK_NEAR(m.topk_accuracy, 0.5, 1e-12);
    dn_eval_metrics_free(&m);

    float q[] = {0.5f, 0.3f, 0.2f, 0.5f, 0.3f, 0.2f, 0.4f, 0.4f, 0.2f, 0.1f, 0.2f, 0.7f};
    int yq[] = {2, 1, 1, 0};
    CHECK(dn_eval_metrics_compute(3, 4, yq, q, NULL, 2, &m) == DN_OK);
    CHECK(m.topk == 2);
    CHECK_NEAR(m.topk_accuracy, 0.5, 1e-12); /* sample 0 and 3 miss top-2 */
    CHECK_NEAR(m.accuracy, 0.0, 1e-12);      /* tie 0.4/0.4 -> argmax 0 */
    dn_eval_metrics_free(&m);
    CHECK(dn_eval_metrics_compute(3, 4, yq, q, NULL, 1, &m) == DN_OK);
    CHECK_NEAR(m.topk_accuracy, 0.25, 1e-12); /* tie counts for the sample */
    dn_eval_metrics_free(&m);
    /* perfect calibration: confidence 1, always right -> ECE 0 */
    float r[] = {1, 0, 0, 1};
    int yr[] = {0, 1};
    CHECK(dn_eval_metrics_compute(2, 2, yr, r, NULL, 1, &m) == DN_OK);
    CHECK_NEAR(m.ece, 0, 1e-12);
    CHECK_NEAR(m.macro_f1, 1, 1e-12);
    dn_eval_metrics_free(&m);
}

TEST(bad_input) {
    int yt[] = {0, 3};
    int yp[] = {0, 1};
    dn_eval_metrics m;
    CHECK(dn_eval_metrics_compute(3, 2, yt, NULL, yp, 1, &m) == DN_ERR_ARG);
    CHECK(strstr(dn_last_error(), "out of range") != NULL);
    CHECK(m.cm == NULL);
    int yt2[] = {0, 1};
    float p[] = {0.5f, NAN, 0.5f, 0.5f};
    CHECK(dn_eval_metrics_compute(2, 2, yt2, p, NULL, 1, &m) == DN_ERR_ARG);
    CHECK(strstr(dn_last_error(), "non-finite") != NULL);
    CHECK(dn_eval_metrics_compute(0, 0, NULL, NULL, yp, 1, &m) == DN_ERR_ARG);
    CHECK(dn_eval_metrics_compute(2, 0, NULL, p, NULL, 1, &m) == DN_OK);
    CHECK(m.accuracy == 0 && m.macro_f1 == 0);
    dn_eval_metrics_free(&m);
}

TEST(json_output) {
    int yt[] = {0, 1};
    int yp[] = {0, 0};
    dn_eval_metrics m;
    CHECK(dn_eval_metrics_compute(2, 2, yt, NULL, yp, 1, &m) == DN_OK);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    const char *names[] = {"a\"b", "c"};
    dn_eval_metrics_json(&m, names, f);
    fclose(f);
    CHECK(strstr(buf, "\"accuracy\":0.500000") != NULL);
    CHECK(strstr(buf, "\"class\":\"a\\\"b\"") != NULL);
    CHECK(strstr(buf, "\"confusion\":[[1,0],[1,0]]") != NULL);
    free(buf);
    dn_eval_metrics_free(&m);
}

/* Wilson intervals against Newcombe (1998), Statistics in Medicine 17:857, table I. */
TEST(wilson_interval) {
    struct { int64_t k, n; double lo, hi; } c[] = {
        {81, 263, 0.2553, 0.3662}, {15, 148, 0.0624, 0.1605}, {0, 20, 0, 0.1611}, {1, 29, 0.0061, 0.1718},
        {5, 10, 0.2366, 0.7634},   {10, 10, 0.7225, 1}};
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        dn_rate r = dn_wilson(c[i].k, c[i].n);
        CHECK_NEAR(r.p, (double)c[i].k / c[i].n, 1e-15);
        CHECK_NEAR(r.lo, c[i].lo, 5e-5);
        CHECK_NEAR(r.hi, c[i].hi, 5e-5);
        CHECK(r.lo <= r.p && r.p <= r.hi);
    }
    dn_rate e = dn_wilson(0, 0);
    CHECK(e.p == 0 && e.lo == 0 && e.hi == 1);
}

TEST(good_class_names) {
    const char *yes[] = {"ok", "OK", "good", "Good", "no_defect", "No-Defect", "defect free", "defect_free", "normal",
                         "pass", "clean", "Okay", "non-defective", "free"};
    const char *no[] = {"p000", "crack", "good_part_maybe", "notok", "", "scratch", "okk"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) CHECK_MSG(dn_good_class_name_is_good(yes[i]), "%s", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof *no; i++) CHECK_MSG(!dn_good_class_name_is_good(no[i]), "%s", no[i]);
    const char *a[] = {"crack", "OK", "scratch"}, *b[] = {"good", "ok", "crack"}, *c[] = {"p000", "p033"};
    CHECK(dn_good_class_detect(a, 3) == 1);
    CHECK(dn_good_class_detect(b, 3) == -1); /* two candidates: ambiguous */
    CHECK(dn_good_class_detect(c, 2) == -1);
}

/* a model shell with class names only (what the policy functions read) */
static dn_model *names_model(int k, const char *const *names) {
    dn_model *m = calloc(1, sizeof *m);
    m->num_classes = k;
    m->class_names = calloc((size_t)k, sizeof *m->class_names);
    for (int c = 0; c < k; c++) m->class_names[c] = dn_strdup(names[c]);
    m->temperature = 1;
    return m;
}

static void names_model_free(dn_model *m) {
    for (int c = 0; c < m->num_classes; c++) free(m->class_names[c]);
    free(m->class_names);
    dn_meta_free(&m->meta);
    free(m);
}

TEST(good_class_metadata_and_costs) {
    const char *names[] = {"crack", "ok", "scratch"};
    dn_model *m = names_model(3, names);
    dn_good_class g;
    CHECK(dn_model_good_class(m, &g) == DN_OK && g.index == 1 && g.auto_detected && !g.stored);
    CHECK(dn_model_set_good_class(m, "nope") == DN_ERR_ARG && strstr(dn_last_error(), "'nope'") &&
          strstr(dn_last_error(), "crack, ok, scratch"));
    CHECK(dn_model_set_good_class(m, "scratch") == DN_OK);
    CHECK(dn_model_good_class(m, &g) == DN_OK && g.index == 2 && !g.auto_detected && g.stored);
    CHECK(dn_model_set_good_class(m, NULL) == DN_OK);
    CHECK(dn_model_good_class(m, &g) == DN_OK && g.index == 1 && g.auto_detected && g.stored);
    dn_meta_set(&m->meta, "good_class", "{\"name\":\"gone\"}");
    CHECK(dn_model_good_class(m, &g) == DN_ERR_FORMAT && strstr(dn_last_error(), "does not name a class"));
    dn_meta_set(&m->meta, "good_class", "{\"name\":\"ok\",\"source\":\"given\"}");
    dn_policy pol;
    CHECK(dn_model_policy(m, &pol) == DN_OK && pol.good == 1 && pol.good_threshold == 0);
    dn_meta_set(&m->meta, "decision_policy", "{\"good_class\":\"ok\",\"good_threshold\":0.9}");
    CHECK(dn_model_policy(m, &pol) == DN_OK && pol.good == 1 && pol.good_threshold == 0.9f);
    dn_meta_set(&m->meta, "decision_policy", "{\"good_class\":\"crack\",\"good_threshold\":0.9}");
    CHECK(dn_model_policy(m, &pol) == DN_ERR_FORMAT);

    dn_cost c;
    CHECK(dn_cost_parse("escape=50,false_reject=2,escape:scratch=100", m, &c) == DN_OK);
    CHECK(c.escape[0] == 50 && c.escape[2] == 100 && c.false_reject == 2);
    dn_cost_free(&c);
    CHECK(dn_cost_parse("escape:crack=3", m, &c) == DN_OK && c.escape[0] == 3 && c.escape[2] == 1 && c.false_reject == 1);
    dn_cost_free(&c);
    const char *bad[] = {"", "escape", "escape=", "escape=-1", "escape=abc", "escape=inf", "escapes=3",
                         "escape:dent=3", "false_reject=1,,", "escape=1e999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        dn_status st = dn_cost_parse(bad[i], m, &c);
        CHECK_MSG(st == DN_ERR_ARG && strstr(dn_last_error(), "--cost") && !strchr(dn_last_error(), '\n'),
                  "'%s' -> %d %s", bad[i], st, dn_last_error());
        CHECK(c.escape == NULL);
    }
    names_model_free(m);
}

TEST(policy_decide) {
    dn_prediction p = {0};
    float a[] = {0.1f, 0.7f, 0.2f}; /* good (1) is the argmax at 0.7 */
    dn_policy none = {-1, 0}, plain = {1, 0}, strict = {1, 0.9f}, loose = {1, 0.15f};
    CHECK(dn_policy_decide(&none, 0.5f, a, 3, &p) == 0 && p.cls == 1 && !p.uncertain);
    CHECK(dn_policy_decide(&plain, 0.5f, a, 3, &p) == 1 && p.cls == 1);
    CHECK(dn_policy_decide(&plain, 0.8f, a, 3, &p) == 0 && p.cls == 1 && p.uncertain);
    /* reject unless confidently good: 0.7 < 0.9 -> good but uncertain, not accepted */
    CHECK(dn_policy_decide(&strict, 0.0f, a, 3, &p) == 0 && p.cls == 1 && p.uncertain);
    float b[] = {0.6f, 0.2f, 0.2f};
    CHECK(dn_policy_decide(&strict, 0.0f, b, 3, &p) == 0 && p.cls == 0 && !p.uncertain);
    /* a low good threshold accepts a part whose argmax is a defect */
    CHECK(dn_policy_decide(&loose, 0.0f, b, 3, &p) == 1 && p.cls == 1 && p.confidence == 0.2f && !p.uncertain);
    CHECK(p.decision == DN_DECISION_ACCEPTED);
    CHECK(dn_policy_decide(&strict, 0.0f, a, 3, &p) == 0 && p.decision == DN_DECISION_UNCERTAIN);
    /* an out-of-distribution input stays unknown and is never accepted as good */
    p.decision = DN_DECISION_UNKNOWN;
    CHECK(dn_policy_decide(&loose, 0.0f, b, 3, &p) == 0 && p.decision == DN_DECISION_UNKNOWN);
}

/* 10 rows, good class 0; p[good] descending 0.95 .. 0.05; truth below */
static void policy_rows(float *probs, int *y) {
    const int truth[10] = {0, 0, 0, 1, 0, 2, 0, 1, 2, 1};
    for (int i = 0; i < 10; i++) {
        float pg = 0.95f - 0.1f * (float)i;
        probs[i * 3] = pg;
        probs[i * 3 + 1] = (1 - pg) / 2;
        probs[i * 3 + 2] = (1 - pg) / 2;
        y[i] = truth[i];
    }
}

TEST(policy_curve_and_choice) {
    float pr[30];
    int y[10];
    policy_rows(pr, y);
    dn_policy_point *pts;
    int64_t np;
    CHECK(dn_policy_curve(pr, y, 10, 3, 0, NULL, &pts, &np) == DN_OK);
    CHECK(np == 10);
    /* after 4 accepted (0,0,0,1): 1 of 5 defects escapes, 2 of 5 good rejected */
    CHECK(pts[3].escapes == 1 && pts[3].false_rejects == 2);
    CHECK_NEAR(pts[3].escape, 0.2, 1e-12);
    CHECK_NEAR(pts[3].false_reject, 0.4, 1e-12);
    CHECK(pts[9].escapes == 5 && pts[9].false_rejects == 0);
    free(pts);
    dn_policy_point pt;
    /* target 0: the most accepting point without escapes accepts the first 3 */
    CHECK(dn_policy_choose(pr, y, 10, 3, 0, NULL, 0.0, &pt) == DN_OK);
    CHECK(pt.escapes == 0 && pt.false_rejects == 2);
    CHECK_NEAR(pt.threshold, 0.75f, 1e-6);
    CHECK(dn_policy_choose(pr, y, 10, 3, 0, NULL, 0.2, &pt) == DN_OK && pt.escapes == 1 && pt.false_rejects == 1);
    /* costs: an escape 10x a false reject -> accept 3 (cost 2) rather than 5 (cost 10) */
    const char *names[] = {"ok", "crack", "dent"};
    dn_model *m = names_model(3, names);
    dn_cost c;
    CHECK(dn_cost_parse("escape=10,false_reject=1", m, &c) == DN_OK);
    CHECK(dn_policy_choose(pr, y, 10, 3, 0, &c, -1, &pt) == DN_OK && pt.escapes == 0 && pt.cost == 2);
    dn_cost_free(&c);
    /* escapes cheap: accept everything */
    CHECK(dn_cost_parse("escape=0.1,false_reject=1", m, &c) == DN_OK);
    CHECK(dn_policy_choose(pr, y, 10, 3, 0, &c, -1, &pt) == DN_OK && pt.false_rejects == 0);
    dn_cost_free(&c);
    /* per class: a dent escape costs 100, a crack 0: accept down to the first dent */
    CHECK(dn_cost_parse("escape=0,escape:dent=100", m, &c) == DN_OK);
    CHECK(dn_policy_choose(pr, y, 10, 3, 0, &c, -1, &pt) == DN_OK && pt.escapes == 1 && pt.false_rejects == 1);
    dn_cost_free(&c);
    names_model_free(m);
    /* unreachable: the most confident part is defective and every tie is accepted together */
    int y2[10] = {1, 0, 0, 0, 0, 2, 0, 1, 2, 1};
    CHECK(dn_policy_choose(pr, y2, 10, 3, 0, NULL, 0.0, &pt) == DN_ERR_ARG &&
          strstr(dn_last_error(), "cannot be reached") && strstr(dn_last_error(), "0.2"));
    int all_good[10] = {0}, no_good[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    CHECK(dn_policy_choose(pr, all_good, 10, 3, 0, NULL, 0.1, &pt) == DN_ERR_ARG && strstr(dn_last_error(), "no defective"));
    CHECK(dn_policy_choose(pr, no_good, 10, 3, 0, NULL, 0.1, &pt) == DN_ERR_ARG && strstr(dn_last_error(), "no good"));
}

TEST(quality_rates) {
    int y[] = {0, 0, 0, 0, 1, 1, 2, 2, 2};
    uint8_t acc[] = {1, 1, 0, 1, 1, 0, 0, 0, 1};
    dn_quality q;
    CHECK(dn_quality_compute(3, 0, y, acc, 9, &q) == DN_OK);
    CHECK(q.false_reject.k == 1 && q.false_reject.n == 4);
    CHECK(q.escape.k == 2 && q.escape.n == 5);
    CHECK(q.escape_by_class[1].k == 1 && q.escape_by_class[1].n == 2);
    CHECK(q.escape_by_class[2].k == 1 && q.escape_by_class[2].n == 3);
    CHECK(q.escape_by_class[0].n == 0);
    dn_rate w = dn_wilson(2, 5);
    CHECK(q.escape.lo == w.lo && q.escape.hi == w.hi);
    dn_quality_free(&q);
    CHECK(dn_quality_compute(3, 3, y, acc, 9, &q) == DN_ERR_ARG);
}

TEST(bootstrap_macro_f1_interval) {
    int y[200], p[200];
    for (int i = 0; i < 200; i++) {
        y[i] = i % 4;
        p[i] = i % 10 == 0 ? (y[i] + 1) % 4 : y[i]; /* 10% wrong */
    }
    dn_eval_metrics m;
    CHECK(dn_eval_metrics_compute(4, 200, y, NULL, p, 1, &m) == DN_OK);
    double lo, hi, lo2, hi2;
    CHECK(dn_bootstrap_macro_f1(4, y, p, 200, &lo, &hi) == DN_OK);
    printf("  macro-F1 %.4f, bootstrap 95%% interval %.4f-%.4f\n", m.macro_f1, lo, hi);
    CHECK(lo < m.macro_f1 && m.macro_f1 < hi);
    CHECK(hi - lo > 0.03 && hi - lo < 0.2); /* ~2 x 1.96 x sqrt(.9 x .1 / 200) */
    CHECK(dn_bootstrap_macro_f1(4, y, p, 200, &lo2, &hi2) == DN_OK && lo2 == lo && hi2 == hi); /* fixed seed */
    dn_eval_metrics_free(&m);
    CHECK(dn_bootstrap_macro_f1(4, y, y, 200, &lo, &hi) == DN_OK && lo == 1 && hi == 1);
}

TEST(ordinal_errors) {
    /* 4 ordered classes; rows true */
    int64_t cm[16] = {5, 1, 0, 0,
                      1, 3, 1, 1,
                      0, 0, 2, 0,
                      2, 0, 0, 4};
    dn_ordinal o;
    dn_ordinal_compute(4, cm, &o);
    CHECK(o.exact == 14 && o.off_by_one == 3 && o.off_by_more == 3);
    CHECK_NEAR(o.mae, (3 * 1 + 1 * 2 + 2 * 3) / 20.0, 1e-12);
}

int main(void) {
    RUN(confusion_and_f1);
    RUN(zero_support_like_sklearn);
    RUN(ece_and_topk);
    RUN(bad_input);
    RUN(json_output);
    RUN(wilson_interval);
    RUN(good_class_names);
    RUN(good_class_metadata_and_costs);
    RUN(policy_decide);
    RUN(policy_curve_and_choice);
    RUN(quality_rates);
    RUN(bootstrap_macro_f1_interval);
    RUN(ordinal_errors);
    return REPORT();
}
