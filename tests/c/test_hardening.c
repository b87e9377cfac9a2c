/* test_hardening.c — unit-level regression tests for the hostile-input campaign (issue 13);
 * the end-to-end ones are in tests/py/test_hardening.py. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bake/bake.h"
#include "base/base.h"
#include "formats/gguf.h"
#include "formats/json.h"
#include "model/source.h"
#include "kernels/kernels.h"
#include "kt.h"
#include "template/jinja.h"
#include "tokenizer/tokenizer.h"

/* 9: every number read from a file is converted only when it fits. */
TEST(hardening_number_conversions_are_range_checked) {
    int64_t i = 7;
    float f = 7;
    CHECK(kn_f64_to_i64(42.0, 0, 100, &i) && i == 42);
    CHECK(!kn_f64_to_i64(1e300, INT64_MIN, INT64_MAX, &i));
    CHECK(!kn_f64_to_i64(9223372036854775808.0, INT64_MIN, INT64_MAX, &i));
    CHECK(!kn_f64_to_i64(NAN, INT64_MIN, INT64_MAX, &i));
    CHECK(!kn_f64_to_i64(2.5, 0, 10, &i));
    CHECK(!kn_f64_to_i64(-1, 0, 10, &i));
    CHECK(kn_f64_to_f32(1e30, &f) && f == 1e30f);
    CHECK(!kn_f64_to_f32(1e300, &f) && !kn_f64_to_f32(NAN, &f) && !kn_f64_to_f32(INFINITY, &f));

    cJSON *o = cJSON_Parse("{\"a\": 1e300, \"b\": 3, \"c\": null, \"d\": \"x\", \"e\": 1e39}");
    CHECK(o);
    kiln_error e;
    int v = -5;
    CHECK(kn_json_get_i32(o, "a", 0, 100, 1, &v, "f.json", &e) == KILN_ERR_FORMAT);
    CHECKF(strstr(e.message, "f.json: a 1e+300 is not an integer in [0, 100]"), "%s", e.message);
    CHECK(kn_json_get_i32(o, "b", 0, 100, 1, &v, "f.json", &e) == KILN_OK && v == 3);
    CHECK(kn_json_get_i32(o, "c", 0, 100, 9, &v, "f.json", &e) == KILN_OK && v == 9);
    CHECK(kn_json_get_i32(o, "zz", 0, 100, 8, &v, "f.json", &e) == KILN_OK && v == 8);
    CHECK(kn_json_get_i32(o, "d", 0, 100, 1, &v, "f.json", &e) == KILN_ERR_FORMAT);
    CHECK(kn_json_get_f32(o, "e", 1, &f, "f.json", &e) == KILN_ERR_FORMAT);
    CHECK(kn_json_get_f32(o, "b", 1, &f, "f.json", &e) == KILN_OK && f == 3);
    cJSON_Delete(o);
}

/* A GGUF of one F64 key (no tensors), in memory. */
static size_t gguf_one_f64(uint8_t *buf, const char *key, double v) {
    size_t o = 0, kl = strlen(key);
    uint32_t u32;
    uint64_t u64;
    memcpy(buf + o, "GGUF", 4), o += 4;
    u32 = 3, memcpy(buf + o, &u32, 4), o += 4;
    u64 = 0, memcpy(buf + o, &u64, 8), o += 8;
    u64 = 1, memcpy(buf + o, &u64, 8), o += 8;
    u64 = kl, memcpy(buf + o, &u64, 8), o += 8;
    memcpy(buf + o, key, kl), o += kl;
    u32 = KN_GGUF_FLOAT64, memcpy(buf + o, &u32, 4), o += 4;
    memcpy(buf + o, &v, 8), o += 8;
    return o;
}

TEST(hardening_gguf_f64_past_float_range_is_refused) {
    uint8_t buf[256];
    size_t n = gguf_one_f64(buf, "llama.rope.freq_base", 1e300);
    kn_gguf *g = NULL;
    kiln_error e;
    CHECKF(kn_gguf_open_mem(buf, n, "f.gguf", &g, &e) == KILN_OK, "%s", e.message);
    float f = 0;
    CHECK(!kn_gguf_get_f32(g, "llama.rope.freq_base", &f));
    kn_gguf_close(g);
    n = gguf_one_f64(buf, "k", 0.5);
    CHECK(kn_gguf_open_mem(buf, n, "f.gguf", &g, &e) == KILN_OK);
    CHECK(kn_gguf_get_f32(g, "k", &f) && f == 0.5f);
    kn_gguf_close(g);
}

/* 6: text from files is escaped before it can reach a terminal. */
TEST(hardening_escape_makes_one_printable_line) {
    char out[128];
    const char in[] = "a\nb\tc\x1b[2J\x7f\xc2\x9b" "d\xc3\xa9\xff\xe2\x82";
    size_t n = kn_escape(out, sizeof out, in, sizeof in - 1);
    CHECKF(strcmp(out, "a\\nb\\tc\\x1b[2J\\x7f\\u009bd\xc3\xa9\\xff\\xe2\\x82") == 0, "%s", out);
    CHECK(n == strlen(out));
    /* truncation never splits an escape */
    n = kn_escape(out, 6, "ab\x1b" "cd", 5);
    CHECKF(strcmp(out, "ab") == 0 || strcmp(out, "ab\\x1b") == 0, "%s", out);
    CHECK(n < 6);
    kiln_error e;
    kn_fail(&e, KILN_ERR_FORMAT, "%s: tensor '%s'", "f.gguf", "x\nkiln: forged");
    CHECKF(!strchr(e.message, '\n') && strstr(e.message, "x\\nkiln: forged"), "%s", e.message);
    kn_fail_prefix(&e, "%s: ", "pre\x1b");
    CHECKF(strncmp(e.message, "pre\\x1b: f.gguf", 15) == 0, "%s", e.message);
}

/* 12: activations that overflowed quantize to a defined result, in every kernel table: q = 0 and
 * a NaN scale (the products become NaN, which the generation loop reports), never an
 * out-of-range conversion. Finite blocks keep the reference's bits. */
TEST(hardening_quantize_act_non_finite_blocks) {
    enum { N = 32 * 6 };
    float x[N];
    for (int i = 0; i < N; i++) x[i] = (float)((i * 37) % 17) - 8.0f;
    x[32 + 3] = NAN;
    x[64 + 31] = INFINITY;
    x[96] = -INFINITY;
    x[128 + 5] = 1000.0f; /* finite: quantized normally */
    x[160 + 7] = 3e38f;   /* finite, but its scale overflows F16: Inf, defined */
    int8_t q0[N], q1[N];
    float d0[2 * N / 32], d1[2 * N / 32];
    kn_act ref = {.q = q0, .d = d0, .s = d0 + N / 32, .stride = N};
    kn_quantize_act(&ref, x, 1, N);
    for (int b = 1; b <= 3; b++) {
        CHECKF(isnan(d0[b]) && isnan(ref.s[b]), "block %d: scale %g", b, d0[b]);
        for (int i = 0; i < 32; i++) CHECK(q0[b * 32 + i] == 0);
    }
    CHECK(isfinite(d0[0]) && isfinite(d0[4]) && q0[128 + 5] == 127);
    CHECK(isinf(d0[5]) && q0[160 + 7] == 127);
    const kn_kernels *v[] = {kn_kernels_generic(), kn_kernels_avx2(), kn_kernels_avxvnni(),
                             kn_kernels_avx512()};
    for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
        if (!v[k]) continue;
        memset(q1, 0x55, sizeof q1);
        kn_act a = {.q = q1, .d = d1, .s = d1 + N / 32, .stride = N};
        v[k]->quantize(&a, x, 1, N);
        CHECKF(memcmp(q0, q1, sizeof q0) == 0, "%s: q differs", v[k]->name);
        for (int b = 0; b < N / 32; b++)
            CHECKF(isnan(d0[b]) ? isnan(d1[b]) && isnan(a.s[b])
                                : d0[b] == d1[b] && ref.s[b] == a.s[b],
                   "%s: block %d scale %g vs %g", v[k]->name, b, d1[b], d0[b]);
    }
}

/* The committed fuzz seeds (tests/fuzz/seeds) are inputs their parsers accept, so each target
 * starts from the valid side of its format. */
static char *seed_text(const char *rel, size_t *len) {
    char path[512];
    snprintf(path, sizeof path, "../tests/fuzz/seeds/%s", rel);
    char *t = NULL;
    kiln_error e;
    if (kn_read_text(path, 1 << 20, &t, len, &e) == KILN_OK) return t;
    snprintf(path, sizeof path, "tests/fuzz/seeds/%s", rel);
    return kn_read_text(path, 1 << 20, &t, len, &e) == KILN_OK ? t : NULL;
}

TEST(hardening_fuzz_seeds_are_valid_inputs) {
    size_t n;
    kiln_error e;
    char *t = seed_text("gguf/tiny_llama.gguf", &n);
    CHECK(t);
    kn_gguf *g = NULL;
    kn_hparams hp;
    CHECKF(kn_gguf_open_mem(t, n, "tiny", &g, &e) == KILN_OK, "%s", e.message);
    CHECKF(kn_hparams_from_gguf(g, &hp, &e) == KILN_OK, "%s", e.message);
    CHECKF(kn_tokenizer_check_gguf(g, hp.n_vocab, &e) == KILN_OK, "%s", e.message);
    kn_gguf_close(g);
    kn_free(t);
    const char *configs[] = {"hf_config/llama.json", "hf_config/qwen2.json",
                             "hf_config/llama3.json"};
    for (size_t i = 0; i < 3; i++) {
        int bos, eos;
        CHECK((t = seed_text(configs[i], &n)) != NULL);
        CHECKF(kn_hparams_from_hf_config(t, configs[i], &hp, &bos, &eos, &e) == KILN_OK, "%s",
               e.message);
        kn_free(t);
    }
    const char *toks[] = {"hf_tokenizer/bytelevel.json", "hf_tokenizer/spm.json"};
    for (size_t i = 0; i < 2; i++) {
        CHECK((t = seed_text(toks[i], &n)) != NULL);
        size_t jl = strnlen(t, n);
        kn_tokenizer *tok = NULL;
        const char *cfg = jl < n ? t + jl + 1 : NULL;
        CHECKF(kn_tokenizer_load_hf_json(t, jl, cfg, cfg ? n - jl - 1 : 0, toks[i], &tok, &e) ==
                   KILN_OK,
               "%s", e.message);
        kn_tokenizer_free(tok);
        kn_free(t);
    }
    const char *tmpls[] = {"jinja/loops.jinja", "jinja/strings.jinja"};
    kn_chat_msg msgs[] = {{"system", "You are kind."}, {"user", "Hello"}, {"assistant", "Hi!"},
                          {"user", "2+2?"}};
    for (size_t i = 0; i < 2; i++) {
        CHECK((t = seed_text(tmpls[i], &n)) != NULL);
        kn_jinja_vars v = {msgs, 4, true, "<s>", "</s>", NULL};
        char *out = NULL;
        CHECKF(kn_jinja_render(t, &v, &out, &e) == KILN_OK, "%s: %s", tmpls[i], e.message);
        kn_free(out);
        kn_free(t);
    }
    CHECK((t = seed_text("manifest/from_ir.json", &n)) != NULL);
    kn_buf b = {0};
    bool valid = false;
    CHECK(kn_manifest_describe(t, n, "m", NULL, KILN_DESCRIBE_TEXT, &b, &valid, &e) == KILN_OK);
    CHECK(valid && strstr(b.data, "past_key_values.0.key"));
    kn_buf_free(&b);
    kn_free(t);
}
