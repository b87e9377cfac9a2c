/* matmul_avxvnni.c — the avxvnni table: AVX2 with AVX-VNNI's VEX-encoded 256-bit vpdpbusd
 * (Alder Lake to Arrow Lake, the Core Ultra laptops that carry the NPU; also Sapphire Rapids and
 * later). The same bodies as the avx2 table; one u8 x s8 dot instruction instead of two. */
#include <immintrin.h>

#define KN_DOT_U8S8(u, s) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), (u), (s))

#include "kernels/x86_body.h"

#define KN_VNNI 1
#define KN_DPBUSD(acc, u, s) _mm256_dpbusd_avx_epi32((acc), (u), (s))
#include "kernels/x86_x8.h"

/* The attention kernels are avx2's but for the Q8_0 cache's, whose integer scores take
 * vpdpbusd here too. */
#define KN_ATTN_NAME(sfx) kn_attn_avxvnni##sfx
#define KA_DOT_U8S8(u, s) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), (u), (s))
#define KA_Q8_ONLY 1
#include "kernels/attn_x86.h"

static const kn_kernels k_avxvnni = {KN_TABLE_FIELDS("avxvnni", kn_attn_avxvnni_q8),
                                     KN_X8_TABLE};

const kn_kernels *kn_kernels_avxvnni_table(void) { return &k_avxvnni; }
