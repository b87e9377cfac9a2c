/* args.h — small helpers for parsing subcommand options. */
#ifndef KILN_CLI_ARGS_H
#define KILN_CLI_ARGS_H

#include <stdbool.h>
#include <stdio.h>

#include "kiln.h"

/* Matches argv[*i] against "--name" / "--name=value" (and the short alias, if any) and takes
 * its value; on a missing value (the end of argv, or another "--option" next) prints
 * "kiln: OPTION needs a value", sets *value to NULL and *bad. Callers test *bad before using
 * the value. */
bool kiln_arg_value(int argc, char **argv, int *i, const char *name, const char *alias,
                    const char **value, bool *bad);
/* Parses a whole decimal integer in [lo, hi]; prints "kiln: OPTION: ..." on failure. */
bool kiln_arg_int(const char *option, const char *text, long lo, long hi, int *out);
bool kiln_arg_is_help(const char *a);
/* Finds text in the NULL-terminated list names and sets *index; otherwise prints
 * "kiln: OPTION: 'text' is not a, b or c" and returns false. */
bool kiln_arg_choice(const char *option, const char *text, const char *const *names, int *index);
/* Whether text is a JSON object; prints "kiln: OPTION: ..." when not. */
bool kiln_arg_json_object(const char *option, const char *text);
/* Whether s is valid UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
bool kiln_arg_utf8_ok(const char *s);

/* A log callback printing "kiln: MESSAGE" for warnings and notes. */
void kiln_cli_log_stderr(kiln_log_level level, const char *msg, void *user);
/* A JSON string (quoted, escaped) of n bytes / of a C string. */
void kiln_cli_json_strn(FILE *f, const char *s, size_t n);
void kiln_cli_json_str(FILE *f, const char *s);

#endif
