/* Trainer: augmentations, feature cache, head-only training, checkpoints,
 * `defectnet train` bad-input cases. */
#include "core/core.h"
#include "harness.h"
#include "train/augment.h"
#include "train/loader.h"
#include "train/featcache.h"
#include "train/checkpoint.h"
#include "train/trainer.h"
#include "train/train_run.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "core/sha256.h"
#include <sys/stat.h>
#include <unistd.h>

static dn_image make_img(int w, int h) {
    dn_image im = {0};
    im.w = w;
    im.h = h;
    im.data = malloc((size_t)w * h * 3);
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
    /* shrinking antialiases like PIL: a 1-pixel checkerboard halved becomes flat grey */
    {
        dn_image cb = make_img(8, 8), g = {0};
        for (int i = 0; i < 64; i++) memset(cb.data + i * 3, ((i / 8 + i % 8) % 2) ? 255 : 0, 3);
        CHECK(dn_img_crop_resize(&cb, 0, 0, 8, 8, 4, 4, &g) == DN_OK);
        for (int i = 0; i < 48; i++) CHECK(g.data[i] >= 120 && g.data[i] <= 135);
        free(cb.data);
        free(g.data);
    }
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

/* ------------------------------------------------------------ tiny models */
/* A narrow ResNet in torchvision key layout (1 block per stage, widths w0..w3),
 * random weights with non-trivial BN statistics, plus a head of ncls. */
static float *rnd_arr(dn_rng *r, int64_t n, float scale, float offset) {
    float *a = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) a[i] = offset + scale * dn_rng_normal(r);
    return a;
}
static void add_t(dn_tensors *ts, const char *name, int nd, int64_t a, int64_t b, int64_t c, int64_t d,
                  float *data) {
    int64_t sh[4] = {a, b, c, d};
    dn_tensors_add(ts, name, nd, sh, data);
}
static void add_conv(dn_tensors *ts, dn_rng *r, const char *name, int co, int ci, int k) {
    char n[128];
    snprintf(n, sizeof n, "%s.weight", name);
    add_t(ts, n, 4, co, ci, k, k, rnd_arr(r, (int64_t)co * ci * k * k, sqrtf(2.0f / (ci * k * k)), 0));
}
static void add_bn(dn_tensors *ts, dn_rng *r, const char *name, int c) {
    char n[128];
    const char *suf[] = {"weight", "bias", "running_mean", "running_var"};
    float sc[] = {0.1f, 0.1f, 0.1f, 0.1f}, off[] = {1, 0, 0, 1};
    for (int i = 0; i < 4; i++) {
        snprintf(n, sizeof n, "%s.%s", name, suf[i]);
        float *a = rnd_arr(r, c, sc[i], off[i]);
        if (i == 3) for (int j = 0; j < c; j++) a[j] = fabsf(a[j]) + 0.5f;
        add_t(ts, n, 1, c, 0, 0, 0, a);
    }
}
static dn_model *tiny_model(int ncls, uint64_t seed) {
    int w[4] = {4, 8, 8, 8};
    dn_rng r;
    dn_rng_seed(&r, seed);
    dn_tensors ts = {0};
    add_conv(&ts, &r, "conv1", w[0], 3, 7);
    add_bn(&ts, &r, "bn1", w[0]);
    int cin = w[0];
    for (int s = 0; s < 4; s++) {
        char p[64];
        snprintf(p, sizeof p, "layer%d.0.conv1", s + 1); add_conv(&ts, &r, p, w[s], cin, 3);
        snprintf(p, sizeof p, "layer%d.0.bn1", s + 1); add_bn(&ts, &r, p, w[s]);
        snprintf(p, sizeof p, "layer%d.0.conv2", s + 1); add_conv(&ts, &r, p, w[s], w[s], 3);
        snprintf(p, sizeof p, "layer%d.0.bn2", s + 1); add_bn(&ts, &r, p, w[s]);
        if (s > 0) {
            snprintf(p, sizeof p, "layer%d.0.downsample.0", s + 1); add_conv(&ts, &r, p, w[s], cin, 1);
            snprintf(p, sizeof p, "layer%d.0.downsample.1", s + 1); add_bn(&ts, &r, p, w[s]);
        }
        cin = w[s];
    }
    dn_model *m = NULL;
    if (dn_model_from_tensors(&ts, 1, &m) != DN_OK) {
        printf("  tiny model: %s\n", dn_last_error());
        dn_tensors_free(&ts);
        return NULL;
    }
    dn_tensors_free(&ts);
    const char *names[] = {"a", "b", "c", "d", "e", "f", "g", "h"};
    if (ncls > 0 && dn_model_new_head(m, ncls, names, seed) != DN_OK) {
        dn_model_free(m);
        return NULL;
    }
    m->pp.resize = 16;
    m->pp.crop = 16;
    return m;
}

static dn_featcache_cfg fc_cfg(const dn_model *m, const int *subset, int ns, const char *dir) {
    dn_featcache_cfg c;
    memset(&c, 0, sizeof c);
    c.paths = g_pathv;
    c.labels = g_labels;
    c.subset = subset;
    c.nsubset = ns;
    c.views = 2;
    c.pp = m->pp;
    dn_aug_default(&c.aug);
    c.seed = 3;
    c.batch = 4;
    c.workers = 2;
    c.dir = dir;
    c.model_sha256 = "0123abcd";
    return c;
}

TEST(featcache_memory_and_disk) {
    make_files();
    dn_model *m = tiny_model(3, 1);
    CHECK(m != NULL);
    if (!m) return;
    dn_session_opts o = {4, 1, 16, 16, -1};
    dn_session *s;
    CHECK(dn_session_new_ex(m, &o, &s) == DN_OK);
    int subset[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}; /* 10 = unreadable */
    dn_featcache_cfg c = fc_cfg(m, subset, 11, NULL);
    dn_featcache a, b;
    dn_featcache_stats st;
    CHECK(dn_featcache_build(s, &c, &a, &st) == DN_OK);
    CHECK(a.n == 30 && a.dim == 8 && st.computed == 30 && st.skipped == 1);
    /* view-0 row of item 4 = features of the plain eval transform */
    float x[3 * 16 * 16], f[8];
    dn_image im = {0};
    CHECK(dn_image_load(g_paths[4], &im) == DN_OK);
    CHECK(dn_preprocess(&im, &m->pp, x) == DN_OK);
    dn_image_free(&im);
    CHECK(dn_session_features(s, x, 1, f) == DN_OK);
    int row = -1, views[3] = {0};
    for (int r = 0; r < a.n; r++) {
        if (a.item[r] == 4 && a.view[r] == 0) row = r;
        views[a.view[r]]++;
        CHECK(a.y[r] == g_labels[a.item[r]]);
    }
    CHECK(views[0] == 10 && views[1] == 10 && views[2] == 10);
    CHECK(row >= 0);
    if (row >= 0)
        for (int j = 0; j < 8; j++) CHECK_NEAR(a.x[row * 8 + j], f[j], 1e-5 * (1 + fabsf(f[j])));
    /* deterministic */
    CHECK(dn_featcache_build(s, &c, &b, &st) == DN_OK);
    CHECK(b.n == a.n && !memcmp(a.x, b.x, (size_t)a.n * 8 * sizeof(float)));
    dn_featcache_free(&b);

    /* disk cache: first build writes, second reads everything back */
    char dir[300];
    snprintf(dir, sizeof dir, "%s/fcache", tmpdir());
    mkdir(dir, 0755);
    c = fc_cfg(m, subset, 10, dir);
    CHECK(dn_featcache_build(s, &c, &b, &st) == DN_OK);
    CHECK(st.computed == 30 && st.reused == 0);
    dn_featcache d;
    CHECK(dn_featcache_build(s, &c, &d, &st) == DN_OK);
    CHECK(st.computed == 0 && st.reused == 30);
    CHECK(d.n == b.n && !memcmp(d.x, b.x, (size_t)b.n * 8 * sizeof(float)));
    dn_featcache_free(&d);
    /* a subset in another order reuses the same per-file views */
    int sub2[] = {9, 3};
    c = fc_cfg(m, sub2, 2, dir);
    CHECK(dn_featcache_build(s, &c, &d, &st) == DN_OK);
    CHECK(st.reused == 6 && st.computed == 0);
    for (int r = 0; r < d.n; r++)
        for (int q = 0; q < b.n; q++)
            if (b.item[q] == d.item[r] && b.view[q] == d.view[r])
                CHECK(!memcmp(d.x + r * 8, b.x + q * 8, 8 * sizeof(float)));
    dn_featcache_free(&d);
    /* another model identity -> nothing reused */
    c = fc_cfg(m, subset, 10, dir);
    c.model_sha256 = "ffff";
    CHECK(dn_featcache_build(s, &c, &d, &st) == DN_OK);
    CHECK(st.reused == 0 && st.computed == 30);
    dn_featcache_free(&d);
    /* the file name covers the code that made the rows (version + revision)
     * and each configuration field: changing any gives another file */
    char d1[600], d2[600];
    c = fc_cfg(m, subset, 10, dir);
    dn_featcache_describe(&c, 8, d1, sizeof d1);
    CHECK(strncmp(d1, "code=" DN_VERSION ".r", strlen("code=" DN_VERSION ".r")) == 0);
    c.seed = 4;
    dn_featcache_describe(&c, 8, d2, sizeof d2);
    CHECK(strcmp(d1, d2) != 0);
    c = fc_cfg(m, subset, 10, dir);
    c.aug.scale_min += 0.1f;
    dn_featcache_describe(&c, 8, d2, sizeof d2);
    CHECK(strcmp(d1, d2) != 0);
    c = fc_cfg(m, subset, 10, dir);
    c.stage = 3;
    dn_featcache_describe(&c, 8, d2, sizeof d2);
    CHECK(strcmp(d1, d2) != 0);
    dn_featcache_free(&b);
    dn_featcache_free(&a);
    dn_session_free(s);
    dn_model_free(m);
}

/* ------------------------------------------------------------ checkpoints */
TEST(checkpoint_roundtrip_and_corruption) {
    make_files();
    char path[300];
    snprintf(path, sizeof path, "%s/a.ckpt", tmpdir());
    dn_tensors ts = {0};
    dn_meta meta = {0};
    int64_t sh[2] = {2, 3};
    float *d = malloc(6 * sizeof(float));
    for (int i = 0; i < 6; i++) d[i] = i * 0.5f - 1;
    CHECK(dn_tensors_add(&ts, "fc.weight", 2, sh, d) == DN_OK);
    CHECK(dn_tensors_add(&ts, "optim.step", 1, (int64_t[]){1}, calloc(1, sizeof(float))) == DN_OK);
    dn_meta_set(&meta, "epoch", "7");
    dn_meta_set(&meta, "classes", "[\"a\",\"b\"]");
    CHECK(dn_checkpoint_save(path, &ts, &meta) == DN_OK);
    dn_tensors t2 = {0};
    dn_meta m2 = {0};
    CHECK(dn_checkpoint_load(path, &t2, &m2) == DN_OK);
    CHECK(t2.n == 2 && !strcmp(t2.t[0].name, "fc.weight") && t2.t[0].ndim == 2 && t2.t[0].shape[1] == 3);
    CHECK(!memcmp(t2.t[0].data, d, 6 * sizeof(float)));
    CHECK(dn_meta_get(&m2, "epoch") && !strcmp(dn_meta_get(&m2, "epoch"), "7"));
    dn_tensors_free(&t2);
    dn_meta_free(&m2);
    /* flip one byte of a weight: checksum catches it */
    FILE *f = fopen(path, "r+b");
    fseek(f, -40, SEEK_END);
    int c = fgetc(f);
    fseek(f, -40, SEEK_END);
    fputc(c ^ 0x10, f);
    fclose(f);
    CHECK(dn_checkpoint_load(path, &t2, &m2) == DN_ERR_FORMAT);
    CHECK(strstr(dn_last_error(), "a.ckpt: corrupt checkpoint (checksum mismatch)") != NULL);
    CHECK(t2.n == 0 && m2.n == 0);
    /* truncated */
    CHECK(dn_checkpoint_save(path, &ts, &meta) == DN_OK);
    CHECK(truncate(path, 60) == 0);
    CHECK(dn_checkpoint_load(path, &t2, &m2) == DN_ERR_FORMAT);
    CHECK(strstr(dn_last_error(), "truncated") != NULL);
    /* not a checkpoint at all */
    CHECK(dn_checkpoint_load(g_paths[0], &t2, &m2) == DN_ERR_FORMAT);
    CHECK(strstr(dn_last_error(), "not a defectnet checkpoint") != NULL);
    snprintf(path, sizeof path, "%s/nodir/x.ckpt", tmpdir());
    CHECK(dn_checkpoint_save(path, &ts, &meta) == DN_ERR_IO);
    dn_tensors_free(&ts);
    dn_meta_free(&meta);
}

/* ------------------------------------------------------------ head fit */
/* Gaussian clusters in feature space: the head must separate them. */
static void make_clusters(dn_featcache *fc, int n, int k, int d, uint64_t seed) {
    dn_rng r;
    dn_rng_seed(&r, seed);
    fc->dim = d;
    fc->n = n;
    fc->x = dn_alloc_aligned((size_t)n * d * sizeof(float));
    fc->y = calloc((size_t)n, sizeof(int));
    fc->item = calloc((size_t)n, sizeof(int));
    fc->view = calloc((size_t)n, sizeof(int));
    for (int i = 0; i < n; i++) {
        fc->y[i] = i % k;
        fc->item[i] = i;
        for (int j = 0; j < d; j++) fc->x[(size_t)i * d + j] = (j % k == fc->y[i] ? 1.5f : 0.0f) + 0.5f * dn_rng_normal(&r);
    }
}

static int g_reports;
static void count_report(void *ctx, int ep, double loss, const dn_eval_metrics *val, double val_loss, double secs,
                         int improved) {
    (void)ctx; (void)ep; (void)loss; (void)val; (void)val_loss; (void)secs; (void)improved;
    g_reports++;
}

TEST(head_fit_separates_clusters) {
    dn_model *m = tiny_model(3, 2);
    CHECK(m != NULL);
    if (!m) return;
    dn_featcache tr = {0}, va = {0};
    make_clusters(&tr, 300, 3, 8, 1);
    make_clusters(&va, 90, 3, 8, 2);
    dn_train_cfg c;
    dn_train_cfg_default(&c);
    c.batch = 16;
    c.lr = 0.01f;
    c.patience = 0;
    dn_rng rng;
    dn_rng_seed(&rng, 5);
    dn_head_fit_result hr;
    g_reports = 0;
    CHECK(dn_head_fit(m, &tr, &va, &c, NULL, 20, &rng, count_report, NULL, &hr) == DN_OK);
    CHECK(hr.epochs_run == 20 && g_reports == 20);
    CHECK(hr.best_f1 > 0.95);
    /* the restored head is the best one: re-evaluate it */
    int correct = 0;
    for (int i = 0; i < va.n; i++) {
        int best = 0;
        float bl = -1e30f;
        for (int j = 0; j < 3; j++) {
            float l = m->fc_b[j];
            for (int q = 0; q < 8; q++) l += m->fc_w[j * 8 + q] * va.x[i * 8 + q];
            if (l > bl) { bl = l; best = j; }
        }
        correct += best == va.y[i];
    }
    CHECK(correct >= 86);
    /* early stopping: patience 2 on a task that is solved at once stops early */
    c.patience = 2;
    CHECK(dn_head_fit(m, &tr, &va, &c, NULL, 50, &rng, NULL, NULL, &hr) == DN_OK);
    CHECK(hr.epochs_run < 50);
    /* balanced sampler + class weights run too */
    c.balanced_sampler = 1;
    float cw[3] = {1, 2, 0.5f};
    CHECK(dn_head_fit(m, &tr, &va, &c, cw, 3, &rng, NULL, NULL, &hr) == DN_OK);
    /* NaN features -> a clear divergence error */
    tr.x[5] = NAN;
    c.balanced_sampler = 0;
    CHECK(dn_head_fit(m, &tr, &va, &c, NULL, 3, &rng, NULL, NULL, &hr) == DN_ERR_NUMERIC);
    CHECK(strstr(dn_last_error(), "diverged") != NULL && strstr(dn_last_error(), "NaN") != NULL);
    dn_featcache_free(&tr);
    dn_featcache_free(&va);
    dn_model_free(m);
}

/* Model selection: higher macro-F1 wins; a tie goes to the lower validation
 * loss, then to the later epoch (equal loss); NaN never wins. The strict ">" of
 * old kept epoch 2 at a macro-F1 tie of 1.0 and threw a whole stage away. */
TEST(selection_tie_break) {
    CHECK(dn_train_better(0.9, 1.0, 0.8, 0.1));
    CHECK(!dn_train_better(0.8, 0.1, 0.9, 1.0));
    CHECK(dn_train_better(1.0, 0.05, 1.0, 0.20));   /* tie at 1.0, lower loss */
    CHECK(!dn_train_better(1.0, 0.30, 1.0, 0.20));  /* tie, higher loss */
    CHECK(dn_train_better(1.0, 0.20, 1.0, 0.20));   /* full tie: the later epoch */
    CHECK(dn_train_better(0.5, 2.0, -1, INFINITY)); /* anything beats nothing */
    CHECK(!dn_train_better(NAN, 0.1, -1, INFINITY));
    CHECK(!dn_train_better(0.5, NAN, 0.5, 1.0));
}

/* Imbalanced data, as on a line: class 0 ("good") 85%, three defect classes 5%
 * each, overlapping clusters. The default recipe must not trade good parts for
 * defect guesses: the old default (class-balanced loss weights x label
 * smoothing 0.1) put most of the smoothing mass on the rare classes, so good
 * parts near a defect cluster went to it (elpv: good-class recall 13% after
 * the head stage). Checks the default keeps good-class recall and beats the
 * old setting on accuracy at an equal or better macro-F1 (within 0.02). */
static void make_imbalanced(dn_featcache *fc, int n, uint64_t seed) {
    const int k = 4, d = 8;
    dn_rng r;
    dn_rng_seed(&r, seed);
    fc->dim = d;
    fc->n = n;
    fc->x = dn_alloc_aligned((size_t)n * d * sizeof(float));
    fc->y = calloc((size_t)n, sizeof(int));
    fc->item = calloc((size_t)n, sizeof(int));
    fc->view = calloc((size_t)n, sizeof(int));
    for (int i = 0; i < n; i++) {
        int y = i % 20 < 17 ? 0 : 1 + i % 20 - 17;
        fc->y[i] = y;
        fc->item[i] = i;
        for (int j = 0; j < d; j++) fc->x[(size_t)i * d + j] = (j % k == y ? 1.2f : 0.0f) + 0.6f * dn_rng_normal(&r);
    }
    (void)k;
}

static void fit_and_score(const dn_train_cfg *c, const dn_featcache *tr, const dn_featcache *va, double *acc,
                          double *good_recall, double *f1) {
    int cnt[4] = {0};
    for (int i = 0; i < tr->n; i++) cnt[tr->y[i]]++;
    float w[4];
    int weighted = dn_train_class_weights(c, cnt, 4, w);
    dn_model *m = tiny_model(4, 2);
    dn_rng rng;
    dn_rng_seed(&rng, 9);
    dn_head_fit_result hr;
    *acc = *good_recall = *f1 = 0;
    if (!m) return;
    CHECK(dn_head_fit(m, tr, va, c, weighted ? w : NULL, 40, &rng, NULL, NULL, &hr) == DN_OK);
    int correct = 0, good = 0, good_ok = 0;
    for (int i = 0; i < va->n; i++) {
        int best = 0;
        float bl = -1e30f;
        for (int j = 0; j < 4; j++) {
            float l = m->fc_b[j];
            for (int q = 0; q < 8; q++) l += m->fc_w[j * 8 + q] * va->x[i * 8 + q];
            if (l > bl) { bl = l; best = j; }
        }
        correct += best == va->y[i];
        if (va->y[i] == 0) { good++; good_ok += best == 0; }
    }
    *acc = (double)correct / va->n;
    *good_recall = good ? (double)good_ok / good : 0;
    *f1 = hr.best_f1;
    dn_model_free(m);
}

TEST(default_recipe_on_imbalanced_data) {
    dn_featcache tr = {0}, va = {0};
    make_imbalanced(&tr, 1200, 31);
    make_imbalanced(&va, 1200, 32);
    dn_train_cfg def, old;
    dn_train_cfg_default(&def);
    def.patience = 0;
    old = def;
    old.class_weights = 1;
    old.label_smoothing = 0.1f;
    double a_def, r_def, f_def, a_old, r_old, f_old;
    fit_and_score(&def, &tr, &va, &a_def, &r_def, &f_def);
    fit_and_score(&old, &tr, &va, &a_old, &r_old, &f_old);
    printf("  imbalanced 85/5/5/5: default acc %.3f good recall %.3f val macro-F1 %.3f | class weights + smoothing: "
           "acc %.3f good recall %.3f macro-F1 %.3f\n", a_def, r_def, f_def, a_old, r_old, f_old);
    CHECK(r_def >= 0.95);
    CHECK(a_def > a_old + 0.02);
    CHECK(f_def >= f_old - 0.02);
    dn_featcache_free(&tr);
    dn_featcache_free(&va);
}

TEST(stage_parse) {
    dn_train_stage st[DN_MAX_TRAIN_STAGES];
    int n;
    CHECK(dn_train_parse_stages("head:5,layer3:10", st, &n) == DN_OK);
    CHECK(n == 2 && st[0].first_trainable == 5 && st[0].epochs == 5 && st[1].first_trainable == 4 && st[1].epochs == 10);
    CHECK(dn_train_parse_stages("none:1", st, &n) == DN_OK && n == 1 && st[0].first_trainable == 0);
    CHECK(dn_train_parse_stages("head", st, &n) == DN_ERR_ARG);
    CHECK(dn_train_parse_stages("head:0", st, &n) == DN_ERR_ARG);
    CHECK(dn_train_parse_stages("tail:3", st, &n) == DN_ERR_ARG);
    CHECK(strstr(dn_last_error(), "tail") != NULL);
}

/* ------------------------------------------------------------ end to end */
/* ImageFolder dir/<cls>/<i>.ppm; classes get distinct brightness/texture. */
static void make_folder(const char *dir, const char *const *classes, int ncls, int per) {
    mkdir(dir, 0755);
    for (int c = 0; c < ncls; c++) {
        char d[400];
        snprintf(d, sizeof d, "%s/%s", dir, classes[c]);
        mkdir(d, 0755);
        for (int i = 0; i < per; i++) {
            char p[500];
            snprintf(p, sizeof p, "%s/%d.ppm", d, i);
            FILE *f = fopen(p, "wb");
            fprintf(f, "P6\n20 20\n255\n");
            for (int y = 0; y < 20; y++)
                for (int x = 0; x < 20; x++) {
                    int v = c == 0 ? 40 + (x * 3 + i) % 20 : c == 1 ? ((x / 4 + y / 4) % 2 ? 230 : 20) : 120 + ((y + i) % 3) * 40;
                    if (x == 0 && y == 0) v = i * 9; /* every image unique (no duplicate drops) */
                    for (int ch = 0; ch < 3; ch++) fputc(v & 255, f);
                }
            fclose(f);
        }
    }
}

static char g_model_abc[300];
static const char *model_abc(void) {
    if (!g_model_abc[0]) {
        dn_model *m = tiny_model(3, 9);
        snprintf(g_model_abc, sizeof g_model_abc, "%s/tiny_abc.safetensors", tmpdir());
        if (!m || dn_model_save(m, g_model_abc) != DN_OK) printf("  cannot save tiny model: %s\n", dn_last_error());
        dn_model_free(m);
    }
    return g_model_abc;
}

static void small_cfg(dn_train_cfg *c, const char *data, const char *out) {
    dn_train_cfg_default(c);
    c->data = data;
    c->weights = model_abc();
    c->out = out;
    c->image_size = 32;
    c->batch = 8;
    c->views = 1;
    c->stages[0].epochs = 4;
    c->nstages = 1;
    c->threads = 1;
    c->quiet = 1;
    c->split.seed = 3;
}

TEST(train_head_only_end_to_end) {
    char data[300], out[300], out2[300];
    const char *cls[] = {"a", "b", "c"};
    snprintf(data, sizeof data, "%s/abc", tmpdir());
    make_folder(data, cls, 3, 10);
    snprintf(out, sizeof out, "%s/m1.safetensors", tmpdir());
    dn_train_cfg c;
    small_cfg(&c, data, out);
    dn_train_result res;
    dn_status st = dn_train_run(&c, &res);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (st) return;
    CHECK(res.nclasses == 3 && res.ntrain + res.nval + res.ntest == 30 && res.nval > 0 && res.ntest > 0);
    CHECK(res.epochs_run == 4 && res.best_epoch >= 0 && res.best_epoch < 4);
    CHECK(res.test.n == res.ntest && res.skipped == 0);
    dn_model *m = NULL;
    CHECK(dn_model_load(out, &m) == DN_OK);
    if (m) {
        CHECK(m->num_classes == 3 && !strcmp(m->class_names[0], "a") && !strcmp(m->class_names[2], "c"));
        CHECK(m->pp.crop == 32 && m->pp.resize == 32);
        const char *rec = dn_meta_get(&m->meta, "train_recipe");
        CHECK(rec && strstr(rec, "\"image_size\":32") && strstr(rec, "\"first_trainable\":5"));
        const char *sh = dn_meta_get(&m->meta, "split_manifest_sha256");
        CHECK(sh && strlen(sh) == 64);
        CHECK(dn_meta_get(&m->meta, "train_val_metrics") && dn_meta_get(&m->meta, "train_test_metrics"));
        dn_model_free(m);
    }
    /* the split manifest was written and is reused as is */
    char split[400], hex1[65], hex2[65];
    snprintf(split, sizeof split, "%s.split.csv", out);
    CHECK(dn_sha256_file(split, hex1) == DN_OK);
    snprintf(out2, sizeof out2, "%s/m2.safetensors", tmpdir());
    small_cfg(&c, NULL, out2);
    c.split_manifest = split;
    dn_train_result r2;
    CHECK(dn_train_run(&c, &r2) == DN_OK);
    CHECK(dn_sha256_file(split, hex2) == DN_OK && !strcmp(hex1, hex2));
    CHECK(r2.ntrain == res.ntrain && r2.ntest == res.ntest);
    /* same seed, same data: same result */
    CHECK_NEAR(r2.best_val_f1, res.best_val_f1, 1e-9);
    dn_train_result_free(&r2);
    dn_train_result_free(&res);
}

TEST(train_staged_checkpoint_resume) {
    char data[300], out[300], ckpt[400];
    snprintf(data, sizeof data, "%s/abc", tmpdir());
    snprintf(out, sizeof out, "%s/m3.safetensors", tmpdir());
    dn_train_cfg c;
    small_cfg(&c, data, out);
    CHECK(dn_train_parse_stages("head:2,layer3:2", c.stages, &c.nstages) == DN_OK);
    dn_train_result res;
    snprintf(ckpt, sizeof ckpt, "%s.ckpt", out);
    /* by default the checkpoint is removed once the model is saved */
    dn_status st = dn_train_run(&c, &res);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (st) return;
    dn_train_result_free(&res);
    CHECK(access(out, R_OK) == 0 && access(ckpt, F_OK) != 0);
    c.keep_checkpoint = 1;
    st = dn_train_run(&c, &res);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (st) return;
    CHECK(res.epochs_run == 4);
    dn_train_result_free(&res);
    dn_tensors ts = {0};
    dn_meta meta = {0};
    CHECK(dn_checkpoint_load(ckpt, &ts, &meta) == DN_OK);
    CHECK(dn_meta_get(&meta, "stage") && !strcmp(dn_meta_get(&meta, "stage"), "1"));
    CHECK(dn_tensors_find(&ts, "model.layer4.0.conv1.weight") != NULL);
    int has_optim = 0;
    for (int i = 0; i < ts.n; i++) has_optim |= !strncmp(ts.t[i].name, "optim.", 6);
    CHECK(has_optim);
    dn_tensors_free(&ts);
    dn_meta_free(&meta);
    /* resume with one more epoch in the last stage: exactly one epoch runs */
    char ck2[400];
    snprintf(ck2, sizeof ck2, "%s/resume.ckpt", tmpdir());
    FILE *a = fopen(ckpt, "rb"), *b = fopen(ck2, "wb");
    int ch;
    while ((ch = fgetc(a)) != EOF) fputc(ch, b);
    fclose(a);
    fclose(b);
    c.stages[1].epochs = 3;
    c.resume = ck2;
    c.split_manifest = NULL;
    st = dn_train_run(&c, &res);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (!st) {
        CHECK(res.epochs_run == 5);
        dn_train_result_free(&res);
    }
    /* the streaming path (fresh augmentations each epoch), layer4 and all layers */
    small_cfg(&c, data, out);
    c.no_cache = 1;
    c.balanced_sampler = 1;
    CHECK(dn_train_parse_stages("layer3:1,none:1", c.stages, &c.nstages) == DN_OK);
    st = dn_train_run(&c, &res);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (!st) {
        CHECK(res.epochs_run == 2 && res.best_val_f1 >= 0);
        dn_train_result_free(&res);
    }
}

TEST(train_bad_input) {
    char data[300], out[300], p[400];
    dn_train_cfg c;
    dn_train_result res;
    snprintf(out, sizeof out, "%s/bad.safetensors", tmpdir());
    /* empty folder */
    snprintf(data, sizeof data, "%s/empty", tmpdir());
    mkdir(data, 0755);
    small_cfg(&c, data, out);
    CHECK(dn_train_run(&c, &res) != DN_OK);
    CHECK_MSG(strstr(dn_last_error(), "empty") != NULL, "%s", dn_last_error());
    /* single class */
    const char *one[] = {"a"};
    snprintf(data, sizeof data, "%s/single", tmpdir());
    make_folder(data, one, 1, 6);
    small_cfg(&c, data, out);
    CHECK(dn_train_run(&c, &res) != DN_OK);
    CHECK_MSG(strstr(dn_last_error(), "class") != NULL, "%s", dn_last_error());
    /* unreadable images: skipped and counted, fatal with strict */
    const char *cls[] = {"a", "b", "c"};
    snprintf(data, sizeof data, "%s/withbad", tmpdir());
    make_folder(data, cls, 3, 8);
    snprintf(p, sizeof p, "%s/b/zz_broken.ppm", data);
    FILE *f = fopen(p, "wb");
    fputs("P6\n20 20\n255\nxx", f);
    fclose(f);
    small_cfg(&c, data, out);
    char errlog[400];
    snprintf(errlog, sizeof errlog, "%s/stderr.txt", tmpdir());
    fflush(stderr);
    int saved = dup(2);
    FILE *ef = fopen(errlog, "w");
    dup2(fileno(ef), 2);
    dn_status st = dn_train_run(&c, &res);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(ef);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (!st) {
        CHECK(res.skipped == 1 && (res.warnings & DN_TRAIN_WARN_SKIPPED));
        dn_train_result_free(&res);
    }
    /* the unreadable image is named (once), even with quiet */
    {
        char txt[4096] = "";
        FILE *rf = fopen(errlog, "r");
        size_t n = rf ? fread(txt, 1, sizeof txt - 1, rf) : 0;
        txt[n] = 0;
        if (rf) fclose(rf);
        const char *hit = strstr(txt, "warning: skipped unreadable image");
        CHECK_MSG(hit && strstr(hit, "withbad/b/zz_broken.ppm"), "%s", txt);
        CHECK(hit && !strstr(hit + 1, "zz_broken.ppm\nwarning: skipped")); /* named once */
    }
    /* a missing weights file is found before anything is written (no split manifest) */
    {
        char sm[400];
        snprintf(sm, sizeof sm, "%s/never_written.csv", tmpdir());
        small_cfg(&c, data, out);
        c.weights = "/nonexistent/resnet18.pth";
        c.split_manifest = sm;
        CHECK(dn_train_run(&c, &res) != DN_OK);
        CHECK_MSG(strstr(dn_last_error(), "/nonexistent/resnet18.pth") != NULL, "%s", dn_last_error());
        CHECK(access(sm, F_OK) != 0);
        /* same for a checkpoint to resume from that is not there */
        small_cfg(&c, data, out);
        c.split_manifest = sm;
        c.resume = "/nonexistent/run.ckpt";
        CHECK(dn_train_run(&c, &res) != DN_OK);
        CHECK_MSG(strstr(dn_last_error(), "/nonexistent/run.ckpt") != NULL, "%s", dn_last_error());
        CHECK(access(sm, F_OK) != 0);
    }
    small_cfg(&c, data, out);
    c.strict = 1;
    CHECK(dn_train_run(&c, &res) != DN_OK);
    CHECK_MSG(strstr(dn_last_error(), "zz_broken.ppm") != NULL, "%s", dn_last_error());
    /* a model whose classes do not match the data */
    const char *xy[] = {"x", "y"};
    snprintf(data, sizeof data, "%s/xy", tmpdir());
    make_folder(data, xy, 2, 8);
    small_cfg(&c, data, out);
    CHECK(dn_train_run(&c, &res) == DN_ERR_ARG);
    CHECK_MSG(strstr(dn_last_error(), "do not match") != NULL, "%s", dn_last_error());
    c.new_head = 1; /* explicitly replacing the head is fine */
    st = dn_train_run(&c, &res);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (!st) dn_train_result_free(&res);
    /* --resume of a checkpoint trained on other classes */
    char ck[400];
    snprintf(ck, sizeof ck, "%s/resume.ckpt", tmpdir()); /* the abc checkpoint train_staged_checkpoint_resume copied */
    small_cfg(&c, data, out);
    c.new_head = 1;
    c.resume = ck;
    CHECK(dn_train_run(&c, &res) == DN_ERR_ARG);
    CHECK_MSG(strstr(dn_last_error(), "checkpoint classes") != NULL, "%s", dn_last_error());
    /* corrupt checkpoint */
    snprintf(p, sizeof p, "%s/corrupt.ckpt", tmpdir());
    f = fopen(p, "wb");
    fputs("DNCKPT01 this is not a checkpoint at all, just bytes .................", f);
    fclose(f);
    snprintf(data, sizeof data, "%s/abc", tmpdir());
    snprintf(out, sizeof out, "%s/bad2.safetensors", tmpdir());
    small_cfg(&c, data, out);
    c.resume = p;
    CHECK(dn_train_run(&c, &res) == DN_ERR_FORMAT);
    CHECK_MSG(strstr(dn_last_error(), "corrupt.ckpt: corrupt checkpoint") != NULL, "%s", dn_last_error());
    /* a manifest naming missing files */
    snprintf(p, sizeof p, "%s/missing.csv", tmpdir());
    f = fopen(p, "w");
    fprintf(f, "path,label,split\nabc/a/0.ppm,a,train\nabc/b/0.ppm,b,train\nnope/gone.ppm,a,val\nabc/c/1.ppm,c,test\n");
    fclose(f);
    small_cfg(&c, p, out);
    CHECK(dn_train_run(&c, &res) != DN_OK);
    CHECK_MSG(strstr(dn_last_error(), "gone.ppm") != NULL || strstr(dn_last_error(), "missing") != NULL, "%s",
              dn_last_error());
}

/* Guard rails of a run: a stage that never beats its start model is discarded
 * with a warning; a poorly calibrated kept model is flagged. */
TEST(train_warnings) {
    char data[300], out[300];
    snprintf(data, sizeof data, "%s/abc", tmpdir());
    snprintf(out, sizeof out, "%s/warn.safetensors", tmpdir());
    dn_train_cfg c;
    dn_train_result res;
    /* a stage that cannot beat the best so far: resume a checkpoint that claims a
     * perfect best (macro-F1 1, loss 0) into one more layer4 epoch */
    char ck[400];
    snprintf(ck, sizeof ck, "%s.ckpt", out);
    small_cfg(&c, data, out);
    CHECK(dn_train_parse_stages("head:2,layer3:1", c.stages, &c.nstages) == DN_OK);
    c.keep_checkpoint = 1;
    dn_status st = dn_train_run(&c, &res);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (st) return;
    dn_train_result_free(&res);
    dn_tensors ts = {0};
    dn_meta meta = {0};
    CHECK(dn_checkpoint_load(ck, &ts, &meta) == DN_OK);
    CHECK(dn_meta_set(&meta, "best_f1", "1") == DN_OK && dn_meta_set(&meta, "best_loss", "0") == DN_OK);
    CHECK(dn_checkpoint_save(ck, &ts, &meta) == DN_OK);
    dn_tensors_free(&ts);
    dn_meta_free(&meta);
    c.stages[1].epochs = 2;
    c.resume = ck;
    c.split_manifest = NULL;
    c.keep_checkpoint = 0;
    st = dn_train_run(&c, &res);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (!st) {
        CHECK_MSG(res.warnings & DN_TRAIN_WARN_STAGE_DISCARDED, "warnings %u best epoch %d", res.warnings, res.best_epoch);
        CHECK(res.best_epoch < 3 && res.epochs_run == 4);
        dn_train_result_free(&res);
    }
    CHECK(access(ck, F_OK) != 0); /* removed after success */
    /* label smoothing 0.9 caps the confidence near 0.4 on 3 classes: ECE far above 0.1 */
    small_cfg(&c, data, out);
    c.label_smoothing = 0.9f;
    st = dn_train_run(&c, &res);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (!st) {
        CHECK_MSG((res.warnings & DN_TRAIN_WARN_POOR_CALIBRATION) && res.val.ece > DN_TRAIN_ECE_WARN, "ece %g",
                  res.val.ece);
        CHECK(!(res.warnings & DN_TRAIN_WARN_STAGE_DISCARDED));
        dn_train_result_free(&res);
    }
}

/* ------------------------------------------------------------ real data (short) */
/* Head-only on a small NEU-CLS subset with the real pretrained weights: 16
 * images per class for training, 8 val, 8 test, 64x64 input, no views. Kept
 * short for CI; SKIPs without ../shared. */
TEST(real_neu_head_only_small) {
    const char *sh = h_shared();
    if (!sh) SKIP("../shared (or $DN_SHARED) not present");
    char w[1200], man[400], out[400];
    snprintf(w, sizeof w, "%s/weights/resnet18-imagenet.pth", sh);
    FILE *f = fopen(w, "rb");
    if (!f) SKIP("%s not present", w);
    fclose(f);
    snprintf(man, sizeof man, "%s/neu_small.csv", tmpdir());
    f = fopen(man, "w");
    fprintf(f, "path,label,split\n");
    const char *cls[] = {"Cr", "In", "PS", "Pa", "RS", "Sc"};
    char cwd[1024];
    if (!getcwd(cwd, sizeof cwd)) SKIP("getcwd failed");
    for (int c = 0; c < 6; c++)
        for (int i = 1; i <= 32; i++)
            fprintf(f, "%s%s%s/datasets/NEU-CLS/%s/%s_%d.bmp,%s,%s\n", sh[0] == '/' ? "" : cwd, sh[0] == '/' ? "" : "/", sh,
                    cls[c], cls[c], i, cls[c], i <= 16 ? "train" : i <= 24 ? "val" : "test");
    fclose(f);
    snprintf(out, sizeof out, "%s/neu_small.safetensors", tmpdir());
    dn_train_cfg c;
    dn_train_cfg_default(&c);
    c.split_manifest = man;
    c.weights = w;
    c.out = out;
    c.image_size = 64;
    c.views = 0;
    c.stages[0].epochs = 40;
    c.nstages = 1;
    c.patience = 0;
    c.lr = 3e-3f;
    c.quiet = 1;
    dn_train_result res;
    dn_status st = dn_train_run(&c, &res);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    if (st) return;
    printf("  NEU-CLS subset head-only @64px: val acc %.3f, test acc %.3f, macro-F1 %.3f (%.1fs)\n", res.val.accuracy,
           res.test.accuracy, res.test.macro_f1, res.seconds);
    CHECK(res.ntest == 48 && res.test.n == 48);
    CHECK(res.test.accuracy > 0.75); /* chance is 0.17; pretrained features separate NEU classes well */
    dn_train_result_free(&res);
}

int main(void) {
    RUN(aug_parse);
    RUN(aug_geometry);
    RUN(aug_deterministic_and_switchable);
    RUN(loader_deterministic_any_workers);
    RUN(loader_skips_unreadable_and_strict);
    RUN(featcache_memory_and_disk);
    RUN(checkpoint_roundtrip_and_corruption);
    RUN(head_fit_separates_clusters);
    RUN(selection_tie_break);
    RUN(default_recipe_on_imbalanced_data);
    RUN(stage_parse);
    RUN(train_head_only_end_to_end);
    RUN(train_staged_checkpoint_resume);
    RUN(train_bad_input);
    RUN(train_warnings);
    RUN(real_neu_head_only_small);
    return REPORT();
}
