/* Grad-CAM overlays for the eval report's gallery of mistakes (see evaluate.h). */
#include "eval/evaluate.h"
#include "core/core.h"
#include "nn/engine.h"
#include "ood/gradcam.h"
#include "ood/ood.h"
#include <stdlib.h>

void dn_eval_heatmaps(dn_eval_report *r, const dn_model *m, dn_session *s, FILE *log, const char *prefix) {
    r->heatmaps = 1;
    r->cam_anchored = m->ood && m->ood->cam_ref[3] > 0; /* what dn_gradcam_png uses at layer4 */
    float *x = dn_session_input(s);
    for (int64_t i = 0; i < r->nmiss && i < DN_GALLERY_MAX; i++) {
        dn_eval_miss *e = &r->miss[i];
        if (!e->thumb_b64) continue; /* only images shown in the gallery */
        dn_image img = {0};
        uint8_t *png = NULL;
        size_t len = 0;
        dn_status st = dn_image_load(e->path, &img);
        if (!st) st = dn_preprocess(&img, &m->pp, x);
        if (!st) st = dn_gradcam_png(m, s, x, 4, e->pred, &png, &len, NULL, NULL);
        if (!st) st = dn_base64(png, len, &e->cam_b64);
        if (st) fprintf(log, "%swarning: no heatmap for %s: %s\n", prefix, e->path, dn_last_error());
        free(png);
        dn_image_free(&img);
    }
}
