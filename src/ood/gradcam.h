/* Grad-CAM heatmaps (Selvaraju et al. 2017) from the C backward pass.
 *
 * For class c and the output A (C x h x w) of stage L (1..4 = layer1..layer4),
 * the gradient G = d logit_c / d A is back-propagated in eval mode (BatchNorm
 * with running statistics) through the blocks after L, the global average pool
 * and the fc layer with the training layers' backward kernels (src/nn/layers.h);
 * weights alpha_k = mean over h x w of G_k, and cam = ReLU(sum_k alpha_k A_k).
 * Same definition as the usual PyTorch recipe (hooks on the stage output,
 * logit.backward()); tools/gradcam_ref.py writes the reference.
 *
 * Colour scale: overlays divide the map by an absolute reference, the 99th
 * percentile of the predicted-class maps over calibration images, stored in the
 * model's OOD record (dn_ood.cam_ref[L-1], written by `defectnet calibrate`),
 * so a part with little evidence stays cool instead of being stretched to red. */
#ifndef DN_GRADCAM_H
#define DN_GRADCAM_H
#include "core/core.h"
#include "nn/engine.h"
#include "nn/model.h"

/* One preprocessed image x (3 x H x W, H x W = the session's input size) through
 * s (a session on m). cls < 0: the predicted class. cam receives h x w floats
 * (the stage's map size, see dn_session_stage_shape; *ch, *cw set); *cls_out the
 * class used, *pred the predicted one (either may be NULL). Allocates its
 * temporaries per call. */
dn_status dn_gradcam(const dn_model *m, dn_session *s, const float *x, int layer, int cls, float *cam, int *ch, int *cw,
                     int *cls_out, int *pred);

/* The absolute colour scale: per layer 1..4, the 99th percentile of the
 * predicted-class Grad-CAM values over n image files (decoded and preprocessed
 * with m's contract; unreadable ones skipped). */
dn_status dn_gradcam_reference(const dn_model *m, const char *const *paths, int n, float ref[4]);

/* "layer1".."layer4" (or "1".."4") -> 1..4; -1 otherwise. */
int dn_gradcam_layer_parse(const char *s);

/* Overlay of cam (ch x cw) over the preprocessed image x (3 x H x W, undone
 * with pp's mean/std) as an RGB image of H x W: cam / ref (ref <= 0: the map's
 * own maximum) bilinearly upsampled, clipped to [0, 1], a blue-green-yellow-red
 * scale blended at 50% where the value is above 0.05. out->data malloc'ed. */
dn_status dn_gradcam_overlay(const float *x, int H, int W, const dn_preproc *pp, const float *cam, int ch, int cw, float ref,
                             dn_image *out);

/* The whole heatmap of one preprocessed image x (as dn_gradcam, s a session on m):
 * the map for class cls (< 0: predicted) at `layer`, overlaid with the model's absolute
 * colour reference (dn_ood.cam_ref; none: each map's own maximum) and PNG-encoded into
 * *png (malloc'ed, *len bytes). *used / *pred (each may be NULL) = the class drawn / the
 * predicted class. x is only read. */
dn_status dn_gradcam_png(const dn_model *m, dn_session *s, const float *x, int layer, int cls, uint8_t **png, size_t *len,
                         int *used, int *pred);
#endif
