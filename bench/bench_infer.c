/* defectnet side of bench/run.sh: ResNet-18 forward (dn_session_forward) on the
 * shared input file, same weights as the other systems.
 * Usage: bench_infer --weights W.pth --input out/input.f32 --batch N
 *            [--threads 2] [--impl auto|direct|winograd|bf16|int8|ref] [--quant MODE] [--iters 10] [--warmup 2]
 * int8 (--impl or --quant) first calibrates activation scales on all images of --input.
 * --quant sets the model's quant.mode metadata (bf16, winograd, bf16+winograd, int8; see
 * nn/quant.h) and lets the engine pick per conv, as a quantized model file would.
 * Prints one JSON line (img/s, latency percentiles per batch in ms, peak RSS in MB,
 * top-1 of each image) like bench_ort.js and tools/bench_torch.py. */
#include "core/core.h"
#include "io/pth.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "nn/quant.h"
#include "nn/quant_int8.h"
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double pct(const double *s, int n, double p) {
    int i = (int)(p / 100 * n + 0.999999) - 1;
    return s[i < 0 ? 0 : i >= n ? n - 1 : i];
}

int main(int argc, char **argv) {
    const char *weights = NULL, *input = NULL, *impl_s = "auto", *quant = NULL;
    int batch = 1, threads = 2, iters = 10, warmup = 2, rc = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--weights")) weights = v;
        else if (!strcmp(k, "--input")) input = v;
        else if (!strcmp(k, "--batch")) batch = atoi(v);
        else if (!strcmp(k, "--threads")) threads = atoi(v);
        else if (!strcmp(k, "--iters")) iters = atoi(v);
        else if (!strcmp(k, "--warmup")) warmup = atoi(v);
        else if (!strcmp(k, "--impl")) impl_s = v;
        else if (!strcmp(k, "--quant")) quant = v;
        else { fprintf(stderr, "bench_infer: unknown option %s\n", k); return 2; }
    }
    if (!weights || !input || batch < 1 || iters < 1 || threads < 1) {
        fprintf(stderr, "bench_infer: need --weights, --input, --batch >= 1, --iters >= 1\n");
        return 2;
    }
    dn_tensors ts = {0};
    dn_model *m = NULL;
    dn_session *s = NULL;
    uint8_t *raw = NULL;
    float *logits = NULL;
    double *lat = NULL;
    dn_conv_impl impl;
    size_t len = 0, per = 3 * 224 * 224;
    if (dn_conv_impl_parse(impl_s, &impl)) goto fail;
    if (dn_pth_load(weights, &ts) || dn_model_from_tensors(&ts, 0, &m)) goto fail;
    if (quant) {
        if (!dn_quant_mode_valid(quant)) { dn_fail(DN_ERR_ARG, "--quant %s: unknown mode", quant); goto fail; }
        if (dn_meta_set(&m->meta, DN_META_QUANT_MODE, quant)) goto fail;
        impl = DN_CONV_AUTO;
    }
    if (dn_read_file(input, (size_t)1 << 32, &raw, &len)) goto fail;
    if (len < (size_t)batch * per * sizeof(float)) {
        dn_fail(DN_ERR_ARG, "%s: holds %zu images, batch %d asked", input, len / (per * 4), batch);
        goto fail;
    }
    if (impl == DN_CONV_INT8 || (quant && !strcmp(quant, "int8"))) {
        /* int8 needs activation scales: calibrated on every image of the input file (the
         * PyTorch int8 peer in tools/bench_torch.py calibrates on the same images) */
        int nc = (int)(len / (per * sizeof(float)));
        if (dn_int8_calibrate(m, (const float *)raw, nc, DN_CALIB_DEFAULT, DN_CALIB_DEFAULT_PCT, 8, threads, NULL))
            goto fail;
    }
    dn_session_opts o = {batch, threads, 224, 224, (int)impl};
    if (dn_session_new_ex(m, &o, &s)) goto fail;
    const float *x = (const float *)raw;
    logits = dn_malloc((size_t)batch * m->num_classes * sizeof(float));
    lat = dn_malloc((size_t)iters * sizeof(double));
    if (!logits || !lat) goto fail;
    for (int i = 0; i < warmup; i++)
        if (dn_session_forward(s, x, batch, logits)) goto fail;
    double t0 = dn_now(), c0 = cpu_now();
    for (int i = 0; i < iters; i++) {
        double a = dn_now();
        if (dn_session_forward(s, x, batch, logits)) goto fail;
        lat[i] = (dn_now() - a) * 1e3;
    }
    double total = dn_now() - t0, cpu = cpu_now() - c0;
    qsort(lat, (size_t)iters, sizeof(double), cmp_d);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"system\": \"defectnet\", \"mode\": \"%s\", \"impl\": \"%s\", \"batch\": %d, \"threads\": %d, "
           "\"iters\": %d, \"img_s\": %.3f, \"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f, "
           "\"rss_mb\": %.1f, \"cpu_ms_per_img\": %.2f, \"top1\": [",
           quant ? quant : impl_s, dn_session_conv_impl(s), batch, threads, iters, batch * iters / total, pct(lat, iters, 50),
           pct(lat, iters, 90), pct(lat, iters, 99), ru.ru_maxrss / 1024.0, cpu * 1e3 / ((double)batch * iters));
    for (int b = 0; b < batch; b++) {
        const float *l = logits + (size_t)b * m->num_classes;
        int best = 0;
        for (int c = 1; c < m->num_classes; c++) if (l[c] > l[best]) best = c;
        printf("%s%d", b ? ", " : "", best);
    }
    printf("]}\n");
    rc = 0;
fail:
    if (rc) fprintf(stderr, "bench_infer: %s\n", dn_last_error());
    free(lat);
    free(logits);
    free(raw);
    dn_session_free(s);
    dn_model_free(m);
    dn_tensors_free(&ts);
    return rc;
}
