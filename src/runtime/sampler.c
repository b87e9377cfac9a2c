/* sampler.c — see sampler.h. */
#include "runtime/sampler.h"

#include <math.h>
#include <string.h>

#include "base/base.h"

#define RECENT_MAX 1024

kiln_status kn_sampler_init(kn_sampler *s, int n_vocab, const kiln_sampling *p, kiln_error *err) {
    memset(s, 0, sizeof *s);
    s->n_vocab = n_vocab;
    s->ids = kn_malloc((size_t)n_vocab * sizeof *s->ids);
    s->vals = kn_malloc((size_t)n_vocab * sizeof *s->vals);
    s->work = kn_malloc((size_t)n_vocab * sizeof *s->work);
    s->recent = kn_malloc(RECENT_MAX * sizeof *s->recent);
    if (!s->ids || !s->vals || !s->work || !s->recent) {
        kn_sampler_free(s);
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory for the sampler");
    }
    kn_sampler_reset(s, p);
    return KILN_OK;
}

void kn_sampler_free(kn_sampler *s) {
    kn_free(s->ids);
    kn_free(s->vals);
    kn_free(s->work);
    kn_free(s->recent);
    memset(s, 0, sizeof *s);
}

void kn_sampler_reset(kn_sampler *s, const kiln_sampling *p) {
    s->p = *p;
    if (s->p.repeat_last_n < 0) s->p.repeat_last_n = 0;
    if (s->p.repeat_last_n > RECENT_MAX) s->p.repeat_last_n = RECENT_MAX;
    /* splitmix64 state; a zero seed is as good as any other */
    s->rng = p->seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    s->n_recent = s->recent_pos = 0;
}

void kn_sampler_accept(kn_sampler *s, int32_t id) {
    if (!s->p.repeat_last_n) return;
    s->recent[s->recent_pos] = id;
    s->recent_pos = (s->recent_pos + 1) % s->p.repeat_last_n;
    if (s->n_recent < s->p.repeat_last_n) s->n_recent++;
}

static uint64_t next_u64(kn_sampler *s) {
    uint64_t z = (s->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Moves the k largest of vals[0..n) (with their ids) to the front, in descending order. A
 * partial selection sort is O(n k); fine for the small k sampling uses, and k = n falls back to
 * a full heap-free insertion pass only over what remains after top-k/top-p trimming. */
static void sort_desc(int32_t *ids, float *vals, int n, int k) {
    for (int i = 0; i < k && i < n; i++) {
        int best = i;
        for (int j = i + 1; j < n; j++)
            if (vals[j] > vals[best]) best = j;
        float tv = vals[i];
        vals[i] = vals[best];
        vals[best] = tv;
        int32_t ti = ids[i];
        ids[i] = ids[best];
        ids[best] = ti;
    }
}

int32_t kn_sampler_sample(kn_sampler *s, const float *logits) {
    const kiln_sampling *p = &s->p;
    const int V = s->n_vocab;
    const float *x = logits;
    if (p->repeat_penalty != 1.0f && p->repeat_penalty > 0 && s->n_recent) {
        memcpy(s->work, logits, (size_t)V * sizeof *s->work);
        for (int i = 0; i < s->n_recent; i++) {
            int32_t id = s->recent[i];
            if (id < 0 || id >= V) continue;
            /* llama.cpp's rule, applied once per distinct token */
            bool seen = false;
            for (int j = 0; j < i; j++) seen |= s->recent[j] == id;
            if (seen) continue;
            float *v = &s->work[id];
            *v = *v > 0 ? *v / p->repeat_penalty : *v * p->repeat_penalty;
        }
        x = s->work;
    }
    if (!(p->temperature > 0)) return argmax(x, V);

    int n = V;
    for (int i = 0; i < V; i++) {
        s->ids[i] = i;
        s->vals[i] = x[i];
    }
    /* top-k: without it the full vocabulary is sorted once more below, which is O(V^2) with the
     * selection sort, so an unbounded k is capped at a size that keeps a step cheap. */
    int k = p->top_k > 0 && p->top_k < V ? p->top_k : (V < 512 ? V : 512);
    sort_desc(s->ids, s->vals, n, k);
    n = k;
    /* temperature + softmax over the survivors */
    float mx = s->vals[0];
    double sum = 0;
    for (int i = 0; i < n; i++) {
        s->vals[i] = expf((s->vals[i] - mx) / p->temperature);
        sum += s->vals[i];
    }
    for (int i = 0; i < n; i++) s->vals[i] = (float)(s->vals[i] / sum);
    if (p->top_p > 0 && p->top_p < 1) {
        double c = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            c += s->vals[i];
            if (c >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    if (p->min_p > 0) {
        float cut = p->min_p * s->vals[0];
        int keep = 1;
        while (keep < n && s->vals[keep] >= cut) keep++;
        n = keep;
    }
    double total = 0;
    for (int i = 0; i < n; i++) total += s->vals[i];
    double r = (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0) * total;
    for (int i = 0; i < n; i++) {
        r -= s->vals[i];
        if (r < 0) return s->ids[i];
    }
    return s->ids[n - 1];
}
