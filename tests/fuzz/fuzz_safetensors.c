/* libFuzzer target: the safetensors reader (header JSON, offsets, shapes). */
#include <stddef.h>
#include <stdint.h>

#include "formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kn_safetensors *st = NULL;
    kiln_error e;
    if (kn_safetensors_open_mem(data, size, "fuzz.safetensors", &st, &e) != KILN_OK) return 0;
    for (int i = 0; i < st->n_tensors; i++) {
        const kn_st_tensor *t = &st->tensors[i];
        volatile uint8_t sink = t->nbytes ? t->data[t->nbytes - 1] : 0;
        (void)sink;
    }
    kn_safetensors_close(st);
    return 0;
}
