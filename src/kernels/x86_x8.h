/* x86_x8.h — products of weights repacked in groups of 8 rows (KN_LAYOUT_X8, see pack.c) with
 * quantized activations, on 256-bit registers. Included by matmul_avx2.c (KN_VNNI 0:
 * vpmaddubsw + vpmaddwd), matmul_avxvnni.c and matmul_avx512.c (KN_VNNI 1: vpdpbusd, VEX or
 * EVEX), which set KN_DPBUSD accordingly.
 *
 * Shape of the work. A group of 8 rows is multiplied with a tile of nt <= KN_X8_NT tokens: each
 * 32-byte weight vector is loaded and unpacked once per tile and meets each token through a
 * broadcast of 4 activation bytes; lane r of every accumulator belongs to row 8g + r, so a
 * block's 8 row sums need no horizontal reduction and the 8 rows' scales are one load. A decode
 * step is the tile of 1; prefill runs tiles of KN_X8_NT (a rows x tokens register block).
 *
 * Integers. Weights are unsigned (Q4: 0..15, Q5: 0..31, Q6: 0..63; Q8_0 keeps its sign and
 * moves it onto the activation), activations in -128..127 (|q| <= 127 from the quantizers).
 * Without VNNI, vpmaddubsw gives pair sums of at most 2 * 63 * 127 = 16002 (Q6), 7874 (Q5),
 * 3810 (Q4), so up to 2, 4 or 8 of them are summed in 16 bits before vpmaddwd widens them (with
 * ones, or with the sub-block scales of the K-quants). With VNNI, vpdpbusd accumulates in 32
 * bits directly. Either way each block's integer result is exact, so variants differ only in
 * float rounding. The unsigned offset of Q4_0 (8) and Q6_K (32) is taken off once per block
 * with the activations' integer sums.
 *
 * Batch invariance: every token of a tile has its own accumulators and the same sequence of
 * operations whatever nt is, and the lanes of a group never mix, so neither the tile size nor
 * the rows a thread takes change a bit. */
#ifndef KN_VNNI
#error "define KN_VNNI (and KN_DPBUSD when 1) before including x86_x8.h"
#endif

#include <immintrin.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/f16_x86.h"
#include "kernels/kernels_impl.h"
#include "quant/blocks.h"

#ifndef KN_X8_NT
#define KN_X8_NT 4
#endif
/* Bytes ahead of the current block that each block asks the hardware to fetch; the groups of
 * a thread's rows are contiguous, so this runs on into the next group. */
#ifndef KN_X8_PREFETCH
#define KN_X8_PREFETCH 2048
#endif

#define KN_X8_AI __attribute__((always_inline)) static inline

KN_X8_AI __m256i x8_bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

KN_X8_AI __m256i x8_load(const uint8_t *p) {
    return _mm256_loadu_si256((const __m256i *)(const void *)p);
}


/* ((h >> pos) & 1) << 4 in every byte (Q5_K's fifth bit); pos is a constant. Shifting 16-bit
 * lanes moves bits across the byte boundary, but only into bits the mask drops. */
KN_X8_AI __m256i x8_bit4(__m256i h, const int pos) {
    __m256i t = pos <= 4 ? _mm256_slli_epi16(h, 4 - pos) : _mm256_srli_epi16(h, pos - 4);
    return _mm256_and_si256(t, _mm256_set1_epi8(0x10));
}

/* ((h >> pos) & 3) << 4 in every byte (Q6_K's top two bits). */
KN_X8_AI __m256i x8_bits45(__m256i h, const int pos) {
    __m256i t = pos <= 4 ? _mm256_slli_epi16(h, 4 - pos) : _mm256_srli_epi16(h, pos - 4);
    return _mm256_and_si256(t, _mm256_set1_epi8(0x30));
}

/* Byte scales s[0..7] (one per row) as 16 x i16 [s0, s0, s1, s1, ...], for vpmaddwd. */
KN_X8_AI __m256i x8_scale_dup16(const uint8_t *s) {
    __m128i b = _mm_loadl_epi64((const __m128i *)(const void *)s);
    return _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(b, b));
}

/* Independent integer accumulators per token. A chain of vpdpbusd into one register waits 5
 * cycles per step, so a 1-token tile (decode) spreads each block over 4 of them and wider
 * tiles, which have a chain per token already, over 2. Integer sums are exact in any order,
 * so the split changes no bit. Without VNNI, vpmaddubsw results are independent and the
 * 16-bit adds wait one cycle: one accumulator. */
#if KN_VNNI
#define X8_NACC 4
#else
#define X8_NACC 1
#endif

KN_X8_AI int x8_acc(const int nt, int step) { return nt == 1 ? step % 4 : step % 2; }

KN_X8_AI __m256i x8_sum_acc(const __m256i *s, const int nt) {
    __m256i r = _mm256_add_epi32(s[0], s[1]);
    if (nt == 1) r = _mm256_add_epi32(r, _mm256_add_epi32(s[2], s[3]));
    return r;
}

/* Quarter p of a super-block of bb bytes, KN_X8_PREFETCH ahead (unrolled: a loop of
 * prefetches costs more instructions than the prefetches). */
KN_X8_AI void x8_prefetch_part(const uint8_t *bp, const size_t bb, int p) {
    const char *q = (const char *)bp + KN_X8_PREFETCH + (size_t)p * (bb / 4);
    for (size_t off = 0; off < bb / 4 + 63; off += 64) _mm_prefetch(q + off, _MM_HINT_T0);
}

/* Stores lanes [lo, hi) of v at yr[lo..hi). */
KN_X8_AI void x8_store(float *yr, __m256 v, int lo, int hi) {
    if (lo == 0 && hi == KN_GROUP) {
        _mm256_storeu_ps(yr, v);
        return;
    }
    float tmp[KN_GROUP];
    _mm256_storeu_ps(tmp, v);
    for (int i = lo; i < hi; i++) yr[i] = tmp[i];
}

/* Where token t0 + t's activations are. */
typedef struct x8_tok {
    const int8_t *q[KN_X8_NT];
    const float *d[KN_X8_NT];
    const float *s[KN_X8_NT];
    const int16_t *bs[KN_X8_NT];
    const int32_t *q4off[KN_X8_NT];
} x8_tok;

KN_X8_AI void x8_tok_q8_0(x8_tok *tk, const kn_act *a, int t0, const int nt) {
    int sb = a->stride / KN_QBLOCK;
    for (int t = 0; t < nt; t++) {
        size_t tt = (size_t)(t0 + t);
        tk->q[t] = a->q + tt * a->stride;
        tk->d[t] = a->d + tt * sb;
        tk->s[t] = a->s + tt * sb;
        tk->bs[t] = NULL;
        tk->q4off[t] = a->q4off ? a->q4off + tt * sb : NULL;
    }
}

/* For the K-quants: bs holds the sums per 32 for Q4_K / Q5_K (bsk32), per 16 for Q6_K (bsk). */
KN_X8_AI void x8_tok_q8_k(x8_tok *tk, const kn_act *a, int t0, const int nt, const bool per16) {
    for (int t = 0; t < nt; t++) {
        size_t tt = (size_t)(t0 + t);
        tk->q[t] = a->qk + tt * a->stride;
        tk->d[t] = a->dk + tt * (a->stride / KN_KBLOCK);
        tk->s[t] = NULL;
        tk->bs[t] = per16 ? a->bsk + tt * (a->stride / 16) : a->bsk32 + tt * (a->stride / 32);
        tk->q4off[t] = NULL;
    }
}

/* ---- Q4_0, Q4_1: 32-element blocks of nibbles ---- */

KN_X8_AI void x8_tile_q4(const uint32_t type, const uint8_t *gp, int nb, const kn_act *a, int t0,
                         const int nt, float *y, int ldy, int row0, int lo, int hi) {
    const size_t bb = type == KN_TYPE_Q4_0 ? sizeof(kn_x8_q4_0) : sizeof(kn_x8_q4_1);
    const size_t qoff = type == KN_TYPE_Q4_0 ? offsetof(kn_x8_q4_0, qs) : offsetof(kn_x8_q4_1, qs);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    x8_tok tk;
    x8_tok_q8_0(&tk, a, t0, nt);
    __m256 acc[KN_X8_NT];
    for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
#pragma GCC unroll 2
    for (int b = 0; b < nb; b++) {
        const uint8_t *bp = gp + (size_t)b * bb;
        _mm_prefetch((const char *)bp + KN_X8_PREFETCH, _MM_HINT_T0);
        _mm_prefetch((const char *)bp + KN_X8_PREFETCH + 64, _MM_HINT_T0);
        /* the block's 8 weight vectors stay in registers while each token passes through */
        __m256i w[8];
        for (int v = 0; v < 4; v++) {
            __m256i raw = x8_load(bp + qoff + 32 * v);
            w[v] = _mm256_and_si256(raw, m4);
            w[4 + v] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
        }
        __m256 dw = kn_f16c_x8(KN_AT(bp, kn_x8_q4_0, d)); /* Q4_1: the same offset */
        __m256 mw = type == KN_TYPE_Q4_1 ? kn_f16c_x8(KN_AT(bp, kn_x8_q4_1, m))
                                         : _mm256_setzero_ps();
        for (int t = 0; t < nt; t++) {
            const int8_t *aq = tk.q[t] + b * KN_QBLOCK;
#if KN_VNNI
            __m256i s[X8_NACC];
            for (int k = 0; k < X8_NACC; k++)
                /* Q4_0's offset is where the sum starts */
                s[k] = k == 0 && type == KN_TYPE_Q4_0 ? _mm256_set1_epi32(tk.q4off[t][b])
                                                      : _mm256_setzero_si256();
            for (int v = 0; v < 4; v++) {
                const int k0 = x8_acc(nt, 2 * v), k1 = x8_acc(nt, 2 * v + 1);
                s[k0] = KN_DPBUSD(s[k0], w[v], x8_bcast4(aq + 4 * v));
                s[k1] = KN_DPBUSD(s[k1], w[4 + v], x8_bcast4(aq + 16 + 4 * v));
            }
            __m256i s32 = x8_sum_acc(s, nt);
#else
            __m256i s16 = _mm256_setzero_si256();
            for (int v = 0; v < 4; v++)
                s16 = _mm256_add_epi16(
                    s16, _mm256_add_epi16(_mm256_maddubs_epi16(w[v], x8_bcast4(aq + 4 * v)),
                                          _mm256_maddubs_epi16(w[4 + v], x8_bcast4(aq + 16 + 4 * v))));
            __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
            if (type == KN_TYPE_Q4_0) s32 = _mm256_add_epi32(s32, _mm256_set1_epi32(tk.q4off[t][b]));
#endif
            __m256 dd = _mm256_mul_ps(dw, _mm256_set1_ps(tk.d[t][b]));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), dd, acc[t]);
            if (type == KN_TYPE_Q4_1)
                acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(tk.s[t][b]), acc[t]);
        }
    }
    for (int t = 0; t < nt; t++) x8_store(y + (size_t)(t0 + t) * ldy + row0, acc[t], lo, hi);
}

/* A decode step (one token) over two adjacent groups of Q4_0 / Q4_1: each broadcast of 4
 * activation bytes feeds 16 rows. Lane for lane the same operations as x8_tile_q4 with nt = 1
 * (the integer sums are exact in any order), so a row's bits do not depend on whether its group
 * was paired. */
KN_X8_AI void x8_pair_q4(const uint32_t type, const uint8_t *gp0, const uint8_t *gp1, int nb,
                         const kn_act *a, float *y0, float *y1, int lo0, int hi0, int lo1,
                         int hi1) {
    const size_t bb = type == KN_TYPE_Q4_0 ? sizeof(kn_x8_q4_0) : sizeof(kn_x8_q4_1);
    const size_t qoff = type == KN_TYPE_Q4_0 ? offsetof(kn_x8_q4_0, qs) : offsetof(kn_x8_q4_1, qs);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    x8_tok tk;
    x8_tok_q8_0(&tk, a, 0, 1);
    const uint8_t *gp[2] = {gp0, gp1};
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int b = 0; b < nb; b++) {
        const int8_t *aq = tk.q[0] + b * KN_QBLOCK;
        const uint8_t *bp[2] = {gp[0] + (size_t)b * bb, gp[1] + (size_t)b * bb};
        for (int g = 0; g < 2; g++) {
            _mm_prefetch((const char *)bp[g] + KN_X8_PREFETCH, _MM_HINT_T0);
            _mm_prefetch((const char *)bp[g] + KN_X8_PREFETCH + 64, _MM_HINT_T0);
        }
#if KN_VNNI
        __m256i s[2][2];
        for (int g = 0; g < 2; g++) {
            s[g][0] = type == KN_TYPE_Q4_0 ? _mm256_set1_epi32(tk.q4off[0][b]) : _mm256_setzero_si256();
            s[g][1] = _mm256_setzero_si256();
        }
#else
        __m256i s[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
#endif
        for (int v = 0; v < 4; v++) {
            __m256i bl = x8_bcast4(aq + 4 * v), bh = x8_bcast4(aq + 16 + 4 * v);
            for (int g = 0; g < 2; g++) {
                __m256i raw = x8_load(bp[g] + qoff + 32 * v);
                __m256i wl = _mm256_and_si256(raw, m4);
                __m256i wh = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
#if KN_VNNI
                s[g][0] = KN_DPBUSD(s[g][0], wl, bl);
                s[g][1] = KN_DPBUSD(s[g][1], wh, bh);
#else
                s[g] = _mm256_add_epi16(s[g], _mm256_add_epi16(_mm256_maddubs_epi16(wl, bl),
                                                              _mm256_maddubs_epi16(wh, bh)));
#endif
            }
        }
        __m256 da = _mm256_set1_ps(tk.d[0][b]);
        for (int g = 0; g < 2; g++) {
#if KN_VNNI
            __m256i s32 = _mm256_add_epi32(s[g][0], s[g][1]);
#else
            __m256i s32 = _mm256_madd_epi16(s[g], _mm256_set1_epi16(1));
            if (type == KN_TYPE_Q4_0) s32 = _mm256_add_epi32(s32, _mm256_set1_epi32(tk.q4off[0][b]));
#endif
            __m256 dd = _mm256_mul_ps(kn_f16c_x8(KN_AT(bp[g], kn_x8_q4_0, d)), da);
            acc[g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), dd, acc[g]);
            if (type == KN_TYPE_Q4_1)
                acc[g] = _mm256_fmadd_ps(kn_f16c_x8(KN_AT(bp[g], kn_x8_q4_1, m)),
                                         _mm256_set1_ps(tk.s[0][b]), acc[g]);
        }
    }
    x8_store(y0, acc[0], lo0, hi0);
    x8_store(y1, acc[1], lo1, hi1);
}

#ifdef KN_X8_ZMM
/* Prefill and batched decode over two adjacent groups of Q4_0 / Q4_1 at once, in the halves of
 * 512-bit registers (the AVX-512 table): each vpdpbusd does the work of two, and each
 * broadcast of 4 activation bytes feeds 16 rows. Lane for lane the operations of x8_tile_q4
 * (exact integer sums, then the same float multiply and fused multiply-adds per lane), so a
 * row's bits do not depend on whether its group was paired. */
KN_X8_AI __m512i x16_load2(const uint8_t *p0, const uint8_t *p1) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(x8_load(p0)), x8_load(p1), 1);
}

KN_X8_AI __m512 x16_f16(const void *p0, const void *p1) {
    __m256i h = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p0)),
        _mm_loadu_si128((const __m128i *)p1), 1);
    return _mm512_cvtph_ps(h);
}

KN_X8_AI __m512i x16_bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* Groups at gp0 and gp1 (rows row0 .. row0 + 15), lanes [lo0, 8) of the first and [0, hi1) of
 * the second stored. */
KN_X8_AI void x16_tile_q4(const uint32_t type, const uint8_t *gp0, const uint8_t *gp1, int nb,
                          const kn_act *a, int t0, const int nt, float *y, int ldy, int row0,
                          int lo0, int hi1) {
    const size_t bb = type == KN_TYPE_Q4_0 ? sizeof(kn_x8_q4_0) : sizeof(kn_x8_q4_1);
    const size_t qoff = type == KN_TYPE_Q4_0 ? offsetof(kn_x8_q4_0, qs) : offsetof(kn_x8_q4_1, qs);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    x8_tok tk;
    x8_tok_q8_0(&tk, a, t0, nt);
    __m512 acc[KN_X8_NT];
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *bp0 = gp0 + (size_t)b * bb, *bp1 = gp1 + (size_t)b * bb;
        _mm_prefetch((const char *)bp0 + KN_X8_PREFETCH, _MM_HINT_T0);
        _mm_prefetch((const char *)bp0 + KN_X8_PREFETCH + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)bp1 + KN_X8_PREFETCH, _MM_HINT_T0);
        _mm_prefetch((const char *)bp1 + KN_X8_PREFETCH + 64, _MM_HINT_T0);
        __m512i w[8];
        for (int v = 0; v < 4; v++) {
            __m512i raw = x16_load2(bp0 + qoff + 32 * v, bp1 + qoff + 32 * v);
            w[v] = _mm512_and_si512(raw, m4);
            w[4 + v] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
        }
        __m512 dw = x16_f16(KN_AT(bp0, kn_x8_q4_0, d), KN_AT(bp1, kn_x8_q4_0, d));
        __m512 mw = type == KN_TYPE_Q4_1
                        ? x16_f16(KN_AT(bp0, kn_x8_q4_1, m), KN_AT(bp1, kn_x8_q4_1, m))
                        : _mm512_setzero_ps();
        for (int t = 0; t < nt; t++) {
            const int8_t *aq = tk.q[t] + b * KN_QBLOCK;
            __m512i s[2];
            s[0] = type == KN_TYPE_Q4_0 ? _mm512_set1_epi32(tk.q4off[t][b]) : _mm512_setzero_si512();
            s[1] = _mm512_setzero_si512();
            for (int v = 0; v < 4; v++) {
                s[v & 1] = _mm512_dpbusd_epi32(s[v & 1], w[v], x16_bcast4(aq + 4 * v));
                s[v & 1] = _mm512_dpbusd_epi32(s[v & 1], w[4 + v], x16_bcast4(aq + 16 + 4 * v));
            }
            __m512i s32 = _mm512_add_epi32(s[0], s[1]);
            __m512 dd = _mm512_mul_ps(dw, _mm512_set1_ps(tk.d[t][b]));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s32), dd, acc[t]);
            if (type == KN_TYPE_Q4_1)
                acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(tk.s[t][b]), acc[t]);
        }
    }
    __mmask16 keep = (__mmask16)((0xFFu & ~((1u << lo0) - 1)) | (((1u << hi1) - 1) << 8));
    for (int t = 0; t < nt; t++)
        _mm512_mask_storeu_ps(y + (size_t)(t0 + t) * ldy + row0, keep, acc[t]);
}

/* Q8_0's weights are signed, and 512-bit registers have no vpsignb: the weights go in offset
 * by 128 (unsigned), and 128 times the activations' block sum comes off again (16 * q4off,
 * q4off being -8 * that sum). Exact integers either way, so the bits are x8_tile_q8_0's. */
KN_X8_AI void x16_tile_q8_0(const uint8_t *gp0, const uint8_t *gp1, int nb, const kn_act *a,
                            int t0, const int nt, float *y, int ldy, int row0, int lo0,
                            int hi1) {
    x8_tok tk;
    x8_tok_q8_0(&tk, a, t0, nt);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512 acc[KN_X8_NT];
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *bp0 = gp0 + (size_t)b * sizeof(kn_x8_q8_0);
        const uint8_t *bp1 = gp1 + (size_t)b * sizeof(kn_x8_q8_0);
        for (int c = 0; c < 256; c += 64) {
            _mm_prefetch((const char *)bp0 + KN_X8_PREFETCH + c, _MM_HINT_T0);
            _mm_prefetch((const char *)bp1 + KN_X8_PREFETCH + c, _MM_HINT_T0);
        }
        __m512i s[KN_X8_NT][2];
        for (int t = 0; t < nt; t++) {
            s[t][0] = _mm512_set1_epi32(16 * tk.q4off[t][b]);
            s[t][1] = _mm512_setzero_si512();
        }
        for (int v = 0; v < 8; v++) {
            size_t at = offsetof(kn_x8_q8_0, qs) + KN_STRIDE(kn_x8_q8_0, qs) * (size_t)v;
            __m512i uw = _mm512_xor_si512(x16_load2(bp0 + at, bp1 + at), flip);
            for (int t = 0; t < nt; t++)
                s[t][v & 1] = _mm512_dpbusd_epi32(s[t][v & 1], uw,
                                                  x16_bcast4(tk.q[t] + b * KN_QBLOCK + 4 * v));
        }
        __m512 dw = x16_f16(KN_AT(bp0, kn_x8_q8_0, d), KN_AT(bp1, kn_x8_q8_0, d));
        for (int t = 0; t < nt; t++) {
            __m512 dd = _mm512_mul_ps(dw, _mm512_set1_ps(tk.d[t][b]));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s[t][0], s[t][1])), dd,
                                     acc[t]);
        }
    }
    __mmask16 keep = (__mmask16)((0xFFu & ~((1u << lo0) - 1)) | (((1u << hi1) - 1) << 8));
    for (int t = 0; t < nt; t++)
        _mm512_mask_storeu_ps(y + (size_t)(t0 + t) * ldy + row0, keep, acc[t]);
}

KN_X8_AI void x16_tile(const uint32_t type, const uint8_t *gp0, const uint8_t *gp1, int nb,
                       const kn_act *a, int t0, const int nt, float *y, int ldy, int row0,
                       int lo0, int hi1) {
    if (type == KN_TYPE_Q8_0) x16_tile_q8_0(gp0, gp1, nb, a, t0, nt, y, ldy, row0, lo0, hi1);
    else x16_tile_q4(type, gp0, gp1, nb, a, t0, nt, y, ldy, row0, lo0, hi1);
}

/* Tiles of KN_X8_NT tokens (then the remainder) over the groups g and g + 1. */
KN_X8_AI void x16_rows(const uint32_t type, const uint8_t *gp0, const uint8_t *gp1, int nb,
                       const kn_act *a, int n_tok, float *y, int ldy, int row0, int lo0,
                       int hi1) {
    int t = 0;
    for (; t + KN_X8_NT <= n_tok; t += KN_X8_NT)
        x16_tile(type, gp0, gp1, nb, a, t, KN_X8_NT, y, ldy, row0, lo0, hi1);
    switch (n_tok - t) {
    case 3: x16_tile(type, gp0, gp1, nb, a, t, 3, y, ldy, row0, lo0, hi1); break;
    case 2: x16_tile(type, gp0, gp1, nb, a, t, 2, y, ldy, row0, lo0, hi1); break;
    case 1: x16_tile(type, gp0, gp1, nb, a, t, 1, y, ldy, row0, lo0, hi1); break;
    default: break;
    }
}
/* Q8_0 needs the activations' block sums (q4off, which the engine always asks for). Only for
 * 8 tokens or more (prefill chunks): a batched decode pass of 4 rows measured slower with the
 * 512-bit tiles (SmolLM2, 2 threads: 540-580 against 620-690 t/s) — likely the lower clock of
 * 512-bit work, which a pass that mostly waits on memory does not repay. */
#define KN_X8_PAIR_TILES(TYPE)                                                                  \
    if (n_tok >= 8 && ((TYPE) == KN_TYPE_Q4_0 || (TYPE) == KN_TYPE_Q4_1 ||                      \
                      ((TYPE) == KN_TYPE_Q8_0 && a->q4off)))                                     \
        for (; (g + 1) * KN_GROUP < r1; g += 2) {                                                \
            int row0 = g * KN_GROUP;                                                             \
            int hi1 = r1 < row0 + 2 * KN_GROUP ? r1 - row0 - KN_GROUP : KN_GROUP;                \
            x16_rows(TYPE, w->data + (size_t)g * w->row_bytes,                                \
                        w->data + (size_t)(g + 1) * w->row_bytes, nb, a, n_tok, y, ldy, row0,     \
                        r0 > row0 ? r0 - row0 : 0, hi1);                                        \
        }
#else
#define KN_X8_PAIR_TILES(TYPE)
#endif

/* ---- Q8_0: signed bytes; |w| times the activation carrying w's sign ---- */

KN_X8_AI void x8_tile_q8_0(const uint32_t type, const uint8_t *gp, int nb, const kn_act *a,
                           int t0, const int nt, float *y, int ldy, int row0, int lo, int hi) {
    (void)type;
    x8_tok tk;
    x8_tok_q8_0(&tk, a, t0, nt);
    __m256 acc[KN_X8_NT];
    for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *bp = gp + (size_t)b * sizeof(kn_x8_q8_0);
        _mm_prefetch((const char *)bp + KN_X8_PREFETCH, _MM_HINT_T0);
        _mm_prefetch((const char *)bp + KN_X8_PREFETCH + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)bp + KN_X8_PREFETCH + 128, _MM_HINT_T0);
        _mm_prefetch((const char *)bp + KN_X8_PREFETCH + 192, _MM_HINT_T0);
        __m256i s[KN_X8_NT][X8_NACC];
        for (int t = 0; t < nt; t++)
            for (int k = 0; k < X8_NACC; k++) s[t][k] = _mm256_setzero_si256();
        for (int v = 0; v < 8; v++) {
            __m256i wv = x8_load(KN_AT(bp, kn_x8_q8_0, qs) + KN_STRIDE(kn_x8_q8_0, qs) * v);
            __m256i aw = _mm256_sign_epi8(wv, wv); /* -128 stays 0x80 = 128 as u8: right */
            for (int t = 0; t < nt; t++) {
                __m256i av = _mm256_sign_epi8(x8_bcast4(tk.q[t] + b * KN_QBLOCK + 4 * v), wv);
#if KN_VNNI
                const int k = x8_acc(nt, v);
                s[t][k] = KN_DPBUSD(s[t][k], aw, av);
#else
                /* one pair sum reaches 2 * 128 * 127: widen each product at once */
                s[t][0] = _mm256_add_epi32(
                    s[t][0], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, av), _mm256_set1_epi16(1)));
#endif
            }
        }
        __m256 dw = kn_f16c_x8(KN_AT(bp, kn_x8_q8_0, d));
        for (int t = 0; t < nt; t++) {
#if KN_VNNI
            __m256i s32 = x8_sum_acc(s[t], nt);
#else
            __m256i s32 = s[t][0];
#endif
            __m256 dd = _mm256_mul_ps(dw, _mm256_set1_ps(tk.d[t][b]));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), dd, acc[t]);
        }
    }
    for (int t = 0; t < nt; t++) x8_store(y + (size_t)(t0 + t) * ldy + row0, acc[t], lo, hi);
}

/* ---- Q4_K, Q5_K: super-blocks of 8 sub-blocks of 32 with 6-bit scales and mins ---- */

/* Sub-blocks 2p + hf of super-block b for hf in [h0, h1] (pair p: hf 0 the low nibbles, 1 the
 * high ones): isum[t] += sc_j * dot_j. A sub-block's 8 weight vectors are unpacked into
 * registers once, then each token of the tile passes through them; the tile takes the pair's
 * two sub-blocks in turn so that 8 weights and the token's sums fit in AVX2's 16 registers. */
KN_X8_AI void x8_q45_pass(const bool five, const uint8_t *bp, int p, const int h0, const int h1,
                          const x8_tok *tk, int b, const int nt, __m256i *isum) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const uint8_t *nib = bp + (five ? offsetof(kn_x8_q5_k, nib) : offsetof(kn_x8_q4_k, nib)) +
                         KN_STRIDE(kn_x8_q4_k, nib) * p;
    const uint8_t *qh = KN_AT(bp, kn_x8_q5_k, qh) + KN_STRIDE(kn_x8_q5_k, qh) * p;
    const uint8_t *sc = KN_AT(bp, kn_x8_q4_k, sc);
    for (int hf = h0; hf <= h1; hf++) {
        const int j = 2 * p + hf;
        __m256i w[8];
        for (int v = 0; v < 8; v++) {
            __m256i raw = x8_load(nib + 32 * v);
            w[v] = hf ? _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4) : _mm256_and_si256(raw, m4);
            if (five) w[v] = _mm256_or_si256(w[v], x8_bit4(x8_load(qh + 32 * (v / 4)), 2 * (v % 4) + hf));
        }
#if KN_VNNI
        __m256i sc32 = _mm256_cvtepu8_epi32(
            _mm_loadl_epi64((const __m128i *)(const void *)(sc + KN_STRIDE(kn_x8_q4_k, sc) * j)));
#else
        __m256i sc16 = x8_scale_dup16(sc + KN_STRIDE(kn_x8_q4_k, sc) * j);
#endif
        for (int t = 0; t < nt; t++) {
            const int8_t *aq = tk->q[t] + b * KN_KBLOCK + 32 * j;
#if KN_VNNI
            __m256i s[X8_NACC];
            for (int k = 0; k < X8_NACC; k++) s[k] = _mm256_setzero_si256();
            for (int v = 0; v < 8; v++) {
                const int k = x8_acc(nt, v);
                s[k] = KN_DPBUSD(s[k], w[v], x8_bcast4(aq + 4 * v));
            }
            isum[t] = _mm256_add_epi32(isum[t], _mm256_mullo_epi32(x8_sum_acc(s, nt), sc32));
#else
            /* Q5: at most 4 pair sums of 7874 fit in 16 bits; Q4: all 8 of 3810 */
            __m256i s16 = _mm256_setzero_si256();
            for (int v = 0; v < 8; v++) {
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(w[v], x8_bcast4(aq + 4 * v)));
                if (five && v == 3) {
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s16, sc16));
                    s16 = _mm256_setzero_si256();
                }
            }
            isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s16, sc16));
#endif
        }
    }
}

KN_X8_AI void x8_tile_q45_k(const uint32_t type, const uint8_t *gp, int nb, const kn_act *a,
                            int t0, const int nt, float *y, int ldy, int row0, int lo, int hi) {
    const bool five = type == KN_TYPE_Q5_K;
    const size_t bb = five ? sizeof(kn_x8_q5_k) : sizeof(kn_x8_q4_k);
    x8_tok tk;
    x8_tok_q8_k(&tk, a, t0, nt, false);
    __m256 acc[KN_X8_NT];
    for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *bp = gp + (size_t)b * bb;
        __m256i isum[KN_X8_NT], imin[KN_X8_NT];
        for (int t = 0; t < nt; t++) isum[t] = imin[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++) {
            x8_prefetch_part(bp, bb, p);
            x8_q45_pass(five, bp, p, 0, 0, &tk, b, nt, isum);
            x8_q45_pass(five, bp, p, 1, 1, &tk, b, nt, isum);
            /* mins of sub-blocks 2p, 2p+1 times the activations' sums over them */
            const uint8_t *mp = KN_AT(bp, kn_x8_q4_k, mn) + KN_STRIDE(kn_x8_q4_k, mn) * p;
            __m256i mn = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(const void *)mp));
            for (int t = 0; t < nt; t++)
                imin[t] = _mm256_add_epi32(
                    imin[t], _mm256_madd_epi16(mn, x8_bcast4((const int8_t *)(tk.bs[t] + 8 * b + 2 * p))));
        }
        __m256 dw = kn_f16c_x8(KN_AT(bp, kn_x8_q4_k, d));
        __m256 mw = kn_f16c_x8(KN_AT(bp, kn_x8_q4_k, dmin));
        for (int t = 0; t < nt; t++) {
            __m256 da = _mm256_set1_ps(tk.d[t][b]);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(dw, da), acc[t]);
            acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(imin[t]), _mm256_mul_ps(mw, da), acc[t]);
        }
    }
    for (int t = 0; t < nt; t++) x8_store(y + (size_t)(t0 + t) * ldy + row0, acc[t], lo, hi);
}

/* ---- Q6_K: super-blocks of 16 sub-blocks of 16 with int8 scales, q - 32 ---- */

/* Chunks c = 2p + hf (32 elements each: sub-blocks 2c, 2c+1) of super-block b for hf in
 * [h0, h1]: weights unpacked into registers once, then each token (see x8_q45_pass). */
KN_X8_AI void x8_q6_pass(const uint8_t *bp, int p, const int h0, const int h1, const x8_tok *tk,
                         int b, const int nt, __m256i *isum) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const uint8_t *nib = KN_AT(bp, kn_x8_q6_k, nib) + KN_STRIDE(kn_x8_q6_k, nib) * p;
    const uint8_t *qh = KN_AT(bp, kn_x8_q6_k, qh) + KN_STRIDE(kn_x8_q6_k, qh) * p;
    for (int hf = h0; hf <= h1; hf++) {
        const int c = 2 * p + hf;
        __m256i w[8];
        for (int v = 0; v < 8; v++) {
            __m256i raw = x8_load(nib + 32 * v);
            w[v] = hf ? _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4) : _mm256_and_si256(raw, m4);
            w[v] = _mm256_or_si256(w[v], x8_bits45(x8_load(qh + 32 * (v / 2)), 4 * (v % 2) + 2 * hf));
        }
        /* [sc_2c, sc_2c+1] of each row as i16 pairs, and each of them alone per 32-bit lane */
        const uint8_t *pcp = KN_AT(bp, kn_x8_q6_k, sc) + KN_STRIDE(kn_x8_q6_k, sc) * c;
        __m256i pc = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)pcp));
#if KN_VNNI
        __m256i sc_lo = _mm256_srai_epi32(_mm256_slli_epi32(pc, 16), 16), sc_hi = _mm256_srai_epi32(pc, 16);
#else
        __m256i sc_lo = _mm256_blend_epi16(pc, _mm256_slli_epi32(pc, 16), 0xAA);
        __m256i sc_hi = _mm256_blend_epi16(_mm256_srli_epi32(pc, 16), pc, 0xAA);
#endif
        for (int t = 0; t < nt; t++) {
            const int8_t *aq = tk->q[t] + b * KN_KBLOCK + 32 * c;
            __m256i acc32 = isum[t];
#if KN_VNNI
            for (int half = 0; half < 2; half++) {
                __m256i s[X8_NACC];
                for (int k = 0; k < X8_NACC; k++) s[k] = _mm256_setzero_si256();
                for (int v = 4 * half; v < 4 * half + 4; v++) {
                    const int k = x8_acc(nt, v);
                    s[k] = KN_DPBUSD(s[k], w[v], x8_bcast4(aq + 4 * v));
                }
                acc32 = _mm256_add_epi32(acc32, _mm256_mullo_epi32(x8_sum_acc(s, nt), half ? sc_hi : sc_lo));
            }
#else
            /* at most 2 pair sums of 16002 fit in 16 bits */
            for (int v = 0; v < 8; v += 2) {
                __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(w[v], x8_bcast4(aq + 4 * v)),
                                               _mm256_maddubs_epi16(w[v + 1], x8_bcast4(aq + 4 * v + 4)));
                acc32 = _mm256_add_epi32(acc32, _mm256_madd_epi16(s16, v < 4 ? sc_lo : sc_hi));
            }
#endif
            /* the offset of 32: sum over both sub-blocks of scale * sum(a) */
            acc32 = _mm256_sub_epi32(
                acc32, _mm256_slli_epi32(_mm256_madd_epi16(pc, x8_bcast4((const int8_t *)(tk->bs[t] + 16 * b + 2 * c))), 5));
            isum[t] = acc32;
        }
    }
}

KN_X8_AI void x8_tile_q6_k(const uint32_t type, const uint8_t *gp, int nb, const kn_act *a,
                           int t0, const int nt, float *y, int ldy, int row0, int lo, int hi) {
    (void)type;
    x8_tok tk;
    x8_tok_q8_k(&tk, a, t0, nt, true);
    __m256 acc[KN_X8_NT];
    for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *bp = gp + (size_t)b * sizeof(kn_x8_q6_k);
        __m256i isum[KN_X8_NT];
        for (int t = 0; t < nt; t++) isum[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++) {
            x8_prefetch_part(bp, sizeof(kn_x8_q6_k), p);
            x8_q6_pass(bp, p, 0, 1, &tk, b, nt, isum);
        }
        __m256 dw = kn_f16c_x8(KN_AT(bp, kn_x8_q6_k, d));
        for (int t = 0; t < nt; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]),
                                     _mm256_mul_ps(dw, _mm256_set1_ps(tk.d[t][b])), acc[t]);
    }
    for (int t = 0; t < nt; t++) x8_store(y + (size_t)(t0 + t) * ldy + row0, acc[t], lo, hi);
}

/* Rows [r0, r1) x all tokens: the groups that hold them, each in tiles of KN_X8_NT tokens
 * (the remainders get their own specialized copies through the constant nt). */
#define KN_X8_ROWS(NAME, TILE, TYPE, BLOCK) KN_X8_ROWS_PAIR(NAME, TILE, x8_pair_none, 0, TYPE, BLOCK)

/* With PAIR_ON, a 1-token call (decode) takes the groups two at a time through PAIR. */
#define KN_X8_ROWS_PAIR(NAME, TILE, PAIR, PAIR_ON, TYPE, BLOCK)                                  \
    static void NAME(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a,        \
                     int n_tok, float *y, int ldy) {                                            \
        (void)x;                                                                                 \
        int nb = w->n_in / (BLOCK);                                                              \
        int g = r0 / KN_GROUP;                                                                   \
        if (n_tok == 1 && (PAIR_ON))                                                             \
            for (; (g + 1) * KN_GROUP < r1; g += 2) {                                            \
                int row0 = g * KN_GROUP, row1 = row0 + KN_GROUP;                                 \
                int lo0 = r0 > row0 ? r0 - row0 : 0;                                            \
                int hi1 = r1 < row1 + KN_GROUP ? r1 - row1 : KN_GROUP;                           \
                PAIR(TYPE, w->data + (size_t)g * w->row_bytes,                                   \
                     w->data + (size_t)(g + 1) * w->row_bytes, nb, a, y + row0, y + row1, lo0,   \
                     KN_GROUP, 0, hi1);                                                          \
            }                                                                                    \
        KN_X8_PAIR_TILES(TYPE)                                                                   \
        for (; g * KN_GROUP < r1; g++) {                                                         \
            const uint8_t *gp = w->data + (size_t)g * w->row_bytes;                              \
            int row0 = g * KN_GROUP;                                                             \
            int lo = r0 > row0 ? r0 - row0 : 0;                                                 \
            int hi = r1 < row0 + KN_GROUP ? r1 - row0 : KN_GROUP;                               \
            int t = 0;                                                                           \
            for (; t + KN_X8_NT <= n_tok; t += KN_X8_NT)                                         \
                TILE(TYPE, gp, nb, a, t, KN_X8_NT, y, ldy, row0, lo, hi);                        \
            switch (n_tok - t) {                                                                 \
                KN_X8_REMAINDERS(TILE, TYPE)                                                     \
            case 3: TILE(TYPE, gp, nb, a, t, 3, y, ldy, row0, lo, hi); break;                    \
            case 2: TILE(TYPE, gp, nb, a, t, 2, y, ldy, row0, lo, hi); break;                    \
            case 1: TILE(TYPE, gp, nb, a, t, 1, y, ldy, row0, lo, hi); break;                    \
            default: break;                                                                      \
            }                                                                                    \
        }                                                                                        \
    }

#if KN_X8_NT == 8
#define KN_X8_REMAINDERS(TILE, TYPE)                                                             \
    case 7: TILE(TYPE, gp, nb, a, t, 7, y, ldy, row0, lo, hi); break;                            \
    case 6: TILE(TYPE, gp, nb, a, t, 6, y, ldy, row0, lo, hi); break;                            \
    case 5: TILE(TYPE, gp, nb, a, t, 5, y, ldy, row0, lo, hi); break;                            \
    case 4: TILE(TYPE, gp, nb, a, t, 4, y, ldy, row0, lo, hi); break;
#elif KN_X8_NT == 4
#define KN_X8_REMAINDERS(TILE, TYPE)
#else
#error "KN_X8_NT must be 4 or 8"
#endif

/* The PAIR of types without one: never called. */
KN_X8_AI void x8_pair_none(const uint32_t type, const uint8_t *gp0, const uint8_t *gp1, int nb,
                           const kn_act *a, float *y0, float *y1, int lo0, int hi0, int lo1,
                           int hi1) {
    (void)type, (void)gp0, (void)gp1, (void)nb, (void)a, (void)y0, (void)y1;
    (void)lo0, (void)hi0, (void)lo1, (void)hi1;
}

KN_X8_ROWS_PAIR(x8_rows_q4_0, x8_tile_q4, x8_pair_q4, 1, KN_TYPE_Q4_0, KN_QBLOCK)
KN_X8_ROWS_PAIR(x8_rows_q4_1, x8_tile_q4, x8_pair_q4, 1, KN_TYPE_Q4_1, KN_QBLOCK)
KN_X8_ROWS(x8_rows_q8_0, x8_tile_q8_0, KN_TYPE_Q8_0, KN_QBLOCK)
KN_X8_ROWS(x8_rows_q4_k, x8_tile_q45_k, KN_TYPE_Q4_K, KN_KBLOCK)
KN_X8_ROWS(x8_rows_q5_k, x8_tile_q45_k, KN_TYPE_Q5_K, KN_KBLOCK)
KN_X8_ROWS(x8_rows_q6_k, x8_tile_q6_k, KN_TYPE_Q6_K, KN_KBLOCK)

#define KN_X8_TABLE                                                                              \
    .rows_x8 = {                                                                                 \
        [KN_TYPE_Q4_0] = x8_rows_q4_0,                                                           \
        [KN_TYPE_Q4_1] = x8_rows_q4_1,                                                           \
        [KN_TYPE_Q8_0] = x8_rows_q8_0,                                                           \
        [KN_TYPE_Q4_K] = x8_rows_q4_k,                                                           \
        [KN_TYPE_Q5_K] = x8_rows_q5_k,                                                           \
        [KN_TYPE_Q6_K] = x8_rows_q6_k,                                                           \
    }
