/* session.c — kiln_session: one conversation's state on a device the model shares: the
 * device's per-session backend (KV cache, scratch, requests), the static-graph driver that
 * turns tokens into fixed-shape calls, the sampler, and the record of the ids the cache holds. */
#include <stdio.h>
#include <string.h>

#include "runtime/runtime.h"

kiln_session_params kiln_session_default_params(void) {
    kiln_session_params p;
    memset(&p, 0, sizeof p);
    p.threads = 1;
    p.device = "auto";
    return p;
}

kiln_status kiln_session_new(kiln_model *km, const kiln_session_params *params,
                             kiln_session **out, kiln_error *err) {
    kn_error_clear(err);
    *out = NULL;
    kiln_session_params dp = kiln_session_default_params();
    const kiln_session_params *p = params ? params : &dp;
    if (p->threads < 0 || p->threads > 1024)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "threads %d must be in [1, 1024] (0 = cores)",
                       p->threads);
    if (p->mode != KILN_MODE_KV && p->mode != KILN_MODE_STATELESS)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "unknown mode %d", (int)p->mode);
    if (p->overflow != KILN_OVERFLOW_STOP && p->overflow != KILN_OVERFLOW_SLIDE)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "unknown overflow policy %d", (int)p->overflow);
    kiln_session *ks = kn_calloc(1, sizeof *ks);
    if (!ks) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    ks->model = km;
    ks->p = *p;
    if (ks->p.threads == 0) ks->p.threads = kn_physical_cores();
    const bool stateless = p->mode == KILN_MODE_STATELESS;
    kiln_status s = kn_model_device(km, &ks->p, &ks->dev, err);
    if (!s) {
        kn_session_cfg cfg = {stateless, p->kv};
        s = ks->dev->device->ops->open(ks->dev->device, &cfg, &ks->b, err);
    }
    if (!s) s = kn_driver_init(&ks->drv, ks->b, &km->contract, km->m->hp.n_vocab, stateless,
                               p->overflow == KILN_OVERFLOW_SLIDE, err);
    kiln_generate_params gp = kiln_generate_default_params();
    if (!s) s = kn_sampler_init(&ks->sampler, km->m->hp.n_vocab, &gp.sampling, err);
    if (!s && !kn_session_hist_reserve(ks, (size_t)km->contract.window))
        s = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    if (s) {
        kiln_session_free(ks);
        return s;
    }
    *out = ks;
    return KILN_OK;
}

void kiln_session_free(kiln_session *ks) {
    if (!ks) return;
    kn_free(ks->hist);
    kn_sampler_free(&ks->sampler);
    kn_driver_free(&ks->drv);
    if (ks->b) ks->b->ops->free(ks->b);
    kn_free(ks);
}

const char *kiln_session_device(const kiln_session *ks) { return ks->dev->device->name; }
const char *kiln_session_kernels(const kiln_session *ks) { return ks->dev->device->kernels; }
const char *kiln_session_fallback(const kiln_session *ks) { return ks->dev->fallback; }
int kiln_session_threads(const kiln_session *ks) { return ks->p.threads; }

void kiln_session_reset(kiln_session *ks) {
    kn_driver_reset(&ks->drv);
    ks->n_hist = 0;
}

void kiln_session_cached(const kiln_session *ks, const int32_t **ids, int *n) {
    *ids = ks->hist;
    *n = ks->n_hist;
}

bool kn_session_hist_reserve(kiln_session *ks, size_t n) {
    if (n <= ks->hist_cap) return true;
    size_t cap = ks->hist_cap * 2 > n ? ks->hist_cap * 2 : n;
    int32_t *h = kn_realloc(ks->hist, cap * sizeof *h);
    if (!h) return false;
    ks->hist = h;
    ks->hist_cap = cap;
    return true;
}

kiln_status kiln_session_feed(kiln_session *ks, const int32_t *ids, int n, int pos0,
                              const float **logits, kiln_error *err) {
    kn_error_clear(err);
    if (!ids || n < 1) return kn_fail(err, KILN_ERR_INVALID_ARG, "no tokens to feed");
    if (pos0 < 0) return kn_fail(err, KILN_ERR_INVALID_ARG, "position %d is negative", pos0);
    /* the record of what the cache holds stops being exact; a later reuse_prefix keeps none */
    ks->n_hist = 0;
    return kn_driver_feed(&ks->drv, ids, n, pos0, logits, err);
}

static char g_kernels_usable[96];
static pthread_once_t g_kernels_once = PTHREAD_ONCE_INIT;

static void kernels_list(void) {
    const kn_kernels *k[KN_KERNEL_TABLES];
    int n = kn_kernels_usable(k);
    for (int i = 0; i < n; i++) {
        size_t at = strlen(g_kernels_usable);
        snprintf(g_kernels_usable + at, sizeof g_kernels_usable - at, "%s%s", i ? " " : "",
                 k[i]->name);
    }
}

kiln_status kiln_cpu_kernels(const char **usable, const char **chosen, kiln_error *err) {
    pthread_once(&g_kernels_once, kernels_list);
    *usable = g_kernels_usable;
    const kn_kernels *k = NULL;
    kiln_status s = kn_kernels_choose(&k, err);
    *chosen = k ? k->name : "";
    return s;
}
