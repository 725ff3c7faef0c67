/* Review queue and shadow predictions in the store (see store_review.h). SQL shared
 * by SQLite and PostgreSQL through dn_sq_run (store_int.h). */
#include "serve/store_review.h"
#include "core/core.h"
#include "serve/store_int.h"
#include <stdlib.h>
#include <string.h>

dn_status dn_store_review_enqueue(dn_store *s, int64_t pred_id, const char *reason, const char *neighbours_json,
                                  double now, int cap_per_hour, int *queued) {
    if (queued) *queued = 0;
    if (!reason) return dn_fail(DN_ERR_ARG, "%s: review item without a reason", s->url);
    int64_t cap = cap_per_hour > 0 ? cap_per_hour : INT64_MAX, got = 0;
    qparam p[6] = {QI(pred_id), QT(reason), QD(now), QD(now - 3600.0), QI(cap), QT(neighbours_json)};
    pthread_mutex_lock(&s->mu);
    /* one statement: the cap check and the insert cannot interleave with another node's */
    dn_status rc = dn_sq_run(s,
                             "INSERT INTO review_items(prediction_id, reason, queued_at, status, neighbours)"
                             " SELECT CAST($1 AS BIGINT), CAST($2 AS TEXT), CAST($3 AS DOUBLE PRECISION), 'open',"
                             " CAST($6 AS TEXT)"
                             " WHERE (SELECT count(*) FROM review_items WHERE queued_at > $4) < $5"
                             " ON CONFLICT (prediction_id) DO NOTHING RETURNING prediction_id",
                             p, 6, dn_sq_first_int, &got);
    pthread_mutex_unlock(&s->mu);
    if (!rc && queued) *queued = got == pred_id;
    return rc;
}

typedef struct { dn_review_item *v; size_t n, cap; int oom; } items_acc;
static int item_row(void *ctx, const qrow *r) {
    items_acc *a = ctx;
    if (a->n == a->cap) {
        size_t nc = a->cap ? 2 * a->cap : 16;
        dn_review_item *nv = dn_realloc(a->v, nc * sizeof *nv);
        if (!nv) { a->oom = 1; return 1; }
        a->v = nv;
        a->cap = nc;
    }
    dn_review_item *it = &a->v[a->n++];
    memset(it, 0, sizeof *it);
    it->id = dn_sq_int(r, 0);
    const char *reason = dn_sq_text(r, 1);
    snprintf(it->reason, sizeof it->reason, "%s", reason ? reason : "");
    it->queued_at = dn_sq_double(r, 2);
    it->nlabels = (int)dn_sq_int(r, 3);
    const char *st = dn_sq_text(r, 4), *lb = dn_sq_text(r, 5), *nb = dn_sq_text(r, 6);
    it->final = st && !strcmp(st, "final");
    snprintf(it->label, sizeof it->label, "%s", lb ? lb : "");
    if (nb && !(it->neighbours = dn_strdup(nb))) { a->oom = 1; return 1; }
    return 0;
}

#define ITEM_COLS "r.prediction_id, r.reason, r.queued_at," \
    " (SELECT count(*) FROM review_labels l WHERE l.prediction_id = r.prediction_id)," \
    " r.status, r.label, r.neighbours"

void dn_review_items_free(dn_review_item *items, size_t n) {
    if (!items) return;
    for (size_t i = 0; i < n; i++) free(items[i].neighbours);
    free(items);
}

dn_status dn_store_review_get(dn_store *s, int64_t id, dn_review_item *it, int *found) {
    memset(it, 0, sizeof *it);
    *found = 0;
    items_acc a = {0};
    qparam p[1] = {QI(id)};
    pthread_mutex_lock(&s->mu);
    dn_status rc = dn_sq_run(s, "SELECT " ITEM_COLS " FROM review_items r WHERE r.prediction_id = $1", p, 1, item_row, &a);
    pthread_mutex_unlock(&s->mu);
    if (!rc && a.oom) rc = dn_fail(DN_ERR_NOMEM, "%s: out of memory reading a review item", s->url);
    if (!rc && a.n) {
        *it = a.v[0];
        *found = 1;
        a.v[0].neighbours = NULL;
    }
    dn_review_items_free(a.v, a.n);
    return rc;
}

dn_status dn_store_review_next(dn_store *s, int n, const char *reviewer, dn_review_item **items, size_t *count) {
    *items = NULL;
    *count = 0;
    if (n < 1) return DN_OK;
    items_acc a = {0};
    qparam p[2] = {QT(reviewer), QI(n)};
    pthread_mutex_lock(&s->mu);
    dn_status rc = dn_sq_run(s,
                             "SELECT " ITEM_COLS " FROM review_items r WHERE r.status = 'open'"
                             " AND (CAST($1 AS TEXT) IS NULL OR NOT EXISTS (SELECT 1 FROM review_labels l"
                             "  WHERE l.prediction_id = r.prediction_id AND l.reviewer = $1))"
                             " ORDER BY CASE r.reason WHEN 'unknown' THEN 0 WHEN 'uncertain' THEN 1"
                             "  WHEN 'class' THEN 2 ELSE 3 END, r.prediction_id LIMIT $2",
                             p, 2, item_row, &a);
    pthread_mutex_unlock(&s->mu);
    if (!rc && a.oom) rc = dn_fail(DN_ERR_NOMEM, "%s: out of memory reading the review queue", s->url);
    if (rc) { dn_review_items_free(a.v, a.n); return rc; }
    *items = a.v;
    *count = a.n;
    return DN_OK;
}

typedef struct { char status[16], label[128]; int found; } item_state;
static int state_row(void *ctx, const qrow *r) {
    item_state *st = ctx;
    const char *a = dn_sq_text(r, 0), *b = dn_sq_text(r, 1);
    snprintf(st->status, sizeof st->status, "%s", a ? a : "");
    snprintf(st->label, sizeof st->label, "%s", b ? b : "");
    st->found = 1;
    return 1;
}

typedef struct { char top[128]; int top_votes, mine, distinct; const char *posted; } tally;
static int tally_row(void *ctx, const qrow *r) {
    tally *t = ctx;
    const char *l = dn_sq_text(r, 0);
    int c = (int)dn_sq_int(r, 1);
    t->distinct++;
    if (l && !strcmp(l, t->posted)) t->mine = c;
    if (l && c > t->top_votes) { /* ordered by count desc, label: the first is the top */
        t->top_votes = c;
        snprintf(t->top, sizeof t->top, "%s", l);
    }
    return 0;
}

dn_status dn_store_review_label(dn_store *s, int64_t id, const char *label, const char *reviewer, double now,
                                int agree, dn_review_outcome *out) {
    memset(out, 0, sizeof *out);
    if (!label || !reviewer) return dn_fail(DN_ERR_ARG, "%s: review label without label/reviewer", s->url);
    if (agree < 1) agree = 1;
    int pg = s->backend == DN_SQ_PG;
    item_state st = {0};
    tally t = {0};
    t.posted = label;
    qparam pid[1] = {QI(id)};
    qparam pl[4] = {QI(id), QT(label), QT(reviewer), QD(now)};
    pthread_mutex_lock(&s->mu);
    dn_status rc = dn_sq_exec(s, pg ? "BEGIN" : "BEGIN IMMEDIATE");
    if (rc) goto out;
    if ((rc = dn_sq_run(s, pg ? "SELECT status, label FROM review_items WHERE prediction_id = $1 FOR UPDATE"
                              : "SELECT status, label FROM review_items WHERE prediction_id = $1",
                        pid, 1, state_row, &st)))
        goto fail;
    if (!st.found || !strcmp(st.status, "final")) {
        out->found = st.found;
        if (st.found) {
            out->was_final = out->final = 1;
            snprintf(out->label, sizeof out->label, "%s", st.label);
        }
        rc = dn_sq_exec(s, "COMMIT");
        goto out;
    }
    out->found = 1;
    if ((rc = dn_sq_run(s,
                        "INSERT INTO review_labels(prediction_id, label, reviewer, time) VALUES ($1, $2, $3, $4)"
                        " ON CONFLICT (prediction_id, reviewer) DO UPDATE SET label = excluded.label, time = excluded.time",
                        pl, 4, NULL, NULL)))
        goto fail;
    if ((rc = dn_sq_run(s, "SELECT label, count(*) FROM review_labels WHERE prediction_id = $1"
                           " GROUP BY label ORDER BY count(*) DESC, label",
                        pid, 1, tally_row, &t)))
        goto fail;
    out->votes = t.mine;
    out->distinct = t.distinct;
    if (t.top_votes >= agree) {
        qparam pf[3] = {QI(id), QT(t.top), QD(now)};
        if ((rc = dn_sq_run(s, "UPDATE review_items SET status = 'final', label = $2, final_at = $3"
                               " WHERE prediction_id = $1", pf, 3, NULL, NULL)))
            goto fail;
        out->final = 1;
        snprintf(out->label, sizeof out->label, "%s", t.top);
    }
    rc = dn_sq_exec(s, "COMMIT");
    if (rc) goto fail;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
fail:;
    char keep[1024];
    snprintf(keep, sizeof keep, "%s", dn_last_error());
    dn_sq_exec(s, "ROLLBACK");
    pthread_mutex_unlock(&s->mu);
    memset(out, 0, sizeof *out);
    return dn_fail(rc, "%s", keep);
}

typedef struct { dn_review_label_fn fn; void *ctx; } labels_ctx;
static int label_row(void *ctx, const qrow *r) {
    labels_ctx *c = ctx;
    return c->fn(c->ctx, dn_sq_text(r, 0), dn_sq_text(r, 1), dn_sq_double(r, 2));
}

dn_status dn_store_review_labels(dn_store *s, int64_t id, dn_review_label_fn fn, void *ctx) {
    labels_ctx c = {fn, ctx};
    qparam p[1] = {QI(id)};
    pthread_mutex_lock(&s->mu);
    dn_status rc = dn_sq_run(s, "SELECT label, reviewer, time FROM review_labels WHERE prediction_id = $1"
                                " ORDER BY time, id", p, 1, label_row, &c);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

typedef struct { int64_t *v; size_t n, cap; int oom; } ids_acc;
static int id_row(void *ctx, const qrow *r) {
    ids_acc *a = ctx;
    if (a->n == a->cap) {
        size_t nc = a->cap ? 2 * a->cap : 16;
        int64_t *nv = dn_realloc(a->v, nc * sizeof *nv);
        if (!nv) { a->oom = 1; return 1; }
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n++] = dn_sq_int(r, 0);
    return 0;
}

dn_status dn_store_review_disagreements(dn_store *s, int limit, int64_t **ids, size_t *count) {
    *ids = NULL;
    *count = 0;
    ids_acc a = {0};
    qparam p[1] = {QI(limit > 0 ? limit : 100)};
    pthread_mutex_lock(&s->mu);
    dn_status rc = dn_sq_run(s,
                             "SELECT l.prediction_id FROM review_labels l JOIN review_items r"
                             " ON r.prediction_id = l.prediction_id WHERE r.status = 'open'"
                             " GROUP BY l.prediction_id HAVING count(DISTINCT l.label) > 1"
                             " ORDER BY l.prediction_id LIMIT $1",
                             p, 1, id_row, &a);
    pthread_mutex_unlock(&s->mu);
    if (!rc && a.oom) rc = dn_fail(DN_ERR_NOMEM, "%s: out of memory listing disagreements", s->url);
    if (rc) { free(a.v); return rc; }
    *ids = a.v;
    *count = a.n;
    return DN_OK;
}

typedef struct { dn_review_final_fn fn; void *ctx; } final_ctx;
static int final_row(void *ctx, const qrow *r) {
    final_ctx *c = ctx;
    return c->fn(c->ctx, dn_sq_int(r, 0), dn_sq_text(r, 1), dn_sq_text(r, 2), dn_sq_text(r, 3), dn_sq_text(r, 4),
                 dn_sq_double(r, 5));
}

dn_status dn_store_review_scan_final(dn_store *s, dn_review_final_fn fn, void *ctx) {
    final_ctx c = {fn, ctx};
    pthread_mutex_lock(&s->mu);
    dn_status rc = dn_sq_run(s,
                             "SELECT r.prediction_id, r.label, p.image_copy, p.image_sha256, p.class, r.final_at"
                             " FROM review_items r JOIN predictions p ON p.id = r.prediction_id"
                             " WHERE r.status = 'final' ORDER BY r.prediction_id",
                             NULL, 0, final_row, &c);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

dn_status dn_store_review_counts(dn_store *s, int64_t *open, int64_t *final) {
    *open = *final = 0;
    pthread_mutex_lock(&s->mu);
    dn_status rc = dn_sq_run(s, "SELECT count(*) FROM review_items WHERE status = 'open'", NULL, 0, dn_sq_first_int, open);
    if (!rc) rc = dn_sq_run(s, "SELECT count(*) FROM review_items WHERE status = 'final'", NULL, 0, dn_sq_first_int, final);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

dn_status dn_store_shadow_insert(dn_store *s, int64_t pred_id, const dn_shadow_record *r) {
    if (!r->model_sha256 || !r->cls || !r->scores_json || !r->decision)
        return dn_fail(DN_ERR_ARG, "%s: shadow record lacks model/class/scores/decision", s->url);
    qparam p[8] = {QI(pred_id), QT(r->model_sha256), QT(r->model_version), QT(r->cls), QD(r->confidence),
                   QT(r->scores_json), QT(r->decision), QD(r->time)};
    pthread_mutex_lock(&s->mu);
    dn_status rc = dn_sq_run(s,
                             "INSERT INTO shadow_predictions(prediction_id, model_sha256, model_version, class,"
                             " confidence, scores, decision, time) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)"
                             " ON CONFLICT (prediction_id) DO NOTHING",
                             p, 8, NULL, NULL);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

typedef struct { dn_shadow_fn fn; void *ctx; } shadow_ctx;
static int shadow_row(void *ctx, const qrow *r) {
    shadow_ctx *c = ctx;
    dn_shadow_pair p = {dn_sq_int(r, 0), dn_sq_double(r, 1), dn_sq_text(r, 2), dn_sq_text(r, 3), dn_sq_text(r, 4),
                        dn_sq_text(r, 5), dn_sq_text(r, 6), dn_sq_text(r, 7), dn_sq_text(r, 8),
                        (float)dn_sq_double(r, 9), (float)dn_sq_double(r, 10)};
    return c->fn(c->ctx, &p);
}

dn_status dn_store_shadow_scan(dn_store *s, double from, double to, dn_shadow_fn fn, void *ctx) {
    shadow_ctx c = {fn, ctx};
    qparam p[2] = {QD(from > 0 ? from : -1e300), QD(to > 0 ? to : 1e300)};
    const char *sql = "SELECT p.id, p.time, p.line, p.class, p.decision, p.model_version, sh.class, sh.decision,"
                      " sh.model_version, p.confidence, sh.confidence"
                      " FROM shadow_predictions sh JOIN predictions p ON p.id = sh.prediction_id"
                      " WHERE p.time >= $1 AND p.time < $2 ORDER BY p.id";
    dn_status rc;
    /* a long scan (reports, compare) runs on the scan connection when there is one */
    pthread_mutex_lock(&s->rmu);
    if (dn_sq_open_reader(s) == 0) {
        rc = dn_sq_run_on(s, &s->r, sql, p, 2, shadow_row, &c);
        pthread_mutex_unlock(&s->rmu);
    } else {
        pthread_mutex_unlock(&s->rmu);
        pthread_mutex_lock(&s->mu);
        rc = dn_sq_run(s, sql, p, 2, shadow_row, &c);
        pthread_mutex_unlock(&s->mu);
    }
    return rc;
}
