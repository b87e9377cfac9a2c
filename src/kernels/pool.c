/* pool.c — a small fixed thread pool, and the row-split matrix product that uses it.
 *
 * A decode step of a 30-layer model issues a few hundred jobs of tens of microseconds each, so
 * a job must start in well under a microsecond: workers spin on a generation counter for a while
 * (then yield the core, then sleep on a condition variable). The caller's thread takes part as
 * worker 0.
 *
 * A job is n items taken from an atomic counter, not one fixed share per thread: on a machine
 * shared with other processes a worker is often off its core for milliseconds, and with fixed
 * shares every job would wait for it; here the threads that run simply take its items. The
 * caller returns once every item is done, whether or not every worker has looked at the job.
 * Which thread runs an item never changes what the item computes. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "base/base.h"
#include "kernels/kernels.h"

/* Pause-spins before a waiting thread yields its core, and yields before a worker sleeps. When
 * the machine has fewer free cores than workers, a pure spin would burn the time slice the
 * awaited thread needs, so waits turn into sched_yield quickly. */
#define KN_SPIN_ITERS 2000
#define KN_YIELD_ITERS 200

struct kn_pool {
    int n;                        /* workers, the caller included */
    pthread_t *threads;           /* [n - 1] */
    int n_started;
    /* Even: a job is published (fields below stable); odd: the caller is replacing it. */
    atomic_uint gen;
    atomic_int active;            /* workers (other than the caller) reading the current job */
    atomic_int next;              /* next item to take */
    atomic_int done;              /* items finished */
    atomic_bool stop;
    int n_items;
    kn_task_fn fn;
    void *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* One job at a time: sessions sharing a model share its pool, and may call from several
     * threads at once; they take turns job by job. */
    pthread_mutex_t run_mu;
};

typedef struct worker_arg {
    kn_pool *pool;
    int ith;
} worker_arg;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Takes items of the current job until none is left. */
static void take_items(kn_pool *p, int ith) {
    int n = p->n_items;
    for (int i; (i = atomic_fetch_add(&p->next, 1)) < n;) {
        p->fn(p->ctx, i, n, ith);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
    }
}

static void *worker_main(void *arg) {
    kn_pool *p = ((worker_arg *)arg)->pool;
    int ith = ((worker_arg *)arg)->ith;
    kn_free(arg);
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while (((g = atomic_load(&p->gen)) == seen || (g & 1)) && !atomic_load(&p->stop)) {
            if (spins < KN_SPIN_ITERS) {
                cpu_relax();
            } else if (spins < KN_SPIN_ITERS + KN_YIELD_ITERS) {
                sched_yield();
            } else {
                pthread_mutex_lock(&p->mu);
                while (((g = atomic_load(&p->gen)) == seen || (g & 1)) && !atomic_load(&p->stop))
                    pthread_cond_wait(&p->cv, &p->mu);
                pthread_mutex_unlock(&p->mu);
            }
            spins++;
        }
        if (atomic_load(&p->stop)) break;
        /* Announce, then check the job is still the one seen: the caller does not touch the
         * fields while anyone is active, and a newer generation means look again. */
        atomic_fetch_add(&p->active, 1);
        if (atomic_load(&p->gen) == g) {
            take_items(p, ith);
            seen = g;
        }
        atomic_fetch_sub(&p->active, 1);
    }
    return NULL;
}

kn_pool *kn_pool_new(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    kn_pool *p = kn_calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    atomic_init(&p->gen, 0);
    atomic_init(&p->active, 0);
    atomic_init(&p->next, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->stop, false);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_mutex_init(&p->run_mu, NULL);
    if (n_threads > 1) {
        p->threads = kn_calloc((size_t)n_threads - 1, sizeof *p->threads);
        if (!p->threads) goto fail;
        for (int i = 1; i < n_threads; i++) {
            worker_arg *a = kn_malloc(sizeof *a);
            if (!a) goto fail;
            a->pool = p;
            a->ith = i;
            if (pthread_create(&p->threads[i - 1], NULL, worker_main, a) != 0) {
                kn_free(a);
                goto fail;
            }
            p->n_started++;
        }
    }
    return p;
fail:
    kn_pool_free(p);
    return NULL;
}

void kn_pool_free(kn_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->run_mu);
    kn_free(p->threads);
    kn_free(p);
}

int kn_pool_size(const kn_pool *p) { return p ? p->n : 1; }

static void wait_for(atomic_int *v, int want) {
    for (int spins = 0; atomic_load_explicit(v, memory_order_acquire) != want; spins++) {
        if (spins < KN_SPIN_ITERS) cpu_relax();
        else sched_yield();
    }
}

void kn_pool_run(kn_pool *p, kn_task_fn fn, void *ctx, int n_items) {
    if (n_items <= 0) return;
    if (!p || p->n == 1 || n_items == 1) {
        for (int i = 0; i < n_items; i++) fn(ctx, i, n_items, 0);
        return;
    }
    pthread_mutex_lock(&p->run_mu);
    /* Close the previous job (odd generation), wait until no late worker still reads it, then
     * publish this one (even). */
    atomic_fetch_add(&p->gen, 1);
    wait_for(&p->active, 0);
    p->fn = fn;
    p->ctx = ctx;
    p->n_items = n_items;
    atomic_store(&p->next, 0);
    atomic_store(&p->done, 0);
    /* The mutex orders this bump against a worker that is about to sleep, so none misses it. */
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    take_items(p, 0);
    wait_for(&p->done, n_items);
    pthread_mutex_unlock(&p->run_mu);
}

/* ---- the product ---- */

typedef struct matmul_job {
    const kn_kernels *k;
    int n_mats;
    const kn_wmat *const *w;
    const float *x;
    const kn_act *a;
    int n_tok;
    float *const *y;
    const int *ldy;           /* per matrix; NULL = its n_out */
    int total_rows;
    int chunk;                /* rows per item, a multiple of 8 (a packed group) */
} matmul_job;

/* The matrices' rows are one concatenated range cut into items of `chunk` rows; an item may
 * span two matrices. A row is always computed whole by one call, so neither the cut nor the
 * thread that takes an item can change a result. */
static void matmul_item(void *ctx, int item, int n_items, int worker) {
    (void)n_items;
    (void)worker;
    const matmul_job *j = ctx;
    int g0 = item * j->chunk, g1 = g0 + j->chunk < j->total_rows ? g0 + j->chunk : j->total_rows;
    int base = 0;
    for (int i = 0; i < j->n_mats && g0 < g1; i++) {
        const kn_wmat *w = j->w[i];
        int r0 = g0 - base, r1 = g1 - base;
        if (r0 < 0) r0 = 0;
        if (r1 > w->n_out) r1 = w->n_out;
        if (r0 < r1) {
            kn_rows_fn f = w->layout == KN_LAYOUT_X8 ? j->k->rows_x8[w->type] : j->k->rows[w->type];
            f(w, r0, r1, j->x, j->a, j->n_tok, j->y[i], j->ldy ? j->ldy[i] : w->n_out);
        }
        base += w->n_out;
    }
}

static void matmul_run(kn_pool *pool, matmul_job *j) {
    int64_t work = 0;
    for (int i = 0; i < j->n_mats; i++) {
        j->total_rows += j->w[i]->n_out;
        work += (int64_t)j->w[i]->n_out * j->w[i]->n_in * j->n_tok;
    }
    int nth = kn_pool_size(pool);
    /* Below ~64k multiply-adds a job costs more to hand out than to do. Otherwise about 8
     * items per thread, so a thread that loses its core for a while leaves little behind, but
     * at least 16 rows each so taking an item stays cheap next to doing it. */
    if (work < 65536 || nth == 1) {
        j->chunk = j->total_rows;
        matmul_item(j, 0, 1, 0);
        return;
    }
    int chunk = (j->total_rows + 8 * nth - 1) / (8 * nth);
    if (chunk < 16) chunk = 16;
    j->chunk = (chunk + KN_GROUP - 1) / KN_GROUP * KN_GROUP;
    kn_pool_run(pool, matmul_item, j, (j->total_rows + j->chunk - 1) / j->chunk);
}

void kn_matmul_multi(kn_pool *pool, const kn_kernels *k, int n_mats, const kn_wmat *const *w,
                     const float *x, const kn_act *a, int n_tok, float *const *y) {
    matmul_job j = {k, n_mats, w, x, a, n_tok, y, NULL, 0, 0};
    matmul_run(pool, &j);
}

void kn_matmul(kn_pool *pool, const kn_kernels *k, const kn_wmat *w, const float *x,
               const kn_act *a, int n_tok, float *y, int ldy) {
    const kn_wmat *w1[1] = {w};
    float *y1[1] = {y};
    int ldy1[1] = {ldy};
    matmul_job j = {k, 1, w1, x, a, n_tok, y1, ldy1, 0, 0};
    matmul_run(pool, &j);
}
