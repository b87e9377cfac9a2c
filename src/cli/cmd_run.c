/* cmd_run.c — `kiln run`, `kiln chat` and `kiln bench`. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "kiln.h"

static volatile int g_cancel;

static void on_sigint(int sig) {
    (void)sig;
    g_cancel = 1;
}

static int print_text(const char *text, size_t len, void *user) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

/* Options shared by run and chat. */
typedef struct run_opts {
    const char *model, *prompt, *system, *tokenizer, *chat_template, *device;
    kiln_model_params mp;
    kiln_session_params sp;
    kiln_generate_params gp;
    const char *stops[16];
    bool json;
} run_opts;

static bool parse_float(const char *opt, const char *v, double lo, double hi, float *out) {
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end || !(d >= lo && d <= hi)) {
        kiln_cli_error("%s: '%s' is not a number in [%g, %g]", opt, v, lo, hi);
        return false;
    }
    *out = (float)d;
    return true;
}

/* Returns 1 when argv[*i] was a shared option (consumed), 0 when not, -1 on a bad value. */
static int parse_common(int argc, char **argv, int *i, run_opts *o) {
    const char *v = NULL;
    bool bad = false;
    if (kiln_arg_value(argc, argv, i, "--system", NULL, &v, &bad)) o->system = v;
    else if (kiln_arg_value(argc, argv, i, "--tokenizer_id", NULL, &v, &bad)) o->tokenizer = v;
    else if (kiln_arg_value(argc, argv, i, "--chat-template", NULL, &v, &bad)) o->chat_template = v;
    else if (kiln_arg_value(argc, argv, i, "--max-tokens", "-n", &v, &bad)) {
        if (!bad && !kiln_arg_int("--max-tokens", v, 1, 1 << 24, &o->gp.max_tokens)) return -1;
    } else if (kiln_arg_value(argc, argv, i, "--temp", NULL, &v, &bad)) {
        if (!bad && !parse_float("--temp", v, 0, 100, &o->gp.sampling.temperature)) return -1;
    } else if (kiln_arg_value(argc, argv, i, "--top-k", NULL, &v, &bad)) {
        if (!bad && !kiln_arg_int("--top-k", v, 0, 1 << 24, &o->gp.sampling.top_k)) return -1;
    } else if (kiln_arg_value(argc, argv, i, "--top-p", NULL, &v, &bad)) {
        if (!bad && !parse_float("--top-p", v, 0, 1, &o->gp.sampling.top_p)) return -1;
    } else if (kiln_arg_value(argc, argv, i, "--min-p", NULL, &v, &bad)) {
        if (!bad && !parse_float("--min-p", v, 0, 1, &o->gp.sampling.min_p)) return -1;
    } else if (kiln_arg_value(argc, argv, i, "--repeat-penalty", NULL, &v, &bad)) {
        if (!bad && !parse_float("--repeat-penalty", v, 0.01, 100, &o->gp.sampling.repeat_penalty))
            return -1;
    } else if (kiln_arg_value(argc, argv, i, "--seed", NULL, &v, &bad)) {
        char *end;
        unsigned long long s = strtoull(v, &end, 10);
        if (!bad && (end == v || *end)) {
            kiln_cli_error("--seed: '%s' is not a non-negative integer", v);
            return -1;
        }
        o->gp.sampling.seed = s;
    } else if (kiln_arg_value(argc, argv, i, "--stop", NULL, &v, &bad)) {
        if (!bad) {
            if (o->gp.n_stop >= 16 || !*v) {
                kiln_cli_error("--stop: at most 16 non-empty stop strings");
                return -1;
            }
            o->stops[o->gp.n_stop++] = v;
        }
    } else if (kiln_arg_value(argc, argv, i, "--mode", NULL, &v, &bad)) {
        /* names in kiln_mode order */
        static const char *const modes[] = {"kv", "stateless", NULL};
        int k;
        if (bad || !kiln_arg_choice("--mode", v, modes, &k)) return -1;
        o->sp.mode = (kiln_mode)k;
    } else if (kiln_arg_value(argc, argv, i, "--overflow", NULL, &v, &bad)) {
        static const char *const policies[] = {"stop", "slide", NULL}; /* kiln_overflow order */
        int k;
        if (bad || !kiln_arg_choice("--overflow", v, policies, &k)) return -1;
        o->sp.overflow = (kiln_overflow)k;
    } else if (kiln_arg_value(argc, argv, i, "--kv", NULL, &v, &bad)) {
        static const char *const kv_types[] = {"f16", "f32", NULL}; /* kiln_kv_type order */
        int k;
        if (bad || !kiln_arg_choice("--kv", v, kv_types, &k)) return -1;
        o->sp.kv = (kiln_kv_type)k;
    } else if (kiln_arg_value(argc, argv, i, "--device", NULL, &v, &bad)) {
        o->device = v;
    } else if (kiln_arg_value(argc, argv, i, "--openvino-lib", NULL, &v, &bad)) {
        o->sp.openvino_lib = v;
    } else if (strcmp(argv[*i], "--no-fallback") == 0) {
        o->sp.no_fallback = 1;
    } else if (strcmp(argv[*i], "--verify") == 0) {
        o->sp.verify = 1;
    } else if (kiln_arg_value(argc, argv, i, "--threads", "-t", &v, &bad)) {
        if (!bad && !kiln_arg_int("--threads", v, 1, 1024, &o->sp.threads)) return -1;
    } else if (kiln_arg_value(argc, argv, i, "--window", NULL, &v, &bad)) {
        if (!bad && !kiln_arg_int("--window", v, 1, 1 << 20, &o->mp.window)) return -1;
    } else if (kiln_arg_value(argc, argv, i, "--chunk", NULL, &v, &bad)) {
        if (!bad && !kiln_arg_int("--chunk", v, 1, 1 << 20, &o->mp.chunk)) return -1;
    } else {
        return 0;
    }
    return bad ? -1 : 1;
}

static void init_opts(run_opts *o) {
    memset(o, 0, sizeof *o);
    o->mp = kiln_model_default_params();
    o->sp = kiln_session_default_params();
    o->sp.threads = 0; /* physical cores */
    o->gp = kiln_generate_default_params();
    o->gp.stop = o->stops;
    o->device = "auto";
}

static void log_stderr(kiln_log_level level, const char *msg, void *user) {
    (void)user;
    if (level <= KILN_LOG_INFO) fprintf(stderr, "kiln: %s\n", msg);
}

static int open_all(run_opts *o, kiln_model **m, kiln_session **s) {
    kiln_error err;
    o->mp.tokenizer = o->tokenizer;
    o->sp.device = o->device;
    o->sp.log = log_stderr;
    kiln_status st = kiln_model_open(o->model, &o->mp, m, &err);
    if (!st) st = kiln_session_new(*m, &o->sp, s, &err);
    if (st) {
        kiln_cli_error("%s", err.message);
        kiln_model_free(*m);
        *m = NULL;
        return kiln_exit_code(st);
    }
    o->gp.system = o->system;
    o->gp.chat_template = o->chat_template;
    o->gp.cancel = &g_cancel;
    return 0;
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void print_ids(FILE *f, const int32_t *ids, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, "%s%d", i ? ", " : "", ids[i]);
    fputc(']', f);
}

static void print_metrics_line(const kiln_metrics *m) {
    char fb[96] = "";
    if (m->fallback && *m->fallback) snprintf(fb, sizeof fb, " (fallback: skipped %s)", m->fallback);
    fprintf(stderr,
            "\n[kiln] prompt %d tok, generated %d tok | TTFT %.1f ms | prefill %.1f tok/s | "
            "decode %.1f tok/s | latency p50 %.2f ms p95 %.2f ms | peak RSS %.0f MB | device %s%s "
            "| mode %s | threads %d | finish %s\n",
            m->prompt_tokens, m->generated_tokens, m->ttft_ms, m->prefill_tps, m->decode_tps,
            m->p50_ms, m->p95_ms, m->peak_rss_mb, m->device, fb, m->mode, m->threads,
            m->finish_reason);
}

static void run_usage(FILE *f) {
    fprintf(f,
            "usage: kiln run OFFERING --prompt TEXT [options]\n"
            "       kiln run --model_xml PATH --tokenizer_id ID --prompt TEXT   (old flags)\n\n"
            "OFFERING is an offering directory or a file in it, or any source kiln bake reads\n"
            "(used with its weights as they are and the default contract).\n"
            "Streams the answer to stdout; a metrics line goes to stderr.\n\n"
            "  --prompt TEXT        the user message (or the whole prompt with --raw)\n"
            "  --system TEXT        system message for the chat template\n"
            "  --raw                no chat template (BOS as the model wants)\n"
            "  --chat-template NAME chatml | llama2 | mistral | zephyr | neural-chat | llama3 | gemma\n"
            "  --max-tokens N       default 256 (-n)\n"
            "  --temp T             0 = greedy (default); sampling otherwise\n"
            "  --top-k K            default 40 (0 = the 512 most likely)\n"
            "  --top-p P            default 0.95      --min-p P   default 0.05\n"
            "  --repeat-penalty R   default 1 (off)   --seed S    default 0\n"
            "  --stop STRING        stop when STRING appears (repeatable, not printed)\n"
            "  --mode kv|stateless  static KV cache (default) or the old full-window scheme\n"
            "  --overflow stop|slide  at a full window: stop (finish 'length') or keep the sink\n"
            "                       tokens and roll the rest\n"
            "  --kv f16|f32         the native cpu engine's KV cache (default f16)\n"
            "  --device D           auto (NPU, then GPU through OpenVINO when the offering has\n"
            "                       its IR, else cpu) | cpu | npu | gpu | openvino:DEVICE;\n"
            "                       a named device that is missing exits 3\n"
            "  --no-fallback        with auto: a missing NPU is an error, not a fallback\n"
            "  --verify             check the device against the native cpu on a short prompt\n"
            "                       first; refuse it (auto: fall back) if the logits diverge\n"
            "  --openvino-lib PATH  libopenvino_c (else $KILN_OPENVINO_LIB, the openvino wheel)\n"
            "  --threads N          default: physical cores (-t)\n"
            "  --window W --chunk C contract for a source that is not an offering\n"
            "  --tokenizer_id ID    use another tokenizer (HF folder or cached ORG/NAME)\n"
            "  --json               one JSON object: text, ids and every metric\n");
}

int kiln_cli_run(int argc, char **argv) {
    run_opts o;
    init_opts(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        bool bad = false;
        if (kiln_arg_is_help(a)) {
            run_usage(stdout);
            return 0;
        }
        int c = parse_common(argc, argv, &i, &o);
        if (c < 0) return 2;
        if (c > 0) continue;
        if (kiln_arg_value(argc, argv, &i, "--prompt", "-p", &v, &bad)) o.prompt = v;
        else if (kiln_arg_value(argc, argv, &i, "--model_xml", NULL, &v, &bad)) o.model = v;
        else if (strcmp(a, "--raw") == 0) o.gp.raw = 1;
        else if (strcmp(a, "--json") == 0) o.json = true;
        else if (a[0] == '-' && a[1]) {
            kiln_cli_error("run: unknown option '%s' (kiln run --help)", a);
            return 2;
        } else if (o.model) {
            kiln_cli_error("run: more than one OFFERING ('%s', '%s')", o.model, a);
            return 2;
        } else {
            o.model = a;
        }
        if (bad) return 2;
    }
    if (!o.model) {
        kiln_cli_error("run: no OFFERING given (kiln run --help)");
        return 2;
    }
    if (!o.prompt) {
        kiln_cli_error("run: --prompt is required");
        return 2;
    }
    if (!*o.prompt) {
        kiln_cli_error("--prompt: the prompt is empty");
        return 2;
    }
    if (!kiln_arg_utf8_ok(o.prompt) || (o.system && !kiln_arg_utf8_ok(o.system))) {
        kiln_cli_error("%s: not valid UTF-8", kiln_arg_utf8_ok(o.prompt) ? "--system" : "--prompt");
        return 2;
    }
    kiln_model *m = NULL;
    kiln_session *s = NULL;
    int rc = open_all(&o, &m, &s);
    if (rc) return rc;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    if (!o.json) o.gp.on_text = print_text;
    kiln_result r;
    kiln_error err;
    kiln_status st = kiln_generate(s, o.prompt, &o.gp, &r, &err);
    if (st) {
        kiln_cli_error("%s", err.message);
        rc = kiln_exit_code(st);
    } else if (o.json) {
        const kiln_metrics *mt = &r.metrics;
        printf("{\"text\": ");
        json_str(stdout, r.text);
        printf(", \"prompt_tokens\": ");
        print_ids(stdout, r.prompt_ids, r.n_prompt);
        printf(", \"tokens\": ");
        print_ids(stdout, r.ids, r.n_ids);
        printf(", \"fallback\": \"%s\"", mt->fallback ? mt->fallback : "");
        printf(", \"finish_reason\": \"%s\", \"n_prompt\": %d, \"n_generated\": %d, "
               "\"ttft_ms\": %.3f, \"prefill_tps\": %.3f, \"decode_tps\": %.3f, "
               "\"latency_p50_ms\": %.3f, \"latency_p95_ms\": %.3f, \"total_ms\": %.3f, "
               "\"peak_rss_mb\": %.1f, \"device\": \"%s\", \"mode\": \"%s\", \"threads\": %d, "
               "\"window\": %d, \"chunk\": %d}\n",
               mt->finish_reason, mt->prompt_tokens, mt->generated_tokens, mt->ttft_ms,
               mt->prefill_tps, mt->decode_tps, mt->p50_ms, mt->p95_ms, mt->total_ms,
               mt->peak_rss_mb, mt->device, mt->mode, mt->threads, kiln_model_window(m),
               kiln_model_chunk(m));
    } else {
        fputc('\n', stdout);
        fflush(stdout);
        print_metrics_line(&r.metrics);
    }
    if (!st) kiln_result_free(&r);
    kiln_session_free(s);
    kiln_model_free(m);
    return rc;
}

int kiln_cli_chat(int argc, char **argv) {
    run_opts o;
    init_opts(&o);
    o.gp.max_tokens = 512;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (kiln_arg_is_help(a)) {
            printf("usage: kiln chat OFFERING [options of kiln run]\n\n"
                   "Multi-turn chat on a terminal. The KV cache is kept between turns: only the\n"
                   "new turn is prefilled. /reset forgets the conversation; Ctrl-C stops the\n"
                   "current answer; Ctrl-D or /quit leaves.\n");
            return 0;
        }
        int c = parse_common(argc, argv, &i, &o);
        if (c < 0) return 2;
        if (c > 0) continue;
        if (a[0] == '-' && a[1]) {
            kiln_cli_error("chat: unknown option '%s' (kiln chat --help)", a);
            return 2;
        }
        if (o.model) {
            kiln_cli_error("chat: more than one OFFERING");
            return 2;
        }
        o.model = a;
    }
    if (!o.model) {
        kiln_cli_error("chat: no OFFERING given (kiln chat --help)");
        return 2;
    }
    kiln_model *m = NULL;
    kiln_session *s = NULL;
    int rc = open_all(&o, &m, &s);
    if (rc) return rc;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL); /* no SA_RESTART: Ctrl-C interrupts a read, not the program */
    o.gp.on_text = print_text;
    bool tty = isatty(0);
    char line[8192];
    for (;;) {
        if (tty) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        g_cancel = 0;
        if (!fgets(line, sizeof line, stdin)) {
            if (g_cancel && !feof(stdin)) {
                clearerr(stdin);
                fputc('\n', stdout);
                continue;
            }
            break;
        }
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) continue;
        if (!kiln_arg_utf8_ok(line)) {
            kiln_cli_error("input is not valid UTF-8; ignored");
            continue;
        }
        if (strcmp(line, "/quit") == 0 || strcmp(line, "/exit") == 0) break;
        if (strcmp(line, "/reset") == 0) {
            kiln_session_reset(s);
            fputs("(conversation reset)\n", stdout);
            continue;
        }
        kiln_result r;
        kiln_error err;
        kiln_status st = kiln_chat_turn(s, line, &o.gp, &r, &err);
        if (st) {
            kiln_cli_error("%s", err.message);
            if (st != KILN_ERR_INVALID_ARG) {
                rc = kiln_exit_code(st);
                break;
            }
            continue;
        }
        fputc('\n', stdout);
        print_metrics_line(&r.metrics);
        kiln_result_free(&r);
    }
    kiln_session_free(s);
    kiln_model_free(m);
    return rc;
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
    bool json = false;
    run_opts o;
    init_opts(&o);
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
        } else if (kiln_arg_value(argc, argv, &i, "--device", NULL, &v, &bad)) {
            o.device = v;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (a[0] == '-' && a[1]) {
            kiln_cli_error("bench: unknown option '%s' (kiln bench --help)", a);
            return 2;
        } else {
            model = a;
        }
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
            sp.device = o.device;
            sp.log = log_stderr;
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
                    st = kind == 0 ? kiln_bench_prefill(s, n, &secs, &err)
                                   : kiln_bench_decode(s, n, &secs, &err);
                    for (int r = 0; r < reps && !st; r++) {
                        st = kind == 0 ? kiln_bench_prefill(s, n, &secs, &err)
                                       : kiln_bench_decode(s, n, &secs, &err);
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
                        json_str(stdout, name);
                        printf(", \"backend\": \"%s\", \"mode\": \"%s\", \"window\": %d, "
                               "\"chunk\": %d, \"n_prompt\": %d, \"n_gen\": %d, "
                               "\"n_threads\": %d, \"type_k\": \"%s\", \"type_v\": \"%s\", "
                               "\"repetitions\": %d, \"avg_ts\": %.3f, \"stddev_ts\": %.3f}",
                               kiln_session_device(s), mode, kiln_model_window(m), kiln_model_chunk(m),
                               kind == 0 ? n : 0, kind == 1 ? n : 0, th[ti], kv == KILN_KV_F32 ? "f32" : "f16",
                               kv == KILN_KV_F32 ? "f32" : "f16", reps, avg, sd);
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
