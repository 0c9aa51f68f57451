/* test_progress.c — plain mode prints one line per event with counts, rate and ETA
 * computed from a fake clock; tty mode redraws a bar in place. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "coordinator/progress.h"

static double fake_now;
static double fake_clock(void) { return fake_now; }

static char *capture(FILE *f)
{
    fflush(f);
    long n = ftell(f);
    char *s = calloc(1, (size_t)n + 1);
    rewind(f);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    return s;
}

static void test_plain_lines_rate_eta(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    progress p;
    progress_init(&p, f, 10, 2, 0); /* 2 layers resumed */
    p.clock = fake_clock;
    fake_now = p.t0 = 100.0;
    progress_worker(&p, 1, "nodeA", "cpu");
    progress_layer_started(&p, 4, 1, "nodeA");
    progress_layer_loss(&p, 4, 3, 10, 0.5); /* no line in plain mode */
    fake_now = 130.0;
    progress_layer_done(&p, 4, 1, "nodeA", 29.5, 0.25);
    double rate, eta;
    assert_int_equal(progress_rate_eta(&p, &rate, &eta), 1);
    /* one layer in 30 s this run; 7 left → 210 s */
    assert_true(rate > 1.0 / 30 - 1e-12 && rate < 1.0 / 30 + 1e-12);
    assert_true(eta > 210 - 1e-9 && eta < 210 + 1e-9);
    progress_note(&p, "worker rank %d died", 2);
    progress_end(&p);
    char *s = capture(f);
    assert_non_null(strstr(s, "rank 1 on host nodeA, device cpu\n"));
    assert_non_null(strstr(s, "layer 4 started on rank 1 (nodeA)\n"));
    assert_non_null(strstr(s, "layer 4 done on rank 1 (nodeA) in 29.5s, loss 0.25; 3/10 layers, "
                              "2.00 layers/min, ETA 3m30s\n"));
    assert_non_null(strstr(s, "worker rank 2 died\n"));
    assert_null(strchr(s, '\r'));
    int lines = 0;
    for (char *c = s; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, 4);
    free(s);
    fclose(f);
}

static void test_tty_bar(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    progress p;
    progress_init(&p, f, 4, 0, 1);
    p.clock = fake_clock;
    fake_now = p.t0 = 0.0;
    progress_layer_loss(&p, 1, 1, 5, 0.125);
    fake_now = 60.0;
    progress_layer_done(&p, 1, 2, "h", 60.0, 0.0625);
    progress_end(&p);
    char *s = capture(f);
    assert_non_null(strstr(s, "\r[........................] 0/4 layers, loss 0.125 (layer 1)"));
    assert_non_null(strstr(s, "\r[######..................] 1/4 layers, 1.00 layers/min, ETA "
                              "3m00s, loss 0.0625 (layer 1)"));
    assert_int_equal(s[strlen(s) - 1], '\n');
    free(s);
    fclose(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_lines_rate_eta),
        cmocka_unit_test(test_tty_bar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
