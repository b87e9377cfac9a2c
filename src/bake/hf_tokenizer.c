/* hf_tokenizer.c — a Hugging Face folder's tokenizer into GGUF keys. */
#include <cjson/cJSON.h>
#include <string.h>

#include "bake/bake.h"
#include "tokenizer/tokenizer.h"

kiln_status kn_bake_hf_tokenizer(const kn_source *src, kn_gguf_writer *w, kiln_error *err) {
    /* A folder without tokenizer.json still bakes (weights only); `kiln run` then needs
     * --tokenizer_id. A tokenizer.json that is there must load. */
    if (src->tokenizer_json) {
        kn_tokenizer *t = NULL;
        char *label = kn_path_join(src->path, "tokenizer.json");
        kiln_status s = kn_tokenizer_load_hf_json(
            src->tokenizer_json, strlen(src->tokenizer_json), src->tokenizer_config_json,
            src->tokenizer_config_json ? strlen(src->tokenizer_config_json) : 0,
            label ? label : "tokenizer.json", &t, err);
        kn_free(label);
        if (!s) s = kn_tokenizer_write_gguf(t, w, err);
        kn_tokenizer_free(t);
        if (s) return s;
    } else if (src->tokenizer_config_json) {
        cJSON *c = cJSON_Parse(src->tokenizer_config_json);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(c, "chat_template");
        if (cJSON_IsString(t)) kn_gguf_set_str(w, "tokenizer.chat_template", t->valuestring);
        cJSON_Delete(c);
    }
    return kn_gguf_writer_status(w, err);
}
