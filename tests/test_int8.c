/* int8 convolution (kernels/int8.h) and int8 models (nn/quant_int8.h):
 * every implementation (AVX-512 VNNI, AVX2, scalar) against the scalar spec
 * that quantizes the same way, bit for bit, on odd shapes (channels not a
 * multiple of 16, stride 2, 1x1/3x3/7x7, residual, ReLU); blocked in/out;
 * accumulator range; int8 vs fp32 closeness; bad arguments. */
#include "core/core.h"
#include "io/modelfile.h"
#include "kernels/int8.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "nn/quant.h"
#include "nn/quant_int8.h"
#include "harness.h"
#include <unistd.h>

static void fill(float *p, size_t n, dn_rng *r, float lo, float hi) {
    for (size_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * (float)dn_rng_uniform(r);
}

typedef struct { int cin, cout, k, s, p, h, w, n; } shape;
static const shape SHAPES[] = {
    {3, 5, 7, 2, 3, 13, 11, 2},    /* 7x7 stem-like, tiny channel counts */
    {19, 21, 3, 1, 1, 9, 7, 1},    /* channels not a multiple of 16 */
    {32, 48, 1, 2, 0, 10, 9, 3},   /* strided 1x1 downsample */
    {16, 16, 3, 2, 1, 15, 17, 1},  /* stride 2, odd map */
    {64, 32, 3, 1, 1, 7, 5, 2},    /* NB = 2 blocks */
    {17, 33, 1, 1, 0, 3, 29, 1},   /* wide row: several chunks */
    {48, 64, 3, 1, 1, 2, 2, 5},    /* 2x2 maps (layer4 of a small input) */
};

/* runs one op of the current ISA on s and compares it with the spec bit for bit */
static void check_shape(const shape *sh, dn_isa isa, const char *want_name) {
    dn_conv_desc d = {sh->cin, sh->cout, sh->k, sh->k, sh->s, sh->p};
    int oh = dn_conv_out(sh->h, sh->k, sh->s, sh->p), ow = dn_conv_out(sh->w, sh->k, sh->s, sh->p);
    size_t nx = (size_t)sh->n * sh->cin * sh->h * sh->w, ny = (size_t)sh->n * sh->cout * oh * ow;
    size_t nw = (size_t)sh->cout * sh->cin * sh->k * sh->k;
    float *x = malloc(nx * 4), *w = malloc(nw * 4), *b = malloc(sh->cout * 4), *res = malloc(ny * 4);
    float *y = malloc(ny * 4), *yr = malloc(ny * 4), *ws = malloc(sh->cout * 4), *mult = malloc(sh->cout * 4);
    int8_t *wq = malloc(nw);
    dn_rng r;
    dn_rng_seed(&r, (uint64_t)(sh->cin * 131 + sh->cout * 7 + sh->k + sh->h));
    fill(x, nx, &r, -0.5f, 3.0f); /* some negatives: clamped to 0 */
    fill(w, nw, &r, -0.2f, 0.2f);
    fill(b, sh->cout, &r, -1, 1);
    fill(res, ny, &r, -1, 1);
    const float scale = 3.0f / 255.0f;
    dn_int8_quantize_weights(&d, w, wq, ws);
    for (int co = 0; co < sh->cout; co++) mult[co] = scale * ws[co];
    dn_isa old = dn_kernels_force_isa(isa);
    dn_conv_op *op = dn_conv_op_new_int8(&d, w, b, scale);
    dn_kernels_force_isa(old);
    CHECK_MSG(op != NULL, "%s", dn_last_error());
    if (op) {
        CHECK_MSG(!strcmp(dn_conv_op_impl_name(op), want_name), "%s vs %s", dn_conv_op_impl_name(op), want_name);
        for (int variant = 0; variant < 3; variant++) {
            const float *rr = variant == 1 ? res : NULL;
            int relu = variant != 0;
            dn_conv2d_int8_ref(&d, x, sh->n, sh->h, sh->w, 1.0f / scale, wq, mult, b, rr, relu, yr);
            void *scratch = dn_alloc_aligned(dn_conv_op_scratch(op, sh->n, sh->h, sh->w) + 1);
            dn_pool *pool = dn_pool_new(2);
            dn_conv_op_run(op, x, sh->n, sh->h, sh->w, rr, relu, y, pool, scratch);
            dn_pool_free(pool);
            dn_free_aligned(scratch);
            CHECK_MSG(!memcmp(y, yr, ny * 4), "%s cin %d cout %d k %d s %d variant %d differs from the spec",
                      want_name, sh->cin, sh->cout, sh->k, sh->s, variant);
        }
    }
    dn_conv_op_free(op);
    free(x); free(w); free(b); free(res); free(y); free(yr); free(ws); free(mult); free(wq);
}

static int has_vnni(void) {
    unsigned f = dn_cpu_features();
    return dn_kernels_isa() >= DN_ISA_AVX512 && (f & DN_CPU_AVX512VNNI);
}

TEST(vnni_vs_spec_odd_shapes) {
    if (!has_vnni()) SKIP("CPU has no AVX-512 VNNI");
    for (size_t i = 0; i < sizeof SHAPES / sizeof SHAPES[0]; i++) check_shape(&SHAPES[i], DN_ISA_AVX512, "int8-vnni-avx512");
}

TEST(avx2_vs_spec_odd_shapes) {
    if (!(dn_cpu_features() & DN_CPU_AVX2)) SKIP("CPU has no AVX2");
    for (size_t i = 0; i < sizeof SHAPES / sizeof SHAPES[0]; i++) check_shape(&SHAPES[i], DN_ISA_AVX2, "int8-avx2");
}

TEST(scalar_op_is_the_spec) {
    for (size_t i = 0; i < 3; i++) check_shape(&SHAPES[i], DN_ISA_SCALAR, "int8-ref");
}

/* the largest sums: every input 255, every weight +-127, K = 512 * 9 */
TEST(accumulator_range_exact) {
    dn_conv_desc d = {512, 16, 3, 3, 1, 1};
    size_t nw = (size_t)16 * 512 * 9, nx = (size_t)512 * 5 * 5, ny = (size_t)16 * 25;
    float *w = malloc(nw * 4), *x = malloc(nx * 4), *y = malloc(ny * 4), *yr = malloc(ny * 4), ws[16], mult[16];
    int8_t *wq = malloc(nw);
    for (size_t i = 0; i < nw; i++) w[i] = (i / (512 * 9)) % 2 ? -1.0f : 1.0f;
    for (size_t i = 0; i < nx; i++) x[i] = 100.0f; /* saturates at 255 */
    dn_int8_quantize_weights(&d, w, wq, ws);
    for (int co = 0; co < 16; co++) mult[co] = 0.1f * ws[co];
    dn_conv2d_int8_ref(&d, x, 1, 5, 5, 10.0f, wq, mult, NULL, NULL, 0, yr);
    CHECK(yr[2 * 5 + 2] == fmaf(255.0f * 127 * 512 * 9, mult[0], 0.0f)); /* centre pixel, no padding */
    CHECK(yr[25 + 12] < 0);
    dn_isa isas[2] = {DN_ISA_AVX512, DN_ISA_AVX2};
    for (int k = 0; k < 2; k++) {
        dn_isa old = dn_kernels_force_isa(isas[k]);
        dn_conv_op *op = dn_conv_op_new_int8(&d, w, NULL, 0.1f);
        dn_kernels_force_isa(old);
        CHECK(op != NULL);
        if (!op) continue;
        dn_conv_op_run(op, x, 1, 5, 5, NULL, 0, y, NULL, NULL);
        CHECK_MSG(!memcmp(y, yr, ny * 4), "%s", dn_conv_op_impl_name(op));
        dn_conv_op_free(op);
    }
    free(w); free(x); free(y); free(yr); free(wq);
}

/* blocked fp32 in (border 1 and 2) and out (border 1): same values as the spec, borders zero */
TEST(blocked_in_out_vs_spec) {
    if (!has_vnni()) SKIP("CPU has no AVX-512 VNNI");
    static const shape bs[] = {{32, 48, 3, 1, 1, 9, 7, 3}, {16, 32, 1, 2, 0, 11, 13, 2}, {64, 64, 3, 2, 1, 6, 6, 1}};
    for (size_t si = 0; si < 3; si++) {
        const shape *sh = &bs[si];
        for (int xb = 1; xb <= 2; xb++) {
            dn_conv_desc d = {sh->cin, sh->cout, sh->k, sh->k, sh->s, sh->p};
            int oh = dn_conv_out(sh->h, sh->k, sh->s, sh->p), ow = dn_conv_out(sh->w, sh->k, sh->s, sh->p);
            size_t nx = (size_t)sh->n * sh->cin * sh->h * sh->w, ny = (size_t)sh->n * sh->cout * oh * ow;
            size_t nw = (size_t)sh->cout * sh->cin * sh->k * sh->k;
            float *x = malloc(nx * 4), *w = malloc(nw * 4), *b = malloc(sh->cout * 4), *res = malloc(ny * 4);
            float *yr = malloc(ny * 4), *y = malloc(ny * 4), *ws = malloc(sh->cout * 4), *mult = malloc(sh->cout * 4);
            int8_t *wq = malloc(nw);
            size_t bx = dn_blk_floats(sh->n, sh->cin, sh->h, sh->w, xb), by = dn_blk_floats(sh->n, sh->cout, oh, ow, 1);
            float *xbk = dn_alloc_aligned(bx * 4), *rbk = dn_alloc_aligned(by * 4), *ybk = dn_alloc_aligned(by * 4);
            dn_rng r;
            dn_rng_seed(&r, 7 + si);
            fill(x, nx, &r, -0.5f, 2.0f);
            fill(w, nw, &r, -0.3f, 0.3f);
            fill(b, sh->cout, &r, -1, 1);
            fill(res, ny, &r, -1, 1);
            float scale = 2.0f / 255.0f;
            dn_int8_quantize_weights(&d, w, wq, ws);
            for (int co = 0; co < sh->cout; co++) mult[co] = scale * ws[co];
            dn_conv2d_int8_ref(&d, x, sh->n, sh->h, sh->w, 1.0f / scale, wq, mult, b, res, 1, yr);
            dn_blk_from_nchw(x, sh->n, sh->cin, sh->h, sh->w, xb, xbk, NULL);
            dn_blk_from_nchw(res, sh->n, sh->cout, oh, ow, 1, rbk, NULL);
            for (size_t i = 0; i < by; i++) ybk[i] = 12345.0f; /* the op must write the border */
            dn_conv_op *op = dn_conv_op_new_int8(&d, w, b, scale);
            CHECK(op && dn_conv_op_blocked(op) && !dn_conv_op_blocked_nchw_in(op));
            if (op) {
                void *scratch = dn_alloc_aligned(dn_conv_op_blocked_scratch(op, sh->n, sh->h, sh->w));
                dn_pool *pool = dn_pool_new(2);
                CHECK(dn_conv_op_run_blocked(op, xbk, sh->n, sh->h, sh->w, xb, rbk, 1, ybk, 1, pool, scratch) == DN_OK);
                dn_pool_free(pool);
                dn_free_aligned(scratch);
                dn_blk_to_nchw(ybk, sh->n, sh->cout, oh, ow, 1, y, NULL);
                CHECK_MSG(!memcmp(y, yr, ny * 4), "blocked shape %zu border %d", si, xb);
                /* border pixels zero */
                int owp = ow + 2, ohp = oh + 2, bad = 0;
                for (size_t pl = 0; pl < by / ((size_t)ohp * owp * 16); pl++)
                    for (int yy = 0; yy < ohp; yy++)
                        for (int xx = 0; xx < owp; xx++)
                            if (yy == 0 || xx == 0 || yy == ohp - 1 || xx == owp - 1)
                                for (int l = 0; l < 16; l++)
                                    bad += ybk[((pl * ohp + yy) * owp + xx) * 16 + l] != 0.0f;
                CHECK_MSG(bad == 0, "%d border values not zero", bad);
            }
            dn_conv_op_free(op);
            dn_free_aligned(xbk); dn_free_aligned(rbk); dn_free_aligned(ybk);
            free(x); free(w); free(b); free(res); free(yr); free(y); free(ws); free(mult); free(wq);
        }
    }
}

/* int8 approximates the fp32 conv: error within a few quantization steps */
TEST(int8_close_to_fp32) {
    dn_conv_desc d = {64, 64, 3, 3, 1, 1};
    size_t nx = (size_t)64 * 12 * 12, nw = (size_t)64 * 64 * 9;
    float *x = malloc(nx * 4), *w = malloc(nw * 4), *y = malloc(nx * 4), *yf = malloc(nx * 4);
    dn_rng r;
    dn_rng_seed(&r, 3);
    fill(x, nx, &r, 0, 1);
    for (size_t i = 0; i < nw; i++) w[i] = 0.05f * dn_rng_normal(&r);
    dn_conv_op *op = dn_conv_op_new_int8(&d, w, NULL, 1.0f / 255.0f);
    CHECK(op != NULL);
    if (op) {
        dn_conv_op_run(op, x, 1, 12, 12, NULL, 0, y, NULL, NULL);
        dn_conv2d_ref(&d, x, 1, 12, 12, w, NULL, NULL, 0, yf);
        double num = 0, den = 0;
        for (size_t i = 0; i < nx; i++) { num += (y[i] - yf[i]) * (double)(y[i] - yf[i]); den += yf[i] * (double)yf[i]; }
        double rel = sqrt(num / den);
        CHECK_MSG(rel < 0.01 && rel > 0, "relative rms error %g", rel);
    }
    dn_conv_op_free(op);
    free(x); free(w); free(y); free(yf);
}

TEST(bad_arguments) {
    dn_conv_desc d = {16, 16, 3, 3, 1, 1};
    float w[16 * 16 * 9] = {0};
    CHECK(dn_conv_op_new_int8(&d, w, NULL, 0.0f) == NULL);
    CHECK(strstr(dn_last_error(), "scale") && !strchr(dn_last_error(), '\n'));
    CHECK(dn_conv_op_new_int8(&d, w, NULL, NAN) == NULL);
    CHECK(dn_conv_op_new_int8(&d, w, NULL, INFINITY) == NULL);
    CHECK(dn_conv_op_new_int8(&d, w, NULL, 1e-45f) == NULL); /* 1/scale overflows */
    CHECK(dn_conv_op_new_int8(&d, NULL, NULL, 1.0f) == NULL);
    dn_conv_desc bad = {0, 16, 3, 3, 1, 1};
    CHECK(dn_conv_op_new_int8(&bad, w, NULL, 1.0f) == NULL);
    CHECK(dn_conv_op_new(&d, w, NULL, DN_CONV_INT8) == NULL); /* needs a scale */
    /* all-zero weights: scale 1, output = bias */
    float b[16];
    for (int i = 0; i < 16; i++) b[i] = (float)i;
    dn_conv_op *op = dn_conv_op_new_int8(&d, w, b, 0.5f);
    CHECK(op != NULL);
    if (op) {
        float x[16 * 4 * 4], y[16 * 4 * 4];
        for (int i = 0; i < 16 * 16; i++) x[i] = NAN; /* NaN inputs quantize to 0 */
        dn_conv_op_run(op, x, 1, 4, 4, NULL, 0, y, NULL, NULL);
        CHECK(y[0] == 0.0f && y[16 * 15] == 15.0f);
    }
    dn_conv_op_free(op);
}

/* ------------------------------------------------------------ int8 models */

static const char *FIX = "tests/fixtures/resnet/r18n.pth";
#define PX 32

static dn_model *load_small(void) {
    dn_model *m = NULL;
    if (dn_model_load(FIX, &m)) return NULL;
    m->pp.crop = PX;
    return m;
}

/* smooth random images (neighbouring pixels correlated, like photographs) */
static float *inputs(int n, uint64_t seed) {
    size_t per = (size_t)3 * PX * PX;
    float *x = dn_alloc_aligned((size_t)n * per * sizeof(float));
    dn_rng r;
    dn_rng_seed(&r, seed);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < 3; c++) {
            float a = dn_rng_normal(&r), fx = 0.1f + 0.3f * (float)dn_rng_uniform(&r), fy = 0.1f + 0.3f * (float)dn_rng_uniform(&r);
            for (int y = 0; y < PX; y++)
                for (int xx = 0; xx < PX; xx++)
                    x[i * per + ((size_t)c * PX + y) * PX + xx] =
                        a * sinf(fx * xx + fy * y + (float)c) + 0.3f * dn_rng_normal(&r);
        }
    return x;
}

static dn_status logits_of(const dn_model *m, int impl, const float *x, int n, float *out, char *name) {
    dn_session *s = NULL;
    dn_session_opts so = {n, 1, 0, 0, impl};
    dn_status st = dn_session_new_ex(m, &so, &s);
    if (st) return st;
    if (name) snprintf(name, 64, "%s", dn_session_conv_impl(s));
    st = dn_session_forward(s, x, n, out);
    dn_session_free(s);
    return st;
}

static int argmax(const float *v, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) if (v[i] > v[b]) b = i;
    return b;
}

/* calibration + guard on the fixture model, then the engine runs it in int8 */
TEST(model_quantize_guard_and_engine) {
    dn_model *m = load_small();
    CHECK_MSG(m != NULL, "%s", dn_last_error());
    if (!m) return;
    const int NC = 32, NV = 48, C = m->num_classes;
    float *xc = inputs(NC, 1), *xv = inputs(NV, 2);
    float *l32 = malloc((size_t)NV * C * 4), *l8 = malloc((size_t)NV * C * 4);
    CHECK(dn_int8_calibrate(m, xc, NC, DN_CALIB_PERCENTILE, 99.99, 8, 2, NULL) == DN_OK);
    float sc;
    CHECK(dn_int8_scale(m, "layer1.0.conv1", &sc) == DN_OK && sc > 0);
    CHECK(dn_int8_scale(m, "conv1", &sc) == DN_OK && sc == 0); /* the stem stays fp32 */
    dn_quant_opts o = {"int8", 0.0, 1, 2, 8, NULL};
    dn_quant_result r;
    CHECK_MSG(dn_quantize(m, xv, NULL, NV, &o, &r) == DN_OK, "%s", dn_last_error());
    CHECK(r.ok && r.n_fp32_layers == 0 && !strcmp(dn_meta_get(&m->meta, DN_META_QUANT_MODE), "int8"));
    char name[64] = "";
    CHECK(logits_of(m, DN_CONV_DIRECT, xv, NV, l32, NULL) == DN_OK);
    CHECK(logits_of(m, -1, xv, NV, l8, name) == DN_OK);
    CHECK_MSG(strstr(name, "int8") != NULL, "%s", name);
    int same = 0;
    double num = 0, den = 0;
    for (int i = 0; i < NV; i++) same += argmax(l32 + i * C, C) == argmax(l8 + i * C, C);
    for (int i = 0; i < NV * C; i++) { num += (l8[i] - l32[i]) * (double)(l8[i] - l32[i]); den += l32[i] * (double)l32[i]; }
    printf("  int8 vs fp32 on the fixture: top-1 agreement %d/%d (guard measured %.4f), logits rel. rms %.4f\n", same,
           NV, r.agreement, sqrt(num / den));
    CHECK_NEAR((double)same / NV, r.agreement, 1e-9); /* the guard measured what the engine runs */
    CHECK(sqrt(num / den) < 0.1 && sqrt(num / den) > 0);
    CHECK(same >= NV * 9 / 10);
    free(l32); free(l8); dn_free_aligned(xc); dn_free_aligned(xv);
    dn_model_free(m);
}

/* an int8 model saved and loaded predicts the same; its fallback layer list survives */
TEST(model_save_load_round_trip) {
    dn_model *m = load_small();
    CHECK(m != NULL);
    if (!m) return;
    const int N = 6, C = m->num_classes;
    float *x = inputs(N, 5), *a = malloc((size_t)N * C * 4), *b = malloc((size_t)N * C * 4);
    CHECK(dn_int8_calibrate(m, x, N, DN_CALIB_MINMAX, 0, 3, 1, NULL) == DN_OK);
    dn_meta_set(&m->meta, DN_META_QUANT_MODE, "int8");
    dn_meta_set(&m->meta, DN_META_QUANT_FP32, "layer4.1.conv2");
    char path[64];
    snprintf(path, sizeof path, "/tmp/dn_int8_%d.safetensors", (int)getpid());
    CHECK(dn_model_save(m, path) == DN_OK);
    dn_model *m2 = NULL;
    CHECK_MSG(dn_model_load(path, &m2) == DN_OK, "%s", dn_last_error());
    if (m2) {
        m2->pp.crop = PX;
        char n1[64], n2[64];
        CHECK(logits_of(m, -1, x, N, a, n1) == DN_OK);
        CHECK(logits_of(m2, -1, x, N, b, n2) == DN_OK);
        CHECK(!strcmp(n1, n2) && strstr(n1, "int8"));
        CHECK(!memcmp(a, b, (size_t)N * C * 4));
        CHECK(!strcmp(dn_meta_get(&m2->meta, DN_META_QUANT_INT8), dn_meta_get(&m->meta, DN_META_QUANT_INT8)));
        CHECK(dn_quant_conv_impl(m2, "layer4.1.conv2", DN_CONV_AUTO) == DN_CONV_AUTO);
    }
    dn_model_free(m2);
    unlink(path);
    free(a); free(b); dn_free_aligned(x);
    dn_model_free(m);
}

/* without VNNI (capped to AVX2) and without SIMD the int8 model still runs, close to the VNNI result */
TEST(model_without_vnni) {
    dn_model *m = load_small();
    CHECK(m != NULL);
    if (!m) return;
    const int N = 4, C = m->num_classes;
    float *x = inputs(N, 9), *l[3];
    CHECK(dn_int8_calibrate(m, x, N, DN_CALIB_PERCENTILE, 99.99, 4, 1, NULL) == DN_OK);
    dn_meta_set(&m->meta, DN_META_QUANT_MODE, "int8");
    dn_isa isas[3] = {DN_ISA_AVX512, DN_ISA_AVX2, DN_ISA_SCALAR};
    const char *want[3] = {"int8-vnni-avx512", "int8-avx2", "int8-ref"};
    for (int k = 0; k < 3; k++) {
        l[k] = malloc((size_t)N * C * 4);
        char name[64] = "";
        dn_isa old = dn_kernels_force_isa(isas[k]);
        CHECK(logits_of(m, -1, x, N, l[k], name) == DN_OK);
        dn_kernels_force_isa(old);
        if (k == 0 && !has_vnni()) continue;
        CHECK_MSG(strstr(name, want[k]) != NULL, "%s", name);
        if (k) {
            double num = 0, den = 0;
            for (int i = 0; i < N * C; i++) { num += (l[k][i] - l[0][i]) * (double)(l[k][i] - l[0][i]); den += l[0][i] * (double)l[0][i]; }
            CHECK_MSG(sqrt(num / den) < 0.02, "%s vs %s: rel. rms %g", want[k], want[0], sqrt(num / den));
        }
    }
    /* AVX2 (NCHW plan) and scalar use the same integer arithmetic after the same fp32 stem: identical */
    CHECK(!memcmp(l[1], l[2], (size_t)N * C * 4) || !(dn_cpu_features() & DN_CPU_AVX2));
    for (int k = 0; k < 3; k++) free(l[k]);
    dn_free_aligned(x);
    dn_model_free(m);
}

TEST(model_bad_records) {
    dn_model *m = load_small();
    CHECK(m != NULL);
    if (!m) return;
    float *x = inputs(2, 3), *l = malloc((size_t)2 * m->num_classes * 4);
    /* int8 asked for, no calibration: one-line error */
    CHECK(logits_of(m, DN_CONV_INT8, x, 2, l, NULL) == DN_ERR_ARG);
    CHECK(strstr(dn_last_error(), "int8") && !strchr(dn_last_error(), '\n'));
    /* damaged scale records */
    static const char *bad[] = {
        "{\"version\":1,\"scales\":{\"layer1.0.conv1\":-1}}",
        "{\"version\":1,\"scales\":{\"layer1.0.conv1\":\"x\"}}",
        "{\"version\":1,\"scales\":{\"layer1.0.conv1\":1e-40}}",
        "{\"version\":2,\"scales\":{}}",
        "{\"version\":1,\"scales\":[1,2]}",
        "{\"version\":1,\"scales\":{\"layer1.0.conv1\":0.1",
    };
    dn_meta_set(&m->meta, DN_META_QUANT_MODE, "int8");
    char path[64];
    snprintf(path, sizeof path, "/tmp/dn_int8_bad_%d.safetensors", (int)getpid());
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dn_meta_set(&m->meta, DN_META_QUANT_INT8, bad[i]);
        dn_status st = logits_of(m, -1, x, 2, l, NULL);
        CHECK_MSG(st == DN_ERR_FORMAT && strstr(dn_last_error(), "quant.int8") && !strchr(dn_last_error(), '\n'),
                  "record %zu: status %d '%s'", i, (int)st, dn_last_error());
        CHECK(dn_model_save(m, path) == DN_OK);
        dn_model *m2 = NULL;
        st = dn_model_load(path, &m2);
        CHECK_MSG(st == DN_ERR_FORMAT && strstr(dn_last_error(), path) && strstr(dn_last_error(), "quant.int8") &&
                      !strchr(dn_last_error(), '\n'),
                  "record %zu on load: status %d '%s'", i, (int)st, dn_last_error());
        dn_model_free(m2);
    }
    unlink(path);
    free(l); dn_free_aligned(x);
    dn_model_free(m);
}

int main(void) {
    RUN(vnni_vs_spec_odd_shapes);
    RUN(avx2_vs_spec_odd_shapes);
    RUN(scalar_op_is_the_spec);
    RUN(accumulator_range_exact);
    RUN(blocked_in_out_vs_spec);
    RUN(int8_close_to_fp32);
    RUN(bad_arguments);
    RUN(model_quantize_guard_and_engine);
    RUN(model_save_load_round_trip);
    RUN(model_without_vnni);
    RUN(model_bad_records);
    return REPORT();
}
