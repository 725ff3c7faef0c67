/* defectnet eval: measure a model on labelled images and calibrate it.
 *
 *   defectnet eval --model M (--data DIR | --manifest CSV) [--split test|val|train|all]
 *                  [--batch B] [--threads T] [--top-k K] [--calibrate-on val|DIR|CSV]
 *                  [--threshold-target-accuracy A | --threshold T] [--write-model OUT]
 *                  [--format table|json] [--json FILE] [--html FILE] [--strict]
 *
 * Images are decoded and preprocessed with the model's own contract and
 * forwarded B at a time (the batched path of predict), keeping the raw logits.
 * Class names of the data are mapped onto the model's by name (order may
 * differ); a data class the model does not know is an error.
 *
 * Calibration: with --calibrate-on val the temperature is fitted on the val
 * split (eval/calibrate.h) and, unless --threshold is given, the confidence
 * threshold is chosen on val for --threshold-target-accuracy (default 0.99).
 * --calibrate-on DIR|CSV uses every image of that folder/manifest instead
 * (classes mapped by name like the data's).
 * Without it the model's stored temperature is used, and the threshold is the
 * given one, the one chosen on val for a target, or the model's stored one.
 * Metrics are reported on the evaluated split (default: test when the data
 * carries splits, else all images). --write-model saves the model with the
 * temperature and threshold (and a "calibration" metadata record).
 *
 * Images whose content also occurs in an earlier split are dropped (as the
 * trainer does) unless --keep-dups.
 *
 * Exit status: 0 success; 1 some images were unreadable (skipped, counted;
 * fatal with --strict); 2 usage, model or data error. */
#include "commands.h"
#include "core/core.h"
#include "core/json.h"
#include "eval/calibrate.h"
#include "eval/metrics.h"
#include "eval/report.h"
#include "io/dataset.h"
#include "nn/engine.h"
#include "nn/model.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PFX "defectnet eval: "

static void usage(FILE *f) {
    fprintf(f,
            "usage: defectnet eval --model M (--data DIR | --manifest CSV) [options]\n"
            "  --data DIR          ImageFolder (one sub-folder per class; train/ + test/ = official split)\n"
            "  --manifest CSV      path,label[,split] manifest, e.g. the split manifest `defectnet train` wrote\n"
            "  --split S           test | val | train | all (default: test when the data has splits, else all)\n"
            "  --batch B           images per forward (default 16), --threads T (default: all cores)\n"
            "  --top-k K           k of the top-k accuracy (default 3)\n"
            "  --calibrate-on val|DIR|CSV  fit the temperature (and the threshold) on the val split, or on all\n"
            "                      images of another folder/manifest (e.g. images from the production line)\n"
            "  --threshold-target-accuracy A   choose the confidence threshold reaching accuracy A on the\n"
            "                      accepted part of val (default 0.99 with --calibrate-on)\n"
            "  --threshold T       use this confidence threshold (0 = never uncertain)\n"
            "  --write-model OUT   save the model with the temperature and threshold for production\n"
            "  --format F          table (default) | json, on stdout\n"
            "  --json FILE         also write the JSON report to FILE\n"
            "  --html FILE         write the self-contained HTML report to FILE\n"
            "  --strict            an unreadable image is fatal (default: skipped and counted)\n"
            "  --keep-dups         keep images whose content also occurs in an earlier split (default: dropped\n"
            "                      with a warning, like train does, so only unseen images are evaluated)\n"
            "exit status: 0 ok, 1 some images unreadable (skipped), 2 usage/model/data error\n");
}

static int parse_int(const char *opt, const char *v, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, PFX "%s: expected an integer in %d..%d, got '%s'\n", opt, lo, hi, v ? v : "");
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int parse_prob(const char *opt, const char *v, double lo_excl, double *out, int allow_zero) {
    char *end;
    double x = v ? strtod(v, &end) : NAN;
    if (!v || !*v || *end || !(x <= 1) || !(allow_zero ? x >= 0 : x > lo_excl)) {
        fprintf(stderr, PFX "%s: expected a number in %s0, 1], got '%s'\n", opt, allow_zero ? "[" : "(", v ? v : "");
        return -1;
    }
    *out = x;
    return 0;
}

/* Logits of a list of images. Unreadable images are reported and skipped
 * (strict: fatal). On success *logits holds *nok rows and keep[i] (the index
 * into paths) says which image each row is. */
typedef struct {
    dn_session *s;
    const dn_model *m;
    int batch, strict;
} runner;

static dn_status run_logits(runner *rn, const char **paths, int n, float **logits, int **keep, int *nok, int *skipped) {
    int c = rn->m->num_classes, crop = rn->m->pp.crop;
    size_t per = (size_t)3 * crop * crop;
    *logits = dn_malloc(((size_t)n + 1) * c * sizeof(float));
    *keep = dn_malloc(((size_t)n + 1) * sizeof(int));
    *nok = 0;
    if (!*logits || !*keep) return DN_ERR_NOMEM;
    float *in = dn_session_input(rn->s);
    int pending[1024];
    for (int next = 0; next < n;) {
        int nb = 0;
        while (nb < rn->batch && next < n) {
            const char *path = paths[next++];
            dn_image img = {0};
            dn_status st = dn_image_load(path, &img);
            if (!st) st = dn_preprocess(&img, &rn->m->pp, in + (size_t)nb * per);
            dn_image_free(&img);
            if (st) {
                char err[512]; /* a copy: dn_fail below rewrites the thread's message buffer */
                snprintf(err, sizeof err, "%s", dn_last_error());
                if (rn->strict) {
                    if (strstr(err, path)) return dn_fail(st, "%s (--strict)", err);
                    return dn_fail(st, "%s: %s (--strict)", path, err);
                }
                if (strstr(err, path)) fprintf(stderr, PFX "skipped: %s\n", err);
                else fprintf(stderr, PFX "skipped: %s: %s\n", path, err);
                (*skipped)++;
                continue;
            }
            pending[nb++] = next - 1;
        }
        if (!nb) continue;
        dn_status st = dn_session_forward(rn->s, in, nb, *logits + (size_t)*nok * c);
        if (st) return st;
        for (int i = 0; i < nb; i++) (*keep)[(*nok)++] = pending[i];
    }
    return DN_OK;
}

static int cmp_miss(const void *a, const void *b) {
    const dn_eval_miss *x = a, *y = b;
    if (x->conf != y->conf) return x->conf < y->conf ? 1 : -1;
    return strcmp(x->path, y->path);
}

static void correct_flags(const float *probs, const int *y, int64_t n, int k, float *conf, uint8_t *ok) {
    for (int64_t i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * k;
        int b = 0;
        for (int j = 1; j < k; j++) if (p[j] > p[b]) b = j;
        conf[i] = p[b];
        ok[i] = b == y[i];
    }
}

static int write_text(const char *path, dn_eval_report *r, void (*fn)(const dn_eval_report *, FILE *)) {
    FILE *f = fopen(path, "w");
    if (!f) { fprintf(stderr, PFX "%s: cannot write: %s\n", path, strerror(errno)); return -1; }
    fn(r, f);
    int bad = ferror(f);
    if (fclose(f) || bad) { fprintf(stderr, PFX "%s: write failed: %s\n", path, strerror(errno)); return -1; }
    return 0;
}

/* Like the trainer (dn_dataset_prepare), copies of an image in a later split
 * (train < val < test) are dropped, so no image the model was trained or
 * calibrated on counts as unseen. The first few duplicate lines are shown. A
 * file that cannot be hashed only costs the check (a warning). */
static void drop_duplicates(dn_dataset *ds, const char *src, int *dropped) {
    char *buf = NULL;
    size_t len = 0;
    FILE *log = open_memstream(&buf, &len);
    int cross = 0, within = 0;
    *dropped = 0;
    dn_status st = dn_dataset_dedup(ds, 1, log, &cross, &within, dropped);
    if (log) fclose(log);
    if (st) {
        fprintf(stderr, PFX "warning: %s: duplicate check skipped: %s\n", src, dn_last_error());
    } else if (buf && *buf) {
        int lines = 0;
        for (char *p = buf, *nl; *p; p = nl + 1) {
            if (!(nl = strchr(p, '\n'))) break;
            if (lines++ < 5) fprintf(stderr, PFX "%.*s\n", (int)(nl - p), p);
        }
        if (lines > 5) fprintf(stderr, PFX "... and %d more duplicate lines\n", lines - 5);
        if (*dropped)
            fprintf(stderr, PFX "%s: %d image(s) also present in an earlier split dropped (--keep-dups keeps them)\n",
                    src, *dropped);
    }
    free(buf);
}

/* map[d] = model index of data class d, by name. A data class the model lacks
 * is an error (one line listing the model's classes). seen (may be NULL)
 * marks the model classes that occur. */
static int map_classes(const dn_dataset *d, const dn_model *m, const char *src, const char *model_path, int *map,
                       int *seen) {
    int k = m->num_classes;
    for (int i = 0; i < d->nclasses; i++) {
        map[i] = -1;
        for (int c = 0; c < k; c++)
            if (!strcmp(d->classes[i], m->class_names[c])) { map[i] = c; break; }
        if (map[i] < 0) {
            dn_sb b = {0};
            for (int c = 0; c < k && c < 12; c++) { dn_sb_puts(&b, c ? ", " : ""); dn_sb_puts(&b, m->class_names[c]); }
            if (k > 12) dn_sb_puts(&b, ", ...");
            fprintf(stderr, PFX "class '%s' of %s is not a class of model %s (model classes: %s)\n", d->classes[i], src,
                    model_path, b.s ? b.s : "");
            dn_sb_free(&b);
            return -1;
        }
        if (seen) seen[map[i]] = 1;
    }
    return 0;
}

int cmd_eval(int argc, char **argv) {
    const char *model_path = NULL, *data = NULL, *manifest = NULL, *split_s = NULL, *cal_on = NULL, *write_model = NULL,
               *json_path = NULL, *html_path = NULL;
    int batch = 16, threads = 0, topk = 3, json_out = 0, strict = 0, keep_dups = 0, rc = 2;
    double target = 0, given_thr = -1;
    dn_dataset *ds = NULL, *cds = NULL;
    dn_model *m = NULL;
    dn_session *s = NULL;
    int *map = NULL, *cmap = NULL, *labels = NULL, *vlabels = NULL, *keep = NULL, *vkeep = NULL, *y = NULL, *vy = NULL;
    const char **paths = NULL, **vpaths = NULL;
    float *logits = NULL, *vlogits = NULL, *praw = NULL, *pcal = NULL, *vprob = NULL, *conf = NULL, *vconf = NULL;
    uint8_t *ok = NULL, *vok = NULL;
    dn_eval_report rep;
    memset(&rep, 0, sizeof rep);

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); rc = 0; goto done; }
        int takes = 1;
        if (!strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--manifest")) manifest = v;
        else if (!strcmp(a, "--split")) split_s = v;
        else if (!strcmp(a, "--calibrate-on")) cal_on = v;
        else if (!strcmp(a, "--write-model")) write_model = v;
        else if (!strcmp(a, "--json")) json_path = v;
        else if (!strcmp(a, "--html")) html_path = v;
        else if (!strcmp(a, "--batch")) { if (parse_int(a, v, 1, 1024, &batch)) goto done; }
        else if (!strcmp(a, "--threads")) { if (parse_int(a, v, 0, 1024, &threads)) goto done; }
        else if (!strcmp(a, "--top-k")) { if (parse_int(a, v, 1, DN_MAX_CLASSES, &topk)) goto done; }
        else if (!strcmp(a, "--threshold-target-accuracy")) { if (parse_prob(a, v, 0, &target, 0)) goto done; }
        else if (!strcmp(a, "--threshold")) { if (parse_prob(a, v, 0, &given_thr, 1)) goto done; }
        else if (!strcmp(a, "--format")) {
            if (v && !strcmp(v, "json")) json_out = 1;
            else if (v && !strcmp(v, "table")) json_out = 0;
            else { fprintf(stderr, PFX "--format: unknown format '%s' (table|json)\n", v ? v : ""); goto done; }
        } else if (!strcmp(a, "--strict") || !strcmp(a, "--keep-dups")) takes = 0;
        else {
            fprintf(stderr, PFX "unknown option or argument '%s'\n", a);
            usage(stderr);
            goto done;
        }
        if (!strcmp(a, "--strict")) strict = 1;
        if (!strcmp(a, "--keep-dups")) keep_dups = 1;
        if (takes) {
            if (!v) { fprintf(stderr, PFX "%s needs a value\n", a); goto done; }
            i++;
        }
    }
    if (!model_path) { fprintf(stderr, PFX "--model is required\n"); usage(stderr); goto done; }
    if (!data == !manifest) { fprintf(stderr, PFX "give exactly one of --data DIR and --manifest CSV\n"); goto done; }
    if (target > 0 && given_thr >= 0) {
        fprintf(stderr, PFX "--threshold and --threshold-target-accuracy exclude each other\n");
        goto done;
    }
    int cal_ext = cal_on && strcmp(cal_on, "val"); /* a separate calibration folder/manifest */
    int split = DN_SPLIT_NONE, split_given = 0;
    if (split_s) {
        split_given = 1;
        if (strcmp(split_s, "all") && (split = dn_split_parse(split_s)) < 0) {
            fprintf(stderr, PFX "--split: unknown split '%s' (test|val|train|all)\n", split_s);
            goto done;
        }
    }
    if (cal_on && !target && given_thr < 0) target = 0.99;

    /* data */
    if (data ? dn_dataset_scan(data, &ds) : dn_dataset_load_manifest(manifest, &ds)) {
        fprintf(stderr, PFX "%s\n", dn_last_error());
        goto done;
    }
    const char *src = data ? data : manifest;
    if (ds->has_split && !keep_dups) drop_duplicates(ds, src, &rep.dups_dropped);
    int nval = dn_dataset_count(ds, DN_SPLIT_VAL, NULL);
    if (!split_given) {
        if (ds->has_split && dn_dataset_count(ds, DN_SPLIT_TEST, NULL) > 0) split = DN_SPLIT_TEST;
        else if (ds->has_split) {
            fprintf(stderr, PFX "%s: the data has splits but no test images; choose one with --split val|train|all\n", src);
            goto done;
        }
    }
    int need_val = cal_on || target > 0;
    if (cal_ext && dn_dataset_open(cal_on, &cds)) {
        fprintf(stderr, PFX "--calibrate-on: %s\n", dn_last_error());
        goto done;
    }
    if (need_val && !cal_ext && nval == 0) {
        fprintf(stderr, PFX "%s: no val split to calibrate on (use the split manifest written by `defectnet train`, "
                        "e.g. --manifest MODEL.split.csv)\n", src);
        goto done;
    }

    /* model and class mapping (by name) */
    if (dn_model_load(model_path, &m)) { fprintf(stderr, PFX "%s\n", dn_last_error()); goto done; }
    if (m->num_classes < 2) {
        fprintf(stderr, PFX "%s: model has %s; it cannot be evaluated\n", model_path,
                m->num_classes ? "a single class" : "no classification head (backbone only)");
        goto done;
    }
    int k = m->num_classes;
    map = dn_calloc((size_t)ds->nclasses, sizeof *map);
    int *seen = dn_calloc((size_t)k, sizeof *seen);
    if (cds) cmap = dn_calloc((size_t)cds->nclasses, sizeof *cmap);
    if (!map || !seen || (cds && !cmap)) { free(seen); fprintf(stderr, PFX "out of memory\n"); goto done; }
    if (map_classes(ds, m, src, model_path, map, seen) || (cds && map_classes(cds, m, cal_on, model_path, cmap, NULL))) {
        free(seen);
        goto done;
    }
    for (int c = 0; c < k; c++)
        if (!seen[c]) {
            rep.absent_classes++;
            fprintf(stderr, PFX "note: model class '%s' does not occur in %s\n", m->class_names[c], src);
        }
    free(seen);

    /* the images */
    int n = 0, nv = 0;
    if (dn_dataset_select(ds, split, &paths, &labels, &n) ||
        (need_val && dn_dataset_select(cds ? cds : ds, cds ? DN_SPLIT_NONE : DN_SPLIT_VAL, &vpaths, &vlabels, &nv))) {
        fprintf(stderr, PFX "%s\n", dn_last_error());
        goto done;
    }
    if (n == 0) {
        fprintf(stderr, PFX "%s: no images in split %s\n", src, split_s ? split_s : "all");
        goto done;
    }
    if (need_val && nv == 0) { fprintf(stderr, PFX "%s: no calibration images\n", cal_ext ? cal_on : src); goto done; }
    if (split == DN_SPLIT_VAL && need_val && !cal_ext)
        fprintf(stderr, PFX "warning: calibrating and evaluating on the same split (val); figures are optimistic\n");
    int maxn = n > nv ? n : nv;
    if (batch > maxn) batch = maxn;
    if (dn_session_new(m, batch, threads, &s)) { fprintf(stderr, PFX "%s\n", dn_last_error()); goto done; }
    runner rn = {s, m, batch, strict};
    int nok = 0, vok_n = 0;
    double t0 = dn_now();
    if (run_logits(&rn, paths, n, &logits, &keep, &nok, &rep.skipped) ||
        (need_val && run_logits(&rn, vpaths, nv, &vlogits, &vkeep, &vok_n, &rep.skipped))) {
        fprintf(stderr, PFX "%s\n", dn_last_error());
        goto done;
    }
    rep.seconds = dn_now() - t0;
    if (nok == 0) { fprintf(stderr, PFX "%s: none of the %d images could be read\n", src, n); goto done; }
    if (need_val && vok_n == 0) {
        fprintf(stderr, PFX "%s: none of the calibration images could be read\n", cal_ext ? cal_on : src);
        goto done;
    }

    y = dn_malloc((size_t)nok * sizeof *y);
    vy = dn_malloc(((size_t)vok_n + 1) * sizeof *vy);
    praw = dn_malloc((size_t)nok * k * sizeof *praw);
    pcal = dn_malloc((size_t)nok * k * sizeof *pcal);
    conf = dn_malloc((size_t)nok * sizeof *conf);
    ok = dn_malloc((size_t)nok);
    vprob = dn_malloc(((size_t)vok_n + 1) * k * sizeof *vprob);
    vconf = dn_malloc(((size_t)vok_n + 1) * sizeof *vconf);
    vok = dn_malloc((size_t)vok_n + 1);
    if (!y || !vy || !praw || !pcal || !conf || !ok || !vprob || !vconf || !vok) {
        fprintf(stderr, PFX "out of memory\n");
        goto done;
    }
    for (int i = 0; i < nok; i++) y[i] = map[labels[keep[i]]];
    for (int i = 0; i < vok_n; i++) vy[i] = (cmap ? cmap : map)[vlabels[vkeep[i]]];

    /* temperature */
    rep.temperature = m->temperature > 0 ? m->temperature : 1.0;
    rep.temp_source = m->temperature != 1.0f ? "stored in model" : "none (model uncalibrated)";
    rep.fit_split = cal_ext ? cal_on : "val";
    char fit_desc[300], thr_desc[300];
    snprintf(fit_desc, sizeof fit_desc, "fitted on %s", rep.fit_split);
    snprintf(thr_desc, sizeof thr_desc, "chosen on %s", rep.fit_split);
    rep.n_fit = vok_n;
    if (cal_on) {
        if (dn_calib_fit_temperature(vlogits, vy, vok_n, k, &rep.fit)) {
            fprintf(stderr, PFX "%s\n", dn_last_error());
            goto done;
        }
        rep.fitted = 1;
        rep.temperature = rep.fit.temperature;
        rep.temp_source = fit_desc;
        if (rep.fit.at_bound && rep.fit.temperature < 1) {
            /* Perfectly separated calibration data: NLL keeps falling as T -> 0, so the
             * "optimum" only says the set had no mistakes. Sharpening on that evidence
             * would make every future mistake look certain; stay uncalibrated instead. */
            fprintf(stderr, PFX "warning: predictions on %s are perfectly separated; temperature not fitted "
                    "(kept at 1; calibrate on a larger or harder labelled set with --calibrate-on)\n", rep.fit_split);
            rep.temperature = 1.0;
            rep.fit.temperature = 1.0;
            rep.fit.nll_after = rep.fit.nll_before;
        } else if (rep.fit.at_bound)
            fprintf(stderr, PFX "warning: fitted temperature %.4g is at its bound (predictions on %s mostly wrong)\n",
                    rep.temperature, rep.fit_split);
        dn_eval_metrics vm;
        dn_softmax_t(vlogits, vok_n, k, 1.0f, vprob);
        if (dn_eval_metrics_compute(k, vok_n, vy, vprob, NULL, topk, &vm)) goto metrics_fail;
        rep.fit_ece_before = vm.ece;
        dn_eval_metrics_free(&vm);
        dn_softmax_t(vlogits, vok_n, k, (float)rep.temperature, vprob);
        if (dn_eval_metrics_compute(k, vok_n, vy, vprob, NULL, topk, &vm)) goto metrics_fail;
        rep.fit_ece_after = vm.ece;
        dn_eval_metrics_free(&vm);
    }
    float T = (float)rep.temperature;
    dn_softmax_t(logits, nok, k, 1.0f, praw);
    dn_softmax_t(logits, nok, k, T, pcal);
    if (dn_eval_metrics_compute(k, nok, y, praw, NULL, topk, &rep.raw) ||
        dn_eval_metrics_compute(k, nok, y, pcal, NULL, topk, &rep.cal))
        goto metrics_fail;
    correct_flags(pcal, y, nok, k, conf, ok);

    /* threshold */
    rep.threshold = m->threshold;
    rep.thr_source = "stored in model";
    if (given_thr >= 0) {
        rep.threshold = (float)given_thr;
        rep.thr_source = "given";
    } else if (target > 0) {
        dn_softmax_t(vlogits, vok_n, k, T, vprob);
        correct_flags(vprob, vy, vok_n, k, vconf, vok);
        dn_threshold_pick pick;
        if (dn_calib_choose_threshold(vconf, vok, vok_n, target, &pick)) goto metrics_fail;
        rep.threshold = pick.at.threshold;
        rep.target = target;
        rep.reached = pick.reached;
        rep.thr_source = thr_desc;
        if (!pick.reached)
            fprintf(stderr, PFX "warning: no threshold reaches accuracy %.4g on %s; chose the best (%.4f at coverage "
                            "%.3f)\n", target, rep.fit_split, pick.at.accuracy, pick.at.coverage);
    }
    if (vok_n > 0 && need_val) {
        if (given_thr >= 0 || target <= 0) {
            dn_softmax_t(vlogits, vok_n, k, T, vprob);
            correct_flags(vprob, vy, vok_n, k, vconf, vok);
        }
        rep.thr_fit = dn_calib_at_threshold(vconf, vok, vok_n, rep.threshold);
        rep.has_thr_fit = 1;
    }
    rep.thr_eval = dn_calib_at_threshold(conf, ok, nok, rep.threshold);
    if (!(rep.uncertain_by_class = dn_calloc((size_t)k, sizeof *rep.uncertain_by_class))) {
        fprintf(stderr, PFX "out of memory\n");
        goto done;
    }
    for (int i = 0; i < nok; i++) rep.uncertain_by_class[y[i]] += conf[i] < rep.threshold;
    if (dn_calib_coverage_curve(conf, ok, nok, &rep.curve, &rep.ncurve)) goto metrics_fail;

    /* misclassified images, most confident first */
    int64_t nm = 0;
    for (int i = 0; i < nok; i++) nm += !ok[i];
    rep.miss = dn_calloc((size_t)nm + 1, sizeof *rep.miss);
    if (!rep.miss) { fprintf(stderr, PFX "out of memory\n"); goto done; }
    for (int i = 0; i < nok; i++) {
        if (ok[i]) continue;
        dn_eval_miss *x = &rep.miss[rep.nmiss];
        const float *p = pcal + (size_t)i * k;
        if (!(x->path = dn_strdup(paths[keep[i]]))) { fprintf(stderr, PFX "out of memory\n"); goto done; }
        rep.nmiss++;
        x->truth = y[i];
        x->conf = conf[i];
        x->p_true = p[y[i]];
        x->ntop = k < DN_REPORT_TOP ? k : DN_REPORT_TOP;
        for (int j = 0; j < x->ntop; j++) {
            int best = -1;
            for (int c = 0; c < k; c++) {
                int used = 0;
                for (int u = 0; u < j; u++) used |= x->top[u] == c;
                if (!used && (best < 0 || p[c] > p[best])) best = c;
            }
            x->top[j] = best;
            x->top_p[j] = p[best];
        }
        x->pred = x->top[0];
    }
    qsort(rep.miss, (size_t)rep.nmiss, sizeof *rep.miss, cmp_miss);
    if (html_path)
        for (int64_t i = 0; i < rep.nmiss && i < DN_GALLERY_MAX; i++) {
            dn_image img = {0};
            if (dn_image_load(rep.miss[i].path, &img) ||
                dn_thumb_png_base64(&img, DN_THUMB_SIDE, &rep.miss[i].thumb_b64))
                fprintf(stderr, PFX "warning: no thumbnail for %s: %s\n", rep.miss[i].path, dn_last_error());
            dn_image_free(&img);
        }

    rep.model = m;
    rep.model_path = model_path;
    rep.data_source = src;
    rep.split_name = split == DN_SPLIT_NONE ? "all" : dn_split_name(split);
    rep.listed = n;

    /* calibrated model for production */
    if (write_model) {
        float old_t = m->temperature, old_thr = m->threshold;
        m->temperature = T;
        m->threshold = rep.threshold;
        dn_sb b = {0};
        dn_sb_puts(&b, "{\"data\":");
        dn_sb_json_str(&b, cal_ext ? cal_on : src);
        dn_sb_printf(&b, ",\"split\":\"%s\",\"images\":%d,\"temperature_fitted\":%s,\"nll_before\":%.6f,"
                     "\"nll_after\":%.6f,\"ece_before\":%.6f,\"ece_after\":%.6f,\"threshold_source\":\"%s\","
                     "\"target_accuracy\":%.6g,\"val_coverage\":%.6f,\"val_accuracy\":%.6f}",
                     cal_ext ? "all" : "val", vok_n, rep.fitted ? "true" : "false", rep.fit.nll_before,
                     rep.fit.nll_after, rep.fit_ece_before, rep.fit_ece_after, rep.thr_source, rep.target, rep.thr_fit.coverage, rep.thr_fit.accuracy);
        dn_status st = b.oom ? DN_ERR_NOMEM : dn_meta_set(&m->meta, "calibration", b.s);
        dn_sb_free(&b);
        if (!st) st = dn_model_save(m, write_model);
        if (st) {
            m->temperature = old_t;
            m->threshold = old_thr;
            fprintf(stderr, PFX "%s\n", dn_last_error());
            goto done;
        }
        rep.written_model = write_model;
        /* the report describes the model as it was evaluated */
        m->temperature = old_t;
        m->threshold = old_thr;
    }

    if (json_out) dn_eval_report_json(&rep, stdout);
    else dn_eval_report_table(&rep, stdout);
    fflush(stdout);
    if (json_path && write_text(json_path, &rep, dn_eval_report_json)) goto done;
    if (html_path && write_text(html_path, &rep, dn_eval_report_html)) goto done;
    if (rep.skipped) fprintf(stderr, PFX "%d unreadable image(s) skipped\n", rep.skipped);
    rc = rep.skipped ? 1 : 0;
    goto done;
metrics_fail:
    fprintf(stderr, PFX "%s\n", dn_last_error());
done:
    dn_eval_report_free(&rep);
    free(ok); free(vok); free(conf); free(vconf); free(vprob); free(praw); free(pcal); free(y); free(vy);
    free(logits); free(vlogits); free(keep); free(vkeep);
    free(paths); free(labels); free(vpaths); free(vlabels); free(map);
    dn_session_free(s);
    dn_model_free(m);
    dn_dataset_free(ds);
    dn_dataset_free(cds);
    free(cmap);
    return rc;
}
