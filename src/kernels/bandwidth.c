/* bandwidth.c — how fast the pool's threads can stream memory into the cores.
 *
 * A decode step reads every weight matrix once and does little arithmetic per byte, so the
 * read bandwidth bounds it: tokens/s <= bandwidth / bytes of weights per token. This probe
 * measures that bandwidth the way a decode step consumes it: the same thread pool, items
 * handed out the same way, plain sequential reads of a buffer far larger than the caches. */
#include <string.h>

#include "base/base.h"
#include "kernels/kernels.h"

#define ITEM_BYTES ((size_t)4 << 20)   /* 4 MiB per item: many items per thread, cheap to take */
#define SLOT_WORDS 8                   /* one cache line per worker's checksum */

typedef struct bw_job {
    const uint64_t *buf;
    size_t words;                       /* total */
    uint64_t *sums;                     /* [workers][SLOT_WORDS] */
} bw_job;

/* Eight independent sums per line: no dependency chain limits the loads, and the compiler is
 * free to vectorize; the result is kept so the reads cannot be optimized away. */
static void bw_item(void *ctx, int i, int n, int worker) {
    (void)n;
    const bw_job *j = ctx;
    size_t w0 = (size_t)i * (ITEM_BYTES / 8), w1 = w0 + ITEM_BYTES / 8;
    if (w1 > j->words) w1 = j->words;
    uint64_t a[8] = {0};
    const uint64_t *p = j->buf;
    for (size_t w = w0; w + 8 <= w1; w += 8)
        for (int k = 0; k < 8; k++) a[k] += p[w + k];
    j->sums[worker * SLOT_WORDS] += a[0] ^ a[1] ^ a[2] ^ a[3] ^ a[4] ^ a[5] ^ a[6] ^ a[7];
}

bool kn_read_bandwidth(kn_pool *pool, size_t bytes, int passes, double *gbs) {
    *gbs = 0;
    bytes &= ~(ITEM_BYTES - 1);
    if (bytes < ITEM_BYTES || passes < 1) return false;
    int nth = kn_pool_size(pool);
    uint64_t *buf = kn_malloc(bytes);
    uint64_t *sums = kn_calloc((size_t)nth * SLOT_WORDS, sizeof *sums);
    if (!buf || !sums) {
        kn_free(buf);
        kn_free(sums);
        return false;
    }
    memset(buf, 0x5a, bytes); /* fault every page in before timing */
    bw_job j = {buf, bytes / 8, sums};
    int n_items = (int)(bytes / ITEM_BYTES);
    double best = 0;
    for (int r = 0; r < passes; r++) {
        double t0 = kn_now_seconds();
        kn_pool_run(pool, bw_item, &j, n_items);
        double dt = kn_now_seconds() - t0;
        if (dt > 0 && (double)bytes / dt > best) best = (double)bytes / dt;
    }
    /* the sums are read through a volatile, so the compiler must keep every load */
    volatile uint64_t sink = 0;
    for (int t = 0; t < nth; t++) sink ^= sums[t * SLOT_WORDS];
    (void)sink;
    kn_free(buf);
    kn_free(sums);
    *gbs = best / 1e9;
    return true;
}
