/* libFuzzer target: the GGUF reader, then everything that walks a parsed file (hyperparameters,
 * the static contract, array accessors, the tokenizer keys, key and tensor lookups). */
#include <stddef.h>
#include <stdint.h>

#include "formats/gguf.h"
#include "model/contract.h"
#include "model/hparams.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kn_gguf *g = NULL;
    kiln_error e;
    if (kn_gguf_open_mem(data, size, "fuzz.gguf", &g, &e) != KILN_OK) return 0;
    kn_hparams hp;
    if (kn_hparams_from_gguf(g, &hp, &e) == KILN_OK) {
        kn_contract c;
        (void)kn_contract_from_gguf(g, &hp, &c, &e);
        (void)kn_tokenizer_check_gguf(g, hp.n_vocab, &e);
    } else {
        kn_tokenizer *t = NULL;
        if (kn_tokenizer_load_gguf(g, &t, &e) == KILN_OK) kn_tokenizer_free(t);
    }
    if (g->n_kv) (void)kn_gguf_find(g, "general.architecture");
    if (g->n_tensors) (void)kn_gguf_find_tensor(g, "token_embd.weight");
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
