/* libFuzzer target: a tokenizer.json, optionally followed by a NUL and a tokenizer_config.json.
 * A tokenizer that loads then encodes and decodes a fixed text, and renders a chat with the
 * template its config carries (under the template work budget). */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t jl = nul ? (size_t)(nul - data) : size;
    const char *cfg = nul ? (const char *)nul + 1 : NULL;
    size_t cl = nul ? size - jl - 1 : 0;
    kn_tokenizer *t = NULL;
    kiln_error e;
    if (kn_tokenizer_load_hf_json((const char *)data, jl, cfg, cl, "fuzz/tokenizer.json", &t,
                                  &e) != KILN_OK)
        return 0;
    static const char text[] = "Hello, world! 123 \xc3\xa9\xe2\x82\xac <|im_start|> \n\t x";
    kn_tokens ids = {0};
    if (kn_tokenize(t, text, sizeof text - 1, KN_TOK_ADD_BOS | KN_TOK_PARSE_SPECIAL, &ids, &e) ==
        KILN_OK) {
        for (size_t i = 0; i < ids.n; i++)
            if (ids.ids[i] < 0 || (uint32_t)ids.ids[i] >= kn_tokenizer_n_vocab(t)) abort();
        kn_buf out = {0};
        (void)kn_detokenize(t, ids.ids, ids.n, KN_DETOK_SPECIAL, &out, &e);
        kn_buf_free(&out);
    }
    kn_tokens_free(&ids);
    kn_chat_msg msgs[] = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"},
                          {"user", "Bye"}};
    char *rendered = NULL;
    if (kn_tokenizer_chat_template(t) &&
        kn_chat_render(t, NULL, NULL, msgs, 4, true, &rendered, &e) == KILN_OK)
        kn_free(rendered);
    kn_tokenizer_free(t);
    return 0;
}
