/* kernels_impl.h — what the kernel files share with each other and not with the engine. */
#ifndef KN_KERNELS_IMPL_H
#define KN_KERNELS_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

/* Reference pieces the ISA tables reuse: the K-quant products in the GGUF layout (the model
 * repacks those types for the ISA tables, so these run only on unpacked views), and the Q8_0
 * quantizer with its block sums. */
void kn_ref_rows_q4_k(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a,
                      int n_tok, float *y, int ldy);
void kn_ref_rows_q5_k(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a,
                      int n_tok, float *y, int ldy);
void kn_ref_rows_q6_k(const kn_wmat *w, int r0, int r1, const float *x, const kn_act *a,
                      int n_tok, float *y, int ldy);
void kn_quantize_act_bs(kn_act *a, const float *x, int n_tok, int n);
/* Bytes of one group of 8 rows of n_in elements in KN_LAYOUT_X8; 0 for a type without one. */
size_t kn_x8_group_bytes(uint32_t type, int n_in);

/* Tables of the ISA files. Only call them once CPUID says the instructions exist. */
const kn_kernels *kn_kernels_avx2_table(void);
const kn_kernels *kn_kernels_avxvnni_table(void);
const kn_kernels *kn_kernels_avx512_table(void);

/* ops_avx2.c (AVX2 + FMA + F16C) */
void kn_quantize_avx2(kn_act *a, const float *x, int n_tok, int n);
void kn_quantize_k_avx2(kn_act *a, const float *x, int n_tok, int n);
void kn_swiglu_avx2(float *g, const float *u, int n);
void kn_to_f16_avx2(uint16_t *h, const float *x, int n);
void kn_attn_avx2(const float *q, const float *k, const float *v, const int32_t *slot_pos,
                  int n_slots, int32_t pos, int swa, float softcap, int d, int n_q, float *scores,
                  float *out, float *ml);
void kn_attn_avx2_f16(const float *q, const uint16_t *k, const uint16_t *v,
                      const int32_t *slot_pos, int n_slots, int32_t pos, int swa, float softcap,
                      int d, int n_q, float *scores, float *out, float *ml);
void kn_attn_avx2_q8(const float *q, const uint8_t *k, const uint8_t *v, const int32_t *slot_pos,
                     int n_slots, int32_t pos, int swa, float softcap, int d, int n_q,
                     float *scores, float *out, float *ml);

/* matmul_avxvnni.c: the Q8_0 cache's attention with VEX vpdpbusd (the rest is avx2's) */
void kn_attn_avxvnni_q8(const float *q, const uint8_t *k, const uint8_t *v,
                        const int32_t *slot_pos, int n_slots, int32_t pos, int swa,
                        float softcap, int d, int n_q, float *scores, float *out, float *ml);

/* ops_avx512.c */
void kn_quantize_avx512(kn_act *a, const float *x, int n_tok, int n);
void kn_attn_avx512(const float *q, const float *k, const float *v, const int32_t *slot_pos,
                    int n_slots, int32_t pos, int swa, float softcap, int d, int n_q, float *scores,
                    float *out, float *ml);
void kn_attn_avx512_f16(const float *q, const uint16_t *k, const uint16_t *v,
                        const int32_t *slot_pos, int n_slots, int32_t pos, int swa,
                        float softcap, int d, int n_q, float *scores, float *out, float *ml);
void kn_attn_avx512_q8(const float *q, const uint8_t *k, const uint8_t *v,
                       const int32_t *slot_pos, int n_slots, int32_t pos, int swa,
                       float softcap, int d, int n_q, float *scores, float *out, float *ml);

#endif
