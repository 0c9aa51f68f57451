/* cayley.h — the parameterisation of FlatQuant's learnable transforms (ALGORITHM §3.3, §4.5).
 *
 * Default "SVD form": a factor is M = U diag(λ) Vᵀ with U, V orthogonal through the Cayley
 * map of the strictly-lower skew part of a free square parameter Θ:
 *   A = tril₋(Θ) − tril₋(Θ)ᵀ,   U = (I − A/2)^{-1} (I + A/2).
 * Its inverse transpose is exact and free of any inversion: M^{-T} = U diag(1/λ) Vᵀ.
 * The Cayley solve is a small Gauss-Jordan elimination with partial pivoting in `real`;
 * I − A/2 with A skew has eigenvalues 1 − iω/2, so it is always well conditioned — a
 * failed solve means NaN/Inf input and is reported as such. Its backward needs no second
 * solve: U + I = 2(I − A/2)^{-1}, hence K = (I − A/2)^{-T} = (U + I)ᵀ/2.
 *
 * "Direct form" (direct_inv): M itself is the parameter and M^{-T} is an explicit inverse
 * computed in float64 then cast, as the reference does.
 *
 * λ is unconstrained and 1/λ is unbounded: nothing is clamped (the reference does not);
 * non-finite values and λ = 0 are errors, and factor_lambda_min_abs() gives the number
 * to log each epoch. Backward functions ACCUMULATE into parameter gradients.
 */
#ifndef FQ_CAYLEY_H
#define FQ_CAYLEY_H

#include "real.h"
#include "rng.h"

/* U = Cayley(Θ) for a k×k Θ (only its strictly-lower triangle is read); work: k·k. */
int cayley_fwd(real *U, const real *theta, int k, real *work);
/* g_theta += ∂/∂Θ from g_U, given the forward's U; work: 3·k·k. Only the strictly-lower
 * triangle of g_theta receives gradient. */
int cayley_bwd(real *g_theta, const real *g_U, const real *U, int k, real *work);

/* Work elements svd_factor_fwd / svd_factor_bwd need. */
long svd_factor_fwd_work(int k);
long svd_factor_bwd_work(int k);

/* M = U diag(λ) Vᵀ and M_invT = U diag(1/λ) Vᵀ (either output may be NULL); U and V
 * (k×k each) are written and are what the backward needs. */
int svd_factor_fwd(real *M, real *M_invT, real *U, real *V, const real *theta_u,
                   const real *theta_v, const real *lambda, int k, real *work);
/* From the gradients of M and M^{-T} (either may be NULL) to Θ_U, Θ_V, λ (accumulated). */
int svd_factor_bwd(real *g_theta_u, real *g_theta_v, real *g_lambda, const real *g_M,
                   const real *g_M_invT, const real *U, const real *V, const real *lambda,
                   int k, real *work);

/* Direct form: M_invT = (M^{-1})ᵀ computed in float64 (work: 2·k·k doubles). */
int direct_inv_fwd(real *M_invT, const real *M, int k, double *work);
/* Row-major A X = B for k×k A (destroyed) and k×k B (overwritten by X): Gauss-Jordan with
 * partial pivoting in double, for the float64 references and the inverse Cayley map of the
 * initialisation. Returns 0, or -1 at the first pivot that is not finite or has
 * |pivot| ≤ min_pivot. */
int gauss_jordan_f64(double *A, double *B, int k, double min_pivot);
/* g_M += −M^{-T} · g_M_invTᵀ · M^{-T}; work: k·k. */
int direct_inv_bwd(real *g_M, const real *g_M_invT, const real *M_invT, int k, real *work);

/* Θ₀: a Haar-random k×k orthogonal matrix, the Q of the QR factorisation of a standard
 * Gaussian matrix with R's diagonal made positive. */
int factor_init_haar(real *theta, int k, rng_state *rng);

/* min_i |λ_i|, the number that says how close a factor is to singular. */
real factor_lambda_min_abs(const real *lambda, int k);

#endif
