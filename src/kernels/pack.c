/* pack.c — weights repacked once, at load, into the layout the x86 kernels want (KN_LAYOUT_X8).
 *
 * Why. A GGUF row is a run of blocks, so a kernel that multiplies one row at a time ends each
 * row with a horizontal sum and reloads every activation once per row. With 8 rows interleaved
 * 4 bytes at a time, one 256-bit register holds 4 consecutive weights of each of 8 rows; a
 * broadcast of the 4 matching activation bytes multiplies all 8 (vpmaddubsw / vpdpbusd), the 8
 * row sums accumulate in the 8 lanes of one register, and the 8 rows' scales are one load.
 *
 * The layout (all multi-byte fields little-endian; "[v][r][i]" means 32-byte vector v, lane r
 * = row 8g + r, byte i). A matrix is ceil(n_out / 8) groups; a group is its rows' blocks in
 * order, each block of the 8 rows stored together; rows past n_out are zeros. q_r[e] is the
 * unsigned quant of element e of row r within the block as GGUF defines it (ggml-common.h).
 *
 *   Q4_0, 32 elements, 144 bytes:  d[8] f16 | nib[4][8][4]: q_r[4v+i] | q_r[16+4v+i] << 4
 *   Q4_1, 32 elements, 160 bytes:  d[8] f16 | m[8] f16 | nib as Q4_0
 *   Q8_0, 32 elements, 272 bytes:  d[8] f16 | q[8][8][4]: q_r[4v+i] (int8)
 *   Q4_K, 256 elements, 1184 bytes (GGUF: 1152):
 *       d[8] f16 | dmin[8] f16 | sc[8 sub-blocks j][8 r] u8 | mn[4 pairs p][8 r][2] u8 (the
 *       mins of sub-blocks 2p, 2p+1) | nib[4 p][8 v][8 r][4 i]: q_r[64p+4v+i] (sub-block 2p) in
 *       the low nibble, q_r[64p+32+4v+i] (sub-block 2p+1) in the high one
 *   Q5_K, 256 elements, 1440 bytes (GGUF: 1408): Q4_K's fields with the low 4 bits of q in nib,
 *       then qh[4 p][2 u][8 r][4 i] between mn and nib: bit 2k of it is the 5th bit of the low
 *       nibble's element of nib[p][4u+k][r][i], bit 2k+1 that of the high nibble's
 *   Q6_K, 256 elements, 1680 bytes (GGUF: the same): d[8] f16 | sc[8 pairs p][8 r][2] int8 (the
 *       scales of the 16-element sub-blocks 2p, 2p+1) | qh[4 p][4 u][8 r][4 i]: bits 4k..4k+1
 *       are the top 2 bits of the low nibble's element of nib[p][2u+k][r][i], bits 4k+2..4k+3
 *       those of the high nibble's | nib[4 p][8 v][8 r][4 i] as Q4_K (low 4 bits of q)
 *
 * The K-quants' 6-bit scales and mins are widened to bytes so that the kernels need no bit
 * surgery; that adds 32 bytes per 8 super-blocks of Q4_K / Q5_K (2-3% of their bytes). */
#include <stdbool.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/kernels_impl.h"
#include "quant/blocks.h"

/* Bytes of one block of 8 rows in the X8 layout; 0 for a type without one. */
static size_t x8_block_bytes(uint32_t type) {
    switch (type) {
    case KN_TYPE_Q4_0: return sizeof(kn_x8_q4_0);
    case KN_TYPE_Q4_1: return sizeof(kn_x8_q4_1);
    case KN_TYPE_Q8_0: return sizeof(kn_x8_q8_0);
    case KN_TYPE_Q4_K: return sizeof(kn_x8_q4_k);
    case KN_TYPE_Q5_K: return sizeof(kn_x8_q5_k);
    case KN_TYPE_Q6_K: return sizeof(kn_x8_q6_k);
    default: return 0;
    }
}

size_t kn_x8_group_bytes(uint32_t type, int n_in) {
    const kn_type_traits *t = kn_type_get(type);
    size_t bb = x8_block_bytes(type);
    if (!t || !bb || n_in <= 0 || n_in % (int)t->block) return 0;
    return (size_t)(n_in / (int)t->block) * bb;
}

size_t kn_pack_bytes(const kn_kernels *k, const kn_wmat *w) {
    if (w->layout != KN_LAYOUT_GGUF || w->type >= KN_NTYPES || !k->rows_x8[w->type]) return 0;
    size_t gb = kn_x8_group_bytes(w->type, w->n_in);
    return gb ? gb * (size_t)((w->n_out + KN_GROUP - 1) / KN_GROUP) : 0;
}

kn_wmat kn_pack_view(const kn_wmat *w, const uint8_t *dst) {
    kn_wmat p = *w;
    p.row_bytes = kn_x8_group_bytes(w->type, w->n_in);
    p.data = dst;
    p.layout = KN_LAYOUT_X8;
    return p;
}

/* ---- one block of 8 rows, straight from the GGUF blocks b[r] (NULL: a zero row) ----
 * Most fields are gathers of whole 4-byte words: GGUF already pairs element j with j + 16 in a
 * Q4_0 byte (and sub-block 2p with 2p + 1 in a Q4_K one), which is the pairing of a vector's
 * low and high nibbles here. */

static const uint8_t k_zero_block[sizeof(kn_block_q6_k)]; /* the largest block packed */

static void gather_f16(uint8_t *out, const uint8_t *const *b, size_t off) {
    for (int r = 0; r < KN_GROUP; r++) memcpy(out + sizeof(kn_f16) * r, b[r] + off, sizeof(kn_f16));
}

/* out[v][r][0..3] = b[r][off + 4v .. off + 4v + 3] for v < nv */
static void gather_words(uint8_t *out, const uint8_t *const *b, size_t off, int nv) {
    for (int v = 0; v < nv; v++)
        for (int r = 0; r < KN_GROUP; r++) memcpy(out + (v * KN_GROUP + r) * 4, b[r] + off + 4 * v, 4);
}

static void k4_scale_min(const uint8_t *s, int j, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

/* Q4_K and Q5_K share their head (blocks.h), so the Q4_K names serve both up to nib. */
static void put_q45_k(uint8_t *o, const uint8_t *const *b, bool five) {
    gather_f16(KN_AT(o, kn_x8_q4_k, d), b, offsetof(kn_block_q4_k, d));
    gather_f16(KN_AT(o, kn_x8_q4_k, dmin), b, offsetof(kn_block_q4_k, dmin));
    for (int r = 0; r < KN_GROUP; r++)
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            k4_scale_min(KN_AT(b[r], kn_block_q4_k, scales), j, &sc, &m);
            KN_AT(o, kn_x8_q4_k, sc)[j * KN_GROUP + r] = sc;
            KN_AT(o, kn_x8_q4_k, mn)[((j / 2) * KN_GROUP + r) * 2 + j % 2] = m;
        }
    const size_t qs = five ? offsetof(kn_block_q5_k, qs) : offsetof(kn_block_q4_k, qs);
    uint8_t *nib = o + (five ? offsetof(kn_x8_q5_k, nib) : offsetof(kn_x8_q4_k, nib));
    /* GGUF's qs[32p + l] holds element 64p + l (sub-block 2p) low and 64p + 32 + l high */
    for (int p = 0; p < 4; p++)
        gather_words(nib + KN_STRIDE(kn_x8_q4_k, nib) * p, b, qs + 32 * (size_t)p, 8);
    if (!five) return;
    /* the fifth bit of element 32j + l is bit j of GGUF's qh[l]; here bit 2k (2k + 1) of
     * qh[p][u][r][i] is that of element 64p + 16u + 4k + i (plus 32) */
    uint8_t *qh = KN_AT(o, kn_x8_q5_k, qh);
    const size_t qh_in = offsetof(kn_block_q5_k, qh);
    for (int p = 0; p < 4; p++)
        for (int u = 0; u < 2; u++)
            for (int r = 0; r < KN_GROUP; r++)
                for (int i = 0; i < 4; i++) {
                    int bits = 0;
                    for (int k = 0; k < 4; k++)
                        bits |= ((b[r][qh_in + 16 * u + 4 * k + i] >> (2 * p)) & 3) << (2 * k);
                    qh[((p * 2 + u) * KN_GROUP + r) * 4 + i] = (uint8_t)bits;
                }
}

/* GGUF Q6_K: element 128h + e' takes its low 4 bits from nibble e' / 64 of ql[64h + e' % 64]
 * and its top 2 from qh[32h + e' % 32] >> 2 (e' / 32). */
static void put_q6_k(uint8_t *o, const uint8_t *const *b) {
    gather_f16(KN_AT(o, kn_x8_q6_k, d), b, offsetof(kn_block_q6_k, d));
    for (int r = 0; r < KN_GROUP; r++)
        for (int j = 0; j < 16; j++)
            KN_AT(o, kn_x8_q6_k, sc)[((j / 2) * KN_GROUP + r) * 2 + j % 2] =
                KN_AT(b[r], kn_block_q6_k, scales)[j];
    uint8_t *qh = KN_AT(o, kn_x8_q6_k, qh), *nib = KN_AT(o, kn_x8_q6_k, nib);
    const size_t ql_in = offsetof(kn_block_q6_k, ql), qh_in = offsetof(kn_block_q6_k, qh);
    for (int p = 0; p < 4; p++) {
        int h = p / 2, sh = 4 * (p % 2);
        for (int v = 0; v < 8; v++)
            for (int r = 0; r < KN_GROUP; r++)
                for (int i = 0; i < 4; i++) {
                    int l = 4 * v + i; /* element 64p + l, and 64p + 32 + l */
                    int lo = (b[r][ql_in + 64 * h + l] >> sh) & 0x0f;
                    int hi = (b[r][ql_in + 64 * h + 32 + l] >> sh) & 0x0f;
                    nib[((p * 8 + v) * KN_GROUP + r) * 4 + i] = (uint8_t)(lo | hi << 4);
                }
        /* top bits: element 64p + l sits at e' = 64(p % 2) + l of half h, i.e. qh[32h + l % 32]
         * shifted by 2 * ((64(p % 2) + l) / 32) */
        for (int u = 0; u < 4; u++)
            for (int r = 0; r < KN_GROUP; r++)
                for (int i = 0; i < 4; i++) {
                    int bits = 0;
                    for (int k = 0; k < 2; k++) {
                        int l = 4 * (2 * u + k) + i;
                        int e0 = 64 * (p % 2) + l, e1 = e0 + 32;
                        const uint8_t *hb = b[r] + qh_in + 32 * h;
                        bits |= ((hb[e0 % 32] >> (2 * (e0 / 32))) & 3) << (4 * k);
                        bits |= ((hb[e1 % 32] >> (2 * (e1 / 32))) & 3) << (4 * k + 2);
                    }
                    qh[((p * 4 + u) * KN_GROUP + r) * 4 + i] = (uint8_t)bits;
                }
    }
}

static void put_block(uint32_t type, uint8_t *o, const uint8_t *const *b) {
    switch (type) {
    case KN_TYPE_Q4_0:
        gather_f16(KN_AT(o, kn_x8_q4_0, d), b, offsetof(kn_block_q4_0, d));
        gather_words(KN_AT(o, kn_x8_q4_0, qs), b, offsetof(kn_block_q4_0, qs), 4);
        break;
    case KN_TYPE_Q4_1:
        gather_f16(KN_AT(o, kn_x8_q4_1, d), b, offsetof(kn_block_q4_1, d));
        gather_f16(KN_AT(o, kn_x8_q4_1, m), b, offsetof(kn_block_q4_1, m));
        gather_words(KN_AT(o, kn_x8_q4_1, qs), b, offsetof(kn_block_q4_1, qs), 4);
        break;
    case KN_TYPE_Q8_0:
        gather_f16(KN_AT(o, kn_x8_q8_0, d), b, offsetof(kn_block_q8_0, d));
        gather_words(KN_AT(o, kn_x8_q8_0, qs), b, offsetof(kn_block_q8_0, qs), 8);
        break;
    case KN_TYPE_Q4_K: put_q45_k(o, b, false); break;
    case KN_TYPE_Q5_K: put_q45_k(o, b, true); break;
    case KN_TYPE_Q6_K: put_q6_k(o, b); break;
    default: break;
    }
}

void kn_pack_groups(const kn_wmat *w, uint8_t *dst, int g0, int g1) {
    const kn_type_traits *t = kn_type_get(w->type);
    size_t bb = x8_block_bytes(w->type), gb = kn_x8_group_bytes(w->type, w->n_in);
    int nb = w->n_in / (int)t->block;
    const uint8_t *rows[KN_GROUP];
    for (int g = g0; g < g1; g++) {
        uint8_t *out = dst + (size_t)g * gb;
        for (int b = 0; b < nb; b++) {
            for (int r = 0; r < KN_GROUP; r++) {
                int row = g * KN_GROUP + r;
                rows[r] = row < w->n_out
                              ? w->data + (size_t)row * w->row_bytes + (size_t)b * t->block_bytes
                              : k_zero_block;
            }
            put_block(w->type, out + (size_t)b * bb, rows);
        }
    }
}

kn_wmat kn_pack(const kn_wmat *w, uint8_t *dst) {
    kn_pack_groups(w, dst, 0, (w->n_out + KN_GROUP - 1) / KN_GROUP);
    return kn_pack_view(w, dst);
}
