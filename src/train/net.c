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
#include "nn/arch.h"
#include "nn/layers.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/net_priv.h"

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

size_t dn_net_input_numel(const dn_net *net, int stage) {
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

dn_status dn_net_ensure_temps(dn_net *net, int from) {
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
    if (net->first <= 0) {
        char c0[48], b0[48];
        dn_arch_names(-1, -1, DN_ARCH_STEM, c0, b0, sizeof c0);
        cbn_params(pl, &net->stem, c0, b0);
    }
    for (int i = 0; i < net->nb; i++) {
        blk *b = &net->b[i];
        if (b->stage < net->first) continue;
        int s = b->stage, idx = i - net->stage_b0[s];
        char c1[48], b1[48], c2[48], b2[48], cd[48], bd[48];
        dn_arch_names(s - 1, idx, DN_ARCH_CONV1, c1, b1, sizeof c1); /* b->stage counts layer1 as 1 */
        dn_arch_names(s - 1, idx, DN_ARCH_CONV2, c2, b2, sizeof c2);
        dn_arch_names(s - 1, idx, DN_ARCH_DOWN, cd, bd, sizeof cd);
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
    if (f <= 4 && !(net->x0 = act_alloc(net, dn_net_input_numel(net, f)))) goto nomem;
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
