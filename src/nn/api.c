/* Public API glue for cameras and embedders (include/defectnet.h): version and
 * status names, wrapping caller-owned frames, session options, batch
 * classification of images and model metadata getters. */
#include "core/core.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "nn/policy.h"
#include <string.h>

const char *dn_version(void) { return DN_VERSION; }

const char *dn_status_str(dn_status st) {
    switch (st) {
    case DN_OK: return "ok";
    case DN_ERR_IO: return "io error";
    case DN_ERR_FORMAT: return "format error";
    case DN_ERR_SHAPE: return "shape mismatch";
    case DN_ERR_NOMEM: return "out of memory";
    case DN_ERR_ARG: return "invalid argument";
    case DN_ERR_UNSUPPORTED: return "unsupported";
    case DN_ERR_NUMERIC: return "numeric error";
    case DN_ERR_DB: return "database error";
    case DN_ERR_NET: return "network error";
    default: return st == 10 ? "busy" : "unknown status";
    }
}

dn_status dn_image_wrap(const void *pixels, int w, int h, size_t stride, int format, dn_image *out) {
    if (!out) return dn_fail(DN_ERR_ARG, "dn_image_wrap: NULL output");
    memset(out, 0, sizeof *out);
    if (!pixels) return dn_fail(DN_ERR_ARG, "dn_image_wrap: NULL pixels");
    if (format != DN_GRAY8 && format != DN_RGB8 && format != DN_BGR8)
        return dn_fail(DN_ERR_ARG, "dn_image_wrap: unknown pixel format %d (DN_GRAY8, DN_RGB8 or DN_BGR8)", format);
    if (w <= 0 || h <= 0 || (uint64_t)w * (uint64_t)h > DN_IMAGE_MAX_PIXELS)
        return dn_fail(DN_ERR_ARG, "dn_image_wrap: %dx%d: size outside 1..%u pixels", w, h, DN_IMAGE_MAX_PIXELS);
    size_t row = (size_t)w * (format == DN_GRAY8 ? 1 : 3);
    if (stride && stride < row)
        return dn_fail(DN_ERR_ARG, "dn_image_wrap: stride %zu is less than a row of %zu bytes", stride, row);
    out->w = w;
    out->h = h;
    out->data = (uint8_t *)(uintptr_t)pixels; /* read only: preprocessing never writes it */
    out->stride = stride ? stride : row;
    out->format = format;
    out->borrowed = 1;
    return DN_OK;
}

void dn_session_options_default(dn_session_options *o) {
    memset(o, 0, sizeof *o);
    o->max_batch = 1;
}

dn_status dn_session_create(const dn_model *m, const dn_session_options *o, dn_session **out) {
    dn_session_options d;
    if (!out) return dn_fail(DN_ERR_ARG, "dn_session_create: NULL output");
    *out = NULL;
    if (!o) {
        dn_session_options_default(&d);
        o = &d;
    }
    if (o->share) return dn_session_new_shared(o->share, o->max_batch, o->threads, out);
    return dn_session_new(m, o->max_batch, o->threads, out);
}

dn_status dn_session_classify_images(dn_session *s, const dn_image *imgs, int n, dn_prediction *preds, float *probs) {
    if (!s || (!imgs && n) || (!preds && n) || n < 0) return dn_fail(DN_ERR_ARG, "classify: NULL argument or n < 0");
    const dn_model *m = dn_session_model(s);
    int h, w, mb = dn_session_max_batch(s);
    dn_session_input_size(s, &h, &w);
    if (m->pp.crop != h || m->pp.crop != w)
        return dn_fail(DN_ERR_ARG, "classify: session planned for %dx%d input, model preprocessing crops %dx%d", h, w,
                       m->pp.crop, m->pp.crop);
    float *x = dn_session_input(s);
    size_t per = (size_t)3 * h * w;
    for (int i = 0; i < n; i += mb) {
        int k = n - i < mb ? n - i : mb;
        for (int j = 0; j < k; j++) {
            dn_status st = dn_preprocess(&imgs[i + j], &m->pp, x + (size_t)j * per);
            if (st) return dn_fail_prefix(st, "image %d", i + j);
        }
        dn_status st = dn_session_classify_batch(s, x, k, preds + i, probs ? probs + (size_t)i * m->num_classes : NULL);
        if (st) return st;
    }
    return DN_OK;
}

dn_status dn_session_set_good_class(dn_session *s, const char *name) {
    if (!s) return dn_fail(DN_ERR_ARG, "dn_session_set_good_class: NULL session");
    const dn_model *m = dn_session_model(s);
    dn_policy pol;
    dn_status st = dn_model_policy(m, &pol);
    if (!st && name) st = dn_policy_override_good(m, name, &pol);
    if (!st) dn_session_set_policy(s, &pol);
    return st;
}

const char *dn_model_arch(const dn_model *m) { return m ? m->arch : ""; }
float dn_model_temperature(const dn_model *m) { return m ? m->temperature : 1.0f; }
float dn_model_threshold(const dn_model *m) { return m ? m->threshold : 0.0f; }
const char *dn_model_sha256(const dn_model *m) { return m ? m->sha256 : ""; }
const char *dn_model_source_sha256(const dn_model *m) { return m ? m->source_sha256 : ""; }
const char *dn_model_metadata(const dn_model *m, const char *key) {
    return m && key ? dn_meta_get(&m->meta, key) : NULL;
}
