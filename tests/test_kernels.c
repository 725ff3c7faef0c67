/* Kernels: the scalar reference against hand-computed cases, and every fast
 * implementation (each ISA) against the reference on odd shapes. */
#include "core/core.h"
#include "kernels/kernels.h"
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

int main(void) {
    RUN(conv_ref_hand);
    RUN(conv_ref_pad_stride);
    RUN(sgemm_ref_hand);
    RUN(conv_op_ref_matches_spec);
    RUN(conv_op_bad_desc);
    return REPORT();
}
