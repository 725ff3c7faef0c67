/* Escape / false-reject rates, Wilson intervals, the good-threshold curve and
 * its choice, bootstrap macro-F1 interval, ordinal errors (see quality.h). */
#include "eval/quality.h"
#include "core/core.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

dn_rate dn_wilson(int64_t k, int64_t n) {
    dn_rate r = {k, n, 0, 0, 1};
    if (n <= 0) return r;
    double z = DN_WILSON_Z, nn = (double)n, p = (double)k / nn, z2 = z * z;
    double den = 1 + z2 / nn, centre = (p + z2 / (2 * nn)) / den;
    double half = z / den * sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn));
    r.p = p;
    r.lo = k == 0 ? 0 : fmax(0, centre - half);
    r.hi = k == n ? 1 : fmin(1, centre + half);
    return r;
}

dn_status dn_quality_compute(int k, int good, const int *y, const uint8_t *accepted, int64_t n, dn_quality *out) {
    memset(out, 0, sizeof *out);
    if (k < 2 || good < 0 || good >= k || n < 0) return dn_fail(DN_ERR_ARG, "quality: needs k >= 2 and a good class");
    int64_t *sup = dn_calloc((size_t)k, sizeof *sup), *acc = dn_calloc((size_t)k, sizeof *acc);
    out->escape_by_class = dn_calloc((size_t)k, sizeof *out->escape_by_class);
    if (!sup || !acc || !out->escape_by_class) {
        free(sup); free(acc); dn_quality_free(out);
        return DN_ERR_NOMEM;
    }
    for (int64_t i = 0; i < n; i++) {
        if (y[i] < 0 || y[i] >= k) { free(sup); free(acc); dn_quality_free(out); return dn_fail(DN_ERR_ARG, "quality: label %d out of range", y[i]); }
        sup[y[i]]++;
        acc[y[i]] += accepted[i] != 0;
    }
    out->k = k;
    out->good = good;
    int64_t dn = 0, de = 0;
    for (int c = 0; c < k; c++) {
        if (c == good) { out->escape_by_class[c] = dn_wilson(0, 0); continue; }
        out->escape_by_class[c] = dn_wilson(acc[c], sup[c]);
        dn += sup[c];
        de += acc[c];
    }
    out->escape = dn_wilson(de, dn);
    out->false_reject = dn_wilson(sup[good] - acc[good], sup[good]);
    free(sup);
    free(acc);
    return DN_OK;
}

void dn_quality_free(dn_quality *q) {
    free(q->escape_by_class);
    q->escape_by_class = NULL;
}

void dn_policy_accepts(const dn_policy *pol, float threshold, const float *probs, int64_t n, int k, uint8_t *accepted) {
    for (int64_t i = 0; i < n; i++) {
        dn_prediction p = {0};
        accepted[i] = (uint8_t)dn_policy_decide(pol, threshold, probs + (size_t)i * k, k, &p);
    }
}

/* ------------------------------------------------------------ good threshold */

typedef struct { float pg; int y; } pg_row;

static int cmp_pg_desc(const void *a, const void *b) {
    const pg_row *x = a, *y = b;
    return x->pg < y->pg ? 1 : x->pg > y->pg ? -1 : 0;
}

dn_status dn_policy_curve(const float *probs, const int *y, int64_t n, int k, int good, const dn_cost *cost,
                          dn_policy_point **pts, int64_t *npts) {
    *pts = NULL;
    *npts = 0;
    if (k < 2 || good < 0 || good >= k || n < 0) return dn_fail(DN_ERR_ARG, "policy curve: needs k >= 2 and a good class");
    pg_row *r = dn_malloc(((size_t)n + 1) * sizeof *r);
    dn_policy_point *p = dn_malloc(((size_t)n + 1) * sizeof *p);
    if (!r || !p) { free(r); free(p); return DN_ERR_NOMEM; }
    int64_t n_good = 0;
    for (int64_t i = 0; i < n; i++) {
        r[i].pg = probs[(size_t)i * k + good];
        r[i].y = y[i];
        n_good += y[i] == good;
    }
    int64_t n_def = n - n_good, esc = 0, acc_good = 0, m = 0;
    double esc_cost = 0;
    qsort(r, (size_t)n, sizeof *r, cmp_pg_desc);
    for (int64_t i = 0; i < n; i++) {
        if (r[i].y == good) acc_good++;
        else {
            esc++;
            esc_cost += cost ? cost->escape[r[i].y] : 0;
        }
        if (i + 1 < n && r[i + 1].pg == r[i].pg) continue; /* ties are accepted together */
        dn_policy_point *q = &p[m++];
        q->threshold = r[i].pg;
        q->escapes = esc;
        q->false_rejects = n_good - acc_good;
        q->escape = n_def ? (double)esc / (double)n_def : 0;
        q->false_reject = n_good ? (double)q->false_rejects / (double)n_good : 0;
        q->cost = cost ? esc_cost + cost->false_reject * (double)q->false_rejects : 0;
    }
    free(r);
    *pts = p;
    *npts = m;
    return DN_OK;
}

dn_status dn_policy_choose(const float *probs, const int *y, int64_t n, int k, int good, const dn_cost *cost,
                           double target_escape, dn_policy_point *out) {
    int64_t n_good = 0;
    for (int64_t i = 0; i < n; i++) n_good += y[i] == good;
    if (n_good == 0) return dn_fail(DN_ERR_ARG, "no good parts among the %lld validation images", (long long)n);
    if (n_good == n) return dn_fail(DN_ERR_ARG, "no defective parts among the %lld validation images", (long long)n);
    if (!cost && !(target_escape >= 0 && target_escape < 1))
        return dn_fail(DN_ERR_ARG, "target escape rate %g is not in [0, 1)", target_escape);
    dn_policy_point *p;
    int64_t np;
    dn_status st = dn_policy_curve(probs, y, n, k, good, cost, &p, &np);
    if (st) return st;
    int64_t best = -1;
    for (int64_t i = 0; i < np; i++) {
        if (cost) {
            if (best < 0 || p[i].cost < p[best].cost) best = i;
        } else if (p[i].escape <= target_escape && p[i].false_rejects < n_good) {
            best = i; /* acceptance grows along the curve: keep the last that meets the target */
        }
    }
    if (best < 0) {
        /* the lowest escape rate at which validation still accepts a good part */
        double low = 1;
        for (int64_t i = 0; i < np; i++)
            if (p[i].false_rejects < n_good && p[i].escape < low) low = p[i].escape;
        st = dn_fail(DN_ERR_ARG, "target escape rate %g cannot be reached on validation without rejecting every good "
                                 "part (the lowest escape rate that still accepts one is %.4g, over %lld defective parts)",
                     target_escape, low, (long long)(n - n_good));
    } else {
        *out = p[best];
    }
    free(p);
    return st;
}

/* ------------------------------------------------------------ macro-F1 bootstrap */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

dn_status dn_bootstrap_macro_f1(int k, const int *y, const int *pred, int64_t n, double *lo, double *hi) {
    *lo = 0;
    *hi = 1;
    if (n <= 0 || k < 1) return DN_OK;
    if (n > UINT32_MAX) return dn_fail(DN_ERR_ARG, "bootstrap: too many images");
    int64_t *cnt = dn_malloc((size_t)3 * k * sizeof *cnt); /* tp, support, predicted */
    double *f = dn_malloc(DN_BOOT_REPS * sizeof *f);
    if (!cnt || !f) { free(cnt); free(f); return DN_ERR_NOMEM; }
    dn_rng rng;
    dn_rng_seed(&rng, 0x5eed0f1ULL);
    for (int r = 0; r < DN_BOOT_REPS; r++) {
        memset(cnt, 0, (size_t)3 * k * sizeof *cnt);
        for (int64_t i = 0; i < n; i++) {
            uint32_t j = dn_rng_below(&rng, (uint32_t)n);
            cnt[y[j]]++;
            cnt[k + pred[j]]++;
            cnt[2 * k + y[j]] += y[j] == pred[j];
        }
        double s = 0;
        int used = 0;
        for (int c = 0; c < k; c++) {
            int64_t den = cnt[c] + cnt[k + c];
            if (!den) continue;
            s += 2.0 * (double)cnt[2 * k + c] / (double)den;
            used++;
        }
        f[r] = used ? s / used : 0;
    }
    qsort(f, DN_BOOT_REPS, sizeof *f, cmp_double);
    *lo = f[(int)floor(0.025 * (DN_BOOT_REPS - 1))];
    *hi = f[(int)ceil(0.975 * (DN_BOOT_REPS - 1))];
    free(cnt);
    free(f);
    return DN_OK;
}

/* ------------------------------------------------------------ ordinal */

void dn_ordinal_compute(int k, const int64_t *cm, dn_ordinal *out) {
    memset(out, 0, sizeof *out);
    int64_t n = 0;
    double sum = 0;
    for (int t = 0; t < k; t++)
        for (int p = 0; p < k; p++) {
            int64_t c = cm[(size_t)t * k + p];
            int d = abs(t - p);
            n += c;
            sum += (double)d * (double)c;
            if (d == 0) out->exact += c;
            else if (d == 1) out->off_by_one += c;
            else out->off_by_more += c;
        }
    out->mae = n ? sum / (double)n : 0;
}
