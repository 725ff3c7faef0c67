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

/* Only the functions marked DN_API are exported from libdefectnet.so (the library
 * is built with -fvisibility=hidden); everything else is internal. */
#if defined(__GNUC__) && !defined(DN_STATIC_NO_VISIBILITY)
#define DN_API __attribute__((visibility("default")))
#else
#define DN_API
#endif

/* Library version ("0.1.0"): DN_VERSION of the library actually linked. */
DN_API const char *dn_version(void);

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
DN_API const char *dn_last_error(void);
/* Short fixed name of a status: "ok", "io error", "format error", ... ("unknown status" otherwise). */
DN_API const char *dn_status_str(dn_status st);

/* ---------------------------------------------------------------- images */

/* Pixel layouts of a dn_image (8 bits per channel, interleaved). */
typedef enum { DN_RGB8 = 0, DN_GRAY8 = 1, DN_BGR8 = 2 } dn_pixel_format;

/* An 8-bit image, row-major. Decoded images (dn_image_load/decode) are packed
 * RGB8 (h*w*3 bytes, stride 0) and own data. A wrapped camera frame
 * (dn_image_wrap) borrows the caller's buffer in its own layout. An image filled
 * by hand must be zero-initialised first (dn_image img = {0};): stride 0, format
 * DN_RGB8 and borrowed 0 describe a packed RGB8 buffer. */
typedef struct dn_image {
    int w, h;
    uint8_t *data;
    size_t stride;        /* bytes from one row to the next; 0 = packed (w * channels) */
    int format;           /* dn_pixel_format (0 = DN_RGB8) */
    int borrowed;         /* 1: data belongs to the caller, dn_image_free leaves it alone */
} dn_image;

/* Describes a caller-owned frame without copying it: w x h pixels of `format`
 * (DN_GRAY8, DN_RGB8 or DN_BGR8), rows `stride` bytes apart (0 = packed;
 * else >= w * channels). Preprocessing reads the buffer in place; it is never
 * written and must stay valid while *out is used. dn_image_free(out) only
 * forgets it. DN_ERR_ARG for bad sizes, stride or format. */
DN_API dn_status dn_image_wrap(const void *pixels, int w, int h, size_t stride, int format, dn_image *out);

/* Decode JPEG/PNG/BMP/PGM/PPM (grayscale, RGB, RGBA, palette, 16-bit -> RGB8).
 * Images declaring more than DN_IMAGE_MAX_PIXELS are refused before allocation. */
#define DN_IMAGE_MAX_PIXELS (64u * 1024u * 1024u)
DN_API dn_status dn_image_load(const char *path, dn_image *out);
DN_API dn_status dn_image_decode(const void *bytes, size_t len, const char *name, dn_image *out);
DN_API void dn_image_free(dn_image *img);

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

DN_API void dn_preproc_default(dn_preproc *pp);
/* Writes a 3 x crop x crop CHW float tensor into out. */
DN_API dn_status dn_preprocess(const dn_image *img, const dn_preproc *pp, float *out);

/* ----------------------------------------------------------------- model */

typedef struct dn_model dn_model;     /* opaque, immutable after load */
typedef struct dn_session dn_session; /* opaque, per-thread inference state */

/* Load a model: torchvision .pth (zip or legacy), or defectnet .safetensors.
 * The architecture (ResNet-18/34 layout, widths) is inferred from tensor shapes. */
DN_API dn_status dn_model_load(const char *path, dn_model **out);
/* The same from a file's bytes already in memory (e.g. embedded in firmware);
 * label names the model in error messages (NULL = "memory"). bytes are not kept. */
DN_API dn_status dn_model_load_memory(const void *bytes, size_t len, const char *label, dn_model **out);
/* Save as defectnet safetensors with full metadata. */
DN_API dn_status dn_model_save(const dn_model *m, const char *path);
DN_API void dn_model_free(dn_model *m);

DN_API int dn_model_num_classes(const dn_model *m);
DN_API const char *dn_model_class_name(const dn_model *m, int i);
DN_API const dn_preproc *dn_model_preproc(const dn_model *m);
/* Metadata getters; strings are owned by the model. */
DN_API const char *dn_model_arch(const dn_model *m);          /* "resnet18", "resnet34", "resnet-custom" */
DN_API float dn_model_temperature(const dn_model *m);         /* calibration temperature (1 = none) */
DN_API float dn_model_threshold(const dn_model *m);           /* "uncertain" below this confidence (0 = never) */
DN_API const char *dn_model_sha256(const dn_model *m);        /* of the file it was loaded from ("" if none) */
DN_API const char *dn_model_source_sha256(const dn_model *m); /* of the weights it was made from ("" if unknown) */
/* A free-form metadata value (training recipe, quantization guard, ...), NULL if absent. */
DN_API const char *dn_model_metadata(const dn_model *m, const char *key);

/* Three-way outcome of a prediction (docs/ood.md). */
typedef enum {
    DN_DECISION_ACCEPTED = 0,  /* known kind of input, confident */
    DN_DECISION_UNCERTAIN = 1, /* known kind of input, confidence below the model threshold */
    DN_DECISION_UNKNOWN = 2    /* ood_score above the model's OOD threshold: unlike the training data */
} dn_decision;
/* "accepted" | "uncertain" | "unknown" ("?" for anything else). */
DN_API const char *dn_decision_name(int decision);
/* The inverse of dn_decision_name: a dn_decision, or -1 for any other string (or NULL). */
DN_API int dn_decision_parse(const char *name);

/* The classify functions apply the model's decision policy: a model whose
 * metadata stores a good class and a good_threshold (`defectnet eval
 * --target-escape/--cost`) accepts a part as good only if p(good) >=
 * good_threshold ("reject unless confidently good"); without one, the plain
 * rule (argmax, uncertain below the model threshold) holds. */
typedef struct dn_prediction {
    int cls;              /* argmax class; the good class when the policy accepts it */
    float confidence;     /* calibrated softmax probability of cls */
    int uncertain;        /* 1 if confidence < model threshold, or cls is the good class below the policy's
                             good_threshold */
    int decision;         /* dn_decision */
    float ood_score;      /* novelty, higher = more unusual; NAN if the model has no OOD data */
} dn_prediction;

/* threads <= 0: use all cores. */
DN_API dn_status dn_session_new(const dn_model *m, int max_batch, int threads, dn_session **out);
/* A session sharing base's immutable plan (the BatchNorm-folded, packed conv
 * weights, ~45 MB for ResNet-18) instead of building its own: same model and
 * input size as base, its own buffers for max_batch images (may differ from
 * base's) and its own pool of `threads`. Sessions sharing a plan may run on
 * different threads at the same time (each session still by one thread at a
 * time) and may be freed in any order: the plan goes with the last of them.
 * base must stay valid during this call; the model must outlive all of them.
 * *out is owned by the caller (dn_session_free). */
DN_API dn_status dn_session_new_shared(const dn_session *base, int max_batch, int threads, dn_session **out);
DN_API void dn_session_free(dn_session *s);

/* Session options; dn_session_options_default fills {max_batch 1, threads 0, share NULL}.
 * share: NULL, or an existing session on the same model whose plan (folded, packed
 * weights) the new one shares, as dn_session_new_shared. */
typedef struct dn_session_options {
    int max_batch;            /* images per forward, 1..65536 */
    int threads;              /* worker threads; <= 0: all cores */
    const dn_session *share;  /* see above */
} dn_session_options;
DN_API void dn_session_options_default(dn_session_options *o);
/* o == NULL: defaults. *out is owned by the caller (dn_session_free). */
DN_API dn_status dn_session_create(const dn_model *m, const dn_session_options *o, dn_session **out);
/* x: n x 3 x H x W floats (H = W = preproc crop). logits: n x num_classes. */
DN_API dn_status dn_session_forward(dn_session *s, const float *x, int n, float *logits);
/* Preprocess + forward + softmax for one decoded image. probs may be NULL,
 * else receives num_classes probabilities. */
DN_API dn_status dn_session_classify(dn_session *s, const dn_image *img, dn_prediction *pred, float *probs);
/* n images (decoded or wrapped, any sizes) in forwards of up to the session's
 * max_batch. preds: n entries; probs NULL or n x num_classes. */
DN_API dn_status dn_session_classify_images(dn_session *s, const dn_image *imgs, int n, dn_prediction *preds,
                                            float *probs);
/* Classify with another good class than the model's (as `serve --good-class`): name must be a
 * class of the model (else DN_ERR_ARG listing them); a stored good_threshold chosen for another
 * class no longer applies. NULL: back to the model's own policy. Affects this session only. */
DN_API dn_status dn_session_set_good_class(dn_session *s, const char *name);

#ifdef __cplusplus
}
#endif
#endif
