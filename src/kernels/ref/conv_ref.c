/* Scalar reference convolution: the specification every fast kernel is tested
 * against (see kernels.h for the formula). Straight loops, accumulate in float
 * in ci, ky, kx order, no blocking. */
#include "kernels/kernels.h"

void dn_conv2d_ref(const dn_conv_desc *d, const float *x, int n, int h, int w, const float *wt,
                   const float *bias, const float *res, int relu, float *y) {
    const int oh = dn_conv_out(h, d->kh, d->stride, d->pad);
    const int ow = dn_conv_out(w, d->kw, d->stride, d->pad);
    for (int b = 0; b < n; b++) {
        const float *xb = x + (size_t)b * d->cin * h * w;
        for (int co = 0; co < d->cout; co++) {
            const float *wc = wt + (size_t)co * d->cin * d->kh * d->kw;
            float *yc = y + ((size_t)b * d->cout + co) * oh * ow;
            const float *rc = res ? res + ((size_t)b * d->cout + co) * oh * ow : NULL;
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    float acc = bias ? bias[co] : 0.0f;
                    for (int ci = 0; ci < d->cin; ci++)
                        for (int ky = 0; ky < d->kh; ky++) {
                            int iy = oy * d->stride - d->pad + ky;
                            if (iy < 0 || iy >= h) continue;
                            for (int kx = 0; kx < d->kw; kx++) {
                                int ix = ox * d->stride - d->pad + kx;
                                if (ix < 0 || ix >= w) continue;
                                acc += wc[((size_t)ci * d->kh + ky) * d->kw + kx] *
                                       xb[((size_t)ci * h + iy) * w + ix];
                            }
                        }
                    if (rc) acc += rc[oy * ow + ox];
                    if (relu && acc < 0.0f) acc = 0.0f;
                    yc[oy * ow + ox] = acc;
                }
        }
    }
}
