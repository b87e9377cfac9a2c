/* kn_chat_tool — renders a chat with kiln's chat templates, for tests/py/test_chat_templates.py.
 *
 *   kn_chat_tool template TEMPLATE_FILE CONV.json   the Jinja source in TEMPLATE_FILE
 *   kn_chat_tool model SOURCE CONV.json [NAME]      the model's template (or built-in NAME)
 *
 * CONV.json: {"messages": [{"role": ..., "content": ...}], "add_generation_prompt": bool,
 * "bos_token": str, "eos_token": str, "kwargs": str} (the tokens are used by "template" only;
 * kwargs, optional, is the JSON text of the extra template variables, passed on as it is). Prints the
 * rendering exactly, with no newline added. Failure: "kn_chat_tool: <status> <message>" on
 * stderr, exit 1 (status is kiln's numeric code, so tests can tell raise_exception apart);
 * bad usage exits 2. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "tokenizer/tokenizer.h"

static int usage(void) {
    fputs("usage: kn_chat_tool template TEMPLATE_FILE CONV.json | model SOURCE CONV.json [NAME]\n", stderr);
    return 2;
}

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) return usage();
    bool model = !strcmp(argv[1], "model");
    if (!model && strcmp(argv[1], "template")) return usage();
    kiln_error err;
    kn_error_clear(&err);
    char *conv_text = NULL, *tmpl = NULL;
    size_t len;
    if (kn_read_text(argv[3], 64u << 20, &conv_text, &len, &err) != KILN_OK) {
        fprintf(stderr, "kn_chat_tool: %d %s\n", (int)err.code, err.message);
        return 1;
    }
    cJSON *conv = cJSON_Parse(conv_text);
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(conv, "messages");
    if (!conv || !cJSON_IsArray(ms)) {
        fprintf(stderr, "kn_chat_tool: %s: not a conversation\n", argv[3]);
        return 2;
    }
    int n = cJSON_GetArraySize(ms);
    kn_chat_msg *msgs = calloc((size_t)n + 1, sizeof *msgs);
    for (int i = 0; i < n; i++) {
        const cJSON *m = cJSON_GetArrayItem(ms, i);
        msgs[i].role = jstr(m, "role");
        msgs[i].content = jstr(m, "content");
    }
    bool gen = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(conv, "add_generation_prompt"));
    const char *kwargs = jstr(conv, "kwargs");
    char *out = NULL;
    kiln_status st;
    if (model) {
        kn_tokenizer *t = NULL;
        st = kn_tokenizer_open(argv[2], &t, &err);
        if (st == KILN_OK) {
            st = kn_chat_render(t, argc > 4 ? argv[4] : NULL, kwargs, msgs, (size_t)n, gen, &out,
                                &err);
            kn_tokenizer_free(t);
        }
    } else {
        st = kn_read_text(argv[2], 16u << 20, &tmpl, &len, &err);
        if (st == KILN_OK)
            st = kn_chat_render_template(tmpl, jstr(conv, "bos_token"), jstr(conv, "eos_token"),
                                         kwargs, msgs, (size_t)n, gen, &out, &err);
    }
    int rc = 0;
    if (st != KILN_OK) {
        fprintf(stderr, "kn_chat_tool: %d %s\n", (int)st, err.message);
        rc = 1;
    } else {
        fwrite(out, 1, strlen(out), stdout);
    }
    kn_free(out);
    kn_free(tmpl);
    kn_free(conv_text);
    free(msgs);
    cJSON_Delete(conv);
    return rc;
}
