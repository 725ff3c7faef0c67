/* Training-step benchmark and profile of the trainable net (src/train/net.h):
 * forward + cross-entropy + backward + SGD(momentum 0.9) on a fixed random batch.
 * Prints img/s, the time split by layer kind with achieved GFLOP/s for the
 * convolutions (forward, data gradient, weight gradient), and peak RSS.
 * Usage: train_bench [--weights PTH] [--batch 32] [--size 224] [--steps 3]
 *                    [--freeze none] [--threads 2] [--classes 6]
 * Default weights: $DN_SHARED/weights/resnet18-imagenet.pth (or ../shared/...). */
#include "bench_util.h"
#include "core/core.h"
#include "io/pth.h"
#include "nn/model.h"
#include "train/loss.h"
#include "train/net.h"
#include "train/optim.h"
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* CPU seconds (user + system) of every thread of this process, from
 * /proc/self/task/<tid>/stat: shows how evenly the pool's workers are loaded
 * (a busy main thread and an idle worker mean serial sections). */
static int thread_cpu(double *out, int max) {
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    if (!d) return 0;
    long hz = sysconf(_SC_CLK_TCK);
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        if (e->d_name[0] == '.') continue;
        char path[300], buf[1024];
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = 0;
        char *p = strrchr(buf, ')'); /* fields after the command name */
        unsigned long ut = 0, st = 0;
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
            out[n++] = (double)(ut + st) / (double)hz;
    }
    closedir(d);
    return n;
}

/* user + system CPU seconds of this process (all threads) */
static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

int main(int argc, char **argv) {
    char wbuf[1024];
    const char *weights = NULL, *freeze = "none";
    int batch = 32, size = 224, steps = 3, threads = 2, classes = 6, rc = 1, first = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--weights")) weights = v;
        else if (!strcmp(k, "--batch")) batch = atoi(v);
        else if (!strcmp(k, "--size")) size = atoi(v);
        else if (!strcmp(k, "--steps")) steps = atoi(v);
        else if (!strcmp(k, "--freeze")) freeze = v;
        else if (!strcmp(k, "--threads")) threads = atoi(v);
        else if (!strcmp(k, "--classes")) classes = atoi(v);
        else { fprintf(stderr, "train_bench: unknown option %s\n", k); return 2; }
    }
    if (!weights) weights = bench_default_weights(wbuf, sizeof wbuf);
    dn_tensors ts = {0};
    dn_model *m = NULL;
    dn_net *net = NULL;
    dn_optim *opt = NULL;
    float *x = NULL, *logits = NULL, *dl = NULL;
    int *labels = NULL;
    if (batch < 1 || steps < 1 || classes < 2) { dn_fail(DN_ERR_ARG, "bad --batch/--steps/--classes"); goto fail; }
    if (dn_freeze_parse(freeze, &first)) goto fail;
    if (dn_pth_load(weights, &ts) || dn_model_from_tensors(&ts, 1, &m) || dn_model_new_head(m, classes, NULL, 1))
        goto fail;
    if (dn_net_new(m, first, batch, size, size, threads, &net)) goto fail;
    int np;
    const dn_param *ps = dn_net_params(net, &np);
    dn_optim_cfg cfg;
    dn_optim_cfg_default(&cfg, DN_OPT_SGD);
    if (dn_optim_new(&cfg, ps, np, &opt)) goto fail;
    dn_optim_set_pool(opt, dn_net_pool(net));
    size_t nx = (size_t)batch * 3 * size * size;
    x = dn_malloc(nx * sizeof(float));
    logits = dn_malloc((size_t)batch * classes * sizeof(float));
    dl = dn_malloc((size_t)batch * classes * sizeof(float));
    labels = dn_malloc((size_t)batch * sizeof(int));
    if (!x || !logits || !dl || !labels) goto fail;
    dn_rng r;
    dn_rng_seed(&r, 7);
    for (size_t i = 0; i < nx; i++) x[i] = dn_rng_normal(&r);
    for (int i = 0; i < batch; i++) labels[i] = i % classes;
    double t0 = 0, tf = 0, tb = 0, to = 0, cpu0 = 0, tc0[64] = {0};
    int nt0 = 0;
    for (int i = 0; i <= steps; i++) { /* step 0 is warm-up */
        if (i == 1) {
            t0 = dn_now(); tf = tb = to = 0; dn_net_reset_profile(net); cpu0 = cpu_seconds();
            nt0 = thread_cpu(tc0, 64);
        }
        float loss;
        double a = dn_now();
        dn_net_zero_grad(net);
        if (dn_net_forward(net, x, batch, logits)) goto fail;
        if (dn_ce_loss(logits, labels, batch, classes, NULL, 0.f, &loss, dl)) goto fail;
        double b = dn_now();
        if (dn_net_backward(net, dl)) goto fail;
        double c = dn_now();
        if (dn_optim_step(opt, 0.01f)) goto fail;
        double d = dn_now();
        tf += b - a; tb += c - b; to += d - c;
        fprintf(stderr, "step %d: loss %.4f  %.2f s\n", i, loss, d - a);
    }
    double total = dn_now() - t0, cpu = cpu_seconds() - cpu0;
    dn_net_profile p;
    dn_net_get_profile(net, &p);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("train_bench: resnet %s, batch %d, %dx%d, freeze %s, threads %d, %d steps\n", m->arch, batch, size,
           size, freeze, threads, steps);
    printf("  img/s %.2f   step %.3f s (forward %.3f, backward %.3f, optimizer %.3f)\n", batch * steps / total,
           total / steps, tf / steps, tb / steps, to / steps);
    printf("  CPU time %.3f s/step over %d threads (%.0f%% of %d cores busy; CPU-time rate %.2f img/s)\n",
           cpu / steps, threads, 100 * cpu / (total * threads), threads, batch * steps / (cpu / threads));
    printf("  rebuilding conv ops from updated weights %.3f s/step\n", p.prepare_s / steps);
    printf("  conv forward      %.3f s/step  %6.1f GFLOP/s\n", p.conv_fwd_s / steps,
           p.conv_fwd_flop / (p.conv_fwd_s + 1e-12) * 1e-9);
    printf("  conv data grad    %.3f s/step  %6.1f GFLOP/s\n", p.conv_bwd_data_s / steps,
           p.conv_bwd_data_flop / (p.conv_bwd_data_s + 1e-12) * 1e-9);
    printf("  conv weight grad  %.3f s/step  %6.1f GFLOP/s\n", p.conv_bwd_weight_s / steps,
           p.conv_bwd_weight_flop / (p.conv_bwd_weight_s + 1e-12) * 1e-9);
    printf("  BN forward        %.3f s/step\n  BN backward       %.3f s/step\n", p.bn_fwd_s / steps, p.bn_bwd_s / steps);
    double known = p.conv_fwd_s + p.conv_bwd_data_s + p.conv_bwd_weight_s + p.bn_fwd_s + p.bn_bwd_s + p.prepare_s;
    printf("  other (pool/relu/add/head/optimizer) %.3f s/step\n", total / steps - known / steps);
    printf("  peak RSS %.0f MB\n", ru.ru_maxrss / 1024.0);
    double tc[64];
    int nt = thread_cpu(tc, 64);
    printf("  CPU seconds per step per thread (main first; uneven = serial parts):");
    for (int i = 0; i < nt; i++) printf(" %.2f", (tc[i] - (i < nt0 ? tc0[i] : 0)) / steps);
    printf("\n");
    rc = 0;
fail:
    if (rc) fprintf(stderr, "train_bench: %s\n", dn_last_error());
    free(x); free(logits); free(dl); free(labels);
    dn_optim_free(opt);
    dn_net_free(net);
    dn_model_free(m);
    dn_tensors_free(&ts);
    return rc;
}
