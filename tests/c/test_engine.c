/* test_engine.c — the forward pass against independent references: stories260K's greedy ids and
 * logits from llama2.c's run.c (../shared/models/stories260K), in kv mode with several chunk
 * sizes and in stateless mode; kv, stateless, chunk sizes and thread counts agreeing bit for bit
 * on stories260K and SmolLM2 Q4_1; no allocation per token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "kt.h"
#include "backends/cpu/engine.h"
#include "backends/driver.h"

#define STORIES "models/stories260K/stories260K.gguf"
#define SMOLLM2 ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
/* Relative logit tolerance against run.c (fp32 both sides; only summation order and libm
 * differ): |ours - ref| <= TOL_LOGIT_REL * max(|ref|, 1). */
#define TOL_LOGIT_REL 1e-4
/* The same with the default F16 KV cache (llama.cpp's default too): every key and value is
 * rounded to a half (relative error up to 2^-11) before attention reads it, and stories260K's
 * 5 layers amplify that to at most 6.4e-3 * max(|ref|, 1) over these 4 positions (measured,
 * the same on every kernel table); bounded here with a margin of 2.3. */
#define TOL_LOGIT_F16 1.5e-2

/* Sanitizer builds are unoptimized and ~30x slower in the kernels; there the SmolLM2 stateless
 * run (a whole window per step) checks fewer steps so the suite stays within CI's time. */
#if defined(__SANITIZE_ADDRESS__)
#define KT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KT_SANITIZED 1
#endif
#endif
#ifndef KT_SANITIZED
#define KT_SANITIZED 0
#endif

/* The kernel table the helpers below run. The end-to-end tests loop over every table this CPU
 * can run (FOR_EACH_TABLE), so an AVX-512 machine tests the AVX2 path and the reference too. */
static const kn_kernels *g_table;
/* The KV cache type the helpers' sessions use (the default, f16, unless a test says). */
static kn_kv_kind g_kv = KN_KV_F16;

static kn_session_params sess_params(void) {
    kn_session_params p = kn_session_default_params();
    p.kernels = g_table;
    p.kv = g_kv;
    return p;
}

static const char *table_name(void) { return g_table ? g_table->name : "default"; }

/* Runs the statement once per usable table (stopping at the first failure) and says which ran. */
#define FOR_EACH_TABLE(stmt)                                                                \
    do {                                                                                    \
        const kn_kernels *kt_tabs[KN_KERNEL_TABLES];                                        \
        int kt_n = kn_kernels_usable(kt_tabs);                                              \
        for (int kt_i = 0; kt_i < kt_n && !kt_failed(); kt_i++) {                           \
            g_table = kt_tabs[kt_i];                                                        \
            stmt;                                                                           \
        }                                                                                   \
        g_table = NULL;                                                                     \
        if (!kt_failed()) {                                                                 \
            fprintf(stderr, "    kernel tables:");                                          \
            for (int kt_i = 0; kt_i < kt_n; kt_i++) fprintf(stderr, " %s", kt_tabs[kt_i]->name); \
            fprintf(stderr, "\n");                                                          \
        }                                                                                   \
    } while (0)

typedef struct golden {
    int prompt[64];
    int n_prompt;
    int next[512];            /* next[pos] = run.c's next token after the input at pos */
    int n_steps;
} golden;

static bool read_golden(const char *rel, golden *g) {
    FILE *f = fopen(kt_shared(rel), "r");
    if (!f) return false;
    memset(g, 0, sizeof *g);
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "PROMPT", 6) == 0) {
            char *p = line + 6, *e;
            for (long v; (v = strtol(p, &e, 10)), e != p && g->n_prompt < 64; p = e)
                g->prompt[g->n_prompt++] = (int)v;
        } else if (strncmp(line, "ID", 2) == 0) {
            int pos, in, nx;
            if (sscanf(line + 2, "%d %d %d", &pos, &in, &nx) == 3 && pos >= 0 && pos < 512) {
                g->next[pos] = nx;
                if (pos + 1 > g->n_steps) g->n_steps = pos + 1;
            }
        }
    }
    fclose(f);
    return g->n_prompt > 0 && g->n_steps > 0;
}

static kn_model *open_model(const char *path, int window, int chunk) {
    kn_model_params mp = kn_model_default_params();
    mp.window = window;
    mp.chunk = chunk;
    kn_model *m = NULL;
    kiln_error err;
    if (kn_model_open(path, &mp, &m, &err) != KILN_OK) {
        fprintf(stderr, "    %s: %s\n", path, err.message);
        return NULL;
    }
    return m;
}

/* An engine session driven the way every device is: through the static-graph driver, which
 * chunks, keeps the slot table and checks ids (backends/driver.h); the engine is reached
 * through a backend of one function. One driver per mode over the same session. */
typedef struct eng {
    kn_backend base;
    kn_session *s;
    kn_contract c;
    kn_driver kv, sl;         /* sl only when the session has stateless buffers */
} eng;

static kiln_status eng_run(kn_backend *b, const kn_graph_call *c, const float **lg,
                           kiln_error *e) {
    return kn_session_run(((eng *)b)->s, c, lg, e);
}
static void eng_reset(kn_backend *b) { kn_session_reset(((eng *)b)->s); }
static void eng_nofree(kn_backend *b) { (void)b; }
static const kn_backend_ops k_eng_ops = {eng_run, eng_reset, eng_nofree, NULL};

static void eng_free(eng *e) {
    if (!e) return;
    kn_driver_free(&e->kv);
    kn_driver_free(&e->sl);
    kn_session_free(e->s);
    free(e);
}

/* NULL (the reason on stderr) when the session cannot be made. */
static eng *eng_new(const kn_model *m, const kn_session_params *sp, bool slide) {
    eng *e = calloc(1, sizeof *e);
    kiln_error err;
    if (!e) return NULL;
    e->base.ops = &k_eng_ops;
    kn_session_params def = sess_params();
    if (!sp) sp = &def;
    bool ok = kn_session_new(m, sp, &e->s, &err) == KILN_OK &&
              kn_contract_build(&m->hp, m->window, m->chunk, m->sink, &e->c, &err) == KILN_OK &&
              kn_driver_init(&e->kv, &e->base, &e->c, m->hp.n_vocab, false, slide, &err) ==
                  KILN_OK &&
              (!sp->stateless || kn_driver_init(&e->sl, &e->base, &e->c, m->hp.n_vocab, true,
                                                slide, &err) == KILN_OK);
    if (!ok) {
        fprintf(stderr, "    %s\n", err.message);
        eng_free(e);
        return NULL;
    }
    return e;
}

/* Greedy generation, kv mode: the prompt in chunks, then decode steps. out[pos] is the argmax
 * after the input at pos, for pos >= n_prompt - 1. Returns false on an engine error. */
static bool run_kv(eng *e, const int *prompt, int n_prompt, int n_steps, int *out) {
    kiln_error err;
    int32_t ids[64];
    for (int i = 0; i < n_prompt; i++) ids[i] = prompt[i];
    const float *logits;
    kn_driver_reset(&e->kv);
    if (kn_driver_feed(&e->kv, ids, n_prompt, 0, &logits, &err)) return false;
    int V = kn_session_model(e->s)->hp.n_vocab;
    int tok = kn_argmax(logits, V);
    out[n_prompt - 1] = tok;
    for (int pos = n_prompt; pos < n_steps; pos++) {
        if (kn_driver_step(&e->kv, tok, pos, &logits, &err)) return false;
        tok = kn_argmax(logits, V);
        out[pos] = tok;
    }
    return true;
}

/* The same, stateless: every step one padded [W] window. */
static bool run_stateless(eng *e, const int *prompt, int n_prompt, int n_steps, int *out) {
    const kn_model *m = kn_session_model(e->s);
    kiln_error err;
    int32_t ids[64];
    for (int i = 0; i < n_prompt; i++) ids[i] = prompt[i];
    const float *logits;
    kn_driver_reset(&e->sl);
    if (kn_driver_feed(&e->sl, ids, n_prompt, 0, &logits, &err)) return false;
    for (int pos = n_prompt - 1; pos < n_steps; pos++) {
        out[pos] = kn_argmax(logits, m->hp.n_vocab);
        if (pos + 1 < n_steps && pos + 1 < m->window &&
            kn_driver_step(&e->sl, out[pos], pos + 1, &logits, &err))
            return false;
    }
    return true;
}

static void check_golden(const char *rel) {
    golden g;
    CHECKF(read_golden(rel, &g), "cannot read %s", kt_shared(rel));
    const int chunks[] = {1, 3, 128};
    int out[512];
    for (int ci = 0; ci < 3; ci++) {
        kn_model *m = open_model(kt_shared(STORIES), 256, chunks[ci]);
        CHECK(m != NULL);
        CHECK_EQ_INT(m->chunk, chunks[ci]);
        for (int th = 1; th <= (ci == 2 ? 2 : 1); th++) {
            kn_session_params sp = sess_params();
            sp.threads = th;
            sp.stateless = ci == 0;
            eng *e = eng_new(m, &sp, false);
            CHECK(e != NULL);
            memset(out, -1, sizeof out);
            bool kv_ok = run_kv(e, g.prompt, g.n_prompt, g.n_steps, out);
            if (!kv_ok) eng_free(e);
            CHECK(kv_ok);
            for (int pos = g.n_prompt - 1; pos < g.n_steps; pos++)
                CHECKF(out[pos] == g.next[pos], "%s [%s] kv C=%d threads=%d pos %d: %d, run.c %d",
                       rel, table_name(), chunks[ci], th, pos, out[pos], g.next[pos]);
            if (sp.stateless) {
                /* a stateless step recomputes the whole window: O(N^2), so a sanitizer build
                 * (unoptimized, ~30x slower) checks the first 64 positions */
                int sl_steps = KT_SANITIZED && g.n_steps > 64 ? 64 : g.n_steps;
                memset(out, -1, sizeof out);
                bool ok = run_stateless(e, g.prompt, g.n_prompt, sl_steps, out);
                if (!ok) eng_free(e);
                CHECK(ok);
                for (int pos = g.n_prompt - 1; pos < sl_steps; pos++)
                    CHECKF(out[pos] == g.next[pos], "%s [%s] stateless pos %d: %d, run.c %d", rel,
                           table_name(), pos, out[pos], g.next[pos]);
            }
            eng_free(e);
        }
        kn_model_free(m);
    }
}

TEST(engine_stories_greedy_once_upon) {
    FOR_EACH_TABLE(check_golden("models/stories260K/greedy_once_upon_64.ids"));
}

TEST(engine_stories_greedy_bos_256) {
    FOR_EACH_TABLE(check_golden("models/stories260K/greedy_bos_256.ids"));
}

TEST(engine_stories_logits_pos0_3) {
    FILE *f = fopen(kt_shared("models/stories260K/logits_once_upon_pos0-3.txt"), "r");
    CHECKF(f != NULL, "cannot read the logits fixture");
    static float ref[4][512];
    int n = 0, pos, id;
    float v;
    while (fscanf(f, " L %d %d %f", &pos, &id, &v) == 3)
        if (pos >= 0 && pos < 4 && id >= 0 && id < 512) {
            ref[pos][id] = v;
            n++;
        }
    fclose(f);
    CHECK_EQ_INT(n, 4 * 512);
    const int32_t prompt[4] = {1, 403, 407, 261};
    for (int mode = 0; mode < 4; mode++) {
        /* mode % 2 == 0: one decode step per position; 1: one 4-token prefill per prefix.
         * mode < 2: F32 cache, within TOL_LOGIT_REL; else the default F16 cache, within
         * TOL_LOGIT_F16. */
        bool f16 = mode >= 2;
        double tol = f16 ? TOL_LOGIT_F16 : TOL_LOGIT_REL;
        kn_model *m = open_model(kt_shared(STORIES), 64, 4);
        CHECK(m != NULL);
        kn_session_params sp = sess_params();
        sp.kv = f16 ? KN_KV_F16 : KN_KV_F32;
        eng *e = eng_new(m, &sp, false);
        CHECK(e != NULL);
        kiln_error err;
        double worst = 0;
        for (int p = 0; p < 4; p++) {
            const float *lg;
            if (mode % 2 == 0) {
                CHECK(kn_driver_step(&e->kv, prompt[p], p, &lg, &err) == KILN_OK);
            } else {
                kn_driver_reset(&e->kv);
                CHECK(kn_driver_feed(&e->kv, prompt, p + 1, 0, &lg, &err) == KILN_OK);
            }
            for (int i = 0; i < 512; i++) {
                double d = fabs((double)lg[i] - ref[p][i]);
                double lim = tol * (fabs(ref[p][i]) > 1 ? fabs(ref[p][i]) : 1);
                if (d / lim > worst) worst = d / lim;
                CHECKF(d <= lim, "mode %d pos %d logit %d: %.7g vs run.c %.7g", mode, p, i, lg[i],
                       ref[p][i]);
            }
        }
        eng_free(e);
        kn_model_free(m);
        if (getenv("KILN_TEST_VERBOSE"))
            fprintf(stderr, "    %s cache: worst |err|/tolerance %.3g\n", f16 ? "f16" : "f32",
                    worst);
    }
}

TEST(engine_no_allocation_per_token) {
    kn_model *m = open_model(kt_shared(STORIES), 128, 8);
    CHECK(m != NULL);
    kn_session_params sp = sess_params();
    sp.threads = 2;
    eng *e = eng_new(m, &sp, false);
    CHECK(e != NULL);
    kiln_error err;
    int32_t prompt[5] = {1, 403, 407, 261, 378};
    uint64_t before = kn_alloc_count();
    const float *lg;
    CHECK(kn_driver_feed(&e->kv, prompt, 5, 0, &lg, &err) == KILN_OK);
    CHECK(kn_driver_feed(&e->sl, prompt, 5, 0, &lg, &err) == KILN_OK);
    int tok = kn_argmax(lg, m->hp.n_vocab);
    for (int pos = 5; pos < 5 + 64; pos++) {
        CHECK(kn_driver_step(&e->kv, tok, pos, &lg, &err) == KILN_OK);
        CHECK(kn_driver_step(&e->sl, tok, pos, &lg, &err) == KILN_OK);
        tok = kn_argmax(lg, m->hp.n_vocab);
    }
    CHECK_EQ_INT(kn_alloc_count() - before, 0);
    eng_free(e);
    kn_model_free(m);
}

/* The driver checks what a caller feeds, once for every device. */
TEST(engine_bad_step_arguments) {
    kn_model *m = open_model(kt_shared(STORIES), 16, 4);
    CHECK(m != NULL);
    kn_session_params sp = sess_params();
    sp.stateless = false;
    eng *e = eng_new(m, &sp, false);
    CHECK(e != NULL);
    kiln_error err;
    const float *lg;
    int32_t ids[4] = {1, 2, 3, 4};
    CHECK_EQ_INT(kn_driver_feed(&e->kv, ids, 0, 0, &lg, &err), KILN_ERR_INVALID_ARG);
    CHECK_EQ_INT(kn_driver_step(&e->kv, 512, 0, &lg, &err), KILN_ERR_INVALID_ARG);
    CHECK_EQ_INT(kn_driver_step(&e->kv, -1, 0, &lg, &err), KILN_ERR_INVALID_ARG);
    CHECK_EQ_INT(kn_driver_step(&e->kv, 1, -3, &lg, &err), KILN_ERR_INVALID_ARG);
    /* --overflow stop: nothing past the window */
    CHECK_EQ_INT(kn_driver_feed(&e->kv, ids, 4, 13, &lg, &err), KILN_ERR_INVALID_ARG);
    CHECK(!kn_driver_fits(&e->kv, 16) && kn_driver_fits(&e->kv, 15));
    /* a session without stateless buffers refuses the stateless graph */
    kn_graph_call call = {KN_GRAPH_STATELESS, 1, ids, ids, NULL, NULL, 0};
    CHECK_EQ_INT(kn_session_run(e->s, &call, &lg, &err), KILN_ERR_INVALID_ARG);
    sp.threads = 0;
    kn_session *s2;
    CHECK_EQ_INT(kn_session_new(m, &sp, &s2, &err), KILN_ERR_INVALID_ARG);
    eng_free(e);
    kn_model_free(m);
    kn_model_params mp = kn_model_default_params();
    mp.window = 4;
    mp.chunk = 8;
    kn_model *bad;
    CHECK_EQ_INT(kn_model_open(kt_shared(STORIES), &mp, &bad, &err), KILN_ERR_INVALID_ARG);
    CHECK_EQ_INT(kn_model_open("/nonexistent/model.gguf", NULL, &bad, &err), KILN_ERR_IO);
}

TEST(engine_window_slide_and_sliding_mask) {
    /* Slot mapping: positions below W map to themselves; past W the sinks stay and the rest
     * rolls. */
    kn_model *m = open_model(kt_shared(STORIES), 16, 4);
    CHECK(m != NULL);
    CHECK_EQ_INT(m->sink, KN_DEFAULT_SINK);
    CHECK_EQ_INT(kn_contract_slot(16, m->sink, 15), 15);
    CHECK_EQ_INT(kn_contract_slot(16, m->sink, 16), 4);
    CHECK_EQ_INT(kn_contract_slot(16, m->sink, 27), 15);
    CHECK_EQ_INT(kn_contract_slot(16, m->sink, 28), 4);
    /* Generation runs on past the window without error (--overflow slide). */
    eng *e = eng_new(m, NULL, true);
    CHECK(e != NULL);
    kiln_error err;
    const float *lg;
    int tok = 1;
    for (int pos = 0; pos < 40; pos++) {
        CHECK(kn_driver_step(&e->kv, tok, pos, &lg, &err) == KILN_OK);
        tok = kn_argmax(lg, m->hp.n_vocab);
        CHECK(lg[tok] == lg[tok]);
    }
    eng_free(e);
    kn_model_free(m);

    /* A Mistral-style sliding window as long as the sequence changes nothing; a short one
     * changes the logits, identically in kv and stateless mode. */
    kn_gguf *g;
    CHECK(kn_gguf_open(kt_shared(STORIES), &g, &err) == KILN_OK);
    kn_hparams hp;
    CHECK(kn_hparams_from_gguf(g, &hp, &err) == KILN_OK);
    int32_t ids[12] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315};
    float res[3][512], res_sl[3][512];
    const int windows[3] = {0, 12, 3};
    for (int wi = 0; wi < 3; wi++) {
        hp.sliding_window = windows[wi];
        kn_model_params mp = kn_model_default_params();
        mp.window = 16;
        mp.chunk = 5;
        CHECK(kn_model_load(g, &hp, &mp, &m, &err) == KILN_OK);
        e = eng_new(m, NULL, false);
        CHECK(e != NULL);
        CHECK(kn_driver_feed(&e->kv, ids, 12, 0, &lg, &err) == KILN_OK);
        memcpy(res[wi], lg, sizeof res[wi]);
        CHECK(kn_driver_feed(&e->sl, ids, 12, 0, &lg, &err) == KILN_OK);
        memcpy(res_sl[wi], lg, sizeof res_sl[wi]);
        eng_free(e);
        kn_model_free(m);
        CHECK(memcmp(res[wi], res_sl[wi], sizeof res[wi]) == 0);
    }
    kn_gguf_close(g);
    CHECK(memcmp(res[0], res[1], sizeof res[0]) == 0);
    CHECK(memcmp(res[0], res[2], sizeof res[0]) != 0);
}

static const char *smollm2_path(void) {
    const char *path = getenv("KILN_SMOLLM2");
    return path && *path ? path : SMOLLM2;
}

/* "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n" */
static const int k_smol_prompt[] = {1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1,
                                    520, 9531, 198};
static const int k_stories_prompt[] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315};

/* The logits of a prompt's last token, fed in chunks of C (or as one stateless window). */
static bool prompt_logits(const char *path, int window, int chunk, int threads, bool stateless,
                          const int *prompt, int n, float *out) {
    kn_model *m = open_model(path, window, chunk);
    if (!m) return false;
    kn_session_params sp = sess_params();
    sp.threads = threads;
    eng *e = eng_new(m, &sp, false);
    kiln_error err;
    bool ok = e != NULL;
    int32_t ids[544] = {0};
    if (n > 544) ok = false;
    for (int i = 0; ok && i < n; i++) ids[i] = prompt[i];
    const float *lg = NULL;
    if (ok) ok = kn_driver_feed(stateless ? &e->sl : &e->kv, ids, n, 0, &lg, &err) == KILN_OK;
    if (ok) memcpy(out, lg, sizeof(float) * (size_t)m->hp.n_vocab);
    eng_free(e);
    kn_model_free(m);
    return ok;
}

/* Batch invariance, bit for bit: the last prompt token's logits are the same whether the
 * prompt goes through in one chunk of 128, token by token (C = 1) or as a stateless window, on
 * one thread or two; greedy generation of 32 tokens then agrees across kv / stateless and
 * threads 1 / 2. The kernels compute each output from its own token only, in a fixed order,
 * so nothing here may differ in any bit. */
static void check_modes_agree(const char *path, const int *prompt, int n_prompt,
                              bool stateless_two_threads, int stateless_steps) {
    FILE *f = fopen(path, "rb");
    CHECKF(f != NULL, "%s is missing: run scripts/fetch_models.sh", path);
    fclose(f);
    kn_model *m = open_model(path, 128, 128);
    CHECK(m != NULL);
    int V = m->hp.n_vocab;
    kn_model_free(m);
    float *a = malloc(sizeof(float) * (size_t)V), *b = malloc(sizeof(float) * (size_t)V);
    CHECK(prompt_logits(path, 128, 128, 1, false, prompt, n_prompt, a));
    const struct {
        int chunk, threads;
        bool stateless;
        const char *what;
    } others[] = {{1, 1, false, "C=1"},
                  {128, 2, false, "C=128, 2 threads"},
                  {128, 1, true, "stateless"},
                  {1, 2, true, "stateless, 2 threads"}};
    for (int i = 0; i < 4; i++) {
        bool ok = prompt_logits(path, 128, others[i].chunk, others[i].threads,
                                others[i].stateless, prompt, n_prompt, b);
        int first = -1;
        float va = 0, vb = 0;
        for (int j = 0; ok && j < V && first < 0; j++)
            if (memcmp(&a[j], &b[j], sizeof(float)) != 0) {
                first = j;
                va = a[j];
                vb = b[j];
            }
        if (!ok || first >= 0) {
            free(a);
            free(b);
        }
        CHECKF(ok, "%s [%s]: %s failed", path, table_name(), others[i].what);
        CHECKF(first < 0, "%s [%s]: logit %d of C=128 and %s differ: %.9g vs %.9g", path,
               table_name(), first, others[i].what, va, vb);
    }
    free(a);
    free(b);

    m = open_model(path, 128, 8);
    CHECK(m != NULL);
    int n_steps = n_prompt + 32;
    int out[4][64] = {{0}};
    for (int run = 0; run < 4; run++) {
        int th = run % 2 ? 2 : 1;
        bool sl = run >= 2;
        if (sl && th == 2 && !stateless_two_threads) {
            memcpy(out[run], out[2], sizeof out[run]);
            continue;
        }
        kn_session_params sp = sess_params();
        sp.threads = th;
        eng *e = eng_new(m, &sp, false);
        CHECK(e != NULL);
        if (run > 0) memcpy(out[run], out[0], sizeof out[run]); /* steps a run leaves out */
        bool ok = sl ? run_stateless(e, prompt, n_prompt, n_prompt + stateless_steps, out[run])
                     : run_kv(e, prompt, n_prompt, n_steps, out[run]);
        eng_free(e);
        CHECK(ok);
    }
    kn_model_free(m);
    for (int pos = n_prompt - 1; pos < n_steps; pos++)
        for (int run = 1; run < 4; run++)
            CHECKF(out[run][pos] == out[0][pos], "%s [%s] pos %d: kv %d, %s with %d threads %d",
                   path, table_name(), pos, out[0][pos], run >= 2 ? "stateless" : "kv",
                   run % 2 ? 2 : 1, out[run][pos]);
    if (getenv("KILN_TEST_VERBOSE")) {
        for (int pos = n_prompt - 1; pos < n_steps; pos++) fprintf(stderr, " %d", out[0][pos]);
        fprintf(stderr, "\n");
    }
}

/* Past ATTN_CHUNK (256) cached slots a row's attention is folded from chunks of slots, run one
 * after the other in one work item, or spread over the pool in a decode pass with fewer
 * (row, KV head) items than twice the threads (SmolLM2's 3 KV heads on 2 threads; the stories
 * model's 6 stay whole). The last logits of a 520-token prompt (three chunks: with two, the
 * fold is symmetric) still may not depend in any bit on the prefill's chunks, the threads or
 * the mode. */
static void check_long_context_agree(const char *path) {
    /* sanitizer builds: two chunks (the spread path's memory, not the fold's order) */
    enum { NMAX = 520, WIN = 544 };
    const int N = KT_SANITIZED ? 300 : NMAX;
    kn_model *m = open_model(path, WIN, 128);
    CHECKF(m != NULL, "%s is missing: run scripts/fetch_models.sh", path);
    int V = m->hp.n_vocab;
    kn_model_free(m);
    int prompt[NMAX];
    for (int i = 0; i < N; i++) prompt[i] = 1 + (i * 7919 + 11) % (V - 1);
    float *a = malloc(sizeof(float) * (size_t)V), *b = malloc(sizeof(float) * (size_t)V);
    bool ok = prompt_logits(path, WIN, 128, 1, false, prompt, N, a);
    const struct {
        int chunk, threads;
        bool stateless;
        const char *what;
    } others[] = {{1, 2, false, "C=1, 2 threads"},
                  {96, 2, false, "C=96, 2 threads"},
                  {128, 2, true, "stateless, 2 threads"}};
    int first = -1, which = 0;
    for (int i = 0; ok && first < 0 && i < 3; i++) {
        which = i;
        ok = prompt_logits(path, WIN, others[i].chunk, others[i].threads, others[i].stateless,
                           prompt, N, b);
        for (int j = 0; ok && j < V && first < 0; j++)
            if (memcmp(&a[j], &b[j], sizeof(float)) != 0) first = j;
    }
    float va = first >= 0 ? a[first] : 0, vb = first >= 0 ? b[first] : 0;
    free(a);
    free(b);
    CHECKF(ok, "%s [%s]: %s failed", path, table_name(), others[which].what);
    CHECKF(first < 0, "%s [%s]: logit %d of C=128 and %s differ at %d tokens: %.9g vs %.9g",
           path, table_name(), first, others[which].what, N, va, vb);
}

TEST(engine_long_context_chunks_agree) {
    /* the default table: the schedule is the engine's; every table's chunk results and their
     * fold are kernels_attention_fold's to check */
    check_long_context_agree(smollm2_path());
    if (!KT_SANITIZED) check_long_context_agree(kt_shared(STORIES)); /* its chunks in turn only */
}

TEST(engine_q8_0_kv_cache) {
    /* --kv q8_0: the same bit-for-bit agreement of chunk sizes, threads and modes as the f16
     * cache (a row is rounded to Q8_0 once, when written), short and past the attention's
     * chunks, on the default table (the kernels' q8 variants are kernels_attention_q8_cache's);
     * and a model whose head size is no multiple of 32 (stories260K: 8) is refused with an
     * error that says so, not run. */
    g_kv = KN_KV_Q8;
    check_modes_agree(smollm2_path(), k_smol_prompt,
                      (int)(sizeof k_smol_prompt / sizeof k_smol_prompt[0]), false,
                      KT_SANITIZED ? 6 : 32);
    if (!KT_SANITIZED) check_long_context_agree(smollm2_path());
    kn_model *m = open_model(kt_shared(STORIES), 64, 8);
    CHECK(m != NULL);
    kn_session_params sp = sess_params();
    kn_session *s = NULL;
    kiln_error err;
    kiln_status st = kn_session_new(m, &sp, &s, &err);
    g_kv = KN_KV_F16;
    kn_session_free(s);
    kn_model_free(m);
    CHECK(st == KILN_ERR_INVALID_ARG);
    CHECKF(strstr(err.message, "multiple of 32") && strstr(err.message, "is 8"), "%s",
           err.message);
    /* a kind the engine does not know is refused too, not read as one it does */
    m = open_model(kt_shared(STORIES), 64, 8);
    CHECK(m != NULL);
    sp = sess_params();
    sp.kv = (kn_kv_kind)7;
    st = kn_session_new(m, &sp, &s, &err);
    kn_session_free(s);
    kn_model_free(m);
    CHECK(st == KILN_ERR_INVALID_ARG);
    CHECKF(strstr(err.message, "KV cache type 7") != NULL, "%s", err.message);
}

TEST(engine_stories_modes_agree) {
    FOR_EACH_TABLE(check_modes_agree(kt_shared(STORIES), k_stories_prompt,
                                     (int)(sizeof k_stories_prompt / sizeof k_stories_prompt[0]),
                                     true, 32));
}

TEST(engine_stories_modes_agree_kv_f32) {
    g_kv = KN_KV_F32;
    FOR_EACH_TABLE(check_modes_agree(kt_shared(STORIES), k_stories_prompt,
                                     (int)(sizeof k_stories_prompt / sizeof k_stories_prompt[0]),
                                     true, 32));
    g_kv = KN_KV_F16;
}

TEST(engine_smollm2_modes_agree) {
    const char *path = smollm2_path();
    kn_model *m = open_model(path, 64, 8);
    CHECKF(m != NULL, "%s is missing: run scripts/fetch_models.sh", path);
    CHECK_EQ_INT(m->hp.n_layer, 30);
    CHECK_EQ_INT(m->hp.n_head, 9);
    CHECK_EQ_INT(m->hp.n_head_kv, 3);
    CHECK(m->hp.tied_embeddings);
    CHECK_EQ_INT(m->output.type, 8 /* Q8_0 */);
    CHECK_EQ_INT(m->layers[0].wq.type, 3 /* Q4_1 */);
    kn_model_free(m);
    /* Stateless with two threads is left out: every step is a whole window, and the
     * two-thread kv run and the stateless run already cover both halves. The plain-C table
     * and sanitizer builds are ~10-30x slower: there a few stateless steps show the same. */
    /* Sanitizer builds run it on the default table only (each table's kernels are checked
     * under ASan by kernels_variants_match_reference; the release build runs every table). */
    if (KT_SANITIZED)
        check_modes_agree(path, k_smol_prompt,
                          (int)(sizeof k_smol_prompt / sizeof k_smol_prompt[0]), false, 6);
    else
        FOR_EACH_TABLE(check_modes_agree(path, k_smol_prompt,
                                         (int)(sizeof k_smol_prompt / sizeof k_smol_prompt[0]),
                                         false, g_table == kn_kernels_generic() ? 6 : 32));
}

/* Batched steps (a server's busy slots in one pass over the weights): three sessions with
 * prompts of different lengths step together through kn_session_run_batch, and each one's
 * logits equal, bit for bit, those of a twin session stepping alone through kn_session_run —
 * rows from different caches, at different positions, do not disturb each other. One step
 * has one session step alone and the next lead a batch of the other two; in two steps session
 * 0 prefills a 3-token chunk (its rows attending to each other) in the same pass as the others'
 * decode rows, once leading it and once riding in another's. */
static void check_batched_decode(const char *path) {
    kn_model *m = open_model(path, 64, 8);
    CHECKF(m != NULL, "%s is missing: run scripts/fetch_models.sh", path);
    const int NS = 3, STEPS = KT_SANITIZED ? 5 : 7, V = m->hp.n_vocab;
    kn_session_params sp = sess_params();
    sp.stateless = false;
    sp.max_batch = KN_MAX_BATCH;
    eng *a[3] = {0}, *b[3] = {0};
    int32_t pos[3], tok[3];
    int32_t slot_pos[3][64];
    bool ok = true;
    kiln_error err = {0};
    for (int i = 0; i < NS && ok; i++) {
        a[i] = eng_new(m, &sp, false);
        b[i] = eng_new(m, &sp, false);
        ok = a[i] && b[i];
        int n = (int)(sizeof k_smol_prompt / sizeof k_smol_prompt[0]) - 4 * i;
        int32_t ids[16];
        for (int j = 0; j < n; j++) ids[j] = k_smol_prompt[j] % V;
        const float *la = NULL, *lb = NULL;
        ok = ok && !kn_driver_feed(&a[i]->kv, ids, n, 0, &la, &err) &&
             !kn_driver_feed(&b[i]->kv, ids, n, 0, &lb, &err);
        if (ok) tok[i] = kn_argmax(lb, V);
        pos[i] = n;
        /* a fresh run without overflow: slot j holds position j */
        for (int j = 0; j < 64; j++) slot_pos[i][j] = j < n ? j : -1;
    }
    for (int step = 0; step < STEPS && ok; step++) {
        kn_graph_call calls[3];
        const kn_graph_call *cp[3];
        kn_session *ss[3];
        /* steps 3 and 4: session 0 prefills a chunk of 3 */
        int n0 = step == 3 || step == 4 ? 3 : 1;
        int32_t cids[3], cpos[3];
        for (int r = 0; r < n0; r++) {
            cids[r] = (tok[0] + r) % V;
            cpos[r] = pos[0] + r;
        }
        for (int i = 0; i < NS; i++) {
            int n = i == 0 ? n0 : 1;
            for (int r = 0; r < n; r++) slot_pos[i][pos[i] + r] = pos[i] + r;
            calls[i] = i == 0 ? (kn_graph_call){n0 > 1 ? KN_GRAPH_PREFILL : KN_GRAPH_DECODE, n0,
                                                cids, cpos, cpos, slot_pos[0], pos[0] + n0}
                              : (kn_graph_call){KN_GRAPH_DECODE, 1, &tok[i], &pos[i], &pos[i],
                                                slot_pos[i], pos[i] + 1};
            cp[i] = &calls[i];
            ss[i] = a[i]->s;
        }
        const float *lg;
        if (step == 1) {      /* one steps alone, the next leads a batch of two */
            ok = !kn_session_run(a[0]->s, &calls[0], &lg, &err) &&
                 !kn_session_run_batch(a[1]->s, ss + 1, cp + 1, NS - 1, &err);
        } else if (step == 4) { /* session 1 leads; session 0's chunk rides second */
            kn_session *ss2[3] = {ss[1], ss[0], ss[2]};
            const kn_graph_call *cp2[3] = {cp[1], cp[0], cp[2]};
            ok = !kn_session_run_batch(a[1]->s, ss2, cp2, NS, &err);
        } else {
            ok = !kn_session_run_batch(a[0]->s, ss, cp, NS, &err);
        }
        for (int i = 0; i < NS && ok; i++) {
            const float *lb;
            ok = !kn_session_run(b[i]->s, &calls[i], &lb, &err);
            const float *la = kn_session_logits(a[i]->s);
            int first = -1;
            for (int j = 0; ok && j < V && first < 0; j++)
                if (memcmp(&la[j], &lb[j], sizeof(float)) != 0) first = j;
            if (first >= 0) {
                fprintf(stderr, "    %s [%s] step %d session %d: logit %d batched %.9g, alone "
                        "%.9g\n", path, table_name(), step, i, first, la[first], lb[first]);
                ok = false;
            }
            if (ok) tok[i] = kn_argmax(lb, V);
            pos[i] += calls[i].n;
        }
    }
    for (int i = 0; i < NS; i++) {
        eng_free(a[i]);
        eng_free(b[i]);
    }
    kn_model_free(m);
    CHECKF(ok, "%s [%s]: batched decode differs from lone steps, or a step failed (%s)", path,
           table_name(), err.message);
}

TEST(engine_batched_decode_bit_identical) {
    /* sanitizer builds: SmolLM2 on the default table only (the rows' bookkeeping is what ASan
     * watches here; every table's batch invariance is the release build's to check) */
    if (KT_SANITIZED) check_batched_decode(smollm2_path());
    else FOR_EACH_TABLE(check_batched_decode(smollm2_path()));
    FOR_EACH_TABLE(check_batched_decode(kt_shared(STORIES)));
}
