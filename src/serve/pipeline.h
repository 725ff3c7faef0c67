/* The prediction pipeline of `defectnet serve`: one place where an image becomes a
 * durable prediction, whichever way it arrived (HTTP in http.c, the drop folder in
 * watch.c, MQTT ingestion). Owns the model generations (generation.h), a bounded job
 * queue, the worker threads (one dn_session each, sharing the generation's conv plan),
 * the prediction store, the action executor and the metrics.
 *
 * A job's path: queued -> a worker takes what is waiting (up to `batch`, never waiting
 * to fill it), decodes and preprocesses each image, classifies them in one batched
 * forward, then per image: image copy (optional), commit to the store, submit to the
 * action executor, metrics, and the JSON answer. The prediction is committed BEFORE the
 * answer exists, so every 200 is in the database; a store failure is a 503 + no answer.
 * An idempotency key (request_id) already recorded answers with the first prediction
 * ("duplicate":true).
 *
 * Ownership: dn_pipeline_open returns a pipeline owned by the caller (dn_pipeline_close).
 * Config strings are copied. Request strings and image bytes are only borrowed: they
 * must stay valid until the job is finished (dn_pipeline_classify returns, or the done
 * callback of dn_job_new ran).
 * Thread-safety: every dn_pipeline_* and dn_job_* function may be called from any
 * thread concurrently, except dn_pipeline_drain/dn_pipeline_close (once, by the owner,
 * after every producer stopped submitting) and dn_job_free (by the submitter, once the
 * job is finished or was never pushed). */
#ifndef DN_SERVE_PIPELINE_H
#define DN_SERVE_PIPELINE_H
#include "core/core.h"
#include "core/json.h"
#include "defectnet.h"
#include "serve/generation.h"
#include "serve/store.h"
#include <stddef.h>
#include <stdint.h>

#define DN_SERVE_MAX_BATCH 32

typedef struct dn_pipeline_config {
    const char *model_path;      /* required */
    const char *db_url;          /* NULL = "sqlite:defectnet.db" */
    const char *rules_path;      /* NULL = no actions */
    const char *store_images;    /* directory for image copies (by sha256); NULL = none */
    int workers;                 /* <= 0: number of CPUs (at most 256) */
    int queue;                   /* bounded job queue, <= 0: 4 * workers */
    int session_threads;         /* inference threads per worker session, <= 0: 1 */
    int batch;                   /* 1..DN_SERVE_MAX_BATCH, <= 0: 4 */
    int dry_run;                 /* actions report "dry-run" instead of running */
    int quiet;                   /* no per-event log lines on stderr */
    const char *good_class;      /* overrides the model's good class (eval/policy.h); NULL = the model's */
    const char *drift_window;    /* drift windows per line/camera: "500" (predictions) or "1h" (trust/drift.h);
                                    NULL = "500" */
    const char *review;          /* review queue policy (trust/review.h), NULL = none */
    int review_agree;            /* reviewers who must agree (1..9), 0 = the policy's (agree:N, default 1) */
    const char *shadow_model;    /* candidate model run in shadow (trust/shadow.h), NULL = none */
} dn_pipeline_config;

typedef struct dn_pipeline dn_pipeline;

/* Checks the config, loads the model and rules, opens the store, starts the workers. */
dn_status dn_pipeline_open(const dn_pipeline_config *c, dn_pipeline **out);
/* Lets the workers finish every queued job and stops them; afterwards new submissions
 * are refused (dn_pipeline_reserve -1, dn_pipeline_classify DN_ERR_ARG). Idempotent. */
void dn_pipeline_drain(dn_pipeline *p);
/* Drains (if not yet), then lets the action executor finish (bounded), closes the store
 * and frees everything. NULL is a no-op. */
void dn_pipeline_close(dn_pipeline *p);
/* Hot reload of model and rules: loaded beside the current ones, swapped in on success
 * (jobs already running finish with the old generation); on failure nothing changes and
 * the error is returned. Serialised internally. */
dn_status dn_pipeline_reload(dn_pipeline *p);

/* Results bus for predictions that did not come over MQTT (HTTP, drop folder): each
 * newly committed one is published on bus (serve/bus.h: JSON results topic, retained
 * last per camera, Sparkplug DDATA) with a 2 s PUBACK wait. Best effort: the
 * prediction is already durable, so a failure is logged and counted
 * (dn_pipeline_bus_failures), never answered as an error. MQTT-ingested predictions are
 * published by mqtt_in before the input is acknowledged. NULL = none. bus must stay
 * alive until the pipeline is drained (or set back to NULL). Thread-safe. */
struct dn_bus;
void dn_pipeline_set_bus(dn_pipeline *p, struct dn_bus *bus);
/* The same for the Kafka export (serve/kafka.h, key line/camera, 5 s delivery wait, best
 * effort like the bus). Failures of either are counted by dn_pipeline_bus_failures. */
struct dn_kafka;
void dn_pipeline_set_kafka(dn_pipeline *p, struct dn_kafka *k);
long dn_pipeline_bus_failures(const dn_pipeline *p);

/* Grad-CAM heatmaps (ood/gradcam.h, layer4, the predicted class, the model's absolute
 * colour scale) for the predictions of the listed kinds: a comma list of "unknown",
 * "uncertain", "defect" (accepted, not the model's good class; every accepted prediction
 * when the model has no good class), "good" (accepted good class), or "all". Each is
 * written as PNG beside the image copy (<sha>.<model sha[0:12]>.cam.png, needs
 * store_images) and its path recorded with the prediction ("heatmap"). Best effort: a
 * heatmap that fails is logged, the prediction is recorded without one. Call before
 * submitting jobs; NULL or "" = none. Errors (unknown word, no store_images) name the
 * option --heatmaps. */
dn_status dn_pipeline_set_heatmaps(dn_pipeline *p, const char *list);

/* ---- one image */
typedef struct dn_classify_req {
    const uint8_t *data;         /* image bytes */
    size_t len;
    const char *line, *station, *camera, *part, *request_id;   /* NULL = none; checked by the caller */
    const char *source;          /* "http" | "watch" | "mqtt" (NULL = "http") */
    const char *source_path;     /* file path (watch) or topic (mqtt); NULL = none */
} dn_classify_req;
typedef struct dn_classify_res {
    int http_code;               /* 200 on success, else the 4xx/5xx an HTTP client would get */
    int64_t id;                  /* prediction id (200 only) */
    char cls[128];               /* predicted class (200 only) */
    char *json;                  /* response body (one line + '\n'), malloc'ed, caller frees */
} dn_classify_res;

/* Blocking: waits for queue space (instead of a 503) and for the result. DN_ERR_ARG when
 * the pipeline is draining; else DN_OK with the outcome in *res (http_code). */
dn_status dn_pipeline_classify(dn_pipeline *p, const dn_classify_req *req, dn_classify_res *res);

/* Asynchronous (HTTP): reserve a slot (refuse with 503 when none), suspend the client,
 * push, and be woken by the done callback. */
typedef struct dn_job dn_job;
/* Called on a worker thread with the pipeline's lock held once the job's result is ready:
 * it must only wake the submitter (e.g. MHD_resume_connection), never call dn_pipeline_*
 * or dn_job_* functions. */
typedef void (*dn_job_done_fn)(void *ctx);
dn_job *dn_job_new(const dn_classify_req *req, dn_job_done_fn done, void *ctx);  /* NULL: out of memory */
int dn_pipeline_reserve(dn_pipeline *p);        /* 0 = one queue slot reserved, -1 = full or draining */
void dn_pipeline_push(dn_pipeline *p, dn_job *j); /* into a slot reserved before */
int dn_job_finished(dn_pipeline *p, const dn_job *j);
void dn_job_result(dn_job *j, dn_classify_res *res);  /* after finished: moves the result out */
void dn_job_free(dn_job *j);

/* ---- state for health and metrics endpoints */
dn_store *dn_pipeline_store(dn_pipeline *p);      /* owned by the pipeline */
struct dn_metrics *dn_pipeline_metrics(dn_pipeline *p);
struct dn_review_policy;
const struct dn_review_policy *dn_pipeline_review(dn_pipeline *p); /* the review queue policy (never NULL) */
struct dn_drift *dn_pipeline_drift(dn_pipeline *p); /* owned by the pipeline (GET /v1/drift, /metrics) */
struct dn_shadow *dn_pipeline_shadow(dn_pipeline *p); /* NULL without --shadow; owned by the pipeline */
dn_gen *dn_pipeline_gen_acquire(dn_pipeline *p);  /* current generation, +1 reference */
void dn_pipeline_gen_release(dn_pipeline *p, dn_gen *g);
void dn_pipeline_queue(dn_pipeline *p, int *depth, int *capacity);
int dn_pipeline_workers(const dn_pipeline *p);
int dn_pipeline_has_rules(const dn_pipeline *p);
int dn_pipeline_dry_run(const dn_pipeline *p);

/* ---- shared by the ingestion front ends */
/* One timestamped line "serve: ..." on stderr unless quiet. */
void dn_pipeline_log(const dn_pipeline *p, const char *fmt, ...) DN_PRINTF(2, 3);
int dn_pipeline_log_enabled(const dn_pipeline *p);
/* {"error":msg,"status":code}\n */
void dn_json_error(dn_sb *b, int code, const char *msg);
/* [,]"key":"v" or null */
void dn_json_opt_str(dn_sb *b, const char *key, const char *v, int comma);
/* {"class":prob,...} of one image under generation g. */
void dn_pipeline_scores_json(dn_sb *sc, const dn_gen *g, const float *probs);
/* A stored prediction as a JSON object without its closing brace. */
void dn_pred_row_json_open(dn_sb *b, const dn_pred_row *r);

#endif
