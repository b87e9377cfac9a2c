/* api.c — the public kiln_tokenizer functions of kiln.h over the internal kn_tokenizer, and
 * opening a tokenizer from any source kiln reads. */
#include <string.h>

#include "tokenizer/tok_impl.h"

kiln_status kn_tokenizer_open(const char *source, kn_tokenizer **out, kiln_error *err) {
    *out = NULL;
    if (!source || !*source) return kn_fail(err, KILN_ERR_INVALID_ARG, "no tokenizer source given");
    kiln_status st;
    if (kn_is_dir(source)) {
        char *mg = kn_path_join(source, "model.gguf");
        char *tj = kn_path_join(source, "tokenizer.json");
        if (!mg || !tj) {
            kn_free(mg);
            kn_free(tj);
            return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        }
        bool is_off = kn_is_file(mg), is_hf = kn_is_file(tj);
        if (is_off) {
            st = kn_tokenizer_open(mg, out, err);
        } else if (is_hf) {
            st = kn_tokenizer_load_hf_dir(source, out, err);
        } else {
            st = kn_fail(err, KILN_ERR_IO, "%s: neither an offering (no model.gguf) nor a Hugging "
                         "Face folder (no tokenizer.json)", source);
        }
        kn_free(mg);
        kn_free(tj);
        return st;
    }
    if (!kn_is_file(source)) return kn_fail(err, KILN_ERR_IO, "%s: no such file or directory", source);
    kn_gguf *g = NULL;
    if ((st = kn_gguf_open(source, &g, err)) != KILN_OK) return st;
    st = kn_tokenizer_load_gguf(g, out, err);
    kn_gguf_close(g);
    return st;
}

/* ---- public wrappers: kiln_tokenizer is a kn_tokenizer ---- */

struct kiln_detok_stream {
    kn_detok_stream s;
};

kiln_status kiln_tokenizer_open(const char *source, kiln_tokenizer **out, kiln_error *err) {
    if (!out) return kn_fail(err, KILN_ERR_INVALID_ARG, "kiln_tokenizer_open: out is NULL");
    kn_error_clear(err);
    kn_tokenizer *t = NULL;
    kiln_status st = kn_tokenizer_open(source, &t, err);
    *out = (kiln_tokenizer *)t;
    return st;
}

void kiln_tokenizer_free(kiln_tokenizer *tok) { kn_tokenizer_free((kn_tokenizer *)tok); }

kiln_status kiln_tokenize(const kiln_tokenizer *tok, const char *text, size_t len,
                          unsigned flags, int32_t **ids, size_t *n, kiln_error *err) {
    if (!tok || !ids || !n) return kn_fail(err, KILN_ERR_INVALID_ARG, "kiln_tokenize: NULL argument");
    *ids = NULL;
    *n = 0;
    kn_tokens v = {0};
    unsigned f = ((flags & KILN_TOKENIZE_ADD_BOS) ? KN_TOK_FORCE_BOS : 0) |
                 ((flags & KILN_TOKENIZE_SPECIAL) ? KN_TOK_PARSE_SPECIAL : 0) |
                 ((flags & KILN_TOKENIZE_MODEL_BOS) ? KN_TOK_ADD_BOS : 0);
    kiln_status st = kn_tokenize((const kn_tokenizer *)tok, text, len, f, &v, err);
    if (st != KILN_OK) {
        kn_tokens_free(&v);
        return st;
    }
    if (!v.ids && !(v.ids = kn_malloc(sizeof(int32_t)))) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    *ids = v.ids;
    *n = v.n;
    return KILN_OK;
}

static kiln_status take_buf(kn_buf *b, char **text, size_t *len, kiln_error *err) {
    if (b->oom) {
        kn_buf_free(b);
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    if (!b->data) {
        b->data = kn_malloc(1);
        if (!b->data) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        b->data[0] = 0;
    }
    *text = b->data;
    if (len) *len = b->len;
    return KILN_OK;
}

kiln_status kiln_detokenize(const kiln_tokenizer *tok, const int32_t *ids, size_t n,
                            unsigned flags, char **text, size_t *len, kiln_error *err) {
    if (!tok || !text || (!ids && n)) return kn_fail(err, KILN_ERR_INVALID_ARG, "kiln_detokenize: NULL argument");
    *text = NULL;
    kn_buf b = {0};
    kiln_status st = kn_detokenize((const kn_tokenizer *)tok, ids, n,
                                   (flags & KILN_DETOKENIZE_SPECIAL) ? KN_DETOK_SPECIAL : 0, &b, err);
    if (st != KILN_OK) {
        kn_buf_free(&b);
        return st;
    }
    return take_buf(&b, text, len, err);
}

kiln_status kiln_detok_stream_new(const kiln_tokenizer *tok, unsigned flags,
                                  kiln_detok_stream **out, kiln_error *err) {
    if (!tok || !out) return kn_fail(err, KILN_ERR_INVALID_ARG, "kiln_detok_stream_new: NULL argument");
    kiln_detok_stream *s = kn_calloc(1, sizeof *s);
    if (!s) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    kn_detok_stream_init(&s->s, (const kn_tokenizer *)tok,
                         (flags & KILN_DETOKENIZE_SPECIAL) ? KN_DETOK_SPECIAL : 0);
    *out = s;
    return KILN_OK;
}

kiln_status kiln_detok_stream_push(kiln_detok_stream *s, int32_t id, char **text, size_t *len,
                                   kiln_error *err) {
    if (!s || !text) return kn_fail(err, KILN_ERR_INVALID_ARG, "kiln_detok_stream_push: NULL argument");
    *text = NULL;
    kn_buf b = {0};
    kiln_status st = kn_detok_stream_push(&s->s, id, &b, err);
    if (st != KILN_OK) {
        kn_buf_free(&b);
        return st;
    }
    return take_buf(&b, text, len, err);
}

kiln_status kiln_detok_stream_finish(kiln_detok_stream *s, char **text, size_t *len,
                                     kiln_error *err) {
    if (!s || !text) return kn_fail(err, KILN_ERR_INVALID_ARG, "kiln_detok_stream_finish: NULL argument");
    kn_buf b = {0};
    kn_detok_stream_flush(&s->s, &b);
    return take_buf(&b, text, len, err);
}

void kiln_detok_stream_free(kiln_detok_stream *s) {
    if (!s) return;
    kn_detok_stream_free(&s->s);
    kn_free(s);
}

uint32_t kiln_tokenizer_n_vocab(const kiln_tokenizer *tok) {
    return kn_tokenizer_n_vocab((const kn_tokenizer *)tok);
}
int32_t kiln_tokenizer_bos(const kiln_tokenizer *tok) { return kn_tokenizer_bos((const kn_tokenizer *)tok); }
int32_t kiln_tokenizer_eos(const kiln_tokenizer *tok) { return kn_tokenizer_eos((const kn_tokenizer *)tok); }
int kiln_tokenizer_is_eog(const kiln_tokenizer *tok, int32_t id) {
    return kn_tokenizer_is_eog((const kn_tokenizer *)tok, id);
}

kiln_status kiln_chat_render(const kiln_tokenizer *tok, const char *template_name,
                             const char *template_kwargs, const kiln_chat_message *msgs, size_t n,
                             int add_generation_prompt, char **out, kiln_error *err) {
    if (!tok || !out || (!msgs && n)) return kn_fail(err, KILN_ERR_INVALID_ARG, "kiln_chat_render: NULL argument");
    /* kiln_chat_message and kn_chat_msg have the same layout */
    return kn_chat_render((const kn_tokenizer *)tok, template_name, template_kwargs,
                          (const kn_chat_msg *)msgs, n, add_generation_prompt != 0, out, err);
}
