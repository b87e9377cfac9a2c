/* contract.c — the static contract: graphs, their inputs and outputs, all fixed shapes. */
#include "model/contract.h"

#include <string.h>

static kn_io io(const char *name, const char *dtype, int rank, int64_t d0, int64_t d1, int64_t d2,
                int64_t d3, int64_t d4) {
    kn_io x = {name, dtype, rank, {d0, d1, d2, d3, d4}};
    return x;
}

kiln_status kn_contract_build(const kn_hparams *hp, int window, int chunk, int sink,
                              kn_contract *c, kiln_error *err) {
    memset(c, 0, sizeof *c);
    c->window = window;
    c->chunk = chunk;
    c->batch = 1;
    c->sink = sink;
    c->kv_dtype = "f32";
    const int64_t W = window, C = chunk, L = hp->n_layer, H = hp->n_head_kv, D = hp->head_dim,
                  V = hp->n_vocab;

    /* prefill: C tokens at once against a W-slot cache. The additive mask row of token i covers
     * the W cache slots followed by the C tokens of the chunk, so padding and causality are data,
     * never shape. logit_index picks the last real token of the chunk. A model whose layers
     * differ in window (Gemma) has two masks of that shape: attention_mask for the global
     * layers, sliding_mask (also masking keys a window or more behind) for the sliding ones;
     * both are filled from the slot table by position, so --overflow slide stays exact. */
    kn_graph *g = &c->graphs[c->n_graphs++];
    g->name = "prefill";
    g->in[g->n_in++] = io("input_ids", "i32", 2, 1, C, 0, 0, 0);
    g->in[g->n_in++] = io("position_ids", "i32", 2, 1, C, 0, 0, 0);
    g->in[g->n_in++] = io("attention_mask", "f32", 4, 1, 1, C, W + C, 0);
    if (kn_hparams_two_masks(hp))
        g->in[g->n_in++] = io("sliding_mask", "f32", 4, 1, 1, C, W + C, 0);
    g->in[g->n_in++] = io("logit_index", "i32", 1, 1, 0, 0, 0, 0);
    g->in[g->n_in++] = io("past_kv", c->kv_dtype, 5, L, 2, H, W, D);
    g->out[g->n_out++] = io("logits", "f32", 2, 1, V, 0, 0, 0);
    g->out[g->n_out++] = io("new_kv", c->kv_dtype, 5, L, 2, H, C, D);

    g = &c->graphs[c->n_graphs++];
    g->name = "decode";
    g->in[g->n_in++] = io("input_ids", "i32", 2, 1, 1, 0, 0, 0);
    g->in[g->n_in++] = io("position_ids", "i32", 2, 1, 1, 0, 0, 0);
    g->in[g->n_in++] = io("attention_mask", "f32", 4, 1, 1, 1, W + 1, 0);
    if (kn_hparams_two_masks(hp))
        g->in[g->n_in++] = io("sliding_mask", "f32", 4, 1, 1, 1, W + 1, 0);
    g->in[g->n_in++] = io("past_kv", c->kv_dtype, 5, L, 2, H, W, D);
    g->out[g->n_out++] = io("logits", "f32", 2, 1, V, 0, 0, 0);
    g->out[g->n_out++] = io("new_kv", c->kv_dtype, 5, L, 2, H, 1, D);

    /* stateless: the old scheme. W tokens padded with pad_token_id, mask 1 for real tokens;
     * the logits are those of the last real token. No cache in or out. */
    g = &c->graphs[c->n_graphs++];
    g->name = "stateless";
    g->in[g->n_in++] = io("input_ids", "i32", 2, 1, W, 0, 0, 0);
    g->in[g->n_in++] = io("attention_mask", "i32", 2, 1, W, 0, 0, 0);
    g->out[g->n_out++] = io("logits", "f32", 2, 1, V, 0, 0, 0);
    return kn_contract_validate(c, err);
}

kiln_status kn_contract_validate(const kn_contract *c, kiln_error *err) {
    if (c->window < 1 || c->window > (1 << 20))
        return kn_fail(err, KILN_ERR_INVALID_ARG, "window %d must be in [1, 1048576]", c->window);
    if (c->chunk < 1 || c->chunk > c->window)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "chunk %d must be in [1, window=%d]", c->chunk,
                       c->window);
    if (c->sink < 0 || c->sink >= c->window)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "sink %d must be in [0, window=%d)", c->sink,
                       c->window);
    if (c->batch != 1)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "batch %d: only batch 1 is supported", c->batch);
    for (int gi = 0; gi < c->n_graphs; gi++) {
        const kn_graph *g = &c->graphs[gi];
        for (int k = 0; k < g->n_in + g->n_out; k++) {
            const kn_io *x = k < g->n_in ? &g->in[k] : &g->out[k - g->n_in];
            if (x->rank < 1 || x->rank > KN_MAX_RANK)
                return kn_fail(err, KILN_ERR_INTERNAL, "graph %s: %s has rank %d", g->name,
                               x->name, x->rank);
            for (int d = 0; d < x->rank; d++)
                if (x->shape[d] <= 0)
                    return kn_fail(err, KILN_ERR_INVALID_ARG,
                                   "graph %s: %s dimension %d is %lld: a static contract has "
                                   "only positive fixed dimensions",
                                   g->name, x->name, d, (long long)x->shape[d]);
        }
    }
    return KILN_OK;
}

kiln_status kn_contract_from_gguf(const kn_gguf *g, const kn_hparams *hp, kn_contract *c,
                                  kiln_error *err) {
    uint32_t w, ch, s = 0;
    if (!kn_gguf_get_u32(g, "kiln.contract.window", &w) ||
        !kn_gguf_get_u32(g, "kiln.contract.chunk", &ch))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: no static contract (kiln.contract.*): not an "
                       "offering", g->path);
    kn_gguf_get_u32(g, "kiln.contract.sink", &s);
    if (w > (1u << 20) || ch > w || s >= w)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: inconsistent contract (window %u, chunk %u, "
                       "sink %u)", g->path, w, ch, s);
    kiln_status st = kn_contract_build(hp, (int)w, (int)ch, (int)s, c, err);
    if (st) return kn_fail_prefix(err, "%s: ", g->path);
    return KILN_OK;
}

int kn_contract_slot(int window, int sink, int64_t pos) {
    if (pos < window) return (int)pos;
    return sink + (int)((pos - sink) % (window - sink));
}

void kn_contract_graphs_json(const kn_contract *c, kn_buf *b) {
    kn_buf_append(b, "[", 1);
    for (int gi = 0; gi < c->n_graphs; gi++) {
        const kn_graph *g = &c->graphs[gi];
        kn_buf_printf(b, "%s{\"name\": \"%s\", \"inputs\": [", gi ? ", " : "", g->name);
        for (int k = 0; k < g->n_in + g->n_out; k++) {
            const kn_io *x = k < g->n_in ? &g->in[k] : &g->out[k - g->n_in];
            if (k == g->n_in) kn_buf_append(b, "], \"outputs\": [", 15);
            else if (k) kn_buf_append(b, ", ", 2);
            kn_buf_printf(b, "{\"name\": \"%s\", \"dtype\": \"%s\", \"shape\": [", x->name,
                          x->dtype);
            for (int d = 0; d < x->rank; d++)
                kn_buf_printf(b, "%s%lld", d ? ", " : "", (long long)x->shape[d]);
            kn_buf_append(b, "]}", 2);
        }
        kn_buf_append(b, "]}", 2);
    }
    kn_buf_append(b, "]", 1);
}

void kn_contract_to_gguf(const kn_contract *c, kn_gguf_writer *w) {
    kn_gguf_set_u32(w, "kiln.format_version", KN_FORMAT_VERSION);
    kn_gguf_set_u32(w, "kiln.contract.window", (uint32_t)c->window);
    kn_gguf_set_u32(w, "kiln.contract.chunk", (uint32_t)c->chunk);
    kn_gguf_set_u32(w, "kiln.contract.batch", (uint32_t)c->batch);
    kn_gguf_set_u32(w, "kiln.contract.sink", (uint32_t)c->sink);
    kn_gguf_set_str(w, "kiln.contract.kv_dtype", c->kv_dtype);
    kn_buf b = {0};
    kn_contract_graphs_json(c, &b);
    if (b.oom) kn_gguf_set_strn(w, "kiln.contract.graphs", NULL, 0);
    else kn_gguf_set_strn(w, "kiln.contract.graphs", b.data, b.len);
    kn_buf_free(&b);
}
