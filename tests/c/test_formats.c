/* test_formats.c — GGUF reader/writer, safetensors reader, contract, fault injection. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bake/bake.h"
#include "cli/cli.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "model/source.h"
#include "kt.h"
#include "model/contract.h"
#include "quant/quant.h"

static const char *stories(void) { return kt_shared("models/stories260K/stories260K.gguf"); }

TEST(gguf_reads_stories260k) {
    kn_gguf *g = NULL;
    kiln_error e;
    CHECK(kn_gguf_open(stories(), &g, &e) == KILN_OK);
    CHECK_EQ_INT(g->version, 3);
    CHECK_EQ_INT(g->n_tensors, 48);
    uint32_t n;
    CHECK(kn_gguf_get_u32(g, "llama.block_count", &n) && n == 5);
    const kn_gguf_kv *tok = kn_gguf_get_arr(g, "tokenizer.ggml.tokens", KN_GGUF_STRING);
    CHECK(tok && tok->arr_n == 512);
    CHECK(kn_str_eq(tok->strs[1], "<s>"));
    const kn_gguf_tensor *t = kn_gguf_find_tensor(g, "blk.0.ffn_down.weight");
    CHECK(t && t->ne[0] == 172 && t->ne[1] == 64 && t->type == KN_TYPE_F32);
    CHECK_EQ_INT(t->nbytes, 172 * 64 * 4);
    kn_hparams hp;
    CHECK(kn_hparams_from_gguf(g, &hp, &e) == KILN_OK);
    CHECK(hp.n_head == 8 && hp.n_head_kv == 4 && hp.head_dim == 8 && hp.n_vocab == 512);
    CHECK(!hp.tied_embeddings && !hp.rope_neox);
    kn_gguf_close(g);
}

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*n);
    if (b && fread(b, 1, *n, f) != *n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    return b;
}

/* Every prefix of a valid file is rejected with a message, never read out of bounds (ASan). */
TEST(gguf_every_truncation_is_an_error) {
    size_t n;
    uint8_t *data = slurp(stories(), &n);
    CHECK(data);
    int failures = 0;
    for (size_t cut = 0; cut < n; cut += (cut < 12000 ? 1 : 4099)) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, data, cut);
        kn_gguf *g = NULL;
        kiln_error e = {0};
        kiln_status s = kn_gguf_open_mem(copy, cut, "cut.gguf", &g, &e);
        if (s == KILN_OK) {
            failures++;
            kn_gguf_close(g);
        } else if (!strstr(e.message, "cut.gguf")) {
            failures++;
        }
        free(copy);
    }
    free(data);
    CHECK_EQ_INT(failures, 0);
}

TEST(gguf_single_byte_corruptions_are_safe) {
    size_t n;
    uint8_t *data = slurp(stories(), &n);
    CHECK(data);
    uint8_t *copy = malloc(n);
    for (size_t pos = 0; pos < 12000; pos += 7) {
        static const uint8_t vals[] = {0x00, 0xff, 0x7f, 0x80};
        for (size_t v = 0; v < sizeof vals; v++) {
            memcpy(copy, data, n);
            copy[pos] = vals[v];
            kn_gguf *g = NULL;
            kiln_error e;
            if (kn_gguf_open_mem(copy, n, "x.gguf", &g, &e) == KILN_OK) kn_gguf_close(g);
        }
    }
    free(copy);
    free(data);
}

static kiln_status fill_pattern(void *user, uint64_t index, uint8_t *dst, uint64_t nbytes,
                                kiln_error *err) {
    (void)user;
    (void)err;
    for (uint64_t i = 0; i < nbytes; i++) dst[i] = (uint8_t)(i * 7 + index);
    return KILN_OK;
}

TEST(gguf_writer_roundtrip_all_value_types) {
    kn_gguf_writer *w = kn_gguf_writer_new();
    CHECK(w);
    kn_gguf_set_u32(w, "a.u32", 4000000000u);
    kn_gguf_set_i32(w, "a.i32", -7);
    kn_gguf_set_u64(w, "a.u64", 1ull << 40);
    kn_gguf_set_f32(w, "a.f32", 0.25f);
    kn_gguf_set_bool(w, "a.bool", true);
    kn_gguf_set_str(w, "a.str", "héllo");
    int32_t arr[3] = {1, -2, 3};
    kn_gguf_set_arr(w, "a.arr", KN_GGUF_INT32, arr, 3);
    kn_str strs[2] = {{"x", 1}, {"", 0}};
    kn_gguf_set_arr_str(w, "a.strs", strs, 2);
    kn_gguf_set_u32(w, "a.u32", 5); /* replaces, keeps position */
    int64_t ne1[2] = {64, 3}, ne2[1] = {5};
    kn_gguf_add_tensor(w, "t.q", KN_TYPE_Q4_0, 2, ne1);
    kn_gguf_add_tensor(w, "t.f", KN_TYPE_F32, 1, ne2);
    char path[512];
    snprintf(path, sizeof path, "%s/w.gguf", kt_tmpdir());
    FILE *f = fopen(path, "wb");
    kiln_error e;
    CHECK(kn_gguf_writer_write(w, f, path, fill_pattern, NULL, &e) == KILN_OK);
    fclose(f);
    kn_gguf_writer_free(w);

    kn_gguf *g = NULL;
    CHECK(kn_gguf_open(path, &g, &e) == KILN_OK);
    uint32_t u;
    int64_t i;
    float fl;
    bool b;
    kn_str s;
    CHECK(kn_gguf_get_u32(g, "a.u32", &u) && u == 5);
    CHECK(g->kv[0].key.len == 5 && memcmp(g->kv[0].key.ptr, "a.u32", 5) == 0);
    CHECK(kn_gguf_get_i64(g, "a.i32", &i) && i == -7);
    CHECK(!kn_gguf_get_u32(g, "a.i32", &u)); /* negative does not fit u32 */
    CHECK(kn_gguf_get_i64(g, "a.u64", &i) && i == (1ll << 40));
    CHECK(kn_gguf_get_f32(g, "a.f32", &fl) && fl == 0.25f);
    CHECK(kn_gguf_get_bool(g, "a.bool", &b) && b);
    CHECK(kn_gguf_get_str(g, "a.str", &s) && kn_str_eq(s, "héllo"));
    const kn_gguf_kv *a = kn_gguf_get_arr(g, "a.arr", KN_GGUF_INT32);
    CHECK(a && a->arr_n == 3 && kn_gguf_arr_i64(a, 1) == -2);
    a = kn_gguf_get_arr(g, "a.strs", KN_GGUF_STRING);
    CHECK(a && a->arr_n == 2 && kn_str_eq(a->strs[0], "x") && a->strs[1].len == 0);
    const kn_gguf_tensor *t = kn_gguf_find_tensor(g, "t.q");
    CHECK(t && t->nbytes == 3 * 2 * 18 && t->data[1] == 7);
    t = kn_gguf_find_tensor(g, "t.f");
    CHECK(t && t->offset % 32 == 0 && t->data[0] == 1);
    kn_gguf_close(g);
}

TEST(gguf_writer_rejects_partial_blocks) {
    kn_gguf_writer *w = kn_gguf_writer_new();
    int64_t ne[2] = {33, 2};
    kn_gguf_add_tensor(w, "bad", KN_TYPE_Q8_0, 2, ne);
    kiln_error e;
    CHECK(kn_gguf_writer_status(w, &e) == KILN_ERR_INVALID_ARG);
    CHECK(strstr(e.message, "bad"));
    kn_gguf_writer_free(w);
}

/* Fault injection: fail each allocation in turn while opening a real file; every failure must
 * come back as an error (ASan catches leaks and bad frees along the way). */
TEST(gguf_open_survives_every_failed_allocation) {
    int ok_after = -1;
    for (int n = 1; n < 200; n++) {
        kn_alloc_fail_after((uint64_t)n);
        kn_gguf *g = NULL;
        kiln_error e;
        kiln_status s = kn_gguf_open(stories(), &g, &e);
        kn_alloc_fail_after(0);
        if (s == KILN_OK) {
            kn_gguf_close(g);
            ok_after = n;
            break;
        }
        CHECKF(s == KILN_ERR_NOMEM, "allocation %d: status %d (%s)", n, s, e.message);
    }
    CHECK(ok_after > 1);
}

TEST(source_open_survives_every_failed_allocation) {
    int ok_after = -1;
    for (int n = 1; n < 2000; n++) {
        kn_alloc_fail_after((uint64_t)n);
        kn_source *s = NULL;
        kiln_error e;
        kiln_status st = kn_source_open(stories(), &s, &e);
        kn_alloc_fail_after(0);
        if (st == KILN_OK) {
            kn_source_close(s);
            ok_after = n;
            break;
        }
        CHECKF(st == KILN_ERR_NOMEM, "allocation %d: status %d (%s)", n, st, e.message);
    }
    CHECK(ok_after > 1);
}

TEST(bake_survives_failed_allocations) {
    const char *dir = kt_tmpdir();
    char out[512];
    snprintf(out, sizeof out, "%s/off", dir);
    int ok = 0;
    for (int n = 1; n < 4000 && !ok; n += 13) {
        kiln_error e;
        kiln_bake_params p = kiln_bake_default_params();
        p.window = 32;
        p.chunk = 8;
        kn_alloc_fail_after((uint64_t)n);
        kiln_status s = kiln_bake(stories(), out, &p, &e);
        kn_alloc_fail_after(0);
        if (s == KILN_OK) ok = 1;
        else {
            CHECKF(s == KILN_ERR_NOMEM, "allocation %d: status %d (%s)", n, s, e.message);
            CHECKF(!kn_is_dir(out), "allocation %d left %s behind", n, out);
        }
    }
    CHECK(ok);
}

TEST(safetensors_rejects_hostile_headers) {
    struct {
        const char *json;
        const char *word;
    } cases[] = {
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", NULL},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", "match"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", "outside"},
        {"{\"a\": {\"dtype\": \"I64\", \"shape\": [1], \"data_offsets\": [0, 8]}}", "I64"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 8]}}", "shape"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1e300], \"data_offsets\": [0, 8]}}", "shape"},
        {"{\"a\": 5}", "object"},
        {"[1, 2]", "JSON"},
        {"{\"a\": {\"dtype\": \"F16\", \"shape\": [4], \"data_offsets\": [8, 0]}}", "outside"},
        /* two tensors sharing bytes: a write to one would alias the other */
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
         "\"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", "overlap"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, "
         "\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", "duplicate"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t hl = strlen(cases[i].json);
        uint8_t buf[512];
        uint64_t h = hl;
        memcpy(buf, &h, 8);
        memcpy(buf + 8, cases[i].json, hl);
        memset(buf + 8 + hl, 0, 8);
        kn_safetensors *st = NULL;
        kiln_error e = {0};
        kiln_status s = kn_safetensors_open_mem(buf, 8 + hl + 8, "t.safetensors", &st, &e);
        if (!cases[i].word) {
            CHECKF(s == KILN_OK, "case %zu: %s", i, e.message);
            CHECK(st->n_tensors == 1 && st->tensors[0].nbytes == 8);
            kn_safetensors_close(st);
        } else {
            CHECKF(s != KILN_OK, "case %zu accepted", i);
            CHECKF(strstr(e.message, cases[i].word) && strstr(e.message, "t.safetensors"),
                   "case %zu: %s", i, e.message);
        }
    }
}

TEST(contract_is_static_and_validated) {
    kn_hparams hp = {0};
    hp.n_layer = 2;
    hp.n_head_kv = 3;
    hp.head_dim = 64;
    hp.n_vocab = 100;
    kn_contract c;
    kiln_error e;
    CHECK(kn_contract_build(&hp, 256, 32, 4, &c, &e) == KILN_OK);
    CHECK_EQ_INT(c.n_graphs, 3);
    CHECK(strcmp(c.graphs[0].name, "prefill") == 0 && c.graphs[0].in[0].shape[1] == 32);
    CHECK(c.graphs[0].in[4].rank == 5 && c.graphs[0].in[4].shape[3] == 256);
    CHECK(kn_contract_build(&hp, 16, 32, 4, &c, &e) == KILN_ERR_INVALID_ARG);
    CHECK(kn_contract_build(&hp, 0, 1, 0, &c, &e) == KILN_ERR_INVALID_ARG);
    CHECK(kn_contract_build(&hp, 16, 8, 16, &c, &e) == KILN_ERR_INVALID_ARG);
    hp.n_vocab = 0; /* a zero dimension anywhere is refused */
    CHECK(kn_contract_build(&hp, 16, 8, 4, &c, &e) == KILN_ERR_INVALID_ARG);
    CHECK(strstr(e.message, "logits"));
}

TEST(hf_config_parsing) {
    kn_hparams hp;
    int bos, eos;
    kiln_error e;
    const char *mistral =
        "{\"architectures\": [\"MistralForCausalLM\"], \"model_type\": \"mistral\", "
        "\"hidden_size\": 4096, \"intermediate_size\": 14336, \"num_hidden_layers\": 32, "
        "\"num_attention_heads\": 32, \"num_key_value_heads\": 8, \"rms_norm_eps\": 1e-05, "
        "\"rope_theta\": 10000.0, \"sliding_window\": 4096, \"vocab_size\": 32000, "
        "\"bos_token_id\": 1, \"eos_token_id\": 2, \"tie_word_embeddings\": false}";
    CHECK(kn_hparams_from_hf_config(mistral, "c.json", &hp, &bos, &eos, &e) == KILN_OK);
    CHECK(hp.arch == KN_ARCH_LLAMA && hp.sliding_window == 4096 && hp.head_dim == 128);
    CHECK(hp.n_head_kv == 8 && bos == 1 && eos == 2 && !hp.rope_neox);
    const char *qwen =
        "{\"model_type\": \"qwen2\", \"hidden_size\": 896, \"intermediate_size\": 4864, "
        "\"num_hidden_layers\": 24, \"num_attention_heads\": 14, \"num_key_value_heads\": 2, "
        "\"vocab_size\": 151936, \"rope_theta\": 1000000.0, \"sliding_window\": 32768, "
        "\"use_sliding_window\": false, \"tie_word_embeddings\": true, "
        "\"eos_token_id\": [151645, 151643]}";
    CHECK(kn_hparams_from_hf_config(qwen, "c.json", &hp, &bos, &eos, &e) == KILN_OK);
    CHECK(hp.arch == KN_ARCH_QWEN2 && hp.qkv_bias && hp.rope_neox && hp.sliding_window == 0);
    CHECK(hp.tied_embeddings && eos == 151645);
    const char *l3 =
        "{\"model_type\": \"llama\", \"hidden_size\": 2048, \"intermediate_size\": 8192, "
        "\"num_hidden_layers\": 16, \"num_attention_heads\": 32, \"num_key_value_heads\": 8, "
        "\"vocab_size\": 128256, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 32.0, "
        "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
        "\"original_max_position_embeddings\": 8192}}";
    CHECK(kn_hparams_from_hf_config(l3, "c.json", &hp, &bos, &eos, &e) == KILN_OK);
    CHECK(hp.rope_scaling == KN_ROPE_SCALING_LLAMA3 && hp.rope_factor == 32.0f &&
          hp.rope_orig_ctx == 8192);
    CHECK(kn_hparams_from_hf_config("{\"model_type\": \"qwen3_moe\"}", "c.json", &hp, &bos,
                                    &eos, &e) == KILN_ERR_UNSUPPORTED);
    CHECK(strstr(e.message, "qwen3_moe"));
    /* Phi-4-mini: partial rotary, LongRoPE with the attention factor transformers computes,
     * its sliding_window not applied (as llama.cpp) */
    const char *p4 =
        "{\"architectures\": [\"Phi3ForCausalLM\"], \"hidden_size\": 3072, "
        "\"intermediate_size\": 8192, \"num_hidden_layers\": 32, \"num_attention_heads\": 24, "
        "\"num_key_value_heads\": 8, \"vocab_size\": 200064, \"partial_rotary_factor\": 0.75, "
        "\"max_position_embeddings\": 131072, \"original_max_position_embeddings\": 4096, "
        "\"sliding_window\": 262144, \"rope_scaling\": {\"type\": \"longrope\", "
        "\"long_factor\": [1], \"short_factor\": [1]}}";
    CHECK(kn_hparams_from_hf_config(p4, "c.json", &hp, &bos, &eos, &e) == KILN_OK);
    CHECK(hp.arch == KN_ARCH_PHI3 && hp.rope_dim == 96 && hp.head_dim == 128 && hp.longrope &&
          hp.rope_orig_ctx == 4096 && hp.sliding_window == 0 && hp.rope_neox);
    CHECK(fabsf(hp.rope_attn_factor - 1.1902381f) < 1e-6f);
    const char *q3 =
        "{\"model_type\": \"qwen3\", \"hidden_size\": 1024, \"intermediate_size\": 3072, "
        "\"num_hidden_layers\": 28, \"num_attention_heads\": 16, \"num_key_value_heads\": 8, "
        "\"head_dim\": 128, \"vocab_size\": 151936}";
    CHECK(kn_hparams_from_hf_config(q3, "c.json", &hp, &bos, &eos, &e) == KILN_OK);
    CHECK(hp.arch == KN_ARCH_QWEN3 && hp.qk_norm && !hp.qkv_bias && hp.head_dim == 128);
    const char *s3 =
        "{\"model_type\": \"smollm3\", \"hidden_size\": 64, \"intermediate_size\": 64, "
        "\"num_hidden_layers\": 8, \"num_attention_heads\": 4, \"vocab_size\": 9, "
        "\"no_rope_layers\": [1, 1, 1, 0, 1, 1, 1, 0]}";
    CHECK(kn_hparams_from_hf_config(s3, "c.json", &hp, &bos, &eos, &e) == KILN_OK);
    CHECK(hp.nope_step == 4 && kn_layer_has_rope(&hp, 2) && !kn_layer_has_rope(&hp, 3) &&
          !kn_layer_has_rope(&hp, 7));
    CHECK(kn_hparams_from_hf_config("{\"model_type\": \"llama\", \"hidden_size\": 64, "
                                    "\"num_attention_heads\": 6, \"intermediate_size\": 8, "
                                    "\"num_hidden_layers\": 1, \"vocab_size\": 9}",
                                    "c.json", &hp, &bos, &eos, &e) != KILN_OK);
}

TEST(exit_codes_follow_the_cli_contract) {
    CHECK_EQ_INT(kiln_exit_code(KILN_OK), 0);
    CHECK_EQ_INT(kiln_exit_code(KILN_ERR_FORMAT), 2);
    CHECK_EQ_INT(kiln_exit_code(KILN_ERR_INVALID_ARG), 2);
    CHECK_EQ_INT(kiln_exit_code(KILN_ERR_IO), 2);
    CHECK_EQ_INT(kiln_exit_code(KILN_ERR_UNSUPPORTED), 2);
    CHECK_EQ_INT(kiln_exit_code(KILN_ERR_DEVICE), 3);
    CHECK_EQ_INT(kiln_exit_code(KILN_ERR_NOMEM), 1);
    CHECK_EQ_INT(kiln_exit_code(KILN_ERR_INTERNAL), 1);
    CHECK_EQ_INT(kiln_exit_code(KILN_ERR_WRITE), 1); /* a full disk is not bad input */
    CHECK_EQ_INT(kiln_exit_code(KILN_ERR_CANCELLED), 130);
    CHECK(strcmp(kiln_status_str(KILN_ERR_WRITE), "unknown status") != 0);
}

TEST(sha256_known_vectors) {
    char h[65];
    kn_sha256_hex("", 0, h);
    CHECK(strcmp(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
    kn_sha256_hex("abc", 3, h);
    CHECK(strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    kn_sha256_hex(m, strlen(m), h);
    CHECK(strcmp(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0);
}
