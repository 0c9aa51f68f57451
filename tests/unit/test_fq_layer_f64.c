/* test_fq_layer_f64.c — the FlatQuant training layer (core/fq_layer.c) in float64.
 *
 * 1. Exactness: with every quantizer off (bits 16) the transforms must cancel, so the
 *    training forward equals the FP layer (llama_layer_fwd) — with identity factors and
 *    c = 1, and with random factors, λ ≠ 1, random c, TP blocks, separate_vtrans and the
 *    direct form.
 * 2. Gradients, bits 16: every parameter against central differences of the forward.
 * 3. Gradients, bits 4: the analytic backward (quantizer.c's straight-through rules)
 *    against central differences of an independent straight-through SURROGATE forward
 *    written here: each fake quantizer keeps its base-point rounding offsets, in-range
 *    masks, clamped codes and zero points frozen, so its exact derivative is the STE one
 *    (∂û/∂u = μ, ∂û/∂s = q − μ·u/s, range through max/min and the clip sigmoids).
 * Shapes: d 16 (4 × 4), h 4, g 2, dh 4, f 24 (4 × 6; 2 × 6 per block when T = 2), B 2, S 5.
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
#include "cayley.h"
#include "fq_layer.h"
#include "hadamard.h"
#include "llama_model.h"
#include "quantizer.h"

#include "fq_fixture.h"

/* The FP layer output and the fq_stats of the same pass (which must agree with it). */
static void fp_reference(fixture *fx, real *y_fp, fq_stats *st)
{
    llama_scratch w;
    assert_int_equal(llama_scratch_init(&w, &fx->c, B, S), 0);
    long nd = (long)fx->N * fx->c.hidden;
    memcpy(y_fp, fx->x, sizeof(real) * nd);
    llama_layer_fwd(y_fp, &fx->l, &fx->c, &fx->rope, B, S, &w);
    real *y2 = alloc_real(nd);
    memcpy(y2, fx->x, sizeof(real) * nd);
    assert_ok(fq_stats_init(st, &fx->c));
    assert_ok(fq_stats_layer_fwd(st, y2, &fx->l, &fx->c, &fx->rope, B, S, &w));
    assert_true(max_abs_diff(y2, y_fp, nd) == 0);
    assert_true(st->tokens == fx->N && st->attn_in[0] > 0 && st->down_in[0] > 0);
    free(y2);
    llama_scratch_free(&w);
}

/* Move λ and c away from 1 and the clip logits away from 4 so nothing is special. */
static void perturb_params(fq_params *P, uint64_t seed, int clips)
{
    rng_state rng;
    rng_seed(&rng, seed);
    for (int i = 0; i < P->nfactors && !P->direct_inv; i++)
        for (int j = 0; j < P->fac[i].k; j++)
            P->p[P->fac[i].lambda + j] = (real)(1 + 0.25 * rng_normal(&rng));
    for (size_t j = P->group_off[FQ_G_SCALE]; j < P->group_off[FQ_G_WCLIP]; j++)
        P->p[j] *= (real)exp(0.2 * rng_normal(&rng));
    if (clips)
        for (size_t j = P->group_off[FQ_G_WCLIP]; j < P->n; j++)
            P->p[j] = (real)(2.5 + rng_uniform(&rng));
}

static fq_recipe recipe_bits(int bits)
{
    fq_recipe r = fq_recipe_defaults();
    r.w_bits = r.a_bits = r.kv_bits = bits;
    return r;
}

static void check_equals_fp(fq_recipe r, int perturb, double tol)
{
    fixture fx;
    fixture_init(&fx, 11);
    long nd = (long)fx.N * fx.c.hidden;
    real *y_fp = alloc_real(nd);
    fq_stats st;
    fp_reference(&fx, y_fp, &st);
    fq_params P;
    assert_ok(fq_params_init(&P, &fx.c, &r, &fx.l, &st));
    if (perturb)
        perturb_params(&P, 5, 0);
    fq_tape *tp;
    assert_ok(fq_tape_create(&tp, &P, B, S, NULL));
    assert_ok(fq_layer_fwd(tp, &P, &fx.l, &fx.rope, fx.x, fx.y));
    double err = max_abs_diff(fx.y, y_fp, nd);
    if (err > tol)
        fprintf(stderr, "training forward vs FP layer: max |diff| %.3g (tol %.1g)\n", err, tol);
    assert_true(err <= tol);
    /* The transforms really are not the identity in the random case. */
    if (perturb)
        assert_true(fabs(P.p[P.c_a] - 1) > 1e-3);
    fq_tape_free(tp);
    fq_params_free(&P);
    fq_stats_free(&st);
    free(y_fp);
    fixture_free(&fx);
}

static void test_identity_bits16_equals_fp(void **state)
{
    (void)state;
    fq_recipe r = recipe_bits(16);
    r.init = FQ_INIT_IDENTITY;
    r.scale_init = FQ_SCALE_ONE;
    check_equals_fp(r, 0, 1e-12);
}

static void test_random_bits16_equals_fp(void **state)
{
    (void)state;
    fq_recipe r = recipe_bits(16);
    check_equals_fp(r, 1, 1e-10);
    r.tp_blocks = 2;
    check_equals_fp(r, 1, 1e-10);
    r.separate_vtrans = 1;
    check_equals_fp(r, 1, 1e-10);
    r.tp_blocks = 1;
    r.direct_inv = 1;
    check_equals_fp(r, 1, 1e-10);
}

/* Issue 10's starting points: each must be exact (bits 16 ⇒ the FP layer) in SVD and
 * direct form, with and without TP blocks, and the Hadamard ones must really start from
 * the normalised Hadamard matrix of each factor's size (d 16 → 4 × 4, f 24 → 4 × 6 where
 * 6 has no Hadamard matrix and hadamard.h's random-orthogonal fallback is used, h 4,
 * dh 4; the SmoothQuant scales of smoothrot are checked against the baseline's own code in
 * test_transform_init.c). */
static void test_each_init_bits16_equals_fp(void **state)
{
    (void)state;
    const fq_transform_init inits[] = {FQ_INIT_RANDOM, FQ_INIT_IDENTITY, FQ_INIT_HADAMARD,
                                       FQ_INIT_SMOOTHROT};
    for (int i = 0; i < 4; i++) {
        fq_recipe r = recipe_bits(16);
        r.init = inits[i];
        check_equals_fp(r, 0, 1e-10);
        r.tp_blocks = 2;
        check_equals_fp(r, 0, 1e-10);
        r.tp_blocks = 1;
        r.direct_inv = 1;
        check_equals_fp(r, 0, 1e-10);
    }
}

static void test_hadamard_init_is_hadamard(void **state)
{
    (void)state;
    fixture fx;
    fixture_init(&fx, 11);
    long nd = (long)fx.N * fx.c.hidden;
    real *y_fp = alloc_real(nd);
    fq_stats st;
    fp_reference(&fx, y_fp, &st);
    for (int direct = 0; direct < 2; direct++) {
        fq_recipe r = recipe_bits(4);
        r.init = FQ_INIT_HADAMARD;
        r.direct_inv = direct;
        fq_params P;
        assert_ok(fq_params_init(&P, &fx.c, &r, &fx.l, &st));
        for (int i = 0; i < P.nfactors; i++) {
            int k = P.fac[i].k, is_random;
            real *h = alloc_real((long)k * k), *m = alloc_real((long)k * k);
            real *u = alloc_real((long)k * k), *v = alloc_real((long)k * k);
            real *work = alloc_real(svd_factor_fwd_work(k));
            assert_ok(hadamard_matrix(k, h, r.seed + (uint64_t)i, &is_random));
            if (direct)
                memcpy(m, P.p + P.fac[i].m, sizeof(real) * k * k);
            else
                assert_ok(svd_factor_fwd(m, NULL, u, v, P.p + P.fac[i].theta_u,
                                         P.p + P.fac[i].theta_v, P.p + P.fac[i].lambda, k,
                                         work));
            double err = max_abs_diff(m, h, (long)k * k);
            if (err > 1e-12)
                fprintf(stderr, "factor %s: |M - H| = %.3g\n", P.fac[i].name, err);
            assert_true(err <= 1e-12);
            /* a real Hadamard factor has entries ±1/√k (6 is the random fallback) */
            if (!is_random)
                assert_true(fabs(fabs(m[k - 1]) - 1 / sqrt((double)k)) < 1e-12);
            free(h);
            free(m);
            free(u);
            free(v);
            free(work);
        }
        fq_params_free(&P);
    }
    fq_stats_free(&st);
    free(y_fp);
    fixture_free(&fx);
}

/* ---- straight-through surrogate quantizers (record at the base point, then replay) ---- */
enum { MAX_CALLS = 32 };
static struct {
    int record, call;
    size_t n[MAX_CALLS];
    double *delta[MAX_CALLS], *q0[MAX_CALLS], *z0[MAX_CALLS];
    unsigned char *mu[MAX_CALLS];
} ste;

static int ste_ties; /* see ste_count_ties */

static void ste_reset(void)
{
    ste_ties = 0;
    for (int i = 0; i < MAX_CALLS; i++) {
        free(ste.delta[i]);
        free(ste.q0[i]);
        free(ste.z0[i]);
        free(ste.mu[i]);
    }
    memset(&ste, 0, sizeof ste);
}

/* Slot of this call: allocated when recording, checked when replaying. */
static int ste_slot(size_t n, size_t nz)
{
    int i = ste.call++;
    assert_true(i < MAX_CALLS);
    if (ste.record) {
        ste.n[i] = n;
        ste.delta[i] = calloc(n, sizeof(double));
        ste.q0[i] = calloc(n, sizeof(double));
        ste.mu[i] = calloc(n, 1);
        ste.z0[i] = calloc(nz ? nz : 1, sizeof(double));
        assert_non_null(ste.delta[i]);
    } else {
        assert_true(ste.n[i] == n);
    }
    return i;
}

/* Rows whose max or min is attained twice, or is exactly 0: kinks of the surrogate. */
static void ste_count_ties(const real *u, int n)
{
    if (!ste.record)
        return;
    real mx = u[0], mn = u[0];
    for (int j = 1; j < n; j++) {
        mx = fmax(mx, u[j]);
        mn = fmin(mn, u[j]);
    }
    int cmx = 0, cmn = 0;
    for (int j = 0; j < n; j++) {
        cmx += u[j] == mx;
        cmn += u[j] == mn;
    }
    if (cmx > 1 || cmn > 1 || mx == 0 || mn == 0)
        ste_ties++;
}

/* One element: û = s·(μ0(u/s + δ0) + (1 − μ0)q0 − z0). */
static real ste_elem(int i, size_t e, real u, real s, double z, int minq, int maxq)
{
    if (ste.record) {
        double x = (double)u / s, q = rint(x) + z;
        ste.mu[i][e] = q >= minq && q <= maxq;
        ste.q0[i][e] = q < minq ? minq : (q > maxq ? maxq : q);
        ste.delta[i][e] = rint(x) - x;
    }
    double code = ste.mu[i][e] ? (double)u / s + ste.delta[i][e] + z : ste.q0[i][e];
    return (real)(s * (code - z));
}

static int ste_act_sym(real *out, real *scale, const real *in, int rows, int k, int blocks,
                       int bits, real cmax, real cmin)
{
    int i = ste_slot((size_t)rows * k, 0), kb = k / blocks;
    int maxq = (1 << (bits - 1)) - 1, minq = -(1 << (bits - 1));
    real km = quant_sigmoid(cmax), kn = quant_sigmoid(cmin);
    for (long r = 0; r < (long)rows * blocks; r++) {
        const real *u = in + r * kb;
        ste_count_ties(u, kb);
        real mx = u[0], mn = u[0];
        for (int j = 1; j < kb; j++) {
            mx = fmax(mx, u[j]);
            mn = fmin(mn, u[j]);
        }
        real m = fmax(mx, 0) * km, l = fmin(mn, 0) * kn;
        real t = fmax(-l, m), s = t == 0 ? 1 : t / maxq;
        scale[r] = s;
        for (int j = 0; j < kb; j++)
            out[r * kb + j] = ste_elem(i, (size_t)r * kb + j, u[j], s, 0, minq, maxq);
    }
    return 0;
}

static int ste_kv_asym(real *out, real *scale, real *zero, const real *in, int rows, int len,
                       int bits, real cmax, real cmin)
{
    int i = ste_slot((size_t)rows * len, (size_t)rows), qmax = (1 << bits) - 1;
    real km = quant_sigmoid(cmax), kn = quant_sigmoid(cmin);
    for (long r = 0; r < rows; r++) {
        const real *u = in + r * len;
        ste_count_ties(u, len);
        real mx = u[0], mn = u[0];
        for (int j = 1; j < len; j++) {
            mx = fmax(mx, u[j]);
            mn = fmin(mn, u[j]);
        }
        real m = fmax(mx, 0) * km, l = fmin(mn, 0) * kn;
        if (m == 0 && l == 0) {
            l = -1;
            m = 1;
        }
        real s = (m - l) / qmax;
        if (ste.record)
            ste.z0[i][r] = rint(-l / s);
        scale[r] = s;
        zero[r] = (real)ste.z0[i][r];
        for (int j = 0; j < len; j++)
            out[r * len + j] = ste_elem(i, (size_t)r * len + j, u[j], s, ste.z0[i][r], 0, qmax);
    }
    return 0;
}

static int ste_weight_lwc(real *out, real *scale, const real *w, int rows, int cols, int bits,
                          const real *a, const real *b)
{
    int i = ste_slot((size_t)rows * cols, 0);
    int maxq = (1 << (bits - 1)) - 1, minq = -(1 << (bits - 1));
    for (long r = 0; r < rows; r++) {
        const real *u = w + r * cols;
        real mx = u[0], mn = u[0];
        for (int j = 1; j < cols; j++) {
            mx = fmax(mx, u[j]);
            mn = fmin(mn, u[j]);
        }
        real hi = mx * quant_sigmoid(a[r]), lo = mn * quant_sigmoid(b[r]);
        real cmx = -INFINITY, cmn = INFINITY;
        for (int j = 0; j < cols; j++) {
            real v = fmin(fmax(u[j], lo), hi);
            out[r * cols + j] = v;
            cmx = fmax(cmx, v);
            cmn = fmin(cmn, v);
        }
        real t = fmax(-fmin(cmn, 0), fmax(cmx, 0));
        real s = fmax(t, 1e-5) / maxq;
        scale[r] = s;
        for (int j = 0; j < cols; j++)
            out[r * cols + j] =
                ste_elem(i, (size_t)r * cols + j, out[r * cols + j], s, 0, minq, maxq);
    }
    return 0;
}

static const fq_quant_ops ste_ops = {ste_act_sym, ste_kv_asym, ste_weight_lwc};

/* ---- gradient checks ---- */
typedef struct {
    fixture *fx;
    fq_params *P;
    fq_tape *tp;
} loss_ctx;

/* L = ½ Σ (y − target)² */
static double layer_loss(void *vctx)
{
    loss_ctx *c = vctx;
    ste.call = 0;
    if (fq_layer_fwd(c->tp, c->P, &c->fx->l, &c->fx->rope, c->fx->x, c->fx->y))
        return NAN;
    double L = 0;
    for (long i = 0; i < (long)c->fx->N * c->fx->c.hidden; i++) {
        double e = (double)c->fx->y[i] - (double)c->fx->target[i];
        L += 0.5 * e * e;
    }
    return L;
}

static void check_gradients(fq_recipe r, int surrogate)
{
    fixture fx;
    fixture_init(&fx, 21);
    long nd = (long)fx.N * fx.c.hidden;
    real *y_fp = alloc_real(nd), *gy = alloc_real(nd), *y_real = alloc_real(nd);
    fq_stats st;
    fp_reference(&fx, y_fp, &st);
    fq_params P;
    assert_ok(fq_params_init(&P, &fx.c, &r, &fx.l, &st));
    perturb_params(&P, 9, 1);
    fq_tape *tp, *tp_ste = NULL;
    assert_ok(fq_tape_create(&tp, &P, B, S, NULL));
    /* analytic gradient from the real quantizers */
    assert_ok(fq_layer_fwd(tp, &P, &fx.l, &fx.rope, fx.x, y_real));
    for (long i = 0; i < nd; i++)
        gy[i] = y_real[i] - fx.target[i];
    assert_ok(fq_layer_bwd(tp, &P, &fx.l, &fx.rope, gy));
    loss_ctx ctx = {&fx, &P, tp};
    if (surrogate) {
        ste_reset();
        assert_ok(fq_tape_create(&tp_ste, &P, B, S, &ste_ops));
        ctx.tp = tp_ste;
        ste.record = 1;
        layer_loss(&ctx);
        ste.record = 0;
        /* A row whose extreme value is attained twice (or is 0) is a kink of the
         * surrogate, where a central difference averages two one-sided slopes and the
         * even tie split of the STE cannot match. Position 0 makes such rows likely
         * (its attention output is V̂ itself, with repeated 4-bit codes); the fixture
         * is chosen without them, and this says so loudly if it ever changes. */
        if (ste_ties)
            fprintf(stderr, "%d quantizer rows tie at the base point: the FD reference is "
                    "not valid there (change the fixture seed)\n", ste_ties);
        assert_int_equal(ste_ties, 0);
        /* at the base point the surrogate is the real forward */
        assert_true(max_abs_diff(fx.y, y_real, nd) < 1e-12);
        /* and the quantizers are not idle: the output moved away from the FP layer */
        assert_true(max_abs_diff(y_real, y_fp, nd) > 1e-3);
    }
    int bad = 0;
    for (int gi = 0; gi < FQ_NGROUPS; gi++) {
        size_t lo = P.group_off[gi], hi = P.group_off[gi + 1];
        double gmax = 0;
        for (size_t j = lo; j < hi; j++)
            gmax = fmax(gmax, fabs((double)P.g[j]));
        if (!surrogate) {
            /* bits 16: the output does not depend on any parameter (the transforms cancel,
             * no clipping), so the weight-side and activation-side contributions must
             * cancel too; the clip logits see no gradient at all */
            if (gmax > 1e-9)
                fprintf(stderr, "%s: gradient %.3g at bits 16 (expected ~0)\n",
                        fq_group_names[gi], gmax);
            assert_true(gi >= FQ_G_WCLIP ? gmax == 0 : gmax <= 1e-9);
            continue;
        }
        assert_true(gi != FQ_G_TRANSFORM || gmax > 1e-6);
        bad += fd_check(fq_group_names[gi], layer_loss, &ctx, P.p + lo, P.g + lo,
                        (long)(hi - lo), 1e-6, 2e-6);
    }
    assert_int_equal(bad, 0);
    fq_tape_free(tp);
    fq_tape_free(tp_ste);
    ste_reset();
    fq_params_free(&P);
    fq_stats_free(&st);
    free(y_fp);
    free(gy);
    free(y_real);
    fixture_free(&fx);
}

static void test_gradients_bits16(void **state)
{
    (void)state;
    fq_recipe r = recipe_bits(16);
    check_gradients(r, 0);
    r.tp_blocks = 2;
    r.separate_vtrans = 1;
    check_gradients(r, 0);
    r.tp_blocks = 1;
    r.separate_vtrans = 0;
    r.direct_inv = 1;
    check_gradients(r, 0);
}

static void test_gradients_bits4_ste(void **state)
{
    (void)state;
    fq_recipe r = recipe_bits(4);
    check_gradients(r, 1);
    r.tp_blocks = 2;
    r.share_act_clip = 1;
    check_gradients(r, 1);
    r.tp_blocks = 1;
    r.share_act_clip = 0;
    r.separate_vtrans = 1;
    r.w_bits = 8;
    r.a_bits = 16; /* W8A16KV4 mixes identity and real quantizers */
    check_gradients(r, 1);
}

static void test_recipe_refused(void **state)
{
    (void)state;
    fixture fx;
    fixture_init(&fx, 1);
    fq_recipe r = fq_recipe_defaults();
    assert_ok(fq_recipe_check(&r, &fx.c));
    r.w_bits = 9;
    assert_int_equal(fq_recipe_check(&r, &fx.c), -1);
    assert_non_null(strstr(fq_errmsg(), "w_bits"));
    r = fq_recipe_defaults();
    r.epochs = 0;
    assert_int_equal(fq_recipe_check(&r, &fx.c), -1);
    assert_non_null(strstr(fq_errmsg(), "epochs"));
    r = fq_recipe_defaults();
    r.lr = -1;
    assert_int_equal(fq_recipe_check(&r, &fx.c), -1);
    assert_non_null(strstr(fq_errmsg(), "'lr'"));
    r = fq_recipe_defaults();
    r.tp_blocks = 3;
    assert_int_equal(fq_recipe_check(&r, &fx.c), -1);
    assert_non_null(strstr(fq_errmsg(), "tp_blocks"));
    /* sq_style without statistics */
    r = fq_recipe_defaults();
    fq_params P;
    assert_int_equal(fq_params_init(&P, &fx.c, &r, &fx.l, NULL), -1);
    fixture_free(&fx);
}

/* Same seed → same initial parameters; another seed → other factors. */
static void test_init_deterministic(void **state)
{
    (void)state;
    fixture fx;
    fixture_init(&fx, 3);
    fq_recipe r = fq_recipe_defaults();
    r.scale_init = FQ_SCALE_ONE;
    fq_params a, b, c;
    assert_ok(fq_params_init(&a, &fx.c, &r, &fx.l, NULL));
    assert_ok(fq_params_init(&b, &fx.c, &r, &fx.l, NULL));
    r.seed = 1;
    assert_ok(fq_params_init(&c, &fx.c, &r, &fx.l, NULL));
    assert_true(a.n == b.n && memcmp(a.p, b.p, sizeof(real) * a.n) == 0);
    assert_true(memcmp(a.p, c.p, sizeof(real) * a.n) != 0);
    assert_true(a.p[a.lac[QL_Q]] == 4 && a.p[a.c_d] == 1);
    assert_int_equal(a.na1 * a.na2, 16);
    assert_int_equal(a.nd1, 4);
    assert_int_equal(a.nd2, 6);
    fq_params_free(&a);
    fq_params_free(&b);
    fq_params_free(&c);
    fixture_free(&fx);
}

/* The factor side runs its factors on several threads: the matrices and the folded
 * gradients must be the same bytes on 1 and on 4 threads (each factor is one thread's
 * work, so nothing may depend on the thread count), for the SVD and the direct form. */
static void factor_side(fq_params *P, int threads, real *mats, real *grad)
{
    char v[8];
    snprintf(v, sizeof v, "%d", threads);
    assert_int_equal(setenv("FLATQ_FACTOR_THREADS", v, 1), 0);
    fq_factor_mats fm;
    assert_ok(fq_factor_mats_create(&fm, P));
    assert_int_equal(fm.nthreads, threads < P->nfactors ? threads : P->nfactors);
    assert_ok(fq_factors_fwd(&fm, P));
    memcpy(mats, fm.M[0], sizeof(real) * 2 * fm.total);
    for (size_t j = 0; j < 2 * fm.total; j++)
        fm.gM[0][j] = (real)(1e-2 * sin(0.37 * (double)j));
    memset(P->g, 0, sizeof(real) * P->n);
    assert_ok(fq_factors_bwd(&fm, P));
    memcpy(grad, P->g, sizeof(real) * P->n);
    fq_factor_mats_free(&fm);
    unsetenv("FLATQ_FACTOR_THREADS");
}

static void test_factor_threads_same_bytes(void **state)
{
    (void)state;
    for (int direct = 0; direct < 2; direct++) {
        fixture fx;
        fixture_init(&fx, 5);
        fq_recipe r = fq_recipe_defaults();
        r.scale_init = FQ_SCALE_ONE;
        r.direct_inv = direct;
        fq_params P;
        assert_ok(fq_params_init(&P, &fx.c, &r, &fx.l, NULL));
        perturb_params(&P, 11, 0);
        assert_true(P.nfactors > 4);
        size_t total = 0;
        for (int i = 0; i < P.nfactors; i++)
            total += (size_t)P.fac[i].k * P.fac[i].k;
        real *m1 = alloc_real((long)(2 * total)), *m4 = alloc_real((long)(2 * total));
        real *g1 = alloc_real((long)P.n), *g4 = alloc_real((long)P.n);
        factor_side(&P, 1, m1, g1);
        factor_side(&P, 4, m4, g4);
        assert_memory_equal(m1, m4, sizeof(real) * 2 * total);
        assert_memory_equal(g1, g4, sizeof(real) * P.n);
        double gn = 0;
        for (size_t j = 0; j < P.n; j++)
            gn += fabs((double)g1[j]);
        assert_true(gn > 0); /* the fold wrote something */
        free(m1);
        free(m4);
        free(g1);
        free(g4);
        fq_params_free(&P);
        fixture_free(&fx);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_bits16_equals_fp),
        cmocka_unit_test(test_each_init_bits16_equals_fp),
        cmocka_unit_test(test_hadamard_init_is_hadamard),
        cmocka_unit_test(test_random_bits16_equals_fp),
        cmocka_unit_test(test_gradients_bits16),
        cmocka_unit_test(test_gradients_bits4_ste),
        cmocka_unit_test(test_recipe_refused),
        cmocka_unit_test(test_init_deterministic),
        cmocka_unit_test(test_factor_threads_same_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
