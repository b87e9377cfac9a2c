/* ops_avx512.c — AVX-512 activation quantization and attention (the variants of
 * kn_quantize_act and kn_attn_ref / kn_attn_ref_f16 in the avx512vnni table). */
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/kernels_impl.h"
#include "quant/quant.h"

/* The same bits as kn_quantize_act (plus -8 * the block sums of q when a->q4off is set): the max of |x| is exact, d and 1/d are the same IEEE
 * operations, and vcvtps2dq rounds to nearest even as the reference's 2^23 trick does. */
void kn_quantize_avx512(kn_act *a, const float *x, int n_tok, int n) {
    int nb = n / KN_QBLOCK, sb = a->stride / KN_QBLOCK;
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int t = 0; t < n_tok; t++) {
        const float *xr = x + (size_t)t * n;
        int8_t *q = a->q + (size_t)t * a->stride;
        for (int b = 0; b < nb; b++) {
            __m512 v0 = _mm512_loadu_ps(xr + b * KN_QBLOCK);
            __m512 v1 = _mm512_loadu_ps(xr + b * KN_QBLOCK + 16);
            float amax = _mm512_reduce_max_ps(
                _mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1)));
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

/* e^x for x <= 0 (scores minus their max): Cody-Waite reduction by ln 2 and a degree-6
 * polynomial (Cephes' expf), within 2 ulp of expf; -inf and anything below -87.3 give 0. */
static inline __m512 exp_neg(__m512 x) {
    __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_GE_OQ);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_maskz_scalef_ps(live, p, n);
}

static inline __mmask16 tail_mask(int left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

/* 16 cache elements of a row from i under mask m (zeros elsewhere), F32 or F16 (widened). */
static inline __m512 kv16(const void *row, int i, __mmask16 m, const bool f16) {
    if (f16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)row + i));
    return _mm512_maskz_loadu_ps(m, (const float *)row + i);
}

static inline const void *kv_row(const void *base, size_t t, int d, const bool f16) {
    return (const uint8_t *)base + t * (size_t)d * (f16 ? 2 : 4);
}

/* q.k for four slots at once: one accumulator per slot over the head, then the four reduced
 * together (a transpose-add), which is cheaper than four separate horizontal sums. Each slot's
 * sum goes through the same tree wherever it sits in the group, so a score does not depend on
 * which other slots share its group. */
static inline __m128 dot4_512(const float *q, const void *k0, const void *k1, const void *k2,
                              const void *k3, int d, const bool f16) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < d; i += 16) {
        __mmask16 m = tail_mask(d - i);
        __m512 qv = _mm512_maskz_loadu_ps(m, q + i);
        a0 = _mm512_fmadd_ps(qv, kv16(k0, i, m, f16), a0);
        a1 = _mm512_fmadd_ps(qv, kv16(k1, i, m, f16), a1);
        a2 = _mm512_fmadd_ps(qv, kv16(k2, i, m, f16), a2);
        a3 = _mm512_fmadd_ps(qv, kv16(k3, i, m, f16), a3);
    }
    /* per 128-bit lane: [a0, a1, a0, a1] partial pairs, then [a0, a1, a2, a3] lane sums */
    __m512 t01 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
    __m512 t23 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
    __m512 u = _mm512_add_ps(
        _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t01), _mm512_castps_pd(t23))),
        _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t01), _mm512_castps_pd(t23))));
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(u), _mm512_extractf32x8_ps(u, 1));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* As kn_attn_ref. The exponentials are summed in 16 lanes by slot index (t mod 16) from slot 0,
 * so masked slots, which add exact zeros, cannot move any rounding. */
__attribute__((always_inline)) static inline void attn_512(
    const float *q, const void *k, const void *v, const bool f16, const int32_t *slot_pos,
    int n_slots, int32_t pos, int swa, int d, float *sc, float *out) {
    float scale = 1.0f / sqrtf((float)d);
    float mx = -INFINITY;
    int end = 0;
    for (int t = 0; t < n_slots; t++) {
        int32_t tp = slot_pos[t];
        bool allowed = tp >= 0 && tp <= pos && (swa <= 0 || pos - tp < swa);
        sc[t] = allowed ? 0.0f : -INFINITY;
        if (allowed) end = t + 1;
    }
    /* Scores four slots at a time up to the last allowed one (a short last group repeats its
     * first slot); the masked ones computed along the way are dropped. */
    for (int t = 0; t < end; t += 4) {
        const void *kt = kv_row(k, (size_t)t, d, f16);
        int n4 = end - t < 4 ? end - t : 4;
        float s4[4];
        _mm_storeu_ps(s4, dot4_512(q, kt, n4 > 1 ? kv_row(k, (size_t)t + 1, d, f16) : kt,
                                   n4 > 2 ? kv_row(k, (size_t)t + 2, d, f16) : kt,
                                   n4 > 3 ? kv_row(k, (size_t)t + 3, d, f16) : kt, d, f16));
        for (int j = 0; j < n4; j++) {
            if (sc[t + j] != 0.0f) continue; /* masked */
            sc[t + j] = s4[j] * scale;
            if (sc[t + j] > mx) mx = sc[t + j];
        }
    }
    __m512 vmx = _mm512_set1_ps(mx), vsum = _mm512_setzero_ps();
    for (int t = 0; t < end; t += 16) {
        __mmask16 m = tail_mask(end - t);
        __m512 e = exp_neg(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, sc + t), vmx));
        e = _mm512_maskz_mov_ps(m, e);
        _mm512_mask_storeu_ps(sc + t, m, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    float sum = _mm512_reduce_add_ps(vsum);
    float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    /* Up to 64 output dims stay in registers over the whole sweep of slots, in two sets (even
     * and odd slot index) so that the FMA latency is not paid once per slot; a masked slot's
     * weight is 0 and is skipped, which is the same as adding it. */
    for (int c = 0; c < d; c += 64) {
        __mmask16 m[4];
        for (int i = 0; i < 4; i++) m[i] = d - c > 16 * i ? tail_mask(d - c - 16 * i) : 0;
        __m512 e[4], od[4];
        for (int i = 0; i < 4; i++) e[i] = od[i] = _mm512_setzero_ps();
        for (int t = 0; t < end; t += 2) {
            if (sc[t] != 0.0f) {
                __m512 w = _mm512_set1_ps(sc[t] * inv);
                const void *vt = kv_row(v, (size_t)t, d, f16);
                for (int i = 0; i < 4; i++)
                    if (m[i]) e[i] = _mm512_fmadd_ps(w, kv16(vt, c + 16 * i, m[i], f16), e[i]);
            }
            if (t + 1 < end && sc[t + 1] != 0.0f) {
                __m512 w = _mm512_set1_ps(sc[t + 1] * inv);
                const void *vt = kv_row(v, (size_t)t + 1, d, f16);
                for (int i = 0; i < 4; i++)
                    if (m[i]) od[i] = _mm512_fmadd_ps(w, kv16(vt, c + 16 * i, m[i], f16), od[i]);
            }
        }
        for (int i = 0; i < 4; i++)
            _mm512_mask_storeu_ps(out + c + 16 * i, m[i], _mm512_add_ps(e[i], od[i]));
    }
}

void kn_attn_avx512(const float *q, const float *k, const float *v, const int32_t *slot_pos,
                    int n_slots, int32_t pos, int swa, int d, float *sc, float *out) {
    attn_512(q, k, v, false, slot_pos, n_slots, pos, swa, d, sc, out);
}

void kn_attn_avx512_f16(const float *q, const uint16_t *k, const uint16_t *v,
                        const int32_t *slot_pos, int n_slots, int32_t pos, int swa, int d,
                        float *sc, float *out) {
    attn_512(q, k, v, true, slot_pos, n_slots, pos, swa, d, sc, out);
}
