/* Evaluation: temperature scaling (vs PyTorch fixtures and a closed form),
 * thresholds and coverage, report writers, and `defectnet eval` end to end
 * (tiny synthetic data + a quickly trained narrow model): class mapping,
 * missing manifest files, calibration written into the model, JSON/HTML
 * outputs and the HTML rendered by headless chromium. */
#include "harness.h"
#include "core/core.h"
#include "core/json.h"
#include "eval/calibrate.h"
#include "eval/report.h"
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

static char *slurp(const char *path, size_t *len) {
    uint8_t *d = NULL;
    size_t l = 0;
    if (dn_read_file(path, 64u << 20, &d, &l)) return NULL;
    char *s = realloc(d, l + 1);
    if (!s) { free(d); return NULL; }
    s[l] = 0;
    if (len) *len = l;
    return s;
}

/* Runs a shell command, returns its exit status (-1 if it did not exit). */
static inline int sh(const char *cmd) {
    int r = system(cmd);
    return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

/* ------------------------------------------------------------ temperature */

TEST(temperature_matches_torch) {
    size_t jl;
    char *js = slurp("tests/fixtures/eval/calib.json", &jl);
    size_t bl;
    char *bin = slurp("tests/fixtures/eval/calib.bin", &bl);
    CHECK(js && bin);
    if (!js || !bin) { free(js); free(bin); return; }
    dn_json *root = dn_json_parse(js, jl, NULL, 0);
    CHECK(root);
    const dn_json *cases = dn_json_get(root, "cases");
    CHECK(dn_json_len(cases) == 3);
    for (size_t c = 0; c < dn_json_len(cases); c++) {
        const dn_json *cs = dn_json_at(cases, c);
        size_t off = (size_t)dn_json_num(dn_json_get(cs, "offset"), 0);
        int n = (int)dn_json_num(dn_json_get(cs, "n"), 0), k = (int)dn_json_num(dn_json_get(cs, "k"), 0);
        double T = dn_json_num(dn_json_get(cs, "temperature"), 0);
        CHECK(off + (size_t)n * k * 4 + (size_t)n * 4 <= bl);
        float *lg = malloc((size_t)n * k * sizeof *lg);
        int *y = malloc((size_t)n * sizeof *y);
        memcpy(lg, bin + off, (size_t)n * k * 4);
        memcpy(y, bin + off + (size_t)n * k * 4, (size_t)n * 4);
        dn_temp_fit f;
        CHECK(dn_calib_fit_temperature(lg, y, n, k, &f) == DN_OK);
        printf("  %s: T %.9f (torch %.9f), NLL %.6f -> %.6f, %d iterations\n",
               dn_json_str(dn_json_get(cs, "name"), "?"), f.temperature, T, f.nll_before, f.nll_after, f.iterations);
        CHECK_NEAR(f.temperature, T, 1e-6 * T);
        CHECK_NEAR(f.nll_before, dn_json_num(dn_json_get(cs, "nll_before"), 0), 1e-9);
        CHECK_NEAR(f.nll_after, dn_json_num(dn_json_get(cs, "nll_after"), 0), 1e-9);
        CHECK(!f.at_bound);
        /* it is the minimum: nearby temperatures are not better */
        CHECK(dn_calib_nll(lg, y, n, k, f.temperature * 1.001) >= f.nll_after);
        CHECK(dn_calib_nll(lg, y, n, k, f.temperature / 1.001) >= f.nll_after);
        free(lg);
        free(y);
    }
    dn_json_free(root);
    free(js);
    free(bin);
}

/* Two classes, every sample with logits (m, 0) and a fraction a of them labelled
 * 0: NLL(b) = a log(1 + e^{-bm}) + (1-a) log(1 + e^{bm}) is minimised where
 * sigmoid(b m) = a, i.e. T = m / logit(a). */
TEST(temperature_closed_form) {
    const int n = 100;
    const double ms[] = {2.0, 5.0, 0.7};
    const int correct[] = {80, 93, 60};
    for (int c = 0; c < 3; c++) {
        float lg[2 * 100];
        int y[100];
        for (int i = 0; i < n; i++) {
            lg[2 * i] = (float)ms[c];
            lg[2 * i + 1] = 0;
            y[i] = i < correct[c] ? 0 : 1;
        }
        double m = (double)(float)ms[c], a = correct[c] / (double)n, T = m / log(a / (1 - a));
        dn_temp_fit f;
        CHECK(dn_calib_fit_temperature(lg, y, n, 2, &f) == DN_OK);
        CHECK_NEAR(f.temperature, T, 1e-9 * T);
        double nll = -(a * log(1 / (1 + exp(-m / T))) + (1 - a) * log(1 / (1 + exp(m / T))));
        CHECK_NEAR(f.nll_after, nll, 1e-12);
    }
}

TEST(temperature_bounds_and_errors) {
    /* perfectly separated: NLL falls as T -> 0, so T stops at its lower bound */
    float lg[] = {3, 0, 0, 2, 1, 0};
    int y[] = {0, 1, 0};
    dn_temp_fit f;
    CHECK(dn_calib_fit_temperature(lg, y, 3, 2, &f) == DN_OK);
    CHECK(f.at_bound);
    CHECK_NEAR(f.temperature, DN_TEMP_MIN, 1e-12);
    /* every sample wrong: the optimum is as flat as allowed */
    int yw[] = {1, 0, 1};
    CHECK(dn_calib_fit_temperature(lg, yw, 3, 2, &f) == DN_OK);
    CHECK(f.at_bound);
    CHECK_NEAR(f.temperature, DN_TEMP_MAX, 1e-9);
    int bad[] = {0, 2, 0};
    CHECK(dn_calib_fit_temperature(lg, bad, 3, 2, &f) == DN_ERR_ARG);
    CHECK(strstr(dn_last_error(), "out of range"));
    CHECK(dn_calib_fit_temperature(lg, y, 0, 2, &f) == DN_ERR_ARG);
    CHECK(dn_calib_fit_temperature(lg, y, 3, 1, &f) == DN_ERR_ARG);
    float nanl[] = {3, 0, NAN, 2, 1, 0};
    CHECK(dn_calib_fit_temperature(nanl, y, 3, 2, &f) == DN_ERR_ARG);
    CHECK(strstr(dn_last_error(), "non-finite"));
}

/* ------------------------------------------------------------ threshold */

TEST(threshold_and_coverage) {
    /* confidences with correctness; sorted descending:
     * .99 ok, .95 ok, .90 ok, .90 wrong, .80 ok, .70 wrong, .60 ok, .50 wrong */
    float conf[] = {0.9f, 0.5f, 0.99f, 0.7f, 0.95f, 0.9f, 0.6f, 0.8f};
    uint8_t ok[] = {1, 0, 1, 0, 1, 0, 1, 1};
    dn_cov_point *pts;
    int64_t np;
    CHECK(dn_calib_coverage_curve(conf, ok, 8, &pts, &np) == DN_OK);
    CHECK(np == 7); /* the two 0.90 form one point */
    CHECK(pts[0].threshold == 0.99f && pts[0].covered == 1 && pts[0].accuracy == 1.0);
    CHECK(pts[2].threshold == 0.9f && pts[2].covered == 4);
    CHECK_NEAR(pts[2].accuracy, 0.75, 1e-12);
    CHECK(pts[np - 1].covered == 8 && pts[np - 1].coverage == 1.0);
    CHECK_NEAR(pts[np - 1].accuracy, 5.0 / 8, 1e-12);
    free(pts);

    dn_threshold_pick p;
    CHECK(dn_calib_choose_threshold(conf, ok, 8, 1.0, &p) == DN_OK);
    CHECK(p.reached && p.at.threshold == 0.95f && p.at.covered == 2);
    /* 0.8: covering down to 0.80 gives 4/5 = 0.8 exactly (ties at 0.9 cannot be split) */
    CHECK(dn_calib_choose_threshold(conf, ok, 8, 0.8, &p) == DN_OK);
    CHECK(p.reached && p.at.threshold == 0.8f && p.at.covered == 5);
    CHECK_NEAR(p.at.coverage, 5.0 / 8, 1e-12);
    /* 0.6: everything (5/8 = .625 >= .6) */
    CHECK(dn_calib_choose_threshold(conf, ok, 8, 0.6, &p) == DN_OK);
    CHECK(p.reached && p.at.covered == 8 && p.at.threshold == 0.5f);
    /* unreachable: best accuracy with the largest coverage, flagged */
    uint8_t bad[] = {0, 0, 0, 0, 1, 0, 0, 0};
    CHECK(dn_calib_choose_threshold(conf, bad, 8, 0.9, &p) == DN_OK);
    CHECK(!p.reached && p.at.threshold == 0.95f);
    CHECK_NEAR(p.at.accuracy, 0.5, 1e-12);

    /* applying a threshold counts conf >= t as covered, like the engine */
    dn_cov_point a = dn_calib_at_threshold(conf, ok, 8, 0.9f);
    CHECK(a.covered == 4);
    CHECK_NEAR(a.accuracy, 0.75, 1e-12);
    a = dn_calib_at_threshold(conf, ok, 8, 1.0f);
    CHECK(a.covered == 0 && a.coverage == 0 && a.accuracy == 1.0);
    a = dn_calib_at_threshold(conf, ok, 8, 0.0f);
    CHECK(a.covered == 8);

    CHECK(dn_calib_choose_threshold(conf, ok, 0, 0.9, &p) == DN_ERR_ARG);
    CHECK(dn_calib_choose_threshold(conf, ok, 8, 1.5, &p) == DN_ERR_ARG);
    CHECK(dn_calib_choose_threshold(conf, ok, 8, 0, &p) == DN_ERR_ARG);
}

int main(void) {
    RUN(temperature_matches_torch);
    RUN(temperature_closed_form);
    RUN(temperature_bounds_and_errors);
    RUN(threshold_and_coverage);
    return REPORT();
}
