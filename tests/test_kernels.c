/* Kernels: the scalar reference against hand-computed cases, and every fast
 * implementation (each ISA) against the reference on odd shapes. */
#include "core/core.h"
#include "kernels/kernels.h"
#include "kernels/kern_int.h"
#include "harness.h"

static void fill(float *p, size_t n, dn_rng *r, float scale) {
    for (size_t i = 0; i < n; i++) p[i] = scale * (2.0f * (float)dn_rng_uniform(r) - 1.0f);
}

/* 1 image, 1->1 channel, 3x3 input, 2x2 kernel, stride 1, pad 0, bias 0.5. */
TEST(conv_ref_hand) {
    const float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    const float w[4] = {1, 0, 0, -1};
    const float b[1] = {0.5f};
    dn_conv_desc d = {1, 1, 2, 2, 1, 0};
    float y[4];
    dn_conv2d_ref(&d, x, 1, 3, 3, w, b, NULL, 0, y);
    /* x[i][j] - x[i+1][j+1] = -4 everywhere, + 0.5 */
    for (int i = 0; i < 4; i++) CHECK_NEAR(y[i], -3.5, 0);
    /* ReLU clamps; residual adds before ReLU. */
    const float r[4] = {10, 0, 3, 4};
    dn_conv2d_ref(&d, x, 1, 3, 3, w, b, r, 1, y);
    CHECK_NEAR(y[0], 6.5, 0);
    CHECK_NEAR(y[1], 0, 0);
    CHECK_NEAR(y[2], 0, 0);
    CHECK_NEAR(y[3], 0.5, 0);
}

/* Padding and stride 2: 2 input channels, 2 output channels, 3x3 kernel, pad 1. */
TEST(conv_ref_pad_stride) {
    float x[2 * 4 * 4], w[2 * 2 * 3 * 3];
    for (int i = 0; i < 32; i++) x[i] = (float)(i % 7) - 3;
    for (int i = 0; i < 36; i++) w[i] = (float)(i % 5) - 2;
    dn_conv_desc d = {2, 2, 3, 3, 2, 1};
    float y[2 * 2 * 2];
    dn_conv2d_ref(&d, x, 1, 4, 4, w, NULL, NULL, 0, y);
    /* hand-evaluated by direct summation with explicit bounds */
    for (int co = 0; co < 2; co++)
        for (int oy = 0; oy < 2; oy++)
            for (int ox = 0; ox < 2; ox++) {
                double acc = 0;
                for (int ci = 0; ci < 2; ci++)
                    for (int ky = -1; ky <= 1; ky++)
                        for (int kx = -1; kx <= 1; kx++) {
                            int iy = oy * 2 + ky, ix = ox * 2 + kx;
                            if (iy < 0 || ix < 0 || iy > 3 || ix > 3) continue;
                            acc += w[((co * 2 + ci) * 3 + ky + 1) * 3 + kx + 1] * x[(ci * 4 + iy) * 4 + ix];
                        }
                CHECK_NEAR(y[(co * 2 + oy) * 2 + ox], acc, 1e-5);
            }
    /* corner (0,0) of channel 0 touches only x[.,0..1,0..1] */
    double c00 = 0;
    for (int ci = 0; ci < 2; ci++)
        for (int ky = 1; ky <= 2; ky++)
            for (int kx = 1; kx <= 2; kx++)
                c00 += w[(ci * 3 + ky) * 3 + kx] * x[(ci * 4 + ky - 1) * 4 + kx - 1];
    CHECK_NEAR(y[0], c00, 1e-5);
}

TEST(sgemm_ref_hand) {
    const float A[6] = {1, 2, 3, 4, 5, 6};      /* 2x3 */
    const float B[6] = {7, 8, 9, 10, 11, 12};   /* 3x2 */
    float C[4] = {1, 1, 1, 1};
    dn_sgemm_ref(0, 0, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, C, 2);
    CHECK_NEAR(C[0], 58, 0); CHECK_NEAR(C[1], 64, 0);
    CHECK_NEAR(C[2], 139, 0); CHECK_NEAR(C[3], 154, 0);
    /* transposed operands: A^T stored 3x2, B^T stored 2x3; alpha 2, beta 1 */
    const float At[6] = {1, 4, 2, 5, 3, 6};
    const float Bt[6] = {7, 9, 11, 8, 10, 12};
    float D[4] = {1, 2, 3, 4};
    dn_sgemm_ref(1, 1, 2, 2, 3, 2.0f, At, 2, Bt, 3, 1.0f, D, 2);
    CHECK_NEAR(D[0], 117, 0); CHECK_NEAR(D[1], 130, 0);
    CHECK_NEAR(D[2], 281, 0); CHECK_NEAR(D[3], 312, 0);
}

TEST(conv_op_ref_matches_spec) {
    dn_rng r;
    dn_rng_seed(&r, 1);
    dn_conv_desc d = {3, 5, 3, 3, 1, 1};
    float x[2 * 3 * 6 * 5], w[5 * 3 * 9], b[5], res[2 * 5 * 6 * 5], y0[2 * 5 * 30], y1[2 * 5 * 30];
    fill(x, sizeof x / 4, &r, 1); fill(w, sizeof w / 4, &r, 1); fill(b, 5, &r, 1); fill(res, sizeof res / 4, &r, 1);
    dn_conv_op *op = dn_conv_op_new(&d, w, b, DN_CONV_REF);
    CHECK(op != NULL);
    if (!op) return;
    CHECK(strcmp(dn_conv_op_impl_name(op), "ref") == 0);
    dn_conv2d_ref(&d, x, 2, 6, 5, w, b, res, 1, y0);
    dn_conv_op_run(op, x, 2, 6, 5, res, 1, y1, NULL, NULL);
    CHECK(memcmp(y0, y1, sizeof y0) == 0);
    dn_conv_op_free(op);
}

TEST(conv_op_bad_desc) {
    float w[1] = {1};
    dn_conv_desc d = {0, 1, 1, 1, 1, 0};
    CHECK(dn_conv_op_new(&d, w, NULL, DN_CONV_REF) == NULL);
    CHECK(strstr(dn_last_error(), "conv") != NULL);
    dn_conv_desc d2 = {1, 1, 1, 1, 0, 0};
    CHECK(dn_conv_op_new(&d2, w, NULL, DN_CONV_AUTO) == NULL);
    CHECK(dn_conv_op_new(NULL, w, NULL, DN_CONV_AUTO) == NULL);
}

/* max |ref - got| / max(1, max |ref|); NaN in got counts as infinite. */
static double rel_err(const float *ref, const float *got, size_t n) {
    double mx = 1, md = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
        double df = fabs((double)ref[i] - got[i]);
        if (!(df <= md)) md = isnan(df) ? INFINITY : df;
    }
    return md / mx;
}

/* Compare impl (under a forced ISA) with the reference on one shape; returns
 * max |diff| / max(1, max |ref|), or -1 if the op could not be built. */
static double conv_vs_ref(dn_isa isa, dn_conv_impl impl, int n, int cin, int cout, int k, int s, int pad,
                          int h, int w, int use_bias, int use_res, int relu, dn_pool *pool, const char **name) {
    dn_conv_desc d = {cin, cout, k, k, s, pad};
    int oh = dn_conv_out(h, k, s, pad), ow = dn_conv_out(w, k, s, pad);
    size_t nx = (size_t)n * cin * h * w, nw = (size_t)cout * cin * k * k, ny = (size_t)n * cout * oh * ow;
    float *x = malloc(nx * 4), *wt = malloc(nw * 4), *b = malloc(cout * 4), *r = malloc(ny * 4);
    float *y0 = malloc(ny * 4), *y1 = malloc(ny * 4);
    dn_rng rg;
    dn_rng_seed(&rg, (uint64_t)(n * 1000003 + cin * 1009 + cout * 17 + k * 3 + s + pad * 7 + h * 31));
    fill(x, nx, &rg, 1); fill(wt, nw, &rg, 0.5f); fill(b, cout, &rg, 1); fill(r, ny, &rg, 1);
    dn_isa old = dn_kernels_force_isa(isa);
    dn_conv_op *op = dn_conv_op_new(&d, wt, use_bias ? b : NULL, impl);
    dn_kernels_force_isa(old);
    double err = -1;
    if (op) {
        if (name) { /* copied: the op (and its name) is freed below */
            static char nb[64];
            snprintf(nb, sizeof nb, "%s", dn_conv_op_impl_name(op));
            *name = nb;
        }
        void *scr = dn_alloc_aligned(dn_conv_op_scratch(op, n, h, w));
        for (size_t i = 0; i < ny; i++) y1[i] = NAN;
        dn_conv_op_run(op, x, n, h, w, use_res ? r : NULL, relu, y1, pool, scr);
        dn_conv2d_ref(&d, x, n, h, w, wt, use_bias ? b : NULL, use_res ? r : NULL, relu, y0);
        err = rel_err(y0, y1, ny);
        dn_free_aligned(scr);
        dn_conv_op_free(op);
    }
    free(x); free(wt); free(b); free(r); free(y0); free(y1);
    return err;
}

/* Odd shapes: batch 1 and 3, channels 3/5/17/33, stride 2, padding, 7x7 stem,
 * 1x1 downsample, tiny spatial sizes, residual/ReLU on and off. */
static const int shapes[][10] = {
    /* n cin cout k s pad h w bias res|relu(bit0 res, bit1 relu) */
    {1, 3, 5, 3, 1, 1, 7, 9, 1, 3},
    {3, 5, 17, 3, 1, 1, 6, 5, 1, 1},
    {1, 17, 33, 3, 2, 1, 9, 11, 0, 2},
    {3, 3, 16, 7, 2, 3, 23, 19, 1, 2},   /* stem-like */
    {1, 33, 20, 1, 2, 0, 9, 9, 1, 0},    /* 1x1 stride-2 downsample */
    {3, 64, 64, 3, 1, 1, 7, 7, 1, 3},
    {1, 20, 9, 3, 1, 1, 1, 1, 1, 3},     /* 1x1 spatial, padding only */
    {2, 8, 40, 3, 1, 0, 3, 3, 0, 1},
    {1, 300, 70, 3, 1, 1, 5, 4, 1, 3},   /* K > KC: several K blocks */
    {2, 16, 24, 5, 3, 2, 13, 10, 1, 2},
    {1, 64, 128, 3, 2, 1, 56, 56, 1, 2}, /* large N: several column chunks */
    /* channel multiples of 16 (the AVX-512 NCHW16c direct kernel) on odd sizes */
    {3, 16, 32, 3, 1, 1, 9, 13, 1, 3},   /* 13 wide: one partial 14-pixel block */
    {1, 32, 16, 3, 2, 1, 14, 14, 1, 1},  /* stride 2 to 7 wide: the 7-pixel kernel */
    {2, 16, 16, 3, 1, 1, 5, 3, 0, 2},    /* narrower than 7 */
    {1, 48, 32, 5, 2, 2, 31, 30, 1, 3},  /* 5x5 stride 2, 15 wide: 14 + 1 */
    {2, 32, 48, 1, 2, 0, 9, 9, 1, 0},    /* 1x1 stride 2 (stays im2col) */
    {1, 16, 16, 3, 1, 0, 3, 3, 1, 3},    /* no padding, 1x1 output */
    /* every block width R = 1..14 of the exact-width kernels (ow split evenly) */
    {2, 16, 16, 3, 1, 1, 3, 2, 1, 3},    /* 2 */
    {1, 32, 16, 3, 2, 1, 8, 8, 1, 1},    /* stride 2 to 4 wide */
    {1, 16, 32, 3, 1, 1, 2, 5, 0, 3},    /* 5 */
    {1, 16, 16, 3, 1, 1, 3, 6, 1, 2},    /* 6 */
    {2, 16, 16, 3, 1, 1, 2, 16, 1, 3},   /* 16 = 8 + 8 */
    {1, 16, 16, 3, 1, 1, 2, 9, 1, 3},    /* 9 */
    {1, 16, 16, 3, 1, 1, 2, 10, 1, 3},   /* 10 */
    {1, 16, 16, 3, 1, 1, 2, 32, 1, 3},   /* 32 = 11 + 11 + 10 */
    {1, 16, 16, 3, 1, 1, 2, 12, 0, 1},   /* 12 */
    {1, 16, 16, 3, 1, 1, 2, 28, 1, 2},   /* 28 = 14 + 14 */
    {1, 16, 16, 3, 1, 1, 2, 40, 1, 3},   /* 40 = 14 + 13 + 13 */
};

static double check_all_shapes(dn_isa isa, dn_conv_impl impl, double tol) {
    dn_pool *pool = dn_pool_new(3);
    double worst = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int *c = shapes[i];
        const char *name = "?";
        double e = conv_vs_ref(isa, impl, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9] & 1,
                               (c[9] >> 1) & 1, i % 2 ? pool : NULL, &name);
        if (e > worst) worst = e;
        CHECK_MSG(e >= 0 && e <= tol, "shape %zu (%s, n%d cin%d cout%d k%d s%d p%d %dx%d): rel err %g", i,
                  name, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], e);
    }
    dn_pool_free(pool);
    return worst;
}

TEST(conv_direct_avx512_vs_ref) {
    if (dn_kernels_isa() < DN_ISA_AVX512) SKIP("CPU (or DN_MAX_ISA) has no AVX-512");
    check_all_shapes(DN_ISA_AVX512, DN_CONV_DIRECT, 2e-6);
}
/* The im2col path on the same shapes (the NCHW16c kernel takes most of them). */
TEST(conv_direct_avx512_im2col_vs_ref) {
    if (dn_kernels_isa() < DN_ISA_AVX512) SKIP("CPU (or DN_MAX_ISA) has no AVX-512");
    dn_d16_disable = 1;
    check_all_shapes(DN_ISA_AVX512, DN_CONV_DIRECT, 2e-6);
    dn_d16_disable = 0;
}
TEST(conv_direct_avx2_vs_ref) {
    if (dn_kernels_isa() < DN_ISA_AVX2) SKIP("CPU has no AVX2+FMA");
    check_all_shapes(DN_ISA_AVX2, DN_CONV_DIRECT, 2e-6);
}
/* Winograd: every 3x3 stride-1 shape (others fall back to direct, also checked).
 * F(4x4,3x3) loses a little precision: the bound is relative to max |y|. */
TEST(conv_winograd_avx512_vs_ref) {
    if (dn_kernels_isa() < DN_ISA_AVX512) SKIP("CPU (or DN_MAX_ISA) has no AVX-512");
    dn_wino_min_tiles = 1; /* transforms even on tiny shapes */
    double e = check_all_shapes(DN_ISA_AVX512, DN_CONV_WINOGRAD, 4e-5);
    dn_wino_min_tiles = 0;
    printf("  winograd f4x4 avx512: worst max|dy|/max(1,max|y|) over the shapes = %.2e\n", e);
}
TEST(conv_winograd_avx2_vs_ref) {
    if (dn_kernels_isa() < DN_ISA_AVX2) SKIP("CPU has no AVX2+FMA");
    dn_wino_min_tiles = 1;
    double e = check_all_shapes(DN_ISA_AVX2, DN_CONV_WINOGRAD, 4e-5);
    dn_wino_min_tiles = 0;
    printf("  winograd f4x4 avx2: worst rel err = %.2e\n", e);
}
/* Larger Winograd shapes: several tile chunks, batch 3, odd sizes. */
TEST(conv_winograd_chunks) {
    if (dn_kernels_isa() < DN_ISA_AVX2) SKIP("CPU has no AVX2+FMA");
    dn_pool *pool = dn_pool_new(2);
    const char *name = "?";
    double e = conv_vs_ref(DN_ISA_AUTO, DN_CONV_WINOGRAD, 3, 33, 17, 3, 1, 1, 57, 43, 1, 1, 1, pool, &name);
    CHECK_MSG(e >= 0 && e <= 4e-5, "%s: rel err %g", name, e);
    CHECK(strncmp(name, "winograd", 8) == 0);
    e = conv_vs_ref(DN_ISA_AUTO, DN_CONV_WINOGRAD, 1, 256, 64, 3, 1, 0, 30, 31, 1, 0, 0, pool, &name);
    CHECK_MSG(e >= 0 && e <= 4e-5, "%s: rel err %g", name, e);
    dn_pool_free(pool);
}

/* bf16: against the reference run on bf16-rounded inputs and weights (the
 * products are exact in fp32, so only summation order differs: tight), and
 * against the fp32 reference (loose: bf16 keeps 8 mantissa bits). */
static int has_bf16(void) {
    return dn_kernels_isa() >= DN_ISA_AVX512 && (dn_cpu_features() & DN_CPU_AVX512BF16);
}
static float round_bf16(float v) { return dn_bf16_to_f32(dn_f32_to_bf16(v)); }

TEST(conv_bf16_vs_ref) {
    if (!has_bf16()) SKIP("CPU has no AVX512_BF16");
    dn_pool *pool = dn_pool_new(2);
    double worst_exact = 0, worst_fp32 = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int *c = shapes[si];
        int n = c[0], cin = c[1], cout = c[2], k = c[3], st = c[4], pad = c[5], h = c[6], w = c[7];
        dn_conv_desc d = {cin, cout, k, k, st, pad};
        int oh = dn_conv_out(h, k, st, pad), ow = dn_conv_out(w, k, st, pad);
        size_t nx = (size_t)n * cin * h * w, nw = (size_t)cout * cin * k * k, ny = (size_t)n * cout * oh * ow;
        float *x = malloc(nx * 4), *wt = malloc(nw * 4), *b = malloc(cout * 4), *r = malloc(ny * 4);
        float *xr = malloc(nx * 4), *wr = malloc(nw * 4), *y0 = malloc(ny * 4), *y1 = malloc(ny * 4), *y2 = malloc(ny * 4);
        dn_rng rg;
        dn_rng_seed(&rg, 100 + si);
        fill(x, nx, &rg, 1); fill(wt, nw, &rg, 0.5f); fill(b, cout, &rg, 1); fill(r, ny, &rg, 1);
        for (size_t i = 0; i < nx; i++) xr[i] = round_bf16(x[i]);
        for (size_t i = 0; i < nw; i++) wr[i] = round_bf16(wt[i]);
        const float *res = c[9] & 1 ? r : NULL;
        int relu = (c[9] >> 1) & 1;
        dn_conv_op *op = dn_conv_op_new(&d, wt, c[8] ? b : NULL, DN_CONV_BF16);
        CHECK_MSG(op != NULL, "%s", dn_last_error());
        if (op) {
            CHECK(strstr(dn_conv_op_impl_name(op), "bf16") != NULL);
            void *scr = dn_alloc_aligned(dn_conv_op_scratch(op, n, h, w));
            dn_conv_op_run(op, x, n, h, w, res, relu, y1, si % 2 ? pool : NULL, scr);
            dn_conv2d_ref(&d, xr, n, h, w, wr, c[8] ? b : NULL, res, relu, y0);
            dn_conv2d_ref(&d, x, n, h, w, wt, c[8] ? b : NULL, res, relu, y2);
            double mx = 1, e0 = 0, e2 = 0;
            for (size_t i = 0; i < ny; i++) {
                if (fabs(y2[i]) > mx) mx = fabs(y2[i]);
                double d0 = fabs((double)y0[i] - y1[i]), d2 = fabs((double)y2[i] - y1[i]);
                if (!(d0 <= e0)) e0 = isnan(d0) ? INFINITY : d0;
                if (!(d2 <= e2)) e2 = isnan(d2) ? INFINITY : d2;
            }
            e0 /= mx; e2 /= mx;
            if (e0 > worst_exact) worst_exact = e0;
            if (e2 > worst_fp32) worst_fp32 = e2;
            CHECK_MSG(e0 <= 2e-6, "shape %zu: vs bf16-rounded ref %g", si, e0);
            CHECK_MSG(e2 <= 2e-2, "shape %zu: vs fp32 ref %g", si, e2);
            dn_free_aligned(scr);
            dn_conv_op_free(op);
        }
        free(x); free(wt); free(b); free(r); free(xr); free(wr); free(y0); free(y1); free(y2);
    }
    printf("  bf16: worst rel err vs bf16-rounded ref %.2e, vs fp32 ref %.2e\n", worst_exact, worst_fp32);
    dn_pool_free(pool);
}

/* Winograd+bf16: Winograd (fp32, tight) where it pays, bf16 direct (loose) on
 * inputs too small for it and on shapes it does not cover. */
TEST(conv_winograd_bf16_vs_ref) {
    if (!has_bf16()) SKIP("CPU has no AVX512_BF16");
    dn_pool *pool = dn_pool_new(2);
    const char *name = "?";
    double e = conv_vs_ref(DN_ISA_AUTO, DN_CONV_WINOGRAD_BF16, 3, 33, 17, 3, 1, 1, 57, 43, 1, 1, 1, pool, &name);
    CHECK_MSG(e >= 0 && e <= 4e-5, "%s: rel err %g", name, e);
    CHECK(strstr(name, "winograd") && strstr(name, "bf16"));
    e = conv_vs_ref(DN_ISA_AUTO, DN_CONV_WINOGRAD_BF16, 1, 64, 40, 3, 1, 1, 7, 7, 1, 1, 1, pool, &name); /* 4 tiles: bf16 direct */
    CHECK_MSG(e >= 0 && e > 1e-5 && e <= 2e-2, "%s small input: rel err %g (expected bf16-sized)", name, e);
    e = conv_vs_ref(DN_ISA_AUTO, DN_CONV_WINOGRAD_BF16, 2, 16, 24, 3, 2, 1, 13, 10, 1, 0, 1, pool, &name); /* stride 2 */
    CHECK_MSG(e >= 0 && e <= 2e-2, "%s stride 2: rel err %g", name, e);
    CHECK(strncmp(name, "bf16", 4) == 0);
    dn_pool_free(pool);
}

TEST(conv_bf16_unsupported_isa) {
    dn_conv_desc d = {3, 4, 3, 3, 1, 1};
    float w[4 * 3 * 9] = {0};
    dn_isa old = dn_kernels_force_isa(DN_ISA_AVX2);
    dn_conv_op *op = dn_conv_op_new(&d, w, NULL, DN_CONV_BF16);
    dn_kernels_force_isa(old);
    CHECK(op == NULL);
    CHECK(strstr(dn_last_error(), "bf16") != NULL);
}

TEST(conv_auto_names_impl) {
    dn_conv_desc d = {3, 4, 3, 3, 1, 1};
    float w[4 * 3 * 9] = {0};
    dn_isa old = dn_kernels_force_isa(DN_ISA_SCALAR);
    dn_conv_op *op = dn_conv_op_new(&d, w, NULL, DN_CONV_AUTO);
    dn_kernels_force_isa(old);
    CHECK(op && strcmp(dn_conv_op_impl_name(op), "ref") == 0);
    dn_conv_op_free(op);
    if (dn_kernels_isa() >= DN_ISA_AVX2) {
        op = dn_conv_op_new(&d, w, NULL, DN_CONV_AUTO);
        CHECK(op && strncmp(dn_conv_op_impl_name(op), "direct", 6) == 0);
        dn_conv_op_free(op);
    }
    if (dn_kernels_isa() >= DN_ISA_AVX512) { /* channels in blocks of 16: the NCHW16c kernel */
        dn_conv_desc d16 = {16, 32, 3, 3, 1, 1};
        float *w16 = calloc(16 * 32 * 9, sizeof(float));
        op = dn_conv_op_new(&d16, w16, NULL, DN_CONV_AUTO);
        CHECK(op && strcmp(dn_conv_op_impl_name(op), "direct-nchw16c-avx512") == 0);
        dn_conv_op_free(op);
        free(w16);
    }
}

/* Same output bits for 1, 2 and 3 threads (im2col GEMM path, and the NCHW16c
 * kernel in both its per-worker-image and shared-buffer modes). */
static void check_deterministic(int cin, int cout, int n, int h, int w) {
    dn_conv_desc d = {cin, cout, 3, 3, 1, 1};
    size_t nx = (size_t)n * cin * h * w, nw = (size_t)cout * cin * 9, ny = (size_t)n * cout * h * w;
    float *x = malloc(nx * 4), *wt = malloc(nw * 4), *y[3];
    dn_rng rg;
    dn_rng_seed(&rg, 9);
    fill(x, nx, &rg, 1); fill(wt, nw, &rg, 1);
    dn_conv_op *op = dn_conv_op_new(&d, wt, NULL, DN_CONV_AUTO);
    CHECK(op != NULL);
    void *scr = op ? dn_alloc_aligned(dn_conv_op_scratch(op, n, h, w)) : NULL;
    for (int t = 0; t < 3; t++) {
        y[t] = malloc(ny * 4);
        dn_pool *p = dn_pool_new(t + 1);
        if (op) dn_conv_op_run(op, x, n, h, w, NULL, 1, y[t], p, scr);
        dn_pool_free(p);
    }
    CHECK_MSG(memcmp(y[0], y[1], ny * 4) == 0, "cin %d n %d: 1 vs 2 threads", cin, n);
    CHECK_MSG(memcmp(y[0], y[2], ny * 4) == 0, "cin %d n %d: 1 vs 3 threads", cin, n);
    for (int t = 0; t < 3; t++) free(y[t]);
    dn_free_aligned(scr);
    dn_conv_op_free(op);
    free(x); free(wt);
}
TEST(conv_deterministic_threads) {
    check_deterministic(19, 37, 2, 15, 13);
    check_deterministic(32, 48, 2, 15, 13);
    check_deterministic(32, 48, 3, 9, 16);
}

static double sgemm_vs_ref(int ta, int tb, int M, int N, int K, float alpha, float beta, dn_pool *pool) {
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
    size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
    float *A = malloc(na * 4 + 4), *B = malloc(nb * 4 + 4), *C0 = malloc(nc * 4), *C1 = malloc(nc * 4);
    dn_rng rg;
    dn_rng_seed(&rg, (uint64_t)(M * 7 + N * 13 + K));
    fill(A, na, &rg, 1); fill(B, nb, &rg, 1); fill(C0, nc, &rg, 1);
    memcpy(C1, C0, nc * 4);
    if (beta == 0.0f) for (size_t i = 0; i < nc; i++) C1[i] = NAN; /* beta 0: C is not read */
    dn_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C0, ldc);
    dn_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C1, ldc, pool);
    double mx = 1, md = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            size_t o = (size_t)i * ldc + j;
            if (fabs(C0[o]) > mx) mx = fabs(C0[o]);
            double df = fabs((double)C0[o] - C1[o]);
            if (!(df <= md)) md = isnan(df) ? INFINITY : df;
        }
    free(A); free(B); free(C0); free(C1);
    return md / mx;
}

static void check_sgemm(dn_isa isa) {
    static const int cases[][7] = { /* ta tb M N K alpha*2 beta*2 */
        {0, 0, 1, 1, 1, 2, 0}, {0, 0, 7, 33, 5, 2, 0}, {1, 0, 17, 9, 300, 3, 2}, {0, 1, 64, 49, 257, 2, 1},
        {1, 1, 5, 70, 3, -2, 0}, {0, 0, 130, 300, 513, 2, 2}, {1, 0, 512, 3, 17, 2, 1}, {0, 0, 3, 1000, 2, 1, 0},
    };
    dn_isa old = dn_kernels_force_isa(isa);
    dn_pool *pool = dn_pool_new(2);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int *c = cases[i];
        double e = sgemm_vs_ref(c[0], c[1], c[2], c[3], c[4], c[5] / 2.0f, c[6] / 2.0f, i % 2 ? pool : NULL);
        CHECK_MSG(e <= 2e-6, "%s case %zu (ta%d tb%d %dx%dx%d): rel err %g", dn_isa_name(isa), i, c[0], c[1],
                  c[2], c[3], c[4], e);
    }
    dn_pool_free(pool);
    dn_kernels_force_isa(old);
}
TEST(sgemm_avx512_vs_ref) {
    if (dn_kernels_isa() < DN_ISA_AVX512) SKIP("CPU (or DN_MAX_ISA) has no AVX-512");
    check_sgemm(DN_ISA_AVX512);
}
/* Blocked activations (NCHW16c + zero border): every blocked-capable shape of
 * the table plus first-layer (3-channel) ones with 1, 2 and 4 output blocks per
 * call, against the reference; input borders above the padding (the 1x1
 * downsample reads a border-1 buffer), output borders must come back zero. */
static double blocked_vs_ref(int n, int cin, int cout, int k, int s, int pad, int h, int w, int use_bias, int use_res,
                             int relu, int xb, int yb, dn_pool *pool, int *ran) {
    dn_conv_desc d = {cin, cout, k, k, s, pad};
    int oh = dn_conv_out(h, k, s, pad), ow = dn_conv_out(w, k, s, pad);
    size_t nx = (size_t)n * cin * h * w, nw = (size_t)cout * cin * k * k, ny = (size_t)n * cout * oh * ow;
    float *x = malloc(nx * 4), *wt = malloc(nw * 4), *b = malloc(cout * 4), *r = malloc(ny * 4);
    float *y0 = malloc(ny * 4), *y1 = malloc(ny * 4);
    dn_rng rg;
    dn_rng_seed(&rg, (uint64_t)(n * 7 + cin * 1009 + cout * 17 + k * 3 + s + pad * 7 + h * 31 + w));
    fill(x, nx, &rg, 1); fill(wt, nw, &rg, 0.5f); fill(b, cout, &rg, 1); fill(r, ny, &rg, 1);
    dn_isa old = dn_kernels_force_isa(DN_ISA_AVX512);
    dn_conv_op *op = dn_conv_op_new(&d, wt, use_bias ? b : NULL, DN_CONV_DIRECT);
    dn_kernels_force_isa(old);
    double err = -1;
    *ran = 0;
    if (op && dn_conv_op_blocked(op)) {
        int nchw = dn_conv_op_blocked_nchw_in(op);
        size_t nxb = nchw ? nx : dn_blk_floats(n, cin, h, w, xb), nyb = dn_blk_floats(n, cout, oh, ow, yb);
        float *xbk = dn_alloc_aligned(nxb * 4), *rbk = dn_alloc_aligned(nyb * 4), *ybk = dn_alloc_aligned(nyb * 4);
        void *scr = dn_alloc_aligned(dn_conv_op_blocked_scratch(op, n, h, w) + 64);
        if (nchw) memcpy(xbk, x, nx * 4);
        else dn_blk_from_nchw(x, n, cin, h, w, xb, xbk, pool);
        dn_blk_from_nchw(r, n, cout, oh, ow, yb, rbk, NULL);
        for (size_t i = 0; i < nyb; i++) ybk[i] = NAN;
        dn_status st = dn_conv_op_run_blocked(op, xbk, n, h, w, nchw ? 0 : xb, use_res ? rbk : NULL, relu, ybk, yb,
                                              pool, scr);
        CHECK(st == DN_OK);
        dn_blk_to_nchw(ybk, n, cout, oh, ow, yb, y1, pool);
        /* the border is zero: converting back with a border of yb and to a
         * (h + 2yb) x (w + 2yb) map without border must agree on the frame */
        int hb = oh + 2 * yb, wb = ow + 2 * yb, frame_ok = 1;
        for (int img = 0; img < n; img++)
            for (int cb = 0; cb < cout / 16; cb++)
                for (int yy = 0; yy < hb; yy++)
                    for (int xx = 0; xx < wb; xx++)
                        if (yy < yb || yy >= hb - yb || xx < yb || xx >= wb - yb)
                            for (int l = 0; l < 16; l++)
                                if (ybk[((((size_t)img * (cout / 16) + cb) * hb + yy) * wb + xx) * 16 + l] != 0.0f)
                                    frame_ok = 0;
        CHECK_MSG(frame_ok, "output border not zero (n%d cin%d cout%d k%d)", n, cin, cout, k);
        dn_conv2d_ref(&d, x, n, h, w, wt, use_bias ? b : NULL, use_res ? r : NULL, relu, y0);
        err = rel_err(y0, y1, ny);
        *ran = 1;
        if (!nchw && pad > 0) /* a border narrower than the padding is refused, y untouched */
            CHECK(dn_conv_op_run_blocked(op, xbk, n, h, w, pad - 1, NULL, relu, ybk, yb, pool, scr) == DN_ERR_ARG);
        dn_free_aligned(xbk); dn_free_aligned(rbk); dn_free_aligned(ybk); dn_free_aligned(scr);
    }
    dn_conv_op_free(op);
    free(x); free(wt); free(b); free(r); free(y0); free(y1);
    return err;
}

TEST(conv_blocked_vs_ref) {
    if (dn_kernels_isa() < DN_ISA_AVX512) SKIP("CPU (or DN_MAX_ISA) has no AVX-512");
    static const int extra[][10] = {
        {2, 3, 64, 7, 2, 3, 17, 21, 1, 2},  /* stem: 4 output blocks per call, 6-pixel blocks */
        {1, 3, 32, 7, 2, 3, 9, 30, 1, 3},   /* 2 blocks */
        {3, 5, 48, 3, 1, 1, 6, 5, 0, 2},    /* 3 blocks: one per call */
        {2, 32, 64, 1, 2, 0, 9, 11, 1, 0},  /* 1x1 stride-2 downsample */
        {1, 64, 64, 3, 1, 1, 15, 29, 1, 3}, /* 29 = 10 + 10 + 9 */
        {2, 16, 48, 3, 1, 1, 4, 7, 1, 3},   /* odd number of output blocks */
    };
    dn_pool *pool = dn_pool_new(3);
    int nran = 0;
    const size_t nt = sizeof shapes / sizeof shapes[0], ne = sizeof extra / sizeof extra[0];
    for (size_t i = 0; i < nt + ne; i++) {
        const int *c = i < nt ? shapes[i] : extra[i - nt];
        for (int extra_border = 0; extra_border < 2; extra_border++) {
            int ran = 0;
            double e = blocked_vs_ref(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9] & 1, (c[9] >> 1) & 1,
                                      c[5] + extra_border, extra_border, i % 2 ? pool : NULL, &ran);
            nran += ran;
            CHECK_MSG(!ran || (e >= 0 && e <= 2e-6), "shape %zu (n%d cin%d cout%d k%d s%d p%d %dx%d, border +%d): rel err %g",
                      i, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], extra_border, e);
        }
    }
    CHECK(nran >= 40); /* most shapes have channel counts the blocked path takes */
    dn_pool_free(pool);
}

/* dn_blk_maxpool3s2 / dn_blk_avgpool against plain loops over NCHW, odd sizes,
 * NaN propagation, and the from/to round trip. */
TEST(blocked_pools_vs_plain) {
    const int n = 2, c = 32, h = 9, w = 7, oh = 5, ow = 4;
    size_t nx = (size_t)n * c * h * w;
    float *x = malloc(nx * 4), *back = malloc(nx * 4), *yp = malloc((size_t)n * c * oh * ow * 4);
    float *ref = malloc((size_t)n * c * oh * ow * 4), feat[64], feat_ref[64];
    dn_rng rg;
    dn_rng_seed(&rg, 99);
    fill(x, nx, &rg, 1);
    x[5 * h * w + 3 * w + 2] = NAN;
    float *xb = dn_alloc_aligned(dn_blk_floats(n, c, h, w, 1) * 4), *yb = dn_alloc_aligned(dn_blk_floats(n, c, oh, ow, 2) * 4);
    dn_pool *pool = dn_pool_new(2);
    dn_blk_from_nchw(x, n, c, h, w, 1, xb, pool);
    dn_blk_to_nchw(xb, n, c, h, w, 1, back, NULL);
    CHECK(memcmp(x, back, nx * 4) == 0);
    for (int scalar = 0; scalar < 2; scalar++) {
    dn_blk_scalar = scalar; /* the AVX-512 row kernel (where the CPU has it) and its scalar spec */
    dn_blk_maxpool3s2(xb, n, c, h, w, 1, yb, oh, ow, 2, pool);
    dn_blk_scalar = 0;
    dn_blk_to_nchw(yb, n, c, oh, ow, 2, yp, pool);
    for (int p = 0; p < n * c; p++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                float m = -INFINITY;
                int nan = 0;
                for (int yy = oy * 2 - 1; yy <= oy * 2 + 1; yy++)
                    for (int xx = ox * 2 - 1; xx <= ox * 2 + 1; xx++)
                        if (yy >= 0 && yy < h && xx >= 0 && xx < w) {
                            float v = x[((size_t)p * h + yy) * w + xx];
                            if (isnan(v)) nan = 1;
                            else if (v > m) m = v;
                        }
                ref[((size_t)p * oh + oy) * ow + ox] = nan ? NAN : m;
            }
    int same = 1;
    for (size_t i = 0; i < (size_t)n * c * oh * ow; i++)
        if (!(ref[i] == yp[i] || (isnan(ref[i]) && isnan(yp[i])))) same = 0;
    CHECK(same);
    CHECK(isnan(yp[5 * oh * ow + 1 * ow + 1]));
    }
    x[5 * h * w + 3 * w + 2] = 0.5f;
    dn_blk_from_nchw(x, n, c, h, w, 1, xb, NULL);
    dn_blk_avgpool(xb, n, c, h, w, 1, feat, pool);
    for (int p = 0; p < n * c; p++) {
        double a = 0;
        for (int i = 0; i < h * w; i++) a += x[(size_t)p * h * w + i];
        feat_ref[p] = (float)(a / (h * w));
    }
    CHECK(memcmp(feat, feat_ref, sizeof(float) * n * c) == 0);
    dn_pool_free(pool);
    dn_free_aligned(xb); dn_free_aligned(yb);
    free(x); free(back); free(yp); free(ref);
}

TEST(sgemm_avx2_vs_ref) {
    if (dn_kernels_isa() < DN_ISA_AVX2) SKIP("CPU has no AVX2+FMA");
    check_sgemm(DN_ISA_AVX2);
}

int main(void) {
    RUN(conv_ref_hand);
    RUN(conv_ref_pad_stride);
    RUN(sgemm_ref_hand);
    RUN(conv_op_ref_matches_spec);
    RUN(conv_op_bad_desc);
    RUN(conv_direct_avx512_vs_ref);
    RUN(conv_direct_avx512_im2col_vs_ref);
    RUN(conv_direct_avx2_vs_ref);
    RUN(conv_winograd_avx512_vs_ref);
    RUN(conv_winograd_avx2_vs_ref);
    RUN(conv_winograd_chunks);
    RUN(conv_bf16_vs_ref);
    RUN(conv_winograd_bf16_vs_ref);
    RUN(conv_bf16_unsupported_isa);
    RUN(conv_auto_names_impl);
    RUN(conv_blocked_vs_ref);
    RUN(blocked_pools_vs_plain);
    RUN(conv_deterministic_threads);
    RUN(sgemm_avx512_vs_ref);
    RUN(sgemm_avx2_vs_ref);
    return REPORT();
}
