/* cmd_bake.c — `kiln bake` and `kiln inspect`. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "kiln.h"

static volatile sig_atomic_t g_interrupted;

static void on_sigint(int sig) {
    (void)sig;
    g_interrupted = 1;
}

typedef struct bar {
    bool tty;
    bool drawn;
} bar;

/* A one-line progress bar on a terminal; nothing when stderr is not a TTY. */
static int progress(const kiln_progress *p, void *user) {
    bar *b = user;
    if (b->tty) {
        double frac = p->bytes_total ? (double)p->bytes_done / (double)p->bytes_total : 1.0;
        double eta = frac > 0 ? p->seconds * (1.0 - frac) / frac : 0.0;
        char cells[31];
        int filled = (int)(frac * 30.0);
        for (int i = 0; i < 30; i++) cells[i] = i < filled ? '#' : '.';
        cells[30] = 0;
        fprintf(stderr, "\r[%s] %d/%d tensors  %.1f/%.1f MB  ETA %.0fs ", cells, p->tensors_done,
                p->tensors_total, (double)p->bytes_done / 1e6, (double)p->bytes_total / 1e6, eta);
        b->drawn = true;
    }
    return g_interrupted ? 1 : 0;
}

static void log_line(kiln_log_level level, const char *msg, void *user) {
    bar *b = user;
    if (level > KILN_LOG_WARN) return;
    if (b->drawn) {
        fputc('\n', stderr);
        b->drawn = false;
    }
    fprintf(stderr, "kiln: %s: %s\n", level == KILN_LOG_ERROR ? "error" : "warning", msg);
}

static void bake_usage(FILE *f) {
    fprintf(f,
            "usage: kiln bake SOURCE [-o DIR] [--quant SCHEME] [--window W] [--chunk C]\n"
            "                 [--sink S] [--target cpu|openvino|npu] [--group-size -1|128]\n"
            "                 [--quiet]\n"
            "       kiln bake --model_id ORG/NAME [...]\n"
            "       kiln bake --from-ir openvino_model.xml [-o DIR] [--window W] [--chunk C]\n\n"
            "SOURCE is a .gguf file, a Hugging Face model folder (config.json, *.safetensors,\n"
            "tokenizer.json), or ORG/NAME looked up in the local Hugging Face cache.\n\n"
            "  -o, --output DIR  offering directory (default offering_int4_binary)\n"
            "  --quant SCHEME    keep | q4_0 | q4_1 | q8_0 | int4_sym_g128 | f16\n"
            "                    (default: keep for a quantized source, q4_0 otherwise)\n"
            "  --window W        KV-cache capacity in tokens (default 1024)\n"
            "  --chunk C         prefill chunk width, 1 <= C <= W (default 128)\n"
            "  --sink S          tokens kept by --overflow slide (default 4)\n"
            "  --target T        cpu (default); openvino: also write openvino_model.xml/.bin\n"
            "                    (prefill) and openvino_decode.xml/.bin (decode), static shapes;\n"
            "                    npu: openvino, and int4_sym_g128 by default\n"
            "  --group-size G    int4 group of the OpenVINO weights: -1 per channel or 128,\n"
            "                    where the stored blocks allow it (default: the scheme's)\n"
            "  --from-ir XML     lock an OpenVINO IR exported with dynamic shapes (optimum-intel:\n"
            "                    input_ids, attention_mask, position_ids, beam_idx, 4-D past KV)\n"
            "                    to [1,C] tokens, [1,W+C] mask, [1,H,W,D] past KV\n"
            "  --quiet           no progress bar\n");
}

int kiln_cli_bake(int argc, char **argv) {
    kiln_bake_params p = kiln_bake_default_params();
    const char *source = NULL, *out = "offering_int4_binary", *v = NULL;
    bool bad = false, quiet = false, from_ir = false;
    for (int i = 1; i < argc && !bad; i++) {
        const char *a = argv[i];
        if (kiln_arg_is_help(a)) {
            bake_usage(stdout);
            return 0;
        } else if (kiln_arg_value(argc, argv, &i, "--output", "-o", &v, &bad) ||
                   kiln_arg_value(argc, argv, &i, "--output_dir", NULL, &v, &bad)) {
            out = v;
        } else if (kiln_arg_value(argc, argv, &i, "--model_id", NULL, &v, &bad)) {
            if (!bad && source) {
                kiln_cli_error("bake: give SOURCE or --model_id, not both");
                return 2;
            }
            source = v;
        } else if (kiln_arg_value(argc, argv, &i, "--from-ir", NULL, &v, &bad)) {
            if (!bad && source) {
                kiln_cli_error("bake: give SOURCE or --from-ir, not both");
                return 2;
            }
            source = v;
            from_ir = true;
        } else if (kiln_arg_value(argc, argv, &i, "--quant", NULL, &v, &bad)) {
            if (!bad && (kiln_quant_from_name(v, &p.quant) != KILN_OK ||
                         p.quant == KILN_QUANT_DEFAULT)) {
                kiln_cli_error("--quant: unknown scheme '%s' (keep, q4_0, q4_1, q8_0, "
                               "int4_sym_g128, f16)", v);
                return 2;
            }
        } else if (kiln_arg_value(argc, argv, &i, "--target", NULL, &v, &bad)) {
            static const char *const targets[] = {"cpu", "openvino", "npu", NULL}; /* enum order */
            int k;
            if (bad || !kiln_arg_choice("--target", v, targets, &k)) return 2;
            p.target = (kiln_target)k;
        } else if (kiln_arg_value(argc, argv, &i, "--group-size", NULL, &v, &bad)) {
            if (!bad && !kiln_arg_int("--group-size", v, -1, 4096, &p.group_size)) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--window", NULL, &v, &bad)) {
            if (!bad && !kiln_arg_int("--window", v, 1, 1 << 20, &p.window)) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--chunk", NULL, &v, &bad)) {
            if (!bad && !kiln_arg_int("--chunk", v, 1, 1 << 20, &p.chunk)) return 2;
        } else if (kiln_arg_value(argc, argv, &i, "--sink", NULL, &v, &bad)) {
            if (!bad && !kiln_arg_int("--sink", v, 0, 1 << 20, &p.sink)) return 2;
        } else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
            quiet = true;
        } else if (a[0] == '-' && a[1]) {
            kiln_cli_error("bake: unknown option '%s' (kiln bake --help)", a);
            return 2;
        } else if (source) {
            kiln_cli_error("bake: more than one SOURCE ('%s', '%s')", source, a);
            return 2;
        } else {
            source = a;
        }
    }
    if (bad) return 2;
    if (!source) {
        kiln_cli_error("bake: no SOURCE given");
        bake_usage(stderr);
        return 2;
    }
    if (p.chunk > p.window) {
        kiln_cli_error("--chunk %d is larger than --window %d", p.chunk, p.window);
        return 2;
    }
    if (p.sink >= p.window) {
        kiln_cli_error("--sink %d must be smaller than --window %d", p.sink, p.window);
        return 2;
    }
    bar b = {!quiet && isatty(2), false};
    p.progress = progress;
    p.progress_user = &b;
    p.log = log_line;
    p.log_user = &b;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    kiln_error err;
    kiln_status s = from_ir ? kiln_bake_from_ir(source, out, &p, &err)
                            : kiln_bake(source, out, &p, &err);
    if (b.drawn) fputc('\n', stderr);
    if (s != KILN_OK) {
        kiln_cli_error("%s", err.message);
        return kiln_exit_code(s);
    }
    fprintf(stderr, "kiln: baked %s -> %s/ (model.gguf, manifest.json)\n", source, out);
    return 0;
}

int kiln_cli_inspect(int argc, char **argv) {
    const char *path = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (kiln_arg_is_help(argv[i])) {
            printf("usage: kiln inspect OFFERING_OR_SOURCE [--json]\n\n"
                   "Prints every graph of the static contract with each input and output, its\n"
                   "dtype and fixed shape; the hyperparameters; quantization per tensor class;\n"
                   "the tokenizer; provenance; and the validation verdict. A source that is not\n"
                   "an offering is shown as a default bake would make it.\n\n"
                   "  --json   one JSON object (the same schema as manifest.json)\n");
            return 0;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            kiln_cli_error("inspect: unknown option '%s'", argv[i]);
            return 2;
        } else if (path) {
            kiln_cli_error("inspect: more than one path");
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        kiln_cli_error("inspect: no OFFERING_OR_SOURCE given (kiln inspect --help)");
        return 2;
    }
    char *text = NULL;
    kiln_error err;
    kiln_status s = kiln_describe(path, json ? KILN_DESCRIBE_JSON : KILN_DESCRIBE_TEXT, &text, &err);
    if (text) fputs(text, stdout);
    kiln_free(text);
    if (s) {
        kiln_cli_error("%s", err.message);
        return kiln_exit_code(s);
    }
    return 0;
}
