/* ref.c — plain-C reference kernels: the oracle every SIMD variant is tested against, and the
 * fallback on CPUs without AVX2. Written for clarity first; summation is in block order. */
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/kernels_impl.h"
#include "quant/blocks.h"

/* ---- activation quantization ---- */

void kn_quantize_act(kn_act *a, const float *x, int n_tok, int n) {
    int nb = n / KN_QBLOCK, sb = a->stride / KN_QBLOCK;
    for (int t = 0; t < n_tok; t++) {
        const float *xr = x + (size_t)t * n;
        int8_t *q = a->q + (size_t)t * a->stride;
        for (int b = 0; b < nb; b++) {
            const float *xb = xr + b * KN_QBLOCK;
            float amax = 0.0f;
            bool finite = true;
            for (int i = 0; i < KN_QBLOCK; i++) {
                float v = fabsf(xb[i]);
                if (!(v <= FLT_MAX)) finite = false; /* NaN or Inf */
                else if (v > amax) amax = v;
            }
            if (!finite) {
                /* Activations that overflowed: converting them to int is undefined, so the
                 * block becomes q = 0 with a NaN scale, and every product it enters is NaN,
                 * which the generation loop reports as a numerical blow-up. */
                memset(q + b * KN_QBLOCK, 0, KN_QBLOCK);
                a->d[(size_t)t * sb + b] = a->s[(size_t)t * sb + b] = NAN;
                continue;
            }
            /* ggml's x86 Q8_0/Q8_1 activations exactly: q = x * (127 / amax) rounded to
             * nearest even, the scale d = amax / 127 and the offset d * sum(q) kept as F16, so
             * the products agree with llama.cpp's to float summation order. */
            float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
            int sum = 0;
            for (int i = 0; i < KN_QBLOCK; i++) {
                /* Round to nearest even by the 1.5 * 2^23 trick (|v| <= 127): no libm call in
                 * the loop, and the same rounding as the SIMD conversions. A separate statement
                 * so that no compiler fuses the product into the addition. */
                float v = xb[i] * id;
                v = (v + 12582912.0f) - 12582912.0f;
                int iv = (int)v;
                q[b * KN_QBLOCK + i] = (int8_t)iv;
                sum += iv;
            }
            a->d[(size_t)t * sb + b] = kn_fp16_to_fp32(kn_fp32_to_fp16(d));
            a->s[(size_t)t * sb + b] = kn_fp16_to_fp32(kn_fp32_to_fp16(d * (float)sum));
        }
    }
}

/* ggml's nearest_int: round to nearest even through the float's bits, so that no
 * float-to-int conversion is undefined (a non-finite product gives some value in range). */
static inline int nearest_int(float v) {
    float f = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &f, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* ggml's quantize_row_q8_K (x86 uses the reference): per 256 elements, m = the element of
 * largest magnitude (the first of equals), iscale = -127 / m, q = nearest_int(iscale * x)
 * capped at 127, d = 1 / iscale; plus kiln's sums per 16 (ggml's bsums) and per 32. An
 * all-zero block gives d = 0 and q = 0; one with a NaN or an infinity q = 0 and d = NaN. */
void kn_quantize_act_k(kn_act *a, const float *x, int n_tok, int n) {
    int nb = n / KN_KBLOCK;
    for (int t = 0; t < n_tok; t++) {
        const float *xr = x + (size_t)t * n;
        int8_t *q = a->qk + (size_t)t * a->stride;
        float *d = a->dk + (size_t)t * (a->stride / KN_KBLOCK);
        int16_t *bs = a->bsk + (size_t)t * (a->stride / 16);
        int16_t *bs32 = a->bsk32 + (size_t)t * (a->stride / 32);
        for (int b = 0; b < nb; b++) {
            const float *xb = xr + b * KN_KBLOCK;
            int8_t *qb = q + b * KN_KBLOCK;
            float amax = 0.0f, max = 0.0f;
            bool finite = true;
            for (int i = 0; i < KN_KBLOCK; i++) {
                float v = fabsf(xb[i]);
                if (!(v <= FLT_MAX)) {
                    finite = false; /* NaN or Inf */
                } else if (v > amax) {
                    amax = v;
                    max = xb[i];
                }
            }
            if (!finite || amax == 0.0f) {
                /* all zero: d = 0; overflowed activations: as kn_quantize_act, q = 0 and a NaN
                 * scale, so every product the block enters is NaN */
                memset(qb, 0, KN_KBLOCK);
                d[b] = finite ? 0.0f : NAN;
            } else {
                float iscale = -127.0f / max;
                for (int i = 0; i < KN_KBLOCK; i++) {
                    float v = iscale * xb[i];
                    int iv = nearest_int(v);
                    qb[i] = (int8_t)(iv > 127 ? 127 : iv < -128 ? -128 : iv);
                }
                d[b] = 1.0f / iscale;
            }
            for (int j = 0; j < KN_KBLOCK / 16; j++) {
                int sum = 0;
                for (int i = 0; i < 16; i++) sum += qb[16 * j + i];
                bs[b * 16 + j] = (int16_t)sum;
            }
            for (int j = 0; j < KN_KBLOCK / 32; j++)
                bs32[b * 8 + j] = (int16_t)(bs[b * 16 + 2 * j] + bs[b * 16 + 2 * j + 1]);
        }
    }
}

void kn_act_q4_offsets(kn_act *a, int n_tok, int n) {
    int nb = n / KN_QBLOCK, sb = a->stride / KN_QBLOCK;
    for (int t = 0; t < n_tok; t++)
        for (int b = 0; b < nb; b++) {
            const int8_t *q = a->q + (size_t)t * a->stride + b * KN_QBLOCK;
            int sum = 0;
            for (int i = 0; i < KN_QBLOCK; i++) sum += q[i];
            a->q4off[(size_t)t * sb + b] = -8 * sum;
        }
}

kn_act kn_act_row(const kn_act *a, int t) {
    kn_act v = *a;
    size_t at = (size_t)t * (size_t)a->stride;
    if (v.q) v.q += at;
    if (v.d) v.d += at / KN_QBLOCK;
    if (v.s) v.s += at / KN_QBLOCK;
    if (v.q4off) v.q4off += at / KN_QBLOCK;
    if (v.qk) v.qk += at;
    if (v.dk) v.dk += at / KN_KBLOCK;
    if (v.bsk) v.bsk += at / 16;
    if (v.bsk32) v.bsk32 += at / KN_QBLOCK;
    return v;
}

/* The generic table's quantize: the reference, and the Q4_0 offsets when asked for. */
void kn_quantize_act_bs(kn_act *a, const float *x, int n_tok, int n) {
    kn_quantize_act(a, x, n_tok, n);
    if (a->q4off) kn_act_q4_offsets(a, n_tok, n);
}

/* ---- row products ---- */

static float dot_f32_rows(const float *w, const float *x, int n) {
    /* Eight partial sums so the compiler keeps them in registers; the order is fixed, so the
     * reference is deterministic. */
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += w[i + j] * x[i + j];
    float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++) r += w[i] * x[i];
    return r;
}

float kn_dot_f32(const float *a, const float *b, int n) { return dot_f32_rows(a, b, n); }

void kn_axpy_f32(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

static void rows_f32(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a, int n_tok,
                     float *y, int ldy) {
    (void)a;
    for (int r = r0; r < r1; r++) {
        const float *wr = (const float *)(const void *)(w->data + (size_t)r * w->row_bytes);
        for (int t = 0; t < n_tok; t++)
            y[(size_t)t * ldy + r] = dot_f32_rows(wr, x + (size_t)t * w->n_in, w->n_in);
    }
}

static void rows_f16(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a, int n_tok,
                     float *y, int ldy) {
    (void)a;
    for (int r = r0; r < r1; r++) {
        const uint8_t *wr = w->data + (size_t)r * w->row_bytes;
        for (int t = 0; t < n_tok; t++) {
            const float *xt = x + (size_t)t * w->n_in;
            float s = 0.0f;
            for (int i = 0; i < w->n_in; i++)
                s += kn_f16_load(wr + sizeof(kn_f16) * (size_t)i) * xt[i];
            y[(size_t)t * ldy + r] = s;
        }
    }
}

/* Q4_0 block: f16 d | 16 bytes: element i in the low nibble of byte i, element i+16 in the high
 * nibble; value = d * (nibble - 8). */
static void rows_q4_0(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a, int n_tok,
                      float *y, int ldy) {
    (void)x;
    int nb = w->n_in / KN_QBLOCK, sb = a->stride / KN_QBLOCK;
    for (int r = r0; r < r1; r++) {
        const uint8_t *wr = w->data + (size_t)r * w->row_bytes;
        for (int t = 0; t < n_tok; t++) {
            const int8_t *q = a->q + (size_t)t * a->stride;
            const float *ad = a->d + (size_t)t * sb;
            float acc = 0.0f;
            for (int b = 0; b < nb; b++) {
                const uint8_t *blk = wr + (size_t)b * sizeof(kn_block_q4_0);
                const uint8_t *qs = KN_AT(blk, kn_block_q4_0, qs);
                const int8_t *qa = q + b * KN_QBLOCK;
                int s = 0;
                for (int i = 0; i < KN_QBLOCK / 2; i++) {
                    s += ((qs[i] & 0x0F) - 8) * qa[i];
                    s += ((qs[i] >> 4) - 8) * qa[i + 16];
                }
                acc += kn_f16_load(KN_AT(blk, kn_block_q4_0, d)) * ad[b] * (float)s;
            }
            y[(size_t)t * ldy + r] = acc;
        }
    }
}

/* Q4_1 block: f16 d | f16 m | 16 nibble bytes as Q4_0; value = d * nibble + m. */
static void rows_q4_1(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a, int n_tok,
                      float *y, int ldy) {
    (void)x;
    int nb = w->n_in / KN_QBLOCK, sb = a->stride / KN_QBLOCK;
    for (int r = r0; r < r1; r++) {
        const uint8_t *wr = w->data + (size_t)r * w->row_bytes;
        for (int t = 0; t < n_tok; t++) {
            const int8_t *q = a->q + (size_t)t * a->stride;
            const float *ad = a->d + (size_t)t * sb, *as = a->s + (size_t)t * sb;
            float acc = 0.0f;
            for (int b = 0; b < nb; b++) {
                const uint8_t *blk = wr + (size_t)b * sizeof(kn_block_q4_1);
                const uint8_t *qs = KN_AT(blk, kn_block_q4_1, qs);
                const int8_t *qa = q + b * KN_QBLOCK;
                int s = 0;
                for (int i = 0; i < KN_QBLOCK / 2; i++) {
                    s += (qs[i] & 0x0F) * qa[i];
                    s += (qs[i] >> 4) * qa[i + 16];
                }
                acc += kn_f16_load(KN_AT(blk, kn_block_q4_1, d)) * ad[b] * (float)s +
                       kn_f16_load(KN_AT(blk, kn_block_q4_1, m)) * as[b];
            }
            y[(size_t)t * ldy + r] = acc;
        }
    }
}

/* Q8_0 block: f16 d | 32 int8; value = d * q. */
static void rows_q8_0(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a, int n_tok,
                      float *y, int ldy) {
    (void)x;
    int nb = w->n_in / KN_QBLOCK, sb = a->stride / KN_QBLOCK;
    for (int r = r0; r < r1; r++) {
        const uint8_t *wr = w->data + (size_t)r * w->row_bytes;
        for (int t = 0; t < n_tok; t++) {
            const int8_t *q = a->q + (size_t)t * a->stride;
            const float *ad = a->d + (size_t)t * sb;
            float acc = 0.0f;
            for (int b = 0; b < nb; b++) {
                const uint8_t *blk = wr + (size_t)b * sizeof(kn_block_q8_0);
                const int8_t *qw = (const int8_t *)KN_AT(blk, kn_block_q8_0, qs);
                const int8_t *qa = q + b * KN_QBLOCK;
                int s = 0;
                for (int i = 0; i < KN_QBLOCK; i++) s += qw[i] * qa[i];
                acc += kn_f16_load(KN_AT(blk, kn_block_q8_0, d)) * ad[b] * (float)s;
            }
            y[(size_t)t * ldy + r] = acc;
        }
    }
}

/* ---- K-quants against Q8_K activations ----
 * Per super-block of 256: the integer sum over sub-blocks of scale * dot(q, a), then one float
 * step. The integers are exact (|sum| < 2^31), so every variant agrees on them. */

/* Q4_K / Q5_K sub-block j's 6-bit scale and min (ggml's get_scale_min_k4). */
static void scale_min_k4(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Q4_K: f16 d, f16 dmin, scales[12], qs[128]; x = d * sc_j * q - dmin * m_j. Q5_K: the same
 * with qh[32] before qs giving a fifth bit (blocks.h: the shared fields sit at the same offsets). y += (d*da) * sum_j sc_j dot_j - (dmin*da) *
 * sum_j m_j sum_j(a). */
static void rows_q45_k(const kn_wmat *w, int r0, int r1, const kn_act *a, int n_tok, float *y,
                       int ldy, bool five) {
    int nb = w->n_in / KN_KBLOCK;
    size_t bb = five ? sizeof(kn_block_q5_k) : sizeof(kn_block_q4_k);
    for (int r = r0; r < r1; r++) {
        const uint8_t *wr = w->data + (size_t)r * w->row_bytes;
        for (int t = 0; t < n_tok; t++) {
            const int8_t *q = a->qk + (size_t)t * a->stride;
            const float *ad = a->dk + (size_t)t * (a->stride / KN_KBLOCK);
            const int16_t *bs = a->bsk + (size_t)t * (a->stride / 16);
            float acc = 0.0f;
            for (int b = 0; b < nb; b++) {
                const uint8_t *blk = wr + (size_t)b * bb;
                const uint8_t *qh = KN_AT(blk, kn_block_q5_k, qh);
                const uint8_t *qs = five ? KN_AT(blk, kn_block_q5_k, qs)
                                         : KN_AT(blk, kn_block_q4_k, qs);
                const int8_t *qa = q + b * KN_KBLOCK;
                int32_t isum = 0, imin = 0;
                for (int j = 0; j < 8; j++) {
                    int sc, m;
                    scale_min_k4(KN_AT(blk, kn_block_q4_k, scales), j, &sc, &m);
                    int32_t dot = 0;
                    for (int l = 0; l < 32; l++) {
                        int v = (qs[(j / 2) * 32 + l] >> (4 * (j % 2))) & 0x0f;
                        if (five) v |= ((qh[l] >> j) & 1) << 4;
                        dot += v * qa[32 * j + l];
                    }
                    isum += sc * dot;
                    imin += m * (bs[b * 16 + 2 * j] + bs[b * 16 + 2 * j + 1]);
                }
                float dd = kn_f16_load(KN_AT(blk, kn_block_q4_k, d)) * ad[b];
                float dm = kn_f16_load(KN_AT(blk, kn_block_q4_k, dmin)) * ad[b];
                acc += dd * (float)isum;
                acc -= dm * (float)imin;
            }
            y[(size_t)t * ldy + r] = acc;
        }
    }
}

void kn_ref_rows_q4_k(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a,
                      int n_tok, float *y, int ldy) {
    (void)x;
    rows_q45_k(w, r0, r1, a, n_tok, y, ldy, false);
}

void kn_ref_rows_q5_k(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a,
                      int n_tok, float *y, int ldy) {
    (void)x;
    rows_q45_k(w, r0, r1, a, n_tok, y, ldy, true);
}

/* Q6_K: ql[128], qh[64], int8 scales[16], f16 d; element e = 128h + r takes the low 4 bits from
 * the nibble r / 64 of ql[64h + r % 64] and the top 2 from qh[32h + r % 32] >> 2(r / 32);
 * x = d * sc[e / 16] * (q - 32). y += (d*da) * sum_j sc_j sum(q - 32) a. */
void kn_ref_rows_q6_k(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a,
                      int n_tok, float *y, int ldy) {
    (void)x;
    int nb = w->n_in / KN_KBLOCK;
    for (int r = r0; r < r1; r++) {
        const uint8_t *wr = w->data + (size_t)r * w->row_bytes;
        for (int t = 0; t < n_tok; t++) {
            const int8_t *q = a->qk + (size_t)t * a->stride;
            const float *ad = a->dk + (size_t)t * (a->stride / KN_KBLOCK);
            float acc = 0.0f;
            for (int b = 0; b < nb; b++) {
                const uint8_t *blk = wr + (size_t)b * sizeof(kn_block_q6_k);
                const uint8_t *ql = KN_AT(blk, kn_block_q6_k, ql);
                const uint8_t *qh = KN_AT(blk, kn_block_q6_k, qh);
                const int8_t *sc = (const int8_t *)KN_AT(blk, kn_block_q6_k, scales);
                const int8_t *qa = q + b * KN_KBLOCK;
                int32_t isum = 0;
                for (int j = 0; j < 16; j++) {
                    int32_t dot = 0;
                    for (int l = 0; l < 16; l++) {
                        int e = 16 * j + l, h = e / 128, rr = e % 128;
                        int lo = (ql[h * 64 + rr % 64] >> (4 * (rr / 64))) & 0x0f;
                        int hi = (qh[h * 32 + rr % 32] >> (2 * (rr / 32))) & 3;
                        dot += ((lo | hi << 4) - 32) * qa[e];
                    }
                    isum += sc[j] * dot;
                }
                float dd = kn_f16_load(KN_AT(blk, kn_block_q6_k, d)) * ad[b];
                acc += dd * (float)isum;
            }
            y[(size_t)t * ldy + r] = acc;
        }
    }
}

size_t kn_kv_row_bytes(kn_kv_kind kind, int d) {
    return kind == KN_KV_Q8 ? (size_t)d / KN_QBLOCK * sizeof(kn_block_q8_0)
                            : (size_t)d * (kind == KN_KV_F16 ? sizeof(uint16_t) : sizeof(float));
}

/* Row t of an F16 or Q8_0 cache as floats, exactly. */
static const float *widen_row(const void *base, int t, int d, kn_kv_kind kind, float *wide) {
    const uint8_t *row = (const uint8_t *)base + (size_t)t * kn_kv_row_bytes(kind, d);
    if (kind == KN_KV_F16) {
        for (int i = 0; i < d; i++) wide[i] = kn_fp16_to_fp32(((const uint16_t *)(const void *)row)[i]);
    } else {
        for (int i = 0; i < d; i++) {
            const uint8_t *b = row + (size_t)(i / KN_QBLOCK) * sizeof(kn_block_q8_0);
            wide[i] = kn_f16_load(KN_AT(b, kn_block_q8_0, d)) *
                      (float)((const int8_t *)KN_AT(b, kn_block_q8_0, qs))[i % KN_QBLOCK];
        }
    }
    return wide;
}

/* The query rounded to Q8_0 per block of 32 (llama.cpp rounds the query it scores against a
 * q8_0 cache so): scale amax / 127 through a half, values x * (127 / amax) to nearest, ties to
 * even. attn_x86.h's ka_quantize_q takes the same steps. */
static void q8_query(const float *q, int d, int8_t *qq, float *qd) {
    for (int b = 0; b < d / KN_QBLOCK; b++) {
        const float *x = q + (size_t)b * KN_QBLOCK;
        float amax = 0.0f;
        for (int i = 0; i < KN_QBLOCK; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
        float dd = amax / 127.0f, id = dd != 0.0f ? 1.0f / dd : 0.0f;
        qd[b] = kn_fp16_to_fp32(kn_fp32_to_fp16(dd));
        for (int i = 0; i < KN_QBLOCK; i++) {
            float r = x[i] * id;
            qq[b * KN_QBLOCK + i] = (int8_t)nearbyintf(r);
        }
    }
}

/* A Q8_0 key row's score against the Q8_0 query, as the x86 kernels form it: per block an
 * exact integer dot in 8 lanes of 4 products, each lane added into its float accumulator times
 * the key's scale times the query's (one rounding, fmaf), then the lanes summed by the tree
 * ((0+1)+(2+3))+((4+5)+(6+7)). Integers are exact and the float steps the same, so every table
 * gives these bits. */
static float q8_score(const int8_t *qq, const float *qd, const uint8_t *krow, int d) {
    float a[8] = {0};
    for (int b = 0; b < d / KN_QBLOCK; b++) {
        const uint8_t *blk = krow + (size_t)b * sizeof(kn_block_q8_0);
        const int8_t *ks = (const int8_t *)KN_AT(blk, kn_block_q8_0, qs);
        float s = kn_f16_load(KN_AT(blk, kn_block_q8_0, d)) * qd[b];
        for (int l = 0; l < 8; l++) {
            int32_t i = 0;
            for (int u = 0; u < 4; u++) i += qq[b * KN_QBLOCK + 4 * l + u] * ks[4 * l + u];
            a[l] = fmaf((float)i, s, a[l]);
        }
    }
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* Scores of the allowed slots, softmax, weighted sum of values. Loops stop after the last
 * allowed slot, which changes nothing (later slots would add exact zeros) but the time. Every
 * cache shares the body; an F16 or Q8_0 row is widened into wide[] first (exact), but a Q8_0
 * cache's keys are scored in integers against the query rounded to Q8_0 (q8_score). */
static inline void attn_ref(const float *q, const void *k, const void *v, kn_kv_kind kind,
                            const int32_t *slot_pos, int n_slots, int32_t pos, int swa,
                            float softcap, int d, float *sc, float *out, float *wide,
                            float *ml) {
    float scale = 1.0f / sqrtf((float)d);
    int8_t qq[KN_ATTN_MAX_D];
    float qd[KN_ATTN_MAX_D / KN_QBLOCK];
    if (kind == KN_KV_Q8) q8_query(q, d, qq, qd);
    float mx = -INFINITY;
    int end = 0;
    for (int t = 0; t < n_slots; t++) {
        int32_t tp = slot_pos[t];
        if (tp < 0 || tp > pos || (swa > 0 && pos - tp >= swa)) {
            sc[t] = -INFINITY;
            continue;
        }
        if (kind == KN_KV_Q8) {
            sc[t] = q8_score(qq, qd, (const uint8_t *)k + (size_t)t * kn_kv_row_bytes(kind, d), d) *
                    scale;
        } else {
            const float *kt = kind == KN_KV_F32 ? (const float *)k + (size_t)t * d
                                                : widen_row(k, t, d, kind, wide);
            sc[t] = kn_dot_f32(q, kt, d) * scale;
        }
        if (softcap > 0) sc[t] = softcap * tanhf(sc[t] / softcap);
        if (sc[t] > mx) mx = sc[t];
        end = t + 1;
    }
    float sum = 0.0f;
    for (int t = 0; t < end; t++) {
        float e = sc[t] == -INFINITY ? 0.0f : expf(sc[t] - mx);
        sc[t] = e;
        sum += e;
    }
    if (ml) {
        ml[0] = mx;
        ml[1] = sum;
    }
    float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    memset(out, 0, sizeof(float) * (size_t)d);
    for (int t = 0; t < end; t++) {
        if (sc[t] == 0.0f) continue;
        const float *vt = kind == KN_KV_F32 ? (const float *)v + (size_t)t * d
                                            : widen_row(v, t, d, kind, wide);
        kn_axpy_f32(out, sc[t] * inv, vt, d);
    }
}

/* One head at a time, over a cache of any kind (wide: a row's floats, for F16 and Q8_0). */
static void attn_ref_heads(const float *q, const void *k, const void *v, kn_kv_kind kind,
                           const int32_t *slot_pos, int n_slots, int32_t pos, int swa,
                           float softcap, int d, int n_q, float *sc, float *out, float *ml) {
    float wide[KN_ATTN_MAX_D];
    for (int h = 0; h < n_q; h++)
        attn_ref(q + (size_t)h * d, k, v, kind, slot_pos, n_slots, pos, swa, softcap, d,
                 sc + (size_t)h * n_slots, out + (size_t)h * d, wide, ml ? ml + 2 * h : NULL);
}

void kn_attn_ref(const float *q, const float *k, const float *v, const int32_t *slot_pos,
                 int n_slots, int32_t pos, int swa, float softcap, int d, int n_q, float *sc,
                 float *out, float *ml) {
    attn_ref_heads(q, k, v, KN_KV_F32, slot_pos, n_slots, pos, swa, softcap, d, n_q, sc, out, ml);
}

void kn_attn_ref_f16(const float *q, const uint16_t *k, const uint16_t *v, const int32_t *slot_pos,
                     int n_slots, int32_t pos, int swa, float softcap, int d, int n_q, float *sc,
                     float *out, float *ml) {
    attn_ref_heads(q, k, v, KN_KV_F16, slot_pos, n_slots, pos, swa, softcap, d, n_q, sc, out, ml);
}

void kn_attn_ref_q8(const float *q, const uint8_t *k, const uint8_t *v, const int32_t *slot_pos,
                    int n_slots, int32_t pos, int swa, float softcap, int d, int n_q, float *sc,
                    float *out, float *ml) {
    attn_ref_heads(q, k, v, KN_KV_Q8, slot_pos, n_slots, pos, swa, softcap, d, n_q, sc, out, ml);
}

/* One function for every table and both of the engine's schedules (kn_attn_fold's promise). */
void kn_attn_fold(float *acc, float *st, const float *out_c, const float *ml_c, int d, int n_q) {
    for (int h = 0; h < n_q; h++) {
        float mc = ml_c[2 * h], lc = ml_c[2 * h + 1], m = st[2 * h], l = st[2 * h + 1];
        float *a = acc + (size_t)h * d;
        const float *o = out_c + (size_t)h * d;
        if (!(lc > 0.0f)) continue;
        if (!(l > 0.0f)) {
            memcpy(a, o, sizeof(float) * (size_t)d);
            st[2 * h] = mc;
            st[2 * h + 1] = lc;
            continue;
        }
        /* both sums rescaled to the larger max, so neither exponential can overflow */
        float mx = m > mc ? m : mc;
        float wa = l * expf(m - mx), wc = lc * expf(mc - mx), inv = 1.0f / (wa + wc);
        float fa = wa * inv, fc = wc * inv;
        for (int i = 0; i < d; i++) a[i] = a[i] * fa + o[i] * fc;
        st[2 * h] = mx;
        st[2 * h + 1] = wa + wc;
    }
}

static const kn_kernels k_generic = {
    .name = "generic",
    .rows = {
        [KN_TYPE_F32] = rows_f32,
        [KN_TYPE_F16] = rows_f16,
        [KN_TYPE_Q4_0] = rows_q4_0,
        [KN_TYPE_Q4_1] = rows_q4_1,
        [KN_TYPE_Q8_0] = rows_q8_0,
        [KN_TYPE_Q4_K] = kn_ref_rows_q4_k,
        [KN_TYPE_Q5_K] = kn_ref_rows_q5_k,
        [KN_TYPE_Q6_K] = kn_ref_rows_q6_k,
    },
    .quantize = kn_quantize_act_bs,
    .quantize_k = kn_quantize_act_k,
    .attn = kn_attn_ref,
    .attn_f16 = kn_attn_ref_f16,
    .attn_q8 = kn_attn_ref_q8,
    .swiglu = kn_swiglu,
    .to_f16 = kn_to_f16,
};

const kn_kernels *kn_kernels_generic(void) { return &k_generic; }

bool kn_kernels_type_ok(uint32_t type) { return type < KN_NTYPES && k_generic.rows[type] != NULL; }

bool kn_type_wants_q8k(uint32_t type) {
    return type == KN_TYPE_Q4_K || type == KN_TYPE_Q5_K || type == KN_TYPE_Q6_K;
}

bool kn_type_wants_q8(uint32_t type) {
    return type == KN_TYPE_Q4_0 || type == KN_TYPE_Q4_1 || type == KN_TYPE_Q8_0 ||
           kn_type_wants_q8k(type);
}

int kn_type_act_block(uint32_t type) {
    return kn_type_wants_q8k(type) ? KN_KBLOCK : kn_type_wants_q8(type) ? KN_QBLOCK : 1;
}

/* ---- plain ops ---- */

void kn_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    float scale = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

void kn_softmax(float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > mx) mx = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

float kn_silu(float x) { return x / (1.0f + expf(-x)); }

void kn_to_f16(uint16_t *h, const float *x, int n) {
    for (int i = 0; i < n; i++) h[i] = kn_fp32_to_fp16(x[i]);
}

void kn_swiglu(float *g, const float *u, int n) {
    for (int i = 0; i < n; i++) g[i] = kn_silu(g[i]) * u[i];
}

void kn_rope_inv_freq(const kn_rope_cfg *c, double *inv_freq) {
    int half = c->rope_dim / 2;
    for (int i = 0; i < half; i++) {
        double f = pow((double)c->theta, -2.0 * i / (double)c->rope_dim);
        if (c->scaling == 1 && c->factor > 0.0f) {
            f /= c->factor;
        } else if (c->scaling == 2 && c->factor > 0.0f) {
            /* Llama 3: long wavelengths are slowed by `factor`, short ones kept, and the band in
             * between blended (transformers' _compute_llama3_parameters). */
            double lo_wavelen = c->orig_ctx / (double)c->low_freq_factor;
            double hi_wavelen = c->orig_ctx / (double)c->high_freq_factor;
            double wavelen = 2.0 * 3.14159265358979323846 / f;
            if (wavelen > lo_wavelen) {
                f /= c->factor;
            } else if (wavelen >= hi_wavelen) {
                double smooth = (c->orig_ctx / wavelen - c->low_freq_factor) /
                                (c->high_freq_factor - c->low_freq_factor);
                f = (1.0 - smooth) * f / c->factor + smooth * f;
            }
        }
        inv_freq[i] = f;
    }
}

void kn_rope_cossin(const double *inv_freq, int rope_dim, int pos, float *cs) {
    for (int i = 0; i < rope_dim / 2; i++) {
        double ang = (double)pos * inv_freq[i];
        cs[2 * i] = (float)cos(ang);
        cs[2 * i + 1] = (float)sin(ang);
    }
}

void kn_rope_apply(float *x, int n_head, int head_dim, int rope_dim, bool neox, const float *cs) {
    int half = rope_dim / 2;
    for (int h = 0; h < n_head; h++) {
        float *v = x + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            float c = cs[2 * i], s = cs[2 * i + 1];
            int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
            float a = v[i0], b = v[i1];
            v[i0] = a * c - b * s;
            v[i1] = a * s + b * c;
        }
    }
}
