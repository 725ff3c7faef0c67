/* Synthetic defect images; see synth.h for the classes and contracts.
 * Rendering works on a float canvas in [0, 255]: a metal-like background
 * (illumination gradient + multi-octave value noise + rolling streaks + grain),
 * then the class's defect added as intensity deltas with soft profiles, then
 * rounding and clipping to uint8. */
#include "io/synth.h"
#include "core/core.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

enum { C_CLEAN, C_CRACK, C_INCLUSION, C_PATCH, C_SCRATCH, C_SPOT, C_COUNT };
static const char *const class_names[C_COUNT] = {"clean", "crack", "inclusion", "patch", "scratch", "spot"};

int dn_synth_num_classes(void) { return C_COUNT; }
const char *dn_synth_class_name(int cls) { return cls >= 0 && cls < C_COUNT ? class_names[cls] : NULL; }

void dn_synth_cfg_default(dn_synth_cfg *c) {
    c->per_class = 100;
    c->size = 128;
    c->seed = 1;
}

static double U(dn_rng *r, double a, double b) { return a + (b - a) * dn_rng_uniform(r); }
static double sgn(dn_rng *r, double p_neg) { return dn_rng_uniform(r) < p_neg ? -1.0 : 1.0; }

typedef struct {
    float *f;
    int n; /* side */
} canvas;

/* ------------------------------------------------------------- background */

static double smooth(double t) { return t * t * (3 - 2 * t); }

/* Adds amp * value noise with lattice spacing `cell` pixels. */
static void add_value_noise(canvas *c, dn_rng *r, double cell, double amp) {
    int g = (int)(c->n / cell) + 2;
    float *lat = dn_malloc(sizeof(float) * (size_t)g * g);
    if (!lat) return; /* background detail only; skipping it keeps the image valid */
    for (int i = 0; i < g * g; i++) lat[i] = (float)(dn_rng_uniform(r) * 2 - 1);
    for (int y = 0; y < c->n; y++) {
        double fy = y / cell;
        int iy = (int)fy;
        double ty = smooth(fy - iy);
        for (int x = 0; x < c->n; x++) {
            double fx = x / cell;
            int ix = (int)fx;
            double tx = smooth(fx - ix);
            double a = lat[iy * g + ix], b = lat[iy * g + ix + 1];
            double d = lat[(iy + 1) * g + ix], e = lat[(iy + 1) * g + ix + 1];
            double v = (a + (b - a) * tx) * (1 - ty) + (d + (e - d) * tx) * ty;
            c->f[y * c->n + x] += (float)(amp * v);
        }
    }
    free(lat);
}

/* Rolling streaks: 1-D noise across the rolling direction theta. */
static void add_streaks(canvas *c, dn_rng *r, double theta, double period, double amp) {
    int m = (int)(c->n * 1.5 / period) + 4;
    float *v = dn_malloc(sizeof(float) * (size_t)m);
    if (!v) return;
    for (int i = 0; i < m; i++) v[i] = (float)(dn_rng_uniform(r) * 2 - 1);
    double s = sin(theta), co = cos(theta), half = c->n / 2.0;
    for (int y = 0; y < c->n; y++)
        for (int x = 0; x < c->n; x++) {
            double t = (-(x - half) * s + (y - half) * co) / period + m / 2.0;
            if (t < 0) t = 0;
            if (t > m - 2) t = m - 2;
            int i = (int)t;
            double w = smooth(t - i);
            c->f[y * c->n + x] += (float)(amp * (v[i] + (v[i + 1] - v[i]) * w));
        }
    free(v);
}

static void background(canvas *c, dn_rng *r, double *roll_theta) {
    int n = c->n;
    double base = U(r, 95, 165), gx = U(r, -14, 14), gy = U(r, -14, 14);
    for (int y = 0; y < n; y++)
        for (int x = 0; x < n; x++) c->f[y * n + x] = (float)(base + gx * (x - n / 2.0) / n + gy * (y - n / 2.0) / n);
    add_value_noise(c, r, n / 3.0, U(r, 6, 12));
    add_value_noise(c, r, n / 9.0, U(r, 3, 6));
    double theta = (dn_rng_uniform(r) < 0.5 ? 0 : M_PI / 2) + U(r, -0.12, 0.12);
    *roll_theta = theta;
    add_streaks(c, r, theta, U(r, 1.5, 4.0), U(r, 3, 8));
    double grain = U(r, 2.5, 6.0);
    for (int i = 0; i < n * n; i++) c->f[i] += (float)(grain * dn_rng_normal(r));
}

/* ----------------------------------------------------------------- shapes */

/* Stroke mask: m = max(m, weight * exp(-(d / width)^2)) around segment a-b,
 * d the distance to the segment. Max-combining keeps the joints of a polyline
 * from getting darker than its segments. */
static void stroke_segment(canvas *m, double ax, double ay, double bx, double by, double width, double weight) {
    double reach = width * 3 + 1;
    int x0 = (int)floor(fmin(ax, bx) - reach), x1 = (int)ceil(fmax(ax, bx) + reach);
    int y0 = (int)floor(fmin(ay, by) - reach), y1 = (int)ceil(fmax(ay, by) + reach);
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > m->n - 1) x1 = m->n - 1;
    if (y1 > m->n - 1) y1 = m->n - 1;
    double dx = bx - ax, dy = by - ay, len2 = dx * dx + dy * dy;
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) {
            double t = len2 > 0 ? ((x - ax) * dx + (y - ay) * dy) / len2 : 0;
            if (t < 0) t = 0;
            if (t > 1) t = 1;
            double ex = ax + t * dx - x, ey = ay + t * dy - y, d = sqrt(ex * ex + ey * ey) / width;
            float v = (float)(weight * exp(-d * d));
            float *px = &m->f[y * m->n + x];
            if (v > *px) *px = v;
        }
}

static void apply_mask(canvas *c, const canvas *m, double delta) {
    for (int i = 0; i < c->n * c->n; i++) c->f[i] += (float)(delta * m->f[i]);
}

/* Elliptical soft blob: semi-axes a (along theta) and b, profile exp(-r^k). */
static void add_blob(canvas *c, double cx, double cy, double a, double b, double theta, double k, double delta) {
    double reach = fmax(a, b) * 2.5 + 1;
    int x0 = (int)fmax(0, cx - reach), x1 = (int)fmin(c->n - 1, cx + reach);
    int y0 = (int)fmax(0, cy - reach), y1 = (int)fmin(c->n - 1, cy + reach);
    double s = sin(theta), co = cos(theta);
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) {
            double u = ((x - cx) * co + (y - cy) * s) / a, v = (-(x - cx) * s + (y - cy) * co) / b;
            double r2 = u * u + v * v;
            c->f[y * c->n + x] += (float)(delta * exp(-pow(r2, k / 2)));
        }
}

/* ---------------------------------------------------------------- defects */

static void scratch(canvas *c, canvas *m, dn_rng *r) {
    int n = c->n, lines = 1 + (int)dn_rng_below(r, 3);
    double theta = U(r, 0, M_PI), delta = sgn(r, 0.35) * U(r, 45, 85);
    double cx = U(r, 0.25, 0.75) * n, cy = U(r, 0.25, 0.75) * n;
    for (int k = 0; k < lines; k++) {
        double th = theta + U(r, -0.08, 0.08), len = U(r, 0.5, 0.95) * n;
        double hx = cos(th) * len / 2, hy = sin(th) * len / 2, w = U(r, 0.7, 1.6);
        /* sub-segments of varying depth along the scratch */
        int parts = 6;
        for (int i = 0; i < parts; i++) {
            double t0 = (double)i / parts, t1 = (double)(i + 1) / parts;
            stroke_segment(m, cx - hx + 2 * hx * t0, cy - hy + 2 * hy * t0, cx - hx + 2 * hx * t1,
                           cy - hy + 2 * hy * t1, w, U(r, 0.75, 1.0));
        }
        /* parallel companions, a few pixels apart */
        cx += -sin(th) * U(r, 3, 0.12 * n) * sgn(r, 0.5);
        cy += cos(th) * U(r, 3, 0.12 * n) * sgn(r, 0.5);
    }
    apply_mask(c, m, delta);
}

static void crack_walk(canvas *m, dn_rng *r, double x, double y, double th, double len, double w, double weight,
                       int depth) {
    double step = 3.0;
    int steps = (int)(len / step);
    for (int i = 0; i < steps; i++) {
        th += 0.45 * dn_rng_normal(r);
        double nx = x + step * cos(th), ny = y + step * sin(th);
        stroke_segment(m, x, y, nx, ny, w, weight);
        x = nx;
        y = ny;
        if (depth < 2 && dn_rng_uniform(r) < 0.06)
            crack_walk(m, r, x, y, th + sgn(r, 0.5) * U(r, 0.5, 1.2), len * U(r, 0.2, 0.4), w * 0.8, weight * 0.8,
                       depth + 1);
    }
}

static void crack(canvas *c, canvas *m, dn_rng *r) {
    int n = c->n;
    double th = U(r, 0, 2 * M_PI), len = U(r, 0.45, 0.85) * n;
    double x = n / 2.0 - cos(th) * len / 2 + U(r, -0.15, 0.15) * n;
    double y = n / 2.0 - sin(th) * len / 2 + U(r, -0.15, 0.15) * n;
    crack_walk(m, r, x, y, th, len, U(r, 0.7, 1.3), 1.0, 0);
    apply_mask(c, m, -U(r, 55, 95));
}

static void inclusion(canvas *c, dn_rng *r, double roll) {
    int n = c->n, k = 3 + (int)dn_rng_below(r, 7);
    double cx = U(r, 0.25, 0.75) * n, cy = U(r, 0.25, 0.75) * n;
    double spread_a = U(r, 0.1, 0.25) * n, spread_b = U(r, 0.03, 0.08) * n;
    double delta = sgn(r, 0.75) * U(r, 45, 80);
    for (int i = 0; i < k; i++) {
        double u = spread_a * (dn_rng_uniform(r) * 2 - 1), v = spread_b * (dn_rng_uniform(r) * 2 - 1);
        double x = cx + u * cos(roll) - v * sin(roll), y = cy + u * sin(roll) + v * cos(roll);
        double a = U(r, 0.03, 0.08) * n, b = a / U(r, 3, 8);
        if (b < 0.8) b = 0.8;
        add_blob(c, x, y, a, b, roll + U(r, -0.15, 0.15), 2, delta * U(r, 0.7, 1.0));
    }
}

static void patch(canvas *c, dn_rng *r) {
    int n = c->n, k = 2 + (int)dn_rng_below(r, 3);
    double cx = U(r, 0.3, 0.7) * n, cy = U(r, 0.3, 0.7) * n, delta = sgn(r, 0.6) * U(r, 40, 70);
    float *m = dn_calloc((size_t)n * n, sizeof(float));
    if (!m) return;
    canvas mc = {m, n};
    for (int i = 0; i < k; i++) {
        double rad = U(r, 0.12, 0.25) * n;
        add_blob(&mc, cx + U(r, -0.15, 0.15) * n, cy + U(r, -0.15, 0.15) * n, rad * U(r, 0.7, 1.4), rad,
                 U(r, 0, M_PI), 2, 1.0);
    }
    add_value_noise(&mc, r, n / 10.0, 0.25); /* ragged border */
    double thr = U(r, 0.45, 0.6);
    for (int i = 0; i < n * n; i++) {
        double t = (m[i] - thr) / 0.12 + 0.5; /* soft edge */
        t = t < 0 ? 0 : t > 1 ? 1 : smooth(t);
        c->f[i] += (float)(delta * t);
    }
    free(m);
}

static void spot(canvas *c, dn_rng *r) {
    int n = c->n, k = 1 + (int)dn_rng_below(r, 4);
    for (int i = 0; i < k; i++) {
        double rad = U(r, 0.035, 0.09) * n;
        add_blob(c, U(r, 0.15, 0.85) * n, U(r, 0.15, 0.85) * n, rad * U(r, 0.8, 1.25), rad, U(r, 0, M_PI), 4,
                 -U(r, 55, 100));
    }
}

dn_status dn_synth_render(int cls, int size, uint64_t seed, int index, uint8_t *px) {
    if (cls < 0 || cls >= C_COUNT) return dn_fail(DN_ERR_ARG, "synth: class %d out of range", cls);
    if (size < DN_SYNTH_MIN_SIZE || size > DN_SYNTH_MAX_SIZE)
        return dn_fail(DN_ERR_ARG, "synth: size %d outside %d..%d", size, DN_SYNTH_MIN_SIZE, DN_SYNTH_MAX_SIZE);
    canvas c = {dn_malloc(sizeof(float) * (size_t)size * size), size};
    canvas m = {dn_calloc((size_t)size * size, sizeof(float)), size}; /* stroke mask */
    if (!c.f || !m.f) { free(c.f); free(m.f); return DN_ERR_NOMEM; }
    dn_rng r;
    dn_rng_seed(&r, seed * 0x9E3779B97F4A7C15ull ^ (uint64_t)(cls + 1) * 0xC2B2AE3D27D4EB4Full ^
                        (uint64_t)(index + 1) * 0x165667B19E3779F9ull);
    double roll;
    background(&c, &r, &roll);
    switch (cls) {
    case C_CRACK: crack(&c, &m, &r); break;
    case C_INCLUSION: inclusion(&c, &r, roll); break;
    case C_PATCH: patch(&c, &r); break;
    case C_SCRATCH: scratch(&c, &m, &r); break;
    case C_SPOT: spot(&c, &r); break;
    default: break;
    }
    for (int i = 0; i < size * size; i++) {
        float v = roundf(c.f[i]);
        px[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
    free(c.f);
    free(m.f);
    return DN_OK;
}

/* -------------------------------------------------------------- PNG write */

typedef struct { char msg[200]; } png_werr;

static void png_w_error(png_structp p, png_const_charp msg) {
    png_werr *e = png_get_error_ptr(p);
    snprintf(e->msg, sizeof e->msg, "%s", msg);
    png_longjmp(p, 1);
}
static void png_w_warning(png_structp p, png_const_charp msg) { (void)p; (void)msg; }

dn_status dn_png_write_gray(const char *path, const uint8_t *px, int w, int h) {
    if (w <= 0 || h <= 0) return dn_fail(DN_ERR_ARG, "%s: invalid PNG size %dx%d", path, w, h);
    size_t n = strlen(path) + 8;
    char *tmp = dn_malloc(n);
    if (!tmp) return DN_ERR_NOMEM;
    snprintf(tmp, n, "%s.tmp", path);
    FILE *volatile f = fopen(tmp, "wb");
    if (!f) {
        dn_status st = dn_fail(DN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
        free(tmp);
        return st;
    }
    png_werr e = {{0}};
    png_structp volatile p = png_create_write_struct(PNG_LIBPNG_VER_STRING, &e, png_w_error, png_w_warning);
    png_infop volatile info = p ? png_create_info_struct(p) : NULL;
    dn_status volatile st = DN_OK;
    if (!p || !info) { st = dn_fail(DN_ERR_NOMEM, "%s: cannot create PNG writer", path); goto done; }
    if (setjmp(png_jmpbuf(p))) {
        st = dn_fail(DN_ERR_IO, "%s: PNG write failed: %s", path, e.msg);
        goto done;
    }
    png_init_io(p, f);
    png_set_IHDR(p, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(p, info);
    for (int y = 0; y < h; y++) png_write_row(p, (png_const_bytep)(px + (size_t)y * w));
    png_write_end(p, NULL);
done:
    if (p) png_destroy_write_struct((png_structpp)&p, info ? (png_infopp)&info : NULL);
    if (fclose(f) != 0 && st == DN_OK) st = dn_fail(DN_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    if (st == DN_OK && rename(tmp, path) != 0) st = dn_fail(DN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    if (st != DN_OK) unlink(tmp);
    free(tmp);
    return st;
}

/* ---------------------------------------------------------------- dataset */

static dn_status mkdir_p(const char *dir) {
    size_t n = strlen(dir);
    char *t = dn_malloc(n + 2);
    if (!t) return DN_ERR_NOMEM;
    memcpy(t, dir, n + 1);
    dn_status st = DN_OK;
    for (size_t i = 1; i <= n && !st; i++) {
        if (t[i] != '/' && t[i] != 0) continue;
        char keep = t[i];
        t[i] = 0;
        if (mkdir(t, 0755) != 0 && errno != EEXIST) st = dn_fail(DN_ERR_IO, "%s: cannot create folder: %s", t, strerror(errno));
        else {
            struct stat sb;
            if (stat(t, &sb) != 0 || !S_ISDIR(sb.st_mode)) st = dn_fail(DN_ERR_IO, "%s: exists and is not a folder", t);
        }
        t[i] = keep;
    }
    free(t);
    return st;
}

dn_status dn_synth_write(const char *outdir, const dn_synth_cfg *cfg, int *written) {
    if (written) *written = 0;
    if (!outdir || !*outdir) return dn_fail(DN_ERR_ARG, "synth: no output folder");
    if (cfg->per_class < 1 || cfg->per_class > 1000000)
        return dn_fail(DN_ERR_ARG, "synth: images per class %d outside 1..1000000", cfg->per_class);
    if (cfg->size < DN_SYNTH_MIN_SIZE || cfg->size > DN_SYNTH_MAX_SIZE)
        return dn_fail(DN_ERR_ARG, "synth: size %d outside %d..%d", cfg->size, DN_SYNTH_MIN_SIZE, DN_SYNTH_MAX_SIZE);
    uint8_t *px = dn_malloc((size_t)cfg->size * cfg->size);
    size_t plen = strlen(outdir) + 64;
    char *path = dn_malloc(plen);
    dn_status st = DN_OK;
    if (!px || !path) { st = DN_ERR_NOMEM; goto done; }
    for (int c = 0; c < C_COUNT && !st; c++) {
        snprintf(path, plen, "%s/%s", outdir, class_names[c]);
        if ((st = mkdir_p(path))) break;
        for (int i = 0; i < cfg->per_class && !st; i++) {
            snprintf(path, plen, "%s/%s/%s_%04d.png", outdir, class_names[c], class_names[c], i);
            st = dn_synth_render(c, cfg->size, cfg->seed, i, px);
            if (!st) st = dn_png_write_gray(path, px, cfg->size, cfg->size);
            if (!st && written) (*written)++;
        }
    }
done:
    free(px);
    free(path);
    return st;
}
