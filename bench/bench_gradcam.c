/* Cost of one Grad-CAM heatmap (src/ood/gradcam.h) against the forward pass it
 * follows: what `serve --heatmaps`, `explain` and eval's gallery pay per image.
 *
 * Usage: bench_gradcam [--weights W] [--size 224] [--threads 1] [--iters 9] [--layer 4]
 *   W: a torchvision ResNet .pth or a defectnet model (default $DN_SHARED or ../shared
 *   /weights/resnet18-imagenet.pth); its head is replaced by a 6-class one.
 * Times, median of --iters (wall clock, one seeded random image, batch 1, --threads):
 *   forward        dn_session_forward (logits only)
 *   gradcam map    dn_gradcam: forward + backward from the logit to the layer output + map
 *   gradcam png    dn_gradcam_png: the map, the overlay on the image and the PNG encoding
 * and prints ms and the multiple of the forward pass. bench/gradcam.sh runs this and the
 * PyTorch recipe (tools/bench_gradcam_torch.py) in the same run. Only meaningful on a
 * quiet machine. */
#include "bench_util.h"
#include "core/core.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "ood/gradcam.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    const dn_model *m;
    dn_session *s;
    const float *x;
    float *logits, *cam;
    int layer;
} ctx;

static dn_status run_once(const ctx *c, int what) {
    int ch, cw;
    if (what == 0) return dn_session_forward(c->s, c->x, 1, c->logits);
    if (what == 1) return dn_gradcam(c->m, c->s, c->x, c->layer, -1, c->cam, &ch, &cw, NULL, NULL);
    uint8_t *png = NULL;
    size_t len = 0;
    dn_status st = dn_gradcam_png(c->m, c->s, c->x, c->layer, -1, &png, &len, NULL, NULL);
    free(png);
    return st;
}

int main(int argc, char **argv) {
    const char *weights = NULL;
    int size = 224, threads = 1, iters = 9, layer = 4, rc = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--weights")) weights = v;
        else if (!strcmp(k, "--size")) size = atoi(v);
        else if (!strcmp(k, "--threads")) threads = atoi(v);
        else if (!strcmp(k, "--iters")) iters = atoi(v);
        else if (!strcmp(k, "--layer")) layer = atoi(v);
        else { fprintf(stderr, "bench_gradcam: unknown option %s\n", k); return 2; }
    }
    if (argc % 2 == 0 || size < 32 || size > 1024 || threads < 1 || iters < 1 || iters > 64 || layer < 1 || layer > 4) {
        fprintf(stderr, "bench_gradcam: options come in pairs; --size 32..1024, --threads >= 1, --iters 1..64, --layer 1..4\n");
        return 2;
    }
    char wpath[1100];
    if (!weights) weights = bench_default_weights(wpath, sizeof wpath);
    static const char *const names[6] = {"crazing", "inclusion", "patches", "pitted", "rolled", "scratches"};
    dn_model *m = NULL;
    dn_session *s = NULL;
    float *x = NULL, *logits = NULL, *cam = NULL;
    if (dn_model_load(weights, &m) || dn_model_new_head(m, 6, names, 1)) {
        fprintf(stderr, "bench_gradcam: %s\n", dn_last_error());
        goto done;
    }
    m->pp.crop = size;
    m->pp.resize = size;
    if (dn_session_new(m, 1, threads, &s)) {
        fprintf(stderr, "bench_gradcam: %s\n", dn_last_error());
        goto done;
    }
    size_t nx = (size_t)3 * size * size;
    x = malloc(nx * sizeof(float));
    logits = malloc(6 * sizeof(float));
    cam = malloc((size_t)size * size * sizeof(float)); /* any stage map is smaller */
    if (!x || !logits || !cam) { fprintf(stderr, "bench_gradcam: out of memory\n"); goto done; }
    dn_rng r;
    dn_rng_seed(&r, 7);
    for (size_t i = 0; i < nx; i++) x[i] = dn_rng_normal(&r);
    ctx c = {m, s, x, logits, cam, layer};
    static const char *const what[3] = {"forward", "gradcam map", "gradcam png"};
    double med[3];
    for (int w = 0; w < 3; w++) {
        double t[64];
        dn_status st = run_once(&c, w); /* warm-up: plans, buffers */
        for (int i = 0; !st && i < iters; i++) {
            double t0 = dn_now();
            st = run_once(&c, w);
            t[i] = (dn_now() - t0) * 1e3;
        }
        if (st) { fprintf(stderr, "bench_gradcam: %s: %s\n", what[w], dn_last_error()); goto done; }
        qsort(t, (size_t)iters, sizeof *t, cmp_d);
        med[w] = t[iters / 2];
    }
    printf("bench_gradcam: %s, input %dx%d, batch 1, layer%d, %d thread(s), median of %d\n", weights, size, size, layer,
           threads, iters);
    for (int w = 0; w < 3; w++)
        printf("defectnet %-12s %9.2f ms  %5.2fx forward\n", what[w], med[w], med[w] / med[0]);
    rc = 0;
done:
    dn_session_free(s);
    dn_model_free(m);
    free(x);
    free(logits);
    free(cam);
    return rc;
}
