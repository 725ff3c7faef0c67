/* safetensors reader/writer: defectnet's own model format.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON header
 *   {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "string value", ...}}
 * then the data buffer; offsets are relative to its start.
 * Reading accepts dtypes F32, F16, BF16, F64, I64, I32 (converted to float32) and
 * checks: header length within the file and <= DN_ST_MAX_HEADER, valid JSON,
 * known dtype, shape non-negative and rank <= DN_MAX_DIMS, end - begin ==
 * numel * element size, every range within the data buffer, no two ranges
 * overlapping, duplicate names refused, metadata values are strings.
 * Writing emits F32 tensors (F16 for those with dn_tensor.f16 set) in the given order, contiguous, header padded with
 * spaces to a multiple of 8 bytes, via a temp file renamed into place (atomic).
 *
 * Ownership: the loaders fill caller-provided zero-initialised dn_tensors /
 * dn_meta (meta may be NULL to discard metadata); release them with
 * dn_tensors_free / dn_meta_free (safe after failure too). buf is borrowed. */
#ifndef DN_SAFETENSORS_H
#define DN_SAFETENSORS_H
#include "defectnet.h"
#include "core/tensor.h"
#include <stddef.h>
#include <stdint.h>

#define DN_ST_MAX_HEADER ((uint64_t)100 << 20) /* as the reference implementation */

/* 1 if buf looks like safetensors (plausible header length followed by '{'). */
int dn_safetensors_detect(const uint8_t *buf, size_t len);
dn_status dn_safetensors_load_mem(const uint8_t *buf, size_t len, const char *label, dn_tensors *ts, dn_meta *meta);
dn_status dn_safetensors_load(const char *path, dn_tensors *ts, dn_meta *meta);
dn_status dn_safetensors_save(const char *path, const dn_tensors *ts, const dn_meta *meta);
/* Creates and opens "<path>.<tag>.XXXXXX" (mkstemp, same directory so a later
 * rename is atomic). On success *tmp is the malloc'ed name (caller frees, and
 * unlinks it if it is not renamed) and *fd the open descriptor (caller closes);
 * on failure both are NULL/-1 and the error names path. */
dn_status dn_tmpfile_beside(const char *path, const char *tag, char **tmp, int *fd);
/* Writes buf to path atomically: temp file in the same directory, fsync, rename. */
dn_status dn_write_file_atomic(const char *path, const void *buf, size_t len);
#endif
