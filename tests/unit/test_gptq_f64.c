/* test_gptq_f64.c — core/gptq.c in float64 against the textbook algorithm written here.
 *
 * The reference is the sequential one of the optimal-brain-quantizer family, with none
 * of GPTQ's tricks: per row, quantize column i, spread its error e = (w_i − ŵ_i)/[H⁻¹]_ii
 * over the later columns with row i of the current H⁻¹, then remove input i from H⁻¹ by
 * one step of Gaussian elimination; H⁻¹ comes from a Gauss-Jordan inverse of the damped
 * Hessian. It shares no code with gptq.c (no Cholesky, no blocks, no BLAS), so equal
 * codes check the Cholesky reformulation, the lazy block update and the damping. Block
 * sizes 1, 5 (not dividing in), 8 and 128 (> in) must all give the reference's codes.
 * Also: the Hessian accumulator against a direct double sum over tokens, and a dead input
 * (all-zero column of X) handled as the recipe says (H_ii = 1, weight column zeroed).
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
#include "gptq.h"

enum { OUT = 6, IN = 24, TOK = 200 };

/* Correlated inputs: x = z·M with a random mixing M and channel scales spread 0.1..3. */
static void make_inputs(real *x, int tokens, int in, int dead_col, uint64_t seed)
{
    rng_state rng;
    rng_seed(&rng, seed);
    real *m = alloc_real((long)in * in), *z = alloc_real((long)tokens * in);
    fill_normal(m, (long)in * in, &rng, 1.0);
    fill_normal(z, (long)tokens * in, &rng, 1.0);
    for (int i = 0; i < in; i++)
        m[(long)i * in + i] += 2;
    for (int t = 0; t < tokens; t++)
        for (int j = 0; j < in; j++) {
            double v = 0;
            for (int k = 0; k < in; k++)
                v += z[(long)t * in + k] * m[(long)k * in + j];
            x[(long)t * in + j] = (real)(v * (0.1 + 2.9 * j / (in - 1)));
            if (j == dead_col)
                x[(long)t * in + j] = 0;
        }
    free(m);
    free(z);
}

static void gauss_jordan_inverse(double *a, double *inv, int n)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            inv[i * n + j] = i == j;
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(a[r * n + c]) > fabs(a[p * n + c]))
                p = r;
        for (int j = 0; j < n; j++) {
            double t = a[c * n + j];
            a[c * n + j] = a[p * n + j];
            a[p * n + j] = t;
            t = inv[c * n + j];
            inv[c * n + j] = inv[p * n + j];
            inv[p * n + j] = t;
        }
        double d = a[c * n + c];
        for (int j = 0; j < n; j++) {
            a[c * n + j] /= d;
            inv[c * n + j] /= d;
        }
        for (int r = 0; r < n; r++)
            if (r != c) {
                double f = a[r * n + c];
                for (int j = 0; j < n; j++) {
                    a[r * n + j] -= f * a[c * n + j];
                    inv[r * n + j] -= f * inv[c * n + j];
                }
            }
    }
}

/* The textbook sequential quantizer: codes [out, in] with the RTN scales. */
static void reference_gptq(int8_t *codes, float *scales, const real *w, int out, int in,
                           const real *H, double damp, int bits)
{
    double *hd = calloc((size_t)in * in, sizeof(double));
    double *hinv0 = calloc((size_t)in * in, sizeof(double));
    double *hi = calloc((size_t)in * in, sizeof(double));
    double *row = calloc((size_t)in, sizeof(double));
    int *dead = calloc((size_t)in, sizeof(int));
    double mean = 0, qmax = (1 << (bits - 1)) - 1;
    for (int i = 0; i < in * in; i++)
        hd[i] = H[i];
    for (int i = 0; i < in; i++) {
        dead[i] = hd[i * in + i] == 0;
        if (dead[i])
            hd[i * in + i] = 1;
        mean += hd[i * in + i] / in;
    }
    for (int i = 0; i < in; i++)
        hd[i * in + i] += damp * mean;
    gauss_jordan_inverse(hd, hinv0, in);
    for (int r = 0; r < out; r++) {
        float mx = 0;
        for (int j = 0; j < in; j++)
            mx = fmaxf(mx, fabsf((float)w[r * in + j]));
        double s = scales[r] = fmaxf(mx, 1e-5f) / (float)qmax;
        memcpy(hi, hinv0, sizeof(double) * in * in);
        for (int j = 0; j < in; j++)
            row[j] = dead[j] ? 0 : w[r * in + j];
        for (int i = 0; i < in; i++) {
            double c = fmin(fmax(rint(row[i] / s), -qmax - 1), qmax);
            codes[r * in + i] = (int8_t)c;
            double e = (row[i] - s * c) / hi[i * in + i];
            for (int j = i + 1; j < in; j++)
                row[j] -= e * hi[i * in + j];
            for (int a = i + 1; a < in; a++)
                for (int b = i + 1; b < in; b++)
                    hi[a * in + b] -= hi[a * in + i] * hi[i * in + b] / hi[i * in + i];
        }
    }
    free(hd);
    free(hinv0);
    free(hi);
    free(row);
    free(dead);
}

static void unpack(const qlinear *l, int8_t *codes)
{
    size_t n = (size_t)l->out * l->in;
    if (l->bits <= 4)
        int4_unpack(l->codes, n, codes);
    else
        memcpy(codes, l->codes, n);
}

static void check_against_reference(int bits, int dead_col, uint64_t seed)
{
    real *x = alloc_real((long)TOK * IN), *w = alloc_real((long)OUT * IN);
    real *H = alloc_real((long)IN * IN);
    make_inputs(x, TOK, IN, dead_col, seed);
    rng_state rng;
    rng_seed(&rng, seed + 100);
    fill_normal(w, (long)OUT * IN, &rng, 0.5);
    gptq_hessian acc;
    assert_int_equal(gptq_hessian_init(&acc, IN), 0);
    assert_int_equal(gptq_hessian_add(&acc, x, 77), 0);
    assert_int_equal(gptq_hessian_add(&acc, x + 77 * IN, TOK - 77), 0);
    assert_int_equal(gptq_hessian_get(&acc, H), 0);
    /* the accumulator against a direct sum: H = (2/N) Σ x xᵀ */
    for (int i = 0; i < IN; i++)
        for (int j = 0; j < IN; j++) {
            double v = 0;
            for (int t = 0; t < TOK; t++)
                v += (double)x[t * IN + i] * x[t * IN + j];
            v *= 2.0 / TOK;
            assert_true(fabs(v - H[i * IN + j]) <= 1e-12 * fmax(1, fabs(v)));
        }
    int8_t ref[OUT * IN], got[OUT * IN];
    float ref_scales[OUT];
    reference_gptq(ref, ref_scales, w, OUT, IN, H, 0.01, bits);
    const int blocks[] = {1, 5, 8, 128};
    for (int b = 0; b < 4; b++) {
        qlinear l;
        int rc = gptq_quantize(&l, w, OUT, IN, H, bits, 0.01, blocks[b]);
        if (rc)
            fprintf(stderr, "%s\n", fq_errmsg());
        assert_int_equal(rc, 0);
        unpack(&l, got);
        int diff = 0;
        for (int i = 0; i < OUT * IN; i++)
            diff += got[i] != ref[i];
        if (diff)
            fprintf(stderr, "bits %d block %d: %d codes differ from the reference\n", bits,
                    blocks[b], diff);
        assert_int_equal(diff, 0);
        assert_memory_equal(l.scales, ref_scales, sizeof ref_scales);
        if (dead_col >= 0)
            for (int r = 0; r < OUT; r++)
                assert_int_equal(got[r * IN + dead_col], 0);
        free(l.codes);
        free(l.scales);
    }
    gptq_hessian_free(&acc);
    free(x);
    free(w);
    free(H);
}

static void test_matches_textbook_4bit(void **state)
{
    (void)state;
    check_against_reference(4, -1, 1);
    check_against_reference(4, -1, 2);
}

static void test_matches_textbook_3bit_8bit(void **state)
{
    (void)state;
    check_against_reference(3, -1, 3);
    check_against_reference(8, -1, 4);
}

static void test_dead_input(void **state)
{
    (void)state;
    check_against_reference(4, 7, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_textbook_4bit),
        cmocka_unit_test(test_matches_textbook_3bit_8bit),
        cmocka_unit_test(test_dead_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
