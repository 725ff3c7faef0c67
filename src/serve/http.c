/* defectnet serve: HTTP API, worker pool, hot reload (see http.h for the contract). */
#include "serve/http.h"
#include "core/core.h"
#include "core/sha256.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "serve/actions.h"
#include "serve/metrics.h"
#include "serve/mreport.h"
#include "serve/store.h"
#include "serve/watch.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define META_MAX 128 /* bytes per metadata value */

/* ------------------------------------------------------------ model generation */

/* A loaded model with its identity. Reference counted: the server holds one
 * reference to the current generation, every job holds one while it runs.
 * plan: the immutable conv plan (BN-folded, packed weights) built by the first
 * worker that needs a session for this generation; the other workers' sessions
 * share it (dn_session_new_on_plan) instead of each packing ~45 MB of weights.
 * The gen holds one plan reference, each worker session another, so the plan
 * of a replaced model dies with the last of them. */
typedef struct gen {
    int refs;
    int serial;
    dn_model *model;
    pthread_mutex_t plan_mu;        /* guards plan; held while the first session builds it */
    dn_plan *plan;                  /* NULL until the first session; one reference owned */
    char sha[65];
    char version[160];
} gen;

/* ------------------------------------------------------------ jobs */

typedef struct job {
    struct job *next;
    const uint8_t *data;
    size_t len;
    dn_classify_req req;            /* strings owned by the submitter until done */
    /* result */
    int code;
    char *body;
    int64_t id;
    char cls[128];
    /* completion: either resume an HTTP connection or signal a waiting thread */
    struct MHD_Connection *conn;
    int done;
} job;

typedef struct worker {
    struct dn_server *s;
    pthread_t th;
    dn_session *sess;
    int sess_serial;
    float *probs;                   /* batch x num_classes */
    dn_prediction *preds;           /* batch */
} worker;

struct dn_server {
    char *model_path, *db_url, *rules_path, *token, *store_images, *ok_classes;
    char listen_host[64];
    int port, nworkers, qcap, session_threads, batch, dry_run, quiet;
    size_t max_body;
    int body_timeout, idle_timeout;

    dn_store *store;
    dn_metrics *metrics;
    dn_actions *actions;
    struct MHD_Daemon *mhd;
    dn_watch *watch;

    pthread_mutex_t mu;             /* queue, gen, done flags */
    pthread_cond_t qcond;           /* workers wait for jobs */
    pthread_cond_t space;           /* blocking submitters wait for queue space */
    pthread_cond_t donecond;        /* blocking submitters wait for their job */
    job *qhead, *qtail;
    int qlen, qreserved;            /* queued + slots reserved by HTTP before suspend */
    int stopping_workers;
    gen *cur;
    int gen_serial;
    pthread_mutex_t reload_mu;
    worker *workers;
    int nstarted;
    atomic_int stopping;            /* new HTTP requests get 503 */
    atomic_long inflight;           /* HTTP requests between first callback and completion */
};

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

DN_PRINTF(2, 3) static void slog(const dn_server *s, const char *fmt, ...) {
    if (s->quiet) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(stderr, "%s serve: %s\n", ts, buf);
}

int dn_server_log_enabled(const dn_server *s) { return !s->quiet; }
struct dn_store *dn_server_store(dn_server *s) { return s->store; }
struct dn_metrics *dn_server_metrics(dn_server *s) { return s->metrics; }
int dn_server_port(const dn_server *s) { return s->port; }

/* ------------------------------------------------------------ generations */

/* After a model or plan of a replaced generation is freed: glibc keeps freed
 * heap pages of every thread's arena mapped, so without this a server that
 * reloads keeps the peak of two models + two plans resident. Rare (reloads). */
static void give_back_memory(void) {
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

/* Frees a generation nobody references any more (its plan lives on in the
 * worker sessions still using it; they never touch the freed model again:
 * ensure_session replaces them before the next forward). */
static void gen_free(gen *g) {
    if (!g) return;
    dn_plan_release(g->plan);
    pthread_mutex_destroy(&g->plan_mu);
    dn_model_free(g->model);
    free(g);
    give_back_memory();
}

static void gen_release(dn_server *s, gen *g) {
    if (!g) return;
    pthread_mutex_lock(&s->mu);
    int last = --g->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (last) gen_free(g);
}

static gen *gen_acquire(dn_server *s) {
    pthread_mutex_lock(&s->mu);
    gen *g = s->cur;
    g->refs++;
    pthread_mutex_unlock(&s->mu);
    return g;
}

static dn_status gen_load(dn_server *s, gen **out) {
    *out = NULL;
    gen *g = dn_calloc(1, sizeof *g);
    if (!g) return DN_ERR_NOMEM;
    pthread_mutex_init(&g->plan_mu, NULL);
    dn_status rc = dn_model_load(s->model_path, &g->model);
    if (rc) { gen_free(g); return rc; }
    if (dn_model_num_classes(g->model) < 1) {
        gen_free(g);
        return dn_fail(DN_ERR_FORMAT, "%s: model has no classification head", s->model_path);
    }
    if (g->model->sha256[0]) snprintf(g->sha, sizeof g->sha, "%s", g->model->sha256);
    else if ((rc = dn_sha256_file(s->model_path, g->sha))) { gen_free(g); return rc; }
    const char *v = dn_meta_get(&g->model->meta, "version");
    const char *base = strrchr(s->model_path, '/');
    base = base ? base + 1 : s->model_path;
    if (v) snprintf(g->version, sizeof g->version, "%.80s (%.60s)", v, base);
    else snprintf(g->version, sizeof g->version, "%.150s", base);
    g->refs = 1;
    *out = g;
    return DN_OK;
}

dn_status dn_server_reload(dn_server *s) {
    pthread_mutex_lock(&s->reload_mu);
    gen *g = NULL;
    dn_rules *rules = NULL;
    dn_status rc = gen_load(s, &g);
    if (!rc && s->rules_path) rc = dn_rules_load(s->rules_path, &rules);
    if (!rc && s->actions) rc = dn_actions_set_rules(s->actions, rules);
    dn_rules_free(rules);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", dn_last_error());
        gen_free(g);
        dn_metrics_reload(s->metrics, 0);
        slog(s, "reload failed, keeping the current model and rules: %s", msg);
        pthread_mutex_unlock(&s->reload_mu);
        return dn_fail(rc, "reload: %s", msg);
    }
    pthread_mutex_lock(&s->mu);
    gen *old = s->cur;
    g->serial = ++s->gen_serial;
    s->cur = g;
    pthread_mutex_unlock(&s->mu);
    gen_release(s, old);
    dn_metrics_reload(s->metrics, 1);
    slog(s, "reloaded model %s sha256=%s%s", g->version, g->sha, s->rules_path ? " and rules" : "");
    pthread_mutex_unlock(&s->reload_mu);
    return DN_OK;
}

/* ------------------------------------------------------------ JSON */

static void json_err(dn_sb *b, int code, const char *msg) {
    dn_sb_printf(b, "{\"error\":");
    dn_sb_json_str(b, msg);
    dn_sb_printf(b, ",\"status\":%d}\n", code);
}

static void json_opt_str(dn_sb *b, const char *key, const char *v, int comma) {
    dn_sb_printf(b, "%s\"%s\":", comma ? "," : "", key);
    if (v) dn_sb_json_str(b, v);
    else dn_sb_puts(b, "null");
}

/* A stored (or just stored) prediction as JSON, without the closing brace. */
static void row_json_open(dn_sb *b, const dn_pred_row *r) {
    char iso[40];
    time_t t = (time_t)r->time;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%S", &tm);
    dn_sb_printf(b, "{\"id\":%lld,\"time\":%.6f,\"time_iso\":\"%s.%03dZ\"", (long long)r->id, r->time, iso,
                 (int)((r->time - (double)t) * 1000) % 1000);
    json_opt_str(b, "class", r->cls, 1);
    dn_sb_printf(b, ",\"confidence\":%.6g,\"scores\":%s", r->confidence, r->scores_json ? r->scores_json : "{}");
    json_opt_str(b, "decision", r->decision, 1);
    json_opt_str(b, "line", r->line, 1);
    json_opt_str(b, "station", r->station, 1);
    json_opt_str(b, "camera", r->camera, 1);
    json_opt_str(b, "part", r->part, 1);
    json_opt_str(b, "source", r->source, 1);
    json_opt_str(b, "source_path", r->source_path, 1);
    json_opt_str(b, "request_id", r->request_id, 1);
    json_opt_str(b, "image_sha256", r->image_sha256, 1);
    json_opt_str(b, "image_copy", r->image_copy, 1);
    json_opt_str(b, "model_sha256", r->model_sha256, 1);
    json_opt_str(b, "model_version", r->model_version, 1);
}

/* ------------------------------------------------------------ the pipeline */

static const char *image_ext(const uint8_t *d, size_t n) {
    if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return "jpg";
    if (n >= 8 && !memcmp(d, "\x89PNG", 4)) return "png";
    if (n >= 2 && d[0] == 'B' && d[1] == 'M') return "bmp";
    if (n >= 2 && d[0] == 'P' && d[1] >= '1' && d[1] <= '6') return "pnm";
    return "img";
}

/* Writes the image copy <dir>/<sha[0:2]>/<sha>.<ext> (fsync'ed, atomic rename);
 * an existing copy (same content by construction) is kept. */
static dn_status store_copy(dn_server *s, const char *sha, const uint8_t *d, size_t n, char *path, size_t pn) {
    char sub[1024], tmp[1300];
    snprintf(sub, sizeof sub, "%s/%.2s", s->store_images, sha);
    snprintf(path, pn, "%s/%s.%s", sub, sha, image_ext(d, n));
    if (access(path, F_OK) == 0) return DN_OK;
    if (mkdir(sub, 0755) && errno != EEXIST) return dn_fail(DN_ERR_IO, "%s: cannot create: %s", sub, strerror(errno));
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)pthread_self() % 100000);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return dn_fail(DN_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, d + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { close(fd); unlink(tmp); return dn_fail(DN_ERR_IO, "%s: write failed: %s", tmp, strerror(errno)); }
        off += (size_t)w;
    }
    if (fsync(fd) || close(fd)) { unlink(tmp); return dn_fail(DN_ERR_IO, "%s: fsync failed", tmp); }
    if (rename(tmp, path)) { unlink(tmp); return dn_fail(DN_ERR_IO, "%s: rename failed: %s", path, strerror(errno)); }
    return DN_OK;
}

static void job_fail(job *j, int code, const char *msg) {
    dn_sb b = {0};
    json_err(&b, code, msg);
    j->code = code;
    j->body = b.s;
}

/* (Re)creates the worker's session when the model generation changed: the
 * first worker of a generation builds the plan, the others share it. */
static int ensure_session(worker *w, gen *g, char *msg, size_t mn) {
    if (w->sess && w->sess_serial == g->serial) return 0;
    if (w->sess) { /* the last session of a replaced generation takes its plan along */
        dn_session_free(w->sess);
        w->sess = NULL;
        give_back_memory();
    }
    free(w->probs);
    free(w->preds);
    int nc = dn_model_num_classes(g->model);
    w->probs = malloc(sizeof(float) * (size_t)nc * (size_t)w->s->batch);
    w->preds = malloc(sizeof(dn_prediction) * (size_t)w->s->batch);
    dn_status rc = DN_ERR_NOMEM;
    if (w->probs && w->preds) {
        pthread_mutex_lock(&g->plan_mu);
        if (g->plan) {
            rc = dn_session_new_on_plan(g->plan, w->s->batch, w->s->session_threads, &w->sess);
        } else if (!(rc = dn_session_new(g->model, w->s->batch, w->s->session_threads, &w->sess))) {
            g->plan = dn_plan_retain(dn_session_plan(w->sess));
        }
        pthread_mutex_unlock(&g->plan_mu);
    }
    if (rc) {
        snprintf(msg, mn, "inference session: %s", w->probs && w->preds ? dn_last_error() : "out of memory");
        dn_session_free(w->sess);
        w->sess = NULL;
        return -1;
    }
    w->sess_serial = g->serial;
    return 0;
}

/* After classification: image copy, commit to the store, actions, answer. */
static void finish_job(worker *w, gen *g, job *j, const dn_prediction *p, const float *probs) {
    dn_server *s = w->s;
    dn_sb sc = {0}, b = {0};
    char msg[1400];
    uint8_t dg[32];
    char sha[65];
    dn_sha256(j->data, j->len, dg);
    dn_sha256_hex(dg, sha);
    char copy[1200] = "";
    if (s->store_images && store_copy(s, sha, j->data, j->len, copy, sizeof copy)) {
        snprintf(msg, sizeof msg, "image store: %s", dn_last_error());
        job_fail(j, 503, msg);
        goto done;
    }
    int nc = dn_model_num_classes(g->model);
    dn_sb_puts(&sc, "{");
    for (int i = 0; i < nc; i++) {
        if (i) dn_sb_puts(&sc, ",");
        dn_sb_json_str(&sc, dn_model_class_name(g->model, i));
        dn_sb_printf(&sc, ":%.6g", probs[i]);
    }
    dn_sb_puts(&sc, "}");
    if (sc.oom) { job_fail(j, 500, "out of memory"); goto done; }
    const char *cls = dn_model_class_name(g->model, p->cls);
    dn_pred_record rec = {0};
    rec.time = wall_now();
    rec.line = j->req.line;
    rec.station = j->req.station;
    rec.camera = j->req.camera;
    rec.part = j->req.part;
    rec.source = j->req.source ? j->req.source : "http";
    rec.source_path = j->req.source_path;
    rec.request_id = j->req.request_id;
    rec.image_sha256 = sha;
    rec.image_copy = copy[0] ? copy : NULL;
    rec.model_sha256 = g->sha;
    rec.model_version = g->version;
    rec.cls = cls;
    rec.confidence = p->confidence;
    rec.scores_json = sc.s;
    rec.uncertain = p->uncertain;
    int64_t id = 0;
    int existed = 0;
    if (dn_store_insert(s->store, &rec, &id, &existed)) {
        /* not durable -> no answer with a prediction; the client may retry */
        snprintf(msg, sizeof msg, "prediction store unavailable: %s", dn_last_error());
        slog(s, "%s", msg);
        job_fail(j, 503, msg);
        goto done;
    }
    if (existed) { /* idempotent retry: answer with what was recorded the first time */
        dn_pred_row row;
        int found = 0;
        if (dn_store_get(s->store, id, &row, &found) || !found) {
            snprintf(msg, sizeof msg, "prediction store: %s", found ? dn_last_error() : "recorded prediction vanished");
            job_fail(j, 503, msg);
            goto done;
        }
        row_json_open(&b, &row);
        dn_sb_puts(&b, ",\"duplicate\":true,\"actions_fired\":0}\n");
        snprintf(j->cls, sizeof j->cls, "%s", row.cls ? row.cls : "");
        dn_pred_row_clear(&row);
    } else {
        dn_pred_row row = {0};
        row.id = id;
        row.time = rec.time;
        row.line = (char *)rec.line;
        row.station = (char *)rec.station;
        row.camera = (char *)rec.camera;
        row.part = (char *)rec.part;
        row.source = (char *)rec.source;
        row.source_path = (char *)rec.source_path;
        row.request_id = (char *)rec.request_id;
        row.image_sha256 = sha;
        row.image_copy = (char *)rec.image_copy;
        row.model_sha256 = g->sha;
        row.model_version = g->version;
        row.cls = (char *)cls;
        row.confidence = p->confidence;
        row.scores_json = sc.s;
        row.decision = p->uncertain ? "uncertain" : "accepted";
        row_json_open(&b, &row);
        dn_sb_puts(&b, "}");
        int fired = 0;
        if (s->actions && !b.oom) {
            dn_pred_event ev = {id, rec.time, rec.line, rec.station, rec.camera, rec.part, cls,
                                p->confidence, p->uncertain, b.s};
            fired = dn_actions_submit(s->actions, &ev);
        }
        if (!b.oom) { /* reopen the object to add the action count */
            b.len--;
            b.s[b.len] = 0;
        }
        dn_sb_printf(&b, ",\"duplicate\":false,\"actions_fired\":%d}\n", fired);
        dn_metrics_prediction(s->metrics, cls, p->uncertain);
        snprintf(j->cls, sizeof j->cls, "%s", cls);
    }
    if (b.oom) { job_fail(j, 500, "out of memory"); goto done; }
    j->code = 200;
    j->id = id;
    j->body = b.s;
    b.s = NULL;
done:
    dn_sb_free(&sc);
    dn_sb_free(&b);
}

/* Runs up to s->batch jobs on a worker: decode + preprocess each, one batched
 * forward, then store/actions/answer each. Sets every job's code/body. */
static void run_batch(worker *w, job **jobs, int n) {
    dn_server *s = w->s;
    gen *g = gen_acquire(s);
    char msg[1200];
    int idx[DN_SERVE_MAX_BATCH], m = 0;
    if (ensure_session(w, g, msg, sizeof msg)) {
        for (int i = 0; i < n; i++) job_fail(jobs[i], 500, msg);
        goto done;
    }
    const dn_preproc *pp = dn_model_preproc(g->model);
    int ih = 0, iw = 0;
    dn_session_input_size(w->sess, &ih, &iw);
    size_t per = (size_t)3 * (size_t)ih * (size_t)iw;
    float *x = dn_session_input(w->sess);
    for (int i = 0; i < n; i++) {
        dn_image img = {0};
        dn_status rc = dn_image_decode(jobs[i]->data, jobs[i]->len, "image", &img);
        if (!rc) rc = dn_preprocess(&img, pp, x + (size_t)m * per);
        dn_image_free(&img);
        if (rc) {
            snprintf(msg, sizeof msg, "%s", dn_last_error());
            job_fail(jobs[i], rc == DN_ERR_NOMEM ? 413 : 400, msg);
            continue;
        }
        idx[m++] = i;
    }
    if (m && dn_session_classify_batch(w->sess, x, m, w->preds, w->probs)) {
        snprintf(msg, sizeof msg, "classification failed: %s", dn_last_error());
        for (int k = 0; k < m; k++) job_fail(jobs[idx[k]], 500, msg);
        goto done;
    }
    int nc = dn_model_num_classes(g->model);
    for (int k = 0; k < m; k++) finish_job(w, g, jobs[idx[k]], &w->preds[k], w->probs + (size_t)k * nc);
done:
    gen_release(s, g);
}

static void *worker_main(void *arg) {
    worker *w = arg;
    dn_server *s = w->s;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->qhead && !s->stopping_workers) pthread_cond_wait(&s->qcond, &s->mu);
        if (!s->qhead) { pthread_mutex_unlock(&s->mu); break; }
        /* take what is waiting, up to a batch: no waiting for more (latency first) */
        job *jobs[DN_SERVE_MAX_BATCH];
        int n = 0;
        while (s->qhead && n < s->batch) {
            job *j = s->qhead;
            s->qhead = j->next;
            if (!s->qhead) s->qtail = NULL;
            s->qlen--;
            jobs[n++] = j;
        }
        pthread_cond_broadcast(&s->space);
        pthread_mutex_unlock(&s->mu);
        run_batch(w, jobs, n);
        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < n; i++) {
            job *j = jobs[i];
            j->done = 1;
            /* After resume the connection's handler may free j: do not touch it again. */
            if (j->conn) MHD_resume_connection(j->conn);
        }
        pthread_cond_broadcast(&s->donecond);
        pthread_mutex_unlock(&s->mu);
    }
    dn_session_free(w->sess);
    free(w->probs);
    free(w->preds);
    w->sess = NULL;
    w->probs = NULL;
    w->preds = NULL;
    return NULL;
}

/* Queue a job into a reserved slot (caller holds s->mu and reserved one). */
static void push_reserved(dn_server *s, job *j) {
    s->qreserved--;
    j->next = NULL;
    if (s->qtail) s->qtail->next = j;
    else s->qhead = j;
    s->qtail = j;
    s->qlen++;
    pthread_cond_signal(&s->qcond);
}

dn_status dn_server_classify(dn_server *s, const dn_classify_req *req, dn_classify_res *res) {
    memset(res, 0, sizeof *res);
    job j = {0};
    j.data = req->data;
    j.len = req->len;
    j.req = *req;
    pthread_mutex_lock(&s->mu);
    while (s->qlen + s->qreserved >= s->qcap && !s->stopping_workers) pthread_cond_wait(&s->space, &s->mu);
    if (s->stopping_workers) {
        pthread_mutex_unlock(&s->mu);
        return dn_fail(DN_ERR_ARG, "server is shutting down");
    }
    s->qreserved++;
    push_reserved(s, &j);
    while (!j.done) pthread_cond_wait(&s->donecond, &s->mu);
    pthread_mutex_unlock(&s->mu);
    res->http_code = j.code;
    res->id = j.id;
    snprintf(res->cls, sizeof res->cls, "%s", j.cls);
    res->json = j.body;
    return DN_OK;
}

/* ------------------------------------------------------------ actions -> store */

static void outcome_cb(void *ctx, const dn_action_outcome *o) {
    dn_server *s = ctx;
    dn_outcome_row r = {o->prediction_id, o->rule, o->kind, o->target, o->status, o->detail, o->attempts,
                        o->time > 0 ? o->time : wall_now()};
    if (dn_store_add_outcome(s->store, &r))
        slog(s, "could not record action outcome for prediction %lld: %s", (long long)o->prediction_id, dn_last_error());
    dn_metrics_action(s->metrics, o->kind, o->status);
    slog(s, "action %s/%s for prediction %lld -> %s after %d attempt(s)%s%s", o->rule ? o->rule : "?",
         o->kind ? o->kind : "?", (long long)o->prediction_id, o->status ? o->status : "?", o->attempts,
         o->detail ? ": " : "", o->detail ? o->detail : "");
}

/* ------------------------------------------------------------ HTTP */

enum { E_PREDICT, E_LIST, E_GET, E_REPORT, E_HEALTH, E_METRICS, E_RELOAD, E_NONE };
static const char *const ENAME[] = {"predict", "predictions", "prediction", "report", "healthz", "metrics", "reload", "other"};

typedef struct req {
    int ep;
    int64_t get_id;
    double t0;
    dn_sb body;
    int early_code;
    char *early_msg;
    job *job;
    int answered;                 /* an error was written while the body was arriving */
    size_t discarded;             /* body bytes dropped while waiting to send an early error */
    char meta[5][META_MAX + 1];   /* line, station, camera, part, request id */
    int has_meta[5];
} req;

static enum MHD_Result send_resp(dn_server *s, struct MHD_Connection *c, req *r, int code, const char *ctype,
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

static enum MHD_Result send_json(dn_server *s, struct MHD_Connection *c, req *r, int code, dn_sb *b) {
    if (b->oom) {
        dn_sb_free(b);
        dn_sb e = {0};
        json_err(&e, 500, "out of memory");
        return send_resp(s, c, r, 500, "application/json", e.s, e.len);
    }
    char *body = b->s;
    size_t len = b->len;
    b->s = NULL;
    return send_resp(s, c, r, code, "application/json", body, len);
}

static enum MHD_Result send_err(dn_server *s, struct MHD_Connection *c, req *r, int code, const char *msg) {
    dn_sb b = {0};
    json_err(&b, code, msg);
    return send_json(s, c, r, code, &b);
}

static void set_early(req *r, int code, const char *msg) {
    if (r->early_code) return;
    r->early_code = code;
    r->early_msg = dn_strdup(msg);
}

/* Constant-time comparison of the presented bearer token. */
static int auth_ok(dn_server *s, struct MHD_Connection *c) {
    if (!s->token) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) return 0;
    h += 7;
    size_t a = strlen(h), b = strlen(s->token);
    unsigned diff = (unsigned)(a ^ b);
    for (size_t i = 0; i < b; i++) diff |= (unsigned char)(i < a ? h[i] : 0) ^ (unsigned char)s->token[i];
    return diff == 0;
}

/* Metadata value check: 1..META_MAX bytes, no control characters, valid UTF-8. */
static const char *meta_problem(const char *v) {
    size_t n = strlen(v);
    if (n == 0) return "is empty";
    if (n > META_MAX) return "is longer than 128 bytes";
    const unsigned char *p = (const unsigned char *)v;
    while (*p) {
        if (*p < 0x20 || *p == 0x7f) return "contains control characters";
        int k = *p < 0x80 ? 0 : (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2 : (*p & 0xF8) == 0xF0 ? 3 : -1;
        if (k < 0 || (k == 1 && *p < 0xC2)) return "is not valid UTF-8";
        p++;
        for (int i = 0; i < k; i++, p++)
            if ((*p & 0xC0) != 0x80) return "is not valid UTF-8";
    }
    return NULL;
}

static const char *const META_Q[5] = {"line", "station", "camera", "part", "request_id"};
static const char *const META_H[5] = {"X-Line", "X-Station", "X-Camera", "X-Part", "X-Request-Id"};

/* Sets r->meta[i] from value v (field name for messages). Returns 0 or -1 (early error set). */
static int set_meta(req *r, int i, const char *v, const char *field) {
    const char *pb = meta_problem(v);
    if (pb) {
        char m[200];
        snprintf(m, sizeof m, "bad metadata: %s %s", field, pb);
        set_early(r, 400, m);
        return -1;
    }
    snprintf(r->meta[i], sizeof r->meta[i], "%s", v);
    r->has_meta[i] = 1;
    return 0;
}

static void collect_meta(struct MHD_Connection *c, req *r) {
    for (int i = 0; i < 5; i++) {
        const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, META_Q[i]);
        if (!v && i == 3) v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "serial");
        const char *field = META_Q[i];
        if (!v) {
            v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, META_H[i]);
            if (!v && i == 3) v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Serial");
            field = META_H[i];
        }
        if (v && set_meta(r, i, v, field)) return;
    }
}

/* Finds the image in a multipart/form-data body: the first part with a filename,
 * or named "image"/"file". Form fields named like the metadata set it. Returns 0
 * with img/n pointing into the body, or -1 with an early error set. */
static int parse_multipart(req *r, const char *ctype, const uint8_t **img, size_t *n) {
    const char *bp = strcasestr(ctype, "boundary=");
    if (!bp) { set_early(r, 400, "multipart body without boundary"); return -1; }
    bp += 9;
    char bnd[80] = "\r\n--";
    size_t bl = 0;
    int quoted = *bp == '"';
    if (quoted) bp++;
    while (bp[bl] && bl < 70 && (quoted ? bp[bl] != '"' : (bp[bl] != ';' && bp[bl] != ' '))) bl++;
    if (!bl || bl >= 70) { set_early(r, 400, "multipart boundary missing or too long"); return -1; }
    memcpy(bnd + 4, bp, bl);
    bl += 4;
    bnd[bl] = 0;
    const uint8_t *body = (const uint8_t *)r->body.s, *end = body + r->body.len;
    if (!body) { set_early(r, 400, "empty multipart body"); return -1; }
    /* the first delimiter may lack the leading CRLF */
    const uint8_t *p = memmem(body, r->body.len, bnd + 2, bl - 2);
    *img = NULL;
    while (p) {
        p += bl - 2;
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') break; /* final delimiter */
        const uint8_t *h = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!h || h - p > 4096) { set_early(r, 400, "malformed multipart part headers"); return -1; }
        char hdr[4100];
        memcpy(hdr, p, (size_t)(h - p));
        hdr[h - p] = 0;
        const uint8_t *content = h + 4;
        const uint8_t *next = memmem(content, (size_t)(end - content), bnd, bl);
        if (!next) { set_early(r, 400, "truncated multipart body"); return -1; }
        size_t clen = (size_t)(next - content);
        char name[64] = "";
        const char *nm = strcasestr(hdr, " name=\"");
        if (!nm) nm = strcasestr(hdr, ";name=\"");
        if (nm) {
            nm += 7;
            size_t k = 0;
            while (nm[k] && nm[k] != '"' && k < sizeof name - 1) { name[k] = nm[k]; k++; }
            name[k] = 0;
        }
        int is_file = strcasestr(hdr, "filename=") != NULL || !strcmp(name, "image") || !strcmp(name, "file");
        if (is_file && !*img) {
            *img = content;
            *n = clen;
        } else if (!is_file) {
            int idx = !strcmp(name, "serial") ? 3 : -1;
            for (int i = 0; i < 5; i++)
                if (!strcmp(name, META_Q[i])) idx = i;
            if (idx >= 0 && !r->has_meta[idx]) {
                char v[META_MAX + 2];
                if (clen > META_MAX) { set_early(r, 400, "bad metadata: multipart field is longer than 128 bytes"); return -1; }
                memcpy(v, content, clen);
                v[clen] = 0;
                if (strlen(v) != clen) { set_early(r, 400, "bad metadata: multipart field contains NUL"); return -1; }
                if (set_meta(r, idx, v, name)) return -1;
            }
        }
        p = next + 2; /* at "--boundary" */
    }
    if (!*img) { set_early(r, 400, "multipart body has no image part (a file field, or a field named image)"); return -1; }
    return 0;
}

static int64_t parse_i64(const char *v, int64_t lo, int64_t hi, int *ok) {
    char *e;
    errno = 0;
    long long x = strtoll(v, &e, 10);
    *ok = !errno && e != v && !*e && x >= lo && x <= hi;
    return x;
}

static enum MHD_Result handle_list(dn_server *s, struct MHD_Connection *c, req *r) {
    dn_pred_filter f = {0};
    f.limit = 100;
    const char *v;
    int ok = 1;
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "from")) && dn_parse_time(v, "from", &f.from))
        return send_err(s, c, r, 400, dn_last_error());
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "to")) && dn_parse_time(v, "to", &f.to))
        return send_err(s, c, r, 400, dn_last_error());
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit")) && (f.limit = parse_i64(v, 1, 1000, &ok), !ok))
        return send_err(s, c, r, 400, "limit: expected an integer 1..1000");
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "cursor")) && (f.after_id = parse_i64(v, 0, INT64_MAX, &ok), !ok))
        return send_err(s, c, r, 400, "cursor: expected the next_cursor of a previous page");
    f.line = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "line");
    f.cls = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "class");
    f.decision = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "decision");
    if (f.decision && strcmp(f.decision, "accepted") && strcmp(f.decision, "uncertain"))
        return send_err(s, c, r, 400, "decision: expected accepted or uncertain");
    dn_pred_row *rows = NULL;
    size_t n = 0;
    if (dn_store_list(s->store, &f, &rows, &n)) return send_err(s, c, r, 503, dn_last_error());
    dn_sb b = {0};
    dn_sb_puts(&b, "{\"predictions\":[");
    for (size_t i = 0; i < n; i++) {
        if (i) dn_sb_puts(&b, ",");
        row_json_open(&b, &rows[i]);
        dn_sb_puts(&b, "}");
    }
    dn_sb_puts(&b, "],\"next_cursor\":");
    if (n && (int64_t)n == f.limit) dn_sb_printf(&b, "\"%lld\"", (long long)rows[n - 1].id);
    else dn_sb_puts(&b, "null");
    dn_sb_puts(&b, "}\n");
    dn_pred_rows_free(rows, n);
    return send_json(s, c, r, 200, &b);
}

typedef struct { dn_sb *b; int n; } oc_acc;
static int oc_json(void *ctx, const dn_outcome_row *o) {
    oc_acc *a = ctx;
    dn_sb *b = a->b;
    dn_sb_puts(b, a->n++ ? ",{" : "{");
    json_opt_str(b, "rule", o->rule, 0);
    json_opt_str(b, "kind", o->kind, 1);
    json_opt_str(b, "target", o->target, 1);
    json_opt_str(b, "status", o->status, 1);
    dn_sb_printf(b, ",\"attempts\":%d,\"time\":%.6f", o->attempts, o->time);
    json_opt_str(b, "detail", o->detail, 1);
    dn_sb_puts(b, "}");
    return 0;
}

static enum MHD_Result handle_get(dn_server *s, struct MHD_Connection *c, req *r) {
    dn_pred_row row;
    int found = 0;
    if (dn_store_get(s->store, r->get_id, &row, &found)) return send_err(s, c, r, 503, dn_last_error());
    if (!found) return send_err(s, c, r, 404, "no such prediction");
    dn_sb b = {0};
    row_json_open(&b, &row);
    dn_pred_row_clear(&row);
    dn_sb_puts(&b, ",\"actions\":[");
    oc_acc a = {&b, 0};
    if (dn_store_outcomes(s->store, r->get_id, oc_json, &a)) {
        dn_sb_free(&b);
        return send_err(s, c, r, 503, dn_last_error());
    }
    dn_sb_puts(&b, "]}\n");
    return send_json(s, c, r, 200, &b);
}

static enum MHD_Result handle_report(dn_server *s, struct MHD_Connection *c, req *r) {
    dn_mreport_opts o = {0};
    const char *v;
    const char *fmt = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "format");
    if (!fmt) fmt = "json";
    if (!dn_mreport_mime(fmt)) return send_err(s, c, r, 400, "format: expected csv, json or html");
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "from")) && dn_parse_time(v, "from", &o.from))
        return send_err(s, c, r, 400, dn_last_error());
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "to")) && dn_parse_time(v, "to", &o.to))
        return send_err(s, c, r, 400, dn_last_error());
    o.line = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "line");
    o.group_by = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "group_by");
    if (!o.group_by) o.group_by = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "group-by");
    o.shifts = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "shifts");
    o.ok_classes = s->ok_classes;
    dn_mreport *rep = NULL;
    dn_status rc = dn_mreport_build(s->store, &o, &rep);
    if (rc) return send_err(s, c, r, rc == DN_ERR_ARG ? 400 : 503, dn_last_error());
    dn_sb b = {0};
    rc = dn_mreport_render(rep, fmt, &b);
    dn_mreport_free(rep);
    if (rc) { dn_sb_free(&b); return send_err(s, c, r, 500, dn_last_error()); }
    char *body = b.s;
    return send_resp(s, c, r, 200, dn_mreport_mime(fmt), body, b.len);
}

static enum MHD_Result handle_health(dn_server *s, struct MHD_Connection *c, req *r) {
    gen *g = gen_acquire(s);
    pthread_mutex_lock(&s->mu);
    int ql = s->qlen;
    pthread_mutex_unlock(&s->mu);
    dn_sb b = {0};
    dn_sb_puts(&b, "{\"status\":\"ok\"");
    json_opt_str(&b, "model_sha256", g->sha, 1);
    json_opt_str(&b, "model_version", g->version, 1);
    dn_sb_puts(&b, ",\"classes\":[");
    for (int i = 0; i < dn_model_num_classes(g->model); i++) {
        if (i) dn_sb_puts(&b, ",");
        dn_sb_json_str(&b, dn_model_class_name(g->model, i));
    }
    dn_sb_printf(&b, "],\"store\":\"%s\",\"workers\":%d,\"queue_depth\":%d,\"queue_capacity\":%d,\"rules\":%s}\n",
                 dn_store_backend(s->store), s->nworkers, ql, s->qcap, s->actions ? "true" : "false");
    gen_release(s, g);
    return send_json(s, c, r, 200, &b);
}

static enum MHD_Result handle_metrics(dn_server *s, struct MHD_Connection *c, req *r) {
    pthread_mutex_lock(&s->mu);
    long ql = s->qlen;
    pthread_mutex_unlock(&s->mu);
    dn_sb b = {0};
    dn_metrics_render(s->metrics, ql, s->qcap, &b);
    if (b.oom) { dn_sb_free(&b); return send_err(s, c, r, 500, "out of memory"); }
    return send_resp(s, c, r, 200, "text/plain; version=0.0.4; charset=utf-8", b.s, b.len);
}

/* Starts a predict job for a fully received body: reserve a queue slot (or 503),
 * suspend the connection, queue. */
static enum MHD_Result start_predict(dn_server *s, struct MHD_Connection *c, req *r) {
    const uint8_t *img = (const uint8_t *)r->body.s;
    size_t n = r->body.len;
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (ct && !strncasecmp(ct, "multipart/form-data", 19)) {
        if (parse_multipart(r, ct, &img, &n)) return send_err(s, c, r, r->early_code, r->early_msg);
    }
    if (!img || !n) return send_err(s, c, r, 400, "empty request body: POST the image bytes (or multipart/form-data)");
    job *j = dn_calloc(1, sizeof *j);
    if (!j) return send_err(s, c, r, 500, "out of memory");
    j->data = img;
    j->len = n;
    j->req.line = r->has_meta[0] ? r->meta[0] : NULL;
    j->req.station = r->has_meta[1] ? r->meta[1] : NULL;
    j->req.camera = r->has_meta[2] ? r->meta[2] : NULL;
    j->req.part = r->has_meta[3] ? r->meta[3] : NULL;
    j->req.request_id = r->has_meta[4] ? r->meta[4] : NULL;
    j->req.source = "http";
    j->conn = c;
    pthread_mutex_lock(&s->mu);
    if (s->qlen + s->qreserved >= s->qcap || s->stopping_workers) {
        pthread_mutex_unlock(&s->mu);
        free(j);
        return send_err(s, c, r, 503, "server busy: prediction queue full, retry later");
    }
    s->qreserved++;
    pthread_mutex_unlock(&s->mu);
    r->job = j;
    MHD_suspend_connection(c); /* before queueing: a worker may resume it at once */
    pthread_mutex_lock(&s->mu);
    push_reserved(s, j);
    pthread_mutex_unlock(&s->mu);
    return MHD_YES;
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
        json_err(&b, r->early_code, r->early_msg);
        char head[256];
        const char *reason = r->early_code == 408 ? "Request Timeout" : r->early_code == 413 ? "Content Too Large"
                           : r->early_code == 401 ? "Unauthorized" : "Bad Request";
        int hl = snprintf(head, sizeof head,
                          "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nConnection: close\r\n"
                          "Content-Length: %zu\r\n\r\n", r->early_code, reason, b.len);
        if (send(ci->connect_fd, head, (size_t)hl, MSG_NOSIGNAL | MSG_DONTWAIT) == hl && b.s)
            (void)!send(ci->connect_fd, b.s, b.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        dn_sb_free(&b);
    }
    r->answered = 1;
    dn_metrics_request(s->metrics, ENAME[r->ep], r->early_code);
    return MHD_NO;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    dn_server *s = cls;
    req *r = *con_cls;
    if (!r) {
        r = dn_calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        *con_cls = r;
        r->t0 = dn_now();
        atomic_fetch_add(&s->inflight, 1);
        dn_metrics_inflight(s->metrics, 1);
        int post = !strcmp(method, "POST"), get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
        r->ep = E_NONE;
        if (!strcmp(url, "/v1/predict")) r->ep = E_PREDICT;
        else if (!strcmp(url, "/v1/predictions")) r->ep = E_LIST;
        else if (!strncmp(url, "/v1/predictions/", 16)) {
            int ok = 0;
            r->get_id = parse_i64(url + 16, 1, INT64_MAX, &ok);
            r->ep = ok ? E_GET : E_NONE;
        } else if (!strcmp(url, "/v1/report")) r->ep = E_REPORT;
        else if (!strcmp(url, "/healthz")) r->ep = E_HEALTH;
        else if (!strcmp(url, "/metrics")) r->ep = E_METRICS;
        else if (!strcmp(url, "/v1/admin/reload")) r->ep = E_RELOAD;
        int want_post = r->ep == E_PREDICT || r->ep == E_RELOAD;
        if (atomic_load(&s->stopping)) set_early(r, 503, "server is shutting down");
        else if (r->ep == E_NONE) set_early(r, 404, "no such endpoint");
        else if (want_post ? !post : !get) set_early(r, 405, want_post ? "method not allowed: use POST" : "method not allowed: use GET");
        else if (want_post && !auth_ok(s, c)) set_early(r, 401, "missing or wrong bearer token");
        if (!r->early_code && r->ep == E_PREDICT) {
            const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
            unsigned long long clen = cl ? strtoull(cl, NULL, 10) : 0;
            if (cl && clen > s->max_body) {
                char m[120];
                snprintf(m, sizeof m, "request body larger than the limit of %zu bytes", s->max_body);
                set_early(r, 413, m);
            } else {
                collect_meta(c, r);
            }
        }
        if (!r->early_code) return MHD_YES;
        /* Answering before a body is read makes MHD close the connection while the
         * client may still be sending, and its TCP stack can then see a reset instead
         * of the answer. A client that sent "Expect: 100-continue" never sends the body
         * and a huge one is cut at once; a moderate body is cheaper to discard (it is
         * not stored) than to lose the JSON error, so that answer waits for its end. */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Transfer-Encoding");
        const char *ex = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Expect");
        unsigned long long clen = cl ? strtoull(cl, NULL, 10) : 0;
        int has_body = clen > 0 || te;
        if (has_body && !(ex && strcasestr(ex, "100-continue")) && clen <= 4ull * s->max_body &&
            r->early_code != 503)
            return MHD_YES;
        return send_err(s, c, r, r->early_code, r->early_msg);
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
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
        } else if (r->ep == E_PREDICT) {
            dn_sb_putn(&r->body, upload, n);
            if (r->body.oom) set_early(r, 413, "request body: out of memory");
        }
        /* Answer at once instead of reading the rest of an oversized or trickling body. */
        if (r->early_code) return abort_with_error(s, c, r);
        return MHD_YES;
    }
    if (r->answered) return MHD_YES;
    if (r->early_code) return send_err(s, c, r, r->early_code, r->early_msg);
    if (r->job) { /* resumed by a worker */
        job *j = r->job;
        pthread_mutex_lock(&s->mu);
        int done = j->done;
        pthread_mutex_unlock(&s->mu);
        if (!done) return MHD_YES; /* spurious wake-up; stays until resumed */
        int code = j->code;
        char *body = j->body;
        j->body = NULL;
        if (!s->quiet) slog(s, "%d POST /v1/predict id=%lld class=%s %.1f ms", code, (long long)j->id, j->cls,
                            1e3 * (dn_now() - r->t0));
        return send_resp(s, c, r, code, "application/json", body, body ? strlen(body) : 0);
    }
    switch (r->ep) {
    case E_PREDICT: return start_predict(s, c, r);
    case E_LIST: return handle_list(s, c, r);
    case E_GET: return handle_get(s, c, r);
    case E_REPORT: return handle_report(s, c, r);
    case E_HEALTH: return handle_health(s, c, r);
    case E_METRICS: return handle_metrics(s, c, r);
    case E_RELOAD:
        if (dn_server_reload(s)) return send_err(s, c, r, 500, dn_last_error());
        {
            gen *g = gen_acquire(s);
            dn_sb b = {0};
            dn_sb_puts(&b, "{\"status\":\"reloaded\"");
            json_opt_str(&b, "model_sha256", g->sha, 1);
            json_opt_str(&b, "model_version", g->version, 1);
            dn_sb_puts(&b, "}\n");
            gen_release(s, g);
            return send_json(s, c, r, 200, &b);
        }
    default: return send_err(s, c, r, 404, "no such endpoint");
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    dn_server *s = cls;
    req *r = *con_cls;
    if (!r) return;
    if (r->job) {
        free(r->job->body);
        free(r->job);
    }
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

static char *dup_opt(const char *s, int *oom) {
    if (!s) return NULL;
    char *d = dn_strdup(s);
    if (!d) *oom = 1;
    return d;
}

dn_status dn_server_start(const dn_server_config *c, dn_server **out) {
    *out = NULL;
    if (!c->model_path) return dn_fail(DN_ERR_ARG, "serve: --model is required");
    dn_server *s = dn_calloc(1, sizeof *s);
    if (!s) return DN_ERR_NOMEM;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->reload_mu, NULL);
    pthread_cond_init(&s->qcond, NULL);
    pthread_cond_init(&s->space, NULL);
    pthread_cond_init(&s->donecond, NULL);
    dn_status rc = DN_OK;
    int oom = 0;
    s->model_path = dup_opt(c->model_path, &oom);
    s->db_url = dup_opt(c->db_url ? c->db_url : "sqlite:defectnet.db", &oom);
    s->rules_path = dup_opt(c->rules_path, &oom);
    s->token = dup_opt(c->token, &oom);
    s->store_images = dup_opt(c->store_images, &oom);
    s->ok_classes = dup_opt(c->ok_classes, &oom);
    s->metrics = dn_metrics_new();
    if (oom || !s->metrics) { rc = dn_fail(DN_ERR_NOMEM, "serve: out of memory"); goto fail; }
    s->nworkers = c->workers > 0 ? c->workers : dn_num_cpus();
    if (s->nworkers > 256) s->nworkers = 256;
    s->qcap = c->queue > 0 ? c->queue : 4 * s->nworkers;
    s->session_threads = c->session_threads > 0 ? c->session_threads : 1;
    s->batch = c->batch > 0 ? (c->batch < DN_SERVE_MAX_BATCH ? c->batch : DN_SERVE_MAX_BATCH) : 4;
    s->dry_run = c->dry_run;
    s->quiet = c->quiet;
    s->max_body = c->max_body ? c->max_body : 16u << 20;
    s->body_timeout = c->body_timeout > 0 ? c->body_timeout : 30;
    s->idle_timeout = c->idle_timeout > 0 ? c->idle_timeout : 15;
    if (s->token && !*s->token) { rc = dn_fail(DN_ERR_ARG, "serve: empty bearer token"); goto fail; }
    if (s->store_images) {
        struct stat st;
        if (stat(s->store_images, &st) || !S_ISDIR(st.st_mode)) {
            rc = dn_fail(DN_ERR_IO, "%s: --store-images is not a directory", s->store_images);
            goto fail;
        }
    }
    struct sockaddr_in addr;
    if ((rc = parse_listen(c->listen ? c->listen : "127.0.0.1:8080", &addr, s->listen_host, sizeof s->listen_host)))
        goto fail;
    if ((rc = gen_load(s, &s->cur))) goto fail;
    s->cur->serial = ++s->gen_serial;
    if ((rc = dn_store_open(s->db_url, &s->store))) goto fail;
    if (s->rules_path) {
        dn_rules *rules = NULL;
        if ((rc = dn_rules_load(s->rules_path, &rules))) goto fail;
        rc = dn_actions_new(rules, s->dry_run, outcome_cb, s, &s->actions);
        dn_rules_free(rules);
        if (rc) goto fail;
    }
    s->workers = dn_calloc((size_t)s->nworkers, sizeof *s->workers);
    if (!s->workers) { rc = DN_ERR_NOMEM; goto fail; }
    for (int i = 0; i < s->nworkers; i++) {
        s->workers[i].s = s;
        if (pthread_create(&s->workers[i].th, NULL, worker_main, &s->workers[i])) {
            rc = dn_fail(DN_ERR_NOMEM, "serve: cannot start worker thread");
            goto fail;
        }
        s->nstarted++;
    }
    s->mhd = MHD_start_daemon(MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME, 0,
                              NULL, NULL, on_request, s,
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                              /* I/O threads; a report or listing (a DB scan) occupies one while it runs */
                              MHD_OPTION_THREAD_POOL_SIZE, (unsigned)4,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->idle_timeout,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000,
                              MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)512,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                              MHD_OPTION_END);
    if (!s->mhd) {
        rc = dn_fail(DN_ERR_NET, "serve: cannot listen on %s (in use or not permitted?)", c->listen ? c->listen : "127.0.0.1:8080");
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : ntohs(addr.sin_port);
    if (c->watch_dir) {
        const char *mv[3] = {c->watch_line, c->watch_station, c->watch_camera};
        const char *nm[3] = {"--watch-line", "--watch-station", "--watch-camera"};
        for (int i = 0; i < 3; i++) {
            const char *pb = mv[i] ? meta_problem(mv[i]) : NULL;
            if (pb) { rc = dn_fail(DN_ERR_ARG, "serve: %s %s", nm[i], pb); goto fail; }
        }
        if ((rc = dn_watch_start(s, c->watch_dir, c->move_processed, c->watch_line, c->watch_station,
                                 c->watch_camera, &s->watch)))
            goto fail;
    }
    slog(s, "listening on http://%s:%d  model=%s sha256=%.12s  store=%s  workers=%d queue=%d%s%s", s->listen_host,
         s->port, s->cur->version, s->cur->sha, dn_store_backend(s->store), s->nworkers, s->qcap,
         s->token ? "  token required" : "", s->actions ? (s->dry_run ? "  rules (dry-run)" : "  rules") : "");
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
    /* 1. stop ingesting files (the watcher blocks in dn_server_classify: workers still run) */
    if (s->watch) dn_watch_stop(s->watch);
    s->watch = NULL;
    /* 2. no new connections; new requests on open connections get 503; wait for the
     *    in-flight ones (received, queued or running) to be answered, bounded. */
    atomic_store(&s->stopping, 1);
    if (s->mhd) {
        MHD_socket ls = MHD_quiesce_daemon(s->mhd);
        if (ls != MHD_INVALID_SOCKET) close(ls);
        double deadline = dn_now() + s->body_timeout + 30;
        while (atomic_load(&s->inflight) > 0 && dn_now() < deadline) usleep(10000);
    }
    /* 3. workers finish the queue and exit */
    pthread_mutex_lock(&s->mu);
    s->stopping_workers = 1;
    pthread_cond_broadcast(&s->qcond);
    pthread_cond_broadcast(&s->space);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->nstarted; i++) pthread_join(s->workers[i].th, NULL);
    if (s->mhd) MHD_stop_daemon(s->mhd);
    /* 4. actions finish or fail (bounded, inside dn_actions_free); outcomes still reach the store */
    dn_actions_free(s->actions);
    dn_store_close(s->store);
    gen_free(s->cur);
    dn_metrics_free(s->metrics);
    free(s->workers);
    free(s->model_path);
    free(s->db_url);
    free(s->rules_path);
    free(s->token);
    free(s->store_images);
    free(s->ok_classes);
    pthread_cond_destroy(&s->qcond);
    pthread_cond_destroy(&s->space);
    pthread_cond_destroy(&s->donecond);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->reload_mu);
    free(s);
}
