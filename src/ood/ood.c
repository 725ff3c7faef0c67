/* Unknown-input detection: fit, score, model-file form (see ood.h, docs/ood.md). */
#include "ood/ood.h"
#include "core/json.h"
#include "ood/knn.h"
#include "kernels/kernels.h"
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[DN_OOD_NKINDS] = {"knn", "energy", "rmd", "combo"};

const char *dn_ood_kind_name(int kind) { return kind >= 0 && kind < DN_OOD_NKINDS ? kind_names[kind] : "?"; }

int dn_ood_kind_parse(const char *s) {
    for (int i = 0; s && i < DN_OOD_NKINDS; i++)
        if (!strcmp(s, kind_names[i])) return i;
    return -1;
}

const char *dn_decision_name(int d) {
    switch (d) {
    case DN_DECISION_ACCEPTED: return "accepted";
    case DN_DECISION_UNCERTAIN: return "uncertain";
    case DN_DECISION_UNKNOWN: return "unknown";
    default: return "?";
    }
}

int dn_decision_parse(const char *s) {
    for (int d = DN_DECISION_ACCEPTED; s && d <= DN_DECISION_UNKNOWN; d++)
        if (!strcmp(s, dn_decision_name(d))) return d;
    return -1;
}

void dn_ood_cfg_default(dn_ood_cfg *c) {
    c->bank = 10000;
    c->k = 5;
    c->kind = DN_OOD_COMBO;
    c->tpr = 0.95f;
    c->shrink = 0.1f;
    c->seed = 42;
}

void dn_ood_free(dn_ood *o) {
    if (!o) return;
    free(o->bank); free(o->bank_y); free(o->mu); free(o->mu0); free(o->prec); free(o->prec0);
    free(o->pmu); free(o->mpm); free(o->pmu0);
    free(o);
}

static float *falloc(size_t n) { return dn_malloc((n ? n : 1) * sizeof(float)); }

/* pmu, mpm, pmu0, mpm0 from mu, prec, mu0, prec0. */
static dn_status derive(dn_ood *o) {
    int d = o->dim;
    if (!(o->pmu = falloc((size_t)o->ncls * d)) || !(o->mpm = falloc((size_t)o->ncls)) || !(o->pmu0 = falloc((size_t)d)))
        return dn_fail(DN_ERR_NOMEM, "ood: out of memory");
    for (int c = -1; c < o->ncls; c++) {
        const float *mu = c < 0 ? o->mu0 : o->mu + (size_t)c * d;
        const float *P = c < 0 ? o->prec0 : o->prec;
        float *pm = c < 0 ? o->pmu0 : o->pmu + (size_t)c * d;
        double q = 0;
        for (int i = 0; i < d; i++) {
            double s = 0;
            for (int j = 0; j < d; j++) s += (double)P[(size_t)i * d + j] * mu[j];
            pm[i] = (float)s;
            q += s * mu[i];
        }
        if (c < 0) o->mpm0 = (float)q;
        else o->mpm[c] = (float)q;
    }
    return DN_OK;
}

static dn_ood *ood_alloc(int dim, int ncls, int nbank) {
    dn_ood *o = dn_calloc(1, sizeof *o);
    if (!o) return NULL;
    o->dim = dim; o->ncls = ncls; o->nbank = nbank;
    size_t d = (size_t)dim;
    if (!(o->bank = dn_malloc((size_t)nbank * d * sizeof(uint16_t))) || !(o->mu = falloc((size_t)ncls * d)) || !(o->mu0 = falloc(d)) ||
        !(o->prec = falloc(d * d)) || !(o->prec0 = falloc(d * d))) {
        dn_ood_free(o);
        return NULL;
    }
    return o;
}

dn_status dn_ood_clone(const dn_ood *o, dn_ood **out) {
    *out = NULL;
    dn_ood *c = ood_alloc(o->dim, o->ncls, o->nbank);
    if (!c) return dn_fail(DN_ERR_NOMEM, "ood: out of memory");
    dn_ood keep = *c;
    *c = *o;
    c->bank = keep.bank; c->mu = keep.mu; c->mu0 = keep.mu0; c->prec = keep.prec; c->prec0 = keep.prec0;
    c->pmu = c->mpm = c->pmu0 = NULL;
    c->bank_y = NULL;
    if (o->bank_y && !(c->bank_y = dn_malloc((size_t)o->nbank * sizeof(int)))) {
        dn_ood_free(c);
        return dn_fail(DN_ERR_NOMEM, "ood: out of memory");
    }
    if (o->bank_y) memcpy(c->bank_y, o->bank_y, (size_t)o->nbank * sizeof(int));
    size_t d = (size_t)o->dim;
    memcpy(c->bank, o->bank, (size_t)o->nbank * d * sizeof(uint16_t));
    memcpy(c->mu, o->mu, (size_t)o->ncls * d * sizeof(float));
    memcpy(c->mu0, o->mu0, d * sizeof(float));
    memcpy(c->prec, o->prec, d * d * sizeof(float));
    memcpy(c->prec0, o->prec0, d * d * sizeof(float));
    dn_status st = derive(c);
    if (st) { dn_ood_free(c); return st; }
    *out = c;
    return DN_OK;
}

/* ------------------------------------------------------------ scoring */

static void unit_row(const float *z, int d, float *out) {
    double s = 0;
    for (int i = 0; i < d; i++) s += (double)z[i] * z[i];
    float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
    for (int i = 0; i < d; i++) out[i] = z[i] * inv;
}

static double dotf(const float *a, const float *b, int d) {
    double s = 0;
    for (int i = 0; i < d; i++) s += (double)a[i] * b[i];
    return s;
}

/* out[r] = rows[r] . z for nrows rows of d: a streaming matrix-vector product
 * (16 independent lanes, vectorised by the compiler). For one or a few images
 * this beats dn_sgemm, which would pack the whole bank on every call. */
static void row_dots(const float *rows, int nrows, int d, const float *z, float *out) {
    for (int r = 0; r < nrows; r++) {
        const float *b = rows + (size_t)r * d;
        float acc[16] = {0};
        int j = 0;
        for (; j + 16 <= d; j += 16)
            for (int l = 0; l < 16; l++) acc[l] += b[j + l] * z[j + l];
        float s = 0;
        for (; j < d; j++) s += b[j] * z[j];
        for (int l = 0; l < 16; l++) s += acc[l];
        out[r] = s;
    }
}

/* C (n x nrows) = A (n x d) * rows' : GEMM for batches, row_dots for a few images (the
 * precision matrices; the fp16 bank has its own kernel, ood/knn.h) */
static void times_rows(const float *A, int n, const float *rows, int nrows, int d, float *C) {
    if (n > 8) {
        dn_sgemm(0, 1, n, nrows, d, 1.0f, A, d, rows, d, 0.0f, C, nrows, NULL);
        return;
    }
    for (int i = 0; i < n; i++) row_dots(rows, nrows, d, A + (size_t)i * d, C + (size_t)i * nrows);
}

dn_status dn_ood_scores(const dn_ood *o, const float *feat, const float *logits, int n, float *scores) {
    return dn_ood_scores_pool(o, feat, logits, n, NULL, scores);
}

dn_status dn_ood_scores_pool(const dn_ood *o, const float *feat, const float *logits, int n, dn_pool *pool, float *scores) {
    if (!o || !feat || !logits || !scores || n < 0) return dn_fail(DN_ERR_ARG, "ood scores: NULL argument");
    if (n == 0) return DN_OK;
    int d = o->dim;
    size_t nd = (size_t)n * d;
    float *zn = falloc(nd), *kth = falloc((size_t)n), *pz = falloc(nd), *pz0 = falloc(nd);
    dn_status st = DN_OK;
    if (!zn || !kth || !pz || !pz0) { st = dn_fail(DN_ERR_NOMEM, "ood scores: out of memory"); goto done; }
    for (int i = 0; i < n; i++) unit_row(feat + (size_t)i * d, d, zn + (size_t)i * d);
    if ((st = dn_ood_knn(o->bank, o->nbank, d, zn, n, o->k, pool, kth))) goto done;
    times_rows(feat, n, o->prec, d, d, pz); /* the precisions are symmetric: rows = columns */
    times_rows(feat, n, o->prec0, d, d, pz0);
    for (int i = 0; i < n; i++) {
        const float *z = feat + (size_t)i * d, *l = logits + (size_t)i * o->ncls;
        float *sc = scores + (size_t)i * DN_OOD_NKINDS;
        sc[DN_OOD_KNN] = 1.0f - kth[i];
        double mx = -INFINITY, se = 0;
        for (int c = 0; c < o->ncls; c++) if (l[c] > mx) mx = l[c];
        for (int c = 0; c < o->ncls; c++) se += exp(l[c] - mx);
        sc[DN_OOD_ENERGY] = (float)-(mx + log(se));
        double zpz = dotf(z, pz + (size_t)i * d, d), zpz0 = dotf(z, pz0 + (size_t)i * d, d);
        double md0 = zpz0 - 2 * dotf(o->pmu0, z, d) + o->mpm0, best = INFINITY;
        for (int c = 0; c < o->ncls; c++) {
            double md = zpz - 2 * dotf(o->pmu + (size_t)c * d, z, d) + o->mpm[c];
            if (md < best) best = md;
        }
        sc[DN_OOD_RMD] = (float)(best - md0);
        sc[DN_OOD_COMBO] = 0.5f * ((sc[DN_OOD_KNN] - o->zmean[DN_OOD_KNN]) / o->zstd[DN_OOD_KNN] +
                                   (sc[DN_OOD_RMD] - o->zmean[DN_OOD_RMD]) / o->zstd[DN_OOD_RMD]);
        for (int k = 0; k < DN_OOD_NKINDS; k++)
            if (!isfinite(sc[k])) { st = dn_fail(DN_ERR_NUMERIC, "ood scores: %s score is not finite", kind_names[k]); goto done; }
    }
done:
    free(zn); free(kth); free(pz); free(pz0);
    return st;
}

dn_status dn_ood_score_preds(const dn_model *m, const float *feat, const float *logits, int n, dn_pool *pool,
                             dn_prediction *preds) {
    if (!m->ood) {
        for (int i = 0; i < n; i++) preds[i].ood_score = NAN;
        return DN_OK;
    }
    float one[DN_OOD_NKINDS], *sc = n > 1 ? falloc((size_t)n * DN_OOD_NKINDS) : one;
    if (!sc) return dn_fail(DN_ERR_NOMEM, "ood scores: out of memory");
    dn_status st = dn_ood_scores_pool(m->ood, feat, logits, n, pool, sc); /* the batch together: one pass over the bank */
    for (int i = 0; !st && i < n; i++) preds[i].ood_score = sc[(size_t)i * DN_OOD_NKINDS + m->ood->kind];
    if (sc != one) free(sc);
    return st;
}

int dn_ood_decide(const dn_model *m, const dn_prediction *p) {
    if (m->ood && p->ood_score > m->ood->threshold) return DN_DECISION_UNKNOWN;
    return p->uncertain ? DN_DECISION_UNCERTAIN : DN_DECISION_ACCEPTED;
}

/* ------------------------------------------------------------ fit */

/* In place: a (d x d, SPD, double) -> its inverse as float in out. */
static dn_status spd_inverse(double *a, int d, float *out, const char *what) {
    for (int j = 0; j < d; j++) { /* Cholesky a = L L', L in the lower triangle */
        double s = a[(size_t)j * d + j];
        for (int k = 0; k < j; k++) s -= a[(size_t)j * d + k] * a[(size_t)j * d + k];
        if (!(s > 0)) return dn_fail(DN_ERR_NUMERIC, "ood fit: %s covariance is not positive definite", what);
        double ljj = sqrt(s);
        a[(size_t)j * d + j] = ljj;
        for (int i = j + 1; i < d; i++) {
            double t = a[(size_t)i * d + j];
            for (int k = 0; k < j; k++) t -= a[(size_t)i * d + k] * a[(size_t)j * d + k];
            a[(size_t)i * d + j] = t / ljj;
        }
    }
    /* invert L in place (lower triangle), then inv = L^-T L^-1 */
    for (int j = 0; j < d; j++) {
        a[(size_t)j * d + j] = 1.0 / a[(size_t)j * d + j];
        for (int i = j + 1; i < d; i++) {
            double t = 0;
            for (int k = j; k < i; k++) t -= a[(size_t)i * d + k] * a[(size_t)k * d + j];
            a[(size_t)i * d + j] = t / a[(size_t)i * d + i];
        }
    }
    for (int i = 0; i < d; i++)
        for (int j = 0; j <= i; j++) {
            double s = 0;
            for (int k = i; k < d; k++) s += a[(size_t)k * d + i] * a[(size_t)k * d + j];
            out[(size_t)i * d + j] = out[(size_t)j * d + i] = (float)s;
        }
    return DN_OK;
}

/* prec = inverse of the shrunk covariance of x (n x d) around the per-row means
 * (means[y[i]] or, if y is NULL, means[0]). */
static dn_status fit_precision(const float *x, const int *y, int n, int d, const float *means, float shrink, float *prec,
                               const char *what) {
    float *xc = falloc((size_t)n * d), *cov = falloc((size_t)d * d);
    double *a = dn_malloc((size_t)d * d * sizeof(double));
    dn_status st = DN_OK;
    if (!xc || !cov || !a) { st = dn_fail(DN_ERR_NOMEM, "ood fit: out of memory"); goto done; }
    for (int i = 0; i < n; i++) {
        const float *mu = means + (size_t)(y ? y[i] : 0) * d;
        for (int j = 0; j < d; j++) xc[(size_t)i * d + j] = x[(size_t)i * d + j] - mu[j];
    }
    dn_sgemm(1, 0, d, d, n, 1.0f / (float)n, xc, d, xc, d, 0.0f, cov, d, NULL);
    double tr = 0;
    for (int j = 0; j < d; j++) tr += cov[(size_t)j * d + j];
    double iso = tr / d > 1e-12 ? tr / d : 1e-12;
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double c = 0.5 * ((double)cov[(size_t)i * d + j] + cov[(size_t)j * d + i]);
            a[(size_t)i * d + j] = (1.0 - shrink) * c + (i == j ? shrink * iso : 0.0);
        }
    st = spd_inverse(a, d, prec, what);
done:
    free(xc); free(cov); free(a);
    return st;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

float dn_ood_quantile(const float *v, int n, double tpr) {
    if (n <= 0) return 0.0f;
    float *s = falloc((size_t)n);
    if (!s) return INFINITY;
    memcpy(s, v, (size_t)n * sizeof(float));
    qsort(s, (size_t)n, sizeof(float), cmp_float);
    long idx = (long)ceil(tpr * n - 1e-9) - 1;
    if (idx < 0) idx = 0;
    if (idx >= n) idx = n - 1;
    float t = s[idx];
    free(s);
    return t;
}

dn_status dn_ood_fit(const dn_model *m, const float *fit_feat, const int *fit_y, int nfit, const float *val_feat, int nval,
                     const dn_ood_cfg *cfg, dn_ood **out) {
    *out = NULL;
    dn_ood_cfg dc;
    if (!cfg) { dn_ood_cfg_default(&dc); cfg = &dc; }
    if (!m || m->num_classes < 1 || !m->fc_w) return dn_fail(DN_ERR_ARG, "ood fit: the model has no classification head");
    if (cfg->bank < 1 || cfg->k < 1 || cfg->k > 64 || cfg->kind < 0 || cfg->kind >= DN_OOD_NKINDS || !(cfg->tpr > 0 && cfg->tpr < 1) ||
        !(cfg->shrink >= 0 && cfg->shrink < 1))
        return dn_fail(DN_ERR_ARG, "ood fit: bank >= 1, k in 1..64, tpr in (0,1), shrink in [0,1) required");
    int d = m->feat_dim, C = m->num_classes;
    if (nfit < 2) return dn_fail(DN_ERR_ARG, "ood fit: need at least 2 fit images, got %d", nfit);
    if (nval < 1) return dn_fail(DN_ERR_ARG, "ood fit: need in-distribution validation images to choose the threshold");
    int *cnt = dn_calloc((size_t)C, sizeof(int));
    int *perm = dn_malloc((size_t)nfit * sizeof(int));
    float *logits = falloc((size_t)nval * C), *sc = falloc((size_t)nval * DN_OOD_NKINDS), *col = falloc((size_t)nval), *row = NULL;
    int nbank = nfit < cfg->bank ? nfit : cfg->bank;
    dn_ood *o = ood_alloc(d, C, nbank);
    dn_status st = DN_OK;
    if (!cnt || !perm || !logits || !sc || !col || !o) { st = dn_fail(DN_ERR_NOMEM, "ood fit: out of memory"); goto fail; }
    for (int i = 0; i < nfit; i++) {
        if (fit_y[i] < 0 || fit_y[i] >= C) { st = dn_fail(DN_ERR_ARG, "ood fit: label %d outside 0..%d", fit_y[i], C - 1); goto fail; }
        cnt[fit_y[i]]++;
    }
    for (int c = 0; c < C; c++)
        if (!cnt[c]) { st = dn_fail(DN_ERR_ARG, "ood fit: class '%s' has no fit images", m->class_names[c]); goto fail; }
    /* means (double accumulation) */
    for (int c = 0; c < C; c++) memset(o->mu + (size_t)c * d, 0, (size_t)d * sizeof(float));
    {
        double *acc = dn_calloc((size_t)(C + 1) * d, sizeof(double));
        if (!acc) { st = dn_fail(DN_ERR_NOMEM, "ood fit: out of memory"); goto fail; }
        for (int i = 0; i < nfit; i++)
            for (int j = 0; j < d; j++) {
                double v = fit_feat[(size_t)i * d + j];
                acc[(size_t)fit_y[i] * d + j] += v;
                acc[(size_t)C * d + j] += v;
            }
        for (int c = 0; c < C; c++)
            for (int j = 0; j < d; j++) o->mu[(size_t)c * d + j] = (float)(acc[(size_t)c * d + j] / cnt[c]);
        for (int j = 0; j < d; j++) o->mu0[j] = (float)(acc[(size_t)C * d + j] / nfit);
        free(acc);
    }
    if ((st = fit_precision(fit_feat, fit_y, nfit, d, o->mu, cfg->shrink, o->prec, "within-class")) ||
        (st = fit_precision(fit_feat, NULL, nfit, d, o->mu0, cfg->shrink, o->prec0, "background")) || (st = derive(o)))
        goto fail;
    /* bank: a seeded random subset (all rows if they fit) */
    for (int i = 0; i < nfit; i++) perm[i] = i;
    if (nbank < nfit) {
        dn_rng r;
        dn_rng_seed(&r, cfg->seed);
        for (int i = 0; i < nbank; i++) {
            int j = i + (int)dn_rng_below(&r, (uint32_t)(nfit - i));
            int t = perm[i]; perm[i] = perm[j]; perm[j] = t;
        }
    }
    if (!(row = falloc((size_t)d))) { st = dn_fail(DN_ERR_NOMEM, "ood fit: out of memory"); goto fail; }
    for (int i = 0; i < nbank; i++) { /* unit rows, stored as fp16 */
        unit_row(fit_feat + (size_t)perm[i] * d, d, row);
        for (int j = 0; j < d; j++) o->bank[(size_t)i * d + j] = dn_f32_to_f16(row[j]);
    }
    if (!(o->bank_y = dn_malloc((size_t)nbank * sizeof(int)))) { st = dn_fail(DN_ERR_NOMEM, "ood: out of memory"); goto fail; }
    for (int i = 0; i < nbank; i++) o->bank_y[i] = fit_y[perm[i]];
    o->k = cfg->k < nbank ? cfg->k : nbank;
    o->kind = cfg->kind;
    o->tpr = cfg->tpr;
    o->shrink = cfg->shrink;
    o->fit_rows = nfit;
    o->val_rows = nval;
    for (int k = 0; k < DN_OOD_NKINDS; k++) o->zmean[k] = 0, o->zstd[k] = 1;
    /* validation: score statistics, then the threshold of the chosen score */
    dn_ood_logits(m, val_feat, nval, logits);
    if ((st = dn_ood_scores(o, val_feat, logits, nval, sc))) goto fail;
    for (int k = 0; k < DN_OOD_NKINDS; k++) {
        if (k == DN_OOD_COMBO) continue;
        double s = 0, s2 = 0;
        for (int i = 0; i < nval; i++) s += sc[(size_t)i * DN_OOD_NKINDS + k];
        s /= nval;
        for (int i = 0; i < nval; i++) {
            double e = sc[(size_t)i * DN_OOD_NKINDS + k] - s;
            s2 += e * e;
        }
        double sd = nval > 1 ? sqrt(s2 / (nval - 1)) : 0;
        o->zmean[k] = (float)s;
        o->zstd[k] = (float)(sd > 1e-6 * (fabs(s) + 1e-6) ? sd : fabs(s) + 1e-6);
    }
    if ((st = dn_ood_scores(o, val_feat, logits, nval, sc))) goto fail; /* combo with the statistics */
    {
        double s = 0, s2 = 0;
        for (int i = 0; i < nval; i++) s += sc[(size_t)i * DN_OOD_NKINDS + DN_OOD_COMBO];
        s /= nval;
        for (int i = 0; i < nval; i++) { double e = sc[(size_t)i * DN_OOD_NKINDS + DN_OOD_COMBO] - s; s2 += e * e; }
        o->zmean[DN_OOD_COMBO] = (float)s;
        o->zstd[DN_OOD_COMBO] = (float)(nval > 1 ? sqrt(s2 / (nval - 1)) : 0);
    }
    for (int i = 0; i < nval; i++) col[i] = sc[(size_t)i * DN_OOD_NKINDS + o->kind];
    o->threshold = dn_ood_quantile(col, nval, cfg->tpr);
    *out = o;
    o = NULL;
fail:
    free(cnt); free(perm); free(logits); free(sc); free(col); free(row);
    dn_ood_free(o);
    return st;
}

/* ------------------------------------------------------------ metrics */

typedef struct { float v; int out; } lab_score;
static int cmp_lab(const void *a, const void *b) { return cmp_float(&((const lab_score *)a)->v, &((const lab_score *)b)->v); }

double dn_ood_auroc(const float *in, int nin, const float *out, int nout) {
    if (nin < 1 || nout < 1) return NAN;
    lab_score *a = dn_malloc((size_t)(nin + nout) * sizeof *a);
    if (!a) return NAN;
    for (int i = 0; i < nin; i++) a[i] = (lab_score){in[i], 0};
    for (int i = 0; i < nout; i++) a[nin + i] = (lab_score){out[i], 1};
    int n = nin + nout;
    qsort(a, (size_t)n, sizeof *a, cmp_lab);
    /* Mann-Whitney: sum of the ranks of the out scores (ties share the mean rank) */
    double rsum = 0;
    for (int i = 0; i < n;) {
        int j = i;
        while (j < n && a[j].v == a[i].v) j++;
        double rank = 0.5 * (i + 1 + j);
        for (int t = i; t < j; t++) if (a[t].out) rsum += rank;
        i = j;
    }
    free(a);
    return (rsum - (double)nout * (nout + 1) / 2) / ((double)nin * nout);
}

double dn_ood_fpr_at_tpr(const float *in, int nin, const float *out, int nout, double tpr) {
    if (nin < 1 || nout < 1) return NAN;
    float t = dn_ood_quantile(in, nin, tpr);
    int acc = 0;
    for (int i = 0; i < nout; i++) acc += out[i] <= t;
    return (double)acc / nout;
}

/* ------------------------------------------------------------ model file */

static dn_status add_copy(dn_tensors *ts, const char *name, int ndim, int64_t d0, int64_t d1, const float *src) {
    int64_t shape[2] = {d0, d1};
    size_t n = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1);
    float *p = falloc(n);
    if (!p) return dn_fail(DN_ERR_NOMEM, "ood: out of memory");
    memcpy(p, src, n * sizeof(float));
    return dn_tensors_add(ts, name, ndim, shape, p); /* takes p, even on failure */
}

dn_status dn_ood_to_tensors(const dn_ood *o, dn_tensors *ts, dn_meta *meta) {
    if (!o) return DN_OK;
    dn_status st;
    int d = o->dim;
    { /* the bank as F16: its fp16 values widened exactly, written back exactly */
        size_t nb = (size_t)o->nbank * d;
        float *b = falloc(nb);
        if (!b) return dn_fail(DN_ERR_NOMEM, "ood: out of memory");
        for (size_t i = 0; i < nb; i++) b[i] = dn_f16_to_f32(o->bank[i]);
        int64_t shape[2] = {o->nbank, d};
        if ((st = dn_tensors_add(ts, "ood.bank", 2, shape, b))) return st;
        ts->t[ts->n - 1].f16 = 1;
    }
    if ((st = add_copy(ts, "ood.class_means", 2, o->ncls, d, o->mu)) ||
        (st = add_copy(ts, "ood.mean", 1, d, 0, o->mu0)) || (st = add_copy(ts, "ood.precision", 2, d, d, o->prec)) ||
        (st = add_copy(ts, "ood.bg_precision", 2, d, d, o->prec0)))
        return st;
    if (o->bank_y) { /* the class of each bank row (as floats, like every tensor here) */
        float *y = falloc((size_t)o->nbank);
        if (!y) return dn_fail(DN_ERR_NOMEM, "ood: out of memory");
        for (int i = 0; i < o->nbank; i++) y[i] = (float)o->bank_y[i];
        int64_t shape[1] = {o->nbank};
        if ((st = dn_tensors_add(ts, "ood.bank_labels", 1, shape, y))) return st;
    }
    dn_sb b = {0};
    dn_sb_printf(&b, "{\"version\":1,\"score\":\"%s\",\"k\":%d,\"threshold\":%.9g,\"tpr\":%.9g,\"fit_rows\":%d,\"val_rows\":%d,"
                     "\"shrink\":%.9g,\"cam_ref\":[%.9g,%.9g,%.9g,%.9g],\"val_mean\":[",
                 kind_names[o->kind], o->k, (double)o->threshold, (double)o->tpr, o->fit_rows, o->val_rows, (double)o->shrink,
                 (double)o->cam_ref[0], (double)o->cam_ref[1], (double)o->cam_ref[2], (double)o->cam_ref[3]);
    for (int k = 0; k < DN_OOD_NKINDS; k++) dn_sb_printf(&b, "%s%.9g", k ? "," : "", (double)o->zmean[k]);
    dn_sb_puts(&b, "],\"val_std\":[");
    for (int k = 0; k < DN_OOD_NKINDS; k++) dn_sb_printf(&b, "%s%.9g", k ? "," : "", (double)o->zstd[k]);
    dn_sb_puts(&b, "]}");
    st = b.oom ? dn_fail(DN_ERR_NOMEM, "ood: out of memory") : dn_meta_set(meta, "ood", b.s);
    dn_sb_free(&b);
    return st;
}

static const dn_tensor *want(const dn_tensors *ts, const char *name, int64_t d0, int64_t d1, const char *label, dn_status *st) {
    if (*st) return NULL;
    const dn_tensor *t = dn_tensors_find(ts, name);
    if (!t) { *st = dn_fail(DN_ERR_SHAPE, "%s: OOD data lacks tensor '%s'", label, name); return NULL; }
    int ok = d1 ? (t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1) : (t->ndim == 1 && t->shape[0] == d0);
    if (!ok) { *st = dn_fail(DN_ERR_SHAPE, "%s: tensor '%s' has the wrong shape for %lld x %lld", label, name, (long long)d0, (long long)d1); return NULL; }
    int64_t n = dn_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(t->data[i])) { *st = dn_fail(DN_ERR_NUMERIC, "%s: tensor '%s' holds NaN/Inf", label, name); return NULL; }
    return t;
}

static int json_floats(const dn_json *arr, float *out, int n) {
    if (dn_json_len(arr) != (size_t)n) return 0;
    for (int i = 0; i < n; i++) {
        double v = dn_json_num(dn_json_at(arr, (size_t)i), NAN);
        if (!isfinite(v) || fabs(v) > FLT_MAX) return 0;
        out[i] = (float)v;
    }
    return 1;
}

dn_status dn_ood_take(dn_tensors *ts, const dn_meta *meta, int feat_dim, int ncls, const char *label, dn_ood **out) {
    *out = NULL;
    dn_tensors mine = {0};
    dn_status st = DN_OK;
    dn_json *j = NULL;
    dn_ood *o = NULL;
    /* move ood.* tensors out of ts (the model builder refuses unknown keys) */
    int w = 0;
    for (int i = 0; i < ts->n; i++) {
        if (!strncmp(ts->t[i].name, "ood.", 4)) {
            if (st) free(ts->t[i].data);
            else st = dn_tensors_add(&mine, ts->t[i].name, ts->t[i].ndim, ts->t[i].shape, ts->t[i].data); /* takes data, even on failure */
            free(ts->t[i].name);
        } else {
            ts->t[w++] = ts->t[i];
        }
    }
    ts->n = w;
    if (st) goto done;
    const char *txt = meta ? dn_meta_get(meta, "ood") : NULL;
    if (!txt) {
        if (mine.n) st = dn_fail(DN_ERR_FORMAT, "%s: tensor '%s' without the 'ood' metadata record", label, mine.t[0].name);
        goto done;
    }
    char err[160];
    if (!(j = dn_json_parse(txt, strlen(txt), err, sizeof err))) { st = dn_fail(DN_ERR_FORMAT, "%s: metadata 'ood' is not valid JSON: %s", label, err); goto done; }
    if (ncls < 1) goto done; /* backbone without its head: OOD data belongs to the head */
    int kind = dn_ood_kind_parse(dn_json_str(dn_json_get(j, "score"), ""));
    double k = dn_json_num(dn_json_get(j, "k"), -1), thr = dn_json_num(dn_json_get(j, "threshold"), NAN);
    double tpr = dn_json_num(dn_json_get(j, "tpr"), NAN);
    float cam[4] = {0, 0, 0, 0};
    const dn_json *jc = dn_json_get(j, "cam_ref");
    if (jc && dn_json_type_of(jc) != DN_JSON_ARR) jc = NULL; /* early files had one number (unused): no reference */
    if (dn_json_num(dn_json_get(j, "version"), 0) != 1) { st = dn_fail(DN_ERR_UNSUPPORTED, "%s: metadata 'ood' version is not 1", label); goto done; }
    if (kind < 0 || !(k >= 1 && k <= 64 && k == (int)k) || !isfinite(thr) || fabs(thr) > FLT_MAX || !(tpr > 0 && tpr < 1) ||
        (jc && (!json_floats(jc, cam, 4) || cam[0] < 0 || cam[1] < 0 || cam[2] < 0 || cam[3] < 0))) {
        st = dn_fail(DN_ERR_FORMAT, "%s: metadata 'ood' needs score knn|energy|rmd|combo, k 1..64, finite threshold, tpr in (0,1), cam_ref[4] >= 0", label);
        goto done;
    }
    const dn_tensor *tb = dn_tensors_find(&mine, "ood.bank");
    if (!tb || tb->ndim != 2 || tb->shape[0] < 1 || tb->shape[0] > 10000000 || tb->shape[1] != feat_dim) {
        st = dn_fail(DN_ERR_SHAPE, "%s: tensor 'ood.bank' missing or not [rows, %d]", label, feat_dim);
        goto done;
    }
    int nbank = (int)tb->shape[0];
    const dn_tensor *tm = want(&mine, "ood.class_means", ncls, feat_dim, label, &st), *t0 = want(&mine, "ood.mean", feat_dim, 0, label, &st),
                    *tp = want(&mine, "ood.precision", feat_dim, feat_dim, label, &st),
                    *tq = want(&mine, "ood.bg_precision", feat_dim, feat_dim, label, &st);
    want(&mine, "ood.bank", nbank, feat_dim, label, &st);
    if (st) goto done;
    if (!(o = ood_alloc(feat_dim, ncls, nbank))) { st = dn_fail(DN_ERR_NOMEM, "%s: out of memory", label); goto done; }
    size_t d = (size_t)feat_dim;
    for (size_t i = 0; i < (size_t)nbank * d; i++) { /* exact for an F16 bank; an F32 one (older files) is rounded */
        if (!(fabsf(tb->data[i]) <= 65504.0f)) { st = dn_fail(DN_ERR_FORMAT, "%s: tensor 'ood.bank' holds a value outside the fp16 range", label); goto done; }
        o->bank[i] = dn_f32_to_f16(tb->data[i]);
    }
    const dn_tensor *ty = dn_tensors_find(&mine, "ood.bank_labels");
    if (ty) { /* optional: older files lack it */
        if (ty->ndim != 1 || ty->shape[0] != nbank) { st = dn_fail(DN_ERR_SHAPE, "%s: tensor 'ood.bank_labels' is not [%d]", label, nbank); goto done; }
        if (!(o->bank_y = dn_malloc((size_t)nbank * sizeof(int)))) { st = dn_fail(DN_ERR_NOMEM, "%s: out of memory", label); goto done; }
        for (int i = 0; i < nbank; i++) {
            float v = ty->data[i];
            if (!(v >= 0 && v < ncls && v == (float)(int)v)) { st = dn_fail(DN_ERR_FORMAT, "%s: tensor 'ood.bank_labels' holds a value that is not a class index", label); goto done; }
            o->bank_y[i] = (int)v;
        }
    }
    memcpy(o->mu, tm->data, (size_t)ncls * d * sizeof(float));
    memcpy(o->mu0, t0->data, d * sizeof(float));
    memcpy(o->prec, tp->data, d * d * sizeof(float));
    memcpy(o->prec0, tq->data, d * d * sizeof(float));
    o->kind = kind; o->k = (int)k; o->threshold = (float)thr; o->tpr = (float)tpr;
    memcpy(o->cam_ref, cam, sizeof cam);
    o->fit_rows = (int)dn_json_num(dn_json_get(j, "fit_rows"), 0);
    o->val_rows = (int)dn_json_num(dn_json_get(j, "val_rows"), 0);
    o->shrink = (float)dn_json_num(dn_json_get(j, "shrink"), 0);
    if (!json_floats(dn_json_get(j, "val_mean"), o->zmean, DN_OOD_NKINDS) || !json_floats(dn_json_get(j, "val_std"), o->zstd, DN_OOD_NKINDS)) {
        st = dn_fail(DN_ERR_FORMAT, "%s: metadata 'ood' needs val_mean[4] and val_std[4] numbers", label);
        goto done;
    }
    for (int i = 0; i < DN_OOD_NKINDS; i++)
        if (!(o->zstd[i] > 0) && i != DN_OOD_COMBO) { st = dn_fail(DN_ERR_FORMAT, "%s: metadata 'ood' val_std must be > 0", label); goto done; }
    if ((st = derive(o))) goto done;
    *out = o;
    o = NULL;
done:
    dn_json_free(j);
    dn_ood_free(o);
    dn_tensors_free(&mine);
    return st;
}

void dn_ood_describe(const dn_ood *o, char *buf, size_t n) {
    if (!o) { snprintf(buf, n, "none (no unknown-input detection: run `defectnet calibrate`)"); return; }
    snprintf(buf, n, "score %s (knn k=%d over %d rows, energy, relative Mahalanobis), threshold %.6g (%.0f%% of %d val images accepted), fit on %d images%s",
             kind_names[o->kind], o->k, o->nbank, (double)o->threshold, 100.0 * o->tpr, o->val_rows, o->fit_rows,
             o->cam_ref[3] > 0 ? ", Grad-CAM reference scale stored" : "");
}
