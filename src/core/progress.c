/* Progress line on a terminal with ETA; see progress.h. */
#include "core/progress.h"
#include "core/core.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int dn_progress_enabled(void) {
    const char *e = getenv("DN_PROGRESS");
    if (e && !strcmp(e, "1")) return 1;
    if (e && !strcmp(e, "0")) return 0;
    return isatty(2);
}

void dn_format_eta(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e7) { snprintf(buf, n, "?"); return; }
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%dh%02dm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, n, "%dm%02ds", t / 60, t % 60);
    else snprintf(buf, n, "%ds", t);
}

void dn_progress_start(dn_progress *p, const char *label, long total) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->total = total;
    p->t0 = p->last = dn_now();
    p->on = dn_progress_enabled();
}

void dn_progress_text(const dn_progress *p, double now, char *buf, size_t n) {
    const char *unit = p->unit ? p->unit : "img";
    double el = now - p->t0, rate = el > 0 ? p->done / el : 0;
    if (p->total <= 0) {
        snprintf(buf, n, "%s %ld %s  %.1f %s/s", p->label ? p->label : "", p->done, unit, rate, unit);
        return;
    }
    char bar[25], eta[32];
    long d = p->done < 0 ? 0 : p->done > p->total ? p->total : p->done;
    int filled = (int)((double)d / p->total * 24);
    for (int i = 0; i < 24; i++) bar[i] = i < filled ? '#' : '.';
    bar[24] = 0;
    dn_format_eta(rate > 0 ? (p->total - d) / rate : -1, eta, sizeof eta);
    snprintf(buf, n, "%s [%s] %ld/%ld %s  %.1f %s/s  ETA %s", p->label ? p->label : "", bar, d, p->total, unit, rate,
             unit, eta);
}

void dn_progress_update(dn_progress *p, long done) {
    p->done = done;
    if (!p->on) return;
    double now = dn_now();
    if (p->drawn && now - p->last < 0.2 && !(p->total > 0 && done >= p->total)) return;
    char line[256];
    dn_progress_text(p, now, line, sizeof line);
    fprintf(stderr, "\r\033[K%s", line);
    fflush(stderr);
    p->last = now;
    p->drawn = 1;
}

void dn_progress_clear(dn_progress *p) {
    if (p->on && p->drawn) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        p->drawn = 0;
    }
}

void dn_progress_end(dn_progress *p) { dn_progress_clear(p); }
