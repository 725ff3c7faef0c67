/* Prediction store over SQLite or PostgreSQL (see store.h for the contract).
 *
 * Both backends share the SQL below: statements are written with $N placeholders
 * (PostgreSQL syntax) and rewritten to ?N for SQLite. Parameters are typed (text,
 * double, int64, NULL); PostgreSQL receives them in text form with full precision.
 *
 * Durability: SQLite runs in WAL mode with synchronous=FULL, so a commit has been
 * fsync'ed to the WAL before dn_store_insert returns. (synchronous=NORMAL would
 * survive a process crash such as kill -9 but could lose the last commits on power
 * loss; a factory audit log wants the stronger guarantee, and the WAL keeps the
 * cost at one fsync per prediction.) PostgreSQL commits are durable per its own
 * configuration (synchronous_commit=on by default). */
#include "serve/store.h"
#include "core/core.h"
#include <postgresql/libpq-fe.h> /* Debian puts libpq under postgresql/ */
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { B_SQLITE = 1, B_PG = 2 };

/* One database connection (exactly one of db / pg is used, by backend). */
typedef struct conn {
    sqlite3 *db;
    PGconn *pg;
} conn;

struct dn_store {
    int backend;
    char *url;           /* for error messages (PostgreSQL password removed) */
    char *conninfo;      /* what was connected to (PostgreSQL URL with timeout / SQLite path) */
    conn w;              /* writes and point reads, under mu */
    conn r;              /* scans (reports, listings), under rmu: opened on first use so a
                            long report never holds up the inserts of predictions */
    int r_failed;
    char *node;          /* recorded with every insert (dn_store_set_node), NULL = none */
    pthread_mutex_t mu, rmu;
};

/* --------------------------------------------------------------- params/rows */

enum { P_NULL, P_TEXT, P_DBL, P_INT };
typedef struct { int t; const char *s; double d; int64_t i; } qparam;
#define QT(x) ((qparam){(x) ? P_TEXT : P_NULL, (x), 0, 0})
#define QD(x) ((qparam){P_DBL, NULL, (x), 0})
#define QI(x) ((qparam){P_INT, NULL, 0, (x)})

/* A result row being visited: exactly one of st / res is set. */
typedef struct {
    sqlite3_stmt *st;
    PGresult *res;
    int row;
} qrow;

static const char *col_text(const qrow *r, int i) {
    if (r->st) return (const char *)sqlite3_column_text(r->st, i);
    if (PQgetisnull(r->res, r->row, i)) return NULL;
    return PQgetvalue(r->res, r->row, i);
}
static double col_double(const qrow *r, int i) {
    if (r->st) return sqlite3_column_double(r->st, i);
    const char *s = col_text(r, i);
    return s ? strtod(s, NULL) : 0.0;
}
static int64_t col_int(const qrow *r, int i) {
    if (r->st) return sqlite3_column_int64(r->st, i);
    const char *s = col_text(r, i);
    return s ? strtoll(s, NULL, 10) : 0;
}

typedef int (*row_fn)(void *ctx, const qrow *r);

/* Errors that say "not now" rather than "never": the disk or its quota is full, an
 * I/O error, the database is locked/busy or out of memory. Nothing was committed and
 * the same request may succeed later, so the caller gets DN_ERR_BUSY (HTTP 503 +
 * Retry-After) instead of DN_ERR_DB. */
static dn_status sqlite_status(int e) {
    switch (e & 0xff) {
    case SQLITE_FULL: case SQLITE_IOERR: case SQLITE_BUSY: case SQLITE_LOCKED:
    case SQLITE_NOMEM: case SQLITE_PROTOCOL: case SQLITE_CANTOPEN:
        return DN_ERR_BUSY;
    default:
        return DN_ERR_DB;
    }
}
/* SQLSTATE classes 08 (connection), 40 (rollback: serialization/deadlock), 53
 * (insufficient resources: disk full, out of memory, too many connections), 57
 * (operator intervention: shutdown) and 58 (system/I/O error) are retryable. */
static dn_status pg_status(const char *sqlstate) {
    static const char *const retry[] = {"08", "40", "53", "57", "58"};
    if (!sqlstate || strlen(sqlstate) < 2) return DN_ERR_DB;
    for (size_t i = 0; i < sizeof retry / sizeof retry[0]; i++)
        if (!strncmp(sqlstate, retry[i], 2)) return DN_ERR_BUSY;
    return DN_ERR_DB;
}

/* Rewrites $N placeholders to ?N for SQLite. Caller frees. */
static char *sqlite_sql(const char *sql) {
    char *out = dn_strdup(sql);
    if (!out) return NULL;
    for (char *p = out; *p; p++)
        if (*p == '$' && p[1] >= '0' && p[1] <= '9') *p = '?';
    return out;
}

static void pg_trim_error(char *buf, size_t n, const char *msg) {
    snprintf(buf, n, "%s", msg ? msg : "unknown error");
    size_t l = strlen(buf);
    while (l && (buf[l - 1] == '\n' || buf[l - 1] == ' ')) buf[--l] = 0;
}

/* Runs one statement on connection cn; fn (may be NULL) sees each result row;
 * fn != 0 stops. The caller holds the mutex guarding cn. */
static dn_status q_run_c(dn_store *s, conn *cn, const char *sql, const qparam *p, int np, row_fn fn, void *ctx) {
    if (s->backend == B_SQLITE) {
        char *q = sqlite_sql(sql);
        if (!q) return DN_ERR_NOMEM;
        sqlite3_stmt *st = NULL;
        dn_status rc = DN_OK;
        int was_auto = sqlite3_get_autocommit(cn->db), e;
        if ((e = sqlite3_prepare_v2(cn->db, q, -1, &st, NULL)) != SQLITE_OK) {
            rc = dn_fail(sqlite_status(e), "%s: %s", s->url, sqlite3_errmsg(cn->db));
            goto out;
        }
        for (int i = 0; i < np; i++) {
            e = SQLITE_OK;
            switch (p[i].t) {
            case P_NULL: e = sqlite3_bind_null(st, i + 1); break;
            case P_TEXT: e = sqlite3_bind_text(st, i + 1, p[i].s, -1, SQLITE_STATIC); break;
            case P_DBL: e = sqlite3_bind_double(st, i + 1, p[i].d); break;
            case P_INT: e = sqlite3_bind_int64(st, i + 1, p[i].i); break;
            }
            if (e != SQLITE_OK) {
                rc = dn_fail(sqlite_status(e), "%s: bind: %s", s->url, sqlite3_errmsg(cn->db));
                goto out;
            }
        }
        /* A statement that writes is stepped to SQLITE_DONE even after fn has what it
         * wants: outside a transaction its commit happens in that last step (INSERT ...
         * RETURNING hands out its row before), and a failed commit (disk full, I/O error,
         * busy) is reported there. Read-only statements may stop early. */
        int ro = sqlite3_stmt_readonly(st), stop = 0;
        for (;;) {
            e = sqlite3_step(st);
            if (e == SQLITE_DONE) break;
            if (e != SQLITE_ROW) {
                rc = dn_fail(sqlite_status(e), "%s: %s", s->url, sqlite3_errmsg(cn->db));
                goto out;
            }
            if (fn && !stop) {
                qrow r = {st, NULL, 0};
                if (fn(ctx, &r)) stop = 1;
            }
            if (stop && ro) break;
        }
    out:
        e = sqlite3_finalize(st);
        if (!rc && e != SQLITE_OK) rc = dn_fail(sqlite_status(e), "%s: %s", s->url, sqlite3_errmsg(cn->db));
        /* a statement that failed outside a transaction must not leave one open */
        if (rc && was_auto && !sqlite3_get_autocommit(cn->db)) sqlite3_exec(cn->db, "ROLLBACK", NULL, NULL, NULL);
        free(q);
        return rc;
    }
    /* PostgreSQL */
    if (PQstatus(cn->pg) != CONNECTION_OK) {
        PQreset(cn->pg);
        if (PQstatus(cn->pg) != CONNECTION_OK) {
            char e[512];
            pg_trim_error(e, sizeof e, PQerrorMessage(cn->pg));
            return dn_fail(DN_ERR_BUSY, "%s: connection lost: %s", s->url, e);
        }
    }
    char bufs[24][40];
    const char *vals[24];
    if (np > 24) return dn_fail(DN_ERR_ARG, "%s: too many query parameters", s->url);
    for (int i = 0; i < np; i++) {
        switch (p[i].t) {
        case P_NULL: vals[i] = NULL; break;
        case P_TEXT: vals[i] = p[i].s; break;
        case P_DBL: snprintf(bufs[i], sizeof bufs[i], "%.17g", p[i].d); vals[i] = bufs[i]; break;
        case P_INT: snprintf(bufs[i], sizeof bufs[i], "%lld", (long long)p[i].i); vals[i] = bufs[i]; break;
        }
    }
    /* Rows are streamed one at a time (single-row mode), so a report over millions
     * of predictions never materialises the whole result set in memory. */
    if (!PQsendQueryParams(cn->pg, sql, np, NULL, vals, NULL, NULL, 0)) {
        char e[512];
        pg_trim_error(e, sizeof e, PQerrorMessage(cn->pg));
        return dn_fail(PQstatus(cn->pg) == CONNECTION_OK ? DN_ERR_DB : DN_ERR_BUSY, "%s: %s", s->url, e);
    }
    PQsetSingleRowMode(cn->pg);
    dn_status rc = DN_OK;
    int stop = 0;
    PGresult *res;
    while ((res = PQgetResult(cn->pg))) { /* drained to the end even after fn stops */
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_SINGLE_TUPLE) {
            if (fn && !stop && !rc) {
                qrow r = {NULL, res, 0};
                if (fn(ctx, &r)) stop = 1;
            }
        } else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && !rc) {
            /* also a COMMIT that failed after INSERT ... RETURNING sent its row */
            char e[512];
            pg_trim_error(e, sizeof e, PQresultErrorMessage(res));
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            rc = dn_fail(state ? pg_status(state) : PQstatus(cn->pg) == CONNECTION_OK ? DN_ERR_DB : DN_ERR_BUSY,
                         "%s: %s", s->url, e);
        }
        PQclear(res);
    }
    return rc;
}

/* Runs on the main connection; call with s->mu held. */
static dn_status q_run(dn_store *s, const char *sql, const qparam *p, int np, row_fn fn, void *ctx) {
    return q_run_c(s, &s->w, sql, p, np, fn, ctx);
}

static dn_status q_exec(dn_store *s, const char *sql) { return q_run(s, sql, NULL, 0, NULL, NULL); }

static int first_int_fn(void *ctx, const qrow *r) {
    *(int64_t *)ctx = col_text(r, 0) ? col_int(r, 0) : 0;
    return 1;
}

/* ---------------------------------------------------------------- migrations */

/* Each version's statements; %ID% is replaced by the backend's auto-increment
 * primary key. Never edit a released step: add a new one. */
static const char *const mig_v1[] = {
    "CREATE TABLE predictions ("
    " id %ID%,"
    " time DOUBLE PRECISION NOT NULL,"
    " line TEXT, station TEXT, camera TEXT, part TEXT,"
    " source TEXT NOT NULL, source_path TEXT, request_id TEXT UNIQUE,"
    " image_sha256 TEXT NOT NULL, image_copy TEXT,"
    " model_sha256 TEXT NOT NULL, model_version TEXT,"
    " class TEXT NOT NULL, confidence DOUBLE PRECISION NOT NULL, scores TEXT NOT NULL,"
    " decision TEXT NOT NULL CHECK (decision IN ('accepted','uncertain')))",
    "CREATE INDEX predictions_time ON predictions(time)",
    "CREATE TABLE action_outcomes ("
    " id %ID%,"
    " prediction_id BIGINT NOT NULL REFERENCES predictions(id),"
    " rule TEXT NOT NULL, kind TEXT NOT NULL, target TEXT,"
    " status TEXT NOT NULL, attempts INTEGER NOT NULL, detail TEXT,"
    " time DOUBLE PRECISION NOT NULL)",
    NULL};
static const char *const mig_v2[] = {
    "CREATE INDEX predictions_source ON predictions(source_path, image_sha256)",
    "CREATE INDEX predictions_line_time ON predictions(line, time)",
    "CREATE INDEX action_outcomes_pred ON action_outcomes(prediction_id)",
    NULL};
/* v3: which node of a fleet recorded the prediction (docs/fleet.md) */
static const char *const mig_v3[] = {"ALTER TABLE predictions ADD COLUMN node TEXT", NULL};
static const char *const *const migrations[DN_STORE_SCHEMA_VERSION] = {mig_v1, mig_v2, mig_v3};

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static dn_status migrate(dn_store *s) {
    dn_status rc;
    int pg = s->backend == B_PG;
    if ((rc = q_exec(s, pg ? "BEGIN" : "BEGIN IMMEDIATE"))) return rc;
    if (pg && (rc = q_exec(s, "SELECT pg_advisory_xact_lock(7274101)"))) goto fail;
    if ((rc = q_exec(s, "CREATE TABLE IF NOT EXISTS schema_version ("
                        " version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")))
        goto fail;
    int64_t have = 0;
    if ((rc = q_run(s, "SELECT max(version) FROM schema_version", NULL, 0, first_int_fn, &have))) goto fail;
    if (have > DN_STORE_SCHEMA_VERSION) {
        rc = dn_fail(DN_ERR_DB, "%s: database schema version %lld is newer than this build supports (%d)",
                     s->url, (long long)have, DN_STORE_SCHEMA_VERSION);
        goto fail;
    }
    for (int v = (int)have + 1; v <= DN_STORE_SCHEMA_VERSION; v++) {
        for (const char *const *st = migrations[v - 1]; *st; st++) {
            char sql[2048];
            const char *id = pg ? "BIGSERIAL PRIMARY KEY" : "INTEGER PRIMARY KEY AUTOINCREMENT";
            const char *m = strstr(*st, "%ID%");
            size_t pos = 0;
            const char *src = *st;
            while (m) {
                pos += (size_t)snprintf(sql + pos, sizeof sql - pos, "%.*s%s", (int)(m - src), src, id);
                src = m + 4;
                m = strstr(src, "%ID%");
            }
            snprintf(sql + pos, sizeof sql - pos, "%s", src);
            if ((rc = q_exec(s, sql))) {
                dn_fail_prefix(rc, "migration to schema version %d", v);
                goto fail;
            }
        }
        qparam p[2] = {QI(v), QD(wall_now())};
        if ((rc = q_run(s, "INSERT INTO schema_version(version, applied_at) VALUES ($1, $2)", p, 2, NULL, NULL)))
            goto fail;
    }
    return q_exec(s, "COMMIT");
fail:;
    char keep[1024];
    snprintf(keep, sizeof keep, "%s", dn_last_error());
    q_exec(s, "ROLLBACK");
    return dn_fail(rc, "%s", keep);
}

/* ---------------------------------------------------------------- open/close */

/* Copy of a postgres URL with any password replaced by "***" (for messages). */
static char *redact_url(const char *url) {
    char *u = dn_strdup(url);
    if (!u) return NULL;
    char *scheme = strstr(u, "://");
    if (!scheme) return u;
    char *at = strchr(scheme + 3, '@');
    char *colon = strchr(scheme + 3, ':');
    if (at && colon && colon < at) {
        char buf[1024];
        snprintf(buf, sizeof buf, "%.*s:***%s", (int)(colon - u), u, at);
        free(u);
        return dn_strdup(buf);
    }
    return u;
}

dn_status dn_store_open(const char *url, dn_store **out) {
    *out = NULL;
    if (!url || !*url) return dn_fail(DN_ERR_ARG, "store: empty database URL");
    dn_store *s = dn_calloc(1, sizeof *s);
    if (!s) return DN_ERR_NOMEM;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->rmu, NULL);
    dn_status rc;
    if (!strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13)) {
        s->backend = B_PG;
        s->url = redact_url(url);
        if (!s->url) { rc = DN_ERR_NOMEM; goto fail; }
        /* A database that is down must not hold the store (and so every worker) for
         * long: bound connection attempts unless the URL says otherwise. */
        char curl[2048];
        if (strstr(url, "connect_timeout=")) snprintf(curl, sizeof curl, "%s", url);
        else snprintf(curl, sizeof curl, "%s%sconnect_timeout=5", url, strchr(url, '?') ? "&" : "?");
        s->conninfo = dn_strdup(curl);
        if (!s->conninfo) { rc = DN_ERR_NOMEM; goto fail; }
        s->w.pg = PQconnectdb(curl);
        if (!s->w.pg || PQstatus(s->w.pg) != CONNECTION_OK) {
            char e[512];
            pg_trim_error(e, sizeof e, s->w.pg ? PQerrorMessage(s->w.pg) : "out of memory");
            rc = dn_fail(DN_ERR_DB, "%s: cannot connect: %s", s->url, e);
            goto fail;
        }
        PGresult *r = PQexec(s->w.pg, "SET client_min_messages TO warning");
        PQclear(r);
    } else {
        const char *colon = strstr(url, "://");
        if (colon && strncmp(url, "sqlite:", 7)) {
            rc = dn_fail(DN_ERR_ARG, "%s: unsupported database URL scheme (use sqlite:FILE or postgres://...)", url);
            goto fail;
        }
        const char *path = !strncmp(url, "sqlite:", 7) ? url + 7 : url;
        if (!strncmp(path, "//", 2)) path += 2; /* sqlite://FILE */
        if (!*path) { rc = dn_fail(DN_ERR_ARG, "%s: empty SQLite file name", url); goto fail; }
        s->backend = B_SQLITE;
        s->url = dn_strdup(path);
        s->conninfo = dn_strdup(path);
        if (!s->url || !s->conninfo) { rc = DN_ERR_NOMEM; goto fail; }
        int e = sqlite3_open_v2(path, &s->w.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
        if (e != SQLITE_OK) {
            rc = dn_fail(DN_ERR_DB, "%s: cannot open SQLite database: %s", path,
                         s->w.db ? sqlite3_errmsg(s->w.db) : sqlite3_errstr(e));
            goto fail;
        }
        sqlite3_busy_timeout(s->w.db, 10000);
        char *jm = NULL;
        /* journal_mode returns a row; anything but "wal" (e.g. a read-only dir) is an error. */
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(s->w.db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK ||
            sqlite3_step(st) != SQLITE_ROW) {
            rc = dn_fail(DN_ERR_DB, "%s: not a usable SQLite database: %s", path, sqlite3_errmsg(s->w.db));
            sqlite3_finalize(st);
            goto fail;
        }
        jm = dn_strdup((const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        if (!jm || strcmp(jm, "wal")) {
            rc = dn_fail(DN_ERR_DB, "%s: cannot switch SQLite database to WAL mode (got '%s')", path, jm ? jm : "?");
            free(jm);
            goto fail;
        }
        free(jm);
        if ((rc = q_exec(s, "PRAGMA synchronous=FULL")) || (rc = q_exec(s, "PRAGMA foreign_keys=ON"))) goto fail;
    }
    pthread_mutex_lock(&s->mu);
    rc = migrate(s);
    pthread_mutex_unlock(&s->mu);
    if (rc) goto fail;
    *out = s;
    return DN_OK;
fail:
    dn_store_close(s);
    return rc;
}

void dn_store_close(dn_store *s) {
    if (!s) return;
    conn *cs[2] = {&s->w, &s->r};
    for (int i = 0; i < 2; i++) {
        if (cs[i]->db) sqlite3_close(cs[i]->db);
        if (cs[i]->pg) PQfinish(cs[i]->pg);
    }
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

const char *dn_store_backend(const dn_store *s) { return s->backend == B_PG ? "postgres" : "sqlite"; }

int dn_store_schema_version(dn_store *s) {
    int64_t v = -1;
    pthread_mutex_lock(&s->mu);
    if (q_run(s, "SELECT max(version) FROM schema_version", NULL, 0, first_int_fn, &v)) v = -1;
    pthread_mutex_unlock(&s->mu);
    return (int)v;
}

/* ---------------------------------------------------------------- writes */

static int valid_hex64(const char *h) {
    if (!h || strlen(h) != 64) return 0;
    for (int i = 0; i < 64; i++)
        if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f'))) return 0;
    return 1;
}

dn_status dn_store_insert(dn_store *s, const dn_pred_record *r, int64_t *id, int *existed) {
    *id = 0;
    if (existed) *existed = 0;
    if (!r->cls || !r->source || !r->model_sha256 || !r->scores_json)
        return dn_fail(DN_ERR_ARG, "%s: prediction record lacks class/source/model/scores", s->url);
    if (!valid_hex64(r->image_sha256))
        return dn_fail(DN_ERR_ARG, "%s: prediction record has no valid image sha256", s->url);
    qparam p[17] = {QD(r->time), QT(r->line), QT(r->station), QT(r->camera), QT(r->part),
                    QT(r->source), QT(r->source_path), QT(r->request_id), QT(r->image_sha256),
                    QT(r->image_copy), QT(r->model_sha256), QT(r->model_version), QT(r->cls),
                    QD(r->confidence), QT(r->scores_json), QT(r->uncertain ? "uncertain" : "accepted"),
                    QT(s->node)};
    pthread_mutex_lock(&s->mu);
    dn_status rc = q_run(s,
                         "INSERT INTO predictions(time, line, station, camera, part, source, source_path,"
                         " request_id, image_sha256, image_copy, model_sha256, model_version, class,"
                         " confidence, scores, decision, node) VALUES"
                         " ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)"
                         " ON CONFLICT (request_id) DO NOTHING RETURNING id",
                         p, 17, first_int_fn, id);
    if (!rc && *id == 0 && r->request_id) {
        qparam q[1] = {QT(r->request_id)};
        rc = q_run(s, "SELECT id FROM predictions WHERE request_id = $1", q, 1, first_int_fn, id);
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
    dn_status rc = q_run(s,
                         "INSERT INTO action_outcomes(prediction_id, rule, kind, target, status, attempts,"
                         " detail, time) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                         p, 8, NULL, NULL);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---------------------------------------------------------------- reads */

#define PRED_COLS "id, time, line, station, camera, part, source, source_path, request_id," \
                  " image_sha256, image_copy, model_sha256, model_version, class, confidence," \
                  " scores, decision, node"
/* Same columns without the score vector (the bulk of a row), for aggregations. */
#define PRED_COLS_LIGHT "id, time, line, station, camera, part, source, source_path, request_id," \
                        " image_sha256, image_copy, model_sha256, model_version, class, confidence," \
                        " NULL, decision, node"

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
                  &r->model_version, &r->cls, &r->scores_json, &r->decision, &r->node};
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
    r->id = col_int(q, 0);
    r->time = col_double(q, 1);
    r->line = dup_or_null(col_text(q, 2), &oom);
    r->station = dup_or_null(col_text(q, 3), &oom);
    r->camera = dup_or_null(col_text(q, 4), &oom);
    r->part = dup_or_null(col_text(q, 5), &oom);
    r->source = dup_or_null(col_text(q, 6), &oom);
    r->source_path = dup_or_null(col_text(q, 7), &oom);
    r->request_id = dup_or_null(col_text(q, 8), &oom);
    r->image_sha256 = dup_or_null(col_text(q, 9), &oom);
    r->image_copy = dup_or_null(col_text(q, 10), &oom);
    r->model_sha256 = dup_or_null(col_text(q, 11), &oom);
    r->model_version = dup_or_null(col_text(q, 12), &oom);
    r->cls = dup_or_null(col_text(q, 13), &oom);
    r->confidence = (float)col_double(q, 14);
    r->scores_json = dup_or_null(col_text(q, 15), &oom);
    r->decision = dup_or_null(col_text(q, 16), &oom);
    r->node = dup_or_null(col_text(q, 17), &oom);
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

/* Opens the scan connection on first use (call with s->rmu held). Returns 0 when
 * it is usable, -1 when scans must share the main connection. */
static int open_reader(dn_store *s) {
    if (s->r.db || s->r.pg) return 0;
    if (s->r_failed) return -1;
    if (s->backend == B_SQLITE) {
        if (sqlite3_open_v2(s->conninfo, &s->r.db, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
            sqlite3_close(s->r.db);
            s->r.db = NULL;
            s->r_failed = 1;
            return -1;
        }
        sqlite3_busy_timeout(s->r.db, 10000);
        return 0;
    }
    s->r.pg = PQconnectdb(s->conninfo);
    if (!s->r.pg || PQstatus(s->r.pg) != CONNECTION_OK) {
        PQfinish(s->r.pg);
        s->r.pg = NULL;
        return -1; /* retried next time: the database may be down just now */
    }
    return 0;
}

dn_status dn_store_scan(dn_store *s, const dn_pred_filter *f, dn_pred_row_fn fn, void *ctx) {
    char sql[1024];
    snprintf(sql, sizeof sql, "SELECT %s FROM predictions", f && f->no_scores ? PRED_COLS_LIGHT : PRED_COLS);
    qparam p[8];
    int np = build_where(f, sql, sizeof sql, p);
    size_t len = strlen(sql);
    len += (size_t)snprintf(sql + len, sizeof sql - len, " ORDER BY id");
    if (f && f->limit > 0) snprintf(sql + len, sizeof sql - len, " LIMIT %lld", (long long)f->limit);
    scan_ctx sc = {fn, ctx, 0};
    dn_status rc;
    pthread_mutex_lock(&s->rmu);
    if (open_reader(s) == 0) {
        rc = q_run_c(s, &s->r, sql, p, np, scan_row, &sc);
        pthread_mutex_unlock(&s->rmu);
    } else { /* no second connection: share the main one */
        pthread_mutex_unlock(&s->rmu);
        pthread_mutex_lock(&s->mu);
        rc = q_run(s, sql, p, np, scan_row, &sc);
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
    dn_status rc = q_run(s, "SELECT " PRED_COLS " FROM predictions WHERE id = $1", p, 1, get_row, &g);
    pthread_mutex_unlock(&s->mu);
    if (!rc && g.oom) rc = dn_fail(DN_ERR_NOMEM, "%s: out of memory reading prediction", s->url);
    if (!rc) *found = g.found;
    return rc;
}

dn_status dn_store_ping(dn_store *s) {
    int64_t one = 0;
    pthread_mutex_lock(&s->mu);
    dn_status rc = q_run(s, "SELECT 1", NULL, 0, first_int_fn, &one);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

dn_status dn_store_count(dn_store *s, const dn_pred_filter *f, int64_t *n) {
    char sql[1024] = "SELECT count(*) FROM predictions";
    qparam p[8];
    int np = build_where(f, sql, sizeof sql, p);
    *n = 0;
    pthread_mutex_lock(&s->mu);
    dn_status rc = q_run(s, sql, p, np, first_int_fn, n);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

dn_status dn_store_find_source(dn_store *s, const char *source_path, const char *image_sha256, int64_t *id) {
    *id = 0;
    qparam p[2] = {QT(source_path), QT(image_sha256)};
    pthread_mutex_lock(&s->mu);
    dn_status rc = q_run(s, "SELECT id FROM predictions WHERE source_path = $1 AND image_sha256 = $2"
                            " ORDER BY id LIMIT 1", p, 2, first_int_fn, id);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

typedef struct { dn_outcome_fn_row fn; void *ctx; } oc_ctx;
static int outcome_row(void *c, const qrow *q) {
    oc_ctx *oc = c;
    dn_outcome_row o = {col_int(q, 0), col_text(q, 1), col_text(q, 2), col_text(q, 3),
                        col_text(q, 4), col_text(q, 6), (int)col_int(q, 5), col_double(q, 7)};
    return oc->fn(oc->ctx, &o);
}

dn_status dn_store_outcomes(dn_store *s, int64_t prediction_id, dn_outcome_fn_row fn, void *ctx) {
    qparam p[1] = {QI(prediction_id)};
    oc_ctx oc = {fn, ctx};
    pthread_mutex_lock(&s->mu);
    dn_status rc = q_run(s, "SELECT prediction_id, rule, kind, target, status, attempts, detail, time"
                            " FROM action_outcomes WHERE prediction_id = $1 ORDER BY id",
                         p, 1, outcome_row, &oc);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

dn_status dn_store_count_outcomes(dn_store *s, const char *status, int64_t *n) {
    *n = 0;
    qparam p[1] = {QT(status)};
    pthread_mutex_lock(&s->mu);
    dn_status rc = status ? q_run(s, "SELECT count(*) FROM action_outcomes WHERE status = $1", p, 1, first_int_fn, n)
                          : q_run(s, "SELECT count(*) FROM action_outcomes", NULL, 0, first_int_fn, n);
    pthread_mutex_unlock(&s->mu);
    return rc;
}
