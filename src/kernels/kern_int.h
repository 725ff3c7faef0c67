/* Internal to src/kernels: the packed-GEMM driver shared by dn_sgemm and the
 * im2col convolutions (im2col fused into B packing), the per-ISA
 * register-blocked micro-kernels it calls, the AVX-512 NCHW16c direct
 * convolution kernels (fp32 and bf16) and the Winograd F(4x4,3x3) transforms.
 * conv.c picks among them per op (see dn_conv_op_new).
 *
 * Packed layouts (all zero-padded to full panels):
 *   A: panels of MR rows,  Ap[(mp*K + k)*MR + i]   = A[mp*MR+i][k]
 *   B: panels of NR cols,  Bp[(jp*kc + kk)*NR + jj] = B[pc+kk][j0+jp*NR+jj]
 * Ownership: the driver reads everything through the plan; it writes only C
 * and the caller-provided scratch. */
#ifndef DN_KERN_INT_H
#define DN_KERN_INT_H
#include "kernels/kernels.h"

/* C[mr x nr] (row stride ldc) = (accum ? C : 0) + sum_k a[k][i]*b[k][j]; then,
 * if bias: + bias[i]; if res: + res[i*ldr + j]; if relu: max(0, .).
 * a: kc x MR packed, b: kc x NR packed; mr <= MR, nr <= NR (partial tiles are
 * masked on store). */
typedef void (*dn_ukr_fn)(int kc, const float *a, const float *b, float *c, long ldc, int mr, int nr,
                          int accum, const float *bias, const float *res, long ldr, int relu);
/* Same with A read in place: element (i, k) at a[i*a_rs + k*a_cs] (all MR rows
 * must be readable; the driver packs partial edge panels instead). */
typedef void (*dn_ukr_strided_fn)(int kc, const float *a, long a_rs, long a_cs, const float *b, float *c, long ldc,
                                  int mr, int nr, int accum, const float *bias, const float *res, long ldr, int relu);
struct dn_gemm_plan;
/* Packs B rows [pc, pc+kc) x columns [j0, j0+nc) of the plan into NR panels. */
typedef void (*dn_pack_b_fn)(const struct dn_gemm_plan *p, int pc, int kc, int j0, int nc, float *dst);
typedef struct {
    int mr, nr;
    dn_ukr_fn fn;
    dn_ukr_strided_fn fn_strided;
    dn_pack_b_fn pack_b;
    const char *name;
} dn_ukr;

extern const dn_ukr dn_ukr_avx512;   /* x86/ukr_avx512.c: 8 x 32 */
extern const dn_ukr dn_ukr_avx2;     /* x86/ukr_avx2.c:   6 x 16 */
extern const dn_ukr dn_ukr_bf16_avx512; /* x86/ukr_bf16_avx512.c: 8 x 32, bf16 pairs */
const dn_ukr *dn_ukr_for(dn_isa isa); /* NULL for DN_ISA_SCALAR */

/* fp32 -> bf16, round to nearest even (NaN kept quiet). */
static inline uint16_t dn_f32_to_bf16(float f) {
    uint32_t u;
    __builtin_memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float dn_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
}
/* bf16 packed A: [mp][K2/2][MR][2] with K2 = K rounded up to even; returns
 * the number of uint16 elements (dst may be NULL to query). */
size_t dn_gemm_pack_a_bf16(const dn_ukr *u, int M, int K, const float *A, int lda, uint16_t *dst);

#define DN_GEMM_KC 256
#define DN_GEMM_NC 512
#define DN_UKR_MAX_MR 16
#define DN_UKR_MAX_NR 64

typedef struct dn_gemm_plan {
    const dn_ukr *u;
    int M, N, K;
    const float *Ap;              /* packed A (M x K), or NULL: A read in place */
    const float *A; long a_rs, a_cs; /* if Ap == NULL: element (i, k) at A[i*a_rs + k*a_cs] */
    /* B source: matrix (cd == NULL) or im2col of x (cd != NULL). */
    const float *B; int ldb, transB;
    const dn_conv_desc *cd; const float *x; int h, w, oh, ow;
    /* C addressing: element (i, j) lives at C + (j / P) * cimg + i * ldc + j % P.
     * Plain matrices use P = N, cimg = 0. R (residual) uses the same mapping. */
    float *C; long ldc, P, cimg;
    const float *R;
    const float *bias; int relu;
    int accum;                    /* 1: add onto existing C (sgemm beta == 1) */
    int bf16;                     /* Ap is dn_gemm_pack_a_bf16 output; B converted per block */
} dn_gemm_plan;

void dn_pack_b_avx512(const dn_gemm_plan *p, int pc, int kc, int j0, int nc, float *dst); /* x86/pack_avx512.c */
void dn_pack_b_avx2(const dn_gemm_plan *p, int pc, int kc, int j0, int nc, float *dst);   /* x86/pack_avx2.c */

/* Bytes of scratch per thread and the number of thread slabs the driver uses. */
size_t dn_gemm_slab_bytes(const dn_ukr *u);
int dn_gemm_slabs(void);
/* Runs the plan over pool; scratch: dn_gemm_slabs() * dn_gemm_slab_bytes() bytes,
 * 64-byte aligned. */
void dn_gemm_run(const dn_gemm_plan *p, dn_pool *pool, void *scratch);
/* Pack an M x K matrix (row i at A + i*lda, or transposed) times alpha. dst
 * holds ceil(M/MR)*MR*K floats. */
void dn_gemm_pack_a(const dn_ukr *u, int M, int K, const float *A, int lda, int transA, float alpha, float *dst);
size_t dn_gemm_packed_a_floats(const dn_ukr *u, int M, int K);

/* ------------------------------------------------------------ NCHW16c direct (AVX-512)
 * For cin and cout multiples of 16 (x86/direct16_avx512.c): the input is copied
 * once into a zero-padded channel-blocked buffer, then each output row is
 * computed without im2col. hp = h + 2*pad, wp = w + 2*pad. */
typedef struct {
    int cin, cout, kh, kw, stride, pad, h, w, oh, ow, hp, wp;
    int ob;   /* blocked-output kernels (dn_direct16b_*): border of the output buffer */
} dn_d16_geom;
/* Tests set this to 1 to force the im2col path (process-wide; read at op creation). */
extern int dn_d16_disable;
/* Tests set this to 1 to run narrow rows image by image (dn_direct16_row_avx512)
 * instead of dn_direct16_rows_avx512 (process-wide; read per run). */
extern int dn_d16_narrow_disable;
void dn_direct16_pack_avx512(const dn_d16_geom *g, const float *x, int img, int cib, float *xp);
void dn_direct16_row_avx512(const dn_d16_geom *g, const float *W, const float *xp, int img, int cob, int oy,
                            const float *bias, const float *res, int relu, float *y);
/* Row oy of output block cob for nimg images img0.. of a buffer holding every
 * image packed (xp [n][cin/16][hp][wp][16]); for ow <= 3 several images share
 * each weight load. nimg <= dn_direct16_imgs_per_call(ow) when that is > 0
 * (0: wider rows, any nimg, computed image by image). Bit-identical to
 * dn_direct16_row_avx512 per image. */
void dn_direct16_rows_avx512(const dn_d16_geom *g, const float *W, const float *xp, int img0, int nimg, int cob,
                             int oy, const float *bias, const float *res, int relu, float *y);
int dn_direct16_imgs_per_call(int ow);
/* bf16 operands (AVX512_BF16): xp bf16 [n][cin/16][hp][wp][16], W bf16
 * [cout/16][cin/16][kh][kw][8][16][2] (pairs of input channels), fp32 accumulation. */
void dn_direct16_pack_bf16_avx512(const dn_d16_geom *g, const float *x, int img, int cib, uint16_t *xp);
void dn_direct16_row_bf16_avx512(const dn_d16_geom *g, const uint16_t *W, const uint16_t *xp, int img, int cob,
                                 int oy, const float *bias, const float *res, int relu, float *y);

/* ------------------------------------------------------------ blocked in, blocked out (AVX-512)
 * Activations stay NCHW16c between convs (kernels.h, dn_blk_*): no packing, no
 * transpose. xp points at padded-input coordinate (0, 0) of image 0 inside a
 * buffer of hp x wp pixels per channel block (the caller offsets it by
 * buffer border - pad pixels in both directions), y is the output buffer
 * [n][cout/16][oh + 2ob][ow + 2ob][16]; res (or NULL) has y's layout. One call
 * computes output row oy of nb (1, 2 or 4) consecutive output-channel blocks
 * from cob on, bias + residual + ReLU applied to whole vectors, and zeroes the
 * output border pixels the row owns (its left/right ends; the top/bottom
 * border rows with the first/last row). */
void dn_direct16b_row_avx512(const dn_d16_geom *g, const float *W, const float *xp, int img, int cob, int nb, int oy,
                             const float *bias, const float *res, int relu, float *y);
/* First-layer form (cin not a multiple of 16, e.g. the 3-channel stem): xp is
 * planar padded input [n][cin][hp][wp] (pad included), Ws [cout/16][cin][kh][kw][16]. */
void dn_direct16s_row_avx512(const dn_d16_geom *g, const float *Ws, const float *xp, int img, int cob, int nb, int oy,
                             const float *bias, const float *res, int relu, float *y);

/* Row oy of a blocked 3x3/s2/p1 max pool (kernels.h dn_blk_maxpool3s2; its
 * scalar spec is blocked.c): s = interior origin of one 16-channel plane of
 * h x w pixels with row pitch wp, d = first interior pixel of output row oy. */
void dn_blk_maxpool_row_avx512(const float *s, int h, int w, int wp, int oy, int ow, float *d);
/* Tests set this to 1 to run the scalar blocked max pool (process-wide). */
extern int dn_blk_scalar;

/* ------------------------------------------------------------ Winograd F(4x4,3x3)
 * Tiles t = (image, ty, tx) of 4x4 outputs, th = ceil(oh/4), tw = ceil(ow/4).
 * A chunk of nt tiles starting at t0 is transformed into
 *   V: 36 packed-B matrices (K = cin, N = nt), V + xi*cin*Tpad, panel layout as B;
 *   then M[xi] = U[xi] (cout x cin) * V[xi] by the micro-kernel,
 *   M: 36 row-major cout x Tpad matrices, M + xi*cout*Tpad;
 * and back: y = A^T M A + bias (+ res), ReLU. Tpad = nt rounded up to NR. */
typedef struct { int cin, cout, h, w, pad, oh, ow, th, tw, Tpad; } dn_wino_geom;
/* A Winograd op runs the direct path when Winograd would not pay for this
 * input size (conv.c: wino_pays). If > 0, Winograd runs whenever there are at
 * least this many tiles instead: tests set it to 1 to exercise the transforms
 * on tiny shapes. Process-wide. */
extern int dn_wino_min_tiles;
void dn_wino_in_avx512(const dn_wino_geom *g, const float *x, long t0, int nt, int ci0, int ci1, float *V, int NR);
void dn_wino_out_avx512(const dn_wino_geom *g, const float *M, long t0, int nt, int co0, int co1,
                        const float *bias, const float *res, int relu, float *y);
void dn_wino_in_avx2(const dn_wino_geom *g, const float *x, long t0, int nt, int ci0, int ci1, float *V, int NR);
void dn_wino_out_avx2(const dn_wino_geom *g, const float *M, long t0, int nt, int co0, int co1,
                      const float *bias, const float *res, int relu, float *y);
#endif
