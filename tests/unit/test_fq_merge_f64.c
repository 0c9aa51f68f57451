/* test_fq_merge_f64.c — FlatQuant reparameterisation (core/fq_merge.c) in float64.
 *
 * The merged layer — γ ∘ c, weights with the inverse transforms, clip, M_v and c_d folded
 * in, online factors materialised by fq_merge's own float64 code — is run through a plain
 * reference forward written here (online Kronecker / head / K transforms, quantizers in
 * their ratio form, RTN-dequantized weights). With bits 16 it must equal the training
 * forward (core/fq_layer.c) to 1e-10 for random factors, λ ≠ 1, random c, TP blocks,
 * separate_vtrans and the direct form; with W4A4KV4 the codes must be the same, so the
 * outputs agree to rounding.
 */
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
#include "fq_layer.h"
#include "fq_merge.h"
#include "kron.h"
#include "llama_model.h"
#include "quantizer.h"

#include "fq_fixture.h"

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


/* RTN dequantized copy of w (bits 16: w itself). */
static real *rtn_dequant(const real *w, int rows, int cols, int bits)
{
    real *o = alloc_real((long)rows * cols);
    memcpy(o, w, sizeof(real) * rows * cols);
    if (bits == 16)
        return o;
    double qmax = (1 << (bits - 1)) - 1;
    for (long r = 0; r < rows; r++) {
        real *wr = o + r * cols;
        double mx = 0;
        for (int j = 0; j < cols; j++)
            mx = fmax(mx, fabs(wr[j]));
        double s = fmax(mx, 1e-5) / qmax;
        for (int j = 0; j < cols; j++)
            wr[j] = (real)(s * fmin(fmax(rint(wr[j] / s), -qmax - 1), qmax));
    }
    return o;
}

static void act_q(real *x, int rows, int k, int blocks, int bits, const real *clip)
{
    if (bits == 16)
        return;
    real *sc = alloc_real((long)rows * blocks);
    assert_int_equal(quant_act_sym_ratio(x, sc, x, rows, k, blocks, bits, clip[0], clip[1]), 0);
    free(sc);
}

/* Row-wise block transform y = x·blockdiag(L_t ⊗ R_t) (R NULL: head mixing). */
static void blocks_fwd(real *y, const real *x, int rows, int T, int n1, int n2, const real *L,
                       const real *R)
{
    int nb = n1 * n2;
    real *a = alloc_real((long)rows * nb), *b = alloc_real((long)rows * nb),
         *w = alloc_real(2L * rows * nb);
    for (int t = 0; t < T; t++) {
        for (int r = 0; r < rows; r++)
            memcpy(a + (long)r * nb, x + ((long)r * T + t) * nb, sizeof(real) * nb);
        if (R)
            assert_int_equal(kron_fwd(b, a, rows, n1, n2, L + (long)t * n1 * n1,
                                      R + (long)t * n2 * n2, w), 0);
        else
            assert_int_equal(head_transform_fwd(b, a, rows, n1, n2, L + (long)t * n1 * n1, w), 0);
        for (int r = 0; r < rows; r++)
            memcpy(y + ((long)r * T + t) * nb, b + (long)r * nb, sizeof(real) * nb);
    }
    free(a);
    free(b);
    free(w);
}

/* The quantized layer as inference runs it, from the merged parameters. */
static void merged_fwd(real *y, const fixture *fx, const fq_params *P, const fq_merged *m)
{
    const llama_config *c = &fx->c;
    const int N = fx->N, d = c->hidden, f = c->intermediate, h = c->n_heads,
              g = c->n_kv_heads, dh = c->head_dim, qd = h * dh, kd = g * dh, T = P->T;
    const int wb = P->w_bits, ab = P->a_bits, kb = P->kv_bits;
    real *W[QL_NLINEAR];
    for (int i = 0; i < QL_NLINEAR; i++)
        W[i] = rtn_dequant(m->w[i], fq_linear_out(c, i), fq_linear_in(c, i), wb);
    real *A = alloc_real((long)N * d), *A2 = alloc_real((long)N * d), *Aq = alloc_real((long)N * d);
    real *Q = alloc_real((long)N * qd), *K = alloc_real((long)N * kd), *V = alloc_real((long)N * kd);
    real *Q2 = alloc_real((long)N * qd), *K2 = alloc_real((long)N * kd), *V2 = alloc_real((long)N * kd);
    real *O = alloc_real((long)N * qd), *O1 = alloc_real((long)N * qd);
    real *X2 = alloc_real((long)N * d), *Hu = alloc_real((long)N * f), *Hg = alloc_real((long)N * f);
    real *Z = alloc_real((long)N * f), *Z2 = alloc_real((long)N * f), *work = alloc_real(2L * N * f);
    real *sc = alloc_real((long)N * g), *zp = alloc_real((long)N * g), *att = alloc_real(2L * S * S);
    rmsnorm_fwd(A, NULL, fx->x, m->attn_norm, N, d, (real)c->rms_eps);
    assert_int_equal(kron_fwd(A2, A, N, P->na1, P->na2, m->La, m->Ra, work), 0);
    real *proj[3] = {Q, K, V};
    int rows[3] = {qd, kd, kd};
    for (int i = 0; i < 3; i++) {
        memcpy(Aq, A2, sizeof(real) * N * d);
        act_q(Aq, N, d, 1, ab, m->act_clip[i]);
        real_gemm(0, 1, N, rows[i], d, 1, Aq, d, W[i], d, 0, proj[i], rows[i]);
    }
    rope_fwd(Q, B, S, h, dh, &fx->rope);
    rope_fwd(K, B, S, g, dh, &fx->rope);
    assert_int_equal(vec_transform_fwd(Q2, Q, N * h, dh, m->Mk_inv_t), 0);
    assert_int_equal(vec_transform_fwd(K2, K, N * g, dh, m->Mk), 0);
    if (P->separate_vtrans)
        assert_int_equal(vec_transform_fwd(V2, V, N * g, dh, m->Mv), 0);
    else
        memcpy(V2, V, sizeof(real) * N * kd);
    if (kb != 16) {
        assert_int_equal(quant_kv_asym_ratio(K2, sc, zp, K2, N * g, dh, kb, m->kv_clip[0][0],
                                             m->kv_clip[0][1]), 0);
        assert_int_equal(quant_kv_asym_ratio(V2, sc, zp, V2, N * g, dh, kb, m->kv_clip[1][0],
                                             m->kv_clip[1][1]), 0);
    }
    attention_fwd(O, NULL, Q2, K2, V2, B, S, h, g, dh, att);
    blocks_fwd(O1, O, N, T, h / T, dh, m->Mo, NULL);
    act_q(O1, N, qd, T, ab, m->act_clip[QL_O]);
    memcpy(X2, fx->x, sizeof(real) * N * d);
    real_gemm(0, 1, N, d, qd, 1, O1, qd, W[QL_O], qd, 1, X2, d);
    rmsnorm_fwd(A, NULL, X2, m->mlp_norm, N, d, (real)c->rms_eps);
    assert_int_equal(kron_fwd(A2, A, N, P->na1, P->na2, m->Lug, m->Rug, work), 0);
    memcpy(Aq, A2, sizeof(real) * N * d);
    act_q(Aq, N, d, 1, ab, m->act_clip[QL_UP]);
    real_gemm(0, 1, N, f, d, 1, Aq, d, W[QL_UP], d, 0, Hu, f);
    memcpy(Aq, A2, sizeof(real) * N * d);
    act_q(Aq, N, d, 1, ab, m->act_clip[QL_GATE]);
    real_gemm(0, 1, N, f, d, 1, Aq, d, W[QL_GATE], d, 0, Hg, f);
    swiglu_fwd(Z, Hg, Hu, (size_t)N * f);
    blocks_fwd(Z2, Z, N, T, P->nd1, P->nd2, m->Ld, m->Rd);
    act_q(Z2, N, f, T, ab, m->act_clip[QL_DOWN]);
    memcpy(y, X2, sizeof(real) * N * d);
    real_gemm(0, 1, N, d, f, 1, Z2, f, W[QL_DOWN], f, 1, y, d);
    real *all[] = {A, A2, Aq, Q, K, V, Q2, K2, V2, O, O1, X2, Hu, Hg, Z, Z2, work, sc, zp, att};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
    for (int i = 0; i < QL_NLINEAR; i++)
        free(W[i]);
}

static double check_merge(fq_recipe r, double tol)
{
    fixture fx;
    fixture_init(&fx, 31);
    long nd = (long)fx.N * fx.c.hidden;
    fq_stats st;
    assert_int_equal(fq_stats_init(&st, &fx.c), 0);
    {
        llama_scratch w;
        real *tmp = alloc_real(nd);
        memcpy(tmp, fx.x, sizeof(real) * nd);
        assert_int_equal(llama_scratch_init(&w, &fx.c, B, S), 0);
        assert_int_equal(fq_stats_layer_fwd(&st, tmp, &fx.l, &fx.c, &fx.rope, B, S, &w), 0);
        llama_scratch_free(&w);
        free(tmp);
    }
    fq_params P;
    assert_ok(fq_params_init(&P, &fx.c, &r, &fx.l, &st));
    perturb_params(&P, 17, 1);
    fq_tape *tp;
    assert_ok(fq_tape_create(&tp, &P, B, S, NULL));
    assert_ok(fq_layer_fwd(tp, &P, &fx.l, &fx.rope, fx.x, fx.y));
    fq_merged m;
    assert_ok(fq_merge(&m, &P, &fx.l));
    real *y2 = alloc_real(nd);
    merged_fwd(y2, &fx, &P, &m);
    double err = max_abs_diff(y2, fx.y, nd);
    if (err > tol)
        fprintf(stderr, "merged forward vs training forward (w%d a%d kv%d, T %d): %.3g\n",
                r.w_bits, r.a_bits, r.kv_bits, r.tp_blocks, err);
    assert_true(err <= tol);
    fq_merged_free(&m);
    fq_tape_free(tp);
    fq_params_free(&P);
    fq_stats_free(&st);
    free(y2);
    fixture_free(&fx);
    return err;
}

static void test_merge_bits16_equals_training(void **state)
{
    (void)state;
    fq_recipe r = fq_recipe_defaults();
    r.w_bits = r.a_bits = r.kv_bits = 16;
    check_merge(r, 1e-10);
    r.tp_blocks = 2;
    check_merge(r, 1e-10);
    r.separate_vtrans = 1;
    check_merge(r, 1e-10);
    r.tp_blocks = 1;
    r.direct_inv = 1;
    check_merge(r, 1e-10);
}

static void test_merge_w4a4kv4_same_codes(void **state)
{
    (void)state;
    fq_recipe r = fq_recipe_defaults();
    check_merge(r, 1e-9);
    r.tp_blocks = 2;
    r.share_act_clip = 1;
    check_merge(r, 1e-9);
    r.tp_blocks = 1;
    r.share_act_clip = 0;
    r.separate_vtrans = 1;
    check_merge(r, 1e-9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_bits16_equals_training),
        cmocka_unit_test(test_merge_w4a4kv4_same_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
