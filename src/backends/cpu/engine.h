/* engine.h — the native CPU forward pass of a llama-family model: the CPU device's engine.
 *
 * A kn_model is read-only once built: hyperparameters, the contract's window W and chunk C, and
 * weight views pointing into the mmapped GGUF (zero copy; a type the kernels cannot multiply
 * directly is dequantized to F32 once, here). One model serves any number of sessions, from any
 * number of threads. The x86 kernel tables want the quantized matrices repacked (kernels/pack.c):
 * the first session on one makes the model build that copy, once, under a lock
 * (kn_model_weights); sessions on the plain-C table use the views.
 *
 * A kn_session owns everything a run writes: the KV cache [L,2,Hkv,W,D] (f16 by default, or
 * f32) and the scratch activations, all allocated once in kn_session_new; the thread pool is the device's, shared
 * (kn_pool_run serializes its callers). kn_session_run runs one of the contract's three graphs
 * with its fixed shapes, as the static-graph driver (backends/driver.h) hands it:
 *
 *   prefill    C rows, the tail past n padding (masked: it writes no KV row and no output);
 *              the logits [V] of row n - 1.
 *   decode     one row against the W-slot cache.
 *   stateless  one padded [1,W] window at positions 0..n-1, no cache (the old O(N^2) scheme);
 *              logits of the last real row.
 *
 * Rows of a kv graph write their keys and values to the slots the call names; a query at
 * position p attends to every slot whose position (the call's slot_pos table) is <= p, and with
 * a sliding window N, > p - N. Keys keep the rotation of their original position, so the
 * --overflow slide ring (model/contract.h, kn_contract_slot) keeps relative distances true.
 *
 * The three graphs agree bit for bit: a token's logits do not depend on the chunk size, on
 * decode vs prefill vs stateless, or on the thread count (the kernels are batch-invariant, see
 * kernels/kernels.h), so greedy generation gives the same tokens in every mode.
 *
 * Nothing in a run allocates, opens files or resizes a buffer (tests/c/test_engine.c counts
 * kn_malloc calls over a 64-token generation).
 *
 * The C forward here and the OpenVINO IR of bake/openvino/ir_writer.c compute the same block:
 * a change to one must be made to the other (tests/py/test_openvino_ir.py compares them).
 *
 * Usage (through the driver, as every caller does):
 *     kn_model *m; kn_session *s;
 *     kn_model_open("model.gguf", NULL, &m, &err);
 *     kn_session_new(m, NULL, &s, &err);
 *     kn_backend *b = ...a cpu backend over s (backends/cpu/cpu.c)...;
 *     kn_driver_feed(&driver, ids, n, 0, &logits, &err);
 */
#ifndef KN_ENGINE_H
#define KN_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "backends/backend.h"
#include "formats/gguf.h"
#include "kernels/kernels.h"
#include "model/hparams.h"

#define KN_DEFAULT_WINDOW 1024
#define KN_DEFAULT_CHUNK 128
#define KN_DEFAULT_SINK 4

typedef struct kn_model_params {
    /* The contract of a GGUF without kiln.contract.* keys (0 / -1: the defaults 1024, 128, 4).
     * An offering's contract is read and validated by kn_contract_from_gguf and used as it is:
     * a window or chunk that differs from it is KILN_ERR_INVALID_ARG, never a clamp. */
    int window;               /* W, 0 = 1024 */
    int chunk;                /* C, 0 = min(128, W); 1 <= C <= W */
    int sink;                 /* S for the sliding overflow policy, -1 = min(4, W - 1); S < W */
} kn_model_params;

kn_model_params kn_model_default_params(void);

typedef struct kn_layer {
    const float *attn_norm;   /* [E] */
    kn_wmat wq;               /* [E] -> [H*D] */
    kn_wmat wk;               /* [E] -> [Hkv*D] */
    kn_wmat wv;               /* [E] -> [Hkv*D] */
    const float *bq;          /* [H*D] or NULL (Qwen2 only) */
    const float *bk;          /* [Hkv*D] or NULL */
    const float *bv;          /* [Hkv*D] or NULL */
    kn_wmat wo;               /* [H*D] -> [E] */
    const float *ffn_norm;    /* [E] */
    kn_wmat gate;             /* [E] -> [F] */
    kn_wmat up;               /* [E] -> [F] */
    kn_wmat down;             /* [F] -> [E] */
    const float *q_norm;      /* [D] or NULL (qk_norm: Qwen3, Gemma 3) */
    const float *k_norm;      /* [D] or NULL */
    const float *post_attn_norm; /* [E] or NULL (Gemma) */
    const float *post_ffn_norm;  /* [E] or NULL */
} kn_layer;

typedef struct kn_model {
    kn_hparams hp;
    int window;               /* W: KV slots, and the stateless window */
    int chunk;                /* C: prefill width */
    int sink;                 /* S */
    const kn_gguf *gguf;      /* the weights' home (borrowed or owned_gguf) */
    kn_gguf *owned_gguf;      /* set by kn_model_open */
    kn_wmat tok_embd;         /* [V] rows of [E] (a product view when tied) */
    const float *output_norm; /* [E] */
    kn_wmat output;           /* [E] -> [V]; token_embd itself with tied embeddings */
    kn_layer *layers;         /* [L] */
    double *rope_inv_freq;    /* [rope_dim/2], scaling applied */
    double *rope_inv_freq_swa;/* [rope_dim/2] of the sliding layers (rope_theta_swa, unscaled),
                                 or NULL when every layer uses rope_inv_freq */
    void **owned;             /* F32 copies made at load for types the kernels lack */
    int n_owned;
    struct kn_packed *packed; /* the repacked matrices, built on first demand (model.c) */
} kn_model;

/* Builds a model over g (borrowed: it must outlive the model). W, C and S come from g's
 * kiln.contract.* keys when present (validated as inspect validates them), else from p. */
kiln_status kn_model_load(const kn_gguf *g, const kn_hparams *hp, const kn_model_params *p,
                          kn_model **out, kiln_error *err);
/* Opens a GGUF file, reads its hyperparameters and builds the model (owning the file). */
kiln_status kn_model_open(const char *path, const kn_model_params *p, kn_model **out,
                          kiln_error *err);
void kn_model_free(kn_model *m);
/* The layers [L] and classifier that table k multiplies: the model's views, or for a table that
 * wants them repacked the model's repacked copy, built on the first call (on pool, or every core
 * when pool is NULL; thread-safe) and shared by every later one. */
kiln_status kn_model_weights(const kn_model *m, const kn_kernels *k, kn_pool *pool,
                             const kn_layer **layers, const kn_wmat **output, kiln_error *err);
/* Bytes of the repacked copy (0 before any session wanted it). */
size_t kn_model_packed_bytes(const kn_model *m);
/* Bytes of weights one decode step reads: every layer matrix and the output matrix (the one
 * embedding row it also reads is negligible). *stored counts them as the GGUF stores them, the
 * bytes any engine must stream per token; *resident as this engine's views hold them, more
 * where a type the kernels lack was widened to F32 at load (the 8-row repack keeps the size). */
void kn_model_decode_bytes(const kn_model *m, uint64_t *stored, uint64_t *resident);
/* Bytes of cached keys and values one decode step must read with n_ctx positions cached (its
 * own included), rows of the given kind: every layer's K and V heads over min(n_ctx, the
 * layer's sliding window) rows. The least any engine with such a cache reads; this one's
 * attention reads no more. */
uint64_t kn_model_kv_step_bytes(const kn_model *m, kn_kv_kind kind, int n_ctx);

/* The engine's cache kind for the public KV type. */
static inline kn_kv_kind kn_kv_kind_of(kiln_kv_type kv) {
    return kv == KILN_KV_F32 ? KN_KV_F32 : kv == KILN_KV_Q8_0 ? KN_KV_Q8 : KN_KV_F16;
}

typedef struct kn_session_params {
    int threads;              /* >= 1 (default 1); ignored when pool is given */
    bool stateless;           /* also allocate the [W]-row buffers of the stateless graph */
    const kn_kernels *kernels;/* the kernel table; NULL = kn_kernels_choose (KILN_KERNELS) */
    kn_pool *pool;            /* a shared pool (the device's), or NULL: the session starts its
                                 own of `threads` */
    kn_kv_kind kv;            /* the KV cache's rows: F16 (default), F32, or Q8_0 (head size
                                 a multiple of 32) */
    int max_batch;            /* steps (its own and other sessions') it may lead in one pass
                                 (kn_session_run_batch), 1..KN_MAX_BATCH; default 1. Its
                                 scratch then holds a prefill chunk plus max_batch - 1 rows */
} kn_session_params;

/* The most steps one batched pass takes (each step's logits row is [V] floats). */
#define KN_MAX_BATCH 8

kn_session_params kn_session_default_params(void);

typedef struct kn_session kn_session;

kiln_status kn_session_new(const kn_model *m, const kn_session_params *p, kn_session **out,
                           kiln_error *err);
void kn_session_free(kn_session *s);
/* Forgets the cache's contents (the slot table is the caller's; nothing to do today). */
void kn_session_reset(kn_session *s);
const kn_model *kn_session_model(const kn_session *s);
const kn_kernels *kn_session_kernels(const kn_session *s);

/* Runs one graph (see the file comment); *logits [V] are the session's, valid until the next
 * run. The caller (the driver) has checked ids and positions. */
kiln_status kn_session_run(kn_session *s, const kn_graph_call *call, const float **logits,
                           kiln_error *err);

/* Batched steps: one pass over the weights for n steps of n sessions of one model (calls[i] is
 * a decode step or a prefill chunk of ss[i]; ss[0] is lead itself), their rows one after
 * another, at most kn_session_batch_rows(lead) in all.
 * It runs on lead's scratch and pool, writes each row's key and value into its own session's
 * cache (a chunk's rows attend to each other causally, by position, as in a lone chunk) and
 * each step's last-row logits into its session's buffer (what kn_session_run would have
 * returned). The kernels are batch-invariant, so every session gets the bits its lone step
 * gives. The sessions must not run anything else meanwhile; n <= kn_session_batch_cap(lead),
 * and each one kn_session_batches_with(lead). */
kiln_status kn_session_run_batch(kn_session *lead, kn_session *const *ss,
                                 const kn_graph_call *const *calls, int n, kiln_error *err);
int kn_session_batch_cap(const kn_session *s);
/* The most rows a pass s leads takes (its chunk plus batch_cap - 1). */
int kn_session_batch_rows(const kn_session *s);
/* The session's logits [V] (what its last run or batched step computed). */
const float *kn_session_logits(const kn_session *s);
/* Same model, kernel table and KV element type: o's rows can ride in lead's pass. */
bool kn_session_batches_with(const kn_session *lead, const kn_session *o);

/* Index of the largest value (the first of equals). */
int kn_argmax(const float *x, int n);

#endif
