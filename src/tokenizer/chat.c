/* chat.c — chat templates. A model's Jinja template (tokenizer.chat_template) is rendered by
 * kiln's Jinja-subset interpreter (jinja.c), so prompts equal Hugging Face's
 * apply_chat_template. Only when the template uses Jinja that the interpreter does not
 * implement does kiln fall back to the built-in formats below, recognised by the markers the
 * template contains (as llama.cpp's llm_chat_detect_template does); a template matching none is
 * an error that names it, and the caller can then pick a format by name. Rendered text carries
 * the BOS text where the original template does, so it is tokenized with special-token parsing
 * and without adding BOS. */
#include <stdio.h>
#include <string.h>

#include "template/jinja.h"
#include "tokenizer/tok_impl.h"

typedef enum chat_fmt {
    FMT_NONE = 0,
    FMT_CHATML,
    FMT_LLAMA2,
    FMT_MISTRAL,
    FMT_ZEPHYR,
    FMT_NEURAL_CHAT,
    FMT_LLAMA3,
    FMT_GEMMA,
    FMT_PHI3
} chat_fmt;

static const struct {
    const char *name;
    chat_fmt fmt;
} k_formats[] = {
    {"chatml", FMT_CHATML},      {"llama2", FMT_LLAMA2},   {"mistral", FMT_MISTRAL},
    {"zephyr", FMT_ZEPHYR},      {"neural-chat", FMT_NEURAL_CHAT},
    {"llama3", FMT_LLAMA3},      {"gemma", FMT_GEMMA},     {"phi3", FMT_PHI3},
};

static chat_fmt fmt_by_name(const char *name) {
    for (size_t i = 0; i < sizeof k_formats / sizeof k_formats[0]; i++)
        if (!strcmp(k_formats[i].name, name)) return k_formats[i].fmt;
    return FMT_NONE;
}

static const char *name_of(chat_fmt f) {
    for (size_t i = 0; i < sizeof k_formats / sizeof k_formats[0]; i++)
        if (k_formats[i].fmt == f) return k_formats[i].name;
    return NULL;
}

static chat_fmt detect(const char *t) {
    if (!t) return FMT_NONE;
    if (strstr(t, "<|im_start|>")) return FMT_CHATML;
    if (strstr(t, "<|start_header_id|>")) return FMT_LLAMA3;
    if (strstr(t, "<start_of_turn>")) return FMT_GEMMA;
    if (strstr(t, "### System:") || strstr(t, "### User:") || strstr(t, "### Assistant:"))
        return FMT_NEURAL_CHAT;
    if (strstr(t, "<|user|>") && strstr(t, "<|end|>")) return FMT_PHI3;
    if (strstr(t, "<|user|>")) return FMT_ZEPHYR;
    if (strstr(t, "[INST]")) return strstr(t, "<<SYS>>") ? FMT_LLAMA2 : FMT_MISTRAL;
    return FMT_NONE;
}

const char *kn_chat_detect(const char *tmpl) { return name_of(detect(tmpl)); }

/* Python's str.strip() for ASCII whitespace, which is what the templates apply. */
static void put_stripped(kn_buf *b, const char *s) {
    size_t n = strlen(s), a = 0;
    while (a < n && strchr(" \t\n\r\v\f", s[a])) a++;
    while (n > a && strchr(" \t\n\r\v\f", s[n - 1])) n--;
    kn_buf_append(b, s + a, n - a);
}

static void put(kn_buf *b, const char *s) { kn_buf_append(b, s, strlen(s)); }

static kiln_status render(chat_fmt f, const char *bos, const char *eos, const kn_chat_msg *m,
                          size_t n, bool gen, kn_buf *b, kiln_error *err) {
    for (size_t i = 0; i < n; i++)
        if (!m[i].role || !m[i].content)
            return kn_fail(err, KILN_ERR_INVALID_ARG, "chat message %zu has no role or content", i);
    const char *sys = NULL;
    size_t first = 0;
    if (n && !strcmp(m[0].role, "system") && f != FMT_CHATML && f != FMT_LLAMA3 &&
        f != FMT_ZEPHYR && f != FMT_NEURAL_CHAT && f != FMT_PHI3) {
        sys = m[0].content; /* merged into the first user turn */
        first = 1;
    }
    switch (f) {
    case FMT_CHATML:
        for (size_t i = 0; i < n; i++) {
            put(b, "<|im_start|>"); put(b, m[i].role); put(b, "\n");
            put(b, m[i].content); put(b, "<|im_end|>\n");
        }
        if (gen) put(b, "<|im_start|>assistant\n");
        break;
    case FMT_LLAMA3:
        put(b, bos);
        for (size_t i = 0; i < n; i++) {
            put(b, "<|start_header_id|>"); put(b, m[i].role); put(b, "<|end_header_id|>\n\n");
            put_stripped(b, m[i].content); put(b, "<|eot_id|>");
        }
        if (gen) put(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    case FMT_LLAMA2:
    case FMT_MISTRAL:
        if (f == FMT_MISTRAL) put(b, bos);
        for (size_t i = first; i < n; i++) {
            if (!strcmp(m[i].role, "user")) {
                if (f == FMT_LLAMA2) put(b, bos);
                put(b, "[INST] ");
                if (sys && i == first) {
                    if (f == FMT_LLAMA2) {
                        put(b, "<<SYS>>\n"); put_stripped(b, sys); put(b, "\n<</SYS>>\n\n");
                    } else {
                        put_stripped(b, sys); put(b, "\n\n");
                    }
                }
                put_stripped(b, m[i].content);
                put(b, " [/INST]");
            } else {
                if (f == FMT_LLAMA2) put(b, " ");
                put_stripped(b, m[i].content);
                if (f == FMT_LLAMA2) put(b, " ");
                put(b, eos);
            }
        }
        break;
    case FMT_ZEPHYR:
        for (size_t i = 0; i < n; i++) {
            put(b, "<|"); put(b, m[i].role); put(b, "|>\n"); put(b, m[i].content);
            put(b, eos); put(b, "\n");
        }
        if (gen) put(b, "<|assistant|>\n");
        break;
    case FMT_PHI3:
        for (size_t i = 0; i < n; i++) {
            put(b, "<|"); put(b, m[i].role); put(b, "|>\n"); put(b, m[i].content);
            put(b, "<|end|>\n");
        }
        if (gen) put(b, "<|assistant|>\n");
        break;
    case FMT_NEURAL_CHAT:
        for (size_t i = 0; i < n; i++) {
            const char *r = m[i].role;
            put(b, !strcmp(r, "system") ? "### System:\n" : !strcmp(r, "user") ? "### User:\n"
                                                                                : "### Assistant:\n");
            put(b, m[i].content); put(b, "\n");
        }
        if (gen) put(b, "### Assistant:\n");
        break;
    case FMT_GEMMA:
        put(b, bos);
        for (size_t i = first; i < n; i++) {
            bool user = !strcmp(m[i].role, "user");
            put(b, "<start_of_turn>"); put(b, user ? "user" : "model"); put(b, "\n");
            if (sys && i == first) {
                put_stripped(b, sys); put(b, "\n\n");
            }
            put_stripped(b, m[i].content); put(b, "<end_of_turn>\n");
        }
        if (gen) put(b, "<start_of_turn>model\n");
        break;
    case FMT_NONE:
        break;
    }
    if (b->oom) return kn_fail(err, KILN_ERR_NOMEM, "out of memory rendering the chat");
    return KILN_OK;
}

static kiln_status finish(kn_buf *b, char **out, kiln_error *err) {
    if (!b->data && !b->oom && (b->data = kn_malloc(1)) != NULL) b->data[0] = 0;
    if (b->oom || !b->data) {
        kn_buf_free(b);
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    *out = b->data;
    return KILN_OK;
}

kiln_status kn_chat_render_template(const char *tmpl, const char *bos, const char *eos,
                                    const char *kwargs, const kn_chat_msg *msgs, size_t n,
                                    bool add_generation_prompt, char **out, kiln_error *err) {
    *out = NULL;
    kn_jinja_vars v = {msgs, n, add_generation_prompt, bos ? bos : "", eos ? eos : "", kwargs};
    kiln_error jerr;
    kn_error_clear(&jerr);
    kiln_status st = kn_jinja_render(tmpl, &v, out, &jerr);
    if (st != KILN_ERR_UNSUPPORTED) {
        if (st != KILN_OK && err) *err = jerr;
        return st;
    }
    /* valid Jinja beyond the subset: a recognised format is the next best thing */
    chat_fmt f = detect(tmpl);
    if (f == FMT_NONE)
        return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s; and the template is not one kiln recognises: "
                       "\"%.60s%s\" (choose one with --chat-template chatml|llama2|mistral|zephyr|"
                       "neural-chat|llama3|gemma|phi3)", jerr.message, tmpl ? tmpl : "",
                       tmpl && strlen(tmpl) > 60 ? "..." : "");
    kn_buf b = {0};
    st = render(f, bos ? bos : "", eos ? eos : "", msgs, n, add_generation_prompt, &b, err);
    if (st != KILN_OK) {
        kn_buf_free(&b);
        return st;
    }
    return finish(&b, out, err);
}

static char *tok_text(const kn_tokenizer *t, int32_t id, char *buf, size_t cap) {
    size_t n = 0;
    const char *s = kn_tokenizer_token_text(t, id, &n);
    if (!s || n >= cap) n = 0;
    if (n) memcpy(buf, s, n);
    buf[n] = 0;
    return buf;
}

kiln_status kn_chat_render(const kn_tokenizer *t, const char *name, const char *kwargs,
                           const kn_chat_msg *msgs, size_t n, bool add_generation_prompt,
                           char **out, kiln_error *err) {
    *out = NULL;
    char bos[128], eos[128];
    tok_text(t, t->bos, bos, sizeof bos);
    tok_text(t, t->eos, eos, sizeof eos);
    if (name) {
        chat_fmt f = fmt_by_name(name);
        if (f == FMT_NONE)
            return kn_fail(err, KILN_ERR_INVALID_ARG, "unknown chat template '%s' (chatml, llama2, "
                           "mistral, zephyr, neural-chat, llama3, gemma, phi3)", name);
        kn_buf b = {0};
        kiln_status st = render(f, bos, eos, msgs, n, add_generation_prompt, &b, err);
        if (st != KILN_OK) {
            kn_buf_free(&b);
            return st;
        }
        return finish(&b, out, err);
    }
    if (!t->chat_template)
        return kn_fail(err, KILN_ERR_UNSUPPORTED, "the model has no chat template "
                       "(tokenizer.chat_template); choose one with --chat-template NAME");
    return kn_chat_render_template(t->chat_template, bos, eos, kwargs, msgs, n,
                                   add_generation_prompt, out, err);
}

kiln_status kn_chat_tokens(const kn_tokenizer *t, const char *name, const char *kwargs,
                           const kn_chat_msg *msgs, size_t n, kn_tokens *ids, kiln_error *err) {
    char *text = NULL;
    kiln_status s = kn_chat_render(t, name, kwargs, msgs, n, true, &text, err);
    if (!s) s = kn_tokenize(t, text, strlen(text), KN_TOK_PARSE_SPECIAL, ids, err);
    kn_free(text);
    return s;
}
