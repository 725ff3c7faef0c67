/* Synthetic defect images: grayscale metal-like textures (value noise,
 * rolling streaks, grain) with one defect type per class. The out-of-the-box
 * dataset of the demo (train -> eval -> serve without downloaded data).
 *
 * Classes (natural order): clean, crack, inclusion, patch, scratch, spot.
 *  - clean:     texture only;
 *  - crack:     thin dark jagged random-walk line with branches;
 *  - inclusion: a cluster of short elongated dark or bright flecks aligned
 *               with the rolling direction;
 *  - patch:     a large soft-edged irregular region of shifted brightness;
 *  - scratch:   one to three long, thin, straight bright or dark lines;
 *  - spot:      one to four round dark blobs with soft edges.
 * Position, size, orientation and contrast vary per image. Every image is a
 * pure function of (class, size, seed, index), so a dataset is reproducible
 * and adding images never changes existing ones.
 *
 * Ownership: no allocations are handed out; callers provide pixel buffers. */
#ifndef DN_SYNTH_H
#define DN_SYNTH_H
#include "core/core.h"

#define DN_SYNTH_MIN_SIZE 32
#define DN_SYNTH_MAX_SIZE 1024

int dn_synth_num_classes(void);
const char *dn_synth_class_name(int cls); /* NULL if out of range */

/* Renders image `index` of class cls: size x size 8-bit grayscale into px
 * (size*size bytes, caller-owned). */
dn_status dn_synth_render(int cls, int size, uint64_t seed, int index, uint8_t *px);

/* Writes an 8-bit grayscale PNG (libpng) via a temporary file + rename. */
dn_status dn_png_write_gray(const char *path, const uint8_t *px, int w, int h);

typedef struct dn_synth_cfg {
    int per_class; /* images per class, >= 1 */
    int size;      /* side in pixels, DN_SYNTH_MIN_SIZE..DN_SYNTH_MAX_SIZE */
    uint64_t seed;
} dn_synth_cfg;
void dn_synth_cfg_default(dn_synth_cfg *c); /* 100 per class, 128 px, seed 1 */

/* Writes an ImageFolder: outdir/<class>/<class>_<index>.png, creating the
 * folders. *written (may be NULL) receives the number of images written. */
dn_status dn_synth_write(const char *outdir, const dn_synth_cfg *cfg, int *written);

#endif
