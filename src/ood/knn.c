/* KNN scoring: the scalar specification and the batched, blocked, dispatched
 * fast path (see knn.h). */
#include "ood/knn.h"
#include "core/half.h"
#include "kernels/kernels.h"
#include <stdlib.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

static dn_status check_args(const uint16_t *bank, int nbank, int dim, const float *q, int nq, int k, const float *out,
                            const char *who) {
    if (!bank || nbank < 1 || dim < 1 || nq < 0 || (nq && (!q || !out)))
        return dn_fail(DN_ERR_ARG, "%s: needs a bank of >= 1 rows, dim >= 1 and query/output arrays", who);
    if (k < 1 || k > DN_KNN_KMAX) return dn_fail(DN_ERR_ARG, "%s: k %d outside 1..%d", who, k, DN_KNN_KMAX);
    return DN_OK;
}

static int cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

dn_status dn_ood_knn_ref(const uint16_t *bank, int nbank, int dim, const float *q, int nq, int k, float *out) {
    dn_status st = check_args(bank, nbank, dim, q, nq, k, out, "knn (reference)");
    if (st) return st;
    double *d = dn_malloc((size_t)nbank * sizeof(double));
    if (!d) return dn_fail(DN_ERR_NOMEM, "knn (reference): out of memory");
    int kk = k < nbank ? k : nbank;
    for (int i = 0; i < nq; i++) {
        const float *qi = q + (size_t)i * dim;
        for (int r = 0; r < nbank; r++) {
            const uint16_t *b = bank + (size_t)r * dim;
            double s = 0;
            for (int j = 0; j < dim; j++) s += (double)qi[j] * dn_f16_to_f32(b[j]);
            d[r] = s;
        }
        qsort(d, (size_t)nbank, sizeof *d, cmp_desc);
        out[i] = (float)d[kk - 1];
    }
    free(d);
    return DN_OK;
}

/* ------------------------------------------------------------ fast path */

typedef void (*dots_fn)(const uint16_t *B, int nrows, int dim, const float *q, int ldq, int nq, float *out, int ldo);

/* Plain C tile for machines without the x86 kernels: 16 float lanes per query. */
static void dots_c(const uint16_t *B, int nrows, int dim, const float *q, int ldq, int nq, float *out, int ldo) {
    for (int r = 0; r < nrows; r++) {
        const uint16_t *b = B + (size_t)r * dim;
        float acc[4][16] = {{0}}, t[4] = {0};
        int j = 0;
        for (; j + 16 <= dim; j += 16) {
            float bf[16];
            for (int l = 0; l < 16; l++) bf[l] = dn_f16_to_f32(b[j + l]);
            for (int i = 0; i < nq; i++)
                for (int l = 0; l < 16; l++) acc[i][l] += bf[l] * q[(size_t)i * ldq + j + l];
        }
        for (; j < dim; j++) {
            float bf = dn_f16_to_f32(b[j]);
            for (int i = 0; i < nq; i++) t[i] += bf * q[(size_t)i * ldq + j];
        }
        for (int i = 0; i < nq; i++) {
            float s = t[i];
            for (int l = 0; l < 16; l++) s += acc[i][l];
            out[(size_t)i * ldo + r] = s;
        }
    }
}

static dots_fn pick(const char **name) {
    dn_isa isa = dn_kernels_isa();
#if defined(__x86_64__) || defined(__i386__)
    if (isa >= DN_ISA_AVX512) { *name = "avx512"; return dn_knn_dots_avx512; }
    unsigned a, b, c, d; /* F16C: CPUID.1:ECX bit 29 (clang 14 has no __builtin_cpu_supports("f16c")) */
    if (isa >= DN_ISA_AVX2 && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C)) { *name = "avx2"; return dn_knn_dots_avx2; }
#else
    (void)isa;
#endif
    *name = "scalar";
    return dots_c;
}

const char *dn_ood_knn_isa(void) {
    const char *n;
    pick(&n);
    return n;
}

/* top[0..*cnt) sorted descending, at most k values: keeps the k largest seen. */
static inline void topk_push(float *top, int *cnt, int k, float x) {
    if (*cnt == k && !(x > top[k - 1])) return;
    int j = *cnt < k ? (*cnt)++ : k - 1;
    while (j > 0 && top[j - 1] < x) { top[j] = top[j - 1]; j--; }
    top[j] = x;
}

enum { CHUNK = 256, QB = 4 }; /* bank rows per chunk (256 x 512 x 2 B = 256 KB, stays in L2), queries per tile */

typedef struct {
    const uint16_t *bank;
    int nbank, dim, nq, k;
    const float *q;
    dots_fn fn;
    float *top; /* [nth][nq][k] */
    int *cnt;   /* [nth][nq] */
} knn_job;

static void knn_run(void *arg, int ith, int nth) {
    const knn_job *j = arg;
    long b, e;
    dn_split(j->nbank, ith, nth, &b, &e);
    float *top = j->top + (size_t)ith * j->nq * j->k;
    int *cnt = j->cnt + (size_t)ith * j->nq;
    float dots[QB * CHUNK];
    for (long r0 = b; r0 < e; r0 += CHUNK) {
        int nr = (int)(e - r0 < CHUNK ? e - r0 : CHUNK);
        for (int q0 = 0; q0 < j->nq; q0 += QB) {
            int nqb = j->nq - q0 < QB ? j->nq - q0 : QB;
            j->fn(j->bank + (size_t)r0 * j->dim, nr, j->dim, j->q + (size_t)q0 * j->dim, j->dim, nqb, dots, CHUNK);
            for (int i = 0; i < nqb; i++) {
                float *t = top + (size_t)(q0 + i) * j->k;
                int *c = cnt + q0 + i;
                for (int r = 0; r < nr; r++) topk_push(t, c, j->k, dots[i * CHUNK + r]);
            }
        }
    }
}

dn_status dn_ood_knn(const uint16_t *bank, int nbank, int dim, const float *q, int nq, int k, dn_pool *pool, float *out) {
    dn_status st = check_args(bank, nbank, dim, q, nq, k, out, "knn");
    if (st || !nq) return st;
    const char *name;
    /* split the bank across the pool only when there is enough work to pay for the hand-off */
    int nth = pool && (double)nbank * dim * nq >= 1e6 ? dn_pool_size(pool) : 1;
    knn_job j = {bank, nbank, dim, nq, k, q, pick(&name), NULL, NULL};
    j.top = dn_malloc((size_t)nth * nq * k * sizeof(float));
    j.cnt = dn_calloc((size_t)nth * nq, sizeof(int));
    if (!j.top || !j.cnt) { st = dn_fail(DN_ERR_NOMEM, "knn: out of memory"); goto done; }
    if (nth > 1) dn_pool_run(pool, knn_run, &j);
    else knn_run(&j, 0, 1);
    int kk = k < nbank ? k : nbank;
    for (int i = 0; i < nq; i++) {
        float *t = j.top + (size_t)i * k; /* thread 0's buffer collects the others */
        int *c = j.cnt + i;
        for (int th = 1; th < nth; th++) {
            const float *o = j.top + ((size_t)th * nq + i) * k;
            for (int r = 0; r < j.cnt[(size_t)th * nq + i]; r++) topk_push(t, c, k, o[r]);
        }
        out[i] = t[kk - 1];
    }
done:
    free(j.top);
    free(j.cnt);
    return st;
}
