/* Read-only ZIP archive reader over an in-memory buffer (torch.save's container).
 *
 * Supports: stored (0) and deflate (8) entries, zip64 end-of-central-directory
 * and zip64 extra fields, archive comments. Refuses: encrypted entries, other
 * compression methods, multi-disk archives. Every offset and size read from the
 * file is checked against the buffer; CRC-32 is verified on every read.
 *
 * Zip-bomb protection: an entry whose declared uncompressed size exceeds
 * DN_ZIP_MAX_ENTRY, or whose ratio uncompressed/compressed exceeds
 * DN_ZIP_MAX_RATIO once it is larger than DN_ZIP_RATIO_MIN_SIZE, is refused before
 * inflating; inflation never writes past the declared size (a stream that
 * inflates to more than it declares is an error).
 *
 * Ownership: dn_zip_open borrows buf (must outlive the dn_zip) and copies label.
 * Entry structs and names are owned by the dn_zip. dn_zip_read returns a
 * malloc'ed buffer the caller frees. */
#ifndef DN_ZIP_H
#define DN_ZIP_H
#include "defectnet.h"
#include <stddef.h>
#include <stdint.h>

#define DN_ZIP_MAX_ENTRY ((uint64_t)4 << 30)      /* 4 GiB per entry */
#define DN_ZIP_MAX_RATIO 100                       /* uncompressed : compressed */
#define DN_ZIP_RATIO_MIN_SIZE ((uint64_t)1 << 20)  /* ratio checked above 1 MiB */
#define DN_ZIP_MAX_ENTRIES 1000000

typedef struct dn_zip_entry {
    char *name;          /* NUL-terminated; entries with embedded NUL are refused */
    uint16_t method;     /* 0 stored, 8 deflate */
    uint32_t crc;
    uint64_t csize, usize;
    uint64_t data_off;   /* offset of the (compressed) data in the buffer, validated */
} dn_zip_entry;

typedef struct dn_zip dn_zip;

dn_status dn_zip_open(const uint8_t *buf, size_t len, const char *label, dn_zip **out);
void dn_zip_close(dn_zip *z);
int dn_zip_count(const dn_zip *z);
const dn_zip_entry *dn_zip_entry_at(const dn_zip *z, int i);
int dn_zip_find(const dn_zip *z, const char *name); /* index or -1 */
/* Decompresses (or copies) entry i and verifies its CRC. *data is malloc'ed
 * (usize + 1 bytes, NUL-terminated for convenience); caller frees. */
dn_status dn_zip_read(const dn_zip *z, int i, uint8_t **data, size_t *len);
/* For stored entries: pointer into the borrowed buffer after CRC check (no copy).
 * Deflated entries: falls back to dn_zip_read and sets *owned to the malloc'ed
 * copy the caller must free (NULL when the view points into the buffer). */
dn_status dn_zip_view(const dn_zip *z, int i, const uint8_t **data, size_t *len, uint8_t **owned);
/* Returns 1 if buf starts with a local file header signature. */
int dn_zip_detect(const uint8_t *buf, size_t len);
#endif
