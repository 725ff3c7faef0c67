/* Allocation, file, time, RNG helpers. */

#include "core.h"
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Fault injection countdown (see core.h); off (-1) unless a test sets it. */
static _Atomic long g_fail_at = -1;
static _Atomic long g_seen;

void dn_alloc_fail_after(long n) {
    atomic_store(&g_seen, 0);
    atomic_store(&g_fail_at, n);
}
long dn_alloc_seen(void) { return atomic_load(&g_seen); }

static int injected_failure(void) {
    long at = atomic_load_explicit(&g_fail_at, memory_order_relaxed);
    if (at < 0) return 0;
    return atomic_fetch_add(&g_seen, 1) == at;
}

void *dn_malloc(size_t n) {
    void *p = injected_failure() ? NULL : malloc(n ? n : 1);
    if (!p) dn_fail(DN_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    return p;
}
void *dn_calloc(size_t count, size_t size) {
    void *p = injected_failure() ? NULL : calloc(count ? count : 1, size ? size : 1);
    if (!p) dn_fail(DN_ERR_NOMEM, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}
void *dn_realloc(void *old, size_t n) {
    void *p = injected_failure() ? NULL : realloc(old, n ? n : 1);
    if (!p) dn_fail(DN_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    return p;
}
void *dn_alloc_aligned(size_t n) {
    void *p = NULL;
    size_t r = (n + 63) & ~(size_t)63;
    if (injected_failure() || posix_memalign(&p, 64, r ? r : 64) != 0) {
        dn_fail(DN_ERR_NOMEM, "out of memory allocating %zu bytes", n);
        return NULL;
    }
    return p;
}
void dn_free_aligned(void *p) { free(p); }
int dn_mul_overflow(size_t a, size_t b, size_t *out) { return __builtin_mul_overflow(a, b, out); }
char *dn_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = dn_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}
char *dn_strndup(const char *s, size_t n) {
    size_t l = strnlen(s, n);
    char *d = dn_malloc(l + 1);
    if (d) { memcpy(d, s, l); d[l] = 0; }
    return d;
}

dn_status dn_open_regular(const char *path, FILE **out, size_t *size) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return dn_fail(DN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return dn_fail(DN_ERR_IO, "%s: not a regular file", path);
    }
    if (size) *size = (size_t)st.st_size;
    *out = f;
    return DN_OK;
}

dn_status dn_write_file(const char *path, const uint8_t *data, size_t n) {
    size_t pl = strlen(path);
    char *tmp = dn_malloc(pl + 5);
    if (!tmp) return dn_fail(DN_ERR_NOMEM, "%s: out of memory", path);
    memcpy(tmp, path, pl);
    memcpy(tmp + pl, ".tmp", 5);
    dn_status st = DN_OK;
    FILE *f = fopen(tmp, "wb");
    if (!f) st = dn_fail(DN_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    else {
        size_t w = n ? fwrite(data, 1, n, f) : 0;
        if (fclose(f) != 0 || w != n) st = dn_fail(DN_ERR_IO, "%s: write failed", tmp);
        else if (rename(tmp, path)) st = dn_fail(DN_ERR_IO, "%s: rename failed: %s", path, strerror(errno));
        if (st) unlink(tmp);
    }
    free(tmp);
    return st;
}

dn_status dn_read_file(const char *path, size_t max_bytes, uint8_t **data, size_t *len) {
    *data = NULL;
    *len = 0;
    FILE *f;
    size_t fsize;
    dn_status rc = dn_open_regular(path, &f, &fsize);
    if (rc) return rc;
    if (fsize > max_bytes) {
        fclose(f);
        return dn_fail(DN_ERR_NOMEM, "%s: file too large (%zu bytes, limit %zu)", path, fsize, max_bytes);
    }
    size_t n = fsize;
    uint8_t *buf = dn_malloc(n + 1);
    if (!buf) { fclose(f); return DN_ERR_NOMEM; }
    if (n && fread(buf, 1, n, f) != n) {
        int e = ferror(f);
        free(buf);
        fclose(f);
        return dn_fail(DN_ERR_IO, "%s: read failed%s", path, e ? "" : " (file shrank)");
    }
    fclose(f);
    buf[n] = 0;
    *data = buf;
    *len = n;
    return DN_OK;
}

double dn_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double dn_wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int dn_num_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
void dn_rng_seed(dn_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}
static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
uint64_t dn_rng_next(dn_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = rotl(s[3], 45);
    return result;
}
double dn_rng_uniform(dn_rng *r) { return (dn_rng_next(r) >> 11) * 0x1.0p-53; }
float dn_rng_normal(dn_rng *r) {
    double u1 = dn_rng_uniform(r), u2 = dn_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
uint32_t dn_rng_below(dn_rng *r, uint32_t n) { return n ? (uint32_t)(dn_rng_uniform(r) * n) : 0; }
