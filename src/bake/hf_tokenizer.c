/* hf_tokenizer.c — a Hugging Face folder's tokenizer into GGUF keys, checked against the model. */
#include <cjson/cJSON.h>
#include <string.h>

#include "bake/bake.h"
#include "tokenizer/tokenizer.h"

kiln_status kn_bake_hf_tokenizer(const kn_source *src, kn_gguf_writer *w, kiln_error *err) {
    const int64_t rows = src->hp.n_vocab;
    /* config.json / generation_config.json name the ids the bake writes as BOS / EOS */
    const struct { const char *what; int id; } ids[] = {{"bos_token_id", src->bos_id},
                                                       {"eos_token_id", src->eos_id}};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (ids[i].id >= rows)
            return kn_fail(err, KILN_ERR_FORMAT, "%s: %s %d is outside the vocabulary (%lld "
                           "embedding rows)", src->path, ids[i].what, ids[i].id, (long long)rows);
    /* A folder without tokenizer.json still bakes (weights only); `kiln run` then needs
     * --tokenizer_id. A tokenizer.json that is there must load and fit the model. */
    if (src->tokenizer_json) {
        kn_tokenizer *t = NULL;
        char *label = kn_path_join(src->path, "tokenizer.json");
        const char *lb = label ? label : "tokenizer.json";
        kiln_status s = kn_tokenizer_load_hf_json(
            src->tokenizer_json, strlen(src->tokenizer_json), src->tokenizer_config_json,
            src->tokenizer_config_json ? strlen(src->tokenizer_config_json) : 0, lb, &t, err);
        if (!s) {
            /* Embedding rows are often rounded up past the tokenizer (Qwen2: 151,936 rows for
             * 151,665 ids); llama.cpp's converter fills the gap with unused [PADn] tokens, and
             * so does the bake. A tokenizer that covers less than 15/16 of the rows, or has
             * ids the model cannot embed, is not this model's. */
            int64_t n = kn_tokenizer_n_vocab(t);
            if (n > rows || n < rows - rows / 16)
                s = kn_fail(err, KILN_ERR_FORMAT, "%s: %lld token ids for %lld embedding rows "
                            "(config.json vocab_size): not this model's tokenizer", lb,
                            (long long)n, (long long)rows);
        }
        if (!s && w) s = kn_tokenizer_write_gguf(t, (uint32_t)rows, w, err);
        kn_tokenizer_free(t);
        kn_free(label);
        if (s) return s;
    } else if (src->tokenizer_config_json && w) {
        cJSON *c = cJSON_Parse(src->tokenizer_config_json);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(c, "chat_template");
        if (cJSON_IsString(t)) kn_gguf_set_str(w, "tokenizer.chat_template", t->valuestring);
        cJSON_Delete(c);
    }
    return w ? kn_gguf_writer_status(w, err) : KILN_OK;
}
