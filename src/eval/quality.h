/* Figures for a line where most parts are good: escape and false-reject
 * rates (see policy.h for the words), their confidence intervals, the
 * escape-vs-false-reject trade-off of the good threshold and its choice for a
 * target escape rate or by cost, a bootstrap interval for macro-F1, and
 * ordinal error figures for ordered classes.
 *
 * Intervals are 95%. Rates use the Wilson score interval (z = 1.959964):
 *   centre = (p + z^2/2n) / (1 + z^2/n),
 *   half   = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2),
 * which stays inside [0, 1] and is sensible at 0 or n events (n = 0 gives
 * [0, 1]). Macro-F1 has no closed form: its interval is the 2.5/97.5
 * percentile of a bootstrap over images (DN_BOOT_REPS resamples, fixed seed,
 * so the same data gives the same interval).
 *
 * Ownership: arrays handed out (per-class rates, curves) belong to the
 * struct or the caller as stated; inputs are borrowed. */
#ifndef DN_EVAL_QUALITY_H
#define DN_EVAL_QUALITY_H
#include "defectnet.h"
#include "eval/policy.h"
#include <stdint.h>

#define DN_WILSON_Z 1.959963984540054
#define DN_BOOT_REPS 1000

typedef struct dn_rate {
    int64_t k, n;             /* k events of n */
    double p, lo, hi;         /* k/n (0 when n = 0) and its 95% Wilson interval */
} dn_rate;

dn_rate dn_wilson(int64_t k, int64_t n);

typedef struct dn_quality {
    int k, good;              /* classes, good class index */
    dn_rate escape;           /* defective parts accepted as good, of all defective parts */
    dn_rate false_reject;     /* good parts not accepted, of all good parts */
    dn_rate *escape_by_class; /* [k] per true defect class (n = 0 for the good class); owned */
} dn_quality;

/* accepted[i] = 1 if image i (true class y[i]) was accepted as good. */
dn_status dn_quality_compute(int k, int good, const int *y, const uint8_t *accepted, int64_t n, dn_quality *out);
void dn_quality_free(dn_quality *q);

/* Accepted flags of n probability rows under a policy (threshold = the
 * model's confidence threshold, used when the policy has no good threshold). */
void dn_policy_accepts(const dn_policy *pol, float threshold, const float *probs, int64_t n, int k, uint8_t *accepted);

/* One good threshold: parts with p[good] >= threshold are accepted. */
typedef struct dn_policy_point {
    float threshold;
    double escape, false_reject;      /* rates */
    int64_t escapes, false_rejects;   /* counts */
    double cost;                      /* total cost (0 without costs) */
} dn_policy_point;

/* One point per distinct p[good] (thresholds descending, so acceptance grows
 * along the curve). n_good / n_defect are counted from y. cost may be NULL.
 * *pts malloc'ed (caller frees). */
dn_status dn_policy_curve(const float *probs, const int *y, int64_t n, int k, int good, const dn_cost *cost,
                          dn_policy_point **pts, int64_t *npts);

/* Chooses the good threshold on labelled (validation) rows: with cost, the
 * point of least total cost (ties: fewer escapes); else the most accepting
 * point whose escape rate is <= target_escape while accepting at least one
 * good part. Errors (DN_ERR_ARG, one line): no good or no defective parts
 * among the rows, or no such point (the target is unreachable without
 * rejecting every good part; the message gives the lowest reachable rate). */
dn_status dn_policy_choose(const float *probs, const int *y, int64_t n, int k, int good, const dn_cost *cost,
                           double target_escape, dn_policy_point *out);

/* 95% bootstrap interval of macro-F1 (classes present in the resample's
 * truth or predictions, as metrics.h) for predictions pred[i] of y[i]. */
dn_status dn_bootstrap_macro_f1(int k, const int *y, const int *pred, int64_t n, double *lo, double *hi);

/* Ordered classes (index order = class order): share of images off by 0, by
 * one class and by more, and the mean absolute error in class steps, from a
 * k x k confusion matrix (rows true). */
typedef struct dn_ordinal {
    int64_t exact, off_by_one, off_by_more;
    double mae;
} dn_ordinal;
void dn_ordinal_compute(int k, const int64_t *cm, dn_ordinal *out);

#endif
