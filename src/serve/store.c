/* Prediction store API over SQLite or PostgreSQL (see store.h for the contract): open/close,
 * writes (predictions, action outcomes) and reads (point reads on the write connection,
 * scans and listings on the reader connection). The SQL backends are in store_sql.c,
 * the schema migrations in store_schema.c (store_int.h). */
#include "serve/store_int.h"
#include "core/core.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- open/close */

/* Read-only open: the schema is checked, not migrated. No schema_version table:
 * not a prediction store; newer than this build: refused; before v3 (no node
 * column): readable, node reads as NULL. */
static dn_status check_schema_readonly(dn_store *s) {
    int64_t has = 0, have = 0;
    dn_status rc = dn_sq_run(s, s->backend == DN_SQ_PG
                                    ? "SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename = 'schema_version'"
                                    : "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
                             NULL, 0, dn_sq_first_int, &has);
    if (rc) return rc;
    if (!has) return dn_fail(DN_ERR_DB, "%s: not a defectnet prediction database (no schema_version table)", s->url);
    if ((rc = dn_sq_run(s, "SELECT max(version) FROM schema_version", NULL, 0, dn_sq_first_int, &have))) return rc;
    if (have < 1) return dn_fail(DN_ERR_DB, "%s: not a defectnet prediction database (empty schema_version)", s->url);
    if (have > DN_STORE_SCHEMA_VERSION)
        return dn_fail(DN_ERR_DB, "%s: database schema version %lld is newer than this build supports (%d)", s->url,
                       (long long)have, DN_STORE_SCHEMA_VERSION);
    s->no_node = have < 3;
    s->no_ood = have < 5;
    return DN_OK;
}

static dn_status store_open(const char *url, int readonly, dn_store **out) {
    *out = NULL;
    if (!url || !*url) return dn_fail(DN_ERR_ARG, "store: empty database URL");
    dn_store *s = dn_calloc(1, sizeof *s);
    if (!s) return DN_ERR_NOMEM;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->rmu, NULL);
    dn_status rc = readonly ? dn_sq_connect_readonly(s, url) : dn_sq_connect(s, url);
    if (rc) goto fail;
    pthread_mutex_lock(&s->mu);
    rc = readonly ? check_schema_readonly(s) : dn_store_migrate(s);
    pthread_mutex_unlock(&s->mu);
    if (rc) goto fail;
    *out = s;
    return DN_OK;
fail:
    dn_store_close(s);
    return rc;
}

dn_status dn_store_open(const char *url, dn_store **out) { return store_open(url, 0, out); }
dn_status dn_store_open_readonly(const char *url, dn_store **out) { return store_open(url, 1, out); }

void dn_store_close(dn_store *s) {
    if (!s) return;
    dn_sq_disconnect(s);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->rmu);
    free(s->url);
    free(s->conninfo);
    free(s->node);
    free(s);
}

dn_status dn_store_set_node(dn_store *s, const char *node) {
    char *n = NULL;
    if (node && !(n = dn_strdup(node))) return DN_ERR_NOMEM;
    pthread_mutex_lock(&s->mu);
    free(s->node);
    s->node = n;
    pthread_mutex_unlock(&s->mu);
    return DN_OK;
}

const char *dn_store_backend(const dn_store *s) { return s->backend == DN_SQ_PG ? "postgres" : "sqlite"; }

/* ---------------------------------------------------------------- writes */

static int valid_hex64(const char *h) {
    if (!h || strlen(h) != 64) return 0;
    for (int i = 0; i < 64; i++)
        if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f'))) return 0;
    return 1;
}

const char *dn_pred_record_decision(const dn_pred_record *r) {
    return r->decision == DN_DECISION_UNKNOWN ? "unknown" : r->uncertain ? "uncertain" : "accepted";
}

dn_status dn_store_insert(dn_store *s, const dn_pred_record *r, int64_t *id, int *existed) {
    *id = 0;
    if (existed) *existed = 0;
    if (!r->cls || !r->source || !r->model_sha256 || !r->scores_json)
        return dn_fail(DN_ERR_ARG, "%s: prediction record lacks class/source/model/scores", s->url);
    if (!valid_hex64(r->image_sha256))
        return dn_fail(DN_ERR_ARG, "%s: prediction record has no valid image sha256", s->url);
    qparam p[19] = {QD(r->time), QT(r->line), QT(r->station), QT(r->camera), QT(r->part),
                    QT(r->source), QT(r->source_path), QT(r->request_id), QT(r->image_sha256),
                    QT(r->image_copy), QT(r->model_sha256), QT(r->model_version), QT(r->cls),
                    QD(r->confidence), QT(r->scores_json), QT(dn_pred_record_decision(r)),
                    QT(s->node), r->ood_score && isfinite(*r->ood_score) ? QD(*r->ood_score) : QT(NULL), QT(r->heatmap)};
    pthread_mutex_lock(&s->mu);
    dn_status rc = dn_sq_run(s,
                         "INSERT INTO predictions(time, line, station, camera, part, source, source_path,"
                         " request_id, image_sha256, image_copy, model_sha256, model_version, class,"
                         " confidence, scores, decision, node, ood_score, heatmap) VALUES"
                         " ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19)"
                         " ON CONFLICT (request_id) DO NOTHING RETURNING id",
                         p, 19, dn_sq_first_int, id);
    if (!rc && *id == 0 && r->request_id) {
        qparam q[1] = {QT(r->request_id)};
        rc = dn_sq_run(s, "SELECT id FROM predictions WHERE request_id = $1", q, 1, dn_sq_first_int, id);
        if (!rc && *id == 0) rc = dn_fail(DN_ERR_DB, "%s: insert returned no id", s->url);
        if (!rc && existed) *existed = 1;
    } else if (!rc && *id == 0) {
        rc = dn_fail(DN_ERR_DB, "%s: insert returned no id", s->url);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc) *id = 0; /* RETURNING may have produced the id of a row whose commit then failed */
    return rc;
}

dn_status dn_store_add_outcome(dn_store *s, const dn_outcome_row *o) {
    if (!o->rule || !o->kind || !o->status)
        return dn_fail(DN_ERR_ARG, "%s: action outcome lacks rule/kind/status", s->url);
    qparam p[8] = {QI(o->prediction_id), QT(o->rule), QT(o->kind), QT(o->target),
                   QT(o->status), QI(o->attempts), QT(o->detail), QD(o->time)};
    pthread_mutex_lock(&s->mu);
    dn_status rc = dn_sq_run(s,
                         "INSERT INTO action_outcomes(prediction_id, rule, kind, target, status, attempts,"
                         " detail, time) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                         p, 8, NULL, NULL);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---------------------------------------------------------------- reads */

#define PRED_COLS_V1 "id, time, line, station, camera, part, source, source_path, request_id," \
                     " image_sha256, image_copy, model_sha256, model_version, class, confidence," \
                     " scores, decision"
#define PRED_COLS PRED_COLS_V1 ", node, ood_score, heatmap"
/* Same columns without the score vector (the bulk of a row), for aggregations. */
#define PRED_COLS_LIGHT_V1 "id, time, line, station, camera, part, source, source_path, request_id," \
                           " image_sha256, image_copy, model_sha256, model_version, class, confidence," \
                           " NULL, decision"

static char *dup_or_null(const char *s, int *oom) {
    if (!s) return NULL;
    char *d = dn_strdup(s);
    if (!d) *oom = 1;
    return d;
}

void dn_pred_row_clear(dn_pred_row *r) {
    if (!r) return;
    char **f[] = {&r->line, &r->station, &r->camera, &r->part, &r->source, &r->source_path,
                  &r->request_id, &r->image_sha256, &r->image_copy, &r->model_sha256,
                  &r->model_version, &r->cls, &r->scores_json, &r->decision, &r->node, &r->heatmap};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) { free(*f[i]); *f[i] = NULL; }
}

void dn_pred_rows_free(dn_pred_row *rows, size_t n) {
    if (!rows) return;
    for (size_t i = 0; i < n; i++) dn_pred_row_clear(&rows[i]);
    free(rows);
}

/* Fills r from the PRED_COLS columns (strings duplicated). Returns 0 or -1 on OOM. */
static int decode_row(const qrow *q, dn_pred_row *r) {
    int oom = 0;
    memset(r, 0, sizeof *r);
    r->id = dn_sq_int(q, 0);
    r->time = dn_sq_double(q, 1);
    r->line = dup_or_null(dn_sq_text(q, 2), &oom);
    r->station = dup_or_null(dn_sq_text(q, 3), &oom);
    r->camera = dup_or_null(dn_sq_text(q, 4), &oom);
    r->part = dup_or_null(dn_sq_text(q, 5), &oom);
    r->source = dup_or_null(dn_sq_text(q, 6), &oom);
    r->source_path = dup_or_null(dn_sq_text(q, 7), &oom);
    r->request_id = dup_or_null(dn_sq_text(q, 8), &oom);
    r->image_sha256 = dup_or_null(dn_sq_text(q, 9), &oom);
    r->image_copy = dup_or_null(dn_sq_text(q, 10), &oom);
    r->model_sha256 = dup_or_null(dn_sq_text(q, 11), &oom);
    r->model_version = dup_or_null(dn_sq_text(q, 12), &oom);
    r->cls = dup_or_null(dn_sq_text(q, 13), &oom);
    r->confidence = (float)dn_sq_double(q, 14);
    r->scores_json = dup_or_null(dn_sq_text(q, 15), &oom);
    r->decision = dup_or_null(dn_sq_text(q, 16), &oom);
    r->node = dup_or_null(dn_sq_text(q, 17), &oom);
    r->ood_score = dn_sq_text(q, 18) ? (float)dn_sq_double(q, 18) : NAN;
    r->heatmap = dup_or_null(dn_sq_text(q, 19), &oom);
    if (oom) { dn_pred_row_clear(r); return -1; }
    return 0;
}

/* WHERE clause + params for a filter. Returns number of params. */
static int build_where(const dn_pred_filter *f, char *sql, size_t n, qparam *p) {
    int np = 0;
    size_t len = strlen(sql);
    const char *kw = " WHERE ";
#define ADD(cond, param)                                                                  \
    do {                                                                                  \
        p[np] = param;                                                                    \
        np++;                                                                             \
        len += (size_t)snprintf(sql + len, n - len, "%s" cond, kw, np);                   \
        kw = " AND ";                                                                     \
    } while (0)
    if (f) {
        if (f->from > 0) ADD("time >= $%d", QD(f->from));
        if (f->to > 0) ADD("time < $%d", QD(f->to));
        if (f->line) ADD("line = $%d", QT(f->line));
        if (f->cls) ADD("class = $%d", QT(f->cls));
        if (f->decision) ADD("decision = $%d", QT(f->decision));
        if (f->after_id > 0) ADD("id > $%d", QI(f->after_id));
    }
#undef ADD
    return np;
}

typedef struct { dn_pred_row_fn fn; void *ctx; int oom; } scan_ctx;
static int scan_row(void *c, const qrow *q) {
    scan_ctx *sc = c;
    dn_pred_row r;
    if (decode_row(q, &r)) { sc->oom = 1; return 1; }
    int stop = sc->fn(sc->ctx, &r);
    dn_pred_row_clear(&r);
    return stop;
}

dn_status dn_store_scan(dn_store *s, const dn_pred_filter *f, dn_pred_row_fn fn, void *ctx) {
    char sql[1024];
    snprintf(sql, sizeof sql, "SELECT %s, %s FROM predictions", f && f->no_scores ? PRED_COLS_LIGHT_V1 : PRED_COLS_V1,
             s->no_node ? "NULL, NULL, NULL" : s->no_ood ? "node, NULL, NULL" : "node, ood_score, heatmap");
    /* a read-only store of schema < 3 has no node column, < 5 no ood_score/heatmap */
    qparam p[8];
    int np = build_where(f, sql, sizeof sql, p);
    size_t len = strlen(sql);
    len += (size_t)snprintf(sql + len, sizeof sql - len, " ORDER BY id");
    if (f && f->limit > 0) snprintf(sql + len, sizeof sql - len, " LIMIT %lld", (long long)f->limit);
    scan_ctx sc = {fn, ctx, 0};
    dn_status rc;
    pthread_mutex_lock(&s->rmu);
    if (dn_sq_open_reader(s) == 0) {
        rc = dn_sq_run_on(s, &s->r, sql, p, np, scan_row, &sc);
        pthread_mutex_unlock(&s->rmu);
    } else { /* no second connection: share the main one */
        pthread_mutex_unlock(&s->rmu);
        pthread_mutex_lock(&s->mu);
        rc = dn_sq_run(s, sql, p, np, scan_row, &sc);
        pthread_mutex_unlock(&s->mu);
    }
    if (!rc && sc.oom) rc = dn_fail(DN_ERR_NOMEM, "%s: out of memory reading predictions", s->url);
    return rc;
}

typedef struct { dn_pred_row *rows; size_t n, cap; int oom; } list_ctx;
static int list_row(void *c, const dn_pred_row *r) {
    list_ctx *l = c;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        dn_pred_row *nr = dn_realloc(l->rows, nc * sizeof *nr);
        if (!nr) { l->oom = 1; return 1; }
        l->rows = nr;
        l->cap = nc;
    }
    /* deep copy: the scan frees r after the callback */
    dn_pred_row *d = &l->rows[l->n];
    *d = *r;
    int oom = 0;
    d->line = dup_or_null(r->line, &oom);
    d->station = dup_or_null(r->station, &oom);
    d->camera = dup_or_null(r->camera, &oom);
    d->part = dup_or_null(r->part, &oom);
    d->source = dup_or_null(r->source, &oom);
    d->source_path = dup_or_null(r->source_path, &oom);
    d->request_id = dup_or_null(r->request_id, &oom);
    d->image_sha256 = dup_or_null(r->image_sha256, &oom);
    d->image_copy = dup_or_null(r->image_copy, &oom);
    d->model_sha256 = dup_or_null(r->model_sha256, &oom);
    d->model_version = dup_or_null(r->model_version, &oom);
    d->cls = dup_or_null(r->cls, &oom);
    d->scores_json = dup_or_null(r->scores_json, &oom);
    d->decision = dup_or_null(r->decision, &oom);
    d->node = dup_or_null(r->node, &oom);
    d->heatmap = dup_or_null(r->heatmap, &oom);
    l->n++;
    if (oom) { l->oom = 1; return 1; }
    return 0;
}

dn_status dn_store_list(dn_store *s, const dn_pred_filter *f, dn_pred_row **rows, size_t *n) {
    list_ctx l = {0};
    *rows = NULL;
    *n = 0;
    dn_status rc = dn_store_scan(s, f, list_row, &l);
    if (!rc && l.oom) rc = dn_fail(DN_ERR_NOMEM, "%s: out of memory listing predictions", s->url);
    if (rc) { dn_pred_rows_free(l.rows, l.n); return rc; }
    *rows = l.rows;
    *n = l.n;
    return DN_OK;
}

typedef struct { dn_pred_row *row; int found, oom; } get_ctx;
static int get_row(void *c, const qrow *q) {
    get_ctx *g = c;
    if (decode_row(q, g->row)) g->oom = 1;
    else g->found = 1;
    return 1;
}

dn_status dn_store_get(dn_store *s, int64_t id, dn_pred_row *row, int *found) {
    memset(row, 0, sizeof *row);
    *found = 0;
    get_ctx g = {row, 0, 0};
    qparam p[1] = {QI(id)};
    pthread_mutex_lock(&s->mu);
    dn_status rc = dn_sq_run(s, "SELECT " PRED_COLS " FROM predictions WHERE id = $1", p, 1, get_row, &g);
    pthread_mutex_unlock(&s->mu);
    if (!rc && g.oom) rc = dn_fail(DN_ERR_NOMEM, "%s: out of memory reading prediction", s->url);
    if (!rc) *found = g.found;
    return rc;
}

dn_status dn_store_ping(dn_store *s) {
    int64_t one = 0;
    pthread_mutex_lock(&s->mu);
    dn_status rc = dn_sq_run(s, "SELECT 1", NULL, 0, dn_sq_first_int, &one);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

dn_status dn_store_count(dn_store *s, const dn_pred_filter *f, int64_t *n) {
    char sql[1024] = "SELECT count(*) FROM predictions";
    qparam p[8];
    int np = build_where(f, sql, sizeof sql, p);
    *n = 0;
    pthread_mutex_lock(&s->mu);
    dn_status rc = dn_sq_run(s, sql, p, np, dn_sq_first_int, n);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

dn_status dn_store_find_source(dn_store *s, const char *source_path, const char *image_sha256, int64_t *id) {
    *id = 0;
    qparam p[2] = {QT(source_path), QT(image_sha256)};
    pthread_mutex_lock(&s->mu);
    dn_status rc = dn_sq_run(s, "SELECT id FROM predictions WHERE source_path = $1 AND image_sha256 = $2"
                            " ORDER BY id LIMIT 1", p, 2, dn_sq_first_int, id);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

typedef struct { dn_outcome_fn_row fn; void *ctx; } oc_ctx;
static int outcome_row(void *c, const qrow *q) {
    oc_ctx *oc = c;
    dn_outcome_row o = {dn_sq_int(q, 0), dn_sq_text(q, 1), dn_sq_text(q, 2), dn_sq_text(q, 3),
                        dn_sq_text(q, 4), dn_sq_text(q, 6), (int)dn_sq_int(q, 5), dn_sq_double(q, 7)};
    return oc->fn(oc->ctx, &o);
}

dn_status dn_store_outcomes(dn_store *s, int64_t prediction_id, dn_outcome_fn_row fn, void *ctx) {
    qparam p[1] = {QI(prediction_id)};
    oc_ctx oc = {fn, ctx};
    pthread_mutex_lock(&s->mu);
    dn_status rc = dn_sq_run(s, "SELECT prediction_id, rule, kind, target, status, attempts, detail, time"
                            " FROM action_outcomes WHERE prediction_id = $1 ORDER BY id",
                         p, 1, outcome_row, &oc);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

dn_status dn_store_count_outcomes(dn_store *s, const char *status, int64_t *n) {
    *n = 0;
    qparam p[1] = {QT(status)};
    pthread_mutex_lock(&s->mu);
    dn_status rc = status ? dn_sq_run(s, "SELECT count(*) FROM action_outcomes WHERE status = $1", p, 1, dn_sq_first_int, n)
                          : dn_sq_run(s, "SELECT count(*) FROM action_outcomes", NULL, 0, dn_sq_first_int, n);
    pthread_mutex_unlock(&s->mu);
    return rc;
}
