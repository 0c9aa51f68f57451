/* test_perplexity.c — the shared perplexity protocol (core/perplexity.c): the logits entry
 * point and the NLL entry point (a model that scores windows itself, as the GPU runtime
 * does) give the same numbers; windows, max_windows and bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "error.h"
#include "perplexity.h"

#define V 37

/* a deterministic "model": logits depend on the position and the window's tokens */
static int toy_logits(void *ctx, const int32_t *ids, int s, real *logits)
{
    int *calls = ctx;
    (*calls)++;
    for (int t = 0; t < s; t++)
        for (int v = 0; v < V; v++)
            logits[(size_t)t * V + v] = (real)sin(0.37 * v + 0.11 * ids[t] + 0.05 * t) * 3;
    return FQ_OK;
}

/* the same model as an NLL scorer, through an independent float64 log-softmax */
static int toy_nll(void *ctx, const int32_t *ids, int s, double *sum)
{
    int *calls = ctx;
    (*calls)++;
    double tot = 0;
    for (int t = 0; t + 1 < s; t++) {
        double mx = -INFINITY, z = 0, x[V];
        for (int v = 0; v < V; v++) {
            x[v] = (double)(real)(sin(0.37 * v + 0.11 * ids[t] + 0.05 * t) * 3);
            mx = fmax(mx, x[v]);
        }
        for (int v = 0; v < V; v++)
            z += exp(x[v] - mx);
        tot += mx + log(z) - x[ids[t + 1]];
    }
    *sum = tot;
    return FQ_OK;
}

static int nan_nll(void *ctx, const int32_t *ids, int s, double *sum)
{
    (void)ctx, (void)ids, (void)s;
    *sum = NAN;
    return FQ_OK;
}

static void test_two_entry_points_agree(void **state)
{
    (void)state;
    int32_t ids[1000];
    for (int i = 0; i < 1000; i++)
        ids[i] = (int32_t)((i * 7919u + 13u) % V);
    ppl_result a, b;
    int ca = 0, cb = 0;
    assert_int_equal(perplexity_eval(ids, 1000, 64, V, 0, toy_logits, &ca, &a), FQ_OK);
    assert_int_equal(perplexity_eval_nll(ids, 1000, 64, 0, toy_nll, &cb, &b), FQ_OK);
    assert_int_equal(ca, 15); /* 1000 / 64 whole windows, the partial one dropped */
    assert_int_equal(cb, 15);
    assert_int_equal(a.windows, 15);
    assert_int_equal(b.predicted, 15 * 63);
    assert_int_equal(b.tokens, 1000);
    assert_true(fabs(a.nll - b.nll) <= 1e-6 * fabs(a.nll));
    assert_true(fabs(a.ppl / b.ppl - 1) <= 1e-6);
    /* max_windows */
    cb = 0;
    assert_int_equal(perplexity_eval_nll(ids, 1000, 64, 4, toy_nll, &cb, &b), FQ_OK);
    assert_int_equal(cb, 4);
    assert_int_equal(b.windows, 4);
}

static void test_bad_input(void **state)
{
    (void)state;
    int32_t ids[100] = {0};
    ppl_result r;
    int c = 0;
    assert_int_equal(perplexity_eval_nll(ids, 100, 1, 0, toy_nll, &c, &r), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "seqlen 1 too small"));
    assert_int_equal(perplexity_eval_nll(ids, 100, 128, 0, toy_nll, &c, &r), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "fewer than one window"));
    assert_int_equal(perplexity_eval_nll(ids, 100, 10, 0, NULL, &c, &r), FQ_ERR);
    assert_int_equal(perplexity_eval_nll(ids, 100, 10, 0, nan_nll, &c, &r), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "not finite"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_entry_points_agree),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
