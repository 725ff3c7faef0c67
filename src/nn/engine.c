/* Inference engine: BN-folded conv plan + per-session buffers (see engine.h).
 *
 * Forward (eval mode, NCHW, batched):
 *   stem conv7x7/s2 (+folded BN bias + ReLU in the conv epilogue) -> maxpool 3x3/s2/p1
 *   -> BasicBlocks: t = relu(conv1(x)); r = down(x) or x; y = relu(conv2(t) + r)
 *      (the downsample branch is computed first so conv2 fuses add + ReLU)
 *   -> global average pool -> fc.
 * Activation buffers rotate among four block buffers; the stem output has its
 * own (largest) buffer. When every conv op can run on blocked activations
 * (kernels.h: fp32 direct on AVX-512), the plan is "blocked": activations stay
 * NCHW16c with a zero border of 1 from the stem to the pool (the border is the
 * next 3x3 conv's padding), so no conv packs its input or transposes its
 * output; stage outputs are converted to NCHW only when asked for (forward_to). The plan (ops, geometry) is shared and only read by
 * forwards; everything a forward writes is in the session. Nothing is allocated
 * after a session's constructor returns. */
#include "nn/engine.h"
#include "nn/arch.h"
#include "nn/quant.h"
#include "nn/quant_int8.h"
#include "kernels/int8.h"
#include "ood/ood.h"
#include "core/core.h"
#include <float.h>
#include <stdatomic.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct pconv {
    dn_conv_op *op;
    dn_conv_desc d;
    int ih, iw, oh, ow;
    int idx;              /* engine order (nn/quant.h dn_quant_conv_name) */
} pconv;

typedef struct pblock {
    pconv c1, c2, down;
    int has_down;
    int stage;            /* 1..4 */
} pblock;

/* The immutable, shared half of a session (engine.h): built once by
 * dn_session_new_ex, never written after that except for the reference count,
 * freed by whichever session drops the last reference. */
struct dn_plan {
    atomic_int refs;              /* sessions (and dn_plan_retain holders) using it */
    const dn_model *m;            /* borrowed: fc weights, num_classes, preprocessing */
    int in_h, in_w;
    pconv stem;
    int pool_h, pool_w;           /* maxpool output */
    pblock blocks[DN_MAX_BLOCKS];
    int nblocks;
    int stage_c[6], stage_h[6], stage_w[6];
    size_t blk_max;               /* floats of the largest per-image block activation */
    int blocked;                  /* activations NCHW16c + border 1 (file comment) */
    size_t stem_floats;           /* per-image stem output (blocked: dn_blk_floats, border 0) */
    char impl_name[48];
};

/* The per-session, mutable half: everything a forward writes. */
struct dn_session {
    dn_plan *p;                   /* one reference owned by this session */
    const dn_model *m;            /* == p->m */
    int max_batch, in_h, in_w;
    dn_pool *pool;
    float *a_stem;                /* max_batch x c0 x stem oh x ow */
    float *buf[4];                /* rotating block activations */
    float *feat;                  /* max_batch x feat_dim */
    float *logits;                /* max_batch x num_classes */
    float *input;                 /* max_batch x 3 x in_h x in_w */
    void *scratch;                /* conv scratch: the largest any op needs for max_batch */
    size_t scratch_bytes;
    dn_conv_observer observe;     /* NULL, or called with every conv's input (calibration) */
    void *observe_ctx;
    dn_policy policy;             /* decision policy classify applies (nn/policy.h) */
    int policy_bad;               /* the model's decision_policy record is unreadable: classify refuses */
};

/* ------------------------------------------------------------ options */

dn_status dn_conv_impl_parse(const char *s, dn_conv_impl *out) {
    static const struct { const char *name; dn_conv_impl impl; } t[] = {
        {"auto", DN_CONV_AUTO}, {"ref", DN_CONV_REF}, {"direct", DN_CONV_DIRECT},
        {"winograd", DN_CONV_WINOGRAD}, {"bf16", DN_CONV_BF16}, {"int8", DN_CONV_INT8}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (s && !strcmp(s, t[i].name)) { *out = t[i].impl; return DN_OK; }
    return dn_fail(DN_ERR_ARG, "conv implementation '%s' unknown (auto|ref|direct|winograd|bf16|int8)",
                   s ? s : "(null)");
}

/* ------------------------------------------------------------ plan */

/* Folds bn into conv c (named `name`, engine order idx) and creates the op for
 * an input of ih x iw, in the implementation m's quant metadata asks for. int8
 * needs the conv's calibrated input scale (nn/quant_int8.h); convs without one
 * (the stem) run fp32. */
static dn_status make_conv(const dn_model *m, const char *name, int idx, const dn_conv_p *c, const dn_bn_p *bn,
                           dn_conv_impl impl, int ih, int iw, pconv *out) {
    dn_status st = DN_OK;
    float scale = 0.0f;
    impl = dn_quant_conv_impl(m, name, impl);
    out->idx = idx;
    if (impl == DN_CONV_INT8 && (st = dn_int8_scale(m, name, &scale))) return st;
    size_t per = (size_t)c->cin * c->k * c->k;
    float *w = dn_malloc((size_t)c->cout * per * sizeof(float));
    float *b = dn_malloc((size_t)c->cout * sizeof(float));
    if (!w || !b) { st = DN_ERR_NOMEM; goto done; }
    for (int o = 0; o < c->cout; o++) {
        double scale = (double)bn->weight[o] / sqrt((double)bn->var[o] + (double)bn->eps);
        for (size_t i = 0; i < per; i++) w[o * per + i] = (float)(c->w[o * per + i] * scale);
        b[o] = (float)((double)bn->bias[o] - (double)bn->mean[o] * scale);
    }
    out->d = (dn_conv_desc){c->cin, c->cout, c->k, c->k, c->stride, c->pad};
    out->ih = ih; out->iw = iw;
    out->oh = dn_conv_out(ih, c->k, c->stride, c->pad);
    out->ow = dn_conv_out(iw, c->k, c->stride, c->pad);
    if (out->oh < 1 || out->ow < 1) {
        st = dn_fail(DN_ERR_ARG, "input %dx%d too small for a %dx%d/s%d conv", ih, iw, c->k, c->k, c->stride);
        goto done;
    }
    if (impl == DN_CONV_INT8 && scale > 0) out->op = dn_conv_op_new_int8(&out->d, w, b, scale);
    else out->op = dn_conv_op_new(&out->d, w, b, impl == DN_CONV_INT8 ? DN_CONV_AUTO : impl);
    if (!out->op) st = DN_ERR_UNSUPPORTED;
done:
    free(w);
    free(b);
    return st;
}

static size_t conv_scratch(const pconv *p, int n) { return dn_conv_op_scratch(p->op, n, p->ih, p->iw); }
static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

static float *alloc_floats(size_t count) {
    size_t bytes;
    if (dn_mul_overflow(count, sizeof(float), &bytes)) {
        dn_fail(DN_ERR_NOMEM, "session: buffer of %zu floats too large", count);
        return NULL;
    }
    return dn_alloc_aligned(bytes);
}

static void plan_free(dn_plan *p) {
    if (!p) return;
    dn_conv_op_free(p->stem.op);
    for (int b = 0; b < p->nblocks; b++) {
        dn_conv_op_free(p->blocks[b].c1.op);
        dn_conv_op_free(p->blocks[b].c2.op);
        dn_conv_op_free(p->blocks[b].down.op);
    }
    free(p);
}

dn_plan *dn_plan_retain(dn_plan *p) {
    if (p) atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

void dn_plan_release(dn_plan *p) {
    /* acq_rel: every user's last reads of the plan happen before the free */
    if (p && atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1) plan_free(p);
}

/* Folds BN into every conv of m and creates the ops for an ih x iw input. */
static dn_status plan_new(const dn_model *m, int ih, int iw, dn_conv_impl impl, dn_plan **out) {
    dn_status st = DN_OK;
    *out = NULL;
    dn_plan *p = dn_calloc(1, sizeof *p);
    if (!p) return DN_ERR_NOMEM;
    atomic_init(&p->refs, 1);
    p->m = m;
    p->in_h = ih; p->in_w = iw;
    if (impl == DN_CONV_INT8 && !dn_meta_get(&m->meta, DN_META_QUANT_INT8)) {
        st = dn_fail(DN_ERR_ARG, "session: int8 requested but the model has no int8 calibration "
                                 "(defectnet quantize --mode int8)");
        goto fail;
    }
    char stem[DN_ARCH_NAME_MAX];
    dn_arch_names(-1, -1, DN_ARCH_STEM, stem, NULL, sizeof stem);
    if ((st = make_conv(m, stem, 0, &m->conv1, &m->bn1, impl, ih, iw, &p->stem))) goto fail;
    int ci = 1;
    p->pool_h = dn_conv_out(p->stem.oh, 3, 2, 1);
    p->pool_w = dn_conv_out(p->stem.ow, 3, 2, 1);
    p->stage_c[0] = m->conv1.cout; p->stage_h[0] = p->pool_h; p->stage_w[0] = p->pool_w;
    size_t blk_max = (size_t)m->conv1.cout * p->pool_h * p->pool_w;
    int h = p->pool_h, w = p->pool_w, b = 0;
    for (int stg = 0; stg < 4; stg++) {
        for (int i = 0; i < m->layers[stg]; i++, b++) {
            const dn_block_p *bp = &m->blocks[b];
            pblock *pb = &p->blocks[b];
            p->nblocks = b + 1;
            pb->stage = stg + 1;
            pb->has_down = bp->has_down;
            /* per-conv implementation: a quantized model's metadata (nn/quant.h) */
            char nm[4][DN_ARCH_NAME_MAX];
            dn_arch_names(stg, i, DN_ARCH_CONV1, nm[0], NULL, sizeof nm[0]);
            dn_arch_names(stg, i, DN_ARCH_CONV2, nm[1], NULL, sizeof nm[1]);
            dn_arch_names(stg, i, DN_ARCH_DOWN, nm[2], NULL, sizeof nm[2]);
            dn_arch_names(stg, i, DN_ARCH_BLOCK, nm[3], NULL, sizeof nm[3]);
            if ((st = make_conv(m, nm[0], ci++, &bp->conv1, &bp->bn1, impl, h, w, &pb->c1))) goto fail;
            if ((st = make_conv(m, nm[1], ci++, &bp->conv2, &bp->bn2, impl, pb->c1.oh, pb->c1.ow, &pb->c2))) goto fail;
            if (pb->has_down) {
                if ((st = make_conv(m, nm[2], ci++, &bp->down, &bp->down_bn, impl, h, w, &pb->down))) goto fail;
                if (pb->down.oh != pb->c2.oh || pb->down.ow != pb->c2.ow) {
                    st = dn_fail(DN_ERR_SHAPE, "%s: shortcut and main path sizes differ", nm[3]);
                    goto fail;
                }
            } else if (bp->conv1.stride != 1 || bp->conv1.cin != bp->conv2.cout) {
                st = dn_fail(DN_ERR_SHAPE, "%s: identity shortcut needs stride 1 and equal widths", nm[3]);
                goto fail;
            }
            h = pb->c2.oh; w = pb->c2.ow;
            blk_max = max_sz(blk_max, (size_t)pb->c1.d.cout * pb->c1.oh * pb->c1.ow);
            blk_max = max_sz(blk_max, (size_t)pb->c2.d.cout * h * w);
        }
        p->stage_c[stg + 1] = m->widths[stg]; p->stage_h[stg + 1] = h; p->stage_w[stg + 1] = w;
    }
    p->stage_c[5] = m->feat_dim; p->stage_h[5] = 1; p->stage_w[5] = 1;
    p->blk_max = blk_max;
    p->stem_floats = (size_t)m->conv1.cout * p->stem.oh * p->stem.ow;
    /* blocked activations when every op takes them: the stem reads the NCHW
     * input, every other conv blocked input with a border of 1 */
    const char *nb_env = getenv("DN_BLOCKED"); /* "0": NCHW between convs (A/B, diagnostics) */
    int blocked = dn_conv_op_blocked_nchw_in(p->stem.op) && !(nb_env && !strcmp(nb_env, "0"));
    for (int i = 0; i < p->nblocks && blocked; i++) {
        const pblock *pb = &p->blocks[i];
        blocked = dn_conv_op_blocked(pb->c1.op) && !dn_conv_op_blocked_nchw_in(pb->c1.op) && pb->c1.d.pad <= 1 &&
                  dn_conv_op_blocked(pb->c2.op) && !dn_conv_op_blocked_nchw_in(pb->c2.op) && pb->c2.d.pad <= 1 &&
                  (!pb->has_down || (dn_conv_op_blocked(pb->down.op) && !dn_conv_op_blocked_nchw_in(pb->down.op) &&
                                     pb->down.d.pad <= 1));
    }
    if (blocked) {
        p->blocked = 1;
        p->stem_floats = dn_blk_floats(1, m->conv1.cout, p->stem.oh, p->stem.ow, 0);
        blk_max = dn_blk_floats(1, m->conv1.cout, p->pool_h, p->pool_w, 1);
        for (int i = 0; i < p->nblocks; i++) {
            const pblock *pb = &p->blocks[i];
            blk_max = max_sz(blk_max, dn_blk_floats(1, pb->c1.d.cout, pb->c1.oh, pb->c1.ow, 1));
            blk_max = max_sz(blk_max, dn_blk_floats(1, pb->c2.d.cout, pb->c2.oh, pb->c2.ow, 1));
        }
        p->blk_max = blk_max;
    }
    const char *i8 = ""; /* an int8 plan names its int8 kernel after the (fp32) stem's */
    for (int i = 0; i < p->nblocks && !*i8; i++)
        if (!strncmp(dn_conv_op_impl_name(p->blocks[i].c2.op), "int8", 4)) i8 = dn_conv_op_impl_name(p->blocks[i].c2.op);
    snprintf(p->impl_name, sizeof p->impl_name, "%s%s%s%s", dn_conv_op_impl_name(p->stem.op), *i8 ? "+" : "", i8,
             p->blocked ? "+blocked" : "");
    *out = p;
    return DN_OK;
fail:
    plan_free(p);
    return st;
}

/* Scratch bytes for a batch of nb: the most any op of the plan needs. */
static size_t plan_scratch(const dn_plan *p, int nb) {
    size_t scratch = conv_scratch(&p->stem, nb);
    if (p->blocked) { /* the stem (a padded copy of the input) and int8 convs (their u8 input) */
        scratch = dn_conv_op_blocked_scratch(p->stem.op, nb, p->stem.ih, p->stem.iw);
        for (int b = 0; b < p->nblocks; b++) {
            const pblock *pb = &p->blocks[b];
            scratch = max_sz(scratch, dn_conv_op_blocked_scratch(pb->c1.op, nb, pb->c1.ih, pb->c1.iw));
            scratch = max_sz(scratch, dn_conv_op_blocked_scratch(pb->c2.op, nb, pb->c2.ih, pb->c2.iw));
            if (pb->has_down) scratch = max_sz(scratch, dn_conv_op_blocked_scratch(pb->down.op, nb, pb->down.ih, pb->down.iw));
        }
        return scratch;
    }
    for (int b = 0; b < p->nblocks; b++) {
        const pblock *pb = &p->blocks[b];
        scratch = max_sz(scratch, max_sz(conv_scratch(&pb->c1, nb), conv_scratch(&pb->c2, nb)));
        if (pb->has_down) scratch = max_sz(scratch, conv_scratch(&pb->down, nb));
    }
    return scratch;
}

/* The per-session half on plan p; takes over the caller's reference to p
 * (released here on failure). */
static dn_status session_on_plan(dn_plan *p, int max_batch, int threads, dn_session **out) {
    dn_status st = DN_ERR_NOMEM;
    const dn_model *m = p->m;
    int nb = max_batch;
    dn_session *s = dn_calloc(1, sizeof *s);
    if (!s) { dn_plan_release(p); return DN_ERR_NOMEM; }
    s->p = p;
    s->m = m;
    s->max_batch = max_batch;
    s->in_h = p->in_h; s->in_w = p->in_w;
    if (dn_model_policy(m, &s->policy)) { /* forward/features still work; classify names the problem */
        s->policy = (dn_policy){-1, 0};
        s->policy_bad = 1;
    }
    if (!(s->pool = dn_pool_new(threads))) { st = dn_fail(DN_ERR_NOMEM, "session: cannot start thread pool"); goto fail; }
    if (!(s->a_stem = alloc_floats((size_t)nb * p->stem_floats))) goto fail;
    for (int i = 0; i < 4; i++)
        if (!(s->buf[i] = alloc_floats((size_t)nb * p->blk_max))) goto fail;
    if (!(s->feat = alloc_floats((size_t)nb * m->feat_dim))) goto fail;
    if (!(s->logits = alloc_floats((size_t)nb * (m->num_classes > 0 ? m->num_classes : 1)))) goto fail;
    if (!(s->input = alloc_floats((size_t)nb * 3 * p->in_h * p->in_w))) goto fail;
    s->scratch_bytes = plan_scratch(p, nb);
    if (s->scratch_bytes && !(s->scratch = dn_alloc_aligned(s->scratch_bytes))) goto fail;
    *out = s;
    return DN_OK;
fail:
    dn_session_free(s);
    return st;
}

static dn_status check_batch(int max_batch, const char *what) {
    if (max_batch < 1 || max_batch > 65536)
        return dn_fail(DN_ERR_ARG, "%s: max batch %d out of range 1..65536", what, max_batch);
    return DN_OK;
}

dn_status dn_session_new_ex(const dn_model *m, const dn_session_opts *o, dn_session **out) {
    dn_status st = DN_OK;
    if (!out) return dn_fail(DN_ERR_ARG, "session: NULL output");
    *out = NULL;
    if (!m || !o) return dn_fail(DN_ERR_ARG, "session: NULL model or options");
    if ((st = check_batch(o->max_batch, "session"))) return st;
    int ih = o->in_h > 0 ? o->in_h : m->pp.crop, iw = o->in_w > 0 ? o->in_w : m->pp.crop;
    if (ih < 1 || iw < 1 || ih > 8192 || iw > 8192)
        return dn_fail(DN_ERR_ARG, "session: input size %dx%d out of range 1..8192", ih, iw);
    dn_conv_impl impl = DN_CONV_AUTO;
    if (o->impl >= 0) {
        impl = (dn_conv_impl)o->impl;
    } else {
        const char *e = getenv("DN_CONV_IMPL");
        if (e && *e && (st = dn_conv_impl_parse(e, &impl)))
            return dn_fail_prefix(st, "DN_CONV_IMPL");
    }
    dn_plan *p = NULL;
    if ((st = plan_new(m, ih, iw, impl, &p))) return st;
    return session_on_plan(p, o->max_batch, o->threads, out);
}

dn_status dn_session_new(const dn_model *m, int max_batch, int threads, dn_session **out) {
    dn_session_opts o = {max_batch, threads, 0, 0, -1};
    return dn_session_new_ex(m, &o, out);
}

dn_status dn_session_new_on_plan(dn_plan *p, int max_batch, int threads, dn_session **out) {
    dn_status st;
    if (!out) return dn_fail(DN_ERR_ARG, "shared session: NULL output");
    *out = NULL;
    if (!p) return dn_fail(DN_ERR_ARG, "shared session: NULL plan");
    if ((st = check_batch(max_batch, "shared session"))) return st;
    return session_on_plan(dn_plan_retain(p), max_batch, threads, out);
}

dn_status dn_session_new_shared(const dn_session *base, int max_batch, int threads, dn_session **out) {
    if (!out) return dn_fail(DN_ERR_ARG, "shared session: NULL output");
    *out = NULL;
    if (!base) return dn_fail(DN_ERR_ARG, "shared session: NULL base session");
    return dn_session_new_on_plan(base->p, max_batch, threads, out);
}

dn_plan *dn_session_plan(const dn_session *s) { return s ? s->p : NULL; }

int dn_session_plan_refs(const dn_session *s) {
    return s ? atomic_load_explicit(&s->p->refs, memory_order_relaxed) : 0;
}

void dn_session_free(dn_session *s) {
    if (!s) return;
    if (s->pool) dn_pool_free(s->pool);
    dn_free_aligned(s->a_stem);
    for (int i = 0; i < 4; i++) dn_free_aligned(s->buf[i]);
    dn_free_aligned(s->feat);
    dn_free_aligned(s->logits);
    dn_free_aligned(s->input);
    dn_free_aligned(s->scratch);
    dn_plan_release(s->p);
    free(s);
}

const char *dn_session_conv_impl(const dn_session *s) { return s->p->impl_name; }
void dn_session_observe(dn_session *s, dn_conv_observer fn, void *ctx) {
    s->observe = fn;
    s->observe_ctx = ctx;
}
const dn_policy *dn_session_policy(const dn_session *s) { return &s->policy; }
void dn_session_set_policy(dn_session *s, const dn_policy *pol) {
    s->policy = *pol;
    s->policy_bad = 0;
}
int dn_session_max_batch(const dn_session *s) { return s->max_batch; }
const dn_model *dn_session_model(const dn_session *s) { return s->m; }
void dn_session_input_size(const dn_session *s, int *h, int *w) { *h = s->in_h; *w = s->in_w; }
float *dn_session_input(dn_session *s) { return s->input; }
void dn_session_stage_shape(const dn_session *s, int stage, int *c, int *h, int *w) {
    if (stage < 0) stage = 0;
    if (stage > 5) stage = 5;
    *c = s->p->stage_c[stage]; *h = s->p->stage_h[stage]; *w = s->p->stage_w[stage];
}

/* ------------------------------------------------------------ pooling jobs */

typedef struct plane_job {
    const float *x;
    float *y;
    long planes;
    int h, w, oh, ow;
} plane_job;

/* 3x3 stride-2 pad-1 max pool; padding never wins (PyTorch semantics). */
static void maxpool_job(void *arg, int ith, int nth) {
    const plane_job *j = arg;
    long b, e;
    dn_split(j->planes, ith, nth, &b, &e);
    for (long p = b; p < e; p++)
        for (int oy = 0; oy < j->oh; oy++)
            dn_maxpool3s2_row(j->x + (size_t)p * j->h * j->w, j->h, j->w, j->w, 1, oy, j->ow,
                              j->y + ((size_t)p * j->oh + oy) * j->ow);
}

static void avgpool_job(void *arg, int ith, int nth) {
    const plane_job *j = arg;
    long b, e;
    dn_split(j->planes, ith, nth, &b, &e);
    long hw = (long)j->h * j->w;
    for (long p = b; p < e; p++) {
        const float *x = j->x + (size_t)p * hw;
        double acc = 0;
        for (long i = 0; i < hw; i++) acc += x[i];
        j->y[p] = (float)(acc / (double)hw);
    }
}

typedef struct fc_job {
    const float *feat, *w, *bias;
    float *out;
    int n, k, c;
} fc_job;

static void fc_run(void *arg, int ith, int nth) {
    const fc_job *j = arg;
    long b, e;
    dn_split((long)j->n * j->c, ith, nth, &b, &e);
    for (long r = b; r < e; r++) {
        int i = (int)(r / j->c), o = (int)(r % j->c);
        const float *f = j->feat + (size_t)i * j->k, *w = j->w + (size_t)o * j->k;
        /* 16 partial sums (lane l takes t = l mod 16), added pairwise: the
         * compiler keeps them in one vector register */
        float part[16] = {0}, acc = 0;
        int t = 0;
        for (; t + 16 <= j->k; t += 16)
            for (int l = 0; l < 16; l++) part[l] += f[t + l] * w[t + l];
        for (; t < j->k; t++) acc += f[t] * w[t];
        for (int wdt = 8; wdt > 0; wdt /= 2)
            for (int l = 0; l < wdt; l++) part[l] += part[l + wdt];
        j->out[(size_t)i * j->c + o] = acc + part[0] + j->bias[o];
    }
}

/* ------------------------------------------------------------ forward */

/* The op is only read (kernels.h: dn_conv_op_run writes nothing but y and the
 * scratch), so sessions sharing a plan may run convs concurrently. A blocked
 * plan keeps borders of 1 (the stem: none, the max pool clips its windows); its
 * ops were checked by plan_new, so dn_conv_op_run_blocked cannot fail here. */
static void run_conv(dn_session *s, const pconv *p, const float *x, int n, const float *res, int relu, float *y) {
    if (s->observe)
        s->observe(s->observe_ctx, p->idx, x, n, p->d.cin, p->ih, p->iw,
                   s->p->blocked && !dn_conv_op_blocked_nchw_in(p->op) ? 1 : -1);
    if (s->p->blocked)
        dn_conv_op_run_blocked(p->op, x, n, p->ih, p->iw, dn_conv_op_blocked_nchw_in(p->op) ? 0 : 1, res, relu, y,
                               p == &s->p->stem ? 0 : 1, s->pool, s->scratch);
    else
        dn_conv_op_run(p->op, x, n, p->ih, p->iw, res, relu, y, s->pool, s->scratch);
}

static dn_status check_call(const dn_session *s, const float *x, int n, const void *out, const char *what) {
    if (!x || !out) return dn_fail(DN_ERR_ARG, "%s: NULL input or output", what);
    if (n < 1 || n > s->max_batch)
        return dn_fail(DN_ERR_ARG, "%s: batch of %d outside 1..%d (session max batch)", what, n, s->max_batch);
    return DN_OK;
}

/* Runs the network up to `stage` (0..4) and returns the buffer holding it
 * (blocked with border 1 for a blocked plan, else NCHW). */
static const float *run_to(dn_session *s, const float *x, int n, int stage) {
    const dn_model *m = s->m;
    const dn_plan *p = s->p;
    run_conv(s, &p->stem, x, n, NULL, 1, s->a_stem);
    if (p->blocked) {
        dn_blk_maxpool3s2(s->a_stem, n, m->conv1.cout, p->stem.oh, p->stem.ow, 0, s->buf[0], p->pool_h, p->pool_w, 1,
                          s->pool);
    } else {
        plane_job mp = {s->a_stem, s->buf[0], (long)n * m->conv1.cout, p->stem.oh, p->stem.ow, p->pool_h, p->pool_w};
        dn_pool_run(s->pool, maxpool_job, &mp);
    }
    int cur = 0;
    for (int b = 0; b < p->nblocks && p->blocks[b].stage <= stage; b++) {
        const pblock *pb = &p->blocks[b];
        int t = (cur + 1) & 3, d = (cur + 2) & 3, o = (cur + 3) & 3;
        const float *res = s->buf[cur];
        if (pb->has_down) {
            run_conv(s, &pb->down, s->buf[cur], n, NULL, 0, s->buf[d]);
            res = s->buf[d];
        }
        run_conv(s, &pb->c1, s->buf[cur], n, NULL, 1, s->buf[t]);
        run_conv(s, &pb->c2, s->buf[t], n, res, 1, s->buf[o]);
        cur = o;
    }
    return s->buf[cur];
}

static void pool_features(dn_session *s, const float *act, int n, float *feat) {
    const dn_plan *p = s->p;
    if (p->blocked) {
        dn_blk_avgpool(act, n, p->stage_c[4], p->stage_h[4], p->stage_w[4], 1, feat, s->pool);
        return;
    }
    plane_job ap = {act, feat, (long)n * p->stage_c[4], p->stage_h[4], p->stage_w[4], 1, 1};
    dn_pool_run(s->pool, avgpool_job, &ap);
}

static dn_status check_finite(const float *v, size_t count, const char *what) {
    for (size_t i = 0; i < count; i++)
        if (!isfinite(v[i]))
            return dn_fail(DN_ERR_NUMERIC, "%s: non-finite output at element %zu (NaN/Inf in the input?)", what, i);
    return DN_OK;
}

dn_status dn_session_forward_to(dn_session *s, const float *x, int n, int stage, float *out) {
    dn_status st;
    if ((st = check_call(s, x, n, out, "forward_to"))) return st;
    if (stage < 0 || stage > 5) return dn_fail(DN_ERR_ARG, "forward_to: stage %d outside 0..5", stage);
    if (stage == 5) return dn_session_features(s, x, n, out);
    const float *a = run_to(s, x, n, stage);
    const dn_plan *p = s->p;
    size_t count = (size_t)n * p->stage_c[stage] * p->stage_h[stage] * p->stage_w[stage];
    if (p->blocked) dn_blk_to_nchw(a, n, p->stage_c[stage], p->stage_h[stage], p->stage_w[stage], 1, out, s->pool);
    else memcpy(out, a, count * sizeof(float));
    return check_finite(out, count, "forward_to");
}

dn_status dn_session_features(dn_session *s, const float *x, int n, float *feat) {
    dn_status st;
    if ((st = check_call(s, x, n, feat, "features"))) return st;
    pool_features(s, run_to(s, x, n, 4), n, feat);
    return check_finite(feat, (size_t)n * s->m->feat_dim, "features");
}

dn_status dn_session_forward(dn_session *s, const float *x, int n, float *logits) {
    dn_status st;
    if ((st = check_call(s, x, n, logits, "forward"))) return st;
    const dn_model *m = s->m;
    if (m->num_classes < 1 || !m->fc_w)
        return dn_fail(DN_ERR_ARG, "forward: model has no classification head (backbone only)");
    pool_features(s, run_to(s, x, n, 4), n, s->feat);
    fc_job fj = {s->feat, m->fc_w, m->fc_b, logits, n, m->feat_dim, m->num_classes};
    dn_pool_run(s->pool, fc_run, &fj);
    return check_finite(logits, (size_t)n * m->num_classes, "forward");
}

/* ------------------------------------------------------------ classify */

void dn_softmax_t(const float *logits, int n, int c, float T, float *probs) {
    double inv = T > 0 ? 1.0 / T : 1.0;
    for (int i = 0; i < n; i++) {
        const float *l = logits + (size_t)i * c;
        float *p = probs + (size_t)i * c;
        double mx = -INFINITY, sum = 0;
        for (int k = 0; k < c; k++) if (l[k] * inv > mx) mx = l[k] * inv;
        for (int k = 0; k < c; k++) sum += exp(l[k] * inv - mx);
        /* l[k] is read before p[k] is written, so logits and probs may alias */
        for (int k = 0; k < c; k++) {
            double v = exp(l[k] * inv - mx);
            p[k] = (float)(v / sum);
        }
    }
}

const float *dn_session_last_features(const dn_session *s) { return s->feat; }

dn_status dn_session_classify_batch(dn_session *s, const float *x, int n, dn_prediction *preds, float *probs) {
    dn_status st;
    if (!preds) return dn_fail(DN_ERR_ARG, "classify: NULL predictions");
    if (s && s->policy_bad) { /* unreadable at session creation: its one-line message, or readable after all */
        dn_policy pol;
        if ((st = dn_model_policy(s->m, &pol))) return st;
        dn_session_set_policy(s, &pol);
    }
    if ((st = dn_session_forward(s, x, n, s->logits))) return st;
    const dn_model *m = s->m;
    int c = m->num_classes;
    if ((st = dn_ood_score_preds(m, s->feat, s->logits, n, s->pool, preds))) return st; /* raw logits + features */
    dn_softmax_t(s->logits, n, c, m->temperature, s->logits);
    for (int i = 0; i < n; i++) {
        preds[i].decision = DN_DECISION_ACCEPTED;
        dn_policy_decide(&s->policy, m->threshold, s->logits + (size_t)i * c, c, &preds[i]);
        preds[i].decision = dn_ood_decide(m, &preds[i]);
    }
    if (probs) memcpy(probs, s->logits, (size_t)n * c * sizeof(float));
    return DN_OK;
}

dn_status dn_session_classify(dn_session *s, const dn_image *img, dn_prediction *pred, float *probs) {
    dn_status st;
    if (!s || !img || !pred) return dn_fail(DN_ERR_ARG, "classify: NULL argument");
    const dn_preproc *pp = &s->m->pp;
    if (pp->crop != s->in_h || pp->crop != s->in_w)
        return dn_fail(DN_ERR_ARG, "classify: session planned for %dx%d input, model preprocessing crops %dx%d",
                       s->in_h, s->in_w, pp->crop, pp->crop);
    if ((st = dn_preprocess(img, pp, s->input))) return st;
    return dn_session_classify_batch(s, s->input, 1, pred, probs);
}
