/* cmd_tokenize.c — `kiln tokenize` and `kiln detokenize`: the tokenizer of an offering, a GGUF
 * or a Hugging Face folder, from the command line. Uses only kiln.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "kiln.h"

static const char k_tok_usage[] =
    "usage: kiln tokenize SOURCE (--text TEXT | --file PATH) [--bos] [--special] [--json]\n"
    "\n"
    "Prints the token ids of TEXT (or of the bytes of PATH) on one line, space separated.\n"
    "SOURCE is an offering directory, a .gguf file (vocab-only files too) or a Hugging Face\n"
    "folder with tokenizer.json.\n"
    "\n"
    "  --text TEXT   the text to encode\n"
    "  --file PATH   encode the contents of PATH ('-' for standard input)\n"
    "  --bos         prepend the BOS token (none is added otherwise)\n"
    "  --special     match special tokens such as <|im_start|> written in the text\n"
    "  --json        print {\"ids\": [...]} instead\n";

static const char k_detok_usage[] =
    "usage: kiln detokenize SOURCE [--special] ID...\n"
    "\n"
    "Prints the text of the token ids (given as arguments, separated by spaces or commas),\n"
    "followed by a newline. Special tokens print as nothing unless --special is given.\n";

static char *read_file(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (n < cap) {
            if (ferror(f)) {
                free(b);
                b = NULL;
            }
            break;
        }
        char *nb = realloc(b, cap * 2);
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    if (f != stdin) fclose(f);
    *len = n;
    return b;
}

int kiln_cli_tokenize(int argc, char **argv) {
    const char *source = NULL, *text = NULL, *file = NULL;
    int bos = 0, special = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        bool bad = false;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(k_tok_usage, stdout);
            return 0;
        } else if (kiln_arg_value(argc, argv, &i, "--text", NULL, &v, &bad)) {
            if (bad) return 2;
            text = v;
        } else if (kiln_arg_value(argc, argv, &i, "--file", NULL, &v, &bad)) {
            if (bad) return 2;
            file = v;
        } else if (!strcmp(a, "--bos")) {
            bos = 1;
        } else if (!strcmp(a, "--special")) {
            special = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (a[0] == '-' && a[1]) {
            kiln_cli_error("tokenize: unknown option '%s' (kiln tokenize --help)", a);
            return 2;
        } else if (!source) {
            source = a;
        } else {
            kiln_cli_error("tokenize: unexpected argument '%s' (the text goes after --text)", a);
            return 2;
        }
    }
    if (!source) {
        kiln_cli_error("tokenize: no SOURCE given (kiln tokenize --help)");
        return 2;
    }
    if (!text == !file) {
        kiln_cli_error("tokenize: give exactly one of --text or --file");
        return 2;
    }
    char *buf = NULL;
    size_t len;
    if (file) {
        buf = read_file(file, &len);
        if (!buf) {
            kiln_cli_error("%s: cannot read: %s", file, strerror(errno));
            return 2;
        }
        text = buf;
    } else {
        len = strlen(text);
    }
    kiln_error err;
    kiln_tokenizer *tok = NULL;
    kiln_status st = kiln_tokenizer_open(source, &tok, &err);
    if (st != KILN_OK) {
        kiln_cli_error("%s", err.message);
        free(buf);
        return kiln_exit_code(st);
    }
    int32_t *ids = NULL;
    size_t n = 0;
    st = kiln_tokenize(tok, text, len,
                       (bos ? KILN_TOKENIZE_ADD_BOS : 0) | (special ? KILN_TOKENIZE_SPECIAL : 0),
                       &ids, &n, &err);
    free(buf);
    if (st != KILN_OK) {
        kiln_cli_error("%s", err.message);
        kiln_tokenizer_free(tok);
        return kiln_exit_code(st);
    }
    if (json) fputs("{\"ids\": [", stdout);
    for (size_t i = 0; i < n; i++) printf(i ? (json ? ", %d" : " %d") : "%d", (int)ids[i]);
    puts(json ? "]}" : "");
    kiln_free(ids);
    kiln_tokenizer_free(tok);
    return fflush(stdout) == 0 ? 0 : 1;
}

int kiln_cli_detokenize(int argc, char **argv) {
    const char *source = NULL;
    int special = 0;
    size_t n = 0, cap = 0;
    int32_t *ids = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(k_detok_usage, stdout);
            free(ids);
            return 0;
        } else if (!strcmp(a, "--special")) {
            special = 1;
        } else if (a[0] == '-' && a[1] && (a[1] < '0' || a[1] > '9')) {
            kiln_cli_error("detokenize: unknown option '%s' (kiln detokenize --help)", a);
            free(ids);
            return 2;
        } else if (!source) {
            source = a;
        } else {
            const char *p = a;
            while (*p) {
                while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
                if (!*p) break;
                char *end;
                errno = 0;
                long v = strtol(p, &end, 10);
                if (end == p || errno || v < 0 || v > INT32_MAX ||
                    (*end && *end != ' ' && *end != ',' && *end != '\t' && *end != '\n')) {
                    kiln_cli_error("detokenize: '%s' is not a token id", a);
                    free(ids);
                    return 2;
                }
                if (n == cap) {
                    cap = cap ? cap * 2 : 64;
                    int32_t *q = realloc(ids, cap * sizeof *q);
                    if (!q) {
                        free(ids);
                        kiln_cli_error("detokenize: out of memory");
                        return 1;
                    }
                    ids = q;
                }
                ids[n++] = (int32_t)v;
                p = end;
            }
        }
    }
    if (!source) {
        kiln_cli_error("detokenize: no SOURCE given (kiln detokenize --help)");
        free(ids);
        return 2;
    }
    kiln_error err;
    kiln_tokenizer *tok = NULL;
    kiln_status st = kiln_tokenizer_open(source, &tok, &err);
    if (st != KILN_OK) {
        kiln_cli_error("%s", err.message);
        free(ids);
        return kiln_exit_code(st);
    }
    char *text = NULL;
    size_t len = 0;
    st = kiln_detokenize(tok, ids, n, special ? KILN_DETOKENIZE_SPECIAL : 0, &text, &len, &err);
    free(ids);
    kiln_tokenizer_free(tok);
    if (st != KILN_OK) {
        kiln_cli_error("detokenize: %s", err.message);
        return kiln_exit_code(st);
    }
    fwrite(text, 1, len, stdout); /* every byte: a token may decode to NUL */
    fputc('\n', stdout);
    kiln_free(text);
    return fflush(stdout) == 0 ? 0 : 1;
}
