/* defectnet serve: HTTP routing, the request lifecycle (headers, bodies, early errors,
 * budgets), predict and review requests, start/stop (see http.h for the contract). The
 * read-only endpoints are http_read.c's; classification, storage and actions are the
 * pipeline's (pipeline.h); metadata and multipart parsing are multipart.h's. */
#include "serve/http_int.h"
#include "core/core.h"
#include "serve/connguard.h"
#include "serve/metrics.h"
#include "trust/drift.h"
#include "serve/mreport.h"
#include "serve/multipart.h"
#include "serve/store.h"
#include "serve/watch.h"
#include "trust/review_serve.h"
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

const char *const dn_http_endpoint_names[] = {"predict", "predictions", "prediction", "report", "healthz", "metrics", "reload", "drift",
                                    "review", "other"};
#define ENAME dn_http_endpoint_names

/* ------------------------------------------------------------ responses */

enum MHD_Result send_resp(dn_server *s, struct MHD_Connection *c, req *r, int code, const char *ctype,
                                 char *body, size_t len) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body ? body : (char *)"", body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) { free(body); return MHD_NO; }
    MHD_add_response_header(resp, "Content-Type", ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (code == 503) MHD_add_response_header(resp, "Retry-After", "1");
    if (code == 401) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"defectnet\"");
    if (atomic_load(&s->stopping) || code == 413 || code == 408) MHD_add_response_header(resp, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)code, resp);
    MHD_destroy_response(resp);
    dn_metrics_request(s->metrics, ENAME[r ? r->ep : E_NONE], code);
    if (r && r->ep == E_PREDICT) dn_metrics_latency(s->metrics, dn_now() - r->t0);
    return ret;
}

enum MHD_Result send_json(dn_server *s, struct MHD_Connection *c, req *r, int code, dn_sb *b) {
    if (b->oom) {
        dn_sb_free(b);
        dn_sb e = {0};
        dn_json_error(&e, 500, "out of memory");
        return send_resp(s, c, r, 500, "application/json", e.s, e.len);
    }
    char *body = b->s;
    size_t len = b->len;
    b->s = NULL;
    return send_resp(s, c, r, code, "application/json", body, len);
}

enum MHD_Result send_err(dn_server *s, struct MHD_Connection *c, req *r, int code, const char *msg) {
    dn_sb b = {0};
    dn_json_error(&b, code, msg);
    return send_json(s, c, r, code, &b);
}

static void set_early(req *r, int code, const char *msg) {
    if (r->early_code) return;
    r->early_code = code;
    r->early_msg = dn_strdup(msg);
}

/* Ends a request whose body is still arriving with its JSON error. libmicrohttpd
 * accepts no response while the body is being received (not even on a suspended
 * connection) and would keep reading a trickling or oversized body. Nothing of this
 * request's answer has been sent yet, so the error is written straight to the socket
 * and MHD is told to close the connection. */
static enum MHD_Result abort_with_error(dn_server *s, struct MHD_Connection *c, req *r) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) {
        dn_sb b = {0};
        dn_json_error(&b, r->early_code, r->early_msg);
        char head[256];
        const char *reason = r->early_code == 408 ? "Request Timeout" : r->early_code == 413 ? "Content Too Large"
                           : r->early_code == 401 ? "Unauthorized" : r->early_code == 503 ? "Service Unavailable"
                           : r->early_code == 414 ? "URI Too Long" : "Bad Request";
        int hl = snprintf(head, sizeof head,
                          "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nConnection: close\r\n%s"
                          "Content-Length: %zu\r\n\r\n", r->early_code, reason,
                          r->early_code == 503 ? "Retry-After: 1\r\n" : "", b.len);
        if (send(ci->connect_fd, head, (size_t)hl, MSG_NOSIGNAL | MSG_DONTWAIT) == hl && b.s)
            (void)!send(ci->connect_fd, b.s, b.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        dn_sb_free(&b);
    }
    r->answered = 1;
    dn_metrics_request(s->metrics, ENAME[r->ep], r->early_code);
    return MHD_NO;
}

/* Constant-time comparison of the presented bearer token. */
int auth_ok(dn_server *s, struct MHD_Connection *c) {
    if (!s->token) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) return 0;
    h += 7;
    size_t a = strlen(h), b = strlen(s->token);
    unsigned diff = (unsigned)(a ^ b);
    for (size_t i = 0; i < b; i++) diff |= (unsigned char)(i < a ? h[i] : 0) ^ (unsigned char)s->token[i];
    return diff == 0;
}

int64_t parse_i64(const char *v, int64_t lo, int64_t hi, int *ok) {
    char *e;
    errno = 0;
    long long x = strtoll(v, &e, 10);
    *ok = !errno && e != v && !*e && x >= lo && x <= hi;
    return x;
}

const char *query(struct MHD_Connection *c, const char *key) {
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
}

/* Takes n bytes from the server's body budget; 0 when that would exceed it. */
static int budget_take(dn_server *s, size_t n) {
    size_t cur = atomic_load(&s->buffered);
    do {
        if (n > s->body_budget || cur > s->body_budget - n) return 0;
    } while (!atomic_compare_exchange_weak(&s->buffered, &cur, cur + n));
    return 1;
}

/* A query argument whose value holds a NUL byte (e.g. line=a%00b): MHD would hand it on
 * cut at the NUL. */
static enum MHD_Result find_nul(void *ctx, enum MHD_ValueKind kind, const char *key, size_t key_size,
                                const char *value, size_t value_size) {
    const char **bad = ctx;
    if ((value && strlen(value) != value_size) || strlen(key) != key_size) {
        *bad = key;
        return MHD_NO;
    }
    return MHD_YES;
}

static void resume_conn(void *ctx) { MHD_resume_connection(ctx); }

/* Starts a predict job for a fully received body: reserve a queue slot (or 503),
 * suspend the connection, queue. */
static enum MHD_Result start_predict(dn_server *s, struct MHD_Connection *c, req *r) {
    const uint8_t *img = (const uint8_t *)r->body.s;
    size_t n = r->body.len;
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (ct && !strncasecmp(ct, "multipart/form-data", 19)) {
        char err[200];
        if (dn_multipart_image(ct, img, n, &r->meta, &img, &n, err, sizeof err)) return send_err(s, c, r, 400, err);
    }
    if (!img || !n) return send_err(s, c, r, 400, "empty request body: POST the image bytes (or multipart/form-data)");
    dn_classify_req q = {0};
    q.data = img;
    q.len = n;
    q.line = dn_meta_get_value(&r->meta, DN_META_LINE);
    q.station = dn_meta_get_value(&r->meta, DN_META_STATION);
    q.camera = dn_meta_get_value(&r->meta, DN_META_CAMERA);
    q.part = dn_meta_get_value(&r->meta, DN_META_PART);
    q.request_id = dn_meta_get_value(&r->meta, DN_META_REQUEST_ID);
    q.source = "http";
    dn_job *j = dn_job_new(&q, resume_conn, c);
    if (!j) return send_err(s, c, r, 500, "out of memory");
    if (dn_pipeline_reserve(s->pipe)) {
        dn_job_free(j);
        return send_err(s, c, r, 503, "server busy: prediction queue full, retry later");
    }
    r->job = j;
    MHD_suspend_connection(c); /* before queueing: a worker may resume it at once */
    dn_pipeline_push(s->pipe, j);
    return MHD_YES;
}

/* A resumed predict request: answer with the job's result. */
static enum MHD_Result answer_predict(dn_server *s, struct MHD_Connection *c, req *r) {
    if (!dn_job_finished(s->pipe, r->job)) return MHD_YES; /* spurious wake-up; stays until resumed */
    dn_classify_res res;
    dn_job_result(r->job, &res);
    if (!s->quiet)
        dn_pipeline_log(s->pipe, "%d POST /v1/predict id=%lld class=%s %.1f ms", res.http_code, (long long)res.id,
                        res.cls, 1e3 * (dn_now() - r->t0));
    return send_resp(s, c, r, res.http_code, "application/json", res.json, res.json ? strlen(res.json) : 0);
}

/* /review and /v1/review/... (trust/review_serve.h answers them). */
static enum MHD_Result handle_review(dn_server *s, struct MHD_Connection *c, req *r, const char *url, const char *method) {
    dn_review_http h = {0};
    h.url = url;
    h.post = !strcmp(method, "POST");
    h.q_n = query(c, "n");
    h.q_reviewer = query(c, "reviewer");
    h.body = r->body.s;
    h.len = r->body.len;
    dn_review_handle(s->pipe, &h);
    if (h.out.oom) {
        dn_sb_free(&h.out);
        return send_err(s, c, r, 500, "out of memory");
    }
    return send_resp(s, c, r, h.code, h.ctype, h.out.s, h.out.len);
}

/* ------------------------------------------------------------ request callbacks */

static int route(const char *url, int64_t *get_id) {
    if (!strcmp(url, "/v1/predict")) return E_PREDICT;
    if (!strcmp(url, "/v1/predictions")) return E_LIST;
    if (!strncmp(url, "/v1/predictions/", 16)) {
        int ok = 0;
        *get_id = parse_i64(url + 16, 1, INT64_MAX, &ok);
        return ok ? E_GET : E_NONE;
    }
    if (!strcmp(url, "/v1/report")) return E_REPORT;
    if (!strcmp(url, "/healthz")) return E_HEALTH;
    if (!strcmp(url, "/metrics")) return E_METRICS;
    if (!strcmp(url, "/v1/admin/reload")) return E_RELOAD;
    int post_ok;
    if (dn_review_route(url, &post_ok)) return E_REVIEW;
    if (!strcmp(url, "/v1/drift")) return E_DRIFT;
    return E_NONE;
}

/* First callback of a request (headers complete): route, method, auth, size, metadata. */
static enum MHD_Result on_headers(dn_server *s, struct MHD_Connection *c, req *r, const char *url, const char *method) {
    int post = !strcmp(method, "POST"), get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    r->ep = route(url, &r->get_id);
    int want_post = r->ep == E_PREDICT || r->ep == E_RELOAD, want_token = want_post || r->ep == E_REPORT;
    if (r->ep == E_REVIEW) { /* the page is public; the API needs the token; labels are POSTs */
        want_token = dn_review_route(url, &r->review_post) == 2;
        if (post && r->review_post) want_post = 1;
    }
    const char *nul_arg = NULL;
    MHD_get_connection_values_n(c, MHD_GET_ARGUMENT_KIND, find_nul, &nul_arg);
    char err[200];
    if (atomic_load(&s->stopping)) set_early(r, 503, "server is shutting down");
    else if (r->ep == E_NONE) set_early(r, 404, "no such endpoint");
    else if (want_post ? !post : !get) set_early(r, 405, want_post ? "method not allowed: use POST" : "method not allowed: use GET");
    else if (want_token && !auth_ok(s, c)) set_early(r, 401, "missing or wrong bearer token");
    else if (nul_arg) {
        snprintf(err, sizeof err, "query argument '%.60s' contains a NUL byte", nul_arg);
        set_early(r, 400, err);
    }
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    unsigned long long clen = cl ? strtoull(cl, NULL, 10) : 0;
    if (!r->early_code && r->ep == E_REVIEW && post && cl && clen > DN_REVIEW_MAX_POST)
        set_early(r, 413, "review post larger than 4096 bytes");
    if (!r->early_code && r->ep == E_PREDICT) {
        if (cl && clen > s->max_body) {
            snprintf(err, sizeof err, "request body larger than the limit of %zu bytes", s->max_body);
            set_early(r, 413, err);
        } else if (dn_meta_collect(c, &r->meta, err, sizeof err)) {
            set_early(r, 400, err);
        } else if (clen && !budget_take(s, (size_t)clen)) {
            set_early(r, 503, "server busy: too many request bodies being received, retry later");
        } else {
            r->reserved = (size_t)clen;
        }
    }
    if (!r->early_code) return MHD_YES;
    /* Answering before a body is read makes MHD close the connection while the
     * client may still be sending, and its TCP stack can then see a reset instead
     * of the answer. A client that sent "Expect: 100-continue" never sends the body
     * and a huge one is cut at once; a moderate body is cheaper to discard (it is
     * not stored) than to lose the JSON error, so that answer waits for its end. */
    const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Transfer-Encoding");
    const char *ex = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Expect");
    int has_body = clen > 0 || te;
    if (has_body && !(ex && strcasestr(ex, "100-continue")) && clen <= 4ull * s->max_body && r->early_code != 503)
        return MHD_YES;
    return send_err(s, c, r, r->early_code, r->early_msg);
}

/* A chunk of request body. */
static enum MHD_Result on_body(dn_server *s, struct MHD_Connection *c, req *r, const char *upload, size_t n) {
    if (r->early_code) { /* to be answered at the end: discard, within bounds */
        r->discarded += n;
        if (r->discarded > 4 * s->max_body || dn_now() - r->t0 > s->body_timeout) return abort_with_error(s, c, r);
        return MHD_YES;
    }
    if (dn_now() - r->t0 > s->body_timeout) {
        set_early(r, 408, "request body not received within the time limit (slow client)");
    } else if (r->body.len + n > s->max_body) {
        char m[120];
        snprintf(m, sizeof m, "request body larger than the limit of %zu bytes", s->max_body);
        set_early(r, 413, m);
    } else if (r->ep == E_REVIEW) {
        if (r->body.len + n > DN_REVIEW_MAX_POST) set_early(r, 413, "review post larger than 4096 bytes");
        else dn_sb_putn(&r->body, upload, n);
    } else if (r->ep == E_PREDICT) {
        size_t need = r->body.len + n > r->reserved ? r->body.len + n - r->reserved : 0; /* chunked: no length */
        if (need && !budget_take(s, need)) {
            set_early(r, 503, "server busy: too many request bodies being received, retry later");
        } else {
            r->reserved += need;
            dn_sb_putn(&r->body, upload, n);
            if (r->body.oom) set_early(r, 413, "request body: out of memory");
        }
    }
    /* Answer at once instead of reading the rest of an oversized or trickling body. */
    if (r->early_code) return abort_with_error(s, c, r);
    return MHD_YES;
}

static req *req_new(dn_server *s) {
    req *r = dn_calloc(1, sizeof *r);
    if (!r) return NULL;
    r->t0 = dn_now();
    r->ep = E_NONE;
    atomic_fetch_add(&s->inflight, 1);
    dn_metrics_inflight(s->metrics, 1);
    return r;
}

/* Called by MHD with the request line, before it parses the query string: a request with
 * more than DN_HTTP_MAX_ARGS arguments is answered 414 here, because parsing several
 * hundred of them exhausts the connection's memory pool and MHD would then close the
 * connection without an answer. The returned req becomes the request's con_cls. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c) {
    dn_server *s = cls;
    req *r = req_new(s);
    if (!r) return NULL;
    const char *q = strchr(uri, '?');
    size_t args = 0;
    for (; q && *q; q++) args += *q == '?' || *q == '&' || *q == ';';
    if (args > DN_HTTP_MAX_ARGS) {
        char m[120];
        snprintf(m, sizeof m, "too many query arguments: %zu (at most %d)", args, DN_HTTP_MAX_ARGS);
        set_early(r, 414, m);
        abort_with_error(s, c, r);
    }
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    dn_server *s = cls;
    req *r = *con_cls;
    if (!r && !(r = *con_cls = req_new(s))) return MHD_NO;
    if (!r->started) {
        r->started = 1;
        dn_connguard_headers_done(c);
        if (r->answered) return MHD_NO;
        return on_headers(s, c, r, url, method);
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        return on_body(s, c, r, upload, n);
    }
    if (r->answered) return MHD_YES;
    if (r->early_code) return send_err(s, c, r, r->early_code, r->early_msg);
    if (r->job) return answer_predict(s, c, r); /* resumed by a worker */
    switch (r->ep) {
    case E_PREDICT: return start_predict(s, c, r);
    case E_LIST: return handle_list(s, c, r);
    case E_GET: return handle_get(s, c, r);
    case E_REPORT: return handle_report(s, c, r);
    case E_HEALTH: return handle_health(s, c, r);
    case E_METRICS: return handle_metrics(s, c, r);
    case E_RELOAD: return handle_reload(s, c, r);
    case E_REVIEW: return handle_review(s, c, r, url, method);
    case E_DRIFT: return handle_drift(s, c, r);
    default: return send_err(s, c, r, 404, "no such endpoint");
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    dn_server *s = cls;
    req *r = *con_cls;
    dn_connguard_request_done(c);
    if (!r) return;
    atomic_fetch_sub(&s->buffered, r->reserved);
    dn_job_free(r->job);
    dn_sb_free(&r->body);
    free(r->early_msg);
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&s->inflight, 1);
    dn_metrics_inflight(s->metrics, -1);
}

/* ------------------------------------------------------------ start / stop */

static dn_status parse_listen(const char *l, struct sockaddr_in *a, char *host, size_t hn) {
    const char *colon = strrchr(l, ':');
    if (!colon || colon == l) return dn_fail(DN_ERR_ARG, "--listen '%s': expected HOST:PORT (e.g. 127.0.0.1:8080)", l);
    int ok = 0;
    int64_t port = parse_i64(colon + 1, 0, 65535, &ok);
    if (!ok) return dn_fail(DN_ERR_ARG, "--listen '%s': bad port", l);
    snprintf(host, hn, "%.*s", (int)(colon - l), l);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) || !res)
        return dn_fail(DN_ERR_ARG, "--listen '%s': cannot resolve host '%s' (IPv4)", l, host);
    memcpy(a, res->ai_addr, sizeof *a);
    a->sin_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return DN_OK;
}

static dn_status start_watch(dn_server *s, const dn_server_config *c) {
    const char *mv[3] = {c->watch_line, c->watch_station, c->watch_camera};
    const char *nm[3] = {"--watch-line", "--watch-station", "--watch-camera"};
    for (int i = 0; i < 3; i++) {
        const char *pb = mv[i] ? dn_meta_problem(mv[i]) : NULL;
        if (pb) return dn_fail(DN_ERR_ARG, "serve: %s %s", nm[i], pb);
    }
    return dn_watch_start(s->pipe, c->watch_dir, c->move_processed, c->watch_line, c->watch_station, c->watch_camera,
                          &s->watch);
}

static dn_status start_daemon(dn_server *s, struct sockaddr_in *addr, const char *listen) {
    dn_status rc = dn_connguard_start(s->header_timeout, s->pipe, &s->guard);
    if (rc) return rc;
    s->mhd = MHD_start_daemon(MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME, 0,
                              NULL, NULL, on_request, s,
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)addr,
                              /* I/O threads; a report or listing (a DB scan) occupies one while it runs */
                              MHD_OPTION_THREAD_POOL_SIZE, (unsigned)4,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->idle_timeout,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->max_connections,
                              MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)s->max_per_client,
                              MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)512,
                              MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
                              MHD_OPTION_NOTIFY_CONNECTION, dn_connguard_notify, s->guard,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                              MHD_OPTION_END);
    if (!s->mhd) return dn_fail(DN_ERR_NET, "serve: cannot listen on %s (in use or not permitted?)", listen);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : ntohs(addr->sin_port);
    return DN_OK;
}

dn_status dn_server_start(const dn_server_config *c, dn_server **out) {
    *out = NULL;
    if (!c->model_path) return dn_fail(DN_ERR_ARG, "serve: --model is required");
    dn_server *s = dn_calloc(1, sizeof *s);
    if (!s) return DN_ERR_NOMEM;
    dn_status rc = DN_OK;
    pthread_mutex_init(&s->health_mu, NULL);
    s->token = c->token ? dn_strdup(c->token) : NULL;
    s->ok_classes = c->ok_classes ? dn_strdup(c->ok_classes) : NULL;
    if ((c->token && !s->token) || (c->ok_classes && !s->ok_classes)) { rc = dn_fail(DN_ERR_NOMEM, "serve: out of memory"); goto fail; }
    s->quiet = c->quiet;
    s->max_body = c->max_body ? c->max_body : 16u << 20;
    s->body_timeout = c->body_timeout > 0 ? c->body_timeout : 30;
    s->idle_timeout = c->idle_timeout > 0 ? c->idle_timeout : 15;
    s->header_timeout = c->header_timeout > 0 ? c->header_timeout : 10;
    s->max_connections = c->max_connections > 0 ? c->max_connections : 1000;
    s->max_per_client = c->max_per_client > 0 ? c->max_per_client : 128;
    s->body_budget = c->body_budget ? c->body_budget : (size_t)256 << 20;
    s->report_slots = c->report_slots > 0 ? c->report_slots : 1;
    if (s->token && !*s->token) { rc = dn_fail(DN_ERR_ARG, "serve: empty bearer token"); goto fail; }
    const char *listen = c->listen ? c->listen : "127.0.0.1:8080";
    struct sockaddr_in addr;
    if ((rc = parse_listen(listen, &addr, s->listen_host, sizeof s->listen_host))) goto fail;
    dn_pipeline_config pc = {c->model_path, c->db_url, c->rules_path, c->store_images, c->workers, c->queue,
                             c->session_threads, c->batch, c->dry_run, c->quiet, c->good_class, c->drift_window,
                             c->review, c->review_agree, c->shadow_model};
    if ((rc = dn_pipeline_open(&pc, &s->pipe))) goto fail;
    if (c->heatmaps && (rc = dn_pipeline_set_heatmaps(s->pipe, c->heatmaps))) goto fail;
    s->metrics = dn_pipeline_metrics(s->pipe);
    if ((rc = start_daemon(s, &addr, listen))) goto fail;
    if (c->watch_dir && (rc = start_watch(s, c))) goto fail;
    int ql, qcap;
    dn_pipeline_queue(s->pipe, &ql, &qcap);
    dn_gen *g = dn_pipeline_gen_acquire(s->pipe);
    dn_pipeline_log(s->pipe, "listening on http://%s:%d  model=%s sha256=%.12s  store=%s  workers=%d queue=%d%s%s",
                    s->listen_host, s->port, g->version, g->sha, dn_store_backend(dn_pipeline_store(s->pipe)),
                    dn_pipeline_workers(s->pipe), qcap, s->token ? "  token required" : "",
                    dn_pipeline_has_rules(s->pipe) ? (dn_pipeline_dry_run(s->pipe) ? "  rules (dry-run)" : "  rules") : "");
    dn_pipeline_gen_release(s->pipe, g);
    *out = s;
    return DN_OK;
fail:;
    char keep[1024];
    snprintf(keep, sizeof keep, "%s", dn_last_error());
    dn_server_stop(s);
    return dn_fail(rc, "%s", keep);
}

void dn_server_stop(dn_server *s) {
    if (!s) return;
    /* 1. stop ingesting files (the watcher blocks in dn_pipeline_classify: workers still run) */
    if (s->watch) dn_watch_stop(s->watch);
    s->watch = NULL;
    /* 2. no new connections; new requests on open connections get 503; wait for the
     *    in-flight ones (received, queued or running) to be answered, bounded. */
    atomic_store(&s->stopping, 1);
    MHD_socket ls = MHD_INVALID_SOCKET;
    if (s->mhd) {
        /* the old listen socket is closed after MHD_stop_daemon: until then MHD's worker
         * threads may still have it in their epoll sets (TSan saw close() race epoll_ctl) */
        ls = MHD_quiesce_daemon(s->mhd);
        double deadline = dn_now() + s->body_timeout + 30;
        while (atomic_load(&s->inflight) > 0 && dn_now() < deadline) usleep(10000);
    }
    /* 3. workers finish the queue and exit (before the daemon goes: they resume its connections) */
    dn_pipeline_drain(s->pipe);
    if (s->mhd) MHD_stop_daemon(s->mhd);
    if (ls != MHD_INVALID_SOCKET) close(ls);
    dn_connguard_stop(s->guard);
    /* 4. actions finish or fail (bounded); outcomes still reach the store; store closed */
    dn_pipeline_close(s->pipe);
    free(s->token);
    free(s->ok_classes);
    pthread_mutex_destroy(&s->health_mu);
    free(s);
}
