/* A candidate model running in shadow inside `defectnet serve --shadow M2`
 * (docs/review.md): it classifies every image the live model classified, its answer
 * goes to the store's shadow_predictions table only; it never answers a client and never
 * fires an action. No hot reload: the shadow model is the file given at start.
 *
 * Ownership: dn_shadow_open returns a shadow owned by the caller (dn_shadow_free); a
 * dn_shadow_worker (zero-initialised) belongs to one worker thread and is released with
 * dn_shadow_worker_free. Thread-safety: one dn_shadow is shared by all workers; each
 * worker uses its own dn_shadow_worker. */
#ifndef DN_TRUST_SHADOW_H
#define DN_TRUST_SHADOW_H
#include "serve/generation.h"
#include "serve/store.h"

typedef struct dn_shadow dn_shadow;
typedef struct dn_shadow_worker {
    dn_session *sess;
    float *probs;
} dn_shadow_worker;

/* Loads the shadow model. Its classes may differ from the live model's (compare matches
 * them by name). */
dn_status dn_shadow_open(const char *model_path, dn_shadow **out);
void dn_shadow_free(dn_shadow *sh);
/* Model version string and sha256 of the shadow model (owned by sh). */
const char *dn_shadow_version(const dn_shadow *sh);
const char *dn_shadow_sha256(const dn_shadow *sh);

/* Classifies the image bytes with the shadow model and records the answer for live
 * prediction pred_id. Failures (undecodable for this model's preprocessing, store
 * errors) are returned for the caller to log; the live prediction stands. */
dn_status dn_shadow_run(dn_shadow *sh, dn_shadow_worker *w, const uint8_t *data, size_t len, int64_t pred_id,
                        dn_store *st);
void dn_shadow_worker_free(dn_shadow_worker *w);

#endif
