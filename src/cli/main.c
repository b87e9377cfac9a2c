/* main.c — the kiln command: dispatch to subcommands. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "kiln.h"

void kiln_cli_error(const char *fmt, ...) {
    va_list ap;
    fputs("kiln: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *what;
} k_cmds[] = {
    {"bake", kiln_cli_bake, "bake a checkpoint into a static-shape offering"},
    {"inspect", kiln_cli_inspect, "show an offering's (or a source's) static contract"},
    {"run", kiln_cli_run, "generate text with fixed-shape calls (streams; metrics on stderr)"},
    {"chat", kiln_cli_chat, "multi-turn chat keeping the KV cache between turns"},
    {"bench", kiln_cli_bench, "prefill and decode tokens/s, like llama-bench"},
    {"tokenize", kiln_cli_tokenize, "text -> token ids with a model's tokenizer"},
    {"detokenize", kiln_cli_detokenize, "token ids -> text"},
};

static void usage(FILE *f) {
    fprintf(f, "kiln %s — bake LLMs into static-shape int4 offerings and run them\n\n"
               "usage: kiln COMMAND [ARGS]   (kiln COMMAND --help for each)\n\ncommands:\n",
            KILN_VERSION);
    for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
        fprintf(f, "  %-11s %s\n", k_cmds[i].name, k_cmds[i].what);
    fprintf(f, "\nexit status: 0 ok, 2 bad input or usage, 3 device unavailable, 130 interrupted\n"
               "(Ctrl-C), 1 anything else (a failed write included)\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        if (argc > 2 && strcmp(argv[1], "help") == 0) {
            for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
                if (strcmp(argv[2], k_cmds[i].name) == 0) {
                    char *args[] = {argv[2], "--help", NULL};
                    return k_cmds[i].fn(2, args);
                }
        }
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        /* The second line is what a bug report needs about this CPU: the kernel tables it can
         * run and the one kiln will use (KILN_KERNELS picks another). */
        const char *usable, *chosen;
        kiln_error err;
        kiln_status st = kiln_cpu_kernels(&usable, &chosen, &err);
        printf("kiln %s\ncpu kernels: %s (usable here: %s)\n", KILN_VERSION,
               st ? "none" : chosen, usable);
        if (st) {
            kiln_cli_error("%s", err.message);
            return 2;
        }
        return 0;
    }
    for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
        if (strcmp(argv[1], k_cmds[i].name) == 0) return k_cmds[i].fn(argc - 1, argv + 1);
    kiln_cli_error("unknown command '%s' (kiln --help lists them)", argv[1]);
    return 2;
}
