/* Offline model comparison (trust/compare.h, `defectnet compare LIVE CANDIDATE --data`):
 * the exact McNemar p-value against values computed by hand (exact binomial sums,
 * Python fractions), and the analysis of a small hand-made table of answers: accuracy
 * with its Wilson interval, macro-F1, per-class recall/precision with a class only the
 * candidate has, escape / false-reject rates, decisions, the 2x2 table, the verdict,
 * the disagreement list and the JSON / HTML writers. The end-to-end command (two real
 * models on synthetic images) is tests/compare_cli.sh. */
#include "harness.h"
#include "trust/compare.h"

TEST(mcnemar_hand_values) {
    /* p = min(1, 2 * sum_{i<=min(b,c)} C(b+c, i) / 2^(b+c)) */
    CHECK_NEAR(dn_mcnemar_exact_p(1, 5), 14.0 / 64, 1e-12);  /* (1 + 6) / 64, doubled */
    CHECK_NEAR(dn_mcnemar_exact_p(5, 1), 14.0 / 64, 1e-12);  /* symmetric */
    CHECK_NEAR(dn_mcnemar_exact_p(0, 6), 2.0 / 64, 1e-12);
    CHECK_NEAR(dn_mcnemar_exact_p(2, 8), 112.0 / 1024, 1e-12); /* (1 + 10 + 45) * 2 / 1024 */
    CHECK_NEAR(dn_mcnemar_exact_p(0, 10), 2.0 / 1024, 1e-14);
    CHECK_NEAR(dn_mcnemar_exact_p(7, 20), 0.0191572904586792, 1e-12);
    CHECK_NEAR(dn_mcnemar_exact_p(40, 60), 0.05688793364098079, 1e-11);
    CHECK_NEAR(dn_mcnemar_exact_p(150, 210), 0.0018340074170964875, 1e-12);
    CHECK(dn_mcnemar_exact_p(3, 3) == 1.0);  /* 2 * 42/64 > 1: capped */
    CHECK(dn_mcnemar_exact_p(0, 1) == 1.0);
    CHECK(dn_mcnemar_exact_p(0, 0) == 1.0);  /* no discordant pair: no evidence */
    double p = dn_mcnemar_exact_p(0, 3000); /* 2^-2999 underflows to 0, never NaN */
    CHECK(p >= 0 && p < 1e-300);
}

/* classes: ok crack spot (the data's) + SPOT (only the candidate's: it lacks "spot") */
static const char *const NAMES[] = {"ok", "crack", "spot", "SPOT"};
static const int Y[10] = {0, 0, 0, 0, 1, 1, 1, 2, 2, 2};
static const int LIVE[10] = {0, 0, 0, 1, 1, 1, 0, 2, 2, 1};
static const int CAND[10] = {0, 0, 0, 0, 1, 1, 1, 3, 3, 3};
static const char *const PATHS[10] = {"a0.png", "a1.png", "a2.png", "a3.png", "b4.png",
                                      "b5.png", "b6.png", "c7.png", "c8.png", "c9.png"};

static void fill(dn_cmp_answer *a, const int *cls, const int *dec) {
    for (int i = 0; i < 10; i++) a[i] = (dn_cmp_answer){cls[i], 0.5f + 0.05f * i, dec[i]};
}

TEST(analyse_hand_table) {
    static const int DL[10] = {0, 0, 0, 1, 0, 0, 0, 0, 0, 0}; /* live: a3 uncertain */
    static const int DC[10] = {0, 0, 1, 0, 0, 0, 0, 0, 0, 2}; /* candidate: a2 uncertain, c9 unknown */
    static const uint8_t AL[10] = {1, 1, 1, 0, 0, 0, 1, 0, 0, 0}; /* live accepts crack b6 as ok: an escape */
    static const uint8_t AC[10] = {1, 1, 0, 1, 0, 0, 0, 0, 0, 0}; /* candidate rejects ok a2 */
    static const uint8_t KL[4] = {1, 1, 1, 0}, KC[4] = {1, 1, 0, 1};
    dn_cmp_answer al[10], ac[10];
    fill(al, LIVE, DL);
    fill(ac, CAND, DC);
    dn_cmp_input in = {.k = 4, .names = NAMES, .ndata = 3, .n = 10, .y = Y, .paths = PATHS, .good = 0};
    in.side[0] = (dn_cmp_side){al, AL, KL, "live.safetensors", "aa", 3};
    in.side[1] = (dn_cmp_side){ac, AC, KC, "cand.safetensors", "bb", 3};
    dn_cmp_models c;
    CHECK(dn_cmp_analyse(&in, &c) == DN_OK);
    /* both 7 of 10 right; Wilson(7, 10) = [0.396778, 0.892209] */
    CHECK(c.m[0].correct == 7 && c.m[1].correct == 7);
    CHECK_NEAR(c.m[0].accuracy.p, 0.7, 1e-12);
    CHECK_NEAR(c.m[0].accuracy.lo, 0.39677814746114537, 1e-9);
    CHECK_NEAR(c.m[1].accuracy.hi, 0.8922087325936989, 1e-9);
    /* macro-F1 (classes in truth or predictions): live ok 0.75, crack 4/7, spot 0.8;
     * candidate ok 1, crack 1, spot 0, SPOT 0 */
    CHECK_NEAR(c.m[0].met.macro_f1, (0.75 + 4.0 / 7 + 0.8) / 3, 1e-9);
    CHECK_NEAR(c.m[1].met.macro_f1, 0.5, 1e-9);
    CHECK(c.m[0].f1_lo <= c.m[0].met.macro_f1 && c.m[0].met.macro_f1 <= c.m[0].f1_hi);
    /* per class */
    CHECK_NEAR(c.m[0].met.recall[0], 0.75, 1e-12);
    CHECK_NEAR(c.m[0].met.recall[2], 2.0 / 3, 1e-12);
    CHECK_NEAR(c.m[1].met.recall[2], 0.0, 1e-12); /* the renamed class: never right */
    CHECK_NEAR(c.m[1].met.recall[1], 1.0, 1e-12);
    CHECK_NEAR(c.m[0].met.precision[0], 0.75, 1e-12);
    CHECK_NEAR(c.m[1].met.precision[0], 1.0, 1e-12);
    CHECK(c.m[1].met.predicted[3] == 3 && c.m[0].met.predicted[3] == 0);
    CHECK(c.m[0].lacks == 0 && c.m[1].lacks == 3);
    /* escape (defective accepted as ok) and false reject (ok not accepted) */
    CHECK(c.m[0].has_quality && c.m[1].has_quality);
    CHECK(c.m[0].q.escape.k == 1 && c.m[0].q.escape.n == 6);
    CHECK(c.m[1].q.escape.k == 0 && c.m[1].q.escape.n == 6);
    CHECK(c.m[0].q.false_reject.k == 1 && c.m[0].q.false_reject.n == 4);
    CHECK(c.m[1].q.false_reject.k == 1 && c.m[1].q.false_reject.n == 4);
    CHECK_NEAR(c.m[0].q.escape.hi, 0.5635028221864702, 1e-9);
    /* decisions */
    CHECK(c.m[0].decisions[0] == 9 && c.m[0].decisions[1] == 1 && c.m[0].decisions[2] == 0);
    CHECK(c.m[1].decisions[0] == 8 && c.m[1].decisions[1] == 1 && c.m[1].decisions[2] == 1);
    /* agreement and the 2x2 table */
    CHECK(c.same_class == 5 && c.same_decision == 7);
    CHECK(c.both_right == 5 && c.only_live == 2 && c.only_cand == 2 && c.both_wrong == 1);
    CHECK(c.p == 1.0 && c.verdict == 0);
    CHECK(!strcmp(dn_cmp_verdict_word(&c), "no significant difference"));
    CHECK(c.disagree == 5 && c.ndis == 5);
    CHECK(!strcmp(c.dis[0].path, "a3.png") && c.dis[0].truth == 0 && c.dis[0].a[0].cls == 1 && c.dis[0].a[1].cls == 0);
    CHECK(!strcmp(c.dis[4].path, "c9.png") && c.dis[4].a[1].cls == 3 && c.dis[4].a[1].decision == 2);

    c.data_source = "data";
    c.split = "test";
    c.listed = 10;
    dn_sb b = {0};
    dn_cmp_json(&c, &b);
    CHECK(b.s && !b.oom);
    if (b.s) {
        CHECK(strstr(b.s, "\"both_right\":5,\"only_live_right\":2,\"only_candidate_right\":2,\"both_wrong\":1,"
                          "\"mcnemar_p\":1}"));
        CHECK(strstr(b.s, "\"verdict\":\"no significant difference\""));
        CHECK(strstr(b.s, "{\"class\":\"spot\",\"data_class\":true,\"images\":3,\"live\":{\"predicted\":2,"
                          "\"recall\":0.666667,\"precision\":1},\"candidate\":{\"predicted\":0,\"recall\":0,"
                          "\"precision\":null},\"recall_delta\":-0.666667}"));
        CHECK(strstr(b.s, "{\"class\":\"SPOT\",\"data_class\":false,\"images\":0"));
        CHECK(strstr(b.s, "\"good_class\":\"ok\""));
    }
    dn_sb_free(&b);
    memset(&b, 0, sizeof b);
    dn_cmp_html(&c, 0, &b);
    CHECK(b.s && strstr(b.s, "<!DOCTYPE html>") && strstr(b.s, "id=\"mcnemar\"") && strstr(b.s, "c9.png") &&
          strstr(b.s, "no significant difference") && strstr(b.s, "</html>") && !strstr(b.s, "<script"));
    dn_sb_free(&b);
    dn_cmp_models_free(&c);
}

TEST(verdict_direction) {
    /* 8 images of class 0/1; the candidate is right on 6 the live model gets wrong, never the reverse:
     * p = 2 / 2^6 = 0.03125 < 0.05 */
    static const char *const N2[] = {"a", "b"};
    static const int y[8] = {0, 0, 0, 1, 1, 1, 0, 1};
    static const int l[8] = {1, 1, 1, 0, 0, 0, 0, 1};
    static const int k[8] = {0, 0, 0, 1, 1, 1, 0, 1};
    static const int d[8] = {0};
    static const uint8_t kn[2] = {1, 1};
    dn_cmp_answer al[8], ac[8];
    for (int i = 0; i < 8; i++) { al[i] = (dn_cmp_answer){l[i], 0.9f, d[i]}; ac[i] = (dn_cmp_answer){k[i], 0.9f, 0}; }
    dn_cmp_input in = {.k = 2, .names = N2, .ndata = 2, .n = 8, .y = y, .paths = NULL, .good = -1};
    in.side[0] = (dn_cmp_side){al, NULL, kn, "l", "", 2};
    in.side[1] = (dn_cmp_side){ac, NULL, kn, "c", "", 2};
    dn_cmp_models c;
    CHECK(dn_cmp_analyse(&in, &c) == DN_OK);
    CHECK(c.only_cand == 6 && c.only_live == 0 && c.both_right == 2);
    CHECK_NEAR(c.p, 0.03125, 1e-12);
    CHECK(c.verdict == 1 && !strcmp(dn_cmp_verdict_word(&c), "candidate better"));
    CHECK(!c.m[0].has_quality);
    dn_cmp_models_free(&c);
    in.side[0].ans = ac; /* swapped: worse */
    in.side[1].ans = al;
    CHECK(dn_cmp_analyse(&in, &c) == DN_OK);
    CHECK(c.verdict == -1 && !strcmp(dn_cmp_verdict_word(&c), "candidate worse"));
    dn_cmp_models_free(&c);
    /* bad input: no images, a label outside the data's classes, a class out of range */
    in.n = 0;
    CHECK(dn_cmp_analyse(&in, &c) == DN_ERR_ARG);
    in.n = 8;
    in.ndata = 1;
    CHECK(dn_cmp_analyse(&in, &c) == DN_ERR_ARG && strstr(dn_last_error(), "not a data class"));
    in.ndata = 2;
    al[3].cls = 7;
    CHECK(dn_cmp_analyse(&in, &c) == DN_ERR_ARG && strstr(dn_last_error(), "out of range"));
}

int main(void) {
    RUN(mcnemar_hand_values);
    RUN(analyse_hand_table);
    RUN(verdict_direction);
    return REPORT();
}
