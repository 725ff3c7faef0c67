/* Manufacturing report (src/serve/mreport*.c): p-chart control limits against a
 * hand computation, every --group-by key, local days and shifts in a time zone
 * (including a DST change), fixed offsets, bad options named, thumbnails of the
 * newest stored defects, and the HTML page rendered by headless chromium (DOM
 * checks + screenshot, kept in $DN_KEEP_REPORT if set, for a human look). */
#include "harness.h"
#include "serve_util.h"
#include "core/core.h"
#include "core/json.h"
#include "core/tz.h"
#include "eval/report.h"
#include "serve/mreport.h"
#include "serve/store.h"
#include <unistd.h>

static const char *SHA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char *MSHA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static int put(dn_store *s, double t, const char *line, const char *station, const char *camera, const char *ver,
               const char *cls, int unc, const char *copy) {
    dn_pred_record r = {0};
    r.time = t;
    r.line = line;
    r.station = station;
    r.camera = camera;
    r.part = "P";
    r.source = "http";
    r.image_sha256 = SHA;
    r.image_copy = copy;
    r.model_sha256 = MSHA;
    r.model_version = ver;
    r.cls = cls;
    r.confidence = 0.93f;
    r.scores_json = "{}";
    r.uncertain = unc;
    int64_t id;
    return dn_store_insert(s, &r, &id, NULL) == DN_OK ? 0 : -1;
}

/* 3 lines x 10 days from 2024-03-25 (DST starts 2024-03-31 in Europe), 40 parts a
 * day each; line A has a defect spike on day 6; a few stored defect images. */
static dn_store *make_db(char *dir, size_t n, int *npred) {
    if (h_tmpdir(dir, n, "mreport")) return NULL;
    char url[400], img[400];
    snprintf(url, sizeof url, "sqlite:%s/r.db", dir);
    dn_store *s = NULL;
    if (dn_store_open(url, &s)) return NULL;
    /* one real image for thumbnails */
    snprintf(img, sizeof img, "%s/img.ppm", dir);
    FILE *f = fopen(img, "wb");
    if (!f) return NULL;
    fprintf(f, "P6\n24 16\n255\n");
    for (int i = 0; i < 24 * 16; i++) fputc(i * 7 & 255, f), fputc(200, f), fputc(i & 255, f);
    fclose(f);
    const double day0 = 1711324800; /* 2024-03-25T00:00:00Z */
    const char *lines[3] = {"A", "B", "C & <D>"}, *cls[4] = {"ok", "scratch", "dent", "spot"};
    int k = 0;
    *npred = 0;
    for (int d = 0; d < 10; d++)
        for (int l = 0; l < 3; l++)
            for (int i = 0; i < 40; i++) {
                double t = day0 + d * 86400 + 3600 * 5 + i * 1800; /* 05:00..00:30 UTC */
                int defect = (i % 10 == 0) || (l == 0 && d == 6 && i % 2 == 0);
                const char *c = defect ? cls[1 + (k++ % 3)] : "ok";
                const char *copy = defect && d >= 8 ? (l == 1 ? "/nonexistent/x.png" : img) : NULL;
                if (put(s, t, lines[l], l == 2 ? "st2" : "st1", i % 2 ? "cam1" : "cam0", d < 5 ? "v1" : "v2", c,
                        i % 13 == 0, copy)) { dn_store_close(s); return NULL; }
                (*npred)++;
            }
    return s;
}

static dn_json *render_json(dn_store *s, dn_mreport_opts *o) {
    dn_mreport *r = NULL;
    if (dn_mreport_build(s, o, &r)) { printf("  build: %s\n", dn_last_error()); return NULL; }
    dn_sb b = {0};
    dn_json *j = NULL;
    if (dn_mreport_render(r, "json", &b) == DN_OK) j = dn_json_parse(b.s, b.len, NULL, 0);
    dn_sb_free(&b);
    dn_mreport_free(r);
    return j;
}

static const dn_json *find_key(const dn_json *arr, const char *field, const char *val) {
    for (size_t i = 0; i < dn_json_len(arr); i++)
        if (!strcmp(dn_json_str(dn_json_get(dn_json_at(arr, i), field), ""), val)) return dn_json_at(arr, i);
    return NULL;
}

TEST(pchart_limits_by_hand) {
    char dir[256];
    int np = 0;
    dn_store *s = make_db(dir, sizeof dir, &np);
    CHECK(s != NULL);
    if (!s) return;
    dn_mreport_opts o = {0};
    dn_json *j = render_json(s, &o);
    CHECK(j != NULL);
    if (j) {
        CHECK(dn_json_num(dn_json_get(j, "total"), -1) == np);
        CHECK(!strcmp(dn_json_str(dn_json_get(j, "series_unit"), ""), "day"));
        const dn_json *a = find_key(dn_json_get(j, "pchart"), "line", "A");
        CHECK(a != NULL);
        /* line A: 4 defects a day (i%10==0), day 6 has 20 even i -> 20 + 0 extra (i%10==0 already even) = 20 */
        double pbar = (9 * 4 + 20) / 400.0;
        CHECK_NEAR(dn_json_num(dn_json_get(a, "p_bar"), -1), pbar, 1e-6);
        const dn_json *pts = dn_json_get(a, "points");
        CHECK(dn_json_len(pts) == 10 || dn_json_len(pts) == 11); /* UTC days: 00:30 rolls into the next day */
        int nout = 0;
        for (size_t i = 0; i < dn_json_len(pts); i++) {
            const dn_json *p = dn_json_at(pts, i);
            double n = dn_json_num(dn_json_get(p, "n"), 0), sd = sqrt(pbar * (1 - pbar) / n);
            CHECK_NEAR(dn_json_num(dn_json_get(p, "ucl"), -1), fmin(1, pbar + 3 * sd), 1e-6);
            CHECK_NEAR(dn_json_num(dn_json_get(p, "lcl"), -1), fmax(0, pbar - 3 * sd), 1e-6);
            nout += dn_json_bool(dn_json_get(p, "out_of_control"), 0);
        }
        /* the spike day (2024-03-31) is out of control, no other day is */
        const dn_json *spike = find_key(pts, "bucket", "2024-03-31");
        CHECK(spike && dn_json_bool(dn_json_get(spike, "out_of_control"), 0));
        CHECK_MSG(nout == 1, "%d points out of control", nout);
        const dn_json *b = find_key(dn_json_get(j, "pchart"), "line", "B");
        for (size_t i = 0; b && i < dn_json_len(dn_json_get(b, "points")); i++)
            CHECK(!dn_json_bool(dn_json_get(dn_json_at(dn_json_get(b, "points"), i), "out_of_control"), 1));
        dn_json_free(j);
    }
    dn_store_close(s);
    h_rmrf(dir);
}

/* Without --ok-classes a class is ok when its name means a good part, with the
 * rule eval uses for the good class (any case, separators): "OK" and
 * "Defect-Free" are ok, "okish" and "scratch" are defects. */
TEST(default_ok_classes_follow_the_good_class_rule) {
    char dir[256], url[400];
    if (h_tmpdir(dir, sizeof dir, "mreport_ok")) { CHECK(0); return; }
    snprintf(url, sizeof url, "sqlite:%s/r.db", dir);
    dn_store *s = NULL;
    CHECK(dn_store_open(url, &s) == DN_OK);
    if (!s) return;
    const char *cls[] = {"OK", "Defect-Free", "okish", "scratch", "OK"};
    for (int i = 0; i < 5; i++) CHECK(put(s, 1711324800 + i * 60, "A", "st1", "cam0", "v1", cls[i], 0, NULL) == 0);
    dn_mreport_opts o = {0};
    dn_json *j = render_json(s, &o);
    CHECK_MSG(j && dn_json_num(dn_json_get(j, "defects"), -1) == 2, "defects %g",
              j ? dn_json_num(dn_json_get(j, "defects"), -1) : -1);
    dn_json_free(j);
    o.ok_classes = "OK,scratch"; /* a given list is taken literally */
    j = render_json(s, &o);
    CHECK(j && dn_json_num(dn_json_get(j, "defects"), -1) == 2);
    dn_json_free(j);
    dn_store_close(s);
    h_rmrf(dir);
}

TEST(group_by_every_key) {
    char dir[256];
    int np = 0;
    dn_store *s = make_db(dir, sizeof dir, &np);
    if (!s) { CHECK(0); return; }
    struct { const char *by; int ngroups; const char *key; } want[] = {
        {"line", 3, "C & <D>"}, {"station", 2, "st2"}, {"camera", 2, "cam1"}, {"model_version", 2, "v2"},
        {"decision", 2, "uncertain"}, {"class", 4, "dent"}, {"day", 11, "2024-03-25"}, {"shift", 31, "2024-03-25 S1 06:00"}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        dn_mreport_opts o = {0};
        o.group_by = want[i].by;
        dn_json *j = render_json(s, &o);
        CHECK(j != NULL);
        if (!j) continue;
        const dn_json *g = dn_json_get(j, "groups");
        CHECK_MSG((int)dn_json_len(g) == want[i].ngroups, "%s: %zu groups", want[i].by, dn_json_len(g));
        CHECK_MSG(find_key(g, "key", want[i].key), "%s: no group '%s'", want[i].by, want[i].key);
        double sum = 0;
        for (size_t k = 0; k < dn_json_len(g); k++) sum += dn_json_num(dn_json_get(dn_json_at(g, k), "total"), 0);
        CHECK(sum == np);
        dn_json_free(j);
    }
    dn_store_close(s);
    h_rmrf(dir);
}

/* Local days and shifts: Europe/Berlin is UTC+1 before 2024-03-31 02:00 and UTC+2 after. */
TEST(time_zone_days_and_shifts) {
    dn_tz tz;
    CHECK(dn_tz_load("UTC", &tz) == DN_OK && dn_tz_offset(&tz, 1e9) == 0);
    dn_tz_free(&tz);
    CHECK(dn_tz_load("+05:30", &tz) == DN_OK && dn_tz_offset(&tz, 1e9) == 19800);
    CHECK(dn_tz_load("-0800", &tz) == DN_OK && dn_tz_offset(&tz, 1e9) == -28800);
    CHECK(dn_tz_load("Mars/Olympus", &tz) == DN_ERR_ARG && strstr(dn_last_error(), "Mars/Olympus"));
    CHECK(dn_tz_load("../etc/passwd", &tz) == DN_ERR_ARG);
    if (access("/usr/share/zoneinfo/Europe/Berlin", R_OK) != 0) SKIP("no zoneinfo (Debian package tzdata)");
    CHECK(dn_tz_load("Europe/Berlin", &tz) == DN_OK);
    CHECK(dn_tz_offset(&tz, 1711846800 - 1) == 3600);  /* 2024-03-31T00:59:59Z */
    CHECK(dn_tz_offset(&tz, 1711846800) == 7200);      /* 01:00Z = 03:00 CEST */
    CHECK(dn_tz_offset(&tz, 1704067200) == 3600);      /* January */
    dn_tz_free(&tz);
    char dir[256];
    int np = 0;
    dn_store *s = make_db(dir, sizeof dir, &np);
    if (!s) { CHECK(0); return; }
    /* UTC: 05:00..00:30 -> 11 days (the 00:00/00:30 parts spill into the next day); Berlin:
     * 06:00/07:00..01:30/02:30 local -> still 11 days, but the day's counts shift */
    dn_mreport_opts o = {0};
    o.group_by = "day";
    o.tz = "Europe/Berlin";
    dn_json *j = render_json(s, &o);
    CHECK(j && !strcmp(dn_json_str(dn_json_get(j, "tz"), ""), "Europe/Berlin"));
    const dn_json *g = j ? dn_json_get(j, "groups") : NULL;
    /* local day 2024-03-25: parts at 06:00..23:30 local = i 0..35 before midnight (UTC+1: 05:00Z + i*30min < 23:00Z) */
    const dn_json *d25 = find_key(g, "key", "2024-03-25");
    CHECK_MSG(d25 && dn_json_num(dn_json_get(d25, "total"), 0) == 3 * 36, "%g", d25 ? dn_json_num(dn_json_get(d25, "total"), 0) : -1);
    /* after DST (UTC+2): i 0..37 of 2024-04-01 fall before local midnight (22:00Z) -> 34 + the 2 of the day before */
    const dn_json *d01 = find_key(g, "key", "2024-04-01");
    CHECK_MSG(d01 && dn_json_num(dn_json_get(d01, "total"), 0) == 3 * (34 + 6), "%g", d01 ? dn_json_num(dn_json_get(d01, "total"), 0) : -1);
    CHECK(j && strstr(dn_json_str(dn_json_get(j, "from"), "x"), "x")); /* unbounded: null -> default */
    dn_json_free(j);
    /* shifts by local start hours: 05:00Z on 2024-03-25 is 06:00 local, the first part of S1 */
    o.group_by = "shift";
    j = render_json(s, &o);
    g = j ? dn_json_get(j, "groups") : NULL;
    const dn_json *s1 = find_key(g, "key", "2024-03-25 S1 06:00");
    CHECK(s1 && dn_json_num(dn_json_get(s1, "total"), 0) == 3 * 16); /* 06:00..13:30 */
    dn_json_free(j);
    /* bad options are named before anything is read */
    dn_mreport_opts bad = {0};
    bad.tz = "Nowhere/Atlantis";
    dn_mreport *r = NULL;
    CHECK(dn_mreport_build(s, &bad, &r) == DN_ERR_ARG && strstr(dn_last_error(), "Nowhere/Atlantis") && !r);
    bad.tz = NULL;
    bad.group_by = "week";
    CHECK(dn_mreport_check(&bad) == DN_ERR_ARG && strstr(dn_last_error(), "week"));
    dn_store_close(s);
    h_rmrf(dir);
}

static int count_substr(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* The page in chromium: 3 p-charts + series + pareto, the out-of-control point, the
 * recent-defect thumbnails, escaped names; a screenshot with painted charts. */
TEST(html_in_chromium) {
    char dir[256];
    int np = 0;
    dn_store *s = make_db(dir, sizeof dir, &np);
    if (!s) { CHECK(0); return; }
    dn_mreport_opts o = {0};
    o.group_by = "line";
    o.tz = "+01:00";
    o.title = "Plant 7 <weekly>";
    dn_mreport *r = NULL;
    CHECK(dn_mreport_build(s, &o, &r) == DN_OK);
    dn_sb b = {0};
    CHECK(r && dn_mreport_render(r, "html", &b) == DN_OK);
    dn_mreport_free(r);
    dn_store_close(s);
    if (!b.s) { h_rmrf(dir); return; }
    CHECK(!strstr(b.s, "<script") && !strstr(b.s, "href=") && !strstr(b.s, "url("));
    CHECK(!strstr(b.s, "C & <D>") && strstr(b.s, "C &amp; &lt;D&gt;") && strstr(b.s, "Plant 7 &lt;weekly&gt;"));
    /* thumbnails: every src= is an inline PNG; 2 lines x 10 readable copies, newest 12 kept,
     * line B's copies are unreadable and named as such */
    CHECK(count_substr(b.s, "src=") == count_substr(b.s, "src=\"data:image/png;base64,"));
    char html[300], dom[300], png[300], cmd[2400];
    snprintf(html, sizeof html, "%s/report.html", dir);
    snprintf(dom, sizeof dom, "%s/dom.html", dir);
    snprintf(png, sizeof png, "%s/shot.png", dir);
    FILE *f = fopen(html, "wb");
    if (f) { fwrite(b.s, 1, b.len, f); fclose(f); }
    int nimg = count_substr(b.s, "data:image/png;base64,"), nbad = count_substr(b.s, "image not readable");
    CHECK_MSG(nimg + nbad == 12 && nimg >= 1 && nbad >= 1, "%d thumbnails, %d unreadable", nimg, nbad);
    dn_sb_free(&b);
    if (access("/usr/bin/chromium", X_OK) != 0) { h_rmrf(dir); SKIP("chromium not installed (Debian package chromium)"); }
    const char *flags = "--headless --no-sandbox --disable-gpu --disable-background-networking "
                        "--disable-component-update --disable-sync --no-first-run --disable-dev-shm-usage";
    snprintf(cmd, sizeof cmd, "cd %s && timeout 120 chromium %s --user-data-dir=%s/prof1 --dump-dom file://%s > %s 2>/dev/null",
             dir, flags, dir, html, dom);
    CHECK(system(cmd) == 0);
    uint8_t *d = NULL;
    size_t dl = 0;
    CHECK(dn_read_file(dom, 1 << 26, &d, &dl) == DN_OK);
    if (d) {
        char *t = realloc(d, dl + 1);
        t[dl] = 0;
        CHECK_MSG(count_substr(t, "<svg") == 3 + 2 + 1, "svg count %d", count_substr(t, "<svg")); /* p-charts, series, pareto, drift */
        CHECK(count_substr(t, "id=\"chart-drift\"") == 1 && count_substr(t, "class=\"drift-line\"") == 3);
        CHECK(count_substr(t, "class=\"pchart") == 3 || count_substr(t, "class=\"chart pchart\"") == 3);
        CHECK_MSG(count_substr(t, "class=\"point out\"") == 1, "%d red points", count_substr(t, "class=\"point out\""));
        CHECK(strstr(t, "id=\"kpi-out\">1<") && strstr(t, "id=\"kpi-total\">1200<"));
        CHECK(strstr(t, "id=\"recent-defects\""));
        free(t);
    }
    snprintf(cmd, sizeof cmd, "cd %s && timeout 120 chromium %s --user-data-dir=%s/prof2 --window-size=1100,2600 "
             "--screenshot=%s file://%s >/dev/null 2>&1", dir, flags, dir, png, html);
    CHECK(system(cmd) == 0);
    dn_image shot = {0};
    CHECK(dn_image_load(png, &shot) == DN_OK);
    long red = 0, coloured = 0;
    for (long i = 0; shot.data && i < (long)shot.w * shot.h; i++) {
        const uint8_t *q = shot.data + 3 * i;
        int mx = q[0] > q[1] ? q[0] : q[1], mn = q[0] < q[1] ? q[0] : q[1];
        mx = mx > q[2] ? mx : q[2];
        mn = mn < q[2] ? mn : q[2];
        coloured += mx - mn > 40;
        red += q[0] > 170 && q[1] < 90 && q[2] < 90;
    }
    printf("  screenshot %dx%d: %ld coloured, %ld red pixels\n", shot.w, shot.h, coloured, red);
    CHECK(coloured > 20000 && red > 30);
    dn_image_free(&shot);
    const char *keep = getenv("DN_KEEP_REPORT");
    if (keep && *keep) {
        snprintf(cmd, sizeof cmd, "cp %s %s.png && cp %s %s.html", png, keep, html, keep);
        CHECK(system(cmd) == 0);
    }
    h_rmrf(dir);
}

int main(void) {
    RUN(pchart_limits_by_hand);
    RUN(group_by_every_key);
    RUN(default_ok_classes_follow_the_good_class_rule);
    RUN(time_zone_days_and_shifts);
    RUN(html_in_chromium);
    return REPORT();
}
