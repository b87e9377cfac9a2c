/* safetensors.h — reader for Hugging Face .safetensors files.
 *
 * Layout: u64 little-endian header length N | N bytes of JSON {"NAME": {"dtype": "F32",
 * "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {...}} | data. Offsets are
 * relative to the end of the header. Every offset and shape is checked against the file; names
 * must be unique and tensors' bytes may not overlap. */
#ifndef KN_SAFETENSORS_H
#define KN_SAFETENSORS_H

#include "base/base.h"

typedef struct kn_st_tensor {
    char *name;
    uint32_t type;          /* kn_type: F32, F16 or BF16 (others are refused) */
    int n_dims;
    int64_t shape[4];       /* safetensors order: shape[0] is the slowest (rows) */
    const uint8_t *data;
    uint64_t offset;        /* data_offsets[0], relative to the data section */
    uint64_t nbytes;
} kn_st_tensor;

typedef struct kn_safetensors {
    kn_map map;
    char *path;
    int n_tensors;
    kn_st_tensor *tensors;
} kn_safetensors;

kiln_status kn_safetensors_open(const char *path, kn_safetensors **out, kiln_error *err);
kiln_status kn_safetensors_open_mem(const void *data, size_t size, const char *label,
                                    kn_safetensors **out, kiln_error *err);
void kn_safetensors_close(kn_safetensors *st);

#endif
