/* SGEMM dispatch and ISA selection. */
#include "kernels/kern_int.h"
#include <pthread.h>
#include <stdlib.h>

static dn_isa g_force = DN_ISA_AUTO;

dn_isa dn_kernels_force_isa(dn_isa isa) {
    dn_isa old = g_force;
    g_force = isa;
    return old;
}

dn_isa dn_kernels_isa(void) {
    unsigned f = dn_cpu_features();
    dn_isa best = DN_ISA_SCALAR;
    if ((f & DN_CPU_AVX2) && (f & DN_CPU_FMA)) best = DN_ISA_AVX2;
    if ((f & DN_CPU_AVX512F) && (f & DN_CPU_AVX512BW) && (f & DN_CPU_AVX512VL) && (f & DN_CPU_FMA))
        best = DN_ISA_AVX512;
    if (g_force != DN_ISA_AUTO && g_force < best) best = g_force;
    return best;
}

const char *dn_isa_name(dn_isa isa) {
    switch (isa) {
    case DN_ISA_SCALAR: return "scalar";
    case DN_ISA_AVX2: return "avx2";
    case DN_ISA_AVX512: return "avx512";
    default: return "auto";
    }
}

/* Per-calling-thread scratch, grown on demand and kept, so repeated calls (the
 * trainer calls dn_sgemm per image and layer) do not allocate in the steady
 * state. Released when the thread exits (pthread key destructor). */
typedef struct { char *p; size_t cap; } tl_scratch;
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;
static void tl_free(void *v) {
    tl_scratch *t = v;
    if (t) { dn_free_aligned(t->p); free(t); }
}
static void tl_init(void) { pthread_key_create(&tl_key, tl_free); }
static char *tl_get(size_t need) {
    pthread_once(&tl_once, tl_init);
    tl_scratch *t = pthread_getspecific(tl_key);
    if (!t) {
        if (!(t = dn_calloc(1, sizeof *t))) return NULL;
        if (pthread_setspecific(tl_key, t)) { free(t); dn_fail(DN_ERR_NOMEM, "sgemm: thread scratch"); return NULL; }
    }
    if (t->cap < need) {
        dn_free_aligned(t->p);
        t->cap = 0;
        if (!(t->p = dn_alloc_aligned(need))) return NULL;
        t->cap = need;
    }
    return t->p;
}

void dn_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc, dn_pool *pool) {
    if (M <= 0 || N <= 0) return;
    const dn_ukr *u = dn_ukr_for(dn_kernels_isa());
    if (!u || K <= 0) {
        dn_sgemm_ref(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* alpha == 1: the micro-kernel reads A in place (no packing pass) */
    size_t na = alpha == 1.0f ? 0 : dn_gemm_packed_a_floats(u, M, K);
    size_t slab = dn_gemm_slab_bytes(u);
    size_t abytes = (na * sizeof(float) + 63) & ~(size_t)63;
    char *mem = tl_get(abytes + slab * (size_t)dn_gemm_slabs());
    if (!mem) {
        dn_fail_prefix(DN_ERR_NOMEM, "sgemm %dx%dx%d", M, N, K);
        return;
    }
    float *Ap = na ? (float *)mem : NULL;
    if (Ap) dn_gemm_pack_a(u, M, K, A, lda, transA, alpha, Ap);
    if (beta != 0.0f && beta != 1.0f)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] *= beta;
    dn_gemm_plan p = {0};
    p.u = u; p.M = M; p.N = N; p.K = K; p.Ap = Ap;
    p.A = A; p.a_rs = transA ? 1 : lda; p.a_cs = transA ? lda : 1;
    p.B = B; p.ldb = ldb; p.transB = transB;
    p.C = C; p.ldc = ldc; p.P = N; p.cimg = 0;
    p.accum = beta != 0.0f;
    dn_gemm_run(&p, pool, mem + abytes);
}
