/* safetensors.c — bounds-checked safetensors reader (zero copy). */
#include "formats/safetensors.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "base/limits.h"
#include "formats/json.h"
#include "quant/quant.h"

/* Real headers are well under a few MB; this keeps a hostile length from driving allocation. */
#define ST_MAX_HEADER KN_MAX_SAFETENSORS_HEADER

static kiln_status parse_tensor(kn_safetensors *st, const cJSON *item, uint64_t data_size,
                                kn_st_tensor *t, kiln_error *err) {
    const char *nm = item->string;
    if (!cJSON_IsObject(item))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor '%s': entry is not an object", st->path,
                       nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) ||
        cJSON_GetArraySize(off) != 2)
        return kn_fail(err, KILN_ERR_FORMAT,
                       "%s: tensor '%s': needs dtype, shape and data_offsets [begin, end]",
                       st->path, nm);
    const char *d = dt->valuestring;
    if (strcmp(d, "F32") == 0) t->type = KN_TYPE_F32;
    else if (strcmp(d, "F16") == 0) t->type = KN_TYPE_F16;
    else if (strcmp(d, "BF16") == 0) t->type = KN_TYPE_BF16;
    else
        return kn_fail(err, KILN_ERR_UNSUPPORTED,
                       "%s: tensor '%s': dtype %s is not supported (F32, F16, BF16)", st->path,
                       nm, d);
    int nd = cJSON_GetArraySize(sh);
    if (nd > 4)
        return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: tensor '%s' has %d dimensions (max 4)",
                       st->path, nm, nd);
    uint64_t nel = 1;
    t->n_dims = nd;
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, sh) {
        if (!kn_json_i64(e, 0, (int64_t)1 << 53, &t->shape[i]))
            return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor '%s': bad shape", st->path, nm);
        if (!kn_mul_ok(nel, (uint64_t)t->shape[i], &nel))
            return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor '%s': shape overflows", st->path, nm);
        i++;
    }
    int64_t b = 0, en = 0;
    if (!kn_json_i64(cJSON_GetArrayItem(off, 0), 0, (int64_t)data_size, &b) ||
        !kn_json_i64(cJSON_GetArrayItem(off, 1), b, (int64_t)data_size, &en))
        return kn_fail(err, KILN_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets are not [begin, end] inside the %llu "
                       "data bytes (outside the file)",
                       st->path, nm, (unsigned long long)data_size);
    uint64_t esz = kn_type_get(t->type)->block_bytes, want = 0;
    if (!kn_mul_ok(nel, esz, &want) || want != (uint64_t)(en - b))
        return kn_fail(err, KILN_ERR_FORMAT,
                       "%s: tensor '%s': %lld data bytes do not match shape and dtype (%llu)",
                       st->path, nm, (long long)(en - b), (unsigned long long)want);
    t->offset = (uint64_t)b;
    t->nbytes = want;
    t->data = st->map.data + 8 + (st->map.size - 8 - data_size) + (uint64_t)b;
    t->name = kn_strdup(nm);
    if (!t->name) return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory", st->path);
    return KILN_OK;
}

static int cmp_offset(const void *a, const void *b) {
    const kn_st_tensor *x = *(kn_st_tensor *const *)a, *y = *(kn_st_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static kiln_status parse(kn_safetensors *st, kiln_error *err) {
    if (st->map.size < 8)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: truncated (no header length)", st->path);
    uint64_t hlen;
    memcpy(&hlen, st->map.data, 8);
    if (hlen < 2 || hlen > ST_MAX_HEADER || hlen > st->map.size - 8)
        return kn_fail(err, KILN_ERR_FORMAT,
                       "%s: header length %llu does not fit the file (%zu bytes)", st->path,
                       (unsigned long long)hlen, st->map.size);
    cJSON *root = cJSON_ParseWithLength((const char *)st->map.data + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return kn_fail(err, KILN_ERR_FORMAT, "%s: header is not a JSON object", st->path);
    }
    uint64_t data_size = st->map.size - 8 - hlen;
    int n = 0;
    for (const cJSON *it = root->child; it; it = it->next)
        if (strcmp(it->string, "__metadata__") != 0) n++;
    if (n > KN_MAX_TENSORS) {
        cJSON_Delete(root);
        return kn_fail(err, KILN_ERR_FORMAT, "%s: %d tensors (kiln reads at most %d)", st->path,
                       n, KN_MAX_TENSORS);
    }
    st->tensors = kn_calloc((size_t)n + 1, sizeof *st->tensors);
    kn_name_ref *names = kn_malloc(((size_t)n + 1) * sizeof *names);
    if (!st->tensors || !names) {
        kn_free(names);
        cJSON_Delete(root);
        return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory", st->path);
    }
    kiln_status s = KILN_OK;
    for (const cJSON *it = root->child; it && !s; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) continue;
        s = parse_tensor(st, it, data_size, &st->tensors[st->n_tensors], err);
        if (!s) st->n_tensors++;
    }
    cJSON_Delete(root);
    /* Duplicate names, then overlapping data (which would let two tensors alias each other's
     * bytes, as the GGUF reader refuses too): both by sorting, O(n log n). */
    if (!s) {
        for (int i = 0; i < st->n_tensors; i++)
            names[i] = (kn_name_ref){st->tensors[i].name, strlen(st->tensors[i].name), (uint64_t)i};
        kn_names_sort(names, (size_t)st->n_tensors);
        const kn_name_ref *dup = kn_names_dup(names, (size_t)st->n_tensors);
        if (dup) s = kn_fail(err, KILN_ERR_FORMAT, "%s: duplicate tensor '%s'", st->path, dup->ptr);
    }
    if (!s && st->n_tensors > 1) {
        kn_st_tensor **v = (kn_st_tensor **)(void *)names; /* same size: reuse the buffer */
        _Static_assert(sizeof(kn_name_ref) >= sizeof(kn_st_tensor *), "reused buffer");
        for (int i = 0; i < st->n_tensors; i++) v[i] = &st->tensors[i];
        qsort(v, (size_t)st->n_tensors, sizeof *v, cmp_offset);
        for (int i = 1; i < st->n_tensors && !s; i++)
            if (v[i - 1]->nbytes && v[i]->nbytes &&
                v[i - 1]->offset + v[i - 1]->nbytes > v[i]->offset)
                s = kn_fail(err, KILN_ERR_FORMAT,
                            "%s: tensors '%s' and '%s' overlap (data_offsets)", st->path,
                            v[i - 1]->name, v[i]->name);
    }
    kn_free(names);
    return s;
}

static kiln_status finish(kn_safetensors *st, kn_safetensors **out, kiln_error *err) {
    kiln_status s = parse(st, err);
    if (s) {
        kn_safetensors_close(st);
        return s;
    }
    *out = st;
    return KILN_OK;
}

kiln_status kn_safetensors_open(const char *path, kn_safetensors **out, kiln_error *err) {
    *out = NULL;
    kn_safetensors *st = kn_calloc(1, sizeof *st);
    if (!st || !(st->path = kn_strdup(path))) {
        kn_free(st);
        return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory", path);
    }
    kiln_status s = kn_map_file(path, &st->map, err);
    if (s) {
        kn_safetensors_close(st);
        return s;
    }
    return finish(st, out, err);
}

kiln_status kn_safetensors_open_mem(const void *data, size_t size, const char *label,
                                    kn_safetensors **out, kiln_error *err) {
    *out = NULL;
    kn_safetensors *st = kn_calloc(1, sizeof *st);
    if (!st || !(st->path = kn_strdup(label))) {
        kn_free(st);
        return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory", label);
    }
    kn_map_borrow(data, size, &st->map);
    return finish(st, out, err);
}

void kn_safetensors_close(kn_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n_tensors; i++) kn_free(st->tensors[i].name);
    kn_free(st->tensors);
    kn_map_close(&st->map);
    kn_free(st->path);
    kn_free(st);
}
