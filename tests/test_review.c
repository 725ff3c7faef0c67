/* The review loop (docs/review.md) against real components: the policy and label-post
 * parsers, neighbours from a fitted OOD bank (and its class labels through a model
 * file), the review/shadow tables on SQLite files and a PostgreSQL server started here
 * (SKIP when not installed), and `serve` in process with --review/--store-images/
 * --shadow over HTTP: queueing, caps, images, labels, two-reviewer agreement,
 * disagreements, corrupt posts (4xx with a one-line JSON error), the page, compare. */
#include "harness.h"
#include "serve_util.h"
#include "serve_http.h"
#include "ood/ood.h"
#include "serve/mreport.h"
#include "serve/actions.h"
#include "serve/store_review.h"
#include "trust/compare.h"
#include "trust/review.h"
#include "trust/review_serve.h"
#include "trust/shadow.h"
#include <signal.h>

/* ------------------------------------------------------------ policy */

TEST(policy_parse_and_reasons) {
    dn_review_policy p;
    CHECK(dn_review_policy_parse("uncertain, unknown,class:scratch,sample:0.25,cap:100/h,agree:2", "--review", &p) == DN_OK);
    CHECK(p.decisions == ((1 << DN_DECISION_UNCERTAIN) | (1 << DN_DECISION_UNKNOWN)));
    CHECK(p.nclasses == 1 && !strcmp(p.classes[0], "scratch"));
    CHECK(p.sample == 0.25 && p.cap_per_hour == 100 && p.agree == 2 && dn_review_policy_active(&p));
    CHECK(!strcmp(dn_review_reason(&p, 1, DN_DECISION_UNKNOWN, "spot"), "unknown"));
    CHECK(!strcmp(dn_review_reason(&p, 1, DN_DECISION_UNCERTAIN, "scratch"), "uncertain"));
    CHECK(!strcmp(dn_review_reason(&p, 1, DN_DECISION_ACCEPTED, "scratch"), "class"));
    /* the sample: a quarter of accepted predictions, decided by the id alone */
    int picked = 0;
    for (int64_t id = 1; id <= 20000; id++) {
        const char *r = dn_review_reason(&p, id, DN_DECISION_ACCEPTED, "spot");
        if (r) { picked++; CHECK(!strcmp(r, "sample")); }
        CHECK(r == dn_review_reason(&p, id, DN_DECISION_ACCEPTED, "spot"));
    }
    CHECK_MSG(picked > 4700 && picked < 5300, "sampled %d of 20000 at 0.25", picked);
    dn_review_policy_free(&p);
    /* nothing queued without a policy */
    CHECK(dn_review_policy_parse(NULL, "--review", &p) == DN_OK && !dn_review_policy_active(&p) && p.agree == 1);
    CHECK(dn_review_reason(&p, 7, DN_DECISION_UNKNOWN, "x") == NULL);
    static const char *const bad[][2] = {
        {"uncertain,", "empty term"},      {",unknown", "empty term"},     {"maybe", "unknown term 'maybe'"},
        {"sample:0", "sample"},            {"sample:1.5", "sample"},       {"sample:x", "sample"},
        {"cap:100", "cap:N/h"},            {"cap:0/h", "cap:N/h"},         {"cap:5/d", "cap:N/h"},
        {"agree:0", "agree"},              {"agree:10", "agree"},          {"class:", "class name"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dn_status rc = dn_review_policy_parse(bad[i][0], "--review", &p);
        const char *e = dn_last_error();
        CHECK_MSG(rc == DN_ERR_ARG && strstr(e, "--review") && strstr(e, bad[i][1]) && !strchr(e, '\n'), "%s -> %s",
                  bad[i][0], e);
    }
}

TEST(label_post_parser) {
    if (!g_ready) SKIP("model fixture could not be built");
    dn_model *m = NULL;
    CHECK(dn_model_load(g_model, &m) == DN_OK);
    if (!m) return;
    char l[DN_REVIEW_MAX_LABEL], r[DN_REVIEW_MAX_LABEL], err[200], body[600];
    snprintf(body, sizeof body, "{\"label\":\"%s\",\"reviewer\":\"ana\"}", g_names[2]);
    CHECK(dn_review_parse_post(body, strlen(body), m, l, r, err, sizeof err) == DN_OK && !strcmp(l, g_names[2]) &&
          !strcmp(r, "ana"));
    char longname[100];
    memset(longname, 'x', 80);
    longname[80] = 0;
    char lng[300];
    snprintf(lng, sizeof lng, "{\"label\":\"%s\",\"reviewer\":\"%s\"}", g_names[0], longname);
    char ctl[200];
    snprintf(ctl, sizeof ctl, "{\"label\":\"%s\",\"reviewer\":\"a\\u0007b\"}", g_names[0]);
    char extra[200];
    snprintf(extra, sizeof extra, "{\"label\":\"%s\",\"reviewer\":\"a\",\"x\":1}", g_names[0]);
    char norev[200];
    snprintf(norev, sizeof norev, "{\"label\":\"%s\"}", g_names[0]);
    const char *const cases[][2] = {
        {"", "empty body"},
        {"{\"label\":", "bad JSON"},
        {"[1,2]", "JSON object"},
        {"{\"label\":\"no-such-class\",\"reviewer\":\"ana\"}", "not a class of the model"},
        {"{\"label\":7,\"reviewer\":\"ana\"}", "label: expected a string"},
        {"{\"reviewer\":\"ana\"}", "label: missing"},
        {norev, "reviewer: missing"},
        {lng, "reviewer: expected 1..64"},
        {ctl, "control characters"},
        {extra, "unknown key 'x'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = 0;
        dn_status rc = dn_review_parse_post(cases[i][0], strlen(cases[i][0]), m, l, r, err, sizeof err);
        CHECK_MSG(rc == DN_ERR_ARG && strstr(err, cases[i][1]) && !strchr(err, '\n'), "case %zu: %s", i, err);
    }
    dn_model_free(m);
}

/* ------------------------------------------------------------ neighbours */

TEST(neighbours_from_bank_with_labels) {
    if (!g_ready) SKIP("model fixture could not be built");
    dn_model *m = NULL;
    CHECK(dn_model_load(g_model, &m) == DN_OK);
    if (!m) return;
    int D = m->feat_dim, nfit = 60, nval = 30;
    float *fit = malloc(sizeof(float) * (size_t)D * nfit), *val = malloc(sizeof(float) * (size_t)D * nval);
    int *y = malloc(sizeof(int) * nfit);
    dn_rng rng;
    dn_rng_seed(&rng, 5);
    for (int i = 0; i < nfit; i++) {
        y[i] = i % NCLS;
        for (int j = 0; j < D; j++) fit[(size_t)i * D + j] = (float)(dn_rng_uniform(&rng) + (j % NCLS == y[i] ? 2.0 : 0.0));
    }
    for (size_t i = 0; i < (size_t)D * nval; i++) val[i] = (float)dn_rng_uniform(&rng);
    dn_ood_cfg cfg;
    dn_ood_cfg_default(&cfg);
    cfg.bank = 40; /* a subset: the labels must follow the chosen rows */
    dn_ood *o = NULL;
    CHECK(dn_ood_fit(m, fit, y, nfit, val, nval, &cfg, &o) == DN_OK && o && o->bank_y);
    if (!o) goto done;
    m->ood = o;
    /* a query near fit row 7: its nearest bank rows, checked by brute force */
    float q[4096];
    for (int j = 0; j < D; j++) q[j] = fit[(size_t)7 * D + j] * 1.01f;
    dn_review_nb nb[5];
    int n = 0;
    dn_review_neighbours(m, q, 5, nb, &n);
    CHECK(n == 5);
    for (int i = 0; i < n; i++) {
        CHECK(nb[i].cls == o->bank_y[nb[i].row]);
        if (i) CHECK(nb[i].distance >= nb[i - 1].distance);
    }
    double qn = 0;
    for (int j = 0; j < D; j++) qn += (double)q[j] * q[j];
    int closer = 0; /* bank rows strictly closer than the 5th: at most 4 */
    for (int r = 0; r < o->nbank; r++) {
        double dot = 0;
        for (int j = 0; j < D; j++) dot += (double)q[j] * dn_f16_to_f32(o->bank[(size_t)r * D + j]); /* fp16 rows */
        double d = 1.0 - dot / sqrt(qn);
        if (d < nb[4].distance - 1e-5) closer++;
        if (r == nb[0].row) CHECK_NEAR(d, nb[0].distance, 1e-5);
    }
    CHECK(closer <= 4);
    /* the labels survive the model file; a file without them still loads */
    char path[600];
    snprintf(path, sizeof path, "%s/ood_model.safetensors", g_dir);
    CHECK(dn_model_save(m, path) == DN_OK);
    dn_model *m2 = NULL;
    CHECK(dn_model_load(path, &m2) == DN_OK && m2 && m2->ood && m2->ood->bank_y);
    if (m2 && m2->ood && m2->ood->bank_y)
        CHECK(!memcmp(m2->ood->bank_y, o->bank_y, sizeof(int) * (size_t)o->nbank));
    dn_model_free(m2);
    int *keep = o->bank_y;
    o->bank_y = NULL;
    CHECK(dn_model_save(m, path) == DN_OK);
    o->bank_y = keep;
    m2 = NULL;
    CHECK(dn_model_load(path, &m2) == DN_OK && m2 && m2->ood && !m2->ood->bank_y);
    if (m2) {
        dn_review_neighbours(m2, q, 3, nb, &n);
        CHECK(n == 3 && nb[0].cls == -1);
    }
    dn_model_free(m2);
    /* through serve: a queued item lists its nearest bank rows with their classes */
    {
        char mp[600], db[600];
        snprintf(mp, sizeof mp, "%s/ood_model2.safetensors", g_dir);
        snprintf(db, sizeof db, "sqlite:%s/neighbours.db", g_dir);
        CHECK(dn_model_save(m, mp) == DN_OK);
        dn_server_config c = {0};
        c.model_path = mp;
        c.db_url = db;
        c.listen = "127.0.0.1:0";
        c.quiet = 1;
        c.workers = 1;
        c.review = "accepted,uncertain,unknown";
        dn_server *s = NULL;
        if (dn_server_start(&c, &s)) printf("  start: %s\n", dn_last_error());
        CHECK(s != NULL);
        if (s) {
            resp r;
            CHECK(post_image(dn_server_port(s), 2, NULL, &r) == 200);
            resp_free(&r);
            CHECK(http(dn_server_port(s), "GET", "/v1/review", NULL, 0, NULL, &r) == 200);
            dn_json *j = resp_json(&r);
            const dn_json *nbs = dn_json_get(dn_json_at(dn_json_get(j, "items"), 0), "neighbours");
            CHECK_MSG(dn_json_len(nbs) == 5, "%s", r.body.s ? r.body.s : "");
            for (size_t i = 0; i < dn_json_len(nbs); i++) {
                const dn_json *e = dn_json_at(nbs, i);
                int row = (int)dn_json_num(dn_json_get(e, "row"), -1);
                CHECK(row >= 0 && row < o->nbank && dn_json_num(dn_json_get(e, "distance"), -9) >= -1e-6);
                if (row >= 0 && row < o->nbank)
                    CHECK(!strcmp(dn_json_str(dn_json_get(e, "class"), ""), m->class_names[o->bank_y[row]]));
            }
            dn_json_free(j);
            resp_free(&r);
            dn_server_stop(s);
        }
    }
    /* no bank: no neighbours */
    m->ood = NULL;
    dn_review_neighbours(m, q, 5, nb, &n);
    CHECK(n == 0);
    m->ood = o;
done:
    dn_model_free(m);
    free(fit);
    free(val);
    free(y);
}

/* ------------------------------------------------------------ store */

static int64_t add_pred(dn_store *s, const char *cls, double t) {
    dn_pred_record r = {0};
    r.time = t;
    r.source = "http";
    r.image_sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    r.model_sha256 = "m";
    r.model_version = "v1";
    r.cls = cls;
    r.confidence = 0.9f;
    r.scores_json = "{}";
    int64_t id = 0;
    if (dn_store_insert(s, &r, &id, NULL)) printf("  insert: %s\n", dn_last_error());
    return id;
}

typedef struct { int n; char last[64]; } lab_acc;
static int count_labels(void *ctx, const char *label, const char *reviewer, double t) {
    lab_acc *a = ctx;
    a->n++;
    snprintf(a->last, sizeof a->last, "%s/%s", label, reviewer);
    return 0;
}
static int count_final(void *ctx, int64_t id, const char *label, const char *copy, const char *sha, const char *pred,
                       double t) {
    (*(int *)ctx)++;
    return 0;
}

static void store_review_checks(const char *url) {
    dn_store *s = NULL;
    CHECK(dn_store_open(url, &s) == DN_OK);
    if (!s) { printf("  %s\n", dn_last_error()); return; }
    double t0 = 1.7e9;
    int64_t ids[6];
    for (int i = 0; i < 6; i++) ids[i] = add_pred(s, i % 2 ? "spot" : "scratch", t0 + i);
    int q = 0;
    /* cap 3 per rolling hour: the 4th in the hour is refused, one an hour later is taken */
    const char *reasons[4] = {"sample", "unknown", "class", "uncertain"};
    for (int i = 0; i < 4; i++) {
        CHECK(dn_store_review_enqueue(s, ids[i], reasons[i], i == 1 ? "[{\"row\":3,\"class\":\"spot\",\"distance\":0.1}]" : NULL,
                                      t0 + 10 + i, 3, &q) == DN_OK);
        CHECK(q == (i < 3));
    }
    CHECK(dn_store_review_enqueue(s, ids[0], "unknown", NULL, t0 + 20, 0, &q) == DN_OK && q == 0); /* queued already */
    CHECK(dn_store_review_enqueue(s, ids[4], "uncertain", NULL, t0 + 3700, 3, &q) == DN_OK && q == 1);
    CHECK(dn_store_review_enqueue(s, 999999, "unknown", NULL, t0 + 3700, 0, &q) != DN_OK); /* no such prediction */
    /* order: unknown, uncertain, class, sample */
    dn_review_item *it = NULL;
    size_t n = 0;
    CHECK(dn_store_review_next(s, 10, NULL, &it, &n) == DN_OK && n == 4);
    if (n == 4) {
        CHECK(it[0].id == ids[1] && !strcmp(it[0].reason, "unknown") && it[0].neighbours && strstr(it[0].neighbours, "spot"));
        CHECK(it[1].id == ids[4] && it[2].id == ids[2] && it[3].id == ids[0] && !it[3].neighbours);
    }
    dn_review_items_free(it, n);
    /* two reviewers must agree */
    dn_review_outcome o;
    CHECK(dn_store_review_label(s, ids[1], "scratch", "ana", t0 + 50, 2, &o) == DN_OK && o.found && !o.final && o.votes == 1);
    CHECK(dn_store_review_next(s, 10, "ana", &it, &n) == DN_OK && n == 3); /* ana's item left out for ana */
    dn_review_items_free(it, n);
    CHECK(dn_store_review_label(s, ids[1], "spot", "bob", t0 + 51, 2, &o) == DN_OK && !o.final && o.distinct == 2);
    int64_t *dis = NULL;
    size_t nd = 0;
    CHECK(dn_store_review_disagreements(s, 10, &dis, &nd) == DN_OK && nd == 1 && dis && dis[0] == ids[1]);
    free(dis);
    /* bob changes his mind: his label is replaced, and two agree -> final */
    CHECK(dn_store_review_label(s, ids[1], "scratch", "bob", t0 + 52, 2, &o) == DN_OK && o.final && !strcmp(o.label, "scratch"));
    lab_acc la = {0};
    CHECK(dn_store_review_labels(s, ids[1], count_labels, &la) == DN_OK && la.n == 2 && !strcmp(la.last, "scratch/bob"));
    CHECK(dn_store_review_disagreements(s, 10, &dis, &nd) == DN_OK && nd == 0);
    free(dis);
    CHECK(dn_store_review_label(s, ids[1], "spot", "carl", t0 + 53, 2, &o) == DN_OK && o.found && o.was_final &&
          !strcmp(o.label, "scratch"));
    CHECK(dn_store_review_label(s, 424242, "spot", "carl", t0 + 53, 2, &o) == DN_OK && !o.found);
    CHECK(dn_store_review_label(s, ids[2], "spot", "ana", t0 + 54, 1, &o) == DN_OK && o.final);
    dn_review_item one;
    int found = 0;
    CHECK(dn_store_review_get(s, ids[2], &one, &found) == DN_OK && found && one.final && !strcmp(one.label, "spot"));
    free(one.neighbours);
    CHECK(dn_store_review_get(s, ids[5], &one, &found) == DN_OK && !found);
    int nfinal = 0;
    CHECK(dn_store_review_scan_final(s, count_final, &nfinal) == DN_OK && nfinal == 2);
    int64_t op = 0, fi = 0;
    CHECK(dn_store_review_counts(s, &op, &fi) == DN_OK && op == 2 && fi == 2);
    /* shadow rows and the comparison */
    const char *sh_cls[6] = {"scratch", "scratch", "scratch", "spot", "scratch", "crack"};
    for (int i = 0; i < 6; i++) {
        dn_shadow_record r = {"shadowsha", "v2", sh_cls[i], "{}", i == 5 ? "unknown" : "accepted", 0.8f, t0 + i};
        CHECK(dn_store_shadow_insert(s, ids[i], &r) == DN_OK);
    }
    dn_shadow_record dup = {"shadowsha", "v2", "spot", "{}", "accepted", 0.8f, t0};
    CHECK(dn_store_shadow_insert(s, ids[0], &dup) == DN_OK); /* kept once */
    dn_compare c;
    CHECK(dn_compare_store(s, 0, 0, &c) == DN_OK);
    /* live: scratch spot scratch spot scratch spot; shadow: scratch scratch scratch spot scratch crack */
    CHECK(c.n == 6 && c.agree == 4 && c.decision_agree == 5 && c.shadow_unsure == 1 && c.ncls == 3);
    CHECK(!strcmp(c.cls[0].name, "scratch") && c.cls[0].live == 3 && c.cls[0].shadow == 4 && c.cls[0].both == 3);
    CHECK(!strcmp(c.cls[1].name, "spot") && c.cls[1].live == 3 && c.cls[1].shadow == 1 && c.cls[1].both == 1);
    CHECK(dn_compare_store(s, t0 + 2, t0 + 4, &c) == DN_OK && c.n == 2);
    dn_store_close(s);
}

TEST(store_review_sqlite) {
    char url[600];
    snprintf(url, sizeof url, "sqlite:%s/review.db", g_dir);
    store_review_checks(url);
}

static h_pg g_pg;
static int g_pg_ok;
static char g_pg_why[300];

TEST(store_review_postgres) {
    if (!g_pg_ok) SKIP("%s", g_pg_why);
    store_review_checks(g_pg.url);
}

/* ------------------------------------------------------------ serve */

static const char *g_auth[] = {"Authorization: Bearer s3cret", NULL};
static const char *g_auth_json[] = {"Authorization: Bearer s3cret", "Content-Type: application/json", NULL};

static long post_label(int port, int64_t id, const char *body, resp *r) {
    char path[64];
    snprintf(path, sizeof path, "/v1/review/%lld", (long long)id);
    return http(port, "POST", path, body, strlen(body), g_auth_json, r);
}

static long post_img(int port, int cls, resp *r) {
    size_t n = 0;
    uint8_t *d = slurp(g_img[cls], &n);
    long code = http(port, "POST", "/v1/predict", d, n, g_auth, r);
    free(d);
    return code;
}

TEST(serve_review_queue_labels_and_errors) {
    if (!g_ready) SKIP("model fixture could not be built");
    char imgs[600], db[600], body[400];
    snprintf(imgs, sizeof imgs, "%s/images1", g_dir);
    snprintf(db, sizeof db, "sqlite:%s/serve_review.db", g_dir);
    mkdir(imgs, 0755);
    dn_server_config c = {0};
    c.store_images = imgs;
    c.token = "s3cret";
    char spec[200];
    snprintf(spec, sizeof spec, "class:%s,class:%s", g_names[1], g_names[3]);
    c.review = spec;
    c.review_agree = 2;
    dn_server *s = start(&c, db);
    CHECK(s != NULL);
    if (!s) return;
    int port = dn_server_port(s);
    resp r;
    for (int k = 0; k < NCLS; k++) {
        CHECK(post_img(port, k, &r) == 200);
        resp_free(&r);
    }
    /* the API needs the token; the page does not */
    CHECK(http(port, "GET", "/v1/review", NULL, 0, NULL, &r) == 401 && is_json_error(&r, 401, "token"));
    resp_free(&r);
    CHECK(http(port, "GET", "/review", NULL, 0, NULL, &r) == 200 && r.body.s && strstr(r.body.s, "defectnet review") &&
          strstr(r.body.s, "/v1/review"));
    resp_free(&r);
    /* two items: the two chosen classes */
    CHECK(http(port, "GET", "/v1/review?n=10", NULL, 0, g_auth, &r) == 200);
    dn_json *j = resp_json(&r);
    const dn_json *items = dn_json_get(j, "items");
    CHECK(dn_json_len(items) == 2 && dn_json_num(dn_json_get(j, "agree"), 0) == 2 &&
          dn_json_len(dn_json_get(j, "classes")) == NCLS);
    int64_t id1 = 0, id3 = 0;
    for (size_t i = 0; i < dn_json_len(items); i++) {
        const dn_json *it = dn_json_at(items, i), *pr = dn_json_get(it, "prediction");
        const char *cls = dn_json_str(dn_json_get(pr, "class"), "");
        CHECK(!strcmp(dn_json_str(dn_json_get(it, "reason"), ""), "class"));
        CHECK(dn_json_str(dn_json_get(it, "image_url"), NULL) != NULL);
        CHECK(dn_json_type_of(dn_json_get(it, "heatmap_url")) == DN_JSON_NULL);
        CHECK(dn_json_get(it, "neighbours") == NULL); /* the fixture model has no bank */
        CHECK(dn_json_len(dn_json_get(it, "top")) == 3 &&
              !strcmp(dn_json_str(dn_json_get(dn_json_at(dn_json_get(it, "top"), 0), "class"), ""), cls));
        if (!strcmp(cls, g_names[1])) id1 = (int64_t)dn_json_num(dn_json_get(it, "id"), 0);
        if (!strcmp(cls, g_names[3])) id3 = (int64_t)dn_json_num(dn_json_get(it, "id"), 0);
    }
    dn_json_free(j);
    resp_free(&r);
    CHECK(id1 > 0 && id3 > 0);
    /* the stored image is served back byte for byte */
    char path[128];
    snprintf(path, sizeof path, "/v1/review/%lld/image", (long long)id1);
    size_t n = 0;
    uint8_t *orig = slurp(g_img[1], &n);
    CHECK(http(port, "GET", path, NULL, 0, g_auth, &r) == 200 && r.body.len == n && orig && !memcmp(r.body.s, orig, n));
    free(orig);
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/review/%lld/heatmap", (long long)id1);
    CHECK(http(port, "GET", path, NULL, 0, g_auth, &r) == 404 && is_json_error(&r, 404, "heatmap"));
    resp_free(&r);
    /* a heatmap where serve --heatmaps writes it (<copy stem>.<model sha[0:12]>.cam.png) is linked and served */
    {
        dn_pred_row row;
        int found = 0;
        char hp[1400];
        CHECK(dn_store_get(dn_server_store(s), id1, &row, &found) == DN_OK && found && row.image_copy);
        if (found && row.image_copy) {
            snprintf(hp, sizeof hp, "%.*s.%.12s.cam.png", (int)(strrchr(row.image_copy, '.') - row.image_copy),
                     row.image_copy, row.model_sha256);
            CHECK(write_file(hp, "PNGDATA", 7) == 0);
        }
        dn_pred_row_clear(&row);
        CHECK(http(port, "GET", path, NULL, 0, g_auth, &r) == 200 && r.body.len == 7 && !memcmp(r.body.s, "PNGDATA", 7));
        resp_free(&r);
        char ip[64];
        snprintf(ip, sizeof ip, "/v1/review/%lld", (long long)id1);
        CHECK(http(port, "GET", ip, NULL, 0, g_auth, &r) == 200 && r.body.s && strstr(r.body.s, "\"heatmap_url\":\"/v1/review/"));
        resp_free(&r);
    }
    /* corrupt posts: 4xx with a one-line JSON error, nothing recorded */
    snprintf(body, sizeof body, "{\"label\":\"%s\",\"reviewer\":\"ana\"}", g_names[1]);
    CHECK(post_label(port, id1, "{\"label\":", &r) == 400 && is_json_error(&r, 400, "bad JSON"));
    resp_free(&r);
    CHECK(post_label(port, id1, "{\"label\":\"nope\",\"reviewer\":\"ana\"}", &r) == 400 &&
          is_json_error(&r, 400, "not a class"));
    resp_free(&r);
    char nr[200];
    snprintf(nr, sizeof nr, "{\"label\":\"%s\"}", g_names[1]);
    CHECK(post_label(port, id1, nr, &r) == 400 && is_json_error(&r, 400, "reviewer: missing"));
    resp_free(&r);
    CHECK(post_label(port, 987654, body, &r) == 404 && is_json_error(&r, 404, "no review item 987654"));
    resp_free(&r);
    char *big = malloc(20000);
    memset(big, ' ', 19999);
    big[19999] = 0;
    memcpy(big, "{\"label\":\"x\"", 12);
    CHECK(post_label(port, id1, big, &r) == 413 && is_json_error(&r, 413, "4096"));
    resp_free(&r);
    free(big);
    CHECK(http(port, "POST", "/v1/review/12/image", "{}", 2, g_auth_json, &r) == 405);
    resp_free(&r);
    CHECK(http(port, "POST", "/v1/review", "{}", 2, g_auth_json, &r) == 405);
    resp_free(&r);
    CHECK(http(port, "GET", "/v1/review?n=0", NULL, 0, g_auth, &r) == 400 && is_json_error(&r, 400, "n:"));
    resp_free(&r);
    CHECK(http(port, "GET", "/v1/review/abc", NULL, 0, g_auth, &r) == 404);
    resp_free(&r);
    {
        const char *noauth[] = {"Content-Type: application/json", NULL};
        snprintf(path, sizeof path, "/v1/review/%lld", (long long)id1);
        CHECK(http(port, "POST", path, body, strlen(body), noauth, &r) == 401);
        resp_free(&r);
    }
    /* agreement: ana and bob disagree (listed), carl sides with ana -> final */
    CHECK(post_label(port, id1, body, &r) == 200 && strstr(r.body.s, "\"final\":false"));
    resp_free(&r);
    snprintf(body, sizeof body, "{\"label\":\"%s\",\"reviewer\":\"bob\"}", g_names[0]);
    CHECK(post_label(port, id1, body, &r) == 200 && strstr(r.body.s, "\"disagreement\":true"));
    resp_free(&r);
    CHECK(http(port, "GET", "/v1/review/disagreements", NULL, 0, g_auth, &r) == 200);
    j = resp_json(&r);
    CHECK(dn_json_len(dn_json_get(j, "items")) == 1 &&
          dn_json_num(dn_json_get(dn_json_at(dn_json_get(j, "items"), 0), "id"), 0) == (double)id1 &&
          dn_json_len(dn_json_get(dn_json_at(dn_json_get(j, "items"), 0), "labels")) == 2);
    dn_json_free(j);
    resp_free(&r);
    snprintf(body, sizeof body, "{\"label\":\"%s\",\"reviewer\":\"carl\"}", g_names[1]);
    CHECK(post_label(port, id1, body, &r) == 200 && strstr(r.body.s, "\"final\":true"));
    resp_free(&r);
    snprintf(body, sizeof body, "{\"label\":\"%s\",\"reviewer\":\"dora\"}", g_names[1]);
    CHECK(post_label(port, id1, body, &r) == 409 && is_json_error(&r, 409, "already final"));
    resp_free(&r);
    /* the queue for ana: only the other item */
    CHECK(http(port, "GET", "/v1/review?reviewer=ana", NULL, 0, g_auth, &r) == 200);
    j = resp_json(&r);
    CHECK(dn_json_len(dn_json_get(j, "items")) == 1 &&
          dn_json_num(dn_json_get(dn_json_at(dn_json_get(j, "items"), 0), "id"), 0) == (double)id3);
    dn_json_free(j);
    resp_free(&r);
    dn_server_stop(s);
}

TEST(serve_review_needs_known_classes) {
    if (!g_ready) SKIP("model fixture could not be built");
    char db[600];
    snprintf(db, sizeof db, "sqlite:%s/bad_review.db", g_dir);
    dn_server_config c = {0};
    c.review = "class:no-such-class";
    c.model_path = g_model;
    c.db_url = db;
    c.listen = "127.0.0.1:0";
    c.quiet = 1;
    dn_server *s = NULL;
    CHECK(dn_server_start(&c, &s) == DN_ERR_ARG && !s && strstr(dn_last_error(), "--review: class 'no-such-class'"));
    c.review = "uncertain";
    c.review_agree = 12;
    CHECK(dn_server_start(&c, &s) == DN_ERR_ARG && !s && strstr(dn_last_error(), "--review-agree"));
}

TEST(serve_review_cap_and_shadow) {
    if (!g_ready) SKIP("model fixture could not be built");
    char db[600];
    snprintf(db, sizeof db, "sqlite:%s/shadow.db", g_dir);
    dn_server_config c = {0};
    c.review = "accepted,cap:3/h"; /* every prediction qualifies, three an hour are queued */
    c.shadow_model = g_model2;     /* the same net with renamed classes ("<name>_v2") */
    c.token = "s3cret";
    dn_server *s = start(&c, db);
    CHECK(s != NULL);
    if (!s) return;
    int port = dn_server_port(s);
    resp r;
    for (int k = 0; k < NCLS; k++) {
        CHECK(post_img(port, k, &r) == 200 && r.body.s && !strstr(r.body.s, "shadow"));
        resp_free(&r);
    }
    int64_t op = 0, fi = 0;
    CHECK(dn_store_review_counts(dn_server_store(s), &op, &fi) == DN_OK && op == 3 && fi == 0);
    /* no --store-images: items have no image */
    CHECK(http(port, "GET", "/v1/review", NULL, 0, g_auth, &r) == 200 && strstr(r.body.s, "\"image_url\":null"));
    resp_free(&r);
    CHECK(http(port, "GET", "/v1/review/1/image", NULL, 0, g_auth, &r) == 404 && is_json_error(&r, 404, "--store-images"));
    resp_free(&r);
    /* the shadow runs off the request path: its rows arrive after the answers */
    dn_compare cmp;
    for (int i = 0; i < 1200; i++) {
        if (dn_compare_store(dn_server_store(s), 0, 0, &cmp) != DN_OK || cmp.n >= NCLS) break;
        usleep(50000);
    }
    CHECK(dn_compare_store(dn_server_store(s), 0, 0, &cmp) == DN_OK);
    CHECK(http(port, "GET", "/metrics", NULL, 0, g_auth, &r) == 200 && r.body.s &&
          strstr(r.body.s, "defectnet_shadow_images_total{result=\"done\"} 6\n") &&
          strstr(r.body.s, "defectnet_shadow_images_total{result=\"dropped\"} 0\n") &&
          strstr(r.body.s, "defectnet_shadow_queue_depth 0\n"));
    resp_free(&r);
    /* classes are matched by name: the renamed ones never agree, the decisions all do */
    CHECK_MSG(cmp.n == NCLS && cmp.agree == 0 && cmp.decision_agree == NCLS && cmp.ncls == 2 * NCLS, "n %ld agree %ld ncls %d",
              cmp.n, cmp.agree, cmp.ncls);
    for (int i = 0; i < cmp.ncls; i++) {
        int v2 = strstr(cmp.cls[i].name, "_v2") != NULL;
        CHECK(cmp.cls[i].live == !v2 && cmp.cls[i].shadow == v2 && cmp.cls[i].both == 0);
    }
    CHECK(strstr(cmp.shadow_version, "model2") != NULL);
    /* the manufacturing report gets its shadow section */
    dn_mreport_opts mo = {0};
    dn_mreport *rep = NULL;
    dn_sb js = {0}, html = {0};
    CHECK(dn_mreport_build(dn_server_store(s), &mo, &rep) == DN_OK && rep);
    if (rep) {
        CHECK(dn_mreport_render(rep, "json", &js) == DN_OK && js.s && strstr(js.s, "\"shadow\":{\"pairs\":6,\"same_class\":0,\"same_decision\":6"));
        CHECK(dn_mreport_render(rep, "html", &html) == DN_OK && html.s && strstr(html.s, "<h2>Shadow model</h2>"));
    }
    dn_sb_free(&js);
    dn_sb_free(&html);
    dn_mreport_free(rep);
    dn_server_stop(s);
    /* a shadow model that cannot be loaded stops the start with a one-line error */
    c.shadow_model = "/nonexistent/cand.safetensors";
    s = start(&c, db);
    CHECK(s == NULL && strstr(dn_last_error(), "--shadow") && strstr(dn_last_error(), "/nonexistent/cand.safetensors"));
    dn_server_stop(s);
}

/* The shadow queue is bounded and never blocks the submitter: 40 images handed over at
 * once to a queue of 2 are partly dropped (each takes a forward pass, a hand-over only a
 * copy), every one is accounted for, and stopping classifies what was queued. */
TEST(shadow_queue_bounded_and_drained) {
    if (!g_ready) SKIP("model fixture could not be built");
    char url[600];
    snprintf(url, sizeof url, "sqlite:%s/shadowq.db", g_dir);
    dn_store *st = NULL;
    CHECK(dn_store_open(url, &st) == DN_OK);
    dn_shadow *sh = NULL;
    CHECK(dn_shadow_open(g_model2, &sh) == DN_OK);
    if (!st || !sh) { dn_shadow_free(sh); dn_store_close(st); return; }
    size_t n = 0;
    uint8_t *img = slurp(g_img[0], &n);
    CHECK(img && dn_shadow_submit(sh, img, n, 1) == 1); /* not started: dropped */
    CHECK(dn_shadow_start(sh, st, 2, NULL, NULL) == DN_OK);
    enum { N = 40 };
    int64_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = add_pred(st, "scratch", 1000.0 + i);
    int dropped = 0;
    for (int i = 0; i < N && img; i++) dropped += dn_shadow_submit(sh, img, n, ids[i]);
    CHECK(dn_shadow_submit(sh, img, (size_t)DN_SHADOW_BYTES + 1, ids[0]) == 1); /* over the byte budget */
    dn_shadow_stop(sh);
    dn_shadow_stats ss;
    dn_shadow_get_stats(sh, &ss);
    CHECK_MSG(ss.done + ss.failed == N - dropped && ss.dropped == dropped + 2 && ss.queued == 0 && ss.failed == 0 &&
                  dropped > 0 && ss.done >= 1,
              "done %ld failed %ld dropped %ld (%d of %d) queued %ld", ss.done, ss.failed, ss.dropped, dropped, N, ss.queued);
    dn_compare cmp;
    CHECK(dn_compare_store(st, 0, 0, &cmp) == DN_OK && cmp.n == ss.done);
    CHECK(dn_shadow_submit(sh, img, n, ids[0]) == 1); /* stopped: dropped */
    dn_sb m = {0};
    dn_shadow_metrics(sh, &m);
    char want[80];
    snprintf(want, sizeof want, "defectnet_shadow_images_total{result=\"done\"} %ld\n", ss.done);
    CHECK(m.s && strstr(m.s, want));
    dn_sb_free(&m);
    free(img);
    dn_shadow_free(sh);
    dn_store_close(st);
}

TEST(rules_file_review_field) {
    if (!g_ready) SKIP("model fixture could not be built");
    dn_rules *rs = NULL;
    const char *bad1 = "{\"review\":\"uncertain,cap:5\",\"rules\":[]}", *bad2 = "{\"review\":3,\"rules\":[]}";
    CHECK(dn_rules_parse(bad1, strlen(bad1), "r.json", &rs) != DN_OK && !rs &&
          strstr(dn_last_error(), "r.json: \"review\": 'cap:5'"));
    CHECK(dn_rules_parse(bad2, strlen(bad2), "r.json", &rs) != DN_OK && !rs && strstr(dn_last_error(), "must be a string"));
    /* serve takes the policy from the rules file when --review is not given */
    char rules[600], db[600];
    snprintf(rules, sizeof rules, "%s/review_rules.json", g_dir);
    snprintf(db, sizeof db, "sqlite:%s/rules_review.db", g_dir);
    FILE *f = fopen(rules, "w");
    if (f) {
        fprintf(f, "{\"version\":1,\"review\":\"class:%s\",\"rules\":[]}\n", g_names[4]);
        fclose(f);
    }
    dn_server_config c = {0};
    c.rules_path = rules;
    c.token = "s3cret";
    dn_server *s = start(&c, db);
    CHECK(s != NULL);
    if (!s) return;
    resp r;
    for (int k = 0; k < NCLS; k++) {
        CHECK(post_img(dn_server_port(s), k, &r) == 200);
        resp_free(&r);
    }
    int64_t op = 0, fi = 0;
    CHECK(dn_store_review_counts(dn_server_store(s), &op, &fi) == DN_OK && op == 1);
    dn_server_stop(s);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    setup();
    if (!g_ready) printf("  setup failed: %s\n", dn_last_error());
    RUN(policy_parse_and_reasons);
    RUN(label_post_parser);
    RUN(neighbours_from_bank_with_labels);
    RUN(store_review_sqlite);
    g_pg_ok = h_pg_start(&g_pg, g_pg_why, sizeof g_pg_why);
    RUN(store_review_postgres);
    if (g_pg_ok) h_pg_stop(&g_pg);
    RUN(serve_review_queue_labels_and_errors);
    RUN(serve_review_needs_known_classes);
    RUN(serve_review_cap_and_shadow);
    RUN(shadow_queue_bounded_and_drained);
    RUN(rules_file_review_field);
    if (g_dir[0]) h_rmrf(g_dir);
    curl_global_cleanup();
    return REPORT();
}
