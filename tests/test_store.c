/* Prediction store tests against real databases: SQLite files in a temp dir and a
 * PostgreSQL server started by the test (SKIPs visibly when not installed). */
#include "harness.h"
#include "serve_util.h"
#include "core/core.h"
#include "serve/mreport.h"
#include "serve/store.h"
#include <png.h>
#include <postgresql/libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>

static const char *SHA_A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char *SHA_B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
static const char *SHA_M = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static dn_pred_record rec(double t, const char *line, const char *cls, float conf, int unc) {
    dn_pred_record r = {0};
    r.time = t;
    r.line = line;
    r.station = "st1";
    r.camera = "cam0";
    r.part = "P-1";
    r.source = "http";
    r.image_sha256 = SHA_A;
    r.model_sha256 = SHA_M;
    r.model_version = "test-1";
    r.cls = cls;
    r.confidence = conf;
    r.scores_json = "{\"a\":0.9,\"b\":0.1}";
    r.uncertain = unc;
    return r;
}

typedef struct { int n; double last_t; } cnt_ctx;
static int count_fn(void *c, const dn_pred_row *r) {
    cnt_ctx *k = c;
    k->n++;
    k->last_t = r->time;
    return 0;
}

static int outcome_cb(void *c, const dn_outcome_row *o) {
    int *n = c;
    (*n)++;
    return 0;
}

typedef struct { int rows, with_scores; } stop_ctx;
static int stop_after_one(void *c, const dn_pred_row *r) {
    stop_ctx *k = c;
    k->rows++;
    k->with_scores += r->scores_json != NULL;
    return 1;
}
static int count_scores(void *c, const dn_pred_row *r) {
    stop_ctx *k = c;
    k->rows++;
    k->with_scores += r->scores_json != NULL;
    return 0;
}

typedef struct { dn_store *s; int inserted, rows; } ins_ctx;
static int insert_during_scan(void *c, const dn_pred_row *r) {
    ins_ctx *ic = c;
    ic->rows++;
    if (!ic->inserted) {
        dn_pred_record rr = rec(r->time, "L5", "ok", 0.5f, 0);
        int64_t id = 0;
        if (dn_store_insert(ic->s, &rr, &id, NULL) == DN_OK && id > 0) ic->inserted = 1;
    }
    return 0;
}

/* Schema v5 (docs/ood.md): decision 'unknown', ood_score (NULL = none, read as NAN) and
 * the heatmap path round trip through insert, get, list and the decision filter. */
static void check_unknown_rows(dn_store *s, const char *line) {
    dn_pred_record r = rec(7.0, line, "scratch", 0.95f, 0);
    float score = 4.25f;
    r.decision = DN_DECISION_UNKNOWN;
    r.ood_score = &score;
    r.heatmap = "/img/aa/x.cam.png";
    int64_t id = 0, n = 0;
    CHECK_MSG(dn_store_insert(s, &r, &id, NULL) == DN_OK && id > 0, "%s", dn_last_error());
    dn_pred_row row;
    int found = 0;
    CHECK(dn_store_get(s, id, &row, &found) == DN_OK && found);
    if (found) {
        CHECK(row.decision && !strcmp(row.decision, "unknown"));
        CHECK_NEAR(row.ood_score, 4.25, 1e-6);
        CHECK(row.heatmap && !strcmp(row.heatmap, "/img/aa/x.cam.png"));
        dn_pred_row_clear(&row);
    }
    dn_pred_filter f = {0};
    f.decision = "unknown";
    f.line = line;
    CHECK(dn_store_count(s, &f, &n) == DN_OK && n == 1);
    dn_pred_row *rows = NULL;
    size_t nr = 0;
    CHECK(dn_store_list(s, &f, &rows, &nr) == DN_OK && nr == 1);
    if (nr == 1) CHECK(rows[0].heatmap && !strcmp(rows[0].heatmap, "/img/aa/x.cam.png") && rows[0].ood_score == 4.25f);
    dn_pred_rows_free(rows, nr);
    r = rec(8.0, line, "ok", 0.3f, 1); /* no detector: NULL score, uncertain */
    CHECK(dn_store_insert(s, &r, &id, NULL) == DN_OK);
    CHECK(dn_store_get(s, id, &row, &found) == DN_OK && found);
    if (found) {
        CHECK(row.decision && !strcmp(row.decision, "uncertain") && isnan(row.ood_score) && !row.heatmap);
        dn_pred_row_clear(&row);
    }
}

/* The same behaviour checks for every backend. */
static void exercise(const char *url) {
    dn_store *s = NULL;
    dn_status rc = dn_store_open(url, &s);
    CHECK_MSG(rc == DN_OK, "%s", dn_last_error());
    if (rc) return;
    CHECK(dn_store_schema_version(s) == DN_STORE_SCHEMA_VERSION);
    double t0 = 1700000000.25;
    const char *lines[] = {"L1", "L2", "L1", "L1", "L2"};
    const char *cls[] = {"scratch", "ok", "scratch", "dent", "ok"};
    int64_t ids[5];
    for (int i = 0; i < 5; i++) {
        dn_pred_record r = rec(t0 + i * 3600, lines[i], cls[i], 0.5f + 0.1f * i, i == 0);
        CHECK(dn_store_insert(s, &r, &ids[i], NULL) == DN_OK);
        if (i) CHECK(ids[i] > ids[i - 1]);
    }
    int64_t n = 0;
    CHECK(dn_store_count(s, NULL, &n) == DN_OK && n == 5);
    dn_pred_filter f = {0};
    f.line = "L1";
    CHECK(dn_store_count(s, &f, &n) == DN_OK && n == 3);
    f.cls = "scratch";
    CHECK(dn_store_count(s, &f, &n) == DN_OK && n == 2);
    memset(&f, 0, sizeof f);
    f.decision = "uncertain";
    CHECK(dn_store_count(s, &f, &n) == DN_OK && n == 1);
    memset(&f, 0, sizeof f);
    f.from = t0 + 3600;
    f.to = t0 + 3 * 3600; /* half-open: rows 1 and 2 */
    CHECK(dn_store_count(s, &f, &n) == DN_OK && n == 2);

    /* pagination by cursor */
    memset(&f, 0, sizeof f);
    f.limit = 2;
    dn_pred_row *rows = NULL;
    size_t nr = 0;
    int pages = 0, total = 0;
    for (;;) {
        CHECK(dn_store_list(s, &f, &rows, &nr) == DN_OK);
        if (!nr) break;
        pages++;
        total += (int)nr;
        f.after_id = rows[nr - 1].id;
        dn_pred_rows_free(rows, nr);
        rows = NULL;
    }
    CHECK(pages == 3 && total == 5);

    /* full record round trip */
    dn_pred_row row;
    int found = 0;
    CHECK(dn_store_get(s, ids[3], &row, &found) == DN_OK && found);
    if (found) {
        CHECK(row.id == ids[3]);
        CHECK_NEAR(row.time, t0 + 3 * 3600, 1e-6);
        CHECK(!strcmp(row.line, "L1") && !strcmp(row.cls, "dent") && !strcmp(row.decision, "accepted"));
        CHECK(!strcmp(row.station, "st1") && !strcmp(row.camera, "cam0") && !strcmp(row.part, "P-1"));
        CHECK(!strcmp(row.image_sha256, SHA_A) && !strcmp(row.model_sha256, SHA_M));
        CHECK(!strcmp(row.model_version, "test-1") && row.request_id == NULL && row.image_copy == NULL);
        CHECK(!strcmp(row.scores_json, "{\"a\":0.9,\"b\":0.1}"));
        CHECK_NEAR(row.confidence, 0.8, 1e-6);
        dn_pred_row_clear(&row);
    }
    CHECK(dn_store_get(s, 999999, &row, &found) == DN_OK && !found);

    /* request-id idempotency: same key -> same id, no second row */
    dn_pred_record r = rec(t0, "L3", "ok", 0.99f, 0);
    r.request_id = "req-42";
    int64_t a = 0, b = 0;
    int existed = -1;
    CHECK(dn_store_insert(s, &r, &a, &existed) == DN_OK && existed == 0);
    CHECK(dn_store_insert(s, &r, &b, &existed) == DN_OK && existed == 1 && a == b);
    CHECK(dn_store_count(s, NULL, &n) == DN_OK && n == 6);

    /* watched-file idempotency lookup */
    r = rec(t0, "L3", "ok", 0.99f, 0);
    r.source = "watch";
    r.source_path = "/cam/img1.png";
    r.image_sha256 = SHA_B;
    CHECK(dn_store_insert(s, &r, &a, NULL) == DN_OK);
    CHECK(dn_store_find_source(s, "/cam/img1.png", SHA_B, &b) == DN_OK && a == b);
    CHECK(dn_store_find_source(s, "/cam/img1.png", SHA_A, &b) == DN_OK && b == 0);

    /* action outcomes */
    dn_outcome_row o = {ids[0], "stop-line", "webhook", "http://x/", "failed", "connection refused", 3, t0};
    CHECK(dn_store_add_outcome(s, &o) == DN_OK);
    o.status = "ok";
    o.attempts = 1;
    CHECK(dn_store_add_outcome(s, &o) == DN_OK);
    int no = 0;
    CHECK(dn_store_outcomes(s, ids[0], outcome_cb, &no) == DN_OK && no == 2);
    CHECK(dn_store_count_outcomes(s, "failed", &n) == DN_OK && n == 1);
    o.prediction_id = 987654321; /* foreign key: must refer to a prediction */
    CHECK(dn_store_add_outcome(s, &o) != DN_OK);

    /* invalid records are refused with a message */
    r = rec(t0, "L1", "ok", 0.5f, 0);
    r.image_sha256 = "nothex";
    CHECK(dn_store_insert(s, &r, &a, NULL) == DN_ERR_ARG && strstr(dn_last_error(), "sha256"));

    cnt_ctx k = {0};
    memset(&f, 0, sizeof f);
    CHECK(dn_store_scan(s, &f, count_fn, &k) == DN_OK && k.n == 7);
    /* a scan stopped early leaves the connection usable; no_scores leaves out the vectors */
    stop_ctx sc1 = {0, 0};
    CHECK(dn_store_scan(s, &f, stop_after_one, &sc1) == DN_OK && sc1.rows == 1 && sc1.with_scores == 1);
    CHECK(dn_store_count(s, NULL, &n) == DN_OK && n == 7);
    stop_ctx sc2 = {0, 0};
    f.no_scores = 1;
    CHECK(dn_store_scan(s, &f, count_scores, &sc2) == DN_OK && sc2.rows == 7 && sc2.with_scores == 0);
    f.no_scores = 0;
    /* a scan (a long report) does not hold up inserts: insert from inside one */
    ins_ctx ic = {s, 0, 0};
    CHECK(dn_store_scan(s, &f, insert_during_scan, &ic) == DN_OK && ic.inserted == 1 && ic.rows == 7);
    CHECK(dn_store_count(s, NULL, &n) == DN_OK && n == 8);
    dn_store_close(s);

    /* reopen: data still there, no migration re-applied */
    CHECK(dn_store_open(url, &s) == DN_OK);
    if (s) {
        CHECK(dn_store_count(s, NULL, &n) == DN_OK && n == 8);
        CHECK(dn_store_schema_version(s) == DN_STORE_SCHEMA_VERSION);
        check_unknown_rows(s, "L-unknown");
        dn_store_close(s);
    }
}

TEST(sqlite_roundtrip) {
    char dir[256], url[400];
    CHECK(h_tmpdir(dir, sizeof dir, "store") == 0);
    snprintf(url, sizeof url, "sqlite:%s/p.db", dir);
    exercise(url);
    /* WAL mode is persistent in the file */
    sqlite3 *db = NULL;
    char path[300];
    snprintf(path, sizeof path, "%s/p.db", dir);
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_stmt *st = NULL;
    CHECK(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(st) == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(st, 0), "wal"));
    sqlite3_finalize(st);
    sqlite3_close(db);
    h_rmrf(dir);
}

static void sqlite_exec(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    CHECK_MSG(rc == SQLITE_OK, "%s", err ? err : "?");
    sqlite3_free(err);
    sqlite3_close(db);
}

TEST(sqlite_migrates_v1) {
    /* A database written by schema version 1 (as the first release created it). */
    char dir[256], path[300];
    CHECK(h_tmpdir(dir, sizeof dir, "store") == 0);
    snprintf(path, sizeof path, "%s/old.db", dir);
    sqlite_exec(path,
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL);"
                "INSERT INTO schema_version VALUES (1, 1.0);"
                "CREATE TABLE predictions (id INTEGER PRIMARY KEY AUTOINCREMENT, time DOUBLE PRECISION NOT NULL,"
                " line TEXT, station TEXT, camera TEXT, part TEXT, source TEXT NOT NULL, source_path TEXT,"
                " request_id TEXT UNIQUE, image_sha256 TEXT NOT NULL, image_copy TEXT, model_sha256 TEXT NOT NULL,"
                " model_version TEXT, class TEXT NOT NULL, confidence DOUBLE PRECISION NOT NULL, scores TEXT NOT NULL,"
                " decision TEXT NOT NULL CHECK (decision IN ('accepted','uncertain')));"
                "CREATE INDEX predictions_time ON predictions(time);"
                "CREATE TABLE action_outcomes (id INTEGER PRIMARY KEY AUTOINCREMENT, prediction_id BIGINT NOT NULL"
                " REFERENCES predictions(id), rule TEXT NOT NULL, kind TEXT NOT NULL, target TEXT, status TEXT NOT NULL,"
                " attempts INTEGER NOT NULL, detail TEXT, time DOUBLE PRECISION NOT NULL);"
                "INSERT INTO predictions(time, line, source, image_sha256, model_sha256, class, confidence, scores,"
                " decision) VALUES (5.0, 'L9', 'http', 'x', 'y', 'crazing', 0.7, '{}', 'accepted');"
                "INSERT INTO action_outcomes(prediction_id, rule, kind, status, attempts, time)"
                " VALUES (1, 'r', 'command', 'ok', 1, 5.5);");
    dn_store *s = NULL;
    CHECK_MSG(dn_store_open(path, &s) == DN_OK, "%s", dn_last_error());
    if (s) {
        CHECK(dn_store_schema_version(s) == DN_STORE_SCHEMA_VERSION);
        int64_t n = 0;
        dn_pred_filter f = {0};
        f.line = "L9";
        CHECK(dn_store_count(s, &f, &n) == DN_OK && n == 1);
        /* v5 rebuilt the table: the old row, its outcome and the foreign key survive */
        dn_pred_row row;
        int found = 0, outcomes = 0;
        CHECK(dn_store_get(s, 1, &row, &found) == DN_OK && found);
        if (found) {
            CHECK(!strcmp(row.cls, "crazing") && !strcmp(row.decision, "accepted") && isnan(row.ood_score) && !row.heatmap);
            dn_pred_row_clear(&row);
        }
        CHECK(dn_store_outcomes(s, 1, outcome_cb, &outcomes) == DN_OK && outcomes == 1);
        dn_outcome_row o = {999, "r", "command", NULL, "ok", NULL, 1, 6.0};
        CHECK(dn_store_add_outcome(s, &o) != DN_OK); /* no prediction 999: refused */
        check_unknown_rows(s, "L9");
        int64_t id = 0;
        dn_pred_record r = rec(9.0, "L9", "ok", 0.9f, 0);
        CHECK(dn_store_insert(s, &r, &id, NULL) == DN_OK && id == 4); /* ids continue after the copied ones */
        dn_store_close(s);
    }
    /* the widened CHECK still refuses other words */
    {
        sqlite3 *db = NULL;
        CHECK(sqlite3_open(path, &db) == SQLITE_OK);
        CHECK(sqlite3_exec(db, "INSERT INTO predictions(time, source, image_sha256, model_sha256, class, confidence,"
                               " scores, decision) VALUES (1, 'http', 'x', 'y', 'c', 0.5, '{}', 'maybe')",
                           NULL, NULL, NULL) == SQLITE_CONSTRAINT);
        sqlite3_close(db);
    }
    /* the v2 indexes exist */
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_stmt *st = NULL;
    CHECK(sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master WHERE type='index' AND name IN"
                                 " ('predictions_source','action_outcomes_pred')", -1, &st, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) == 2);
    sqlite3_finalize(st);
    sqlite3_close(db);
    h_rmrf(dir);
}

TEST(sqlite_newer_schema_refused) {
    char dir[256], path[300];
    CHECK(h_tmpdir(dir, sizeof dir, "store") == 0);
    snprintf(path, sizeof path, "%s/new.db", dir);
    sqlite_exec(path, "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION);"
                      "INSERT INTO schema_version VALUES (99, 1.0);");
    dn_store *s = NULL;
    CHECK(dn_store_open(path, &s) == DN_ERR_DB && !s);
    CHECK(strstr(dn_last_error(), "newer") && strstr(dn_last_error(), "new.db"));
    h_rmrf(dir);
}

TEST(sqlite_bad_inputs) {
    dn_store *s = NULL;
    CHECK(dn_store_open("sqlite:/nonexistent-dir-dn/x.db", &s) == DN_ERR_DB && !s);
    CHECK(strstr(dn_last_error(), "/nonexistent-dir-dn/x.db") != NULL);
    CHECK(dn_store_open("", &s) == DN_ERR_ARG);
    CHECK(dn_store_open("sqlite:", &s) == DN_ERR_ARG);
    char dir[256], path[300];
    CHECK(h_tmpdir(dir, sizeof dir, "store") == 0);
    snprintf(path, sizeof path, "%s/junk.db", dir);
    FILE *f = fopen(path, "wb");
    if (f) {
        for (int i = 0; i < 200; i++) fputs("this is not a database file at all ", f);
        fclose(f);
    }
    CHECK(dn_store_open(path, &s) == DN_ERR_DB && !s);
    CHECK(strstr(dn_last_error(), "junk.db") != NULL);
    CHECK(dn_store_open(dir, &s) == DN_ERR_DB && !s); /* a directory */
    h_rmrf(dir);
}

typedef struct { dn_store *s; int64_t ids[50]; int fail; } thr_arg;
static void *inserter(void *p) {
    thr_arg *a = p;
    for (int i = 0; i < 50; i++) {
        dn_pred_record r = rec(1e9 + i, "L1", "ok", 0.9f, 0);
        if (dn_store_insert(a->s, &r, &a->ids[i], NULL)) a->fail++;
    }
    return NULL;
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void concurrent(const char *url) {
    dn_store *s = NULL;
    CHECK(dn_store_open(url, &s) == DN_OK);
    if (!s) return;
    thr_arg a[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        memset(&a[i], 0, sizeof a[i]);
        a[i].s = s;
        pthread_create(&t[i], NULL, inserter, &a[i]);
    }
    int64_t all[200];
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK(a[i].fail == 0);
        memcpy(all + 50 * i, a[i].ids, sizeof a[i].ids);
    }
    qsort(all, 200, sizeof all[0], cmp64);
    int dup = 0;
    for (int i = 1; i < 200; i++) dup += all[i] == all[i - 1];
    CHECK(dup == 0 && all[0] > 0);
    int64_t n = 0;
    CHECK(dn_store_count(s, NULL, &n) == DN_OK);
    dn_store_close(s);
    (void)n;
}

TEST(sqlite_concurrent_inserts) {
    char dir[256], url[400];
    CHECK(h_tmpdir(dir, sizeof dir, "store") == 0);
    snprintf(url, sizeof url, "sqlite:%s/c.db", dir);
    concurrent(url);
    dn_store *s = NULL;
    CHECK(dn_store_open(url, &s) == DN_OK);
    int64_t n = 0;
    if (s) { CHECK(dn_store_count(s, NULL, &n) == DN_OK && n == 200); dn_store_close(s); }
    h_rmrf(dir);
}

static h_pg g_pg;
static int g_pg_ok;
static char g_pg_why[256];

TEST(postgres_roundtrip) {
    if (!g_pg_ok) SKIP("%s", g_pg_why);
    exercise(g_pg.url);
}

TEST(postgres_concurrent_and_bad_url) {
    if (!g_pg_ok) SKIP("%s", g_pg_why);
    /* a second opener on a migrated database applies nothing and works */
    concurrent(g_pg.url);
    dn_store *s = NULL;
    char bad[300];
    snprintf(bad, sizeof bad, "postgres://dn:secret@127.0.0.1:%d/nosuchdb", g_pg.port);
    CHECK(dn_store_open(bad, &s) == DN_ERR_DB && !s);
    CHECK(strstr(dn_last_error(), "nosuchdb") && !strstr(dn_last_error(), "secret"));
}


/* A small known production day set: 2 lines, 3 classes (one "ok"), some uncertain. */
static dn_store *report_db(char *dir, size_t n) {
    char url[400];
    if (h_tmpdir(dir, n, "report")) return NULL;
    snprintf(url, sizeof url, "sqlite:%s/r.db", dir);
    dn_store *s = NULL;
    if (dn_store_open(url, &s)) return NULL;
    double day0 = 1704067200; /* 2024-01-01T00:00:00Z */
    /* (hour offset, line, class, uncertain) */
    struct { double h; const char *line, *cls; int unc; } rows[] = {
        {7, "L1", "ok", 0},      {8, "L1", "scratch", 0},  {9, "L1", "scratch", 1}, {15, "L1", "dent", 0},
        {23, "L2", "ok", 0},     {25, "L2", "scratch", 0}, {30, "L2", "ok", 1},     {31, "L2", "<b>x</b>", 0},
        {33, "L1", "scratch", 0}, {60, "L2", "ok", 0}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        dn_pred_record r = rec(day0 + rows[i].h * 3600, rows[i].line, rows[i].cls, 0.9f, rows[i].unc);
        int64_t id;
        if (dn_store_insert(s, &r, &id, NULL)) { dn_store_close(s); return NULL; }
    }
    return s;
}

TEST(report_counts_and_formats) {
    char dir[256];
    dn_store *s = report_db(dir, sizeof dir);
    CHECK(s != NULL);
    if (!s) return;
    dn_mreport *r = NULL;
    dn_mreport_opts o = {0};
    o.group_by = "line";
    CHECK(dn_mreport_build(s, &o, &r) == DN_OK);
    if (r) {
        CHECK(dn_mreport_total(r) == 10);
        CHECK(dn_mreport_class_count(r, "scratch") == 4 && dn_mreport_class_count(r, "ok") == 4);
        dn_sb b = {0};
        CHECK(dn_mreport_render(r, "csv", &b) == DN_OK);
        /* L1: 5 predictions, 4 defects, 1 uncertain; L2: 5, 2 defects, 1 uncertain */
        CHECK_MSG(b.s && strstr(b.s, "\nL1,5,4,0.800000,1,0.200000,"), "%s", b.s ? b.s : "");
        CHECK(b.s && strstr(b.s, "\nL2,5,2,0.400000,1,0.200000,"));
        dn_sb_free(&b);
        CHECK(dn_mreport_render(r, "json", &b) == DN_OK);
        dn_json *j = b.s ? dn_json_parse(b.s, b.len, NULL, 0) : NULL;
        CHECK(j != NULL);
        if (j) {
            CHECK(dn_json_num(dn_json_get(j, "total"), -1) == 10);
            CHECK(dn_json_num(dn_json_get(j, "defects"), -1) == 6);
            CHECK(dn_json_num(dn_json_get(j, "uncertain"), -1) == 2);
            const dn_json *p = dn_json_get(j, "pareto");
            CHECK(dn_json_len(p) == 3);
            CHECK(!strcmp(dn_json_str(dn_json_get(dn_json_at(p, 0), "class"), ""), "scratch"));
            CHECK_NEAR(dn_json_num(dn_json_get(dn_json_at(p, 2), "cumulative_pct"), 0), 100.0, 1e-9);
            CHECK(dn_json_len(dn_json_get(j, "series")) == 3); /* 3 UTC days (data spans 50 h) */
            CHECK(!strcmp(dn_json_str(dn_json_get(j, "series_unit"), ""), "day"));
            dn_json_free(j);
        }
        dn_sb_free(&b);
        CHECK(dn_mreport_render(r, "xml", &b) == DN_ERR_ARG);
        dn_sb_free(&b);
        dn_mreport_free(r);
    }
    /* by shift (6,14,22): hour 23 of day 0 and hour 25 (01:00 day 1) are both in day 0's S3 */
    o.group_by = "shift";
    CHECK(dn_mreport_build(s, &o, &r) == DN_OK);
    if (r) {
        dn_sb b = {0};
        CHECK(dn_mreport_render(r, "csv", &b) == DN_OK);
        CHECK_MSG(b.s && strstr(b.s, "\n2024-01-01 S3 22:00,2,1,"), "%s", b.s ? b.s : "");
        CHECK(b.s && strstr(b.s, "\n2024-01-01 S1 06:00,3,2,"));
        dn_sb_free(&b);
        dn_mreport_free(r);
    }
    /* data within 48 h: the counts over time are per hour (day 0 has 5 distinct hours) */
    dn_mreport_opts oh = {0};
    CHECK(dn_parse_time("2024-01-01", "from", &oh.from) == DN_OK && dn_parse_time("2024-01-02", "to", &oh.to) == DN_OK);
    CHECK(dn_mreport_build(s, &oh, &r) == DN_OK);
    if (r) {
        dn_sb b = {0};
        CHECK(dn_mreport_render(r, "json", &b) == DN_OK);
        dn_json *j = b.s ? dn_json_parse(b.s, b.len, NULL, 0) : NULL;
        CHECK(j && !strcmp(dn_json_str(dn_json_get(j, "series_unit"), ""), "hour"));
        CHECK(j && dn_json_len(dn_json_get(j, "series")) == 5);
        CHECK(j && !strcmp(dn_json_str(dn_json_get(dn_json_at(dn_json_get(j, "series"), 0), "key"), ""), "2024-01-01 07:00"));
        dn_json_free(j);
        dn_sb_free(&b);
        dn_mreport_free(r);
    }
    /* time range + line filter: day 1 only, L2 */
    o.group_by = "class";
    CHECK(dn_parse_time("2024-01-02", "from", &o.from) == DN_OK);
    CHECK(dn_parse_time("2024-01-03T00:00:00Z", "to", &o.to) == DN_OK);
    o.line = "L2";
    CHECK(dn_mreport_build(s, &o, &r) == DN_OK);
    if (r) {
        CHECK(dn_mreport_total(r) == 3);
        dn_mreport_free(r);
    }
    /* bad options name the problem */
    dn_mreport_opts bad = {0};
    bad.group_by = "week";
    CHECK(dn_mreport_build(s, &bad, &r) == DN_ERR_ARG && strstr(dn_last_error(), "week"));
    bad.group_by = "day";
    bad.shifts = "6,25";
    CHECK(dn_mreport_build(s, &bad, &r) == DN_ERR_ARG && strstr(dn_last_error(), "shifts"));
    double t;
    CHECK(dn_parse_time("2024-13-01", "--from", &t) == DN_ERR_ARG && strstr(dn_last_error(), "--from"));
    CHECK(dn_parse_time("yesterday", "--to", &t) == DN_ERR_ARG);
    CHECK(dn_parse_time("1700000000", "--to", &t) == DN_OK && t == 1700000000);
    dn_store_close(s);
    h_rmrf(dir);
}

/* Counts pixels of a PNG that are clearly coloured (not grey/white/black). */
static long colored_pixels(const char *path, int *w, int *h) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&img, path)) return -1;
    img.format = PNG_FORMAT_RGB;
    size_t n = PNG_IMAGE_SIZE(img);
    unsigned char *buf = malloc(n);
    if (!buf || !png_image_finish_read(&img, NULL, buf, 0, NULL)) { free(buf); png_image_free(&img); return -1; }
    long c = 0;
    for (size_t i = 0; i + 2 < n; i += 3) {
        int mx = buf[i], mn = buf[i];
        for (int k = 1; k < 3; k++) { if (buf[i + k] > mx) mx = buf[i + k]; if (buf[i + k] < mn) mn = buf[i + k]; }
        c += mx - mn > 60;
    }
    *w = (int)img.width;
    *h = (int)img.height;
    free(buf);
    return c;
}

static int count_substr(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

TEST(report_html_renders_in_chromium) {
    if (access("/usr/bin/chromium", X_OK) != 0) SKIP("chromium not installed (Debian package chromium)");
    char dir[256];
    dn_store *s = report_db(dir, sizeof dir);
    CHECK(s != NULL);
    if (!s) return;
    dn_mreport *r = NULL;
    dn_mreport_opts o = {0};
    CHECK(dn_mreport_build(s, &o, &r) == DN_OK);
    dn_sb b = {0};
    CHECK(r && dn_mreport_render(r, "html", &b) == DN_OK);
    dn_mreport_free(r);
    dn_store_close(s);
    if (!b.s) { h_rmrf(dir); return; }
    /* self-contained: no scripts, no external references; user strings escaped */
    CHECK(!strstr(b.s, "<script") && !strstr(b.s, "src=") && !strstr(b.s, "href=") && !strstr(b.s, "url("));
    CHECK(!strstr(b.s, "<b>x</b>") && strstr(b.s, "&lt;b&gt;x&lt;/b&gt;"));
    char html[300], dom[300], png[300], cmd[2000];
    snprintf(html, sizeof html, "%s/report.html", dir);
    snprintf(dom, sizeof dom, "%s/dom.html", dir);
    snprintf(png, sizeof png, "%s/shot.png", dir);
    FILE *f = fopen(html, "wb");
    CHECK(f != NULL);
    if (f) { fwrite(b.s, 1, b.len, f); fclose(f); }
    dn_sb_free(&b);
    const char *flags = "--headless --no-sandbox --disable-gpu --disable-background-networking "
                        "--disable-component-update --disable-sync --no-first-run --disable-dev-shm-usage";
    snprintf(cmd, sizeof cmd, "cd %s && chromium %s --user-data-dir=%s/prof1 --dump-dom file://%s > %s 2>/dev/null",
             dir, flags, dir, html, dom);
    CHECK(system(cmd) == 0);
    uint8_t *d = NULL;
    size_t dl = 0;
    CHECK(dn_read_file(dom, 1 << 24, &d, &dl) == DN_OK);
    if (d) {
        char *t = malloc(dl + 1);
        memcpy(t, d, dl);
        t[dl] = 0;
        /* the browser parsed 5 charts (p-charts of L1 and L2, series, pareto, estimated accuracy
         * over time = drift); bars: series 7 non-empty (day,class) cells, pareto 3 (rates per
         * group are table meters) */
        CHECK_MSG(count_substr(t, "<svg") == 5, "svg count %d", count_substr(t, "<svg"));
        CHECK_MSG(count_substr(t, "class=\"bar\"") == 7 + 3, "bar count %d", count_substr(t, "class=\"bar\""));
        CHECK(strstr(t, "id=\"kpi-total\">10<"));
        CHECK(strstr(t, "class=\"cumulative\""));
        free(t);
        free(d);
    }
    snprintf(cmd, sizeof cmd, "cd %s && chromium %s --user-data-dir=%s/prof2 --window-size=900,1400 --screenshot=%s file://%s >/dev/null 2>&1",
             dir, flags, dir, png, html);
    CHECK(system(cmd) == 0);
    int w = 0, h = 0;
    long col = colored_pixels(png, &w, &h);
    printf("  chromium screenshot %dx%d, %ld coloured pixels\n", w, h, col);
    CHECK(col > 5000); /* the bars really got painted */
    h_rmrf(dir);
}


static int pg_exec(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok) printf("  %s\n", PQerrorMessage(c));
    PQclear(r);
    return ok;
}

TEST(postgres_migrates_v1) {
    if (!g_pg_ok) SKIP("%s", g_pg_why);
    PGconn *c = PQconnectdb(g_pg.url);
    CHECK(PQstatus(c) == CONNECTION_OK);
    CHECK(pg_exec(c, "CREATE DATABASE v1db"));
    PQfinish(c);
    char url[300];
    snprintf(url, sizeof url, "postgres://dn@127.0.0.1:%d/v1db", g_pg.port);
    c = PQconnectdb(url);
    CHECK(PQstatus(c) == CONNECTION_OK);
    /* the schema as release 1 created it, with one prediction */
    CHECK(pg_exec(c, "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL);"
                     "INSERT INTO schema_version VALUES (1, 1.0);"
                     "CREATE TABLE predictions (id BIGSERIAL PRIMARY KEY, time DOUBLE PRECISION NOT NULL,"
                     " line TEXT, station TEXT, camera TEXT, part TEXT, source TEXT NOT NULL, source_path TEXT,"
                     " request_id TEXT UNIQUE, image_sha256 TEXT NOT NULL, image_copy TEXT, model_sha256 TEXT NOT NULL,"
                     " model_version TEXT, class TEXT NOT NULL, confidence DOUBLE PRECISION NOT NULL, scores TEXT NOT NULL,"
                     " decision TEXT NOT NULL CHECK (decision IN ('accepted','uncertain')));"
                     "CREATE INDEX predictions_time ON predictions(time);"
                     "CREATE TABLE action_outcomes (id BIGSERIAL PRIMARY KEY, prediction_id BIGINT NOT NULL"
                     " REFERENCES predictions(id), rule TEXT NOT NULL, kind TEXT NOT NULL, target TEXT, status TEXT NOT NULL,"
                     " attempts INTEGER NOT NULL, detail TEXT, time DOUBLE PRECISION NOT NULL);"
                     "INSERT INTO predictions(time, line, source, image_sha256, model_sha256, class, confidence, scores,"
                     " decision) VALUES (5.0, 'L9', 'http', 'x', 'y', 'crazing', 0.7, '{}', 'accepted');"));
    dn_store *s = NULL;
    CHECK_MSG(dn_store_open(url, &s) == DN_OK, "%s", dn_last_error());
    if (s) {
        CHECK(dn_store_schema_version(s) == DN_STORE_SCHEMA_VERSION);
        int64_t n = 0;
        dn_pred_filter f = {0};
        f.line = "L9";
        CHECK(dn_store_count(s, &f, &n) == DN_OK && n == 1);
        dn_pred_record r = rec(6.0, "L9", "ok", 0.9f, 0);
        int64_t id = 0;
        CHECK(dn_store_insert(s, &r, &id, NULL) == DN_OK && id == 2);
        check_unknown_rows(s, "L9"); /* v5: the constraint was replaced, the columns added */
        dn_store_close(s);
    }
    CHECK(!pg_exec(c, "INSERT INTO predictions(time, source, image_sha256, model_sha256, class, confidence, scores,"
                      " decision) VALUES (1, 'http', 'x', 'y', 'c', 0.5, '{}', 'maybe')"));
    PGresult *q = PQexec(c, "SELECT count(*) FROM pg_indexes WHERE indexname IN ('predictions_source','action_outcomes_pred')");
    CHECK(PQresultStatus(q) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(q, 0, 0), "2"));
    PQclear(q);
    /* a newer schema is refused */
    CHECK(pg_exec(c, "INSERT INTO schema_version VALUES (77, 2.0)"));
    CHECK(dn_store_open(url, &s) == DN_ERR_DB && strstr(dn_last_error(), "newer"));
    PQfinish(c);
}

/* Disk full while committing (issue 9 row 1). A file-size limit (RLIMIT_FSIZE, with
 * SIGXFSZ ignored) makes every write that would grow a file fail with EFBIG, as a
 * full filesystem does with ENOSPC: the WAL cannot take the commit. With INSERT ...
 * RETURNING the row comes back before the commit, so an insert must be stepped to
 * SQLITE_DONE (where the autocommit happens) and its failure reported: never an id
 * for a row that is not on disk, never that id handed to a later request twice. */
static int limit_file_size(rlim_t n, rlim_t *old) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_FSIZE, &rl)) return -1;
    if (old) *old = rl.rlim_cur;
    rl.rlim_cur = n;
    return setrlimit(RLIMIT_FSIZE, &rl);
}

TEST(sqlite_disk_full_never_acknowledged) {
    char dir[256], url[400];
    CHECK(h_tmpdir(dir, sizeof dir, "full") == 0);
    snprintf(url, sizeof url, "sqlite:%s/f.db", dir);
    dn_store *s = NULL;
    CHECK_MSG(dn_store_open(url, &s) == DN_OK, "%s", dn_last_error());
    if (!s) { h_rmrf(dir); return; }
    int64_t first[3];
    for (int i = 0; i < 3; i++) {
        dn_pred_record r = rec(1000 + i, "L1", "ok", 0.9f, 0);
        CHECK(dn_store_insert(s, &r, &first[i], NULL) == DN_OK);
    }
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    fflush(stdout); /* nothing may be written to a log file while files cannot grow */
    fflush(stderr);
    rlim_t old = 0;
    int lim = limit_file_size(4096, &old);
    dn_status st[5];
    int64_t got[5];
    char msg[5][256];
    int oerr = -1;
    if (lim == 0) {
        for (int i = 0; i < 5; i++) {
            char rid[16];
            snprintf(rid, sizeof rid, "full-%d", i);
            dn_pred_record r = rec(2000 + i, "L1", "ok", 0.9f, 0);
            r.request_id = rid;
            got[i] = -1;
            st[i] = dn_store_insert(s, &r, &got[i], NULL);
            snprintf(msg[i], sizeof msg[i], "%s", dn_last_error());
        }
        dn_outcome_row o = {first[0], "r", "command", "x", "ok", NULL, 1, 3000};
        oerr = dn_store_add_outcome(s, &o);
        limit_file_size(old, NULL);
    }
    signal(SIGXFSZ, prev);
    CHECK(lim == 0);
    if (lim == 0) {
        for (int i = 0; i < 5; i++) {
            CHECK_MSG(st[i] == DN_ERR_BUSY && got[i] == 0, "insert %d under a full disk: status %d id %lld (%s)",
                      i, (int)st[i], (long long)got[i], msg[i]);
            CHECK_MSG(strstr(msg[i], dir) != NULL, "%s", msg[i]); /* names the database */
        }
        CHECK(oerr == DN_ERR_BUSY);
    }
    /* nothing half-written: the three committed rows, no outcome; the store is usable again */
    int64_t n = -1;
    CHECK(dn_store_count(s, NULL, &n) == DN_OK && n == 3);
    CHECK(dn_store_count_outcomes(s, NULL, &n) == DN_OK && n == 0);
    dn_pred_record r = rec(4000, "L1", "ok", 0.9f, 0);
    r.request_id = "full-0"; /* the client's retry of the failed request */
    int64_t id = 0, id2 = 0;
    int existed = -1;
    CHECK(dn_store_insert(s, &r, &id, &existed) == DN_OK && existed == 0 && id > first[2]);
    CHECK(dn_store_insert(s, &r, &id2, &existed) == DN_OK && existed == 1 && id2 == id);
    CHECK(dn_store_count(s, NULL, &n) == DN_OK && n == 4);
    /* a write refused for good (no such prediction: foreign key) is an error too */
    dn_outcome_row bad = {id + 1000, "r", "command", "x", "ok", NULL, 1, 3000};
    CHECK(dn_store_add_outcome(s, &bad) == DN_ERR_DB);
    CHECK(dn_store_count_outcomes(s, NULL, &n) == DN_OK && n == 0);
    dn_store_close(s);
    /* and it is on disk */
    CHECK(dn_store_open(url, &s) == DN_OK);
    if (s) {
        dn_pred_row row;
        int found = 0;
        CHECK(dn_store_get(s, id, &row, &found) == DN_OK && found && row.request_id && !strcmp(row.request_id, "full-0"));
        dn_pred_row_clear(&row);
        dn_store_close(s);
    }
    h_rmrf(dir);
}

/* PostgreSQL: a deferred constraint trigger fails the COMMIT of the implicit
 * transaction after INSERT ... RETURNING produced its row (as a disk full or a
 * serialization failure at commit would). The store must report it, and a
 * resource error (SQLSTATE class 53) is the retryable status. */
TEST(postgres_failed_commit_is_an_error) {
    if (!g_pg_ok) SKIP("%s", g_pg_why);
    PGconn *c = PQconnectdb(g_pg.url);
    CHECK(PQstatus(c) == CONNECTION_OK);
    CHECK(pg_exec(c, "CREATE DATABASE fulldb"));
    PQfinish(c);
    char url[300];
    snprintf(url, sizeof url, "postgres://dn@127.0.0.1:%d/fulldb", g_pg.port);
    dn_store *s = NULL;
    CHECK_MSG(dn_store_open(url, &s) == DN_OK, "%s", dn_last_error());
    if (!s) return;
    int64_t id0 = 0;
    dn_pred_record r = rec(1.0, "L1", "ok", 0.9f, 0);
    CHECK(dn_store_insert(s, &r, &id0, NULL) == DN_OK && id0 > 0);
    c = PQconnectdb(url);
    CHECK(pg_exec(c, "CREATE FUNCTION dn_full() RETURNS trigger AS $$ BEGIN"
                     " RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';"
                     " END $$ LANGUAGE plpgsql;"
                     "CREATE CONSTRAINT TRIGGER dn_full AFTER INSERT ON predictions DEFERRABLE INITIALLY DEFERRED"
                     " FOR EACH ROW EXECUTE FUNCTION dn_full();"
                     "CREATE CONSTRAINT TRIGGER dn_full AFTER INSERT ON action_outcomes DEFERRABLE INITIALLY DEFERRED"
                     " FOR EACH ROW EXECUTE FUNCTION dn_full();"));
    int64_t id = -1;
    r.request_id = "pg-full";
    CHECK_MSG(dn_store_insert(s, &r, &id, NULL) == DN_ERR_BUSY && id == 0, "id %lld: %s", (long long)id, dn_last_error());
    CHECK(strstr(dn_last_error(), "No space left") != NULL);
    dn_outcome_row o = {id0, "r", "command", "x", "ok", NULL, 1, 2.0};
    CHECK(dn_store_add_outcome(s, &o) == DN_ERR_BUSY);
    int64_t n = -1;
    CHECK(dn_store_count(s, NULL, &n) == DN_OK && n == 1);
    CHECK(dn_store_count_outcomes(s, NULL, &n) == DN_OK && n == 0);
    CHECK(pg_exec(c, "DROP TRIGGER dn_full ON predictions; DROP TRIGGER dn_full ON action_outcomes"));
    int existed = -1;
    CHECK(dn_store_insert(s, &r, &id, &existed) == DN_OK && existed == 0 && id > id0);
    CHECK(dn_store_add_outcome(s, &o) == DN_OK);
    /* a write the database refuses for good (unknown prediction id): an error, not success */
    dn_outcome_row bad = {id + 1000, "r", "command", "x", "ok", NULL, 1, 2.0};
    CHECK(dn_store_add_outcome(s, &bad) == DN_ERR_DB);
    CHECK(dn_store_count_outcomes(s, NULL, &n) == DN_OK && n == 1);
    dn_store_close(s);
    PQfinish(c);
}

int main(void) {
    RUN(sqlite_roundtrip);
    RUN(sqlite_migrates_v1);
    RUN(sqlite_newer_schema_refused);
    RUN(sqlite_bad_inputs);
    RUN(sqlite_concurrent_inserts);
    RUN(sqlite_disk_full_never_acknowledged);
    RUN(report_counts_and_formats);
    RUN(report_html_renders_in_chromium);
    g_pg_ok = h_pg_start(&g_pg, g_pg_why, sizeof g_pg_why);
    RUN(postgres_roundtrip);
    RUN(postgres_concurrent_and_bad_url);
    RUN(postgres_migrates_v1);
    RUN(postgres_failed_commit_is_an_error);
    if (g_pg_ok) h_pg_stop(&g_pg);
    return REPORT();
}
