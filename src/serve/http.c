/* http.c — the HTTP side of the supervisor (libmicrohttpd, a thread per connection): routes,
 * authentication, body limits, OpenAI's response shapes, and server-sent events.
 *
 * A connection's thread may block: a generation request waits (in its handler, then in the
 * SSE reader) for the worker's events, looking at its socket every 200 ms so that a client that
 * went away cancels its request and frees its slot. */
#define _GNU_SOURCE /* POLLRDHUP */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "sup.h"

static sup *G; /* the one server of this process */

typedef struct conn_ctx {
    char *body;
    size_t len, cap;
    bool too_large;
    sv_req *q;                /* the generation request this HTTP request made, if any */
    const char *endpoint;
    double t0;
    int status;
    char method[8], url[96];
} conn_ctx;

/* ---- small helpers ---- */

static bool client_gone(int fd) {
    struct pollfd p = {fd, POLLRDHUP, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static void timed_wait(pthread_cond_t *cv, pthread_mutex_t *mu, double seconds) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    long ns = t.tv_nsec + (long)(seconds * 1e9);
    t.tv_sec += ns / 1000000000L;
    t.tv_nsec = ns % 1000000000L;
    pthread_cond_timedwait(cv, mu, &t);
}

/* text[0..len) as a quoted JSON string (NUL bytes and control characters escaped) */
static char *json_quote(const char *text, size_t len) {
    size_t cap = len * 6 + 3;
    char *o = malloc(cap), *p = o;
    if (!o) return NULL;
    *p++ = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (char)c;
        } else if (c == '\n') {
            *p++ = '\\';
            *p++ = 'n';
        } else if (c == '\r') {
            *p++ = '\\';
            *p++ = 'r';
        } else if (c == '\t') {
            *p++ = '\\';
            *p++ = 't';
        } else if (c < 0x20 || c == 0x7f) {
            p += sprintf(p, "\\u%04x", c);
        } else {
            *p++ = (char)c;
        }
    }
    *p++ = '"';
    *p = 0;
    return o;
}

static void count_status(conn_ctx *x, int status) {
    x->status = status;
    pthread_mutex_lock(&G->mu);
    sv_metrics_count_request(&G->m, x->endpoint, status);
    pthread_mutex_unlock(&G->mu);
}

static enum MHD_Result reply(struct MHD_Connection *c, conn_ctx *x, int status, const char *ctype,
                             char *body, size_t len, const char *retry_after) {
    if (!body) {
        status = 500;
        ctype = "application/json";
        body = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                      "\"param\":null,\"code\":null}}");
        len = body ? strlen(body) : 0;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    if (retry_after) MHD_add_response_header(r, "Retry-After", retry_after);
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    if (status == 405) {
        const char *allow = strstr(x->url, "completions") ? "POST" : "GET";
        MHD_add_response_header(r, "Allow", allow);
    }
    count_status(x, status);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_json(struct MHD_Connection *c, conn_ctx *x, int status, cJSON *j) {
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return reply(c, x, status, "application/json", s, s ? strlen(s) : 0, NULL);
}

static enum MHD_Result reply_error(struct MHD_Connection *c, conn_ctx *x, const sv_error *e) {
    char *s = sv_error_json(e);
    return reply(c, x, e->status, "application/json", s, s ? strlen(s) : 0,
                 e->status == 429 || e->status == 503 ? "1" : NULL);
}

static enum MHD_Result fail(struct MHD_Connection *c, conn_ctx *x, int status, const char *type,
                            const char *code, const char *msg) {
    sv_error e;
    sv_error_set(&e, status, type, code, NULL, "%s", msg);
    return reply_error(c, x, &e);
}

/* ---- OpenAI's shapes ---- */

static void add_common(cJSON *o, const sv_req *q, const char *object) {
    cJSON_AddStringToObject(o, "id", q->rid);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)q->created);
    cJSON_AddStringToObject(o, "model", G->model_id);
    cJSON_AddStringToObject(o, "system_fingerprint", "kiln-" KILN_VERSION);
}

static cJSON *usage_json(const sv_req *q) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", q->prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", q->completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", q->prompt_tokens + q->completion_tokens);
    cJSON *d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    cJSON_AddNumberToObject(d, "cached_tokens", q->cached_tokens);
    return u;
}

/* "stop" or "length". An answer cancelled by a drain that ran out of time was cut by a limit,
 * not finished by the model: "length". */
static const char *finish_word(const sv_req *q) {
    return strcmp(q->finish_reason, "stop") == 0 ? "stop" : "length";
}

static char *response_json(const sv_req *q) {
    cJSON *o = cJSON_CreateObject();
    bool chat = q->r.kind == SV_CHAT;
    add_common(o, q, chat ? "chat.completion" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(o, "choices"), *ch = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, ch);
    char *text = json_quote(q->text ? q->text : "", q->text_len);
    if (!text) {
        cJSON_Delete(o);
        return NULL;
    }
    if (chat) {
        cJSON_AddNumberToObject(ch, "index", 0);
        cJSON *m = cJSON_AddObjectToObject(ch, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddRawToObject(m, "content", text);
        cJSON_AddNullToObject(m, "refusal");
    } else {
        cJSON_AddRawToObject(ch, "text", text);
        cJSON_AddNumberToObject(ch, "index", 0);
    }
    free(text);
    cJSON_AddNullToObject(ch, "logprobs");
    cJSON_AddStringToObject(ch, "finish_reason", finish_word(q));
    cJSON_AddItemToObject(o, "usage", usage_json(q));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* One SSE chunk: delta text (or the role, or nothing), finish reason or null. */
static cJSON *chunk_json(const sv_req *q, const char *text, size_t len, bool role,
                         const char *finish) {
    cJSON *o = cJSON_CreateObject();
    bool chat = q->r.kind == SV_CHAT;
    add_common(o, q, chat ? "chat.completion.chunk" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(o, "choices"), *ch = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, ch);
    char *t = json_quote(text ? text : "", text ? len : 0);
    if (chat) {
        cJSON_AddNumberToObject(ch, "index", 0);
        cJSON *d = cJSON_AddObjectToObject(ch, "delta");
        if (role) cJSON_AddStringToObject(d, "role", "assistant");
        if (text && t) cJSON_AddRawToObject(d, "content", t);
    } else {
        if (t) cJSON_AddRawToObject(ch, "text", t);
        cJSON_AddNumberToObject(ch, "index", 0);
    }
    free(t);
    cJSON_AddNullToObject(ch, "logprobs");
    if (finish) cJSON_AddStringToObject(ch, "finish_reason", finish);
    else cJSON_AddNullToObject(ch, "finish_reason");
    /* with include_usage every chunk carries "usage": null, the last one the numbers */
    if (q->r.include_usage) cJSON_AddNullToObject(o, "usage");
    return o;
}

static void out_append(sv_req *q, const char *a, size_t n) {
    char *o = realloc(q->out, q->out_len + n + 1);
    if (!o) return;
    q->out = o;
    memcpy(q->out + q->out_len, a, n);
    q->out_len += n;
    q->out[q->out_len] = 0;
}

static void out_event(sv_req *q, cJSON *j) {
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!s) return;
    out_append(q, "data: ", 6);
    out_append(q, s, strlen(s));
    out_append(q, "\n\n", 2);
    free(s);
}

/* The next bytes of a stream: called by libmicrohttpd on the connection's thread; blocks until
 * the worker has something (or the client is gone). */
static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    conn_ctx *x = cls;
    sv_req *q = x->q;
    for (;;) {
        if (q->out_off < q->out_len) {
            size_t n = q->out_len - q->out_off < max ? q->out_len - q->out_off : max;
            memcpy(buf, q->out + q->out_off, n);
            q->out_off += n;
            return (ssize_t)n;
        }
        q->out_len = q->out_off = 0;
        if (q->sse_phase == 2) return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&G->mu);
        if (q->sse_phase == 0) {
            q->sse_phase = 1;
            if (q->r.kind == SV_CHAT) out_event(q, chunk_json(q, "", 0, true, NULL));
        } else if (q->head) {
            size_t total = 0;
            for (rq_piece *p = q->head; p; p = p->next) total += p->len;
            char *joined = malloc(total + 1), *at = joined;
            while (q->head) {
                rq_piece *p = q->head;
                q->head = p->next;
                if (joined) {
                    memcpy(at, p->data, p->len);
                    at += p->len;
                }
                free(p);
            }
            q->tail = NULL;
            if (joined) out_event(q, chunk_json(q, joined, total, false, NULL));
            free(joined);
        } else if (q->done) {
            q->sse_phase = 2;
            int status = 200;
            if (q->failed) {
                /* the headers said 200 long ago: the error travels as an event, and no [DONE] */
                status = q->err.status;
                char *e = sv_error_json(&q->err);
                if (e) {
                    out_append(q, "data: ", 6);
                    out_append(q, e, strlen(e));
                    out_append(q, "\n\n", 2);
                }
                free(e);
            } else {
                out_event(q, chunk_json(q, NULL, 0, false, finish_word(q)));
                if (q->r.include_usage) {
                    cJSON *u = chunk_json(q, NULL, 0, false, NULL);
                    cJSON_DeleteItemFromObject(u, "choices");
                    cJSON_AddArrayToObject(u, "choices");
                    cJSON_DeleteItemFromObject(u, "usage");
                    cJSON_AddItemToObject(u, "usage", usage_json(q));
                    out_event(q, u);
                }
                out_append(q, "data: [DONE]\n\n", 14);
            }
            x->status = status;
            sv_metrics_count_request(&G->m, x->endpoint, status);
            q->status_counted = 1;
        } else {
            timed_wait(&q->cv, &G->mu, 0.2);
            bool gone = !q->head && !q->done && client_gone(q->fd);
            if (gone) sup_abandon_locked(G, q);
            pthread_mutex_unlock(&G->mu);
            if (gone) return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        pthread_mutex_unlock(&G->mu);
    }
}

/* ---- the endpoints ---- */

static bool authorized(struct MHD_Connection *c) {
    if (!G->o.api_key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return false;
    h += 7;
    while (*h == ' ') h++;
    return sv_key_equal(h, strlen(h), G->o.api_key);
}

static enum MHD_Result health(struct MHD_Connection *c, conn_ctx *x) {
    cJSON *o = cJSON_CreateObject();
    pthread_mutex_lock(&G->mu);
    const char *word = sup_state_word_locked(G);
    bool ok = strcmp(word, "ok") == 0;
    cJSON_AddStringToObject(o, "status", word);
    if (ok) {
        cJSON_AddNumberToObject(o, "slots", G->slots);
        cJSON_AddNumberToObject(o, "slots_busy", G->n_sent);
        cJSON_AddNumberToObject(o, "queue", G->queue_len);
    } else {
        sv_error e;
        if (G->draining)
            sv_error_set(&e, 503, "unavailable_error", "shutting_down", NULL,
                         "the server is shutting down");
        else if (G->ever_ready)
            sv_error_set(&e, 503, "unavailable_error", "worker_restarting", NULL,
                         "the inference worker is restarting (%s)", G->why_down);
        else
            sv_error_set(&e, 503, "unavailable_error", "model_loading", NULL,
                         "the model is loading (and its device graphs compiling)");
        char *ej = sv_error_json(&e);
        cJSON *parsed = ej ? cJSON_Parse(ej) : NULL;
        free(ej);
        if (parsed) cJSON_AddItemToObject(o, "error", cJSON_DetachItemFromObject(parsed, "error"));
        cJSON_Delete(parsed);
    }
    pthread_mutex_unlock(&G->mu);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return reply(c, x, ok ? 200 : 503, "application/json", s, s ? strlen(s) : 0, ok ? NULL : "1");
}

static enum MHD_Result metrics(struct MHD_Connection *c, conn_ctx *x) {
    pthread_mutex_lock(&G->mu);
    int running = 0, sent_waiting = 0;
    for (sv_req *q = G->sent; q; q = q->next) {
        if (q->state == RQ_STARTED) running++;
        else sent_waiting++;
    }
    G->m.running = running;
    G->m.waiting = G->queue_len + sent_waiting;
    size_t len = 0;
    char *s = sv_metrics_render(&G->m, &len);
    pthread_mutex_unlock(&G->mu);
    return reply(c, x, 200, "text/plain; version=0.0.4; charset=utf-8", s, len, NULL);
}

static cJSON *model_json(void) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", G->model_id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)G->created);
    cJSON_AddStringToObject(m, "owned_by", "kiln");
    return m;
}

static enum MHD_Result models(struct MHD_Connection *c, conn_ctx *x, const char *id) {
    if (id) {
        if (strcmp(id, G->model_id) != 0) {
            sv_error e;
            sv_error_set(&e, 404, "invalid_request_error", "model_not_found", "model",
                         "The model '%.200s' does not exist: this server serves '%.200s'", id,
                         G->model_id);
            return reply_error(c, x, &e);
        }
        return reply_json(c, x, 200, model_json());
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "data"), model_json());
    return reply_json(c, x, 200, o);
}

static void new_rid(sv_req *q) {
    unsigned char b[12] = {0};
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) memcpy(b, &q->id, sizeof q->id);
    int at = snprintf(q->rid, sizeof q->rid, "%s", q->r.kind == SV_CHAT ? "chatcmpl-" : "cmpl-");
    for (size_t i = 0; i < sizeof b; i++) at += snprintf(q->rid + at, sizeof q->rid - (size_t)at, "%02x", b[i]);
}

static enum MHD_Result generate(struct MHD_Connection *c, conn_ctx *x, sv_kind kind) {
    sv_error e;
    sv_request r;
    if (sv_request_parse(x->body ? x->body : "", x->len, kind, G->model_id, &r, &e))
        return reply_error(c, x, &e);
    sv_req *q = calloc(1, sizeof *q);
    if (!q) {
        sv_request_free(&r);
        return fail(c, x, 500, "server_error", NULL, "out of memory");
    }
    q->r = r;
    q->refs = 1; /* this connection's */
    pthread_cond_init(&q->cv, NULL);
    q->t_arrival = x->t0;
    q->created = (long)time(NULL);
    q->endpoint = x->endpoint;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    q->fd = ci ? ci->connect_fd : -1;
    pthread_mutex_lock(&G->mu);
    if (sup_submit_locked(G, q, &e)) {
        sup_req_release_locked(G, q);
        pthread_mutex_unlock(&G->mu);
        return reply_error(c, x, &e);
    }
    new_rid(q);
    G->active++;
    x->q = q;
    /* wait: a stream for its slot (its headers say 200 from then on), an answer for the end */
    while (!q->done && !(q->r.stream && q->started)) {
        timed_wait(&q->cv, &G->mu, 0.2);
        if (!q->done && q->fd >= 0 && client_gone(q->fd)) {
            sup_abandon_locked(G, q);
            pthread_mutex_unlock(&G->mu);
            return MHD_NO; /* nobody to answer */
        }
    }
    pthread_mutex_unlock(&G->mu);
    if (q->failed && !(q->r.stream && q->started)) {
        q->status_counted = 1;
        return reply_error(c, x, &q->err);
    }
    if (!q->r.stream) {
        q->status_counted = 1;
        if (q->text_oom) return fail(c, x, 500, "server_error", NULL, "out of memory");
        char *s = response_json(q);
        return reply(c, x, 200, "application/json", s, s ? strlen(s) : 0, NULL);
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384,
                                                                  sse_read, x, NULL);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result route(struct MHD_Connection *c, conn_ctx *x, const char *url,
                             const char *method) {
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    if (strcmp(url, "/health") == 0) {
        x->endpoint = "health";
        return get ? health(c, x) : fail(c, x, 405, "invalid_request_error", NULL, "use GET /health");
    }
    if (strcmp(url, "/metrics") == 0) {
        x->endpoint = "metrics";
        return get ? metrics(c, x) : fail(c, x, 405, "invalid_request_error", NULL, "use GET /metrics");
    }
    if (strncmp(url, "/v1/", 4) != 0) {
        x->endpoint = "other";
        char msg[200];
        snprintf(msg, sizeof msg, "no such endpoint: %s %.120s", method, url);
        return fail(c, x, 404, "invalid_request_error", "not_found", msg);
    }
    x->endpoint = "other";
    if (!authorized(c))
        return fail(c, x, 401, "invalid_request_error", "invalid_api_key",
                    "a valid API key is required: 'Authorization: Bearer KEY' (--api-key)");
    const char *what = NULL;
    sv_kind kind = SV_CHAT;
    if (strcmp(url, "/v1/chat/completions") == 0) {
        x->endpoint = "chat";
        what = "POST";
    } else if (strcmp(url, "/v1/completions") == 0) {
        x->endpoint = "completions";
        kind = SV_COMPLETION;
        what = "POST";
    } else if (strcmp(url, "/v1/models") == 0 || strncmp(url, "/v1/models/", 11) == 0) {
        x->endpoint = "models";
        what = "GET";
    }
    if (!what) {
        char msg[200];
        snprintf(msg, sizeof msg, "no such endpoint: %s %.120s", method, url);
        return fail(c, x, 404, "invalid_request_error", "not_found", msg);
    }
    if (strcmp(what, "GET") == 0 ? !get : !post) {
        char msg[200];
        snprintf(msg, sizeof msg, "%s %.120s: use %s", method, url, what);
        return fail(c, x, 405, "invalid_request_error", "method_not_allowed", msg);
    }
    if (x->too_large) {
        char msg[160];
        snprintf(msg, sizeof msg, "the request body is larger than %zu bytes (--max-body)",
                 G->o.max_body);
        return fail(c, x, 413, "invalid_request_error", "request_too_large", msg);
    }
    if (strcmp(what, "GET") == 0) return models(c, x, url[10] == '/' ? url + 11 : NULL);
    return generate(c, x, kind);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls) {
    (void)cls;
    (void)version;
    conn_ctx *x = *con_cls;
    if (!x) {
        x = calloc(1, sizeof *x);
        if (!x) return MHD_NO;
        x->t0 = sv_now();
        x->endpoint = "other";
        snprintf(x->method, sizeof x->method, "%s", method);
        snprintf(x->url, sizeof x->url, "%s", url);
        *con_cls = x;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > G->o.max_body) {
            /* answered before the body is read: libmicrohttpd then closes the connection */
            x->too_large = true;
            return route(c, x, url, method);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        /* past the limit the rest is read and dropped: the answer is a 413, not a reset */
        if (!x->too_large && x->len + *upload_size > G->o.max_body) {
            x->too_large = true;
            free(x->body);
            x->body = NULL;
            x->len = x->cap = 0;
        }
        if (!x->too_large) {
            if (x->len + *upload_size + 1 > x->cap) {
                size_t cap = (x->cap ? x->cap * 2 : 4096) + *upload_size;
                if (cap > G->o.max_body + 1) cap = G->o.max_body + 1;
                char *b = realloc(x->body, cap);
                if (!b) return MHD_NO;
                x->body = b;
                x->cap = cap;
            }
            memcpy(x->body + x->len, upload, *upload_size);
            x->len += *upload_size;
            x->body[x->len] = 0;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    return route(c, x, url, method);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    conn_ctx *x = *con_cls;
    if (!x) return;
    *con_cls = NULL;
    double t = sv_now() - x->t0;
    if (x->q) {
        sv_req *q = x->q;
        pthread_mutex_lock(&G->mu);
        if (!q->done) sup_abandon_locked(G, q);
        if (!q->status_counted) {
            /* 499: the client closed the connection first (nginx's word for it) */
            x->status = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? 200 : 499;
            sv_metrics_count_request(&G->m, x->endpoint, x->status);
        }
        sv_hist_observe(&G->m.e2e, t);
        G->active--;
        sup_req_release_locked(G, q);
        pthread_cond_broadcast(&G->cv);
        pthread_mutex_unlock(&G->mu);
    }
    if (G->o.verbose)
        sv_log("%s %s %d %.1f ms", x->method, x->url, x->status ? x->status : 499, t * 1e3);
    free(x->body);
    free(x);
}

/* The listening socket, made here so that a bad address or a port in use gets its own words. */
static int listen_socket(const char *host, int port, int *bound, char *err, size_t cap) {
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if (rc || !ai) {
        snprintf(err, cap, "--host %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 128)) {
        snprintf(err, cap, "cannot listen on %s port %d: %s", host, port, strerror(errno));
        if (fd >= 0) close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                            : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

struct MHD_Daemon *sv_http_start(sup *s, int *port_out, char *err, size_t errcap) {
    G = s;
    int fd = listen_socket(s->o.host, s->o.port, port_out, err, errcap);
    if (fd < 0) return NULL;
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
            MHD_USE_ITC,
        0, NULL, NULL, handler, s, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED,
        completed, s, MHD_OPTION_CONNECTION_LIMIT, (unsigned)512, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)300, MHD_OPTION_END);
    if (!d) {
        snprintf(err, errcap, "cannot start the HTTP server on %s port %d", s->o.host, *port_out);
        close(fd);
    }
    return d;
}
