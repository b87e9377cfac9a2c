/* quant_ref.c — plain-C reference dequantizers for GGUF block formats, and the quantizers that
 * kiln writes (F32, F16, BF16, Q4_0, Q4_1, Q8_0).
 *
 * Block layouts are ggml's (ggml-common.h); element order within a block follows ggml's
 * dequantize_row_* functions. Two rules keep the results bit-identical to gguf-py, the oracle
 * in tests/py/test_quant_oracle.py:
 *  - every float operation is its own statement, so no compiler may fuse a multiply and an add
 *    into an FMA that numpy (one ufunc per operation) would round twice;
 *  - blocks are read byte-wise and multi-byte fields through memcpy, because a tensor inside a
 *    mapped GGUF file has no alignment promise. */
#include <math.h>
#include <string.h>

#include "quant/blocks.h"

/* ---- plain types ---- */

static void deq_f16(const uint8_t *s, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = kn_f16_load(s + sizeof(kn_f16) * i);
}

static void deq_bf16(const uint8_t *s, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, sizeof h);
        y[i] = kn_bf16_to_fp32(h);
    }
}

static void deq_f64(const uint8_t *s, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double v;
        memcpy(&v, s + 8 * i, sizeof v);
        y[i] = (float)v;
    }
}

static void deq_i8(const uint8_t *s, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = (float)(int8_t)s[i];
}

static void deq_i16(const uint8_t *s, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        int16_t v;
        memcpy(&v, s + 2 * i, sizeof v);
        y[i] = (float)v;
    }
}

static void deq_i32(const uint8_t *s, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        int32_t v;
        memcpy(&v, s + 4 * i, sizeof v);
        y[i] = (float)v;
    }
}

/* ---- legacy 32-element blocks: nibble j holds element j, its high nibble element j + 16 ---- */

/* Q4_0: f16 d; 16 bytes of nibbles; x = d * (q - 8). */
static void deq_q4_0(const uint8_t *b, float *y) {
    float d = kn_f16_load(KN_AT(b, kn_block_q4_0, d));
    const uint8_t *qs = KN_AT(b, kn_block_q4_0, qs);
    for (int j = 0; j < KN_QK / 2; j++) {
        y[j] = d * (float)((qs[j] & 0x0f) - 8);
        y[j + KN_QK / 2] = d * (float)((qs[j] >> 4) - 8);
    }
}

/* Q4_1: f16 d, f16 m; 16 bytes of nibbles; x = d * q + m. */
static void deq_q4_1(const uint8_t *b, float *y) {
    float d = kn_f16_load(KN_AT(b, kn_block_q4_1, d)), m = kn_f16_load(KN_AT(b, kn_block_q4_1, m));
    const uint8_t *qs = KN_AT(b, kn_block_q4_1, qs);
    for (int j = 0; j < KN_QK / 2; j++) {
        float lo = d * (float)(qs[j] & 0x0f);
        float hi = d * (float)(qs[j] >> 4);
        y[j] = lo + m;
        y[j + KN_QK / 2] = hi + m;
    }
}

/* Fifth bits of Q5_0 / Q5_1: a little-endian u32, bit i for element i. */
static uint32_t rd_qh(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Q5_0: f16 d; qh[4]; 16 bytes of nibbles; x = d * (q - 16). */
static void deq_q5_0(const uint8_t *b, float *y) {
    float d = kn_f16_load(KN_AT(b, kn_block_q5_0, d));
    uint32_t qh = rd_qh(KN_AT(b, kn_block_q5_0, qh));
    const uint8_t *qs = KN_AT(b, kn_block_q5_0, qs);
    for (int j = 0; j < KN_QK / 2; j++) {
        int q0 = (qs[j] & 0x0f) | (int)((qh >> j) & 1u) << 4;
        int q1 = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1u) << 4;
        y[j] = d * (float)(q0 - 16);
        y[j + KN_QK / 2] = d * (float)(q1 - 16);
    }
}

void kn_q5_0_to_q8_0(const uint8_t *src, uint8_t *dst, size_t n_blocks) {
    for (size_t i = 0; i < n_blocks;
         i++, src += sizeof(kn_block_q5_0), dst += sizeof(kn_block_q8_0)) {
        uint32_t qh = rd_qh(KN_AT(src, kn_block_q5_0, qh));
        const uint8_t *qs = KN_AT(src, kn_block_q5_0, qs);
        uint8_t *q8 = KN_AT(dst, kn_block_q8_0, qs);
        /* the same f16 scale */
        memcpy(KN_AT(dst, kn_block_q8_0, d), KN_AT(src, kn_block_q5_0, d), sizeof(uint16_t));
        for (int j = 0; j < KN_QK / 2; j++) {
            int q0 = (qs[j] & 0x0f) | (int)((qh >> j) & 1u) << 4;
            int q1 = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1u) << 4;
            q8[j] = (uint8_t)(int8_t)(q0 - 16);
            q8[j + KN_QK / 2] = (uint8_t)(int8_t)(q1 - 16);
        }
    }
}

/* Q5_1: f16 d, f16 m; qh[4]; 16 bytes of nibbles; x = d * q + m. */
static void deq_q5_1(const uint8_t *b, float *y) {
    float d = kn_f16_load(KN_AT(b, kn_block_q5_1, d)), m = kn_f16_load(KN_AT(b, kn_block_q5_1, m));
    uint32_t qh = rd_qh(KN_AT(b, kn_block_q5_1, qh));
    const uint8_t *qs = KN_AT(b, kn_block_q5_1, qs);
    for (int j = 0; j < KN_QK / 2; j++) {
        int q0 = (qs[j] & 0x0f) | (int)((qh >> j) & 1u) << 4;
        int q1 = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1u) << 4;
        float lo = d * (float)q0;
        float hi = d * (float)q1;
        y[j] = lo + m;
        y[j + KN_QK / 2] = hi + m;
    }
}

/* Q8_0: f16 d; 32 int8; x = d * q. */
static void deq_q8_0(const uint8_t *b, float *y) {
    float d = kn_f16_load(KN_AT(b, kn_block_q8_0, d));
    const uint8_t *qs = KN_AT(b, kn_block_q8_0, qs);
    for (int j = 0; j < KN_QK; j++) y[j] = (float)(int8_t)qs[j] * d;
}

/* ---- K-quants: 256-element super-blocks of 16 or 8 sub-blocks ---- */

/* Q2_K: scales[16] (low nibble scale, high nibble min), qs[64], f16 d, f16 dmin. Each 128-half
 * reads 32 bytes of qs four times, shifting by 2 bits each pass; sub-block = element / 16. */
static void deq_q2_k(const uint8_t *b, float *y) {
    const uint8_t *sc = KN_AT(b, kn_block_q2_k, scales), *qs = KN_AT(b, kn_block_q2_k, qs);
    float d = kn_f16_load(KN_AT(b, kn_block_q2_k, d));
    float dmin = kn_f16_load(KN_AT(b, kn_block_q2_k, dmin));
    for (int e = 0; e < KN_QK_K; e++) {
        int half = e / 128, pass = (e % 128) / 32, l = e % 32;
        int q = (qs[half * 32 + l] >> (2 * pass)) & 3;
        uint8_t s = sc[e / 16];
        float dl = d * (float)(s & 0x0f);
        float ml = dmin * (float)(s >> 4);
        float v = dl * (float)q;
        y[e] = v - ml;
    }
}

/* Q3_K: hmask[32], qs[64], scales[12] (sixteen 6-bit signed scales, biased by 32), f16 d.
 * Low 2 bits as in Q2_K; the high bit of element e is bit e / 32 of hmask[e % 32], and a
 * clear bit means "subtract 4". */
static void deq_q3_k(const uint8_t *b, float *y) {
    const uint8_t *hm = KN_AT(b, kn_block_q3_k, hmask), *qs = KN_AT(b, kn_block_q3_k, qs);
    const uint8_t *sp = KN_AT(b, kn_block_q3_k, scales);
    float d = kn_f16_load(KN_AT(b, kn_block_q3_k, d));
    int8_t scales[16];
    for (int i = 0; i < 16; i++) {
        int lo = (i < 8 ? sp[i] : sp[i - 8] >> 4) & 0x0f;
        int hi = (sp[8 + i % 4] >> (2 * (i / 4))) & 3;
        scales[i] = (int8_t)((lo | hi << 4) - 32);
    }
    for (int e = 0; e < KN_QK_K; e++) {
        int half = e / 128, pass = (e % 128) / 32, l = e % 32;
        int q = (qs[half * 32 + l] >> (2 * pass)) & 3;
        if (!((hm[l] >> (e / 32)) & 1)) q -= 4;
        float dl = d * (float)scales[e / 16];
        y[e] = dl * (float)q;
    }
}

/* The 12-byte scale block of Q4_K / Q5_K: eight 6-bit scales and eight 6-bit mins. Sub-blocks
 * 0-3 keep them in the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 put
 * their low 4 bits in bytes 8-11 and their top 2 bits in the spare top bits of bytes 0-7. */
static void k4_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Q4_K: f16 d, f16 dmin, scales[12], qs[128]; 8 sub-blocks of 32. Byte run i (32 bytes) holds
 * sub-block 2i in low nibbles and 2i + 1 in high nibbles. x = d*sc * q - dmin*m. */
static void deq_q4_k(const uint8_t *b, float *y) {
    float d = kn_f16_load(KN_AT(b, kn_block_q4_k, d));
    float dmin = kn_f16_load(KN_AT(b, kn_block_q4_k, dmin));
    const uint8_t *sp = KN_AT(b, kn_block_q4_k, scales), *qs = KN_AT(b, kn_block_q4_k, qs);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        k4_scale_min(sp, j, &sc, &m);
        float d1 = d * (float)sc;
        float m1 = dmin * (float)m;
        for (int l = 0; l < 32; l++) {
            int q = (qs[(j / 2) * 32 + l] >> (4 * (j % 2))) & 0x0f;
            float v = d1 * (float)q;
            y[j * 32 + l] = v - m1;
        }
    }
}

/* Q5_K: Q4_K plus qh[32] before qs: bit j of qh[l] is the fifth bit of element 32j + l. */
static void deq_q5_k(const uint8_t *b, float *y) {
    float d = kn_f16_load(KN_AT(b, kn_block_q5_k, d));
    float dmin = kn_f16_load(KN_AT(b, kn_block_q5_k, dmin));
    const uint8_t *sp = KN_AT(b, kn_block_q5_k, scales), *qh = KN_AT(b, kn_block_q5_k, qh);
    const uint8_t *qs = KN_AT(b, kn_block_q5_k, qs);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        k4_scale_min(sp, j, &sc, &m);
        float d1 = d * (float)sc;
        float m1 = dmin * (float)m;
        for (int l = 0; l < 32; l++) {
            int q = (qs[(j / 2) * 32 + l] >> (4 * (j % 2))) & 0x0f;
            q |= ((qh[l] >> j) & 1) << 4;
            float v = d1 * (float)q;
            y[j * 32 + l] = v - m1;
        }
    }
}

/* Q6_K: ql[128], qh[64], int8 scales[16], f16 d. Per 128-half: element k < 64 takes the low
 * nibble of ql[k], element 64 + k the high nibble; the top 2 bits of element 32p + l come from
 * qh[l] >> 2p. x = (d * scale) * (q - 32). */
static void deq_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = KN_AT(b, kn_block_q6_k, ql), *qh = KN_AT(b, kn_block_q6_k, qh);
    const int8_t *sc = (const int8_t *)KN_AT(b, kn_block_q6_k, scales);
    float d = kn_f16_load(KN_AT(b, kn_block_q6_k, d));
    for (int e = 0; e < KN_QK_K; e++) {
        int half = e / 128, r = e % 128;
        int lo = (ql[half * 64 + r % 64] >> (4 * (r / 64))) & 0x0f;
        int hi = (qh[half * 32 + r % 32] >> (2 * (r / 32))) & 3;
        float ds = d * (float)sc[e / 16];
        y[e] = ds * (float)((lo | hi << 4) - 32);
    }
}

/* Q8_K: f32 d, int8 qs[256], int16 bsums[16] (sums for dot products; not needed here). */
static void deq_q8_k(const uint8_t *b, float *y) {
    float d;
    memcpy(&d, KN_AT(b, kn_block_q8_k, d), sizeof d);
    const uint8_t *qs = KN_AT(b, kn_block_q8_k, qs);
    for (int j = 0; j < KN_QK_K; j++) y[j] = d * (float)(int8_t)qs[j];
}

typedef void (*deq_block_fn)(const uint8_t *block, float *y);

static deq_block_fn block_dequantizer(uint32_t type) {
    switch (type) {
    case KN_TYPE_Q4_0: return deq_q4_0;
    case KN_TYPE_Q4_1: return deq_q4_1;
    case KN_TYPE_Q5_0: return deq_q5_0;
    case KN_TYPE_Q5_1: return deq_q5_1;
    case KN_TYPE_Q8_0: return deq_q8_0;
    case KN_TYPE_Q2_K: return deq_q2_k;
    case KN_TYPE_Q3_K: return deq_q3_k;
    case KN_TYPE_Q4_K: return deq_q4_k;
    case KN_TYPE_Q5_K: return deq_q5_k;
    case KN_TYPE_Q6_K: return deq_q6_k;
    case KN_TYPE_Q8_K: return deq_q8_k;
    default: return NULL;
    }
}

bool kn_dequantize(uint32_t type, const void *src, float *dst, int64_t n) {
    const kn_type_traits *t = kn_type_get(type);
    if (!t || !t->can_dequantize || n < 0 || n % t->block != 0) return false;
    const uint8_t *s = src;
    switch (type) {
    case KN_TYPE_F32: memcpy(dst, s, (size_t)n * sizeof(float)); return true;
    case KN_TYPE_F16: deq_f16(s, dst, n); return true;
    case KN_TYPE_BF16: deq_bf16(s, dst, n); return true;
    case KN_TYPE_F64: deq_f64(s, dst, n); return true;
    case KN_TYPE_I8: deq_i8(s, dst, n); return true;
    case KN_TYPE_I16: deq_i16(s, dst, n); return true;
    case KN_TYPE_I32: deq_i32(s, dst, n); return true;
    default: break;
    }
    deq_block_fn fn = block_dequantizer(type);
    if (!fn) return false;
    int64_t nb = n / t->block;
    for (int64_t i = 0; i < nb; i++) fn(s + (size_t)i * t->block_bytes, dst + i * t->block);
    return true;
}

/* ---- quantizers (gguf-py's, operation for operation) ---- */

/* numpy's float -> uint8/int8 cast on x86: a truncating conversion to int32 (cvttss2si, which
 * yields INT32_MIN for NaN and out-of-range values) keeping the low byte. Only inputs so tiny
 * that 1/d overflows reach the NaN/Inf cases; spelling them out keeps C free of undefined
 * float-to-int conversions and keeps the bytes equal to gguf-py's. */
static uint8_t cast_low_byte(float v) {
    if (!(v > -2147483648.0f && v < 2147483648.0f)) return 0;
    return (uint8_t)((uint32_t)(int32_t)v & 0xffu);
}

static uint8_t clip15(uint8_t q) { return q > 15 ? 15 : q; }

/* Q4_0: d = (the signed value of largest magnitude, first if tied) / -8, so that value maps to
 * -8 exactly and the other side gets the full +7; q = min(15, trunc(x / d + 8.5)). The quotient
 * is x * (1/d) and the rounding is trunc(+ 8.5), not round(): both are gguf-py's (and ggml's). */
static void q_q4_0(const float *x, uint8_t *b) {
    float amax = 0.0f, max = x[0];
    for (int j = 0; j < KN_QK; j++) {
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    float d = max / -8.0f;
    float id = d == 0.0f ? 0.0f : 1.0f / d;
    uint8_t q[KN_QK];
    for (int j = 0; j < KN_QK; j++) {
        float v = x[j] * id;
        v = v + 8.5f;
        q[j] = clip15(cast_low_byte(truncf(v)));
    }
    kn_f16_store(KN_AT(b, kn_block_q4_0, d), d);
    uint8_t *qs = KN_AT(b, kn_block_q4_0, qs);
    for (int j = 0; j < KN_QK / 2; j++) qs[j] = (uint8_t)(q[j] | q[j + KN_QK / 2] << 4);
}

/* Q4_1: d = (max - min) / 15, m = min; q = min(15, trunc((x - min) / d + 0.5)). */
static void q_q4_1(const float *x, uint8_t *b) {
    float mn = x[0], mx = x[0];
    for (int j = 1; j < KN_QK; j++) {
        if (x[j] < mn) mn = x[j];
        if (x[j] > mx) mx = x[j];
    }
    float d = (mx - mn) / 15.0f;
    float id = d == 0.0f ? 0.0f : 1.0f / d;
    uint8_t q[KN_QK];
    for (int j = 0; j < KN_QK; j++) {
        float v = x[j] - mn;
        v = v * id;
        v = v + 0.5f;
        q[j] = clip15(cast_low_byte(truncf(v)));
    }
    kn_f16_store(KN_AT(b, kn_block_q4_1, d), d);
    kn_f16_store(KN_AT(b, kn_block_q4_1, m), mn);
    uint8_t *qs = KN_AT(b, kn_block_q4_1, qs);
    for (int j = 0; j < KN_QK / 2; j++) qs[j] = (uint8_t)(q[j] | q[j + KN_QK / 2] << 4);
}

/* Q8_0: d = max|x| / 127; q = round-half-away-from-zero(x / d) (gguf-py's np_roundf is C's
 * roundf). */
static void q_q8_0(const float *x, uint8_t *b) {
    float amax = 0.0f;
    for (int j = 0; j < KN_QK; j++) {
        float a = fabsf(x[j]);
        if (a > amax) amax = a;
    }
    float d = amax / 127.0f;
    float id = d == 0.0f ? 0.0f : 1.0f / d;
    kn_f16_store(KN_AT(b, kn_block_q8_0, d), d);
    uint8_t *qs = KN_AT(b, kn_block_q8_0, qs);
    for (int j = 0; j < KN_QK; j++) {
        float v = x[j] * id;
        qs[j] = cast_low_byte(roundf(v));
    }
}

size_t kn_quantize(uint32_t type, const float *src, void *dst, int64_t n) {
    const kn_type_traits *t = kn_type_get(type);
    if (!t || n < 0 || n % t->block != 0) return 0;
    uint8_t *d = dst;
    int64_t nb = n / t->block;
    void (*fn)(const float *, uint8_t *) = NULL;
    switch (type) {
    case KN_TYPE_F32: memcpy(d, src, (size_t)n * sizeof(float)); break;
    case KN_TYPE_F16:
        for (int64_t i = 0; i < n; i++) kn_f16_store(d + sizeof(kn_f16) * i, src[i]);
        break;
    case KN_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = kn_fp32_to_bf16(src[i]);
            memcpy(d + 2 * i, &h, sizeof h);
        }
        break;
    case KN_TYPE_Q4_0: fn = q_q4_0; break;
    case KN_TYPE_Q4_1: fn = q_q4_1; break;
    case KN_TYPE_Q8_0: fn = q_q8_0; break;
    default: return 0;
    }
    if (fn)
        for (int64_t i = 0; i < nb; i++) fn(src + i * t->block, d + (size_t)i * t->block_bytes);
    return (size_t)nb * t->block_bytes;
}
