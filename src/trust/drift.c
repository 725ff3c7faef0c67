/* Drift monitor of `defectnet serve` (see drift.h, docs/drift.md): one sliding
 * window per line/camera, kept as bin counts so every prediction costs a few
 * dot products (the feature projections) and O(bins) for the PSI. */
#include "trust/drift.h"
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_WINDOWS 4096          /* line/camera pairs; more are counted, not monitored */
#define MAX_ENTRIES 200000        /* per time window; older entries leave early (reported as capped) */

typedef struct entry {
    double t;
    float conf;
    float proj[DN_DRIFT_PCS];
    int cls;
    unsigned char cb, ob, pb[DN_DRIFT_PCS];
    unsigned char has_ood, has_feat;
} entry;

typedef struct win {
    char *line, *camera;          /* "" = none */
    entry *e;
    int cap, head, n;             /* ring: oldest at head */
    double first_seen;
    long total;
    int capped;
    double c_conf[DN_DRIFT_BINS], c_ood[DN_DRIFT_BINS], c_pc[DN_DRIFT_PCS][DN_DRIFT_BINS];
    double *c_cls;
    double n_ood, n_feat, sum_conf, sum_proj[DN_DRIFT_PCS];
} win;

struct dn_drift {
    pthread_mutex_t mu;
    dn_drift_cfg cfg;
    int min_count;
    int have_model;
    const dn_model *model;        /* identity only (in-memory models have no sha256) */
    char sha[65];
    dn_drift_ref *ref;            /* NULL: none or unusable (status says why) */
    char status[16], detail[400];
    double ref_since;
    win **w;
    int nw;
    long untracked;               /* predictions of pairs beyond MAX_WINDOWS */
};

/* ------------------------------------------------------------ config */

dn_status dn_drift_window_parse(const char *s, dn_drift_cfg *c) {
    memset(c, 0, sizeof *c);
    if (!s || !*s) return dn_fail(DN_ERR_ARG, "--drift-window '': give a count (500) or a duration (30m, 1h, 2d)");
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !isfinite(v) || isspace((unsigned char)*s))
        return dn_fail(DN_ERR_ARG, "--drift-window '%s': not a count (500) or a duration (90s, 30m, 1h, 2d)", s);
    double unit = 0;
    if (!*end) unit = 0;
    else if (!strcmp(end, "s")) unit = 1;
    else if (!strcmp(end, "m")) unit = 60;
    else if (!strcmp(end, "h")) unit = 3600;
    else if (!strcmp(end, "d")) unit = 86400;
    else return dn_fail(DN_ERR_ARG, "--drift-window '%s': unknown unit '%s' (s, m, h or d; none = a count)", s, end);
    if (unit == 0) {
        if (v != floor(v) || v < 10 || v > 1000000)
            return dn_fail(DN_ERR_ARG, "--drift-window '%s': a count must be a whole number of predictions in 10..1000000", s);
        c->count = (int)v;
        return DN_OK;
    }
    if (!(v > 0) || v * unit < 1 || v * unit > 30 * 86400.0)
        return dn_fail(DN_ERR_ARG, "--drift-window '%s': a duration must be between 1s and 30d", s);
    c->seconds = v * unit;
    return DN_OK;
}

dn_status dn_drift_new(const dn_drift_cfg *c, dn_drift **out) {
    *out = NULL;
    if (!c || (c->count <= 0 && !(c->seconds > 0)))
        return dn_fail(DN_ERR_ARG, "drift monitor: the window needs a count or a duration");
    dn_drift *d = dn_calloc(1, sizeof *d);
    if (!d) return dn_fail(DN_ERR_NOMEM, "drift monitor: out of memory");
    d->cfg = *c;
    if (c->count > 0) d->cfg.seconds = 0;
    d->min_count = c->min_count > 0 ? c->min_count : (c->count > 0 && c->count < 100 ? c->count : 100);
    if (c->count > 0 && d->min_count > c->count) d->min_count = c->count;
    snprintf(d->status, sizeof d->status, "waiting");
    snprintf(d->detail, sizeof d->detail, "no prediction yet");
    pthread_mutex_init(&d->mu, NULL);
    *out = d;
    return DN_OK;
}

static void win_free(win *w) {
    if (!w) return;
    free(w->line); free(w->camera); free(w->e); free(w->c_cls);
    free(w);
}

static void drop_windows(dn_drift *d) {
    for (int i = 0; i < d->nw; i++) win_free(d->w[i]);
    free(d->w);
    d->w = NULL;
    d->nw = 0;
}

void dn_drift_free(dn_drift *d) {
    if (!d) return;
    drop_windows(d);
    dn_drift_ref_free(d->ref);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

/* ------------------------------------------------------------ windows */

/* The reference of m (new model: windows restart). */
static void use_model(dn_drift *d, const dn_model *m, double t) {
    int same = d->have_model && (m->sha256[0] ? !strcmp(d->sha, m->sha256) : d->model == m);
    if (same) return;
    drop_windows(d);
    dn_drift_ref_free(d->ref);
    d->ref = NULL;
    d->have_model = 1;
    d->model = m;
    d->ref_since = t;
    snprintf(d->sha, sizeof d->sha, "%s", m->sha256);
    if (dn_drift_ref_from_model(m, &d->ref)) {
        snprintf(d->status, sizeof d->status, "unusable");
        snprintf(d->detail, sizeof d->detail, "%s", dn_last_error());
    } else if (!d->ref) {
        snprintf(d->status, sizeof d->status, "none");
        snprintf(d->detail, sizeof d->detail, "the model has no drift reference (fit one with defectnet calibrate)");
    } else {
        snprintf(d->status, sizeof d->status, "ok");
        d->detail[0] = 0;
    }
}

static win *find_window(dn_drift *d, const char *line, const char *camera, double t) {
    line = line ? line : "";
    camera = camera ? camera : "";
    for (int i = 0; i < d->nw; i++)
        if (!strcmp(d->w[i]->line, line) && !strcmp(d->w[i]->camera, camera)) return d->w[i];
    if (d->nw >= MAX_WINDOWS) return NULL;
    win **nw = dn_realloc(d->w, (size_t)(d->nw + 1) * sizeof *nw);
    if (!nw) return NULL;
    d->w = nw;
    win *w = dn_calloc(1, sizeof *w);
    if (!w) return NULL;
    w->line = dn_strdup(line);
    w->camera = dn_strdup(camera);
    w->c_cls = dn_calloc((size_t)d->ref->ncls, sizeof(double));
    w->cap = d->cfg.count > 0 ? d->cfg.count : 64;
    w->e = dn_malloc((size_t)w->cap * sizeof(entry));
    if (!w->line || !w->camera || !w->c_cls || !w->e) { win_free(w); return NULL; }
    w->first_seen = t;
    d->w[d->nw++] = w;
    return w;
}

static void account(const dn_drift_ref *r, win *w, const entry *e, double s) {
    w->c_conf[e->cb] += s;
    w->c_cls[e->cls] += s;
    w->sum_conf += s * e->conf;
    if (e->has_ood) { w->c_ood[e->ob] += s; w->n_ood += s; }
    if (e->has_feat) {
        w->n_feat += s;
        for (int k = 0; k < r->npc; k++) { w->c_pc[k][e->pb[k]] += s; w->sum_proj[k] += s * e->proj[k]; }
    }
}

static void pop_oldest(const dn_drift_ref *r, win *w) {
    account(r, w, &w->e[w->head], -1);
    w->head = (w->head + 1) % w->cap;
    w->n--;
}

/* Time windows: entries older than now - seconds leave. */
static void age_out(dn_drift *d, win *w, double now) {
    if (d->cfg.count > 0) return;
    while (w->n && now - w->e[w->head].t > d->cfg.seconds) pop_oldest(d->ref, w);
}

/* Room for one more entry: count windows drop the oldest, time windows grow (up to MAX_ENTRIES). */
static int make_room(dn_drift *d, win *w) {
    if (w->n < w->cap) return 0;
    if (d->cfg.count > 0 || w->cap >= MAX_ENTRIES) {
        if (d->cfg.count <= 0) w->capped = 1;
        pop_oldest(d->ref, w);
        return 0;
    }
    int nc = w->cap * 2 > MAX_ENTRIES ? MAX_ENTRIES : w->cap * 2;
    entry *ne = dn_malloc((size_t)nc * sizeof(entry));
    if (!ne) { pop_oldest(d->ref, w); return 0; }
    for (int i = 0; i < w->n; i++) ne[i] = w->e[(w->head + i) % w->cap];
    free(w->e);
    w->e = ne;
    w->cap = nc;
    w->head = 0;
    return 0;
}

static void signals(const dn_drift *d, const win *w, float *out) {
    const dn_drift_ref *r = d->ref;
    for (int s = 0; s < DN_DRIFT_NSIG; s++) out[s] = NAN;
    if (!r || w->n < d->min_count) return;
    out[DN_DRIFT_CONF] = (float)dn_drift_psi(r->conf.p, w->c_conf, r->conf.nb, w->n);
    out[DN_DRIFT_CLASS] = (float)dn_drift_psi(r->cls_p, w->c_cls, r->ncls, w->n);
    if (r->ood.nb && w->n_ood >= d->min_count) out[DN_DRIFT_OOD] = (float)dn_drift_psi(r->ood.p, w->c_ood, r->ood.nb, w->n_ood);
    if (r->npc && w->n_feat >= d->min_count) {
        double s = 0;
        for (int k = 0; k < r->npc; k++) s += dn_drift_psi(r->pcs[k].p, w->c_pc[k], r->pcs[k].nb, w->n_feat);
        out[DN_DRIFT_FEAT] = (float)(s / r->npc);
    }
}

/* RMS over components of the window's mean projection in reference standard deviations. */
static double mean_shift(const dn_drift_ref *r, const win *w) {
    if (!r->npc || !(w->n_feat > 0)) return NAN;
    double s = 0;
    for (int k = 0; k < r->npc; k++) {
        double m = w->sum_proj[k] / w->n_feat, sd = sqrt(r->pc_var[k] > 1e-20 ? r->pc_var[k] : 1e-20);
        s += (m / sd) * (m / sd);
    }
    return sqrt(s / r->npc);
}

void dn_drift_observe(dn_drift *d, const dn_model *m, const char *line, const char *camera, double t,
                      const dn_prediction *p, const float *feat, dn_drift_obs *obs) {
    if (obs)
        for (int s = 0; s < DN_DRIFT_NSIG; s++) obs->prev[s] = obs->now[s] = NAN;
    if (!d || !m || !p) return;
    pthread_mutex_lock(&d->mu);
    use_model(d, m, t);
    const dn_drift_ref *r = d->ref;
    win *w = r && p->cls >= 0 && p->cls < r->ncls ? find_window(d, line, camera, t) : NULL;
    if (!w) {
        if (r) d->untracked++;
        pthread_mutex_unlock(&d->mu);
        return;
    }
    age_out(d, w, t);
    if (obs) signals(d, w, obs->prev);
    entry e;
    memset(&e, 0, sizeof e);
    e.t = t;
    e.conf = isfinite(p->confidence) ? p->confidence : 0;
    e.cls = p->cls;
    e.cb = (unsigned char)dn_drift_bin(&r->conf, e.conf);
    if (r->ood.nb && isfinite(p->ood_score)) {
        e.has_ood = 1;
        e.ob = (unsigned char)dn_drift_bin(&r->ood, p->ood_score);
    }
    if (feat && r->npc) {
        e.has_feat = 1;
        for (int k = 0; k < r->npc; k++) {
            const float *b = r->pc + (size_t)k * r->dim;
            double s = 0;
            for (int j = 0; j < r->dim; j++) s += (double)(feat[j] - r->mean[j]) * b[j];
            e.proj[k] = (float)s;
            e.pb[k] = (unsigned char)dn_drift_bin(&r->pcs[k], e.proj[k]);
        }
    }
    make_room(d, w);
    w->e[(w->head + w->n) % w->cap] = e;
    w->n++;
    w->total++;
    account(r, w, &e, 1);
    if (obs) signals(d, w, obs->now);
    pthread_mutex_unlock(&d->mu);
}

/* ------------------------------------------------------------ output */

static double wall_or(double now) {
    if (now > 0) return now;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void put_time(dn_sb *b, double t) {
    time_t s = (time_t)floor(t);
    struct tm tm;
    char buf[40];
    gmtime_r(&s, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    dn_sb_printf(b, "\"%s\"", buf);
}

static void put_num(dn_sb *b, double v) {
    if (isfinite(v)) dn_sb_printf(b, "%.6g", v);
    else dn_sb_puts(b, "null");
}

static void put_opt_str(dn_sb *b, const char *s) {
    if (s && *s) dn_sb_json_str(b, s);
    else dn_sb_puts(b, "null");
}

static const char *level(const win *w, const float *sig, int ready) {
    if (!ready) return "warming_up";
    double mx = 0;
    for (int s = 0; s < DN_DRIFT_NSIG; s++)
        if (isfinite(sig[s]) && sig[s] > mx) mx = sig[s];
    (void)w;
    return mx > DN_DRIFT_ALERT ? "major" : mx > DN_DRIFT_WARN ? "moderate" : "stable";
}

void dn_drift_json(dn_drift *d, double now, dn_sb *b) {
    now = wall_or(now);
    pthread_mutex_lock(&d->mu);
    dn_sb_printf(b, "{\"reference\":{\"status\":\"%s\",\"detail\":", d->status);
    put_opt_str(b, d->detail);
    if (d->ref) {
        dn_sb_printf(b, ",\"rows\":%d,\"reference_accuracy\":%.6g,\"classes\":%d,\"feature_components\":%d,\"model_sha256\":",
                     d->ref->rows, d->ref->ref_accuracy, d->ref->ncls, d->ref->npc);
        put_opt_str(b, d->sha);
        dn_sb_puts(b, ",\"since\":");
        put_time(b, d->ref_since);
    }
    dn_sb_puts(b, "},\"window\":");
    if (d->cfg.count > 0) dn_sb_printf(b, "{\"count\":%d}", d->cfg.count);
    else dn_sb_printf(b, "{\"seconds\":%.6g}", d->cfg.seconds);
    dn_sb_printf(b, ",\"min_count\":%d,\"thresholds\":{\"moderate\":%g,\"major\":%g},\"untracked\":%ld,\"cameras\":[",
                 d->min_count, DN_DRIFT_WARN, DN_DRIFT_ALERT, d->untracked);
    for (int i = 0; i < d->nw && d->ref; i++) {
        win *w = d->w[i];
        age_out(d, w, now);
        float sig[DN_DRIFT_NSIG];
        signals(d, w, sig);
        int ready = w->n >= d->min_count;
        dn_sb_puts(b, i ? ",{\"line\":" : "{\"line\":");
        put_opt_str(b, w->line);
        dn_sb_puts(b, ",\"camera\":");
        put_opt_str(b, w->camera);
        dn_sb_printf(b, ",\"n\":%d,\"total\":%ld,\"ready\":%s,\"level\":\"%s\",\"first_seen\":", w->n, w->total,
                     ready ? "true" : "false", level(w, sig, ready));
        put_time(b, w->first_seen);
        dn_sb_puts(b, ",\"since\":");
        if (w->n) put_time(b, w->e[w->head].t);
        else dn_sb_puts(b, "null");
        dn_sb_puts(b, ",\"psi\":{");
        for (int s = 0; s < DN_DRIFT_NSIG; s++) {
            dn_sb_printf(b, "%s\"%s\":", s ? "," : "", dn_drift_signal_name(s));
            put_num(b, sig[s]);
        }
        dn_sb_puts(b, "},\"feature_mean_shift\":");
        put_num(b, ready ? mean_shift(d->ref, w) : NAN);
        dn_sb_puts(b, ",\"estimated_accuracy\":");
        put_num(b, w->n ? w->sum_conf / w->n : NAN);
        dn_sb_printf(b, ",\"reference_accuracy\":%.6g,\"capped\":%s}", d->ref->ref_accuracy, w->capped ? "true" : "false");
    }
    dn_sb_puts(b, "]}\n");
    pthread_mutex_unlock(&d->mu);
}

static void series(dn_sb *b, void (*label)(dn_sb *, const char *), const char *name, const win *w, const char *sig) {
    dn_sb_printf(b, "%s{line=\"", name);
    label(b, w->line);
    dn_sb_puts(b, "\",camera=\"");
    label(b, w->camera);
    if (sig) dn_sb_printf(b, "\",signal=\"%s", sig);
    dn_sb_puts(b, "\"} ");
}

void dn_drift_metrics(dn_drift *d, double now, dn_sb *b, void (*label)(dn_sb *b, const char *v)) {
    now = wall_or(now);
    pthread_mutex_lock(&d->mu);
    if (!d->ref) { pthread_mutex_unlock(&d->mu); return; }
    dn_sb_printf(b, "# HELP defectnet_drift_reference_accuracy Mean calibrated top probability on the model's reference "
                    "(validation) images.\n# TYPE defectnet_drift_reference_accuracy gauge\n"
                    "defectnet_drift_reference_accuracy %.6g\n", d->ref->ref_accuracy);
    dn_sb_puts(b, "# HELP defectnet_drift_window_predictions Predictions in the drift window per line and camera.\n"
                  "# TYPE defectnet_drift_window_predictions gauge\n");
    for (int i = 0; i < d->nw; i++) {
        age_out(d, d->w[i], now);
        series(b, label, "defectnet_drift_window_predictions", d->w[i], NULL);
        dn_sb_printf(b, "%d\n", d->w[i]->n);
    }
    dn_sb_puts(b, "# HELP defectnet_drift_estimated_accuracy Mean calibrated top probability of the window (no labels).\n"
                  "# TYPE defectnet_drift_estimated_accuracy gauge\n");
    for (int i = 0; i < d->nw; i++)
        if (d->w[i]->n) {
            series(b, label, "defectnet_drift_estimated_accuracy", d->w[i], NULL);
            dn_sb_printf(b, "%.6g\n", d->w[i]->sum_conf / d->w[i]->n);
        }
    dn_sb_puts(b, "# HELP defectnet_drift_psi Population stability index of the window against the model's reference "
                  "(0.1 moderate, 0.25 major shift).\n# TYPE defectnet_drift_psi gauge\n");
    for (int i = 0; i < d->nw; i++) {
        float sig[DN_DRIFT_NSIG];
        signals(d, d->w[i], sig);
        for (int s = 0; s < DN_DRIFT_NSIG; s++)
            if (isfinite(sig[s])) {
                series(b, label, "defectnet_drift_psi", d->w[i], dn_drift_signal_name(s));
                dn_sb_printf(b, "%.6g\n", (double)sig[s]);
            }
    }
    pthread_mutex_unlock(&d->mu);
}
