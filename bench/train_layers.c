/* Per-layer profile of the training convolutions (src/nn/layers.h) on
 * ResNet-18's conv shapes at 224x224: forward, data gradient and weight
 * gradient, single thread, CPU seconds per call (CPU time is steadier than
 * wall time on a shared machine). The weight gradient is timed for the path
 * the layer picks (auto: Winograd / direct / GEMM, see layers.h) and for the
 * alternatives (impl "direct": no Winograd; impl "ref": the im2col GEMM), so
 * the choice can be checked on this machine. Random inputs, zero weights do
 * not matter for timing.
 * --size S scales every map to an S x S input (64: layer4 at 2x2); --impl
 * direct times forward / data gradient without Winograd (default auto).
 * Usage: train_layers [--batch 32] [--reps 2] [--layer i] [--size 224] [--impl auto|direct] */
#include "core/core.h"
#include "nn/layers.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct { int cin, cout, k, s, p, h, count; const char *name; } shape;

static const shape shapes[] = {
    {3, 64, 7, 2, 3, 224, 1, "conv1 (stem)"},      {64, 64, 3, 1, 1, 56, 4, "layer1 3x3"},
    {64, 128, 3, 2, 1, 56, 1, "layer2.0.conv1 s2"}, {128, 128, 3, 1, 1, 28, 3, "layer2 3x3"},
    {64, 128, 1, 2, 0, 56, 1, "layer2 downsample"}, {128, 256, 3, 2, 1, 28, 1, "layer3.0.conv1 s2"},
    {256, 256, 3, 1, 1, 14, 3, "layer3 3x3"},       {128, 256, 1, 2, 0, 28, 1, "layer3 downsample"},
    {256, 512, 3, 2, 1, 14, 1, "layer4.0.conv1 s2"}, {512, 512, 3, 1, 1, 7, 3, "layer4 3x3"},
    {256, 512, 1, 2, 0, 14, 1, "layer4 downsample"},
};

/* CPU seconds of one weight-gradient call with implementation impl; -1 on failure. */
static double time_wgrad(const dn_conv_p *p, int h, int n, int impl, int reps, const float *x, const float *dy,
                         float *dw, const char **path) {
    dn_conv_layer L;
    if (dn_conv_layer_init(&L, p, h, h, n, impl)) return -1;
    void *scr = dn_alloc_aligned(dn_conv_layer_scratch(&L, n));
    if (!scr) return -1;
    *path = L.ww_ok && dn_kernels_isa() >= DN_ISA_AVX2 ? "winograd"
            : L.wg_ok && impl != DN_CONV_REF && dn_wgrad_available() && (long)L.oh * L.ow * 5 >= (long)L.wg.Qd * 4
                ? "direct" : "gemm";
    dn_conv_layer_bwd_weight(&L, x, n, dy, dw, NULL, scr); /* warm-up */
    double t = cpu_now();
    for (int r = 0; r < reps; r++) dn_conv_layer_bwd_weight(&L, x, n, dy, dw, NULL, scr);
    t = (cpu_now() - t) / reps;
    dn_free_aligned(scr);
    dn_conv_layer_release(&L);
    return t;
}

int main(int argc, char **argv) {
    int n = 32, reps = 2, only = -1, size = 224, impl = DN_CONV_AUTO;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--batch")) n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--layer")) only = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--size")) size = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--impl") && !strcmp(argv[i + 1], "direct")) impl = DN_CONV_DIRECT;
        else if (!strcmp(argv[i], "--impl") && !strcmp(argv[i + 1], "auto")) impl = DN_CONV_AUTO;
        else { fprintf(stderr, "train_layers: unknown option %s\n", argv[i]); return 2; }
    }
    if (n < 1 || reps < 1 || size < 32 || size % 32) {
        fprintf(stderr, "train_layers: bad --batch/--reps/--size (size: a multiple of 32)\n");
        return 2;
    }
    printf("train_layers: %dx%d, batch %d, 1 thread, CPU s per call (GFLOP/s; Winograd counted as direct FLOP)\n", size, size, n);
    printf("%-20s %3s | %-17s | %-17s | %-26s | %s\n", "layer", "x", "forward+prepare", "data grad+prepare",
           "weight grad (path)", "weight grad: direct / GEMM");
    double tot[3] = {0, 0, 0};
    for (int i = 0; i < (int)(sizeof shapes / sizeof shapes[0]); i++) {
        if (only >= 0 && i != only) continue;
        shape sz = shapes[i];
        sz.h = sz.h * size / 224;
        const shape *s = &sz;
        dn_conv_p p = {s->cin, s->cout, s->k, s->s, s->p, NULL};
        size_t nw = (size_t)p.cin * p.cout * p.k * p.k;
        int oh = dn_conv_out(s->h, p.k, p.stride, p.pad);
        size_t nx = (size_t)n * p.cin * s->h * s->h, ny = (size_t)n * p.cout * oh * oh;
        p.w = dn_calloc(nw, sizeof(float));
        float *x = dn_malloc(nx * 4), *dy = dn_malloc(ny * 4), *dw = dn_calloc(nw, sizeof(float));
        if (!p.w || !x || !dy || !dw) { fprintf(stderr, "train_layers: out of memory\n"); return 1; }
        dn_rng r;
        dn_rng_seed(&r, 1);
        for (size_t j = 0; j < nx; j++) x[j] = dn_rng_normal(&r);
        for (size_t j = 0; j < ny; j++) dy[j] = dn_rng_normal(&r);
        for (size_t j = 0; j < nw; j++) p.w[j] = 0.05f * dn_rng_normal(&r);
        double flop = 2.0 * n * p.cout * oh * oh * (double)p.cin * p.k * p.k;
        dn_conv_layer L;
        if (dn_conv_layer_init(&L, &p, s->h, s->h, n, impl)) { fprintf(stderr, "%s\n", dn_last_error()); return 1; }
        void *scr = dn_alloc_aligned(dn_conv_layer_scratch(&L, n));
        double t = cpu_now();
        dn_conv_layer_prepare(&L, 1, 0, n);
        dn_conv_layer_fwd(&L, x, n, dy, NULL, scr);
        double tf = cpu_now() - t;
        dn_conv_layer_release(&L);
        double td = 0;
        if (i > 0) { /* the stem's input needs no gradient */
            t = cpu_now();
            dn_conv_layer_prepare(&L, 0, 1, n);
            dn_conv_layer_bwd_data(&L, n, dy, x, NULL, scr);
            td = cpu_now() - t;
            dn_conv_layer_release(&L);
        }
        dn_free_aligned(scr);
        const char *pa, *pd, *pg;
        double tw = time_wgrad(&p, s->h, n, DN_CONV_AUTO, reps, x, dy, dw, &pa);
        double twd = time_wgrad(&p, s->h, n, DN_CONV_DIRECT, reps, x, dy, dw, &pd);
        double twg = time_wgrad(&p, s->h, n, DN_CONV_REF, reps, x, dy, dw, &pg);
        printf("%-20s %3d | %6.3f (%4.0f)    | %6.3f (%4.0f)    | %6.3f (%4.0f) %-9s | %6.3f %-6s / %6.3f\n", s->name,
               s->count, tf, flop / tf * 1e-9, td, td > 0 ? flop / td * 1e-9 : 0, tw, flop / tw * 1e-9, pa, twd, pd,
               twg);
        tot[0] += s->count * tf; tot[1] += s->count * td; tot[2] += s->count * tw;
        free(p.w); free(x); free(dy); free(dw);
    }
    printf("per step (x count): forward %.2f s, data grad %.2f s, weight grad %.2f s CPU\n", tot[0], tot[1], tot[2]);
    return 0;
}
