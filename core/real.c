/* real.c — BLAS GEMM and conversions for the `real` scalar type (see real.h). */
#include "real.h"

#include <cblas.h>

/* OpenBLAS's own calls (no header declares them on Debian's packages) */
extern int openblas_get_num_threads(void);
extern void openblas_set_num_threads(int n);

int real_blas_threads(void)
{
    return openblas_get_num_threads();
}

void real_blas_set_threads(int n)
{
    openblas_set_num_threads(n);
}

void real_gemm(int trans_a, int trans_b, int m, int n, int k, real alpha, const real *a,
               int lda, const real *b, int ldb, real beta, real *c, int ldc)
{
    if (m <= 0 || n <= 0)
        return;
#ifdef FQ_REAL_F64
    cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#else
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

void real_from_f32(const float *src, size_t n, real *dst)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (real)src[i];
}

void real_to_f32(const real *src, size_t n, float *dst)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (float)src[i];
}
