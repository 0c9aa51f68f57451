/* test_parallel.c — fq_parallel_for: every item runs exactly once on any thread count,
 * the inline path keeps order and stops at a failure, a failure's message reaches the
 * caller's thread; fq_io_threads honours FLATQ_IO_THREADS and its bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "parallel.h"

enum { NITEMS = 2000 };

typedef struct {
    atomic_int hits[NITEMS];
    size_t order[NITEMS];
    atomic_size_t done;
    size_t fail_at;
    int max_thread;
} job;

static int visit(void *ctx, size_t i, int t)
{
    job *j = ctx;
    if (t > j->max_thread)
        return fq_error("thread index %d out of range", t);
    if (i == j->fail_at)
        return fq_error("item %zu failed on purpose", i);
    atomic_fetch_add(&j->hits[i], 1);
    j->order[atomic_fetch_add(&j->done, 1)] = i;
    return FQ_OK;
}

static job *new_job(size_t fail_at, int max_thread)
{
    job *j = calloc(1, sizeof *j);
    assert_non_null(j);
    j->fail_at = fail_at;
    j->max_thread = max_thread;
    return j;
}

static void test_every_item_once(void **state)
{
    (void)state;
    const int threads[] = {1, 2, 7, 64};
    for (int k = 0; k < 4; k++) {
        job *j = new_job(NITEMS, threads[k] - 1);
        assert_int_equal(fq_parallel_for(NITEMS, threads[k], visit, j), FQ_OK);
        for (size_t i = 0; i < NITEMS; i++)
            assert_int_equal(atomic_load(&j->hits[i]), 1);
        if (threads[k] == 1) /* inline: in order */
            for (size_t i = 0; i < NITEMS; i++)
                assert_int_equal(j->order[i], i);
        free(j);
    }
    job *j = new_job(NITEMS, 0);
    assert_int_equal(fq_parallel_for(0, 4, visit, j), FQ_OK); /* nothing to do */
    assert_int_equal(atomic_load(&j->done), 0);
    free(j);
}

static void test_failure_stops_and_reports(void **state)
{
    (void)state;
    const int threads[] = {1, 4};
    for (int k = 0; k < 2; k++) {
        job *j = new_job(700, threads[k] - 1);
        fq_error("stale message");
        assert_int_equal(fq_parallel_for(NITEMS, threads[k], visit, j), FQ_ERR);
        assert_non_null(strstr(fq_errmsg(), "item 700 failed on purpose"));
        assert_int_equal(atomic_load(&j->hits[700]), 0);
        if (threads[k] == 1) /* inline: nothing after the failure ran */
            for (size_t i = 701; i < NITEMS; i++)
                assert_int_equal(atomic_load(&j->hits[i]), 0);
        free(j);
    }
    assert_int_equal(fq_parallel_for(3, 2, NULL, NULL), FQ_ERR);
}

static void test_io_threads(void **state)
{
    (void)state;
    setenv("FLATQ_IO_THREADS", "5", 1);
    assert_int_equal(fq_io_threads(100), 5);
    assert_int_equal(fq_io_threads(3), 3);
    assert_int_equal(fq_io_threads(0), 1);
    setenv("FLATQ_IO_THREADS", "0", 1); /* out of range: the default */
    int dflt = fq_io_threads(1000);
    assert_true(dflt >= 1 && dflt <= 16);
    setenv("FLATQ_IO_THREADS", "abc", 1);
    assert_int_equal(fq_io_threads(1000), dflt);
    unsetenv("FLATQ_IO_THREADS");
    assert_int_equal(fq_io_threads(1000), dflt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_item_once),
        cmocka_unit_test(test_failure_stops_and_reports),
        cmocka_unit_test(test_io_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
