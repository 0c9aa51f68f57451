/* real.h — the scalar type of flatq's CPU math.
 *
 * The CPU reference computes in fp32 (`real` = float). The same sources are compiled a
 * second time with -DFQ_REAL_F64 (`real` = double) into build/libflatq_f64.a, which the
 * finite-difference tests (tests/unit/test_*_f64.c) link against: one source of truth,
 * checked in float64. <tgmath.h> makes exp/sqrt/rint/... pick the right precision.
 */
#ifndef FQ_REAL_H
#define FQ_REAL_H

#include <stddef.h>
#include <tgmath.h>

#ifdef FQ_REAL_F64
typedef double real;
#define REAL_NAME "f64"
#else
typedef float real;
#define REAL_NAME "f32"
#endif

/* Row-major C[M,N] = alpha * op(A) * op(B) + beta * C, op = transpose when trans_* != 0.
 * A is [M,K] (or [K,M] transposed), B is [K,N] (or [N,K] transposed). BLAS underneath. */
void real_gemm(int trans_a, int trans_b, int m, int n, int k, real alpha, const real *a,
               int lda, const real *b, int ldb, real beta, real *c, int ldc);

/* The threads BLAS runs its calls on (OpenBLAS: OPENBLAS_NUM_THREADS or the cores), and
 * setting them: for code that runs small BLAS calls on threads of its own, one each. */
int real_blas_threads(void);
void real_blas_set_threads(int n);

/* Convert n fp32 values into real (a copy in either precision). */
void real_from_f32(const float *src, size_t n, real *dst);
void real_to_f32(const real *src, size_t n, float *dst);

#endif
