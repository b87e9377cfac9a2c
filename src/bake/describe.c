/* describe.c — manifest.json and `kiln inspect`: one description, as JSON or as text. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/openvino/ir_check.h"
#include "bake/bake.h"
#include "base/limits.h"
#include "formats/json.h"
#include "quant/quant.h"
#include "tokenizer/tokenizer.h"

#define MAX_CHECKS 12

typedef struct tinfo {
    const char *name;
    int name_len;
    uint32_t type;
    uint32_t n_dims;
    int64_t ne[4];
} tinfo;

typedef struct desc {
    bool offering;
    const char *path;
    const char *name;
    const char *source_kind;     /* "offering", "gguf", "hf" */
    const char *quant;
    int group_size;
    const kn_hparams *hp;
    const kn_contract *c;
    tinfo *t;
    int n_t;
    /* tokenizer */
    const char *tok_model, *tok_pre;
    int tok_model_len, tok_pre_len;
    int64_t n_tokens, n_merges;
    int64_t bos, eos;
    bool chat_template, hf_json;
    kn_str provenance;           /* JSON text, or empty */
    bool ov_prefill, ov_decode, ov_stateless; /* OpenVINO IR files beside model.gguf */
    /* validation */
    int n_checks;
    const char *check_name[MAX_CHECKS];
    bool check_ok[MAX_CHECKS];
    char check_msg[MAX_CHECKS][256];
} desc;

static void add_check(desc *d, const char *name, bool ok, const char *msg) {
    if (d->n_checks >= MAX_CHECKS) return;
    d->check_name[d->n_checks] = name;
    d->check_ok[d->n_checks] = ok;
    size_t n = msg ? strnlen(msg, sizeof d->check_msg[0] - 1) : 0;
    if (n) memcpy(d->check_msg[d->n_checks], msg, n);
    d->check_msg[d->n_checks][n] = 0;
    d->n_checks++;
}

static bool desc_valid(const desc *d) {
    for (int i = 0; i < d->n_checks; i++)
        if (!d->check_ok[i]) return false;
    return true;
}

static const char *rope_scaling_name(kn_rope_scaling s) {
    return s == KN_ROPE_SCALING_LINEAR ? "linear" : s == KN_ROPE_SCALING_LLAMA3 ? "llama3" : "none";
}

/* Counts per class and type, in first-seen order. */
typedef struct cls_count {
    const char *cls;
    uint32_t type;
    int n;
} cls_count;

static int class_counts(const desc *d, cls_count *out, int cap) {
    int n = 0;
    for (int i = 0; i < d->n_t; i++) {
        char nm[128];
        snprintf(nm, sizeof nm, "%.*s", d->t[i].name_len, d->t[i].name);
        const char *cls = kn_tensor_class(nm);
        int j;
        for (j = 0; j < n; j++)
            if (strcmp(out[j].cls, cls) == 0 && out[j].type == d->t[i].type) break;
        if (j == n && n < cap) out[n++] = (cls_count){cls, d->t[i].type, 0};
        if (j < n) out[j].n++;
    }
    return n;
}

static void append_cjson(kn_buf *b, const char *txt);

/* The provenance as JSON: the file's text only if it is JSON, printed by cJSON (so it cannot
 * break the document) with DEL and C1 escaped too; otherwise as a string. */
static void provenance_json(kn_buf *b, kn_str prov) {
    if (!prov.len) {
        kn_buf_printf(b, "null");
        return;
    }
    cJSON *j = cJSON_ParseWithLength(prov.ptr, (size_t)prov.len);
    char *txt = j ? cJSON_PrintUnformatted(j) : NULL;
    if (txt) {
        append_cjson(b, txt);
    } else {
        kn_buf_json_str(b, prov.ptr, (size_t)prov.len);
    }
    cJSON_free(txt);
    cJSON_Delete(j);
}

/* Which RoPE frequency divisors the forward uses (kn_rope_factors' choice). */
static const char *rope_factors_name(const kn_hparams *hp, int window) {
    if (hp->rope_freqs) return "rope_freqs";
    if (hp->longrope) return window > hp->rope_orig_ctx ? "longrope_long" : "longrope_short";
    return "none";
}

/* "attention per layer: 0-4 sliding 512, 5 global, ..." in runs of one kind. */
static void layer_windows_text(const kn_hparams *hp, kn_buf *b) {
    kn_buf_printf(b, "\n  attention per layer:");
    for (int l = 0; l < hp->n_layer;) {
        int w = kn_hparams_layer_window(hp, l), e = l;
        while (e + 1 < hp->n_layer && kn_hparams_layer_window(hp, e + 1) == w) e++;
        if (e > l) kn_buf_printf(b, "%s %d-%d", l ? "," : "", l, e);
        else kn_buf_printf(b, "%s %d", l ? "," : "", l);
        if (w > 0) kn_buf_printf(b, " sliding %d", w);
        else kn_buf_printf(b, " global");
        l = e + 1;
    }
}

static void render_json(const desc *d, kn_buf *b) {
    const kn_hparams *hp = d->hp;
    const kn_contract *c = d->c;
    kn_buf_printf(b, "{\n  \"format\": \"kiln-offering\",\n  \"format_version\": %d,\n"
                     "  \"kiln_version\": \"%s\",\n  \"baked\": %s,\n  \"source_kind\": \"%s\",\n",
                  KN_FORMAT_VERSION, KILN_VERSION, d->offering ? "true" : "false", d->source_kind);
    if (d->offering) kn_buf_printf(b, "  \"model_file\": \"model.gguf\",\n");
    kn_buf_printf(b, "  \"name\": ");
    kn_buf_json_str(b, d->name ? d->name : "", d->name ? strlen(d->name) : 0);
    kn_buf_printf(b, ",\n  \"architecture\": \"%s\",\n", hp->arch_name);
    kn_buf_printf(b,
                  "  \"hparams\": {\"n_layer\": %d, \"n_embd\": %d, \"n_head\": %d, "
                  "\"n_head_kv\": %d, \"head_dim\": %d, \"n_ff\": %d, \"n_vocab\": %d, "
                  "\"n_ctx_train\": %d, \"rope_theta\": %.9g, \"rope_dim\": %d, "
                  "\"rope_neox\": %s, \"rope_scaling\": \"%s\", \"rope_factor\": %.9g, "
                  "\"rms_eps\": %.9g, \"sliding_window\": %d, \"tied_embeddings\": %s, "
                  "\"qkv_bias\": %s, \"qk_norm\": %s, \"rope_freq_factors\": \"%s\", "
                  "\"rope_attn_factor\": %.9g, \"attn_scale\": %.9g, "
                  "\"attn_logit_softcap\": %.9g, \"final_logit_softcap\": %.9g, "
                  "\"no_rope_layers\": [",
                  hp->n_layer, hp->n_embd, hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_ff,
                  hp->n_vocab, hp->n_ctx_train, hp->rope_theta, hp->rope_dim,
                  hp->rope_neox ? "true" : "false", rope_scaling_name(hp->rope_scaling),
                  hp->rope_scaling ? hp->rope_factor : 1.0, hp->rms_eps, hp->sliding_window,
                  hp->tied_embeddings ? "true" : "false", hp->qkv_bias ? "true" : "false",
                  hp->qk_norm ? "true" : "false", rope_factors_name(hp, c->window),
                  hp->rope_attn_factor, hp->attn_scale, hp->attn_softcap, hp->final_softcap);
    for (int l = 0, n = 0; l < hp->n_layer; l++)
        if (!kn_layer_has_rope(hp, l)) kn_buf_printf(b, "%s%d", n++ ? ", " : "", l);
    kn_buf_printf(b, "]},\n");
    kn_buf_printf(b,
                  "  \"contract\": {\"window\": %d, \"chunk\": %d, \"batch\": %d, \"sink\": %d, "
                  "\"kv_cache\": {\"layout\": \"[n_layer, 2, n_head_kv, window, head_dim]\", "
                  "\"dtype\": \"%s\", \"shape\": [%d, 2, %d, %d, %d]},\n    \"graphs\": ",
                  c->window, c->chunk, c->batch, c->sink, c->kv_dtype, hp->n_layer, hp->n_head_kv,
                  c->window, hp->head_dim);
    kn_contract_graphs_json(c, b);
    /* each layer's sliding window, 0 = global (it sees every slot the contract keeps) */
    kn_buf_printf(b, ",\n    \"layer_window\": [");
    for (int l = 0; l < hp->n_layer; l++)
        kn_buf_printf(b, "%s%d", l ? ", " : "", kn_hparams_layer_window(hp, l));
    kn_buf_printf(b, "]");
    kn_buf_printf(b, "},\n  \"quantization\": {\"scheme\": \"%s\"", d->quant);
    if (d->group_size) kn_buf_printf(b, ", \"group_size\": %d", d->group_size);
    cls_count cc[64];
    int ncc = class_counts(d, cc, 64);
    kn_buf_printf(b, ", \"classes\": {");
    const char *last = NULL;
    for (int i = 0; i < ncc; i++) {
        /* group entries of one class together */
        bool seen = false;
        for (int j = 0; j < i; j++) seen |= strcmp(cc[j].cls, cc[i].cls) == 0;
        if (seen) continue;
        kn_buf_printf(b, "%s\"%s\": {", last ? ", " : "", cc[i].cls);
        last = cc[i].cls;
        int k = 0;
        for (int j = i; j < ncc; j++)
            if (strcmp(cc[j].cls, cc[i].cls) == 0)
                kn_buf_printf(b, "%s\"%s\": %d", k++ ? ", " : "", kn_type_name(cc[j].type),
                              cc[j].n);
        kn_buf_append(b, "}", 1);
    }
    kn_buf_printf(b, "},\n    \"tensors\": [");
    for (int i = 0; i < d->n_t; i++) {
        kn_buf_printf(b, "%s\n      {\"name\": ", i ? "," : "");
        kn_buf_json_str(b, d->t[i].name, (size_t)d->t[i].name_len);
        kn_buf_printf(b, ", \"type\": \"%s\", \"shape\": [", kn_type_name(d->t[i].type));
        for (uint32_t k = 0; k < d->t[i].n_dims; k++)
            kn_buf_printf(b, "%s%lld", k ? ", " : "", (long long)d->t[i].ne[k]);
        kn_buf_append(b, "]}", 2);
    }
    kn_buf_printf(b, "]},\n  \"tokenizer\": {\"model\": ");
    kn_buf_json_str(b, d->tok_model ? d->tok_model : "", (size_t)d->tok_model_len);
    kn_buf_printf(b, ", \"pre\": ");
    kn_buf_json_str(b, d->tok_pre ? d->tok_pre : "", (size_t)d->tok_pre_len);
    kn_buf_printf(b, ", \"n_tokens\": %lld, \"n_merges\": %lld, \"bos_token_id\": %lld, "
                     "\"eos_token_id\": %lld, \"chat_template\": %s, \"huggingface_json\": %s},\n",
                  (long long)d->n_tokens, (long long)d->n_merges, (long long)d->bos,
                  (long long)d->eos, d->chat_template ? "true" : "false",
                  d->hf_json ? "true" : "false");
    if (d->offering) {
        kn_buf_printf(b, "  \"openvino\": ");
        if (d->ov_prefill || d->ov_decode || d->ov_stateless)
            kn_buf_printf(b, "{\"prefill\": %s, \"decode\": %s, \"stateless\": %s},\n",
                          d->ov_prefill ? "\"openvino_model.xml\"" : "null",
                          d->ov_decode ? "\"openvino_decode.xml\"" : "null",
                          d->ov_stateless ? "\"openvino_stateless.xml\"" : "null");
        else
            kn_buf_printf(b, "null,\n");
    }
    kn_buf_printf(b, "  \"provenance\": ");
    provenance_json(b, d->provenance);
    kn_buf_printf(b, ",\n  \"validation\": {\"ok\": %s, \"checks\": [",
                  desc_valid(d) ? "true" : "false");
    for (int i = 0; i < d->n_checks; i++) {
        kn_buf_printf(b, "%s\n    {\"check\": \"%s\", \"ok\": %s, \"detail\": ", i ? "," : "",
                      d->check_name[i], d->check_ok[i] ? "true" : "false");
        kn_buf_json_str(b, d->check_msg[i], strlen(d->check_msg[i]));
        kn_buf_append(b, "}", 1);
    }
    kn_buf_printf(b, "]}\n}\n");
}

static void shape_str(const kn_io *x, char *s, size_t n) {
    size_t o = (size_t)snprintf(s, n, "[");
    for (int d = 0; d < x->rank && o < n; d++)
        o += (size_t)snprintf(s + o, n - o, "%s%lld", d ? ", " : "", (long long)x->shape[d]);
    if (o < n) snprintf(s + o, n - o, "]");
}

/* What the architecture's block does beyond the Llama one (model/arch.h), on one line. */
static void block_flags(const desc *d, kn_buf *b) {
    const kn_hparams *hp = d->hp;
    size_t start = b->len;
    kn_buf_printf(b, "\n  block:");
    if (hp->qk_norm) kn_buf_printf(b, " qk norm (per head, before RoPE);");
    if (hp->qkv_bias) kn_buf_printf(b, " qkv bias;");
    kn_buf_printf(b, " rope %s", hp->rope_neox ? "neox (halves)" : "adjacent pairs");
    if (hp->rope_dim < hp->head_dim)
        kn_buf_printf(b, ", partial rotary %d/%d", hp->rope_dim, hp->head_dim);
    if (hp->rope_scaling == KN_ROPE_SCALING_LLAMA3 || hp->rope_freqs)
        kn_buf_printf(b, ", rope scaling llama3%s", hp->rope_freqs ? " (rope_freqs.weight)" : "");
    if (hp->longrope) {
        bool lng = d->c->window > hp->rope_orig_ctx;
        kn_buf_printf(b, ", longrope %s (window %d %s original context %d), attention factor "
                      "%.4g", lng ? "long" : "short", d->c->window, lng ? ">" : "<=",
                      hp->rope_orig_ctx, hp->rope_attn_factor);
    }
    kn_buf_printf(b, ";");
    if (hp->nope_step > 0) {
        kn_buf_printf(b, " no rope in layers");
        for (int l = 0, n = 0; l < hp->n_layer; l++)
            if (!kn_layer_has_rope(hp, l)) kn_buf_printf(b, "%s %d", n++ ? "," : "", l);
        kn_buf_printf(b, ";");
    }
    if (b->len > start && b->data[b->len - 1] == ';') b->data[--b->len] = 0;
}

static void render_text(const desc *d, kn_buf *b) {
    const kn_hparams *hp = d->hp;
    const kn_contract *c = d->c;
    /* Strings from the file (name, tokenizer, provenance) are escaped: a newline or a
     * terminal escape sequence in a model file must not reach the terminal as itself. */
    kn_buf_printf(b, "%s ", d->offering ? "offering" : "source (not baked; shown as a "
                  "default bake would make it):");
    kn_buf_escaped(b, d->path, strlen(d->path));
    kn_buf_printf(b, "\n  name ");
    kn_buf_escaped(b, d->name ? d->name : "?", d->name ? strlen(d->name) : 1);
    kn_buf_printf(b, ", architecture %s\n", hp->arch_name);
    kn_buf_printf(b, "  layers %d, width %d, heads %d (kv %d, dim %d), ffn %d, vocab %d, "
                     "trained context %d\n",
                  hp->n_layer, hp->n_embd, hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_ff,
                  hp->n_vocab, hp->n_ctx_train);
    kn_buf_printf(b, "  rope theta %g (%s, dim %d, scaling %s), rms eps %g%s%s", hp->rope_theta,
                  hp->rope_neox ? "neox" : "adjacent pairs", hp->rope_dim,
                  rope_scaling_name(hp->rope_scaling), hp->rms_eps,
                  hp->tied_embeddings ? ", tied embeddings" : "", hp->qkv_bias ? ", qkv bias" : "");
    if (hp->sliding_window) kn_buf_printf(b, ", sliding window %d", hp->sliding_window);
    block_flags(d, b);
    if (hp->gemma)
        kn_buf_printf(b, "\n  gemma block: embedding x sqrt(%d),%s post-attention and "
                         "post-FFN norms, GeGLU (tanh); attention scale %g; rope theta %g on "
                         "sliding layers",
                      hp->n_embd, hp->qk_norm ? " q/k norms," : "", hp->attn_scale,
                      hp->rope_theta_swa);
    if (hp->attn_softcap > 0)
        kn_buf_printf(b, "%sattention logit soft-cap %g", hp->gemma ? ", " : "\n  ",
                      hp->attn_softcap);
    if (hp->final_softcap > 0)
        kn_buf_printf(b, "%sfinal logit soft-cap %g", hp->gemma || hp->attn_softcap > 0 ? ", "
                      : "\n  ", hp->final_softcap);
    layer_windows_text(hp, b);
    kn_buf_printf(b, "\n\nstatic contract: window W=%d, prefill chunk C=%d, batch %d, sink %d, "
                     "KV cache %s [%d, 2, %d, %d, %d]\n",
                  c->window, c->chunk, c->batch, c->sink, c->kv_dtype, hp->n_layer, hp->n_head_kv,
                  c->window, hp->head_dim);
    for (int gi = 0; gi < c->n_graphs; gi++) {
        const kn_graph *g = &c->graphs[gi];
        kn_buf_printf(b, "  graph %s\n", g->name);
        for (int k = 0; k < g->n_in + g->n_out; k++) {
            const kn_io *x = k < g->n_in ? &g->in[k] : &g->out[k - g->n_in];
            char sh[128];
            shape_str(x, sh, sizeof sh);
            kn_buf_printf(b, "    %-6s %-15s %-4s %s\n", k < g->n_in ? "input" : "output",
                          x->name, x->dtype, sh);
        }
    }
    kn_buf_printf(b, "\nquantization: %s", d->quant);
    if (d->group_size) kn_buf_printf(b, " (group %d)", d->group_size);
    kn_buf_printf(b, "\n");
    cls_count cc[64];
    int ncc = class_counts(d, cc, 64);
    for (int i = 0; i < ncc; i++)
        kn_buf_printf(b, "  %-11s %-5s x%d\n", cc[i].cls, kn_type_name(cc[i].type), cc[i].n);
    kn_buf_printf(b, "\ntokenizer: ");
    if (d->tok_model) kn_buf_escaped(b, d->tok_model, (size_t)d->tok_model_len);
    if (d->tok_pre_len) {
        kn_buf_printf(b, " (pre ");
        kn_buf_escaped(b, d->tok_pre, (size_t)d->tok_pre_len);
        kn_buf_printf(b, ")");
    }
    kn_buf_printf(b, ", %lld tokens, %lld merges, bos %lld, eos %lld, chat template %s\n",
                  (long long)d->n_tokens, (long long)d->n_merges, (long long)d->bos,
                  (long long)d->eos, d->chat_template ? "yes" : "no");
    if (d->ov_prefill || d->ov_decode || d->ov_stateless)
        kn_buf_printf(b, "\nopenvino IR (static shapes):%s%s%s\n",
                      d->ov_prefill ? " openvino_model.xml (prefill)" : "",
                      d->ov_decode ? " openvino_decode.xml (decode)" : "",
                      d->ov_stateless ? " openvino_stateless.xml (stateless)" : "");
    if (d->provenance.len) {
        kn_buf_printf(b, "\nprovenance: ");
        kn_buf_escaped(b, d->provenance.ptr, (size_t)d->provenance.len);
        kn_buf_printf(b, "\n");
    }
    kn_buf_printf(b, "\nvalidation: %s\n", desc_valid(d) ? "ok" : "FAILED");
    for (int i = 0; i < d->n_checks; i++) {
        kn_buf_printf(b, "  [%s] %s%s", d->check_ok[i] ? "ok" : "FAIL", d->check_name[i],
                      d->check_msg[i][0] ? ": " : "");
        kn_buf_escaped(b, d->check_msg[i], strlen(d->check_msg[i]));
        kn_buf_printf(b, "\n");
    }
}

static void tokenizer_info(desc *d, const kn_gguf *g) {
    kn_str s;
    if (kn_gguf_get_str(g, "tokenizer.ggml.model", &s)) {
        d->tok_model = s.ptr;
        d->tok_model_len = (int)s.len;
    }
    if (kn_gguf_get_str(g, "tokenizer.ggml.pre", &s)) {
        d->tok_pre = s.ptr;
        d->tok_pre_len = (int)s.len;
    }
    const kn_gguf_kv *kv = kn_gguf_get_arr(g, "tokenizer.ggml.tokens", KN_GGUF_STRING);
    d->n_tokens = kv ? (int64_t)kv->arr_n : 0;
    kv = kn_gguf_get_arr(g, "tokenizer.ggml.merges", KN_GGUF_STRING);
    d->n_merges = kv ? (int64_t)kv->arr_n : 0;
    d->bos = d->eos = -1;
    kn_gguf_get_i64(g, "tokenizer.ggml.bos_token_id", &d->bos);
    kn_gguf_get_i64(g, "tokenizer.ggml.eos_token_id", &d->eos);
    d->chat_template = kn_gguf_find(g, "tokenizer.chat_template") != NULL;
    d->hf_json = kn_gguf_find(g, "tokenizer.huggingface.json") != NULL;
}

/* The tokenizer against the model: a GGUF's (g), or an HF folder's tokenizer.json (src). */
static void tokenizer_check(desc *d, const kn_gguf *g, const kn_source *src, int64_t rows) {
    static const char name[] = "tokenizer matches the model (one token per embedding row, "
                               "special ids inside the vocabulary)";
    kiln_error e;
    kiln_status s;
    if (g && !kn_gguf_has_tokenizer(g)) {
        add_check(d, name, true, "no tokenizer: kiln run needs --tokenizer_id");
        return;
    }
    s = g ? kn_tokenizer_check_gguf(g, rows, &e) : kn_bake_hf_tokenizer(src, NULL, &e);
    add_check(d, name, s == KILN_OK, s ? e.message : NULL);
}

static void render(const desc *d, kiln_describe_format fmt, kn_buf *out) {
    if (fmt == KILN_DESCRIBE_JSON) render_json(d, out);
    else render_text(d, out);
}

/* Dequantizes every tensor and checks it is finite; names the first bad one. */
static bool scan_finite(const kn_gguf *g, char *msg, size_t n) {
    int64_t cap = 0;
    float *row = NULL;
    bool ok = true;
    for (uint64_t i = 0; i < g->n_tensors && ok; i++) {
        const kn_gguf_tensor *t = &g->tensors[i];
        if (t->ne[0] > cap) {
            float *nr = kn_realloc(row, (size_t)t->ne[0] * sizeof *row);
            if (!nr) {
                snprintf(msg, n, "out of memory");
                ok = false;
                break;
            }
            row = nr;
            cap = t->ne[0];
        }
        int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
        uint64_t rb = t->nbytes / (uint64_t)rows;
        for (int64_t r = 0; r < rows && ok; r++) {
            if (!kn_dequantize(t->type, t->data + (uint64_t)r * rb, row, t->ne[0])) {
                snprintf(msg, n, "tensor %.*s: type %s cannot be read", (int)t->name.len,
                         t->name.ptr, kn_type_name(t->type));
                ok = false;
            }
            for (int64_t k = 0; k < t->ne[0] && ok; k++)
                if (!isfinite(row[k])) {
                    snprintf(msg, n, "tensor %.*s holds %s", (int)t->name.len, t->name.ptr,
                             isnan(row[k]) ? "NaN" : "Inf");
                    ok = false;
                }
        }
    }
    kn_free(row);
    if (ok) snprintf(msg, n, "all %llu tensors", (unsigned long long)g->n_tensors);
    return ok;
}

kiln_status kn_describe_offering(const char *model_path, kiln_describe_format fmt, kn_buf *out,
                                 bool *valid, kiln_error *err) {
    kn_gguf *g = NULL;
    kiln_status s = kn_gguf_open(model_path, &g, err);
    if (s) return s;
    desc d = {0};
    kn_hparams hp;
    kn_contract c;
    d.offering = true;
    d.path = model_path;
    d.source_kind = "offering";
    d.hp = &hp;
    d.c = &c;
    if ((s = kn_hparams_from_gguf(g, &hp, err)) || (s = kn_contract_from_gguf(g, &hp, &c, err))) {
        kn_gguf_close(g);
        return s;
    }
    add_check(&d, "gguf structure (counts, offsets, sizes, alignment)", true, NULL);
    add_check(&d, "hyperparameters", true, NULL);
    add_check(&d, "static contract (every dimension fixed and positive)", true, NULL);
    kn_str nm, q, prov;
    char name[256] = "", quant[32] = "?";
    if (kn_gguf_get_str(g, "general.name", &nm))
        snprintf(name, sizeof name, "%.*s", (int)(nm.len < 255 ? nm.len : 255), nm.ptr);
    d.name = name;
    if (kn_gguf_get_str(g, "kiln.quant", &q))
        snprintf(quant, sizeof quant, "%.*s", (int)(q.len < 31 ? q.len : 31), q.ptr);
    d.quant = quant;
    uint32_t gs;
    if (kn_gguf_get_u32(g, "kiln.quant.group_size", &gs)) d.group_size = (int)gs;
    if (kn_gguf_get_str(g, "kiln.provenance", &prov)) d.provenance = prov;
    tokenizer_info(&d, g);
    {
        /* IR files are siblings of model.gguf */
        const char *slash = strrchr(model_path, '/');
        char *dir = slash ? kn_strndup(model_path, (size_t)(slash - model_path)) : kn_strdup(".");
        char *x1 = dir ? kn_path_join(dir, "openvino_model.xml") : NULL;
        char *x2 = dir ? kn_path_join(dir, "openvino_decode.xml") : NULL;
        char *x3 = dir ? kn_path_join(dir, "openvino_stateless.xml") : NULL;
        d.ov_prefill = x1 && kn_is_file(x1);
        d.ov_decode = x2 && kn_is_file(x2);
        d.ov_stateless = x3 && kn_is_file(x3);
        /* the IR the offering carries must be one, with all its weights */
        const char *xs[3] = {d.ov_prefill ? x1 : NULL, d.ov_decode ? x2 : NULL,
                             d.ov_stateless ? x3 : NULL};
        kiln_status is = KILN_OK;
        kiln_error ie;
        for (int i = 0; i < 3 && !is; i++)
            if (xs[i]) is = kn_ov_ir_check(xs[i], &ie);
        if (d.ov_prefill || d.ov_decode || d.ov_stateless)
            add_check(&d, "openvino IR (a complete <net>, every weight inside its .bin)",
                      is == KILN_OK, is ? ie.message : NULL);
        kn_free(x1);
        kn_free(x2);
        kn_free(x3);
        kn_free(dir);
    }
    d.t = kn_calloc((size_t)g->n_tensors + 1, sizeof *d.t);
    if (!d.t) {
        kn_gguf_close(g);
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const kn_gguf_tensor *t = &g->tensors[i];
        d.t[i] = (tinfo){t->name.ptr, (int)t->name.len, t->type, t->n_dims,
                         {t->ne[0], t->ne[1], t->ne[2], t->ne[3]}};
    }
    d.n_t = (int)g->n_tensors;

    /* The schema check is the source reader's: same rules for what bake reads and writes. */
    kn_source *src = NULL;
    kiln_error e2;
    kiln_status ss = kn_source_open(model_path, &src, &e2);
    add_check(&d, "tensors present with the shapes the hyperparameters imply", ss == KILN_OK,
              ss ? e2.message : NULL);
    kn_source_close(src);
    tokenizer_check(&d, g, NULL, hp.n_vocab);
    char msg[256];
    bool fin = scan_finite(g, msg, sizeof msg);
    add_check(&d, "weights finite (no NaN / Inf)", fin, msg);
    render(&d, fmt, out);
    *valid = desc_valid(&d);
    kn_free(d.t);
    kn_gguf_close(g);
    if (out->oom) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    return KILN_OK;
}

kiln_status kn_describe_source(kn_source *src, kiln_describe_format fmt, kn_buf *out,
                               bool *valid, kiln_error *err) {
    kiln_bake_params p = kiln_bake_default_params();
    kn_contract c;
    kiln_status s = kn_contract_build(&src->hp, p.window, p.chunk, p.sink, &c, err);
    if (s) return s;
    desc d = {0};
    d.path = src->label;
    d.name = src->name;
    d.source_kind = src->kind == KN_SOURCE_GGUF ? "gguf" : "hf";
    d.hp = &src->hp;
    d.c = &c;
    kiln_quant q = src->quantized ? KILN_QUANT_KEEP : KILN_QUANT_Q4_0;
    d.quant = kiln_quant_name(q);
    if (src->gguf) tokenizer_info(&d, src->gguf);
    else {
        d.tok_model = "huggingface";
        d.tok_model_len = 11;
        d.bos = src->bos_id;
        d.eos = src->eos_id;
        d.hf_json = src->tokenizer_json != NULL;
    }
    d.t = kn_calloc((size_t)src->n_tensors + 1, sizeof *d.t);
    if (!d.t) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    for (int i = 0; i < src->n_tensors; i++) {
        const kn_src_tensor *t = &src->tensors[i];
        int group;
        d.t[i] = (tinfo){t->name, (int)strlen(t->name), kn_bake_out_type(t, q, &group),
                         t->n_dims, {t->ne[0], t->ne[1], t->ne[2], t->ne[3]}};
    }
    d.n_t = src->n_tensors;
    add_check(&d, "source structure and tensor schema", true, "data is checked when baked");
    if (src->gguf) tokenizer_check(&d, src->gguf, NULL, src->hp.n_vocab);
    else if (src->tokenizer_json) tokenizer_check(&d, NULL, src, src->hp.n_vocab);
    render(&d, fmt, out);
    *valid = desc_valid(&d);
    kn_free(d.t);
    if (out->oom) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    return KILN_OK;
}

/* An offering is a folder with model.gguf, a file inside one, or a GGUF with kiln.* keys. */
static char *offering_model_path(const char *path) {
    if (kn_is_dir(path)) {
        char *m = kn_path_join(path, "model.gguf");
        char *cfg = kn_path_join(path, "config.json");
        bool ok = m && cfg && kn_is_file(m) && !kn_is_file(cfg);
        kn_free(cfg);
        if (ok) return m;
        kn_free(m);
        return NULL;
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strcmp(base, "manifest.json") == 0) {
        size_t n = (size_t)(base - path);
        char *dir = kn_strndup(path, n ? n : 0);
        char *m = dir ? kn_path_join(n ? dir : ".", "model.gguf") : NULL;
        kn_free(dir);
        if (m && kn_is_file(m)) return m;
        kn_free(m);
        return NULL;
    }
    if (kn_is_file(path)) {
        kn_gguf *g = NULL;
        kiln_error e;
        bool off = false;
        if (kn_gguf_open(path, &g, &e) == KILN_OK) {
            off = kn_gguf_find(g, "kiln.contract.window") != NULL;
            kn_gguf_close(g);
        }
        return off ? kn_strdup(path) : NULL;
    }
    return NULL;
}

/* Appends JSON text produced by cJSON with DEL and C1 escaped as well (cJSON escapes only
 * C0): what a file put in a string cannot act on a terminal showing the document. */
static void append_cjson(kn_buf *b, const char *txt) {
    for (const unsigned char *c = (const unsigned char *)txt; *c; c++) {
        if (*c == 0x7f) kn_buf_printf(b, "\\u007f");
        else if (*c == 0xc2 && c[1] >= 0x80 && c[1] < 0xa0) kn_buf_printf(b, "\\u%04x", *++c);
        else kn_buf_append(b, (const char *)c, 1);
    }
}

kiln_status kn_manifest_describe(const char *text, size_t len, const char *label,
                                 const char *ir_xml, kiln_describe_format fmt, kn_buf *b,
                                 bool *valid, kiln_error *err) {
    *valid = false;
    cJSON *j = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return kn_fail(err, KILN_ERR_FORMAT, "%s: not a JSON object", label);
    }
    desc d = {0}; /* only its checks are used */
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "contract");
    int64_t w = 0, ch = 0;
    kiln_error e;
    bool ok = cJSON_IsObject(c) &&
              kn_json_i64(cJSON_GetObjectItemCaseSensitive(c, "window"), 1, 1 << 20, &w) &&
              kn_json_i64(cJSON_GetObjectItemCaseSensitive(c, "chunk"), 1, w, &ch);
    add_check(&d, "contract (window and chunk: integers, 1 <= chunk <= window <= 1048576)", ok,
              NULL);
    /* every input of every graph: a name, a dtype and a static shape */
    const cJSON *graphs = cJSON_IsObject(c) ? cJSON_GetObjectItemCaseSensitive(c, "graphs") : NULL;
    const cJSON *g, *in, *dim;
    int n_in = 0;
    bool stat = cJSON_IsArray(graphs) && cJSON_GetArraySize(graphs) > 0;
    cJSON_ArrayForEach(g, graphs) {
        const cJSON *ins = cJSON_GetObjectItemCaseSensitive(g, "inputs");
        stat = stat && cJSON_IsArray(ins);
        cJSON_ArrayForEach(in, ins) {
            const cJSON *sh = cJSON_GetObjectItemCaseSensitive(in, "shape");
            int64_t v;
            stat = stat && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(in, "name")) &&
                   cJSON_IsString(cJSON_GetObjectItemCaseSensitive(in, "dtype")) &&
                   cJSON_IsArray(sh) && cJSON_GetArraySize(sh) <= KN_MAX_RANK;
            cJSON_ArrayForEach(dim, sh) stat = stat && kn_json_i64(dim, 1, INT32_MAX, &v);
            n_in++;
        }
    }
    char msg[64];
    snprintf(msg, sizeof msg, "%d inputs", n_in);
    add_check(&d, "every input static (a name, a dtype, positive fixed dimensions)", stat, msg);
    if (ir_xml) {
        kiln_status is = kn_ov_ir_check(ir_xml, &e);
        add_check(&d, "openvino IR (a complete <net>, every weight inside its .bin)", !is,
                  is ? e.message : NULL);
    }
    *valid = desc_valid(&d);
    if (fmt == KILN_DESCRIBE_JSON) {
        char *txt = cJSON_Print(j);
        if (!txt) {
            cJSON_Delete(j);
            return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        }
        append_cjson(b, txt);
        kn_buf_append(b, "\n", 1);
        cJSON_free(txt);
    } else {
        kn_buf_printf(b, "offering ");
        kn_buf_escaped(b, label, strlen(label));
        kn_buf_printf(b, " (OpenVINO IR locked by --from-ir)\n\nstatic contract: window W=%lld, "
                         "chunk C=%lld, batch 1\n", (long long)w, (long long)ch);
        cJSON_ArrayForEach(g, graphs) {
            cJSON_ArrayForEach(in, cJSON_GetObjectItemCaseSensitive(g, "inputs")) {
                const cJSON *nm = cJSON_GetObjectItemCaseSensitive(in, "name");
                const cJSON *dt = cJSON_GetObjectItemCaseSensitive(in, "dtype");
                const char *ns = cJSON_IsString(nm) ? nm->valuestring : "?";
                const char *ds = cJSON_IsString(dt) ? dt->valuestring : "?";
                kn_buf_printf(b, "    input  ");
                kn_buf_escaped(b, ns, strlen(ns));
                kn_buf_printf(b, "%*s ", (int)(strlen(ns) < 28 ? 28 - strlen(ns) : 0), "");
                kn_buf_escaped(b, ds, strlen(ds));
                kn_buf_printf(b, "%*s [", (int)(strlen(ds) < 4 ? 4 - strlen(ds) : 0), "");
                int k = 0;
                cJSON_ArrayForEach(dim, cJSON_GetObjectItemCaseSensitive(in, "shape")) {
                    char num[32] = "?";
                    if (cJSON_IsNumber(dim)) snprintf(num, sizeof num, "%.17g", dim->valuedouble);
                    kn_buf_printf(b, "%s%s", k++ ? ", " : "", num);
                }
                kn_buf_printf(b, "]\n");
            }
        }
        kn_buf_printf(b, "\nvalidation: %s\n", *valid ? "ok" : "FAILED");
        for (int i = 0; i < d.n_checks; i++) {
            kn_buf_printf(b, "  [%s] %s%s", d.check_ok[i] ? "ok" : "FAIL", d.check_name[i],
                          d.check_msg[i][0] ? ": " : "");
            kn_buf_escaped(b, d.check_msg[i], strlen(d.check_msg[i]));
            kn_buf_printf(b, "\n");
        }
    }
    cJSON_Delete(j);
    return b->oom ? kn_fail(err, KILN_ERR_NOMEM, "out of memory") : KILN_OK;
}

/* An offering baked --from-ir has no model.gguf: its manifest is the description. */
static kiln_status describe_ir_offering(const char *dir, kiln_describe_format fmt, kn_buf *b,
                                        bool *valid, kiln_error *err) {
    char *mp = kn_path_join(dir, "manifest.json");
    char *xml = kn_path_join(dir, "openvino_model.xml");
    char *text = NULL;
    size_t len = 0;
    kiln_status s = mp && xml ? kn_read_text(mp, KN_MAX_JSON_BYTES, &text, &len, err)
                              : kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    if (!s) s = kn_manifest_describe(text, len, mp, xml, fmt, b, valid, err);
    kn_free(text);
    kn_free(mp);
    kn_free(xml);
    return s;
}

kiln_status kiln_describe(const char *path, kiln_describe_format fmt, char **out,
                          kiln_error *err) {
    kn_error_clear(err);
    *out = NULL;
    kn_buf b = {0};
    kiln_status s;
    if (kn_is_dir(path)) {
        char *g = kn_path_join(path, "model.gguf"), *x = kn_path_join(path, "openvino_model.xml");
        char *m = kn_path_join(path, "manifest.json");
        bool ir_only = g && x && m && !kn_is_file(g) && kn_is_file(x) && kn_is_file(m);
        kn_free(g);
        kn_free(x);
        kn_free(m);
        if (ir_only) {
            bool valid = false;
            s = describe_ir_offering(path, fmt, &b, &valid, err);
            if (s) {
                kn_buf_free(&b);
                return s;
            }
            *out = b.data;
            if (!valid)
                return kn_fail(err, KILN_ERR_FORMAT, "%s: the offering fails validation", path);
            return KILN_OK;
        }
    }
    char *model = offering_model_path(path);
    if (model) {
        bool valid = true;
        s = kn_describe_offering(model, fmt, &b, &valid, err);
        if (!s && !valid) {
            /* the description is still handed out: it says which check failed */
            kn_fail(err, KILN_ERR_FORMAT, "%s: the offering fails validation", model);
            kn_free(model);
            *out = b.data;
            return KILN_ERR_FORMAT;
        }
        kn_free(model);
    } else {
        kn_source *src = NULL;
        bool valid = true;
        s = kn_source_open(path, &src, err);
        if (!s) s = kn_describe_source(src, fmt, &b, &valid, err);
        kn_source_close(src);
        if (!s && !valid) {
            kn_fail(err, KILN_ERR_FORMAT, "%s: the source fails validation (a bake would refuse "
                    "it)", path);
            *out = b.data;
            return KILN_ERR_FORMAT;
        }
    }
    if (s) {
        kn_buf_free(&b);
        return s;
    }
    *out = b.data;
    return KILN_OK;
}
