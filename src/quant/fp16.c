/* fp16.c — IEEE binary16 and bfloat16 <-> binary32, in integer arithmetic.
 *
 * Plain bit manipulation rather than F16C or _Float16: the result must not depend on the compiler
 * or the CPU, because gguf-py (numpy) is the oracle the tests hold these to, bit for bit,
 * including NaN payloads and subnormals. */
#include <string.h>

#include "quant.h"

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float kn_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) /* Inf, or NaN with its payload kept (numpy keeps it too) */
        return f32_from_bits(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
        /* Zero or subnormal: mant * 2^-24 is exact in binary32. */
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    return f32_from_bits(sign | ((exp + (127 - 15)) << 23) | (mant << 13));
}

uint16_t kn_fp32_to_fp16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;

    if (ax > 0x7f800000u) {
        /* NaN: keep the top of the payload as numpy does, but never let it collapse into Inf. */
        uint16_t r = (uint16_t)(0x7c00u | ((ax & 0x7fffffu) >> 13));
        if (r == 0x7c00u) r++;
        return (uint16_t)(sign | r);
    }
    /* 65520 is halfway between 65504 (the largest half) and 65536; the tie goes to the even
     * neighbour, which is past the range, so everything from there up is Inf. */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);

    if (ax >= 0x38800000u) {
        /* Normal half: rebias the exponent, drop 13 mantissa bits, round half to even. A carry
         * out of the mantissa bumps the exponent, which is the right answer. */
        uint32_t base = (ax >> 13) - ((127u - 15u) << 10);
        uint32_t rem = ax & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (base & 1u))) base++;
        return (uint16_t)(sign | base);
    }
    /* At or below 2^-25 (half the smallest subnormal) everything rounds to zero; the tie itself
     * goes to the even neighbour, zero. */
    if (ax <= 0x33000000u) return sign;

    /* Subnormal half: value / 2^-24 = mant24 * 2^(e - 126), a right shift by 126 - e (14..24). */
    uint32_t e = ax >> 23;
    uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e;
    uint32_t base = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (base & 1u))) base++;
    return (uint16_t)(sign | base);
}

float kn_bf16_to_fp32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

uint16_t kn_fp32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    /* NaN: truncating could clear every payload bit left and make Inf; force the quiet bit
     * (ggml_compute_fp32_to_bf16 and gguf-py do the same). */
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    /* Round half to even on the 16 dropped bits. No overflow: the largest non-NaN input,
     * 0xff7fffff, stays below 2^32 after adding at most 0x8000. */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}
