/* cmd_tokenize.c — placeholder until the tokenizer lands in this tree. */
#include "coordinator/commands.h"
#include "error.h"
int cmd_tokenize(int argc, char **argv) { (void)argc; (void)argv; fq_error("tokenize: being built"); return cli_fail(); }
