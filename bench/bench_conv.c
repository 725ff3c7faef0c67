/* Per-layer convolution timing for ResNet-18 at 224x224: GFLOP/s of every
 * conv implementation against a measured FMA peak. Usage:
 *   bench_conv [--batch N] [--threads T] [--impl direct|winograd|ref|bf16|int8] [--reps R] [--blocked 0|1]
 * Prints one line per distinct layer shape (wall GFLOP/s, its % of the measured
 * wall peak, GFLOP/s per busy core from CPU time and its % of the per-core
 * peak) and the total. --blocked 1 (the default where the op supports it) runs
 * the convs on NCHW16c activations as the engine does (dn_conv_op_run_blocked);
 * 0 runs the NCHW interface (dn_conv_op_run). */
#include "core/core.h"
#include "kernels/kernels.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Process CPU seconds: with --threads 1 this is robust to other load on the machine. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* FMA peak: 12 independent accumulator chains per thread, registers only. */
#include <immintrin.h>
typedef struct { long iters; double sink[64], cpu[64]; } peak_arg;
__attribute__((target("avx512f,fma"))) static void peak_job(void *va, int ith, int nth) {
    peak_arg *a = va;
    struct timespec t0, t1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    __m512 acc[12];
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps((float)i);
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (long k = 0; k < a->iters; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], m, c);
    }
    float t = 0;
    for (int i = 0; i < 12; i++) t += _mm512_reduce_add_ps(acc[i]);
    a->sink[ith & 63] = t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    a->cpu[ith & 63] = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
}
/* Wall-clock peak of all threads, and per-core peak from each thread's own
 * CPU time (robust to other load on the machine). */
static void measure_peak(dn_pool *pool, double *wall, double *per_core) {
    peak_arg a = {20000000L, {0}, {0}};
    double t0 = dn_now();
    dn_pool_run(pool, peak_job, &a);
    double t = dn_now() - t0, f = 2.0 * 16 * 12 * (double)a.iters, best = 0;
    int n = dn_pool_size(pool);
    for (int i = 0; i < n && i < 64; i++) if (a.cpu[i] > 0 && f / a.cpu[i] > best) best = f / a.cpu[i];
    *wall = f * n / t / 1e9;
    *per_core = best / 1e9;
}

typedef struct { const char *name; int cin, cout, k, s, p, h, count; } layer;
static const layer L[] = {
    {"conv1", 3, 64, 7, 2, 3, 224, 1},
    {"layer1.conv", 64, 64, 3, 1, 1, 56, 4},
    {"layer2.0.conv1", 64, 128, 3, 2, 1, 56, 1},
    {"layer2.down", 64, 128, 1, 2, 0, 56, 1},
    {"layer2.conv", 128, 128, 3, 1, 1, 28, 3},
    {"layer3.0.conv1", 128, 256, 3, 2, 1, 28, 1},
    {"layer3.down", 128, 256, 1, 2, 0, 28, 1},
    {"layer3.conv", 256, 256, 3, 1, 1, 14, 3},
    {"layer4.0.conv1", 256, 512, 3, 2, 1, 14, 1},
    {"layer4.down", 256, 512, 1, 2, 0, 14, 1},
    {"layer4.conv", 512, 512, 3, 1, 1, 7, 3},
};

int main(int argc, char **argv) {
    int batch = 1, threads = 2, reps = 0, blocked = 1;
    dn_conv_impl impl = DN_CONV_DIRECT;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--blocked")) blocked = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--impl")) {
            const char *v = argv[i + 1];
            impl = !strcmp(v, "ref") ? DN_CONV_REF : !strcmp(v, "winograd") ? DN_CONV_WINOGRAD
                 : !strcmp(v, "bf16") ? DN_CONV_BF16 : !strcmp(v, "int8") ? DN_CONV_INT8 : DN_CONV_DIRECT;
        } else { fprintf(stderr, "bench_conv: unknown option %s\n", argv[i]); return 2; }
    }
    if (batch < 1 || threads < 1) { fprintf(stderr, "bench_conv: bad --batch/--threads\n"); return 2; }
    dn_pool *pool = dn_pool_new(threads);
    double wall = 0, core = 0;
    if (dn_cpu_features() & DN_CPU_AVX512F) {
        measure_peak(pool, &wall, &core);
        printf("measured AVX-512 FMA peak: %.1f GFLOP/s per core (own CPU time), %.1f GFLOP/s wall on %d thread(s)\n",
               core, wall, threads);
    }
    dn_rng rg;
    dn_rng_seed(&rg, 1);
    double tot_t = 0, tot_f = 0, tot_c = 0;
    printf("%-16s %5s %5s %2s %2s %4s  %9s %9s %6s %9s %6s  %s\n", "layer", "cin", "cout", "k", "s", "hw", "ms", "GFLOP/s",
           "%peak", "cpuGF/s", "%core", "impl");
    for (size_t li = 0; li < sizeof L / sizeof L[0]; li++) {
        const layer *l = &L[li];
        dn_conv_desc d = {l->cin, l->cout, l->k, l->k, l->s, l->p};
        int oh = dn_conv_out(l->h, l->k, l->s, l->p);
        size_t nx = (size_t)batch * l->cin * l->h * l->h, nw = (size_t)l->cout * l->cin * l->k * l->k;
        size_t ny = (size_t)batch * l->cout * oh * oh;
        float *x = dn_alloc_aligned(nx * 4), *w = malloc(nw * 4), *b = malloc(l->cout * 4), *y = dn_alloc_aligned(ny * 4);
        for (size_t i = 0; i < nx; i++) x[i] = (float)dn_rng_uniform(&rg) - 0.5f;
        for (size_t i = 0; i < nw; i++) w[i] = 0.1f * ((float)dn_rng_uniform(&rg) - 0.5f);
        for (int i = 0; i < l->cout; i++) b[i] = 0.01f * i;
        dn_conv_op *op = dn_conv_op_new(&d, w, b, impl);
        if (!op) { fprintf(stderr, "bench_conv: %s\n", dn_last_error()); return 1; }
        /* blocked activations: border 1 (the engine's), the first layer reads NCHW */
        int blk = blocked && dn_conv_op_blocked(op), nchw_in = blk && dn_conv_op_blocked_nchw_in(op);
        float *xb = NULL, *yb = NULL;
        if (blk) {
            xb = nchw_in ? NULL : dn_alloc_aligned(dn_blk_floats(batch, l->cin, l->h, l->h, 1) * 4);
            yb = dn_alloc_aligned(dn_blk_floats(batch, l->cout, oh, oh, 1) * 4);
            if (xb) dn_blk_from_nchw(x, batch, l->cin, l->h, l->h, 1, xb, pool);
        }
        size_t sb = blk ? dn_conv_op_blocked_scratch(op, batch, l->h, l->h) : dn_conv_op_scratch(op, batch, l->h, l->h);
        void *scr = dn_alloc_aligned(sb ? sb : 64);
#define RUN_OP()                                                                                         \
    do {                                                                                                 \
        if (blk) dn_conv_op_run_blocked(op, xb ? xb : x, batch, l->h, l->h, xb ? 1 : 0, NULL, 1, yb, 1, pool, scr); \
        else dn_conv_op_run(op, x, batch, l->h, l->h, NULL, 1, y, pool, scr);                             \
    } while (0)
        double flops = 2.0 * batch * l->cout * oh * oh * (double)l->cin * l->k * l->k;
        int r = reps > 0 ? reps : (int)(2e9 / flops) + 1;
        if (r > 200) r = 200;
        RUN_OP(); /* warm-up */
        double best = 1e30, bestc = 1e30;
        for (int i = 0; i < r; i++) {
            double t0 = dn_now(), c0 = cpu_now();
            RUN_OP();
            double t = dn_now() - t0, c = cpu_now() - c0;
            if (t < best) best = t;
            if (c < bestc) bestc = c;
        }
        tot_c += bestc * l->count;
        double gf = flops / best / 1e9, cgf = flops / bestc / 1e9;
        printf("%-16s %5d %5d %2d %2d %4d  %9.3f %9.1f %5.0f%% %9.1f %5.0f%%  %s%s x%d\n", l->name, l->cin, l->cout, l->k,
               l->s, l->h, best * 1e3, gf, wall > 0 ? 100 * gf / wall : 0, cgf, core > 0 ? 100 * cgf / core : 0,
               dn_conv_op_impl_name(op), blk ? " blocked" : "", l->count);
        tot_t += best * l->count;
        tot_f += flops * l->count;
        dn_free_aligned(scr);
        dn_free_aligned(xb); dn_free_aligned(yb);
        dn_conv_op_free(op);
        dn_free_aligned(x); dn_free_aligned(y); free(w); free(b);
    }
    printf("total convs: %.2f ms per batch of %d, %.1f GFLOP/s (%.0f%% of peak), %.1f img/s (convs only); CPU time %.2f ms = "
           "%.1f GFLOP/s per busy core (%.0f%%)\n",
           tot_t * 1e3, batch, tot_f / tot_t / 1e9, wall > 0 ? 100 * tot_f / tot_t / 1e9 / wall : 0, batch / tot_t,
           tot_c * 1e3, tot_f / tot_c / 1e9, core > 0 ? 100 * tot_f / tot_c / 1e9 / core : 0);
    dn_pool_free(pool);
    return 0;
}
