/* A candidate model running in shadow inside `defectnet serve --shadow M2`
 * (docs/review.md): it classifies every image the live model classified, its answer
 * goes to the store's shadow_predictions table only; it never answers a client and never
 * fires an action. No hot reload: the shadow model is the file given at start.
 *
 * Off the request path: a worker hands the image bytes over (dn_shadow_submit copies
 * them into a bounded queue and returns at once) after the live prediction is committed;
 * one shadow thread, at a lower scheduling priority (nice +10) than the workers,
 * classifies them. When the queue is full (DN_SHADOW_QUEUE images or DN_SHADOW_BYTES
 * bytes) the image is dropped and counted: the live service never waits for the shadow.
 * dn_shadow_stop classifies what is queued, then joins the thread.
 *
 * Ownership: dn_shadow_open returns a shadow owned by the caller (dn_shadow_free, which
 * stops it first). Thread-safety: dn_shadow_submit and dn_shadow_stats may be called
 * from any thread between dn_shadow_start and dn_shadow_stop. */
#ifndef DN_TRUST_SHADOW_H
#define DN_TRUST_SHADOW_H
#include "serve/generation.h"
#include "serve/store.h"
#include "core/json.h"

#define DN_SHADOW_QUEUE 64
#define DN_SHADOW_BYTES ((size_t)64 << 20)

typedef struct dn_shadow dn_shadow;
/* Called from the shadow thread with one line about a failure (undecodable for this
 * model's preprocessing, store errors); the live prediction stands. */
typedef void (*dn_shadow_log_fn)(void *ctx, const char *line);

/* Loads the shadow model. Its classes may differ from the live model's (compare matches
 * them by name). */
dn_status dn_shadow_open(const char *model_path, dn_shadow **out);
/* Starts the shadow thread writing to st (which must outlive dn_shadow_stop); queue at
 * most cap images (<= 0: DN_SHADOW_QUEUE). log may be NULL. */
dn_status dn_shadow_start(dn_shadow *sh, dn_store *st, int cap, dn_shadow_log_fn log, void *log_ctx);
/* Queues a copy of the image bytes for live prediction pred_id. Returns 1 if it was
 * dropped (queue full, out of memory, stopped), else 0. */
int dn_shadow_submit(dn_shadow *sh, const uint8_t *data, size_t len, int64_t pred_id);
typedef struct dn_shadow_stats {
    long done, dropped, failed, queued;
} dn_shadow_stats;
void dn_shadow_get_stats(dn_shadow *sh, dn_shadow_stats *out);
/* Appends the /metrics families defectnet_shadow_images_total{result=done|dropped|failed}
 * and defectnet_shadow_queue_depth (nothing for sh NULL). */
void dn_shadow_metrics(dn_shadow *sh, dn_sb *b);
/* Classifies everything queued, then stops the thread. Idempotent. */
void dn_shadow_stop(dn_shadow *sh);
void dn_shadow_free(dn_shadow *sh);
/* Model version string and sha256 of the shadow model (owned by sh). */
const char *dn_shadow_version(const dn_shadow *sh);
const char *dn_shadow_sha256(const dn_shadow *sh);

#endif
