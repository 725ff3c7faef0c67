/* Internal to the HTTP server (http.c: responses, routing, request callbacks,
 * start/stop; http_read.c: the read-only endpoints and the health registry).
 * Not part of the library API. */
#ifndef DN_SERVE_HTTP_INT_H
#define DN_SERVE_HTTP_INT_H
#include "serve/http.h"
#include "core/core.h"
#include "serve/connguard.h"
#include "serve/metrics.h"
#include "serve/multipart.h"
#include "serve/watch.h"
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

struct dn_server {
    char *token, *ok_classes;
    char listen_host[64];
    int port, quiet;
    size_t max_body, body_budget;
    int body_timeout, idle_timeout, header_timeout, max_connections, max_per_client, report_slots;
    atomic_size_t buffered;         /* request body bytes reserved by all connections */
    atomic_int reports;             /* reports being built */

    dn_connguard *guard;            /* header deadline (connguard.h) */

    dn_pipeline *pipe;
    dn_metrics *metrics;            /* the pipeline's */
    struct MHD_Daemon *mhd;
    dn_watch *watch;
    atomic_int stopping;            /* new HTTP requests get 503 */
    atomic_long inflight;           /* HTTP requests between first callback and completion */

    pthread_mutex_t health_mu;      /* extra /healthz reporters (dn_server_add_health) */
    struct { dn_health_fn fn; void *ctx; } health[DN_SERVER_MAX_HEALTH];
};

enum { E_PREDICT, E_LIST, E_GET, E_REPORT, E_HEALTH, E_METRICS, E_RELOAD, E_DRIFT, E_REVIEW, E_NONE };
extern const char *const dn_http_endpoint_names[]; /* metrics label per E_* */

typedef struct req {
    int started;                  /* the access handler has seen this request */
    size_t reserved;              /* body bytes taken from the server's body_budget */
    int ep;
    int64_t get_id;
    int review_post;              /* E_REVIEW: the URL takes POST (a label) */
    double t0;
    dn_sb body;
    int early_code;
    char *early_msg;
    dn_job *job;
    int answered;                 /* an error was written while the body was arriving */
    size_t discarded;             /* body bytes dropped while waiting to send an early error */
    dn_req_meta meta;
} req;


/* responses and request helpers (http.c) */
enum MHD_Result send_resp(dn_server *s, struct MHD_Connection *c, req *r, int code, const char *ctype, char *body, size_t len);
enum MHD_Result send_json(dn_server *s, struct MHD_Connection *c, req *r, int code, dn_sb *b);
enum MHD_Result send_err(dn_server *s, struct MHD_Connection *c, req *r, int code, const char *msg);
int auth_ok(dn_server *s, struct MHD_Connection *c);
int64_t parse_i64(const char *v, int64_t lo, int64_t hi, int *ok);
const char *query(struct MHD_Connection *c, const char *key);

/* read-only endpoints (http_read.c) */
enum MHD_Result handle_list(dn_server *s, struct MHD_Connection *c, req *r);
enum MHD_Result handle_get(dn_server *s, struct MHD_Connection *c, req *r);
enum MHD_Result handle_report(dn_server *s, struct MHD_Connection *c, req *r);
enum MHD_Result handle_health(dn_server *s, struct MHD_Connection *c, req *r);
enum MHD_Result handle_metrics(dn_server *s, struct MHD_Connection *c, req *r);
enum MHD_Result handle_drift(dn_server *s, struct MHD_Connection *c, req *r);
enum MHD_Result handle_reload(dn_server *s, struct MHD_Connection *c, req *r);

#endif
