/* pool.c — a small fixed thread pool, and the row-split matrix product that uses it.
 *
 * A decode step of a 30-layer model issues a few hundred jobs of tens of microseconds each, so
 * a job must start in well under a microsecond: workers spin on a generation counter for a while
 * (a few microseconds, then yielding the core) and only then sleep on a condition variable. The
 * caller's thread takes part as worker 0 and waits the same way until the others are done. */
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
    atomic_uint gen;              /* bumped once per job */
    atomic_int pending;           /* workers (other than the caller) still running the job */
    atomic_bool stop;
    kn_task_fn fn;
    void *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
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

static void *worker_main(void *arg) {
    kn_pool *p = ((worker_arg *)arg)->pool;
    int ith = ((worker_arg *)arg)->ith;
    kn_free(arg);
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&p->stop, memory_order_acquire) &&
               spins < KN_SPIN_ITERS + KN_YIELD_ITERS) {
            if (spins < KN_SPIN_ITERS) cpu_relax();
            else sched_yield();
            spins++;
        }
        if (g == seen && !atomic_load(&p->stop)) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) break;
        seen = g;
        p->fn(p->ctx, ith, p->n);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
    return NULL;
}

kn_pool *kn_pool_new(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    kn_pool *p = kn_calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->stop, false);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
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
    kn_free(p->threads);
    kn_free(p);
}

int kn_pool_size(const kn_pool *p) { return p ? p->n : 1; }

void kn_pool_run(kn_pool *p, kn_task_fn fn, void *ctx) {
    if (!p || p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    /* The mutex orders this bump against a worker that is about to sleep, so none misses it. */
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0, p->n);
    for (int spins = 0; atomic_load_explicit(&p->pending, memory_order_acquire) != 0; spins++) {
        if (spins < KN_SPIN_ITERS) cpu_relax();
        else sched_yield();
    }
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
    int total_rows;
} matmul_job;

/* The matrices' rows are one concatenated range split into contiguous pieces, in multiples of 4
 * rows; a piece may span two matrices. */
static void matmul_task(void *ctx, int ith, int nth) {
    const matmul_job *j = ctx;
    int per = (j->total_rows + nth - 1) / nth;
    per = (per + 3) & ~3;
    int g0 = ith * per, g1 = g0 + per < j->total_rows ? g0 + per : j->total_rows;
    int base = 0;
    for (int i = 0; i < j->n_mats && g0 < g1; i++) {
        const kn_wmat *w = j->w[i];
        int r0 = g0 - base, r1 = g1 - base;
        if (r0 < 0) r0 = 0;
        if (r1 > w->n_out) r1 = w->n_out;
        if (r0 < r1) j->k->rows[w->type](w, r0, r1, j->x, j->a, j->n_tok, j->y[i], w->n_out);
        base += w->n_out;
    }
}

void kn_matmul_multi(kn_pool *pool, const kn_kernels *k, int n_mats, const kn_wmat *const *w,
                     const float *x, const kn_act *a, int n_tok, float *const *y) {
    matmul_job j = {k, n_mats, w, x, a, n_tok, y, 0};
    int64_t work = 0;
    for (int i = 0; i < n_mats; i++) {
        j.total_rows += w[i]->n_out;
        work += (int64_t)w[i]->n_out * w[i]->n_in * n_tok;
    }
    /* Below ~64k multiply-adds a job costs more to hand out than to do. */
    if (work < 65536 || kn_pool_size(pool) == 1)
        matmul_task(&j, 0, 1);
    else
        kn_pool_run(pool, matmul_task, &j);
}

typedef struct matmul1_job {
    const kn_kernels *k;
    const kn_wmat *w;
    const float *x;
    const kn_act *a;
    int n_tok;
    float *y;
    int ldy;
} matmul1_job;

static void matmul1_task(void *ctx, int ith, int nth) {
    const matmul1_job *j = ctx;
    int n = j->w->n_out;
    int per = (n + nth - 1) / nth;
    per = (per + 3) & ~3;
    int r0 = ith * per, r1 = r0 + per < n ? r0 + per : n;
    if (r0 < r1) j->k->rows[j->w->type](j->w, r0, r1, j->x, j->a, j->n_tok, j->y, j->ldy);
}

void kn_matmul(kn_pool *pool, const kn_kernels *k, const kn_wmat *w, const float *x,
               const kn_act *a, int n_tok, float *y, int ldy) {
    matmul1_job j = {k, w, x, a, n_tok, y, ldy};
    if ((int64_t)w->n_out * w->n_in * n_tok < 65536 || kn_pool_size(pool) == 1)
        matmul1_task(&j, 0, 1);
    else
        kn_pool_run(pool, matmul1_task, &j);
}
