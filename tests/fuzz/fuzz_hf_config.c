/* libFuzzer target: a Hugging Face config.json (and generation_config.json's id keys) into
 * hyperparameters, every number through the range-checked JSON reader. */
#include <stdlib.h>
#include <string.h>

#include "model/source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    kn_hparams hp;
    int bos = -1, eos = -1;
    kiln_error e;
    (void)kn_hparams_from_hf_config(text, "config.json", &hp, &bos, &eos, &e);
    free(text);
    return 0;
}
