/* Durable prediction store: every prediction the service makes, and the outcome of
 * every action it fired, in SQLite (default, a single file, no setup) or PostgreSQL.
 *
 * URLs accepted by dn_store_open:
 *   "sqlite:FILE" or a plain path  -> SQLite, WAL journal, synchronous=FULL (each
 *                                     insert is on disk before dn_store_insert returns,
 *                                     also across power loss), busy timeout 10 s
 *   "postgres://..." / "postgresql://..." -> PostgreSQL through libpq (a libpq
 *                                     connection URI; the password may come from
 *                                     ~/.pgpass or PGPASSWORD as libpq usually does)
 * Opening applies the versioned schema migrations (table schema_version) that the
 * database does not have yet, inside one transaction (PostgreSQL: serialised between
 * concurrent openers with an advisory lock). A database whose schema is newer than
 * this build knows is refused.
 *
 * Ownership: dn_store_open returns a store owned by the caller (dn_store_close).
 * Input strings are copied into the database; nothing is retained. Rows returned by
 * dn_store_list are owned by the caller (dn_pred_rows_free). Row pointers handed to
 * dn_store_scan callbacks are valid only during the callback.
 * Thread-safety: one store may be used by any number of threads. Writes and point
 * reads are serialised on one connection (commit latency dominates anyway); scans
 * (dn_store_scan/dn_store_list, i.e. reports and listings) run on a second connection
 * opened on first use, so a long report never holds up the inserts of predictions
 * (SQLite WAL readers see the last commit before the scan began). */
#ifndef DN_SERVE_STORE_H
#define DN_SERVE_STORE_H
#include "defectnet.h"
#include <stddef.h>
#include <stdint.h>

#define DN_STORE_SCHEMA_VERSION 5

typedef struct dn_store dn_store;

/* One prediction to record. NULL strings are stored as NULL. */
typedef struct dn_pred_record {
    double time;                                   /* unix seconds */
    const char *line, *station, *camera, *part;    /* source metadata, may be NULL */
    const char *source;                            /* "http", "watch", ... */
    const char *source_path;                       /* watched file path (NULL for http) */
    const char *request_id;                        /* client's idempotency key, may be NULL;
                                                      unique when not NULL */
    const char *image_sha256;                      /* 64 hex chars */
    const char *image_copy;                        /* path of the stored copy, may be NULL */
    const char *model_sha256, *model_version;
    const char *cls;                               /* predicted class name */
    float confidence;
    const char *scores_json;                       /* {"class": prob, ...} */
    int uncertain;                                 /* decision: 1 = "uncertain", 0 = "accepted" ... */
    int decision;                                  /* ... unless this is DN_DECISION_UNKNOWN (schema v5) */
    const float *ood_score;                        /* NULL (stored as NULL): the model has no detector */
    const char *heatmap;                           /* path of the Grad-CAM overlay PNG, may be NULL */
} dn_pred_record;

/* "accepted" | "uncertain" | "unknown" of a record (unknown wins over uncertain). */
const char *dn_pred_record_decision(const dn_pred_record *r);

/* A stored prediction (all strings owned by the row; NULL where the column is NULL). */
typedef struct dn_pred_row {
    int64_t id;
    double time;
    char *line, *station, *camera, *part, *source, *source_path, *request_id;
    char *image_sha256, *image_copy, *model_sha256, *model_version, *cls, *scores_json;
    char *decision;                                /* "accepted" | "uncertain" | "unknown" */
    char *node;                                    /* node that recorded it (fleet), may be NULL */
    char *heatmap;                                 /* Grad-CAM overlay path (schema v5), may be NULL */
    float confidence;
    float ood_score;                               /* NAN where the column is NULL (no detector, before v5) */
} dn_pred_row;

/* Filter for listing/scanning. Zero-initialised = everything. Ranges are
 * from <= time < to; a bound of 0 means unbounded. */
typedef struct dn_pred_filter {
    double from, to;
    const char *line, *cls, *decision;             /* exact match when not NULL */
    int64_t after_id;                              /* pagination cursor: only ids > after_id */
    int64_t limit;                                 /* 0 = no limit */
    int no_scores;                                 /* scans: leave scores_json NULL (aggregations) */
} dn_pred_filter;

/* One action outcome row. */
typedef struct dn_outcome_row {
    int64_t prediction_id;
    const char *rule, *kind, *target, *status, *detail;
    int attempts;
    double time;
} dn_outcome_row;

dn_status dn_store_open(const char *url, dn_store **out);
/* For reports: opens an existing store without migrating or writing anything (SQLite
 * read-only, a missing file is an error and is not created; PostgreSQL sessions in
 * READ ONLY transactions). Older schemas are read (node = NULL before v3); a newer one
 * or a database without schema_version is refused. Only scans/lists/counts/gets. */
dn_status dn_store_open_readonly(const char *url, dn_store **out);
void dn_store_close(dn_store *s);
/* "sqlite" or "postgres". */
const char *dn_store_backend(const dn_store *s);
int dn_store_schema_version(dn_store *s);

/* The node id recorded with every following insert (column "node", schema v3), so
 * several serve nodes writing one PostgreSQL database stay distinguishable; NULL =
 * none. The string is copied. */
dn_status dn_store_set_node(dn_store *s, const char *node);
/* Commits one prediction (durable when this returns DN_OK) and returns its id.
 * If rec->request_id is set and a prediction with that request id already exists,
 * nothing is inserted, *id receives the existing id and *existed (if not NULL) 1. */
dn_status dn_store_insert(dn_store *s, const dn_pred_record *rec, int64_t *id, int *existed);
/* Records one action outcome for a prediction. */
dn_status dn_store_add_outcome(dn_store *s, const dn_outcome_row *o);

/* Id of a prediction made from source_path whose image had sha256 (0 if none). */
dn_status dn_store_find_source(dn_store *s, const char *source_path, const char *image_sha256,
                               int64_t *id);
/* One prediction by id; *found = 0 if absent. Fill row owned by caller (dn_pred_row_clear). */
dn_status dn_store_get(dn_store *s, int64_t id, dn_pred_row *row, int *found);

/* Calls fn for every matching row in id order; fn returning non-zero stops the scan. */
typedef int (*dn_pred_row_fn)(void *ctx, const dn_pred_row *row);
dn_status dn_store_scan(dn_store *s, const dn_pred_filter *f, dn_pred_row_fn fn, void *ctx);
/* Matching rows in id order (at most f->limit). */
dn_status dn_store_list(dn_store *s, const dn_pred_filter *f, dn_pred_row **rows, size_t *n);
void dn_pred_row_clear(dn_pred_row *row);
void dn_pred_rows_free(dn_pred_row *rows, size_t n);
dn_status dn_store_count(dn_store *s, const dn_pred_filter *f, int64_t *n);
/* A trivial query on the write connection (reconnecting a PostgreSQL connection that
 * was lost): DN_OK when the database answers (for /healthz). */
dn_status dn_store_ping(dn_store *s);

/* Outcomes recorded for one prediction, in insertion order. */
typedef int (*dn_outcome_fn_row)(void *ctx, const dn_outcome_row *o);
dn_status dn_store_outcomes(dn_store *s, int64_t prediction_id, dn_outcome_fn_row fn, void *ctx);
/* Outcome counts by status (for metrics/tests): status NULL = all. */
dn_status dn_store_count_outcomes(dn_store *s, const char *status, int64_t *n);

#endif
