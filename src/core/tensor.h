/* Named float32 tensors and string metadata: the neutral form every weight
 * format (torchvision .pth, safetensors) is read into and written from.
 * A dn_tensors owns its names and data; dn_tensors_free releases everything. */
#ifndef DN_CORE_TENSOR_H
#define DN_CORE_TENSOR_H
#include "defectnet.h"
#include <stdint.h>

#define DN_MAX_DIMS 8
typedef struct dn_tensor {
    char *name;
    int ndim;
    int64_t shape[DN_MAX_DIMS];
    float *data;            /* numel floats (integer tensors are converted to float) */
    int f16;                /* writers store it as IEEE fp16 (safetensors F16, rounded to nearest even);
                               0 (float32) for every tensor a reader returns or dn_tensors_add appends */
} dn_tensor;

typedef struct dn_tensors {
    dn_tensor *t;
    int n, cap;
} dn_tensors;

/* String -> string map (safetensors __metadata__). Owns keys and values. */
typedef struct dn_meta {
    char **keys, **vals;
    int n, cap;
} dn_meta;

int64_t dn_tensor_numel(const dn_tensor *t);
/* Appends a tensor; copies name and shape, takes ownership of data (malloc'ed). */
dn_status dn_tensors_add(dn_tensors *ts, const char *name, int ndim, const int64_t *shape, float *data);
dn_tensor *dn_tensors_find(const dn_tensors *ts, const char *name);
void dn_tensors_free(dn_tensors *ts);

dn_status dn_meta_set(dn_meta *m, const char *key, const char *val); /* copies both */
const char *dn_meta_get(const dn_meta *m, const char *key);           /* NULL if absent */
void dn_meta_remove(dn_meta *m, const char *key);                     /* no-op if absent */
void dn_meta_free(dn_meta *m);
#endif
