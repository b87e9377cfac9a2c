/* attn_x86.h — attention of a group of query heads that share one KV head (GQA), on 256-bit
 * registers; included by ops_avx2.c and ops_avx512.c, which define KN_ATTN_NAME(suffix) to name
 * the two functions (F32 and F16 cache).
 *
 * Why a group: with 8 query heads per KV head (TinyLlama, Llama 3), attending one head at a
 * time reads and widens every cached key and value 8 times. Here each key row is widened once
 * and dotted with all the group's queries, and each value row once for all their weighted sums.
 *
 * Per head the arithmetic does not depend on the group: its score is a sum over dims in 8
 * lanes reduced by the same tree of horizontal adds ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7))
 * whichever lane of the group the head sits in; its exponentials are summed slot by slot, and
 * its weighted values accumulated slot by slot, in slot order. Slots past the last allowed one
 * are never read and masked ones before it add exact zeros, so the result does not depend on
 * how many masked slots follow (decode vs a whole window). */
#ifndef KN_ATTN_NAME
#error "define KN_ATTN_NAME before including attn_x86.h"
#endif

#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "kernels/f16_x86.h"
#include "kernels/kernels.h"

#define KA_AI __attribute__((always_inline)) static inline

KA_AI float ka_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* e^x for x <= 0 (scores minus their max): Cody-Waite reduction by ln 2 and a degree-6
 * polynomial (Cephes' expf), within 2 ulp of expf; -inf and anything below -87.3 give 0. 2^n
 * is built in the exponent field (n >= -126 here). */
KA_AI __m256 ka_exp_neg8(__m256 x) {
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
    __m256i e = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_max_ps(n, _mm256_set1_ps(-126.0f))),
                         _mm256_set1_epi32(127)),
        23);
    return _mm256_and_ps(live, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/* 8 elements of a row from i (zeros past d), F32 or F16 widened exactly. */
KA_AI __m256 ka_load8(const void *row, int i, int d, const bool f16) {
    if (f16) {
        const uint16_t *p = (const uint16_t *)row + i;
        if (i + 8 <= d) return kn_f16c_x8(p);
        uint16_t tmp[8] = {0};
        memcpy(tmp, p, sizeof(uint16_t) * (size_t)(d - i));
        return kn_f16c_x8(tmp);
    }
    const float *p = (const float *)row + i;
    if (i + 8 <= d) return _mm256_loadu_ps(p);
    float tmp[8] = {0};
    memcpy(tmp, p, sizeof(float) * (size_t)(d - i));
    return _mm256_loadu_ps(tmp);
}

KA_AI const void *ka_row(const void *base, size_t t, int d, const bool f16) {
    return (const uint8_t *)base + t * (size_t)d * (f16 ? 2 : 4);
}

/* Rows are read in slot order, once per token from memory (the cache is far bigger than the
 * caches at long contexts): fetch a few rows ahead so that several are in flight. */
#define KA_AHEAD 16
KA_AI void ka_prefetch_row(const void *base, int t, int end, int d, const bool f16) {
    if (t >= end) return;
    const char *p = (const char *)ka_row(base, (size_t)t, d, f16);
    size_t bytes = (size_t)d * (f16 ? 2 : 4);
    for (size_t off = 0; off < bytes; off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
}

KA_AI bool ka_allowed(int32_t tp, int32_t pos, int swa) {
    return tp >= 0 && tp <= pos && (swa <= 0 || pos - tp < swa);
}

/* The 8 lane sums of a[0..7], in that order, each through the same tree. */
KA_AI __m256 ka_sum8x8(const __m256 *a) {
    __m256 h0123 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    __m256 h4567 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(h0123, h4567, 0x20),
                         _mm256_permute2f128_ps(h0123, h4567, 0x31));
}

/* Heads h0 .. h0 + nh - 1 (nh <= 8, a constant) of the group. Scores are kept slot-major,
 * sc[t][8], lane j for head h0 + j, so the softmax is one vector operation per slot for all
 * the heads. */
KA_AI void ka_heads(const float *q, const void *k, const void *v, const bool f16,
                    const int32_t *slot_pos, int end, int32_t pos, int swa, float softcap,
                    int d, int h0, const int nh, float *sc, float *out) {
    const __m256 scale = _mm256_set1_ps(1.0f / sqrtf((float)d));
    const float *qh = q + (size_t)h0 * d;
    /* scores: each key row widened once, dotted with every query of the group */
    __m256 mx = _mm256_set1_ps(-INFINITY);
    for (int t = 0; t < end; t++) {
        if (!ka_allowed(slot_pos[t], pos, swa)) {
            _mm256_storeu_ps(sc + 8 * (size_t)t, _mm256_set1_ps(-INFINITY));
            continue;
        }
        const void *kt = ka_row(k, (size_t)t, d, f16);
        ka_prefetch_row(k, t + KA_AHEAD, end, d, f16);
        __m256 acc[8];
        for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
        for (int i = 0; i < d; i += 8) {
            __m256 kv = ka_load8(kt, i, d, f16);
            for (int j = 0; j < nh; j++)
                acc[j] = _mm256_fmadd_ps(ka_load8(qh + (size_t)j * d, i, d, false), kv, acc[j]);
        }
        __m256 s8 = _mm256_mul_ps(ka_sum8x8(acc), scale);
        _mm256_storeu_ps(sc + 8 * (size_t)t, s8);
        if (softcap > 0) {
            /* Gemma 2: the reference's scalar tanhf on each lane, so both tables cap alike */
            float *st = sc + 8 * (size_t)t;
            for (int j = 0; j < 8; j++) st[j] = softcap * tanhf(st[j] / softcap);
            s8 = _mm256_loadu_ps(st);
        }
        mx = _mm256_max_ps(mx, s8);
    }
    /* softmax per head (lane): exponentials summed slot by slot, then scaled in place */
    __m256 sum = _mm256_setzero_ps();
    for (int t = 0; t < end; t++) {
        __m256 e = ka_exp_neg8(_mm256_sub_ps(_mm256_loadu_ps(sc + 8 * (size_t)t), mx));
        _mm256_storeu_ps(sc + 8 * (size_t)t, e);
        sum = _mm256_add_ps(sum, e);
    }
    __m256 inv = _mm256_and_ps(_mm256_cmp_ps(sum, _mm256_setzero_ps(), _CMP_GT_OQ),
                               _mm256_div_ps(_mm256_set1_ps(1.0f), sum));
    for (int t = 0; t < end; t++)
        _mm256_storeu_ps(sc + 8 * (size_t)t, _mm256_mul_ps(_mm256_loadu_ps(sc + 8 * (size_t)t), inv));
    /* weighted sums: 8 dims of every head of the group at a time, each value row widened once
     * per 8 dims for all of them. A masked slot's weight is exactly 0 and cached rows are
     * finite, so it adds exact zeros: no test needed. */
    for (int c = 0; c < d; c += 8) {
        __m256 acc[8];
        for (int j = 0; j < nh; j++) acc[j] = _mm256_setzero_ps();
        for (int t = 0; t < end; t++) {
            if (c == 0) ka_prefetch_row(v, t + KA_AHEAD, end, d, f16);
            __m256 vv = ka_load8(ka_row(v, (size_t)t, d, f16), c, d, f16);
            for (int j = 0; j < nh; j++)
                acc[j] = _mm256_fmadd_ps(_mm256_broadcast_ss(sc + 8 * (size_t)t + j), vv, acc[j]);
        }
        int m = d - c < 8 ? d - c : 8;
        for (int j = 0; j < nh; j++) {
            float *o = out + (size_t)(h0 + j) * d + c;
            if (m == 8) {
                _mm256_storeu_ps(o, acc[j]);
            } else {
                float tmp[8];
                _mm256_storeu_ps(tmp, acc[j]);
                memcpy(o, tmp, sizeof(float) * (size_t)m);
            }
        }
    }
}

KA_AI void ka_attn(const float *q, const void *k, const void *v, const bool f16,
                   const int32_t *slot_pos, int n_slots, int32_t pos, int swa, float softcap,
                   int d, int n_q, float *sc, float *out) {
    int end = 0;
    for (int t = 0; t < n_slots; t++)
        if (ka_allowed(slot_pos[t], pos, swa)) end = t + 1;
    for (int h0 = 0; h0 < n_q; h0 += 8) {
        /* one specialized copy per width, so the loops over the heads unroll */
        switch (n_q - h0 < 8 ? n_q - h0 : 8) {
        case 1: ka_heads(q, k, v, f16, slot_pos, end, pos, swa, softcap, d, h0, 1, sc, out); break;
        case 2: ka_heads(q, k, v, f16, slot_pos, end, pos, swa, softcap, d, h0, 2, sc, out); break;
        case 3: ka_heads(q, k, v, f16, slot_pos, end, pos, swa, softcap, d, h0, 3, sc, out); break;
        case 4: ka_heads(q, k, v, f16, slot_pos, end, pos, swa, softcap, d, h0, 4, sc, out); break;
        case 5: ka_heads(q, k, v, f16, slot_pos, end, pos, swa, softcap, d, h0, 5, sc, out); break;
        case 6: ka_heads(q, k, v, f16, slot_pos, end, pos, swa, softcap, d, h0, 6, sc, out); break;
        case 7: ka_heads(q, k, v, f16, slot_pos, end, pos, swa, softcap, d, h0, 7, sc, out); break;
        default: ka_heads(q, k, v, f16, slot_pos, end, pos, swa, softcap, d, h0, 8, sc, out); break;
        }
    }
}

void KN_ATTN_NAME()(const float *q, const float *k, const float *v, const int32_t *slot_pos,
                    int n_slots, int32_t pos, int swa, float softcap, int d, int n_q, float *sc,
                    float *out) {
    ka_attn(q, k, v, false, slot_pos, n_slots, pos, swa, softcap, d, n_q, sc, out);
}

void KN_ATTN_NAME(_f16)(const float *q, const uint16_t *k, const uint16_t *v,
                        const int32_t *slot_pos, int n_slots, int32_t pos, int swa,
                        float softcap, int d, int n_q, float *sc, float *out) {
    ka_attn(q, k, v, true, slot_pos, n_slots, pos, swa, softcap, d, n_q, sc, out);
}
