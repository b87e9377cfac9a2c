/* serve.h — `kiln serve`: an OpenAI-compatible HTTP server in two processes.
 *
 *   supervisor (supervisor.c, http.c, metrics.c)  never loads a model. It owns the HTTP port
 *       (libmicrohttpd), checks each request (request.c), keeps the bounded FIFO queue, hands
 *       requests to the worker as its slots free up, turns the worker's events into OpenAI
 *       responses (JSON or SSE), counts everything for /metrics, and runs the worker as a
 *       child: restarts it with backoff when it dies or misses its heartbeat (--watchdog).
 *   worker (worker.c)  `kiln serve --worker-fd FD ...`, exec'd by the supervisor: opens the
 *       model once, one kiln_session per slot, picks for each request the free slot whose
 *       cache shares the longest prefix with it, and generates (one thread per busy slot).
 *
 * They speak frames over a socketpair (proto.c). The serve layer uses only include/kiln.h. */
#ifndef KILN_SERVE_H
#define KILN_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

#define SV_MAX_STOPS 16
#define SV_MAX_STOP_BYTES 256

/* Everything `kiln serve` is told on its command line; the worker gets the same argv. */
typedef struct sv_options {
    const char *model;          /* OFFERING (or any source kiln run opens) */
    const char *alias;          /* the model id clients name; default: the path's last part */
    const char *host;           /* default 127.0.0.1 */
    int port;                   /* default 8080; 0 = any free port (printed) */
    int parallel;               /* slots: sessions on the one model */
    int queue;                  /* requests waiting beyond the busy slots; more: 429 */
    int threads;                /* CPU threads in all; each slot gets max(1, threads/parallel) */
    const char *api_key;        /* Bearer key for /v1/ (or $KILN_API_KEY); NULL: open */
    size_t max_body;            /* bytes of a request body; more: 413 */
    int max_tokens;             /* default and cap of a request's max_tokens (0: the window) */
    double watchdog;            /* seconds without a heartbeat answer before a restart; 0 off */
    double drain_timeout;       /* seconds SIGTERM waits for requests in flight */
    bool verbose;               /* one stderr line per request */
    /* defaults of a request that does not say (kiln run's defaults) */
    kiln_sampling sampling;
    const char *chat_template;
    const char *chat_template_kwargs; /* JSON object, or NULL */
    /* the model and its sessions, as kiln run opens them */
    const char *device, *openvino_lib, *tokenizer;
    int no_fallback, verify;
    kiln_mode mode;
    kiln_overflow overflow;
    int window, chunk;
    /* internal: set in the worker process (the socket to the supervisor) */
    int worker_fd;
    /* the command's exit status for a library status (src/cli/exit.c) */
    int (*exit_code)(kiln_status);
} sv_options;

/* The two processes. argv is kept for the worker's exec. */
int sv_supervisor_main(const sv_options *o, int argc, char **argv);
int sv_worker_main(const sv_options *o);

/* Constant-time comparison of a presented key with the configured one. */
bool sv_key_equal(const char *given, size_t given_len, const char *want);

/* Monotonic seconds. */
double sv_now(void);

/* One stderr line "kiln: serve: ..." (with the time). */
void sv_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
