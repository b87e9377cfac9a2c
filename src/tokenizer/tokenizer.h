/* tokenizer.h — kiln's tokenizers: SentencePiece-style BPE and byte-level BPE, loaded from a GGUF
 * (tokenizer.ggml.*) or a Hugging Face tokenizer.json, with special tokens, streaming UTF-8-safe
 * decoding and chat templates. Internal API (the public one is the kiln_tokenizer block in
 * kiln.h).
 *
 * Usage:
 *
 *     kn_tokenizer *t;
 *     if (kn_tokenizer_open("offering_int4_binary", &t, &err) != KILN_OK) ...
 *     kn_tokens ids = {0};
 *     kn_tokenize(t, text, strlen(text), KN_TOK_ADD_BOS, &ids, &err);
 *     kn_buf out = {0};
 *     kn_detokenize(t, ids.ids, ids.n, 0, &out, &err);
 *     kn_tokens_free(&ids); kn_buf_free(&out); kn_tokenizer_free(t);
 *
 * Pipeline of an encode, the same for both sources: split out added/special tokens (user-defined
 * ones always, control ones only with KN_TOK_PARSE_SPECIAL) -> normalize each remaining fragment
 * (prepend, replace, NFC) -> pre-tokenize with a chain of regex splits (PCRE2) -> per piece: SPM
 * score merges, or rank-ordered BPE merges over bytes (byte-level) or characters (byte fallback).
 * A kn_tokenizer is read-only after loading, so one may serve many threads.
 */
#ifndef KN_TOKENIZER_H
#define KN_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "formats/gguf.h"
#include "template/jinja.h"

/* Token types, numbered as GGUF's tokenizer.ggml.token_type stores them. */
enum {
    KN_TOKTYPE_UNDEFINED = 0,
    KN_TOKTYPE_NORMAL = 1,
    KN_TOKTYPE_UNKNOWN = 2,
    KN_TOKTYPE_CONTROL = 3,
    KN_TOKTYPE_USER_DEFINED = 4,
    KN_TOKTYPE_UNUSED = 5,
    KN_TOKTYPE_BYTE = 6
};

typedef enum kn_tok_model {
    KN_TOKMODEL_SPM = 0, /* tokenizer.ggml.model = "llama": merges by token score */
    KN_TOKMODEL_BPE = 1  /* merges by rank ("gpt2", or HF BPE) */
} kn_tok_model;

typedef struct kn_tokenizer kn_tokenizer;

/* A growable array of token ids. Zero-initialize; free with kn_tokens_free. */
typedef struct kn_tokens {
    int32_t *ids;
    size_t n, cap;
} kn_tokens;
void kn_tokens_free(kn_tokens *v);

/* ---- loading ---- */

/* From an opened GGUF (a model or a vocab-only file). Uses tokenizer.ggml.*; when those are
 * missing or name a pre-tokenizer kiln does not know and tokenizer.huggingface.json is present,
 * loads that instead. The result does not reference g. */
kiln_status kn_tokenizer_load_gguf(const kn_gguf *g, kn_tokenizer **out, kiln_error *err);
/* Checks the tokenizer a GGUF carries against the model it serves, as bake, inspect and loading
 * do: it loads, its vocabulary has exactly n_rows tokens (the embedding rows), and every
 * special id the file names (tokenizer.ggml.{bos,eos,unknown,padding,eot,eom}_token_id) is
 * inside it. KILN_ERR_FORMAT / KILN_ERR_UNSUPPORTED naming the file and the reason. */
kiln_status kn_tokenizer_check_gguf(const kn_gguf *g, int64_t n_rows, kiln_error *err);
/* The same checks for a tokenizer already loaded from g. */
kiln_status kn_tokenizer_check_model(const kn_tokenizer *t, const kn_gguf *g, int64_t n_rows,
                                     kiln_error *err);
/* True when a GGUF holds any tokenizer at all (tokenizer.ggml.model or an embedded
 * tokenizer.huggingface.json). */
bool kn_gguf_has_tokenizer(const kn_gguf *g);

/* From the text of a tokenizer.json and, optionally, of tokenizer_config.json (NULL if absent:
 * it supplies add_bos_token/add_eos_token, the chat template and special token names). label
 * names the source in messages. */
kiln_status kn_tokenizer_load_hf_json(const char *json, size_t json_len, const char *config_json,
                                      size_t config_len, const char *label, kn_tokenizer **out,
                                      kiln_error *err);
/* From a Hugging Face folder holding tokenizer.json (+ tokenizer_config.json). */
kiln_status kn_tokenizer_load_hf_dir(const char *dir, kn_tokenizer **out, kiln_error *err);
/* source: an offering directory (its model.gguf), a .gguf file, or a Hugging Face folder. */
kiln_status kn_tokenizer_open(const char *source, kn_tokenizer **out, kiln_error *err);
void kn_tokenizer_free(kn_tokenizer *t);

/* Writes llama.cpp's tokenizer.ggml.* keys and tokenizer.chat_template so that the file reads
 * back (kn_tokenizer_load_gguf) into a tokenizer that encodes identically. n_rows > n_vocab
 * pads the vocabulary with unused [PADn] tokens up to the embedding rows, as llama.cpp's
 * converter does (0: no padding). */
kiln_status kn_tokenizer_write_gguf(const kn_tokenizer *t, uint32_t n_rows, kn_gguf_writer *w,
                                    kiln_error *err);

/* ---- queries ---- */

uint32_t kn_tokenizer_n_vocab(const kn_tokenizer *t);
kn_tok_model kn_tokenizer_model(const kn_tokenizer *t);
/* The pre-tokenizer name written as tokenizer.ggml.pre ("llama-bpe", "smollm", "default" ...). */
const char *kn_tokenizer_pre_name(const kn_tokenizer *t);
/* -1 when the model has none. */
int32_t kn_tokenizer_bos(const kn_tokenizer *t);
int32_t kn_tokenizer_eos(const kn_tokenizer *t);
int32_t kn_tokenizer_eot(const kn_tokenizer *t);
int32_t kn_tokenizer_unk(const kn_tokenizer *t);
int32_t kn_tokenizer_pad(const kn_tokenizer *t);
bool kn_tokenizer_add_bos(const kn_tokenizer *t);
/* True for tokens that end generation (EOS, EOT, <|im_end|>, <|eot_id|>, <end_of_turn> ...). */
bool kn_tokenizer_is_eog(const kn_tokenizer *t, int32_t id);
/* The stored text of a token (not NUL-terminated); NULL for an id out of range. */
const char *kn_tokenizer_token_text(const kn_tokenizer *t, int32_t id, size_t *len);
int kn_tokenizer_token_type(const kn_tokenizer *t, int32_t id);
/* The id of an exact token text, or -1. */
int32_t kn_tokenizer_find(const kn_tokenizer *t, const char *text, size_t len);
/* The chat template source text (tokenizer.chat_template), or NULL. */
const char *kn_tokenizer_chat_template(const kn_tokenizer *t);

/* ---- encoding ---- */

enum {
    KN_TOK_ADD_BOS = 1,       /* prepend BOS (and append EOS) as the model's add_bos/add_eos say */
    KN_TOK_PARSE_SPECIAL = 2, /* match control tokens (<|im_start|> ...) in the text */
    KN_TOK_FORCE_BOS = 4      /* prepend BOS even if the model says not to */
};

/* Appends the ids of text[0..len) to out. Invalid UTF-8 in text is replaced by U+FFFD (each
 * maximal invalid subsequence), so any byte string encodes. */
kiln_status kn_tokenize(const kn_tokenizer *t, const char *text, size_t len, unsigned flags,
                        kn_tokens *out, kiln_error *err);

/* ---- decoding ---- */

enum {
    KN_DETOK_SPECIAL = 1 /* render control tokens as their text (otherwise they render empty) */
};

/* Appends the text of ids to out (valid UTF-8: bytes that do not form characters become
 * U+FFFD). KILN_ERR_INVALID_ARG for an id out of range. */
kiln_status kn_detokenize(const kn_tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
                          kn_buf *out, kiln_error *err);

/* Streaming decoder: feed ids one at a time; text comes out as soon as it forms whole UTF-8
 * characters; the bytes of a character split across tokens are held back until complete. The
 * concatenated output equals kn_detokenize of the whole sequence. */
typedef struct kn_detok_stream {
    const kn_tokenizer *t;
    unsigned flags;
    bool started;          /* some text has been produced (for the leading-space strip) */
    uint8_t pend[8];       /* an incomplete UTF-8 sequence held back */
    size_t npend;
    kn_buf scratch;        /* one token's bytes; reused, so pushing does not allocate once it
                              has grown to the longest token (kn_detok_stream_reserve) */
} kn_detok_stream;

void kn_detok_stream_init(kn_detok_stream *s, const kn_tokenizer *t, unsigned flags);
/* Sizes the scratch for the longest token up front (a generation loop calls it before its
 * first step); false on OOM. */
bool kn_detok_stream_reserve(kn_detok_stream *s);
void kn_detok_stream_free(kn_detok_stream *s);
kiln_status kn_detok_stream_push(kn_detok_stream *s, int32_t id, kn_buf *out, kiln_error *err);
/* Ends the stream: a held-back incomplete character becomes U+FFFD; the scratch is released
 * (kn_detok_stream_free is only needed for a stream abandoned without a flush). */
void kn_detok_stream_flush(kn_detok_stream *s, kn_buf *out);

/* Appends src to out with invalid UTF-8 replaced by U+FFFD. With final false, an incomplete
 * but so far valid sequence at the end is not consumed: the return value is the number of
 * bytes consumed. */
size_t kn_utf8_sanitize(const uint8_t *src, size_t n, bool final, kn_buf *out);

/* ---- chat templates ---- */

/* Renders messages with the model's chat template. name selects a built-in format ("chatml",
 * "llama2", "mistral", "zephyr", "neural-chat", "llama3", "gemma") and overrides the model's
 * template; NULL uses tokenizer.chat_template, rendered by kiln's Jinja-subset interpreter, or
 * recognised as a built-in format. KILN_ERR_UNSUPPORTED names a template kiln cannot render.
 * *out is NUL-terminated, freed with kn_free. */
/* kwargs: NULL, or a JSON object of extra template variables (e.g. {"enable_thinking":
 * false}); a built-in format has no use for them. */
kiln_status kn_chat_render(const kn_tokenizer *t, const char *name, const char *kwargs,
                           const kn_chat_msg *msgs, size_t n, bool add_generation_prompt,
                           char **out, kiln_error *err);
/* Renders a Jinja template source directly (bos/eos token texts given by the caller). */
kiln_status kn_chat_render_template(const char *tmpl, const char *bos, const char *eos,
                                    const char *kwargs, const kn_chat_msg *msgs, size_t n,
                                    bool add_generation_prompt, char **out, kiln_error *err);
/* Renders messages for generation (add_generation_prompt) and tokenizes the text with its
 * special tokens. Chat templates carry their own BOS text where the model wants one, so none
 * is added (as Hugging Face's apply_chat_template does). */
kiln_status kn_chat_tokens(const kn_tokenizer *t, const char *name, const char *kwargs,
                           const kn_chat_msg *msgs, size_t n, kn_tokens *ids, kiln_error *err);
/* The built-in format a template source looks like, or NULL. */
const char *kn_chat_detect(const char *tmpl);

#endif
