/* types.c — block geometry of GGUF tensor types (ggml-common.h, GGUF spec). */
#include <string.h>

#include "quant/blocks.h"

static const kn_type_traits k_traits[KN_TYPE_COUNT_MAX] = {
    [KN_TYPE_F32] = {"F32", 1, 4, true},
    [KN_TYPE_F16] = {"F16", 1, 2, true},
    [KN_TYPE_Q4_0] = {"Q4_0", KN_QK, sizeof(kn_block_q4_0), true},
    [KN_TYPE_Q4_1] = {"Q4_1", KN_QK, sizeof(kn_block_q4_1), true},
    [KN_TYPE_Q5_0] = {"Q5_0", KN_QK, sizeof(kn_block_q5_0), true},
    [KN_TYPE_Q5_1] = {"Q5_1", KN_QK, sizeof(kn_block_q5_1), true},
    [KN_TYPE_Q8_0] = {"Q8_0", KN_QK, sizeof(kn_block_q8_0), true},
    [KN_TYPE_Q8_1] = {"Q8_1", KN_QK, sizeof(kn_block_q8_1), false},
    [KN_TYPE_Q2_K] = {"Q2_K", KN_QK_K, sizeof(kn_block_q2_k), true},
    [KN_TYPE_Q3_K] = {"Q3_K", KN_QK_K, sizeof(kn_block_q3_k), true},
    [KN_TYPE_Q4_K] = {"Q4_K", KN_QK_K, sizeof(kn_block_q4_k), true},
    [KN_TYPE_Q5_K] = {"Q5_K", KN_QK_K, sizeof(kn_block_q5_k), true},
    [KN_TYPE_Q6_K] = {"Q6_K", KN_QK_K, sizeof(kn_block_q6_k), true},
    [KN_TYPE_Q8_K] = {"Q8_K", KN_QK_K, sizeof(kn_block_q8_k), true},
    [KN_TYPE_I8] = {"I8", 1, 1, true},
    [KN_TYPE_I16] = {"I16", 1, 2, true},
    [KN_TYPE_I32] = {"I32", 1, 4, true},
    [KN_TYPE_I64] = {"I64", 1, 8, false},
    [KN_TYPE_F64] = {"F64", 1, 8, true},
    [KN_TYPE_BF16] = {"BF16", 1, 2, true},
};

const kn_type_traits *kn_type_get(uint32_t type) {
    if (type >= KN_TYPE_COUNT_MAX || k_traits[type].name == NULL) return NULL;
    return &k_traits[type];
}

const char *kn_type_name(uint32_t type) {
    const kn_type_traits *t = kn_type_get(type);
    return t ? t->name : "?";
}

int kn_type_from_name(const char *name) {
    for (int i = 0; i < KN_TYPE_COUNT_MAX; i++)
        if (k_traits[i].name && strcmp(k_traits[i].name, name) == 0) return i;
    return -1;
}

bool kn_row_bytes(uint32_t type, int64_t ne0, uint64_t *out) {
    const kn_type_traits *t = kn_type_get(type);
    if (!t || ne0 < 0 || (uint64_t)ne0 % t->block != 0) return false;
    *out = (uint64_t)ne0 / t->block * t->block_bytes;
    return true;
}
