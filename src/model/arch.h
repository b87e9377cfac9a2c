/* arch.h — the one table of the architectures kiln runs, and their tensors. Start here to add
 * one.
 *
 * An architecture is known by its GGUF name (general.architecture, llama.cpp's spelling) and by
 * its Hugging Face names (config.json "model_type" and "architectures"); it carries the flags
 * that make its block differ from the plain Llama block. Everything that must know an
 * architecture asks this table: the GGUF and config.json readers (model/hparams.c,
 * model/source.c), the HF -> GGUF tensor names and the Q/K permutation at bake, the CPU
 * model loader (backends/cpu/model.c) and inspect. The forward passes — the C one in
 * backends/cpu/session.c and the OpenVINO IR in bake/openvino/ir_writer.c — read the flags
 * from kn_hparams.
 *
 * Recipe (docs/ARCHITECTURE.md has the whole list): add a row to k_archs in arch.c with its
 * names and flags; a new tensor gets a role below with its GGUF and HF names and its shape in
 * kn_tensor_expected; then teach both forward passes the new flag and prove it against
 * llama.cpp (tests/py/test_llamacpp_reference.py shows how). */
#ifndef KN_ARCH_H
#define KN_ARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum kn_arch {
    KN_ARCH_LLAMA = 0,    /* Llama 1/2/3, SmolLM2, TinyLlama, and Mistral (GGUF "llama") */
    KN_ARCH_QWEN2 = 1,
    KN_ARCH_QWEN3 = 2,    /* dense Qwen3: q/k RMSNorm per head */
    KN_ARCH_SMOLLM3 = 3,  /* llama block without RoPE in every 4th layer */
    KN_ARCH_PHI3 = 4,     /* Phi-3 / 3.5-mini, Phi-4-mini: fused qkv and gate_up, LongRoPE */
    KN_ARCH_GEMMA3 = 5,   /* Gemma 3 text models (Gemma3ForCausalLM) */
    KN_ARCH_GEMMA2 = 6,   /* Gemma 2 (Gemma2ForCausalLM): soft-capped attention and logits */
    KN_ARCH_COUNT
} kn_arch;

#define KN_ARCH_NAMES 4   /* aliases per kind of name, NULL-terminated */

typedef struct kn_arch_info {
    kn_arch id;
    const char *name;                          /* the GGUF name bake writes */
    const char *gguf_names[KN_ARCH_NAMES];     /* accepted in general.architecture */
    const char *hf_model_types[KN_ARCH_NAMES]; /* config.json "model_type" */
    const char *hf_classes[KN_ARCH_NAMES];     /* config.json "architectures"[0] */
    /* RoPE rotates halves of each head (x[i], x[i + d/2]) as Hugging Face does; false: adjacent
     * pairs (x[2i], x[2i+1]), which is how GGUF "llama" stores Q and K. */
    bool rope_neox;
    /* Hugging Face Q/K rows are in halves order and GGUF wants pairs: permute them at bake,
     * exactly as llama.cpp's converter does (llama only; qwen2 keeps HF order and rope_neox). */
    bool hf_permute_qk;
    bool qkv_bias;                             /* attn_{q,k,v}.bias on every layer */
    /* config.json's sliding_window applies by itself (Mistral); false: only with
     * "use_sliding_window": true (Qwen2, where the key is present but off by default). */
    bool hf_sliding_window_always;
    bool qk_norm;             /* attn_{q,k}_norm: RMSNorm of each head of Q and K before RoPE */
    /* Layer l has no RoPE when (l + 1) % nope_step == 0 (SmolLM3: 4, llama.cpp's
     * n_no_rope_layer_step); 0: every layer rotates. */
    int nope_step;
    /* Q, K, V come fused as attn_qkv (HF qkv_proj) and gate/up as one ffn_up of 2F rows (HF
     * gate_up_proj, gate first): split when the source is opened, so nothing after it sees a
     * fused weight (model/source.c). */
    bool fused_qkv_gate_up;
    /* A sliding_window in the checkpoint is not applied: llama.cpp disables Phi-3's (its
     * phi3 loader resets n_swa to 0), and kiln follows the reference it is checked against. */
    bool ignore_sliding_window;
    /* The Gemma block: the embedding scaled by sqrt(E); RMSNorm (1 + w) — GGUF stores 1 + w
     * (llama.cpp's convert_hf_to_gguf.py adds the 1), so the runtime's RMSNorm is the plain one;
     * GeGLU with tanh GELU; norms after attention and after the FFN; q/k RMSNorm per head;
     * sliding-window layers between global ones (gemma_swa_pattern, see kn_hparams). */
    bool gemma;
    int gemma_swa_pattern;                     /* every N-th layer is global (Gemma 3: 6, 2: 2) */
    /* llama.cpp's query scale is 1/sqrt(E/H) instead of 1/sqrt(head_dim) for the model of this
     * many layers (the 27B: Gemma 3 62, Gemma 2 46), as gemma_pytorch's config says. */
    int gemma_wide_qscale_layers;
    /* Gemma 2: attention logits soft-capped before the mask and softmax, final logits too
     * (cap * tanh(x / cap); llama.cpp's defaults 50 and 30 when a GGUF lacks the keys), no q/k
     * norms, a 4096-token window when none is stated, and the sliding layers keep the global
     * RoPE base. */
    bool gemma_softcap;
} kn_arch_info;

const kn_arch_info *kn_arch_get(kn_arch id);
/* The architecture of a GGUF general.architecture value (len bytes, not NUL-terminated), or
 * NULL when kiln does not run it. */
const kn_arch_info *kn_arch_from_gguf(const char *name, size_t len);
/* The architecture of a config.json: model_type first, else the class name; NULL if neither
 * names one kiln runs (either may be NULL). */
const kn_arch_info *kn_arch_from_hf(const char *model_type, const char *class_name);
/* The GGUF names kiln accepts, for messages: "llama, mistral, qwen2". */
const char *kn_arch_supported(void);

/* The tensors of a model, in GGUF (llama.cpp) naming. */
typedef enum kn_tensor_role {
    KN_T_TOKEN_EMBD, KN_T_OUTPUT_NORM, KN_T_OUTPUT,
    KN_T_ATTN_NORM, KN_T_ATTN_Q, KN_T_ATTN_K, KN_T_ATTN_V, KN_T_ATTN_OUT,
    KN_T_ATTN_Q_BIAS, KN_T_ATTN_K_BIAS, KN_T_ATTN_V_BIAS,
    KN_T_FFN_NORM, KN_T_FFN_GATE, KN_T_FFN_UP, KN_T_FFN_DOWN,
    KN_T_ATTN_Q_NORM, KN_T_ATTN_K_NORM,   /* [head_dim], shared by the heads (qk_norm) */
    /* RoPE frequency divisors, [rope_dim / 2] (llama.cpp's names): rope_freqs (Llama 3, as
     * llama.cpp's converter encodes rope_type llama3), rope_factors_long / _short (LongRoPE:
     * long when the context exceeds the original one, see kn_rope_factors). */
    KN_T_ROPE_FREQS, KN_T_ROPE_LONG, KN_T_ROPE_SHORT,
    KN_T_ATTN_POST_NORM, KN_T_FFN_POST_NORM,   /* [E] (Gemma) */
    KN_T_ROLE_COUNT
} kn_tensor_role;

/* The GGUF name of a role ("blk.3.attn_q.weight"; layer ignored for the global ones). */
void kn_tensor_name(kn_tensor_role role, int layer, char *buf, size_t n);
/* Whether a tensor of this role holds weights that may be quantized (2-D matrices). */
bool kn_tensor_role_is_matrix(kn_tensor_role role);
bool kn_tensor_role_is_per_layer(kn_tensor_role role);

/* The role and layer (0 for a global tensor) of a GGUF name; false for a name kiln does not
 * know. Layer numbers are plain decimals (no sign, no leading zero). */
bool kn_tensor_from_gguf(const char *name, kn_tensor_role *role, int *layer);
/* The GGUF name of a Hugging Face tensor name ("model.layers.3.self_attn.q_proj.weight" ->
 * "blk.3.attn_q.weight"), and its role. false for a name kiln does not know; *skip for one it
 * knows and drops (rotary inv_freq buffers, recomputed from rope_theta). */
bool kn_tensor_from_hf(const char *hf_name, char *gguf_name, size_t n, kn_tensor_role *role,
                       bool *skip);
/* The same for a folder of architecture ai, whose own names come first (Gemma's norms). */
bool kn_tensor_from_hf_arch(const kn_arch_info *ai, const char *hf_name, char *gguf_name,
                            size_t n, kn_tensor_role *role, bool *skip);

/* A fused tensor of a fused_qkv_gate_up architecture: QKV (split into q, k, v rows) or GATE_UP
 * (gate rows, then up rows). HF: self_attn.qkv_proj / mlp.gate_up_proj; GGUF: attn_qkv (and
 * ffn_up, which is fused only when it has 2F rows: the caller checks the shape). */
typedef enum kn_fused { KN_FUSED_NONE = 0, KN_FUSED_QKV, KN_FUSED_GATE_UP } kn_fused;
kn_fused kn_tensor_fused_from_hf(const char *hf_name, int *layer);
kn_fused kn_tensor_fused_from_gguf(const char *name, int *layer);

#endif
