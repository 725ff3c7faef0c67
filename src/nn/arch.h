/* The network's layer list: the one place that knows the torchvision names of the ResNet's
 * convolutions and their batch norms ("conv1"/"bn1", "layer2.0.conv1"/"layer2.0.bn1",
 * "layer2.0.downsample.0"/"layer2.0.downsample.1", ...) and their order.
 *
 * Order ("engine order", also torchvision's state_dict order of the convs): the stem,
 * then per block (stage-major, layer1.0, layer1.1, layer2.0, ...) conv1, conv2 and, when
 * the block has one, the downsample shortcut.
 *
 * Used by the model's tensor binding (resnet.c), the inference plan (engine.c), the
 * quantization choice (quant.c), random init and the trainable net (src/train). */
#ifndef DN_NN_ARCH_H
#define DN_NN_ARCH_H
#include "nn/model.h"
#include <stddef.h>

enum {
    DN_ARCH_STEM = 0,  /* "conv1" / "bn1" */
    DN_ARCH_CONV1,     /* "layerS.B.conv1" / "layerS.B.bn1" */
    DN_ARCH_CONV2,     /* "layerS.B.conv2" / "layerS.B.bn2" */
    DN_ARCH_DOWN,      /* "layerS.B.downsample.0" / "layerS.B.downsample.1" */
    DN_ARCH_BLOCK      /* the block itself: "layerS.B" (conv), bn unused ("") */
};

/* Longest name the functions below write, with room for a ".running_mean" suffix. */
#define DN_ARCH_NAME_MAX 48

/* torchvision names of one conv and its BN. stage: 0..3 (layer1..layer4; ignored for the
 * stem), block: index within the stage, kind: DN_LAYER_*. conv/bn may be NULL; each holds
 * n bytes. */
void dn_arch_names(int stage, int block, int kind, char *conv, char *bn, size_t n);

/* One conv + BN of a model. */
typedef struct dn_arch_conv {
    int index;              /* engine order: 0 = stem */
    int kind;               /* DN_ARCH_STEM | _CONV1 | _CONV2 | _DOWN */
    int stage, block;       /* 0..3 and index within the stage; -1, -1 for the stem */
    int gblock;             /* index into m->blocks; -1 for the stem */
    char conv[DN_ARCH_NAME_MAX], bn[DN_ARCH_NAME_MAX];
    dn_conv_p *conv_p;      /* the parameters inside the model (writable when the model is) */
    dn_bn_p *bn_p;
} dn_arch_conv;

/* Number of convs of m (1 + 2 per block + 1 per downsample shortcut). */
int dn_arch_count(const dn_model *m);
/* The i-th conv of m in engine order: 0, or -1 when i is out of range. Walk all with
 *   dn_arch_conv l; for (int i = 0; !dn_arch_at(m, i, &l); i++) ... */
int dn_arch_at(const dn_model *m, int i, dn_arch_conv *out);
/* The conv named name ("layer2.0.downsample.0"): 0, or -1 when m has none. */
int dn_arch_find(const dn_model *m, const char *name, dn_arch_conv *out);

#endif
