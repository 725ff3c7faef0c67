/* Trainable ResNet graph (see net.h for the contract).
 *
 * Memory plan. Per trainable conv+BN unit the net keeps the conv output (the
 * BN input, needed by the BN backward) and the batch mean/invstd; per block the
 * ReLU output after bn1 (conv2's input and the ReLU mask) and the block output
 * (the next input and the final ReLU mask); the stem keeps its ReLU output and
 * the max-pool output + argmax. The input of the first trainable stage is copied
 * into x0 (its conv's weight gradient needs it). Four temporaries of the
 * largest activation serve frozen/eval forwards and the backward's gradient
 * ping-pong. Saved buffers exist only for trainable stages; temporaries and conv
 * scratch grow on first use and are then reused (no allocation per step). */
#include "train/net.h"
#include "nn/layers.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cbn {        /* conv followed by BatchNorm */
    dn_conv_layer L;        /* planned conv (fast-path ops rebuilt when weights change) */
    size_t scr;             /* scratch bytes L needs */
    int ready;              /* L.fwd is an eval op of the current weights, kept (frozen
                             * convs; trainable ones between training forwards):
                             * 0 none, EV_FOLDED or EV_PLAIN. Training-mode convs
                             * re-pack their unfolded ops before each use. */
    int fwd_ok, bwd_ok;     /* L.fwd / L.bwd hold the current weights for the next
                             * training-mode use (set by prebuild, cleared by the use) */
    int stage;              /* 0 = stem, 1..4 = layer */
    dn_conv_p *conv;
    dn_bn_p *bn;
    int in_c, in_h, in_w, oc, oh, ow;
    float *c;               /* saved conv output [maxb][oc*oh*ow] */
    float *mean, *invstd;   /* [oc] batch statistics of the last training forward */
    float *dw, *dg, *db;    /* grads (point into net->gradbuf) */
} cbn;

typedef struct blk {
    cbn u1, u2, ud;
    int has_down, stage;
    float *a1;              /* relu(bn1(conv1(x))) */
    float *out;             /* block output */
    const float *in;        /* input of the last training forward */
} blk;

struct dn_net {
    dn_model *m;
    int first, maxb, in_h, in_w;
    dn_pool *pool;
    cbn stem;
    float *stem_a;          /* relu(bn1(conv1)) */
    float *mp_out;
    int32_t *mp_idx;
    int mp_h, mp_w;
    blk b[DN_MAX_BLOCKS];
    int nb;
    int stage_b0[6];        /* blocks of stage s (1..4): [stage_b0[s], stage_b0[s+1]) */
    float *feat;            /* [maxb][feat_dim] */
    float *dfc_w, *dfc_b;
    float *x0;              /* copy of the input of the first trainable stage (stage <= 4) */
    float *t[4];            /* temporaries, tcap floats each (largest block activation) */
    float *big;             /* stem conv-output-sized temporary (eval stem, stem backward) */
    size_t tcap;
    void *scratch;          /* conv scratch, scap bytes */
    size_t scap;
    float *gradbuf;
    dn_param *params;
    char (*names)[64];
    int nparams;
    int last_n, pending;    /* a training forward awaits its backward */
    int training;           /* inside a training forward / backward */
    dn_net_profile prof;
};

dn_status dn_freeze_parse(const char *spec, int *first_trainable) {
    static const struct { const char *name; int first; } tab[] = {
        {"none", 0}, {"stem", 1}, {"layer1", 2}, {"layer2", 3}, {"layer3", 4},
        {"layer4", 5}, {"backbone", 5}};
    if (!spec) return dn_fail(DN_ERR_ARG, "freeze spec: missing");
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (!strcmp(spec, tab[i].name)) { *first_trainable = tab[i].first; return DN_OK; }
    if (spec[0] >= '0' && spec[0] <= '5' && spec[1] == 0) { *first_trainable = spec[0] - '0'; return DN_OK; }
    return dn_fail(DN_ERR_ARG, "freeze spec '%s': expected none, stem, layer1..layer4, backbone or 0..5", spec);
}

/* ------------------------------------------------------------ shapes */

static size_t act_size(const cbn *u) { return (size_t)u->oc * u->oh * u->ow; }
static size_t in_size(const cbn *u) { return (size_t)u->in_c * u->in_h * u->in_w; }

static dn_status init_cbn(cbn *u, dn_conv_p *conv, dn_bn_p *bn, int c, int h, int w, int maxb, int impl, int stage) {
    memset(u, 0, sizeof *u);
    u->stage = stage;
    u->conv = conv; u->bn = bn;
    u->in_c = c; u->in_h = h; u->in_w = w;
    u->oc = conv->cout;
    u->oh = dn_conv_out(h, conv->k, conv->stride, conv->pad);
    u->ow = dn_conv_out(w, conv->k, conv->stride, conv->pad);
    if (conv->cin != c) return dn_fail(DN_ERR_SHAPE, "training net: conv expects %d input channels, gets %d", conv->cin, c);
    dn_status st = dn_conv_layer_init(&u->L, conv, h, w, maxb, impl);
    if (st) return st;
    u->scr = dn_conv_layer_scratch(&u->L, maxb);
    return DN_OK;
}

void dn_net_input_shape(const dn_net *net, int stage, int *c, int *h, int *w) {
    if (stage <= 0) { *c = 3; *h = net->in_h; *w = net->in_w; return; }
    if (stage >= 5) { *c = net->m->feat_dim; *h = 1; *w = 1; return; }
    const cbn *u = &net->b[net->stage_b0[stage]].u1;
    *c = u->in_c; *h = u->in_h; *w = u->in_w;
}

static size_t input_numel(const dn_net *net, int stage) {
    int c, h, w;
    dn_net_input_shape(net, stage, &c, &h, &w);
    return (size_t)c * h * w;
}

/* Largest per-image activation and conv scratch over stages >= from. */
static void plan_sizes(const dn_net *net, int from, size_t *act, size_t *scr) {
    size_t a = 0, s = 0;
#define UPD(u) do { if (act_size(u) > a) a = act_size(u); if (in_size(u) > a) a = in_size(u); \
    if ((u)->scr > s) s = (u)->scr; } while (0)
    if (from <= 0 && net->stem.scr > s) s = net->stem.scr; /* its activation lives in net->big */
    for (int i = 0; i < net->nb; i++) {
        const blk *b = &net->b[i];
        if (b->stage < from) continue;
        UPD(&b->u1); UPD(&b->u2);
        if (b->has_down) UPD(&b->ud);
    }
#undef UPD
    if ((size_t)net->m->feat_dim > a) a = net->m->feat_dim;
    *act = a; *scr = s;
}

static dn_status ensure_temps(dn_net *net, int from) {
    size_t a, s;
    plan_sizes(net, from, &a, &s);
    size_t need = a * net->maxb;
    if (need > net->tcap) {
        for (int i = 0; i < 4; i++) {
            dn_free_aligned(net->t[i]);
            net->t[i] = NULL;
        }
        net->tcap = 0;
        for (int i = 0; i < 4; i++)
            if (!(net->t[i] = dn_alloc_aligned(need * sizeof(float))))
                return dn_fail(DN_ERR_NOMEM, "training net: cannot allocate %zu MB of activations", need * 4 >> 20);
        net->tcap = need;
    }
    if (from <= 0 && !net->big &&
        !(net->big = dn_alloc_aligned(act_size(&net->stem) * net->maxb * sizeof(float))))
        return dn_fail(DN_ERR_NOMEM, "training net: cannot allocate the stem activation");
    if (s > net->scap) {
        dn_free_aligned(net->scratch);
        if (!(net->scratch = dn_alloc_aligned(s))) {
            net->scap = 0;
            return dn_fail(DN_ERR_NOMEM, "training net: cannot allocate conv scratch");
        }
        net->scap = s;
    }
    return DN_OK;
}

/* ------------------------------------------------------------ trainable state */

static void free_cbn_saved(cbn *u) {
    dn_free_aligned(u->c); free(u->mean); free(u->invstd);
    u->c = u->mean = u->invstd = NULL;
    u->dw = u->dg = u->db = NULL;
}

static void free_trainable(dn_net *net) {
    free_cbn_saved(&net->stem);
    dn_free_aligned(net->stem_a); dn_free_aligned(net->mp_out); free(net->mp_idx);
    net->stem_a = net->mp_out = NULL; net->mp_idx = NULL;
    for (int i = 0; i < net->nb; i++) {
        blk *b = &net->b[i];
        free_cbn_saved(&b->u1); free_cbn_saved(&b->u2); free_cbn_saved(&b->ud);
        dn_free_aligned(b->a1); dn_free_aligned(b->out);
        b->a1 = b->out = NULL;
    }
    dn_free_aligned(net->x0); net->x0 = NULL;
    free(net->gradbuf); net->gradbuf = NULL;
    free(net->params); net->params = NULL;
    free(net->names); net->names = NULL;
    net->nparams = 0;
    net->dfc_w = net->dfc_b = NULL;
}

static float *act_alloc(const dn_net *net, size_t per_image) {
    return dn_alloc_aligned(per_image * net->maxb * sizeof(float));
}

static int alloc_cbn_saved(const dn_net *net, cbn *u) {
    u->c = act_alloc(net, act_size(u));
    u->mean = dn_malloc(sizeof(float) * u->oc);
    u->invstd = dn_malloc(sizeof(float) * u->oc);
    return u->c && u->mean && u->invstd;
}

typedef struct { dn_net *net; int count; size_t total; int fill; size_t off; } plist;

static void add_param(plist *pl, const char *name, float *data, int64_t numel, int group, int nb,
                      float **grad) {
    if (!pl->fill) { pl->count++; pl->total += (size_t)numel; return; }
    dn_net *net = pl->net;
    dn_param *p = &net->params[net->nparams];
    snprintf(net->names[net->nparams], 64, "%s", name);
    p->name = net->names[net->nparams];
    p->data = data;
    p->grad = net->gradbuf + pl->off;
    p->numel = numel;
    p->group = group;
    p->is_norm_or_bias = nb;
    *grad = p->grad;
    pl->off += (size_t)numel;
    net->nparams++;
}

static void cbn_params(plist *pl, cbn *u, const char *conv_name, const char *bn_name) {
    char buf[64];
    snprintf(buf, sizeof buf, "%s.weight", conv_name);
    add_param(pl, buf, u->conv->w, (int64_t)u->conv->cout * u->conv->cin * u->conv->k * u->conv->k,
              DN_PARAM_BACKBONE, 0, &u->dw);
    snprintf(buf, sizeof buf, "%s.weight", bn_name);
    add_param(pl, buf, u->bn->weight, u->bn->c, DN_PARAM_BACKBONE, 1, &u->dg);
    snprintf(buf, sizeof buf, "%s.bias", bn_name);
    add_param(pl, buf, u->bn->bias, u->bn->c, DN_PARAM_BACKBONE, 1, &u->db);
}

/* Walks the trainable parameters in torchvision order (count pass, then fill). */
static void walk_params(dn_net *net, plist *pl) {
    dn_model *m = net->m;
    if (net->first <= 0) cbn_params(pl, &net->stem, "conv1", "bn1");
    for (int i = 0; i < net->nb; i++) {
        blk *b = &net->b[i];
        if (b->stage < net->first) continue;
        int s = b->stage, idx = i - net->stage_b0[s];
        char c1[48], b1[48], c2[48], b2[48], cd[48], bd[48];
        snprintf(c1, sizeof c1, "layer%d.%d.conv1", s, idx);
        snprintf(b1, sizeof b1, "layer%d.%d.bn1", s, idx);
        snprintf(c2, sizeof c2, "layer%d.%d.conv2", s, idx);
        snprintf(b2, sizeof b2, "layer%d.%d.bn2", s, idx);
        snprintf(cd, sizeof cd, "layer%d.%d.downsample.0", s, idx);
        snprintf(bd, sizeof bd, "layer%d.%d.downsample.1", s, idx);
        cbn_params(pl, &b->u1, c1, b1);
        cbn_params(pl, &b->u2, c2, b2);
        if (b->has_down) cbn_params(pl, &b->ud, cd, bd);
    }
    add_param(pl, "fc.weight", m->fc_w, (int64_t)m->num_classes * m->feat_dim, DN_PARAM_HEAD, 0, &net->dfc_w);
    add_param(pl, "fc.bias", m->fc_b, m->num_classes, DN_PARAM_HEAD, 1, &net->dfc_b);
}

static dn_status alloc_trainable(dn_net *net) {
    int f = net->first;
    if (f <= 0) {
        if (!alloc_cbn_saved(net, &net->stem)) goto nomem;
        size_t mp = (size_t)net->stem.oc * net->mp_h * net->mp_w;
        net->stem_a = act_alloc(net, act_size(&net->stem));
        net->mp_out = act_alloc(net, mp);
        net->mp_idx = dn_malloc(mp * net->maxb * sizeof(int32_t));
        if (!net->stem_a || !net->mp_out || !net->mp_idx) goto nomem;
    }
    for (int i = 0; i < net->nb; i++) {
        blk *b = &net->b[i];
        if (b->stage < f) continue;
        if (!alloc_cbn_saved(net, &b->u1) || !alloc_cbn_saved(net, &b->u2)) goto nomem;
        if (b->has_down && !alloc_cbn_saved(net, &b->ud)) goto nomem;
        b->a1 = act_alloc(net, act_size(&b->u1));
        b->out = act_alloc(net, act_size(&b->u2));
        if (!b->a1 || !b->out) goto nomem;
    }
    if (f <= 4 && !(net->x0 = act_alloc(net, input_numel(net, f)))) goto nomem;
    plist pl = {net, 0, 0, 0, 0};
    walk_params(net, &pl);
    net->gradbuf = dn_calloc(pl.total, sizeof(float));
    net->params = dn_calloc((size_t)pl.count, sizeof(dn_param));
    net->names = dn_calloc((size_t)pl.count, 64);
    if (!net->gradbuf || !net->params || !net->names) goto nomem;
    pl.fill = 1;
    walk_params(net, &pl);
    return DN_OK;
nomem:
    free_trainable(net);
    return dn_fail(DN_ERR_NOMEM, "training net: out of memory for trainable layers (batch %d)", net->maxb);
}

dn_status dn_net_new(dn_model *m, int first_trainable, int max_batch, int in_h, int in_w,
                     int threads, dn_net **out) {
    *out = NULL;
    if (!m || m->num_classes <= 0 || !m->fc_w)
        return dn_fail(DN_ERR_ARG, "training net: the model has no classification head");
    if (first_trainable < 0 || first_trainable > 5)
        return dn_fail(DN_ERR_ARG, "training net: first trainable stage %d not in 0..5", first_trainable);
    if (max_batch < 1) return dn_fail(DN_ERR_ARG, "training net: max batch %d < 1", max_batch);
    if (in_h < 8 || in_w < 8 || in_h > 8192 || in_w > 8192)
        return dn_fail(DN_ERR_ARG, "training net: input size %dx%d out of range", in_h, in_w);
    /* Convolution implementation (see dn_conv_layer.impl): auto by default
     * (Winograd for large 3x3 stride-1 convs), DN_TRAIN_CONV=direct for the
     * exact direct conv everywhere, =winograd for Winograd on every 3x3 s1. */
    dn_conv_impl impl = DN_CONV_AUTO;
    const char *ev = getenv("DN_TRAIN_CONV");
    if (ev && *ev) {
        if (!strcmp(ev, "winograd")) impl = DN_CONV_WINOGRAD;
        else if (!strcmp(ev, "ref")) impl = DN_CONV_REF;
        else if (!strcmp(ev, "direct")) impl = DN_CONV_DIRECT;
        else if (!strcmp(ev, "auto")) impl = DN_CONV_AUTO;
        else return dn_fail(DN_ERR_ARG, "DN_TRAIN_CONV=%s: expected auto, direct, winograd or ref", ev);
    }
    dn_net *net = dn_calloc(1, sizeof *net);
    if (!net) return DN_ERR_NOMEM;
    net->m = m; net->first = first_trainable; net->maxb = max_batch; net->in_h = in_h; net->in_w = in_w;
    dn_status st = DN_OK;
    if (!(net->pool = dn_pool_new(threads))) { st = DN_ERR_NOMEM; goto fail; }
    if ((st = init_cbn(&net->stem, &m->conv1, &m->bn1, 3, in_h, in_w, max_batch, impl, 0))) goto fail;
    net->mp_h = dn_pool_out(net->stem.oh, 3, 2, 1);
    net->mp_w = dn_pool_out(net->stem.ow, 3, 2, 1);
    if (net->mp_h < 1 || net->mp_w < 1) { st = dn_fail(DN_ERR_ARG, "training net: input %dx%d too small", in_h, in_w); goto fail; }
    int c = net->stem.oc, h = net->mp_h, w = net->mp_w, bi = 0;
    for (int s = 1; s <= 4; s++) {
        net->stage_b0[s] = bi;
        for (int i = 0; i < m->layers[s - 1]; i++, bi++) {
            dn_block_p *bp = &m->blocks[bi];
            blk *b = &net->b[bi];
            b->stage = s;
            net->nb = bi + 1;
            if ((st = init_cbn(&b->u1, &bp->conv1, &bp->bn1, c, h, w, max_batch, impl, s))) goto fail;
            if ((st = init_cbn(&b->u2, &bp->conv2, &bp->bn2, b->u1.oc, b->u1.oh, b->u1.ow, max_batch, impl, s))) goto fail;
            b->has_down = bp->has_down;
            if (b->has_down && (st = init_cbn(&b->ud, &bp->down, &bp->down_bn, c, h, w, max_batch, impl, s))) goto fail;
            c = b->u2.oc; h = b->u2.oh; w = b->u2.ow;
            if (h < 1 || w < 1) { st = dn_fail(DN_ERR_ARG, "training net: input %dx%d too small", in_h, in_w); goto fail; }
        }
    }
    net->stage_b0[5] = bi;
    net->nb = bi;
    if (c != m->feat_dim) { st = dn_fail(DN_ERR_SHAPE, "training net: model feat_dim %d != layer4 width %d", m->feat_dim, c); goto fail; }
    net->feat = dn_alloc_aligned((size_t)max_batch * m->feat_dim * sizeof(float));
    if (!net->feat) { st = DN_ERR_NOMEM; goto fail; }
    if ((st = alloc_trainable(net))) goto fail;
    *out = net;
    return DN_OK;
fail:
    dn_net_free(net);
    return st ? st : DN_ERR_NOMEM;
}

void dn_net_free(dn_net *net) {
    if (!net) return;
    free_trainable(net);
    dn_conv_layer_release(&net->stem.L);
    for (int i = 0; i < net->nb; i++) {
        dn_conv_layer_release(&net->b[i].u1.L);
        dn_conv_layer_release(&net->b[i].u2.L);
        dn_conv_layer_release(&net->b[i].ud.L);
    }
    for (int i = 0; i < 4; i++) dn_free_aligned(net->t[i]);
    dn_free_aligned(net->big);
    dn_free_aligned(net->scratch);
    dn_free_aligned(net->feat);
    dn_pool_free(net->pool);
    free(net);
}

dn_status dn_net_set_first_trainable(dn_net *net, int first_trainable) {
    if (first_trainable < 0 || first_trainable > 5)
        return dn_fail(DN_ERR_ARG, "training net: first trainable stage %d not in 0..5", first_trainable);
    free_trainable(net);
    net->first = first_trainable;
    net->pending = 0;
    dn_net_sync(net);
    return alloc_trainable(net);
}

int dn_net_first_trainable(const dn_net *net) { return net->first; }
dn_model *dn_net_model(dn_net *net) { return net->m; }
dn_pool *dn_net_pool(dn_net *net) { return net->pool; }
/* Frozen convs keep their forward ops until the next sync; trainable convs
 * re-pack theirs (forward and data-gradient ops, built once and then kept)
 * from the current weights right before each use, as weights move at every
 * optimizer step. Sync frees them all. */
dn_status dn_net_sync(dn_net *net) {
    cbn *all[3];
    dn_conv_layer_release(&net->stem.L);
    net->stem.ready = net->stem.fwd_ok = net->stem.bwd_ok = 0;
    for (int i = 0; i < net->nb; i++) {
        all[0] = &net->b[i].u1; all[1] = &net->b[i].u2; all[2] = &net->b[i].ud;
        for (int k = 0; k < 3; k++) {
            dn_conv_layer_release(&all[k]->L);
            all[k]->ready = all[k]->fwd_ok = all[k]->bwd_ok = 0;
        }
    }
    return DN_OK;
}

const dn_param *dn_net_params(const dn_net *net, int *count) {
    *count = net->nparams;
    return net->params;
}

typedef struct { float *p; size_t n; } zero_job;
static void zero_fn(void *arg, int ith, int nth) {
    zero_job *z = arg;
    long b, e;
    dn_split((long)z->n, ith, nth, &b, &e);
    if (e > b) memset(z->p + b, 0, (size_t)(e - b) * sizeof(float));
}

void dn_net_zero_grad(dn_net *net) {
    size_t total = 0;
    for (int i = 0; i < net->nparams; i++) total += (size_t)net->params[i].numel;
    zero_job z = {net->gradbuf, total};
    if (total) dn_pool_run(net->pool, zero_fn, &z);
}

/* ------------------------------------------------------------ timed layer calls */

static double conv_flop(const cbn *u, int n) {
    return 2.0 * n * u->oc * u->oh * u->ow * (double)u->in_c * u->conv->k * u->conv->k;
}

/* Builds the op(s) of u (see dn_net_sync). A failure to build only costs speed:
 * the layer falls back to its GEMM paths. */
static void conv_prep(dn_net *net, cbn *u, int fwd, int bwd, int n) {
    double t = dn_now();
    if (dn_conv_layer_prepare(&u->L, fwd, bwd, n)) {
        dn_conv_layer_release(&u->L);
        dn_clear_error();
    }
    net->prof.prepare_s += dn_now() - t;
}

/* Training-mode conv forward: op re-packed from the current weights unless
 * prebuild did it; kept (not freed) so the next step re-packs in place. */
static void conv_fwd(dn_net *net, cbn *u, const float *in, int n, float *out) {
    if (!u->fwd_ok) conv_prep(net, u, 1, 0, n);
    double t = dn_now();
    dn_conv_layer_fwd(&u->L, in, n, out, net->pool, net->scratch);
    net->prof.conv_fwd_s += dn_now() - t;
    u->fwd_ok = 0; /* the optimizer step moves the weights */
    net->prof.conv_fwd_flop += conv_flop(u, n);
}

enum { EV_FOLDED = 1, EV_PLAIN = 2 };

/* Eval-mode conv + BN (+ residual) (+ ReLU). EV_FOLDED: one fused op with BN
 * folded into the weights (validation forwards: fastest). EV_PLAIN: conv, then
 * BN with running statistics in PyTorch's order of operations (frozen stages
 * inside a training forward, so training follows PyTorch's rounding closely). */
static dn_status eval_fwd(dn_net *net, cbn *u, int kind, const float *in, int n, const float *res, int relu,
                          float *out) {
    if (u->ready != kind) {
        double t = dn_now();
        dn_status st = kind == EV_FOLDED ? dn_conv_layer_prepare_folded(&u->L, u->bn, net->maxb)
                                         : dn_conv_layer_prepare(&u->L, 1, 0, net->maxb);
        net->prof.prepare_s += dn_now() - t;
        if (st) { u->ready = 0; dn_conv_layer_release(&u->L); return st; }
        u->ready = kind;
    }
    double t = dn_now();
    if (kind == EV_FOLDED) {
        dn_conv_layer_fwd_fused(&u->L, in, n, res, relu, out, net->pool, net->scratch);
        net->prof.conv_fwd_s += dn_now() - t;
    } else {
        dn_conv_layer_fwd(&u->L, in, n, out, net->pool, net->scratch);
        double t2 = dn_now();
        net->prof.conv_fwd_s += t2 - t;
        if (res) {
            dn_bn_layer_fwd_eval(u->bn, out, n, u->oh * u->ow, out, 0, net->pool);
            dn_add_fwd(out, res, (size_t)n * act_size(u), out, relu, net->pool);
        } else {
            dn_bn_layer_fwd_eval(u->bn, out, n, u->oh * u->ow, out, relu, net->pool);
        }
        net->prof.bn_fwd_s += dn_now() - t2;
    }
    net->prof.conv_fwd_flop += conv_flop(u, n);
    return DN_OK;
}

/* Weight gradient, then the data gradient if dx (timed apart for the profile). */
static void conv_bwd(dn_net *net, cbn *u, const float *in, int n, const float *dy, float *dx) {
    double t = dn_now();
    dn_conv_layer_bwd_weight(&u->L, in, n, dy, u->dw, net->pool, net->scratch);
    double t2 = dn_now();
    net->prof.conv_bwd_weight_s += t2 - t;
    net->prof.conv_bwd_weight_flop += conv_flop(u, n);
    if (dx) {
        if (!u->bwd_ok) conv_prep(net, u, 0, 1, n);
        t2 = dn_now();
        dn_conv_layer_bwd_data(&u->L, n, dy, dx, net->pool, net->scratch);
        u->bwd_ok = 0;
        net->prof.conv_bwd_data_s += dn_now() - t2;
        net->prof.conv_bwd_data_flop += conv_flop(u, n);
    }
}

static void bn_fwd_train(dn_net *net, cbn *u, int n, float *y, int relu) {
    double t = dn_now();
    dn_bn_layer_fwd_train(u->bn, u->c, n, u->oh * u->ow, y, u->mean, u->invstd, relu, 1, net->pool);
    net->prof.bn_fwd_s += dn_now() - t;
}


static void bn_bwd(dn_net *net, cbn *u, const float *y, const float *dy, int n, int relu, float *dx) {
    double t = dn_now();
    dn_bn_layer_bwd(u->bn, u->c, y, dy, n, u->oh * u->ow, u->mean, u->invstd, relu, dx, u->dg, u->db, net->pool);
    net->prof.bn_bwd_s += dn_now() - t;
}

void dn_net_get_profile(const dn_net *net, dn_net_profile *out) { *out = net->prof; }
void dn_net_reset_profile(dn_net *net) { memset(&net->prof, 0, sizeof net->prof); }

/* ------------------------------------------------------------ forward */

/* Builds the ops a training forward (fwd) or backward (!fwd) is about to use,
 * all at once and spread over the pool's workers, instead of one by one on the
 * calling thread while the others wait (the packing and Winograd transforms of
 * the updated weights are otherwise a serial part of every step). Ops are
 * kept between steps and re-packed in place (no allocation, no page faults).
 * A failure only means that conv builds its op later on the calling thread
 * (or falls back to GEMM). */
typedef struct { dn_net *net; cbn *u[3 * DN_MAX_BLOCKS + 1]; int cnt, fwd, n; } prebuild_job;

static void prebuild_fn(void *arg, int ith, int nth) {
    prebuild_job *j = arg;
    for (int i = ith; i < j->cnt; i += nth) {
        cbn *u = j->u[i];
        int ok = dn_conv_layer_prepare(&u->L, j->fwd, !j->fwd, j->n) == DN_OK;
        if (!ok) { dn_conv_layer_release(&u->L); u->fwd_ok = u->bwd_ok = 0; }
        if (j->fwd) u->fwd_ok = ok;
        else u->bwd_ok = ok;
    }
}

static void prebuild_add(prebuild_job *j, cbn *u) { j->u[j->cnt++] = u; }

static void prebuild(dn_net *net, int fwd, int n) {
    prebuild_job j;
    j.net = net; j.cnt = 0; j.fwd = fwd; j.n = n;
    int f = net->first;
    if (fwd && f <= 0) prebuild_add(&j, &net->stem);
    for (int i = 0; i < net->nb; i++) {
        blk *b = &net->b[i];
        if (b->stage < f) continue;
        int in_dx = i > 0 ? net->b[i - 1].stage >= f : f == 0; /* the block's input needs a gradient */
        prebuild_add(&j, &b->u2);
        if (fwd || in_dx) prebuild_add(&j, &b->u1);
        if (b->has_down && (fwd || in_dx)) prebuild_add(&j, &b->ud);
    }
    /* largest weights first so round-robin spreads the work evenly */
    for (int a = 1; a < j.cnt; a++)
        for (int b = a; b > 0; b--) {
            const dn_conv_p *p0 = j.u[b - 1]->conv, *p1 = j.u[b]->conv;
            if ((long)p0->cin * p0->cout * p0->k * p0->k >= (long)p1->cin * p1->cout * p1->k * p1->k) break;
            cbn *t = j.u[b]; j.u[b] = j.u[b - 1]; j.u[b - 1] = t;
        }
    double t = dn_now();
    dn_pool_run(net->pool, prebuild_fn, &j);
    dn_clear_error();
    net->prof.prepare_s += dn_now() - t;
}

/* Index of a temporary not in {a, b, c} (each may be -1). */
static int free_temp(int a, int b, int c) {
    for (int i = 0; i < 4; i++)
        if (i != a && i != b && i != c) return i;
    return -1;
}

static int temp_index(const dn_net *net, const float *p) {
    for (int i = 0; i < 4; i++)
        if (p == net->t[i]) return i;
    return -1;
}

/* Eval-mode stage (running statistics, BN folded into the convs, residual and
 * ReLU fused): *out = the temporary holding the output. */
static dn_status stage_eval(dn_net *net, int s, int kind, const float *in, int n, const float **out) {
    dn_status st;
    int ti = temp_index(net, in);
    if (s == 0) {
        cbn *u = &net->stem;
        int a = free_temp(ti, -1, -1), b = free_temp(ti, a, -1);
        if ((st = eval_fwd(net, u, kind, in, n, NULL, 1, net->big))) return st;
        dn_maxpool_fwd(net->big, n, u->oc, u->oh, u->ow, 3, 2, 1, net->t[a], (int32_t *)net->t[b], net->pool);
        *out = net->t[a];
        return DN_OK;
    }
    const float *cur = in;
    for (int i = net->stage_b0[s]; i < net->stage_b0[s + 1]; i++) {
        blk *bk = &net->b[i];
        ti = temp_index(net, cur);
        int a = free_temp(ti, -1, -1), b = free_temp(ti, a, -1), c = free_temp(ti, a, b);
        const float *sc = cur;
        if (bk->has_down) {
            if ((st = eval_fwd(net, &bk->ud, kind, cur, n, NULL, 0, net->t[c]))) return st;
            sc = net->t[c];
        }
        if ((st = eval_fwd(net, &bk->u1, kind, cur, n, NULL, 1, net->t[a])) ||
            (st = eval_fwd(net, &bk->u2, kind, net->t[a], n, sc, 1, net->t[b])))
            return st;
        cur = net->t[b];
    }
    *out = cur;
    return DN_OK;
}

/* Training-mode stage: output lives in the stage's saved buffers. */
static const float *stage_train(dn_net *net, int s, const float *in, int n) {
    dn_pool *pool = net->pool;
    if (s == 0) {
        cbn *u = &net->stem;
        conv_fwd(net, u, in, n, u->c);
        bn_fwd_train(net, u, n, net->stem_a, 1);
        dn_maxpool_fwd(net->stem_a, n, u->oc, u->oh, u->ow, 3, 2, 1, net->mp_out, net->mp_idx, pool);
        return net->mp_out;
    }
    const float *cur = in;
    for (int i = net->stage_b0[s]; i < net->stage_b0[s + 1]; i++) {
        blk *bk = &net->b[i];
        cbn *u1 = &bk->u1, *u2 = &bk->u2;
        bk->in = cur;
        conv_fwd(net, u1, cur, n, u1->c);
        bn_fwd_train(net, u1, n, bk->a1, 1);
        conv_fwd(net, u2, bk->a1, n, u2->c);
        bn_fwd_train(net, u2, n, bk->out, 0);
        const float *sc = cur;
        if (bk->has_down) {
            cbn *ud = &bk->ud;
            conv_fwd(net, ud, cur, n, ud->c);
            bn_fwd_train(net, ud, n, net->t[0], 0);
            sc = net->t[0];
        }
        dn_add_fwd(bk->out, sc, (size_t)n * act_size(u2), bk->out, 1, pool);
        cur = bk->out;
    }
    return cur;
}

/* The eval op in L.fwd no longer matches the weights; it stays allocated for
 * the next prepare to re-pack or replace. */
static void invalidate_one(cbn *u) {
    u->ready = 0;
    u->fwd_ok = u->bwd_ok = 0;
}

static void invalidate_trainable(dn_net *net) {
    if (net->first <= 0) invalidate_one(&net->stem);
    for (int i = 0; i < net->nb; i++) {
        blk *b = &net->b[i];
        if (b->stage < net->first) continue;
        invalidate_one(&b->u1); invalidate_one(&b->u2);
        if (b->has_down) invalidate_one(&b->ud);
    }
}

/* BatchNorm in training mode needs more than one value per channel (PyTorch
 * refuses it too); the smallest per-channel count is at layer4. */
static dn_status check_bn_count(const dn_net *net, int n) {
    if (net->first > 4) return DN_OK;
    const cbn *u = &net->b[net->nb - 1].u2;
    if ((long)n * u->oh * u->ow < 2)
        return dn_fail(DN_ERR_ARG, "training net: batch of %d gives 1 value per channel at layer4 "
                                   "(BatchNorm in training mode needs more)", n);
    return DN_OK;
}

static dn_status check_call(const dn_net *net, int stage, const float *x, int n, const float *logits) {
    if (!x || !logits) return dn_fail(DN_ERR_ARG, "training net: NULL input or logits");
    if (n < 1 || n > net->maxb) return dn_fail(DN_ERR_ARG, "training net: batch %d not in 1..%d", n, net->maxb);
    if (stage < 0 || stage > 5) return dn_fail(DN_ERR_ARG, "training net: stage %d not in 0..5", stage);
    return DN_OK;
}

static void head_fwd(dn_net *net, const float *x4, int start, const float *x, int n, float *logits) {
    dn_model *m = net->m;
    if (start == 5) memcpy(net->feat, x, sizeof(float) * n * m->feat_dim);
    else {
        const cbn *u = &net->b[net->nb - 1].u2;
        dn_avgpool_fwd(x4, n, u->oc, u->oh * u->ow, net->feat);
    }
    dn_linear_fwd(net->feat, n, m->feat_dim, m->num_classes, m->fc_w, m->fc_b, logits);
}

dn_status dn_net_forward_from(dn_net *net, int stage, const float *x, int n, float *logits) {
    dn_status st;
    net->pending = 0;
    if ((st = check_call(net, stage, x, n, logits))) return st;
    if (stage > net->first)
        return dn_fail(DN_ERR_ARG, "training net: cannot start at stage %d after the first trainable stage %d",
                       stage, net->first);
    if ((st = check_bn_count(net, n))) return st;
    invalidate_trainable(net); /* weights may have moved since an eval forward built ops */
    if ((st = ensure_temps(net, stage))) return st;
    const float *cur = x;
    for (int s = stage; s < net->first && s <= 4; s++)
        if ((st = stage_eval(net, s, EV_PLAIN, cur, n, &cur))) return st;
    if (net->first <= 4) {
        memcpy(net->x0, cur, sizeof(float) * n * input_numel(net, net->first));
        cur = net->x0;
        net->training = 1;
        prebuild(net, 1, n);
        for (int s = net->first; s <= 4; s++) cur = stage_train(net, s, cur, n);
        net->training = 0;
    }
    head_fwd(net, cur, stage, x, n, logits);
    net->last_n = n;
    net->pending = 1;
    return DN_OK;
}

dn_status dn_net_forward(dn_net *net, const float *x, int n, float *logits) {
    return dn_net_forward_from(net, 0, x, n, logits);
}

dn_status dn_net_eval_forward(dn_net *net, int stage, const float *x, int n, float *logits) {
    dn_status st;
    net->pending = 0;
    if ((st = check_call(net, stage, x, n, logits))) return st;
    if ((st = ensure_temps(net, stage))) return st;
    const float *cur = x;
    for (int s = stage; s <= 4; s++)
        if ((st = stage_eval(net, s, EV_FOLDED, cur, n, &cur))) return st;
    head_fwd(net, cur, stage, x, n, logits);
    return DN_OK;
}

/* ------------------------------------------------------------ backward */

/* Gradient in t[g] w.r.t. the block output; returns the temporary holding the
 * gradient w.r.t. the block input (or -1 if need_dx is 0). */
static int block_bwd(dn_net *net, blk *bk, int g, int n, int need_dx) {
    dn_pool *pool = net->pool;
    int a = free_temp(g, -1, -1), b = free_temp(g, a, -1), c = free_temp(g, a, b);
    float *G = net->t[g], *A = net->t[a], *B = net->t[b], *C = net->t[c];
    cbn *u1 = &bk->u1, *u2 = &bk->u2;
    size_t cnt = (size_t)n * act_size(u2);
    dn_relu_bwd(bk->out, G, cnt, G, pool);
    bn_bwd(net, u2, NULL, G, n, 0, A);
    conv_bwd(net, u2, bk->a1, n, A, B);
    bn_bwd(net, u1, bk->a1, B, n, 1, B);
    conv_bwd(net, u1, bk->in, n, B, need_dx ? C : NULL);
    size_t icnt = (size_t)n * in_size(u1);
    if (bk->has_down) {
        cbn *ud = &bk->ud;
        bn_bwd(net, ud, NULL, G, n, 0, A);
        conv_bwd(net, ud, bk->in, n, A, need_dx ? B : NULL);
        if (need_dx) dn_add_inplace(C, B, icnt, pool);
    } else if (need_dx) {
        dn_add_inplace(C, G, icnt, pool);
    }
    return need_dx ? c : -1;
}

dn_status dn_net_backward(dn_net *net, const float *dlogits) {
    if (!net->pending)
        return dn_fail(DN_ERR_ARG, "training net: backward without a preceding training forward");
    if (!dlogits) return dn_fail(DN_ERR_ARG, "training net: NULL dlogits");
    net->pending = 0;
    dn_model *m = net->m;
    int n = net->last_n;
    int need_feat_grad = net->first <= 4;
    float *dfeat = need_feat_grad ? net->t[3] : NULL;
    dn_linear_bwd(net->feat, dlogits, n, m->feat_dim, m->num_classes, m->fc_w, dfeat, net->dfc_w, net->dfc_b);
    if (!need_feat_grad) return DN_OK;
    const cbn *last = &net->b[net->nb - 1].u2;
    int hw = last->oh * last->ow;
    dn_avgpool_bwd(dfeat, n, last->oc, hw, net->t[0]);
    prebuild(net, 0, n);
    int g = 0;
    for (int i = net->nb - 1; i >= 0; i--) {
        blk *bk = &net->b[i];
        if (bk->stage < net->first) break;
        int need_dx = i > 0 && net->b[i - 1].stage >= net->first ? 1 : (net->first == 0);
        g = block_bwd(net, bk, g, n, need_dx);
    }
    if (net->first == 0) {
        cbn *u = &net->stem;
        dn_maxpool_bwd(net->t[g], net->mp_idx, n, u->oc, u->oh, u->ow, net->mp_h, net->mp_w, net->big, net->pool);
        bn_bwd(net, u, net->stem_a, net->big, n, 1, net->big);
        conv_bwd(net, u, net->x0, n, net->big, NULL);
    }
    return DN_OK;
}
