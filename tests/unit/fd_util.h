/* fd_util.h — helpers shared by the unit tests: seeded random fills, central finite
 * differences in float64, and a tolerance check that prints the worst element.
 * Header-only (static functions) because only tests/unit/test_*.c become binaries. */
#ifndef FQ_TEST_FD_UTIL_H
#define FQ_TEST_FD_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "real.h"
#include "rng.h"

static inline void fill_normal(real *x, long n, rng_state *rng, double scale)
{
    for (long i = 0; i < n; i++)
        x[i] = (real)(scale * rng_normal(rng));
}

static inline real *alloc_real(long n)
{
    real *p = calloc((size_t)(n > 0 ? n : 1), sizeof(real));
    if (!p)
        abort();
    return p;
}

/* A scalar loss of a parameter vector (which the callback may read through ctx). */
typedef double (*fd_loss_fn)(void *ctx);

/* Central difference of loss w.r.t. p[i], restoring p[i]. */
static inline double fd_central(fd_loss_fn loss, void *ctx, real *p, long i, double h)
{
    real keep = p[i];
    p[i] = keep + (real)h;
    double up = loss(ctx);
    p[i] = keep - (real)h;
    double dn = loss(ctx);
    p[i] = keep;
    return (up - dn) / (2 * h);
}

/* Compare the analytic gradient g[0..n) of loss w.r.t. p against central differences:
 * |g − fd| ≤ tol · max(1, |fd|). Returns the number of failing elements (and prints the
 * worst one). */
static inline int fd_check(const char *what, fd_loss_fn loss, void *ctx, real *p,
                           const real *g, long n, double h, double tol)
{
    int bad = 0;
    double worst = 0;
    long worst_i = -1;
    for (long i = 0; i < n; i++) {
        double fd = fd_central(loss, ctx, p, i, h);
        double err = fabs((double)g[i] - fd) / fmax(1.0, fabs(fd));
        if (err > worst) {
            worst = err;
            worst_i = i;
        }
        if (err > tol)
            bad++;
    }
    if (bad)
        fprintf(stderr, "%s: %d of %ld gradients off; worst [%ld] rel err %.3g\n", what, bad,
                n, worst_i, worst);
    return bad;
}

/* max |a − b| over n elements. */
static inline double max_abs_diff(const real *a, const real *b, long n)
{
    double m = 0;
    for (long i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

static inline double dot(const real *a, const real *b, long n)
{
    double s = 0;
    for (long i = 0; i < n; i++)
        s += (double)a[i] * (double)b[i];
    return s;
}

#endif
