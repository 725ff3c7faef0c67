/* `defectnet report` opens its database read-only (issue 13): dn_store_open_readonly
 * and the command on real SQLite files and a real PostgreSQL server.
 *   - a missing SQLite file: exit 2, one line naming it, nothing created;
 *   - a read-only (0444) file works, and its bytes are unchanged afterwards;
 *   - an old schema (v1, no node column) is read without migrating it
 *     (schema_version still 1 afterwards; a read-write open would migrate);
 *   - a SQLite file that is not a prediction store, a newer schema: clear refusals;
 *   - a read-only folder (the WAL index cannot be created): read as immutable;
 *   - PostgreSQL: inserts through a read-only store fail (READ ONLY transactions),
 *     the report reads a v1 database without migrating it.
 * Needs $DN_BIN (tests/run.sh sets it) for the command-line cases. */
#include "harness.h"
#include "serve_util.h"
#include "core/core.h"
#include "serve/store.h"
#include <postgresql/libpq-fe.h>
#include <sqlite3.h>
#include <sys/wait.h>

static const char *g_bin;
static const char *SHA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

static dn_pred_record rec(double t, const char *line, const char *cls) {
    dn_pred_record r = {0};
    r.time = t;
    r.line = line;
    r.source = "http";
    r.image_sha256 = SHA;
    r.model_sha256 = SHA;
    r.cls = cls;
    r.confidence = 0.9f;
    r.scores_json = "{}";
    return r;
}

/* A migrated store at url with n predictions on line L1. */
static int make_store(const char *url, int n) {
    dn_store *s = NULL;
    if (dn_store_open(url, &s)) { printf("  open %s: %s\n", url, dn_last_error()); return -1; }
    int64_t id;
    for (int i = 0; i < n; i++) {
        dn_pred_record r = rec(1711324800 + 60 * i, "L1", i % 3 ? "ok" : "scratch");
        if (dn_store_insert(s, &r, &id, NULL)) { dn_store_close(s); return -1; }
    }
    dn_store_close(s);
    return 0;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap + 1);
    size_t k;
    while (b && (k = fread(b + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) { char *nb = realloc(b, cap * 2 + 1); if (!nb) { free(b); b = NULL; break; } b = nb; cap *= 2; }
    }
    fclose(f);
    if (b) b[n] = 0;
    if (len) *len = n;
    return b;
}

static int same_bytes(const char *path, const char *before, size_t blen) {
    size_t n;
    char *now = slurp(path, &n);
    int same = now && n == blen && !memcmp(now, before, n);
    free(now);
    return same;
}

/* Runs `defectnet report ARGS` (as user when not NULL): exit code; stdout/stderr to files in dir. */
static int report(const char *dir, const char *user, const char *args) {
    char cmd[3000];
    if (user)
        snprintf(cmd, sizeof cmd, "runuser -u %s -- '%s' report %s >'%s/out' 2>'%s/err'", user, g_bin, args, dir, dir);
    else snprintf(cmd, sizeof cmd, "'%s' report %s >'%s/out' 2>'%s/err'", g_bin, args, dir, dir);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int file_has(const char *dir, const char *name, const char *want) {
    char p[700];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    char *s = slurp(p, NULL);
    int ok = s && strstr(s, want);
    if (!ok) printf("  %s lacks '%s': %.300s\n", name, want, s ? s : "(missing)");
    free(s);
    return ok;
}

static int count_lines(const char *dir, const char *name) {
    char p[700];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    char *s = slurp(p, NULL);
    int n = 0;
    for (char *c = s; c && *c; c++) n += *c == '\n';
    free(s);
    return n;
}

static int sqlite_sql(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    int ok = sqlite3_open(path, &db) == SQLITE_OK && sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK;
    if (!ok) printf("  sqlite %s: %s\n", path, db ? sqlite3_errmsg(db) : "?");
    sqlite3_close(db);
    return ok;
}

static long long sqlite_int(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* The schema as release 1 created it (no node column, no v2 indexes), one prediction. */
static const char *V1_SQL =
    "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL);"
    "INSERT INTO schema_version VALUES (1, 1.0);"
    "CREATE TABLE predictions (id %ID%, time DOUBLE PRECISION NOT NULL,"
    " line TEXT, station TEXT, camera TEXT, part TEXT, source TEXT NOT NULL, source_path TEXT,"
    " request_id TEXT UNIQUE, image_sha256 TEXT NOT NULL, image_copy TEXT, model_sha256 TEXT NOT NULL,"
    " model_version TEXT, class TEXT NOT NULL, confidence DOUBLE PRECISION NOT NULL, scores TEXT NOT NULL,"
    " decision TEXT NOT NULL CHECK (decision IN ('accepted','uncertain')));"
    "CREATE TABLE action_outcomes (id %ID%, prediction_id BIGINT NOT NULL"
    " REFERENCES predictions(id), rule TEXT NOT NULL, kind TEXT NOT NULL, target TEXT, status TEXT NOT NULL,"
    " attempts INTEGER NOT NULL, detail TEXT, time DOUBLE PRECISION NOT NULL);"
    "INSERT INTO predictions(time, line, source, image_sha256, model_sha256, class, confidence, scores,"
    " decision) VALUES (1711324800, 'L9', 'http', 'x', 'y', 'scratch', 0.7, '{}', 'accepted');";

static void v1_sql(char *out, size_t n, const char *id) {
    const char *src = V1_SQL, *m;
    size_t pos = 0;
    while ((m = strstr(src, "%ID%"))) {
        pos += (size_t)snprintf(out + pos, n - pos, "%.*s%s", (int)(m - src), src, id);
        src = m + 4;
    }
    snprintf(out + pos, n - pos, "%s", src);
}

TEST(missing_sqlite_refused_not_created) {
    if (!g_bin) SKIP("DN_BIN not set (run through tests/run.sh)");
    char dir[300], args[800], db[400];
    CHECK(h_tmpdir(dir, sizeof dir, "clirep") == 0);
    snprintf(db, sizeof db, "%s/never.db", dir);
    snprintf(args, sizeof args, "--db sqlite:%s --format csv", db);
    CHECK(report(dir, NULL, args) == 2);
    CHECK(file_has(dir, "err", "defectnet report: ") && file_has(dir, "err", "never.db: no such database"));
    CHECK(count_lines(dir, "err") == 1);
    CHECK(access(db, F_OK) != 0);
    char wal[420];
    snprintf(wal, sizeof wal, "%s-wal", db);
    CHECK(access(wal, F_OK) != 0);
    dn_store *s = NULL;
    CHECK(dn_store_open_readonly(db, &s) != DN_OK && !s);
    CHECK(access(db, F_OK) != 0);
    snprintf(args, sizeof args, "--db sqlite:%s", dir); /* a folder */
    CHECK(report(dir, NULL, args) == 2 && file_has(dir, "err", "is a directory"));
    h_rmrf(dir);
}

TEST(readonly_file_reported_and_unchanged) {
    if (!g_bin) SKIP("DN_BIN not set (run through tests/run.sh)");
    char dir[300], db[400], args[800];
    CHECK(h_tmpdir(dir, sizeof dir, "clirep") == 0);
    snprintf(db, sizeof db, "%s/p.db", dir);
    CHECK(make_store(db, 30) == 0);
    CHECK(chmod(db, 0444) == 0);
    size_t blen = 0;
    char *before = slurp(db, &blen);
    CHECK(before && blen > 0);
    snprintf(args, sizeof args, "--db=sqlite:%s -g line -f csv", db);
    int rc = report(dir, NULL, args);
    CHECK_MSG(rc == 0, "exit %d", rc);
    CHECK(file_has(dir, "out", "L1"));
    CHECK(same_bytes(db, before, blen));
    /* the library: scans work, writes are refused */
    dn_store *s = NULL;
    CHECK_MSG(dn_store_open_readonly(db, &s) == DN_OK, "%s", dn_last_error());
    if (s) {
        int64_t n = 0;
        dn_pred_filter f = {0};
        CHECK(dn_store_count(s, &f, &n) == DN_OK && n == 30);
        dn_pred_record r = rec(1, "L2", "ok");
        int64_t id = 0;
        CHECK(dn_store_insert(s, &r, &id, NULL) != DN_OK);
        dn_store_close(s);
    }
    CHECK(same_bytes(db, before, blen));
    free(before);
    h_rmrf(dir);
}

TEST(old_schema_read_not_migrated) {
    if (!g_bin) SKIP("DN_BIN not set (run through tests/run.sh)");
    char dir[300], db[400], args[800], sql[3000];
    CHECK(h_tmpdir(dir, sizeof dir, "clirep") == 0);
    snprintf(db, sizeof db, "%s/v1.db", dir);
    v1_sql(sql, sizeof sql, "INTEGER PRIMARY KEY AUTOINCREMENT");
    CHECK(sqlite_sql(db, sql));
    snprintf(args, sizeof args, "--db sqlite:%s --format json", db);
    int rc = report(dir, NULL, args);
    CHECK_MSG(rc == 0, "exit %d", rc);
    CHECK(file_has(dir, "out", "L9"));
    CHECK(sqlite_int(db, "SELECT max(version) FROM schema_version") == 1);
    CHECK(sqlite_int(db, "SELECT count(*) FROM pragma_table_info('predictions') WHERE name = 'node'") == 0);
    /* a read-write open would have migrated it: the check above can fail */
    dn_store *s = NULL;
    CHECK(dn_store_open(db, &s) == DN_OK);
    dn_store_close(s);
    CHECK(sqlite_int(db, "SELECT max(version) FROM schema_version") == DN_STORE_SCHEMA_VERSION);
    h_rmrf(dir);
}

TEST(not_a_store_and_newer_schema_refused) {
    if (!g_bin) SKIP("DN_BIN not set (run through tests/run.sh)");
    char dir[300], db[400], args[800];
    CHECK(h_tmpdir(dir, sizeof dir, "clirep") == 0);
    snprintf(db, sizeof db, "%s/other.db", dir);
    CHECK(sqlite_sql(db, "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);"));
    snprintf(args, sizeof args, "--db sqlite:%s", db);
    CHECK(report(dir, NULL, args) == 2);
    CHECK(file_has(dir, "err", "not a defectnet prediction database") && count_lines(dir, "err") == 1);
    CHECK(sqlite_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'schema_version'") == 0);
    snprintf(db, sizeof db, "%s/newer.db", dir);
    CHECK(make_store(db, 1) == 0);
    CHECK(sqlite_sql(db, "INSERT INTO schema_version VALUES (99, 1.0);"));
    snprintf(args, sizeof args, "--db sqlite:%s", db);
    CHECK(report(dir, NULL, args) == 2);
    CHECK(file_has(dir, "err", "schema version 99 is newer"));
    h_rmrf(dir);
}

/* A folder nobody may write: the WAL index (-shm) cannot be created. Run as a
 * user without write permission (as root: "nobody" through runuser). */
TEST(readonly_folder_read_as_immutable) {
    if (!g_bin) SKIP("DN_BIN not set (run through tests/run.sh)");
    const char *user = NULL;
    if (geteuid() == 0) {
        if (system("command -v runuser >/dev/null 2>&1") != 0) SKIP("running as root without runuser");
        user = "nobody";
    }
    char dir[300], sub[400], db[500], args[800];
    CHECK(h_tmpdir(dir, sizeof dir, "clirep") == 0);
    snprintf(sub, sizeof sub, "%s/ro", dir);
    CHECK(mkdir(sub, 0755) == 0);
    snprintf(db, sizeof db, "%s/p.db", sub);
    CHECK(make_store(db, 12) == 0);
    CHECK(chmod(db, 0444) == 0 && chmod(sub, 0555) == 0 && chmod(dir, 0777) == 0);
    if (user) {
        char probe[1200];
        snprintf(probe, sizeof probe, "runuser -u nobody -- test -x '%s' 2>/dev/null", g_bin);
        if (system(probe) != 0) { h_rmrf(dir); SKIP("user nobody cannot run %s", g_bin); }
    }
    snprintf(args, sizeof args, "--db sqlite:%s -g line -f csv", db);
    int rc = report(dir, user, args);
    CHECK_MSG(rc == 0, "exit %d", rc);
    CHECK(file_has(dir, "out", "L1"));
    char shm[520];
    snprintf(shm, sizeof shm, "%s-shm", db);
    CHECK(access(shm, F_OK) != 0);
    chmod(sub, 0755);
    h_rmrf(dir);
}

static h_pg g_pg;
static int g_pg_ok;
static char g_pg_why[256];

static int pg_exec(const char *url, const char *sql) {
    PGconn *c = PQconnectdb(url);
    PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    int ok = r && (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK);
    if (!ok) printf("  %s\n", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok;
}

static long long pg_int(const char *url, const char *sql) {
    PGconn *c = PQconnectdb(url);
    PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    long long v = r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    PQfinish(c);
    return v;
}

TEST(postgres_readonly) {
    if (!g_pg_ok) SKIP("%s", g_pg_why);
    char dir[300], url[400], args[800];
    CHECK(h_tmpdir(dir, sizeof dir, "clirep") == 0);
    CHECK(pg_exec(g_pg.url, "CREATE DATABASE ro1"));
    snprintf(url, sizeof url, "postgres://dn@127.0.0.1:%d/ro1", g_pg.port);
    CHECK(make_store(url, 20) == 0);
    dn_store *s = NULL;
    CHECK_MSG(dn_store_open_readonly(url, &s) == DN_OK, "%s", dn_last_error());
    if (s) {
        int64_t n = 0;
        dn_pred_filter f = {0};
        CHECK(dn_store_count(s, &f, &n) == DN_OK && n == 20);
        dn_pred_record r = rec(1, "L2", "ok");
        int64_t id = 0;
        CHECK(dn_store_insert(s, &r, &id, NULL) != DN_OK);
        CHECK(strstr(dn_last_error(), "read-only") != NULL);
        dn_store_close(s);
    }
    CHECK(pg_int(url, "SELECT count(*) FROM predictions") == 20);
    snprintf(args, sizeof args, "--db '%s' -g line -f csv", url);
    int rc = report(dir, NULL, args);
    CHECK_MSG(rc == 0, "exit %d", rc);
    CHECK(file_has(dir, "out", "L1"));
    /* v1 schema: read, not migrated */
    char sql[3000];
    CHECK(pg_exec(g_pg.url, "CREATE DATABASE ro_v1"));
    snprintf(url, sizeof url, "postgres://dn@127.0.0.1:%d/ro_v1", g_pg.port);
    v1_sql(sql, sizeof sql, "BIGSERIAL PRIMARY KEY");
    CHECK(pg_exec(url, sql));
    snprintf(args, sizeof args, "--db '%s' -f json", url);
    rc = report(dir, NULL, args);
    CHECK_MSG(rc == 0, "exit %d", rc);
    CHECK(file_has(dir, "out", "L9"));
    CHECK(pg_int(url, "SELECT max(version) FROM schema_version") == 1);
    /* an empty database is not a store, and stays empty */
    CHECK(pg_exec(g_pg.url, "CREATE DATABASE ro_empty"));
    snprintf(url, sizeof url, "postgres://dn@127.0.0.1:%d/ro_empty", g_pg.port);
    snprintf(args, sizeof args, "--db '%s'", url);
    CHECK(report(dir, NULL, args) == 2 && file_has(dir, "err", "not a defectnet prediction database"));
    CHECK(pg_int(url, "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'public'") == 0);
    h_rmrf(dir);
}

int main(void) {
    g_bin = getenv("DN_BIN");
    if (g_bin && access(g_bin, X_OK) != 0) g_bin = NULL;
    RUN(missing_sqlite_refused_not_created);
    RUN(readonly_file_reported_and_unchanged);
    RUN(old_schema_read_not_migrated);
    RUN(not_a_store_and_newer_schema_refused);
    RUN(readonly_folder_read_as_immutable);
    g_pg_ok = g_bin && h_pg_start(&g_pg, g_pg_why, sizeof g_pg_why);
    if (!g_bin) snprintf(g_pg_why, sizeof g_pg_why, "DN_BIN not set (run through tests/run.sh)");
    RUN(postgres_readonly);
    if (g_pg_ok) h_pg_stop(&g_pg);
    return REPORT();
}
