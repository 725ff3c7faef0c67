/* The analysis behind `defectnet eval`, from logits to a filled report:
 * temperature scaling, metrics before/after, the confidence threshold (given,
 * chosen for a target accuracy, or the model's), coverage curve, uncertain
 * counts, the misclassified images (most confident first) and the calibrated
 * model written for production. The command only gathers logits and prints.
 *
 * Ownership: inputs are borrowed for the duration of a call; everything the
 * report receives is owned by it (dn_eval_report_free). */
#ifndef DN_EVAL_EVALUATE_H
#define DN_EVAL_EVALUATE_H
#include "eval/report.h"
#include <stdio.h>

typedef struct dn_eval_input {
    int k;                    /* classes of the model */
    int topk;                 /* k of the top-k accuracy */
    const float *logits;      /* [n*k] evaluated images */
    const int *y;             /* [n] model class of each */
    const char *const *paths; /* [n] file of each (for the list of mistakes) */
    int64_t n;
    const float *vlogits;     /* [nv*k] fitting (calibration) images, or NULL */
    const int *vy;            /* [nv] */
    int64_t nv;
    int fit_temperature;      /* 1: fit the temperature on the fitting images */
    double target;            /* > 0: choose the threshold for this accuracy on the fitting images */
    double threshold;         /* >= 0: use this threshold (else the target's, else the model's) */
    int good;                 /* good class index, -1: none (no escape / false-reject figures) */
    dn_policy policy;         /* the model's decision policy (applied unless one is chosen) */
    const dn_cost *cost;      /* choose the good threshold by these costs on the fitting images, or NULL */
    double target_escape;     /* >= 0 (and no cost): choose it for this escape rate instead; < 0: none */
    int require_good;         /* 1: the good class must occur in the evaluated and fitting images */
    int ordinal;              /* classes are ordered: confusion distance and mean absolute class error */
} dn_eval_input;

/* Fills r from in. Also: 95% intervals of accuracy and macro-F1; with a
 * good class the escape and false-reject rates under the policy (chosen on
 * the fitting images when cost or target_escape is given: r->policy_fit holds
 * its figures there) and their curve over good thresholds. Errors (one line,
 * DN_ERR_ARG): good class absent where required, a target escape rate the
 * fitting images cannot reach. r->model (temperature, threshold) and r->fit_split must be
 * set before; r->temp_source / thr_source then point into r. When the
 * fitting images are perfectly separated the temperature stays 1 and
 * r->separated is set; r->fit.at_bound otherwise flags a hopeless fit; an
 * unreachable target leaves r->reached = 0. The caller prints the warnings. */
dn_status dn_eval_analyse(const dn_eval_input *in, dn_eval_report *r);

/* Thumbnails of the first DN_GALLERY_MAX mistakes (for the HTML page); an
 * image that cannot be read is named on log (prefixed) and left without one. */
void dn_eval_thumbnails(dn_eval_report *r, FILE *log, const char *prefix);

/* Grad-CAM overlays (layer4, the predicted class, dn_gradcam_png: the model's
 * absolute colour reference, else each map's own maximum) of the mistakes that
 * have a thumbnail, computed with s (a session on m). An image that fails is
 * named on log and left without one. Sets r->heatmaps and r->cam_anchored. */
void dn_eval_heatmaps(dn_eval_report *r, const dn_model *m, dn_session *s, FILE *log, const char *prefix);

/* Saves m to path with the report's temperature and threshold, a
 * "calibration" metadata record, the good class and (when chosen) the
 * "decision_policy" record with its validation and test figures (a stored
 * policy for another good class is dropped) (cal_data: the fitting folder/manifest,
 * cal_all: 1 if all of its images were used, else its val split). m's
 * temperature and threshold are restored; its metadata keeps the new records. Sets r->written_model = path on success. */
dn_status dn_eval_save_model(dn_model *m, dn_eval_report *r, const char *cal_data, int cal_all, const char *path);

#endif
