/* cmd_version.c — `flatq version`: version and which backends this binary has. */
#include "coordinator/commands.h"
#include "coordinator/version.h"

#include <stdio.h>

#ifdef FLATQ_HAVE_CUDA
#include "error.h"
#include "kernels/flatq_cuda.h"
#endif

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
#ifdef FLATQ_HAVE_CUDA
    int n = 0;
    if (fq_cuda_device_count(&n) == FQ_OK)
        printf("cuda: %d GPU%s visible\n", n, n == 1 ? "" : "s");
    else
        printf("cuda: no usable GPU (%s)\n", fq_errmsg());
#endif
    return 0;
}
