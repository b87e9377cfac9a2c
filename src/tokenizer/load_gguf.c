/* load_gguf.c — a kn_tokenizer from GGUF metadata (tokenizer.ggml.*), with llama.cpp's defaults
 * for what a file leaves out, or from an embedded tokenizer.huggingface.json. */
#include <string.h>

#include "base/limits.h"
#include "tokenizer/tok_impl.h"

kiln_status kn_tok_load_hf_from_gguf(const kn_gguf *g, kn_tokenizer **out, kiln_error *err);

static char *kn_str_dup(kn_str s) { return kn_strndup(s.ptr, (size_t)s.len); }

static int32_t get_id(const kn_gguf *g, const char *key, int32_t dflt) {
    uint32_t v;
    if (kn_gguf_get_u32(g, key, &v)) return v > INT32_MAX ? -1 : (int32_t)v;
    int64_t i;
    if (kn_gguf_get_i64(g, key, &i)) return i < 0 || i > INT32_MAX ? -1 : (int32_t)i;
    return dflt;
}

static kiln_status load_ggml(const kn_gguf *g, kn_str model, kn_str pre, kn_tokenizer *t,
                             kiln_error *err) {
    const char *label = g->path ? g->path : "gguf";
    kiln_status st;
    bool spm = kn_str_eq(model, "llama");
    t->model_name = kn_str_dup(model);
    t->pre_name = pre.ptr ? kn_str_dup(pre) : kn_strdup("default");
    if (!t->model_name || !t->pre_name) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");

    const kn_gguf_kv *toks = kn_gguf_get_arr(g, "tokenizer.ggml.tokens", KN_GGUF_STRING);
    if (!toks || !toks->strs)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: tokenizer.ggml.tokens is missing or not an "
                       "array of strings", label);
    if (toks->arr_n > KN_MAX_VOCAB)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu entries", label,
                       (unsigned long long)toks->arr_n);
    uint32_t n = (uint32_t)toks->arr_n;
    if ((st = kn_tok_set_texts(t, toks->strs, n, label, err)) != KILN_OK) return st;

    const kn_gguf_kv *sc = kn_gguf_find(g, "tokenizer.ggml.scores");
    if (sc) {
        if (sc->type != KN_GGUF_ARRAY ||
            (sc->arr_type != KN_GGUF_FLOAT32 && sc->arr_type != KN_GGUF_INT32))
            return kn_fail(err, KILN_ERR_FORMAT, "%s: tokenizer.ggml.scores is not an array of "
                           "f32", label);
        if (sc->arr_n < n)
            return kn_fail(err, KILN_ERR_FORMAT, "%s: tokenizer.ggml.scores has %llu entries for "
                           "%u tokens", label, (unsigned long long)sc->arr_n, n);
        for (uint32_t i = 0; i < n; i++) t->score[i] = (float)kn_gguf_arr_f64(sc, i);
    } else if (spm) {
        return kn_fail(err, KILN_ERR_FORMAT, "%s: tokenizer.ggml.scores is missing (needed by a "
                       "SentencePiece vocabulary)", label);
    }
    const kn_gguf_kv *ty = kn_gguf_find(g, "tokenizer.ggml.token_type");
    if (ty) {
        if (ty->type != KN_GGUF_ARRAY || (ty->arr_type != KN_GGUF_INT32 &&
                                          ty->arr_type != KN_GGUF_UINT32))
            return kn_fail(err, KILN_ERR_FORMAT, "%s: tokenizer.ggml.token_type is not an array "
                           "of i32", label);
        if (ty->arr_n < n)
            return kn_fail(err, KILN_ERR_FORMAT, "%s: tokenizer.ggml.token_type has %llu entries "
                           "for %u tokens", label, (unsigned long long)ty->arr_n, n);
        for (uint32_t i = 0; i < n; i++) {
            int64_t v = kn_gguf_arr_i64(ty, i);
            t->type[i] = (uint8_t)(v >= 0 && v <= 6 ? v : KN_TOKTYPE_UNDEFINED);
        }
    }

    const kn_gguf_kv *mg = kn_gguf_find(g, "tokenizer.ggml.merges");
    if (mg && (mg->type != KN_GGUF_ARRAY || mg->arr_type != KN_GGUF_STRING || !mg->strs))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: tokenizer.ggml.merges is not an array of "
                       "strings", label);
    if (!spm && !mg)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: tokenizer.ggml.merges is missing (needed by a "
                       "BPE vocabulary)", label);
    /* The index must exist before merges are resolved to ids. */
    t->byte_level = !spm;
    t->model = (spm && !mg) ? KN_TOKMODEL_SPM : KN_TOKMODEL_BPE;
    if ((st = kn_tok_finish(t, label, err)) != KILN_OK) return st;
    if (mg) {
        if ((st = kn_tok_merges_alloc(t, mg->arr_n, err)) != KILN_OK) return st;
        for (uint64_t i = 0; i < mg->arr_n; i++) {
            kn_str m = mg->strs[i];
            const char *sp = m.len > 1 ? memchr(m.ptr + 1, ' ', (size_t)m.len - 1) : NULL;
            if (!sp)
                return kn_fail(err, KILN_ERR_FORMAT, "%s: tokenizer.ggml.merges[%llu] is not "
                               "two tokens separated by a space", label, (unsigned long long)i);
            size_t na = (size_t)(sp - m.ptr);
            /* merges naming texts that are not tokens are skipped, as llama.cpp would never
             * produce them either */
            kn_tok_add_merge(t, m.ptr, na, sp + 1, (size_t)m.len - na - 1, (int32_t)i);
        }
    }

    bool llama3 = false;
    if (spm) {
        t->bos = 1;
        t->eos = 2;
        t->unk = 0;
        t->add_bos = true;
        t->add_space_prefix = true;
        t->byte_fallback = true;
    } else {
        /* llama.cpp's defaults for BPE vocabularies; files normally set them */
        t->bos = 11;
        t->eos = 11;
        if ((st = kn_tok_set_pre(t, t->pre_name, err)) != KILN_OK)
            return kn_fail_prefix(err, "%s: ", label);
        llama3 = t->ignore_merges;
        t->add_bos = llama3;
    }
    t->bos = get_id(g, "tokenizer.ggml.bos_token_id", t->bos);
    t->eos = get_id(g, "tokenizer.ggml.eos_token_id", t->eos);
    t->unk = get_id(g, "tokenizer.ggml.unknown_token_id", t->unk);
    t->pad = get_id(g, "tokenizer.ggml.padding_token_id", -1);
    t->eot = get_id(g, "tokenizer.ggml.eot_token_id", -1);
    bool b;
    if (kn_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b)) t->add_bos = b;
    if (kn_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &b)) t->add_eos = b;
    if (kn_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &b)) t->add_space_prefix = b;

    if (spm) {
        if (t->add_space_prefix &&
            (st = kn_tok_add_norm(t, KN_NORM_PREPEND, " ", NULL, err)) != KILN_OK)
            return st;
        if ((st = kn_tok_add_norm(t, KN_NORM_REPLACE, " ", "\xE2\x96\x81", err)) != KILN_OK)
            return st;
        t->dec_metaspace = true;
        t->dec_byte_fallback = true;
        t->dec_strip_lead = t->add_space_prefix ? 1 : 0;
        /* The byte tokens of a merge-based SPM vocabulary (written by kiln from an HF folder) */
        for (uint32_t i = 0; i < n; i++) {
            size_t l;
            const char *s = kn_tokenizer_token_text(t, (int32_t)i, &l);
            if (t->type[i] == KN_TOKTYPE_NORMAL && l == 6 && memcmp(s, "<0x", 3) == 0 &&
                s[5] == '>')
                t->type[i] = KN_TOKTYPE_BYTE;
        }
    } else {
        t->dec_byte_level = true;
    }
    if ((st = kn_tok_read_kiln_keys(t, g, err)) != KILN_OK) return st;
    kn_str ct;
    if (kn_gguf_get_str(g, "tokenizer.chat_template", &ct) && !(t->chat_template = kn_str_dup(ct)))
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    /* special ids are final now: rebuild the special list and end-of-generation flags */
    return kn_tok_finish(t, label, err);
}

kiln_status kn_tokenizer_load_gguf(const kn_gguf *g, kn_tokenizer **out, kiln_error *err) {
    *out = NULL;
    const char *label = g->path ? g->path : "gguf";
    kn_str model = {0}, pre = {0};
    bool has_model = kn_gguf_get_str(g, "tokenizer.ggml.model", &model);
    kn_gguf_get_str(g, "tokenizer.ggml.pre", &pre);
    bool has_hf = kn_gguf_find(g, "tokenizer.huggingface.json") != NULL;
    bool usable = has_model && (kn_str_eq(model, "llama") || kn_str_eq(model, "gpt2"));
    if (usable && kn_str_eq(model, "gpt2") && pre.ptr) {
        char name[128];
        size_t l = pre.len < sizeof name - 1 ? (size_t)pre.len : sizeof name - 1;
        memcpy(name, pre.ptr, l);
        name[l] = 0;
        if (!kn_tok_pre_known(name)) {
            if (!has_hf)
                return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: unknown pre-tokenizer '%s' "
                               "(tokenizer.ggml.pre)", label, name);
            usable = false;
        }
    }
    if (!usable) {
        if (has_hf) return kn_tok_load_hf_from_gguf(g, out, err);
        if (!has_model)
            return kn_fail(err, KILN_ERR_FORMAT, "%s: no tokenizer (tokenizer.ggml.model is "
                           "missing)", label);
        return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: tokenizer model '%.*s' is not supported "
                       "(kiln reads 'llama' SentencePiece and 'gpt2' byte-level BPE)", label,
                       (int)(model.len > 64 ? 64 : model.len), model.ptr);
    }
    kn_tokenizer *t = kn_tok_new();
    if (!t) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    kiln_status st = load_ggml(g, model, pre, t, err);
    if (st != KILN_OK) {
        kn_tokenizer_free(t);
        return st;
    }
    *out = t;
    return KILN_OK;
}

bool kn_gguf_has_tokenizer(const kn_gguf *g) {
    return kn_gguf_find(g, "tokenizer.ggml.model") || kn_gguf_find(g, "tokenizer.huggingface.json");
}

kiln_status kn_tokenizer_check_model(const kn_tokenizer *t, const kn_gguf *g, int64_t n_rows,
                                     kiln_error *err) {
    const char *label = g->path ? g->path : "gguf";
    uint32_t n = t->n_vocab;
    if ((int64_t)n != n_rows)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: the tokenizer has %u tokens and "
                       "token_embd.weight %lld rows: a model and its tokenizer must agree", label,
                       n, (long long)n_rows);
    static const char *const keys[] = {
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (!kn_gguf_find(g, keys[i])) continue;
        int64_t id;
        /* -1, or 0xFFFFFFFF as llama.cpp's converters write it, means "none" */
        if (kn_gguf_get_i64(g, keys[i], &id) && (id == -1 || id == (int64_t)UINT32_MAX)) continue;
        if (!kn_gguf_get_i64(g, keys[i], &id) || id < 0 || id >= (int64_t)n)
            return kn_fail(err, KILN_ERR_FORMAT, "%s: %s is not a token id of the vocabulary "
                           "(%u tokens)", label, keys[i], n);
    }
    if (t->add_bos && t->bos < 0)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: the tokenizer adds a BOS token it does not have",
                       label);
    return KILN_OK;
}

kiln_status kn_tokenizer_check_gguf(const kn_gguf *g, int64_t n_rows, kiln_error *err) {
    kn_tokenizer *t = NULL;
    kiln_status st = kn_tokenizer_load_gguf(g, &t, err);
    if (!st) st = kn_tokenizer_check_model(t, g, n_rows, err);
    kn_tokenizer_free(t);
    return st;
}
