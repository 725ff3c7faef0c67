/* Fully connected layer (PyTorch nn.Linear layout W[out][in]). Small (the
 * head), so plain loops with double accumulators in a fixed order. */
#include "nn/layers.h"

void dn_linear_fwd(const float *x, int n, int in, int out, const float *wt, const float *b,
                   float *y) {
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            const float *xr = x + (size_t)i * in, *wr = wt + (size_t)o * in;
            double s = b ? b[o] : 0.0;
            for (int k = 0; k < in; k++) s += (double)xr[k] * wr[k];
            y[(size_t)i * out + o] = (float)s;
        }
}

void dn_linear_bwd(const float *x, const float *dy, int n, int in, int out, const float *wt,
                   float *dx, float *dw, float *db) {
    if (dw)
        for (int o = 0; o < out; o++) {
            float *wr = dw + (size_t)o * in;
            for (int k = 0; k < in; k++) {
                double s = 0;
                for (int i = 0; i < n; i++) s += (double)dy[(size_t)i * out + o] * x[(size_t)i * in + k];
                wr[k] += (float)s;
            }
        }
    if (db)
        for (int o = 0; o < out; o++) {
            double s = 0;
            for (int i = 0; i < n; i++) s += dy[(size_t)i * out + o];
            db[o] += (float)s;
        }
    if (dx)
        for (int i = 0; i < n; i++)
            for (int k = 0; k < in; k++) {
                double s = 0;
                for (int o = 0; o < out; o++) s += (double)dy[(size_t)i * out + o] * wt[(size_t)o * in + k];
                dx[(size_t)i * in + k] = (float)s;
            }
}
