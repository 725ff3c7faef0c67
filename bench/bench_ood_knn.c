/* Cost of the unknown-input detector's KNN score (src/ood/knn.h) against the
 * forward pass it follows, for a bank of --bank fp16 rows (default 10000, the
 * calibrate default) of 512-d features.
 *
 * Usage: bench_ood_knn [--weights W] [--bank 10000] [--batches 1,32] [--threads 1] [--iters 7] [--save DIR]
 *   W: a torchvision ResNet .pth or a defectnet model (default $DN_SHARED or ../shared
 *   /weights/resnet18-imagenet.pth); its head is replaced by a 6-class one, the detector is
 *   fitted on --bank random non-negative (ReLU-like) feature rows, the bank is all of them.
 * For each batch size it times (median of --iters, wall clock) the forward pass
 * (dn_session_forward, --threads) and, per batch:
 *   ref            dn_ood_knn_ref, the scalar specification (double dots, full sort)
 *   fast scalar    dn_ood_knn with the plain C tile (DN_ISA_SCALAR), 1 thread
 *   fast <isa>     dn_ood_knn with the best tile of this CPU, 1 thread
 *   fast <isa> xT  the same with the bank split over a pool of --threads (what classify does)
 *   all scores     dn_ood_scores_pool: knn + energy + rmd + combo (what classify adds)
 * and prints ms per image and the % of the forward pass of the same batch.
 * The figures are only meaningful on a quiet machine.
 * --save DIR also writes the model with its detector twice and prints both sizes:
 * DIR/knn_f16.safetensors (as defectnet writes it, bank F16) and DIR/knn_f32.safetensors
 * (the same tensors all F32, the form written before the fp16 bank). */
#include "bench_util.h"
#include "core/core.h"
#include "io/safetensors.h"
#include "kernels/kernels.h"
#include "nn/model.h"
#include "ood/knn.h"
#include "ood/ood.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    const char *what;
    int kind; /* 0 ref, 1 fast (isa forced), 2 fast with pool, 3 all scores with pool, 4 forward */
    dn_isa isa;
} variant;

typedef struct {
    dn_session *s;
    dn_ood *o;
    dn_pool *pool;
    const float *x, *feat, *zn, *logits;
    float *out, *scores, *lg;
    int n;
} ctx;

static dn_status run_once(const ctx *c, const variant *v) {
    switch (v->kind) {
    case 0: return dn_ood_knn_ref(c->o->bank, c->o->nbank, c->o->dim, c->zn, c->n, c->o->k, c->out);
    case 1: return dn_ood_knn(c->o->bank, c->o->nbank, c->o->dim, c->zn, c->n, c->o->k, NULL, c->out);
    case 2: return dn_ood_knn(c->o->bank, c->o->nbank, c->o->dim, c->zn, c->n, c->o->k, c->pool, c->out);
    case 3: return dn_ood_scores_pool(c->o, c->feat, c->logits, c->n, c->pool, c->scores);
    default: return dn_session_forward(c->s, c->x, c->n, c->lg);
    }
}

static dn_status median_ms(const ctx *c, const variant *v, int iters, double *ms) {
    double t[64];
    if (iters > 64) iters = 64;
    dn_kernels_force_isa(v->isa);
    dn_status st = run_once(c, v); /* warm-up */
    for (int i = 0; !st && i < iters; i++) {
        double t0 = dn_now();
        st = run_once(c, v);
        t[i] = (dn_now() - t0) * 1e3;
    }
    dn_kernels_force_isa(DN_ISA_AUTO);
    qsort(t, (size_t)iters, sizeof *t, cmp_d);
    *ms = t[iters / 2];
    return st;
}

int main(int argc, char **argv) {
    const char *weights = NULL, *batches = "1,32", *save = NULL;
    int nbank = 10000, threads = 1, iters = 7, rc = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--weights")) weights = v;
        else if (!strcmp(k, "--bank")) nbank = atoi(v);
        else if (!strcmp(k, "--batches")) batches = v;
        else if (!strcmp(k, "--threads")) threads = atoi(v);
        else if (!strcmp(k, "--iters")) iters = atoi(v);
        else if (!strcmp(k, "--save")) save = v;
        else { fprintf(stderr, "bench_ood_knn: unknown option %s\n", k); return 2; }
    }
    if (argc % 2 == 0 || nbank < 16 || threads < 1 || iters < 1) {
        fprintf(stderr, "bench_ood_knn: options come in pairs; need --bank >= 16, --threads >= 1, --iters >= 1\n");
        return 2;
    }
    char wpath[1100];
    if (!weights) weights = bench_default_weights(wpath, sizeof wpath);
    int bs[8], nb = 0, maxb = 0;
    for (const char *p = batches; *p && nb < 8;) {
        char *end;
        long b = strtol(p, &end, 10);
        if (end == p || b < 1 || b > 256) { fprintf(stderr, "bench_ood_knn: --batches: '%s' is not a list of sizes 1..256\n", batches); return 2; }
        bs[nb++] = (int)b;
        if (b > maxb) maxb = (int)b;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') { fprintf(stderr, "bench_ood_knn: --batches: '%s' is not a list of sizes 1..256\n", batches); return 2; }
    }
    dn_model *m = NULL;
    dn_session *s = NULL;
    dn_pool *pool = NULL;
    dn_ood *o = NULL;
    float *x = NULL, *fit = NULL, *feat = NULL, *zn = NULL, *logits = NULL, *out = NULL, *scores = NULL, *lg = NULL;
    int *y = NULL;
    static const char *const names[6] = {"crazing", "inclusion", "patches", "pitted", "rolled", "scratches"};
    if (dn_model_load(weights, &m) || dn_model_new_head(m, 6, names, 1)) {
        fprintf(stderr, "bench_ood_knn: %s\n", dn_last_error());
        goto done;
    }
    int D = m->feat_dim, hw = m->pp.crop > 0 ? m->pp.crop : 224;
    if (dn_session_new(m, maxb, threads, &s) || !(pool = dn_pool_new(threads))) {
        fprintf(stderr, "bench_ood_knn: %s\n", dn_last_error());
        goto done;
    }
    size_t nx = (size_t)maxb * 3 * hw * hw;
    x = malloc(nx * sizeof(float)); fit = malloc((size_t)nbank * D * sizeof(float)); y = malloc((size_t)nbank * sizeof(int));
    feat = malloc((size_t)maxb * D * sizeof(float)); zn = malloc((size_t)maxb * D * sizeof(float));
    logits = malloc((size_t)maxb * 6 * sizeof(float)); out = malloc((size_t)maxb * sizeof(float));
    scores = malloc((size_t)maxb * DN_OOD_NKINDS * sizeof(float)); lg = malloc((size_t)maxb * 6 * sizeof(float));
    if (!x || !fit || !y || !feat || !zn || !logits || !out || !scores || !lg) { fprintf(stderr, "bench_ood_knn: out of memory\n"); goto done; }
    dn_rng r;
    dn_rng_seed(&r, 42);
    for (size_t i = 0; i < nx; i++) x[i] = dn_rng_normal(&r);
    for (int i = 0; i < nbank; i++) { /* ReLU-like features with a class-dependent part */
        y[i] = i % 6;
        for (int j = 0; j < D; j++) fit[(size_t)i * D + j] = fabsf(dn_rng_normal(&r)) + (j % 6 == y[i] ? 1.0f : 0.0f);
    }
    for (int i = 0; i < maxb * D; i++) feat[i] = fabsf(dn_rng_normal(&r));
    dn_ood_cfg cfg;
    dn_ood_cfg_default(&cfg);
    cfg.bank = nbank;
    double t0 = dn_now();
    if (dn_ood_fit(m, fit, y, nbank, fit, 64 < nbank ? 64 : nbank, &cfg, &o)) { fprintf(stderr, "bench_ood_knn: %s\n", dn_last_error()); goto done; }
    dn_ood_logits(m, feat, maxb, logits);
    for (int i = 0; i < maxb; i++) {
        double ss = 0;
        for (int j = 0; j < D; j++) ss += (double)feat[(size_t)i * D + j] * feat[(size_t)i * D + j];
        for (int j = 0; j < D; j++) zn[(size_t)i * D + j] = (float)(feat[(size_t)i * D + j] / sqrt(ss));
    }
    if (save) { /* file sizes: the F16 bank as written, and every tensor F32 as before */
        char p16[1100], p32[1100];
        snprintf(p16, sizeof p16, "%s/knn_f16.safetensors", save);
        snprintf(p32, sizeof p32, "%s/knn_f32.safetensors", save);
        dn_tensors ts = {0};
        dn_meta meta = {0};
        uint8_t *buf = NULL;
        size_t n16 = 0, n32 = 0;
        m->ood = o;
        dn_status st = dn_model_save(m, p16);
        m->ood = NULL;
        if (!st) st = dn_safetensors_load(p16, &ts, &meta);
        if (!st) st = dn_safetensors_save(p32, &ts, &meta);
        dn_tensors_free(&ts);
        dn_meta_free(&meta);
        if (!st && !(st = dn_read_file(p16, (size_t)1 << 31, &buf, &n16))) free(buf);
        if (!st && !(st = dn_read_file(p32, (size_t)1 << 31, &buf, &n32))) free(buf);
        if (st) { fprintf(stderr, "bench_ood_knn: --save: %s\n", dn_last_error()); goto done; }
        printf("model file with a %d-row bank: F16 bank %zu bytes (%s), F32 bank %zu bytes (%s), saved %zu bytes (%.1f%%)\n",
               o->nbank, n16, p16, n32, p32, n32 - n16, 100.0 * (double)(n32 - n16) / (double)n32);
    }
    char fast[32], pooled[40];
    snprintf(fast, sizeof fast, "fast %s", dn_ood_knn_isa());
    snprintf(pooled, sizeof pooled, "fast %s x%d", dn_ood_knn_isa(), threads);
    variant vs[] = {{"forward", 4, DN_ISA_AUTO},  {"knn ref", 0, DN_ISA_AUTO},    {"knn fast scalar", 1, DN_ISA_SCALAR},
                    {fast, 1, DN_ISA_AUTO},       {pooled, 2, DN_ISA_AUTO},       {"all ood scores", 3, DN_ISA_AUTO}};
    printf("bench_ood_knn: %s, bank %d x %d fp16 (%.1f MB), k %d, %d thread(s), input %dx%d, median of %d (fit %.1f s)\n", weights,
           o->nbank, D, o->nbank * (double)D * 2 / 1e6, o->k, threads, hw, hw, iters, dn_now() - t0);
    printf("%-6s %-22s %12s %12s %10s\n", "batch", "what", "ms/batch", "ms/image", "% forward");
    for (int bi = 0; bi < nb; bi++) {
        ctx c = {s, o, pool, x, feat, zn, logits, out, scores, lg, bs[bi]};
        double fwd = 0;
        for (size_t v = 0; v < sizeof vs / sizeof vs[0]; v++) {
            double ms;
            int it = vs[v].kind == 0 && iters > 3 ? 3 : iters; /* the reference sorts every query's dots: slow */
            if (median_ms(&c, &vs[v], it, &ms)) { fprintf(stderr, "bench_ood_knn: %s: %s\n", vs[v].what, dn_last_error()); goto done; }
            if (v == 0) fwd = ms;
            printf("%-6d %-22s %12.3f %12.4f %9.2f%%\n", bs[bi], vs[v].what, ms, ms / bs[bi], 100.0 * ms / fwd);
        }
    }
    rc = 0;
done:
    dn_ood_free(o);
    dn_pool_free(pool);
    dn_session_free(s);
    dn_model_free(m);
    free(x); free(fit); free(y); free(feat); free(zn); free(logits); free(out); free(scores); free(lg);
    return rc;
}
