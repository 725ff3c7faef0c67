/* `defectnet predict` end to end: drives the CLI binary ($DN_BIN, exported by
 * tests/run.sh) on a temporary folder of small good images plus bad files, using
 * the narrow fixture model tests/fixtures/resnet/r18n.pth. Checks one line per
 * good image in every format (JSON lines parse, CSV header and columns, table),
 * one stderr line per bad file naming it, recursion, exit codes, and usage errors. */
#include "core/core.h"
#include "core/json.h"
#include "harness.h"
#include "nn/model.h"
#include "io/safetensors.h"
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#define MODEL "tests/fixtures/resnet/r18n.pth"

static char g_dir[256];
static const char *g_bin;

static void write_file(const char *name, const void *data, size_t n) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) return;
    fwrite(data, 1, n, f);
    fclose(f);
}

/* Binary PGM (P5) or PPM (P6) with a gradient + a "defect" square. */
static void write_pnm(const char *name, int w, int h, int color, int seed) {
    char hdr[64];
    int hl = snprintf(hdr, sizeof hdr, "P%d\n%d %d\n255\n", color ? 6 : 5, w, h);
    int ch = color ? 3 : 1;
    size_t n = (size_t)hl + (size_t)w * h * ch;
    unsigned char *b = malloc(n);
    memcpy(b, hdr, (size_t)hl);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < ch; c++) {
                int v = (x * 7 + y * 3 + c * 50 + seed * 31) & 255;
                if (x > w / 3 && x < w / 2 && y > h / 3 && y < h / 2) v = 255 - v;
                b[hl + ((size_t)y * w + x) * ch + c] = (unsigned char)v;
            }
    write_file(name, b, n);
    free(b);
}

/* Runs the CLI with args; stdout/stderr captured into files; returns exit code. */
static int run(const char *args, char **out, char **err) {
    char cmd[2048], o[300], e[300];
    snprintf(o, sizeof o, "%s/.stdout", g_dir);
    snprintf(e, sizeof e, "%s/.stderr", g_dir);
    snprintf(cmd, sizeof cmd, "\"%s\" predict %s >\"%s\" 2>\"%s\"", g_bin, args, o, e);
    int st = system(cmd);
    size_t len;
    uint8_t *d = NULL;
    *out = *err = NULL;
    if (dn_read_file(o, 1 << 24, &d, &len) == DN_OK) { *out = realloc(d, len + 1); (*out)[len] = 0; }
    if (dn_read_file(e, 1 << 24, &d, &len) == DN_OK) { *err = realloc(d, len + 1); (*err)[len] = 0; }
    if (!*out) *out = calloc(1, 1);
    if (!*err) *err = calloc(1, 1);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static int setup(void) {
    g_bin = getenv("DN_BIN");
    if (!g_bin || access(g_bin, X_OK) != 0) return 0;
    snprintf(g_dir, sizeof g_dir, "/tmp/dn_test_predict_XXXXXX");
    if (!mkdtemp(g_dir)) return 0;
    char sub[300];
    snprintf(sub, sizeof sub, "%s/sub", g_dir);
    mkdir(sub, 0755);
    write_pnm("a_good.pgm", 40, 30, 0, 1);
    write_pnm("b_good.ppm", 23, 51, 1, 2);
    write_pnm("sub/c_good.pgm", 64, 64, 0, 3);
    write_pnm("sub/d_good.PPM", 17, 9, 1, 4);
    write_file("bad_text.jpg", "this is not a jpeg\n", 19);
    static const unsigned char png_sig[16] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
    write_file("sub/truncated.png", png_sig, sizeof png_sig);
    write_file("empty.bmp", "", 0);
    write_file("huge.pgm", "P5\n100000 100000\n255\n", 22); /* declares 10^10 pixels */
    write_file("notes.txt", "not an image, ignored by extension\n", 35);
    return 1;
}

TEST(jsonl_good_and_bad_files) {
    if (!g_dir[0]) SKIP("DN_BIN not set (run through tests/run.sh)");
    char *out, *err, args[600];
    snprintf(args, sizeof args, "--model %s --format jsonl --batch 3 --threads 2 --top-k 2 %s", MODEL, g_dir);
    int rc = run(args, &out, &err);
    CHECK_MSG(rc == 1, "exit %d, stderr: %s", rc, err);
    CHECK_MSG(count_lines(out) == 4, "stdout: %s", out);
    /* each bad file: one line naming it; plus the summary line */
    CHECK(strstr(err, "bad_text.jpg") && strstr(err, "truncated.png") && strstr(err, "empty.bmp") &&
          strstr(err, "huge.pgm"));
    CHECK(!strstr(err, "notes.txt"));
    CHECK_MSG(count_lines(err) == 5, "stderr: %s", err);
    CHECK(strstr(err, "4 classified, 4 failed"));
    int lines = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        char perr[128];
        dn_json *j = dn_json_parse(line, strlen(line), perr, sizeof perr);
        CHECK_MSG(j != NULL, "invalid JSON line '%s': %s", line, perr);
        if (!j) continue;
        const char *path = dn_json_str(dn_json_get(j, "path"), "");
        CHECK(strstr(path, "_good.") != NULL);
        CHECK(!strncmp(dn_json_str(dn_json_get(j, "class"), ""), "class_", 6));
        double conf = dn_json_num(dn_json_get(j, "confidence"), -1);
        CHECK(conf > 0.2 - 1e-9 && conf <= 1.0); /* 5 classes: argmax prob >= 1/5 */
        const dn_json *tk = dn_json_get(j, "top_k");
        CHECK(dn_json_len(tk) == 2);
        CHECK_NEAR(dn_json_num(dn_json_get(dn_json_at(tk, 0), "prob"), -1), conf, 1e-6);
        CHECK(!strcmp(dn_json_str(dn_json_get(dn_json_at(tk, 0), "class"), "?"), dn_json_str(dn_json_get(j, "class"), "")));
        CHECK(dn_json_num(dn_json_get(dn_json_at(tk, 1), "prob"), 2) <= conf);
        CHECK(dn_json_bool(dn_json_get(j, "uncertain"), 1) == 0);
        if (lines == 2) CHECK(strstr(path, "sub/c_good.pgm") != NULL); /* sorted, recursive */
        dn_json_free(j);
    }
    free(out); free(err);
}

TEST(batch_size_does_not_change_results) {
    if (!g_dir[0]) SKIP("DN_BIN not set (run through tests/run.sh)");
    char *o1, *o2, *e1, *e2, args[600];
    snprintf(args, sizeof args, "--model %s --format csv --batch 1 --threads 1 %s", MODEL, g_dir);
    int r1 = run(args, &o1, &e1);
    snprintf(args, sizeof args, "--model %s --format csv --batch 4 --threads 2 %s", MODEL, g_dir);
    int r2 = run(args, &o2, &e2);
    CHECK(r1 == 1 && r2 == 1);
    CHECK_MSG(!strcmp(o1, o2), "batch 1:\n%s\nbatch 4:\n%s", o1, o2);
    free(o1); free(o2); free(e1); free(e2);
}

TEST(csv_and_table_formats) {
    if (!g_dir[0]) SKIP("DN_BIN not set (run through tests/run.sh)");
    char *out, *err, args[600];
    snprintf(args, sizeof args, "--model %s --format csv --top-k 9 %s/a_good.pgm %s/sub", MODEL, g_dir, g_dir);
    int rc = run(args, &out, &err);
    CHECK_MSG(rc == 1, "exit %d: %s", rc, err); /* sub/truncated.png fails */
    CHECK(!strncmp(out, "path,class,confidence,uncertain,decision,ood_score,top1_class,top1_prob,", 72));
    CHECK(strstr(out, "top5_prob\n") != NULL && strstr(out, "top6") == NULL); /* top-k clamped to 5 classes */
    CHECK(count_lines(out) == 4);
    char *row = strchr(out, '\n') + 1;
    int commas = 0;
    for (char *p = row; *p && *p != '\n'; p++) commas += *p == ',';
    CHECK(commas == 5 + 2 * 5);
    free(out); free(err);

    snprintf(args, sizeof args, "--model %s --format table %s/a_good.pgm %s/b_good.ppm", MODEL, g_dir, g_dir);
    rc = run(args, &out, &err);
    CHECK_MSG(rc == 0, "exit %d: %s", rc, err);
    CHECK(!strncmp(out, "path", 4) && count_lines(out) == 3 && strstr(out, "%") && strstr(out, "b_good.ppm"));
    CHECK(err[0] == 0);
    free(out); free(err);
}

TEST(default_format_is_jsonl_when_piped) {
    if (!g_dir[0]) SKIP("DN_BIN not set (run through tests/run.sh)");
    char *out, *err, args[600];
    snprintf(args, sizeof args, "--model %s %s/a_good.pgm", MODEL, g_dir);
    CHECK(run(args, &out, &err) == 0);
    CHECK(out[0] == '{' && count_lines(out) == 1);
    free(out); free(err);
}

TEST(usage_and_model_errors) {
    if (!g_dir[0]) SKIP("DN_BIN not set (run through tests/run.sh)");
    static const struct { const char *args; const char *needle; } cases[] = {
        {"/tmp", "--model is required"},
        {"--model " MODEL, "no image files or folders"},
        {"--model " MODEL " --top-k 0 x.png", "--top-k"},
        {"--model " MODEL " --batch abc x.png", "--batch"},
        {"--model " MODEL " --format xml x.png", "--format 'xml': expected table, jsonl or csv"},
        {"-m " MODEL " --batch=0 x.png", "--batch '0'"},
        {"-m " MODEL " -f", "option '-f' needs a value"},
        {"--model " MODEL " --frobnicate x.png", "unknown option '--frobnicate'"},
        {"--model /nonexistent/model.pth x.png", "/nonexistent/model.pth"},
        {"--model tests/fixtures/resnet/r18n_logits.f32 x.png", "r18n_logits.f32"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out, *err;
        int rc = run(cases[i].args, &out, &err);
        CHECK_MSG(rc == 2, "'%s': exit %d", cases[i].args, rc);
        CHECK_MSG(strstr(err, cases[i].needle) != NULL, "'%s': stderr '%s' lacks '%s'", cases[i].args, err, cases[i].needle);
        CHECK(out[0] == 0 || strstr(out, "usage") == NULL);
        free(out); free(err);
    }
    /* only missing inputs: named, nothing to classify */
    char *out, *err, args[600];
    snprintf(args, sizeof args, "--model %s %s/does_not_exist.png", MODEL, g_dir);
    CHECK(run(args, &out, &err) == 2);
    CHECK(strstr(err, "does_not_exist.png: cannot access") != NULL);
    free(out); free(err);
}

/* A defectnet safetensors model carries its class names, preprocessing and
 * threshold: predict uses them without any option. */
TEST(safetensors_model_metadata_applied) {
    if (!g_dir[0]) SKIP("DN_BIN not set (run through tests/run.sh)");
    dn_model *m = NULL;
    CHECK(dn_model_load(MODEL, &m) == DN_OK);
    if (!m) return;
    static const char *names[5] = {"crack", "inclusion", "patch, \"big\"", "scratch", "spot"};
    for (int i = 0; i < 5; i++) { free(m->class_names[i]); m->class_names[i] = dn_strdup(names[i]); }
    m->pp.resize = 0;  /* no resize: centre crop of 32 straight from the image */
    m->pp.crop = 32;
    m->threshold = 1.0f; /* every prediction uncertain */
    char path[400], args[1400], *out, *err;
    snprintf(path, sizeof path, "%s/model.safetensors", g_dir);
    CHECK(dn_model_save(m, path) == DN_OK);
    dn_model_free(m);
    snprintf(args, sizeof args, "--model %s --format csv --top-k 5 %s/a_good.pgm %s/b_good.ppm", path, g_dir, g_dir);
    int rc = run(args, &out, &err);
    CHECK_MSG(rc == 0, "exit %d: %s", rc, err);
    CHECK(count_lines(out) == 3);
    CHECK(strstr(out, "\"patch, \"\"big\"\"\"") != NULL); /* CSV quoting of a class name */
    CHECK(strstr(out, ",crack,") != NULL && strstr(out, ",spot,") != NULL);
    char *row = strchr(out, '\n') + 1;
    char *f = row;
    for (int c = 0; c < 3; c++) f = strchr(f, ',') + 1;
    CHECK(f[0] == '1'); /* uncertain column */
    free(out); free(err);
    snprintf(args, sizeof args, "--model %s --format jsonl %s/b_good.ppm", path, g_dir);
    CHECK(run(args, &out, &err) == 0);
    CHECK(strstr(out, "\"uncertain\": true") != NULL);
    free(out); free(err);
}

/* A weight file missing a tensor: exit 2, the file and the key named. */
TEST(model_with_missing_key) {
    if (!g_dir[0]) SKIP("DN_BIN not set (run through tests/run.sh)");
    dn_model *m = NULL;
    dn_tensors ts = {0};
    CHECK(dn_model_load(MODEL, &m) == DN_OK && m && dn_model_to_tensors(m, &ts) == DN_OK);
    dn_model_free(m);
    for (int i = 0; i < ts.n; i++)
        if (!strcmp(ts.t[i].name, "layer2.1.bn1.weight")) ts.t[i].name[0] = 'X'; /* renamed: missing + unexpected */
    char path[400], args[900], *out, *err;
    snprintf(path, sizeof path, "%s/missing.safetensors", g_dir);
    CHECK(dn_safetensors_save(path, &ts, NULL) == DN_OK);
    dn_tensors_free(&ts);
    snprintf(args, sizeof args, "--model %s %s/a_good.pgm", path, g_dir);
    CHECK(run(args, &out, &err) == 2);
    CHECK_MSG(strstr(err, path) && strstr(err, "missing key 'layer2.1.bn1.weight'") && count_lines(err) == 1, "stderr: %s", err);
    CHECK(out[0] == 0);
    free(out); free(err);
}

/* ------------------------------------------------------------ C API for cameras */

TEST(capi_version_and_status) {
    CHECK(!strcmp(dn_version(), DN_VERSION));
    CHECK(!strcmp(dn_status_str(DN_OK), "ok"));
    CHECK(!strcmp(dn_status_str(DN_ERR_IO), "io error"));
    CHECK(!strcmp(dn_status_str(DN_ERR_NOMEM), "out of memory"));
    CHECK(!strcmp(dn_status_str((dn_status)999), "unknown status"));
    for (int st = 0; st <= 9; st++) CHECK(strcmp(dn_status_str((dn_status)st), "unknown status") != 0);
}

/* Deterministic RGB test picture with a defect-like square. */
static void fill_rgb(uint8_t *px, int w, int h, int seed) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                int v = (x * 5 + y * 11 + c * 70 + seed * 13 + ((x * y) % 7) * 9) & 255;
                if (x > w / 3 && x < w / 2 && y > h / 4 && y < h / 2) v = 255 - v;
                px[((size_t)y * w + x) * 3 + c] = (uint8_t)v;
            }
}

/* A wrapped frame (RGB8/BGR8/GRAY8, padded rows) gives exactly the probabilities of the
 * same pixels decoded from a file: preprocessing reads the frame in place. */
TEST(capi_wrap_matches_decoded_file) {
    if (!g_dir[0]) SKIP("no temp dir");
    dn_model *m = NULL;
    dn_session *s = NULL;
    CHECK(dn_model_load(MODEL, &m) == DN_OK);
    if (!m) return;
    CHECK(dn_session_create(m, NULL, &s) == DN_OK);
    if (!s) { dn_model_free(m); return; }
    const int w = 61, h = 47, nc = dn_model_num_classes(m), pad = 13;
    uint8_t *rgb = malloc((size_t)w * h * 3);
    fill_rgb(rgb, w, h, 3);
    uint8_t gray[61 * 47];
    for (int i = 0; i < w * h; i++) gray[i] = rgb[3 * i + 1];
    /* files with the same pixels */
    char hdr[64], ppm[400], pgm[400];
    int hl = snprintf(hdr, sizeof hdr, "P6\n%d %d\n255\n", w, h);
    uint8_t *fb = malloc((size_t)hl + (size_t)w * h * 3);
    memcpy(fb, hdr, (size_t)hl);
    memcpy(fb + hl, rgb, (size_t)w * h * 3);
    write_file("capi.ppm", fb, (size_t)hl + (size_t)w * h * 3);
    hl = snprintf(hdr, sizeof hdr, "P5\n%d %d\n255\n", w, h);
    memcpy(fb, hdr, (size_t)hl);
    memcpy(fb + hl, gray, (size_t)w * h);
    write_file("capi.pgm", fb, (size_t)hl + (size_t)w * h);
    free(fb);
    snprintf(ppm, sizeof ppm, "%s/capi.ppm", g_dir);
    snprintf(pgm, sizeof pgm, "%s/capi.pgm", g_dir);
    float pf[64], pw[64];
    dn_prediction a, b;
    dn_image img = {0};
    /* colour: decoded file vs wrapped BGR with padded stride, and packed RGB */
    CHECK(dn_image_load(ppm, &img) == DN_OK);
    CHECK(dn_session_classify(s, &img, &a, pf) == DN_OK);
    dn_image_free(&img);
    size_t stride = (size_t)w * 3 + pad;
    uint8_t *bgr = malloc(stride * h);
    memset(bgr, 0xAB, stride * h); /* padding bytes must be ignored */
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) bgr[y * stride + x * 3 + c] = rgb[((size_t)y * w + x) * 3 + 2 - c];
    dn_image fr;
    CHECK(dn_image_wrap(bgr, w, h, stride, DN_BGR8, &fr) == DN_OK);
    CHECK(fr.data == bgr && fr.borrowed == 1); /* no copy */
    CHECK(dn_session_classify(s, &fr, &b, pw) == DN_OK);
    CHECK(a.cls == b.cls);
    for (int k = 0; k < nc; k++) CHECK_MSG(pf[k] == pw[k], "class %d: file %.9g vs BGR frame %.9g", k, pf[k], pw[k]);
    dn_image_free(&fr); /* forgets, does not free */
    CHECK(fr.data == NULL && bgr[w * 3] == 0xAB);
    CHECK(dn_image_wrap(rgb, w, h, 0, DN_RGB8, &fr) == DN_OK);
    CHECK(dn_session_classify(s, &fr, &b, pw) == DN_OK);
    for (int k = 0; k < nc; k++) CHECK(pf[k] == pw[k]);
    /* gray: decoded PGM vs GRAY8 frame with stride */
    CHECK(dn_image_load(pgm, &img) == DN_OK);
    CHECK(dn_session_classify(s, &img, &a, pf) == DN_OK);
    dn_image_free(&img);
    uint8_t *g2 = malloc((size_t)(w + pad) * h);
    memset(g2, 0x55, (size_t)(w + pad) * h);
    for (int y = 0; y < h; y++) memcpy(g2 + (size_t)y * (w + pad), gray + (size_t)y * w, (size_t)w);
    CHECK(dn_image_wrap(g2, w, h, (size_t)w + pad, DN_GRAY8, &fr) == DN_OK);
    CHECK(dn_session_classify(s, &fr, &b, pw) == DN_OK);
    CHECK(a.cls == b.cls);
    for (int k = 0; k < nc; k++) CHECK_MSG(pf[k] == pw[k], "class %d: pgm %.9g vs GRAY8 frame %.9g", k, pf[k], pw[k]);
    /* the frame is read in place: changing the pixels changes the answer */
    memset(g2, 0, (size_t)(w + pad) * h);
    CHECK(dn_session_classify(s, &fr, &b, pw) == DN_OK);
    int same = 1;
    for (int k = 0; k < nc; k++) same &= pf[k] == pw[k];
    CHECK(!same);
    free(g2); free(bgr); free(rgb);
    dn_session_free(s);
    dn_model_free(m);
}

TEST(capi_wrap_bad_arguments) {
    uint8_t px[64];
    dn_image fr;
    CHECK(dn_image_wrap(NULL, 4, 4, 0, DN_GRAY8, &fr) == DN_ERR_ARG && strstr(dn_last_error(), "NULL pixels"));
    CHECK(dn_image_wrap(px, 0, 4, 0, DN_GRAY8, &fr) == DN_ERR_ARG && strstr(dn_last_error(), "0x4"));
    CHECK(dn_image_wrap(px, 4, 4, 0, 7, &fr) == DN_ERR_ARG && strstr(dn_last_error(), "pixel format 7"));
    CHECK(dn_image_wrap(px, 4, 4, 11, DN_RGB8, &fr) == DN_ERR_ARG && strstr(dn_last_error(), "stride 11"));
    CHECK(dn_image_wrap(px, 100000, 100000, 0, DN_GRAY8, &fr) == DN_ERR_ARG);
    CHECK(dn_image_wrap(px, 4, 4, 4, DN_GRAY8, &fr) == DN_OK && fr.stride == 4 && fr.format == DN_GRAY8);
    dn_image bad = fr;
    bad.format = 9;
    dn_preproc pp;
    dn_preproc_default(&pp);
    float out[3 * 8 * 8];
    pp.resize = 0, pp.crop = 8;
    CHECK(dn_preprocess(&bad, &pp, out) == DN_ERR_ARG);
}

/* Model bytes in memory load like the file; garbage is refused naming the label. */
TEST(capi_load_memory_and_metadata) {
    uint8_t *bytes = NULL;
    size_t len = 0;
    CHECK(dn_read_file(MODEL, (size_t)1 << 30, &bytes, &len) == DN_OK);
    if (!bytes) return;
    dn_model *a = NULL, *b = NULL;
    CHECK(dn_model_load(MODEL, &a) == DN_OK);
    CHECK(dn_model_load_memory(bytes, len, "firmware:model", &b) == DN_OK);
    if (a && b) {
        CHECK(dn_model_num_classes(a) == dn_model_num_classes(b));
        CHECK(!strcmp(dn_model_sha256(a), dn_model_sha256(b)) && strlen(dn_model_sha256(a)) == 64);
        CHECK(!strcmp(dn_model_source_sha256(b), dn_model_sha256(b))); /* a .pth is its own source */
        CHECK(!strcmp(dn_model_arch(b), dn_model_arch(a)));
        CHECK(dn_model_temperature(b) == 1.0f && dn_model_threshold(b) == 0.0f);
        CHECK(!strcmp(dn_model_class_name(b, 0), "class_0"));
        CHECK(dn_model_preproc(b)->crop == 224);
        CHECK(dn_model_metadata(b, "no.such.key") == NULL);
    }
    dn_model_free(a);
    dn_model_free(b);
    dn_model *c = (dn_model *)1;
    CHECK(dn_model_load_memory("garbage!", 8, "firmware:model", &c) == DN_ERR_FORMAT && c == NULL);
    CHECK(strstr(dn_last_error(), "firmware:model") != NULL);
    CHECK(dn_model_load_memory(bytes, len / 2, NULL, &c) != DN_OK && c == NULL);
    CHECK(strstr(dn_last_error(), "memory") != NULL);
    free(bytes);
}

/* Batch classify over mixed sizes and formats == one at a time. */
TEST(capi_batch_classify_and_options) {
    dn_model *m = NULL;
    dn_session *s1 = NULL, *s3 = NULL;
    CHECK(dn_model_load(MODEL, &m) == DN_OK);
    if (!m) return;
    dn_session_options o;
    dn_session_options_default(&o);
    CHECK(o.max_batch == 1 && o.threads == 0 && o.share == NULL);
    CHECK(dn_session_create(m, &o, &s1) == DN_OK);
    o.max_batch = 3;
    o.threads = 1;
    o.share = s1;
    CHECK(dn_session_create(m, &o, &s3) == DN_OK);
    if (!s1 || !s3) goto done;
    enum { N = 7 };
    static uint8_t px[N][50 * 40 * 3];
    dn_image imgs[N];
    const int fmts[3] = {DN_RGB8, DN_BGR8, DN_GRAY8};
    for (int i = 0; i < N; i++) {
        int w = 30 + 3 * i, h = 40 - i;
        fill_rgb(px[i], w, h, i);
        CHECK(dn_image_wrap(px[i], w, h, 0, fmts[i % 3], &imgs[i]) == DN_OK);
    }
    int nc = dn_model_num_classes(m);
    float pb[N * 8], p1[8];
    dn_prediction pr[N], one;
    CHECK(dn_session_classify_images(s3, imgs, N, pr, pb) == DN_OK);
    for (int i = 0; i < N; i++) {
        CHECK(dn_session_classify(s1, &imgs[i], &one, p1) == DN_OK);
        CHECK(one.cls == pr[i].cls);
        for (int k = 0; k < nc; k++) CHECK_NEAR(p1[k], pb[i * nc + k], 1e-5);
    }
    dn_image empty = {0};
    imgs[4] = empty;
    CHECK(dn_session_classify_images(s3, imgs, N, pr, NULL) == DN_ERR_ARG && strstr(dn_last_error(), "image 4"));
    CHECK(dn_session_classify_images(s3, imgs, 0, pr, NULL) == DN_OK);
    o.max_batch = 0;
    o.share = NULL;
    dn_session *bad = NULL;
    CHECK(dn_session_create(m, &o, &bad) != DN_OK && bad == NULL);
done:
    dn_session_free(s3);
    dn_session_free(s1);
    dn_model_free(m);
}

/* The model's stored decision policy (eval --target-escape/--cost: "reject
 * unless p(good) >= T") applies in predict and the C API, not only in serve:
 * a head with constant probabilities (zero weights) gives p(ok) = 0.8 for
 * every image; with good_threshold 0.93 that is uncertain, without a policy
 * (or with another good class) accepted. */
static char *policy_model(const char *file, const char *policy) {
    dn_model *m = NULL;
    if (dn_model_load(MODEL, &m) != DN_OK) return NULL;
    static const char *names[5] = {"crack", "ok", "patch", "scratch", "spot"};
    const float p[5] = {0.05f, 0.8f, 0.05f, 0.05f, 0.05f};
    for (int i = 0; i < 5; i++) {
        free(m->class_names[i]);
        m->class_names[i] = dn_strdup(names[i]);
        m->fc_b[i] = logf(p[i]);
    }
    memset(m->fc_w, 0, (size_t)m->num_classes * m->feat_dim * sizeof(float));
    m->pp.resize = 0;
    m->pp.crop = 32;
    m->threshold = 0.5f;
    if (policy) dn_meta_set(&m->meta, "decision_policy", policy);
    char *path = malloc(400);
    snprintf(path, 400, "%s/%s", g_dir, file);
    dn_status st = dn_model_save(m, path);
    dn_model_free(m);
    if (st) { free(path); return NULL; }
    return path;
}

TEST(stored_decision_policy_applied) {
    if (!g_dir[0]) SKIP("DN_BIN not set (run through tests/run.sh)");
    char *plain = policy_model("plain.safetensors", NULL);
    char *strict = policy_model("strict.safetensors", "{\"good_class\":\"ok\",\"good_threshold\":0.93}");
    char *broken = policy_model("broken.safetensors", "{\"good_class\":\"crack\",\"good_threshold\":0.93}");
    CHECK(plain && strict && broken);
    if (!plain || !strict || !broken) goto done;
    /* the C API */
    dn_model *mp = NULL, *ms = NULL, *mb = NULL;
    dn_session *sp = NULL, *ss = NULL, *sb = NULL, *sh = NULL;
    CHECK(dn_model_load(plain, &mp) == DN_OK && dn_model_load(strict, &ms) == DN_OK && dn_model_load(broken, &mb) == DN_OK);
    if (!mp || !ms || !mb) goto capi_done;
    CHECK(dn_session_new(mp, 2, 1, &sp) == DN_OK && dn_session_new(ms, 2, 1, &ss) == DN_OK);
    CHECK(dn_session_new_shared(ss, 1, 1, &sh) == DN_OK);
    CHECK(dn_session_new(mb, 1, 1, &sb) == DN_OK); /* forward still possible; classify refuses */
    if (!sp || !ss || !sh || !sb) goto capi_done;
    char img_path[400];
    snprintf(img_path, sizeof img_path, "%s/a_good.pgm", g_dir);
    dn_image img = {0};
    CHECK(dn_image_load(img_path, &img) == DN_OK);
    dn_prediction a, b[2];
    CHECK(dn_session_classify(sp, &img, &a, NULL) == DN_OK);
    CHECK(a.cls == 1 && fabsf(a.confidence - 0.8f) < 1e-4f && !a.uncertain && a.decision == DN_DECISION_ACCEPTED);
    memset(&a, 0x5a, sizeof a); /* garbage in: every field set */
    CHECK(dn_session_classify(ss, &img, &a, NULL) == DN_OK);
    CHECK_MSG(a.cls == 1 && a.uncertain && a.decision == DN_DECISION_UNCERTAIN, "cls %d unc %d dec %d", a.cls,
              a.uncertain, a.decision);
    dn_image two[2] = {img, img};
    CHECK(dn_session_classify_images(ss, two, 2, b, NULL) == DN_OK);
    CHECK(b[0].uncertain && b[1].decision == DN_DECISION_UNCERTAIN);
    CHECK(dn_session_classify(sh, &img, &a, NULL) == DN_OK && a.decision == DN_DECISION_UNCERTAIN); /* shared plan */
    /* another good class: the threshold chosen for "ok" no longer applies */
    CHECK(dn_session_set_good_class(ss, "crack") == DN_OK);
    CHECK(dn_session_classify(ss, &img, &a, NULL) == DN_OK && a.cls == 1 && a.decision == DN_DECISION_ACCEPTED);
    CHECK(dn_session_set_good_class(ss, "nosuch") == DN_ERR_ARG && strstr(dn_last_error(), "'nosuch'") &&
          strstr(dn_last_error(), "crack, ok, patch"));
    CHECK(dn_session_set_good_class(ss, NULL) == DN_OK);
    CHECK(dn_session_classify(ss, &img, &a, NULL) == DN_OK && a.decision == DN_DECISION_UNCERTAIN);
    CHECK(dn_session_classify(sh, &img, &a, NULL) == DN_OK && a.decision == DN_DECISION_UNCERTAIN);
    CHECK(dn_session_classify(sb, &img, &a, NULL) == DN_ERR_FORMAT && strstr(dn_last_error(), "decision_policy"));
    dn_image_free(&img);
capi_done:
    dn_session_free(sh); dn_session_free(sb); dn_session_free(ss); dn_session_free(sp);
    dn_model_free(mb); dn_model_free(ms); dn_model_free(mp);

    /* predict */
    char args[1200], *out, *err;
    snprintf(args, sizeof args, "--model %s --format jsonl %s/a_good.pgm", strict, g_dir);
    CHECK_MSG(run(args, &out, &err) == 0, "%s", err);
    CHECK_MSG(strstr(out, "\"class\": \"ok\"") && strstr(out, "\"uncertain\": true") &&
              strstr(out, "\"decision\": \"uncertain\"") && strstr(out, "\"policy\": \"good_threshold 0.93\"") &&
              strstr(out, "\"good_class\": \"ok\""), "%s", out);
    free(out); free(err);
    snprintf(args, sizeof args, "--model %s --format jsonl %s/a_good.pgm", plain, g_dir);
    CHECK(run(args, &out, &err) == 0);
    CHECK_MSG(strstr(out, "\"decision\": \"accepted\"") && !strstr(out, "\"policy\""), "%s", out);
    free(out); free(err);
    snprintf(args, sizeof args, "--model %s --format jsonl --good-class crack %s/a_good.pgm", strict, g_dir);
    CHECK(run(args, &out, &err) == 0);
    CHECK_MSG(strstr(out, "\"decision\": \"accepted\"") && !strstr(out, "\"policy\""), "%s", out);
    free(out); free(err);
    snprintf(args, sizeof args, "--model %s --format table %s/a_good.pgm", strict, g_dir);
    CHECK(run(args, &out, &err) == 0);
    CHECK_MSG(strstr(out, "uncertain") && strstr(err, "p(ok) >= 0.93") && count_lines(err) == 1, "%s", err);
    free(out); free(err);
    snprintf(args, sizeof args, "--model %s --good-class nosuch %s/a_good.pgm", strict, g_dir);
    CHECK(run(args, &out, &err) == 2);
    CHECK_MSG(strstr(err, "--good-class") && strstr(err, "'nosuch'") && count_lines(err) == 1 && !out[0], "%s", err);
    free(out); free(err);
    snprintf(args, sizeof args, "--model %s %s/a_good.pgm", broken, g_dir);
    CHECK(run(args, &out, &err) == 2);
    CHECK_MSG(strstr(err, broken) && strstr(err, "decision_policy") && count_lines(err) == 1 && !out[0], "%s", err);
    free(out); free(err);
done:
    free(plain); free(strict); free(broken);
}

int main(void) {
    if (!setup()) g_dir[0] = 0;
    RUN(jsonl_good_and_bad_files);
    RUN(batch_size_does_not_change_results);
    RUN(csv_and_table_formats);
    RUN(default_format_is_jsonl_when_piped);
    RUN(usage_and_model_errors);
    RUN(safetensors_model_metadata_applied);
    RUN(model_with_missing_key);
    RUN(capi_version_and_status);
    RUN(capi_wrap_matches_decoded_file);
    RUN(capi_wrap_bad_arguments);
    RUN(capi_load_memory_and_metadata);
    RUN(capi_batch_classify_and_options);
    RUN(stored_decision_policy_applied);
    if (g_dir[0]) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
        if (system(cmd) != 0) printf("could not remove %s\n", g_dir);
    }
    return REPORT();
}
