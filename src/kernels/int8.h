/* int8 convolution (issue 14 item 3): static quantization with VNNI.
 *
 * Arithmetic contract (the scalar spec is dn_conv2d_int8_ref, src/kernels/ref/int8_ref.c):
 *   weights  per output channel, symmetric: ws[co] = max|w[co]| / 127 (1 if all zero),
 *            wq = clamp(nearest-even(w / ws[co]), -127, 127)           (dn_int8_quantize_weights)
 *   input    unsigned, zero point 0 (post-ReLU activations are >= 0):
 *            xq = nearest-even(min(max(x * inv_scale, 0), 255))       (dn_q_u8; NaN -> 0)
 *            inv_scale = 1 / act_scale (float), padding is 0
 *   sum      s32 acc[co] = sum_{ci,ky,kx} xq * wq  (exact: no saturation on any path)
 *   epilogue y = fma((float)acc, mult[co], bias[co]) (+ res) then ReLU (NaN kept),
 *            mult[co] = act_scale * ws[co] (float)
 * Every implementation (AVX-512 VNNI vpdpbusd, AVX2 vpmaddwd on 16-bit pairs, the
 * scalar spec) computes exactly these values: outputs are bit-identical.
 *
 * Layouts of the fast paths (cinp/coutp = cin/cout rounded up to 16):
 *   xq   u8 NCHW16c [n][cinp/16][hp][wp][16] with a zero border (>= pad)
 *   W    VNNI:  [coutp/16][cinp/16][kh][kw][4 groups][16 co][4 ci] int8
 *        AVX2:  [coutp/16][cinp/16][kh][kw][8 pairs][16 co][2 ci] int16
 * Ownership: the op (dn_conv_op_new_int8) owns its packed weights, scales and
 * bias; callers own x, res, y and scratch. Thread safety as kernels.h. */
#ifndef DN_INT8_H
#define DN_INT8_H
#include "kernels/kernels.h"
#include <math.h>
#include <stdint.h>

/* The u8 quantization of one activation (see above). */
static inline uint8_t dn_q_u8(float x, float inv_scale) {
    float v = x * inv_scale;
    v = v > 0.0f ? v : 0.0f; /* NaN -> 0 */
    v = v < 255.0f ? v : 255.0f;
    return (uint8_t)nearbyintf(v);
}

/* wq [cout][cin][kh][kw] int8 and ws [cout] from OIHW fp32 weights w. */
void dn_int8_quantize_weights(const dn_conv_desc *d, const float *w, int8_t *wq, float *ws);

/* Scalar spec: x fp32 NCHW [n][cin][h][w] quantized with inv_scale, wq OIHW
 * int8, mult/bias [cout] (bias may be NULL = 0), res NULL or like y, y fp32
 * NCHW [n][cout][oh][ow]. */
void dn_conv2d_int8_ref(const dn_conv_desc *d, const float *x, int n, int h, int w, float inv_scale, const int8_t *wq,
                        const float *mult, const float *bias, const float *res, int relu, float *y);

/* An int8 conv op: w OIHW fp32 (BatchNorm folded), bias [cout] or NULL,
 * act_scale > 0 the input's quantization step. Runs through the common
 * dn_conv_op_* calls (NCHW fp32 in/out; blocked fp32 in/out when
 * dn_conv_op_blocked says so: AVX-512 VNNI, cin and cout multiples of 16).
 * ISA: AVX-512 VNNI, else AVX2, else the scalar spec. NULL on failure
 * (dn_last_error names the problem: bad descriptor, scale not finite > 0). */
dn_conv_op *dn_conv_op_new_int8(const dn_conv_desc *d, const float *w, const float *bias, float act_scale);

/* ------------------------------------------------------------ internals (conv.c, conv_int8.c, x86/int8_*.c) */
typedef struct dn_i8op dn_i8op;
dn_i8op *dn_i8op_new(const dn_conv_desc *d, const float *w, const float *bias, float act_scale, dn_isa isa);
void dn_i8op_free(dn_i8op *q);
void dn_i8op_set_weights(dn_i8op *q, const float *w, const float *bias);
const char *dn_i8op_name(const dn_i8op *q);
int dn_i8op_blocked(const dn_i8op *q);
size_t dn_i8op_scratch(const dn_i8op *q, int n, int h, int w);
size_t dn_i8op_blocked_scratch(const dn_i8op *q, int n, int h, int w, int xb);
void dn_i8op_run(const dn_i8op *q, const float *x, int n, int h, int w, const float *res, int relu, float *y,
                 dn_pool *pool, void *scratch);
void dn_i8op_run_blocked(const dn_i8op *q, const float *x, int n, int h, int w, int xb, const float *res, int relu,
                         float *y, int yb, dn_pool *pool, void *scratch);

typedef struct {
    int cinp, coutp, cout, kh, kw, stride;
    int oh, ow;
    int hp, wp;      /* pixels per plane of the u8 input buffer (xq points at padded (0, 0)) */
    size_t img;      /* bytes per image of the u8 input buffer */
    int yb;          /* >= 0: output blocked fp32 with this border; -1: NCHW fp32 (co >= cout dropped) */
} dn_i8_geom;
/* Output row oy of output-channel blocks cob .. cob+nb-1 (nb 1 or 2) of image img.
 * mult/bias padded to coutp; res: NULL or laid out like y. Blocked output: also
 * zeroes the border pixels the row owns (as dn_direct16b_row_avx512). */
void dn_i8_row_avx512(const dn_i8_geom *g, const int8_t *W, const uint8_t *xq, int img, int cob, int nb, int oy,
                      const float *mult, const float *bias, const float *res, int relu, float *y);
void dn_i8_row_avx2(const dn_i8_geom *g, const int16_t *W, const uint8_t *xq, int img, int cob, int oy,
                    const float *mult, const float *bias, const float *res, int relu, float *y);
/* Quantizes nplanes blocked fp32 planes of npix pixels (16 floats each) into u8. */
void dn_i8_quant_blk_avx512(const float *x, size_t npix, float inv_scale, uint8_t *q);
#endif
