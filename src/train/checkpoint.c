/* Training checkpoints (see checkpoint.h). */
#include "train/checkpoint.h"
#include "core/core.h"
#include "core/sha256.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CK_MAGIC "DNCKPT01"

dn_status dn_write_atomic(const char *path, dn_status (*fn)(FILE *f, void *ctx), void *ctx) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return dn_fail(DN_ERR_ARG, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return dn_fail(DN_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    dn_status st = fn(f, ctx);
    if (!st && (fflush(f) != 0 || fsync(fileno(f)) != 0))
        st = dn_fail(DN_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    if (fclose(f) != 0 && !st) st = dn_fail(DN_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    if (!st && rename(tmp, path) != 0) st = dn_fail(DN_ERR_IO, "%s: cannot rename into place: %s", path, strerror(errno));
    if (st) unlink(tmp);
    return st;
}

/* Writer that hashes everything it writes. */
typedef struct hw { FILE *f; dn_sha256_ctx h; int err; } hw;
static void hw_put(hw *w, const void *p, size_t n) {
    if (w->err) return;
    if (n && fwrite(p, 1, n, w->f) != n) w->err = 1;
    dn_sha256_update(&w->h, p, n);
}
static void hw_u32(hw *w, uint32_t v) { hw_put(w, &v, 4); }

typedef struct save_ctx { const dn_tensors *ts; const dn_meta *meta; const char *path; } save_ctx;

static uint64_t payload_len(const dn_tensors *ts, const dn_meta *meta) {
    uint64_t n = 4;
    for (int i = 0; i < meta->n; i++) n += 8 + strlen(meta->keys[i]) + strlen(meta->vals[i]);
    n += 4;
    for (int i = 0; i < ts->n; i++)
        n += 8 + strlen(ts->t[i].name) + 8 * (uint64_t)ts->t[i].ndim + 4 * (uint64_t)dn_tensor_numel(&ts->t[i]);
    return n;
}

static dn_status save_fn(FILE *f, void *ctx) {
    save_ctx *c = ctx;
    uint64_t len = payload_len(c->ts, c->meta);
    if (fwrite(CK_MAGIC, 1, 8, f) != 8 || fwrite(&len, 8, 1, f) != 1)
        return dn_fail(DN_ERR_IO, "%s: write failed", c->path);
    hw w;
    memset(&w, 0, sizeof w);
    w.f = f;
    dn_sha256_init(&w.h);
    hw_u32(&w, (uint32_t)c->meta->n);
    for (int i = 0; i < c->meta->n; i++) {
        uint32_t kl = (uint32_t)strlen(c->meta->keys[i]), vl = (uint32_t)strlen(c->meta->vals[i]);
        hw_u32(&w, kl);
        hw_put(&w, c->meta->keys[i], kl);
        hw_u32(&w, vl);
        hw_put(&w, c->meta->vals[i], vl);
    }
    hw_u32(&w, (uint32_t)c->ts->n);
    for (int i = 0; i < c->ts->n; i++) {
        const dn_tensor *t = &c->ts->t[i];
        uint32_t nl = (uint32_t)strlen(t->name);
        hw_u32(&w, nl);
        hw_put(&w, t->name, nl);
        hw_u32(&w, (uint32_t)t->ndim);
        hw_put(&w, t->shape, 8 * (size_t)t->ndim);
        hw_put(&w, t->data, 4 * (size_t)dn_tensor_numel(t));
    }
    uint8_t d[32];
    dn_sha256_final(&w.h, d);
    if (w.err || fwrite(d, 1, 32, f) != 32) return dn_fail(DN_ERR_IO, "%s: write failed", c->path);
    return DN_OK;
}

dn_status dn_checkpoint_save(const char *path, const dn_tensors *ts, const dn_meta *meta) {
    save_ctx c = {ts, meta, path};
    return dn_write_atomic(path, save_fn, &c);
}

typedef struct rd { const uint8_t *p; size_t left; } rd;
static int rd_get(rd *r, void *dst, size_t n) {
    if (n > r->left) return -1;
    memcpy(dst, r->p, n);
    r->p += n;
    r->left -= n;
    return 0;
}
static char *rd_str(rd *r) {
    uint32_t n;
    if (rd_get(r, &n, 4) || n > r->left || n > (1u << 24)) return NULL;
    char *s = dn_malloc((size_t)n + 1);
    if (!s) return NULL;
    memcpy(s, r->p, n);
    s[n] = 0;
    r->p += n;
    r->left -= n;
    return s;
}

dn_status dn_checkpoint_load(const char *path, dn_tensors *ts, dn_meta *meta) {
    uint8_t *buf = NULL;
    size_t len = 0;
    dn_status st = dn_read_file(path, DN_CKPT_MAX_BYTES, &buf, &len);
    if (st) return st;
    uint64_t plen;
    if (len < 8 + 8 + 32 || memcmp(buf, CK_MAGIC, 8) != 0) {
        free(buf);
        return dn_fail(DN_ERR_FORMAT, "%s: not a defectnet checkpoint (bad magic or too short)", path);
    }
    memcpy(&plen, buf + 8, 8);
    if (plen != len - 48) {
        free(buf);
        if (plen > len)
            return dn_fail(DN_ERR_FORMAT, "%s: corrupt checkpoint (truncated: header announces %llu payload bytes, file has %zu)",
                           path, (unsigned long long)plen, len - 48);
        return dn_fail(DN_ERR_FORMAT, "%s: corrupt checkpoint (length field %llu does not match the file size)", path,
                       (unsigned long long)plen);
    }
    uint8_t d[32];
    dn_sha256(buf + 16, (size_t)plen, d);
    if (memcmp(d, buf + 16 + plen, 32) != 0) {
        free(buf);
        return dn_fail(DN_ERR_FORMAT, "%s: corrupt checkpoint (checksum mismatch)", path);
    }
    rd r = {buf + 16, (size_t)plen};
    uint32_t n;
    st = DN_ERR_FORMAT;
    if (rd_get(&r, &n, 4)) goto bad;
    for (uint32_t i = 0; i < n; i++) {
        char *k = rd_str(&r), *v = k ? rd_str(&r) : NULL;
        if (!k || !v) { free(k); free(v); goto bad; }
        st = dn_meta_set(meta, k, v);
        free(k);
        free(v);
        if (st) goto fail;
        st = DN_ERR_FORMAT;
    }
    if (rd_get(&r, &n, 4)) goto bad;
    for (uint32_t i = 0; i < n; i++) {
        char *name = rd_str(&r);
        uint32_t nd;
        int64_t shape[DN_MAX_DIMS];
        if (!name) goto bad;
        if (rd_get(&r, &nd, 4) || nd > DN_MAX_DIMS || rd_get(&r, shape, 8 * (size_t)nd)) { free(name); goto bad; }
        uint64_t numel = 1;
        for (uint32_t j = 0; j < nd; j++) {
            if (shape[j] < 0 || (shape[j] && numel > UINT64_MAX / (uint64_t)shape[j])) { free(name); goto bad; }
            numel *= (uint64_t)shape[j];
        }
        if (numel > r.left / 4) { free(name); goto bad; }
        float *data = dn_malloc((size_t)(numel ? numel : 1) * 4);
        if (!data) { free(name); st = DN_ERR_NOMEM; goto fail; }
        rd_get(&r, data, (size_t)numel * 4);
        st = dn_tensors_add(ts, name, (int)nd, shape, data);
        free(name);
        if (st) goto fail; /* dn_tensors_add freed data */
        st = DN_ERR_FORMAT;
    }
    if (r.left) goto bad;
    free(buf);
    return DN_OK;
bad:
    st = dn_fail(DN_ERR_FORMAT, "%s: corrupt checkpoint (malformed record)", path);
fail:
    free(buf);
    dn_tensors_free(ts);
    dn_meta_free(meta);
    return st;
}
