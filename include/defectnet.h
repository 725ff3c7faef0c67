/* defectnet public C API.
 *
 * Conventions
 *  - Every function that can fail returns dn_status (DN_OK == 0). After a failure,
 *    dn_last_error() returns a one-line, human-readable message for the calling
 *    thread (it names the file/object and the problem). The string is owned by
 *    the library and valid until the next failing call on the same thread.
 *  - Objects come in create/destroy pairs. Whoever receives a pointer from a
 *    *_load / *_new / *_create function owns it and must release it with the
 *    matching *_free.
 *  - A dn_model is immutable after loading and can be shared by any number of
 *    threads; each thread runs inference through its own dn_session.
 */
#ifndef DEFECTNET_H
#define DEFECTNET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DN_VERSION "0.1.0"

typedef enum {
    DN_OK = 0,
    DN_ERR_IO = 1,        /* cannot open/read/write a file */
    DN_ERR_FORMAT = 2,    /* malformed or unsupported file content */
    DN_ERR_SHAPE = 3,     /* tensor shape/key mismatch */
    DN_ERR_NOMEM = 4,     /* allocation failed or size limit exceeded */
    DN_ERR_ARG = 5,       /* invalid argument */
    DN_ERR_UNSUPPORTED = 6,
    DN_ERR_NUMERIC = 7,   /* NaN/Inf encountered */
    DN_ERR_DB = 8,        /* database error */
    DN_ERR_NET = 9,       /* network / protocol error */
    DN_ERR_BUSY = 10      /* temporarily unavailable, nothing was done: retry later (e.g. a
                             database commit failed because the disk is full or it is busy) */
} dn_status;

/* Message describing the most recent failure on this thread ("" if none). */
const char *dn_last_error(void);

/* ---------------------------------------------------------------- images */

/* An 8-bit interleaved RGB image, row-major, h*w*3 bytes. Owns data. */
typedef struct dn_image {
    int w, h;
    uint8_t *data;
} dn_image;

/* Decode JPEG/PNG/BMP/PGM/PPM (grayscale, RGB, RGBA, palette, 16-bit -> RGB8).
 * Images declaring more than DN_IMAGE_MAX_PIXELS are refused before allocation. */
#define DN_IMAGE_MAX_PIXELS (64u * 1024u * 1024u)
dn_status dn_image_load(const char *path, dn_image *out);
dn_status dn_image_decode(const void *bytes, size_t len, const char *name, dn_image *out);
void dn_image_free(dn_image *img);

/* Preprocessing contract, stored in every defectnet model.
 * Default = torchvision eval transform: Resize(256, bilinear antialias as PIL),
 * CenterCrop(224), ToTensor, Normalize(ImageNet mean/std), RGB order. */
typedef struct dn_preproc {
    int resize;        /* shorter side resized to this (0 = no resize) */
    int crop;          /* centre crop size (square); input tensor is crop x crop */
    float mean[3];
    float std[3];
    int bgr;           /* 0 = RGB channel order (default), 1 = BGR */
} dn_preproc;

void dn_preproc_default(dn_preproc *pp);
/* Writes a 3 x crop x crop CHW float tensor into out. */
dn_status dn_preprocess(const dn_image *img, const dn_preproc *pp, float *out);

/* ----------------------------------------------------------------- model */

typedef struct dn_model dn_model;     /* opaque, immutable after load */
typedef struct dn_session dn_session; /* opaque, per-thread inference state */

/* Load a model: torchvision .pth (zip or legacy), or defectnet .safetensors.
 * The architecture (ResNet-18/34 layout, widths) is inferred from tensor shapes. */
dn_status dn_model_load(const char *path, dn_model **out);
/* Save as defectnet safetensors with full metadata. */
dn_status dn_model_save(const dn_model *m, const char *path);
void dn_model_free(dn_model *m);

int dn_model_num_classes(const dn_model *m);
const char *dn_model_class_name(const dn_model *m, int i);
const dn_preproc *dn_model_preproc(const dn_model *m);

typedef struct dn_prediction {
    int cls;              /* argmax class */
    float confidence;     /* calibrated softmax probability of cls */
    int uncertain;        /* 1 if confidence < model threshold */
} dn_prediction;

/* threads <= 0: use all cores. */
dn_status dn_session_new(const dn_model *m, int max_batch, int threads, dn_session **out);
/* A session sharing base's immutable plan (the BatchNorm-folded, packed conv
 * weights, ~45 MB for ResNet-18) instead of building its own: same model and
 * input size as base, its own buffers for max_batch images (may differ from
 * base's) and its own pool of `threads`. Sessions sharing a plan may run on
 * different threads at the same time (each session still by one thread at a
 * time) and may be freed in any order: the plan goes with the last of them.
 * base must stay valid during this call; the model must outlive all of them.
 * *out is owned by the caller (dn_session_free). */
dn_status dn_session_new_shared(const dn_session *base, int max_batch, int threads, dn_session **out);
void dn_session_free(dn_session *s);
/* x: n x 3 x H x W floats (H = W = preproc crop). logits: n x num_classes. */
dn_status dn_session_forward(dn_session *s, const float *x, int n, float *logits);
/* Preprocess + forward + softmax for one decoded image. probs may be NULL,
 * else receives num_classes probabilities. */
dn_status dn_session_classify(dn_session *s, const dn_image *img, dn_prediction *pred, float *probs);

#ifdef __cplusplus
}
#endif
#endif
