/* transform_init.c — an orthogonal matrix as SVD-form factor parameters (transform_init.h).
 *
 * The inverse Cayley map solves (U + I)·A = 2(U − I) by Gauss-Jordan elimination with
 * partial pivoting in float64 (k is a factor size: at most a few hundred). A pivot below
 * 1e−8 means U is (numerically) at the eigenvalue −1 for that sign pattern: skip it.
 */
#include "transform_init.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cayley.h"
#include "error.h"

#define WHERE "core/transform_init.c"
#define SIGN_TRIES 16

/* A = 2(U + I)^{-1}(U − I) for U = Q·diag(sign); *amax = max |A|. */
static int inverse_cayley(double *A, double *work, const real *q, const double *sign, int k,
                          double *amax)
{
    double *upi = work;
    size_t kk = (size_t)k * k;
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) {
            double u = (double)q[(size_t)i * k + j] * sign[j];
            upi[(size_t)i * k + j] = u + (i == j);
            A[(size_t)i * k + j] = 2 * (u - (i == j));
        }
    if (gauss_jordan_f64(upi, A, k, 1e-8)) /* near-singular: try another sign pattern */
        return -1;
    double m = 0;
    for (size_t i = 0; i < kk; i++)
        m = fmax(m, fabs(A[i]));
    *amax = m;
    return isfinite(m) ? 0 : -1;
}

/* Θ_U and λ (sign pattern) with Cayley(Θ_U)·diag(λ) = q, or −1 when no pattern of
 * SIGN_TRIES reaches it; *amax_out: max |Θ_U| of the pattern kept (the smaller, the better
 * conditioned the Cayley map at the start). */
static int sign_search(real *theta_u, real *lambda, const real *q, int k, rng_state *rng,
                       double *amax_out)
{
    size_t kk = (size_t)k * k;
    double *A = fq_malloc(sizeof(double) * kk, "inverse Cayley");
    double *best = fq_malloc(sizeof(double) * kk, "inverse Cayley");
    double *work = fq_malloc(sizeof(double) * kk, "inverse Cayley work");
    double *sign = fq_malloc(sizeof(double) * (size_t)k, "sign pattern");
    double *best_sign = fq_malloc(sizeof(double) * (size_t)k, "sign pattern");
    int rc = -2;
    if (!A || !best || !work || !sign || !best_sign)
        goto out;
    double best_amax = INFINITY;
    for (int t = 0; t < SIGN_TRIES; t++) {
        /* every try draws k numbers, so the stream consumed does not depend on results */
        for (int j = 0; j < k; j++) {
            double u = rng_uniform(rng);
            sign[j] = t == 0 || u < 0.5 ? 1.0 : -1.0;
        }
        double amax;
        if (inverse_cayley(A, work, q, sign, k, &amax) == 0 && amax < best_amax) {
            best_amax = amax;
            memcpy(best, A, sizeof(double) * kk);
            memcpy(best_sign, sign, sizeof(double) * (size_t)k);
        }
    }
    rc = -1;
    *amax_out = best_amax;
    if (!isfinite(best_amax))
        goto out;
    /* Θ's strictly-lower triangle is A's; the rest is unused by the Cayley map: keep 0 */
    memset(theta_u, 0, sizeof(real) * kk);
    for (int i = 0; i < k; i++) {
        for (int j = 0; j < i; j++)
            theta_u[(size_t)i * k + j] = (real)best[(size_t)i * k + j];
        lambda[i] = (real)best_sign[i];
    }
    rc = 0;
out:
    free(A);
    free(best);
    free(work);
    free(sign);
    free(best_sign);
    return rc;
}

int factor_init_orthogonal(real *theta_u, real *theta_v, real *lambda, const real *q, int k,
                           rng_state *rng)
{
    if (!theta_u || !theta_v || !lambda || !q || !rng || k < 1)
        return fq_error(WHERE ":factor_init_orthogonal: NULL argument or size %d (expected "
                        "buffers and k >= 1)", k);
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) {
            double dot = 0;
            for (int r = 0; r < k; r++)
                dot += (double)q[(size_t)r * k + i] * (double)q[(size_t)r * k + j];
            if (!(fabs(dot - (i == j)) <= 1e-5))
                return fq_error(WHERE ":factor_init_orthogonal: the %dx%d matrix is not "
                                "orthogonal (column %d · column %d = %g; expected QᵀQ = I)", k,
                                k, i, j, dot);
        }
    size_t kk = (size_t)k * k;
    memset(theta_v, 0, sizeof(real) * kk);
    double amax = INFINITY;
    int rc = sign_search(theta_u, lambda, q, k, rng, &amax);
    /* Structured matrices (a Sylvester Hadamard of size 64, say) can keep the eigenvalue −1
     * under every sign pattern, or reach it only with huge Θ (fp32 then loses digits). Then
     * also split Q = (Q·R)·Rᵀ with Haar-random R = Cayley(Θ_V): Q·R is generic, and
     * U diag(λ) Vᵀ = (Q R D) D Rᵀ = Q still holds exactly. Keep the best-conditioned. */
    real *R = NULL, *QR = NULL, *work = NULL, *tu = NULL, *tv = NULL, *lam = NULL;
    for (int t = 0; rc != -2 && amax > 8 && t < 4; t++) {
        if (!R) {
            R = fq_malloc(sizeof(real) * kk, "random rotation");
            QR = fq_malloc(sizeof(real) * kk, "rotated factor");
            work = fq_malloc(sizeof(real) * kk, "Cayley work");
            tu = fq_malloc(sizeof(real) * kk, "Θ_U candidate");
            tv = fq_malloc(sizeof(real) * kk, "Θ_V candidate");
            lam = fq_malloc(sizeof(real) * (size_t)k, "λ candidate");
            if (!R || !QR || !work || !tu || !tv || !lam) {
                rc = -2;
                break;
            }
        }
        if (factor_init_haar(tv, k, rng) != FQ_OK || cayley_fwd(R, tv, k, work) != FQ_OK) {
            rc = -2;
            break;
        }
        real_gemm(0, 0, k, k, k, 1, q, k, R, k, 0, QR, k);
        double a2 = INFINITY;
        int r2 = sign_search(tu, lam, QR, k, rng, &a2);
        if (r2 == -2) {
            rc = -2;
            break;
        }
        if (r2 == 0 && a2 < amax) {
            amax = a2;
            rc = 0;
            memcpy(theta_u, tu, sizeof(real) * kk);
            memcpy(theta_v, tv, sizeof(real) * kk);
            memcpy(lambda, lam, sizeof(real) * (size_t)k);
        }
    }
    free(tu);
    free(tv);
    free(lam);
    free(R);
    free(QR);
    free(work);
    if (rc == -2)
        return fq_error_wrap(WHERE ":factor_init_orthogonal: %dx%d", k, k);
    if (rc == -1)
        return fq_error(WHERE ":factor_init_orthogonal: no sign pattern of %d tries, with or "
                        "without a random right factor, keeps the %dx%d matrix away from the "
                        "eigenvalue -1 (expected a Cayley-reachable start)", SIGN_TRIES, k, k);
    return FQ_OK;
}
