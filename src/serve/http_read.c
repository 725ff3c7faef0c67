/* defectnet serve: the read-only HTTP endpoints (prediction listing and lookup, the
 * manufacturing report, /healthz with its extra reporters, /metrics, /v1/drift) and
 * the admin reload. Routing and the request lifecycle are http.c's. */
#include "serve/http_int.h"
#include "serve/mreport.h"
#include "serve/store.h"
#include "trust/drift.h"
#include "trust/shadow.h"
#include <stdlib.h>
#include <string.h>

int dn_server_add_health(dn_server *s, dn_health_fn fn, void *ctx) {
    int slot = -1;
    pthread_mutex_lock(&s->health_mu);
    for (int i = 0; i < DN_SERVER_MAX_HEALTH && slot < 0; i++)
        if (!s->health[i].fn) { s->health[i].fn = fn; s->health[i].ctx = ctx; slot = i; }
    pthread_mutex_unlock(&s->health_mu);
    return slot;
}

void dn_server_remove_health(dn_server *s, int slot) {
    if (slot < 0 || slot >= DN_SERVER_MAX_HEALTH) return;
    pthread_mutex_lock(&s->health_mu);
    s->health[slot].fn = NULL;
    pthread_mutex_unlock(&s->health_mu);
}

struct dn_pipeline *dn_server_pipeline(dn_server *s) { return s->pipe; }
struct dn_store *dn_server_store(dn_server *s) { return dn_pipeline_store(s->pipe); }
struct dn_metrics *dn_server_metrics(dn_server *s) { return s->metrics; }
int dn_server_port(const dn_server *s) { return s->port; }
dn_status dn_server_reload(dn_server *s) { return dn_pipeline_reload(s->pipe); }

/* ------------------------------------------------------------ endpoints */

enum MHD_Result handle_list(dn_server *s, struct MHD_Connection *c, req *r) {
    dn_pred_filter f = {0};
    f.limit = 100;
    const char *v;
    int ok = 1;
    if ((v = query(c, "from")) && dn_parse_time(v, "from", &f.from)) return send_err(s, c, r, 400, dn_last_error());
    if ((v = query(c, "to")) && dn_parse_time(v, "to", &f.to)) return send_err(s, c, r, 400, dn_last_error());
    if ((v = query(c, "limit")) && (f.limit = parse_i64(v, 1, 1000, &ok), !ok))
        return send_err(s, c, r, 400, "limit: expected an integer 1..1000");
    if ((v = query(c, "cursor")) && (f.after_id = parse_i64(v, 0, INT64_MAX, &ok), !ok))
        return send_err(s, c, r, 400, "cursor: expected the next_cursor of a previous page");
    f.line = query(c, "line");
    f.cls = query(c, "class");
    f.decision = query(c, "decision");
    if (f.decision && dn_decision_parse(f.decision) < 0)
        return send_err(s, c, r, 400, "decision: expected accepted, uncertain or unknown");
    dn_pred_row *rows = NULL;
    size_t n = 0;
    if (dn_store_list(dn_pipeline_store(s->pipe), &f, &rows, &n)) return send_err(s, c, r, 503, dn_last_error());
    dn_sb b = {0};
    dn_sb_puts(&b, "{\"predictions\":[");
    for (size_t i = 0; i < n; i++) {
        if (i) dn_sb_puts(&b, ",");
        dn_pred_row_json_open(&b, &rows[i]);
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
    dn_json_opt_str(b, "rule", o->rule, 0);
    dn_json_opt_str(b, "kind", o->kind, 1);
    dn_json_opt_str(b, "target", o->target, 1);
    dn_json_opt_str(b, "status", o->status, 1);
    dn_sb_printf(b, ",\"attempts\":%d,\"time\":%.6f", o->attempts, o->time);
    dn_json_opt_str(b, "detail", o->detail, 1);
    dn_sb_puts(b, "}");
    return 0;
}

enum MHD_Result handle_get(dn_server *s, struct MHD_Connection *c, req *r) {
    dn_store *st = dn_pipeline_store(s->pipe);
    dn_pred_row row;
    int found = 0;
    if (dn_store_get(st, r->get_id, &row, &found)) return send_err(s, c, r, 503, dn_last_error());
    if (!found) return send_err(s, c, r, 404, "no such prediction");
    dn_sb b = {0};
    dn_pred_row_json_open(&b, &row);
    dn_pred_row_clear(&row);
    dn_sb_puts(&b, ",\"actions\":[");
    oc_acc a = {&b, 0};
    if (dn_store_outcomes(st, r->get_id, oc_json, &a)) {
        dn_sb_free(&b);
        return send_err(s, c, r, 503, dn_last_error());
    }
    dn_sb_puts(&b, "]}\n");
    return send_json(s, c, r, 200, &b);
}

enum MHD_Result handle_report(dn_server *s, struct MHD_Connection *c, req *r) {
    dn_mreport_opts o = {0};
    const char *v;
    const char *fmt = query(c, "format");
    if (!fmt) fmt = "json";
    if (!dn_mreport_mime(fmt)) return send_err(s, c, r, 400, "format: expected csv, json or html");
    if ((v = query(c, "from")) && dn_parse_time(v, "from", &o.from)) return send_err(s, c, r, 400, dn_last_error());
    if ((v = query(c, "to")) && dn_parse_time(v, "to", &o.to)) return send_err(s, c, r, 400, dn_last_error());
    o.line = query(c, "line");
    o.group_by = query(c, "group_by");
    if (!o.group_by) o.group_by = query(c, "group-by");
    o.shifts = query(c, "shifts");
    o.ok_classes = s->ok_classes;
    /* a report scans the store and keeps an I/O thread busy: a few at a time, so the
     * other threads stay free for predictions and health checks */
    if (atomic_fetch_add(&s->reports, 1) >= s->report_slots) {
        atomic_fetch_sub(&s->reports, 1);
        return send_err(s, c, r, 503, "report busy: another report is being built, retry later");
    }
    dn_mreport *rep = NULL;
    dn_status rc = dn_mreport_build(dn_pipeline_store(s->pipe), &o, &rep);
    int code = rc == DN_ERR_ARG ? 400 : 503;
    dn_sb b = {0};
    if (!rc && (rc = dn_mreport_render(rep, fmt, &b))) code = 500;
    dn_mreport_free(rep);
    atomic_fetch_sub(&s->reports, 1);
    if (rc) {
        dn_sb_free(&b);
        return send_err(s, c, r, code, dn_last_error());
    }
    return send_resp(s, c, r, 200, dn_mreport_mime(fmt), b.s, b.len);
}

enum MHD_Result handle_health(dn_server *s, struct MHD_Connection *c, req *r) {
    dn_gen *g = dn_pipeline_gen_acquire(s->pipe);
    int ql, qcap;
    dn_pipeline_queue(s->pipe, &ql, &qcap);
    /* the database and the registered reporters (MQTT ingestion, result bus) */
    dn_sb extra = {0};
    int bad = dn_store_ping(dn_pipeline_store(s->pipe)) != DN_OK;
    dn_sb_puts(&extra, ",\"database\":");
    dn_sb_json_str(&extra, bad ? dn_last_error() : "ok");
    pthread_mutex_lock(&s->health_mu);
    for (int i = 0; i < DN_SERVER_MAX_HEALTH; i++)
        if (s->health[i].fn && s->health[i].fn(s->health[i].ctx, &extra)) bad = 1;
    pthread_mutex_unlock(&s->health_mu);
    dn_sb b = {0};
    dn_sb_puts(&b, bad ? "{\"status\":\"degraded\"" : "{\"status\":\"ok\"");
    if (extra.s) dn_sb_puts(&b, extra.s);
    dn_sb_free(&extra);
    dn_json_opt_str(&b, "model_sha256", g->sha, 1);
    dn_json_opt_str(&b, "model_version", g->version, 1);
    dn_sb_puts(&b, ",\"classes\":[");
    for (int i = 0; i < dn_model_num_classes(g->model); i++) {
        if (i) dn_sb_puts(&b, ",");
        dn_sb_json_str(&b, dn_model_class_name(g->model, i));
    }
    dn_sb_printf(&b, "],\"store\":\"%s\",\"workers\":%d,\"queue_depth\":%d,\"queue_capacity\":%d,\"rules\":%s}\n",
                 dn_store_backend(dn_pipeline_store(s->pipe)), dn_pipeline_workers(s->pipe), ql, qcap,
                 dn_pipeline_has_rules(s->pipe) ? "true" : "false");
    dn_pipeline_gen_release(s->pipe, g);
    return send_json(s, c, r, bad ? 503 : 200, &b);
}

enum MHD_Result handle_metrics(dn_server *s, struct MHD_Connection *c, req *r) {
    int ql, qcap;
    dn_pipeline_queue(s->pipe, &ql, &qcap);
    dn_sb b = {0};
    dn_metrics_render(s->metrics, ql, qcap, &b);
    dn_drift_metrics(dn_pipeline_drift(s->pipe), 0, &b, dn_metrics_label);
    dn_shadow_metrics(dn_pipeline_shadow(s->pipe), &b);
    if (b.oom) { dn_sb_free(&b); return send_err(s, c, r, 500, "out of memory"); }
    return send_resp(s, c, r, 200, "text/plain; version=0.0.4; charset=utf-8", b.s, b.len);
}

/* GET /v1/drift: the drift windows per line/camera (docs/drift.md). */
enum MHD_Result handle_drift(dn_server *s, struct MHD_Connection *c, req *r) {
    dn_sb b = {0};
    dn_drift_json(dn_pipeline_drift(s->pipe), 0, &b);
    return send_json(s, c, r, 200, &b);
}

enum MHD_Result handle_reload(dn_server *s, struct MHD_Connection *c, req *r) {
    if (dn_pipeline_reload(s->pipe)) return send_err(s, c, r, 500, dn_last_error());
    dn_gen *g = dn_pipeline_gen_acquire(s->pipe);
    dn_sb b = {0};
    dn_sb_puts(&b, "{\"status\":\"reloaded\"");
    dn_json_opt_str(&b, "model_sha256", g->sha, 1);
    dn_json_opt_str(&b, "model_version", g->version, 1);
    dn_sb_puts(&b, "}\n");
    dn_pipeline_gen_release(s->pipe, g);
    return send_json(s, c, r, 200, &b);
}

