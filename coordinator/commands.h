/* commands.h — the subcommands of bin/flatq. Each returns a process exit code and
 * prints its own errors as one line "flatq: …" (via cli_fail). */
#ifndef FQ_COMMANDS_H
#define FQ_COMMANDS_H

int cmd_version(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_synth(int argc, char **argv);

/* Print "flatq: <last error>" to stderr and return exit code 1. */
int cli_fail(void);
/* True when argv holds -h or --help. */
int cli_wants_help(int argc, char **argv);

#endif
