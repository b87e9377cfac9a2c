/* quant.h — GGUF tensor types: their block geometry, and plain-C reference quantize / dequantize.
 *
 * Types keep GGUF's numbering so a type id read from a file needs no translation. Block layouts
 * are GGUF's (ggml-common.h), so every other GGUF reader can read what kiln writes. The
 * reference quantizers for Q4_0, Q4_1 and Q8_0 reproduce gguf-py's (gguf.quants) bit for bit;
 * tests/py/test_quant_oracle.py proves it. */
#ifndef KN_QUANT_H
#define KN_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum kn_type {
    KN_TYPE_F32 = 0,
    KN_TYPE_F16 = 1,
    KN_TYPE_Q4_0 = 2,
    KN_TYPE_Q4_1 = 3,
    KN_TYPE_Q5_0 = 6,
    KN_TYPE_Q5_1 = 7,
    KN_TYPE_Q8_0 = 8,
    KN_TYPE_Q8_1 = 9,
    KN_TYPE_Q2_K = 10,
    KN_TYPE_Q3_K = 11,
    KN_TYPE_Q4_K = 12,
    KN_TYPE_Q5_K = 13,
    KN_TYPE_Q6_K = 14,
    KN_TYPE_Q8_K = 15,
    KN_TYPE_I8 = 24,
    KN_TYPE_I16 = 25,
    KN_TYPE_I32 = 26,
    KN_TYPE_I64 = 27,
    KN_TYPE_F64 = 28,
    KN_TYPE_BF16 = 30,
    KN_TYPE_COUNT_MAX = 64
} kn_type;

typedef struct kn_type_traits {
    const char *name;      /* GGUF's name: "F32", "Q4_0", ... */
    uint32_t block;        /* elements per block (1 for plain types) */
    uint32_t block_bytes;  /* bytes per block */
    bool can_dequantize;   /* a reference dequantizer to F32 exists */
} kn_type_traits;

/* NULL for a type id kiln does not know. */
const kn_type_traits *kn_type_get(uint32_t type);
const char *kn_type_name(uint32_t type); /* "?" for unknown */
/* Type id from GGUF's name ("Q4_0"); -1 if unknown. */
int kn_type_from_name(const char *name);

/* Bytes of one row of ne0 elements; false when ne0 is not a whole number of blocks. */
bool kn_row_bytes(uint32_t type, int64_t ne0, uint64_t *out);

/* IEEE half and bfloat16 conversions (round to nearest even; NaN stays NaN), in plain C
 * (fp16.c): the one implementation outside the x86 kernels, whose inner loops use F16C
 * (kernels/f16_x86.h, tested to agree). */
float kn_fp16_to_fp32(uint16_t h);
uint16_t kn_fp32_to_fp16(float f);
float kn_bf16_to_fp32(uint16_t h);
uint16_t kn_fp32_to_bf16(float f);

typedef uint16_t kn_f16; /* the bits of an IEEE binary16, little-endian in every file */

/* A half stored at p, any alignment (a field of a block inside a mapped file, a cache row). */
static inline kn_f16 kn_f16_bits(const void *p) {
    kn_f16 h;
    memcpy(&h, p, sizeof h);
    return h;
}

static inline float kn_f16_load(const void *p) { return kn_fp16_to_fp32(kn_f16_bits(p)); }

static inline void kn_f16_store(void *p, float f) {
    kn_f16 h = kn_fp32_to_fp16(f);
    memcpy(p, &h, sizeof h);
}

/* Dequantizes n elements (a whole number of blocks) of `type` to F32. Types with
 * can_dequantize: F32, F16, BF16, F64, I8, I16, I32, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K,
 * Q8_K. Returns false for any other type or a partial block. */
bool kn_dequantize(uint32_t type, const void *src, float *dst, int64_t n);

/* Rewrites n_blocks Q5_0 blocks (22 bytes) as Q8_0 blocks (34 bytes) holding the same values
 * exactly: the same f16 scale, q - 16 as an int8. The runtime multiplies Q5_0 weights this way
 * (Q8_0 has native kernels and takes the same 8-bit activations ggml gives Q5_0). */
void kn_q5_0_to_q8_0(const uint8_t *src, uint8_t *dst, size_t n_blocks);

/* Quantizes n elements (a whole number of blocks) from F32 into `type`; returns the bytes
 * written, 0 when the type has no quantizer (F32, F16, BF16, Q4_0, Q4_1, Q8_0 have one).
 * A partial block or negative n also returns 0. */
size_t kn_quantize(uint32_t type, const float *src, void *dst, int64_t n);

/* int4_sym_g128: kiln's symmetric group-wise int4 for the NPU path. Each group of `group`
 * consecutive elements of a row shares one F16 scale d = max|x| / 7; q = clamp(round(x / d),
 * -8, 7) stored as a two's-complement nibble, two per byte, the even element in the low nibble
 * (OpenVINO's i4 packing). n must be a multiple of group, and group even.
 * Details: x is divided by the scale as stored (F16-rounded); round is half away from zero; a
 * scale past F16's range saturates to 65504; an all-zero group gets scale 0 and q = 0. */
void kn_quantize_int4_sym(const float *src, int64_t n, int group, uint8_t *packed,
                          uint16_t *scales);
void kn_dequantize_int4_sym(const uint8_t *packed, const uint16_t *scales, int64_t n, int group,
                            float *dst);
/* int4_sym with `group` (a multiple of 32) written as n / 32 Q4_0 blocks to dst, so that every
 * GGUF reader reads it: each block takes its group's scale, and each two's-complement nibble q
 * becomes Q4_0's biased q + 8 (Q4_0 pairs element j with j + 16 in byte j, where int4_sym pairs
 * 2k with 2k + 1). packed (n / 2 bytes) and scales (n / group) are the caller's scratch, left
 * holding the int4_sym form. */
void kn_quantize_int4_sym_q4_0(const float *src, int64_t n, int group, uint8_t *dst,
                               uint8_t *packed, uint16_t *scales);

#endif
