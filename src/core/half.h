/* IEEE 754 binary16 ("fp16", safetensors dtype F16) <-> float32 in plain C.
 * dn_f16_to_f32 is exact for every half (subnormals, infinities; a NaN keeps
 * its payload and comes out quiet); dn_f32_to_f16 rounds to nearest, ties to even,
 * overflows to infinity at 65520 and keeps NaN a NaN, the same as the x86
 * F16C instruction vcvtps2ph with rounding mode 0 (tests/test_ood.c checks
 * both directions against it). */
#ifndef DN_CORE_HALF_H
#define DN_CORE_HALF_H
#include <stdint.h>
#include <string.h>

static inline float dn_f16_to_f32(uint16_t h) {
    uint32_t s = (uint32_t)(h & 0x8000u) << 16, em = h & 0x7fffu, u;
    float f;
    if (em < 0x400u) { /* zero, subnormal em * 2^-24: exact in float */
        f = (float)em * 0x1p-24f;
        memcpy(&u, &f, 4);
    } else if (em < 0x7c00u) {
        u = (em << 13) + 0x38000000u; /* normal: rebias the exponent 15 -> 127 */
    } else {
        u = ((em << 13) + 0x70000000u) | (em > 0x7c00u ? 0x400000u : 0); /* inf; NaN keeps its payload, quiet */
    }
    u |= s;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t dn_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t s = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(s | 0x7e00u | ((a >> 13) & 0x3ffu)); /* NaN stays NaN (quiet) */
    if (a >= 0x477ff000u) return (uint16_t)(s | 0x7c00u);                        /* >= 65520 (and inf): inf */
    if (a >= 0x38800000u) {                                                      /* normal half: >= 2^-14 */
        uint32_t r = a - 0x38000000u;                                            /* rebias the exponent 127 -> 15 */
        r += 0xfffu + ((r >> 13) & 1u);                                          /* round to nearest even */
        return (uint16_t)(s | (r >> 13));
    }
    if (a < 0x33000000u) return (uint16_t)s; /* below 2^-25: zero */
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u, sh = 126 - e; /* subnormal: m * 2^(e-150) / 2^-24 */
    uint32_t q = m >> sh, rem = m & ((1u << sh) - 1), half = 1u << (sh - 1);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return (uint16_t)(s | q);
}
#endif
