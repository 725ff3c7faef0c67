/* Trainer: augmentations, feature cache, head-only training, checkpoints,
 * `defectnet train` bad-input cases. */
#include "core/core.h"
#include "harness.h"
#include "train/augment.h"
#include "train/loader.h"
#include <sys/stat.h>
#include <unistd.h>

static dn_image make_img(int w, int h) {
    dn_image im = {w, h, malloc((size_t)w * h * 3)};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) im.data[((size_t)y * w + x) * 3 + c] = (uint8_t)(x * 7 + y * 13 + c * 50);
    return im;
}
static uint8_t px(const dn_image *im, int x, int y, int c) { return im->data[((size_t)y * im->w + x) * 3 + c]; }

TEST(aug_parse) {
    unsigned f;
    CHECK(dn_aug_parse("flip,rot90", &f) == DN_OK && f == (DN_AUG_FLIP | DN_AUG_ROT90));
    CHECK(dn_aug_parse("none", &f) == DN_OK && f == 0);
    CHECK(dn_aug_parse("flip,rrc,jitter,rot90", &f) == DN_OK && f == 15);
    char buf[64];
    dn_aug_format(f, buf, sizeof buf);
    CHECK(!strcmp(buf, "flip,rot90,rrc,jitter"));
    CHECK(dn_aug_parse("flip,blur", &f) == DN_ERR_ARG);
    CHECK(strstr(dn_last_error(), "'blur'") != NULL);
}

TEST(aug_geometry) {
    dn_image im = make_img(5, 3), o = {0}, o2 = {0};
    CHECK(dn_img_flip(&im, 1, &o) == DN_OK);
    CHECK(px(&o, 0, 1, 2) == px(&im, 4, 1, 2));
    free(o.data);
    CHECK(dn_img_flip(&im, 0, &o) == DN_OK);
    CHECK(px(&o, 3, 0, 1) == px(&im, 3, 2, 1));
    free(o.data);
    /* one quarter turn counter-clockwise: (x,y) <- (w-1-y, x); shape swaps */
    CHECK(dn_img_rot90(&im, 1, &o) == DN_OK);
    CHECK(o.w == 3 && o.h == 5);
    CHECK(px(&o, 0, 0, 0) == px(&im, 4, 0, 0));
    CHECK(px(&o, 2, 4, 0) == px(&im, 0, 2, 0));
    /* four quarter turns are the identity */
    CHECK(dn_img_rot90(&o, 3, &o2) == DN_OK);
    CHECK(o2.w == 5 && o2.h == 3 && !memcmp(o2.data, im.data, 45));
    free(o.data);
    free(o2.data);
    /* crop+resize to the same size is a copy; 2x upsample keeps constant areas */
    CHECK(dn_img_crop_resize(&im, 1, 1, 3, 2, 3, 2, &o) == DN_OK);
    CHECK(px(&o, 0, 0, 0) == px(&im, 1, 1, 0) && px(&o, 2, 1, 1) == px(&im, 3, 2, 1));
    free(o.data);
    CHECK(dn_img_crop_resize(&im, 3, 2, 3, 2, 4, 4, &o) == DN_ERR_ARG);
    CHECK(strstr(dn_last_error(), "outside image") != NULL);
    free(im.data);
}

TEST(aug_deterministic_and_switchable) {
    dn_image im = make_img(40, 30), a = {0}, b = {0};
    dn_aug cfg;
    dn_aug_default(&cfg);
    cfg.out_size = 32;
    dn_rng r1, r2;
    dn_rng_seed(&r1, 7);
    dn_rng_seed(&r2, 7);
    int differ = 0;
    dn_image prev = {0};
    for (int i = 0; i < 20; i++) {
        CHECK(dn_augment(&im, &cfg, &r1, &a) == DN_OK);
        CHECK(dn_augment(&im, &cfg, &r2, &b) == DN_OK);
        CHECK(a.w == 32 && a.h == 32 && b.w == 32);
        CHECK(!memcmp(a.data, b.data, 32 * 32 * 3));
        if (prev.data) differ += memcmp(a.data, prev.data, 32 * 32 * 3) != 0;
        free(prev.data);
        free(b.data);
        prev = a;
    }
    free(prev.data);
    CHECK(differ > 15); /* successive draws really vary */ /* draws really vary */
    /* all switched off: exact copy */
    cfg.flags = 0;
    CHECK(dn_augment(&im, &cfg, &r1, &a) == DN_OK);
    CHECK(a.w == 40 && a.h == 30 && !memcmp(a.data, im.data, 40 * 30 * 3));
    free(a.data);
    /* only jitter: geometry kept, a constant image stays constant */
    memset(im.data, 100, 40 * 30 * 3);
    cfg.flags = DN_AUG_JITTER;
    CHECK(dn_augment(&im, &cfg, &r1, &a) == DN_OK);
    int same = 1;
    for (int i = 1; i < 40 * 30 * 3; i++) same &= a.data[i] == a.data[0];
    CHECK(same);
    CHECK(a.data[0] >= 80 && a.data[0] <= 120);
    free(a.data);
    free(im.data);
}

/* ------------------------------------------------------------ loader */
static char g_tmp[256];
static const char *tmpdir(void) {
    if (!g_tmp[0]) {
        snprintf(g_tmp, sizeof g_tmp, "/tmp/dn_test_trainer_XXXXXX");
        if (!mkdtemp(g_tmp)) g_tmp[0] = 0;
    }
    return g_tmp;
}
static int write_ppm(const char *path, int w, int h, int seed) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fprintf(f, "P6\n%d %d\n255\n", w, h);
    for (int i = 0; i < w * h * 3; i++) fputc((i * 31 + seed * 57 + (i / 3 / w) * seed) & 255, f);
    fclose(f);
    return 0;
}

#define NIMG 10
static char g_paths[NIMG + 1][300];
static const char *g_pathv[NIMG + 1];
static int g_labels[NIMG + 1];
static void make_files(void) {
    static int done;
    if (done) return;
    done = 1;
    for (int i = 0; i < NIMG; i++) {
        snprintf(g_paths[i], sizeof g_paths[i], "%s/img%d.ppm", tmpdir(), i);
        write_ppm(g_paths[i], 12 + i % 3, 10, i + 1);
        g_labels[i] = i % 3;
    }
    snprintf(g_paths[NIMG], sizeof g_paths[NIMG], "%s/broken.ppm", tmpdir());
    FILE *f = fopen(g_paths[NIMG], "wb");
    fputs("P6\n12 10\n255\nshort", f);
    fclose(f);
    g_labels[NIMG] = 1;
    for (int i = 0; i <= NIMG; i++) g_pathv[i] = g_paths[i];
}

static dn_loader_cfg loader_cfg(int workers, int n) {
    dn_loader_cfg c;
    memset(&c, 0, sizeof c);
    c.paths = g_pathv;
    c.labels = g_labels;
    c.n = n;
    dn_preproc_default(&c.pp);
    c.pp.resize = 8;
    c.pp.crop = 8;
    dn_aug_default(&c.aug);
    c.batch = 3;
    c.workers = workers;
    c.seed = 11;
    return c;
}

/* Runs one pass, returns all tensors concatenated (malloc) and count. */
static float *run_pass(dn_loader *L, const int *order, int count, int aug, int *got, int *labels_out) {
    float *all = calloc((size_t)count * 192, sizeof(float));
    *got = 0;
    if (dn_loader_start(L, order, count, aug, 5) != DN_OK) return all;
    for (;;) {
        const float *x; const int *lab, *it;
        int n;
        if (dn_loader_next(L, &x, &lab, &it, &n) != DN_OK || n == 0) break;
        memcpy(all + (size_t)*got * 192, x, (size_t)n * 192 * sizeof(float));
        for (int j = 0; j < n; j++) {
            if (labels_out) labels_out[*got + j] = lab[j];
            CHECK(lab[j] == g_labels[it[j]]);
        }
        *got += n;
    }
    return all;
}

TEST(loader_deterministic_any_workers) {
    make_files();
    int order[] = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7};
    int cnt = (int)(sizeof order / sizeof order[0]);
    float *ref = NULL;
    for (int w = 1; w <= 3; w++) {
        dn_loader_cfg c = loader_cfg(w, NIMG);
        c.cache_decoded = w == 2;
        dn_loader *L;
        CHECK(dn_loader_new(&c, &L) == DN_OK);
        for (int rep = 0; rep < 2; rep++) {
            int got;
            float *t = run_pass(L, order, cnt, 1, &got, NULL);
            CHECK(got == cnt);
            if (!ref) ref = t;
            else { CHECK(!memcmp(ref, t, (size_t)cnt * 192 * sizeof(float))); free(t); }
        }
        /* the eval pass equals plain preprocessing */
        int got;
        float *e = run_pass(L, order, 2, 0, &got, NULL);
        dn_image im;
        CHECK(dn_image_load(g_paths[3], &im) == DN_OK);
        float want[192];
        CHECK(dn_preprocess(&im, &c.pp, want) == DN_OK);
        CHECK(!memcmp(e, want, sizeof want));
        dn_image_free(&im);
        free(e);
        /* abandon a pass midway and start another: still consistent */
        CHECK(dn_loader_start(L, order, cnt, 1, 5) == DN_OK);
        const float *x; const int *lab, *it; int n;
        CHECK(dn_loader_next(L, &x, &lab, &it, &n) == DN_OK && n == 3);
        float *t = run_pass(L, order, cnt, 1, &got, NULL);
        CHECK(got == cnt && !memcmp(ref, t, (size_t)cnt * 192 * sizeof(float)));
        free(t);
        CHECK(dn_loader_skipped(L) == 0);
        dn_loader_free(L);
    }
    free(ref);
}

TEST(loader_skips_unreadable_and_strict) {
    make_files();
    int order[] = {0, 10, 1, 2, 10, 3, 4};
    dn_loader_cfg c = loader_cfg(2, NIMG + 1);
    dn_loader *L;
    CHECK(dn_loader_new(&c, &L) == DN_OK);
    int got, labs[7];
    float *t = run_pass(L, order, 7, 1, &got, labs);
    CHECK(got == 5);
    CHECK(dn_loader_skipped(L) == 1); /* counted once per item */
    CHECK(dn_loader_item_failed(L, 10));
    CHECK(strstr(dn_loader_first_error(L), "broken.ppm") != NULL);
    CHECK(labs[0] == g_labels[0] && labs[1] == g_labels[1] && labs[4] == g_labels[4]);
    free(t);
    dn_loader_free(L);
    c.strict = 1;
    CHECK(dn_loader_new(&c, &L) == DN_OK);
    CHECK(dn_loader_start(L, order, 7, 0, 0) == DN_OK);
    dn_status st = DN_OK;
    for (int i = 0; i < 5 && !st; i++) {
        const float *x; const int *lab, *it; int n;
        st = dn_loader_next(L, &x, &lab, &it, &n);
        if (!st && n == 0) break;
    }
    CHECK(st == DN_ERR_IO);
    CHECK(strstr(dn_last_error(), "broken.ppm") != NULL);
    int bad[] = {42};
    CHECK(dn_loader_start(L, bad, 1, 0, 0) == DN_ERR_ARG);
    dn_loader_free(L);
}

int main(void) {
    RUN(aug_parse);
    RUN(aug_geometry);
    RUN(aug_deterministic_and_switchable);
    RUN(loader_deterministic_any_workers);
    RUN(loader_skips_unreadable_and_strict);
    return REPORT();
}
