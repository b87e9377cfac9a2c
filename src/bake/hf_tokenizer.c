/* hf_tokenizer.c — a Hugging Face folder's tokenizer into GGUF keys. */
#include <cjson/cJSON.h>
#include <string.h>

#include "bake/bake.h"

kiln_status kn_bake_hf_tokenizer(const kn_source *src, kn_gguf_writer *w, kiln_error *err) {
    if (src->tokenizer_config_json) {
        cJSON *c = cJSON_Parse(src->tokenizer_config_json);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(c, "chat_template");
        if (cJSON_IsString(t)) kn_gguf_set_str(w, "tokenizer.chat_template", t->valuestring);
        const cJSON *ab = cJSON_GetObjectItemCaseSensitive(c, "add_bos_token");
        if (cJSON_IsBool(ab)) kn_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", cJSON_IsTrue(ab));
        cJSON_Delete(c);
    }
    return kn_gguf_writer_status(w, err);
}
