/* Model files: format detection, weight loading and the defectnet metadata
 * contract (documented in docs/model-format.md). dn_model_load/dn_model_save
 * (include/defectnet.h) are implemented on top of these.
 *
 * Ownership: dn_weights_load fills caller-provided dn_tensors/dn_meta (meta may be
 * NULL); release with dn_tensors_free/dn_meta_free, safe after failure too.
 * dn_model_load_ex hands out a dn_model the caller frees with dn_model_free. */
#ifndef DN_MODELFILE_H
#define DN_MODELFILE_H
#include "defectnet.h"
#include "nn/model.h"

typedef enum { DN_WFMT_UNKNOWN = 0, DN_WFMT_PTH_ZIP, DN_WFMT_PTH_LEGACY, DN_WFMT_SAFETENSORS } dn_weight_format;
dn_weight_format dn_weights_detect(const uint8_t *buf, size_t len);
const char *dn_weight_format_name(dn_weight_format f);

/* Reserved safetensors __metadata__ keys (everything else is carried in m->meta). */
#define DN_META_FORMAT "format"                 /* "defectnet" */
#define DN_META_FORMAT_VERSION "format_version" /* "1" */
#define DN_META_ARCH "arch"                     /* "resnet18" | "resnet34" | "resnet-custom" */
#define DN_META_CLASSES "classes"               /* JSON array of class-name strings, output order */
#define DN_META_PREPROCESS "preprocess"         /* JSON object, see docs/model-format.md */
#define DN_META_SOURCE_SHA256 "source_sha256"   /* hex sha256 of the weights the model came from */
#define DN_META_TEMPERATURE "temperature"       /* calibration temperature, decimal */
#define DN_META_THRESHOLD "threshold"           /* confidence threshold, decimal */
int dn_meta_key_reserved(const char *key);

/* Reads any supported weight file into tensors (+ safetensors metadata).
 * *format (may be NULL) receives the detected format; sha256_hex (may be NULL,
 * else 65 bytes) receives the file's sha256. */
dn_status dn_weights_load(const char *path, dn_tensors *ts, dn_meta *meta, dn_weight_format *format, char *sha256_hex);

/* dn_model_load with the option to drop the fc.* head (backbone for fine-tuning).
 * A safetensors file without the defectnet "format" key (a plain state_dict) is
 * treated like a .pth: default classes/preprocessing, source_sha256 = its sha256. */
dn_status dn_model_load_ex(const char *path, int skip_fc, dn_model **out);

/* Metadata <-> model. dn_model_meta_build writes every reserved key plus m->meta
 * into *meta (caller frees). dn_model_meta_apply validates and applies metadata to
 * a freshly bound model (label names the file in errors). */
dn_status dn_model_meta_build(const dn_model *m, dn_meta *meta);
dn_status dn_model_meta_apply(dn_model *m, const dn_meta *meta, const char *label);
#endif
