/* supervisor.c — the `kiln serve` process that never loads a model: it runs the worker as a
 * child, restarts it (with backoff) when it dies or misses its heartbeat, keeps the bounded
 * FIFO of requests waiting for a slot, and routes the worker's events to the requests.
 *
 * Threads: main (signals, the worker's life, heartbeat and watchdog, the drain), reader (the
 * current worker's frames), sender (frames to the worker, so that no lock is held while a
 * write blocks on a worker that stopped reading), and libmicrohttpd's (http.c). */
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "proto.h"
#include "sup.h"

double sv_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

void sv_log(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "kiln: serve: %s\n", msg);
}

bool sv_key_equal(const char *given, size_t given_len, const char *want) {
    /* every byte of the longer one is looked at, whatever matches: the time says nothing */
    size_t wl = strlen(want), n = given_len > wl ? given_len : wl;
    unsigned char diff = given_len != wl;
    for (size_t i = 0; i < n; i++) {
        unsigned char a = i < given_len ? (unsigned char)given[i] : 0;
        unsigned char b = i < wl ? (unsigned char)want[i] : 0;
        diff |= a ^ b;
    }
    return diff == 0;
}

/* ---- frames to the worker ---- */

static void conn_release_locked(wconn *c) {
    if (c && --c->refs == 0) {
        close(c->fd);
        free(c);
    }
}

static void send_locked(sup *s, uint32_t type, uint64_t id, const char *data, size_t len) {
    if (!s->conn) return;
    out_frame *f = calloc(1, sizeof *f);
    if (!f) return;
    if (len && !(f->data = malloc(len))) {
        free(f);
        return;
    }
    if (len) memcpy(f->data, data, len);
    f->len = len;
    f->type = type;
    f->id = id;
    f->to = s->conn;
    s->conn->refs++;
    if (s->outq_tail) s->outq_tail->next = f;
    else s->outq = f;
    s->outq_tail = f;
    pthread_cond_signal(&s->out_cv);
}

static void *sender_main(void *arg) {
    sup *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->outq && !s->quit) pthread_cond_wait(&s->out_cv, &s->mu);
        if (!s->outq) break;
        out_frame *f = s->outq;
        s->outq = f->next;
        if (!s->outq) s->outq_tail = NULL;
        pthread_mutex_unlock(&s->mu);
        /* a worker that died or was replaced: its frames go nowhere (write fails or is moot) */
        sv_frame_write(f->to->fd, f->type, f->id, f->data, f->len);
        pthread_mutex_lock(&s->mu);
        conn_release_locked(f->to);
        free(f->data);
        free(f);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- requests ---- */

void sup_req_release_locked(sup *s, sv_req *q) {
    (void)s;
    if (--q->refs > 0) return;
    while (q->head) {
        rq_piece *p = q->head;
        q->head = p->next;
        free(p);
    }
    sv_request_free(&q->r);
    free(q->text);
    free(q->out);
    pthread_cond_destroy(&q->cv);
    free(q);
}

static void dispatch_locked(sup *s) {
    while (s->ws == WS_READY && s->queue && s->n_sent < s->slots) {
        sv_req *q = s->queue;
        s->queue = q->next;
        if (!s->queue) s->queue_tail = NULL;
        s->queue_len--;
        q->next = s->sent;
        s->sent = q;
        s->n_sent++;
        q->state = RQ_SENT;
        send_locked(s, SV_F_REQUEST, q->id, q->r.worker_json, strlen(q->r.worker_json));
    }
}

const char *sup_state_word_locked(const sup *s) {
    if (s->draining) return "draining";
    if (s->ws == WS_READY) return "ok";
    return s->ever_ready ? "restarting" : "loading";
}

int sup_submit_locked(sup *s, sv_req *q, sv_error *e) {
    if (s->draining) {
        sv_error_set(e, 503, "unavailable_error", "shutting_down", NULL,
                     "the server is shutting down (draining requests in flight)");
        return -1;
    }
    if (s->ws != WS_READY) {
        if (s->ever_ready)
            sv_error_set(e, 503, "unavailable_error", "worker_restarting", NULL,
                         "the inference worker is restarting (%s); retry shortly", s->why_down);
        else
            sv_error_set(e, 503, "unavailable_error", "model_loading", NULL,
                         "the model is loading; retry shortly");
        return -1;
    }
    if (s->n_sent >= s->slots && s->queue_len >= s->o.queue) {
        sv_error_set(e, 429, "rate_limit_error", "queue_full", NULL,
                     "all %d slots are busy and %d requests are waiting (--queue %d); retry "
                     "shortly", s->slots, s->queue_len, s->o.queue);
        return -1;
    }
    q->id = ++s->next_id;
    q->refs++; /* the supervisor's, until the worker answers */
    q->state = RQ_QUEUED;
    if (s->queue_tail) s->queue_tail->next = q;
    else s->queue = q;
    s->queue_tail = q;
    s->queue_len++;
    dispatch_locked(s);
    return 0;
}

static sv_req *unlink_sent_locked(sup *s, uint64_t id) {
    for (sv_req **pp = &s->sent; *pp; pp = &(*pp)->next)
        if ((*pp)->id == id) {
            sv_req *q = *pp;
            *pp = q->next;
            q->next = NULL;
            s->n_sent--;
            return q;
        }
    return NULL;
}

void sup_abandon_locked(sup *s, sv_req *q) {
    q->client_gone = true;
    if (q->state == RQ_QUEUED) {
        sv_req *prev = NULL;
        for (sv_req *p = s->queue; p; prev = p, p = p->next)
            if (p == q) {
                if (prev) prev->next = q->next;
                else s->queue = q->next;
                if (s->queue_tail == q) s->queue_tail = prev;
                s->queue_len--;
                q->next = NULL;
                q->state = RQ_FINISHED;
                sup_req_release_locked(s, q);
                return;
            }
    } else if (q->state == RQ_SENT || q->state == RQ_STARTED) {
        send_locked(s, SV_F_CANCEL, q->id, NULL, 0);
    }
}

/* The worker answered (DONE or ERROR) or is gone: the request is finished. */
static void finish_locked(sup *s, sv_req *q) {
    q->state = RQ_FINISHED;
    q->done = true;
    q->t_done = sv_now();
    pthread_cond_broadcast(&q->cv);
    sup_req_release_locked(s, q);
}

static void on_text_locked(sup *s, sv_req *q, const char *data, size_t len) {
    if (!q->t_first_text) {
        q->t_first_text = sv_now();
        sv_hist_observe(&s->m.ttft, q->t_first_text - q->t_arrival);
    }
    if (q->client_gone || !len) return;
    if (q->r.stream) {
        rq_piece *p = malloc(sizeof *p + len);
        if (!p) {
            q->text_oom = true;
            return;
        }
        p->next = NULL;
        p->len = len;
        memcpy(p->data, data, len);
        if (q->tail) q->tail->next = p;
        else q->head = p;
        q->tail = p;
    } else {
        if (q->text_len + len + 1 > q->text_cap) {
            size_t cap = (q->text_cap ? q->text_cap * 2 : 1024) + len;
            char *t = realloc(q->text, cap);
            if (!t) {
                q->text_oom = true;
                return;
            }
            q->text = t;
            q->text_cap = cap;
        }
        memcpy(q->text + q->text_len, data, len);
        q->text_len += len;
        q->text[q->text_len] = 0;
    }
    pthread_cond_broadcast(&q->cv);
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static const char *str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static void on_done_locked(sup *s, sv_req *q, const sv_frame *f) {
    cJSON *j = cJSON_ParseWithLength(f->data ? f->data : "", f->len);
    if (f->type == SV_F_ERROR) {
        int status = (int)num(j, "status");
        if (status < 400 || status > 599) status = 500;
        const char *code = str(j, "code");
        /* the codes a worker sends are a fixed few: keep them as static strings */
        static const char *const codes[] = {"context_length_exceeded", "invalid_value", NULL};
        const char *c = NULL;
        for (int i = 0; codes[i]; i++)
            if (strcmp(code, codes[i]) == 0) c = codes[i];
        sv_error_set(&q->err, status, status < 500 ? "invalid_request_error" : "server_error", c,
                     status == 400 && q->r.kind == SV_CHAT ? "messages"
                     : status == 400 ? "prompt" : NULL, "%s", str(j, "message"));
        q->failed = true;
    } else {
        snprintf(q->finish_reason, sizeof q->finish_reason, "%s", str(j, "finish_reason"));
        q->prompt_tokens = (int)num(j, "prompt_tokens");
        q->cached_tokens = (int)num(j, "cached_tokens");
        q->completion_tokens = (int)num(j, "completion_tokens");
        s->m.prompt_tokens += (uint64_t)q->prompt_tokens;
        s->m.cached_tokens += (uint64_t)q->cached_tokens;
        s->m.generation_tokens += (uint64_t)q->completion_tokens;
        double ttft = num(j, "ttft_ms"), total = num(j, "total_ms");
        if (q->completion_tokens > 1)
            sv_hist_observe(&s->m.tpot, (total - ttft) / 1e3 / (q->completion_tokens - 1));
        if (!q->t_first_text) {
            /* an answer with no text (an immediate end of turn): its first token was its end */
            q->t_first_text = sv_now();
            sv_hist_observe(&s->m.ttft, q->t_first_text - q->t_arrival);
        }
    }
    cJSON_Delete(j);
    finish_locked(s, q);
}

static void on_ready_locked(sup *s, const sv_frame *f) {
    cJSON *j = cJSON_ParseWithLength(f->data ? f->data : "", f->len);
    s->slots = (int)num(j, "slots");
    if (s->slots < 1) s->slots = 1;
    snprintf(s->m.device, sizeof s->m.device, "%s", str(j, "device"));
    snprintf(s->m.kernels, sizeof s->m.kernels, "%s", str(j, "kernels"));
    snprintf(s->m.fallback, sizeof s->m.fallback, "%s", str(j, "fallback"));
    snprintf(s->m.mode, sizeof s->m.mode, "%s", str(j, "mode"));
    if (s->m.fallback[0]) s->m.fallbacks++;
    s->m.slots = s->slots;
    sv_log("worker %d ready in %.1f s: %d slot%s on %s%s%s (%d thread%s, shared), window %d",
           (int)s->pid, sv_now() - s->started_at, s->slots, s->slots == 1 ? "" : "s",
           s->m.device, s->m.kernels[0] ? " " : "", s->m.kernels, (int)num(j, "threads"),
           num(j, "threads") == 1 ? "" : "s", (int)num(j, "window"));
    cJSON_Delete(j);
    s->ws = WS_READY;
    s->ever_ready = true;
    s->ready_at = s->last_pong = sv_now();
    s->m.ready = 1;
    dispatch_locked(s);
    pthread_cond_broadcast(&s->cv);
}

static void on_pong_locked(sup *s, const sv_frame *f) {
    s->last_pong = sv_now();
    cJSON *j = cJSON_ParseWithLength(f->data ? f->data : "", f->len);
    s->m.slots_busy = (int)num(j, "busy");
    double cap = num(j, "kv_capacity");
    s->m.kv_usage = cap > 0 ? num(j, "kv_busy_tokens") / cap : 0;
    if (s->m.kv_usage > 1) s->m.kv_usage = 1;
    s->m.prefix_tokens = (long)num(j, "kv_idle_tokens");
    s->m.batched_steps = (long)num(j, "batched_steps");
    cJSON_Delete(j);
}

typedef struct reader_arg {
    sup *s;
    wconn *c;
} reader_arg;

static void *reader_main(void *arg) {
    reader_arg a = *(reader_arg *)arg;
    free(arg);
    sup *s = a.s;
    for (;;) {
        sv_frame f;
        int r = sv_frame_read(a.c->fd, &f);
        if (r) {
            if (r < 0) {
                /* a frame that does not parse: the worker is not to be trusted any more */
                pthread_mutex_lock(&s->mu);
                if (s->conn == a.c && s->pid > 0 && !s->kill_reason[0]) {
                    snprintf(s->kill_reason, sizeof s->kill_reason,
                             "the inference worker sent a malformed message");
                    kill(s->pid, SIGKILL);
                }
                pthread_mutex_unlock(&s->mu);
                shutdown(a.c->fd, SHUT_RDWR);
            }
            break;
        }
        pthread_mutex_lock(&s->mu);
        if (s->conn == a.c) {
            sv_req *q;
            switch (f.type) {
            case SV_F_READY: on_ready_locked(s, &f); break;
            case SV_F_PONG: on_pong_locked(s, &f); break;
            case SV_F_START:
                for (q = s->sent; q && q->id != f.id; q = q->next) {}
                if (q) {
                    q->state = RQ_STARTED;
                    q->started = true;
                    q->t_start = sv_now();
                    sv_hist_observe(&s->m.queue_time, q->t_start - q->t_arrival);
                    pthread_cond_broadcast(&q->cv);
                }
                break;
            case SV_F_TEXT:
                for (q = s->sent; q && q->id != f.id; q = q->next) {}
                if (q) on_text_locked(s, q, f.data, f.len);
                break;
            case SV_F_DONE:
            case SV_F_ERROR:
                if ((q = unlink_sent_locked(s, f.id))) {
                    on_done_locked(s, q, &f);
                    dispatch_locked(s);
                }
                break;
            default: break;
            }
        }
        pthread_mutex_unlock(&s->mu);
        free(f.data);
    }
    pthread_mutex_lock(&s->mu);
    conn_release_locked(a.c);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- the worker's life ---- */

static int spawn_worker_locked(sup *s) {
    if (s->reader_live) {
        /* the last worker's reader ends by itself at its socket's end */
        pthread_detach(s->reader);
        s->reader_live = false;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
        sv_log("cannot create the worker's socket: %s", strerror(errno));
        return -1;
    }
    char fdbuf[16];
    snprintf(fdbuf, sizeof fdbuf, "%d", sv[1]);
    s->argv[3] = fdbuf; /* "kiln" "serve" "--worker-fd" FD ... */
    sigset_t none;
    sigemptyset(&none);
    pid_t pid = fork();
    if (pid < 0) {
        sv_log("cannot start the worker: %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (pid == 0) {
        /* the child: only async-signal-safe calls until exec */
        fcntl(sv[1], F_SETFD, 0);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv("/proc/self/exe", s->argv);
        _exit(127);
    }
    close(sv[1]);
    wconn *c = calloc(1, sizeof *c);
    reader_arg *ra = malloc(sizeof *ra);
    if (!c || !ra) {
        free(c);
        free(ra);
        close(sv[0]);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    c->fd = sv[0];
    c->refs = 2; /* the supervisor's and the reader's */
    s->conn = c;
    s->pid = pid;
    s->ws = WS_STARTING;
    s->started_at = sv_now();
    s->kill_reason[0] = 0;
    s->m.ready = 0;
    ra->s = s;
    ra->c = c;
    if (pthread_create(&s->reader, NULL, reader_main, ra)) {
        free(ra);
        c->refs--;
        kill(pid, SIGKILL);
        return -1;
    }
    s->reader_live = true;
    return 0;
}

static void describe_exit(int status, char *buf, size_t cap) {
    if (WIFSIGNALED(status))
        snprintf(buf, cap, "it was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, cap, "it exited with status %d", WEXITSTATUS(status));
}

/* Every request still waiting (and with all, also those in the worker) gets a 503 with this
 * reason: the server stops. */
static void fail_locked(sup *s, bool all, const char *why) {
    while (s->queue) {
        sv_req *q = s->queue;
        s->queue = q->next;
        q->next = NULL;
        s->queue_len--;
        sv_error_set(&q->err, 503, "unavailable_error", "shutting_down", NULL, "%s", why);
        q->failed = true;
        finish_locked(s, q);
    }
    s->queue_tail = NULL;
    while (all && s->sent) {
        sv_req *q = s->sent;
        s->sent = q->next;
        q->next = NULL;
        s->n_sent--;
        sv_error_set(&q->err, 503, "unavailable_error", "shutting_down", NULL, "%s", why);
        q->failed = true;
        finish_locked(s, q);
    }
}

/* The worker is gone: every request it held gets a 503 naming why; the queue waits for the
 * next worker. */
static void worker_gone_locked(sup *s, int status) {
    char how[128];
    describe_exit(status, how, sizeof how);
    if (s->kill_reason[0])
        snprintf(s->why_down, sizeof s->why_down, "%s", s->kill_reason);
    else
        snprintf(s->why_down, sizeof s->why_down, "the inference worker died: %s", how);
    sv_log("worker %d is gone: %s", (int)s->pid, s->why_down);
    while (s->sent) {
        sv_req *q = s->sent;
        s->sent = q->next;
        q->next = NULL;
        s->n_sent--;
        sv_error_set(&q->err, 503, "server_error", "worker_failed", NULL,
                     "%s; the request was lost and the worker is being restarted", s->why_down);
        q->failed = true;
        finish_locked(s, q);
    }
    if (s->conn) {
        shutdown(s->conn->fd, SHUT_RDWR);
        conn_release_locked(s->conn);
        s->conn = NULL;
    }
    s->ws = WS_DOWN;
    s->pid = 0;
    s->m.ready = 0;
    s->m.slots_busy = 0;
    s->m.kv_usage = 0;
    if (s->ever_ready) s->m.worker_restarts++;
    /* back off when it keeps failing soon after starting; a long good run forgives */
    s->failures = s->ready_at && sv_now() - s->ready_at > 60 ? 1 : s->failures + 1;
    double delay = 0.25;
    for (int i = 1; i < s->failures && delay < 30; i++) delay *= 2;
    s->restart_at = sv_now() + (delay > 30 ? 30 : delay);
    s->ready_at = 0;
}

static volatile sig_atomic_t g_dummy;

static void noop_handler(int sig) {
    (void)sig;
    g_dummy = 1;
}

int sv_supervisor_main(const sv_options *o, int argc, char **argv) {
    static sup S;
    sup *s = &S;
    s->o = *o;
    struct stat st;
    if (stat(o->model, &st)) {
        fprintf(stderr, "kiln: %s: %s\n", o->model, strerror(errno));
        return 2;
    }
    const char *base = o->model + strlen(o->model);
    while (base > o->model && base[-1] == '/') base--;
    const char *end = base;
    while (base > o->model && base[-1] != '/') base--;
    snprintf(s->model_id, sizeof s->model_id, "%.*s", (int)(end - base), base);
    if (o->alias) snprintf(s->model_id, sizeof s->model_id, "%s", o->alias);
    if (!s->model_id[0]) snprintf(s->model_id, sizeof s->model_id, "kiln");
    s->created = (long)time(NULL);
    /* the worker's argv: kiln serve --worker-fd FD ARGS... (FD filled at each start) */
    s->argv = calloc((size_t)argc + 5, sizeof *s->argv);
    if (!s->argv) return 1;
    s->argv[0] = "kiln";
    s->argv[1] = "serve";
    s->argv[2] = "--worker-fd";
    for (int i = 1; i < argc; i++) s->argv[3 + i] = argv[i];
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_cond_init(&s->out_cv, NULL);
    sv_metrics_init(&s->m);

    /* signals go to the main thread only, which waits for them */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGHUP);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = noop_handler; /* SIGCHLD must not be ignored for sigtimedwait to see it */
    sigaction(SIGCHLD, &sa, NULL);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    int port = 0;
    char err[256];
    struct MHD_Daemon *d = sv_http_start(s, &port, err, sizeof err);
    if (!d) {
        fprintf(stderr, "kiln: %s\n", err);
        return 1;
    }
    sv_log("listening on http://%s%s%s:%d (model '%s'; /health is 503 until the worker is ready)",
           strchr(o->host, ':') ? "[" : "", o->host, strchr(o->host, ':') ? "]" : "", port,
           s->model_id);
    pthread_t sender;
    pthread_create(&sender, NULL, sender_main, s);

    pthread_mutex_lock(&s->mu);
    spawn_worker_locked(s);
    pthread_mutex_unlock(&s->mu);

    int exit_code = 0;
    double drain_deadline = 0;
    bool cancelled_all = false;
    const double ping_every = o->watchdog > 0 && o->watchdog < 4 ? o->watchdog / 4 : 1.0;
    for (;;) {
        struct timespec tick = {0, 100 * 1000 * 1000};
        int sig = sigtimedwait(&set, NULL, &tick);
        pthread_mutex_lock(&s->mu);
        double now = sv_now();
        if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
            if (s->draining) {
                sv_log("second signal: stopping now");
                drain_deadline = now;
            } else {
                s->draining = true;
                exit_code = sig == SIGINT ? 130 : 0;
                drain_deadline = now + o->drain_timeout;
                sv_log("%s: draining %d request%s in flight (up to %.0f s), taking no new ones",
                       sig == SIGINT ? "interrupted" : sig == SIGTERM ? "SIGTERM" : "SIGHUP",
                       s->active, s->active == 1 ? "" : "s", o->drain_timeout);
                pthread_mutex_unlock(&s->mu);
                int lfd = (int)MHD_quiesce_daemon(d);
                if (lfd >= 0) close(lfd);
                pthread_mutex_lock(&s->mu);
            }
        }
        /* the worker */
        if (s->pid > 0) {
            int status;
            pid_t r = waitpid(s->pid, &status, WNOHANG);
            if (r == s->pid) {
                bool load_failed = !s->ever_ready && s->ws == WS_STARTING && WIFEXITED(status) &&
                                   WEXITSTATUS(status) != 0;
                if (load_failed) {
                    /* it could not open the model or its device: that will not get better, and
                     * it has said why on stderr */
                    exit_code = WEXITSTATUS(status);
                    s->pid = 0;
                    pthread_mutex_unlock(&s->mu);
                    break;
                }
                worker_gone_locked(s, status);
                if (s->draining && exit_code == 0) exit_code = 1;
            }
        }
        if (s->draining) {
            /* no worker will come back for the queue while the server stops */
            if (s->ws == WS_DOWN && s->queue)
                fail_locked(s, false, "the server is shutting down and its worker is gone");
            if (s->active == 0 || now >= drain_deadline) {
                if (s->active && !cancelled_all) {
                    sv_log("drain timeout: cancelling %d request%s", s->active,
                           s->active == 1 ? "" : "s");
                    fail_locked(s, false, "the server is shutting down (--drain-timeout ran out "
                                "before this request had a slot)");
                    for (sv_req *q = s->sent; q; q = q->next)
                        send_locked(s, SV_F_CANCEL, q->id, NULL, 0);
                    cancelled_all = true;
                    drain_deadline = now + 5;
                } else {
                    pthread_mutex_unlock(&s->mu);
                    break;
                }
            }
        } else if (s->ws == WS_DOWN && s->pid == 0 && now >= s->restart_at) {
            sv_log("restarting the worker (%s)", s->why_down);
            spawn_worker_locked(s);
        }
        if (s->ws == WS_READY && s->pid > 0) {
            if (now - s->last_ping >= ping_every) {
                send_locked(s, SV_F_PING, ++s->ping_seq, NULL, 0);
                s->last_ping = now;
            }
            if (o->watchdog > 0 && now - s->last_pong > o->watchdog && !s->kill_reason[0]) {
                snprintf(s->kill_reason, sizeof s->kill_reason,
                         "the inference worker answered no heartbeat for %.0f s (--watchdog %g)",
                         now - s->last_pong, o->watchdog);
                sv_log("watchdog: %s: killing worker %d", s->kill_reason, (int)s->pid);
                kill(s->pid, SIGKILL);
            }
        }
        pthread_mutex_unlock(&s->mu);
    }

    /* stop: the worker frees everything and exits; the HTTP side closes */
    pthread_mutex_lock(&s->mu);
    if (s->pid > 0) {
        send_locked(s, SV_F_SHUTDOWN, 0, NULL, 0);
        pid_t pid = s->pid;
        pthread_mutex_unlock(&s->mu);
        int status = 0;
        double until = sv_now() + 10;
        while (waitpid(pid, &status, WNOHANG) == 0) {
            if (sv_now() > until) {
                sv_log("worker %d did not stop in 10 s: killing it", (int)pid);
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                break;
            }
            usleep(20000);
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            char how[128];
            describe_exit(status, how, sizeof how);
            sv_log("worker %d stopped badly: %s", (int)pid, how);
            if (exit_code == 0) exit_code = 1;
        }
        pthread_mutex_lock(&s->mu);
        s->pid = 0;
    }
    if (s->conn) {
        shutdown(s->conn->fd, SHUT_RDWR);
        conn_release_locked(s->conn);
        s->conn = NULL;
    }
    /* whatever is left (a drain that ran out of time) is answered before the HTTP side stops:
     * libmicrohttpd waits for every connection's thread */
    fail_locked(s, true, "the server is shutting down");
    pthread_mutex_unlock(&s->mu);
    MHD_stop_daemon(d);
    pthread_mutex_lock(&s->mu);
    s->quit = true;
    pthread_cond_broadcast(&s->out_cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(sender, NULL);
    if (s->reader_live) pthread_join(s->reader, NULL);
    free(s->argv);
    if (s->draining) sv_log("stopped");
    return exit_code;
}
