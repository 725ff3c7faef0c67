/* Restricted unpickler for torch.save state_dicts (pickle protocols 2-5 opcode
 * subset). It builds a passive value tree and NEVER executes anything: the only
 * callables it knows are modelled in C:
 *   collections.OrderedDict            -> dict
 *   torch._utils._rebuild_tensor_v2    -> tensor (storage, offset, size, stride)
 *   torch._utils._rebuild_tensor       -> same (torch < 1.0 spelling, 4 arguments)
 *   torch._utils._rebuild_parameter    -> its tensor argument
 *   torch.<T>Storage (Float, Double, Half, BFloat16, Long, Int, Short, Char,
 *   Byte, Bool)                        -> storage type (only inside persistent ids)
 * Any other GLOBAL (e.g. os.system, builtins.eval), REDUCE/NEWOBJ of anything
 * else, and any opcode outside the supported set are refused with an error
 * naming the global/opcode and its byte offset. Persistent ids must be tuples
 * ('storage', StorageType, key, location, numel[, view_metadata=None]).
 *
 * Limits: stack depth DN_PK_MAX_STACK, memo index DN_PK_MAX_MEMO, total objects
 * DN_PK_MAX_OBJECTS, tensor rank DN_MAX_DIMS; strings are bounded by the input.
 *
 * Ownership: a dn_pickle owns every dn_pk value reachable from its root; values
 * are shared by pointer (memo semantics, as in Python) and freed together by
 * dn_pickle_free. The input buffer is not referenced after dn_pickle_load. */
#ifndef DN_PICKLE_H
#define DN_PICKLE_H
#include "defectnet.h"
#include "core/tensor.h"
#include <stddef.h>
#include <stdint.h>

#define DN_PK_MAX_STACK 100000
#define DN_PK_MAX_MEMO 1000000
#define DN_PK_MAX_OBJECTS 1000000

typedef enum {
    DN_PK_NONE, DN_PK_BOOL, DN_PK_INT, DN_PK_BIGINT, DN_PK_FLOAT, DN_PK_STR, DN_PK_BYTES,
    DN_PK_TUPLE, DN_PK_LIST, DN_PK_DICT, DN_PK_GLOBAL, DN_PK_STORAGE, DN_PK_TENSOR
} dn_pk_type;

/* Element types of torch storages. */
typedef enum { DN_DT_F32, DN_DT_F64, DN_DT_F16, DN_DT_BF16, DN_DT_I64, DN_DT_I32, DN_DT_I16,
               DN_DT_I8, DN_DT_U8, DN_DT_BOOL } dn_dtype;
size_t dn_dtype_size(dn_dtype t);
const char *dn_dtype_name(dn_dtype t);
/* Converts n elements of type t (little-endian bytes) to float32. */
void dn_dtype_to_f32(dn_dtype t, const uint8_t *src, size_t n, float *dst);

typedef struct dn_pk dn_pk;
struct dn_pk {
    dn_pk_type type;
    int64_t i;          /* BOOL, INT */
    double f;           /* FLOAT */
    char *s;            /* STR (UTF-8, NUL-terminated), BYTES/BIGINT raw bytes, GLOBAL "module.name", STORAGE key */
    size_t slen;
    dn_pk **items;      /* TUPLE/LIST: n items; DICT: n/2 (key, value) pairs in insertion order, duplicates kept */
    size_t n, cap;
    /* STORAGE */
    dn_dtype dtype;
    int64_t numel;
    char *location;
    /* TENSOR */
    dn_pk *storage;
    int64_t offset;
    int ndim;
    int64_t shape[DN_MAX_DIMS], stride[DN_MAX_DIMS];
};

typedef struct dn_pickle dn_pickle;

/* Unpickles one pickle starting at buf[0]; *consumed (may be NULL) receives the
 * number of bytes up to and including STOP. label names the input in errors. */
dn_status dn_pickle_load(const uint8_t *buf, size_t len, const char *label, dn_pickle **out, size_t *consumed);
const dn_pk *dn_pickle_root(const dn_pickle *p);
void dn_pickle_free(dn_pickle *p);

/* Element type of any storage with this key anywhere in the pickle (legacy
 * torch.save stores raw storages after the pickles, typed only by the pickle).
 * Returns 1 and sets *dt if found, else 0. */
int dn_pickle_storage_dtype(const dn_pickle *p, const char *key, dn_dtype *dt);

/* Dict lookup by string key (last match); NULL if absent or d is not a dict. */
const dn_pk *dn_pk_dict_get(const dn_pk *d, const char *key);
#endif
