/* Temperature scaling and confidence thresholds (see calibrate.h). */
#include "eval/calibrate.h"
#include "core/core.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Per-row log-sum-exp of b*z and, optionally, the mean and variance of z under
 * p = softmax(b*z). All in double. */
static double row_stats(const float *z, int k, double b, double *mean, double *var) {
    double mx = -INFINITY;
    for (int j = 0; j < k; j++) if (b * z[j] > mx) mx = b * z[j];
    double s = 0, sz = 0;
    for (int j = 0; j < k; j++) {
        double w = exp(b * z[j] - mx);
        s += w;
        sz += w * z[j];
    }
    if (mean) {
        double m = sz / s, sv = 0;
        for (int j = 0; j < k; j++) {
            double d = z[j] - m;
            sv += exp(b * z[j] - mx) * d * d;
        }
        *mean = m;
        *var = sv / s;
    }
    return mx + log(s);
}

double dn_calib_nll(const float *logits, const int *labels, int64_t n, int k, double T) {
    if (n <= 0 || k < 1 || !(T > 0)) return NAN;
    double b = 1.0 / T, acc = 0;
    for (int64_t i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * (size_t)k;
        acc += row_stats(z, k, b, NULL, NULL) - b * z[labels[i]];
    }
    return acc / (double)n;
}

/* Gradient and curvature of the mean NLL with respect to b = 1/T. */
static void nll_grad(const float *logits, const int *labels, int64_t n, int k, double b, double *g, double *h) {
    double sg = 0, sh = 0;
    for (int64_t i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * (size_t)k;
        double m, v;
        row_stats(z, k, b, &m, &v);
        sg += m - z[labels[i]];
        sh += v;
    }
    *g = sg / (double)n;
    *h = sh / (double)n;
}

dn_status dn_calib_fit_temperature(const float *logits, const int *labels, int64_t n, int k, dn_temp_fit *out) {
    memset(out, 0, sizeof *out);
    if (n < 1) return dn_fail(DN_ERR_ARG, "temperature fit: no samples");
    if (k < 2) return dn_fail(DN_ERR_ARG, "temperature fit: need at least 2 classes, got %d", k);
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] < 0 || labels[i] >= k)
            return dn_fail(DN_ERR_ARG, "temperature fit: label %d of sample %lld out of range [0,%d)", labels[i],
                           (long long)i, k);
        for (int j = 0; j < k; j++)
            if (!isfinite(logits[(size_t)i * k + j]))
                return dn_fail(DN_ERR_ARG, "temperature fit: non-finite logit in sample %lld", (long long)i);
    }
    /* Bracket in b = 1/T. g is non-decreasing in b (convexity). */
    double lo = 1.0 / DN_TEMP_MAX, hi = 1.0 / DN_TEMP_MIN, g, h, b;
    int iters = 0;
    nll_grad(logits, labels, n, k, lo, &g, &h);
    if (g >= 0) { b = lo; out->at_bound = 1; goto done; }
    nll_grad(logits, labels, n, k, hi, &g, &h);
    if (g <= 0) { b = hi; out->at_bound = 1; goto done; }
    b = 1.0;
    for (iters = 1; iters <= 200; iters++) {
        nll_grad(logits, labels, n, k, b, &g, &h);
        if (g == 0) break;
        if (g < 0) lo = b; else hi = b;
        if (fabs(g) < 1e-13 || hi - lo <= 1e-15 * hi) break;
        double nb = h > 0 ? b - g / h : NAN;
        /* Newton step when it stays strictly inside the bracket, else bisect. */
        b = (nb > lo && nb < hi) ? nb : 0.5 * (lo + hi);
    }
done:
    out->temperature = 1.0 / b;
    out->iterations = iters;
    out->nll_before = dn_calib_nll(logits, labels, n, k, 1.0);
    out->nll_after = dn_calib_nll(logits, labels, n, k, out->temperature);
    return DN_OK;
}

dn_cov_point dn_calib_at_threshold(const float *conf, const uint8_t *correct, int64_t n, float t) {
    dn_cov_point p = {t, 0, 1, 0};
    int64_t hit = 0;
    for (int64_t i = 0; i < n; i++)
        if (conf[i] >= t) { p.covered++; hit += correct[i] != 0; }
    if (n > 0) p.coverage = (double)p.covered / (double)n;
    if (p.covered) p.accuracy = (double)hit / (double)p.covered;
    return p;
}

typedef struct { float c; uint8_t ok; } conf_ok;
static int cmp_conf_desc(const void *a, const void *b) {
    float x = ((const conf_ok *)a)->c, y = ((const conf_ok *)b)->c;
    return (x < y) - (x > y);
}

dn_status dn_calib_coverage_curve(const float *conf, const uint8_t *correct, int64_t n, dn_cov_point **pts,
                                  int64_t *npts) {
    *pts = NULL;
    *npts = 0;
    if (n <= 0) return DN_OK;
    conf_ok *v = dn_malloc((size_t)n * sizeof *v);
    dn_cov_point *out = dn_malloc((size_t)n * sizeof *out);
    if (!v || !out) { free(v); free(out); return DN_ERR_NOMEM; }
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(conf[i])) {
            free(v); free(out);
            return dn_fail(DN_ERR_ARG, "coverage curve: non-finite confidence of sample %lld", (long long)i);
        }
        v[i].c = conf[i];
        v[i].ok = correct[i] != 0;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_conf_desc);
    int64_t m = 0, hit = 0, np = 0;
    for (int64_t i = 0; i < n;) {
        float c = v[i].c;
        /* a threshold covers every sample of equal confidence at once */
        for (; i < n && v[i].c == c; i++) { m++; hit += v[i].ok; }
        out[np].threshold = c;
        out[np].covered = m;
        out[np].coverage = (double)m / (double)n;
        out[np].accuracy = (double)hit / (double)m;
        np++;
    }
    free(v);
    *pts = out;
    *npts = np;
    return DN_OK;
}

dn_status dn_calib_choose_threshold(const float *conf, const uint8_t *correct, int64_t n, double target,
                                    dn_threshold_pick *out) {
    memset(out, 0, sizeof *out);
    if (n < 1) return dn_fail(DN_ERR_ARG, "threshold: no samples to choose a threshold on");
    if (!(target > 0 && target <= 1)) return dn_fail(DN_ERR_ARG, "threshold: target accuracy %g not in (0, 1]", target);
    dn_cov_point *pts;
    int64_t np;
    dn_status st = dn_calib_coverage_curve(conf, correct, n, &pts, &np);
    if (st) return st;
    int64_t best = -1, fallback = 0;
    for (int64_t i = 0; i < np; i++) {
        /* exact count comparison, immune to rounding of target * covered */
        int64_t hit = (int64_t)llround(pts[i].accuracy * (double)pts[i].covered);
        if ((double)hit >= target * (double)pts[i].covered - 1e-9) best = i;
        if (pts[i].accuracy >= pts[fallback].accuracy) fallback = i;
    }
    out->reached = best >= 0;
    out->at = pts[best >= 0 ? best : fallback];
    free(pts);
    return DN_OK;
}
