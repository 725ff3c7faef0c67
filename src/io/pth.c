/* torch.save reader (see pth.h). The container layout follows torch/serialization.py
 * (_save / _legacy_save); nothing from the pickle is ever executed. */
#include "io/pth.h"
#include "core/core.h"
#include "io/pickle.h"
#include "io/zip.h"
#include <stdlib.h>
#include <string.h>

/* LONG1 encoding of torch's legacy MAGIC_NUMBER 0x1950a86a20f9469cfc6c. */
static const uint8_t legacy_magic[12] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8};
#define DN_PTH_MAX_FILE ((size_t)8 << 30)
#define DN_PTH_MAX_TENSORS 100000
/* A view may repeat storage elements (stride 0, overlapping strides), but a tensor may
 * address at most DN_PTH_MAX_EXPAND times its storage's elements plus a small slack,
 * and all tensors of a file together at most DN_PTH_MAX_EXCESS elements beyond their
 * storages: a few hundred bytes must not become gigabytes of floats. */
#define DN_PTH_MAX_EXPAND 16
#define DN_PTH_EXPAND_SLACK 65536
#define DN_PTH_MAX_EXCESS ((uint64_t)1 << 24)

int dn_pth_detect(const uint8_t *buf, size_t len) {
    if (dn_zip_detect(buf, len)) return DN_PTH_ZIP;
    if (len >= sizeof legacy_magic && !memcmp(buf, legacy_magic, sizeof legacy_magic)) return DN_PTH_LEGACY;
    return DN_PTH_NONE;
}

/* A resolved storage: bytes of element type dt, numel elements available. */
typedef struct { const uint8_t *data; size_t nbytes; } blob;
typedef dn_status (*storage_fn)(void *ctx, const char *key, blob *out);

/* Finds the state_dict inside the root object (see pth.h). */
static dn_status find_state_dict(const char *label, const dn_pk *root, const dn_pk **sd) {
    if (!root || root->type != DN_PK_DICT)
        return dn_fail(DN_ERR_FORMAT, "%s: top-level object is not a dict (not a state_dict or checkpoint)", label);
    static const char *wrappers[] = {"state_dict", "model", "model_state_dict"};
    for (size_t i = 0; i < sizeof wrappers / sizeof wrappers[0]; i++) {
        const dn_pk *v = dn_pk_dict_get(root, wrappers[i]);
        if (v && v->type == DN_PK_DICT) { *sd = v; return DN_OK; }
    }
    *sd = root;
    return DN_OK;
}

static dn_status copy_tensor(const char *label, const char *name, const dn_pk *t, blob b, uint64_t *excess, float **out) {
    *out = NULL;
    const dn_pk *st = t->storage;
    size_t es = dn_dtype_size(st->dtype);
    if ((uint64_t)st->numel > b.nbytes / es)
        return dn_fail(DN_ERR_FORMAT, "%s: tensor '%s': storage '%s' declares %lld elements but holds only %zu bytes (truncated?)",
                       label, name, st->s, (long long)st->numel, b.nbytes);
    /* numel and the largest element index addressed (offset + sum (size-1)*stride) */
    uint64_t numel = 1, maxidx = (uint64_t)t->offset;
    for (int d = 0; d < t->ndim; d++)
        if (__builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel))
            return dn_fail(DN_ERR_FORMAT, "%s: tensor '%s': element count overflows", label, name);
    if (numel > 0) {
        for (int d = 0; d < t->ndim; d++) {
            uint64_t span;
            if (__builtin_mul_overflow((uint64_t)(t->shape[d] - 1), (uint64_t)t->stride[d], &span) ||
                __builtin_add_overflow(maxidx, span, &maxidx))
                return dn_fail(DN_ERR_FORMAT, "%s: tensor '%s': strides overflow", label, name);
        }
        if (maxidx >= (uint64_t)st->numel)
            return dn_fail(DN_ERR_FORMAT, "%s: tensor '%s': offset/strides address element %llu of a %lld-element storage",
                           label, name, (unsigned long long)maxidx, (long long)st->numel);
    }
    if (numel > (uint64_t)st->numel) {
        uint64_t over = numel - (uint64_t)st->numel;
        if (numel > (uint64_t)st->numel * DN_PTH_MAX_EXPAND + DN_PTH_EXPAND_SLACK || over > DN_PTH_MAX_EXCESS - *excess)
            return dn_fail(DN_ERR_FORMAT, "%s: tensor '%s': %llu elements expanded from a %lld-element storage (stride 0 or"
                                          " overlapping views beyond the limit)",
                           label, name, (unsigned long long)numel, (long long)st->numel);
        *excess += over;
    }
    if (numel > SIZE_MAX / sizeof(float) / 2)
        return dn_fail(DN_ERR_NOMEM, "%s: tensor '%s' too large", label, name);
    float *d = dn_malloc((size_t)numel * sizeof(float));
    if (!d) return DN_ERR_NOMEM;
    /* contiguous? */
    int contig = 1;
    int64_t expect = 1;
    for (int k = t->ndim - 1; k >= 0; k--) {
        if (t->shape[k] != 1 && t->stride[k] != expect) contig = 0;
        expect *= t->shape[k];
    }
    const uint8_t *base = b.data;
    if (contig || numel <= 1) {
        if (numel) dn_dtype_to_f32(st->dtype, base + (size_t)t->offset * es, (size_t)numel, d);
    } else {
        int64_t idx[DN_MAX_DIMS] = {0};
        for (uint64_t i = 0; i < numel; i++) {
            int64_t off = t->offset;
            for (int k = 0; k < t->ndim; k++) off += idx[k] * t->stride[k];
            dn_dtype_to_f32(st->dtype, base + (size_t)off * es, 1, &d[i]);
            for (int k = t->ndim - 1; k >= 0; k--) {
                if (++idx[k] < t->shape[k]) break;
                idx[k] = 0;
            }
        }
    }
    *out = d;
    return DN_OK;
}

/* Duplicate keys in O(n log n) (the unpickler keeps duplicates). */
static dn_status check_unique(const char *label, const dn_pk *sd) {
    size_t n = sd->n / 2;
    dn_keyidx *names = dn_malloc((n ? n : 1) * sizeof *names);
    if (!names) return DN_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) names[i] = (dn_keyidx){sd->items[2 * i]->s, i};
    const char *dup = NULL;
    dn_status st = dn_keyidx_sort(names, n, &dup);
    if (!st && dup) st = dn_fail(DN_ERR_FORMAT, "%s: state_dict key '%s' appears twice", label, dup);
    free(names);
    return st;
}

static dn_status collect(const char *label, const dn_pk *root, storage_fn get, void *ctx, dn_tensors *out) {
    const dn_pk *sd = NULL;
    dn_status st = find_state_dict(label, root, &sd);
    if (st) return st;
    size_t npairs = sd->n / 2;
    if (npairs == 0) return dn_fail(DN_ERR_FORMAT, "%s: state_dict is empty", label);
    if (npairs > DN_PTH_MAX_TENSORS) return dn_fail(DN_ERR_FORMAT, "%s: state_dict has %zu entries (limit %d)", label, npairs, DN_PTH_MAX_TENSORS);
    int all_module = 1;
    for (size_t i = 0; i < npairs; i++) {
        const dn_pk *k = sd->items[2 * i], *v = sd->items[2 * i + 1];
        if (k->type != DN_PK_STR) return dn_fail(DN_ERR_FORMAT, "%s: state_dict key %zu is not a string", label, i);
        if (v->type != DN_PK_TENSOR)
            return dn_fail(DN_ERR_FORMAT, "%s: state_dict entry '%s' is not a tensor (expected a state_dict or a checkpoint with a 'state_dict'/'model' entry)",
                           label, k->s);
        if (strncmp(k->s, "module.", 7)) all_module = 0;
    }
    if ((st = check_unique(label, sd))) return st;
    uint64_t excess = 0;
    for (size_t i = 0; i < npairs; i++) {
        const dn_pk *k = sd->items[2 * i], *v = sd->items[2 * i + 1];
        const char *name = all_module ? k->s + 7 : k->s;
        blob b;
        if ((st = get(ctx, v->storage->s, &b))) goto fail;
        float *data;
        if ((st = copy_tensor(label, name, v, b, &excess, &data))) goto fail;
        if ((st = dn_tensors_add(out, name, v->ndim, v->shape, data))) goto fail;
    }
    return DN_OK;
fail:
    dn_tensors_free(out);
    return st;
}

/* ------------------------------------------------------------ zip format */

typedef struct {
    const dn_zip *z;
    const char *label;
    char prefix[512];
    /* resolved storages by zip entry (shared storages are read once) */
    blob *blobs;
    uint8_t **owned;
    char *done;
} zctx;

static dn_status zip_storage(void *vctx, const char *key, blob *out) {
    zctx *c = vctx;
    char name[1024];
    snprintf(name, sizeof name, "%sdata/%s", c->prefix, key);
    int idx = dn_zip_find(c->z, name);
    if (idx < 0) return dn_fail(DN_ERR_FORMAT, "%s: storage '%s' missing from archive (no entry %s)", c->label, key, name);
    if (!c->done[idx]) {
        const uint8_t *data;
        size_t len;
        dn_status st = dn_zip_view(c->z, idx, &data, &len, &c->owned[idx]);
        if (st) return st;
        c->blobs[idx] = (blob){data, len};
        c->done[idx] = 1;
    }
    *out = c->blobs[idx];
    return DN_OK;
}

static dn_status load_zip(const uint8_t *buf, size_t len, const char *label, dn_tensors *out) {
    dn_zip *z = NULL;
    dn_pickle *pk = NULL;
    uint8_t *pkl = NULL;
    size_t pkl_len;
    zctx c;
    memset(&c, 0, sizeof c);
    dn_status st = dn_zip_open(buf, len, label, &z);
    if (st) return st;
    c.z = z;
    c.label = label;
    size_t ne = (size_t)dn_zip_count(z) + 1;
    c.blobs = dn_calloc(ne, sizeof *c.blobs);
    c.owned = dn_calloc(ne, sizeof *c.owned);
    c.done = dn_calloc(ne, 1);
    if (!c.blobs || !c.owned || !c.done) { st = DN_ERR_NOMEM; goto done; }
    int pi = -1;
    for (int i = 0; i < dn_zip_count(z); i++) {
        const char *n = dn_zip_entry_at(z, i)->name, *sl = strchr(n, '/');
        if (sl && !strcmp(sl + 1, "data.pkl") && (size_t)(sl + 1 - n) < sizeof c.prefix) {
            if (pi >= 0) { st = dn_fail(DN_ERR_FORMAT, "%s: more than one data.pkl in archive", label); goto done; }
            pi = i;
            memcpy(c.prefix, n, (size_t)(sl + 1 - n));
            c.prefix[sl + 1 - n] = 0;
        }
    }
    if (pi < 0) { st = dn_fail(DN_ERR_FORMAT, "%s: zip archive has no <folder>/data.pkl (not a torch.save file)", label); goto done; }
    if ((st = dn_zip_read(z, pi, &pkl, &pkl_len))) goto done;
    size_t used;
    char plabel[1024];
    snprintf(plabel, sizeof plabel, "%s: %sdata.pkl", label, c.prefix);
    if ((st = dn_pickle_load(pkl, pkl_len, plabel, &pk, &used))) goto done;
    st = collect(label, dn_pickle_root(pk), zip_storage, &c, out);
done:
    for (int i = 0; c.owned && i < dn_zip_count(z); i++) free(c.owned[i]);
    free(c.blobs);
    free(c.owned);
    free(c.done);
    dn_pickle_free(pk);
    free(pkl);
    dn_zip_close(z);
    return st;
}

/* ------------------------------------------------------------ legacy format */

typedef struct {
    const char *label;
    size_t n;
    dn_keyidx *keys;     /* sorted: key -> index into blobs */
    blob *blobs;
} lctx;

static dn_status legacy_storage(void *vctx, const char *key, blob *out) {
    lctx *c = vctx;
    ptrdiff_t k = dn_keyidx_find(c->keys, c->n, key);
    if (k < 0) return dn_fail(DN_ERR_FORMAT, "%s: storage '%s' not in the file's storage list", c->label, key);
    *out = c->blobs[c->keys[k].idx];
    return DN_OK;
}

static dn_status load_legacy(const uint8_t *buf, size_t len, const char *label, dn_tensors *out) {
    dn_pickle *p[5] = {0};
    lctx c = {label, 0, NULL, NULL};
    dn_status st = DN_OK;
    size_t pos = 0;
    static const char *what[5] = {"magic number", "protocol version", "sys_info", "main object", "storage keys"};
    for (int i = 0; i < 5; i++) {
        size_t used;
        char plabel[1024];
        snprintf(plabel, sizeof plabel, "%s: legacy %s pickle", label, what[i]);
        if ((st = dn_pickle_load(buf + pos, len - pos, plabel, &p[i], &used))) goto done;
        pos += used;
    }
    const dn_pk *proto = dn_pickle_root(p[1]), *info = dn_pickle_root(p[2]), *keys = dn_pickle_root(p[4]);
    if (proto->type != DN_PK_INT || proto->i != 1001) {
        st = dn_fail(DN_ERR_UNSUPPORTED, "%s: unsupported legacy torch.save protocol version", label);
        goto done;
    }
    const dn_pk *le = dn_pk_dict_get(info, "little_endian");
    if (!le || le->type != DN_PK_BOOL || !le->i) {
        st = dn_fail(DN_ERR_UNSUPPORTED, "%s: legacy file is not little-endian", label);
        goto done;
    }
    if (keys->type != DN_PK_LIST) { st = dn_fail(DN_ERR_FORMAT, "%s: legacy storage key list is not a list", label); goto done; }
    c.keys = dn_calloc(keys->n ? keys->n : 1, sizeof *c.keys);
    c.blobs = dn_calloc(keys->n ? keys->n : 1, sizeof *c.blobs);
    if (!c.keys || !c.blobs) { st = DN_ERR_NOMEM; goto done; }
    for (size_t i = 0; i < keys->n; i++) {
        const dn_pk *k = keys->items[i];
        dn_dtype dt;
        if (k->type != DN_PK_STR) { st = dn_fail(DN_ERR_FORMAT, "%s: legacy storage key %zu is not a string", label, i); goto done; }
        if (!dn_pickle_storage_dtype(p[3], k->s, &dt)) {
            st = dn_fail(DN_ERR_FORMAT, "%s: legacy storage '%s' is not referenced by the pickle", label, k->s);
            goto done;
        }
        if (len - pos < 8) {
            st = dn_fail(DN_ERR_FORMAT, "%s: truncated: storage '%s' header runs past end of file", label, k->s);
            goto done;
        }
        uint64_t n = 0;
        for (int b = 7; b >= 0; b--) n = n << 8 | buf[pos + b];
        pos += 8;
        size_t es = dn_dtype_size(dt);
        if (n > (len - pos) / es) {
            st = dn_fail(DN_ERR_FORMAT, "%s: truncated: storage '%s' (%llu x %zu bytes) runs past end of file", label, k->s,
                         (unsigned long long)n, es);
            goto done;
        }
        c.keys[i] = (dn_keyidx){k->s, i};
        c.blobs[i] = (blob){buf + pos, (size_t)n * es};
        c.n = i + 1;
        pos += (size_t)n * es;
    }
    if ((st = dn_keyidx_sort(c.keys, c.n, NULL))) goto done;
    st = collect(label, dn_pickle_root(p[3]), legacy_storage, &c, out);
done:
    free(c.keys);
    free(c.blobs);
    for (int i = 0; i < 5; i++) dn_pickle_free(p[i]);
    return st;
}

dn_status dn_pth_load_mem(const uint8_t *buf, size_t len, const char *label, dn_tensors *out) {
    memset(out, 0, sizeof *out);
    switch (dn_pth_detect(buf, len)) {
    case DN_PTH_ZIP: return load_zip(buf, len, label, out);
    case DN_PTH_LEGACY: return load_legacy(buf, len, label, out);
    default: return dn_fail(DN_ERR_FORMAT, "%s: not a torch.save file (neither zip nor legacy pickle magic)", label);
    }
}

dn_status dn_pth_load(const char *path, dn_tensors *out) {
    memset(out, 0, sizeof *out);
    uint8_t *buf;
    size_t len;
    dn_status st = dn_read_file(path, DN_PTH_MAX_FILE, &buf, &len);
    if (st) return st;
    st = dn_pth_load_mem(buf, len, path, out);
    free(buf);
    return st;
}
