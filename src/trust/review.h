/* The review loop of `defectnet serve` (docs/review.md): which predictions go into
 * the review queue, what a reviewer's label post must look like, and the nearest
 * training images ("neighbours") of a queued image from the model's OOD feature bank.
 * The queue itself lives in the prediction store (serve/store_review.h).
 *
 * Policy spec (serve --review, or "review" in the rules file), comma separated terms:
 *   unknown | uncertain | accepted      queue predictions with that decision
 *   class:NAME                          queue predictions of that class (any decision)
 *   sample:FRACTION                     queue that fraction (0..1] of accepted predictions
 *                                       not queued for another reason (a hash of the
 *                                       prediction id decides: deterministic, no state)
 *   cap:N/h                             at most N items queued per rolling hour (all reasons)
 *   agree:N                             labels from N reviewers must agree to finalise (1..9)
 * e.g. "uncertain,unknown,class:scratch,sample:0.01,cap:100/h".
 *
 * Ownership: a dn_review_policy owns its class names (dn_review_policy_free).
 * Thread-safety: every function here is pure or reads only its arguments. */
#ifndef DN_TRUST_REVIEW_H
#define DN_TRUST_REVIEW_H
#include "core/core.h"
#include "defectnet.h"
#include <stddef.h>
#include <stdint.h>

#define DN_REVIEW_MAX_CLASSES 64
#define DN_REVIEW_MAX_LABEL 128     /* bytes of a label / reviewer name, NUL included */
#define DN_REVIEW_MAX_POST 4096     /* bytes of a label post body */
#define DN_REVIEW_MAX_NEIGHBOURS 16

typedef struct dn_review_policy {
    int decisions;                  /* bit (1 << dn_decision) set: queue that decision */
    char *classes[DN_REVIEW_MAX_CLASSES];
    int nclasses;
    double sample;                  /* 0..1 */
    int cap_per_hour;               /* 0 = no cap */
    int agree;                      /* >= 1 */
} dn_review_policy;

/* Parses spec into *p (zeroed first; agree defaults to 1). Errors are one line naming
 * `who` (e.g. "--review") and the bad term. */
dn_status dn_review_policy_parse(const char *spec, const char *who, dn_review_policy *p);
void dn_review_policy_free(dn_review_policy *p);
/* 1 when the policy queues anything. */
int dn_review_policy_active(const dn_review_policy *p);
/* Every class: named in the policy must be a class of model m (after loading it). */
dn_status dn_review_policy_check(const dn_review_policy *p, const dn_model *m, const char *who);
/* Why prediction `id` (decision, class) is queued: "unknown", "uncertain", "accepted",
 * "class", "sample" -- or NULL when it is not. */
const char *dn_review_reason(const dn_review_policy *p, int64_t id, int decision, const char *cls);

/* A label post {"label":"scratch","reviewer":"ana"} (extra keys: error). label must
 * be a class of m; reviewer 1..64 printable characters. On failure returns
 * DN_ERR_ARG with a one-line message in err. */
dn_status dn_review_parse_post(const char *body, size_t len, const dn_model *m, char label[DN_REVIEW_MAX_LABEL],
                               char reviewer[DN_REVIEW_MAX_LABEL], char *err, size_t errn);

/* Neighbours of one image among the model's OOD bank rows. */
typedef struct dn_review_nb {
    int row;                        /* bank row */
    int cls;                        /* its class (model class index), -1 when the bank has no labels */
    float distance;                 /* 1 - cosine similarity of the L2-normalised features */
} dn_review_nb;
/* The k nearest bank rows of the features feat (feat_dim floats) of m; *n = 0 when the
 * model has no bank. nb has room for k (<= DN_REVIEW_MAX_NEIGHBOURS). */
void dn_review_neighbours(const dn_model *m, const float *feat, int k, dn_review_nb *nb, int *n);

#endif
