/* write_gguf.c — a kn_tokenizer into GGUF metadata: llama.cpp's tokenizer.ggml.* keys (so
 * llama.cpp reads the offering) plus tokenizer.kiln.* keys that carry what those cannot say (a
 * regex chain llama.cpp has no name for, normalizer steps, merge-based byte-fallback BPE), so
 * kiln reads back a tokenizer that encodes identically. */
#include <stdio.h>
#include <string.h>

#include "tokenizer/tok_impl.h"

static kn_str str_of(const kn_tokenizer *t, int32_t id) {
    size_t n;
    const char *s = kn_tokenizer_token_text(t, id, &n);
    return (kn_str){s, n};
}

kiln_status kn_tokenizer_write_gguf(const kn_tokenizer *t, uint32_t n_rows, kn_gguf_writer *w,
                                    kiln_error *err) {
    uint32_t n = n_rows > t->n_vocab ? n_rows : t->n_vocab;
    bool spm_style = !t->byte_level;
    kn_str *toks = kn_calloc(n, sizeof *toks);
    char *pads = kn_malloc((size_t)n * 20 + 1);
    float *scores = kn_malloc((size_t)n * sizeof *scores);
    int32_t *types = kn_malloc((size_t)n * sizeof *types);
    kn_str *merges = NULL;
    char *mtext = NULL;
    kiln_status st = KILN_OK;
    if (!toks || !pads || !scores || !types) goto oom;
    size_t po = 0;
    for (uint32_t i = 0; i < n; i++) {
        bool real = i < t->n_vocab; /* past it: padding up to the embedding rows */
        toks[i] = real ? str_of(t, (int32_t)i) : (kn_str){"", 0};
        types[i] = real ? t->type[i] : KN_TOKTYPE_UNUSED;
        scores[i] = real ? t->score[i] : 0.0f;
        /* GGUF vocabularies have no holes: llama.cpp's converter names unused ids [PADn] */
        if (toks[i].len == 0) {
            int k = snprintf(pads + po, 20, "[PAD%u]", i);
            toks[i] = (kn_str){pads + po, (uint64_t)k};
            po += (size_t)k;
            types[i] = KN_TOKTYPE_UNUSED;
        }
    }
    if (t->model == KN_TOKMODEL_BPE && spm_style) {
        /* llama.cpp's SPM merges by score: rank the tokens by the merge that makes them */
        for (uint32_t i = 0; i < n; i++) scores[i] = -1e9f;
        for (uint64_t r = 0; r < t->n_merges; r++) {
            int32_t mid = -1;
            kn_tok_merge_rank(t, t->merge_list[2 * r], t->merge_list[2 * r + 1], &mid);
            if (mid >= 0 && scores[mid] == -1e9f) scores[mid] = -(float)r;
        }
        for (uint32_t i = 0; i < n; i++)
            if (scores[i] == -1e9f) scores[i] = types[i] == KN_TOKTYPE_NORMAL ? 0.0f : -1e9f;
    }
    kn_gguf_set_str(w, "tokenizer.ggml.model", spm_style ? "llama" : "gpt2");
    kn_gguf_set_str(w, "tokenizer.ggml.pre", kn_tokenizer_pre_name(t));
    kn_gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, n);
    if (spm_style) kn_gguf_set_arr(w, "tokenizer.ggml.scores", KN_GGUF_FLOAT32, scores, n);
    else kn_gguf_remove(w, "tokenizer.ggml.scores");
    kn_gguf_set_arr(w, "tokenizer.ggml.token_type", KN_GGUF_INT32, types, n);
    if (t->n_merges) {
        merges = kn_malloc(t->n_merges * sizeof *merges);
        uint64_t total = 0;
        for (uint64_t r = 0; r < t->n_merges; r++)
            total += str_of(t, t->merge_list[2 * r]).len + str_of(t, t->merge_list[2 * r + 1]).len + 1;
        mtext = kn_malloc(total + 1);
        if (!merges || !mtext) goto oom;
        uint64_t o = 0;
        for (uint64_t r = 0; r < t->n_merges; r++) {
            kn_str a = str_of(t, t->merge_list[2 * r]), b = str_of(t, t->merge_list[2 * r + 1]);
            merges[r].ptr = mtext + o;
            memcpy(mtext + o, a.ptr, a.len);
            o += a.len;
            mtext[o++] = ' ';
            memcpy(mtext + o, b.ptr, b.len);
            o += b.len;
            merges[r].len = a.len + b.len + 1;
        }
        kn_gguf_set_arr_str(w, "tokenizer.ggml.merges", merges, t->n_merges);
    } else {
        kn_gguf_remove(w, "tokenizer.ggml.merges");
    }
    if (t->bos >= 0) kn_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)t->bos);
    if (t->eos >= 0) kn_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)t->eos);
    if (t->unk >= 0) kn_gguf_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)t->unk);
    if (t->pad >= 0) kn_gguf_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)t->pad);
    if (t->eot >= 0) kn_gguf_set_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)t->eot);
    kn_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", t->add_bos);
    kn_gguf_set_bool(w, "tokenizer.ggml.add_eos_token", t->add_eos);
    kn_gguf_set_bool(w, "tokenizer.ggml.add_space_prefix", t->add_space_prefix);
    if (t->chat_template) kn_gguf_set_str(w, "tokenizer.chat_template", t->chat_template);

    /* kiln's exact description of the pipeline */
    {
        kn_str *sp = kn_calloc(t->n_split + 1, sizeof *sp);
        kn_str *nm = kn_calloc(t->n_norm + 1, sizeof *nm);
        kn_buf b = {0};
        size_t *offs = kn_calloc(t->n_split + t->n_norm + 1, sizeof *offs);
        if (!sp || !nm || !offs) {
            kn_free(sp); kn_free(nm); kn_free(offs);
            goto oom;
        }
        for (size_t i = 0; i < t->n_split; i++) {
            offs[i] = b.len;
            kn_buf_printf(&b, "%d%d:%s", (int)t->split[i].behavior, t->split[i].invert ? 1 : 0,
                          t->split[i].pattern);
        }
        for (size_t i = 0; i < t->n_norm; i++) {
            offs[t->n_split + i] = b.len;
            const kn_norm_op *op = &t->norm[i];
            kn_buf_printf(&b, "%d:%s", (int)op->kind, op->a ? op->a : "");
            kn_buf_append(&b, "\x1f", 1);
            if (op->b) kn_buf_append(&b, op->b, strlen(op->b));
        }
        offs[t->n_split + t->n_norm] = b.len;
        if (b.oom) {
            kn_free(sp); kn_free(nm); kn_free(offs); kn_buf_free(&b);
            goto oom;
        }
        for (size_t i = 0; i < t->n_split; i++)
            sp[i] = (kn_str){b.data + offs[i], offs[i + 1] - offs[i]};
        for (size_t i = 0; i < t->n_norm; i++)
            nm[i] = (kn_str){b.data + offs[t->n_split + i],
                             offs[t->n_split + i + 1] - offs[t->n_split + i]};
        kn_gguf_set_arr_str(w, "tokenizer.kiln.splits", sp, t->n_split);
        kn_gguf_set_arr_str(w, "tokenizer.kiln.normalizers", nm, t->n_norm);
        uint32_t flags = (t->dec_byte_level ? KN_TKF_DEC_BYTE_LEVEL : 0) |
                         (t->dec_metaspace ? KN_TKF_DEC_METASPACE : 0) |
                         (t->dec_byte_fallback ? KN_TKF_DEC_BYTE_FALLBACK : 0) |
                         (t->byte_fallback ? KN_TKF_BYTE_FALLBACK : 0) |
                         (t->ignore_merges ? KN_TKF_IGNORE_MERGES : 0) |
                         (t->fuse_unk ? KN_TKF_FUSE_UNK : 0) |
                         (t->byte_level ? KN_TKF_BYTE_LEVEL : 0) |
                         ((uint32_t)(t->dec_strip_lead & 15) << 8);
        kn_gguf_set_u32(w, "tokenizer.kiln.flags", flags);
        kn_free(sp);
        kn_free(nm);
        kn_free(offs);
        kn_buf_free(&b);
    }
    st = kn_gguf_writer_status(w, err);
    goto done;
oom:
    st = kn_fail(err, KILN_ERR_NOMEM, "out of memory writing the tokenizer");
done:
    kn_free(toks);
    kn_free(pads);
    kn_free(scores);
    kn_free(types);
    kn_free(merges);
    kn_free(mtext);
    return st;
}

kiln_status kn_tok_read_kiln_keys(kn_tokenizer *t, const kn_gguf *g, kiln_error *err) {
    const char *label = g->path ? g->path : "gguf";
    const kn_gguf_kv *sp = kn_gguf_get_arr(g, "tokenizer.kiln.splits", KN_GGUF_STRING);
    const kn_gguf_kv *nm = kn_gguf_get_arr(g, "tokenizer.kiln.normalizers", KN_GGUF_STRING);
    uint32_t flags;
    if (!sp || !nm || !sp->strs || !nm->strs || !kn_gguf_get_u32(g, "tokenizer.kiln.flags", &flags))
        return KILN_OK;
    for (size_t i = 0; i < t->n_split; i++) {
        kn_free(t->split[i].pattern);
        pcre2_code_free(t->split[i].re);
    }
    t->n_split = 0;
    for (size_t i = 0; i < t->n_norm; i++) {
        kn_free(t->norm[i].a);
        kn_free(t->norm[i].b);
    }
    t->n_norm = 0;
    kiln_status st;
    for (uint64_t i = 0; i < sp->arr_n; i++) {
        kn_str s = sp->strs[i];
        if (s.len < 3 || s.ptr[2] != ':' || s.ptr[0] < '0' || s.ptr[0] > '4' ||
            (s.ptr[1] != '0' && s.ptr[1] != '1'))
            return kn_fail(err, KILN_ERR_FORMAT, "%s: tokenizer.kiln.splits[%llu] is malformed",
                           label, (unsigned long long)i);
        char *pat = kn_strndup(s.ptr + 3, (size_t)s.len - 3);
        if (!pat) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        st = kn_tok_add_split(t, pat, (kn_split_behavior)(s.ptr[0] - '0'), s.ptr[1] == '1', err);
        kn_free(pat);
        if (st != KILN_OK) return kn_fail_prefix(err, "%s: ", label);
    }
    for (uint64_t i = 0; i < nm->arr_n; i++) {
        kn_str s = nm->strs[i];
        const char *us = s.len > 2 ? memchr(s.ptr, 0x1f, (size_t)s.len) : NULL;
        if (!us || s.ptr[1] != ':' || s.ptr[0] < '0' || s.ptr[0] > '7')
            return kn_fail(err, KILN_ERR_FORMAT, "%s: tokenizer.kiln.normalizers[%llu] is "
                           "malformed", label, (unsigned long long)i);
        char *a = kn_strndup(s.ptr + 2, (size_t)(us - s.ptr - 2));
        char *b = kn_strndup(us + 1, (size_t)(s.ptr + s.len - us - 1));
        if (!a || !b) {
            kn_free(a);
            kn_free(b);
            return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        }
        kn_norm_kind k = (kn_norm_kind)(s.ptr[0] - '0');
        bool has_a = k <= KN_NORM_REPLACE, has_b = k == KN_NORM_REPLACE;
        st = kn_tok_add_norm(t, k, has_a ? a : NULL, has_b ? b : NULL, err);
        kn_free(a);
        kn_free(b);
        if (st != KILN_OK) return st;
    }
    t->dec_byte_level = flags & KN_TKF_DEC_BYTE_LEVEL;
    t->dec_metaspace = flags & KN_TKF_DEC_METASPACE;
    t->dec_byte_fallback = flags & KN_TKF_DEC_BYTE_FALLBACK;
    t->byte_fallback = flags & KN_TKF_BYTE_FALLBACK;
    t->ignore_merges = flags & KN_TKF_IGNORE_MERGES;
    t->fuse_unk = flags & KN_TKF_FUSE_UNK;
    t->dec_strip_lead = (int)((flags >> 8) & 15);
    return KILN_OK;
}
