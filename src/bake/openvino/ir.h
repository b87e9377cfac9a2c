/* ir.h — writes an offering's static graphs as OpenVINO IR v11 (XML + .bin).
 *
 * The IR is the same llama-family forward pass the native engine runs (llama.cpp's math for
 * GGUF "llama" / "qwen2" tensors), with every shape fixed by the contract and batch 1, so an
 * NPU compiler accepts it. docs/OPENVINO.md lists the inputs and outputs; in short, for T new
 * tokens (T = C for prefill, 1 for decode):
 *
 *   input_ids i32 [1,T], position_ids i32 [1,T], attention_mask f32 [1,1,T,W+T] (additive),
 *   logit_index i32 [1] (prefill only), past_kv f32 [L,2,Hkv,W,D]
 *   -> logits f32 [1,V] (row logit_index; row 0 for decode), new_kv f32 [L,2,Hkv,T,D]
 *
 * and the stateless graph (no cache): input_ids i32 [1,W], attention_mask i32 [1,W] -> logits.
 *
 * Weights keep their GGUF quantization in OpenVINO's compressed-weight pattern (Const i4/u4/i8
 * [rows, groups, group] -> Convert f16 -> [Subtract zero point] -> Multiply scale -> Reshape ->
 * Convert f32 -> MatMul transpose_b), which the CPU and NPU plugins recognise:
 *   Q4_0 -> i4 (nibble - 8), one f16 scale per group; Q4_1 -> u4 with scale d and zero point
 *   -m/d; Q8_0 -> i8; F16 -> f16 + Convert; F32 -> f32; any other type kiln can dequantize ->
 *   f32 (exact, larger).
 * group_size picks the Q4_0 group: 0 = the offering's kiln.quant.group_size, else 32; > 0 (e.g.
 * 128) or -1 (whole row, channel-wise) = that group where the stored Q4_0 blocks of each group
 * share one scale (as int4_sym_g128 offerings do), else the largest of 128/64/32 for which
 * they do, so the IR always computes exactly what model.gguf holds.
 */
#ifndef KN_OV_IR_H
#define KN_OV_IR_H

#include "formats/gguf.h"
#include "model/contract.h"
#include "model/hparams.h"

/* Writes graph `graph` ("prefill", "decode" or "stateless") of contract c to xml_path +
 * bin_path. The stateless graph is the same forward pass over T = W tokens at positions
 * 0..W-1 with no cache: input_ids i32 [1,W], attention_mask i32 [1,W] (1 = real token, real
 * tokens first) -> logits f32 [1,V] of row sum(attention_mask) - 1. On failure both files are
 * removed. KILN_ERR_UNSUPPORTED for a rope_dim below the head dimension or a weight type kiln
 * cannot read. */
kiln_status kn_ov_write_ir_graph(const kn_gguf *model_gguf, const kn_hparams *hp,
                                 const kn_contract *c, const char *graph, int group_size,
                                 const char *xml_path, const char *bin_path, kiln_error *err);

/* The prefill graph (which also serves decode by padding: one real token, the rest masked). */
kiln_status kn_ov_write_ir(const kn_gguf *model_gguf, const kn_hparams *hp, const kn_contract *c,
                           int group_size, const char *xml_path, const char *bin_path,
                           kiln_error *err);

#endif
