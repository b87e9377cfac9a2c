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
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/kernels_impl.h"
#include "quant/quant.h"

/* Bytes of one block of 8 rows in the X8 layout; 0 for a type without one. */
static size_t x8_block_bytes(uint32_t type) {
    switch (type) {
    case KN_TYPE_Q4_0: return 144;
    case KN_TYPE_Q4_1: return 160;
    case KN_TYPE_Q8_0: return 272;
    case KN_TYPE_Q4_K: return 1184;
    case KN_TYPE_Q5_K: return 1440;
    case KN_TYPE_Q6_K: return 1680;
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

/* ---- one GGUF block of one row, decoded to integers ---- */

typedef struct dec_block {
    uint8_t d[2], m[2];      /* f16 fields as stored: d and the min / dmin (Q4_1, Q4_K, Q5_K) */
    uint8_t sc[16];          /* K-quants: scales (Q6_K: int8 bit patterns), 8 or 16 */
    uint8_t mn[8];           /* Q4_K / Q5_K mins */
    uint8_t q[256];          /* unsigned quants (Q8_0: int8 bit patterns) */
} dec_block;

static void k4_scale_min(const uint8_t *s, int j, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

static void decode(uint32_t type, const uint8_t *b, dec_block *o) {
    switch (type) {
    case KN_TYPE_Q4_0:
    case KN_TYPE_Q4_1: {
        int off = type == KN_TYPE_Q4_0 ? 2 : 4;
        memcpy(o->d, b, 2);
        if (type == KN_TYPE_Q4_1) memcpy(o->m, b + 2, 2);
        for (int j = 0; j < 16; j++) {
            o->q[j] = b[off + j] & 0x0f;
            o->q[j + 16] = b[off + j] >> 4;
        }
        break;
    }
    case KN_TYPE_Q8_0:
        memcpy(o->d, b, 2);
        memcpy(o->q, b + 2, 32);
        break;
    case KN_TYPE_Q4_K:
    case KN_TYPE_Q5_K: {
        memcpy(o->d, b, 2);
        memcpy(o->m, b + 2, 2);
        const uint8_t *qh = b + 16, *qs = b + (type == KN_TYPE_Q5_K ? 48 : 16);
        for (int j = 0; j < 8; j++) {
            k4_scale_min(b + 4, j, &o->sc[j], &o->mn[j]);
            for (int l = 0; l < 32; l++) {
                int q = (qs[(j / 2) * 32 + l] >> (4 * (j % 2))) & 0x0f;
                if (type == KN_TYPE_Q5_K) q |= ((qh[l] >> j) & 1) << 4;
                o->q[32 * j + l] = (uint8_t)q;
            }
        }
        break;
    }
    case KN_TYPE_Q6_K: {
        const uint8_t *ql = b, *qh = b + 128;
        memcpy(o->sc, b + 192, 16);
        memcpy(o->d, b + 208, 2);
        for (int e = 0; e < 256; e++) {
            int half = e / 128, r = e % 128;
            int lo = (ql[half * 64 + r % 64] >> (4 * (r / 64))) & 0x0f;
            int hi = (qh[half * 32 + r % 32] >> (2 * (r / 32))) & 3;
            o->q[e] = (uint8_t)(lo | hi << 4);
        }
        break;
    }
    default: break;
    }
}

/* ---- one block of 8 rows in the X8 layout ---- */

static void put_f16s(uint8_t *out, const dec_block *rb, int which) {
    for (int r = 0; r < KN_GROUP; r++) memcpy(out + 2 * r, which ? rb[r].m : rb[r].d, 2);
}

/* nib[v][r][i] over nv vectors: low nibble element lo_base + 4v + i, high hi_base + 4v + i. */
static void put_nibbles(uint8_t *out, const dec_block *rb, int nv, int lo_base, int hi_base) {
    for (int v = 0; v < nv; v++)
        for (int r = 0; r < KN_GROUP; r++)
            for (int i = 0; i < 4; i++)
                out[(v * KN_GROUP + r) * 4 + i] =
                    (uint8_t)((rb[r].q[lo_base + 4 * v + i] & 0x0f) |
                              (rb[r].q[hi_base + 4 * v + i] & 0x0f) << 4);
}

static void put_block(uint32_t type, uint8_t *o, const dec_block *rb) {
    switch (type) {
    case KN_TYPE_Q4_0:
        put_f16s(o, rb, 0);
        put_nibbles(o + 16, rb, 4, 0, 16);
        break;
    case KN_TYPE_Q4_1:
        put_f16s(o, rb, 0);
        put_f16s(o + 16, rb, 1);
        put_nibbles(o + 32, rb, 4, 0, 16);
        break;
    case KN_TYPE_Q8_0:
        put_f16s(o, rb, 0);
        for (int v = 0; v < 8; v++)
            for (int r = 0; r < KN_GROUP; r++) memcpy(o + 16 + (v * 8 + r) * 4, rb[r].q + 4 * v, 4);
        break;
    case KN_TYPE_Q4_K:
    case KN_TYPE_Q5_K: {
        put_f16s(o, rb, 0);
        put_f16s(o + 16, rb, 1);
        for (int j = 0; j < 8; j++)
            for (int r = 0; r < KN_GROUP; r++) o[32 + j * 8 + r] = rb[r].sc[j];
        for (int p = 0; p < 4; p++)
            for (int r = 0; r < KN_GROUP; r++) {
                o[96 + (p * 8 + r) * 2] = rb[r].mn[2 * p];
                o[96 + (p * 8 + r) * 2 + 1] = rb[r].mn[2 * p + 1];
            }
        uint8_t *nib = o + 160;
        if (type == KN_TYPE_Q5_K) {
            uint8_t *qh = o + 160;
            nib = o + 160 + 256;
            for (int p = 0; p < 4; p++)
                for (int u = 0; u < 2; u++)
                    for (int r = 0; r < KN_GROUP; r++)
                        for (int i = 0; i < 4; i++) {
                            int bits = 0;
                            for (int k = 0; k < 4; k++) {
                                int v = 4 * u + k;
                                bits |= (rb[r].q[64 * p + 4 * v + i] >> 4 & 1) << (2 * k);
                                bits |= (rb[r].q[64 * p + 32 + 4 * v + i] >> 4 & 1) << (2 * k + 1);
                            }
                            qh[((p * 2 + u) * KN_GROUP + r) * 4 + i] = (uint8_t)bits;
                        }
        }
        for (int p = 0; p < 4; p++) put_nibbles(nib + p * 256, rb, 8, 64 * p, 64 * p + 32);
        break;
    }
    case KN_TYPE_Q6_K: {
        put_f16s(o, rb, 0);
        for (int p = 0; p < 8; p++)
            for (int r = 0; r < KN_GROUP; r++) {
                o[16 + (p * 8 + r) * 2] = rb[r].sc[2 * p];
                o[16 + (p * 8 + r) * 2 + 1] = rb[r].sc[2 * p + 1];
            }
        uint8_t *qh = o + 144, *nib = o + 144 + 512;
        for (int p = 0; p < 4; p++)
            for (int u = 0; u < 4; u++)
                for (int r = 0; r < KN_GROUP; r++)
                    for (int i = 0; i < 4; i++) {
                        int bits = 0;
                        for (int k = 0; k < 2; k++) {
                            int v = 2 * u + k;
                            bits |= (rb[r].q[64 * p + 4 * v + i] >> 4 & 3) << (4 * k);
                            bits |= (rb[r].q[64 * p + 32 + 4 * v + i] >> 4 & 3) << (4 * k + 2);
                        }
                        qh[((p * 4 + u) * KN_GROUP + r) * 4 + i] = (uint8_t)bits;
                    }
        for (int p = 0; p < 4; p++) put_nibbles(nib + p * 256, rb, 8, 64 * p, 64 * p + 32);
        break;
    }
    default: break;
    }
}

void kn_pack_groups(const kn_wmat *w, uint8_t *dst, int g0, int g1) {
    const kn_type_traits *t = kn_type_get(w->type);
    size_t bb = x8_block_bytes(w->type), gb = kn_x8_group_bytes(w->type, w->n_in);
    int nb = w->n_in / (int)t->block;
    dec_block rb[KN_GROUP];
    for (int g = g0; g < g1; g++) {
        uint8_t *out = dst + (size_t)g * gb;
        for (int b = 0; b < nb; b++) {
            for (int r = 0; r < KN_GROUP; r++) {
                int row = g * KN_GROUP + r;
                if (row < w->n_out)
                    decode(w->type, w->data + (size_t)row * w->row_bytes + (size_t)b * t->block_bytes,
                           &rb[r]);
                else
                    memset(&rb[r], 0, sizeof rb[r]);
            }
            put_block(w->type, out + (size_t)b * bb, rb);
        }
    }
}

kn_wmat kn_pack(const kn_wmat *w, uint8_t *dst) {
    kn_pack_groups(w, dst, 0, (w->n_out + KN_GROUP - 1) / KN_GROUP);
    return kn_pack_view(w, dst);
}
