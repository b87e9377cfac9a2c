/* f16_x86.h — IEEE halves to floats with F16C (vcvtph2ps), for the x86 tables' inner loops:
 * block scales, F16 weights, the F16 KV cache. Included by the files compiled with -mf16c
 * (x86_body.h, x86_x8.h, attn_x86.h); everything else converts with quant/fp16.c.
 *
 * Every finite half and both infinities widen to exactly the float kn_fp16_to_fp32 gives
 * (widening is exact, so there is one right answer); a NaN stays a NaN. tests/c/test_kernels.c
 * (kernels_f16_weights_widen_exactly) checks all 65536 patterns through each table. */
#ifndef KN_F16_X86_H
#define KN_F16_X86_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define KN_F16C_AI __attribute__((always_inline)) static inline

/* One half at p, any alignment. */
KN_F16C_AI float kn_f16c_at(const void *p) {
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return _cvtsh_ss(h);
}

/* Eight consecutive halves at p, any alignment. */
KN_F16C_AI __m256 kn_f16c_x8(const void *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

#endif
