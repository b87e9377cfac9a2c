/* source.c — open a GGUF file, a Hugging Face folder or a cached HF id as one kn_source. */
#include "model/source.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/limits.h"
#include "formats/json.h"
#include "quant/quant.h"

#define JSON_MAX KN_MAX_JSON_BYTES /* tokenizer.json of large vocabularies reaches ~20 MB */

static kiln_status add_file(kn_source *s, const char *path, const void *data, size_t n,
                            kiln_error *err) {
    kn_src_file *f = kn_realloc(s->files, (size_t)(s->n_files + 1) * sizeof *f);
    if (!f) return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory", path);
    s->files = f;
    f = &s->files[s->n_files];
    f->path = kn_strdup(path);
    if (!f->path) return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory", path);
    kn_sha256_hex(data, n, f->sha256);
    s->n_files++;
    return KILN_OK;
}

static kiln_status add_tensor(kn_source *s, kn_src_tensor *t, kiln_error *err) {
    if (s->n_tensors >= KN_MAX_TENSORS)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: more than %d tensors", s->label,
                       KN_MAX_TENSORS);
    if (s->n_tensors % 64 == 0) {
        kn_src_tensor *nt = kn_realloc(s->tensors, (size_t)(s->n_tensors + 64) * sizeof *nt);
        if (!nt) return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory", s->label);
        s->tensors = nt;
    }
    s->tensors[s->n_tensors++] = *t;
    return KILN_OK;
}

/* Sorts the names once all tensors are in: duplicates (the same GGUF name from two shards, or
 * two HF names mapping to one) are refused, and kn_source_find is a binary search. */
static kiln_status index_tensors(kn_source *s, kiln_error *err) {
    s->names = kn_malloc(((size_t)s->n_tensors + 1) * sizeof *s->names);
    if (!s->names) return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory", s->label);
    for (int i = 0; i < s->n_tensors; i++)
        s->names[i] = (kn_name_ref){s->tensors[i].name, strlen(s->tensors[i].name), (uint64_t)i};
    kn_names_sort(s->names, (size_t)s->n_tensors);
    const kn_name_ref *dup = kn_names_dup(s->names, (size_t)s->n_tensors);
    if (dup) {
        const kn_src_tensor *t = &s->tensors[dup[1].idx];
        return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor %s appears twice", t->file, t->name);
    }
    return KILN_OK;
}

const kn_src_tensor *kn_source_find(const kn_source *s, const char *name) {
    if (!s->names) {
        for (int i = 0; i < s->n_tensors; i++)
            if (strcmp(s->tensors[i].name, name) == 0) return &s->tensors[i];
        return NULL;
    }
    const kn_name_ref *r = kn_names_find(s->names, (size_t)s->n_tensors, name, strlen(name));
    return r ? &s->tensors[r->idx] : NULL;
}

/* Every tensor the hyperparameters call for is present with the implied shape, and nothing
 * else is there; failures name the tensor. */
static kiln_status check_schema(kn_source *s, kiln_error *err) {
    const kn_hparams *hp = &s->hp;
    for (int r = 0; r < KN_T_ROLE_COUNT; r++) {
        int layers = kn_tensor_role_is_per_layer((kn_tensor_role)r) ? hp->n_layer : 1;
        for (int l = 0; l < layers; l++) {
            char name[96];
            int nd;
            int64_t ne[2];
            if (!kn_tensor_expected(hp, (kn_tensor_role)r, l, name, sizeof name, &nd, ne)) continue;
            const kn_src_tensor *t = kn_source_find(s, name);
            if (!t)
                return kn_fail(err, KILN_ERR_FORMAT, "%s: missing tensor %s", s->label, name);
            if (!kn_tensor_type_ok((kn_tensor_role)r, t->type))
                return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor %s has type %s, which is not a "
                               "type for %s", t->file, name, kn_type_name(t->type),
                               kn_tensor_role_is_matrix((kn_tensor_role)r)
                                   ? "weights" : "a norm or bias (F32, F16, BF16)");
            bool ok = t->ne[0] == ne[0] && t->ne[2] == 1 && t->ne[3] == 1 &&
                      (nd == 1 ? t->ne[1] == 1 : t->ne[1] == ne[1]);
            if (!ok)
                return kn_fail(err, KILN_ERR_FORMAT,
                               "%s: tensor %s has shape [%lld, %lld] (GGUF order), the config "
                               "implies [%lld, %lld]",
                               t->file, name, (long long)t->ne[0], (long long)t->ne[1],
                               (long long)ne[0], (long long)(nd == 1 ? 1 : ne[1]));
            if (t->permute_heads && (t->ne[1] % t->permute_heads ||
                                     (t->ne[1] / t->permute_heads) % 2))
                return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor %s rows do not split into %d "
                               "heads", t->file, name, t->permute_heads);
        }
    }
    for (int i = 0; i < s->n_tensors; i++) {
        const char *nm = s->tensors[i].name;
        kn_tensor_role role;
        int layer;
        if (!kn_tensor_role_of(hp, nm, &role, &layer))
            return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: unexpected tensor %s (%s)",
                           s->tensors[i].file, nm, s->tensors[i].orig_name);
    }
    for (int i = 0; i < s->n_tensors; i++) {
        const kn_src_tensor *t = &s->tensors[i];
        if (t->type != KN_TYPE_F32 && t->type != KN_TYPE_F16 && t->type != KN_TYPE_BF16 &&
            strncmp(t->name, "blk.", 4) == 0 && t->n_dims == 2)
            s->quantized = true;
        if (!kn_type_get(t->type)->can_dequantize)
            return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: tensor %s has type %s, which kiln "
                           "cannot read", t->file, t->name, kn_type_name(t->type));
    }
    return KILN_OK;
}

/* A fused weight as the tensors it holds: views of consecutive row ranges (no copy), named as
 * the split architecture names them (model/arch.h, fused_qkv_gate_up). */
static kiln_status add_split(kn_source *s, const kn_src_tensor *base, kn_fused kind, int layer,
                             kiln_error *err) {
    const kn_hparams *hp = &s->hp;
    int64_t q = (int64_t)hp->n_head * hp->head_dim, kv = (int64_t)hp->n_head_kv * hp->head_dim;
    int64_t rows[3];
    kn_tensor_role roles[3];
    int n;
    if (kind == KN_FUSED_QKV) {
        n = 3;
        rows[0] = q, rows[1] = kv, rows[2] = kv;
        roles[0] = KN_T_ATTN_Q, roles[1] = KN_T_ATTN_K, roles[2] = KN_T_ATTN_V;
    } else {
        n = 2;
        rows[0] = rows[1] = hp->n_ff;
        roles[0] = KN_T_FFN_GATE, roles[1] = KN_T_FFN_UP;
    }
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += rows[i];
    if (base->n_dims != 2 || base->ne[1] != total || base->ne[2] != 1 || base->ne[3] != 1 ||
        base->nbytes % (uint64_t)total)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: fused tensor %s has %lld rows, the config "
                       "implies %lld", base->file, base->name, (long long)base->ne[1],
                       (long long)total);
    uint64_t rb = base->nbytes / (uint64_t)total, at = 0;
    for (int i = 0; i < n; i++) {
        kn_src_tensor t = *base;
        kn_tensor_name(roles[i], layer, t.name, sizeof t.name);
        t.ne[1] = rows[i];
        t.data = base->data + at;
        t.nbytes = (uint64_t)rows[i] * rb;
        t.permute_heads = 0;
        at += t.nbytes;
        kiln_status st = add_tensor(s, &t, err);
        if (st) return st;
    }
    return KILN_OK;
}

/* ---- GGUF ---- */

static kiln_status open_gguf(kn_source *s, const char *path, kiln_error *err) {
    s->kind = KN_SOURCE_GGUF;
    kiln_status st = kn_gguf_open(path, &s->gguf, err);
    if (st) return st;
    kn_gguf *g = s->gguf;
    if ((st = kn_hparams_from_gguf(g, &s->hp, err))) return st;
    kn_str nm;
    if (kn_gguf_get_str(g, "general.name", &nm)) s->name = kn_strndup(nm.ptr, nm.len);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const kn_gguf_tensor *gt = &g->tensors[i];
        kn_src_tensor t = {0};
        if (gt->name.len >= sizeof t.name)
            return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: tensor name too long", path);
        memcpy(t.name, gt->name.ptr, gt->name.len);
        t.orig_name = "gguf";
        t.file = g->path;
        t.type = gt->type;
        t.n_dims = gt->n_dims;
        memcpy(t.ne, gt->ne, sizeof t.ne);
        t.data = gt->data;
        t.nbytes = gt->nbytes;
        int layer;
        kn_fused fk = kn_arch_get(s->hp.arch)->fused_qkv_gate_up
                          ? kn_tensor_fused_from_gguf(t.name, &layer) : KN_FUSED_NONE;
        /* ffn_up is the fused gate_up only with 2F rows (a baked offering holds it split) */
        if (fk == KN_FUSED_GATE_UP && t.ne[1] != 2 * (int64_t)s->hp.n_ff) fk = KN_FUSED_NONE;
        if (fk) {
            if ((st = add_split(s, &t, fk, layer, err))) return st;
            continue;
        }
        if ((st = add_tensor(s, &t, err))) return st;
    }
    s->bos_id = s->eos_id = -1;
    uint32_t u;
    if (kn_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &u)) s->bos_id = (int)u;
    if (kn_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &u)) s->eos_id = (int)u;
    return add_file(s, path, g->map.data, g->map.size, err);
}

/* ---- Hugging Face ---- */

/* eos_token_id: one id, or a list whose first entry is the id kiln uses; absent or null: keep
 * *id as it is. */
static kiln_status eos_id_of(const cJSON *o, const char *label, int *id, kiln_error *err) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "eos_token_id");
    if (cJSON_IsArray(e)) {
        const cJSON *it;
        int64_t v, first = -1;
        cJSON_ArrayForEach(it, e) {
            if (!kn_json_i64(it, 0, INT32_MAX, &v))
                return kn_fail(err, KILN_ERR_FORMAT, "%s: eos_token_id holds an entry that is not "
                               "a token id in [0, %d]", label, INT32_MAX);
            if (first < 0) first = v;
        }
        if (first >= 0) *id = (int)first;
        return KILN_OK;
    }
    return kn_json_get_i32(o, "eos_token_id", -1, INT32_MAX, *id, id, label, err);
}

/* A soft-cap of Gemma 2's config: a positive number (absent: transformers' default). null
 * turns it off in transformers, which llama.cpp cannot express (it always caps), so it is
 * refused rather than baked into a file the two would read differently. */
static kiln_status softcap_of(const cJSON *c, const char *key, float def, float *out,
                              const char *label, kiln_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, key);
    if (v && cJSON_IsNull(v))
        return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: %s null (no soft-cap) is not supported "
                       "for gemma2", label, key);
    return kn_json_get_f32(c, key, def, out, label, err);
}

/* Gemma3TextConfig's and Gemma2Config's fields (transformers), read the way llama.cpp's
 * converter and loader do: what a GGUF cannot say (a query_pre_attn_scalar other than
 * llama.cpp's rule, a sliding pattern other than every N-th layer global, attention
 * soft-capping in Gemma 3, no soft-caps in Gemma 2, another activation) is refused rather than
 * baked into a file that llama.cpp and kiln would read differently. */
static kiln_status gemma_from_hf_config(const cJSON *c, const kn_arch_info *ai, kn_hparams *hp,
                                        const char *label, kiln_error *err) {
    kiln_status st;
    hp->gemma = true;
    hp->swa_pattern = ai->gemma_swa_pattern;
    int qpas = 0;
    if (ai->gemma_softcap) {
        /* Gemma 2: one RoPE base; older configs name the window sliding_window_size */
        hp->rope_theta_swa = hp->rope_theta;
        if ((st = softcap_of(c, "attn_logit_softcapping", 50.0f, &hp->attn_softcap, label,
                             err)) ||
            (st = softcap_of(c, "final_logit_softcapping", 30.0f, &hp->final_softcap, label,
                             err)))
            return st;
        if (!cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(c, "sliding_window")) &&
            (st = kn_json_get_i32(c, "sliding_window_size", 0, INT32_MAX, 4096,
                                  &hp->sliding_window, label, err)))
            return st;
    } else if ((st = kn_json_get_f32(c, "rope_local_base_freq", 10000.0f, &hp->rope_theta_swa,
                                     label, err)) ||
               (st = kn_json_get_f32(c, "final_logit_softcapping", 0.0f, &hp->final_softcap,
                                     label, err))) {
        return st;
    }
    if ((st = kn_json_get_i32(c, "sliding_window_pattern", 1, 1 << 20, hp->swa_pattern,
                              &hp->swa_pattern, label, err)) ||
        (st = kn_json_get_i32(c, "query_pre_attn_scalar", 1, 1 << 20, hp->head_dim, &qpas,
                              label, err)))
        return st;
    if (hp->swa_pattern != ai->gemma_swa_pattern && ai->gemma_softcap)
        return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: sliding_window_pattern %d is not the %d "
                       "llama.cpp assumes for %s", label, hp->swa_pattern,
                       ai->gemma_swa_pattern, ai->name);
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(c, "layer_types");
    if (cJSON_IsArray(lt)) {
        int n = cJSON_GetArraySize(lt);
        for (int l = 0; l < n; l++) {
            const cJSON *e = cJSON_GetArrayItem(lt, l);
            bool sliding = cJSON_IsString(e) && strcmp(e->valuestring, "sliding_attention") == 0;
            bool full = cJSON_IsString(e) && strcmp(e->valuestring, "full_attention") == 0;
            if (n != hp->n_layer || !(sliding || full) ||
                sliding != (hp->swa_pattern <= 0 || l % hp->swa_pattern != hp->swa_pattern - 1))
                return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: layer_types is not one global "
                               "layer in every %d (the pattern a GGUF can state)", label,
                               hp->swa_pattern);
        }
    }
    if (hp->sliding_window == 0) hp->swa_pattern = 0;
    int rule = kn_gemma_qpas(hp);
    if (qpas != rule)
        return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: query_pre_attn_scalar %d is not the %d "
                       "llama.cpp assumes for this shape", label, qpas, rule);
    hp->attn_scale = 1.0f / sqrtf((float)qpas);
    const cJSON *cap = cJSON_GetObjectItemCaseSensitive(c, "attn_logit_softcapping");
    if (!ai->gemma_softcap && cap && !cJSON_IsNull(cap))
        return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: attn_logit_softcapping is not supported "
                       "for %s (llama.cpp does not apply it)", label, ai->name);
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(c, "hidden_activation");
    if (!cJSON_IsString(act)) act = cJSON_GetObjectItemCaseSensitive(c, "hidden_act");
    if (cJSON_IsString(act) && strcmp(act->valuestring, "gelu_pytorch_tanh") != 0)
        return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: hidden_activation '%s' is not supported "
                       "(gelu_pytorch_tanh)", label, act->valuestring);
    return KILN_OK;
}

kiln_status kn_hparams_from_hf_config(const char *json, const char *label, kn_hparams *hp,
                                      int *bos_id, int *eos_id, kiln_error *err) {
    memset(hp, 0, sizeof *hp);
    cJSON *c = cJSON_Parse(json);
    if (!c || !cJSON_IsObject(c)) {
        cJSON_Delete(c);
        return kn_fail(err, KILN_ERR_FORMAT, "%s: not valid JSON", label);
    }
    kiln_status st = KILN_OK;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(c, "model_type");
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(c, "architectures");
    const char *arch = cJSON_IsString(mt) ? mt->valuestring : NULL;
    const char *archname = NULL;
    if (cJSON_IsArray(archs) && cJSON_IsString(cJSON_GetArrayItem(archs, 0)))
        archname = cJSON_GetArrayItem(archs, 0)->valuestring;
    if (!arch && !archname) {
        st = kn_fail(err, KILN_ERR_FORMAT, "%s: no model_type or architectures", label);
        goto done;
    }
    const kn_arch_info *ai = kn_arch_from_hf(arch, archname);
    if (!ai) {
        st = kn_fail(err, KILN_ERR_UNSUPPORTED,
                     "%s: architecture '%s'%s%s%s is not supported (%s)", label,
                     arch ? arch : archname, arch && archname ? " (" : "",
                     arch && archname ? archname : "", arch && archname ? ")" : "",
                     kn_arch_supported());
        goto done;
    }
    hp->arch = ai->id;
    snprintf(hp->arch_name, sizeof hp->arch_name, "%s", ai->name);
    hp->rope_neox = ai->rope_neox;
    hp->qkv_bias = ai->qkv_bias;
    hp->qk_norm = ai->qk_norm;
    hp->nope_step = ai->nope_step;
    hp->rope_attn_factor = 1.0f;
    /* Every number through the range-checked reader: kn_hparams_validate then applies the
     * model limits to values that are at least integers. */
    const int M = INT32_MAX;
    if ((st = kn_json_get_i32(c, "num_hidden_layers", 1, M, 0, &hp->n_layer, label, err)) ||
        (st = kn_json_get_i32(c, "hidden_size", 1, M, 0, &hp->n_embd, label, err)) ||
        (st = kn_json_get_i32(c, "intermediate_size", 1, M, 0, &hp->n_ff, label, err)) ||
        (st = kn_json_get_i32(c, "num_attention_heads", 1, M, 0, &hp->n_head, label, err)) ||
        (st = kn_json_get_i32(c, "num_key_value_heads", 1, M, hp->n_head, &hp->n_head_kv, label,
                              err)) ||
        (st = kn_json_get_i32(c, "head_dim", 1, M, 0, &hp->head_dim, label, err)) ||
        (st = kn_json_get_i32(c, "vocab_size", 1, M, 0, &hp->n_vocab, label, err)) ||
        (st = kn_json_get_i32(c, "max_position_embeddings", 1, M, 2048, &hp->n_ctx_train, label,
                              err)) ||
        (st = kn_json_get_f32(c, "rope_theta", 10000.0f, &hp->rope_theta, label, err)) ||
        (st = kn_json_get_f32(c, "rms_norm_eps", 1e-6f, &hp->rms_eps, label, err)))
        goto done;
    if (hp->n_layer <= 0 || hp->n_embd <= 0 || hp->n_ff <= 0 || hp->n_head <= 0 ||
        hp->n_vocab <= 0) {
        st = kn_fail(err, KILN_ERR_FORMAT, "%s: num_hidden_layers, hidden_size, "
                     "intermediate_size, num_attention_heads and vocab_size must be positive "
                     "integers", label);
        goto done;
    }
    if (hp->head_dim <= 0) {
        if (hp->n_embd % hp->n_head) {
            st = kn_fail(err, KILN_ERR_FORMAT, "%s: hidden_size %d is not a multiple of "
                         "num_attention_heads %d and no head_dim is given", label, hp->n_embd,
                         hp->n_head);
            goto done;
        }
        hp->head_dim = hp->n_embd / hp->n_head;
    }
    hp->rope_dim = hp->head_dim;
    const cJSON *prf = cJSON_GetObjectItemCaseSensitive(c, "partial_rotary_factor");
    if (prf) {
        /* transformers: rotary dimensions = int(head_dim * partial_rotary_factor) */
        if (!cJSON_IsNumber(prf) || !(prf->valuedouble > 0) || !(prf->valuedouble <= 1)) {
            st = kn_fail(err, KILN_ERR_FORMAT, "%s: partial_rotary_factor must be in (0, 1]",
                         label);
            goto done;
        }
        hp->rope_dim = (int)(hp->head_dim * prf->valuedouble);
    }
    if (ai->nope_step) {
        /* SmolLM3 lists the layers that rotate; llama.cpp (and so kiln) knows only the pattern
         * "every nope_step-th layer has none", so any other list is refused, not run wrong. */
        const cJSON *nl = cJSON_GetObjectItemCaseSensitive(c, "no_rope_layers");
        const cJSON *it;
        int l = 0;
        if (cJSON_IsArray(nl)) cJSON_ArrayForEach(it, nl) {
            bool rot = !(cJSON_IsNumber(it) && it->valuedouble == 0) && !cJSON_IsFalse(it);
            if (rot != ((l + 1) % ai->nope_step != 0)) {
                st = kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: no_rope_layers[%d] breaks the "
                             "pattern kiln runs (no RoPE in every layer l with (l + 1) %% %d == "
                             "0)", label, l, ai->nope_step);
                goto done;
            }
            l++;
        }
    }
    hp->tied_embeddings = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "tie_word_embeddings"));
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(c, "sliding_window");
    const cJSON *use_sw = cJSON_GetObjectItemCaseSensitive(c, "use_sliding_window");
    if (cJSON_IsNumber(sw) && !ai->ignore_sliding_window &&
        (ai->hf_sliding_window_always || cJSON_IsTrue(use_sw)) &&
        (st = kn_json_get_i32(c, "sliding_window", 0, M, 0, &hp->sliding_window, label, err)))
        goto done;
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(c, "rope_scaling");
    if (cJSON_IsObject(rs)) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
        if (!cJSON_IsString(ty)) ty = cJSON_GetObjectItemCaseSensitive(rs, "type");
        const char *t = cJSON_IsString(ty) ? ty->valuestring : "";
        if ((st = kn_json_get_f32(rs, "factor", 1.0f, &hp->rope_factor, label, err))) goto done;
        if (strcmp(t, "linear") == 0) {
            hp->rope_scaling = KN_ROPE_SCALING_LINEAR;
        } else if (strcmp(t, "llama3") == 0) {
            hp->rope_scaling = KN_ROPE_SCALING_LLAMA3;
            if ((st = kn_json_get_f32(rs, "low_freq_factor", 1.0f, &hp->rope_low_freq_factor,
                                      label, err)) ||
                (st = kn_json_get_f32(rs, "high_freq_factor", 4.0f, &hp->rope_high_freq_factor,
                                      label, err)) ||
                (st = kn_json_get_i32(rs, "original_max_position_embeddings", 1, M, 8192,
                                      &hp->rope_orig_ctx, label, err)))
                goto done;
        } else if (strcmp(t, "longrope") == 0 || strcmp(t, "su") == 0) {
            /* the factors themselves become tensors (add_longrope_factors) */
            hp->longrope = true;
            hp->rope_factor = 1.0f;
            const cJSON *o = cJSON_GetObjectItemCaseSensitive(rs, "original_max_position_embeddings");
            if ((st = kn_json_get_i32(o ? rs : c, "original_max_position_embeddings", 1, M, 0,
                                      &hp->rope_orig_ctx, label, err)))
                goto done;
            if (hp->rope_orig_ctx < 1) {
                st = kn_fail(err, KILN_ERR_FORMAT, "%s: LongRoPE needs "
                             "original_max_position_embeddings", label);
                goto done;
            }
            /* transformers' _compute_longrope_parameters (and llama.cpp's converter) */
            double scale = (double)hp->n_ctx_train / hp->rope_orig_ctx;
            float af = scale > 1.0 ? (float)sqrt(1.0 + log(scale) / log((double)hp->rope_orig_ctx))
                                   : 1.0f;
            if ((st = kn_json_get_f32(rs, "attention_factor", af, &hp->rope_attn_factor, label,
                                      err)))
                goto done;
        } else if (strcmp(t, "default") != 0 && t[0]) {
            st = kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: rope_scaling type '%s' is not supported "
                         "(linear, llama3, longrope)", label, t);
            goto done;
        }
    }
    if (ai->gemma && (st = gemma_from_hf_config(c, ai, hp, label, err))) goto done;
    if ((st = kn_json_get_i32(c, "bos_token_id", -1, M, -1, bos_id, label, err))) goto done;
    *eos_id = -1;
    if ((st = eos_id_of(c, label, eos_id, err))) goto done;
    st = kn_hparams_validate(hp, label, err);
done:
    cJSON_Delete(c);
    return st;
}

static kiln_status read_side_json(kn_source *s, const char *name, char **out, bool required,
                                  kiln_error *err) {
    char *p = kn_path_join(s->path, name);
    if (!p) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    kiln_status st = KILN_OK;
    if (!kn_is_file(p)) {
        if (required) st = kn_fail(err, KILN_ERR_IO, "%s: missing (a Hugging Face model folder "
                                   "needs config.json)", p);
        kn_free(p);
        return st;
    }
    size_t len = 0;
    st = kn_read_text(p, JSON_MAX, out, &len, err);
    if (!st) st = add_file(s, p, *out, len, err);
    if (!st) {
        cJSON *j = cJSON_ParseWithLength(*out, len);
        if (!j) st = kn_fail(err, KILN_ERR_FORMAT, "%s: not valid JSON", p);
        cJSON_Delete(j);
    }
    kn_free(p);
    return st;
}

static kiln_status open_shard(kn_source *s, const char *file, kiln_error *err) {
    if (strchr(file, '/') || strcmp(file, "..") == 0 || file[0] == 0)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: weight_map names '%s', not a file in the folder",
                       s->path, file);
    char *p = kn_path_join(s->path, file);
    if (!p) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    for (int i = 0; i < s->n_shards; i++)
        if (strcmp(s->shards[i]->path, p) == 0) {
            kn_free(p);
            return KILN_OK;
        }
    kn_safetensors **ns = kn_realloc(s->shards, (size_t)(s->n_shards + 1) * sizeof *ns);
    if (!ns) {
        kn_free(p);
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    s->shards = ns;
    kiln_status st = kn_safetensors_open(p, &s->shards[s->n_shards], err);
    kn_free(p);
    if (st) return st;
    kn_safetensors *sh = s->shards[s->n_shards++];
    return add_file(s, sh->path, sh->map.data, sh->map.size, err);
}

/* LongRoPE's long_factor / short_factor lists of config.json's rope_scaling, as the F32
 * tensors rope_factors_long.weight / rope_factors_short.weight llama.cpp's converter writes. */
static kiln_status add_longrope_factors(kn_source *s, kiln_error *err) {
    int n = s->hp.rope_dim / 2;
    cJSON *c = cJSON_Parse(s->config_json);
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(c, "rope_scaling");
    static const char *keys[2] = {"long_factor", "short_factor"};
    static const char *names[2] = {"rope_factors_long.weight", "rope_factors_short.weight"};
    kiln_status st = KILN_OK;
    if (!(s->synth = kn_malloc(sizeof(float) * 2 * (size_t)n)))
        st = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    for (int k = 0; k < 2 && !st; k++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(rs, keys[k]);
        if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n) {
            st = kn_fail(err, KILN_ERR_FORMAT, "%s/config.json: rope_scaling.%s must be a list "
                         "of %d numbers (rotary dimensions / 2)", s->path, keys[k], n);
            break;
        }
        float *f = s->synth + (size_t)k * (size_t)n;
        int i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, a) {
            if (!cJSON_IsNumber(it) || !(it->valuedouble > 0) || !isfinite(it->valuedouble) ||
                it->valuedouble > 1e30) {
                st = kn_fail(err, KILN_ERR_FORMAT, "%s/config.json: rope_scaling.%s[%d] is not a "
                             "positive number", s->path, keys[k], i);
                break;
            }
            f[i++] = (float)it->valuedouble;
        }
        kn_src_tensor t = {0};
        snprintf(t.name, sizeof t.name, "%s", names[k]);
        t.orig_name = keys[k];
        t.file = s->files[0].path; /* config.json, read first */
        t.type = KN_TYPE_F32;
        t.n_dims = 1;
        t.ne[0] = n, t.ne[1] = t.ne[2] = t.ne[3] = 1;
        t.data = (const uint8_t *)f;
        t.nbytes = sizeof(float) * (size_t)n;
        if (!st) st = add_tensor(s, &t, err);
    }
    cJSON_Delete(c);
    return st;
}

static kiln_status open_hf(kn_source *s, kiln_error *err) {
    s->kind = KN_SOURCE_HF;
    kiln_status st;
    if ((st = read_side_json(s, "config.json", &s->config_json, true, err)) ||
        (st = read_side_json(s, "tokenizer.json", &s->tokenizer_json, false, err)) ||
        (st = read_side_json(s, "tokenizer_config.json", &s->tokenizer_config_json, false, err)) ||
        (st = read_side_json(s, "generation_config.json", &s->generation_config_json, false,
                             err)))
        return st;
    char *cfg = kn_path_join(s->path, "config.json");
    st = kn_hparams_from_hf_config(s->config_json, cfg ? cfg : "config.json", &s->hp, &s->bos_id,
                                   &s->eos_id, err);
    kn_free(cfg);
    if (st) return st;
    if (s->generation_config_json) {
        /* the ids the model was trained to use win over config.json's */
        char *gl = kn_path_join(s->path, "generation_config.json");
        cJSON *g = cJSON_Parse(s->generation_config_json);
        int b = -1;
        st = gl ? kn_json_get_i32(g, "bos_token_id", -1, INT32_MAX, -1, &b, gl, err)
                : kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        if (!st && b >= 0) s->bos_id = b;
        if (!st) st = eos_id_of(g, gl, &s->eos_id, err);
        cJSON_Delete(g);
        kn_free(gl);
        if (st) return st;
    }

    char *single = kn_path_join(s->path, "model.safetensors");
    char *index = kn_path_join(s->path, "model.safetensors.index.json");
    if (!single || !index) st = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    else if (kn_is_file(single)) st = open_shard(s, "model.safetensors", err);
    else if (kn_is_file(index)) {
        char *txt = NULL;
        size_t len = 0;
        st = kn_read_text(index, JSON_MAX, &txt, &len, err);
        if (!st) st = add_file(s, index, txt, len, err);
        cJSON *j = st ? NULL : cJSON_ParseWithLength(txt, len);
        const cJSON *wm = j ? cJSON_GetObjectItemCaseSensitive(j, "weight_map") : NULL;
        if (!st && !cJSON_IsObject(wm))
            st = kn_fail(err, KILN_ERR_FORMAT, "%s: no weight_map object", index);
        for (const cJSON *it = wm ? wm->child : NULL; it && !st; it = it->next) {
            if (!cJSON_IsString(it))
                st = kn_fail(err, KILN_ERR_FORMAT, "%s: weight_map entry for %s is not a file "
                             "name", index, it->string);
            else
                st = open_shard(s, it->valuestring, err);
        }
        cJSON_Delete(j);
        kn_free(txt);
    } else {
        st = kn_fail(err, KILN_ERR_IO, "%s: no model.safetensors or model.safetensors.index.json",
                     s->path);
    }
    kn_free(single);
    kn_free(index);
    if (st) return st;

    bool has_lm_head = false;
    for (int i = 0; i < s->n_shards && !st; i++) {
        kn_safetensors *sh = s->shards[i];
        for (int k = 0; k < sh->n_tensors && !st; k++) {
            kn_st_tensor *x = &sh->tensors[k];
            kn_src_tensor t = {0};
            bool skip = false;
            kn_tensor_role role = KN_T_ROLE_COUNT;
            int layer = 0;
            kn_fused fk = kn_arch_get(s->hp.arch)->fused_qkv_gate_up
                              ? kn_tensor_fused_from_hf(x->name, &layer) : KN_FUSED_NONE;
            if (fk) snprintf(t.name, sizeof t.name, "%.95s", x->name);
            else if (!kn_tensor_from_hf_arch(kn_arch_get(s->hp.arch), x->name, t.name,
                                             sizeof t.name, &role, &skip))
                return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: unexpected tensor %s", sh->path,
                               x->name);
            if (skip) continue;
            if (role == KN_T_OUTPUT) {
                has_lm_head = true;
                if (s->hp.tied_embeddings) continue; /* tied: the classifier is token_embd */
            }
            if (x->n_dims < 1 || x->n_dims > 2)
                return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor %s has %d dimensions", sh->path,
                               x->name, x->n_dims);
            t.orig_name = x->name;
            t.file = sh->path;
            t.type = x->type;
            t.n_dims = (uint32_t)x->n_dims;
            t.ne[0] = t.ne[1] = t.ne[2] = t.ne[3] = 1;
            for (int d = 0; d < x->n_dims; d++) t.ne[d] = x->shape[x->n_dims - 1 - d];
            if (t.ne[0] == 0 || t.ne[1] == 0)
                return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor %s is empty", sh->path, x->name);
            t.data = x->data;
            t.nbytes = x->nbytes;
            if (fk) {
                st = add_split(s, &t, fk, layer, err);
                continue;
            }
            if (kn_arch_get(s->hp.arch)->hf_permute_qk && role == KN_T_ATTN_Q)
                t.permute_heads = s->hp.n_head;
            /* Gemma's RMSNorm multiplies by 1 + w; GGUF stores 1 + w (convert_hf_to_gguf.py
             * adds 1 to every "*norm.weight"), so the runtime's RMSNorm stays the plain one */
            t.plus_one = s->hp.gemma && !kn_tensor_role_is_matrix(role);
            if (kn_arch_get(s->hp.arch)->hf_permute_qk && role == KN_T_ATTN_K)
                t.permute_heads = s->hp.n_head_kv;
            st = add_tensor(s, &t, err);
        }
    }
    if (st) return st;
    if (s->hp.longrope && (st = add_longrope_factors(s, err))) return st;
    if (!has_lm_head) s->hp.tied_embeddings = true;
    const kn_src_tensor *emb = kn_source_find(s, "token_embd.weight");
    if (emb && emb->ne[1] != s->hp.n_vocab)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: embed_tokens has %lld rows, config.json "
                       "vocab_size is %d", emb->file, (long long)emb->ne[1], s->hp.n_vocab);
    const char *base = strrchr(s->path, '/');
    base = base && base[1] ? base + 1 : s->path;
    s->name = kn_strdup(base);
    return KILN_OK;
}

kiln_status kn_hf_cache_resolve(const char *id, char **dir, kiln_error *err) {
    *dir = NULL;
    const char *slash = strchr(id, '/');
    if (!slash || slash == id || !slash[1] || strchr(slash + 1, '/') || strstr(id, ".."))
        return kn_fail(err, KILN_ERR_INVALID_ARG, "%s: not a Hugging Face id (ORG/NAME)", id);
    char hub[1024];
    const char *e;
    if ((e = getenv("HF_HUB_CACHE")) && *e) snprintf(hub, sizeof hub, "%s", e);
    else if ((e = getenv("HUGGINGFACE_HUB_CACHE")) && *e) snprintf(hub, sizeof hub, "%s", e);
    else if ((e = getenv("HF_HOME")) && *e) snprintf(hub, sizeof hub, "%s/hub", e);
    else if ((e = getenv("HOME")) && *e) snprintf(hub, sizeof hub, "%s/.cache/huggingface/hub", e);
    else snprintf(hub, sizeof hub, ".cache/huggingface/hub");
    char model[1400];
    snprintf(model, sizeof model, "%s/models--%.*s--%s", hub, (int)(slash - id), id, slash + 1);
    char snaps[1500], rev[256] = {0};
    snprintf(snaps, sizeof snaps, "%s/snapshots", model);
    char refp[1500];
    snprintf(refp, sizeof refp, "%s/refs/main", model);
    FILE *f = fopen(refp, "r");
    if (f) {
        if (fgets(rev, sizeof rev, f)) rev[strcspn(rev, "\r\n")] = 0;
        fclose(f);
        if (strchr(rev, '/') || strstr(rev, "..")) rev[0] = 0;
    }
    if (!rev[0]) {
        /* No ref: take the most recently modified snapshot. */
        DIR *d = opendir(snaps);
        double best = -1;
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.') continue;
            char p[1800];
            struct stat st;
            snprintf(p, sizeof p, "%s/%s", snaps, de->d_name);
            if (stat(p, &st) == 0 && S_ISDIR(st.st_mode) && (double)st.st_mtime > best) {
                best = (double)st.st_mtime;
                snprintf(rev, sizeof rev, "%s", de->d_name);
            }
        }
        if (d) closedir(d);
    }
    char full[1800];
    snprintf(full, sizeof full, "%s/%s", snaps, rev);
    if (!rev[0] || !kn_is_dir(full))
        return kn_fail(err, KILN_ERR_IO,
                       "%s: not in the local Hugging Face cache (looked in %s/); kiln does not "
                       "download: fetch it first or pass a folder",
                       id, snaps);
    *dir = kn_strdup(full);
    return *dir ? KILN_OK : kn_fail(err, KILN_ERR_NOMEM, "out of memory");
}

kiln_status kn_source_open(const char *what, kn_source **out, kiln_error *err) {
    *out = NULL;
    kn_source *s = kn_calloc(1, sizeof *s);
    if (!s) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    s->bos_id = s->eos_id = -1;
    s->label = kn_strdup(what);
    kiln_status st = KILN_OK;
    if (!s->label) st = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    else if (kn_is_file(what)) {
        s->path = kn_strdup(what);
        st = s->path ? open_gguf(s, what, err) : kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    } else if (kn_is_dir(what)) {
        char *cfg = kn_path_join(what, "config.json");
        char *mg = kn_path_join(what, "model.gguf");
        char *man = kn_path_join(what, "manifest.json");
        if (!cfg || !mg || !man) st = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        else if (!kn_is_file(cfg) && !kn_is_file(mg) && kn_is_file(man))
            /* what is left of an offering, not a Hugging Face folder missing its config */
            st = kn_fail(err, KILN_ERR_FORMAT, "%s: an offering without its model.gguf (only "
                         "manifest.json is there): bake it again", what);
        else if (!kn_is_file(cfg) && kn_is_file(mg)) {
            s->path = kn_strdup(mg); /* an offering folder: its model.gguf */
            st = s->path ? open_gguf(s, mg, err) : kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        } else {
            s->path = kn_strdup(what);
            st = s->path ? open_hf(s, err) : kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        }
        kn_free(cfg);
        kn_free(mg);
        kn_free(man);
    } else if (strchr(what, '/') && what[0] != '/' && what[0] != '.' &&
               !strchr(strchr(what, '/') + 1, '/')) {
        st = kn_hf_cache_resolve(what, &s->path, err);
        if (!st) st = open_hf(s, err);
    } else {
        st = kn_fail(err, KILN_ERR_IO, "%s: no such file or directory", what);
    }
    if (!st) st = index_tensors(s, err);
    if (!st) st = check_schema(s, err);
    if (st) {
        kn_source_close(s);
        return st;
    }
    *out = s;
    return KILN_OK;
}

void kn_source_close(kn_source *s) {
    if (!s) return;
    kn_gguf_close(s->gguf);
    for (int i = 0; i < s->n_shards; i++) kn_safetensors_close(s->shards[i]);
    kn_free(s->shards);
    kn_free(s->tensors);
    kn_free(s->names);
    for (int i = 0; i < s->n_files; i++) kn_free(s->files[i].path);
    kn_free(s->files);
    kn_free(s->config_json);
    kn_free(s->tokenizer_json);
    kn_free(s->tokenizer_config_json);
    kn_free(s->generation_config_json);
    kn_free(s->synth);
    kn_free(s->name);
    kn_free(s->path);
    kn_free(s->label);
    kn_free(s);
}

/* Source row of output row r under llama.cpp's Q/K permutation (see kn_src_tensor). */
static int64_t perm_row(const kn_src_tensor *t, int64_t r) {
    if (!t->permute_heads) return r;
    int64_t per = t->ne[1] / t->permute_heads, half = per / 2;
    int64_t h = r / per, i = r % per;
    return h * per + (i % 2) * half + i / 2;
}

void kn_src_tensor_read_raw(const kn_src_tensor *t, uint8_t *dst) {
    if (!t->permute_heads) {
        memcpy(dst, t->data, t->nbytes);
        return;
    }
    int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
    uint64_t rb = t->nbytes / (uint64_t)rows;
    for (int64_t r = 0; r < rows; r++)
        memcpy(dst + (uint64_t)r * rb, t->data + (uint64_t)perm_row(t, r) * rb, rb);
}

bool kn_src_tensor_read_f32(const kn_src_tensor *t, int64_t row0, int64_t nrows, float *dst) {
    int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
    uint64_t rb = t->nbytes / (uint64_t)rows;
    for (int64_t r = 0; r < nrows; r++)
        if (!kn_dequantize(t->type, t->data + (uint64_t)perm_row(t, row0 + r) * rb,
                           dst + r * t->ne[0], t->ne[0]))
            return false;
    if (t->plus_one)
        for (int64_t i = 0; i < nrows * t->ne[0]; i++) dst[i] += 1.0f;
    return true;
}
