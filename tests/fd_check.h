/* fd_check.h — central finite differences for the float64 gradient tests.
 *
 * A test writes its loss as L(θ) = <G, f(θ)> for a fixed random G, runs the analytic
 * backward with G as the upstream gradient, and compares with fd_grad's numbers.
 * Header-only so every *_f64 test can use it without a library of test helpers.
 */
#ifndef FQ_FD_CHECK_H
#define FQ_FD_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

/* A small deterministic generator (splitmix64) for test inputs. */
static inline double fd_uniform(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53 * 2.0 - 1.0; /* [-1, 1) */
}

static inline void fd_fill(double *x, size_t n, double scale, uint64_t *state)
{
    for (size_t i = 0; i < n; i++)
        x[i] = scale * fd_uniform(state);
}

static inline double fd_dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Numerical dL/dθ_i for i < n, where loss() evaluates L at the current θ. */
static inline void fd_grad(double *theta, size_t n, double h, double (*loss)(void *), void *ctx,
                           double *out)
{
    for (size_t i = 0; i < n; i++) {
        double t = theta[i];
        theta[i] = t + h;
        double lp = loss(ctx);
        theta[i] = t - h;
        double lm = loss(ctx);
        theta[i] = t;
        out[i] = (lp - lm) / (2 * h);
    }
}

/* max |a − b| / max(1, max |b|): the relative error the tests bound. */
static inline double fd_rel_err(const double *a, const double *b, size_t n)
{
    double num = 0, den = 1;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (d > num)
            num = d;
        if (fabs(b[i]) > den)
            den = fabs(b[i]);
    }
    return num / den;
}

#endif
