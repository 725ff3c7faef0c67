/* Reduced-precision deployment of a model, opt-in per model, with an accuracy
 * guard (issue 4 item 3).
 *
 * The choice lives in the model metadata (saved with the model, shown by
 * `defectnet info`):
 *   quant.mode              "bf16": every conv in bf16 (AVX512_BF16, fp32 accumulation);
 *                           "winograd": fp32 Winograd F(4x4,3x3) for 3x3 stride-1 convs;
 *                           "bf16+winograd": Winograd for 3x3 stride-1, bf16 for the rest;
 *                           "int8": every conv with a calibrated input scale in int8 (VNNI;
 *                           record quant.int8, nn/quant_int8.h), the stem fp32;
 *                           absent or "fp32" = exact fp32 (direct)
 *   quant.fp32_layers       comma-separated conv names kept in fp32 by the guard
 *                           ("conv1", "layer2.0.conv1", "layer2.0.downsample.0", ...)
 *   quant.top1_agreement    top-1 agreement with fp32 on the validation set (0..1)
 *   quant.val_images        number of validation images
 *   quant.val_accuracy      "fp32 A -> MODE B" (top-1 accuracy, labelled images)
 *   quant.per_class_delta_pt JSON object class -> accuracy change in points
 *   quant.max_class_drop_pt largest per-class accuracy drop in points
 * The engine asks dn_quant_conv_impl for every conv when it builds a session:
 * with DN_CONV_AUTO requested, a quantized model runs its convs as its mode says
 * except the fp32 layers (exact direct); an explicitly requested implementation
 * always wins.
 *
 * int8 uses the model's activation scales (dn_int8_calibrate, nn/quant_int8.h,
 * called first on calibration images); a model without them is calibrated here
 * on the validation images with the default method. Then the same guard. */
#ifndef DN_QUANT_H
#define DN_QUANT_H
#include "kernels/kernels.h"
#include "nn/model.h"
#include <stdio.h>

#define DN_META_QUANT_MODE "quant.mode"
#define DN_META_QUANT_FP32 "quant.fp32_layers"
#define DN_META_QUANT_AGREE "quant.top1_agreement"
#define DN_META_QUANT_NVAL "quant.val_images"
#define DN_META_QUANT_ACC "quant.val_accuracy"
#define DN_META_QUANT_CLASS "quant.per_class_delta_pt"
#define DN_META_QUANT_DROP "quant.max_class_drop_pt"

/* Convs in engine order: conv1, then per block conv1, conv2, downsample.0. */
int dn_quant_conv_count(const dn_model *m);
/* Name of conv i (torchvision module name, e.g. "layer3.1.conv2"); buf >= 32 bytes. */
void dn_quant_conv_name(const dn_model *m, int i, char *buf, size_t n);
/* 1 for "fp32", "bf16", "winograd", "bf16+winograd", "int8". */
int dn_quant_mode_valid(const char *mode);
/* Implementation for the named conv given the caller's request (see above). */
dn_conv_impl dn_quant_conv_impl(const dn_model *m, const char *conv_name, dn_conv_impl requested);

typedef struct dn_quant_opts {
    const char *mode;       /* "bf16", "winograd", "bf16+winograd", "int8" */
    double min_agreement;   /* e.g. 0.995 */
    int fallback;           /* 1: keep fp32 for the layers that cause disagreement (greedy); 0: refuse */
    int threads;            /* <= 0: all cores */
    int batch;              /* forward batch size, >= 1 */
    FILE *log;              /* progress lines (may be NULL) */
} dn_quant_opts;

typedef struct dn_quant_result {
    int ok;                 /* 1: agreement >= min_agreement with the stored layer choice */
    int nval, nconv, n_fp32_layers;
    double agreement, acc_fp32, acc_q, max_class_drop_pt;
} dn_quant_result;

/* Validates reduced precision on nval preprocessed images x (n x 3 x crop x crop,
 * the model's preprocessing) with labels (index into the model's classes, or -1
 * if unknown: counted for agreement only). On DN_OK the quant.* metadata of m is
 * set (mode "fp32" with the measured figures if the guard refused) and *r
 * filled. m must not be used by a session concurrently (its metadata changes). */
dn_status dn_quantize(dn_model *m, const float *x, const int *labels, int nval, const dn_quant_opts *o,
                      dn_quant_result *r);
#endif
