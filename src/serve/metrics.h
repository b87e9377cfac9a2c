/* metrics.h — what /metrics reports, in Prometheus' text format (version 0.0.4).
 *
 * The supervisor owns one sv_metrics and updates it under its lock; the gauges that describe
 * the worker (busy slots, KV use) come from its heartbeat answers. Names follow the
 * conventions of vLLM's metrics, which routers such as the Gateway API Inference Extension's
 * endpoint picker read: kiln_num_requests_waiting, kiln_num_requests_running,
 * kiln_kv_cache_usage_perc (docs in deploy/README.md). */
#ifndef KILN_SERVE_METRICS_H
#define KILN_SERVE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define SV_HIST_MAX 24

typedef struct sv_hist {
    const double *bounds;     /* upper bounds, ascending (le) */
    int n;
    uint64_t counts[SV_HIST_MAX]; /* per bucket, not cumulative */
    uint64_t inf;             /* above the last bound */
    double sum;
    uint64_t count;
} sv_hist;

#define SV_STATUS_KINDS 32

typedef struct sv_status_count {
    const char *endpoint;
    int status;
    uint64_t n;
} sv_status_count;

typedef struct sv_metrics {
    sv_status_count requests[SV_STATUS_KINDS];
    int n_requests;
    uint64_t prompt_tokens, cached_tokens, generation_tokens;
    sv_hist ttft, tpot, e2e, queue_time;
    uint64_t worker_restarts, fallbacks;
    /* gauges */
    int waiting, running, slots, slots_busy, ready;
    double kv_usage;          /* running requests' tokens / (slots x window) */
    long prefix_tokens;       /* tokens idle slots keep for reuse */
    long batched_steps;       /* the worker's decode steps that shared a pass (its lifetime) */
    char device[64], kernels[32], fallback[64], mode[16];
} sv_metrics;

void sv_metrics_init(sv_metrics *m);
void sv_hist_observe(sv_hist *h, double v);
void sv_metrics_count_request(sv_metrics *m, const char *endpoint, int status);
/* The text exposition; malloc'd. */
char *sv_metrics_render(const sv_metrics *m, size_t *len);

#endif
