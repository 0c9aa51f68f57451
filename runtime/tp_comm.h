/* tp_comm.h — the tensor-parallel communicator of the inference runtime: MPI picks the
 * ranks and the GPU of each, NCCL moves the activations.
 *
 * One process per GPU: the local rank (ranks sharing a node, from MPI_COMM_TYPE_SHARED)
 * picks the device, rank 0 makes the NCCL unique id and MPI_Bcast hands it to the others,
 * so the same binary runs under mpirun or srun on one node or several. With one rank no
 * NCCL communicator is made and the collectives are no-ops.
 *
 * Hangs: a rank that loses its GPU or its peer would leave the others blocked inside an
 * NCCL kernel forever. Instead of a blocking stream synchronize, the runtime waits with
 * tp_comm_wait, which polls the stream and ncclCommGetAsyncError; on an NCCL error or
 * after timeout_s without progress it aborts the communicator and reports one line
 * naming the rank and the cause. The check happens once per forward (where the host needs
 * the result anyway), not after every collective, so decode keeps the GPU queue full.
 *
 * All-reduce time: when timing is on, CUDA events bracket every collective and
 * tp_comm_wait adds their elapsed time to allreduce_ms (the all-reduce share of --bench).
 */
#ifndef FQ_TP_COMM_H
#define FQ_TP_COMM_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/flatq_cuda.h"

#define TP_COMM_MAX_EVENTS 1024

typedef struct {
    int tp, rank, local_rank, device;
    MPI_Comm mpi;      /* the ranks of this tensor-parallel group (MPI_COMM_SELF: one) */
    double timeout_s;
    void *nccl;        /* ncclComm_t, NULL with one rank */
    int timing;        /* bracket collectives with events */
    int nev;           /* event pairs recorded since the last wait */
    void *ev[2 * TP_COMM_MAX_EVENTS];
    double allreduce_ms; /* accumulated by tp_comm_wait while timing */
    size_t allreduce_bytes;
} tp_comm;

/* Ranks and device from MPI_COMM_WORLD (MPI must be initialised). Fills rank, tp,
 * local_rank and device (local_rank modulo the visible GPUs). */
int tp_comm_pick_device(tp_comm *c, MPI_Comm mpi, double timeout_s);
/* Make the NCCL communicator on ctx's device (collective over MPI_COMM_WORLD). */
int tp_comm_init(tp_comm *c, fq_cuda_ctx *ctx);
void tp_comm_free(tp_comm *c);

/* In-place sum of a bf16 buffer [count] over all ranks, on ctx's stream. */
int tp_allreduce_bf16(tp_comm *c, fq_cuda_ctx *ctx, uint16_t *buf, size_t count);
/* recv [tp, count] fp32 ← every rank's send [count], on ctx's stream. */
int tp_allgather_f32(tp_comm *c, fq_cuda_ctx *ctx, const float *send, float *recv,
                     size_t count);
/* Wait for ctx's stream, polling NCCL for errors; refuse after timeout_s. */
int tp_comm_wait(tp_comm *c, fq_cuda_ctx *ctx);

#endif
