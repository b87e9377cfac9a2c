/* vocab.c — the vocabulary of a kn_tokenizer: token texts, the text index, BPE merges, special
 * tokens and the GPT-2 byte mapping. */
#include <stdlib.h>
#include <string.h>

#include "base/limits.h"
#include "tokenizer/tok_impl.h"

/* ---- small helpers ---- */

uint64_t kn_tok_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

int kn_utf8_put(uint32_t cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
 * U+0100.. in byte order, so every byte has a visible, non-space character. */
static bool byte_is_direct(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t kn_byte_to_cp(uint8_t b) {
    if (byte_is_direct(b)) return b;
    unsigned n = 0;
    for (unsigned i = 0; i < b; i++)
        if (!byte_is_direct(i)) n++;
    return 256 + n;
}

int kn_cp_to_byte(uint32_t cp) {
    if (cp < 256) return byte_is_direct(cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    unsigned n = cp - 256;
    for (unsigned i = 0; i < 256; i++) {
        if (!byte_is_direct(i)) {
            if (n == 0) return (int)i;
            n--;
        }
    }
    return -1;
}

bool kn_tokens_push(kn_tokens *v, int32_t id) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *p = kn_realloc(v->ids, cap * sizeof *p);
        if (!p) return false;
        v->ids = p;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return true;
}

void kn_tokens_free(kn_tokens *v) {
    if (!v) return;
    kn_free(v->ids);
    memset(v, 0, sizeof *v);
}

/* ---- construction ---- */

kn_tokenizer *kn_tok_new(void) {
    kn_tokenizer *t = kn_calloc(1, sizeof *t);
    if (!t) return NULL;
    t->bos = t->eos = t->eot = t->unk = t->pad = -1;
    return t;
}

void kn_tokenizer_free(kn_tokenizer *t) {
    if (!t) return;
    kn_free(t->model_name);
    kn_free(t->pre_name);
    kn_free(t->arena);
    kn_free(t->off);
    kn_free(t->score);
    kn_free(t->type);
    kn_free(t->lstrip);
    kn_free(t->rstrip);
    kn_free(t->hslot);
    kn_free(t->merges);
    kn_free(t->merge_list);
    for (size_t i = 0; i < t->n_norm; i++) {
        kn_free(t->norm[i].a);
        kn_free(t->norm[i].b);
    }
    kn_free(t->norm);
    for (size_t i = 0; i < t->n_split; i++) {
        kn_free(t->split[i].pattern);
        pcre2_code_free(t->split[i].re);
    }
    kn_free(t->split);
    kn_free(t->special);
    kn_free(t->eog);
    kn_free(t->chat_template);
    kn_free(t);
}

static uint64_t pow2_at_least(uint64_t n) {
    uint64_t p = 16;
    while (p < n) p <<= 1;
    return p;
}

kiln_status kn_tok_set_texts(kn_tokenizer *t, const kn_str *texts, uint32_t n, const char *label,
                             kiln_error *err) {
    if (n == 0) return kn_fail(err, KILN_ERR_FORMAT, "%s: the vocabulary is empty", label);
    if (n > KN_MAX_VOCAB)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: vocabulary of %u tokens is too large (at most "
                       "%d)", label, n, KN_MAX_VOCAB);
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (texts[i].len > KN_MAX_TOKEN_BYTES)
            return kn_fail(err, KILN_ERR_FORMAT, "%s: token %u is %llu bytes long", label, i,
                           (unsigned long long)texts[i].len);
        total += texts[i].len;
    }
    t->n_vocab = n;
    t->arena = kn_malloc(total + 1);
    t->off = kn_malloc(((size_t)n + 1) * sizeof *t->off);
    t->score = kn_calloc(n, sizeof *t->score);
    t->type = kn_malloc(n);
    t->eog = kn_calloc(n, sizeof *t->eog);
    if (!t->arena || !t->off || !t->score || !t->type || !t->eog)
        return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory for %u tokens", label, n);
    uint64_t o = 0;
    for (uint32_t i = 0; i < n; i++) {
        t->off[i] = o;
        if (texts[i].len) memcpy(t->arena + o, texts[i].ptr, texts[i].len);
        o += texts[i].len;
        t->type[i] = KN_TOKTYPE_NORMAL;
    }
    t->off[n] = o;
    t->arena[o] = 0;
    return KILN_OK;
}

const char *kn_tokenizer_token_text(const kn_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || (uint32_t)id >= t->n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->off[id + 1] - t->off[id];
    return t->arena + t->off[id];
}

int32_t kn_tokenizer_find(const kn_tokenizer *t, const char *s, size_t n) {
    if (!t->hslot) return -1;
    uint64_t i = kn_tok_hash(s, n) & t->hmask;
    for (;;) {
        uint32_t v = t->hslot[i];
        if (v == 0) return -1;
        uint32_t id = v - 1;
        size_t len = t->off[id + 1] - t->off[id];
        if (len == n && memcmp(t->arena + t->off[id], s, n) == 0) return (int32_t)id;
        i = (i + 1) & t->hmask;
    }
}

static kiln_status build_index(kn_tokenizer *t, const char *label, kiln_error *err) {
    uint64_t cap = pow2_at_least((uint64_t)t->n_vocab * 2);
    t->hslot = kn_calloc(cap, sizeof *t->hslot);
    if (!t->hslot) return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory", label);
    t->hmask = cap - 1;
    for (uint32_t id = 0; id < t->n_vocab; id++) {
        const char *s = t->arena + t->off[id];
        size_t n = t->off[id + 1] - t->off[id];
        uint64_t i = kn_tok_hash(s, n) & t->hmask;
        bool dup = false;
        while (t->hslot[i]) {
            uint32_t o = t->hslot[i] - 1;
            if (t->off[o + 1] - t->off[o] == n && memcmp(t->arena + t->off[o], s, n) == 0) {
                dup = true;
                break;
            }
            i = (i + 1) & t->hmask;
        }
        /* A duplicate text keeps its first id, as the HF vocab map and llama.cpp's token_to_id
         * would resolve a lookup; empty texts (padding slots) are never looked up. */
        if (!dup && n > 0) t->hslot[i] = id + 1;
    }
    return KILN_OK;
}

kiln_status kn_tok_merges_alloc(kn_tokenizer *t, uint64_t n, kiln_error *err) {
    if (n > (1u << 28)) return kn_fail(err, KILN_ERR_FORMAT, "too many merges (%llu)",
                                       (unsigned long long)n);
    uint64_t cap = pow2_at_least(n * 2 + 1);
    t->merges = kn_calloc(cap, sizeof *t->merges);
    t->merge_list = kn_malloc((n ? n : 1) * 2 * sizeof *t->merge_list);
    if (!t->merges || !t->merge_list) return kn_fail(err, KILN_ERR_NOMEM, "out of memory for merges");
    t->mmask = cap - 1;
    t->n_merges = 0;
    return KILN_OK;
}

static inline uint64_t mkey(int32_t l, int32_t r) {
    return (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
}

bool kn_tok_add_merge(kn_tokenizer *t, const char *a, size_t na, const char *b, size_t nb,
                      int32_t rank) {
    int32_t l = kn_tokenizer_find(t, a, na), r = kn_tokenizer_find(t, b, nb);
    if (l < 0 || r < 0 || na + nb > 4096) return false;
    char stackbuf[4096];
    memcpy(stackbuf, a, na);
    memcpy(stackbuf + na, b, nb);
    int32_t m = kn_tokenizer_find(t, stackbuf, na + nb);
    if (m < 0) return false;
    uint64_t key = mkey(l, r);
    uint64_t i = (key * 0x9E3779B97F4A7C15ull >> 17) & t->mmask;
    while (t->merges[i].key) {
        /* The first (lowest-rank) occurrence of a pair wins, like HF's merge map. */
        if (t->merges[i].key == key) return true;
        i = (i + 1) & t->mmask;
    }
    t->merges[i].key = key;
    t->merges[i].rank = rank;
    t->merges[i].id = m;
    t->merge_list[2 * t->n_merges] = l;
    t->merge_list[2 * t->n_merges + 1] = r;
    t->n_merges++;
    return true;
}

/* Looks up the merge of two tokens: its rank, or -1. */
int32_t kn_tok_merge_rank(const kn_tokenizer *t, int32_t l, int32_t r, int32_t *id) {
    if (!t->merges) return -1;
    uint64_t key = mkey(l, r);
    uint64_t i = (key * 0x9E3779B97F4A7C15ull >> 17) & t->mmask;
    for (;;) {
        const kn_merge_ent *e = &t->merges[i];
        if (e->key == 0) return -1;
        if (e->key == key) {
            *id = e->id;
            return e->rank;
        }
        i = (i + 1) & t->mmask;
    }
}

static int cmp_special_len(const void *pa, const void *pb, void *ctx);

/* Sort helper without qsort_r (not in C11): insertion into a sorted position is fine for the few
 * hundred special tokens a vocabulary has. */
static void sort_specials(kn_tokenizer *t) {
    for (size_t i = 1; i < t->n_special; i++) {
        int32_t v = t->special[i];
        size_t j = i;
        while (j > 0 && cmp_special_len(&t->special[j - 1], &v, t) > 0) {
            t->special[j] = t->special[j - 1];
            j--;
        }
        t->special[j] = v;
    }
}

static int cmp_special_len(const void *pa, const void *pb, void *ctx) {
    const kn_tokenizer *t = ctx;
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    uint64_t la = t->off[a + 1] - t->off[a], lb = t->off[b + 1] - t->off[b];
    if (la != lb) return la < lb ? 1 : -1;
    return a < b ? -1 : a > b;
}

static const char *const k_eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "<|eom_id|>", ("<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"),
};

kiln_status kn_tok_finish(kn_tokenizer *t, const char *label, kiln_error *err) {
    kiln_status st;
    if (!t->hslot && (st = build_index(t, label, err)) != KILN_OK) return st;

    /* Byte tokens: byte-level vocabularies need the char of every byte; byte fallback uses the
     * <0xXX> tokens. */
    for (int b = 0; b < 256; b++) {
        char buf[8];
        int n;
        if (t->byte_level) {
            n = kn_utf8_put(kn_byte_to_cp((uint8_t)b), buf);
        } else {
            static const char hex[] = "0123456789ABCDEF";
            buf[0] = '<'; buf[1] = '0'; buf[2] = 'x';
            buf[3] = hex[b >> 4]; buf[4] = hex[b & 15]; buf[5] = '>';
            n = 6;
        }
        t->byte_id[b] = kn_tokenizer_find(t, buf, (size_t)n);
    }

    int32_t *ids[] = {&t->bos, &t->eos, &t->eot, &t->unk, &t->pad};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (*ids[i] >= 0 && (uint32_t)*ids[i] >= t->n_vocab) *ids[i] = -1;

    /* Tokens matched in raw text: control, user-defined and unknown, longest first (as
     * llama.cpp's tokenizer_st_partition and HF's added-vocabulary trie do). */
    kn_free(t->special);
    t->special = NULL;
    t->n_special = 0;
    size_t cnt = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        uint8_t ty = t->type[i];
        if ((ty == KN_TOKTYPE_CONTROL || ty == KN_TOKTYPE_USER_DEFINED ||
             ty == KN_TOKTYPE_UNKNOWN) && t->off[i + 1] > t->off[i])
            cnt++;
    }
    if (cnt) {
        t->special = kn_malloc(cnt * sizeof *t->special);
        if (!t->special) return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory", label);
        for (uint32_t i = 0; i < t->n_vocab; i++) {
            uint8_t ty = t->type[i];
            if ((ty == KN_TOKTYPE_CONTROL || ty == KN_TOKTYPE_USER_DEFINED ||
                 ty == KN_TOKTYPE_UNKNOWN) && t->off[i + 1] > t->off[i])
                t->special[t->n_special++] = (int32_t)i;
        }
        sort_specials(t);
    }

    memset(t->eog, 0, t->n_vocab * sizeof *t->eog);
    if (t->eos >= 0) t->eog[t->eos] = true;
    if (t->eot >= 0) t->eog[t->eot] = true;
    for (size_t i = 0; i < sizeof k_eog_texts / sizeof k_eog_texts[0]; i++) {
        int32_t id = kn_tokenizer_find(t, k_eog_texts[i], strlen(k_eog_texts[i]));
        if (id >= 0 && t->type[id] == KN_TOKTYPE_CONTROL) {
            t->eog[id] = true;
            if (t->eot < 0 && i < 4) t->eot = id;
        }
    }
    return KILN_OK;
}

/* ---- queries ---- */

uint32_t kn_tokenizer_n_vocab(const kn_tokenizer *t) { return t->n_vocab; }
kn_tok_model kn_tokenizer_model(const kn_tokenizer *t) { return t->model; }
const char *kn_tokenizer_pre_name(const kn_tokenizer *t) {
    return t->pre_name ? t->pre_name : "default";
}
int32_t kn_tokenizer_bos(const kn_tokenizer *t) { return t->bos; }
int32_t kn_tokenizer_eos(const kn_tokenizer *t) { return t->eos; }
int32_t kn_tokenizer_eot(const kn_tokenizer *t) { return t->eot; }
int32_t kn_tokenizer_unk(const kn_tokenizer *t) { return t->unk; }
int32_t kn_tokenizer_pad(const kn_tokenizer *t) { return t->pad; }
bool kn_tokenizer_add_bos(const kn_tokenizer *t) { return t->add_bos; }
bool kn_tokenizer_is_eog(const kn_tokenizer *t, int32_t id) {
    return id >= 0 && (uint32_t)id < t->n_vocab && t->eog[id];
}
int kn_tokenizer_token_type(const kn_tokenizer *t, int32_t id) {
    return id >= 0 && (uint32_t)id < t->n_vocab ? t->type[id] : -1;
}
const char *kn_tokenizer_chat_template(const kn_tokenizer *t) { return t->chat_template; }
