/* Global average pool (the ResNet head's AdaptiveAvgPool2d(1)). */
#include "nn/layers.h"

void dn_avgpool_fwd(const float *x, int n, int c, int hw, float *y) {
    for (long pl = 0; pl < (long)n * c; pl++) {
        const float *xp = x + (size_t)pl * hw;
        double s = 0;
        for (int k = 0; k < hw; k++) s += xp[k];
        y[pl] = (float)(s / hw);
    }
}

void dn_avgpool_bwd(const float *dy, int n, int c, int hw, float *dx) {
    for (long pl = 0; pl < (long)n * c; pl++) {
        float g = dy[pl] / (float)hw;
        float *dxp = dx + (size_t)pl * hw;
        for (int k = 0; k < hw; k++) dxp[k] = g;
    }
}
