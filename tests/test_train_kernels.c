/* Training kernels (src/nn/wgrad.h): the AVX-512 tile kernel against its
 * scalar reference, the whole direct weight gradient (scalar and vector
 * tiles) against a naive triple loop on odd shapes (batch 1, channel counts
 * not multiples of 16 or 3, stride 2, padding, 7x7 stem, 1x1 downsample,
 * non-square inputs), chunking over images, bit-identical results across
 * thread counts, and refused plans. */
#include "harness.h"
#include "nn/layers.h"
#include "nn/wgrad.h"
#include <unistd.h>

static float frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.f - 1.f;
}

/* dw[co][ci][ky][kx] = sum dy * x, in double */
static void naive_wgrad(const dn_conv_p *p, const float *x, int n, int h, int w, const float *dy, double *dw) {
    int k = p->k, oh = dn_conv_out(h, k, p->stride, p->pad), ow = dn_conv_out(w, k, p->stride, p->pad);
    for (int co = 0; co < p->cout; co++)
        for (int ci = 0; ci < p->cin; ci++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    double acc = 0;
                    for (int i = 0; i < n; i++)
                        for (int oy = 0; oy < oh; oy++)
                            for (int ox = 0; ox < ow; ox++) {
                                int iy = oy * p->stride - p->pad + ky, ix = ox * p->stride - p->pad + kx;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                acc += (double)dy[(((size_t)i * p->cout + co) * oh + oy) * ow + ox] *
                                       x[(((size_t)i * p->cin + ci) * h + iy) * w + ix];
                            }
                    dw[(((size_t)co * p->cin + ci) * k + ky) * k + kx] = acc;
                }
}

/* Runs the direct weight gradient for one shape; maxn steers the chunking.
 * Checks scalar and (when available) AVX-512 tiles against the naive loop,
 * accumulation (+=) into a non-zero dw, and 1 vs 2 threads bit for bit. */
static void wgrad_case(int n, int cin, int cout, int h, int w, int k, int s, int pd, int maxn) {
    dn_conv_p p = {cin, cout, k, s, pd, NULL};
    dn_wgrad_plan pl;
    if (dn_wgrad_plan_init(&pl, &p, h, w, maxn)) { CHECK_MSG(0, "plan: %s", dn_last_error()); return; }
    int oh = pl.oh, ow = pl.ow;
    size_t nx = (size_t)n * cin * h * w, ny = (size_t)n * cout * oh * ow, nw = (size_t)cout * cin * k * k;
    float *x = malloc(nx * 4), *dy = malloc(ny * 4), *dw = malloc(nw * 4), *dw2 = malloc(nw * 4);
    double *ref = malloc(nw * sizeof(double));
    void *scr = dn_alloc_aligned(dn_wgrad_scratch(&pl));
    dn_pool *pool = dn_pool_new(2);
    unsigned seed = 1234u + (unsigned)(n * 7 + cin * 13 + k);
    for (size_t i = 0; i < nx; i++) x[i] = frand(&seed);
    for (size_t i = 0; i < ny; i++) dy[i] = frand(&seed);
    naive_wgrad(&p, x, n, h, w, dy, ref);
    double scale = 1;
    for (size_t i = 0; i < nw; i++) if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
    for (int vec = 0; vec < 2; vec++) {
        if (vec && !dn_wgrad_available()) {
            static int told;
            if (!told++) printf("  (AVX-512 tile kernel not available: scalar tiles only)\n");
            break;
        }
        for (size_t i = 0; i < nw; i++) dw[i] = 0.5f; /* accumulates */
        dn_wgrad_run(&pl, x, n, dy, dw, pool, scr, !vec);
        double worst = 0;
        for (size_t i = 0; i < nw; i++) {
            double d = fabs(dw[i] - 0.5 - ref[i]);
            if (d > worst) worst = d;
        }
        CHECK_MSG(worst <= 1e-5 * scale + 1e-6, "%s tiles: n%d cin%d cout%d %dx%d k%d s%d p%d: max err %g (scale %g)",
                  vec ? "AVX-512" : "scalar", n, cin, cout, h, w, k, s, pd, worst, scale);
        for (size_t i = 0; i < nw; i++) dw2[i] = 0.5f;
        dn_wgrad_run(&pl, x, n, dy, dw2, NULL, scr, !vec);
        CHECK_MSG(!memcmp(dw, dw2, nw * 4), "dw differs between 1 and 2 threads (n%d cin%d k%d)", n, cin, k);
    }
    dn_pool_free(pool);
    dn_free_aligned(scr);
    free(x); free(dy); free(dw); free(dw2); free(ref);
}

TEST(wgrad_3x3_s1_p1) { wgrad_case(2, 5, 7, 9, 6, 3, 1, 1, 2); wgrad_case(1, 17, 4, 5, 5, 3, 1, 1, 1); }
TEST(wgrad_3x3_s2_p1) { wgrad_case(3, 5, 4, 7, 6, 3, 2, 1, 3); wgrad_case(2, 6, 5, 8, 8, 3, 2, 1, 2); }
TEST(wgrad_1x1_s2_downsample) { wgrad_case(3, 4, 6, 5, 5, 1, 2, 0, 3); wgrad_case(2, 19, 3, 8, 7, 1, 2, 0, 2); }
TEST(wgrad_1x1_s1) { wgrad_case(1, 3, 2, 4, 3, 1, 1, 0, 1); wgrad_case(2, 10, 11, 6, 6, 1, 1, 0, 2); }
TEST(wgrad_7x7_s2_p3_stem) { wgrad_case(2, 3, 4, 9, 8, 7, 2, 3, 2); wgrad_case(1, 3, 5, 17, 15, 7, 2, 3, 1); }
TEST(wgrad_no_padding_and_wide_pad) { wgrad_case(2, 3, 3, 6, 7, 3, 1, 0, 2); wgrad_case(1, 2, 3, 4, 4, 3, 1, 2, 1); }
/* maxn 1 forces one image per chunk; maxn 7 with n 5 one chunk: same sums */
TEST(wgrad_chunking) { wgrad_case(5, 4, 5, 6, 6, 3, 1, 1, 1); wgrad_case(5, 4, 5, 6, 6, 3, 1, 1, 7); }
/* a ResNet-like size with many chunks and super-blocks */
TEST(wgrad_resnet_like) { wgrad_case(3, 32, 40, 14, 14, 3, 1, 1, 3); wgrad_case(2, 24, 30, 14, 14, 3, 2, 1, 2); }

/* every (R, G) instance of the vector tile against the scalar tile */
TEST(wgrad_tile_avx512_vs_ref) {
    if (!dn_wgrad_available()) SKIP("AVX-512 not available (or capped by DN_MAX_ISA / DN_FORCE_REF)");
    int Qd = 48, P = 96, g = 3;
    float *dy = dn_alloc_aligned(3 * (size_t)g * Qd * 4), *x = dn_alloc_aligned((size_t)g * P * 4 + 64);
    unsigned seed = 99;
    for (int i = 0; i < 3 * g * Qd; i++) dy[i] = frand(&seed);
    for (int i = 0; i < g * P + 16; i++) x[i] = frand(&seed);
    const float *xp[9];
    for (int j = 0; j < 9; j++) xp[j] = x + (j / 3) * 11 + j % 3 + (j == 8 ? 5 : 0);
    for (int R = 1; R <= 3; R++)
        for (int G = 1; G <= 9; G++) {
            float a[27], b[27];
            dn_wgrad_tile_ref(R, G, dy, (size_t)g * Qd, xp, g, Qd, P, a);
            dn_wgrad_tile_avx512(R, G, dy, (size_t)g * Qd, xp, g, Qd, P, b);
            for (int i = 0; i < R * G; i++) CHECK_MSG(fabs(a[i] - b[i]) <= 1e-4, "R%d G%d [%d]: %g vs %g", R, G, i, a[i], b[i]);
        }
    dn_free_aligned(dy);
    dn_free_aligned(x);
}

/* the conv layer routes through the direct kernel and matches the GEMM path */
TEST(conv_layer_direct_vs_gemm) {
    if (!dn_wgrad_available()) SKIP("AVX-512 not available: the conv layer uses its GEMM path only");
    dn_conv_p p = {16, 20, 3, 1, 1, NULL};
    int n = 2, h = 12, w = 12;
    size_t nw = (size_t)p.cout * p.cin * 9, nx = (size_t)n * p.cin * h * w, ny = (size_t)n * p.cout * h * w;
    p.w = calloc(nw, 4);
    float *x = malloc(nx * 4), *dy = malloc(ny * 4), *a = calloc(nw, 4), *b = calloc(nw, 4);
    unsigned seed = 5;
    for (size_t i = 0; i < nx; i++) x[i] = frand(&seed);
    for (size_t i = 0; i < ny; i++) dy[i] = frand(&seed);
    dn_conv_layer L, R;
    CHECK(dn_conv_layer_init(&L, &p, h, w, n, DN_CONV_AUTO) == DN_OK);
    CHECK(dn_conv_layer_init(&R, &p, h, w, n, DN_CONV_REF) == DN_OK); /* REF: GEMM weight gradient */
    size_t sl = dn_conv_layer_scratch(&L, n), sr = dn_conv_layer_scratch(&R, n);
    CHECK(sl >= dn_wgrad_scratch(&L.wg));
    void *scr = dn_alloc_aligned(sl > sr ? sl : sr);
    dn_conv_layer_bwd_weight(&L, x, n, dy, a, NULL, scr);
    dn_conv_layer_bwd_weight(&R, x, n, dy, b, NULL, scr);
    double worst = 0;
    for (size_t i = 0; i < nw; i++) if (fabs(a[i] - b[i]) > worst) worst = fabs(a[i] - b[i]);
    CHECK_MSG(worst < 1e-4, "direct vs GEMM weight gradient: max diff %g", worst);
    dn_conv_layer_release(&L);
    dn_conv_layer_release(&R);
    dn_free_aligned(scr);
    free(p.w); free(x); free(dy); free(a); free(b);
}

/* Winograd F(3x3, 2x2) weight gradient against the naive loop: odd sizes
 * (partial 2x2 tiles), padding 0..2, channel counts not multiples of 16,
 * chunking, accumulation and 1 vs 2 threads bit for bit. */
static void wino_case(int n, int cin, int cout, int h, int w, int pd, int maxn) {
    dn_conv_p p = {cin, cout, 3, 1, pd, NULL};
    dn_wgrad_wino ww;
    if (dn_wgrad_wino_plan(&ww, &p, h, w, maxn)) { CHECK_MSG(0, "plan: %s", dn_last_error()); return; }
    size_t nx = (size_t)n * cin * h * w, ny = (size_t)n * cout * ww.oh * ww.ow, nw = (size_t)cout * cin * 9;
    float *x = malloc(nx * 4), *dy = malloc(ny * 4), *dw = malloc(nw * 4), *dw2 = malloc(nw * 4);
    double *ref = malloc(nw * sizeof(double));
    void *scr = dn_alloc_aligned(dn_wgrad_wino_scratch(&ww));
    dn_pool *pool = dn_pool_new(2);
    unsigned seed = 77u + (unsigned)(n * 3 + cin + pd);
    for (size_t i = 0; i < nx; i++) x[i] = frand(&seed);
    for (size_t i = 0; i < ny; i++) dy[i] = frand(&seed);
    naive_wgrad(&p, x, n, h, w, dy, ref);
    double scale = 1, worst = 0;
    for (size_t i = 0; i < nw; i++) if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
    for (size_t i = 0; i < nw; i++) dw[i] = dw2[i] = -0.25f;
    dn_wgrad_wino_run(&ww, x, n, dy, dw, pool, scr);
    dn_wgrad_wino_run(&ww, x, n, dy, dw2, NULL, scr);
    for (size_t i = 0; i < nw; i++) if (fabs(dw[i] + 0.25 - ref[i]) > worst) worst = fabs(dw[i] + 0.25 - ref[i]);
    CHECK_MSG(worst <= 1e-5 * scale + 1e-6, "winograd n%d cin%d cout%d %dx%d p%d maxn%d: max err %g (scale %g)", n, cin,
              cout, h, w, pd, maxn, worst, scale);
    CHECK_MSG(!memcmp(dw, dw2, nw * 4), "winograd dw differs between 1 and 2 threads");
    dn_pool_free(pool);
    dn_free_aligned(scr);
    free(x); free(dy); free(dw); free(dw2); free(ref);
}

TEST(wgrad_winograd_odd_shapes) {
    wino_case(1, 3, 5, 7, 9, 1, 1);   /* batch 1, odd plane: partial tiles */
    wino_case(2, 17, 6, 6, 6, 1, 2);
    wino_case(3, 5, 4, 8, 7, 0, 3);   /* no padding */
    wino_case(2, 4, 3, 5, 6, 2, 2);   /* padding 2 */
    wino_case(5, 6, 7, 9, 9, 1, 1);   /* one image per chunk */
    wino_case(3, 33, 40, 14, 14, 1, 3);
    wino_case(2, 20, 13, 28, 28, 1, 2); /* rows >= 384: AVX-512 dot-product tiles when available */
}

TEST(wgrad_winograd_plan_refuses) {
    dn_wgrad_wino ww;
    dn_conv_p a = {4, 4, 3, 2, 1, NULL}, b = {4, 4, 1, 1, 0, NULL}, c = {4, 4, 3, 1, 1, NULL};
    CHECK(dn_wgrad_wino_plan(&ww, &a, 8, 8, 1) == DN_ERR_ARG); /* stride 2 */
    CHECK(dn_wgrad_wino_plan(&ww, &b, 8, 8, 1) == DN_ERR_ARG); /* 1x1 */
    CHECK(dn_wgrad_wino_plan(&ww, &c, 8, 5000, 1) == DN_ERR_ARG); /* row wider than the transform buffers */
    CHECK(strstr(dn_last_error(), "too large") != NULL);
    dn_clear_error();
}

/* the conv layer picks Winograd for a 128x128 3x3 conv and matches the GEMM path */
TEST(conv_layer_winograd_vs_gemm) {
    dn_conv_p p = {128, 128, 3, 1, 1, NULL};
    int n = 2, h = 6, w = 6;
    size_t nw = (size_t)p.cout * p.cin * 9, nx = (size_t)n * p.cin * h * w;
    p.w = calloc(nw, 4);
    float *x = malloc(nx * 4), *dy = malloc(nx * 4), *a = calloc(nw, 4), *b = calloc(nw, 4);
    unsigned seed = 8;
    for (size_t i = 0; i < nx; i++) { x[i] = frand(&seed); dy[i] = frand(&seed); }
    dn_conv_layer L, R;
    CHECK(dn_conv_layer_init(&L, &p, h, w, n, DN_CONV_AUTO) == DN_OK);
    CHECK(dn_conv_layer_init(&R, &p, h, w, n, DN_CONV_REF) == DN_OK);
    CHECK(L.ww_ok == 1 && R.ww_ok == 0);
    size_t sl = dn_conv_layer_scratch(&L, n), sr = dn_conv_layer_scratch(&R, n);
    CHECK(sl >= dn_wgrad_wino_scratch(&L.ww));
    void *scr = dn_alloc_aligned(sl > sr ? sl : sr);
    dn_conv_layer_bwd_weight(&L, x, n, dy, a, NULL, scr);
    dn_conv_layer_bwd_weight(&R, x, n, dy, b, NULL, scr);
    double worst = 0;
    for (size_t i = 0; i < nw; i++) if (fabs(a[i] - b[i]) > worst) worst = fabs(a[i] - b[i]);
    CHECK_MSG(worst < 1e-4, "Winograd vs GEMM weight gradient: max diff %g", worst);
    dn_conv_layer_release(&L);
    dn_conv_layer_release(&R);
    dn_free_aligned(scr);
    free(p.w); free(x); free(dy); free(a); free(b);
}

/* Weight gradients of the conv layer (each path it picks: Winograd, direct,
 * GEMM) against PyTorch's own convolution backward, computed at test time by
 * tools/wgrad_ref.py (the full-width shapes make fixtures too large). */
static int have_torch(void) { return system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0; }

static int write_f32(const char *path, const float *v, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(v, 4, n, f) == n;
    return fclose(f) == 0 && ok;
}

static void torch_case(int n, int cin, int cout, int h, int w, int k, int s, int pd, const char *expect) {
    dn_conv_p p = {cin, cout, k, s, pd, NULL};
    size_t nw = (size_t)cout * cin * k * k;
    p.w = calloc(nw, 4);
    dn_conv_layer L;
    if (dn_conv_layer_init(&L, &p, h, w, n, DN_CONV_AUTO)) { CHECK_MSG(0, "%s", dn_last_error()); free(p.w); return; }
    const char *path = L.ww_ok ? "winograd" : (L.wg_ok && dn_wgrad_available() && L.oh * L.ow * 5 >= L.wg.Qd * 4) ? "direct" : "gemm";
    if (expect && dn_wgrad_available()) CHECK_MSG(!strcmp(path, expect), "path %s, expected %s", path, expect);
    size_t nx = (size_t)n * cin * h * w, ny = (size_t)n * cout * L.oh * L.ow;
    float *x = malloc(nx * 4), *dy = malloc(ny * 4), *dw = calloc(nw, 4), *ref = malloc(nw * 4);
    void *scr = dn_alloc_aligned(dn_conv_layer_scratch(&L, n));
    unsigned seed = 4242u + (unsigned)cin;
    for (size_t i = 0; i < nx; i++) x[i] = frand(&seed);
    for (size_t i = 0; i < ny; i++) dy[i] = frand(&seed);
    dn_conv_layer_bwd_weight(&L, x, n, dy, dw, NULL, scr);
    char fx[] = "/tmp/dn_wgrad_x_XXXXXX", fy[] = "/tmp/dn_wgrad_dy_XXXXXX", fo[] = "/tmp/dn_wgrad_out_XXXXXX", cmd[512];
    int a = mkstemp(fx), b = mkstemp(fy), c = mkstemp(fo);
    if (a >= 0) close(a);
    if (b >= 0) close(b);
    if (c >= 0) close(c);
    int ok = a >= 0 && b >= 0 && c >= 0 && write_f32(fx, x, nx) && write_f32(fy, dy, ny);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tools/wgrad_ref.py %s %s %s %d %d %d %d %d %d %d %d", fx, fy, fo, n, cin,
             cout, h, w, k, s, pd);
    ok = ok && system(cmd) == 0;
    FILE *f = ok ? fopen(fo, "rb") : NULL;
    ok = f && fread(ref, 4, nw, f) == nw;
    if (f) fclose(f);
    CHECK_MSG(ok, "PyTorch reference failed: %s", cmd);
    if (ok) {
        double scale = 1, worst = 0;
        for (size_t i = 0; i < nw; i++) if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
        for (size_t i = 0; i < nw; i++) if (fabs(dw[i] - ref[i]) > worst) worst = fabs(dw[i] - ref[i]);
        CHECK_MSG(worst <= 1e-5 * scale, "%s path, cin%d cout%d %dx%d k%d s%d: max err %g vs PyTorch (scale %g)", path,
                  cin, cout, h, w, k, s, worst, scale);
    }
    remove(fx); remove(fy); remove(fo);
    dn_conv_layer_release(&L);
    dn_free_aligned(scr);
    free(p.w); free(x); free(dy); free(dw); free(ref);
}

TEST(wgrad_vs_pytorch) {
    if (!have_torch()) SKIP("/usr/bin/python3 has no torch (PyTorch reference unavailable)");
    torch_case(2, 128, 128, 9, 9, 3, 1, 1, "winograd");  /* layer2-like */
    torch_case(2, 64, 64, 28, 28, 3, 1, 1, "winograd");  /* layer1-like: Winograd on dot-product tiles */
    torch_case(3, 48, 40, 12, 12, 3, 1, 1, "direct");    /* fewer channels: direct kernel */
    torch_case(2, 3, 16, 40, 40, 7, 2, 3, "direct");     /* stem */
    torch_case(2, 32, 48, 7, 7, 3, 2, 1, "gemm");        /* strided, small plane */
    torch_case(2, 16, 24, 10, 10, 1, 2, 0, NULL);        /* downsample */
}

TEST(wgrad_plan_refuses_bad_shapes) {
    dn_wgrad_plan pl;
    dn_conv_p p = {3, 4, 7, 2, 0, NULL};
    CHECK(dn_wgrad_plan_init(&pl, &p, 5, 5, 1) == DN_ERR_ARG);  /* 7x7 without padding on 5x5 */
    CHECK(strstr(dn_last_error(), "too small") != NULL);
    dn_conv_p q = {3, 4, 0, 1, 0, NULL};
    CHECK(dn_wgrad_plan_init(&pl, &q, 5, 5, 1) == DN_ERR_ARG);  /* k = 0 */
    dn_conv_p r = {3, 4, 3, 1, 1, NULL};
    CHECK(dn_wgrad_plan_init(&pl, &r, 5, 5, 0) == DN_ERR_ARG);  /* no batch */
    CHECK(dn_wgrad_plan_init(&pl, &r, 20000, 20000, 1) == DN_ERR_ARG); /* plane too large */
    CHECK(strstr(dn_last_error(), "too large") != NULL);
    /* the conv layer still plans such a shape (GEMM weight gradient instead) */
    dn_conv_layer L;
    CHECK(dn_conv_layer_init(&L, &r, 20000, 20000, 1, DN_CONV_AUTO) == DN_OK);
    CHECK(L.wg_ok == 0 && L.ww_ok == 0);
    dn_conv_layer_release(&L);
    dn_clear_error();
}

int main(void) {
    RUN(wgrad_3x3_s1_p1);
    RUN(wgrad_3x3_s2_p1);
    RUN(wgrad_1x1_s2_downsample);
    RUN(wgrad_1x1_s1);
    RUN(wgrad_7x7_s2_p3_stem);
    RUN(wgrad_no_padding_and_wide_pad);
    RUN(wgrad_chunking);
    RUN(wgrad_resnet_like);
    RUN(wgrad_tile_avx512_vs_ref);
    RUN(conv_layer_direct_vs_gemm);
    RUN(wgrad_plan_refuses_bad_shapes);
    RUN(wgrad_winograd_odd_shapes);
    RUN(wgrad_winograd_plan_refuses);
    RUN(conv_layer_winograd_vs_gemm);
    RUN(wgrad_vs_pytorch);
    return REPORT();
}
