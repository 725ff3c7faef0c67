/* defectnet calibrate: fit unknown-input detection into an existing model and
 * measure it against unknown image sets (docs/ood.md).
 *
 *   defectnet calibrate -m|--model M (-d|--data DIR|CSV | --manifest CSV) [-o|--out OUT]
 *                       [--bank N] [--k K] [--score knn|energy|rmd|combo] [--tpr F]
 *                       [--ood DIR|FILE ...] [--json FILE] [--batch B] [--threads T]
 *
 * The train split's features fit the detector (KNN bank, class means and
 * covariances), the val split's choose the threshold (--tpr of them accepted).
 * Data without a val split is split like `train` does (stratified, seed 42).
 * With --ood, the test split (else val) is scored against each unknown set:
 * AUROC and FPR at 95% TPR for every score and for max-softmax, and the share
 * of each set the stored decision flags unknown. --no-write only measures.
 *
 * Exit status (args.h): 0 ok, 1 some images unreadable (skipped), 2 usage/model/data
 * error, 3 internal. */
#include "cli/args.h"
#include "commands.h"
#include "core/core.h"
#include "core/json.h"
#include "io/dataset.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "ood/ood.h"
#include "ood/ood_eval.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PFX "defectnet calibrate: "

static void usage(FILE *f) {
    fprintf(f, "usage: defectnet calibrate -m|--model M (-d|--data DIR|CSV | --manifest CSV) [options]\n"
               "  -o, --out OUT       write the model with its unknown-input detector here (default: --model, replaced atomically)\n"
               "  --no-write          only measure (with --ood), write nothing\n"
               "  --bank N            KNN bank rows, a seeded random subset of the train features (default 10000)\n"
               "  --k K               neighbour rank of the KNN score, 1..64 (default 5)\n"
               "  --score S           combo (default) | knn | energy | rmd: the score behind ood_score and the decision\n"
               "  --tpr F             share of in-distribution val images accepted (default 0.95)\n"
               "  --ood DIR|FILE      unknown images (repeatable, up to 16): report AUROC / FPR@95%%TPR per score\n"
               "  --json FILE         write the measurement as JSON\n"
               "  --batch B, --threads T  forward batch (default 16) and threads (default: all cores)\n"
               "  data without a val split is split like `train` does (stratified, seed 42)\n" DN_EXIT_HELP);
}

int cmd_calibrate(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *out = NULL, *json = NULL, *ood[DN_OOD_MAX_SETS];
    int nood = 0, batch = 16, threads = 0, nowrite = 0;
    dn_ood_cfg cfg;
    dn_ood_cfg_default(&cfg);
    enum { O_MANIFEST = 256, O_NOWRITE, O_JSON, O_OOD, O_SCORE, O_BANK, O_K, O_TPR, O_BATCH, O_THREADS };
    static const dn_opt opts[] = {
        {"model", 'm', DN_ARG_REQ, NULL},   {"data", 'd', DN_ARG_REQ, NULL},      {"manifest", O_MANIFEST, DN_ARG_REQ, NULL},
        {"out", 'o', DN_ARG_REQ, NULL},     {"no-write", O_NOWRITE, DN_ARG_NONE, NULL}, {"json", O_JSON, DN_ARG_REQ, NULL},
        {"ood", O_OOD, DN_ARG_REQ, NULL},   {"score", O_SCORE, DN_ARG_REQ, NULL}, {"bank", O_BANK, DN_ARG_REQ, NULL},
        {"k", O_K, DN_ARG_REQ, NULL},       {"tpr", O_TPR, DN_ARG_REQ, NULL},     {"batch", O_BATCH, DN_ARG_REQ, NULL},
        {"threads", O_THREADS, DN_ARG_REQ, NULL}, {0}};
    dn_args a;
    dn_args_init(&a, "calibrate", argc, argv, opts);
    for (int c; (c = dn_args_next(&a)) != -1;) {
        double x;
        switch (c) {
        case 'h': usage(stdout); return DN_EXIT_OK;
        case 'm': model = a.val; break;
        case 'd':
        case O_MANIFEST: data = a.val; break;
        case 'o': out = a.val; break;
        case O_NOWRITE: nowrite = 1; break;
        case O_JSON: json = a.val; break;
        case O_OOD:
            if (nood == DN_OOD_MAX_SETS) return dn_usage_error("calibrate", "--ood: at most %d sets", DN_OOD_MAX_SETS);
            ood[nood++] = a.val;
            break;
        case O_SCORE:
            if ((cfg.kind = dn_ood_kind_parse(a.val)) < 0)
                return dn_usage_error("calibrate", "--score '%s': expected combo, knn, energy or rmd", a.val);
            break;
        case O_BANK: if (dn_arg_int(&a, 1, 10000000, &cfg.bank)) return DN_EXIT_USAGE; break;
        case O_K: if (dn_arg_int(&a, 1, 64, &cfg.k)) return DN_EXIT_USAGE; break;
        case O_TPR: if (dn_arg_real(&a, 0.5, 0.999, 0, &x)) return DN_EXIT_USAGE; cfg.tpr = (float)x; break;
        case O_BATCH: if (dn_arg_int(&a, 1, 1024, &batch)) return DN_EXIT_USAGE; break;
        case O_THREADS: if (dn_arg_int(&a, 0, 1024, &threads)) return DN_EXIT_USAGE; break;
        default: return DN_EXIT_USAGE;
        }
    }
    if (dn_args_npos(&a)) return dn_usage_error("calibrate", "unexpected argument '%s'", dn_args_pos(&a, 0));
    if (!model || !data)
        return dn_usage_error("calibrate", "--model and --data (or --manifest) are required (see defectnet calibrate --help)");
    if (!out) out = model;
    int rc = 2, skipped_total = 0;
    dn_model *m = NULL;
    dn_dataset *ds = NULL;
    const char **tp = NULL, **vp = NULL, **ep = NULL;
    int *tl = NULL, *vl = NULL, *el = NULL, ntr = 0, nva = 0, nte = 0;
    dn_ood_eval oe;
    memset(&oe, 0, sizeof oe);
    dn_ood_rows in = {0};
    int *fy = NULL;
    dn_status st;
    if (dn_ood_eval_list(&oe, ood, nood)) { fprintf(stderr, PFX "%s\n", dn_last_error()); goto done; }
    if (dn_model_load(model, &m)) { fprintf(stderr, PFX "%s\n", dn_last_error()); goto done; }
    if (m->num_classes < 1) { fprintf(stderr, PFX "%s: the model has no classification head\n", model); goto done; }
    if ((st = dn_dataset_open(data, &ds))) { fprintf(stderr, PFX "%s\n", dn_last_error()); goto done; }
    if (dn_dataset_count(ds, DN_SPLIT_VAL, NULL) == 0) {
        dn_split_cfg sc;
        dn_split_cfg_default(&sc);
        if ((st = dn_dataset_split(ds, &sc))) { fprintf(stderr, PFX "%s\n", dn_last_error()); goto done; }
    }
    int map[DN_MAX_CLASSES];
    for (int c = 0; c < ds->nclasses && c < DN_MAX_CLASSES; c++) {
        map[c] = -1;
        for (int k = 0; k < m->num_classes; k++)
            if (!strcmp(ds->classes[c], m->class_names[k])) map[c] = k;
        if (map[c] < 0) { fprintf(stderr, PFX "%s: class '%s' is not one of the model's classes\n", data, ds->classes[c]); goto done; }
    }
    if (dn_dataset_select(ds, DN_SPLIT_TRAIN, &tp, &tl, &ntr) || dn_dataset_select(ds, DN_SPLIT_VAL, &vp, &vl, &nva) ||
        dn_dataset_select(ds, DN_SPLIT_TEST, &ep, &el, &nte)) {
        fprintf(stderr, PFX "%s\n", dn_last_error());
        goto done;
    }
    if (ntr < 2 || nva < 1) { fprintf(stderr, PFX "%s: needs train and val images (%d train, %d val)\n", data, ntr, nva); goto done; }
    fprintf(stderr, PFX "features of %d train + %d val images\n", ntr, nva);
    int sk;
    if (!(fy = dn_malloc((size_t)ntr * sizeof(int)))) { fprintf(stderr, PFX "out of memory\n"); rc = 3; goto done; }
    for (int i = 0; i < ntr; i++) fy[i] = map[tl[i]];
    st = dn_ood_calibrate_files(m, tp, fy, ntr, vp, nva, &cfg, batch, threads, &sk);
    skipped_total += sk;
    if (st) { fprintf(stderr, PFX "%s: %s\n", data, dn_last_error()); goto done; }
    const dn_ood *o = m->ood;
    char desc[300];
    dn_ood_describe(o, desc, sizeof desc);
    printf("unknown-input detection: %s\n", desc);
    if (!nowrite) {
        if ((st = dn_model_save(m, out))) { fprintf(stderr, PFX "%s\n", dn_last_error()); goto done; }
        printf("wrote %s\n", out);
    }
    if (nood) {
        const char *const *ip = nte ? ep : vp;
        if ((st = dn_ood_rows_files(m, ip, nte ? nte : nva, m->temperature, batch, threads, "defectnet calibrate", &in,
                                    &sk))) {
            fprintf(stderr, PFX "%s\n", dn_last_error());
            goto done;
        }
        skipped_total += sk;
        dn_ood_eval_set_in(&oe, m, &in, nte ? "test" : "val");
        st = dn_ood_eval_sets(&oe, m, m->temperature, batch, threads, "defectnet calibrate", &skipped_total);
        if (st) { fprintf(stderr, PFX "%s\n", dn_last_error()); goto done; }
        dn_ood_eval_table(&oe, stdout);
        if (json) {
            FILE *f = fopen(json, "w");
            if (f) {
                fputs("{\"model\":", f);
                dn_json_fput_str(f, model);
                fputc(',', f);
                dn_ood_eval_json_members(&oe, f);
                fputs("}\n", f);
            }
            int bad = !f || ferror(f);
            if (f && fclose(f)) bad = 1;
            if (bad) { fprintf(stderr, PFX "%s: cannot write: %s\n", json, strerror(errno)); goto done; }
        }
    }
    rc = skipped_total ? 1 : 0;
done:
    dn_ood_rows_free(&in);
    dn_ood_eval_free(&oe);
    free(tp); free(tl); free(vp); free(vl); free(ep); free(el); free(fy);
    dn_dataset_free(ds);
    dn_model_free(m);
    return rc;
}
