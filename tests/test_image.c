/* Image decoding and preprocessing: parity with torchvision/PIL (committed
 * fixtures from tools/preproc_parity.py, plus real dataset images at the
 * default 256/224 when /usr/bin/python3 has torch) and bad-input handling. */
#include "harness.h"
#include "defectnet.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define FIX "tests/fixtures/images"

static const float STD[3] = {0.229f, 0.224f, 0.225f};

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int spit(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(b, 1, n, f) : 0;
    fclose(f);
    return w == n ? 0 : -1;
}

typedef struct { double max, sum; long n; int cases, bad; } stats;

/* Runs every case of dir/cases.txt; image paths relative to dir unless absolute. */
static int run_cases(const char *dir, stats *s, int verbose) {
    char path[2048];
    snprintf(path, sizeof path, "%s/cases.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char img[1024], tf[256], label[256];
    int r, c;
    while (fscanf(f, "%1023s %d %d %255s %255s", img, &r, &c, tf, label) == 5) {
        char ip[2100], tp[2100];
        if (img[0] == '/') snprintf(ip, sizeof ip, "%s", img);
        else snprintf(ip, sizeof ip, "%s/%s", dir, img);
        snprintf(tp, sizeof tp, "%s/%s", dir, tf);
        size_t n = 3 * (size_t)c * c, len;
        float *exp = (float *)slurp(tp, &len);
        float *got = malloc(n * sizeof(float));
        dn_image im;
        dn_preproc pp;
        dn_preproc_default(&pp);
        pp.resize = r;
        pp.crop = c;
        s->cases++;
        if (!exp || len != n * sizeof(float) || dn_image_load(ip, &im) != DN_OK) {
            printf("  case %s %d/%d: %s\n", img, r, c, exp ? dn_last_error() : "missing tensor");
            s->bad++;
            free(exp); free(got);
            continue;
        }
        if (dn_preprocess(&im, &pp, got) != DN_OK) {
            printf("  case %s: %s\n", img, dn_last_error());
            s->bad++;
        } else {
            double cmax = 0;
            for (size_t i = 0; i < n; i++) {
                double d = fabs((double)got[i] - exp[i]) * STD[i / ((size_t)c * c)];
                if (d > cmax) cmax = d;
                s->sum += d;
            }
            s->n += (long)n;
            if (cmax > s->max) s->max = cmax;
            if (verbose || cmax > 1.0 / 255 + 1e-6)
                printf("  %-28s %-44s resize %3d crop %3d: max |diff| %.3g/255\n", img, label, r, c,
                       cmax * 255);
        }
        dn_image_free(&im);
        free(exp);
        free(got);
    }
    fclose(f);
    return 0;
}

TEST(parity_fixtures) {
    stats s = {0};
    CHECK(run_cases(FIX, &s, 0) == 0);
    CHECK(s.cases >= 40);
    CHECK(s.bad == 0);
    printf("  fixtures: %d cases, max |diff| %.4g/255, mean %.3g/255 (units of [0,1] pixels)\n", s.cases,
           s.max * 255, s.n ? s.sum / s.n * 255 : 0.0);
    CHECK_MSG(s.max <= 1.0 / 255 + 1e-6, "max diff %.4g/255", s.max * 255);
}

static int have_torch(void) {
    return system("/usr/bin/python3 -c 'import torch, torchvision' >/dev/null 2>&1") == 0;
}

/* Real images from all three datasets (and the fixture images) at the default
 * Resize(256)/CenterCrop(224), against torchvision computed now. */
TEST(parity_real_images) {
    const char *sh = h_shared();
    if (!sh) SKIP("no ../shared datasets");
    if (!have_torch()) SKIP("/usr/bin/python3 has no torch/torchvision");
    char tmp[] = "/tmp/dn_parity_XXXXXX";
    if (!mkdtemp(tmp)) SKIP("cannot create temp dir");
    const char *sets[] = {"NEU-CLS", "NEU-CLS-64", "DeepPCB-crops/train", "DeepPCB-crops/test"};
    /* DN_PARITY_PER_DIR raises the sample for a measurement run (default 25). */
    const char *pd = getenv("DN_PARITY_PER_DIR");
    int per = pd && atoi(pd) > 0 ? atoi(pd) : 25;
    stats all = {0};
    for (int i = 0; i < 5; i++) {
        char cmd[4096], out[1100];
        snprintf(out, sizeof out, "%s/%d", tmp, i);
        if (i < 4)
            snprintf(cmd, sizeof cmd,
                     "/usr/bin/python3 tools/preproc_parity.py expect --per-dir %d --out %s %s/datasets/%s >/dev/null",
                     per, out, sh, sets[i]);
        else
            snprintf(cmd, sizeof cmd,
                     "/usr/bin/python3 tools/preproc_parity.py expect --per-dir 100 --out %s " FIX " >/dev/null",
                     out);
        CHECK(system(cmd) == 0);
        stats s = {0};
        CHECK(run_cases(out, &s, 0) == 0);
        CHECK(s.bad == 0);
        CHECK(s.cases > 0);
        printf("  %-22s %3d images, 256/224: max |diff| %.4g/255, mean %.3g/255\n",
               i < 4 ? sets[i] : "generated odd sizes", s.cases, s.max * 255, s.n ? s.sum / s.n * 255 : 0.0);
        all.max = all.max > s.max ? all.max : s.max;
        all.sum += s.sum;
        all.n += s.n;
        snprintf(cmd, sizeof cmd, "rm -rf %s", out);
        if (system(cmd) != 0) printf("  could not remove %s\n", out);
    }
    rmdir(tmp);
    CHECK_MSG(all.max <= 1.0 / 255 + 1e-6, "max diff %.4g/255", all.max * 255);
}

TEST(decode_pixels) {
    dn_image im;
    memset(&im, 0xAB, sizeof im); /* a caller's uninitialised struct: load must set every field */
    CHECK(dn_image_load(FIX "/rgb_1x1.png", &im) == DN_OK);
    CHECK(im.stride == 0 && im.format == DN_RGB8 && im.borrowed == 0);
    CHECK(im.w == 1 && im.h == 1);
    if (im.data) CHECK(im.data[0] == 200 && im.data[1] == 30 && im.data[2] == 90);
    dn_image_free(&im);
    CHECK(im.data == NULL);
    /* grayscale is replicated into three equal channels */
    CHECK(dn_image_load(FIX "/gray_31x17.pgm", &im) == DN_OK);
    CHECK(im.w == 31 && im.h == 17);
    int eq = 1;
    for (int i = 0; im.data && i < im.w * im.h; i++)
        eq &= im.data[3 * i] == im.data[3 * i + 1] && im.data[3 * i] == im.data[3 * i + 2];
    CHECK(eq);
    dn_image_free(&im);
    /* decode from memory gives the same pixels as from the file */
    size_t len;
    uint8_t *b = slurp(FIX "/rgb_640x480.jpg", &len);
    dn_image a, c;
    CHECK(b && dn_image_decode(b, len, "mem.jpg", &a) == DN_OK);
    CHECK(dn_image_load(FIX "/rgb_640x480.jpg", &c) == DN_OK);
    CHECK(a.w == 640 && a.h == 480 && c.w == 640 && c.h == 480);
    if (a.data && c.data) CHECK(memcmp(a.data, c.data, 640 * 480 * 3) == 0);
    dn_image_free(&a);
    dn_image_free(&c);
    free(b);
}

TEST(preprocess_bad_args) {
    dn_image im;
    CHECK(dn_image_load(FIX "/rgb_37x23.bmp", &im) == DN_OK);
    dn_preproc pp;
    dn_preproc_default(&pp);
    float *out = malloc(3 * 224 * 224 * sizeof(float));
    pp.crop = 0;
    CHECK(dn_preprocess(&im, &pp, out) == DN_ERR_ARG);
    CHECK(strstr(dn_last_error(), "crop") != NULL);
    dn_preproc_default(&pp);
    pp.std[1] = 0;
    CHECK(dn_preprocess(&im, &pp, out) == DN_ERR_ARG);
    dn_image empty = {0};
    dn_preproc_default(&pp);
    CHECK(dn_preprocess(&empty, &pp, out) == DN_ERR_ARG);
    /* the default still works on this image and yields finite values */
    CHECK(dn_preprocess(&im, &pp, out) == DN_OK);
    int fin = 1;
    for (int i = 0; i < 3 * 224 * 224; i++) fin &= isfinite(out[i]) != 0;
    CHECK(fin);
    /* BGR swaps the channels */
    float *bgr = malloc(3 * 224 * 224 * sizeof(float));
    pp.bgr = 1;
    memcpy(pp.mean, (float[]){0, 0, 0}, sizeof pp.mean);
    memcpy(pp.std, (float[]){1, 1, 1}, sizeof pp.std);
    CHECK(dn_preprocess(&im, &pp, bgr) == DN_OK);
    pp.bgr = 0;
    CHECK(dn_preprocess(&im, &pp, out) == DN_OK);
    CHECK(memcmp(bgr, out + 2 * 224 * 224, 224 * 224 * sizeof(float)) == 0);
    free(bgr);
    free(out);
    dn_image_free(&im);
}

/* ---------------------------------------------------------- bad input */

static char tmpdir[64];

static const char *tpath(const char *name) {
    static char p[256];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

/* Writes bytes to tmpdir/name and expects dn_image_load to fail with a message
 * naming the file and containing `what`. */
static void expect_bad(const char *name, const void *b, size_t n, const char *what) {
    const char *p = tpath(name);
    CHECK(spit(p, b, n) == 0);
    dn_image im = {.w = 7, .h = 7, .data = (uint8_t *)1};
    dn_status st = dn_image_load(p, &im);
    CHECK(st != DN_OK);
    CHECK(im.data == NULL);
    const char *e = dn_last_error();
    CHECK_MSG(strstr(e, name) != NULL && strstr(e, what) != NULL, "message '%s' lacks '%s'", e, what);
    CHECK(strchr(e, '\n') == NULL);
    printf("  -> %s\n", e);
}

TEST(bad_truncated_jpeg) {
    size_t len;
    uint8_t *b = slurp(FIX "/rgb_640x480.jpg", &len);
    CHECK(b != NULL);
    if (b) expect_bad("trunc.jpg", b, len / 2, "truncated JPEG");
    free(b);
}

TEST(bad_truncated_png) {
    size_t len;
    uint8_t *b = slurp(FIX "/rgb_257x255.png", &len);
    CHECK(b != NULL);
    if (b) expect_bad("trunc.png", b, len * 3 / 5, "truncated PNG");
    free(b);
}

TEST(bad_corrupt_bmp_header) {
    size_t len;
    uint8_t *b = slurp(FIX "/rgb_37x23.bmp", &len);
    CHECK(b != NULL && len > 54);
    if (!b) return;
    b[14] = 99; /* DIB header size */
    expect_bad("corrupt.bmp", b, len, "corrupt BMP header");
    b[14] = 40;
    b[28] = 7; /* bits per pixel */
    expect_bad("corrupt_bpp.bmp", b, len, "corrupt BMP header");
    free(b);
}

TEST(bad_truncated_bmp) {
    size_t len;
    uint8_t *b = slurp(FIX "/gray_45x30.bmp", &len);
    CHECK(b != NULL);
    if (b) expect_bad("trunc.bmp", b, len - 100, "truncated BMP");
    free(b);
}

TEST(bad_truncated_pgm) {
    size_t len;
    uint8_t *b = slurp(FIX "/gray_31x17.pgm", &len);
    CHECK(b != NULL);
    if (b) expect_bad("trunc.pgm", b, len - 10, "truncated PNM");
    free(b);
}

static void put32be(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

TEST(bad_huge_png) {
    /* Valid signature + IHDR (100000 x 100000 RGB, CRC correct) + a tiny IDAT. */
    uint8_t b[64];
    memcpy(b, "\x89PNG\r\n\x1a\n", 8);
    put32be(b + 8, 13);
    memcpy(b + 12, "IHDR", 4);
    put32be(b + 16, 100000);
    put32be(b + 20, 100000);
    b[24] = 8; b[25] = 2; b[26] = 0; b[27] = 0; b[28] = 0;
    put32be(b + 29, (uint32_t)crc32(0, b + 12, 17));
    put32be(b + 33, 0);
    memcpy(b + 37, "IDAT", 4);
    put32be(b + 41, (uint32_t)crc32(0, b + 37, 4));
    expect_bad("huge.png", b, 45, "limit");
}

/* Top-down BMPs (negative height, issue 9 row 7) decode upright, pixel for pixel
 * what PIL gives (fixtures and PIL's bytes: tools/make_topdown_bmp.py). */
TEST(bmp_top_down_matches_pil) {
    const char *names[][2] = {{"topdown_37x23.bmp", "topdown_37x23.rgb"}, {"topdown_45x30.bmp", "topdown_45x30.rgb"}};
    const int dims[][2] = {{37, 23}, {45, 30}};
    for (int i = 0; i < 2; i++) {
        char p[256], q[256];
        snprintf(p, sizeof p, FIX "/%s", names[i][0]);
        snprintf(q, sizeof q, FIX "/%s", names[i][1]);
        size_t n = 0;
        uint8_t *want = slurp(q, &n);
        dn_image im;
        dn_status st = dn_image_load(p, &im);
        CHECK_MSG(st == DN_OK, "%s", dn_last_error());
        if (!st) {
            CHECK(im.w == dims[i][0] && im.h == dims[i][1]);
            CHECK(want && n == (size_t)im.w * im.h * 3 && !memcmp(im.data, want, n));
            dn_image_free(&im);
        }
        free(want);
    }
}

TEST(bad_huge_bmp) {
    size_t len;
    uint8_t *b = slurp(FIX "/rgb_37x23.bmp", &len);
    CHECK(b != NULL);
    if (!b) return;
    uint32_t big = 100000;
    memcpy(b + 18, &big, 4);
    memcpy(b + 22, &big, 4);
    expect_bad("huge.bmp", b, len, "limit");
    free(b);
}

TEST(bad_huge_jpeg) {
    /* A real baseline JPEG whose SOF frame header is patched to 65000 x 65000:
     * refused from the header, before any pixel buffer is allocated. */
    size_t len;
    uint8_t *b = slurp(FIX "/gray_64x48.jpg", &len);
    CHECK(b != NULL);
    if (!b) return;
    size_t sof = 0;
    for (size_t i = 2; i + 9 < len && !sof; i++)
        if (b[i] == 0xFF && (b[i + 1] == 0xC0 || b[i + 1] == 0xC2)) sof = i;
    CHECK(sof != 0);
    if (sof) {
        b[sof + 5] = 0xFD; b[sof + 6] = 0xE8; /* height 65000 */
        b[sof + 7] = 0xFD; b[sof + 8] = 0xE8; /* width 65000 */
        expect_bad("huge.jpg", b, len, "limit");
    }
    free(b);
}

TEST(bad_huge_pgm) {
    static const char pgm[] = "P5\n100000 100000\n255\n\x01\x02\x03";
    expect_bad("huge.pgm", pgm, sizeof pgm - 1, "limit");
}

TEST(bad_zero_bytes) { expect_bad("empty.png", "", 0, "empty"); }

TEST(bad_text_named_jpg) {
    const char *t = "this is not an image, just text\n";
    expect_bad("notes.jpg", t, strlen(t), "not an image");
}

TEST(bad_unreadable_path) {
    dn_image im;
    CHECK(dn_image_load("/nonexistent/dir/x.png", &im) == DN_ERR_IO);
    CHECK(strstr(dn_last_error(), "/nonexistent/dir/x.png") != NULL);
    CHECK(im.data == NULL);
}

TEST(bad_directory) {
    dn_image im;
    CHECK(dn_image_load(tmpdir, &im) == DN_ERR_IO);
    CHECK(strstr(dn_last_error(), tmpdir) != NULL);
    CHECK(strstr(dn_last_error(), "not a regular file") != NULL);
    CHECK(im.data == NULL);
}

TEST(bad_memory_decode) {
    dn_image im;
    CHECK(dn_image_decode("GIF89a", 6, "upload", &im) == DN_ERR_FORMAT);
    CHECK(strstr(dn_last_error(), "upload") != NULL);
    CHECK(dn_image_decode(NULL, 0, "upload", &im) == DN_ERR_FORMAT);
}


static uint64_t xorshift(uint64_t *r) {
    *r ^= *r << 13;
    *r ^= *r >> 7;
    *r ^= *r << 17;
    return *r;
}

/* Random corruptions of every fixture image (flipped bytes, truncation,
 * scrambled headers): decoding must either succeed with a sane image or fail
 * with a one-line message naming the input, never crash (run under ASan). */
TEST(bad_random_corruptions) {
    const char *files[] = {"rgb_1x1.png", "gray_3x500.png", "rgb_257x255.png", "rgb_640x480.jpg", "prog_97x61.jpg",
                           "gray_64x48.jpg", "cmyk_41x30.jpg", "palette_50x37.png", "palette_trns_21x20.png",
                           "bilevel_35x27.png", "rgb16_45x61.png", "gray16_26x33.png", "rgba_33x29.png",
                           "la_23x19.png", "gray_31x17.pgm", "rgb_22x35.ppm", "rgb_37x23.bmp", "gray_45x30.bmp"};
    uint64_t r = 0x1234567;
#define NEXT() xorshift(&r)
    int ok = 0, failed = 0, bad_msg = 0;
    for (size_t fi = 0; fi < sizeof files / sizeof files[0]; fi++) {
        char path[256];
        snprintf(path, sizeof path, FIX "/%s", files[fi]);
        size_t len;
        uint8_t *orig = slurp(path, &len);
        CHECK(orig != NULL);
        if (!orig) continue;
        uint8_t *b = malloc(len);
        for (int it = 0; it < 40; it++) {
            memcpy(b, orig, len);
            size_t n = len;
            switch (NEXT() % 3) {
            case 0:
                for (int k = 0, m = 1 + (int)(NEXT() % 8); k < m; k++) {
                    size_t at = NEXT() % len;
                    b[at] ^= (uint8_t)(1 + NEXT() % 255);
                }
                break;
            case 1: n = NEXT() % len; break;
            default: for (size_t k = 0; k < 64 && k < len; k++) if (NEXT() % 4 == 0) b[k] = (uint8_t)NEXT(); break;
            }
            dn_image im;
            if (dn_image_decode(b, n, "fuzz-input", &im) == DN_OK) {
                ok++;
                CHECK(im.w > 0 && im.h > 0 && im.data != NULL);
                dn_image_free(&im);
            } else {
                failed++;
                const char *e = dn_last_error();
                if (strncmp(e, "fuzz-input: ", 12) || strchr(e, '\n')) { bad_msg++; printf("  bad message: %s\n", e); }
                CHECK(im.data == NULL);
            }
        }
        free(b);
        free(orig);
    }
#undef NEXT
    printf("  %d corrupted inputs decoded, %d rejected with a message\n", ok, failed);
    CHECK(bad_msg == 0);
    CHECK(failed > 0);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dn_imgtest_XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    RUN(parity_fixtures);
    RUN(decode_pixels);
    RUN(preprocess_bad_args);
    RUN(bad_truncated_jpeg);
    RUN(bad_truncated_png);
    RUN(bad_corrupt_bmp_header);
    RUN(bad_truncated_bmp);
    RUN(bad_truncated_pgm);
    RUN(bad_huge_png);
    RUN(bad_huge_bmp);
    RUN(bmp_top_down_matches_pil);
    RUN(bad_huge_jpeg);
    RUN(bad_huge_pgm);
    RUN(bad_zero_bytes);
    RUN(bad_text_named_jpg);
    RUN(bad_unreadable_path);
    RUN(bad_directory);
    RUN(bad_memory_decode);
    RUN(bad_random_corruptions);
    RUN(parity_real_images);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) printf("could not remove %s\n", tmpdir);
    return REPORT();
}
