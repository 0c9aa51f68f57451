/* hadamard.c — Sylvester and Paley Hadamard matrices, the K·2^m product and its fast
 * application (hadamard.h). */
#include "hadamard.h"

#include <stdlib.h>
#include <string.h>

#include "cayley.h"
#include "error.h"
#include "kron.h"
#include "rng.h"

/* Largest dense Paley factor used. Beyond it the K part would dominate the cost of the
 * online transform (11008 = 5504·2 is a true Paley I Hadamard matrix, 5503 being a prime
 * ≡ 3 mod 4, but applying a dense 5504×5504 factor costs 60 MFLOP per token against
 * 1.9 MFLOP for 172 ⊗ H_64), so the random-orthogonal fallback with a small K wins. */
#define HADAMARD_MAX_DENSE_K 256

static int is_prime(int q)
{
    if (q < 2)
        return 0;
    for (int d = 2; (long)d * d <= q; d++)
        if (q % d == 0)
            return 0;
    return 1;
}

/* 1 for Paley I, 2 for Paley II, 0 when neither builds order k (k ≥ 4). */
static int paley_kind(int k)
{
    if (k % 4 != 0)
        return 0;
    if (is_prime(k - 1) && (k - 1) % 4 == 3)
        return 1;
    if (is_prime(k / 2 - 1) && (k / 2 - 1) % 4 == 1)
        return 2;
    return 0;
}

static int constructible(int k) { return k == 1 || k == 2 || paley_kind(k) != 0; }

/* Quadratic character of a mod the prime q: 0, 1 or -1. */
static int legendre(long a, int q)
{
    a %= q;
    if (a < 0)
        a += q;
    if (a == 0)
        return 0;
    /* Euler's criterion by square-and-multiply. */
    long r = 1, b = a, e = (q - 1) / 2;
    while (e) {
        if (e & 1)
            r = r * b % q;
        b = b * b % q;
        e >>= 1;
    }
    return r == 1 ? 1 : -1;
}

/* ±1 entries of a Paley matrix of order k into h (int, k·k). */
static void paley_fill(int *h, int k, int kind)
{
    if (kind == 1) {
        /* H = I + [[0, 1ᵀ], [−1, Q]], Q[i][j] = χ(j − i), skew since q ≡ 3 (mod 4). */
        int q = k - 1;
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) {
                int v;
                if (i == 0)
                    v = 1;
                else if (j == 0)
                    v = -1;
                else
                    v = legendre(j - i, q) + (i == j ? 1 : 0);
                h[(long)i * k + j] = v;
            }
        return;
    }
    /* Paley II: symmetric conference matrix C = [[0, 1ᵀ], [1, Q]] of order q + 1; every
     * 0 becomes [[1, −1], [−1, −1]] and every ±1 becomes ±[[1, 1], [1, −1]]. */
    int c = k / 2, q = c - 1;
    for (int i = 0; i < c; i++)
        for (int j = 0; j < c; j++) {
            int v = (i == 0 && j == 0) ? 0 : (i == 0 || j == 0) ? 1 : legendre(j - i, q);
            int blk[2][2];
            if (v == 0) {
                blk[0][0] = 1, blk[0][1] = -1, blk[1][0] = -1, blk[1][1] = -1;
            } else {
                blk[0][0] = v, blk[0][1] = v, blk[1][0] = v, blk[1][1] = -v;
            }
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 2; b++)
                    h[(long)(2 * i + a) * k + 2 * j + b] = blk[a][b];
        }
}

int hadamard_split(int n, int *k, int *pow2, int *is_random)
{
    if (!k || !pow2 || !is_random)
        return fq_error("core/hadamard.c:hadamard_split: NULL output (expected k, pow2 and "
                        "is_random)");
    if (n <= 0)
        return fq_error("core/hadamard.c:hadamard_split: size %d (expected positive)", n);
    int v2 = 0;
    while ((n >> v2) % 2 == 0)
        v2++;
    *is_random = 0;
    for (int m = v2; m >= 0; m--) {
        int kk = n >> m;
        if (kk > HADAMARD_MAX_DENSE_K)
            break;
        if (constructible(kk)) {
            *k = kk;
            *pow2 = 1 << m;
            return FQ_OK;
        }
    }
    /* Fallback: random orthogonal on the odd part times up to 4 (keeps 172 whole). */
    int m = v2 >= 2 ? v2 - 2 : 0;
    *k = n >> m;
    *pow2 = 1 << m;
    *is_random = 1;
    return FQ_OK;
}

int hadamard_k_matrix(real *out, int k, uint64_t seed, int *is_random)
{
    if (!out || !is_random)
        return fq_error("core/hadamard.c:hadamard_k_matrix: NULL buffer (expected out and "
                        "is_random)");
    if (k <= 0)
        return fq_error("core/hadamard.c:hadamard_k_matrix: order %d (expected positive)", k);
    *is_random = 0;
    real norm = 1 / sqrt((real)k);
    if (k == 1 || k == 2) {
        out[0] = norm;
        if (k == 2) {
            out[1] = norm;
            out[2] = norm;
            out[3] = -norm;
        }
        return FQ_OK;
    }
    int kind = paley_kind(k);
    if (kind == 0) {
        rng_state rng;
        rng_seed(&rng, seed);
        *is_random = 1;
        if (factor_init_haar(out, k, &rng))
            return fq_error_wrap("core/hadamard.c:hadamard_k_matrix");
        return FQ_OK;
    }
    int *h = fq_malloc(sizeof(int) * (size_t)k * k, "Paley matrix");
    if (!h)
        return fq_error_wrap("core/hadamard.c:hadamard_k_matrix");
    paley_fill(h, k, kind);
    for (long i = 0; i < (long)k * k; i++)
        out[i] = (real)h[i] * norm;
    free(h);
    return FQ_OK;
}

int hadamard_matrix(int n, real *out, uint64_t seed, int *is_random)
{
    if (!out || !is_random)
        return fq_error("core/hadamard.c:hadamard_matrix: NULL buffer (expected out and "
                        "is_random)");
    int k, p;
    if (hadamard_split(n, &k, &p, is_random))
        return FQ_ERR;
    real *hk = fq_malloc(sizeof(real) * (size_t)k * k, "Hadamard factor");
    if (!hk)
        return fq_error_wrap("core/hadamard.c:hadamard_matrix");
    if (hadamard_k_matrix(hk, k, seed, is_random)) {
        free(hk);
        return fq_error_wrap("core/hadamard.c:hadamard_matrix(%d)", n);
    }
    /* (H_K ⊗ S_p)[(i,a),(j,b)] = H_K[i][j] · S_p[a][b], S_p[a][b] = (−1)^popcount(a&b)/√p. */
    real sp = 1 / sqrt((real)p);
    for (long i = 0; i < k; i++)
        for (long a = 0; a < p; a++)
            for (long j = 0; j < k; j++)
                for (long b = 0; b < p; b++) {
                    real s = (__builtin_popcountl((unsigned long)(a & b)) & 1) ? -sp : sp;
                    out[(i * p + a) * (long)n + j * p + b] = hk[i * k + j] * s;
                }
    free(hk);
    return FQ_OK;
}

long hadamard_apply_work(int rows, int n) { return 3L * rows * n; }

/* In-place normalised fast Walsh-Hadamard transform of segments of length p. */
static void fwht_segments(real *x, long segments, int p)
{
    real sp = 1 / sqrt((real)p);
    for (long s = 0; s < segments; s++) {
        real *v = x + s * p;
        for (int h = 1; h < p; h <<= 1)
            for (int i = 0; i < p; i += 2 * h)
                for (int j = i; j < i + h; j++) {
                    real a = v[j], b = v[j + h];
                    v[j] = a + b;
                    v[j + h] = a - b;
                }
        for (int j = 0; j < p; j++)
            v[j] *= sp;
    }
}

int hadamard_apply_rows(real *x, int rows, int n, int k, const real *hk, real *work)
{
    if (!x || !hk || !work)
        return fq_error("core/hadamard.c:hadamard_apply_rows: NULL buffer (expected x, hk "
                        "and work)");
    if (rows <= 0 || n <= 0 || k <= 0 || n % k != 0)
        return fq_error("core/hadamard.c:hadamard_apply_rows: %d rows of %d with factor %d "
                        "(expected positive sizes, n a multiple of k)", rows, n, k);
    int p = n / k;
    if (p & (p - 1))
        return fq_error("core/hadamard.c:hadamard_apply_rows: n / k = %d (expected a power "
                        "of two)", p);
    /* X̃ [k, p] per row: Ỹ = H_Kᵀ X̃ S_p; S_p is symmetric, so its side is the FWHT. */
    fwht_segments(x, (long)rows * k, p);
    if (k == 1)
        return FQ_OK;
    long total = (long)rows * n;
    if (head_transform_fwd(work, x, rows, k, p, hk, work + total))
        return fq_error_wrap("core/hadamard.c:hadamard_apply_rows");
    memcpy(x, work, sizeof(real) * total);
    return FQ_OK;
}
