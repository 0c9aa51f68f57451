/* test_w4a4_layer_ref.c — the GPU runtime's W4A4KV4 layer (runtime/gpu_q_layer.c), composed
 * from the plain-C references of its kernels (core/w4a4_ref.c) step for step, against the
 * fake-quant CPU forward of the same quantized layer (core/qlayer_fwd.c).
 *
 * The runtime keeps activations in bf16 where the fake-quant forward keeps fp32, so the two
 * are not bit-equal: a bf16 rounding moves a value across a 4-bit rounding boundary now and
 * then. The test measures that inherent spread by running the fake-quant forward twice, on
 * x and on bf16(x), and asserts the composed runtime layer stays within a small multiple of
 * it, layer after layer through stories260K (the bundled model, RTN W4A4KV4). A wrong
 * composition (a transform applied on the wrong side, a clip of the wrong linear, a
 * mis-sliced weight, a scale mix-up) moves the output by the size of a quantization error,
 * an order of magnitude above that spread.
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
#include <unistd.h>

#include "dtype.h"
#include "error.h"
#include "llama_model.h"
#include "llama_ops.h"
#include "qlayer.h"
#include "qlayer_fwd.h"
#include "w4a4_layer_ref.h"
#include "worker/baseline_quarot.h"
#include "worker/baseline_rtn.h"

#define MODEL "data/models/stories260K-hf"

static uint16_t *bf16_of(const real *x, size_t n)
{
    uint16_t *b = malloc(sizeof *b * n);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = fq_f32_to_bf16((float)x[i]);
    return b;
}

static real *real_of(const uint16_t *b, size_t n)
{
    real *x = malloc(sizeof *x * n);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = fq_bf16_to_f32(b[i]);
    return x;
}

static double rel_l2(const real *a, const real *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

/* each linear's quantized input as a forward hands it over */
typedef struct {
    real *xh[QL_NLINEAR];
    int k[QL_NLINEAR];
} inputs_seen;

static int record(void *ctx, int lin, const real *xhat, int rows, int k)
{
    inputs_seen *o = ctx;
    free(o->xh[lin]);
    o->xh[lin] = malloc(sizeof(real) * (size_t)rows * k);
    assert_non_null(o->xh[lin]);
    memcpy(o->xh[lin], xhat, sizeof(real) * (size_t)rows * k);
    o->k[lin] = k;
    return 0;
}

/* Fraction of elements whose quantized value differs by more than a seventh of a step
 * (steps are row max / 7 for 4 bits): a code that flipped. */
static double flipped(const real *a, const real *b, int rows, int k)
{
    size_t bad = 0;
    for (int r = 0; r < rows; r++) {
        double mx = 0;
        for (int j = 0; j < k; j++)
            mx = fmax(mx, fabs((double)b[(size_t)r * k + j]));
        for (int j = 0; j < k; j++)
            bad += fabs((double)a[(size_t)r * k + j] - b[(size_t)r * k + j]) > mx / 49 + 1e-30;
    }
    return (double)bad / ((double)rows * k);
}

typedef int (*make_layer_fn)(const llama_model *m, int layer, const qconfig *qc, void *ctx,
                             qlayer *out);

static int make_rtn(const llama_model *m, int layer, const qconfig *qc, void *ctx, qlayer *out)
{
    (void)ctx;
    return baseline_rtn_layer(&m->layers[layer], &m->cfg, qc, out);
}

/* QuaRot layers: Hadamard T_d, M_o and M_k online, clip ratios 0.9 (activations) and
 * 0.95 (K/V): every transform slot and clip of the runtime is non-trivial */
static int make_quarot(const llama_model *m, int layer, const qconfig *qc, void *ctx,
                       qlayer *out)
{
    quarot_opts o = quarot_opts_default();
    return baseline_quarot_layer(&m->layers[layer], &m->cfg, qc, ctx, &o, NULL, out);
}

/* Layer after layer: the composed runtime layer and the fake-quant forward from the same
 * bf16 input, against the fake-quant spread between x and bf16(x). */
static void check_layers(const char *label, make_layer_fn make, void *ctx)
{
    llama_model m;
    if (llama_model_load(MODEL, &m) != FQ_OK)
        fail_msg("cannot load %s: %s", MODEL, fq_errmsg());
    const llama_config *c = &m.cfg;
    const int s = 96, d = c->hidden;
    const size_t nx = (size_t)s * d;
    qconfig qc = {.w_bits = 4, .a_bits = 4, .kv_bits = 4, .tp_blocks = 1};
    snprintf(qc.method, sizeof qc.method, "%s", label);
    rope_table rope;
    qlayer_scratch w;
    w4a4_layer_ws ws;
    assert_int_equal(rope_table_init(&rope, c, s), FQ_OK);
    assert_int_equal(qlayer_scratch_init(&w, c, 1, s), FQ_OK);
    assert_int_equal(w4a4_layer_ws_init(&ws, c, s), FQ_OK);
    int32_t ids[96];
    for (int i = 0; i < s; i++)
        ids[i] = (int32_t)((i * 37 + 5) % c->vocab);
    real *x = malloc(sizeof *x * nx), *xr = malloc(sizeof *xr * nx);
    assert_true(x && xr);
    llama_embed_fwd(x, m.embed, d, ids, s);
    for (int layer = 0; layer < c->n_layers; layer++) {
        qlayer q = {0};
        qlayer_rt rt;
        assert_int_equal(make(&m, layer, &qc, ctx, &q), FQ_OK);
        assert_int_equal(qlayer_rt_init(&rt, &q, c), FQ_OK);
        uint16_t *xb = bf16_of(x, nx);
        memcpy(xr, x, sizeof *x * nx);
        assert_int_equal(qlayer_fwd(xr, &rt, c, &qc, &rope, 1, s, &w), FQ_OK);
        real *xr2 = real_of(xb, nx);
        inputs_seen fake = {0}, comp = {0};
        assert_int_equal(qlayer_fwd_observed(xr2, &rt, c, &qc, &rope, 1, s, &w, record, &fake),
                         FQ_OK);
        double spread = rel_l2(xr2, xr, nx);
        if (w4a4_layer_ref_observed(xb, &q, c, &qc, &rope, s, &ws, record, &comp) != FQ_OK)
            fail_msg("w4a4_layer_ref: %s", fq_errmsg());
        /* every linear's quantized input: the same codes but for rounding-boundary flips.
         * q/k/v see the shared bf16 input through one transform: flips stay rare. o_proj's
         * input is past the KV4 attention, where flips compound (4–40 % measured); a
         * wiring error (a transform on the wrong side, a swapped clip) flips most codes.
         * Past o_proj the chain's own flips dominate (up to 40 % on QuaRot's down_proj), so
         * those are printed, and held by the output check below. */
        printf("%s layer %d flipped codes:", label, layer);
        for (int i = 0; i < QL_NLINEAR; i++) {
            assert_non_null(fake.xh[i]);
            assert_non_null(comp.xh[i]);
            assert_int_equal(fake.k[i], comp.k[i]);
            double fl = flipped(comp.xh[i], fake.xh[i], s, fake.k[i]);
            printf(" %s %.4f", qlinear_names[i], fl);
            if (i <= QL_O)
                assert_true(fl <= (i <= QL_V ? 0.01 : 0.5));
            free(fake.xh[i]), free(comp.xh[i]);
        }
        printf("\n");
        real *xg = real_of(xb, nx);
        double err = rel_l2(xg, xr2, nx);
        printf("%s layer %d: runtime composition vs fake-quant (same bf16 input) %.3e; "
               "fake-quant on x vs on bf16(x) %.3e\n", label, layer, err, spread);
        assert_true(err <= 3 * spread + 1e-3);
        memcpy(x, xr2, sizeof *x * nx); /* both continue from the shared input's output */
        free(xb), free(xr2), free(xg);
        qlayer_rt_free(&rt);
        qlayer_free(&q);
    }
    free(x), free(xr);
    w4a4_layer_ws_free(&ws);
    qlayer_scratch_free(&w);
    rope_table_free(&rope);
    llama_model_free(&m);
}

static void test_rtn_layers(void **state)
{
    (void)state;
    check_layers("rtn", make_rtn, NULL);
}

static void test_quarot_layers(void **state)
{
    (void)state;
    llama_model m;
    assert_int_equal(llama_model_load(MODEL, &m), FQ_OK);
    qconfig qc = {.w_bits = 4, .a_bits = 4, .kv_bits = 4, .tp_blocks = 1};
    quarot_rotations rot;
    assert_int_equal(quarot_rotations_init(&rot, &m.cfg, &qc, 0), FQ_OK);
    check_layers("quarot", make_quarot, &rot);
    quarot_rotations_free(&rot);
    llama_model_free(&m);
}

/* The checkpoint-level reference (loader, head, chaining) equals the layers chained here
 * from the same in-memory RTN layers, bit for bit, and its perplexity is that of a
 * quantized model (finite, above the FP model's). */
static void test_ref_model_checkpoint(void **state)
{
    (void)state;
    llama_model m;
    assert_int_equal(llama_model_load(MODEL, &m), FQ_OK);
    const llama_config *c = &m.cfg;
    qconfig qc = {.w_bits = 4, .a_bits = 4, .kv_bits = 4, .tp_blocks = 1};
    snprintf(qc.method, sizeof qc.method, "rtn");
    char dir[] = "/tmp/flatq-w4a4-ref-XXXXXX";
    assert_non_null(mkdtemp(dir));
    if (baseline_rtn_checkpoint(&m, MODEL, &qc, dir) != FQ_OK)
        fail_msg("%s", fq_errmsg());
    const int s = 64;
    w4a4_ref_model rm;
    if (w4a4_ref_model_load(&rm, dir, s) != FQ_OK)
        fail_msg("%s", fq_errmsg());
    int32_t ids[64];
    for (int i = 0; i < s; i++)
        ids[i] = (int32_t)((i * 11 + 3) % c->vocab);
    size_t nl = (size_t)s * c->vocab, nx = (size_t)s * c->hidden;
    real *got = malloc(sizeof *got * nl), *want = malloc(sizeof *want * nl);
    real *x = malloc(sizeof *x * nx);
    assert_true(got && want && x);
    assert_int_equal(w4a4_ref_window_logits(&rm, ids, s, got), FQ_OK);
    rope_table rope;
    w4a4_layer_ws ws;
    assert_int_equal(rope_table_init(&rope, c, s), FQ_OK);
    assert_int_equal(w4a4_layer_ws_init(&ws, c, s), FQ_OK);
    llama_embed_fwd(x, m.embed, c->hidden, ids, s);
    uint16_t *xb = bf16_of(x, nx);
    for (int l = 0; l < c->n_layers; l++) {
        qlayer q = {0};
        assert_int_equal(baseline_rtn_layer(&m.layers[l], c, &qc, &q), FQ_OK);
        assert_int_equal(w4a4_layer_ref(xb, &q, c, &qc, &rope, s, &ws), FQ_OK);
        qlayer_free(&q);
    }
    for (size_t i = 0; i < nx; i++)
        x[i] = fq_bf16_to_f32(xb[i]);
    llama_head_fwd(want, x, m.final_norm, m.lm_head, c, s);
    assert_memory_equal(got, want, sizeof *got * nl);
    /* a window longer than the model was loaded for is refused */
    int32_t big[65] = {0};
    assert_int_equal(w4a4_ref_window_logits(&rm, big, 65, got), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "exceeds"));
    free(got), free(want), free(x), free(xb);
    w4a4_layer_ws_free(&ws);
    rope_table_free(&rope);
    w4a4_ref_model_free(&rm);
    llama_model_free(&m);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* Bad input is refused with a message, never computed. */
static void test_refusals(void **state)
{
    (void)state;
    llama_model m;
    assert_int_equal(llama_model_load(MODEL, &m), FQ_OK);
    qconfig qc = {.w_bits = 4, .a_bits = 4, .kv_bits = 4, .tp_blocks = 1};
    rope_table rope;
    w4a4_layer_ws ws;
    assert_int_equal(rope_table_init(&rope, &m.cfg, 8), FQ_OK);
    assert_int_equal(w4a4_layer_ws_init(&ws, &m.cfg, 8), FQ_OK);
    qlayer q = {0};
    assert_int_equal(baseline_rtn_layer(&m.layers[0], &m.cfg, &qc, &q), FQ_OK);
    uint16_t x[16 * 64] = {0};
    assert_int_equal(w4a4_layer_ref(x, &q, &m.cfg, &qc, &rope, 16, &ws), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "16 tokens"));
    qconfig q8 = qc;
    q8.a_bits = 8;
    assert_int_equal(w4a4_layer_ref(x, &q, &m.cfg, &q8, &rope, 8, &ws), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "a_bits 8"));
    qlayer_free(&q);
    w4a4_layer_ws_free(&ws);
    rope_table_free(&rope);
    llama_model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rtn_layers),
        cmocka_unit_test(test_quarot_layers),
        cmocka_unit_test(test_ref_model_checkpoint),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
