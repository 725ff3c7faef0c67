/* Sorted string index (see core.h): a stable bottom-up merge sort, so the number of
 * key comparisons is at most n*ceil(log2 n) whatever the input order (a hostile file
 * cannot make it quadratic, and there is no hash function to flood). */
#include "core.h"
#include <stdlib.h>
#include <string.h>

static _Thread_local uint64_t g_work;

uint64_t dn_keyidx_work(void) { return g_work; }

static int cmp(const dn_keyidx *a, const dn_keyidx *b) {
    g_work++;
    int c = strcmp(a->key, b->key);
    return c ? c : (a->idx > b->idx) - (a->idx < b->idx);
}

dn_status dn_keyidx_sort(dn_keyidx *a, size_t n, const char **dup) {
    if (dup) *dup = NULL;
    if (n < 2) return DN_OK;
    dn_keyidx *tmp = dn_malloc(n * sizeof *tmp);
    if (!tmp) return DN_ERR_NOMEM;
    dn_keyidx *src = a, *dst = tmp;
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) dst[k++] = cmp(&src[j], &src[i]) < 0 ? src[j++] : src[i++];
            while (i < mid) dst[k++] = src[i++];
            while (j < hi) dst[k++] = src[j++];
        }
        dn_keyidx *t = src;
        src = dst;
        dst = t;
    }
    if (src != a) memcpy(a, src, n * sizeof *a);
    free(tmp);
    if (dup)
        for (size_t i = 1; i < n; i++) {
            g_work++;
            if (!strcmp(a[i].key, a[i - 1].key)) { *dup = a[i].key; break; }
        }
    return DN_OK;
}

ptrdiff_t dn_keyidx_find(const dn_keyidx *a, size_t n, const char *key) {
    size_t lo = 0, hi = n; /* first entry with a[i].key >= key */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        g_work++;
        if (strcmp(a[mid].key, key) < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo < n && !strcmp(a[lo].key, key)) return (ptrdiff_t)lo;
    return -1;
}
