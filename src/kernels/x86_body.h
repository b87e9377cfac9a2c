/* x86_body.h — the AVX2-class row products, written once and included by matmul_avx2.c and
 * matmul_avx512.c, which differ only in how a block's u8 x s8 dot is formed (KN_DOT_U8S8:
 * maddubs + madd on AVX2, one vpdpbusd on AVX-512 VNNI) and in the table name.
 *
 * A block of 32 is one 256-bit vector. Each row is multiplied with up to 4 tokens at once so a
 * weight block is unpacked once per 4 tokens (prefill); a decode step is the 1-token case.
 * Signed x signed products use the sign trick (|w| as u8 times sign(w) * a as s8), so every
 * block's integer dot is exact; only the float accumulation order differs from ref.c. Each
 * token has its own accumulators and the same steps whether the tile holds 1 or 4 tokens, so a
 * result does not depend on the batch (see kernels.h). */
#ifndef KN_DOT_U8S8
#error "define KN_DOT_U8S8 before including x86_body.h"
#endif

#include <immintrin.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/f16_x86.h"
#include "kernels/kernels_impl.h"
#include "quant/blocks.h"

#define KN_AI __attribute__((always_inline)) static inline

/* Weights stream from memory once per token; hardware prefetch alone leaves the loop waiting,
 * so each block asks for the bytes this far ahead (rows are contiguous, so crossing into the
 * next row is useful too). */
#ifndef KN_PREFETCH
#define KN_PREFETCH 4096
#endif

KN_AI float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}


/* 16 bytes of nibbles -> 32 bytes: low nibbles (elements 0..15) then high ones (16..31). */
KN_AI __m256i unpack_nibbles(const uint8_t *p) {
    __m128i raw = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(raw),
                                           _mm_srli_epi16(raw, 4), 1);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

/* One block of one weight row against nt tokens; acc (and mins for Q4_1) are per token. */
KN_AI void step_q4_0(const uint8_t *blk, const kn_act *a, int t0, const int nt, int b, int sb,
                     __m256 *acc, float *mins) {
    (void)mins;
    _mm_prefetch((const char *)blk + KN_PREFETCH, _MM_HINT_T0);
    float dw = kn_f16c_at(KN_AT(blk, kn_block_q4_0, d));
    __m256i q = _mm256_sub_epi8(unpack_nibbles(KN_AT(blk, kn_block_q4_0, qs)), _mm256_set1_epi8(8));
    __m256i aq = _mm256_sign_epi8(q, q);
    for (int t = 0; t < nt; t++) {
        size_t tt = (size_t)(t0 + t);
        __m256i av = _mm256_loadu_si256(
            (const __m256i *)(const void *)(a->q + tt * a->stride + b * KN_QBLOCK));
        __m256i p = KN_DOT_U8S8(aq, _mm256_sign_epi8(av, q));
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * a->d[tt * sb + b]), _mm256_cvtepi32_ps(p),
                                 acc[t]);
    }
}

KN_AI void step_q4_1(const uint8_t *blk, const kn_act *a, int t0, const int nt, int b, int sb,
                     __m256 *acc, float *mins) {
    _mm_prefetch((const char *)blk + KN_PREFETCH, _MM_HINT_T0);
    float dw = kn_f16c_at(KN_AT(blk, kn_block_q4_1, d)), mw = kn_f16c_at(KN_AT(blk, kn_block_q4_1, m));
    __m256i q = unpack_nibbles(KN_AT(blk, kn_block_q4_1, qs));
    for (int t = 0; t < nt; t++) {
        size_t tt = (size_t)(t0 + t);
        __m256i av = _mm256_loadu_si256(
            (const __m256i *)(const void *)(a->q + tt * a->stride + b * KN_QBLOCK));
        __m256i p = KN_DOT_U8S8(q, av);
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * a->d[tt * sb + b]), _mm256_cvtepi32_ps(p),
                                 acc[t]);
        mins[t] += mw * a->s[tt * sb + b];
    }
}

KN_AI void step_q8_0(const uint8_t *blk, const kn_act *a, int t0, const int nt, int b, int sb,
                     __m256 *acc, float *mins) {
    (void)mins;
    _mm_prefetch((const char *)blk + KN_PREFETCH, _MM_HINT_T0);
    float dw = kn_f16c_at(KN_AT(blk, kn_block_q8_0, d));
    __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)KN_AT(blk, kn_block_q8_0, qs));
    __m256i aq = _mm256_sign_epi8(q, q);
    for (int t = 0; t < nt; t++) {
        size_t tt = (size_t)(t0 + t);
        __m256i av = _mm256_loadu_si256(
            (const __m256i *)(const void *)(a->q + tt * a->stride + b * KN_QBLOCK));
        __m256i p = KN_DOT_U8S8(aq, _mm256_sign_epi8(av, q));
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * a->d[tt * sb + b]), _mm256_cvtepi32_ps(p),
                                 acc[t]);
    }
}

/* A row against nt tokens. Even and odd blocks go to separate accumulators: one chain of
 * dependent FMAs (4 cycles each) would otherwise bound the loop. */
#define KN_TILE(NAME, STEP, BB)                                                                 \
    KN_AI void NAME(const uint8_t *wr, int nb, const kn_act *a, int t0, const int nt, float *y, \
                    int ldy, int r) {                                                           \
        int sb = a->stride / KN_QBLOCK;                                                         \
        __m256 acc0[4], acc1[4];                                                                \
        float m0[4] = {0, 0, 0, 0}, m1[4] = {0, 0, 0, 0};                                       \
        for (int t = 0; t < 4; t++) acc0[t] = acc1[t] = _mm256_setzero_ps();                    \
        int b = 0;                                                                              \
        for (; b + 2 <= nb; b += 2) {                                                           \
            STEP(wr + (size_t)b * BB, a, t0, nt, b, sb, acc0, m0);                              \
            STEP(wr + (size_t)(b + 1) * BB, a, t0, nt, b + 1, sb, acc1, m1);                    \
        }                                                                                       \
        if (b < nb) STEP(wr + (size_t)b * BB, a, t0, nt, b, sb, acc0, m0);                      \
        for (int t = 0; t < nt; t++)                                                            \
            y[(size_t)(t0 + t) * ldy + r] = hsum8(_mm256_add_ps(acc0[t], acc1[t])) +            \
                                            (m0[t] + m1[t]);                                    \
    }

KN_TILE(tile_q4_0, step_q4_0, sizeof(kn_block_q4_0))
KN_TILE(tile_q4_1, step_q4_1, sizeof(kn_block_q4_1))
KN_TILE(tile_q8_0, step_q8_0, sizeof(kn_block_q8_0))

/* Expands one rows function per type: rows x tokens in tiles of 1 x 4 (the remainder 1..3 each
 * get their own specialized copy through the constant nt). */
#define KN_ROWS_Q(NAME, TILE)                                                                   \
    static void NAME(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a,       \
                     int n_tok, float *y, int ldy) {                                           \
        (void)x;                                                                                \
        int nb = w->n_in / KN_QBLOCK;                                                          \
        for (int r = r0; r < r1; r++) {                                                         \
            const uint8_t *wr = w->data + (size_t)r * w->row_bytes;                             \
            int t = 0;                                                                          \
            for (; t + 4 <= n_tok; t += 4) TILE(wr, nb, a, t, 4, y, ldy, r);                    \
            switch (n_tok - t) {                                                                \
            case 3: TILE(wr, nb, a, t, 3, y, ldy, r); break;                                    \
            case 2: TILE(wr, nb, a, t, 2, y, ldy, r); break;                                    \
            case 1: TILE(wr, nb, a, t, 1, y, ldy, r); break;                                    \
            default: break;                                                                     \
            }                                                                                   \
        }                                                                                       \
    }

/* A file with its own quantized products (matmul_avx512.c) defines KN_X86_OWN_QUANT and takes
 * only the float ones and the helpers from here. */
#ifndef KN_X86_OWN_QUANT
KN_ROWS_Q(rows_q4_0, tile_q4_0)
KN_ROWS_Q(rows_q4_1, tile_q4_1)
KN_ROWS_Q(rows_q8_0, tile_q8_0)
#endif


KN_AI __m256 load8_f32(const uint8_t *p) { return _mm256_loadu_ps((const float *)(const void *)p); }

#define KN_ROWS_F(NAME, LOAD, ESIZE, SCALAR)                                                     \
    static void NAME(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a,       \
                     int n_tok, float *y, int ldy) {                                           \
        (void)a;                                                                                \
        int n = w->n_in;                                                                        \
        for (int r = r0; r < r1; r++) {                                                         \
            const uint8_t *wr = w->data + (size_t)r * w->row_bytes;                             \
            for (int t = 0; t < n_tok; t++) {                                                   \
                const float *xt = x + (size_t)t * n;                                            \
                __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();                      \
                int i = 0;                                                                      \
                for (; i + 16 <= n; i += 16) {                                                  \
                    s0 = _mm256_fmadd_ps(LOAD(wr + (size_t)i * ESIZE), _mm256_loadu_ps(xt + i), s0); \
                    s1 = _mm256_fmadd_ps(LOAD(wr + (size_t)(i + 8) * ESIZE),                   \
                                         _mm256_loadu_ps(xt + i + 8), s1);                      \
                }                                                                               \
                for (; i + 8 <= n; i += 8)                                                      \
                    s0 = _mm256_fmadd_ps(LOAD(wr + (size_t)i * ESIZE), _mm256_loadu_ps(xt + i), s0); \
                float s = hsum8(_mm256_add_ps(s0, s1));                                         \
                for (; i < n; i++) s += SCALAR(wr + (size_t)i * ESIZE) * xt[i];                 \
                y[(size_t)t * ldy + r] = s;                                                     \
            }                                                                                   \
        }                                                                                       \
    }

KN_AI float f32_at(const uint8_t *p) {
    float f;
    memcpy(&f, p, 4);
    return f;
}

KN_ROWS_F(rows_f32, load8_f32, sizeof(float), f32_at)
KN_ROWS_F(rows_f16, kn_f16c_x8, sizeof(kn_f16), kn_f16c_at)

/* The fields of a table that this file provides: the GGUF-layout products (the K-quants' are
 * the reference ones: the model always repacks them for these tables), and the AVX2
 * quantizers and attention (ops_avx2.c). */
#define KN_TABLE_FIELDS(NAME_STR, ATTN_Q8)                                                               \
    .name = NAME_STR,                                                                           \
    .rows = {                                                                                   \
        [KN_TYPE_F32] = rows_f32,                                                               \
        [KN_TYPE_F16] = rows_f16,                                                               \
        [KN_TYPE_Q4_0] = rows_q4_0,                                                             \
        [KN_TYPE_Q4_1] = rows_q4_1,                                                             \
        [KN_TYPE_Q8_0] = rows_q8_0,                                                             \
        [KN_TYPE_Q4_K] = kn_ref_rows_q4_k,                                                      \
        [KN_TYPE_Q5_K] = kn_ref_rows_q5_k,                                                      \
        [KN_TYPE_Q6_K] = kn_ref_rows_q6_k,                                                      \
    },                                                                                          \
    .quantize = kn_quantize_avx2,                                                               \
    .quantize_k = kn_quantize_k_avx2,                                                           \
    .attn = kn_attn_avx2,                                                                       \
    .attn_f16 = kn_attn_avx2_f16,                                                               \
    .attn_q8 = ATTN_Q8,                                                                 \
    .swiglu = kn_swiglu_avx2,                                                                   \
    .to_f16 = kn_to_f16_avx2
