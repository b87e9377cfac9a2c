/* libFuzzer target: manifest.json of an offering baked --from-ir, as inspect describes it
 * (text and JSON). */
#include <stdlib.h>

#include "bake/bake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int fmt = 0; fmt < 2; fmt++) {
        kn_buf b = {0};
        bool valid;
        kiln_error e;
        (void)kn_manifest_describe((const char *)data, size, "fuzz/manifest.json", NULL,
                                   (kiln_describe_format)fmt, &b, &valid, &e);
        kn_buf_free(&b);
    }
    return 0;
}
