/* ir_weights.c — GGUF tensors as OpenVINO constants in the compressed-weight pattern.
 *
 * Const q [rows, groups, group] -> Convert f32 -> [Subtract zp [rows, groups, 1]] ->
 * Multiply scale [rows, groups, 1] -> Reshape [rows, cols]. The decompression runs in f32, not
 * the f16 of NNCF's exports: the stored scales are f16 already, but q * d and the Q4_1 zero
 * point -m/d need f32 to reproduce model.gguf exactly (f16 would round q * d to 11 bits), and
 * the plugins accept either precision for the pattern.
 *
 * GGUF block layouts (ggml-common.h): Q4_0 = f16 d + 16 bytes, element j of the 32-block in the
 * low nibble of byte j and element j + 16 in the high nibble, x = d * (nibble - 8); Q4_1 = f16 d,
 * f16 m + 16 bytes, x = d * nibble + m; Q8_0 = f16 d + 32 int8, x = d * q. OpenVINO packs i4/u4
 * two per byte with element 2k in the low nibble of byte k, so nibbles are re-paired here. */
#include <string.h>

#include "bake/openvino/ir_build.h"
#include "quant/blocks.h"

/* Element e of a GGUF 4-bit block's 16 quant bytes. */
static int q4_nibble(const uint8_t *qs, int e) {
    return e < KN_QK / 2 ? qs[e] & 15 : qs[e - KN_QK / 2] >> 4;
}

static int pattern(kn_ovb *b, int q, int zp, int scale, int64_t rows, int64_t cols) {
    int x = kn_ovb_convert(b, q, KN_OV_F32);
    if (zp >= 0) x = kn_ovb_binary(b, "Subtract", x, zp);
    x = kn_ovb_binary(b, "Multiply", x, scale);
    return kn_ovb_reshape(b, x, 2, (int64_t[]){rows, cols});
}

/* Whether every group of `group` elements (a multiple of 32) of every row of a Q4_0 tensor has
 * one scale in all its blocks. */
static bool q4_0_uniform(const uint8_t *data, int64_t rows, int64_t cols, int64_t group) {
    const int64_t bb = sizeof(kn_block_q4_0);
    int64_t nb = cols / KN_QK, per = group / KN_QK;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t b0 = 0; b0 < nb; b0 += per) {
            kn_f16 d = kn_f16_bits(KN_AT(data + (r * nb + b0) * bb, kn_block_q4_0, d));
            for (int64_t k = 1; k < per; k++)
                if (kn_f16_bits(KN_AT(data + (r * nb + b0 + k) * bb, kn_block_q4_0, d)) != d)
                    return false;
        }
    return true;
}

static int64_t q4_0_group(const kn_gguf_tensor *t, int want) {
    int64_t rows = t->ne[1], cols = t->ne[0];
    int64_t first = want < 0 ? cols : want;
    int64_t cand[4] = {first, 128, 64, KN_QK};
    for (int i = 0; i < 4; i++) {
        int64_t g = cand[i];
        if (g > first || g % KN_QK || cols % g) continue;
        if (g == KN_QK || q4_0_uniform(t->data, rows, cols, g)) return g;
    }
    return KN_QK;
}

static int weight_q4(kn_ovb *b, const kn_gguf_tensor *t, int want) {
    bool q41 = t->type == KN_TYPE_Q4_1;
    int64_t rows = t->ne[1], cols = t->ne[0], nb = cols / KN_QK;
    int64_t bb = q41 ? (int64_t)sizeof(kn_block_q4_1) : (int64_t)sizeof(kn_block_q4_0);
    int64_t group = q41 ? KN_QK : q4_0_group(t, want), ng = cols / group, per = group / KN_QK;
    uint8_t *packed = kn_malloc((size_t)(rows * cols / 2));
    float *scale = kn_malloc(sizeof(float) * (size_t)(rows * ng));
    float *zp = q41 ? kn_malloc(sizeof(float) * (size_t)(rows * ng)) : NULL;
    if (!packed || !scale || (q41 && !zp)) {
        kn_free(packed), kn_free(scale), kn_free(zp);
        return kn_ovb_fail(b, KILN_ERR_NOMEM, "openvino IR: out of memory");
    }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t blk = 0; blk < nb; blk++) {
            const uint8_t *p = t->data + (r * nb + blk) * bb;
            /* Q4_0's and Q4_1's d share an offset (and their qs differ) */
            float d = kn_f16_load(KN_AT(p, kn_block_q4_0, d));
            int64_t gi = r * ng + blk / per, e0 = r * cols + blk * KN_QK;
            bool flat = false;
            if (q41) {
                float m = kn_f16_load(KN_AT(p, kn_block_q4_1, m));
                /* x = (q - zp) * d with zp = -m / d; a zero scale has no zero point, so its
                 * block becomes q = 0, zp = -1, scale m, which is m again. */
                flat = d == 0.0f;
                scale[gi] = flat ? m : d;
                zp[gi] = flat ? -1.0f : -m / d;
            } else {
                scale[gi] = d;
            }
            const uint8_t *qs = q41 ? KN_AT(p, kn_block_q4_1, qs) : KN_AT(p, kn_block_q4_0, qs);
            for (int e = 0; e < KN_QK; e++) {
                int n = flat ? 0 : q4_nibble(qs, e);
                kn_int4_put(packed, e0 + e, q41 ? n : n ^ 8); /* nibble - 8 as two's complement */
            }
        }
    int64_t qs_shape[3] = {rows, ng, group}, s_shape[3] = {rows, ng, 1};
    int q = kn_ovb_const(b, q41 ? KN_OV_U4 : KN_OV_I4, 3, qs_shape, packed);
    int z = q41 ? kn_ovb_const(b, KN_OV_F32, 3, s_shape, zp) : -1;
    int s = kn_ovb_const(b, KN_OV_F32, 3, s_shape, scale);
    kn_free(packed), kn_free(scale), kn_free(zp);
    return pattern(b, q, z, s, rows, cols);
}

static int weight_q8_0(kn_ovb *b, const kn_gguf_tensor *t) {
    int64_t rows = t->ne[1], cols = t->ne[0], nb = cols / KN_QK;
    int8_t *qv = kn_malloc((size_t)(rows * cols));
    float *scale = kn_malloc(sizeof(float) * (size_t)(rows * nb));
    if (!qv || !scale) {
        kn_free(qv), kn_free(scale);
        return kn_ovb_fail(b, KILN_ERR_NOMEM, "openvino IR: out of memory");
    }
    for (int64_t i = 0; i < rows * nb; i++) {
        const uint8_t *p = t->data + i * (int64_t)sizeof(kn_block_q8_0);
        scale[i] = kn_f16_load(KN_AT(p, kn_block_q8_0, d));
        memcpy(qv + i * KN_QK, KN_AT(p, kn_block_q8_0, qs), KN_QK);
    }
    int64_t qs_shape[3] = {rows, nb, KN_QK}, s_shape[3] = {rows, nb, 1};
    int q = kn_ovb_const(b, KN_OV_I8, 3, qs_shape, qv);
    int s = kn_ovb_const(b, KN_OV_F32, 3, s_shape, scale);
    kn_free(qv), kn_free(scale);
    return pattern(b, q, -1, s, rows, cols);
}

/* Any other type: dequantized once to an f32 Const (exact, 4 bytes a weight). */
static int weight_f32(kn_ovb *b, const kn_gguf_tensor *t, int rank, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < rank; i++) n *= shape[i];
    if (t->type == KN_TYPE_F32) return kn_ovb_const(b, KN_OV_F32, rank, shape, t->data);
    float *f = kn_malloc(sizeof(float) * (size_t)n);
    if (!f) return kn_ovb_fail(b, KILN_ERR_NOMEM, "openvino IR: out of memory");
    int v = -1;
    if (!kn_dequantize(t->type, t->data, f, n))
        kn_ovb_fail(b, KILN_ERR_UNSUPPORTED, "openvino IR: %.*s: type %s cannot be read",
                    (int)t->name.len, t->name.ptr, kn_type_name(t->type));
    else
        v = kn_ovb_const(b, KN_OV_F32, rank, shape, f);
    kn_free(f);
    return v;
}

/* The bytes a tensor of this type and shape must have; false for a partial block. */
static bool size_ok(const kn_gguf_tensor *t, int64_t rows, int64_t cols) {
    uint64_t rb, n;
    return kn_row_bytes(t->type, cols, &rb) && kn_mul_ok(rb, (uint64_t)rows, &n) &&
           n <= t->nbytes;
}

int kn_ov_weight_matrix(kn_ovb *b, const kn_gguf_tensor *t, int q4_0_group) {
    if (!kn_ovb_ok(b)) return -1;
    int64_t rows = t->ne[1], cols = t->ne[0];
    if (t->n_dims != 2 || rows <= 0 || cols <= 0 || !size_ok(t, rows, cols))
        return kn_ovb_fail(b, KILN_ERR_FORMAT, "openvino IR: %.*s: not a whole 2-D matrix",
                           (int)t->name.len, t->name.ptr);
    int64_t shape[2] = {rows, cols};
    switch (t->type) {
    case KN_TYPE_Q4_0:
    case KN_TYPE_Q4_1: return weight_q4(b, t, q4_0_group);
    case KN_TYPE_Q8_0: return weight_q8_0(b, t);
    case KN_TYPE_F16:
        return kn_ovb_convert(b, kn_ovb_const(b, KN_OV_F16, 2, shape, t->data), KN_OV_F32);
    default: return weight_f32(b, t, 2, shape);
    }
}

int kn_ov_weight_vector(kn_ovb *b, const kn_gguf_tensor *t) {
    if (!kn_ovb_ok(b)) return -1;
    int64_t n = t->ne[0];
    if (t->n_dims != 1 || n <= 0 || !size_ok(t, 1, n))
        return kn_ovb_fail(b, KILN_ERR_FORMAT, "openvino IR: %.*s: not a whole vector",
                           (int)t->name.len, t->name.ptr);
    return weight_f32(b, t, 1, &n);
}
