/* The prediction store's schema: versioned migrations (table schema_version), applied
 * by dn_store_open inside one transaction (PostgreSQL: serialised between concurrent
 * openers with an advisory lock). A database newer than this build is refused. */
#include "serve/store_int.h"
#include "core/core.h"
#include <stdio.h>
#include <string.h>
#include <time.h>

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
/* v4: the review queue (labels by reviewers) and the shadow model's answers (docs/review.md) */
static const char *const mig_v4[] = {
    "CREATE TABLE review_items ("
    " prediction_id BIGINT PRIMARY KEY REFERENCES predictions(id),"
    " reason TEXT NOT NULL, queued_at DOUBLE PRECISION NOT NULL,"
    " status TEXT NOT NULL CHECK (status IN ('open','final')),"
    " label TEXT, final_at DOUBLE PRECISION, neighbours TEXT)",
    "CREATE INDEX review_items_open ON review_items(status, prediction_id)",
    "CREATE INDEX review_items_queued ON review_items(queued_at)",
    "CREATE TABLE review_labels ("
    " id %ID%,"
    " prediction_id BIGINT NOT NULL REFERENCES review_items(prediction_id),"
    " label TEXT NOT NULL, reviewer TEXT NOT NULL, time DOUBLE PRECISION NOT NULL,"
    " UNIQUE (prediction_id, reviewer))",
    "CREATE TABLE shadow_predictions ("
    " prediction_id BIGINT PRIMARY KEY REFERENCES predictions(id),"
    " model_sha256 TEXT NOT NULL, model_version TEXT, class TEXT NOT NULL,"
    " confidence DOUBLE PRECISION NOT NULL, scores TEXT NOT NULL, decision TEXT NOT NULL,"
    " time DOUBLE PRECISION NOT NULL)",
    NULL};
/* v5: unknown inputs (docs/ood.md): decision 'unknown', the ood_score and the Grad-CAM
 * heatmap path. SQLite cannot widen a CHECK constraint in place: the table is rebuilt
 * (the documented procedure: new table, copy, drop, rename, indexes; foreign keys are off
 * around the migration's transaction); PostgreSQL replaces the constraint. Statements
 * prefixed "sqlite:" / "pg:" run on that backend only. */
static const char *const mig_v5[] = {
    "sqlite:CREATE TABLE predictions_v5 ("
    " id %ID%,"
    " time DOUBLE PRECISION NOT NULL,"
    " line TEXT, station TEXT, camera TEXT, part TEXT,"
    " source TEXT NOT NULL, source_path TEXT, request_id TEXT UNIQUE,"
    " image_sha256 TEXT NOT NULL, image_copy TEXT,"
    " model_sha256 TEXT NOT NULL, model_version TEXT,"
    " class TEXT NOT NULL, confidence DOUBLE PRECISION NOT NULL, scores TEXT NOT NULL,"
    " decision TEXT NOT NULL CHECK (decision IN ('accepted','uncertain','unknown')),"
    " node TEXT, ood_score REAL, heatmap TEXT)",
    "sqlite:INSERT INTO predictions_v5 (id, time, line, station, camera, part, source, source_path, request_id,"
    " image_sha256, image_copy, model_sha256, model_version, class, confidence, scores, decision, node)"
    " SELECT id, time, line, station, camera, part, source, source_path, request_id,"
    " image_sha256, image_copy, model_sha256, model_version, class, confidence, scores, decision, node"
    " FROM predictions",
    "sqlite:DROP TABLE predictions",
    "sqlite:ALTER TABLE predictions_v5 RENAME TO predictions",
    "sqlite:CREATE INDEX predictions_time ON predictions(time)",
    "sqlite:CREATE INDEX predictions_source ON predictions(source_path, image_sha256)",
    "sqlite:CREATE INDEX predictions_line_time ON predictions(line, time)",
    "pg:ALTER TABLE predictions DROP CONSTRAINT predictions_decision_check",
    "pg:ALTER TABLE predictions ADD CONSTRAINT predictions_decision_check"
    " CHECK (decision IN ('accepted','uncertain','unknown'))",
    "pg:ALTER TABLE predictions ADD COLUMN ood_score REAL",
    "pg:ALTER TABLE predictions ADD COLUMN heatmap TEXT",
    "CREATE INDEX predictions_decision ON predictions(decision, id)",
    NULL};
static const char *const *const migrations[DN_STORE_SCHEMA_VERSION] = {mig_v1, mig_v2, mig_v3, mig_v4, mig_v5};

dn_status dn_store_migrate(dn_store *s) {
    dn_status rc;
    int pg = s->backend == DN_SQ_PG;
    /* a table rebuild (v5) must not cascade through foreign keys; SQLite ignores this
     * pragma inside a transaction, so it brackets the transaction */
    if (!pg && (rc = dn_sq_exec(s, "PRAGMA foreign_keys=OFF"))) return rc;
    if ((rc = dn_sq_exec(s, pg ? "BEGIN" : "BEGIN IMMEDIATE"))) goto fk_on;
    if (pg && (rc = dn_sq_exec(s, "SELECT pg_advisory_xact_lock(7274101)"))) goto fail;
    if ((rc = dn_sq_exec(s, "CREATE TABLE IF NOT EXISTS schema_version ("
                        " version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")))
        goto fail;
    int64_t have = 0;
    if ((rc = dn_sq_run(s, "SELECT max(version) FROM schema_version", NULL, 0, dn_sq_first_int, &have))) goto fail;
    if (have > DN_STORE_SCHEMA_VERSION) {
        rc = dn_fail(DN_ERR_DB, "%s: database schema version %lld is newer than this build supports (%d)",
                     s->url, (long long)have, DN_STORE_SCHEMA_VERSION);
        goto fail;
    }
    for (int v = (int)have + 1; v <= DN_STORE_SCHEMA_VERSION; v++) {
        for (const char *const *st = migrations[v - 1]; *st; st++) {
            char sql[2048];
            const char *id = pg ? "BIGSERIAL PRIMARY KEY" : "INTEGER PRIMARY KEY AUTOINCREMENT";
            const char *src = *st;
            if (!strncmp(src, "sqlite:", 7)) {
                if (pg) continue;
                src += 7;
            } else if (!strncmp(src, "pg:", 3)) {
                if (!pg) continue;
                src += 3;
            }
            const char *m = strstr(src, "%ID%");
            size_t pos = 0;
            while (m) {
                pos += (size_t)snprintf(sql + pos, sizeof sql - pos, "%.*s%s", (int)(m - src), src, id);
                src = m + 4;
                m = strstr(src, "%ID%");
            }
            snprintf(sql + pos, sizeof sql - pos, "%s", src);
            if ((rc = dn_sq_exec(s, sql))) {
                dn_fail_prefix(rc, "migration to schema version %d", v);
                goto fail;
            }
        }
        qparam p[2] = {QI(v), QD(dn_wall_now())};
        if ((rc = dn_sq_run(s, "INSERT INTO schema_version(version, applied_at) VALUES ($1, $2)", p, 2, NULL, NULL)))
            goto fail;
    }
    if ((rc = dn_sq_exec(s, "COMMIT"))) goto fail;
    return pg ? DN_OK : dn_sq_exec(s, "PRAGMA foreign_keys=ON");
fail:;
    char keep[1024];
    snprintf(keep, sizeof keep, "%s", dn_last_error());
    dn_sq_exec(s, "ROLLBACK");
    rc = dn_fail(rc, "%s", keep);
fk_on:
    if (!pg) {
        snprintf(keep, sizeof keep, "%s", dn_last_error());
        dn_sq_exec(s, "PRAGMA foreign_keys=ON");
        dn_fail(rc, "%s", keep);
    }
    return rc;
}

/* ---------------------------------------------------------------- open/close */

int dn_store_schema_version(dn_store *s) {
    int64_t v = -1;
    pthread_mutex_lock(&s->mu);
    if (dn_sq_run(s, "SELECT max(version) FROM schema_version", NULL, 0, dn_sq_first_int, &v)) v = -1;
    pthread_mutex_unlock(&s->mu);
    return (int)v;
}
