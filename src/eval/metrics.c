/* Classification metrics (see metrics.h for the exact conventions). */
#include "eval/metrics.h"
#include "core/core.h"
#include "core/json.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

void dn_eval_metrics_free(dn_eval_metrics *m) {
    if (!m) return;
    free(m->cm);
    free(m->precision);
    free(m->recall);
    free(m->f1);
    free(m->support);
    free(m->predicted);
    memset(m, 0, sizeof *m);
}

static int argmax(const float *p, int k) {
    int best = 0;
    for (int j = 1; j < k; j++)
        if (p[j] > p[best]) best = j;
    return best;
}

dn_status dn_eval_metrics_compute(int k, int64_t n, const int *y_true, const float *probs,
                             const int *y_pred, int topk, dn_eval_metrics *out) {
    memset(out, 0, sizeof *out);
    if (k < 1) return dn_fail(DN_ERR_ARG, "metrics: number of classes %d must be >= 1", k);
    if (n < 0) return dn_fail(DN_ERR_ARG, "metrics: negative sample count");
    if (!probs && !y_pred) return dn_fail(DN_ERR_ARG, "metrics: need probabilities or predictions");
    if (n > 0 && !y_true) return dn_fail(DN_ERR_ARG, "metrics: no true labels");
    size_t kk;
    if (dn_mul_overflow((size_t)k, (size_t)k, &kk)) return dn_fail(DN_ERR_NOMEM, "metrics: too many classes");
    out->k = k;
    out->n = n;
    out->cm = dn_calloc(kk, sizeof *out->cm);
    out->precision = dn_calloc((size_t)k, sizeof(double));
    out->recall = dn_calloc((size_t)k, sizeof(double));
    out->f1 = dn_calloc((size_t)k, sizeof(double));
    out->support = dn_calloc((size_t)k, sizeof(int64_t));
    out->predicted = dn_calloc((size_t)k, sizeof(int64_t));
    dn_status st = DN_ERR_NOMEM;
    if (!out->cm || !out->precision || !out->recall || !out->f1 || !out->support || !out->predicted) goto fail;

    if (probs) {
        out->has_probs = 1;
        out->topk = topk < 1 ? 1 : topk > k ? k : topk;
    }
    double bin_conf_sum[DN_ECE_BINS] = {0}, bin_hit[DN_ECE_BINS] = {0};
    int64_t correct = 0, topk_hits = 0;
    for (int64_t i = 0; i < n; i++) {
        int t = y_true[i];
        if (t < 0 || t >= k) {
            st = dn_fail(DN_ERR_ARG, "metrics: true label %d of sample %lld out of range [0,%d)", t, (long long)i, k);
            goto fail;
        }
        const float *p = probs ? probs + (size_t)i * (size_t)k : NULL;
        if (p)
            for (int j = 0; j < k; j++)
                if (!isfinite(p[j])) {
                    st = dn_fail(DN_ERR_ARG, "metrics: non-finite probability for sample %lld", (long long)i);
                    goto fail;
                }
        int pr = y_pred ? y_pred[i] : argmax(p, k);
        if (pr < 0 || pr >= k) {
            st = dn_fail(DN_ERR_ARG, "metrics: predicted label %d of sample %lld out of range [0,%d)", pr, (long long)i, k);
            goto fail;
        }
        out->cm[(size_t)t * k + pr]++;
        out->support[t]++;
        out->predicted[pr]++;
        correct += pr == t;
        if (p) {
            int greater = 0;
            for (int j = 0; j < k; j++) greater += p[j] > p[t];
            topk_hits += greater < out->topk;
            /* confidence = probability of the predicted class */
            double conf = p[pr];
            int b = (int)ceil(conf * DN_ECE_BINS) - 1;
            if (b < 0) b = 0;
            if (b >= DN_ECE_BINS) b = DN_ECE_BINS - 1;
            out->bin_count[b]++;
            bin_conf_sum[b] += conf;
            bin_hit[b] += pr == t;
        }
    }
    if (n > 0) {
        out->accuracy = (double)correct / (double)n;
        if (probs) out->topk_accuracy = (double)topk_hits / (double)n;
    }
    if (probs && n > 0) {
        double ece = 0;
        for (int b = 0; b < DN_ECE_BINS; b++) {
            if (!out->bin_count[b]) continue;
            out->bin_conf[b] = bin_conf_sum[b] / (double)out->bin_count[b];
            out->bin_acc[b] = bin_hit[b] / (double)out->bin_count[b];
            ece += (double)out->bin_count[b] / (double)n * fabs(out->bin_acc[b] - out->bin_conf[b]);
        }
        out->ece = ece;
    }
    int present = 0;
    double mp = 0, mr = 0, mf = 0, wp = 0, wr = 0, wf = 0;
    for (int c = 0; c < k; c++) {
        int64_t tp = out->cm[(size_t)c * k + c];
        double p = out->predicted[c] ? (double)tp / (double)out->predicted[c] : 0.0;
        double r = out->support[c] ? (double)tp / (double)out->support[c] : 0.0;
        double f = p + r > 0 ? 2 * p * r / (p + r) : 0.0;
        out->precision[c] = p;
        out->recall[c] = r;
        out->f1[c] = f;
        if (out->support[c] || out->predicted[c]) {
            present++;
            mp += p; mr += r; mf += f;
        }
        wp += p * (double)out->support[c];
        wr += r * (double)out->support[c];
        wf += f * (double)out->support[c];
    }
    if (present) {
        out->macro_precision = mp / present;
        out->macro_recall = mr / present;
        out->macro_f1 = mf / present;
    }
    if (n > 0) {
        out->weighted_precision = wp / (double)n;
        out->weighted_recall = wr / (double)n;
        out->weighted_f1 = wf / (double)n;
    }
    return DN_OK;
fail:
    dn_eval_metrics_free(out);
    return st;
}


static void name_of(const char *const *names, int i, char *buf, size_t n) {
    if (names && names[i]) snprintf(buf, n, "%s", names[i]);
    else snprintf(buf, n, "%d", i);
}

void dn_eval_metrics_json(const dn_eval_metrics *m, const char *const *names, FILE *f) {
    char nb[256];
    fprintf(f, "{\"n\":%lld,\"accuracy\":%.6f,\"macro_precision\":%.6f,\"macro_recall\":%.6f,"
               "\"macro_f1\":%.6f,\"weighted_precision\":%.6f,\"weighted_recall\":%.6f,\"weighted_f1\":%.6f",
            (long long)m->n, m->accuracy, m->macro_precision, m->macro_recall, m->macro_f1,
            m->weighted_precision, m->weighted_recall, m->weighted_f1);
    if (m->has_probs)
        fprintf(f, ",\"top%d_accuracy\":%.6f,\"ece\":%.6f", m->topk, m->topk_accuracy, m->ece);
    fprintf(f, ",\"per_class\":[");
    for (int c = 0; c < m->k; c++) {
        name_of(names, c, nb, sizeof nb);
        fprintf(f, "%s{\"class\":", c ? "," : "");
        dn_json_fput_str(f, nb);
        fprintf(f, ",\"precision\":%.6f,\"recall\":%.6f,\"f1\":%.6f,\"support\":%lld}", m->precision[c],
                m->recall[c], m->f1[c], (long long)m->support[c]);
    }
    fprintf(f, "],\"confusion\":[");
    for (int r = 0; r < m->k; r++) {
        fprintf(f, "%s[", r ? "," : "");
        for (int c = 0; c < m->k; c++) fprintf(f, "%s%lld", c ? "," : "", (long long)m->cm[(size_t)r * m->k + c]);
        fputc(']', f);
    }
    fputs("]}", f);
}

void dn_eval_metrics_print(const dn_eval_metrics *m, const char *const *names, FILE *f) {
    char nb[256];
    fprintf(f, "%-20s %9s %9s %9s %8s\n", "class", "precision", "recall", "f1", "support");
    for (int c = 0; c < m->k; c++) {
        name_of(names, c, nb, sizeof nb);
        fprintf(f, "%-20.20s %9.4f %9.4f %9.4f %8lld\n", nb, m->precision[c], m->recall[c], m->f1[c],
                (long long)m->support[c]);
    }
    fprintf(f, "%-20s %9.4f %9.4f %9.4f %8lld\n", "macro avg", m->macro_precision, m->macro_recall,
            m->macro_f1, (long long)m->n);
    fprintf(f, "%-20s %9.4f %9.4f %9.4f %8lld\n", "weighted avg", m->weighted_precision, m->weighted_recall,
            m->weighted_f1, (long long)m->n);
    fprintf(f, "accuracy %.4f", m->accuracy);
    if (m->has_probs) fprintf(f, "   top-%d %.4f   ECE %.4f", m->topk, m->topk_accuracy, m->ece);
    fprintf(f, "\nconfusion (rows = true, columns = predicted):\n");
    for (int r = 0; r < m->k; r++) {
        name_of(names, r, nb, sizeof nb);
        fprintf(f, "%-12.12s", nb);
        for (int c = 0; c < m->k; c++) fprintf(f, " %6lld", (long long)m->cm[(size_t)r * m->k + c]);
        fputc('\n', f);
    }
}
