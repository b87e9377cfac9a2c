/* request.c — checking OpenAI request bodies (chat completions, completions) and the compact
 * form the worker runs. Field names, types and ranges are OpenAI's; kiln adds top_k, min_p and
 * repeat_penalty. Fields that would change the answer in a way kiln does not do (n > 1,
 * logprobs, tools, penalties other than repeat_penalty, ...) are refused with a 400 naming them
 * rather than silently ignored; fields kiln does not know are ignored, as OpenAI's clients
 * expect. */
#include "request.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sv_error_set(sv_error *e, int status, const char *type, const char *code, const char *param,
                  const char *fmt, ...) {
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

char *sv_error_json(const sv_error *e) {
    cJSON *root = cJSON_CreateObject(), *o = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(o, "message", e->message);
    cJSON_AddStringToObject(o, "type", e->type ? e->type : "server_error");
    if (e->param[0]) cJSON_AddStringToObject(o, "param", e->param);
    else cJSON_AddNullToObject(o, "param");
    if (e->code) cJSON_AddStringToObject(o, "code", e->code);
    else cJSON_AddNullToObject(o, "code");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static int bad(sv_error *e, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int bad(sv_error *e, const char *param, const char *code, const char *fmt, ...) {
    char msg[sizeof e->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sv_error_set(e, 400, "invalid_request_error", code, param, "%s", msg);
    return -1;
}

static const cJSON *field(const cJSON *o, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    return f && !cJSON_IsNull(f) ? f : NULL; /* null means "not given", as in OpenAI's API */
}

/* A number field in [lo, hi]: 1 given, 0 absent, -1 bad. */
static int number(const cJSON *o, const char *name, double lo, double hi, double *out,
                  sv_error *e) {
    const cJSON *f = field(o, name);
    if (!f) return 0;
    if (!cJSON_IsNumber(f)) return bad(e, name, "invalid_type", "'%s' must be a number", name);
    double v = f->valuedouble;
    if (!(v >= lo && v <= hi))
        return bad(e, name, "invalid_value", "'%s' is %g; it must be in [%g, %g]", name, v, lo, hi);
    *out = v;
    return 1;
}

static int integer(const cJSON *o, const char *name, double lo, double hi, double *out,
                   sv_error *e) {
    const cJSON *f = field(o, name);
    if (!f) return 0;
    if (!cJSON_IsNumber(f) || f->valuedouble != floor(f->valuedouble))
        return bad(e, name, "invalid_type", "'%s' must be an integer", name);
    double v = f->valuedouble;
    if (!(v >= lo && v <= hi))
        return bad(e, name, "invalid_value", "'%s' is %.0f; it must be in [%.0f, %.0f]", name, v,
                   lo, hi);
    *out = v;
    return 1;
}

static int boolean(const cJSON *o, const char *name, bool *out, sv_error *e) {
    const cJSON *f = field(o, name);
    if (!f) return 0;
    if (!cJSON_IsBool(f)) return bad(e, name, "invalid_type", "'%s' must be a boolean", name);
    *out = cJSON_IsTrue(f);
    return 1;
}

/* One message's content: a string, or an array of {"type": "text", "text": ...} parts, joined. */
static int content_text(const cJSON *c, int i, cJSON **out, sv_error *e) {
    char param[48];
    snprintf(param, sizeof param, "messages[%d].content", i);
    if (cJSON_IsString(c)) {
        *out = cJSON_CreateString(c->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(c))
        return bad(e, param, "invalid_type", "'%s' must be a string or an array of text parts",
                   param);
    size_t total = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsObject(part) || !cJSON_IsString(type))
            return bad(e, param, "invalid_type", "each part of '%s' must be an object with a "
                       "'type'", param);
        if (strcmp(type->valuestring, "text") != 0)
            return bad(e, param, "unsupported_value", "'%s' has a part of type '%.40s': this "
                       "model reads text only", param, type->valuestring);
        if (!cJSON_IsString(text))
            return bad(e, param, "invalid_type", "a text part of '%s' needs a string 'text'",
                       param);
        total += strlen(text->valuestring);
    }
    char *joined = malloc(total + 1), *at = joined;
    if (!joined) return bad(e, param, NULL, "out of memory");
    cJSON_ArrayForEach(part, c) {
        size_t n = strlen(cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring);
        memcpy(at, cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring, n);
        at += n;
    }
    *at = 0;
    *out = cJSON_CreateString(joined);
    free(joined);
    return 0;
}

static int parse_messages(const cJSON *body, cJSON *w, sv_error *e) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(body, "messages");
    if (!msgs) return bad(e, "messages", "missing_required_parameter", "'messages' is required");
    if (!cJSON_IsArray(msgs)) return bad(e, "messages", "invalid_type", "'messages' must be an array");
    if (cJSON_GetArraySize(msgs) < 1)
        return bad(e, "messages", "invalid_value", "'messages' must hold at least one message");
    cJSON *out = cJSON_AddArrayToObject(w, "messages");
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        char param[48];
        snprintf(param, sizeof param, "messages[%d]", i);
        if (!cJSON_IsObject(m)) return bad(e, param, "invalid_type", "'%s' must be an object", param);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        snprintf(param, sizeof param, "messages[%d].role", i);
        if (!cJSON_IsString(role)) return bad(e, param, "invalid_type", "'%s' must be a string", param);
        const char *r = role->valuestring;
        /* "developer" is OpenAI's newer name for the system message */
        if (strcmp(r, "developer") == 0) r = "system";
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant"))
            return bad(e, param, "unsupported_value", "'%s' is '%.40s': kiln takes system, "
                       "developer, user and assistant messages", param, role->valuestring);
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        cJSON *text = NULL;
        if (!c || cJSON_IsNull(c)) {
            /* an assistant turn may have no content (it called tools); others must say something */
            if (strcmp(r, "assistant") != 0) {
                snprintf(param, sizeof param, "messages[%d].content", i);
                return bad(e, param, "missing_required_parameter", "'%s' is required", param);
            }
            text = cJSON_CreateString("");
        } else if (content_text(c, i, &text, e)) {
            return -1;
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "role", r);
        cJSON_AddItemToObject(o, "content", text);
        cJSON_AddItemToArray(out, o);
        i++;
    }
    return 0;
}

/* A completion's prompt: a string, an array of one string, token ids, or one array of ids. */
static int parse_prompt(const cJSON *body, cJSON *w, sv_error *e) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(body, "prompt");
    if (!p) return bad(e, "prompt", "missing_required_parameter", "'prompt' is required");
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 &&
        (cJSON_IsString(p->child) || cJSON_IsArray(p->child)))
        p = p->child;
    if (cJSON_IsString(p)) {
        if (!p->valuestring[0]) return bad(e, "prompt", "invalid_value", "'prompt' is empty");
        cJSON_AddStringToObject(w, "prompt", p->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(p))
        return bad(e, "prompt", "invalid_type", "'prompt' must be a string or an array of token ids");
    int n = cJSON_GetArraySize(p);
    if (n < 1) return bad(e, "prompt", "invalid_value", "'prompt' is empty");
    cJSON *ids = cJSON_AddArrayToObject(w, "prompt_ids");
    const cJSON *t;
    cJSON_ArrayForEach(t, p) {
        if (cJSON_IsString(t))
            return bad(e, "prompt", "unsupported_value", "'prompt' holds several prompts: send "
                       "one per request");
        if (!cJSON_IsNumber(t) || t->valuedouble != floor(t->valuedouble) || t->valuedouble < 0 ||
            t->valuedouble > 2147483647.0)
            return bad(e, "prompt", "invalid_type", "'prompt' as an array must hold token ids "
                       "(non-negative integers)");
        cJSON_AddItemToArray(ids, cJSON_CreateNumber(t->valuedouble));
    }
    return 0;
}

static int parse_stop(const cJSON *body, cJSON *w, sv_error *e) {
    const cJSON *s = field(body, "stop");
    if (!s) return 0;
    cJSON *out = cJSON_AddArrayToObject(w, "stop");
    const cJSON *one = NULL;
    if (cJSON_IsString(s)) {
        one = s;
    } else if (!cJSON_IsArray(s)) {
        return bad(e, "stop", "invalid_type", "'stop' must be a string or an array of strings");
    } else if (cJSON_GetArraySize(s) > SV_MAX_STOPS) {
        return bad(e, "stop", "invalid_value", "'stop' holds %d strings; at most %d",
                   cJSON_GetArraySize(s), SV_MAX_STOPS);
    }
    const cJSON *t = one ? one : s->child;
    for (; t; t = one ? NULL : t->next) {
        if (!cJSON_IsString(t))
            return bad(e, "stop", "invalid_type", "'stop' must be a string or an array of strings");
        size_t n = strlen(t->valuestring);
        if (n == 0) continue; /* an empty stop string stops nothing */
        if (n > SV_MAX_STOP_BYTES)
            return bad(e, "stop", "invalid_value", "a stop string is %zu bytes; at most %d", n,
                       SV_MAX_STOP_BYTES);
        cJSON_AddItemToArray(out, cJSON_CreateString(t->valuestring));
    }
    return 0;
}

/* Fields kiln cannot honour: refused when they ask for something, accepted at their neutral
 * value (clients often send the defaults). */
static int refuse_unsupported(const cJSON *body, sv_kind kind, sv_error *e) {
    double v = 0;
    int r;
    if ((r = integer(body, "n", 1, 1, &v, e)) < 0) {
        e->code = "unsupported_value";
        snprintf(e->message, sizeof e->message, "'n' must be 1: kiln returns one choice");
        return -1;
    }
    if ((r = integer(body, "best_of", 1, 1, &v, e)) < 0) {
        snprintf(e->message, sizeof e->message, "'best_of' must be 1");
        return -1;
    }
    static const char *const penalties[] = {"presence_penalty", "frequency_penalty"};
    for (int i = 0; i < 2; i++) {
        if ((r = number(body, penalties[i], -2, 2, &v, e)) < 0) return -1;
        if (r > 0 && v != 0)
            return bad(e, penalties[i], "unsupported_value", "'%s' is not supported (use "
                       "repeat_penalty)", penalties[i]);
    }
    const cJSON *f;
    if ((f = field(body, "logprobs")) &&
        !(cJSON_IsFalse(f) || (cJSON_IsNumber(f) && f->valuedouble == 0)))
        return bad(e, "logprobs", "unsupported_value", "'logprobs' is not supported");
    if ((f = field(body, "top_logprobs")) && !(cJSON_IsNumber(f) && f->valuedouble == 0))
        return bad(e, "top_logprobs", "unsupported_value", "'top_logprobs' is not supported");
    if ((f = field(body, "logit_bias"))) {
        if (!cJSON_IsObject(f))
            return bad(e, "logit_bias", "invalid_type", "'logit_bias' must be an object");
        if (f->child)
            return bad(e, "logit_bias", "unsupported_value", "'logit_bias' is not supported");
    }
    if ((f = field(body, "tools"))) {
        if (!cJSON_IsArray(f)) return bad(e, "tools", "invalid_type", "'tools' must be an array");
        if (cJSON_GetArraySize(f) > 0)
            return bad(e, "tools", "unsupported_value", "'tools' (function calling) is not "
                       "supported");
    }
    if ((f = field(body, "functions")) && cJSON_GetArraySize(f) > 0)
        return bad(e, "functions", "unsupported_value", "'functions' is not supported");
    if ((f = field(body, "response_format"))) {
        const cJSON *t = cJSON_IsObject(f) ? cJSON_GetObjectItemCaseSensitive(f, "type") : NULL;
        if (!cJSON_IsString(t))
            return bad(e, "response_format", "invalid_type", "'response_format' must be an object "
                       "with a 'type'");
        if (strcmp(t->valuestring, "text") != 0)
            return bad(e, "response_format", "unsupported_value", "'response_format' type "
                       "'%.40s' is not supported (only 'text')", t->valuestring);
    }
    if (kind == SV_COMPLETION) {
        bool echo = false;
        if (boolean(body, "echo", &echo, e) < 0) return -1;
        if (echo) return bad(e, "echo", "unsupported_value", "'echo' is not supported");
        if ((f = field(body, "suffix"))) {
            if (!cJSON_IsString(f)) return bad(e, "suffix", "invalid_type", "'suffix' must be a string");
            if (f->valuestring[0])
                return bad(e, "suffix", "unsupported_value", "'suffix' is not supported");
        }
    }
    return 0;
}

int sv_request_parse(const char *body, size_t len, sv_kind kind, const char *model_id,
                     sv_request *out, sv_error *e) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root) {
        size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        sv_error_set(e, 400, "invalid_request_error", "invalid_json", NULL,
                     "the request body is not valid JSON (at byte %zu)", at);
        return -1;
    }
    /* nothing but white space may follow the value */
    for (const char *p = end; p && p < body + len; p++)
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') {
            cJSON_Delete(root);
            sv_error_set(e, 400, "invalid_request_error", "invalid_json", NULL,
                         "the request body is not valid JSON (at byte %zu)", (size_t)(p - body));
            return -1;
        }
    int rc = -1;
    cJSON *w = cJSON_CreateObject();
    if (!cJSON_IsObject(root)) {
        bad(e, NULL, "invalid_type", "the request body must be a JSON object");
        goto done;
    }
    const cJSON *model = field(root, "model");
    if (model && !cJSON_IsString(model)) {
        bad(e, "model", "invalid_type", "'model' must be a string");
        goto done;
    }
    if (model && strcmp(model->valuestring, model_id) != 0) {
        sv_error_set(e, 404, "invalid_request_error", "model_not_found", "model",
                     "The model '%.200s' does not exist: this server serves '%.200s'",
                     model->valuestring, model_id);
        goto done;
    }
    cJSON_AddStringToObject(w, "kind", kind == SV_CHAT ? "chat" : "completion");
    if (kind == SV_CHAT ? parse_messages(root, w, e) : parse_prompt(root, w, e)) goto done;
    if (refuse_unsupported(root, kind, e)) goto done;

    double v;
    int r;
    /* max_completion_tokens is the newer name; it wins when both are given */
    const char *mt = field(root, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if ((r = integer(root, mt, 1, 1 << 30, &v, e)) < 0) goto done;
    if (r) cJSON_AddNumberToObject(w, "max_tokens", v);
    static const struct { const char *name; double lo, hi; bool is_int; } k_nums[] = {
        {"temperature", 0, 2, false},   {"top_p", 0, 1, false}, {"top_k", 0, 1 << 24, true},
        {"min_p", 0, 1, false},         {"repeat_penalty", 0.01, 100, false},
    };
    for (size_t i = 0; i < sizeof k_nums / sizeof k_nums[0]; i++) {
        r = k_nums[i].is_int ? integer(root, k_nums[i].name, k_nums[i].lo, k_nums[i].hi, &v, e)
                             : number(root, k_nums[i].name, k_nums[i].lo, k_nums[i].hi, &v, e);
        if (r < 0) goto done;
        if (r) cJSON_AddNumberToObject(w, k_nums[i].name, v);
    }
    /* a seed is any integer OpenAI takes (int64); it travels as text to keep every bit */
    /* the largest double below 2^63: the conversion to int64 below stays defined */
    if ((r = integer(root, "seed", -9223372036854775808.0, 9223372036854774784.0, &v, e)) < 0)
        goto done;
    if (r) {
        char s[32];
        snprintf(s, sizeof s, "%llu", (unsigned long long)(long long)v);
        cJSON_AddStringToObject(w, "seed", s);
    }
    if (parse_stop(root, w, e)) goto done;
    /* llama-server's and vLLM's name for apply_chat_template's extra arguments */
    const cJSON *kw = field(root, "chat_template_kwargs");
    if (kw) {
        if (!cJSON_IsObject(kw)) {
            bad(e, "chat_template_kwargs", "invalid_type",
                "'chat_template_kwargs' must be an object");
            goto done;
        }
        cJSON_AddItemToObject(w, "chat_template_kwargs", cJSON_Duplicate(kw, 1));
    }
    if (boolean(root, "stream", &out->stream, e) < 0) goto done;
    const cJSON *so = field(root, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so)) {
            bad(e, "stream_options", "invalid_type", "'stream_options' must be an object");
            goto done;
        }
        if (boolean(so, "include_usage", &out->include_usage, e) < 0) {
            snprintf(e->param, sizeof e->param, "stream_options.include_usage");
            goto done;
        }
    }
    out->worker_json = cJSON_PrintUnformatted(w);
    if (!out->worker_json) {
        sv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    rc = 0;
done:
    cJSON_Delete(w);
    cJSON_Delete(root);
    return rc;
}

void sv_request_free(sv_request *r) {
    free(r->worker_json);
    r->worker_json = NULL;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

int sv_job_from_json(const char *json, size_t len, sv_job_spec *s, sv_error *e) {
    memset(s, 0, sizeof *s);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        sv_error_set(e, 500, "server_error", NULL, NULL, "the worker got a malformed request");
        return -1;
    }
    int rc = -1;
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(root, "kind");
    s->kind = cJSON_IsString(kind) && strcmp(kind->valuestring, "chat") == 0 ? SV_CHAT
                                                                              : SV_COMPLETION;
    const cJSON *f;
    if (s->kind == SV_CHAT) {
        const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
        int n = cJSON_GetArraySize(msgs);
        if (n < 1 || !(s->msgs = calloc((size_t)n, sizeof *s->msgs))) goto bad;
        const cJSON *m;
        cJSON_ArrayForEach(m, msgs) {
            const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
            if (!cJSON_IsString(role) || !cJSON_IsString(content)) goto bad;
            kiln_chat_message *km = &s->msgs[s->n_msgs++];
            km->role = dup_str(role->valuestring);
            km->content = dup_str(content->valuestring);
            if (!km->role || !km->content) goto bad;
        }
    } else if ((f = cJSON_GetObjectItemCaseSensitive(root, "prompt")) && cJSON_IsString(f)) {
        if (!(s->prompt = dup_str(f->valuestring))) goto bad;
    } else if ((f = cJSON_GetObjectItemCaseSensitive(root, "prompt_ids")) && cJSON_IsArray(f)) {
        int n = cJSON_GetArraySize(f);
        if (n < 1 || !(s->prompt_ids = malloc((size_t)n * sizeof *s->prompt_ids))) goto bad;
        const cJSON *t;
        cJSON_ArrayForEach(t, f) s->prompt_ids[s->n_prompt_ids++] = (int32_t)t->valuedouble;
    } else {
        goto bad;
    }
    if ((f = cJSON_GetObjectItemCaseSensitive(root, "max_tokens")) && cJSON_IsNumber(f))
        s->max_tokens = f->valuedouble > (1 << 30) ? (1 << 30) : (int)f->valuedouble;
#define TAKE(name, member, type)                                                  \
    if ((f = cJSON_GetObjectItemCaseSensitive(root, name)) && cJSON_IsNumber(f)) { \
        s->member = (type)f->valuedouble;                                         \
        s->has_##member = true;                                                   \
    }
    TAKE("temperature", temperature, float)
    TAKE("top_p", top_p, float)
    TAKE("top_k", top_k, int)
    TAKE("min_p", min_p, float)
    TAKE("repeat_penalty", repeat_penalty, float)
#undef TAKE
    if ((f = cJSON_GetObjectItemCaseSensitive(root, "seed")) && cJSON_IsString(f)) {
        s->seed = strtoull(f->valuestring, NULL, 10);
        s->has_seed = true;
    }
    if ((f = cJSON_GetObjectItemCaseSensitive(root, "stop")) && cJSON_IsArray(f)) {
        const cJSON *t;
        cJSON_ArrayForEach(t, f) {
            if (s->n_stop >= SV_MAX_STOPS || !cJSON_IsString(t)) break;
            if (!(s->stops[s->n_stop] = dup_str(t->valuestring))) goto bad;
            s->n_stop++;
        }
    }
    if ((f = cJSON_GetObjectItemCaseSensitive(root, "chat_template_kwargs")) && cJSON_IsObject(f) &&
        !(s->chat_template_kwargs = cJSON_PrintUnformatted(f)))
        goto bad;
    rc = 0;
bad:
    if (rc) sv_error_set(e, 500, "server_error", NULL, NULL, "the worker got a malformed request");
    cJSON_Delete(root);
    if (rc) sv_job_spec_free(s);
    return rc;
}

void sv_job_spec_free(sv_job_spec *s) {
    for (int i = 0; i < s->n_msgs; i++) {
        free((char *)s->msgs[i].role);
        free((char *)s->msgs[i].content);
    }
    free(s->msgs);
    free(s->prompt);
    free(s->prompt_ids);
    for (int i = 0; i < s->n_stop; i++) free(s->stops[i]);
    cJSON_free(s->chat_template_kwargs);
    memset(s, 0, sizeof *s);
}
