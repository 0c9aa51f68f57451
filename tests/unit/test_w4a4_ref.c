/* test_w4a4_ref.c — the plain-C W4A4 references (core/w4a4_ref.c) against independent
 * float64 math and against the fake-quant path of core/ (kron_fwd + the ratio quantizers,
 * the math of core/qlayer_fwd.c).
 *
 * - nibble layout: element 2k in the low nibble, two's complement, every value round-trips;
 * - transform + quantize: the transform recomputed as a dense (L ⊗ R) product in float64,
 *   scales to 1e-5, codes equal clamp(rint(y/s)) except within 1e-3 of a rounding tie;
 *   codes·scale equal the fake-quant output exactly; rows are round_up(K, 64) codes long
 *   with zero codes after K (stories260K's K = 172 as 2 × 86, 16m's 1024 as 32 × 32);
 * - padded GEMM: rows of K = 172 real codes padded to 192 give the int64 sum over the 172;
 * - GEMM: int32 accumulators equal an int64 sum over the unpacked codes; the dequantized
 *   float64 GEMM equals Σ_b acc_b·sx_b·sw to 1e-12; bf16 outputs within one bf16 rounding;
 * - KV4: codes and zero points equal the double-precision rule, dequantized values equal
 *   the fake-quant output up to the fp16 rounding of the scale; untouched slots stay;
 * - attention: equals core/llama_ops.c attention_fwd on the dequantized cache (bf16 out);
 *   decode (n_q = 1) equals the last prefill row; GQA groups 2, 3 (dh 64) and 6;
 * - bad shapes are refused with a message naming the argument.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "error.h"
#include "kron.h"
#include "llama_ops.h"
#include "quantizer.h"
#include "w4a4_ref.h"

static uint64_t rng_state = 88172645463325252ull;
static double urand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static double nrand(void)
{
    double u1 = urand() + 1e-300, u2 = urand();
    return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}

/* ---------- nibbles ---------- */

static void test_nibble_layout(void **state)
{
    (void)state;
    int8_t c[2] = {1, -2};
    uint8_t p[1];
    assert_int_equal(w4a4_pack_s4(p, c, 2), FQ_OK);
    assert_int_equal(p[0], 0xE1); /* element 0 low nibble, element 1 (−2 = 0xE) high */
    int8_t all[512], back[512];
    uint8_t packed[256];
    for (int i = 0; i < 256; i++)
        all[2 * i] = (int8_t)(i % 16 - 8), all[2 * i + 1] = (int8_t)(i / 16 - 8);
    assert_int_equal(w4a4_pack_s4(packed, all, 512), FQ_OK);
    assert_int_equal(w4a4_unpack_s4(back, packed, 512), FQ_OK);
    assert_memory_equal(all, back, 512);
    uint8_t u[4] = {15, 0, 3, 12}, up[2], ub[4];
    assert_int_equal(w4a4_pack_u4(up, u, 4), FQ_OK);
    assert_int_equal(up[0], 0x0F);
    assert_int_equal(up[1], 0xC3);
    assert_int_equal(w4a4_unpack_u4(ub, up, 4), FQ_OK);
    assert_memory_equal(u, ub, 4);
    c[0] = 8;
    assert_int_equal(w4a4_pack_s4(p, c, 2), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "expected -8..7"));
    assert_int_equal(w4a4_pack_s4(packed, all, 3), FQ_ERR);
    u[0] = 16;
    assert_int_equal(w4a4_pack_u4(up, u, 4), FQ_ERR);
}

/* ---------- transform + quantize ---------- */

static void bf16_fill(uint16_t *x, size_t n, double sd)
{
    for (size_t i = 0; i < n; i++)
        x[i] = fq_f32_to_bf16((float)(sd * nrand()));
}

static void check_transform_quant(int M, int blocks, int n1, int n2, int kblocks, int use_l,
                                  int use_r)
{
    const int n = n1 * n2, K = blocks * n, blen = K / kblocks, Kp = fq_w4a4_padded_k(K);
    uint16_t *x = malloc(sizeof(uint16_t) * M * K);
    float *L = malloc(sizeof(float) * blocks * n1 * n1), *R = malloc(sizeof(float) * blocks * n2 * n2);
    bf16_fill(x, (size_t)M * K, 1.0);
    x[3] = fq_f32_to_bf16(25.0f); /* an outlier channel in token 0 */
    for (int i = 0; i < blocks * n1 * n1; i++)
        L[i] = (float)(nrand() / sqrt(n1));
    for (int i = 0; i < blocks * n2 * n2; i++)
        R[i] = (float)(nrand() / sqrt(n2));
    fq_quant_dst dst[2];
    const float clips[2][2] = {{0.98f, 0.9f}, {0.7f, 1.0f}};
    for (int p = 0; p < 2; p++) {
        dst[p].kmax = clips[p][0];
        dst[p].kmin = clips[p][1];
        dst[p].codes = malloc((size_t)M * Kp / 2);
        memset(dst[p].codes, 0xAB, (size_t)M * Kp / 2); /* padding must be overwritten */
        dst[p].scales = malloc(sizeof(float) * M * kblocks);
    }
    if (fq_transform_quant(dst, 2, x, M, K, blocks, n1, n2, use_l ? L : NULL, use_r ? R : NULL,
                           kblocks, 4))
        fail_msg("fq_transform_quant: %s", fq_errmsg());

    /* independent float64 transform: y[(i,j)] = Σ_{p,q} x[(p,q)] L[p][i] R[q][j] */
    double *y = malloc(sizeof(double) * M * K);
    for (int t = 0; t < M; t++)
        for (int b = 0; b < blocks; b++)
            for (int i = 0; i < n1; i++)
                for (int j = 0; j < n2; j++) {
                    double s = 0;
                    for (int p = 0; p < n1; p++)
                        for (int q = 0; q < n2; q++) {
                            double lv = use_l ? L[(b * n1 + p) * n1 + i] : (p == i);
                            double rv = use_r ? R[(b * n2 + q) * n2 + j] : (q == j);
                            if (lv != 0 && rv != 0)
                                s += fq_bf16_to_f32(x[(size_t)t * K + b * n + p * n2 + q]) * lv * rv;
                        }
                    y[(size_t)t * K + b * n + i * n2 + j] = s;
                }

    /* the fake-quant path: kron_fwd + quant_act_sym_ratio in fp32 */
    real *xf = malloc(sizeof(real) * M * n), *yf = malloc(sizeof(real) * M * n);
    real *yall = malloc(sizeof(real) * M * K), *fq = malloc(sizeof(real) * M * K);
    real *fs = malloc(sizeof(real) * M * kblocks), *work = malloc(sizeof(real) * kron_fwd_work(M, n));
    real *Lb = malloc(sizeof(real) * n1 * n1), *Rb = malloc(sizeof(real) * n2 * n2);
    for (int b = 0; b < blocks; b++) {
        for (int t = 0; t < M; t++)
            for (int j = 0; j < n; j++)
                xf[t * n + j] = fq_bf16_to_f32(x[(size_t)t * K + b * n + j]);
        for (int i = 0; i < n1 * n1; i++)
            Lb[i] = use_l ? L[b * n1 * n1 + i] : (i / n1 == i % n1);
        for (int i = 0; i < n2 * n2; i++)
            Rb[i] = use_r ? R[b * n2 * n2 + i] : (i / n2 == i % n2);
        assert_int_equal(kron_fwd(yf, xf, M, n1, n2, Lb, Rb, work), FQ_OK);
        for (int t = 0; t < M; t++)
            memcpy(yall + (size_t)t * K + b * n, yf + t * n, sizeof(real) * n);
    }

    int8_t *codes = malloc((size_t)Kp);
    for (int p = 0; p < 2; p++) {
        assert_int_equal(quant_act_sym_ratio(fq, fs, yall, M, K, kblocks, 4, dst[p].kmax,
                                             dst[p].kmin), FQ_OK);
        int ambiguous = 0;
        for (int t = 0; t < M; t++) {
            assert_int_equal(w4a4_unpack_s4(codes, dst[p].codes + (size_t)t * Kp / 2, Kp), FQ_OK);
            for (int j = K; j < Kp; j++)
                assert_int_equal(codes[j], 0);
            for (int kb = 0; kb < kblocks; kb++) {
                double mx = 0, mn = 0;
                for (int j = kb * blen; j < (kb + 1) * blen; j++) {
                    double v = y[(size_t)t * K + j];
                    mx = v > mx ? v : mx;
                    mn = v < mn ? v : mn;
                }
                double tt = fmax(dst[p].kmin * -mn, dst[p].kmax * mx);
                double s_exp = tt > 0 ? tt / 7 : 1;
                float s = dst[p].scales[t * kblocks + kb];
                assert_true(fabs(s - s_exp) <= 1e-5 * s_exp);
                assert_true(s == fs[t * kblocks + kb]);
                for (int j = kb * blen; j < (kb + 1) * blen; j++) {
                    double r = y[(size_t)t * K + j] / s;
                    double want = fmin(7, fmax(-8, rint(r)));
                    if (fabs(fabs(r - floor(r)) - 0.5) < 1e-3)
                        ambiguous++;
                    else
                        assert_int_equal(codes[j], (int)want);
                    /* codes·scale is exactly the fake-quant value */
                    assert_true((real)s * codes[j] == fq[(size_t)t * K + j]);
                }
            }
        }
        if (ambiguous > M * K / 50 + 2)
            fail_msg("%d of %d values within 1e-3 of a rounding tie", ambiguous, M * K);
    }
    for (int p = 0; p < 2; p++)
        free(dst[p].codes), free(dst[p].scales);
    free(x), free(L), free(R), free(y), free(xf), free(yf), free(yall), free(fq), free(fs);
    free(work), free(Lb), free(Rb), free(codes);
}

static void test_transform_quant(void **state)
{
    (void)state;
    check_transform_quant(6, 1, 8, 16, 1, 1, 1);
    check_transform_quant(5, 2, 8, 16, 4, 1, 1); /* block-diagonal (TP) with 2 scales/block */
    check_transform_quant(4, 4, 8, 8, 4, 1, 0);  /* R = identity: the o_proj input form */
    check_transform_quant(3, 1, 8, 8, 1, 0, 0);  /* no transform */
    check_transform_quant(4, 1, 2, 86, 1, 1, 1); /* stories260K's down input: K = 172 → 192 */
    check_transform_quant(3, 1, 2, 86, 1, 0, 0);
    check_transform_quant(2, 1, 5, 7, 1, 1, 1);  /* odd K = 35: one row of 64 */
    check_transform_quant(2, 1, 32, 32, 1, 1, 1); /* 16m's T_d: K = 1024 */
}

/* ---------- GEMM ---------- */

/* Random GEMM operands: codes cx [M, K], cw [N, K] (and packed qx, qw), per-token-block
 * scales sx [M, kblocks], per-row sw [N], a bf16 residual [M, N]. extreme: the first codes
 * are −8 both, the largest product. */
typedef struct {
    int8_t *cx, *cw;
    uint8_t *qx, *qw;
    float *sx, *sw;
    uint16_t *res;
} gemm_operands;

static void gemm_operands_make(gemm_operands *g, int M, int N, int K, int kblocks, int extreme)
{
    g->cx = malloc((size_t)M * K), g->cw = malloc((size_t)N * K);
    g->qx = malloc((size_t)M * K / 2), g->qw = malloc((size_t)N * K / 2);
    g->sx = malloc(sizeof(float) * M * kblocks), g->sw = malloc(sizeof(float) * N);
    g->res = malloc(sizeof(uint16_t) * M * N);
    for (int i = 0; i < M * K; i++)
        g->cx[i] = (int8_t)(urand() * 16) - 8;
    for (int i = 0; i < N * K; i++)
        g->cw[i] = (int8_t)(urand() * 16) - 8;
    if (extreme)
        g->cx[0] = g->cw[0] = -8;
    for (int i = 0; i < M * kblocks; i++)
        g->sx[i] = (float)(0.01 + urand() * 0.1);
    for (int i = 0; i < N; i++)
        g->sw[i] = (float)(0.001 + urand() * 0.01);
    bf16_fill(g->res, (size_t)M * N, 2.0);
    assert_int_equal(w4a4_pack_s4(g->qx, g->cx, (size_t)M * K), FQ_OK);
    assert_int_equal(w4a4_pack_s4(g->qw, g->cw, (size_t)N * K), FQ_OK);
}

static void gemm_operands_free(gemm_operands *g)
{
    free(g->cx), free(g->cw), free(g->qx), free(g->qw), free(g->sx), free(g->sw), free(g->res);
}

static void check_gemm(int M, int N, int K, int kblocks, int with_residual)
{
    const int blen = K / kblocks;
    gemm_operands g;
    gemm_operands_make(&g, M, N, K, kblocks, 1);
    uint16_t *y = malloc(sizeof(uint16_t) * M * N);
    int32_t *acc = malloc(sizeof(int32_t) * M * N);
    assert_int_equal(fq_w4a4_gemm_i32(acc, g.qx, g.qw, M, N, K), FQ_OK);
    assert_int_equal(fq_w4a4_gemm(y, g.qx, g.sx, kblocks, g.qw, g.sw, M, N, K,
                                  with_residual ? g.res : NULL), FQ_OK);
    for (int t = 0; t < M; t++)
        for (int o = 0; o < N; o++) {
            int64_t full = 0;
            double via_acc = 0, deq = 0;
            for (int b = 0; b < kblocks; b++) {
                int64_t part = 0;
                for (int j = b * blen; j < (b + 1) * blen; j++) {
                    part += g.cx[(size_t)t * K + j] * g.cw[(size_t)o * K + j];
                    deq += ((double)g.sx[t * kblocks + b] * g.cx[(size_t)t * K + j]) *
                           ((double)g.sw[o] * g.cw[(size_t)o * K + j]);
                }
                full += part;
                via_acc += (double)part * g.sx[t * kblocks + b] * g.sw[o];
            }
            assert_int_equal(acc[t * N + o], full);
            assert_true(fabs(deq - via_acc) <= 1e-12 * (fabs(deq) + 1e-30) + 1e-15);
            double want = via_acc + (with_residual ? fq_bf16_to_f32(g.res[t * N + o]) : 0);
            double got = fq_bf16_to_f32(y[t * N + o]);
            assert_true(fabs(got - want) <= fabs(want) / 256 + 1e-30);
        }
    gemm_operands_free(&g);
    free(y), free(acc);
}

/* Rows of K real codes padded with zeros to Kp: the sums over Kp are the sums over K. */
static void check_gemm_padded(int M, int N, int K)
{
    const int Kp = fq_w4a4_padded_k(K);
    int8_t *cx = calloc((size_t)M * Kp, 1), *cw = calloc((size_t)N * Kp, 1);
    uint8_t *qx = malloc((size_t)M * Kp / 2), *qw = malloc((size_t)N * Kp / 2);
    float *sx = malloc(sizeof(float) * M), *sw = malloc(sizeof(float) * N);
    uint16_t *y = malloc(sizeof(uint16_t) * M * N);
    int32_t *acc = malloc(sizeof(int32_t) * M * N);
    for (int t = 0; t < M; t++)
        for (int j = 0; j < K; j++)
            cx[(size_t)t * Kp + j] = (int8_t)(urand() * 16) - 8;
    for (int o = 0; o < N; o++)
        for (int j = 0; j < K; j++)
            cw[(size_t)o * Kp + j] = (int8_t)(urand() * 16) - 8;
    for (int t = 0; t < M; t++)
        sx[t] = (float)(0.01 + urand() * 0.1);
    for (int o = 0; o < N; o++)
        sw[o] = (float)(0.001 + urand() * 0.01);
    assert_int_equal(w4a4_pack_s4(qx, cx, (size_t)M * Kp), FQ_OK);
    assert_int_equal(w4a4_pack_s4(qw, cw, (size_t)N * Kp), FQ_OK);
    assert_int_equal(fq_w4a4_gemm_i32(acc, qx, qw, M, N, Kp), FQ_OK);
    assert_int_equal(fq_w4a4_gemm(y, qx, sx, 1, qw, sw, M, N, Kp, NULL), FQ_OK);
    for (int t = 0; t < M; t++)
        for (int o = 0; o < N; o++) {
            int64_t full = 0;
            for (int j = 0; j < K; j++)
                full += cx[(size_t)t * Kp + j] * cw[(size_t)o * Kp + j];
            assert_int_equal(acc[t * N + o], full);
            double want = (double)full * sx[t] * sw[o];
            assert_true(fabs(fq_bf16_to_f32(y[t * N + o]) - want) <= fabs(want) / 256 + 1e-30);
        }
    free(cx), free(cw), free(qx), free(qw), free(sx), free(sw), free(y), free(acc);
}

static void expect_err(int rc, const char *needle);

/* The row-parallel sum of tensor parallelism (fq_w4a4_gemm_rowpar): tp = 1 is
 * fq_w4a4_gemm to the bit; tp = 2 with an fp32 reduction is within one bf16 rounding of
 * it; with the bf16 reduction it is exactly bf16(bf16(p0 + residual) + bf16(p1)), each
 * rank's partial p_r formed from its own K-blocks. */
static void check_gemm_rowpar(int M, int N, int K, int kblocks)
{
    const int blen = K / kblocks, per = kblocks / 2;
    gemm_operands g;
    gemm_operands_make(&g, M, N, K, kblocks, 0);
    uint16_t *y1 = malloc(sizeof(uint16_t) * M * N), *yr = malloc(sizeof(uint16_t) * M * N);
    uint16_t *y32 = malloc(sizeof(uint16_t) * M * N), *y16 = malloc(sizeof(uint16_t) * M * N);
    assert_int_equal(fq_w4a4_gemm(y1, g.qx, g.sx, kblocks, g.qw, g.sw, M, N, K, g.res), FQ_OK);
    assert_int_equal(fq_w4a4_gemm_rowpar(yr, g.qx, g.sx, kblocks, g.qw, g.sw, M, N, K, g.res, 1, 1), FQ_OK);
    assert_memory_equal(y1, yr, sizeof(uint16_t) * M * N);
    assert_int_equal(fq_w4a4_gemm_rowpar(y32, g.qx, g.sx, kblocks, g.qw, g.sw, M, N, K, g.res, 2, 0), FQ_OK);
    assert_int_equal(fq_w4a4_gemm_rowpar(y16, g.qx, g.sx, kblocks, g.qw, g.sw, M, N, K, g.res, 2, 1), FQ_OK);
    int differ = 0;
    for (int t = 0; t < M; t++)
        for (int o = 0; o < N; o++) {
            float p[2];
            for (int r = 0; r < 2; r++) {
                float v = 0;
                for (int b = r * per; b < (r + 1) * per; b++) {
                    int32_t part = 0;
                    for (int j = b * blen; j < (b + 1) * blen; j++)
                        part += g.cx[(size_t)t * K + j] * g.cw[(size_t)o * K + j];
                    v = v + (float)part * g.sx[t * kblocks + b];
                }
                p[r] = v * g.sw[o];
            }
            float r0 = fq_bf16_to_f32(fq_f32_to_bf16(p[0] + fq_bf16_to_f32(g.res[t * N + o])));
            float r1 = fq_bf16_to_f32(fq_f32_to_bf16(p[1]));
            assert_int_equal(y16[t * N + o], fq_f32_to_bf16(fq_bf16_to_f32(fq_f32_to_bf16(r0 + r1))));
            double a = fq_bf16_to_f32(y1[t * N + o]), b = fq_bf16_to_f32(y32[t * N + o]);
            assert_true(fabs(a - b) <= fabs(a) / 128 + 1e-30); /* one bf16 step at most */
            differ += y16[t * N + o] != y1[t * N + o];
        }
    /* the double rounding shows on some outputs (the point of the check in bench/) */
    assert_true(differ > 0);
    expect_err(fq_w4a4_gemm_rowpar(y16, g.qx, g.sx, kblocks, g.qw, g.sw, M, N, K, g.res, 3, 0), "tp = 3");
    gemm_operands_free(&g);
    free(y1), free(yr), free(y32), free(y16);
}

static void test_gemm(void **state)
{
    (void)state;
    check_gemm_rowpar(6, 40, 256, 4);
    check_gemm(3, 5, 192, 1, 0);
    check_gemm(4, 7, 256, 4, 1);
    check_gemm(1, 9, 64, 1, 1);
    check_gemm_padded(3, 6, 172);
    check_gemm_padded(2, 4, 35);
}

/* ---------- KV4 write and attention ---------- */

typedef struct {
    fq_kv4_cache c;
    size_t slots;
} cache_box;

static void cache_alloc(cache_box *cb, int batch, int kv_heads, int max_ctx, int dh)
{
    cb->c = (fq_kv4_cache){batch, kv_heads, max_ctx, dh, NULL, NULL, NULL, NULL};
    cb->slots = (size_t)batch * kv_heads * max_ctx;
    cb->c.k_codes = malloc(cb->slots * dh / 2);
    cb->c.v_codes = malloc(cb->slots * dh / 2);
    cb->c.k_sz = malloc(cb->slots * 2 * sizeof(uint16_t));
    cb->c.v_sz = malloc(cb->slots * 2 * sizeof(uint16_t));
    memset(cb->c.k_codes, 0xAB, cb->slots * dh / 2);
    memset(cb->c.v_codes, 0xAB, cb->slots * dh / 2);
    memset(cb->c.k_sz, 0xAB, cb->slots * 4);
    memset(cb->c.v_sz, 0xAB, cb->slots * 4);
}

static void cache_free(cache_box *cb)
{
    free(cb->c.k_codes), free(cb->c.v_codes), free(cb->c.k_sz), free(cb->c.v_sz);
}

static void test_kv4_write(void **state)
{
    (void)state;
    const int B = 2, G = 3, C = 8, dh = 16, n_new = 3;
    const int pos0[2] = {0, 4};
    cache_box cb;
    cache_alloc(&cb, B, G, C, dh);
    size_t rows = (size_t)B * n_new * G;
    uint16_t *k = malloc(sizeof(uint16_t) * rows * dh), *v = malloc(sizeof(uint16_t) * rows * dh);
    bf16_fill(k, rows * dh, 3.0);
    bf16_fill(v, rows * dh, 0.5);
    for (int j = 0; j < dh; j++)
        v[j] = 0; /* an all-zero row: the l = −1, m = 1 branch */
    const float kc[2] = {0.95f, 0.9f}, vc[2] = {1.0f, 0.8f};
    assert_int_equal(fq_kv4_write(&cb.c, k, v, n_new, pos0, kc[0], kc[1], vc[0], vc[1], 4),
                     FQ_OK);
    real *u = malloc(sizeof(real) * rows * dh), *fo = malloc(sizeof(real) * rows * dh);
    real *fs = malloc(sizeof(real) * rows), *fz = malloc(sizeof(real) * rows);
    uint8_t codes[16];
    for (int which = 0; which < 2; which++) {
        const uint16_t *src = which ? v : k;
        const float *cl = which ? vc : kc;
        const uint8_t *plane = which ? cb.c.v_codes : cb.c.k_codes;
        const uint16_t *sz = which ? cb.c.v_sz : cb.c.k_sz;
        for (size_t i = 0; i < rows * dh; i++)
            u[i] = fq_bf16_to_f32(src[i]);
        assert_int_equal(quant_kv_asym_ratio(fo, fs, fz, u, (int)rows, dh, 4, cl[0], cl[1]), FQ_OK);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < C; t++)
                for (int g = 0; g < G; g++) {
                    size_t slot = ((size_t)b * G + g) * C + t;
                    int written = t >= pos0[b] && t < pos0[b] + n_new;
                    if (!written) {
                        assert_int_equal(plane[slot * dh / 2], 0xAB);
                        assert_int_equal(sz[slot * 2], 0xABAB);
                        continue;
                    }
                    size_t r = ((size_t)b * n_new + (t - pos0[b])) * G + g;
                    /* the rule of ALGORITHM §2.1 in fp32, as the kernels compute it
                     * (a double zero point differs on the all-zero row: −l/s = 7.5 exactly
                     * in double, 7.4999996 in fp32) */
                    float mx = 0, mn = 0;
                    for (int j = 0; j < dh; j++) {
                        mx = fmaxf(mx, (float)u[r * dh + j]);
                        mn = fminf(mn, (float)u[r * dh + j]);
                    }
                    mx *= cl[0], mn *= cl[1];
                    if (mx == 0 && mn == 0)
                        mn = -1, mx = 1;
                    float s = (mx - mn) / 15, z = rintf(-mn / s);
                    double s16 = fq_f16_to_f32(sz[slot * 2]), z16 = fq_f16_to_f32(sz[slot * 2 + 1]);
                    assert_true(fabs(s16 - s) <= s / 2048);
                    if (!(z16 == z && z16 == fz[r]))
                        fail_msg("zero point %g, double rule %g, fake quant %g", z16, z, (double)fz[r]);
                    assert_int_equal(w4a4_unpack_u4(codes, plane + slot * dh / 2, dh), FQ_OK);
                    for (int j = 0; j < dh; j++) {
                        double rr = (double)u[r * dh + j] / s;
                        if (fabs(fabs(rr - floor(rr)) - 0.5) > 1e-4)
                            assert_int_equal(codes[j], (int)fmin(15, fmax(0, rint(rr) + z)));
                        double deq = s16 * (codes[j] - z16);
                        assert_true(fabs(deq - fo[r * dh + j]) <= 15 * s / 2048 + 1e-6 * s);
                    }
                }
    }
    free(u), free(fo), free(fs), free(fz), free(k), free(v);
    cache_free(&cb);
}

static void check_attention(int G, int H, int dh, int S)
{
    cache_box cb;
    cache_alloc(&cb, 1, G, 10, dh);
    uint16_t *k = malloc(sizeof(uint16_t) * S * G * dh), *v = malloc(sizeof(uint16_t) * S * G * dh);
    uint16_t *q = malloc(sizeof(uint16_t) * S * H * dh), *out = malloc(sizeof(uint16_t) * S * H * dh);
    uint16_t *out1 = malloc(sizeof(uint16_t) * H * dh);
    bf16_fill(k, (size_t)S * G * dh, 1.0);
    bf16_fill(v, (size_t)S * G * dh, 1.0);
    bf16_fill(q, (size_t)S * H * dh, 1.0);
    int pos0 = 0, ctx = S;
    assert_int_equal(fq_kv4_write(&cb.c, k, v, S, &pos0, 1, 1, 1, 1, 4), FQ_OK);
    assert_int_equal(fq_attention_kv4(out, q, &cb.c, S, &ctx, H), FQ_OK);
    /* decode: only the last query, same context */
    assert_int_equal(fq_attention_kv4(out1, q + (size_t)(S - 1) * H * dh, &cb.c, 1, &ctx, H),
                     FQ_OK);
    assert_memory_equal(out1, out + (size_t)(S - 1) * H * dh, sizeof(uint16_t) * H * dh);
    /* independent: llama_ops attention on the dequantized cache */
    real *qr = malloc(sizeof(real) * S * H * dh), *kr = malloc(sizeof(real) * S * G * dh);
    real *vr = malloc(sizeof(real) * S * G * dh), *o = malloc(sizeof(real) * S * H * dh);
    real *scratch = malloc(sizeof(real) * S * S);
    for (int i = 0; i < S * H * dh; i++)
        qr[i] = fq_bf16_to_f32(q[i]);
    uint8_t *codes = malloc((size_t)dh);
    for (int t = 0; t < S; t++)
        for (int g = 0; g < G; g++) {
            size_t slot = (size_t)g * 10 + t;
            for (int which = 0; which < 2; which++) {
                const uint8_t *plane = which ? cb.c.v_codes : cb.c.k_codes;
                const uint16_t *sz = which ? cb.c.v_sz : cb.c.k_sz;
                real *dst = which ? vr : kr;
                w4a4_unpack_u4(codes, plane + slot * dh / 2, dh);
                for (int j = 0; j < dh; j++)
                    dst[((size_t)t * G + g) * dh + j] =
                        fq_f16_to_f32(sz[slot * 2]) * (codes[j] - fq_f16_to_f32(sz[slot * 2 + 1]));
            }
        }
    attention_fwd(o, NULL, qr, kr, vr, 1, S, H, G, dh, scratch);
    double num = 0, den = 0;
    for (int i = 0; i < S * H * dh; i++) {
        double d = fq_bf16_to_f32(out[i]) - o[i];
        num += d * d;
        den += (double)o[i] * o[i];
    }
    assert_true(sqrt(num / den) < 4e-3);
    free(k), free(v), free(q), free(out), free(qr), free(kr), free(vr), free(o), free(scratch);
    free(out1), free(codes);
    cache_free(&cb);
}

static void test_attention(void **state)
{
    (void)state;
    check_attention(2, 4, 8, 7);
    check_attention(2, 6, 64, 5); /* flatq-llama-16m: group 3, dh 64 */
    check_attention(1, 6, 16, 6); /* group 6 */
}

/* ---------- refused shapes ---------- */

static void expect_err(int rc, const char *needle)
{
    assert_int_equal(rc, FQ_ERR);
    if (!strstr(fq_errmsg(), needle))
        fail_msg("message \"%s\" lacks \"%s\"", fq_errmsg(), needle);
}

static void test_bad_shapes(void **state)
{
    (void)state;
    uint8_t qx[64], qw[64];
    float sx[4] = {1, 1, 1, 1}, sw[2] = {1, 1};
    uint16_t y[4], x[256];
    int32_t acc[4];
    memset(qx, 0, sizeof qx), memset(qw, 0, sizeof qw), memset(x, 0, sizeof x);
    expect_err(fq_w4a4_gemm(y, qx, sx, 1, qw, sw, 1, 1, 100, NULL), "K = 100");
    expect_err(fq_w4a4_gemm(y, qx, sx, 1, qw, sw, 0, 1, 64, NULL), "M = 0");
    expect_err(fq_w4a4_gemm(y, qx, sx, 3, qw, sw, 1, 1, 128, NULL), "kblocks = 3");
    expect_err(fq_w4a4_gemm(y, qx, sx, 2, qw, sw, 1, 1, 64, NULL), "kblocks = 2");
    expect_err(fq_w4a4_gemm(NULL, qx, sx, 1, qw, sw, 1, 1, 64, NULL), "NULL");
    expect_err(fq_w4a4_gemm_i32(acc, qx, qw, 1, 1, 65), "K = 65");
    uint8_t codes[64];
    float scales[4];
    fq_quant_dst d = {0.9f, 0.9f, codes, scales};
    expect_err(fq_transform_quant(&d, 1, x, 0, 64, 1, 8, 8, NULL, NULL, 1, 4), "M = 0");
    expect_err(fq_transform_quant(&d, 1, x, 1, 0, 1, 8, 8, NULL, NULL, 1, 4), "K = 0");
    expect_err(fq_transform_quant(&d, 1, x, 1, 172, 2, 2, 43, NULL, NULL, 2, 4),
               "kblocks = 2 with K = 172");
    expect_err(fq_transform_quant(&d, 1, x, 1, 64, 1, 8, 4, NULL, NULL, 1, 4), "blocks·n1·n2");
    expect_err(fq_transform_quant(&d, 0, x, 1, 64, 1, 8, 8, NULL, NULL, 1, 4), "nconsumers = 0");
    expect_err(fq_transform_quant(&d, 1, x, 1, 128, 2, 8, 8, NULL, NULL, 1, 4), "kblocks = 1");
    expect_err(fq_transform_quant(&d, 1, x, 1, 64, 1, 8, 8, NULL, NULL, 1, 8), "bits = 8");
    d.kmax = 0;
    expect_err(fq_transform_quant(&d, 1, x, 1, 64, 1, 8, 8, NULL, NULL, 1, 4), "clip ratios");
    cache_box cb;
    cache_alloc(&cb, 1, 1, 4, 8);
    int pos = 3, ctx = 4;
    expect_err(fq_kv4_write(&cb.c, x, x, 2, &pos, 1, 1, 1, 1, 4), "pos0[0] = 3");
    cb.c.dh = 7;
    expect_err(fq_kv4_write(&cb.c, x, x, 1, &pos, 1, 1, 1, 1, 4), "dh = 7");
    cb.c.dh = 8;
    cb.c.kv_heads = 2;
    expect_err(fq_attention_kv4(y, x, &cb.c, 1, &ctx, 3), "heads = 3");
    cb.c.kv_heads = 1;
    ctx = 5;
    expect_err(fq_attention_kv4(y, x, &cb.c, 1, &ctx, 1), "ctx_len[0] = 5");
    ctx = 1;
    expect_err(fq_attention_kv4(y, x, &cb.c, 2, &ctx, 1), "ctx_len[0] = 1");
    cache_free(&cb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nibble_layout), cmocka_unit_test(test_transform_quant),
        cmocka_unit_test(test_gemm),          cmocka_unit_test(test_kv4_write),
        cmocka_unit_test(test_attention),     cmocka_unit_test(test_bad_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
