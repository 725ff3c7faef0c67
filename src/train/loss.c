/* Softmax cross-entropy with class weights and label smoothing (PyTorch
 * semantics, see loss.h). */
#include "train/loss.h"
#include "core/core.h"
#include <math.h>

void dn_softmax_row(const float *logits, int c, float *out) {
    float mx = logits[0];
    for (int j = 1; j < c; j++) if (logits[j] > mx) mx = logits[j];
    double s = 0;
    for (int j = 0; j < c; j++) s += exp((double)logits[j] - mx);
    for (int j = 0; j < c; j++) out[j] = (float)(exp((double)logits[j] - mx) / s);
}

dn_status dn_ce_loss(const float *logits, const int *labels, int n, int c, const float *class_w,
                     float smoothing, float *loss, float *dlogits) {
    if (n < 1 || c < 1) return dn_fail(DN_ERR_ARG, "cross-entropy: batch %d / classes %d must be >= 1", n, c);
    if (!(smoothing >= 0.f && smoothing <= 1.f))
        return dn_fail(DN_ERR_ARG, "cross-entropy: label smoothing %g not in [0, 1]", (double)smoothing);
    double sw = 0, wsum_target = 0;
    for (int j = 0; j < c; j++) {
        double w = class_w ? class_w[j] : 1.0;
        if (!(w >= 0) || isinf(w)) return dn_fail(DN_ERR_ARG, "cross-entropy: class weight %d is %g", j, w);
        sw += w;
    }
    for (int i = 0; i < n; i++) {
        if (labels[i] < 0 || labels[i] >= c)
            return dn_fail(DN_ERR_ARG, "cross-entropy: label %d of sample %d not in [0, %d)", labels[i], i, c);
        wsum_target += class_w ? class_w[labels[i]] : 1.0;
        for (int j = 0; j < c; j++)
            if (!isfinite(logits[(size_t)i * c + j]))
                return dn_fail(DN_ERR_NUMERIC, "cross-entropy: logit %d of sample %d is not finite", j, i);
    }
    if (!(wsum_target > 0)) return dn_fail(DN_ERR_ARG, "cross-entropy: the weights of the batch's labels sum to 0");
    double e = smoothing, total = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * c;
        int y = labels[i];
        double mx = z[0];
        for (int j = 1; j < c; j++) if (z[j] > mx) mx = z[j];
        double s = 0;
        for (int j = 0; j < c; j++) s += exp(z[j] - mx);
        double lse = mx + log(s);
        double wy = class_w ? class_w[y] : 1.0;
        double nll = wy * (lse - z[y]), smooth = 0;
        for (int j = 0; j < c; j++) smooth += (class_w ? class_w[j] : 1.0) * (lse - z[j]);
        total += (1 - e) * nll + e / c * smooth;
        if (dlogits) {
            /* d/dz_j = [ (1-e) wy (p_j - [j==y]) + e/C (sw p_j - w_j) ] / W */
            for (int j = 0; j < c; j++) {
                double p = exp(z[j] - lse), wj = class_w ? class_w[j] : 1.0;
                double g = (1 - e) * wy * (p - (j == y)) + e / c * (sw * p - wj);
                dlogits[(size_t)i * c + j] = (float)(g / wsum_target);
            }
        }
    }
    *loss = (float)(total / wsum_target);
    return DN_OK;
}
