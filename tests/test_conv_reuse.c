/* Small-map training speed paths.
 * 1. Re-packing conv operators in place (dn_conv_op_set_weights, used by the
 * training net to refresh its ops every step without allocating): an op built
 * from weights A and then given weights B must compute bit for bit what an op
 * built from B computes, for every implementation (reference, direct NCHW16c,
 * direct packed GEMM, Winograd incl. its transforms, bf16 when the CPU has it),
 * with and without bias, on odd shapes (channels not multiples of 16, stride 2,
 * 1x1, 7x7). Also the training conv layer: prepare after a weight change
 * (re-pack) equals a freshly initialised layer, and bad arguments are refused.
 * 2. The NCHW16c kernel's narrow-row path (dn_direct16_rows_avx512: several
 * images per call for output rows of 1..3 pixels) against the scalar reference
 * conv and bit for bit against the image-by-image row kernel, on odd batch
 * sizes (short last image group), strides 1 and 2, non-square maps, bias,
 * residual and ReLU.
 * 3. The optimizers' AVX-512 update loops bit for bit against the baseline
 * ones (SGD with momentum/Nesterov, AdamW; odd sizes, several steps). */
#include "harness.h"
#include "kernels/kern_int.h"
#include "nn/layers.h"
#include "train/optim.h"

static float frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.f - 1.f;
}

static void fill(float *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = frand(&seed);
}

/* One shape and implementation: y(op(A) re-packed with B) == y(op(B)). */
static void reuse_case(dn_conv_impl impl, int n, int cin, int cout, int h, int w, int k, int s, int pd, int bias) {
    dn_conv_desc d = {cin, cout, k, k, s, pd};
    int oh = dn_conv_out(h, k, s, pd), ow = dn_conv_out(w, k, s, pd);
    size_t nx = (size_t)n * cin * h * w, ny = (size_t)n * cout * oh * ow, nw = (size_t)cout * cin * k * k;
    float *x = malloc(nx * 4), *wa = malloc(nw * 4), *wb = malloc(nw * 4), *ba = malloc(cout * 4),
          *bb = malloc(cout * 4), *y1 = malloc(ny * 4), *y2 = malloc(ny * 4);
    dn_pool *pool = dn_pool_new(2);
    fill(x, nx, 11u + (unsigned)cin);
    fill(wa, nw, 22u + (unsigned)cout);
    fill(wb, nw, 33u + (unsigned)k);
    fill(ba, (size_t)cout, 44u);
    fill(bb, (size_t)cout, 55u);
    dn_conv_op *a = dn_conv_op_new(&d, wa, bias ? ba : NULL, impl);
    dn_conv_op *b = dn_conv_op_new(&d, wb, bias ? bb : NULL, impl);
    if (!a || !b) {
        CHECK_MSG(0, "op impl %d: %s", (int)impl, dn_last_error());
        goto done;
    }
    CHECK(dn_conv_op_set_weights(a, wb, bias ? bb : NULL) == DN_OK);
    CHECK(!strcmp(dn_conv_op_impl_name(a), dn_conv_op_impl_name(b)));
    dn_conv_op_run(a, x, n, h, w, NULL, 0, y1, pool, NULL);
    dn_conv_op_run(b, x, n, h, w, NULL, 0, y2, pool, NULL);
    CHECK_MSG(!memcmp(y1, y2, ny * 4), "impl %s n %d cin %d cout %d %dx%d k %d s %d bias %d differs",
              dn_conv_op_impl_name(a), n, cin, cout, h, w, k, s, bias);
    /* and back to A: a second re-pack overwrites every packed value */
    CHECK(dn_conv_op_set_weights(b, wa, bias ? ba : NULL) == DN_OK);
    dn_conv_op *c = dn_conv_op_new(&d, wa, bias ? ba : NULL, impl);
    if (c) {
        dn_conv_op_run(b, x, n, h, w, NULL, 1, y1, pool, NULL);
        dn_conv_op_run(c, x, n, h, w, NULL, 1, y2, pool, NULL);
        CHECK_MSG(!memcmp(y1, y2, ny * 4), "impl %s: re-pack back to A differs", dn_conv_op_impl_name(b));
    }
    dn_conv_op_free(c);
done:
    dn_conv_op_free(a);
    dn_conv_op_free(b);
    dn_pool_free(pool);
    free(x); free(wa); free(wb); free(ba); free(bb); free(y1); free(y2);
}

static void shapes(dn_conv_impl impl) {
    for (int bias = 0; bias < 2; bias++) {
        reuse_case(impl, 2, 16, 32, 9, 7, 3, 1, 1, bias);   /* NCHW16c eligible */
        reuse_case(impl, 3, 32, 16, 4, 4, 3, 1, 1, bias);   /* tiny map */
        reuse_case(impl, 1, 5, 7, 6, 5, 3, 1, 1, bias);     /* packed GEMM path, odd channels */
        reuse_case(impl, 2, 16, 16, 7, 8, 3, 2, 1, bias);   /* strided */
        reuse_case(impl, 2, 6, 9, 5, 5, 1, 2, 0, bias);     /* 1x1 downsample */
        reuse_case(impl, 1, 3, 16, 11, 10, 7, 2, 3, bias);  /* stem */
    }
}

TEST(set_weights_ref) { shapes(DN_CONV_REF); }
TEST(set_weights_direct) { shapes(DN_CONV_DIRECT); }
TEST(set_weights_direct_im2col_path) {
    dn_d16_disable = 1; /* the packed-GEMM weights even where NCHW16c would serve */
    shapes(DN_CONV_DIRECT);
    dn_d16_disable = 0;
}
TEST(set_weights_winograd) {
    dn_wino_min_tiles = 1; /* transformed weights used even on tiny shapes */
    shapes(DN_CONV_WINOGRAD);
    dn_d16_disable = 1;
    shapes(DN_CONV_WINOGRAD);
    dn_d16_disable = 0;
    dn_wino_min_tiles = 0;
}
TEST(set_weights_avx2) {
    if (dn_kernels_isa() < DN_ISA_AVX2) SKIP("no AVX2 on this CPU");
    dn_isa old = dn_kernels_force_isa(DN_ISA_AVX2);
    dn_wino_min_tiles = 1;
    shapes(DN_CONV_DIRECT);
    shapes(DN_CONV_WINOGRAD);
    dn_wino_min_tiles = 0;
    dn_kernels_force_isa(old);
}
TEST(set_weights_bf16) {
    if (dn_kernels_isa() < DN_ISA_AVX512 || !(dn_cpu_features() & DN_CPU_AVX512BF16))
        SKIP("no AVX512_BF16 on this CPU");
    shapes(DN_CONV_BF16);
    dn_wino_min_tiles = 1;
    shapes(DN_CONV_WINOGRAD_BF16);
    dn_wino_min_tiles = 0;
}

TEST(set_weights_refuses_bad_args) {
    dn_conv_desc d = {4, 4, 3, 3, 1, 1};
    float w[144] = {0}, b[4] = {0};
    dn_conv_op *op = dn_conv_op_new(&d, w, NULL, DN_CONV_DIRECT), *ob = dn_conv_op_new(&d, w, b, DN_CONV_DIRECT);
    CHECK(op && ob);
    if (!op || !ob) { dn_conv_op_free(op); dn_conv_op_free(ob); return; }
    CHECK(dn_conv_op_set_weights(op, NULL, NULL) == DN_ERR_ARG);
    CHECK(dn_conv_op_set_weights(NULL, w, NULL) == DN_ERR_ARG);
    CHECK(dn_conv_op_set_weights(op, w, b) == DN_ERR_ARG);
    CHECK(strstr(dn_last_error(), "bias") != NULL);
    CHECK(dn_conv_op_set_weights(ob, w, NULL) == DN_ERR_ARG);
    dn_clear_error();
    dn_conv_op_free(op);
    dn_conv_op_free(ob);
}

/* Training conv layer: forward and data-gradient ops prepared, weights
 * changed, prepared again (re-packed in place, same op objects) == a fresh
 * layer prepared from the new weights. Covers AUTO picking Winograd for a
 * large batch and direct for a small one on the same layer (op replaced). */
static void layer_case(int impl, int cin, int cout, int h, int w, int k, int s, int pd) {
    float *wt = malloc((size_t)cout * cin * k * k * 4);
    dn_conv_p p = {cin, cout, k, s, pd, wt};
    dn_conv_layer L1, L2;
    int n = 3, big = 64;
    fill(wt, (size_t)cout * cin * k * k, 7u);
    CHECK(dn_conv_layer_init(&L1, &p, h, w, big, impl) == DN_OK);
    CHECK(dn_conv_layer_init(&L2, &p, h, w, big, impl) == DN_OK);
    size_t scr = dn_conv_layer_scratch(&L1, big);
    void *sc = dn_alloc_aligned(scr);
    size_t nx = (size_t)big * cin * h * w, ny = (size_t)big * cout * L1.oh * L1.ow;
    float *x = malloc(nx * 4), *y1 = malloc(ny * 4), *y2 = malloc(ny * 4), *d1 = malloc(nx * 4),
          *d2 = malloc(nx * 4);
    dn_pool *pool = dn_pool_new(2);
    fill(x, nx, 8u);
    for (int round = 0; round < 3; round++) {
        int nn = round == 1 ? big : n; /* AUTO: another impl for the big batch */
        CHECK(dn_conv_layer_prepare(&L1, 1, 1, nn) == DN_OK);
        const dn_conv_op *f0 = L1.fwd;
        fill(wt, (size_t)cout * cin * k * k, 100u + (unsigned)round); /* "optimizer step" */
        CHECK(dn_conv_layer_prepare(&L1, 1, 1, nn) == DN_OK);
        CHECK(L1.fwd == f0); /* same impl: re-packed, not rebuilt */
        if (impl == DN_CONV_AUTO && cin == 32)
            CHECK(!strncmp(dn_conv_op_impl_name(L1.fwd), "winograd", 8) == (nn == big));
        dn_conv_layer_release(&L2);
        CHECK(dn_conv_layer_prepare(&L2, 1, 1, nn) == DN_OK);
        dn_conv_layer_fwd(&L1, x, nn, y1, pool, sc);
        dn_conv_layer_fwd(&L2, x, nn, y2, pool, sc);
        CHECK_MSG(!memcmp(y1, y2, (size_t)nn * cout * L1.oh * L1.ow * 4), "fwd round %d differs", round);
        dn_conv_layer_bwd_data(&L1, nn, y1, d1, pool, sc);
        dn_conv_layer_bwd_data(&L2, nn, y1, d2, pool, sc);
        CHECK_MSG(!memcmp(d1, d2, (size_t)nn * cin * h * w * 4), "bwd data round %d differs", round);
    }
    dn_conv_layer_release(&L1);
    dn_conv_layer_release(&L2);
    dn_pool_free(pool);
    dn_free_aligned(sc);
    free(wt); free(x); free(y1); free(y2); free(d1); free(d2);
}

TEST(layer_prepare_repacks) {
    layer_case(DN_CONV_AUTO, 32, 16, 32, 32, 3, 1, 1); /* Winograd at batch 64, direct at 3 */
    layer_case(DN_CONV_AUTO, 16, 16, 12, 12, 3, 1, 1);
    layer_case(DN_CONV_AUTO, 5, 7, 6, 7, 3, 1, 1);
    layer_case(DN_CONV_DIRECT, 16, 32, 5, 5, 3, 2, 1);
    layer_case(DN_CONV_WINOGRAD, 32, 16, 4, 4, 3, 1, 1);
    layer_case(DN_CONV_REF, 3, 4, 6, 6, 3, 1, 1);
}

/* y(narrow path) vs reference (1e-4 relative) and vs image by image (exact). */
static void narrow_case(int n, int cin, int cout, int h, int w, int k, int s, int pd, int epi) {
    dn_conv_desc d = {cin, cout, k, k, s, pd};
    int oh = dn_conv_out(h, k, s, pd), ow = dn_conv_out(w, k, s, pd);
    size_t nx = (size_t)n * cin * h * w, ny = (size_t)n * cout * oh * ow, nw = (size_t)cout * cin * k * k;
    float *x = malloc(nx * 4), *wt = malloc(nw * 4), *b = malloc(cout * 4), *res = malloc(ny * 4),
          *y = malloc(ny * 4), *yr = malloc(ny * 4), *yi = malloc(ny * 4);
    dn_pool *pool = dn_pool_new(2);
    fill(x, nx, 1u + (unsigned)n);
    fill(wt, nw, 2u + (unsigned)h);
    fill(b, (size_t)cout, 3u);
    fill(res, ny, 4u);
    const float *bb = epi ? b : NULL, *rr = epi ? res : NULL;
    dn_conv_op *op = dn_conv_op_new(&d, wt, bb, DN_CONV_DIRECT);
    CHECK(op != NULL);
    if (op) {
        dn_conv_op_run(op, x, n, h, w, rr, epi, y, pool, NULL);
        dn_conv2d_ref(&d, x, n, h, w, wt, bb, rr, epi, yr);
        double md = 0;
        for (size_t i = 0; i < ny; i++) {
            double e = fabs((double)y[i] - yr[i]) / (1.0 + fabs((double)yr[i]));
            if (e > md) md = e;
        }
        CHECK_MSG(md < 1e-4, "n %d %dx%d s %d: max rel diff %g vs reference", n, h, w, s, md);
        dn_d16_narrow_disable = 1;
        dn_conv_op_run(op, x, n, h, w, rr, epi, yi, NULL, NULL);
        dn_d16_narrow_disable = 0;
        CHECK_MSG(!memcmp(y, yi, ny * 4), "n %d %dx%d s %d: narrow path differs from image by image", n, h, w, s);
    }
    dn_conv_op_free(op);
    dn_pool_free(pool);
    free(x); free(wt); free(b); free(res); free(y); free(yr); free(yi);
}

TEST(d16_narrow_rows_vs_ref) {
    if (dn_kernels_isa() < DN_ISA_AVX512) SKIP("no AVX-512: the NCHW16c kernels are not used");
    int ns[] = {2, 7, 13};
    for (int i = 0; i < 3; i++) {
        int n = ns[i];
        narrow_case(n, 32, 16, 2, 2, 3, 1, 1, i & 1);   /* 2x2 maps (layer4 at 64 px) */
        narrow_case(n, 16, 32, 1, 1, 3, 1, 1, 1);       /* 1x1 */
        narrow_case(n, 16, 16, 3, 3, 3, 1, 1, 0);       /* 3 wide */
        narrow_case(n, 16, 48, 5, 2, 3, 1, 1, 1);       /* tall and narrow */
        narrow_case(n, 32, 32, 4, 4, 3, 2, 1, i & 1);   /* stride 2 down to 2x2 */
        narrow_case(n, 16, 16, 5, 5, 3, 2, 1, 1);       /* stride 2 down to 3x3 */
        narrow_case(n, 16, 16, 4, 3, 3, 1, 0, 0);       /* no padding: 2x1 */
        narrow_case(n, 16, 16, 4, 4, 3, 1, 1, 1);       /* 4 wide: image by image path */
    }
}

/* Runs steps of kind on two copies of the same parameters: one under forced
 * baseline ISA, one under the CPU's; results must match bit for bit. */
static void optim_case(dn_optim_kind kind, int nesterov) {
    enum { NP = 3 };
    int64_t sizes[NP] = {1, 37, 4099};
    float *d[2][NP], *g[NP];
    dn_param ps[2][NP];
    for (int i = 0; i < NP; i++) {
        g[i] = malloc(sizes[i] * 4);
        for (int c = 0; c < 2; c++) {
            d[c][i] = malloc(sizes[i] * 4);
            fill(d[c][i], (size_t)sizes[i], 70u + (unsigned)i);
            dn_param q = {"p", d[c][i], g[i], sizes[i], i == 2 ? DN_PARAM_HEAD : DN_PARAM_BACKBONE, i == 1};
            ps[c][i] = q;
        }
    }
    dn_optim_cfg cfg;
    dn_optim_cfg_default(&cfg, kind);
    cfg.nesterov = nesterov;
    cfg.weight_decay = 0.05f;
    dn_optim *o[2] = {NULL, NULL};
    dn_pool *pool = dn_pool_new(2);
    CHECK(dn_optim_new(&cfg, ps[0], NP, &o[0]) == DN_OK && dn_optim_new(&cfg, ps[1], NP, &o[1]) == DN_OK);
    for (int step = 0; step < 4 && o[0] && o[1]; step++) {
        for (int i = 0; i < NP; i++) fill(g[i], (size_t)sizes[i], 90u + (unsigned)(step * 3 + i));
        dn_isa old = dn_kernels_force_isa(DN_ISA_SCALAR);
        CHECK(dn_optim_step(o[0], 1e-2f) == DN_OK);
        dn_kernels_force_isa(old);
        dn_optim_set_pool(o[1], pool);
        CHECK(dn_optim_step(o[1], 1e-2f) == DN_OK);
    }
    for (int i = 0; i < NP; i++)
        CHECK_MSG(!memcmp(d[0][i], d[1][i], (size_t)sizes[i] * 4), "kind %d param %d differs", (int)kind, i);
    dn_optim_free(o[0]);
    dn_optim_free(o[1]);
    dn_pool_free(pool);
    for (int i = 0; i < NP; i++) { free(g[i]); free(d[0][i]); free(d[1][i]); }
}

TEST(optim_avx512_bit_identical) {
    if (dn_kernels_isa() < DN_ISA_AVX512) SKIP("no AVX-512: only the baseline update loops run");
    optim_case(DN_OPT_ADAMW, 0);
    optim_case(DN_OPT_SGD, 0);
    optim_case(DN_OPT_SGD, 1);
}

int main(void) {
    RUN(set_weights_ref);
    RUN(set_weights_direct);
    RUN(set_weights_direct_im2col_path);
    RUN(set_weights_winograd);
    RUN(set_weights_avx2);
    RUN(set_weights_bf16);
    RUN(set_weights_refuses_bad_args);
    RUN(layer_prepare_repacks);
    RUN(d16_narrow_rows_vs_ref);
    RUN(optim_avx512_bit_identical);
    return REPORT();
}
