/* hparams.c — llama-family hyperparameters from GGUF metadata, and the shapes of the tensors. */
#include "model/hparams.h"

#include "quant/quant.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static bool get_u32k(const kn_gguf *g, const char *arch, const char *suffix, uint32_t *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return kn_gguf_get_u32(g, key, out);
}

/* A float key: absent leaves *out (the default); present but not a number a float holds is an
 * error naming it, never silently the default. */
static kiln_status get_f32_key(const kn_gguf *g, const char *key, float *out, kiln_error *err) {
    if (!kn_gguf_find(g, key) || kn_gguf_get_f32(g, key, out)) return KILN_OK;
    return kn_fail(err, KILN_ERR_FORMAT, "%s: %s is not a number a float can hold", g->path, key);
}

static kiln_status get_f32k(const kn_gguf *g, const char *arch, const char *suffix, float *out,
                            kiln_error *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return get_f32_key(g, key, out, err);
}

/* Limits far beyond any model kiln targets; they keep later size arithmetic in range. */
#define HP_MAX_LAYERS 1024
#define HP_MAX_WIDTH (1 << 20)

static kiln_status check_range(const char *label, const char *what, int64_t v, int64_t lo,
                               int64_t hi, kiln_error *err) {
    if (v < lo || v > hi)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: %s = %lld is out of range [%lld, %lld]", label,
                       what, (long long)v, (long long)lo, (long long)hi);
    return KILN_OK;
}

kiln_status kn_hparams_validate(const kn_hparams *hp, const char *label, kiln_error *err) {
    kiln_status s;
    if ((s = check_range(label, "block_count", hp->n_layer, 1, HP_MAX_LAYERS, err)) ||
        (s = check_range(label, "embedding_length", hp->n_embd, 1, HP_MAX_WIDTH, err)) ||
        (s = check_range(label, "feed_forward_length", hp->n_ff, 1, HP_MAX_WIDTH, err)) ||
        (s = check_range(label, "head_count", hp->n_head, 1, 4096, err)) ||
        (s = check_range(label, "head_count_kv", hp->n_head_kv, 1, hp->n_head, err)) ||
        (s = check_range(label, "head_dim", hp->head_dim, 2, 4096, err)) ||
        (s = check_range(label, "vocab_size", hp->n_vocab, 1, 1 << 24, err)) ||
        (s = check_range(label, "rope dimension", hp->rope_dim, 2, hp->head_dim, err)))
        return s;
    if (hp->n_head % hp->n_head_kv)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: head_count %d is not a multiple of "
                       "head_count_kv %d", label, hp->n_head, hp->n_head_kv);
    if (hp->head_dim % 2 || hp->rope_dim % 2)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: head dimension %d must be even", label,
                       hp->head_dim);
    if (!(hp->rope_theta > 0) || !isfinite(hp->rope_theta))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: rope theta %g is not positive", label,
                       hp->rope_theta);
    if (!(hp->rms_eps > 0) || !(hp->rms_eps < 1))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: rms epsilon %g is out of range", label,
                       hp->rms_eps);
    if (hp->rope_scaling != KN_ROPE_SCALING_NONE && !(hp->rope_factor >= 1.0f))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: rope scaling factor %g must be >= 1", label,
                       hp->rope_factor);
    if (!(hp->rope_attn_factor > 0) || !isfinite(hp->rope_attn_factor))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: rope attention factor %g is not positive",
                       label, hp->rope_attn_factor);
    if (hp->longrope && hp->rope_orig_ctx < 1)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: LongRoPE without an original context length",
                       label);
    if (hp->sliding_window < 0)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: sliding window %d is negative", label,
                       hp->sliding_window);
    if ((s = check_range(label, "sliding_window_pattern", hp->swa_pattern, 0, HP_MAX_LAYERS,
                         err)))
        return s;
    if (hp->gemma && (!(hp->rope_theta_swa > 0) || !isfinite(hp->rope_theta_swa)))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: rope freq_base_swa %g is not positive", label,
                       hp->rope_theta_swa);
    if (!(hp->attn_scale >= 0) || !isfinite(hp->attn_scale) || !(hp->final_softcap >= 0) ||
        !isfinite(hp->final_softcap) || !(hp->attn_softcap >= 0) || !isfinite(hp->attn_softcap))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: attention scale %g or logit soft-caps %g, %g "
                       "are out of range", label, hp->attn_scale, hp->attn_softcap,
                       hp->final_softcap);
    /* llama.cpp divides by both caps of a Gemma 2 unconditionally: 0 is not "none" there */
    const kn_arch_info *ai = kn_arch_get(hp->arch);
    if (ai && ai->gemma_softcap && !(hp->attn_softcap > 0 && hp->final_softcap > 0))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: %s needs positive attention and final logit "
                       "soft-caps (got %g and %g)", label, ai->name, hp->attn_softcap,
                       hp->final_softcap);
    if (ai && ai->gemma_softcap && hp->sliding_window <= 0)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: %s needs a positive sliding window", label,
                       ai->name);
    return KILN_OK;
}

int kn_hparams_layer_window(const kn_hparams *hp, int l) {
    int n = hp->swa_pattern;
    if (n > 0 && l % n == n - 1) return 0;
    return hp->sliding_window;
}

int kn_gemma_qpas(const kn_hparams *hp) {
    const kn_arch_info *ai = kn_arch_get(hp->arch);
    return ai && hp->n_layer == ai->gemma_wide_qscale_layers ? hp->n_embd / hp->n_head
                                                              : hp->head_dim;
}

/* Gemma's keys (llama.cpp's names and defaults: src/models/gemma3.cpp, gemma2.cpp). Gemma 3:
 * the sliding pattern and the local RoPE base are not written by llama.cpp's converter: it
 * assumes 6 and 10000. Gemma 2: pattern 2, a 4096 window, soft-caps 50 and 30 when absent, and
 * the sliding layers on the global base. */
static kiln_status gemma_from_gguf(const kn_gguf *g, const char *a, const kn_arch_info *ai,
                                   kn_hparams *hp, kiln_error *err) {
    hp->gemma = true;
    uint32_t u;
    char key[128];
    snprintf(key, sizeof key, "%s.attention.sliding_window_pattern", a);
    /* llama.cpp also takes a per-layer array here; kiln states only "every N-th is global" */
    if (kn_gguf_find(g, key) && !kn_gguf_get_u32(g, key, &u))
        return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: %s is not one number (a per-layer "
                       "pattern is not supported)", g->path, key);
    hp->swa_pattern = ai->gemma_swa_pattern;
    if (get_u32k(g, a, "attention.sliding_window_pattern", &u))
        hp->swa_pattern = (int)(u > HP_MAX_LAYERS ? HP_MAX_LAYERS + 1 : u);
    if (ai->gemma_softcap) {
        if (!get_u32k(g, a, "attention.sliding_window", &u)) hp->sliding_window = 4096;
        hp->attn_softcap = 50.0f;
        hp->final_softcap = 30.0f;
    }
    if (hp->sliding_window == 0) hp->swa_pattern = 0;
    hp->rope_theta_swa = ai->gemma_softcap ? hp->rope_theta : 10000.0f;
    kiln_status s;
    if ((s = get_f32k(g, a, "rope.freq_base_swa", &hp->rope_theta_swa, err)) ||
        (s = get_f32k(g, a, "final_logit_softcapping", &hp->final_softcap, err)) ||
        (ai->gemma_softcap &&
         (s = get_f32k(g, a, "attn_logit_softcapping", &hp->attn_softcap, err))))
        return s;
    /* query_pre_attn_scalar is not in the GGUF: llama.cpp's rule, so that both read one file
     * alike */
    int qpas = kn_gemma_qpas(hp);
    if (qpas > 0) hp->attn_scale = 1.0f / sqrtf((float)qpas);
    return KILN_OK;
}

kiln_status kn_hparams_from_gguf(const kn_gguf *g, kn_hparams *hp, kiln_error *err) {
    memset(hp, 0, sizeof *hp);
    kn_str arch;
    if (!kn_gguf_get_str(g, "general.architecture", &arch))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: no general.architecture key", g->path);
    const kn_arch_info *ai = kn_arch_from_gguf(arch.ptr, arch.len);
    if (!ai)
        return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: architecture '%.*s' is not supported (%s)",
                       g->path, (int)(arch.len > 64 ? 64 : arch.len), arch.ptr,
                       kn_arch_supported());
    /* keys are read under the file's own name ("mistral.block_count"), written under ours */
    char a[32];
    snprintf(a, sizeof a, "%.*s", (int)(arch.len < 31 ? arch.len : 31), arch.ptr);
    hp->arch = ai->id;
    snprintf(hp->arch_name, sizeof hp->arch_name, "%s", ai->name);
    hp->rope_neox = ai->rope_neox;
    hp->qk_norm = ai->qk_norm;
    hp->nope_step = ai->nope_step;
    hp->rope_attn_factor = 1.0f;
    uint32_t u;
    if (!get_u32k(g, a, "block_count", &u))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: missing %s.block_count", g->path, a);
    hp->n_layer = (int)(u > HP_MAX_LAYERS ? HP_MAX_LAYERS + 1 : u);
    if (!get_u32k(g, a, "embedding_length", &u))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: missing %s.embedding_length", g->path, a);
    hp->n_embd = (int)(u > HP_MAX_WIDTH ? HP_MAX_WIDTH + 1 : u);
    if (!get_u32k(g, a, "feed_forward_length", &u))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: missing %s.feed_forward_length", g->path, a);
    hp->n_ff = (int)(u > HP_MAX_WIDTH ? HP_MAX_WIDTH + 1 : u);
    if (!get_u32k(g, a, "attention.head_count", &u) || u == 0)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: missing or zero %s.attention.head_count",
                       g->path, a);
    hp->n_head = (int)(u > 4096 ? 4097 : u);
    hp->n_head_kv = get_u32k(g, a, "attention.head_count_kv", &u) ? (int)(u > 4096 ? 4097 : u)
                                                                   : hp->n_head;
    if (get_u32k(g, a, "attention.key_length", &u)) {
        hp->head_dim = (int)(u > 4096 ? 4097 : u);
    } else {
        if (hp->n_embd % hp->n_head)
            return kn_fail(err, KILN_ERR_FORMAT, "%s: embedding_length %d is not a multiple of "
                           "head_count %d", g->path, hp->n_embd, hp->n_head);
        hp->head_dim = hp->n_embd / hp->n_head;
    }
    hp->rope_dim = get_u32k(g, a, "rope.dimension_count", &u) ? (int)(u > 4096 ? 4097 : u)
                                                              : hp->head_dim;
    hp->n_ctx_train = get_u32k(g, a, "context_length", &u) ? (int)(u > (1u << 30) ? 1 << 30 : u)
                                                           : 2048;
    hp->rope_theta = 10000.0f;
    hp->rms_eps = 1e-5f;
    kiln_status s;
    if ((s = get_f32k(g, a, "rope.freq_base", &hp->rope_theta, err)) ||
        (s = get_f32k(g, a, "attention.layer_norm_rms_epsilon", &hp->rms_eps, err)))
        return s;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    kn_str st;
    if (kn_gguf_get_str(g, key, &st) && kn_str_eq(st, "linear")) {
        hp->rope_scaling = KN_ROPE_SCALING_LINEAR;
        hp->rope_factor = 1.0f;
        if ((s = get_f32k(g, a, "rope.scaling.factor", &hp->rope_factor, err))) return s;
    }
    /* llama.cpp encodes Llama-3 scaling as a rope_freqs tensor; an offering carries the four
     * numbers instead, so the runtime computes the same factors from their definition. */
    if (kn_gguf_find(g, "kiln.rope.llama3.factor")) {
        hp->rope_scaling = KN_ROPE_SCALING_LLAMA3;
        if ((s = get_f32_key(g, "kiln.rope.llama3.factor", &hp->rope_factor, err)) ||
            (s = get_f32_key(g, "kiln.rope.llama3.low_freq_factor", &hp->rope_low_freq_factor,
                             err)) ||
            (s = get_f32_key(g, "kiln.rope.llama3.high_freq_factor", &hp->rope_high_freq_factor,
                             err)))
            return s;
        if (kn_gguf_get_u32(g, "kiln.rope.llama3.original_context", &u))
            hp->rope_orig_ctx = (int)(u > (1u << 30) ? 1 << 30 : u);
    }
    if (get_u32k(g, a, "attention.sliding_window", &u) && !ai->ignore_sliding_window)
        hp->sliding_window = (int)(u > (1u << 30) ? 1 << 30 : u);
    hp->rope_freqs = kn_gguf_find_tensor(g, "rope_freqs.weight") != NULL;
    hp->longrope = kn_gguf_find_tensor(g, "rope_factors_long.weight") != NULL ||
                   kn_gguf_find_tensor(g, "rope_factors_short.weight") != NULL;
    if (hp->longrope) {
        hp->rope_orig_ctx = get_u32k(g, a, "rope.scaling.original_context_length", &u)
                                ? (int)(u > (1u << 30) ? 1 << 30 : u)
                                : hp->n_ctx_train;
        if ((s = get_f32k(g, a, "rope.scaling.attn_factor", &hp->rope_attn_factor, err)))
            return s;
    }
    if (ai->gemma && (s = gemma_from_gguf(g, a, ai, hp, err))) return s;

    const kn_gguf_tensor *emb = kn_gguf_find_tensor(g, "token_embd.weight");
    if (!emb)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: missing tensor 'token_embd.weight'", g->path);
    hp->n_vocab = (int)(emb->ne[1] > (1 << 24) ? (1 << 24) + 1 : emb->ne[1]);
    hp->tied_embeddings = kn_gguf_find_tensor(g, "output.weight") == NULL;
    hp->qkv_bias = kn_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    return kn_hparams_validate(hp, g->path, err);
}

void kn_hparams_to_gguf(const kn_hparams *hp, kn_gguf_writer *w) {
    char key[128];
    const char *a = hp->arch_name;
    kn_gguf_set_str(w, "general.architecture", a);
#define U32(suffix, v)                                        \
    snprintf(key, sizeof key, "%s.%s", a, suffix);            \
    kn_gguf_set_u32(w, key, (uint32_t)(v))
#define F32(suffix, v)                                        \
    snprintf(key, sizeof key, "%s.%s", a, suffix);            \
    kn_gguf_set_f32(w, key, (float)(v))
    U32("block_count", hp->n_layer);
    U32("context_length", hp->n_ctx_train);
    U32("embedding_length", hp->n_embd);
    U32("feed_forward_length", hp->n_ff);
    U32("attention.head_count", hp->n_head);
    U32("attention.head_count_kv", hp->n_head_kv);
    U32("vocab_size", hp->n_vocab);
    U32("rope.dimension_count", hp->rope_dim);
    F32("rope.freq_base", hp->rope_theta);
    F32("attention.layer_norm_rms_epsilon", hp->rms_eps);
    if (hp->head_dim != hp->n_embd / hp->n_head) {
        U32("attention.key_length", hp->head_dim);
        U32("attention.value_length", hp->head_dim);
    }
    if (hp->rope_scaling == KN_ROPE_SCALING_LINEAR) {
        snprintf(key, sizeof key, "%s.rope.scaling.type", a);
        kn_gguf_set_str(w, key, "linear");
        F32("rope.scaling.factor", hp->rope_factor);
    }
    if (hp->rope_scaling == KN_ROPE_SCALING_LLAMA3) {
        kn_gguf_set_f32(w, "kiln.rope.llama3.factor", hp->rope_factor);
        kn_gguf_set_f32(w, "kiln.rope.llama3.low_freq_factor", hp->rope_low_freq_factor);
        kn_gguf_set_f32(w, "kiln.rope.llama3.high_freq_factor", hp->rope_high_freq_factor);
        kn_gguf_set_u32(w, "kiln.rope.llama3.original_context", (uint32_t)hp->rope_orig_ctx);
    }
    if (hp->sliding_window > 0) {
        U32("attention.sliding_window", hp->sliding_window);
    }
    if (hp->longrope) {
        U32("rope.scaling.original_context_length", hp->rope_orig_ctx);
        F32("rope.scaling.attn_factor", hp->rope_attn_factor);
    }
    if (hp->gemma) {
        const kn_arch_info *ai = kn_arch_get(hp->arch);
        if (hp->sliding_window > 0 && (!ai || hp->swa_pattern != ai->gemma_swa_pattern)) {
            U32("attention.sliding_window_pattern", hp->swa_pattern);
        }
        F32("rope.freq_base_swa", hp->rope_theta_swa);
        if (hp->final_softcap > 0) {
            F32("final_logit_softcapping", hp->final_softcap);
        }
        if (hp->attn_softcap > 0) {
            F32("attn_logit_softcapping", hp->attn_softcap);
        }
    }
#undef U32
#undef F32
}

bool kn_tensor_expected(const kn_hparams *hp, kn_tensor_role role, int layer, char *name,
                        size_t name_size, int *n_dims, int64_t ne[2]) {
    if (role == KN_T_OUTPUT && hp->tied_embeddings) return false;
    if ((role == KN_T_ATTN_Q_BIAS || role == KN_T_ATTN_K_BIAS || role == KN_T_ATTN_V_BIAS) &&
        !hp->qkv_bias)
        return false;
    if ((role == KN_T_ATTN_Q_NORM || role == KN_T_ATTN_K_NORM) && !hp->qk_norm) return false;
    if (role == KN_T_ROPE_FREQS && !hp->rope_freqs) return false;
    if ((role == KN_T_ROPE_LONG || role == KN_T_ROPE_SHORT) && !hp->longrope) return false;
    if ((role == KN_T_ATTN_POST_NORM || role == KN_T_FFN_POST_NORM) && !hp->gemma) return false;
    kn_tensor_name(role, layer, name, name_size);
    int64_t q = (int64_t)hp->n_head * hp->head_dim, kv = (int64_t)hp->n_head_kv * hp->head_dim;
    *n_dims = 2;
    ne[1] = 1;
    switch (role) {
    case KN_T_TOKEN_EMBD: case KN_T_OUTPUT: ne[0] = hp->n_embd; ne[1] = hp->n_vocab; break;
    case KN_T_OUTPUT_NORM: case KN_T_ATTN_NORM: case KN_T_FFN_NORM: case KN_T_ATTN_POST_NORM:
    case KN_T_FFN_POST_NORM:
        *n_dims = 1; ne[0] = hp->n_embd; break;
    case KN_T_ATTN_Q_NORM: case KN_T_ATTN_K_NORM: *n_dims = 1; ne[0] = hp->head_dim; break;
    case KN_T_ATTN_Q: ne[0] = hp->n_embd; ne[1] = q; break;
    case KN_T_ATTN_K: case KN_T_ATTN_V: ne[0] = hp->n_embd; ne[1] = kv; break;
    case KN_T_ATTN_OUT: ne[0] = q; ne[1] = hp->n_embd; break;
    case KN_T_ATTN_Q_BIAS: *n_dims = 1; ne[0] = q; break;
    case KN_T_ATTN_K_BIAS: case KN_T_ATTN_V_BIAS: *n_dims = 1; ne[0] = kv; break;
    case KN_T_FFN_GATE: case KN_T_FFN_UP: ne[0] = hp->n_embd; ne[1] = hp->n_ff; break;
    case KN_T_FFN_DOWN: ne[0] = hp->n_ff; ne[1] = hp->n_embd; break;
    case KN_T_ROPE_FREQS: case KN_T_ROPE_LONG: case KN_T_ROPE_SHORT:
        *n_dims = 1; ne[0] = hp->rope_dim / 2; break;
    default: return false;
    }
    return true;
}

bool kn_tensor_role_of(const kn_hparams *hp, const char *name, kn_tensor_role *role, int *layer) {
    kn_tensor_role r;
    int l;
    if (!kn_tensor_from_gguf(name, &r, &l) || l >= hp->n_layer) return false;
    char nm[96];
    int nd;
    int64_t ne[2];
    if (!kn_tensor_expected(hp, r, l, nm, sizeof nm, &nd, ne)) return false;
    *role = r;
    *layer = l;
    return true;
}

bool kn_weight_type_ok(bool matrix, uint32_t type) {
    switch (type) {
    case KN_TYPE_F32: case KN_TYPE_F16: case KN_TYPE_BF16: return true;
    case KN_TYPE_Q4_0: case KN_TYPE_Q4_1: case KN_TYPE_Q5_0: case KN_TYPE_Q5_1: case KN_TYPE_Q8_0:
    case KN_TYPE_Q2_K: case KN_TYPE_Q3_K: case KN_TYPE_Q4_K: case KN_TYPE_Q5_K: case KN_TYPE_Q6_K:
        return matrix;
    default: return false;
    }
}

bool kn_tensor_type_ok(kn_tensor_role role, uint32_t type) {
    return kn_weight_type_ok(kn_tensor_role_is_matrix(role), type);
}

kiln_status kn_rope_factors(const kn_gguf *g, const kn_hparams *hp, int window, float *out,
                            bool *have, kiln_error *err) {
    int n = hp->rope_dim / 2;
    for (int i = 0; i < n; i++) out[i] = 1.0f;
    *have = false;
    kn_tensor_role role;
    if (hp->rope_freqs) role = KN_T_ROPE_FREQS;
    else if (hp->longrope) role = window > hp->rope_orig_ctx ? KN_T_ROPE_LONG : KN_T_ROPE_SHORT;
    else return KILN_OK;
    char name[64];
    int nd;
    int64_t ne[2];
    kn_tensor_expected(hp, role, 0, name, sizeof name, &nd, ne);
    const kn_gguf_tensor *t = kn_gguf_find_tensor(g, name);
    if (!t || t->ne[0] != n || t->ne[1] != 1 || !kn_weight_type_ok(false, t->type) ||
        !kn_dequantize(t->type, t->data, out, n))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor %s missing or not [%d] floats", g->path,
                       name, n);
    for (int i = 0; i < n; i++)
        if (!(out[i] > 0) || !isfinite(out[i]))
            return kn_fail(err, KILN_ERR_FORMAT, "%s: %s[%d] = %g is not a positive factor",
                           g->path, name, i, out[i]);
    *have = true;
    return KILN_OK;
}
