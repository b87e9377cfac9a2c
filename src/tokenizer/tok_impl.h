/* tok_impl.h — the inside of a kn_tokenizer, shared by the files of src/tokenizer/ only. */
#ifndef KN_TOK_IMPL_H
#define KN_TOK_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer/tokenizer.h"

/* Normalizer operations, applied in order to each text fragment between added tokens. */
typedef enum kn_norm_kind {
    KN_NORM_PREPEND,          /* prepend a (non-empty fragment) */
    KN_NORM_PREPEND_FIRST,    /* prepend a only to the fragment at the start of the input */
    KN_NORM_PREPEND_IF_NOT,   /* prepend a unless the fragment already starts with a */
    KN_NORM_PREPEND_FIRST_IF_NOT,
    KN_NORM_REPLACE,          /* replace every a by b (literal) */
    KN_NORM_NFC,
    KN_NORM_NFKC,
    KN_NORM_LOWERCASE
} kn_norm_kind;

typedef struct kn_norm_op {
    kn_norm_kind kind;
    char *a, *b;
} kn_norm_op;

/* How a regex split treats matches (Hugging Face SplitDelimiterBehavior). */
typedef enum kn_split_behavior {
    KN_SPLIT_ISOLATED = 0,
    KN_SPLIT_REMOVED,
    KN_SPLIT_MERGED_PREV,
    KN_SPLIT_MERGED_NEXT,
    KN_SPLIT_CONTIGUOUS
} kn_split_behavior;

typedef struct kn_split_op {
    char *pattern;
    pcre2_code *re;
    kn_split_behavior behavior;
    bool invert;
} kn_split_op;

typedef struct kn_merge_ent {
    uint64_t key;   /* left id << 32 | right id; 0 marks an empty slot (key+1 stored) */
    int32_t rank;
    int32_t id;     /* the merged token */
} kn_merge_ent;

struct kn_tokenizer {
    kn_tok_model model;
    char *model_name;            /* "llama" / "gpt2" as written to GGUF */
    char *pre_name;

    uint32_t n_vocab;
    char *arena;                 /* all token texts, back to back */
    uint64_t *off;               /* [n_vocab + 1] offsets into arena */
    float *score;                /* [n_vocab] */
    uint8_t *type;               /* [n_vocab] KN_TOKTYPE_* */
    bool *lstrip, *rstrip;       /* [n_vocab] added-token whitespace stripping, or NULL */

    /* text -> id, open addressing on FNV-1a; slots hold id + 1 (0 empty) */
    uint32_t *hslot;
    uint64_t hmask;

    /* BPE: (left, right) -> rank and result */
    kn_merge_ent *merges;
    uint64_t mmask;
    uint64_t n_merges;
    int32_t *merge_list;         /* [2 * n_merges] left, right ids by rank (for writing) */

    bool byte_level;             /* GPT-2 bytes <-> unicode mapping */
    int32_t byte_id[256];        /* byte-level: token of each byte's char; byte fallback: <0xXX> */
    bool byte_fallback;          /* unknown characters become <0xXX> tokens */
    bool ignore_merges;          /* a piece that is a whole token is taken as is (Llama 3) */
    bool fuse_unk;

    kn_norm_op *norm;
    size_t n_norm;
    kn_split_op *split;
    size_t n_split;
    bool split_removes_ws;       /* unused marker for WhitespaceSplit-like steps */

    /* decoding */
    bool dec_byte_level;
    bool dec_metaspace;          /* U+2581 -> ' ' */
    bool dec_byte_fallback;      /* <0xXX> -> byte */
    int dec_strip_lead;          /* strip up to this many leading spaces from the output */

    bool add_space_prefix;       /* GGUF SPM's dummy prefix (written back as add_space_prefix) */
    bool add_bos, add_eos;
    int32_t bos, eos, eot, unk, pad;
    int32_t *special;            /* ids matched in text, longest first */
    size_t n_special;
    bool *eog;                   /* [n_vocab] */

    char *chat_template;
};

/* Byte-level (GPT-2) mapping: each byte to a code point, and back (-1 for none). */
uint32_t kn_byte_to_cp(uint8_t b);
int kn_cp_to_byte(uint32_t cp);
/* Encodes cp as UTF-8 into out (4 bytes room); returns the length. */
int kn_utf8_put(uint32_t cp, char *out);
/* Length of a UTF-8 sequence from its lead byte (1 for invalid lead bytes). */
static inline int kn_utf8_len(uint8_t c) {
    return c < 0x80 ? 1 : c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF8 ? 4 : 1;
}

uint64_t kn_tok_hash(const char *s, size_t n);

/* Builds the text index, byte tables, special list and eog flags once tokens, types, merges and
 * options are in place. */
kiln_status kn_tok_finish(kn_tokenizer *t, const char *label, kiln_error *err);
/* Allocates the vocabulary arrays for n tokens (texts given later by kn_tok_set_texts). */
kiln_status kn_tok_set_texts(kn_tokenizer *t, const kn_str *texts, uint32_t n, const char *label,
                             kiln_error *err);
/* Adds a merge of two token texts with the given rank. Returns false if a part or the result
 * is not a token (such merges are ignored, as llama.cpp does). */
kiln_status kn_tok_merges_alloc(kn_tokenizer *t, uint64_t n, kiln_error *err);
bool kn_tok_add_merge(kn_tokenizer *t, const char *a, size_t na, const char *b, size_t nb,
                      int32_t rank);
/* Appends a split step compiled from a PCRE2 pattern. */
kiln_status kn_tok_add_split(kn_tokenizer *t, const char *pattern, kn_split_behavior behavior,
                             bool invert, kiln_error *err);
kiln_status kn_tok_add_norm(kn_tokenizer *t, kn_norm_kind kind, const char *a, const char *b,
                            kiln_error *err);
/* Sets the regex chain for a llama.cpp pre-tokenizer name; KILN_ERR_UNSUPPORTED if unknown. */
kiln_status kn_tok_set_pre(kn_tokenizer *t, const char *pre, kiln_error *err);
bool kn_tok_pre_known(const char *pre);
/* The known pre-tokenizer name a split chain equals, or NULL. */
const char *kn_tok_pre_from_splits(const kn_tokenizer *t);
/* Replaces the normalizer/split chains and options with those kiln wrote under tokenizer.kiln.*
 * (exact round trip of tokenizers llama.cpp's keys cannot describe); no-op when absent. */
kiln_status kn_tok_read_kiln_keys(kn_tokenizer *t, const kn_gguf *g, kiln_error *err);

/* bits of tokenizer.kiln.flags */
enum {
    KN_TKF_DEC_BYTE_LEVEL = 1,
    KN_TKF_DEC_METASPACE = 2,
    KN_TKF_DEC_BYTE_FALLBACK = 4,
    KN_TKF_BYTE_FALLBACK = 8,
    KN_TKF_IGNORE_MERGES = 16,
    KN_TKF_FUSE_UNK = 32,
    KN_TKF_BYTE_LEVEL = 64
};

kn_tokenizer *kn_tok_new(void);

/* Per-call working memory of an encode, grown as needed and reused across pieces. */
typedef struct kn_tok_sym {
    int32_t id;
    int32_t prev, next;
    uint32_t start, n;    /* byte range in the piece (SPM) */
} kn_tok_sym;

typedef struct kn_tok_heap_ent {
    float score;          /* SPM: higher first */
    int32_t rank;         /* BPE: lower first */
    int32_t left, right;
    int32_t lid, rid;     /* BPE: the ids the pair had when queued; SPM: size in lid */
    int32_t mid;          /* BPE: the merged token */
} kn_tok_heap_ent;

typedef struct kn_tok_scratch {
    kn_tok_sym *sym;
    size_t sym_cap;
    kn_tok_heap_ent *heap;
    size_t heap_n, heap_cap;
    char *enc;
    size_t enc_cap;
} kn_tok_scratch;

void kn_tok_scratch_free(kn_tok_scratch *s);
int32_t kn_tok_merge_rank(const kn_tokenizer *t, int32_t l, int32_t r, int32_t *id);
/* Encodes one piece (normalized, not byte-encoded) with the model; false on out of memory. */
bool kn_tok_encode_piece(const kn_tokenizer *t, const char *s, size_t n, kn_tokens *out,
                         kn_tok_scratch *sc);
bool kn_tokens_push(kn_tokens *v, int32_t id);

#endif
