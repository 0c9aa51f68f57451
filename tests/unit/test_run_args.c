/* test_run_args.c — the command-line checks of `flatq run` and `flatq eval` for the GPU
 * runtime: bad --device values, bench shapes without --device cuda, baselines that cannot
 * run on the GPU, all refused with one line naming the flag; and --device cuda on a
 * machine without a usable GPU (or a build without CUDA) ends with an error, not a crash.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "coordinator/commands.h"
#include "error.h"
#include "kernels/flatq_cuda.h"

#define MODEL "data/models/stories260K-hf"
#define TEXT "data/text/tinystories_sample.txt"

static void expect_fail(int argc, char **argv, int (*cmd)(int, char **), const char *needle)
{
    assert_int_equal(cmd(argc, argv), 1);
    if (!strstr(fq_errmsg(), needle))
        fprintf(stderr, "message: %s\n", fq_errmsg());
    assert_non_null(strstr(fq_errmsg(), needle));
    assert_null(strchr(fq_errmsg(), '\n')); /* one line */
}

static void test_run_refuses_bad_flags(void **state)
{
    (void)state;
    char *a1[] = {"run", MODEL, "--device", "tpu"};
    expect_fail(4, a1, cmd_run, "--device: expected cpu or cuda, got 'tpu'");
    char *a2[] = {"run", MODEL, "--bench", "--batch", "8"};
    expect_fail(5, a2, cmd_run, "need --device cuda");
    char *a3[] = {"run", MODEL, "--device", "cuda", "--batch", "0"};
    expect_fail(6, a3, cmd_run, "--batch: expected up to 8 comma-separated sizes");
    char *a5[] = {"run", MODEL, "--device", "cuda", "--batch", "1,,8"};
    expect_fail(6, a5, cmd_run, "got '1,,8'");
    char *a6[] = {"run", MODEL, "--device", "cuda", "--batch", "1,2,3,4,5,6,7,8,9"};
    expect_fail(6, a6, cmd_run, "up to 8");
    char *a7[] = {"run", MODEL, "--device", "cuda", "--batch", "8,"};
    expect_fail(6, a7, cmd_run, "got '8,'");
    char *a4[] = {"run", MODEL, "--device", "cuda", "--gen-len", "x"};
    expect_fail(6, a4, cmd_run, "--gen-len");
    char *a8[] = {"run", MODEL, "--profile"};
    expect_fail(3, a8, cmd_run, "--profile times the GPU bench's ops");
    char *a9[] = {"run", MODEL, "--bench", "--profile"};
    expect_fail(4, a9, cmd_run, "expected --bench --device cuda");
}

static void test_eval_refuses_gpu_baselines(void **state)
{
    (void)state;
    char *a1[] = {"eval", "--model", MODEL, "--text", TEXT, "--device", "cuda", "--method", "rtn"};
    expect_fail(9, a1, cmd_eval, "--method rtn with --device cuda");
    char *a2[] = {"eval", "--model", MODEL, "--text", TEXT, "--device", "gpu"};
    expect_fail(7, a2, cmd_eval, "--device: expected cpu or cuda, got 'gpu'");
}

/* Only on machines without a GPU: the GPU path must refuse cleanly. (With a GPU, the
 * tests/gpu/ programs check the path itself.) One MPI session per process: one call. */
static void test_cuda_without_gpu_fails_cleanly(void **state)
{
    (void)state;
    int count = 0;
#ifdef FLATQ_HAVE_CUDA
    if (fq_cuda_device_count(&count) != FQ_OK)
        count = 0;
#endif
    if (count > 0) {
        skip();
        return;
    }
    char *a[] = {"run", MODEL, "--device", "cuda", "--bench", "--batch", "2"};
    assert_int_equal(cmd_run(7, a), 1);
    assert_non_null(strstr(fq_errmsg(), "CUDA"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_refuses_bad_flags),
        cmocka_unit_test(test_eval_refuses_gpu_baselines),
        cmocka_unit_test(test_cuda_without_gpu_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
