/* ZIP reader: central directory walk with full bounds checking (see zip.h).
 * Written from PKWARE's APPNOTE.TXT (sections 4.3.7, 4.3.12, 4.3.14-16, 4.5.3). */
#include "io/zip.h"
#include "core/core.h"
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

struct dn_zip {
    const uint8_t *buf;
    size_t len;
    char *label;
    dn_zip_entry *e;
    int n;
    dn_keyidx *names;    /* entry names sorted, for dn_zip_find */
};

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* 1 if [off, off+n) lies within [0, len). */
static int in_bounds(uint64_t off, uint64_t n, size_t len) { return off <= len && n <= len - off; }

int dn_zip_detect(const uint8_t *buf, size_t len) { return len >= 4 && rd32(buf) == 0x04034b50; }

void dn_zip_close(dn_zip *z) {
    if (!z) return;
    for (int i = 0; i < z->n; i++) free(z->e[i].name);
    free(z->e);
    free(z->names);
    free(z->label);
    free(z);
}

/* Applies the zip64 extended-information extra field to sizes/offset that are 0xFFFFFFFF. */
static dn_status zip64_extra(const dn_zip *z, const uint8_t *ex, size_t exlen, const char *name,
                             uint64_t *usize, uint64_t *csize, uint64_t *loff, int need_u, int need_c, int need_o) {
    size_t p = 0;
    while (p + 4 <= exlen) {
        uint16_t id = rd16(ex + p), sz = rd16(ex + p + 2);
        if (p + 4 + sz > exlen) break;
        if (id == 0x0001) {
            const uint8_t *d = ex + p + 4;
            size_t q = 0;
            if (need_u) { if (q + 8 > sz) goto bad; *usize = rd64(d + q); q += 8; }
            if (need_c) { if (q + 8 > sz) goto bad; *csize = rd64(d + q); q += 8; }
            if (need_o) { if (q + 8 > sz) goto bad; *loff = rd64(d + q); q += 8; }
            return DN_OK;
        }
        p += 4 + (size_t)sz;
    }
    if (!need_u && !need_c && !need_o) return DN_OK;
bad:
    return dn_fail(DN_ERR_FORMAT, "%s: zip entry '%s': missing or short zip64 extra field", z->label, name);
}

dn_status dn_zip_open(const uint8_t *buf, size_t len, const char *label, dn_zip **out) {
    *out = NULL;
    dn_status st = DN_ERR_FORMAT;
    dn_zip *z = dn_calloc(1, sizeof *z);
    if (!z) return DN_ERR_NOMEM;
    z->buf = buf;
    z->len = len;
    z->label = dn_strdup(label ? label : "zip");
    if (!z->label) { st = DN_ERR_NOMEM; goto fail; }
    label = z->label;

    /* End of central directory: last signature within the final 64 KiB + 22 bytes. */
    if (len < 22) { st = dn_fail(DN_ERR_FORMAT, "%s: too short for a zip archive (%zu bytes)", label, len); goto fail; }
    size_t eocd = (size_t)-1;
    size_t lo = len > 22 + 65535 ? len - 22 - 65535 : 0;
    for (size_t p = len - 22 + 1; p-- > lo;) {
        if (rd32(buf + p) == 0x06054b50 && p + 22 + rd16(buf + p + 20) == len) { eocd = p; break; }
    }
    if (eocd == (size_t)-1) {
        st = dn_fail(DN_ERR_FORMAT, "%s: zip end-of-central-directory record not found (truncated or not a zip)", label);
        goto fail;
    }
    uint64_t nent = rd16(buf + eocd + 10), cd_size = rd32(buf + eocd + 12), cd_off = rd32(buf + eocd + 16);
    if (rd16(buf + eocd + 4) != 0 || rd16(buf + eocd + 6) != 0) {
        st = dn_fail(DN_ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported", label);
        goto fail;
    }
    if (nent == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {
        /* zip64: locator sits right before the classic record */
        if (eocd < 20 || rd32(buf + eocd - 20) != 0x07064b50) {
            st = dn_fail(DN_ERR_FORMAT, "%s: zip64 end-of-central-directory locator missing", label);
            goto fail;
        }
        uint64_t z64 = rd64(buf + eocd - 20 + 8);
        if (!in_bounds(z64, 56, len) || rd32(buf + z64) != 0x06064b50) {
            st = dn_fail(DN_ERR_FORMAT, "%s: zip64 end-of-central-directory record out of bounds or corrupt", label);
            goto fail;
        }
        nent = rd64(buf + z64 + 32);
        cd_size = rd64(buf + z64 + 40);
        cd_off = rd64(buf + z64 + 48);
    }
    if (!in_bounds(cd_off, cd_size, len)) {
        st = dn_fail(DN_ERR_FORMAT, "%s: zip central directory (offset %llu, size %llu) lies outside the file (%zu bytes)",
                     label, (unsigned long long)cd_off, (unsigned long long)cd_size, len);
        goto fail;
    }
    if (nent > DN_ZIP_MAX_ENTRIES || nent * 46 > cd_size) {
        st = dn_fail(DN_ERR_FORMAT, "%s: zip central directory claims %llu entries in %llu bytes", label,
                     (unsigned long long)nent, (unsigned long long)cd_size);
        goto fail;
    }
    z->e = dn_calloc(nent ? (size_t)nent : 1, sizeof *z->e);
    if (!z->e) { st = DN_ERR_NOMEM; goto fail; }

    uint64_t p = cd_off, end = cd_off + cd_size;
    for (uint64_t i = 0; i < nent; i++) {
        if (p + 46 > end || rd32(buf + p) != 0x02014b50) {
            st = dn_fail(DN_ERR_FORMAT, "%s: corrupt zip central directory (entry %llu: bad signature or overrun)", label,
                         (unsigned long long)i);
            goto fail;
        }
        const uint8_t *h = buf + p;
        uint16_t flags = rd16(h + 8), method = rd16(h + 10);
        uint32_t crc = rd32(h + 16);
        uint64_t csize = rd32(h + 20), usize = rd32(h + 24);
        size_t nlen = rd16(h + 28), xlen = rd16(h + 30), clen = rd16(h + 32);
        uint64_t loff = rd32(h + 42);
        if (p + 46 + nlen + xlen + clen > end) {
            st = dn_fail(DN_ERR_FORMAT, "%s: corrupt zip central directory (entry %llu name/extra overrun)", label,
                         (unsigned long long)i);
            goto fail;
        }
        char *name = dn_malloc(nlen + 1);
        if (!name) { st = DN_ERR_NOMEM; goto fail; }
        memcpy(name, h + 46, nlen);
        name[nlen] = 0;
        z->e[i].name = name;
        z->n = (int)i + 1;
        if (strlen(name) != nlen) {
            st = dn_fail(DN_ERR_FORMAT, "%s: zip entry %llu has a NUL byte in its name", label, (unsigned long long)i);
            goto fail;
        }
        st = zip64_extra(z, h + 46 + nlen, xlen, name, &usize, &csize, &loff, usize == 0xFFFFFFFFu,
                         csize == 0xFFFFFFFFu, loff == 0xFFFFFFFFu);
        if (st) goto fail;
        if (flags & 1) {
            st = dn_fail(DN_ERR_UNSUPPORTED, "%s: zip entry '%s' is encrypted", label, name);
            goto fail;
        }
        if (method != 0 && method != 8) {
            st = dn_fail(DN_ERR_UNSUPPORTED, "%s: zip entry '%s' uses unsupported compression method %u", label, name, method);
            goto fail;
        }
        if (method == 0 && csize != usize) {
            st = dn_fail(DN_ERR_FORMAT, "%s: zip entry '%s' is stored but sizes differ (%llu vs %llu)", label, name,
                         (unsigned long long)csize, (unsigned long long)usize);
            goto fail;
        }
        if (usize > DN_ZIP_MAX_ENTRY) {
            st = dn_fail(DN_ERR_NOMEM, "%s: zip entry '%s' declares %llu bytes uncompressed (limit %llu; zip bomb?)", label,
                         name, (unsigned long long)usize, (unsigned long long)DN_ZIP_MAX_ENTRY);
            goto fail;
        }
        if (method == 8 && usize > DN_ZIP_RATIO_MIN_SIZE && usize / (csize ? csize : 1) > DN_ZIP_MAX_RATIO) {
            st = dn_fail(DN_ERR_FORMAT, "%s: zip entry '%s' compression ratio %llu:1 exceeds %d:1 (zip bomb?)", label, name,
                         (unsigned long long)(usize / (csize ? csize : 1)), DN_ZIP_MAX_RATIO);
            goto fail;
        }
        /* local header: its own name/extra lengths decide where data starts */
        if (!in_bounds(loff, 30, len) || rd32(buf + loff) != 0x04034b50) {
            st = dn_fail(DN_ERR_FORMAT, "%s: zip entry '%s': local header missing or outside the file", label, name);
            goto fail;
        }
        uint64_t doff = loff + 30 + rd16(buf + loff + 26) + rd16(buf + loff + 28);
        if (!in_bounds(doff, csize, len)) {
            st = dn_fail(DN_ERR_FORMAT, "%s: zip entry '%s': data (offset %llu, %llu bytes) runs past end of file (%zu bytes; truncated?)",
                         label, name, (unsigned long long)doff, (unsigned long long)csize, len);
            goto fail;
        }
        z->e[i].method = method;
        z->e[i].crc = crc;
        z->e[i].csize = csize;
        z->e[i].usize = usize;
        z->e[i].data_off = doff;
        p += 46 + nlen + xlen + clen;
    }
    z->names = dn_malloc((nent ? (size_t)nent : 1) * sizeof *z->names);
    if (!z->names) { st = DN_ERR_NOMEM; goto fail; }
    for (int i = 0; i < z->n; i++) z->names[i] = (dn_keyidx){z->e[i].name, (size_t)i};
    if ((st = dn_keyidx_sort(z->names, (size_t)z->n, NULL))) goto fail;
    *out = z;
    return DN_OK;
fail:
    dn_zip_close(z);
    return st;
}

int dn_zip_count(const dn_zip *z) { return z ? z->n : 0; }
const dn_zip_entry *dn_zip_entry_at(const dn_zip *z, int i) { return z && i >= 0 && i < z->n ? &z->e[i] : NULL; }
int dn_zip_find(const dn_zip *z, const char *name) {
    ptrdiff_t k = z ? dn_keyidx_find(z->names, (size_t)z->n, name) : -1;
    return k < 0 ? -1 : (int)z->names[k].idx; /* the first entry of that name */
}

static uint32_t crc_of(const uint8_t *p, uint64_t n) {
    uLong c = crc32(0L, Z_NULL, 0);
    while (n) {
        uInt k = n > 0x40000000u ? 0x40000000u : (uInt)n;
        c = crc32(c, p, k);
        p += k;
        n -= k;
    }
    return (uint32_t)c;
}

static dn_status inflate_entry(const dn_zip *z, const dn_zip_entry *e, uint8_t *dst) {
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -MAX_WBITS) != Z_OK) return dn_fail(DN_ERR_NOMEM, "%s: zlib init failed", z->label);
    const uint8_t *src = z->buf + e->data_off;
    uint64_t in_left = e->csize, out_left = e->usize;
    uint8_t spare[1];
    int rc = Z_OK;
    s.next_out = dst;
    while (1) {
        if (s.avail_in == 0 && in_left) {
            s.next_in = (Bytef *)src;
            s.avail_in = in_left > 0x40000000u ? 0x40000000u : (uInt)in_left;
            src += s.avail_in;
            in_left -= s.avail_in;
        }
        if (s.avail_out == 0) {
            if (out_left) {
                s.avail_out = out_left > 0x40000000u ? 0x40000000u : (uInt)out_left;
                out_left -= s.avail_out;
            } else {
                /* declared size reached: any further output means the entry lied */
                s.next_out = spare;
                s.avail_out = 1;
            }
        }
        Bytef *before = s.next_out;
        rc = inflate(&s, Z_NO_FLUSH);
        if (s.next_out == spare + 1 && before == spare) {
            inflateEnd(&s);
            return dn_fail(DN_ERR_FORMAT, "%s: zip entry '%s' inflates to more than its declared %llu bytes (zip bomb?)",
                           z->label, e->name, (unsigned long long)e->usize);
        }
        if (rc == Z_STREAM_END) break;
        if (rc != Z_OK && !(rc == Z_BUF_ERROR && (s.avail_in || in_left))) {
            inflateEnd(&s);
            return dn_fail(DN_ERR_FORMAT, "%s: zip entry '%s': corrupt deflate data (%s)", z->label, e->name,
                           s.msg ? s.msg : (rc == Z_BUF_ERROR ? "unexpected end of data" : "inflate error"));
        }
        if (rc == Z_BUF_ERROR && !s.avail_in && !in_left) break;
    }
    uint64_t total = s.total_out;
    inflateEnd(&s);
    if (rc != Z_STREAM_END)
        return dn_fail(DN_ERR_FORMAT, "%s: zip entry '%s': deflate stream truncated", z->label, e->name);
    if (total != e->usize)
        return dn_fail(DN_ERR_FORMAT, "%s: zip entry '%s' inflates to %llu bytes, declared %llu", z->label, e->name,
                       (unsigned long long)total, (unsigned long long)e->usize);
    return DN_OK;
}

dn_status dn_zip_read(const dn_zip *z, int i, uint8_t **data, size_t *len) {
    *data = NULL;
    *len = 0;
    const dn_zip_entry *e = dn_zip_entry_at(z, i);
    if (!e) return dn_fail(DN_ERR_ARG, "%s: zip entry index %d out of range", z ? z->label : "zip", i);
    if (e->usize >= SIZE_MAX) return dn_fail(DN_ERR_NOMEM, "%s: zip entry '%s' too large", z->label, e->name);
    uint8_t *d = dn_malloc((size_t)e->usize + 1);
    if (!d) return DN_ERR_NOMEM;
    if (e->method == 0) {
        memcpy(d, z->buf + e->data_off, (size_t)e->usize);
    } else {
        dn_status st = inflate_entry(z, e, d);
        if (st) { free(d); return st; }
    }
    d[e->usize] = 0;
    if (crc_of(d, e->usize) != e->crc) {
        free(d);
        return dn_fail(DN_ERR_FORMAT, "%s: zip entry '%s': CRC-32 mismatch (corrupt data)", z->label, e->name);
    }
    *data = d;
    *len = (size_t)e->usize;
    return DN_OK;
}

dn_status dn_zip_view(const dn_zip *z, int i, const uint8_t **data, size_t *len, uint8_t **owned) {
    *data = NULL;
    *len = 0;
    *owned = NULL;
    const dn_zip_entry *e = dn_zip_entry_at(z, i);
    if (!e) return dn_fail(DN_ERR_ARG, "%s: zip entry index %d out of range", z ? z->label : "zip", i);
    if (e->method != 0) {
        dn_status st = dn_zip_read(z, i, owned, len);
        *data = *owned;
        return st;
    }
    if (crc_of(z->buf + e->data_off, e->usize) != e->crc)
        return dn_fail(DN_ERR_FORMAT, "%s: zip entry '%s': CRC-32 mismatch (corrupt data)", z->label, e->name);
    *data = z->buf + e->data_off;
    *len = (size_t)e->usize;
    return DN_OK;
}
