/* Packed GEMM driver (Goto/BLIS loop order) shared by dn_sgemm and the fp32
 * direct convolution. Work is split into items = (column chunk of NC) x
 * (range of MR-row panels); each worker takes a contiguous range of items and
 * packs its own B block, so each C element is produced by exactly one thread
 * in a fixed K order: results do not depend on the number of threads. */
#include "kernels/kern_int.h"
#include <string.h>

const dn_ukr *dn_ukr_for(dn_isa isa) {
    if (isa == DN_ISA_AVX512) return &dn_ukr_avx512;
    if (isa == DN_ISA_AVX2) return &dn_ukr_avx2;
    return NULL;
}

size_t dn_gemm_packed_a_floats(const dn_ukr *u, int M, int K) {
    return (size_t)((M + u->mr - 1) / u->mr) * u->mr * (size_t)K;
}

void dn_gemm_pack_a(const dn_ukr *u, int M, int K, const float *A, int lda, int transA, float alpha, float *dst) {
    const int MR = u->mr;
    int np = (M + MR - 1) / MR;
    for (int mp = 0; mp < np; mp++) {
        float *d = dst + (size_t)mp * K * MR;
        for (int k = 0; k < K; k++)
            for (int i = 0; i < MR; i++) {
                int r = mp * MR + i;
                float v = 0.0f;
                if (r < M) v = transA ? A[(size_t)k * lda + r] : A[(size_t)r * lda + k];
                d[(size_t)k * MR + i] = alpha * v;
            }
    }
}

size_t dn_gemm_pack_a_bf16(const dn_ukr *u, int M, int K, const float *A, int lda, uint16_t *dst) {
    const int MR = u->mr, K2 = (K + 1) & ~1, np = (M + MR - 1) / MR;
    if (dst)
        for (int mp = 0; mp < np; mp++)
            for (int k = 0; k < K2; k++)
                for (int i = 0; i < MR; i++) {
                    int r = mp * MR + i;
                    float v = r < M && k < K ? A[(size_t)r * lda + k] : 0.0f;
                    dst[(((size_t)mp * K2 + (k & ~1)) * MR) + i * 2 + (k & 1)] = dn_f32_to_bf16(v);
                }
    return (size_t)np * K2 * MR;
}

/* fp32 packed B block (kc rows, NR panels) -> bf16 pairs [jp][kc2/2][NR][2]. */
static void b_to_bf16(const float *src, int kc, int nc, int NR, uint16_t *dst) {
    const int kc2 = (kc + 1) & ~1, npan = (nc + NR - 1) / NR;
    for (int jp = 0; jp < npan; jp++) {
        const float *s = src + (size_t)jp * kc * NR;
        uint16_t *d = dst + (size_t)jp * kc2 * NR;
        for (int k = 0; k < kc2; k += 2) {
            const float *r0 = s + (size_t)k * NR, *r1 = k + 1 < kc ? r0 + NR : NULL;
            uint16_t *dd = d + (size_t)k * NR;
            for (int j = 0; j < NR; j++) {
                dd[2 * j] = dn_f32_to_bf16(r0[j]);
                dd[2 * j + 1] = r1 ? dn_f32_to_bf16(r1[j]) : 0;
            }
        }
    }
}

size_t dn_gemm_slab_bytes(const dn_ukr *u) {
    size_t f = (size_t)DN_GEMM_KC * DN_GEMM_NC + 2 * DN_UKR_MAX_MR * DN_UKR_MAX_NR + (size_t)DN_GEMM_KC * DN_UKR_MAX_MR +
               ((size_t)DN_GEMM_KC + 2) * DN_GEMM_NC / 2 + 64; /* + bf16 copy of the B block */
    return (f * sizeof(float) + 63) & ~(size_t)63;
}

int dn_gemm_slabs(void) {
    int n = dn_num_cpus();
    return n < 1 ? 1 : n > 64 ? 64 : n;
}


typedef struct { const dn_gemm_plan *p; char *scratch; size_t slab; int nslab; } run_arg;

static inline void ukr(const dn_gemm_plan *p, int kc, const float *a, long a_rs, const float *b, float *c, long ldc,
                       int mr, int nr, int accum, const float *bias, const float *res, long ldr, int relu) {
    if (a_rs) p->u->fn_strided(kc, a, a_rs, p->a_cs, b, c, ldc, mr, nr, accum, bias, res, ldr, relu);
    else p->u->fn(kc, a, b, c, ldc, mr, nr, accum, bias, res, ldr, relu);
}

/* a_rs == 0: a is a packed panel; else A in place (row stride a_rs, p->a_cs). */
static void tile(const dn_gemm_plan *p, int kc, const float *a, long a_rs, const float *b, int i0, int mr, int j,
                 int nr, int accum, int last, float *tmp) {
    const dn_ukr *u = p->u;
    const float *bias = last && p->bias ? p->bias + i0 : NULL;
    int relu = last && p->relu;
    long P = p->P;
    long img = j / P, pp = j % P;
    if ((j + nr - 1) / P == img) {
        float *c = p->C + img * p->cimg + (long)i0 * p->ldc + pp;
        const float *res = last && p->R ? p->R + img * p->cimg + (long)i0 * p->ldc + pp : NULL;
        ukr(p, kc, a, a_rs, b, c, p->ldc, mr, nr, accum, bias, res, p->ldc, relu);
        return;
    }
    /* tile straddles an image boundary: gather, compute, scatter, one
     * contiguous segment (same image) at a time */
    const int NR = u->nr;
    float *ct = tmp, *rt = tmp + DN_UKR_MAX_MR * DN_UKR_MAX_NR;
    int use_res = last && p->R;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) ukr(p, kc, a, a_rs, b, ct, NR, mr, nr, accum, bias, use_res ? rt : NULL, NR, relu);
        else if (!accum && !use_res) continue;
        for (int q = 0; q < nr;) {
            long jq = j + q, iq = jq / P, pq = jq % P;
            int seg = (int)(P - pq < nr - q ? P - pq : nr - q);
            for (int i = 0; i < mr; i++) {
                long off = iq * p->cimg + (long)(i0 + i) * p->ldc + pq;
                if (pass == 1) {
                    memcpy(p->C + off, ct + i * NR + q, (size_t)seg * sizeof(float));
                } else {
                    if (accum) memcpy(ct + i * NR + q, p->C + off, (size_t)seg * sizeof(float));
                    if (use_res) memcpy(rt + i * NR + q, p->R + off, (size_t)seg * sizeof(float));
                }
            }
            q += seg;
        }
    }
}

static void run_job(void *va, int ith, int nth) {
    run_arg *ra = va;
    const dn_gemm_plan *p = ra->p;
    if (nth > ra->nslab) nth = ra->nslab;
    if (ith >= nth) return;
    const dn_ukr *u = p->u;
    const int MR = u->mr, NR = u->nr;
    const int npanels = (p->M + MR - 1) / MR;
    const int nchunks = (p->N + DN_GEMM_NC - 1) / DN_GEMM_NC;
    /* enough items for load balance: >= 4 per thread when possible */
    int msplit = 1;
    if (nchunks < 4 * nth) {
        msplit = (4 * nth + nchunks - 1) / nchunks;
        if (msplit > npanels) msplit = npanels;
    }
    const int mchunk = (npanels + msplit - 1) / msplit;
    msplit = (npanels + mchunk - 1) / mchunk;
    long b, e;
    dn_split((long)nchunks * msplit, ith, nth, &b, &e);
    if (b >= e) return;
    float *bbuf = (float *)(ra->scratch + (size_t)ith * ra->slab);
    float *tmp = bbuf + (size_t)DN_GEMM_KC * DN_GEMM_NC;
    float *apan = tmp + 2 * DN_UKR_MAX_MR * DN_UKR_MAX_NR; /* packed edge panel of an in-place A */
    uint16_t *b16 = (uint16_t *)(apan + (size_t)DN_GEMM_KC * DN_UKR_MAX_MR);
    /* items are (column chunk, panel range) in chunk-major order: pack each B
     * block once and run all of this worker's panel ranges of that chunk on it */
    for (int jc = (int)(b / msplit); jc <= (int)((e - 1) / msplit); jc++) {
        int mlo = jc == b / msplit ? (int)(b % msplit) : 0;
        int mhi = jc == (e - 1) / msplit ? (int)((e - 1) % msplit) + 1 : msplit;
        int j0 = jc * DN_GEMM_NC, nc = p->N - j0 < DN_GEMM_NC ? p->N - j0 : DN_GEMM_NC;
        int mp0 = mlo * mchunk, mp1 = mhi * mchunk < npanels ? mhi * mchunk : npanels;
        for (int pc = 0; pc < p->K; pc += DN_GEMM_KC) {
            int kc = p->K - pc < DN_GEMM_KC ? p->K - pc : DN_GEMM_KC;
            int last = pc + kc == p->K, accum = pc > 0 || p->accum;
            p->u->pack_b(p, pc, kc, j0, nc, bbuf);
            const float *bblk = bbuf;
            int kcu = kc; /* k count the micro-kernel sees */
            if (p->bf16) {
                b_to_bf16(bbuf, kc, nc, NR, b16);
                bblk = (const float *)(const void *)b16;
                kcu = (kc + 1) & ~1;
            }
            for (int mp = mp0; mp < mp1; mp++) {
                int i0 = mp * MR, mr = p->M - i0 < MR ? p->M - i0 : MR;
                const float *a;
                long a_rs = 0;
                if (p->bf16) {
                    const uint16_t *a16 = (const uint16_t *)(const void *)p->Ap;
                    a = (const float *)(const void *)(a16 + ((size_t)mp * ((p->K + 1) & ~1) + pc) * MR);
                } else if (p->Ap) {
                    a = p->Ap + ((size_t)mp * p->K + pc) * MR;
                } else if (mr == MR) {
                    a = p->A + (size_t)i0 * p->a_rs + (size_t)pc * p->a_cs;
                    a_rs = p->a_rs;
                } else { /* rows past M must not be read: pack this edge panel */
                    for (int k = 0; k < kc; k++)
                        for (int i = 0; i < MR; i++)
                            apan[k * MR + i] = i < mr ? p->A[(size_t)(i0 + i) * p->a_rs + (size_t)(pc + k) * p->a_cs] : 0.0f;
                    a = apan;
                }
                for (int jp = 0; jp * NR < nc; jp++) {
                    int nr = nc - jp * NR < NR ? nc - jp * NR : NR;
                    const float *bp = p->bf16 ? (const float *)(const void *)(b16 + (size_t)jp * kcu * NR)
                                              : bblk + (size_t)jp * kc * NR;
                    tile(p, kcu, a, a_rs, bp, i0, mr, j0 + jp * NR, nr, accum, last, tmp);
                }
            }
        }
    }
}

void dn_gemm_run(const dn_gemm_plan *p, dn_pool *pool, void *scratch) {
    if (p->M <= 0 || p->N <= 0) return;
    run_arg ra = {p, scratch, dn_gemm_slab_bytes(p->u), dn_gemm_slabs()};
    if (p->K <= 0) { /* no products: C = accum ? C : 0, then epilogue */
        for (long j = 0; j < p->N; j++) {
            long img = j / p->P, pp = j % p->P;
            for (int i = 0; i < p->M; i++) {
                long off = img * p->cimg + (long)i * p->ldc + pp;
                float v = p->accum ? p->C[off] : 0.0f;
                if (p->bias) v += p->bias[i];
                if (p->R) v += p->R[off];
                if (p->relu && v < 0.0f) v = 0.0f;
                p->C[off] = v;
            }
        }
        return;
    }
    dn_pool_run(pool, run_job, &ra);
}
