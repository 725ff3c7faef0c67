/* Shared by the service tests (test_serve.c, test_serve_hard.c): the model fixture and
 * its prototype images, and a small libcurl HTTP client. One translation unit each.
 *
 * The model: the committed narrow ResNet fixture (tests/fixtures/resnet/r18n.pth)
 * with a nearest-prototype head built here from one synthetic image per class
 * (src/io/synth.h), saved with dn_model_save and loaded back by the server. Each
 * prototype image is therefore predicted as its own class, which gives the tests
 * images "of several classes" with known answers. */
#ifndef DN_TEST_SERVE_HTTP_H
#define DN_TEST_SERVE_HTTP_H
#include "harness.h"
#include "serve_util.h"
#include "core/core.h"
#include "core/json.h"
#include "io/modelfile.h"
#include "io/synth.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "serve/http.h"
#include "serve/store.h"
#include <curl/curl.h>
#include <zlib.h>

#define NCLS 6
static char g_dir[256];
static char g_model[400], g_model2[400], g_model3[400];
static char g_img[NCLS][400];
static const char *g_names[NCLS];
static int g_ready;

/* ------------------------------------------------------------ fixtures */

static inline int write_file(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(d, 1, n, f);
    return (fclose(f) || w != n) ? -1 : 0;
}

static inline uint8_t *slurp(const char *path, size_t *n) {
    uint8_t *d = NULL;
    if (dn_read_file(path, 1 << 28, &d, n)) return NULL;
    return d;
}

/* Builds the prototype-head model from the fixture backbone (see file comment). */
/* temperature > 1 flattens the softmax: with a large one every prediction is
 * below the 0.5 threshold, i.e. "uncertain". */
static inline int build_model_t(const char *out, const char *suffix, float temperature);
static inline int build_model(const char *out, const char *suffix) { return build_model_t(out, suffix, 1.0f); }
static inline int build_model_t(const char *out, const char *suffix, float temperature) {
    dn_model *m = NULL;
    dn_session *s = NULL;
    float *x = NULL, *f = NULL;
    int ok = 0;
    if (dn_model_load_ex("tests/fixtures/resnet/r18n.pth", 1, &m)) { printf("  %s\n", dn_last_error()); return 0; }
    char names[NCLS][64];
    const char *np[NCLS];
    for (int c = 0; c < NCLS; c++) {
        snprintf(names[c], sizeof names[c], "%s%s", g_names[c], suffix);
        np[c] = names[c];
    }
    if (dn_model_new_head(m, NCLS, np, 7)) goto done;
    int crop = m->pp.crop, D = m->feat_dim;
    x = malloc(sizeof(float) * 3 * (size_t)crop * crop);
    f = malloc(sizeof(float) * (size_t)D * NCLS);
    if (!x || !f || dn_session_new(m, 1, 1, &s)) goto done;
    for (int c = 0; c < NCLS; c++) {
        dn_image img = {0};
        if (dn_image_load(g_img[c], &img)) goto done;
        dn_status rc = dn_preprocess(&img, &m->pp, x);
        dn_image_free(&img);
        if (rc || dn_session_features(s, x, 1, f + (size_t)c * D)) goto done;
    }
    /* logits_c(f) = k * (f . p_c - |p_c|^2 / 2): argmax = nearest prototype */
    double minmargin = 1e30;
    for (int a = 0; a < NCLS; a++)
        for (int b = 0; b < NCLS; b++) {
            if (a == b) continue;
            double d = 0;
            for (int i = 0; i < D; i++) d += (double)(f[a * D + i] - f[b * D + i]) * (f[a * D + i] - f[b * D + i]);
            if (d / 2 < minmargin) minmargin = d / 2;
        }
    if (!(minmargin > 0)) { printf("  prototypes have identical features\n"); goto done; }
    double k = 30.0 / minmargin;
    for (int c = 0; c < NCLS; c++) {
        double n2 = 0;
        for (int i = 0; i < D; i++) {
            m->fc_w[c * D + i] = (float)(k * f[c * D + i]);
            n2 += (double)f[c * D + i] * f[c * D + i];
        }
        m->fc_b[c] = (float)(-k * n2 / 2);
    }
    m->threshold = 0.5f;
    m->temperature = temperature;
    dn_session_free(s);
    s = NULL;
    ok = dn_model_save(m, out) == DN_OK;
done:
    if (!ok && dn_last_error()[0]) printf("  model: %s\n", dn_last_error());
    dn_session_free(s);
    dn_model_free(m);
    free(x);
    free(f);
    return ok;
}

static inline void setup(void) {
    if (h_tmpdir(g_dir, sizeof g_dir, "serve")) return;
    for (int c = 0; c < NCLS; c++) {
        g_names[c] = dn_synth_class_name(c);
        uint8_t px[96 * 96];
        snprintf(g_img[c], sizeof g_img[c], "%s/proto_%s.png", g_dir, g_names[c]);
        if (dn_synth_render(c, 96, 11, 0, px) || dn_png_write_gray(g_img[c], px, 96, 96)) return;
    }
    snprintf(g_model, sizeof g_model, "%s/model.safetensors", g_dir);
    snprintf(g_model2, sizeof g_model2, "%s/model2.safetensors", g_dir);
    snprintf(g_model3, sizeof g_model3, "%s/model_flat.safetensors", g_dir);
    g_ready = build_model(g_model, "") && build_model(g_model2, "_v2") && build_model_t(g_model3, "", 1e9f);
}

/* ------------------------------------------------------------ HTTP client */

typedef struct {
    long code;
    dn_sb body;
    char retry_after[16];
} resp;

static inline size_t on_body(char *p, size_t sz, size_t n, void *ud) {
    dn_sb_putn(&((resp *)ud)->body, p, sz * n);
    return sz * n;
}
static inline size_t on_header(char *p, size_t sz, size_t n, void *ud) {
    resp *r = ud;
    if (!strncasecmp(p, "Retry-After:", 12)) snprintf(r->retry_after, sizeof r->retry_after, "%.*s", (int)(sz * n - 12), p + 12);
    return sz * n;
}

/* One request; returns the HTTP code (0 on transport error). hdrs NULL-terminated. */
static inline long http(int port, const char *method, const char *path, const void *body, size_t len,
                 const char *const *hdrs, resp *r) {
    memset(r, 0, sizeof *r);
    CURL *c = curl_easy_init();
    if (!c) return 0;
    char url[1024];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    struct curl_slist *h = NULL;
    for (int i = 0; hdrs && hdrs[i]; i++) h = curl_slist_append(h, hdrs[i]);
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->code);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return r->code;
}

static inline void resp_free(resp *r) { dn_sb_free(&r->body); }

static inline dn_json *resp_json(resp *r) { return r->body.s ? dn_json_parse(r->body.s, r->body.len, NULL, 0) : NULL; }

/* 4xx with a JSON {"error": "..."} whose message contains want. */
static inline int is_json_error(resp *r, long code, const char *want) {
    dn_json *j = resp_json(r);
    int ok = r->code == code && j && dn_json_str(dn_json_get(j, "error"), NULL) &&
             (!want || strstr(dn_json_str(dn_json_get(j, "error"), ""), want));
    if (!ok) printf("  got %ld %s\n", r->code, r->body.s ? r->body.s : "(no body)");
    dn_json_free(j);
    return ok;
}

static inline long post_image(int port, int cls, const char *query, resp *r) {
    size_t n = 0;
    uint8_t *d = slurp(g_img[cls], &n);
    char path[512];
    snprintf(path, sizeof path, "/v1/predict%s", query ? query : "");
    long code = http(port, "POST", path, d, n, NULL, r);
    free(d);
    return code;
}

static inline dn_server *start(dn_server_config *c, const char *db) {
    c->model_path = g_model;
    c->db_url = db;
    c->listen = "127.0.0.1:0";
    c->quiet = 1;
    if (!c->workers) c->workers = 2;
    dn_server *s = NULL;
    if (dn_server_start(c, &s)) printf("  start: %s\n", dn_last_error());
    return s;
}

static inline int64_t db_count(dn_server *s) {
    int64_t n = -1;
    dn_store_count(dn_server_store(s), NULL, &n);
    return n;
}

#endif
