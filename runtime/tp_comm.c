/* tp_comm.c — NCCL from MPI, with collectives that cannot hang (see tp_comm.h). */
#include "runtime/tp_comm.h"
#include "error.h"

#include <mpi.h>
#include <string.h>
#include <time.h>

#define F "runtime/tp_comm.c"

#ifdef FLATQ_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int tp_comm_pick_device(tp_comm *c, MPI_Comm mpi, double timeout_s)
{
    if (!c)
        return fq_error(F ":tp_comm_pick_device: NULL communicator (expected a pointer)");
    memset(c, 0, sizeof *c);
    c->timeout_s = timeout_s > 0 ? timeout_s : 300;
    c->mpi = mpi;
    MPI_Comm_rank(mpi, &c->rank);
    MPI_Comm_size(mpi, &c->tp);
    MPI_Comm node;
    MPI_Comm_split_type(mpi, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &c->local_rank);
    MPI_Comm_free(&node);
    int count = 0;
    if (fq_cuda_device_count(&count) != FQ_OK)
        return fq_error_wrap("rank %d", c->rank);
    if (count == 0)
        return fq_error(F ":tp_comm_pick_device: rank %d: no CUDA device visible (expected "
                        "one GPU per rank)", c->rank);
    c->device = c->local_rank % count;
    return FQ_OK;
}

int tp_comm_init(tp_comm *c, fq_cuda_ctx *ctx)
{
    if (!c || !ctx)
        return fq_error(F ":tp_comm_init: NULL communicator or context (expected both)");
    if (c->tp == 1)
        return FQ_OK;
    ncclUniqueId id;
    int ok = FQ_OK;
    if (c->rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&id);
        if (r != ncclSuccess)
            ok = fq_error(F ":tp_comm_init: rank 0: ncclGetUniqueId failed: %s",
                          ncclGetErrorString(r));
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, c->mpi);
    if (ok != FQ_OK)
        return c->rank == 0 ? FQ_ERR
                            : fq_error(F ":tp_comm_init: rank %d: rank 0 could not make the "
                                       "NCCL id", c->rank);
    MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, c->mpi);
    ncclComm_t comm;
    ncclResult_t r = ncclCommInitRank(&comm, c->tp, id, c->rank);
    if (r != ncclSuccess)
        return fq_error(F ":tp_comm_init: rank %d (GPU %d): ncclCommInitRank failed: %s "
                        "(expected every rank to reach its peers)", c->rank, c->device,
                        ncclGetErrorString(r));
    c->nccl = comm;
    for (int i = 0; i < 2 * TP_COMM_MAX_EVENTS; i++) {
        cudaEvent_t e;
        if (cudaEventCreate(&e) != cudaSuccess) {
            tp_comm_free(c);
            return fq_error(F ":tp_comm_init: rank %d: cudaEventCreate failed", c->rank);
        }
        c->ev[i] = e;
    }
    return FQ_OK;
}

void tp_comm_free(tp_comm *c)
{
    if (!c)
        return;
    for (int i = 0; i < 2 * TP_COMM_MAX_EVENTS; i++)
        if (c->ev[i])
            cudaEventDestroy((cudaEvent_t)c->ev[i]);
    if (c->nccl)
        ncclCommDestroy((ncclComm_t)c->nccl);
    c->nccl = NULL;
    memset(c->ev, 0, sizeof c->ev);
}

static int nccl_check(tp_comm *c, ncclResult_t r, const char *what)
{
    if (r == ncclSuccess)
        return FQ_OK;
    return fq_error(F ":%s: rank %d (GPU %d): NCCL error: %s (expected the peers to be "
                    "alive)", what, c->rank, c->device, ncclGetErrorString(r));
}

static void event_begin(tp_comm *c, fq_cuda_ctx *ctx)
{
    if (c->timing && c->nev < TP_COMM_MAX_EVENTS)
        cudaEventRecord((cudaEvent_t)c->ev[2 * c->nev], (cudaStream_t)ctx->stream);
}

static void event_end(tp_comm *c, fq_cuda_ctx *ctx)
{
    if (c->timing && c->nev < TP_COMM_MAX_EVENTS)
        cudaEventRecord((cudaEvent_t)c->ev[2 * c->nev++ + 1], (cudaStream_t)ctx->stream);
}

int tp_allreduce_bf16(tp_comm *c, fq_cuda_ctx *ctx, uint16_t *buf, size_t count)
{
    if (c->tp == 1)
        return FQ_OK;
    event_begin(c, ctx);
    if (nccl_check(c, ncclAllReduce(buf, buf, count, ncclBfloat16, ncclSum,
                                    (ncclComm_t)c->nccl, (cudaStream_t)ctx->stream),
                   "tp_allreduce_bf16") != FQ_OK)
        return FQ_ERR;
    event_end(c, ctx);
    c->allreduce_bytes += count * 2;
    return FQ_OK;
}

int tp_allgather_f32(tp_comm *c, fq_cuda_ctx *ctx, const float *send, float *recv,
                     size_t count)
{
    if (c->tp == 1) {
        if (send != recv &&
            cudaMemcpyAsync(recv, send, count * sizeof(float), cudaMemcpyDeviceToDevice,
                            (cudaStream_t)ctx->stream) != cudaSuccess)
            return fq_error(F ":tp_allgather_f32: device copy failed");
        return FQ_OK;
    }
    return nccl_check(c, ncclAllGather(send, recv, count, ncclFloat32, (ncclComm_t)c->nccl,
                                       (cudaStream_t)ctx->stream),
                      "tp_allgather_f32");
}

int tp_comm_wait(tp_comm *c, fq_cuda_ctx *ctx)
{
    cudaStream_t st = (cudaStream_t)ctx->stream;
    double t0 = now_s();
    for (;;) {
        cudaError_t e = cudaStreamQuery(st);
        if (e == cudaSuccess)
            break;
        if (e != cudaErrorNotReady)
            return fq_error(F ":tp_comm_wait: rank %d (GPU %d): CUDA error: %s (expected the "
                            "GPU to finish the forward)", c->rank, c->device,
                            cudaGetErrorString(e));
        if (c->nccl) {
            ncclResult_t ar = ncclSuccess;
            ncclCommGetAsyncError((ncclComm_t)c->nccl, &ar);
            if (ar != ncclSuccess && ar != ncclInProgress) {
                ncclCommAbort((ncclComm_t)c->nccl);
                c->nccl = NULL;
                return fq_error(F ":tp_comm_wait: rank %d (GPU %d): NCCL reported: %s (a peer "
                                "rank or its GPU failed; the job stops)", c->rank, c->device,
                                ncclGetErrorString(ar));
            }
            if (now_s() - t0 > c->timeout_s) {
                ncclCommAbort((ncclComm_t)c->nccl);
                c->nccl = NULL;
                return fq_error(F ":tp_comm_wait: rank %d (GPU %d): no progress for %.0f s "
                                "inside a collective (expected every peer rank to be alive; "
                                "one lost its GPU or its process)", c->rank, c->device,
                                c->timeout_s);
            }
        }
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < c->nev; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, (cudaEvent_t)c->ev[2 * i], (cudaEvent_t)c->ev[2 * i + 1]) ==
            cudaSuccess)
            c->allreduce_ms += ms;
    }
    c->nev = 0;
    return FQ_OK;
}

#else /* the CPU-only build: the entry points explain themselves */

int tp_comm_pick_device(tp_comm *c, MPI_Comm mpi, double timeout_s)
{
    (void)timeout_s;
    if (c) {
        memset(c, 0, sizeof *c);
        c->mpi = mpi; /* the session still agrees over it on the way out */
    }
    return fq_error(F ":tp_comm_pick_device: flatq was built without the CUDA backend "
                    "(expected a build with nvcc for --device cuda)");
}

int tp_comm_init(tp_comm *c, fq_cuda_ctx *ctx)
{
    (void)c;
    (void)ctx;
    return fq_error(F ":tp_comm_init: flatq was built without the CUDA backend");
}

void tp_comm_free(tp_comm *c)
{
    (void)c;
}

int tp_allreduce_bf16(tp_comm *c, fq_cuda_ctx *ctx, uint16_t *buf, size_t count)
{
    (void)c, (void)ctx, (void)buf, (void)count;
    return fq_error(F ":tp_allreduce_bf16: flatq was built without the CUDA backend");
}

int tp_allgather_f32(tp_comm *c, fq_cuda_ctx *ctx, const float *send, float *recv,
                     size_t count)
{
    (void)c, (void)ctx, (void)send, (void)recv, (void)count;
    return fq_error(F ":tp_allgather_f32: flatq was built without the CUDA backend");
}

int tp_comm_wait(tp_comm *c, fq_cuda_ctx *ctx)
{
    (void)c, (void)ctx;
    return fq_error(F ":tp_comm_wait: flatq was built without the CUDA backend");
}

#endif
