/* Metrics against hand-computed cases (sklearn conventions, zero_division=0). */
#include "core/core.h"
#include "eval/metrics.h"
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

int main(void) {
    RUN(confusion_and_f1);
    RUN(zero_support_like_sklearn);
    RUN(ece_and_topk);
    RUN(bad_input);
    RUN(json_output);
    return REPORT();
}
