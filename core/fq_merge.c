/* fq_merge.c — FlatQuant reparameterisation in float64 (fq_merge.h).
 *
 * Factors: Cayley U = (I − A/2)^{-1}(I + A/2) by Gaussian elimination with partial
 * pivoting, M = U diag(λ) Vᵀ and M^{-T} = U diag(1/λ) Vᵀ (direct form: an explicit
 * inverse). Weights: W̃' = L^{-1} W̃ R^{-T} for every row at once — one GEMM over
 * [rows·n1, n2] for the R side, a permutation to [n1, rows·n2] and one GEMM for the L side
 * (per TP block after gathering its columns) — so a 70B-sized weight is a few large
 * double GEMMs rather than one tiny product per row. Memory: three double copies of the
 * largest weight.
 */
#include "fq_merge.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cayley.h"
#include "error.h"

#define WHERE "core/fq_merge.c"

static double sigmoid_d(real x) { return 1.0 / (1.0 + exp(-(double)x)); }

static void gemm_d(int ta, int tb, int m, int n, int k, const double *a, int lda,
                   const double *b, int ldb, double *c, int ldc)
{
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                m, n, k, 1.0, a, lda, b, ldb, 0.0, c, ldc);
}

/* A X = B for k×k A (destroyed) and k×k B (overwritten by X). */
static int solve_d(double *A, double *B, int k)
{
    if (gauss_jordan_f64(A, B, k, 0) != 0)
        return fq_error(WHERE ": singular or non-finite %dx%d system (expected finite, "
                        "invertible factors)", k, k);
    return FQ_OK;
}

/* U = Cayley(tril₋(Θ) − tril₋(Θ)ᵀ); work: k·k. */
static int cayley_d(double *U, const real *theta, int k, double *work)
{
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) {
            double a = i > j ? (double)theta[(size_t)i * k + j]
                             : (i < j ? -(double)theta[(size_t)j * k + i] : 0);
            work[(size_t)i * k + j] = (i == j) - a / 2;
            U[(size_t)i * k + j] = (i == j) + a / 2;
        }
    return solve_d(work, U, k);
}

/* M and M^{-T} of factor i in double; work: 4·k·k. */
static int factor_d(double *M, double *Mi, const fq_params *P, int i, double *work)
{
    const fq_factor *F = &P->fac[i];
    int k = F->k;
    size_t kk = (size_t)k * k;
    if (P->direct_inv) {
        for (size_t j = 0; j < kk; j++) {
            M[j] = (double)P->p[F->m + j];
            work[j] = M[j];
            work[kk + j] = 0;
        }
        for (int j = 0; j < k; j++)
            work[kk + (size_t)j * k + j] = 1;
        if (solve_d(work, work + kk, k)) /* work + kk = M^{-1} */
            return FQ_ERR;
        for (int r = 0; r < k; r++)
            for (int c = 0; c < k; c++)
                Mi[(size_t)r * k + c] = work[kk + (size_t)c * k + r];
        return FQ_OK;
    }
    double *U = work, *V = work + kk, *T = work + 2 * kk, *tmp = work + 3 * kk;
    if (cayley_d(U, P->p + F->theta_u, k, tmp) || cayley_d(V, P->p + F->theta_v, k, tmp))
        return FQ_ERR;
    const real *lam = P->p + F->lambda;
    for (int pass = 0; pass < 2; pass++) {
        for (int r = 0; r < k; r++)
            for (int c = 0; c < k; c++) {
                double l = (double)lam[c];
                if (l == 0 || !isfinite(l))
                    return fq_error(WHERE ": factor %s has lambda[%d] = %g (expected finite, "
                                    "non-zero)", F->name, c, l);
                T[(size_t)r * k + c] = U[(size_t)r * k + c] * (pass ? 1 / l : l);
            }
        gemm_d(0, 1, k, k, k, T, k, V, k, pass ? Mi : M, k);
    }
    return FQ_OK;
}

/* Rows of width T·n1·n2 (block t at column t·n1·n2): y_block = Lᵀ X̃ R with factors
 * L[t·n1²], R[t·n2²] (R shared when r_shared). x, y may not alias; work: 2·rows·nb. */
static void kron_rows_d(double *y, const double *x, long rows, int T, int n1, int n2,
                        const double *L, const double *R, int r_shared, double *work)
{
    const long nb = (long)n1 * n2, width = nb * T;
    double *a = work, *b = work + rows * nb;
    for (int t = 0; t < T; t++) {
        for (long r = 0; r < rows; r++)
            memcpy(a + r * nb, x + r * width + t * nb, sizeof(double) * (size_t)nb);
        const double *Rt = R + (r_shared ? 0 : (size_t)t * n2 * n2);
        const double *Lt = L + (size_t)t * n1 * n1;
        gemm_d(0, 0, (int)(rows * n1), n2, n2, a, n2, Rt, n2, b, n2); /* Z = X̃ R */
        for (long r = 0; r < rows; r++)                                /* → [n1, rows, n2] */
            for (int i = 0; i < n1; i++)
                memcpy(a + ((size_t)i * rows + r) * n2, b + ((size_t)r * n1 + i) * n2,
                       sizeof(double) * (size_t)n2);
        gemm_d(1, 0, n1, (int)(rows * n2), n1, Lt, n1, a, (int)(rows * n2), b,
               (int)(rows * n2));
        for (long r = 0; r < rows; r++)
            for (int i = 0; i < n1; i++)
                memcpy(y + r * width + t * nb + (size_t)i * n2, b + ((size_t)i * rows + r) * n2,
                       sizeof(double) * (size_t)n2);
    }
}

/* Wc = min(max(w, min_j w·σ(b)), max_j w·σ(a)) per row (§2.3). */
static void lwc_clamp_d(double *w, long rows, int cols, const real *a, const real *b)
{
    for (long r = 0; r < rows; r++) {
        double *wr = w + r * cols, mx = wr[0], mn = wr[0];
        for (int j = 1; j < cols; j++) {
            mx = fmax(mx, wr[j]);
            mn = fmin(mn, wr[j]);
        }
        double hi = mx * sigmoid_d(a[r]), lo = mn * sigmoid_d(b[r]);
        for (int j = 0; j < cols; j++) {
            double p = wr[j] < lo ? lo : wr[j];
            wr[j] = p > hi ? hi : p;
        }
    }
}

static real *to_real(const double *src, size_t n, const char *what)
{
    real *p = fq_malloc(sizeof(real) * (n ? n : 1), what);
    if (p)
        for (size_t i = 0; i < n; i++)
            p[i] = (real)src[i];
    return p;
}

void fq_merged_free(fq_merged *m)
{
    if (!m)
        return;
    real *ptrs[] = {m->attn_norm, m->mlp_norm, m->La, m->Ra, m->Lug, m->Rug, m->Ld,
                    m->Rd, m->Mo, m->Mk, m->Mk_inv_t, m->Mv};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
        free(ptrs[i]);
    for (int i = 0; i < QL_NLINEAR; i++)
        free(m->w[i]);
    memset(m, 0, sizeof *m);
}

static const real *weight_of(const llama_layer *l, int lin)
{
    const real *w[QL_NLINEAR] = {l->wq, l->wk, l->wv, l->wo, l->wgate, l->wup, l->wdown};
    return w[lin];
}

int fq_merge(fq_merged *m, const fq_params *P, const llama_layer *l)
{
    return fq_merge_parts(m, P, l, 1);
}

int fq_merge_parts(fq_merged *m, const fq_params *P, const llama_layer *l, int weights)
{
    if (!m || !P || !P->p || !l)
        return fq_error(WHERE ":fq_merge: NULL argument (expected merged, params, layer)");
    memset(m, 0, sizeof *m);
    const llama_config *c = &P->cfg;
    const int d = c->hidden, dh = c->head_dim, g = c->n_kv_heads,
              T = P->T, nf = P->nfactors;
    for (int i = 0; weights && i < QL_NLINEAR; i++)
        if (!weight_of(l, i))
            return fq_error(WHERE ":fq_merge: layer weight %s is NULL", qlinear_names[i]);
    m->T = T;
    /* 1. factors */
    int kmax = 1;
    size_t ktot = 0;
    for (int i = 0; i < nf; i++) {
        kmax = P->fac[i].k > kmax ? P->fac[i].k : kmax;
        ktot += (size_t)P->fac[i].k * P->fac[i].k;
    }
    long wmax = 0;
    for (int i = 0; i < QL_NLINEAR; i++) {
        long n = (long)fq_linear_out(c, i) * fq_linear_in(c, i);
        wmax = n > wmax ? n : wmax;
    }
    if (!weights)
        wmax = 1; /* the weight buffers are not used */
    double *fm = fq_malloc(sizeof(double) * 2 * ktot, "merged factors");
    double *fwork = fq_malloc(sizeof(double) * 4 * (size_t)kmax * kmax, "factor work");
    double *w0 = fq_malloc(sizeof(double) * (size_t)wmax, "merged weight");
    double *w1 = fq_malloc(sizeof(double) * (size_t)wmax, "merged weight");
    double *wk = fq_malloc(sizeof(double) * 2 * (size_t)wmax, "merge work");
    double **M = fq_calloc((size_t)nf * 2, sizeof(double *), "factor table");
    size_t nd1 = (size_t)P->nd1 * P->nd1, nd2 = (size_t)P->nd2 * P->nd2,
           hb2 = (size_t)P->hb * P->hb, nblk = (size_t)T * (nd1 + nd2 + hb2);
    double *blk = fq_malloc(sizeof(double) * nblk, "block factors");
    double *Lid = fq_malloc(sizeof(double) * nblk, "block inverse factors");
    int rc = FQ_ERR;
    if (!fm || !fwork || !w0 || !w1 || !wk || !M || !blk || !Lid)
        goto out;
    double **Mi = M + nf;
    size_t off = 0;
    for (int i = 0; i < nf; i++) {
        size_t kk = (size_t)P->fac[i].k * P->fac[i].k;
        M[i] = fm + off;
        Mi[i] = fm + ktot + off;
        off += kk;
        if (factor_d(M[i], Mi[i], P, i, fwork)) {
            fq_error_wrap(WHERE ":fq_merge: factor %s", P->fac[i].name);
            goto out;
        }
    }
    /* factors of the T blocks side by side, as the qlayer stores them */
    for (int t = 0; t < T; t++) {
        memcpy(blk + t * nd1, M[FQ_F_LD(t)], sizeof(double) * nd1);
        memcpy(blk + T * nd1 + t * nd2, M[FQ_F_RD(t)], sizeof(double) * nd2);
        memcpy(blk + T * (nd1 + nd2) + t * hb2, M[FQ_F_MO(t)], sizeof(double) * hb2);
    }
    size_t na1 = (size_t)P->na1 * P->na1, na2 = (size_t)P->na2 * P->na2, kd = (size_t)dh * dh;
    if (!(m->La = to_real(M[FQ_F_LA], na1, "L_a")) || !(m->Ra = to_real(M[FQ_F_RA], na2, "R_a")) ||
        !(m->Lug = to_real(M[FQ_F_LUG], na1, "L_ug")) ||
        !(m->Rug = to_real(M[FQ_F_RUG], na2, "R_ug")) ||
        !(m->Ld = to_real(blk, T * nd1, "L_d")) ||
        !(m->Rd = to_real(blk + T * nd1, T * nd2, "R_d")) ||
        !(m->Mo = to_real(blk + T * (nd1 + nd2), T * hb2, "M_o")) ||
        !(m->Mk = to_real(M[FQ_F_MK], kd, "M_k")) ||
        !(m->Mk_inv_t = to_real(Mi[FQ_F_MK], kd, "M_k^-T")) ||
        !(m->Mv = to_real(M[FQ_F_MV], kd, "M_v")))
        goto out;
    /* 3 (norms). γ ∘ c */
    m->attn_norm = fq_malloc(sizeof(real) * d, "γ1'");
    m->mlp_norm = fq_malloc(sizeof(real) * d, "γ2'");
    if (!m->attn_norm || !m->mlp_norm)
        goto out;
    for (int j = 0; j < d; j++) {
        m->attn_norm[j] = (real)((double)l->attn_norm[j] * (double)P->p[P->c_a + j]);
        m->mlp_norm[j] = (real)((double)l->mlp_norm[j] * (double)P->p[P->c_ug + j]);
    }
    /* 2. weights: ⊘ c, Kronecker of inverse transposes, clip, (Wv) M_v, (Wup) ∘ c_d */
    for (int lin = 0; weights && lin < QL_NLINEAR; lin++) {
        const int out = fq_linear_out(c, lin), in = fq_linear_in(c, lin);
        const real *src = weight_of(l, lin), *cv = NULL;
        const double *L, *R;
        int Tl = 1, n1 = P->na1, n2 = P->na2, r_shared = 1;
        switch (lin) {
        case QL_Q:
        case QL_K:
        case QL_V:
            L = Mi[FQ_F_LA], R = Mi[FQ_F_RA], cv = P->p + P->c_a;
            break;
        case QL_GATE:
        case QL_UP:
            L = Mi[FQ_F_LUG], R = Mi[FQ_F_RUG], cv = P->p + P->c_ug;
            break;
        case QL_O:
            for (int t = 0; t < T; t++)
                memcpy(Lid + t * hb2, Mi[FQ_F_MO(t)], sizeof(double) * hb2);
            L = Lid, R = Mi[FQ_F_MV], Tl = T, n1 = P->hb, n2 = dh;
            break;
        default:
            for (int t = 0; t < T; t++) {
                memcpy(Lid + t * nd1, Mi[FQ_F_LD(t)], sizeof(double) * nd1);
                memcpy(Lid + T * nd1 + t * nd2, Mi[FQ_F_RD(t)], sizeof(double) * nd2);
            }
            L = Lid, R = Lid + T * nd1, Tl = T, n1 = P->nd1, n2 = P->nd2, r_shared = 0;
            cv = P->p + P->c_d;
            break;
        }
        size_t n = (size_t)out * in;
        for (size_t i = 0; i < n; i++)
            w0[i] = (double)src[i] / (cv ? (double)cv[i % (size_t)in] : 1.0);
        kron_rows_d(w1, w0, out, Tl, n1, n2, L, R, r_shared, wk);
        if (P->w_bits != 16)
            lwc_clamp_d(w1, out, in, P->p + P->lwc_a[lin], P->p + P->lwc_b[lin]);
        double *res = w1;
        if (lin == QL_V && !P->separate_vtrans) {
            for (int v = 0; v < g; v++) /* Wv''_ν = M_vᵀ·Wc_ν */
                gemm_d(1, 0, dh, in, dh, M[FQ_F_MV], dh, w1 + (size_t)v * dh * in, in,
                       w0 + (size_t)v * dh * in, in);
            res = w0;
        }
        if (lin == QL_UP)
            for (int r = 0; r < out; r++)
                for (int j = 0; j < in; j++)
                    res[(size_t)r * in + j] *= (double)P->p[P->c_d + r];
        if (!(m->w[lin] = to_real(res, n, "merged weight")))
            goto out;
    }
    /* clip ratios */
    for (int i = 0; i < QL_NLINEAR; i++) {
        m->act_clip[i][0] = (real)sigmoid_d(P->p[P->lac[i]]);
        m->act_clip[i][1] = (real)sigmoid_d(P->p[P->lac[i] + 1]);
    }
    for (int i = 0; i < 2; i++) {
        m->kv_clip[i][0] = (real)sigmoid_d(P->p[P->kvc[i]]);
        m->kv_clip[i][1] = (real)sigmoid_d(P->p[P->kvc[i] + 1]);
    }
    rc = FQ_OK;
out:
    free(fm);
    free(fwork);
    free(w0);
    free(w1);
    free(wk);
    free(M);
    free(blk);
    free(Lid);
    if (rc)
        fq_merged_free(m);
    return rc;
}
