/* SHA-256 (FIPS 180-4). Used for weight-file identity (model sha256,
 * source_sha256) and download verification. No ownership: all outputs are
 * caller-provided buffers. */
#ifndef DN_SHA256_H
#define DN_SHA256_H
#include "defectnet.h"
#include <stddef.h>
#include <stdint.h>

typedef struct dn_sha256_ctx {
    uint32_t h[8];
    uint64_t nbytes;   /* total bytes hashed so far */
    uint8_t buf[64];
    size_t nbuf;       /* bytes pending in buf */
} dn_sha256_ctx;

void dn_sha256_init(dn_sha256_ctx *c);
void dn_sha256_update(dn_sha256_ctx *c, const void *p, size_t n);
void dn_sha256_final(dn_sha256_ctx *c, uint8_t out[32]);
void dn_sha256(const void *p, size_t n, uint8_t out[32]);
/* Lower-case hex, NUL-terminated. */
void dn_sha256_hex(const uint8_t d[32], char hex[65]);
/* Streams the file; DN_ERR_IO (naming the path) if it cannot be opened/read or
 * is not a regular file. */
dn_status dn_sha256_file(const char *path, char hex[65]);
#endif
