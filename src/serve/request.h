/* request.h — an OpenAI request body checked and turned into what the worker runs.
 *
 * The supervisor parses each body once (cJSON), checks every field it knows (a wrong type or
 * value is a 400 naming the field; unknown fields are ignored), and writes the normalized
 * request as compact JSON for the worker, which reads it back with sv_job_from_json. */
#ifndef KILN_SERVE_REQUEST_H
#define KILN_SERVE_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "serve.h"

typedef enum sv_kind { SV_CHAT = 0, SV_COMPLETION = 1 } sv_kind;

/* An error answer: HTTP status and OpenAI's error object {message, type, param, code}. */
typedef struct sv_error {
    int status;
    const char *type;         /* "invalid_request_error", "server_error", ... */
    const char *code;         /* short machine code, or NULL */
    char param[64];           /* the field at fault, or "" */
    char message[640];
} sv_error;

void sv_error_set(sv_error *e, int status, const char *type, const char *code, const char *param,
                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* {"error": {...}} as a malloc'd string. */
char *sv_error_json(const sv_error *e);

typedef struct sv_request {
    sv_kind kind;
    bool stream, include_usage;
    char *worker_json;        /* malloc'd: what the worker is sent */
} sv_request;

/* 0 and *out filled, or -1 and *e set (400 / 404). model_id: the id this server answers to. */
int sv_request_parse(const char *body, size_t len, sv_kind kind, const char *model_id,
                     sv_request *out, sv_error *e);
void sv_request_free(sv_request *r);

/* What the worker reads back: the prompt as messages, text or ids, and the generation params. */
typedef struct sv_job_spec {
    sv_kind kind;
    kiln_chat_message *msgs;  /* chat: n_msgs messages (strings owned by the spec) */
    int n_msgs;
    char *prompt;             /* completion: text, or NULL when ids */
    int32_t *prompt_ids;      /* completion given as token ids */
    int n_prompt_ids;
    int max_tokens;           /* 0: the server's default */
    bool has_temperature, has_top_p, has_top_k, has_min_p, has_repeat_penalty, has_seed;
    float temperature, top_p, min_p, repeat_penalty;
    int top_k;
    uint64_t seed;
    char *stops[SV_MAX_STOPS];
    int n_stop;
    char *chat_template_kwargs; /* the request's JSON object, or NULL */
} sv_job_spec;

/* 0 ok, -1 with e->message set (a malformed message from the supervisor: a bug). */
int sv_job_from_json(const char *json, size_t len, sv_job_spec *out, sv_error *e);
void sv_job_spec_free(sv_job_spec *s);

#endif
