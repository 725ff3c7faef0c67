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
#include "eval/policy.h"
#include "eval/quality.h"
#include "io/dataset.h"
#include "io/modelfile.h"
#include "io/synth.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "ood/ood_eval.h"
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

/* ------------------------------------------------------------ thumbnails */

TEST(base64_png_thumbnail) {
    const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *want[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"}; /* RFC 4648 vectors */
    for (int i = 0; i < 7; i++) {
        char *o = NULL;
        CHECK(dn_base64((const uint8_t *)in[i], strlen(in[i]), &o) == DN_OK);
        CHECK_MSG(o && !strcmp(o, want[i]), "base64('%s') = '%s'", in[i], o ? o : "(null)");
        free(o);
    }
    /* PNG round trip through our own decoder: RGB and gray images */
    for (int gray = 0; gray < 2; gray++) {
        dn_image img = {.w = 37, .h = 23, .data = malloc(37 * 23 * 3)};
        for (int i = 0; i < 37 * 23; i++)
            for (int c = 0; c < 3; c++) img.data[i * 3 + c] = (uint8_t)(gray ? i * 7 : i * 7 + c * 50);
        uint8_t *png;
        size_t len;
        CHECK(dn_png_encode(&img, &png, &len) == DN_OK);
        dn_image back = {0};
        CHECK(dn_image_decode(png, len, "roundtrip.png", &back) == DN_OK);
        CHECK(back.w == 37 && back.h == 23 && !memcmp(back.data, img.data, 37 * 23 * 3));
        CHECK(png[25] == (gray ? 0 : 2)); /* IHDR colour type: gray or RGB */
        free(png);
        dn_image_free(&back);
        /* thumbnail: longest side 16, aspect kept, box-averaged */
        char *b64 = NULL;
        CHECK(dn_thumb_png_base64(&img, 16, &b64) == DN_OK);
        CHECK(b64 && strlen(b64) > 20);
        free(b64);
        dn_image_free(&img);
    }
    dn_image flat = {.w = 300, .h = 100, .data = malloc(300 * 100 * 3)};
    memset(flat.data, 77, 300 * 100 * 3);
    char *b64 = NULL;
    CHECK(dn_thumb_png_base64(&flat, 60, &b64) == DN_OK);
    /* decode the base64 back (tiny decoder) and check size and the average */
    size_t n = strlen(b64), o = 0;
    uint8_t *bin = malloc(n);
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && b64[i] != '='; i++) {
        const char *tab = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        acc = acc << 6 | (uint32_t)(strchr(tab, b64[i]) - tab);
        bits += 6;
        if (bits >= 8) { bits -= 8; bin[o++] = (uint8_t)(acc >> bits); }
    }
    dn_image t = {0};
    CHECK(dn_image_decode(bin, o, "thumb.png", &t) == DN_OK);
    CHECK(t.w == 60 && t.h == 20);
    CHECK(t.data && t.data[0] == 77 && t.data[(20 * 60 - 1) * 3 + 2] == 77);
    dn_image_free(&t);
    free(bin);
    free(b64);
    dn_image_free(&flat);
    dn_image empty = {0};
    CHECK(dn_thumb_png_base64(&empty, 16, &b64) == DN_ERR_ARG);
}


/* Report writers on a hand-made result: names needing escaping survive JSON
 * (parsed back) and are escaped in HTML; the table's class rows align. */
TEST(report_writers_escape_and_align) {
    dn_model *m = NULL;
    CHECK(dn_model_load("tests/fixtures/resnet/r18n.pth", &m) == DN_OK);
    if (!m) return;
    const char *names[5] = {"<script>alert(1)</script>", "quote\"d", "back\\slash", "a,b & c", "\xc3\xa9t\xc3\xa9"};
    for (int c = 0; c < 5; c++) { free(m->class_names[c]); m->class_names[c] = dn_strdup(names[c]); }
    enum { N = 40 };
    float probs[N * 5];
    int y[N];
    for (int i = 0; i < N; i++) {
        y[i] = i % 5;
        for (int c = 0; c < 5; c++) probs[i * 5 + c] = 0.1f;
        probs[i * 5 + (i % 7 == 0 ? (y[i] + 1) % 5 : y[i])] = 0.6f;
    }
    dn_eval_report r;
    memset(&r, 0, sizeof r);
    r.model = m;
    r.model_path = "dir/<model>.safetensors";
    r.data_source = "data & \"things\"";
    r.split_name = "test";
    r.listed = N;
    r.temperature = 1;
    r.temp_source = "none";
    r.thr_source = "given";
    r.threshold = 0.55f;
    CHECK(dn_eval_metrics_compute(5, N, y, probs, NULL, 3, &r.raw) == DN_OK);
    CHECK(dn_eval_metrics_compute(5, N, y, probs, NULL, 3, &r.cal) == DN_OK);
    float conf[N];
    uint8_t ok[N];
    for (int i = 0; i < N; i++) { conf[i] = 0.6f - 0.001f * i; ok[i] = i % 7 != 0; }
    r.thr_eval = dn_calib_at_threshold(conf, ok, N, r.threshold);
    CHECK(dn_calib_coverage_curve(conf, ok, N, &r.curve, &r.ncurve) == DN_OK);
    r.miss = calloc(1, sizeof *r.miss);
    r.nmiss = 1;
    r.miss[0].path = dn_strdup("imgs/<bad>.png");
    r.miss[0].truth = 0;
    r.miss[0].pred = 1;
    r.miss[0].ntop = 1;
    r.miss[0].top[0] = 1;
    r.miss[0].thumb_b64 = dn_strdup("iVBORw0KGgo=");
    r.miss[0].cam_b64 = dn_strdup("iVBORw0KGgp=");
    r.heatmaps = 1;
    /* an unknown-input measurement with a hostile set name: 4 in-distribution rows, 3 of the set */
    dn_ood_eval oe;
    memset(&oe, 0, sizeof oe);
    oe.kind = DN_OOD_COMBO;
    oe.threshold = 0.5f;
    snprintf(oe.in_split, sizeof oe.in_split, "test");
    oe.in.n = 4;
    oe.in.s = calloc(4 * DN_OOD_NMEASURES, sizeof(float));
    oe.nsets = 1;
    oe.sets[0].name = dn_strdup("<b>odd & \"set\"");
    oe.sets[0].rows.n = 3;
    oe.sets[0].rows.s = calloc(3 * DN_OOD_NMEASURES, sizeof(float));
    for (int i = 0; i < 4 * DN_OOD_NMEASURES; i++) oe.in.s[i] = 0.1f * (float)(i % 5);
    for (int i = 0; i < 3 * DN_OOD_NMEASURES; i++) oe.sets[0].rows.s[i] = 0.45f + 0.2f * (float)(i % 4);
    oe.sets[0].flagged = 2;
    for (int k = 0; k < DN_OOD_NMEASURES; k++) { oe.sets[0].auroc[k] = 0.75 + 0.01 * k; oe.sets[0].fpr95[k] = 0.25; }
    r.ood = &oe;

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    dn_eval_report_json(&r, f);
    fclose(f);
    dn_json *j = dn_json_parse(buf, len, NULL, 0);
    CHECK_MSG(j, "invalid JSON: %.400s", buf);
    const dn_json *cls = dn_json_get(dn_json_get(j, "model"), "classes");
    for (int c = 0; j && c < 5; c++) CHECK(!strcmp(dn_json_str(dn_json_at(cls, c), ""), names[c]));
    CHECK(j && !strcmp(dn_json_str(dn_json_get(dn_json_get(j, "data"), "source"), ""), "data & \"things\""));
    const dn_json *jo = dn_json_get(j, "ood"), *js = dn_json_at(dn_json_get(jo, "sets"), 0);
    CHECK(js && !strcmp(dn_json_str(dn_json_get(js, "set"), ""), "<b>odd & \"set\""));
    CHECK(fabs(dn_json_num(dn_json_get(dn_json_get(dn_json_get(js, "scores"), "msp"), "auroc"), 0) - 0.79) < 1e-9);
    CHECK(fabs(dn_json_num(dn_json_get(js, "flagged"), 0) - 2.0 / 3) < 1e-6);
    CHECK(!strcmp(dn_json_str(dn_json_get(jo, "score"), ""), "combo"));
    dn_json_free(j);
    free(buf);

    f = open_memstream(&buf, &len);
    dn_eval_report_html(&r, f);
    fclose(f);
    CHECK(!strstr(buf, "<script"));
    CHECK(strstr(buf, "&lt;script&gt;alert(1)&lt;/script&gt;") && strstr(buf, "quote&quot;d") && strstr(buf, "a,b &amp; c"));
    CHECK(strstr(buf, "title=\"imgs/&lt;bad&gt;.png\"") && strstr(buf, "alt=\"&lt;bad&gt;.png\""));
    CHECK(strstr(buf, "class=\"cam\" alt=\"Grad-CAM of &lt;bad&gt;.png\"") && strstr(buf, "base64,iVBORw0KGgp=\""));
    CHECK(strstr(buf, "id=\"cam-note\"") && strstr(buf, "no Grad-CAM reference"));
    CHECK(!strstr(buf, "<b>odd") && strstr(buf, "&lt;b&gt;odd &amp; &quot;set&quot;"));
    /* the table (in-distribution row + the set) and one histogram: bars of both series, the threshold line */
    const char *tb = strstr(buf, "id=\"ood-table\""), *sv = strstr(buf, "id=\"svg-ood-dist-0\"");
    CHECK(tb && sv && !strstr(buf, "svg-ood-dist-1") && strstr(tb, "<b>0.7800</b>") && strstr(tb, "66.7%"));
    int bars = 0;
    for (const char *q = sv, *end = sv ? strstr(sv, "</svg>") : NULL; q && (q = strstr(q, "<rect")) && q < end; q++) bars++;
    CHECK_MSG(bars >= 4, "%d rects in the distribution chart", bars);
    CHECK(sv && strstr(sv, "stroke-dasharray=\"5 3\""));
    CHECK(strstr(buf, "</html>"));
    free(buf);

    f = open_memstream(&buf, &len);
    dn_eval_report_table(&r, f);
    fclose(f);
    /* the five class rows ("[ i] ...") have equal byte length (ASCII names here except the last) */
    int lens[5] = {0}, found = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
        if (line[0] == '[' && line[1] == ' ' && strstr(line, "0.") && found < 5 && !strstr(line, "  0  ")) lens[found++] = (int)strlen(line);
    CHECK(found == 5 && lens[0] == lens[1] && lens[1] == lens[2] && lens[2] == lens[3]);
    free(buf);
    f = open_memstream(&buf, &len);
    dn_eval_report_table(&r, f);
    fclose(f);
    CHECK(strstr(buf, "unknown set <b>odd & \"set\": 3 images, 66.7% flagged unknown") &&
          strstr(buf, "combo      0.7800       0.2500  (model's score)") && strstr(buf, "msp        0.7900"));
    free(buf);
    dn_ood_eval_free(&oe);
    dn_eval_report_free(&r);
    dn_model_free(m);
}

/* dn_ood_eval_list refuses a missing path, a folder without images and a 17th set, naming it */
TEST(ood_sets_listing_errors) {
    dn_ood_eval e;
    memset(&e, 0, sizeof e);
    const char *missing[1] = {"/nonexistent/dn_ood_set"};
    CHECK(dn_ood_eval_list(&e, missing, 1) == DN_ERR_ARG);
    CHECK_MSG(strstr(dn_last_error(), "--ood /nonexistent/dn_ood_set: cannot access"), "%s", dn_last_error());
    dn_ood_eval_free(&e);
    char dir[] = "/tmp/dn_ood_empty_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    const char *empty[1] = {dir};
    CHECK(dn_ood_eval_list(&e, empty, 1) == DN_ERR_ARG && strstr(dn_last_error(), "no image files"));
    dn_ood_eval_free(&e);
    const char *many[DN_OOD_MAX_SETS + 1];
    for (int i = 0; i <= DN_OOD_MAX_SETS; i++) many[i] = dir;
    CHECK(dn_ood_eval_list(&e, many, DN_OOD_MAX_SETS + 1) == DN_ERR_ARG && strstr(dn_last_error(), "at most 16"));
    dn_ood_eval_free(&e);
    rmdir(dir);
}

/* ------------------------------------------------------------ end to end
 * Data: a synthetic ImageFolder (6 classes x 14, 40 px), split by the dataset
 * code into a manifest. Model: the narrow fixture ResNet (r18n.pth) at 32 px
 * with a nearest-class-mean head computed here from the train features, so it
 * is better than chance and deterministic without depending on the trainer. */

static char g_dir[256];
static const char *g_bin;
static char g_model[320], g_manifest[320], g_data[320];

static int run(const char *args, char **out, char **err) {
    char cmd[4096], o[300], e[300];
    snprintf(o, sizeof o, "%s/.stdout", g_dir);
    snprintf(e, sizeof e, "%s/.stderr", g_dir);
    snprintf(cmd, sizeof cmd, "\"%s\" eval %s >\"%s\" 2>\"%s\"", g_bin, args, o, e);
    int st = system(cmd);
    *out = slurp(o, NULL);
    *err = slurp(e, NULL);
    if (!*out) *out = calloc(1, 1);
    if (!*err) *err = calloc(1, 1);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* Logits of the items of `split` with model m (raw, T = 1). */
static int split_logits(const dn_model *m, const dn_dataset *ds, int split, float **lg, int **y, int *n) {
    const char **paths;
    int *labels;
    if (dn_dataset_select(ds, split, &paths, &labels, n)) return -1;
    dn_session *s = NULL;
    if (dn_session_new(m, 1, 1, &s)) return -1;
    int k = m->num_classes;
    *lg = malloc((size_t)*n * k * sizeof **lg);
    *y = labels;
    float *in = dn_session_input(s);
    int bad = 0;
    for (int i = 0; i < *n; i++) {
        dn_image img = {0};
        bad |= dn_image_load(paths[i], &img) || dn_preprocess(&img, &m->pp, in) ||
               dn_session_forward(s, in, 1, *lg + (size_t)i * k);
        dn_image_free(&img);
    }
    dn_session_free(s);
    free(paths);
    return bad ? -1 : 0;
}

static int build_model(void) {
    dn_dataset *ds = NULL;
    dn_model *m = NULL;
    dn_session *s = NULL;
    const char **paths = NULL;
    int *labels = NULL, n = 0, ok = 0;
    float *feat = NULL;
    double *mu = NULL;
    int cnt[16] = {0};
    if (dn_dataset_load_manifest(g_manifest, &ds)) goto out;
    if (dn_model_load_ex("tests/fixtures/resnet/r18n.pth", 1, &m)) goto out;
    if (dn_model_new_head(m, ds->nclasses, (const char *const *)ds->classes, 7)) goto out;
    m->pp.resize = 64;
    m->pp.crop = 64;
    if (dn_session_new(m, 1, 1, &s) || dn_dataset_select(ds, DN_SPLIT_TRAIN, &paths, &labels, &n)) goto out;
    int d = m->feat_dim, k = ds->nclasses;
    feat = malloc((size_t)n * d * sizeof *feat);
    mu = calloc((size_t)k * d, sizeof *mu);
    float *in = dn_session_input(s);
    for (int i = 0; i < n; i++) {
        dn_image img = {0};
        int bad = dn_image_load(paths[i], &img) || dn_preprocess(&img, &m->pp, in) ||
                  dn_session_features(s, in, 1, feat + (size_t)i * d);
        dn_image_free(&img);
        if (bad) goto out;
        for (int j = 0; j < d; j++) mu[(size_t)labels[i] * d + j] += feat[(size_t)i * d + j];
        cnt[labels[i]]++;
    }
    double spread = 0;
    for (int c = 0; c < k; c++)
        for (int j = 0; j < d; j++) mu[(size_t)c * d + j] /= cnt[c] ? cnt[c] : 1;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            double t = feat[(size_t)i * d + j] - mu[(size_t)labels[i] * d + j];
            spread += t * t;
        }
    spread /= n;
    /* logits = -alpha/2 |x - mu_c|^2 + const: nearest class mean, moderately confident */
    double alpha = 1.0 / (spread > 0 ? spread : 1);
    for (int c = 0; c < k; c++) {
        double sq = 0;
        for (int j = 0; j < d; j++) {
            m->fc_w[(size_t)c * d + j] = (float)(alpha * mu[(size_t)c * d + j]);
            sq += mu[(size_t)c * d + j] * mu[(size_t)c * d + j];
        }
        m->fc_b[c] = (float)(-alpha * sq / 2);
    }
    ok = dn_model_save(m, g_model) == DN_OK;
out:
    if (!ok) printf("  setup: %s\n", dn_last_error());
    free(feat);
    free(mu);
    free(paths);
    free(labels);
    dn_session_free(s);
    dn_model_free(m);
    dn_dataset_free(ds);
    return ok;
}

static int setup(void) {
    g_bin = getenv("DN_BIN");
    if (!g_bin || access(g_bin, X_OK) != 0) return 0;
    snprintf(g_dir, sizeof g_dir, "/tmp/dn_test_eval_XXXXXX");
    if (!mkdtemp(g_dir)) return 0;
    snprintf(g_data, sizeof g_data, "%s/data", g_dir);
    snprintf(g_manifest, sizeof g_manifest, "%s/split.csv", g_dir);
    snprintf(g_model, sizeof g_model, "%s/model.safetensors", g_dir);
    dn_synth_cfg cfg;
    dn_synth_cfg_default(&cfg);
    cfg.per_class = 14;
    cfg.size = 64;
    cfg.seed = 5;
    dn_dataset *ds = NULL;
    dn_split_cfg sc;
    dn_split_cfg_default(&sc);
    int ok = dn_synth_write(g_data, &cfg, NULL) == DN_OK && dn_dataset_scan(g_data, &ds) == DN_OK &&
             dn_dataset_split(ds, &sc) == DN_OK && dn_dataset_write_manifest(ds, g_manifest) == DN_OK;
    dn_dataset_free(ds);
    if (!ok || !build_model()) { printf("  setup failed: %s\n", dn_last_error()); g_dir[0] = 0; return 0; }
    return 1;
}

#define NEED_SETUP() do { if (!g_dir[0]) SKIP("DN_BIN not set or setup failed (run through tests/run.sh)"); } while (0)

static double jnum(const dn_json *root, const char *a, const char *b) {
    const dn_json *v = dn_json_get(root, a);
    if (b) v = dn_json_get(v, b);
    return dn_json_num(v, NAN);
}

TEST(eval_end_to_end) {
    NEED_SETUP();
    char args[2048], *out, *err, cal[300], html[300], js[300];
    snprintf(cal, sizeof cal, "%s/calibrated.safetensors", g_dir);
    snprintf(html, sizeof html, "%s/report.html", g_dir);
    snprintf(js, sizeof js, "%s/report.json", g_dir);
    snprintf(args, sizeof args, "--model %s --manifest %s --calibrate-on val --threshold-target-accuracy 0.9 "
             "--batch 5 --threads 1 --format json --write-model %s --html %s --json %s", g_model, g_manifest, cal, html, js);
    int rc = run(args, &out, &err);
    CHECK_MSG(rc == 0, "exit %d: %s", rc, err);
    dn_json *r = dn_json_parse(out, strlen(out), NULL, 0);
    CHECK_MSG(r, "stdout is not JSON: %.300s", out);
    char *file = slurp(js, NULL);
    CHECK(file && !strcmp(file, out)); /* --json FILE holds the same document */
    free(file);
    if (!r) { free(out); free(err); return; }

    /* independent computation of the same figures */
    dn_dataset *ds = NULL;
    dn_model *m = NULL, *mc = NULL;
    CHECK(dn_dataset_load_manifest(g_manifest, &ds) == DN_OK);
    CHECK(dn_model_load(g_model, &m) == DN_OK);
    float *lt = NULL, *lv = NULL;
    int *yt = NULL, *yv = NULL, nt = 0, nv = 0, k = m->num_classes;
    CHECK(split_logits(m, ds, DN_SPLIT_TEST, &lt, &yt, &nt) == 0);
    CHECK(split_logits(m, ds, DN_SPLIT_VAL, &lv, &yv, &nv) == 0);
    CHECK(nt > 0 && nv > 0);
    dn_temp_fit fit;
    CHECK(dn_calib_fit_temperature(lv, yv, nv, k, &fit) == DN_OK);
    double T = jnum(r, "calibration", "temperature");
    printf("  test %d images, val %d; T %.6f (fitted here %.6f), accuracy %.4f, threshold %.4f\n", nt, nv, T,
           fit.temperature, jnum(dn_json_get(r, "metrics"), "accuracy", NULL), jnum(r, "threshold", "value"));
    CHECK_NEAR(T, fit.temperature, 1e-6 * fit.temperature);
    CHECK(!fit.at_bound); /* this fixture exercises an interior optimum */
    CHECK(jnum(r, "data", "evaluated") == nt && jnum(r, "data", "skipped") == 0);
    float *pr = malloc((size_t)nt * k * sizeof *pr);
    dn_softmax_t(lt, nt, k, (float)T, pr);
    int correct = 0;
    int64_t cm[36] = {0};
    float *conf = malloc((size_t)nt * sizeof *conf);
    uint8_t *ok = malloc((size_t)nt);
    for (int i = 0; i < nt; i++) {
        int b = 0;
        for (int j = 1; j < k; j++) if (pr[(size_t)i * k + j] > pr[(size_t)i * k + b]) b = j;
        correct += b == yt[i];
        cm[yt[i] * k + b]++;
        conf[i] = pr[(size_t)i * k + b];
        ok[i] = b == yt[i];
    }
    const dn_json *mt = dn_json_get(r, "metrics");
    CHECK_NEAR(jnum(mt, "accuracy", NULL), (double)correct / nt, 1e-6);
    const dn_json *conf_m = dn_json_get(mt, "confusion");
    CHECK(dn_json_len(conf_m) == (size_t)k);
    for (int t = 0; t < k; t++)
        for (int c = 0; c < k; c++) CHECK(dn_json_num(dn_json_at(dn_json_at(conf_m, t), c), -1) == cm[t * k + c]);
    CHECK(correct > nt / 6); /* the class-mean head is better than chance */
    /* ECE before and after as metrics.c computes them */
    dn_eval_metrics e0, e1;
    float *p1 = malloc((size_t)nt * k * sizeof *p1);
    dn_softmax_t(lt, nt, k, 1.0f, p1);
    CHECK(dn_eval_metrics_compute(k, nt, yt, p1, NULL, 3, &e0) == DN_OK);
    CHECK(dn_eval_metrics_compute(k, nt, yt, pr, NULL, 3, &e1) == DN_OK);
    CHECK_NEAR(jnum(r, "calibration", "ece_before"), e0.ece, 2e-6);
    CHECK_NEAR(jnum(r, "calibration", "ece_after"), e1.ece, 2e-6);
    CHECK_NEAR(jnum(mt, "top3_accuracy", NULL), e1.topk_accuracy, 1e-6);
    CHECK_NEAR(jnum(mt, "macro_f1", NULL), e1.macro_f1, 1e-6);
    dn_eval_metrics_free(&e0);
    dn_eval_metrics_free(&e1);
    /* the threshold and its coverage on test */
    float thr = (float)jnum(r, "threshold", "value");
    dn_cov_point cp = dn_calib_at_threshold(conf, ok, nt, thr);
    const dn_json *th = dn_json_get(r, "threshold");
    CHECK_NEAR(jnum(th, "evaluated", "coverage"), cp.coverage, 1e-6);
    CHECK_NEAR(jnum(th, "evaluated", "accuracy"), cp.accuracy, 1e-6);
    CHECK(jnum(th, "fit", "accuracy") >= 0.9 || !dn_json_bool(dn_json_get(th, "target_reached"), 1));
    CHECK((int)jnum(th, "uncertain", NULL) == nt - (int)cp.covered);
    const dn_json *ubc = dn_json_get(th, "uncertain_by_class");
    int usum = 0, uwant[6] = {0};
    for (int i = 0; i < nt; i++) uwant[yt[i]] += conf[i] < thr;
    CHECK(dn_json_len(ubc) == (size_t)k);
    for (int c = 0; c < k && c < 6; c++) {
        usum += (int)dn_json_num(dn_json_at(ubc, c), 0);
        CHECK(dn_json_num(dn_json_at(ubc, c), -1) == uwant[c]);
    }
    CHECK(usum == nt - (int)cp.covered);
    const dn_json *curve = dn_json_get(th, "coverage_curve");
    CHECK(dn_json_len(curve) >= 1);
    CHECK(dn_json_num(dn_json_at(dn_json_at(curve, dn_json_len(curve) - 1), 1), 0) == 1.0);
    CHECK(dn_json_len(dn_json_get(r, "misclassified")) == (size_t)(nt - correct));

    /* the written model carries T and the threshold; predict marks the same images uncertain */
    CHECK(dn_model_load(cal, &mc) == DN_OK);
    if (mc) {
        CHECK_NEAR(mc->temperature, T, 1e-6 * T);
        CHECK(mc->threshold == thr);
        CHECK(dn_meta_get(&mc->meta, "calibration") && strstr(dn_meta_get(&mc->meta, "calibration"), "\"temperature_fitted\":true"));
        dn_session *s = NULL;
        CHECK(dn_session_new(mc, 1, 1, &s) == DN_OK);
        const char **paths;
        int *labels, n2;
        CHECK(dn_dataset_select(ds, DN_SPLIT_TEST, &paths, &labels, &n2) == DN_OK);
        int unc = 0;
        for (int i = 0; s && i < n2; i++) {
            dn_image img = {0};
            dn_prediction p;
            CHECK(dn_image_load(paths[i], &img) == DN_OK);
            CHECK(dn_session_classify(s, &img, &p, NULL) == DN_OK);
            unc += p.uncertain;
            dn_image_free(&img);
        }
        CHECK_MSG(unc == nt - (int)cp.covered, "engine marks %d uncertain, eval says %d", unc, nt - (int)cp.covered);
        free(paths);
        free(labels);
        dn_session_free(s);
    }
    /* the table format carries the same accuracy */
    free(out); free(err);
    snprintf(args, sizeof args, "--model %s --manifest %s --threads 1", cal, g_manifest);
    rc = run(args, &out, &err);
    CHECK_MSG(rc == 0, "exit %d: %s", rc, err);
    char want[64];
    snprintf(want, sizeof want, "accuracy     %.4f", (double)correct / nt);
    CHECK_MSG(strstr(out, want), "table lacks '%s':\n%s", want, out);
    CHECK(strstr(out, "confusion matrix") && strstr(out, "stored in model"));

    free(conf); free(ok); free(p1); free(pr);
    free(lt); free(lv); free(yt); free(yv);
    dn_model_free(m);
    dn_model_free(mc);
    dn_dataset_free(ds);
    dn_json_free(r);
    free(out);
    free(err);
}

/* The same network with its head rows (and class names) permuted must give
 * the same per-class figures by name: classes are mapped by name. */
TEST(eval_class_order_mapped_by_name) {
    NEED_SETUP();
    dn_model *m = NULL;
    CHECK(dn_model_load(g_model, &m) == DN_OK);
    if (!m) return;
    int k = m->num_classes, d = m->feat_dim;
    char perm_path[320];
    snprintf(perm_path, sizeof perm_path, "%s/permuted.safetensors", g_dir);
    dn_model *p = NULL;
    CHECK(dn_model_clone(m, &p) == DN_OK);
    for (int c = 0; c < k; c++) {
        int src = k - 1 - c;
        memcpy(p->fc_w + (size_t)c * d, m->fc_w + (size_t)src * d, (size_t)d * sizeof(float));
        p->fc_b[c] = m->fc_b[src];
        free(p->class_names[c]);
        p->class_names[c] = dn_strdup(m->class_names[src]);
    }
    CHECK(dn_model_save(p, perm_path) == DN_OK);
    char args[1024], *o1, *e1, *o2, *e2;
    snprintf(args, sizeof args, "--model %s --manifest %s --split all --threads 1 --format json", g_model, g_manifest);
    CHECK(run(args, &o1, &e1) == 0);
    snprintf(args, sizeof args, "--model %s --data %s --threads 1 --format json", perm_path, g_data);
    CHECK(run(args, &o2, &e2) == 0);
    dn_json *a = dn_json_parse(o1, strlen(o1), NULL, 0), *b = dn_json_parse(o2, strlen(o2), NULL, 0);
    CHECK(a && b);
    if (a && b) {
        CHECK(!strcmp(dn_json_str(dn_json_get(b, "data") ? dn_json_get(dn_json_get(b, "data"), "split") : NULL, ""), "all"));
        CHECK(jnum(dn_json_get(a, "metrics"), "accuracy", NULL) == jnum(dn_json_get(b, "metrics"), "accuracy", NULL));
        const dn_json *pa = dn_json_get(dn_json_get(a, "metrics"), "per_class"),
                      *pb = dn_json_get(dn_json_get(b, "metrics"), "per_class");
        CHECK(dn_json_len(pa) == (size_t)k && dn_json_len(pb) == (size_t)k);
        for (int c = 0; c < k; c++) {
            const dn_json *x = dn_json_at(pa, c), *y = dn_json_at(pb, k - 1 - c);
            CHECK(!strcmp(dn_json_str(dn_json_get(x, "class"), "a"), dn_json_str(dn_json_get(y, "class"), "b")));
            CHECK(jnum(x, "f1", NULL) == jnum(y, "f1", NULL) && jnum(x, "support", NULL) == jnum(y, "support", NULL));
        }
    }
    dn_json_free(a);
    dn_json_free(b);
    free(o1); free(e1); free(o2); free(e2);
    dn_model_free(p);
    dn_model_free(m);
}

/* Each case: exit 2 and exactly one stderr line containing the expected words. */
static void expect_error(const char *args, const char *what1, const char *what2) {
    char *out, *err;
    int rc = run(args, &out, &err);
    CHECK_MSG(rc == 2, "'%s': exit %d, stderr: %s", args, rc, err);
    CHECK_MSG(count_lines(err) == 1 || (strstr(err, "usage:") && strstr(err, what1)), "'%s': stderr: %s", args, err);
    CHECK_MSG(strstr(err, what1) && (!what2 || strstr(err, what2)), "'%s': stderr lacks '%s'/'%s': %s", args, what1,
              what2 ? what2 : "", err);
    CHECK_MSG(!strstr(err, "AddressSanitizer") && !strstr(err, "runtime error"), "%s", err);
    free(out);
    free(err);
}

TEST(eval_class_mismatch) {
    NEED_SETUP();
    /* a model trained on other classes: data class unknown to the model */
    dn_model *m = NULL, *o = NULL;
    CHECK(dn_model_load(g_model, &m) == DN_OK);
    if (!m) return;
    CHECK(dn_model_clone(m, &o) == DN_OK);
    free(o->class_names[2]);
    o->class_names[2] = dn_strdup("weld_porosity");
    char other[320], args[1024];
    snprintf(other, sizeof other, "%s/other_classes.safetensors", g_dir);
    CHECK(dn_model_save(o, other) == DN_OK);
    snprintf(args, sizeof args, "--model %s --manifest %s", other, g_manifest);
    expect_error(args, "is not a class of model", "inclusion");
    snprintf(args, sizeof args, "--model %s --data %s", other, g_data);
    expect_error(args, "is not a class of model", "weld_porosity");
    /* the data holding a subset of the model's classes is fine (noted) */
    char sub[320], cmd[2048];
    snprintf(sub, sizeof sub, "%s/subset", g_dir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp -r %s/crack %s/spot %s/", sub, g_data, g_data, sub);
    CHECK(system(cmd) == 0);
    snprintf(args, sizeof args, "--model %s --data %s --threads 1 --format json", g_model, sub);
    char *out, *err;
    int rc = run(args, &out, &err);
    CHECK_MSG(rc == 0, "exit %d: %s", rc, err);
    CHECK(strstr(err, "note: model class 'clean' does not occur"));
    dn_json *j = dn_json_parse(out, strlen(out), NULL, 0);
    CHECK(j && jnum(j, "data", "evaluated") == 28 && jnum(j, "data", "classes_absent_from_data") == 4);
    dn_json_free(j);
    free(out);
    free(err);
    dn_model_free(o);
    dn_model_free(m);
}

TEST(eval_manifest_missing_files) {
    NEED_SETUP();
    char csv[320], args[1024];
    snprintf(csv, sizeof csv, "%s/missing.csv", g_dir);
    FILE *f = fopen(csv, "w");
    CHECK(f);
    if (!f) return;
    fprintf(f, "path,label,split\ndata/crack/crack_0000.png,crack,test\ndata/crack/gone_1.png,crack,test\n"
               "data/spot/spot_0000.png,spot,test\ndata/spot/gone_2.png,spot,val\n");
    fclose(f);
    snprintf(args, sizeof args, "--model %s --manifest %s", g_model, csv);
    expect_error(args, "missing.csv", "gone_1.png");
}

TEST(eval_bad_arguments) {
    NEED_SETUP();
    char args[1024], junk[320];
    snprintf(args, sizeof args, "--manifest %s", g_manifest);
    expect_error(args, "--model is required", NULL);
    snprintf(args, sizeof args, "--model %s", g_model);
    expect_error(args, "exactly one of --data", NULL);
    snprintf(args, sizeof args, "--model %s --data %s --manifest %s", g_model, g_data, g_manifest);
    expect_error(args, "exactly one of --data", NULL);
    snprintf(args, sizeof args, "--model %s --manifest %s --threshold 1.5", g_model, g_manifest);
    expect_error(args, "--threshold", "[0, 1]");
    snprintf(args, sizeof args, "--model %s --manifest %s --threshold-target-accuracy 0", g_model, g_manifest);
    expect_error(args, "--threshold-target-accuracy", NULL);
    snprintf(args, sizeof args, "--model %s --manifest %s --threshold 0.5 --threshold-target-accuracy 0.9", g_model,
             g_manifest);
    expect_error(args, "exclude each other", NULL);
    snprintf(args, sizeof args, "--model %s --manifest %s --split holdout", g_model, g_manifest);
    expect_error(args, "--split", "holdout");
    snprintf(args, sizeof args, "--model %s --manifest %s --format xml", g_model, g_manifest);
    expect_error(args, "--format", "xml");
    snprintf(args, sizeof args, "--model %s --data %s --calibrate-on val", g_model, g_data);
    expect_error(args, "no val split", NULL);
    snprintf(args, sizeof args, "--model %s/nope.safetensors --data %s", g_dir, g_data);
    expect_error(args, "nope.safetensors", NULL);
    snprintf(junk, sizeof junk, "%s/junk.safetensors", g_dir);
    FILE *f = fopen(junk, "w");
    if (f) { fputs("definitely not a model", f); fclose(f); }
    snprintf(args, sizeof args, "--model %s --data %s", junk, g_data);
    expect_error(args, "junk.safetensors", NULL);
    snprintf(args, sizeof args, "--model %s --data %s/nowhere", g_model, g_dir);
    expect_error(args, "nowhere", NULL);
    snprintf(args, sizeof args, "--model %s --data %s --html /nonexistent-dir/r.html --threads 1", g_model, g_data);
    expect_error(args, "/nonexistent-dir/r.html", "cannot write");
    snprintf(args, sizeof args, "--model %s --data %s --bogus", g_model, g_data);
    expect_error(args, "--bogus", NULL);
    /* the one grammar: short forms and --opt=value reach the same checks */
    snprintf(args, sizeof args, "-m %s --manifest=%s --target-escape=1", g_model, g_manifest);
    expect_error(args, "--target-escape '1'", "[0, 1)");
    snprintf(args, sizeof args, "-m %s -d %s stray", g_model, g_data);
    expect_error(args, "unexpected argument 'stray'", NULL);
}


/* --calibrate-on CSV: every image of another manifest is the calibration set.
 * A manifest of exactly the val rows gives the same temperature and threshold
 * as --calibrate-on val; a calibration set with a class the model lacks fails. */
TEST(eval_calibrate_on_other_data) {
    NEED_SETUP();
    dn_dataset *ds = NULL;
    CHECK(dn_dataset_load_manifest(g_manifest, &ds) == DN_OK);
    if (!ds) return;
    char csv[320], bad[320], args[2048];
    snprintf(csv, sizeof csv, "%s/line_images.csv", g_dir);
    snprintf(bad, sizeof bad, "%s/line_bad.csv", g_dir);
    FILE *f = fopen(csv, "w"), *fb = fopen(bad, "w");
    CHECK(f && fb);
    if (!f || !fb) { if (f) fclose(f); if (fb) fclose(fb); dn_dataset_free(ds); return; }
    fprintf(f, "path,label\n");
    fprintf(fb, "path,label\n");
    int nv = 0;
    for (int i = 0; i < ds->n; i++)
        if (ds->items[i].split == DN_SPLIT_VAL) {
            fprintf(f, "%s,%s\n", ds->items[i].path, ds->classes[ds->items[i].label]);
            fprintf(fb, "%s,%s\n", ds->items[i].path, nv % 2 ? "burr" : ds->classes[ds->items[i].label]);
            nv++;
        }
    fclose(f);
    fclose(fb);
    char *o1, *e1, *o2, *e2;
    snprintf(args, sizeof args, "--model %s --manifest %s --calibrate-on val --threads 1 --format json", g_model, g_manifest);
    CHECK(run(args, &o1, &e1) == 0);
    snprintf(args, sizeof args, "--model %s --manifest %s --calibrate-on %s --threads 1 --format json", g_model,
             g_manifest, csv);
    int rc = run(args, &o2, &e2);
    CHECK_MSG(rc == 0, "exit %d: %s", rc, e2);
    dn_json *a = dn_json_parse(o1, strlen(o1), NULL, 0), *b = dn_json_parse(o2, strlen(o2), NULL, 0);
    CHECK(a && b);
    if (a && b) {
        CHECK(jnum(a, "calibration", "temperature") == jnum(b, "calibration", "temperature"));
        CHECK(jnum(a, "threshold", "value") == jnum(b, "threshold", "value"));
        CHECK(jnum(dn_json_get(b, "calibration"), "fit", "images") == nv);
        CHECK(strstr(dn_json_str(dn_json_get(dn_json_get(b, "calibration"), "source"), ""), "line_images.csv"));
    }
    dn_json_free(a);
    dn_json_free(b);
    free(o1); free(e1); free(o2); free(e2);
    snprintf(args, sizeof args, "--model %s --manifest %s --calibrate-on %s", g_model, g_manifest, bad);
    expect_error(args, "class 'burr' of", "line_bad.csv");
    snprintf(args, sizeof args, "--model %s --manifest %s --calibrate-on %s/none.csv", g_model, g_manifest, g_dir);
    expect_error(args, "--calibrate-on", "none.csv");
    dn_dataset_free(ds);
}


/* A test image whose bytes equal a training image is not unseen: dropped with
 * a warning (as the trainer does), kept with --keep-dups. */
TEST(eval_drops_cross_split_duplicates) {
    NEED_SETUP();
    dn_dataset *ds = NULL;
    CHECK(dn_dataset_load_manifest(g_manifest, &ds) == DN_OK);
    if (!ds) return;
    const char *train_img = NULL, *cls = NULL;
    int ntest = 0;
    for (int i = 0; i < ds->n; i++) {
        if (ds->items[i].split == DN_SPLIT_TRAIN && !train_img) {
            train_img = ds->items[i].path;
            cls = ds->classes[ds->items[i].label];
        }
        ntest += ds->items[i].split == DN_SPLIT_TEST;
    }
    char copy[320], csv[320], cmd[2048], args[1024];
    snprintf(copy, sizeof copy, "%s/copy_of_train.png", g_dir);
    snprintf(csv, sizeof csv, "%s/with_dup.csv", g_dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s' && cp '%s' '%s' && printf '%%s,%%s,test\\n' '%s' '%s' >> '%s'", train_img,
             copy, g_manifest, csv, copy, cls, csv);
    CHECK(system(cmd) == 0);
    char *out, *err;
    snprintf(args, sizeof args, "--model %s --manifest %s --threads 1 --format json", g_model, csv);
    CHECK(run(args, &out, &err) == 0);
    CHECK_MSG(strstr(err, "copy_of_train.png") && strstr(err, "dropped the second copy") &&
              strstr(err, "1 image(s) also present in an earlier split dropped"), "%s", err);
    dn_json *j = dn_json_parse(out, strlen(out), NULL, 0);
    CHECK(j && jnum(j, "data", "evaluated") == ntest && jnum(j, "data", "duplicates_dropped") == 1);
    dn_json_free(j);
    free(out);
    free(err);
    snprintf(args, sizeof args, "--model %s --manifest %s --threads 1 --format json --keep-dups", g_model, csv);
    CHECK(run(args, &out, &err) == 0);
    j = dn_json_parse(out, strlen(out), NULL, 0);
    CHECK(j && jnum(j, "data", "evaluated") == ntest + 1 && jnum(j, "data", "duplicates_dropped") == 0);
    CHECK(!strstr(err, "duplicate"));
    dn_json_free(j);
    free(out);
    free(err);
    dn_dataset_free(ds);
}

TEST(eval_unreadable_images) {
    NEED_SETUP();
    char dir[320], cmd[2048], args[1024];
    snprintf(dir, sizeof dir, "%s/withbad", g_dir);
    snprintf(cmd, sizeof cmd, "cp -r %s %s && printf 'not a png' > %s/spot/broken.png", g_data, dir, dir);
    CHECK(system(cmd) == 0);
    char *out, *err;
    snprintf(args, sizeof args, "--model %s --data %s --threads 1 --format json", g_model, dir);
    int rc = run(args, &out, &err);
    CHECK_MSG(rc == 1, "exit %d: %s", rc, err);
    CHECK(strstr(err, "skipped:") && strstr(err, "broken.png") && strstr(err, "1 unreadable image(s) skipped"));
    dn_json *j = dn_json_parse(out, strlen(out), NULL, 0);
    CHECK(j && jnum(j, "data", "skipped") == 1 && jnum(j, "data", "evaluated") == 84 && jnum(j, "data", "listed") == 85);
    dn_json_free(j);
    free(out);
    free(err);
    snprintf(args, sizeof args, "--model %s --data %s --threads 1 --strict", g_model, dir);
    expect_error(args, "broken.png", "--strict");
}

/* ------------------------------------------------------------ chromium */

/* Escape / false-reject figures and a policy chosen for a target escape rate,
 * recomputed here from the logits; the written model carries the policy and
 * a later eval applies it. */
TEST(eval_good_class_and_target_escape) {
    NEED_SETUP();
    char args[2048], *out, *err, pol[300];
    snprintf(pol, sizeof pol, "%s/policy.safetensors", g_dir);
    dn_dataset *ds = NULL;
    dn_model *m = NULL;
    CHECK(dn_dataset_load_manifest(g_manifest, &ds) == DN_OK);
    CHECK(dn_model_load(g_model, &m) == DN_OK);
    if (!ds || !m) { dn_dataset_free(ds); dn_model_free(m); return; }
    int k = m->num_classes, g = 0, nt = 0, nv = 0, *yt = NULL, *yv = NULL;
    CHECK(!strcmp(m->class_names[g], "clean"));
    float *lt = NULL, *lv = NULL;
    CHECK(split_logits(m, ds, DN_SPLIT_TEST, &lt, &yt, &nt) == 0 && split_logits(m, ds, DN_SPLIT_VAL, &lv, &yv, &nv) == 0);
    float *pt = malloc((size_t)nt * k * sizeof *pt), *pv = malloc((size_t)nv * k * sizeof *pv);
    dn_softmax_t(lt, nt, k, m->temperature, pt);
    dn_softmax_t(lv, nv, k, m->temperature, pv);
    /* the lowest escape rate on val that still accepts a good part: the target, reachable exactly */
    int vgood = 0;
    for (int i = 0; i < nv; i++) vgood += yv[i] == g;
    double target = 1;
    for (int i = 0; i < nv; i++) {
        int esc = 0, accg = 0;
        for (int j = 0; j < nv; j++)
            if (pv[(size_t)j * k + g] >= pv[(size_t)i * k + g]) { esc += yv[j] != g; accg += yv[j] == g; }
        if (accg > 0 && (double)esc / (nv - vgood) < target) target = (double)esc / (nv - vgood);
    }
    if (target > 0) { /* just below it: unreachable, one line, nothing written */
        snprintf(args, sizeof args, "--model %s --manifest %s --target-escape %.17g --write-model %s", g_model,
                 g_manifest, target * 0.999, pol);
        expect_error(args, "cannot be reached on validation", NULL);
        CHECK(access(pol, F_OK) != 0);
    }
    snprintf(args, sizeof args, "--model %s --manifest %s --target-escape %.17g --threads 1 --format json "
             "--write-model %s --html %s/policy.html --ordinal", g_model, g_manifest, target, pol, g_dir);
    int rc = run(args, &out, &err);
    /* the most accepting threshold on val (a p[good] value) with escape <= target that accepts a good part */
    float want_t = -1;
    for (int i = 0; i < nv; i++) {
        float t = pv[(size_t)i * k + g];
        int esc = 0, accg = 0;
        for (int j = 0; j < nv; j++)
            if (pv[(size_t)j * k + g] >= t) { esc += yv[j] != g; accg += yv[j] == g; }
        if (accg > 0 && (double)esc / (nv - vgood) <= target && (want_t < 0 || t < want_t)) want_t = t;
    }
    printf("  val %d images (%d good): target escape %.4f, expected good threshold %.6f\n", nv, vgood, target, want_t);
    CHECK(want_t >= 0);
    {
        CHECK_MSG(rc == 0, "exit %d: %s", rc, err);
        dn_json *r = dn_json_parse(out, strlen(out), NULL, 0);
        const dn_json *gc = dn_json_get(r, "good_class");
        CHECK_MSG(gc, "no good_class in %.300s", out);
        CHECK(!strcmp(dn_json_str(dn_json_get(gc, "name"), ""), "clean"));
        CHECK(strstr(dn_json_str(dn_json_get(gc, "source"), ""), "auto-detected"));
        float t = (float)jnum(gc, "decision", "good_threshold");
        CHECK(t == want_t);
        /* escapes and false rejects on test under p[good] >= t */
        int esc = 0, ndef = 0, fr = 0, ngood = 0, esc_c[6] = {0}, sup_c[6] = {0};
        for (int i = 0; i < nt; i++) {
            int acc = pt[(size_t)i * k + g] >= t;
            if (yt[i] == g) { ngood++; fr += !acc; }
            else { ndef++; esc += acc; esc_c[yt[i]] += acc; sup_c[yt[i]]++; }
        }
        const dn_json *e = dn_json_get(gc, "escape"), *f = dn_json_get(gc, "false_reject");
        CHECK(jnum(e, "count", NULL) == esc && jnum(e, "of", NULL) == ndef);
        CHECK(jnum(f, "count", NULL) == fr && jnum(f, "of", NULL) == ngood);
        dn_rate w = dn_wilson(esc, ndef);
        CHECK_NEAR(dn_json_num(dn_json_at(dn_json_get(e, "ci95"), 0), -1), w.lo, 1e-5);
        CHECK_NEAR(dn_json_num(dn_json_at(dn_json_get(e, "ci95"), 1), -1), w.hi, 1e-5);
        const dn_json *bc = dn_json_get(gc, "escape_by_class");
        CHECK(dn_json_len(bc) == (size_t)k - 1);
        for (int c = 1; c < k && c < 6; c++) {
            const dn_json *x = dn_json_get(bc, m->class_names[c]);
            CHECK(jnum(x, "count", NULL) == esc_c[c] && jnum(x, "of", NULL) == sup_c[c]);
        }
        CHECK(jnum(dn_json_get(gc, "fit"), "escape", "rate") <= target);
        char hp[320];
        snprintf(hp, sizeof hp, "%s/policy.html", g_dir);
        char *html = slurp(hp, NULL);
        CHECK(html && strstr(html, "id=\"svg-escape-curve\"") && strstr(html, "id=\"chosen-point\"") &&
              strstr(html, "id=\"escape-rate\"") && strstr(html, "id=\"false-reject-rate\"") &&
              strstr(html, "reject unless confidently good"));
        free(html);
        /* the written model: good class + policy; a plain eval applies the stored policy */
        dn_model *mp = NULL;
        dn_policy pp;
        CHECK(dn_model_load(pol, &mp) == DN_OK);
        CHECK(mp && dn_model_policy(mp, &pp) == DN_OK && pp.good == g && pp.good_threshold == t);
        const char *rec = mp ? dn_meta_get(&mp->meta, "decision_policy") : NULL;
        CHECK(rec && strstr(rec, "\"validation\"") && strstr(rec, "\"expected\"") && strstr(rec, "target_escape"));
        dn_model_free(mp);
        /* info says which class is good, that it was auto-detected, and the stored decision */
        char cmd[2400], io[320];
        snprintf(io, sizeof io, "%s/.info", g_dir);
        snprintf(cmd, sizeof cmd, "\"%s\" info %s >%s; \"%s\" info %s >>%s", g_bin, pol, io, g_bin, g_model, io);
        CHECK(system(cmd) == 0);
        char *info = slurp(io, NULL);
        CHECK_MSG(info && strstr(info, "good class:    clean (stored, auto-detected from the class names)") &&
                  strstr(info, "reject unless confidently good") &&
                  strstr(info, "good class:    clean (auto-detected from the class names, not stored)"),
                  "info: %s", info ? info : "");
        free(info);
        free(out); free(err);
        snprintf(args, sizeof args, "--model %s --manifest %s --threads 1", pol, g_manifest);
        rc = run(args, &out, &err);
        CHECK_MSG(rc == 0, "exit %d: %s", rc, err);
        char want[160];
        snprintf(want, sizeof want, "escape rate  %.4f  (%d of %d defective", ndef ? (double)esc / ndef : 0, esc, ndef);
        CHECK_MSG(strstr(out, want) && strstr(out, "stored in model") && strstr(out, "reject unless confidently good"),
                  "table lacks '%s':\n%s", want, out);
        /* another good class: the policy chosen for "clean" is not carried into the new model */
        char pol2[320];
        snprintf(pol2, sizeof pol2, "%s/policy_crack.safetensors", g_dir);
        free(out); free(err);
        snprintf(args, sizeof args, "--model %s --manifest %s --threads 1 --good-class crack --write-model %s", pol,
                 g_manifest, pol2);
        rc = run(args, &out, &err);
        CHECK_MSG(rc == 0, "exit %d: %s", rc, err);
        dn_model *m2 = NULL;
        dn_policy p2;
        CHECK(dn_model_load(pol2, &m2) == DN_OK);
        CHECK(m2 && dn_model_policy(m2, &p2) == DN_OK && p2.good == 1 && p2.good_threshold == 0 &&
              !dn_meta_get(&m2->meta, "decision_policy"));
        dn_model_free(m2);
        free(out); free(err);
        snprintf(args, sizeof args, "--model %s --manifest %s --threads 1", pol, g_manifest);
        rc = run(args, &out, &err);
        /* --ordinal was stored: the later eval reports the ordinal figures by itself */
        CHECK_MSG(strstr(out, "ordinal      mean absolute class error"), "%s", out);
        const dn_json *od = dn_json_get(r, "ordinal");
        CHECK(od && jnum(od, "exact", NULL) + jnum(od, "off_by_one", NULL) + jnum(od, "off_by_more", NULL) == nt);
        dn_json_free(r);
    }
    free(pt); free(pv); free(lt); free(lv); free(yt); free(yv);
    dn_model_free(m);
    dn_dataset_free(ds);
    free(out);
    free(err);
}

/* Bad decision requests: one line, exit 2, no model written. */
TEST(eval_decision_errors) {
    NEED_SETUP();
    char args[2048], outm[300];
    snprintf(outm, sizeof outm, "%s/never.safetensors", g_dir);
    snprintf(args, sizeof args, "--model %s --manifest %s --good-class nosuch --write-model %s", g_model, g_manifest, outm);
    expect_error(args, "--good-class", "'nosuch'");
    snprintf(args, sizeof args, "--model %s --manifest %s --cost escape=abc --write-model %s", g_model, g_manifest, outm);
    expect_error(args, "--cost", "escape=abc");
    snprintf(args, sizeof args, "--model %s --manifest %s --cost escape:dent=3 --write-model %s", g_model, g_manifest, outm);
    expect_error(args, "--cost", "dent");
    snprintf(args, sizeof args, "--model %s --manifest %s --cost escape=3 --target-escape 0.1", g_model, g_manifest);
    expect_error(args, "exclude each other", NULL);
    snprintf(args, sizeof args, "--model %s --manifest %s --target-escape 1.5", g_model, g_manifest);
    expect_error(args, "--target-escape", NULL);
    /* the good class absent from the data */
    char csv[320], line[1024];
    snprintf(csv, sizeof csv, "%s/no_clean.csv", g_dir);
    FILE *in = fopen(g_manifest, "r"), *o = fopen(csv, "w");
    CHECK(in && o);
    if (!in || !o) { if (in) fclose(in); if (o) fclose(o); return; }
    while (fgets(line, sizeof line, in))
        if (!strstr(line, "/clean/")) fputs(line, o);
    fclose(in);
    fclose(o);
    snprintf(args, sizeof args, "--model %s --manifest %s --good-class clean --write-model %s", g_model, csv, outm);
    expect_error(args, "good class 'clean' does not occur", NULL);
    snprintf(args, sizeof args, "--model %s --manifest %s --target-escape 0.1 --write-model %s", g_model, csv, outm);
    expect_error(args, "good class 'clean' does not occur", NULL);
    /* a target validation cannot reach: every part looks certainly good (all tied at p = 1) */
    dn_model *m = NULL;
    CHECK(dn_model_load(g_model, &m) == DN_OK);
    if (m) {
        char sure[320];
        snprintf(sure, sizeof sure, "%s/always_clean.safetensors", g_dir);
        m->fc_b[0] += 1000;
        CHECK(dn_model_save(m, sure) == DN_OK);
        snprintf(args, sizeof args, "--model %s --manifest %s --target-escape 0.05 --write-model %s --html %s/x.html",
                 sure, g_manifest, outm, g_dir);
        expect_error(args, "target escape rate 0.05 cannot be reached on validation", NULL);
        dn_model_free(m);
    }
    CHECK(access(outm, F_OK) != 0);
}

/* train --good-class: refused before training when not a class of the data;
 * stored as given; auto-detected ("clean") and stored when not given. */
TEST(train_good_class_stored) {
    NEED_SETUP();
    char cmd[3000], m1[320], m2[320];
    snprintf(m1, sizeof m1, "%s/good_given.safetensors", g_dir);
    snprintf(m2, sizeof m2, "%s/good_auto.safetensors", g_dir);
    const char *common = "--weights tests/fixtures/resnet/r18n.pth --freeze backbone --epochs 1 --image-size 64 "
                         "--threads 1 --quiet";
    snprintf(cmd, sizeof cmd, "\"%s\" train --data %s %s --out %s --good-class dent >/dev/null 2>%s/.terr", g_bin,
             g_data, common, m1, g_dir);
    int st = system(cmd);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    snprintf(cmd, sizeof cmd, "%s/.terr", g_dir);
    char *err = slurp(cmd, NULL);
    CHECK_MSG(err && strstr(err, "--good-class: 'dent' is not a class of") && count_lines(err) == 1, "%s", err ? err : "");
    free(err);
    CHECK(access(m1, F_OK) != 0);
    snprintf(cmd, sizeof cmd, "\"%s\" train --data %s %s --out %s --good-class crack >/dev/null && \"%s\" train --data %s "
             "%s --out %s >/dev/null", g_bin, g_data, common, m1, g_bin, g_data, common, m2);
    CHECK(system(cmd) == 0);
    dn_model *a = NULL, *b = NULL;
    dn_good_class g;
    CHECK(dn_model_load(m1, &a) == DN_OK && dn_model_load(m2, &b) == DN_OK);
    CHECK(a && dn_model_good_class(a, &g) == DN_OK && g.stored && !g.auto_detected &&
          !strcmp(a->class_names[g.index], "crack"));
    CHECK(b && dn_model_good_class(b, &g) == DN_OK && g.stored && g.auto_detected &&
          !strcmp(b->class_names[g.index], "clean"));
    dn_model_free(a);
    dn_model_free(b);
}

TEST(report_html_renders_in_chromium) {
    NEED_SETUP();
    if (access("/usr/bin/chromium", X_OK) != 0) SKIP("chromium not installed (Debian package chromium)");
    char html[320], js[320], dom[320], png[320], cmd[2048];
    snprintf(html, sizeof html, "%s/report.html", g_dir);
    snprintf(js, sizeof js, "%s/report.json", g_dir);
    snprintf(dom, sizeof dom, "%s/dom.html", g_dir);
    snprintf(png, sizeof png, "%s/shot.png", g_dir);
    if (access(html, R_OK) != 0) SKIP("no report from eval_end_to_end");
    const char *flags = "--headless --no-sandbox --disable-gpu --disable-background-networking "
                        "--disable-component-update --disable-sync --no-first-run";
    snprintf(cmd, sizeof cmd, "timeout 120 chromium %s --user-data-dir=%s/prof1 --dump-dom file://%s > %s 2>/dev/null",
             flags, g_dir, html, dom);
    CHECK(system(cmd) == 0);
    char *d = slurp(dom, NULL), *j = slurp(js, NULL);
    CHECK(d && j);
    if (!d || !j) { free(d); free(j); return; }
    const char *ids[] = {"svg-confusion", "svg-class-bars", "svg-reliability-before", "svg-reliability-after",
                         "svg-coverage", "id=\"accuracy\"", "id=\"per-class\""};
    for (int i = 0; i < 7; i++) CHECK_MSG(strstr(d, ids[i]), "rendered DOM lacks %s", ids[i]);
    dn_json *r = dn_json_parse(j, strlen(j), NULL, 0);
    CHECK(r);
    if (r) {
        char want[96];
        snprintf(want, sizeof want, "id=\"accuracy\">%.2f%%</div>", 100 * jnum(dn_json_get(r, "metrics"), "accuracy", NULL));
        CHECK_MSG(strstr(d, want), "DOM lacks %s", want);
        snprintf(want, sizeof want, "%.4f", jnum(dn_json_get(r, "metrics"), "macro_f1", NULL));
        CHECK_MSG(strstr(d, want), "DOM lacks macro F1 %s", want);
        int nmiss = (int)dn_json_len(dn_json_get(r, "misclassified")), imgs = 0, cams = 0, rects = 0;
        for (const char *p = d; (p = strstr(p, "data:image/png;base64,")); p++) imgs++;
        for (const char *p = d; (p = strstr(p, "class=\"cam\"")); p++) cams++;
        /* a thumbnail and a Grad-CAM overlay per shown mistake (the model has no colour reference: the caption says so) */
        int shown = nmiss < DN_GALLERY_MAX ? nmiss : DN_GALLERY_MAX;
        CHECK_MSG(imgs - cams == shown && cams == shown, "%d images, %d overlays for %d mistakes", imgs, cams, nmiss);
        CHECK(!shown || (strstr(d, "id=\"cam-note\"") && strstr(d, "no Grad-CAM reference")));
        /* one heatmap cell per confusion entry */
        const char *cm = strstr(d, "svg-confusion"), *end = cm ? strstr(cm, "</svg>") : NULL;
        for (const char *p = cm; p && p < end && (p = strstr(p, "<rect")) && p < end; p++) rects++;
        int k = (int)dn_json_len(dn_json_get(dn_json_get(r, "model"), "classes"));
        CHECK_MSG(rects >= k * k, "%d rects in the heatmap for %d classes", rects, k);
        printf("  DOM: %zu bytes, %d thumbnails + %d overlays, %d heatmap rects\n", strlen(d), imgs - cams, cams, rects);
    }
    dn_json_free(r);
    free(d);
    free(j);
    /* a screenshot: non-trivial, coloured content */
    snprintf(cmd, sizeof cmd, "timeout 120 chromium %s --user-data-dir=%s/prof2 --window-size=1100,2400 "
             "--screenshot=%s file://%s >/dev/null 2>&1", flags, g_dir, png, html);
    CHECK(system(cmd) == 0);
    dn_image shot = {0};
    CHECK(dn_image_load(png, &shot) == DN_OK);
    long coloured = 0;
    for (long i = 0; shot.data && i < (long)shot.w * shot.h; i++) {
        const uint8_t *q = shot.data + 3 * i;
        int mx = q[0] > q[1] ? q[0] : q[1], mn = q[0] < q[1] ? q[0] : q[1];
        mx = mx > q[2] ? mx : q[2];
        mn = mn < q[2] ? mn : q[2];
        coloured += mx - mn > 40;
    }
    printf("  screenshot %dx%d, %ld coloured pixels\n", shot.w, shot.h, coloured);
    CHECK(shot.w == 1100 && coloured > 5000);
    dn_image_free(&shot);
}

int main(void) {
    RUN(temperature_matches_torch);
    RUN(temperature_closed_form);
    RUN(temperature_bounds_and_errors);
    RUN(threshold_and_coverage);
    RUN(base64_png_thumbnail);
    RUN(report_writers_escape_and_align);
    RUN(ood_sets_listing_errors);
    setup();
    RUN(eval_end_to_end);
    RUN(eval_class_order_mapped_by_name);
    RUN(eval_class_mismatch);
    RUN(eval_manifest_missing_files);
    RUN(eval_bad_arguments);
    RUN(eval_calibrate_on_other_data);
    RUN(eval_drops_cross_split_duplicates);
    RUN(eval_unreadable_images);
    RUN(eval_good_class_and_target_escape);
    RUN(eval_decision_errors);
    RUN(train_good_class_stored);
    RUN(report_html_renders_in_chromium);
    if (g_dir[0] && !getenv("DN_KEEP_TMP")) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
        if (system(cmd) != 0) printf("  could not remove %s\n", g_dir);
    }
    return REPORT();
}
