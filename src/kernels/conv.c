/* Convolution operator: owns a copy of the weights (and, for fast
 * implementations, packed forms of them) and dispatches to an implementation.
 * See kernels.h for the contract. */
#include "kernels/kern_int.h"
#include "kernels/int8.h"
#include <stdlib.h>
#include <math.h>
#include <string.h>

struct dn_conv_op {
    dn_conv_desc d;
    dn_conv_impl impl;        /* resolved implementation (never AUTO) */
    dn_isa isa;
    float *w;                 /* OIHW copy */
    float *bias;              /* [cout] or NULL */
    char name[48];
    const dn_ukr *u;          /* fp32 micro-kernel (direct / Winograd GEMMs) or the bf16 one */
    const dn_ukr *ud;         /* micro-kernel of the direct path; Ap = its packed weights */
    int direct_bf16;          /* Ap is bf16 (dn_gemm_pack_a_bf16) */
    float *Wd16;              /* fp32 direct path on AVX-512 with cin, cout % 16 == 0: NCHW16c
                               * kernel weights [cout/16][cin/16][kh][kw][16][16] (Ap unused) */
    uint16_t *Wd16b;          /* same for the bf16 direct path: [..][8 ci pairs][16 co][2] bf16 */
    float *Wb;                /* blocked-activation weights (dn_conv_op_run_blocked) of a direct op
                               * whose NCHW path is the GEMM: Wd16's layout if cin % 16 == 0 (1x1
                               * strided downsample), else [cout/16][cin][kh][kw][16] (the stem) */
    float *Ap;
    /* WINOGRAD F(4x4,3x3): Uw = 36 packed A matrices (cout x cin) of G g G^T,
     * each uw_stride floats; Ap above stays for inputs too small to tile. */
    float *Uw;
    size_t uw_stride;
    void (*wino_in)(const dn_wino_geom *, const float *, long, int, int, int, float *, int);
    void (*wino_out)(const dn_wino_geom *, const float *, long, int, int, int, const float *, const float *, int,
                     float *);
    dn_i8op *i8;              /* DN_CONV_INT8 (dn_conv_op_new_int8, kernels/int8.h): everything of that path */
};

int dn_wino_min_tiles = 0;

/* U[xi = r*6+k][co][ci] = (G g G^T)[r][k], computed in double. */
static const double WG[6][3] = {{1.0 / 4, 0, 0},           {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                {1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};
/* Allocates Uw (36 packed A matrices, zero-padded rows stay zero for good). */
static dn_status wino_alloc(dn_conv_op *op) {
    op->uw_stride = dn_gemm_packed_a_floats(op->u, op->d.cout, op->d.cin);
    op->Uw = dn_alloc_aligned(36 * op->uw_stride * sizeof(float));
    if (!op->Uw) return DN_ERR_NOMEM;
    memset(op->Uw, 0, 36 * op->uw_stride * sizeof(float));
    if (op->isa == DN_ISA_AVX512) { op->wino_in = dn_wino_in_avx512; op->wino_out = dn_wino_out_avx512; }
    else { op->wino_in = dn_wino_in_avx2; op->wino_out = dn_wino_out_avx2; }
    return DN_OK;
}

/* Writes U = G g G^T of OIHW weights w straight into the packed panels of Uw
 * (the layout dn_gemm_pack_a gives: Uw[xi][(co/MR)*cin + ci][co%MR]); no
 * temporary, so repacking every training step does not allocate. */
static void wino_pack(dn_conv_op *op, const float *w) {
    const int cin = op->d.cin, cout = op->d.cout, MR = op->u->mr;
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++) {
            const float *g = w + ((size_t)co * cin + ci) * 9;
            float *dst = op->Uw + ((size_t)(co / MR) * cin + ci) * MR + co % MR;
            double t[6][3];
            for (int r = 0; r < 6; r++)
                for (int c = 0; c < 3; c++)
                    t[r][c] = WG[r][0] * g[0 * 3 + c] + WG[r][1] * g[1 * 3 + c] + WG[r][2] * g[2 * 3 + c];
            for (int r = 0; r < 6; r++)
                for (int k = 0; k < 6; k++)
                    dst[(size_t)(r * 6 + k) * op->uw_stride] =
                        (float)(t[r][0] * WG[k][0] + t[r][1] * WG[k][1] + t[r][2] * WG[k][2]);
        }
}

/* dst[cob][cib][k][ci%16][co%16] = w[co][ci][k], one 16 x 16 x kk block at
 * a time (it stays in L1; no divisions): training re-packs every step. */
static void pack_d16(const dn_conv_desc *d, const float *w, float *dst) {
    const int CIB = d->cin / 16, kk = d->kh * d->kw;
    for (int cob = 0; cob < d->cout / 16; cob++)
        for (int cib = 0; cib < CIB; cib++) {
            float *blk = dst + ((size_t)cob * CIB + cib) * kk * 256;
            for (int col = 0; col < 16; col++) {
                const float *src = w + ((size_t)(cob * 16 + col) * d->cin + cib * 16) * kk;
                for (int cil = 0; cil < 16; cil++, src += kk)
                    for (int k = 0; k < kk; k++) blk[(k * 16 + cil) * 16 + col] = src[k];
            }
        }
}

/* Fills every packed form the op allocated (Wd16, Wd16b, Wb, Ap, Uw) from OIHW
 * weights w. Used at creation and by dn_conv_op_set_weights. */
static void pack_weights(dn_conv_op *op, const float *w) {
    const dn_conv_desc *d = &op->d;
    const int CIB = d->cin / 16, kk = d->kh * d->kw, K = d->cin * kk;
    if (op->Wd16) pack_d16(d, w, op->Wd16);
    if (op->Wb && d->cin % 16 == 0) pack_d16(d, w, op->Wb);
    else if (op->Wb) /* first-layer form: Wb[cob][ci][k][co%16] */
        for (int co = 0; co < d->cout; co++)
            for (int ci = 0; ci < d->cin; ci++)
                for (int k = 0; k < kk; k++)
                    op->Wb[(((size_t)(co / 16) * d->cin + ci) * kk + k) * 16 + co % 16] = w[((size_t)co * d->cin + ci) * kk + k];
    if (op->Wd16b)
        for (int co = 0; co < d->cout; co++)
            for (int ci = 0; ci < d->cin; ci++)
                for (int k = 0; k < kk; k++)
                    op->Wd16b[(((size_t)(co / 16) * CIB + ci / 16) * kk + k) * 256 + (ci % 16 / 2) * 32 + (co % 16) * 2 +
                              ci % 2] = dn_f32_to_bf16(w[((size_t)co * d->cin + ci) * kk + k]);
    if (op->Ap) {
        if (op->direct_bf16) dn_gemm_pack_a_bf16(op->ud, d->cout, K, w, K, (uint16_t *)(void *)op->Ap);
        else dn_gemm_pack_a(op->u, d->cout, K, w, K, 0, 1.0f, op->Ap);
    }
    if (op->Uw) wino_pack(op, w);
}

/* Tiles per chunk: V and M of a chunk (36 x (cin + cout) x Tb floats) within
 * ~3 MB so they stay in L2/L3, at least one panel, a multiple of NR. */
static int wino_chunk(const dn_conv_op *op) {
    int NR = op->u->nr;
    long tb = (3L << 20) / (36L * 4 * (op->d.cin + op->d.cout));
    tb = tb / NR * NR;
    if (tb < NR) tb = NR;
    if (tb > 2048) tb = 2048;
    return (int)tb;
}

static dn_status check_desc(const dn_conv_desc *d) {
    if (!d) return dn_fail(DN_ERR_ARG, "conv: NULL descriptor");
    if (d->cin <= 0 || d->cout <= 0 || d->kh <= 0 || d->kw <= 0 || d->stride <= 0 || d->pad < 0 ||
        d->cin > (1 << 16) || d->cout > (1 << 16) || d->kh > 64 || d->kw > 64 || d->pad >= 64)
        return dn_fail(DN_ERR_ARG, "conv: invalid descriptor (cin %d cout %d k %dx%d stride %d pad %d)",
                       d->cin, d->cout, d->kh, d->kw, d->stride, d->pad);
    return DN_OK;
}

static int d16_eligible(const dn_conv_op *op);
static size_t d16_scratch(const dn_conv_op *op, int n, int h, int w);

dn_conv_op *dn_conv_op_new(const dn_conv_desc *d, const float *w, const float *bias, dn_conv_impl impl) {
    if (check_desc(d) != DN_OK) return NULL;
    if (!w) { dn_fail(DN_ERR_ARG, "conv: NULL weights"); return NULL; }
    dn_conv_op *op = dn_calloc(1, sizeof *op);
    if (!op) return NULL;
    op->d = *d;
    size_t nw = (size_t)d->cout * d->cin * d->kh * d->kw;
    op->w = dn_malloc(nw * sizeof(float));
    if (!op->w) goto fail;
    memcpy(op->w, w, nw * sizeof(float));
    if (bias) {
        op->bias = dn_malloc((size_t)d->cout * sizeof(float));
        if (!op->bias) goto fail;
        memcpy(op->bias, bias, (size_t)d->cout * sizeof(float));
    }
    op->isa = dn_kernels_isa();
    op->u = dn_ukr_for(op->isa);
    switch (impl) {
    case DN_CONV_REF:
        op->impl = DN_CONV_REF;
        break;
    case DN_CONV_AUTO:
    case DN_CONV_DIRECT:
        op->impl = op->u ? DN_CONV_DIRECT : DN_CONV_REF;
        break;
    case DN_CONV_WINOGRAD: /* 3x3 stride 1 only; other shapes use the direct path */
        op->impl = !op->u ? DN_CONV_REF
                 : d->kh == 3 && d->kw == 3 && d->stride == 1 ? DN_CONV_WINOGRAD : DN_CONV_DIRECT;
        break;
    case DN_CONV_BF16:
    case DN_CONV_WINOGRAD_BF16: /* Winograd (fp32) where it pays on 3x3 stride 1, bf16 direct otherwise */
        if (op->isa < DN_ISA_AVX512 || !(dn_cpu_features() & DN_CPU_AVX512BF16)) {
            dn_fail(DN_ERR_UNSUPPORTED, "conv: bf16 needs a CPU with AVX512_BF16 (this one: %s%s)",
                    dn_isa_name(op->isa), dn_cpu_features() & DN_CPU_AVX512BF16 ? "" : ", no AVX512_BF16");
            goto fail;
        }
        op->impl = impl == DN_CONV_WINOGRAD_BF16 && d->kh == 3 && d->kw == 3 && d->stride == 1 ? DN_CONV_WINOGRAD_BF16
                                                                                         : DN_CONV_BF16;
        if (op->impl == DN_CONV_BF16) op->u = &dn_ukr_bf16_avx512;
        op->ud = &dn_ukr_bf16_avx512;
        op->direct_bf16 = 1;
        break;
    default:
        dn_fail(DN_ERR_UNSUPPORTED, "conv: implementation %d not available", (int)impl);
        goto fail;
    }
    /* allocate the packed forms of the chosen path, then fill them */
    int wino = op->impl == DN_CONV_WINOGRAD || op->impl == DN_CONV_WINOGRAD_BF16;
    size_t nw16 = (size_t)d->cout * d->cin * d->kh * d->kw;
    int K = d->cin * d->kh * d->kw;
    if ((op->impl == DN_CONV_DIRECT || op->impl == DN_CONV_WINOGRAD) && d16_eligible(op)) {
        op->ud = op->u;
        if (!(op->Wd16 = dn_alloc_aligned(nw16 * sizeof(float)))) goto fail;
        if (wino) snprintf(op->name, sizeof op->name, "winograd-f4x4-%s", op->u->name);
        else snprintf(op->name, sizeof op->name, "direct-nchw16c-avx512");
    } else if (op->impl == DN_CONV_DIRECT || op->impl == DN_CONV_WINOGRAD) {
        op->ud = op->u;
        if (!(op->Ap = dn_alloc_aligned(dn_gemm_packed_a_floats(op->u, d->cout, K) * sizeof(float)))) goto fail;
        snprintf(op->name, sizeof op->name, wino ? "winograd-f4x4-%s" : "direct-%s", op->u->name);
    } else if ((op->impl == DN_CONV_BF16 || op->impl == DN_CONV_WINOGRAD_BF16) && d16_eligible(op)) {
        if (!(op->Wd16b = dn_alloc_aligned(nw16 * sizeof(uint16_t)))) goto fail;
        if (wino) snprintf(op->name, sizeof op->name, "winograd-f4x4-%s+bf16", op->u->name);
        else snprintf(op->name, sizeof op->name, "bf16-nchw16c-avx512");
    } else if (op->impl == DN_CONV_BF16 || op->impl == DN_CONV_WINOGRAD_BF16) {
        size_t na = dn_gemm_pack_a_bf16(op->ud, d->cout, K, op->w, K, NULL);
        if (!(op->Ap = dn_alloc_aligned(na * sizeof(uint16_t)))) goto fail;
        if (wino) snprintf(op->name, sizeof op->name, "winograd-f4x4-%s+bf16", op->u->name);
        else snprintf(op->name, sizeof op->name, "%s", op->ud->name);
    } else {
        op->isa = DN_ISA_SCALAR;
        snprintf(op->name, sizeof op->name, "ref");
    }
    /* blocked-activation form for direct ops whose NCHW path is the GEMM */
    if (op->impl == DN_CONV_DIRECT && !op->Wd16 && op->isa >= DN_ISA_AVX512 && d->cout % 16 == 0 &&
        (d->cin % 16 == 0 || d->cin < 16) && !(op->Wb = dn_alloc_aligned(nw16 * sizeof(float))))
        goto fail;
    if (wino && wino_alloc(op)) goto fail;
    pack_weights(op, op->w);
    if (op->impl != DN_CONV_REF) { /* the packed forms are all a fast op needs: keep memory low */
        free(op->w);
        op->w = NULL;
    }
    return op;
fail:
    dn_conv_op_free(op);
    return NULL;
}

dn_conv_op *dn_conv_op_new_int8(const dn_conv_desc *d, const float *w, const float *bias, float act_scale) {
    if (check_desc(d) != DN_OK) return NULL;
    if (!w) { dn_fail(DN_ERR_ARG, "conv: NULL weights"); return NULL; }
    dn_conv_op *op = dn_calloc(1, sizeof *op);
    if (!op) return NULL;
    op->d = *d;
    op->impl = DN_CONV_INT8;
    op->isa = dn_kernels_isa();
    if (bias) {
        if (!(op->bias = dn_malloc((size_t)d->cout * sizeof(float)))) goto fail;
        memcpy(op->bias, bias, (size_t)d->cout * sizeof(float));
    }
    if (!(op->i8 = dn_i8op_new(d, w, bias, act_scale, op->isa))) goto fail;
    snprintf(op->name, sizeof op->name, "%s", dn_i8op_name(op->i8));
    return op;
fail:
    dn_conv_op_free(op);
    return NULL;
}

void dn_conv_op_free(dn_conv_op *op) {
    if (!op) return;
    dn_i8op_free(op->i8);
    free(op->w);
    free(op->bias);
    dn_free_aligned(op->Ap);
    dn_free_aligned(op->Uw);
    dn_free_aligned(op->Wd16);
    dn_free_aligned(op->Wd16b);
    dn_free_aligned(op->Wb);
    free(op);
}

dn_status dn_conv_op_set_weights(dn_conv_op *op, const float *w, const float *bias) {
    if (!op || !w) return dn_fail(DN_ERR_ARG, "conv op: NULL op or weights");
    if (!bias != !op->bias)
        return dn_fail(DN_ERR_ARG, "conv op: new weights %s a bias but the op was built %s one", bias ? "with" : "without",
                       op->bias ? "with" : "without");
    if (bias) memcpy(op->bias, bias, (size_t)op->d.cout * sizeof(float));
    if (op->i8) { dn_i8op_set_weights(op->i8, w, bias); return DN_OK; }
    if (op->w) memcpy(op->w, w, (size_t)op->d.cout * op->d.cin * op->d.kh * op->d.kw * sizeof(float));
    pack_weights(op, w);
    return DN_OK;
}

size_t dn_conv_op_scratch(const dn_conv_op *op, int n, int h, int w) {
    if (!op || op->impl == DN_CONV_REF) return 0;
    if (op->i8) return dn_i8op_scratch(op->i8, n, h, w);
    size_t direct = op->Wd16 || op->Wd16b ? d16_scratch(op, n, h, w) : dn_gemm_slab_bytes(op->u) * (size_t)dn_gemm_slabs();
    if (op->impl != DN_CONV_WINOGRAD && op->impl != DN_CONV_WINOGRAD_BF16) return direct;
    size_t wino = (size_t)36 * (op->d.cin + op->d.cout) * wino_chunk(op) * sizeof(float) + 64;
    return wino > direct ? wino : direct;
}

/* The NCHW16c direct kernel: AVX-512, channel counts in whole blocks of 16, and
 * a spatial kernel (a strided 1x1 conv reads a quarter of its input: the im2col
 * path, which gathers just those pixels, is faster there). */
static int d16_eligible(const dn_conv_op *op) {
    return op->isa >= DN_ISA_AVX512 && op->d.cin % 16 == 0 && op->d.cout % 16 == 0 && op->d.kh * op->d.kw > 1 &&
           !dn_d16_disable;
}
int dn_d16_disable = 0;
int dn_d16_narrow_disable = 0;

/* Floats of one image's padded, channel-blocked input plus the slack a partial
 * 14-pixel block may read past its last row, rounded to a cache line. */
static size_t d16_img_floats(const dn_conv_op *op, int h, int w) {
    const dn_conv_desc *d = &op->d;
    size_t f = (size_t)d->cin * (h + 2 * d->pad) * (w + 2 * d->pad) + (size_t)14 * d->stride * 16 + 16;
    return (f + 15) & ~(size_t)15;
}

/* Two modes (d16_run): all images packed into one buffer (few images), or one
 * slab per worker thread holding the image it is on. */
static size_t d16_scratch(const dn_conv_op *op, int n, int h, int w) {
    size_t slabs = (size_t)dn_gemm_slabs();
    return (n > (int)slabs ? (size_t)n : slabs) * d16_img_floats(op, h, w) * sizeof(float) + 64;
}

typedef struct {
    const dn_conv_op *op;
    const dn_d16_geom *g;
    const float *x, *res;
    float *xp, *y;
    int n, relu, phase;
    size_t img_floats;
    int nslab;            /* per-worker mode: workers beyond the scratch's slabs stay idle */
    int imgs;             /* phase 3: images per dn_direct16_rows_avx512 call */
} d16_job;

static void d16_pack(const d16_job *j, const float *x, int img, int cib, float *xp) {
    if (j->op->Wd16b) dn_direct16_pack_bf16_avx512(j->g, x, img, cib, (uint16_t *)(void *)xp);
    else dn_direct16_pack_avx512(j->g, x, img, cib, xp);
}
static void d16_row(const d16_job *j, const float *xp, int img, int cob, int oy, const float *res, float *y) {
    if (j->op->Wd16b)
        dn_direct16_row_bf16_avx512(j->g, j->op->Wd16b, (const uint16_t *)(const void *)xp, img, cob, oy, j->op->bias,
                                    res, j->relu, y);
    else
        dn_direct16_row_avx512(j->g, j->op->Wd16, xp, img, cob, oy, j->op->bias, res, j->relu, y);
}
/* zero the slack after an image's rows (bf16 buffers hold half as many bytes) */
static void d16_zero_slack(const d16_job *j, float *slab) {
    const dn_d16_geom *g = j->g;
    size_t rows = (size_t)g->cin * g->hp * g->wp;
    float *sl = j->op->Wd16b ? (float *)(void *)((uint16_t *)(void *)slab + rows) : slab + rows;
    for (size_t i = 0; i < (size_t)14 * g->stride * 16 + 16 && sl + i < slab + j->img_floats; i++) sl[i] = 0.0f;
}

static void d16_phase(void *va, int ith, int nth) {
    d16_job *j = va;
    const dn_d16_geom *g = j->g;
    const int CIB = g->cin / 16, COB = g->cout / 16;
    long b, e;
    if (j->phase == 2) { /* per-worker images: pack into this worker's slab, then all its rows */
        if (nth > j->nslab) nth = j->nslab;
        if (ith >= nth) return;
        float *slab = j->xp + (size_t)ith * j->img_floats;
        d16_zero_slack(j, slab);
        dn_split(j->n, ith, nth, &b, &e);
        size_t xin = (size_t)g->cin * g->h * g->w, yout = (size_t)g->cout * g->oh * g->ow;
        for (long img = b; img < e; img++) {
            const float *xi = j->x + img * xin;
            const float *ri = j->res ? j->res + img * yout : NULL;
            float *yi = j->y + img * yout;
            for (int cib = 0; cib < CIB; cib++) d16_pack(j, xi, 0, cib, slab);
            for (int cob = 0; cob < COB; cob++)
                for (int oy = 0; oy < g->oh; oy++) d16_row(j, slab, 0, cob, oy, ri, yi);
        }
    } else if (j->phase == 0) { /* shared buffer: pack every image */
        dn_split((long)j->n * CIB, ith, nth, &b, &e);
        for (long it = b; it < e; it++) d16_pack(j, j->x, (int)(it / CIB), (int)(it % CIB), j->xp);
    } else if (j->phase == 1) { /* shared buffer: rows of every image */
        dn_split((long)j->n * COB * g->oh, ith, nth, &b, &e);
        for (long it = b; it < e; it++) {
            long r = it / g->oh;
            d16_row(j, j->xp, (int)(r / COB), (int)(r % COB), (int)(it % g->oh), j->res, j->y);
        }
    } else { /* shared buffer, narrow rows: groups of imgs images per call, output-channel block
              * major so one block's weights (L2-sized) serve every image */
        long ng = (j->n + j->imgs - 1) / j->imgs;
        dn_split((long)COB * ng * g->oh, ith, nth, &b, &e);
        for (long it = b; it < e; it++) {
            long r = it / g->oh;
            int i0 = (int)(r % ng) * j->imgs, cob = (int)(r / ng);
            dn_direct16_rows_avx512(g, j->op->Wd16, j->xp, i0, j->n - i0 < j->imgs ? j->n - i0 : j->imgs, cob,
                                    (int)(it % g->oh), j->op->bias, j->res, j->relu, j->y);
        }
    }
}

static void d16_run(const dn_conv_op *op, const float *x, int n, int h, int w, const float *res, int relu, float *y,
                    dn_pool *pool, void *scratch, int oh, int ow) {
    const dn_conv_desc *d = &op->d;
    dn_d16_geom g = {d->cin, d->cout, d->kh, d->kw, d->stride, d->pad, h, w, oh, ow, h + 2 * d->pad, w + 2 * d->pad, 0};
    float *xp = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    int nth = dn_pool_size(pool), slabs = dn_gemm_slabs();
    d16_job j = {op, &g, x, res, xp, y, n, relu, 0, d16_img_floats(op, h, w), slabs, 0};
    if (nth > slabs) nth = slabs;
    /* Narrow rows (ow <= 3: layer4 of a 64 px input) give the row kernel
     * too few accumulators per weight load; there (fp32), pack all images and
     * compute rows of several images per call, output-channel block major. */
    j.imgs = op->Wd16 ? dn_direct16_imgs_per_call(ow) : 0;
    int narrow = n > 1 && j.imgs > 0 && !dn_d16_narrow_disable;
    if (!narrow && (nth <= 1 || n % nth == 0 || n >= 4 * nth)) {
        /* each worker keeps its own image's input in cache (L2) from packing to use */
        j.phase = 2;
        dn_pool_run(pool, d16_phase, &j);
        return;
    }
    /* few images: pack all, then split the rows of all images over the workers */
    size_t rows = (size_t)n * d->cin * g.hp * g.wp;
    float *sl = op->Wd16b ? (float *)(void *)((uint16_t *)(void *)xp + rows) : xp + rows;
    for (size_t i = 0; i < (size_t)14 * d->stride * 16 + 16; i++) sl[i] = 0.0f;
    dn_pool_run(pool, d16_phase, &j);
    j.phase = narrow ? 3 : 1;
    dn_pool_run(pool, d16_phase, &j);
}

/* Winograd's GEMM work is 36 * Tpad per (cout, cin) pair against 9 * n*oh*ow for
 * the direct path, Tpad = tiles rounded up to the micro-kernel's NR columns; it
 * pays when that ratio is clearly below 1 (transforms cost the rest). Small
 * inputs (e.g. 7x7 at batch 1: 4 tiles in a 32-column panel) stay direct. */
static int wino_pays(const dn_conv_op *op, int n, int oh, int ow) {
    long T = (long)n * ((oh + 3) / 4) * ((ow + 3) / 4);
    if (dn_wino_min_tiles > 0) return T >= dn_wino_min_tiles;
    long NR = op->u->nr, Tpad = (T + NR - 1) / NR * NR;
    return 36 * Tpad * 10 < 9L * n * oh * ow * 7; /* ratio < 0.7 */
}

typedef struct {
    const dn_conv_op *op;
    const dn_wino_geom *g;
    const float *x, *res;
    float *y, *V, *M;
    int relu, phase, nt;
    long t0;
} wino_job;

static void wino_phase(void *va, int ith, int nth) {
    wino_job *j = va;
    const dn_conv_op *op = j->op;
    const dn_wino_geom *g = j->g;
    long b, e;
    if (j->phase == 0) {
        dn_split(g->cin, ith, nth, &b, &e);
        if (b < e) op->wino_in(g, j->x, j->t0, j->nt, (int)b, (int)e, j->V, op->u->nr);
    } else if (j->phase == 1) {
        const int MR = op->u->mr, NR = op->u->nr, np = (g->cout + MR - 1) / MR;
        dn_split(36L * np, ith, nth, &b, &e);
        for (long it = b; it < e; it++) {
            int xi = (int)(it / np), mp = (int)(it % np);
            const float *a = op->Uw + xi * op->uw_stride + (size_t)mp * g->cin * MR;
            const float *vb = j->V + (size_t)xi * g->cin * g->Tpad;
            float *c = j->M + (size_t)xi * g->cout * g->Tpad + (size_t)mp * MR * g->Tpad;
            int mr = g->cout - mp * MR < MR ? g->cout - mp * MR : MR;
            for (int jp = 0; jp * NR < j->nt; jp++) {
                int nr = j->nt - jp * NR < NR ? j->nt - jp * NR : NR;
                op->u->fn(g->cin, a, vb + (size_t)jp * g->cin * NR, c + jp * NR, g->Tpad, mr, nr, 0, NULL, NULL, 0, 0);
            }
        }
    } else {
        dn_split(g->cout, ith, nth, &b, &e);
        if (b < e) op->wino_out(g, j->M, j->t0, j->nt, (int)b, (int)e, op->bias, j->res, j->relu, j->y);
    }
}

static void wino_run(const dn_conv_op *op, const float *x, int n, int h, int w, const float *res, int relu,
                     float *y, dn_pool *pool, void *scratch, int oh, int ow) {
    dn_wino_geom g = {op->d.cin, op->d.cout, h, w, op->d.pad, oh, ow, (oh + 3) / 4, (ow + 3) / 4, 0};
    const int NR = op->u->nr, tb = wino_chunk(op);
    long T = (long)n * g.th * g.tw;
    g.Tpad = (int)((T < tb ? (T + NR - 1) / NR * NR : tb));
    wino_job j = {op, &g, x, res, y, (float *)scratch, (float *)scratch + (size_t)36 * g.cin * g.Tpad, relu, 0, 0, 0};
    for (long t0 = 0; t0 < T; t0 += g.Tpad) {
        j.t0 = t0;
        j.nt = (int)(T - t0 < g.Tpad ? T - t0 : g.Tpad);
        for (j.phase = 0; j.phase < 3; j.phase++) dn_pool_run(pool, wino_phase, &j);
    }
}

void dn_conv_op_run(const dn_conv_op *op, const float *x, int n, int h, int w, const float *res, int relu,
                    float *y, dn_pool *pool, void *scratch) {
    if (op->impl == DN_CONV_REF) {
        dn_conv2d_ref(&op->d, x, n, h, w, op->w, op->bias, res, relu, y);
        return;
    }
    if (op->i8) {
        dn_i8op_run(op->i8, x, n, h, w, res, relu, y, pool, scratch);
        return;
    }
    const dn_conv_desc *d = &op->d;
    int oh = dn_conv_out(h, d->kh, d->stride, d->pad), ow = dn_conv_out(w, d->kw, d->stride, d->pad);
    if (n <= 0 || oh <= 0 || ow <= 0) return;
    void *own = NULL;
    if (!scratch) { /* convenience for callers without a plan; the engine passes scratch */
        own = dn_alloc_aligned(dn_conv_op_scratch(op, n, h, w));
        if (!own) { /* no result possible: NaN output, which callers' finiteness checks report */
            size_t ny = (size_t)n * d->cout * oh * ow;
            for (size_t i = 0; i < ny; i++) y[i] = NAN;
            dn_fail_prefix(DN_ERR_NOMEM, "conv scratch");
            return;
        }
        scratch = own;
    }
    if ((op->impl == DN_CONV_WINOGRAD || op->impl == DN_CONV_WINOGRAD_BF16) && wino_pays(op, n, oh, ow)) {
        wino_run(op, x, n, h, w, res, relu, y, pool, scratch, oh, ow);
        dn_free_aligned(own);
        return;
    }
    if (op->Wd16 || op->Wd16b) {
        d16_run(op, x, n, h, w, res, relu, y, pool, scratch, oh, ow);
        dn_free_aligned(own);
        return;
    }
    dn_gemm_plan p = {0};
    p.u = op->ud;
    p.M = d->cout; p.K = d->cin * d->kh * d->kw; p.N = n * oh * ow;
    p.Ap = op->Ap;
    p.bf16 = op->direct_bf16;
    p.cd = d; p.x = x; p.h = h; p.w = w; p.oh = oh; p.ow = ow;
    p.C = y; p.P = (long)oh * ow; p.ldc = p.P; p.cimg = (long)d->cout * p.P;
    p.R = res; p.bias = op->bias; p.relu = relu;
    dn_gemm_run(&p, pool, scratch);
    dn_free_aligned(own);
}

const char *dn_conv_op_impl_name(const dn_conv_op *op) { return op ? op->name : "(null)"; }

/* ------------------------------------------------------------ blocked activations */

int dn_conv_op_blocked(const dn_conv_op *op) {
    return op && ((op->impl == DN_CONV_DIRECT && (op->Wd16 || op->Wb)) || (op->i8 && dn_i8op_blocked(op->i8)));
}
int dn_conv_op_blocked_nchw_in(const dn_conv_op *op) { return dn_conv_op_blocked(op) && op->d.cin % 16 != 0; }

size_t dn_conv_op_blocked_scratch(const dn_conv_op *op, int n, int h, int w) {
    if (op && op->i8) return dn_i8op_blocked_scratch(op->i8, n, h, w, 1);
    if (!dn_conv_op_blocked_nchw_in(op)) return 0;
    return (size_t)n * op->d.cin * (h + 2 * op->d.pad) * (w + 2 * op->d.pad) * sizeof(float) + 64;
}

typedef struct {
    const dn_conv_op *op;
    const dn_d16_geom *g;
    const float *x, *xp, *res;
    float *y, *xpad;
    int n, relu, nb, phase;
} blk_conv_job;

static void blk_conv_phase(void *va, int ith, int nth) {
    const blk_conv_job *j = va;
    const dn_d16_geom *g = j->g;
    long b, e;
    if (j->phase == 0) { /* first layer: planar zero-padded copy of the NCHW input */
        dn_split((long)j->n * g->cin, ith, nth, &b, &e);
        const int p = g->pad;
        for (long pl = b; pl < e; pl++) {
            float *d = j->xpad + (size_t)pl * g->hp * g->wp;
            const float *s = j->x + (size_t)pl * g->h * g->w;
            memset(d, 0, (size_t)p * g->wp * sizeof(float));
            for (int yy = 0; yy < g->h; yy++) {
                float *dr = d + (size_t)(yy + p) * g->wp;
                memset(dr, 0, (size_t)p * sizeof(float));
                memcpy(dr + p, s + (size_t)yy * g->w, (size_t)g->w * sizeof(float));
                memset(dr + p + g->w, 0, (size_t)(g->wp - p - g->w) * sizeof(float));
            }
            memset(d + (size_t)(p + g->h) * g->wp, 0, (size_t)(g->hp - p - g->h) * g->wp * sizeof(float));
        }
        return;
    }
    const int groups = g->cout / 16 / j->nb;
    dn_split((long)j->n * groups * g->oh, ith, nth, &b, &e);
    const float *W = j->op->Wd16 ? j->op->Wd16 : j->op->Wb;
    for (long it = b; it < e; it++) {
        long r = it / g->oh;
        int img = (int)(r / groups), cob = (int)(r % groups) * j->nb, oy = (int)(it % g->oh);
        if (j->phase == 1)
            dn_direct16b_row_avx512(g, W, j->xp, img, cob, j->nb, oy, j->op->bias, j->res, j->relu, j->y);
        else
            dn_direct16s_row_avx512(g, W, j->xp, img, cob, j->nb, oy, j->op->bias, j->res, j->relu, j->y);
    }
}

dn_status dn_conv_op_run_blocked(const dn_conv_op *op, const float *x, int n, int h, int w, int xb_,
                                 const float *res, int relu, float *y, int yb, dn_pool *pool, void *scratch) {
    if (!dn_conv_op_blocked(op))
        return dn_fail(DN_ERR_ARG, "conv op %s: cannot run on blocked activations", op ? op->name : "(null)");
    const dn_conv_desc *d = &op->d;
    const int nchw_in = d->cin % 16 != 0, COB = d->cout / 16;
    if (!nchw_in && xb_ < d->pad)
        return dn_fail(DN_ERR_ARG, "conv op %s: blocked input border %d smaller than the conv's padding %d", op->name,
                       xb_, d->pad);
    if (yb < 0) return dn_fail(DN_ERR_ARG, "conv op %s: negative output border %d", op->name, yb);
    int oh = dn_conv_out(h, d->kh, d->stride, d->pad), ow = dn_conv_out(w, d->kw, d->stride, d->pad);
    if (n <= 0 || oh <= 0 || ow <= 0) return DN_OK;
    if (op->i8) {
        dn_i8op_run_blocked(op->i8, x, n, h, w, xb_, res, relu, y, yb, pool, scratch);
        return DN_OK;
    }
    dn_d16_geom g = {d->cin, d->cout, d->kh, d->kw, d->stride, d->pad, h, w, oh, ow, 0, 0, yb};
    blk_conv_job j = {op, &g, x, NULL, res, y, NULL, n, relu, 1, 0};
    if (nchw_in) {
        g.hp = h + 2 * d->pad; g.wp = w + 2 * d->pad;
        j.xpad = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
        j.xp = j.xpad;
        dn_pool_run(pool, blk_conv_phase, &j);
        j.nb = COB % 4 == 0 ? 4 : COB % 2 == 0 ? 2 : 1;
        j.phase = 2;
    } else {
        g.hp = h + 2 * xb_; g.wp = w + 2 * xb_;
        j.xp = x + ((size_t)(xb_ - d->pad) * g.wp + (xb_ - d->pad)) * 16;
        j.nb = COB % 2 == 0 ? 2 : 1;
        j.phase = 1;
    }
    dn_pool_run(pool, blk_conv_phase, &j);
    return DN_OK;
}
