/* api.c — the public runtime: kiln_model (offering + tokenizer), kiln_session (engine session +
 * sampler), and the generation loop that drives the fixed-shape graphs.
 *
 * Everything the loop touches is allocated before its first step: the result arrays are sized
 * by max_tokens, the text buffer by max_tokens x the longest token, the piece buffer by the
 * longest token. Inside the loop there is no allocation, no file I/O and no shape change. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "backends/backend.h"
#include "base/base.h"
#include "formats/source.h"
#include "runtime/engine.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

struct kiln_model {
    kn_model *m;
    char *dir;               /* the offering directory (IR, compiled-blob cache), or NULL */
    kn_tokenizer *tok;
    int max_token_bytes;     /* longest token text: sizes the text buffers */
};

struct kiln_session {
    kiln_model *model;
    kn_backend *b;
    kiln_session_params p;
    char fallback[64];       /* devices auto skipped */
    kn_sampler sampler;
    int32_t *win;            /* [W] stateless window */
    /* chat: what the KV cache holds, and the conversation so far */
    int32_t *hist;           /* [W] ids at positions 0..n_hist-1 */
    int n_hist;
    kn_chat_msg *msgs;
    char **owned;            /* message texts we copied */
    int n_msgs, cap_msgs;
};

kiln_model_params kiln_model_default_params(void) {
    kiln_model_params p;
    memset(&p, 0, sizeof p);
    p.window = KN_DEFAULT_WINDOW;
    p.chunk = KN_DEFAULT_CHUNK;
    return p;
}

kiln_session_params kiln_session_default_params(void) {
    kiln_session_params p;
    memset(&p, 0, sizeof p);
    p.threads = 1;
    p.device = "auto";
    return p;
}

kiln_generate_params kiln_generate_default_params(void) {
    kiln_generate_params p;
    memset(&p, 0, sizeof p);
    p.max_tokens = 256;
    p.sampling.temperature = 0.0f;
    p.sampling.top_k = 40;
    p.sampling.top_p = 0.95f;
    p.sampling.min_p = 0.05f;
    p.sampling.repeat_penalty = 1.0f;
    p.sampling.repeat_last_n = 64;
    p.sampling.seed = 0;
    return p;
}

/* The model.gguf an offering path designates, or NULL when path is a plain source. */
static char *offering_gguf(const char *path) {
    if (kn_is_dir(path)) {
        char *m = kn_path_join(path, "model.gguf");
        if (m && kn_is_file(m)) return m;
        kn_free(m);
        return NULL;
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t nb = strlen(base);
    bool sibling = strcmp(base, "manifest.json") == 0 ||
                   (nb > 4 && strcmp(base + nb - 4, ".xml") == 0) ||
                   (nb > 4 && strcmp(base + nb - 4, ".bin") == 0);
    if (!sibling) return NULL;
    char *dir = kn_strndup(path, (size_t)(base - path));
    char *m = dir ? kn_path_join(*dir ? dir : ".", "model.gguf") : NULL;
    kn_free(dir);
    if (m && kn_is_file(m)) return m;
    kn_free(m);
    return NULL;
}

kiln_status kiln_model_open(const char *path, const kiln_model_params *params, kiln_model **out,
                            kiln_error *err) {
    kn_error_clear(err);
    *out = NULL;
    kiln_model_params dp = kiln_model_default_params();
    const kiln_model_params *p = params ? params : &dp;
    if (!path || !*path) return kn_fail(err, KILN_ERR_INVALID_ARG, "no model path given");
    kiln_model *km = kn_calloc(1, sizeof *km);
    if (!km) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    kn_model_params mp = kn_model_default_params();
    mp.window = p->window > 0 ? p->window : KN_DEFAULT_WINDOW;
    mp.chunk = p->chunk > 0 ? p->chunk : KN_DEFAULT_CHUNK;
    kiln_status s = KILN_OK;
    char *gguf = offering_gguf(path);
    char *tmpdir = NULL;
    if (!gguf && kn_is_file(path)) {
        gguf = kn_strdup(path); /* a GGUF source: its weights as they are, default contract */
    } else if (!gguf) {
        /* A Hugging Face folder or cache id: bake it (weights kept) into a private directory,
         * map it, and remove the directory; the mapping outlives the unlink. */
        char tmpl[] = "/tmp/kiln-run-XXXXXX";
        if (!mkdtemp(tmpl)) {
            kn_free(km);
            return kn_fail(err, KILN_ERR_IO, "%s: cannot create a temporary directory", path);
        }
        tmpdir = kn_strdup(tmpl);
        char *off = tmpdir ? kn_path_join(tmpdir, "offering") : NULL;
        kiln_bake_params bp = kiln_bake_default_params();
        bp.quant = KILN_QUANT_KEEP;
        bp.window = mp.window;
        bp.chunk = mp.chunk;
        s = off ? kiln_bake(path, off, &bp, err) : kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        if (!s) gguf = kn_path_join(off, "model.gguf");
        kn_free(off);
    }
    if (!s && !gguf) s = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    if (!s) s = kn_model_open(gguf, &mp, &km->m, err);
    if (!s && !tmpdir) {
        const char *slash = strrchr(gguf, '/');
        km->dir = slash ? kn_strndup(gguf, (size_t)(slash - gguf)) : kn_strdup(".");
        if (!km->dir) s = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    if (!s) {
        if (p->tokenizer && *p->tokenizer) {
            char *dir = NULL;
            if (!kn_is_dir(p->tokenizer) && !kn_is_file(p->tokenizer) &&
                strchr(p->tokenizer, '/') && p->tokenizer[0] != '/' && p->tokenizer[0] != '.')
                s = kn_hf_cache_resolve(p->tokenizer, &dir, err);
            if (!s) s = kn_tokenizer_open(dir ? dir : p->tokenizer, &km->tok, err);
            kn_free(dir);
        } else {
            s = kn_tokenizer_load_gguf(km->m->gguf, &km->tok, err);
        }
    }
    if (!s && (int)kn_tokenizer_n_vocab(km->tok) > km->m->hp.n_vocab)
        s = kn_fail(err, KILN_ERR_FORMAT, "%s: tokenizer has %u tokens, the model only %d",
                    path, kn_tokenizer_n_vocab(km->tok), km->m->hp.n_vocab);
    if (tmpdir) {
        kn_rmtree(tmpdir);
        kn_free(tmpdir);
    }
    kn_free(gguf);
    if (s) {
        kiln_model_free(km);
        return s;
    }
    km->max_token_bytes = 1;
    for (uint32_t i = 0; i < kn_tokenizer_n_vocab(km->tok); i++) {
        size_t len = 0;
        kn_tokenizer_token_text(km->tok, (int32_t)i, &len);
        if ((int)len > km->max_token_bytes) km->max_token_bytes = (int)len;
    }
    /* decoding may expand a byte token to U+FFFD (3 bytes) or a piece marker to a space */
    km->max_token_bytes = km->max_token_bytes * 3 + 8;
    *out = km;
    return KILN_OK;
}

void kiln_model_free(kiln_model *km) {
    if (!km) return;
    kn_tokenizer_free(km->tok);
    kn_model_free(km->m);
    kn_free(km->dir);
    kn_free(km);
}

const kiln_tokenizer *kiln_model_tokenizer(const kiln_model *km) {
    return (const kiln_tokenizer *)km->tok;
}
int kiln_model_window(const kiln_model *km) { return km->m->window; }
int kiln_model_chunk(const kiln_model *km) { return km->m->chunk; }
int kiln_model_n_vocab(const kiln_model *km) { return km->m->hp.n_vocab; }

static int physical_cores(void) {
    /* Hyper-threads share the SIMD units the matmuls saturate; count cores, not siblings. */
    FILE *f = fopen("/proc/cpuinfo", "r");
    int cores = 0, siblings = 0, logical = 0;
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "processor", 9) == 0) logical++;
        else if (strncmp(line, "cpu cores", 9) == 0 && !cores) cores = atoi(strchr(line, ':') + 1);
        else if (strncmp(line, "siblings", 8) == 0 && !siblings)
            siblings = atoi(strchr(line, ':') + 1);
    }
    if (f) fclose(f);
    if (cores > 0 && siblings > 0 && logical > 0) return logical * cores / siblings;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void say(const kiln_session_params *p, const char *fmt, const char *a, const char *b) {
    if (!p->log) return;
    char msg[900];
    snprintf(msg, sizeof msg, fmt, a, b);
    p->log(KILN_LOG_WARN, msg, p->log_user);
}

/* Device choice. Named devices are strict; auto walks NPU -> GPU -> CPU through OpenVINO when
 * the offering carries its IR, saying why each one was skipped. */
static kiln_status open_backend(kiln_session *ks, kiln_error *err) {
    const kiln_session_params *p = &ks->p;
    kiln_model *km = ks->model;
    const char *dev = p->device && *p->device ? p->device : "auto";
    kn_backend_params bp = {0};
    bp.threads = p->threads;
    bp.kv_f32 = p->kv == KILN_KV_F32;
    bp.stateless = p->mode == KILN_MODE_STATELESS;
    bp.offering_dir = km->dir;
    bp.ov_lib = p->openvino_lib;
    bp.log = p->log;
    bp.log_user = p->log_user;
    if (strcmp(dev, "cpu") == 0) return kn_backend_cpu_new(km->m, &bp, &ks->b, err);
    const char *ov = NULL;
    if (strcmp(dev, "npu") == 0) ov = "NPU";
    else if (strcmp(dev, "gpu") == 0) ov = "GPU";
    else if (strncmp(dev, "openvino:", 9) == 0 && dev[9]) ov = dev + 9;
    if (ov) {
        bp.ov_device = ov;
        return kn_backend_openvino_new(km->m, &bp, &ks->b, err);
    }
    if (strcmp(dev, "auto") != 0)
        return kn_fail(err, KILN_ERR_INVALID_ARG,
                       "--device: '%s' is not auto, cpu, npu, gpu or openvino:DEVICE", dev);
    /* An offering without the IR of the graphs this mode uses can only run natively: nothing
     * to try, nothing to say. */
    char *xml = km->dir ? kn_path_join(km->dir, bp.stateless ? "openvino_stateless.xml"
                                                              : "openvino_model.xml")
                        : NULL;
    bool has_ir = xml && kn_is_file(xml);
    kn_free(xml);
    if (!has_ir) return kn_backend_cpu_new(km->m, &bp, &ks->b, err);
    char *devices = NULL;
    kiln_error e;
    if (kn_openvino_devices(p->openvino_lib, &devices, &e) != KILN_OK) {
        if (p->no_fallback)
            return kn_fail(err, KILN_ERR_DEVICE, "%s (--no-fallback)", e.message);
        snprintf(ks->fallback, sizeof ks->fallback, "npu,gpu");
        say(p, "%s; falling back to %s", e.message, "the native cpu");
        return kn_backend_cpu_new(km->m, &bp, &ks->b, err);
    }
    kn_free(devices);
    static const char *order[2][2] = {{"NPU", "npu"}, {"GPU", "gpu"}};
    for (int i = 0; i < 2; i++) {
        bp.ov_device = order[i][0];
        kiln_status s = kn_backend_openvino_new(km->m, &bp, &ks->b, &e);
        if (!s) return KILN_OK;
        /* auto falls back on any failure of a device (absent, or its compiler refusing the
         * graph); out of memory is not a device problem */
        if (s == KILN_ERR_NOMEM) return kn_fail(err, s, "%s", e.message);
        if (i == 0 && p->no_fallback)
            return kn_fail(err, KILN_ERR_DEVICE, "%s (--no-fallback)", e.message);
        size_t n = strlen(ks->fallback);
        snprintf(ks->fallback + n, sizeof ks->fallback - n, "%s%s", n ? "," : "", order[i][1]);
        say(p, "%s; falling back to %s", e.message, i == 0 ? "gpu" : "the native cpu");
    }
    return kn_backend_cpu_new(km->m, &bp, &ks->b, err);
}

/* --verify: the same short prompt through the chosen backend and the native one. The
 * tolerance allows what int4 weights with 8-bit activations (native) against f32 activations
 * (OpenVINO) differ by — about 1 logit on SmolLM2 — as 10% of the logit range, and requires the
 * same top token unless the native top two are closer than that. Garbled output (wrong weights,
 * a broken compile) is off by the whole range. */
static kiln_status verify_backend(kiln_session *ks, double *max_err, double *tol,
                                  kiln_error *err) {
    const kn_model *m = ks->model->m;
    int n = m->chunk < 8 ? m->chunk : 8;
    int32_t ids[8];
    int32_t bos = kn_tokenizer_bos(ks->model->tok);
    for (int i = 0; i < n; i++) ids[i] = (int32_t)((i == 0 && bos >= 0) ? bos : (1000 + 7 * i) % m->hp.n_vocab);
    kn_backend_params bp = {0};
    bp.threads = ks->p.threads;
    bp.kv_f32 = ks->p.kv == KILN_KV_F32;
    kn_backend *cpu = NULL;
    const float *a = NULL, *b = NULL;
    kiln_status s = kn_backend_cpu_new(m, &bp, &cpu, err);
    if (!s) s = cpu->ops->prefill(cpu, ids, n, 0, &a, err);
    if (!s) s = ks->b->ops->prefill(ks->b, ids, n, 0, &b, err);
    if (!s) {
        int V = m->hp.n_vocab, top_a = 0, top_b = 0, second = -1;
        float lo = a[0], hi = a[0];
        double e = 0;
        for (int i = 0; i < V; i++) {
            if (a[i] < lo) lo = a[i];
            if (a[i] > hi) hi = a[i];
            double d = fabs((double)a[i] - b[i]);
            if (!(d <= e)) e = d; /* NaN counts as divergence */
            if (a[i] > a[top_a]) top_a = i;
            if (b[i] > b[top_b]) top_b = i;
        }
        for (int i = 0; i < V; i++)
            if (i != top_a && (second < 0 || a[i] > a[second])) second = i;
        *max_err = e;
        *tol = 0.1 * (hi - lo);
        bool near_tie = second >= 0 && a[top_a] - a[second] < *tol;
        if (!(e <= *tol) || (top_a != top_b && !near_tie))
            s = kn_fail(err, KILN_ERR_DEVICE, "%s: --verify failed: max |logit difference| %.3g "
                        "against the native cpu (tolerance %.3g), top token %d vs %d",
                        ks->b->device, e, *tol, top_b, top_a);
    }
    ks->b->ops->reset(ks->b);
    if (cpu) cpu->ops->free(cpu);
    return s;
}

kiln_status kiln_session_new(kiln_model *km, const kiln_session_params *params,
                             kiln_session **out, kiln_error *err) {
    kn_error_clear(err);
    *out = NULL;
    kiln_session_params dp = kiln_session_default_params();
    const kiln_session_params *p = params ? params : &dp;
    if (p->threads < 0 || p->threads > 1024)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "threads %d must be in [1, 1024] (0 = cores)",
                       p->threads);
    if (p->mode != KILN_MODE_KV && p->mode != KILN_MODE_STATELESS)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "unknown mode %d", (int)p->mode);
    kiln_session *ks = kn_calloc(1, sizeof *ks);
    if (!ks) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    ks->model = km;
    ks->p = *p;
    if (ks->p.threads == 0) ks->p.threads = physical_cores();
    kiln_generate_params gp = kiln_generate_default_params();
    kiln_status s = open_backend(ks, err);
    if (!s && p->verify && strcmp(ks->b->device, "cpu") != 0) {
        double e = 0, tol = 0;
        kiln_error ve;
        kiln_status vs = verify_backend(ks, &e, &tol, &ve);
        bool is_auto = !p->device || !*p->device || strcmp(p->device, "auto") == 0;
        if (vs == KILN_ERR_DEVICE && is_auto && !p->no_fallback) {
            say(p, "%s; falling back to %s", ve.message, "the native cpu");
            size_t n = strlen(ks->fallback);
            snprintf(ks->fallback + n, sizeof ks->fallback - n, "%s%s", n ? "," : "",
                     ks->b->device);
            ks->b->ops->free(ks->b);
            ks->b = NULL;
            kn_backend_params bp = {0};
            bp.threads = ks->p.threads;
            bp.kv_f32 = ks->p.kv == KILN_KV_F32;
            s = kn_backend_cpu_new(km->m, &bp, &ks->b, err);
        } else if (vs) {
            s = kn_fail(err, vs, "%s", ve.message);
        } else if (p->log) {
            char msg[256];
            snprintf(msg, sizeof msg, "%s: --verify ok (max |logit difference| %.3g against the "
                     "native cpu, tolerance %.3g)", ks->b->device, e, tol);
            p->log(KILN_LOG_INFO, msg, p->log_user);
        }
    }
    if (!s) s = kn_sampler_init(&ks->sampler, km->m->hp.n_vocab, &gp.sampling, err);
    if (!s) {
        ks->win = kn_malloc((size_t)km->m->window * sizeof *ks->win);
        ks->hist = kn_malloc((size_t)km->m->window * sizeof *ks->hist);
        if (!ks->win || !ks->hist) s = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    if (s) {
        kiln_session_free(ks);
        return s;
    }
    *out = ks;
    return KILN_OK;
}

static void clear_msgs(kiln_session *ks) {
    for (int i = 0; i < ks->n_msgs; i++) kn_free(ks->owned[i]);
    ks->n_msgs = 0;
}

void kiln_session_free(kiln_session *ks) {
    if (!ks) return;
    clear_msgs(ks);
    kn_free(ks->msgs);
    kn_free(ks->owned);
    kn_free(ks->win);
    kn_free(ks->hist);
    kn_sampler_free(&ks->sampler);
    if (ks->b) ks->b->ops->free(ks->b);
    kn_free(ks);
}

const char *kiln_session_device(const kiln_session *ks) { return ks->b->device; }

void kiln_session_reset(kiln_session *ks) {
    ks->b->ops->reset(ks->b);
    ks->n_hist = 0;
    clear_msgs(ks);
}

void kiln_result_free(kiln_result *r) {
    if (!r) return;
    kn_free(r->text);
    kn_free(r->prompt_ids);
    kn_free(r->ids);
    memset(r, 0, sizeof *r);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(double *v, int n, double q) {
    if (n <= 0) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int i = (int)ceil(q * n) - 1;
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* Longest suffix of text[0..n) that is a proper prefix of some stop string: held back from the
 * stream until it is known not to start a stop string. */
static size_t stop_holdback(const char *text, size_t n, const kiln_generate_params *p) {
    size_t hold = 0;
    for (int i = 0; i < p->n_stop; i++) {
        size_t ls = strlen(p->stop[i]);
        for (size_t k = ls ? ls - 1 : 0; k > hold; k--)
            if (k <= n && memcmp(text + n - k, p->stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return hold;
}

static bool find_stop(const char *text, size_t n, size_t from, const kiln_generate_params *p,
                      size_t *at) {
    bool found = false;
    for (int i = 0; i < p->n_stop; i++) {
        size_t ls = strlen(p->stop[i]);
        if (!ls || ls > n) continue;
        size_t start = from > ls ? from - ls : 0;
        for (size_t j = start; j + ls <= n; j++)
            if (memcmp(text + j, p->stop[i], ls) == 0) {
                if (!found || j < *at) *at = j;
                found = true;
                break;
            }
    }
    return found;
}

/* The loop. The prompt ids are in r->prompt_ids; `past` tokens before them are already in the
 * KV cache (chat), so only the new ones are prefilled. */
static kiln_status run_loop(kiln_session *ks, int past, const kiln_generate_params *p,
                            kiln_result *r, kiln_error *err) {
    const kn_model *m = ks->model->m;
    const kn_tokenizer *tok = ks->model->tok;
    const int W = m->window;
    const bool stateless = ks->p.mode == KILN_MODE_STATELESS;
    const bool slide = ks->p.overflow == KILN_OVERFLOW_SLIDE;
    const int n = r->n_prompt;
    int max_tokens = p->max_tokens;
    if (max_tokens < 1 || max_tokens > (1 << 24))
        return kn_fail(err, KILN_ERR_INVALID_ARG, "max tokens %d must be in [1, 16777216]",
                       max_tokens);
    if (n < 1) return kn_fail(err, KILN_ERR_INVALID_ARG, "the prompt is empty");
    if (n >= W && !slide)
        return kn_fail(err, KILN_ERR_INVALID_ARG,
                       "the prompt is %d tokens and the window holds %d: bake with a larger "
                       "--window, shorten the prompt, or use --overflow slide",
                       n, W);
    for (int i = 0; i < n; i++)
        if (r->prompt_ids[i] < 0 || r->prompt_ids[i] >= m->hp.n_vocab)
            return kn_fail(err, KILN_ERR_INVALID_ARG, "prompt token %d is outside the vocabulary",
                           r->prompt_ids[i]);

    /* Everything the loop writes, sized up front. */
    size_t text_cap = (size_t)max_tokens * (size_t)ks->model->max_token_bytes + 1;
    r->ids = kn_malloc((size_t)max_tokens * sizeof *r->ids);
    r->text = kn_malloc(text_cap);
    double *lat = kn_malloc((size_t)max_tokens * sizeof *lat);
    kn_buf piece = {0};
    kn_buf_append(&piece, "", 0);
    if (piece.data) {
        char *d = kn_realloc(piece.data, (size_t)ks->model->max_token_bytes * 2 + 64);
        if (d) {
            piece.data = d;
            piece.cap = (size_t)ks->model->max_token_bytes * 2 + 64;
        } else {
            piece.oom = true;
        }
    }
    if (!r->ids || !r->text || !lat || !piece.data || piece.oom) {
        kn_free(lat);
        kn_buf_free(&piece);
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    r->text[0] = 0;
    kn_sampler_reset(&ks->sampler, &p->sampling);
    for (int i = 0; i < n; i++) kn_sampler_accept(&ks->sampler, r->prompt_ids[i]);
    kn_detok_stream ds;
    kn_detok_stream_init(&ds, tok, 0);
    if (!kn_detok_stream_reserve(&ds)) {
        kn_free(lat);
        kn_buf_free(&piece);
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    }

    kiln_metrics *mt = &r->metrics;
    mt->prompt_tokens = n;
    mt->device = ks->b->device;
    mt->fallback = ks->fallback;
    mt->mode = stateless ? "stateless" : "kv";
    mt->threads = ks->p.threads;
    mt->finish_reason = "length";

    kiln_status s = KILN_OK;
    const float *logits = NULL;
    int n_win = 0, pos = past + n;
    double t0 = kn_now_seconds();
    if (stateless) {
        int from = n > W ? n - W : 0; /* slide: keep the most recent W */
        n_win = n - from;
        memcpy(ks->win, r->prompt_ids + from, (size_t)n_win * sizeof *ks->win);
        s = ks->b->ops->stateless(ks->b, ks->win, n_win, &logits, err);
    } else {
        s = ks->b->ops->prefill(ks->b, r->prompt_ids, n, past, &logits, err);
    }
    double t_prefill = kn_now_seconds();
    double t_prev = t_prefill;
    size_t text_len = 0, emitted = 0;
    bool done = false;
    int n_gen = 0;
    while (!s && !done) {
        if (p->cancel && *p->cancel) {
            mt->finish_reason = "cancelled";
            break;
        }
        int32_t id = kn_sampler_sample(&ks->sampler, logits);
        kn_sampler_accept(&ks->sampler, id);
        double t = kn_now_seconds();
        lat[n_gen] = (t - t_prev) * 1e3;
        t_prev = t;
        if (n_gen == 0) mt->ttft_ms = (t - t0) * 1e3;
        r->ids[n_gen++] = id;
        if (kn_tokenizer_is_eog(tok, id)) {
            mt->finish_reason = "stop";
            break;
        }
        piece.len = 0;
        if ((s = kn_detok_stream_push(&ds, id, &piece, err))) break;
        if (text_len + piece.len + 1 > text_cap) piece.len = text_cap - text_len - 1;
        memcpy(r->text + text_len, piece.data, piece.len);
        text_len += piece.len;
        r->text[text_len] = 0;
        size_t at = 0;
        size_t upto = text_len - stop_holdback(r->text, text_len, p);
        if (p->n_stop && find_stop(r->text, text_len, emitted, p, &at)) {
            upto = at;
            done = true;
            mt->finish_reason = "stop";
        }
        if (upto > emitted && p->on_text &&
            p->on_text(r->text + emitted, upto - emitted, p->user)) {
            mt->finish_reason = "cancelled";
            done = true;
        }
        if (upto > emitted) emitted = upto;
        if (done) {
            text_len = emitted;
            r->text[text_len] = 0;
            break;
        }
        if (n_gen >= max_tokens) break;
        if (stateless) {
            if (n_win == W) {
                if (!slide) break;
                /* keep the S sink tokens, drop the oldest after them */
                int S = m->sink;
                memmove(ks->win + S, ks->win + S + 1, (size_t)(W - S - 1) * sizeof *ks->win);
                n_win--;
            }
            ks->win[n_win++] = id;
            s = ks->b->ops->stateless(ks->b, ks->win, n_win, &logits, err);
        } else {
            if (pos >= W && !slide) break; /* every slot is taken */
            s = ks->b->ops->decode(ks->b, id, pos, &logits, err);
            if (!s && pos < W) ks->hist[pos] = id;
            pos++;
        }
    }
    if (!s && !done && strcmp(mt->finish_reason, "length") == 0) {
        /* the stream may hold back bytes of an unfinished character or a stop-string prefix */
        piece.len = 0;
        kn_detok_stream_flush(&ds, &piece);
        if (text_len + piece.len + 1 <= text_cap) {
            memcpy(r->text + text_len, piece.data, piece.len);
            text_len += piece.len;
            r->text[text_len] = 0;
        }
        if (text_len > emitted && p->on_text)
            p->on_text(r->text + emitted, text_len - emitted, p->user);
    } else if (!s && !done && text_len > emitted && p->on_text) {
        p->on_text(r->text + emitted, text_len - emitted, p->user);
    }
    double t_end = kn_now_seconds();
    r->n_ids = n_gen;
    mt->generated_tokens = n_gen;
    double prefill_s = t_prefill - t0;
    mt->prefill_tps = prefill_s > 0 ? n / prefill_s : 0;
    double dec_s = 0;
    for (int i = 1; i < n_gen; i++) dec_s += lat[i] / 1e3;
    mt->decode_tps = n_gen > 1 && dec_s > 0 ? (n_gen - 1) / dec_s : 0;
    mt->p50_ms = percentile(lat + 1, n_gen - 1, 0.50);
    mt->p95_ms = percentile(lat + 1, n_gen - 1, 0.95);
    mt->total_ms = (t_end - t0) * 1e3;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) mt->peak_rss_mb = (double)ru.ru_maxrss / 1024.0;
    ks->n_hist = pos < W ? pos : W;
    kn_free(lat);
    kn_buf_free(&piece);
    kn_detok_stream_free(&ds);
    return s;
}

static kiln_status copy_prompt(kiln_result *r, const int32_t *ids, int n, kiln_error *err) {
    r->prompt_ids = kn_malloc((size_t)(n > 0 ? n : 1) * sizeof *r->prompt_ids);
    if (!r->prompt_ids) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    if (n > 0) memcpy(r->prompt_ids, ids, (size_t)n * sizeof *ids);
    r->n_prompt = n;
    return KILN_OK;
}

kiln_status kiln_generate_ids(kiln_session *ks, const int32_t *prompt, int n,
                              const kiln_generate_params *params, kiln_result *out,
                              kiln_error *err) {
    kn_error_clear(err);
    memset(out, 0, sizeof *out);
    kiln_generate_params dp = kiln_generate_default_params();
    const kiln_generate_params *p = params ? params : &dp;
    kiln_session_reset(ks);
    kiln_status s = copy_prompt(out, prompt, n, err);
    if (!s) s = run_loop(ks, 0, p, out, err);
    if (s) kiln_result_free(out);
    return s;
}

static kiln_status add_msg(kiln_session *ks, const char *role, const char *text,
                           kiln_error *err) {
    if (ks->n_msgs == ks->cap_msgs) {
        int cap = ks->cap_msgs ? ks->cap_msgs * 2 : 8;
        kn_chat_msg *m = kn_realloc(ks->msgs, (size_t)cap * sizeof *m);
        if (!m) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        ks->msgs = m;
        char **o = kn_realloc(ks->owned, (size_t)cap * sizeof *o);
        if (!o) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        ks->owned = o;
        ks->cap_msgs = cap;
    }
    char *copy = kn_strdup(text);
    if (!copy) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    ks->owned[ks->n_msgs] = copy;
    ks->msgs[ks->n_msgs].role = role;
    ks->msgs[ks->n_msgs].content = copy;
    ks->n_msgs++;
    return KILN_OK;
}

/* Renders the conversation and tokenizes it. Chat templates carry their own BOS text where the
 * model wants one, so none is added (as Hugging Face's apply_chat_template does). */
static kiln_status render_ids(kiln_session *ks, const kiln_generate_params *p, kn_tokens *ids,
                              kiln_error *err) {
    char *text = NULL;
    kiln_status s = kn_chat_render(ks->model->tok, p->chat_template, ks->msgs,
                                   (size_t)ks->n_msgs, true, &text, err);
    if (!s) s = kn_tokenize(ks->model->tok, text, strlen(text), KN_TOK_PARSE_SPECIAL, ids, err);
    kn_free(text);
    return s;
}

kiln_status kiln_generate(kiln_session *ks, const char *prompt,
                          const kiln_generate_params *params, kiln_result *out, kiln_error *err) {
    kn_error_clear(err);
    memset(out, 0, sizeof *out);
    kiln_generate_params dp = kiln_generate_default_params();
    const kiln_generate_params *p = params ? params : &dp;
    if (!prompt || !*prompt) return kn_fail(err, KILN_ERR_INVALID_ARG, "the prompt is empty");
    kiln_session_reset(ks);
    kn_tokens ids = {0};
    kiln_status s;
    if (p->raw) {
        s = kn_tokenize(ks->model->tok, prompt, strlen(prompt),
                        KN_TOK_ADD_BOS | KN_TOK_PARSE_SPECIAL, &ids, err);
    } else {
        s = KILN_OK;
        if (p->system && *p->system) s = add_msg(ks, "system", p->system, err);
        if (!s) s = add_msg(ks, "user", prompt, err);
        if (!s) s = render_ids(ks, p, &ids, err);
        clear_msgs(ks);
    }
    if (!s) s = copy_prompt(out, ids.ids, (int)ids.n, err);
    kn_tokens_free(&ids);
    if (!s) s = run_loop(ks, 0, p, out, err);
    if (s) kiln_result_free(out);
    return s;
}

kiln_status kiln_chat_turn(kiln_session *ks, const char *user_text,
                           const kiln_generate_params *params, kiln_result *out,
                           kiln_error *err) {
    kn_error_clear(err);
    memset(out, 0, sizeof *out);
    kiln_generate_params dp = kiln_generate_default_params();
    const kiln_generate_params *p = params ? params : &dp;
    if (!user_text || !*user_text) return kn_fail(err, KILN_ERR_INVALID_ARG, "empty message");
    kiln_status s = KILN_OK;
    if (ks->n_msgs == 0 && p->system && *p->system) s = add_msg(ks, "system", p->system, err);
    if (!s) s = add_msg(ks, "user", user_text, err);
    kn_tokens ids = {0};
    if (!s) s = render_ids(ks, p, &ids, err);
    if (s) {
        kn_tokens_free(&ids);
        return s;
    }
    /* Only what differs from the cached history is prefilled: the new turn, plus any tail the
     * template re-tokenized differently from the generated ids. */
    int common = 0;
    bool kv = ks->p.mode == KILN_MODE_KV;
    if (kv)
        while (common < ks->n_hist && common < (int)ids.n - 1 &&
               ks->hist[common] == ids.ids[common])
            common++;
    if ((int)ids.n >= ks->model->m->window && ks->p.overflow == KILN_OVERFLOW_STOP) {
        kn_tokens_free(&ids);
        ks->n_msgs--;
        kn_free(ks->owned[ks->n_msgs]);
        return kn_fail(err, KILN_ERR_INVALID_ARG,
                       "the conversation is %zu tokens and the window holds %d: /reset to start "
                       "over", ids.n, ks->model->m->window);
    }
    if (kv)
        for (int i = common; i < (int)ids.n && i < ks->model->m->window; i++) ks->hist[i] = ids.ids[i];
    s = copy_prompt(out, ids.ids + common, (int)ids.n - common, err);
    kn_tokens_free(&ids);
    if (!kv) ks->b->ops->reset(ks->b);
    if (!s) s = run_loop(ks, kv ? common : 0, p, out, err);
    if (!s) s = add_msg(ks, "assistant", out->text, err);
    if (s) kiln_result_free(out);
    return s;
}

static void fill_random(int32_t *ids, int n, int vocab) {
    uint64_t x = 0x2545F4914F6CDD1Dull;
    for (int i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ids[i] = (int32_t)(x % (uint64_t)vocab);
    }
}

kiln_status kiln_bench_prefill(kiln_session *ks, int n, double *seconds, kiln_error *err) {
    const kn_model *m = ks->model->m;
    if (n < 1 || n > m->window)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "-p %d must be in [1, window %d]", n, m->window);
    int32_t *ids = kn_malloc((size_t)n * sizeof *ids);
    if (!ids) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    fill_random(ids, n, m->hp.n_vocab);
    kiln_session_reset(ks);
    const float *logits;
    double t0 = kn_now_seconds();
    kiln_status s = ks->p.mode == KILN_MODE_STATELESS
                        ? ks->b->ops->stateless(ks->b, ids, n, &logits, err)
                        : ks->b->ops->prefill(ks->b, ids, n, 0, &logits, err);
    *seconds = kn_now_seconds() - t0;
    kn_free(ids);
    return s;
}

kiln_status kiln_bench_decode(kiln_session *ks, int n, double *seconds, kiln_error *err) {
    const kn_model *m = ks->model->m;
    if (n < 1 || n >= m->window)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "-n %d must be in [1, window %d)", n,
                       m->window);
    int32_t *ids = kn_malloc((size_t)(n + 1) * sizeof *ids);
    if (!ids) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    fill_random(ids, n + 1, m->hp.n_vocab);
    kiln_session_reset(ks);
    const float *logits;
    kiln_status s = KILN_OK;
    double t0 = kn_now_seconds();
    for (int i = 0; i < n && !s; i++) {
        if (ks->p.mode == KILN_MODE_STATELESS)
            s = ks->b->ops->stateless(ks->b, ids, i + 1, &logits, err);
        else
            s = ks->b->ops->decode(ks->b, ids[i], i, &logits, err);
    }
    *seconds = kn_now_seconds() - t0;
    kn_free(ids);
    return s;
}
