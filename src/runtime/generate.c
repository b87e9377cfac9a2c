/* generate.c — the generation loop: prompt in, sampled tokens out through the static-graph
 * driver, text streamed whole characters at a time with stop strings held back, metrics.
 *
 * Everything the loop touches is allocated before its first step: the result arrays are sized
 * by max_tokens, the text buffer by max_tokens x the longest token, the piece buffer by the
 * longest token, the cache's id record by the positions this generation can reach. Inside the
 * loop there is no allocation, no file I/O and no shape change. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"

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

/* Logits that are not finite mean the model's arithmetic overflowed (finite but huge weights
 * pass the bake's finiteness check): an error naming that, not garbage text. */
static kiln_status check_logits(const float *logits, int n, kiln_error *err) {
    for (int i = 0; i < n; i++)
        if (!isfinite(logits[i]))
            return kn_fail(err, KILN_ERR_FORMAT, "the model's output is not finite (%s logit for "
                           "token %d): its weights overflow float arithmetic",
                           isnan(logits[i]) ? "a NaN" : "an infinite", i);
    return KILN_OK;
}

/* How many of the prompt's first ids the cache already holds and may keep: the common prefix
 * with what it has seen, less one (the last prompt token is always fed: its logits start the
 * answer). Rewinding a slid cache is subtler: positions after the common prefix are dropped,
 * but ring slots of the window that ends there may hold them instead of the positions they
 * displaced, so those (at most W - S) are fed again. */
static int reusable(const kiln_session *ks, const int32_t *ids, int n) {
    if (ks->p.mode != KILN_MODE_KV) return 0;
    const int W = ks->model->contract.window, S = ks->model->contract.sink;
    int common = 0;
    while (common < ks->n_hist && common < n - 1 && ks->hist[common] == ids[common]) common++;
    int from = common;
    if (ks->n_hist > W && common < ks->n_hist) {
        int lo = common - (W - S) > S ? common - (W - S) : S;
        if (ks->n_hist - (W - S) > lo && lo < common) from = lo;
    }
    return from;
}

/* The loop. The prompt ids are in r->prompt_ids; the first `past` of them are already in the
 * KV cache (prefix reuse), so only the rest is prefilled. */
static kiln_status run_loop(kiln_session *ks, int past, const kiln_generate_params *p,
                            kiln_result *r, kiln_error *err) {
    const kiln_model *km = ks->model;
    const kn_tokenizer *tok = km->tok;
    const int W = km->contract.window, V = km->m->hp.n_vocab;
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
        if (r->prompt_ids[i] < 0 || r->prompt_ids[i] >= V)
            return kn_fail(err, KILN_ERR_INVALID_ARG, "prompt token %d is outside the vocabulary",
                           r->prompt_ids[i]);

    /* Everything the loop writes, sized up front. */
    size_t text_cap = (size_t)max_tokens * (size_t)km->max_token_bytes + 1;
    r->ids = kn_malloc((size_t)max_tokens * sizeof *r->ids);
    r->text = kn_malloc(text_cap);
    double *lat = kn_malloc((size_t)max_tokens * sizeof *lat);
    kn_buf piece = {0};
    kn_buf_append(&piece, "", 0);
    if (piece.data) {
        char *d = kn_realloc(piece.data, (size_t)km->max_token_bytes * 2 + 64);
        if (d) {
            piece.data = d;
            piece.cap = (size_t)km->max_token_bytes * 2 + 64;
        } else {
            piece.oom = true;
        }
    }
    /* the record of every position this generation feeds, so a later one (a chat turn, a
     * resent conversation) prefills only what is new, however far it has slid */
    bool hist_ok = stateless || kn_session_hist_reserve(ks, (size_t)n + (size_t)max_tokens);
    if (!r->ids || !r->text || !lat || !piece.data || piece.oom || !hist_ok) {
        kn_free(lat);
        kn_buf_free(&piece);
        return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    if (!stateless) memcpy(ks->hist, r->prompt_ids, (size_t)n * sizeof *ks->hist);
    ks->n_hist = stateless ? 0 : past; /* what the cache holds for sure, should this fail */
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
    mt->cached_tokens = past;
    mt->device = kiln_session_device(ks);
    mt->fallback = kiln_session_fallback(ks);
    mt->kernels = kiln_session_kernels(ks);
    mt->mode = stateless ? "stateless" : "kv";
    mt->threads = ks->p.threads;
    mt->finish_reason = "length";

    const float *logits = NULL;
    int pos = n;
    double t0 = kn_now_seconds();
    kiln_status s = kn_driver_feed(&ks->drv, r->prompt_ids + past, n - past, past, &logits, err);
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
        if ((s = check_logits(logits, V, err))) break;
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
        if (!kn_driver_fits(&ks->drv, pos)) break; /* every slot is taken (--overflow stop) */
        s = kn_driver_step(&ks->drv, id, pos, &logits, err);
        if (!s && !stateless) ks->hist[pos] = id;
        pos++;
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
    kn_driver_idle(&ks->drv);
    double t_end = kn_now_seconds();
    r->text_len = text_len;
    r->n_ids = n_gen;
    mt->generated_tokens = n_gen;
    double prefill_s = t_prefill - t0;
    mt->prefill_tps = prefill_s > 0 ? (n - past) / prefill_s : 0;
    double dec_s = 0;
    for (int i = 1; i < n_gen; i++) dec_s += lat[i] / 1e3;
    mt->decode_tps = n_gen > 1 && dec_s > 0 ? (n_gen - 1) / dec_s : 0;
    mt->p50_ms = percentile(lat + 1, n_gen - 1, 0.50);
    mt->p95_ms = percentile(lat + 1, n_gen - 1, 0.95);
    mt->total_ms = (t_end - t0) * 1e3;
    mt->peak_rss_mb = kn_peak_rss_mb();
    ks->n_hist = stateless || s ? 0 : pos;
    kn_free(lat);
    kn_buf_free(&piece);
    kn_detok_stream_free(&ds);
    return s;
}

kiln_status kiln_generate_ids(kiln_session *ks, const int32_t *prompt, int n,
                              const kiln_generate_params *params, kiln_result *out,
                              kiln_error *err) {
    kn_error_clear(err);
    memset(out, 0, sizeof *out);
    kiln_generate_params dp = kiln_generate_default_params();
    const kiln_generate_params *p = params ? params : &dp;
    if (!prompt || n < 1) return kn_fail(err, KILN_ERR_INVALID_ARG, "the prompt is empty");
    out->prompt_ids = kn_malloc((size_t)n * sizeof *out->prompt_ids);
    if (!out->prompt_ids) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    memcpy(out->prompt_ids, prompt, (size_t)n * sizeof *prompt);
    out->n_prompt = n;
    int past = p->reuse_prefix ? reusable(ks, prompt, n) : 0;
    /* a kept prefix keeps its slots; anything else starts from an empty cache (a stateless
     * window always does: it has no cache to keep) */
    if (past == 0) kiln_session_reset(ks);
    kiln_status s = run_loop(ks, past, p, out, err);
    if (s) kiln_result_free(out);
    return s;
}

kiln_status kn_check_text_size(const char *what, const char *text, kiln_error *err) {
    size_t n = strnlen(text, (size_t)KILN_MAX_PROMPT_BYTES + 1);
    if (n > KILN_MAX_PROMPT_BYTES)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "%s is longer than %u MiB, the most kiln takes",
                       what, KILN_MAX_PROMPT_BYTES >> 20);
    return KILN_OK;
}

kiln_status kiln_generate(kiln_session *ks, const char *prompt,
                          const kiln_generate_params *params, kiln_result *out, kiln_error *err) {
    kn_error_clear(err);
    memset(out, 0, sizeof *out);
    kiln_generate_params dp = kiln_generate_default_params();
    const kiln_generate_params *p = params ? params : &dp;
    if (!prompt || !*prompt) return kn_fail(err, KILN_ERR_INVALID_ARG, "the prompt is empty");
    kiln_status s = kn_check_text_size("the prompt", prompt, err);
    if (!s && p->system) s = kn_check_text_size("the system message", p->system, err);
    if (s) return s;
    kn_tokens ids = {0};
    if (p->raw) {
        s = kn_tokenize(ks->model->tok, prompt, strlen(prompt),
                        KN_TOK_ADD_BOS | KN_TOK_PARSE_SPECIAL, &ids, err);
    } else {
        kn_chat_msg msgs[2];
        size_t nm = 0;
        if (p->system && *p->system) msgs[nm++] = (kn_chat_msg){"system", p->system};
        msgs[nm++] = (kn_chat_msg){"user", prompt};
        s = kn_chat_tokens(ks->model->tok, p->chat_template, p->chat_template_kwargs, msgs, nm,
                           &ids, err);
    }
    if (!s) s = kiln_generate_ids(ks, ids.ids, (int)ids.n, p, out, err);
    kn_tokens_free(&ids);
    return s;
}
