/* blocks.h — the byte layouts of quantized blocks, as structs: GGUF's (ggml-common.h) and
 * kiln's own (the 8-row interleaved layout of the x86 kernel tables, KN_LAYOUT_X8, and the
 * int4_sym nibble packing). The one place a block's size or a field's offset is written down.
 *
 * Weights sit inside a mapped file with no alignment promise, so code does not dereference these
 * structs: it takes sizeof (bytes per block) and offsetof (where a field starts) and reads the
 * bytes through memcpy (kn_f16_load, quant.h). Both are compile-time constants, so a kernel that
 * writes `blk + offsetof(kn_block_q6_k, d)` compiles to what `blk + 208` did.
 *
 * Every field is a byte array or a 16/32-bit value at an offset that is a multiple of its size,
 * so no struct has padding; the _Static_asserts below prove it against GGUF's sizes. */
#ifndef KN_QUANT_BLOCKS_H
#define KN_QUANT_BLOCKS_H

#include <stddef.h>
#include <stdint.h>

#include "quant/quant.h"

#define KN_QK 32          /* elements per block of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 */
#define KN_QK_K 256       /* elements per super-block of the K-quants and Q8_K */
#define KN_K_SCALE_SIZE 12 /* Q3_K..Q5_K's packed 6-bit scales (and mins) */

/* Where field f of block type T starts in the block at byte pointer b. */
#define KN_AT(b, T, f) ((b) + offsetof(T, f))
/* Bytes of one entry of array field f of T (the step between f[i] and f[i + 1]). */
#define KN_STRIDE(T, f) sizeof(((T *)0)->f[0])

/* ---- GGUF (ggml-common.h) ---- */

typedef struct kn_block_q4_0 { /* x = d * (q - 8); element j low nibble of qs[j], j+16 high */
    kn_f16 d;
    uint8_t qs[KN_QK / 2];
} kn_block_q4_0;

typedef struct kn_block_q4_1 { /* x = d * q + m; nibbles as Q4_0 */
    kn_f16 d, m;
    uint8_t qs[KN_QK / 2];
} kn_block_q4_1;

typedef struct kn_block_q5_0 { /* x = d * (q - 16); bit j of qh is element j's fifth bit */
    kn_f16 d;
    uint8_t qh[4];
    uint8_t qs[KN_QK / 2];
} kn_block_q5_0;

typedef struct kn_block_q5_1 {
    kn_f16 d, m;
    uint8_t qh[4];
    uint8_t qs[KN_QK / 2];
} kn_block_q5_1;

typedef struct kn_block_q8_0 { /* x = d * q */
    kn_f16 d;
    int8_t qs[KN_QK];
} kn_block_q8_0;

typedef struct kn_block_q8_1 { /* s = d * sum(q) */
    kn_f16 d, s;
    int8_t qs[KN_QK];
} kn_block_q8_1;

typedef struct kn_block_q2_k {
    uint8_t scales[KN_QK_K / 16]; /* low nibble scale, high nibble min */
    uint8_t qs[KN_QK_K / 4];
    kn_f16 d, dmin;
} kn_block_q2_k;

typedef struct kn_block_q3_k {
    uint8_t hmask[KN_QK_K / 8];
    uint8_t qs[KN_QK_K / 4];
    uint8_t scales[KN_K_SCALE_SIZE]; /* sixteen 6-bit signed scales, biased by 32 */
    kn_f16 d;
} kn_block_q3_k;

typedef struct kn_block_q4_k {
    kn_f16 d, dmin;
    uint8_t scales[KN_K_SCALE_SIZE]; /* eight 6-bit scales and eight 6-bit mins */
    uint8_t qs[KN_QK_K / 2];
} kn_block_q4_k;

typedef struct kn_block_q5_k {
    kn_f16 d, dmin;
    uint8_t scales[KN_K_SCALE_SIZE];
    uint8_t qh[KN_QK_K / 8];
    uint8_t qs[KN_QK_K / 2];
} kn_block_q5_k;

typedef struct kn_block_q6_k {
    uint8_t ql[KN_QK_K / 2];
    uint8_t qh[KN_QK_K / 4];
    int8_t scales[KN_QK_K / 16];
    kn_f16 d;
} kn_block_q6_k;

typedef struct kn_block_q8_k {
    float d;
    int8_t qs[KN_QK_K];
    int16_t bsums[KN_QK_K / 16];
} kn_block_q8_k;

_Static_assert(sizeof(kn_block_q4_0) == 18, "Q4_0 is 18 bytes in GGUF");
_Static_assert(sizeof(kn_block_q4_1) == 20, "Q4_1 is 20 bytes in GGUF");
_Static_assert(sizeof(kn_block_q5_0) == 22, "Q5_0 is 22 bytes in GGUF");
_Static_assert(sizeof(kn_block_q5_1) == 24, "Q5_1 is 24 bytes in GGUF");
_Static_assert(sizeof(kn_block_q8_0) == 34, "Q8_0 is 34 bytes in GGUF");
_Static_assert(sizeof(kn_block_q8_1) == 36, "Q8_1 is 36 bytes in GGUF");
_Static_assert(sizeof(kn_block_q2_k) == 84, "Q2_K is 84 bytes in GGUF");
_Static_assert(sizeof(kn_block_q3_k) == 110, "Q3_K is 110 bytes in GGUF");
_Static_assert(sizeof(kn_block_q4_k) == 144, "Q4_K is 144 bytes in GGUF");
_Static_assert(sizeof(kn_block_q5_k) == 176, "Q5_K is 176 bytes in GGUF");
_Static_assert(sizeof(kn_block_q6_k) == 210, "Q6_K is 210 bytes in GGUF");
_Static_assert(sizeof(kn_block_q8_k) == 292, "Q8_K is 292 bytes in GGUF");
_Static_assert(offsetof(kn_block_q6_k, scales) == 192 && offsetof(kn_block_q6_k, d) == 208,
               "Q6_K's fields where ggml puts them");
_Static_assert(offsetof(kn_block_q4_k, d) == offsetof(kn_block_q5_k, d) &&
                   offsetof(kn_block_q4_k, dmin) == offsetof(kn_block_q5_k, dmin) &&
                   offsetof(kn_block_q4_k, scales) == offsetof(kn_block_q5_k, scales),
               "Q5_K is Q4_K's head, so code shared by the two may read either's");
_Static_assert(offsetof(kn_block_q2_k, d) == 80 && offsetof(kn_block_q3_k, d) == 108,
               "Q2_K's and Q3_K's scales where ggml puts them");

/* ---- KN_LAYOUT_X8: one block of 8 rows interleaved for the x86 kernel tables ----
 * (kernels/pack.c writes them, kernels/x86_x8.h reads them; docs/KERNELS.md). "[v][r][i]" is
 * 32-byte vector v, lane r = row 8g + r, byte i. */

#define KN_X8_GROUP 8

typedef struct kn_x8_q4_0 {
    kn_f16 d[KN_X8_GROUP];
    uint8_t qs[4][KN_X8_GROUP][4]; /* q_r[4v+i] | q_r[16+4v+i] << 4 */
} kn_x8_q4_0;

typedef struct kn_x8_q4_1 {
    kn_f16 d[KN_X8_GROUP], m[KN_X8_GROUP];
    uint8_t qs[4][KN_X8_GROUP][4];
} kn_x8_q4_1;

typedef struct kn_x8_q8_0 {
    kn_f16 d[KN_X8_GROUP];
    int8_t qs[8][KN_X8_GROUP][4];
} kn_x8_q8_0;

typedef struct kn_x8_q4_k {
    kn_f16 d[KN_X8_GROUP], dmin[KN_X8_GROUP];
    uint8_t sc[8][KN_X8_GROUP];     /* 6-bit scales widened to bytes, [sub-block][row] */
    uint8_t mn[4][KN_X8_GROUP][2];  /* mins of sub-blocks 2p, 2p+1 */
    uint8_t nib[4][8][KN_X8_GROUP][4];
} kn_x8_q4_k;

typedef struct kn_x8_q5_k {
    kn_f16 d[KN_X8_GROUP], dmin[KN_X8_GROUP];
    uint8_t sc[8][KN_X8_GROUP];
    uint8_t mn[4][KN_X8_GROUP][2];
    uint8_t qh[4][2][KN_X8_GROUP][4]; /* the fifth bits, two per byte position */
    uint8_t nib[4][8][KN_X8_GROUP][4];
} kn_x8_q5_k;

typedef struct kn_x8_q6_k {
    kn_f16 d[KN_X8_GROUP];
    int8_t sc[8][KN_X8_GROUP][2];     /* scales of the 16-element sub-blocks 2p, 2p+1 */
    uint8_t qh[4][4][KN_X8_GROUP][4]; /* the top 2 bits, four per byte position */
    uint8_t nib[4][8][KN_X8_GROUP][4];
} kn_x8_q6_k;

_Static_assert(sizeof(kn_x8_q4_0) == 144 &&
                   sizeof(kn_x8_q4_0) == KN_X8_GROUP * sizeof(kn_block_q4_0),
               "X8 Q4_0 is 8 GGUF blocks");
_Static_assert(sizeof(kn_x8_q4_1) == 160 &&
                   sizeof(kn_x8_q4_1) == KN_X8_GROUP * sizeof(kn_block_q4_1),
               "X8 Q4_1 is 8 GGUF blocks");
_Static_assert(sizeof(kn_x8_q8_0) == 272 &&
                   sizeof(kn_x8_q8_0) == KN_X8_GROUP * sizeof(kn_block_q8_0),
               "X8 Q8_0 is 8 GGUF blocks");
_Static_assert(sizeof(kn_x8_q4_k) == 1184, "X8 Q4_K: 8 blocks plus 32 bytes of widened scales");
_Static_assert(sizeof(kn_x8_q5_k) == 1440, "X8 Q5_K: 8 blocks plus 32 bytes of widened scales");
_Static_assert(sizeof(kn_x8_q6_k) == 1680 &&
                   sizeof(kn_x8_q6_k) == KN_X8_GROUP * sizeof(kn_block_q6_k),
               "X8 Q6_K is 8 GGUF blocks");
_Static_assert(offsetof(kn_x8_q4_k, nib) == 160 && offsetof(kn_x8_q5_k, qh) == 160 &&
                   offsetof(kn_x8_q5_k, nib) == 416 && offsetof(kn_x8_q6_k, qh) == 144 &&
                   offsetof(kn_x8_q6_k, nib) == 656,
               "X8 K-quant fields where docs/KERNELS.md puts them");
_Static_assert(offsetof(kn_x8_q4_k, dmin) == offsetof(kn_x8_q5_k, dmin) &&
                   offsetof(kn_x8_q4_k, sc) == offsetof(kn_x8_q5_k, sc) &&
                   offsetof(kn_x8_q4_k, mn) == offsetof(kn_x8_q5_k, mn),
               "X8 Q5_K is Q4_K's head, so code shared by the two may read either's");
_Static_assert(offsetof(kn_x8_q4_0, d) == 0 && offsetof(kn_x8_q4_1, d) == 0 &&
                   offsetof(kn_x8_q8_0, d) == 0 && offsetof(kn_x8_q4_k, d) == 0 &&
                   offsetof(kn_x8_q5_k, d) == 0 && offsetof(kn_x8_q6_k, d) == 0,
               "the 8 rows' scales open every X8 block");

/* ---- int4_sym (kn_quantize_int4_sym): two's-complement nibbles, two per byte, the even
 * element in the low nibble (OpenVINO's i4/u4 packing); one F16 scale per group. ---- */

static inline int kn_int4_get(const uint8_t *packed, int64_t i) {
    return (packed[i / 2] >> (4 * (i % 2))) & 0x0f;
}

/* Writes nibble v & 15 of element i; an even i clears the byte's high nibble, so a row is
 * written in element order. */
static inline void kn_int4_put(uint8_t *packed, int64_t i, int v) {
    uint8_t nib = (uint8_t)((unsigned)v & 0x0fu);
    if (i % 2 == 0) packed[i / 2] = nib;
    else packed[i / 2] |= (uint8_t)(nib << 4);
}

#endif
