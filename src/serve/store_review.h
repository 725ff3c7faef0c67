/* The review queue and the shadow model's predictions in the prediction store
 * (docs/review.md). Tables (schema migration "review"): review_items (one per queued
 * prediction: reason, queued_at, status open|final, final label), review_labels (one per
 * item and reviewer: label, time) and shadow_predictions (the candidate model's answer
 * for a live prediction).
 *
 * Review items are named by their prediction id. Ownership: strings handed to callbacks
 * are valid only during the callback; dn_review_item arrays are the caller's
 * (dn_review_items_free). Thread-safety: like the rest of the store (any thread). */
#ifndef DN_SERVE_STORE_REVIEW_H
#define DN_SERVE_STORE_REVIEW_H
#include "serve/store.h"

/* Queues prediction pred_id for review (reason: "unknown", "uncertain", "class",
 * "sample", ...) unless it is queued already or cap_per_hour (> 0) items were queued in
 * the hour before now. neighbours_json: the nearest training images (a JSON array) or
 * NULL. *queued (may be NULL) = 1 when a row was added. */
dn_status dn_store_review_enqueue(dn_store *s, int64_t pred_id, const char *reason, const char *neighbours_json,
                                  double now, int cap_per_hour, int *queued);

typedef struct dn_review_item {
    int64_t id;                     /* = prediction id */
    char reason[32];
    double queued_at;
    int nlabels;                    /* labels recorded so far */
    int final;                      /* status final */
    char label[128];                /* final label ("" while open) */
    char *neighbours;               /* JSON array or NULL (owned) */
} dn_review_item;
/* Up to n open items, unknown first, then uncertain, chosen classes, samples; oldest
 * first within each. reviewer (may be NULL): leave out items that reviewer labelled.
 * *items owned by the caller (dn_review_items_free). */
dn_status dn_store_review_next(dn_store *s, int n, const char *reviewer, dn_review_item **items, size_t *count);
/* One item (open or final); *found = 0 when id is not queued. it->neighbours owned by the
 * caller (free()). */
dn_status dn_store_review_get(dn_store *s, int64_t id, dn_review_item *it, int *found);
void dn_review_items_free(dn_review_item *items, size_t n);

/* Result of recording one label. */
typedef struct dn_review_outcome {
    int found;                      /* 0: no review item with that id */
    int was_final;                  /* 1: the item was final before this post (nothing recorded) */
    int final;                      /* the item is final now */
    char label[128];                /* final label (when final) */
    int votes;                      /* labels equal to the posted one, this post included */
    int distinct;                   /* distinct labels recorded for the item */
} dn_review_outcome;
/* Records reviewer's label for item id (a reviewer's repeated post replaces their
 * earlier label) and finalises the item when `agree` reviewers gave the same label,
 * in one transaction. */
dn_status dn_store_review_label(dn_store *s, int64_t id, const char *label, const char *reviewer, double now,
                                int agree, dn_review_outcome *out);

/* Labels of one item in time order. */
typedef int (*dn_review_label_fn)(void *ctx, const char *label, const char *reviewer, double time);
dn_status dn_store_review_labels(dn_store *s, int64_t id, dn_review_label_fn fn, void *ctx);
/* Ids of open items whose reviewers disagree (two or more distinct labels), oldest
 * first, at most limit. *ids owned by the caller (free()). */
dn_status dn_store_review_disagreements(dn_store *s, int limit, int64_t **ids, size_t *count);
/* Final items in id order with the prediction's image copy (NULL when not stored). */
typedef int (*dn_review_final_fn)(void *ctx, int64_t id, const char *label, const char *image_copy,
                                  const char *image_sha256, const char *predicted, double final_at);
dn_status dn_store_review_scan_final(dn_store *s, dn_review_final_fn fn, void *ctx);
/* Counts of open and final items. */
dn_status dn_store_review_counts(dn_store *s, int64_t *open, int64_t *final);

/* The shadow model's prediction for live prediction pred_id. */
typedef struct dn_shadow_record {
    const char *model_sha256, *model_version, *cls, *scores_json, *decision;
    float confidence;
    double time;
} dn_shadow_record;
dn_status dn_store_shadow_insert(dn_store *s, int64_t pred_id, const dn_shadow_record *r);
/* Live and shadow answers side by side, in prediction id order, from <= time < to
 * (0 = unbounded). */
typedef struct dn_shadow_pair {
    int64_t id;
    double time;
    const char *line, *live_cls, *live_decision, *live_version, *shadow_cls, *shadow_decision, *shadow_version;
    float live_conf, shadow_conf;
} dn_shadow_pair;
typedef int (*dn_shadow_fn)(void *ctx, const dn_shadow_pair *p);
dn_status dn_store_shadow_scan(dn_store *s, double from, double to, dn_shadow_fn fn, void *ctx);

#endif
