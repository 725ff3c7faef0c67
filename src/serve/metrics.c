/* Prometheus metrics (see metrics.h). A mutex guards everything: updates are a
 * few per request, far cheaper than the inference they describe. */
#include "serve/metrics.h"
#include "core/core.h"
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* A counter family with up to two label values per series. */
typedef struct {
    char *a, *b;
    double v;
} series;
typedef struct {
    series s[DN_METRICS_MAX_SERIES];
    int n;
} family;

static const double BUCKETS[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NB ((int)(sizeof BUCKETS / sizeof BUCKETS[0]))
/* ood_score buckets: suited to the default combo score (standardised on in-distribution
 * validation images: about -2..2 for known inputs, threshold near 1.5-2, unknowns far above) */
static const double OOD_BUCKETS[] = {-2, -1, 0, 0.5, 1, 1.5, 2, 3, 5, 10, 20, 50, 100};
#define NOB ((int)(sizeof OOD_BUCKETS / sizeof OOD_BUCKETS[0]))

struct dn_metrics {
    pthread_mutex_t mu;
    family requests, predictions, actions, reloads, watch, mqtt;
    unsigned long long hist[NB + 1];
    double lat_sum;
    unsigned long long lat_count;
    long inflight;
    unsigned long long parts[2];    /* rejected, accepted as good */
    double exp_escape, exp_false_reject; /* < 0: unknown */
    unsigned long long ood_hist[NOB + 1], ood_count;
    double ood_sum;
    float ood_threshold;            /* NAN: the model has no detector */
};

dn_metrics *dn_metrics_new(void) {
    dn_metrics *m = dn_calloc(1, sizeof *m);
    if (m) pthread_mutex_init(&m->mu, NULL);
    if (m) m->exp_escape = m->exp_false_reject = -1;
    if (m) m->ood_threshold = NAN;
    return m;
}

static void family_free(family *f) {
    for (int i = 0; i < f->n; i++) { free(f->s[i].a); free(f->s[i].b); }
}

void dn_metrics_free(dn_metrics *m) {
    if (!m) return;
    family_free(&m->requests);
    family_free(&m->predictions);
    family_free(&m->actions);
    family_free(&m->reloads);
    family_free(&m->watch);
    family_free(&m->mqtt);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static int eq(const char *x, const char *y) { return (!x && !y) || (x && y && !strcmp(x, y)); }

/* Adds v to the series (a, b); folds into ("other","other") when the family is full. */
static void add(family *f, const char *a, const char *b, double v) {
    for (int i = 0; i < f->n; i++)
        if (eq(f->s[i].a, a) && eq(f->s[i].b, b)) { f->s[i].v += v; return; }
    if (f->n >= DN_METRICS_MAX_SERIES - 1) { /* the last slot is the shared "other" series */
        a = "other";
        b = b ? "other" : NULL;
        for (int i = 0; i < f->n; i++)
            if (eq(f->s[i].a, a) && eq(f->s[i].b, b)) { f->s[i].v += v; return; }
        if (f->n == DN_METRICS_MAX_SERIES) { f->s[f->n - 1].v += v; return; }
    }
    series *s = &f->s[f->n];
    s->a = a ? dn_strdup(a) : NULL;
    s->b = b ? dn_strdup(b) : NULL;
    if ((a && !s->a) || (b && !s->b)) { free(s->a); free(s->b); return; } /* OOM: drop the sample */
    s->v = v;
    f->n++;
}

void dn_metrics_request(dn_metrics *m, const char *endpoint, int code) {
    char c[16];
    snprintf(c, sizeof c, "%d", code);
    pthread_mutex_lock(&m->mu);
    add(&m->requests, endpoint, c, 1);
    pthread_mutex_unlock(&m->mu);
}

void dn_metrics_latency(dn_metrics *m, double s) {
    pthread_mutex_lock(&m->mu);
    int i = 0;
    while (i < NB && s > BUCKETS[i]) i++;
    m->hist[i]++;
    m->lat_sum += s;
    m->lat_count++;
    pthread_mutex_unlock(&m->mu);
}

void dn_metrics_prediction(dn_metrics *m, const char *cls, const char *decision, float ood_score) {
    pthread_mutex_lock(&m->mu);
    add(&m->predictions, cls, decision, 1);
    if (isfinite(ood_score)) {
        int i = 0;
        while (i < NOB && ood_score > OOD_BUCKETS[i]) i++;
        m->ood_hist[i]++;
        m->ood_sum += ood_score;
        m->ood_count++;
    }
    pthread_mutex_unlock(&m->mu);
}

void dn_metrics_ood_threshold(dn_metrics *m, float threshold) {
    pthread_mutex_lock(&m->mu);
    m->ood_threshold = threshold;
    pthread_mutex_unlock(&m->mu);
}

void dn_metrics_part(dn_metrics *m, int accepted_good) {
    pthread_mutex_lock(&m->mu);
    m->parts[accepted_good ? 1 : 0]++;
    pthread_mutex_unlock(&m->mu);
}

void dn_metrics_expected(dn_metrics *m, double escape, double false_reject) {
    pthread_mutex_lock(&m->mu);
    m->exp_escape = escape;
    m->exp_false_reject = false_reject;
    pthread_mutex_unlock(&m->mu);
}

void dn_metrics_action(dn_metrics *m, const char *kind, const char *status) {
    pthread_mutex_lock(&m->mu);
    add(&m->actions, kind ? kind : "?", status ? status : "?", 1);
    pthread_mutex_unlock(&m->mu);
}

void dn_metrics_reload(dn_metrics *m, int ok) {
    pthread_mutex_lock(&m->mu);
    add(&m->reloads, ok ? "ok" : "failed", NULL, 1);
    pthread_mutex_unlock(&m->mu);
}

void dn_metrics_watch(dn_metrics *m, const char *result) {
    pthread_mutex_lock(&m->mu);
    add(&m->watch, result, NULL, 1);
    pthread_mutex_unlock(&m->mu);
}

void dn_metrics_mqtt(dn_metrics *m, const char *result) {
    pthread_mutex_lock(&m->mu);
    add(&m->mqtt, result, NULL, 1);
    pthread_mutex_unlock(&m->mu);
}

void dn_metrics_inflight(dn_metrics *m, int delta) {
    pthread_mutex_lock(&m->mu);
    m->inflight += delta;
    pthread_mutex_unlock(&m->mu);
}

/* Label value escaping per the text format: backslash, double quote, newline. */
static void label(dn_sb *b, const char *v) {
    for (const char *p = v ? v : ""; *p; p++) {
        if (*p == '\\') dn_sb_puts(b, "\\\\");
        else if (*p == '"') dn_sb_puts(b, "\\\"");
        else if (*p == '\n') dn_sb_puts(b, "\\n");
        else dn_sb_putn(b, p, 1);
    }
}

void dn_metrics_label(dn_sb *b, const char *v) { label(b, v); }

static void family_out(dn_sb *b, const family *f, const char *name, const char *help, const char *la, const char *lb) {
    dn_sb_printf(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (int i = 0; i < f->n; i++) {
        dn_sb_printf(b, "%s{%s=\"", name, la);
        label(b, f->s[i].a);
        if (lb) {
            dn_sb_printf(b, "\",%s=\"", lb);
            label(b, f->s[i].b);
        }
        dn_sb_printf(b, "\"} %.17g\n", f->s[i].v);
    }
}

/* A histogram: cumulative buckets (counts has nb + 1 entries, the last above every bound), sum, count. */
static void histogram_out(dn_sb *b, const char *name, const char *help, const double *bounds, int nb,
                          const unsigned long long *counts, double sum, unsigned long long count) {
    dn_sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    unsigned long long cum = 0;
    for (int i = 0; i < nb; i++) {
        cum += counts[i];
        dn_sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i], cum);
    }
    cum += counts[nb];
    dn_sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", name, cum, name, sum, name, count);
}

void dn_metrics_render(dn_metrics *m, long qd, long qc, dn_sb *b) {
    pthread_mutex_lock(&m->mu);
    if (m->parts[0] + m->parts[1])
        dn_sb_printf(b, "# HELP defectnet_parts_total Parts accepted as good, or rejected (defect or uncertain).\n"
                        "# TYPE defectnet_parts_total counter\ndefectnet_parts_total{outcome=\"accepted_good\"} %llu\n"
                        "defectnet_parts_total{outcome=\"rejected\"} %llu\n", m->parts[1], m->parts[0]);
    if (m->exp_escape >= 0)
        dn_sb_printf(b, "# HELP defectnet_expected_escape_rate Defective parts accepted as good, share expected by the "
                        "model's decision policy (eval).\n# TYPE defectnet_expected_escape_rate gauge\n"
                        "defectnet_expected_escape_rate %.6g\n", m->exp_escape);
    if (m->exp_false_reject >= 0)
        dn_sb_printf(b, "# HELP defectnet_expected_false_reject_rate Good parts rejected or uncertain, share expected by "
                        "the model's decision policy (eval).\n# TYPE defectnet_expected_false_reject_rate gauge\n"
                        "defectnet_expected_false_reject_rate %.6g\n", m->exp_false_reject);
    family_out(b, &m->requests, "defectnet_http_requests_total", "HTTP requests by endpoint and status code.",
               "endpoint", "code");
    histogram_out(b, "defectnet_predict_latency_seconds",
                  "Time from request received to response ready for POST /v1/predict.", BUCKETS, NB, m->hist, m->lat_sum,
                  m->lat_count);
    family_out(b, &m->predictions, "defectnet_predictions_total", "Predictions by class and decision.", "class", "decision");
    if (m->ood_count)
        histogram_out(b, "defectnet_ood_score",
                      "Novelty score of predictions (higher = more unusual; above the threshold: decision unknown).",
                      OOD_BUCKETS, NOB, m->ood_hist, m->ood_sum, m->ood_count);
    if (isfinite(m->ood_threshold))
        dn_sb_printf(b, "# HELP defectnet_ood_threshold The current model's ood_score threshold (decision unknown above it).\n"
                        "# TYPE defectnet_ood_threshold gauge\ndefectnet_ood_threshold %.9g\n", (double)m->ood_threshold);
    dn_sb_printf(b, "# HELP defectnet_queue_depth Requests waiting for a worker.\n# TYPE defectnet_queue_depth gauge\n"
                    "defectnet_queue_depth %ld\n"
                    "# HELP defectnet_queue_capacity Bounded queue size (503 when full).\n# TYPE defectnet_queue_capacity gauge\n"
                    "defectnet_queue_capacity %ld\n"
                    "# HELP defectnet_inflight_requests Requests being received or processed.\n"
                    "# TYPE defectnet_inflight_requests gauge\ndefectnet_inflight_requests %ld\n",
                 qd, qc, m->inflight);
    family_out(b, &m->actions, "defectnet_action_outcomes_total", "Action outcomes by kind and status.", "kind", "status");
    family_out(b, &m->reloads, "defectnet_model_reloads_total", "Model and rules reloads.", "result", NULL);
    family_out(b, &m->watch, "defectnet_watch_files_total", "Files seen by the folder watcher.", "result", NULL);
    family_out(b, &m->mqtt, "defectnet_mqtt_messages_total", "MQTT messages taken in (classified, duplicate, rejected, failed = not committed, not acknowledged).", "result", NULL);
    pthread_mutex_unlock(&m->mu);
}
