/* engine.h — the native CPU forward pass of a llama-family model under a static contract.
 *
 * A kn_model is read-only once built: hyperparameters, the contract's window W and chunk C, and
 * weight views pointing into the mmapped GGUF (zero copy), or copies made once at load: the
 * quantized matrices repacked for the CPU's kernel table (kernels/pack.c), and a type the
 * kernels cannot multiply dequantized to F32. One model serves any number of sessions.
 *
 * A kn_session owns everything a run writes: the KV cache [L,2,Hkv,W,D] (f16 by default, or
 * f32), the scratch activations and the thread pool, all allocated once in kn_session_new. Its three steps are the
 * three graphs of the contract, each with fixed shapes:
 *
 *   prefill(ids[C], positions[C], n_valid)  C tokens, the tail past n_valid padding (masked: it
 *                                           writes no KV row and no output); returns the
 *                                           logits [V] of token n_valid - 1.
 *   decode(id, position)                    one token against the W-slot cache.
 *   stateless(ids[W], n_valid)              one padded [1,W] window at positions 0..n_valid-1,
 *                                           no cache (the old O(N^2) scheme); logits of the
 *                                           last real token.
 *
 * KV slots. A token at position p goes to slot p while p < W; past that, slots [S, W) form a
 * ring (slot S + (p - S) mod (W - S)) and the first S "sink" slots stay, which is the
 * `--overflow slide` policy. Keys keep the rotation of their original position, so relative
 * distances stay true and positions simply keep growing. A query at position p attends to every
 * filled slot whose position is <= p (and, with a sliding window N, > p - N): that mask is
 * the [W] mask input of the contract. Padded prefill rows are skipped by the CPU backend since
 * nothing reads them; the output equals a full [1,C] evaluation with the padding masked.
 *
 * The three steps agree bit for bit: a token's logits do not depend on the chunk size, on
 * decode vs prefill vs stateless, or on the thread count (the kernels are batch-invariant, see
 * kernels/kernels.h), so greedy generation gives the same tokens in every mode.
 *
 * Nothing in the steps allocates, opens files or resizes a buffer (tests/c/test_engine.c counts
 * kn_malloc calls over a 64-token generation).
 *
 * Usage:
 *     kn_model *m; kn_session *s; const float *logits;
 *     kn_model_params mp = kn_model_default_params();
 *     if (kn_model_open("model.gguf", &mp, &m, &err)) ...;
 *     kn_session_params sp = kn_session_default_params();
 *     if (kn_session_new(m, &sp, &s, &err)) ...;
 *     kn_session_prefill(s, ids, pos, n, &logits, &err);        // ids, pos: [m->chunk]
 *     int next = kn_argmax(logits, m->hp.n_vocab);
 *     kn_session_decode(s, next, n, &logits, &err);
 *     kn_session_free(s); kn_model_free(m);
 */
#ifndef KN_ENGINE_H
#define KN_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/gguf.h"
#include "kernels/kernels.h"
#include "model/hparams.h"

#define KN_DEFAULT_WINDOW 1024
#define KN_DEFAULT_CHUNK 128
#define KN_DEFAULT_SINK 4

typedef struct kn_model_params {
    /* Used when the GGUF has no kiln.contract.* keys; an offering's W is lowered to `window`
     * when the caller asks for less (0 = take the offering's / the default as is). */
    int window;               /* W, default 1024 */
    int chunk;                /* C, default 128; 1 <= C <= W */
    int sink;                 /* S for the sliding overflow policy, default 4; S < W */
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
} kn_layer;

typedef struct kn_model {
    kn_hparams hp;
    int window;               /* W: KV slots, and the stateless window */
    int chunk;                /* C: prefill width */
    int sink;                 /* S */
    const kn_gguf *gguf;      /* the weights' home (borrowed or owned_gguf) */
    kn_gguf *owned_gguf;      /* set by kn_model_open */
    const kn_kernels *k;      /* the kernel table the weights are laid out for */
    kn_wmat tok_embd;         /* [V] rows of [E], GGUF layout (looked up row by row) */
    const float *output_norm; /* [E] */
    kn_wmat output;           /* [E] -> [V]; token_embd's data with tied embeddings */
    kn_layer *layers;         /* [L] */
    double *rope_inv_freq;    /* [rope_dim/2], scaling applied */
    void **owned;             /* copies made at load: repacked weights, F32 for types the
                               * kernels lack */
    int n_owned;
    size_t packed_bytes;      /* bytes of weights repacked for the kernels (kernels/pack.c) */
} kn_model;

/* Builds a model over g (borrowed: it must outlive the model). W and C come from g's
 * kiln.contract.* keys when present, else from p. */
kiln_status kn_model_load(const kn_gguf *g, const kn_hparams *hp, const kn_model_params *p,
                          kn_model **out, kiln_error *err);
/* Opens a GGUF file, reads its hyperparameters and builds the model (owning the file). */
kiln_status kn_model_open(const char *path, const kn_model_params *p, kn_model **out,
                          kiln_error *err);
void kn_model_free(kn_model *m);

typedef struct kn_session_params {
    int threads;              /* >= 1 (default 1) */
    bool stateless;           /* also allocate the [W]-row buffers of the stateless graph */
    bool kv_f16;              /* KV cache of IEEE halves (default) rather than F32 */
} kn_session_params;

kn_session_params kn_session_default_params(void);

typedef struct kn_session kn_session;

kiln_status kn_session_new(const kn_model *m, const kn_session_params *p, kn_session **out,
                           kiln_error *err);
void kn_session_free(kn_session *s);
/* Empties the KV cache (every slot unfilled). */
void kn_session_reset(kn_session *s);
const kn_model *kn_session_model(const kn_session *s);

/* The three graphs. On success *logits points at [V] floats owned by the session, valid until
 * the next step. Errors (KILN_ERR_INVALID_ARG): n_valid outside [1, C] (or [1, W]), a token id
 * outside [0, V), a negative position, stateless without params.stateless. */
kiln_status kn_session_prefill(kn_session *s, const int32_t *ids, const int32_t *positions,
                               int n_valid, const float **logits, kiln_error *err);
kiln_status kn_session_decode(kn_session *s, int32_t id, int32_t position, const float **logits,
                              kiln_error *err);
kiln_status kn_session_stateless(kn_session *s, const int32_t *ids, int n_valid,
                                 const float **logits, kiln_error *err);

/* Feeds n prompt tokens at positions pos0.. through ceil(n / C) prefill chunks (the last one
 * padded); logits of the last token. A convenience over kn_session_prefill; no allocation. */
kiln_status kn_session_prefill_all(kn_session *s, const int32_t *ids, int n, int pos0,
                                   const float **logits, kiln_error *err);

/* The KV slot that position p occupies (see the file comment). */
int kn_kv_slot(const kn_model *m, int64_t p);

/* Index of the largest value (the first of equals). */
int kn_argmax(const float *x, int n);

#endif
