/* bake.c — checkpoint -> offering: choose types, quantize, validate, write atomically.
 *
 * The offering directory is assembled under a hidden temporary name beside the target and
 * renamed into place only after model.gguf has been written, read back and described, so a
 * failed or cancelled bake never leaves a partial offering. */
#include "bake/bake.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bake/openvino/ir.h"
#include "quant/blocks.h"
#include "tokenizer/tokenizer.h"

kiln_bake_params kiln_bake_default_params(void) {
    kiln_bake_params p;
    memset(&p, 0, sizeof p);
    p.quant = KILN_QUANT_DEFAULT;
    p.window = 1024;
    p.chunk = 128;
    p.sink = 4;
    return p;
}

static const char *k_quant_names[] = {"default", "keep", "q4_0", "q4_1", "q8_0",
                                      "int4_sym_g128", "f16"};

kiln_status kiln_quant_from_name(const char *name, kiln_quant *out) {
    for (int i = 0; i < (int)(sizeof k_quant_names / sizeof k_quant_names[0]); i++)
        if (strcmp(name, k_quant_names[i]) == 0) {
            *out = (kiln_quant)i;
            return KILN_OK;
        }
    return KILN_ERR_INVALID_ARG;
}

const char *kiln_quant_name(kiln_quant q) {
    return (unsigned)q < sizeof k_quant_names / sizeof k_quant_names[0] ? k_quant_names[q] : "?";
}

const char *kn_tensor_class(const char *name) {
    if (strcmp(name, "token_embd.weight") == 0) return "token_embd";
    if (strcmp(name, "output.weight") == 0) return "output";
    if (strstr(name, "norm.weight")) return "norm";
    if (strstr(name, ".bias")) return "bias";
    if (strstr(name, ".attn_")) return "attention";
    if (strstr(name, ".ffn_")) return "ffn";
    return "other";
}

static bool is_matrix(const kn_src_tensor *t) {
    return t->n_dims == 2 && strcmp(t->name, "rope_freqs.weight") != 0;
}

uint32_t kn_bake_out_type(const kn_src_tensor *t, kiln_quant quant, int *group) {
    *group = 0;
    if (!is_matrix(t)) return KN_TYPE_F32; /* norms, biases, rope factors: tiny, kept exact */
    switch (quant) {
    case KILN_QUANT_KEEP: return t->type;
    case KILN_QUANT_F16: return KN_TYPE_F16;
    case KILN_QUANT_Q4_0: return t->ne[0] % KN_QK ? KN_TYPE_F16 : KN_TYPE_Q4_0;
    case KILN_QUANT_Q4_1: return t->ne[0] % KN_QK ? KN_TYPE_F16 : KN_TYPE_Q4_1;
    case KILN_QUANT_Q8_0: return t->ne[0] % KN_QK ? KN_TYPE_F16 : KN_TYPE_Q8_0;
    case KILN_QUANT_INT4_SYM_G128:
        /* Stored in the Q4_0 layout (x = d * (nibble - 8) per 32) with one scale repeated over
         * each group, so every GGUF reader reads it and the NPU path recovers the groups. Rows
         * that 128 does not divide use the largest of 64 / 32 that does. */
        for (int g = 128; g >= KN_QK; g /= 2)
            if (t->ne[0] % g == 0) {
                *group = g;
                return KN_TYPE_Q4_0;
            }
        return KN_TYPE_F16;
    default: return KN_TYPE_Q4_0;
    }
}

typedef struct plan {
    const kn_src_tensor *src;
    uint32_t type;
    int group;
} plan;

typedef struct bake_ctx {
    kn_source *src;
    plan *plans;
    int n;
    const kiln_bake_params *p;
    float *f32;          /* one tensor's rows, dequantized */
    uint8_t *scratch;    /* int4 packing */
    uint16_t *scales;
    uint64_t bytes_done, bytes_total;
    double t0;
} bake_ctx;

static kiln_status check_finite(const float *x, int64_t n, const kn_src_tensor *t,
                                kiln_error *err) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return kn_fail(err, KILN_ERR_FORMAT, "%s: tensor %s holds %s at element %lld",
                           t->file, t->name, isnan(x[i]) ? "NaN" : "Inf", (long long)i);
    return KILN_OK;
}

/* Writes one tensor's bytes: kept tensors are copied bit for bit (after a finiteness check),
 * others go through F32 row by row. */
static kiln_status fill(void *user, uint64_t index, uint8_t *dst, uint64_t nbytes,
                        kiln_error *err) {
    bake_ctx *c = user;
    const plan *pl = &c->plans[index];
    const kn_src_tensor *t = pl->src;
    int64_t ne0 = t->ne[0], rows = t->ne[1] * t->ne[2] * t->ne[3];
    kiln_status s = KILN_OK;
    if (pl->type == t->type && !pl->group && !t->plus_one) {
        kn_src_tensor_read_raw(t, dst);
        uint64_t rb = nbytes / (uint64_t)rows;
        for (int64_t r = 0; r < rows && !s; r++) {
            if (!kn_dequantize(t->type, dst + (uint64_t)r * rb, c->f32, ne0))
                return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: tensor %s: cannot read type %s",
                               t->file, t->name, kn_type_name(t->type));
            s = check_finite(c->f32, ne0, t, err);
        }
    } else {
        uint64_t rb;
        kn_row_bytes(pl->type, ne0, &rb);
        for (int64_t r = 0; r < rows && !s; r++) {
            if (!kn_src_tensor_read_f32(t, r, 1, c->f32))
                return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: tensor %s: cannot read type %s",
                               t->file, t->name, kn_type_name(t->type));
            if ((s = check_finite(c->f32, ne0, t, err))) break;
            uint8_t *out = dst + (uint64_t)r * rb;
            if (pl->group)
                kn_quantize_int4_sym_q4_0(c->f32, ne0, pl->group, out, c->scratch, c->scales);
            else if (kn_quantize(pl->type, c->f32, out, ne0) != rb)
                return kn_fail(err, KILN_ERR_INTERNAL, "tensor %s: no quantizer for %s", t->name,
                               kn_type_name(pl->type));
        }
    }
    if (s) return s;
    c->bytes_done += t->nbytes;
    if (c->p->progress) {
        kiln_progress pr = {(int)index + 1, c->n, c->bytes_done, c->bytes_total,
                            kn_now_seconds() - c->t0};
        if (c->p->progress(&pr, c->p->progress_user))
            return kn_fail(err, KILN_ERR_CANCELLED, "bake cancelled");
    }
    return KILN_OK;
}

static int role_order(const char *name) {
    /* token_embd first, then layers in order, then output_norm / output: llama.cpp's order. */
    if (strcmp(name, "token_embd.weight") == 0) return -3;
    if (strcmp(name, "rope_freqs.weight") == 0) return -2;
    if (strncmp(name, "blk.", 4) == 0) return atoi(name + 4);
    return 1 << 30;
}

static int cmp_plan(const void *a, const void *b) {
    const plan *x = a, *y = b;
    int ra = role_order(x->src->name), rb = role_order(y->src->name);
    if (ra != rb) return ra < rb ? -1 : 1;
    return strcmp(x->src->name, y->src->name);
}

static uint32_t file_type_of(kiln_quant q, const kn_source *src) {
    /* llama.cpp's llama_ftype numbering */
    switch (q) {
    case KILN_QUANT_F16: return 1;
    case KILN_QUANT_Q4_0: case KILN_QUANT_INT4_SYM_G128: return 2;
    case KILN_QUANT_Q4_1: return 3;
    case KILN_QUANT_Q8_0: return 7;
    default: {
        uint32_t ft = 0;
        if (src->gguf && kn_gguf_get_u32(src->gguf, "general.file_type", &ft)) return ft;
        const kn_src_tensor *t = kn_source_find(src, "blk.0.attn_q.weight");
        return t && t->type == KN_TYPE_F16 ? 1 : t && t->type == KN_TYPE_BF16 ? 32 : 0;
    }
    }
}

static void provenance_json(const kn_source *src, const kiln_bake_params *p, kiln_quant q,
                            kn_buf *b) {
    char when[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    kn_buf_printf(b, "{\"kiln_version\": \"%s\", \"baked_at\": \"%s\", \"source\": ", KILN_VERSION,
                  when);
    kn_buf_json_str(b, src->label, strlen(src->label));
    kn_buf_printf(b, ", \"source_kind\": \"%s\", \"options\": {\"quant\": \"%s\", \"window\": %d, "
                     "\"chunk\": %d, \"sink\": %d}, \"files\": [",
                  src->kind == KN_SOURCE_GGUF ? "gguf" : "hf", kiln_quant_name(q), p->window,
                  p->chunk, p->sink);
    for (int i = 0; i < src->n_files; i++) {
        const char *base = strrchr(src->files[i].path, '/');
        base = base ? base + 1 : src->files[i].path;
        kn_buf_printf(b, "%s{\"name\": ", i ? ", " : "");
        kn_buf_json_str(b, base, strlen(base));
        kn_buf_printf(b, ", \"sha256\": \"%s\"}", src->files[i].sha256);
    }
    kn_buf_append(b, "]}", 2);
}

/* Metadata: the source's own keys where they stay true (tokenizer, general.*), then everything
 * kiln derives. */
static kiln_status build_metadata(kn_source *src, const kn_contract *c, kiln_quant q,
                                  const kiln_bake_params *p, kn_gguf_writer *w,
                                  kiln_error *err) {
    kn_gguf_set_str(w, "general.architecture", src->hp.arch_name);
    if (src->gguf) {
        const kn_gguf *g = src->gguf;
        kn_str arch;
        kn_gguf_get_str(g, "general.architecture", &arch);
        for (uint64_t i = 0; i < g->n_kv; i++) {
            kn_str k = g->kv[i].key;
            bool arch_key = k.len > arch.len && memcmp(k.ptr, arch.ptr, arch.len) == 0 &&
                            k.ptr[arch.len] == '.';
            if (arch_key || (k.len >= 5 && memcmp(k.ptr, "kiln.", 5) == 0) ||
                kn_str_eq(k, "general.alignment") || kn_str_eq(k, "general.architecture"))
                continue;
            kn_gguf_copy_kv(w, &g->kv[i]);
        }
    } else {
        if (src->name) kn_gguf_set_str(w, "general.name", src->name);
        if (src->tokenizer_json)
            kn_gguf_set_str(w, "tokenizer.huggingface.json", src->tokenizer_json);
        kiln_status s = kn_bake_hf_tokenizer(src, w, err);
        if (s) return s;
        /* generation_config.json / config.json name the ids the model was trained to use */
        if (src->bos_id >= 0) kn_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)src->bos_id);
        if (src->eos_id >= 0) kn_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)src->eos_id);
    }
    kn_gguf_set_u32(w, "general.quantization_version", 2);
    kn_gguf_set_u32(w, "general.file_type", file_type_of(q, src));
    kn_hparams_to_gguf(&src->hp, w);
    kn_contract_to_gguf(c, w);
    kn_gguf_set_str(w, "kiln.version", KILN_VERSION);
    kn_gguf_set_str(w, "kiln.quant", kiln_quant_name(q));
    if (q == KILN_QUANT_INT4_SYM_G128) kn_gguf_set_u32(w, "kiln.quant.group_size", 128);
    kn_buf b = {0};
    provenance_json(src, p, q, &b);
    if (b.oom) {
        kn_buf_free(&b);
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    kn_gguf_set_strn(w, "kiln.provenance", b.data, b.len);
    kn_buf_free(&b);
    return kn_gguf_writer_status(w, err);
}


/* The OpenVINO IR of both cached graphs, from the model.gguf just written (so the IR holds
 * exactly the offering's weights). */
static kiln_status write_openvino(const char *model, const char *dir, const kiln_bake_params *p,
                                  kiln_error *err) {
    kn_gguf *g = NULL;
    kn_hparams hp;
    kn_contract c;
    kiln_status s = kn_gguf_open(model, &g, err);
    if (!s) s = kn_hparams_from_gguf(g, &hp, err);
    if (!s) s = kn_contract_from_gguf(g, &hp, &c, err);
    static const char *graphs[3][3] = {
        {"prefill", "openvino_model.xml", "openvino_model.bin"},
        {"decode", "openvino_decode.xml", "openvino_decode.bin"},
        {"stateless", "openvino_stateless.xml", "openvino_stateless.bin"}};
    for (int i = 0; i < 3 && !s; i++) {
        char *x = kn_path_join(dir, graphs[i][1]), *b = kn_path_join(dir, graphs[i][2]);
        s = x && b ? kn_ov_write_ir_graph(g, &hp, &c, graphs[i][0], p->group_size, x, b, err)
                   : kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        kn_free(x);
        kn_free(b);
    }
    kn_gguf_close(g);
    return s;
}

/* An existing target may be replaced only if it is an offering kiln wrote. */
static kiln_status check_target(const char *out_dir, kiln_error *err) {
    struct stat st;
    if (lstat(out_dir, &st) != 0) return KILN_OK;
    char *m = kn_path_join(out_dir, "manifest.json");
    char *g = kn_path_join(out_dir, "model.gguf");
    char *x = kn_path_join(out_dir, "openvino_model.xml");
    bool offering = S_ISDIR(st.st_mode) && m && g && x && kn_is_file(m) &&
                    (kn_is_file(g) || kn_is_file(x));
    kn_free(x);
    kn_free(m);
    kn_free(g);
    if (!offering)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "%s: exists and is not a kiln offering; "
                       "refusing to overwrite it", out_dir);
    return KILN_OK;
}

kiln_status kiln_bake_from_ir(const char *xml, const char *out_dir,
                              const kiln_bake_params *params, kiln_error *err) {
    kn_error_clear(err);
    kiln_bake_params defaults = kiln_bake_default_params();
    const kiln_bake_params *p = params ? params : &defaults;
    if (!xml || !out_dir || !*out_dir)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "bake: IR and output directory required");
    if (p->window < 1 || p->chunk < 1 || p->chunk > p->window)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "chunk %d must be in [1, window=%d]", p->chunk,
                       p->window);
    kiln_status s = check_target(out_dir, err);
    if (s) return s;
    return kn_bake_from_ir(xml, out_dir, p, err);
}

kiln_status kiln_bake(const char *source, const char *out_dir, const kiln_bake_params *params,
                      kiln_error *err) {
    kn_error_clear(err);
    kiln_bake_params defaults = kiln_bake_default_params();
    const kiln_bake_params *p = params ? params : &defaults;
    if (!source || !out_dir || !*out_dir)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "bake: source and output directory required");
    if ((unsigned)p->quant > KILN_QUANT_F16)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "--quant: unknown scheme %d", (int)p->quant);
    if ((unsigned)p->target > KILN_TARGET_NPU)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "--target: unknown target %d", (int)p->target);
    if (p->group_size != 0 && p->group_size != -1 &&
        (p->group_size < KN_QK || p->group_size > 4096 || p->group_size % KN_QK))
        return kn_fail(err, KILN_ERR_INVALID_ARG,
                       "--group-size %d: use -1 (per channel) or a multiple of 32", p->group_size);
    kiln_status s = check_target(out_dir, err);
    if (s) return s;

    kn_source *src = NULL;
    if ((s = kn_source_open(source, &src, err))) return s;
    /* A GGUF's tokenizer must serve the model before anything is written (an HF folder's is
     * checked, and padded, when it is converted: kn_bake_hf_tokenizer). */
    if (src->gguf && (s = kn_tokenizer_check_gguf(src->gguf, src->hp.n_vocab, err))) {
        kn_source_close(src);
        return s;
    }
    kn_contract c;
    if ((s = kn_contract_build(&src->hp, p->window, p->chunk, p->sink, &c, err))) {
        kn_source_close(src);
        return kn_fail_prefix(err, "bake: ");
    }
    kiln_quant q = p->quant;
    if (q == KILN_QUANT_DEFAULT)
        q = src->quantized ? KILN_QUANT_KEEP
            : p->target == KILN_TARGET_NPU ? KILN_QUANT_INT4_SYM_G128 : KILN_QUANT_Q4_0;

    bake_ctx ctx = {0};
    ctx.src = src;
    ctx.p = p;
    ctx.n = src->n_tensors;
    ctx.plans = kn_calloc((size_t)src->n_tensors, sizeof *ctx.plans);
    int64_t max_row = 1;
    for (int i = 0; i < src->n_tensors; i++) {
        if (src->tensors[i].ne[0] > max_row) max_row = src->tensors[i].ne[0];
        ctx.bytes_total += src->tensors[i].nbytes;
    }
    ctx.f32 = kn_malloc((size_t)max_row * sizeof(float));
    ctx.scratch = kn_malloc((size_t)max_row / 2 + 1);
    ctx.scales = kn_malloc(((size_t)max_row / KN_QK + 1) * sizeof(uint16_t));
    kn_gguf_writer *w = kn_gguf_writer_new();
    kn_stage stage = {0};
    const char *tmp = NULL;
    char *model = NULL, *manifest = NULL;
    FILE *f = NULL;
    kn_buf desc = {0};
    if (!ctx.plans || !ctx.f32 || !ctx.scratch || !ctx.scales || !w) {
        s = kn_fail(err, KILN_ERR_NOMEM, "bake: out of memory");
        goto done;
    }
    for (int i = 0; i < src->n_tensors; i++) {
        ctx.plans[i].src = &src->tensors[i];
        ctx.plans[i].type = kn_bake_out_type(&src->tensors[i], q, &ctx.plans[i].group);
        if (q == KILN_QUANT_INT4_SYM_G128 && ctx.plans[i].group == 0 &&
            ctx.plans[i].type == KN_TYPE_Q4_0)
            ctx.plans[i].group = 32;
    }
    qsort(ctx.plans, (size_t)ctx.n, sizeof *ctx.plans, cmp_plan);
    int n_fallback = 0;
    char first_fallback[128] = ""; /* copied: the source is unmapped before the log below */
    for (int i = 0; i < ctx.n; i++) {
        const plan *pl = &ctx.plans[i];
        kn_gguf_add_tensor(w, pl->src->name, pl->type, pl->src->n_dims, pl->src->ne);
        if (is_matrix(pl->src) && pl->type == KN_TYPE_F16 && q != KILN_QUANT_F16 &&
            q != KILN_QUANT_KEEP && n_fallback++ == 0)
            snprintf(first_fallback, sizeof first_fallback, "%s", pl->src->name);
    }
    if ((s = build_metadata(src, &c, q, p, w, err))) goto done;

    if ((s = kn_stage_begin(&stage, out_dir, err))) goto done;
    tmp = stage.tmp;
    model = kn_path_join(tmp, "model.gguf");
    manifest = kn_path_join(tmp, "manifest.json");
    if (!model || !manifest) {
        s = kn_fail(err, KILN_ERR_NOMEM, "bake: out of memory");
        goto done;
    }
    f = fopen(model, "wb");
    if (!f) {
        s = kn_fail(err, KILN_ERR_WRITE, "%s: cannot create: %s", model, strerror(errno));
        goto done;
    }
    ctx.t0 = kn_now_seconds();
    if ((s = kn_gguf_writer_write(w, f, model, fill, &ctx, err))) goto done;
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        s = kn_fail(err, KILN_ERR_WRITE, "%s: write failed: %s", model, strerror(errno));
        goto done;
    }
    fclose(f);
    f = NULL;
    /* The source is fully read: unmap it before the offering is mapped back for the IR and the
     * manifest, so the two mappings never count in the resident set together (a 7B bf16 source
     * is 14.5 GB, its q4_0 offering 4 GB). */
    kn_source_close(src);
    src = NULL;
    ctx.src = NULL;

    if (p->target != KILN_TARGET_CPU && (s = write_openvino(model, tmp, p, err))) goto done;

    /* Read the written file back and describe it: the manifest is what a reader sees. */
    bool valid = false;
    if ((s = kn_describe_offering(model, KILN_DESCRIBE_JSON, &desc, &valid, err))) goto done;
    if (!valid) {
        s = kn_fail(err, KILN_ERR_INTERNAL, "%s: the written offering fails validation", model);
        goto done;
    }
    if ((s = kn_write_file(manifest, desc.data, desc.len, err))) goto done;

    if ((s = kn_stage_commit(&stage, err))) goto done;
    if (n_fallback)
        kn_log(p->log, p->log_user, KILN_LOG_WARN, "%d tensor(s) with rows that are not a whole "
               "number of %s groups (e.g. %s) stored as F16", n_fallback, kiln_quant_name(q),
               first_fallback);
done:
    if (f) fclose(f);
    kn_stage_end(&stage);
    kn_buf_free(&desc);
    kn_free(model);
    kn_free(manifest);
    kn_gguf_writer_free(w);
    kn_free(ctx.plans);
    kn_free(ctx.f32);
    kn_free(ctx.scratch);
    kn_free(ctx.scales);
    kn_source_close(src);
    return s;
}
