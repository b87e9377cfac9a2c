/* cmd_serve.c — `kiln serve`: options and --help; the server itself is src/serve/. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "kiln.h"
#include "serve/serve.h"

static void serve_usage(FILE *f) {
    fprintf(f,
        "usage: kiln serve OFFERING [options]\n\n"
        "An OpenAI-compatible HTTP server. A supervisor process owns the port and runs the\n"
        "inference worker as a child: if the worker dies or misses its heartbeat, requests in\n"
        "flight get a 503 naming why, /health says 503, and the worker is restarted (backoff).\n\n"
        "endpoints: POST /v1/chat/completions, POST /v1/completions (stream: SSE), GET /v1/models,\n"
        "           GET /health (200 ready, 503 loading/restarting/draining), GET /metrics\n\n"
        "  --host H             address to bind (default 127.0.0.1; 0.0.0.0 or :: for all)\n"
        "  --port P             default 8080; 0 picks a free port (printed on stderr)\n"
        "  --alias NAME         the model id clients send (default: OFFERING's last part)\n"
        "  --api-key KEY        require 'Authorization: Bearer KEY' on /v1/ (also $KILN_API_KEY)\n"
        "  --parallel N         slots: sessions on the one model, each with its KV cache\n"
        "                       (default 4); a request goes to the free slot whose cache shares\n"
        "                       the longest prefix with it (only the rest is prefilled)\n"
        "  --queue N            requests waiting for a slot (default 64); more get 429\n"
        "  --threads N          CPU threads (default: physical cores), shared by the slots,\n"
        "                       whose decode steps run as one batched pass (-t)\n"
        "  --max-tokens N       default and cap of a request's max_tokens (default: the window)\n"
        "  --max-body BYTES     largest request body (default 16777216); larger: 413\n"
        "  --watchdog S         restart a worker that answers no heartbeat for S seconds\n"
        "                       (default 30; 0 = off)\n"
        "  --drain-timeout S    on SIGTERM, wait up to S seconds for requests in flight\n"
        "                       (default 60), then exit 0\n"
        "  --verbose            one stderr line per request\n"
        "  defaults of a request that does not say (as kiln run):\n"
        "  --temp T --top-k K --top-p P --min-p P --repeat-penalty R\n"
        "  --chat-template NAME chatml | llama2 | mistral | zephyr | neural-chat | llama3 | gemma\n"
        "  --chat-template-kwargs JSON  extra template variables (a request's own\n"
        "                       chat_template_kwargs members win), e.g. '{\"enable_thinking\": false}'\n"
        "  the model, as kiln run opens it:\n"
        "  --device D --no-fallback --verify --openvino-lib PATH --mode kv|stateless\n"
        "  --overflow stop|slide --window W --chunk C --tokenizer_id ID\n\n"
        "A prompt longer than the window is a 400 naming the limit (--overflow stop).\n"
        "SIGTERM (and Ctrl-C) stop taking requests, finish those in flight, then exit (0; 130\n"
        "after Ctrl-C). Exit status 2 for bad options or an OFFERING the worker cannot open,\n"
        "3 for a missing device, 1 when the port cannot be bound.\n");
}

static bool parse_real(const char *opt, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (end == v || *end || errno || !(d >= lo && d <= hi)) {
        kiln_cli_error("%s: '%s' is not a number in [%g, %g]", opt, v, lo, hi);
        return false;
    }
    *out = d;
    return true;
}

static bool parse_float(const char *opt, const char *v, double lo, double hi, float *out) {
    double d;
    if (!parse_real(opt, v, lo, hi, &d)) return false;
    *out = (float)d;
    return true;
}

/* Parses argv (argv[0] = "serve"). Returns -1 to go on, else an exit status (0 after --help,
 * 2 after a one-line error). */
static int sv_parse_options(int argc, char **argv, sv_options *o) {
    memset(o, 0, sizeof *o);
    kiln_generate_params gp = kiln_generate_default_params();
    o->sampling = gp.sampling;
    o->host = "127.0.0.1";
    o->port = 8080;
    o->parallel = 4;
    o->queue = 64;
    o->max_body = 16u << 20;
    o->watchdog = 30;
    o->drain_timeout = 60;
    o->device = "auto";
    o->worker_fd = -1;
    o->exit_code = kiln_exit_code;
    const char *env_key = getenv("KILN_API_KEY");
    if (env_key && *env_key) o->api_key = env_key;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        bool bad = false;
        if (kiln_arg_is_help(a)) {
            serve_usage(stdout);
            return 0;
        }
        int k;
        if (kiln_arg_value(argc, argv, &i, "--host", NULL, &v, &bad)) {
            o->host = v;
        } else if (kiln_arg_value(argc, argv, &i, "--port", NULL, &v, &bad)) {
            if (!bad && !kiln_arg_int("--port", v, 0, 65535, &o->port)) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--alias", NULL, &v, &bad)) {
            if (!bad && !*v) {
                kiln_cli_error("--alias: the name is empty");
                return 2;
            }
            o->alias = v;
        } else if (kiln_arg_value(argc, argv, &i, "--api-key", NULL, &v, &bad)) {
            o->api_key = v;
        } else if (kiln_arg_value(argc, argv, &i, "--parallel", "-np", &v, &bad)) {
            if (!bad && !kiln_arg_int("--parallel", v, 1, 256, &o->parallel)) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--queue", NULL, &v, &bad)) {
            if (!bad && !kiln_arg_int("--queue", v, 0, 1 << 20, &o->queue)) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--threads", "-t", &v, &bad)) {
            if (!bad && !kiln_arg_int("--threads", v, 1, 1024, &o->threads)) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--max-tokens", "-n", &v, &bad)) {
            if (!bad && !kiln_arg_int("--max-tokens", v, 1, 1 << 24, &o->max_tokens)) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--max-body", NULL, &v, &bad)) {
            int n;
            if (!bad && !kiln_arg_int("--max-body", v, 1024, 1 << 30, &n)) return 2;
            if (!bad) o->max_body = (size_t)n;
        } else if (kiln_arg_value(argc, argv, &i, "--watchdog", NULL, &v, &bad)) {
            if (!bad && !parse_real("--watchdog", v, 0, 86400, &o->watchdog)) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--drain-timeout", NULL, &v, &bad)) {
            if (!bad && !parse_real("--drain-timeout", v, 0, 86400, &o->drain_timeout)) return 2;
        } else if (strcmp(a, "--verbose") == 0 || strcmp(a, "-v") == 0) {
            o->verbose = true;
        } else if (kiln_arg_value(argc, argv, &i, "--temp", NULL, &v, &bad)) {
            if (!bad && !parse_float("--temp", v, 0, 2, &o->sampling.temperature)) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--top-k", NULL, &v, &bad)) {
            if (!bad && !kiln_arg_int("--top-k", v, 0, 1 << 24, &o->sampling.top_k)) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--top-p", NULL, &v, &bad)) {
            if (!bad && !parse_float("--top-p", v, 0, 1, &o->sampling.top_p)) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--min-p", NULL, &v, &bad)) {
            if (!bad && !parse_float("--min-p", v, 0, 1, &o->sampling.min_p)) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--repeat-penalty", NULL, &v, &bad)) {
            if (!bad && !parse_float("--repeat-penalty", v, 0.01, 100, &o->sampling.repeat_penalty))
                return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--chat-template", NULL, &v, &bad)) {
            o->chat_template = v;
        } else if (kiln_arg_value(argc, argv, &i, "--chat-template-kwargs", NULL, &v, &bad)) {
            if (!bad && !kiln_arg_json_object("--chat-template-kwargs", v)) return 2;
            o->chat_template_kwargs = v;
        } else if (kiln_arg_value(argc, argv, &i, "--device", NULL, &v, &bad)) {
            o->device = v;
        } else if (kiln_arg_value(argc, argv, &i, "--openvino-lib", NULL, &v, &bad)) {
            o->openvino_lib = v;
        } else if (kiln_arg_value(argc, argv, &i, "--tokenizer_id", NULL, &v, &bad)) {
            o->tokenizer = v;
        } else if (strcmp(a, "--no-fallback") == 0) {
            o->no_fallback = 1;
        } else if (strcmp(a, "--verify") == 0) {
            o->verify = 1;
        } else if (kiln_arg_value(argc, argv, &i, "--mode", NULL, &v, &bad)) {
            static const char *const modes[] = {"kv", "stateless", NULL}; /* kiln_mode order */
            if (bad || !kiln_arg_choice("--mode", v, modes, &k)) return 2;
            o->mode = (kiln_mode)k;
        } else if (kiln_arg_value(argc, argv, &i, "--overflow", NULL, &v, &bad)) {
            static const char *const pol[] = {"stop", "slide", NULL}; /* kiln_overflow order */
            if (bad || !kiln_arg_choice("--overflow", v, pol, &k)) return 2;
            o->overflow = (kiln_overflow)k;
        } else if (kiln_arg_value(argc, argv, &i, "--window", NULL, &v, &bad)) {
            if (!bad && !kiln_arg_int("--window", v, 1, 1 << 20, &o->window)) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--chunk", NULL, &v, &bad)) {
            if (!bad && !kiln_arg_int("--chunk", v, 1, 1 << 20, &o->chunk)) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--worker-fd", NULL, &v, &bad)) {
            /* internal: the supervisor starts the worker with the socket it talks over */
            if (!bad && !kiln_arg_int("--worker-fd", v, 0, 1 << 20, &o->worker_fd)) return 2;
        } else if (a[0] == '-' && a[1]) {
            kiln_cli_error("serve: unknown option '%s' (kiln serve --help)", a);
            return 2;
        } else if (o->model) {
            kiln_cli_error("serve: more than one OFFERING ('%s', '%s')", o->model, a);
            return 2;
        } else {
            o->model = a;
        }
        if (bad) return 2;
    }
    if (!o->model) {
        kiln_cli_error("serve: no OFFERING given (kiln serve --help)");
        return 2;
    }
    if (o->api_key && !*o->api_key) {
        kiln_cli_error("--api-key: the key is empty");
        return 2;
    }
    return -1;
}

int kiln_cli_serve(int argc, char **argv) {
    sv_options o;
    int rc = sv_parse_options(argc, argv, &o);
    if (rc >= 0) return rc;
    if (o.worker_fd >= 0) return sv_worker_main(&o);
    return sv_supervisor_main(&o, argc, argv);
}
