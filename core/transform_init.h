/* transform_init.h — starting points of FlatQuant's learnable factors other than the
 * official Haar-random one (ALGORITHM §3.3): a given orthogonal matrix Q (a normalised
 * Hadamard factor, issue 10's `init: hadamard|smoothrot`) written in the SVD form's own
 * parameters, so training starts from exactly M = Q.
 *
 * The idea. M = U diag(λ) Vᵀ with U = Cayley(A), A skew. A Cayley image never has the
 * eigenvalue −1, and a Hadamard matrix often does (H_2 is a reflection; Sylvester matrices
 * are symmetric with eigenvalues ±1), so Q itself may not be reachable as U. The sign
 * freedom of λ fixes that: with a diagonal D of ±1, U = Q·D, λ = D and V = I give
 * M = Q·D·D = Q, and some D keeps Q·D away from −1. We try D = I and then seeded random
 * sign patterns and keep the one with the smallest inverse-Cayley parameter
 * A = 2(U + I)^{-1}(U − I) (small A = far from −1, a well conditioned start, and weight
 * decay on Θ pulls it less). The inverse Cayley solve runs in float64.
 *
 * Trade-off: V = I means the initial U carries the whole rotation; any split would do,
 * this one needs one solve and no search over V.
 */
#ifndef FQ_TRANSFORM_INIT_H
#define FQ_TRANSFORM_INIT_H

#include "real.h"
#include "rng.h"

/* Θ_U, Θ_V (k×k each; Θ_V = 0) and λ (k) such that U diag(λ) Vᵀ = Q (k×k orthogonal, to
 * rounding). Fails when Q is not orthogonal to 1e−5 or no sign pattern reaches it. */
int factor_init_orthogonal(real *theta_u, real *theta_v, real *lambda, const real *q, int k,
                           rng_state *rng);

#endif
