/* libFuzzer target: the GGUF reader, then everything that walks a parsed file (hyperparameters,
 * the source schema check, array accessors). */
#include <stddef.h>
#include <stdint.h>

#include "formats/gguf.h"
#include "model/hparams.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kn_gguf *g = NULL;
    kiln_error e;
    if (kn_gguf_open_mem(data, size, "fuzz.gguf", &g, &e) != KILN_OK) return 0;
    kn_hparams hp;
    (void)kn_hparams_from_gguf(g, &hp, &e);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const kn_gguf_kv *kv = &g->kv[i];
        if (kv->type == KN_GGUF_ARRAY && kn_gguf_vtype_size(kv->arr_type) && kv->arr_n)
            (void)kn_gguf_arr_f64(kv, kv->arr_n - 1);
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const kn_gguf_tensor *t = &g->tensors[i];
        volatile uint8_t sink = t->nbytes ? t->data[t->nbytes - 1] : 0;
        (void)sink;
    }
    kn_gguf_close(g);
    return 0;
}
