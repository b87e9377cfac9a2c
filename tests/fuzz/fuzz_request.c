/* libFuzzer target: an OpenAI request body as kiln serve's supervisor checks it (chat and
 * completions), and the normalized request read back as the worker reads it. */
#include <stdlib.h>
#include <string.h>

#include "serve/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int kind = 0; kind < 2; kind++) {
        sv_request r;
        sv_error e;
        if (sv_request_parse((const char *)data, size, (sv_kind)kind, "model", &r, &e) == 0) {
            sv_job_spec js;
            if (sv_job_from_json(r.worker_json, strlen(r.worker_json), &js, &e) != 0) abort();
            sv_job_spec_free(&js);
            sv_request_free(&r);
        } else {
            free(sv_error_json(&e));
        }
    }
    return 0;
}
