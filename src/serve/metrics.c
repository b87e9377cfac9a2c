/* metrics.c — counters, gauges and histograms, rendered as Prometheus text. */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* vLLM's buckets for the same quantities, so dashboards built for it read these too */
static const double k_ttft[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                                0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0};
static const double k_tpot[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
                                1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
static const double k_e2e[] = {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
                               40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
#define N(a) ((int)(sizeof a / sizeof a[0]))
_Static_assert(sizeof k_ttft / sizeof k_ttft[0] <= SV_HIST_MAX, "buckets");
_Static_assert(sizeof k_e2e / sizeof k_e2e[0] <= SV_HIST_MAX, "buckets");

void sv_metrics_init(sv_metrics *m) {
    memset(m, 0, sizeof *m);
    m->ttft.bounds = k_ttft;
    m->ttft.n = N(k_ttft);
    m->tpot.bounds = k_tpot;
    m->tpot.n = N(k_tpot);
    m->e2e.bounds = k_e2e;
    m->e2e.n = N(k_e2e);
    m->queue_time.bounds = k_e2e;
    m->queue_time.n = N(k_e2e);
}

void sv_hist_observe(sv_hist *h, double v) {
    int i = 0;
    while (i < h->n && v > h->bounds[i]) i++;
    if (i < h->n) h->counts[i]++;
    else h->inf++;
    h->sum += v;
    h->count++;
}

void sv_metrics_count_request(sv_metrics *m, const char *endpoint, int status) {
    for (int i = 0; i < m->n_requests; i++)
        if (m->requests[i].status == status && strcmp(m->requests[i].endpoint, endpoint) == 0) {
            m->requests[i].n++;
            return;
        }
    if (m->n_requests == SV_STATUS_KINDS) return; /* endpoints and statuses are few and fixed */
    m->requests[m->n_requests++] = (sv_status_count){endpoint, status, 1};
}

typedef struct out {
    char *p;
    size_t len, cap;
    int oom;
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out *o, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p ? o->p + o->len : NULL, o->p ? o->cap - o->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if (o->p && o->len + (size_t)n < o->cap) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = (o->cap ? o->cap * 2 : 8192) + (size_t)n;
        char *np = realloc(o->p, cap);
        if (!np) {
            o->oom = 1;
            return;
        }
        o->p = np;
        o->cap = cap;
    }
}

static void head(out *o, const char *name, const char *type, const char *help) {
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void hist(out *o, const char *name, const char *help, const sv_hist *h) {
    head(o, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i < h->n; i++) {
        cum += h->counts[i];
        put(o, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i], (unsigned long long)cum);
    }
    put(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)h->count);
    put(o, "%s_sum %.6f\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->count);
}

/* a label value: backslash, quote and newline escaped */
static void label(out *o, const char *v) {
    for (; *v; v++) {
        if (*v == '\\' || *v == '"') put(o, "\\%c", *v);
        else if (*v == '\n') put(o, "\\n");
        else put(o, "%c", *v);
    }
}

char *sv_metrics_render(const sv_metrics *m, size_t *len) {
    out o = {0};
    head(&o, "kiln_requests_total", "counter", "HTTP requests answered, by endpoint and status");
    for (int i = 0; i < m->n_requests; i++)
        put(&o, "kiln_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n", m->requests[i].endpoint,
            m->requests[i].status, (unsigned long long)m->requests[i].n);
    head(&o, "kiln_prompt_tokens_total", "counter", "prompt tokens of finished requests");
    put(&o, "kiln_prompt_tokens_total %llu\n", (unsigned long long)m->prompt_tokens);
    head(&o, "kiln_prompt_tokens_cached_total", "counter",
         "of those, tokens kept from a slot's cache (prefix reuse), not prefilled");
    put(&o, "kiln_prompt_tokens_cached_total %llu\n", (unsigned long long)m->cached_tokens);
    head(&o, "kiln_generation_tokens_total", "counter", "generated tokens");
    put(&o, "kiln_generation_tokens_total %llu\n", (unsigned long long)m->generation_tokens);
    hist(&o, "kiln_time_to_first_token_seconds",
         "request arrival to its first generated text, queue included", &m->ttft);
    hist(&o, "kiln_time_per_output_token_seconds",
         "mean time between generated tokens of a request, after the first", &m->tpot);
    hist(&o, "kiln_e2e_request_latency_seconds", "request arrival to its last byte", &m->e2e);
    hist(&o, "kiln_request_queue_time_seconds", "request arrival to its slot", &m->queue_time);
    head(&o, "kiln_num_requests_waiting", "gauge", "requests waiting for a slot");
    put(&o, "kiln_num_requests_waiting %d\n", m->waiting);
    head(&o, "kiln_num_requests_running", "gauge", "requests being generated");
    put(&o, "kiln_num_requests_running %d\n", m->running);
    head(&o, "kiln_slots_total", "gauge", "slots (sessions) the worker runs");
    put(&o, "kiln_slots_total %d\n", m->slots);
    head(&o, "kiln_slots_busy", "gauge", "slots running a request (last heartbeat)");
    put(&o, "kiln_slots_busy %d\n", m->slots_busy);
    head(&o, "kiln_kv_cache_usage_perc", "gauge",
         "fraction (0-1) of the KV cache (slots x window) held by running requests");
    put(&o, "kiln_kv_cache_usage_perc %.6f\n", m->kv_usage);
    head(&o, "kiln_prefix_cache_tokens", "gauge", "tokens idle slots keep for prefix reuse");
    put(&o, "kiln_prefix_cache_tokens %ld\n", m->prefix_tokens);
    head(&o, "kiln_batched_decode_steps_total", "counter",
         "decode steps that ran in one pass over the weights with other slots' steps (since "
         "the worker started)");
    put(&o, "kiln_batched_decode_steps_total %ld\n", m->batched_steps);
    head(&o, "kiln_ready", "gauge", "1 when the worker is ready to serve (GET /health is 200)");
    put(&o, "kiln_ready %d\n", m->ready);
    head(&o, "kiln_device_info", "gauge", "the device the worker runs on");
    put(&o, "kiln_device_info{device=\"");
    label(&o, m->device);
    put(&o, "\",kernels=\"");
    label(&o, m->kernels);
    put(&o, "\",fallback=\"");
    label(&o, m->fallback);
    put(&o, "\",mode=\"");
    label(&o, m->mode);
    put(&o, "\"} 1\n");
    head(&o, "kiln_device_fallbacks_total", "counter",
         "worker starts on which --device auto skipped a device");
    put(&o, "kiln_device_fallbacks_total %llu\n", (unsigned long long)m->fallbacks);
    head(&o, "kiln_worker_restarts_total", "counter",
         "worker restarts after it died or missed its heartbeat");
    put(&o, "kiln_worker_restarts_total %llu\n", (unsigned long long)m->worker_restarts);
    if (o.oom) {
        free(o.p);
        return NULL;
    }
    *len = o.len;
    return o.p;
}
