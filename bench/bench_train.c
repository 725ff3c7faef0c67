/* defectnet training side of bench/run.sh: forward + backward + SGD(momentum
 * 0.9) steps on batches of the shared input (fixed labels), with every layer
 * trainable (--train all) or only a new fc head (--train head: the backbone is
 * frozen in eval mode and still runs forward every step, as the PyTorch side).
 * Usage: bench_train --weights W.pth --input out/input.f32 --batch 32 --train all|head
 *            [--threads 2] [--iters 3] [--warmup 1] [--classes 6]
 * Prints one JSON line like bench_infer. */
#include "core/core.h"
#include "io/pth.h"
#include "nn/model.h"
#include "train/loss.h"
#include "train/net.h"
#include "train/optim.h"
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
    const char *weights = NULL, *input = NULL, *train = "all";
    int batch = 32, threads = 2, iters = 3, warmup = 1, classes = 6, rc = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--weights")) weights = v;
        else if (!strcmp(k, "--input")) input = v;
        else if (!strcmp(k, "--batch")) batch = atoi(v);
        else if (!strcmp(k, "--threads")) threads = atoi(v);
        else if (!strcmp(k, "--iters")) iters = atoi(v);
        else if (!strcmp(k, "--warmup")) warmup = atoi(v);
        else if (!strcmp(k, "--classes")) classes = atoi(v);
        else if (!strcmp(k, "--train")) train = v;
        else { fprintf(stderr, "bench_train: unknown option %s\n", k); return 2; }
    }
    int all = !strcmp(train, "all");
    if (!weights || !input || batch < 1 || iters < 1 || classes < 2 || (!all && strcmp(train, "head"))) {
        fprintf(stderr, "bench_train: need --weights, --input, --batch >= 1, --iters >= 1, --train all|head\n");
        return 2;
    }
    dn_tensors ts = {0};
    dn_model *m = NULL;
    dn_net *net = NULL;
    dn_optim *opt = NULL;
    uint8_t *raw = NULL;
    float *logits = NULL, *dl = NULL;
    double *lat = NULL;
    int *labels = NULL;
    size_t len = 0, per = 3 * 224 * 224;
    if (dn_pth_load(weights, &ts) || dn_model_from_tensors(&ts, 1, &m)) goto fail;
    if (dn_model_new_head(m, classes, NULL, 0)) goto fail;
    if (dn_read_file(input, (size_t)1 << 32, &raw, &len)) goto fail;
    if (len < (size_t)batch * per * sizeof(float)) {
        dn_fail(DN_ERR_ARG, "%s: holds %zu images, batch %d asked", input, len / (per * 4), batch);
        goto fail;
    }
    if (dn_net_new(m, all ? DN_STAGE_STEM : DN_STAGE_HEAD, batch, 224, 224, threads, &net)) goto fail;
    int np = 0;
    const dn_param *ps = dn_net_params(net, &np);
    dn_optim_cfg cfg;
    dn_optim_cfg_default(&cfg, DN_OPT_SGD);
    if (dn_optim_new(&cfg, ps, np, &opt)) goto fail;
    logits = dn_malloc((size_t)batch * classes * sizeof(float));
    dl = dn_malloc((size_t)batch * classes * sizeof(float));
    labels = dn_malloc((size_t)batch * sizeof(int));
    lat = dn_malloc((size_t)iters * sizeof(double));
    if (!logits || !dl || !labels || !lat) goto fail;
    for (int i = 0; i < batch; i++) labels[i] = i % classes;
    const float *x = (const float *)raw;
    double t0 = 0, c0 = 0;
    for (int i = 0; i < warmup + iters; i++) {
        if (i == warmup) { t0 = dn_now(); c0 = cpu_now(); }
        double a = dn_now();
        float loss;
        dn_net_zero_grad(net);
        if (dn_net_forward(net, x, batch, logits)) goto fail;
        if (dn_ce_loss(logits, labels, batch, classes, NULL, 0.0f, &loss, dl)) goto fail;
        if (dn_net_backward(net, dl)) goto fail;
        if (dn_optim_step(opt, 0.01f)) goto fail;
        if (i >= warmup) lat[i - warmup] = (dn_now() - a) * 1e3;
    }
    double total = dn_now() - t0, cpu = cpu_now() - c0;
    qsort(lat, (size_t)iters, sizeof(double), cmp_d);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"system\": \"defectnet\", \"mode\": \"train-%s\", \"batch\": %d, \"threads\": %d, \"iters\": %d, "
           "\"img_s\": %.3f, \"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f, \"rss_mb\": %.1f, \"cpu_ms_per_img\": %.2f, \"top1\": []}\n",
           train, batch, threads, iters, batch * iters / total, pct(lat, iters, 50), pct(lat, iters, 90),
           pct(lat, iters, 99), ru.ru_maxrss / 1024.0, cpu * 1e3 / ((double)batch * iters));
    rc = 0;
fail:
    if (rc) fprintf(stderr, "bench_train: %s\n", dn_last_error());
    free(lat); free(labels); free(dl); free(logits); free(raw);
    dn_optim_free(opt);
    dn_net_free(net);
    dn_model_free(m);
    dn_tensors_free(&ts);
    return rc;
}
