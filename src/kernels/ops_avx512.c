/* ops_avx512.c — AVX-512 activation quantization, and the attention of the avx512vnni table
 * (the variants of kn_quantize_act and kn_attn_ref / kn_attn_ref_f16). */
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/kernels_impl.h"
#include "quant/quant.h"

/* The same bits as kn_quantize_act (plus -8 * the block sums of q when a->q4off is set): the
 * max of |x| is exact, d and 1/d are the same IEEE operations, and vcvtps2dq rounds to nearest
 * even as the reference's 2^23 trick does. */
void kn_quantize_avx512(kn_act *a, const float *x, int n_tok, int n) {
    int nb = n / KN_QBLOCK, sb = a->stride / KN_QBLOCK;
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int t = 0; t < n_tok; t++) {
        const float *xr = x + (size_t)t * n;
        int8_t *q = a->q + (size_t)t * a->stride;
        for (int b = 0; b < nb; b++) {
            __m512 v0 = _mm512_loadu_ps(xr + b * KN_QBLOCK);
            __m512 v1 = _mm512_loadu_ps(xr + b * KN_QBLOCK + 16);
            __m512 a0 = _mm512_andnot_ps(sign, v0), a1 = _mm512_andnot_ps(sign, v1);
            const __m512 big = _mm512_set1_ps(FLT_MAX);
            if (_mm512_cmp_ps_mask(a0, big, _CMP_NLE_UQ) |
                _mm512_cmp_ps_mask(a1, big, _CMP_NLE_UQ)) {
                /* NaN or Inf: as kn_quantize_act, q = 0 and a NaN scale */
                memset(q + b * KN_QBLOCK, 0, KN_QBLOCK);
                a->d[(size_t)t * sb + b] = a->s[(size_t)t * sb + b] = NAN;
                if (a->q4off) a->q4off[(size_t)t * sb + b] = 0;
                continue;
            }
            float amax = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
            float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
            __m512 vid = _mm512_set1_ps(id);
            __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vid));
            __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vid));
            _mm_storeu_si128((__m128i *)(void *)(q + b * KN_QBLOCK), _mm512_cvtepi32_epi8(q0));
            _mm_storeu_si128((__m128i *)(void *)(q + b * KN_QBLOCK + 16),
                             _mm512_cvtepi32_epi8(q1));
            int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
            a->d[(size_t)t * sb + b] = kn_fp16_to_fp32(kn_fp32_to_fp16(d));
            a->s[(size_t)t * sb + b] = kn_fp16_to_fp32(kn_fp32_to_fp16(d * (float)sum));
            if (a->q4off) a->q4off[(size_t)t * sb + b] = -8 * sum;
        }
    }
}

/* Attention: the group kernel of attn_x86.h on 256-bit registers (32 of them here). At long
 * contexts the F16 cache's reads, not the width of the FMAs, set its pace. */
#define KN_ATTN_NAME(sfx) kn_attn_avx512##sfx
#define KA_REGS32 1
#define KA_DOT_U8S8(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (u), (s))
#include "kernels/attn_x86.h"
