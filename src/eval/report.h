/* Evaluation reports for `defectnet eval`: an aligned terminal table, a JSON
 * document and a self-contained HTML page (inline CSS and SVG, thumbnails as
 * base64 PNG data URIs; no scripts, no external assets, print-friendly).
 *
 * The HTML page holds: summary figures, the confusion-matrix heatmap (counts,
 * colour = row-normalised share; diagonal blue, errors red), per-class
 * precision/recall/F1 bars, reliability diagrams before and after temperature
 * scaling, the coverage-vs-accuracy curve with the chosen threshold, the
 * per-class table, a gallery of misclassified images (most confident mistakes
 * first) with true/predicted class, top scores and their Grad-CAM overlays, with
 * --ood the unknown-input table and score histograms (report_ood.c), model info (file sha256,
 * architecture, classes, preprocessing, stored calibration, metadata) and
 * dataset info. Elements carrying figures have stable ids (e.g. id="accuracy",
 * id="svg-confusion") so tests can find them in the rendered DOM.
 *
 * Ownership: a dn_eval_report borrows model, model_path, data_source,
 * split_name, fit_split, temp_source, thr_source and written_model (they must
 * outlive the writers); it owns raw, cal, curve, uncertain_by_class and miss
 * (with their paths, thumbnails and overlays), released by dn_eval_report_free; ood is borrowed. Strings returned through
 * char ** (thumbnails, base64) are malloc'ed and owned by the caller. */
#ifndef DN_EVAL_REPORT_H
#define DN_EVAL_REPORT_H
#include "defectnet.h"
#include "eval/calibrate.h"
#include "eval/metrics.h"
#include "eval/quality.h"
#include "nn/model.h"
#include <stdio.h>

#define DN_REPORT_TOP 3       /* scores listed per misclassified image */
#define DN_GALLERY_MAX 48     /* thumbnails embedded in the HTML page */
#define DN_THUMB_SIDE 112     /* longest thumbnail side in pixels */

typedef struct dn_eval_miss {
    char *path;               /* owned */
    int truth, pred;          /* model class indices */
    float conf;               /* calibrated probability of pred */
    float p_true;             /* calibrated probability of the true class */
    int ntop;
    int top[DN_REPORT_TOP];
    float top_p[DN_REPORT_TOP];
    char *thumb_b64;          /* base64 PNG, or NULL (not in the gallery / unreadable); owned */
    char *cam_b64;            /* base64 PNG Grad-CAM overlay (layer4, predicted class), or NULL; owned */
} dn_eval_miss;

struct dn_ood_eval;           /* ood/ood_eval.h */

typedef struct dn_eval_report {
    const dn_model *model;    /* classes, preprocessing, stored calibration, metadata */
    const char *model_path;
    const char *data_source;  /* folder or manifest */
    const char *split_name;   /* "test", "val", "train" or "all" */
    int64_t listed;           /* images listed for the split */
    int skipped;              /* unreadable images skipped */
    int dups_dropped;         /* copies of earlier-split images dropped from the data */
    int absent_classes;       /* model classes the data never names */

    dn_eval_metrics raw;      /* softmax(logits), T = 1 */
    dn_eval_metrics cal;      /* softmax(logits / temperature) */
    double temperature;
    const char *temp_source;  /* e.g. "fitted on val", "stored in model" */
    int fitted;               /* 1: fit below is valid */
    dn_temp_fit fit;
    int separated;            /* 1: fitting images perfectly separated, temperature kept at 1 */
    const char *fit_split;    /* split the temperature/threshold were fitted on ("val") */
    int64_t n_fit;            /* images in it */
    double fit_ece_before, fit_ece_after; /* ECE on the fitting split */

    float threshold;          /* uncertain when calibrated confidence < threshold */
    const char *thr_source;   /* "given", "target accuracy on val", "stored in model" */
    double target;            /* target accuracy (0 if none) */
    int reached;              /* target reached on the fitting split */
    int has_thr_fit;          /* thr_fit valid */
    dn_cov_point thr_fit;     /* coverage/accuracy at threshold on the fitting split */
    dn_cov_point thr_eval;    /* ... on the evaluated split */
    dn_cov_point *curve;      /* coverage curve of the evaluated split (dn_calib_coverage_curve), owned */
    int64_t ncurve;

    int64_t *uncertain_by_class; /* [k] evaluated images of each true class below the threshold, or NULL; owned */

    dn_eval_miss *miss;       /* every misclassified image, most confident first; owned */
    int64_t nmiss;

    double seconds;           /* wall time of decode + forward */
    const char *written_model;/* --write-model path, or NULL */
    char temp_desc[320], thr_desc[320]; /* storage for temp_source / thr_source when fitted/chosen */

    /* 95% intervals (quality.h): accuracy (Wilson), macro-F1 (bootstrap) */
    dn_rate acc_ci;
    double f1_lo, f1_hi;

    /* good class and decisions (policy.h); good < 0: none, the rest unused */
    int good;
    const char *good_source;  /* "given", "stored in model", "auto-detected from the class names" */
    dn_policy policy;         /* decision policy applied to the evaluated split */
    const char *policy_source;/* "stored in model", "chosen on val for target escape 0.005", ... */
    char policy_desc[320];
    double target_escape;     /* < 0: none */
    const char *cost_spec;    /* --cost string, or NULL */
    int has_quality;          /* quality valid (the good class occurs in the evaluated split) */
    dn_quality quality;       /* escape / false reject on the evaluated split; owned */
    int has_policy_fit;       /* policy_fit valid (policy chosen on the fitting split) */
    dn_quality policy_fit;    /* ... on the fitting split at the chosen policy; owned */
    dn_policy_point *pcurve;  /* escape vs false reject over good thresholds, evaluated split; owned */
    int64_t npcurve;

    int ordinal;              /* classes are ordered: ord valid */
    dn_ordinal ord;

    int heatmaps;             /* 1: Grad-CAM overlays were made for the gallery (dn_eval_heatmaps) */
    int cam_anchored;         /* ... on the model's absolute colour reference (0: each map's own maximum) */
    const struct dn_ood_eval *ood; /* unknown-input measurement (eval --ood), or NULL; borrowed */
} dn_eval_report;

void dn_eval_report_free(dn_eval_report *r);

/* Aligned table: per-class rows, averages, calibration, threshold, confusion matrix. */
void dn_eval_report_table(const dn_eval_report *r, FILE *f);
/* One JSON object (with trailing newline). */
void dn_eval_report_json(const dn_eval_report *r, FILE *f);
/* The HTML page. */
void dn_eval_report_html(const dn_eval_report *r, FILE *f);

/* Standard base64 (RFC 4648, padded) of n bytes; *out NUL-terminated. */
dn_status dn_base64(const uint8_t *data, size_t n, char **out);
/* Encodes an RGB image as PNG in memory (grayscale PNG when R == G == B
 * everywhere). *png malloc'ed, caller frees. */
dn_status dn_png_encode(const dn_image *img, uint8_t **png, size_t *len);
/* Box-filtered thumbnail with longest side <= max_side (never enlarged),
 * encoded as base64 PNG. */
dn_status dn_thumb_png_base64(const dn_image *img, int max_side, char **out);

#endif
