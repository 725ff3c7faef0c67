/* A candidate model against the live one (docs/review.md, "Shadow model and compare"):
 *  - live vs shadow agreement from the store's shadow_predictions (`defectnet compare --db`,
 *    the manufacturing report's shadow section; compare.c), no labels;
 *  - both models on the same labelled images before promotion (`defectnet compare LIVE
 *    CANDIDATE --data|--manifest`; compare_models.c, "Offline comparison" below).
 * Classes are matched by name, so a candidate with renamed or extra classes shows them
 * as differences. Ownership: a dn_compare owns nothing outside itself. */
#ifndef DN_TRUST_COMPARE_H
#define DN_TRUST_COMPARE_H
#include "core/json.h"
#include "eval/metrics.h"
#include "eval/quality.h"
#include "nn/model.h"
#include "serve/store.h"
#include <stdint.h>
#include <stdio.h>

#define DN_COMPARE_MAX_CLASSES 64

typedef struct dn_compare_class {
    char name[128];
    long live, shadow;        /* predictions of this class by each model */
    long both;                /* pairs where both said this class */
} dn_compare_class;

typedef struct dn_compare {
    long n;                   /* pairs (predictions with a shadow answer) */
    long agree;               /* same class */
    long decision_agree;      /* same decision (accepted/uncertain/unknown) */
    long live_unsure, shadow_unsure; /* decisions other than accepted */
    int ncls;
    int truncated;            /* more than DN_COMPARE_MAX_CLASSES names: the rest counted in n only */
    dn_compare_class cls[DN_COMPARE_MAX_CLASSES];
    char live_version[160], shadow_version[160]; /* of the last pair */
    double first, last;       /* time range of the pairs */
} dn_compare;

/* Aggregates the pairs from <= time < to (0 = unbounded). */
dn_status dn_compare_store(dn_store *st, double from, double to, dn_compare *out);
/* Plain-text table (compare's default output). */
void dn_compare_print(const dn_compare *c, FILE *f);
/* JSON object {"pairs":..,"agreement":..,"classes":[...]} */
void dn_compare_json(const dn_compare *c, dn_sb *b);
/* The manufacturing report's shadow section (<h2> + summary + per-class table). */
void dn_compare_html(const dn_compare *c, dn_sb *b);

/* ------------------------------------------------------------------------------------------
 * Offline comparison before promotion (`defectnet compare LIVE CANDIDATE --data|--manifest`,
 * compare_models.c): both models classify the same labelled images, each with its own
 * preprocessing, decision policy and unknown-input detector (the answer predict and serve give).
 * Classes are matched by name in one class space: the data's classes first, then the models'
 * other classes; an image whose class a model lacks is an error of that model. Per model the
 * figures eval computes (eval/metrics.h, eval/quality.h: accuracy with its Wilson interval,
 * macro-F1 with its bootstrap interval, per-class recall/precision, escape and false-reject rates
 * for the good class), the decision mix; then agreement, the 2x2 table of correct answers, the
 * exact McNemar test on its discordant pairs and the images where the two classes differ.
 *
 * Ownership: a dn_cmp_models owns its class names and per-model metrics (dn_cmp_models_free);
 * the disagreement paths are copies. Inputs are borrowed for the duration of a call. */
#define DN_CMP_DISAGREE_MAX 50 /* disagreements listed (JSON, HTML) */
#define DN_CMP_ALPHA 0.05      /* significance level of the verdict */

/* Exact two-sided McNemar test: b pairs where only the first model is right, c where only the
 * second is. p = min(1, 2 * P(X <= min(b, c))), X ~ Binomial(b + c, 1/2); 1 when b + c = 0. */
double dn_mcnemar_exact_p(int64_t b, int64_t c);

typedef struct dn_cmp_answer {
    int cls;                  /* class (index into dn_cmp_models.names) */
    float confidence;
    int decision;             /* dn_decision */
} dn_cmp_answer;

/* One model's answers on the n images (the analysis input). */
typedef struct dn_cmp_side {
    const dn_cmp_answer *ans; /* [n] */
    const uint8_t *accepted;  /* [n] 1: accepted as good (dn_policy_decide), or NULL without a good class */
    const uint8_t *knows;     /* [k] 1 if the model has the class */
    const char *path, *sha256;
    int nclasses;             /* the model's own class count */
} dn_cmp_side;

typedef struct dn_cmp_input {
    int k;                    /* classes of the common space */
    const char *const *names; /* [k] */
    int ndata;                /* the first ndata names are the data's classes */
    int64_t n;
    const int *y;             /* [n] true class of each image, < ndata */
    const char *const *paths; /* [n] */
    int good;                 /* good class (< ndata), -1: no escape / false-reject figures */
    dn_cmp_side side[2];      /* 0 live, 1 candidate */
} dn_cmp_input;

typedef struct dn_cmp_figures {
    char path[512], sha256[65];
    int nclasses;
    int64_t correct;
    int64_t lacks;            /* images of classes the model does not have */
    dn_rate accuracy;         /* correct of n, 95% Wilson */
    dn_eval_metrics met;      /* over the common space; macro averages as metrics.h */
    double f1_lo, f1_hi;      /* bootstrap 95% interval of macro-F1 */
    int has_quality;
    dn_quality q;             /* escape / false-reject (when good >= 0) */
    int64_t decisions[3];     /* accepted, uncertain, unknown */
} dn_cmp_figures;

typedef struct dn_cmp_disagree {
    char path[512];
    int truth;
    dn_cmp_answer a[2];
} dn_cmp_disagree;

typedef struct dn_cmp_models {
    int k, ndata, good;
    char **names;             /* [k] owned */
    int64_t n;
    dn_cmp_figures m[2];      /* live, candidate */
    int64_t same_class, same_decision;
    int64_t both_right, only_live, only_cand, both_wrong;
    double p;                 /* exact McNemar p-value */
    int verdict;              /* +1 candidate better, -1 worse, 0 no significant difference (p >= DN_CMP_ALPHA) */
    int64_t disagree;         /* images where the classes differ */
    int ndis;                 /* listed: the first DN_CMP_DISAGREE_MAX of them, in data order */
    dn_cmp_disagree dis[DN_CMP_DISAGREE_MAX];
    /* set by the caller for the reports */
    const char *data_source, *split;
    int listed, skipped;      /* images of the split, unreadable ones skipped */
} dn_cmp_models;

/* Fills out from in (out->data_source / split / listed / skipped are left for the caller). */
dn_status dn_cmp_analyse(const dn_cmp_input *in, dn_cmp_models *out);
void dn_cmp_models_free(dn_cmp_models *c);

/* Classifies the images with both models (decoded once, preprocessed per model; batch images per
 * forward, threads per session) and analyses them. data_classes: the data's class names, labels[i]
 * an index into them. good_name: the good class (NULL: none); each model's decision policy is
 * re-aimed at it (dn_policy_override_good) when the model has it under another policy. An image
 * that cannot be read or preprocessed by either model is skipped, named on log with prefix
 * (counted in out->skipped). Errors (one line): no image readable, a model without a head. */
dn_status dn_cmp_run(const dn_model *const models[2], const char *const model_paths[2], const char *good_name,
                     const char *const *data_classes, int ndata, const char *const *paths, const int *labels, int n,
                     int batch, int threads, FILE *log, const char *prefix, dn_cmp_models *out);

/* Reports: the verdict line ("candidate better (McNemar p=0.0156)"), a plain-text table, a JSON
 * object, a self-contained HTML page (eval's stylesheet; thumbnails of the disagreements when
 * thumbs is set). */
const char *dn_cmp_verdict_word(const dn_cmp_models *c);
void dn_cmp_print(const dn_cmp_models *c, FILE *f);
void dn_cmp_json(const dn_cmp_models *c, dn_sb *b);
void dn_cmp_html(const dn_cmp_models *c, int thumbs, dn_sb *b);

#endif
