/* JSON parser/builder, SHA-256 and the tensor/metadata store. */
#include "harness.h"
#include "core/core.h"
#include "core/json.h"
#include "core/sha256.h"
#include "core/tensor.h"
#include <stdint.h>
#include <unistd.h>

static dn_json *P(const char *s, char *err, size_t n) { return dn_json_parse(s, strlen(s), err, n); }

TEST(json_basic_types) {
    char err[128];
    dn_json *r = P(" {\"a\": 1.5e2, \"b\": [true, false, null, \"x\"], \"c\": {\"d\": -0.25}, \"e\": \"\"} ", err, sizeof err);
    CHECK_MSG(r != NULL, "%s", err);
    if (!r) return;
    CHECK(dn_json_type_of(r) == DN_JSON_OBJ);
    CHECK(dn_json_len(r) == 4);
    CHECK(!strcmp(dn_json_key_at(r, 2), "c"));
    CHECK_NEAR(dn_json_num(dn_json_get(r, "a"), 0), 150, 0);
    const dn_json *b = dn_json_get(r, "b");
    CHECK(dn_json_type_of(b) == DN_JSON_ARR && dn_json_len(b) == 4);
    CHECK(dn_json_bool(dn_json_at(b, 0), -1) == 1);
    CHECK(dn_json_bool(dn_json_at(b, 1), -1) == 0);
    CHECK(dn_json_type_of(dn_json_at(b, 2)) == DN_JSON_NULL);
    CHECK(!strcmp(dn_json_str(dn_json_at(b, 3), "?"), "x"));
    CHECK(dn_json_at(b, 4) == NULL);
    CHECK_NEAR(dn_json_num(dn_json_get(dn_json_get(r, "c"), "d"), 0), -0.25, 0);
    CHECK(!strcmp(dn_json_str(dn_json_get(r, "e"), "?"), ""));
    CHECK(dn_json_get(r, "zz") == NULL);
    CHECK(dn_json_get(b, "a") == NULL);             /* not an object */
    CHECK(dn_json_num(dn_json_get(r, "b"), 7) == 7); /* wrong type -> default */
    CHECK(!strcmp(dn_json_str(dn_json_get(r, "a"), "dflt"), "dflt"));
    dn_json_free(r);
}

TEST(json_escapes_utf8) {
    char err[128];
    dn_json *r = P("[\"a\\\"b\\\\c\\/d\\n\\t\\u00e9\\u20ac\\ud83d\\ude00\", \"\xc3\xa9\"]", err, sizeof err);
    CHECK_MSG(r != NULL, "%s", err);
    if (!r) return;
    CHECK(!strcmp(dn_json_str(dn_json_at(r, 0), ""), "a\"b\\c/d\n\t\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
    CHECK(!strcmp(dn_json_str(dn_json_at(r, 1), ""), "\xc3\xa9"));
    dn_json_free(r);
}

TEST(json_duplicate_key_refused) {
    char err[200] = "";
    dn_json *r = P("{\"k\":1,\"j\":{\"k\":1},\"k\":2}", err, sizeof err);
    CHECK(r == NULL);
    CHECK_MSG(strstr(err, "duplicate object key \"k\"") != NULL, "%s", err);
    dn_json_free(r);
    r = P("{\"k\":1,\"j\":{\"k\":1}}", err, sizeof err); /* same key in another object is fine */
    CHECK(r != NULL);
    dn_json_free(r);
}

TEST(json_errors_with_position) {
    struct { const char *in, *want; } cases[] = {
        {"", "line 1 col 1: value expected"},
        {"{\"a\":1,}", "line 1 col 8: object key"},
        {"[1,2", "unterminated array"},
        {"[1 2]", "',' or ']' expected"},
        {"{\"a\" 1}", "':' expected"},
        {"01", "trailing characters"},
        {"1.", "digit expected after decimal point"},
        {"1e", "digit expected in exponent"},
        {"-", "truncated number"},
        {"NaN", "invalid value"},
        {"tru", "invalid value"},
        {"\"abc", "unterminated string"},
        {"\"a\nb\"", "control character"},
        {"\"\\x\"", "invalid escape"},
        {"\"\\u12g4\"", "bad hex digit"},
        {"\"\\ud800\"", "lone high surrogate"},
        {"\"\\udc00\"", "lone low surrogate"},
        {"\"\\u0000\"", "\\u0000 not supported"},
        {"{} {}", "trailing characters"},
        {"[1,\n 2,\n x]", "line 3 col 2: invalid value"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[128] = "unset";
        dn_json *r = P(cases[i].in, err, sizeof err);
        CHECK_MSG(r == NULL, "case %zu accepted", i);
        dn_json_free(r);
        CHECK_MSG(strstr(err, cases[i].want) != NULL, "case %zu: got '%s' want '%s'", i, err, cases[i].want);
        CHECK(strstr(dn_last_error(), "json: line") != NULL);
    }
}

TEST(json_depth_limit) {
    char deep[2 * (DN_JSON_MAX_DEPTH + 10) + 1];
    int n = DN_JSON_MAX_DEPTH + 10;
    for (int i = 0; i < n; i++) { deep[i] = '['; deep[2 * n - 1 - i] = ']'; }
    deep[2 * n] = 0;
    char err[128];
    dn_json *r = P(deep, err, sizeof err);
    CHECK(r == NULL);
    CHECK(strstr(err, "nesting too deep") != NULL);
    /* exactly at the limit is fine */
    n = DN_JSON_MAX_DEPTH;
    for (int i = 0; i < n; i++) { deep[i] = '['; deep[2 * n - 1 - i] = ']'; }
    deep[2 * n] = 0;
    r = P(deep, err, sizeof err);
    CHECK_MSG(r != NULL, "%s", err);
    dn_json_free(r);
}

TEST(json_not_nul_terminated) {
    /* parser must respect len, not read past it */
    char *buf = malloc(3);
    memcpy(buf, "[1]", 3);
    dn_json *r = dn_json_parse(buf, 3, NULL, 0);
    CHECK(r && dn_json_len(r) == 1);
    dn_json_free(r);
    r = dn_json_parse(buf, 2, NULL, 0);
    CHECK(r == NULL);
    free(buf);
}

TEST(sb_roundtrip) {
    dn_sb b = {0};
    const char *nasty = "q\"uo\\te\n\x01 \xc3\xa9 tab\t";
    dn_sb_puts(&b, "{");
    dn_sb_json_str(&b, "k");
    dn_sb_printf(&b, ":%d,", 42);
    dn_sb_json_str(&b, "s");
    dn_sb_putn(&b, ":", 1);
    dn_sb_json_str(&b, nasty);
    dn_sb_puts(&b, "}");
    CHECK(!b.oom);
    CHECK(strstr(b.s, "\\u0001") != NULL);
    char err[128];
    dn_json *r = dn_json_parse(b.s, b.len, err, sizeof err);
    CHECK_MSG(r != NULL, "%s: %s", err, b.s);
    if (r) {
        CHECK(dn_json_num(dn_json_get(r, "k"), 0) == 42);
        CHECK(!strcmp(dn_json_str(dn_json_get(r, "s"), ""), nasty));
    }
    dn_json_free(r);
    /* growth across many appends */
    for (int i = 0; i < 10000; i++) dn_sb_printf(&b, "%d", i % 10);
    CHECK(b.len == strlen(b.s));
    dn_sb_free(&b);
    CHECK(b.s == NULL);
}

static void hexof(const char *s, size_t n, char hex[65]) {
    uint8_t d[32];
    dn_sha256(s, n, d);
    dn_sha256_hex(d, hex);
}

TEST(sha256_vectors) {
    char hex[65];
    hexof("", 0, hex);
    CHECK(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    hexof("abc", 3, hex);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    const char *m2 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hexof(m2, strlen(m2), hex);
    CHECK(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
    /* one million 'a', fed in uneven chunks */
    dn_sha256_ctx c;
    dn_sha256_init(&c);
    char a[1000];
    memset(a, 'a', sizeof a);
    size_t left = 1000000, step = 1;
    while (left) {
        size_t k = step < left ? step : left;
        if (k > sizeof a) k = sizeof a;
        dn_sha256_update(&c, a, k);
        left -= k;
        step = step * 7 % 997 + 1;
    }
    uint8_t d[32];
    dn_sha256_final(&c, d);
    dn_sha256_hex(d, hex);
    CHECK(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"));
    /* every length around block boundaries agrees between one-shot and bytewise */
    for (size_t n = 50; n < 140; n++) {
        char h1[65], h2[65];
        hexof(a, n, h1);
        dn_sha256_init(&c);
        for (size_t i = 0; i < n; i++) dn_sha256_update(&c, a + i, 1);
        dn_sha256_final(&c, d);
        dn_sha256_hex(d, h2);
        CHECK_MSG(!strcmp(h1, h2), "length %zu", n);
    }
}

TEST(sha256_file_vs_sha256sum) {
    char path[] = "/tmp/dn_test_sha_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    dn_rng r;
    dn_rng_seed(&r, 7);
    FILE *f = fdopen(fd, "wb");
    for (int i = 0; i < 200003; i++) fputc((int)(dn_rng_next(&r) & 255), f);
    fclose(f);
    char hex[65];
    CHECK(dn_sha256_file(path, hex) == DN_OK);
    char cmd[256], want[65] = "";
    snprintf(cmd, sizeof cmd, "sha256sum %s 2>/dev/null", path);
    FILE *p = popen(cmd, "r");
    int have = p && fscanf(p, "%64s", want) == 1;
    if (p) pclose(p);
    unlink(path);
    if (!have) SKIP("sha256sum not available");
    CHECK_MSG(!strcmp(hex, want), "%s vs sha256sum %s", hex, want);
}

TEST(sha256_file_errors) {
    char hex[65];
    CHECK(dn_sha256_file("/nonexistent/dn_file", hex) == DN_ERR_IO);
    CHECK(strstr(dn_last_error(), "/nonexistent/dn_file") != NULL);
    CHECK(dn_sha256_file("/tmp", hex) == DN_ERR_IO);
    CHECK(strstr(dn_last_error(), "not a regular file") != NULL);
}

TEST(tensors_and_meta) {
    dn_tensors ts = {0};
    for (int i = 0; i < 40; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%d", i);
        int64_t shape[2] = {i + 1, 3};
        float *d = malloc(sizeof(float) * (size_t)(i + 1) * 3);
        for (int j = 0; j < (i + 1) * 3; j++) d[j] = (float)(i * 1000 + j);
        CHECK(dn_tensors_add(&ts, name, 2, shape, d) == DN_OK);
    }
    CHECK(ts.n == 40);
    dn_tensor *t = dn_tensors_find(&ts, "t17");
    CHECK(t && t->ndim == 2 && t->shape[0] == 18 && dn_tensor_numel(t) == 54 && t->data[5] == 17005.f);
    CHECK(dn_tensors_find(&ts, "nope") == NULL);
    /* invalid ndim is refused, and the data (ownership passed) is released */
    CHECK(dn_tensors_add(&ts, "bad", DN_MAX_DIMS + 1, NULL, malloc(4)) == DN_ERR_ARG);
    int64_t neg = -1;
    CHECK(dn_tensors_add(&ts, "neg", 1, &neg, malloc(4)) == DN_ERR_ARG);
    CHECK(ts.n == 40);
    int64_t none = 0;
    CHECK(dn_tensors_add(&ts, "scalar", 0, &none, malloc(4)) == DN_OK);
    CHECK(dn_tensor_numel(dn_tensors_find(&ts, "scalar")) == 1);
    dn_tensors_free(&ts);
    CHECK(ts.n == 0 && ts.t == NULL);

    dn_meta m = {0};
    for (int i = 0; i < 20; i++) {
        char k[16], v[16];
        snprintf(k, sizeof k, "k%d", i);
        snprintf(v, sizeof v, "v%d", i);
        CHECK(dn_meta_set(&m, k, v) == DN_OK);
    }
    CHECK(dn_meta_set(&m, "k3", "replaced") == DN_OK);
    CHECK(m.n == 20);
    CHECK(!strcmp(dn_meta_get(&m, "k3"), "replaced"));
    CHECK(!strcmp(dn_meta_get(&m, "k19"), "v19"));
    CHECK(dn_meta_get(&m, "k20") == NULL);
    CHECK(dn_meta_set(&m, NULL, "x") == DN_ERR_ARG);
    dn_meta_free(&m);
    CHECK(m.n == 0);
}

int main(void) {
    RUN(json_basic_types);
    RUN(json_escapes_utf8);
    RUN(json_duplicate_key_refused);
    RUN(json_errors_with_position);
    RUN(json_depth_limit);
    RUN(json_not_nul_terminated);
    RUN(sb_roundtrip);
    RUN(sha256_vectors);
    RUN(sha256_file_vs_sha256sum);
    RUN(sha256_file_errors);
    RUN(tensors_and_meta);
    return REPORT();
}
