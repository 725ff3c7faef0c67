/* Training checkpoints: named float tensors (model parameters and buffers,
 * optimizer state) plus string metadata (epoch, stage, rng state, class
 * names, best validation score, ...), in one self-checking file.
 *
 * File layout (little-endian):
 *   "DNCKPT01"  u64 payload_len  payload  sha256(payload)[32]
 *   payload = u32 nmeta, nmeta x (u32 klen, key, u32 vlen, val),
 *             u32 ntensors, ntensors x (u32 namelen, name, u32 ndim,
 *                                       i64 shape[ndim], f32 data[numel])
 * The trailing digest makes any truncation or bit flip a clean
 * "corrupt checkpoint" error instead of silently wrong weights.
 *
 * Writes are atomic: a temporary file in the same folder is written, flushed
 * (fsync) and renamed over the target, so a crash mid-write leaves the previous
 * checkpoint intact.
 *
 * Ownership: save borrows its inputs; load fills caller-provided (zeroed)
 * dn_tensors / dn_meta, which the caller releases with dn_tensors_free /
 * dn_meta_free (also after a failure). */
#ifndef DN_CHECKPOINT_H
#define DN_CHECKPOINT_H
#include "core/tensor.h"
#include <stdio.h>

#define DN_CKPT_MAX_BYTES ((size_t)8 << 30)

dn_status dn_checkpoint_save(const char *path, const dn_tensors *ts, const dn_meta *meta);
dn_status dn_checkpoint_load(const char *path, dn_tensors *ts, dn_meta *meta);

/* Atomic write helper also used for models: writes path via path.tmp.<pid> +
 * fsync + rename. fn writes the content to f and returns DN_OK. */
dn_status dn_write_atomic(const char *path, dn_status (*fn)(FILE *f, void *ctx), void *ctx);
#endif
