/* Private types and helpers shared by net.c (construction, parameters) and
 * net_fwd.c (forward, backward). */
#ifndef DN_TRAIN_NET_PRIV_H
#define DN_TRAIN_NET_PRIV_H

#include "train/net.h"
#include "nn/layers.h"
#include <stddef.h>

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

/* Eval-mode conv kinds (see eval_fwd in net_fwd.c). */
enum { EV_FOLDED = 1, EV_PLAIN = 2 };

static inline size_t act_size(const cbn *u) { return (size_t)u->oc * u->oh * u->ow; }
static inline size_t in_size(const cbn *u) { return (size_t)u->in_c * u->in_h * u->in_w; }

/* Per-image element count of the input of stage (0 = stem .. 5 = head). */
size_t dn_net_input_numel(const dn_net *net, int stage);
/* Grows the temporaries and conv scratch for stages >= from. */
dn_status dn_net_ensure_temps(dn_net *net, int from);

#endif
