/* defectnet quantize: opt a model into reduced-precision inference, guarded.
 *
 *   defectnet quantize --model M --val DIR_OR_MANIFEST --mode bf16|winograd|bf16+winograd --out M2
 *                      [--calib DIR_OR_MANIFEST] [--calib-method minmax|percentile] [--max-calib N]
 *                      [--min-agreement 0.995] [--no-fallback]
 *                      [--max-val N] [--batch B] [--threads T]
 *
 * Runs the validation images (a folder of class sub-folders, or a CSV manifest;
 * with a split manifest only its val rows) through the exact fp32 model and the
 * reduced one (bf16 convs, fp32 Winograd for 3x3 stride-1 convs, or both), measures top-1 agreement and per-class accuracy change, and writes them
 * into M2's metadata (quant.*, shown by `defectnet info`). Below the minimum
 * agreement it warns and keeps fp32 for the convs that cause the disagreement
 * (greedy, most sensitive first); with --no-fallback, or if no layer choice
 * reaches the minimum, it refuses and writes nothing. int8 first calibrates the
 * activation scales (--calib-method minmax (default) | percentile 99.99) on --calib images (of a
 * split manifest its train rows), or, without --calib, on the train rows of the
 * --manifest/--data split manifest, else on the validation images; bf16 and
 * Winograd need no calibration (--calib is then unused).
 * Exit: 0 written, 1 written but some validation images were unreadable (named),
 * 2 usage/data error or refusal (one-line message), 3 internal. */
#include "cli/args.h"
#include "core/core.h"
#include "core/progress.h"
#include "io/dataset.h"
#include "io/modelfile.h"
#include "kernels/kernels.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "nn/quant.h"
#include "nn/quant_int8.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: defectnet quantize -m|--model M (-d|--data DIR|CSV | --manifest SPLIT.csv)\n"
               "                          --mode bf16|winograd|bf16+winograd|int8 -o|--out M2\n"
               "                          [--calib DIR|CSV] [--calib-method minmax|percentile] [--max-calib N]\n"
               "                          [--min-agreement 0.995] [--no-fallback]\n"
               "                          [--max-val N] [--batch B] [--threads T]\n"
               "  Validation images: a folder of class folders or a CSV manifest (of a split manifest\n"
               "  only its val rows). --val is the old spelling of --data.\n" DN_EXIT_HELP);
}

/* Preprocessed images of ds (rows of `split` if ds has any, else all), evenly
 * strided down to max; labels mapped through map (NULL: -1). Unreadable images
 * are named on stderr and counted in *bad. DN_EXIT_OK or an exit code. */
static int load_set(const dn_dataset *ds, const int *map, int split, int max, const dn_model *m, const char *what,
                    float **xo, int **lo, int *no, int *bad) {
    int nsel = 0, has = 0, n = 0;
    *xo = NULL; *lo = NULL; *no = 0; *bad = 0;
    for (int i = 0; i < ds->n; i++) has |= ds->items[i].split == split;
    int *pick = dn_malloc((size_t)(ds->n ? ds->n : 1) * sizeof(int));
    if (!pick) return DN_EXIT_INTERNAL;
    for (int i = 0; i < ds->n; i++)
        if (!has || ds->items[i].split == split) pick[nsel++] = i;
    int nuse = nsel < max ? nsel : max;
    size_t per = (size_t)3 * m->pp.crop * m->pp.crop;
    float *x = nuse ? dn_alloc_aligned((size_t)nuse * per * sizeof(float)) : NULL;
    int *labels = dn_malloc((size_t)(nuse ? nuse : 1) * sizeof(int));
    if ((nuse && !x) || !labels) { free(pick); dn_free_aligned(x); free(labels); return DN_EXIT_INTERNAL; }
    dn_progress pr;
    char title[64];
    snprintf(title, sizeof title, "quantize: preparing %s images", what);
    dn_progress_start(&pr, title, nuse);
    for (int t = 0; t < nuse; t++) {
        dn_progress_update(&pr, t);
        const dn_item *it = &ds->items[pick[(long)t * nsel / nuse]];
        dn_image img = {0};
        if (dn_image_load(it->path, &img) || dn_preprocess(&img, &m->pp, x + (size_t)n * per)) {
            dn_progress_clear(&pr);
            fprintf(stderr, "defectnet quantize: skipping %s\n", dn_last_error());
            (*bad)++;
        } else {
            labels[n++] = map ? map[it->label] : -1;
        }
        dn_image_free(&img);
    }
    dn_progress_end(&pr);
    free(pick);
    *xo = x; *lo = labels; *no = n;
    return DN_EXIT_OK;
}

int cmd_quantize(int argc, char **argv) {
    const char *model = NULL, *val = NULL, *manifest = NULL, *mode_s = NULL, *out = NULL, *calib = NULL;
    double min_agree = 0.995;
    int fallback = 1, max_val = 2000, batch = 16, threads = 0, rc = DN_EXIT_DATA, max_calib = 256;
    dn_calib_method cmethod = DN_CALIB_DEFAULT;
    dn_model *m = NULL;
    dn_dataset *ds = NULL;
    float *x = NULL;
    int *labels = NULL, *map = NULL, *clabels = NULL;
    float *xc = NULL;
    dn_dataset *cds = NULL;
    dn_status st;
    enum { O_MODE = 256, O_CALIB, O_MIN_AGREE, O_NO_FALLBACK, O_MAX_VAL, O_BATCH, O_THREADS, O_MANIFEST, O_CMETHOD,
           O_MAX_CALIB };
    static const dn_opt opts[] = {
        {"model", 'm', DN_ARG_REQ, NULL}, {"data", 'd', DN_ARG_REQ, NULL}, {"val", 'd', DN_ARG_REQ, "--data"},
        {"manifest", O_MANIFEST, DN_ARG_REQ, NULL}, {"mode", O_MODE, DN_ARG_REQ, NULL}, {"out", 'o', DN_ARG_REQ, NULL},
        {"calib", O_CALIB, DN_ARG_REQ, NULL}, {"min-agreement", O_MIN_AGREE, DN_ARG_REQ, NULL},
        {"no-fallback", O_NO_FALLBACK, DN_ARG_NONE, NULL}, {"max-val", O_MAX_VAL, DN_ARG_REQ, NULL},
        {"batch", O_BATCH, DN_ARG_REQ, NULL}, {"threads", O_THREADS, DN_ARG_REQ, NULL},
        {"calib-method", O_CMETHOD, DN_ARG_REQ, NULL}, {"max-calib", O_MAX_CALIB, DN_ARG_REQ, NULL}, {0}};
    dn_args a;
    dn_args_init(&a, "quantize", argc, argv, opts);
    for (int c; (c = dn_args_next(&a)) != -1;) {
        switch (c) {
        case 'h': usage(stdout); return 0;
        case 'm': model = a.val; break;
        case 'd': val = a.val; break;
        case O_MANIFEST: manifest = a.val; break;
        case O_MODE: mode_s = a.val; break;
        case 'o': out = a.val; break;
        case O_CALIB: calib = a.val; break;
        case O_NO_FALLBACK: fallback = 0; break;
        case O_MIN_AGREE: if (dn_arg_real(&a, 0, 1, 1, &min_agree)) return DN_EXIT_USAGE; break;
        case O_MAX_VAL: if (dn_arg_int(&a, 1, 1 << 30, &max_val)) return DN_EXIT_USAGE; break;
        case O_BATCH: if (dn_arg_int(&a, 1, 1024, &batch)) return DN_EXIT_USAGE; break;
        case O_THREADS: if (dn_arg_int(&a, 0, 1024, &threads)) return DN_EXIT_USAGE; break;
        case O_MAX_CALIB: if (dn_arg_int(&a, 1, 1 << 20, &max_calib)) return DN_EXIT_USAGE; break;
        case O_CMETHOD:
            if (dn_calib_method_parse(a.val, &cmethod)) return dn_usage_error("quantize", "--calib-method: %s", dn_last_error());
            break;
        default: return DN_EXIT_USAGE; /* already reported in one line */
        }
    }
    if (dn_args_npos(&a)) return dn_usage_error("quantize", "unexpected argument '%s'", dn_args_pos(&a, 0));
    if (val && manifest) return dn_usage_error("quantize", "give --data or --manifest, not both");
    if (manifest) val = manifest;
    if (!model || !val || !mode_s || !out)
        return dn_usage_error("quantize", "--model, --data (or --manifest), --mode and --out are required (see defectnet quantize --help)");
    if (strcmp(mode_s, "int8") && (!dn_quant_mode_valid(mode_s) || !strcmp(mode_s, "fp32")))
        return dn_usage_error("quantize", "--mode '%s': expected bf16, winograd, bf16+winograd or int8", mode_s);
    const int int8 = !strcmp(mode_s, "int8");
    if (calib) {
        if ((st = dn_dataset_open(calib, &cds))) {
            fprintf(stderr, "defectnet quantize: --calib: %s\n", dn_last_error());
            return dn_exit_code(st);
        }
        if (!int8) {
            fprintf(stderr, "defectnet quantize: note: %s keeps the fp32 range, no activation calibration needed; --calib unused\n",
                    mode_s);
            dn_dataset_free(cds);
            cds = NULL;
        }
    }
    if ((st = dn_model_load(model, &m))) { rc = dn_cli_fail("quantize", st); goto done; }
    if (m->num_classes < 1) { fprintf(stderr, "defectnet quantize: %s: model has no classification head\n", model); goto done; }
    if ((st = dn_dataset_open(val, &ds))) { rc = dn_cli_fail("quantize", st); goto done; }
    /* dataset class -> model class by name */
    if (!(map = dn_malloc((size_t)ds->nclasses * sizeof(int)))) goto oom;
    for (int c = 0; c < ds->nclasses; c++) {
        map[c] = -1;
        for (int k = 0; k < m->num_classes; k++)
            if (!strcmp(ds->classes[c], dn_model_class_name(m, k))) map[c] = k;
        if (map[c] < 0) {
            fprintf(stderr, "defectnet quantize: %s: class '%s' is not one of the model's classes\n", val, ds->classes[c]);
            goto done;
        }
    }
    /* the val split of a split manifest, else everything; evenly strided down to --max-val */
    int n = 0, bad = 0;
    if ((rc = load_set(ds, map, DN_SPLIT_VAL, max_val, m, "validation", &x, &labels, &n, &bad))) goto oom;
    rc = DN_EXIT_DATA;
    if (n < 1) { fprintf(stderr, "defectnet quantize: %s: no readable validation images\n", val); goto done; }
    fprintf(stderr, "defectnet quantize: %d validation images (%d unreadable skipped) from %s\n", n, bad, val);
    if (int8) { /* activation scales: --calib, else the train rows of the split manifest, else the validation images */
        int nc = 0, cbad = 0, has_train = 0;
        const dn_dataset *src = cds;
        for (int i = 0; !src && i < ds->n; i++) has_train |= ds->items[i].split == DN_SPLIT_TRAIN;
        if (!src && has_train) src = ds;
        if (src) {
            if ((rc = load_set(src, NULL, DN_SPLIT_TRAIN, max_calib, m, "calibration", &xc, &clabels, &nc, &cbad))) goto oom;
            rc = DN_EXIT_DATA;
            bad += cbad;
            if (nc < 1) { fprintf(stderr, "defectnet quantize: %s: no readable calibration images\n", calib ? calib : val); goto done; }
        }
        fprintf(stderr, "defectnet quantize: calibrating int8 activations (%s) on %d %s images\n",
                cmethod == DN_CALIB_MINMAX ? "minmax" : "percentile", src ? nc : n, src ? "calibration" : "validation");
        if ((st = dn_int8_calibrate(m, src ? xc : x, src ? nc : n, cmethod, DN_CALIB_DEFAULT_PCT, batch, threads, NULL))) {
            rc = dn_cli_fail("quantize", st);
            goto done;
        }
    }
    dn_quant_opts o = {mode_s, min_agree, fallback, threads, batch, stderr};
    dn_quant_result r;
    if ((st = dn_quantize(m, x, labels, n, &o, &r))) { rc = dn_cli_fail("quantize", st); goto done; }
    printf("top-1 agreement with fp32: %.4f (%d images, minimum %.4f)\n", r.agreement, r.nval, min_agree);
    printf("accuracy: %s\n", dn_meta_get(&m->meta, DN_META_QUANT_ACC));
    printf("per-class accuracy change (points): %s; largest drop %.2f\n", dn_meta_get(&m->meta, DN_META_QUANT_CLASS),
           r.max_class_drop_pt);
    if (!r.ok) {
        fprintf(stderr, "defectnet quantize: refused: %s top-1 agreement %.4f < %.4f%s; %s not written\n", mode_s,
                r.agreement, min_agree, fallback ? " even with fp32 fallback" : " (--no-fallback)", out);
        goto done;
    }
    if (r.n_fp32_layers)
        fprintf(stderr, "defectnet quantize: warning: %s alone gave agreement below %.4f; kept fp32 for %d of %d convs: %s\n",
                mode_s, min_agree, r.n_fp32_layers, r.nconv, dn_meta_get(&m->meta, DN_META_QUANT_FP32));
    if ((st = dn_model_save(m, out))) { rc = dn_cli_fail("quantize", st); goto done; }
    printf("wrote %s (quant.mode=%s, %d of %d convs in fp32)\n", out, dn_meta_get(&m->meta, DN_META_QUANT_MODE),
           r.n_fp32_layers, r.nconv);
    rc = bad ? DN_EXIT_PARTIAL : DN_EXIT_OK; /* written, but some validation images were unreadable */
    goto done;
oom:
    fprintf(stderr, "defectnet quantize: out of memory\n");
    rc = DN_EXIT_INTERNAL;
done:
    dn_free_aligned(x);
    dn_free_aligned(xc);
    free(labels); free(map); free(clabels);
    dn_dataset_free(cds);
    dn_dataset_free(ds);
    dn_model_free(m);
    return rc;
}
