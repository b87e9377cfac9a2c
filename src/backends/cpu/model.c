/* model.c — builds the read-only kn_model over an opened GGUF: finds every tensor, checks its
 * shape and type, and keeps zero-copy views of the weights. */
#include <stdio.h>
#include <string.h>

#include "model/contract.h"
#include "quant/quant.h"
#include "backends/cpu/engine.h"

kn_model_params kn_model_default_params(void) {
    kn_model_params p = {0, 0, -1};
    return p;
}

static kiln_status keep_owned(kn_model *m, void *p, kiln_error *err) {
    void **n = kn_realloc(m->owned, sizeof(void *) * (size_t)(m->n_owned + 1));
    if (!n) {
        kn_free(p);
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory loading the model");
    }
    m->owned = n;
    m->owned[m->n_owned++] = p;
    return KILN_OK;
}

/* Finds a tensor and checks its shape [ne0, ne1] (ne1 = 0 for a vector). */
static kiln_status find(const kn_model *m, const char *name, int64_t ne0, int64_t ne1,
                        const kn_gguf_tensor **out, kiln_error *err) {
    const kn_gguf_tensor *t = kn_gguf_find_tensor(m->gguf, name);
    if (!t) return kn_fail(err, KILN_ERR_FORMAT, "%s: missing tensor %s", m->gguf->path, name);
    int want_dims = ne1 ? 2 : 1;
    bool ok = t->ne[0] == ne0 && (ne1 ? t->ne[1] == ne1 : t->ne[1] == 1) && t->ne[2] == 1 &&
              t->ne[3] == 1 && (int)t->n_dims <= want_dims;
    if (!ok)
        return kn_fail(err, KILN_ERR_FORMAT,
                       "%s: tensor %s has shape [%lld,%lld,%lld,%lld], expected [%lld,%lld]",
                       m->gguf->path, name, (long long)t->ne[0], (long long)t->ne[1],
                       (long long)t->ne[2], (long long)t->ne[3], (long long)ne0,
                       (long long)(ne1 ? ne1 : 1));
    /* the schema's type rule (an I32 norm is a corrupted file, not a norm) */
    if (!kn_weight_type_ok(ne1 != 0, t->type))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor %s has type %s, which is not a type "
                       "for %s", m->gguf->path, name, kn_type_name(t->type),
                       ne1 ? "weights" : "a norm or bias (F32, F16, BF16)");
    const kn_type_traits *tr = kn_type_get(t->type);
    uint64_t rb, need;
    if (!tr || !kn_row_bytes(t->type, ne0, &rb) || !kn_mul_ok(rb, ne1 ? (uint64_t)ne1 : 1, &need) ||
        need > t->nbytes)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor %s: type %s does not fit its shape",
                       m->gguf->path, name, kn_type_name(t->type));
    *out = t;
    return KILN_OK;
}

/* An F32 copy of a whole tensor (n elements) for types used as-is nowhere else. */
static kiln_status dequant_copy(kn_model *m, const kn_gguf_tensor *t, int64_t n, float **out,
                                kiln_error *err) {
    const kn_type_traits *tr = kn_type_get(t->type);
    if (!tr || !tr->can_dequantize)
        return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: tensor %.*s: type %s is not supported",
                       m->gguf->path, (int)t->name.len, t->name.ptr, kn_type_name(t->type));
    float *f = kn_malloc(sizeof(float) * (size_t)n);
    if (!f) return kn_fail(err, KILN_ERR_NOMEM, "out of memory loading the model");
    if (!kn_dequantize(t->type, t->data, f, n)) {
        kn_free(f);
        return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor %.*s cannot be dequantized",
                       m->gguf->path, (int)t->name.len, t->name.ptr);
    }
    kiln_status s = keep_owned(m, f, err);
    if (s) return s;
    *out = f;
    return KILN_OK;
}

static kiln_status load_vec(kn_model *m, const char *name, int64_t n, const float **out,
                            kiln_error *err) {
    const kn_gguf_tensor *t = NULL;
    kiln_status s = find(m, name, n, 0, &t, err);
    if (s) return s;
    if (t->type == KN_TYPE_F32 && ((uintptr_t)t->data & 3) == 0) {
        *out = (const float *)(const void *)t->data;
        return KILN_OK;
    }
    float *f;
    if ((s = dequant_copy(m, t, n, &f, err))) return s;
    *out = f;
    return KILN_OK;
}

/* A weight matrix of n_out rows of n_in: a view in place when the kernels take its type (and
 * F32/F16 rows are aligned for their element), an F32 copy otherwise. */
static kiln_status load_mat(kn_model *m, const char *name, int64_t n_in, int64_t n_out,
                            kn_wmat *w, kiln_error *err) {
    const kn_gguf_tensor *t = NULL;
    kiln_status s = find(m, name, n_in, n_out, &t, err);
    if (s) return s;
    uint64_t rb;
    kn_row_bytes(t->type, n_in, &rb);
    bool aligned = t->type != KN_TYPE_F32 || ((uintptr_t)t->data & 3) == 0;
    if (kn_kernels_type_ok(t->type) && aligned &&
        (!kn_type_wants_q8(t->type) || n_in % KN_QBLOCK == 0)) {
        *w = (kn_wmat){t->type, (int)n_in, (int)n_out, (size_t)rb, t->data};
        return KILN_OK;
    }
    float *f;
    if ((s = dequant_copy(m, t, n_in * n_out, &f, err))) return s;
    *w = (kn_wmat){KN_TYPE_F32, (int)n_in, (int)n_out, sizeof(float) * (size_t)n_in,
                   (const uint8_t *)f};
    return KILN_OK;
}

/* Where a tensor of each role lives in the model: a matrix view or a vector. */
static void role_slot(kn_model *m, kn_tensor_role role, int l, kn_wmat **mat, const float ***vec) {
    kn_layer *L = l >= 0 ? &m->layers[l] : NULL;
    *mat = NULL;
    *vec = NULL;
    switch (role) {
    case KN_T_TOKEN_EMBD: *mat = &m->tok_embd; break;
    case KN_T_OUTPUT_NORM: *vec = &m->output_norm; break;
    case KN_T_OUTPUT: *mat = &m->output; break;
    case KN_T_ATTN_NORM: *vec = &L->attn_norm; break;
    case KN_T_ATTN_Q: *mat = &L->wq; break;
    case KN_T_ATTN_K: *mat = &L->wk; break;
    case KN_T_ATTN_V: *mat = &L->wv; break;
    case KN_T_ATTN_OUT: *mat = &L->wo; break;
    case KN_T_ATTN_Q_BIAS: *vec = &L->bq; break;
    case KN_T_ATTN_K_BIAS: *vec = &L->bk; break;
    case KN_T_ATTN_V_BIAS: *vec = &L->bv; break;
    case KN_T_FFN_NORM: *vec = &L->ffn_norm; break;
    case KN_T_FFN_GATE: *mat = &L->gate; break;
    case KN_T_FFN_UP: *mat = &L->up; break;
    case KN_T_FFN_DOWN: *mat = &L->down; break;
    default: break;
    }
}

/* Every tensor the architecture has (model/arch.h, kn_tensor_expected), global ones with
 * layer -1, per-layer ones for each layer. */
static kiln_status load_tensors(kn_model *m, int layer, kiln_error *err) {
    for (int r = 0; r < KN_T_ROLE_COUNT; r++) {
        kn_tensor_role role = (kn_tensor_role)r;
        if (kn_tensor_role_is_per_layer(role) != (layer >= 0)) continue;
        char name[96];
        int n_dims;
        int64_t ne[2];
        if (!kn_tensor_expected(&m->hp, role, layer < 0 ? 0 : layer, name, sizeof name, &n_dims,
                                ne))
            continue;
        kn_wmat *mat;
        const float **vec;
        role_slot(m, role, layer, &mat, &vec);
        kiln_status s = mat ? load_mat(m, name, ne[0], ne[1], mat, err)
                            : load_vec(m, name, ne[0], vec, err);
        if (s) return s;
    }
    return KILN_OK;
}

static kiln_status check_hparams(const kn_model *m, kiln_error *err) {
    const kn_hparams *hp = &m->hp;
    if (hp->n_layer < 1 || hp->n_embd < 1 || hp->n_head < 1 || hp->n_head_kv < 1 ||
        hp->head_dim < 2 || hp->n_ff < 1 || hp->n_vocab < 1 || hp->n_head % hp->n_head_kv ||
        hp->rope_dim < 2 || hp->rope_dim > hp->head_dim || hp->rope_dim % 2)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: inconsistent hyperparameters",
                       m->gguf->path);
    return KILN_OK;
}

kiln_status kn_model_load(const kn_gguf *g, const kn_hparams *hp, const kn_model_params *p,
                          kn_model **out, kiln_error *err) {
    *out = NULL;
    kn_model_params def = kn_model_default_params();
    if (!p) p = &def;
    kn_model *m = kn_calloc(1, sizeof *m);
    if (!m) return kn_fail(err, KILN_ERR_NOMEM, "out of memory loading the model");
    m->hp = *hp;
    m->gguf = g;
    kiln_status s = check_hparams(m, err);
    if (s) goto fail;

    /* One contract reader for inspect and loading: an offering's contract is the one its bake
     * validated and rules as is; parameters only shape the contract of a plain source. */
    kn_contract c;
    if (kn_gguf_find(g, "kiln.contract.window")) {
        if ((s = kn_contract_from_gguf(g, hp, &c, err))) goto fail;
        if ((p->window > 0 && p->window != c.window) || (p->chunk > 0 && p->chunk != c.chunk)) {
            s = kn_fail(err, KILN_ERR_INVALID_ARG,
                        "%s: an offering keeps the contract it was baked with (window %d, chunk "
                        "%d); --window / --chunk apply only to a source that is not an offering "
                        "(re-bake to change them)", g->path, c.window, c.chunk);
            goto fail;
        }
    } else {
        int W = p->window > 0 ? p->window : KN_DEFAULT_WINDOW;
        int C = p->chunk > 0 ? p->chunk : (KN_DEFAULT_CHUNK < W ? KN_DEFAULT_CHUNK : W);
        int S = p->sink >= 0 ? p->sink : (KN_DEFAULT_SINK < W ? KN_DEFAULT_SINK : W - 1);
        if ((s = kn_contract_build(hp, W, C, S, &c, err))) {
            kn_fail_prefix(err, "%s: ", g->path);
            goto fail;
        }
    }
    m->window = c.window;
    m->chunk = c.chunk;
    m->sink = c.sink;

    m->layers = kn_calloc((size_t)hp->n_layer, sizeof *m->layers);
    m->rope_inv_freq = kn_calloc((size_t)hp->rope_dim / 2, sizeof(double));
    if (!m->layers || !m->rope_inv_freq) {
        s = kn_fail(err, KILN_ERR_NOMEM, "out of memory loading the model");
        goto fail;
    }
    /* The embedding table is read row by row through kn_dequantize, and is the classifier when
     * tied; either way its type must be one the kernels take or it is widened now. */
    for (int l = -1; l < hp->n_layer; l++)
        if ((s = load_tensors(m, l, err))) goto fail;
    if (hp->tied_embeddings) m->output = m->tok_embd;
    kn_rope_cfg rc = {hp->rope_theta,          hp->rope_dim,          (int)hp->rope_scaling,
                      hp->rope_factor,         hp->rope_low_freq_factor, hp->rope_high_freq_factor,
                      hp->rope_orig_ctx};
    kn_rope_inv_freq(&rc, m->rope_inv_freq);
    *out = m;
    return KILN_OK;
fail:
    kn_model_free(m);
    return s;
}

kiln_status kn_model_open(const char *path, const kn_model_params *p, kn_model **out,
                          kiln_error *err) {
    *out = NULL;
    kn_gguf *g;
    kiln_status s = kn_gguf_open(path, &g, err);
    if (s) return s;
    kn_hparams hp;
    if ((s = kn_hparams_from_gguf(g, &hp, err)) || (s = kn_model_load(g, &hp, p, out, err))) {
        kn_gguf_close(g);
        return s;
    }
    (*out)->owned_gguf = g;
    return KILN_OK;
}

void kn_model_free(kn_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) kn_free(m->owned[i]);
    kn_free(m->owned);
    kn_free(m->layers);
    kn_free(m->rope_inv_freq);
    if (m->owned_gguf) kn_gguf_close(m->owned_gguf);
    kn_free(m);
}

int kn_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}
