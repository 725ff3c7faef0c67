/* Weight files: zip, restricted unpickler, torch .pth (zip + legacy), safetensors,
 * model load/save with metadata, verified download (file:// only), and one test
 * per bad-input case. Fixtures: tests/fixtures/weights (tools/make_weight_fixtures.py). */
#include "harness.h"
#include "core/core.h"
#include "core/json.h"
#include "core/sha256.h"
#include "io/download.h"
#include "io/modelfile.h"
#include "io/pickle.h"
#include "io/pth.h"
#include "io/safetensors.h"
#include "io/zip.h"
#include "nn/model.h"
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#define FX "tests/fixtures/weights/"
static char tmpdir[256];

/* ------------------------------------------------------------ helpers */

static uint8_t *slurp(const char *path, size_t *len) {
    uint8_t *b = NULL;
    if (dn_read_file(path, (size_t)1 << 30, &b, len)) return NULL;
    return b;
}
static const char *tpath(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}
static int spit(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(d, 1, n, f) : 0;
    fclose(f);
    return w == n ? 0 : -1;
}
static dn_json *load_json(const char *path) {
    size_t n;
    uint8_t *b = slurp(path, &n);
    if (!b) return NULL;
    dn_json *j = dn_json_parse((const char *)b, n, NULL, 0);
    free(b);
    return j;
}
/* Expects dn_model_load(path) to fail with a message naming the file and containing want. */
static int expect_load_error(const char *path, const char *want) {
    dn_model *m = NULL;
    dn_status st = dn_model_load(path, &m);
    const char *e = dn_last_error();
    int ok = st != DN_OK && m == NULL && strstr(e, path) && strstr(e, want) && !strchr(e, '\n');
    if (!ok) printf("  load(%s): status %d, message '%s', wanted '%s'\n", path, st, e, want);
    dn_model_free(m);
    return ok;
}

/* Minimal zip writer for crafting archives: stored or raw-deflate entries;
 * declared_usize >= 0 overrides the uncompressed size written in the headers. */
typedef struct { const char *name; const uint8_t *data; size_t len; int deflate; long long declared_usize; } zent;
static void put16(uint8_t *p, unsigned v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, v & 0xffff); put16(p + 2, v >> 16); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }
static int mkzip_zip64; /* 1: write zip64 records (sizes/offsets via extra fields + zip64 EOCD) */
static uint8_t *mkzip(const zent *e, int n, size_t *outlen) {
    size_t cap = 1024;
    for (int i = 0; i < n; i++) cap += 2 * e[i].len + 300 + 2 * strlen(e[i].name);
    uint8_t *z = calloc(1, cap), *cd = calloc(1, 1024 + 200 * (size_t)n + 2 * 4096);
    size_t p = 0, c = 0;
    for (int i = 0; i < n; i++) {
        uint8_t *comp = (uint8_t *)e[i].data;
        size_t clen = e[i].len;
        if (e[i].deflate) {
            z_stream s;
            memset(&s, 0, sizeof s);
            deflateInit2(&s, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
            clen = deflateBound(&s, e[i].len);
            comp = malloc(clen);
            s.next_in = (Bytef *)e[i].data; s.avail_in = (uInt)e[i].len;
            s.next_out = comp; s.avail_out = (uInt)clen;
            deflate(&s, Z_FINISH);
            clen = s.total_out;
            deflateEnd(&s);
        }
        uint32_t crc = (uint32_t)crc32(0, e[i].data, (uInt)e[i].len);
        uint64_t us = e[i].declared_usize >= 0 ? (uint64_t)e[i].declared_usize : (uint64_t)e[i].len;
        size_t nl = strlen(e[i].name), loff = p, xl = mkzip_zip64 ? 20 : 0;
        put32(z + p, 0x04034b50); put16(z + p + 4, 45); put16(z + p + 8, e[i].deflate ? 8 : 0);
        put32(z + p + 14, crc);
        put32(z + p + 18, mkzip_zip64 ? 0xFFFFFFFFu : (uint32_t)clen);
        put32(z + p + 22, mkzip_zip64 ? 0xFFFFFFFFu : (uint32_t)us);
        put16(z + p + 26, (unsigned)nl); put16(z + p + 28, (unsigned)xl);
        memcpy(z + p + 30, e[i].name, nl);
        if (xl) { put16(z + p + 30 + nl, 1); put16(z + p + 32 + nl, 16); put64(z + p + 34 + nl, us); put64(z + p + 42 + nl, clen); }
        p += 30 + nl + xl;
        memcpy(z + p, comp, clen);
        p += clen;
        size_t cxl = mkzip_zip64 ? 28 : 0;
        put32(cd + c, 0x02014b50); put16(cd + c + 4, 45); put16(cd + c + 6, 45); put16(cd + c + 10, e[i].deflate ? 8 : 0);
        put32(cd + c + 16, crc);
        put32(cd + c + 20, mkzip_zip64 ? 0xFFFFFFFFu : (uint32_t)clen);
        put32(cd + c + 24, mkzip_zip64 ? 0xFFFFFFFFu : (uint32_t)us);
        put16(cd + c + 28, (unsigned)nl); put16(cd + c + 30, (unsigned)cxl);
        put32(cd + c + 42, mkzip_zip64 ? 0xFFFFFFFFu : (uint32_t)loff);
        memcpy(cd + c + 46, e[i].name, nl);
        if (cxl) { /* order per APPNOTE 4.5.3: usize, csize, local header offset */
            uint8_t *x = cd + c + 46 + nl;
            put16(x, 1); put16(x + 2, 24); put64(x + 4, us); put64(x + 12, clen); put64(x + 20, loff);
        }
        c += 46 + nl + cxl;
        if (comp != e[i].data) free(comp);
    }
    memcpy(z + p, cd, c);
    size_t cdoff = p;
    p += c;
    if (mkzip_zip64) {
        size_t z64 = p;
        put32(z + p, 0x06064b50); put64(z + p + 4, 44); put16(z + p + 12, 45); put16(z + p + 14, 45);
        put64(z + p + 24, (uint64_t)n); put64(z + p + 32, (uint64_t)n); put64(z + p + 40, c); put64(z + p + 48, cdoff);
        p += 56;
        put32(z + p, 0x07064b50); put64(z + p + 8, z64); put32(z + p + 16, 1);
        p += 20;
    }
    put32(z + p, 0x06054b50);
    put16(z + p + 8, mkzip_zip64 ? 0xFFFF : (unsigned)n); put16(z + p + 10, mkzip_zip64 ? 0xFFFF : (unsigned)n);
    put32(z + p + 12, mkzip_zip64 ? 0xFFFFFFFFu : (uint32_t)c); put32(z + p + 16, mkzip_zip64 ? 0xFFFFFFFFu : (uint32_t)cdoff);
    p += 22;
    free(cd);
    *outlen = p;
    return z;
}

/* Rewrites a torch zip with entry "<prefix>data.pkl" replaced by pkl (all others copied). */
static uint8_t *replace_pickle(const char *fixture, const uint8_t *pkl, size_t pkl_len, size_t *outlen) {
    size_t len;
    uint8_t *buf = slurp(fixture, &len), *res = NULL;
    dn_zip *z;
    if (!buf || dn_zip_open(buf, len, fixture, &z)) { free(buf); return NULL; }
    int n = dn_zip_count(z);
    zent *e = calloc((size_t)n, sizeof *e);
    uint8_t **datas = calloc((size_t)n, sizeof *datas);
    for (int i = 0; i < n; i++) {
        size_t dl;
        dn_zip_read(z, i, &datas[i], &dl);
        e[i] = (zent){dn_zip_entry_at(z, i)->name, datas[i], dl, 0, -1};
        const char *sl = strrchr(e[i].name, '/');
        if (sl && !strcmp(sl, "/data.pkl")) { e[i].data = pkl; e[i].len = pkl_len; }
    }
    res = mkzip(e, n, outlen);
    for (int i = 0; i < n; i++) free(datas[i]);
    free(datas);
    free(e);
    dn_zip_close(z);
    free(buf);
    return res;
}

/* Replaces the first occurrence of from (same length not required) in a buffer. */
static uint8_t *subst(const uint8_t *b, size_t len, const char *from, const char *to, size_t *outlen) {
    size_t fl = strlen(from), tl = strlen(to);
    for (size_t i = 0; i + fl <= len; i++)
        if (!memcmp(b + i, from, fl)) {
            uint8_t *o = malloc(len - fl + tl);
            memcpy(o, b, i);
            memcpy(o + i, to, tl);
            memcpy(o + i + tl, b + i + fl, len - i - fl);
            *outlen = len - fl + tl;
            return o;
        }
    return NULL;
}

/* Same, padding `to` with trailing spaces to the length of `from` so a safetensors
 * header keeps its length (JSON allows whitespace after a value). */
static uint8_t *subst_pad(const uint8_t *b, size_t len, const char *from, const char *to, size_t *outlen) {
    char padded[1024];
    snprintf(padded, sizeof padded, "%-*s", (int)strlen(from), to);
    return subst(b, len, from, padded, outlen);
}

static int tensors_equal(const dn_tensors *a, const dn_tensors *b) {
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++) {
        const dn_tensor *x = &a->t[i], *y = &b->t[i];
        if (strcmp(x->name, y->name) || x->ndim != y->ndim || memcmp(x->shape, y->shape, sizeof(int64_t) * (size_t)x->ndim) ||
            memcmp(x->data, y->data, sizeof(float) * (size_t)dn_tensor_numel(x)))
            return 0;
    }
    return 1;
}

/* ------------------------------------------------------------ good files */

static void check_narrow(const dn_tensors *ts) {
    dn_json *j = load_json(FX "narrow.json");
    CHECK(j != NULL);
    if (!j) return;
    const dn_json *arr = dn_json_get(j, "tensors");
    CHECK((size_t)ts->n == dn_json_len(arr));
    CHECK(ts->n == 122);
    for (int i = 0; i < ts->n && (size_t)i < dn_json_len(arr); i++) {
        const dn_json *e = dn_json_at(arr, (size_t)i);
        const dn_tensor *t = &ts->t[i];
        CHECK_MSG(!strcmp(t->name, dn_json_str(dn_json_get(e, "name"), "")), "key %d: %s", i, t->name);
        const dn_json *sh = dn_json_get(e, "shape");
        CHECK((size_t)t->ndim == dn_json_len(sh));
        for (int d = 0; d < t->ndim; d++) CHECK(t->shape[d] == (int64_t)dn_json_num(dn_json_at(sh, (size_t)d), -1));
        double s = 0, as = 0;
        for (int64_t k = 0; k < dn_tensor_numel(t); k++) { s += t->data[k]; as += fabs(t->data[k]); }
        double ws = dn_json_num(dn_json_get(e, "sum"), 1e30), was = dn_json_num(dn_json_get(e, "abssum"), 1e30);
        CHECK_NEAR(s, ws, 1e-6 * (1 + was));
        CHECK_NEAR(as, was, 1e-6 * (1 + was));
        const dn_json *first = dn_json_get(e, "first");
        for (size_t k = 0; k < dn_json_len(first); k++)
            CHECK(t->data[k] == (float)dn_json_num(dn_json_at(first, k), 1e30));
    }
    dn_json_free(j);
}

TEST(pth_zip_narrow) {
    dn_tensors ts;
    dn_status st = dn_pth_load(FX "narrow_zip.pth", &ts);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    check_narrow(&ts);
    /* BatchNorm statistics are non-trivial and num_batches_tracked (int64) became float */
    dn_tensor *v = dn_tensors_find(&ts, "layer2.0.downsample.1.running_var");
    dn_tensor *nb = dn_tensors_find(&ts, "layer3.1.bn2.num_batches_tracked");
    CHECK(v && v->data[0] != 1.0f);
    CHECK(nb && nb->ndim == 0 && nb->data[0] >= 1.0f && nb->data[0] == floorf(nb->data[0]));
    dn_tensors_free(&ts);
}

TEST(pth_legacy_narrow_equals_zip) {
    dn_tensors a, b;
    CHECK(dn_pth_load(FX "narrow_zip.pth", &a) == DN_OK);
    dn_status st = dn_pth_load(FX "narrow_legacy.pth", &b);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    check_narrow(&b);
    CHECK(tensors_equal(&a, &b));
    dn_tensors_free(&a);
    dn_tensors_free(&b);
}

/* fp16/bf16/f64/ints/bool, 0-dim, transposed, strided slice with offset, shared
 * storage, nn.Parameter, checkpoint dict with "module." prefix. */
static void check_dtypes(const char *file) {
    dn_tensors ts;
    dn_status st = dn_pth_load(file, &ts);
    CHECK_MSG(st == DN_OK, "%s: %s", file, dn_last_error());
    dn_json *j = load_json(FX "dtypes.json");
    const dn_json *arr = dn_json_get(j, "tensors");
    CHECK(j && (size_t)ts.n == dn_json_len(arr));
    for (int i = 0; i < ts.n && (size_t)i < dn_json_len(arr); i++) {
        const dn_json *e = dn_json_at(arr, (size_t)i);
        const dn_tensor *t = &ts.t[i];
        CHECK_MSG(!strcmp(t->name, dn_json_str(dn_json_get(e, "name"), "")), "%s key %d: %s", file, i, t->name);
        const dn_json *sh = dn_json_get(e, "shape"), *vals = dn_json_get(e, "values");
        CHECK((size_t)t->ndim == dn_json_len(sh));
        for (int d = 0; d < t->ndim; d++) CHECK(t->shape[d] == (int64_t)dn_json_num(dn_json_at(sh, (size_t)d), -1));
        CHECK((size_t)dn_tensor_numel(t) == dn_json_len(vals));
        for (size_t k = 0; k < dn_json_len(vals) && (int64_t)k < dn_tensor_numel(t); k++)
            CHECK_MSG(t->data[k] == (float)dn_json_num(dn_json_at(vals, k), 1e30), "%s %s[%zu] = %g", file, t->name, k,
                      (double)t->data[k]);
    }
    dn_json_free(j);
    dn_tensors_free(&ts);
}
TEST(pth_dtypes_zip) { check_dtypes(FX "dtypes_zip.pth"); }
TEST(pth_dtypes_legacy) { check_dtypes(FX "dtypes_legacy.pth"); }
TEST(pth_dtypes_deflate_zip) { check_dtypes(FX "dtypes_deflate.pth"); }

TEST(real_resnet18_pth) {
    const char *sh = h_shared();
    if (!sh) SKIP("../shared (or $DN_SHARED) absent");
    char path[1100];
    snprintf(path, sizeof path, "%s/weights/resnet18-imagenet.pth", sh);
    if (access(path, R_OK) != 0) SKIP("%s absent", path);
    char hex[65];
    CHECK(dn_sha256_file(path, hex) == DN_OK);
    CHECK(!strcmp(hex, "324a33d842458aa9361a4124d3b07f907e4f143d113ecb7310d1ea38243cdce4"));
    dn_tensors ts;
    CHECK(dn_pth_load(path, &ts) == DN_OK);
    CHECK(ts.n == 122);
    static const struct { const char *n; int nd; int64_t s[4]; } want[] = {
        {"conv1.weight", 4, {64, 3, 7, 7}}, {"bn1.running_var", 1, {64}}, {"layer1.0.conv1.weight", 4, {64, 64, 3, 3}},
        {"layer2.0.downsample.0.weight", 4, {128, 64, 1, 1}}, {"layer4.1.bn2.num_batches_tracked", 0, {0}},
        {"layer4.1.conv2.weight", 4, {512, 512, 3, 3}}, {"fc.weight", 2, {1000, 512}}, {"fc.bias", 1, {1000}}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        dn_tensor *t = dn_tensors_find(&ts, want[i].n);
        CHECK_MSG(t && t->ndim == want[i].nd && !memcmp(t->shape, want[i].s, sizeof(int64_t) * (size_t)want[i].nd), "%s", want[i].n);
    }
    CHECK(!strcmp(ts.t[0].name, "conv1.weight") && !strcmp(ts.t[121].name, "fc.bias"));
    dn_tensors_free(&ts);
    dn_model *m;
    CHECK(dn_model_load(path, &m) == DN_OK);
    CHECK(!strcmp(m->arch, "resnet18") && m->num_classes == 1000 && dn_model_param_count(m) == 11689512);
    CHECK(!strcmp(m->sha256, hex) && !strcmp(m->source_sha256, hex));
    /* full-width safetensors round trip keeps every value bit-exact and the provenance */
    const char *out = tpath("r18.safetensors");
    dn_model *m2 = NULL;
    CHECK(dn_model_save(m, out) == DN_OK && dn_model_load(out, &m2) == DN_OK);
    if (m2) {
        dn_tensors a = {0}, b = {0};
        CHECK(dn_model_to_tensors(m, &a) == DN_OK && dn_model_to_tensors(m2, &b) == DN_OK && tensors_equal(&a, &b));
        CHECK(!strcmp(m2->source_sha256, hex) && !strcmp(m2->arch, "resnet18"));
        dn_tensors_free(&a);
        dn_tensors_free(&b);
    }
    unlink(out);
    dn_model_free(m2);
    dn_model_free(m);
}

TEST(model_load_pth_defaults) {
    dn_model *m;
    dn_status st = dn_model_load(FX "narrow_zip.pth", &m);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (st) return;
    char hex[65];
    dn_sha256_file(FX "narrow_zip.pth", hex);
    CHECK(!strcmp(m->arch, "resnet-custom"));
    CHECK(m->num_classes == 5 && m->widths[3] == 24 && m->nblocks == 8);
    CHECK(!strcmp(dn_model_class_name(m, 4), "class_4"));
    dn_preproc def;
    dn_preproc_default(&def);
    CHECK(!memcmp(&m->pp, &def, sizeof def));
    CHECK(!strcmp(m->sha256, hex) && !strcmp(m->source_sha256, hex));
    CHECK(m->temperature == 1.0f && m->threshold == 0.0f);
    dn_model_free(m);
    /* backbone only */
    CHECK(dn_model_load_ex(FX "narrow_legacy.pth", 1, &m) == DN_OK);
    CHECK(m && m->num_classes == 0 && m->fc_w == NULL);
    dn_model_free(m);
}

TEST(model_save_roundtrip_metadata) {
    dn_model *m, *m2 = NULL;
    CHECK(dn_model_load(FX "narrow_legacy.pth", &m) == DN_OK);
    if (!m) return;
    const char *names[5] = {"crazing", "inclusion", "patches \"q\"", "pitted_surface", "r\xc3\xa9sidu"};
    for (int i = 0; i < 5; i++) { free(m->class_names[i]); m->class_names[i] = dn_strdup(names[i]); }
    m->pp.resize = 128; m->pp.crop = 112; m->pp.bgr = 1;
    m->pp.mean[0] = 0.5f; m->pp.std[2] = 0.25f;
    m->temperature = 1.7f;
    m->threshold = 0.6f;
    dn_meta_set(&m->meta, "quant_guard", "{\"top1_agreement\":0.997}");
    dn_meta_set(&m->meta, "recipe", "lr=0.01");
    const char *out = tpath("rt.safetensors");
    dn_status st = dn_model_save(m, out);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    st = dn_model_load(out, &m2);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (!m2) { dn_model_free(m); return; }
    for (int i = 0; i < 5; i++) CHECK(!strcmp(dn_model_class_name(m2, i), names[i]));
    CHECK(!memcmp(&m2->pp, &m->pp, sizeof m->pp));
    CHECK(m2->temperature == 1.7f && m2->threshold == 0.6f);
    CHECK(!strcmp(m2->source_sha256, m->source_sha256));
    char hex[65];
    dn_sha256_file(out, hex);
    CHECK(!strcmp(m2->sha256, hex) && strcmp(m2->sha256, m2->source_sha256));
    CHECK(dn_meta_get(&m2->meta, "quant_guard") && !strcmp(dn_meta_get(&m2->meta, "quant_guard"), "{\"top1_agreement\":0.997}"));
    CHECK(dn_meta_get(&m2->meta, "recipe") && dn_meta_get(&m2->meta, "classes") == NULL);
    /* backbone of a saved model: head, classes and calibration dropped, preprocessing kept */
    dn_model *bb = NULL;
    st = dn_model_load_ex(out, 1, &bb);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    CHECK(bb && bb->num_classes == 0 && bb->temperature == 1.0f && bb->threshold == 0.0f && bb->pp.crop == 112);
    dn_model_free(bb);
    dn_tensors a = {0}, b = {0};
    CHECK(dn_model_to_tensors(m, &a) == DN_OK && dn_model_to_tensors(m2, &b) == DN_OK);
    CHECK(tensors_equal(&a, &b));
    dn_tensors_free(&a);
    dn_tensors_free(&b);
    /* the file is plain safetensors: 8-byte length, JSON header with __metadata__ */
    dn_tensors ts;
    dn_meta meta;
    CHECK(dn_safetensors_load(out, &ts, &meta) == DN_OK);
    CHECK(ts.n == 122 && !strcmp(dn_meta_get(&meta, "format"), "defectnet") && !strcmp(dn_meta_get(&meta, "arch"), "resnet-custom"));
    dn_tensors_free(&ts);
    dn_meta_free(&meta);
    /* atomic write left no temporary files */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c tmp", tmpdir);
    FILE *p = popen(cmd, "r");
    int ntmp = -1;
    if (p) { if (fscanf(p, "%d", &ntmp) != 1) ntmp = -1; pclose(p); }
    CHECK(ntmp == 0);
    dn_model_free(m);
    dn_model_free(m2);
}

/* Hand-written safetensors: F16/BF16/I64/F64 read, metadata strings. */
static uint8_t *mk_st(const char *header, const uint8_t *data, size_t dlen, size_t *outlen) {
    size_t hl = strlen(header);
    uint8_t *b = malloc(8 + hl + dlen);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    if (dlen) memcpy(b + 8 + hl, data, dlen);
    *outlen = 8 + hl + dlen;
    return b;
}

/* The safetensors we write, read back by an independent reader (Python: struct +
 * json + numpy) and compared with torch.load of the source .pth: bit-exact. */
TEST(safetensors_matches_torch_via_python) {
    if (system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") != 0) SKIP("/usr/bin/python3 without torch/numpy");
    dn_model *m = NULL;
    CHECK(dn_model_load(FX "narrow_legacy.pth", &m) == DN_OK);
    if (!m) return;
    const char *out = tpath("py.safetensors");
    CHECK(dn_model_save(m, out) == DN_OK);
    dn_model_free(m);
    const char *py = tpath("check.py");
    static const char script[] =
        "import json, struct, sys, numpy as np, torch\n"
        "b = open(sys.argv[1], 'rb').read()\n"
        "n = struct.unpack('<Q', b[:8])[0]\n"
        "h = json.loads(b[8:8 + n]); meta = h.pop('__metadata__')\n"
        "sd = torch.load(sys.argv[2])\n"
        "assert list(h) == list(sd), 'key order'\n"
        "for k, v in h.items():\n"
        "    s, e = v['data_offsets']\n"
        "    a = np.frombuffer(b[8 + n + s:8 + n + e], dtype='<f4').reshape(v['shape'])\n"
        "    t = sd[k].to(torch.float32).numpy()\n"
        "    assert v['dtype'] == 'F32' and a.shape == t.shape and np.array_equal(a, t), k\n"
        "assert json.loads(meta['classes']) == ['class_%d' % i for i in range(5)]\n"
        "assert json.loads(meta['preprocess'])['crop'] == 224 and meta['format'] == 'defectnet'\n"
        "print('OK', len(h))\n";
    CHECK(spit(py, script, sizeof script - 1) == 0);
    char cmd[1600], res[64] = "";
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s " FX "narrow_legacy.pth 2>&1", py, out);
    FILE *p = popen(cmd, "r");
    if (p) { if (!fgets(res, sizeof res, p)) res[0] = 0; pclose(p); }
    CHECK_MSG(!strcmp(res, "OK 122\n"), "python said: %s", res);
}

TEST(plain_safetensors_state_dict) {
    /* a safetensors state_dict written by another tool: no defectnet metadata */
    dn_tensors ts;
    CHECK(dn_pth_load(FX "narrow_zip.pth", &ts) == DN_OK);
    dn_meta meta = {0};
    dn_meta_set(&meta, "producer", "other-tool");
    const char *p = tpath("plain.safetensors");
    CHECK(dn_safetensors_save(p, &ts, &meta) == DN_OK);
    dn_tensors_free(&ts);
    dn_meta_free(&meta);
    dn_model *m = NULL;
    CHECK(dn_model_load(p, &m) == DN_OK);
    char hex[65];
    dn_sha256_file(p, hex);
    CHECK(m && !strcmp(m->source_sha256, hex) && !strcmp(dn_model_class_name(m, 0), "class_0") &&
          dn_meta_get(&m->meta, "producer") && m->pp.crop == 224);
    dn_model_free(m);
}

TEST(safetensors_read_dtypes) {
    uint8_t data[2 + 2 + 8 + 8 + 4];
    uint16_t h = 0x3C00;                  /* fp16 1.0 */
    uint16_t bf = 0xC040;                 /* bf16 -3.0 */
    int64_t i64 = -123456789;
    double f64 = 0.125;
    float f32 = 2.5f;
    memcpy(data, &h, 2); memcpy(data + 2, &bf, 2); memcpy(data + 4, &i64, 8); memcpy(data + 12, &f64, 8); memcpy(data + 20, &f32, 4);
    size_t n;
    uint8_t *f = mk_st("{\"a\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,2]},"
                       "\"b\":{\"dtype\":\"BF16\",\"shape\":[1,1],\"data_offsets\":[2,4]},"
                       "\"c\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[4,12]},"
                       "\"d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[12,20]},"
                       "\"e\":{\"dtype\":\"F32\",\"shape\":[1,0],\"data_offsets\":[20,20]},"
                       "\"__metadata__\":{\"k\":\"v\"}}", data, sizeof data, &n);
    dn_tensors ts;
    dn_meta meta;
    dn_status st = dn_safetensors_load_mem(f, n, "mem", &ts, &meta);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (!st) {
        CHECK(ts.n == 5 && ts.t[0].data[0] == 1.0f && ts.t[1].data[0] == -3.0f && ts.t[2].ndim == 0 &&
              ts.t[2].data[0] == (float)-123456789 && ts.t[3].data[0] == 0.125f && dn_tensor_numel(&ts.t[4]) == 0);
        CHECK(!strcmp(dn_meta_get(&meta, "k"), "v"));
    }
    dn_tensors_free(&ts);
    dn_meta_free(&meta);
    free(f);
}

TEST(download_verifies_sha256_file_url) {
    char url[700], hex[65];
    char cwd[400];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    snprintf(url, sizeof url, "file://%s/" FX "dtypes_zip.pth", cwd);
    dn_sha256_file(FX "dtypes_zip.pth", hex);
    const char *out = tpath("dl.pth");
    dn_status st = dn_download(url, out, hex, 0, 1);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    char got[65];
    CHECK(dn_sha256_file(out, got) == DN_OK && !strcmp(got, hex));
    /* mismatch: refused, nothing left behind */
    const char *out2 = tpath("dl_bad.pth");
    st = dn_download(url, out2, DN_RESNET18_SHA256, 0, 1);
    CHECK(st != DN_OK && strstr(dn_last_error(), "sha256 mismatch") && strstr(dn_last_error(), DN_RESNET18_SHA256));
    CHECK(access(out2, F_OK) != 0);
    /* size limit, missing file, malformed expected digest */
    CHECK(dn_download(url, out2, hex, 100, 1) != DN_OK && strstr(dn_last_error(), "exceeds"));
    snprintf(url, sizeof url, "file://%s/nonexistent.pth", cwd);
    CHECK(dn_download(url, out2, hex, 0, 1) == DN_ERR_NET);
    CHECK(dn_download(url, out2, "f37072fd", 0, 1) == DN_ERR_ARG);
    CHECK(access(out2, F_OK) != 0);
    /* the published torchvision prefix is the start of the pinned digest */
    CHECK(!strncmp(DN_RESNET18_SHA256, "f37072fd", 8) && strstr(DN_RESNET18_URL, "f37072fd"));
}


TEST(zip64_archive) {
    /* the narrow model re-packed with zip64 records everywhere (as torch writes > 4 GiB files) */
    size_t n, pn;
    uint8_t *b = slurp(FX "narrow_zip.pth", &n);
    dn_zip *z;
    if (!b || dn_zip_open(b, n, "x", &z)) { CHECK(0); free(b); return; }
    uint8_t *pkl;
    CHECK(dn_zip_read(z, dn_zip_find(z, "narrow_zip/data.pkl"), &pkl, &pn) == DN_OK);
    mkzip_zip64 = 1;
    uint8_t *zz = replace_pickle(FX "narrow_zip.pth", pkl, pn, &n);
    mkzip_zip64 = 0;
    CHECK(zz && spit(tpath("zip64.pth"), zz, n) == 0);
    dn_zip *z2;
    CHECK(zz && dn_zip_open(zz, n, "zip64", &z2) == DN_OK);
    if (zz && z2) { CHECK(dn_zip_count(z2) == dn_zip_count(z)); dn_zip_close(z2); }
    dn_tensors a, c;
    CHECK(dn_pth_load(FX "narrow_zip.pth", &a) == DN_OK);
    dn_status st = dn_pth_load(tpath("zip64.pth"), &c);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    CHECK(tensors_equal(&a, &c));
    dn_tensors_free(&a);
    dn_tensors_free(&c);
    free(zz); free(pkl);
    dn_zip_close(z);
    free(b);
}

/* Deterministic random corruption of every small fixture format: each mutated file
 * either loads or fails with a one-line message naming it; never a crash (run
 * under ASan+UBSan to make that meaningful). */
TEST(robust_random_corruption) {
    const char *files[] = {FX "dtypes_zip.pth", FX "dtypes_legacy.pth", FX "dtypes_deflate.pth", NULL};
    dn_model *m;
    CHECK(dn_model_load(FX "narrow_zip.pth", &m) == DN_OK);
    const char *stp = tpath("fuzz_base.safetensors");
    CHECK(m && dn_model_save(m, stp) == DN_OK);
    dn_model_free(m);
    files[3] = stp;
    dn_rng r;
    dn_rng_seed(&r, 2024);
    for (int f = 0; f < 4; f++) {
        size_t n;
        uint8_t *b = slurp(files[f], &n);
        if (!b) { CHECK(0); continue; }
        uint8_t *c = malloc(n);
        int bad_msg = 0;
        for (int it = 0; it < 400; it++) {
            memcpy(c, b, n);
            int k = 1 + (int)dn_rng_below(&r, 6);
            for (int j = 0; j < k; j++) {
                size_t pos = f == 3 && j == 0 ? dn_rng_below(&r, 2048) : dn_rng_below(&r, (uint32_t)n); /* hit the header */
                c[pos] = dn_rng_below(&r, 2) ? (uint8_t)(c[pos] ^ (1u << dn_rng_below(&r, 8))) : (uint8_t)dn_rng_below(&r, 256);
            }
            size_t len = dn_rng_below(&r, 8) == 0 ? dn_rng_below(&r, (uint32_t)n) : n;
            dn_tensors ts;
            dn_meta meta;
            dn_status st = f == 3 ? dn_safetensors_load_mem(c, len, "mutant", &ts, &meta) : dn_pth_load_mem(c, len, "mutant", &ts);
            if (st && (!strstr(dn_last_error(), "mutant") || strchr(dn_last_error(), '\n'))) bad_msg++;
            dn_tensors_free(&ts);
            if (f == 3) dn_meta_free(&meta);
        }
        CHECK_MSG(bad_msg == 0, "%s: %d failures without a proper message", files[f], bad_msg);
        free(c);
        free(b);
    }
}

/* ------------------------------------------------------------ bad input */

TEST(bad_truncated_pth_zip) {
    size_t n;
    uint8_t *b = slurp(FX "narrow_zip.pth", &n);
    CHECK(b && spit(tpath("trunc_zip.pth"), b, n / 2) == 0);
    CHECK(expect_load_error(tpath("trunc_zip.pth"), "end-of-central-directory record not found"));
    free(b);
}

TEST(bad_truncated_pth_legacy) {
    size_t n;
    uint8_t *b = slurp(FX "narrow_legacy.pth", &n);
    CHECK(b && spit(tpath("trunc_legacy.pth"), b, n - 1000) == 0);
    CHECK(expect_load_error(tpath("trunc_legacy.pth"), "truncated"));
    CHECK(b && spit(tpath("trunc_legacy2.pth"), b, 200) == 0); /* inside the main pickle */
    CHECK(expect_load_error(tpath("trunc_legacy2.pth"), "truncated"));
    free(b);
}

TEST(bad_corrupt_zip_directory) {
    size_t n;
    uint8_t *b = slurp(FX "narrow_zip.pth", &n);
    if (!b) { CHECK(0); return; }
    /* find the first central directory header and break its signature */
    size_t cd = 0;
    for (size_t i = n - 21; i-- > 0;)
        if (b[i] == 0x50 && b[i + 1] == 0x4b && b[i + 2] == 0x05 && b[i + 3] == 0x06) {
            cd = (size_t)b[i + 16] | (size_t)b[i + 17] << 8 | (size_t)b[i + 18] << 16 | (size_t)b[i + 19] << 24;
            break;
        }
    CHECK(cd > 0 && cd < n);
    b[cd + 1] ^= 0xff;
    CHECK(spit(tpath("corrupt_cd.pth"), b, n) == 0);
    CHECK(expect_load_error(tpath("corrupt_cd.pth"), "corrupt zip central directory"));
    b[cd + 1] ^= 0xff;
    /* central directory offset pointing past the end */
    for (size_t i = n - 21; i-- > 0;)
        if (b[i] == 0x50 && b[i + 1] == 0x4b && b[i + 2] == 0x05 && b[i + 3] == 0x06) { put32(b + i + 16, 0x7fffffff); break; }
    CHECK(spit(tpath("corrupt_cd2.pth"), b, n) == 0);
    CHECK(expect_load_error(tpath("corrupt_cd2.pth"), "lies outside the file"));
    free(b);
}

TEST(bad_zip_crc) {
    size_t n;
    uint8_t *b = slurp(FX "narrow_zip.pth", &n);
    if (!b) { CHECK(0); return; }
    b[n / 2] ^= 0x55; /* inside a weight storage */
    CHECK(spit(tpath("crc.pth"), b, n) == 0);
    CHECK(expect_load_error(tpath("crc.pth"), "CRC-32 mismatch"));
    free(b);
}

TEST(bad_zip_bomb) {
    size_t big = (size_t)8 << 20; /* 8 MiB of zeros deflates ~1000:1 */
    uint8_t *zeros = calloc(1, big);
    const char *pkl = "\x80\x02}q\x00.";
    zent e[2] = {{"bomb/data.pkl", (const uint8_t *)pkl, strlen(pkl), 0, -1}, {"bomb/data/0", zeros, big, 1, -1}};
    size_t n;
    uint8_t *z = mkzip(e, 2, &n);
    CHECK(n < big / 100);
    CHECK(spit(tpath("bomb.pth"), z, n) == 0);
    CHECK(expect_load_error(tpath("bomb.pth"), "zip bomb"));
    free(z);
    /* an entry that inflates to more than it declares (ratio small, size lie) */
    uint8_t rnd[4000];
    dn_rng r;
    dn_rng_seed(&r, 3);
    for (size_t i = 0; i < sizeof rnd; i++) rnd[i] = (uint8_t)dn_rng_below(&r, 256);
    zent e2[2] = {{"lie/data.pkl", rnd, sizeof rnd, 1, 100}, {"lie/data/0", (const uint8_t *)pkl, 4, 0, -1}};
    z = mkzip(e2, 2, &n);
    CHECK(spit(tpath("lie.pth"), z, n) == 0);
    CHECK(expect_load_error(tpath("lie.pth"), "inflates to more than its declared 100 bytes"));
    free(z);
    free(zeros);
}

static void bad_pickle_case(const char *file, const uint8_t *pkl, size_t len, const char *want) {
    size_t n;
    uint8_t *z = replace_pickle(FX "dtypes_zip.pth", pkl, len, &n);
    CHECK(z != NULL);
    if (!z) return;
    CHECK(spit(tpath(file), z, n) == 0);
    CHECK(expect_load_error(tpath(file), want));
    free(z);
}

TEST(bad_pickle_disallowed_global) {
    static const char os_system[] = "\x80\x02" "cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.";
    bad_pickle_case("os_system.pth", (const uint8_t *)os_system, sizeof os_system - 1, "global 'os.system' is not allowed");
    static const char eval[] = "\x80\x02" "cbuiltins\neval\nX\x01\x00\x00\x001\x85R.";
    bad_pickle_case("eval.pth", (const uint8_t *)eval, sizeof eval - 1, "global 'builtins.eval' is not allowed");
    /* protocol-4 STACK_GLOBAL spelling of the same */
    static const char sg[] = "\x80\x04\x8c\x02os\x8c\x06system\x93.";
    bad_pickle_case("stack_global.pth", (const uint8_t *)sg, sizeof sg - 1, "global 'os.system' is not allowed");
    /* an allowed global called in a way that is not allowed */
    static const char red[] = "\x80\x02" "ctorch\nFloatStorage\n)R.";
    bad_pickle_case("reduce_storage.pth", (const uint8_t *)red, sizeof red - 1, "REDUCE of 'torch.FloatStorage' is not allowed");
}

TEST(pickle_rebuild_tensor_v1_and_memoize) {
    /* protocol-4 style: SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, old 4-argument _rebuild_tensor */
    static const char pk[] = "\x80\x04}\x94\x8c\x01w\x94"
        "\x8c\x0ctorch._utils\x94\x8c\x0f_rebuild_tensor\x94\x93\x94"
        "((\x8c\x07storage\x8c\x05torch\x8c\x0c" "FloatStorage\x93\x8c\x01" "0\x8c\x03" "cpu\x4b\x02t\x51"
        "K\x00K\x02\x85K\x01\x85t\x52s.";
    size_t n;
    uint8_t *z = replace_pickle(FX "dtypes_zip.pth", (const uint8_t *)pk, sizeof pk - 1, &n);
    dn_tensors ts;
    dn_status st = z ? dn_pth_load_mem(z, n, "v1", &ts) : DN_ERR_IO;
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (!st) {
        CHECK(ts.n == 1 && !strcmp(ts.t[0].name, "w") && ts.t[0].ndim == 1 && ts.t[0].shape[0] == 2);
        dn_tensors_free(&ts);
    }
    free(z);
}

TEST(bad_pickle_unknown_opcode) {
    static const char unk[] = "\x80\x02}\xff.";
    bad_pickle_case("opcode.pth", (const uint8_t *)unk, sizeof unk - 1, "unknown opcode 0xff");
    static const char newobj[] = "\x80\x02" "ccollections\nOrderedDict\n)\x81.";
    bad_pickle_case("newobj.pth", (const uint8_t *)newobj, sizeof newobj - 1, "opcode NEWOBJ (0x81) is not allowed");
    static const char nostop[] = "\x80\x02}";
    bad_pickle_case("nostop.pth", (const uint8_t *)nostop, sizeof nostop - 1, "no STOP opcode");
    static const char memo[] = "\x80\x02h\x05.";
    bad_pickle_case("memo.pth", (const uint8_t *)memo, sizeof memo - 1, "memo key missing");
    static const char under[] = "\x80\x02R.";
    bad_pickle_case("underflow.pth", (const uint8_t *)under, sizeof under - 1, "stack underflow");
}

TEST(bad_wrong_dtype) {
    /* torch storage type we do not read (complex) inside a real file */
    size_t n, pn, nn;
    uint8_t *b = slurp(FX "narrow_zip.pth", &n);
    dn_zip *z;
    if (!b || dn_zip_open(b, n, "x", &z)) { CHECK(0); free(b); return; }
    uint8_t *pkl;
    CHECK(dn_zip_read(z, dn_zip_find(z, "narrow_zip/data.pkl"), &pkl, &pn) == DN_OK);
    uint8_t *pkl2 = subst(pkl, pn, "torch\nFloatStorage\n", "torch\nComplexFloatStorage\n", &nn);
    CHECK(pkl2 != NULL);
    uint8_t *zz = replace_pickle(FX "narrow_zip.pth", pkl2, nn, &n);
    CHECK(spit(tpath("complex.pth"), zz, n) == 0);
    CHECK(expect_load_error(tpath("complex.pth"), "unsupported tensor storage type (dtype) 'torch.ComplexFloatStorage'"));
    free(zz); free(pkl2); free(pkl);
    dn_zip_close(z);
    free(b);
    /* safetensors with an unsupported dtype */
    uint8_t data[8] = {0};
    uint8_t *f = mk_st("{\"conv1.weight\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[0,8]}}", data, 8, &n);
    CHECK(spit(tpath("c64.safetensors"), f, n) == 0);
    CHECK(expect_load_error(tpath("c64.safetensors"), "tensor 'conv1.weight': unsupported dtype 'C64'"));
    free(f);
}

/* Writes the narrow model's tensors with one modification as safetensors. */
static const char *narrow_variant(const char *file, const char *drop, const char *extra, const char *reshape) {
    dn_tensors ts, out = {0};
    if (dn_pth_load(FX "narrow_zip.pth", &ts)) return NULL;
    for (int i = 0; i < ts.n; i++) {
        dn_tensor *t = &ts.t[i];
        if (drop && !strcmp(t->name, drop)) continue;
        int64_t shape[DN_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        int64_t numel = dn_tensor_numel(t);
        int nd = t->ndim;
        if (reshape && !strcmp(t->name, reshape)) { shape[0] = 1; shape[1] = numel; nd = 2; }
        float *d = malloc(sizeof(float) * (size_t)(numel ? numel : 1));
        memcpy(d, t->data, sizeof(float) * (size_t)numel);
        dn_tensors_add(&out, t->name, nd, shape, d);
    }
    if (extra) {
        int64_t one = 1;
        float *d = malloc(sizeof(float));
        d[0] = 0;
        dn_tensors_add(&out, extra, 1, &one, d);
    }
    const char *p = tpath(file);
    dn_status st = dn_safetensors_save(p, &out, NULL);
    dn_tensors_free(&ts);
    dn_tensors_free(&out);
    return st ? NULL : p;
}

TEST(bad_wrong_shape) {
    const char *p = narrow_variant("shape.safetensors", NULL, NULL, "layer2.1.conv1.weight");
    CHECK(p && expect_load_error(p, "layer2.1.conv1.weight"));
}
TEST(bad_missing_key) {
    const char *p = narrow_variant("missing.safetensors", "layer3.0.bn2.running_var", NULL, NULL);
    CHECK(p && expect_load_error(p, "missing key 'layer3.0.bn2.running_var'"));
}
TEST(bad_unexpected_key) {
    const char *p = narrow_variant("unexpected.safetensors", NULL, "layer9.0.bogus.weight", NULL);
    CHECK(p && expect_load_error(p, "unexpected key 'layer9.0.bogus.weight'"));
}

TEST(bad_metadata) {
    dn_model *m;
    CHECK(dn_model_load(FX "narrow_zip.pth", &m) == DN_OK);
    if (!m) return;
    dn_meta_set(&m->meta, "note", "x");
    const char *p = tpath("meta.safetensors");
    CHECK(dn_model_save(m, p) == DN_OK);
    size_t n, n2;
    uint8_t *b = slurp(p, &n);
    /* 5 classes in fc but 2 names in metadata (same-length edit keeps offsets valid) */
    uint8_t *b2 = subst_pad(b, n, "\"[\\\"class_0\\\",\\\"class_1\\\",\\\"class_2\\\",\\\"class_3\\\",\\\"class_4\\\"]\"",
                            "\"[\\\"class_0\\\",\\\"class_1\\\"]\"", &n2);
    CHECK(b2 && n2 == n);
    if (b2) {
        CHECK(spit(tpath("meta_classes.safetensors"), b2, n2) == 0);
        CHECK(expect_load_error(tpath("meta_classes.safetensors"), "metadata lists 2 classes but fc has 5 outputs"));
        free(b2);
    }
    b2 = subst(b, n, "\"temperature\":\"1\"", "\"temperature\":\"x\"", &n2);
    CHECK(b2 && spit(tpath("meta_temp.safetensors"), b2, n2) == 0);
    CHECK(expect_load_error(tpath("meta_temp.safetensors"), "temperature 'x'"));
    free(b2);
    b2 = subst_pad(b, n, "\"arch\":\"resnet-custom\"", "\"arch\":\"resnet34\"", &n2);
    CHECK(b2 && spit(tpath("meta_arch.safetensors"), b2, n2) == 0);
    CHECK(expect_load_error(tpath("meta_arch.safetensors"), "arch 'resnet34'"));
    free(b2);
    free(b);
    dn_model_free(m);
}


/* ------------------------------------------------------------ scale (issue 9 row 6) */

typedef struct { uint8_t *b; size_t n, cap; int oom; } wbuf;
static void wput(wbuf *w, const void *d, size_t n) {
    if (w->oom) return;
    if (w->n + n > w->cap) {
        size_t nc = (w->cap + n) * 2;
        uint8_t *nb = realloc(w->b, nc);
        if (!nb) { w->oom = 1; return; }
        w->b = nb;
        w->cap = nc;
    }
    memcpy(w->b + w->n, d, n);
    w->n += n;
}
static void wstr(wbuf *w, const char *s) { wput(w, s, strlen(s)); }
/* BINUNICODE */
static void wuni(wbuf *w, const char *s) {
    uint8_t h[5] = {'X'};
    put32(h + 1, (uint32_t)strlen(s));
    wput(w, h, 5);
    wstr(w, s);
}

/* A legacy (torch < 1.6) torch.save file of n one-element float tensors "t<i>",
 * each on its own storage "s<i>": the layout of a checkpoint with very many
 * parameters (the audit's 40k-storage file took 83 s: every storage was typed by a
 * scan of every pickle object, and every tensor scanned the storage list). */
static uint8_t *mk_legacy_many(int n, size_t *len) {
    wbuf w = {0};
    static const uint8_t magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, '.'};
    wput(&w, magic, sizeof magic);
    wstr(&w, "\x80\x02M\xe9\x03.");                       /* protocol 1001 */
    wstr(&w, "\x80\x02}");                                /* sys_info */
    wuni(&w, "little_endian");
    wstr(&w, "\x88s.");
    wstr(&w, "\x80\x02}");                                /* the state_dict */
    char k[32];
    for (int i = 0; i < n; i++) {
        if (i % 1000 == 0) wstr(&w, "(");
        snprintf(k, sizeof k, "t%d", i);
        wuni(&w, k);
        wstr(&w, "ctorch._utils\n_rebuild_tensor\n((");
        wuni(&w, "storage");
        wstr(&w, "ctorch\nFloatStorage\n");
        snprintf(k, sizeof k, "s%d", i);
        wuni(&w, k);
        wuni(&w, "cpu");
        static const char args[] = "K\x01tQK\x00K\x01\x85K\x01\x85tR"; /* numel 1; offset 0, size (1,), stride (1,) */
        wput(&w, args, sizeof args - 1);
        if (i % 1000 == 999 || i == n - 1) wstr(&w, "u");
    }
    wstr(&w, ".");
    wstr(&w, "\x80\x02]");                                /* storage keys */
    for (int i = 0; i < n; i++) {
        if (i % 1000 == 0) wstr(&w, "(");
        snprintf(k, sizeof k, "s%d", i);
        wuni(&w, k);
        if (i % 1000 == 999 || i == n - 1) wstr(&w, "e");
    }
    wstr(&w, ".");
    for (int i = 0; i < n; i++) {
        uint8_t rec[12];
        put64(rec, 1);
        float v = (float)i;
        memcpy(rec + 8, &v, 4);
        wput(&w, rec, 12);
    }
    if (w.oom) { free(w.b); return NULL; }
    *len = w.n;
    return w.b;
}

/* No timing assertion: the name lookups and duplicate checks go through the sorted
 * key index, whose comparisons are counted; n log n work, where the quadratic scans
 * made n^2/2 (800 million string comparisons for 40k storages). */
TEST(pth_legacy_many_storages_near_linear) {
    const int n = 40000;
    size_t len = 0;
    uint8_t *f = mk_legacy_many(n, &len);
    CHECK(f != NULL);
    if (!f) return;
    dn_tensors ts;
    uint64_t w0 = dn_keyidx_work();
    dn_status st = dn_pth_load_mem(f, len, "many.pth", &ts);
    uint64_t work = dn_keyidx_work() - w0;
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (!st) {
        CHECK(ts.n == n);
        int ok = 1;
        for (int i = 0; i < ts.n && ok; i++) {
            char k[32];
            snprintf(k, sizeof k, "t%d", i);
            ok = !strcmp(ts.t[i].name, k) && ts.t[i].data[0] == (float)i;
        }
        CHECK(ok);
        dn_tensors_free(&ts);
    }
    printf("  %d storages: %llu key comparisons (%.1f per storage)\n", n, (unsigned long long)work, (double)work / n);
    CHECK(work > 0 && work < (uint64_t)n * 8 * 17); /* a few sorts and lookups of log2(40000) ~ 16 each; quadratic: 8e8 */
    free(f);
}

TEST(safetensors_many_keys_near_linear) {
    const int n = 80000;
    wbuf h = {0};
    wstr(&h, "{");
    char e[128];
    for (int i = 0; i < n; i++) {
        snprintf(e, sizeof e, "%s\"w%d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[%d,%d]}", i ? "," : "", i, 4 * i, 4 * i + 4);
        wstr(&h, e);
    }
    wstr(&h, "}");
    wput(&h, "", 1); /* NUL-terminated for mk_st */
    h.n--;
    uint8_t *data = calloc((size_t)n, 4);
    size_t len = 0;
    uint8_t *f = h.oom || !data ? NULL : mk_st((const char *)h.b, data, (size_t)n * 4, &len);
    CHECK(f != NULL);
    if (f) {
        dn_tensors ts;
        uint64_t w0 = dn_keyidx_work();
        dn_status st = dn_safetensors_load_mem(f, len, "many.safetensors", &ts, NULL);
        uint64_t work = dn_keyidx_work() - w0;
        CHECK_MSG(st == DN_OK, "%s", dn_last_error());
        if (!st) { CHECK(ts.n == n); dn_tensors_free(&ts); }
        printf("  %d tensors: %llu key comparisons (%.1f per key)\n", n, (unsigned long long)work, (double)work / n);
        CHECK(work > 0 && work < (uint64_t)n * 3 * 18); /* JSON object + tensor names, log2(80000) ~ 17 */
        /* the last key repeating the first is still found */
        memcpy(f + 8 + h.n - 2 - strlen("\"w79999\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[319996,320000]"),
               "\"w0\"    ", 8);
        CHECK(dn_safetensors_load_mem(f, len, "dup.safetensors", &ts, NULL) == DN_ERR_FORMAT &&
              strstr(dn_last_error(), "duplicate object key \"w0\"") && strstr(dn_last_error(), "dup.safetensors"));
    }
    free(f);
    free(data);
    free(h.b);
}

/* A stride-0 view may repeat its storage only so far: the audit's 430-byte file made
 * a 20000x20000 float tensor (1.6 GB) from a 2-element storage. */
TEST(pth_stride0_expansion_refused) {
    static const char big[] = "\x80\x04}\x94\x8c\x01w\x94"
        "\x8c\x0ctorch._utils\x94\x8c\x0f_rebuild_tensor\x94\x93\x94"
        "((\x8c\x07storage\x8c\x05torch\x8c\x0c" "FloatStorage\x93\x8c\x01" "0\x8c\x03" "cpu\x4b\x02t\x51"
        "K\x00M\x20\x4eM\x20\x4e\x86K\x00K\x00\x86t\x52s.";
    size_t n;
    uint8_t *z = replace_pickle(FX "dtypes_zip.pth", (const uint8_t *)big, sizeof big - 1, &n);
    dn_tensors ts;
    CHECK(z && dn_pth_load_mem(z, n, "stride0.pth", &ts) == DN_ERR_FORMAT);
    CHECK_MSG(strstr(dn_last_error(), "stride0.pth") && strstr(dn_last_error(), "400000000 elements expanded from a 2-element storage"),
              "%s", dn_last_error());
    free(z);
    /* a small broadcast (8 from 2, stride 0 on the leading dim) is still a tensor */
    static const char small[] = "\x80\x04}\x94\x8c\x01w\x94"
        "\x8c\x0ctorch._utils\x94\x8c\x0f_rebuild_tensor\x94\x93\x94"
        "((\x8c\x07storage\x8c\x05torch\x8c\x0c" "FloatStorage\x93\x8c\x01" "0\x8c\x03" "cpu\x4b\x02t\x51"
        "K\x00K\x04K\x02\x86K\x00K\x01\x86t\x52s.";
    z = replace_pickle(FX "dtypes_zip.pth", (const uint8_t *)small, sizeof small - 1, &n);
    dn_status st = z ? dn_pth_load_mem(z, n, "bcast.pth", &ts) : DN_ERR_IO;
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (!st) {
        CHECK(ts.n == 1 && ts.t[0].ndim == 2 && ts.t[0].shape[0] == 4 && ts.t[0].shape[1] == 2);
        CHECK(ts.t[0].data[0] == ts.t[0].data[6] && ts.t[0].data[1] == ts.t[0].data[7]);
        dn_tensors_free(&ts);
    }
    free(z);
}

TEST(bad_duplicate_keys) {
    /* state_dict naming the same tensor twice (protocol 2, memoised tensor) */
    static const char pk[] = "\x80\x02}(X\x01\x00\x00\x00" "w"
        "ctorch._utils\n_rebuild_tensor\n((X\x07\x00\x00\x00" "storage" "ctorch\nFloatStorage\n"
        "X\x01\x00\x00\x00" "0" "X\x03\x00\x00\x00" "cpu" "K\x02tQK\x00K\x02\x85K\x01\x85tR" "q\x09"
        "X\x01\x00\x00\x00" "wh\x09u.";
    bad_pickle_case("dup.pth", (const uint8_t *)pk, sizeof pk - 1, "state_dict key 'w' appears twice");
    uint8_t data[8] = {0};
    size_t n;
    uint8_t *f = mk_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", data, 8, &n);
    CHECK(spit(tpath("dup.safetensors"), f, n) == 0);
    CHECK(expect_load_error(tpath("dup.safetensors"), "duplicate object key \"a\""));
    free(f);
}

TEST(bad_truncated_safetensors) {
    dn_model *m;
    CHECK(dn_model_load(FX "narrow_zip.pth", &m) == DN_OK);
    if (!m) return;
    const char *p = tpath("good.safetensors");
    CHECK(dn_model_save(m, p) == DN_OK);
    dn_model_free(m);
    size_t n;
    uint8_t *b = slurp(p, &n);
    CHECK(b && spit(tpath("trunc.safetensors"), b, n - 100) == 0);
    CHECK(expect_load_error(tpath("trunc.safetensors"), "runs past end of file"));
    CHECK(b && spit(tpath("trunc_hdr.safetensors"), b, 200) == 0); /* inside the header */
    CHECK(expect_load_error(tpath("trunc_hdr.safetensors"), "runs past end of file"));
    CHECK(b && spit(tpath("trunc4.safetensors"), b, 4) == 0);
    CHECK(expect_load_error(tpath("trunc4.safetensors"), "not a model file"));
    free(b);
}

TEST(bad_header_length_past_eof) {
    size_t n;
    uint8_t *f = mk_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", (const uint8_t *)"\0\0\0\0", 4, &n);
    f[0] = 0xf0; f[1] = 0xff; f[2] = 0x0f; /* ~1 MB header in a 70-byte file */
    CHECK(spit(tpath("hdrlen.safetensors"), f, n) == 0);
    CHECK(expect_load_error(tpath("hdrlen.safetensors"), "header length 1048560 runs past end of file"));
    /* via the safetensors API as well, with a 2^63 length */
    memset(f, 0, 8);
    f[7] = 0x80;
    dn_tensors ts;
    CHECK(dn_safetensors_load_mem(f, n, "mem", &ts, NULL) == DN_ERR_FORMAT && strstr(dn_last_error(), "runs past end"));
    free(f);
}

TEST(bad_overlapping_offsets) {
    uint8_t data[24] = {0};
    size_t n;
    uint8_t *f = mk_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", data, sizeof data, &n);
    CHECK(spit(tpath("overlap.safetensors"), f, n) == 0);
    CHECK(expect_load_error(tpath("overlap.safetensors"), "tensors 'a' and 'b' have overlapping data_offsets"));
    free(f);
    f = mk_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,12]}}", data, sizeof data, &n);
    CHECK(spit(tpath("span.safetensors"), f, n) == 0);
    CHECK(expect_load_error(tpath("span.safetensors"), "tensor 'a': data_offsets span 12 bytes"));
    free(f);
    f = mk_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]}}", data, sizeof data, &n);
    CHECK(spit(tpath("beyond.safetensors"), f, n) == 0);
    CHECK(expect_load_error(tpath("beyond.safetensors"), "tensor 'a': data [0, 32) runs past end of file"));
    free(f);
}

TEST(bad_non_weight_file) {
    static const uint8_t jpeg[] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x01,
                                   0x00, 0x01, 0x00, 0x00, 0xFF, 0xD9};
    CHECK(spit(tpath("photo.jpg"), jpeg, sizeof jpeg) == 0);
    CHECK(expect_load_error(tpath("photo.jpg"), "not a model file (unrecognised content"));
    CHECK(spit(tpath("empty.pth"), "", 0) == 0);
    CHECK(expect_load_error(tpath("empty.pth"), "not a model file (empty"));
    /* a zip that is not a torch file */
    zent e[1] = {{"readme.txt", (const uint8_t *)"hello", 5, 0, -1}};
    size_t n;
    uint8_t *z = mkzip(e, 1, &n);
    CHECK(spit(tpath("other.zip"), z, n) == 0);
    CHECK(expect_load_error(tpath("other.zip"), "no <folder>/data.pkl"));
    free(z);
    /* a pickle that is a list, not a dict */
    static const char lst[] = "\x80\x02]q\x00.";
    bad_pickle_case("list.pth", (const uint8_t *)lst, sizeof lst - 1, "top-level object is not a dict");
}

TEST(bad_unreadable_path) {
    CHECK(expect_load_error("/nonexistent/dir/model.safetensors", "cannot open"));
    if (geteuid() == 0) return; /* root reads mode-000 files; the missing path above covers it */
    const char *p = tpath("noperm.pth");
    CHECK(spit(p, "x", 1) == 0 && chmod(p, 0) == 0);
    CHECK(expect_load_error(p, "Permission denied"));
}

TEST(bad_directory_instead_of_file) {
    CHECK(expect_load_error(tmpdir, "not a regular file"));
}


/* ------------------------------------------------------------ CLI (needs $DN_BIN, set by tests/run.sh) */

/* Runs the CLI with stdout+stderr captured into out; returns the exit status. */
static int run_cli(const char *args, char *out, size_t outlen) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", getenv("DN_BIN"), args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}
static int have_cli(void) {
    const char *b = getenv("DN_BIN");
    return b && access(b, X_OK) == 0;
}

TEST(cli_convert_and_info) {
    if (!have_cli()) SKIP("DN_BIN not set (run through make test)");
    static char out[1 << 16];
    char args[1024];
    const char *dst = tpath("cli.safetensors");
    snprintf(args, sizeof args, "convert " FX "narrow_legacy.pth %s --classes 'crazing, inclusion,patches,pitted,scratch' --meta quant_guard=agree:0.998", dst);
    CHECK_MSG(run_cli(args, out, sizeof out) == 0, "%s", out);
    snprintf(args, sizeof args, "info --json %s", dst);
    CHECK_MSG(run_cli(args, out, sizeof out) == 0, "%s", out);
    dn_json *j = dn_json_parse(out, strlen(out), NULL, 0);
    CHECK_MSG(j != NULL, "%s", out);
    char src[65], me[65];
    dn_sha256_file(FX "narrow_legacy.pth", src);
    dn_sha256_file(dst, me);
    CHECK(!strcmp(dn_json_str(dn_json_get(j, "source_sha256"), ""), src));
    CHECK(!strcmp(dn_json_str(dn_json_get(j, "sha256"), ""), me));
    CHECK(!strcmp(dn_json_str(dn_json_get(j, "arch"), ""), "resnet-custom"));
    CHECK(dn_json_num(dn_json_get(j, "params"), 0) == 31441);
    const dn_json *cls = dn_json_get(j, "classes");
    CHECK(dn_json_len(cls) == 5 && !strcmp(dn_json_str(dn_json_at(cls, 1), ""), "inclusion"));
    CHECK(dn_json_num(dn_json_get(dn_json_get(j, "preprocess"), "crop"), 0) == 224);
    CHECK(!strcmp(dn_json_str(dn_json_get(dn_json_get(j, "metadata"), "quant_guard"), ""), "agree:0.998"));
    dn_json_free(j);
    snprintf(args, sizeof args, "info %s", dst);
    CHECK(run_cli(args, out, sizeof out) == 0 && strstr(out, "4=scratch") && strstr(out, "meta quant_guard: agree:0.998") &&
          strstr(out, "widths 4/8/16/24"));
}

TEST(cli_convert_errors) {
    if (!have_cli()) SKIP("DN_BIN not set (run through make test)");
    static char out[1 << 14];
    char args[1024];
    const char *dst = tpath("cli_bad.safetensors");
    snprintf(args, sizeof args, "convert " FX "narrow_zip.pth %s --classes a,b", dst);
    CHECK(run_cli(args, out, sizeof out) == 2 && strstr(out, "2 class names given but " FX "narrow_zip.pth has 5 outputs"));
    snprintf(args, sizeof args, "convert " FX "narrow_zip.pth %s --classes a,b,a,c,d", dst);
    CHECK(run_cli(args, out, sizeof out) == 2 && strstr(out, "class name 'a' given twice"));
    snprintf(args, sizeof args, "convert " FX "narrow_zip.pth %s --arch-check", dst);
    CHECK(run_cli(args, out, sizeof out) == 2 && strstr(out, "architecture is resnet-custom"));
    snprintf(args, sizeof args, "convert " FX "narrow_zip.pth %s --meta classes=x", dst);
    CHECK(run_cli(args, out, sizeof out) == 2 && strstr(out, "reserved key"));
    CHECK(access(dst, F_OK) != 0);
    snprintf(args, sizeof args, "convert " FX "narrow.json %s", dst);
    CHECK(run_cli(args, out, sizeof out) == 2 && strstr(out, "narrow.json: not a model file") && count_lines(out) == 1);
    /* --classes-file: one name per line, blank lines ignored, must match the fc width */
    const char *cf = tpath("classes.txt");
    CHECK(spit(cf, "alpha\r\nbeta\n\ngamma\ndelta\nepsilon\n", 33) == 0);
    snprintf(args, sizeof args, "convert " FX "narrow_zip.pth %s --classes-file %s", dst, cf);
    CHECK_MSG(run_cli(args, out, sizeof out) == 0, "%s", out);
    dn_model *m = NULL;
    CHECK(dn_model_load(dst, &m) == DN_OK && m && !strcmp(dn_model_class_name(m, 0), "alpha") &&
          !strcmp(dn_model_class_name(m, 4), "epsilon"));
    dn_model_free(m);
    unlink(dst);
    CHECK(spit(cf, "alpha\nbeta\n", 11) == 0);
    CHECK(run_cli(args, out, sizeof out) == 2 && strstr(out, "2 class names given"));
    /* an empty --classes is an error, not a silent fallback to the default names */
    snprintf(args, sizeof args, "convert " FX "narrow_zip.pth %s --classes ''", dst);
    CHECK(run_cli(args, out, sizeof out) == 2 && strstr(out, "--classes: no class names") && count_lines(out) == 1);
    CHECK(access(dst, F_OK) != 0);
    CHECK(run_cli("convert --bogus a b", out, sizeof out) == 2);
    CHECK(run_cli("convert onlyone", out, sizeof out) == 2);
    CHECK(run_cli("info /nonexistent.pth", out, sizeof out) == 2 && strstr(out, "/nonexistent.pth: cannot open")); /* data error */
    CHECK(run_cli("info", out, sizeof out) == 2);
}

TEST(cli_download_file_url) {
    if (!have_cli()) SKIP("DN_BIN not set (run through make test)");
    static char out[1 << 14];
    char args[2048], cwd[512], hex[65];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    dn_sha256_file(FX "narrow_zip.pth", hex);
    snprintf(args, sizeof args, "download --out %s --url file://%s/" FX "narrow_zip.pth --sha256 %s", tmpdir, cwd, hex);
    CHECK_MSG(run_cli(args, out, sizeof out) == 0 && strstr(out, "verified"), "%s", out);
    CHECK(access(tpath("narrow_zip.pth"), F_OK) == 0);
    CHECK_MSG(run_cli(args, out, sizeof out) == 0 && strstr(out, "already present"), "%s", out);
    snprintf(args, sizeof args, "download --out %s --url file://%s/" FX "narrow_legacy.pth --sha256 %s", tmpdir, cwd, hex);
    CHECK(run_cli(args, out, sizeof out) == 2 && strstr(out, "sha256 mismatch"));
    CHECK(access(tpath("narrow_legacy.pth"), F_OK) != 0);
    snprintf(args, sizeof args, "download --url file://%s/x.pth", cwd);
    CHECK(run_cli(args, out, sizeof out) == 2 && strstr(out, "needs --sha256"));
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dn_test_weights_XXXXXX");
    if (!mkdtemp(tmpdir)) { printf("cannot create temp dir\n"); return 1; }
    RUN(pth_zip_narrow);
    RUN(pth_legacy_narrow_equals_zip);
    RUN(pth_dtypes_zip);
    RUN(pth_dtypes_legacy);
    RUN(pth_dtypes_deflate_zip);
    RUN(real_resnet18_pth);
    RUN(model_load_pth_defaults);
    RUN(model_save_roundtrip_metadata);
    RUN(safetensors_matches_torch_via_python);
    RUN(plain_safetensors_state_dict);
    RUN(safetensors_read_dtypes);
    RUN(download_verifies_sha256_file_url);
    RUN(zip64_archive);
    RUN(robust_random_corruption);
    RUN(bad_truncated_pth_zip);
    RUN(bad_truncated_pth_legacy);
    RUN(bad_corrupt_zip_directory);
    RUN(bad_zip_crc);
    RUN(bad_zip_bomb);
    RUN(bad_pickle_disallowed_global);
    RUN(pickle_rebuild_tensor_v1_and_memoize);
    RUN(bad_pickle_unknown_opcode);
    RUN(bad_wrong_dtype);
    RUN(bad_wrong_shape);
    RUN(bad_missing_key);
    RUN(bad_unexpected_key);
    RUN(bad_metadata);
    RUN(bad_duplicate_keys);
    RUN(pth_legacy_many_storages_near_linear);
    RUN(safetensors_many_keys_near_linear);
    RUN(pth_stride0_expansion_refused);
    RUN(bad_truncated_safetensors);
    RUN(bad_header_length_past_eof);
    RUN(bad_overlapping_offsets);
    RUN(bad_non_weight_file);
    RUN(bad_unreadable_path);
    RUN(bad_directory_instead_of_file);
    RUN(cli_convert_and_info);
    RUN(cli_convert_errors);
    RUN(cli_download_file_url);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return REPORT();
}
