/* The prediction pipeline: job queue, workers, store, actions (see pipeline.h). */
#include "serve/pipeline.h"
#include "serve/bus.h"
#include "serve/kafka.h"
#include <stdatomic.h>
#include "core/sha256.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "serve/actions.h"
#include "serve/metrics.h"
#include "serve/multipart.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct dn_job {
    struct dn_job *next;
    dn_classify_req req;            /* strings and bytes owned by the submitter until done */
    /* result */
    int code;
    char *body;
    int64_t id;
    char cls[128];
    int accepted_good;              /* 1 accepted as good, 0 rejected, -1 the model has no good class */
    /* completion: a callback (HTTP resumes its connection) or a waiting thread */
    dn_job_done_fn done_fn;
    void *done_ctx;
    int done;
};

typedef struct worker {
    struct dn_pipeline *p;
    pthread_t th;
    dn_session *sess;
    int sess_serial;
    float *probs;                   /* batch x num_classes */
    dn_prediction *preds;           /* batch */
} worker;

struct dn_pipeline {
    char *model_path, *db_url, *rules_path, *store_images, *good_class;
    int nworkers, qcap, session_threads, batch, dry_run, quiet;

    dn_store *store;
    dn_metrics *metrics;
    dn_actions *actions;
    dn_gen_slot gens;
    int gens_init;

    pthread_mutex_t mu;             /* queue, done flags */
    pthread_cond_t qcond;           /* workers wait for jobs */
    pthread_cond_t space;           /* blocking submitters wait for queue space */
    pthread_cond_t donecond;        /* blocking submitters wait for their job */
    dn_job *qhead, *qtail;
    int qlen, qreserved;            /* queued + slots reserved by HTTP before suspend */
    int stopping_workers;
    pthread_mutex_t reload_mu;
    worker *workers;
    int nstarted, drained;
    _Atomic(struct dn_bus *) bus;   /* results bus for HTTP/watch predictions (dn_pipeline_set_bus) */
    _Atomic(struct dn_kafka *) kafka; /* Kafka export for them (dn_pipeline_set_kafka) */
    atomic_long bus_failures;
};

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Copies in to out as one line of valid UTF-8: control characters, DEL and bytes that
 * are not part of a valid UTF-8 sequence become \xNN (and '\' itself \\), so a file
 * name or a client's string can neither forge a log line nor break a UTF-8 reader. */
static void log_escape(const char *in, char *out, size_t cap) {
    size_t k = 0;
    const unsigned char *p = (const unsigned char *)in;
    while (*p && k + 5 < cap) {
        size_t n = dn_utf8_seq_len(p);
        if (n > 1) {
            memcpy(out + k, p, n);
            k += n;
            p += n;
        } else if (n == 1 && *p >= 0x20 && *p != 0x7f && *p != '\\') {
            out[k++] = (char)*p++;
        } else {
            if (*p == '\\') k += (size_t)snprintf(out + k, cap - k, "\\\\");
            else k += (size_t)snprintf(out + k, cap - k, "\\x%02X", *p);
            p++;
        }
    }
    out[k] = 0;
}

void dn_pipeline_log(const dn_pipeline *p, const char *fmt, ...) {
    if (p->quiet) return;
    char buf[1024], esc[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_escape(buf, esc, sizeof esc);
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(stderr, "%s serve: %s\n", ts, esc);
}

int dn_pipeline_log_enabled(const dn_pipeline *p) { return !p->quiet; }
dn_store *dn_pipeline_store(dn_pipeline *p) { return p->store; }
struct dn_metrics *dn_pipeline_metrics(dn_pipeline *p) { return p->metrics; }
dn_gen *dn_pipeline_gen_acquire(dn_pipeline *p) { return dn_gen_acquire(&p->gens); }
void dn_pipeline_gen_release(dn_pipeline *p, dn_gen *g) { dn_gen_release(&p->gens, g); }
int dn_pipeline_workers(const dn_pipeline *p) { return p->nworkers; }
int dn_pipeline_has_rules(const dn_pipeline *p) { return p->actions != NULL; }
int dn_pipeline_dry_run(const dn_pipeline *p) { return p->dry_run; }

void dn_pipeline_queue(dn_pipeline *p, int *depth, int *capacity) {
    pthread_mutex_lock(&p->mu);
    *depth = p->qlen;
    pthread_mutex_unlock(&p->mu);
    *capacity = p->qcap;
}

/* ------------------------------------------------------------ JSON */

void dn_json_error(dn_sb *b, int code, const char *msg) {
    dn_sb_printf(b, "{\"error\":");
    dn_sb_json_str(b, msg);
    dn_sb_printf(b, ",\"status\":%d}\n", code);
}

void dn_json_opt_str(dn_sb *b, const char *key, const char *v, int comma) {
    dn_sb_printf(b, "%s\"%s\":", comma ? "," : "", key);
    if (v) dn_sb_json_str(b, v);
    else dn_sb_puts(b, "null");
}

void dn_pred_row_json_open(dn_sb *b, const dn_pred_row *r) {
    char iso[40];
    time_t t = (time_t)r->time;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%S", &tm);
    dn_sb_printf(b, "{\"id\":%lld,\"time\":%.6f,\"time_iso\":\"%s.%03dZ\"", (long long)r->id, r->time, iso,
                 (int)((r->time - (double)t) * 1000) % 1000);
    dn_json_opt_str(b, "class", r->cls, 1);
    dn_sb_printf(b, ",\"confidence\":%.6g,\"scores\":%s", r->confidence, r->scores_json ? r->scores_json : "{}");
    dn_json_opt_str(b, "decision", r->decision, 1);
    dn_json_opt_str(b, "line", r->line, 1);
    dn_json_opt_str(b, "station", r->station, 1);
    dn_json_opt_str(b, "camera", r->camera, 1);
    dn_json_opt_str(b, "part", r->part, 1);
    dn_json_opt_str(b, "source", r->source, 1);
    dn_json_opt_str(b, "source_path", r->source_path, 1);
    dn_json_opt_str(b, "request_id", r->request_id, 1);
    dn_json_opt_str(b, "image_sha256", r->image_sha256, 1);
    dn_json_opt_str(b, "image_copy", r->image_copy, 1);
    dn_json_opt_str(b, "model_sha256", r->model_sha256, 1);
    dn_json_opt_str(b, "model_version", r->model_version, 1);
    dn_json_opt_str(b, "node", r->node, 1);
}

/* ------------------------------------------------------------ one job */

static const char *image_ext(const uint8_t *d, size_t n) {
    if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return "jpg";
    if (n >= 8 && !memcmp(d, "\x89PNG", 4)) return "png";
    if (n >= 2 && d[0] == 'B' && d[1] == 'M') return "bmp";
    if (n >= 2 && d[0] == 'P' && d[1] >= '1' && d[1] <= '6') return "pnm";
    return "img";
}

/* Writes the image copy <dir>/<sha[0:2]>/<sha>.<ext> (fsync'ed, atomic rename);
 * an existing copy (same content by construction) is kept. */
static dn_status store_copy(dn_pipeline *p, const char *sha, const uint8_t *d, size_t n, char *path, size_t pn) {
    char sub[1024], tmp[1300];
    snprintf(sub, sizeof sub, "%s/%.2s", p->store_images, sha);
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

static void job_fail(dn_job *j, int code, const char *msg) {
    dn_sb b = {0};
    dn_json_error(&b, code, msg);
    j->code = code;
    j->body = b.s;
}

/* (Re)creates the worker's session when the model generation changed. */
static int ensure_session(worker *w, dn_gen *g, char *msg, size_t mn) {
    if (w->sess && w->sess_serial == g->serial) return 0;
    if (w->sess) { /* the last session of a replaced generation takes its plan along */
        dn_session_free(w->sess);
        w->sess = NULL;
        dn_gen_give_back_memory();
    }
    free(w->probs);
    free(w->preds);
    int nc = dn_model_num_classes(g->model);
    w->probs = dn_malloc(sizeof(float) * (size_t)nc * (size_t)w->p->batch);
    w->preds = dn_malloc(sizeof(dn_prediction) * (size_t)w->p->batch);
    dn_status rc = DN_ERR_NOMEM;
    if (w->probs && w->preds) rc = dn_gen_session(g, w->p->batch, w->p->session_threads, &w->sess);
    if (rc) {
        snprintf(msg, mn, "inference session: %s", w->probs && w->preds ? dn_last_error() : "out of memory");
        return -1;
    }
    w->sess_serial = g->serial;
    return 0;
}

/* {"class":prob,...} of one image. */
static void scores_json(dn_sb *sc, const dn_gen *g, const float *probs) {
    int nc = dn_model_num_classes(g->model);
    dn_sb_puts(sc, "{");
    for (int i = 0; i < nc; i++) {
        if (i) dn_sb_puts(sc, ",");
        dn_sb_json_str(sc, dn_model_class_name(g->model, i));
        dn_sb_printf(sc, ":%.6g", probs[i]);
    }
    dn_sb_puts(sc, "}");
}

/* The answer to an idempotent retry: what was recorded the first time; 409 when the
 * key was recorded with a different image (a client reusing keys, not a retry). */
static void answer_duplicate(dn_pipeline *p, dn_job *j, int64_t id, const char *sha, dn_sb *b) {
    dn_pred_row row;
    int found = 0;
    char msg[1400];
    if (dn_store_get(p->store, id, &row, &found) || !found) {
        snprintf(msg, sizeof msg, "prediction store: %s", found ? dn_last_error() : "recorded prediction vanished");
        job_fail(j, 503, msg);
        return;
    }
    if (row.image_sha256 && strcmp(row.image_sha256, sha)) {
        snprintf(msg, sizeof msg, "request id '%s' was already used for a different image (prediction %lld)",
                 j->req.request_id ? j->req.request_id : "", (long long)id);
        dn_pred_row_clear(&row);
        job_fail(j, 409, msg);
        return;
    }
    dn_pred_row_json_open(b, &row);
    dn_sb_puts(b, ",\"duplicate\":true,\"actions_fired\":0}\n");
    snprintf(j->cls, sizeof j->cls, "%s", row.cls ? row.cls : "");
    dn_pred_row_clear(&row);
    j->code = 200;
}

/* The answer to a new prediction (just committed as id): fires its actions. */
static void answer_new(dn_pipeline *p, dn_job *j, const dn_pred_record *rec, int64_t id, dn_sb *b) {
    dn_pred_row row = {0};
    row.id = id;
    row.time = rec->time;
    row.line = (char *)rec->line;
    row.station = (char *)rec->station;
    row.camera = (char *)rec->camera;
    row.part = (char *)rec->part;
    row.source = (char *)rec->source;
    row.source_path = (char *)rec->source_path;
    row.request_id = (char *)rec->request_id;
    row.image_sha256 = (char *)rec->image_sha256;
    row.image_copy = (char *)rec->image_copy;
    row.model_sha256 = (char *)rec->model_sha256;
    row.model_version = (char *)rec->model_version;
    row.cls = (char *)rec->cls;
    row.confidence = rec->confidence;
    row.scores_json = (char *)rec->scores_json;
    row.decision = rec->uncertain ? "uncertain" : "accepted";
    dn_pred_row_json_open(b, &row);
    dn_sb_puts(b, "}");
    int fired = 0;
    if (p->actions && !b->oom) {
        dn_pred_event ev = {id, rec->time, rec->line, rec->station, rec->camera, rec->part, rec->cls,
                            rec->confidence, rec->uncertain, b->s};
        fired = dn_actions_submit(p->actions, &ev);
    }
    if (!b->oom) { /* reopen the object to add the action count */
        b->len--;
        b->s[b->len] = 0;
    }
    dn_sb_printf(b, ",\"duplicate\":false,\"actions_fired\":%d}\n", fired);
    dn_metrics_prediction(p->metrics, rec->cls, rec->uncertain);
    if (j->accepted_good >= 0) dn_metrics_part(p->metrics, j->accepted_good);
    snprintf(j->cls, sizeof j->cls, "%s", rec->cls);
    j->code = 200;
}

/* A committed HTTP/watch prediction onto the results bus (MQTT-ingested ones are
 * published by mqtt_in before their acknowledgement). Best effort: the prediction is
 * already durable, so a bus failure is logged and counted, not answered as an error. */
static void publish_committed(dn_pipeline *p, const dn_pred_record *rec, int64_t id, const char *json) {
    if (!strcmp(rec->source, "mqtt")) return;
    struct dn_kafka *k = atomic_load(&p->kafka);
    if (k) { /* key line/camera, as for MQTT-ingested records */
        if (dn_kafka_export_prediction(k, rec->line, rec->camera, json, 5000)) {
            atomic_fetch_add(&p->bus_failures, 1);
            dn_pipeline_log(p, "kafka: prediction %lld not exported: %s", (long long)id, dn_last_error());
        }
    }
    struct dn_bus *bus = atomic_load(&p->bus);
    if (!bus) return;
    dn_bus_result r = {.line = rec->line, .station = rec->station, .camera = rec->camera, .part = rec->part,
                       .id = id, .cls = rec->cls, .confidence = rec->confidence, .uncertain = rec->uncertain,
                       .json = json};
    if (dn_bus_publish_result(bus, &r, 2000)) {
        atomic_fetch_add(&p->bus_failures, 1);
        dn_pipeline_log(p, "results bus: prediction %lld not published: %s", (long long)id, dn_last_error());
    }
}

void dn_pipeline_set_bus(dn_pipeline *p, struct dn_bus *bus) {
    if (p) atomic_store(&p->bus, bus);
}

void dn_pipeline_set_kafka(dn_pipeline *p, struct dn_kafka *k) {
    if (p) atomic_store(&p->kafka, k);
}

long dn_pipeline_bus_failures(const dn_pipeline *p) {
    return p ? atomic_load(&((dn_pipeline *)p)->bus_failures) : 0;
}

/* After classification: image copy, commit to the store, actions, answer. */
static void finish_job(worker *w, dn_gen *g, dn_job *j, const dn_prediction *pr, const float *probs) {
    dn_pipeline *p = w->p;
    dn_sb sc = {0}, b = {0};
    char msg[1400];
    uint8_t dg[32];
    char sha[65];
    dn_sha256(j->req.data, j->req.len, dg);
    dn_sha256_hex(dg, sha);
    char copy[1200] = "";
    if (p->store_images && store_copy(p, sha, j->req.data, j->req.len, copy, sizeof copy)) {
        snprintf(msg, sizeof msg, "image store: %s", dn_last_error());
        job_fail(j, 503, msg);
        goto done;
    }
    scores_json(&sc, g, probs);
    if (sc.oom) { job_fail(j, 500, "out of memory"); goto done; }
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
    rec.cls = dn_model_class_name(g->model, pr->cls);
    rec.confidence = pr->confidence;
    rec.scores_json = sc.s;
    rec.uncertain = pr->uncertain;
    int64_t id = 0;
    int existed = 0;
    if (dn_store_insert(p->store, &rec, &id, &existed)) {
        /* not durable -> no answer with a prediction; the client may retry */
        snprintf(msg, sizeof msg, "prediction store unavailable: %s", dn_last_error());
        dn_pipeline_log(p, "%s", msg);
        job_fail(j, 503, msg);
        goto done;
    }
    if (existed) answer_duplicate(p, j, id, sha, &b);
    else answer_new(p, j, &rec, id, &b);
    if (j->code != 200) goto done;
    if (b.oom) { job_fail(j, 500, "out of memory"); goto done; }
    if (!existed) publish_committed(p, &rec, id, b.s);
    j->id = id;
    j->body = b.s;
    b.s = NULL;
done:
    dn_sb_free(&sc);
    dn_sb_free(&b);
}

/* Runs up to p->batch jobs on a worker: decode + preprocess each, one batched
 * forward, then store/actions/answer each. Sets every job's code/body. */
static void run_batch(worker *w, dn_job **jobs, int n) {
    dn_pipeline *p = w->p;
    dn_gen *g = dn_gen_acquire(&p->gens);
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
        dn_status rc = dn_image_decode(jobs[i]->req.data, jobs[i]->req.len, "image", &img);
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
    for (int k = 0; k < m; k++) {
        int good = 0;
        if (g->policy.good_threshold > 0) /* the stored policy: reject unless confidently good */
            good = dn_policy_decide(&g->policy, dn_model_threshold(g->model), w->probs + (size_t)k * nc, nc, &w->preds[k]);
        else if (g->policy.good >= 0)
            good = w->preds[k].cls == g->policy.good && !w->preds[k].uncertain && w->preds[k].decision != DN_DECISION_UNKNOWN;
        jobs[idx[k]]->accepted_good = g->policy.good >= 0 ? good : -1;
        finish_job(w, g, jobs[idx[k]], &w->preds[k], w->probs + (size_t)k * nc);
    }
done:
    dn_gen_release(&p->gens, g);
}

static void *worker_main(void *arg) {
    worker *w = arg;
    dn_pipeline *p = w->p;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->qhead && !p->stopping_workers) pthread_cond_wait(&p->qcond, &p->mu);
        if (!p->qhead) { pthread_mutex_unlock(&p->mu); break; }
        /* take what is waiting, up to a batch: no waiting for more (latency first) */
        dn_job *jobs[DN_SERVE_MAX_BATCH];
        int n = 0;
        while (p->qhead && n < p->batch) {
            dn_job *j = p->qhead;
            p->qhead = j->next;
            if (!p->qhead) p->qtail = NULL;
            p->qlen--;
            jobs[n++] = j;
        }
        pthread_cond_broadcast(&p->space);
        pthread_mutex_unlock(&p->mu);
        run_batch(w, jobs, n);
        pthread_mutex_lock(&p->mu);
        for (int i = 0; i < n; i++) {
            dn_job *j = jobs[i];
            j->done = 1;
            /* After the callback the submitter may free j: do not touch it again. */
            if (j->done_fn) j->done_fn(j->done_ctx);
        }
        pthread_cond_broadcast(&p->donecond);
        pthread_mutex_unlock(&p->mu);
    }
    dn_session_free(w->sess);
    free(w->probs);
    free(w->preds);
    w->sess = NULL;
    w->probs = NULL;
    w->preds = NULL;
    return NULL;
}

/* ------------------------------------------------------------ submitting */

dn_job *dn_job_new(const dn_classify_req *req, dn_job_done_fn done, void *ctx) {
    dn_job *j = dn_calloc(1, sizeof *j);
    if (!j) return NULL;
    j->req = *req;
    j->done_fn = done;
    j->done_ctx = ctx;
    return j;
}

void dn_job_free(dn_job *j) {
    if (!j) return;
    free(j->body);
    free(j);
}

int dn_pipeline_reserve(dn_pipeline *p) {
    pthread_mutex_lock(&p->mu);
    int ok = p->qlen + p->qreserved < p->qcap && !p->stopping_workers;
    if (ok) p->qreserved++;
    pthread_mutex_unlock(&p->mu);
    return ok ? 0 : -1;
}

/* Queue a job into a reserved slot (p->mu held). */
static void push_locked(dn_pipeline *p, dn_job *j) {
    p->qreserved--;
    j->next = NULL;
    if (p->qtail) p->qtail->next = j;
    else p->qhead = j;
    p->qtail = j;
    p->qlen++;
    pthread_cond_signal(&p->qcond);
}

void dn_pipeline_push(dn_pipeline *p, dn_job *j) {
    pthread_mutex_lock(&p->mu);
    push_locked(p, j);
    pthread_mutex_unlock(&p->mu);
}

int dn_job_finished(dn_pipeline *p, const dn_job *j) {
    pthread_mutex_lock(&p->mu);
    int done = j->done;
    pthread_mutex_unlock(&p->mu);
    return done;
}

void dn_job_result(dn_job *j, dn_classify_res *res) {
    memset(res, 0, sizeof *res);
    res->http_code = j->code;
    res->id = j->id;
    snprintf(res->cls, sizeof res->cls, "%s", j->cls);
    res->json = j->body;
    j->body = NULL;
}

dn_status dn_pipeline_classify(dn_pipeline *p, const dn_classify_req *req, dn_classify_res *res) {
    memset(res, 0, sizeof *res);
    dn_job j = {0};
    j.req = *req;
    pthread_mutex_lock(&p->mu);
    while (p->qlen + p->qreserved >= p->qcap && !p->stopping_workers) pthread_cond_wait(&p->space, &p->mu);
    if (p->stopping_workers) {
        pthread_mutex_unlock(&p->mu);
        return dn_fail(DN_ERR_ARG, "server is shutting down");
    }
    p->qreserved++;
    push_locked(p, &j);
    while (!j.done) pthread_cond_wait(&p->donecond, &p->mu);
    pthread_mutex_unlock(&p->mu);
    dn_job_result(&j, res);
    return DN_OK;
}

/* ------------------------------------------------------------ actions -> store */

static void outcome_cb(void *ctx, const dn_action_outcome *o) {
    dn_pipeline *p = ctx;
    dn_outcome_row r = {o->prediction_id, o->rule, o->kind, o->target, o->status, o->detail, o->attempts,
                        o->time > 0 ? o->time : wall_now()};
    if (dn_store_add_outcome(p->store, &r))
        dn_pipeline_log(p, "could not record action outcome for prediction %lld: %s", (long long)o->prediction_id,
                        dn_last_error());
    dn_metrics_action(p->metrics, o->kind, o->status);
    dn_pipeline_log(p, "action %s/%s for prediction %lld -> %s after %d attempt(s)%s%s", o->rule ? o->rule : "?",
                    o->kind ? o->kind : "?", (long long)o->prediction_id, o->status ? o->status : "?", o->attempts,
                    o->detail ? ": " : "", o->detail ? o->detail : "");
}

/* ------------------------------------------------------------ reload */

dn_status dn_pipeline_reload(dn_pipeline *p) {
    pthread_mutex_lock(&p->reload_mu);
    dn_gen *g = NULL;
    dn_rules *rules = NULL;
    dn_status rc = dn_gen_load(p->model_path, &g);
    if (!rc && p->good_class) rc = dn_policy_override_good(g->model, p->good_class, &g->policy);
    if (!rc && p->rules_path) rc = dn_rules_load(p->rules_path, &rules);
    if (!rc && p->actions) rc = dn_actions_set_rules(p->actions, rules);
    dn_rules_free(rules);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", dn_last_error());
        dn_gen_free(g);
        dn_metrics_reload(p->metrics, 0);
        dn_pipeline_log(p, "reload failed, keeping the current model and rules: %s", msg);
        pthread_mutex_unlock(&p->reload_mu);
        return dn_fail(rc, "reload: %s", msg);
    }
    dn_gen_slot_swap(&p->gens, g);
    dn_metrics_reload(p->metrics, 1);
    dn_metrics_expected(p->metrics, g->expected_escape, g->expected_false_reject);
    dn_pipeline_log(p, "reloaded model %s sha256=%s%s", g->version, g->sha, p->rules_path ? " and rules" : "");
    pthread_mutex_unlock(&p->reload_mu);
    return DN_OK;
}

/* ------------------------------------------------------------ open / close */

static char *dup_opt(const char *s, int *oom) {
    if (!s) return NULL;
    char *d = dn_strdup(s);
    if (!d) *oom = 1;
    return d;
}

/* Copies and checks the config (no files opened yet). */
static dn_status configure(dn_pipeline *p, const dn_pipeline_config *c) {
    int oom = 0;
    p->model_path = dup_opt(c->model_path, &oom);
    p->db_url = dup_opt(c->db_url ? c->db_url : "sqlite:defectnet.db", &oom);
    p->rules_path = dup_opt(c->rules_path, &oom);
    p->store_images = dup_opt(c->store_images, &oom);
    p->good_class = dup_opt(c->good_class, &oom);
    p->metrics = dn_metrics_new();
    if (oom || !p->metrics) return dn_fail(DN_ERR_NOMEM, "serve: out of memory");
    p->nworkers = c->workers > 0 ? c->workers : dn_num_cpus();
    if (p->nworkers > 256) p->nworkers = 256;
    p->qcap = c->queue > 0 ? c->queue : 4 * p->nworkers;
    p->session_threads = c->session_threads > 0 ? c->session_threads : 1;
    p->batch = c->batch > 0 ? (c->batch < DN_SERVE_MAX_BATCH ? c->batch : DN_SERVE_MAX_BATCH) : 4;
    p->dry_run = c->dry_run;
    p->quiet = c->quiet;
    if (p->store_images) {
        struct stat st;
        if (stat(p->store_images, &st) || !S_ISDIR(st.st_mode))
            return dn_fail(DN_ERR_IO, "%s: --store-images is not a directory", p->store_images);
    }
    return DN_OK;
}

dn_status dn_pipeline_open(const dn_pipeline_config *c, dn_pipeline **out) {
    *out = NULL;
    if (!c->model_path) return dn_fail(DN_ERR_ARG, "serve: --model is required");
    dn_pipeline *p = dn_calloc(1, sizeof *p);
    if (!p) return DN_ERR_NOMEM;
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->reload_mu, NULL);
    pthread_cond_init(&p->qcond, NULL);
    pthread_cond_init(&p->space, NULL);
    pthread_cond_init(&p->donecond, NULL);
    dn_status rc;
    if ((rc = configure(p, c))) goto fail;
    dn_gen *g = NULL;
    if ((rc = dn_gen_load(p->model_path, &g))) goto fail;
    if (p->good_class && (rc = dn_policy_override_good(g->model, p->good_class, &g->policy))) {
        char msg[600]; /* a copy: dn_fail rewrites the message buffer it would read from */
        snprintf(msg, sizeof msg, "%s", dn_last_error());
        dn_gen_free(g);
        rc = dn_fail(rc, "--good-class: %s", msg);
        goto fail;
    }
    dn_gen_slot_init(&p->gens, g);
    p->gens_init = 1;
    if (p->metrics) dn_metrics_expected(p->metrics, g->expected_escape, g->expected_false_reject);
    if ((rc = dn_store_open(p->db_url, &p->store))) goto fail;
    if (p->rules_path) {
        dn_rules *rules = NULL;
        if ((rc = dn_rules_load(p->rules_path, &rules))) goto fail;
        rc = dn_actions_new(rules, p->dry_run, outcome_cb, p, &p->actions);
        dn_rules_free(rules);
        if (rc) goto fail;
    }
    p->workers = dn_calloc((size_t)p->nworkers, sizeof *p->workers);
    if (!p->workers) { rc = DN_ERR_NOMEM; goto fail; }
    for (int i = 0; i < p->nworkers; i++) {
        p->workers[i].p = p;
        if (pthread_create(&p->workers[i].th, NULL, worker_main, &p->workers[i])) {
            rc = dn_fail(DN_ERR_NOMEM, "serve: cannot start worker thread");
            goto fail;
        }
        p->nstarted++;
    }
    *out = p;
    return DN_OK;
fail:;
    char keep[1024];
    snprintf(keep, sizeof keep, "%s", dn_last_error());
    dn_pipeline_close(p);
    return dn_fail(rc, "%s", keep);
}

void dn_pipeline_drain(dn_pipeline *p) {
    if (!p || p->drained) return;
    pthread_mutex_lock(&p->mu);
    p->stopping_workers = 1;
    pthread_cond_broadcast(&p->qcond);
    pthread_cond_broadcast(&p->space);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nstarted; i++) pthread_join(p->workers[i].th, NULL);
    p->drained = 1;
}

void dn_pipeline_close(dn_pipeline *p) {
    if (!p) return;
    dn_pipeline_drain(p);
    /* actions finish or fail (bounded, inside dn_actions_free); outcomes still reach the store */
    dn_actions_free(p->actions);
    dn_store_close(p->store);
    if (p->gens_init) dn_gen_slot_destroy(&p->gens);
    dn_metrics_free(p->metrics);
    free(p->workers);
    free(p->model_path);
    free(p->db_url);
    free(p->rules_path);
    free(p->store_images);
    free(p->good_class);
    pthread_cond_destroy(&p->qcond);
    pthread_cond_destroy(&p->space);
    pthread_cond_destroy(&p->donecond);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->reload_mu);
    free(p);
}
