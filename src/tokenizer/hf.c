/* hf.c — a kn_tokenizer from a Hugging Face tokenizer.json (+ tokenizer_config.json).
 *
 * Supported: model BPE (with or without byte_fallback, ignore_merges, fuse_unk, unk_token);
 * normalizers Sequence, Prepend, Replace (string pattern), NFC, NFKC, Lowercase; pre-tokenizers
 * Sequence, Split (regex or string; every behavior; invert), ByteLevel, Digits, Metaspace,
 * Punctuation, Whitespace, WhitespaceSplit; decoders ByteLevel, ByteFallback, Fuse, Strip,
 * Replace, Metaspace; added_tokens (special -> control, others -> user-defined, lstrip/rstrip).
 * Anything else is KILN_ERR_UNSUPPORTED naming the component, never a silent approximation.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "base/limits.h"
#include "formats/json.h"
#include "tokenizer/tok_impl.h"

kiln_status kn_tok_load_hf_from_gguf(const kn_gguf *g, kn_tokenizer **out, kiln_error *err);

#define RX_GPT2_HF "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define META "\xE2\x96\x81"

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool jbool(const cJSON *o, const char *key, bool dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return dflt;
}

/* A tokenizer_config.json special token: "text" or {"content": "text", ...}. */
static const char *special_text(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) return jstr(v, "content");
    return NULL;
}

/* Escapes a literal for PCRE2 (\Q..\E cannot hold "\E", so escape per character). */
static char *regex_literal(const char *s) {
    size_t n = strlen(s);
    char *o = kn_malloc(n * 2 + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80 && strchr("\\^$.|?*+()[]{}-/#", c)) o[k++] = '\\';
        o[k++] = (char)c;
    }
    o[k] = 0;
    return o;
}

static kiln_status add_norm(kn_tokenizer *t, const cJSON *n, const char *label, kiln_error *err) {
    if (!n || cJSON_IsNull(n)) return KILN_OK;
    const char *type = jstr(n, "type");
    if (!type) return kn_fail(err, KILN_ERR_FORMAT, "%s: normalizer without a type", label);
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        const cJSON *it;
        cJSON_ArrayForEach(it, arr) {
            kiln_status st = add_norm(t, it, label, err);
            if (st != KILN_OK) return st;
        }
        return KILN_OK;
    }
    if (!strcmp(type, "NFC")) return kn_tok_add_norm(t, KN_NORM_NFC, NULL, NULL, err);
    if (!strcmp(type, "NFKC")) return kn_tok_add_norm(t, KN_NORM_NFKC, NULL, NULL, err);
    if (!strcmp(type, "Lowercase")) return kn_tok_add_norm(t, KN_NORM_LOWERCASE, NULL, NULL, err);
    if (!strcmp(type, "Prepend")) {
        const char *p = jstr(n, "prepend");
        if (!p) return kn_fail(err, KILN_ERR_FORMAT, "%s: Prepend normalizer without text", label);
        return kn_tok_add_norm(t, KN_NORM_PREPEND, p, NULL, err);
    }
    if (!strcmp(type, "Replace")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const char *s = jstr(pat, "String"), *c = jstr(n, "content");
        if (!s || !c)
            return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: Replace normalizer with a regex "
                           "pattern is not supported", label);
        return kn_tok_add_norm(t, KN_NORM_REPLACE, s, c, err);
    }
    return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: normalizer '%s' is not supported", label, type);
}

static kn_split_behavior behavior_of(const char *b) {
    if (!b) return KN_SPLIT_ISOLATED;
    if (!strcmp(b, "Removed")) return KN_SPLIT_REMOVED;
    if (!strcmp(b, "MergedWithPrevious")) return KN_SPLIT_MERGED_PREV;
    if (!strcmp(b, "MergedWithNext")) return KN_SPLIT_MERGED_NEXT;
    if (!strcmp(b, "Contiguous")) return KN_SPLIT_CONTIGUOUS;
    return KN_SPLIT_ISOLATED;
}

static kiln_status add_pre(kn_tokenizer *t, const cJSON *p, const char *label, kiln_error *err) {
    if (!p || cJSON_IsNull(p)) return KILN_OK;
    const char *type = jstr(p, "type");
    if (!type) return kn_fail(err, KILN_ERR_FORMAT, "%s: pre_tokenizer without a type", label);
    kiln_status st = KILN_OK;
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        const cJSON *it;
        cJSON_ArrayForEach(it, arr) {
            if ((st = add_pre(t, it, label, err)) != KILN_OK) return st;
        }
        return KILN_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        t->byte_level = true;
        if (jbool(p, "add_prefix_space", false) &&
            (st = kn_tok_add_norm(t, KN_NORM_PREPEND_IF_NOT, " ", NULL, err)) != KILN_OK)
            return st;
        if (jbool(p, "use_regex", true))
            return kn_tok_add_split(t, RX_GPT2_HF, KN_SPLIT_ISOLATED, false, err);
        return KILN_OK;
    }
    if (!strcmp(type, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const char *rx = jstr(pat, "Regex"), *lit = jstr(pat, "String");
        kn_split_behavior b = behavior_of(jstr(p, "behavior"));
        bool inv = jbool(p, "invert", false);
        if (rx) return kn_tok_add_split(t, rx, b, inv, err);
        if (lit) {
            char *e = regex_literal(lit);
            if (!e) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
            st = kn_tok_add_split(t, e, b, inv, err);
            kn_free(e);
            return st;
        }
        return kn_fail(err, KILN_ERR_FORMAT, "%s: Split pre-tokenizer without a pattern", label);
    }
    if (!strcmp(type, "Digits"))
        return kn_tok_add_split(t, jbool(p, "individual_digits", false) ? "\\p{N}" : "\\p{N}+",
                                KN_SPLIT_ISOLATED, false, err);
    if (!strcmp(type, "Punctuation"))
        return kn_tok_add_split(t, "[\\p{P}!-/:-@\\[-`{-~]", behavior_of(jstr(p, "behavior")),
                                false, err);
    if (!strcmp(type, "Whitespace"))
        return kn_tok_add_split(t, "\\w+|[^\\w\\s]+", KN_SPLIT_REMOVED, true, err);
    if (!strcmp(type, "WhitespaceSplit"))
        return kn_tok_add_split(t, "\\s+", KN_SPLIT_REMOVED, false, err);
    if (!strcmp(type, "Metaspace")) {
        const char *rep = jstr(p, "replacement");
        if (!rep) rep = META;
        const char *scheme = jstr(p, "prepend_scheme");
        bool add = jbool(p, "add_prefix_space", true);
        if (!scheme) scheme = add ? "always" : "never";
        if ((st = kn_tok_add_norm(t, KN_NORM_REPLACE, " ", rep, err)) != KILN_OK) return st;
        if (!strcmp(scheme, "always"))
            st = kn_tok_add_norm(t, KN_NORM_PREPEND_IF_NOT, rep, NULL, err);
        else if (!strcmp(scheme, "first"))
            st = kn_tok_add_norm(t, KN_NORM_PREPEND_FIRST_IF_NOT, rep, NULL, err);
        if (st != KILN_OK) return st;
        if (jbool(p, "split", true)) {
            char *e = regex_literal(rep);
            if (!e) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
            st = kn_tok_add_split(t, e, KN_SPLIT_MERGED_NEXT, false, err);
            kn_free(e);
        }
        return st;
    }
    return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: pre_tokenizer '%s' is not supported", label,
                   type);
}

static void set_decoder(kn_tokenizer *t, const cJSON *d) {
    if (!d || cJSON_IsNull(d)) return;
    const char *type = jstr(d, "type");
    if (!type) return;
    if (!strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(d, "decoders")) set_decoder(t, it);
    } else if (!strcmp(type, "ByteLevel")) {
        t->dec_byte_level = true;
    } else if (!strcmp(type, "ByteFallback")) {
        t->dec_byte_fallback = true;
    } else if (!strcmp(type, "Replace")) {
        const char *s = jstr(cJSON_GetObjectItemCaseSensitive(d, "pattern"), "String");
        const char *c = jstr(d, "content");
        if (s && c && !strcmp(s, META) && !strcmp(c, " ")) t->dec_metaspace = true;
    } else if (!strcmp(type, "Strip")) {
        const char *c = jstr(d, "content");
        int64_t start;
        if (c && !strcmp(c, " ") &&
            kn_json_i64(cJSON_GetObjectItemCaseSensitive(d, "start"), 0, 15, &start))
            t->dec_strip_lead = (int)start;
    } else if (!strcmp(type, "Metaspace")) {
        t->dec_metaspace = true;
        const char *scheme = jstr(d, "prepend_scheme");
        bool add = jbool(d, "add_prefix_space", true);
        if (scheme ? strcmp(scheme, "never") != 0 : add) t->dec_strip_lead = 1;
    }
}

static int32_t find_z(const kn_tokenizer *t, const char *s) {
    return s ? kn_tokenizer_find(t, s, strlen(s)) : -1;
}

static kiln_status load_json(kn_tokenizer *t, const cJSON *root, const cJSON *cfg,
                             const char *label, kiln_error *err) {
    kiln_status st;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char *mtype = jstr(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!mtype && cJSON_IsObject(vocab) && cJSON_GetObjectItemCaseSensitive(model, "merges"))
        mtype = "BPE";
    if (!mtype) return kn_fail(err, KILN_ERR_FORMAT, "%s: no model in tokenizer.json", label);
    if (strcmp(mtype, "BPE") != 0)
        return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: tokenizer model '%s' is not supported "
                       "(kiln reads BPE)", label, mtype);
    if (!cJSON_IsObject(vocab))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: model.vocab is not an object", label);
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");

    /* The tables are sized by the largest id, so ids must be (nearly) dense: the largest may
     * not exceed the number of entries given (vocab + added tokens), or one entry
     * "zz": 67108864 in an 11 KB file would cost 660 MB. */
    int64_t maxid = -1, entries = 0, v;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!kn_json_i64(it, 0, KN_MAX_VOCAB - 1, &v))
            return kn_fail(err, KILN_ERR_FORMAT, "%s: vocab entry '%.60s' has a bad id (not an "
                           "integer in [0, %d])", label, it->string ? it->string : "?",
                           KN_MAX_VOCAB - 1);
        if (v > maxid) maxid = v;
        entries++;
    }
    cJSON_ArrayForEach(it, added) {
        if (!kn_json_i64(cJSON_GetObjectItemCaseSensitive(it, "id"), 0, KN_MAX_VOCAB - 1, &v) ||
            !jstr(it, "content"))
            return kn_fail(err, KILN_ERR_FORMAT, "%s: an added token has a bad id or content",
                           label);
        if (v > maxid) maxid = v;
        entries++;
    }
    if (maxid < 0) return kn_fail(err, KILN_ERR_FORMAT, "%s: the vocabulary is empty", label);
    if (maxid >= entries)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: token id %lld is beyond the %lld entries of the "
                       "vocabulary (ids must be dense)", label, (long long)maxid,
                       (long long)entries);
    uint32_t n = (uint32_t)maxid + 1;
    kn_str *texts = kn_calloc(n, sizeof *texts);
    if (!texts) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    cJSON_ArrayForEach(it, vocab) {
        uint32_t i = (uint32_t)it->valuedouble; /* checked above */
        texts[i] = (kn_str){it->string, strlen(it->string)};
    }
    cJSON_ArrayForEach(it, added) {
        uint32_t i = (uint32_t)cJSON_GetObjectItemCaseSensitive(it, "id")->valuedouble;
        const char *c = jstr(it, "content");
        texts[i] = (kn_str){c, strlen(c)};
    }
    st = kn_tok_set_texts(t, texts, n, label, err);
    kn_free(texts);
    if (st != KILN_OK) return st;
    for (uint32_t i = 0; i < n; i++)
        if (t->off[i + 1] == t->off[i]) t->type[i] = KN_TOKTYPE_UNUSED;
    bool any_strip = false;
    cJSON_ArrayForEach(it, added) {
        any_strip |= jbool(it, "lstrip", false) || jbool(it, "rstrip", false);
    }
    if (any_strip) {
        t->lstrip = kn_calloc(n, sizeof *t->lstrip);
        t->rstrip = kn_calloc(n, sizeof *t->rstrip);
        if (!t->lstrip || !t->rstrip) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    cJSON_ArrayForEach(it, added) {
        uint32_t id = (uint32_t)cJSON_GetObjectItemCaseSensitive(it, "id")->valuedouble;
        t->type[id] = jbool(it, "special", false) ? KN_TOKTYPE_CONTROL : KN_TOKTYPE_USER_DEFINED;
        if (any_strip) {
            t->lstrip[id] = jbool(it, "lstrip", false);
            t->rstrip[id] = jbool(it, "rstrip", false);
        }
    }

    t->model = KN_TOKMODEL_BPE;
    t->byte_fallback = jbool(model, "byte_fallback", false);
    t->ignore_merges = jbool(model, "ignore_merges", false);
    t->fuse_unk = jbool(model, "fuse_unk", false);
    if ((st = add_norm(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), label, err)) !=
        KILN_OK)
        return st;
    if ((st = add_pre(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), label, err)) !=
        KILN_OK)
        return st;
    set_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder"));
    if (!t->byte_level && t->dec_byte_level) t->byte_level = true;
    if ((st = kn_tok_finish(t, label, err)) != KILN_OK) return st;

    if (t->byte_fallback)
        for (int b = 0; b < 256; b++)
            if (t->byte_id[b] >= 0 && t->type[t->byte_id[b]] == KN_TOKTYPE_NORMAL)
                t->type[t->byte_id[b]] = KN_TOKTYPE_BYTE;

    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    int nm = cJSON_GetArraySize(merges);
    if ((st = kn_tok_merges_alloc(t, (uint64_t)(nm > 0 ? nm : 0), err)) != KILN_OK) return st;
    int32_t rank = 0;
    cJSON_ArrayForEach(it, merges) {
        const char *a, *b;
        size_t na, nb;
        if (cJSON_IsString(it)) {
            const char *s = it->valuestring;
            const char *sp = s[0] ? strchr(s + 1, ' ') : NULL;
            if (!sp)
                return kn_fail(err, KILN_ERR_FORMAT, "%s: merge %d ('%.40s') is not two tokens "
                               "separated by a space", label, (int)rank, s);
            a = s;
            na = (size_t)(sp - s);
            b = sp + 1;
            nb = strlen(b);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            a = cJSON_GetArrayItem(it, 0)->valuestring;
            b = cJSON_GetArrayItem(it, 1)->valuestring;
            na = strlen(a);
            nb = strlen(b);
        } else {
            return kn_fail(err, KILN_ERR_FORMAT, "%s: merge %d is neither \"a b\" nor [a, b]",
                           label, (int)rank);
        }
        /* HF rejects merges of unknown tokens; kiln skips them (documented), like llama.cpp */
        kn_tok_add_merge(t, a, na, b, nb, rank);
        rank++;
    }

    /* special tokens: tokenizer_config.json first, then the model and post-processor */
    t->unk = find_z(t, jstr(model, "unk_token"));
    t->add_bos = false;
    const cJSON *post = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(post, "single");
    if (cJSON_IsArray(single)) {
        const cJSON *first = cJSON_GetArrayItem(single, 0);
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(first, "SpecialToken");
        if (sp) {
            t->bos = find_z(t, jstr(sp, "id"));
            t->add_bos = t->bos >= 0;
        }
        const cJSON *last = cJSON_GetArrayItem(single, cJSON_GetArraySize(single) - 1);
        const cJSON *sl = cJSON_GetObjectItemCaseSensitive(last, "SpecialToken");
        if (sl && cJSON_GetArraySize(single) > 1) {
            t->eos = find_z(t, jstr(sl, "id"));
            t->add_eos = t->eos >= 0;
        }
    }
    if (cfg) {
        int32_t id;
        if ((id = find_z(t, special_text(cfg, "bos_token"))) >= 0) t->bos = id;
        if ((id = find_z(t, special_text(cfg, "eos_token"))) >= 0) t->eos = id;
        if ((id = find_z(t, special_text(cfg, "unk_token"))) >= 0) t->unk = id;
        if ((id = find_z(t, special_text(cfg, "pad_token"))) >= 0) t->pad = id;
        const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
        if (cJSON_IsBool(ab)) t->add_bos = cJSON_IsTrue(ab) && t->bos >= 0;
        const cJSON *ae = cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token");
        if (cJSON_IsBool(ae)) t->add_eos = cJSON_IsTrue(ae) && t->eos >= 0;
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
        const char *tmpl = NULL;
        if (cJSON_IsString(ct)) {
            tmpl = ct->valuestring;
        } else if (cJSON_IsArray(ct)) {
            cJSON_ArrayForEach(it, ct) {
                const char *nm2 = jstr(it, "name");
                if (nm2 && !strcmp(nm2, "default")) tmpl = jstr(it, "template");
            }
        }
        if (tmpl && !(t->chat_template = kn_strdup(tmpl)))
            return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    /* a model without a Prepend/Metaspace never had a dummy prefix */
    for (size_t i = 0; i < t->n_norm; i++)
        if (t->norm[i].kind <= KN_NORM_PREPEND_FIRST_IF_NOT) t->add_space_prefix = true;
    t->model_name = kn_strdup(t->byte_level ? "gpt2" : "llama");
    if (!t->model_name) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    const char *pre = t->byte_level ? kn_tok_pre_from_splits(t) : "default";
    t->pre_name = kn_strdup(pre ? pre : "default");
    if (!t->pre_name) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    return kn_tok_finish(t, label, err);
}

kiln_status kn_tokenizer_load_hf_json(const char *json, size_t json_len, const char *config_json,
                                      size_t config_len, const char *label, kn_tokenizer **out,
                                      kiln_error *err) {
    *out = NULL;
    if (!label) label = "tokenizer.json";
    cJSON *root = cJSON_ParseWithLength(json, json_len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return kn_fail(err, KILN_ERR_FORMAT, "%s: not valid JSON", label);
    }
    cJSON *cfg = NULL;
    if (config_json) {
        cfg = cJSON_ParseWithLength(config_json, config_len);
        if (!cfg || !cJSON_IsObject(cfg)) {
            cJSON_Delete(cfg);
            cJSON_Delete(root);
            return kn_fail(err, KILN_ERR_FORMAT, "%s: tokenizer_config.json is not valid JSON",
                           label);
        }
    }
    kn_tokenizer *t = kn_tok_new();
    kiln_status st = t ? load_json(t, root, cfg, label, err)
                       : kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    if (st != KILN_OK) {
        kn_tokenizer_free(t);
        return st;
    }
    *out = t;
    return KILN_OK;
}

kiln_status kn_tokenizer_load_hf_dir(const char *dir, kn_tokenizer **out, kiln_error *err) {
    *out = NULL;
    char *tp = kn_path_join(dir, "tokenizer.json");
    char *cp = kn_path_join(dir, "tokenizer_config.json");
    char *tj = NULL, *cj = NULL;
    size_t tl = 0, cl = 0;
    kiln_status st;
    if (!tp || !cp) {
        st = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (!kn_is_file(tp)) {
        st = kn_fail(err, KILN_ERR_IO, "%s: no tokenizer.json in this folder", dir);
        goto done;
    }
    if ((st = kn_read_text(tp, KN_MAX_JSON_BYTES, &tj, &tl, err)) != KILN_OK) goto done;
    if (kn_is_file(cp) && (st = kn_read_text(cp, KN_MAX_JSON_BYTES, &cj, &cl, err)) != KILN_OK)
        goto done;
    st = kn_tokenizer_load_hf_json(tj, tl, cj, cl, tp, out, err);
done:
    kn_free(tp);
    kn_free(cp);
    kn_free(tj);
    kn_free(cj);
    return st;
}

kiln_status kn_tok_load_hf_from_gguf(const kn_gguf *g, kn_tokenizer **out, kiln_error *err) {
    kn_str js;
    if (!kn_gguf_get_str(g, "tokenizer.huggingface.json", &js))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: tokenizer.huggingface.json is not a string",
                       g->path ? g->path : "gguf");
    kiln_status st = kn_tokenizer_load_hf_json(js.ptr, (size_t)js.len, NULL, 0,
                                               g->path ? g->path : "gguf", out, err);
    if (st != KILN_OK) return st;
    /* the GGUF's own metadata states BOS/EOS and the template when the JSON cannot */
    kn_tokenizer *t = *out;
    uint32_t v;
    if (kn_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &v) && v < t->n_vocab) t->bos = (int32_t)v;
    if (kn_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &v) && v < t->n_vocab) t->eos = (int32_t)v;
    if (kn_gguf_get_u32(g, "tokenizer.ggml.padding_token_id", &v) && v < t->n_vocab) t->pad = (int32_t)v;
    bool b;
    if (kn_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b)) t->add_bos = b && t->bos >= 0;
    kn_str ct;
    if (!t->chat_template && kn_gguf_get_str(g, "tokenizer.chat_template", &ct) &&
        !(t->chat_template = kn_strndup(ct.ptr, (size_t)ct.len))) {
        kn_tokenizer_free(t);
        *out = NULL;
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    return kn_tok_finish(t, g->path ? g->path : "gguf", err);
}
