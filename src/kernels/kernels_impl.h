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

#endif
