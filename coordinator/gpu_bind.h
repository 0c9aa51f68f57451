/* gpu_bind.h — which GPU a rank of an MPI job uses.
 *
 * Ranks that need a GPU (the calibration workers; every rank of a tensor-parallel run) are
 * numbered per node in rank order (MPI_COMM_TYPE_SHARED), and the i-th takes device
 * i mod (visible devices). Under Slurm with --gpus-per-task=1 each task sees one device
 * and takes it; under a plain mpirun on an 8-GPU node, eight workers take 0..7. A rank that
 * does not count (the calibration coordinator) takes device 0 of its node for its own GPU
 * work (the FP pass), which happens before that GPU's worker is busy.
 * More counting ranks than devices on a node is allowed (they share) and said once.
 */
#ifndef FQ_GPU_BIND_H
#define FQ_GPU_BIND_H

#include <mpi.h>
#include <stddef.h>

#include "kernels/flatq_cuda.h"

/* Collective over comm. counts: whether this rank is one of the numbered GPU users.
 * On success ctx is initialised on the chosen device and desc holds "cuda:N (NAME)".
 * Fails (on this rank) when the binary has no CUDA backend or the node has no GPU. */
int gpu_bind_rank(MPI_Comm comm, int counts, fq_cuda_ctx *ctx, char *desc, size_t cap);
/* Release what gpu_bind_rank set up (safe in a build without CUDA). */
void gpu_unbind(fq_cuda_ctx *ctx);

#endif
