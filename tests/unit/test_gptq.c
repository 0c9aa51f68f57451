/* test_gptq.c — core/gptq.c in the fp32 production build.
 * 1. With H = I (uncorrelated inputs) GPTQ has no error to spread: its codes and scales
 *    equal qlinear_quantize_rtn's byte for byte (4-bit packed and 8-bit), whatever the
 *    block size.
 * 2. On a small linear with correlated inputs, the quantity GPTQ minimises,
 *    ‖(W − Ŵ) Xᵀ‖², computed here in double from the dequantized weights, is below RTN's
 *    (the scales being equal, only the codes differ), and gptq_output_error gives the
 *    same number through H.
 * 3. act-order is the natural-order pass on the columns sorted by descending diag H: its
 *    dequantized weight, columns put back, equals gptq_quantize's on the permuted W and H
 *    bit for bit, and it too beats RTN.
 * 4. Bad input is refused with one line: an indefinite Hessian without damping, a NaN in
 *    the Hessian, odd input size for 4 bits, block 0, an empty accumulator.
 * 5. The clip search, with H = diag(h): every row's scale is one of the 11 ratios of its
 *    RTN scale, no ratio gives a smaller h-weighted error (checked here in double over the
 *    grid), the codes are the rounding of the row on that scale, and heavy-tailed rows do
 *    shrink their scale.
 * 6. The split the GPU pass uses: gptq_plan_make_ex without the factorisation leaves U
 *    NULL and the damped Hessian in Hd (diagonal H_ii + damp·mean(diag), a dead input's 1
 *    + damp·mean, the off-diagonal untouched, act-order's permutation applied), with the
 *    scales, order and working weight of the full plan byte for byte; gptq_plan_factor
 *    then gives the full plan's U byte for byte; the CPU sweep from the full plan gives
 *    gptq_quantize_opts's linear. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fd_util.h"
#include "gptq.h"

static void free_lin(qlinear *l)
{
    free(l->codes);
    free(l->scales);
    free(l->w);
    memset(l, 0, sizeof *l);
}

/* H = (2/tok) xᵀx of x [tok, in] through the accumulator */
static void hessian_of(const real *x, int tok, int in, real *H)
{
    gptq_hessian acc;
    assert_int_equal(gptq_hessian_init(&acc, in), 0);
    assert_int_equal(gptq_hessian_add(&acc, x, tok), 0);
    assert_int_equal(gptq_hessian_get(&acc, H), 0);
    gptq_hessian_free(&acc);
}

static void test_identity_hessian_is_rtn(void **state)
{
    (void)state;
    enum { OUT = 12, IN = 40 };
    rng_state rng;
    rng_seed(&rng, 9);
    real w[OUT * IN], H[IN * IN];
    float wf[OUT * IN];
    fill_normal(w, OUT * IN, &rng, 0.7);
    w[5] = 3.5f * (fabsf(w[6]) + 0.1f); /* ties and clamps are common in clipped rows */
    for (int i = 0; i < OUT * IN; i++)
        wf[i] = (float)w[i];
    for (int i = 0; i < IN * IN; i++)
        H[i] = (i / IN == i % IN) ? 1 : 0;
    const int bits[] = {4, 8};
    const int blocks[] = {7, 128};
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < 2; k++) {
            qlinear g, r;
            assert_int_equal(gptq_quantize(&g, w, OUT, IN, H, bits[b], 0.01, blocks[k]), 0);
            assert_int_equal(qlinear_quantize_rtn(&r, wf, OUT, IN, bits[b]), 0);
            assert_int_equal(g.bits, r.bits);
            size_t nc = bits[b] <= 4 ? OUT * IN / 2 : OUT * IN;
            assert_memory_equal(g.codes, r.codes, nc);
            assert_memory_equal(g.scales, r.scales, sizeof(float) * OUT);
            free_lin(&g);
            free_lin(&r);
        }
}

/* ‖(W − Ŵ) Xᵀ‖² in double for a quantized linear. */
static double output_error(const qlinear *l, const real *w, const real *x, int tokens)
{
    int out = l->out, in = l->in;
    float *wq = malloc(sizeof(float) * out * in);
    assert_non_null(wq);
    assert_int_equal(qlinear_dequantize(l, wq), 0);
    double err = 0;
    for (int t = 0; t < tokens; t++)
        for (int r = 0; r < out; r++) {
            double e = 0;
            for (int j = 0; j < in; j++)
                e += ((double)w[r * in + j] - wq[r * in + j]) * x[t * in + j];
            err += e * e;
        }
    free(wq);
    return err;
}

/* x [tok, in] on a rank-dimensional random subspace plus noise·N(0, 1): strongly correlated
 * inputs; column j scaled by colscale[j] when colscale is given. */
static void fill_low_rank(real *x, int tok, int in, int rank, double noise,
                          const double *colscale, rng_state *rng)
{
    real *z = alloc_real((long)tok * rank), *mix = alloc_real((long)rank * in);
    fill_normal(z, (long)tok * rank, rng, 1.0);
    fill_normal(mix, (long)rank * in, rng, 1.0);
    for (int t = 0; t < tok; t++)
        for (int j = 0; j < in; j++) {
            double v = noise * rng_normal(rng);
            for (int k = 0; k < rank; k++)
                v += z[t * rank + k] * mix[k * in + j];
            x[t * in + j] = (real)(colscale ? v * colscale[j] : v);
        }
    free(z);
    free(mix);
}

static void test_beats_rtn_on_correlated_inputs(void **state)
{
    (void)state;
    enum { OUT = 32, IN = 64, TOK = 512 };
    rng_state rng;
    rng_seed(&rng, 21);
    real *x = alloc_real(TOK * IN), *w = alloc_real(OUT * IN), *H = alloc_real(IN * IN);
    float *wf = malloc(sizeof(float) * OUT * IN);
    assert_non_null(wf);
    fill_low_rank(x, TOK, IN, 8, 0.05, NULL, &rng);
    fill_normal(w, OUT * IN, &rng, 0.5);
    for (int i = 0; i < OUT * IN; i++)
        wf[i] = (float)w[i];
    hessian_of(x, TOK, IN, H);
    qlinear g, r;
    assert_int_equal(gptq_quantize(&g, w, OUT, IN, H, 4, 0.01, 16), 0);
    assert_int_equal(qlinear_quantize_rtn(&r, wf, OUT, IN, 4), 0);
    double eg = output_error(&g, w, x, TOK), er = output_error(&r, w, x, TOK);
    fprintf(stderr, "output error: GPTQ %.4g, RTN %.4g (ratio %.3f)\n", eg, er, eg / er);
    assert_true(eg < er);
    /* gptq_output_error is the same quantity through H: (2/N)·‖(W − Ŵ)Xᵀ‖² */
    double pg, pr;
    assert_int_equal(gptq_output_error(&g, w, H, &pg), 0);
    assert_int_equal(gptq_output_error(&r, w, H, &pr), 0);
    assert_true(fabs(pg - 2 * eg / TOK) <= 1e-3 * pg);
    assert_true(fabs(pr - 2 * er / TOK) <= 1e-3 * pr);
    free_lin(&g);
    free_lin(&r);
    free(x);
    free(w);
    free(H);
    free(wf);
}

/* act-order = the natural-order pass on W[:, p], H[p][p] with p by descending diag H
 * (stable), each column put back where it came from */
static void test_act_order_is_permuted_pass(void **state)
{
    (void)state;
    enum { OUT = 24, IN = 48, TOK = 400 };
    rng_state rng;
    rng_seed(&rng, 33);
    real *x = alloc_real(TOK * IN), *w = alloc_real(OUT * IN), *H = alloc_real(IN * IN);
    real *wp = alloc_real(OUT * IN), *hp = alloc_real(IN * IN);
    float *wf = malloc(sizeof(float) * OUT * IN), *d1 = malloc(sizeof(float) * OUT * IN);
    float *d2 = malloc(sizeof(float) * OUT * IN);
    assert_true(wf && d1 && d2);
    double colscale[IN];
    for (int j = 0; j < IN; j++)
        colscale[j] = j == 7 || j == 30 ? 12.0 : 0.2 + rng_uniform(&rng); /* two outliers */
    fill_low_rank(x, TOK, IN, 6, 0.1, colscale, &rng);
    fill_normal(w, OUT * IN, &rng, 0.5);
    for (int i = 0; i < OUT * IN; i++)
        wf[i] = (float)w[i];
    hessian_of(x, TOK, IN, H);
    int p[IN], used[IN] = {0};
    for (int k = 0; k < IN; k++) { /* selection: the largest remaining diag, lowest index */
        int best = -1;
        for (int j = 0; j < IN; j++)
            if (!used[j] && (best < 0 || H[j * IN + j] > H[best * IN + best]))
                best = j;
        p[k] = best;
        used[best] = 1;
    }
    assert_true(p[0] == 7 || p[0] == 30);
    for (int r = 0; r < OUT; r++)
        for (int j = 0; j < IN; j++)
            wp[r * IN + j] = w[r * IN + p[j]];
    for (int i = 0; i < IN; i++)
        for (int j = 0; j < IN; j++)
            hp[i * IN + j] = H[p[i] * IN + p[j]];
    qlinear a, b, r;
    const gptq_opts act = {0.01, 16, 1, 0};
    assert_int_equal(gptq_quantize_opts(&a, w, OUT, IN, H, 4, &act), 0);
    assert_int_equal(gptq_quantize(&b, wp, OUT, IN, hp, 4, 0.01, 16), 0);
    assert_int_equal(qlinear_dequantize(&a, d1), 0);
    assert_int_equal(qlinear_dequantize(&b, d2), 0);
    for (int rr = 0; rr < OUT; rr++)
        for (int j = 0; j < IN; j++)
            assert_memory_equal(&d1[rr * IN + p[j]], &d2[rr * IN + j], sizeof(float));
    assert_memory_equal(a.scales, b.scales, sizeof(float) * OUT);
    assert_int_equal(qlinear_quantize_rtn(&r, wf, OUT, IN, 4), 0);
    double ea = output_error(&a, w, x, TOK), er = output_error(&r, w, x, TOK);
    fprintf(stderr, "output error: GPTQ act-order %.4g, RTN %.4g (ratio %.3f)\n", ea, er, ea / er);
    assert_true(ea < er);
    free_lin(&a);
    free_lin(&b);
    free_lin(&r);
    free(x), free(w), free(H), free(wp), free(hp), free(wf), free(d1), free(d2);
}

static void test_refuses_bad_input(void **state)
{
    (void)state;
    qlinear l;
    real w[2 * 4] = {1, 2, 3, 4, 5, 6, 7, 8};
    real indef[16] = {1, 2, 0, 0, 2, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    assert_int_equal(gptq_quantize(&l, w, 2, 4, indef, 4, 0, 128), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "not positive definite"));
    real nan_h[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    nan_h[5] = NAN;
    assert_int_equal(gptq_quantize(&l, w, 2, 4, nan_h, 4, 0.01, 128), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "Hessian element 5"));
    nan_h[5] = 1;
    assert_int_equal(gptq_quantize(&l, w, 2, 4, nan_h, 4, 0.01, 0), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "block 0"));
    assert_int_equal(gptq_quantize(&l, w, 4, 2, nan_h, 4, 0.01, 128) == FQ_OK, 1);
    free_lin(&l);
    real h3[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    assert_int_equal(gptq_quantize(&l, w, 2, 3, h3, 4, 0.01, 128), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "odd"));
    gptq_hessian acc;
    real out[4];
    assert_int_equal(gptq_hessian_init(&acc, 2), 0);
    assert_int_equal(gptq_hessian_get(&acc, out), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "no input rows"));
    gptq_hessian_free(&acc);
}

static void test_plan_without_factorisation(void **state)
{
    (void)state;
    enum { OUT = 5, IN = 12, TOK = 40 };
    rng_state rng;
    rng_seed(&rng, 77);
    real *x = alloc_real(TOK * IN), *w = alloc_real(OUT * IN), *H = alloc_real(IN * IN);
    fill_low_rank(x, TOK, IN, 3, 0.2, NULL, &rng);
    for (int t = 0; t < TOK; t++)
        x[t * IN + 4] = 0; /* input 4 is dead */
    fill_normal(w, OUT * IN, &rng, 0.1);
    hessian_of(x, TOK, IN, H);
    for (int ao = 0; ao <= 1; ao++) {
        gptq_opts o = {0.05, 5, ao, 1};
        gptq_plan full, split;
        assert_int_equal(gptq_plan_make(&full, w, OUT, IN, H, 4, &o), FQ_OK);
        assert_int_equal(gptq_plan_make_ex(&split, w, OUT, IN, H, 4, &o, 0), FQ_OK);
        assert_non_null(full.U);
        assert_null(full.Hd);
        assert_null(split.U);
        assert_non_null(split.Hd);
        assert_true(split.damp == 0.05);
        assert_memory_equal(full.scales, split.scales, sizeof(float) * OUT);
        assert_memory_equal(full.W, split.W, sizeof(real) * OUT * IN);
        assert_int_equal(!!full.perm, ao);
        if (ao)
            assert_memory_equal(full.perm, split.perm, sizeof(int) * IN);
        double mean = 0;
        for (int i = 0; i < IN; i++)
            mean += H[i * IN + i] == 0 ? 1.0 : (double)H[i * IN + i];
        mean /= IN;
        for (int i = 0; i < IN; i++)
            for (int j = 0; j < IN; j++) {
                int pi = ao ? split.perm[i] : i, pj = ao ? split.perm[j] : j;
                double h = H[pi * IN + pj];
                if (i == j)
                    h = (h == 0 ? 1.0 : h) + 0.05 * mean;
                assert_true(fabs(split.Hd[i * IN + j] - h) <= 1e-12 * (1 + fabs(h)));
            }
        /* the split plan factorised on the host is the full plan */
        assert_int_equal(gptq_plan_factor(&split), FQ_OK);
        assert_null(split.Hd);
        assert_memory_equal(full.U, split.U, sizeof(real) * IN * IN);
        assert_int_equal(gptq_plan_factor(&split), FQ_ERR); /* Hd consumed */
        /* the full plan's CPU sweep is gptq_quantize_opts */
        int8_t *codes = malloc(OUT * IN);
        qlinear a, b;
        assert_int_equal(gptq_sweep(&full, codes), FQ_OK);
        assert_int_equal(gptq_plan_finish(&full, codes, &a), FQ_OK);
        assert_int_equal(gptq_quantize_opts(&b, w, OUT, IN, H, 4, &o), FQ_OK);
        assert_memory_equal(a.codes, b.codes, OUT * IN / 2);
        assert_memory_equal(a.scales, b.scales, sizeof(float) * OUT);
        free_lin(&a);
        free_lin(&b);
        gptq_plan_free(&full);
        gptq_plan_free(&split);
    }
    free(x), free(w), free(H);
}

static void test_clip_search_picks_best_ratio(void **state)
{
    (void)state;
    enum { OUT = 16, IN = 64 };
    rng_state rng;
    rng_seed(&rng, 21);
    real w[OUT * IN], H[IN * IN], h[IN];
    float wf[OUT * IN];
    fill_normal(w, OUT * IN, &rng, 1.0);
    for (int r = 0; r < OUT; r += 2) /* heavy tails: one input 6× the row's others */
        w[r * IN + (r % IN)] = 6.0f * (r % 4 ? 1 : -1);
    for (int i = 0; i < OUT * IN; i++)
        wf[i] = (float)w[i];
    memset(H, 0, sizeof H);
    for (int j = 0; j < IN; j++)
        H[j * IN + j] = h[j] = (real)(0.5 + rng_uniform(&rng));
    qlinear c, r;
    const gptq_opts clip = {0.01, 16, 0, 1};
    assert_int_equal(gptq_quantize_opts(&c, w, OUT, IN, H, 4, &clip), 0);
    assert_int_equal(qlinear_quantize_rtn(&r, wf, OUT, IN, 4), 0);
    int8_t codes[OUT * IN];
    int4_unpack(c.codes, OUT * IN, codes);
    int shrunk = 0;
    for (int i = 0; i < OUT; i++) {
        const real *wr = w + i * IN;
        double best = INFINITY, chosen = NAN;
        int on_grid = 0;
        for (int k = 0; k <= 10; k++) {
            float s = r.scales[i] * (1.0f - 0.02f * (float)k);
            double err = 0;
            for (int j = 0; j < IN; j++) {
                double q = fminf(fmaxf(rintf((float)wr[j] / s), -8), 7);
                err += (double)h[j] * (wr[j] - s * q) * (wr[j] - s * q);
            }
            best = fmin(best, err);
            if (s == c.scales[i]) {
                on_grid = 1;
                chosen = err;
            }
        }
        assert_true(on_grid);
        assert_true(chosen <= best * (1 + 1e-9));
        shrunk += c.scales[i] < r.scales[i];
        for (int j = 0; j < IN; j++) /* diagonal H: GPTQ spreads nothing */
            assert_int_equal(codes[i * IN + j],
                             (int8_t)fminf(fmaxf(rintf(wf[i * IN + j] / c.scales[i]), -8), 7));
    }
    assert_true(shrunk >= OUT / 4);
    free_lin(&c);
    free_lin(&r);
}

/* qlinear_dequantize decodes 4-bit rows on threads straight from the packed bytes: it must
 * give, element for element, scale × the code int4_unpack reads (the serial form it
 * replaced), for many rows (several thread ranges) and for 8-bit codes. */
static void test_dequantize_matches_codes(void **state)
{
    (void)state;
    const int out = 700, in = 3000;
    size_t n = (size_t)out * in;
    float *w = malloc(sizeof(float) * n), *dq = malloc(sizeof(float) * n);
    int8_t *codes = malloc(n);
    assert_non_null(w);
    assert_non_null(dq);
    assert_non_null(codes);
    for (size_t i = 0; i < n; i++)
        w[i] = (float)sin(0.001 * (double)i * (double)(i % 97)) * (float)(1 + i % 5);
    for (int bits = 4; bits <= 8; bits += 4) {
        qlinear l;
        memset(&l, 0, sizeof l);
        assert_int_equal(qlinear_quantize_rtn(&l, w, out, in, bits), 0);
        assert_int_equal(qlinear_dequantize(&l, dq), 0);
        if (bits == 4)
            int4_unpack(l.codes, n, codes);
        else
            memcpy(codes, l.codes, n);
        size_t bad = 0;
        for (int r = 0; r < out; r++)
            for (int j = 0; j < in; j++) {
                size_t i = (size_t)r * in + j;
                bad += dq[i] != l.scales[r] * (float)codes[i];
            }
        assert_int_equal(bad, 0);
        qlinear_free(&l);
    }
    free(w);
    free(dq);
    free(codes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_hessian_is_rtn),
        cmocka_unit_test(test_beats_rtn_on_correlated_inputs),
        cmocka_unit_test(test_act_order_is_permuted_pass),
        cmocka_unit_test(test_refuses_bad_input),
        cmocka_unit_test(test_clip_search_picks_best_ratio),
        cmocka_unit_test(test_plan_without_factorisation),
        cmocka_unit_test(test_dequantize_matches_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
