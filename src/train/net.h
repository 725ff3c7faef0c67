/* Trainable ResNet (BasicBlock) graph over a dn_model: training-mode forward,
 * backward, parameter list for the optimizers, eval-mode forward for validation.
 *
 * Stages (forward order), used for freezing and for starting from a cache:
 *   0 = stem (conv1, bn1, relu, maxpool)   1..4 = layer1..layer4
 *   5 = head (global average pool + fc)
 * "first trainable stage" k: stages < k are frozen, stages >= k are trained.
 *   freeze "none" -> 0, "stem" -> 1, "layer1" -> 2, "layer2" -> 3,
 *   "layer3" -> 4 (layer4 + fc trainable), "layer4"/"backbone" -> 5 (fc only),
 *   or the digit "0".."5".
 *
 * Semantics (identical to PyTorch with frozen modules put in eval()):
 *  - frozen stages run BatchNorm in eval mode (running statistics), their
 *    running stats are never touched and they get no gradients;
 *  - trainable BatchNorm uses batch statistics (biased variance to normalise)
 *    and updates running_mean/var with momentum 0.1 (running_var from the
 *    unbiased variance) and num_batches_tracked += 1 on every training forward;
 *  - backward accumulates (+=) into the grads of trainable parameters only;
 *    call dn_net_zero_grad before each step.
 *
 * Ownership: the net BORROWS the dn_model passed to dn_net_new; the model must
 * outlive the net and must not be used by anyone else while the net trains.
 * Parameters and BN buffers are updated IN PLACE in the model's arrays
 * (dn_param.data points into the model), so the model always holds the current
 * weights: "writing back" is implicit (dn_net_sync refreshes the net's cached
 * conv operators after someone else modified the model's arrays).
 * Gradient arrays, activations and scratch are owned by the net and planned for
 * max_batch at in_h x in_w: saved activations and grads in dn_net_new,
 * temporaries and conv scratch on the first forward; the conv ops (packed
 * copies of the weights, forward and data gradient, both kept) on the first
 * step, then re-packed in place after each update. Per step, only the GEMMs'
 * packing buffers may be allocated.
 * A net is used by one thread at a time; it runs its own thread pool.
 *
 * Convolutions: forward and stride-1 data gradients run through the kernels'
 * dn_conv_op (re-packed from the updated weights every step, in parallel),
 * weight gradients by the im2col-free AVX-512 kernel or the Winograd
 * F(3x3,2x2) one (src/nn/wgrad.h), else as multi-image GEMMs (src/nn/layers.h),
 * strided data gradients as GEMMs. Environment
 * DN_TRAIN_CONV=auto (default: Winograd F(4x4,3x3) for 3x3 stride-1 convs over
 * >= 4096 output pixels per call, where its per-step weight transform pays off;
 * ~1e-5 relative error) | direct (exact direct everywhere) | winograd | ref.
 * Frozen stages inside a training forward run conv then eval-mode BN in
 * PyTorch's order; dn_net_eval_forward folds BN into the convs (fastest). */
#ifndef DN_TRAIN_NET_H
#define DN_TRAIN_NET_H
#include "nn/model.h"
#include "core/core.h"

enum {
    DN_STAGE_STEM = 0,
    DN_STAGE_LAYER1 = 1,
    DN_STAGE_LAYER2 = 2,
    DN_STAGE_LAYER3 = 3,
    DN_STAGE_LAYER4 = 4,
    DN_STAGE_HEAD = 5
};

/* Parse a freeze spec (see above) into the first trainable stage. */
dn_status dn_freeze_parse(const char *spec, int *first_trainable);

/* Parameter groups: pretrained backbone (stages 0..4) vs the new head (fc), so
 * the optimizer can give unfrozen pretrained layers a lower learning rate. */
typedef enum { DN_PARAM_BACKBONE = 0, DN_PARAM_HEAD = 1 } dn_param_group;

typedef struct dn_param {
    const char *name;   /* torchvision name ("layer4.1.bn2.weight"), owned by the net */
    float *data;        /* numel floats inside the dn_model (updated in place) */
    float *grad;        /* numel floats owned by the net */
    int64_t numel;
    int group;          /* dn_param_group */
    int is_norm_or_bias;/* 1 for BN weight/bias and fc.bias (callers may skip weight decay) */
} dn_param;

typedef struct dn_net dn_net;

/* Create a trainable net over m (borrowed, see above). m must have a head
 * (num_classes > 0). first_trainable in 0..5. Buffers are planned for batches
 * of up to max_batch images of 3 x in_h x in_w. threads <= 0: all cores. */
dn_status dn_net_new(dn_model *m, int first_trainable, int max_batch, int in_h, int in_w,
                     int threads, dn_net **out);
void dn_net_free(dn_net *net);

/* Change the frozen prefix (staged schedules: head first, then unfreeze).
 * Invalidates the pointer returned by dn_net_params (re-fetch it); grads of
 * newly trainable parameters start at zero. */
dn_status dn_net_set_first_trainable(dn_net *net, int first_trainable);
int dn_net_first_trainable(const dn_net *net);

/* Trainable parameters in torchvision order (owned by the net; valid until the
 * next dn_net_set_first_trainable / dn_net_free). */
const dn_param *dn_net_params(const dn_net *net, int *count);
void dn_net_zero_grad(dn_net *net);

/* Shape of the activation that enters `stage` for one image: stage 0 -> the
 * image (3, in_h, in_w); 1..4 -> output of the previous stage (C, H, W) as
 * dn_session_forward_to(stage-1) returns it (stage 1 = after the max-pool);
 * 5 -> pooled features (feat_dim, 1, 1). */
void dn_net_input_shape(const dn_net *net, int stage, int *c, int *h, int *w);

/* Training-mode forward of n <= max_batch images x [n][3][in_h][in_w];
 * logits [n][num_classes]. Updates running stats of trainable BN layers and
 * keeps what backward needs. */
dn_status dn_net_forward(dn_net *net, const float *x, int n, float *logits);
/* Same, but x is the activation entering `stage` (shape dn_net_input_shape),
 * e.g. cached layer3 outputs with stage 4, or pooled features with stage 5.
 * Requires stage <= first_trainable (stages before it are not run). */
dn_status dn_net_forward_from(dn_net *net, int stage, const float *x, int n, float *logits);
/* Backward of the last training forward: dlogits [n][num_classes] (same n),
 * e.g. from dn_ce_loss. Accumulates into trainable grads. */
dn_status dn_net_backward(dn_net *net, const float *dlogits);

/* Eval-mode forward (running statistics, nothing updated, nothing kept for
 * backward) from `stage` (0 = images; any stage 0..5). It reuses the activation
 * buffers, so call it between steps, never between a training forward and its
 * backward. */
dn_status dn_net_eval_forward(dn_net *net, int stage, const float *x, int n, float *logits);

/* Refresh anything the net derived from the model's arrays: the packed conv
 * operators of frozen layers (built once) and those eval forwards build for
 * trainable layers (kept across eval calls until the next training forward).
 * Call it after the model's weights changed any other way than through a
 * training forward + backward + optimizer step, e.g. a checkpoint restore into
 * the same arrays, or an optimizer step followed directly by eval forwards.
 * Parameters themselves already live in the model. */
dn_status dn_net_sync(dn_net *net);

dn_model *dn_net_model(dn_net *net);
/* The net's thread pool (owned by the net), e.g. for dn_optim_set_pool. */
dn_pool *dn_net_pool(dn_net *net);

/* Time (seconds) and work (FLOP, 2 per multiply-add) spent since creation or the
 * last reset, by kind; for benchmarks and profiles. */
typedef struct dn_net_profile {
    double conv_fwd_s, conv_bwd_data_s, conv_bwd_weight_s, bn_fwd_s, bn_bwd_s;
    double prepare_s;         /* rebuilding conv ops from the updated weights */
    double conv_fwd_flop, conv_bwd_data_flop, conv_bwd_weight_flop;
} dn_net_profile;
void dn_net_get_profile(const dn_net *net, dn_net_profile *out);
void dn_net_reset_profile(dn_net *net);
#endif
