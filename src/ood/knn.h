/* KNN scoring kernel of the unknown-input detector (docs/ood.md, "Kernel").
 *
 * The bank is nbank rows of dim IEEE fp16 values (uint16_t, core/half.h), the
 * queries nq rows of dim floats. For every query i
 *     out[i] = the k-th largest of  q_i . float(bank_r)  over r = 0..nbank-1
 * (k-th largest counting repeated values: the k-th element of the dots sorted
 * in descending order). k > nbank selects the nbank-th, the smallest dot;
 * k must be in 1..DN_KNN_KMAX, nbank >= 1, dim >= 1, nq >= 0.
 *
 * dn_ood_knn_ref is the specification: plain C, fp16 converted exactly to
 * float, each dot accumulated in double, the selection by a full sort.
 * dn_ood_knn is the fast path: the bank is streamed in chunks that stay in the
 * cache while every query of the batch is scored against them (4 queries x 4
 * bank rows per register tile), so each bank row is read from memory once per
 * batch; AVX-512 (vcvtph2ps + FMA, masked tail) or AVX2+F16C+FMA kernels chosen
 * at run time (dn_kernels_isa: DN_FORCE_REF=1 / DN_MAX_ISA=avx2 apply), a plain
 * C kernel otherwise; dots are accumulated in float. The k-th largest is kept
 * per query in a sorted buffer of k values (O(k) only when a candidate beats
 * the current k-th, no sort). With a pool the bank is split across its threads
 * (each keeps its own top-k buffers, merged at the end): the result is the same
 * for every thread count. out may not alias q. */
#ifndef DN_OOD_KNN_H
#define DN_OOD_KNN_H
#include "core/core.h"
#include <stdint.h>

#define DN_KNN_KMAX 64

dn_status dn_ood_knn_ref(const uint16_t *bank, int nbank, int dim, const float *q, int nq, int k, float *out);
dn_status dn_ood_knn(const uint16_t *bank, int nbank, int dim, const float *q, int nq, int k, dn_pool *pool, float *out);

/* Which kernel dn_ood_knn uses on this machine: "avx512", "avx2" or "scalar". */
const char *dn_ood_knn_isa(void);

/* The ISA tiles (knn_avx512.c, knn_avx2.c): out[qi * ldo + r] = q_qi . float(B_r)
 * for qi < nq (1..4, queries ldq floats apart) and r < nrows (rows dim apart). */
void dn_knn_dots_avx512(const uint16_t *B, int nrows, int dim, const float *q, int ldq, int nq, float *out, int ldo);
void dn_knn_dots_avx2(const uint16_t *B, int nrows, int dim, const float *q, int ldq, int nq, float *out, int ldo);
#endif
