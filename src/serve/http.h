/* The production service behind `defectnet serve`: an HTTP/1.1 API on libmicrohttpd
 * in front of the prediction pipeline (src/serve/pipeline.h: model generations, job
 * queue, workers, store, actions), and optionally a folder watcher (src/serve/watch.h)
 * feeding the same pipeline. This file is routing and request handling only; request
 * metadata and multipart bodies are parsed by src/serve/multipart.h.
 *
 * Request path of POST /v1/predict: the libmicrohttpd threads receive the body
 * (size limit, slow-client deadline, bearer token), then reserve a pipeline queue slot
 * (none -> 503 + Retry-After), suspend the connection and push the job; the worker
 * that finished it resumes the connection with the JSON answer. The prediction is
 * committed BEFORE the response exists, so every 200 is in the database.
 *
 * Endpoints (documented in docs/serve.md):
 *   POST /v1/predict          image (raw body or multipart/form-data), metadata from
 *                             query (?line=&station=&camera=&part=) or headers
 *                             (X-Line, X-Station, X-Camera, X-Part or X-Serial),
 *                             X-Request-Id = idempotency key            [token]
 *   GET  /v1/predictions      ?from&to&line&class&decision&limit&cursor
 *   GET  /v1/report           ?format=csv|json|html&from&to&line&group_by  [token]
 *   GET  /healthz             liveness + model identity, database and registered reporters
 *                             (MQTT broker links): 503 + "status":"degraded" if one is down
 *   GET  /metrics             Prometheus text format
 *   POST /v1/admin/reload     reload model and rules                    [token]
 * [token]: when a token is configured, "Authorization: Bearer <token>" is required.
 *
 * Bounded resources (docs/security.md): complete headers within header_timeout, at most
 * max_per_client connections per client address (so one client cannot take the
 * max_connections), bodies within max_body each and body_budget together (503), at most
 * DN_HTTP_MAX_ARGS query arguments (414), report_slots reports at once (503); metadata
 * and query values with NUL bytes, control characters or invalid UTF-8 get 400.
 *
 * Hot reload (dn_server_reload, SIGHUP in the CLI, POST /v1/admin/reload): the new
 * model and rules are loaded beside the old ones; on success they become current for
 * new jobs while jobs already running finish with the generation they started with
 * (reference counted); on failure the old ones stay and the error is returned.
 *
 * Ownership: dn_server_start returns a server owned by the caller; dn_server_stop
 * shuts it down gracefully and frees it. Config strings are copied. */
#ifndef DN_SERVE_HTTP_H
#define DN_SERVE_HTTP_H
#include "core/json.h"
#include "defectnet.h"
#include "serve/pipeline.h"
#include <stddef.h>
#include <stdint.h>

typedef struct dn_server_config {
    const char *model_path;      /* required */
    const char *db_url;          /* NULL = "sqlite:defectnet.db" */
    const char *rules_path;      /* NULL = no actions */
    const char *listen;          /* "HOST:PORT", NULL = "127.0.0.1:8080"; port 0 = ephemeral */
    int workers;                 /* <= 0: number of CPUs */
    int queue;                   /* bounded job queue, <= 0: 4 * workers */
    int session_threads;         /* inference threads per worker session, <= 0: 1 */
    int batch;                   /* most queued jobs a worker classifies in one forward
                                    (1..DN_SERVE_MAX_BATCH, <= 0: 4); never waits to fill it */
    const char *token;           /* bearer token for write/admin endpoints; NULL = none */
    const char *store_images;    /* directory for image copies (by sha256); NULL = none */
    const char *heatmaps;        /* Grad-CAM overlays beside the image copies for these predictions:
                                    "unknown,uncertain,defect,good" or "all" (needs store_images); NULL = none */
    int dry_run;                 /* actions report "dry-run" instead of running */
    size_t max_body;             /* bytes, 0 = 16 MiB */
    int body_timeout;            /* seconds to receive a whole request, 0 = 30 */
    int idle_timeout;            /* seconds of connection inactivity before close, 0 = 15 */
    int header_timeout;          /* seconds to receive a request's complete headers (from the
                                    connection start or the end of the previous request), 0 = 10 */
    int max_connections;         /* open connections in total, 0 = 1000 */
    int max_per_client;          /* open connections per client IP address, 0 = 128 */
    size_t body_budget;          /* request bodies buffered at once, all connections, bytes;
                                    over it a request gets 503 + Retry-After; 0 = 256 MiB */
    int report_slots;            /* GET /v1/report built at once; more get 503 + Retry-After; 0 = 1 */
    const char *watch_dir;       /* folder to watch (NULL = none) */
    int move_processed;          /* move watched files to <dir>/processed/<class>/ */
    const char *watch_line, *watch_station, *watch_camera; /* metadata of watched files (NULL = none) */
    const char *ok_classes;      /* non-defect classes for /v1/report (NULL = default) */
    const char *good_class;      /* class meaning "good part" for decisions and /metrics (NULL = the model's) */
    const char *drift_window;    /* drift windows per line/camera: "500" or "1h" (docs/drift.md); NULL = "500" */
    int quiet;                   /* no per-event log lines on stderr */
    const char *review;          /* review queue policy (docs/review.md), NULL = none */
    int review_agree;            /* reviewers who must agree, 0 = the policy's (default 1) */
    const char *shadow_model;    /* candidate model run in shadow, NULL = none */
} dn_server_config;

typedef struct dn_server dn_server;

dn_status dn_server_start(const dn_server_config *c, dn_server **out);
/* Bound TCP port (useful with port 0). */
int dn_server_port(const dn_server *s);
/* Reload model and rules; keeps the old ones on failure. */
dn_status dn_server_reload(dn_server *s);
/* Graceful shutdown: stop accepting, answer every received request, drain the
 * queue and the action executor (bounded), close the store, free. */
void dn_server_stop(dn_server *s);

/* The server's pipeline, store and metrics (owned by the server; valid until dn_server_stop). */
struct dn_pipeline *dn_server_pipeline(dn_server *s);
struct dn_store *dn_server_store(dn_server *s);
struct dn_metrics *dn_server_metrics(dn_server *s);

/* Extra /healthz reporters: fn appends ,"name":value to the JSON object and returns 0
 * when healthy (any non-zero: /healthz answers 503 with "status":"degraded"). Called
 * under a lock; dn_server_remove_health(slot) waits for a running call, so ctx may be
 * freed afterwards. Returns the slot, or -1 when all DN_SERVER_MAX_HEALTH are taken. */
#define DN_SERVER_MAX_HEALTH 4
typedef int (*dn_health_fn)(void *ctx, dn_sb *b);
int dn_server_add_health(dn_server *s, dn_health_fn fn, void *ctx);
void dn_server_remove_health(dn_server *s, int slot);

#define DN_HTTP_MAX_ARGS 64  /* query arguments per request; more: 414 */

#endif
