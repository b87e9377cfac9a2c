/* args.c — option parsing helpers shared by the subcommands. */
#include "args.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

bool kiln_arg_choice(const char *option, const char *text, const char *const *names, int *index) {
    int n = 0;
    for (; names[n]; n++)
        if (strcmp(text, names[n]) == 0) {
            *index = n;
            return true;
        }
    char list[256] = "";
    size_t len = 0;
    for (int i = 0; i < n && len < sizeof list; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s",
                                i == 0 ? "" : i == n - 1 ? " or " : ", ", names[i]);
    kiln_cli_error("%s: '%s' is not %s", option, text, list);
    return false;
}

bool kiln_arg_json_object(const char *option, const char *text) {
    cJSON *j = cJSON_Parse(text);
    bool ok = cJSON_IsObject(j);
    cJSON_Delete(j);
    if (!ok)
        kiln_cli_error("%s: '%.60s%s' is not a JSON object (e.g. '{\"enable_thinking\": false}')",
                       option, text, strlen(text) > 60 ? "..." : "");
    return ok;
}

bool kiln_arg_is_help(const char *a) { return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0; }

bool kiln_arg_value(int argc, char **argv, int *i, const char *name, const char *alias,
                    const char **value, bool *bad) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) == 0 && a[n] == '=') {
        *value = a + n + 1;
        return true;
    }
    if (strcmp(a, name) != 0 && !(alias && strcmp(a, alias) == 0)) return false;
    /* The next argument is the value, unless there is none or it is another long option:
     * `--device --json` is a missing device, not the device "--json". A value that starts
     * with "--" is written --name=--value. */
    const char *next = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (!next || (next[0] == '-' && next[1] == '-' && next[2])) {
        kiln_cli_error("%s needs a value", a);
        *value = NULL;
        *bad = true;
        return true;
    }
    *value = next;
    ++*i;
    return true;
}

bool kiln_arg_int(const char *option, const char *text, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi) {
        kiln_cli_error("%s: '%s' is not an integer in [%ld, %ld]", option, text, lo, hi);
        return false;
    }
    *out = (int)v;
    return true;
}

bool kiln_arg_utf8_ok(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
        if (n < 0) return false;
        unsigned cp = n == 0 ? c : n == 1 ? c & 0x1f : n == 2 ? c & 0x0f : c & 0x07;
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        /* overlong forms, surrogates and values past U+10FFFF are not UTF-8 */
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += n + 1;
    }
    return true;
}

void kiln_cli_log_stderr(kiln_log_level level, const char *msg, void *user) {
    (void)user;
    if (level <= KILN_LOG_INFO) fprintf(stderr, "kiln: %s\n", msg);
}

void kiln_cli_json_strn(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (const char *e = s + n; s < e; s++) {
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

void kiln_cli_json_str(FILE *f, const char *s) { kiln_cli_json_strn(f, s, strlen(s)); }
