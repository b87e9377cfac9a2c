/* matmul_avx512.c — AVX-512 VNNI row products of the quantized types, and the avx512vnni table
 * (its F32 / F16 products are the AVX2-class ones of x86_body.h; quantization and attention
 * are in ops_avx512.c).
 *
 * Batch invariance. A decode step (one token) and a prefill or stateless pass (many tokens) must
 * give the same bits for the same token, or greedy generation forks between the modes on a
 * near-tie. So there is one loop structure, a tile of one weight row against nt <= 4 tokens, in
 * which each token's accumulation is the same sequence of float operations whatever nt is: nt
 * only decides how many tokens share one unpacking of the weights. Rows are never split between
 * threads, so the thread count cannot change a result either.
 *
 * Layout of a step: two blocks (64 weights) fill one 512-bit register, in the order of the
 * activations [lo0, hi0, lo1, hi1] (16 bytes each), and one vpdpbusd gives 8 partial sums per
 * block. Pairs alternate between two accumulators so that one chain of dependent FMAs does not
 * bound the loop; an odd last block is done on 256 bits. */
#include <immintrin.h>

#define KN_DOT_U8S8(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (u), (s))
#define KN_X86_OWN_QUANT
#include "kernels/x86_body.h"

#define KN_VNNI 1
#define KN_X8_ZMM 1
#define KN_DPBUSD(acc, u, s) _mm256_dpbusd_epi32((acc), (u), (s))
#include "kernels/x86_x8.h"

/* The scale loads below take a block's first 4 bytes as one word: d (and Q4_1's m) must lead
 * the block, as they do in GGUF. */
_Static_assert(offsetof(kn_block_q4_0, d) == 0 && offsetof(kn_block_q8_0, d) == 0 &&
                   offsetof(kn_block_q4_1, d) == 0 && offsetof(kn_block_q4_1, m) == sizeof(kn_f16),
               "the F16 scales open the block");

static inline uint32_t load_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Two consecutive floats in the low half. */
KN_AI __m128 load2_f32(const float *p) {
    return _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(const void *)p));
}

/* 16 nibble bytes of each of two blocks -> [lo0, hi0, lo1, hi1] as u8 0..15. Broadcast loads
 * and a blend rather than inserts and a lane shuffle: port 5, which every 512-bit operation
 * here competes for, is what bounds a decode step. */
KN_AI __m512i unpack_pair(const uint8_t *n0, const uint8_t *n1) {
    __m512i b0 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)n0));
    __m512i b1 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)n1));
    __m512i z = _mm512_mask_blend_epi64(0xF0, b0, b1);
    z = _mm512_srlv_epi64(z, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0));
    return _mm512_and_si512(z, _mm512_set1_epi8(0x0F));
}

/* The weights of a pair as the u8 operand of vpdpbusd, plus, for the signed types, the mask of
 * negative weights whose sign moves onto the activations (AVX-512 has no vpsignb). */
typedef struct pair_w {
    __m512i u;
    __mmask64 neg;
    __m128 dm;      /* Q4_0 / Q8_0: [d0, d1, (unused)]; Q4_1: [d0, m0, d1, m1] */
} pair_w;

KN_AI pair_w load_pair(const uint32_t type, const uint8_t *p0, const uint8_t *p1) {
    pair_w w;
    w.neg = 0;
    if (type == KN_TYPE_Q4_1) {
        w.u = unpack_pair(KN_AT(p0, kn_block_q4_1, qs), KN_AT(p1, kn_block_q4_1, qs));
        w.dm = _mm_cvtph_ps(_mm_blend_epi32(_mm_set1_epi32((int)load_u32(p0)),
                                            _mm_set1_epi32((int)load_u32(p1)), 0x2));
        return w;
    }
    __m512i s;
    if (type == KN_TYPE_Q4_0) {
        s = _mm512_sub_epi8(unpack_pair(KN_AT(p0, kn_block_q4_0, qs), KN_AT(p1, kn_block_q4_0, qs)),
                            _mm512_set1_epi8(8));
    } else {
        const uint8_t *q0 = KN_AT(p0, kn_block_q8_0, qs), *q1 = KN_AT(p1, kn_block_q8_0, qs);
        s = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)q0)),
            _mm256_loadu_si256((const __m256i *)(const void *)q1), 1);
    }
    w.neg = _mm512_movepi8_mask(s);
    w.u = _mm512_abs_epi8(s); /* -128 becomes 128 as u8, which is right */
    /* d1 as the upper half of the 4 bytes before it (still inside the row) */
    w.dm = _mm_cvtph_ps(_mm_blend_epi16(_mm_set1_epi32((int)load_u32(p0)),
                                        _mm_set1_epi32((int)load_u32(p1 - 2)), 0x2));
    return w;
}

/* One token's share of a pair: acc += scale * dot, and for Q4_1 mins += [., m0*s0, ., m1*s1]. */
KN_AI void pair_token(const uint32_t type, const pair_w *w, const int8_t *aq, const float *ad,
                      const float *as, __m512 *acc, __m128 *mins) {
    __m512i av = _mm512_loadu_si512((const void *)aq);
    if (type != KN_TYPE_Q4_1) av = _mm512_mask_sub_epi8(av, w->neg, _mm512_setzero_si512(), av);
    __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w->u, av);
    __m512 scale;
    if (type == KN_TYPE_Q4_1) {
        __m128 prod = _mm_mul_ps(w->dm, _mm_unpacklo_ps(load2_f32(ad), load2_f32(as)));
        *mins = _mm_add_ps(*mins, prod);
        scale = _mm512_permutexvar_ps(
            _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0),
            _mm512_castps128_ps512(prod));
    } else {
        __m128 prod = _mm_mul_ps(w->dm, load2_f32(ad));
        scale = _mm512_permutexvar_ps(
            _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
            _mm512_castps128_ps512(prod));
    }
    *acc = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(dot), *acc);
}

/* A lone last block on 256 bits. */
KN_AI float tail_block(const uint32_t type, const uint8_t *p, const int8_t *aq, float ad,
                       float as) {
    __m256i av = _mm256_loadu_si256((const __m256i *)(const void *)aq);
    if (type == KN_TYPE_Q4_1) {
        __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(),
                                          unpack_nibbles(KN_AT(p, kn_block_q4_1, qs)), av);
        return kn_f16c_at(KN_AT(p, kn_block_q4_1, d)) * ad * hsum8(_mm256_cvtepi32_ps(dot)) +
               kn_f16c_at(KN_AT(p, kn_block_q4_1, m)) * as;
    }
    __m256i q = type == KN_TYPE_Q4_0
                    ? _mm256_sub_epi8(unpack_nibbles(KN_AT(p, kn_block_q4_0, qs)),
                                      _mm256_set1_epi8(8))
                    : _mm256_loadu_si256((const __m256i *)(const void *)KN_AT(p, kn_block_q8_0, qs));
    __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(q, q),
                                      _mm256_sign_epi8(av, q));
    return kn_f16c_at(KN_AT(p, kn_block_q4_0, d)) * ad * hsum8(_mm256_cvtepi32_ps(dot));
}

KN_AI size_t block_bytes(const uint32_t type) {
    return type == KN_TYPE_Q4_0   ? sizeof(kn_block_q4_0)
           : type == KN_TYPE_Q4_1 ? sizeof(kn_block_q4_1)
                                  : sizeof(kn_block_q8_0);
}

/* Row r against tokens t0 .. t0 + nt - 1. */
KN_AI void tile(const uint32_t type, const uint8_t *wr, int nb, const kn_act *a, int t0,
                const int nt, float *y, int ldy, int r) {
    const size_t bb = block_bytes(type);
    int sb = a->stride / KN_QBLOCK;
    const int8_t *aq[4];
    const float *ad[4], *as[4];
    __m512 acc0[4], acc1[4];
    __m128 mn0[4], mn1[4];
    for (int t = 0; t < nt; t++) {
        size_t tt = (size_t)(t0 + t);
        aq[t] = a->q + tt * a->stride;
        ad[t] = a->d + tt * sb;
        as[t] = a->s + tt * sb;
        acc0[t] = acc1[t] = _mm512_setzero_ps();
        mn0[t] = mn1[t] = _mm_setzero_ps();
    }
    int b = 0;
    for (; b + 4 <= nb; b += 4) {
        const uint8_t *p = wr + (size_t)b * bb;
        _mm_prefetch((const char *)p + KN_PREFETCH, _MM_HINT_T0);
        _mm_prefetch((const char *)p + KN_PREFETCH + 64, _MM_HINT_T0);
        pair_w w0 = load_pair(type, p, p + bb), w1 = load_pair(type, p + 2 * bb, p + 3 * bb);
        for (int t = 0; t < nt; t++) {
            pair_token(type, &w0, aq[t] + b * KN_QBLOCK, ad[t] + b, as[t] + b, &acc0[t], &mn0[t]);
            pair_token(type, &w1, aq[t] + (b + 2) * KN_QBLOCK, ad[t] + b + 2, as[t] + b + 2,
                       &acc1[t], &mn1[t]);
        }
    }
    if (b + 2 <= nb) {
        const uint8_t *p = wr + (size_t)b * bb;
        pair_w w0 = load_pair(type, p, p + bb);
        for (int t = 0; t < nt; t++)
            pair_token(type, &w0, aq[t] + b * KN_QBLOCK, ad[t] + b, as[t] + b, &acc0[t], &mn0[t]);
        b += 2;
    }
    for (int t = 0; t < nt; t++) {
        float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0[t], acc1[t]));
        if (type == KN_TYPE_Q4_1) {
            /* lanes 1 and 3 hold the offsets' share */
            __m128 m = _mm_add_ps(mn0[t], mn1[t]);
            sum += _mm_cvtss_f32(_mm_shuffle_ps(m, m, 1)) + _mm_cvtss_f32(_mm_shuffle_ps(m, m, 3));
        }
        if (b < nb)
            sum += tail_block(type, wr + (size_t)b * bb, aq[t] + b * KN_QBLOCK, ad[t][b],
                              as[t][b]);
        y[(size_t)(t0 + t) * ldy + r] = sum;
    }
}

/* Rows x tokens in tiles of 1 x 4; the constant nt of each call gives each remainder its own
 * specialized copy. */
KN_AI void rows_q(const uint32_t type, const kn_wmat *w, int r0, int r1, const kn_act *a,
                  int n_tok, float *y, int ldy) {
    int nb = w->n_in / KN_QBLOCK;
    for (int r = r0; r < r1; r++) {
        const uint8_t *wr = w->data + (size_t)r * w->row_bytes;
        int t = 0;
        for (; t + 4 <= n_tok; t += 4) tile(type, wr, nb, a, t, 4, y, ldy, r);
        switch (n_tok - t) {
        case 3: tile(type, wr, nb, a, t, 3, y, ldy, r); break;
        case 2: tile(type, wr, nb, a, t, 2, y, ldy, r); break;
        case 1: tile(type, wr, nb, a, t, 1, y, ldy, r); break;
        default: break;
        }
    }
}

static void rows_q4_0_512(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a,
                          int n_tok, float *y, int ldy) {
    (void)x;
    rows_q(KN_TYPE_Q4_0, w, r0, r1, a, n_tok, y, ldy);
}

static void rows_q4_1_512(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a,
                          int n_tok, float *y, int ldy) {
    (void)x;
    rows_q(KN_TYPE_Q4_1, w, r0, r1, a, n_tok, y, ldy);
}

static void rows_q8_0_512(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a,
                          int n_tok, float *y, int ldy) {
    (void)x;
    rows_q(KN_TYPE_Q8_0, w, r0, r1, a, n_tok, y, ldy);
}

static const kn_kernels k_avx512 = {
    .name = "avx512vnni",
    .rows = {
        [KN_TYPE_F32] = rows_f32,
        [KN_TYPE_F16] = rows_f16,
        [KN_TYPE_Q4_0] = rows_q4_0_512,
        [KN_TYPE_Q4_1] = rows_q4_1_512,
        [KN_TYPE_Q8_0] = rows_q8_0_512,
        [KN_TYPE_Q4_K] = kn_ref_rows_q4_k,
        [KN_TYPE_Q5_K] = kn_ref_rows_q5_k,
        [KN_TYPE_Q6_K] = kn_ref_rows_q6_k,
    },
    KN_X8_TABLE,
    .quantize = kn_quantize_avx512,
    .quantize_k = kn_quantize_k_avx2,
    .attn = kn_attn_avx512,
    .attn_f16 = kn_attn_avx512_f16,
    .attn_q8 = kn_attn_avx512_q8,
    .swiglu = kn_swiglu_avx2,
    .to_f16 = kn_to_f16_avx2,
};

const kn_kernels *kn_kernels_avx512_table(void) { return &k_avx512; }
