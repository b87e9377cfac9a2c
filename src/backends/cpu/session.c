/* session.c — KV cache, scratch buffers and the forward pass of the three fixed-shape steps.
 *
 * One forward routine serves all three graphs: it runs R rows (tokens) through every layer,
 * writing their keys and values into a "KV view" of [2][Hkv][W][D] with a slot and a position
 * per row, then lets each row attend to every filled slot the mask allows. prefill and decode
 * use the session's cache as the view (the layer's slice of [L,2,Hkv,W,D]); stateless uses a
 * private one-layer view that starts empty each call, so it never touches the cache.
 *
 * The cache holds IEEE halves by default, F32 or Q8_0 on request. A row is rounded
 * to the cache's type when it is written, before any row attends to it, so a token sees the
 * same keys and values in a decode step, a prefill chunk and a stateless window (whose private
 * view has the same type).
 *
 * This forward and the OpenVINO IR (bake/openvino/ir_writer.c) compute the same block: a change
 * to one must be made to the other (tests/py/test_openvino_ir.py compares them). */
#include <math.h>
#include <string.h>

#include "quant/quant.h"
#include "backends/cpu/engine.h"

/* Attention's chunks of slots, and the most rows a pass spreads over them (see attention). */
#define ATTN_CHUNK 256
#define ATTN_SPREAD_ROWS 8

struct kn_session {
    const kn_model *m;
    kn_session_params p;
    const kn_kernels *k;
    kn_pool *pool;            /* the device's (shared by its sessions), or its own */
    bool own_pool;
    int max_rows;             /* R: C + batch_cap - 1 (a chunk and decode rows of other
                                 sessions), or W when stateless is enabled */
    int act_stride;           /* row stride of the quantized activations (multiple of 256) */
    const kn_layer *layers;   /* [L] the matrices as k multiplies them (kn_model_weights) */
    const kn_wmat *output;

    void *kv;                 /* [L][2][Hkv][W][D] the cache, F16 or F32 elements; which slot
                                 holds which position is the driver's table, handed in with
                                 every call */
    kn_kv_kind kv_kind;       /* F16 (default), F32 or Q8_0 */
    size_t kv_row;            /* bytes of one cached row of D elements */

    void *sl_kv;              /* [2][Hkv][W][D] stateless: one layer, rebuilt every layer */
    int32_t *sl_pos;          /* [W] */

    float *x;                 /* [R][E] residual stream */
    float *xb;                /* [R][max(E, H*D)] normed input / attention output */
    float *xb2;               /* [R][E] projection output */
    float *q;                 /* [R][H*D] */
    float *kn;                /* [R][Hkv*D] new keys */
    float *vn;                /* [R][Hkv*D] new values */
    float *hb;                /* [R][F] gate, then SwiGLU */
    float *hb2;               /* [R][F] up */
    float *cs;                /* [R][rope_dim] cos/sin per row */
    float *cs_swa;            /* [R][rope_dim] the same for the sliding layers' base, or NULL */
    float *scores;            /* [threads][KN_ATTN_SCRATCH(H/Hkv)][ATTN_CHUNK] attention
                                 weights (a kernel call sees one chunk of slots) */
    float *attn_tmp;          /* [threads][G*D + 4*G] (G = H/Hkv) a worker's chunk of a KV
                                 head's attention, its ml, and the fold's state */
    float *attn_part;         /* [spread_rows][Hkv][W/ATTN_CHUNK][G*D] chunks of a spread pass */
    float *attn_ml;           /* [spread_rows][Hkv][W/ATTN_CHUNK][2*G] their ml */
    int spread_rows;          /* most rows a pass spreads over chunks (0: none) */
    int n_threads;
    float *logits;            /* [B][V]: row 0 is the session's; a batch it leads uses all */
    int32_t *row_ids;         /* [R] token of each row of a batched pass */
    int32_t *rows_pos;        /* [R] position of each row */
    int32_t *rows_slot;       /* [R] KV slot of each row */
    struct row_kv *rows_kv;   /* [R] whose cache each row writes and attends over */
    int batch_cap;            /* B: decode rows of other sessions it may lead (>= 1) */
    kn_act act;               /* both forms, [R] rows of act_stride (see kn_act) */
};

/* The cache a row writes its key and value into and attends over: its session's (in a batch,
 * not the session that runs the pass), or the stateless window's private view. */
typedef struct row_kv {
    kn_session *owner;
    const int32_t *slot_pos;  /* [W] the owner's slot table for this call */
    int n_slots;
} row_kv;

kn_session_params kn_session_default_params(void) {
    kn_session_params p = {1, true, NULL, NULL, KN_KV_F16, 1};
    return p;
}

const kn_model *kn_session_model(const kn_session *s) { return s->m; }
const kn_kernels *kn_session_kernels(const kn_session *s) { return s->k; }

static void *alloc_f(size_t n, bool *ok) {
    void *p = kn_malloc(n ? n : 1);
    if (!p) *ok = false;
    return p;
}

void kn_session_free(kn_session *s) {
    if (!s) return;
    if (s->own_pool) kn_pool_free(s->pool);
    void *bufs[] = {s->kv,        s->sl_kv,    s->sl_pos,  s->x,       s->xb,
                    s->xb2,       s->q,        s->kn,      s->vn,      s->hb,
                    s->hb2,       s->cs,       s->cs_swa,  s->scores,  s->attn_tmp,
                    s->attn_part, s->attn_ml,  s->logits,
                    s->row_ids,   s->rows_pos, s->rows_slot, s->rows_kv, s->act.q,
                    s->act.d,     s->act.s,    s->act.q4off, s->act.qk, s->act.dk,
                    s->act.bsk,   s->act.bsk32};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) kn_free(bufs[i]);
    kn_free(s);
}

void kn_session_reset(kn_session *s) {
    /* Nothing to clear: a slot the driver's table marks empty is never read. */
    (void)s;
}

kiln_status kn_session_new(const kn_model *m, const kn_session_params *p, kn_session **out,
                           kiln_error *err) {
    *out = NULL;
    kn_session_params def = kn_session_default_params();
    if (!p) p = &def;
    if (p->threads < 1 || p->threads > 1024)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "threads must be between 1 and 1024, not %d",
                       p->threads);
    if (p->max_batch < 1 || p->max_batch > KN_MAX_BATCH)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "a batch must be 1 to %d rows, not %d",
                       KN_MAX_BATCH, p->max_batch);
    if (p->kv != KN_KV_F32 && p->kv != KN_KV_F16 && p->kv != KN_KV_Q8)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "unknown KV cache type %d", (int)p->kv);
    if (p->kv == KN_KV_Q8 && m->hp.head_dim % KN_QBLOCK != 0)
        return kn_fail(err, KILN_ERR_INVALID_ARG,
                       "a q8_0 KV cache needs a head size that is a multiple of %d; this "
                       "model's is %d (use --kv f16 or f32)", KN_QBLOCK, m->hp.head_dim);
    const kn_kernels *k = p->kernels;
    if (!k) {
        kiln_status st = kn_kernels_choose(&k, err);
        if (st) return st;
    }
    const kn_hparams *hp = &m->hp;
    kn_session *s = kn_calloc(1, sizeof *s);
    if (!s) return kn_fail(err, KILN_ERR_NOMEM, "out of memory creating a session");
    s->m = m;
    s->p = *p;
    s->k = k;
    size_t W = (size_t)m->window, E = (size_t)hp->n_embd, D = (size_t)hp->head_dim;
    size_t HD = (size_t)hp->n_head * D, KD = (size_t)hp->n_head_kv * D, F = (size_t)hp->n_ff;
    size_t L = (size_t)hp->n_layer, V = (size_t)hp->n_vocab;
    /* a stateless session never batches (its rows are one window, not one row per cache) */
    s->batch_cap = p->stateless ? 1 : p->max_batch;
    size_t R = (size_t)(p->stateless ? m->window : m->chunk + s->batch_cap - 1);
    size_t wide = E > HD ? E : HD;
    size_t amax = wide > F ? wide : F;
    s->max_rows = (int)R;
    s->act_stride = (int)((amax + KN_KBLOCK - 1) / KN_KBLOCK * KN_KBLOCK);
    size_t fs = sizeof(float);
    bool ok = true;
    s->kv_kind = p->kv;
    s->kv_row = kn_kv_row_bytes(s->kv_kind, (int)D);
    size_t KR = (size_t)hp->n_head_kv * s->kv_row; /* one position's keys (or values) */
    s->kv = alloc_f(KR * L * 2 * W, &ok);
    if (p->stateless) {
        s->sl_kv = alloc_f(KR * 2 * W, &ok);
        s->sl_pos = alloc_f(sizeof(int32_t) * W, &ok);
    }
    s->x = alloc_f(fs * R * E, &ok);
    s->xb = alloc_f(fs * R * wide, &ok);
    s->xb2 = alloc_f(fs * R * E, &ok);
    s->q = alloc_f(fs * R * HD, &ok);
    s->kn = alloc_f(fs * R * KD, &ok);
    s->vn = alloc_f(fs * R * KD, &ok);
    s->hb = alloc_f(fs * R * F, &ok);
    s->hb2 = alloc_f(fs * R * F, &ok);
    s->cs = alloc_f(fs * R * (size_t)hp->rope_dim, &ok);
    if (m->rope_inv_freq_swa) s->cs_swa = alloc_f(fs * R * (size_t)hp->rope_dim, &ok);
    size_t G = (size_t)(hp->n_head / hp->n_head_kv), Hkv = (size_t)hp->n_head_kv;
    s->n_threads = p->pool ? kn_pool_size(p->pool) : p->threads;
    size_t nt = (size_t)s->n_threads;
    s->scores = alloc_f(fs * nt * (size_t)KN_ATTN_SCRATCH(G) * ATTN_CHUNK, &ok);
    s->attn_tmp = alloc_f(fs * nt * (G * D + 4 * G), &ok);
    /* a pass is spread when its (row, KV head) items are fewer than twice the threads */
    int sr = (2 * s->n_threads - 1) / hp->n_head_kv;
    if (sr > ATTN_SPREAD_ROWS) sr = ATTN_SPREAD_ROWS;
    if (sr > (int)R) sr = (int)R;
    s->spread_rows = sr;
    size_t n_ch = (W + ATTN_CHUNK - 1) / ATTN_CHUNK, items = (size_t)sr * Hkv * n_ch;
    s->attn_part = alloc_f(fs * items * G * D, &ok);
    s->attn_ml = alloc_f(fs * items * 2 * G, &ok);
    s->logits = alloc_f(fs * (size_t)s->batch_cap * V, &ok);
    s->row_ids = alloc_f(sizeof(int32_t) * R, &ok);
    s->rows_pos = alloc_f(sizeof(int32_t) * R, &ok);
    s->rows_slot = alloc_f(sizeof(int32_t) * R, &ok);
    s->rows_kv = alloc_f(sizeof(row_kv) * R, &ok);
    size_t AS = (size_t)s->act_stride, i16 = sizeof(int16_t);
    s->act.stride = s->act_stride;
    s->act.q = alloc_f(R * AS, &ok);
    s->act.d = alloc_f(fs * R * AS / KN_QBLOCK, &ok);
    s->act.s = alloc_f(fs * R * AS / KN_QBLOCK, &ok);
    s->act.q4off = alloc_f(sizeof(int32_t) * R * AS / KN_QBLOCK, &ok);
    s->act.qk = alloc_f(R * AS, &ok);
    s->act.dk = alloc_f(fs * R * AS / KN_KBLOCK, &ok);
    s->act.bsk = alloc_f(i16 * R * AS / 16, &ok);
    s->act.bsk32 = alloc_f(i16 * R * AS / KN_QBLOCK, &ok);
    if (p->pool) {
        s->pool = p->pool;
    } else if (ok && p->threads > 1) {
        s->own_pool = true;
        if (!(s->pool = kn_pool_new(p->threads))) ok = false;
    }
    if (!ok) {
        kn_session_free(s);
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory creating a session (window %d)",
                       m->window);
    }
    /* the first session on an x86 table has the model repack its matrices (on this pool) */
    kiln_status st = kn_model_weights(m, k, s->pool, &s->layers, &s->output, err);
    if (st) {
        kn_session_free(s);
        return st;
    }
    /* finite rows everywhere (attention reads the masked ones before the last allowed slot) */
    memset(s->kv, 0, KR * L * 2 * W);
    *out = s;
    return KILN_OK;
}

/* ---- the forward pass ---- */

typedef struct kv_view {
    uint8_t *k;               /* [Hkv][W] rows of kv_row bytes */
    uint8_t *v;               /* [Hkv][W][D] */
    const int32_t *pos;       /* [W] */
    int n_slots;
} kv_view;

/* Attention over a long cache is cut at fixed slot indices into chunks of ATTN_CHUNK slots:
 * each chunk gives its heads normalized over its own slots, with their max score and sum of
 * exponentials, and kn_attn_fold merges the chunks in slot order. A pass with enough
 * (row, KV head) items to keep every thread busy runs a row's chunks one after the other in
 * one item; a decode pass with few (SmolLM2's 3 KV heads on 2 threads, Gemma 3 270M's 1)
 * spreads them over the pool, an item a chunk, and folds after. The cut depends on slot
 * indices only and the fold's order is fixed, so a row gets the same bits either way, and in a
 * decode step, a prefill chunk or a stateless window. */
typedef struct attn_job {
    kn_session *s;
    int layer;
    bool stateless;
    int swa;                  /* this layer's sliding window, 0 = global */
    /* a spread pass: row r's items are first[r] .. first[r + 1], KV head-major, n_ch[r] a head */
    int first[ATTN_SPREAD_ROWS + 1];
    int n_ch[ATTN_SPREAD_ROWS];
} attn_job;

/* Layer l of the cache row r uses. */
static kv_view view_of(const kn_session *s, int r, int l, bool stateless) {
    const row_kv *rk = &s->rows_kv[r];
    const kn_session *o = rk->owner;
    size_t KR = (size_t)o->m->hp.n_head_kv * o->kv_row, W = (size_t)o->m->window;
    kv_view kv;
    if (stateless) {
        kv.k = o->sl_kv;
        kv.pos = o->sl_pos;
    } else {
        kv.k = (uint8_t *)o->kv + (size_t)l * 2 * KR * W;
        kv.pos = rk->slot_pos;
    }
    kv.v = kv.k + KR * W;
    kv.n_slots = rk->n_slots;
    return kv;
}

static int attn_chunks(int n_slots) {
    return n_slots > ATTN_CHUNK ? (n_slots + ATTN_CHUNK - 1) / ATTN_CHUNK : 1;
}

/* Row r's query heads of KV head kh over chunk c of its slots (all of them when it has one
 * chunk), into out[G][D] and, unless NULL, ml[G][2]. */
static void attn_chunk(const attn_job *j, int r, int kh, int c, float *sc, float *out,
                       float *ml) {
    kn_session *s = j->s;
    const kn_hparams *hp = &s->m->hp;
    int H = hp->n_head, Hkv = hp->n_head_kv, D = hp->head_dim, W = s->m->window;
    int group = H / Hkv, t0 = c * ATTN_CHUNK;
    kv_view kv = view_of(s, r, j->layer, j->stateless);
    int n = kv.n_slots - t0 < ATTN_CHUNK ? kv.n_slots - t0 : ATTN_CHUNK;
    const float *q = s->q + (size_t)r * H * D + (size_t)kh * group * D;
    size_t at = ((size_t)kh * W + (size_t)t0) * s->kv_row;
    if (s->kv_kind == KN_KV_Q8)
        s->k->attn_q8(q, kv.k + at, kv.v + at, kv.pos + t0, n, s->rows_pos[r], j->swa,
                      hp->attn_softcap, D, group, sc, out, ml);
    else if (s->kv_kind == KN_KV_F16)
        s->k->attn_f16(q, (const uint16_t *)(const void *)(kv.k + at),
                       (const uint16_t *)(const void *)(kv.v + at), kv.pos + t0, n,
                       s->rows_pos[r], j->swa, hp->attn_softcap, D, group, sc, out, ml);
    else
        s->k->attn(q, (const float *)(const void *)(kv.k + at),
                   (const float *)(const void *)(kv.v + at), kv.pos + t0, n, s->rows_pos[r],
                   j->swa, hp->attn_softcap, D, group, sc, out, ml);
}

static float *attn_out(const kn_session *s, int r, int kh) {
    const kn_hparams *hp = &s->m->hp;
    return s->xb + (size_t)r * hp->n_head * hp->head_dim +
           (size_t)kh * (hp->n_head / hp->n_head_kv) * hp->head_dim;
}

static void fold_start(float *out, float *st, int group, int D) {
    memset(out, 0, sizeof(float) * (size_t)group * D);
    for (int h = 0; h < group; h++) {
        st[2 * h] = -INFINITY;
        st[2 * h + 1] = 0.0f;
    }
}

/* Item u is the pair (row u / Hkv, KV head u % Hkv): every chunk of its slots in turn. One
 * pass over the cached rows serves the whole group of query heads. */
static void attn_item(void *ctx, int u, int n_items, int worker) {
    (void)n_items;
    const attn_job *j = ctx;
    kn_session *s = j->s;
    const kn_hparams *hp = &s->m->hp;
    int Hkv = hp->n_head_kv, D = hp->head_dim, group = hp->n_head / Hkv, r = u / Hkv,
        kh = u % Hkv;
    float *sc = s->scores + (size_t)worker * KN_ATTN_SCRATCH(group) * ATTN_CHUNK;
    float *out = attn_out(s, r, kh);
    int n_ch = attn_chunks(s->rows_kv[r].n_slots);
    if (n_ch == 1) {
        attn_chunk(j, r, kh, 0, sc, out, NULL);
        return;
    }
    float *part = s->attn_tmp + (size_t)worker * ((size_t)group * D + 4 * (size_t)group);
    float *ml = part + (size_t)group * D, *st = ml + 2 * group;
    fold_start(out, st, group, D);
    for (int c = 0; c < n_ch; c++) {
        attn_chunk(j, r, kh, c, sc, part, ml);
        kn_attn_fold(out, st, part, ml, D, group);
    }
}

/* Item u of a spread pass: one chunk of one (row, KV head), into attn_part (or straight to
 * the row's output when it has one chunk). */
static void attn_spread_item(void *ctx, int u, int n_items, int worker) {
    (void)n_items;
    const attn_job *j = ctx;
    kn_session *s = j->s;
    const kn_hparams *hp = &s->m->hp;
    int D = hp->head_dim, group = hp->n_head / hp->n_head_kv, r = 0;
    while (u >= j->first[r + 1]) r++;
    int rem = u - j->first[r], kh = rem / j->n_ch[r], c = rem % j->n_ch[r];
    float *sc = s->scores + (size_t)worker * KN_ATTN_SCRATCH(group) * ATTN_CHUNK;
    if (j->n_ch[r] == 1) attn_chunk(j, r, kh, 0, sc, attn_out(s, r, kh), NULL);
    else
        attn_chunk(j, r, kh, c, sc, s->attn_part + (size_t)u * group * D,
                   s->attn_ml + (size_t)u * 2 * group);
}

/* Attention of rows 0..n at layer `layer`, into xb. */
static void attention(kn_session *s, attn_job *j, int n) {
    const kn_hparams *hp = &s->m->hp;
    int H = hp->n_head, Hkv = hp->n_head_kv, D = hp->head_dim, group = H / Hkv;
    int max_slots = 0;
    for (int r = 0; r < n; r++)
        if (s->rows_kv[r].n_slots > max_slots) max_slots = s->rows_kv[r].n_slots;
    kn_pool *pool = n * H * max_slots * D < 16384 ? NULL : s->pool;
    if (!pool || n > s->spread_rows || n * Hkv >= 2 * s->n_threads || max_slots <= ATTN_CHUNK) {
        kn_pool_run(pool, attn_item, j, n * Hkv);
        return;
    }
    j->first[0] = 0;
    for (int r = 0; r < n; r++) {
        j->n_ch[r] = attn_chunks(s->rows_kv[r].n_slots);
        j->first[r + 1] = j->first[r] + Hkv * j->n_ch[r];
    }
    kn_pool_run(pool, attn_spread_item, j, j->first[n]);
    /* the fold, on this thread (worker 0's state; a few thousand multiplies a row) */
    float *st = s->attn_tmp + (size_t)group * D + 2 * (size_t)group;
    for (int r = 0; r < n; r++) {
        if (j->n_ch[r] == 1) continue;
        for (int kh = 0; kh < Hkv; kh++) {
            float *out = attn_out(s, r, kh);
            int u0 = j->first[r] + kh * j->n_ch[r];
            fold_start(out, st, group, D);
            for (int c = 0; c < j->n_ch[r]; c++)
                kn_attn_fold(out, st, s->attn_part + (size_t)(u0 + c) * group * D,
                             s->attn_ml + (size_t)(u0 + c) * 2 * group, D, group);
        }
    }
}

/* One cache row of n elements from F32: rounded to halves, or copied. */
static void store_kv(const kn_kernels *k, uint8_t *dst, const float *src, int n,
                     kn_kv_kind kind) {
    if (kind == KN_KV_F32) memcpy(dst, src, sizeof(float) * (size_t)n);
    else if (kind == KN_KV_F16) k->to_f16((uint16_t *)(void *)dst, src, n);
    else kn_quantize(KN_TYPE_Q8_0, src, dst, n); /* ggml's quantize_row_q8_0: amax / 127 */
}

/* The activation forms (bit 0: Q8_0, bit 1: Q8_K) that the matrices w[0..nw) want (none for
 * F32 / F16 weights). */
static unsigned act_forms(const kn_wmat *const *w, int nw) {
    unsigned f = 0;
    for (int i = 0; i < nw; i++) {
        if (kn_type_wants_q8k(w[i]->type)) f |= 2;
        else if (kn_type_wants_q8(w[i]->type)) f |= 1;
    }
    return f;
}

/* Quantizes row r of the activations (x, n_in floats) into the forms f, in place in s->act:
 * the quantizers work row by row, so a row's bits do not depend on the rows quantized with it. */
static void quantize_row(kn_session *s, unsigned f, const float *x, int r, int n_in) {
    if (!f) return;
    kn_act a = kn_act_row(&s->act, r);
    if (f & 1) s->k->quantize(&a, x, 1, n_in);
    if (f & 2) s->k->quantize_k(&a, x, 1, n_in);
}

/* RMSNorm in place over n_vec vectors of n (Gemma 3's q/k norms: one per head). */
static void norm_rows(float *x, const float *w, int n_vec, int n, float eps) {
    if (!w) return;
    for (int i = 0; i < n_vec; i++) kn_rmsnorm(x + (size_t)i * n, x + (size_t)i * n, w, n, eps);
}

static void add_bias(float *y, const float *b, int n) {
    if (b)
        for (int i = 0; i < n; i++) y[i] += b[i];
}

/* Gemma's GeGLU: g = gelu(g) * u with the tanh GELU (gelu_pytorch_tanh; llama.cpp's
 * ggml_gelu reads the same function from a table at f16 inputs). */
static void geglu(float *g, const float *u, int n) {
    for (int i = 0; i < n; i++) {
        float x = g[i];
        g[i] = 0.5f * x * (1.0f + tanhf(0.7978845608028654f * x * (1.0f + 0.044715f * x * x))) *
               u[i];
    }
}

/* The work of a pass between its products, one row at a time: nothing in it mixes rows, so a
 * row gives the same bits whichever thread runs it and whatever rows share its pass. With
 * several rows the pool runs them (the rows of a batched decode step or a prefill chunk would
 * otherwise leave every thread but the caller's waiting); a lone decode row runs in place. */
enum {
    ROW_EMBED,   /* embedding, RoPE's cos/sin; then layer 0's attention input */
    ROW_QKV,     /* biases, q/k norms, the query scale, RoPE, the row's key and value cached */
    ROW_WO,      /* the attention output quantized for wo */
    ROW_FFN,     /* x += attention (post-norm); the feed-forward input */
    ROW_DOWN,    /* SwiGLU / GeGLU, quantized for down */
    ROW_NEXT,    /* x += feed-forward (post-norm); the next layer's attention input */
    ROW_HEAD,    /* an output row's final norm, quantized for the classifier */
    ROW_CAP,     /* an output row's final logit soft-capping (Gemma 2) */
};

typedef struct rows_job {
    kn_session *s;
    const int32_t *ids;
    const int *out;           /* ROW_HEAD, ROW_CAP: item r is output row r (source row out[r]) */
    int layer, phase;
    bool stateless;
    unsigned forms;           /* what quantize_row writes in this phase */
    float qscale;
} rows_job;

/* Layer l's attention input for row r: RMSNorm into xb, quantized for Q, K and V. */
static void attn_input(kn_session *s, int l, int r, unsigned forms) {
    const kn_hparams *hp = &s->m->hp;
    int E = hp->n_embd;
    float *xb = s->xb + (size_t)r * E;
    kn_rmsnorm(xb, s->x + (size_t)r * E, s->layers[l].attn_norm, E, hp->rms_eps);
    quantize_row(s, forms, xb, r, E);
}

static void row_item(void *ctx, int r, int n_items, int worker) {
    (void)n_items;
    (void)worker;
    const rows_job *j = ctx;
    kn_session *s = j->s;
    const kn_model *m = s->m;
    const kn_hparams *hp = &m->hp;
    int E = hp->n_embd, H = hp->n_head, Hkv = hp->n_head_kv, D = hp->head_dim, F = hp->n_ff;
    int HD = H * D, KD = Hkv * D, RD = hp->rope_dim, l = j->layer;
    const kn_layer *L = l < hp->n_layer ? &s->layers[l] : NULL;
    float *x = s->x + (size_t)r * E;
    switch (j->phase) {
    case ROW_EMBED: {
        kn_dequantize(m->tok_embd.type, m->tok_embd.data + (size_t)j->ids[r] * m->tok_embd.row_bytes,
                      x, E);
        if (hp->gemma)
            for (int i = 0; i < E; i++) x[i] *= sqrtf((float)E);
        float *cs = s->cs + (size_t)r * RD;
        kn_rope_cossin(m->rope_inv_freq, RD, s->rows_pos[r], cs);
        /* LongRoPE's attention factor scales cos and sin (so Q.K by its square), as ggml's
         * mscale does */
        if (hp->rope_attn_factor != 1.0f)
            for (int i = 0; i < RD; i++) cs[i] *= hp->rope_attn_factor;
        if (s->cs_swa)
            kn_rope_cossin(m->rope_inv_freq_swa, RD, s->rows_pos[r], s->cs_swa + (size_t)r * RD);
        attn_input(s, 0, r, j->forms);
        break;
    }
    case ROW_QKV: {
        float *q = s->q + (size_t)r * HD, *kn = s->kn + (size_t)r * KD, *vn = s->vn + (size_t)r * KD;
        add_bias(q, L->bq, HD);
        add_bias(kn, L->bk, KD);
        add_bias(vn, L->bv, KD);
        /* Qwen3, Gemma 3: each head of Q and K normed before RoPE */
        norm_rows(q, L->q_norm, H, D, hp->rms_eps);
        norm_rows(kn, L->k_norm, Hkv, D, hp->rms_eps);
        if (j->qscale != 1.0f)
            for (int i = 0; i < HD; i++) q[i] *= j->qscale;
        if (kn_layer_has_rope(hp, l)) {
            int swa = kn_hparams_layer_window(hp, l);
            const float *cs = (swa > 0 && s->cs_swa ? s->cs_swa : s->cs) + (size_t)r * RD;
            kn_rope_apply(q, H, D, RD, hp->rope_neox, cs);
            kn_rope_apply(kn, Hkv, D, RD, hp->rope_neox, cs);
        }
        kv_view kv = view_of(s, r, l, j->stateless);
        size_t W = (size_t)m->window;
        for (int h = 0; h < Hkv; h++) {
            size_t at = ((size_t)h * W + (size_t)s->rows_slot[r]) * s->kv_row;
            store_kv(s->k, kv.k + at, kn + (size_t)h * D, D, s->kv_kind);
            store_kv(s->k, kv.v + at, vn + (size_t)h * D, D, s->kv_kind);
        }
        break;
    }
    case ROW_WO:
        quantize_row(s, j->forms, s->xb + (size_t)r * HD, r, HD);
        break;
    case ROW_FFN: {
        float *y = s->xb2 + (size_t)r * E, *xb = s->xb + (size_t)r * E;
        norm_rows(y, L->post_attn_norm, 1, E, hp->rms_eps);
        for (int i = 0; i < E; i++) x[i] += y[i];
        kn_rmsnorm(xb, x, L->ffn_norm, E, hp->rms_eps);
        quantize_row(s, j->forms, xb, r, E);
        break;
    }
    case ROW_DOWN: {
        float *g = s->hb + (size_t)r * F;
        if (hp->gemma) geglu(g, s->hb2 + (size_t)r * F, F);
        else s->k->swiglu(g, s->hb2 + (size_t)r * F, F);
        quantize_row(s, j->forms, g, r, F);
        break;
    }
    case ROW_NEXT: {
        float *y = s->xb2 + (size_t)r * E;
        norm_rows(y, L->post_ffn_norm, 1, E, hp->rms_eps);
        for (int i = 0; i < E; i++) x[i] += y[i];
        if (l + 1 < hp->n_layer) attn_input(s, l + 1, r, j->forms);
        break;
    }
    case ROW_HEAD: {
        float *xb = s->xb + (size_t)r * E;
        kn_rmsnorm(xb, s->x + (size_t)j->out[r] * E, m->output_norm, E, hp->rms_eps);
        quantize_row(s, j->forms, xb, r, E);
        break;
    }
    case ROW_CAP: {
        float *lg = s->logits + (size_t)r * hp->n_vocab, cap = hp->final_softcap;
        for (int i = 0; i < hp->n_vocab; i++) lg[i] = cap * tanhf(lg[i] / cap);
        break;
    }
    }
}

static void run_rows(kn_session *s, rows_job *j, int phase, int layer, unsigned forms, int n) {
    j->phase = phase;
    j->layer = layer;
    j->forms = forms;
    kn_pool_run(n > 1 ? s->pool : NULL, row_item, j, n);
}

/* Runs n rows (ids; rows_pos, rows_slot and rows_kv already set) through the model, into
 * each row's cache or, when stateless, the private one-layer view. The logits of rows
 * out[0..n_out) go to s->logits, one [V] row each (one row but in a batched pass). */
static void forward(kn_session *s, const int32_t *ids, int n, bool stateless, const int *out,
                    int n_out) {
    const kn_model *m = s->m;
    const kn_hparams *hp = &m->hp;
    int D = hp->head_dim;
    /* the kernels divide q.k by sqrt(D); a model with another factor has q scaled to it */
    float qscale = hp->attn_scale > 0 ? hp->attn_scale * sqrtf((float)D) : 1.0f;
    rows_job rj = {s, ids, out, 0, 0, stateless, 0, qscale};
    const kn_layer *L0 = &s->layers[0];
    const kn_wmat *qkv0[3] = {&L0->wq, &L0->wk, &L0->wv};
    run_rows(s, &rj, ROW_EMBED, 0, act_forms(qkv0, 3), n);
    for (int l = 0; l < hp->n_layer; l++) {
        const kn_layer *L = &s->layers[l];
        /* attention: one quantization of the normed input (done by the phase before) serves
         * Q, K and V */
        {
            const kn_wmat *w3[3] = {&L->wq, &L->wk, &L->wv};
            float *y3[3] = {s->q, s->kn, s->vn};
            kn_matmul_multi(s->pool, s->k, 3, w3, s->xb, &s->act, n, y3);
        }
        run_rows(s, &rj, ROW_QKV, l, 0, n);
        attn_job aj = {s, l, stateless, kn_hparams_layer_window(hp, l), {0}, {0}};
        attention(s, &aj, n);
        const kn_wmat *wo = &L->wo;
        run_rows(s, &rj, ROW_WO, l, act_forms(&wo, 1), n);
        kn_matmul(s->pool, s->k, wo, s->xb, &s->act, n, s->xb2, wo->n_out);

        /* feed-forward */
        const kn_wmat *w2[2] = {&L->gate, &L->up};
        run_rows(s, &rj, ROW_FFN, l, act_forms(w2, 2), n);
        {
            float *y2[2] = {s->hb, s->hb2};
            kn_matmul_multi(s->pool, s->k, 2, w2, s->xb, &s->act, n, y2);
        }
        const kn_wmat *down = &L->down;
        run_rows(s, &rj, ROW_DOWN, l, act_forms(&down, 1), n);
        kn_matmul(s->pool, s->k, down, s->hb, &s->act, n, s->xb2, down->n_out);
        unsigned next = 0;
        if (l + 1 < hp->n_layer) {
            const kn_layer *N = &s->layers[l + 1];
            const kn_wmat *qkv[3] = {&N->wq, &N->wk, &N->wv};
            next = act_forms(qkv, 3);
        }
        run_rows(s, &rj, ROW_NEXT, l, next, n);
    }
    /* Only the rows whose logits are asked for go through the classifier. */
    run_rows(s, &rj, ROW_HEAD, hp->n_layer, act_forms(&s->output, 1), n_out);
    kn_matmul(s->pool, s->k, s->output, s->xb, &s->act, n_out, s->logits, s->output->n_out);
    if (hp->final_softcap > 0) run_rows(s, &rj, ROW_CAP, hp->n_layer, 0, n_out);
}

kiln_status kn_session_run(kn_session *s, const kn_graph_call *c, const float **logits,
                           kiln_error *err) {
    const kn_model *m = s->m;
    int T = c->graph == KN_GRAPH_PREFILL ? m->chunk : c->graph == KN_GRAPH_DECODE ? 1 : m->window;
    if (c->n < 1 || c->n > T)
        return kn_fail(err, KILN_ERR_INTERNAL, "cpu: %d rows in a graph of %d", c->n, T);
    int last = c->n - 1;
    if (c->graph == KN_GRAPH_STATELESS) {
        if (!s->p.stateless)
            return kn_fail(err, KILN_ERR_INVALID_ARG,
                           "stateless: the session was created without stateless buffers");
        for (int r = 0; r < c->n; r++) {
            s->rows_pos[r] = r;
            s->rows_slot[r] = r;
            s->sl_pos[r] = r;
            s->rows_kv[r] = (row_kv){s, NULL, c->n};
        }
        forward(s, c->ids, c->n, true, &last, 1);
    } else {
        /* Padded rows are skipped: nothing reads them, and the output equals a full [1,C]
         * evaluation with the padding masked. */
        memcpy(s->rows_pos, c->pos, sizeof(int32_t) * (size_t)c->n);
        memcpy(s->rows_slot, c->slot, sizeof(int32_t) * (size_t)c->n);
        for (int r = 0; r < c->n; r++) s->rows_kv[r] = (row_kv){s, c->slot_pos, c->n_slots};
        forward(s, c->ids, c->n, false, &last, 1);
    }
    *logits = s->logits;
    return KILN_OK;
}

int kn_session_batch_cap(const kn_session *s) { return s->batch_cap; }
int kn_session_batch_rows(const kn_session *s) { return s->batch_cap > 1 ? s->max_rows : 1; }
const float *kn_session_logits(const kn_session *s) { return s->logits; }

bool kn_session_batches_with(const kn_session *lead, const kn_session *o) {
    return o->m == lead->m && o->kv_kind == lead->kv_kind && o->k == lead->k;
}

kiln_status kn_session_run_batch(kn_session *lead, kn_session *const *ss,
                                 const kn_graph_call *const *calls, int n, kiln_error *err) {
    if (n < 1 || n > lead->batch_cap)
        return kn_fail(err, KILN_ERR_INTERNAL, "cpu: a batch of %d steps (at most %d)", n,
                       lead->batch_cap);
    int rows = 0, out[KN_MAX_BATCH];
    for (int i = 0; i < n; i++) {
        const kn_graph_call *c = calls[i];
        int T = c->graph == KN_GRAPH_PREFILL ? lead->m->chunk : 1;
        if ((c->graph != KN_GRAPH_DECODE && c->graph != KN_GRAPH_PREFILL) || c->n < 1 ||
            c->n > T || !kn_session_batches_with(lead, ss[i]) || (ss[i] == lead) != (i == 0))
            return kn_fail(err, KILN_ERR_INTERNAL, "cpu: step %d of a batch is not a decode step "
                           "or prefill chunk of a like session (step 0 is the lead's own)", i);
        if (rows + c->n > lead->max_rows)
            return kn_fail(err, KILN_ERR_INTERNAL, "cpu: a batch of more than %d rows",
                           lead->max_rows);
        memcpy(lead->row_ids + rows, c->ids, sizeof(int32_t) * (size_t)c->n);
        memcpy(lead->rows_pos + rows, c->pos, sizeof(int32_t) * (size_t)c->n);
        memcpy(lead->rows_slot + rows, c->slot, sizeof(int32_t) * (size_t)c->n);
        for (int r = 0; r < c->n; r++)
            lead->rows_kv[rows + r] = (row_kv){ss[i], c->slot_pos, c->n_slots};
        rows += c->n;
        out[i] = rows - 1;
    }
    forward(lead, lead->row_ids, rows, false, out, n);
    size_t V = (size_t)lead->m->hp.n_vocab;
    /* row 0 is the lead's own: its logits are already in place */
    for (int i = 1; i < n; i++)
        memcpy(ss[i]->logits, lead->logits + (size_t)i * V, sizeof(float) * V);
    return KILN_OK;
}
