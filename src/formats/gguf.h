/* gguf.h — GGUF v2/v3 reader and writer.
 *
 * Byte layout (little-endian; GGUF spec, ggml/docs/gguf.md):
 *   u32 magic "GGUF" | u32 version (2 or 3) | u64 n_tensors | u64 n_kv
 *   n_kv x { string key | u32 value_type | value }
 *   n_tensors x { string name | u32 n_dims (1..4) | u64 ne[n_dims] | u32 type | u64 offset }
 *   padding to `general.alignment` (default 32) | tensor data (each offset a multiple of it)
 *   string = u64 length + bytes (not NUL-terminated); array = u32 elem_type + u64 n + elements.
 *
 * The reader trusts nothing: every count, length and offset is checked against the file size
 * before anything is allocated or read, so a hostile file yields KILN_ERR_FORMAT naming the
 * field, never a crash. Counts are capped (base/limits.h: KN_MAX_TENSORS, KN_MAX_KV,
 * KN_MAX_NAME_LEN), and keys and tensor names are checked for duplicates and looked up through
 * sorted indexes, so parsing and every lookup stay O(n log n) whatever the file holds. Values
 * point into the mapped file (zero copy); the kn_gguf owns the map.
 */
#ifndef KN_GGUF_H
#define KN_GGUF_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base/base.h"

typedef enum kn_gguf_vtype {
    KN_GGUF_UINT8 = 0,
    KN_GGUF_INT8 = 1,
    KN_GGUF_UINT16 = 2,
    KN_GGUF_INT16 = 3,
    KN_GGUF_UINT32 = 4,
    KN_GGUF_INT32 = 5,
    KN_GGUF_FLOAT32 = 6,
    KN_GGUF_BOOL = 7,
    KN_GGUF_STRING = 8,
    KN_GGUF_ARRAY = 9,
    KN_GGUF_UINT64 = 10,
    KN_GGUF_INT64 = 11,
    KN_GGUF_FLOAT64 = 12,
    KN_GGUF_VTYPE_COUNT
} kn_gguf_vtype;

/* A length-counted string; NOT NUL-terminated (it points into the file). */
typedef struct kn_str {
    const char *ptr;
    uint64_t len;
} kn_str;

bool kn_str_eq(kn_str s, const char *z);

typedef struct kn_gguf_kv {
    kn_str key;
    uint32_t type;                 /* kn_gguf_vtype */
    union {
        uint64_t u;                /* UINT8..UINT64, BOOL */
        int64_t i;                 /* INT8..INT64 */
        double f;                  /* FLOAT32, FLOAT64 */
        kn_str s;                  /* STRING */
    } v;
    /* ARRAY only: element type, count, and the raw little-endian elements. For arrays of
     * strings, strs[i] indexes each element (allocated by the reader). Arrays of arrays are
     * read and skipped (arr_data points at them, strs is NULL). */
    uint32_t arr_type;
    uint64_t arr_n;
    const uint8_t *arr_data;
    uint64_t arr_bytes;
    kn_str *strs;
} kn_gguf_kv;

typedef struct kn_gguf_tensor {
    kn_str name;
    uint32_t type;                 /* kn_type (GGUF numbering) */
    uint32_t n_dims;
    int64_t ne[4];                 /* ne[0] is the fastest-varying (row length); unused = 1 */
    uint64_t offset;               /* relative to the start of the data section */
    uint64_t nbytes;
    const uint8_t *data;           /* into the map */
} kn_gguf_tensor;

typedef struct kn_gguf {
    uint32_t version;
    uint32_t alignment;
    uint64_t n_kv;
    kn_gguf_kv *kv;
    uint64_t n_tensors;
    kn_gguf_tensor *tensors;
    uint64_t data_offset;          /* file offset of the tensor data section */
    kn_map map;
    char *path;                    /* for messages */
    kn_name_ref *kv_names;         /* [n_kv] keys sorted: duplicate check and kn_gguf_find */
    kn_name_ref *tensor_names;     /* [n_tensors] names sorted */
} kn_gguf;

/* Opens and validates a GGUF file (mapped). */
kiln_status kn_gguf_open(const char *path, kn_gguf **out, kiln_error *err);
/* Parses a GGUF image in memory (not copied: must outlive the kn_gguf). label names it in
 * messages. */
kiln_status kn_gguf_open_mem(const void *data, size_t size, const char *label, kn_gguf **out,
                             kiln_error *err);
void kn_gguf_close(kn_gguf *g);

const kn_gguf_kv *kn_gguf_find(const kn_gguf *g, const char *key);
const kn_gguf_tensor *kn_gguf_find_tensor(const kn_gguf *g, const char *name);

/* Typed getters: false when the key is absent or of an incompatible type. Integer getters take
 * any integer (or bool) type and check the range; float getters take F32/F64 and integers, and
 * refuse an F64 that no float can hold (NaN and Inf pass through as themselves). */
bool kn_gguf_get_u32(const kn_gguf *g, const char *key, uint32_t *out);
bool kn_gguf_get_i64(const kn_gguf *g, const char *key, int64_t *out);
bool kn_gguf_get_f32(const kn_gguf *g, const char *key, float *out);
bool kn_gguf_get_bool(const kn_gguf *g, const char *key, bool *out);
bool kn_gguf_get_str(const kn_gguf *g, const char *key, kn_str *out);
/* An array of the given element type; NULL if absent or another type. */
const kn_gguf_kv *kn_gguf_get_arr(const kn_gguf *g, const char *key, uint32_t elem_type);

/* Element i of a numeric array converted to double/int64 (bounds-checked by the caller); a
 * float element that is not a whole int64 reads as 0. */
double kn_gguf_arr_f64(const kn_gguf_kv *kv, uint64_t i);
int64_t kn_gguf_arr_i64(const kn_gguf_kv *kv, uint64_t i);

size_t kn_gguf_vtype_size(uint32_t type); /* 0 for STRING/ARRAY/unknown */
const char *kn_gguf_vtype_name(uint32_t type);

/* ---- writer ----
 * Collect key/values and tensor descriptions, then kn_gguf_writer_write() streams the header and
 * asks fill() for each tensor's bytes in order, so a bake never holds all quantized weights. */
typedef struct kn_gguf_writer kn_gguf_writer;

/* fill: write exactly nbytes of tensor `index` into dst; return KILN_OK or a failure in err. */
typedef kiln_status (*kn_gguf_fill_fn)(void *user, uint64_t index, uint8_t *dst, uint64_t nbytes,
                                       kiln_error *err);

kn_gguf_writer *kn_gguf_writer_new(void); /* NULL on OOM */
void kn_gguf_writer_free(kn_gguf_writer *w);
/* Setters replace an existing key of the same name (keeping its position). */
void kn_gguf_set_u32(kn_gguf_writer *w, const char *key, uint32_t v);
void kn_gguf_set_i32(kn_gguf_writer *w, const char *key, int32_t v);
void kn_gguf_set_u64(kn_gguf_writer *w, const char *key, uint64_t v);
void kn_gguf_set_f32(kn_gguf_writer *w, const char *key, float v);
void kn_gguf_set_bool(kn_gguf_writer *w, const char *key, bool v);
void kn_gguf_set_str(kn_gguf_writer *w, const char *key, const char *v);
void kn_gguf_set_strn(kn_gguf_writer *w, const char *key, const char *v, uint64_t len);
/* Numeric array of elem_type with n raw little-endian elements (copied). */
void kn_gguf_set_arr(kn_gguf_writer *w, const char *key, uint32_t elem_type, const void *data,
                     uint64_t n);
void kn_gguf_set_arr_str(kn_gguf_writer *w, const char *key, const kn_str *strs, uint64_t n);
/* Copies a key/value read from another file, whatever its type. */
void kn_gguf_copy_kv(kn_gguf_writer *w, const kn_gguf_kv *kv);
void kn_gguf_remove(kn_gguf_writer *w, const char *key);
/* Adds a tensor description; its size follows from type and shape. */
void kn_gguf_add_tensor(kn_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                        const int64_t *ne);
uint64_t kn_gguf_writer_n_tensors(const kn_gguf_writer *w);
/* KILN_ERR_NOMEM if any setter above ran out of memory; KILN_ERR_INVALID_ARG for a tensor with
 * an unknown type or a shape that is not a whole number of blocks. */
kiln_status kn_gguf_writer_status(const kn_gguf_writer *w, kiln_error *err);
kiln_status kn_gguf_writer_write(kn_gguf_writer *w, FILE *f, const char *path, kn_gguf_fill_fn fill,
                                 void *user, kiln_error *err);

#endif
