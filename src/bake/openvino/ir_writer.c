/* ir_writer.c — the llama-family forward pass as a static OpenVINO IR graph (see ir.h).
 *
 * Activations are [T, E] (batch 1 folded away); attention runs per KV head with the query heads
 * of a group stacked, [Hkv, g*T, D], so grouped-query attention needs no Broadcast or Tile of
 * K/V. Every op comes from opset1/4/8; shapes are inferred and checked by ir_build.c.
 *
 * This graph and the native C forward (backends/cpu/session.c) compute the same block: a change
 * to one must be made to the other (tests/py/test_openvino_ir.py compares them on the goldens). */
#include "bake/openvino/ir.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bake/openvino/ir_build.h"
#include "kernels/kernels.h"

typedef struct ov_ctx {
    kn_ovb *b;
    const kn_gguf *g;
    const kn_hparams *hp;
    int group;                /* Q4_0 group wanted (-1 = whole row) */
    int T, W;                 /* new tokens, KV slots (stateless: T = W, no cache) */
    bool stateless;           /* the stateless graph: no past_kv, i32 [1,W] key mask */
    int tok_embd;             /* value: [V, E] f32, shared by the lookup and a tied classifier */
} ov_ctx;

static const kn_gguf_tensor *tensor(ov_ctx *x, kn_tensor_role role, int layer) {
    char name[64];
    int n_dims;
    int64_t ne[2];
    if (!kn_tensor_expected(x->hp, role, layer, name, sizeof name, &n_dims, ne)) {
        kn_ovb_fail(x->b, KILN_ERR_INTERNAL, "openvino IR: tensor role %d not in this model",
                    (int)role);
        return NULL;
    }
    const kn_gguf_tensor *t = kn_gguf_find_tensor(x->g, name);
    if (!t) {
        kn_ovb_fail(x->b, KILN_ERR_FORMAT, "openvino IR: tensor %s missing", name);
        return NULL;
    }
    if (t->ne[0] != ne[0] || (n_dims == 2 && t->ne[1] != ne[1]) || (int)t->n_dims != n_dims) {
        kn_ovb_fail(x->b, KILN_ERR_FORMAT, "openvino IR: tensor %s has an unexpected shape",
                    name);
        return NULL;
    }
    return t;
}

static int vec(ov_ctx *x, kn_tensor_role role, int layer) {
    const kn_gguf_tensor *t = tensor(x, role, layer);
    return t ? kn_ov_weight_vector(x->b, t) : -1;
}

/* x [T, in] times the weight of `role` ([out, in] in GGUF row order) -> [T, out]. */
static int linear(ov_ctx *x, int in, kn_tensor_role role, int layer) {
    const kn_gguf_tensor *t = tensor(x, role, layer);
    if (!t) return -1;
    int w = kn_ov_weight_matrix(x->b, t, x->group);
    return kn_ovb_matmul(x->b, in, w, false, true);
}

/* llama.cpp's RMSNorm: x / sqrt(mean(x^2) + eps) * w, in the op sequence OpenVINO's RMS fusion
 * matches (Power 2 -> ReduceMean -> Add eps -> Sqrt -> Divide 1 by it -> Multiply). */
static int rmsnorm(ov_ctx *x, int in, int w) {
    kn_ovb *b = x->b;
    int r = kn_ovb_shape(b, in, NULL);
    int sq = kn_ovb_binary(b, "Power", in, kn_ovb_const_f32(b, 2.0f));
    int m = kn_ovb_reduce_mean(b, sq, r - 1);
    int eps = kn_ovb_const_f32(b, x->hp->rms_eps);
    int s = kn_ovb_unary(b, "Sqrt", kn_ovb_binary(b, "Add", m, eps));
    int inv = kn_ovb_binary(b, "Divide", kn_ovb_const_f32(b, 1.0f), s);
    return kn_ovb_binary(b, "Multiply", kn_ovb_binary(b, "Multiply", in, inv), w);
}

/* Rotates [T, n_head, D]. Adjacent pairs (x[2i], x[2i+1]) for GGUF llama, halves (x[i],
 * x[i + R/2]) for NeoX (qwen2): both are a reshape to [T, n, R/2, 2] or [T, n, 2, R/2], a split
 * of the pair axis, the rotation, and the way back. cos/sin are [T, R/2]. With partial rotary
 * (R = rope_dim < D, Phi-4-mini) only the first R dimensions of each head turn; the rest pass. */
static int rope(ov_ctx *x, int in, int n_head, int cs_cos, int cs_sin) {
    kn_ovb *b = x->b;
    int64_t T = x->T, D = x->hp->head_dim, R = x->hp->rope_dim, h = R / 2;
    bool neox = x->hp->rope_neox;
    int rot = in, pass = -1;
    if (R < D) {
        int32_t idx[4096];
        for (int64_t i = 0; i < D; i++) idx[i] = (int32_t)i;
        int64_t nr = R, np = D - R;
        rot = kn_ovb_gather(b, in, kn_ovb_const(b, KN_OV_I32, 1, &nr, idx), 2);
        pass = kn_ovb_gather(b, in, kn_ovb_const(b, KN_OV_I32, 1, &np, idx + R), 2);
    }
    int pair_axis = neox ? 2 : 3;
    int64_t pshape[4] = {T, n_head, neox ? 2 : h, neox ? h : 2};
    int64_t cshape[4] = {T, 1, neox ? 1 : h, neox ? h : 1};
    int c = kn_ovb_reshape(b, cs_cos, 4, cshape), s = kn_ovb_reshape(b, cs_sin, 4, cshape);
    int parts[2];
    if (kn_ovb_split(b, kn_ovb_reshape(b, rot, 4, pshape), pair_axis, 2, parts) < 0) return -1;
    int x0 = parts[0], x1 = parts[1];
    int o0 = kn_ovb_binary(b, "Subtract", kn_ovb_binary(b, "Multiply", x0, c),
                           kn_ovb_binary(b, "Multiply", x1, s));
    int o1 = kn_ovb_binary(b, "Add", kn_ovb_binary(b, "Multiply", x0, s),
                           kn_ovb_binary(b, "Multiply", x1, c));
    int o = kn_ovb_concat(b, 2, (int[]){o0, o1}, pair_axis);
    o = kn_ovb_reshape(b, o, 3, (int64_t[]){T, n_head, R});
    return pass >= 0 ? kn_ovb_concat(b, 2, (int[]){o, pass}, 2) : o;
}

/* [T, n, D] -> [n, T, D] */
static int heads_first(kn_ovb *b, int v) {
    return kn_ovb_transpose(b, v, 3, (int64_t[]){1, 0, 2});
}

typedef struct ov_inputs {
    int ids, pos, mask, logit_index, past;
    int swa_mask;             /* the sliding layers' mask when layers differ in window, or -1 */
} ov_inputs;

/* cos and sin [T, rope_dim/2] of the positions: the model's, and the sliding layers' own (Gemma 3:
 * another base), which may be the same values. */
typedef struct ov_rope {
    int cos, sin, cos_swa, sin_swa;
} ov_rope;

/* cap * tanh(v / cap): Gemma 2's soft-capping of attention scores and of the logits. */
static int softcap(kn_ovb *b, int v, float cap) {
    int t = kn_ovb_unary(b, "Tanh", kn_ovb_binary(b, "Divide", v, kn_ovb_const_f32(b, cap)));
    return kn_ovb_binary(b, "Multiply", t, kn_ovb_const_f32(b, cap));
}

/* One decoder block. kv_out (may be NULL) receives the layer's new K and V ([1, Hkv, T, D]
 * each). Without past_kv (in->past < 0, the stateless graph) the T rows attend only to each
 * other and in->mask is [1, 1, T, T]. The Gemma block adds norms after attention and after the
 * FFN, GeGLU for SwiGLU, and (Gemma 2) soft-capped scores. */
static int block(ov_ctx *x, const ov_inputs *in, int h, int l, const ov_rope *rp,
                 int kv_out[2]) {
    kn_ovb *b = x->b;
    const kn_hparams *hp = x->hp;
    bool sliding = kn_hparams_layer_window(hp, l) > 0;
    int cs_cos = sliding ? rp->cos_swa : rp->cos, cs_sin = sliding ? rp->sin_swa : rp->sin;
    int mask = sliding && in->swa_mask >= 0 ? in->swa_mask : in->mask;
    int64_t T = x->T, H = hp->n_head, Hkv = hp->n_head_kv, D = hp->head_dim;
    int64_t g = H / Hkv, keys = in->past >= 0 ? x->W + T : T;
    int xn = rmsnorm(x, h, vec(x, KN_T_ATTN_NORM, l));
    int q = linear(x, xn, KN_T_ATTN_Q, l);
    int k = linear(x, xn, KN_T_ATTN_K, l);
    int v = linear(x, xn, KN_T_ATTN_V, l);
    if (hp->qkv_bias) {
        q = kn_ovb_binary(b, "Add", q, vec(x, KN_T_ATTN_Q_BIAS, l));
        k = kn_ovb_binary(b, "Add", k, vec(x, KN_T_ATTN_K_BIAS, l));
        v = kn_ovb_binary(b, "Add", v, vec(x, KN_T_ATTN_V_BIAS, l));
    }
    q = kn_ovb_reshape(b, q, 3, (int64_t[]){T, H, D});
    k = kn_ovb_reshape(b, k, 3, (int64_t[]){T, Hkv, D});
    if (hp->qk_norm) { /* Qwen3, Gemma 3: RMSNorm of each head, before RoPE */
        q = rmsnorm(x, q, vec(x, KN_T_ATTN_Q_NORM, l));
        k = rmsnorm(x, k, vec(x, KN_T_ATTN_K_NORM, l));
    }
    if (kn_layer_has_rope(hp, l)) { /* SmolLM3: not in every 4th layer */
        q = rope(x, q, (int)H, cs_cos, cs_sin);
        k = rope(x, k, (int)Hkv, cs_cos, cs_sin);
    }
    q = heads_first(b, q);
    k = heads_first(b, k);
    v = heads_first(b, kn_ovb_reshape(b, v, 3, (int64_t[]){T, Hkv, D}));
    if (kv_out) {
        kv_out[0] = kn_ovb_reshape(b, k, 4, (int64_t[]){1, Hkv, T, D});
        kv_out[1] = kn_ovb_reshape(b, v, 4, (int64_t[]){1, Hkv, T, D});
    }

    int kf = k, vf = v; /* [Hkv, keys, D] */
    if (in->past >= 0) {
        /* past_kv was reshaped to [2L, Hkv, W, D]: K of layer l at 2l, V at 2l + 1. */
        int pk = kn_ovb_gather(b, in->past, kn_ovb_const_i32(b, 2 * l), 0);
        int pv = kn_ovb_gather(b, in->past, kn_ovb_const_i32(b, 2 * l + 1), 0);
        kf = kn_ovb_concat(b, 2, (int[]){pk, k}, 1); /* [Hkv, W+T, D] */
        vf = kn_ovb_concat(b, 2, (int[]){pv, v}, 1);
    }
    /* Query head j uses KV head j / g (llama.cpp), so [H, T, D] is already [Hkv, g*T, D]. */
    int qg = kn_ovb_reshape(b, q, 3, (int64_t[]){Hkv, g * T, D});
    int sc = kn_ovb_matmul(b, qg, kf, false, true); /* [Hkv, g*T, keys] */
    float scale = hp->attn_scale > 0 ? hp->attn_scale : (float)(1.0 / sqrt((double)D));
    sc = kn_ovb_binary(b, "Multiply", sc, kn_ovb_const_f32(b, scale));
    if (hp->attn_softcap > 0) sc = softcap(b, sc, hp->attn_softcap); /* before the mask */
    sc = kn_ovb_reshape(b, sc, 4, (int64_t[]){Hkv, g, T, keys});
    sc = kn_ovb_binary(b, "Add", sc, mask); /* mask [1, 1, T, keys] broadcasts */
    int p = kn_ovb_softmax(b, sc, 3);
    p = kn_ovb_reshape(b, p, 3, (int64_t[]){Hkv, g * T, keys});
    int o = kn_ovb_matmul(b, p, vf, false, false); /* [Hkv, g*T, D] */
    o = kn_ovb_reshape(b, o, 3, (int64_t[]){H, T, D});
    o = kn_ovb_reshape(b, heads_first(b, o), 2, (int64_t[]){T, H * D});
    o = linear(x, o, KN_T_ATTN_OUT, l);
    if (hp->gemma) o = rmsnorm(x, o, vec(x, KN_T_ATTN_POST_NORM, l));
    h = kn_ovb_binary(b, "Add", h, o);

    xn = rmsnorm(x, h, vec(x, KN_T_FFN_NORM, l));
    int gate = kn_ovb_unary(b, hp->gemma ? "GeluTanh" : "Swish", linear(x, xn, KN_T_FFN_GATE, l));
    int up = linear(x, xn, KN_T_FFN_UP, l);
    int down = linear(x, kn_ovb_binary(b, "Multiply", gate, up), KN_T_FFN_DOWN, l);
    if (hp->gemma) down = rmsnorm(x, down, vec(x, KN_T_FFN_POST_NORM, l));
    return kn_ovb_binary(b, "Add", h, down);
}

static const kn_graph *find_graph(const kn_contract *c, const char *name) {
    for (int i = 0; i < c->n_graphs && i < KN_MAX_GRAPHS; i++)
        if (c->graphs[i].name && strcmp(c->graphs[i].name, name) == 0) return &c->graphs[i];
    return NULL;
}

static bool same_shape(const kn_io *io, int rank, const int64_t *shape) {
    if (io->rank != rank) return false;
    for (int i = 0; i < rank; i++)
        if (io->shape[i] != shape[i]) return false;
    return true;
}

/* The shape the graph gives an input or output of this name; false for an unknown name. */
static bool io_shape(const ov_ctx *x, const char *name, bool output, int *rank, int64_t *s,
                     kn_ov_et *et) {
    const kn_hparams *hp = x->hp;
    int64_t T = x->T, W = x->W;
    *et = KN_OV_F32;
    if (!output && strcmp(name, "input_ids") == 0) {
        *rank = 2, s[0] = 1, s[1] = T, *et = KN_OV_I32;
    } else if (!output && strcmp(name, "position_ids") == 0 && !x->stateless) {
        *rank = 2, s[0] = 1, s[1] = T, *et = KN_OV_I32;
    } else if (!output && strcmp(name, "attention_mask") == 0 && x->stateless) {
        *rank = 2, s[0] = 1, s[1] = T, *et = KN_OV_I32; /* 1 = real token, 0 = padding */
    } else if (!output && (strcmp(name, "attention_mask") == 0 ||
                           (strcmp(name, "sliding_mask") == 0 && kn_hparams_two_masks(hp)))) {
        *rank = 4, s[0] = 1, s[1] = 1, s[2] = T, s[3] = W + T;
    } else if (!output && strcmp(name, "logit_index") == 0 && !x->stateless) {
        *rank = 1, s[0] = 1, *et = KN_OV_I32;
    } else if (!output && strcmp(name, "past_kv") == 0 && !x->stateless) {
        *rank = 5, s[0] = hp->n_layer, s[1] = 2, s[2] = hp->n_head_kv, s[3] = W,
        s[4] = hp->head_dim;
    } else if (output && strcmp(name, "logits") == 0) {
        *rank = 2, s[0] = 1, s[1] = hp->n_vocab;
    } else if (output && strcmp(name, "new_kv") == 0 && !x->stateless) {
        *rank = 5, s[0] = hp->n_layer, s[1] = 2, s[2] = hp->n_head_kv, s[3] = T,
        s[4] = hp->head_dim;
    } else {
        return false;
    }
    return true;
}

static const char *et_name(kn_ov_et et) { return et == KN_OV_I32 ? "i32" : "f32"; }

/* The stateless graph's inputs become the prefill graph's: positions 0..T-1 as a constant, the
 * additive mask [1, 1, T, T] (0 where row i may see column j: j <= i, within the model's sliding
 * window if any, and attention_mask[j] != 0, or j == i; else -inf), and the logit row
 * sum(mask) - 1 (the last real token when the real tokens come first, as the contract pads).
 * Every row sees at least itself, so no row is all -inf. When layers differ in window (Gemma)
 * attention_mask is the global layers' (no window) and swa_mask the sliding layers'. */
static void stateless_inputs(ov_ctx *x, ov_inputs *in) {
    kn_ovb *b = x->b;
    const int64_t T = x->T;
    int32_t *idx = kn_malloc(sizeof(int32_t) * (size_t)T);
    if (!idx) {
        kn_ovb_fail(b, KILN_ERR_NOMEM, "openvino IR: out of memory");
        return;
    }
    for (int64_t i = 0; i < T; i++) idx[i] = (int32_t)i;
    in->pos = kn_ovb_const(b, KN_OV_I32, 2, (int64_t[]){1, T}, idx);
    int rows = kn_ovb_const(b, KN_OV_I32, 2, (int64_t[]){T, 1}, idx);
    kn_free(idx);
    /* rows - cols = i - j over [T, T]: from constants only, so OpenVINO folds it at compile */
    int diff = kn_ovb_binary(b, "Subtract", rows, in->pos);
    int real = kn_ovb_compare(b, "NotEqual", in->mask, kn_ovb_const_i32(b, 0)); /* [1, T] */
    bool two = kn_hparams_two_masks(x->hp);
    int masks[2];
    for (int m = 0; m < (two ? 2 : 1); m++) {
        int win = two && m == 0 ? 0 : x->hp->sliding_window;
        int see = kn_ovb_compare(b, "GreaterEqual", diff, kn_ovb_const_i32(b, 0));
        if (win > 0)
            see = kn_ovb_binary(b, "LogicalAnd", see,
                                kn_ovb_compare(b, "Less", diff, kn_ovb_const_i32(b, win)));
        see = kn_ovb_binary(b, "LogicalAnd", see, real);
        /* ... or j == i: a padding row more than the sliding window past every real token
         * would otherwise see nothing, turn NaN and poison the next layer (0 x NaN). A real
         * row sees itself anyway. */
        see = kn_ovb_binary(b, "LogicalOr", see,
                            kn_ovb_compare(b, "Equal", diff, kn_ovb_const_i32(b, 0)));
        int add = kn_ovb_select(b, see, kn_ovb_const_f32(b, 0.0f),
                                kn_ovb_const_f32(b, -INFINITY));
        masks[m] = kn_ovb_reshape(b, add, 4, (int64_t[]){1, 1, T, T});
    }
    int n_real = kn_ovb_reduce(b, "ReduceSum", in->mask, 1, false); /* [1] */
    in->logit_index = kn_ovb_binary(b, "Subtract", n_real, kn_ovb_const_i32(b, 1));
    in->mask = masks[0];
    in->swa_mask = two ? masks[1] : -1;
}

static void build(ov_ctx *x, const kn_graph *gr) {
    kn_ovb *b = x->b;
    const kn_hparams *hp = x->hp;
    int64_t T = x->T;
    ov_inputs in = {-1, -1, -1, -1, -1, -1};
    for (int i = 0; i < gr->n_in && i < KN_MAX_IO; i++) {
        const kn_io *io = &gr->in[i];
        int rank;
        int64_t s[KN_OV_MAX_RANK];
        kn_ov_et et;
        if (!io_shape(x, io->name, false, &rank, s, &et) || strcmp(io->dtype, et_name(et)) ||
            !same_shape(io, rank, s)) {
            kn_ovb_fail(b, KILN_ERR_UNSUPPORTED,
                        "openvino IR: graph %s: input %s (%s) is not one this writer makes",
                        gr->name, io->name, io->dtype);
            return;
        }
        int v = kn_ovb_param(b, io->name, et, rank, s);
        if (!strcmp(io->name, "input_ids")) in.ids = v;
        else if (!strcmp(io->name, "position_ids")) in.pos = v;
        else if (!strcmp(io->name, "attention_mask")) in.mask = v;
        else if (!strcmp(io->name, "sliding_mask")) in.swa_mask = v;
        else if (!strcmp(io->name, "logit_index")) in.logit_index = v;
        else in.past = v;
    }
    if (x->stateless && in.ids >= 0 && in.mask >= 0) stateless_inputs(x, &in);
    if (in.ids < 0 || in.pos < 0 || in.mask < 0 || (in.past < 0 && !x->stateless) ||
        (T > 1 && in.logit_index < 0) || (kn_hparams_two_masks(hp) && in.swa_mask < 0)) {
        kn_ovb_fail(b, KILN_ERR_UNSUPPORTED, "openvino IR: graph %s lacks an input it needs",
                    gr->name);
        return;
    }
    for (int i = 0; i < gr->n_out && i < KN_MAX_IO; i++) {
        int rank;
        int64_t s[KN_OV_MAX_RANK];
        kn_ov_et et;
        const kn_io *io = &gr->out[i];
        if (!io_shape(x, io->name, true, &rank, s, &et) || strcmp(io->dtype, "f32") ||
            !same_shape(io, rank, s)) {
            kn_ovb_fail(b, KILN_ERR_UNSUPPORTED,
                        "openvino IR: graph %s: output %s is not one this writer makes",
                        gr->name, io->name);
            return;
        }
    }
    int64_t L = hp->n_layer, Hkv = hp->n_head_kv, D = hp->head_dim, W = x->W;
    if (in.past >= 0) in.past = kn_ovb_reshape(b, in.past, 4, (int64_t[]){2 * L, Hkv, W, D});
    bool want_kv = false;
    for (int i = 0; i < gr->n_out && i < KN_MAX_IO; i++)
        want_kv = want_kv || strcmp(gr->out[i].name, "new_kv") == 0;

    /* Angles pos * inv_freq in f32, cos/sin in the graph: positions are data and grow
     * without bound under --overflow slide, so no table of positions could cover them. */
    double invd[512];
    float inv[512];
    int half = hp->rope_dim / 2;
    kn_rope_cfg rc = {hp->rope_theta,        hp->rope_dim,         (int)hp->rope_scaling,
                      hp->rope_factor,       hp->rope_low_freq_factor, hp->rope_high_freq_factor,
                      hp->rope_orig_ctx};
    kn_rope_inv_freq(&rc, invd);
    float ff[512];
    bool have;
    kiln_error ferr = {0};
    if (kn_rope_factors(x->g, hp, x->W, ff, &have, &ferr)) {
        kn_ovb_fail(b, ferr.code, "%s", ferr.message);
        return;
    }
    for (int i = 0; i < half; i++) inv[i] = (float)(invd[i] / ff[i]);
    int pos = kn_ovb_reshape(b, kn_ovb_convert(b, in.pos, KN_OV_F32), 2, (int64_t[]){T, 1});
    int ang = kn_ovb_binary(b, "Multiply", pos,
                            kn_ovb_const(b, KN_OV_F32, 2, (int64_t[]){1, half}, inv));
    ov_rope rp = {kn_ovb_unary(b, "Cos", ang), kn_ovb_unary(b, "Sin", ang), -1, -1};
    if (hp->rope_attn_factor != 1.0f) { /* LongRoPE: as the native forward, cos and sin scaled */
        int af = kn_ovb_const_f32(b, hp->rope_attn_factor);
        rp.cos = kn_ovb_binary(b, "Multiply", rp.cos, af);
        rp.sin = kn_ovb_binary(b, "Multiply", rp.sin, af);
    }
    rp.cos_swa = rp.cos, rp.sin_swa = rp.sin;
    if (hp->gemma && hp->swa_pattern > 0) {
        /* the sliding layers' own base, unscaled (backends/cpu/model.c's rope_inv_freq_swa) */
        kn_rope_cfg rs = {hp->rope_theta_swa, hp->rope_dim, KN_ROPE_SCALING_NONE, 1.0f, 0, 0, 0};
        kn_rope_inv_freq(&rs, invd);
        for (int i = 0; i < half; i++) inv[i] = (float)invd[i];
        int a2 = kn_ovb_binary(b, "Multiply", pos,
                               kn_ovb_const(b, KN_OV_F32, 2, (int64_t[]){1, half}, inv));
        rp.cos_swa = kn_ovb_unary(b, "Cos", a2), rp.sin_swa = kn_ovb_unary(b, "Sin", a2);
    }

    const kn_gguf_tensor *te = tensor(x, KN_T_TOKEN_EMBD, 0);
    x->tok_embd = te ? kn_ov_weight_matrix(b, te, x->group) : -1;
    int ids = kn_ovb_reshape(b, in.ids, 1, (int64_t[]){T});
    int h = kn_ovb_gather(b, x->tok_embd, ids, 0); /* [T, E] */
    if (hp->gemma) /* Gemma: the embedding times sqrt(E) */
        h = kn_ovb_binary(b, "Multiply", h, kn_ovb_const_f32(b, sqrtf((float)hp->n_embd)));

    int kv[2 * 512];
    for (int l = 0; l < L && kn_ovb_ok(b); l++)
        h = block(x, &in, h, l, &rp, want_kv ? kv + 2 * l : NULL);
    if (!kn_ovb_ok(b)) return;
    int new_kv = want_kv ? kn_ovb_reshape(b, kn_ovb_concat(b, (int)(2 * L), kv, 0), 5,
                                          (int64_t[]){L, 2, Hkv, T, D})
                         : -1;

    /* Only one row is ever read; the norm is row-wise, so pick the row first. */
    if (in.logit_index >= 0) h = kn_ovb_gather(b, h, in.logit_index, 0); /* [1, E] */
    h = rmsnorm(x, h, vec(x, KN_T_OUTPUT_NORM, 0));
    int logits;
    if (hp->tied_embeddings) {
        logits = kn_ovb_matmul(b, h, x->tok_embd, false, true);
    } else {
        logits = linear(x, h, KN_T_OUTPUT, 0);
    }
    if (hp->final_softcap > 0) logits = softcap(b, logits, hp->final_softcap);
    for (int i = 0; i < gr->n_out && i < KN_MAX_IO; i++)
        kn_ovb_result(b, strcmp(gr->out[i].name, "logits") == 0 ? logits : new_kv,
                      gr->out[i].name);
}

static int resolve_group(const kn_gguf *g, int group_size, kiln_error *err) {
    if (group_size == 0) {
        uint32_t gs = 0;
        return kn_gguf_get_u32(g, "kiln.quant.group_size", &gs) && gs >= 32 && gs % 32 == 0 &&
                       gs <= (1u << 20)
                   ? (int)gs
                   : 32;
    }
    if (group_size == -1 || (group_size >= 32 && group_size % 32 == 0)) return group_size;
    kn_fail(err, KILN_ERR_INVALID_ARG,
            "openvino IR: group size %d (use -1 for channel-wise or a multiple of 32)",
            group_size);
    return 0;
}

kiln_status kn_ov_write_ir_graph(const kn_gguf *model_gguf, const kn_hparams *hp,
                                 const kn_contract *c, const char *graph, int group_size,
                                 const char *xml_path, const char *bin_path, kiln_error *err) {
    const kn_graph *gr = find_graph(c, graph);
    if (!gr) return kn_fail(err, KILN_ERR_INVALID_ARG, "openvino IR: no graph %s", graph);
    if (strcmp(graph, "prefill") != 0 && strcmp(graph, "decode") != 0 &&
        strcmp(graph, "stateless") != 0)
        return kn_fail(err, KILN_ERR_UNSUPPORTED, "openvino IR: no writer for the %s graph",
                       graph);
    if (hp->rope_dim > hp->head_dim || hp->rope_dim / 2 > 512 || hp->head_dim > 4096 ||
        hp->n_layer > 512 ||
        hp->n_head_kv <= 0 || hp->n_head % hp->n_head_kv)
        return kn_fail(err, KILN_ERR_UNSUPPORTED,
                       "openvino IR: rope_dim %d / head_dim %d / %d layers / %d:%d heads not "
                       "supported",
                       hp->rope_dim, hp->head_dim, hp->n_layer, hp->n_head, hp->n_head_kv);
    int group = resolve_group(model_gguf, group_size, err);
    if (group == 0) return KILN_ERR_INVALID_ARG;

    FILE *xf = fopen(xml_path, "wb");
    if (!xf) return kn_fail(err, KILN_ERR_WRITE, "%s: cannot create", xml_path);
    FILE *bf = fopen(bin_path, "wb");
    if (!bf) {
        fclose(xf);
        remove(xml_path);
        return kn_fail(err, KILN_ERR_WRITE, "%s: cannot create", bin_path);
    }
    kiln_status s = KILN_ERR_NOMEM;
    kn_ovb *b = kn_ovb_new(bf, bin_path, err);
    if (b) {
        ov_ctx x = {b, model_gguf, hp, group, 0, c->window, strcmp(graph, "stateless") == 0, -1};
        for (int i = 0; i < gr->n_in && i < KN_MAX_IO; i++)
            if (!strcmp(gr->in[i].name, "input_ids") && gr->in[i].rank == 2)
                x.T = (int)gr->in[i].shape[1];
        build(&x, gr);
        s = kn_ovb_finish(b, xf, "kiln", err);
        kn_ovb_free(b);
    }
    if (fclose(bf) != 0 && s == KILN_OK)
        s = kn_fail(err, KILN_ERR_WRITE, "%s: write failed", bin_path);
    if (fclose(xf) != 0 && s == KILN_OK)
        s = kn_fail(err, KILN_ERR_WRITE, "%s: write failed", xml_path);
    if (s != KILN_OK) {
        remove(xml_path);
        remove(bin_path);
    }
    return s;
}

kiln_status kn_ov_write_ir(const kn_gguf *model_gguf, const kn_hparams *hp, const kn_contract *c,
                           int group_size, const char *xml_path, const char *bin_path,
                           kiln_error *err) {
    return kn_ov_write_ir_graph(model_gguf, hp, c, "prefill", group_size, xml_path, bin_path, err);
}
