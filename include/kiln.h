/*
 * kiln.h — the one public header of kiln.
 *
 * kiln bakes a language-model checkpoint (GGUF, or a Hugging Face folder of config.json,
 * *.safetensors and tokenizer.json) into an "offering": a directory holding model.gguf with the
 * weights quantized (int4 by default), the tokenizer, the chat template and a *static contract*
 * (every graph input and output with a fixed shape), plus manifest.json with the same contract in
 * readable form. Backends that refuse dynamic shapes (an NPU through OpenVINO) run offerings
 * with fixed-shape calls only.
 *
 * Usage:
 *
 *     kiln_error err;
 *     kiln_bake_params p = kiln_bake_default_params();
 *     p.window = 1024;                      // KV-cache capacity W
 *     p.chunk  = 128;                       // prefill width C
 *     if (kiln_bake("model.gguf", "offering_int4_binary", &p, &err) != KILN_OK)
 *         fprintf(stderr, "kiln: %s\n", err.message);
 *
 *     char *json = NULL;
 *     if (kiln_describe("offering_int4_binary", KILN_DESCRIBE_JSON, &json, &err) == KILN_OK) {
 *         puts(json);
 *         kiln_free(json);
 *     }
 *
 * Conventions: every fallible call returns a kiln_status (KILN_OK = 0) and hands results back
 * through out-parameters; the words of a failure go to a caller-owned kiln_error. The library
 * never prints and never exits; it reports through the callbacks given in the params.
 */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_VERSION "0.1.0"

typedef enum kiln_status {
    KILN_OK = 0,
    KILN_ERR_INVALID_ARG = 1,   /* a bad argument or option value from the caller */
    KILN_ERR_IO = 2,            /* a path that cannot be opened, read or written */
    KILN_ERR_FORMAT = 3,        /* a file that is malformed, truncated or inconsistent */
    KILN_ERR_UNSUPPORTED = 4,   /* well-formed but outside what kiln handles (arch, dtype) */
    KILN_ERR_NOMEM = 5,         /* an allocation failed */
    KILN_ERR_DEVICE = 6,        /* the requested device is not available */
    KILN_ERR_INTERNAL = 7,      /* a bug in kiln */
    KILN_ERR_CANCELLED = 8,     /* the caller asked to stop (a progress callback said so) */
    KILN_ERR_WRITE = 9          /* the output could not be written: disk full, permissions,
                                   another bake writing the same offering */
} kiln_status;

/* The words of the last failure of a call. Owned by the caller; no allocation inside. */
typedef struct kiln_error {
    kiln_status code;
    char message[768];
} kiln_error;

/* A static, human-readable name for a status code. */
const char *kiln_status_str(kiln_status status);

/* Frees memory that kiln handed to the caller (strings from kiln_describe and the like). */
void kiln_free(void *ptr);

/* Log levels for the log callback. */
typedef enum kiln_log_level {
    KILN_LOG_ERROR = 0,
    KILN_LOG_WARN = 1,
    KILN_LOG_INFO = 2,
    KILN_LOG_DEBUG = 3
} kiln_log_level;

typedef void (*kiln_log_fn)(kiln_log_level level, const char *message, void *user);

/* Bake progress: called after each tensor is written. Returning non-zero cancels the bake, which
 * then removes what it wrote and returns KILN_ERR_CANCELLED. */
typedef struct kiln_progress {
    int tensors_done;
    int tensors_total;
    uint64_t bytes_done;   /* bytes of the source tensors processed so far */
    uint64_t bytes_total;
    double seconds;        /* since the bake started */
} kiln_progress;

typedef int (*kiln_progress_fn)(const kiln_progress *progress, void *user);

/* Weight quantization chosen at bake. */
typedef enum kiln_quant {
    KILN_QUANT_DEFAULT = 0,       /* keep for an already-quantized source, q4_0 otherwise */
    KILN_QUANT_KEEP,              /* every tensor keeps its source type, bit for bit */
    KILN_QUANT_Q4_0,              /* int4 symmetric, group 32 (GGUF Q4_0 layout) */
    KILN_QUANT_Q4_1,              /* int4 asymmetric, group 32 (GGUF Q4_1 layout) */
    KILN_QUANT_Q8_0,              /* int8 symmetric, group 32 (GGUF Q8_0 layout) */
    KILN_QUANT_INT4_SYM_G128,     /* int4 symmetric, group 128, for the NPU path */
    KILN_QUANT_F16
} kiln_quant;

/* Parses "keep", "q4_0", ... into a kiln_quant; KILN_ERR_INVALID_ARG for an unknown name. */
kiln_status kiln_quant_from_name(const char *name, kiln_quant *out);
const char *kiln_quant_name(kiln_quant quant);

typedef enum kiln_target {
    KILN_TARGET_CPU = 0,          /* model.gguf + manifest.json */
    KILN_TARGET_OPENVINO = 1,     /* also openvino_model.xml/.bin (prefill) and
                                     openvino_decode.xml/.bin (decode), all shapes static */
    KILN_TARGET_NPU = 2           /* OpenVINO for the NPU: as OPENVINO, and a non-quantized
                                     source defaults to int4_sym_g128 */
} kiln_target;

typedef struct kiln_bake_params {
    kiln_quant quant;
    kiln_target target;
    int group_size;               /* OpenVINO int4 group: 0 = the scheme's, 128, or -1 (per
                                     channel) where the stored blocks allow it */
    int window;                   /* W: KV-cache capacity in tokens (default 1024) */
    int chunk;                    /* C: prefill width (default 128); 1 <= C <= W */
    int sink;                     /* S: tokens kept by --overflow slide (default 4) */
    kiln_log_fn log;              /* optional */
    void *log_user;
    kiln_progress_fn progress;    /* optional */
    void *progress_user;
} kiln_bake_params;

kiln_bake_params kiln_bake_default_params(void);

/* Locks an OpenVINO IR exported with dynamic dimensions (optimum-intel: input_ids,
 * attention_mask, position_ids, beam_idx, past_key_values as 4-D inputs or as state) to the
 * static window / chunk of params and writes it as an offering (openvino_model.xml/.bin +
 * manifest.json). Any dynamic dimension kiln cannot place is an error naming the input. */
kiln_status kiln_bake_from_ir(const char *xml, const char *out_dir,
                              const kiln_bake_params *params, kiln_error *err);

/*
 * Bakes SOURCE (a .gguf file, a Hugging Face model folder, or "ORG/NAME" looked up in the local
 * Hugging Face cache) into the offering directory OUT_DIR. The offering is written in a
 * staging directory beside it and swapped into place atomically (an existing offering is
 * replaced in one step: a reader sees the old or the new one, never none), so a failed bake
 * leaves nothing behind. An existing OUT_DIR that is an offering is replaced; any other
 * existing OUT_DIR is refused. A bake locks its staging directory: a second bake to the same
 * OUT_DIR meanwhile is refused (KILN_ERR_WRITE), and staging left by a killed bake is removed
 * by the next one.
 */
kiln_status kiln_bake(const char *source, const char *out_dir, const kiln_bake_params *params,
                      kiln_error *err);

typedef enum kiln_describe_format {
    KILN_DESCRIBE_TEXT = 0,
    KILN_DESCRIBE_JSON = 1
} kiln_describe_format;

/*
 * Describes an offering or any source kiln_bake reads: graphs with every input and output
 * (name, dtype, static shape), hyperparameters, quantization per tensor class, provenance and
 * the validation verdict. *out is a NUL-terminated string to free with kiln_free.
 * A source that is not an offering is described as the offering a default bake would make,
 * with the checks a bake makes before writing (its tokenizer against the model).
 * An offering or source that fails a validation check gives KILN_ERR_FORMAT with *out still
 * set (the description names the failing check).
 */
kiln_status kiln_describe(const char *path, kiln_describe_format format, char **out,
                          kiln_error *err);

/* ---- tokenizer ---- */
/*
 * The tokenizer an offering carries, usable without the weights:
 *
 *     kiln_tokenizer *tok;
 *     if (kiln_tokenizer_open("offering_int4_binary", &tok, &err) != KILN_OK) ...
 *     int32_t *ids; size_t n;
 *     kiln_tokenize(tok, "Hello", 5, KILN_TOKENIZE_ADD_BOS, &ids, &n, &err);
 *     char *text; size_t len;
 *     kiln_detokenize(tok, ids, n, 0, &text, &len, &err);
 *     kiln_free(ids); kiln_free(text); kiln_tokenizer_free(tok);
 */
typedef struct kiln_tokenizer kiln_tokenizer;

/* source: an offering directory (its model.gguf), a .gguf file (vocab-only files included) or
 * a Hugging Face folder with tokenizer.json (+ tokenizer_config.json). */
kiln_status kiln_tokenizer_open(const char *source, kiln_tokenizer **out, kiln_error *err);
void kiln_tokenizer_free(kiln_tokenizer *tok);

enum {
    KILN_TOKENIZE_ADD_BOS = 1, /* prepend BOS (force it even if the model does not add one) */
    KILN_TOKENIZE_SPECIAL = 2, /* match special tokens such as <|im_start|> in the text */
    KILN_TOKENIZE_MODEL_BOS = 4 /* BOS (and EOS) as the model's add_bos / add_eos say: the ids
                                   kiln_generate feeds for a raw prompt */
};
/* Encodes text[0..len) into *ids (n of them; free with kiln_free). Invalid UTF-8 in the text is
 * replaced by U+FFFD before encoding. */
kiln_status kiln_tokenize(const kiln_tokenizer *tok, const char *text, size_t len,
                          unsigned flags, int32_t **ids, size_t *n, kiln_error *err);

enum {
    KILN_DETOKENIZE_SPECIAL = 1 /* render special tokens as their text */
};
/* Decodes ids into UTF-8 text (free with kiln_free), NUL-terminated for convenience; *len
 * (optional) is its length in bytes, which counts the NUL bytes a token may decode to (a
 * byte token <0x00>), so print with the length, not as a C string. An id outside the
 * vocabulary is KILN_ERR_INVALID_ARG. */
kiln_status kiln_detokenize(const kiln_tokenizer *tok, const int32_t *ids, size_t n,
                            unsigned flags, char **text, size_t *len, kiln_error *err);

/* Streaming decoder: each push returns the text that became complete (possibly ""), holding
 * back the bytes of a character split across tokens; finish returns what is left (an
 * incomplete character becomes U+FFFD). Strings are freed with kiln_free; *len (optional) as
 * for kiln_detokenize. */
typedef struct kiln_detok_stream kiln_detok_stream;
kiln_status kiln_detok_stream_new(const kiln_tokenizer *tok, unsigned flags,
                                  kiln_detok_stream **out, kiln_error *err);
kiln_status kiln_detok_stream_push(kiln_detok_stream *s, int32_t id, char **text, size_t *len,
                                   kiln_error *err);
kiln_status kiln_detok_stream_finish(kiln_detok_stream *s, char **text, size_t *len,
                                     kiln_error *err);
void kiln_detok_stream_free(kiln_detok_stream *s);

uint32_t kiln_tokenizer_n_vocab(const kiln_tokenizer *tok);
int32_t kiln_tokenizer_bos(const kiln_tokenizer *tok); /* -1 if none */
int32_t kiln_tokenizer_eos(const kiln_tokenizer *tok);
/* True for ids that end generation (EOS, EOT and the model's end-of-turn tokens). */
int kiln_tokenizer_is_eog(const kiln_tokenizer *tok, int32_t id);

typedef struct kiln_chat_message {
    const char *role;    /* "system", "user" or "assistant" */
    const char *content;
} kiln_chat_message;

/* Renders a conversation with the model's chat template (template_name NULL) or a built-in
 * one ("chatml", "llama2", "mistral", "zephyr", "neural-chat", "llama3", "gemma"). A template
 * kiln cannot render is KILN_ERR_UNSUPPORTED naming it. template_kwargs: NULL, or a JSON
 * object whose members the template sees as variables, as apply_chat_template's extra
 * arguments (e.g. "{\"enable_thinking\": false}" for Qwen3); a malformed one is
 * KILN_ERR_INVALID_ARG. *out: free with kiln_free. */
kiln_status kiln_chat_render(const kiln_tokenizer *tok, const char *template_name,
                             const char *template_kwargs, const kiln_chat_message *msgs, size_t n,
                             int add_generation_prompt, char **out, kiln_error *err);
/* ---- end tokenizer ---- */

/* ---- runtime ---- */
/*
 * Loading an offering and generating with fixed-shape calls only:
 *
 *     kiln_model *m;
 *     kiln_model_params mp = kiln_model_default_params();
 *     if (kiln_model_open("offering_int4_binary", &mp, &m, &err)) ...
 *     kiln_session *s;
 *     kiln_session_params sp = kiln_session_default_params();   // kv mode, 1 thread
 *     if (kiln_session_new(m, &sp, &s, &err)) ...
 *     kiln_generate_params gp = kiln_generate_default_params(); // greedy, 256 tokens
 *     gp.on_text = print_it;                                    // streaming
 *     kiln_result r;
 *     if (kiln_generate(s, "List the planets.", &gp, &r, &err)) ...
 *     printf("%s\n%s\n", r.text, r.metrics.finish_reason);
 *     kiln_result_free(&r); kiln_session_free(s); kiln_model_free(m);
 *
 * Model and sessions. A kiln_model holds what its sessions share: the weights (mapped, read
 * only), the tokenizer, and per device the compiled graphs (OpenVINO compiles or imports each
 * graph once per model and device, whatever the number of sessions) and one thread pool. A
 * kiln_session holds only what one conversation writes: its KV cache, scratch buffers, device
 * requests and sampler, all sized once from the static contract, so generating allocates
 * nothing per token. A kiln_chat keeps a conversation's messages above a session.
 *
 * Threads. kiln_model_open and kiln_model_free run alone. Between them, any number of threads
 * may call kiln_session_new / kiln_session_free and the kiln_model_* queries on one model at
 * once, and use different sessions at the same time (their steps take turns on the model's
 * CPU thread pool, and give the same ids as one after another). One session, and a kiln_chat
 * over it, is used by one thread at a time. Every session is freed before its model.
 */
typedef struct kiln_model kiln_model;
typedef struct kiln_session kiln_session;

typedef struct kiln_model_params {
    const char *tokenizer;    /* optional: an HF folder or cached ORG/NAME whose tokenizer
                                 replaces the offering's (the old --tokenizer_id) */
    /* The contract of a source that is not an offering: W (0 = 1024) and C (0 = 128). An
     * offering runs with the contract it was baked with; a different window or chunk here is
     * KILN_ERR_INVALID_ARG. */
    int window;
    int chunk;
    kiln_log_fn log;          /* told what opening does on the caller's behalf */
    void *log_user;
} kiln_model_params;

kiln_model_params kiln_model_default_params(void);

/* path: an offering directory, a file inside one (model.gguf, manifest.json,
 * openvino_model.xml), a GGUF file used with its weights as they are and the default contract
 * (W, C above), or a Hugging Face folder / cached ORG/NAME, which is baked with its weights kept
 * into a private directory under $TMPDIR (/tmp without it) — said through the log callback —
 * mapped, and removed at once (bake it yourself to keep or quantize it). */
kiln_status kiln_model_open(const char *path, const kiln_model_params *params, kiln_model **out,
                            kiln_error *err);
void kiln_model_free(kiln_model *model);
const kiln_tokenizer *kiln_model_tokenizer(const kiln_model *model);
int kiln_model_window(const kiln_model *model);
int kiln_model_chunk(const kiln_model *model);
int kiln_model_n_vocab(const kiln_model *model);
/* How many device graphs the model has compiled or imported from the blob cache so far, over
 * every device its sessions opened (0 on the native CPU, which compiles nothing). */
int kiln_model_compiles(const kiln_model *model);
/* How many decode steps of its sessions have run batched: in one pass over the weights with
 * other sessions' steps. The native CPU batches the steps of sessions that run at once (each
 * on its own thread, e.g. kiln serve's slots); the output is the same bits either way. */
long kiln_model_batched_steps(const kiln_model *model);

typedef enum kiln_mode {
    KILN_MODE_KV = 0,         /* prefill chunks [1,C] + decode [1,1] against a W-slot KV cache */
    KILN_MODE_STATELESS = 1   /* the old scheme: one padded [1,W] window per token, no cache */
} kiln_mode;

typedef enum kiln_overflow {
    KILN_OVERFLOW_STOP = 0,   /* a full window ends generation (finish reason "length") */
    KILN_OVERFLOW_SLIDE = 1   /* keep the first S sink tokens, roll the rest */
} kiln_overflow;

/* Element type of the native CPU engine's KV cache. */
typedef enum kiln_kv_type {
    KILN_KV_F16 = 0,          /* IEEE halves (default; llama.cpp's default too): half the
                                 memory and the attention reads of F32 */
    KILN_KV_F32 = 1,
    KILN_KV_Q8_0 = 2          /* GGUF Q8_0 rows (llama.cpp's -ctk q8_0 -ctv q8_0): about half
                                 the bytes of f16; the head size must be a multiple of 32 */
} kiln_kv_type;

typedef struct kiln_session_params {
    int threads;              /* >= 1; 0 = physical cores */
    kiln_mode mode;
    kiln_overflow overflow;
    kiln_kv_type kv;          /* the native CPU engine's KV cache (default F16) */
    /* "auto" (default: NPU, then GPU through OpenVINO when the offering has its IR, else the
     * native CPU), "cpu", "npu", "gpu" or "openvino:DEVICE". A named device that is not there
     * is KILN_ERR_DEVICE, never a silent fallback. Sessions of one model asking for the same
     * device, mode and threads share what the device compiled for the first of them. */
    const char *device;
    int no_fallback;          /* with "auto": a missing NPU is an error, not a fallback */
    const char *openvino_lib; /* libopenvino_c path (else $KILN_OPENVINO_LIB, the openvino
                                 Python wheel, the system) */
    kiln_log_fn log;          /* told why each skipped device was skipped */
    void *log_user;
    /* Start-up self-check of an accelerator: one short prompt on the device and on the native
     * CPU, logits compared; beyond tolerance the device is refused (auto falls back). */
    int verify;
} kiln_session_params;

kiln_session_params kiln_session_default_params(void);
kiln_status kiln_session_new(kiln_model *model, const kiln_session_params *params,
                             kiln_session **out, kiln_error *err);
void kiln_session_free(kiln_session *session);
/* The device the session runs on: "cpu", "openvino:NPU", ... */
const char *kiln_session_device(const kiln_session *session);
/* The CPU kernel table it runs ("avx2" ...), or "" when the device is not the native CPU. */
const char *kiln_session_kernels(const kiln_session *session);
/* What auto skipped before this device: "" or e.g. "npu,gpu". */
const char *kiln_session_fallback(const kiln_session *session);
/* The CPU threads the session runs on (its model's pool on that device, shared by its
 * sessions): the number asked for, or the physical cores when 0 was. */
int kiln_session_threads(const kiln_session *session);

/* The CPU kernel tables this machine can run, reference first and best last, space-separated
 * ("generic avx2 avx512vnni"), and in *chosen the one sessions use: $KILN_KERNELS, else the
 * best. KILN_ERR_INVALID_ARG (the message naming the valid choices) when KILN_KERNELS names a
 * table that does not exist or that this CPU cannot run. */
kiln_status kiln_cpu_kernels(const char **usable, const char **chosen, kiln_error *err);
/* Forgets everything the session's cache holds. */
void kiln_session_reset(kiln_session *session);
/* The ids the session's cache holds, position by position (its last generation's prompt and
 * answer; kv mode only, else *n = 0): what reuse_prefix can keep. A server picks, for a
 * request, the free session whose ids share the longest prefix with it. Valid until the next
 * call on the session. */
void kiln_session_cached(const kiln_session *session, const int32_t **ids, int *n);

/* Low level, for benchmarks and servers that run their own loop: feeds n token ids at positions
 * pos0, pos0 + 1, ... (kv mode: the cache keeps what it holds before pos0; stateless: the ids
 * join the window, whose positions are its own) through fixed-shape calls, and points *logits
 * at the n_vocab logits that predict the next token, valid until the next call on the session.
 * KILN_ERR_INVALID_ARG for an id outside the vocabulary or (--overflow stop) tokens past the
 * window. */
kiln_status kiln_session_feed(kiln_session *session, const int32_t *ids, int n, int pos0,
                              const float **logits, kiln_error *err);

/* For benchmarks (kiln bench --floor). Bytes of weights one decode step reads: every layer
 * matrix and the output matrix (the one embedding row is negligible). *stored: as the model
 * file stores them, what any engine must stream per token; *resident: as the native engine
 * holds them (more where a type its kernels lack is widened to F32 at load). Either pointer may
 * be NULL. */
void kiln_model_decode_bytes(const kiln_model *model, uint64_t *stored, uint64_t *resident);
/* Bytes of cached keys and values a decode step reads with n_ctx positions in the cache (the
 * new one included) in a cache of the given type: every layer's K and V rows, a sliding-window
 * layer's at most its window. Counted with the weights, they make the floor at a depth. */
uint64_t kiln_model_kv_bytes(const kiln_model *model, kiln_kv_type kv, int n_ctx);
/* This machine's read bandwidth in GB/s (1e9 bytes/s): `threads` threads of a pool like a
 * session's stream a buffer of `bytes` (0: 1 GiB, well past the caches), best of 5 passes.
 * bandwidth / stored bytes per token is the ceiling of decode tokens/s. */
kiln_status kiln_read_bandwidth(int threads, size_t bytes, double *gbs, kiln_error *err);

typedef struct kiln_sampling {
    float temperature;        /* <= 0: greedy (default) */
    int top_k;                /* 0 = off (default 40 when sampling) */
    float top_p;              /* 1 = off */
    float min_p;              /* 0 = off */
    float repeat_penalty;     /* 1 = off */
    int repeat_last_n;        /* tokens the penalty looks back over (default 64) */
    uint64_t seed;            /* same seed, same text */
} kiln_sampling;

/* Called with each piece of text as it is generated (whole UTF-8 characters only); return
 * non-zero to stop (finish reason "cancelled"). */
typedef int (*kiln_text_fn)(const char *text, size_t len, void *user);

typedef struct kiln_generate_params {
    int max_tokens;           /* default 256 */
    kiln_sampling sampling;
    const char *const *stop;  /* extra stop strings (not printed) */
    int n_stop;
    int raw;                  /* 1: the prompt as is (BOS as the model wants), no chat template */
    const char *system;       /* optional system message for the chat template */
    const char *chat_template;/* optional built-in template name overriding the model's */
    const char *chat_template_kwargs; /* optional JSON object of extra template variables,
                                         e.g. {"enable_thinking": false} (kiln_chat_render) */
    kiln_text_fn on_text;
    void *user;
    volatile int *cancel;     /* optional: set non-zero (e.g. from a signal) to stop */
    /* 1: keep the longest prefix of the prompt that the session's cache already holds (the
     * prompt and answer of its previous generation) and prefill only the rest, as a chat or a
     * server resending a conversation wants; metrics.cached_tokens counts what was kept.
     * 0 (default): the cache is emptied first. Stateless mode has no cache to keep. */
    int reuse_prefix;
} kiln_generate_params;

kiln_generate_params kiln_generate_default_params(void);

typedef struct kiln_metrics {
    int prompt_tokens;        /* the whole prompt, cached tokens included */
    int cached_tokens;        /* of those, kept from the cache (reuse_prefix), not prefilled */
    int generated_tokens;
    double ttft_ms;           /* prompt in -> first token out */
    double prefill_tps;       /* prefilled tokens / prefill time */
    double decode_tps;        /* tokens after the first / their time */
    double p50_ms, p95_ms;    /* per-token latency of decode steps */
    double total_ms;
    double peak_rss_mb;
    const char *device;       /* "cpu", "openvino:NPU", ... */
    const char *fallback;     /* "" or what auto skipped, e.g. "npu,gpu" */
    const char *kernels;      /* the CPU kernel table ("generic", "avx2", "avx512vnni"), or ""
                                 when the device is not the native CPU */
    const char *mode;         /* "kv" or "stateless" */
    const char *finish_reason;/* "stop" (EOS / end of turn / stop string), "length", "cancelled" */
    int threads;
} kiln_metrics;

typedef struct kiln_result {
    char *text;               /* everything generated, NUL-terminated */
    size_t text_len;          /* its length (the text may hold NUL bytes) */
    int32_t *prompt_ids;      /* the whole prompt, cached tokens included */
    int n_prompt;
    int32_t *ids;             /* generated ids (an ending EOS / end-of-turn id included) */
    int n_ids;
    kiln_metrics metrics;
} kiln_result;

/* The longest prompt (or chat message, or system message) kiln_generate and kiln_chat_turn
 * take, in bytes; `kiln chat` reads input lines up to this length. */
#define KILN_MAX_PROMPT_BYTES (8u << 20)

/* One prompt -> one answer: through the chat template unless raw, then as kiln_generate_ids. */
kiln_status kiln_generate(kiln_session *session, const char *prompt,
                          const kiln_generate_params *params, kiln_result *out, kiln_error *err);
/* The same from token ids (no template, no tokenization): from an empty cache, or keeping what
 * it holds of the prompt with reuse_prefix. */
kiln_status kiln_generate_ids(kiln_session *session, const int32_t *prompt, int n,
                              const kiln_generate_params *params, kiln_result *out,
                              kiln_error *err);
void kiln_result_free(kiln_result *result);

/* A conversation over a session: the messages so far, rendered with the chat template each
 * turn; the session's cache keeps the conversation, so a turn prefills only what is new (also
 * after --overflow slide has rolled the window). */
typedef struct kiln_chat kiln_chat;
kiln_status kiln_chat_new(kiln_session *session, kiln_chat **out, kiln_error *err);
void kiln_chat_free(kiln_chat *chat);
/* Forgets the messages and empties the session's cache. */
void kiln_chat_reset(kiln_chat *chat);
/* One user turn -> the assistant's answer (added to the conversation). params->system, on the
 * first turn, starts the conversation with a system message. */
kiln_status kiln_chat_turn(kiln_chat *chat, const char *user_text,
                           const kiln_generate_params *params, kiln_result *out, kiln_error *err);
/* ---- end runtime ---- */

#ifdef __cplusplus
}
#endif

#endif /* KILN_H */
