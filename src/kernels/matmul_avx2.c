/* matmul_avx2.c — AVX2 + FMA + F16C row products: the GGUF-layout ones (x86_body.h) and the
 * repacked 8-row groups (x86_x8.h) with vpmaddubsw + vpmaddwd. */
#include <immintrin.h>

/* u8 x s8 -> 8 x i32: pairwise products summed to i16 (no overflow: |w| <= 128, |a| <= 127,
 * 2 * 128 * 127 < 32768), then pairs of i16 summed to i32. */
#define KN_DOT_U8S8(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1))

#include "kernels/x86_body.h"

#define KN_VNNI 0
#include "kernels/x86_x8.h"

static const kn_kernels k_avx2 = {KN_TABLE_FIELDS("avx2", kn_attn_avx2_q8), KN_X8_TABLE};

const kn_kernels *kn_kernels_avx2_table(void) { return &k_avx2; }
