/* cmd_version.c — `flatq version`: version and which backends this binary has. */
#include "coordinator/commands.h"
#include "coordinator/version.h"

#include <stdio.h>

int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
#ifdef FLATQ_HAVE_CUDA
    const char *cuda = "cpu, cuda";
#else
    const char *cuda = "cpu";
#endif
    printf("flatq %s (backends: %s)\n", FLATQ_VERSION, cuda);
    return 0;
}
