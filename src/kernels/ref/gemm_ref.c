/* Scalar reference SGEMM, row-major, BLAS semantics (see kernels.h). */
#include "kernels/kernels.h"

void dn_sgemm_ref(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++) {
                float a = transA ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b = transB ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                acc += a * b;
            }
            float *c = &C[(size_t)i * ldc + j];
            /* beta == 0: C is not read (may hold NaN), as in BLAS. */
            *c = beta == 0.0f ? alpha * acc : alpha * acc + beta * *c;
        }
}
