/* fuzz_tokenizer.c — libFuzzer target for the encoder and the streaming decoder.
 *
 * The first input byte picks a vocabulary (SentencePiece llama-spm, byte-level gpt-2 or
 * llama-bpe, from $KILN_SHARED or ../shared) and the flags; the rest is the text. Checks:
 * no crash or sanitizer report, every id in range, and the streamed decode of the ids equals
 * the whole decode and is valid UTF-8.
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DKILN_FUZZ=ON && cmake --build build-fuzz
 *   ./build-fuzz/fuzz_tokenizer -max_len=4096 fuzz-corpus/
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

static kn_tokenizer *g_tok[3];

static kn_tokenizer *load(const char *name) {
    const char *root = getenv("KILN_SHARED");
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer-vectors/ggml-vocab-%s.gguf",
             root && *root ? root : "../shared", name);
    kn_tokenizer *t = NULL;
    kiln_error err;
    if (kn_tokenizer_open(path, &t, &err) != KILN_OK) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", err.message);
        abort();
    }
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    if (!g_tok[0]) {
        g_tok[0] = load("llama-spm");
        g_tok[1] = load("gpt-2");
        g_tok[2] = load("llama-bpe");
    }
    const kn_tokenizer *t = g_tok[data[0] % 3];
    unsigned flags = (data[0] >> 2) & 3;
    kn_tokens ids = {0};
    kiln_error err;
    if (kn_tokenize(t, (const char *)data + 1, size - 1, flags, &ids, &err) != KILN_OK) abort();
    for (size_t i = 0; i < ids.n; i++)
        if (ids.ids[i] < 0 || (uint32_t)ids.ids[i] >= kn_tokenizer_n_vocab(t)) abort();
    kn_buf whole = {0}, streamed = {0};
    unsigned df = (data[0] >> 4) & 1 ? KN_DETOK_SPECIAL : 0;
    if (kn_detokenize(t, ids.ids, ids.n, df, &whole, &err) != KILN_OK) abort();
    kn_detok_stream s;
    kn_detok_stream_init(&s, t, df);
    for (size_t i = 0; i < ids.n; i++)
        if (kn_detok_stream_push(&s, ids.ids[i], &streamed, &err) != KILN_OK) abort();
    kn_detok_stream_flush(&s, &streamed);
    if (whole.len != streamed.len || (whole.len && memcmp(whole.data, streamed.data, whole.len)))
        abort();
    kn_buf check = {0};
    if (whole.len && kn_utf8_sanitize((const uint8_t *)whole.data, whole.len, true, &check) &&
        (check.len != whole.len || memcmp(check.data, whole.data, whole.len)))
        abort();
    kn_buf_free(&check);
    kn_buf_free(&whole);
    kn_buf_free(&streamed);
    kn_tokens_free(&ids);
    return 0;
}
