/* defectnet quantize: opt a model into reduced-precision inference, guarded.
 *
 *   defectnet quantize --model M --val DIR_OR_MANIFEST --mode bf16|winograd|bf16+winograd --out M2
 *                      [--calib DIR_OR_MANIFEST] [--min-agreement 0.995] [--no-fallback]
 *                      [--max-val N] [--batch B] [--threads T]
 *
 * Runs the validation images (a folder of class sub-folders, or a CSV manifest;
 * with a split manifest only its val rows) through the exact fp32 model and the
 * reduced one (bf16 convs, fp32 Winograd for 3x3 stride-1 convs, or both), measures top-1 agreement and per-class accuracy change, and writes them
 * into M2's metadata (quant.*, shown by `defectnet info`). Below the minimum
 * agreement it warns and keeps fp32 for the convs that cause the disagreement
 * (greedy, most sensitive first); with --no-fallback, or if no layer choice
 * reaches the minimum, it refuses and writes nothing. bf16 needs no activation
 * calibration: --calib is accepted for the int8 mode, which is not implemented
 * in this build (refused with a message).
 * Exit: 0 written, 1 failure or refusal (one-line message), 2 usage. */
#include "core/core.h"
#include "io/dataset.h"
#include "io/modelfile.h"
#include "kernels/kernels.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "nn/quant.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: defectnet quantize --model M --val DIR_OR_MANIFEST --mode bf16|winograd|bf16+winograd|int8 --out M2\n"
               "                          [--calib DIR_OR_MANIFEST] [--min-agreement 0.995] [--no-fallback]\n"
               "                          [--max-val N] [--batch B] [--threads T]\n");
}

/* Whole-string numeric option values; a bad one is named in a one-line error. */
static int opt_int(const char *opt, const char *v, int lo, int hi, int *out) {
    char *end = NULL;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) {
        fprintf(stderr, "defectnet quantize: %s '%s': expected an integer in %d..%d\n", opt, v, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}
static int opt_prob(const char *opt, const char *v, double *out) {
    char *end = NULL;
    double x = strtod(v, &end);
    if (!*v || *end || !(x > 0 && x <= 1)) {
        fprintf(stderr, "defectnet quantize: %s '%s': expected a number in (0,1]\n", opt, v);
        return -1;
    }
    *out = x;
    return 0;
}

int cmd_quantize(int argc, char **argv) {
    const char *model = NULL, *val = NULL, *mode_s = NULL, *out = NULL, *calib = NULL;
    double min_agree = 0.995;
    int fallback = 1, max_val = 2000, batch = 16, threads = 0, rc = 1;
    dn_model *m = NULL;
    dn_dataset *ds = NULL;
    float *x = NULL;
    int *labels = NULL, *map = NULL, *pick = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--no-fallback")) fallback = 0;
        else if (!v) { fprintf(stderr, "defectnet quantize: option '%s' needs a value\n", a); usage(stderr); return 2; }
        else if (!strcmp(a, "--model")) model = argv[++i];
        else if (!strcmp(a, "--val")) val = argv[++i];
        else if (!strcmp(a, "--mode")) mode_s = argv[++i];
        else if (!strcmp(a, "--out")) out = argv[++i];
        else if (!strcmp(a, "--calib")) calib = argv[++i];
        else if (!strcmp(a, "--min-agreement")) { if (opt_prob(a, argv[++i], &min_agree)) return 2; }
        else if (!strcmp(a, "--max-val")) { if (opt_int(a, argv[++i], 1, 1 << 30, &max_val)) return 2; }
        else if (!strcmp(a, "--batch")) { if (opt_int(a, argv[++i], 1, 1024, &batch)) return 2; }
        else if (!strcmp(a, "--threads")) { if (opt_int(a, argv[++i], 0, 1024, &threads)) return 2; }
        else { fprintf(stderr, "defectnet quantize: unknown option '%s'\n", a); usage(stderr); return 2; }
    }
    if (!model || !val || !mode_s || !out) {
        fprintf(stderr, "defectnet quantize: --model, --val, --mode and --out are required\n");
        usage(stderr);
        return 2;
    }
    if (!(min_agree > 0 && min_agree <= 1) || max_val < 1 || batch < 1 || batch > 1024) {
        fprintf(stderr, "defectnet quantize: --min-agreement must be in (0,1], --max-val >= 1, --batch 1..1024\n");
        return 2;
    }
    if (strcmp(mode_s, "int8") && (!dn_quant_mode_valid(mode_s) || !strcmp(mode_s, "fp32"))) {
        fprintf(stderr, "defectnet quantize: --mode '%s': expected bf16, winograd, bf16+winograd or int8\n", mode_s);
        return 2;
    }
    if (!strcmp(mode_s, "int8")) {
        fprintf(stderr, "defectnet quantize: int8 is not implemented in this build (use --mode bf16)\n");
        return 1;
    }
    if (calib) {
        dn_dataset *cd = NULL;
        if (dn_dataset_open(calib, &cd)) { fprintf(stderr, "defectnet quantize: --calib: %s\n", dn_last_error()); return 1; }
        dn_dataset_free(cd);
        fprintf(stderr, "defectnet quantize: note: %s keeps the fp32 range, no activation calibration needed; --calib unused\n",
                mode_s);
    }
    if (dn_model_load(model, &m)) { fprintf(stderr, "defectnet quantize: %s\n", dn_last_error()); goto done; }
    if (m->num_classes < 1) { fprintf(stderr, "defectnet quantize: %s: model has no classification head\n", model); goto done; }
    if (dn_dataset_open(val, &ds)) { fprintf(stderr, "defectnet quantize: %s\n", dn_last_error()); goto done; }
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
    int nsel = 0, want_val = 0;
    for (int i = 0; i < ds->n; i++) want_val |= ds->items[i].split == DN_SPLIT_VAL;
    if (!(pick = dn_malloc((size_t)(ds->n ? ds->n : 1) * sizeof(int)))) goto oom;
    for (int i = 0; i < ds->n; i++)
        if (!want_val || ds->items[i].split == DN_SPLIT_VAL) pick[nsel++] = i;
    int nuse = nsel < max_val ? nsel : max_val;
    if (nuse < 1) { fprintf(stderr, "defectnet quantize: %s: no validation images\n", val); goto done; }
    size_t per = (size_t)3 * m->pp.crop * m->pp.crop;
    if (!(x = dn_alloc_aligned((size_t)nuse * per * sizeof(float))) || !(labels = dn_malloc((size_t)nuse * sizeof(int))))
        goto oom;
    int n = 0, bad = 0;
    for (int t = 0; t < nuse; t++) {
        const dn_item *it = &ds->items[pick[(long)t * nsel / nuse]];
        dn_image img = {0};
        if (dn_image_load(it->path, &img) || dn_preprocess(&img, &m->pp, x + (size_t)n * per)) {
            fprintf(stderr, "defectnet quantize: skipping %s\n", dn_last_error());
            bad++;
        } else {
            labels[n++] = map[it->label];
        }
        dn_image_free(&img);
    }
    if (n < 1) { fprintf(stderr, "defectnet quantize: %s: no readable validation images\n", val); goto done; }
    fprintf(stderr, "defectnet quantize: %d validation images (%d unreadable skipped) from %s\n", n, bad, val);
    dn_quant_opts o = {mode_s, min_agree, fallback, threads, batch, stderr};
    dn_quant_result r;
    if (dn_quantize(m, x, labels, n, &o, &r)) { fprintf(stderr, "defectnet quantize: %s\n", dn_last_error()); goto done; }
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
    if (dn_model_save(m, out)) { fprintf(stderr, "defectnet quantize: %s\n", dn_last_error()); goto done; }
    printf("wrote %s (quant.mode=%s, %d of %d convs in fp32)\n", out, dn_meta_get(&m->meta, DN_META_QUANT_MODE),
           r.n_fp32_layers, r.nconv);
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "defectnet quantize: out of memory\n");
done:
    dn_free_aligned(x);
    free(labels); free(map); free(pick);
    dn_dataset_free(ds);
    dn_model_free(m);
    return rc;
}
