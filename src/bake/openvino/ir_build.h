/* ir_build.h — a small builder for OpenVINO IR v11 (XML topology + .bin constants).
 *
 * Internal to src/backends/openvino. A value is an int handle naming one output port of one
 * layer, with its element type and static shape; every op checks its operands' shapes and
 * infers its output shape the way the opset spec says, so a graph that builds here is one
 * OpenVINO can read back with every shape known, and a shape bug is an error at bake, not a
 * wrong answer at run time. Errors are sticky: after the first failure every call returns -1
 * and kn_ovb_finish reports the first message.
 *
 *     kn_ovb *b = kn_ovb_new(bin_file, bin_path, err);
 *     int x = kn_ovb_param(b, "x", KN_OV_F32, 2, (int64_t[]){1, 4});
 *     int y = kn_ovb_unary(b, "Sqrt", x);
 *     kn_ovb_result(b, y, "y");
 *     kn_ovb_finish(b, xml_file, "kiln", err);   // writes the XML; the .bin was streamed
 *     kn_ovb_free(b);
 */
#ifndef KN_OV_IR_BUILD_H
#define KN_OV_IR_BUILD_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base/base.h"
#include "formats/gguf.h"

#define KN_OV_MAX_RANK 6

typedef enum kn_ov_et {
    KN_OV_F32 = 0, KN_OV_F16, KN_OV_I64, KN_OV_I32, KN_OV_I8, KN_OV_U8, KN_OV_I4, KN_OV_U4,
    KN_OV_BOOL, KN_OV_ET_COUNT
} kn_ov_et;

typedef struct kn_ovb kn_ovb;

kn_ovb *kn_ovb_new(FILE *bin, const char *bin_path, kiln_error *err); /* NULL on OOM */
void kn_ovb_free(kn_ovb *b);
bool kn_ovb_ok(const kn_ovb *b);
/* Records a failure (sticky) and returns -1, for checks made by the caller. */
int kn_ovb_fail(kn_ovb *b, kiln_status code, const char *fmt, ...) KN_PRINTF(3, 4);

/* Shape of a value: rank returned, dims copied to shape (may be NULL). -1 for a bad handle. */
int kn_ovb_shape(const kn_ovb *b, int v, int64_t *shape);
kn_ov_et kn_ovb_type(const kn_ovb *b, int v);

int kn_ovb_param(kn_ovb *b, const char *name, kn_ov_et et, int rank, const int64_t *shape);
/* A constant from raw little-endian bytes (sub-byte types packed two per byte, element 2k in
 * the low nibble of byte k). The bytes are appended to the .bin at once. */
int kn_ovb_const(kn_ovb *b, kn_ov_et et, int rank, const int64_t *shape, const void *data);
int kn_ovb_const_f32(kn_ovb *b, float v);           /* scalar */
int kn_ovb_const_i64v(kn_ovb *b, int n, const int64_t *v); /* 1-D */
int kn_ovb_const_i32(kn_ovb *b, int32_t v);         /* scalar */

/* Elementwise with numpy broadcasting: "Add", "Subtract", "Multiply", "Divide", "Power",
 * "Minimum", "Maximum"; "LogicalAnd" / "LogicalOr" of two booleans. */
int kn_ovb_binary(kn_ovb *b, const char *type, int x, int y);
/* Comparison with numpy broadcasting ("Equal", "Less", "LessEqual", "Greater", ...), boolean out. */
int kn_ovb_compare(kn_ovb *b, const char *type, int x, int y);
/* Select-1: cond (boolean) ? x : y, all three broadcast numpy-style; x and y of one type. */
int kn_ovb_select(kn_ovb *b, int cond, int x, int y);
/* Shape-preserving: "Sqrt", "Sin", "Cos", "Tanh", "Swish" (opset4, beta 1), "GeluTanh" (Gelu-7,
 * approximation_mode tanh). */
int kn_ovb_unary(kn_ovb *b, const char *type, int x);
int kn_ovb_convert(kn_ovb *b, int x, kn_ov_et to);
int kn_ovb_matmul(kn_ovb *b, int x, int y, bool transpose_a, bool transpose_b);
int kn_ovb_reshape(kn_ovb *b, int x, int rank, const int64_t *shape);
int kn_ovb_transpose(kn_ovb *b, int x, int rank, const int64_t *perm);
int kn_ovb_concat(kn_ovb *b, int n, const int *xs, int axis);
/* Gather-8 with batch_dims 0 and a non-negative axis. */
int kn_ovb_gather(kn_ovb *b, int data, int indices, int axis);
int kn_ovb_reduce_mean(kn_ovb *b, int x, int axis); /* keep_dims */
/* "ReduceSum", "ReduceMean", "ReduceMax", ... over one axis. */
int kn_ovb_reduce(kn_ovb *b, const char *type, int x, int axis, bool keep_dims);
int kn_ovb_softmax(kn_ovb *b, int x, int axis);
/* Split-1 into n equal parts along axis; the n handles go to out. Returns 0 or -1. */
int kn_ovb_split(kn_ovb *b, int x, int axis, int n, int *out);
/* A model output named `name` (the tensor name OpenVINO reports). */
int kn_ovb_result(kn_ovb *b, int x, const char *name);

/* Writes the XML of everything built so far to xml. Returns the first failure, if any. */
kiln_status kn_ovb_finish(kn_ovb *b, FILE *xml, const char *net_name, kiln_error *err);

/* ---- weights (ir_weights.c) ---- */

/* A 2-D GGUF tensor (ne[0] = cols, ne[1] = rows) as an f32 value [rows, cols] in the
 * compressed-weight pattern for its type (see ir.h). q4_0_group: the Q4_0 group wanted
 * (-1 = whole row); the largest group <= it whose blocks share a scale is used. */
int kn_ov_weight_matrix(kn_ovb *b, const kn_gguf_tensor *t, int q4_0_group);
/* A 1-D tensor (norm weights, biases) as an f32 Const [n]. */
int kn_ov_weight_vector(kn_ovb *b, const kn_gguf_tensor *t);

#endif
