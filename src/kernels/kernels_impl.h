/* kernels_impl.h — what the kernel files share with each other and not with the engine. */
#ifndef KN_KERNELS_IMPL_H
#define KN_KERNELS_IMPL_H

#include <stdint.h>

#include "kernels/kernels.h"

/* An F16 field of a block, read without alignment assumptions. */
float kn_load_f16(const uint8_t *p);

/* Tables of the ISA files. Only call them once CPUID says the instructions exist. */
const kn_kernels *kn_kernels_avx2_table(void);
const kn_kernels *kn_kernels_avx512_table(void);

/* ops_avx512.c */
void kn_quantize_avx512(kn_act *a, const float *x, int n_tok, int n);
void kn_attn_avx512(const float *q, const float *k, const float *v, const int32_t *slot_pos,
                    int n_slots, int32_t pos, int swa, int d, float *scores, float *out);

#endif
