/* cpu.c — the native CPU device: the engine's model and one thread pool, shared by every
 * session of the model on the CPU; a session is an engine session (KV cache, scratch). */
#include <stdio.h>

#include "backends/backend.h"
#include "backends/cpu/engine.h"

typedef struct cpu_device {
    kn_device base;
    const kn_model *m;
    const kn_kernels *k;
    kn_pool *pool;            /* NULL for one thread */
    int threads;
} cpu_device;

typedef struct cpu_backend {
    kn_backend base;
    kn_session *s;
} cpu_backend;

static kiln_status cpu_run(kn_backend *b, const kn_graph_call *call, const float **logits,
                           kiln_error *err) {
    return kn_session_run(((cpu_backend *)b)->s, call, logits, err);
}

static void cpu_reset(kn_backend *b) { kn_session_reset(((cpu_backend *)b)->s); }

static void cpu_free(kn_backend *b) {
    if (!b) return;
    kn_session_free(((cpu_backend *)b)->s);
    kn_free(b);
}

static const kn_backend_ops k_cpu_ops = {cpu_run, cpu_reset, cpu_free};

static kiln_status cpu_open(kn_device *dev, const kn_session_cfg *cfg, kn_backend **out,
                            kiln_error *err) {
    cpu_device *d = (cpu_device *)dev;
    *out = NULL;
    cpu_backend *b = kn_calloc(1, sizeof *b);
    if (!b) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    kn_session_params sp = kn_session_default_params();
    sp.threads = d->threads;
    sp.stateless = cfg->stateless;
    sp.kv_f16 = !cfg->kv_f32;
    sp.kernels = d->k;
    sp.pool = d->pool;
    kiln_status s = kn_session_new(d->m, &sp, &b->s, err);
    if (s) {
        kn_free(b);
        return s;
    }
    b->base.ops = &k_cpu_ops;
    b->base.device = dev;
    *out = &b->base;
    return KILN_OK;
}

static void cpu_device_free(kn_device *dev) {
    cpu_device *d = (cpu_device *)dev;
    if (!d) return;
    kn_pool_free(d->pool);
    kn_free(d);
}

static const kn_device_ops k_cpu_device_ops = {cpu_open, cpu_device_free};

kiln_status kn_device_cpu_open(const kn_device_params *p, kn_device **out, kiln_error *err) {
    *out = NULL;
    if (!p->cpu_model) return kn_fail(err, KILN_ERR_INTERNAL, "cpu: no model");
    const kn_kernels *k = p->kernels;
    if (!k) {
        kiln_status s = kn_kernels_choose(&k, err);
        if (s) return s;
    }
    cpu_device *d = kn_calloc(1, sizeof *d);
    if (!d) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    d->base.ops = &k_cpu_device_ops;
    d->m = p->cpu_model;
    d->k = k;
    d->threads = p->threads > 0 ? p->threads : 1;
    if (d->threads > 1 && !(d->pool = kn_pool_new(d->threads))) {
        kn_free(d);
        return kn_fail(err, KILN_ERR_NOMEM, "cannot start %d threads", p->threads);
    }
    snprintf(d->base.name, sizeof d->base.name, "cpu");
    snprintf(d->base.kernels, sizeof d->base.kernels, "%s", k->name);
    *out = &d->base;
    return KILN_OK;
}
