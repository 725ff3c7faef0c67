/* The drift reference a model carries (see drift.h, docs/drift.md): binned
 * confidence and ood_score, predicted-class shares and a feature summary (mean +
 * principal components) of its in-distribution validation images. */
#include "trust/drift.h"
#include "core/sha256.h"
#include "kernels/kernels.h"
#include "nn/engine.h"
#include "ood/ood.h"
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const sig_names[DN_DRIFT_NSIG] = {"confidence", "ood_score", "class_mix", "feature"};

const char *dn_drift_signal_name(int sig) { return sig >= 0 && sig < DN_DRIFT_NSIG ? sig_names[sig] : "?"; }

int dn_drift_signal_parse(const char *s) {
    for (int i = 0; s && i < DN_DRIFT_NSIG; i++)
        if (!strcmp(s, sig_names[i])) return i;
    return -1;
}

const char *dn_drift_signal_list(void) { return "confidence, ood_score, class_mix, feature"; }

/* ------------------------------------------------------------ bins and PSI */

int dn_drift_bin(const dn_drift_hist *h, float v) {
    int lo = 0, hi = h->nb - 1; /* first bin whose upper edge is >= v */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (v <= h->edges[mid]) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

dn_status dn_drift_hist_fit(const float *v, int n, int nb, dn_drift_hist *h) {
    memset(h, 0, sizeof *h);
    if (n < 1 || nb < 1 || nb > DN_DRIFT_BINS) return dn_fail(DN_ERR_ARG, "drift bins: %d values into %d bins", n, nb);
    float *s = dn_malloc((size_t)n * sizeof(float));
    if (!s) return dn_fail(DN_ERR_NOMEM, "drift bins: out of memory");
    memcpy(s, v, (size_t)n * sizeof(float));
    for (int i = 0; i < n; i++)
        if (!isfinite(s[i])) { free(s); return dn_fail(DN_ERR_NUMERIC, "drift bins: value %d is not finite", i); }
    qsort(s, (size_t)n, sizeof(float), cmp_float);
    int ne = 0;
    for (int k = 1; k < nb; k++) {
        long pos = ((long)k * n + nb - 1) / nb - 1; /* ceil(k n / nb) - 1 */
        float e = s[pos];
        if (e >= s[n - 1]) break;                   /* no empty top bin */
        if (ne && e <= h->edges[ne - 1]) continue;  /* ties: merge */
        h->edges[ne++] = e;
    }
    h->nb = ne + 1;
    for (int i = 0; i < n; i++) h->p[dn_drift_bin(h, s[i])] += 1.0f;
    for (int b = 0; b < h->nb; b++) h->p[b] /= (float)n;
    free(s);
    return DN_OK;
}

double dn_drift_psi(const float *ref_p, const double *counts, int nb, double total) {
    if (!(total > 0) || nb < 1) return NAN;
    double psi = 0;
    for (int b = 0; b < nb; b++) {
        double o = counts[b] / total, r = ref_p[b];
        if (o < DN_DRIFT_EPS) o = DN_DRIFT_EPS;
        if (r < DN_DRIFT_EPS) r = DN_DRIFT_EPS;
        psi += (o - r) * log(o / r);
    }
    return psi;
}

/* ------------------------------------------------------------ PCA */

/* Eigen-decomposition of a symmetric k x k matrix a (destroyed) by cyclic Jacobi:
 * eigenvalues in w, eigenvectors in the columns of v. */
static void jacobi(double *a, int k, double *w, double *v) {
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) v[i * k + j] = i == j;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0, tot = 0;
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) {
                tot += a[i * k + j] * a[i * k + j];
                if (i != j) off += a[i * k + j] * a[i * k + j];
            }
        if (off <= 1e-30 * tot || off == 0) break;
        for (int p = 0; p < k; p++)
            for (int q = p + 1; q < k; q++) {
                double apq = a[p * k + q];
                if (apq == 0) continue;
                double theta = (a[q * k + q] - a[p * k + p]) / (2 * apq);
                double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int r = 0; r < k; r++) { /* a = J' a J */
                    double arp = a[r * k + p], arq = a[r * k + q];
                    a[r * k + p] = c * arp - s * arq;
                    a[r * k + q] = s * arp + c * arq;
                }
                for (int r = 0; r < k; r++) {
                    double apr = a[p * k + r], aqr = a[q * k + r];
                    a[p * k + r] = c * apr - s * aqr;
                    a[q * k + r] = s * apr + c * aqr;
                }
                for (int r = 0; r < k; r++) {
                    double vrp = v[r * k + p], vrq = v[r * k + q];
                    v[r * k + p] = c * vrp - s * vrq;
                    v[r * k + q] = s * vrp + c * vrq;
                }
            }
    }
    for (int i = 0; i < k; i++) w[i] = a[i * k + i];
}

/* Modified Gram-Schmidt on the k columns of q (d x k, column j at q[j*d]); a
 * column that vanishes is replaced by a fresh random direction. */
static void orthonormalize(double *q, int d, int k, dn_rng *r) {
    for (int j = 0; j < k; j++) {
        double *c = q + (size_t)j * d;
        for (int tries = 0; tries < 4; tries++) {
            for (int i = 0; i < j; i++) {
                const double *b = q + (size_t)i * d;
                double dot = 0;
                for (int t = 0; t < d; t++) dot += b[t] * c[t];
                for (int t = 0; t < d; t++) c[t] -= dot * b[t];
            }
            double nn = 0;
            for (int t = 0; t < d; t++) nn += c[t] * c[t];
            if (nn > 1e-24) {
                double inv = 1 / sqrt(nn);
                for (int t = 0; t < d; t++) c[t] *= inv;
                break;
            }
            for (int t = 0; t < d; t++) c[t] = dn_rng_normal(r);
        }
    }
}

dn_status dn_drift_pca(const float *x, int n, int d, int npc, float *mean, float *basis, float *var) {
    if (n < 2 || d < 1 || npc < 1 || npc > d) return dn_fail(DN_ERR_ARG, "drift pca: %d rows of %d, %d components", n, d, npc);
    float *xc = dn_malloc((size_t)n * d * sizeof(float)), *cov = dn_malloc((size_t)d * d * sizeof(float));
    double *q = dn_malloc((size_t)d * npc * sizeof(double)), *z = dn_malloc((size_t)d * npc * sizeof(double));
    double t[DN_DRIFT_PCS * DN_DRIFT_PCS], w[DN_DRIFT_PCS], v[DN_DRIFT_PCS * DN_DRIFT_PCS];
    dn_status st = DN_OK;
    if (npc > DN_DRIFT_PCS) { st = dn_fail(DN_ERR_ARG, "drift pca: at most %d components", DN_DRIFT_PCS); goto done; }
    if (!xc || !cov || !q || !z) { st = dn_fail(DN_ERR_NOMEM, "drift pca: out of memory"); goto done; }
    for (int j = 0; j < d; j++) {
        double s = 0;
        for (int i = 0; i < n; i++) s += x[(size_t)i * d + j];
        mean[j] = (float)(s / n);
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) xc[(size_t)i * d + j] = x[(size_t)i * d + j] - mean[j];
    dn_sgemm(1, 0, d, d, n, 1.0f / (float)(n - 1), xc, d, xc, d, 0.0f, cov, d, NULL);
    dn_rng r;
    dn_rng_seed(&r, 12345);
    for (size_t i = 0; i < (size_t)d * npc; i++) q[i] = dn_rng_normal(&r);
    orthonormalize(q, d, npc, &r);
    for (int it = 0; it < 300; it++) { /* subspace iteration: q = orth(C q) */
        for (int j = 0; j < npc; j++)
            for (int a = 0; a < d; a++) {
                const float *row = cov + (size_t)a * d;
                const double *c = q + (size_t)j * d;
                double s = 0;
                for (int b = 0; b < d; b++) s += row[b] * c[b];
                z[(size_t)j * d + a] = s;
            }
        double change = 0;
        orthonormalize(z, d, npc, &r);
        for (int j = 0; j < npc; j++) { /* 1 - |cos| between old and new columns */
            double dot = 0;
            for (int a = 0; a < d; a++) dot += z[(size_t)j * d + a] * q[(size_t)j * d + a];
            change += 1 - fabs(dot);
        }
        memcpy(q, z, (size_t)d * npc * sizeof(double));
        if (it > 10 && change < 1e-13) break;
    }
    for (int j = 0; j < npc; j++) /* Rayleigh-Ritz: t = q' C q */
        for (int a = 0; a < d; a++) {
            const float *row = cov + (size_t)a * d;
            double s = 0;
            for (int b = 0; b < d; b++) s += row[b] * q[(size_t)j * d + b];
            z[(size_t)j * d + a] = s;
        }
    for (int i = 0; i < npc; i++)
        for (int j = 0; j < npc; j++) {
            double s = 0;
            for (int a = 0; a < d; a++) s += q[(size_t)i * d + a] * z[(size_t)j * d + a];
            t[i * npc + j] = s;
        }
    for (int i = 0; i < npc; i++) /* symmetrise rounding */
        for (int j = i + 1; j < npc; j++) t[i * npc + j] = t[j * npc + i] = 0.5 * (t[i * npc + j] + t[j * npc + i]);
    jacobi(t, npc, w, v);
    int used[DN_DRIFT_PCS] = {0};
    for (int o = 0; o < npc; o++) {
        int best = -1;
        for (int i = 0; i < npc; i++)
            if (!used[i] && (best < 0 || w[i] > w[best])) best = i;
        used[best] = 1;
        float *bv = basis + (size_t)o * d;
        double big = 0;
        for (int a = 0; a < d; a++) {
            double s = 0;
            for (int i = 0; i < npc; i++) s += q[(size_t)i * d + a] * v[i * npc + best];
            bv[a] = (float)s;
            if (fabs(s) > fabs(big)) big = s;
        }
        if (big < 0)
            for (int a = 0; a < d; a++) bv[a] = -bv[a];
        var[o] = (float)(w[best] > 0 ? w[best] : 0);
    }
done:
    free(xc); free(cov); free(q); free(z);
    return st;
}

/* ------------------------------------------------------------ build */

void dn_drift_fingerprint(const dn_model *m, char out[17]) {
    dn_sha256_ctx c;
    uint8_t dg[32];
    char hex[65];
    float extra[3] = {m->temperature, m->ood ? m->ood->threshold : -1.0f, m->ood ? (float)m->ood->kind : -1.0f};
    dn_sha256_init(&c);
    if (m->fc_w) dn_sha256_update(&c, m->fc_w, (size_t)m->num_classes * m->feat_dim * sizeof(float));
    if (m->fc_b) dn_sha256_update(&c, m->fc_b, (size_t)m->num_classes * sizeof(float));
    dn_sha256_update(&c, extra, sizeof extra);
    dn_sha256_final(&c, dg);
    dn_sha256_hex(dg, hex);
    memcpy(out, hex, 16);
    out[16] = 0;
}

void dn_drift_ref_free(dn_drift_ref *r) {
    if (!r) return;
    free(r->cls_p); free(r->mean); free(r->pc); free(r->pc_var);
    free(r);
}

static dn_drift_ref *ref_alloc(int ncls, int dim, int npc) {
    dn_drift_ref *r = dn_calloc(1, sizeof *r);
    if (!r) return NULL;
    r->ncls = ncls;
    r->dim = dim;
    r->npc = npc;
    r->cls_p = dn_calloc((size_t)ncls, sizeof(float));
    r->mean = dn_calloc((size_t)dim, sizeof(float));
    r->pc = dn_calloc((size_t)(npc ? npc : 1) * dim, sizeof(float));
    r->pc_var = dn_calloc((size_t)(npc ? npc : 1), sizeof(float));
    if (!r->cls_p || !r->mean || !r->pc || !r->pc_var) { dn_drift_ref_free(r); return NULL; }
    return r;
}

dn_status dn_drift_ref_build(const dn_model *m, const float *feat, int n, dn_drift_ref **out) {
    *out = NULL;
    if (m->num_classes < 1) return dn_fail(DN_ERR_ARG, "drift reference: the model has no classification head");
    if (n < DN_DRIFT_MIN_REF)
        return dn_fail(DN_ERR_ARG, "drift reference: %d validation images, at least %d needed", n, DN_DRIFT_MIN_REF);
    int C = m->num_classes, d = m->feat_dim, npc = n - 1 < DN_DRIFT_PCS ? n - 1 : DN_DRIFT_PCS;
    if (npc > d) npc = d;
    float *logits = dn_malloc((size_t)n * C * sizeof(float)), *probs = dn_malloc((size_t)n * C * sizeof(float));
    float *conf = dn_malloc((size_t)n * sizeof(float)), *val = dn_malloc((size_t)n * sizeof(float));
    float *sc = m->ood ? dn_malloc((size_t)n * DN_OOD_NKINDS * sizeof(float)) : NULL;
    dn_drift_ref *r = ref_alloc(C, d, npc);
    dn_status st = DN_OK;
    if (!logits || !probs || !conf || !val || (m->ood && !sc) || !r) { st = dn_fail(DN_ERR_NOMEM, "drift reference: out of memory"); goto fail; }
    r->rows = n;
    dn_drift_fingerprint(m, r->fingerprint);
    dn_ood_logits(m, feat, n, logits);
    dn_softmax_t(logits, n, C, m->temperature, probs);
    double acc = 0;
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * C;
        int best = 0;
        for (int c = 1; c < C; c++)
            if (p[c] > p[best]) best = c;
        conf[i] = p[best];
        acc += p[best];
        r->cls_p[best] += 1.0f / (float)n;
    }
    r->ref_accuracy = acc / n;
    if ((st = dn_drift_hist_fit(conf, n, DN_DRIFT_BINS, &r->conf))) goto fail;
    if (m->ood) {
        if ((st = dn_ood_scores(m->ood, feat, logits, n, sc))) goto fail;
        for (int i = 0; i < n; i++) val[i] = sc[(size_t)i * DN_OOD_NKINDS + m->ood->kind];
        if ((st = dn_drift_hist_fit(val, n, DN_DRIFT_BINS, &r->ood))) goto fail;
    }
    if ((st = dn_drift_pca(feat, n, d, npc, r->mean, r->pc, r->pc_var))) goto fail;
    for (int k = 0; k < npc; k++) {
        const float *b = r->pc + (size_t)k * d;
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int j = 0; j < d; j++) s += (double)(feat[(size_t)i * d + j] - r->mean[j]) * b[j];
            val[i] = (float)s;
        }
        if ((st = dn_drift_hist_fit(val, n, DN_DRIFT_BINS, &r->pcs[k]))) goto fail;
    }
    *out = r;
    r = NULL;
fail:
    free(logits); free(probs); free(conf); free(val); free(sc);
    dn_drift_ref_free(r);
    return st;
}

/* ------------------------------------------------------------ JSON */

static void put_floats(dn_sb *b, const float *v, int n) {
    dn_sb_puts(b, "[");
    for (int i = 0; i < n; i++) dn_sb_printf(b, "%s%.9g", i ? "," : "", (double)v[i]);
    dn_sb_puts(b, "]");
}

static void put_hist(dn_sb *b, const dn_drift_hist *h) {
    dn_sb_puts(b, "{\"edges\":");
    put_floats(b, h->edges, h->nb - 1);
    dn_sb_puts(b, ",\"p\":");
    put_floats(b, h->p, h->nb);
    dn_sb_puts(b, "}");
}

void dn_drift_ref_json(const dn_drift_ref *r, dn_sb *b) {
    dn_sb_printf(b, "{\"version\":1,\"rows\":%d,\"fingerprint\":\"%s\",\"ref_accuracy\":%.9g,\"confidence\":", r->rows,
                 r->fingerprint, r->ref_accuracy);
    put_hist(b, &r->conf);
    dn_sb_puts(b, ",\"ood_score\":");
    if (r->ood.nb) put_hist(b, &r->ood);
    else dn_sb_puts(b, "null");
    dn_sb_puts(b, ",\"class_mix\":");
    put_floats(b, r->cls_p, r->ncls);
    dn_sb_puts(b, ",\"feature\":{\"mean\":");
    put_floats(b, r->mean, r->dim);
    dn_sb_puts(b, ",\"var\":");
    put_floats(b, r->pc_var, r->npc);
    dn_sb_puts(b, ",\"pc\":[");
    for (int k = 0; k < r->npc; k++) {
        if (k) dn_sb_puts(b, ",");
        put_floats(b, r->pc + (size_t)k * r->dim, r->dim);
    }
    dn_sb_puts(b, "],\"bins\":[");
    for (int k = 0; k < r->npc; k++) {
        if (k) dn_sb_puts(b, ",");
        put_hist(b, &r->pcs[k]);
    }
    dn_sb_puts(b, "]}}");
}

/* n finite numbers of a JSON array into v; -1 if not that. */
static int get_floats(const dn_json *a, float *v, int n) {
    if (dn_json_type_of(a) != DN_JSON_ARR || (int)dn_json_len(a) != n) return -1;
    for (int i = 0; i < n; i++) {
        double x = dn_json_num(dn_json_at(a, (size_t)i), NAN);
        if (!isfinite(x) || fabs(x) > FLT_MAX) return -1;
        v[i] = (float)x;
    }
    return 0;
}

static dn_status get_hist(const dn_json *j, const char *what, const char *label, dn_drift_hist *h) {
    memset(h, 0, sizeof *h);
    const dn_json *e = dn_json_get(j, "edges"), *p = dn_json_get(j, "p");
    int nb = (int)dn_json_len(p);
    if (dn_json_type_of(j) != DN_JSON_OBJ || nb < 1 || nb > DN_DRIFT_BINS || get_floats(p, h->p, nb) ||
        get_floats(e, h->edges, nb - 1))
        return dn_fail(DN_ERR_FORMAT, "%s: metadata 'drift': %s needs \"edges\" (n-1 numbers) and \"p\" (n <= %d shares)",
                       label, what, DN_DRIFT_BINS);
    double s = 0;
    for (int i = 0; i < nb; i++) {
        if (h->p[i] < 0) return dn_fail(DN_ERR_FORMAT, "%s: metadata 'drift': %s has a negative share", label, what);
        s += h->p[i];
        if (i && i < nb - 1 && !(h->edges[i] > h->edges[i - 1]))
            return dn_fail(DN_ERR_FORMAT, "%s: metadata 'drift': %s edges are not increasing", label, what);
    }
    if (fabs(s - 1) > 1e-3) return dn_fail(DN_ERR_FORMAT, "%s: metadata 'drift': %s shares sum to %g, not 1", label, what, s);
    h->nb = nb;
    return DN_OK;
}

dn_status dn_drift_ref_parse(const char *json, const dn_model *m, const char *label, dn_drift_ref **out) {
    *out = NULL;
    char err[160];
    dn_json *j = dn_json_parse(json, strlen(json), err, sizeof err);
    if (!j) return dn_fail(DN_ERR_FORMAT, "%s: metadata 'drift' is not valid JSON: %s", label, err);
    dn_drift_ref *r = NULL;
    dn_status st = DN_OK;
    const dn_json *f = dn_json_get(j, "feature"), *pc = dn_json_get(f, "pc"), *bins = dn_json_get(f, "bins");
    double ver = dn_json_num(dn_json_get(j, "version"), -1), rows = dn_json_num(dn_json_get(j, "rows"), -1);
    double acc = dn_json_num(dn_json_get(j, "ref_accuracy"), NAN);
    const char *fp = dn_json_str(dn_json_get(j, "fingerprint"), "");
    int npc = (int)dn_json_len(pc);
    if (dn_json_type_of(j) != DN_JSON_OBJ || ver != 1) {
        st = dn_fail(DN_ERR_FORMAT, "%s: metadata 'drift' is not a version 1 drift record", label);
        goto done;
    }
    if (!(rows >= DN_DRIFT_MIN_REF && rows <= 1e9) || !(acc >= 0 && acc <= 1) || strlen(fp) != 16 ||
        dn_json_type_of(pc) != DN_JSON_ARR || npc > DN_DRIFT_PCS || (int)dn_json_len(bins) != npc) {
        st = dn_fail(DN_ERR_FORMAT, "%s: metadata 'drift' needs rows >= %d, ref_accuracy in [0, 1], a 16-digit fingerprint "
                     "and feature.pc/bins of at most %d components", label, DN_DRIFT_MIN_REF, DN_DRIFT_PCS);
        goto done;
    }
    if (!(r = ref_alloc(m->num_classes, m->feat_dim, npc))) { st = dn_fail(DN_ERR_NOMEM, "%s: out of memory", label); goto done; }
    r->rows = (int)rows;
    r->ref_accuracy = acc;
    memcpy(r->fingerprint, fp, 17);
    if ((st = get_hist(dn_json_get(j, "confidence"), "confidence", label, &r->conf))) goto done;
    const dn_json *oj = dn_json_get(j, "ood_score");
    if (dn_json_type_of(oj) != DN_JSON_NULL && (st = get_hist(oj, "ood_score", label, &r->ood))) goto done;
    if (get_floats(dn_json_get(j, "class_mix"), r->cls_p, r->ncls)) {
        st = dn_fail(DN_ERR_FORMAT, "%s: metadata 'drift': class_mix needs %d shares (one per class)", label, r->ncls);
        goto done;
    }
    double s = 0;
    for (int c = 0; c < r->ncls; c++) s += r->cls_p[c] >= 0 ? r->cls_p[c] : NAN;
    if (!(fabs(s - 1) <= 1e-3)) { st = dn_fail(DN_ERR_FORMAT, "%s: metadata 'drift': class_mix shares do not sum to 1", label); goto done; }
    if (get_floats(dn_json_get(f, "mean"), r->mean, r->dim) || get_floats(dn_json_get(f, "var"), r->pc_var, npc)) {
        st = dn_fail(DN_ERR_FORMAT, "%s: metadata 'drift': feature.mean needs %d numbers and feature.var %d", label, r->dim, npc);
        goto done;
    }
    for (int k = 0; k < npc; k++) {
        if (get_floats(dn_json_at(pc, (size_t)k), r->pc + (size_t)k * r->dim, r->dim)) {
            st = dn_fail(DN_ERR_FORMAT, "%s: metadata 'drift': feature.pc[%d] needs %d numbers", label, k, r->dim);
            goto done;
        }
        if ((st = get_hist(dn_json_at(bins, (size_t)k), "feature.bins", label, &r->pcs[k]))) goto done;
    }
    *out = r;
    r = NULL;
done:
    dn_drift_ref_free(r);
    dn_json_free(j);
    return st;
}

dn_status dn_drift_ref_from_model(const dn_model *m, dn_drift_ref **out) {
    *out = NULL;
    const char *v = dn_meta_get(&m->meta, "drift");
    if (!v) return DN_OK;
    const char *label = m->sha256[0] ? "model" : "model (in memory)";
    dn_drift_ref *r = NULL;
    dn_status st = dn_drift_ref_parse(v, m, label, &r);
    if (st) return st;
    char fp[17];
    dn_drift_fingerprint(m, fp);
    if (strcmp(fp, r->fingerprint)) {
        dn_drift_ref_free(r);
        return dn_fail(DN_ERR_ARG, "%s: drift reference is stale (head, temperature or unknown-input threshold changed "
                       "since it was computed); run defectnet calibrate", label);
    }
    *out = r;
    return DN_OK;
}

dn_status dn_drift_ref_store(dn_model *m, const float *feat, int n, int *stored) {
    *stored = 0;
    if (n < DN_DRIFT_MIN_REF || m->num_classes < 1) {
        dn_meta_remove(&m->meta, "drift"); /* an old one would describe another fit */
        return DN_OK;
    }
    dn_drift_ref *r = NULL;
    dn_status st = dn_drift_ref_build(m, feat, n, &r);
    if (st) return st;
    dn_sb b = {0};
    dn_drift_ref_json(r, &b);
    dn_drift_ref_free(r);
    st = b.oom ? dn_fail(DN_ERR_NOMEM, "drift reference: out of memory") : dn_meta_set(&m->meta, "drift", b.s);
    dn_sb_free(&b);
    if (!st) *stored = 1;
    return st;
}

void dn_drift_ref_describe(const dn_model *m, char *buf, size_t n) {
    dn_drift_ref *r = NULL;
    if (!dn_meta_get(&m->meta, "drift")) { snprintf(buf, n, "none (no drift reference: run `defectnet calibrate`)"); return; }
    if (dn_drift_ref_from_model(m, &r)) { snprintf(buf, n, "unusable: %s", dn_last_error()); return; }
    snprintf(buf, n, "%d val images: confidence %d bins, ood_score %s, %d classes, %d feature components; "
             "mean confidence %.4f", r->rows, r->conf.nb, r->ood.nb ? "binned" : "none (no detector)", r->ncls, r->npc,
             r->ref_accuracy);
    dn_drift_ref_free(r);
}
