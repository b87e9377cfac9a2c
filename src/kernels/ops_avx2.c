/* ops_avx2.c — AVX2 activation quantization (both forms) and attention (F32 and F16 caches):
 * the avx2 and avxvnni tables' variants of kn_quantize_act (+ q4off), kn_quantize_act_k and
 * kn_attn_ref / kn_attn_ref_f16. The avx512vnni table takes the Q8_K quantizer from here.
 *
 * The quantizers give the references' bits: the maxima are exact, every float operation is the
 * same IEEE operation, vcvtps2dq rounds to nearest even as the Q8_0 reference's 2^23 trick
 * does, and the Q8_K one uses ggml's own bit trick, so even a non-finite input gives the same
 * bytes. */
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

AI float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 4 x 8 int32 -> 32 int8 in element order, saturating (the references clamp the same way). */
AI __m256i pack32(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i abcd = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* max(|x|, m), ignoring a NaN x as the references' `if (|x| > max)` does (vmaxps returns its
 * second operand when either is NaN). */
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
            __m256 v[4], m = _mm256_setzero_ps();
            for (int i = 0; i < 4; i++) {
                v[i] = _mm256_loadu_ps(xb + 8 * i);
                m = amax_step(v[i], m);
            }
            float amax = hmax8(m);
            float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
            __m256 vid = _mm256_set1_ps(id);
            __m256i qi[4];
            for (int i = 0; i < 4; i++) qi[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], vid));
            _mm256_storeu_si256((__m256i *)(void *)(q + b * KN_QBLOCK), pack32(qi[0], qi[1], qi[2], qi[3]));
            int sum = hsum8_i32(_mm256_add_epi32(_mm256_add_epi32(qi[0], qi[1]),
                                                 _mm256_add_epi32(qi[2], qi[3])));
            size_t at = (size_t)t * sb + b;
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
            __m256 m = _mm256_setzero_ps();
            for (int i = 0; i < KN_KBLOCK; i += 8) m = amax_step(_mm256_loadu_ps(xb + i), m);
            float amax = hmax8(m);
            if (amax == 0.0f) {
                memset(qb, 0, KN_KBLOCK);
                dk[b] = 0.0f;
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

/* ---- attention ---- */

/* e^x for x <= 0 (scores minus their max): Cody-Waite reduction by ln 2 and a degree-6
 * polynomial (Cephes' expf), within 2 ulp of expf; -inf and anything below -87.3 give 0. The
 * same steps as the AVX-512 variant, with 2^n built in the exponent field (n >= -126 here). */
AI __m256 exp_neg8(__m256 x) {
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
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(_mm256_max_ps(n, _mm256_set1_ps(-126.0f))),
                                                   _mm256_set1_epi32(127)),
                                  23);
    return _mm256_and_ps(live, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/* 8 cache elements from i (fewer at the end of a row: zeros past d). */
AI __m256 kv8(const void *row, int i, int d, const bool f16) {
    if (f16) {
        const uint16_t *p = (const uint16_t *)row + i;
        if (i + 8 <= d) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
        uint16_t tmp[8] = {0};
        memcpy(tmp, p, sizeof(uint16_t) * (size_t)(d - i));
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)tmp));
    }
    const float *p = (const float *)row + i;
    if (i + 8 <= d) return _mm256_loadu_ps(p);
    float tmp[8] = {0};
    memcpy(tmp, p, sizeof(float) * (size_t)(d - i));
    return _mm256_loadu_ps(tmp);
}

AI __m256 q8(const float *q, int i, int d) { return kv8(q, i, d, false); }

AI const void *kv_row(const void *base, size_t t, int d, const bool f16) {
    return (const uint8_t *)base + t * (size_t)d * (f16 ? 2 : 4);
}

/* q.k for four slots: one accumulator per slot over the head, then the four reduced together
 * through the same tree of horizontal adds wherever a slot sits in the group. */
AI __m128 dot4(const float *q, const void *k0, const void *k1, const void *k2, const void *k3,
               int d, const bool f16) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < d; i += 8) {
        __m256 qv = q8(q, i, d);
        a0 = _mm256_fmadd_ps(qv, kv8(k0, i, d, f16), a0);
        a1 = _mm256_fmadd_ps(qv, kv8(k1, i, d, f16), a1);
        a2 = _mm256_fmadd_ps(qv, kv8(k2, i, d, f16), a2);
        a3 = _mm256_fmadd_ps(qv, kv8(k3, i, d, f16), a3);
    }
    __m256 u = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1));
}

/* As kn_attn_ref. The exponentials are summed in 8 lanes by slot index (t mod 8) from slot 0,
 * so masked slots, which add exact zeros, cannot move any rounding. */
AI void attn_avx2(const float *q, const void *k, const void *v, const bool f16,
                  const int32_t *slot_pos, int n_slots, int32_t pos, int swa, int d, float *sc,
                  float *out) {
    float scale = 1.0f / sqrtf((float)d);
    float mx = -INFINITY;
    int end = 0;
    for (int t = 0; t < n_slots; t++) {
        int32_t tp = slot_pos[t];
        bool allowed = tp >= 0 && tp <= pos && (swa <= 0 || pos - tp < swa);
        sc[t] = allowed ? 0.0f : -INFINITY;
        if (allowed) end = t + 1;
    }
    for (int t = 0; t < end; t += 4) {
        int n4 = end - t < 4 ? end - t : 4;
        const void *k0 = kv_row(k, (size_t)t, d, f16);
        float s4[4];
        _mm_storeu_ps(s4, dot4(q, k0, n4 > 1 ? kv_row(k, (size_t)t + 1, d, f16) : k0,
                               n4 > 2 ? kv_row(k, (size_t)t + 2, d, f16) : k0,
                               n4 > 3 ? kv_row(k, (size_t)t + 3, d, f16) : k0, d, f16));
        for (int j = 0; j < n4; j++) {
            if (sc[t + j] != 0.0f) continue; /* masked */
            sc[t + j] = s4[j] * scale;
            if (sc[t + j] > mx) mx = sc[t + j];
        }
    }
    __m256 vmx = _mm256_set1_ps(mx), vsum = _mm256_setzero_ps();
    for (int t = 0; t < end; t += 8) {
        float tmp[8];
        int m = end - t < 8 ? end - t : 8;
        for (int j = 0; j < 8; j++) tmp[j] = j < m ? sc[t + j] : -INFINITY;
        __m256 e = exp_neg8(_mm256_sub_ps(_mm256_loadu_ps(tmp), vmx));
        _mm256_storeu_ps(tmp, e);
        for (int j = 0; j < m; j++) sc[t + j] = tmp[j];
        vsum = _mm256_add_ps(vsum, e);
    }
    float sum = hsum8(vsum);
    float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    /* Up to 32 output dims stay in registers over the whole sweep of slots, in two sets (even
     * and odd slot index) so that the FMA latency is not paid once per slot; a masked slot's
     * weight is 0 and is skipped, which is the same as adding it. */
    for (int c = 0; c < d; c += 32) {
        int nv = (d - c + 7) / 8 < 4 ? (d - c + 7) / 8 : 4;
        __m256 e[4], od[4];
        for (int i = 0; i < 4; i++) e[i] = od[i] = _mm256_setzero_ps();
        for (int t = 0; t < end; t += 2) {
            if (sc[t] != 0.0f) {
                __m256 w = _mm256_set1_ps(sc[t] * inv);
                const void *vt = kv_row(v, (size_t)t, d, f16);
                for (int i = 0; i < nv; i++) e[i] = _mm256_fmadd_ps(w, kv8(vt, c + 8 * i, d, f16), e[i]);
            }
            if (t + 1 < end && sc[t + 1] != 0.0f) {
                __m256 w = _mm256_set1_ps(sc[t + 1] * inv);
                const void *vt = kv_row(v, (size_t)t + 1, d, f16);
                for (int i = 0; i < nv; i++) od[i] = _mm256_fmadd_ps(w, kv8(vt, c + 8 * i, d, f16), od[i]);
            }
        }
        for (int i = 0; i < nv; i++) {
            float tmp[8];
            _mm256_storeu_ps(tmp, _mm256_add_ps(e[i], od[i]));
            int m = d - c - 8 * i < 8 ? d - c - 8 * i : 8;
            memcpy(out + c + 8 * i, tmp, sizeof(float) * (size_t)m);
        }
    }
}

void kn_attn_avx2(const float *q, const float *k, const float *v, const int32_t *slot_pos,
                  int n_slots, int32_t pos, int swa, int d, float *sc, float *out) {
    attn_avx2(q, k, v, false, slot_pos, n_slots, pos, swa, d, sc, out);
}

void kn_attn_avx2_f16(const float *q, const uint16_t *k, const uint16_t *v,
                      const int32_t *slot_pos, int n_slots, int32_t pos, int swa, int d,
                      float *sc, float *out) {
    attn_avx2(q, k, v, true, slot_pos, n_slots, pos, swa, d, sc, out);
}
