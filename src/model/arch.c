/* arch.c — the table of architectures and of tensor names (see arch.h). */
#include "model/arch.h"

#include <stdio.h>
#include <string.h>

static const kn_arch_info k_archs[KN_ARCH_COUNT] = {
    [KN_ARCH_LLAMA] = {
        .id = KN_ARCH_LLAMA,
        .name = "llama",
        .gguf_names = {"llama", "mistral"},
        .hf_model_types = {"llama", "mistral"},
        .hf_classes = {"LlamaForCausalLM", "MistralForCausalLM"},
        .rope_neox = false,
        .hf_permute_qk = true,
        .qkv_bias = false,
        .hf_sliding_window_always = true,
    },
    [KN_ARCH_QWEN2] = {
        .id = KN_ARCH_QWEN2,
        .name = "qwen2",
        .gguf_names = {"qwen2"},
        .hf_model_types = {"qwen2"},
        .hf_classes = {"Qwen2ForCausalLM"},
        .rope_neox = true,
        .hf_permute_qk = false,
        .qkv_bias = true,
        .hf_sliding_window_always = false,
    },
    [KN_ARCH_QWEN3] = {
        .id = KN_ARCH_QWEN3,
        .name = "qwen3",
        .gguf_names = {"qwen3"},
        .hf_model_types = {"qwen3"},
        .hf_classes = {"Qwen3ForCausalLM"},
        .rope_neox = true,
        .qk_norm = true,
    },
    [KN_ARCH_SMOLLM3] = {
        .id = KN_ARCH_SMOLLM3,
        .name = "smollm3",
        .gguf_names = {"smollm3"},
        .hf_model_types = {"smollm3"},
        .hf_classes = {"SmolLM3ForCausalLM"},
        .hf_permute_qk = true,
        .nope_step = 4,
    },
    [KN_ARCH_PHI3] = {
        .id = KN_ARCH_PHI3,
        .name = "phi3",
        .gguf_names = {"phi3"},
        .hf_model_types = {"phi3"},
        .hf_classes = {"Phi3ForCausalLM"},
        .rope_neox = true,
        .fused_qkv_gate_up = true,
        .ignore_sliding_window = true,
    },
    [KN_ARCH_GEMMA3] = {
        .id = KN_ARCH_GEMMA3,
        .name = "gemma3",
        .gguf_names = {"gemma3"},
        .hf_model_types = {"gemma3_text"},
        .hf_classes = {"Gemma3ForCausalLM"},
        .rope_neox = true,
        .hf_permute_qk = false,
        .qkv_bias = false,
        .hf_sliding_window_always = true,
        .qk_norm = true,
        .gemma = true,
        .gemma_swa_pattern = 6,
        .gemma_wide_qscale_layers = 62,
    },
    [KN_ARCH_GEMMA2] = {
        .id = KN_ARCH_GEMMA2,
        .name = "gemma2",
        .gguf_names = {"gemma2"},
        .hf_model_types = {"gemma2"},
        .hf_classes = {"Gemma2ForCausalLM"},
        .rope_neox = true,
        .hf_sliding_window_always = true,
        .gemma = true,
        .gemma_swa_pattern = 2,
        .gemma_wide_qscale_layers = 46,
        .gemma_softcap = true,
    },
};

const kn_arch_info *kn_arch_get(kn_arch id) {
    return (unsigned)id < KN_ARCH_COUNT ? &k_archs[id] : NULL;
}

static bool listed(const char *const names[KN_ARCH_NAMES], const char *s, size_t len) {
    for (int i = 0; i < KN_ARCH_NAMES && names[i]; i++)
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0) return true;
    return false;
}

const kn_arch_info *kn_arch_from_gguf(const char *name, size_t len) {
    for (int a = 0; a < KN_ARCH_COUNT; a++)
        if (listed(k_archs[a].gguf_names, name, len)) return &k_archs[a];
    return NULL;
}

const kn_arch_info *kn_arch_from_hf(const char *model_type, const char *class_name) {
    for (int a = 0; a < KN_ARCH_COUNT && model_type; a++)
        if (listed(k_archs[a].hf_model_types, model_type, strlen(model_type))) return &k_archs[a];
    for (int a = 0; a < KN_ARCH_COUNT && class_name; a++)
        if (listed(k_archs[a].hf_classes, class_name, strlen(class_name))) return &k_archs[a];
    return NULL;
}

const char *kn_arch_supported(void) {
    static char list[128];
    if (!list[0]) {
        /* written once with the same bytes by whichever thread comes first */
        char tmp[128] = "";
        for (int a = 0; a < KN_ARCH_COUNT; a++)
            for (int i = 0; i < KN_ARCH_NAMES && k_archs[a].gguf_names[i]; i++) {
                size_t at = strlen(tmp);
                snprintf(tmp + at, sizeof tmp - at, "%s%s", at ? ", " : "",
                         k_archs[a].gguf_names[i]);
            }
        memcpy(list, tmp, sizeof list);
    }
    return list;
}

/* The tensors: GGUF name, Hugging Face name ("%d" is the layer), and kind. */
static const struct {
    const char *gguf, *hf;
    bool per_layer, matrix;
} k_roles[KN_T_ROLE_COUNT] = {
    [KN_T_TOKEN_EMBD] = {"token_embd.weight", "model.embed_tokens.weight", false, true},
    [KN_T_OUTPUT_NORM] = {"output_norm.weight", "model.norm.weight", false, false},
    [KN_T_OUTPUT] = {"output.weight", "lm_head.weight", false, true},
    [KN_T_ATTN_NORM] = {"blk.%d.attn_norm.weight", "model.layers.%d.input_layernorm.weight",
                        true, false},
    [KN_T_ATTN_Q] = {"blk.%d.attn_q.weight", "model.layers.%d.self_attn.q_proj.weight", true,
                     true},
    [KN_T_ATTN_K] = {"blk.%d.attn_k.weight", "model.layers.%d.self_attn.k_proj.weight", true,
                     true},
    [KN_T_ATTN_V] = {"blk.%d.attn_v.weight", "model.layers.%d.self_attn.v_proj.weight", true,
                     true},
    [KN_T_ATTN_OUT] = {"blk.%d.attn_output.weight", "model.layers.%d.self_attn.o_proj.weight",
                       true, true},
    [KN_T_ATTN_Q_BIAS] = {"blk.%d.attn_q.bias", "model.layers.%d.self_attn.q_proj.bias", true,
                          false},
    [KN_T_ATTN_K_BIAS] = {"blk.%d.attn_k.bias", "model.layers.%d.self_attn.k_proj.bias", true,
                          false},
    [KN_T_ATTN_V_BIAS] = {"blk.%d.attn_v.bias", "model.layers.%d.self_attn.v_proj.bias", true,
                          false},
    [KN_T_FFN_NORM] = {"blk.%d.ffn_norm.weight",
                       "model.layers.%d.post_attention_layernorm.weight", true, false},
    [KN_T_FFN_GATE] = {"blk.%d.ffn_gate.weight", "model.layers.%d.mlp.gate_proj.weight", true,
                       true},
    [KN_T_FFN_UP] = {"blk.%d.ffn_up.weight", "model.layers.%d.mlp.up_proj.weight", true, true},
    [KN_T_FFN_DOWN] = {"blk.%d.ffn_down.weight", "model.layers.%d.mlp.down_proj.weight", true,
                       true},
    [KN_T_ATTN_Q_NORM] = {"blk.%d.attn_q_norm.weight", "model.layers.%d.self_attn.q_norm.weight",
                          true, false},
    [KN_T_ATTN_K_NORM] = {"blk.%d.attn_k_norm.weight", "model.layers.%d.self_attn.k_norm.weight",
                          true, false},
    /* no Hugging Face tensor: config.json's rope_scaling holds these numbers */
    [KN_T_ROPE_FREQS] = {"rope_freqs.weight", NULL, false, false},
    [KN_T_ROPE_LONG] = {"rope_factors_long.weight", NULL, false, false},
    [KN_T_ROPE_SHORT] = {"rope_factors_short.weight", NULL, false, false},
    /* No HF name here: in a Gemma folder this is "post_attention_layernorm", which in every
     * other folder is the FFN norm (kn_tensor_from_hf_arch maps Gemma's names). */
    [KN_T_ATTN_POST_NORM] = {"blk.%d.post_attention_norm.weight", NULL, true, false},
    [KN_T_FFN_POST_NORM] = {"blk.%d.post_ffw_norm.weight",
                            "model.layers.%d.post_feedforward_layernorm.weight", true, false},
};

bool kn_tensor_role_is_matrix(kn_tensor_role role) { return k_roles[role].matrix; }
bool kn_tensor_role_is_per_layer(kn_tensor_role role) { return k_roles[role].per_layer; }

void kn_tensor_name(kn_tensor_role role, int layer, char *buf, size_t n) {
    if (k_roles[role].per_layer) snprintf(buf, n, k_roles[role].gguf, layer);
    else snprintf(buf, n, "%s", k_roles[role].gguf);
}

/* "model.layers.%d.x" matches "model.layers.12.x" with *layer = 12 (a plain non-negative
 * decimal, no sign, no leading zeros beyond "0"). */
static bool match_fmt(const char *fmt, const char *s, int *layer) {
    const char *pct = strstr(fmt, "%d");
    if (!pct) return strcmp(fmt, s) == 0;
    size_t head = (size_t)(pct - fmt);
    if (strncmp(fmt, s, head) != 0) return false;
    const char *d = s + head;
    if (*d < '0' || *d > '9' || (d[0] == '0' && d[1] >= '0' && d[1] <= '9')) return false;
    long v = 0;
    while (*d >= '0' && *d <= '9') {
        v = v * 10 + (*d++ - '0');
        if (v > 1 << 20) return false;
    }
    if (strcmp(pct + 2, d) != 0) return false;
    *layer = (int)v;
    return true;
}

bool kn_tensor_from_gguf(const char *name, kn_tensor_role *role, int *layer) {
    for (int r = 0; r < KN_T_ROLE_COUNT; r++) {
        int l = 0;
        if (match_fmt(k_roles[r].gguf, name, &l)) {
            *role = (kn_tensor_role)r;
            *layer = l;
            return true;
        }
    }
    return false;
}

bool kn_tensor_from_hf(const char *hf_name, char *gguf_name, size_t n, kn_tensor_role *role,
                       bool *skip) {
    *skip = false;
    int layer = 0;
    for (int r = 0; r < KN_T_ROLE_COUNT; r++)
        if (k_roles[r].hf && match_fmt(k_roles[r].hf, hf_name, &layer)) {
            kn_tensor_name((kn_tensor_role)r, layer, gguf_name, n);
            *role = (kn_tensor_role)r;
            return true;
        }
    if (match_fmt("model.layers.%d.self_attn.rotary_emb.inv_freq", hf_name, &layer)) {
        *skip = true;
        return true;
    }
    return false;
}

kn_fused kn_tensor_fused_from_hf(const char *hf_name, int *layer) {
    if (match_fmt("model.layers.%d.self_attn.qkv_proj.weight", hf_name, layer)) return KN_FUSED_QKV;
    if (match_fmt("model.layers.%d.mlp.gate_up_proj.weight", hf_name, layer))
        return KN_FUSED_GATE_UP;
    return KN_FUSED_NONE;
}

kn_fused kn_tensor_fused_from_gguf(const char *name, int *layer) {
    if (match_fmt("blk.%d.attn_qkv.weight", name, layer)) return KN_FUSED_QKV;
    if (match_fmt("blk.%d.ffn_up.weight", name, layer)) return KN_FUSED_GATE_UP;
    return KN_FUSED_NONE;
}

bool kn_tensor_from_hf_arch(const kn_arch_info *ai, const char *hf_name, char *gguf_name,
                            size_t n, kn_tensor_role *role, bool *skip) {
    /* Gemma's block norms (llama.cpp's gguf-py TensorNameMap: post_attention_layernorm ->
     * post_attention_norm, pre_feedforward_layernorm -> ffn_norm, post_feedforward_layernorm
     * -> post_ffw_norm) */
    static const struct {
        const char *hf;
        kn_tensor_role role;
    } gemma[] = {
        {"model.layers.%d.post_attention_layernorm.weight", KN_T_ATTN_POST_NORM},
        {"model.layers.%d.pre_feedforward_layernorm.weight", KN_T_FFN_NORM},
        {"model.layers.%d.post_feedforward_layernorm.weight", KN_T_FFN_POST_NORM},
    };
    int layer = 0;
    for (size_t i = 0; ai && ai->gemma && i < sizeof gemma / sizeof gemma[0]; i++)
        if (match_fmt(gemma[i].hf, hf_name, &layer)) {
            *skip = false;
            *role = gemma[i].role;
            kn_tensor_name(*role, layer, gguf_name, n);
            return true;
        }
    return kn_tensor_from_hf(hf_name, gguf_name, n, role, skip);
}
