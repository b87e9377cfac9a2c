/* cmd_bench.c — `kiln bench`: prompt processing and text generation in tokens/s, timed around
 * fixed-shape calls of the public API (kiln_session_feed), as llama-bench times llama_decode. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "cli.h"
#include "kiln.h"

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

/* One prefill of n random tokens from an empty cache. */
static kiln_status time_prefill(kiln_session *s, const kiln_model *m, int n, double *secs,
                                kiln_error *err) {
    int W = kiln_model_window(m);
    if (n < 1 || n > W) {
        snprintf(err->message, sizeof err->message, "-p %d must be in [1, window %d]", n, W);
        return err->code = KILN_ERR_INVALID_ARG;
    }
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    if (!ids) {
        snprintf(err->message, sizeof err->message, "out of memory");
        return err->code = KILN_ERR_NOMEM;
    }
    fill_random(ids, n, kiln_model_n_vocab(m));
    kiln_session_reset(s);
    const float *logits;
    double t0 = now_seconds();
    kiln_status st = kiln_session_feed(s, ids, n, 0, &logits, err);
    *secs = now_seconds() - t0;
    free(ids);
    return st;
}

/* n decode steps, one token each, from an empty cache (stateless: each step one window). */
static kiln_status time_decode(kiln_session *s, const kiln_model *m, int n, double *secs,
                               kiln_error *err) {
    int W = kiln_model_window(m);
    if (n < 1 || n >= W) {
        snprintf(err->message, sizeof err->message, "-n %d must be in [1, window %d)", n, W);
        return err->code = KILN_ERR_INVALID_ARG;
    }
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    if (!ids) {
        snprintf(err->message, sizeof err->message, "out of memory");
        return err->code = KILN_ERR_NOMEM;
    }
    fill_random(ids, n, kiln_model_n_vocab(m));
    kiln_session_reset(s);
    const float *logits;
    kiln_status st = KILN_OK;
    double t0 = now_seconds();
    for (int i = 0; i < n && !st; i++) st = kiln_session_feed(s, ids + i, 1, i, &logits, err);
    *secs = now_seconds() - t0;
    free(ids);
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

int kiln_cli_bench(int argc, char **argv) {
    const char *model = NULL, *v = NULL;
    int pp[16] = {128, 512}, n_pp = 2, tg[16] = {128}, n_tg = 1, th[16] = {1, 2}, n_th = 2;
    int modes[2] = {KILN_MODE_KV}, n_modes = 1, reps = 3;
    kiln_kv_type kv = KILN_KV_F16;
    const char *kv_name = "f16";
    bool json = false;
    const char *device = "auto";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool bad = false;
        if (kiln_arg_is_help(a)) {
            printf("usage: kiln bench OFFERING [-p 128,512] [-n 128] [-t 1,2] [--mode kv,stateless]\n"
                   "                  [--kv f16|f32] [-r REPS] [--json]\n\n"
                   "Prompt processing (pp: one prefill of N tokens in [1,C] chunks) and text\n"
                   "generation (tg: N decode steps) in tokens/s, like llama-bench: each test is\n"
                   "repeated REPS times (default 3) and reported as mean and standard deviation.\n"
                   "0 in -p or -n skips that test. --json prints llama-bench's fields (n_prompt,\n"
                   "n_gen, n_threads, avg_ts, stddev_ts, type_k, type_v) plus mode and window.\n"
                   "--kv: the native cpu engine's KV cache (default f16).\n");
            return 0;
        }
        if (kiln_arg_value(argc, argv, &i, "-p", "--n-prompt", &v, &bad)) {
            if (bad || (n_pp = parse_list("-p", v, pp, 16, 1 << 20)) < 0) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "-n", "--n-gen", &v, &bad)) {
            if (bad || (n_tg = parse_list("-n", v, tg, 16, 1 << 20)) < 0) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "-t", "--threads", &v, &bad)) {
            if (bad || (n_th = parse_list("-t", v, th, 16, 1024)) < 0) return 2;
            for (int k = 0; k < n_th; k++)
                if (th[k] < 1) {
                    kiln_cli_error("-t: threads must be >= 1");
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
            static const char *const kv_types[] = {"f16", "f32", NULL}; /* kiln_kv_type order */
            int k;
            if (bad || !kiln_arg_choice("--kv", v, kv_types, &k)) return 2;
            kv = (kiln_kv_type)k;
            kv_name = kv_types[k];
        } else if (kiln_arg_value(argc, argv, &i, "--device", NULL, &v, &bad)) {
            if (bad) return 2;
            device = v;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
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
    kiln_status st = kiln_model_open(model, NULL, &m, &err);
    if (st) {
        kiln_cli_error("%s", err.message);
        return kiln_exit_code(st);
    }
    if (json) printf("[\n");
    else
        printf("| model | backend | mode | threads | test | t/s |\n"
               "| --- | --- | --- | ---: | ---: | ---: |\n");
    const char *name = strrchr(model, '/');
    name = name && name[1] ? name + 1 : model;
    int first = 1;
    for (int mi = 0; mi < n_modes && !rc; mi++)
        for (int ti = 0; ti < n_th && !rc; ti++) {
            kiln_session_params sp = kiln_session_default_params();
            sp.device = device;
            sp.log = kiln_cli_log_stderr;
            sp.threads = th[ti];
            sp.mode = (kiln_mode)modes[mi];
            sp.kv = kv;
            kiln_session *s = NULL;
            if ((st = kiln_session_new(m, &sp, &s, &err))) {
                kiln_cli_error("%s", err.message);
                rc = kiln_exit_code(st);
                break;
            }
            for (int kind = 0; kind < 2 && !rc; kind++) {
                int *ns = kind == 0 ? pp : tg, cnt = kind == 0 ? n_pp : n_tg;
                for (int k = 0; k < cnt && !rc; k++) {
                    int n = ns[k];
                    if (n == 0) continue;
                    double sum = 0, sum2 = 0, secs;
                    /* one warm-up run: page in the weights, settle the thread pool */
                    st = kind == 0 ? time_prefill(s, m, n, &secs, &err)
                                   : time_decode(s, m, n, &secs, &err);
                    for (int r = 0; r < reps && !st; r++) {
                        st = kind == 0 ? time_prefill(s, m, n, &secs, &err)
                                       : time_decode(s, m, n, &secs, &err);
                        double ts = n / secs;
                        sum += ts;
                        sum2 += ts * ts;
                    }
                    if (st) {
                        kiln_cli_error("%s", err.message);
                        rc = kiln_exit_code(st);
                        break;
                    }
                    double avg = sum / reps;
                    double var = reps > 1 ? (sum2 - reps * avg * avg) / (reps - 1) : 0;
                    double sd = var > 0 ? sqrt(var) : 0;
                    const char *mode = modes[mi] == KILN_MODE_KV ? "kv" : "stateless";
                    if (json) {
                        printf("%s  {\"model\": ", first ? "" : ",\n");
                        kiln_cli_json_str(stdout, name);
                        printf(", \"backend\": \"%s\", \"kernels\": \"%s\", \"mode\": \"%s\", "
                               "\"window\": %d, \"chunk\": %d, \"n_prompt\": %d, \"n_gen\": %d, "
                               "\"n_threads\": %d, \"type_k\": \"%s\", \"type_v\": \"%s\", "
                               "\"repetitions\": %d, \"avg_ts\": %.3f, \"stddev_ts\": %.3f}",
                               kiln_session_device(s), kiln_session_kernels(s), mode,
                               kiln_model_window(m), kiln_model_chunk(m),
                               kind == 0 ? n : 0, kind == 1 ? n : 0, th[ti], kv_name, kv_name,
                               reps, avg, sd);
                        first = 0;
                    } else {
                        printf("| %s | %s | %s | %d | %s%d | %.2f ± %.2f |\n", name,
                               kiln_session_device(s), mode, th[ti],
                               kind == 0 ? "pp" : "tg", n, avg, sd);
                    }
                    fflush(stdout);
                }
            }
            kiln_session_free(s);
        }
    if (json) printf("\n]\n");
    kiln_model_free(m);
    return rc;
}
