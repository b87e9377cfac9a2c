/* driver.c — tokens to fixed-shape graph calls (see driver.h). */
#include "backends/driver.h"

#include <string.h>

kiln_status kn_driver_init(kn_driver *d, kn_backend *b, const kn_contract *c, int n_vocab,
                           bool stateless, bool slide, kiln_error *err) {
    memset(d, 0, sizeof *d);
    d->b = b;
    d->W = c->window;
    d->C = c->chunk;
    d->S = c->sink;
    d->V = n_vocab;
    d->stateless = stateless;
    d->slide = slide;
    size_t T = (size_t)(d->W > d->C ? d->W : d->C);
    d->slot_pos = kn_malloc(sizeof(int32_t) * (size_t)d->W);
    d->ids = kn_calloc(T, sizeof(int32_t));
    d->pos = kn_calloc(T, sizeof(int32_t));
    d->slot = kn_calloc(T, sizeof(int32_t));
    d->win = kn_calloc((size_t)d->W, sizeof(int32_t));
    if (!d->slot_pos || !d->ids || !d->pos || !d->slot || !d->win) {
        kn_driver_free(d);
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory for a %d-slot window", c->window);
    }
    for (int s = 0; s < d->W; s++) d->slot_pos[s] = -1;
    return KILN_OK;
}

void kn_driver_free(kn_driver *d) {
    kn_free(d->slot_pos);
    kn_free(d->ids);
    kn_free(d->pos);
    kn_free(d->slot);
    kn_free(d->win);
    memset(d, 0, sizeof *d);
}

void kn_driver_reset(kn_driver *d) {
    for (int s = 0; s < d->W; s++) d->slot_pos[s] = -1;
    d->n_slots = 0;
    d->n_win = 0;
    d->b->ops->reset(d->b);
}

void kn_driver_idle(kn_driver *d) {
    if (d->b->ops->idle) d->b->ops->idle(d->b);
}

bool kn_driver_fits(const kn_driver *d, int32_t pos) {
    if (d->slide) return true;
    return d->stateless ? d->n_win < d->W : pos < d->W;
}

static kiln_status check(const kn_driver *d, const int32_t *ids, int n, int32_t pos0,
                         kiln_error *err) {
    if (n < 1) return kn_fail(err, KILN_ERR_INVALID_ARG, "no tokens to feed");
    if (pos0 < 0 || pos0 > INT32_MAX - n)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "position %d is out of range", (int)pos0);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= d->V)
            return kn_fail(err, KILN_ERR_INVALID_ARG,
                           "token id %d is outside the vocabulary (%d)", (int)ids[i], d->V);
    if (!d->slide && (d->stateless ? n > d->W - d->n_win : pos0 + n > d->W))
        return kn_fail(err, KILN_ERR_INVALID_ARG,
                       "%d tokens at position %d do not fit the window of %d (--overflow slide "
                       "rolls it)", n, (int)pos0, d->W);
    return KILN_OK;
}

/* One kv-graph call over rows [0, n) already staged in d->ids / d->pos. */
static kiln_status run_kv(kn_driver *d, kn_graph_kind g, int n, const float **logits,
                          kiln_error *err) {
    for (int r = 0; r < n; r++) {
        int s = kn_contract_slot(d->W, d->S, d->pos[r]);
        d->slot[r] = s;
        d->slot_pos[s] = d->pos[r];
        if (s + 1 > d->n_slots) d->n_slots = s + 1;
    }
    kn_graph_call call = {g, n, d->ids, d->pos, d->slot, d->slot_pos, d->n_slots};
    return d->b->ops->run(d->b, &call, logits, err);
}

static kiln_status run_window(kn_driver *d, const float **logits, kiln_error *err) {
    for (int i = 0; i < d->W; i++) {
        d->ids[i] = i < d->n_win ? d->win[i] : 0;
        d->pos[i] = i < d->n_win ? i : d->n_win - 1;
    }
    kn_graph_call call = {KN_GRAPH_STATELESS, d->n_win, d->ids, d->pos, NULL, NULL, 0};
    return d->b->ops->run(d->b, &call, logits, err);
}

/* Stateless: tokens join the window; past W the oldest after the S sinks make room (a prompt
 * longer than the whole window keeps its last W tokens). */
static void window_push(kn_driver *d, const int32_t *ids, int n) {
    if (n >= d->W) {
        memcpy(d->win, ids + (n - d->W), sizeof(int32_t) * (size_t)d->W);
        d->n_win = d->W;
        return;
    }
    for (int i = 0; i < n; i++) {
        if (d->n_win == d->W) {
            memmove(d->win + d->S, d->win + d->S + 1, sizeof(int32_t) * (size_t)(d->W - d->S - 1));
            d->n_win--;
        }
        d->win[d->n_win++] = ids[i];
    }
}

kiln_status kn_driver_feed(kn_driver *d, const int32_t *ids, int n, int32_t pos0,
                           const float **logits, kiln_error *err) {
    kiln_status s = check(d, ids, n, pos0, err);
    if (s) return s;
    if (d->stateless) {
        window_push(d, ids, n);
        return run_window(d, logits, err);
    }
    const int C = d->C;
    for (int at = 0; at < n; at += C) {
        int k = n - at < C ? n - at : C;
        /* A whole [C] chunk, the tail padded, exactly as a fixed-shape device wants it. */
        for (int i = 0; i < C; i++) {
            d->ids[i] = i < k ? ids[at + i] : 0;
            d->pos[i] = pos0 + at + (i < k ? i : k - 1);
        }
        if ((s = run_kv(d, KN_GRAPH_PREFILL, k, logits, err))) return s;
    }
    return KILN_OK;
}

kiln_status kn_driver_step(kn_driver *d, int32_t id, int32_t pos, const float **logits,
                           kiln_error *err) {
    kiln_status s = check(d, &id, 1, pos, err);
    if (s) return s;
    if (d->stateless) {
        window_push(d, &id, 1);
        return run_window(d, logits, err);
    }
    d->ids[0] = id;
    d->pos[0] = pos;
    return run_kv(d, KN_GRAPH_DECODE, 1, logits, err);
}
