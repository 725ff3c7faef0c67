/* Allocation fault injection, SQLite style (issue 9 item 3): for N = 0, 1, 2, ... the
 * Nth allocation made through the core allocation helpers (every malloc/calloc/
 * realloc/strdup in src/ goes through them) fails, and the operation under test must
 * either succeed with a correct result (a failure some code can absorb) or fail with a
 * one-line error; afterwards the same operation succeeds (the process stays usable).
 * The walk ends at the first N the operation never reaches. Leaks on any of these
 * paths are reported by LeakSanitizer in the sanitizer build
 * (`make SAN=1 BUILD=build-san test`), where this binary exits non-zero on a leak.
 *
 * Walked: model load (.pth and .safetensors), session creation + one forward, pickle
 * parsing, rules parsing, image decode (PNG, JPEG, BMP), one serve request through
 * the prediction pipeline (decode, classify, commit to SQLite, JSON answer), and one
 * MQTT message (PUBLISH decode with user properties and content type, topic-level
 * metadata, JSON envelope: an allocation failure must come back as
 * dn_mqtt_out_of_memory, which mqtt_in answers by not acknowledging, never as a reason
 * to reject the message). */
#include "harness.h"
#include "serve_util.h"
#include "core/core.h"
#include "io/pickle.h"
#include "serve/actions.h"
#include "serve/mqtt_payload.h"
#include "serve/rules.h"
#include "serve/pipeline.h"
#include <unistd.h>

#define MODEL "tests/fixtures/resnet/r18n.pth"
#define IMG "tests/fixtures/images/"

typedef dn_status (*op_fn)(void *ctx);

typedef struct {
    long steps;       /* allocations the operation makes (walk length) */
    long failed;      /* injected failures reported as errors */
    long absorbed;    /* injected failures after which the operation still succeeded */
} walk_stats;

/* Walks op through every allocation it makes. Returns the stats; CHECKs the contract. */
static walk_stats walk(const char *what, op_fn op, void *ctx) {
    walk_stats ws = {0, 0, 0};
    long n;
    for (n = 0; n < 200000; n++) {
        dn_clear_error();
        dn_alloc_fail_after(n);
        dn_status st = op(ctx);
        long seen = dn_alloc_seen();
        dn_alloc_fail_after(-1);
        if (seen <= n) { /* the failure was never reached: a clean run */
            CHECK_MSG(st == DN_OK, "%s: failed without an injected failure (step %ld): %s", what, n, dn_last_error());
            break;
        }
        if (st == DN_OK) {
            ws.absorbed++;
            continue;
        }
        ws.failed++;
        const char *e = dn_last_error();
        CHECK_MSG(e[0] && !strchr(e, '\n'), "%s: allocation %ld failed: status %d with message '%s'", what, n, (int)st, e);
    }
    ws.steps = n;
    CHECK_MSG(n > 0 && n < 200000, "%s: walk of %ld steps", what, n);
    /* usable afterwards */
    dn_clear_error();
    dn_status st = op(ctx);
    CHECK_MSG(st == DN_OK, "%s: fails after the walk: %s", what, dn_last_error());
    printf("  %-28s %5ld allocations walked: %ld failed cleanly, %ld absorbed\n", what, ws.steps, ws.failed, ws.absorbed);
    return ws;
}

/* ------------------------------------------------------------ operations */

static dn_status op_model_load(void *ctx) {
    dn_model *m = NULL;
    dn_status st = dn_model_load((const char *)ctx, &m);
    if (st == DN_OK && (!m || dn_model_num_classes(m) <= 0)) st = dn_fail(DN_ERR_FORMAT, "model loaded empty");
    dn_model_free(m);
    return st;
}

typedef struct { const dn_model *m; dn_image img; } sess_ctx;
static dn_status op_session(void *ctx) {
    sess_ctx *c = ctx;
    dn_session *s = NULL;
    dn_status st = dn_session_new(c->m, 1, 1, &s);
    if (st) return st;
    dn_prediction p;
    st = dn_session_classify(s, &c->img, &p, NULL);
    if (st == DN_OK && (p.cls < 0 || p.cls >= dn_model_num_classes(c->m) || !(p.confidence > 0)))
        st = dn_fail(DN_ERR_NUMERIC, "session gave an impossible prediction");
    dn_session_free(s);
    return st;
}

typedef struct { uint8_t *b; size_t n; const char *name; } buf_ctx;
static dn_status op_pickle(void *ctx) {
    buf_ctx *c = ctx;
    dn_pickle *p = NULL;
    size_t used = 0;
    dn_status st = dn_pickle_load(c->b, c->n, c->name, &p, &used);
    if (st == DN_OK && (!dn_pickle_root(p) || used != c->n)) st = dn_fail(DN_ERR_FORMAT, "pickle parsed wrong");
    dn_pickle_free(p);
    return st;
}
static dn_status op_rules(void *ctx) {
    buf_ctx *c = ctx;
    dn_rules *r = NULL;
    dn_status st = dn_rules_parse((const char *)c->b, c->n, c->name, &r);
    if (st == DN_OK && (!r || r->n <= 0)) st = dn_fail(DN_ERR_FORMAT, "rules parsed empty");
    dn_rules_free(r);
    return st;
}
typedef struct { buf_ctx in; int w, h; } img_ctx;
static dn_status op_image(void *ctx) {
    img_ctx *c = ctx;
    dn_image im;
    memset(&im, 0, sizeof im);
    dn_status st = dn_image_decode(c->in.b, c->in.n, c->in.name, &im);
    if (st == DN_OK && (im.w != c->w || im.h != c->h || !im.data)) st = dn_fail(DN_ERR_FORMAT, "image decoded wrong");
    if (st != DN_OK && im.data) st = dn_fail(DN_ERR_FORMAT, "failed decode left pixels behind");
    dn_image_free(&im);
    return st;
}

typedef struct { dn_pipeline *p; buf_ctx img; int seq; long ok, errors; } serve_ctx;
static dn_status op_serve(void *ctx) {
    serve_ctx *c = ctx;
    dn_classify_req req;
    memset(&req, 0, sizeof req);
    req.data = c->img.b;
    req.len = c->img.n;
    req.line = "L1";
    char rid[32];
    snprintf(rid, sizeof rid, "fault-%d", c->seq++);
    req.request_id = rid;
    dn_classify_res res;
    memset(&res, 0, sizeof res);
    dn_status st = dn_pipeline_classify(c->p, &req, &res);
    if (st == DN_OK) {
        if (res.http_code == 200) {
            /* every 200 is a committed row */
            dn_pred_row row;
            int found = 0;
            if (dn_store_get(dn_pipeline_store(c->p), res.id, &row, &found) || !found)
                st = dn_fail(DN_ERR_DB, "200 for prediction %lld that is not in the store", (long long)res.id);
            else
                dn_pred_row_clear(&row);
            c->ok++;
        } else if (res.http_code >= 500) {
            st = dn_fail(DN_ERR_NOMEM, "serve answered %d: %s", res.http_code, res.json ? res.json : "(no body)");
            c->errors++;
        } else {
            st = dn_fail(DN_ERR_ARG, "serve answered %d to a good request", res.http_code);
        }
    }
    free(res.json);
    return st;
}

typedef struct { dn_mqtt_wbuf pk; long wrong; } mqtt_ctx;
static dn_status op_mqtt(void *ctx) {
    mqtt_ctx *c = ctx;
    size_t rem = 0, used = 0;
    if (dn_mqtt_remaining_len(c->pk.p + 1, c->pk.n - 1, &rem, &used) != 1) return dn_fail(DN_ERR_FORMAT, "test packet");
    const uint8_t *h = c->pk.p + 1 + used;
    dn_mqtt_publish p;
    dn_status st = dn_mqtt_decode_publish(c->pk.p[0], h, rem, &p);
    if (st) {
        if (st != DN_ERR_NOMEM) c->wrong++;
        return st;
    }
    static char *const names[2] = {"line", "camera"};
    dn_mqtt_route r = {"plant/+/+/image", names, 2};
    char problem[512], *file = NULL;
    const char *bad = dn_mqtt_interpret(&r, &p, h + p.head, rem - p.head, &file, problem, sizeof problem);
    if (bad == dn_mqtt_out_of_memory) {
        st = dn_fail(DN_ERR_NOMEM, "mqtt message plant/L1/C1/image: metadata: out of memory");
    } else if (bad || !file || strcmp(file, "cam1/p.png") || strcmp(p.topic, "plant/L1/C1/image") ||
               !p.meta.v[DN_MQTT_ID] || strcmp(p.meta.v[DN_MQTT_ID], "m-1") || !p.meta.v[DN_MQTT_LINE] ||
               strcmp(p.meta.v[DN_MQTT_LINE], "L1") || !p.meta.v[DN_MQTT_CAMERA] || strcmp(p.meta.v[DN_MQTT_CAMERA], "C1") ||
               !p.meta.v[DN_MQTT_PART] || strcmp(p.meta.v[DN_MQTT_PART], "S-1") || !p.meta.ctype) {
        c->wrong++; /* an allocation failure turned into a wrong answer or a rejection */
        st = dn_fail(DN_ERR_FORMAT, "mqtt message interpreted wrong: %s", bad ? bad : "wrong metadata");
    }
    free(file);
    dn_mqtt_publish_free(&p);
    return st;
}

/* ------------------------------------------------------------ tests */

static int slurp(const char *path, buf_ctx *c) {
    c->name = path;
    return dn_read_file(path, (size_t)64 << 20, &c->b, &c->n) == DN_OK ? 0 : -1;
}

TEST(injection_counts_and_fails_once) {
    dn_alloc_fail_after(1);
    void *a = dn_malloc(8), *b = dn_malloc(8), *c = dn_strdup("x");
    long seen = dn_alloc_seen();
    dn_alloc_fail_after(-1);
    CHECK(a && !b && c && seen == 3);
    CHECK(strstr(dn_last_error(), "out of memory"));
    void *d = dn_malloc(8); /* off again */
    CHECK(d && dn_alloc_seen() == 0);
    free(a);
    free(c);
    free(d);
    dn_alloc_fail_after(0);
    void *r = dn_realloc(NULL, 16);
    dn_alloc_fail_after(-1);
    CHECK(r == NULL);
}

TEST(model_load_pth) { walk("model load .pth", op_model_load, (void *)MODEL); }

TEST(model_load_safetensors) {
    char dir[256], path[320];
    CHECK(h_tmpdir(dir, sizeof dir, "faults") == 0);
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    dn_model *m = NULL;
    CHECK(dn_model_load(MODEL, &m) == DN_OK && dn_model_save(m, path) == DN_OK);
    dn_model_free(m);
    walk("model load .safetensors", op_model_load, path);
    h_rmrf(dir);
}

TEST(session_create_and_classify) {
    sess_ctx c;
    dn_model *m = NULL;
    CHECK(dn_model_load(MODEL, &m) == DN_OK);
    CHECK(dn_image_load(IMG "rgb_37x23.bmp", &c.img) == DN_OK);
    if (!m || !c.img.data) { dn_model_free(m); return; }
    c.m = m;
    walk("session create + classify", op_session, &c);
    dn_image_free(&c.img);
    dn_model_free(m);
}

TEST(pickle_parse) {
    buf_ctx c;
    CHECK(slurp("tests/fuzz/corpus/pickle/seed_p4.pkl", &c) == 0);
    if (c.b) walk("pickle", op_pickle, &c);
    free(c.b);
}

TEST(rules_parse) {
    buf_ctx c;
    CHECK(slurp("examples/rules.json", &c) == 0);
    if (c.b) walk("rules", op_rules, &c);
    free(c.b);
}

TEST(image_decode) {
    static const struct { const char *f; int w, h; } imgs[] = {
        {IMG "palette_trns_21x20.png", 21, 20}, {IMG "gray_64x48.jpg", 64, 48}, {IMG "rgb_37x23.bmp", 37, 23}};
    for (size_t i = 0; i < sizeof imgs / sizeof imgs[0]; i++) {
        img_ctx c;
        c.w = imgs[i].w;
        c.h = imgs[i].h;
        if (slurp(imgs[i].f, &c.in)) { CHECK_MSG(0, "%s missing", imgs[i].f); continue; }
        walk(imgs[i].f + strlen(IMG), op_image, &c);
        free(c.in.b);
    }
}

TEST(serve_request) {
    char dir[256], db[320];
    CHECK(h_tmpdir(dir, sizeof dir, "faults") == 0);
    snprintf(db, sizeof db, "sqlite:%s/f.db", dir);
    dn_pipeline_config pc;
    memset(&pc, 0, sizeof pc);
    pc.model_path = MODEL;
    pc.db_url = db;
    pc.workers = 1;
    pc.batch = 1;
    pc.quiet = 1;
    serve_ctx c;
    memset(&c, 0, sizeof c);
    CHECK(slurp(IMG "rgb_37x23.bmp", &c.img) == 0);
    dn_status st = dn_pipeline_open(&pc, &c.p);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (!st && c.img.b) {
        walk("serve request", op_serve, &c);
        printf("  serve: %ld answered 200 (each found in the store), %ld answered 5xx\n", c.ok, c.errors);
    }
    dn_pipeline_close(c.p);
    free(c.img.b);
    h_rmrf(dir);
}

TEST(mqtt_message) {
    mqtt_ctx c;
    memset(&c, 0, sizeof c);
    dn_mqtt_wbuf b = {0}, pr = {0};
    dn_mqtt_put_str(&b, "plant/L1/C1/image");
    dn_mqtt_put_u16(&b, 9);
    dn_mqtt_put_u8(&pr, 0x03); /* content type */
    dn_mqtt_put_str(&pr, "application/json");
    dn_mqtt_put_u8(&pr, 0x26); /* user property id */
    dn_mqtt_put_str(&pr, "id");
    dn_mqtt_put_str(&pr, "m-1");
    dn_mqtt_put_varint(&b, pr.n);
    dn_mqtt_put(&b, pr.p, pr.n);
    const char *env = "{\"file\":\"cam1/p.png\",\"part\":\"S-1\",\"line\":\"ignored: the topic wins\"}";
    dn_mqtt_put(&b, env, strlen(env));
    CHECK(!b.oom && !pr.oom && dn_mqtt_frame(&c.pk, DN_MQTT_PUBLISH, 2, &b) == 0);
    free(b.p);
    free(pr.p);
    if (c.pk.p) walk("mqtt message", op_mqtt, &c);
    CHECK_MSG(c.wrong == 0, "%ld allocation failures gave a wrong answer or a rejection", c.wrong);
    free(c.pk.p);
}

int main(void) {
    alarm(1800); /* a hang on a failure path fails the test instead of the CI run */
    RUN(injection_counts_and_fails_once);
    RUN(model_load_pth);
    RUN(model_load_safetensors);
    RUN(session_create_and_classify);
    RUN(pickle_parse);
    RUN(rules_parse);
    RUN(image_decode);
    RUN(serve_request);
    RUN(mqtt_message);
    return REPORT();
}
