/* cmd_run.c — `kiln run` and `kiln chat`. */
#include <errno.h>
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
    const char *model, *prompt, *system, *tokenizer, *chat_template, *chat_kwargs, *device;
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
    else if (kiln_arg_value(argc, argv, i, "--chat-template-kwargs", NULL, &v, &bad)) {
        if (!bad && !kiln_arg_json_object("--chat-template-kwargs", v)) return -1;
        o->chat_kwargs = v;
    }
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
        if (bad) return -1;
        char *end;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        if (end == v || *end || errno || v[0] == '-') {
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
        static const char *const kv_types[] = {"f16", "f32", "q8_0", NULL}; /* kiln_kv_type order */
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


static int open_all(run_opts *o, kiln_model **m, kiln_session **s) {
    kiln_error err;
    o->mp.tokenizer = o->tokenizer;
    o->mp.log = kiln_cli_log_stderr;
    o->sp.device = o->device;
    o->sp.log = kiln_cli_log_stderr;
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
    o->gp.chat_template_kwargs = o->chat_kwargs;
    o->gp.cancel = &g_cancel;
    return 0;
}


static void print_ids(FILE *f, const int32_t *ids, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, "%s%d", i ? ", " : "", ids[i]);
    fputc(']', f);
}

static void print_metrics_line(const kiln_metrics *m) {
    char fb[96] = "", cached[48] = "";
    if (m->fallback && *m->fallback) snprintf(fb, sizeof fb, " (fallback: skipped %s)", m->fallback);
    if (m->cached_tokens)
        snprintf(cached, sizeof cached, " (%d cached, %d prefilled)", m->cached_tokens,
                 m->prompt_tokens - m->cached_tokens);
    fprintf(stderr,
            "\n[kiln] prompt %d tok%s, generated %d tok | TTFT %.1f ms | prefill %.1f tok/s | "
            "decode %.1f tok/s | latency p50 %.2f ms p95 %.2f ms | peak RSS %.0f MB | device %s%s "
            "| kernels %s | mode %s | threads %d | finish %s\n",
            m->prompt_tokens, cached, m->generated_tokens, m->ttft_ms, m->prefill_tps, m->decode_tps,
            m->p50_ms, m->p95_ms, m->peak_rss_mb, m->device, fb,
            m->kernels && *m->kernels ? m->kernels : "-", m->mode, m->threads,
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
            "  --chat-template-kwargs JSON  extra template variables, e.g.\n"
            "                       '{\"enable_thinking\": false}' (Qwen3: answer without thinking)\n"
            "  --max-tokens N       default 256 (-n)\n"
            "  --temp T             0 = greedy (default); sampling otherwise\n"
            "  --top-k K            default 40 (0 = the 512 most likely)\n"
            "  --top-p P            default 0.95      --min-p P   default 0.05\n"
            "  --repeat-penalty R   default 1 (off)   --seed S    default 0\n"
            "  --stop STRING        stop when STRING appears (repeatable, not printed)\n"
            "  --mode kv|stateless  static KV cache (default) or the old full-window scheme\n"
            "  --overflow stop|slide  at a full window: stop (finish 'length') or keep the sink\n"
            "                       tokens and roll the rest\n"
            "  --kv f16|f32|q8_0    the native cpu engine's KV cache (default f16; q8_0:\n"
            "                       Q8_0 rows, about half the bytes, head size a multiple of 32)\n"
            "  --device D           auto (NPU, then GPU through OpenVINO when the offering has\n"
            "                       its IR, else cpu) | cpu | npu | gpu | openvino:DEVICE;\n"
            "                       a named device that is missing exits 3\n"
            "  --no-fallback        with auto: a missing NPU is an error, not a fallback\n"
            "  --verify             check the device against the native cpu on a short prompt\n"
            "                       first; refuse it (auto: fall back) if the logits diverge\n"
            "  --openvino-lib PATH  libopenvino_c (else $KILN_OPENVINO_LIB, the openvino wheel)\n"
            "  --threads N          default: physical cores (-t)\n"
            "  --window W --chunk C contract for a source that is not an offering (an\n"
            "                       offering runs with the contract it was baked with)\n"
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
        kiln_cli_json_strn(stdout, r.text, r.text_len);
        printf(", \"prompt_tokens\": ");
        print_ids(stdout, r.prompt_ids, r.n_prompt);
        printf(", \"tokens\": ");
        print_ids(stdout, r.ids, r.n_ids);
        printf(", \"fallback\": \"%s\"", mt->fallback ? mt->fallback : "");
        printf(", \"finish_reason\": \"%s\", \"n_prompt\": %d, \"n_generated\": %d, "
               "\"ttft_ms\": %.3f, \"prefill_tps\": %.3f, \"decode_tps\": %.3f, "
               "\"latency_p50_ms\": %.3f, \"latency_p95_ms\": %.3f, \"total_ms\": %.3f, "
               "\"peak_rss_mb\": %.1f, \"device\": \"%s\", \"kernels\": \"%s\", \"mode\": \"%s\", "
               "\"threads\": %d, \"window\": %d, \"chunk\": %d}\n",
               mt->finish_reason, mt->prompt_tokens, mt->generated_tokens, mt->ttft_ms,
               mt->prefill_tps, mt->decode_tps, mt->p50_ms, mt->p95_ms, mt->total_ms,
               mt->peak_rss_mb, mt->device, mt->kernels ? mt->kernels : "", mt->mode,
               mt->threads, kiln_model_window(m),
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

enum { LINE_OK, LINE_END, LINE_TOO_LONG, LINE_NOMEM };

/* One whole line of input (any length up to max bytes, newline kept) into *buf, grown as
 * needed: LINE_OK; LINE_END at end of input or an interrupted read; LINE_TOO_LONG when the
 * line is longer than max (the rest of it is read and dropped, so it counts as one line). */
static int read_line(FILE *f, char **buf, size_t *cap, size_t max) {
    size_t len = 0;
    bool too_long = false;
    for (;;) {
        if (*cap - len < 2 && !too_long) {
            size_t nc = *cap ? *cap * 2 : 4096;
            char *nb = realloc(*buf, nc);
            if (!nb) return LINE_NOMEM;
            *buf = nb;
            *cap = nc;
        }
        size_t room = too_long ? *cap : *cap - len; /* past the limit: read into the start */
        char *at = too_long ? *buf : *buf + len;
        if (!fgets(at, (int)(room > INT32_MAX ? INT32_MAX : room), f)) {
            if (ferror(f)) return LINE_END; /* interrupted (Ctrl-C): the partial line is dropped */
            return too_long ? LINE_TOO_LONG : len ? LINE_OK : LINE_END;
        }
        size_t got = strlen(at);
        bool nl = got && at[got - 1] == '\n';
        if (!too_long) {
            len += got;
            if (len > max + 1 || (len > max && !nl)) too_long = true;
        }
        if (nl) return too_long ? LINE_TOO_LONG : LINE_OK;
    }
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
                   "new turn is prefilled (with --overflow slide too, once the conversation is\n"
                   "longer than the window). Each input line is one message, up to 8 MiB.\n"
                   "/reset forgets the conversation; Ctrl-C stops the current answer; Ctrl-D or\n"
                   "/quit leaves.\n");
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
    kiln_chat *chat = NULL;
    kiln_error cerr;
    if (kiln_chat_new(s, &chat, &cerr)) {
        kiln_cli_error("%s", cerr.message);
        kiln_session_free(s);
        kiln_model_free(m);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL); /* no SA_RESTART: Ctrl-C interrupts a read, not the program */
    o.gp.on_text = print_text;
    bool tty = isatty(0);
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        if (tty) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        g_cancel = 0;
        int got = read_line(stdin, &line, &cap, KILN_MAX_PROMPT_BYTES);
        if (got == LINE_NOMEM) {
            kiln_cli_error("chat: out of memory reading input");
            rc = 1;
            break;
        }
        if (got == LINE_END) {
            if (g_cancel && !feof(stdin)) {
                clearerr(stdin);
                fputc('\n', stdout);
                continue;
            }
            break;
        }
        if (got == LINE_TOO_LONG) {
            kiln_cli_error("input line longer than %u MiB (the most kiln takes); ignored",
                           KILN_MAX_PROMPT_BYTES >> 20);
            continue;
        }
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) continue;
        if (!kiln_arg_utf8_ok(line)) {
            kiln_cli_error("input is not valid UTF-8; ignored");
            continue;
        }
        if (strcmp(line, "/quit") == 0 || strcmp(line, "/exit") == 0) break;
        if (strcmp(line, "/reset") == 0) {
            kiln_chat_reset(chat);
            fputs("(conversation reset)\n", stdout);
            continue;
        }
        kiln_result r;
        kiln_error err;
        kiln_status st = kiln_chat_turn(chat, line, &o.gp, &r, &err);
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
    free(line);
    kiln_chat_free(chat);
    kiln_session_free(s);
    kiln_model_free(m);
    return rc;
}

