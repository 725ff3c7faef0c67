/* The int8 conv op behind dn_conv_op_new_int8 (contract: kernels/int8.h):
 * weight quantization and packing per ISA, the u8 input quantization pass
 * (NCHW or blocked fp32 -> u8 NCHW16c with a zero border of pad), and the
 * parallel row loop over the x86 kernels; the scalar path is the spec itself. */
#include "kernels/int8.h"
#include <stdlib.h>
#include <string.h>

struct dn_i8op {
    dn_conv_desc d;
    dn_isa isa;               /* AVX512 (with VNNI), AVX2 or SCALAR */
    int cinp, coutp;
    float act_scale, inv_scale;
    float *mult, *bias;       /* [coutp], zero padded */
    float *ws;                /* [cout] weight scales */
    int8_t *wq;               /* OIHW int8 */
    int8_t *Wv;               /* VNNI layout (AVX512) */
    int16_t *W2;              /* int16 pair layout (AVX2) */
    char name[32];
};

static int rup16(int v) { return (v + 15) / 16 * 16; }

/* wq, ws, mult, bias and the packed layout from fp32 w / bias */
static void i8_pack(dn_i8op *q, const float *w, const float *bias) {
    const dn_conv_desc *d = &q->d;
    const int kk = d->kh * d->kw, CIB = q->cinp / 16;
    dn_int8_quantize_weights(d, w, q->wq, q->ws);
    for (int co = 0; co < q->coutp; co++) {
        q->mult[co] = co < d->cout ? q->act_scale * q->ws[co] : 0.0f;
        q->bias[co] = co < d->cout && bias ? bias[co] : 0.0f;
    }
    size_t nw = (size_t)q->coutp * q->cinp * kk;
    if (q->Wv) memset(q->Wv, 0, nw);
    if (q->W2) memset(q->W2, 0, nw * sizeof(int16_t));
    for (int co = 0; co < d->cout; co++)
        for (int ci = 0; ci < d->cin; ci++)
            for (int k = 0; k < kk; k++) {
                int8_t v = q->wq[((size_t)co * d->cin + ci) * kk + k];
                size_t blk = (((size_t)(co / 16) * CIB + ci / 16) * kk + k) * 256;
                int c = ci % 16, o = co % 16;
                if (q->Wv) q->Wv[blk + (c / 4) * 64 + o * 4 + c % 4] = v;
                if (q->W2) q->W2[blk + (c / 2) * 32 + o * 2 + c % 2] = v;
            }
}

dn_i8op *dn_i8op_new(const dn_conv_desc *d, const float *w, const float *bias, float act_scale, dn_isa isa) {
    if (!(act_scale > 0.0f) || !isfinite(act_scale) || !isfinite(1.0f / act_scale)) {
        dn_fail(DN_ERR_ARG, "conv int8: activation scale %g is not a finite positive number", (double)act_scale);
        return NULL;
    }
    if ((size_t)d->cin * d->kh * d->kw > 60000) { /* keeps every s32 sum below 2^31 (255 * 127 * K) */
        dn_fail(DN_ERR_ARG, "conv int8: %d x %d x %d inputs per output exceed the s32 accumulator", d->cin, d->kh, d->kw);
        return NULL;
    }
    dn_i8op *q = dn_calloc(1, sizeof *q);
    if (!q) return NULL;
    q->d = *d;
    q->cinp = rup16(d->cin);
    q->coutp = rup16(d->cout);
    q->act_scale = act_scale;
    q->inv_scale = 1.0f / act_scale;
    unsigned f = dn_cpu_features();
    if (isa >= DN_ISA_AVX512 && (f & DN_CPU_AVX512VNNI) && (f & DN_CPU_AVX512BW)) q->isa = DN_ISA_AVX512;
    else if (isa >= DN_ISA_AVX2 && (f & DN_CPU_AVX2) && (f & DN_CPU_FMA)) q->isa = DN_ISA_AVX2;
    else q->isa = DN_ISA_SCALAR;
    size_t nq = (size_t)d->cout * d->cin * d->kh * d->kw, np = (size_t)q->coutp * q->cinp * d->kh * d->kw;
    if (!(q->mult = dn_alloc_aligned((size_t)q->coutp * sizeof(float))) ||
        !(q->bias = dn_alloc_aligned((size_t)q->coutp * sizeof(float))) ||
        !(q->ws = dn_malloc((size_t)d->cout * sizeof(float))) || !(q->wq = dn_malloc(nq)))
        goto fail;
    if (q->isa == DN_ISA_AVX512 && !(q->Wv = dn_alloc_aligned(np))) goto fail;
    if (q->isa == DN_ISA_AVX2 && !(q->W2 = dn_alloc_aligned(np * sizeof(int16_t)))) goto fail;
    snprintf(q->name, sizeof q->name, "%s", q->isa == DN_ISA_AVX512 ? "int8-vnni-avx512"
                                            : q->isa == DN_ISA_AVX2 ? "int8-avx2" : "int8-ref");
    i8_pack(q, w, bias);
    return q;
fail:
    dn_i8op_free(q);
    return NULL;
}

void dn_i8op_free(dn_i8op *q) {
    if (!q) return;
    dn_free_aligned(q->mult);
    dn_free_aligned(q->bias);
    free(q->ws);
    free(q->wq);
    dn_free_aligned(q->Wv);
    dn_free_aligned(q->W2);
    free(q);
}

void dn_i8op_set_weights(dn_i8op *q, const float *w, const float *bias) { i8_pack(q, w, bias); }
const char *dn_i8op_name(const dn_i8op *q) { return q->name; }
int dn_i8op_blocked(const dn_i8op *q) {
    return q->isa == DN_ISA_AVX512 && q->d.cin % 16 == 0 && q->d.cout % 16 == 0;
}

/* bytes of the u8 input buffer: n images of cinp x (h + 2 pad) x (w + 2 pad) */
static size_t xq_bytes(const dn_i8op *q, int n, int h, int w) {
    return (size_t)n * q->cinp * (size_t)(h + 2 * q->d.pad) * (size_t)(w + 2 * q->d.pad) + 64;
}
size_t dn_i8op_scratch(const dn_i8op *q, int n, int h, int w) { return q->isa == DN_ISA_SCALAR ? 0 : xq_bytes(q, n, h, w); }
size_t dn_i8op_blocked_scratch(const dn_i8op *q, int n, int h, int w, int xb) {
    (void)xb; /* the u8 copy keeps a border of pad whatever the input's border */
    return dn_i8op_blocked(q) ? xq_bytes(q, n, h, w) : 0;
}

typedef struct {
    const dn_i8op *q;
    dn_i8_geom g;
    const float *x, *res;
    float *y;
    uint8_t *xq;
    int n, h, w, xb, relu, nb, phase;   /* xb < 0: NCHW input */
} i8_job;

/* phase 0: one (image, channel block) plane of the u8 buffer per work item */
static void quant_plane(const i8_job *j, long it) {
    const dn_i8op *q = j->q;
    const int CIB = q->cinp / 16, p = q->d.pad, hp = j->g.hp, wp = j->g.wp;
    const int img = (int)(it / CIB), cib = (int)(it % CIB);
    uint8_t *d = j->xq + (size_t)img * j->g.img + (size_t)cib * hp * wp * 16;
    if (j->xb >= 0) { /* blocked fp32 input with border xb >= pad: rows of the padded window */
        const int xwp = j->w + 2 * j->xb, o = j->xb - p;
        const float *s = j->x + ((size_t)img * CIB + cib) * (size_t)(j->h + 2 * j->xb) * xwp * 16;
        for (int yy = 0; yy < hp; yy++)
            dn_i8_quant_blk_avx512(s + ((size_t)(yy + o) * xwp + o) * 16, (size_t)wp, q->inv_scale,
                                   d + (size_t)yy * wp * 16);
        return;
    }
    memset(d, 0, (size_t)hp * wp * 16);
    for (int l = 0; l < 16 && cib * 16 + l < q->d.cin; l++) {
        const float *s = j->x + ((size_t)img * q->d.cin + cib * 16 + l) * j->h * j->w;
        for (int yy = 0; yy < j->h; yy++)
            for (int xx = 0; xx < j->w; xx++)
                d[((size_t)(yy + p) * wp + xx + p) * 16 + l] = dn_q_u8(s[(size_t)yy * j->w + xx], q->inv_scale);
    }
}

static void i8_phase(void *va, int ith, int nth) {
    const i8_job *j = va;
    const dn_i8op *q = j->q;
    long b, e;
    if (j->phase == 0) {
        dn_split((long)j->n * (q->cinp / 16), ith, nth, &b, &e);
        for (long it = b; it < e; it++) quant_plane(j, it);
        return;
    }
    const int groups = q->coutp / 16 / j->nb, oh = j->g.oh;
    dn_split((long)j->n * groups * oh, ith, nth, &b, &e);
    for (long it = b; it < e; it++) {
        long r = it / oh;
        int img = (int)(r / groups), cob = (int)(r % groups) * j->nb, oy = (int)(it % oh);
        if (q->Wv) dn_i8_row_avx512(&j->g, q->Wv, j->xq, img, cob, j->nb, oy, q->mult, q->bias, j->res, j->relu, j->y);
        else dn_i8_row_avx2(&j->g, q->W2, j->xq, img, cob, oy, q->mult, q->bias, j->res, j->relu, j->y);
    }
}

static void i8_go(const dn_i8op *q, const float *x, int n, int h, int w, int xb, const float *res, int relu, float *y,
                  int yb, dn_pool *pool, void *scratch) {
    const dn_conv_desc *d = &q->d;
    i8_job j = {0};
    j.q = q;
    j.x = x; j.res = res; j.y = y;
    j.n = n; j.h = h; j.w = w; j.xb = xb; j.relu = relu;
    j.g = (dn_i8_geom){q->cinp, q->coutp, d->cout, d->kh, d->kw, d->stride,
                       dn_conv_out(h, d->kh, d->stride, d->pad), dn_conv_out(w, d->kw, d->stride, d->pad),
                       h + 2 * d->pad, w + 2 * d->pad, 0, yb};
    j.g.img = (size_t)q->cinp * j.g.hp * j.g.wp;
    j.xq = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    j.nb = q->Wv && (q->coutp / 16) % 2 == 0 ? 2 : 1;
    dn_pool_run(pool, i8_phase, &j);
    j.phase = 1;
    dn_pool_run(pool, i8_phase, &j);
}

void dn_i8op_run(const dn_i8op *q, const float *x, int n, int h, int w, const float *res, int relu, float *y,
                 dn_pool *pool, void *scratch) {
    const dn_conv_desc *d = &q->d;
    int oh = dn_conv_out(h, d->kh, d->stride, d->pad), ow = dn_conv_out(w, d->kw, d->stride, d->pad);
    if (n <= 0 || oh <= 0 || ow <= 0) return;
    if (q->isa == DN_ISA_SCALAR) {
        dn_conv2d_int8_ref(d, x, n, h, w, q->inv_scale, q->wq, q->mult, q->bias, res, relu, y);
        return;
    }
    void *own = NULL;
    if (!scratch) {
        if (!(own = dn_alloc_aligned(xq_bytes(q, n, h, w)))) {
            size_t ny = (size_t)n * d->cout * oh * ow;
            for (size_t i = 0; i < ny; i++) y[i] = NAN;
            dn_fail_prefix(DN_ERR_NOMEM, "conv scratch");
            return;
        }
        scratch = own;
    }
    i8_go(q, x, n, h, w, -1, res, relu, y, -1, pool, scratch);
    dn_free_aligned(own);
}

void dn_i8op_run_blocked(const dn_i8op *q, const float *x, int n, int h, int w, int xb, const float *res, int relu,
                         float *y, int yb, dn_pool *pool, void *scratch) {
    const dn_conv_desc *d = &q->d;
    if (n <= 0 || dn_conv_out(h, d->kh, d->stride, d->pad) <= 0 || dn_conv_out(w, d->kw, d->stride, d->pad) <= 0) return;
    i8_go(q, x, n, h, w, xb, res, relu, y, yb, pool, scratch);
}
