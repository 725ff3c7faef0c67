/* Unknown-input (out-of-distribution) detection from the penultimate features
 * and the logits of a classifier (see docs/ood.md).
 *
 * Scores (higher = more unusual), all post-hoc, computed per image:
 *  - knn:    1 - cosine similarity to the k-th nearest row of a bank of
 *            L2-normalised training features (Sun et al. 2022, "Out-of-distribution
 *            detection with deep nearest neighbors");
 *  - energy: -logsumexp(logits) (Liu et al. 2020, T = 1);
 *  - rmd:    relative Mahalanobis distance min_k MD_k(z) - MD_0(z) with a shared
 *            within-class covariance and a background (all-class) Gaussian
 *            (Ren et al. 2021);
 *  - combo:  mean of the knn and rmd scores, each standardised by its mean and
 *            standard deviation over the in-distribution validation images.
 * One of them (dn_ood.kind) is the model's ood_score; its threshold is the
 * tpr-quantile (default 0.95) of that score over in-distribution validation
 * images, so that fraction of them is accepted.
 *
 * Ownership: a dn_ood owns every array; dn_ood_free releases it. A dn_model
 * owns its dn_ood (model.h: m->ood, NULL = no OOD data). */
#ifndef DN_OOD_H
#define DN_OOD_H
#include "core/core.h"
#include "nn/model.h"
#include "core/tensor.h"
#include "core/half.h"
#include <stdint.h>

typedef enum { DN_OOD_KNN = 0, DN_OOD_ENERGY = 1, DN_OOD_RMD = 2, DN_OOD_COMBO = 3, DN_OOD_NKINDS = 4 } dn_ood_kind;

/* "knn" | "energy" | "rmd" | "combo"; parse returns -1 for anything else. */
const char *dn_ood_kind_name(int kind);
int dn_ood_kind_parse(const char *s);

typedef struct dn_ood {
    int dim, ncls;
    int nbank, k;
    uint16_t *bank;        /* nbank x dim, unit-length rows stored as IEEE fp16 (core/half.h: dn_f16_to_f32);
                              scored by ood/knn.h */
    int *bank_y;           /* nbank class labels of the bank rows (review neighbours); NULL in
                              files written before they were stored (tensor ood.bank_labels) */
    float *mu;             /* ncls x dim class means (raw features) */
    float *mu0;            /* dim: mean of all fit features */
    float *prec;           /* dim x dim inverse shared within-class covariance */
    float *prec0;          /* dim x dim inverse covariance of all fit features */
    float *pmu;            /* derived: ncls x dim = prec * mu_k */
    float *mpm;            /* derived: ncls: mu_k' prec mu_k */
    float *pmu0;           /* derived: dim = prec0 * mu0 */
    float mpm0;            /* derived: mu0' prec0 mu0 */
    int kind;              /* dn_ood_kind that gives ood_score */
    float threshold;       /* ood_score above it -> decision unknown */
    float tpr;             /* fraction of in-distribution validation accepted at fit time */
    float zmean[DN_OOD_NKINDS], zstd[DN_OOD_NKINDS]; /* validation statistics of each score */
    int fit_rows, val_rows;
    float shrink;          /* covariance shrinkage used at fit time */
    float cam_ref[4];      /* Grad-CAM reference scale per layer1..4 (0 = none, see gradcam.h) */
} dn_ood;

typedef struct dn_ood_cfg {
    int bank;              /* max bank rows (random subset of the fit rows, seeded); default 10000 */
    int k;                 /* neighbour rank; default 5 */
    int kind;              /* default DN_OOD_COMBO */
    float tpr;             /* default 0.95 */
    float shrink;          /* covariance shrinkage toward (trace/dim) I, default 0.1 */
    uint64_t seed;         /* default 42 */
} dn_ood_cfg;
void dn_ood_cfg_default(dn_ood_cfg *c);

/* Fit from the features of nfit labelled training images (labels 0..ncls-1,
 * model classes) and choose the threshold on nval in-distribution validation
 * images (their logits are computed with m's head). *out owned by the caller. */
dn_status dn_ood_fit(const dn_model *m, const float *fit_feat, const int *fit_y, int nfit, const float *val_feat,
                     int nval, const dn_ood_cfg *cfg, dn_ood **out);

/* All scores of n images: scores[i * DN_OOD_NKINDS + kind] (the combo from the
 * stored statistics). feat n x dim, logits n x ncls (raw, before temperature). */
dn_status dn_ood_scores(const dn_ood *o, const float *feat, const float *logits, int n, float *scores);

/* The same with the KNN part split across pool's threads (pool may be NULL). */
dn_status dn_ood_scores_pool(const dn_ood *o, const float *feat, const float *logits, int n, dn_pool *pool, float *scores);

/* For the engine: sets preds[i].ood_score (NAN if m has no OOD data) from the
 * features and raw logits of n images, the whole batch at once (each bank row
 * is read once per batch); pool (may be NULL) splits the bank. Decisions come
 * from dn_ood_decide. */
dn_status dn_ood_score_preds(const dn_model *m, const float *feat, const float *logits, int n, dn_pool *pool,
                             dn_prediction *preds);
/* accepted | uncertain | unknown for a prediction whose uncertain and
 * ood_score fields are set. */
int dn_ood_decide(const dn_model *m, const dn_prediction *p);

/* Model file: appends tensors "ood.*" and metadata key "ood" (JSON); ood.bank is
 * written as F16 (the in-memory values, exactly). */
dn_status dn_ood_to_tensors(const dn_ood *o, dn_tensors *ts, dn_meta *meta);
/* Removes every "ood.*" tensor from ts and, if the metadata has "ood", builds
 * *out from them (checked against feat_dim / ncls; errors name label). A bank
 * read as F32 (files written before the fp16 bank) is rounded to fp16.
 * No OOD data -> *out = NULL and DN_OK. */
dn_status dn_ood_take(dn_tensors *ts, const dn_meta *meta, int feat_dim, int ncls, const char *label, dn_ood **out);
dn_status dn_ood_clone(const dn_ood *o, dn_ood **out);
void dn_ood_free(dn_ood *o);
/* One line for `info`, e.g. "score combo (knn k=5 over 2000 rows, rmd), threshold 0.123 (95% of 300 val)". */
void dn_ood_describe(const dn_ood *o, char *buf, size_t n);

/* Detection quality of a score (higher = more unusual): in = in-distribution,
 * out = unknown images. AUROC (ties count half) and the fraction of out images
 * scoring at or below the score that accepts tpr of the in images. */
double dn_ood_auroc(const float *in, int nin, const float *out, int nout);
double dn_ood_fpr_at_tpr(const float *in, int nin, const float *out, int nout, double tpr);
/* Threshold accepting tpr of in (the ceil(tpr * n)-th smallest). */
float dn_ood_quantile(const float *v, int n, double tpr);
/* Pooled features (n x feat_dim) of image files through m with its own
 * preprocessing, batch images per forward, decoded by loader threads.
 * Unreadable images get ok[i] = 0 (their rows are zero) and are counted in
 * *skipped (the first message goes to stderr once, prefixed by who). */
dn_status dn_ood_features(const dn_model *m, const char *const *paths, int n, int batch, int threads, float *feat,
                          unsigned char *ok, int *skipped, const char *who);
/* logits (n x ncls) = feat * fc_w' + fc_b (raw, before temperature). */
void dn_ood_logits(const dn_model *m, const float *feat, int n, float *logits);
/* The whole fit from image files: features of fit_paths (labels fit_y, model
 * classes) and val_paths, dn_ood_fit, then the Grad-CAM colour reference from up
 * to 64 val images; replaces m->ood. Unreadable images are left out and counted
 * in *skipped. On failure m->ood may be unchanged or already replaced. */
dn_status dn_ood_calibrate_files(dn_model *m, const char *const *fit_paths, const int *fit_y, int nfit,
                                 const char *const *val_paths, int nval, const dn_ood_cfg *cfg, int batch, int threads,
                                 int *skipped);
#endif
