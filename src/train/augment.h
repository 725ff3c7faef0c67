/* Training-time augmentations for defect images, each switchable, all driven
 * by a caller-provided dn_rng so a run is deterministic for a seed.
 *
 * They work on 8-bit RGB dn_images (before normalisation), in this order:
 *   1. random resized crop (torchvision RandomResizedCrop semantics: area
 *      fraction in [scale_min, 1], aspect ratio log-uniform in [3/4, 4/3],
 *      10 tries then a centre crop of the clamped ratio; bilinear resize of the
 *      crop to out_size x out_size);
 *   2. horizontal flip, vertical flip (each with p = 0.5);
 *   3. rotation by k * 90 degrees, k uniform in {0,1,2,3};
 *   4. brightness / contrast jitter (torchvision ColorJitter: brightness factor
 *      b in [1-jb, 1+jb] multiplies pixels; contrast factor c in [1-jc, 1+jc]
 *      blends with the mean grey level; order random; results clamped to [0,255]).
 * Flips, rotations and jitter are label-preserving for surface/PCB defects,
 * which have no canonical orientation.
 *
 * Ownership: dn_augment returns a new image in *out (caller frees with
 * dn_image_free); the input is not modified. */
#ifndef DN_AUGMENT_H
#define DN_AUGMENT_H
#include "core/core.h"

enum {
    DN_AUG_FLIP = 1,    /* horizontal + vertical flips */
    DN_AUG_ROT90 = 2,   /* 90 degree rotations */
    DN_AUG_RRC = 4,     /* random resized crop */
    DN_AUG_JITTER = 8   /* brightness / contrast jitter */
};

typedef struct dn_aug {
    unsigned flags;       /* DN_AUG_* bits */
    float scale_min;      /* RRC smallest area fraction (default 0.5: defects can be small) */
    int out_size;         /* RRC output side; 0 = keep the source size (crop then resize back) */
    float jitter_b, jitter_c; /* default 0.2 each */
} dn_aug;

/* Defaults: flags = FLIP|ROT90|RRC|JITTER, scale_min 0.5, jitter 0.2/0.2, out_size 0. */
void dn_aug_default(dn_aug *a);
/* Parse "flip,rot90,rrc,jitter" (any subset, "none" = nothing) into flags. */
dn_status dn_aug_parse(const char *spec, unsigned *flags);
/* Formats flags back into the canonical spec (buf >= 32 bytes). */
void dn_aug_format(unsigned flags, char *buf, size_t n);

/* Applies the enabled augmentations to in, drawing from rng. */
dn_status dn_augment(const dn_image *in, const dn_aug *a, dn_rng *rng, dn_image *out);

/* Building blocks (exposed for tests). Each writes a new image to *out. */
dn_status dn_img_crop_resize(const dn_image *in, int x0, int y0, int cw, int ch, int ow, int oh, dn_image *out);
dn_status dn_img_flip(const dn_image *in, int horizontal, dn_image *out);
dn_status dn_img_rot90(const dn_image *in, int k, dn_image *out); /* k quarter turns counter-clockwise */
#endif
