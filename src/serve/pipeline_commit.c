/* One classified image becomes a durable prediction: image copy, commit to the store
 * (before any answer exists), actions, metrics, results bus / Kafka, and the JSON
 * answer (also the JSON helpers http.c shares). */
#include "serve/pipeline_int.h"

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
    if (isfinite(r->ood_score)) dn_sb_printf(b, ",\"ood_score\":%.6g", (double)r->ood_score);
    else dn_sb_puts(b, ",\"ood_score\":null");
    dn_json_opt_str(b, "line", r->line, 1);
    dn_json_opt_str(b, "station", r->station, 1);
    dn_json_opt_str(b, "camera", r->camera, 1);
    dn_json_opt_str(b, "part", r->part, 1);
    dn_json_opt_str(b, "source", r->source, 1);
    dn_json_opt_str(b, "source_path", r->source_path, 1);
    dn_json_opt_str(b, "request_id", r->request_id, 1);
    dn_json_opt_str(b, "image_sha256", r->image_sha256, 1);
    dn_json_opt_str(b, "image_copy", r->image_copy, 1);
    dn_json_opt_str(b, "heatmap", r->heatmap, 1);
    dn_json_opt_str(b, "model_sha256", r->model_sha256, 1);
    dn_json_opt_str(b, "model_version", r->model_version, 1);
    dn_json_opt_str(b, "node", r->node, 1);
}

static const char *image_ext(const uint8_t *d, size_t n) {
    if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return "jpg";
    if (n >= 8 && !memcmp(d, "\x89PNG", 4)) return "png";
    if (n >= 2 && d[0] == 'B' && d[1] == 'M') return "bmp";
    if (n >= 2 && d[0] == 'P' && d[1] >= '1' && d[1] <= '6') return "pnm";
    return "img";
}

/* Writes d to path in directory sub (created) through a temporary file (fsync'ed,
 * atomic rename); an existing file (same content by construction) is kept. */
static dn_status write_once(const char *sub, const char *path, const uint8_t *d, size_t n) {
    char tmp[1300];
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

/* The image copy <dir>/<sha[0:2]>/<sha>.<ext>. */
static dn_status store_copy(dn_pipeline *p, const char *sha, const uint8_t *d, size_t n, char *path, size_t pn) {
    char sub[1024];
    snprintf(sub, sizeof sub, "%s/%.2s", p->store_images, sha);
    snprintf(path, pn, "%s/%s.%s", sub, sha, image_ext(d, n));
    return write_once(sub, path, d, n);
}

/* The heatmap of job j beside its image copy: <dir>/<sha[0:2]>/<sha>.<model sha[0:12]>.cam.png. */
static dn_status store_heatmap(dn_pipeline *p, const dn_job *j, const char *sha, const char *model_sha, char *path,
                               size_t pn) {
    char sub[1024];
    snprintf(sub, sizeof sub, "%s/%.2s", p->store_images, sha);
    snprintf(path, pn, "%s/%s.%.12s.cam.png", sub, sha, model_sha);
    return write_once(sub, path, j->heat_png, j->heat_len);
}

void dn_job_fail(dn_job *j, int code, const char *msg) {
    dn_sb b = {0};
    dn_json_error(&b, code, msg);
    j->code = code;
    j->body = b.s;
}

/* {"class":prob,...} of one image. */
void dn_pipeline_scores_json(dn_sb *sc, const dn_gen *g, const float *probs) {
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
        dn_job_fail(j, 503, msg);
        return;
    }
    if (row.image_sha256 && strcmp(row.image_sha256, sha)) {
        snprintf(msg, sizeof msg, "request id '%s' was already used for a different image (prediction %lld)",
                 j->req.request_id ? j->req.request_id : "", (long long)id);
        dn_pred_row_clear(&row);
        dn_job_fail(j, 409, msg);
        return;
    }
    dn_pred_row_json_open(b, &row);
    dn_sb_puts(b, ",\"duplicate\":true,\"actions_fired\":0}\n");
    snprintf(j->cls, sizeof j->cls, "%s", row.cls ? row.cls : "");
    dn_pred_row_clear(&row);
    j->code = 200;
}

/* The answer to a new prediction (just committed as id): fires its actions. */
static void answer_new(dn_pipeline *p, dn_job *j, const dn_pred_record *rec, int64_t id, const dn_drift_obs *drift,
                       dn_sb *b) {
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
    row.decision = (char *)dn_pred_record_decision(rec);
    row.ood_score = rec->ood_score ? *rec->ood_score : NAN;
    row.heatmap = (char *)rec->heatmap;
    dn_pred_row_json_open(b, &row);
    dn_sb_puts(b, "}");
    int fired = 0;
    if (p->actions && !b->oom) {
        dn_pred_event ev = {.id = id, .time = rec->time, .line = rec->line, .station = rec->station,
                            .camera = rec->camera, .part = rec->part, .cls = rec->cls,
                            .confidence = rec->confidence, .uncertain = rec->uncertain, .json = b->s,
                            .decision = dn_decision_parse(dn_pred_record_decision(rec)),
                            .ood_score = rec->ood_score ? *rec->ood_score : NAN,
                            /* drift rule conditions: this camera's window before/after it */
                            .drift_prev = drift->prev, .drift_now = drift->now};
        fired = dn_actions_submit(p->actions, &ev);
    }
    if (!b->oom) { /* reopen the object to add the action count */
        b->len--;
        b->s[b->len] = 0;
    }
    dn_sb_printf(b, ",\"duplicate\":false,\"actions_fired\":%d}\n", fired);
    dn_metrics_prediction(p->metrics, rec->cls, dn_pred_record_decision(rec), rec->ood_score ? *rec->ood_score : NAN);
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
                       .decision = dn_decision_parse(dn_pred_record_decision(rec)),
                       .ood_score = rec->ood_score ? *rec->ood_score : NAN, .json = json};
    if (dn_bus_publish_result(bus, &r, 2000)) {
        atomic_fetch_add(&p->bus_failures, 1);
        dn_pipeline_log(p, "results bus: prediction %lld not published: %s", (long long)id, dn_last_error());
    }
}

/* A new prediction into the review queue (when the policy picks it) and through the
 * shadow model (--shadow). Best effort: the prediction is durable already, so failures
 * are logged, never answered. feat: the image's pooled features (neighbours), may be NULL. */
static void review_and_shadow(worker *w, dn_gen *g, const dn_job *j, const dn_prediction *pr, double time, int64_t id,
                              const float *feat) {
    dn_pipeline *p = w->p;
    if (dn_review_after_commit(&p->review, p->store, g->model, id, pr, time, feat))
        dn_pipeline_log(p, "review queue: prediction %lld not queued: %s", (long long)id, dn_last_error());
    if (p->shadow) dn_shadow_submit(p->shadow, j->req.data, j->req.len, id); /* queued or counted as dropped */
}

/* After classification: image copy, commit to the store, actions, answer. */
/* feat: the image's pooled features (drift monitor). */
void dn_pipeline_finish_job(worker *w, dn_gen *g, dn_job *j, const dn_prediction *pr, const float *probs, const float *feat) {
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
        dn_job_fail(j, 503, msg);
        goto done;
    }
    dn_pipeline_scores_json(&sc, g, probs);
    if (sc.oom) { dn_job_fail(j, 500, "out of memory"); goto done; }
    dn_pred_record rec = {0};
    rec.time = dn_wall_now();
    rec.line = j->req.line;
    rec.station = j->req.station;
    rec.camera = j->req.camera;
    rec.part = j->req.part;
    rec.source = j->req.source ? j->req.source : "http";
    rec.source_path = j->req.source_path;
    rec.request_id = j->req.request_id;
    rec.image_sha256 = sha;
    rec.image_copy = copy[0] ? copy : NULL;
    char heat[1300] = "";
    if (j->heat_png && copy[0] && store_heatmap(p, j, sha, g->sha, heat, sizeof heat)) {
        dn_pipeline_log(p, "heatmap not stored: %s", dn_last_error());
        heat[0] = 0;
    }
    rec.heatmap = heat[0] ? heat : NULL;
    rec.model_sha256 = g->sha;
    rec.model_version = g->version;
    rec.cls = dn_model_class_name(g->model, pr->cls);
    rec.confidence = pr->confidence;
    rec.scores_json = sc.s;
    rec.uncertain = pr->uncertain;
    rec.decision = pr->decision;
    rec.ood_score = isfinite(pr->ood_score) ? &pr->ood_score : NULL;
    int64_t id = 0;
    int existed = 0;
    if (dn_store_insert(p->store, &rec, &id, &existed)) {
        /* not durable -> no answer with a prediction; the client may retry */
        snprintf(msg, sizeof msg, "prediction store unavailable: %s", dn_last_error());
        dn_pipeline_log(p, "%s", msg);
        dn_job_fail(j, 503, msg);
        goto done;
    }
    if (existed) answer_duplicate(p, j, id, sha, &b);
    else {
        dn_drift_obs dob;
        dn_drift_observe(p->drift, g->model, rec.line, rec.camera, rec.time, pr, feat, &dob);
        answer_new(p, j, &rec, id, &dob, &b);
    }
    if (j->code != 200) goto done;
    if (b.oom) { dn_job_fail(j, 500, "out of memory"); goto done; }
    if (!existed) publish_committed(p, &rec, id, b.s);
    if (!existed) review_and_shadow(w, g, j, pr, rec.time, id, feat);
    j->id = id;
    j->body = b.s;
    b.s = NULL;
done:
    free(j->heat_png); /* written (or not) by now */
    j->heat_png = NULL;
    dn_sb_free(&sc);
    dn_sb_free(&b);
}
