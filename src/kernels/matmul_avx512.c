/* matmul_avx512.c — AVX-512 VNNI row products.
 *
 * Prefill tiles (several tokens per weight row) reuse the AVX2-class bodies of x86_body.h with
 * each block's u8 x s8 dot done by one vpdpbusd on a 256-bit register (AVX512VL). The decode
 * case (one token), which is what generation time is made of, has its own loops for Q4_1 and
 * Q8_0 that take two blocks per 512-bit register, halving the vector work per weight byte. */
#include <immintrin.h>

#define KN_DOT_U8S8(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (u), (s))

#include "kernels/x86_body.h"

static inline uint32_t load_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint16_t load_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* One Q4_1 row against one token, blocks in pairs. */
static float row1_q4_1(const uint8_t *wr, int nb, const int8_t *aq, const float *ad,
                       const float *as) {
    /* 128-bit lanes come out as [lo0, lo1, hi0, hi1]; the activations are [lo0, hi0, lo1, hi1]. */
    const __m512i mask = _mm512_set1_epi8(0x0F);
    const __m512i bcast = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512 acc = _mm512_setzero_ps();
    __m128 mins = _mm_setzero_ps();
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        const uint8_t *p0 = wr + (size_t)b * 20, *p1 = p0 + 20;
        _mm_prefetch((const char *)p0 + KN_PREFETCH, _MM_HINT_T0);
        __m256i r = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(p0 + 4))),
            _mm_loadu_si128((const __m128i *)(const void *)(p1 + 4)), 1);
        __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(r), _mm256_srli_epi16(r, 4), 1);
        z = _mm512_shuffle_i64x2(_mm512_and_si512(z, mask), _mm512_and_si512(z, mask),
                                 _MM_SHUFFLE(3, 1, 2, 0));
        __m512i av = _mm512_loadu_si512((const void *)(aq + b * KN_QBLOCK));
        __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), z, av);
        /* [d0, m0, d1, m1] x [da0, sa0, da1, sa1] */
        __m128 dm = _mm_cvtph_ps(_mm_set_epi32(0, 0, (int)load_u32(p1), (int)load_u32(p0)));
        __m128 das = _mm_unpacklo_ps(_mm_castpd_ps(_mm_load_sd((const double *)(const void *)(ad + b))),
                                     _mm_castpd_ps(_mm_load_sd((const double *)(const void *)(as + b))));
        __m128 prod = _mm_mul_ps(dm, das);
        mins = _mm_add_ps(mins, prod);
        __m512 scale = _mm512_permutexvar_ps(bcast, _mm512_castps128_ps512(prod));
        acc = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(dot), acc);
    }
    /* lanes 1 and 3 of mins hold the offsets' share */
    float sum = _mm512_reduce_add_ps(acc) + _mm_cvtss_f32(_mm_shuffle_ps(mins, mins, 1)) +
                _mm_cvtss_f32(_mm_shuffle_ps(mins, mins, 3));
    if (b < nb) {
        const uint8_t *p = wr + (size_t)b * 20;
        __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), unpack_nibbles(p + 4),
                                          _mm256_loadu_si256((const __m256i *)(const void *)(aq + b * KN_QBLOCK)));
        sum += f16_at(p) * ad[b] * hsum8(_mm256_cvtepi32_ps(dot)) + f16_at(p + 2) * as[b];
    }
    return sum;
}

/* One Q8_0 row against one token: |w| as u8 times a with w's sign, two blocks per register. */
static float row1_q8_0(const uint8_t *wr, int nb, const int8_t *aq, const float *ad) {
    const __m512i bcast = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512 acc = _mm512_setzero_ps();
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        const uint8_t *p0 = wr + (size_t)b * 34, *p1 = p0 + 34;
        _mm_prefetch((const char *)p0 + KN_PREFETCH, _MM_HINT_T0);
        _mm_prefetch((const char *)p0 + KN_PREFETCH + 64, _MM_HINT_T0);
        __m512i w = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)(p0 + 2))),
            _mm256_loadu_si256((const __m256i *)(const void *)(p1 + 2)), 1);
        __m512i av = _mm512_loadu_si512((const void *)(aq + b * KN_QBLOCK));
        __mmask64 neg = _mm512_movepi8_mask(w);
        __m512i sa = _mm512_mask_sub_epi8(av, neg, _mm512_setzero_si512(), av);
        __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(w), sa);
        __m128 d = _mm_cvtph_ps(_mm_set_epi16(0, 0, 0, 0, 0, 0, (short)load_u16(p1), (short)load_u16(p0)));
        __m128 prod = _mm_mul_ps(d, _mm_castpd_ps(_mm_load_sd((const double *)(const void *)(ad + b))));
        __m512 scale = _mm512_permutexvar_ps(bcast, _mm512_castps128_ps512(prod));
        acc = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(dot), acc);
    }
    float sum = _mm512_reduce_add_ps(acc);
    if (b < nb) {
        const uint8_t *p = wr + (size_t)b * 34;
        __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)(p + 2));
        __m256i av = _mm256_loadu_si256((const __m256i *)(const void *)(aq + b * KN_QBLOCK));
        __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(q, q),
                                          _mm256_sign_epi8(av, q));
        sum += f16_at(p) * ad[b] * hsum8(_mm256_cvtepi32_ps(dot));
    }
    return sum;
}

static void rows_q4_1_512(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a,
                          int n_tok, float *y, int ldy) {
    if (n_tok != 1) {
        rows_q4_1(w, r0, r1, x, a, n_tok, y, ldy);
        return;
    }
    int nb = w->n_in / KN_QBLOCK;
    for (int r = r0; r < r1; r++)
        y[r] = row1_q4_1(w->data + (size_t)r * w->row_bytes, nb, a->q, a->d, a->s);
}

static void rows_q8_0_512(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a,
                          int n_tok, float *y, int ldy) {
    if (n_tok != 1) {
        rows_q8_0(w, r0, r1, x, a, n_tok, y, ldy);
        return;
    }
    int nb = w->n_in / KN_QBLOCK;
    for (int r = r0; r < r1; r++)
        y[r] = row1_q8_0(w->data + (size_t)r * w->row_bytes, nb, a->q, a->d);
}

static const kn_kernels k_avx512 = {
    .name = "avx512vnni",
    .rows = {
        [KN_TYPE_F32] = rows_f32,
        [KN_TYPE_F16] = rows_f16,
        [KN_TYPE_Q4_0] = rows_q4_0,
        [KN_TYPE_Q4_1] = rows_q4_1_512,
        [KN_TYPE_Q8_0] = rows_q8_0_512,
    },
};

const kn_kernels *kn_kernels_avx512_table(void) { return &k_avx512; }
