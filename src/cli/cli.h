/* cli.h — the subcommands of the kiln command. Each takes argv after the subcommand name
 * (argv[0] is the subcommand) and returns the process exit status: 0 ok, 2 bad input or usage,
 * 3 requested device unavailable, 130 interrupted, 1 anything else. The CLI uses only
 * include/kiln.h. */
#ifndef KILN_CLI_H
#define KILN_CLI_H

int kiln_cli_bake(int argc, char **argv);
int kiln_cli_inspect(int argc, char **argv);
int kiln_cli_tokenize(int argc, char **argv);
int kiln_cli_detokenize(int argc, char **argv);
int kiln_cli_run(int argc, char **argv);
int kiln_cli_chat(int argc, char **argv);
int kiln_cli_bench(int argc, char **argv);

/* Prints "kiln: MESSAGE" on stderr (one line). */
void kiln_cli_error(const char *fmt, ...);

#endif
