/* rng.h — a small seeded random number generator for parameter initialisation.
 *
 * xoshiro256** (Blackman & Vigna) with its state filled by splitmix64 from one 64-bit
 * seed: fast, tiny, good statistical quality, and fully determined by the seed, so a
 * calibration run with the same seed initialises the same transforms on every machine.
 * Normal samples use the Box-Muller transform in double; the second value of each pair is
 * discarded so that every sample consumes exactly two draws (simple to reason about when
 * reproducing a sequence). Bitwise equality with PyTorch's generator is not a goal
 * (ALGORITHM §3.3). The state is a plain value owned by the caller: no hidden globals.
 */
#ifndef FQ_RNG_H
#define FQ_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} rng_state;

/* Seed the generator; every seed (0 included) gives a valid, distinct stream. */
void rng_seed(rng_state *rng, uint64_t seed);
/* Next raw 64-bit value. */
uint64_t rng_next_u64(rng_state *rng);
/* Uniform double in [0, 1) with 53 random bits. */
double rng_uniform(rng_state *rng);
/* Standard normal sample N(0, 1). */
double rng_normal(rng_state *rng);

#endif
