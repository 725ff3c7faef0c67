/* Drift monitoring (docs/drift.md): the model's reference distributions
 * (drift_ref.c) and the per line/camera sliding windows of `defectnet serve`
 * that compare recent predictions against them (drift.c).
 *
 * Signals, each compared by the population stability index
 *   PSI = sum_i (o_i - r_i) ln(o_i / r_i)
 * over bins i (o = share of the window, r = share of the reference, both floored
 * at DN_DRIFT_EPS so an empty bin stays finite):
 *   confidence - calibrated top probability, reference-decile bins;
 *   ood_score  - the model's unknown-input score (src/ood), reference-decile bins;
 *   class_mix  - predicted class, one bin per class;
 *   feature    - mean PSI of the projections of the 512-d features (minus the
 *                reference mean) onto the reference's first principal components,
 *                each in reference-decile bins.
 * Estimated accuracy = mean calibrated top probability of the window (no labels),
 * shown beside the reference's own mean.
 *
 * The reference is the model metadata key "drift" (JSON, docs/model-format.md),
 * written by dn_drift_ref_store from the in-distribution validation features when
 * the unknown-input detector is fitted (train, `defectnet calibrate`). It carries a
 * fingerprint of the head, temperature and OOD threshold it was computed with; a
 * model changed since (a retrained head, another temperature) reports its reference
 * as stale instead of comparing against the wrong distribution.
 *
 * Ownership: dn_drift_ref_* return objects owned by the caller (dn_drift_ref_free);
 * dn_drift_new returns a monitor owned by the caller (dn_drift_free).
 * Thread-safety: a dn_drift_ref is immutable; every dn_drift_* monitor function may be
 * called from any thread (one mutex). */
#ifndef DN_TRUST_DRIFT_H
#define DN_TRUST_DRIFT_H
#include "core/core.h"
#include "core/json.h"
#include "nn/model.h"

enum { DN_DRIFT_CONF = 0, DN_DRIFT_OOD = 1, DN_DRIFT_CLASS = 2, DN_DRIFT_FEAT = 3, DN_DRIFT_NSIG = 4 };
#define DN_DRIFT_BINS 10       /* at most; quantile edges that coincide are merged */
#define DN_DRIFT_PCS 8         /* principal components of the feature summary (at most) */
#define DN_DRIFT_EPS 1e-4      /* floor of a bin share in the PSI */
#define DN_DRIFT_MIN_REF 20    /* reference rows needed */
#define DN_DRIFT_WARN 0.1      /* PSI convention: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major */
#define DN_DRIFT_ALERT 0.25

/* "confidence" | "ood_score" | "class_mix" | "feature"; parse: -1 for anything else. */
const char *dn_drift_signal_name(int sig);
int dn_drift_signal_parse(const char *s);
/* The signal names joined by ", " (for messages). */
const char *dn_drift_signal_list(void);

/* Binned distribution: bin 0 = (-inf, edges[0]], bin i = (edges[i-1], edges[i]],
 * bin nb-1 = (edges[nb-2], +inf). nb == 0: signal absent. */
typedef struct dn_drift_hist {
    int nb;
    float edges[DN_DRIFT_BINS - 1];
    float p[DN_DRIFT_BINS];
} dn_drift_hist;
int dn_drift_bin(const dn_drift_hist *h, float v);
/* Quantile bins of v (n values, any order): edges at the k/nb quantiles,
 * equal edges merged and edges at or above the maximum dropped; p = the shares of
 * v in them. v is not modified. */
dn_status dn_drift_hist_fit(const float *v, int n, int nb, dn_drift_hist *h);
/* PSI of window counts (nb entries, total > 0) against reference shares. */
double dn_drift_psi(const float *ref_p, const double *counts, int nb, double total);

typedef struct dn_drift_ref {
    int rows, ncls, dim, npc;
    char fingerprint[17];      /* hex: head, temperature, OOD threshold */
    double ref_accuracy;       /* mean calibrated top probability over the reference */
    dn_drift_hist conf, ood;   /* ood.nb == 0: the model had no detector */
    float *cls_p;              /* ncls shares of predicted classes */
    float *mean;               /* dim: feature mean */
    float *pc;                 /* npc x dim orthonormal rows, by decreasing variance */
    float *pc_var;             /* npc */
    dn_drift_hist pcs[DN_DRIFT_PCS]; /* projections' bins */
} dn_drift_ref;

/* The first npc principal directions of n x d rows x: mean (d), basis (npc x d,
 * orthonormal rows, decreasing variance, sign: largest |entry| positive) and their
 * variances (sample, n - 1). Subspace iteration on the covariance + Jacobi. */
dn_status dn_drift_pca(const float *x, int n, int d, int npc, float *mean, float *basis, float *var);
/* Reference from n in-distribution feature rows (n x m->feat_dim) through m's head,
 * temperature and detector. n < DN_DRIFT_MIN_REF -> DN_ERR_ARG. */
dn_status dn_drift_ref_build(const dn_model *m, const float *feat, int n, dn_drift_ref **out);
/* Builds the reference and stores it as m's metadata key "drift"; with fewer than
 * DN_DRIFT_MIN_REF rows removes any old one and returns DN_OK with *stored = 0. */
dn_status dn_drift_ref_store(dn_model *m, const float *feat, int n, int *stored);
void dn_drift_ref_json(const dn_drift_ref *r, dn_sb *b);
/* Parses a "drift" record and checks it against m (class count, feature size,
 * shapes, finite shares summing to 1). label names the model in messages. */
dn_status dn_drift_ref_parse(const char *json, const dn_model *m, const char *label, dn_drift_ref **out);
/* m's reference: *out = NULL and DN_OK when it has none; DN_ERR_FORMAT for a damaged
 * record, DN_ERR_ARG when it was computed for another head/temperature (stale). */
dn_status dn_drift_ref_from_model(const dn_model *m, dn_drift_ref **out);
/* Fingerprint of what the reference depends on (16 hex digits + NUL). */
void dn_drift_fingerprint(const dn_model *m, char out[17]);
void dn_drift_ref_free(dn_drift_ref *r);
/* One line for `info`: "none (no drift reference: ...)", "unusable: ..." or "300 val images: ...". */
void dn_drift_ref_describe(const dn_model *m, char *buf, size_t n);

/* ---- the monitor of `serve` */
typedef struct dn_drift_cfg {
    int count;                 /* window of the last `count` predictions per line/camera; 0 = time window */
    double seconds;            /* window of the last `seconds`; used when count == 0 */
    int min_count;             /* predictions before a window reports PSI (<= 0: min(100, count)) */
} dn_drift_cfg;
/* "500" (predictions) or "90s" / "30m" / "1h" / "2d". Errors name the option:
 * "--drift-window '0': ...". */
dn_status dn_drift_window_parse(const char *s, dn_drift_cfg *c);

typedef struct dn_drift dn_drift;
dn_status dn_drift_new(const dn_drift_cfg *c, dn_drift **out);
void dn_drift_free(dn_drift *d);

/* The signals of one line/camera window right before and right after a prediction
 * joined it (NAN = not ready: no reference, window below min_count, signal absent). */
typedef struct dn_drift_obs {
    float prev[DN_DRIFT_NSIG], now[DN_DRIFT_NSIG];
} dn_drift_obs;
/* Adds a committed prediction (feat: its feat_dim features, or NULL) to the window of
 * (line, camera) (NULL = ""). The reference is m's; a model with another sha256
 * replaces it and restarts every window. obs may be NULL. */
void dn_drift_observe(dn_drift *d, const dn_model *m, const char *line, const char *camera, double t,
                      const dn_prediction *p, const float *feat, dn_drift_obs *obs);
/* GET /v1/drift body (one JSON object + '\n'); now = unix seconds (time windows
 * drop what has aged out first; <= 0: the wall clock). */
void dn_drift_json(dn_drift *d, double now, dn_sb *b);
/* Prometheus gauges: defectnet_drift_psi{line,camera,signal},
 * defectnet_drift_window_predictions{line,camera}, defectnet_drift_estimated_accuracy{line,camera},
 * defectnet_drift_reference_accuracy. label escapes a label value. */
void dn_drift_metrics(dn_drift *d, double now, dn_sb *b, void (*label)(dn_sb *b, const char *v));
#endif
