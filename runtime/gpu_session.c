/* gpu_session.c — open/close a rank's GPU model and score windows with it (see
 * gpu_session.h). */
#include "runtime/gpu_session.h"
#include "error.h"
#include "runtime/rt_ops.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#define F "runtime/gpu_session.c"

int gpu_session_rank(void)
{
    int init = 0, rank = 0;
    MPI_Initialized(&init);
    if (init)
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank;
}

/* every rank learns whether all succeeded; the lowest failing rank prints */
static int agree(gpu_session *s, int ok, const char *what)
{
    int tp = 1, rank = 0;
    MPI_Comm_size(s->comm.mpi, &tp);
    MPI_Comm_rank(s->comm.mpi, &rank);
    int mine = ok == FQ_OK ? tp : rank, first = mine;
    if (tp > 1)
        MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, s->comm.mpi);
    if (first == tp)
        return FQ_OK;
    s->print_error = rank == first;
    if (ok == FQ_OK)
        fq_error(F ":gpu_session_open: rank %d stops: rank %d failed while %s", rank, first,
                 what);
    return FQ_ERR;
}

static double timeout_from_env(void)
{
    const char *v = getenv("FLATQ_NCCL_TIMEOUT_S");
    double t = v ? atof(v) : 0;
    return t > 0 ? t : 300;
}

#ifdef FLATQ_HAVE_CUDA
/* an on/off switch of the environment: on unless set to "0" */
static int env_switch(const char *name)
{
    const char *v = getenv(name);
    return !(v && strcmp(v, "0") == 0);
}
#endif

int gpu_session_open(gpu_session *s, MPI_Comm mpi, const char *dir, int max_batch,
                     int max_ctx, int max_tokens, int max_logit_rows)
{
    if (!s || !dir)
        return fq_error(F ":gpu_session_open: NULL session or directory (expected both)");
    memset(s, 0, sizeof *s);
    int init = 0;
    MPI_Initialized(&init);
    if (!init) {
        s->print_error = 1;
        return fq_error(F ":gpu_session_open: MPI is not initialised (expected the command to "
                        "call MPI_Init)");
    }
    int rc = tp_comm_pick_device(&s->comm, mpi, timeout_from_env());
    s->comm.mpi = mpi; /* set on every path: agree() below runs over it */
#ifdef FLATQ_HAVE_CUDA
    if (rc == FQ_OK) {
        rc = fq_cuda_init(&s->ctx, s->comm.device);
        if (rc == FQ_OK) {
            s->have_ctx = 1;
            /* inference kernels as programmatic dependents (kernels/flatq_cuda.h) unless
             * FLATQ_PDL=0 (the benchmark compares both in one run); FLATQ_GRID_BARRIER=0:
             * no kernel waits for its whole grid (for GPUs whose SMs other processes share
             * at once, as under CUDA MPS); FLATQ_ATTN_TC=0: the CUDA-core attention kernel
             * instead of the tensor-core one; FLATQ_GEMM_WGMMA=0: the mma.sync W4A4 GEMM at
             * prefill sizes instead of the wgmma one; FLATQ_TRANSFORM_GEMM=0: the prefill
             * transform on the one-CTA-per-token kernel instead of cuBLAS;
             * FLATQ_TRANSFORM_TF32=0: that transform's GEMMs in fp32 instead of TF32;
             * FLATQ_TRANSFORM_TC=0: the cuBLAS prefill transform where the fused TF32
             * kernel would take the shape */
            s->ctx.pdl = env_switch("FLATQ_PDL");
            s->ctx.grid_barrier = env_switch("FLATQ_GRID_BARRIER");
            s->ctx.attn_tc = env_switch("FLATQ_ATTN_TC");
            s->ctx.gemm_wgmma = env_switch("FLATQ_GEMM_WGMMA");
            s->ctx.transform_gemm = env_switch("FLATQ_TRANSFORM_GEMM");
            s->ctx.transform_tf32 = env_switch("FLATQ_TRANSFORM_TF32");
            s->ctx.transform_tc = env_switch("FLATQ_TRANSFORM_TC");
        }
        else
            fq_error_wrap("rank %d", s->comm.rank);
    }
#endif
    if (agree(s, rc, "starting its GPU") != FQ_OK)
        goto fail;
    rc = tp_comm_init(&s->comm, &s->ctx);
    s->have_comm = rc == FQ_OK;
    if (agree(s, rc, "joining the NCCL communicator") != FQ_OK)
        goto fail;
    rc = gpu_model_load(&s->m, dir, &s->ctx, &s->comm, max_batch, max_ctx, max_tokens,
                        max_logit_rows);
    s->have_model = rc == FQ_OK;
    if (agree(s, rc, "loading the model") != FQ_OK)
        goto fail;
    return FQ_OK;
fail:
    {
        int pe = s->print_error;
        gpu_session_close(s);
        s->print_error = pe;
    }
    return FQ_ERR;
}

void gpu_session_close(gpu_session *s)
{
    if (!s)
        return;
    if (s->have_model)
        gpu_model_free(&s->m);
    if (s->have_comm)
        tp_comm_free(&s->comm);
#ifdef FLATQ_HAVE_CUDA
    if (s->have_ctx)
        fq_cuda_free_ctx(&s->ctx);
#endif
    memset(s, 0, sizeof *s);
}

int gpu_session_window_nll(void *ctx, const int32_t *ids, int n, double *nll_sum)
{
    gpu_session *s = ctx;
    const float *d = NULL;
    int pos0 = 0;
    s->print_error = 1;
    if (n < 2 || n > s->m.max_logit_rows)
        return fq_error(F ":gpu_session_window_nll: window of %d tokens (expected 2..%d)", n,
                        s->m.max_logit_rows);
#ifdef FLATQ_HAVE_CUDA
    double *nll = fq_malloc(sizeof(double) * (size_t)(n - 1), "window NLL");
    int rc = nll ? FQ_OK : FQ_ERR;
    if (rc == FQ_OK &&
        (gpu_model_forward(&s->m, ids, 1, n, &pos0, 1, &d) != FQ_OK ||
         rt_window_nll(&s->ctx, s->m.nll_d, d, s->m.ids_d, n, s->m.cfg.vocab) != FQ_OK ||
         tp_comm_wait(&s->comm, &s->ctx) != FQ_OK ||
         rt_download(&s->ctx, nll, s->m.nll_d, sizeof(double) * (size_t)(n - 1)) != FQ_OK))
        rc = FQ_ERR;
    double sum = 0;
    for (int i = 0; rc == FQ_OK && i < n - 1; i++)
        sum += nll[i];
    free(nll);
    *nll_sum = sum;
    return rc;
#else
    (void)ids, (void)d, (void)pos0, (void)nll_sum;
    return FQ_ERR;
#endif
}

int gpu_ppl(MPI_Comm mpi, const char *dir, const int32_t *ids, size_t n, int seqlen,
            size_t max_windows, ppl_result *out, int *print_error)
{
    gpu_session s;
    *print_error = 1;
    if (gpu_session_open(&s, mpi, dir, 1, seqlen, seqlen, seqlen) != FQ_OK) {
        *print_error = s.print_error;
        return FQ_ERR;
    }
    /* the per-token NLL on the device: a window returns seqlen − 1 numbers, not its logits */
    int rc = perplexity_eval_nll(ids, n, seqlen, max_windows, gpu_session_window_nll, &s, out);
    gpu_session_close(&s);
    return rc;
}
