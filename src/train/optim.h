/* Optimizers over a dn_param list (src/train/net.h), numerically as PyTorch 1.13
 * (single-tensor, non-foreach code path):
 *
 * SGD (torch.optim.SGD; dampening d, momentum mu, weight_decay wd, nesterov):
 *   g = grad + wd * p
 *   if mu != 0: buf = g on the first step, else buf = mu * buf + (1 - d) * g
 *               g = nesterov ? g + mu * buf : buf
 *   p -= lr * g
 * AdamW (torch.optim.AdamW; decoupled decay, bias correction, eps outside sqrt):
 *   t += 1; p *= 1 - lr * wd
 *   m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g * g
 *   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * The lr passed to dn_optim_step is multiplied by cfg.group_lr_mult[param.group]
 * (e.g. 0.1 for the pretrained backbone, 1 for the head); weight decay uses that
 * effective lr too (like a PyTorch param group with its own lr). The multiplier
 * scales the whole schedule, so it equals PyTorch param groups driven by one
 * scheduler exactly when the schedule's eta_min is 0 (PyTorch's eta_min is an
 * absolute floor shared by all groups).
 *
 * Ownership: the optimizer copies the dn_param descriptors (not the arrays: data
 * and grad stay owned by the net) and owns its state arrays. */
#ifndef DN_TRAIN_OPTIM_H
#define DN_TRAIN_OPTIM_H
#include "train/net.h"
#include "core/tensor.h"

typedef enum { DN_OPT_SGD = 0, DN_OPT_ADAMW = 1 } dn_optim_kind;

typedef struct dn_optim_cfg {
    dn_optim_kind kind;
    float momentum;          /* SGD (PyTorch default 0; we default 0.9) */
    float dampening;         /* SGD, 0 */
    int nesterov;            /* SGD, requires momentum > 0 and dampening == 0 */
    float weight_decay;      /* SGD: L2 into the grad; AdamW: decoupled (default 0.01) */
    float beta1, beta2, eps; /* AdamW: 0.9, 0.999, 1e-8 */
    float group_lr_mult[2];  /* per dn_param_group: [DN_PARAM_BACKBONE], [DN_PARAM_HEAD] */
    int no_decay_norm_bias;  /* 1: no weight decay for params with is_norm_or_bias */
} dn_optim_cfg;

/* PyTorch defaults for kind (SGD: momentum 0.9, wd 0; AdamW: betas (0.9, 0.999),
 * eps 1e-8, wd 0.01), group multipliers 1, decay on every parameter. */
void dn_optim_cfg_default(dn_optim_cfg *cfg, dn_optim_kind kind);

typedef struct dn_optim dn_optim;

/* Checks cfg (DN_ERR_ARG naming the bad field). State starts empty. */
dn_status dn_optim_new(const dn_optim_cfg *cfg, const dn_param *params, int n, dn_optim **out);
void dn_optim_free(dn_optim *o);
/* One update of every parameter with its grad, at base learning rate lr. */
dn_status dn_optim_step(dn_optim *o, float lr);
/* Spread dn_optim_step over a thread pool (borrowed: it must outlive the
 * optimizer or be unset with NULL), e.g. dn_net_pool(net). Results are the same
 * with or without (the update is elementwise). */
void dn_optim_set_pool(dn_optim *o, dn_pool *pool);
/* Re-target at a new parameter list (after dn_net_set_first_trainable): state
 * of parameters with the same name is kept, new ones start fresh. */
dn_status dn_optim_rebind(dn_optim *o, const dn_param *params, int n);
/* Number of dn_optim_step calls so far (restored by dn_optim_state_load). */
int64_t dn_optim_steps(const dn_optim *o);

/* Checkpointing. Appends the state as named tensors to out (copies):
 *   "optim.step" [1], and per parameter that has state:
 *   "optim.<name>.step" [1], SGD "optim.<name>.momentum_buffer",
 *   AdamW "optim.<name>.exp_avg", "optim.<name>.exp_avg_sq" (numel each).
 * dn_optim_state_load reads them back (ignores other keys, so a checkpoint can
 * hold the model too); a missing or mis-sized entry is DN_ERR_SHAPE naming it,
 * a kind mismatch (e.g. SGD state into AdamW) DN_ERR_FORMAT. */
dn_status dn_optim_state_save(const dn_optim *o, dn_tensors *out);
dn_status dn_optim_state_load(dn_optim *o, const dn_tensors *in);
#endif
