/* Classification metrics: confusion matrix, accuracy, per-class precision /
 * recall / F1 / support, macro and weighted averages, top-k accuracy and
 * expected calibration error.
 *
 * Conventions (chosen to match scikit-learn so figures are comparable):
 *  - Confusion matrix rows are true classes, columns predicted classes.
 *  - zero_division = 0: precision of a class never predicted, recall of a class
 *    with zero support, and F1 when precision + recall == 0 are all 0.
 *  - Macro averages run over the classes that occur in y_true or in y_pred
 *    (sklearn's default `labels=None`); a class absent from both is left out.
 *    Weighted averages weight by support (so absent classes do not matter).
 *  - The prediction is the argmax of probs (first index on ties) unless y_pred
 *    is given explicitly.
 *  - Top-k: a sample counts if fewer than k classes have a probability
 *    strictly greater than that of its true class (ties favour the sample).
 *  - ECE: 15 equal-width bins over the confidence (max probability); bin b is
 *    (b/15, (b+1)/15] (confidence 0 goes to bin 0), ECE = sum_b |B|/n *
 *    |accuracy(B) - mean confidence(B)| (Guo et al. 2017).
 *
 * Ownership: dn_eval_metrics owns all of its arrays; release with dn_eval_metrics_free.
 */
#ifndef DN_METRICS_H
#define DN_METRICS_H
#include "defectnet.h"
#include <stdint.h>
#include <stdio.h>

#define DN_ECE_BINS 15

typedef struct dn_eval_metrics {
    int k;                   /* number of classes */
    int64_t n;               /* number of samples */
    int64_t *cm;             /* k*k confusion matrix, cm[true*k + pred] */
    double accuracy;
    double *precision, *recall, *f1; /* [k] */
    int64_t *support;        /* [k] true count per class */
    int64_t *predicted;      /* [k] predicted count per class */
    double macro_precision, macro_recall, macro_f1;
    double weighted_precision, weighted_recall, weighted_f1;
    int topk;                /* k of top-k accuracy (0 if probs were not given) */
    double topk_accuracy;
    int has_probs;           /* ECE / top-k / reliability only when probs given */
    double ece;
    int64_t bin_count[DN_ECE_BINS];
    double bin_conf[DN_ECE_BINS], bin_acc[DN_ECE_BINS]; /* means per bin (0 if empty) */
} dn_eval_metrics;

/* Computes every metric.
 *   k       number of classes (1..DN_MAX_CLASSES-ish; must be >= 1)
 *   n       number of samples (>= 0; n == 0 gives all-zero metrics)
 *   y_true  [n] labels in [0, k)
 *   probs   [n*k] class probabilities, or NULL (then no ECE / top-k)
 *   y_pred  [n] predicted labels, or NULL to take the argmax of probs
 *           (one of probs / y_pred must be given)
 *   topk    k of top-k accuracy (clamped to [1, k]); ignored without probs
 * Labels out of range or non-finite probabilities -> DN_ERR_ARG. */
dn_status dn_eval_metrics_compute(int k, int64_t n, const int *y_true, const float *probs,
                             const int *y_pred, int topk, dn_eval_metrics *out);
void dn_eval_metrics_free(dn_eval_metrics *m);

/* Writes the metrics as one JSON object (no trailing newline) to f.
 * class_names may be NULL (then "0", "1", ...). */
void dn_eval_metrics_json(const dn_eval_metrics *m, const char *const *class_names, FILE *f);
/* Human-readable table (per-class rows, averages, confusion matrix). */
void dn_eval_metrics_print(const dn_eval_metrics *m, const char *const *class_names, FILE *f);

#endif
