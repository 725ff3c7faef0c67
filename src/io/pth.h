/* torch.save state_dict reader: the zip format (torch >= 1.6: "<any folder>/data.pkl"
 * + "<folder>/data/<key>" raw storages) and the legacy format (magic number,
 * protocol version and sys_info pickles, the main pickle, the storage key list,
 * then each storage as int64 element count + raw little-endian data).
 *
 * The root object may be a state_dict (dict/OrderedDict of name -> tensor) or a
 * checkpoint dict holding one under "state_dict", "model" or "model_state_dict";
 * other checkpoint entries (epoch, optimizer, ...) are ignored. A "module." prefix
 * shared by every key (DataParallel) is stripped. Tensors of any supported dtype
 * (see pickle.h) are converted to float32; strides and storage offsets are
 * honoured (the result is a contiguous copy). Tensors are added to *out in file
 * order; on failure *out is left empty.
 *
 * Ownership: *out is filled by the callee and released by the caller with
 * dn_tensors_free (also on failure it is safe to call). buf is only borrowed. */
#ifndef DN_PTH_H
#define DN_PTH_H
#include "defectnet.h"
#include "core/tensor.h"
#include <stddef.h>
#include <stdint.h>

enum { DN_PTH_NONE = 0, DN_PTH_ZIP = 1, DN_PTH_LEGACY = 2 };
/* Detects the container by its first bytes. */
int dn_pth_detect(const uint8_t *buf, size_t len);
/* label names the file in error messages. */
dn_status dn_pth_load_mem(const uint8_t *buf, size_t len, const char *label, dn_tensors *out);
dn_status dn_pth_load(const char *path, dn_tensors *out);
#endif
