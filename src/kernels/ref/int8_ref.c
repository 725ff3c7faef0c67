/* Scalar specification of the int8 convolution (contract in kernels/int8.h):
 * per-output-channel symmetric weights, u8 activations with zero point 0, exact
 * s32 sums in ci, ky, kx order, fp32 epilogue fma(acc, mult, bias) + res, ReLU. */
#include "kernels/int8.h"
#include <math.h>

void dn_int8_quantize_weights(const dn_conv_desc *d, const float *w, int8_t *wq, float *ws) {
    const size_t per = (size_t)d->cin * d->kh * d->kw;
    for (int co = 0; co < d->cout; co++) {
        const float *wc = w + (size_t)co * per;
        float mx = 0.0f;
        for (size_t i = 0; i < per; i++) mx = fabsf(wc[i]) > mx ? fabsf(wc[i]) : mx;
        float s = mx > 0.0f && isfinite(mx) ? mx / 127.0f : 1.0f;
        ws[co] = s;
        for (size_t i = 0; i < per; i++) {
            float v = wc[i] / s;
            v = v > -127.0f ? v : -127.0f; /* NaN -> -127 then clamped below: never UB */
            v = v < 127.0f ? v : 127.0f;
            wq[(size_t)co * per + i] = (int8_t)nearbyintf(v);
        }
    }
}

void dn_conv2d_int8_ref(const dn_conv_desc *d, const float *x, int n, int h, int w, float inv_scale, const int8_t *wq,
                        const float *mult, const float *bias, const float *res, int relu, float *y) {
    const int oh = dn_conv_out(h, d->kh, d->stride, d->pad);
    const int ow = dn_conv_out(w, d->kw, d->stride, d->pad);
    for (int b = 0; b < n; b++) {
        const float *xb = x + (size_t)b * d->cin * h * w;
        for (int co = 0; co < d->cout; co++) {
            const int8_t *wc = wq + (size_t)co * d->cin * d->kh * d->kw;
            float *yc = y + ((size_t)b * d->cout + co) * oh * ow;
            const float *rc = res ? res + ((size_t)b * d->cout + co) * oh * ow : NULL;
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    int32_t acc = 0;
                    for (int ci = 0; ci < d->cin; ci++)
                        for (int ky = 0; ky < d->kh; ky++) {
                            int iy = oy * d->stride - d->pad + ky;
                            if (iy < 0 || iy >= h) continue;
                            for (int kx = 0; kx < d->kw; kx++) {
                                int ix = ox * d->stride - d->pad + kx;
                                if (ix < 0 || ix >= w) continue;
                                acc += (int32_t)wc[((size_t)ci * d->kh + ky) * d->kw + kx] *
                                       (int32_t)dn_q_u8(xb[((size_t)ci * h + iy) * w + ix], inv_scale);
                            }
                        }
                    float v = fmaf((float)acc, mult[co], bias ? bias[co] : 0.0f);
                    if (rc) v += rc[oy * ow + ox];
                    if (relu && v < 0.0f) v = 0.0f;
                    yc[oy * ow + ox] = v;
                }
        }
    }
}
