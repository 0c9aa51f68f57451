/* hadamard.h — normalised Hadamard matrices for the QuaRot-style baselines (ALGORITHM §8).
 *
 * A size n is written n = K·2^m and the matrix is H = H_K ⊗ H_{2^m} / √n, with H_{2^m}
 * Sylvester's and H_K built in code (no stored tables) by Paley's constructions:
 *   Paley I  — K = q + 1 for a prime q ≡ 3 (mod 4)   (12, 20, 24, 32, 44, 48, 60, 68, 72, 84, 108, …)
 *   Paley II — K = 2(q + 1) for a prime q ≡ 1 (mod 4) (12, 28, 36, 60, 76, 108, …)
 * The smallest such K is chosen, so most of the work is the O(n log n) fast
 * Walsh-Hadamard transform, and K is at most 256 so the dense K part stays cheap (a larger
 * Paley factor exists for some sizes, e.g. 11008 = 5504·2, but would cost ~30× more per
 * token than the fallback below). What the LLaMA shapes of ALGORITHM §1 need:
 *   d, h·dh: 64, 4096, 8192 = 2^m; 5120 = 20·256; flatq-llama-16m 384 = 12·32
 *   f: 11008 = 172·64 (QuaRot stores a Williamson-type order 172 that Paley cannot give:
 *      171 = 9·19 and 85 = 5·17 are not primes, and no K = 43·2^j with j ≤ 2 is reachable),
 *      13824 = 108·128, 14336 = 28·512, 28672 = 28·1024, 1024 = 2^10, stories260K 172
 *   dh: 8, 64, 128; h: 8, 32, 64 = 2^m; 40 = 20·2; flatq-llama-16m h = 6 (6 ≡ 2 mod 4:
 *      no Hadamard matrix of that order exists at all)
 * Where no construction applies (172, 11008, 6, any n with a bad odd part), the K part is a
 * seeded Haar-random orthogonal matrix of order K = the odd part of n (times 4 when that
 * keeps n = K·2^m, so 172 → 172·1, 11008 → 172·64, 6 → 6·1), and the function reports it
 * through *is_random so the caller logs that this rotation is orthogonal but not Hadamard.
 * The result is still orthogonal and applied with the same fast K ⊗ 2^m structure.
 *
 * Convention: rows are row vectors, y = x·H.
 */
#ifndef FQ_HADAMARD_H
#define FQ_HADAMARD_H

#include <stdint.h>

#include "real.h"

/* Split n = k·2^m with the smallest constructible k; *is_random = 1 when none is and k is
 * the random-orthogonal fallback order. */
int hadamard_split(int n, int *k, int *pow2, int *is_random);

/* The normalised k×k factor (entries ±1/√k, or random orthogonal when *is_random is set;
 * seed picks that matrix). k must come from hadamard_split or be constructible. */
int hadamard_k_matrix(real *out, int k, uint64_t seed, int *is_random);

/* Dense normalised n×n matrix H = H_K ⊗ H_{2^m} / √n (out: n·n). */
int hadamard_matrix(int n, real *out, uint64_t seed, int *is_random);

/* Work elements hadamard_apply_rows needs. */
long hadamard_apply_work(int rows, int n);
/* In place x ← x·H for each of rows rows of length n = k·pow2, with hk the normalised
 * k×k factor from hadamard_k_matrix. */
int hadamard_apply_rows(real *x, int rows, int n, int k, const real *hk, real *work);

#endif
