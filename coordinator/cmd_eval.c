/* cmd_eval.c — placeholder until the model lands in this tree. */
#include "coordinator/commands.h"
#include "error.h"
int cmd_eval(int argc, char **argv) { (void)argc; (void)argv; fq_error("eval: being built"); return cli_fail(); }
