/* cayley.c — Cayley map, SVD-form factors, direct-form inverse, Haar init (cayley.h). */
#include "cayley.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

/* Solves go to LAPACK's LU with partial pivoting (OpenBLAS ships it): for the k = 224
 * factors of a 70B layer the former scalar Gauss-Jordan loop took ~20-30 ms per solve,
 * gesv a few milliseconds. LAPACK is column-major; the callers below arrange their
 * row-major arrays so that the column-major solve gives the row-major answer (each says
 * why). OpenBLAS's threaded getrf rounds differently with different thread counts, which
 * would make a layer's bytes depend on how many ranks share the node; so each solve runs
 * on one thread (restored after). No LAPACKE header on Debian's OpenBLAS packages, so
 * the symbols are declared here (LP64: 32-bit integers). */
extern void sgesv_(const int *n, const int *nrhs, float *a, const int *lda, int *ipiv,
                   float *b, const int *ldb, int *info);
extern void dgesv_(const int *n, const int *nrhs, double *a, const int *lda, int *ipiv,
                   double *b, const int *ldb, int *info);

/* Column-major A Z = B for n right-hand sides, A destroyed, B becomes Z; f64 picks dgesv
 * (double buffers) over sgesv (float). Returns 0, -1 when A is singular, -2 when the pivot
 * table cannot be allocated. */
static int lu_solve(void *A, void *B, int n, int f64)
{
    int *ipiv = malloc(sizeof(int) * (size_t)n), info = 0;
    if (!ipiv)
        return -2;
    const int threads = real_blas_threads();
    if (threads > 1)
        real_blas_set_threads(1);
    if (f64)
        dgesv_(&n, &n, A, &n, ipiv, B, &n, &info);
    else
        sgesv_(&n, &n, A, &n, ipiv, B, &n, &info);
    if (threads > 1)
        real_blas_set_threads(threads);
    free(ipiv);
    return info == 0 ? 0 : -1;
}

static int all_finite_f64(const double *x, long n)
{
    for (long i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

static int all_finite(const real *x, long n)
{
    for (long i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

int cayley_fwd(real *U, const real *theta, int k, real *work)
{
    if (!U || !theta || !work)
        return fq_error("core/cayley.c:cayley_fwd: NULL buffer (expected U, theta and work)");
    if (k <= 0)
        return fq_error("core/cayley.c:cayley_fwd: size %d (expected positive)", k);
    if (!all_finite(theta, (long)k * k))
        return fq_error("core/cayley.c:cayley_fwd: theta of a %dx%d factor holds NaN/Inf "
                        "(expected finite parameters)", k, k);
    /* work = I − A/2, U = I + A/2, with A[i][j] = Θ[i][j] (i > j), −Θ[j][i] (i < j). */
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) {
            real a = i > j ? theta[(long)i * k + j] : (i < j ? -theta[(long)j * k + i] : 0);
            real id = i == j ? 1 : 0;
            work[(long)i * k + j] = id - a / 2;
            U[(long)i * k + j] = id + a / 2;
        }
    /* Row-major B = I − A/2 and C = I + A/2 read column-major are Bᵀ and Cᵀ; solving
     * Bᵀ Z = Cᵀ gives Z = (C B⁻¹)ᵀ, and C B⁻¹ = B⁻¹ C because both are polynomials in A:
     * Z read row-major is the wanted U. */
    int rc = lu_solve(work, U, k, sizeof(real) == sizeof(double));
    if (rc == -2)
        return fq_error("core/cayley.c:cayley_fwd: out of memory for %d pivot indices", k);
    if (rc != 0)
        return fq_error("core/cayley.c:cayley_fwd: singular Cayley system of size %d "
                        "(expected finite theta; this means NaN/Inf upstream)", k);
    return FQ_OK;
}

int cayley_bwd(real *g_theta, const real *g_U, const real *U, int k, real *work)
{
    if (!g_theta || !g_U || !U || !work)
        return fq_error("core/cayley.c:cayley_bwd: NULL buffer (expected g_theta, g_U, U "
                        "and work)");
    if (k <= 0)
        return fq_error("core/cayley.c:cayley_bwd: size %d (expected positive)", k);
    const long kk = (long)k * k;
    real *K = work, *T = work + kk, *GA = work + 2 * kk;
    /* K = (I − A/2)^{-T} = (U + I)ᵀ / 2;  G_A = K G_U K. */
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++)
            K[(long)i * k + j] = (U[(long)j * k + i] + (i == j ? 1 : 0)) / 2;
    real_gemm(0, 0, k, k, k, 1, K, k, g_U, k, 0, T, k);
    real_gemm(0, 0, k, k, k, 1, T, k, K, k, 0, GA, k);
    for (int i = 0; i < k; i++)
        for (int j = 0; j < i; j++)
            g_theta[(long)i * k + j] += GA[(long)i * k + j] - GA[(long)j * k + i];
    return FQ_OK;
}

long svd_factor_fwd_work(int k) { return 2L * k * k; }
long svd_factor_bwd_work(int k) { return 7L * k * k; }

static int check_lambda(const char *where, const real *lambda, int k)
{
    for (int i = 0; i < k; i++)
        if (!isfinite(lambda[i]) || lambda[i] == 0)
            return fq_error("core/cayley.c:%s: lambda[%d] = %g in a %dx%d factor (expected "
                            "finite and non-zero; 1/lambda gives the inverse)", where, i,
                            (double)lambda[i], k, k);
    return FQ_OK;
}

/* out = U diag(d) Vᵀ, with tmp k×k scratch. */
static void usv(real *out, const real *U, const real *d, const real *V, int k, real *tmp)
{
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++)
            tmp[(long)i * k + j] = U[(long)i * k + j] * d[j];
    real_gemm(0, 1, k, k, k, 1, tmp, k, V, k, 0, out, k);
}

int svd_factor_fwd(real *M, real *M_invT, real *U, real *V, const real *theta_u,
                   const real *theta_v, const real *lambda, int k, real *work)
{
    if (!U || !V || !theta_u || !theta_v || !lambda || !work)
        return fq_error("core/cayley.c:svd_factor_fwd: NULL buffer (expected U, V, both "
                        "thetas, lambda and work)");
    if (k <= 0)
        return fq_error("core/cayley.c:svd_factor_fwd: size %d (expected positive)", k);
    if (check_lambda("svd_factor_fwd", lambda, k))
        return FQ_ERR;
    if (cayley_fwd(U, theta_u, k, work) || cayley_fwd(V, theta_v, k, work))
        return fq_error_wrap("core/cayley.c:svd_factor_fwd");
    real *tmp = work, *inv = work + (long)k * k;
    if (M)
        usv(M, U, lambda, V, k, tmp);
    if (M_invT) {
        for (int i = 0; i < k; i++)
            inv[i] = 1 / lambda[i];
        usv(M_invT, U, inv, V, k, tmp);
    }
    if ((M && !all_finite(M, (long)k * k)) || (M_invT && !all_finite(M_invT, (long)k * k)))
        return fq_error("core/cayley.c:svd_factor_fwd: a %dx%d factor became non-finite "
                        "(min |lambda| = %g; expected finite values)", k, k,
                        (double)factor_lambda_min_abs(lambda, k));
    return FQ_OK;
}

int svd_factor_bwd(real *g_theta_u, real *g_theta_v, real *g_lambda, const real *g_M,
                   const real *g_M_invT, const real *U, const real *V, const real *lambda,
                   int k, real *work)
{
    if (!g_theta_u || !g_theta_v || !g_lambda || !U || !V || !lambda || !work)
        return fq_error("core/cayley.c:svd_factor_bwd: NULL buffer (expected the three "
                        "gradients, U, V, lambda and work)");
    if (k <= 0)
        return fq_error("core/cayley.c:svd_factor_bwd: size %d (expected positive)", k);
    if (check_lambda("svd_factor_bwd", lambda, k))
        return FQ_ERR;
    const long kk = (long)k * k;
    real *GU = work, *GV = work + kk, *T1 = work + 2 * kk, *T2 = work + 3 * kk;
    real *cw = work + 4 * kk;
    memset(GU, 0, sizeof(real) * kk);
    memset(GV, 0, sizeof(real) * kk);
    /* Two passes: (G, d, sign) = (G_M, λ, +) and (G_{M^{-T}}, 1/λ, −/λ²). */
    for (int pass = 0; pass < 2; pass++) {
        const real *G = pass == 0 ? g_M : g_M_invT;
        if (!G)
            continue;
        real_gemm(0, 0, k, k, k, 1, G, k, V, k, 0, T1, k); /* G V */
        real_gemm(1, 0, k, k, k, 1, G, k, U, k, 0, T2, k); /* Gᵀ U */
        for (int j = 0; j < k; j++) {
            real d = pass == 0 ? lambda[j] : 1 / lambda[j];
            real diag = 0;
            for (int i = 0; i < k; i++) {
                GU[(long)i * k + j] += T1[(long)i * k + j] * d;
                GV[(long)i * k + j] += T2[(long)i * k + j] * d;
                diag += U[(long)i * k + j] * T1[(long)i * k + j];
            }
            g_lambda[j] += pass == 0 ? diag : -diag / (lambda[j] * lambda[j]);
        }
    }
    if (cayley_bwd(g_theta_u, GU, U, k, cw) || cayley_bwd(g_theta_v, GV, V, k, cw))
        return fq_error_wrap("core/cayley.c:svd_factor_bwd");
    return FQ_OK;
}

int direct_inv_fwd(real *M_invT, const real *M, int k, double *work)
{
    if (!M_invT || !M || !work)
        return fq_error("core/cayley.c:direct_inv_fwd: NULL buffer (expected M_invT, M and "
                        "work)");
    if (k <= 0)
        return fq_error("core/cayley.c:direct_inv_fwd: size %d (expected positive)", k);
    const long kk = (long)k * k;
    double *B = work, *X = work + kk;
    /* B row-major holds Mᵀ, which column-major is M: solving M Z = I gives Z = M⁻¹ column-
     * major, that is M^{-T} row-major, directly. */
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) {
            B[(long)i * k + j] = (double)M[(long)j * k + i];
            X[(long)i * k + j] = i == j ? 1.0 : 0.0;
        }
    int rc = lu_solve(B, X, k, 1);
    if (rc == -2)
        return fq_error("core/cayley.c:direct_inv_fwd: out of memory for %d pivot indices", k);
    if (rc != 0 || !all_finite_f64(X, kk))
        return fq_error("core/cayley.c:direct_inv_fwd: a %dx%d factor is singular or holds "
                        "NaN/Inf (expected an invertible finite matrix)", k, k);
    for (long i = 0; i < kk; i++)
        M_invT[i] = (real)X[i];
    if (!all_finite(M_invT, kk))
        return fq_error("core/cayley.c:direct_inv_fwd: the inverse of a %dx%d factor "
                        "overflows (expected a well-conditioned matrix)", k, k);
    return FQ_OK;
}

int direct_inv_bwd(real *g_M, const real *g_M_invT, const real *M_invT, int k, real *work)
{
    if (!g_M || !g_M_invT || !M_invT || !work)
        return fq_error("core/cayley.c:direct_inv_bwd: NULL buffer (expected g_M, "
                        "g_M_invT, M_invT and work)");
    if (k <= 0)
        return fq_error("core/cayley.c:direct_inv_bwd: size %d (expected positive)", k);
    /* N = M^{-T}: dN = −N dMᵀ N, so G_M += −N G_Nᵀ N. */
    real_gemm(0, 1, k, k, k, 1, M_invT, k, g_M_invT, k, 0, work, k);
    real_gemm(0, 0, k, k, k, -1, work, k, M_invT, k, 1, g_M, k);
    return FQ_OK;
}

int factor_init_haar(real *theta, int k, rng_state *rng)
{
    if (!theta || !rng)
        return fq_error("core/cayley.c:factor_init_haar: NULL buffer (expected theta and "
                        "rng)");
    if (k <= 0)
        return fq_error("core/cayley.c:factor_init_haar: size %d (expected positive)", k);
    for (long i = 0; i < (long)k * k; i++)
        theta[i] = (real)rng_normal(rng);
    /* Modified Gram-Schmidt on the columns, twice per column so that orthogonality holds
     * to rounding in fp32 too. Dividing by the positive norm makes diag(R) > 0, which is
     * exactly the sign fix that turns QR into a Haar sample. */
    for (int j = 0; j < k; j++) {
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i < j; i++) {
                real dot = 0;
                for (int r = 0; r < k; r++)
                    dot += theta[(long)r * k + i] * theta[(long)r * k + j];
                for (int r = 0; r < k; r++)
                    theta[(long)r * k + j] -= dot * theta[(long)r * k + i];
            }
        real nrm = 0;
        for (int r = 0; r < k; r++)
            nrm += theta[(long)r * k + j] * theta[(long)r * k + j];
        nrm = sqrt(nrm);
        if (!(nrm > 0))
            return fq_error("core/cayley.c:factor_init_haar: degenerate Gaussian column %d "
                            "(expected full rank)", j);
        for (int r = 0; r < k; r++)
            theta[(long)r * k + j] /= nrm;
    }
    return FQ_OK;
}

real factor_lambda_min_abs(const real *lambda, int k)
{
    if (!lambda || k <= 0)
        return NAN;
    real best = fabs(lambda[0]);
    for (int i = 1; i < k; i++)
        if (fabs(lambda[i]) < best || isnan(lambda[i]))
            best = fabs(lambda[i]);
    return best;
}

int gauss_jordan_f64(double *A, double *B, int k, double min_pivot)
{
    for (int c = 0; c < k; c++) {
        int p = c;
        for (int r = c + 1; r < k; r++)
            if (fabs(A[(size_t)r * k + c]) > fabs(A[(size_t)p * k + c]))
                p = r;
        double piv = A[(size_t)p * k + c];
        if (!(fabs(piv) > min_pivot) || !isfinite(piv))
            return -1;
        if (p != c)
            for (int j = 0; j < k; j++) {
                double t = A[(size_t)p * k + j];
                A[(size_t)p * k + j] = A[(size_t)c * k + j];
                A[(size_t)c * k + j] = t;
                t = B[(size_t)p * k + j];
                B[(size_t)p * k + j] = B[(size_t)c * k + j];
                B[(size_t)c * k + j] = t;
            }
        for (int r = 0; r < k; r++) {
            if (r == c)
                continue;
            double f = A[(size_t)r * k + c] / piv;
            if (f == 0)
                continue;
            for (int j = 0; j < k; j++) {
                A[(size_t)r * k + j] -= f * A[(size_t)c * k + j];
                B[(size_t)r * k + j] -= f * B[(size_t)c * k + j];
            }
        }
    }
    for (int r = 0; r < k; r++) {
        double d = A[(size_t)r * k + r];
        for (int j = 0; j < k; j++)
            B[(size_t)r * k + j] /= d;
    }
    return 0;
}
