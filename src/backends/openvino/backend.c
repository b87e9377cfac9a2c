/* backend.c — the OpenVINO backend: the offering's static IR (openvino_model.xml = prefill
 * [1,C], openvino_decode.xml = decode [1,1]; docs/OPENVINO.md) compiled for one OpenVINO
 * device and driven with a host-side KV cache; or, opened for --mode stateless, only
 * openvino_stateless.xml (one padded [1,W] window, no cache).
 *
 * The graphs never write the cache: each call reads past_kv [L,2,Hkv,W,D] and returns the T
 * new rows new_kv [L,2,Hkv,T,D], which this file copies into the slots the native engine would
 * use (kn_kv_slot: slot p while p < W, then the sink + ring of --overflow slide), and the
 * additive attention_mask [1,1,T,W+T] is rebuilt from a position-per-slot table so that every
 * query sees exactly the keys the native engine's attention sees. Both backends therefore
 * compute the same function of the same cache.
 *
 * Every buffer (cache, inputs, outputs) is allocated once at open and wrapped once in an
 * ov_tensor set on both infer requests; a step only writes host memory and calls infer.
 *
 * The stateless graph takes input_ids i32 [1,W] and attention_mask i32 [1,W] (1 = real) and
 * returns the logits of the last real token; the window is padded with id 0 and mask 0 (the
 * mask makes the padding ids irrelevant). A backend opened for it compiles nothing else: its
 * prefill and decode run the same window over the tokens so far (positions 0..W-1 only), which
 * is all --verify and a fresh-cache prefill need.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backends/backend.h"
#include "backends/openvino/ir_check.h"
#include "backends/openvino/ov_api.h"

enum { IN_IDS, IN_POS, IN_MASK, IN_LOGIT_INDEX, IN_PAST, OUT_LOGITS, OUT_NEW_KV, N_PORTS };
static const char *const k_port_name[N_PORTS] = {
    "input_ids", "position_ids", "attention_mask", "logit_index", "past_kv", "logits", "new_kv"};

typedef struct ov_graph {
    ov_compiled_model *cm;
    ov_infer_request *req;
    ov_tensor *t[N_PORTS];           /* views of the backend's host buffers */
    int T;                           /* new tokens per call: C or 1 */
} ov_graph;

typedef struct ov_backend {
    kn_backend base;
    kn_ov_api api;
    ov_core *core;
    const kn_model *m;
    int L, Hkv, D, V;
    int W;                           /* the IR's cache slots (>= m->window: a caller may lower W) */
    int C;                           /* the IR's prefill width */
    ov_graph pre, dec;
    ov_graph sl;                     /* stateless mode: the only compiled graph */
    bool stateless;                  /* opened for --mode stateless */
    /* host buffers, shared by both graphs (they never run at once) */
    float *past_kv;                  /* [L,2,Hkv,W,D] */
    float *new_kv;                   /* [L,2,Hkv,C,D]; decode uses the first [L,2,Hkv,1,D] */
    float *mask;                     /* [C, W+C]; decode uses the first [1, W+1] */
    float *logits;                   /* [V] */
    int32_t *ids;                    /* [C] */
    int32_t *pos;                    /* [C] */
    int32_t logit_index[1];
    /* the cache's bookkeeping, as in the native session */
    int32_t *slot_pos;               /* [W] position held by each slot, -1 = empty */
    int32_t *slot_row;               /* [W] the call's row that takes the slot, -1 = none */
    int32_t *row_slot;               /* [C] */
    /* stateless mode */
    int SW;                          /* the stateless IR's window */
    int32_t *sl_ids;                 /* [SW] the window: tokens at positions 0..sl_len-1 */
    int32_t *sl_mask;                /* [SW] 1 for real tokens */
    int sl_len;
} ov_backend;

/* ---- small helpers ---------------------------------------------------------------------- */

static kiln_status ov_fail(ov_backend *b, kiln_error *err, kiln_status code, ov_status st,
                           const char *what) {
    char e[600];
    return kn_fail(err, code, "openvino:%s: %s: %s", b->base.device + 9, what,
                   kn_ov_error(&b->api, st, e, sizeof e));
}

static void say(const kn_backend_params *p, kiln_log_level level, const char *msg) {
    kn_log(p->log, p->log_user, level, "%s", msg);
}

/* "NPU" is present when OpenVINO lists "NPU" or "NPU.<n>"; "GPU.1" only as itself. */
static bool device_listed(const ov_devices *d, const char *want) {
    size_t n = strlen(want);
    for (size_t i = 0; i < d->size; i++) {
        const char *have = d->devices[i];
        if (strcmp(have, want) == 0) return true;
        if (!strchr(want, '.') && strncmp(have, want, n) == 0 && have[n] == '.') return true;
    }
    return false;
}

/* Virtual devices (AUTO, HETERO:..., MULTI:..., BATCH:...) are never listed; OpenVINO itself
 * judges them at compile time. */
static bool device_virtual(const char *dev) {
    return strchr(dev, ':') || strcmp(dev, "AUTO") == 0 || strcmp(dev, "MULTI") == 0 ||
           strcmp(dev, "HETERO") == 0 || strcmp(dev, "BATCH") == 0;
}

static bool same_base(const char *dev, const char *base) {
    size_t n = strlen(base);
    return strncmp(dev, base, n) == 0 && (dev[n] == 0 || dev[n] == '.');
}

/* ---- compile properties ----------------------------------------------------------------- */

#define MAX_PROPS 24

typedef struct props {
    const char *key[MAX_PROPS];
    const char *val[MAX_PROPS];
    int n;
    char storage[2048];              /* copies of user-given keys and values */
} props;

static void prop_set(props *ps, const char *k, const char *v) {
    for (int i = 0; i < ps->n; i++)
        if (strcmp(ps->key[i], k) == 0) {
            ps->val[i] = v;
            return;
        }
    if (ps->n < MAX_PROPS) {
        ps->key[ps->n] = k;
        ps->val[ps->n++] = v;
    }
}

/* KILN_OPENVINO_PROPS="KEY=VALUE;KEY=VALUE" adds or overrides properties: the NPU settings
 * below are chosen from OpenVINO GenAI's NPU pipeline but untested on hardware here, so a user
 * with a different driver or NPU generation can change them without a rebuild. */
static void props_from_env(props *ps) {
    const char *env = getenv("KILN_OPENVINO_PROPS");
    if (!env || !*env) return;
    snprintf(ps->storage, sizeof ps->storage, "%s", env);
    char *save = NULL;
    for (char *tok = strtok_r(ps->storage, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok) continue;
        *eq = 0;
        prop_set(ps, tok, eq + 1);
    }
}

static void device_props(props *ps, const char *dev, const char *cache_dir, const char *threads) {
    if (cache_dir) prop_set(ps, "CACHE_DIR", cache_dir);
    prop_set(ps, "PERFORMANCE_HINT", "LATENCY");
    if (same_base(dev, "CPU")) {
        /* The CPU plugin would otherwise run bf16/f16 where the CPU has it and round the
         * activations in front of compressed weights to int8 (docs/OPENVINO.md). */
        prop_set(ps, "INFERENCE_PRECISION_HINT", "f32");
        prop_set(ps, "DYNAMIC_QUANTIZATION_GROUP_SIZE", "0");
        if (threads) prop_set(ps, "INFERENCE_NUM_THREADS", threads);
    } else if (same_base(dev, "NPU")) {
        /* OpenVINO GenAI's NPU LLM pipeline compiles its static prefill / generate graphs
         * (the same kind as ours: fixed shapes, KV cache as inputs and outputs) with these.
         * RMSNorm's square, mean and sqrt in f16 lose the small-magnitude hidden states, so
         * the compiler keeps them in higher precision. NPUW partitions the model: FOLD
         * compiles one transformer block and reuses it for all L (compile time / L), DCOFF
         * decompresses the int4/int8 weights' scale on the host side in f16, the weights bank
         * shares constants between the prefill and decode models, FUNCALL_ASYNC overlaps the
         * blocks' submissions. */
        prop_set(ps, "NPU_COMPILATION_MODE_PARAMS",
                 "compute-layers-with-higher-precision=Sqrt,Power,ReduceMean,Add_RMSNorm");
        prop_set(ps, "NPU_USE_NPUW", "YES");
        prop_set(ps, "NPUW_DEVICES", "NPU");
        prop_set(ps, "NPUW_FOLD", "YES");
        prop_set(ps, "NPUW_DCOFF_TYPE", "f16");
        prop_set(ps, "NPUW_DCOFF_SCALE", "YES");
        prop_set(ps, "NPUW_WEIGHTS_BANK", "shared");
        prop_set(ps, "NPUW_FUNCALL_ASYNC", "YES");
    }
    props_from_env(ps);
}

static ov_status compile(ov_backend *b, const char *xml, const char *dev, const props *ps,
                         ov_compiled_model **out) {
    /* The variadic list is read only up to property_args_size, so a fixed, padded argument
     * list serves any count without a switch on n. */
    const char *a[2 * MAX_PROPS] = {0};
    for (int i = 0; i < ps->n; i++) {
        a[2 * i] = ps->key[i];
        a[2 * i + 1] = ps->val[i];
    }
    return b->api.core_compile_model_from_file(
        b->core, xml, dev, (size_t)(2 * ps->n), out, a[0], a[1], a[2], a[3], a[4], a[5], a[6],
        a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15], a[16], a[17], a[18], a[19],
        a[20], a[21], a[22], a[23], a[24], a[25], a[26], a[27], a[28], a[29], a[30], a[31],
        a[32], a[33], a[34], a[35], a[36], a[37], a[38], a[39], a[40], a[41], a[42], a[43],
        a[44], a[45], a[46], a[47]);
}

/* ---- the compiled-blob cache ------------------------------------------------------------- */

/* OpenVINO keys a cached blob of compile_model_from_file by the file's path and the
 * properties only, not by its contents, so a re-bake in place would load the old blob. The
 * cache folder is therefore named after the IR: the XML text and the .bin files' size and
 * modification time, of every graph the offering has (absent files are skipped, so an offering
 * without the stateless graph keeps the folder name it had before that graph existed). */
#define N_FILES 6

static kiln_status cache_dir_for(const char *dir, const char *const files[N_FILES], char **out,
                                 kiln_error *err) {
    *out = NULL;
    kn_sha256 h;
    kn_sha256_init(&h);
    for (int i = 0; i < N_FILES; i++) {
        char *path = kn_path_join(dir, files[i]);
        if (!path) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        struct stat st;
        if (stat(path, &st) == 0) {
            long long meta[3] = {(long long)st.st_size, (long long)st.st_mtim.tv_sec,
                                 (long long)st.st_mtim.tv_nsec};
            kn_sha256_update(&h, meta, sizeof meta);
        }
        if (i % 2 == 0) { /* the XMLs: small, hashed whole */
            char *text = NULL;
            size_t len = 0;
            kiln_error e;
            if (kn_read_text(path, (size_t)1 << 28, &text, &len, &e) == KILN_OK)
                kn_sha256_update(&h, text, len);
            kn_free(text);
        }
        kn_free(path);
    }
    char hex[65];
    kn_sha256_final(&h, hex);
    hex[16] = 0;
    char *root = kn_path_join(dir, ".kiln-cache");
    char *leaf = root ? kn_path_join(root, hex) : NULL;
    if (!leaf) {
        kn_free(root);
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    /* A read-only offering simply runs without a cache. */
    bool ok = (mkdir(root, 0755) == 0 || errno == EEXIST) &&
              (mkdir(leaf, 0755) == 0 || errno == EEXIST);
    kn_free(root);
    if (!ok) {
        kn_free(leaf);
        return KILN_OK;
    }
    *out = leaf;
    return KILN_OK;
}

/* ---- ports, shapes, tensors -------------------------------------------------------------- */

typedef struct port_info {
    bool present;
    ov_etype type;
    int rank;
    int64_t dims[8];
} port_info;

static kiln_status read_port(ov_backend *b, ov_compiled_model *cm, int k, bool input,
                             port_info *pi, kiln_error *err) {
    memset(pi, 0, sizeof *pi);
    ov_port *port = NULL;
    ov_status st = input ? b->api.compiled_model_input_by_name(cm, k_port_name[k], &port)
                         : b->api.compiled_model_output_by_name(cm, k_port_name[k], &port);
    if (st || !port) return KILN_OK; /* absent: the caller decides whether that is an error */
    ov_shape sh = {0, NULL};
    st = b->api.port_get_element_type(port, &pi->type);
    if (!st) st = b->api.const_port_get_shape(port, &sh);
    b->api.output_const_port_free(port);
    if (st) return ov_fail(b, err, KILN_ERR_FORMAT, st, k_port_name[k]);
    if (sh.rank < 1 || sh.rank > 8) {
        b->api.shape_free(&sh);
        return kn_fail(err, KILN_ERR_FORMAT, "openvino IR: %s has rank %lld", k_port_name[k],
                       (long long)sh.rank);
    }
    pi->rank = (int)sh.rank;
    for (int i = 0; i < pi->rank; i++) pi->dims[i] = sh.dims[i];
    b->api.shape_free(&sh);
    pi->present = true;
    return KILN_OK;
}

static void dims_str(const int64_t *d, int rank, char *buf, size_t n) {
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < rank && len + 1 < n; i++) {
        int w = snprintf(buf + len, n - len, "%s%lld", i ? "," : "[", (long long)d[i]);
        if (w < 0) return;
        len += (size_t)w < n - len ? (size_t)w : n - len - 1;
    }
    if (len + 1 < n) snprintf(buf + len, n - len, "]");
}

static kiln_status expect_shape(const port_info *pi, const char *file, const char *name,
                                const int64_t *want, int rank, kiln_error *err) {
    bool ok = pi->rank == rank;
    for (int i = 0; ok && i < rank; i++) ok = pi->dims[i] == want[i];
    if (ok) return KILN_OK;
    char a[128], w[128];
    dims_str(pi->dims, pi->rank, a, sizeof a);
    dims_str(want, rank, w, sizeof w);
    return kn_fail(err, KILN_ERR_FORMAT, "%s: %s is %s, the model needs %s", file, name, a, w);
}

/* Checks graph g's ports against the model and wraps the host buffers in tensors set on its
 * request. T and W come from the IR (prefill: C; decode: 1). */
static kiln_status bind_graph(ov_backend *b, ov_graph *g, const char *file, bool prefill,
                              ov_etype *f32, ov_etype *i32, kiln_error *err) {
    port_info pi[N_PORTS];
    kiln_status s;
    for (int k = 0; k < N_PORTS; k++) {
        if ((s = read_port(b, g->cm, k, k < OUT_LOGITS, &pi[k], err))) return s;
        bool needed = k != IN_LOGIT_INDEX || prefill;
        if (needed && !pi[k].present)
            return kn_fail(err, KILN_ERR_FORMAT, "%s: no %s %s", file,
                           k < OUT_LOGITS ? "input" : "output", k_port_name[k]);
    }
    if (pi[IN_IDS].rank != 2 || pi[IN_IDS].dims[1] < 1 || pi[IN_IDS].dims[1] > 65536)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: input_ids is not [1,T]", file);
    g->T = (int)pi[IN_IDS].dims[1];
    if (pi[IN_PAST].rank != 5 || pi[IN_PAST].dims[3] < 1 || pi[IN_PAST].dims[3] > (1 << 24))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: past_kv is not [L,2,Hkv,W,D]", file);
    if (prefill) {
        b->W = (int)pi[IN_PAST].dims[3];
        b->C = g->T;
        if (b->W < b->m->window)
            return kn_fail(err, KILN_ERR_FORMAT,
                           "%s: the IR's cache has %d slots, the model's window is %d (re-bake "
                           "with --target openvino)", file, b->W, b->m->window);
    } else if (g->T != 1) {
        return kn_fail(err, KILN_ERR_FORMAT, "%s: the decode graph takes %d tokens, not 1", file,
                       g->T);
    }
    const int64_t T = g->T, W = b->W;
    const int64_t sh_ids[2] = {1, T}, sh_mask[4] = {1, 1, T, W + T}, sh_li[1] = {1};
    const int64_t sh_past[5] = {b->L, 2, b->Hkv, W, b->D}, sh_logits[2] = {1, b->V};
    const int64_t sh_new[5] = {b->L, 2, b->Hkv, T, b->D};
    const int64_t *want[N_PORTS] = {sh_ids, sh_ids, sh_mask, sh_li, sh_past, sh_logits, sh_new};
    const int rank[N_PORTS] = {2, 2, 4, 1, 5, 2, 5};
    for (int k = 0; k < N_PORTS; k++)
        if (pi[k].present && (s = expect_shape(&pi[k], file, k_port_name[k], want[k], rank[k],
                                               err)))
            return s;
    /* ov_element_type_e was renumbered across releases: learn the codes from the IR, whose
     * types the contract fixes (ids, positions, logit_index i32; the rest f32). */
    if (prefill) {
        *i32 = pi[IN_IDS].type;
        *f32 = pi[IN_PAST].type;
        if (*i32 == *f32)
            return kn_fail(err, KILN_ERR_FORMAT, "%s: input_ids and past_kv share a type", file);
    }
    for (int k = 0; k < N_PORTS; k++) {
        bool is_i32 = k == IN_IDS || k == IN_POS || k == IN_LOGIT_INDEX;
        if (pi[k].present && pi[k].type != (is_i32 ? *i32 : *f32))
            return kn_fail(err, KILN_ERR_FORMAT, "%s: %s should be %s", file, k_port_name[k],
                           is_i32 ? "i32" : "f32");
    }
    return KILN_OK;
}

static kiln_status wrap_tensors(ov_backend *b, ov_graph *g, ov_etype f32, ov_etype i32,
                                kiln_error *err) {
    const int64_t T = g->T, W = b->W;
    int64_t sh_ids[2] = {1, T}, sh_mask[4] = {1, 1, T, W + T}, sh_li[1] = {1};
    int64_t sh_past[5] = {b->L, 2, b->Hkv, W, b->D}, sh_logits[2] = {1, b->V};
    int64_t sh_new[5] = {b->L, 2, b->Hkv, T, b->D};
    int64_t *dims[N_PORTS] = {sh_ids, sh_ids, sh_mask, sh_li, sh_past, sh_logits, sh_new};
    const int rank[N_PORTS] = {2, 2, 4, 1, 5, 2, 5};
    void *host[N_PORTS] = {b->ids,     b->pos,    b->mask,  b->logit_index,
                           b->past_kv, b->logits, b->new_kv};
    for (int k = 0; k < N_PORTS; k++) {
        if (k == IN_LOGIT_INDEX && g->T == 1) continue; /* decode has none */
        bool is_i32 = k == IN_IDS || k == IN_POS || k == IN_LOGIT_INDEX;
        ov_shape sh = {rank[k], dims[k]};
        ov_status st = b->api.tensor_create_from_host_ptr(is_i32 ? i32 : f32, sh, host[k],
                                                          &g->t[k]);
        if (!st) st = b->api.infer_request_set_tensor(g->req, k_port_name[k], g->t[k]);
        if (st) return ov_fail(b, err, KILN_ERR_INTERNAL, st, k_port_name[k]);
    }
    return KILN_OK;
}

/* The stateless graph: input_ids i32 [1,W], attention_mask i32 [1,W] -> logits f32 [1,V], no
 * cache; W at least the model's window. Learns the element-type codes as bind_graph does. */
static kiln_status bind_stateless(ov_backend *b, const char *file, ov_etype *f32, ov_etype *i32,
                                  kiln_error *err) {
    static const int ports[3] = {IN_IDS, IN_MASK, OUT_LOGITS};
    port_info pi[3];
    kiln_status s;
    for (int k = 0; k < 3; k++) {
        if ((s = read_port(b, b->sl.cm, ports[k], ports[k] < OUT_LOGITS, &pi[k], err))) return s;
        if (!pi[k].present)
            return kn_fail(err, KILN_ERR_FORMAT, "%s: no %s %s", file,
                           ports[k] < OUT_LOGITS ? "input" : "output", k_port_name[ports[k]]);
    }
    port_info past;
    if ((s = read_port(b, b->sl.cm, IN_PAST, true, &past, err))) return s;
    if (past.present)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: has a past_kv input: not a stateless graph",
                       file);
    if (pi[0].rank != 2 || pi[0].dims[1] < 1 || pi[0].dims[1] > 65536)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: input_ids is not [1,W]", file);
    b->SW = (int)pi[0].dims[1];
    b->sl.T = b->SW;
    if (b->SW < b->m->window)
        return kn_fail(err, KILN_ERR_FORMAT,
                       "%s: the IR's window is %d tokens, the model's is %d (re-bake with "
                       "--target openvino)", file, b->SW, b->m->window);
    const int64_t sh_win[2] = {1, b->SW}, sh_logits[2] = {1, b->V};
    if ((s = expect_shape(&pi[0], file, "input_ids", sh_win, 2, err)) ||
        (s = expect_shape(&pi[1], file, "attention_mask", sh_win, 2, err)) ||
        (s = expect_shape(&pi[2], file, "logits", sh_logits, 2, err)))
        return s;
    *i32 = pi[0].type;
    *f32 = pi[2].type;
    if (*i32 == *f32 || pi[1].type != *i32)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: input_ids and attention_mask should be i32, "
                       "logits f32", file);
    return KILN_OK;
}

static kiln_status wrap_stateless(ov_backend *b, ov_etype f32, ov_etype i32, kiln_error *err) {
    int64_t sh_win[2] = {1, b->SW}, sh_logits[2] = {1, b->V};
    static const int ports[3] = {IN_IDS, IN_MASK, OUT_LOGITS};
    void *host[3] = {b->sl_ids, b->sl_mask, b->logits};
    for (int k = 0; k < 3; k++) {
        ov_shape sh = {2, k == 2 ? sh_logits : sh_win};
        ov_status st = b->api.tensor_create_from_host_ptr(k == 2 ? f32 : i32, sh, host[k],
                                                          &b->sl.t[ports[k]]);
        if (!st)
            st = b->api.infer_request_set_tensor(b->sl.req, k_port_name[ports[k]],
                                                 b->sl.t[ports[k]]);
        if (st) return ov_fail(b, err, KILN_ERR_INTERNAL, st, k_port_name[ports[k]]);
    }
    return KILN_OK;
}

/* ---- the steps ---------------------------------------------------------------------------- */

/* Runs graph g on n real tokens (ids and pos in b->ids / b->pos, rows n..T-1 padding) and
 * files their K/V rows into the cache. */
static kiln_status run_graph(ov_backend *b, ov_graph *g, int n, kiln_error *err) {
    const int T = g->T, W = b->W, cols = W + T;
    const int swa = b->m->hp.sliding_window;
    /* Which row takes which slot. Two rows of one call may map to one ring slot (a chunk
     * longer than the ring): the native engine writes both before attending, so only the
     * later one is ever seen; the same rule here. */
    for (int r = 0; r < n; r++) {
        int slot = kn_kv_slot(b->m, b->pos[r]);
        b->row_slot[r] = slot;
        b->slot_row[slot] = r;
    }
    for (int r = 0; r < n; r++) {
        const int32_t p = b->pos[r];
        float *row = b->mask + (size_t)r * cols;
        for (int s = 0; s < W; s++) {
            int32_t sp = b->slot_pos[s];
            bool see = sp >= 0 && sp <= p && b->slot_row[s] < 0 && !(swa > 0 && p - sp >= swa);
            row[s] = see ? 0.0f : -INFINITY;
        }
        for (int j = 0; j < T; j++) {
            int32_t q = j < n ? b->pos[j] : 0;
            bool see = j < n && b->slot_row[b->row_slot[j]] == j && q <= p &&
                       !(swa > 0 && p - q >= swa);
            /* a row always sees itself, so no row is all -inf (NaN) even when it lost its
             * slot to a later row; such a row's output is never read */
            row[W + j] = see || j == r ? 0.0f : -INFINITY;
        }
    }
    /* padding rows: the last real row's pattern (docs/OPENVINO.md: no all -inf row) */
    for (int r = n; r < T; r++)
        memcpy(b->mask + (size_t)r * cols, b->mask + (size_t)(n - 1) * cols,
               sizeof(float) * (size_t)cols);
    if (T > 1) b->logit_index[0] = n - 1;

    ov_status st = b->api.infer_request_infer(g->req);
    for (int r = 0; r < n; r++) b->slot_row[b->row_slot[r]] = -1;
    if (st) return ov_fail(b, err, KILN_ERR_INTERNAL, st, "infer");

    /* new_kv [L,2,Hkv,T,D] -> past_kv [L,2,Hkv,W,D], rows in order so the last writer of a
     * slot wins, as in the native engine */
    const size_t D = (size_t)b->D, planes = (size_t)b->L * 2 * (size_t)b->Hkv;
    for (int r = 0; r < n; r++) {
        const size_t slot = (size_t)b->row_slot[r];
        for (size_t pl = 0; pl < planes; pl++)
            memcpy(b->past_kv + (pl * (size_t)W + slot) * D,
                   b->new_kv + (pl * (size_t)T + (size_t)r) * D, sizeof(float) * D);
        b->slot_pos[slot] = b->pos[r];
    }
    return KILN_OK;
}

static kiln_status check_id(const ov_backend *b, int32_t id, kiln_error *err) {
    if (id < 0 || id >= b->V)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "token id %d is outside the vocabulary (%d)",
                       (int)id, b->V);
    return KILN_OK;
}

/* The stateless graph over the first n tokens of b->sl_ids (the rest padding). */
static kiln_status run_window(ov_backend *b, int n, const float **logits, kiln_error *err) {
    for (int i = 0; i < b->SW; i++) {
        if (i >= n) b->sl_ids[i] = 0;
        b->sl_mask[i] = i < n;
    }
    b->sl_len = n;
    ov_status st = b->api.infer_request_infer(b->sl.req);
    if (st) {
        b->sl_len = 0;
        return ov_fail(b, err, KILN_ERR_INTERNAL, st, "infer");
    }
    *logits = b->logits;
    return KILN_OK;
}

/* Stateless mode has no cache: tokens n at position pos0 extend the window when they follow
 * the tokens already in it and fit. */
static kiln_status window_append(ov_backend *b, const int32_t *ids, int n, int pos0,
                                 const float **logits, kiln_error *err) {
    if (pos0 != b->sl_len || n > b->SW - pos0)
        return kn_fail(err, KILN_ERR_UNSUPPORTED,
                       "%s: opened for --mode stateless, which runs tokens at positions 0..%d "
                       "as one window (asked for %d at position %d after %d)", b->base.device,
                       b->SW - 1, n, pos0, b->sl_len);
    memmove(b->sl_ids + pos0, ids, sizeof(int32_t) * (size_t)n);
    return run_window(b, pos0 + n, logits, err);
}

static kiln_status ov_stateless(kn_backend *base, const int32_t *ids, int n_valid,
                                const float **logits, kiln_error *err) {
    ov_backend *b = (ov_backend *)base;
    if (!b->stateless)
        return kn_fail(err, KILN_ERR_UNSUPPORTED,
                       "%s: the backend was opened without the stateless graph (open it for "
                       "--mode stateless)", base->device);
    if (n_valid < 1 || n_valid > b->SW)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "stateless: %d valid tokens in a window of %d",
                       n_valid, b->SW);
    for (int i = 0; i < n_valid; i++) {
        kiln_status s = check_id(b, ids[i], err);
        if (s) return s;
    }
    b->sl_len = 0;
    return window_append(b, ids, n_valid, 0, logits, err);
}

static kiln_status ov_prefill(kn_backend *base, const int32_t *ids, int n, int pos0,
                              const float **logits, kiln_error *err) {
    ov_backend *b = (ov_backend *)base;
    if (n < 1) return kn_fail(err, KILN_ERR_INVALID_ARG, "prefill: empty prompt");
    if (pos0 < 0) return kn_fail(err, KILN_ERR_INVALID_ARG, "prefill: negative position");
    for (int i = 0; i < n; i++) {
        kiln_status s = check_id(b, ids[i], err);
        if (s) return s;
    }
    if (b->stateless) return window_append(b, ids, n, pos0, logits, err);
    const int C = b->C;
    for (int at = 0; at < n; at += C) {
        int k = n - at < C ? n - at : C;
        /* padding rows repeat the last real position, as the native engine's chunks do */
        for (int i = 0; i < C; i++) {
            b->ids[i] = i < k ? ids[at + i] : 0;
            b->pos[i] = pos0 + at + (i < k ? i : k - 1);
        }
        kiln_status s = run_graph(b, &b->pre, k, err);
        if (s) return s;
    }
    *logits = b->logits;
    return KILN_OK;
}

static kiln_status ov_decode(kn_backend *base, int32_t id, int32_t position,
                             const float **logits, kiln_error *err) {
    ov_backend *b = (ov_backend *)base;
    kiln_status s = check_id(b, id, err);
    if (s) return s;
    if (position < 0) return kn_fail(err, KILN_ERR_INVALID_ARG, "decode: negative position");
    if (b->stateless) return window_append(b, &id, 1, position, logits, err);
    b->ids[0] = id;
    b->pos[0] = position;
    if ((s = run_graph(b, &b->dec, 1, err))) return s;
    *logits = b->logits;
    return KILN_OK;
}

static void ov_reset(kn_backend *base) {
    ov_backend *b = (ov_backend *)base;
    b->sl_len = 0;
    if (!b->past_kv) return; /* stateless mode: no cache */
    for (int s = 0; s < b->W; s++) b->slot_pos[s] = -1;
    /* unfilled slots stay finite: masked columns still multiply their V rows by 0 */
    memset(b->past_kv, 0, sizeof(float) * (size_t)b->L * 2 * (size_t)b->Hkv * (size_t)b->W *
                              (size_t)b->D);
}

static void free_graph(ov_backend *b, ov_graph *g) {
    for (int k = 0; k < N_PORTS; k++)
        if (g->t[k]) b->api.tensor_free(g->t[k]);
    if (g->req) b->api.infer_request_free(g->req);
    if (g->cm) b->api.compiled_model_free(g->cm);
}

static void ov_backend_free(kn_backend *base) {
    ov_backend *b = (ov_backend *)base;
    if (!b) return;
    if (b->api.lib) {
        free_graph(b, &b->sl);
        free_graph(b, &b->dec);
        free_graph(b, &b->pre);
        if (b->core) b->api.core_free(b->core);
    }
    kn_free(b->past_kv);
    kn_free(b->new_kv);
    kn_free(b->mask);
    kn_free(b->logits);
    kn_free(b->ids);
    kn_free(b->pos);
    kn_free(b->slot_pos);
    kn_free(b->slot_row);
    kn_free(b->row_slot);
    kn_free(b->sl_ids);
    kn_free(b->sl_mask);
    kn_free(b);
}

static const kn_backend_ops k_ov_ops = {ov_prefill, ov_decode, ov_stateless, ov_reset,
                                        ov_backend_free};

/* ---- open --------------------------------------------------------------------------------- */

static kiln_status compile_graph(ov_backend *b, const kn_backend_params *p, const char *xml,
                                 const char *file, const props *ps, ov_graph *g,
                                 kiln_error *err) {
    /* A garbled file would send OpenVINO through its other frontends, each printing noise
     * before the failure: check it is an IR with all its weights first. */
    kiln_status ks = kn_ov_ir_check(xml, err);
    if (ks) return ks;
    double t0 = kn_now_seconds();
    ov_status st = compile(b, xml, p->ov_device, ps, &g->cm);
    if (st) {
        char e[600], what[300];
        snprintf(what, sizeof what, "cannot compile %s", file);
        return kn_fail(err, KILN_ERR_FORMAT, "openvino:%s: %s: %s", p->ov_device, what,
                       kn_ov_error(&b->api, st, e, sizeof e));
    }
    st = b->api.compiled_model_create_infer_request(g->cm, &g->req);
    if (st) return ov_fail(b, err, KILN_ERR_INTERNAL, st, "infer request");
    char msg[400];
    snprintf(msg, sizeof msg, "openvino:%s: %s ready in %.2f s", p->ov_device, file,
             kn_now_seconds() - t0);
    say(p, KILN_LOG_INFO, msg);
    return KILN_OK;
}

static kiln_status alloc_stateless(ov_backend *b, kiln_error *err) {
    b->logits = kn_calloc((size_t)b->V, sizeof(float));
    b->sl_ids = kn_calloc((size_t)b->SW, sizeof(int32_t));
    b->sl_mask = kn_calloc((size_t)b->SW, sizeof(int32_t));
    if (!b->logits || !b->sl_ids || !b->sl_mask)
        return kn_fail(err, KILN_ERR_NOMEM, "openvino: out of memory");
    return KILN_OK;
}

static kiln_status alloc_buffers(ov_backend *b, kiln_error *err) {
    const size_t W = (size_t)b->W, C = (size_t)b->C, planes = (size_t)b->L * 2 * (size_t)b->Hkv;
    b->past_kv = kn_malloc(sizeof(float) * planes * W * (size_t)b->D);
    b->new_kv = kn_malloc(sizeof(float) * planes * C * (size_t)b->D);
    b->mask = kn_malloc(sizeof(float) * C * (W + C));
    b->logits = kn_calloc((size_t)b->V, sizeof(float));
    b->ids = kn_calloc(C, sizeof(int32_t));
    b->pos = kn_calloc(C, sizeof(int32_t));
    b->slot_pos = kn_malloc(sizeof(int32_t) * W);
    b->slot_row = kn_malloc(sizeof(int32_t) * W);
    b->row_slot = kn_calloc(C, sizeof(int32_t));
    if (!b->past_kv || !b->new_kv || !b->mask || !b->logits || !b->ids || !b->pos ||
        !b->slot_pos || !b->slot_row || !b->row_slot)
        return kn_fail(err, KILN_ERR_NOMEM, "openvino: out of memory for a %zu-slot cache", W);
    for (size_t s = 0; s < W; s++) b->slot_row[s] = -1;
    memset(b->new_kv, 0, sizeof(float) * planes * C * (size_t)b->D);
    memset(b->mask, 0, sizeof(float) * C * (W + C));
    ov_reset(&b->base);
    return KILN_OK;
}

static kiln_status open_ov(ov_backend *b, const kn_model *m, const kn_backend_params *p,
                           kiln_error *err) {
    const char *dev = p->ov_device;
    /* XMLs at even indices (cache_dir_for hashes them whole) */
    static const char *const files[N_FILES] = {
        "openvino_model.xml",     "openvino_model.bin",    "openvino_decode.xml",
        "openvino_decode.bin",    "openvino_stateless.xml", "openvino_stateless.bin"};
    /* kv mode needs the prefill and decode graphs, stateless mode only its own */
    const int need0 = p->stateless ? 4 : 0, need1 = p->stateless ? 6 : 4;
    /* The IR first: an offering without it is a plain "not here" for auto, and no reason to
     * load OpenVINO at all. */
    if (!p->offering_dir)
        return kn_fail(err, KILN_ERR_DEVICE,
                       "%s: no OpenVINO IR (the model is not an offering: bake it with "
                       "--target openvino, or run with --device cpu)", dev);
    for (int i = need0; i < need1; i++) {
        char *path = kn_path_join(p->offering_dir, files[i]);
        bool ok = path && kn_is_file(path);
        kn_free(path);
        if (!ok && p->stateless)
            return kn_fail(err, KILN_ERR_DEVICE,
                           "%s: the offering has no %s for --mode stateless (re-bake it with "
                           "--target openvino, or run --mode kv, or --device cpu)", dev,
                           files[i]);
        if (!ok)
            return kn_fail(err, KILN_ERR_DEVICE,
                           "%s: the offering has no %s (bake it with --target openvino, or run "
                           "with --device cpu)", dev, files[i]);
    }
    kiln_status s = kn_ov_load(p->ov_lib, &b->api, err);
    if (s) return kn_fail_prefix(err, "%s: ", dev);
    ov_status st = b->api.core_create(&b->core);
    if (st) {
        char e[600];
        return kn_fail(err, KILN_ERR_DEVICE, "%s: OpenVINO (%s) cannot start: %s", dev,
                       b->api.path, kn_ov_error(&b->api, st, e, sizeof e));
    }
    if (!device_virtual(dev)) {
        ov_devices d = {0};
        st = b->api.core_get_available_devices(b->core, &d);
        if (st) {
            char e[600];
            return kn_fail(err, KILN_ERR_DEVICE, "%s: OpenVINO cannot list devices: %s", dev,
                           kn_ov_error(&b->api, st, e, sizeof e));
        }
        bool here = device_listed(&d, dev);
        b->api.available_devices_free(&d);
        if (!here) {
            char seen[400];
            kiln_error e2;
            if (kn_ov_devices_str(&b->api, b->core, seen, sizeof seen, &e2)) seen[0] = 0;
            return kn_fail(err, KILN_ERR_DEVICE, "%s: not present (OpenVINO sees: %s)", dev,
                           seen[0] ? seen : "none");
        }
    }

    b->m = m;
    b->L = m->hp.n_layer;
    b->Hkv = m->hp.n_head_kv;
    b->D = m->hp.head_dim;
    b->V = m->hp.n_vocab;
    char *cache = NULL;
    if ((s = cache_dir_for(p->offering_dir, files, &cache, err))) return s;
    char threads[16];
    snprintf(threads, sizeof threads, "%d", p->threads);
    props ps = {0};
    device_props(&ps, dev, cache, p->threads > 0 ? threads : NULL);
    ov_etype f32 = 0, i32 = 0;
    if (p->stateless) {
        b->stateless = true;
        char *xml = kn_path_join(p->offering_dir, files[4]);
        s = xml ? compile_graph(b, p, xml, files[4], &ps, &b->sl, err)
                : kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        if (!s) s = bind_stateless(b, files[4], &f32, &i32, err);
        if (!s) s = alloc_stateless(b, err);
        if (!s) s = wrap_stateless(b, f32, i32, err);
        kn_free(xml);
        kn_free(cache);
        return s;
    }
    char *xml_pre = kn_path_join(p->offering_dir, files[0]);
    char *xml_dec = kn_path_join(p->offering_dir, files[2]);
    if (!xml_pre || !xml_dec) s = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    if (!s) s = compile_graph(b, p, xml_pre, files[0], &ps, &b->pre, err);
    if (!s) s = bind_graph(b, &b->pre, files[0], true, &f32, &i32, err);
    if (!s) s = compile_graph(b, p, xml_dec, files[2], &ps, &b->dec, err);
    if (!s) s = bind_graph(b, &b->dec, files[2], false, &f32, &i32, err);
    if (!s) s = alloc_buffers(b, err);
    if (!s) s = wrap_tensors(b, &b->pre, f32, i32, err);
    if (!s) s = wrap_tensors(b, &b->dec, f32, i32, err);
    kn_free(xml_pre);
    kn_free(xml_dec);
    kn_free(cache);
    return s;
}

kiln_status kn_backend_openvino_new(const kn_model *m, const kn_backend_params *p,
                                    kn_backend **out, kiln_error *err) {
    *out = NULL;
    if (!p->ov_device || !*p->ov_device)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "openvino: no device named");
    ov_backend *b = kn_calloc(1, sizeof *b);
    if (!b) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    b->base.ops = &k_ov_ops;
    snprintf(b->base.device, sizeof b->base.device, "openvino:%s", p->ov_device);
    kiln_status s = open_ov(b, m, p, err);
    if (s) {
        ov_backend_free(&b->base);
        return s;
    }
    *out = &b->base;
    return KILN_OK;
}

kiln_status kn_openvino_devices(const char *ov_lib, char **out, kiln_error *err) {
    *out = NULL;
    kn_ov_api api;
    kiln_status s = kn_ov_load(ov_lib, &api, err);
    if (s) return s;
    ov_core *core = NULL;
    ov_status st = api.core_create(&core);
    if (st) {
        char e[600];
        return kn_fail(err, KILN_ERR_DEVICE, "OpenVINO (%s) cannot start: %s", api.path,
                       kn_ov_error(&api, st, e, sizeof e));
    }
    char buf[512];
    s = kn_ov_devices_str(&api, core, buf, sizeof buf, err);
    api.core_free(core);
    if (s) return s;
    *out = kn_strdup(buf);
    return *out ? KILN_OK : kn_fail(err, KILN_ERR_NOMEM, "out of memory");
}
