/* test_baseline_quarot.c — QuaRot-RTN and smoothrot baselines on stories260K.
 *
 * With every bit width at 16 the rotations must leave the model's function unchanged, so
 * the quarot / smoothrot logits are compared with the FP model's (1e-4 of the largest
 * logit), also with tensor-parallel blocks and with the online V transform. The rotation
 * pieces are checked against the dense constructions of core/hadamard.h, the down_proj
 * statistics against a float64 recomputation of the SwiGLU input, and the clip search
 * against a float64 brute force. At W4A4KV4 QuaRot must beat RTN on the tinystories
 * sample (seqlen 512); the FP / RTN / QuaRot / smoothrot perplexities are printed.
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
#include "fileio.h"
#include "hadamard.h"
#include "job.h"
#include "llama_model.h"
#include "perplexity.h"
#include "qmodel.h"
#include "rng.h"
#include "tokenizer.h"
#include "worker/baseline_quarot.h"
#include "worker/baseline_rtn.h"
#include "worker/baseline_smoothrot.h"
#include "worker/weight_clip_mse.h"

#define MODEL_DIR "data/models/stories260K-hf"
#define EVAL_TEXT "data/text/tinystories_sample.txt"
#define CALIB_TEXT "data/text/wiki.test.paper.txt"
#define WIN 64 /* tokens of the short exactness window */

static llama_model g_fp;
static int32_t *g_ids, *g_calib;
static size_t g_n, g_ncalib;

static int setup(void **state)
{
    (void)state;
    tokenizer *tok = NULL;
    char *buf = NULL;
    size_t len = 0;
    if (llama_model_load(MODEL_DIR, &g_fp) != FQ_OK || tokenizer_load(MODEL_DIR, &tok) != FQ_OK ||
        tokenizer_encode_file(tok, EVAL_TEXT, 1, &g_ids, &g_n) != FQ_OK ||
        fq_read_file(CALIB_TEXT, &buf, &len) != FQ_OK ||
        /* a prefix of another text is enough for four 512-token calibration windows */
        tokenizer_encode(tok, buf, len < 40000 ? len : 40000, 1, &g_calib, &g_ncalib) != FQ_OK) {
        fprintf(stderr, "setup: %s\n", fq_errmsg());
        free(buf);
        tokenizer_free(tok);
        return -1;
    }
    free(buf);
    tokenizer_free(tok);
    return g_n >= 512 && g_ncalib >= 4 * 512 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    llama_model_free(&g_fp);
    free(g_ids);
    free(g_calib);
    return 0;
}

static qconfig make_qc(int bits, int tp, int sep_v, const char *method)
{
    qconfig qc;
    memset(&qc, 0, sizeof qc);
    qc.w_bits = qc.a_bits = qc.kv_bits = bits;
    qc.tp_blocks = tp;
    qc.separate_vtrans = sep_v;
    snprintf(qc.method, sizeof qc.method, "%s", method);
    return qc;
}

/* max |a − b| / max |b| over n values. */
static double rel_diff(const real *a, const real *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - (double)b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return num / den;
}

static real *fp_logits(int s)
{
    llama_runner r;
    real *lg = malloc(sizeof(real) * (size_t)s * g_fp.cfg.vocab);
    assert_non_null(lg);
    assert_int_equal(llama_runner_init(&r, &g_fp, s), 0);
    assert_int_equal(llama_window_logits(&r, g_ids, s, lg), 0);
    llama_runner_free(&r);
    return lg;
}

static real *quant_logits(const qmodel *m, int s)
{
    qmodel_runner r;
    real *lg = malloc(sizeof(real) * (size_t)s * m->cfg.vocab);
    assert_non_null(lg);
    assert_int_equal(qmodel_runner_init(&r, m, s), 0);
    if (qmodel_window_logits(&r, g_ids, s, lg) != FQ_OK)
        fail_msg("%s", fq_errmsg());
    qmodel_runner_free(&r);
    return lg;
}

/* Build the rotated 16-bit model (smoothed when down_smooth_max is given) and compare. */
static void expect_exact(int tp, int sep_v, const float *down_max)
{
    qconfig qc = make_qc(16, tp, sep_v, down_max ? "smoothrot" : "quarot");
    quarot_opts o = quarot_opts_default();
    quarot_model q;
    int rc = down_max ? baseline_smoothrot(&g_fp, &qc, &o, down_max, 0.5, &q)
                      : baseline_quarot(&g_fp, &qc, &o, NULL, &q);
    if (rc != FQ_OK)
        fail_msg("%s", fq_errmsg());
    /* the embeddings really were rotated (the test would pass trivially otherwise) */
    size_t vd = (size_t)g_fp.cfg.vocab * g_fp.cfg.hidden;
    assert_true(rel_diff(q.embed, g_fp.embed, vd) > 0.1);
    qmodel m;
    if (quarot_model_to_qmodel(&q, &g_fp.cfg, &qc, &m) != FQ_OK)
        fail_msg("%s", fq_errmsg());
    real *want = fp_logits(WIN), *got = quant_logits(&m, WIN);
    double rel = rel_diff(got, want, (size_t)WIN * g_fp.cfg.vocab);
    printf("  %s tp=%d separate_vtrans=%d: max |Δlogit| / max |logit| = %.2e\n", qc.method, tp,
           sep_v, rel);
    assert_true(rel < 1e-4);
    free(want);
    free(got);
    qmodel_free(&m);
    quarot_model_free(&q);
}

static void test_quarot_16bit_is_exact(void **state)
{
    (void)state;
    expect_exact(1, 0, NULL);
    expect_exact(2, 0, NULL); /* M_o and the down transform as two diagonal blocks */
    expect_exact(1, 1, NULL); /* H_dh applied online to v instead of merged into Wv */
}

static void test_smoothrot_16bit_is_exact(void **state)
{
    (void)state;
    float *mx = NULL, *s = NULL;
    assert_int_equal(smooth_stats_collect(&g_fp, g_calib, 4, 512, &mx), 0);
    /* the scaling must be far from the identity for the test to mean anything */
    assert_int_equal(smooth_down_scales(&g_fp, mx, 0.5, &s), 0);
    float lo = INFINITY, hi = 0;
    for (int j = 0; j < g_fp.cfg.n_layers * g_fp.cfg.intermediate; j++) {
        lo = fminf(lo, s[j]);
        hi = fmaxf(hi, s[j]);
    }
    assert_true(hi / lo > 4);
    expect_exact(1, 0, mx);
    expect_exact(2, 0, mx);
    free(mx);
    free(s);
}

/* The statistics pass against a float64 recomputation of silu(gate) ∘ up from the
 * post-attention residual (obtained by running a layer whose Wdown is zero). */
static void test_smooth_stats_match_recomputation(void **state)
{
    (void)state;
    const llama_config *c = &g_fp.cfg;
    int d = c->hidden, f = c->intermediate, s = WIN;
    float *mx = NULL;
    assert_int_equal(smooth_stats_collect(&g_fp, g_ids, 1, s, &mx), 0);
    rope_table rope;
    llama_scratch w;
    assert_int_equal(rope_table_init(&rope, c, s), 0);
    assert_int_equal(llama_scratch_init(&w, c, 1, s), 0);
    real *x = malloc(sizeof(real) * (size_t)s * d), *x2 = malloc(sizeof(real) * (size_t)s * d);
    real *zero = calloc((size_t)d * f, sizeof(real));
    assert_true(x && x2 && zero);
    llama_embed_fwd(x, g_fp.embed, d, g_ids, s);
    for (int i = 0; i < c->n_layers; i++) {
        llama_layer l = g_fp.layers[i];
        l.wdown = zero;
        memcpy(x2, x, sizeof(real) * (size_t)s * d);
        llama_layer_fwd(x2, &l, c, &rope, 1, s, &w);
        for (int j = 0; j < f; j++) {
            double best = 0;
            for (int t = 0; t < s; t++) {
                const real *r = x2 + (size_t)t * d;
                double ss = 0, gt = 0, up = 0;
                for (int k = 0; k < d; k++)
                    ss += (double)r[k] * r[k];
                double rho = 1 / sqrt(ss / d + c->rms_eps);
                for (int k = 0; k < d; k++) {
                    double b = r[k] * rho * l.mlp_norm[k];
                    gt += b * l.wgate[(size_t)j * d + k];
                    up += b * l.wup[(size_t)j * d + k];
                }
                best = fmax(best, fabs(gt / (1 + exp(-gt)) * up));
            }
            double got = mx[(size_t)i * f + j];
            if (fabs(got - best) > 1e-4 * fmax(best, 1e-3))
                fail_msg("layer %d channel %d: max |x| %g, float64 reference %g", i, j, got, best);
        }
        llama_layer_fwd(x, &g_fp.layers[i], c, &rope, 1, s, &w);
    }
    free(x);
    free(x2);
    free(zero);
    free(mx);
    rope_table_free(&rope);
    llama_scratch_free(&w);
}

/* Q = D·H_d through the fast path (quarot_rotate_head on an identity "embedding") equals
 * diag(sign)·hadamard_matrix(d) built densely; d = 384 = 12·32 as in flatq-llama-16m. */
static void test_residual_rotation_is_signed_hadamard(void **state)
{
    (void)state;
    int d = 384;
    llama_model m;
    memset(&m, 0, sizeof m);
    m.cfg.hidden = d;
    m.cfg.vocab = d;
    m.cfg.intermediate = 1024;
    m.cfg.n_heads = 6;
    m.cfg.n_kv_heads = 2;
    m.cfg.head_dim = 64;
    m.cfg.n_layers = 1;
    m.embed = calloc((size_t)d * d, sizeof(real));
    m.final_norm = malloc(sizeof(real) * d);
    assert_true(m.embed && m.final_norm);
    for (int i = 0; i < d; i++) {
        m.embed[(size_t)i * d + i] = 1;
        m.final_norm[i] = 2;
    }
    m.lm_head = m.embed;
    qconfig qc = make_qc(4, 1, 0, "quarot");
    quarot_rotations rot;
    assert_int_equal(quarot_rotations_init(&rot, &m.cfg, &qc, 7), 0);
    assert_int_equal(rot.dk, 12);
    assert_false(rot.is_random[QR_RESIDUAL]);
    assert_true(rot.is_random[QR_HEADS]); /* h = 6: no Hadamard matrix exists */
    assert_int_equal(rot.order[QR_HEADS], 6);
    char note[300];
    assert_int_equal(quarot_random_note(&rot, note, sizeof note), 1);
    assert_non_null(strstr(note, "6 (attention heads)"));
    assert_null(strstr(note, "1024"));
    assert_int_equal(rot.fn1, 32);
    assert_int_equal(rot.fn2, 32);
    real *e, *n, *h, *ref = malloc(sizeof(real) * (size_t)d * d);
    int rnd;
    assert_int_equal(quarot_rotate_head(&m, &rot, &e, &n, &h), 0);
    assert_int_equal(hadamard_matrix(d, ref, 99, &rnd), 0);
    assert_false(rnd);
    int pos = 0;
    for (int i = 0; i < d; i++) {
        pos += rot.sign[i] > 0;
        assert_true(n[i] == 1);
        for (int j = 0; j < d; j++) {
            double want = rot.sign[i] * ref[(size_t)i * d + j];
            assert_true(fabs(e[(size_t)i * d + j] - want) < 1e-6);
            assert_true(fabs(h[(size_t)i * d + j] - 2 * want) < 2e-6); /* γ_final folded */
        }
    }
    assert_true(pos > d / 4 && pos < 3 * d / 4); /* the signs are random, not all +1 */
    free(e);
    free(n);
    free(h);
    free(ref);
    quarot_rotations_free(&rot);
    free(m.embed);
    free(m.final_norm);
}

/* The down transform's factors: L ⊗ R is the dense H_f (f = 1024), and for f = 172 and
 * 11008 the K = 172 random-orthogonal part sits in L, which is orthogonal. */
static void test_down_factors(void **state)
{
    (void)state;
    llama_config c;
    memset(&c, 0, sizeof c);
    c.hidden = 64;
    c.n_heads = 8;
    c.head_dim = 8;
    c.intermediate = 1024;
    qconfig qc = make_qc(4, 1, 0, "quarot");
    quarot_rotations rot;
    assert_int_equal(quarot_rotations_init(&rot, &c, &qc, 0), 0);
    int n = 1024, rnd;
    real *ref = malloc(sizeof(real) * (size_t)n * n);
    assert_int_equal(hadamard_matrix(n, ref, 0, &rnd), 0);
    for (int i = 0; i < 32; i++)
        for (int a = 0; a < 32; a++)
            for (int j = 0; j < 32; j++)
                for (int b = 0; b < 32; b++) {
                    double got = rot.fl[i * 32 + j] * rot.fr[a * 32 + b];
                    assert_true(fabs(got - ref[(size_t)(i * 32 + a) * n + j * 32 + b]) < 1e-7);
                }
    free(ref);
    quarot_rotations_free(&rot);
    char note[300];
    int fs[2] = {172, 11008}, n2[2] = {1, 64};
    for (int t = 0; t < 2; t++) {
        c.intermediate = fs[t];
        assert_int_equal(quarot_rotations_init(&rot, &c, &qc, 3), 0);
        assert_int_equal(rot.fn1, 172);
        assert_int_equal(rot.fn2, n2[t]);
        assert_true(rot.is_random[QR_DOWN]);
        assert_int_equal(quarot_random_note(&rot, note, sizeof note), 1);
        assert_non_null(strstr(note, "172 (MLP intermediate)"));
        for (int i = 0; i < 172; i++)
            for (int j = 0; j < 172; j++) {
                double dot = 0;
                for (int k = 0; k < 172; k++)
                    dot += (double)rot.fl[i * 172 + k] * rot.fl[j * 172 + k];
                assert_true(fabs(dot - (i == j)) < 1e-5);
            }
        quarot_rotations_free(&rot);
    }
}

/* Float64 brute force of the search: the ratio with the smallest Σ|Q(w) − w|^2.4. */
static double ref_best_ratio(const float *w, int n)
{
    double mx = 0, best = INFINITY, best_p = 0;
    for (int j = 0; j < n; j++)
        mx = fmax(mx, fabs(w[j]));
    for (int i = 0; i < 80; i++) {
        double p = 1 - i / 100.0, s = fmax(p * mx, 1e-5) / 7, err = 0;
        for (int j = 0; j < n; j++) {
            double q = fmin(fmax(nearbyint(w[j] / s), -8), 7);
            err += pow(fabs(q * s - w[j]), 2.4);
        }
        if (i == 0 || err < best * (1 - 1e-9)) {
            best = err;
            best_p = p;
        }
    }
    return best_p;
}

static void test_clip_search(void **state)
{
    (void)state;
    /* no outlier: values spread over the whole 4-bit grid of the row's own max (0.3),
     * so p = 1 is exact and every smaller p adds error. (A continuous uniform row would
     * already prefer p slightly below 1: clipping its top costs less than the finer grid
     * saves.) */
    float flat[64], s, p;
    for (int j = 0; j < 64; j++)
        flat[j] = 0.3f * (float)(j % 15 - 7) / 7;
    assert_int_equal(weight_clip_search_row(flat, 64, 4, &s, &p), 0);
    assert_true(p == 1.0f);
    assert_true(fabs(s - 0.3 / 7) < 1e-8);
    assert_true(ref_best_ratio(flat, 64) == 1.0);
    /* a long row in [−1, 1] with one value 8× the bulk: clip it */
    enum { N = 1024 };
    static float row[N];
    rng_state g;
    rng_seed(&g, 5);
    for (int j = 0; j < N; j++)
        row[j] = (float)(2 * rng_uniform(&g) - 1);
    row[100] = 8;
    assert_int_equal(weight_clip_search_row(row, N, 4, &s, &p), 0);
    double want = ref_best_ratio(row, N);
    printf("  outlier row: chosen p = %.2f (float64 brute force %.2f)\n", p, want);
    assert_true(p < 1.0f);
    assert_true(fabs(p - want) < 1e-6);
    assert_true(fabs(s - fmax(p * 8.0, 1e-5) / 7) < 1e-6);
    /* bad input */
    assert_int_equal(weight_clip_search_row(row, N, 9, &s, &p), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "bits 2..8"));
    row[3] = NAN;
    assert_int_equal(weight_clip_search_row(row, N, 4, &s, &p), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "value 3"));
}

/* The qlinear holds rint(w/s)·s with the searched s, and its Σ|e|^2.4 never exceeds RTN's
 * (p = 1 is one of the candidates). */
static void test_qlinear_mse_codes(void **state)
{
    (void)state;
    enum { OUT = 16, IN = 96 };
    static float w[OUT * IN], deq[OUT * IN], deq_rtn[OUT * IN];
    rng_state g;
    rng_seed(&g, 11);
    for (int i = 0; i < OUT * IN; i++)
        w[i] = (float)rng_normal(&g);
    for (int r = 0; r < OUT; r += 3)
        w[r * IN + r] = 12; /* outliers in some rows */
    float ratios[OUT];
    qlinear l, lr;
    assert_int_equal(qlinear_quantize_mse(&l, w, OUT, IN, 4, ratios), 0);
    assert_int_equal(qlinear_quantize_rtn(&lr, w, OUT, IN, 4), 0);
    assert_int_equal(qlinear_dequantize(&l, deq), 0);
    assert_int_equal(qlinear_dequantize(&lr, deq_rtn), 0);
    int clipped = 0;
    for (int r = 0; r < OUT; r++) {
        float s, p;
        assert_int_equal(weight_clip_search_row(w + r * IN, IN, 4, &s, &p), 0);
        assert_true(l.scales[r] == s && ratios[r] == p);
        clipped += p < 1;
        double e_mse = 0, e_rtn = 0;
        for (int j = 0; j < IN; j++) {
            float q = fminf(fmaxf(rintf(w[r * IN + j] / s), -8), 7);
            assert_true(deq[r * IN + j] == q * s);
            e_mse += pow(fabs(deq[r * IN + j] - w[r * IN + j]), 2.4);
            e_rtn += pow(fabs(deq_rtn[r * IN + j] - w[r * IN + j]), 2.4);
        }
        assert_true(e_mse <= e_rtn * (1 + 1e-6));
    }
    assert_true(clipped > 0);
    free(lr.codes);
    free(lr.scales);
    free(l.codes);
    free(l.scales);
}

static double eval_ppl(window_logits_fn fn, void *ctx)
{
    ppl_result res;
    if (perplexity_eval(g_ids, g_n, 512, g_fp.cfg.vocab, 0, fn, ctx, &res) != FQ_OK)
        fail_msg("%s", fq_errmsg());
    return res.ppl;
}

static double qmodel_ppl(qmodel *m)
{
    qmodel_runner r;
    assert_int_equal(qmodel_runner_init(&r, m, 512), 0);
    double p = eval_ppl(qmodel_window_logits, &r);
    qmodel_runner_free(&r);
    qmodel_free(m);
    return p;
}

static void test_w4a4kv4_quarot_beats_rtn(void **state)
{
    (void)state;
    llama_runner fr;
    assert_int_equal(llama_runner_init(&fr, &g_fp, 512), 0);
    double fp = eval_ppl(llama_window_logits, &fr);
    llama_runner_free(&fr);

    qconfig qc = make_qc(4, 1, 0, "rtn");
    qlayer *ls = calloc((size_t)g_fp.cfg.n_layers, sizeof *ls);
    assert_non_null(ls);
    for (int i = 0; i < g_fp.cfg.n_layers; i++)
        assert_int_equal(baseline_rtn_layer(&g_fp.layers[i], &g_fp.cfg, &qc, &ls[i]), 0);
    qmodel m;
    assert_int_equal(qmodel_from_qlayers(&m, &g_fp, &qc, ls), 0);
    double rtn = qmodel_ppl(&m);
    for (int i = 0; i < g_fp.cfg.n_layers; i++)
        qlayer_free(&ls[i]);
    free(ls);

    quarot_opts o = quarot_opts_default();
    quarot_model q;
    snprintf(qc.method, sizeof qc.method, "quarot");
    assert_int_equal(baseline_quarot(&g_fp, &qc, &o, NULL, &q), 0);
    char note[300];
    if (quarot_random_note(&q.rot, note, sizeof note))
        printf("  warning: %s\n", note);
    assert_int_equal(quarot_model_to_qmodel(&q, &g_fp.cfg, &qc, &m), 0);
    quarot_model_free(&q);
    double quarot = qmodel_ppl(&m);

    float *mx = NULL;
    assert_int_equal(smooth_stats_collect(&g_fp, g_calib, 4, 512, &mx), 0);
    snprintf(qc.method, sizeof qc.method, "smoothrot");
    assert_int_equal(baseline_smoothrot(&g_fp, &qc, &o, mx, 0.5, &q), 0);
    free(mx);
    assert_int_equal(quarot_model_to_qmodel(&q, &g_fp.cfg, &qc, &m), 0);
    quarot_model_free(&q);
    double smoothrot = qmodel_ppl(&m);

    printf("  stories260K, %s, seqlen 512, W4A4KV4 ppl: FP %.3f  RTN %.3f  QuaRot %.3f  "
           "smoothrot %.3f (stats: 4×512 tokens of %s)\n", EVAL_TEXT, fp, rtn, quarot,
           smoothrot, CALIB_TEXT);
    assert_true(fp < quarot);
    assert_true(quarot < rtn);
    assert_true(isfinite(smoothrot) && smoothrot > fp);
}

static void test_bad_input(void **state)
{
    (void)state;
    qconfig qc = make_qc(4, 3, 0, "quarot"); /* 3 does not divide 8 heads */
    quarot_rotations rot;
    assert_int_equal(quarot_rotations_init(&rot, &g_fp.cfg, &qc, 0), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "tp_blocks 3"));

    qc = make_qc(4, 1, 0, "quarot");
    assert_int_equal(quarot_rotations_init(&rot, &g_fp.cfg, &qc, 0), 0);
    quarot_opts o = quarot_opts_default();
    qlayer out;
    float *s = malloc(sizeof(float) * (size_t)g_fp.cfg.intermediate);
    for (int j = 0; j < g_fp.cfg.intermediate; j++)
        s[j] = 1;
    s[5] = 0;
    assert_int_equal(baseline_quarot_layer(&g_fp.layers[0], &g_fp.cfg, &qc, &rot, &o, s, &out),
                     FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "smoothing scale 5"));
    free(s);
    o.act_clip = 0;
    assert_int_equal(
        baseline_quarot_layer(&g_fp.layers[0], &g_fp.cfg, &qc, &rot, &o, NULL, &out), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "act_clip"));
    o = quarot_opts_default();
    qconfig bad = make_qc(4, 2, 0, "quarot"); /* rotations were built for one block */
    assert_int_equal(
        baseline_quarot_layer(&g_fp.layers[0], &g_fp.cfg, &bad, &rot, &o, NULL, &out), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "blocks=2"));
    bad = make_qc(9, 1, 0, "quarot");
    assert_int_equal(
        baseline_quarot_layer(&g_fp.layers[0], &g_fp.cfg, &bad, &rot, &o, NULL, &out), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "q_proj"));
    quarot_rotations_free(&rot);

    float *mx = NULL, *sc = NULL;
    int32_t ids[4] = {1, 2, 9999, 3};
    assert_int_equal(smooth_stats_collect(&g_fp, ids, 1, 4, &mx), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "9999"));
    assert_null(mx);
    assert_int_equal(smooth_stats_collect(&g_fp, ids, 0, 4, &mx), FQ_ERR);
    assert_int_equal(smooth_stats_collect(&g_fp, g_ids, 1, 8, &mx), 0);
    assert_int_equal(smooth_down_scales(&g_fp, mx, 1.5, &sc), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "smooth_alpha 1.5"));
    mx[7] = NAN;
    assert_int_equal(smooth_down_scales(&g_fp, mx, 0.5, &sc), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "statistic 7"));
    assert_null(sc);
    free(mx);

    /* qmodel_from_parts owns its arrays even when it fails (ASan would see a leak) */
    qmodel m;
    real *e = malloc(sizeof(real) * 4), *n = malloc(sizeof(real) * 4);
    assert_int_equal(qmodel_from_parts(&m, &g_fp.cfg, &qc, NULL, e, n, e), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "NULL"));
}

static void test_opts_from_job(void **state)
{
    (void)state;
    job j;
    memset(&j, 0, sizeof j);
    j.quantization.quarot_act_clip = 0.8;
    j.quantization.quarot_kv_clip = 0.875;
    j.quantization.seed = 42;
    quarot_opts o = quarot_opts_from_job(&j);
    assert_true(o.act_clip == 0.8f && o.kv_clip == 0.875f);
    assert_true(o.seed == 42 && o.mse_clip == 1);
    o = quarot_opts_default();
    assert_true(o.act_clip == 0.9f && o.kv_clip == 0.95f && o.seed == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clip_search),
        cmocka_unit_test(test_qlinear_mse_codes),
        cmocka_unit_test(test_residual_rotation_is_signed_hadamard),
        cmocka_unit_test(test_down_factors),
        cmocka_unit_test(test_quarot_16bit_is_exact),
        cmocka_unit_test(test_smooth_stats_match_recomputation),
        cmocka_unit_test(test_smoothrot_16bit_is_exact),
        cmocka_unit_test(test_w4a4kv4_quarot_beats_rtn),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_opts_from_job),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
