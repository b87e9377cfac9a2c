/* hparams.h — llama-family hyperparameters and the shapes of their tensors (names and
 * architectures: model/arch.h).
 *
 * A model reaches kiln either as a GGUF (keys "{arch}.block_count" ...) or as a Hugging Face
 * folder (config.json), and in both cases ends up here, so the bake and the runtime see one
 * description. Tensor names follow llama.cpp: token_embd.weight, output_norm.weight,
 * output.weight, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate,
 * ffn_up, ffn_down}.weight and, for Qwen2, blk.N.attn_{q,k,v}.bias.
 *
 * Rotary embedding layout: GGUF "llama" checkpoints store Q and K rows permuted so that RoPE
 * rotates adjacent pairs (x[2i], x[2i+1]) — rope_neox = false. Qwen2 keeps the Hugging Face
 * layout and rotates (x[i], x[i + d/2]) — rope_neox = true. */
#ifndef KN_HPARAMS_H
#define KN_HPARAMS_H

#include <stdbool.h>

#include "formats/gguf.h"
#include "model/arch.h"


typedef enum kn_rope_scaling {
    KN_ROPE_SCALING_NONE = 0,
    KN_ROPE_SCALING_LINEAR = 1,
    KN_ROPE_SCALING_LLAMA3 = 2
} kn_rope_scaling;

typedef struct kn_hparams {
    kn_arch arch;
    char arch_name[16];       /* GGUF general.architecture bake writes: kn_arch_get(arch)->name */
    int n_layer;
    int n_embd;               /* model width */
    int n_head;
    int n_head_kv;
    int head_dim;             /* n_embd / n_head unless the checkpoint says otherwise */
    int n_ff;                 /* SwiGLU hidden width */
    int n_vocab;
    int n_ctx_train;
    int rope_dim;             /* rotated dimensions per head (= head_dim here) */
    float rope_theta;
    float rms_eps;
    bool rope_neox;           /* see the file comment */
    kn_rope_scaling rope_scaling;
    float rope_factor;        /* linear: positions divided by it; llama3: "factor" */
    float rope_low_freq_factor;   /* llama3 only */
    float rope_high_freq_factor;  /* llama3 only */
    int rope_orig_ctx;            /* llama3 only: original_max_position_embeddings */
    int sliding_window;       /* attend to the last N positions (every layer, or the sliding
                                 layers of swa_pattern); 0 = unlimited */
    bool tied_embeddings;     /* no output.weight: the classifier is token_embd */
    bool qkv_bias;            /* Qwen2 */
    /* Per-architecture block flags (model/arch.h explains each): */
    bool qk_norm;             /* Qwen3: attn_{q,k}_norm per head before RoPE */
    int nope_step;            /* SmolLM3: 4; layer l skips RoPE when (l + 1) % nope_step == 0 */
    bool rope_freqs;          /* the checkpoint carries rope_freqs.weight (llama.cpp's Llama 3) */
    /* LongRoPE (Phi-3.5, Phi-4-mini): rope_factors_long / _short tensors, chosen by the window
     * against rope_orig_ctx; cos and sin scaled by rope_attn_factor. */
    bool longrope;
    float rope_attn_factor;   /* 1 unless LongRoPE says otherwise */
    /* Gemma (kn_arch_info.gemma): embedding * sqrt(E), post-attention and post-FFN norms,
     * GeGLU with tanh GELU; Gemma 3 adds q/k norms (qk_norm), Gemma 2 soft-caps. */
    bool gemma;
    /* Gemma 3 / 2: with a sliding window, layer l is global when l % N == N - 1 and sliding
     * otherwise (llama.cpp's set_swa_pattern); 0: every layer slides (Mistral). */
    int swa_pattern;
    float rope_theta_swa;     /* RoPE base of the sliding layers (Gemma 3: 10000, unscaled;
                                 Gemma 2: rope_theta) */
    float attn_scale;         /* q.k factor; 0 = 1 / sqrt(head_dim) */
    float final_softcap;      /* logits = c * tanh(logits / c); 0 = none */
    float attn_softcap;       /* Gemma 2: each q.k score (after attn_scale) = c * tanh(s / c),
                                 before the mask and the softmax; 0 = none */
} kn_hparams;

/* Whether RoPE rotates Q and K in layer l. */
static inline bool kn_layer_has_rope(const kn_hparams *hp, int l) {
    return hp->nope_step <= 0 || (l + 1) % hp->nope_step != 0;
}

/* The RoPE frequency divisors of a model for a window of W slots, rope_dim / 2 of them, into
 * out: rope_freqs.weight, or LongRoPE's long factors when W exceeds the original context
 * (llama.cpp's rule: n_ctx > n_ctx_orig_yarn) and its short ones otherwise. false (out all 1)
 * when the model has none; a factor that is not finite and positive is an error. */
kiln_status kn_rope_factors(const kn_gguf *g, const kn_hparams *hp, int window, float *out,
                            bool *have, kiln_error *err);

/* The sliding window of layer l (0: global, it sees every slot the contract keeps). */
int kn_hparams_layer_window(const kn_hparams *hp, int l);
/* Whether layers differ in window (Gemma: sliding layers between global ones), so that a static
 * graph needs a second attention mask (the contract's sliding_mask). */
static inline bool kn_hparams_two_masks(const kn_hparams *hp) {
    return hp->swa_pattern > 0 && hp->sliding_window > 0;
}

/* Gemma's query_pre_attn_scalar as llama.cpp derives it (a GGUF does not carry it): E / H for
 * the architecture's 27B layer count, head_dim otherwise. */
int kn_gemma_qpas(const kn_hparams *hp);

/* Range and consistency checks shared by the GGUF and config.json paths. */
kiln_status kn_hparams_validate(const kn_hparams *hp, const char *label, kiln_error *err);

/* Reads and checks the hyperparameters of a GGUF checkpoint; an architecture other than llama /
 * mistral / qwen2 is KILN_ERR_UNSUPPORTED naming it. tied_embeddings follows from the absence of
 * output.weight. */
kiln_status kn_hparams_from_gguf(const kn_gguf *g, kn_hparams *hp, kiln_error *err);

/* Writes the hyperparameters as GGUF keys under "{arch_name}." (llama.cpp's names). */
void kn_hparams_to_gguf(const kn_hparams *hp, kn_gguf_writer *w);

/* Expected shape (GGUF order: ne[0] = row length) of a role; false when the model has no such
 * tensor (output with tied embeddings, biases without qkv_bias). */
bool kn_tensor_expected(const kn_hparams *hp, kn_tensor_role role, int layer, char *name,
                        size_t name_size, int *n_dims, int64_t ne[2]);

/* The role and layer of a schema name ("blk.3.attn_q.weight" -> KN_T_ATTN_Q, 3): true only for
 * a tensor this model has (kn_tensor_expected would name it). O(roles), not O(layers). */
bool kn_tensor_role_of(const kn_hparams *hp, const char *name, kn_tensor_role *role, int *layer);

/* Whether a tensor of this role may have this type: matrices a float or weight-quantized type
 * (F32, F16, BF16, Q4_0..Q8_0, Q2_K..Q6_K), vectors (norms, biases) a float type. Integer
 * types, and types meant for activations only (Q8_1, Q8_K), are never weights. */
bool kn_tensor_type_ok(kn_tensor_role role, uint32_t type);
/* The same rule by shape: a matrix (2-D weights) or a vector. */
bool kn_weight_type_ok(bool matrix, uint32_t type);

#endif
