/* bench.c — what `kiln bench --floor` needs beside the timing itself: the bytes of weights a
 * decode step reads, and the machine's read bandwidth measured the way a decode step reads. */
#include "kernels/kernels.h"
#include "runtime/runtime.h"

void kiln_model_decode_bytes(const kiln_model *km, uint64_t *stored, uint64_t *resident) {
    kn_model_decode_bytes(km->m, stored, resident);
}

uint64_t kiln_model_kv_bytes(const kiln_model *km, kiln_kv_type kv, int n_ctx) {
    return kn_model_kv_step_bytes(km->m, kn_kv_kind_of(kv), n_ctx);
}

kiln_status kiln_read_bandwidth(int threads, size_t bytes, double *gbs, kiln_error *err) {
    kn_error_clear(err);
    *gbs = 0;
    if (threads < 1) return kn_fail(err, KILN_ERR_INVALID_ARG, "threads must be >= 1");
    kn_pool *pool = threads > 1 ? kn_pool_new(threads) : NULL;
    if (threads > 1 && !pool)
        return kn_fail(err, KILN_ERR_NOMEM, "cannot start %d threads", threads);
    /* best of 5: on a shared machine one pass often loses a core to someone else */
    bool ok = kn_read_bandwidth(pool, bytes ? bytes : (size_t)1 << 30, 5, gbs);
    kn_pool_free(pool);
    return ok ? KILN_OK : kn_fail(err, KILN_ERR_NOMEM, "read bandwidth: out of memory");
}
