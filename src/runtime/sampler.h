/* sampler.h — next-token selection: repetition penalty, then greedy, or top-k -> temperature ->
 * top-p -> min-p -> a seeded draw (llama.cpp's order). Buffers are sized once for the vocabulary,
 * so sampling allocates nothing per token. */
#ifndef KN_SAMPLER_H
#define KN_SAMPLER_H

#include <stdint.h>

#include "kiln.h"

typedef struct kn_sampler {
    kiln_sampling p;
    int n_vocab;
    int32_t *ids;       /* [V] candidate ids */
    float *vals;        /* [V] candidate logits, then probabilities */
    float *work;        /* [V] penalized copy of the logits */
    uint64_t rng;
    int32_t *recent;    /* ring of the last repeat_last_n tokens */
    int n_recent, recent_pos;
} kn_sampler;

kiln_status kn_sampler_init(kn_sampler *s, int n_vocab, const kiln_sampling *p, kiln_error *err);
void kn_sampler_free(kn_sampler *s);
/* Restarts the RNG from the seed and forgets the recent tokens. */
void kn_sampler_reset(kn_sampler *s, const kiln_sampling *p);
void kn_sampler_accept(kn_sampler *s, int32_t id);
int32_t kn_sampler_sample(kn_sampler *s, const float *logits);

#endif
