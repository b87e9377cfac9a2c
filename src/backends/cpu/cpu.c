/* cpu.c — the native CPU device: the engine's model and one thread pool, shared by every
 * session of the model on the CPU; a session is an engine session (KV cache, scratch).
 *
 * The steps of sessions that run at once (a server's slots, each on its own thread) are
 * batched: a decode step or a prefill chunk joins a queue, and whichever thread finds no pass
 * running leads one over its own step and every like step queued so far that fits its rows
 * (kn_session_run_batch), while the others wait for their logits. One pass over the weights
 * then serves every busy session, where separate steps would each stream the whole model; and
 * a chunk being prefilled for a new request carries the other sessions' decode rows instead of
 * stalling them (the pool runs one pass at a time). No timer and no minimum: a lone session
 * leads a batch of one at once, and steps that arrive during a pass ride in the next. But
 * when several sessions are generating, the leader first waits, briefly, for the steps of the
 * others: after a pass every session samples and streams its token at its own pace, and the
 * first one back would otherwise run alone while the rest queue for the pass after (passes of
 * 1 and 3 rows alternating, at 4 sessions, where one of 4 costs little more). The wait ends
 * when every generating session has queued, or after half the last pass's time (a session
 * whose client is slow costs the others at most that). Every
 * session gets the bits its lone step would give (the kernels are batch-invariant), so
 * batching changes speed, never output. Stateless windows run directly. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include "backends/backend.h"
#include "backends/cpu/engine.h"

/* A decode step waiting for (or riding in) a batched pass. */
typedef struct step {
    kn_session *s;
    const kn_graph_call *call;
    kiln_status st;
    bool done;
    kiln_error *err;
    struct step *next;
} step;

typedef struct cpu_device {
    kn_device base;
    const kn_model *m;
    const kn_kernels *k;
    kn_pool *pool;            /* NULL for one thread */
    int threads;
    pthread_mutex_t mu;       /* guards everything below */
    pthread_cond_t cv;        /* a pass ended */
    pthread_cond_t arrived;   /* a step was queued (the gathering leader waits on it) */
    step *queue;              /* FIFO of steps no pass has taken yet */
    int n_queued;
    bool leading;             /* a pass is running (or its leader gathers) */
    int n_active;             /* sessions between their first step and kn_driver_idle */
    double pass_s;            /* how long the last pass took */
} cpu_device;

typedef struct cpu_backend {
    kn_backend base;
    kn_session *s;
    bool active;              /* counted in n_active (guarded by the device's mu) */
} cpu_backend;

/* Takes own (step 0) and then, in arrival order, every queued step that can ride in own's
 * pass, up to the lead's cap of steps and rows; the rest stay queued. Called with d->mu held. */
static int take_batch(cpu_device *d, step *own, step **out) {
    int cap = kn_session_batch_cap(own->s), n = 1;
    int room = kn_session_batch_rows(own->s) - own->call->n;
    out[0] = own;
    for (step **pp = &d->queue; *pp;) {
        step *q = *pp;
        bool fits = q != own && n < cap && q->call->n <= room;
        if (q == own || (fits && kn_session_batches_with(own->s, q->s))) {
            *pp = q->next;
            if (q != own) {
                out[n++] = q;
                room -= q->call->n;
            }
        } else {
            pp = &q->next;
        }
    }
    return n;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* The leader's wait for the other generating sessions' steps (see the file comment). Called
 * with d->mu held and d->leading set. */
static void gather(cpu_device *d) {
    if (d->n_active < 2 || d->n_queued >= d->n_active) return;
    double wait = d->pass_s * 0.5;
    if (wait > 0.005) wait = 0.005;
    if (wait <= 0) return;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    long ns = dl.tv_nsec + (long)(wait * 1e9);
    dl.tv_sec += ns / 1000000000L;
    dl.tv_nsec = ns % 1000000000L;
    while (d->n_queued < d->n_active)
        if (pthread_cond_timedwait(&d->arrived, &d->mu, &dl) == ETIMEDOUT) break;
}

static kiln_status run_batched(cpu_device *d, cpu_backend *b, const kn_graph_call *call,
                               kiln_error *err) {
    kn_session *s = b->s;
    step own = {s, call, KILN_OK, false, err, NULL};
    pthread_mutex_lock(&d->mu);
    if (!b->active) {
        b->active = true;
        d->n_active++;
    }
    step **tail = &d->queue;
    while (*tail) tail = &(*tail)->next;
    *tail = &own;
    d->n_queued++;
    pthread_cond_signal(&d->arrived);
    while (!own.done) {
        if (d->leading) {
            pthread_cond_wait(&d->cv, &d->mu);
            continue;
        }
        d->leading = true;
        gather(d);
        step *batch[KN_MAX_BATCH];
        int n = take_batch(d, &own, batch);
        d->n_queued -= n;
        pthread_mutex_unlock(&d->mu);
        double t0 = now_s();
        kn_session *ss[KN_MAX_BATCH];
        const kn_graph_call *calls[KN_MAX_BATCH];
        for (int i = 0; i < n; i++) {
            ss[i] = batch[i]->s;
            calls[i] = batch[i]->call;
        }
        kiln_error berr;
        const float *unused;
        kiln_status st = n == 1 ? kn_session_run(s, call, &unused, &berr)
                                : kn_session_run_batch(s, ss, calls, n, &berr);
        double took = now_s() - t0;
        pthread_mutex_lock(&d->mu);
        d->pass_s = took;
        for (int i = 0; i < n; i++) {
            batch[i]->st = st;
            if (st && batch[i]->err) *batch[i]->err = berr;
            batch[i]->done = true;
        }
        /* kiln_batched_decode_steps_total: the decode steps that shared a pass */
        long n_dec = 0;
        if (n > 1)
            for (int i = 0; i < n; i++) n_dec += batch[i]->call->graph == KN_GRAPH_DECODE;
        if (n_dec) __atomic_add_fetch(&d->base.n_batched, n_dec, __ATOMIC_RELAXED);
        d->leading = false;
        pthread_cond_broadcast(&d->cv);
    }
    pthread_mutex_unlock(&d->mu);
    return own.st;
}

static kiln_status cpu_run(kn_backend *b, const kn_graph_call *call, const float **logits,
                           kiln_error *err) {
    kn_session *s = ((cpu_backend *)b)->s;
    cpu_device *d = (cpu_device *)b->device;
    if (call->graph == KN_GRAPH_STATELESS || kn_session_batch_cap(s) < 2)
        return kn_session_run(s, call, logits, err);
    kiln_status st = run_batched(d, (cpu_backend *)b, call, err);
    if (!st) *logits = kn_session_logits(s);
    return st;
}

static void cpu_idle(kn_backend *kb) {
    cpu_backend *b = (cpu_backend *)kb;
    cpu_device *d = (cpu_device *)kb->device;
    pthread_mutex_lock(&d->mu);
    if (b->active) {
        b->active = false;
        d->n_active--;
        pthread_cond_signal(&d->arrived); /* a gathering leader need not wait for it */
    }
    pthread_mutex_unlock(&d->mu);
}

/* A reset session is not generating either: a gathering leader must not wait for it (its
 * next step counts it again). */
static void cpu_reset(kn_backend *b) {
    cpu_idle(b);
    kn_session_reset(((cpu_backend *)b)->s);
}

static void cpu_free(kn_backend *b) {
    if (!b) return;
    cpu_idle(b);
    kn_session_free(((cpu_backend *)b)->s);
    kn_free(b);
}

static const kn_backend_ops k_cpu_ops = {cpu_run, cpu_reset, cpu_free, cpu_idle};

static kiln_status cpu_open(kn_device *dev, const kn_session_cfg *cfg, kn_backend **out,
                            kiln_error *err) {
    cpu_device *d = (cpu_device *)dev;
    *out = NULL;
    cpu_backend *b = kn_calloc(1, sizeof *b);
    if (!b) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    kn_session_params sp = kn_session_default_params();
    sp.threads = d->threads;
    sp.stateless = cfg->stateless;
    sp.kv = kn_kv_kind_of(cfg->kv);
    sp.kernels = d->k;
    sp.pool = d->pool;
    sp.max_batch = cfg->stateless ? 1 : KN_MAX_BATCH;
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
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    pthread_cond_destroy(&d->arrived);
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
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    pthread_cond_init(&d->arrived, NULL);
    if (d->threads > 1 && !(d->pool = kn_pool_new(d->threads))) {
        kn_free(d);
        return kn_fail(err, KILN_ERR_NOMEM, "cannot start %d threads", p->threads);
    }
    snprintf(d->base.name, sizeof d->base.name, "cpu");
    snprintf(d->base.kernels, sizeof d->base.kernels, "%s", k->name);
    *out = &d->base;
    return KILN_OK;
}
