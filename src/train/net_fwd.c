/* Trainable ResNet graph, second half: timed layer calls, the training and
 * eval forwards, and the backward. Construction, parameters and the memory
 * plan (see the comment at the top of net.c): net.c. */
#include "train/net.h"
#include "train/net_priv.h"
#include "nn/layers.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

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
    if ((st = dn_net_ensure_temps(net, stage))) return st;
    const float *cur = x;
    for (int s = stage; s < net->first && s <= 4; s++)
        if ((st = stage_eval(net, s, EV_PLAIN, cur, n, &cur))) return st;
    if (net->first <= 4) {
        memcpy(net->x0, cur, sizeof(float) * n * dn_net_input_numel(net, net->first));
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
    if ((st = dn_net_ensure_temps(net, stage))) return st;
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
