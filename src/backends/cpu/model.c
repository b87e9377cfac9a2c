/* model.c — builds the read-only kn_model over an opened GGUF: finds every tensor, checks its
 * shape and type, and keeps zero-copy views of the weights.
 *
 * Repacking. The x86 kernel tables multiply the quantized types in groups of 8 interleaved rows
 * (kernels/pack.c). The first session on such a table (kn_model_weights) has the model copy its
 * matrices once into that layout, spread over a thread pool; every later session on any x86
 * table shares the copy (they all want the same layout), and a session on the plain-C table
 * keeps the zero-copy views. A repacked tensor's mapped pages are handed back to the OS right
 * after the copy (they are not read again unless a session wants the views), so the resident
 * set holds the copy instead of the file's pages, not both. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "model/contract.h"
#include "quant/blocks.h"
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
    if (kn_kernels_type_ok(t->type) && aligned && n_in % kn_type_act_block(t->type) == 0) {
        *w = (kn_wmat){t->type, (int)n_in, (int)n_out, (size_t)rb, t->data, KN_LAYOUT_GGUF};
        return KILN_OK;
    }
    if (t->type == KN_TYPE_Q5_0 && kn_kernels_type_ok(KN_TYPE_Q8_0) && n_in % KN_QK == 0) {
        /* exact: every Q5_0 value is an int8 times the same scale */
        size_t blocks = (size_t)(n_in / KN_QK) * (size_t)n_out;
        uint8_t *q8 = kn_malloc(blocks * sizeof(kn_block_q8_0));
        if (!q8) return kn_fail(err, KILN_ERR_NOMEM, "out of memory loading the model");
        if ((s = keep_owned(m, q8, err))) return s;
        kn_q5_0_to_q8_0(t->data, q8, blocks);
        *w = (kn_wmat){KN_TYPE_Q8_0, (int)n_in, (int)n_out,
                       (size_t)(n_in / KN_QK) * sizeof(kn_block_q8_0), q8, KN_LAYOUT_GGUF};
        return KILN_OK;
    }
    float *f;
    if ((s = dequant_copy(m, t, n_in * n_out, &f, err))) return s;
    *w = (kn_wmat){KN_TYPE_F32, (int)n_in, (int)n_out, sizeof(float) * (size_t)n_in,
                   (const uint8_t *)f, KN_LAYOUT_GGUF};
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
    case KN_T_ATTN_Q_NORM: *vec = &L->q_norm; break;
    case KN_T_ATTN_K_NORM: *vec = &L->k_norm; break;
    case KN_T_ATTN_POST_NORM: *vec = &L->post_attn_norm; break;
    case KN_T_FFN_POST_NORM: *vec = &L->post_ffn_norm; break;
    default: break; /* RoPE factors: read once into rope_inv_freq (kn_rope_factors) */
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
        if (!mat && !vec) continue;
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

/* ---- the repacked copy ---- */

typedef struct kn_packed {
    pthread_mutex_t mu;
    bool built;               /* layers / output hold the copy */
    kn_layer *layers;         /* [L] the model's layers with their matrices repacked */
    kn_wmat output;
    void **owned;             /* the copies' buffers */
    int n_owned;
    size_t bytes;
} kn_packed;

typedef struct pack_job {
    const kn_wmat *src;
    uint8_t *dst;
    int n_groups, per_item;
    const kn_map *map;
} pack_job;

/* Groups [g0, g1) read GGUF rows [8 g0, 8 g1): mapped in one call first (a page fault at a time
 * bounded the copy), handed back after. */
static void pack_item(void *ctx, int i, int n, int worker) {
    (void)n;
    (void)worker;
    const pack_job *j = ctx;
    int g0 = i * j->per_item, g1 = g0 + j->per_item < j->n_groups ? g0 + j->per_item : j->n_groups;
    int r0 = g0 * KN_GROUP, r1 = g1 * KN_GROUP < j->src->n_out ? g1 * KN_GROUP : j->src->n_out;
    const uint8_t *rows = j->src->data + (size_t)r0 * j->src->row_bytes;
    size_t bytes = (size_t)(r1 - r0) * j->src->row_bytes;
    if (j->map) kn_map_populate(j->map, rows, bytes);
    kn_pack_groups(j->src, j->dst, g0, g1);
    if (j->map) kn_map_release(j->map, rows, bytes);
}

/* *w repacked for k into a new buffer of pk, when k wants that type packed. */
static kiln_status pack_mat(const kn_model *m, kn_packed *pk, const kn_kernels *k, kn_pool *pool,
                            kn_wmat *w, kiln_error *err) {
    size_t n = kn_pack_bytes(k, w);
    if (!n) return KILN_OK;
    void **o = kn_realloc(pk->owned, sizeof(void *) * (size_t)(pk->n_owned + 1));
    if (!o) return kn_fail(err, KILN_ERR_NOMEM, "out of memory repacking the weights");
    pk->owned = o;
    /* 64-byte aligned inside the block, so no 32-byte load straddles two cache lines */
    uint8_t *raw = kn_malloc(n + 63);
    if (!raw) return kn_fail(err, KILN_ERR_NOMEM, "out of memory repacking the weights");
    pk->owned[pk->n_owned++] = raw;
    uint8_t *dst = (uint8_t *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    /* the file's pages of a weight in place in the mapping (not an F32 copy) */
    const kn_map *map = &m->gguf->map;
    bool mapped = w->data >= map->data && w->data < map->data + map->size;
    pack_job j = {w, dst, (w->n_out + KN_GROUP - 1) / KN_GROUP, 16, mapped ? map : NULL};
    kn_pool_run(pool, pack_item, &j, (j.n_groups + j.per_item - 1) / j.per_item);
    *w = kn_pack_view(w, dst);
    pk->bytes += n;
    return KILN_OK;
}

static void packed_clear(kn_packed *pk) {
    for (int i = 0; i < pk->n_owned; i++) kn_free(pk->owned[i]);
    kn_free(pk->owned);
    kn_free(pk->layers);
    pk->owned = NULL;
    pk->n_owned = 0;
    pk->layers = NULL;
    pk->bytes = 0;
}

static kiln_status packed_build(const kn_model *m, kn_packed *pk, const kn_kernels *k,
                                kn_pool *pool, kiln_error *err) {
    int L = m->hp.n_layer;
    pk->layers = kn_malloc(sizeof *pk->layers * (size_t)L);
    if (!pk->layers) return kn_fail(err, KILN_ERR_NOMEM, "out of memory repacking the weights");
    memcpy(pk->layers, m->layers, sizeof *pk->layers * (size_t)L);
    pk->output = m->output;
    /* a pool of every core for the copy when the caller has none */
    kn_pool *tmp = NULL;
    if (!pool) {
        int ncpu = kn_online_cpus();
        if (ncpu > 1) pool = tmp = kn_pool_new(ncpu > 16 ? 16 : ncpu); /* NULL: alone */
    }
    kiln_status s = pack_mat(m, pk, k, pool, &pk->output, err);
    for (int l = 0; l < L && !s; l++) {
        kn_layer *ly = &pk->layers[l];
        kn_wmat *mats[] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->gate, &ly->up, &ly->down};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0] && !s; i++)
            s = pack_mat(m, pk, k, pool, mats[i], err);
    }
    kn_pool_free(tmp);
    if (s) packed_clear(pk);
    return s;
}

/* Whether k multiplies the quantized types repacked (the x86 tables all take one layout). */
static bool wants_packed(const kn_kernels *k) { return k->rows_x8[KN_TYPE_Q4_0] != NULL; }

kiln_status kn_model_weights(const kn_model *m, const kn_kernels *k, kn_pool *pool,
                             const kn_layer **layers, const kn_wmat **output, kiln_error *err) {
    *layers = m->layers;
    *output = &m->output;
    if (!wants_packed(k) || !m->packed) return KILN_OK;
    kn_packed *pk = m->packed;
    kiln_status s = KILN_OK;
    pthread_mutex_lock(&pk->mu);
    if (!pk->built && !(s = packed_build(m, pk, k, pool, err))) pk->built = true;
    pthread_mutex_unlock(&pk->mu);
    if (s) return s;
    *layers = pk->layers;
    *output = &pk->output;
    return KILN_OK;
}

size_t kn_model_packed_bytes(const kn_model *m) {
    if (!m->packed) return 0;
    pthread_mutex_lock(&m->packed->mu);
    size_t n = m->packed->bytes;
    pthread_mutex_unlock(&m->packed->mu);
    return n;
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
    m->packed = kn_calloc(1, sizeof *m->packed);
    if (!m->packed) {
        s = kn_fail(err, KILN_ERR_NOMEM, "out of memory loading the model");
        goto fail;
    }
    pthread_mutex_init(&m->packed->mu, NULL);

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
    if (kn_gguf_find_tensor(g, "blk.0.attn_qkv.weight")) {
        /* the runtime takes split weights only: kn_source splits them on the way to an offering */
        s = kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: fused attn_qkv / ffn_up weights (llama.cpp's "
                    "%s layout): bake it first (kiln bake %s)", g->path, hp->arch_name, g->path);
        goto fail;
    }
    for (int l = -1; l < hp->n_layer; l++)
        if ((s = load_tensors(m, l, err))) goto fail;
    if (hp->tied_embeddings) m->output = m->tok_embd;
    kn_rope_cfg rc = {hp->rope_theta,          hp->rope_dim,          (int)hp->rope_scaling,
                      hp->rope_factor,         hp->rope_low_freq_factor, hp->rope_high_freq_factor,
                      hp->rope_orig_ctx};
    kn_rope_inv_freq(&rc, m->rope_inv_freq);
    /* Llama 3's rope_freqs or LongRoPE's factors divide the frequencies (ggml's freq_factors) */
    float ff[2048];
    bool have;
    if (hp->rope_dim / 2 > (int)(sizeof ff / sizeof ff[0])) {
        s = kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: rope dimension %d is too large", g->path,
                    hp->rope_dim);
        goto fail;
    }
    if ((s = kn_rope_factors(g, hp, m->window, ff, &have, err))) goto fail;
    for (int i = 0; have && i < hp->rope_dim / 2; i++) m->rope_inv_freq[i] /= ff[i];
    if (hp->gemma && hp->swa_pattern > 0) {
        /* Gemma 3's sliding layers: their own base, no scaling (llama.cpp's freq_scale_swa) */
        kn_rope_cfg rs = {hp->rope_theta_swa, hp->rope_dim, KN_ROPE_SCALING_NONE, 1.0f, 0, 0, 0};
        if (!(m->rope_inv_freq_swa = kn_calloc((size_t)hp->rope_dim / 2, sizeof(double)))) {
            s = kn_fail(err, KILN_ERR_NOMEM, "out of memory loading the model");
            goto fail;
        }
        kn_rope_inv_freq(&rs, m->rope_inv_freq_swa);
    }
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
    if (m->packed) {
        packed_clear(m->packed);
        pthread_mutex_destroy(&m->packed->mu);
        kn_free(m->packed);
    }
    for (int i = 0; i < m->n_owned; i++) kn_free(m->owned[i]);
    kn_free(m->owned);
    kn_free(m->layers);
    kn_free(m->rope_inv_freq);
    kn_free(m->rope_inv_freq_swa);
    if (m->owned_gguf) kn_gguf_close(m->owned_gguf);
    kn_free(m);
}

int kn_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static uint64_t view_bytes(const kn_wmat *w) {
    uint64_t rows = w->layout == KN_LAYOUT_X8 ? (uint64_t)(w->n_out + KN_GROUP - 1) / KN_GROUP
                                              : (uint64_t)w->n_out;
    return (uint64_t)w->row_bytes * rows;
}

uint64_t kn_model_kv_step_bytes(const kn_model *m, kn_kv_kind kind, int n_ctx) {
    const kn_hparams *hp = &m->hp;
    uint64_t rows = 0;
    for (int l = 0; l < hp->n_layer && n_ctx > 0; l++) {
        int swa = kn_hparams_layer_window(hp, l);
        rows += (uint64_t)(swa > 0 && swa < n_ctx ? swa : n_ctx);
    }
    return 2 * rows * (uint64_t)hp->n_head_kv * kn_kv_row_bytes(kind, hp->head_dim);
}

void kn_model_decode_bytes(const kn_model *m, uint64_t *stored, uint64_t *resident) {
    /* Stored: every matrix of a layer (blk.N.*, two or more dims; biases and norms are vectors
     * and negligible) plus the output matrix, or the embedding table when tied. */
    uint64_t s = 0, r = 0;
    const kn_gguf_tensor *out = kn_gguf_find_tensor(m->gguf, "output.weight");
    if (!out) out = kn_gguf_find_tensor(m->gguf, "token_embd.weight");
    for (uint64_t i = 0; i < m->gguf->n_tensors; i++) {
        const kn_gguf_tensor *t = &m->gguf->tensors[i];
        if ((t->n_dims >= 2 && t->name.len > 4 && memcmp(t->name.ptr, "blk.", 4) == 0) ||
            t == out)
            s += t->nbytes;
    }
    for (int l = 0; l < m->hp.n_layer; l++) {
        const kn_layer *L = &m->layers[l];
        const kn_wmat *w[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->gate, &L->up, &L->down};
        for (size_t k = 0; k < sizeof w / sizeof *w; k++) r += view_bytes(w[k]);
    }
    r += view_bytes(&m->output);
    if (stored) *stored = s;
    if (resident) *resident = r;
}
