/* sup.h — what the supervisor's files share (supervisor.c: the worker, the queue, the events;
 * http.c: the HTTP side). One mutex, sup.mu, guards everything here except where noted. */
#ifndef KILN_SERVE_SUP_H
#define KILN_SERVE_SUP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "metrics.h"
#include "request.h"
#include "serve.h"

typedef enum rq_state { RQ_QUEUED, RQ_SENT, RQ_STARTED, RQ_FINISHED } rq_state;

typedef struct rq_piece {
    struct rq_piece *next;
    size_t len;
    char data[];
} rq_piece;

/* One generation request, from its arrival to its last byte. Held by the HTTP connection and,
 * while it is queued or in the worker, by the supervisor (refs counts both). */
typedef struct sv_req {
    uint64_t id;
    sv_request r;               /* kind, stream, include_usage, worker_json */
    char rid[48];               /* "chatcmpl-..." */
    long created;
    const char *endpoint;       /* for the metrics: "chat" or "completions" */
    double t_arrival, t_start, t_first_text, t_done;
    rq_state state;
    int refs;
    pthread_cond_t cv;
    struct sv_req *next;        /* in the queue or the sent list */
    /* results */
    rq_piece *head, *tail;      /* streamed text not yet sent to the client */
    char *text;                 /* non-stream: the whole answer */
    size_t text_len, text_cap;
    bool started, done, failed, text_oom;
    sv_error err;
    char finish_reason[16];
    int prompt_tokens, cached_tokens, completion_tokens;
    bool client_gone;
    /* the SSE writer (http.c, the connection's thread only) */
    int fd;
    int sse_phase;              /* 0: role chunk next, 1: pieces, 2: ended */
    char *out;                  /* formatted bytes not yet handed to MHD */
    size_t out_len, out_off;
    int status_counted;
} sv_req;

typedef enum worker_state { WS_STARTING, WS_READY, WS_DOWN } worker_state;

typedef struct wconn {          /* one worker's socket, shared by the reader and the sender */
    int fd;
    int refs;                   /* under sup.mu; the last one closes fd */
} wconn;

typedef struct out_frame {
    struct out_frame *next;
    uint32_t type;
    uint64_t id;
    wconn *to;
    char *data;
    size_t len;
} out_frame;

typedef struct sup {
    sv_options o;
    char **argv;                /* the worker's argv */
    char model_id[256];
    long created;
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* the main loop: something changed */
    /* the worker */
    worker_state ws;
    pid_t pid;
    wconn *conn;
    pthread_t reader;
    bool reader_live;
    double started_at, ready_at, last_pong, restart_at;
    int failures;               /* in a row, for the backoff */
    bool ever_ready;
    char why_down[256];         /* why the last worker went away: in 503s */
    char kill_reason[160];      /* set before the supervisor kills it (watchdog) */
    uint64_t ping_seq;
    double last_ping;
    int slots;
    /* requests */
    sv_req *queue, *queue_tail;
    int queue_len;
    sv_req *sent;
    int n_sent;
    int active;                 /* generation requests whose HTTP answer is not finished */
    uint64_t next_id;
    bool draining;
    /* frames to the worker, written by the sender thread */
    out_frame *outq, *outq_tail;
    pthread_cond_t out_cv;
    bool quit;
    sv_metrics m;
} sup;

/* supervisor.c */
void sup_req_release_locked(sup *s, sv_req *q);
/* Admits a checked request: dispatched or queued (0), or refused with *e set (429, 503). */
int sup_submit_locked(sup *s, sv_req *q, sv_error *e);
/* The client went away: a queued request leaves the queue; a sent one is cancelled. */
void sup_abandon_locked(sup *s, sv_req *q);
const char *sup_state_word_locked(const sup *s);

/* http.c */
struct MHD_Daemon;
struct MHD_Daemon *sv_http_start(sup *s, int *port_out, char *err, size_t errcap);

#endif
