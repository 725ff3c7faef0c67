/* Measuring unknown-input detection against unknown image sets (docs/ood.md):
 * the scores of in-distribution images and of up to DN_OOD_MAX_SETS unknown
 * sets (a folder or a file each), per set the share the model's stored decision
 * flags unknown and, for every score and for the max-softmax baseline, AUROC
 * and FPR at 95% TPR; written as a text table and as JSON. One implementation
 * for `defectnet calibrate --ood` and `defectnet eval --ood` (eval's HTML
 * section with the score distributions is src/eval/report_ood.c).
 *
 * Measures (columns of dn_ood_rows, higher = more unusual): the detector's
 * scores in dn_ood_kind order (knn, energy, rmd, combo), then msp = -max
 * softmax(logits / T).
 *
 * Ownership: a dn_ood_eval owns its rows, set names and image lists; release
 * with dn_ood_eval_free (also after a failed call). Zero-initialise before use. */
#ifndef DN_OOD_EVAL_H
#define DN_OOD_EVAL_H
#include "ood/ood.h"
#include <stdio.h>

#define DN_OOD_MAX_SETS 16
#define DN_OOD_MSP DN_OOD_NKINDS          /* column of the max-softmax baseline */
#define DN_OOD_NMEASURES (DN_OOD_NKINDS + 1)

/* "knn", "energy", "rmd", "combo", "msp" for columns 0..4; "?" otherwise. */
const char *dn_ood_measure_name(int j);

typedef struct dn_ood_rows {
    int n;
    float *s;                 /* n x DN_OOD_NMEASURES */
} dn_ood_rows;

typedef struct dn_ood_set {
    char *name;               /* as given on the command line; owned */
    char **paths;             /* its image files until scored (then NULL); owned */
    int npaths;
    dn_ood_rows rows;         /* readable images only */
    int flagged;              /* rows whose model score is above the threshold */
    double auroc[DN_OOD_NMEASURES], fpr95[DN_OOD_NMEASURES];
} dn_ood_set;

typedef struct dn_ood_eval {
    int kind, k, nbank;       /* the model's detector */
    float threshold;
    char in_split[24];        /* name of the in-distribution images ("test", "val", "all") */
    dn_ood_rows in;
    int in_flagged;
    int nsets;
    dn_ood_set sets[DN_OOD_MAX_SETS];
} dn_ood_eval;

/* Lists the image files of each of n sets (a file or a folder, walked like
 * predict's inputs). Fails with one line naming the set (DN_ERR_ARG): more than
 * DN_OOD_MAX_SETS sets, a path that cannot be accessed, a folder without image
 * files. Cheap: meant to run before any image is read. */
dn_status dn_ood_eval_list(dn_ood_eval *e, const char *const *sets, int n);

/* Scores of n images from their pooled features (n x feat_dim) and raw logits
 * (n x classes; NULL: computed with m's head); msp uses temperature T (<= 0: 1).
 * m must carry OOD data (m->ood). out->s is malloc'ed (dn_ood_rows_free). */
dn_status dn_ood_rows_make(const dn_model *m, const float *feat, const float *logits, int n, float T, dn_ood_rows *out);
/* The same for image files (features through m, batch per forward, threads);
 * unreadable files are left out and counted in *skipped (who prefixes the one
 * stderr line about them). */
dn_status dn_ood_rows_files(const dn_model *m, const char *const *paths, int n, float T, int batch, int threads,
                            const char *who, dn_ood_rows *out, int *skipped);
void dn_ood_rows_free(dn_ood_rows *r);

/* The in-distribution side: takes over *in (rows of m's images, e.g. from
 * dn_ood_rows_make) and records m's detector and the split's name. */
void dn_ood_eval_set_in(dn_ood_eval *e, const dn_model *m, dn_ood_rows *in, const char *split);
/* Scores every listed set with m (as dn_ood_rows_files) and measures it
 * against e->in. A set none of whose images can be read fails naming it
 * (DN_ERR_ARG); unreadable images of a set are added to *skipped and named in
 * one stderr line "WHO: --ood SET: ..." (who: e.g. "defectnet eval"). */
dn_status dn_ood_eval_sets(dn_ood_eval *e, const dn_model *m, float T, int batch, int threads, const char *who,
                           int *skipped);

/* Text: the in-distribution line, then per set its flagged share and a
 * score / AUROC / FPR@95%TPR table (the model's score marked). */
void dn_ood_eval_table(const dn_ood_eval *e, FILE *f);
/* JSON members without the braces: "score", "threshold", "k", "bank", "in"
 * {split, n, flagged}, "sets" [{set, n, flagged, scores {name: {auroc, fpr95}}}]. */
void dn_ood_eval_json_members(const dn_ood_eval *e, FILE *f);
void dn_ood_eval_free(dn_ood_eval *e);
#endif
