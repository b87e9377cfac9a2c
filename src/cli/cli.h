/* cli.h — the subcommands of the kiln command. Each takes argv after the subcommand name
 * (argv[0] is the subcommand) and returns the process exit status: 0 ok, 2 bad input or usage,
 * 3 requested device unavailable, 130 interrupted, 1 anything else. The CLI uses only
 * include/kiln.h. */
#ifndef KILN_CLI_H
#define KILN_CLI_H

#include "kiln.h"

int kiln_cli_bake(int argc, char **argv);
int kiln_cli_inspect(int argc, char **argv);
int kiln_cli_tokenize(int argc, char **argv);
int kiln_cli_detokenize(int argc, char **argv);
int kiln_cli_run(int argc, char **argv);
int kiln_cli_chat(int argc, char **argv);
int kiln_cli_bench(int argc, char **argv);

/* The exit status for a library status: 0 ok, 2 bad input (invalid argument, unreadable or
 * malformed or unsupported file), 3 device unavailable, 130 cancelled (as a shell reports
 * Ctrl-C), 1 anything else (a failed write included). */
int kiln_exit_code(kiln_status status);

/* Prints "kiln: MESSAGE" on stderr (one line). */
void kiln_cli_error(const char *fmt, ...);

#endif
