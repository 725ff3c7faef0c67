/* Internals shared by the prediction store's files (not part of the store API):
 *   store_sql.c     the SQL backends: connections (SQLite file / PostgreSQL URL), the one
 *                   statement runner over both (typed $N parameters, streamed rows, error
 *                   classes: "busy, retry" vs "failed")
 *   store_schema.c  the versioned schema migrations
 *   store.c         the store API: open/close, writes (predictions, action outcomes), reads
 * The rule: only store_sql.c talks to sqlite3/libpq; the others speak SQL through dn_sq_run. */
#ifndef DN_SERVE_STORE_INT_H
#define DN_SERVE_STORE_INT_H
#include "serve/store.h"
#include <postgresql/libpq-fe.h> /* Debian puts libpq under postgresql/ */
#include <pthread.h>
#include <sqlite3.h>

enum { DN_SQ_SQLITE = 1, DN_SQ_PG = 2 };

/* One database connection (exactly one of db / pg is used, by backend). */
typedef struct dn_sq_conn {
    sqlite3 *db;
    PGconn *pg;
} dn_sq_conn;

struct dn_store {
    int backend;         /* DN_SQ_SQLITE | DN_SQ_PG */
    char *url;           /* for error messages (PostgreSQL password removed) */
    char *conninfo;      /* what was connected to (PostgreSQL URL with timeout / SQLite path) */
    dn_sq_conn w;        /* writes and point reads, under mu */
    dn_sq_conn r;        /* scans (reports, listings), under rmu: opened on first use so a
                            long report never holds up the inserts of predictions */
    int r_failed;
    char *node;          /* recorded with every insert (dn_store_set_node), NULL = none */
    int readonly;        /* dn_store_open_readonly: read-only connections, no migration */
    int no_node;         /* read-only store of a schema before v3: scans read node as NULL */
    int no_ood;          /* ... before v5: scans read ood_score and heatmap as NULL */
    pthread_mutex_t mu, rmu;
};

/* Typed statement parameters ($1, $2, ... in the SQL text). */
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
const char *dn_sq_text(const qrow *r, int i); /* NULL for SQL NULL */
double dn_sq_double(const qrow *r, int i);
int64_t dn_sq_int(const qrow *r, int i);

/* Row visitor: returning non-zero stops the visit. */
typedef int (*dn_sq_row_fn)(void *ctx, const qrow *r);
/* Row visitor storing column 0 as int64 into *(int64_t *)ctx (0 for NULL), then stops. */
int dn_sq_first_int(void *ctx, const qrow *r);

/* Runs one statement on connection cn; fn (may be NULL) sees each result row. The
 * caller holds the mutex guarding cn. Failures: DN_ERR_BUSY when the same statement may
 * succeed later (disk full, I/O, locked, connection lost), DN_ERR_DB otherwise. */
dn_status dn_sq_run_on(dn_store *s, dn_sq_conn *cn, const char *sql, const qparam *p, int np,
                       dn_sq_row_fn fn, void *ctx);
/* Same on the main (write) connection; call with s->mu held. */
dn_status dn_sq_run(dn_store *s, const char *sql, const qparam *p, int np, dn_sq_row_fn fn, void *ctx);
dn_status dn_sq_exec(dn_store *s, const char *sql);

/* Connects s->w for url (sets backend, url, conninfo; SQLite: WAL, synchronous=FULL,
 * foreign keys). On failure the caller still releases s with dn_sq_disconnect. */
dn_status dn_sq_connect(dn_store *s, const char *url);
/* Same, read-only (s->readonly): a missing SQLite file is an error (nothing is created;
 * opened with mode=ro, immutable when its WAL index cannot be created, i.e. nobody can
 * be writing it), PostgreSQL sessions default to READ ONLY transactions. */
dn_status dn_sq_connect_readonly(dn_store *s, const char *url);
/* Opens the scan connection s->r on first use (call with s->rmu held). Returns 0 when
 * it is usable, -1 when scans must share the main connection. */
int dn_sq_open_reader(dn_store *s);
void dn_sq_disconnect(dn_store *s);

/* Applies the schema migrations the database lacks (store_schema.c); call with s->mu held. */
dn_status dn_store_migrate(dn_store *s);

#endif
