/* safetensors reader/writer (see safetensors.h). Format per the safetensors
 * specification (huggingface/safetensors README, "Format"). */
#include "io/safetensors.h"
#include "core/core.h"
#include "core/half.h"
#include "core/json.h"
#include "io/pickle.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DN_ST_MAX_FILE ((size_t)8 << 30)
#define DN_ST_MAX_META 10000 /* dn_meta is a linear map */

static uint64_t rd64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

int dn_safetensors_detect(const uint8_t *buf, size_t len) {
    if (len < 10) return 0;
    uint64_t n = rd64(buf);
    return n >= 2 && n <= DN_ST_MAX_HEADER && buf[8] == '{';
}

static int parse_dtype(const char *s, dn_dtype *dt) {
    static const struct { const char *n; dn_dtype d; } m[] = {
        {"F32", DN_DT_F32}, {"F16", DN_DT_F16}, {"BF16", DN_DT_BF16}, {"F64", DN_DT_F64},
        {"I64", DN_DT_I64}, {"I32", DN_DT_I32}};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if (!strcmp(s, m[i].n)) { *dt = m[i].d; return 1; }
    return 0;
}

typedef struct { uint64_t b, e; const char *name; } range;
static int cmp_range(const void *a, const void *b) {
    const range *x = a, *y = b;
    return x->b < y->b ? -1 : x->b > y->b ? 1 : (x->e < y->e ? -1 : x->e > y->e);
}

dn_status dn_safetensors_load_mem(const uint8_t *buf, size_t len, const char *label, dn_tensors *ts, dn_meta *meta) {
    memset(ts, 0, sizeof *ts);
    if (meta) memset(meta, 0, sizeof *meta);
    dn_json *h = NULL;
    range *rs = NULL;
    dn_status st = DN_OK;
    if (len < 8) return dn_fail(DN_ERR_FORMAT, "%s: truncated safetensors (%zu bytes, no header length)", label, len);
    uint64_t hl = rd64(buf);
    if (hl > len - 8)
        return dn_fail(DN_ERR_FORMAT, "%s: safetensors header length %llu runs past end of file (%zu bytes; truncated?)", label,
                       (unsigned long long)hl, len);
    if (hl > DN_ST_MAX_HEADER)
        return dn_fail(DN_ERR_FORMAT, "%s: safetensors header length %llu exceeds limit", label, (unsigned long long)hl);
    char err[160];
    h = dn_json_parse((const char *)buf + 8, (size_t)hl, err, sizeof err);
    if (!h) return dn_fail(DN_ERR_FORMAT, "%s: safetensors header is not valid JSON: %s", label, err);
    if (dn_json_type_of(h) != DN_JSON_OBJ) { st = dn_fail(DN_ERR_FORMAT, "%s: safetensors header is not a JSON object", label); goto fail; }
    const uint8_t *data = buf + 8 + hl;
    uint64_t dlen = len - 8 - hl;
    size_t nkeys = dn_json_len(h);
    rs = dn_calloc(nkeys ? nkeys : 1, sizeof *rs);
    if (!rs) { st = DN_ERR_NOMEM; goto fail; }
    size_t nr = 0;
    for (size_t i = 0; i < nkeys; i++) {
        const char *name = dn_json_key_at(h, i);
        const dn_json *v = dn_json_at(h, i);
        if (!strcmp(name, "__metadata__")) {
            if (dn_json_type_of(v) != DN_JSON_OBJ) { st = dn_fail(DN_ERR_FORMAT, "%s: __metadata__ is not an object", label); goto fail; }
            if (dn_json_len(v) > DN_ST_MAX_META)
                { st = dn_fail(DN_ERR_FORMAT, "%s: __metadata__ has %zu entries (limit %d)", label, dn_json_len(v), DN_ST_MAX_META); goto fail; }
            for (size_t k = 0; k < dn_json_len(v); k++) {
                const char *mv = dn_json_str(dn_json_at(v, k), NULL);
                if (!mv) {
                    st = dn_fail(DN_ERR_FORMAT, "%s: metadata '%s' is not a string", label, dn_json_key_at(v, k));
                    goto fail;
                }
                if (meta && (st = dn_meta_set(meta, dn_json_key_at(v, k), mv))) goto fail;
            }
            continue;
        }
        const dn_json *jdt = dn_json_get(v, "dtype"), *jsh = dn_json_get(v, "shape"), *jof = dn_json_get(v, "data_offsets");
        const char *dts = dn_json_str(jdt, NULL);
        dn_dtype dt;
        if (!dts || dn_json_type_of(jsh) != DN_JSON_ARR || dn_json_type_of(jof) != DN_JSON_ARR || dn_json_len(jof) != 2) {
            st = dn_fail(DN_ERR_FORMAT, "%s: tensor '%s': entry needs dtype, shape and data_offsets [begin, end]", label, name);
            goto fail;
        }
        if (!parse_dtype(dts, &dt)) {
            st = dn_fail(DN_ERR_UNSUPPORTED, "%s: tensor '%s': unsupported dtype '%s' (F32, F16, BF16, F64, I64, I32 are read)",
                         label, name, dts);
            goto fail;
        }
        size_t nd = dn_json_len(jsh);
        if (nd > DN_MAX_DIMS) { st = dn_fail(DN_ERR_UNSUPPORTED, "%s: tensor '%s': rank %zu too high", label, name, nd); goto fail; }
        int64_t shape[DN_MAX_DIMS];
        uint64_t numel = 1;
        for (size_t d = 0; d < nd; d++) {
            double x = dn_json_num(dn_json_at(jsh, d), -1);
            if (!(x >= 0 && x <= 9.0e15) || x != (double)(int64_t)x) {
                st = dn_fail(DN_ERR_FORMAT, "%s: tensor '%s': bad shape entry", label, name);
                goto fail;
            }
            shape[d] = (int64_t)x;
            if (__builtin_mul_overflow(numel, (uint64_t)shape[d], &numel)) {
                st = dn_fail(DN_ERR_FORMAT, "%s: tensor '%s': element count overflows", label, name);
                goto fail;
            }
        }
        double b = dn_json_num(dn_json_at(jof, 0), -1), e = dn_json_num(dn_json_at(jof, 1), -1);
        if (!(b >= 0 && e >= b && e <= 9.0e15) || b != (double)(uint64_t)b || e != (double)(uint64_t)e) {
            st = dn_fail(DN_ERR_FORMAT, "%s: tensor '%s': bad data_offsets", label, name);
            goto fail;
        }
        uint64_t ub = (uint64_t)b, ue = (uint64_t)e, nbytes;
        size_t es = dn_dtype_size(dt);
        if (__builtin_mul_overflow(numel, (uint64_t)es, &nbytes) || ue - ub != nbytes) {
            st = dn_fail(DN_ERR_SHAPE, "%s: tensor '%s': data_offsets span %llu bytes but shape x %s needs %llu", label, name,
                         (unsigned long long)(ue - ub), dts, (unsigned long long)nbytes);
            goto fail;
        }
        if (ue > dlen) {
            st = dn_fail(DN_ERR_FORMAT, "%s: tensor '%s': data [%llu, %llu) runs past end of file (data buffer %llu bytes; truncated?)",
                         label, name, (unsigned long long)ub, (unsigned long long)ue, (unsigned long long)dlen);
            goto fail;
        }
        rs[nr++] = (range){ub, ue, name};
        float *f = dn_malloc(numel ? (size_t)numel * sizeof(float) : 1);
        if (!f) { st = DN_ERR_NOMEM; goto fail; }
        dn_dtype_to_f32(dt, data + ub, (size_t)numel, f);
        if ((st = dn_tensors_add(ts, name, (int)nd, shape, f))) goto fail;
    }
    /* duplicate names, O(n log n) (the JSON parser refuses repeated keys too) */
    {
        dn_keyidx *names = dn_malloc((nr ? nr : 1) * sizeof *names);
        if (!names) { st = DN_ERR_NOMEM; goto fail; }
        for (size_t i = 0; i < nr; i++) names[i] = (dn_keyidx){rs[i].name, i};
        const char *dup = NULL;
        st = dn_keyidx_sort(names, nr, &dup);
        if (!st && dup) st = dn_fail(DN_ERR_FORMAT, "%s: tensor '%s' appears twice", label, dup);
        free(names);
        if (st) goto fail;
    }
    qsort(rs, nr, sizeof *rs, cmp_range);
    for (size_t i = 1; i < nr; i++)
        if (rs[i].b < rs[i - 1].e) {
            st = dn_fail(DN_ERR_FORMAT, "%s: tensors '%s' and '%s' have overlapping data_offsets", label, rs[i - 1].name, rs[i].name);
            goto fail;
        }
    free(rs);
    dn_json_free(h);
    return DN_OK;
fail:
    free(rs);
    dn_json_free(h);
    dn_tensors_free(ts);
    if (meta) dn_meta_free(meta);
    return st;
}

dn_status dn_safetensors_load(const char *path, dn_tensors *ts, dn_meta *meta) {
    memset(ts, 0, sizeof *ts);
    if (meta) memset(meta, 0, sizeof *meta);
    uint8_t *buf;
    size_t len;
    dn_status st = dn_read_file(path, DN_ST_MAX_FILE, &buf, &len);
    if (st) return st;
    st = dn_safetensors_load_mem(buf, len, path, ts, meta);
    free(buf);
    return st;
}

dn_status dn_tmpfile_beside(const char *path, const char *tag, char **tmp, int *fd) {
    *tmp = NULL;
    *fd = -1;
    size_t n = strlen(path) + strlen(tag) + 9; /* "." tag ".XXXXXX" NUL */
    char *t = dn_malloc(n);
    if (!t) return DN_ERR_NOMEM;
    snprintf(t, n, "%s.%s.XXXXXX", path, tag);
    int f = mkstemp(t);
    if (f < 0) {
        dn_status st = dn_fail(DN_ERR_IO, "%s: cannot create temporary file: %s", path, strerror(errno));
        free(t);
        return st;
    }
    *tmp = t;
    *fd = f;
    return DN_OK;
}

dn_status dn_write_file_atomic(const char *path, const void *buf, size_t len) {
    char *tmp;
    int fd;
    dn_status st0 = dn_tmpfile_beside(path, "tmp", &tmp, &fd);
    if (st0) return st0;
    const uint8_t *p = buf;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) goto ioerr;
        p += w;
        left -= (size_t)w;
    }
    if (fchmod(fd, 0644) != 0 || fsync(fd) != 0) goto ioerr;
    if (close(fd) != 0) { fd = -1; goto ioerr; }
    fd = -1;
    if (rename(tmp, path) != 0) goto ioerr;
    free(tmp);
    return DN_OK;
ioerr:;
    dn_status st = dn_fail(DN_ERR_IO, "%s: write failed: %s", path, strerror(errno ? errno : EIO));
    if (fd >= 0) close(fd);
    unlink(tmp);
    free(tmp);
    return st;
}

dn_status dn_safetensors_save(const char *path, const dn_tensors *ts, const dn_meta *meta) {
    dn_sb h = {0};
    uint8_t *out = NULL;
    dn_status st;
    dn_sb_puts(&h, "{");
    int first = 1;
    if (meta && meta->n) {
        dn_sb_puts(&h, "\"__metadata__\":{");
        for (int i = 0; i < meta->n; i++) {
            if (i) dn_sb_puts(&h, ",");
            dn_sb_json_str(&h, meta->keys[i]);
            dn_sb_puts(&h, ":");
            dn_sb_json_str(&h, meta->vals[i]);
        }
        dn_sb_puts(&h, "}");
        first = 0;
    }
    uint64_t off = 0;
    for (int i = 0; i < ts->n; i++) {
        const dn_tensor *t = &ts->t[i];
        if (!strcmp(t->name, "__metadata__")) { dn_sb_free(&h); return dn_fail(DN_ERR_ARG, "%s: tensor name '__metadata__' is reserved", path); }
        uint64_t nb = (uint64_t)dn_tensor_numel(t) * (t->f16 ? 2 : 4);
        if (!first) dn_sb_puts(&h, ",");
        first = 0;
        dn_sb_json_str(&h, t->name);
        dn_sb_puts(&h, t->f16 ? ":{\"dtype\":\"F16\",\"shape\":[" : ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) dn_sb_printf(&h, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        dn_sb_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + nb));
        off += nb;
    }
    dn_sb_puts(&h, "}");
    while (h.len % 8) dn_sb_puts(&h, " ");
    if (h.oom) { dn_sb_free(&h); return dn_fail(DN_ERR_NOMEM, "%s: out of memory building header", path); }
    size_t total = 8 + h.len + (size_t)off;
    out = dn_malloc(total);
    if (!out) { dn_sb_free(&h); return DN_ERR_NOMEM; }
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    memcpy(out + 8, h.s, h.len);
    uint8_t *p = out + 8 + h.len;
    for (int i = 0; i < ts->n; i++) {
        const dn_tensor *t = &ts->t[i];
        int64_t n = dn_tensor_numel(t);
        for (int64_t k = 0; t->f16 && k < n; k++) { /* explicit little-endian */
            uint16_t u = dn_f32_to_f16(t->data[k]);
            p[0] = (uint8_t)u; p[1] = (uint8_t)(u >> 8);
            p += 2;
        }
        for (int64_t k = 0; !t->f16 && k < n; k++) { /* explicit little-endian */
            uint32_t u;
            memcpy(&u, &t->data[k], 4);
            p[0] = (uint8_t)u; p[1] = (uint8_t)(u >> 8); p[2] = (uint8_t)(u >> 16); p[3] = (uint8_t)(u >> 24);
            p += 4;
        }
    }
    st = dn_write_file_atomic(path, out, total);
    free(out);
    dn_sb_free(&h);
    return st;
}
