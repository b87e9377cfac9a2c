/* worker.c — the inference worker: one model, one kiln_session per slot, prefix-aware slot
 * choice, one thread per busy slot.
 *
 * Threads:
 *   reader (the process's main thread)  reads the supervisor's frames: a request is rendered
 *       and tokenized here (so the slot can be chosen by its ids), checked against the window,
 *       and queued; a ping is answered at once, so a worker that stops reading is one the
 *       watchdog restarts; a cancel flags its job.
 *   slot threads (one per slot)  each runs its slot's job through kiln_generate_ids with
 *       reuse_prefix: the session keeps the longest prefix its cache already holds, so a resent
 *       conversation prefills only its new turn.
 *
 * Every slot is a session of the one model on one device and its one thread pool. Batching
 * is the device's, below this file: on the CPU, decode steps of busy slots that arrive while a
 * pass runs ride together in the next one (backends/cpu/cpu.c), so each slot keeps its own
 * plain generation loop (sampling, stop strings, streaming) and the busy slots still stream
 * the weights once per token between them. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "proto.h"
#include "request.h"
#include "serve.h"

typedef struct job {
    uint64_t id;
    sv_job_spec spec;
    int32_t *ids;               /* the prompt's tokens */
    int n;
    int max_tokens;
    volatile int cancel;        /* set by the reader when the client went away */
    int pieces;                 /* text pieces streamed so far (a lower bound on tokens) */
    struct job *next;
} job;

typedef struct worker worker;

typedef struct slot {
    worker *w;
    int index;
    kiln_session *s;
    pthread_t thread;
    pthread_cond_t cv;
    job *job;                   /* the job it runs (or is about to) */
    double last_used;
    int cached;                 /* tokens its cache holds, when idle */
} slot;

struct worker {
    const sv_options *o;
    int fd;
    pthread_mutex_t send_mu;    /* one frame at a time on fd */
    pthread_mutex_t mu;         /* slots, pending */
    kiln_model *model;
    const kiln_tokenizer *tok;
    int window, n_vocab;
    slot *slots;
    int n_slots;
    job *pending, *pending_tail;
    bool stopping;
    uint64_t rng;
};

static void send_frame(worker *w, uint32_t type, uint64_t id, const void *data, size_t len) {
    pthread_mutex_lock(&w->send_mu);
    int r = sv_frame_write(w->fd, type, id, data, len);
    pthread_mutex_unlock(&w->send_mu);
    /* the supervisor is gone: nobody is left to answer, and no one may be left running */
    if (r) _exit(0);
}

static void send_json(worker *w, uint32_t type, uint64_t id, cJSON *j) {
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    send_frame(w, type, id, s, s ? strlen(s) : 0);
    free(s);
}

static void send_error(worker *w, uint64_t id, int status, const char *code, const char *msg) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "status", status);
    if (code) cJSON_AddStringToObject(j, "code", code);
    cJSON_AddStringToObject(j, "message", msg);
    send_json(w, SV_F_ERROR, id, j);
}

static int status_http(kiln_status s) {
    switch (s) {
    case KILN_ERR_INVALID_ARG: return 400;
    case KILN_ERR_DEVICE: return 503;
    default: return 500;
    }
}

static void job_free(job *j) {
    if (!j) return;
    sv_job_spec_free(&j->spec);
    kiln_free(j->ids);
    free(j);
}

/* The template variables of a request: the server's --chat-template-kwargs with the request's
 * own members over them (as llama-server merges them). NULL when neither; *owned says whether
 * the caller frees the text (cJSON_free). */
static const char *merged_kwargs(const char *dflt, const char *req, bool *owned) {
    *owned = false;
    if (!dflt || !req) return req ? req : dflt;
    cJSON *d = cJSON_Parse(dflt), *r = cJSON_Parse(req);
    char *out = NULL;
    if (cJSON_IsObject(d) && cJSON_IsObject(r)) {
        cJSON *m;
        while ((m = r->child)) {
            cJSON_DetachItemViaPointer(r, m);
            cJSON_DeleteItemFromObjectCaseSensitive(d, m->string);
            cJSON_AddItemToObject(d, m->string, m);
        }
        out = cJSON_PrintUnformatted(d);
    }
    cJSON_Delete(d);
    cJSON_Delete(r);
    *owned = out != NULL;
    return out ? out : req;
}

/* The prompt's ids: the chat template (or the raw text, or the ids given), checked against the
 * vocabulary and the window. 0 ok; else an error was sent. */
static int prepare(worker *w, job *j) {
    kiln_error err;
    kiln_status st = KILN_OK;
    size_t n = 0;
    sv_job_spec *sp = &j->spec;
    if (sp->kind == SV_CHAT) {
        char *text = NULL;
        bool owned;
        const char *kw = merged_kwargs(w->o->chat_template_kwargs, sp->chat_template_kwargs,
                                       &owned);
        st = kiln_chat_render(w->tok, w->o->chat_template, kw, sp->msgs, (size_t)sp->n_msgs, 1,
                              &text, &err);
        if (owned) cJSON_free((char *)kw);
        if (!st) st = kiln_tokenize(w->tok, text, strlen(text), KILN_TOKENIZE_SPECIAL, &j->ids, &n,
                                    &err);
        kiln_free(text);
    } else if (sp->prompt) {
        st = kiln_tokenize(w->tok, sp->prompt, strlen(sp->prompt),
                           KILN_TOKENIZE_MODEL_BOS | KILN_TOKENIZE_SPECIAL, &j->ids, &n, &err);
    } else {
        for (int i = 0; i < sp->n_prompt_ids; i++)
            if (sp->prompt_ids[i] < 0 || sp->prompt_ids[i] >= w->n_vocab) {
                char msg[160];
                snprintf(msg, sizeof msg, "'prompt' holds token id %d; this model's ids are 0 to %d",
                         sp->prompt_ids[i], w->n_vocab - 1);
                send_error(w, j->id, 400, "invalid_value", msg);
                return -1;
            }
        j->ids = sp->prompt_ids;
        n = (size_t)sp->n_prompt_ids;
        sp->prompt_ids = NULL;
        sp->n_prompt_ids = 0;
    }
    if (st) {
        /* a template that refuses the conversation (roles that do not alternate, ...) is the
         * request's fault */
        int status = st == KILN_ERR_INVALID_ARG || st == KILN_ERR_FORMAT ? 400 : status_http(st);
        send_error(w, j->id, status, NULL, err.message);
        return -1;
    }
    if (n == 0) {
        send_error(w, j->id, 400, "invalid_value", "the prompt is empty (no tokens)");
        return -1;
    }
    if (n > (size_t)1 << 30) n = (size_t)1 << 30;
    j->n = (int)n;
    if (w->o->overflow == KILN_OVERFLOW_STOP && j->n >= w->window) {
        char msg[320];
        snprintf(msg, sizeof msg,
                 "the prompt is %d tokens and this model's window holds %d (the limit of its "
                 "static contract; the server runs with --overflow stop): shorten the prompt, or "
                 "serve with --overflow slide",
                 j->n, w->window);
        send_error(w, j->id, 400, "context_length_exceeded", msg);
        return -1;
    }
    int cap = w->o->max_tokens > 0 ? w->o->max_tokens : w->window;
    int mt = sp->max_tokens > 0 && sp->max_tokens < cap ? sp->max_tokens : cap;
    /* with --overflow stop the window ends the answer anyway; sizing max_tokens to what fits
     * keeps the result buffers kiln sizes up front small */
    if (w->o->overflow == KILN_OVERFLOW_STOP && mt > w->window - j->n + 1) mt = w->window - j->n + 1;
    j->max_tokens = mt < 1 ? 1 : mt;
    return 0;
}

static int common_prefix(const int32_t *a, int na, const int32_t *b, int nb) {
    int i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

/* Gives pending jobs to free slots, in order: each to the free slot whose cache shares the
 * longest prefix with its prompt (ties: the slot unused longest). A prefix that covers less
 * than half of the prompt is worth less than another conversation's cache: such a request goes
 * to the free slot unused longest instead (an empty one first), as llama-server's
 * --slot-prompt-similarity does. Holds w->mu. */
static void schedule_locked(worker *w) {
    while (w->pending) {
        job *j = w->pending;
        slot *best = NULL, *lru = NULL;
        int best_lcp = -1;
        for (int i = 0; i < w->n_slots; i++) {
            slot *s = &w->slots[i];
            if (s->job) continue;
            const int32_t *ids;
            int n;
            kiln_session_cached(s->s, &ids, &n);
            int lcp = common_prefix(ids, n, j->ids, j->n);
            if (lcp > best_lcp || (lcp == best_lcp && s->last_used < best->last_used)) {
                best = s;
                best_lcp = lcp;
            }
            if (!lru || s->last_used < lru->last_used) lru = s;
        }
        if (!best) return;
        if (2 * best_lcp < j->n) best = lru;
        w->pending = j->next;
        if (!w->pending) w->pending_tail = NULL;
        j->next = NULL;
        best->job = j;
        pthread_cond_signal(&best->cv);
    }
}

typedef struct text_ctx {
    worker *w;
    job *j;
} text_ctx;

/* KILN_SERVE_TEST_PIECE_DELAY_MS (a test-only switch, read once at start): a pause after each
 * streamed piece, so a test can hold a request in generation for as long as it needs however
 * fast the machine is. */
static long g_piece_delay_ms;

static int on_text(const char *text, size_t len, void *user) {
    text_ctx *c = user;
    if (g_piece_delay_ms > 0) {
        struct timespec ts = {g_piece_delay_ms / 1000, (g_piece_delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    send_frame(c->w, SV_F_TEXT, c->j->id, text, len);
    __atomic_add_fetch(&c->j->pieces, 1, __ATOMIC_RELAXED);
    return __atomic_load_n(&c->j->cancel, __ATOMIC_RELAXED);
}

static uint64_t next_seed(worker *w) {
    /* splitmix64 over a seed from the kernel: a request without a seed gets its own */
    uint64_t z = (w->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* One job on one slot, start to end. */
static cJSON *run_job(worker *w, slot *s, job *j, int *http_status, char *errmsg, size_t errcap) {
    const sv_job_spec *sp = &j->spec;
    kiln_generate_params gp = kiln_generate_default_params();
    gp.sampling = w->o->sampling;
    if (sp->has_temperature) gp.sampling.temperature = sp->temperature;
    if (sp->has_top_p) gp.sampling.top_p = sp->top_p;
    if (sp->has_top_k) gp.sampling.top_k = sp->top_k;
    if (sp->has_min_p) gp.sampling.min_p = sp->min_p;
    if (sp->has_repeat_penalty) gp.sampling.repeat_penalty = sp->repeat_penalty;
    if (sp->has_seed) {
        gp.sampling.seed = sp->seed;
    } else {
        pthread_mutex_lock(&w->mu);
        gp.sampling.seed = next_seed(w);
        pthread_mutex_unlock(&w->mu);
    }
    gp.max_tokens = j->max_tokens;
    gp.stop = (const char *const *)sp->stops;
    gp.n_stop = sp->n_stop;
    text_ctx ctx = {w, j};
    gp.on_text = on_text;
    gp.user = &ctx;
    gp.cancel = &j->cancel;
    gp.reuse_prefix = 1;
    kiln_result r;
    kiln_error err;
    kiln_status st = kiln_generate_ids(s->s, j->ids, j->n, &gp, &r, &err);
    if (st) {
        *http_status = status_http(st);
        snprintf(errmsg, errcap, "%s", err.message);
        return NULL;
    }
    const kiln_metrics *m = &r.metrics;
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "finish_reason", m->finish_reason);
    cJSON_AddNumberToObject(d, "prompt_tokens", m->prompt_tokens);
    cJSON_AddNumberToObject(d, "cached_tokens", m->cached_tokens);
    cJSON_AddNumberToObject(d, "completion_tokens", m->generated_tokens);
    cJSON_AddNumberToObject(d, "ttft_ms", m->ttft_ms);
    cJSON_AddNumberToObject(d, "total_ms", m->total_ms);
    cJSON_AddNumberToObject(d, "slot", s->index);
    kiln_result_free(&r);
    return d;
}

static void *slot_main(void *arg) {
    slot *s = arg;
    worker *w = s->w;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!s->job && !w->stopping) pthread_cond_wait(&s->cv, &w->mu);
        if (!s->job) break;
        job *j = s->job;
        pthread_mutex_unlock(&w->mu);
        send_frame(w, SV_F_START, j->id, NULL, 0);
        int status = 500;
        char msg[sizeof(((kiln_error *)0)->message)];
        cJSON *done = run_job(w, s, j, &status, msg, sizeof msg);
        pthread_mutex_lock(&w->mu);
        s->job = NULL;
        s->last_used = sv_now();
        const int32_t *ids;
        kiln_session_cached(s->s, &ids, &s->cached);
        schedule_locked(w);
        pthread_mutex_unlock(&w->mu);
        /* the slot is free before the supervisor hears it is: its next request finds it so */
        if (done) send_json(w, SV_F_DONE, j->id, done);
        else send_error(w, j->id, status, NULL, msg);
        job_free(j);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void send_pong(worker *w, uint64_t seq) {
    int busy = 0, kv_busy = 0, kv_idle = 0;
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < w->n_slots; i++) {
        slot *s = &w->slots[i];
        if (s->job) {
            busy++;
            kv_busy += s->job->n + __atomic_load_n(&s->job->pieces, __ATOMIC_RELAXED);
        } else {
            kv_idle += s->cached;
        }
    }
    int pending = 0;
    for (job *j = w->pending; j; j = j->next) pending++;
    pthread_mutex_unlock(&w->mu);
    cJSON *p = cJSON_CreateObject();
    cJSON_AddNumberToObject(p, "busy", busy);
    cJSON_AddNumberToObject(p, "pending", pending);
    cJSON_AddNumberToObject(p, "kv_busy_tokens", kv_busy);
    cJSON_AddNumberToObject(p, "kv_idle_tokens", kv_idle);
    cJSON_AddNumberToObject(p, "kv_capacity", (double)w->n_slots * w->window);
    cJSON_AddNumberToObject(p, "batched_steps", (double)kiln_model_batched_steps(w->model));
    send_json(w, SV_F_PONG, seq, p);
}

static void cancel_job(worker *w, uint64_t id) {
    job *gone = NULL;
    pthread_mutex_lock(&w->mu);
    for (job **pp = &w->pending; *pp; pp = &(*pp)->next)
        if ((*pp)->id == id) {
            gone = *pp;
            *pp = gone->next;
            break;
        }
    w->pending_tail = NULL;
    for (job *j = w->pending; j; j = j->next) w->pending_tail = j;
    for (int i = 0; !gone && i < w->n_slots; i++)
        if (w->slots[i].job && w->slots[i].job->id == id)
            __atomic_store_n(&w->slots[i].job->cancel, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&w->mu);
    if (gone) {
        /* every request gets exactly one answer: the supervisor frees its slot count on it */
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "finish_reason", "cancelled");
        cJSON_AddNumberToObject(d, "prompt_tokens", gone->n);
        cJSON_AddNumberToObject(d, "cached_tokens", 0);
        cJSON_AddNumberToObject(d, "completion_tokens", 0);
        send_json(w, SV_F_DONE, id, d);
        job_free(gone);
    }
}

/* Test-only switches (environment): a worker that hangs at its Nth request, so that tests can
 * show the watchdog catching it, and a slow start, so that they can see /health say 503. */
static long test_env(const char *name) {
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : 0;
}

int sv_worker_main(const sv_options *o) {
    /* the supervisor decides when the worker stops: terminal signals are its business, and if
     * it dies the worker goes too */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1) return 1;
    g_piece_delay_ms = test_env("KILN_SERVE_TEST_PIECE_DELAY_MS");
    if (g_piece_delay_ms > 10000) g_piece_delay_ms = 10000;
    long delay = test_env("KILN_SERVE_TEST_LOAD_DELAY");
    if (delay > 0) sleep((unsigned)delay);

    int n = o->parallel;
    worker *w = calloc(1, sizeof *w);
    if (!w || !(w->slots = calloc((size_t)n, sizeof *w->slots))) {
        fprintf(stderr, "kiln: out of memory\n");
        free(w);
        return 1;
    }
    w->o = o;
    w->fd = o->worker_fd;
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->send_mu, NULL);
    if (getrandom(&w->rng, sizeof w->rng, 0) != (ssize_t)sizeof w->rng)
        w->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);

    kiln_error err;
    kiln_model_params mp = kiln_model_default_params();
    mp.tokenizer = o->tokenizer;
    mp.window = o->window;
    mp.chunk = o->chunk;
    kiln_status st = kiln_model_open(o->model, &mp, &w->model, &err);
    if (st) {
        fprintf(stderr, "kiln: %s\n", err.message);
        free(w->slots);
        free(w);
        return o->exit_code(st);
    }
    w->tok = kiln_model_tokenizer(w->model);
    w->window = kiln_model_window(w->model);
    w->n_vocab = kiln_model_n_vocab(w->model);
    kiln_session_params sp = kiln_session_default_params();
    /* every slot on the one shared pool of all threads (0: physical cores): the CPU device
     * runs the busy slots' decode steps as one batched pass over the weights, so splitting
     * the cores between slots would only leave some idle */
    sp.threads = o->threads;
    sp.mode = o->mode;
    sp.overflow = o->overflow;
    sp.device = o->device;
    sp.no_fallback = o->no_fallback;
    sp.openvino_lib = o->openvino_lib;
    sp.verify = o->verify;
    for (int i = 0; i < n; i++) {
        slot *s = &w->slots[i];
        s->w = w;
        s->index = i;
        st = kiln_session_new(w->model, &sp, &s->s, &err);
        if (st && i == 0) {
            fprintf(stderr, "kiln: %s\n", err.message);
            kiln_model_free(w->model);
            free(w->slots);
            free(w);
            return o->exit_code(st);
        }
        if (st) {
            /* an accelerator may hold fewer static graphs' requests than asked: serve with what
             * it gave, the rest queue */
            sv_log("worker: %d of %d slots on this device (%s)", i, n, err.message);
            break;
        }
        pthread_cond_init(&s->cv, NULL);
        w->n_slots++;
    }
    for (int i = 0; i < w->n_slots; i++)
        pthread_create(&w->slots[i].thread, NULL, slot_main, &w->slots[i]);

    cJSON *ready = cJSON_CreateObject();
    cJSON_AddNumberToObject(ready, "slots", w->n_slots);
    cJSON_AddNumberToObject(ready, "threads", kiln_session_threads(w->slots[0].s));
    cJSON_AddStringToObject(ready, "device", kiln_session_device(w->slots[0].s));
    cJSON_AddStringToObject(ready, "kernels", kiln_session_kernels(w->slots[0].s));
    cJSON_AddStringToObject(ready, "fallback", kiln_session_fallback(w->slots[0].s));
    cJSON_AddNumberToObject(ready, "window", w->window);
    cJSON_AddNumberToObject(ready, "chunk", kiln_model_chunk(w->model));
    cJSON_AddStringToObject(ready, "mode", o->mode == KILN_MODE_KV ? "kv" : "stateless");
    cJSON_AddNumberToObject(ready, "pid", (double)getpid());
    send_json(w, SV_F_READY, 0, ready);

    long hang_at = test_env("KILN_SERVE_TEST_HANG");
    long n_requests = 0;
    for (;;) {
        sv_frame f;
        if (sv_frame_read(w->fd, &f)) break; /* the supervisor closed: stop */
        if (f.type == SV_F_SHUTDOWN) {
            free(f.data);
            break;
        }
        switch (f.type) {
        case SV_F_PING:
            send_pong(w, f.id);
            break;
        case SV_F_CANCEL:
            cancel_job(w, f.id);
            break;
        case SV_F_REQUEST: {
            if (hang_at > 0 && ++n_requests == hang_at) {
                sv_log("worker: KILN_SERVE_TEST_HANG=%ld: hanging (test switch)", hang_at);
                for (;;) pause();
            }
            job *j = calloc(1, sizeof *j);
            sv_error e;
            if (!j) {
                send_error(w, f.id, 500, NULL, "out of memory");
                break;
            }
            j->id = f.id;
            if (sv_job_from_json(f.data ? f.data : "", f.len, &j->spec, &e)) {
                send_error(w, f.id, 500, NULL, e.message);
                job_free(j);
                break;
            }
            if (prepare(w, j)) {
                job_free(j);
                break;
            }
            pthread_mutex_lock(&w->mu);
            if (w->pending_tail) w->pending_tail->next = j;
            else w->pending = j;
            w->pending_tail = j;
            schedule_locked(w);
            pthread_mutex_unlock(&w->mu);
            break;
        }
        default:
            break;
        }
        free(f.data);
    }
    /* stop: running jobs are cancelled (the supervisor only asks once it has drained) */
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    for (int i = 0; i < w->n_slots; i++) {
        if (w->slots[i].job) __atomic_store_n(&w->slots[i].job->cancel, 1, __ATOMIC_RELAXED);
        pthread_cond_signal(&w->slots[i].cv);
    }
    while (w->pending) {
        job *j = w->pending;
        w->pending = j->next;
        job_free(j);
    }
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->n_slots; i++) pthread_join(w->slots[i].thread, NULL);
    for (int i = 0; i < w->n_slots; i++) {
        kiln_session_free(w->slots[i].s);
        pthread_cond_destroy(&w->slots[i].cv);
    }
    kiln_model_free(w->model);
    pthread_mutex_destroy(&w->mu);
    pthread_mutex_destroy(&w->send_mu);
    free(w->slots);
    free(w);
    return 0;
}
