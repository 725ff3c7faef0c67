/* Datasets: natural class order, file collection, ImageFolder scans, CSV
 * manifests, stratified splits, split manifests, duplicates; real datasets
 * from ../shared when present. */
#include "harness.h"
#include "io/dataset.h"
#include "io/synth.h"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[64];

static const char *P(const char *fmt, const char *a) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    char rel[400];
    snprintf(rel, sizeof rel, fmt, a);
    snprintf(buf[k], sizeof buf[k], "%s/%s", root, rel);
    return buf[k];
}

/* mkdir -p for the parent folders of path, then writes content. */
static void put(const char *path, const char *content) {
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *s = tmp + 1; *s; s++)
        if (*s == '/') { *s = 0; mkdir(tmp, 0755); *s = '/'; }
    FILE *f = fopen(path, "w");
    if (f) { fputs(content, f); fclose(f); }
}

static void mk(const char *path) {
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s/", path);
    for (char *s = tmp + 1; *s; s++)
        if (*s == '/') { *s = 0; mkdir(tmp, 0755); *s = '/'; }
}

/* n files per class with distinct content under dir/<class>/. */
static void make_folder(const char *dir, const char *const *classes, int nc, int n) {
    for (int c = 0; c < nc; c++)
        for (int i = 0; i < n; i++) {
            char p[512], content[128];
            snprintf(p, sizeof p, "%s/%s/img_%03d.png", dir, classes[c], i);
            snprintf(content, sizeof content, "%s %s %d", dir, classes[c], i);
            put(p, content);
        }
}

TEST(natural_order) {
    CHECK(dn_natural_cmp("2", "10") < 0);
    CHECK(dn_natural_cmp("10", "9") > 0);
    CHECK(dn_natural_cmp("a2b", "a10b") < 0);
    CHECK(dn_natural_cmp("img_9.png", "img_10.png") < 0);
    CHECK(dn_natural_cmp("abc", "abc") == 0);
    CHECK(dn_natural_cmp("PS", "Pa") < 0); /* bytewise like Python's sorted() */
    CHECK(dn_natural_cmp("01", "1") != 0); /* total order */
    CHECK(dn_natural_cmp("x", "x1") < 0);
}

TEST(collect_images) {
    put(P("%s/a/1.PNG", "col"), "x");
    put(P("%s/a/10.jpg", "col"), "x");
    put(P("%s/a/2.jpeg", "col"), "x");
    put(P("%s/a/sub/3.bmp", "col"), "x");
    put(P("%s/a/.hidden.png", "col"), "x");
    put(P("%s/a/notes.txt", "col"), "x");
    put(P("%s/b.PgM", "col"), "x");
    put(P("%s/explicit.dat", "col"), "x");
    const char *in[] = {P("%s/a", "col"), P("%s/explicit.dat", "col")};
    char **out;
    int n;
    CHECK(dn_collect_images(in, 2, &out, &n) == DN_OK);
    CHECK(n == 5);
    if (n == 5) {
        CHECK(strstr(out[0], "/a/1.PNG") != NULL);
        CHECK(strstr(out[1], "/a/2.jpeg") != NULL);
        CHECK(strstr(out[2], "/a/10.jpg") != NULL);
        CHECK(strstr(out[3], "/a/sub/3.bmp") != NULL);
        CHECK(strstr(out[4], "explicit.dat") != NULL); /* explicit files kept */
    }
    dn_paths_free(out, n);
    const char *bad[] = {P("%s/nope", "col")};
    CHECK(dn_collect_images(bad, 1, &out, &n) == DN_ERR_IO);
    CHECK(strstr(dn_last_error(), "nope") != NULL);
    CHECK(out == NULL && n == 0);
    CHECK(dn_is_image_name("x.JPEG") && dn_is_image_name("a.pnm") && !dn_is_image_name("a.png.txt"));
}

TEST(scan_natural_classes) {
    const char *cls[] = {"10", "2", "1"};
    make_folder(P("%s", "nat"), cls, 3, 4);
    put(P("%s/2/deeper/extra.jpg", "nat"), "extra");
    put(P("%s/readme.txt", "nat"), "not a class");
    dn_dataset *ds;
    CHECK(dn_dataset_scan(P("%s", "nat"), &ds) == DN_OK);
    if (!ds) return;
    CHECK(ds->nclasses == 3);
    CHECK(!strcmp(ds->classes[0], "1") && !strcmp(ds->classes[1], "2") && !strcmp(ds->classes[2], "10"));
    int counts[3];
    CHECK(dn_dataset_count(ds, DN_SPLIT_NONE, counts) == 13);
    CHECK(counts[0] == 4 && counts[1] == 5 && counts[2] == 4);
    CHECK(!ds->has_split);
    CHECK(dn_dataset_class_index(ds, "10") == 2 && dn_dataset_class_index(ds, "3") == -1);
    dn_dataset_free(ds);
}

TEST(scan_official_split) {
    const char *cls[] = {"open", "short"};
    make_folder(P("%s/train", "off"), cls, 2, 20);
    make_folder(P("%s/test", "off"), cls, 2, 6);
    dn_dataset *ds;
    CHECK(dn_dataset_scan(P("%s", "off"), &ds) == DN_OK);
    if (!ds) return;
    CHECK(ds->has_split && ds->nclasses == 2);
    CHECK(dn_dataset_count(ds, DN_SPLIT_TRAIN, NULL) == 40);
    CHECK(dn_dataset_count(ds, DN_SPLIT_TEST, NULL) == 12);
    dn_split_cfg cfg;
    dn_split_cfg_default(&cfg);
    CHECK(dn_dataset_split(ds, &cfg) == DN_OK);
    int c[2];
    /* test untouched; val = 15/85 of each class's 20 train images = 4 (3.53 rounded) */
    CHECK(dn_dataset_count(ds, DN_SPLIT_TEST, c) == 12 && c[0] == 6 && c[1] == 6);
    CHECK(dn_dataset_count(ds, DN_SPLIT_VAL, c) == 8 && c[0] == 4 && c[1] == 4);
    CHECK(dn_dataset_count(ds, DN_SPLIT_TRAIN, NULL) == 32);
    for (int i = 0; i < ds->n; i++)
        if (strstr(ds->items[i].path, "/test/")) CHECK(ds->items[i].split == DN_SPLIT_TEST);
    dn_dataset_free(ds);
}

TEST(bad_empty_folder) {
    mk(P("%s", "empty"));
    dn_dataset *ds;
    CHECK(dn_dataset_scan(P("%s", "empty"), &ds) == DN_ERR_ARG);
    CHECK(strstr(dn_last_error(), "empty") != NULL && strstr(dn_last_error(), "no class") != NULL);
    CHECK(ds == NULL);
    /* a class folder without images */
    put(P("%s/a/x.png", "emptycls"), "a");
    mk(P("%s/b", "emptycls"));
    CHECK(dn_dataset_scan(P("%s", "emptycls"), &ds) == DN_ERR_ARG);
    CHECK(strstr(dn_last_error(), "emptycls/b: class folder has no images") != NULL);
}

TEST(bad_single_class) {
    const char *cls[] = {"only"};
    make_folder(P("%s", "single"), cls, 1, 3);
    dn_dataset *ds;
    CHECK(dn_dataset_scan(P("%s", "single"), &ds) == DN_ERR_ARG);
    CHECK(strstr(dn_last_error(), "only one class") != NULL && strstr(dn_last_error(), "single") != NULL);
    CHECK(ds == NULL);
}

TEST(bad_missing_folder) {
    dn_dataset *ds;
    CHECK(dn_dataset_scan(P("%s", "does_not_exist"), &ds) == DN_ERR_IO);
    CHECK(strstr(dn_last_error(), "does_not_exist") != NULL);
    put(P("%s", "plainfile.txt"), "x");
    CHECK(dn_dataset_scan(P("%s", "plainfile.txt"), &ds) == DN_ERR_ARG);
    CHECK(strstr(dn_last_error(), "not a folder") != NULL);
}

TEST(manifest_read) {
    put(P("%s/imgs/a 1.png", "man"), "1");
    put(P("%s/imgs/b,2.png", "man"), "2");
    put(P("%s/imgs/c.png", "man"), "3");
    put(P("%s/imgs/d.png", "man"), "4");
    char csv[1024];
    snprintf(csv, sizeof csv,
             "\xEF\xBB\xBFlabel,path,split,comment\r\n"
             "scratch,imgs/a 1.png,train,x\r\n"
             "\"spot\",\"imgs/b,2.png\",test,\"q\"\"uote\"\r\n"
             "\r\n"
             "spot,%s,val,\n"
             "scratch,imgs/d.png,train,\n",
             P("%s/imgs/c.png", "man"));
    put(P("%s/list.csv", "man"), csv);
    dn_dataset *ds;
    CHECK(dn_dataset_load_manifest(P("%s/list.csv", "man"), &ds) == DN_OK);
    if (!ds) return;
    CHECK(ds->n == 4 && ds->nclasses == 2 && ds->has_split);
    CHECK(!strcmp(ds->classes[0], "scratch") && !strcmp(ds->classes[1], "spot"));
    CHECK(strstr(ds->items[1].path, "man/imgs/b,2.png") != NULL);
    CHECK(ds->items[1].label == 1 && ds->items[1].split == DN_SPLIT_TEST);
    CHECK(ds->items[2].split == DN_SPLIT_VAL && ds->items[2].path[0] == '/');
    dn_dataset_free(ds);
}

TEST(bad_manifest_missing_files) {
    put(P("%s/ok.png", "manmiss"), "1");
    put(P("%s/list.csv", "manmiss"), "path,label\nok.png,a\ngone1.png,b\ngone2.png,b\n");
    dn_dataset *ds;
    CHECK(dn_dataset_load_manifest(P("%s/list.csv", "manmiss"), &ds) == DN_ERR_IO);
    const char *e = dn_last_error();
    CHECK_MSG(strstr(e, "list.csv: 2 listed files are missing (first: line 3:") && strstr(e, "gone1.png"), "%s", e);
    CHECK(ds == NULL);
}

TEST(bad_manifest_format) {
    dn_dataset *ds;
    put(P("%s/h.csv", "manbad"), "file,class\nx.png,a\n");
    CHECK(dn_dataset_load_manifest(P("%s/h.csv", "manbad"), &ds) == DN_ERR_FORMAT);
    CHECK(strstr(dn_last_error(), "h.csv: line 1: header") != NULL);
    put(P("%s/x.png", "manbad"), "x");
    put(P("%s/s.csv", "manbad"), "path,label,split\nx.png,a,holdout\n");
    CHECK(dn_dataset_load_manifest(P("%s/s.csv", "manbad"), &ds) == DN_ERR_FORMAT);
    CHECK(strstr(dn_last_error(), "s.csv: line 2: unknown split 'holdout'") != NULL);
    put(P("%s/e.csv", "manbad"), "");
    CHECK(dn_dataset_load_manifest(P("%s/e.csv", "manbad"), &ds) == DN_ERR_FORMAT);
    CHECK(strstr(dn_last_error(), "empty manifest") != NULL);
    put(P("%s/q.csv", "manbad"), "path,label\n\"x.png,a\n");
    CHECK(dn_dataset_load_manifest(P("%s/q.csv", "manbad"), &ds) == DN_ERR_FORMAT);
    CHECK(strstr(dn_last_error(), "unterminated quote") != NULL);
}

static int same_split_assignment(const dn_dataset *a, const dn_dataset *b) {
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++)
        if (a->items[i].split != b->items[i].split || strcmp(a->items[i].path, b->items[i].path)) return 0;
    return 1;
}

TEST(stratified_split) {
    const char *cls[] = {"a", "b", "c"};
    make_folder(P("%s", "strat"), cls, 3, 100);
    put(P("%s/d/1.png", "strat"), "d1"); /* tiny classes */
    put(P("%s/d/2.png", "strat"), "d2");
    put(P("%s/d/3.png", "strat"), "d3");
    put(P("%s/e/1.png", "strat"), "e1");
    dn_dataset *x, *y, *z;
    CHECK(dn_dataset_scan(P("%s", "strat"), &x) == DN_OK);
    CHECK(dn_dataset_scan(P("%s", "strat"), &y) == DN_OK);
    CHECK(dn_dataset_scan(P("%s", "strat"), &z) == DN_OK);
    if (!x || !y || !z) return;
    dn_split_cfg cfg;
    dn_split_cfg_default(&cfg);
    CHECK(dn_dataset_split(x, &cfg) == DN_OK);
    CHECK(dn_dataset_split(y, &cfg) == DN_OK);
    cfg.seed = 7;
    CHECK(dn_dataset_split(z, &cfg) == DN_OK);
    int c[5];
    CHECK(dn_dataset_count(x, DN_SPLIT_TRAIN, c) == 70 * 3 + 1 + 1);
    CHECK(c[0] == 70 && c[1] == 70 && c[2] == 70 && c[3] == 1 && c[4] == 1);
    CHECK(dn_dataset_count(x, DN_SPLIT_VAL, c) == 45 + 1 && c[3] == 1 && c[4] == 0);
    CHECK(dn_dataset_count(x, DN_SPLIT_TEST, c) == 45 + 1 && c[3] == 1 && c[4] == 0);
    CHECK(same_split_assignment(x, y));  /* deterministic */
    CHECK(!same_split_assignment(x, z)); /* seed matters */
    dn_split_cfg bad = {0, 0.5, 0.5, 1};
    CHECK(dn_dataset_split(x, &bad) == DN_ERR_ARG);
    dn_dataset_free(x);
    dn_dataset_free(y);
    dn_dataset_free(z);
}

TEST(split_manifest_roundtrip) {
    const char *cls[] = {"ok", "scratch"};
    make_folder(P("%s/data", "rt"), cls, 2, 20);
    mk(P("%s/runs", "rt"));
    const char *man = P("%s/runs/split.csv", "rt");
    dn_split_cfg cfg;
    dn_split_cfg_default(&cfg);
    dn_dataset *a, *b;
    CHECK(dn_dataset_prepare(P("%s/data", "rt"), man, &cfg, 0, NULL, &a) == DN_OK);
    if (!a) return;
    /* written with paths relative to the manifest folder */
    FILE *f = fopen(man, "r");
    char line[512] = "";
    CHECK(f && fgets(line, sizeof line, f) && !strcmp(line, "path,label,split\n"));
    CHECK(f && fgets(line, sizeof line, f) && !strncmp(line, "../data/ok/img_000.png,ok,", 26));
    if (f) fclose(f);
    /* a second prepare with different data/seed reuses the manifest */
    cfg.seed = 99;
    CHECK(dn_dataset_prepare(NULL, man, &cfg, 0, NULL, &b) == DN_OK);
    if (!b) { dn_dataset_free(a); return; }
    CHECK(a->n == b->n && b->has_split && b->nclasses == 2);
    int same = a->n == b->n;
    for (int i = 0; same && i < a->n; i++) {
        char ra[PATH_MAX], rb[PATH_MAX];
        same = realpath(a->items[i].path, ra) && realpath(b->items[i].path, rb) && !strcmp(ra, rb) &&
               a->items[i].split == b->items[i].split && a->items[i].label == b->items[i].label;
    }
    CHECK(same);
    const char **paths;
    int *labels, n;
    CHECK(dn_dataset_select(b, DN_SPLIT_TEST, &paths, &labels, &n) == DN_OK);
    CHECK(n == 6 && labels[0] == 0 && labels[n - 1] == 1);
    free(paths);
    free(labels);
    dn_dataset_free(a);
    dn_dataset_free(b);
}

TEST(duplicates_across_splits) {
    put(P("%s/train/a/1.png", "dup"), "same bytes");
    put(P("%s/train/a/2.png", "dup"), "unique a2");
    put(P("%s/train/a/3.png", "dup"), "within");
    put(P("%s/train/a/4.png", "dup"), "within");
    put(P("%s/train/b/1.png", "dup"), "unique b1");
    put(P("%s/test/a/9.png", "dup"), "same bytes");
    put(P("%s/test/b/2.png", "dup"), "unique b2");
    dn_dataset *ds;
    CHECK(dn_dataset_scan(P("%s", "dup"), &ds) == DN_OK);
    if (!ds) return;
    char *buf = NULL;
    size_t len = 0;
    FILE *log = open_memstream(&buf, &len);
    int cross, within, dropped;
    CHECK(dn_dataset_dedup(ds, 0, log, &cross, &within, &dropped) == DN_OK);
    fflush(log);
    CHECK(cross == 1 && within == 1 && dropped == 0 && ds->n == 7);
    CHECK_MSG(buf && strstr(buf, "warning: duplicate content: ") && strstr(buf, "dup/train/a/1.png (train, a) == ") &&
                  strstr(buf, "dup/test/a/9.png (test, a)"), "%s", buf ? buf : "");
    CHECK(dn_dataset_dedup(ds, 1, log, &cross, &within, &dropped) == DN_OK);
    fclose(log);
    CHECK(cross == 1 && dropped == 1 && ds->n == 6);
    CHECK(dn_dataset_count(ds, DN_SPLIT_TEST, NULL) == 1); /* the test copy went */
    free(buf);
    dn_dataset_free(ds);
}

/* ------------------------------------------------------ real datasets */

TEST(real_neu_cls) {
    const char *sh = h_shared();
    if (!sh) SKIP("no ../shared datasets");
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/datasets/NEU-CLS", sh);
    dn_dataset *ds;
    CHECK(dn_dataset_scan(dir, &ds) == DN_OK);
    if (!ds) return;
    CHECK(ds->nclasses == 6 && ds->n == 1800);
    int c[6];
    dn_dataset_count(ds, DN_SPLIT_NONE, c);
    for (int i = 0; i < 6; i++) CHECK(c[i] == 300);
    const char *want[] = {"Cr", "In", "PS", "Pa", "RS", "Sc"};
    for (int i = 0; i < 6; i++) CHECK(!strcmp(ds->classes[i], want[i]));
    CHECK(dn_dataset_split(ds, NULL) == DN_OK);
    dn_dataset_count(ds, DN_SPLIT_TEST, c);
    for (int i = 0; i < 6; i++) CHECK(c[i] == 45);
    int cross, within, dropped;
    CHECK(dn_dataset_dedup(ds, 0, stdout, &cross, &within, &dropped) == DN_OK);
    printf("  NEU-CLS: 1 known duplicate pair -> cross-split %d, within-split %d\n", cross, within);
    CHECK(cross + within == 1);
    dn_dataset_free(ds);
}

TEST(real_deeppcb_official_split) {
    const char *sh = h_shared();
    if (!sh) SKIP("no ../shared datasets");
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/datasets/DeepPCB-crops", sh);
    dn_dataset *ds;
    CHECK(dn_dataset_scan(dir, &ds) == DN_OK);
    if (!ds) return;
    CHECK(ds->has_split && ds->nclasses == 6);
    CHECK(dn_dataset_count(ds, DN_SPLIT_TRAIN, NULL) == 6873);
    CHECK(dn_dataset_count(ds, DN_SPLIT_TEST, NULL) == 3140);
    char *buf = NULL;
    size_t len = 0;
    FILE *log = open_memstream(&buf, &len);
    int cross, within, dropped;
    CHECK(dn_dataset_dedup(ds, 1, log, &cross, &within, &dropped) == DN_OK);
    fclose(log);
    printf("  %s", buf ? buf : "");
    CHECK(cross == 1 && dropped == 1);
    CHECK(buf && strstr(buf, "train/pin-hole/00041077_03_366_64_398_96.png (train, pin-hole) == ") &&
          strstr(buf, "test/pin-hole/13000205_04_22_256_54_288.png (test, pin-hole)"));
    CHECK(dn_dataset_count(ds, DN_SPLIT_TEST, NULL) == 3139);
    free(buf);
    dn_dataset_free(ds);
}

TEST(real_neu64_duplicates) {
    const char *sh = h_shared();
    if (!sh) SKIP("no ../shared datasets");
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/datasets/NEU-CLS-64", sh);
    dn_dataset *ds;
    CHECK(dn_dataset_scan(dir, &ds) == DN_OK);
    if (!ds) return;
    CHECK(ds->n == 7226 && ds->nclasses == 9);
    int cross, within, dropped;
    CHECK(dn_dataset_dedup(ds, 0, NULL, &cross, &within, &dropped) == DN_OK);
    CHECK(cross == 0 && within == 7); /* 7 known byte-identical groups within classes */
    dn_dataset_free(ds);
}


TEST(prepare_checks_given_manifest) {
    put(P("%s/a.png", "pm"), "twin");
    put(P("%s/b.png", "pm"), "twin");
    put(P("%s/c.png", "pm"), "other");
    put(P("%s/split.csv", "pm"), "path,label,split\na.png,x,train\nc.png,y,train\nb.png,x,test\n");
    char *buf = NULL;
    size_t len = 0;
    FILE *log = open_memstream(&buf, &len);
    dn_dataset *ds;
    CHECK(dn_dataset_prepare(NULL, P("%s/split.csv", "pm"), NULL, 1, log, &ds) == DN_OK);
    fclose(log);
    CHECK(ds && ds->n == 2 && dn_dataset_count(ds, DN_SPLIT_TEST, NULL) == 0);
    CHECK_MSG(buf && strstr(buf, "pm/a.png (train, x) == ") && strstr(buf, "(1 dropped)"), "%s", buf ? buf : "");
    free(buf);
    dn_dataset_free(ds);
    /* a manifest without splits cannot serve as a split manifest */
    put(P("%s/nosplit.csv", "pm"), "path,label\na.png,x\nc.png,y\n");
    CHECK(dn_dataset_prepare(NULL, P("%s/nosplit.csv", "pm"), NULL, 0, NULL, &ds) == DN_ERR_FORMAT);
    CHECK(strstr(dn_last_error(), "nosplit.csv: split manifest has no 'split'") != NULL);
    CHECK(dn_dataset_prepare(NULL, P("%s/absent.csv", "pm"), NULL, 0, NULL, &ds) == DN_ERR_ARG);
}

/* ------------------------------------------------------------- synthetic */

TEST(synth_deterministic) {
    int n = 96;
    uint8_t *a = malloc(n * n), *b = malloc(n * n), *c = malloc(n * n);
    CHECK(dn_synth_render(4, n, 5, 3, a) == DN_OK);
    CHECK(dn_synth_render(4, n, 5, 3, b) == DN_OK);
    CHECK(memcmp(a, b, n * n) == 0);
    CHECK(dn_synth_render(4, n, 6, 3, c) == DN_OK); /* other seed */
    CHECK(memcmp(a, c, n * n) != 0);
    CHECK(dn_synth_render(4, n, 5, 4, c) == DN_OK); /* other index */
    CHECK(memcmp(a, c, n * n) != 0);
    CHECK(dn_synth_render(6, n, 5, 3, c) == DN_ERR_ARG);
    CHECK(dn_synth_render(0, 8, 5, 3, c) == DN_ERR_ARG);
    CHECK(dn_synth_num_classes() == 6 && !strcmp(dn_synth_class_name(0), "clean") && !dn_synth_class_name(6));
    free(a);
    free(b);
    free(c);
}

TEST(synth_write_scan_decode) {
    dn_synth_cfg cfg;
    dn_synth_cfg_default(&cfg);
    cfg.per_class = 5;
    cfg.size = 64;
    int written = 0;
    CHECK(dn_synth_write(P("%s/synth/data", "s"), &cfg, &written) == DN_OK);
    CHECK(written == 30);
    dn_dataset *ds;
    CHECK(dn_dataset_scan(P("%s/synth/data", "s"), &ds) == DN_OK);
    if (!ds) return;
    CHECK(ds->nclasses == 6 && ds->n == 30);
    for (int i = 0; i < 6; i++) CHECK(!strcmp(ds->classes[i], dn_synth_class_name(i)));
    /* the PNG holds exactly the rendered pixels (as R=G=B after decoding) */
    uint8_t px[64 * 64];
    CHECK(dn_synth_render(ds->items[7].label, 64, cfg.seed, 2, px) == DN_OK);
    dn_image im;
    CHECK(strstr(ds->items[7].path, "crack/crack_0002.png") != NULL);
    CHECK(dn_image_load(ds->items[7].path, &im) == DN_OK);
    int same = im.w == 64 && im.h == 64;
    for (int i = 0; same && i < 64 * 64; i++) same = im.data[3 * i] == px[i] && im.data[3 * i + 2] == px[i];
    CHECK(same);
    dn_image_free(&im);
    dn_dataset_free(ds);
    put(P("%s/synth/file", "s"), "x");
    CHECK(dn_synth_write(P("%s/synth/file/sub", "s"), &cfg, &written) == DN_ERR_IO);
    CHECK(strstr(dn_last_error(), "synth/file") != NULL);
    cfg.size = 5;
    CHECK(dn_synth_write(P("%s/synth/x", "s"), &cfg, &written) == DN_ERR_ARG);
}

/* Learnability smoke check: classes must be separable even by a crude
 * nearest-centroid classifier on intensity-deviation features (a ResNet has
 * far more to work with). Features: quantiles of (pixel - image median), the
 * fraction of strongly dark/bright pixels and of strong local gradients. */
static void synth_features(const uint8_t *px, int n, double *f) {
    int hist[256] = {0};
    for (int i = 0; i < n * n; i++) hist[px[i]]++;
    int cum = 0, med = 0;
    for (; med < 256; med++) if ((cum += hist[med]) >= n * n / 2) break;
    const double qs[] = {0.001, 0.01, 0.05, 0.95, 0.99, 0.999};
    for (int q = 0; q < 6; q++) {
        int target = (int)(qs[q] * n * n), c = 0, v = 0;
        for (; v < 256; v++) if ((c += hist[v]) > target) break;
        f[q] = (v - med) / 50.0;
    }
    int dark = 0, bright = 0, grad = 0;
    for (int y = 1; y < n - 1; y++)
        for (int x = 1; x < n - 1; x++) {
            int v = px[y * n + x];
            dark += v < med - 35;
            bright += v > med + 35;
            int gx = px[y * n + x + 1] - px[y * n + x - 1], gy = px[(y + 1) * n + x] - px[(y - 1) * n + x];
            grad += gx * gx + gy * gy > 40 * 40;
        }
    f[6] = 20.0 * dark / (n * n);
    f[7] = 20.0 * bright / (n * n);
    f[8] = 50.0 * grad / (n * n);
}

TEST(synth_classes_separable) {
    enum { N = 64, TRAIN = 15, TEST = 15, F = 9, C = 6 };
    double cent[C][F] = {{0}}, f[F];
    uint8_t px[N * N];
    for (int c = 0; c < C; c++)
        for (int i = 0; i < TRAIN; i++) {
            CHECK(dn_synth_render(c, N, 11, i, px) == DN_OK);
            synth_features(px, N, f);
            for (int k = 0; k < F; k++) cent[c][k] += f[k] / TRAIN;
        }
    int correct = 0;
    for (int c = 0; c < C; c++)
        for (int i = TRAIN; i < TRAIN + TEST; i++) {
            CHECK(dn_synth_render(c, N, 11, i, px) == DN_OK);
            synth_features(px, N, f);
            int best = 0;
            double bd = 1e30;
            for (int d = 0; d < C; d++) {
                double s = 0;
                for (int k = 0; k < F; k++) s += (f[k] - cent[d][k]) * (f[k] - cent[d][k]);
                if (s < bd) { bd = s; best = d; }
            }
            correct += best == c;
        }
    printf("  nearest-centroid accuracy on synthetic classes: %d/%d (chance %d)\n", correct, C * TEST, TEST);
    CHECK(correct >= C * TEST / 2);
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/dn_dstest_XXXXXX");
    if (!mkdtemp(root)) { perror("mkdtemp"); return 1; }
    RUN(natural_order);
    RUN(collect_images);
    RUN(scan_natural_classes);
    RUN(scan_official_split);
    RUN(bad_empty_folder);
    RUN(bad_single_class);
    RUN(bad_missing_folder);
    RUN(manifest_read);
    RUN(bad_manifest_missing_files);
    RUN(bad_manifest_format);
    RUN(stratified_split);
    RUN(split_manifest_roundtrip);
    RUN(duplicates_across_splits);
    RUN(prepare_checks_given_manifest);
    RUN(synth_deterministic);
    RUN(synth_write_scan_decode);
    RUN(synth_classes_separable);
    RUN(real_neu_cls);
    RUN(real_deeppcb_official_split);
    RUN(real_neu64_duplicates);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) printf("could not remove %s\n", root);
    return REPORT();
}
