/* defectnet eval: measure a model on labelled images and calibrate it.
 *
 *   defectnet eval --model M (--data DIR | --manifest CSV) [--split test|val|train|all]
 *                  [--batch B] [--threads T] [--top-k K] [--calibrate-on val|DIR|CSV]
 *                  [--threshold-target-accuracy A | --threshold T] [--write-model OUT]
 *                  [--format table|json] [--json FILE] [--html FILE] [--strict]
 *                  [--good-class NAME] [--target-escape R | --cost SPEC] [--ordinal]
 *                  [--ood DIR|FILE ...] [--no-heatmaps]
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
 * Good parts and decisions (eval/policy.h, eval/quality.h): escape and
 * false-reject rates with Wilson intervals; --target-escape / --cost choose
 * the good threshold on the calibration images (src/eval/evaluate.c).
 *
 * Images whose content also occurs in an earlier split are dropped (as the
 * trainer does) unless --keep-dups.
 *
 * Unknown inputs (--ood, up to 16 sets; the model needs OOD data from
 * `defectnet calibrate`): the evaluated images are the in-distribution side
 * (their features come from the same forward as their logits), each set is
 * scored with the model's detector; ood/ood_eval.h measures (the code
 * calibrate --ood uses), the reports print it. The HTML gallery carries a
 * Grad-CAM overlay per mistake unless --no-heatmaps.
 *
 * Exit status: 0 success; 1 some images were unreadable (skipped, counted;
 * fatal with --strict); 2 usage, model or data error. */
#include "commands.h"
#include "cli/args.h"
#include "core/core.h"
#include "core/json.h"
#include "core/progress.h"
#include "eval/evaluate.h"
#include "eval/policy.h"
#include "io/dataset.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "ood/ood_eval.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PFX "defectnet eval: "

static void usage(FILE *f) {
    fprintf(f,
            "usage: defectnet eval -m|--model M (-d|--data DIR | --manifest CSV) [options] (--opt=value also works)\n"
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
            "  -f, --format F      table (default) | json, on stdout\n"
            "  --json FILE         also write the JSON report to FILE\n"
            "  --html FILE         write the self-contained HTML report to FILE\n"
            "  --strict            an unreadable image is fatal (default: skipped and counted)\n"
            "  --keep-dups         keep images whose content also occurs in an earlier split (default: dropped\n"
            "                      with a warning, like train does, so only unseen images are evaluated)\n"
            "  --good-class NAME   the class meaning \"good part\" (default: stored in the model, else auto-detected\n"
            "                      from names like ok, good, normal, pass, clean, no_defect): escape rate (defective\n"
            "                      parts accepted as good) and false-reject rate (good parts rejected or uncertain)\n"
            "  --target-escape R   choose \"reject unless confidently good\" on val: the p(good) threshold with the\n"
            "                      fewest false rejects whose val escape rate is <= R (stored by --write-model)\n"
            "  --cost escape=50,false_reject=1[,escape:CLASS=100]   ... or the threshold of least cost on val\n"
            "  --ordinal           ordered classes: confusion distance and mean absolute class error (stored)\n"
            "  --ood DIR|FILE      unknown images (repeatable, up to 16 sets; the model needs OOD data from `defectnet\n"
            "                      calibrate`): per set the share flagged unknown and AUROC / FPR@95%%TPR of every score\n"
            "                      and of max-softmax against the evaluated images; score histograms in the HTML\n"
            "  --no-heatmaps       no Grad-CAM overlays in the HTML gallery of mistakes (default: layer4, predicted class)\n"
            "  95%% intervals: Wilson for accuracy and rates, bootstrap over images for macro-F1\n"
            DN_EXIT_HELP);
}

/* Logits of a list of images. Unreadable images are reported and skipped
 * (strict: fatal). On success *logits holds *nok rows and keep[i] (the index
 * into paths) says which image each row is. */
typedef struct {
    dn_session *s;
    const dn_model *m;
    int batch, strict;
} runner;

/* feat (may be NULL): also the pooled features of the rows (the same forward) */
static dn_status run_logits(runner *rn, const char *label, const char **paths, int n, float **logits, float **feat,
                            int **keep, int *nok, int *skipped) {
    int c = rn->m->num_classes, crop = rn->m->pp.crop, d = rn->m->feat_dim;
    size_t per = (size_t)3 * crop * crop;
    *logits = dn_malloc(((size_t)n + 1) * c * sizeof(float));
    *keep = dn_malloc(((size_t)n + 1) * sizeof(int));
    *nok = 0;
    if (!*logits || !*keep) return DN_ERR_NOMEM;
    if (feat && !(*feat = dn_malloc(((size_t)n + 1) * d * sizeof(float)))) return DN_ERR_NOMEM;
    float *in = dn_session_input(rn->s);
    int pending[1024];
    dn_progress pg;
    dn_progress_start(&pg, label, n);
    for (int next = 0; next < n;) {
        dn_progress_update(&pg, next);
        int nb = 0;
        while (nb < rn->batch && next < n) {
            const char *path = paths[next++];
            dn_image img = {0};
            dn_status st = dn_image_load(path, &img);
            if (!st) st = dn_preprocess(&img, &rn->m->pp, in + (size_t)nb * per);
            dn_image_free(&img);
            if (st) {
                dn_progress_clear(&pg);
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
        if (st) { dn_progress_end(&pg); return st; }
        if (feat)
            memcpy(*feat + (size_t)*nok * d, dn_session_last_features(rn->s), (size_t)nb * d * sizeof(float));
        for (int i = 0; i < nb; i++) (*keep)[(*nok)++] = pending[i];
    }
    dn_progress_end(&pg);
    return DN_OK;
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

typedef struct eval_opts {
    const char *model_path, *data, *manifest, *split_s, *cal_on, *write_model, *json_path, *html_path;
    const char *good_class, *cost;
    const char *ood[DN_OOD_MAX_SETS + 1];
    int nood, no_heatmaps;
    int batch, threads, topk, json_out, strict, keep_dups, ordinal;
    double target, given_thr, target_escape;
} eval_opts;

/* 0 ok, 1 help printed, -1 usage error (reported). The one grammar (cli/args.h):
 * --opt value, --opt=value, -m/-d/-f/-h. */
static int parse_args(int argc, char **argv, eval_opts *o) {
    enum { O_MANIFEST = 256, O_SPLIT, O_CAL, O_WRITE, O_JSON, O_HTML, O_GOOD, O_COST, O_BATCH, O_THREADS, O_TOPK,
           O_TARGET, O_THR, O_TESC, O_STRICT, O_DUPS, O_ORD, O_OOD, O_NOHEAT };
    static const dn_opt opts[] = {
        {"model", 'm', DN_ARG_REQ, NULL},        {"data", 'd', DN_ARG_REQ, NULL},
        {"manifest", O_MANIFEST, DN_ARG_REQ, NULL}, {"split", O_SPLIT, DN_ARG_REQ, NULL},
        {"calibrate-on", O_CAL, DN_ARG_REQ, NULL}, {"write-model", O_WRITE, DN_ARG_REQ, NULL},
        {"json", O_JSON, DN_ARG_REQ, NULL},      {"html", O_HTML, DN_ARG_REQ, NULL},
        {"good-class", O_GOOD, DN_ARG_REQ, NULL}, {"cost", O_COST, DN_ARG_REQ, NULL},
        {"batch", O_BATCH, DN_ARG_REQ, NULL},    {"threads", O_THREADS, DN_ARG_REQ, NULL},
        {"top-k", O_TOPK, DN_ARG_REQ, NULL},     {"threshold-target-accuracy", O_TARGET, DN_ARG_REQ, NULL},
        {"threshold", O_THR, DN_ARG_REQ, NULL},  {"target-escape", O_TESC, DN_ARG_REQ, NULL},
        {"format", 'f', DN_ARG_REQ, NULL},       {"strict", O_STRICT, DN_ARG_NONE, NULL},
        {"keep-dups", O_DUPS, DN_ARG_NONE, NULL}, {"ordinal", O_ORD, DN_ARG_NONE, NULL},
        {"ood", O_OOD, DN_ARG_REQ, NULL},        {"no-heatmaps", O_NOHEAT, DN_ARG_NONE, NULL}, {0}};
    dn_args a;
    dn_args_init(&a, "eval", argc, argv, opts);
    int fmt = 0;
    for (int c; (c = dn_args_next(&a)) != -1;) {
        int bad = 0;
        switch (c) {
        case 'h': usage(stdout); return 1;
        case 'm': o->model_path = a.val; break;
        case 'd': o->data = a.val; break;
        case O_MANIFEST: o->manifest = a.val; break;
        case O_SPLIT: o->split_s = a.val; break;
        case O_CAL: o->cal_on = a.val; break;
        case O_WRITE: o->write_model = a.val; break;
        case O_JSON: o->json_path = a.val; break;
        case O_HTML: o->html_path = a.val; break;
        case O_GOOD: o->good_class = a.val; break;
        case O_COST: o->cost = a.val; break;
        case O_BATCH: bad = dn_arg_int(&a, 1, 1024, &o->batch); break;
        case O_THREADS: bad = dn_arg_int(&a, 0, 1024, &o->threads); break;
        case O_TOPK: bad = dn_arg_int(&a, 1, DN_MAX_CLASSES, &o->topk); break;
        case O_TARGET: bad = dn_arg_real(&a, 0, 1, 1, &o->target); break;
        case O_THR: bad = dn_arg_real(&a, 0, 1, 0, &o->given_thr); break;
        case O_TESC:
            if (!(bad = dn_arg_real(&a, 0, 1, 0, &o->target_escape)) && o->target_escape >= 1) {
                fprintf(stderr, PFX "--target-escape '%s': expected a number in [0, 1)\n", a.val);
                bad = 1;
            }
            break;
        case 'f':
            bad = dn_format_parse("eval", a.val, DN_FMT_TABLE | DN_FMT_JSON, &fmt);
            o->json_out = fmt == DN_FMT_JSON;
            break;
        case O_STRICT: o->strict = 1; break;
        case O_DUPS: o->keep_dups = 1; break;
        case O_ORD: o->ordinal = 1; break;
        case O_OOD:
            if (o->nood == DN_OOD_MAX_SETS) {
                fprintf(stderr, PFX "--ood: at most %d sets\n", DN_OOD_MAX_SETS);
                return -1;
            }
            o->ood[o->nood++] = a.val;
            break;
        case O_NOHEAT: o->no_heatmaps = 1; break;
        default: return -1; /* already reported in one line */
        }
        if (bad) return -1;
    }
    if (dn_args_npos(&a)) {
        dn_usage_error("eval", "unexpected argument '%s'", dn_args_pos(&a, 0));
        return -1;
    }
    if (!o->model_path) { fprintf(stderr, PFX "--model is required (see defectnet eval --help)\n"); return -1; }
    if (!o->data == !o->manifest) { fprintf(stderr, PFX "give exactly one of --data DIR and --manifest CSV\n"); return -1; }
    if (o->target > 0 && o->given_thr >= 0) {
        fprintf(stderr, PFX "--threshold and --threshold-target-accuracy exclude each other\n");
        return -1;
    }
    if (o->cost && o->target_escape >= 0) {
        fprintf(stderr, PFX "--cost and --target-escape exclude each other\n");
        return -1;
    }
    if (o->cal_on && !o->target && o->given_thr < 0) o->target = 0.99;
    return 0;
}

/* Everything one evaluation holds (released by job_free). */
typedef struct eval_job {
    const char *src;          /* data folder or manifest */
    int split, cal_ext, need_val;
    dn_dataset *ds, *cds;     /* data, separate calibration data */
    dn_model *m;
    dn_session *s;
    int *map, *cmap;          /* data class -> model class */
    int *seen;                /* [k] 1 if the data names the model class */
    const char **paths, **vpaths; /* listed images of the split / for calibration */
    int *labels, *vlabels, n, nv;
    float *logits, *vlogits;  /* rows of the readable images */
    float *feat;              /* features of the evaluated rows (only with --ood) */
    int *keep, *vkeep, nok, vok_n; /* which listed image each row is */
    int *y, *vy;              /* model class of each row */
    const char **kpaths;      /* path of each row */
} eval_job;

static void job_free(eval_job *j) {
    free(j->y); free(j->vy); free(j->kpaths);
    free(j->logits); free(j->vlogits); free(j->feat); free(j->keep); free(j->vkeep);
    free(j->paths); free(j->labels); free(j->vpaths); free(j->vlabels); free(j->map); free(j->cmap); free(j->seen);
    dn_session_free(j->s);
    dn_model_free(j->m);
    dn_dataset_free(j->ds);
    dn_dataset_free(j->cds);
}

/* The data, its split, the calibration source. */
static int load_data(const eval_opts *o, eval_job *j, dn_eval_report *rep) {
    j->cal_ext = o->cal_on && strcmp(o->cal_on, "val"); /* a separate calibration folder/manifest */
    j->split = DN_SPLIT_NONE;
    if (o->split_s && strcmp(o->split_s, "all") && (j->split = dn_split_parse(o->split_s)) < 0) {
        fprintf(stderr, PFX "--split: unknown split '%s' (test|val|train|all)\n", o->split_s);
        return -1;
    }
    if (o->data ? dn_dataset_scan(o->data, &j->ds) : dn_dataset_load_manifest(o->manifest, &j->ds)) {
        fprintf(stderr, PFX "%s\n", dn_last_error());
        return -1;
    }
    j->src = o->data ? o->data : o->manifest;
    dn_dataset *ds = j->ds;
    if (ds->has_split && !o->keep_dups) drop_duplicates(ds, j->src, &rep->dups_dropped);
    int nval = dn_dataset_count(ds, DN_SPLIT_VAL, NULL);
    if (!o->split_s) {
        if (ds->has_split && dn_dataset_count(ds, DN_SPLIT_TEST, NULL) > 0) j->split = DN_SPLIT_TEST;
        else if (ds->has_split) {
            fprintf(stderr, PFX "%s: the data has splits but no test images; choose one with --split val|train|all\n",
                    j->src);
            return -1;
        }
    }
    j->need_val = o->cal_on || o->target > 0 || o->cost || o->target_escape >= 0;
    if (j->cal_ext && dn_dataset_open(o->cal_on, &j->cds)) {
        fprintf(stderr, PFX "--calibrate-on: %s\n", dn_last_error());
        return -1;
    }
    if (j->need_val && !j->cal_ext && nval == 0) {
        fprintf(stderr, PFX "%s: no val split to calibrate on (use the split manifest written by `defectnet train`, "
                        "e.g. --manifest MODEL.split.csv)\n", j->src);
        return -1;
    }
    return 0;
}

/* The model and the class mapping (by name); notes model classes absent from the data. */
static int load_model(const eval_opts *o, eval_job *j, dn_eval_report *rep) {
    if (dn_model_load(o->model_path, &j->m)) { fprintf(stderr, PFX "%s\n", dn_last_error()); return -1; }
    dn_model *m = j->m;
    if (m->num_classes < 2) {
        fprintf(stderr, PFX "%s: model has %s; it cannot be evaluated\n", o->model_path,
                m->num_classes ? "a single class" : "no classification head (backbone only)");
        return -1;
    }
    int k = m->num_classes;
    j->map = dn_calloc((size_t)j->ds->nclasses, sizeof *j->map);
    int *seen = dn_calloc((size_t)k, sizeof *seen);
    if (j->cds) j->cmap = dn_calloc((size_t)j->cds->nclasses, sizeof *j->cmap);
    if (!j->map || !seen || (j->cds && !j->cmap)) { free(seen); fprintf(stderr, PFX "out of memory\n"); return -1; }
    if (map_classes(j->ds, m, j->src, o->model_path, j->map, seen) ||
        (j->cds && map_classes(j->cds, m, o->cal_on, o->model_path, j->cmap, NULL))) {
        free(seen);
        return -1;
    }
    j->seen = seen;
    if (o->nood && !m->ood) {
        fprintf(stderr, PFX "%s: model has no OOD data for --ood: run defectnet calibrate --model %s first\n",
                o->model_path, o->model_path);
        return -1;
    }
    return 0;
}

/* Notes the model classes the data never names. */
static void note_absent(eval_job *j, dn_eval_report *rep) {
    for (int c = 0; c < j->m->num_classes; c++)
        if (!j->seen[c]) {
            rep->absent_classes++;
            fprintf(stderr, PFX "note: model class '%s' does not occur in %s\n", j->m->class_names[c], j->src);
        }
}

/* Logits of the evaluated and the calibration images, with their model classes. */
static int compute_logits(const eval_opts *o, eval_job *j, dn_eval_report *rep) {
    const char *cal_src = j->cal_ext ? o->cal_on : j->src;
    if (dn_dataset_select(j->ds, j->split, &j->paths, &j->labels, &j->n) ||
        (j->need_val && dn_dataset_select(j->cds ? j->cds : j->ds, j->cds ? DN_SPLIT_NONE : DN_SPLIT_VAL, &j->vpaths,
                                          &j->vlabels, &j->nv))) {
        fprintf(stderr, PFX "%s\n", dn_last_error());
        return -1;
    }
    if (j->n == 0) { fprintf(stderr, PFX "%s: no images in split %s\n", j->src, o->split_s ? o->split_s : "all"); return -1; }
    if (j->need_val && j->nv == 0) { fprintf(stderr, PFX "%s: no calibration images\n", cal_src); return -1; }
    if (j->split == DN_SPLIT_VAL && j->need_val && !j->cal_ext)
        fprintf(stderr, PFX "warning: calibrating and evaluating on the same split (val); figures are optimistic\n");
    int maxn = j->n > j->nv ? j->n : j->nv, batch = o->batch > maxn ? maxn : o->batch;
    if (dn_session_new(j->m, batch, o->threads, &j->s)) { fprintf(stderr, PFX "%s\n", dn_last_error()); return -1; }
    runner rn = {j->s, j->m, batch, o->strict};
    double t0 = dn_now();
    if (run_logits(&rn, "eval", j->paths, j->n, &j->logits, o->nood ? &j->feat : NULL, &j->keep, &j->nok,
                   &rep->skipped) ||
        (j->need_val && run_logits(&rn, "eval: calibration images", j->vpaths, j->nv, &j->vlogits, NULL, &j->vkeep,
                                   &j->vok_n, &rep->skipped))) {
        fprintf(stderr, PFX "%s\n", dn_last_error());
        return -1;
    }
    rep->seconds = dn_now() - t0;
    if (j->nok == 0) { fprintf(stderr, PFX "%s: none of the %d images could be read\n", j->src, j->n); return -1; }
    if (j->need_val && j->vok_n == 0) {
        fprintf(stderr, PFX "%s: none of the calibration images could be read\n", cal_src);
        return -1;
    }
    j->y = dn_malloc((size_t)j->nok * sizeof *j->y);
    j->kpaths = dn_malloc((size_t)j->nok * sizeof *j->kpaths);
    j->vy = dn_malloc(((size_t)j->vok_n + 1) * sizeof *j->vy);
    if (!j->y || !j->vy || !j->kpaths) { fprintf(stderr, PFX "out of memory\n"); return -1; }
    for (int i = 0; i < j->nok; i++) {
        j->y[i] = j->map[j->labels[j->keep[i]]];
        j->kpaths[i] = j->paths[j->keep[i]];
    }
    for (int i = 0; i < j->vok_n; i++) j->vy[i] = (j->cmap ? j->cmap : j->map)[j->vlabels[j->vkeep[i]]];
    return 0;
}

/* Warnings about the calibration the analysis chose. */
static void calibration_warnings(const dn_eval_report *r) {
    if (r->separated)
        fprintf(stderr, PFX "warning: predictions on %s are perfectly separated; temperature not fitted "
                "(kept at 1; calibrate on a larger or harder labelled set with --calibrate-on)\n", r->fit_split);
    else if (r->fitted && r->fit.at_bound)
        fprintf(stderr, PFX "warning: fitted temperature %.4g is at its bound (predictions on %s mostly wrong)\n",
                r->temperature, r->fit_split);
    if (r->target > 0 && !r->reached)
        fprintf(stderr, PFX "warning: no threshold reaches accuracy %.4g on %s; chose the best (%.4f at coverage "
                        "%.3f)\n", r->target, r->fit_split, r->thr_fit.accuracy, r->thr_fit.coverage);
}

/* Good class (given, stored or detected), the model's decision policy, the
 * costs, ordinal classes: everything about decisions, checked before any image is read. */
static int decision_setup(const eval_opts *o, eval_job *j, dn_eval_input *in, dn_eval_report *rep, dn_cost *cost) {
    dn_model *m = j->m;
    dn_good_class g;
    in->good = -1;
    in->target_escape = o->target_escape;
    if (o->good_class) {
        for (int c = 0; c < m->num_classes; c++)
            if (!strcmp(m->class_names[c], o->good_class)) in->good = c;
        if (in->good < 0) {
            dn_model_set_good_class(m, o->good_class); /* only for its message listing the classes */
            fprintf(stderr, PFX "--good-class: %s\n", dn_last_error());
            return -1;
        }
        rep->good_source = "given";
        in->require_good = 1;
    } else if (dn_model_good_class(m, &g)) {
        fprintf(stderr, PFX "%s: %s\n", o->model_path, dn_last_error());
        return -1;
    } else {
        in->good = g.index;
        rep->good_source = g.stored ? (g.auto_detected ? "stored in model, auto-detected at training" : "stored in model")
                         : g.index >= 0 ? "auto-detected from the class names" : "none found in the class names";
    }
    if (in->good >= 0 && dn_model_policy(m, &in->policy)) {
        fprintf(stderr, PFX "%s: %s\n", o->model_path, dn_last_error());
        return -1;
    }
    if (in->policy.good != in->good) in->policy = (dn_policy){in->good, 0}; /* another good class: no stored policy */
    if (in->good >= 0 && !j->seen[in->good] && (o->good_class || o->cost || o->target_escape >= 0)) {
        fprintf(stderr, PFX "good class '%s' does not occur in %s\n", m->class_names[in->good], j->src);
        return -1;
    }
    if ((o->cost || o->target_escape >= 0) && in->good < 0) {
        fprintf(stderr, PFX "%s needs a good class: the model's class names name none; give --good-class NAME\n",
                o->cost ? "--cost" : "--target-escape");
        return -1;
    }
    if (o->cost) {
        if (dn_cost_parse(o->cost, m, cost)) { fprintf(stderr, PFX "%s\n", dn_last_error()); return -1; }
        in->cost = cost;
        rep->cost_spec = o->cost;
    }
    const char *ord = dn_meta_get(&m->meta, "ordinal");
    in->ordinal = o->ordinal || (ord && !strcmp(ord, "true"));
    return 0;
}

/* --ood: the evaluated rows are the in-distribution side (msp at the report's
 * temperature), then every set is scored and measured (ood/ood_eval.h). */
static int measure_ood(const eval_opts *o, eval_job *j, dn_ood_eval *oe, dn_eval_report *rep) {
    dn_ood_rows in;
    if (dn_ood_rows_make(j->m, j->feat, j->logits, j->nok, (float)rep->temperature, &in)) {
        fprintf(stderr, PFX "%s\n", dn_last_error());
        return -1;
    }
    dn_ood_eval_set_in(oe, j->m, &in, rep->split_name);
    if (dn_ood_eval_sets(oe, j->m, (float)rep->temperature, o->batch, o->threads, "defectnet eval", &rep->skipped)) {
        fprintf(stderr, PFX "%s\n", dn_last_error());
        return -1;
    }
    rep->ood = oe;
    return 0;
}

int cmd_eval(int argc, char **argv) {
    eval_opts o = {.batch = 16, .topk = 3, .given_thr = -1, .target_escape = -1};
    eval_job j;
    dn_eval_report rep;
    memset(&j, 0, sizeof j);
    memset(&rep, 0, sizeof rep);
    dn_eval_input in = {.good = -1, .target_escape = -1};
    dn_cost cost = {0};
    dn_ood_eval oe;
    memset(&oe, 0, sizeof oe);
    int rc = 2, pa = parse_args(argc, argv, &o);
    if (pa) { rc = pa > 0 ? 0 : 2; goto done; }
    if (dn_ood_eval_list(&oe, o.ood, o.nood)) { fprintf(stderr, PFX "%s\n", dn_last_error()); goto done; }
    if (load_data(&o, &j, &rep) || load_model(&o, &j, &rep) || decision_setup(&o, &j, &in, &rep, &cost))
        goto done;
    note_absent(&j, &rep);
    if (compute_logits(&o, &j, &rep)) goto done;

    rep.model = j.m;
    rep.model_path = o.model_path;
    rep.data_source = j.src;
    rep.split_name = j.split == DN_SPLIT_NONE ? "all" : dn_split_name(j.split);
    rep.listed = j.n;
    rep.fit_split = j.cal_ext ? o.cal_on : "val";
    in.k = j.m->num_classes;
    in.topk = o.topk;
    in.logits = j.logits;
    in.y = j.y;
    in.paths = j.kpaths;
    in.n = j.nok;
    in.vlogits = j.vlogits;
    in.vy = j.vy;
    in.nv = j.vok_n;
    in.fit_temperature = o.cal_on != NULL;
    in.target = o.given_thr >= 0 ? 0 : o.target;
    in.threshold = o.given_thr;
    if (dn_eval_analyse(&in, &rep)) { fprintf(stderr, PFX "%s\n", dn_last_error()); goto done; }
    calibration_warnings(&rep);
    if (o.nood && measure_ood(&o, &j, &oe, &rep)) goto done;
    if (o.html_path) dn_eval_thumbnails(&rep, stderr, PFX);
    if (o.html_path && !o.no_heatmaps) dn_eval_heatmaps(&rep, j.m, j.s, stderr, PFX);
    if (o.write_model && dn_eval_save_model(j.m, &rep, j.cal_ext ? o.cal_on : j.src, j.cal_ext, o.write_model)) {
        fprintf(stderr, PFX "%s\n", dn_last_error());
        goto done;
    }

    if (o.json_out) dn_eval_report_json(&rep, stdout);
    else dn_eval_report_table(&rep, stdout);
    fflush(stdout);
    if (o.json_path && write_text(o.json_path, &rep, dn_eval_report_json)) goto done;
    if (o.html_path && write_text(o.html_path, &rep, dn_eval_report_html)) goto done;
    if (rep.skipped) fprintf(stderr, PFX "%d unreadable image(s) skipped\n", rep.skipped);
    rc = rep.skipped ? 1 : 0;
done:
    dn_eval_report_free(&rep);
    dn_ood_eval_free(&oe);
    dn_cost_free(&cost);
    job_free(&j);
    return rc;
}
