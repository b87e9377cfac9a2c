/* int4.c — int4_sym: symmetric group-wise int4 with one F16 scale per group (see quant.h).
 *
 * Values are quantized against the scale as stored (rounded to F16), not the exact max/7, so the
 * rounding decisions are the ones the dequantizer will see. Rounding is half away from zero
 * (roundf), as in ggml's reference quantizers. */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "quant/blocks.h"

/* Largest finite F16. A group whose max/7 overflows F16 gets this scale instead of Inf, so it
 * saturates at +-7 * 65504 rather than turning into Inf/NaN on the way back. */
#define F16_MAX_BITS 0x7bffu

void kn_quantize_int4_sym(const float *src, int64_t n, int group, uint8_t *packed,
                          uint16_t *scales) {
    assert(group > 0 && group % 2 == 0 && n >= 0 && n % group == 0);
    for (int64_t g = 0; g < n / group; g++) {
        const float *x = src + g * group;
        float amax = 0.0f;
        for (int j = 0; j < group; j++) {
            float a = fabsf(x[j]);
            if (a > amax) amax = a;
        }
        uint16_t hd = kn_fp32_to_fp16(amax / 7.0f);
        if ((hd & 0x7fffu) >= 0x7c00u) hd = F16_MAX_BITS;
        scales[g] = hd;
        float d = kn_fp16_to_fp32(hd);
        for (int j = 0; j < group; j++) {
            int q = 0;
            if (d > 0.0f) {
                float r = roundf(x[j] / d);
                if (r != r) q = 0; /* NaN input: store 0 rather than convert NaN to int */
                else q = r < -8.0f ? -8 : r > 7.0f ? 7 : (int)r;
            }
            kn_int4_put(packed, g * group + j, q); /* even element low: OpenVINO's i4 packing */
        }
    }
}

void kn_dequantize_int4_sym(const uint8_t *packed, const uint16_t *scales, int64_t n, int group,
                            float *dst) {
    assert(group > 0 && group % 2 == 0 && n >= 0 && n % group == 0);
    for (int64_t i = 0; i < n; i++) {
        int q = (kn_int4_get(packed, i) ^ 8) - 8; /* sign-extend the two's-complement nibble */
        float d = kn_fp16_to_fp32(scales[i / group]);
        dst[i] = d * (float)q;
    }
}

void kn_quantize_int4_sym_q4_0(const float *src, int64_t n, int group, uint8_t *dst,
                               uint8_t *packed, uint16_t *scales) {
    assert(group % KN_QK == 0);
    kn_quantize_int4_sym(src, n, group, packed, scales);
    for (int64_t b = 0; b < n / KN_QK; b++) {
        uint8_t *blk = dst + b * (int64_t)sizeof(kn_block_q4_0);
        memcpy(KN_AT(blk, kn_block_q4_0, d), &scales[b * KN_QK / group], sizeof(kn_f16));
        uint8_t *qs = KN_AT(blk, kn_block_q4_0, qs);
        for (int j = 0; j < KN_QK / 2; j++) {
            int64_t e0 = b * KN_QK + j, e1 = e0 + KN_QK / 2;
            /* two's complement -> biased by 8: flipping the sign bit adds 8 mod 16 */
            int q0 = kn_int4_get(packed, e0) ^ 8, q1 = kn_int4_get(packed, e1) ^ 8;
            qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}
