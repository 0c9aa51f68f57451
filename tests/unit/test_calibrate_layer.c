/* test_calibrate_layer.c — the per-layer training loop (worker/calibrate_layer.c), fp32.
 *
 * A small random layer (d 32, h 4, g 2, dh 8, f 64; 8 samples of 16 tokens) with targets from its own FP forward:
 * W4A4KV4 training must lower the loss below its value before training, log one line per
 * epoch with finite min|λ|, give the same bytes on a second run and through the fetch
 * callback, and stop with "layer 3, step N: ..." when a NaN reaches the loss.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/calibrate_layer.h"
#include "error.h"
#include "fd_util.h"

enum { NS = 8, SEQ = 16 };

typedef struct {
    llama_config c;
    llama_layer l;
    float *x, *y;
} fixture;

static void fixture_init(fixture *fx)
{
    memset(fx, 0, sizeof *fx);
    llama_config *c = &fx->c;
    c->hidden = 32;
    c->intermediate = 64;
    c->n_layers = 1;
    c->n_heads = 4;
    c->n_kv_heads = 2;
    c->head_dim = 8;
    c->vocab = 32;
    c->max_pos = 64;
    c->rms_eps = 1e-5;
    c->rope_theta = 10000;
    rng_state rng;
    rng_seed(&rng, 42);
    int d = 32, f = 64, qd = 32, kd = 16;
    fx->l.attn_norm = alloc_real(d);
    fx->l.mlp_norm = alloc_real(d);
    for (int j = 0; j < d; j++)
        fx->l.attn_norm[j] = fx->l.mlp_norm[j] = 1;
    real **w[7] = {&fx->l.wq, &fx->l.wk, &fx->l.wv, &fx->l.wo, &fx->l.wgate, &fx->l.wup,
                   &fx->l.wdown};
    long n[7] = {qd * d, kd * d, kd * d, d * qd, f * d, f * d, d * f};
    for (int i = 0; i < 7; i++) {
        *w[i] = alloc_real(n[i]);
        fill_normal(*w[i], n[i], &rng, 0.18);
    }
    long nx = (long)NS * SEQ * d;
    real *xr = alloc_real(nx);
    fill_normal(xr, nx, &rng, 1.0);
    for (long t = 0; t < NS * SEQ; t++)
        xr[t * d + 5] *= 8; /* an outlier channel: what the transforms are for */
    fx->x = malloc(sizeof(float) * nx);
    fx->y = malloc(sizeof(float) * nx);
    assert_non_null(fx->x);
    assert_non_null(fx->y);
    real_to_f32(xr, nx, fx->x);
    llama_scratch ws;
    rope_table rope;
    assert_int_equal(llama_scratch_init(&ws, c, NS, SEQ), 0);
    assert_int_equal(rope_table_init(&rope, c, SEQ), 0);
    llama_layer_fwd(xr, &fx->l, c, &rope, NS, SEQ, &ws);
    real_to_f32(xr, nx, fx->y);
    llama_scratch_free(&ws);
    rope_table_free(&rope);
    free(xr);
}

static void fixture_free(fixture *fx)
{
    real *w[] = {fx->l.attn_norm, fx->l.mlp_norm, fx->l.wq, fx->l.wk, fx->l.wv, fx->l.wo,
                 fx->l.wgate, fx->l.wup, fx->l.wdown};
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
        free(w[i]);
    free(fx->x);
    free(fx->y);
}

typedef struct {
    int calls, epochs_seen;
    double first, last;
    int nan_at; /* fetch call (1-based) that returns a NaN input; 0 = never */
    const fixture *fx;
} log_state;

static void on_epoch(void *ctx, const calib_epoch_log *lg)
{
    log_state *s = ctx;
    assert_int_equal(lg->epoch, s->epochs_seen);
    s->epochs_seen++;
    if (lg->epoch == 0)
        s->first = lg->mse_sum;
    s->last = lg->mse_sum;
    assert_true(lg->nfactors == FQ_F_NFIXED + 3);
    for (int i = 0; i < lg->nfactors; i++)
        assert_true(isfinite(lg->lambda_min[i]) && lg->lambda_min[i] > 0);
    assert_string_equal(lg->factor_names[0], "L_a");
}

static int fetch(void *ctx, int first, int count, float *x, float *y)
{
    log_state *s = ctx;
    size_t per = (size_t)SEQ * s->fx->c.hidden;
    memcpy(x, s->fx->x + first * per, sizeof(float) * count * per);
    memcpy(y, s->fx->y + first * per, sizeof(float) * count * per);
    if (++s->calls == s->nan_at)
        x[7] = NAN;
    return 0;
}

static fq_recipe small_recipe(void)
{
    fq_recipe r = fq_recipe_defaults();
    r.epochs = 30;
    r.batch = 2;
    return r;
}

static void test_training_lowers_loss_and_is_deterministic(void **state)
{
    (void)state;
    fixture fx;
    fixture_init(&fx);
    fq_stats st;
    assert_int_equal(fq_stats_init(&st, &fx.c), 0);
    /* statistics from an FP pass over the same inputs */
    {
        long nx = (long)NS * SEQ * fx.c.hidden;
        real *xr = alloc_real(nx);
        real_from_f32(fx.x, nx, xr);
        llama_scratch ws;
        rope_table rope;
        assert_int_equal(llama_scratch_init(&ws, &fx.c, NS, SEQ), 0);
        assert_int_equal(rope_table_init(&rope, &fx.c, SEQ), 0);
        assert_int_equal(fq_stats_layer_fwd(&st, xr, &fx.l, &fx.c, &rope, NS, SEQ, &ws), 0);
        llama_scratch_free(&ws);
        rope_table_free(&rope);
        free(xr);
    }
    fq_recipe r = small_recipe();
    log_state ls = {0};
    calib_data data = {NS, SEQ, fx.x, fx.y, NULL, NULL, on_epoch, &ls, 0};
    fq_params P1, P2, P3;
    calib_result r1, r2, r3;
    int rc = calibrate_layer(&P1, &fx.l, &fx.c, &r, &st, &data, 3, &r1);
    if (rc)
        fprintf(stderr, "%s\n", fq_errmsg());
    assert_int_equal(rc, 0);
    assert_int_equal(ls.epochs_seen, r.epochs);
    assert_int_equal(r1.steps, (long)r.epochs * (NS / r.batch));
    fprintf(stderr, "loss before %.6g after %.6g; epoch MSE sums %.6g -> %.6g\n",
            r1.loss_before, r1.loss_after, ls.first, ls.last);
    assert_true(r1.loss_before > 0);
    assert_true(r1.loss_after < 0.8 * r1.loss_before);
    assert_true(ls.last < ls.first);
    /* same inputs and seed: the same bytes */
    data.on_epoch = NULL;
    assert_int_equal(calibrate_layer(&P2, &fx.l, &fx.c, &r, &st, &data, 3, &r2), 0);
    assert_true(P1.n == P2.n && memcmp(P1.p, P2.p, sizeof(real) * P1.n) == 0);
    assert_true(r1.loss_after == r2.loss_after);
    /* streaming through the fetch callback gives the same bytes too */
    log_state fs = {0};
    fs.fx = &fx;
    calib_data streamed = {NS, SEQ, NULL, NULL, fetch, &fs, NULL, NULL, 0};
    assert_int_equal(calibrate_layer(&P3, &fx.l, &fx.c, &r, &st, &streamed, 3, &r3), 0);
    assert_true(memcmp(P1.p, P3.p, sizeof(real) * P1.n) == 0);
    assert_int_equal(fs.calls, (r.epochs + 2) * (NS / r.batch));
    fq_params_free(&P1);
    fq_params_free(&P2);
    fq_params_free(&P3);
    fq_stats_free(&st);
    fixture_free(&fx);
}

static void test_nan_stops_with_layer_and_step(void **state)
{
    (void)state;
    fixture fx;
    fixture_init(&fx);
    fq_recipe r = small_recipe();
    r.scale_init = FQ_SCALE_ONE;
    log_state fs = {0};
    fs.fx = &fx;
    /* 4 fetches for the loss-before pass, then training steps 1, 2, 3: NaN at step 3 */
    fs.nan_at = 7;
    calib_data data = {NS, SEQ, NULL, NULL, fetch, &fs, NULL, NULL, 0};
    fq_params P;
    calib_result res;
    assert_int_equal(calibrate_layer(&P, &fx.l, &fx.c, &r, NULL, &data, 3, &res), -1);
    const char *msg = fq_errmsg();
    fprintf(stderr, "message: %s\n", msg);
    assert_non_null(strstr(msg, "layer 3, step 3"));
    assert_null(P.p); /* freed on error */
    /* an impossible request is refused before any work */
    data.nsamples = 1; /* fewer samples than one batch */
    assert_int_equal(calibrate_layer(&P, &fx.l, &fx.c, &r, NULL, &data, 3, &res), -1);
    assert_non_null(strstr(fq_errmsg(), "batch 2"));
    fixture_free(&fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_training_lowers_loss_and_is_deterministic),
        cmocka_unit_test(test_nan_stops_with_layer_and_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
