/* SHA-256 (FIPS 180-4) through OpenSSL's libcrypto (EVP; uses the SHA-NI or
 * AVX2 code paths the CPU has). Used for weight-file identity (model sha256,
 * source_sha256) and download verification. Outputs are caller-provided
 * buffers. A streaming context owns an EVP context from dn_sha256_init until
 * dn_sha256_final (which releases it): every init must be followed by a final.
 * If libcrypto cannot allocate, the context is marked failed and final yields
 * 32 zero bytes (dn_last_error says why). */
#ifndef DN_SHA256_H
#define DN_SHA256_H
#include "defectnet.h"
#include <stddef.h>
#include <stdint.h>

typedef struct dn_sha256_ctx {
    void *md;          /* EVP_MD_CTX, owned between init and final; NULL = failed */
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
