/* Convolution operator: owns a copy of the weights (and, for fast
 * implementations, packed forms of them) and dispatches to an implementation.
 * See kernels.h for the contract. */
#include "kernels/kern_int.h"
#include <stdlib.h>
#include <string.h>

struct dn_conv_op {
    dn_conv_desc d;
    dn_conv_impl impl;        /* resolved implementation (never AUTO) */
    dn_isa isa;
    float *w;                 /* OIHW copy */
    float *bias;              /* [cout] or NULL */
    char name[48];
    const dn_ukr *u;          /* DIRECT: micro-kernel; Ap = packed weights */
    float *Ap;
};

static dn_status check_desc(const dn_conv_desc *d) {
    if (!d) return dn_fail(DN_ERR_ARG, "conv: NULL descriptor");
    if (d->cin <= 0 || d->cout <= 0 || d->kh <= 0 || d->kw <= 0 || d->stride <= 0 || d->pad < 0 ||
        d->cin > (1 << 16) || d->cout > (1 << 16) || d->kh > 64 || d->kw > 64 || d->pad >= 64)
        return dn_fail(DN_ERR_ARG, "conv: invalid descriptor (cin %d cout %d k %dx%d stride %d pad %d)",
                       d->cin, d->cout, d->kh, d->kw, d->stride, d->pad);
    return DN_OK;
}

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
    case DN_CONV_WINOGRAD: /* not implemented yet: the exact direct path */
        op->impl = op->u ? DN_CONV_DIRECT : DN_CONV_REF;
        break;
    default:
        dn_fail(DN_ERR_UNSUPPORTED, "conv: implementation %d not available", (int)impl);
        goto fail;
    }
    if (op->impl == DN_CONV_DIRECT) {
        int K = d->cin * d->kh * d->kw;
        op->Ap = dn_alloc_aligned(dn_gemm_packed_a_floats(op->u, d->cout, K) * sizeof(float));
        if (!op->Ap) goto fail;
        dn_gemm_pack_a(op->u, d->cout, K, op->w, K, 0, 1.0f, op->Ap);
        snprintf(op->name, sizeof op->name, "direct-%s", op->u->name);
    } else {
        op->isa = DN_ISA_SCALAR;
        snprintf(op->name, sizeof op->name, "ref");
    }
    return op;
fail:
    dn_conv_op_free(op);
    return NULL;
}

void dn_conv_op_free(dn_conv_op *op) {
    if (!op) return;
    free(op->w);
    free(op->bias);
    dn_free_aligned(op->Ap);
    free(op);
}

size_t dn_conv_op_scratch(const dn_conv_op *op, int n, int h, int w) {
    if (!op || op->impl == DN_CONV_REF) return 0;
    return dn_gemm_slab_bytes(op->u) * (size_t)dn_gemm_slabs();
}

void dn_conv_op_run(const dn_conv_op *op, const float *x, int n, int h, int w, const float *res, int relu,
                    float *y, dn_pool *pool, void *scratch) {
    if (op->impl == DN_CONV_REF) {
        dn_conv2d_ref(&op->d, x, n, h, w, op->w, op->bias, res, relu, y);
        return;
    }
    const dn_conv_desc *d = &op->d;
    int oh = dn_conv_out(h, d->kh, d->stride, d->pad), ow = dn_conv_out(w, d->kw, d->stride, d->pad);
    if (n <= 0 || oh <= 0 || ow <= 0) return;
    void *own = NULL;
    if (!scratch) { /* convenience for callers without a plan; the engine passes scratch */
        own = dn_alloc_aligned(dn_conv_op_scratch(op, n, h, w));
        if (!own) { dn_conv2d_ref(d, x, n, h, w, op->w, op->bias, res, relu, y); return; }
        scratch = own;
    }
    dn_gemm_plan p = {0};
    p.u = op->u;
    p.M = d->cout; p.K = d->cin * d->kh * d->kw; p.N = n * oh * ow;
    p.Ap = op->Ap;
    p.cd = d; p.x = x; p.h = h; p.w = w; p.oh = oh; p.ow = ow;
    p.C = y; p.P = (long)oh * ow; p.ldc = p.P; p.cimg = (long)d->cout * p.P;
    p.R = res; p.bias = op->bias; p.relu = relu;
    dn_gemm_run(&p, pool, scratch);
    dn_free_aligned(own);
}

const char *dn_conv_op_impl_name(const dn_conv_op *op) { return op ? op->name : "(null)"; }
