/* ops_avx2.c — AVX2 activation quantization (both forms) and attention (F32 and F16 caches):
 * the avx2 and avxvnni tables' variants of kn_quantize_act (+ q4off), kn_quantize_act_k and
 * kn_attn_ref / kn_attn_ref_f16. The avx512vnni table takes the Q8_K quantizer from here.
 *
 * The quantizers give the references' bits: the maxima are exact, every float operation is the
 * same IEEE operation, vcvtps2dq rounds to nearest even as the Q8_0 reference's 2^23 trick
 * does, and the Q8_K one uses ggml's own bit trick; a block with a NaN or an infinity becomes
 * q = 0 with a NaN scale, as in the references. */
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/kernels_impl.h"
#include "quant/quant.h"

#define AI __attribute__((always_inline)) static inline

AI float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

AI int hsum8_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* 4 x 8 int32 -> 32 int8 in element order, saturating (the references clamp the same way). */
AI __m256i pack32(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i abcd = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* max(|x|, m), ignoring a NaN x as the references' `if (|x| > max)` does (vmaxps returns its
 * second operand when either is NaN). */
AI __m256 not_finite(__m256 x) {
    return _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), x), _mm256_set1_ps(FLT_MAX),
                         _CMP_NLE_UQ);
}

AI __m256 amax_step(__m256 x, __m256 m) {
    return _mm256_max_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), x), m);
}

void kn_quantize_avx2(kn_act *a, const float *x, int n_tok, int n) {
    int nb = n / KN_QBLOCK, sb = a->stride / KN_QBLOCK;
    for (int t = 0; t < n_tok; t++) {
        const float *xr = x + (size_t)t * n;
        int8_t *q = a->q + (size_t)t * a->stride;
        for (int b = 0; b < nb; b++) {
            const float *xb = xr + b * KN_QBLOCK;
            __m256 v[4], m = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
            for (int i = 0; i < 4; i++) {
                v[i] = _mm256_loadu_ps(xb + 8 * i);
                bad = _mm256_or_ps(bad, not_finite(v[i]));
                m = amax_step(v[i], m);
            }
            size_t at = (size_t)t * sb + b;
            if (_mm256_movemask_ps(bad)) {
                /* NaN or Inf: as kn_quantize_act, q = 0 and a NaN scale */
                memset(q + b * KN_QBLOCK, 0, KN_QBLOCK);
                a->d[at] = a->s[at] = NAN;
                if (a->q4off) a->q4off[at] = 0;
                continue;
            }
            float amax = hmax8(m);
            float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
            __m256 vid = _mm256_set1_ps(id);
            __m256i qi[4];
            for (int i = 0; i < 4; i++) qi[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], vid));
            _mm256_storeu_si256((__m256i *)(void *)(q + b * KN_QBLOCK), pack32(qi[0], qi[1], qi[2], qi[3]));
            int sum = hsum8_i32(_mm256_add_epi32(_mm256_add_epi32(qi[0], qi[1]),
                                                 _mm256_add_epi32(qi[2], qi[3])));
            a->d[at] = kn_fp16_to_fp32(kn_fp32_to_fp16(d));
            a->s[at] = kn_fp16_to_fp32(kn_fp32_to_fp16(d * (float)sum));
            if (a->q4off) a->q4off[at] = -8 * sum;
        }
    }
}

/* ggml's nearest_int on 8 lanes: the integer in the low mantissa bits of v + 1.5 * 2^23. */
AI __m256i nearest_int8(__m256 v) {
    __m256i i = _mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(12582912.0f)));
    return _mm256_sub_epi32(_mm256_and_si256(i, _mm256_set1_epi32(0x007fffff)),
                            _mm256_set1_epi32(0x00400000));
}

void kn_quantize_k_avx2(kn_act *a, const float *x, int n_tok, int n) {
    int nb = n / KN_KBLOCK;
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (int t = 0; t < n_tok; t++) {
        const float *xr = x + (size_t)t * n;
        int8_t *q = a->qk + (size_t)t * a->stride;
        float *dk = a->dk + (size_t)t * (a->stride / KN_KBLOCK);
        int16_t *bs = a->bsk + (size_t)t * (a->stride / 16);
        int16_t *bs32 = a->bsk32 + (size_t)t * (a->stride / 32);
        for (int b = 0; b < nb; b++) {
            const float *xb = xr + b * KN_KBLOCK;
            int8_t *qb = q + b * KN_KBLOCK;
            __m256 m = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
            for (int i = 0; i < KN_KBLOCK; i += 8) {
                __m256 x8 = _mm256_loadu_ps(xb + i);
                bad = _mm256_or_ps(bad, not_finite(x8));
                m = amax_step(x8, m);
            }
            float amax = hmax8(m);
            if (_mm256_movemask_ps(bad) || amax == 0.0f) {
                /* all zero: d = 0; NaN or Inf: as the reference, q = 0 and a NaN scale */
                memset(qb, 0, KN_KBLOCK);
                dk[b] = _mm256_movemask_ps(bad) ? NAN : 0.0f;
                memset(bs + b * 16, 0, 16 * sizeof *bs);
                memset(bs32 + b * 8, 0, 8 * sizeof *bs32);
                continue;
            }
            /* the first element of that magnitude carries the sign */
            float max = 0.0f;
            __m256 va = _mm256_set1_ps(amax);
            for (int i = 0; i < KN_KBLOCK; i += 8) {
                __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_loadu_ps(xb + i));
                int mask = _mm256_movemask_ps(_mm256_cmp_ps(ax, va, _CMP_EQ_OQ));
                if (mask) {
                    max = xb[i + __builtin_ctz((unsigned)mask)];
                    break;
                }
            }
            float iscale = -127.0f / max;
            __m256 vis = _mm256_set1_ps(iscale);
            for (int j = 0; j < KN_KBLOCK / 32; j++) {
                __m256i qi[4];
                for (int i = 0; i < 4; i++)
                    qi[i] = nearest_int8(_mm256_mul_ps(vis, _mm256_loadu_ps(xb + 32 * j + 8 * i)));
                __m256i q8 = pack32(qi[0], qi[1], qi[2], qi[3]);
                _mm256_storeu_si256((__m256i *)(void *)(qb + 32 * j), q8);
                /* sums of the stored (clamped) bytes: per 4, then per 16 in each 128-bit half */
                __m256i s4 = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, q8), ones16);
                __m256i s16 = _mm256_hadd_epi32(s4, s4);
                s16 = _mm256_hadd_epi32(s16, s16);
                int lo = _mm256_cvtsi256_si32(s16);
                int hi = _mm_cvtsi128_si32(_mm256_extracti128_si256(s16, 1));
                bs[b * 16 + 2 * j] = (int16_t)lo;
                bs[b * 16 + 2 * j + 1] = (int16_t)hi;
                bs32[b * 8 + j] = (int16_t)(lo + hi);
            }
            dk[b] = 1.0f / iscale;
        }
    }
}

/* ---- SwiGLU ---- */

/* e^x for any x: the attention's polynomial (attn_x86.h) with the argument capped where 2^n
 * stays representable: 0 below -87.3, +inf past 88.7. */
AI __m256 exp_any8(__m256 x) {
    x = _mm256_min_ps(x, _mm256_set1_ps(88.8f));
    __m256 live = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_GE_OQ);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* n in [-126, 128]; 128 makes the exponent field all ones: +inf, the right overflow */
    __m256i e = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_max_ps(n, _mm256_set1_ps(-126.0f))),
                         _mm256_set1_epi32(127)),
        23);
    return _mm256_and_ps(live, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/* g = g / (1 + e^-g) * u, 8 at a time (the tail through the reference). */
void kn_swiglu_avx2(float *g, const float *u, int n) {
    int i = 0;
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(g + i);
        __m256 e = exp_any8(_mm256_xor_ps(x, sign));
        __m256 silu = _mm256_div_ps(x, _mm256_add_ps(one, e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
    }
    if (i < n) kn_swiglu(g + i, u + i, n - i);
}

/* vcvtps2ph with round-to-nearest-even is IEEE's conversion, which kn_fp32_to_fp16 spells out
 * (overflow to Inf, subnormals, ties to even): the same bits for every non-NaN input. */
void kn_to_f16_avx2(uint16_t *h, const float *x, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(void *)(h + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    if (i < n) kn_to_f16(h + i, x + i, n - i);
}

/* ---- attention ---- */

#define KN_ATTN_NAME(sfx) kn_attn_avx2##sfx
#include "kernels/attn_x86.h"
