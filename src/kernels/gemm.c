/* SGEMM dispatch and ISA selection. */
#include "kernels/kernels.h"

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

void dn_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc, dn_pool *pool) {
    dn_sgemm_ref(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
