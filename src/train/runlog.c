/* Log lines, the progress bar with one ETA over all stages, epoch reports and
 * the naming of unreadable images (see train_run.h). */
#include "train/train_run.h"
#include "train/net.h"
#include "core/progress.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void tr_log(const run *r, const char *fmt, ...) {
    if (r->cfg->quiet) return;
    va_list ap;
    va_start(ap, fmt);
    if (r->cfg->progress) fputs("\r\033[K", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Work model: forward GFLOP of ResNet-18's network stages at 224 px (stem,
 * layer1..4); a training step costs ~3x the forward of its trainable part
 * plus the forward of the frozen part it runs; the head is ~free. Only ratios
 * matter: the ETA divides the remaining units by the measured rate. */
static const double fwd_cost[5] = {0.12, 0.46, 0.41, 0.41, 0.41};
static double fwd_range(int a, int b) {
    double s = 0;
    for (int i = a; i < b && i < 5; i++) s += fwd_cost[i];
    return s;
}

double tr_cache_units(const run *r, int first, long rows) {
    (void)r;
    return (double)rows * fwd_range(0, first);
}

double tr_epoch_units(const run *r, int si, long rows, long vrows, int from) {
    int first = r->cfg->stages[si].first_trainable;
    if (first >= DN_STAGE_HEAD) return 1e-3 * (double)(rows + vrows);
    return (double)rows * (fwd_range(from, first) + 3.0 * fwd_range(first, 5)) + (double)vrows * fwd_range(from, 5);
}

void tr_clock_plan(run *r, int si0, int epochs_done) {
    const dn_train_cfg *c = r->cfg;
    long views = 1 + (c->aug.flags ? c->views : 0);
    for (int si = si0; si < c->nstages; si++) {
        int first = c->stages[si].first_trainable, eps = c->stages[si].epochs - (si == si0 ? epochs_done : 0);
        if (eps <= 0) continue;
        int cached = first == DN_STAGE_HEAD || tr_l4_cached(r, si);
        long rows = cached ? (long)r->ntr * views : r->ntr;
        if (cached) r->clock.total += tr_cache_units(r, first, (long)r->ntr * views + r->nva);
        r->clock.total += eps * tr_epoch_units(r, si, rows, r->nva, cached ? first : 0);
    }
}

void tr_clock_add(run *r, double units, double secs) {
    r->clock.done += units;
    r->clock.busy_s += secs;
}

void tr_clock_skip(run *r, double units) {
    r->clock.total -= units;
    if (r->clock.total < r->clock.done) r->clock.total = r->clock.done;
}

void tr_progress(const run *r, int si, int ep, int eps, double frac, double loss, double ips, double units_in_epoch,
                 double secs_in_epoch) {
    if (!r->cfg->progress || r->cfg->quiet) return;
    char bar[31], e[32];
    int filled = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < filled ? '#' : '.';
    bar[30] = 0;
    double done = r->clock.done + units_in_epoch, busy = r->clock.busy_s + secs_in_epoch;
    double eta = done > 0 && busy > 0 ? (r->clock.total - done) * busy / done : -1;
    dn_format_eta(eta, e, sizeof e);
    fprintf(stderr, "\r\033[Kstage %d/%d epoch %d/%d [%s] loss %.4f  %.1f img/s  ETA %s (all stages)", si + 1,
            r->cfg->nstages, ep + 1, eps, bar, loss, ips, e);
    fflush(stderr);
}

void tr_epoch_report(const run *r, int si, int ep, int eps, double loss, const dn_eval_metrics *val, double val_loss,
                     double secs, double ips, int improved) {
    const dn_train_cfg *c = r->cfg;
    if (c->json) {
        printf("{\"event\":\"epoch\",\"stage\":%d,\"first_trainable\":%d,\"epoch\":%d,\"global_epoch\":%d,"
               "\"loss\":%.6f,\"val_accuracy\":%.6f,\"val_macro_f1\":%.6f,\"val_loss\":%.6f,\"seconds\":%.3f,"
               "\"img_per_s\":%.1f,\"best\":%s}\n",
               si, c->stages[si].first_trainable, ep, r->gep, loss, val ? val->accuracy : 0, val ? val->macro_f1 : 0,
               val_loss, secs, ips, improved ? "true" : "false");
        fflush(stdout);
    }
    tr_log(r, "stage %d epoch %d/%d  loss %.4f  val acc %.4f  val macro-F1 %.4f  val loss %.4f  %.2fs  %.0f img/s%s",
           si + 1, ep + 1, eps, loss, val ? val->accuracy : 0, val ? val->macro_f1 : 0, val_loss, secs, ips,
           improved ? "  *best" : "");
}

void tr_warn(const run *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (r->cfg->progress) fputs("\r\033[K", stderr);
    fputs("warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void tr_note_skipped(run *r, const char *const *paths, unsigned char *flags, int i) {
    if (flags[i]) return;
    flags[i] = 1;
    r->skipped++;
    tr_warn(r, "skipped unreadable image %s", paths[i]);
}
