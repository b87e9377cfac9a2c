/* cpu.c — the native CPU backend: the engine session behind the backend interface. */
#include <stdio.h>

#include "backends/backend.h"

typedef struct cpu_backend {
    kn_backend base;
    kn_session *s;
} cpu_backend;

static kiln_status cpu_prefill(kn_backend *b, const int32_t *ids, int n, int pos0,
                               const float **logits, kiln_error *err) {
    return kn_session_prefill_all(((cpu_backend *)b)->s, ids, n, pos0, logits, err);
}

static kiln_status cpu_decode(kn_backend *b, int32_t id, int32_t pos, const float **logits,
                              kiln_error *err) {
    return kn_session_decode(((cpu_backend *)b)->s, id, pos, logits, err);
}

static kiln_status cpu_stateless(kn_backend *b, const int32_t *ids, int n_valid,
                                 const float **logits, kiln_error *err) {
    return kn_session_stateless(((cpu_backend *)b)->s, ids, n_valid, logits, err);
}

static void cpu_reset(kn_backend *b) { kn_session_reset(((cpu_backend *)b)->s); }

static void cpu_free(kn_backend *b) {
    if (!b) return;
    kn_session_free(((cpu_backend *)b)->s);
    kn_free(b);
}

static const kn_backend_ops k_cpu_ops = {cpu_prefill, cpu_decode, cpu_stateless, cpu_reset,
                                         cpu_free};

kiln_status kn_backend_cpu_new(const kn_model *m, const kn_backend_params *p, kn_backend **out,
                               kiln_error *err) {
    *out = NULL;
    cpu_backend *b = kn_calloc(1, sizeof *b);
    if (!b) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    kn_session_params sp = kn_session_default_params();
    sp.threads = p->threads > 0 ? p->threads : 1;
    sp.stateless = p->stateless;
    sp.kv_f16 = !p->kv_f32;
    kiln_status s = kn_session_new(m, &sp, &b->s, err);
    if (s) {
        kn_free(b);
        return s;
    }
    b->base.ops = &k_cpu_ops;
    snprintf(b->base.device, sizeof b->base.device, "cpu");
    *out = &b->base;
    return KILN_OK;
}
