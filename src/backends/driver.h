/* driver.h — the static-graph driver: how a stream of tokens becomes fixed-shape graph calls,
 * written once for every device.
 *
 * The generation loop speaks in tokens at positions ("these n prompt tokens at positions
 * pos0.., then this one token"); a device only runs the contract's graphs with their fixed
 * shapes (backend.h). Between the two the driver:
 *   - checks every id against the vocabulary and every position, once;
 *   - cuts a prompt into ceil(n / C) prefill calls of [1,C], the last one padded;
 *   - keeps the KV slot table: a token at position p goes to slot kn_contract_slot (slot p
 *     while p < W, then the S sinks stay and the rest rolls as a ring), and slot_pos[s], the
 *     position each slot holds, is the mask every device builds its attention from;
 *   - applies the overflow policy: with --overflow stop nothing is fed past W (the loop asks
 *     kn_driver_room first); with slide the ring takes over;
 *   - in stateless mode keeps the [1,W] window itself (a prompt longer than W keeps its last W
 *     tokens; a full window drops the oldest token after the S sinks) and runs the whole window
 *     each step.
 * Everything is sized at init from the contract; feeding tokens allocates nothing. */
#ifndef KN_DRIVER_H
#define KN_DRIVER_H

#include "backends/backend.h"

typedef struct kn_driver {
    kn_backend *b;
    int W, C, S, V;
    bool stateless;
    bool slide;               /* --overflow slide */
    int32_t *slot_pos;        /* [W] position held by each slot, -1 = empty */
    int n_slots;              /* slots >= n_slots are empty */
    int32_t *ids, *pos, *slot;/* [max(C, W)] staging of one call */
    int32_t *win;             /* [W] stateless: the window, tokens at positions 0..n_win-1 */
    int n_win;
} kn_driver;

kiln_status kn_driver_init(kn_driver *d, kn_backend *b, const kn_contract *c, int n_vocab,
                           bool stateless, bool slide, kiln_error *err);
void kn_driver_free(kn_driver *d);
/* Forgets every token: empty slot table, empty window, and the device's cache. */
void kn_driver_reset(kn_driver *d);

/* The generation ended (its device may stop expecting steps from this session). */
void kn_driver_idle(kn_driver *d);

/* Whether a token at position pos fits: always with slide; with stop, while pos < W (kv) or
 * the window has room (stateless). */
bool kn_driver_fits(const kn_driver *d, int32_t pos);

/* Feeds n tokens at positions pos0, pos0+1, ...; *logits [V] predict the token after the last.
 * kv mode: the cache keeps what it holds below pos0 (a chat's earlier turns); ceil(n / C)
 * prefill calls. Stateless: the tokens join the window (positions are the window's own,
 * 0..n_win-1); one window call. KILN_ERR_INVALID_ARG for an empty feed, an id outside the
 * vocabulary, a negative position, or (stop policy) tokens past the window. */
kiln_status kn_driver_feed(kn_driver *d, const int32_t *ids, int n, int32_t pos0,
                           const float **logits, kiln_error *err);
/* One token at position pos: a decode call, or (stateless) the window grown by one. */
kiln_status kn_driver_step(kn_driver *d, int32_t id, int32_t pos, const float **logits,
                           kiln_error *err);

#endif
