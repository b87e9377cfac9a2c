/* decode.c — ids back to text, whole or streamed.
 *
 * Each token yields bytes (byte-level characters mapped back to bytes, U+2581 to a space,
 * <0xXX> byte tokens to their byte, added tokens verbatim, control tokens only when asked).
 * Those bytes need not be UTF-8 on their own: a character may be split across tokens, and a
 * model may emit a sequence that never completes. The output is always valid UTF-8: complete
 * characters pass, an incomplete tail is held back while more tokens may follow, and ill-formed
 * bytes become U+FFFD (one per maximal ill-formed subpart), never raw bytes.
 */
#include <string.h>

#include "tokenizer/tok_impl.h"

int kn_utf8_classify(const uint8_t *s, size_t n);

static const char k_fffd[] = "\xEF\xBF\xBD";

size_t kn_utf8_sanitize(const uint8_t *src, size_t n, bool final, kn_buf *out) {
    if (n == 0) return 0;
    size_t i = 0, run = 0; /* [run, i) is valid and not yet appended */
    while (i < n) {
        if (src[i] < 0x80) {
            i++;
            continue;
        }
        int l = kn_utf8_classify(src + i, n - i);
        if (l > 0) {
            i += (size_t)l;
            continue;
        }
        if (i > run) kn_buf_append(out, (const char *)src + run, i - run);
        if (l == 0) {
            if (!final) return i;
            kn_buf_append(out, k_fffd, 3);
            return n;
        }
        kn_buf_append(out, k_fffd, 3);
        i += (size_t)-l;
        run = i;
    }
    if (i > run) kn_buf_append(out, (const char *)src + run, i - run);
    return n;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Appends the raw bytes of one token to b. */
static void token_bytes(const kn_tokenizer *t, int32_t id, unsigned flags, kn_buf *b) {
    size_t n;
    const char *s = kn_tokenizer_token_text(t, id, &n);
    switch (t->type[id]) {
    case KN_TOKTYPE_CONTROL:
    case KN_TOKTYPE_UNKNOWN:
        if (flags & KN_DETOK_SPECIAL) kn_buf_append(b, s, n);
        return;
    case KN_TOKTYPE_USER_DEFINED:
        kn_buf_append(b, s, n);
        return;
    case KN_TOKTYPE_UNUSED:
    case KN_TOKTYPE_UNDEFINED:
        return;
    case KN_TOKTYPE_BYTE:
        if (n == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>' &&
            hexval(s[3]) >= 0 && hexval(s[4]) >= 0) {
            char c = (char)(hexval(s[3]) * 16 + hexval(s[4]));
            kn_buf_append(b, &c, 1);
            return;
        }
        break;
    default:
        break;
    }
    if (t->dec_byte_level) {
        size_t i = 0;
        while (i < n) {
            int l = kn_utf8_classify((const uint8_t *)s + i, n - i);
            if (l <= 0) { /* a malformed token text passes through; sanitizing comes later */
                kn_buf_append(b, s + i, 1);
                i++;
                continue;
            }
            uint32_t cp = 0;
            const uint8_t *u = (const uint8_t *)s + i;
            if (l == 1) cp = u[0];
            else if (l == 2) cp = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
            else if (l == 3) cp = ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
            else cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
                      ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
            int byte = kn_cp_to_byte(cp);
            if (byte >= 0) {
                char c = (char)byte;
                kn_buf_append(b, &c, 1);
            } else {
                kn_buf_append(b, s + i, (size_t)l);
            }
            i += (size_t)l;
        }
        return;
    }
    if (t->dec_metaspace) {
        size_t i = 0, run = 0;
        while (i < n) {
            if ((uint8_t)s[i] == 0xE2 && i + 2 < n && (uint8_t)s[i + 1] == 0x96 &&
                (uint8_t)s[i + 2] == 0x81) {
                kn_buf_append(b, s + run, i - run);
                kn_buf_append(b, " ", 1);
                i += 3;
                run = i;
            } else {
                i++;
            }
        }
        kn_buf_append(b, s + run, n - run);
        return;
    }
    kn_buf_append(b, s, n);
}

void kn_detok_stream_init(kn_detok_stream *s, const kn_tokenizer *t, unsigned flags) {
    memset(s, 0, sizeof *s);
    s->t = t;
    s->flags = flags;
}

bool kn_detok_stream_reserve(kn_detok_stream *s) {
    size_t longest = 0;
    for (uint32_t i = 0; i < s->t->n_vocab; i++) {
        size_t len = 0;
        kn_tokenizer_token_text(s->t, (int32_t)i, &len);
        if (len > longest) longest = len;
    }
    /* a token's text can expand (byte tokens to U+FFFD, pieces to spaces); 4x is ample */
    size_t want = longest * 4 + sizeof s->pend + 16;
    if (s->scratch.cap >= want) return true;
    char *d = kn_realloc(s->scratch.data, want);
    if (!d) return false;
    s->scratch.data = d;
    s->scratch.cap = want;
    return true;
}

void kn_detok_stream_free(kn_detok_stream *s) { kn_buf_free(&s->scratch); }

kiln_status kn_detok_stream_push(kn_detok_stream *s, int32_t id, kn_buf *out, kiln_error *err) {
    const kn_tokenizer *t = s->t;
    if (id < 0 || (uint32_t)id >= t->n_vocab)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "token id %d is out of range (vocabulary of %u)",
                       (int)id, t->n_vocab);
    /* the token's bytes, after any held-back ones, in the stream's reused scratch */
    s->scratch.len = 0;
    if (s->npend) kn_buf_append(&s->scratch, (const char *)s->pend, s->npend);
    size_t held = s->npend;
    token_bytes(t, id, s->flags, &s->scratch);
    if (s->scratch.oom) {
        kn_buf_free(&s->scratch);
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory while decoding");
    }
    const kn_buf piece = s->scratch;
    if (piece.len == 0) return KILN_OK;
    size_t start = 0;
    if (!s->started && piece.len > held) {
        for (int k = 0; k < t->dec_strip_lead && start < piece.len && piece.data[start] == ' '; k++)
            start++;
        s->started = true;
    }
    size_t n = piece.len - start;
    size_t used = kn_utf8_sanitize((const uint8_t *)piece.data + start, n, false, out);
    s->npend = n - used;
    if (s->npend > sizeof s->pend) s->npend = 0; /* cannot happen: an incomplete tail is < 4 */
    memcpy(s->pend, piece.data + start + used, s->npend);
    if (out->oom) return kn_fail(err, KILN_ERR_NOMEM, "out of memory while decoding");
    return KILN_OK;
}

void kn_detok_stream_flush(kn_detok_stream *s, kn_buf *out) {
    if (s->npend) kn_utf8_sanitize(s->pend, s->npend, true, out);
    s->npend = 0;
    kn_detok_stream_free(s); /* the stream has ended; a later push simply grows it again */
}

kiln_status kn_detokenize(const kn_tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
                          kn_buf *out, kiln_error *err) {
    kn_detok_stream s;
    kn_detok_stream_init(&s, t, flags);
    for (size_t i = 0; i < n; i++) {
        kiln_status st = kn_detok_stream_push(&s, ids[i], out, err);
        if (st != KILN_OK) {
            kn_detok_stream_free(&s);
            return st;
        }
    }
    kn_detok_stream_flush(&s, out);
    if (out->oom) return kn_fail(err, KILN_ERR_NOMEM, "out of memory while decoding");
    return KILN_OK;
}
