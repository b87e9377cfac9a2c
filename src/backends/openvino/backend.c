/* backend.c — the OpenVINO device: the offering's static IR (openvino_model.xml = prefill
 * [1,C], openvino_decode.xml = decode [1,1]; docs/OPENVINO.md) compiled once per model and
 * device and shared by every session, each session driving it with its own infer requests and
 * host-side KV cache; or, opened for --mode stateless, only openvino_stateless.xml (one padded
 * [1,W] window, no cache).
 *
 * The graphs never write the cache: each call reads past_kv [L,2,Hkv,W,D] and returns the T
 * new rows new_kv [L,2,Hkv,T,D], which this file copies into the slots the driver assigned
 * (kn_contract_slot: slot p while p < W, then the sink + ring of --overflow slide), and the
 * additive attention_mask [1,1,T,W+T] is built from the driver's position-per-slot table so
 * that every query sees exactly the keys the native engine's attention sees. A model whose
 * layers differ in window (Gemma: kn_hparams_two_masks) has a second one, sliding_mask, built
 * the same way with the window, for its sliding layers; attention_mask is then the global
 * layers'. Both devices therefore compute the same function of the same cache.
 *
 * Every buffer of a session (cache, inputs, outputs) is allocated once when it opens and
 * wrapped once in an ov_tensor set on its infer requests; a step only writes host memory and
 * calls infer.
 *
 * The stateless graph takes input_ids i32 [1,W] and attention_mask i32 [1,W] (1 = real) and
 * returns the logits of the last real token; the window is padded with id 0 and mask 0 (the
 * mask makes the padding ids irrelevant).
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backends/backend.h"
#include "backends/openvino/ir_check.h"
#include "backends/openvino/ov_api.h"

enum {
    IN_IDS, IN_POS, IN_MASK, IN_LOGIT_INDEX, IN_PAST, IN_SWA_MASK, OUT_LOGITS, OUT_NEW_KV, N_PORTS
};
static const char *const k_port_name[N_PORTS] = {
    "input_ids", "position_ids", "attention_mask", "logit_index", "past_kv", "sliding_mask",
    "logits",    "new_kv"};

/* A model on one OpenVINO device: the compiled graphs, shared by its sessions. */
typedef struct ov_device {
    kn_device base;
    kn_ov_api api;
    ov_core *core;
    int L, Hkv, D, V;
    int swa;                         /* attention_mask's window (0: none) */
    int swa2;                        /* sliding_mask's window; 0: the graphs have none */
    int W;                           /* the IR's cache slots (>= the contract's window) */
    int C;                           /* the IR's prefill width */
    int SW;                          /* the stateless IR's window */
    bool stateless;                  /* opened for --mode stateless: only that graph */
    ov_compiled_model *cm_pre, *cm_dec, *cm_sl;
    ov_etype f32, i32;               /* element-type codes, learnt from the IR */
    pthread_mutex_t mu;              /* infer-request creation from several threads */
} ov_device;

/* One graph's infer request in a session, with its tensors over the session's host buffers. */
typedef struct ov_graph {
    ov_infer_request *req;
    ov_tensor *t[N_PORTS];
    int T;                           /* new tokens per call: C, 1, or the stateless window */
} ov_graph;

/* A session on the device: infer requests, KV cache and host buffers. */
typedef struct ov_backend {
    kn_backend base;
    ov_device *d;
    ov_graph pre, dec, sl;
    /* host buffers, shared by the kv graphs (they never run at once) */
    float *past_kv;                  /* [L,2,Hkv,W,D] */
    float *new_kv;                   /* [L,2,Hkv,C,D]; decode uses the first [L,2,Hkv,1,D] */
    float *mask;                     /* [C, W+C]; decode uses the first [1, W+1] */
    float *swa_mask;                 /* the same for the sliding layers, when swa2 > 0 */
    float *logits;                   /* [V] */
    int32_t *ids;                    /* [C], or [SW] stateless */
    int32_t *pos;                    /* [C] */
    int32_t logit_index[1];
    int32_t *slot_row;               /* [W] the call's row that takes the slot, -1 = none */
    int32_t *row_slot;               /* [C] */
    int32_t *sl_mask;                /* [SW] stateless: 1 for real tokens */
} ov_backend;

/* ---- small helpers ---------------------------------------------------------------------- */

static kiln_status ov_fail(ov_device *d, kiln_error *err, kiln_status code, ov_status st,
                           const char *what) {
    char e[600];
    return kn_fail(err, code, "%s: %s: %s", d->base.name, what,
                   kn_ov_error(&d->api, st, e, sizeof e));
}

static void say(const kn_device_params *p, kiln_log_level level, const char *msg) {
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

static ov_status compile(ov_device *d, const char *xml, const char *dev, const props *ps,
                         ov_compiled_model **out) {
    /* The variadic list is read only up to property_args_size, so a fixed, padded argument
     * list serves any count without a switch on n. */
    const char *a[2 * MAX_PROPS] = {0};
    for (int i = 0; i < ps->n; i++) {
        a[2 * i] = ps->key[i];
        a[2 * i + 1] = ps->val[i];
    }
    return d->api.core_compile_model_from_file(
        d->core, xml, dev, (size_t)(2 * ps->n), out, a[0], a[1], a[2], a[3], a[4], a[5], a[6],
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

static kiln_status read_port(ov_device *d, ov_compiled_model *cm, int k, bool input,
                             port_info *pi, kiln_error *err) {
    memset(pi, 0, sizeof *pi);
    ov_port *port = NULL;
    ov_status st = input ? d->api.compiled_model_input_by_name(cm, k_port_name[k], &port)
                         : d->api.compiled_model_output_by_name(cm, k_port_name[k], &port);
    if (st || !port) return KILN_OK; /* absent: the caller decides whether that is an error */
    ov_shape sh = {0, NULL};
    st = d->api.port_get_element_type(port, &pi->type);
    if (!st) st = d->api.const_port_get_shape(port, &sh);
    d->api.output_const_port_free(port);
    if (st) return ov_fail(d, err, KILN_ERR_FORMAT, st, k_port_name[k]);
    if (sh.rank < 1 || sh.rank > 8) {
        d->api.shape_free(&sh);
        return kn_fail(err, KILN_ERR_FORMAT, "openvino IR: %s has rank %lld", k_port_name[k],
                       (long long)sh.rank);
    }
    pi->rank = (int)sh.rank;
    for (int i = 0; i < pi->rank; i++) pi->dims[i] = sh.dims[i];
    d->api.shape_free(&sh);
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

/* Checks a kv graph's ports against the model; learns T, and from the prefill graph W, C and
 * the element-type codes. */
static kiln_status check_graph(ov_device *d, ov_compiled_model *cm, const char *file,
                               bool prefill, int window, int *T_out, kiln_error *err) {
    port_info pi[N_PORTS];
    kiln_status s;
    for (int k = 0; k < N_PORTS; k++) {
        if ((s = read_port(d, cm, k, k < OUT_LOGITS, &pi[k], err))) return s;
        bool needed = (k != IN_LOGIT_INDEX || prefill) && (k != IN_SWA_MASK || d->swa2 > 0);
        if (needed && !pi[k].present)
            return kn_fail(err, KILN_ERR_FORMAT, "%s: no %s %s", file,
                           k < OUT_LOGITS ? "input" : "output", k_port_name[k]);
        if (k == IN_SWA_MASK && pi[k].present && d->swa2 == 0)
            return kn_fail(err, KILN_ERR_FORMAT, "%s: has a sliding_mask input this model's "
                           "layers do not use", file);
    }
    if (pi[IN_IDS].rank != 2 || pi[IN_IDS].dims[1] < 1 || pi[IN_IDS].dims[1] > 65536)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: input_ids is not [1,T]", file);
    int T = (int)pi[IN_IDS].dims[1];
    if (pi[IN_PAST].rank != 5 || pi[IN_PAST].dims[3] < 1 || pi[IN_PAST].dims[3] > (1 << 24))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: past_kv is not [L,2,Hkv,W,D]", file);
    if (prefill) {
        d->W = (int)pi[IN_PAST].dims[3];
        d->C = T;
        if (d->W < window)
            return kn_fail(err, KILN_ERR_FORMAT,
                           "%s: the IR's cache has %d slots, the model's window is %d (re-bake "
                           "with --target openvino)", file, d->W, window);
    } else if (T != 1) {
        return kn_fail(err, KILN_ERR_FORMAT, "%s: the decode graph takes %d tokens, not 1", file,
                       T);
    }
    const int64_t W = d->W;
    const int64_t sh_ids[2] = {1, T}, sh_mask[4] = {1, 1, T, W + T}, sh_li[1] = {1};
    const int64_t sh_past[5] = {d->L, 2, d->Hkv, W, d->D}, sh_logits[2] = {1, d->V};
    const int64_t sh_new[5] = {d->L, 2, d->Hkv, T, d->D};
    const int64_t *want[N_PORTS] = {sh_ids,  sh_ids,  sh_mask,   sh_li,
                                    sh_past, sh_mask, sh_logits, sh_new};
    const int rank[N_PORTS] = {2, 2, 4, 1, 5, 4, 2, 5};
    for (int k = 0; k < N_PORTS; k++)
        if (pi[k].present && (s = expect_shape(&pi[k], file, k_port_name[k], want[k], rank[k],
                                               err)))
            return s;
    /* ov_element_type_e was renumbered across releases: learn the codes from the IR, whose
     * types the contract fixes (ids, positions, logit_index i32; the rest f32). */
    if (prefill) {
        d->i32 = pi[IN_IDS].type;
        d->f32 = pi[IN_PAST].type;
        if (d->i32 == d->f32)
            return kn_fail(err, KILN_ERR_FORMAT, "%s: input_ids and past_kv share a type", file);
    }
    for (int k = 0; k < N_PORTS; k++) {
        bool is_i32 = k == IN_IDS || k == IN_POS || k == IN_LOGIT_INDEX;
        if (pi[k].present && pi[k].type != (is_i32 ? d->i32 : d->f32))
            return kn_fail(err, KILN_ERR_FORMAT, "%s: %s should be %s", file, k_port_name[k],
                           is_i32 ? "i32" : "f32");
    }
    *T_out = T;
    return KILN_OK;
}

/* The stateless graph: input_ids i32 [1,W], attention_mask i32 [1,W] -> logits f32 [1,V], no
 * cache; W at least the model's window. Learns the element-type codes as check_graph does. */
static kiln_status check_stateless(ov_device *d, const char *file, int window, kiln_error *err) {
    static const int ports[3] = {IN_IDS, IN_MASK, OUT_LOGITS};
    port_info pi[3];
    kiln_status s;
    for (int k = 0; k < 3; k++) {
        if ((s = read_port(d, d->cm_sl, ports[k], ports[k] < OUT_LOGITS, &pi[k], err))) return s;
        if (!pi[k].present)
            return kn_fail(err, KILN_ERR_FORMAT, "%s: no %s %s", file,
                           ports[k] < OUT_LOGITS ? "input" : "output", k_port_name[ports[k]]);
    }
    port_info past;
    if ((s = read_port(d, d->cm_sl, IN_PAST, true, &past, err))) return s;
    if (past.present)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: has a past_kv input: not a stateless graph",
                       file);
    if (pi[0].rank != 2 || pi[0].dims[1] < 1 || pi[0].dims[1] > 65536)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: input_ids is not [1,W]", file);
    d->SW = (int)pi[0].dims[1];
    if (d->SW < window)
        return kn_fail(err, KILN_ERR_FORMAT,
                       "%s: the IR's window is %d tokens, the model's is %d (re-bake with "
                       "--target openvino)", file, d->SW, window);
    const int64_t sh_win[2] = {1, d->SW}, sh_logits[2] = {1, d->V};
    if ((s = expect_shape(&pi[0], file, "input_ids", sh_win, 2, err)) ||
        (s = expect_shape(&pi[1], file, "attention_mask", sh_win, 2, err)) ||
        (s = expect_shape(&pi[2], file, "logits", sh_logits, 2, err)))
        return s;
    d->i32 = pi[0].type;
    d->f32 = pi[2].type;
    if (d->i32 == d->f32 || pi[1].type != d->i32)
        return kn_fail(err, KILN_ERR_FORMAT, "%s: input_ids and attention_mask should be i32, "
                       "logits f32", file);
    return KILN_OK;
}

/* ---- a session ---------------------------------------------------------------------------- */

static kiln_status new_request(ov_backend *b, ov_compiled_model *cm, ov_graph *g,
                               kiln_error *err) {
    ov_device *d = b->d;
    pthread_mutex_lock(&d->mu);
    ov_status st = d->api.compiled_model_create_infer_request(cm, &g->req);
    pthread_mutex_unlock(&d->mu);
    return st ? ov_fail(d, err, KILN_ERR_INTERNAL, st, "infer request") : KILN_OK;
}

static kiln_status wrap_tensors(ov_backend *b, ov_graph *g, kiln_error *err) {
    ov_device *d = b->d;
    const int64_t T = g->T, W = d->W;
    int64_t sh_ids[2] = {1, T}, sh_mask[4] = {1, 1, T, W + T}, sh_li[1] = {1};
    int64_t sh_past[5] = {d->L, 2, d->Hkv, W, d->D}, sh_logits[2] = {1, d->V};
    int64_t sh_new[5] = {d->L, 2, d->Hkv, T, d->D};
    int64_t *dims[N_PORTS] = {sh_ids, sh_ids, sh_mask, sh_li, sh_past, sh_mask, sh_logits, sh_new};
    const int rank[N_PORTS] = {2, 2, 4, 1, 5, 4, 2, 5};
    void *host[N_PORTS] = {b->ids,     b->pos,      b->mask,   b->logit_index,
                           b->past_kv, b->swa_mask, b->logits, b->new_kv};
    for (int k = 0; k < N_PORTS; k++) {
        if (k == IN_LOGIT_INDEX && g->T == 1) continue; /* decode has none */
        if (k == IN_SWA_MASK && d->swa2 == 0) continue;
        bool is_i32 = k == IN_IDS || k == IN_POS || k == IN_LOGIT_INDEX;
        ov_shape sh = {rank[k], dims[k]};
        ov_status st = d->api.tensor_create_from_host_ptr(is_i32 ? d->i32 : d->f32, sh, host[k],
                                                          &g->t[k]);
        if (!st) st = d->api.infer_request_set_tensor(g->req, k_port_name[k], g->t[k]);
        if (st) return ov_fail(d, err, KILN_ERR_INTERNAL, st, k_port_name[k]);
    }
    return KILN_OK;
}

static kiln_status wrap_stateless(ov_backend *b, kiln_error *err) {
    ov_device *d = b->d;
    int64_t sh_win[2] = {1, d->SW}, sh_logits[2] = {1, d->V};
    static const int ports[3] = {IN_IDS, IN_MASK, OUT_LOGITS};
    void *host[3] = {b->ids, b->sl_mask, b->logits};
    for (int k = 0; k < 3; k++) {
        ov_shape sh = {2, k == 2 ? sh_logits : sh_win};
        ov_status st = d->api.tensor_create_from_host_ptr(k == 2 ? d->f32 : d->i32, sh, host[k],
                                                          &b->sl.t[ports[k]]);
        if (!st)
            st = d->api.infer_request_set_tensor(b->sl.req, k_port_name[ports[k]],
                                                 b->sl.t[ports[k]]);
        if (st) return ov_fail(d, err, KILN_ERR_INTERNAL, st, k_port_name[ports[k]]);
    }
    return KILN_OK;
}

/* ---- the steps ---------------------------------------------------------------------------- */

/* The additive mask [T, W+T] of a call for keys within swa of the query (0: any distance),
 * from the slot table (row_slot / slot_row already set). */
static void fill_mask(ov_backend *b, const kn_graph_call *c, int T, int swa, float *mask) {
    const int W = b->d->W, cols = W + T, n = c->n;
    for (int r = 0; r < n; r++) {
        const int32_t p = b->pos[r];
        float *row = mask + (size_t)r * cols;
        for (int s = 0; s < W; s++) {
            /* a slot this call writes is seen through its new column, not the cache */
            int32_t sp = s < c->n_slots ? c->slot_pos[s] : -1;
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
        memcpy(mask + (size_t)r * cols, mask + (size_t)(n - 1) * cols,
               sizeof(float) * (size_t)cols);
}

/* Runs a kv graph on the call's n real rows and files their K/V rows into the cache. */
static kiln_status run_kv(ov_backend *b, ov_graph *g, const kn_graph_call *c, kiln_error *err) {
    ov_device *d = b->d;
    const int T = g->T, W = d->W, n = c->n;
    memcpy(b->ids, c->ids, sizeof(int32_t) * (size_t)T);
    memcpy(b->pos, c->pos, sizeof(int32_t) * (size_t)T);
    /* Which row takes which slot. Two rows of one call may map to one ring slot (a chunk
     * longer than the ring): the native engine writes both before attending, so only the
     * later one is ever seen; the same rule here. */
    for (int r = 0; r < n; r++) {
        b->row_slot[r] = c->slot[r];
        b->slot_row[c->slot[r]] = r;
    }
    fill_mask(b, c, T, d->swa, b->mask);
    if (d->swa2 > 0) fill_mask(b, c, T, d->swa2, b->swa_mask);
    if (T > 1) b->logit_index[0] = n - 1;

    ov_status st = d->api.infer_request_infer(g->req);
    for (int r = 0; r < n; r++) b->slot_row[b->row_slot[r]] = -1;
    if (st) return ov_fail(d, err, KILN_ERR_INTERNAL, st, "infer");

    /* new_kv [L,2,Hkv,T,D] -> past_kv [L,2,Hkv,W,D], rows in order so the last writer of a
     * slot wins, as in the native engine */
    const size_t D = (size_t)d->D, planes = (size_t)d->L * 2 * (size_t)d->Hkv;
    for (int r = 0; r < n; r++) {
        const size_t slot = (size_t)b->row_slot[r];
        for (size_t pl = 0; pl < planes; pl++)
            memcpy(b->past_kv + (pl * (size_t)W + slot) * D,
                   b->new_kv + (pl * (size_t)T + (size_t)r) * D, sizeof(float) * D);
    }
    return KILN_OK;
}

/* The stateless graph over the call's window (positions 0..n-1, the rest padding). */
static kiln_status run_window(ov_backend *b, const kn_graph_call *c, kiln_error *err) {
    ov_device *d = b->d;
    for (int i = 0; i < d->SW; i++) {
        b->ids[i] = i < c->n ? c->ids[i] : 0;
        b->sl_mask[i] = i < c->n;
    }
    ov_status st = d->api.infer_request_infer(b->sl.req);
    return st ? ov_fail(d, err, KILN_ERR_INTERNAL, st, "infer") : KILN_OK;
}

static kiln_status ov_run(kn_backend *base, const kn_graph_call *c, const float **logits,
                          kiln_error *err) {
    ov_backend *b = (ov_backend *)base;
    ov_device *d = b->d;
    kiln_status s;
    if (d->stateless != (c->graph == KN_GRAPH_STATELESS))
        return kn_fail(err, KILN_ERR_UNSUPPORTED,
                       "%s: opened for %s mode, asked for the %s graph (open a session for "
                       "that mode)", d->base.name, d->stateless ? "stateless" : "kv",
                       c->graph == KN_GRAPH_STATELESS ? "stateless" : "kv");
    if (c->graph == KN_GRAPH_STATELESS) s = run_window(b, c, err);
    else s = run_kv(b, c->graph == KN_GRAPH_PREFILL ? &b->pre : &b->dec, c, err);
    if (s) return s;
    *logits = b->logits;
    return KILN_OK;
}

static void ov_reset(kn_backend *base) {
    ov_backend *b = (ov_backend *)base;
    if (!b->past_kv) return; /* stateless mode: no cache */
    /* unfilled slots stay finite: masked columns still multiply their V rows by 0 */
    memset(b->past_kv, 0, sizeof(float) * (size_t)b->d->L * 2 * (size_t)b->d->Hkv *
                              (size_t)b->d->W * (size_t)b->d->D);
}

static void free_graph(ov_device *d, ov_graph *g) {
    for (int k = 0; k < N_PORTS; k++)
        if (g->t[k]) d->api.tensor_free(g->t[k]);
    if (g->req) d->api.infer_request_free(g->req);
}

static void ov_backend_free(kn_backend *base) {
    ov_backend *b = (ov_backend *)base;
    if (!b) return;
    free_graph(b->d, &b->sl);
    free_graph(b->d, &b->dec);
    free_graph(b->d, &b->pre);
    kn_free(b->past_kv);
    kn_free(b->new_kv);
    kn_free(b->mask);
    kn_free(b->swa_mask);
    kn_free(b->logits);
    kn_free(b->ids);
    kn_free(b->pos);
    kn_free(b->slot_row);
    kn_free(b->row_slot);
    kn_free(b->sl_mask);
    kn_free(b);
}

static const kn_backend_ops k_ov_ops = {ov_run, ov_reset, ov_backend_free, NULL};

static kiln_status alloc_kv(ov_backend *b, kiln_error *err) {
    const ov_device *d = b->d;
    const size_t W = (size_t)d->W, C = (size_t)d->C, planes = (size_t)d->L * 2 * (size_t)d->Hkv;
    b->past_kv = kn_malloc(sizeof(float) * planes * W * (size_t)d->D);
    b->new_kv = kn_malloc(sizeof(float) * planes * C * (size_t)d->D);
    b->mask = kn_malloc(sizeof(float) * C * (W + C));
    if (d->swa2 > 0) b->swa_mask = kn_calloc(C * (W + C), sizeof(float));
    b->logits = kn_calloc((size_t)d->V, sizeof(float));
    b->ids = kn_calloc(C, sizeof(int32_t));
    b->pos = kn_calloc(C, sizeof(int32_t));
    b->slot_row = kn_malloc(sizeof(int32_t) * W);
    b->row_slot = kn_calloc(C, sizeof(int32_t));
    if (!b->past_kv || !b->new_kv || !b->mask || !b->logits || !b->ids || !b->pos ||
        !b->slot_row || !b->row_slot || (d->swa2 > 0 && !b->swa_mask))
        return kn_fail(err, KILN_ERR_NOMEM, "openvino: out of memory for a %zu-slot cache", W);
    for (size_t s = 0; s < W; s++) b->slot_row[s] = -1;
    memset(b->new_kv, 0, sizeof(float) * planes * C * (size_t)d->D);
    memset(b->mask, 0, sizeof(float) * C * (W + C));
    ov_reset(&b->base);
    return KILN_OK;
}

static kiln_status ov_open(kn_device *dev, const kn_session_cfg *cfg, kn_backend **out,
                           kiln_error *err) {
    ov_device *d = (ov_device *)dev;
    *out = NULL;
    if (cfg->stateless != d->stateless)
        return kn_fail(err, KILN_ERR_INTERNAL, "%s: opened for the other mode", d->base.name);
    ov_backend *b = kn_calloc(1, sizeof *b);
    if (!b) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    b->base.ops = &k_ov_ops;
    b->base.device = dev;
    b->d = d;
    kiln_status s;
    if (d->stateless) {
        b->sl.T = d->SW;
        b->logits = kn_calloc((size_t)d->V, sizeof(float));
        b->ids = kn_calloc((size_t)d->SW, sizeof(int32_t));
        b->sl_mask = kn_calloc((size_t)d->SW, sizeof(int32_t));
        s = b->logits && b->ids && b->sl_mask ? KILN_OK
                                              : kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        if (!s) s = new_request(b, d->cm_sl, &b->sl, err);
        if (!s) s = wrap_stateless(b, err);
    } else {
        b->pre.T = d->C;
        b->dec.T = 1;
        s = alloc_kv(b, err);
        if (!s) s = new_request(b, d->cm_pre, &b->pre, err);
        if (!s) s = wrap_tensors(b, &b->pre, err);
        if (!s) s = new_request(b, d->cm_dec, &b->dec, err);
        if (!s) s = wrap_tensors(b, &b->dec, err);
    }
    if (s) {
        ov_backend_free(&b->base);
        return s;
    }
    *out = &b->base;
    return KILN_OK;
}

/* ---- the device --------------------------------------------------------------------------- */

static void ov_device_free(kn_device *dev) {
    ov_device *d = (ov_device *)dev;
    if (!d) return;
    if (d->api.lib) {
        if (d->cm_sl) d->api.compiled_model_free(d->cm_sl);
        if (d->cm_dec) d->api.compiled_model_free(d->cm_dec);
        if (d->cm_pre) d->api.compiled_model_free(d->cm_pre);
        if (d->core) d->api.core_free(d->core);
    }
    pthread_mutex_destroy(&d->mu);
    kn_free(d);
}

static const kn_device_ops k_ov_device_ops = {ov_open, ov_device_free};

static kiln_status compile_graph(ov_device *d, const kn_device_params *p, const char *xml,
                                 const char *file, const props *ps, ov_compiled_model **cm,
                                 kiln_error *err) {
    /* A garbled file would send OpenVINO through its other frontends, each printing noise
     * before the failure: check it is an IR with all its weights first. */
    kiln_status ks = kn_ov_ir_check(xml, err);
    if (ks) return ks;
    double t0 = kn_now_seconds();
    ov_status st = compile(d, xml, p->ov_device, ps, cm);
    if (st) {
        char e[600], what[300];
        snprintf(what, sizeof what, "cannot compile %s", file);
        return kn_fail(err, KILN_ERR_FORMAT, "openvino:%s: %s: %s", p->ov_device, what,
                       kn_ov_error(&d->api, st, e, sizeof e));
    }
    d->base.n_compiles++;
    char msg[400];
    snprintf(msg, sizeof msg, "openvino:%s: %s ready in %.2f s", p->ov_device, file,
             kn_now_seconds() - t0);
    say(p, KILN_LOG_INFO, msg);
    return KILN_OK;
}

static kiln_status open_device(ov_device *d, const kn_device_params *p, kiln_error *err) {
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
    kiln_status s = kn_ov_load(p->ov_lib, &d->api, err);
    if (s) return kn_fail_prefix(err, "%s: ", dev);
    ov_status st = d->api.core_create(&d->core);
    if (st) {
        char e[600];
        return kn_fail(err, KILN_ERR_DEVICE, "%s: OpenVINO (%s) cannot start: %s", dev,
                       d->api.path, kn_ov_error(&d->api, st, e, sizeof e));
    }
    if (!device_virtual(dev)) {
        ov_devices ds = {0};
        st = d->api.core_get_available_devices(d->core, &ds);
        if (st) {
            char e[600];
            return kn_fail(err, KILN_ERR_DEVICE, "%s: OpenVINO cannot list devices: %s", dev,
                           kn_ov_error(&d->api, st, e, sizeof e));
        }
        bool here = device_listed(&ds, dev);
        d->api.available_devices_free(&ds);
        if (!here) {
            char seen[400];
            kiln_error e2;
            if (kn_ov_devices_str(&d->api, d->core, seen, sizeof seen, &e2)) seen[0] = 0;
            return kn_fail(err, KILN_ERR_DEVICE, "%s: not present (OpenVINO sees: %s)", dev,
                           seen[0] ? seen : "none");
        }
    }

    d->L = p->hp->n_layer;
    d->Hkv = p->hp->n_head_kv;
    d->D = p->hp->head_dim;
    d->V = p->hp->n_vocab;
    /* layers that differ in window: attention_mask global, sliding_mask the window's */
    bool two = kn_hparams_two_masks(p->hp);
    d->swa = two ? 0 : p->hp->sliding_window;
    d->swa2 = two ? p->hp->sliding_window : 0;
    d->stateless = p->stateless;
    const int window = p->contract->window;
    char *cache = NULL;
    if ((s = cache_dir_for(p->offering_dir, files, &cache, err))) return s;
    char threads[16];
    snprintf(threads, sizeof threads, "%d", p->threads);
    props ps = {0};
    device_props(&ps, dev, cache, p->threads > 0 ? threads : NULL);
    if (p->stateless) {
        char *xml = kn_path_join(p->offering_dir, files[4]);
        s = xml ? compile_graph(d, p, xml, files[4], &ps, &d->cm_sl, err)
                : kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        if (!s) s = check_stateless(d, files[4], window, err);
        kn_free(xml);
        kn_free(cache);
        return s;
    }
    char *xml_pre = kn_path_join(p->offering_dir, files[0]);
    char *xml_dec = kn_path_join(p->offering_dir, files[2]);
    int T = 0;
    if (!xml_pre || !xml_dec) s = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    if (!s) s = compile_graph(d, p, xml_pre, files[0], &ps, &d->cm_pre, err);
    if (!s) s = check_graph(d, d->cm_pre, files[0], true, window, &T, err);
    if (!s) s = compile_graph(d, p, xml_dec, files[2], &ps, &d->cm_dec, err);
    if (!s) s = check_graph(d, d->cm_dec, files[2], false, window, &T, err);
    if (!s && d->C != p->contract->chunk)
        s = kn_fail(err, KILN_ERR_FORMAT, "%s: the IR's prefill takes %d tokens, the contract's "
                    "chunk is %d (re-bake with --target openvino)", files[0], d->C,
                    p->contract->chunk);
    kn_free(xml_pre);
    kn_free(xml_dec);
    kn_free(cache);
    return s;
}

kiln_status kn_device_openvino_open(const kn_device_params *p, kn_device **out,
                                    kiln_error *err) {
    *out = NULL;
    if (!p->ov_device || !*p->ov_device)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "openvino: no device named");
    ov_device *d = kn_calloc(1, sizeof *d);
    if (!d) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&d->mu, NULL);
    d->base.ops = &k_ov_device_ops;
    snprintf(d->base.name, sizeof d->base.name, "openvino:%s", p->ov_device);
    kiln_status s = open_device(d, p, err);
    if (s) {
        ov_device_free(&d->base);
        return s;
    }
    *out = &d->base;
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
