/* The ResNet (BasicBlock) model as parameters. Shapes come from the weight file,
 * so ResNet-18/34 and narrower test networks of the same key layout all fit.
 *
 * Ownership: a dn_model owns every array below. After dn_model_load / training
 * hands it out it is treated as immutable by inference (dn_session never writes
 * to it); the trainer owns its own model copy while training.
 *
 * Parameter names follow torchvision exactly ("conv1.weight", "bn1.running_mean",
 * "layer2.0.downsample.1.weight", "fc.bias", ...). */
#ifndef DN_MODEL_H
#define DN_MODEL_H
#include "defectnet.h"
#include "core/tensor.h"

typedef struct dn_conv_p {
    int cin, cout, k, stride, pad;
    float *w;                 /* [cout][cin][k][k] (OIHW), no bias (ResNet convs have none) */
} dn_conv_p;

typedef struct dn_bn_p {
    int c;
    float eps;                /* 1e-5 */
    float *weight, *bias;     /* gamma, beta [c] */
    float *mean, *var;        /* running statistics [c] */
    float num_batches_tracked;
} dn_bn_p;

typedef struct dn_block_p {   /* torchvision BasicBlock */
    dn_conv_p conv1; dn_bn_p bn1;
    dn_conv_p conv2; dn_bn_p bn2;
    int has_down;             /* 1x1 stride-s conv + BN shortcut */
    dn_conv_p down; dn_bn_p down_bn;
} dn_block_p;

#define DN_MAX_BLOCKS 64
#define DN_MAX_CLASSES 4096

struct dn_model {
    char arch[32];            /* "resnet18", "resnet34", or "resnet-custom" */
    int layers[4];            /* blocks per stage: {2,2,2,2} for resnet18 */
    int widths[4];            /* channels per stage: {64,128,256,512} */
    dn_conv_p conv1;          /* 7x7 stride 2 pad 3 stem */
    dn_bn_p bn1;
    dn_block_p blocks[DN_MAX_BLOCKS]; /* stage-major: layer1.0, layer1.1, layer2.0, ... */
    int nblocks;
    int feat_dim;             /* = widths[3] */
    int num_classes;          /* 0 if the model has no head (backbone only) */
    float *fc_w;              /* [num_classes][feat_dim] */
    float *fc_b;              /* [num_classes] */

    char **class_names;       /* num_classes strings (defaults "class_0"...) */
    dn_preproc pp;
    float temperature;        /* calibration: logits / T before softmax (1 = none) */
    float threshold;          /* confidence below which a prediction is "uncertain" (0 = never) */
    char source_sha256[65];   /* sha256 of the weights the model came from ("" if unknown) */
    char sha256[65];          /* sha256 of the file it was loaded from ("" if built in memory) */
    dn_meta meta;             /* every other metadata key (quantization guard, recipe, ...) */
    struct dn_ood *ood;       /* unknown-input detection data (src/ood/ood.h), owned; NULL = none */
};

/* Build a model from named tensors (torchvision state_dict keys). Shapes are
 * checked against each other; missing/unexpected keys are reported by name.
 * If skip_fc, any fc.* tensors are ignored and the model has no head. */
dn_status dn_model_from_tensors(const dn_tensors *ts, int skip_fc, dn_model **out);
/* Inverse: all parameters and buffers under torchvision names (copies). */
dn_status dn_model_to_tensors(const dn_model *m, dn_tensors *out);
/* Replace the head with a fresh Linear(feat_dim, n) initialised as PyTorch's
 * nn.Linear: kaiming_uniform(a=sqrt(5)) => U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
 * weight and bias. class_names (n strings) are copied. */
dn_status dn_model_new_head(dn_model *m, int n, const char *const *class_names, uint64_t seed);
/* Deep copy. */
dn_status dn_model_clone(const dn_model *m, dn_model **out);
/* Enumerate every tensor (parameter or buffer) with its torchvision name. */
typedef void (*dn_param_fn)(void *ctx, const char *name, float *data, int64_t numel, int is_buffer);
void dn_model_foreach(dn_model *m, dn_param_fn fn, void *ctx);
int64_t dn_model_param_count(const dn_model *m);
#endif
