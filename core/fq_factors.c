/* fq_factors.c — the parameter side of a FlatQuant layer step, shared by the CPU and the
 * GPU paths: materialise every factor matrix M and M^{-T} from the flat parameters p
 * (SVD form U diag(λ) Vᵀ with Cayley U, V; or the direct form with an explicit inverse),
 * and fold the gradients that the tensor side accumulated into those matrices back into g
 * (Θ_U, Θ_V, λ, or M itself).
 *
 * The idea: the factors are tiny (k ≤ a few hundred; for a 70B layer a few hundred
 * thousand numbers in all), so this part stays on the host in `real` for both backends;
 * only the tensor work differs. All matrices of one kind sit in one contiguous slab
 * (M of every factor, then M^{-T} of every factor, then their gradients), so a GPU path
 * moves them with one copy each way per step. Trade-off: one allocation of 6·Σk² reals
 * kept for the layer's lifetime.
 */
#include "fq_layer.h"

#include <stdlib.h>
#include <string.h>

#include "cayley.h"
#include "error.h"
#include "parallel.h"
#include "real.h"

#define WHERE "core/fq_factors.c"

static long lmax(long a, long b) { return a > b ? a : b; }

void fq_factor_mats_free(fq_factor_mats *fm)
{
    if (!fm)
        return;
    free(fm->slab);
    free(fm->M);
    free(fm->fwork);
    free(fm->dwork);
    free(fm->order);
    memset(fm, 0, sizeof *fm);
}

int fq_factor_mats_create(fq_factor_mats *fm, const fq_params *P)
{
    if (!fm || !P || !P->fac || P->nfactors <= 0)
        return fq_error(WHERE ":fq_factor_mats_create: NULL or uninitialised params "
                        "(expected fq_params_init first)");
    memset(fm, 0, sizeof *fm);
    const int nf = P->nfactors;
    size_t total = 0;
    long kmax = 1;
    for (int i = 0; i < nf; i++) {
        total += (size_t)P->fac[i].k * P->fac[i].k;
        kmax = lmax(kmax, P->fac[i].k);
    }
    fm->nfactors = nf;
    fm->total = total;
    fm->nthreads = fq_env_threads("FLATQ_FACTOR_THREADS", 64, 8, (size_t)nf);
    long kk = kmax * kmax;
    fm->fwork_n = (size_t)lmax(svd_factor_bwd_work((int)kmax),
                               lmax(svd_factor_fwd_work((int)kmax), kk));
    fm->dwork_n = (size_t)(2 * kk);
    fm->slab = fq_calloc(6 * total, sizeof(real), "factor matrices");
    fm->M = fq_calloc(6 * (size_t)nf, sizeof(real *), "factor table");
    fm->fwork = fq_calloc((size_t)fm->nthreads * fm->fwork_n, sizeof(real), "factor work");
    fm->dwork = fq_calloc((size_t)fm->nthreads * fm->dwork_n, sizeof(double), "inverse work");
    fm->order = fq_calloc((size_t)nf, sizeof(int), "factor order");
    if (!fm->slab || !fm->M || !fm->fwork || !fm->dwork || !fm->order) {
        fq_factor_mats_free(fm);
        return fq_error_wrap(WHERE ":fq_factor_mats_create");
    }
    fm->Mi = fm->M + nf;
    fm->gM = fm->M + 2 * nf;
    fm->gMi = fm->M + 3 * nf;
    fm->U = fm->M + 4 * nf;
    fm->V = fm->M + 5 * nf;
    size_t off = 0;
    for (int i = 0; i < nf; i++) {
        for (int j = 0; j < 6; j++)
            fm->M[j * nf + i] = fm->slab + (size_t)j * total + off;
        off += (size_t)P->fac[i].k * P->fac[i].k;
    }
    for (int i = 0; i < nf; i++) { /* insertion sort by k, descending, stable */
        int j = i;
        for (; j > 0 && P->fac[fm->order[j - 1]].k < P->fac[i].k; j--)
            fm->order[j] = fm->order[j - 1];
        fm->order[j] = i;
    }
    return FQ_OK;
}

static int check_mats(const fq_factor_mats *fm, const fq_params *P, const char *fn)
{
    if (!fm || !P || !P->p || !fm->slab)
        return fq_error(WHERE ":%s: NULL argument (expected factor matrices and params)", fn);
    if (fm->nfactors != P->nfactors)
        return fq_error(WHERE ":%s: matrices for %d factors, params have %d (expected the "
                        "matrices made for these params)", fn, fm->nfactors, P->nfactors);
    return FQ_OK;
}

typedef struct {
    fq_factor_mats *fm;
    fq_params *P;
} factor_job;

static int factor_fwd_one(void *ctx, size_t idx, int t)
{
    factor_job *job = ctx;
    fq_factor_mats *fm = job->fm;
    const fq_params *P = job->P;
    const int i = fm->order[idx];
    const fq_factor *F = &P->fac[i];
    const int k = F->k;
    real *fwork = fm->fwork + (size_t)t * fm->fwork_n;
    double *dwork = fm->dwork + (size_t)t * fm->dwork_n;
    if (P->direct_inv) {
        memcpy(fm->M[i], P->p + F->m, sizeof(real) * (size_t)k * k);
        if (direct_inv_fwd(fm->Mi[i], fm->M[i], k, dwork))
            return fq_error_wrap(WHERE ":fq_factors_fwd: factor %s", F->name);
    } else if (svd_factor_fwd(fm->M[i], fm->Mi[i], fm->U[i], fm->V[i], P->p + F->theta_u,
                              P->p + F->theta_v, P->p + F->lambda, k, fwork)) {
        return fq_error_wrap(WHERE ":fq_factors_fwd: factor %s", F->name);
    }
    return FQ_OK;
}

static int factor_bwd_one(void *ctx, size_t idx, int t)
{
    factor_job *job = ctx;
    fq_factor_mats *fm = job->fm;
    fq_params *P = job->P;
    const int i = fm->order[idx];
    const fq_factor *F = &P->fac[i];
    const int k = F->k;
    real *fwork = fm->fwork + (size_t)t * fm->fwork_n;
    if (P->direct_inv) {
        if (direct_inv_bwd(fm->gM[i], fm->gMi[i], fm->Mi[i], k, fwork))
            return fq_error_wrap(WHERE ":fq_factors_bwd: factor %s", F->name);
        real *dst = P->g + F->m;
        for (size_t j = 0; j < (size_t)k * k; j++)
            dst[j] += fm->gM[i][j];
    } else if (svd_factor_bwd(P->g + F->theta_u, P->g + F->theta_v, P->g + F->lambda,
                              fm->gM[i], fm->gMi[i], fm->U[i], fm->V[i], P->p + F->lambda, k,
                              fwork)) {
        return fq_error_wrap(WHERE ":fq_factors_bwd: factor %s", F->name);
    }
    return FQ_OK;
}

/* Every factor on its own thread with single-threaded BLAS (the factors are independent
 * and each writes only its own matrices and parameter ranges). BLAS goes back to its
 * thread count afterwards. */
static int factors_run(fq_factor_mats *fm, fq_params *P, fq_item_fn fn)
{
    factor_job job = {fm, P};
    const int blas = fm->nthreads > 1 ? real_blas_threads() : 1;
    if (blas > 1)
        real_blas_set_threads(1);
    int rc = fq_parallel_for((size_t)P->nfactors, fm->nthreads, fn, &job);
    if (blas > 1)
        real_blas_set_threads(blas);
    return rc;
}

int fq_factors_fwd(fq_factor_mats *fm, const fq_params *P)
{
    if (check_mats(fm, P, "fq_factors_fwd"))
        return FQ_ERR;
    return factors_run(fm, (fq_params *)P, factor_fwd_one);
}

void fq_factors_zero_grad(fq_factor_mats *fm)
{
    if (fm && fm->slab)
        memset(fm->gM[0], 0, sizeof(real) * 2 * fm->total);
}

int fq_factors_bwd(fq_factor_mats *fm, fq_params *P)
{
    if (check_mats(fm, P, "fq_factors_bwd") || !P->g)
        return P && !P->g ? fq_error(WHERE ":fq_factors_bwd: params without gradients") : FQ_ERR;
    return factors_run(fm, P, factor_bwd_one);
}

void fq_weight_side_of(const fq_params *P, int lin, fq_weight_side *ws)
{
    memset(ws, 0, sizeof *ws);
    ws->T = 1;
    switch (lin) {
    case QL_Q:
    case QL_K:
    case QL_V:
        ws->lb = FQ_F_LA;
        ws->rb = FQ_F_RA;
        ws->n1 = P->na1;
        ws->n2 = P->na2;
        ws->c_off = P->c_a;
        return;
    case QL_GATE:
    case QL_UP:
        ws->lb = FQ_F_LUG;
        ws->rb = FQ_F_RUG;
        ws->n1 = P->na1;
        ws->n2 = P->na2;
        ws->c_off = P->c_ug;
        return;
    case QL_O:
        /* W̃o' = M_o^{-1} W̃o M_v^{-T} on each row's [h, dh] view, M_o block-diagonal */
        ws->lb = FQ_F_MO(0);
        ws->ls = 3;
        ws->rb = FQ_F_MV;
        ws->rs = 0;
        ws->T = P->T;
        ws->n1 = P->hb;
        ws->n2 = P->cfg.head_dim;
        ws->c_off = FQ_NO_SCALE;
        return;
    default:
        ws->lb = FQ_F_LD(0);
        ws->ls = 3;
        ws->rb = FQ_F_RD(0);
        ws->rs = 3;
        ws->T = P->T;
        ws->n1 = P->nd1;
        ws->n2 = P->nd2;
        ws->c_off = P->c_d;
        return;
    }
}

const real *fq_layer_weight(const llama_layer *l, int lin)
{
    switch (lin) {
    case QL_Q: return l->wq;
    case QL_K: return l->wk;
    case QL_V: return l->wv;
    case QL_O: return l->wo;
    case QL_GATE: return l->wgate;
    case QL_UP: return l->wup;
    default: return l->wdown;
    }
}
