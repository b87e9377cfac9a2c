/* libFuzzer target: the chat-template interpreter, lexing, parsing and rendering whatever the
 * input is, under its size, output, loop and step budgets (base/limits.h). A run must end in an
 * error or a rendering, never a crash, a hang or a sanitizer report. Bytes after the first NUL
 * are the chat-template kwargs (JSON text), so the JSON-to-variable path is fuzzed too. */
#include <stdlib.h>
#include <string.h>

#include "template/jinja.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *tmpl = malloc(size + 1);
    if (!tmpl) return 0;
    memcpy(tmpl, data, size);
    tmpl[size] = 0;
    kn_chat_msg msgs[] = {{"system", "You are kind."}, {"user", "Hello \xe2\x82\xac"},
                          {"assistant", "Hi!"}, {"user", "2+2?"}};
    size_t tl = strlen(tmpl);
    kn_jinja_vars v = {msgs, 4, true, "<s>", "</s>", tl < size ? tmpl + tl + 1 : NULL};
    char *out = NULL;
    kiln_error e;
    if (kn_jinja_render(tmpl, &v, &out, &e) == KILN_OK) kn_free(out);
    free(tmpl);
    return 0;
}
