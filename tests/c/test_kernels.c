/* test_kernels.c — every kernel variant against the plain-C reference, and the reference against
 * exact float arithmetic, on awkward sizes with NaN-poisoned outputs; each variant's results
 * independent of the batch and of the threads (bit for bit). The ISA tables run on weights
 * repacked for them (kn_pack) wherever the engine would repack, so the packer is checked too:
 * a misplaced byte changes a product. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "kernels/kernels.h"
#include "kt.h"
#include "quant/quant.h"

/* Named tolerances, relative to sum_i |w_i x_i| of the product (the scale of its rounding):
 *  - VARIANT: SIMD vs reference on the same quantized activations; only float summation order
 *    differs, so a few float ulps of the magnitude sum.
 *  - ACT_Q8: reference vs exact float product of the dequantized weights: activation rounding,
 *    at most half a step (max|x_block| / 254) per element, checked with that bound directly. */
#define TOL_VARIANT 2e-6
#define TOL_F32_FLOOR 1e-6
/* Attention output of a SIMD variant vs the reference, relative to max |v|: the softmax weights
 * differ by the exponential (expf vs a 2-ulp polynomial) and summation order, a few ulps each. */
#define TOL_ATTN 2e-6
/* SwiGLU of a variant vs the reference, relative: the exponential's 2 ulps, then a division and
 * a product, each within half an ulp. */
#define TOL_SWIGLU 4e-7

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}
static float rndf(void) { return (float)((int)(rnd() % 20001) - 10000) / 10000.0f; }

static size_t block_bytes(uint32_t type) { return kn_type_get(type)->block_bytes; }

/* Fills a random row of n elements in type's layout and writes its values to deq. */
static void random_row(uint32_t type, int n, uint8_t *row, float *deq) {
    if (type == KN_TYPE_F32) {
        for (int i = 0; i < n; i++) {
            deq[i] = rndf();
            memcpy(row + 4 * (size_t)i, &deq[i], 4);
        }
        return;
    }
    if (type == KN_TYPE_F16) {
        for (int i = 0; i < n; i++) {
            uint16_t h = kn_fp32_to_fp16(rndf());
            memcpy(row + 2 * (size_t)i, &h, 2);
            deq[i] = kn_fp16_to_fp32(h);
        }
        return;
    }
    size_t bb = block_bytes(type);
    if (kn_type_wants_q8k(type)) {
        /* random bits, then sane F16 scales where the block has them; the values are what the
         * reference dequantizer (checked against gguf-py) makes of it */
        for (int b = 0; b < n / 256; b++) {
            uint8_t *blk = row + (size_t)b * bb;
            for (size_t i = 0; i < bb; i++) blk[i] = (uint8_t)(rnd() & 0xFF);
            uint16_t dh = kn_fp32_to_fp16(0.0005f + (float)(rnd() % 1000) / 200000.0f);
            uint16_t mh = kn_fp32_to_fp16(0.0002f + (float)(rnd() % 1000) / 400000.0f);
            if (type == KN_TYPE_Q6_K) {
                memcpy(blk + 208, &dh, 2);
            } else {
                memcpy(blk, &dh, 2);
                memcpy(blk + 2, &mh, 2);
            }
        }
        kn_dequantize(type, row, deq, n);
        return;
    }
    for (int b = 0; b < n / 32; b++) {
        uint8_t *blk = row + (size_t)b * bb;
        float *o = deq + b * 32;
        uint16_t dh = kn_fp32_to_fp16(0.001f + (float)(rnd() % 1000) / 20000.0f);
        uint16_t mh = kn_fp32_to_fp16(-0.05f * (float)(rnd() % 100) / 100.0f);
        float d = kn_fp16_to_fp32(dh), m = kn_fp16_to_fp32(mh);
        memcpy(blk, &dh, 2);
        if (type == KN_TYPE_Q8_0) {
            for (int i = 0; i < 32; i++) {
                int8_t q = (int8_t)(rnd() & 0xFF); /* includes -128 */
                blk[2 + i] = (uint8_t)q;
                o[i] = d * (float)q;
            }
            continue;
        }
        int off = type == KN_TYPE_Q4_1 ? 4 : 2;
        if (type == KN_TYPE_Q4_1) memcpy(blk + 2, &mh, 2);
        for (int i = 0; i < 16; i++) {
            uint8_t byte = (uint8_t)(rnd() & 0xFF);
            blk[off + i] = byte;
            int lo = byte & 0x0F, hi = byte >> 4;
            if (type == KN_TYPE_Q4_0) {
                o[i] = d * (float)(lo - 8);
                o[i + 16] = d * (float)(hi - 8);
            } else {
                o[i] = d * (float)lo + m;
                o[i + 16] = d * (float)hi + m;
            }
        }
    }
}

typedef struct prob {
    uint32_t type;
    int n_in, n_out, n_tok, ldy;
    kn_wmat w;
    uint8_t *wdata;
    float *wdeq;   /* [n_out][n_in] */
    float *x;      /* [n_tok][n_in] */
    kn_act a;
    int8_t *aq, *aqk;
    float *ad, *as, *adk;
    int32_t *aq4off;
    int16_t *absk, *absk32;
} prob;

static bool prob_make(prob *p, uint32_t type, int n_in, int n_out, int n_tok) {
    memset(p, 0, sizeof *p);
    p->type = type;
    p->n_in = n_in;
    p->n_out = n_out;
    p->n_tok = n_tok;
    p->ldy = n_out + 5; /* gaps between token rows must stay untouched */
    uint64_t rb;
    if (!kn_row_bytes(type, n_in, &rb)) return false;
    p->wdata = malloc(rb * (size_t)n_out + 64);
    p->wdeq = malloc(sizeof(float) * (size_t)n_in * n_out);
    p->x = malloc(sizeof(float) * (size_t)n_in * n_tok);
    /* a stride larger than the row, on purpose */
    int stride = (n_in + 255) / 256 * 256 + (n_in % 256 ? 0 : 256);
    p->aq = malloc((size_t)stride * n_tok);
    p->aqk = malloc((size_t)stride * n_tok);
    p->ad = malloc(sizeof(float) * (size_t)(stride / 32) * n_tok);
    p->as = malloc(sizeof(float) * (size_t)(stride / 32) * n_tok);
    p->adk = malloc(sizeof(float) * (size_t)(stride / 256) * n_tok);
    p->aq4off = malloc(sizeof(int32_t) * (size_t)(stride / 32) * n_tok);
    p->absk = malloc(sizeof(int16_t) * (size_t)(stride / 16) * n_tok);
    p->absk32 = malloc(sizeof(int16_t) * (size_t)(stride / 32) * n_tok);
    for (int r = 0; r < n_out; r++)
        random_row(type, n_in, p->wdata + rb * (size_t)r, p->wdeq + (size_t)r * n_in);
    for (int i = 0; i < n_in * n_tok; i++) p->x[i] = rndf() * (i % 7 == 0 ? 4.0f : 1.0f);
    p->w = (kn_wmat){type, n_in, n_out, (size_t)rb, p->wdata, KN_LAYOUT_GGUF};
    p->a = (kn_act){p->aq, p->ad, p->as, stride, p->aq4off, p->aqk, p->adk, p->absk, p->absk32};
    if (kn_type_wants_q8k(type)) kn_quantize_act_k(&p->a, p->x, n_tok, n_in);
    else if (kn_type_wants_q8(type)) {
        kn_quantize_act(&p->a, p->x, n_tok, n_in);
        kn_act_q4_offsets(&p->a, n_tok, n_in);
    }
    return true;
}

static void prob_free(prob *p) {
    free(p->wdata);
    free(p->wdeq);
    free(p->x);
    free(p->aq);
    free(p->aqk);
    free(p->ad);
    free(p->as);
    free(p->adk);
    free(p->aq4off);
    free(p->absk);
    free(p->absk32);
}

/* w as table k multiplies it in the engine: repacked when k wants the type packed (*buf then
 * holds the copy, to be freed), else as is. */
static kn_wmat weights_for(const kn_kernels *k, const kn_wmat *w, uint8_t **buf) {
    *buf = NULL;
    size_t n = kn_pack_bytes(k, w);
    if (!n) return *w;
    *buf = aligned_alloc(64, (n + 63) / 64 * 64);
    memset(*buf, 0xA5, n); /* garbage where the packer might forget to write */
    return kn_pack(w, *buf);
}

static float *poisoned(size_t n) {
    float *y = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) y[i] = NAN;
    return y;
}

/* Runs k on p (repacked as the engine would) into a fresh NaN-filled buffer; checks every output
 * written and no gap touched. */
static float *run_variant(const kn_kernels *k, kn_pool *pool, prob *p, bool *ok) {
    size_t ny = (size_t)p->ldy * p->n_tok;
    float *y = poisoned(ny);
    uint8_t *buf;
    kn_wmat w = weights_for(k, &p->w, &buf);
    kn_matmul(pool, k, &w, p->x, &p->a, p->n_tok, y, p->ldy);
    free(buf);
    *ok = true;
    for (int t = 0; t < p->n_tok; t++)
        for (int r = 0; r < p->ldy; r++) {
            float v = y[(size_t)t * p->ldy + r];
            if ((r < p->n_out) != !isnan(v)) *ok = false;
        }
    return y;
}

static const uint32_t k_types[] = {KN_TYPE_F32,  KN_TYPE_F16,  KN_TYPE_Q4_0, KN_TYPE_Q4_1,
                                   KN_TYPE_Q8_0, KN_TYPE_Q4_K, KN_TYPE_Q5_K, KN_TYPE_Q6_K};
#define N_TYPES ((int)(sizeof k_types / sizeof k_types[0]))

/* Row lengths per kind of type: a lone block, odd numbers of blocks, real widths. */
static int n_in_for(uint32_t type, int i) {
    static const int q[] = {32, 96, 576, 1056, 1536}, f[] = {1, 7, 33, 172, 576},
                     k[] = {256, 768, 512, 2816, 1536};
    return kn_type_wants_q8k(type) ? k[i] : kn_type_wants_q8(type) ? q[i] : f[i];
}

TEST(kernels_variants_match_reference) {
    const kn_kernels *variants[] = {kn_kernels_avx2(), kn_kernels_avxvnni(), kn_kernels_avx512(),
                                    kn_kernels_get()};
    const int n_variants = (int)(sizeof variants / sizeof variants[0]);
    const int n_outs[] = {1, 3, 33, 172};
    const int n_toks[] = {1, 2, 3, 4, 5, 9};
    kn_pool *pool = kn_pool_new(3);
    CHECK(pool != NULL);
    int n_checked = 0;
    for (int ti = 0; ti < N_TYPES; ti++) {
        uint32_t type = k_types[ti];
        bool q = kn_type_wants_q8(type);
        int ab = kn_type_act_block(type);
        for (int ii = 0; ii < 5; ii++)
            for (int oi = 0; oi < 4; oi++)
                for (int ki = 0; ki < 6; ki++) {
                    prob p;
                    int n_in = n_in_for(type, ii);
                    CHECK(prob_make(&p, type, n_in, n_outs[oi], n_toks[ki]));
                    bool ok;
                    float *ref = run_variant(kn_kernels_generic(), NULL, &p, &ok);
                    CHECKF(ok, "generic %s %dx%d t%d: output not fully written",
                           kn_type_name(type), p.n_out, n_in, p.n_tok);
                    /* Reference vs exact arithmetic on the dequantized weights. */
                    for (int t = 0; t < p.n_tok; t++)
                        for (int r = 0; r < p.n_out; r++) {
                            double exact = 0, mag = 0, bound = 0;
                            const float *xt = p.x + (size_t)t * n_in;
                            const float *wr = p.wdeq + (size_t)r * n_in;
                            for (int i = 0; i < n_in; i++) {
                                exact += (double)wr[i] * xt[i];
                                mag += fabs((double)wr[i] * xt[i]);
                            }
                            if (q)
                                for (int b = 0; b < n_in / ab; b++) {
                                    double amax = 0, sw = 0;
                                    for (int i = b * ab; i < b * ab + ab; i++) {
                                        if (fabs(xt[i]) > amax) amax = fabs(xt[i]);
                                        sw += fabs(wr[i]);
                                    }
                                    bound += sw * amax / 254.0;
                                }
                            bound += 1e-5 * mag + TOL_F32_FLOOR;
                            double got = ref[(size_t)t * p.ldy + r];
                            CHECKF(fabs(got - exact) <= bound,
                                   "generic %s %dx%d t%d [%d,%d]: %g vs exact %g (bound %g)",
                                   kn_type_name(type), p.n_out, n_in, p.n_tok, t, r, got, exact,
                                   bound);
                        }
                    for (int vi = 0; vi < n_variants; vi++) {
                        if (!variants[vi]) continue;
                        for (int th = 0; th < 2; th++) {
                            float *y = run_variant(variants[vi], th ? pool : NULL, &p, &ok);
                            CHECKF(ok, "%s %s %dx%d t%d: output not fully written (NaN left)",
                                   variants[vi]->name, kn_type_name(type), p.n_out, n_in,
                                   p.n_tok);
                            for (int t = 0; t < p.n_tok; t++)
                                for (int r = 0; r < p.n_out; r++) {
                                    const float *xt = p.x + (size_t)t * n_in;
                                    const float *wr = p.wdeq + (size_t)r * n_in;
                                    double mag = 0;
                                    for (int i = 0; i < n_in; i++)
                                        mag += fabs((double)wr[i] * xt[i]);
                                    size_t at = (size_t)t * p.ldy + r;
                                    CHECKF(fabs((double)y[at] - ref[at]) <=
                                               TOL_VARIANT * mag + TOL_F32_FLOOR,
                                           "%s %s %dx%d t%d [%d,%d]: %g vs ref %g",
                                           variants[vi]->name, kn_type_name(type), p.n_out, n_in,
                                           p.n_tok, t, r, y[at], ref[at]);
                                }
                            free(y);
                            n_checked++;
                        }
                    }
                    free(ref);
                    prob_free(&p);
                }
    }
    kn_pool_free(pool);
    CHECK(n_checked > 0);
}

TEST(kernels_threads_are_deterministic) {
    /* Rows are split between workers, never a row's sum, so any thread count gives the same
     * bits. */
    prob p;
    CHECK(prob_make(&p, KN_TYPE_Q4_1, 576, 1536, 3));
    const kn_kernels *k = kn_kernels_get();
    bool ok;
    float *y1 = run_variant(k, NULL, &p, &ok);
    CHECK(ok);
    for (int n = 2; n <= 4; n++) {
        kn_pool *pool = kn_pool_new(n);
        CHECK(pool != NULL);
        CHECK_EQ_INT(kn_pool_size(pool), n);
        for (int rep = 0; rep < 20; rep++) {
            float *y = run_variant(k, pool, &p, &ok);
            CHECK(ok);
            CHECK(memcmp(y, y1, sizeof(float) * (size_t)p.ldy * p.n_tok) == 0 ||
                  !"thread count changed the result");
            free(y);
        }
        kn_pool_free(pool);
    }
    free(y1);
    prob_free(&p);
}

TEST(kernels_quantize_act_blocks) {
    float x[64];
    for (int i = 0; i < 64; i++) x[i] = (float)(i - 20) * 0.25f;
    for (int i = 32; i < 64; i++) x[i] = 0.0f; /* an all-zero block must give d = 0, q = 0 */
    int8_t q[64];
    float d[2], s[2];
    kn_act a = {.q = q, .d = d, .s = s, .stride = 64};
    kn_quantize_act(&a, x, 1, 64);
    /* ggml's x86 rounding: q = x * (127 / amax) to nearest even; d and d * sum(q) stored as
     * F16 (d here is that F16 value widened back). */
    CHECK(d[0] == kn_fp16_to_fp32(kn_fp32_to_fp16(5.0f / 127.0f)));
    CHECK_EQ_INT(q[0], -127);
    CHECK_EQ_INT(q[31], (int)lrintf(2.75f * (127.0f / 5.0f)));
    CHECK_EQ_INT(q[21], (int)lrintf(0.25f * (127.0f / 5.0f)));
    CHECK(d[1] == 0.0f && s[1] == 0.0f && q[40] == 0);
    int sum = 0;
    for (int i = 0; i < 32; i++) sum += q[i];
    CHECK(s[0] == kn_fp16_to_fp32(kn_fp32_to_fp16(5.0f / 127.0f * (float)sum)));
}

TEST(kernels_ops_reference) {
    /* RMSNorm: unit weights give mean square 1 (up to eps). */
    float x[33], w[33], o[33];
    for (int i = 0; i < 33; i++) {
        x[i] = (float)(i % 5) - 2.0f + 0.1f;
        w[i] = 1.0f;
    }
    kn_rmsnorm(o, x, w, 33, 0.0f);
    double ms = 0;
    for (int i = 0; i < 33; i++) ms += (double)o[i] * o[i];
    CHECK(fabs(ms / 33 - 1.0) < 1e-5);

    /* Softmax: sums to one, order kept, big inputs do not overflow. */
    float sm[5] = {1000.0f, 1001.0f, 999.0f, -INFINITY, 1000.5f};
    kn_softmax(sm, 5);
    float tot = 0;
    for (int i = 0; i < 5; i++) tot += sm[i];
    CHECK(fabsf(tot - 1.0f) < 1e-6f && sm[3] == 0.0f && sm[1] > sm[4] && sm[4] > sm[0]);

    /* SwiGLU. */
    float g[2] = {0.0f, 2.0f}, u[2] = {3.0f, 0.5f};
    kn_swiglu(g, u, 2);
    CHECK(g[0] == 0.0f && fabsf(g[1] - 0.5f * 2.0f / (1.0f + expf(-2.0f))) < 1e-7f);

    /* RoPE: both layouts against the formula, position 0 is the identity, norms kept. */
    kn_rope_cfg c = {10000.0f, 8, 0, 1.0f, 1.0f, 4.0f, 8192};
    double inv[4];
    kn_rope_inv_freq(&c, inv);
    CHECK(fabs(inv[1] - pow(10000.0, -2.0 / 8)) < 1e-15);
    float cs[8];
    float v[16], v0[16];
    for (int i = 0; i < 16; i++) v[i] = v0[i] = (float)i * 0.1f - 0.7f;
    kn_rope_cossin(inv, 8, 0, cs);
    kn_rope_apply(v, 2, 8, 8, false, cs);
    CHECK(memcmp(v, v0, sizeof v) == 0);
    for (int neox = 0; neox < 2; neox++) {
        memcpy(v, v0, sizeof v);
        kn_rope_cossin(inv, 8, 7, cs);
        kn_rope_apply(v, 2, 8, 8, neox, cs);
        for (int h = 0; h < 2; h++)
            for (int i = 0; i < 4; i++) {
                int i0 = neox ? i : 2 * i, i1 = neox ? i + 4 : 2 * i + 1;
                double ang = 7.0 * inv[i];
                double a = v0[h * 8 + i0], b = v0[h * 8 + i1];
                CHECK(fabs(v[h * 8 + i0] - (a * cos(ang) - b * sin(ang))) < 1e-6);
                CHECK(fabs(v[h * 8 + i1] - (a * sin(ang) + b * cos(ang))) < 1e-6);
            }
    }
    /* Linear scaling divides every frequency; Llama 3 keeps the fastest and divides the
     * slowest (Llama 3.1: factor 8, low 1, high 4, original context 8192). */
    kn_rope_cfg lin = {10000.0f, 8, 1, 4.0f, 1.0f, 4.0f, 8192};
    double inv_lin[4];
    kn_rope_inv_freq(&lin, inv_lin);
    for (int i = 0; i < 4; i++) CHECK(fabs(inv_lin[i] - inv[i] / 4.0) < 1e-15);
    kn_rope_cfg l3 = {500000.0f, 128, 2, 8.0f, 1.0f, 4.0f, 8192};
    double inv3[64], inv3_plain[64];
    kn_rope_inv_freq(&l3, inv3);
    l3.scaling = 0;
    kn_rope_inv_freq(&l3, inv3_plain);
    CHECK(inv3[0] == inv3_plain[0]);
    CHECK(fabs(inv3[63] - inv3_plain[63] / 8.0) < 1e-18);
    int n_mid = 0;
    for (int i = 0; i < 64; i++) {
        CHECK(inv3[i] <= inv3_plain[i] && inv3[i] >= inv3_plain[i] / 8.0 * (1 - 1e-12));
        if (inv3[i] < inv3_plain[i] && inv3[i] > inv3_plain[i] / 8.0 * (1 + 1e-9)) n_mid++;
    }
    CHECK(n_mid > 0);
}

TEST(kernels_dispatch_once) {
    const kn_kernels *k = kn_kernels_get();
    CHECK(k != NULL && k == kn_kernels_get());
    CHECK(kn_kernels_type_ok(KN_TYPE_Q4_K) && !kn_kernels_type_ok(KN_TYPE_Q3_K));
    for (int i = 0; i < N_TYPES; i++) CHECK(k->rows[k_types[i]] != NULL);
    /* Every table takes every type in the GGUF layout; the ISA tables also want the quantized
     * ones packed. */
    const kn_kernels *v[] = {kn_kernels_generic(), kn_kernels_avx2(), kn_kernels_avxvnni(),
                             kn_kernels_avx512()};
    for (int vi = 0; vi < 4; vi++)
        if (v[vi])
            for (int i = 0; i < N_TYPES; i++) {
                CHECKF(v[vi]->rows[k_types[i]] != NULL && v[vi]->quantize && v[vi]->quantize_k,
                       "%s lacks %s", v[vi]->name, kn_type_name(k_types[i]));
                CHECK((v[vi]->rows_x8[k_types[i]] != NULL) ==
                      (vi > 0 && kn_type_wants_q8(k_types[i])));
            }
}

static const kn_kernels *const *all_variants(int *n) {
    static const kn_kernels *v[4];
    v[0] = kn_kernels_generic();
    v[1] = kn_kernels_avx2();
    v[2] = kn_kernels_avxvnni();
    v[3] = kn_kernels_avx512();
    *n = 4;
    return v;
}

TEST(kernels_batch_invariant) {
    /* Token t computed in a batch of n (n = 1..9, with and without threads) has the same bits
     * as token t computed alone: what makes a decode step agree with prefill and stateless. */
    int nv;
    const kn_kernels *const *v = all_variants(&nv);
    kn_pool *pool = kn_pool_new(3);
    CHECK(pool != NULL);
    for (int ti = 0; ti < N_TYPES; ti++)
        for (int ii = 1; ii < 4; ii++) {
            uint32_t type = k_types[ti];
            int n_in = n_in_for(type, ii);
            prob p;
            CHECK(prob_make(&p, type, n_in, 37, 9));
            for (int vi = 0; vi < nv; vi++) {
                if (!v[vi]) continue;
                uint8_t *buf;
                kn_wmat w = weights_for(v[vi], &p.w, &buf);
                float alone[9][37];
                for (int t = 0; t < 9; t++) {
                    kn_act a1 = kn_act_row(&p.a, t);
                    kn_matmul(NULL, v[vi], &w, p.x + (size_t)t * n_in, &a1, 1, alone[t], 37);
                }
                float *y = malloc(sizeof(float) * 9 * 37);
                for (int n = 1; n <= 9; n++)
                    for (int th = 0; th < 2; th++) {
                        kn_matmul(th ? pool : NULL, v[vi], &w, p.x, &p.a, n, y, 37);
                        for (int t = 0; t < n; t++)
                            CHECKF(memcmp(y + t * 37, alone[t], sizeof alone[t]) == 0,
                                   "%s %s n_in %d: token %d of a batch of %d (threads %d) "
                                   "differs from it alone",
                                   v[vi]->name, kn_type_name(type), n_in, t, n, th ? 3 : 1);
                    }
                free(y);
                free(buf);
            }
            prob_free(&p);
        }
    kn_pool_free(pool);
}

TEST(kernels_row_ranges_invariant) {
    /* A table's row function on any range of rows [r0, r1), starting or ending inside a group
     * of 8 (an item of kn_matmul_multi that spans two matrices does), for tiles of 1..9
     * tokens: every row in the range has the bits of that row computed whole and alone, and
     * nothing outside it is written. The x86 tables take groups in pairs here (decode: two
     * groups per broadcast; AVX-512 tiles: two groups per 512-bit register) and singly at the
     * ends, so this holds each pairing to the unpaired lanes. */
    enum { NO = 53, NT = 9 };
    const int ranges[][2] = {{0, NO}, {3, NO}, {0, 45}, {5, 44}, {11, 29}, {8, 24}, {17, 18}};
    int nv;
    const kn_kernels *const *v = all_variants(&nv);
    for (int ti = 0; ti < N_TYPES; ti++) {
        uint32_t type = k_types[ti];
        prob p;
        CHECK(prob_make(&p, type, n_in_for(type, 1), NO, NT));
        for (int vi = 0; vi < nv; vi++) {
            if (!v[vi]) continue;
            uint8_t *buf;
            kn_wmat w = weights_for(v[vi], &p.w, &buf);
            kn_rows_fn f = w.layout == KN_LAYOUT_X8 ? v[vi]->rows_x8[type] : v[vi]->rows[type];
            if (!f) {
                free(buf);
                continue;
            }
            float alone[NT][NO], y[NT][NO];
            for (int t = 0; t < NT; t++) {
                kn_act a1 = kn_act_row(&p.a, t);
                f(&w, 0, NO, p.x + (size_t)t * p.n_in, &a1, 1, alone[t], NO);
            }
            for (int ri = 0; ri < (int)(sizeof ranges / sizeof ranges[0]); ri++)
                for (int n = 1; n <= NT; n++) {
                    int r0 = ranges[ri][0], r1 = ranges[ri][1];
                    for (int t = 0; t < NT; t++)
                        for (int r = 0; r < NO; r++) y[t][r] = NAN;
                    f(&w, r0, r1, p.x, &p.a, n, y[0], NO);
                    for (int t = 0; t < NT; t++)
                        for (int r = 0; r < NO; r++) {
                            bool in = t < n && r >= r0 && r < r1;
                            CHECKF(in ? memcmp(&y[t][r], &alone[t][r], sizeof(float)) == 0
                                      : y[t][r] != y[t][r],
                                   "%s %s rows [%d, %d) x %d tokens: row %d token %d %s",
                                   v[vi]->name, kn_type_name(type), r0, r1, n, r, t,
                                   in ? "differs from it alone" : "written outside the range");
                        }
                }
            free(buf);
        }
        prob_free(&p);
    }
}

TEST(kernels_swiglu_variants) {
    /* Each variant against the reference: the exponential is a 2-ulp polynomial instead of
     * expf, so silu moves by a few ulps (TOL_SWIGLU relative); the extremes (overflowing
     * e^-x, underflow, zero) are exact. Lengths that are not multiples of 8 take the tail. */
    enum { N = 203 };
    float g0[N], u[N], ref[N], got[N];
    for (int i = 0; i < N; i++) {
        g0[i] = rndf() * (i % 5 == 0 ? 40.0f : 6.0f);
        u[i] = rndf() * 3.0f;
    }
    const float edge[] = {0.0f, -0.0f, 100.0f, -100.0f, 88.0f, -88.0f, 1e-30f, -1e-30f, 30.0f, -30.0f};
    memcpy(g0, edge, sizeof edge);
    memcpy(ref, g0, sizeof ref);
    kn_swiglu(ref, u, N);
    int nv;
    const kn_kernels *const *v = all_variants(&nv);
    for (int vi = 0; vi < nv; vi++) {
        if (!v[vi]) continue;
        for (int n = N - 8; n <= N; n += 8 - 1) {
            memcpy(got, g0, sizeof got);
            v[vi]->swiglu(got, u, n);
            for (int i = 0; i < n; i++)
                CHECKF(fabsf(got[i] - ref[i]) <= TOL_SWIGLU * fabsf(ref[i]) &&
                           (ref[i] == ref[i]) == (got[i] == got[i]),
                       "%s swiglu [%d] of %d: %.9g vs ref %.9g (g %.9g)", v[vi]->name, i, n,
                       got[i], ref[i], g0[i]);
            for (int i = n; i < N; i++) CHECK(memcmp(&got[i], &g0[i], sizeof(float)) == 0);
        }
    }
}

/* F16 weights through every table, all 63488 finite halves (the x86 tables widen them with
 * F16C, the reference with quant/fp16.c, itself bit-exact against numpy): with n_in = 9 each
 * row holds one half, at column r % 9, and token t is the unit vector e_t, so y[t][r] is that
 * half widened (or zero) — the 8-wide loads and the scalar tail both. A product cannot carry
 * Inf or NaN without turning the zeros beside them into NaN, so those halves stay out. */
TEST(kernels_f16_weights_widen_exactly) {
    enum { NI = 9, NO = 65536 };
    uint16_t *w = calloc((size_t)NO * NI, sizeof *w);
    float *y = malloc(sizeof(float) * (size_t)NO * NI), x[NI * NI] = {0};
    CHECK(w && y);
    for (int r = 0; r < NO; r++)
        if ((r & 0x7c00) != 0x7c00) w[(size_t)r * NI + r % NI] = (uint16_t)r;
    for (int t = 0; t < NI; t++) x[t * NI + t] = 1.0f;
    kn_wmat m = {.type = KN_TYPE_F16, .n_in = NI, .n_out = NO, .row_bytes = NI * sizeof *w,
                 .data = (const uint8_t *)w, .layout = KN_LAYOUT_GGUF};
    int nv, bad = 0;
    const kn_kernels *const *v = all_variants(&nv);
    for (int vi = 0; vi < nv && !bad; vi++) {
        if (!v[vi] || !v[vi]->rows[KN_TYPE_F16]) continue;
        v[vi]->rows[KN_TYPE_F16](&m, 0, NO, x, NULL, NI, y, NO);
        for (int t = 0; t < NI && !bad; t++)
            for (int r = 0; r < NO && !bad; r++) {
                uint16_t h = w[(size_t)r * NI + t];
                float want = kn_fp16_to_fp32(h), got = y[(size_t)t * NO + r];
                /* a zero may come back as +0 where the half was -0: the sum adds +0s */
                bool same = want == 0.0f ? got == 0.0f : memcmp(&want, &got, sizeof got) == 0;
                if (!same) {
                    bad = 1;
                    kt_fail(__FILE__, __LINE__, "%s: half 0x%04x -> %a, want %a", v[vi]->name,
                            (unsigned)h, (double)got, (double)want);
                }
            }
    }
    free(w);
    free(y);
}

/* The F16 KV cache's stores, every table against the reference: every non-NaN float a stride
 * of the bit patterns apart, and for each finite half the points between it and the next one
 * up (the tie itself and one float either side, where rounding to even decides), in runs
 * whose length is not a multiple of 8 (the scalar tail). A planted off-by-one in the rounding
 * fails at the ties. */
TEST(kernels_to_f16_variants_bitwise) {
    enum { N = 1 << 20 };
    float *x = malloc(sizeof(float) * N);
    uint16_t *want = malloc(sizeof(uint16_t) * N), *got = malloc(sizeof(uint16_t) * N);
    CHECK(x && want && got);
    int n = 0;
    for (uint64_t b = 0; b < (1ull << 32) && n < N / 2; b += 8209) {
        uint32_t u = (uint32_t)b;
        float f;
        memcpy(&f, &u, sizeof f);
        if (f == f) x[n++] = f;
    }
    for (uint32_t h = 0; h < 0x7c00 && n + 6 <= N; h++) {
        float lo = kn_fp16_to_fp32((uint16_t)h), hi = kn_fp16_to_fp32((uint16_t)(h + 1));
        float mid = h + 1 == 0x7c00 ? 65520.0f : (float)(((double)lo + (double)hi) / 2);
        for (int sgn = 0; sgn < 2; sgn++) {
            float m = sgn ? -mid : mid;
            x[n++] = m;
            x[n++] = nextafterf(m, 0.0f);
            x[n++] = nextafterf(m, sgn ? -INFINITY : INFINITY);
        }
    }
    kn_to_f16(want, x, n);
    int nv, bad = 0;
    const kn_kernels *const *v = all_variants(&nv);
    for (int vi = 0; vi < nv && !bad; vi++) {
        if (!v[vi]) continue;
        for (int at = 0; at < n && !bad; at += 1021) {
            int len = n - at < 1021 ? n - at : 1021;
            v[vi]->to_f16(got + at, x + at, len);
        }
        for (int i = 0; i < n && !bad; i++)
            if (got[i] != want[i]) {
                bad = 1;
                kt_fail(__FILE__, __LINE__, "%s: %a -> 0x%04x, reference 0x%04x", v[vi]->name,
                        (double)x[i], (unsigned)got[i], (unsigned)want[i]);
            }
    }
    free(x);
    free(want);
    free(got);
}

TEST(kernels_quantize_k_non_finite_blocks) {
    /* The Q8_K form follows the Q8_0 form's rule for activations that overflowed: a block with
     * a NaN or an infinity becomes q = 0 with a NaN scale (its products turn NaN, which the
     * generation loop reports), in every table, bit for bit; the other blocks are untouched. */
    enum { N = 256 * 3 };
    static float x[N];
    for (int i = 0; i < N; i++) x[i] = rndf() * 3.0f;
    x[5] = NAN;
    x[256 + 255] = -INFINITY;
    static int8_t q0[N], q1[N];
    static float d0[N / 256], d1[N / 256];
    static int16_t s0[N / 16], s1[N / 16], t0[N / 32], t1[N / 32];
    kn_act ref = {.qk = q0, .dk = d0, .bsk = s0, .bsk32 = t0, .stride = N};
    kn_quantize_act_k(&ref, x, 1, N);
    for (int b = 0; b < 2; b++) {
        CHECKF(isnan(d0[b]), "block %d: scale %g", b, d0[b]);
        for (int i = 0; i < 256; i++) CHECK(q0[b * 256 + i] == 0);
        for (int j = 0; j < 16; j++) CHECK(s0[b * 16 + j] == 0);
    }
    CHECK(isfinite(d0[2]) && d0[2] != 0.0f); /* d = -m / 127 takes the sign of the block's m */
    int nv;
    const kn_kernels *const *v = all_variants(&nv);
    for (int vi = 0; vi < nv; vi++) {
        if (!v[vi]) continue;
        memset(q1, 0x55, sizeof q1);
        kn_act a = {.qk = q1, .dk = d1, .bsk = s1, .bsk32 = t1, .stride = N};
        v[vi]->quantize_k(&a, x, 1, N);
        CHECKF(memcmp(q0, q1, sizeof q0) == 0 && memcmp(s0, s1, sizeof s0) == 0 &&
                   memcmp(t0, t1, sizeof t0) == 0,
               "%s: Q8_K bytes differ", v[vi]->name);
        for (int b = 0; b < N / 256; b++)
            CHECKF(isnan(d0[b]) ? isnan(d1[b]) : d0[b] == d1[b], "%s: block %d scale %g vs %g",
                   v[vi]->name, b, d1[b], d0[b]);
    }
}

TEST(kernels_quantize_variants_bitwise) {
    /* Every variant's quantizers give the reference's bits, ties included (round half to even:
     * with max 127 the step is 1, so 2.5 -> 2, -3.5 -> -4, 0.5 -> 0), in both forms: Q8_0 with
     * its block sums, and Q8_K. */
    enum { N = 256 * 5, T = 3 };
    static float x[T * N];
    for (int i = 0; i < T * N; i++) x[i] = rndf() * (i % 11 == 0 ? 30.0f : 1.0f);
    for (int i = 32; i < 64; i++) x[i] = 0.0f;
    for (int i = 512; i < 768; i++) x[i] = 0.0f; /* an all-zero super-block: d = 0, q = 0 */
    const float ties[] = {127.0f, 2.5f, -3.5f, 0.5f, -0.5f, 126.5f, -127.0f, 1.5f};
    memcpy(x + 64, ties, sizeof ties);
    /* Q8_K: in one block, the largest magnitude negative (iscale = -127 / m = 1) with an equal
     * positive one after it (the first wins), and exact halves of the step */
    for (int i = 256; i < 512; i++) x[i] = rndf();
    x[256 + 3] = -127.0f;
    x[256 + 9] = 127.0f;
    x[256 + 10] = -2.5f;
    x[256 + 11] = 3.5f;
    int stride = N + 256, sb = stride / 32, sb16 = stride / 16, sbk = stride / 256;
    struct bufs {
        int8_t q[(N + 256) * T], qk[(N + 256) * T];
        float d[(N + 256) / 32 * T], s[(N + 256) / 32 * T], dk[(N + 256) / 256 * T];
        int32_t q4off[(N + 256) / 32 * T];
        int16_t bsk[(N + 256) / 16 * T], bsk32[(N + 256) / 32 * T];
    };
    static struct bufs b0, b1;
    memset(&b0, 0, sizeof b0);
    kn_act ref = {b0.q, b0.d, b0.s, stride, b0.q4off, b0.qk, b0.dk, b0.bsk, b0.bsk32};
    kn_quantize_act(&ref, x, T, N);
    kn_act_q4_offsets(&ref, T, N);
    kn_quantize_act_k(&ref, x, T, N);
    CHECK(b0.q[64] == 127 && b0.q[65] == 2 && b0.q[66] == -4 && b0.q[67] == 0 &&
          b0.q[68] == 0 && b0.q[69] == 126 && b0.q[71] == 2);
    /* Q8_K: m = -127 (the first of |127|), so iscale = 1 and d = 1 */
    CHECK(b0.qk[256 + 3] == -127 && b0.qk[256 + 9] == 127 && b0.qk[256 + 10] == -2 &&
          b0.qk[256 + 11] == 4);
    CHECK(b0.dk[1] == 1.0f && b0.dk[2] == 0.0f && b0.qk[600] == 0);
    int s16 = 0, s32 = 0;
    for (int i = 0; i < 16; i++) s16 += b0.qk[256 + 16 + i];
    for (int i = 0; i < 32; i++) s32 += b0.qk[256 + 32 + i];
    CHECK(b0.bsk[16 + 1] == s16 && b0.bsk32[8 + 1] == s32);
    for (int t = 0; t < T; t++)
        for (int blk = 0; blk < N / 32; blk++) {
            int sum = 0;
            for (int i = 0; i < 32; i++) sum += b0.q[t * stride + blk * 32 + i];
            CHECK(b0.q4off[t * sb + blk] == -8 * sum);
        }
    int nv;
    const kn_kernels *const *v = all_variants(&nv);
    for (int vi = 0; vi < nv; vi++) {
        if (!v[vi]) continue;
        memset(&b1, 0, sizeof b1);
        kn_act a = {b1.q, b1.d, b1.s, stride, b1.q4off, b1.qk, b1.dk, b1.bsk, b1.bsk32};
        v[vi]->quantize(&a, x, T, N);
        v[vi]->quantize_k(&a, x, T, N);
        CHECKF(memcmp(b0.q, b1.q, sizeof b0.q) == 0 && memcmp(b0.d, b1.d, sizeof b0.d) == 0 &&
                   memcmp(b0.s, b1.s, sizeof b0.s) == 0 && memcmp(b0.q4off, b1.q4off, sizeof b0.q4off) == 0,
               "%s: Q8_0 activations differ from the reference", v[vi]->name);
        CHECKF(memcmp(b0.qk, b1.qk, sizeof b0.qk) == 0 &&
                   memcmp(b0.dk, b1.dk, sizeof b0.dk) == 0 &&
                   memcmp(b0.bsk, b1.bsk, sizeof b0.bsk) == 0 &&
                   memcmp(b0.bsk32, b1.bsk32, sizeof b0.bsk32) == 0,
               "%s: Q8_K activations differ from the reference", v[vi]->name);
    }
    (void)sb16;
    (void)sbk;
}

TEST(kernels_attention_variants) {
    /* Each variant against the reference (TOL_ATTN), on head sizes that are and are not
     * multiples of 8 and 16, over an F32 and an F16 cache, for groups of 1 to 9 query heads
     * sharing the KV head; and, within each variant, the bits do not depend on how many masked
     * slots follow the last allowed one (a decode step sees slots 0..p, a stateless window sees
     * them all with the future masked), nor on the size of the group a head is computed in.
     * The F16 reference is the F32 one on the widened cache, bit for bit. */
    const int dims[] = {8, 17, 64, 80, 128};
    const int groups[] = {1, 3, 6, 8, 9}; /* 3, 6, 8: the paired-slot paths of the x86 tables */
    enum { S = 41, GMAX = 9 };
    int nv;
    const kn_kernels *const *v = all_variants(&nv);
    for (int di = 0; di < 5; di++) {
        int d = dims[di];
        float *q = malloc(sizeof(float) * GMAX * d), *k = malloc(sizeof(float) * S * d),
              *val = malloc(sizeof(float) * S * d), *sc = malloc(sizeof(float) * KN_ATTN_SCRATCH(GMAX) * S),
              *ref = malloc(sizeof(float) * GMAX * d), *ref16 = malloc(sizeof(float) * GMAX * d),
              *o1 = malloc(sizeof(float) * GMAX * d), *o2 = malloc(sizeof(float) * GMAX * d),
              *o3 = malloc(sizeof(float) * GMAX * d);
        uint16_t *k16 = malloc(sizeof(uint16_t) * S * d), *v16 = malloc(sizeof(uint16_t) * S * d);
        float *kw = malloc(sizeof(float) * S * d), *vw = malloc(sizeof(float) * S * d);
        for (int i = 0; i < GMAX * d; i++) q[i] = rndf() * 2.0f;
        for (int i = 0; i < S * d; i++) {
            k[i] = rndf() * 2.0f;
            val[i] = rndf();
            k16[i] = kn_fp32_to_fp16(k[i]);
            v16[i] = kn_fp32_to_fp16(val[i]);
            kw[i] = kn_fp16_to_fp32(k16[i]);
            vw[i] = kn_fp16_to_fp32(v16[i]);
        }
        int32_t spos[S];
        for (int t = 0; t < S; t++) spos[t] = t % 7 == 3 ? -1 : t; /* a few empty slots */
        for (int gi = 0; gi < 5; gi++) {
            int g = groups[gi];
            for (int32_t p = 0; p < S; p += (g == 8 ? 1 : 3))
                for (int sw = 0; sw < 4; sw++) {
                    /* Gemma 2's soft-cap at a value that bends these scores (|s| up to ~6) */
                    int swa = sw & 1 ? 5 : 0;
                    float cap = sw & 2 ? 1.5f : 0.0f;
                    float mlr[2][2 * GMAX], ml1[2 * GMAX];
                    kn_attn_ref(q, k, val, spos, S, p, swa, cap, d, g, sc, ref, mlr[0]);
                    kn_attn_ref(q, kw, vw, spos, S, p, swa, cap, d, g, sc, ref16, mlr[1]);
                    kn_attn_ref_f16(q, k16, v16, spos, S, p, swa, cap, d, g, sc, o1, NULL);
                    CHECKF(memcmp(o1, ref16, sizeof(float) * g * d) == 0,
                           "ref f16 d %d pos %d: differs from the F32 reference on the widened "
                           "cache", d, p);
                    double vmax = 1.0;
                    for (int vi = 0; vi < nv; vi++) {
                        if (!v[vi]) continue;
                        for (int h = 0; h < 2; h++) {
                            if (h) {
                                v[vi]->attn_f16(q, k16, v16, spos, S, p, swa, cap, d, g, sc, o1, ml1);
                                v[vi]->attn_f16(q, k16, v16, spos, p + 1, p, swa, cap, d, g, sc, o2, NULL);
                            } else {
                                v[vi]->attn(q, k, val, spos, S, p, swa, cap, d, g, sc, o1, ml1);
                                v[vi]->attn(q, k, val, spos, p + 1, p, swa, cap, d, g, sc, o2, NULL);
                            }
                            /* the max score and the sum of exponentials a fold needs */
                            for (int hh = 0; hh < g; hh++) {
                                double m = mlr[h][2 * hh], l = mlr[h][2 * hh + 1];
                                CHECKF(fabs(ml1[2 * hh] - m) <= 1e-5 * (1 + fabs(m)) &&
                                           fabs(ml1[2 * hh + 1] - l) <= 1e-5 * l,
                                       "%s%s d %d group %d pos %d head %d: max %.9g sum %.9g, "
                                       "ref %.9g %.9g", v[vi]->name, h ? " f16" : "", d, g, p,
                                       hh, ml1[2 * hh], ml1[2 * hh + 1], m, l);
                            }
                            CHECKF(memcmp(o1, o2, sizeof(float) * g * d) == 0,
                                   "%s%s d %d pos %d: masked slots after pos changed the result",
                                   v[vi]->name, h ? " f16" : "", d, p);
                            /* the last head alone gives the same bits as inside the group */
                            const float *ql = q + (size_t)(g - 1) * d;
                            if (h) v[vi]->attn_f16(ql, k16, v16, spos, S, p, swa, cap, d, 1, sc,
                                                         o3, NULL);
                            else v[vi]->attn(ql, k, val, spos, S, p, swa, cap, d, 1, sc, o3, NULL);
                            CHECKF(memcmp(o3, o1 + (size_t)(g - 1) * d, sizeof(float) * d) == 0,
                                   "%s%s d %d: head %d differs alone and in a group of %d",
                                   v[vi]->name, h ? " f16" : "", d, g - 1, g);
                            const float *r = h ? ref16 : ref;
                            for (int i = 0; i < g * d; i++)
                                CHECKF(fabs((double)o1[i] - r[i]) <= TOL_ATTN * vmax,
                                       "%s%s d %d group %d pos %d swa %d cap %g [%d]: %.9g vs "
                                       "ref %.9g", v[vi]->name, h ? " f16" : "", d, g, p, swa,
                                       (double)cap, i, o1[i], r[i]);
                        }
                    }
                }
        }
        /* The soft-cap against its definition, in double (one head, every slot allowed up to
         * the last): softmax(cap * tanh(q.k / sqrt(d) / cap)) . v; and it does bend them. */
        {
            const float cap = 1.5f;
            int32_t p = S - 1;
            double w[S], mx = -INFINITY, sum = 0, dmax = 0;
            for (int t = 0; t < S; t++) {
                double dot = 0;
                for (int i = 0; i < d; i++) dot += (double)q[i] * k[(size_t)t * d + i];
                w[t] = spos[t] < 0 ? -INFINITY : cap * tanh(dot / sqrt((double)d) / cap);
                if (w[t] > mx) mx = w[t];
            }
            for (int t = 0; t < S; t++) sum += w[t] = spos[t] < 0 ? 0 : exp(w[t] - mx);
            kn_attn_ref(q, k, val, spos, S, p, 0, cap, d, 1, sc, o1, NULL);
            kn_attn_ref(q, k, val, spos, S, p, 0, 0.0f, d, 1, sc, o2, NULL);
            for (int i = 0; i < d; i++) {
                double want = 0;
                for (int t = 0; t < S; t++) want += w[t] / sum * val[(size_t)t * d + i];
                CHECKF(fabs(o1[i] - want) <= 1e-5, "softcap d %d [%d]: %.9g vs %.9g", d, i,
                       o1[i], want);
                if (fabs((double)o2[i] - o1[i]) > dmax) dmax = fabs((double)o2[i] - o1[i]);
            }
            CHECKF(dmax > 1e-2, "softcap d %d: capping at %g changed nothing (%g)", d,
                   (double)cap, dmax);
        }
        /* Nothing allowed: zeros, not NaN. */
        int32_t none[S];
        for (int t = 0; t < S; t++) none[t] = -1;
        for (int vi = 0; vi < nv; vi++)
            if (v[vi]) {
                float ml[6];
                for (int i = 0; i < 3 * d; i++) o1[i] = NAN;
                v[vi]->attn(q, k, val, none, S, 5, 0, 0.0f, d, 3, sc, o1, ml);
                for (int i = 0; i < 3 * d; i++) CHECK(o1[i] == 0.0f);
                for (int h = 0; h < 3; h++) CHECK(ml[2 * h] == -INFINITY && ml[2 * h + 1] == 0.0f);
                for (int i = 0; i < 3 * d; i++) o1[i] = NAN;
                v[vi]->attn_f16(q, k16, v16, none, S, 5, 0, 0.0f, d, 3, sc, o1, ml);
                for (int i = 0; i < 3 * d; i++) CHECK(o1[i] == 0.0f);
                for (int h = 0; h < 3; h++) CHECK(ml[2 * h] == -INFINITY && ml[2 * h + 1] == 0.0f);
            }
        free(k16);
        free(v16);
        free(kw);
        free(vw);
        free(ref16);
        free(q);
        free(k);
        free(val);
        free(sc);
        free(ref);
        free(o1);
        free(o2);
        free(o3);
    }
}

TEST(kernels_attention_q8_cache) {
    /* A cache of Q8_0 rows (--kv q8_0), whose keys are scored in integers against the query
     * rounded to Q8_0 (llama.cpp's q8_0 path): the reference within TOL_ATTN of the F32
     * reference on the rows and the query dequantized (ggml's Q8_0 rounding, kn_quantize);
     * every variant within TOL_ATTN of the reference, with the same max scores to the bit (the
     * integer dots are exact and the float steps the same) and the same sums, the same bits
     * whatever masked slots follow and whatever the group size. Head sizes 32 to 128 (the
     * q8_0 cache's multiples of 32), groups 1 to 9, masked slots, a window, a cap. */
    const int dims[] = {32, 64, 96, 128}, groups[] = {1, 3, 8, 9};
    enum { S = 41, GMAX = 9 };
    int nv;
    const kn_kernels *const *v = all_variants(&nv);
    for (int di = 0; di < 4; di++) {
        int d = dims[di];
        size_t rb = kn_kv_row_bytes(KN_KV_Q8, d);
        CHECK_EQ_INT((int)rb, d / 32 * 34);
        float *q = malloc(sizeof(float) * GMAX * d), *qr = malloc(sizeof(float) * GMAX * d),
              *src = malloc(sizeof(float) * S * d),
              *kq = malloc(sizeof(float) * S * d), *vq = malloc(sizeof(float) * S * d),
              *sc = malloc(sizeof(float) * KN_ATTN_SCRATCH(GMAX) * S),
              *ref = malloc(sizeof(float) * GMAX * d), *o1 = malloc(sizeof(float) * GMAX * d),
              *o2 = malloc(sizeof(float) * GMAX * d);
        uint8_t *k8 = malloc(rb * S), *v8 = malloc(rb * S);
        for (int i = 0; i < GMAX * d; i++) q[i] = rndf() * 2.0f;
        uint8_t *q8 = malloc(rb * GMAX);
        CHECK(kn_quantize(KN_TYPE_Q8_0, q, q8, (int64_t)GMAX * d) == rb * GMAX);
        CHECK(kn_dequantize(KN_TYPE_Q8_0, q8, qr, (int64_t)GMAX * d));
        free(q8);
        for (int kv = 0; kv < 2; kv++) {
            for (int i = 0; i < S * d; i++) src[i] = rndf() * (kv ? 1.0f : 2.0f) * (i % 5 ? 1 : 3);
            CHECK(kn_quantize(KN_TYPE_Q8_0, src, kv ? v8 : k8, (int64_t)S * d) == rb * S);
            CHECK(kn_dequantize(KN_TYPE_Q8_0, kv ? v8 : k8, kv ? vq : kq, (int64_t)S * d));
        }
        int32_t spos[S];
        for (int t = 0; t < S; t++) spos[t] = t % 7 == 3 ? -1 : t;
        for (int gi = 0; gi < 4; gi++)
            for (int32_t p = 0; p < S; p += 4)
                for (int sw = 0; sw < 4; sw++) {
                    int g = groups[gi], swa = sw & 1 ? 5 : 0;
                    float cap = sw & 2 ? 1.5f : 0.0f, mlr[2 * GMAX], ml1[2 * GMAX];
                    kn_attn_ref(qr, kq, vq, spos, S, p, swa, cap, d, g, sc, o1, ml1);
                    kn_attn_ref_q8(q, k8, v8, spos, S, p, swa, cap, d, g, sc, ref, mlr);
                    for (int i = 0; i < g * d; i++)
                        CHECKF(fabs((double)o1[i] - ref[i]) <= TOL_ATTN,
                               "ref q8 d %d group %d pos %d [%d]: %.9g vs the F32 reference on "
                               "the dequantized cache and query %.9g", d, g, p, i, ref[i], o1[i]);
                    for (int vi = 0; vi < nv; vi++) {
                        if (!v[vi]) continue;
                        v[vi]->attn_q8(q, k8, v8, spos, S, p, swa, cap, d, g, sc, o1, ml1);
                        v[vi]->attn_q8(q, k8, v8, spos, p + 1, p, swa, cap, d, g, sc, o2, NULL);
                        CHECKF(memcmp(o1, o2, sizeof(float) * g * d) == 0,
                               "%s q8 d %d pos %d: masked slots after pos changed the result",
                               v[vi]->name, d, p);
                        v[vi]->attn_q8(q + (size_t)(g - 1) * d, k8, v8, spos, S, p, swa, cap, d,
                                       1, sc, o2, NULL);
                        CHECKF(memcmp(o2, o1 + (size_t)(g - 1) * d, sizeof(float) * d) == 0,
                               "%s q8 d %d: the last head differs alone and in a group of %d",
                               v[vi]->name, d, g);
                        for (int i = 0; i < g * d; i++)
                            CHECKF(fabs((double)o1[i] - ref[i]) <= TOL_ATTN * 3,
                                   "%s q8 d %d group %d pos %d swa %d cap %g [%d]: %.9g vs ref "
                                   "%.9g", v[vi]->name, d, g, p, swa, (double)cap, i, o1[i],
                                   ref[i]);
                        for (int h = 0; h < g; h++)
                            CHECKF(memcmp(&ml1[2 * h], &mlr[2 * h], sizeof(float)) == 0 &&
                                       fabs(ml1[2 * h + 1] - mlr[2 * h + 1]) <=
                                           1e-5 * mlr[2 * h + 1],
                                   "%s q8 d %d head %d: max %.9g / sum %.9g differ from the "
                                   "reference's %.9g / %.9g", v[vi]->name, d, h, ml1[2 * h],
                                   ml1[2 * h + 1], mlr[2 * h], mlr[2 * h + 1]);
                    }
                }
        free(q);
        free(qr);
        free(src);
        free(kq);
        free(vq);
        free(sc);
        free(ref);
        free(o1);
        free(o2);
        free(k8);
        free(v8);
    }
}

TEST(kernels_attention_fold) {
    /* Attention over slot ranges folded in order (kn_attn_fold, as the engine runs a long
     * cache) matches the same variant over all slots at once (the scores are the same bits
     * either way, so what differs is the fold's arithmetic), for every variant, F32 and F16
     * caches, ranges of 7, 64 and 128 slots and ragged ones, with masked slots, a sliding
     * window, and scores far apart between ranges (one range's exponentials all underflow
     * against another's max); one range holding every allowed slot gives the kernel's own
     * bits. */
    enum { S = 300, GMAX = 8 };
    const int dims[] = {17, 64}, groups[] = {1, 3, 8}, cuts[] = {7, 64, 128, 0};
    int nv;
    const kn_kernels *const *v = all_variants(&nv);
    for (int di = 0; di < 2; di++) {
        int d = dims[di];
        float *q = malloc(sizeof(float) * GMAX * d), *k = malloc(sizeof(float) * S * d),
              *val = malloc(sizeof(float) * S * d),
              *sc = malloc(sizeof(float) * KN_ATTN_SCRATCH(GMAX) * S),
              *ref = malloc(sizeof(float) * GMAX * d), *acc = malloc(sizeof(float) * GMAX * d),
              *part = malloc(sizeof(float) * GMAX * d);
        uint16_t *k16 = malloc(sizeof(uint16_t) * S * d), *v16 = malloc(sizeof(uint16_t) * S * d);
        for (int i = 0; i < GMAX * d; i++) q[i] = rndf() * 2.0f;
        for (int i = 0; i < S * d; i++) {
            /* slots 100..139 score far above the rest along query 0's direction */
            int t = i / d;
            k[i] = rndf() + (t >= 100 && t < 140 ? 40.0f * q[i % d] : 0.0f);
            val[i] = rndf();
            k16[i] = kn_fp32_to_fp16(k[i]);
            v16[i] = kn_fp32_to_fp16(val[i]);
            k[i] = kn_fp16_to_fp32(k16[i]);
            val[i] = kn_fp16_to_fp32(v16[i]);
        }
        int32_t spos[S];
        for (int t = 0; t < S; t++) spos[t] = t % 11 == 5 ? -1 : t;
        for (int gi = 0; gi < 3; gi++)
            for (int ci = 0; ci < 4; ci++)
                for (int sw = 0; sw < 2; sw++)
                    for (int32_t p = 3; p < S; p += 37) {
                        int g = groups[gi], swa = sw ? 90 : 0;
                        for (int vi = 0; vi < nv; vi++) {
                            if (!v[vi]) continue;
                            for (int h = 0; h < 2; h++) {
                                if (h) v[vi]->attn_f16(q, k16, v16, spos, S, p, swa, 0.0f, d, g,
                                                       sc, ref, NULL);
                                else v[vi]->attn(q, k, val, spos, S, p, swa, 0.0f, d, g, sc, ref,
                                                 NULL);
                                float st[2 * GMAX];
                                memset(acc, 0, sizeof(float) * g * d);
                                for (int j = 0; j < g; j++) {
                                    st[2 * j] = -INFINITY;
                                    st[2 * j + 1] = 0.0f;
                                }
                                int n_ranges = 0, holder = -1;
                                for (int t0 = 0, n; t0 < S; t0 += n, n_ranges++) {
                                    n = cuts[ci] ? cuts[ci] : 1 + (int)(rnd() % 90);
                                    if (n > S - t0) n = S - t0;
                                    float ml[2 * GMAX];
                                    if (h) v[vi]->attn_f16(q, k16 + (size_t)t0 * d,
                                                           v16 + (size_t)t0 * d, spos + t0, n, p,
                                                           swa, 0.0f, d, g, sc, part, ml);
                                    else v[vi]->attn(q, k + (size_t)t0 * d, val + (size_t)t0 * d,
                                                     spos + t0, n, p, swa, 0.0f, d, g, sc, part, ml);
                                    if (ml[1] > 0) holder = holder == -1 ? t0 : -2;
                                    kn_attn_fold(acc, st, part, ml, d, g);
                                }
                                for (int i = 0; i < g * d; i++)
                                    CHECKF(fabs((double)acc[i] - ref[i]) <= 4 * TOL_ATTN,
                                           "%s%s d %d group %d cut %d swa %d pos %d [%d]: folded "
                                           "%.9g vs whole %.9g", v[vi]->name, h ? " f16" : "", d,
                                           g, cuts[ci], swa, p, i, acc[i], ref[i]);
                                if (holder >= 0) {
                                    /* one range held every allowed slot: the kernel's bits */
                                    CHECKF(memcmp(acc, ref, sizeof(float) * g * d) == 0,
                                           "%s%s d %d pos %d: one range's fold is not the "
                                           "kernel's result", v[vi]->name, h ? " f16" : "", d, p);
                                }
                                CHECK(n_ranges > 1);
                            }
                        }
                    }
        free(q);
        free(k);
        free(val);
        free(sc);
        free(ref);
        free(acc);
        free(part);
        free(k16);
        free(v16);
    }
}

typedef struct pool_count {
    _Atomic int hits[97];
    _Atomic int bad_worker;
    int n_workers, n_items;
} pool_count;

static void pool_count_item(void *ctx, int i, int n, int worker) {
    pool_count *c = ctx;
    if (n != c->n_items || worker < 0 || worker >= c->n_workers) c->bad_worker = 1;
    c->hits[i]++;
}

TEST(kernels_pool_runs_each_item_once) {
    /* Thousands of back-to-back jobs of many small items: every item exactly once, worker ids
     * in range, no job leaking into the next (the counters live on this stack frame). */
    for (int nth = 1; nth <= 4; nth++) {
        kn_pool *pool = kn_pool_new(nth);
        CHECK(pool != NULL);
        for (int rep = 0; rep < 2000; rep++) {
            pool_count c;
            memset(&c, 0, sizeof c);
            c.n_workers = nth;
            c.n_items = rep % 3 == 0 ? 1 : 97;
            kn_pool_run(pool, pool_count_item, &c, c.n_items);
            int want_all = rep % 3 == 0 ? 0 : 1;
            CHECK(c.hits[0] == 1 && c.bad_worker == 0);
            for (int i = 1; i < 97; i++) CHECK(c.hits[i] == want_all);
        }
        kn_pool_free(pool);
    }
}
