/* test_quant.c — half/bfloat16 conversions, block quantize/dequantize, int4_sym.
 * Bit-exactness against gguf-py is tests/py/test_quant_oracle.py's job; these tests pin the edge
 * cases by hand and bound the round-trip error of every quantizer. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kt.h"
#include "quant/blocks.h"

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* A small deterministic generator (xorshift) and Box-Muller normals, so tests need no libc rand
 * state and give the same inputs everywhere. */
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static double rng_unit(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) * 0x1p-53;
}
static float rng_normal(void) {
    double u = rng_unit(), v = rng_unit();
    return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

/* ---- IEEE half ---- */

TEST(quant_fp16_edges) {
    CHECK_EQ_INT(kn_fp32_to_fp16(0.0f), 0x0000);
    CHECK_EQ_INT(kn_fp32_to_fp16(-0.0f), 0x8000);
    CHECK_EQ_INT(kn_fp32_to_fp16(1.0f), 0x3c00);
    CHECK_EQ_INT(kn_fp32_to_fp16(-2.0f), 0xc000);
    CHECK_EQ_INT(kn_fp32_to_fp16(65504.0f), 0x7bff);
    CHECK_EQ_INT(kn_fp32_to_fp16(65519.996f), 0x7bff);  /* just below the tie */
    CHECK_EQ_INT(kn_fp32_to_fp16(65520.0f), 0x7c00);    /* the tie goes to even: Inf */
    CHECK_EQ_INT(kn_fp32_to_fp16(1e10f), 0x7c00);
    CHECK_EQ_INT(kn_fp32_to_fp16(-1e10f), 0xfc00);
    CHECK_EQ_INT(kn_fp32_to_fp16(INFINITY), 0x7c00);
    CHECK_EQ_INT(kn_fp32_to_fp16(-INFINITY), 0xfc00);
    CHECK_EQ_INT(kn_fp32_to_fp16(0x1p-14f), 0x0400);    /* smallest normal */
    CHECK_EQ_INT(kn_fp32_to_fp16(0x1p-24f), 0x0001);    /* smallest subnormal */
    CHECK_EQ_INT(kn_fp32_to_fp16(0x1p-25f), 0x0000);    /* tie between 0 and 1 ulp: even, 0 */
    CHECK_EQ_INT(kn_fp32_to_fp16(-0x1p-25f), 0x8000);
    CHECK_EQ_INT(kn_fp32_to_fp16(0x1.000002p-25f), 0x0001);
    CHECK_EQ_INT(kn_fp32_to_fp16(0x1.8p-24f), 0x0002);  /* 1.5 ulp: tie, even 2 */
    CHECK_EQ_INT(kn_fp32_to_fp16(0x1.4p-23f), 0x0002);  /* 2.5 ulp: tie, even 2 */
    CHECK_EQ_INT(kn_fp32_to_fp16(1023.5f * 0x1p-24f), 0x0400); /* rounds up into the normals */
    CHECK_EQ_INT(kn_fp32_to_fp16(1.0f + 0x1p-11f), 0x3c00);      /* tie, even */
    CHECK_EQ_INT(kn_fp32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3c02);  /* tie, even (up) */
    CHECK_EQ_INT(kn_fp32_to_fp16(1e-30f), 0x0000);
    CHECK_EQ_INT(kn_fp32_to_fp16(float_of(0x00000001)), 0x0000);  /* float32 subnormal */

    /* NaN stays NaN, sign and payload top kept; a payload only in the dropped bits must not
     * turn the result into Inf. */
    CHECK_EQ_INT(kn_fp32_to_fp16(float_of(0x7fc00000)), 0x7e00);
    CHECK_EQ_INT(kn_fp32_to_fp16(float_of(0xffc00000)), 0xfe00);
    CHECK_EQ_INT(kn_fp32_to_fp16(float_of(0x7f800001)), 0x7c01);

    CHECK(kn_fp16_to_fp32(0x0000) == 0.0f && !signbit(kn_fp16_to_fp32(0x0000)));
    CHECK(kn_fp16_to_fp32(0x8000) == 0.0f && signbit(kn_fp16_to_fp32(0x8000)));
    CHECK(kn_fp16_to_fp32(0x0001) == 0x1p-24f);
    CHECK(kn_fp16_to_fp32(0x03ff) == 1023.0f * 0x1p-24f);
    CHECK(kn_fp16_to_fp32(0x0400) == 0x1p-14f);
    CHECK(kn_fp16_to_fp32(0x3c00) == 1.0f);
    CHECK(kn_fp16_to_fp32(0x7bff) == 65504.0f);
    CHECK(kn_fp16_to_fp32(0xfbff) == -65504.0f);
    CHECK(isinf(kn_fp16_to_fp32(0x7c00)) && kn_fp16_to_fp32(0x7c00) > 0);
    CHECK(isinf(kn_fp16_to_fp32(0xfc00)) && kn_fp16_to_fp32(0xfc00) < 0);
    CHECK(isnan(kn_fp16_to_fp32(0x7e00)));
    CHECK(isnan(kn_fp16_to_fp32(0x7c01)));
    CHECK_EQ_INT(bits_of(kn_fp16_to_fp32(0xfd00)), 0xffa00000); /* payload kept */
}

TEST(quant_fp16_exhaustive) {
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = kn_fp16_to_fp32((uint16_t)h);
        uint16_t back = kn_fp32_to_fp16(f);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            CHECKF(isnan(f) && (back & 0x7c00) == 0x7c00 && (back & 0x3ff) && back == h,
                   "NaN 0x%04x -> 0x%04x", (unsigned)h, (unsigned)back);
            continue;
        }
        CHECKF(back == h, "0x%04x -> %g -> 0x%04x", (unsigned)h, (double)f, (unsigned)back);
    }
    /* Every midpoint between neighbouring finite halves rounds to the even one; a hair either
     * side rounds to the nearer. The midpoint needs 12 significant bits, so float holds it. */
    for (uint32_t h = 0; h < 0x7bff; h++) {
        float lo = kn_fp16_to_fp32((uint16_t)h), hi = kn_fp16_to_fp32((uint16_t)(h + 1));
        float mid = (float)(((double)lo + (double)hi) / 2);
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        CHECKF(kn_fp32_to_fp16(mid) == even, "midpoint above 0x%04x", (unsigned)h);
        CHECKF(kn_fp32_to_fp16(nextafterf(mid, 0.0f)) == h, "below midpoint 0x%04x", (unsigned)h);
        CHECKF(kn_fp32_to_fp16(nextafterf(mid, INFINITY)) == h + 1, "above midpoint 0x%04x",
               (unsigned)h);
        CHECKF(kn_fp32_to_fp16(-mid) == (even | 0x8000), "negative midpoint 0x%04x", (unsigned)h);
    }
}

/* ---- bfloat16 ---- */

TEST(quant_bf16_edges) {
    CHECK_EQ_INT(kn_fp32_to_bf16(0.0f), 0x0000);
    CHECK_EQ_INT(kn_fp32_to_bf16(-0.0f), 0x8000);
    CHECK_EQ_INT(kn_fp32_to_bf16(1.0f), 0x3f80);
    CHECK_EQ_INT(kn_fp32_to_bf16(float_of(0x3f808000)), 0x3f80); /* tie, even */
    CHECK_EQ_INT(kn_fp32_to_bf16(float_of(0x3f818000)), 0x3f82); /* tie, even (up) */
    CHECK_EQ_INT(kn_fp32_to_bf16(float_of(0x3f808001)), 0x3f81);
    CHECK_EQ_INT(kn_fp32_to_bf16(float_of(0x3f807fff)), 0x3f80);
    CHECK_EQ_INT(kn_fp32_to_bf16(float_of(0x7f7fffff)), 0x7f80); /* FLT_MAX rounds to Inf */
    CHECK_EQ_INT(kn_fp32_to_bf16(float_of(0x7f7f7fff)), 0x7f7f);
    CHECK_EQ_INT(kn_fp32_to_bf16(INFINITY), 0x7f80);
    CHECK_EQ_INT(kn_fp32_to_bf16(-INFINITY), 0xff80);
    CHECK_EQ_INT(kn_fp32_to_bf16(float_of(0x00008000)), 0x0000); /* subnormal tie, even */
    CHECK_EQ_INT(kn_fp32_to_bf16(float_of(0x00018000)), 0x0002);
    CHECK_EQ_INT(kn_fp32_to_bf16(float_of(0x7f800001)), 0x7fc0); /* NaN quieted, not Inf */
    CHECK_EQ_INT(kn_fp32_to_bf16(float_of(0xffffffff)), 0xffff);
    CHECK_EQ_INT(bits_of(kn_bf16_to_fp32(0x3f80)), 0x3f800000);
    CHECK(signbit(kn_bf16_to_fp32(0x8000)));
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = kn_bf16_to_fp32((uint16_t)h);
        CHECK_EQ_INT(bits_of(f), h << 16);
        if (!isnan(f)) CHECK_EQ_INT(kn_fp32_to_bf16(f), h);
        else CHECK(isnan(kn_bf16_to_fp32(kn_fp32_to_bf16(f))));
    }
}

/* ---- block quantizers: round-trip error bounds ---- */

#define NB 8 /* blocks per case */
#define NMAX (NB * 32)

enum { CASE_ZERO, CASE_CONST, CASE_NEG_CONST, CASE_OUTLIER, CASE_NEG_ONLY, CASE_NORMAL,
       CASE_TINY, CASE_COUNT };

static void fill_case(int c, float *x, int n) {
    for (int i = 0; i < n; i++) {
        switch (c) {
        case CASE_ZERO: x[i] = (i % 3 == 0) ? -0.0f : 0.0f; break;
        case CASE_CONST: x[i] = 0.3f; break;
        case CASE_NEG_CONST: x[i] = -1234.5f; break;
        case CASE_OUTLIER: x[i] = (i % 32 == 17) ? 3000.0f : rng_normal() * 0.01f; break;
        case CASE_NEG_ONLY: x[i] = -fabsf(rng_normal()) - 0.001f; break;
        case CASE_NORMAL: x[i] = rng_normal() * (float)(1 + i / 32); break;
        default: x[i] = rng_normal() * 1e-3f; break;
        }
    }
}

/* Largest |x - y| a block type allows for one 32-element block; each bound is the rounding
 * step of the format plus what rounding the scale (and min) to F16 adds. */
static double block_bound(uint32_t type, const float *x) {
    double mx = -INFINITY, mn = INFINITY, amax = 0;
    for (int i = 0; i < 32; i++) {
        mx = fmax(mx, x[i]);
        mn = fmin(mn, x[i]);
        amax = fmax(amax, fabs(x[i]));
    }
    const double h = 0x1p-11; /* F16 relative rounding */
    double tiny = 0x1p-24;   /* F16's absolute resolution near zero */
    switch (type) {
    case KN_TYPE_Q4_0: return amax / 8 * (1 + 8 * h) + 8 * tiny; /* one full step at the +7 clip */
    case KN_TYPE_Q4_1: return (mx - mn) / 15 * (0.5 + 15 * h) + fabs(mn) * h + 16 * tiny;
    case KN_TYPE_Q8_0: return amax / 127 * (0.5 + 127 * h) + 127 * tiny;
    default: return 0;
    }
}

TEST(quant_block_round_trip_bounds) {
    static const uint32_t types[] = {KN_TYPE_Q4_0, KN_TYPE_Q4_1, KN_TYPE_Q8_0};
    float x[NMAX], y[NMAX];
    uint8_t q[NB * 40];
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const kn_type_traits *tr = kn_type_get(types[t]);
        for (int c = 0; c < CASE_COUNT; c++) {
            fill_case(c, x, NMAX);
            CHECK_EQ_INT(kn_quantize(types[t], x, q, NMAX), NB * tr->block_bytes);
            CHECK(kn_dequantize(types[t], q, y, NMAX));
            for (int b = 0; b < NB; b++) {
                double bound = block_bound(types[t], x + 32 * b);
                for (int i = 32 * b; i < 32 * b + 32; i++)
                    CHECKF(fabs((double)x[i] - (double)y[i]) <= bound,
                           "%s case %d elem %d: %g -> %g (bound %g)", tr->name, c, i,
                           (double)x[i], (double)y[i], bound);
            }
            if (c == CASE_ZERO)
                for (int i = 0; i < NMAX; i++) CHECK(y[i] == 0.0f);
        }
    }
}

TEST(quant_block_exact_cases) {
    float x[32], y[32];
    uint8_t q[40];
    /* A constant block survives Q4_1 exactly when F16 holds it: d = 0, everything is m. */
    for (int i = 0; i < 32; i++) x[i] = -1.5f;
    CHECK_EQ_INT(kn_quantize(KN_TYPE_Q4_1, x, q, 32), 20);
    CHECK(kn_dequantize(KN_TYPE_Q4_1, q, y, 32));
    for (int i = 0; i < 32; i++) CHECK(y[i] == -1.5f);
    /* Q4_0 maps the largest-magnitude value to -8 exactly: d = 2 stores and comes back exact. */
    for (int i = 0; i < 32; i++) x[i] = (float)((i % 15) - 7) * 2.0f;
    x[5] = -16.0f;
    CHECK_EQ_INT(kn_quantize(KN_TYPE_Q4_0, x, q, 32), 18);
    CHECK_EQ_INT(q[0] | q[1] << 8, 0x4000); /* d = -16 / -8 = 2 */
    CHECK(kn_dequantize(KN_TYPE_Q4_0, q, y, 32));
    for (int i = 0; i < 32; i++) CHECKF(y[i] == x[i], "%d: %g vs %g", i, (double)x[i], (double)y[i]);
    /* Q8_0 with max 127 has d = 1: integers are exact, x.5 rounds away from zero. */
    for (int i = 0; i < 32; i++) x[i] = (float)(i * 8 - 127);
    x[31] = 127.0f;
    x[1] = 2.5f;
    x[2] = -2.5f;
    CHECK_EQ_INT(kn_quantize(KN_TYPE_Q8_0, x, q, 32), 34);
    CHECK_EQ_INT((int8_t)q[2 + 1], 3);
    CHECK_EQ_INT((int8_t)q[2 + 2], -3);
    CHECK_EQ_INT((int8_t)q[2 + 0], -127);
    /* Nibble order of the legacy formats: element j low nibble, j + 16 high nibble. */
    for (int i = 0; i < 32; i++) x[i] = i < 16 ? -8.0f : 7.0f;
    CHECK_EQ_INT(kn_quantize(KN_TYPE_Q4_0, x, q, 32), 18);
    for (int j = 0; j < 16; j++) CHECK_EQ_INT(q[2 + j], 0xf0);
}

TEST(quant_float_types_round_trip) {
    float x[256], y[256];
    uint16_t h[256];
    for (int i = 0; i < 256; i++) x[i] = rng_normal() * powf(10.0f, (float)(i % 9) - 4.0f);
    CHECK_EQ_INT(kn_quantize(KN_TYPE_F16, x, h, 256), 512);
    CHECK(kn_dequantize(KN_TYPE_F16, h, y, 256));
    for (int i = 0; i < 256; i++) {
        CHECK_EQ_INT(h[i], kn_fp32_to_fp16(x[i]));
        double tol = fmax(fabs(x[i]) * 0x1p-11, 0x1p-25);
        CHECKF(fabs(x[i] - y[i]) <= tol, "F16 %g -> %g", (double)x[i], (double)y[i]);
    }
    CHECK_EQ_INT(kn_quantize(KN_TYPE_BF16, x, h, 256), 512);
    CHECK(kn_dequantize(KN_TYPE_BF16, h, y, 256));
    for (int i = 0; i < 256; i++)
        CHECKF(fabs(x[i] - y[i]) <= fabs(x[i]) * 0x1p-8, "BF16 %g -> %g", (double)x[i],
               (double)y[i]);
    CHECK_EQ_INT(kn_quantize(KN_TYPE_F32, x, y, 256), 1024);
    CHECK(memcmp(x, y, sizeof x) == 0);
}

/* ---- dequantizers on hand-built blocks ---- */

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

TEST(quant_dequant_hand_blocks) {
    float y[256];
    uint8_t b[300];

    /* Q5_0: the fifth bit of element j is bit j of the little-endian qh. */
    memset(b, 0, sizeof b);
    put16(b, 0x3c00);                   /* d = 1 */
    b[2] = 0x01;                        /* element 0 gets +16 */
    b[5] = 0x80;                        /* element 31 gets +16 */
    b[6] = 0x3f;                        /* element 0 low nibble 15, element 16 nibble 3 */
    CHECK(kn_dequantize(KN_TYPE_Q5_0, b, y, 32));
    CHECK(y[0] == 15.0f);               /* 15 + 16 - 16 */
    CHECK(y[16] == -13.0f);             /* 3 - 16 */
    CHECK(y[31] == 0.0f);               /* 0 + 16 - 16 */
    CHECK(y[1] == -16.0f);

    /* Q4_K: sub-block 5 takes its scale from byte 9's low nibble plus the top bits of byte 1. */
    memset(b, 0, sizeof b);
    put16(b, 0x3c00);                   /* d = 1 */
    put16(b + 2, 0x3800);               /* dmin = 0.5 */
    b[4 + 1] = 0x80;                    /* top bits of sub-block 5's scale: 2 -> +32 */
    b[4 + 5] = 0x40;                    /* top bits of sub-block 5's min: 1 -> +16 */
    b[4 + 9] = 0x31;                    /* sc5 low = 1, m5 low = 3 */
    b[4 + 0] = 2;                       /* sub-block 0: scale 2, min 0 */
    b[16 + 2 * 32 + 3] = 0x70;          /* sub-block 5 (high nibbles of run 2), element 3: 7 */
    b[16 + 0] = 0x05;                   /* sub-block 0, element 0: 5 */
    CHECK(kn_dequantize(KN_TYPE_Q4_K, b, y, 256));
    CHECK(y[0] == 10.0f);               /* 1 * 2 * 5 - 0 */
    CHECK(y[5 * 32 + 3] == 33.0f * 7.0f - 0.5f * 19.0f);
    CHECK(y[5 * 32 + 4] == -0.5f * 19.0f);

    /* Q6_K: element 64 + k is ql[k]'s high nibble; its top bits are qh[k % 32] >> 4. */
    memset(b, 0, sizeof b);
    b[1] = 0xa0;                        /* element 65: low bits 10 */
    b[128 + 1] = 0x20;                  /* qh[1] >> 4 (pass 2): top bits 2 -> +32 */
    b[128 + 64 + 4] = (uint8_t)-3;      /* scale of elements 64..79 */
    put16(b + 128 + 64 + 16, 0x3800);   /* d = 0.5 */
    CHECK(kn_dequantize(KN_TYPE_Q6_K, b, y, 256));
    CHECK(y[65] == 0.5f * -3.0f * (float)(42 - 32));
    CHECK(y[0] == 0.5f * 0.0f * -32.0f);

    /* Q8_K: f32 scale, then int8. */
    memset(b, 0, sizeof b);
    float d = 0.25f;
    memcpy(b, &d, 4);
    b[4] = (uint8_t)-128;
    b[4 + 255] = 127;
    CHECK(kn_dequantize(KN_TYPE_Q8_K, b, y, 256));
    CHECK(y[0] == -32.0f && y[255] == 31.75f && y[1] == 0.0f);

    /* Plain integer types. */
    int8_t i8[2] = {-128, 127};
    CHECK(kn_dequantize(KN_TYPE_I8, i8, y, 2) && y[0] == -128.0f && y[1] == 127.0f);
    int32_t i32[2] = {16777217, INT32_MIN};
    CHECK(kn_dequantize(KN_TYPE_I32, i32, y, 2) && y[0] == 16777216.0f && y[1] == -0x1p31f);
    double f64[2] = {1e300, -0.1};
    CHECK(kn_dequantize(KN_TYPE_F64, f64, y, 2) && isinf(y[0]) && y[1] == -0.1f);
}

/* Q5_0 -> Q8_0 at load (model.c) must keep every value: every byte pattern of random blocks,
 * scales included (any f16 but NaN/inf), dequantizes to the same floats both ways. */
TEST(quant_q5_0_to_q8_0_exact) {
    uint8_t q5[NB * 22], q8[NB * 34];
    float a[NB * 32], b[NB * 32];
    uint32_t r = 12345u;
    for (size_t i = 0; i < sizeof q5; i++) {
        r = r * 1664525u + 1013904223u;
        q5[i] = (uint8_t)(r >> 24);
    }
    for (int i = 0; i < NB; i++) q5[i * 22 + 1] &= 0x7b; /* exponent never all ones */
    kn_q5_0_to_q8_0(q5, q8, NB);
    CHECK(kn_dequantize(KN_TYPE_Q5_0, q5, a, NB * 32));
    CHECK(kn_dequantize(KN_TYPE_Q8_0, q8, b, NB * 32));
    CHECK(memcmp(a, b, sizeof a) == 0);
}

TEST(quant_dequant_unaligned) {
    /* Tensors inside a mapped file sit at any offset: read from an odd address. */
    uint8_t *buf = malloc(1 + 2 * 34);
    float x[64], y[64];
    CHECK(buf != NULL);
    for (int i = 0; i < 64; i++) x[i] = rng_normal();
    CHECK_EQ_INT(kn_quantize(KN_TYPE_Q8_0, x, buf + 1, 64), 68);
    CHECK(kn_dequantize(KN_TYPE_Q8_0, buf + 1, y, 64));
    for (int i = 0; i < 64; i++) CHECK(fabsf(x[i] - y[i]) < 0.05f);
    uint8_t f16buf[1 + 8];
    for (int i = 0; i < 4; i++) {
        uint16_t h = kn_fp32_to_fp16((float)i);
        memcpy(f16buf + 1 + 2 * i, &h, 2);
    }
    CHECK(kn_dequantize(KN_TYPE_F16, f16buf + 1, y, 4) && y[3] == 3.0f);
    free(buf);
}

TEST(quant_rejects_bad_requests) {
    uint8_t b[512] = {0};
    float y[512], x[512] = {0};
    CHECK(!kn_dequantize(KN_TYPE_Q4_0, b, y, 31));     /* partial block */
    CHECK(!kn_dequantize(KN_TYPE_Q4_0, b, y, 33));
    CHECK(!kn_dequantize(KN_TYPE_Q2_K, b, y, 128));
    CHECK(!kn_dequantize(KN_TYPE_Q4_0, b, y, -32));
    CHECK(!kn_dequantize(4, b, y, 32));                /* retired Q4_2 */
    CHECK(!kn_dequantize(63, b, y, 32));
    CHECK(!kn_dequantize(KN_TYPE_COUNT_MAX, b, y, 32));
    CHECK(!kn_dequantize(0xffffffffu, b, y, 32));
    CHECK(!kn_dequantize(KN_TYPE_Q8_1, b, y, 32));     /* known, no dequantizer */
    CHECK(!kn_dequantize(KN_TYPE_I64, b, y, 1));
    CHECK(kn_dequantize(KN_TYPE_Q4_0, b, y, 0));       /* zero blocks is a whole number */
    CHECK_EQ_INT(kn_quantize(KN_TYPE_Q2_K, x, b, 256), 0);
    CHECK_EQ_INT(kn_quantize(KN_TYPE_Q5_0, x, b, 32), 0);
    CHECK_EQ_INT(kn_quantize(KN_TYPE_Q8_0, x, b, 31), 0);
    CHECK_EQ_INT(kn_quantize(KN_TYPE_Q8_0, x, b, -1), 0);
    CHECK_EQ_INT(kn_quantize(99, x, b, 32), 0);
    /* Every type that claims a dequantizer has one. */
    for (uint32_t t = 0; t < KN_TYPE_COUNT_MAX; t++) {
        const kn_type_traits *tr = kn_type_get(t);
        if (!tr) continue;
        CHECKF(kn_dequantize(t, b, y, tr->block) == tr->can_dequantize, "%s", tr->name);
    }
}

/* ---- int4_sym ---- */

TEST(quant_int4_sym_nibbles) {
    const float x[8] = {7, -7, 1, -1, 0, 3, -3, 2};
    uint8_t p[4];
    uint16_t s[1];
    float y[8];
    kn_quantize_int4_sym(x, 8, 8, p, s);
    CHECK_EQ_INT(s[0], 0x3c00);  /* 7 / 7 = 1 */
    CHECK_EQ_INT(p[0], 0x97);    /* even element low: 7, odd high: -7 = 0x9 */
    CHECK_EQ_INT(p[1], 0xf1);
    CHECK_EQ_INT(p[2], 0x30);
    CHECK_EQ_INT(p[3], 0x2d);
    kn_dequantize_int4_sym(p, s, 8, 8, y);
    for (int i = 0; i < 8; i++) CHECK(y[i] == x[i]);
    /* Nibble 8 is -8 (two's complement), nibble 7 is +7. */
    const uint8_t q[2] = {0x78, 0x00};
    const uint16_t one = 0x3c00;
    kn_dequantize_int4_sym(q, &one, 2, 2, y);
    CHECK(y[0] == -8.0f && y[1] == 7.0f);
}

TEST(quant_int4_sym_round_trip) {
    enum { G = 128, N = 4 * G };
    float x[N], y[N];
    uint8_t p[N / 2];
    uint16_t s[N / G];
    for (int i = 0; i < N; i++) x[i] = rng_normal();
    for (int i = G; i < 2 * G; i++) x[i] = 0.0f;                       /* all-zero group */
    for (int i = 2 * G; i < 3 * G; i++) x[i] = -fabsf(x[i]) * 1e-3f;   /* negative only, small */
    x[3 * G + 7] = 500.0f;                                              /* outlier */
    kn_quantize_int4_sym(x, N, G, p, s);
    kn_dequantize_int4_sym(p, s, N, G, y);
    CHECK_EQ_INT(s[1], 0);
    for (int g = 0; g < N / G; g++) {
        float d = kn_fp16_to_fp32(s[g]);
        for (int i = g * G; i < (g + 1) * G; i++)
            CHECKF(fabsf(x[i] - y[i]) <= 0.5f * d * (1 + 0x1p-10f) + 1e-12f,
                   "group %d elem %d: %g -> %g (d %g)", g, i, (double)x[i], (double)y[i],
                   (double)d);
    }
    /* A group too large for an F16 scale saturates instead of turning into Inf. */
    float big[2] = {1e9f, -1e9f}, yb[2];
    uint8_t pb[1];
    uint16_t sb[1];
    kn_quantize_int4_sym(big, 2, 2, pb, sb);
    kn_dequantize_int4_sym(pb, sb, 2, 2, yb);
    CHECK_EQ_INT(sb[0], 0x7bff);
    CHECK(yb[0] == 7.0f * 65504.0f && yb[1] == -8.0f * 65504.0f);
}

/* int4_sym as Q4_0 blocks (the bake's int4_sym_g128): a Q4_0 reader (the reference
 * dequantizer, itself bit-exact against gguf-py) sees the int4_sym values exactly, for every
 * group the bake uses; and one block by hand: nibble q is stored biased, element j beside j + 16. */
TEST(quant_int4_sym_as_q4_0) {
    enum { N = 512 };
    static float x[N], want[N], got[N];
    static uint8_t p[N / 2], blocks[N / 32 * sizeof(kn_block_q4_0)];
    static uint16_t s[N / 32];
    for (int i = 0; i < N; i++) x[i] = rng_normal() * (i < N / 2 ? 1.0f : 40.0f);
    for (int i = 64; i < 128; i++) x[i] = 0.0f;
    const int groups[] = {128, 64, 32};
    for (int k = 0; k < 3; k++) {
        int g = groups[k];
        memset(blocks, 0xa5, sizeof blocks);
        kn_quantize_int4_sym_q4_0(x, N, g, blocks, p, s);
        kn_dequantize_int4_sym(p, s, N, g, want);
        CHECK(kn_dequantize(KN_TYPE_Q4_0, blocks, got, N));
        for (int i = 0; i < N; i++)
            CHECKF(bits_of(got[i]) == bits_of(want[i]), "group %d elem %d: %g vs %g", g, i,
                   (double)got[i], (double)want[i]);
        for (int b = 0; b < N / 32; b++)
            CHECKF(kn_f16_bits(blocks + b * sizeof(kn_block_q4_0)) == s[b * 32 / g],
                   "group %d block %d scale", g, b);
    }
    /* d = 7 / 7; 7 at element 0 (biased 15), -7 at 16 (1), -1 at 1 (7), 1 at 17 (9) */
    float h[32] = {0};
    h[0] = 7.0f, h[16] = -7.0f, h[1] = -1.0f, h[17] = 1.0f;
    uint8_t hb[sizeof(kn_block_q4_0)], hp[16];
    uint16_t hs[1];
    kn_quantize_int4_sym_q4_0(h, 32, 32, hb, hp, hs);
    CHECK_EQ_INT(kn_f16_bits(KN_AT(hb, kn_block_q4_0, d)), 0x3c00);
    CHECK_EQ_INT(KN_AT(hb, kn_block_q4_0, qs)[0], 0x1f);
    CHECK_EQ_INT(KN_AT(hb, kn_block_q4_0, qs)[1], 0x97);
    CHECK_EQ_INT(KN_AT(hb, kn_block_q4_0, qs)[2], 0x88);
}
