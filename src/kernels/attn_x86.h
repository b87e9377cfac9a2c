/* attn_x86.h — attention of a group of query heads that share one KV head (GQA), on 256-bit
 * registers; included by ops_avx2.c and ops_avx512.c, which define KN_ATTN_NAME(suffix) to name
 * the three functions (F32, F16 and Q8_0 cache).
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
#include "quant/blocks.h"

/* A Q8_0 block: an f16 scale, then KN_QBLOCK int8 values. */
#define KA_Q8B ((size_t)sizeof(kn_block_q8_0))

#define KA_AI __attribute__((always_inline)) static inline

/* A Q8_0 cache's keys are scored in integers (below): the 8 lanes of sums of 4 adjacent u8 x s8
 * products, by maddubs + madd, or one vpdpbusd where the includer has VNNI. */
#ifndef KA_DOT_U8S8
#define KA_DOT_U8S8(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1))
#endif

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

/* Bytes of a cached row of d elements (kt: a kn_kv_kind). */
KA_AI size_t ka_row_bytes(int d, const int kt) {
    return kt == KN_KV_Q8 ? (size_t)d / KN_QBLOCK * KA_Q8B : (size_t)d * (kt == KN_KV_F16 ? 2 : 4);
}

/* 8 elements of an F32 or F16 row from i (zeros past d), widened exactly. (A Q8_0 cache's
 * rows are read block by block: ka_q8_dot, ka_values.) */
KA_AI __m256 ka_load8(const void *row, int i, int d, const int kt) {
    if (kt == KN_KV_F16) {
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

KA_AI const void *ka_row(const void *base, size_t t, int d, const int kt) {
    return (const uint8_t *)base + t * ka_row_bytes(d, kt);
}

/* Rows are read in slot order, once per token from memory (the cache is far bigger than the
 * caches at long contexts): fetch a few rows ahead so that several are in flight. */
#define KA_AHEAD 16
KA_AI void ka_prefetch_row(const void *base, int t, int end, int d, const int kt) {
    if (t >= end) return;
    const char *p = (const char *)ka_row(base, (size_t)t, d, kt);
    size_t bytes = ka_row_bytes(d, kt);
    for (size_t off = 0; off < bytes; off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
}

/* The value rows, toward L2 while the scores are computed: the value pass then finds them
 * there instead of waiting on memory (a cold 1,000-slot cache: a sixth off the kernel). */
KA_AI void ka_prefetch_l2(const void *base, int t, int end, int d, const int kt) {
    if (t >= end) return;
    const char *p = (const char *)ka_row(base, (size_t)t, d, kt);
    size_t bytes = ka_row_bytes(d, kt);
    for (size_t off = 0; off < bytes; off += 64) _mm_prefetch(p + off, _MM_HINT_T1);
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

/* The score of slot t for the heads h0 .. h0 + nh - 1 into acc[base .. base + nh) (the 8-lane
 * partial sums over dims, in dim order). */
KA_AI void ka_dot_heads(const float *qh, const void *krow, const int kt, int d, const int nh,
                        __m256 *acc, const int base) {
    for (int i = 0; i < d; i += 8) {
        __m256 kv = ka_load8(krow, i, d, kt);
        for (int j = 0; j < nh; j++)
            acc[base + j] =
                _mm256_fmadd_ps(ka_load8(qh + (size_t)j * d, i, d, KN_KV_F32), kv, acc[base + j]);
    }
}

/* Lanes of s8 as scores of slot t: scaled, soft-capped (Gemma 2: the reference's scalar tanhf
 * on each lane, so both tables cap alike), stored at sc[t][0..8), folded into the max. */
KA_AI __m256 ka_store_scores(float *st, __m256 s8, float softcap, __m256 mx) {
    _mm256_storeu_ps(st, s8);
    if (softcap > 0) {
        for (int j = 0; j < 8; j++) st[j] = softcap * tanhf(st[j] / softcap);
        s8 = _mm256_loadu_ps(st);
    }
    return _mm256_max_ps(mx, s8);
}

/* Up to how many heads two slots (scores) or two 8-dim chunks (values) go through one loop
 * iteration together: each pair needs twice the accumulators, which 16 registers hold for 4
 * heads and 32 (an AVX-512 build's ymm0-31: KA_REGS32) for 8. */
#ifdef KA_REGS32
#define KA_PAIR_MAX 8
#define KA_VACC 24
#else
#define KA_PAIR_MAX 4
#define KA_VACC 8
#endif

/* Dims [c, c + 8 * cw) of the weighted sums of values for heads h0 .. h0 + nh - 1 (cw 2 or 4
 * needs nh * cw <= KA_VACC and c + 8 * cw <= d), from the normalized weights sc[t][j]. */
KA_AI void ka_values(const void *v, const int kt, const float *sc, int end, int d, int c,
                     int h0, const int nh, const int cw, float *out) {
    __m256 acc[KA_VACC];
    for (int i = 0; i < nh * cw; i++) acc[i % KA_VACC] = _mm256_setzero_ps();
    for (int t = 0; t < end; t++) {
        if (c == 0) ka_prefetch_row(v, t + KA_AHEAD, end, d, kt);
        const void *vt = ka_row(v, (size_t)t, d, kt);
        __m256 vv[4];
        if (kt == KN_KV_Q8) {
            /* a pass lies in one block (8 * cw <= 32 divides c): its scale is read once; an
             * f16 scale times an int8 fits a float, so the widening is exact */
            const uint8_t *blk = (const uint8_t *)vt + (size_t)(c / KN_QBLOCK) * KA_Q8B;
            uint16_t h;
            memcpy(&h, blk, sizeof h);
            __m256 dv = _mm256_set1_ps(_cvtsh_ss(h));
            for (int w = 0; w < cw; w++)
                vv[w] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                                          (const __m128i *)(const void *)(blk + 2 + c % KN_QBLOCK + 8 * w)))),
                                      dv);
        } else {
            for (int w = 0; w < cw; w++) vv[w] = ka_load8(vt, c + 8 * w, d, kt);
        }
        for (int j = 0; j < nh; j++) {
            __m256 p = _mm256_broadcast_ss(sc + 8 * (size_t)t + j);
            for (int w = 0; w < cw; w++)
                acc[(w * nh + j) % KA_VACC] = _mm256_fmadd_ps(p, vv[w], acc[(w * nh + j) % KA_VACC]);
        }
    }
    for (int half = 0; half < cw; half++) {
        int cc = c + 8 * half, m = d - cc < 8 ? d - cc : 8;
        for (int j = 0; j < nh; j++) {
            __m256 a = acc[(half * nh + j) % KA_VACC];
            float *o = out + (size_t)(h0 + j) * d + cc;
            if (m == 8) {
                _mm256_storeu_ps(o, a);
            } else {
                float tmp[8];
                _mm256_storeu_ps(tmp, a);
                memcpy(o, tmp, sizeof(float) * (size_t)m);
            }
        }
    }
}

/* Before scoring slots t .. t + n - 1: their key rows KA_AHEAD further on toward L1, value
 * rows toward L2. */
KA_AI void ka_prefetch_ahead(const void *k, const void *v, int t, const int n, int end, int d,
                             const int kt) {
    for (int u = t; u < t + n; u++) {
        ka_prefetch_row(k, u + KA_AHEAD, end, d, kt);
        ka_prefetch_l2(v, u + KA_AHEAD, end, d, kt);
    }
}

/* The dot products of slots t and t + 1 with the heads' queries, each query load serving both
 * (slot t into acc[j], slot t + 1 into acc[at1 + j]). */
KA_AI void ka_dot_pair(const float *qh, const void *k, int t, const int kt, int d, const int nh,
                       __m256 *acc, const int at1) {
    const void *k0 = ka_row(k, (size_t)t, d, kt), *k1 = ka_row(k, (size_t)t + 1, d, kt);
    for (int i = 0; i < d; i += 8) {
        __m256 kv0 = ka_load8(k0, i, d, kt), kv1 = ka_load8(k1, i, d, kt);
        for (int j = 0; j < nh; j++) {
            __m256 qv = ka_load8(qh + (size_t)j * d, i, d, KN_KV_F32);
            acc[j] = _mm256_fmadd_ps(qv, kv0, acc[j]);
            acc[at1 + j] = _mm256_fmadd_ps(qv, kv1, acc[at1 + j]);
        }
    }
}

/* The nh queries qh[nh][d] rounded to Q8_0 per block of 32, as llama.cpp rounds the query it
 * scores against a q8_0 cache, into qq[nh][d] and their scales qd[nh][d / 32]: amax / 127
 * rounded through a half; each value x * (127 / amax) rounded to nearest, ties to even. The
 * reference (ref.c) spells out the same steps, so the integers and scales are the same bits. */
KA_AI void ka_quantize_q(const float *qh, int d, const int nh, int8_t *qq, float *qd) {
    const int nb = d / 32;
    const __m256 nz = _mm256_set1_ps(-0.0f);
    for (int j = 0; j < nh; j++)
        for (int b = 0; b < nb; b++) {
            const float *x = qh + (size_t)j * d + 32 * b;
            __m256 v[4], m = _mm256_setzero_ps();
            for (int u = 0; u < 4; u++) {
                v[u] = _mm256_loadu_ps(x + 8 * u);
                m = _mm256_max_ps(m, _mm256_andnot_ps(nz, v[u]));
            }
            float m8[8], amax = 0.0f;
            _mm256_storeu_ps(m8, m);
            for (int u = 0; u < 8; u++) amax = m8[u] > amax ? m8[u] : amax;
            float dd = amax / 127.0f, id = dd != 0.0f ? 1.0f / dd : 0.0f;
            qd[j * nb + b] = _cvtsh_ss(_cvtss_sh(dd, _MM_FROUND_TO_NEAREST_INT));
            __m256i i[4];
            for (int u = 0; u < 4; u++)
                i[u] = _mm256_cvtps_epi32(_mm256_round_ps(
                    _mm256_mul_ps(v[u], _mm256_set1_ps(id)),
                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            /* the packs interleave 128-bit halves; the permute puts the 32 values back in order */
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]),
                                           _mm256_packs_epi32(i[2], i[3]));
            p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(void *)(qq + (size_t)j * d + 32 * b), p);
        }
}

/* The scores of slot t (into acc[0 .. nh)) and, with two, t + 1 (acc[at1 ..)) of a Q8_0 cache
 * against the Q8_0 queries: per block of 32 an exact integer dot in 8 lanes of 4 products (|k|
 * as u8 times sign(k) * q as s8), each lane taken to float and added into its accumulator
 * times the key's scale times the query's, block after block: fused, one rounding each. The
 * tree that sums the 8 lanes is the float path's. Half the bytes of an F16 row, and a quarter
 * of the instructions to widen it. */
KA_AI void ka_q8_dot(const int8_t *qq, const float *qd, const void *k, int t, const int two,
                     int d, const int nh, __m256 *acc, const int at1) {
    const int nb = d / 32;
    for (int b = 0; b < nb; b++)
        for (int u = 0; u < two; u++) {
            const uint8_t *blk =
                (const uint8_t *)ka_row(k, (size_t)t + u, d, KN_KV_Q8) + KA_Q8B * (size_t)b;
            uint16_t h;
            memcpy(&h, blk, sizeof h);
            __m256 dk = _mm256_set1_ps(_cvtsh_ss(h));
            __m256i kb = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 2));
            __m256i ak = _mm256_sign_epi8(kb, kb);
            for (int j = 0; j < nh; j++) {
                __m256i qb = _mm256_loadu_si256(
                    (const __m256i *)(const void *)(qq + (size_t)j * d + 32 * b));
                __m256i p = KA_DOT_U8S8(ak, _mm256_sign_epi8(qb, kb));
                __m256 s = _mm256_mul_ps(dk, _mm256_broadcast_ss(qd + j * nb + b));
                int a = u ? at1 + j : j;
                acc[a] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, acc[a]);
            }
        }
}

/* Lanes 0-3 of two slots' scores, a's in the low half. */
KA_AI __m256 ka_pair4(const float *a, const float *b) {
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(a)), _mm_loadu_ps(b), 1);
}

/* Heads h0 .. h0 + nh - 1 (nh <= 8, a constant) of the group. Scores are kept slot-major,
 * sc[t][8], lane j for head h0 + j, so the softmax is one vector operation per slot for all
 * the heads. With at most 4 heads, two slots share one reduction tree (heads in lanes 0-3 and
 * 4-7) and each query load; with up to KA_PAIR_MAX, two slots share the query loads. Every
 * score still comes from its own accumulator through the same tree, so the bits do not depend
 * on the pairing. Unused lanes of a slot hold 0 (or their cap), as the zero accumulators give. */
KA_AI void ka_heads(const float *q, const void *k, const void *v, const int kt,
                    const int32_t *slot_pos, int end, int32_t pos, int swa, float softcap,
                    int d, int h0, const int nh, float *sc, float *out, float *ml, int8_t *qq,
                    float *qd) {
    const __m256 scale = _mm256_set1_ps(1.0f / sqrtf((float)d));
    const float *qh = q + (size_t)h0 * d;
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    /* a Q8_0 cache's keys are scored against the queries rounded to Q8_0 (ka_q8_dot) */
    if (kt == KN_KV_Q8) ka_quantize_q(qh, d, nh, qq, qd);
    /* scores: each key row widened once, dotted with every query of the group */
    __m256 mx = ninf;
    for (int t = 0; t < end;) {
        bool a0 = ka_allowed(slot_pos[t], pos, swa);
        if (nh <= KA_PAIR_MAX && t + 1 < end) {
            bool a1 = ka_allowed(slot_pos[t + 1], pos, swa);
            if (!a0 && !a1) {
                _mm256_storeu_ps(sc + 8 * (size_t)t, ninf);
                _mm256_storeu_ps(sc + 8 * (size_t)t + 8, ninf);
                t += 2;
                continue;
            }
            /* slot t's sums in acc[0 .. nh), slot t + 1's from acc[at1]: 4 (one tree for
             * both) or 8 (a tree each) */
            const int at1 = nh <= 4 ? 4 : 8;
            __m256 acc[16];
            for (int j = 0; j < 16; j++) acc[j] = _mm256_setzero_ps();
            ka_prefetch_ahead(k, v, t, 2, end, d, kt);
            if (kt == KN_KV_Q8) ka_q8_dot(qq, qd, k, t, 2, d, nh, acc, at1);
            else ka_dot_pair(qh, k, t, kt, d, nh, acc, at1);
            __m256 s0, s1;
            if (at1 == 4) {
                /* slot t: lanes 0-3 (4-7 zero); slot t + 1: lanes 4-7 moved down */
                __m256 s8 = _mm256_mul_ps(ka_sum8x8(acc), scale), zero = _mm256_setzero_ps();
                s0 = _mm256_permute2f128_ps(s8, zero, 0x20);
                s1 = _mm256_permute2f128_ps(s8, zero, 0x21);
            } else {
                s0 = _mm256_mul_ps(ka_sum8x8(acc), scale);
                s1 = _mm256_mul_ps(ka_sum8x8(acc + 8), scale);
            }
            if (a0) mx = ka_store_scores(sc + 8 * (size_t)t, s0, softcap, mx);
            else _mm256_storeu_ps(sc + 8 * (size_t)t, ninf);
            if (a1) mx = ka_store_scores(sc + 8 * (size_t)t + 8, s1, softcap, mx);
            else _mm256_storeu_ps(sc + 8 * (size_t)t + 8, ninf);
            t += 2;
            continue;
        }
        if (!a0) {
            _mm256_storeu_ps(sc + 8 * (size_t)t, ninf);
            t++;
            continue;
        }
        __m256 acc[8];
        for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
        ka_prefetch_ahead(k, v, t, 1, end, d, kt);
        if (kt == KN_KV_Q8) ka_q8_dot(qq, qd, k, t, 1, d, nh, acc, 0);
        else ka_dot_heads(qh, ka_row(k, (size_t)t, d, kt), kt, d, nh, acc, 0);
        mx = ka_store_scores(sc + 8 * (size_t)t, _mm256_mul_ps(ka_sum8x8(acc), scale), softcap,
                             mx);
        t++;
    }
    /* softmax per head (lane): exponentials summed slot by slot, then scaled in place. With
     * at most 4 heads, two slots' lanes 0-3 share one vector of exponentials (lanes 4-7 are
     * unused): the same function lane by lane, each slot still added in turn, so the same bits
     * at half the cost. */
    __m256 sum = _mm256_setzero_ps();
    int t0 = 0;
    if (nh <= 4) {
        const __m256 mx2 = _mm256_permute2f128_ps(mx, mx, 0x00);
        __m128 s4 = _mm_setzero_ps();
        for (; t0 + 1 < end; t0 += 2) {
            float *a = sc + 8 * (size_t)t0, *b = a + 8;
            __m256 e = ka_exp_neg8(_mm256_sub_ps(ka_pair4(a, b), mx2));
            __m128 lo = _mm256_castps256_ps128(e), hi = _mm256_extractf128_ps(e, 1);
            _mm_storeu_ps(a, lo);
            _mm_storeu_ps(b, hi);
            s4 = _mm_add_ps(_mm_add_ps(s4, lo), hi);
        }
        sum = _mm256_castps128_ps256(s4);
        sum = _mm256_insertf128_ps(sum, _mm_setzero_ps(), 1);
    }
    for (int t = t0; t < end; t++) {
        __m256 e = ka_exp_neg8(_mm256_sub_ps(_mm256_loadu_ps(sc + 8 * (size_t)t), mx));
        _mm256_storeu_ps(sc + 8 * (size_t)t, e);
        sum = _mm256_add_ps(sum, e);
    }
    if (ml) {
        float m8[8], l8[8];
        _mm256_storeu_ps(m8, mx);
        _mm256_storeu_ps(l8, sum);
        for (int j = 0; j < nh; j++) {
            ml[2 * (h0 + j)] = m8[j];
            ml[2 * (h0 + j) + 1] = l8[j];
        }
    }
    __m256 inv = _mm256_and_ps(_mm256_cmp_ps(sum, _mm256_setzero_ps(), _CMP_GT_OQ),
                               _mm256_div_ps(_mm256_set1_ps(1.0f), sum));
    t0 = 0;
    if (nh <= 4) {
        const __m256 inv2 = _mm256_permute2f128_ps(inv, inv, 0x00);
        for (; t0 + 1 < end; t0 += 2) {
            float *a = sc + 8 * (size_t)t0, *b = a + 8;
            __m256 w = _mm256_mul_ps(ka_pair4(a, b), inv2);
            _mm_storeu_ps(a, _mm256_castps256_ps128(w));
            _mm_storeu_ps(b, _mm256_extractf128_ps(w, 1));
        }
    }
    for (int t = t0; t < end; t++)
        _mm256_storeu_ps(sc + 8 * (size_t)t, _mm256_mul_ps(_mm256_loadu_ps(sc + 8 * (size_t)t), inv));
    /* weighted sums: 32, 16 or 8 dims of every head of the group at a time (as many as
     * KA_VACC accumulators hold), each value row widened once per 8 dims for all of them and
     * each weight broadcast once per pass: fewer passes, fewer broadcasts. Every (head, dim)
     * still sums slot by slot in slot order. A masked slot's weight is exactly 0 and cached
     * rows are finite, so it adds exact zeros: no test needed. */
    int c = 0;
    if (nh * 4 <= KA_VACC)
        for (; c + 32 <= d; c += 32) ka_values(v, kt, sc, end, d, c, h0, nh, 4, out);
    if (nh * 2 <= KA_VACC)
        for (; c + 16 <= d; c += 16) ka_values(v, kt, sc, end, d, c, h0, nh, 2, out);
    for (; c < d; c += 8) ka_values(v, kt, sc, end, d, c, h0, nh, 1, out);
}

/* The group in blocks of up to 8 heads; d is a constant in the copies ka_attn makes. */
KA_AI void ka_attn_d(const float *q, const void *k, const void *v, const int kt,
                     const int32_t *slot_pos, int end, int32_t pos, int swa, float softcap,
                     const int d, int n_q, float *sc, float *out, float *ml, int8_t *qq,
                     float *qd) {
    for (int h0 = 0; h0 < n_q; h0 += 8) {
        /* one specialized copy per width, so the loops over the heads unroll */
        switch (n_q - h0 < 8 ? n_q - h0 : 8) {
        case 1: ka_heads(q, k, v, kt, slot_pos, end, pos, swa, softcap, d, h0, 1, sc, out, ml, qq, qd); break;
        case 2: ka_heads(q, k, v, kt, slot_pos, end, pos, swa, softcap, d, h0, 2, sc, out, ml, qq, qd); break;
        case 3: ka_heads(q, k, v, kt, slot_pos, end, pos, swa, softcap, d, h0, 3, sc, out, ml, qq, qd); break;
        case 4: ka_heads(q, k, v, kt, slot_pos, end, pos, swa, softcap, d, h0, 4, sc, out, ml, qq, qd); break;
        case 5: ka_heads(q, k, v, kt, slot_pos, end, pos, swa, softcap, d, h0, 5, sc, out, ml, qq, qd); break;
        case 6: ka_heads(q, k, v, kt, slot_pos, end, pos, swa, softcap, d, h0, 6, sc, out, ml, qq, qd); break;
        case 7: ka_heads(q, k, v, kt, slot_pos, end, pos, swa, softcap, d, h0, 7, sc, out, ml, qq, qd); break;
        default: ka_heads(q, k, v, kt, slot_pos, end, pos, swa, softcap, d, h0, 8, sc, out, ml, qq, qd); break;
        }
    }
}

/* Head sizes 64 and 128 (most models) get copies with d a constant: the dim loops unroll and
 * the loads lose their tail tests (a fifth off the F16 kernel's time at d 64). The arithmetic
 * is the same code, so the bits are too. */
KA_AI void ka_attn(const float *q, const void *k, const void *v, const int kt,
                   const int32_t *slot_pos, int n_slots, int32_t pos, int swa, float softcap,
                   int d, int n_q, float *sc, float *out, float *ml, int8_t *qq, float *qd) {
    int end = 0;
    for (int t = 0; t < n_slots; t++)
        if (ka_allowed(slot_pos[t], pos, swa)) end = t + 1;
    if (kt == KN_KV_F16 && d == 64)
        ka_attn_d(q, k, v, KN_KV_F16, slot_pos, end, pos, swa, softcap, 64, n_q, sc, out, ml, qq, qd);
    else if (kt == KN_KV_F16 && d == 128)
        ka_attn_d(q, k, v, KN_KV_F16, slot_pos, end, pos, swa, softcap, 128, n_q, sc, out, ml, qq, qd);
    else if (kt == KN_KV_F16)
        ka_attn_d(q, k, v, KN_KV_F16, slot_pos, end, pos, swa, softcap, d, n_q, sc, out, ml, qq, qd);
    else if (kt == KN_KV_Q8 && d == 64)
        ka_attn_d(q, k, v, KN_KV_Q8, slot_pos, end, pos, swa, softcap, 64, n_q, sc, out, ml, qq, qd);
    else if (kt == KN_KV_Q8 && d == 128)
        ka_attn_d(q, k, v, KN_KV_Q8, slot_pos, end, pos, swa, softcap, 128, n_q, sc, out, ml, qq, qd);
    else if (kt == KN_KV_Q8)
        ka_attn_d(q, k, v, KN_KV_Q8, slot_pos, end, pos, swa, softcap, d, n_q, sc, out, ml, qq, qd);
    else ka_attn_d(q, k, v, KN_KV_F32, slot_pos, end, pos, swa, softcap, d, n_q, sc, out, ml, qq, qd);
}

#ifndef KA_Q8_ONLY
void KN_ATTN_NAME()(const float *q, const float *k, const float *v, const int32_t *slot_pos,
                    int n_slots, int32_t pos, int swa, float softcap, int d, int n_q, float *sc,
                    float *out, float *ml) {
    ka_attn(q, k, v, KN_KV_F32, slot_pos, n_slots, pos, swa, softcap, d, n_q, sc, out, ml, NULL,
            NULL);
}

void KN_ATTN_NAME(_f16)(const float *q, const uint16_t *k, const uint16_t *v,
                        const int32_t *slot_pos, int n_slots, int32_t pos, int swa,
                        float softcap, int d, int n_q, float *sc, float *out, float *ml) {
    ka_attn(q, k, v, KN_KV_F16, slot_pos, n_slots, pos, swa, softcap, d, n_q, sc, out, ml, NULL,
            NULL);
}

#endif

void KN_ATTN_NAME(_q8)(const float *q, const uint8_t *k, const uint8_t *v,
                       const int32_t *slot_pos, int n_slots, int32_t pos, int swa,
                       float softcap, int d, int n_q, float *sc, float *out, float *ml) {
    int8_t qq[8 * KN_ATTN_MAX_D]; /* a block of up to 8 queries rounded to Q8_0 */
    float qd[8 * KN_ATTN_MAX_D / 32];
    ka_attn(q, k, v, KN_KV_Q8, slot_pos, n_slots, pos, swa, softcap, d, n_q, sc, out, ml, qq, qd);
}
