/* test_tokenizer.c — tokenizer tests: llama.cpp's vocab vectors, stories260K's prompt ids,
 * streaming decode of split UTF-8, malformed input. */
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"
#include "kt.h"
#include "tokenizer/tokenizer.h"

/* The vocabularies of ../shared/tokenizer-vectors with a .gguf (bert-bge is WordPiece, which
 * kiln does not implement; command-r and gemma-4 ship vectors without a vocabulary). */
static const char *const k_vocabs[] = {
    "llama-spm", "phi-3", "gpt-2", "llama-bpe", "qwen2", "qwen35", "starcoder", "refact",
    "deepseek-llm", "deepseek-coder", "falcon", "mpt",
};

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) {
        b[n] = 0;
        *len = (size_t)n;
    }
    return b;
}

static kn_tokenizer *open_vocab(const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, "tokenizer-vectors/ggml-vocab-%s.gguf", name);
    kn_gguf *g = NULL;
    kiln_error err;
    if (kn_gguf_open(kt_shared(rel), &g, &err) != KILN_OK) {
        fprintf(stderr, "    %s: %s\n", name, err.message);
        return NULL;
    }
    kn_tokenizer *t = NULL;
    if (kn_tokenizer_load_gguf(g, &t, &err) != KILN_OK) fprintf(stderr, "    %s: %s\n", name, err.message);
    kn_gguf_close(g);
    return t;
}

/* Runs NAME.gguf.inp against NAME.gguf.out the way llama.cpp's test-tokenizer-0 reads them:
 * inputs separated by "\n__ggml_vocab_test__\n" (so the file's final separator ends the last
 * one), one output line per input, ids space separated. Returns failures; -1 if unreadable. */
static int run_vectors(const kn_tokenizer *t, const char *name, int *total) {
    char rel[256];
    snprintf(rel, sizeof rel, "tokenizer-vectors/ggml-vocab-%s.gguf.inp", name);
    size_t ni = 0, no = 0;
    char *inp = read_all(kt_shared(rel), &ni);
    snprintf(rel, sizeof rel, "tokenizer-vectors/ggml-vocab-%s.gguf.out", name);
    char *outp = read_all(kt_shared(rel), &no);
    if (!inp || !outp) {
        free(inp);
        free(outp);
        return -1;
    }
    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t sl = strlen(sep);
    int fails = 0;
    *total = 0;
    size_t pos = 0;
    char *line = outp;
    while (pos < ni) {
        char *nx = strstr(inp + pos, sep);
        size_t end = nx ? (size_t)(nx - inp) : ni;
        char *eol = line ? strchr(line, '\n') : NULL;
        if (!line || !*line) {
            fails++;
            break;
        }
        if (eol) *eol = 0;
        kn_tokens ids = {0};
        kiln_error err;
        kiln_status st = kn_tokenize(t, inp + pos, end - pos, 0, &ids, &err);
        /* compare with the expected ids */
        bool ok = st == KILN_OK;
        char *p = line;
        size_t k = 0;
        while (ok) {
            while (*p == ' ') p++;
            if (!*p) break;
            long v = strtol(p, &p, 10);
            if (k >= ids.n || ids.ids[k] != v) ok = false;
            k++;
        }
        if (ok && k != ids.n) ok = false;
        (*total)++;
        if (!ok) {
            fails++;
            if (fails <= 3) {
                fprintf(stderr, "    %s: '%.*s'\n      want: %s\n      got: ", name,
                        (int)(end - pos > 60 ? 60 : end - pos), inp + pos, line);
                for (size_t i = 0; i < ids.n && i < 40; i++) fprintf(stderr, "%d ", ids.ids[i]);
                fprintf(stderr, "\n");
            }
        }
        kn_tokens_free(&ids);
        line = eol ? eol + 1 : NULL;
        if (!nx) break;
        pos = end + sl;
    }
    free(inp);
    free(outp);
    return fails;
}

TEST(tokenizer_vectors) {
    int all_fail = 0;
    for (size_t i = 0; i < sizeof k_vocabs / sizeof k_vocabs[0]; i++) {
        kn_tokenizer *t = open_vocab(k_vocabs[i]);
        CHECKF(t != NULL, "cannot load vocab %s", k_vocabs[i]);
        int total = 0;
        int f = run_vectors(t, k_vocabs[i], &total);
        kn_tokenizer_free(t);
        CHECKF(f >= 0, "cannot read vectors of %s", k_vocabs[i]);
        fprintf(stderr, "    vocab %-15s %3d/%3d pass\n", k_vocabs[i], total - f, total);
        all_fail += f;
    }
    fprintf(stderr, "    (bert-bge: WordPiece, not implemented; command-r, gemma-4: no .gguf "
                    "vocabulary, not runnable)\n");
    CHECK_EQ_INT(all_fail, 0);
}

/* stories260K: the PROMPT line of the llama2.c golden run ("Once upon a time", with BOS). */
TEST(tokenizer_stories260k_prompt) {
    size_t n = 0;
    char *ids_txt = read_all(kt_shared("models/stories260K/greedy_once_upon_64.ids"), &n);
    CHECK(ids_txt != NULL);
    char *p = strstr(ids_txt, "PROMPT");
    CHECK(p != NULL);
    p += 6;
    int32_t want[64];
    size_t nw = 0;
    while (*p && *p != '\n' && nw < 64) {
        while (*p == ' ') p++;
        if (*p == '\n' || !*p) break;
        want[nw++] = (int32_t)strtol(p, &p, 10);
    }
    free(ids_txt);
    kn_tokenizer *t = NULL;
    kiln_error err;
    CHECKF(kn_tokenizer_open(kt_shared("models/stories260K/stories260K.gguf"), &t, &err) == KILN_OK,
           "%s", err.message);
    kn_tokens ids = {0};
    CHECK(kn_tokenize(t, "Once upon a time", 16, KN_TOK_ADD_BOS, &ids, &err) == KILN_OK);
    bool same = ids.n == nw;
    for (size_t i = 0; same && i < nw; i++) same = ids.ids[i] == want[i];
    kn_buf out = {0};
    CHECK(kn_detokenize(t, ids.ids, ids.n, 0, &out, &err) == KILN_OK);
    bool text_ok = out.data && strcmp(out.data, "Once upon a time") == 0;
    kn_buf_free(&out);
    kn_tokens_free(&ids);
    kn_tokenizer_free(t);
    CHECK(nw == 5);
    CHECK(same);
    CHECK(text_ok);
}

/* decode(encode(x)) == x over every vector string of the byte-level vocabularies (SPM ones
 * too: the dummy prefix is stripped again), whole and streamed one token at a time. */
TEST(tokenizer_roundtrip_vectors) {
    static const char *const names[] = {"llama-spm", "gpt-2", "llama-bpe", "qwen2", "starcoder",
                                        "deepseek-coder"};
    for (size_t v = 0; v < sizeof names / sizeof names[0]; v++) {
        kn_tokenizer *t = open_vocab(names[v]);
        CHECK(t != NULL);
        char rel[256];
        snprintf(rel, sizeof rel, "tokenizer-vectors/ggml-vocab-%s.gguf.inp", names[v]);
        size_t ni = 0;
        char *inp = read_all(kt_shared(rel), &ni);
        CHECK(inp != NULL);
        int bad = 0, total = 0;
        size_t pos = 0;
        while (pos < ni) {
            char *nx = strstr(inp + pos, "\n__ggml_vocab_test__\n");
            size_t end = nx ? (size_t)(nx - inp) : ni;
            kn_tokens ids = {0};
            kiln_error err;
            kn_buf whole = {0}, streamed = {0};
            kn_tokenize(t, inp + pos, end - pos, 0, &ids, &err);
            kn_detokenize(t, ids.ids, ids.n, 0, &whole, &err);
            kn_detok_stream s;
            kn_detok_stream_init(&s, t, 0);
            for (size_t i = 0; i < ids.n; i++) kn_detok_stream_push(&s, ids.ids[i], &streamed, &err);
            kn_detok_stream_flush(&s, &streamed);
            bool ok = whole.len == end - pos && (whole.len == 0 || !memcmp(whole.data, inp + pos, whole.len)) &&
                      streamed.len == whole.len && (whole.len == 0 || !memcmp(streamed.data, whole.data, whole.len));
            if (!ok) bad++;
            total++;
            kn_buf_free(&whole);
            kn_buf_free(&streamed);
            kn_tokens_free(&ids);
            if (!nx) break;
            pos = end + 21;
        }
        free(inp);
        kn_tokenizer_free(t);
        fprintf(stderr, "    roundtrip %-15s %3d/%3d exact\n", names[v], total - bad, total);
        CHECKF(bad == 0, "%s: %d strings did not decode back exactly", names[v], bad);
    }
}

/* A multi-byte character split across byte tokens comes out only when complete; a sequence
 * that never completes becomes U+FFFD; ids out of range are errors. */
TEST(tokenizer_stream_split_utf8) {
    kn_tokenizer *t = open_vocab("gpt-2");
    CHECK(t != NULL);
    kiln_error err;
    /* "é" is two bytes; in GPT-2 both bytes are tokens of their own */
    int32_t c3 = kn_tokenizer_find(t, "\xc3\x83", 2);  /* byte 0xC3 as its GPT-2 char Ã */
    int32_t a9 = kn_tokenizer_find(t, "\xc2\xa9", 2);  /* byte 0xA9 as © */
    CHECK(c3 >= 0 && a9 >= 0);
    kn_detok_stream s;
    kn_detok_stream_init(&s, t, 0);
    kn_buf out = {0};
    CHECK(kn_detok_stream_push(&s, c3, &out, &err) == KILN_OK);
    CHECK(out.len == 0); /* held back */
    CHECK(kn_detok_stream_push(&s, a9, &out, &err) == KILN_OK);
    CHECK(out.len == 2 && memcmp(out.data, "\xc3\xa9", 2) == 0);
    /* a lead byte, then a token that cannot continue it */
    int32_t x = kn_tokenizer_find(t, "x", 1);
    CHECK(kn_detok_stream_push(&s, c3, &out, &err) == KILN_OK);
    CHECK(kn_detok_stream_push(&s, x, &out, &err) == KILN_OK);
    CHECK(out.len == 6 && memcmp(out.data + 2, "\xef\xbf\xbdx", 4) == 0);
    /* unfinished at the end */
    CHECK(kn_detok_stream_push(&s, c3, &out, &err) == KILN_OK);
    kn_detok_stream_flush(&s, &out);
    CHECK(out.len == 9 && memcmp(out.data + 6, "\xef\xbf\xbd", 3) == 0);
    CHECK(kn_detok_stream_push(&s, (int32_t)kn_tokenizer_n_vocab(t), &out, &err) ==
          KILN_ERR_INVALID_ARG);
    CHECK(kn_detok_stream_push(&s, -1, &out, &err) == KILN_ERR_INVALID_ARG);
    kn_buf_free(&out);
    /* a 4-byte emoji split over four byte tokens */
    kn_tokens ids = {0};
    CHECK(kn_tokenize(t, "\xf0\x9f\xa6\x99", 4, 0, &ids, &err) == KILN_OK);
    kn_detok_stream_init(&s, t, 0);
    size_t seen_before_last = 0;
    for (size_t i = 0; i < ids.n; i++) {
        CHECK(kn_detok_stream_push(&s, ids.ids[i], &out, &err) == KILN_OK);
        if (i + 1 < ids.n) seen_before_last = out.len;
    }
    kn_detok_stream_flush(&s, &out);
    CHECK(ids.n >= 2);
    CHECK(seen_before_last == 0);
    CHECK(out.len == 4 && memcmp(out.data, "\xf0\x9f\xa6\x99", 4) == 0);
    kn_buf_free(&out);
    kn_tokens_free(&ids);
    kn_tokenizer_free(t);
}

/* Invalid UTF-8 input is encoded as if each maximal ill-formed subpart were U+FFFD. */
TEST(tokenizer_invalid_utf8_input) {
    static const char *const names[] = {"llama-spm", "gpt-2", "llama-bpe"};
    static const char bad[] = "a\xff" "b\xc3(\xe2\x82" "c\xed\xa0\x80\xf0\x9f\xa6";
    static const char fixed[] = "a\xef\xbf\xbd" "b\xef\xbf\xbd(\xef\xbf\xbd" "c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd";
    for (size_t v = 0; v < 3; v++) {
        kn_tokenizer *t = open_vocab(names[v]);
        CHECK(t != NULL);
        kiln_error err;
        kn_tokens a = {0}, b = {0};
        CHECK(kn_tokenize(t, bad, sizeof bad - 1, 0, &a, &err) == KILN_OK);
        CHECK(kn_tokenize(t, fixed, sizeof fixed - 1, 0, &b, &err) == KILN_OK);
        bool same = a.n == b.n && a.n > 0 && !memcmp(a.ids, b.ids, a.n * sizeof *a.ids);
        /* NUL bytes and long texts */
        kn_tokens c = {0};
        CHECK(kn_tokenize(t, "a\0b", 3, 0, &c, &err) == KILN_OK);
        CHECK(c.n >= 2);
        kn_tokens_free(&a);
        kn_tokens_free(&b);
        kn_tokens_free(&c);
        kn_tokenizer_free(t);
        CHECKF(same, "%s: sanitized encode differs", names[v]);
    }
}

static kiln_status write_gguf_file(kn_gguf_writer *w, const char *path, kiln_error *err) {
    FILE *f = fopen(path, "wb");
    if (!f) return KILN_ERR_IO;
    kiln_status st = kn_gguf_writer_write(w, f, path, NULL, NULL, err);
    fclose(f);
    return st;
}

/* Hand-broken tokenizer metadata: each is a clear error, never a crash. */
TEST(tokenizer_malformed_gguf) {
    char path[512];
    snprintf(path, sizeof path, "%s/bad.gguf", kt_tmpdir());
    kn_str toks[4] = {{"a", 1}, {"b", 1}, {"ab", 2}, {"\xc4\xa0", 2}};
    kn_str merges_bad[1] = {{"ab", 2}};
    kn_str merges_unknown[2] = {{"a b", 3}, {"x y", 3}};
    float scores[3] = {0, 0, 0};
    int32_t types[2] = {1, 1};
    for (int c = 0; c < 7; c++) {
        kn_gguf_writer *w = kn_gguf_writer_new();
        CHECK(w != NULL);
        switch (c) {
        case 0: /* no tokenizer at all */
            kn_gguf_set_str(w, "general.architecture", "llama");
            break;
        case 1: /* gpt2 without merges */
            kn_gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
            kn_gguf_set_str(w, "tokenizer.ggml.pre", "gpt-2");
            kn_gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, 4);
            break;
        case 2: /* a merge without a space */
            kn_gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
            kn_gguf_set_str(w, "tokenizer.ggml.pre", "gpt-2");
            kn_gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, 4);
            kn_gguf_set_arr_str(w, "tokenizer.ggml.merges", merges_bad, 1);
            break;
        case 3: /* spm with too few scores */
            kn_gguf_set_str(w, "tokenizer.ggml.model", "llama");
            kn_gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, 4);
            kn_gguf_set_arr(w, "tokenizer.ggml.scores", KN_GGUF_FLOAT32, scores, 3);
            break;
        case 4: /* too few token types */
            kn_gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
            kn_gguf_set_str(w, "tokenizer.ggml.pre", "gpt-2");
            kn_gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, 4);
            kn_gguf_set_arr_str(w, "tokenizer.ggml.merges", merges_unknown, 2);
            kn_gguf_set_arr(w, "tokenizer.ggml.token_type", KN_GGUF_INT32, types, 2);
            break;
        case 5: /* unknown pre-tokenizer */
            kn_gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
            kn_gguf_set_str(w, "tokenizer.ggml.pre", "no-such-pre");
            kn_gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, 4);
            kn_gguf_set_arr_str(w, "tokenizer.ggml.merges", merges_unknown, 2);
            break;
        case 6: /* fine: merges naming unknown tokens are skipped; bos out of range ignored */
            kn_gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
            kn_gguf_set_str(w, "tokenizer.ggml.pre", "gpt-2");
            kn_gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, 4);
            kn_gguf_set_arr_str(w, "tokenizer.ggml.merges", merges_unknown, 2);
            kn_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 99);
            break;
        }
        kiln_error err;
        CHECK(write_gguf_file(w, path, &err) == KILN_OK);
        kn_gguf_writer_free(w);
        kn_tokenizer *t = NULL;
        kiln_status st = kn_tokenizer_open(path, &t, &err);
        if (c < 6) {
            CHECKF(st != KILN_OK && t == NULL, "case %d loaded", c);
            CHECKF(strstr(err.message, "bad.gguf") != NULL, "case %d: message lacks the file: %s",
                   c, err.message);
        } else {
            CHECKF(st == KILN_OK, "case %d: %s", c, err.message);
            kn_tokens ids = {0};
            CHECK(kn_tokenize(t, "ab zz", 5, KN_TOK_FORCE_BOS, &ids, &err) == KILN_OK);
            CHECK(ids.n >= 1 && ids.ids[0] == kn_tokenizer_find(t, "ab", 2));
            CHECK(kn_tokenizer_bos(t) == -1);
            kn_tokens_free(&ids);
            kn_tokenizer_free(t);
        }
    }
}

static const char *const k_corpus[] = {
    "Hello world", " Hello World!", "  leading spaces and trailing   ", "\n\n\ttabs\tand\nnewlines\n",
    "Привет, мир! Καλημέρα κόσμε. こんにちは世界。你好，世界！ 안녕하세요",
    "emoji 🦙🚀 😶‍🌫️ ✅ 👩🏽‍💻", "numbers 3 33 333 3333 12345678901234567890 3.14159 -42",
    "def f(x):\n    return x ** 2  # square\n", "<|im_start|>user\nHi<|im_end|>\n",
    "                                                  many spaces", "ÄÖÜ äöü ß é è ê ñ",
};

/* A tokenizer read from GGUF, written with kn_tokenizer_write_gguf and read back encodes the
 * same. */
static bool roundtrip_same(const char *vocab_path, const char *label) {
    kn_tokenizer *a = NULL, *b = NULL;
    kiln_error err;
    if (kn_tokenizer_open(vocab_path, &a, &err) != KILN_OK) {
        fprintf(stderr, "    %s: %s\n", label, err.message);
        return false;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/rt.gguf", kt_tmpdir());
    kn_gguf_writer *w = kn_gguf_writer_new();
    bool ok = w && kn_tokenizer_write_gguf(a, 0, w, &err) == KILN_OK &&
              write_gguf_file(w, path, &err) == KILN_OK &&
              kn_tokenizer_open(path, &b, &err) == KILN_OK;
    kn_gguf_writer_free(w);
    if (!ok) fprintf(stderr, "    %s: %s\n", label, err.message);
    for (size_t i = 0; ok && i < sizeof k_corpus / sizeof k_corpus[0]; i++) {
        kn_tokens x = {0}, y = {0};
        for (unsigned fl = 0; fl < 4; fl++) {
            x.n = y.n = 0;
            kn_tokenize(a, k_corpus[i], strlen(k_corpus[i]), fl, &x, &err);
            kn_tokenize(b, k_corpus[i], strlen(k_corpus[i]), fl, &y, &err);
            if (x.n != y.n || (x.n && memcmp(x.ids, y.ids, x.n * sizeof *x.ids))) {
                fprintf(stderr, "    %s: differs after write/read on '%s'\n", label, k_corpus[i]);
                ok = false;
            }
        }
        kn_tokens_free(&x);
        kn_tokens_free(&y);
    }
    kn_tokenizer_free(a);
    kn_tokenizer_free(b);
    return ok;
}

TEST(tokenizer_write_gguf_roundtrip) {
    CHECK(roundtrip_same(kt_shared("tokenizer-vectors/ggml-vocab-llama-spm.gguf"), "llama-spm"));
    CHECK(roundtrip_same(kt_shared("tokenizer-vectors/ggml-vocab-llama-bpe.gguf"), "llama-bpe"));
    CHECK(roundtrip_same(kt_shared("tokenizer-vectors/ggml-vocab-deepseek-llm.gguf"), "deepseek-llm"));
    CHECK(roundtrip_same(kt_shared("models/stories260K/stories260K.gguf"), "stories260K"));
}

/* A small merge-based SentencePiece-style tokenizer.json (byte fallback, Prepend + Replace,
 * ByteFallback decoder): load, encode, decode, write to GGUF, read back. */
TEST(tokenizer_hf_json_spm_style) {
    static const char json[] =
        "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
        "{\"id\":1,\"content\":\"<s>\",\"special\":true},{\"id\":2,\"content\":\"</s>\",\"special\":true}],"
        "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xe2\x96\x81\"},"
        "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xe2\x96\x81\"}]},"
        "\"pre_tokenizer\":null,"
        "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}]},"
        "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\xe2\x96\x81\"},\"content\":\" \"},"
        "{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]},"
        "\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"fuse_unk\":true,\"unk_token\":\"<unk>\","
        "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"\xe2\x96\x81\":3,\"a\":4,\"b\":5,\"\xe2\x96\x81" "a\":6,\"ab\":7,"
        "\"\xe2\x96\x81" "ab\":8,\"<0xC3>\":9,\"<0xA9>\":10},"
        "\"merges\":[\"\xe2\x96\x81 a\",[\"a\",\"b\"],\"\xe2\x96\x81" "a b\"]}}";
    kn_tokenizer *t = NULL;
    kiln_error err;
    CHECKF(kn_tokenizer_load_hf_json(json, sizeof json - 1, NULL, 0, "test.json", &t, &err) == KILN_OK,
           "%s", err.message);
    kn_tokens ids = {0};
    CHECK(kn_tokenize(t, "ab", 2, KN_TOK_ADD_BOS, &ids, &err) == KILN_OK);
    CHECK(ids.n == 2 && ids.ids[0] == 1 && ids.ids[1] == 8);
    ids.n = 0;
    CHECK(kn_tokenize(t, "a\xc3\xa9 b", 5, 0, &ids, &err) == KILN_OK);
    CHECK(ids.n == 5 && ids.ids[0] == 6 && ids.ids[1] == 9 && ids.ids[2] == 10 && ids.ids[3] == 3 &&
          ids.ids[4] == 5);
    kn_buf out = {0};
    CHECK(kn_detokenize(t, ids.ids, ids.n, 0, &out, &err) == KILN_OK);
    CHECK(out.data && strcmp(out.data, "a\xc3\xa9 b") == 0);
    kn_buf_free(&out);
    /* to GGUF and back */
    char path[512];
    snprintf(path, sizeof path, "%s/spm.gguf", kt_tmpdir());
    kn_gguf_writer *w = kn_gguf_writer_new();
    CHECK(kn_tokenizer_write_gguf(t, 0, w, &err) == KILN_OK);
    CHECK(write_gguf_file(w, path, &err) == KILN_OK);
    kn_gguf_writer_free(w);
    kn_tokenizer *u = NULL;
    CHECKF(kn_tokenizer_open(path, &u, &err) == KILN_OK, "%s", err.message);
    kn_tokens ids2 = {0};
    CHECK(kn_tokenize(u, "a\xc3\xa9 b", 5, 0, &ids2, &err) == KILN_OK);
    CHECK(ids2.n == ids.n && memcmp(ids2.ids, ids.ids, ids.n * sizeof *ids.ids) == 0);
    CHECK(kn_detokenize(u, ids2.ids, ids2.n, 0, &out, &err) == KILN_OK);
    CHECK(out.data && strcmp(out.data, "a\xc3\xa9 b") == 0);
    kn_buf_free(&out);
    kn_tokens_free(&ids);
    kn_tokens_free(&ids2);
    kn_tokenizer_free(u);
    kn_tokenizer_free(t);
    /* broken JSON variants */
    static const char *const broken[] = {
        "{", "[]", "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"ab\"]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"}}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":{\"type\":\"Nope\"}}",
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        kn_tokenizer *x = NULL;
        CHECKF(kn_tokenizer_load_hf_json(broken[i], strlen(broken[i]), NULL, 0, "b.json", &x, &err) != KILN_OK,
               "broken json %zu loaded", i);
        CHECK(x == NULL);
    }
}

/* A macro is outside kiln's Jinja subset, so these marker fragments take the built-in formats. */
#define FALLBACK "{% macro x() %}{% endmacro %}"

TEST(tokenizer_chat_templates) {
    kn_chat_msg m[] = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}};
    char *out = NULL;
    kiln_error err;
    CHECK(kn_chat_render_template(FALLBACK "{% for message in messages %}<|im_start|>...", "", "", NULL, m, 4,
                                  true, &out, &err) == KILN_OK);
    CHECK(strcmp(out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                      "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
                      "<|im_start|>assistant\n") == 0);
    kn_free(out);
    CHECK(kn_chat_render_template(FALLBACK "[INST] <<SYS>>", "<s>", "</s>", NULL, m, 4, true, &out, &err) == KILN_OK);
    CHECK(strcmp(out, "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST]") == 0);
    kn_free(out);
    CHECK(kn_chat_render_template(FALLBACK "x [INST] y", "<s>", "</s>", NULL, m + 1, 3, true, &out, &err) == KILN_OK);
    CHECK(strcmp(out, "<s>[INST] Hi [/INST]Hello!</s>[INST] Bye [/INST]") == 0);
    kn_free(out);
    CHECK(kn_chat_render_template(FALLBACK "<|user|>", "<s>", "</s>", NULL, m, 2, true, &out, &err) == KILN_OK);
    CHECK(strcmp(out, "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n") == 0);
    kn_free(out);
    CHECK(kn_chat_render_template(FALLBACK "### User:", "", "", NULL, m, 2, true, &out, &err) == KILN_OK);
    CHECK(strcmp(out, "### System:\nBe brief.\n### User:\nHi\n### Assistant:\n") == 0);
    kn_free(out);
    CHECK(kn_chat_render_template(FALLBACK "<|start_header_id|>", "<|begin_of_text|>", "", NULL, m, 2, true, &out, &err) == KILN_OK);
    CHECK(strcmp(out, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                      "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n") == 0);
    kn_free(out);
    CHECK(kn_chat_render_template(FALLBACK "<start_of_turn>", "<bos>", "", NULL, m, 2, true, &out, &err) == KILN_OK);
    CHECK(strcmp(out, "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n") == 0);
    kn_free(out);
    CHECK(kn_chat_render_template("{{ something else }}", "", "", NULL, m, 2, true, &out, &err) ==
          KILN_ERR_FORMAT);
    CHECK(strstr(err.message, "else") != NULL);
    /* SmolLM2's own template, through the model */
    kn_tokenizer *t = NULL;
    CHECKF(kn_tokenizer_open(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf", &t, &err) == KILN_OK,
           "%s (run scripts/fetch_models.sh)", err.message);
    {
        CHECK(kn_chat_detect(kn_tokenizer_chat_template(t)) != NULL);
        CHECK(kn_chat_render(t, NULL, NULL, m + 1, 1, true, &out, &err) == KILN_OK);
        CHECK(strstr(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n") != NULL);
        kn_free(out);
        CHECK(kn_tokenizer_is_eog(t, kn_tokenizer_find(t, "<|im_end|>", 10)));
        kn_tokenizer_free(t);
    }
}
