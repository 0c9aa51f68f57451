/* kron.c — Kronecker / per-channel / single transforms, forward and backward (kron.h).
 *
 * Layout trick: the L side of Ỹ = Lᵀ X̃ R contracts the middle index of [rows, n1, n2].
 * Permuting to [n1, rows, n2] turns it into one GEMM with an [n1, rows·n2] matrix; the
 * head transform M_oᵀ·O is exactly that L side with R = I, so both share the helpers.
 */
#include "kron.h"

#include <limits.h>
#include <string.h>

#include "error.h"

int kron_split(int n, int *n1, int *n2, int *fallback)
{
    if (!n1 || !n2)
        return fq_error("core/kron.c:kron_split: NULL output (expected n1 and n2)");
    if (n <= 0)
        return fq_error("core/kron.c:kron_split: size %d (expected a positive size)", n);
    if (fallback)
        *fallback = 0;
    if (n % 4 == 2) {
        /* n = a² − b² needs a, b of equal parity, impossible for n ≡ 2 (mod 4). */
        int best = 1;
        for (int a = 1; (long)a * a <= n; a++)
            if (n % a == 0)
                best = a;
        *n1 = best;
        *n2 = n / best;
        if (fallback)
            *fallback = 1;
        return FQ_OK;
    }
    long a = (long)sqrt((double)n);
    while (a * a < n)
        a++;
    while (a * a > n && (a - 1) * (a - 1) >= n)
        a--;
    for (;; a++) {
        long d = a * a - n;
        long b = (long)sqrt((double)d);
        while (b * b > d)
            b--;
        while ((b + 1) * (b + 1) <= d)
            b++;
        if (b * b == d) {
            *n1 = (int)(a - b);
            *n2 = (int)(a + b);
            return FQ_OK;
        }
    }
}

long kron_fwd_work(int rows, int n) { return (long)rows * n; }
long kron_bwd_work(int rows, int n) { return 2L * rows * n; }

/* [rows, n1, n2] → [n1, rows, n2] */
static void perm_to_mid(real *dst, const real *src, int rows, int n1, int n2)
{
    for (long r = 0; r < rows; r++)
        for (long i = 0; i < n1; i++)
            memcpy(dst + (i * rows + r) * n2, src + (r * n1 + i) * n2, sizeof(real) * n2);
}

/* [n1, rows, n2] → [rows, n1, n2] */
static void perm_from_mid(real *dst, const real *src, int rows, int n1, int n2)
{
    for (long r = 0; r < rows; r++)
        for (long i = 0; i < n1; i++)
            memcpy(dst + (r * n1 + i) * n2, src + (i * rows + r) * n2, sizeof(real) * n2);
}

static int check_kron(const char *where, const void *a, const void *b, const void *L,
                      const void *R, const void *work, int rows, int n1, int n2)
{
    if (!a || !b || !L || !R || !work)
        return fq_error("core/kron.c:%s: NULL buffer (expected output, input, both factors "
                        "and work)", where);
    if (rows <= 0 || n1 <= 0 || n2 <= 0)
        return fq_error("core/kron.c:%s: shape rows %d, factors %d x %d (expected positive "
                        "sizes)", where, rows, n1, n2);
    if ((long)rows * n1 * n2 > INT_MAX)
        return fq_error("core/kron.c:%s: %d rows of %d values is too many for one call "
                        "(expected rows·n < 2^31)", where, rows, n1 * n2);
    return FQ_OK;
}

/* y[r] = Lᵀ X̃[r] for all rows (L: [n1, n1]); work: rows·n. y must not alias x. */
static void left_fwd(real *y, const real *x, int rows, int n1, int n2, const real *L,
                     real *work)
{
    const int cols = rows * n2;
    perm_to_mid(work, x, rows, n1, n2);
    real_gemm(1, 0, n1, cols, n1, 1, L, n1, work, cols, 0, y, cols);
    memcpy(work, y, sizeof(real) * (size_t)rows * n1 * n2);
    perm_from_mid(y, work, rows, n1, n2);
}

/* For y[r] = Lᵀ X̃[r]: g_x = L·G (may be NULL), g_L += Σ X̃·Gᵀ (may be NULL);
 * work: 2·rows·n. */
static void left_bwd(real *g_x, real *g_L, const real *g_y, const real *x, int rows, int n1,
                     int n2, const real *L, real *work)
{
    const int cols = rows * n2;
    const long n = (long)rows * n1 * n2;
    real *xp = work, *gp = work + n;
    perm_to_mid(gp, g_y, rows, n1, n2);
    if (g_L) {
        perm_to_mid(xp, x, rows, n1, n2);
        real_gemm(0, 1, n1, n1, cols, 1, xp, cols, gp, cols, 1, g_L, n1);
    }
    if (g_x) {
        real_gemm(0, 0, n1, cols, n1, 1, L, n1, gp, cols, 0, xp, cols);
        perm_from_mid(g_x, xp, rows, n1, n2);
    }
}

int kron_fwd(real *y, const real *x, int rows, int n1, int n2, const real *L, const real *R,
             real *work)
{
    if (check_kron("kron_fwd", y, x, L, R, work, rows, n1, n2))
        return FQ_ERR;
    if (y == x)
        return fq_error("core/kron.c:kron_fwd: output aliases input (expected separate "
                        "buffers)");
    /* Z = X̃ R over all rows at once, into y; then Ỹ = Lᵀ Z. */
    real_gemm(0, 0, rows * n1, n2, n2, 1, x, n2, R, n2, 0, work, n2);
    perm_to_mid(y, work, rows, n1, n2);
    real_gemm(1, 0, n1, rows * n2, n1, 1, L, n1, y, rows * n2, 0, work, rows * n2);
    perm_from_mid(y, work, rows, n1, n2);
    return FQ_OK;
}

int kron_bwd(real *g_x, real *g_L, real *g_R, const real *g_y, const real *x, int rows,
             int n1, int n2, const real *L, const real *R, real *work)
{
    if (check_kron("kron_bwd", g_y, x, L, R, work, rows, n1, n2))
        return FQ_ERR;
    const int cols = rows * n2, m = rows * n1;
    const long n = (long)rows * n1 * n2;
    real *w0 = work, *w1 = work + n;
    /* Z = X̃R is recomputed (cheaper than storing it per op); g_L += Σ Z·G_Ỹᵀ. */
    if (g_L) {
        real_gemm(0, 0, m, n2, n2, 1, x, n2, R, n2, 0, w0, n2);
        perm_to_mid(w1, w0, rows, n1, n2);
    }
    perm_to_mid(w0, g_y, rows, n1, n2);
    if (g_L)
        real_gemm(0, 1, n1, n1, cols, 1, w1, cols, w0, cols, 1, g_L, n1);
    if (!g_x && !g_R)
        return FQ_OK;
    /* G_Z = L·G_Ỹ; then g_x = G_Z Rᵀ and g_R += X̃ᵀ G_Z over all rows. */
    real_gemm(0, 0, n1, cols, n1, 1, L, n1, w0, cols, 0, w1, cols);
    perm_from_mid(w0, w1, rows, n1, n2);
    if (g_x)
        real_gemm(0, 1, m, n2, n2, 1, w0, n2, R, n2, 0, g_x, n2);
    if (g_R)
        real_gemm(1, 0, n2, n2, m, 1, x, n2, w0, n2, 1, g_R, n2);
    return FQ_OK;
}

int kron_weight_fwd(real *w_out, const real *w, int out_rows, int n1, int n2,
                    const real *L_invT, const real *R_invT, real *work)
{
    if (kron_fwd(w_out, w, out_rows, n1, n2, L_invT, R_invT, work))
        return fq_error_wrap("core/kron.c:kron_weight_fwd");
    return FQ_OK;
}

int kron_weight_bwd(real *g_w, real *g_L_invT, real *g_R_invT, const real *g_w_out,
                    const real *w, int out_rows, int n1, int n2, const real *L_invT,
                    const real *R_invT, real *work)
{
    if (kron_bwd(g_w, g_L_invT, g_R_invT, g_w_out, w, out_rows, n1, n2, L_invT, R_invT, work))
        return fq_error_wrap("core/kron.c:kron_weight_bwd");
    return FQ_OK;
}

static int check_plain(const char *where, const void *a, const void *b, const void *c,
                       int rows, int n)
{
    if (!a || !b || !c)
        return fq_error("core/kron.c:%s: NULL buffer (expected all of output, input and "
                        "parameter)", where);
    if (rows <= 0 || n <= 0)
        return fq_error("core/kron.c:%s: shape [%d, %d] (expected positive sizes)", where,
                        rows, n);
    if ((long)rows * n > INT_MAX)
        return fq_error("core/kron.c:%s: %d rows of %d values is too many for one call "
                        "(expected rows·n < 2^31)", where, rows, n);
    return FQ_OK;
}

int chscale_act_fwd(real *y, const real *x, const real *c, int rows, int n)
{
    if (check_plain("chscale_act_fwd", y, x, c, rows, n))
        return FQ_ERR;
    for (long r = 0; r < rows; r++)
        for (long j = 0; j < n; j++)
            y[r * n + j] = x[r * n + j] * c[j];
    return FQ_OK;
}

int chscale_act_bwd(real *g_x, real *g_c, const real *g_y, const real *x, const real *c,
                    int rows, int n)
{
    if (check_plain("chscale_act_bwd", g_y, x, c, rows, n))
        return FQ_ERR;
    for (long r = 0; r < rows; r++)
        for (long j = 0; j < n; j++) {
            real g = g_y[r * n + j];
            if (g_x)
                g_x[r * n + j] = g * c[j];
            if (g_c)
                g_c[j] += g * x[r * n + j];
        }
    return FQ_OK;
}

int chscale_weight_fwd(real *w1, const real *w, const real *c, int rows, int n)
{
    if (check_plain("chscale_weight_fwd", w1, w, c, rows, n))
        return FQ_ERR;
    for (int j = 0; j < n; j++)
        if (c[j] == 0 || !isfinite(c[j]))
            return fq_error("core/kron.c:chscale_weight_fwd: channel scale %d is %g "
                            "(expected finite and non-zero)", j, (double)c[j]);
    for (long r = 0; r < rows; r++)
        for (long j = 0; j < n; j++)
            w1[r * n + j] = w[r * n + j] / c[j];
    return FQ_OK;
}

int chscale_weight_bwd(real *g_w, real *g_c, const real *g_w1, const real *w, const real *c,
                       int rows, int n)
{
    if (check_plain("chscale_weight_bwd", g_w1, w, c, rows, n))
        return FQ_ERR;
    for (long r = 0; r < rows; r++)
        for (long j = 0; j < n; j++) {
            real g = g_w1[r * n + j];
            if (g_w)
                g_w[r * n + j] = g / c[j];
            if (g_c)
                g_c[j] -= g * w[r * n + j] / (c[j] * c[j]);
        }
    return FQ_OK;
}

int vec_transform_fwd(real *y, const real *x, int nvec, int k, const real *M)
{
    if (check_plain("vec_transform_fwd", y, x, M, nvec, k))
        return FQ_ERR;
    if (y == x)
        return fq_error("core/kron.c:vec_transform_fwd: output aliases input (expected "
                        "separate buffers)");
    real_gemm(0, 0, nvec, k, k, 1, x, k, M, k, 0, y, k);
    return FQ_OK;
}

int vec_transform_bwd(real *g_x, real *g_M, const real *g_y, const real *x, int nvec, int k,
                      const real *M)
{
    if (check_plain("vec_transform_bwd", g_y, x, M, nvec, k))
        return FQ_ERR;
    if (g_x)
        real_gemm(0, 1, nvec, k, k, 1, g_y, k, M, k, 0, g_x, k);
    if (g_M)
        real_gemm(1, 0, k, k, nvec, 1, x, k, g_y, k, 1, g_M, k);
    return FQ_OK;
}

int head_transform_fwd(real *o1, const real *o, int tokens, int h, int dh, const real *Mo,
                       real *work)
{
    if (check_kron("head_transform_fwd", o1, o, Mo, Mo, work, tokens, h, dh))
        return FQ_ERR;
    if (o1 == o)
        return fq_error("core/kron.c:head_transform_fwd: output aliases input (expected "
                        "separate buffers)");
    left_fwd(o1, o, tokens, h, dh, Mo, work);
    return FQ_OK;
}

int head_transform_bwd(real *g_o, real *g_Mo, const real *g_o1, const real *o, int tokens,
                       int h, int dh, const real *Mo, real *work)
{
    if (check_kron("head_transform_bwd", g_o1, o, Mo, Mo, work, tokens, h, dh))
        return FQ_ERR;
    left_bwd(g_o, g_Mo, g_o1, o, tokens, h, dh, Mo, work);
    return FQ_OK;
}
