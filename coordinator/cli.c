/* cli.c — small helpers shared by the subcommands: one-line error printing. */
#include "coordinator/commands.h"
#include "error.h"

#include <stdio.h>
#include <string.h>

int cli_fail(void)
{
    fprintf(stderr, "flatq: %s\n", fq_errmsg());
    return 1;
}

int cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return 1;
    return 0;
}
