/* Calibration for `defectnet eval`: temperature scaling and the confidence
 * threshold below which a prediction is "uncertain".
 *
 * Temperature scaling (Guo et al. 2017): probabilities are softmax(z / T). T
 * is fitted on a held-out (validation) set by minimising the mean negative
 * log-likelihood NLL(T) = mean_i [logsumexp(z_i / T) - z_{i,y_i} / T]. With
 * b = 1/T, NLL is convex in b (a log-sum-exp of functions linear in b minus a
 * linear term): NLL'(b) = mean_i (E_{p_i}[z_i] - z_{i,y_i}) and NLL''(b) =
 * mean_i Var_{p_i}(z_i) >= 0. The minimiser is found by Newton's method on b,
 * safeguarded by bisection on a bracket, in double precision, so the result is
 * the exact optimum (to ~1e-12 in the gradient), not a coarse search.
 * T is confined to [DN_TEMP_MIN, DN_TEMP_MAX]: when the validation set is
 * perfectly separated NLL keeps falling as T -> 0, and such a T would make
 * every future mistake look certain; the bound is reported (at_bound).
 *
 * Threshold. Confidence = calibrated probability of the predicted class; a
 * prediction is covered (accepted) when confidence >= threshold and uncertain
 * otherwise — the same rule the engine applies (dn_prediction.uncertain).
 * Coverage = covered / n, accuracy = correct covered / covered.
 *
 * Ownership: arrays handed out (coverage curves) belong to the caller, free().
 * Input arrays are borrowed for the duration of the call. */
#ifndef DN_CALIBRATE_H
#define DN_CALIBRATE_H
#include "defectnet.h"
#include <stdint.h>

#define DN_TEMP_MIN 0.05
#define DN_TEMP_MAX 20.0

/* Mean NLL of labels under softmax(logits / T), logits n x k (double accumulation). */
double dn_calib_nll(const float *logits, const int *labels, int64_t n, int k, double T);

typedef struct dn_temp_fit {
    double temperature;  /* fitted T in [DN_TEMP_MIN, DN_TEMP_MAX] */
    double nll_before;   /* NLL at T = 1 */
    double nll_after;    /* NLL at the fitted T */
    int at_bound;        /* 1 if the optimum lies at (or beyond) a bound of T */
    int iterations;
} dn_temp_fit;

/* Fits T on n labelled logit rows (n >= 1, k >= 2, labels in [0, k), finite
 * logits). Errors: DN_ERR_ARG naming the problem. */
dn_status dn_calib_fit_temperature(const float *logits, const int *labels, int64_t n, int k, dn_temp_fit *out);

/* One point of the coverage/accuracy trade-off: predictions with confidence
 * >= threshold are covered. */
typedef struct dn_cov_point {
    float threshold;
    double coverage, accuracy;
    int64_t covered;
} dn_cov_point;

/* Coverage and accuracy at threshold t over n predictions (conf[i], correct[i]
 * in {0,1}). Accuracy of an empty covered set is reported as 1 (nothing wrong
 * was accepted) and coverage 0. */
dn_cov_point dn_calib_at_threshold(const float *conf, const uint8_t *correct, int64_t n, float t);

/* The full curve: one point per distinct confidence value, thresholds in
 * descending order (coverage ascending), the last point covering everything.
 * *pts (malloc'ed, caller frees) receives *npts points; n == 0 gives none. */
dn_status dn_calib_coverage_curve(const float *conf, const uint8_t *correct, int64_t n, dn_cov_point **pts,
                                  int64_t *npts);

typedef struct dn_threshold_pick {
    dn_cov_point at;     /* chosen threshold with its coverage/accuracy on the fitting set */
    int reached;         /* 1 if accuracy >= target was reachable */
} dn_threshold_pick;

/* Chooses the threshold with the largest coverage whose covered accuracy is
 * >= target (target in (0, 1]); the threshold is then the lowest covered
 * confidence (conservative: anything less confident than every accepted
 * fitting sample is uncertain). If no threshold reaches the target, the one
 * with the highest covered accuracy (ties: larger coverage) is chosen and
 * reached = 0. n must be >= 1. */
dn_status dn_calib_choose_threshold(const float *conf, const uint8_t *correct, int64_t n, double target,
                                    dn_threshold_pick *out);

#endif
