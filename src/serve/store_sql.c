/* The store's SQL backends (see store_int.h): connections to SQLite or PostgreSQL and
 * the one statement runner both share.
 *
 * Statements are written with $N placeholders (PostgreSQL syntax) and rewritten to ?N
 * for SQLite. Parameters are typed (text, double, int64, NULL); PostgreSQL receives
 * them in text form with full precision.
 *
 * Durability: SQLite runs in WAL mode with synchronous=FULL, so a commit has been
 * fsync'ed to the WAL before dn_store_insert returns. (synchronous=NORMAL would
 * survive a process crash such as kill -9 but could lose the last commits on power
 * loss; a factory audit log wants the stronger guarantee, and the WAL keeps the
 * cost at one fsync per prediction.) PostgreSQL commits are durable per its own
 * configuration (synchronous_commit=on by default). */
#include "serve/store_int.h"
#include "core/core.h"
#include "core/json.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* --------------------------------------------------------------- rows */

const char *dn_sq_text(const qrow *r, int i) {
    if (r->st) return (const char *)sqlite3_column_text(r->st, i);
    if (PQgetisnull(r->res, r->row, i)) return NULL;
    return PQgetvalue(r->res, r->row, i);
}
double dn_sq_double(const qrow *r, int i) {
    if (r->st) return sqlite3_column_double(r->st, i);
    const char *s = dn_sq_text(r, i);
    return s ? strtod(s, NULL) : 0.0;
}
int64_t dn_sq_int(const qrow *r, int i) {
    if (r->st) return sqlite3_column_int64(r->st, i);
    const char *s = dn_sq_text(r, i);
    return s ? strtoll(s, NULL, 10) : 0;
}

/* --------------------------------------------------------------- statements */

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

dn_status dn_sq_run_on(dn_store *s, dn_sq_conn *cn, const char *sql, const qparam *p, int np, dn_sq_row_fn fn, void *ctx) {
    if (s->backend == DN_SQ_SQLITE) {
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

dn_status dn_sq_run(dn_store *s, const char *sql, const qparam *p, int np, dn_sq_row_fn fn, void *ctx) {
    return dn_sq_run_on(s, &s->w, sql, p, np, fn, ctx);
}

dn_status dn_sq_exec(dn_store *s, const char *sql) { return dn_sq_run(s, sql, NULL, 0, NULL, NULL); }

int dn_sq_first_int(void *ctx, const qrow *r) {
    *(int64_t *)ctx = dn_sq_text(r, 0) ? dn_sq_int(r, 0) : 0;
    return 1;
}

/* --------------------------------------------------------------- connections */

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

static dn_status pg_connect(dn_store *s, const char *url) {
    s->backend = DN_SQ_PG;
    s->url = redact_url(url);
    if (!s->url) return DN_ERR_NOMEM;
    /* A database that is down must not hold the store (and so every worker) for
     * long: bound connection attempts unless the URL says otherwise. */
    char curl[2048];
    if (strstr(url, "connect_timeout=")) snprintf(curl, sizeof curl, "%s", url);
    else snprintf(curl, sizeof curl, "%s%sconnect_timeout=5", url, strchr(url, '?') ? "&" : "?");
    if (s->readonly) { /* every transaction of both connections is READ ONLY */
        size_t l = strlen(curl);
        if (strstr(url, "options="))
            return dn_fail(DN_ERR_ARG, "%s: a read-only connection sets 'options' itself; remove it from the URL", s->url);
        snprintf(curl + l, sizeof curl - l, "&options=-c%%20default_transaction_read_only%%3Don");
    }
    s->conninfo = dn_strdup(curl);
    if (!s->conninfo) return DN_ERR_NOMEM;
    s->w.pg = PQconnectdb(curl);
    if (!s->w.pg || PQstatus(s->w.pg) != CONNECTION_OK) {
        char e[512];
        pg_trim_error(e, sizeof e, s->w.pg ? PQerrorMessage(s->w.pg) : "out of memory");
        return dn_fail(DN_ERR_DB, "%s: cannot connect: %s", s->url, e);
    }
    PGresult *r = PQexec(s->w.pg, "SET client_min_messages TO warning");
    PQclear(r);
    return DN_OK;
}

/* "sqlite:FILE", "sqlite://FILE" or a plain path: sets backend, url and conninfo to FILE. */
static dn_status sqlite_target(dn_store *s, const char *url) {
    const char *colon = strstr(url, "://");
    if (colon && strncmp(url, "sqlite:", 7))
        return dn_fail(DN_ERR_ARG, "%s: unsupported database URL scheme (use sqlite:FILE or postgres://...)", url);
    const char *path = !strncmp(url, "sqlite:", 7) ? url + 7 : url;
    if (!strncmp(path, "//", 2)) path += 2; /* sqlite://FILE */
    if (!*path) return dn_fail(DN_ERR_ARG, "%s: empty SQLite file name", url);
    s->backend = DN_SQ_SQLITE;
    s->url = dn_strdup(path);
    s->conninfo = dn_strdup(path);
    return s->url && s->conninfo ? DN_OK : DN_ERR_NOMEM;
}

static dn_status sqlite_connect(dn_store *s, const char *url) {
    dn_status rc0 = sqlite_target(s, url);
    if (rc0) return rc0;
    const char *path = s->conninfo;
    int e = sqlite3_open_v2(path, &s->w.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (e != SQLITE_OK)
        return dn_fail(DN_ERR_DB, "%s: cannot open SQLite database: %s", path,
                       s->w.db ? sqlite3_errmsg(s->w.db) : sqlite3_errstr(e));
    sqlite3_busy_timeout(s->w.db, 10000);
    /* journal_mode returns a row; anything but "wal" (e.g. a read-only dir) is an error. */
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->w.db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        dn_status rc = dn_fail(DN_ERR_DB, "%s: not a usable SQLite database: %s", path, sqlite3_errmsg(s->w.db));
        sqlite3_finalize(st);
        return rc;
    }
    char *jm = dn_strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (!jm || strcmp(jm, "wal")) {
        dn_status rc = dn_fail(DN_ERR_DB, "%s: cannot switch SQLite database to WAL mode (got '%s')", path,
                               jm ? jm : "?");
        free(jm);
        return rc;
    }
    free(jm);
    dn_status rc;
    if ((rc = dn_sq_exec(s, "PRAGMA synchronous=FULL")) || (rc = dn_sq_exec(s, "PRAGMA foreign_keys=ON"))) return rc;
    return DN_OK;
}

dn_status dn_sq_connect(dn_store *s, const char *url) {
    if (!strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13)) return pg_connect(s, url);
    return sqlite_connect(s, url);
}

/* "file:PATH?QUERY" with PATH percent-encoded where a URI needs it. */
static char *sqlite_uri(const char *path, const char *query) {
    dn_sb b = {0};
    dn_sb_puts(&b, "file:");
    for (const unsigned char *c = (const unsigned char *)path; *c; c++) {
        if (*c == '%' || *c == '?' || *c == '#' || *c <= ' ' || *c >= 127) dn_sb_printf(&b, "%%%02X", *c);
        else dn_sb_printf(&b, "%c", *c);
    }
    dn_sb_printf(&b, "?%s", query);
    if (b.oom) { dn_sb_free(&b); return NULL; }
    return b.s;
}

static dn_status sqlite_connect_readonly(dn_store *s, const char *url) {
    dn_status rc0 = sqlite_target(s, url);
    if (rc0) return rc0;
    const char *path = s->conninfo;
    struct stat sb;
    if (stat(path, &sb) != 0) return dn_fail(DN_ERR_IO, "%s: no such database (%s)", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) return dn_fail(DN_ERR_IO, "%s: is a directory, not a database", path);
    /* A WAL database needs its -shm index; when that cannot be created (read-only
     * folder) nobody can be writing the file, so it is read as immutable. */
    static const char *const modes[2] = {"mode=ro", "mode=ro&immutable=1"};
    dn_status rc = DN_OK;
    for (int i = 0; i < 2; i++) {
        char *uri = sqlite_uri(path, modes[i]);
        if (!uri) return DN_ERR_NOMEM;
        int e = sqlite3_open_v2(uri, &s->w.db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_FULLMUTEX, NULL);
        free(uri);
        if (e == SQLITE_OK) {
            sqlite3_busy_timeout(s->w.db, 10000);
            e = sqlite3_exec(s->w.db, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
            if (e == SQLITE_OK) {
                if (i) s->r_failed = 1; /* scans share this connection */
                return DN_OK;
            }
        }
        rc = dn_fail(DN_ERR_DB, "%s: cannot read SQLite database: %s", path,
                     s->w.db ? sqlite3_errmsg(s->w.db) : sqlite3_errstr(e));
        /* no WAL index (CANTOPEN) or no way to create it (READONLY): try immutable */
        int retry = (e & 0xff) == SQLITE_CANTOPEN || (e & 0xff) == SQLITE_READONLY;
        sqlite3_close(s->w.db);
        s->w.db = NULL;
        if (!retry) break;
    }
    return rc;
}

dn_status dn_sq_connect_readonly(dn_store *s, const char *url) {
    s->readonly = 1;
    if (!strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13)) return pg_connect(s, url);
    return sqlite_connect_readonly(s, url);
}

int dn_sq_open_reader(dn_store *s) {
    if (s->r.db || s->r.pg) return 0;
    if (s->r_failed) return -1;
    if (s->backend == DN_SQ_SQLITE) {
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

void dn_sq_disconnect(dn_store *s) {
    dn_sq_conn *cs[2] = {&s->w, &s->r};
    for (int i = 0; i < 2; i++) {
        if (cs[i]->db) sqlite3_close(cs[i]->db);
        if (cs[i]->pg) PQfinish(cs[i]->pg);
        cs[i]->db = NULL;
        cs[i]->pg = NULL;
    }
}
