/* cmd_bench.c — `kiln bench`: prompt processing and text generation in tokens/s, timed around
 * fixed-shape calls of the public API (kiln_session_feed), as llama-bench times llama_decode. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "cli.h"
#include "kiln.h"

#define KILN_BENCH_MAX_PARALLEL 64

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Random ids, the same every run (llama-bench also feeds random tokens). */
static void fill_random(int32_t *ids, int n, int vocab) {
    uint64_t x = 0x2545F4914F6CDD1Dull;
    for (int i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ids[i] = (int32_t)(x % (uint64_t)vocab);
    }
}

/* From an empty cache: `depth` random tokens of context (not timed, like llama-bench's -d),
 * then one prefill of n tokens (kind 0) or n decode steps of one token each (kind 1), timed.
 * ids holds depth + n tokens. Stateless mode feeds the same calls; its window recomputes the
 * context on every step, which is what that mode costs. */
static kiln_status time_test(kiln_session *s, int kind, const int32_t *ids, int depth, int n,
                             double *secs, kiln_error *err) {
    const float *logits;
    kiln_session_reset(s);
    kiln_status st = depth ? kiln_session_feed(s, ids, depth, 0, &logits, err) : KILN_OK;
    double t0 = now_seconds();
    if (!st && kind == 0) st = kiln_session_feed(s, ids + depth, n, depth, &logits, err);
    for (int i = depth; !st && kind == 1 && i < depth + n; i++)
        st = kiln_session_feed(s, ids + i, 1, i, &logits, err);
    *secs = now_seconds() - t0;
    return st;
}

/* The start line of --parallel's sessions: each fills its context, says it is ready, then waits
 * for go (1: run, -1: a thread could not start, give up). */
typedef struct par_start {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready;                /* sessions whose context is in */
    int go;
} par_start;

/* One of --parallel's sessions: its context, then its n decode steps, started together with the
 * others (the CPU device batches their steps into shared passes, as a server's slots are). */
typedef struct par_job {
    kiln_session *s;
    const int32_t *ids;
    int depth, n;
    par_start *start;
    double end;
    kiln_status st;
    kiln_error err;
} par_job;

static void *par_main(void *arg) {
    par_job *j = arg;
    const float *logits;
    kiln_session_reset(j->s);
    j->st = j->depth ? kiln_session_feed(j->s, j->ids, j->depth, 0, &logits, &j->err) : KILN_OK;
    pthread_mutex_lock(&j->start->mu);
    j->start->ready++;
    pthread_cond_broadcast(&j->start->cv);
    while (!j->start->go) pthread_cond_wait(&j->start->cv, &j->start->mu);
    bool run = j->start->go > 0;
    pthread_mutex_unlock(&j->start->mu);
    for (int i = j->depth; run && !j->st && i < j->depth + j->n; i++)
        j->st = kiln_session_feed(j->s, j->ids + i, 1, i, &logits, &j->err);
    j->end = now_seconds();
    kiln_session_reset(j->s); /* not generating: the others' passes need not wait for it */
    return NULL;
}

/* tg with np sessions decoding at once, as llama-batched-bench's S_TG: np * n tokens over the
 * time from the common start to the last session's last step (*secs is that time / np). The
 * contexts (-d) are filled before the clock starts. */
static kiln_status time_parallel(kiln_session **ss, int np, const int32_t *ids, int depth,
                                 int n, double *secs, kiln_error *err) {
    par_job jobs[KILN_BENCH_MAX_PARALLEL];
    pthread_t th[KILN_BENCH_MAX_PARALLEL];
    par_start start = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    int started = 0;
    for (int i = 0; i < np; i++) {
        jobs[i] = (par_job){ss[i], ids, depth, n, &start, 0, KILN_OK, {0}};
        if (pthread_create(&th[i], NULL, par_main, &jobs[i])) break;
        started++;
    }
    pthread_mutex_lock(&start.mu);
    while (start.ready < started) pthread_cond_wait(&start.cv, &start.mu);
    double t0 = now_seconds(), end = t0; /* before go: no step can precede it */
    start.go = started < np ? -1 : 1;
    pthread_cond_broadcast(&start.cv);
    pthread_mutex_unlock(&start.mu);
    kiln_status st = KILN_OK;
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        if (jobs[i].end > end) end = jobs[i].end;
        if (jobs[i].st && !st) {
            st = jobs[i].st;
            *err = jobs[i].err;
        }
    }
    pthread_cond_destroy(&start.cv);
    pthread_mutex_destroy(&start.mu);
    if (!st && started < np) {
        err->code = st = KILN_ERR_NOMEM;
        snprintf(err->message, sizeof err->message, "bench: cannot start %d threads", np);
    }
    *secs = (end - t0) / np;
    return st;
}

/* Parses "128,512" into up to 16 positive ints. */
static int parse_list(const char *opt, const char *v, int *out, int max, long hi) {
    int n = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", v);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (n == max) {
            kiln_cli_error("%s: at most %d values", opt, max);
            return -1;
        }
        if (!kiln_arg_int(opt, tok, 0, hi, &out[n])) return -1;
        n++;
    }
    if (!n) kiln_cli_error("%s: no values", opt);
    return n ? n : -1;
}

/* One result row: a test at a thread count, mode and depth. */
typedef struct bench_row {
    const char *name, *device, *kernels, *mode, *kv;
    int window, chunk, threads, reps, kind, n, depth; /* kind 0: pp, 1: tg */
    int np;                     /* sessions decoding at once (tg; 1 for pp) */
    double avg, sd;
    const double *samples;      /* [reps] tokens/s */
    bool floor;                 /* --floor: the weight bytes and bandwidth below are set */
    uint64_t stored, resident;
    double kv_bytes;            /* cached K and V a decode step reads, mean over the steps */
    double bw_gbs;
} bench_row;

static void print_row(const bench_row *r, bool json, bool first) {
    bool fl = r->floor && r->kind == 1;
    /* a pass reads the weights once for all np sessions, and each session's own cache */
    double bytes = (double)r->stored + r->np * r->kv_bytes;
    double floor_ts = fl && r->stored ? r->np * r->bw_gbs * 1e9 / bytes : 0;
    double pct = floor_ts > 0 ? 100 * r->avg / floor_ts : 0;
    if (json) {
        printf("%s  {\"model\": ", first ? "" : ",\n");
        kiln_cli_json_str(stdout, r->name);
        printf(", \"backend\": \"%s\", \"kernels\": \"%s\", \"mode\": \"%s\", \"window\": %d, "
               "\"chunk\": %d, \"n_prompt\": %d, \"n_gen\": %d, \"n_depth\": %d, "
               "\"n_parallel\": %d, \"n_threads\": %d, \"type_k\": \"%s\", \"type_v\": \"%s\", "
               "\"repetitions\": %d, "
               "\"avg_ts\": %.3f, \"stddev_ts\": %.3f, \"samples_ts\": [",
               r->device, r->kernels, r->mode, r->window, r->chunk, r->kind == 0 ? r->n : 0,
               r->kind == 1 ? r->n : 0, r->depth, r->np, r->threads, r->kv, r->kv, r->reps, r->avg,
               r->sd);
        for (int i = 0; i < r->reps; i++) printf("%s%.3f", i ? ", " : "", r->samples[i]);
        printf("]");
        if (fl)
            printf(", \"weight_bytes\": %llu, \"resident_bytes\": %llu, \"kv_bytes\": %.0f, "
                   "\"bw_gbs\": %.3f, \"floor_ts\": %.3f, \"pct_floor\": %.2f",
                   (unsigned long long)r->stored, (unsigned long long)r->resident, r->kv_bytes,
                   r->bw_gbs, floor_ts, pct);
        printf("}");
        return;
    }
    char test[64];
    int k = snprintf(test, sizeof test, "%s%d", r->kind == 0 ? "pp" : "tg", r->n);
    if (r->np > 1) k += snprintf(test + k, sizeof test - (size_t)k, " x%d", r->np);
    if (r->depth) snprintf(test + k, sizeof test - (size_t)k, " @ d%d", r->depth);
    printf("| %s | %s | %s | %d | %s | %.2f ± %.2f |", r->name, r->device, r->mode, r->threads,
           test, r->avg, r->sd);
    if (fl)
        printf(" %.1f | %.1f | %.2f | %.2f | %.1f |", (double)r->stored / 1e6, r->kv_bytes / 1e6,
               r->bw_gbs, floor_ts, pct);
    else if (r->floor)
        printf(" | | | | |");
    printf("\n");
}

int kiln_cli_bench(int argc, char **argv) {
    const char *model = NULL, *v = NULL;
    int pp[16] = {128, 512}, n_pp = 2, tg[16] = {128}, n_tg = 1, th[16] = {1, 2}, n_th = 2;
    int dp[16] = {0}, n_dp = 1, np[16] = {1}, n_np = 1;
    int modes[2] = {KILN_MODE_KV}, n_modes = 1, reps = 3;
    kiln_kv_type kv = KILN_KV_F16;
    const char *kv_name = "f16";
    bool json = false, floor = false;
    const char *device = "auto";
    kiln_model_params mp = kiln_model_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool bad = false;
        if (kiln_arg_is_help(a)) {
            printf("usage: kiln bench OFFERING [-p 128,512] [-n 128] [-d 0] [-t 1,2] [-np 1]\n"
                   "                  [--mode kv,stateless] [--kv f16|f32|q8_0] [-r REPS]\n"
                   "                  [--floor] [--json] [--window W] [--chunk C] [--device DEV]\n\n"
                   "Prompt processing (pp: one prefill of N tokens in [1,C] chunks) and text\n"
                   "generation (tg: N decode steps) in tokens/s, like llama-bench: each test is\n"
                   "repeated REPS times (default 3) after one warm-up and reported as mean and\n"
                   "standard deviation. 0 in -p or -n skips that test. -d D first fills D tokens\n"
                   "of context (not timed), like llama-bench's -d; a list runs each depth.\n"
                   "OFFERING may also be a GGUF file, opened with the contract --window W\n"
                   "(default 1024) and --chunk C (default 128); an offering keeps its own.\n\n"
                   "-np N (--parallel) runs each tg test on N sessions of the model at once, as a\n"
                   "server's slots (kiln serve --parallel N): the CPU device batches their decode\n"
                   "steps into shared passes over the weights. t/s is then all N sessions' tokens\n"
                   "over the time from their common start to the last one's end (llama-batched-\n"
                   "bench's S_TG); -d fills every session's context first. A list runs each N.\n\n"
                   "--floor measures this machine's read bandwidth at each thread count in the\n"
                   "same run and adds, per tg row, the bytes of weights a decode step reads (every\n"
                   "layer matrix and the output matrix, as the file stores them), the bytes of\n"
                   "cached keys and values it reads (every layer's rows over the positions it\n"
                   "attends, a sliding layer's over its window; the mean over the test's steps,\n"
                   "in the --kv type), and the floor tokens/s = bandwidth / (weights + KV), with\n"
                   "the share of it reached. With -np N a pass reads the weights once and N\n"
                   "caches: floor = N * bandwidth / (weights + N * KV).\n\n"
                   "--json prints llama-bench's fields (n_prompt, n_gen, n_depth, n_threads,\n"
                   "type_k, type_v, avg_ts, stddev_ts, samples_ts) plus mode, window, chunk and\n"
                   "n_parallel;\n"
                   "with --floor, tg rows add weight_bytes, resident_bytes (as kiln holds them:\n"
                   "more where a type is widened to F32 at load), kv_bytes, bw_gbs, floor_ts,\n"
                   "pct_floor.\n"
                   "--kv: the native cpu engine's KV cache (default f16; q8_0: GGUF Q8_0 rows, about\n"
                   "half the bytes, for head sizes that are multiples of 32).\n");
            return 0;
        }
        if (kiln_arg_value(argc, argv, &i, "-p", "--n-prompt", &v, &bad)) {
            if (bad || (n_pp = parse_list("-p", v, pp, 16, 1 << 20)) < 0) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "-n", "--n-gen", &v, &bad)) {
            if (bad || (n_tg = parse_list("-n", v, tg, 16, 1 << 20)) < 0) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "-d", "--n-depth", &v, &bad)) {
            if (bad || (n_dp = parse_list("-d", v, dp, 16, 1 << 20)) < 0) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "-t", "--threads", &v, &bad)) {
            if (bad || (n_th = parse_list("-t", v, th, 16, 1024)) < 0) return 2;
            for (int k = 0; k < n_th; k++)
                if (th[k] < 1) {
                    kiln_cli_error("-t: threads must be >= 1");
                    return 2;
                }
        } else if (kiln_arg_value(argc, argv, &i, "-np", "--parallel", &v, &bad)) {
            if (bad || (n_np = parse_list("-np", v, np, 16, KILN_BENCH_MAX_PARALLEL)) < 0)
                return 2;
            for (int k = 0; k < n_np; k++)
                if (np[k] < 1) {
                    kiln_cli_error("-np: sessions must be >= 1");
                    return 2;
                }
        } else if (kiln_arg_value(argc, argv, &i, "-r", "--repetitions", &v, &bad)) {
            if (bad || !kiln_arg_int("-r", v, 1, 1000, &reps)) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--mode", NULL, &v, &bad)) {
            if (bad) return 2;
            n_modes = 0;
            char buf[64];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
                if (n_modes == 2 || (strcmp(t, "kv") && strcmp(t, "stateless"))) {
                    kiln_cli_error("--mode: '%s' is not kv, stateless or kv,stateless", v);
                    return 2;
                }
                modes[n_modes++] = strcmp(t, "kv") == 0 ? KILN_MODE_KV : KILN_MODE_STATELESS;
            }
        } else if (kiln_arg_value(argc, argv, &i, "--kv", NULL, &v, &bad)) {
            static const char *const kv_types[] = {"f16", "f32", "q8_0", NULL}; /* kiln_kv_type order */
            int k;
            if (bad || !kiln_arg_choice("--kv", v, kv_types, &k)) return 2;
            kv = (kiln_kv_type)k;
            kv_name = kv_types[k];
        } else if (kiln_arg_value(argc, argv, &i, "--window", NULL, &v, &bad)) {
            if (bad || !kiln_arg_int("--window", v, 1, 1 << 20, &mp.window)) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--chunk", NULL, &v, &bad)) {
            if (bad || !kiln_arg_int("--chunk", v, 1, 1 << 20, &mp.chunk)) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--device", NULL, &v, &bad)) {
            if (bad) return 2;
            device = v;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--floor") == 0) {
            floor = true;
        } else if (a[0] == '-' && a[1]) {
            kiln_cli_error("bench: unknown option '%s' (kiln bench --help)", a);
            return 2;
        } else if (model) {
            kiln_cli_error("bench: more than one OFFERING ('%s', '%s')", model, a);
            return 2;
        } else {
            model = a;
        }
        if (bad) return 2;
    }
    if (!model) {
        kiln_cli_error("bench: no OFFERING given (kiln bench --help)");
        return 2;
    }
    int rc = 0;
    kiln_error err;
    kiln_model *m = NULL;
    mp.log = kiln_cli_log_stderr;
    kiln_status st = kiln_model_open(model, &mp, &m, &err);
    if (st) {
        kiln_cli_error("%s", err.message);
        return kiln_exit_code(st);
    }
    /* Every test must fit the window before anything runs, so a bad -d/-p/-n is one line and
     * exit 2, not a half-printed table. */
    int W = kiln_model_window(m), max_n = 1, max_d = 0, max_np = 1;
    for (int k = 0; k < n_np; k++)
        if (np[k] > max_np) max_np = np[k];
    for (int di = 0; di < n_dp; di++)
        if (dp[di] > max_d) max_d = dp[di];
    for (int kind = 0; kind < 2; kind++)
        for (int k = 0; k < (kind == 0 ? n_pp : n_tg); k++) {
            int n = kind == 0 ? pp[k] : tg[k];
            if (n > max_n) max_n = n;
            /* a decode step needs a slot after the last token, as generation does */
            if (n && max_d + n > W - kind) {
                kiln_cli_error("bench: -d %d + -%c %d does not fit the window of %d tokens%s",
                               max_d, kind == 0 ? 'p' : 'n', n, W,
                               kind == 1 ? " (decode keeps one slot free)" : "");
                kiln_model_free(m);
                return 2;
            }
        }
    int32_t *ids = malloc((size_t)(max_d + max_n) * sizeof *ids);
    double *samples = malloc((size_t)reps * sizeof *samples);
    if (!ids || !samples) {
        kiln_cli_error("bench: out of memory");
        free(ids);
        free(samples);
        kiln_model_free(m);
        return 1;
    }
    fill_random(ids, max_d + max_n, kiln_model_n_vocab(m));
    if (json) printf("[\n");
    else if (floor)
        printf("| model | backend | mode | threads | test | t/s | weights MB/token "
               "| KV MB/token | read GB/s | floor t/s | %% of floor |\n"
               "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    else
        printf("| model | backend | mode | threads | test | t/s |\n"
               "| --- | --- | --- | ---: | ---: | ---: |\n");
    bench_row r = {0};
    r.name = strrchr(model, '/');
    r.name = r.name && r.name[1] ? r.name + 1 : model;
    r.window = W;
    r.chunk = kiln_model_chunk(m);
    r.reps = reps;
    r.kv = kv_name;
    r.samples = samples;
    r.floor = floor;
    if (floor) kiln_model_decode_bytes(m, &r.stored, &r.resident);
    int first = 1;
    for (int ti = 0; ti < n_th && !rc; ti++) {
        r.threads = th[ti];
        /* measured once per thread count, before that count's sessions load the pool */
        if (floor && (st = kiln_read_bandwidth(th[ti], 0, &r.bw_gbs, &err))) {
            kiln_cli_error("bench: %s", err.message);
            rc = kiln_exit_code(st);
            break;
        }
        for (int mi = 0; mi < n_modes && !rc; mi++) {
            kiln_session_params sp = kiln_session_default_params();
            sp.device = device;
            sp.log = kiln_cli_log_stderr;
            sp.threads = th[ti];
            sp.mode = (kiln_mode)modes[mi];
            sp.kv = kv;
            /* ss[0] runs every test; the rest only join tg tests with -np above 1 */
            kiln_session *ss[KILN_BENCH_MAX_PARALLEL] = {0};
            for (int k = 0; k < max_np && !rc; k++)
                if ((st = kiln_session_new(m, &sp, &ss[k], &err))) {
                    kiln_cli_error("%s", err.message);
                    rc = kiln_exit_code(st);
                }
            if (!rc) {
                r.device = kiln_session_device(ss[0]);
                r.kernels = kiln_session_kernels(ss[0]);
                r.mode = modes[mi] == KILN_MODE_KV ? "kv" : "stateless";
            }
            for (int kind = 0; kind < 2 && !rc; kind++) {
                int *ns = kind == 0 ? pp : tg, cnt = kind == 0 ? n_pp : n_tg;
                for (int di = 0; di < n_dp && !rc; di++)
                    for (int k = 0; k < cnt && !rc; k++)
                        for (int pi = 0; pi < (kind == 0 ? 1 : n_np) && !rc; pi++) {
                            int n = ns[k], d = dp[di], p = kind == 0 ? 1 : np[pi];
                            if (n == 0) continue;
                            double sum = 0, sum2 = 0, secs;
                            /* one warm-up run: page in the weights, settle the thread pool */
                            for (int rep = -1; rep < reps && !st; rep++) {
                                st = p > 1 ? time_parallel(ss, p, ids, d, n, &secs, &err)
                                           : time_test(ss[0], kind, ids, d, n, &secs, &err);
                                if (rep < 0 || st) continue;
                                double ts = secs > 0 ? n / secs : 0;
                                samples[rep] = ts;
                                sum += ts;
                                sum2 += ts * ts;
                            }
                            if (st) {
                                kiln_cli_error("%s", err.message);
                                rc = kiln_exit_code(st);
                                break;
                            }
                            r.kind = kind;
                            r.n = n;
                            r.depth = d;
                            r.np = p;
                            r.kv_bytes = 0;
                            /* step i of a tg test attends d + i + 1 positions */
                            for (int i = 0; floor && kind == 1 && i < n; i++)
                                r.kv_bytes += (double)kiln_model_kv_bytes(m, kv, d + i + 1) / n;
                            r.avg = sum / reps;
                            double var =
                                reps > 1 ? (sum2 - reps * r.avg * r.avg) / (reps - 1) : 0;
                            r.sd = var > 0 ? sqrt(var) : 0;
                            print_row(&r, json, first);
                            first = 0;
                            fflush(stdout);
                        }
            }
            for (int k = 0; k < max_np; k++) kiln_session_free(ss[k]);
        }
    }
    if (json) printf("\n]\n");
    free(ids);
    free(samples);
    kiln_model_free(m);
    return rc;
}
