/* Convolution operator interface shared by the inference engine and the kernels.
 *
 * A dn_conv_op is prepared once from OIHW weights (+ optional per-channel bias,
 * i.e. BatchNorm already folded in) and is then immutable and thread-safe: the
 * packed/transformed weights live in it, per-call scratch is passed in.
 * Activations at this interface are NCHW float32.
 *
 *   y[n][co][oy][ox] = act( bias[co] + sum_{ci,ky,kx} w[co][ci][ky][kx] *
 *                           x[n][ci][oy*s - p + ky][ox*s - p + kx]  (+ res[n][co][oy][ox]) )
 *   act = ReLU if relu else identity; out-of-range x reads are zero (padding).
 *
 * DN_CONV_REF is the scalar specification (src/kernels/ref/); every other
 * implementation is tested against it on odd shapes (tests/test_kernels.c).
 *
 * Ownership: an op owns everything it allocates (released by dn_conv_op_free);
 * callers own x, res, y and the scratch they pass; dn_conv_op_impl_name returns
 * a string owned by the op. Dispatch: AVX-512 or AVX2+FMA micro-kernels chosen at
 * op creation (dn_kernels_isa, overridable by dn_kernels_force_isa and the env
 * DN_MAX_ISA=avx2 / DN_FORCE_REF=1 read by dn_cpu_features); scalar REF otherwise. */
#ifndef DN_KERNELS_H
#define DN_KERNELS_H
#include "core/core.h"

typedef struct dn_conv_desc {
    int cin, cout, kh, kw, stride, pad;
} dn_conv_desc;

static inline int dn_conv_out(int in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

typedef enum {
    DN_CONV_AUTO = 0,   /* fastest exact (fp32) implementation the CPU supports */
    DN_CONV_REF,        /* scalar reference */
    DN_CONV_DIRECT,     /* vectorised fp32 direct / GEMM */
    DN_CONV_WINOGRAD,   /* fp32 Winograd for 3x3 stride 1 (falls back otherwise) */
    DN_CONV_BF16,       /* bf16 weights+activations, fp32 accumulate (AVX512_BF16) */
    DN_CONV_INT8,       /* int8 per-channel weights, calibrated u8 activations (VNNI): needs a scale,
                         * so created by dn_conv_op_new_int8 (kernels/int8.h), not dn_conv_op_new */
    DN_CONV_WINOGRAD_BF16 /* fp32 Winograd for 3x3 stride 1 where it pays, bf16 direct otherwise */
} dn_conv_impl;

typedef struct dn_conv_op dn_conv_op;

/* w: [cout][cin][kh][kw]; bias: [cout] or NULL. Copies what it needs.
 * NULL on failure (dn_last_error says why). */
dn_conv_op *dn_conv_op_new(const dn_conv_desc *d, const float *w, const float *bias, dn_conv_impl impl);
void dn_conv_op_free(dn_conv_op *op);
/* Replace the op's weights (same descriptor; bias given iff the op was built
 * with one) by re-packing into the buffers the op already owns: no allocation,
 * and the op then computes exactly what dn_conv_op_new(d, w, bias, impl) would.
 * For training loops that refresh their ops after every optimizer step. Not
 * safe while another thread runs the op. DN_ERR_ARG (dn_last_error) on NULL
 * arguments or a bias mismatch, the op unchanged. */
dn_status dn_conv_op_set_weights(dn_conv_op *op, const float *w, const float *bias);
/* Bytes of scratch dn_conv_op_run needs for this input size (may be 0). Covers
 * a pool of up to dn_num_cpus() threads; larger pools use that many workers. */
size_t dn_conv_op_scratch(const dn_conv_op *op, int n, int h, int w);
/* x: [n][cin][h][w]; res: NULL or [n][cout][oh][ow]; y: [n][cout][oh][ow].
 * Parallelised over pool (may be NULL = single thread). scratch: at least
 * dn_conv_op_scratch() bytes, 64-byte aligned; NULL makes the call allocate
 * (and free) its own, and if that fails y is filled with NaN and dn_last_error
 * says why. Never allocates when scratch is given. */
void dn_conv_op_run(const dn_conv_op *op, const float *x, int n, int h, int w,
                    const float *res, int relu, float *y, dn_pool *pool, void *scratch);
const char *dn_conv_op_impl_name(const dn_conv_op *op);

/* ------------------------------------------------------------ blocked activations
 * NCHW16c with a zero border: an n x c x h x w tensor (c a multiple of 16)
 * stored as [n][c/16][h + 2b][w + 2b][16] floats, b = border, border pixels 0.
 * The engine keeps activations in this layout from the stem to the pool, so no
 * conv re-packs its input or transposes its output (a border of 1 is the
 * padding of the next 3x3 conv). dn_blk_* are plain C (memory-bound layout
 * work), parallel over pool (NULL = this thread). */
static inline size_t dn_blk_floats(int n, int c, int h, int w, int b) {
    return (size_t)n * (size_t)((c + 15) / 16) * 16 * (size_t)(h + 2 * b) * (size_t)(w + 2 * b);
}
void dn_blk_from_nchw(const float *x, int n, int c, int h, int w, int b, float *xb, dn_pool *pool);
void dn_blk_to_nchw(const float *xb, int n, int c, int h, int w, int b, float *y, dn_pool *pool);
/* 3x3 stride-2 pad-1 max pool (PyTorch semantics: padding never wins, NaN
 * propagates) of blocked x (border xb_) into blocked y (border yb). */
void dn_blk_maxpool3s2(const float *x, int n, int c, int h, int w, int xb_, float *y, int oh, int ow, int yb,
                       dn_pool *pool);
/* Row oy of a 3x3 stride-2 pad-1 max pool on one plane of `lanes` interleaved
 * channels (1: NCHW, 16: a blocked plane): s = pixel (0, 0), pitch = pixels
 * per row; d = output row (ow pixels). Windows clipped to the h x w map, NaN
 * propagates: the scalar spec of both layouts' pools. */
void dn_maxpool3s2_row(const float *s, int h, int w, int pitch, int lanes, int oy, int ow, float *d);
/* feat[i][ch] = mean of channel ch of image i over the h x w interior. */
void dn_blk_avgpool(const float *x, int n, int c, int h, int w, int b, float *feat, dn_pool *pool);

/* 1 if the op runs on blocked activations (dn_conv_op_run_blocked): fp32 direct
 * on AVX-512 with cout % 16 == 0, and either cin % 16 == 0 (blocked input) or
 * cin < 16 (a first layer: plain NCHW input, e.g. the 3-channel stem); or int8
 * on AVX-512 VNNI with cin, cout % 16 == 0 (fp32 blocked in and out, quantized
 * to u8 inside the op). */
int dn_conv_op_blocked(const dn_conv_op *op);
/* 1 if the op reads plain NCHW input in blocked mode (cin < 16). */
int dn_conv_op_blocked_nchw_in(const dn_conv_op *op);
size_t dn_conv_op_blocked_scratch(const dn_conv_op *op, int n, int h, int w);
/* x: blocked with border xb_ >= the conv's pad (or plain NCHW, xb_ = 0, when
 * dn_conv_op_blocked_nchw_in); res: NULL or blocked like y; y: blocked with
 * border yb (written including its border). Same arithmetic contract as
 * dn_conv_op_run. DN_ERR_ARG (dn_last_error, y untouched) if the op cannot run
 * blocked or xb_ < pad. scratch: dn_conv_op_blocked_scratch() bytes, 64-byte
 * aligned (may be NULL when that is 0). */
dn_status dn_conv_op_run_blocked(const dn_conv_op *op, const float *x, int n, int h, int w, int xb_,
                                 const float *res, int relu, float *y, int yb, dn_pool *pool, void *scratch);

/* Scalar reference (also used directly by tests). */
void dn_conv2d_ref(const dn_conv_desc *d, const float *x, int n, int h, int w, const float *wt,
                   const float *bias, const float *res, int relu, float *y);
/* ------------------------------------------------------------ GEMM
 * Row-major SGEMM with BLAS semantics:
 *   C[M][N] = alpha * op(A)[M][K] * op(B)[K][N] + beta * C
 * op(A) = A (M x K, lda >= K) or, if transA, A^T with A stored K x M (lda >= M);
 * op(B) likewise (transB: B stored N x K). beta == 0 means C is not read.
 * dn_sgemm picks the fastest ISA (see dn_kernels_force_isa), is parallel over
 * pool (NULL = single thread) and deterministic: each C element is summed by one
 * thread in a fixed order regardless of the pool size. Uses a scratch buffer
 * kept per calling thread (grown on first use, freed at thread exit), so steady
 * state calls do not allocate; if growing it fails, C is left untouched and
 * dn_last_error says why. */
void dn_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc, dn_pool *pool);
void dn_sgemm_ref(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc);

/* ------------------------------------------------------------ ISA selection
 * Kernels pick the widest ISA dn_cpu_features() reports. Tests (and benches)
 * can cap it explicitly for everything created/called afterwards; a conv op
 * keeps the ISA it was created with. Process-wide, not thread-safe: call it
 * before starting work. Returns the previous setting. */
typedef enum { DN_ISA_AUTO = 0, DN_ISA_SCALAR, DN_ISA_AVX2, DN_ISA_AVX512 } dn_isa;
dn_isa dn_kernels_force_isa(dn_isa isa);
/* The ISA that AUTO resolves to now (after forcing and CPU detection). */
dn_isa dn_kernels_isa(void);
const char *dn_isa_name(dn_isa isa);
#endif
