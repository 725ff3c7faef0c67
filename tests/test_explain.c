/* Grad-CAM (src/ood/gradcam.c) against the PyTorch reference written by
 * tools/gradcam_ref.py (tests/fixtures/gradcam, committed: the narrow fixture
 * model r18n, 2 inputs of 64 x 64, predicted class and class 3, layer1..4),
 * overlay colour scale, bad input. */
#include "harness.h"
#include "core/core.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "ood/gradcam.h"

#define MODEL "tests/fixtures/resnet/r18n.pth"
#define DIR "tests/fixtures/gradcam/"

static float *read_f32(const char *path, size_t *n) {
    uint8_t *b;
    size_t len;
    if (dn_read_file(path, 1 << 24, &b, &len)) return NULL;
    *n = len / 4;
    return (float *)b;
}

TEST(parity_with_pytorch) {
    size_t nx, nc;
    float *x = read_f32(DIR "gradcam_input.f32", &nx), *ref = read_f32(DIR "gradcam_cam.f32", &nc);
    dn_model *m = NULL;
    dn_session *s = NULL;
    dn_session_opts o = {1, 1, 64, 64, -1};
    CHECK(x && ref && nx == 2 * 3 * 64 * 64);
    CHECK(dn_model_load(MODEL, &m) == DN_OK && dn_session_new_ex(m, &o, &s) == DN_OK);
    if (!x || !ref || !s) goto done;
    const int sizes[4] = {16, 8, 4, 2};
    size_t off = 0;
    double worst = 0;
    for (int i = 0; i < 2; i++)
        for (int which = 0; which < 2; which++)
            for (int L = 1; L <= 4; L++) {
                float cam[256];
                int ch = 0, cw = 0, used = -1, pred = -1;
                CHECK(dn_gradcam(m, s, x + (size_t)i * 3 * 64 * 64, L, which ? 3 : -1, cam, &ch, &cw, &used, &pred) == DN_OK);
                CHECK(ch == sizes[L - 1] && cw == sizes[L - 1]);
                CHECK(used == (which ? 3 : pred));
                int hw = sizes[L - 1] * sizes[L - 1];
                double mx = 0;
                for (int p = 0; p < hw; p++) mx = fmax(mx, fabs(ref[off + p]));
                for (int p = 0; p < hw; p++) {
                    double e = fabs(cam[p] - ref[off + p]) / (mx > 0 ? mx : 1);
                    if (e > worst) worst = e;
                }
                off += (size_t)hw;
            }
    CHECK(off == nc);
    CHECK_MSG(worst <= 1e-4, "worst relative error %.3g", worst);
    printf("  Grad-CAM vs PyTorch: worst error %.2g relative to the map's max\n", worst);
done:
    dn_session_free(s);
    dn_model_free(m);
    free(x);
    free(ref);
}

TEST(overlay_absolute_scale) {
    /* the same map under a large reference stays cool; under its own max it reaches red */
    float x[3 * 8 * 8] = {0}, cam[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    dn_preproc pp;
    dn_preproc_default(&pp);
    dn_image a, b;
    CHECK(dn_gradcam_overlay(x, 8, 8, &pp, cam, 2, 2, 100.0f, &a) == DN_OK);
    CHECK(dn_gradcam_overlay(x, 8, 8, &pp, cam, 2, 2, 0.0f, &b) == DN_OK);
    const uint8_t *pa = a.data + (7 * 8 + 7) * 3, *pb = b.data + (7 * 8 + 7) * 3; /* bottom-right: the 0.4 cell */
    CHECK_MSG(pb[0] == 190 && pb[1] == 58 && pb[2] == 52, "%d %d %d", pb[0], pb[1], pb[2]); /* red blended 50% over the mean grey */
    CHECK_MSG(pa[0] == 124 && pa[1] == 116 && pa[2] == 104, "%d %d %d", pa[0], pa[1], pa[2]); /* 0.4 / 100 < 0.05: no heat */
    free(a.data);
    free(b.data);
    CHECK(dn_gradcam_overlay(NULL, 8, 8, &pp, cam, 2, 2, 1, &a) == DN_ERR_ARG);
}

TEST(bad_input) {
    dn_model *m = NULL;
    dn_session *s = NULL;
    dn_session_opts o = {1, 1, 64, 64, -1};
    CHECK(dn_model_load(MODEL, &m) == DN_OK && dn_session_new_ex(m, &o, &s) == DN_OK);
    if (!s) { dn_model_free(m); return; }
    float *x = calloc(3 * 64 * 64, sizeof(float)), cam[256];
    CHECK(dn_gradcam(m, s, x, 5, -1, cam, NULL, NULL, NULL, NULL) == DN_ERR_ARG && strstr(dn_last_error(), "layer 5"));
    CHECK(dn_gradcam(m, s, x, 4, 99, cam, NULL, NULL, NULL, NULL) == DN_ERR_ARG && strstr(dn_last_error(), "class 99"));
    CHECK(dn_gradcam(m, s, NULL, 4, -1, cam, NULL, NULL, NULL, NULL) == DN_ERR_ARG);
    CHECK(dn_gradcam_layer_parse("layer3") == 3 && dn_gradcam_layer_parse("4") == 4 && dn_gradcam_layer_parse("layer5") == -1 &&
          dn_gradcam_layer_parse("fc") == -1);
    free(x);
    dn_session_free(s);
    dn_model_free(m);
}

int main(void) {
    RUN(parity_with_pytorch);
    RUN(overlay_absolute_scale);
    RUN(bad_input);
    return REPORT();
}
