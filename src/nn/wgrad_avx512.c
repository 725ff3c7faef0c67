/* AVX-512 tile kernel of the direct weight gradient (see wgrad.h): R x G dot
 * products (R <= 3 output channels, G <= 9 columns) accumulated in 16-lane
 * registers over all pixels of all images of a chunk, then summed across
 * lanes. 27 accumulators + 3 dy vectors + 1 x vector fit the 32 zmm registers.
 * Every (R, G) pair is its own fully unrolled instance. */
#include "nn/wgrad.h"
#if defined(__AVX512F__)
#include <immintrin.h>

static inline __attribute__((always_inline)) void tile(const int R, const int G, const float *dy, size_t dyrow,
                                                       const float *const *xp, int g, int Qd, int P, float *out) {
    __m512 acc[3][9];
#pragma GCC unroll 3
    for (int r = 0; r < 3; r++)
#pragma GCC unroll 9
        for (int j = 0; j < 9; j++) acc[r][j] = _mm512_setzero_ps();
    const float *d0 = dy, *d1 = R > 1 ? dy + dyrow : dy, *d2 = R > 2 ? dy + 2 * dyrow : dy;
    for (int img = 0; img < g; img++) {
        size_t xo = (size_t)img * P, dofs = (size_t)img * Qd;
        const float *x[9];
#pragma GCC unroll 9
        for (int j = 0; j < 9; j++) x[j] = j < G ? xp[j] + xo : xp[0];
        for (int q = 0; q < Qd; q += 16) {
            __m512 dv0 = _mm512_loadu_ps(d0 + dofs + q);
            __m512 dv1 = R > 1 ? _mm512_loadu_ps(d1 + dofs + q) : dv0;
            __m512 dv2 = R > 2 ? _mm512_loadu_ps(d2 + dofs + q) : dv0;
#pragma GCC unroll 9
            for (int j = 0; j < 9; j++) {
                if (j >= G) break;
                __m512 xv = _mm512_loadu_ps(x[j] + q);
                /* keep xv in a register: one load feeds R FMAs (GCC would
                 * otherwise fold the load into every FMA) */
                __asm__("" : "+v"(xv));
                acc[0][j] = _mm512_fmadd_ps(dv0, xv, acc[0][j]);
                if (R > 1) acc[1][j] = _mm512_fmadd_ps(dv1, xv, acc[1][j]);
                if (R > 2) acc[2][j] = _mm512_fmadd_ps(dv2, xv, acc[2][j]);
            }
        }
    }
#pragma GCC unroll 3
    for (int r = 0; r < 3; r++)
#pragma GCC unroll 9
        for (int j = 0; j < 9; j++)
            if (r < R && j < G) out[r * G + j] = _mm512_reduce_add_ps(acc[r][j]);
}

#define CASE_G(R, G) case G: tile(R, G, dy, dyrow, xp, g, Qd, P, out); return;
#define CASES(R) switch (G) { CASE_G(R, 1) CASE_G(R, 2) CASE_G(R, 3) CASE_G(R, 4) CASE_G(R, 5) \
                              CASE_G(R, 6) CASE_G(R, 7) CASE_G(R, 8) CASE_G(R, 9) default: break; }

void dn_wgrad_tile_avx512(int R, int G, const float *dy, size_t dyrow, const float *const *xp, int g,
                          int Qd, int P, float *out) {
    if (R == 3) { CASES(3) }
    else if (R == 2) { CASES(2) }
    else if (R == 1) { CASES(1) }
    dn_wgrad_tile_ref(R, G, dy, dyrow, xp, g, Qd, P, out); /* outside the kernel's range */
}
#else
/* Built without AVX-512 code generation: never selected (dn_wgrad_available
 * is 0 off x86-64 AVX-512), kept only so the symbol exists. */
void dn_wgrad_tile_avx512(int R, int G, const float *dy, size_t dyrow, const float *const *xp, int g,
                          int Qd, int P, float *out) {
    dn_wgrad_tile_ref(R, G, dy, dyrow, xp, g, Qd, P, out);
}
#endif
