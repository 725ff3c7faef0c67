/* Two models on the same labelled images: the figures, agreement and McNemar test
 * (see compare.h, "Offline comparison"). The per-model figures are eval's own
 * functions (metrics, Wilson, bootstrap, quality, dn_policy_decide). */
#include "trust/compare.h"
#include "core/core.h"
#include "core/progress.h"
#include "eval/report.h"
#include "eval/style.h"
#include "nn/engine.h"
#include "nn/policy.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

double dn_mcnemar_exact_p(int64_t b, int64_t c) {
    int64_t n = b + c, m = b < c ? b : c;
    if (b < 0 || c < 0 || n == 0) return 1.0;
    /* P(X <= m) for X ~ Binomial(n, 1/2), terms in log space (n may be large) */
    double lf = lgamma((double)n + 1), ln2 = (double)n * log(2.0), s = 0;
    for (int64_t i = 0; i <= m; i++) s += exp(lf - lgamma((double)i + 1) - lgamma((double)(n - i) + 1) - ln2);
    double p = 2 * s;
    return p > 1 ? 1.0 : p;
}

void dn_cmp_models_free(dn_cmp_models *c) {
    if (!c) return;
    if (c->names)
        for (int i = 0; i < c->k; i++) free(c->names[i]);
    free(c->names);
    for (int s = 0; s < 2; s++) {
        dn_eval_metrics_free(&c->m[s].met);
        if (c->m[s].has_quality) dn_quality_free(&c->m[s].q);
    }
    memset(c, 0, sizeof *c);
}

/* One model's figures (the same functions eval uses). */
static dn_status side_figures(const dn_cmp_input *in, int s, int *pred, dn_cmp_figures *f) {
    const dn_cmp_side *sd = &in->side[s];
    snprintf(f->path, sizeof f->path, "%s", sd->path ? sd->path : "");
    snprintf(f->sha256, sizeof f->sha256, "%s", sd->sha256 ? sd->sha256 : "");
    f->nclasses = sd->nclasses;
    for (int64_t i = 0; i < in->n; i++) {
        const dn_cmp_answer *a = &sd->ans[i];
        if (a->cls < 0 || a->cls >= in->k)
            return dn_fail(DN_ERR_ARG, "compare: image %lld: class %d of model %d out of range", (long long)i, a->cls, s);
        pred[i] = a->cls;
        f->correct += a->cls == in->y[i];
        f->lacks += sd->knows && !sd->knows[in->y[i]];
        if (a->decision >= 0 && a->decision < 3) f->decisions[a->decision]++;
    }
    f->accuracy = dn_wilson(f->correct, in->n);
    dn_status st = dn_eval_metrics_compute(in->k, in->n, in->y, NULL, pred, 1, &f->met);
    if (!st) st = dn_bootstrap_macro_f1(in->k, in->y, pred, in->n, &f->f1_lo, &f->f1_hi);
    if (!st && in->good >= 0 && sd->accepted) {
        st = dn_quality_compute(in->k, in->good, in->y, sd->accepted, in->n, &f->q);
        f->has_quality = !st;
    }
    return st;
}

dn_status dn_cmp_analyse(const dn_cmp_input *in, dn_cmp_models *out) {
    memset(out, 0, sizeof *out);
    if (in->k < 1 || in->ndata < 1 || in->ndata > in->k || in->n < 1 || in->good >= in->ndata)
        return dn_fail(DN_ERR_ARG, "compare: %d classes (%d of the data), %lld images, good class %d: nothing to compare",
                       in->k, in->ndata, (long long)in->n, in->good);
    for (int64_t i = 0; i < in->n; i++)
        if (in->y[i] < 0 || in->y[i] >= in->ndata)
            return dn_fail(DN_ERR_ARG, "compare: image %lld: label %d is not a data class", (long long)i, in->y[i]);
    out->k = in->k;
    out->ndata = in->ndata;
    out->good = in->good;
    out->n = in->n;
    int *pred = dn_malloc((size_t)in->n * sizeof *pred);
    if (!pred || !(out->names = dn_calloc((size_t)in->k, sizeof *out->names))) { free(pred); return DN_ERR_NOMEM; }
    for (int c = 0; c < in->k; c++)
        if (!(out->names[c] = dn_strdup(in->names[c]))) { free(pred); dn_cmp_models_free(out); return DN_ERR_NOMEM; }
    dn_status st = DN_OK;
    for (int s = 0; s < 2 && !st; s++) st = side_figures(in, s, pred, &out->m[s]);
    free(pred);
    if (st) { dn_cmp_models_free(out); return st; }
    for (int64_t i = 0; i < in->n; i++) {
        const dn_cmp_answer *a = &in->side[0].ans[i], *b = &in->side[1].ans[i];
        int ra = a->cls == in->y[i], rb = b->cls == in->y[i];
        out->same_class += a->cls == b->cls;
        out->same_decision += a->decision == b->decision;
        out->both_right += ra && rb;
        out->only_live += ra && !rb;
        out->only_cand += !ra && rb;
        out->both_wrong += !ra && !rb;
        if (a->cls == b->cls) continue;
        if (out->ndis < DN_CMP_DISAGREE_MAX) {
            dn_cmp_disagree *d = &out->dis[out->ndis++];
            snprintf(d->path, sizeof d->path, "%s", in->paths ? in->paths[i] : "");
            d->truth = in->y[i];
            d->a[0] = *a;
            d->a[1] = *b;
        }
        out->disagree++;
    }
    out->p = dn_mcnemar_exact_p(out->only_live, out->only_cand);
    out->verdict = out->p >= DN_CMP_ALPHA ? 0 : out->only_cand > out->only_live ? 1 : -1;
    return DN_OK;
}

/* ------------------------------------------------------------------ running both models */

/* Index of name among names[0..k), -1 if absent. */
static int name_index(char *const *names, int k, const char *name) {
    for (int i = 0; i < k; i++)
        if (!strcmp(names[i], name)) return i;
    return -1;
}

typedef struct cmp_run {
    const dn_model *m[2];
    dn_session *s[2];
    dn_policy pol[2];
    int has_good[2];          /* the model has the good class: accepted flags from its policy */
    int *map[2];              /* model class -> common class */
    uint8_t *knows[2];
    dn_prediction *preds[2];
    float *probs[2];
    char **names;             /* common classes (borrowed strings) */
    int k;
    dn_cmp_answer *ans[2];
    uint8_t *acc[2];
    int *y;
    const char **kpaths;
} cmp_run;

static void run_free(cmp_run *r) {
    for (int s = 0; s < 2; s++) {
        dn_session_free(r->s[s]);
        free(r->map[s]); free(r->knows[s]); free(r->preds[s]); free(r->probs[s]); free(r->ans[s]); free(r->acc[s]);
    }
    free(r->names); free(r->y); free(r->kpaths);
}

/* The common class space, the maps, the policies and the sessions. */
static dn_status run_setup(cmp_run *r, const char *const model_paths[2], const char *good_name,
                           const char *const *data_classes, int ndata, int n, int batch, int threads) {
    int cap = ndata + r->m[0]->num_classes + r->m[1]->num_classes;
    if (!(r->names = dn_calloc((size_t)cap, sizeof *r->names))) return DN_ERR_NOMEM;
    for (int i = 0; i < ndata; i++) r->names[r->k++] = (char *)data_classes[i];
    for (int s = 0; s < 2; s++) {
        const dn_model *m = r->m[s];
        if (m->num_classes < 1)
            return dn_fail(DN_ERR_ARG, "%s: model has no classification head (backbone only)", model_paths[s]);
        r->map[s] = dn_malloc((size_t)m->num_classes * sizeof *r->map[s]);
        if (!r->map[s]) return DN_ERR_NOMEM;
        for (int c = 0; c < m->num_classes; c++) {
            int u = name_index(r->names, r->k, m->class_names[c]);
            if (u < 0) { u = r->k; r->names[r->k++] = m->class_names[c]; }
            r->map[s][c] = u;
        }
    }
    for (int s = 0; s < 2; s++) {
        const dn_model *m = r->m[s];
        if (!(r->knows[s] = dn_calloc((size_t)r->k, 1))) return DN_ERR_NOMEM;
        for (int c = 0; c < m->num_classes; c++) r->knows[s][r->map[s][c]] = 1;
        dn_status st = dn_model_policy(m, &r->pol[s]);
        if (st) return dn_fail_prefix(st, "%s", model_paths[s]);
        int g = good_name ? dn_model_class_index(m, good_name) : -1;
        r->has_good[s] = g >= 0;
        if (g >= 0 && r->pol[s].good != g && (st = dn_policy_override_good(m, good_name, &r->pol[s])))
            return dn_fail_prefix(st, "%s", model_paths[s]);
        int b = batch < n ? batch : n;
        if ((st = dn_session_new(m, b, threads, &r->s[s]))) return dn_fail_prefix(st, "%s", model_paths[s]);
        dn_session_set_policy(r->s[s], &r->pol[s]);
        r->preds[s] = dn_calloc((size_t)b, sizeof *r->preds[s]);
        r->probs[s] = dn_calloc((size_t)b * m->num_classes, sizeof *r->probs[s]);
        r->ans[s] = dn_calloc((size_t)n, sizeof *r->ans[s]);
        r->acc[s] = dn_calloc((size_t)n, 1);
        if (!r->preds[s] || !r->probs[s] || !r->ans[s] || !r->acc[s]) return DN_ERR_NOMEM;
    }
    r->y = dn_malloc((size_t)n * sizeof *r->y);
    r->kpaths = dn_malloc((size_t)n * sizeof *r->kpaths);
    return r->y && r->kpaths ? DN_OK : DN_ERR_NOMEM;
}

/* Decodes one image and preprocesses it for both models into slot j. */
static dn_status load_one(cmp_run *r, const char *path, int j) {
    dn_image img = {0};
    dn_status st = dn_image_load(path, &img);
    for (int s = 0; s < 2 && !st; s++) {
        const dn_model *m = r->m[s];
        st = dn_preprocess(&img, &m->pp, dn_session_input(r->s[s]) + (size_t)j * 3 * m->pp.crop * m->pp.crop);
    }
    dn_image_free(&img);
    return st;
}

dn_status dn_cmp_run(const dn_model *const models[2], const char *const model_paths[2], const char *good_name,
                     const char *const *data_classes, int ndata, const char *const *paths, const int *labels, int n,
                     int batch, int threads, FILE *log, const char *prefix, dn_cmp_models *out) {
    memset(out, 0, sizeof *out);
    if (n < 1) return dn_fail(DN_ERR_ARG, "compare: no images");
    if (batch < 1) batch = 1;
    if (batch > 1024) batch = 1024;
    cmp_run r;
    memset(&r, 0, sizeof r);
    r.m[0] = models[0];
    r.m[1] = models[1];
    dn_status st = run_setup(&r, model_paths, good_name, data_classes, ndata, n, batch, threads);
    int good = !st && good_name ? name_index(r.names, ndata, good_name) : -1;
    int nok = 0, skipped = 0, b = batch < n ? batch : n;
    int pending[1024];
    dn_progress pg;
    dn_progress_start(&pg, "compare", n);
    for (int next = 0; !st && next < n;) {
        dn_progress_update(&pg, next);
        int nb = 0;
        while (nb < b && next < n) {
            const char *path = paths[next++];
            if (load_one(&r, path, nb)) {
                dn_progress_clear(&pg);
                const char *err = dn_last_error();
                if (log && strstr(err, path)) fprintf(log, "%sskipped: %s\n", prefix, err);
                else if (log) fprintf(log, "%sskipped: %s: %s\n", prefix, path, err);
                skipped++;
                continue;
            }
            pending[nb++] = next - 1;
        }
        for (int s = 0; s < 2 && nb && !st; s++) {
            const dn_model *m = r.m[s];
            st = dn_session_classify_batch(r.s[s], dn_session_input(r.s[s]), nb, r.preds[s], r.probs[s]);
            for (int j = 0; j < nb && !st; j++) {
                dn_prediction p = r.preds[s][j];
                dn_cmp_answer *a = &r.ans[s][nok + j];
                a->cls = r.map[s][p.cls];
                a->confidence = p.confidence;
                a->decision = p.decision;
                /* accepted as good: the policy the session applied, applied again (idempotent) for its verdict */
                r.acc[s][nok + j] = r.has_good[s] && (uint8_t)dn_policy_decide(&r.pol[s], m->threshold,
                                                                               r.probs[s] + (size_t)j * m->num_classes,
                                                                               m->num_classes, &p);
            }
        }
        for (int j = 0; j < nb && !st; j++) {
            r.y[nok] = labels[pending[j]];
            r.kpaths[nok++] = paths[pending[j]];
        }
    }
    dn_progress_end(&pg);
    if (!st && nok == 0) st = dn_fail(DN_ERR_ARG, "compare: none of the %d images could be read", n);
    if (!st) {
        dn_cmp_input in = {.k = r.k, .names = (const char *const *)r.names, .ndata = ndata, .n = nok, .y = r.y,
                           .paths = r.kpaths, .good = good};
        for (int s = 0; s < 2; s++)
            in.side[s] = (dn_cmp_side){r.ans[s], good >= 0 ? r.acc[s] : NULL, r.knows[s], model_paths[s],
                                       r.m[s]->sha256, r.m[s]->num_classes};
        st = dn_cmp_analyse(&in, out);
        out->skipped = skipped;
        out->listed = n;
    }
    run_free(&r);
    return st;
}

/* ------------------------------------------------------------------ reports */

static const char *const SIDE[2] = {"live", "candidate"};

const char *dn_cmp_verdict_word(const dn_cmp_models *c) {
    return c->verdict > 0 ? "candidate better" : c->verdict < 0 ? "candidate worse" : "no significant difference";
}

static double share(int64_t k, int64_t n) { return n ? (double)k / (double)n : 0.0; }

/* A class's recall / precision text, "-" where it does not apply (no images / never predicted). */
static void rate_txt(char *buf, size_t n, int64_t den, double v) {
    if (den) snprintf(buf, n, "%.3f", v);
    else snprintf(buf, n, "-");
}

static void print_rate(FILE *f, const char *what, const dn_cmp_models *c, int escape) {
    fprintf(f, "%-22s", what);
    for (int s = 0; s < 2; s++) {
        const dn_rate *r = escape ? &c->m[s].q.escape : &c->m[s].q.false_reject;
        char t[96];
        snprintf(t, sizeof t, "%.2f%% (%lld/%lld, %.1f-%.1f%%)", 100 * r->p, (long long)r->k, (long long)r->n,
                 100 * r->lo, 100 * r->hi);
        fprintf(f, s ? "  %s" : "  %-30s", t);
    }
    fputc('\n', f);
}

void dn_cmp_print(const dn_cmp_models *c, FILE *f) {
    fprintf(f, "live:      %s (%d classes)\ncandidate: %s (%d classes)\n", c->m[0].path, c->m[0].nclasses,
            c->m[1].path, c->m[1].nclasses);
    fprintf(f, "data:      %s, split %s: %lld images compared", c->data_source ? c->data_source : "",
            c->split ? c->split : "all", (long long)c->n);
    if (c->skipped) fprintf(f, ", %d unreadable skipped", c->skipped);
    fputc('\n', f);
    fprintf(f, "\n%-22s  %-30s  %s\n", "", "live", "candidate");
    fprintf(f, "%-22s", "accuracy (95% Wilson)");
    for (int s = 0; s < 2; s++) {
        const dn_rate *a = &c->m[s].accuracy;
        char t[64];
        snprintf(t, sizeof t, "%.2f%% (%.1f-%.1f%%)", 100 * a->p, 100 * a->lo, 100 * a->hi);
        fprintf(f, s ? "  %s" : "  %-30s", t);
    }
    fprintf(f, "\n%-22s", "macro-F1 (bootstrap)");
    for (int s = 0; s < 2; s++) {
        char t[64];
        snprintf(t, sizeof t, "%.4f (%.3f-%.3f)", c->m[s].met.macro_f1, c->m[s].f1_lo, c->m[s].f1_hi);
        fprintf(f, s ? "  %s" : "  %-30s", t);
    }
    fputc('\n', f);
    if (c->good >= 0 && c->m[0].has_quality && c->m[1].has_quality) {
        print_rate(f, "escape rate", c, 1);
        print_rate(f, "false-reject rate", c, 0);
    }
    fprintf(f, "%-22s", "accepted/uncert./unkn.");
    for (int s = 0; s < 2; s++) {
        char t[64];
        const int64_t *d = c->m[s].decisions;
        snprintf(t, sizeof t, "%lld / %lld / %lld", (long long)d[0], (long long)d[1], (long long)d[2]);
        fprintf(f, s ? "  %s" : "  %-30s", t);
    }
    fputc('\n', f);
    for (int s = 0; s < 2; s++)
        if (c->m[s].lacks)
            fprintf(f, "note: %lld image(s) are of classes the %s model does not have (counted as its errors)\n",
                    (long long)c->m[s].lacks, SIDE[s]);
    if (c->good >= 0) fprintf(f, "good class: %s\n", c->names[c->good]);

    fprintf(f, "\n%-24s %7s  %11s %11s %8s  %11s %11s\n", "class", "images", "recall live", "recall cand",
            "delta", "prec. live", "prec. cand");
    for (int u = 0; u < c->k; u++) {
        const dn_eval_metrics *a = &c->m[0].met, *b = &c->m[1].met;
        if (u >= c->ndata && !a->predicted[u] && !b->predicted[u]) continue;
        char r0[16], p0[16], r1[16], p1[16], d[16];
        rate_txt(r0, sizeof r0, a->support[u], a->recall[u]);
        rate_txt(p0, sizeof p0, a->predicted[u], a->precision[u]);
        rate_txt(r1, sizeof r1, b->support[u], b->recall[u]);
        rate_txt(p1, sizeof p1, b->predicted[u], b->precision[u]);
        if (a->support[u]) snprintf(d, sizeof d, "%+.3f", b->recall[u] - a->recall[u]);
        else snprintf(d, sizeof d, "-");
        fprintf(f, "%-24s %7lld  %11s %11s %8s  %11s %11s%s\n", c->names[u], (long long)a->support[u], r0, r1, d, p0,
                p1, u >= c->ndata ? "  (not a data class)" : "");
    }
    fprintf(f, "\nagreement: same class %lld of %lld (%.2f%%), same decision %lld (%.2f%%)\n", (long long)c->same_class,
            (long long)c->n, 100 * share(c->same_class, c->n), (long long)c->same_decision,
            100 * share(c->same_decision, c->n));
    fprintf(f, "correct:   both %lld, only live %lld, only candidate %lld, both wrong %lld (exact McNemar on the %lld "
               "discordant: p=%.4g)\n",
            (long long)c->both_right, (long long)c->only_live, (long long)c->only_cand, (long long)c->both_wrong,
            (long long)(c->only_live + c->only_cand), c->p);
    if (c->disagree) {
        int show = c->ndis < 10 ? c->ndis : 10;
        fprintf(f, "disagreements: %lld (first %d; all %d listed in -f json|html)\n", (long long)c->disagree, show,
                c->ndis);
        for (int i = 0; i < show; i++) {
            const dn_cmp_disagree *d = &c->dis[i];
            fprintf(f, "  %s  true %s: live %s (%.3f, %s), candidate %s (%.3f, %s)\n", d->path, c->names[d->truth],
                    c->names[d->a[0].cls], d->a[0].confidence, dn_decision_name(d->a[0].decision),
                    c->names[d->a[1].cls], d->a[1].confidence, dn_decision_name(d->a[1].decision));
        }
    }
    fprintf(f, "verdict: %s (McNemar p=%.4g)\n", dn_cmp_verdict_word(c), c->p);
}

/* ---- JSON */

static void jnum(dn_sb *b, double v) {
    if (isfinite(v)) dn_sb_printf(b, "%.6g", v);
    else dn_sb_puts(b, "null");
}

static void jrate(dn_sb *b, const char *key, const dn_rate *r) {
    dn_sb_printf(b, ",\"%s\":{\"k\":%lld,\"n\":%lld,\"rate\":%.6g,\"ci95\":[%.6g,%.6g]}", key, (long long)r->k,
                 (long long)r->n, r->p, r->lo, r->hi);
}

static void jstr_kv(dn_sb *b, const char *key, const char *v, int comma) {
    dn_sb_printf(b, "%s\"%s\":", comma ? "," : "", key);
    dn_sb_json_str(b, v);
}

static void json_side(const dn_cmp_models *c, int s, dn_sb *b) {
    const dn_cmp_figures *f = &c->m[s];
    dn_sb_puts(b, "{");
    jstr_kv(b, "path", f->path, 0);
    jstr_kv(b, "sha256", f->sha256, 1);
    dn_sb_printf(b, ",\"classes\":%d,\"correct\":%lld", f->nclasses, (long long)f->correct);
    jrate(b, "accuracy", &f->accuracy);
    dn_sb_puts(b, ",\"macro_f1\":");
    jnum(b, f->met.macro_f1);
    dn_sb_puts(b, ",\"macro_f1_ci95\":[");
    jnum(b, f->f1_lo);
    dn_sb_puts(b, ",");
    jnum(b, f->f1_hi);
    dn_sb_puts(b, "]");
    if (f->has_quality) {
        jrate(b, "escape", &f->q.escape);
        jrate(b, "false_reject", &f->q.false_reject);
    } else {
        dn_sb_puts(b, ",\"escape\":null,\"false_reject\":null");
    }
    dn_sb_printf(b, ",\"decisions\":{\"accepted\":%lld,\"uncertain\":%lld,\"unknown\":%lld},"
                    "\"images_of_classes_it_lacks\":%lld}",
                 (long long)f->decisions[0], (long long)f->decisions[1], (long long)f->decisions[2],
                 (long long)f->lacks);
}

static void json_answer(const dn_cmp_models *c, const dn_cmp_answer *a, dn_sb *b) {
    dn_sb_puts(b, "{");
    jstr_kv(b, "class", c->names[a->cls], 0);
    dn_sb_printf(b, ",\"confidence\":%.6g", (double)a->confidence);
    jstr_kv(b, "decision", dn_decision_name(a->decision), 1);
    dn_sb_puts(b, "}");
}

void dn_cmp_json(const dn_cmp_models *c, dn_sb *b) {
    dn_sb_puts(b, "{");
    jstr_kv(b, "data", c->data_source ? c->data_source : "", 0);
    jstr_kv(b, "split", c->split ? c->split : "all", 1);
    dn_sb_printf(b, ",\"listed\":%d,\"images\":%lld,\"skipped\":%d,\"good_class\":", c->listed, (long long)c->n,
                 c->skipped);
    if (c->good >= 0) dn_sb_json_str(b, c->names[c->good]);
    else dn_sb_puts(b, "null");
    for (int s = 0; s < 2; s++) {
        dn_sb_printf(b, ",\"%s\":", SIDE[s]);
        json_side(c, s, b);
    }
    dn_sb_printf(b, ",\"agreement\":{\"same_class\":%lld,\"share\":%.6g,\"same_decision\":%lld,"
                    "\"both_right\":%lld,\"only_live_right\":%lld,\"only_candidate_right\":%lld,\"both_wrong\":%lld,"
                    "\"mcnemar_p\":%.6g}",
                 (long long)c->same_class, share(c->same_class, c->n), (long long)c->same_decision,
                 (long long)c->both_right, (long long)c->only_live, (long long)c->only_cand, (long long)c->both_wrong,
                 c->p);
    dn_sb_puts(b, ",\"per_class\":[");
    int first = 1;
    for (int u = 0; u < c->k; u++) {
        const dn_eval_metrics *m0 = &c->m[0].met, *m1 = &c->m[1].met;
        if (u >= c->ndata && !m0->predicted[u] && !m1->predicted[u]) continue;
        dn_sb_puts(b, first ? "{" : ",{");
        first = 0;
        jstr_kv(b, "class", c->names[u], 0);
        dn_sb_printf(b, ",\"data_class\":%s,\"images\":%lld", u < c->ndata ? "true" : "false", (long long)m0->support[u]);
        for (int s = 0; s < 2; s++) {
            const dn_eval_metrics *m = &c->m[s].met;
            dn_sb_printf(b, ",\"%s\":{\"predicted\":%lld,\"recall\":", SIDE[s], (long long)m->predicted[u]);
            if (m->support[u]) jnum(b, m->recall[u]);
            else dn_sb_puts(b, "null");
            dn_sb_puts(b, ",\"precision\":");
            if (m->predicted[u]) jnum(b, m->precision[u]);
            else dn_sb_puts(b, "null");
            dn_sb_puts(b, "}");
        }
        dn_sb_puts(b, ",\"recall_delta\":");
        if (m0->support[u]) jnum(b, m1->recall[u] - m0->recall[u]);
        else dn_sb_puts(b, "null");
        dn_sb_puts(b, "}");
    }
    dn_sb_printf(b, "],\"disagreements_total\":%lld,\"disagreements\":[", (long long)c->disagree);
    for (int i = 0; i < c->ndis; i++) {
        const dn_cmp_disagree *d = &c->dis[i];
        dn_sb_puts(b, i ? ",{" : "{");
        jstr_kv(b, "path", d->path, 0);
        jstr_kv(b, "true", c->names[d->truth], 1);
        for (int s = 0; s < 2; s++) {
            dn_sb_printf(b, ",\"%s\":", SIDE[s]);
            json_answer(c, &d->a[s], b);
        }
        dn_sb_puts(b, "}");
    }
    dn_sb_printf(b, "],\"alpha\":%g,\"verdict\":", DN_CMP_ALPHA);
    dn_sb_json_str(b, dn_cmp_verdict_word(c));
    dn_sb_puts(b, "}");
}

/* ---- HTML (eval's stylesheet and escaper) */

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static void card(dn_sb *b, const char *id, const char *value, const char *label, int warn) {
    dn_sb_printf(b, "<div class=\"card%s\"><div class=\"v\" id=\"%s\">%s</div><div class=\"l\">%s</div></div>\n",
                 warn ? " warn" : "", id, value, label);
}

static void html_rate_cell(dn_sb *b, const dn_rate *r) {
    dn_sb_printf(b, "<td>%.2f%% <span class=\"note\">(%lld/%lld, %.1f&ndash;%.1f%%)</span></td>", 100 * r->p,
                 (long long)r->k, (long long)r->n, 100 * r->lo, 100 * r->hi);
}

static void html_delta(dn_sb *b, double d, int higher_better) {
    const char *col = fabs(d) < 1e-12 ? DN_COL_MUTED : (d > 0) == higher_better ? DN_COL_OK : DN_COL_BAD;
    dn_sb_printf(b, "<td style=\"color:%s\">%+.2f%s</td>", col, 100 * d, " pt");
}

static void html_models(const dn_cmp_models *c, dn_sb *b) {
    const dn_cmp_figures *L = &c->m[0], *C = &c->m[1];
    dn_sb_puts(b, "<h2>Both models</h2>\n<table id=\"models\"><tr><th class=\"l\"></th><th>live</th><th>candidate</th>"
                  "<th>candidate &minus; live</th></tr>\n<tr><td class=\"l\">accuracy (95% Wilson)</td>");
    html_rate_cell(b, &L->accuracy);
    html_rate_cell(b, &C->accuracy);
    html_delta(b, C->accuracy.p - L->accuracy.p, 1);
    dn_sb_printf(b, "</tr>\n<tr><td class=\"l\">macro-F1 (95%% bootstrap)</td><td>%.4f <span class=\"note\">(%.3f&ndash;"
                    "%.3f)</span></td><td>%.4f <span class=\"note\">(%.3f&ndash;%.3f)</span></td>",
                 L->met.macro_f1, L->f1_lo, L->f1_hi, C->met.macro_f1, C->f1_lo, C->f1_hi);
    html_delta(b, C->met.macro_f1 - L->met.macro_f1, 1);
    dn_sb_puts(b, "</tr>\n");
    if (c->good >= 0 && L->has_quality && C->has_quality) {
        dn_sb_puts(b, "<tr><td class=\"l\">escape rate (defective accepted as ");
        dn_sb_html(b, c->names[c->good]);
        dn_sb_puts(b, ")</td>");
        html_rate_cell(b, &L->q.escape);
        html_rate_cell(b, &C->q.escape);
        html_delta(b, C->q.escape.p - L->q.escape.p, 0);
        dn_sb_puts(b, "</tr>\n<tr><td class=\"l\">false-reject rate</td>");
        html_rate_cell(b, &L->q.false_reject);
        html_rate_cell(b, &C->q.false_reject);
        html_delta(b, C->q.false_reject.p - L->q.false_reject.p, 0);
        dn_sb_puts(b, "</tr>\n");
    }
    static const char *const DEC[3] = {"accepted", "uncertain", "unknown"};
    for (int d = 0; d < 3; d++) {
        dn_sb_printf(b, "<tr><td class=\"l\">decision %s</td>", DEC[d]);
        for (int s = 0; s < 2; s++)
            dn_sb_printf(b, "<td>%lld <span class=\"note\">(%.1f%%)</span></td>", (long long)c->m[s].decisions[d],
                         100 * share(c->m[s].decisions[d], c->n));
        dn_sb_printf(b, "<td>%+lld</td></tr>\n", (long long)(C->decisions[d] - L->decisions[d]));
    }
    dn_sb_printf(b, "<tr><td class=\"l\">images of classes the model lacks</td><td>%lld</td><td>%lld</td><td></td></tr>\n"
                    "<tr><td class=\"l\">classes</td><td>%d</td><td>%d</td><td></td></tr>\n</table>\n",
                 (long long)L->lacks, (long long)C->lacks, L->nclasses, C->nclasses);
}

static void html_classes(const dn_cmp_models *c, dn_sb *b) {
    dn_sb_puts(b, "<h2>Per class</h2>\n<p class=\"note\">Recall: share of the class's images given that class; "
                  "precision: share of the predictions of the class that were right. Classes are matched by name; "
                  "rows below the data's classes are classes only a model predicts.</p>\n<table id=\"per-class\">"
                  "<tr><th class=\"l\">class</th><th>images</th><th>recall live</th><th>recall candidate</th>"
                  "<th>recall delta</th><th>precision live</th><th>precision candidate</th></tr>\n");
    const dn_eval_metrics *m0 = &c->m[0].met, *m1 = &c->m[1].met;
    for (int u = 0; u < c->k; u++) {
        if (u >= c->ndata && !m0->predicted[u] && !m1->predicted[u]) continue;
        dn_sb_puts(b, "<tr><td class=\"l\">");
        dn_sb_html(b, c->names[u]);
        dn_sb_printf(b, "%s</td><td>%lld</td>", u >= c->ndata ? " <span class=\"note\">(not in the data)</span>" : "",
                     (long long)m0->support[u]);
        if (m0->support[u]) {
            dn_sb_printf(b, "<td>%.3f</td><td>%.3f</td>", m0->recall[u], m1->recall[u]);
            html_delta(b, m1->recall[u] - m0->recall[u], 1);
        } else {
            dn_sb_puts(b, "<td>-</td><td>-</td><td>-</td>");
        }
        for (int s = 0; s < 2; s++) {
            const dn_eval_metrics *m = &c->m[s].met;
            if (m->predicted[u]) dn_sb_printf(b, "<td>%.3f</td>", m->precision[u]);
            else dn_sb_puts(b, "<td>-</td>");
        }
        dn_sb_puts(b, "</tr>\n");
    }
    dn_sb_puts(b, "</table>\n");
}

static void html_answer(const dn_cmp_models *c, const dn_cmp_answer *a, int truth, dn_sb *b) {
    dn_sb_printf(b, "<td class=\"l\" style=\"color:%s\">", a->cls == truth ? DN_COL_OK : DN_COL_BAD);
    dn_sb_html(b, c->names[a->cls]);
    dn_sb_printf(b, " <span class=\"note\">%.3f, %s</span></td>", (double)a->confidence, dn_decision_name(a->decision));
}

static void html_disagreements(const dn_cmp_models *c, int thumbs, dn_sb *b) {
    dn_sb_printf(b, "<h2>Disagreements</h2>\n<p class=\"note\">%lld image(s) where the two models give different "
                    "classes", (long long)c->disagree);
    if (c->disagree > c->ndis) dn_sb_printf(b, "; the first %d in data order", c->ndis);
    dn_sb_puts(b, ". Green: right, red: wrong.</p>\n");
    if (!c->ndis) return;
    dn_sb_printf(b, "<table id=\"disagreements\"><tr>%s<th class=\"l\">image</th><th class=\"l\">true</th>"
                    "<th class=\"l\">live</th><th class=\"l\">candidate</th></tr>\n",
                 thumbs ? "<th></th>" : "");
    for (int i = 0; i < c->ndis; i++) {
        const dn_cmp_disagree *d = &c->dis[i];
        dn_sb_puts(b, "<tr>");
        if (thumbs) {
            dn_image img = {0};
            char *b64 = NULL;
            dn_sb_puts(b, "<td>");
            if (!dn_image_load(d->path, &img) && !dn_thumb_png_base64(&img, DN_THUMB_SIDE / 2, &b64))
                dn_sb_printf(b, "<img alt=\"\" src=\"data:image/png;base64,%s\">", b64);
            dn_image_free(&img);
            free(b64);
            dn_sb_puts(b, "</td>");
        }
        dn_sb_puts(b, "<td class=\"l\"><code>");
        dn_sb_html(b, d->path);
        dn_sb_puts(b, "</code></td><td class=\"l\">");
        dn_sb_html(b, c->names[d->truth]);
        dn_sb_puts(b, "</td>");
        for (int s = 0; s < 2; s++) html_answer(c, &d->a[s], d->truth, b);
        dn_sb_puts(b, "</tr>\n");
    }
    dn_sb_puts(b, "</table>\n");
}

void dn_cmp_html(const dn_cmp_models *c, int thumbs, dn_sb *b) {
    char v[96], l[256];
    dn_sb_puts(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                  "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>defectnet compare: ");
    dn_sb_html(b, base_name(c->m[1].path));
    dn_sb_puts(b, " vs ");
    dn_sb_html(b, base_name(c->m[0].path));
    dn_sb_printf(b, "</title>\n<style>%s</style></head><body>\n<h1>Candidate ", dn_report_css());
    dn_sb_html(b, base_name(c->m[1].path));
    dn_sb_puts(b, " against live ");
    dn_sb_html(b, base_name(c->m[0].path));
    dn_sb_puts(b, "</h1>\n<p class=\"sub\">");
    dn_sb_html(b, c->data_source ? c->data_source : "");
    dn_sb_printf(b, " &middot; split <b>%s</b> &middot; %lld images compared", c->split ? c->split : "all",
                 (long long)c->n);
    if (c->skipped) dn_sb_printf(b, " &middot; %d unreadable skipped", c->skipped);
    dn_sb_puts(b, "</p>\n<div class=\"cards\">\n");
    snprintf(l, sizeof l, "verdict (exact McNemar p = %.4g, &alpha; = %g)", c->p, DN_CMP_ALPHA);
    card(b, "verdict", dn_cmp_verdict_word(c), l, c->verdict < 0);
    snprintf(v, sizeof v, "%.2f%% &rarr; %.2f%%", 100 * c->m[0].accuracy.p, 100 * c->m[1].accuracy.p);
    card(b, "accuracy", v, "accuracy live &rarr; candidate", 0);
    snprintf(v, sizeof v, "%.4f &rarr; %.4f", c->m[0].met.macro_f1, c->m[1].met.macro_f1);
    card(b, "macro-f1", v, "macro F1 live &rarr; candidate", 0);
    snprintf(v, sizeof v, "%.2f%%", 100 * share(c->same_class, c->n));
    snprintf(l, sizeof l, "same class (%lld of %lld; same decision %.2f%%)", (long long)c->same_class, (long long)c->n,
             100 * share(c->same_decision, c->n));
    card(b, "agreement", v, l, 0);
    dn_sb_puts(b, "</div>\n");
    html_models(c, b);
    dn_sb_printf(b, "<h2>Correct answers</h2>\n<p class=\"note\">The exact McNemar test looks only at the images where "
                    "one model is right and the other wrong (%lld): under no difference each is equally likely to "
                    "be either.</p>\n<table id=\"mcnemar\"><tr><th class=\"l\"></th><th>candidate right</th>"
                    "<th>candidate wrong</th></tr>\n<tr><td class=\"l\">live right</td><td>%lld</td><td>%lld</td></tr>\n"
                    "<tr><td class=\"l\">live wrong</td><td>%lld</td><td>%lld</td></tr>\n</table>\n",
                 (long long)(c->only_live + c->only_cand), (long long)c->both_right, (long long)c->only_live,
                 (long long)c->only_cand, (long long)c->both_wrong);
    html_classes(c, b);
    html_disagreements(c, thumbs, b);
    dn_sb_puts(b, "<h2>Models</h2>\n<table class=\"kv\">");
    for (int s = 0; s < 2; s++) {
        dn_sb_printf(b, "<tr><td>%s</td><td><code>", SIDE[s]);
        dn_sb_html(b, c->m[s].path);
        dn_sb_puts(b, "</code> sha256 <code>");
        dn_sb_html(b, c->m[s].sha256);
        dn_sb_puts(b, "</code></td></tr>\n");
    }
    dn_sb_printf(b, "</table>\n<p class=\"note\">defectnet %s &middot; <code>defectnet compare</code> &middot; "
                    "self-contained report: no scripts, no external assets.</p>\n</body></html>\n", DN_VERSION);
}
