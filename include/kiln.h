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
    KILN_ERR_CANCELLED = 8      /* the caller asked to stop (a progress callback said so) */
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

typedef struct kiln_bake_params {
    kiln_quant quant;
    int window;                   /* W: KV-cache capacity in tokens (default 1024) */
    int chunk;                    /* C: prefill width (default 128); 1 <= C <= W */
    int sink;                     /* S: tokens kept by --overflow slide (default 4) */
    kiln_log_fn log;              /* optional */
    void *log_user;
    kiln_progress_fn progress;    /* optional */
    void *progress_user;
} kiln_bake_params;

kiln_bake_params kiln_bake_default_params(void);

/*
 * Bakes SOURCE (a .gguf file, a Hugging Face model folder, or "ORG/NAME" looked up in the local
 * Hugging Face cache) into the offering directory OUT_DIR. The offering is written under a
 * temporary name and renamed into place, so a failed bake leaves nothing behind. An existing
 * OUT_DIR that is an offering is replaced; any other existing OUT_DIR is refused.
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
 * A source that is not an offering is described as the offering a default bake would make.
 */
kiln_status kiln_describe(const char *path, kiln_describe_format format, char **out,
                          kiln_error *err);

/* Maps a status to the exit code of the kiln command: 0 ok, 2 bad input, 3 device, 1 other. */
int kiln_exit_code(kiln_status status);

#ifdef __cplusplus
}
#endif

#endif /* KILN_H */
