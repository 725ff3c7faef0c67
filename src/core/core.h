/* Internal core services: errors, allocation helpers, thread pool, CPU features.
 * Not part of the public API. */
#ifndef DN_CORE_H
#define DN_CORE_H

#include "defectnet.h"
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#if defined(__GNUC__)
#define DN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DN_PRINTF(a, b)
#endif

/* Record a one-line error for this thread and return code. Usage:
 *   return dn_fail(DN_ERR_FORMAT, "%s: truncated zip central directory", path); */
dn_status dn_fail(dn_status code, const char *fmt, ...) DN_PRINTF(2, 3);
/* Prefix the current error message: "<prefix>: <old message>". Returns code. */
dn_status dn_fail_prefix(dn_status code, const char *fmt, ...) DN_PRINTF(2, 3);
void dn_clear_error(void);

/* Allocation helpers: NULL on failure (and sets DN_ERR_NOMEM message).
 * dn_alloc_aligned returns 64-byte aligned memory; release with dn_free_aligned. */
void *dn_malloc(size_t n);
void *dn_calloc(size_t count, size_t size);
void *dn_realloc(void *p, size_t n); /* like realloc; on failure p is untouched */
void *dn_alloc_aligned(size_t n);
void dn_free_aligned(void *p);
/* Overflow-checked a*b (returns 0 and sets *out on overflow-free). */
int dn_mul_overflow(size_t a, size_t b, size_t *out);
char *dn_strdup(const char *s);
char *dn_strndup(const char *s, size_t n);
/* Test-only allocation fault injection (SQLite's malloc countdown): after
 * dn_alloc_fail_after(n) the allocation helpers above let n allocations through and
 * fail the next one (once; n < 0 switches injection off). dn_alloc_seen() counts
 * the allocations since that call: when it stays <= n the failure was never reached.
 * Every raw malloc/calloc/realloc/strdup in src/ goes through these helpers. */
void dn_alloc_fail_after(long n);
long dn_alloc_seen(void);

/* Sorted string index for names read from files (state_dict keys, storages, zip
 * entries, JSON object keys): O(n log n) duplicate checks and O(log n) lookups with
 * no input able to make them quadratic. Fill key/idx, sort once, then find.
 * dn_keyidx_sort orders by key (then idx) and, if dup is not NULL, sets *dup to a
 * key present twice (else NULL); DN_ERR_NOMEM if its scratch buffer cannot be had.
 * dn_keyidx_find returns the position of the first entry with key, or -1.
 * dn_keyidx_work counts this thread's key comparisons (tests check near-linear work). */
typedef struct dn_keyidx { const char *key; size_t idx; } dn_keyidx;
dn_status dn_keyidx_sort(dn_keyidx *a, size_t n, const char **dup);
ptrdiff_t dn_keyidx_find(const dn_keyidx *a, size_t n, const char *key);
uint64_t dn_keyidx_work(void);

/* Open path for reading, refusing anything but a regular file; *size gets its
 * length (size may be NULL). The caller closes *out. */
dn_status dn_open_regular(const char *path, FILE **out, size_t *size);
/* Read a whole file (up to max_bytes; larger -> DN_ERR_NOMEM). Caller frees *data. */
dn_status dn_read_file(const char *path, size_t max_bytes, uint8_t **data, size_t *len);
/* Writes n bytes to path through path.tmp + rename (readers never see a half file). */
dn_status dn_write_file(const char *path, const uint8_t *data, size_t n);

/* ------------------------------------------------------------ thread pool
 * ggml-style: a job is fn(arg, ith, nth); each of nth workers gets its index.
 * dn_pool_run blocks until all nth calls returned. The calling thread runs
 * ith == 0. A pool of 1 thread runs inline. Not reentrant: a job must not call
 * dn_pool_run on the same pool. */
typedef struct dn_pool dn_pool;
typedef void (*dn_job_fn)(void *arg, int ith, int nth);
#define DN_MAX_THREADS 1024
dn_pool *dn_pool_new(int nthreads); /* nthreads <= 0: number of online CPUs; > DN_MAX_THREADS: NULL */
void dn_pool_free(dn_pool *p);
int dn_pool_size(const dn_pool *p);
void dn_pool_run(dn_pool *p, dn_job_fn fn, void *arg);
/* Split [0, total) into nth contiguous ranges; range of worker ith. */
static inline void dn_split(long total, int ith, int nth, long *begin, long *end) {
    long chunk = total / nth, rem = total % nth;
    *begin = ith * chunk + (ith < rem ? ith : rem);
    *end = *begin + chunk + (ith < rem ? 1 : 0);
}
int dn_num_cpus(void);

/* ------------------------------------------------------------ CPU features */
enum { DN_CPU_AVX2 = 1, DN_CPU_FMA = 2, DN_CPU_AVX512F = 4, DN_CPU_AVX512BW = 8,
       DN_CPU_AVX512VNNI = 16, DN_CPU_AVX512BF16 = 32, DN_CPU_AVX512VL = 64 };
/* Detected features, masked by env DN_FORCE_REF=1 (-> 0, scalar reference kernels)
 * or DN_MAX_ISA=avx2 (drops AVX-512 bits). */
unsigned dn_cpu_features(void);

/* ------------------------------------------------------------ misc */
double dn_now(void); /* monotonic seconds */
double dn_wall_now(void); /* wall clock: unix seconds (CLOCK_REALTIME), for timestamps */
/* Deterministic RNG (splitmix64 seeding xoshiro256**). */
typedef struct { uint64_t s[4]; } dn_rng;
void dn_rng_seed(dn_rng *r, uint64_t seed);
uint64_t dn_rng_next(dn_rng *r);
double dn_rng_uniform(dn_rng *r);          /* [0,1) */
float dn_rng_normal(dn_rng *r);            /* N(0,1) */
uint32_t dn_rng_below(dn_rng *r, uint32_t n);

#endif
