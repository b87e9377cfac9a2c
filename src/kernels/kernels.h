/* kernels.h — the compute kernels of the CPU forward pass, and the thread pool that runs them.
 *
 * Every op has a plain-C reference (ref.c). The products of a weight matrix with activations
 * (most of the time) also have AVX2, AVX-VNNI and AVX-512 VNNI variants in their own files
 * (*_avx2.c, *_avxvnni.c, *_avx512.c, compiled with their own ISA flags), and so do activation
 * quantization and attention; one table of function pointers is chosen once from CPUID
 * (kn_kernels_get) and never changes afterwards.
 *
 * Products. A weight matrix W is n_out rows of n_in elements. y[t][r] = dot(W[r], x[t]).
 *   - F32 / F16 weights take the activations as F32.
 *   - Q4_0 / Q4_1 / Q8_0 weights take the activations quantized to 8 bits per block of 32
 *     (kn_quantize_act) exactly as ggml's x86 Q8_0 / Q8_1 do: q = x * (127 / max|x|) rounded
 *     to nearest even, the scale d = max|x| / 127 and Q4_1's offset d * sum(q) rounded to F16.
 *   - Q4_K / Q5_K / Q6_K weights take them as ggml's Q8_K (kn_quantize_act_k): blocks of 256,
 *     q = x * (-127 / m) rounded to nearest even where m is the element of largest magnitude,
 *     a float scale d = 1 / (-127 / m), and integer sums of q per 16 and per 32 elements.
 *   Every variant quantizes to the same bits.
 *
 * Layouts. The reference multiplies rows as GGUF stores them (KN_LAYOUT_GGUF). The x86 tables
 * want the quantized types repacked once, at load (kn_pack), into groups of 8 rows interleaved
 * block by block (KN_LAYOUT_X8, described in pack.c): one 256-bit register then holds 4
 * weights of each of 8 rows, a broadcast of 4 activation bytes feeds all 8, and the 8 row sums
 * come out in the 8 lanes of one register (no horizontal sum per row, one scale load per
 * block for 8 rows). A table's rows_x8[type] says whether it wants that type repacked.
 *
 * Error bounds (tests/c/test_kernels.c checks each with a named tolerance):
 *   - Activation rounding, shared by all variants: at most half a step per element
 *     (max|x_block| / 254), so |y - exact| <= sum over blocks of (sum|w| in the block) *
 *     max|x_block| / 254 (the same as llama.cpp's CPU path); none for F32 / F16.
 *   - Reference vs exact arithmetic on the same inputs: float summation, <= 1e-5 * sum|w x|.
 *   - A SIMD variant vs the reference: the integer dot of every block (and, for the K-quants,
 *     the scale-weighted sum of a super-block) is exact in all of them, so they differ only in
 *     the order and grouping of float additions (and FMA contraction): <= 2e-6 * sum|w x| +
 *     1e-6 (TOL_VARIANT). Attention: the exponential (expf vs a 2-ulp polynomial) and summation
 *     order, <= 2e-6 * max|v| (TOL_ATTN).
 *   Results are not bitwise equal across variants; within one variant they are bitwise
 *   reproducible, see below.
 *
 * Batch invariance. Within a variant, each output element is computed by the same sequence of
 * float operations whatever the number of tokens in the call and however the rows are divided
 * among threads: a token's product never mixes with another token's, a row is never split (a
 * group of 8 rows is 8 independent lanes), and the loop structure is the same for a tile of 1
 * and of 4 tokens. Quantization, RMSNorm, RoPE and attention are per token. So a decode step, a
 * prefill chunk of any size and a stateless window give the same logits bit for bit, and greedy
 * generation does not fork between them on a near-tie.
 *
 * Usage:
 *     const kn_kernels *k = kn_kernels_get();          // once; cheap afterwards
 *     kn_wmat w = ...;                                  // GGUF layout, or kn_pack(k, ...) of it
 *     kn_act a = {...};                                 // see kn_act
 *     k->quantize(&a, x, n_tok, n_in);                 // Q4_0 / Q4_1 / Q8_0 weights
 *     k->quantize_k(&a, x, n_tok, n_in);               // Q4_K / Q5_K / Q6_K weights
 *     kn_matmul(pool, k, &w, x, &a, n_tok, y, ldy);     // y[t * ldy + r]
 */
#ifndef KN_KERNELS_H
#define KN_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "quant/blocks.h"

#define KN_QBLOCK KN_QK    /* elements per block of Q4_0, Q4_1, Q8_0 and of quantized activations */
#define KN_KBLOCK KN_QK_K  /* elements per super-block of the K-quants and of Q8_K activations */
#define KN_NTYPES 32       /* size of the tables indexed by kn_type */
#define KN_GROUP KN_X8_GROUP /* rows per interleaved group of KN_LAYOUT_X8 (quant/blocks.h) */
#define KN_ATTN_MAX_D 4096 /* widest attention head (the hyperparameter check's limit) */
/* Rows of attention scratch for n_q query heads (the SIMD variants work 8 heads at a time). */
#define KN_ATTN_SCRATCH(n_q) (((n_q) + 7) / 8 * 8)

enum kn_layout {
    KN_LAYOUT_GGUF = 0,     /* [n_out][row_bytes], GGUF's blocks */
    KN_LAYOUT_X8 = 1,       /* ceil(n_out / 8) groups of 8 rows interleaved (pack.c) */
};

/* A weight matrix: viewed in place (usually inside the mmapped GGUF), or repacked. */
typedef struct kn_wmat {
    uint32_t type;          /* kn_type: F32, F16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K or Q6_K */
    int n_in;               /* elements per row (GGUF ne[0]) */
    int n_out;              /* rows (GGUF ne[1]) */
    size_t row_bytes;       /* GGUF: bytes of one stored row; X8: bytes of one group of 8 */
    const uint8_t *data;    /* GGUF: [n_out][row_bytes]; X8: [ceil(n_out/8)][row_bytes] */
    int layout;             /* kn_layout */
} kn_wmat;

/* Activations of n_tok tokens quantized to 8 bits, one row of n elements per token, in the two
 * forms the weight types want. Rows are stride elements apart (stride a multiple of 32 and, for
 * the Q8_K form, of 256; stride >= n). A form's pointers may be NULL when it is not used.
 * Q8_0 form (kn_quant_fn quantize), for Q4_0 / Q4_1 / Q8_0: */
typedef struct kn_act {
    int8_t *q;              /* [n_tok][stride] */
    float *d;               /* [n_tok][stride/32] block scale */
    float *s;               /* [n_tok][stride/32] d * sum(q of the block), for Q4_1's offset */
    int stride;
    int32_t *q4off;         /* [n_tok][stride/32] -8 * sum(q of the block): what the offset of
                             * 8 of Q4_0's nibbles adds to the repacked Q4_0's block dot;
                             * NULL: not wanted */
    /* Q8_K form (quantize_k), for Q4_K / Q5_K / Q6_K: */
    int8_t *qk;             /* [n_tok][stride] */
    float *dk;              /* [n_tok][stride/256] super-block scale */
    int16_t *bsk;           /* [n_tok][stride/16] sum(q) per 16 elements (ggml's bsums) */
    int16_t *bsk32;         /* [n_tok][stride/32] sum(q) per 32 elements */
} kn_act;

/* One row-range of a product: y[t * ldy + r] = dot(W[r], x[t]) for r in [r0, r1), t < n_tok.
 * x is used for F32/F16 weights (rows n_in apart), a for quantized ones. */
typedef void (*kn_rows_fn)(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a,
                           int n_tok, float *y, int ldy);

/* Quantizes n_tok rows of n elements (n a multiple of 32) of x (rows n apart) into a. Every
 * variant gives the same bits as kn_quantize_act. */
typedef void (*kn_quant_fn)(kn_act *a, const float *x, int n_tok, int n);

/* Attention of the n_q query heads q[n_q][d] that share one KV head (grouped-query attention;
 * n_q = 1 without it) over its n_slots cached keys k[n_slots][d] and values v[n_slots][d]:
 * slot t takes part when 0 <= slot_pos[t] <= pos and, with a sliding window swa > 0,
 * pos - slot_pos[t] < swa. out[h][d] = softmax(cap(q[h].k / sqrt(d))) . v, where cap(s) is
 * softcap * tanhf(s / softcap) when softcap > 0 (Gemma 2's attention logit soft-capping, one
 * scalar tanhf per score in every table, so the tables agree as without it) and s otherwise;
 * scores is [KN_ATTN_SCRATCH(n_q)][n_slots] scratch. Cached rows must be finite. A slot
 * outside the mask adds nothing and changes no rounding, so the result does not depend on how
 * many masked slots follow (decode vs a whole window); nor does a head's result depend on
 * n_q. Only slots up to the last allowed one are read. Unless ml is NULL, ml[h][2] gets head
 * h's largest score and its sum of exponentials (-inf and 0 when no slot is allowed): what
 * kn_attn_fold needs to merge this result with the same heads' over other slots. */
typedef void (*kn_attn_fn)(const float *q, const float *k, const float *v, const int32_t *slot_pos,
                           int n_slots, int32_t pos, int swa, float softcap, int d, int n_q,
                           float *scores, float *out, float *ml);
/* The same over a cache of IEEE halves (the engine's default KV cache): each key and value
 * element is widened exactly, then the arithmetic is the F32 variant's. */
typedef void (*kn_attn_f16_fn)(const float *q, const uint16_t *k, const uint16_t *v,
                               const int32_t *slot_pos, int n_slots, int32_t pos, int swa,
                               float softcap, int d, int n_q, float *scores, float *out,
                               float *ml);

/* The same over a cache of Q8_0 rows (d / 32 GGUF blocks of 34 bytes a row; d a multiple of
 * 32), scored as llama.cpp scores a q8_0 cache: each query rounded to Q8_0 per block of 32
 * (ties to even), each key row dotted with it in integers, exactly, per block in 8 lanes of 4
 * products, lane by lane into floats times the two block scales (fused), the lanes summed by a
 * fixed tree: every table gives the reference's scores to the bit. Values are widened to
 * d * q, exactly (an f16 scale times an int8 fits a float), and weighted as in F32. */
typedef void (*kn_attn_q8_fn)(const float *q, const uint8_t *k, const uint8_t *v,
                              const int32_t *slot_pos, int n_slots, int32_t pos, int swa,
                              float softcap, int d, int n_q, float *scores, float *out,
                              float *ml);

typedef struct kn_kernels {
    const char *name;               /* "generic", "avx2", "avxvnni", "avx512vnni" */
    kn_rows_fn rows[KN_NTYPES];     /* GGUF layout, by kn_type; NULL where unsupported */
    kn_rows_fn rows_x8[KN_NTYPES];  /* KN_LAYOUT_X8; non-NULL: this table wants the type packed */
    kn_quant_fn quantize;           /* the Q8_0 form (and q4off when a->q4off is set) */
    kn_quant_fn quantize_k;         /* the Q8_K form; n a multiple of 256 */
    kn_attn_fn attn;
    kn_attn_f16_fn attn_f16;
    kn_attn_q8_fn attn_q8;
    void (*swiglu)(float *g, const float *u, int n); /* as kn_swiglu; one row per call, so
                                                      * that a row's bits do not depend on the
                                                      * rows before it */
    void (*to_f16)(uint16_t *h, const float *x, int n); /* as kn_to_f16: the F16 KV cache's
                                                         * stores */
} kn_kernels;

/* The tables kiln has, by name, reference first: "generic" (plain C, every CPU), "avx2"
 * (AVX2 + FMA + F16C), "avxvnni" (AVX2 + AVX-VNNI: Alder Lake and later), "avx512vnni"
 * (AVX-512 F/DQ/BW/VL + VNNI). A table is usable only where CPUID (and the OS's XSAVE state)
 * says its instructions exist. */
#define KN_KERNEL_TABLES 4
extern const char *const kn_kernel_names[KN_KERNEL_TABLES];

/* The table called name, or NULL when the name is unknown or this CPU lacks its instructions. */
const kn_kernels *kn_kernels_by_name(const char *name);
/* The usable tables, reference first and the best last; returns how many (>= 1: generic). */
int kn_kernels_usable(const kn_kernels *out[KN_KERNEL_TABLES]);

/* The table the engine runs, chosen once: the environment variable KILN_KERNELS names one
 * (for tests, benchmarks and bug reports), else the best this CPU can run. A name that is
 * unknown or not usable here is an error (KILN_ERR_INVALID_ARG, the message naming the valid
 * choices), never silently replaced: a test that forces a table must run that table. */
kiln_status kn_kernels_choose(const kn_kernels **out, kiln_error *err);
/* The chosen table, or the best one when KILN_KERNELS is invalid (callers that cannot fail:
 * tests of the kernels themselves). Thread-safe. */
const kn_kernels *kn_kernels_get(void);
/* Each variant, for tests and benchmarks; NULL where this CPU lacks the instructions. */
const kn_kernels *kn_kernels_generic(void);
const kn_kernels *kn_kernels_avx2(void);
const kn_kernels *kn_kernels_avxvnni(void);
const kn_kernels *kn_kernels_avx512(void);

/* Whether products with weights of this type are supported (F32, F16, Q4_0, Q4_1, Q8_0, Q4_K,
 * Q5_K, Q6_K) for rows of n_in elements (a whole number of the type's blocks). */
bool kn_kernels_type_ok(uint32_t type);
/* Whether this weight type wants quantized activations (either form). */
bool kn_type_wants_q8(uint32_t type);
/* Whether it wants them in the Q8_K form (the K-quants). */
bool kn_type_wants_q8k(uint32_t type);
/* Elements per block of the type's activations: 32, 256 for the K-quants, 1 for F32 / F16. */
int kn_type_act_block(uint32_t type);

/* The reference kn_quant_fn of the Q8_0 form: q, d and s (the table's quantize is the fast
 * one, with the same bits, and also writes q4off). */
void kn_quantize_act(kn_act *a, const float *x, int n_tok, int n);
/* The reference of the Q8_K form (ggml's quantize_row_q8_K): qk, dk, bsk and bsk32. */
void kn_quantize_act_k(kn_act *a, const float *x, int n_tok, int n);
/* a->q4off from a->q, for n_tok rows of n elements. */
void kn_act_q4_offsets(kn_act *a, int n_tok, int n);
/* The view of a that starts at its row t (the pointers moved, NULL ones kept NULL). */
kn_act kn_act_row(const kn_act *a, int t);

/* ---- repacking (pack.c) ----
 * Bytes of w repacked for table k (0 when k multiplies w's type in the GGUF layout, or w is not
 * a whole number of blocks per row); the buffer should be 64-byte aligned. */
size_t kn_pack_bytes(const kn_kernels *k, const kn_wmat *w);
/* The view of w packed into dst (kn_pack_bytes of it), without writing anything: fill it with
 * kn_pack_groups over [0, ceil(n_out / 8)), in one call or split among threads (groups are
 * independent). Rows past n_out in the last group are zeros. */
kn_wmat kn_pack_view(const kn_wmat *w, const uint8_t *dst);
void kn_pack_groups(const kn_wmat *w, uint8_t *dst, int g0, int g1);
/* Both at once, on this thread. */
kn_wmat kn_pack(const kn_wmat *w, uint8_t *dst);

/* ---- thread pool ----
 * The caller's thread is worker 0, so a pool of 1 starts no thread. Workers spin briefly on an
 * atomic generation counter before sleeping, since a decode step issues hundreds of small jobs
 * and waking a sleeping thread costs more than most of them. */
typedef struct kn_pool kn_pool;
/* Item i of n, run by thread `worker` (< kn_pool_size; for per-thread scratch). */
typedef void (*kn_task_fn)(void *ctx, int i, int n, int worker);

/* NULL when threads cannot be started or memory is short. n_threads >= 1. */
kn_pool *kn_pool_new(int n_threads);
void kn_pool_free(kn_pool *p);
int kn_pool_size(const kn_pool *p); /* 1 for a NULL pool */
/* Runs fn(ctx, i, n_items, worker) once for every i < n_items, on whichever threads are free
 * (items are taken in order from a shared counter), and returns when all are done. */
void kn_pool_run(kn_pool *p, kn_task_fn fn, void *ctx, int n_items);

/* ---- read bandwidth (bandwidth.c) ----
 * The rate at which the pool's threads stream a buffer of `bytes` (rounded down to a multiple
 * of 4 MiB, at least 4 MiB; pass something far larger than the last-level cache) into the
 * cores, in GB/s (1e9 bytes/s): best of `passes` sequential passes, each split into items like
 * a matrix product. A decode step reads every weight once, so bandwidth / weight bytes per
 * token is the ceiling of its tokens/s. False when memory is short. */
bool kn_read_bandwidth(kn_pool *pool, size_t bytes, int passes, double *gbs);

/* The product over the pool: rows split between workers. a may be NULL for F32/F16 weights,
 * and must already hold kn_quantize_act(x) for quantized ones. */
void kn_matmul(kn_pool *pool, const kn_kernels *k, const kn_wmat *w, const float *x,
               const kn_act *a, int n_tok, float *y, int ldy);

/* Several products of the same input in one job (Q, K and V; gate and up), so the workers
 * meet once instead of once per matrix. All w[i] take the same n_in; y[i] is [n_tok][n_out_i]. */
void kn_matmul_multi(kn_pool *pool, const kn_kernels *k, int n_mats, const kn_wmat *const *w,
                     const float *x, const kn_act *a, int n_tok, float *const *y);

/* ---- plain ops (reference only; a small share of the time, all per token) ---- */

/* out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]; out may alias x. */
void kn_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
/* Softmax in place. */
void kn_softmax(float *x, int n);
/* h[i] = x[i] rounded to the nearest IEEE half (ties to even; kn_fp32_to_fp16), the reference
 * of kn_kernels.to_f16. Every variant gives the same bits for every non-NaN input. */
void kn_to_f16(uint16_t *h, const float *x, int n);
/* g[i] = silu(g[i]) * u[i]; the reference of kn_kernels.swiglu. */
void kn_swiglu(float *g, const float *u, int n);
float kn_silu(float x);

/* Rotary embedding. inv_freq[i] (i < rope_dim/2) is the angle per position of pair i, with any
 * scaling already applied (kn_rope_inv_freq). cs holds cos, sin interleaved for one position:
 * cs[2i] = cos(pos * inv_freq[i]), cs[2i+1] = sin(...). Rotates the first rope_dim dims of each
 * of n_head heads of head_dim: adjacent pairs (x[2i], x[2i+1]) or, for neox, (x[i], x[i+d/2]). */
typedef struct kn_rope_cfg {
    float theta;             /* base */
    int rope_dim;
    int scaling;             /* kn_rope_scaling */
    float factor;
    float low_freq_factor, high_freq_factor;
    int orig_ctx;
} kn_rope_cfg;
void kn_rope_inv_freq(const kn_rope_cfg *c, double *inv_freq /* [rope_dim/2] */);
void kn_rope_cossin(const double *inv_freq, int rope_dim, int pos, float *cs /* [rope_dim] */);
void kn_rope_apply(float *x, int n_head, int head_dim, int rope_dim, bool neox, const float *cs);

/* Plain dot product and y += a * x (the reference attention's pieces). */
float kn_dot_f32(const float *a, const float *b, int n);
void kn_axpy_f32(float *y, float a, const float *x, int n);
/* The reference kn_attn_fn, kn_attn_f16_fn and kn_attn_q8_fn. */
void kn_attn_ref(const float *q, const float *k, const float *v, const int32_t *slot_pos,
                 int n_slots, int32_t pos, int swa, float softcap, int d, int n_q, float *scores,
                 float *out, float *ml);
void kn_attn_ref_f16(const float *q, const uint16_t *k, const uint16_t *v, const int32_t *slot_pos,
                     int n_slots, int32_t pos, int swa, float softcap, int d, int n_q,
                     float *scores, float *out, float *ml);
void kn_attn_ref_q8(const float *q, const uint8_t *k, const uint8_t *v, const int32_t *slot_pos,
                    int n_slots, int32_t pos, int swa, float softcap, int d, int n_q,
                    float *scores, float *out, float *ml);
/* Bytes of one cached row of d elements: F32, F16 or Q8_0 (kn_kv_kind). */
typedef enum kn_kv_kind { KN_KV_F32 = 0, KN_KV_F16 = 1, KN_KV_Q8 = 2 } kn_kv_kind;
size_t kn_kv_row_bytes(kn_kv_kind kind, int d);
/* Merges the attention of heads out_c[n_q][d] over one range of slots (normalized over it,
 * with its ml_c[n_q][2] as a kn_attn_fn gives them) into acc[n_q][d], the same heads' result
 * over the ranges folded so far, whose state st[n_q][2] (max score, sum of exponentials)
 * starts at {-inf, 0} with acc zeroed. The first range with an allowed slot is copied, so one
 * such range gives the kernel's own bits; later ones are weighted in. A range with none adds
 * nothing. Ranges folded in the same order give the same bits wherever they were computed. */
void kn_attn_fold(float *acc, float *st, const float *out_c, const float *ml_c, int d, int n_q);

#endif
