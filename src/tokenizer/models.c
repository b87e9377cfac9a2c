/* models.c — the two merge algorithms that turn one pre-tokenized piece into ids.
 *
 * SPM (llama.cpp's llm_tokenizer_spm, after SentencePiece's BPE): start from UTF-8 characters,
 * repeatedly merge the adjacent pair whose concatenation is the token with the highest score
 * (leftmost on ties); characters that never form a token fall back to <0xXX> byte tokens.
 *
 * BPE (GPT-2 / HF tokenizers): start from bytes mapped to characters (byte-level) or from UTF-8
 * characters (byte fallback), repeatedly apply the adjacent merge of lowest rank (leftmost on
 * ties). Both use a binary heap with lazy invalidation, so a piece of n symbols costs
 * O(n log n) even for long runs of whitespace.
 */
#include <string.h>

#include "tokenizer/tok_impl.h"

void kn_tok_scratch_free(kn_tok_scratch *s) {
    kn_free(s->sym);
    kn_free(s->heap);
    kn_free(s->enc);
    memset(s, 0, sizeof *s);
}

static bool grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = kn_realloc(*p, c * elem);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

/* true when a should come out of the heap before b */
static inline bool heap_before(const kn_tok_heap_ent *a, const kn_tok_heap_ent *b, bool spm) {
    if (spm) {
        if (a->score != b->score) return a->score > b->score;
    } else if (a->rank != b->rank) {
        return a->rank < b->rank;
    }
    return a->left < b->left;
}

static bool heap_push(kn_tok_scratch *sc, kn_tok_heap_ent e, bool spm) {
    if (!grow((void **)&sc->heap, &sc->heap_cap, sc->heap_n + 1, sizeof e)) return false;
    size_t i = sc->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_before(&e, &sc->heap[p], spm)) break;
        sc->heap[i] = sc->heap[p];
        i = p;
    }
    sc->heap[i] = e;
    return true;
}

static kn_tok_heap_ent heap_pop(kn_tok_scratch *sc, bool spm) {
    kn_tok_heap_ent top = sc->heap[0];
    kn_tok_heap_ent last = sc->heap[--sc->heap_n];
    size_t n = sc->heap_n, i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const kn_tok_heap_ent *best = &last;
        if (l < n && heap_before(&sc->heap[l], best, spm)) {
            m = l;
            best = &sc->heap[l];
        }
        if (r < n && heap_before(&sc->heap[r], best, spm)) m = r;
        if (m == i) break;
        sc->heap[i] = sc->heap[m];
        i = m;
    }
    if (n) sc->heap[i] = last;
    return top;
}

/* ---- SPM ---- */

static bool spm_try_bigram(const kn_tokenizer *t, kn_tok_scratch *sc, const char *s, int left,
                           int right) {
    if (left < 0 || right < 0) return true;
    const kn_tok_sym *l = &sc->sym[left], *r = &sc->sym[right];
    int32_t id = kn_tokenizer_find(t, s + l->start, l->n + r->n);
    if (id < 0) return true;
    kn_tok_heap_ent e = {.score = t->score[id], .left = left, .right = right,
                         .lid = (int32_t)(l->n + r->n)};
    return heap_push(sc, e, true);
}

static bool spm_encode(const kn_tokenizer *t, const char *s, size_t n, kn_tokens *out,
                       kn_tok_scratch *sc) {
    size_t ns = 0;
    for (size_t o = 0; o < n; ns++) o += kn_utf8_len((uint8_t)s[o]);
    if (!grow((void **)&sc->sym, &sc->sym_cap, ns, sizeof *sc->sym)) return false;
    size_t o = 0;
    for (size_t i = 0; i < ns; i++) {
        size_t len = kn_utf8_len((uint8_t)s[o]);
        if (len > n - o) len = n - o;
        sc->sym[i] = (kn_tok_sym){.id = -1, .prev = (int32_t)i - 1,
                                  .next = i + 1 < ns ? (int32_t)i + 1 : -1,
                                  .start = (uint32_t)o, .n = (uint32_t)len};
        o += len;
    }
    sc->heap_n = 0;
    for (size_t i = 1; i < ns; i++)
        if (!spm_try_bigram(t, sc, s, (int)i - 1, (int)i)) return false;
    while (sc->heap_n) {
        kn_tok_heap_ent e = heap_pop(sc, true);
        kn_tok_sym *l = &sc->sym[e.left], *r = &sc->sym[e.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != (uint32_t)e.lid) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sc->sym[r->next].prev = e.left;
        if (!spm_try_bigram(t, sc, s, l->prev, e.left)) return false;
        if (!spm_try_bigram(t, sc, s, e.left, l->next)) return false;
    }
    for (int i = ns ? 0 : -1; i >= 0; i = sc->sym[i].next) {
        const kn_tok_sym *y = &sc->sym[i];
        int32_t id = kn_tokenizer_find(t, s + y->start, y->n);
        if (id >= 0) {
            if (!kn_tokens_push(out, id)) return false;
            continue;
        }
        for (uint32_t j = 0; j < y->n; j++) {
            int32_t b = t->byte_id[(uint8_t)s[y->start + j]];
            if (b < 0) {
                char c = s[y->start + j];
                b = kn_tokenizer_find(t, &c, 1);
            }
            if (b < 0) b = t->unk;
            if (b >= 0 && !kn_tokens_push(out, b)) return false;
        }
    }
    return true;
}

/* ---- BPE ---- */

static bool bpe_try_pair(const kn_tokenizer *t, kn_tok_scratch *sc, int left, int right) {
    if (left < 0 || right < 0) return true;
    int32_t lid = sc->sym[left].id, rid = sc->sym[right].id, mid;
    if (lid < 0 || rid < 0) return true;
    int32_t rank = kn_tok_merge_rank(t, lid, rid, &mid);
    if (rank < 0) return true;
    kn_tok_heap_ent e = {.rank = rank, .left = left, .right = right, .lid = lid, .rid = rid,
                         .mid = mid};
    return heap_push(sc, e, false);
}

static bool bpe_encode(const kn_tokenizer *t, const char *s, size_t n, kn_tokens *out,
                       kn_tok_scratch *sc) {
    if (t->ignore_merges) {
        int32_t id = -1;
        if (t->byte_level) {
            if (!grow((void **)&sc->enc, &sc->enc_cap, n * 2 + 1, 1)) return false;
            size_t m = 0;
            for (size_t i = 0; i < n; i++)
                m += (size_t)kn_utf8_put(kn_byte_to_cp((uint8_t)s[i]), sc->enc + m);
            id = kn_tokenizer_find(t, sc->enc, m);
        } else {
            id = kn_tokenizer_find(t, s, n);
        }
        if (id >= 0) return kn_tokens_push(out, id);
    }
    /* Initial symbols: one per byte (byte-level) or per character; at most n. */
    if (!grow((void **)&sc->sym, &sc->sym_cap, n, sizeof *sc->sym)) return false;
    size_t ns = 0;
    if (t->byte_level) {
        for (size_t i = 0; i < n; i++)
            sc->sym[ns++] = (kn_tok_sym){.id = t->byte_id[(uint8_t)s[i]], .start = (uint32_t)i,
                                         .n = 1};
    } else {
        size_t o = 0;
        bool prev_unk = false;
        while (o < n) {
            size_t len = kn_utf8_len((uint8_t)s[o]);
            if (len > n - o) len = n - o;
            int32_t id = kn_tokenizer_find(t, s + o, len);
            if (id >= 0) {
                sc->sym[ns++] = (kn_tok_sym){.id = id, .start = (uint32_t)o, .n = (uint32_t)len};
                prev_unk = false;
            } else {
                bool all = t->byte_fallback;
                for (size_t j = 0; all && j < len; j++) all = t->byte_id[(uint8_t)s[o + j]] >= 0;
                if (all) {
                    for (size_t j = 0; j < len; j++)
                        sc->sym[ns++] = (kn_tok_sym){.id = t->byte_id[(uint8_t)s[o + j]],
                                                     .start = (uint32_t)(o + j), .n = 1};
                    prev_unk = false;
                } else if (t->unk >= 0) {
                    if (t->fuse_unk && prev_unk) {
                        sc->sym[ns - 1].n += (uint32_t)len;
                    } else {
                        sc->sym[ns++] = (kn_tok_sym){.id = t->unk, .start = (uint32_t)o,
                                                     .n = (uint32_t)len};
                    }
                    prev_unk = true;
                }
                /* no unk token and no byte fallback: the character is dropped, as HF does */
            }
            o += len;
        }
    }
    for (size_t i = 0; i < ns; i++) {
        sc->sym[i].prev = (int32_t)i - 1;
        sc->sym[i].next = i + 1 < ns ? (int32_t)i + 1 : -1;
    }
    sc->heap_n = 0;
    for (size_t i = 1; i < ns; i++)
        if (!bpe_try_pair(t, sc, (int)i - 1, (int)i)) return false;
    while (sc->heap_n) {
        kn_tok_heap_ent e = heap_pop(sc, false);
        kn_tok_sym *l = &sc->sym[e.left], *r = &sc->sym[e.right];
        if (l->n == 0 || r->n == 0 || l->next != e.right || l->id != e.lid || r->id != e.rid)
            continue;
        l->id = e.mid;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sc->sym[r->next].prev = e.left;
        if (!bpe_try_pair(t, sc, l->prev, e.left)) return false;
        if (!bpe_try_pair(t, sc, e.left, l->next)) return false;
    }
    for (int i = ns ? 0 : -1; i >= 0; i = sc->sym[i].next) {
        int32_t id = sc->sym[i].id;
        if (id < 0) id = t->unk;
        if (id >= 0 && !kn_tokens_push(out, id)) return false;
    }
    return true;
}

bool kn_tok_encode_piece(const kn_tokenizer *t, const char *s, size_t n, kn_tokens *out,
                         kn_tok_scratch *sc) {
    if (n == 0) return true;
    if (n > UINT32_MAX / 2) return false;
    if (t->model == KN_TOKMODEL_SPM) return spm_encode(t, s, n, out, sc);
    return bpe_encode(t, s, n, out, sc);
}
