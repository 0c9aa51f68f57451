/* gpu_session.h — everything one rank needs to run a model on its GPU: the CUDA context,
 * the tensor-parallel communicator and the model shard, opened and closed together.
 *
 * Collective: every rank of MPI_COMM_WORLD opens the same session (mpirun -np T). Ranks
 * agree after each step that can fail locally (device, load), so a rank that cannot
 * start makes the others stop with it instead of waiting in NCCL forever; only the lowest
 * failing rank prints (print_error), so the user sees one line naming it.
 * MPI must be initialised by the caller. FLATQ_NCCL_TIMEOUT_S (default 300) bounds every
 * wait for the peers.
 */
#ifndef FQ_GPU_SESSION_H
#define FQ_GPU_SESSION_H

#include "perplexity.h"
#include "runtime/gpu_model.h"

typedef struct {
    fq_cuda_ctx ctx;
    tp_comm comm;
    gpu_model m;
    int have_ctx, have_comm, have_model;
    int print_error; /* this rank should print the error that made open/forward fail */
} gpu_session;

int gpu_session_open(gpu_session *s, MPI_Comm mpi, const char *dir, int max_batch,
                     int max_ctx, int max_tokens, int max_logit_rows);
void gpu_session_close(gpu_session *s);

/* window_nll_fn (core/perplexity.h): the window's summed NLL, computed on the GPU. */
int gpu_session_window_nll(void *ctx, const int32_t *ids, int s, double *nll_sum);

/* Perplexity of the checkpoint dir on the GPU(s), the protocol of core/perplexity.h. */
int gpu_ppl(MPI_Comm mpi, const char *dir, const int32_t *ids, size_t n, int seqlen,
            size_t max_windows, ppl_result *out, int *print_error);

/* This process's rank in MPI_COMM_WORLD (0 without MPI). */
int gpu_session_rank(void);

#endif
