/* gpu_bind.c — see gpu_bind.h. */
#include "coordinator/gpu_bind.h"

#include <stdio.h>
#include <unistd.h>

#include "error.h"

int gpu_bind_rank(MPI_Comm comm, int counts, fq_cuda_ctx *ctx, char *desc, size_t cap)
{
    if (!ctx || !desc || cap == 0)
        return fq_error("gpu_bind_rank: NULL context or description buffer");
#ifndef FLATQ_HAVE_CUDA
    (void)comm;
    (void)counts;
    return fq_error("device: cuda: this flatq was built without the CUDA backend (nvcc was "
                    "not found at build time; expected a build with nvcc, or device: cpu)");
#else
    int rank;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm node;
    if (MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node) !=
        MPI_SUCCESS)
        return fq_error("rank %d: MPI_Comm_split_type(SHARED) failed: cannot tell which ranks "
                        "share this node", rank);
    int flag = counts ? 1 : 0, before = 0, users = 0, node_rank;
    MPI_Comm_rank(node, &node_rank);
    /* index among this node's counting ranks, and how many there are */
    MPI_Exscan(&flag, &before, 1, MPI_INT, MPI_SUM, node);
    if (node_rank == 0)
        before = 0; /* MPI_Exscan leaves rank 0's result undefined */
    MPI_Allreduce(&flag, &users, 1, MPI_INT, MPI_SUM, node);
    MPI_Comm_free(&node);
    int ndev = 0;
    if (fq_cuda_device_count(&ndev) != FQ_OK)
        return fq_error_wrap("rank %d: device: cuda", rank);
    if (ndev <= 0) {
        char host[64] = "?";
        gethostname(host, sizeof host - 1);
        return fq_error("rank %d on %s: device: cuda but no GPU is visible (check "
                        "CUDA_VISIBLE_DEVICES and the job's --gpus-per-task)", rank, host);
    }
    int dev = counts ? before % ndev : 0;
    if (counts && before == 0 && users > ndev)
        fprintf(stderr, "flatq: note: %d GPU ranks share %d visible GPU%s on this node\n", users,
                ndev, ndev == 1 ? "" : "s");
    if (fq_cuda_init(ctx, dev) != FQ_OK)
        return fq_error_wrap("rank %d: GPU %d", rank, dev);
    char name[128] = "";
    fq_cuda_device_name(ctx, name, sizeof name);
    snprintf(desc, cap, "cuda:%d (%s)", dev, name);
    return FQ_OK;
#endif
}

void gpu_unbind(fq_cuda_ctx *ctx)
{
#ifdef FLATQ_HAVE_CUDA
    if (ctx)
        fq_cuda_free_ctx(ctx);
#else
    (void)ctx;
#endif
}
