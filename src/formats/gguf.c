/* gguf.c — GGUF reader (bounds-checked, zero copy) and streaming writer. See gguf.h. */
#include "formats/gguf.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/limits.h"
#include "quant/quant.h"

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define GGUF_DEFAULT_ALIGNMENT 32

bool kn_str_eq(kn_str s, const char *z) {
    size_t n = strlen(z);
    return s.len == n && memcmp(s.ptr, z, n) == 0;
}

size_t kn_gguf_vtype_size(uint32_t t) {
    switch (t) {
    case KN_GGUF_UINT8: case KN_GGUF_INT8: case KN_GGUF_BOOL: return 1;
    case KN_GGUF_UINT16: case KN_GGUF_INT16: return 2;
    case KN_GGUF_UINT32: case KN_GGUF_INT32: case KN_GGUF_FLOAT32: return 4;
    case KN_GGUF_UINT64: case KN_GGUF_INT64: case KN_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

const char *kn_gguf_vtype_name(uint32_t t) {
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                  "bool", "string", "array", "u64", "i64", "f64"};
    return t < KN_GGUF_VTYPE_COUNT ? names[t] : "?";
}

/* ---- reader ---- */

typedef struct rd {
    const uint8_t *p;
    uint64_t size, pos;
    const char *label;
    kiln_error *err;
} rd;

static kiln_status rd_need(rd *r, uint64_t n, const char *what) {
    if (n > r->size - r->pos)
        return kn_fail(r->err, KILN_ERR_FORMAT,
                       "%s: truncated: %s needs %llu bytes at offset %llu, file has %llu",
                       r->label, what, (unsigned long long)n, (unsigned long long)r->pos,
                       (unsigned long long)r->size);
    return KILN_OK;
}

static kiln_status rd_u32(rd *r, uint32_t *v, const char *what) {
    kiln_status s = rd_need(r, 4, what);
    if (s) return s;
    memcpy(v, r->p + r->pos, 4);
    r->pos += 4;
    return KILN_OK;
}

static kiln_status rd_u64(rd *r, uint64_t *v, const char *what) {
    kiln_status s = rd_need(r, 8, what);
    if (s) return s;
    memcpy(v, r->p + r->pos, 8);
    r->pos += 8;
    return KILN_OK;
}

static kiln_status rd_str(rd *r, kn_str *out, uint64_t max_len, const char *what) {
    uint64_t n;
    kiln_status s = rd_u64(r, &n, what);
    if (s) return s;
    if (n > max_len)
        return kn_fail(r->err, KILN_ERR_FORMAT, "%s: %s length %llu at offset %llu is absurd",
                       r->label, what, (unsigned long long)n, (unsigned long long)(r->pos - 8));
    if ((s = rd_need(r, n, what))) return s;
    out->ptr = (const char *)r->p + r->pos;
    out->len = n;
    r->pos += n;
    return KILN_OK;
}

static kiln_status rd_scalar(rd *r, kn_gguf_kv *kv, uint32_t type, const char *what) {
    size_t sz = kn_gguf_vtype_size(type);
    kiln_status s = rd_need(r, sz, what);
    if (s) return s;
    const uint8_t *p = r->p + r->pos;
    r->pos += sz;
    switch (type) {
    case KN_GGUF_UINT8: kv->v.u = p[0]; break;
    case KN_GGUF_BOOL:
        if (p[0] > 1)
            return kn_fail(r->err, KILN_ERR_FORMAT, "%s: %s: bool value %u is neither 0 nor 1",
                           r->label, what, p[0]);
        kv->v.u = p[0];
        break;
    case KN_GGUF_INT8: kv->v.i = (int8_t)p[0]; break;
    case KN_GGUF_UINT16: { uint16_t x; memcpy(&x, p, 2); kv->v.u = x; break; }
    case KN_GGUF_INT16: { int16_t x; memcpy(&x, p, 2); kv->v.i = x; break; }
    case KN_GGUF_UINT32: { uint32_t x; memcpy(&x, p, 4); kv->v.u = x; break; }
    case KN_GGUF_INT32: { int32_t x; memcpy(&x, p, 4); kv->v.i = x; break; }
    case KN_GGUF_FLOAT32: { float x; memcpy(&x, p, 4); kv->v.f = x; break; }
    case KN_GGUF_UINT64: { uint64_t x; memcpy(&x, p, 8); kv->v.u = x; break; }
    case KN_GGUF_INT64: { int64_t x; memcpy(&x, p, 8); kv->v.i = x; break; }
    case KN_GGUF_FLOAT64: { double x; memcpy(&x, p, 8); kv->v.f = x; break; }
    default: return KILN_ERR_INTERNAL;
    }
    return KILN_OK;
}

/* Skips one value of `type` (used for nested arrays, which no model key uses but the spec
 * allows). depth bounds recursion against hostile nesting. */
static kiln_status rd_skip(rd *r, uint32_t type, int depth, const char *what) {
    if (type == KN_GGUF_STRING) {
        kn_str s;
        return rd_str(r, &s, r->size, what);
    }
    if (type == KN_GGUF_ARRAY) {
        if (depth > 4)
            return kn_fail(r->err, KILN_ERR_FORMAT, "%s: %s: arrays nested too deeply", r->label,
                           what);
        uint32_t et;
        uint64_t n;
        kiln_status s;
        if ((s = rd_u32(r, &et, what)) || (s = rd_u64(r, &n, what))) return s;
        if (et >= KN_GGUF_VTYPE_COUNT)
            return kn_fail(r->err, KILN_ERR_FORMAT, "%s: %s: unknown array element type %u",
                           r->label, what, et);
        size_t es = kn_gguf_vtype_size(et);
        if (es) {
            uint64_t bytes;
            if (!kn_mul_ok(n, es, &bytes)) bytes = UINT64_MAX;
            if ((s = rd_need(r, bytes, what))) return s;
            r->pos += bytes;
            return KILN_OK;
        }
        /* Each string or array element takes at least 8 bytes: bound n before looping. */
        if (n > (r->size - r->pos) / 8)
            return kn_fail(r->err, KILN_ERR_FORMAT, "%s: %s: array count %llu exceeds the file",
                           r->label, what, (unsigned long long)n);
        for (uint64_t i = 0; i < n; i++)
            if ((s = rd_skip(r, et, depth + 1, what))) return s;
        return KILN_OK;
    }
    if (type >= KN_GGUF_VTYPE_COUNT)
        return kn_fail(r->err, KILN_ERR_FORMAT, "%s: %s: unknown value type %u", r->label, what,
                       type);
    kiln_status s = rd_need(r, kn_gguf_vtype_size(type), what);
    if (!s) r->pos += kn_gguf_vtype_size(type);
    return s;
}

static kiln_status rd_kv(rd *r, kn_gguf_kv *kv) {
    char what[96];
    kiln_status s = rd_str(r, &kv->key, KN_MAX_NAME_LEN, "metadata key");
    if (s) return s;
    snprintf(what, sizeof what, "key '%.*s'", (int)(kv->key.len < 64 ? kv->key.len : 64),
             kv->key.ptr);
    if ((s = rd_u32(r, &kv->type, what))) return s;
    if (kv->type >= KN_GGUF_VTYPE_COUNT)
        return kn_fail(r->err, KILN_ERR_FORMAT, "%s: %s has unknown value type %u", r->label,
                       what, kv->type);
    if (kv->type == KN_GGUF_STRING) return rd_str(r, &kv->v.s, r->size, what);
    if (kv->type != KN_GGUF_ARRAY) return rd_scalar(r, kv, kv->type, what);

    if ((s = rd_u32(r, &kv->arr_type, what)) || (s = rd_u64(r, &kv->arr_n, what))) return s;
    if (kv->arr_type >= KN_GGUF_VTYPE_COUNT)
        return kn_fail(r->err, KILN_ERR_FORMAT, "%s: %s: unknown array element type %u",
                       r->label, what, kv->arr_type);
    uint64_t start = r->pos;
    kv->arr_data = r->p + start;
    size_t es = kn_gguf_vtype_size(kv->arr_type);
    if (es) {
        uint64_t bytes;
        if (!kn_mul_ok(kv->arr_n, es, &bytes)) bytes = UINT64_MAX;
        if ((s = rd_need(r, bytes, what))) return s;
        r->pos += bytes;
    } else if (kv->arr_type == KN_GGUF_STRING) {
        if (kv->arr_n > (r->size - r->pos) / 8)
            return kn_fail(r->err, KILN_ERR_FORMAT, "%s: %s: array count %llu exceeds the file",
                           r->label, what, (unsigned long long)kv->arr_n);
        kv->strs = kn_malloc((size_t)(kv->arr_n ? kv->arr_n : 1) * sizeof(kn_str));
        if (!kv->strs) return kn_fail(r->err, KILN_ERR_NOMEM, "%s: out of memory", r->label);
        for (uint64_t i = 0; i < kv->arr_n; i++)
            if ((s = rd_str(r, &kv->strs[i], r->size, what))) return s;
    } else {
        return kn_fail(r->err, KILN_ERR_INTERNAL, "%s: %s: nested array reached rd_kv", r->label,
                       what);
    }
    kv->arr_bytes = r->pos - start;
    return KILN_OK;
}

/* Arrays of arrays: rd_kv above would mis-handle them via rd_skip's header read, so handle the
 * element-type ARRAY case by skipping each element in place. */
static kiln_status rd_kv_checked(rd *r, kn_gguf_kv *kv) {
    uint64_t save = r->pos;
    kiln_status s = rd_str(r, &kv->key, KN_MAX_NAME_LEN, "metadata key");
    if (s) return s;
    uint32_t type, et = 0;
    if ((s = rd_u32(r, &type, "value type"))) return s;
    if (type == KN_GGUF_ARRAY) {
        uint64_t n;
        if ((s = rd_u32(r, &et, "array type")) || (s = rd_u64(r, &n, "array count"))) return s;
        if (et == KN_GGUF_ARRAY) {
            kv->type = type;
            kv->arr_type = et;
            kv->arr_n = n;
            kv->arr_data = r->p + r->pos;
            uint64_t start = r->pos;
            if (n > (r->size - r->pos) / 12)
                return kn_fail(r->err, KILN_ERR_FORMAT, "%s: array count %llu exceeds the file",
                               r->label, (unsigned long long)n);
            for (uint64_t i = 0; i < n; i++)
                if ((s = rd_skip(r, KN_GGUF_ARRAY, 1, "nested array"))) return s;
            kv->arr_bytes = r->pos - start;
            return KILN_OK;
        }
    }
    r->pos = save;
    return rd_kv(r, kv);
}

static int cmp_offset(const void *a, const void *b) {
    const kn_gguf_tensor *x = *(kn_gguf_tensor *const *)a, *y = *(kn_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static kiln_status parse(kn_gguf *g, kiln_error *err) {
    rd r = {g->map.data, g->map.size, 0, g->path, err};
    uint32_t magic;
    uint64_t n_tensors, n_kv;
    kiln_status s;
    if (r.size < 4 || (memcpy(&magic, r.p, 4), magic != GGUF_MAGIC))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: not a GGUF file (bad magic)", g->path);
    r.pos = 4;
    if ((s = rd_u32(&r, &g->version, "version"))) return s;
    if (g->version != 2 && g->version != 3)
        return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: GGUF version %u is not supported (2 or 3)",
                       g->path, g->version);
    if ((s = rd_u64(&r, &n_tensors, "tensor count")) || (s = rd_u64(&r, &n_kv, "kv count")))
        return s;
    /* The smallest key/value is 8+0+4+1 bytes and the smallest tensor info 8+4+8+4+8. */
    if (n_kv > (r.size - r.pos) / 13)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: metadata count %llu exceeds the file", g->path,
                       (unsigned long long)n_kv);
    if (n_tensors > (r.size - r.pos) / 32)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor count %llu exceeds the file", g->path,
                       (unsigned long long)n_tensors);
    if (n_kv > KN_MAX_KV)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: %llu metadata keys (kiln reads at most %d)",
                       g->path, (unsigned long long)n_kv, KN_MAX_KV);
    if (n_tensors > KN_MAX_TENSORS)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: %llu tensors (kiln reads at most %d)", g->path,
                       (unsigned long long)n_tensors, KN_MAX_TENSORS);
    g->kv = kn_calloc((size_t)n_kv + 1, sizeof *g->kv);
    g->tensors = kn_calloc((size_t)n_tensors + 1, sizeof *g->tensors);
    g->kv_names = kn_malloc(((size_t)n_kv + 1) * sizeof *g->kv_names);
    g->tensor_names = kn_malloc(((size_t)n_tensors + 1) * sizeof *g->tensor_names);
    if (!g->kv || !g->tensors || !g->kv_names || !g->tensor_names)
        return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory", g->path);
    for (uint64_t i = 0; i < n_kv; i++) {
        if ((s = rd_kv_checked(&r, &g->kv[i]))) return s;
        g->n_kv = i + 1;
        g->kv_names[i] = (kn_name_ref){g->kv[i].key.ptr, g->kv[i].key.len, i};
    }
    kn_names_sort(g->kv_names, (size_t)g->n_kv);
    const kn_name_ref *dup = kn_names_dup(g->kv_names, (size_t)g->n_kv);
    if (dup)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: duplicate metadata key '%.*s'", g->path,
                       (int)(dup->len > 80 ? 80 : dup->len), dup->ptr);
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const kn_gguf_kv *al = kn_gguf_find(g, "general.alignment");
    if (al) {
        if (al->type != KN_GGUF_UINT32 || al->v.u == 0 || (al->v.u & (al->v.u - 1)) ||
            al->v.u > (1u << 20))
            return kn_fail(err, KILN_ERR_FORMAT,
                           "%s: general.alignment must be a u32 power of two", g->path);
        g->alignment = (uint32_t)al->v.u;
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        kn_gguf_tensor *t = &g->tensors[i];
        if ((s = rd_str(&r, &t->name, KN_MAX_NAME_LEN, "tensor name"))) return s;
        int nl = (int)(t->name.len > 80 ? 80 : t->name.len);
        if ((s = rd_u32(&r, &t->n_dims, "tensor dims"))) return s;
        if (t->n_dims < 1 || t->n_dims > 4)
            return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor '%.*s' has %u dimensions (1..4)",
                           g->path, nl, t->name.ptr, t->n_dims);
        uint64_t nel = 1;
        for (int d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            uint64_t ne;
            if ((s = rd_u64(&r, &ne, "tensor shape"))) return s;
            if (ne == 0 || ne > (uint64_t)INT64_MAX || !kn_mul_ok(nel, ne, &nel) ||
                nel > (uint64_t)INT64_MAX)
                return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor '%.*s' has an absurd shape",
                               g->path, nl, t->name.ptr);
            t->ne[d] = (int64_t)ne;
        }
        if ((s = rd_u32(&r, &t->type, "tensor type")) ||
            (s = rd_u64(&r, &t->offset, "tensor offset")))
            return s;
        if (!kn_type_get(t->type))
            return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: tensor '%.*s' has unknown type %u",
                           g->path, nl, t->name.ptr, t->type);
        uint64_t row;
        if (!kn_row_bytes(t->type, t->ne[0], &row))
            return kn_fail(err, KILN_ERR_FORMAT,
                           "%s: tensor '%.*s': row of %lld is not a whole number of %s blocks",
                           g->path, nl, t->name.ptr, (long long)t->ne[0], kn_type_name(t->type));
        if (!kn_mul_ok(row, nel / (uint64_t)t->ne[0], &t->nbytes))
            return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor '%.*s' is too large", g->path, nl,
                           t->name.ptr);
        if (t->offset % g->alignment)
            return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor '%.*s' offset %llu is not aligned",
                           g->path, nl, t->name.ptr, (unsigned long long)t->offset);
        g->tensor_names[i] = (kn_name_ref){t->name.ptr, t->name.len, i};
        g->n_tensors = i + 1;
    }
    kn_names_sort(g->tensor_names, (size_t)g->n_tensors);
    if ((dup = kn_names_dup(g->tensor_names, (size_t)g->n_tensors)))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: duplicate tensor '%.*s'", g->path,
                       (int)(dup->len > 80 ? 80 : dup->len), dup->ptr);
    uint64_t data = (r.pos + g->alignment - 1) / g->alignment * g->alignment;
    if (n_tensors > 0 && data > r.size)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: truncated before the tensor data", g->path);
    g->data_offset = data;
    uint64_t avail = r.size > data ? r.size - data : 0;
    for (uint64_t i = 0; i < n_tensors; i++) {
        kn_gguf_tensor *t = &g->tensors[i];
        uint64_t end;
        if (!kn_add_ok(t->offset, t->nbytes, &end) || end > avail)
            return kn_fail(err, KILN_ERR_FORMAT,
                           "%s: tensor '%.*s' data (offset %llu, %llu bytes) runs past the end "
                           "of the file",
                           g->path, (int)(t->name.len > 80 ? 80 : t->name.len), t->name.ptr,
                           (unsigned long long)t->offset, (unsigned long long)t->nbytes);
        t->data = r.p + data + t->offset;
    }
    /* Overlapping tensors would let one write alias another: sort a view by offset and check. */
    if (n_tensors > 1) {
        kn_gguf_tensor **v = kn_malloc((size_t)n_tensors * sizeof *v);
        if (!v) return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory", g->path);
        for (uint64_t i = 0; i < n_tensors; i++) v[i] = &g->tensors[i];
        qsort(v, (size_t)n_tensors, sizeof *v, cmp_offset);
        for (uint64_t i = 1; i < n_tensors; i++)
            if (v[i - 1]->offset + v[i - 1]->nbytes > v[i]->offset) {
                int nl = (int)(v[i]->name.len > 80 ? 80 : v[i]->name.len);
                const char *nm = v[i]->name.ptr;
                kn_free(v);
                return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor '%.*s' overlaps another",
                               g->path, nl, nm);
            }
        kn_free(v);
    }
    return KILN_OK;
}

static kiln_status open_common(kn_gguf *g, kn_gguf **out, kiln_error *err) {
    kiln_status s = parse(g, err);
    if (s) {
        kn_gguf_close(g);
        return s;
    }
    *out = g;
    return KILN_OK;
}

kiln_status kn_gguf_open(const char *path, kn_gguf **out, kiln_error *err) {
    *out = NULL;
    kn_gguf *g = kn_calloc(1, sizeof *g);
    if (!g) return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory", path);
    g->path = kn_strdup(path);
    if (!g->path) {
        kn_free(g);
        return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory", path);
    }
    kiln_status s = kn_map_file(path, &g->map, err);
    if (s) {
        kn_gguf_close(g);
        return s;
    }
    return open_common(g, out, err);
}

kiln_status kn_gguf_open_mem(const void *data, size_t size, const char *label, kn_gguf **out,
                             kiln_error *err) {
    *out = NULL;
    kn_gguf *g = kn_calloc(1, sizeof *g);
    if (!g) return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory", label);
    g->path = kn_strdup(label);
    if (!g->path) {
        kn_free(g);
        return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory", label);
    }
    kn_map_borrow(data, size, &g->map);
    return open_common(g, out, err);
}

void kn_gguf_close(kn_gguf *g) {
    if (!g) return;
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv + 1; i++) kn_free(g->kv[i].strs);
    kn_free(g->kv);
    kn_free(g->tensors);
    kn_free(g->kv_names);
    kn_free(g->tensor_names);
    kn_map_close(&g->map);
    kn_free(g->path);
    kn_free(g);
}

const kn_gguf_kv *kn_gguf_find(const kn_gguf *g, const char *key) {
    const kn_name_ref *r = kn_names_find(g->kv_names, (size_t)g->n_kv, key, strlen(key));
    return r ? &g->kv[r->idx] : NULL;
}

const kn_gguf_tensor *kn_gguf_find_tensor(const kn_gguf *g, const char *name) {
    const kn_name_ref *r =
        kn_names_find(g->tensor_names, (size_t)g->n_tensors, name, strlen(name));
    return r ? &g->tensors[r->idx] : NULL;
}

static bool kv_int(const kn_gguf_kv *kv, int64_t *lo_out, uint64_t *hi_out, bool *is_signed) {
    switch (kv->type) {
    case KN_GGUF_UINT8: case KN_GGUF_UINT16: case KN_GGUF_UINT32: case KN_GGUF_UINT64:
    case KN_GGUF_BOOL:
        *hi_out = kv->v.u;
        *is_signed = false;
        return true;
    case KN_GGUF_INT8: case KN_GGUF_INT16: case KN_GGUF_INT32: case KN_GGUF_INT64:
        *lo_out = kv->v.i;
        *is_signed = true;
        return true;
    default: return false;
    }
}

bool kn_gguf_get_u32(const kn_gguf *g, const char *key, uint32_t *out) {
    const kn_gguf_kv *kv = kn_gguf_find(g, key);
    int64_t i = 0;
    uint64_t u = 0;
    bool sg;
    if (!kv || !kv_int(kv, &i, &u, &sg)) return false;
    if (sg) {
        if (i < 0 || i > UINT32_MAX) return false;
        *out = (uint32_t)i;
    } else {
        if (u > UINT32_MAX) return false;
        *out = (uint32_t)u;
    }
    return true;
}

bool kn_gguf_get_i64(const kn_gguf *g, const char *key, int64_t *out) {
    const kn_gguf_kv *kv = kn_gguf_find(g, key);
    int64_t i = 0;
    uint64_t u = 0;
    bool sg;
    if (!kv || !kv_int(kv, &i, &u, &sg)) return false;
    if (sg) *out = i;
    else {
        if (u > (uint64_t)INT64_MAX) return false;
        *out = (int64_t)u;
    }
    return true;
}

bool kn_gguf_get_f32(const kn_gguf *g, const char *key, float *out) {
    const kn_gguf_kv *kv = kn_gguf_find(g, key);
    if (!kv) return false;
    if (kv->type == KN_GGUF_FLOAT32 || kv->type == KN_GGUF_FLOAT64) {
        if (kv->type == KN_GGUF_FLOAT64 && isfinite(kv->v.f))
            return kn_f64_to_f32(kv->v.f, out); /* a finite f64 past float's range is refused */
        *out = (float)kv->v.f; /* exact (it was a float), or NaN / Inf as themselves */
        return true;
    }
    int64_t i;
    if (!kn_gguf_get_i64(g, key, &i)) return false;
    *out = (float)i;
    return true;
}

bool kn_gguf_get_bool(const kn_gguf *g, const char *key, bool *out) {
    const kn_gguf_kv *kv = kn_gguf_find(g, key);
    if (!kv || kv->type != KN_GGUF_BOOL) return false;
    *out = kv->v.u != 0;
    return true;
}

bool kn_gguf_get_str(const kn_gguf *g, const char *key, kn_str *out) {
    const kn_gguf_kv *kv = kn_gguf_find(g, key);
    if (!kv || kv->type != KN_GGUF_STRING) return false;
    *out = kv->v.s;
    return true;
}

const kn_gguf_kv *kn_gguf_get_arr(const kn_gguf *g, const char *key, uint32_t elem_type) {
    const kn_gguf_kv *kv = kn_gguf_find(g, key);
    if (!kv || kv->type != KN_GGUF_ARRAY || kv->arr_type != elem_type) return NULL;
    return kv;
}

double kn_gguf_arr_f64(const kn_gguf_kv *kv, uint64_t i) {
    const uint8_t *p = kv->arr_data + i * kn_gguf_vtype_size(kv->arr_type);
    switch (kv->arr_type) {
    case KN_GGUF_FLOAT32: { float x; memcpy(&x, p, 4); return x; }
    case KN_GGUF_FLOAT64: { double x; memcpy(&x, p, 8); return x; }
    default: return (double)kn_gguf_arr_i64(kv, i);
    }
}

int64_t kn_gguf_arr_i64(const kn_gguf_kv *kv, uint64_t i) {
    const uint8_t *p = kv->arr_data + i * kn_gguf_vtype_size(kv->arr_type);
    switch (kv->arr_type) {
    case KN_GGUF_UINT8: case KN_GGUF_BOOL: return p[0];
    case KN_GGUF_INT8: return (int8_t)p[0];
    case KN_GGUF_UINT16: { uint16_t x; memcpy(&x, p, 2); return x; }
    case KN_GGUF_INT16: { int16_t x; memcpy(&x, p, 2); return x; }
    case KN_GGUF_UINT32: { uint32_t x; memcpy(&x, p, 4); return x; }
    case KN_GGUF_INT32: { int32_t x; memcpy(&x, p, 4); return x; }
    case KN_GGUF_UINT64: { uint64_t x; memcpy(&x, p, 8); return (int64_t)x; }
    case KN_GGUF_INT64: { int64_t x; memcpy(&x, p, 8); return x; }
    case KN_GGUF_FLOAT32: { float x; memcpy(&x, p, 4); int64_t v = 0; kn_f64_to_i64(x, INT64_MIN, INT64_MAX, &v); return v; }
    case KN_GGUF_FLOAT64: { double x; memcpy(&x, p, 8); int64_t v = 0; kn_f64_to_i64(x, INT64_MIN, INT64_MAX, &v); return v; }
    default: return 0;
    }
}

/* ---- writer ---- */

typedef struct wkv {
    char *key;
    uint8_t *bytes;    /* the serialized value: u32 type + payload, exactly as on disk */
    uint64_t nbytes;
} wkv;

typedef struct wtensor {
    char *name;
    uint32_t type, n_dims;
    int64_t ne[4];
    uint64_t nbytes, offset;
} wtensor;

struct kn_gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    /* key -> index + 1 (0 empty), open addressing: setting a key is O(1) however many a source
     * brought, so copying a hostile file's keys stays linear. The hash is seeded per writer,
     * so no file can choose keys that collide. */
    uint32_t *slot;
    size_t slot_cap;          /* power of two, >= 2 * n_kv */
    uint64_t seed;
    wtensor *t;
    size_t n_t, cap_t;
    bool oom;
    char bad[256]; /* first invalid tensor description */
};

kn_gguf_writer *kn_gguf_writer_new(void) {
    kn_gguf_writer *w = kn_calloc(1, sizeof(kn_gguf_writer));
    if (w) w->seed = (uint64_t)(uintptr_t)w * 0x9E3779B97F4A7C15ull ^ (uint64_t)kn_now_seconds();
    return w;
}

static uint64_t key_hash(const kn_gguf_writer *w, const char *k) {
    uint64_t h = 1469598103934665603ull ^ w->seed;
    for (; *k; k++) {
        h ^= (uint8_t)*k;
        h *= 1099511628211ull;
    }
    return h ^ (h >> 31);
}

/* The slot holding key, or the empty slot where it would go. */
static size_t key_slot(const kn_gguf_writer *w, const char *key) {
    size_t i = (size_t)key_hash(w, key) & (w->slot_cap - 1);
    while (w->slot[i] && strcmp(w->kv[w->slot[i] - 1].key, key) != 0) i = (i + 1) & (w->slot_cap - 1);
    return i;
}

static bool rehash(kn_gguf_writer *w, size_t cap) {
    uint32_t *ns = kn_calloc(cap, sizeof *ns);
    if (!ns) return false;
    kn_free(w->slot);
    w->slot = ns;
    w->slot_cap = cap;
    for (size_t k = 0; k < w->n_kv; k++) w->slot[key_slot(w, w->kv[k].key)] = (uint32_t)k + 1;
    return true;
}

void kn_gguf_writer_free(kn_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        kn_free(w->kv[i].key);
        kn_free(w->kv[i].bytes);
    }
    for (size_t i = 0; i < w->n_t; i++) kn_free(w->t[i].name);
    kn_free(w->kv);
    kn_free(w->slot);
    kn_free(w->t);
    kn_free(w);
}

/* Stores (or replaces) a key with an already-serialized value; takes ownership of bytes. */
static void put(kn_gguf_writer *w, const char *key, uint8_t *bytes, uint64_t n) {
    if (!bytes) {
        w->oom = true;
        return;
    }
    if ((w->n_kv + 1) * 2 > w->slot_cap && !rehash(w, w->slot_cap ? w->slot_cap * 2 : 128)) {
        kn_free(bytes);
        w->oom = true;
        return;
    }
    size_t at = key_slot(w, key);
    if (w->slot[at]) {
        wkv *e = &w->kv[w->slot[at] - 1];
        kn_free(e->bytes);
        e->bytes = bytes;
        e->nbytes = n;
        return;
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 64;
        wkv *k = kn_realloc(w->kv, cap * sizeof *k);
        if (!k) {
            kn_free(bytes);
            w->oom = true;
            return;
        }
        w->kv = k;
        w->cap_kv = cap;
    }
    char *kd = kn_strdup(key);
    if (!kd) {
        kn_free(bytes);
        w->oom = true;
        return;
    }
    w->kv[w->n_kv++] = (wkv){kd, bytes, n};
    w->slot[at] = (uint32_t)w->n_kv;
}

static uint8_t *scalar_bytes(uint32_t type, const void *v, size_t sz, uint64_t *n) {
    uint8_t *b = kn_malloc(4 + sz);
    if (!b) return NULL;
    memcpy(b, &type, 4);
    memcpy(b + 4, v, sz);
    *n = 4 + sz;
    return b;
}

#define SETTER(fn, ctype, gtype)                                                   \
    void fn(kn_gguf_writer *w, const char *key, ctype v) {                         \
        uint64_t n = 0;                                                            \
        uint8_t *b = scalar_bytes(gtype, &v, sizeof v, &n);                        \
        put(w, key, b, n);                                                         \
    }
SETTER(kn_gguf_set_u32, uint32_t, KN_GGUF_UINT32)
SETTER(kn_gguf_set_i32, int32_t, KN_GGUF_INT32)
SETTER(kn_gguf_set_u64, uint64_t, KN_GGUF_UINT64)
SETTER(kn_gguf_set_f32, float, KN_GGUF_FLOAT32)

void kn_gguf_set_bool(kn_gguf_writer *w, const char *key, bool v) {
    uint8_t x = v ? 1 : 0;
    uint64_t n = 0;
    uint8_t *b = scalar_bytes(KN_GGUF_BOOL, &x, 1, &n);
    put(w, key, b, n);
}

void kn_gguf_set_strn(kn_gguf_writer *w, const char *key, const char *v, uint64_t len) {
    uint8_t *b = kn_malloc(4 + 8 + len);
    if (b) {
        uint32_t t = KN_GGUF_STRING;
        memcpy(b, &t, 4);
        memcpy(b + 4, &len, 8);
        if (len) memcpy(b + 12, v, len);
    }
    put(w, key, b, 12 + len);
}

void kn_gguf_set_str(kn_gguf_writer *w, const char *key, const char *v) {
    kn_gguf_set_strn(w, key, v, strlen(v));
}

void kn_gguf_set_arr(kn_gguf_writer *w, const char *key, uint32_t elem_type, const void *data,
                     uint64_t n) {
    size_t es = kn_gguf_vtype_size(elem_type);
    uint64_t bytes = 4 + 4 + 8 + n * es;
    uint8_t *b = kn_malloc(bytes);
    if (b) {
        uint32_t t = KN_GGUF_ARRAY;
        memcpy(b, &t, 4);
        memcpy(b + 4, &elem_type, 4);
        memcpy(b + 8, &n, 8);
        if (n) memcpy(b + 16, data, n * es);
    }
    put(w, key, b, bytes);
}

void kn_gguf_set_arr_str(kn_gguf_writer *w, const char *key, const kn_str *strs, uint64_t n) {
    uint64_t bytes = 16;
    for (uint64_t i = 0; i < n; i++) bytes += 8 + strs[i].len;
    uint8_t *b = kn_malloc(bytes);
    if (b) {
        uint32_t t = KN_GGUF_ARRAY, et = KN_GGUF_STRING;
        memcpy(b, &t, 4);
        memcpy(b + 4, &et, 4);
        memcpy(b + 8, &n, 8);
        uint64_t o = 16;
        for (uint64_t i = 0; i < n; i++) {
            memcpy(b + o, &strs[i].len, 8);
            if (strs[i].len) memcpy(b + o + 8, strs[i].ptr, strs[i].len);
            o += 8 + strs[i].len;
        }
    }
    put(w, key, b, bytes);
}

void kn_gguf_copy_kv(kn_gguf_writer *w, const kn_gguf_kv *kv) {
    char *key = kn_strndup(kv->key.ptr, kv->key.len);
    if (!key) {
        w->oom = true;
        return;
    }
    if (kv->type == KN_GGUF_STRING) {
        kn_gguf_set_strn(w, key, kv->v.s.ptr, kv->v.s.len);
    } else if (kv->type == KN_GGUF_ARRAY) {
        /* The reader kept the raw element bytes, so the array is copied as it was on disk. */
        uint64_t bytes = 16 + kv->arr_bytes;
        uint8_t *b = kn_malloc(bytes);
        if (b) {
            uint32_t t = KN_GGUF_ARRAY;
            memcpy(b, &t, 4);
            memcpy(b + 4, &kv->arr_type, 4);
            memcpy(b + 8, &kv->arr_n, 8);
            if (kv->arr_bytes) memcpy(b + 16, kv->arr_data, kv->arr_bytes);
        }
        put(w, key, b, bytes);
    } else {
        size_t sz = kn_gguf_vtype_size(kv->type);
        uint8_t raw[8];
        switch (kv->type) {
        case KN_GGUF_FLOAT32: { float f = (float)kv->v.f; memcpy(raw, &f, 4); break; }
        case KN_GGUF_FLOAT64: memcpy(raw, &kv->v.f, 8); break;
        case KN_GGUF_INT8: case KN_GGUF_INT16: case KN_GGUF_INT32: case KN_GGUF_INT64: {
            /* Little-endian truncation of the sign-extended value is the original encoding. */
            uint64_t u = (uint64_t)kv->v.i;
            memcpy(raw, &u, 8);
            break;
        }
        default: memcpy(raw, &kv->v.u, 8); break;
        }
        uint64_t n = 0;
        uint8_t *b = scalar_bytes(kv->type, raw, sz, &n);
        put(w, key, b, n);
    }
    kn_free(key);
}

void kn_gguf_remove(kn_gguf_writer *w, const char *key) {
    if (!w->slot_cap) return;
    size_t at = key_slot(w, key);
    if (!w->slot[at]) return;
    size_t i = w->slot[at] - 1;
    kn_free(w->kv[i].key);
    kn_free(w->kv[i].bytes);
    memmove(&w->kv[i], &w->kv[i + 1], (w->n_kv - i - 1) * sizeof *w->kv);
    w->n_kv--;
    /* indices after i moved down: rebuild (removal is rare: a few keys per bake) */
    if (!rehash(w, w->slot_cap)) w->oom = true;
}

void kn_gguf_add_tensor(kn_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                        const int64_t *ne) {
    wtensor t = {0};
    t.type = type;
    t.n_dims = n_dims;
    uint64_t nel = 1;
    bool ok = n_dims >= 1 && n_dims <= 4;
    for (uint32_t d = 0; d < 4; d++) t.ne[d] = 1;
    for (uint32_t d = 0; ok && d < n_dims; d++) {
        t.ne[d] = ne[d];
        ok = ne[d] > 0 && kn_mul_ok(nel, (uint64_t)ne[d], &nel);
    }
    uint64_t row = 0;
    ok = ok && kn_row_bytes(type, t.ne[0], &row) && kn_mul_ok(row, nel / (uint64_t)t.ne[0], &t.nbytes);
    if (!ok && !w->bad[0])
        snprintf(w->bad, sizeof w->bad, "tensor '%s': invalid type %s or shape for it", name,
                 kn_type_name(type));
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 64;
        wtensor *nt = kn_realloc(w->t, cap * sizeof *nt);
        if (!nt) {
            w->oom = true;
            return;
        }
        w->t = nt;
        w->cap_t = cap;
    }
    t.name = kn_strdup(name);
    if (!t.name) {
        w->oom = true;
        return;
    }
    w->t[w->n_t++] = t;
}

uint64_t kn_gguf_writer_n_tensors(const kn_gguf_writer *w) { return w->n_t; }

kiln_status kn_gguf_writer_status(const kn_gguf_writer *w, kiln_error *err) {
    if (w->oom) return kn_fail(err, KILN_ERR_NOMEM, "out of memory while building GGUF metadata");
    if (w->bad[0]) return kn_fail(err, KILN_ERR_INVALID_ARG, "%s", w->bad);
    return KILN_OK;
}

static kiln_status wr(FILE *f, const void *p, size_t n, const char *path, kiln_error *err) {
    if (n && fwrite(p, 1, n, f) != n)
        return kn_fail(err, KILN_ERR_WRITE, "%s: write failed: %s", path, strerror(errno));
    return KILN_OK;
}

static kiln_status wr_pad(FILE *f, uint64_t pos, uint32_t align, const char *path,
                          kiln_error *err) {
    static const uint8_t zeros[256];
    uint64_t pad = (align - pos % align) % align;
    while (pad) {
        size_t n = pad > sizeof zeros ? sizeof zeros : (size_t)pad;
        kiln_status s = wr(f, zeros, n, path, err);
        if (s) return s;
        pad -= n;
    }
    return KILN_OK;
}

kiln_status kn_gguf_writer_write(kn_gguf_writer *w, FILE *f, const char *path, kn_gguf_fill_fn fill,
                                 void *user, kiln_error *err) {
    kiln_status s = kn_gguf_writer_status(w, err);
    if (s) return s;
    const uint32_t align = GGUF_DEFAULT_ALIGNMENT;
    kn_gguf_remove(w, "general.alignment"); /* we always write the default */
    uint32_t magic = GGUF_MAGIC, version = 3;
    uint64_t nt = w->n_t, nkv = w->n_kv, pos = 0;
    if ((s = wr(f, &magic, 4, path, err)) || (s = wr(f, &version, 4, path, err)) ||
        (s = wr(f, &nt, 8, path, err)) || (s = wr(f, &nkv, 8, path, err)))
        return s;
    pos = 24;
    for (size_t i = 0; i < w->n_kv; i++) {
        uint64_t kl = strlen(w->kv[i].key);
        if ((s = wr(f, &kl, 8, path, err)) || (s = wr(f, w->kv[i].key, kl, path, err)) ||
            (s = wr(f, w->kv[i].bytes, w->kv[i].nbytes, path, err)))
            return s;
        pos += 8 + kl + w->kv[i].nbytes;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        wtensor *t = &w->t[i];
        t->offset = off;
        off += (t->nbytes + align - 1) / align * align;
        uint64_t nl = strlen(t->name);
        if ((s = wr(f, &nl, 8, path, err)) || (s = wr(f, t->name, nl, path, err)) ||
            (s = wr(f, &t->n_dims, 4, path, err)))
            return s;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            uint64_t ne = (uint64_t)t->ne[d];
            if ((s = wr(f, &ne, 8, path, err))) return s;
        }
        if ((s = wr(f, &t->type, 4, path, err)) || (s = wr(f, &t->offset, 8, path, err))) return s;
        pos += 8 + nl + 4 + 8 * t->n_dims + 4 + 8;
    }
    if ((s = wr_pad(f, pos, align, path, err))) return s;
    uint8_t *buf = NULL;
    uint64_t cap = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        wtensor *t = &w->t[i];
        if (t->nbytes > cap) {
            uint8_t *nb = kn_realloc(buf, (size_t)t->nbytes);
            if (!nb) {
                kn_free(buf);
                return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory for tensor '%s'", path,
                               t->name);
            }
            buf = nb;
            cap = t->nbytes;
        }
        if ((s = fill(user, i, buf, t->nbytes, err)) || (s = wr(f, buf, t->nbytes, path, err)) ||
            (s = wr_pad(f, t->nbytes, align, path, err))) {
            kn_free(buf);
            return s;
        }
    }
    kn_free(buf);
    return KILN_OK;
}
