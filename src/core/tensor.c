/* Named float tensor list and string metadata map (see tensor.h). */
#include "core/tensor.h"
#include "core/core.h"
#include <stdlib.h>
#include <string.h>

static dn_status add_impl(dn_tensors *ts, const char *name, int ndim, const int64_t *shape, float *data);

int64_t dn_tensor_numel(const dn_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* Ownership of data always passes to the list: on failure it is freed here, so
 * callers never leak it whatever the outcome. */
dn_status dn_tensors_add(dn_tensors *ts, const char *name, int ndim, const int64_t *shape, float *data) {
    dn_status st = add_impl(ts, name, ndim, shape, data);
    if (st != DN_OK) free(data);
    return st;
}

static dn_status add_impl(dn_tensors *ts, const char *name, int ndim, const int64_t *shape, float *data) {
    if (!name || ndim < 0 || ndim > DN_MAX_DIMS || (ndim && !shape))
        return dn_fail(DN_ERR_ARG, "%s: invalid tensor (ndim %d)", name ? name : "(null)", ndim);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) return dn_fail(DN_ERR_ARG, "%s: negative dimension", name);
    if (ts->n == ts->cap) {
        int nc = ts->cap ? ts->cap * 2 : 16;
        dn_tensor *nt = dn_realloc(ts->t, (size_t)nc * sizeof *nt);
        if (!nt) return dn_fail(DN_ERR_NOMEM, "%s: out of memory growing tensor list", name);
        ts->t = nt;
        ts->cap = nc;
    }
    dn_tensor *t = &ts->t[ts->n];
    memset(t, 0, sizeof *t);
    t->name = dn_strdup(name);
    if (!t->name) return DN_ERR_NOMEM;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = data;
    ts->n++;
    return DN_OK;
}

dn_tensor *dn_tensors_find(const dn_tensors *ts, const char *name) {
    for (int i = 0; i < ts->n; i++)
        if (!strcmp(ts->t[i].name, name)) return &ts->t[i];
    return NULL;
}

void dn_tensors_free(dn_tensors *ts) {
    if (!ts) return;
    for (int i = 0; i < ts->n; i++) {
        free(ts->t[i].name);
        free(ts->t[i].data);
    }
    free(ts->t);
    ts->t = NULL;
    ts->n = ts->cap = 0;
}

dn_status dn_meta_set(dn_meta *m, const char *key, const char *val) {
    if (!key || !val) return dn_fail(DN_ERR_ARG, "metadata: NULL key or value");
    char *v = dn_strdup(val);
    if (!v) return DN_ERR_NOMEM;
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->keys[i], key)) {
            free(m->vals[i]);
            m->vals[i] = v;
            return DN_OK;
        }
    char *k = dn_strdup(key);
    if (!k) { free(v); return DN_ERR_NOMEM; }
    if (m->n == m->cap) {
        int nc = m->cap ? m->cap * 2 : 8;
        char **nk = dn_realloc(m->keys, (size_t)nc * sizeof *nk);
        if (!nk) goto oom;
        m->keys = nk;
        char **nv = dn_realloc(m->vals, (size_t)nc * sizeof *nv);
        if (!nv) goto oom;
        m->vals = nv;
        m->cap = nc;
    }
    m->keys[m->n] = k;
    m->vals[m->n] = v;
    m->n++;
    return DN_OK;
oom:
    free(k);
    free(v);
    return dn_fail(DN_ERR_NOMEM, "metadata %s: out of memory", key);
}

const char *dn_meta_get(const dn_meta *m, const char *key) {
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->keys[i], key)) return m->vals[i];
    return NULL;
}

void dn_meta_remove(dn_meta *m, const char *key) {
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->keys[i], key)) {
            free(m->keys[i]);
            free(m->vals[i]);
            m->n--;
            m->keys[i] = m->keys[m->n];
            m->vals[i] = m->vals[m->n];
            return;
        }
}

void dn_meta_free(dn_meta *m) {
    if (!m) return;
    for (int i = 0; i < m->n; i++) { free(m->keys[i]); free(m->vals[i]); }
    free(m->keys);
    free(m->vals);
    m->keys = m->vals = NULL;
    m->n = m->cap = 0;
}
