/* pretok.c — the encode pipeline: special-token partition, normalization, regex pre-tokenizers
 * (PCRE2, UTF + UCP, JIT) and the per-piece model call.
 *
 * The regexes per tokenizer.ggml.pre are llama.cpp's (src/llama-vocab.cpp), which follow the
 * tokenizer.json of each family; a chain of several is applied as Hugging Face's Sequence of
 * Split(behavior = Isolated): every regex splits each piece of the previous one into matches
 * and the gaps between them, and a regex sees only its piece (lookarounds stop at its ends).
 */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tok_impl.h"

/* ---- pre-tokenizer table ---- */

#define RX_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define RX_CONTRACT "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define RX_LLAMA3                                                                              \
    RX_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"   \
                "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RX_QWEN2                                                                               \
    RX_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"        \
                "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RX_QWEN35                                                                              \
    RX_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+"    \
                "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RX_GPT4O                                                                               \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+" \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?"       \
    "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"                      \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}|"                  \
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

typedef struct pre_def {
    const char *names; /* '|'-separated tokenizer.ggml.pre values */
    const char *rx[7];
    bool ignore_merges;
    bool nfc;
} pre_def;

static const pre_def k_pre[] = {
    {"llama3|llama-v3|llama-bpe|falcon3|falcon-h1|pixtral|midm-2.0|lfm2", {RX_LLAMA3}, true, false},
    {"dbrx|smaug-bpe|chatglm-bpe|glm4", {RX_LLAMA3}, false, false},
    {"deepseek-llm",
     {"[\r\n]",
      "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}"
      "\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}-\\x{377}\\x{37B}-\\x{37D}"
      "\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}"
      "\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}"
      "\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}"
      "\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}"
      "\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}"
      "\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}"
      "\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}"
      "\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}"
      "\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}"
      "\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}\\x{2183}-\\x{2184}"
      "\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}-\\x{2CF3}"
      "\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}"
      "\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}"
      "\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}"
      "\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}"
      "\\x{1E900}-\\x{1E943}]+",
      "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+",
      "\\s+$",
      "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+",
      "\\p{N}+"},
     false, false},
    {"deepseek-coder",
     {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+",
      "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+", "\\p{N}"},
     false, false},
    {"falcon",
     {"[\\p{P}\\$\\+<=>\\^~\\|`]+",
      "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
      "[0-9][0-9][0-9]"},
     false, false},
    {"starcoder|refact|command-r|smollm|codeshell|exaone|minerva-7b|mellum2",
     {"\\p{N}", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"},
     false, false},
    {"mpt", {RX_GPT2}, false, true},
    {"gpt-2|phi-2|jina-es|jina-de|gigachat|jina-v2-es|jina-v2-de|mellum|modern-bert|olmo|jais|"
     "trillion|granite-docling|exaone4|roberta-bpe|jina-v1-en|jina-v2-code|a.x-4.0",
     {RX_GPT2}, false, false},
    {"qwen2|deepseek-r1-qwen|kormo|stablelm2|hunyuan|megrez|f2llmv2|solar-open", {RX_QWEN2}, false,
     false},
    {"qwen35", {RX_QWEN35}, false, false},
    {"gpt-4o|llama4|kanana2|minimax-m2", {RX_GPT4O}, false, false},
    {"default",
     {"[\\p{P}\\$\\+<=>\\^~\\|]+",
      "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)", "\\p{N}+",
      "[0-9][0-9][0-9]"},
     false, false},
};

static const pre_def *find_pre(const char *pre) {
    size_t n = strlen(pre);
    for (size_t i = 0; i < sizeof k_pre / sizeof k_pre[0]; i++) {
        const char *p = k_pre[i].names;
        while (*p) {
            const char *e = strchr(p, '|');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            if (l == n && memcmp(p, pre, n) == 0) return &k_pre[i];
            p += l + (e ? 1 : 0);
        }
    }
    return NULL;
}

bool kn_tok_pre_known(const char *pre) { return find_pre(pre) != NULL; }

kiln_status kn_tok_set_pre(kn_tokenizer *t, const char *pre, kiln_error *err) {
    const pre_def *d = find_pre(pre);
    if (!d) return kn_fail(err, KILN_ERR_UNSUPPORTED, "unknown pre-tokenizer '%s'", pre);
    for (int i = 0; i < 7 && d->rx[i]; i++) {
        kiln_status st = kn_tok_add_split(t, d->rx[i], KN_SPLIT_ISOLATED, false, err);
        if (st != KILN_OK) return st;
    }
    t->ignore_merges = d->ignore_merges;
    if (d->nfc) return kn_tok_add_norm(t, KN_NORM_NFC, NULL, NULL, err);
    return KILN_OK;
}

/* Equal regexes, up to a final "|\s+" that never changes a split (a lone whitespace character
 * the other alternatives miss is a gap of its own either way). */
static bool same_rx(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la == lb) return strcmp(a, b) == 0;
    if (la < lb) {
        const char *t = a; a = b; b = t;
        size_t tl = la; la = lb; lb = tl;
    }
    return la == lb + 4 && memcmp(a, b, lb) == 0 && strcmp(a + lb, "|\\s+") == 0;
}

/* Which known pre-tokenizer a regex chain is, so an HF tokenizer can name it in a GGUF. */
const char *kn_tok_pre_from_splits(const kn_tokenizer *t) {
    static const char *const pick[] = {"llama-bpe", "dbrx", "deepseek-llm", "deepseek-coder",
                                       "falcon", "smollm", "gpt-2", "qwen2", "qwen35", "gpt-4o",
                                       "default"};
    for (size_t k = 0; k < sizeof pick / sizeof pick[0]; k++) {
        const pre_def *d = find_pre(pick[k]);
        size_t n = 0;
        while (n < 7 && d->rx[n]) n++;
        if (n != t->n_split) continue;
        bool same = true;
        for (size_t i = 0; same && i < n; i++)
            same = t->split[i].behavior == KN_SPLIT_ISOLATED && !t->split[i].invert &&
                   same_rx(t->split[i].pattern, d->rx[i]);
        if (same && d->ignore_merges == t->ignore_merges) return pick[k];
    }
    return NULL;
}

kiln_status kn_tok_add_split(kn_tokenizer *t, const char *pattern, kn_split_behavior behavior,
                             bool invert, kiln_error *err) {
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return kn_fail(err, KILN_ERR_FORMAT, "pre-tokenizer regex /%.80s/: %s at offset %zu",
                       pattern, (const char *)msg, (size_t)eo);
    }
    /* JIT is an optimisation only: without it (no JIT support) the interpreter gives the same
     * matches. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    kn_split_op *p = kn_realloc(t->split, (t->n_split + 1) * sizeof *p);
    char *pat = kn_strdup(pattern);
    if (!p || !pat) {
        if (p) t->split = p;
        kn_free(pat);
        pcre2_code_free(re);
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    t->split = p;
    t->split[t->n_split++] = (kn_split_op){pat, re, behavior, invert};
    return KILN_OK;
}

kiln_status kn_tok_add_norm(kn_tokenizer *t, kn_norm_kind kind, const char *a, const char *b,
                            kiln_error *err) {
    kn_norm_op *p = kn_realloc(t->norm, (t->n_norm + 1) * sizeof *p);
    if (!p) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    t->norm = p;
    kn_norm_op op = {kind, a ? kn_strdup(a) : NULL, b ? kn_strdup(b) : NULL};
    if ((a && !op.a) || (b && !op.b)) {
        kn_free(op.a);
        kn_free(op.b);
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    t->norm[t->n_norm++] = op;
    return KILN_OK;
}

/* ---- UTF-8 validity ---- */

/* Classifies the UTF-8 sequence at s (n >= 1 bytes): > 0, a valid character of that length;
 * 0, a valid but incomplete prefix cut off by the end; < 0, invalid, and -return is the length
 * of the maximal ill-formed subpart to replace by one U+FFFD (Unicode's recommended practice). */
int kn_utf8_classify(const uint8_t *s, size_t n);
int kn_utf8_classify(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    int len;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return -1;
    }
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        uint8_t b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return -i;
    }
    return len;
}

static bool utf8_all_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int l = kn_utf8_classify(s + i, n - i);
        if (l <= 0) return false;
        i += (size_t)l;
    }
    return true;
}

/* ---- partition ---- */

typedef struct frag {
    int32_t id;      /* a matched token, or -1 for raw text */
    size_t off, len; /* raw text range */
} frag;

typedef struct fragv {
    frag *v;
    size_t n, cap;
} fragv;

static bool frag_push(fragv *f, frag x) {
    if (f->n == f->cap) {
        size_t c = f->cap ? f->cap * 2 : 16;
        frag *p = kn_realloc(f->v, c * sizeof *p);
        if (!p) return false;
        f->v = p;
        f->cap = c;
    }
    f->v[f->n++] = x;
    return true;
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

static const char *find_bytes(const char *h, size_t hn, const char *nd, size_t nn) {
    if (nn == 0 || hn < nn) return NULL;
    const char *end = h + hn - nn;
    const char *p = h;
    while (p <= end) {
        p = memchr(p, nd[0], (size_t)(end - p) + 1);
        if (!p) return NULL;
        if (memcmp(p, nd, nn) == 0) return p;
        p++;
    }
    return NULL;
}

static bool partition(const kn_tokenizer *t, const char *s, size_t len, bool parse_special,
                      fragv *cur, fragv *next) {
    cur->n = 0;
    if (len && !frag_push(cur, (frag){-1, 0, len})) return false;
    for (size_t k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        uint8_t ty = t->type[id];
        if (!parse_special && (ty == KN_TOKTYPE_CONTROL || ty == KN_TOKTYPE_UNKNOWN)) continue;
        const char *tx = t->arena + t->off[id];
        size_t tn = t->off[id + 1] - t->off[id];
        if (!find_bytes(s, len, tx, tn)) continue;
        bool ls = t->lstrip && t->lstrip[id], rs = t->rstrip && t->rstrip[id];
        next->n = 0;
        for (size_t i = 0; i < cur->n; i++) {
            frag f = cur->v[i];
            if (f.id >= 0) {
                if (!frag_push(next, f)) return false;
                continue;
            }
            size_t a = f.off, end = f.off + f.len;
            for (;;) {
                const char *p = find_bytes(s + a, end - a, tx, tn);
                if (!p) break;
                size_t at = (size_t)(p - s), l = at;
                if (ls)
                    while (l > a && is_ws(s[l - 1])) l--;
                if (l > a && !frag_push(next, (frag){-1, a, l - a})) return false;
                if (!frag_push(next, (frag){id, at, tn})) return false;
                a = at + tn;
                if (rs)
                    while (a < end && is_ws(s[a])) a++;
            }
            if (a < end && !frag_push(next, (frag){-1, a, end - a})) return false;
        }
        fragv tmp = *cur;
        *cur = *next;
        *next = tmp;
    }
    return true;
}

/* ---- normalization ---- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static bool sb_reserve(sbuf *b, size_t n) {
    if (n <= b->cap) return true;
    size_t c = b->cap ? b->cap : 256;
    while (c < n) c *= 2;
    char *q = kn_realloc(b->p, c);
    if (!q) return false;
    b->p = q;
    b->cap = c;
    return true;
}

static bool sb_set(sbuf *b, const char *s, size_t n) {
    if (!sb_reserve(b, n + 1)) return false;
    memmove(b->p, s, n);
    b->n = n;
    return true;
}

/* Applies the normalizer chain to src into *a (b is scratch). first: the fragment starts the
 * input. */
static bool normalize(const kn_tokenizer *t, const char *src, size_t n, bool first, sbuf *a,
                      sbuf *b) {
    if (!sb_set(a, src, n)) return false;
    for (size_t k = 0; k < t->n_norm; k++) {
        const kn_norm_op *op = &t->norm[k];
        size_t al = op->a ? strlen(op->a) : 0;
        switch (op->kind) {
        case KN_NORM_PREPEND_FIRST:
        case KN_NORM_PREPEND_FIRST_IF_NOT:
            if (!first) break;
            /* fall through */
        case KN_NORM_PREPEND:
        case KN_NORM_PREPEND_IF_NOT:
            if (a->n == 0) break;
            if ((op->kind == KN_NORM_PREPEND_IF_NOT || op->kind == KN_NORM_PREPEND_FIRST_IF_NOT) &&
                a->n >= al && memcmp(a->p, op->a, al) == 0)
                break;
            if (!sb_reserve(b, a->n + al + 1)) return false;
            memcpy(b->p, op->a, al);
            memcpy(b->p + al, a->p, a->n);
            b->n = a->n + al;
            { sbuf tmp = *a; *a = *b; *b = tmp; }
            break;
        case KN_NORM_REPLACE: {
            if (al == 0) break;
            size_t bl = op->b ? strlen(op->b) : 0;
            b->n = 0;
            size_t i = 0;
            while (i < a->n) {
                if (a->n - i >= al && memcmp(a->p + i, op->a, al) == 0) {
                    if (!sb_reserve(b, b->n + bl + 1)) return false;
                    memcpy(b->p + b->n, op->b, bl);
                    b->n += bl;
                    i += al;
                } else {
                    if (!sb_reserve(b, b->n + 2)) return false;
                    b->p[b->n++] = a->p[i++];
                }
            }
            sbuf tmp = *a; *a = *b; *b = tmp;
            break;
        }
        case KN_NORM_NFC:
        case KN_NORM_NFKC: {
            utf8proc_uint8_t *dst = NULL;
            int opts = UTF8PROC_STABLE | UTF8PROC_COMPOSE |
                       (op->kind == KN_NORM_NFKC ? UTF8PROC_COMPAT : 0);
            utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)a->p, (utf8proc_ssize_t)a->n,
                                              &dst, (utf8proc_option_t)opts);
            if (r < 0) {
                free(dst);
                break; /* input is valid UTF-8 here; keep it unnormalized if utf8proc refuses */
            }
            bool ok = sb_set(a, (const char *)dst, (size_t)r);
            free(dst);
            if (!ok) return false;
            break;
        }
        case KN_NORM_LOWERCASE: {
            b->n = 0;
            size_t i = 0;
            while (i < a->n) {
                utf8proc_int32_t cp;
                utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)a->p + i,
                                                      (utf8proc_ssize_t)(a->n - i), &cp);
                if (l <= 0) { l = 1; cp = 0xFFFD; }
                if (!sb_reserve(b, b->n + 5)) return false;
                b->n += (size_t)kn_utf8_put((uint32_t)utf8proc_tolower(cp), b->p + b->n);
                i += (size_t)l;
            }
            sbuf tmp = *a; *a = *b; *b = tmp;
            break;
        }
        }
    }
    return true;
}

/* ---- regex splitting ---- */

typedef struct span {
    size_t off, len;
} span;

typedef struct spanv {
    span *v;
    size_t n, cap;
} spanv;

static bool span_push(spanv *s, size_t off, size_t len) {
    if (len == 0) return true;
    if (s->n == s->cap) {
        size_t c = s->cap ? s->cap * 2 : 64;
        span *p = kn_realloc(s->v, c * sizeof *p);
        if (!p) return false;
        s->v = p;
        s->cap = c;
    }
    s->v[s->n++] = (span){off, len};
    return true;
}

/* Emits one segment of a split under op's behavior; *prev_match carries state between calls. */
static bool emit_seg(spanv *out, size_t base_n, kn_split_behavior b, size_t off, size_t len,
                     bool is_match, bool *prev_match) {
    bool pm = *prev_match;
    *prev_match = is_match;
    switch (b) {
    case KN_SPLIT_ISOLATED:
        return span_push(out, off, len);
    case KN_SPLIT_REMOVED:
        return is_match ? true : span_push(out, off, len);
    case KN_SPLIT_MERGED_PREV:
        if (is_match && out->n > base_n) {
            out->v[out->n - 1].len += len;
            return true;
        }
        return span_push(out, off, len);
    case KN_SPLIT_MERGED_NEXT:
        if (pm && out->n > base_n) {
            out->v[out->n - 1].len += len;
            return true;
        }
        return span_push(out, off, len);
    case KN_SPLIT_CONTIGUOUS:
        if (is_match && pm && out->n > base_n) {
            out->v[out->n - 1].len += len;
            return true;
        }
        return span_push(out, off, len);
    }
    return true;
}

static kiln_status split_piece(const kn_split_op *op, const char *s, span in, spanv *out,
                               pcre2_match_data *md, pcre2_match_context *mc, kiln_error *err) {
    size_t base_n = out->n;
    bool prev_match = false;
    size_t pos = 0, gap = 0; /* relative to in.off */
    const PCRE2_SPTR subj = (PCRE2_SPTR)(s + in.off);
    while (pos <= in.len) {
        int rc = pcre2_match(op->re, subj, in.len, pos, PCRE2_NO_UTF_CHECK, md, mc);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return kn_fail(err, KILN_ERR_INTERNAL, "pre-tokenizer regex failed: %s",
                           (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) {
            /* An empty match splits nothing; step over one character. */
            if (ms >= in.len) break;
            pos = ms + (size_t)kn_utf8_len((uint8_t)s[in.off + ms]);
            continue;
        }
        if (ms > gap && !emit_seg(out, base_n, op->behavior, in.off + gap, ms - gap, op->invert,
                                  &prev_match))
            return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        if (!emit_seg(out, base_n, op->behavior, in.off + ms, me - ms, !op->invert, &prev_match))
            return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        pos = gap = me;
    }
    if (gap < in.len &&
        !emit_seg(out, base_n, op->behavior, in.off + gap, in.len - gap, op->invert, &prev_match))
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    return KILN_OK;
}

/* ---- the encode ---- */

typedef struct enc_ctx {
    fragv f1, f2;
    sbuf n1, n2;
    spanv s1, s2;
    kn_tok_scratch sc;
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *js;
    kn_buf clean;
} enc_ctx;

static void enc_free(enc_ctx *c) {
    kn_free(c->f1.v);
    kn_free(c->f2.v);
    kn_free(c->n1.p);
    kn_free(c->n2.p);
    kn_free(c->s1.v);
    kn_free(c->s2.v);
    kn_tok_scratch_free(&c->sc);
    if (c->md) pcre2_match_data_free(c->md);
    if (c->mc) pcre2_match_context_free(c->mc);
    if (c->js) pcre2_jit_stack_free(c->js);
    kn_buf_free(&c->clean);
}

static kiln_status encode_raw(const kn_tokenizer *t, enc_ctx *c, const char *s, size_t n,
                              bool first, kn_tokens *out, kiln_error *err) {
    const char *txt = s;
    size_t tn = n;
    if (t->n_norm) {
        if (!normalize(t, s, n, first, &c->n1, &c->n2)) goto oom;
        txt = c->n1.p;
        tn = c->n1.n;
    }
    c->s1.n = 0;
    if (!span_push(&c->s1, 0, tn)) goto oom;
    for (size_t k = 0; k < t->n_split; k++) {
        c->s2.n = 0;
        for (size_t i = 0; i < c->s1.n; i++) {
            kiln_status st = split_piece(&t->split[k], txt, c->s1.v[i], &c->s2, c->md, c->mc, err);
            if (st != KILN_OK) return st;
        }
        spanv tmp = c->s1;
        c->s1 = c->s2;
        c->s2 = tmp;
    }
    for (size_t i = 0; i < c->s1.n; i++)
        if (!kn_tok_encode_piece(t, txt + c->s1.v[i].off, c->s1.v[i].len, out, &c->sc)) goto oom;
    return KILN_OK;
oom:
    return kn_fail(err, KILN_ERR_NOMEM, "out of memory while tokenizing");
}

kiln_status kn_tokenize(const kn_tokenizer *t, const char *text, size_t len, unsigned flags,
                        kn_tokens *out, kiln_error *err) {
    if (!t || (!text && len)) return kn_fail(err, KILN_ERR_INVALID_ARG, "tokenize: no text");
    enc_ctx c;
    memset(&c, 0, sizeof c);
    kiln_status st = KILN_OK;
    const char *s = text ? text : "";
    if (!utf8_all_valid((const uint8_t *)s, len)) {
        kn_utf8_sanitize((const uint8_t *)s, len, true, &c.clean);
        if (c.clean.oom) goto oom;
        s = c.clean.data ? c.clean.data : "";
        len = c.clean.len;
    }
    if (((flags & KN_TOK_ADD_BOS) && t->add_bos) || (flags & KN_TOK_FORCE_BOS)) {
        if (t->bos >= 0 && !kn_tokens_push(out, t->bos)) goto oom;
    }
    if (t->n_split) {
        c.md = pcre2_match_data_create(16, NULL);
        c.mc = pcre2_match_context_create(NULL);
        c.js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
        if (!c.md || !c.mc || !c.js) goto oom;
        pcre2_jit_stack_assign(c.mc, NULL, c.js);
    }
    if (!partition(t, s, len, (flags & KN_TOK_PARSE_SPECIAL) != 0, &c.f1, &c.f2)) goto oom;
    for (size_t i = 0; i < c.f1.n; i++) {
        frag f = c.f1.v[i];
        if (f.id >= 0) {
            if (!kn_tokens_push(out, f.id)) goto oom;
            continue;
        }
        st = encode_raw(t, &c, s + f.off, f.len, f.off == 0, out, err);
        if (st != KILN_OK) goto done;
    }
    if ((flags & KN_TOK_ADD_BOS) && t->add_eos && t->eos >= 0 && !kn_tokens_push(out, t->eos))
        goto oom;
done:
    enc_free(&c);
    return st;
oom:
    enc_free(&c);
    return kn_fail(err, KILN_ERR_NOMEM, "out of memory while tokenizing");
}
