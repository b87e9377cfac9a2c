/* model.c — builds the read-only kn_model over an opened GGUF: finds every tensor, checks its
 * shape and type, and keeps zero-copy views of the weights, or copies repacked for the kernels.
 *
 * Repacking. The x86 kernel tables multiply the quantized types in groups of 8 interleaved rows
 * (kernels/pack.c), so those matrices are copied once, here, into that layout; every other
 * weight stays a view into the mapping. A repacked tensor's mapped pages are never read again,
 * so they are handed back to the OS (madvise) right after the copy: the resident set holds
 * the copy instead of the file's pages, not both. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "quant/quant.h"
#include "runtime/engine.h"

kn_model_params kn_model_default_params(void) {
    kn_model_params p = {KN_DEFAULT_WINDOW, KN_DEFAULT_CHUNK, KN_DEFAULT_SINK};
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

typedef struct pack_job {
    const kn_wmat *src;
    uint8_t *dst;
    int n_groups, per_item;
    const kn_map *map;
} pack_job;

/* Groups [g0, g1) read GGUF rows [8 g0, 8 g1): mapped in one call first, handed back after. */
static void pack_item(void *ctx, int i, int n, int worker) {
    (void)n;
    (void)worker;
    const pack_job *j = ctx;
    int g0 = i * j->per_item, g1 = g0 + j->per_item < j->n_groups ? g0 + j->per_item : j->n_groups;
    int r0 = g0 * KN_GROUP, r1 = g1 * KN_GROUP < j->src->n_out ? g1 * KN_GROUP : j->src->n_out;
    const uint8_t *rows = j->src->data + (size_t)r0 * j->src->row_bytes;
    size_t bytes = (size_t)(r1 - r0) * j->src->row_bytes;
    kn_map_populate(j->map, rows, bytes);
    kn_pack_groups(j->src, j->dst, g0, g1);
    kn_map_release(j->map, rows, bytes);
}

/* w repacked for the model's kernel table into an owned copy, when the table wants that; the
 * groups are shared out over the load's thread pool. */
static kiln_status pack_mat(kn_model *m, kn_pool *pool, kn_wmat *w, const kn_gguf_tensor *t,
                            kiln_error *err) {
    size_t n = kn_pack_bytes(m->k, w);
    if (!n) return KILN_OK;
    /* 64-byte aligned inside an owned block, so no 32-byte load straddles two cache lines */
    uint8_t *raw = kn_malloc(n + 63);
    if (!raw) return kn_fail(err, KILN_ERR_NOMEM, "out of memory repacking the weights");
    kiln_status s = keep_owned(m, raw, err);
    if (s) return s;
    uint8_t *dst = (uint8_t *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    pack_job j = {w, dst, (w->n_out + KN_GROUP - 1) / KN_GROUP, 16, &m->gguf->map};
    kn_pool_run(pool, pack_item, &j, (j.n_groups + j.per_item - 1) / j.per_item);
    *w = kn_pack_view(w, dst);
    m->packed_bytes += n;
    kn_map_release(&m->gguf->map, t->data, (size_t)t->nbytes);
    return KILN_OK;
}

/* A weight matrix of n_out rows of n_in: a view in place when the kernels take its type as
 * stored (and F32/F16 rows are aligned for their element), a repacked copy when the kernel
 * table wants one, an F32 copy for a type the kernels lack. */
static kiln_status load_mat(kn_model *m, kn_pool *pool, const char *name, int64_t n_in,
                            int64_t n_out, kn_wmat *w, kiln_error *err) {
    const kn_gguf_tensor *t = NULL;
    kiln_status s = find(m, name, n_in, n_out, &t, err);
    if (s) return s;
    uint64_t rb;
    kn_row_bytes(t->type, n_in, &rb);
    bool aligned = t->type != KN_TYPE_F32 || ((uintptr_t)t->data & 3) == 0;
    if (kn_kernels_type_ok(t->type) && aligned && n_in % kn_type_act_block(t->type) == 0) {
        *w = (kn_wmat){t->type, (int)n_in, (int)n_out, (size_t)rb, t->data, KN_LAYOUT_GGUF};
        return pack_mat(m, pool, w, t, err);
    }
    float *f;
    if ((s = dequant_copy(m, t, n_in * n_out, &f, err))) return s;
    *w = (kn_wmat){KN_TYPE_F32, (int)n_in, (int)n_out, sizeof(float) * (size_t)n_in,
                   (const uint8_t *)f, KN_LAYOUT_GGUF};
    return KILN_OK;
}

static kiln_status load_layer(kn_model *m, kn_pool *pool, int l, kiln_error *err) {
    const kn_hparams *hp = &m->hp;
    kn_layer *L = &m->layers[l];
    int64_t E = hp->n_embd, QD = (int64_t)hp->n_head * hp->head_dim,
            KD = (int64_t)hp->n_head_kv * hp->head_dim, F = hp->n_ff;
    char n[96];
    kiln_status s;
#define NAME(x) (snprintf(n, sizeof n, "blk.%d." x, l), n)
    if ((s = load_vec(m, NAME("attn_norm.weight"), E, &L->attn_norm, err)) ||
        (s = load_mat(m, pool, NAME("attn_q.weight"), E, QD, &L->wq, err)) ||
        (s = load_mat(m, pool, NAME("attn_k.weight"), E, KD, &L->wk, err)) ||
        (s = load_mat(m, pool, NAME("attn_v.weight"), E, KD, &L->wv, err)) ||
        (s = load_mat(m, pool, NAME("attn_output.weight"), QD, E, &L->wo, err)) ||
        (s = load_vec(m, NAME("ffn_norm.weight"), E, &L->ffn_norm, err)) ||
        (s = load_mat(m, pool, NAME("ffn_gate.weight"), E, F, &L->gate, err)) ||
        (s = load_mat(m, pool, NAME("ffn_up.weight"), E, F, &L->up, err)) ||
        (s = load_mat(m, pool, NAME("ffn_down.weight"), F, E, &L->down, err)))
        return s;
    if (hp->qkv_bias &&
        ((s = load_vec(m, NAME("attn_q.bias"), QD, &L->bq, err)) ||
         (s = load_vec(m, NAME("attn_k.bias"), KD, &L->bk, err)) ||
         (s = load_vec(m, NAME("attn_v.bias"), KD, &L->bv, err))))
        return s;
#undef NAME
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
    kn_pool *pool = NULL;
    m->hp = *hp;
    m->gguf = g;
    m->k = kn_kernels_get();
    kiln_status s = check_hparams(m, err);
    if (s) goto fail;

    uint32_t w, c, sk;
    int want_w = p->window > 0 ? p->window : KN_DEFAULT_WINDOW;
    if (kn_gguf_get_u32(g, "kiln.contract.window", &w) &&
        kn_gguf_get_u32(g, "kiln.contract.chunk", &c)) {
        m->window = (int)(w > (1u << 24) ? (1u << 24) : w);
        if (p->window > 0 && p->window < m->window) m->window = p->window;
        m->chunk = (int)(c > (uint32_t)m->window ? (uint32_t)m->window : c);
        m->sink = kn_gguf_get_u32(g, "kiln.contract.sink", &sk) ? (int)(sk > 1u << 24 ? 1u << 24 : sk)
                                                                : (p->sink >= 0 ? p->sink : 0);
    } else {
        m->window = want_w;
        m->chunk = p->chunk > 0 ? p->chunk : KN_DEFAULT_CHUNK;
        m->sink = p->sink >= 0 ? p->sink : KN_DEFAULT_SINK;
    }
    if (m->window < 1 || m->chunk < 1 || m->chunk > m->window) {
        s = kn_fail(err, KILN_ERR_INVALID_ARG, "window %d / chunk %d: need 1 <= C <= W",
                    m->window, m->chunk);
        goto fail;
    }
    if (m->sink >= m->window) m->sink = m->window - 1;

    const kn_gguf_tensor *emb = NULL;
    if ((s = find(m, "token_embd.weight", hp->n_embd, hp->n_vocab, &emb, err))) goto fail;
    /* The embedding table is read row by row through kn_dequantize, in its GGUF layout, so it
     * stays a view (an F32 copy for a type without a dequantizer... which find has refused);
     * tied, the classifier is a second, product-ready view of it (repacked or widened). */
    const kn_type_traits *etr = kn_type_get(emb->type);
    uint64_t erb;
    kn_row_bytes(emb->type, hp->n_embd, &erb);
    if (!etr->can_dequantize) {
        s = kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: token_embd.weight: type %s is not supported",
                    g->path, kn_type_name(emb->type));
        goto fail;
    }
    m->tok_embd = (kn_wmat){emb->type, hp->n_embd, hp->n_vocab, (size_t)erb, emb->data,
                            KN_LAYOUT_GGUF};
    if ((s = load_vec(m, "output_norm.weight", hp->n_embd, &m->output_norm, err))) goto fail;
    /* Repacking runs on every core; the pool lives for the load only. */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    pool = kn_pool_new(ncpu < 1 ? 1 : ncpu > 16 ? 16 : (int)ncpu); /* NULL: this thread alone */
    if ((s = load_mat(m, pool, kn_gguf_find_tensor(g, "output.weight") ? "output.weight"
                                                                       : "token_embd.weight",
                      hp->n_embd, hp->n_vocab, &m->output, err)))
        goto fail;
    m->layers = kn_calloc((size_t)hp->n_layer, sizeof *m->layers);
    m->rope_inv_freq = kn_calloc((size_t)hp->rope_dim / 2, sizeof(double));
    if (!m->layers || !m->rope_inv_freq) {
        s = kn_fail(err, KILN_ERR_NOMEM, "out of memory loading the model");
        goto fail;
    }
    for (int l = 0; l < hp->n_layer; l++)
        if ((s = load_layer(m, pool, l, err))) goto fail;
    kn_pool_free(pool);
    pool = NULL;
    kn_rope_cfg rc = {hp->rope_theta,          hp->rope_dim,          (int)hp->rope_scaling,
                      hp->rope_factor,         hp->rope_low_freq_factor, hp->rope_high_freq_factor,
                      hp->rope_orig_ctx};
    kn_rope_inv_freq(&rc, m->rope_inv_freq);
    *out = m;
    return KILN_OK;
fail:
    kn_pool_free(pool);
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

int kn_kv_slot(const kn_model *m, int64_t p) {
    if (p < m->window) return (int)p;
    return m->sink + (int)((p - m->sink) % (m->window - m->sink));
}

int kn_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}
