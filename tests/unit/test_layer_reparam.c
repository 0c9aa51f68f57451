/* test_layer_reparam.c — trained FlatQuant params → qlayer (worker/layer_reparam.c), fp32.
 *
 * For a small layer with random factors, λ ≠ 1, random c and clip logits:
 *  - every packed int4 code unpacks to clamp(rint(w/s), −8, 7) of the merged weight
 *    (fq_merge) with s = max|w_r|/7, and the stored scale is that s;
 *  - the lead's quantized forward (core/qlayer_fwd.c) on the qlayer reproduces the
 *    training forward (core/fq_layer.c) — bits 16 to fp32 rounding, W4A4KV4 up to the
 *    rare code that fp32 rounding puts on the other side of a boundary.
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

#include "error.h"
#include "fd_util.h"
#include "fq_merge.h"
#include "qlayer_fwd.h"
#include "quantizer.h"
#include "worker/layer_reparam.h"

enum { B = 2, S = 16 };

typedef struct {
    llama_config c;
    llama_layer l;
    rope_table rope;
    real *x;
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
    rng_seed(&rng, 7);
    int d = 32, f = 64, qd = 32, kd = 16;
    fx->l.attn_norm = alloc_real(d);
    fx->l.mlp_norm = alloc_real(d);
    for (int j = 0; j < d; j++) {
        fx->l.attn_norm[j] = (real)(1 + 0.2 * rng_normal(&rng));
        fx->l.mlp_norm[j] = (real)(1 + 0.2 * rng_normal(&rng));
    }
    real **w[7] = {&fx->l.wq, &fx->l.wk, &fx->l.wv, &fx->l.wo, &fx->l.wgate, &fx->l.wup,
                   &fx->l.wdown};
    long n[7] = {qd * d, kd * d, kd * d, d * qd, f * d, f * d, d * f};
    for (int i = 0; i < 7; i++) {
        *w[i] = alloc_real(n[i]);
        fill_normal(*w[i], n[i], &rng, 0.2);
    }
    fx->x = alloc_real((long)B * S * d);
    fill_normal(fx->x, (long)B * S * d, &rng, 1.0);
    assert_int_equal(rope_table_init(&fx->rope, c, S), 0);
}

static void fixture_free(fixture *fx)
{
    real *w[] = {fx->l.attn_norm, fx->l.mlp_norm, fx->l.wq, fx->l.wk, fx->l.wv, fx->l.wo,
                 fx->l.wgate, fx->l.wup, fx->l.wdown, fx->x};
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
        free(w[i]);
    rope_table_free(&fx->rope);
}

static void make_params(fq_params *P, const fixture *fx, fq_recipe r)
{
    r.scale_init = FQ_SCALE_ONE;
    int rc = fq_params_init(P, &fx->c, &r, &fx->l, NULL);
    if (rc)
        fprintf(stderr, "%s\n", fq_errmsg());
    assert_int_equal(rc, 0);
    rng_state rng;
    rng_seed(&rng, 99);
    for (int i = 0; i < P->nfactors; i++)
        for (int j = 0; j < P->fac[i].k; j++)
            P->p[P->fac[i].lambda + j] = (real)(1 + 0.2 * rng_normal(&rng));
    for (size_t j = P->group_off[FQ_G_SCALE]; j < P->group_off[FQ_G_WCLIP]; j++)
        P->p[j] = (real)exp(0.2 * rng_normal(&rng));
    for (size_t j = P->group_off[FQ_G_WCLIP]; j < P->n; j++)
        P->p[j] = (real)(2 + 2 * rng_uniform(&rng));
}

/* Relative max difference between the qlayer forward and the training forward. */
static double compare_forwards(const fixture *fx, const fq_params *P, const qlayer *q,
                               double *mean_rel)
{
    long nd = (long)B * S * fx->c.hidden;
    real *y = alloc_real(nd), *yq = alloc_real(nd);
    fq_tape *tp;
    assert_int_equal(fq_tape_create(&tp, P, B, S, NULL), 0);
    assert_int_equal(fq_layer_fwd(tp, P, &fx->l, &fx->rope, fx->x, y), 0);
    qconfig qc = layer_reparam_qconfig(P);
    qlayer_rt rt;
    qlayer_scratch ws;
    assert_int_equal(qlayer_rt_init(&rt, q, &fx->c), 0);
    assert_int_equal(qlayer_scratch_init(&ws, &fx->c, B, S), 0);
    memcpy(yq, fx->x, sizeof(real) * nd);
    int rc = qlayer_fwd(yq, &rt, &fx->c, &qc, &fx->rope, B, S, &ws);
    if (rc)
        fprintf(stderr, "%s\n", fq_errmsg());
    assert_int_equal(rc, 0);
    double ymax = 0, sum = 0, sumy = 0;
    for (long i = 0; i < nd; i++) {
        ymax = fmax(ymax, fabs((double)y[i]));
        sum += fabs((double)y[i] - (double)yq[i]);
        sumy += fabs((double)y[i] - (double)fx->x[i]);
    }
    double err = max_abs_diff(y, yq, nd) / ymax;
    *mean_rel = sum / sumy; /* relative to the layer's update y − x */
    qlayer_rt_free(&rt);
    qlayer_scratch_free(&ws);
    fq_tape_free(tp);
    free(y);
    free(yq);
    return err;
}

static void test_codes_round_trip(void **state)
{
    (void)state;
    fixture fx;
    fixture_init(&fx);
    fq_params P;
    make_params(&P, &fx, fq_recipe_defaults());
    qlayer q;
    assert_int_equal(layer_reparam(&q, &P, &fx.l), 0);
    fq_merged m;
    assert_int_equal(fq_merge(&m, &P, &fx.l), 0);
    for (int i = 0; i < QL_NLINEAR; i++) {
        const qlinear *L = &q.lin[i];
        int out = fq_linear_out(&fx.c, i), in = fq_linear_in(&fx.c, i);
        assert_int_equal(L->out, out);
        assert_int_equal(L->in, in);
        assert_int_equal(L->bits, 4);
        int8_t *codes = malloc((size_t)out * in);
        assert_non_null(codes);
        int4_unpack(L->codes, (size_t)out * in, codes);
        long mism = 0;
        for (int r = 0; r < out; r++) {
            const real *wr = m.w[i] + (size_t)r * in;
            float mx = 0;
            for (int j = 0; j < in; j++)
                mx = fmaxf(mx, fabsf((float)wr[j]));
            float s = fmaxf(mx, 1e-5f) / 7;
            assert_true(L->scales[r] == s);
            for (int j = 0; j < in; j++) {
                float cde = fminf(fmaxf(rintf((float)wr[j] / s), -8), 7);
                mism += codes[(size_t)r * in + j] != (int8_t)cde;
                /* the row is clipped, so its extreme element codes to ±7 or -8 */
            }
        }
        assert_int_equal(mism, 0);
        /* and the packed bytes hold two codes each, low nibble first */
        assert_true((int8_t)(((L->codes[0] & 0x0F) ^ 8) - 8) == codes[0]);
        assert_true((int8_t)(((L->codes[0] >> 4) ^ 8) - 8) == codes[1]);
        free(codes);
    }
    /* clip ratios are σ of the learned logits, and the norms carry c */
    assert_true(fabsf(q.act_clip[QL_O][0] - (float)quant_sigmoid(P.p[P.lac[QL_O]])) < 1e-6f);
    assert_true(fabsf(q.attn_norm[0] - (float)(fx.l.attn_norm[0] * P.p[P.c_a])) < 1e-6f);
    fq_merged_free(&m);
    qlayer_free(&q);
    fq_params_free(&P);
    fixture_free(&fx);
}

static void check_qlayer_forward(fq_recipe r, double max_tol, double mean_tol)
{
    fixture fx;
    fixture_init(&fx);
    fq_params P;
    make_params(&P, &fx, r);
    qlayer q;
    int rc = layer_reparam(&q, &P, &fx.l);
    if (rc)
        fprintf(stderr, "%s\n", fq_errmsg());
    assert_int_equal(rc, 0);
    double mean_rel, err = compare_forwards(&fx, &P, &q, &mean_rel);
    fprintf(stderr, "w%d a%d kv%d T %d vtrans %d: qlayer_fwd vs training forward: max %.3g of "
            "max|y|, mean %.3g of mean|y - x|\n", r.w_bits, r.a_bits, r.kv_bits, r.tp_blocks,
            r.separate_vtrans, err, mean_rel);
    assert_true(err <= max_tol);
    assert_true(mean_rel <= mean_tol);
    qlayer_free(&q);
    fq_params_free(&P);
    fixture_free(&fx);
}

static void test_qlayer_forward_matches_training(void **state)
{
    (void)state;
    fq_recipe r = fq_recipe_defaults();
    r.w_bits = r.a_bits = r.kv_bits = 16;
    check_qlayer_forward(r, 1e-5, 1e-5);
    r.tp_blocks = 2;
    r.separate_vtrans = 1;
    check_qlayer_forward(r, 1e-5, 1e-5);
    r = fq_recipe_defaults();
    check_qlayer_forward(r, 2e-2, 2e-3);
    r.tp_blocks = 2;
    check_qlayer_forward(r, 2e-2, 2e-3);
    r.separate_vtrans = 1;
    check_qlayer_forward(r, 2e-2, 2e-3);
}

/* layer_reparam_from with the merged weights handed in (as the GPU path does, here the
 * float64 merge's own, cast to fp32) builds the same qlayer, byte for byte; it takes the
 * weights over on success and on a refused call alike (ASan: no leak, no double free). */
static void test_reparam_from_given_weights(void **state)
{
    (void)state;
    fixture fx;
    fixture_init(&fx);
    fq_params P;
    make_params(&P, &fx, fq_recipe_defaults());
    qlayer qa, qb;
    assert_int_equal(layer_reparam(&qa, &P, &fx.l), 0);
    fq_merged m;
    assert_int_equal(fq_merge(&m, &P, &fx.l), 0);
    float *wm[QL_NLINEAR], *kept[QL_NLINEAR];
    for (int i = 0; i < QL_NLINEAR; i++) {
        size_t n = (size_t)fq_linear_out(&fx.c, i) * fq_linear_in(&fx.c, i);
        wm[i] = malloc(sizeof(float) * n);
        assert_non_null(wm[i]);
        for (size_t k = 0; k < n; k++)
            wm[i][k] = (float)m.w[i][k];
    }
    assert_int_equal(layer_reparam_from(&qb, &P, &fx.l, wm, kept), 0);
    for (int i = 0; i < QL_NLINEAR; i++) {
        size_t n = (size_t)qa.lin[i].out * qa.lin[i].in;
        assert_null(wm[i]);
        assert_memory_equal(qa.lin[i].codes, qb.lin[i].codes, n / 2);
        assert_memory_equal(qa.lin[i].scales, qb.lin[i].scales, sizeof(float) * qa.lin[i].out);
        for (size_t k = 0; k < n; k++)
            assert_true(kept[i][k] == (float)m.w[i][k]);
        free(kept[i]);
    }
    assert_memory_equal(qa.attn_norm, qb.attn_norm, sizeof(float) * fx.c.hidden);
    assert_memory_equal(qa.down_in.L, qb.down_in.L, sizeof(float) * qa.down_in.n1 * qa.down_in.n1);
    qlayer_free(&qb);
    /* one weight missing: refused, and the others are freed */
    for (int i = 0; i < QL_NLINEAR; i++)
        wm[i] = i == QL_UP ? NULL : malloc(16);
    assert_int_not_equal(layer_reparam_from(&qb, &P, &fx.l, wm, NULL), 0);
    for (int i = 0; i < QL_NLINEAR; i++)
        assert_null(wm[i]);
    qlayer_free(&qb);
    qlayer_free(&qa);
    fq_merged_free(&m);
    fq_params_free(&P);
    fixture_free(&fx);
}

/* The row-parallel RTN (several threads above 1 M weights) against the scalar formula on a
 * weight large enough to be split: same codes, same scales. */
static void test_rtn_threaded_matches_formula(void **state)
{
    (void)state;
    const int out = 1000, in = 2048; /* 2 M weights, 16 row chunks of 64 */
    size_t n = (size_t)out * in;
    float *w = malloc(sizeof(float) * n);
    assert_non_null(w);
    rng_state rng;
    rng_seed(&rng, 11);
    for (size_t k = 0; k < n; k++)
        w[k] = (float)rng_normal(&rng) * (k % 97 == 0 ? 20.0f : 1.0f);
    qlinear l;
    assert_int_equal(qlinear_quantize_rtn(&l, w, out, in, 4), 0);
    int8_t *codes = malloc(n);
    assert_non_null(codes);
    int4_unpack(l.codes, n, codes);
    long mism = 0;
    for (int r = 0; r < out; r++) {
        const float *wr = w + (size_t)r * in;
        float mx = 0;
        for (int j = 0; j < in; j++)
            mx = fmaxf(mx, fabsf(wr[j]));
        float s = fmaxf(mx, 1e-5f) / 7;
        mism += l.scales[r] != s;
        for (int j = 0; j < in; j++)
            mism += codes[(size_t)r * in + j] != (int8_t)fminf(fmaxf(rintf(wr[j] / s), -8), 7);
    }
    assert_int_equal(mism, 0);
    free(codes);
    free(l.codes);
    free(l.scales);
    free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_round_trip),
        cmocka_unit_test(test_reparam_from_given_weights),
        cmocka_unit_test(test_rtn_threaded_matches_formula),
        cmocka_unit_test(test_qlayer_forward_matches_training),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
