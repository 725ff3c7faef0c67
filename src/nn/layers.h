/* Training-mode layers: forward and backward of every layer a ResNet needs.
 * Activations are NCHW float32, batch-major. Nothing here allocates except
 * where noted; the caller (src/train/net.c) owns every buffer and passes
 * scratch. pool may be NULL (single thread). Results do not depend on the
 * number of threads (every reduction has a fixed order).
 *
 * Gradient convention: parameter gradients are ACCUMULATED (+=), data
 * gradients (dx) are OVERWRITTEN unless stated otherwise. */
#ifndef DN_LAYERS_H
#define DN_LAYERS_H
#include "core/core.h"
#include "nn/model.h"
#include "kernels/kernels.h" /* dn_conv_out, dn_sgemm */
#include "nn/wgrad.h"

/* Elementwise / per-channel loops (BN, ReLU, add, max-pool) are compiled for
 * baseline x86-64, AVX2 and AVX-512 (GCC target pragmas) and picked per call
 * by dn_kernels_isa(), so DN_FORCE_REF / DN_MAX_ISA / dn_kernels_force_isa
 * select them like every kernel. Same arithmetic on every path. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define DN_LAYER_SIMD 1
#endif
static inline dn_job_fn dn_layer_pick(dn_job_fn ref, dn_job_fn avx2, dn_job_fn avx512) {
    dn_isa isa = dn_kernels_isa();
    if (isa == DN_ISA_AVX512 && avx512) return avx512;
    if (isa >= DN_ISA_AVX2 && avx2) return avx2;
    return ref;
}

/* ---------------------------------------------------------------- conv
 * y = conv2d(x, p->w) (no bias) for x [n][cin][h][w], y [n][cout][oh][ow].
 * A dn_conv_layer is planned once for an input size and holds the fast-path
 * operators built from the CURRENT weights (dn_conv_layer_prepare must be
 * called again after the weights changed, i.e. after every optimizer step):
 *  - forward: a dn_conv_op (kernels' packed direct convolution);
 *  - data gradient: for stride-1 convs, a dn_conv_op over dy with the flipped,
 *    transposed kernel (dx = conv(dy, rot180(W)^T, pad k-1-p)); otherwise a
 *    GEMM W^T * dy over a chunk of images followed by col2im;
 *  - weight gradient (nn/wgrad.h), chunks of images in image order:
 *    Winograd F(3x3, 2x2) for 3x3 stride-1 convs with 64^2..512^2 channel
 *    pairs (AUTO/WINOGRAD impl, AVX2 or better); else, with AVX-512, the
 *    direct im2col-free kernel where >= 80% of its vector lanes carry output
 *    pixels; otherwise dW += dy * col^T as one GEMM over a chunk of images
 *    (reduction length = images x output pixels). DN_CONV_REF: GEMM only.
 * Without a fast ISA (DN_FORCE_REF) the ops fall back to the reference conv.
 * Ownership: the layer borrows p (the model's conv) and owns its ops and the
 * transposed kernel. Scratch is the caller's: dn_conv_layer_scratch bytes,
 * 64-byte aligned, for batches up to maxn. */
typedef struct dn_conv_op dn_conv_op;
typedef struct dn_conv_layer {
    const dn_conv_p *p;
    int h, w, oh, ow;
    int chunk;            /* images per GEMM chunk (weight / data gradient) */
    int impl;             /* DN_CONV_AUTO: Winograd for 3x3 stride-1 ops over at least
                           * DN_CONV_WINO_MIN_PIXELS output pixels per call and maps of at
                           * least DN_CONV_WINO_MIN_MAP_CH pixels x channels (~1e-5 relative
                           * error), exact direct otherwise; DN_CONV_DIRECT: always direct;
                           * DN_CONV_WINOGRAD: Winograd for every 3x3 stride-1 op; REF */
    dn_conv_op *fwd, *bwd;
    int fwd_impl, bwd_impl; /* the dn_conv_impl each op was requested with */
    int fwd_folded;       /* fwd has BN folded in (prepare_folded), i.e. a bias */
    float *wt;            /* [cin][cout][k][k] flipped kernel for bwd (stride-1 only) */
    dn_wgrad_plan wg;     /* direct weight-gradient plan, valid if wg_ok (used when dn_wgrad_available) */
    int wg_ok;
    dn_wgrad_wino ww;     /* Winograd weight-gradient plan, valid if ww_ok */
    int ww_ok;
} dn_conv_layer;

/* impl: a dn_conv_impl among AUTO, DIRECT, WINOGRAD, REF (bf16/int8 refused). */
dn_status dn_conv_layer_init(dn_conv_layer *L, const dn_conv_p *p, int h, int w, int maxn, int impl);
#define DN_CONV_WINO_MIN_PIXELS 4096L /* measured break-even of the per-step transform: ~3.5k */
/* and output pixels per image x input channels at least this (conv_layer.c: pick_impl) */
#define DN_CONV_WINO_MIN_MAP_CH 32768L
/* (Re)build the forward op (fwd != 0) and/or the data-gradient op (bwd != 0)
 * for batches of about n images (n only steers the AUTO choice) from the
 * current weights. An existing op of the same kind and implementation is
 * re-packed in place (dn_conv_op_set_weights: no allocation per step), else
 * replaced. On failure the layer may have lost its ops (GEMM paths serve). */
dn_status dn_conv_layer_prepare(dn_conv_layer *L, int fwd, int bwd, int n);
/* Eval-mode forward op with BatchNorm folded in (w * g / sqrt(var + eps),
 * bias b - mean * g / sqrt(var + eps), computed in double) replacing L->fwd;
 * run it with dn_conv_layer_fwd_fused (bias + optional residual + ReLU in the
 * epilogue), which requires a successful dn_conv_layer_prepare_folded.
 * dn_conv_layer_fwd / _bwd_data without a prepared op use the GEMM paths. */
dn_status dn_conv_layer_prepare_folded(dn_conv_layer *L, const dn_bn_p *bn, int n);
void dn_conv_layer_fwd_fused(const dn_conv_layer *L, const float *x, int n, const float *res, int relu,
                             float *y, dn_pool *pool, void *scratch);
void dn_conv_layer_release(dn_conv_layer *L);
size_t dn_conv_layer_scratch(const dn_conv_layer *L, int maxn);
void dn_conv_layer_fwd(const dn_conv_layer *L, const float *x, int n, float *y, dn_pool *pool, void *scratch);
/* dw [cout][cin][k][k] += weight gradient for dy [n][cout][oh][ow]. */
void dn_conv_layer_bwd_weight(const dn_conv_layer *L, const float *x, int n, const float *dy, float *dw,
                              dn_pool *pool, void *scratch);
/* dx [n][cin][h][w] = data gradient (overwritten). */
void dn_conv_layer_bwd_data(const dn_conv_layer *L, int n, const float *dy, float *dx, dn_pool *pool,
                            void *scratch);

/* ---------------------------------------------------------------- BatchNorm
 * Training mode: normalise with the batch statistics over (n, h, w) per channel
 * (biased variance), y = gamma * (x - mean) * invstd + beta, then ReLU if relu.
 * If update_running, the running stats move like PyTorch (momentum 0.1):
 *   mean_r = 0.9 mean_r + 0.1 mean;  var_r = 0.9 var_r + 0.1 var * M / (M - 1)
 *   num_batches_tracked += 1        (M = n * hw; M == 1 gives var_r update with
 *   an infinite unbiased variance in PyTorch; we refuse it in the net instead).
 * save_mean / save_invstd [c] receive the batch mean and 1/sqrt(var + eps).
 * y may equal x (in place). */
void dn_bn_layer_fwd_train(dn_bn_p *p, const float *x, int n, int hw, float *y, float *save_mean,
                           float *save_invstd, int relu, int update_running, dn_pool *pool);
/* Eval mode (running statistics), optional ReLU; y may equal x. */
void dn_bn_layer_fwd_eval(const dn_bn_p *p, const float *x, int n, int hw, float *y, int relu,
                          dn_pool *pool);
/* Backward of the training-mode forward. x: the BN input; y: its output (only
 * read when relu, for the mask y > 0); dy: gradient w.r.t. y. dx (overwritten)
 * may equal dy; dgamma, dbeta [c] accumulated (may be NULL together with dx
 * non-NULL, or dx NULL to compute only the parameter grads). */
void dn_bn_layer_bwd(const dn_bn_p *p, const float *x, const float *y, const float *dy, int n,
                     int hw, const float *save_mean, const float *save_invstd, int relu, float *dx,
                     float *dgamma, float *dbeta, dn_pool *pool);

/* ---------------------------------------------------------------- ReLU
 * y = max(x, 0) (y may equal x). Backward: dx = dy where y > 0 else 0
 * (PyTorch's threshold_backward on the output); dx may equal dy. */
void dn_relu_fwd(const float *x, size_t count, float *y, dn_pool *pool);
void dn_relu_bwd(const float *y, const float *dy, size_t count, float *dx, dn_pool *pool);

/* ---------------------------------------------------------------- residual add
 * y = a + b, then ReLU if relu (y may equal a or b). Backward of the add is the
 * identity on both inputs; dn_add_inplace accumulates a gradient: y += b. */
void dn_add_fwd(const float *a, const float *b, size_t count, float *y, int relu, dn_pool *pool);
void dn_add_inplace(float *y, const float *b, size_t count, dn_pool *pool);

/* ---------------------------------------------------------------- max-pool
 * Output size floor((in + 2 pd - k) / s) + 1 (ceil_mode=False). */
static inline int dn_pool_out(int in, int k, int s, int pd) { return (in + 2 * pd - k) / s + 1; }
/* k x k, stride s, padding pd (padding never wins: it is -inf). idx [n][c][oh][ow]
 * receives the flat index (iy * w + ix) of the max in its input plane; ties go to
 * the first in row-major scan order, NaN wins (as PyTorch's CPU kernel). */
void dn_maxpool_fwd(const float *x, int n, int c, int h, int w, int k, int s, int pd, float *y,
                    int32_t *idx, dn_pool *pool);
/* dx [n][c][h][w] overwritten: zero, then dy routed to the argmax positions. */
void dn_maxpool_bwd(const float *dy, const int32_t *idx, int n, int c, int h, int w, int oh, int ow,
                    float *dx, dn_pool *pool);

/* ---------------------------------------------------------------- global average pool
 * y [n][c] = mean over h*w. Backward: dx [n][c][hw] = dy / hw (overwritten). */
void dn_avgpool_fwd(const float *x, int n, int c, int hw, float *y);
void dn_avgpool_bwd(const float *dy, int n, int c, int hw, float *dx);

/* ---------------------------------------------------------------- linear
 * y [n][out] = x [n][in] W^T + b, W [out][in] (PyTorch layout), b may be NULL.
 * Backward: dw += dy^T x, db += sum_n dy, dx = dy W (each may be NULL). */
void dn_linear_fwd(const float *x, int n, int in, int out, const float *wt, const float *b,
                   float *y);
void dn_linear_bwd(const float *x, const float *dy, int n, int in, int out, const float *wt,
                   float *dx, float *dw, float *db);
#endif
