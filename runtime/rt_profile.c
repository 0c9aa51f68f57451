/* rt_profile.c — per-op times of a GPU forward from CUDA events (see rt_profile.h). */
#include "runtime/rt_profile.h"
#include "error.h"

#include <string.h>

#define F "runtime/rt_profile.c"

static const char *const names[RTP_NOPS] = {
    "start", "embedding", "rmsnorm", "transform+quant", "linears (gemm)", "rope, M_k/M_v",
    "kv-cache write", "attention", "all-reduce", "swiglu", "head (norm, lm_head)"};

const char *rt_prof_name(int op)
{
    return op >= 0 && op < RTP_NOPS ? names[op] : "?";
}

void rt_prof_reset(rt_profile *p)
{
    if (!p)
        return;
    memset(p->ms, 0, sizeof p->ms);
    memset(p->marks, 0, sizeof p->marks);
}

#ifdef FLATQ_HAVE_CUDA
#include <cuda_runtime_api.h>

int rt_prof_init(rt_profile *p, fq_cuda_ctx *ctx)
{
    if (!p || !ctx)
        return fq_error(F ":rt_prof_init: NULL profile or context");
    memset(p, 0, sizeof *p);
    p->ctx = ctx;
    for (int i = 0; i < RTP_MAX_MARKS; i++)
        if (cudaEventCreate((cudaEvent_t *)&p->ev[i]) != cudaSuccess) {
            rt_prof_free(p);
            return fq_error(F ":rt_prof_init: cudaEventCreate failed after %d events", i);
        }
    return FQ_OK;
}

void rt_prof_free(rt_profile *p)
{
    if (!p)
        return;
    for (int i = 0; i < RTP_MAX_MARKS; i++)
        if (p->ev[i])
            cudaEventDestroy((cudaEvent_t)p->ev[i]);
    memset(p, 0, sizeof *p);
}

int rt_prof_flush(rt_profile *p)
{
    if (!p || p->n == 0)
        return FQ_OK;
    for (int i = 1; i < p->n; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, (cudaEvent_t)p->ev[i - 1], (cudaEvent_t)p->ev[i]) !=
            cudaSuccess)
            return fq_error(F ":rt_prof_flush: cudaEventElapsedTime failed (expected the "
                            "stream synchronised before the flush)");
        p->ms[p->op[i]] += ms;
        p->marks[p->op[i]]++;
    }
    /* the last event starts the next interval */
    void *last = p->ev[p->n - 1];
    p->ev[p->n - 1] = p->ev[0];
    p->ev[0] = last;
    p->op[0] = RTP_START;
    p->n = 1;
    return FQ_OK;
}

int rt_prof_mark(rt_profile *p, int op)
{
    if (!p)
        return FQ_OK;
    if (p->n == RTP_MAX_MARKS) { /* pool full: wait for the GPU, then fold the marks */
        if (cudaStreamSynchronize((cudaStream_t)p->ctx->stream) != cudaSuccess ||
            rt_prof_flush(p) != FQ_OK)
            return fq_error(F ":rt_prof_mark: could not drain the event pool");
    }
    if (cudaEventRecord((cudaEvent_t)p->ev[p->n], (cudaStream_t)p->ctx->stream) != cudaSuccess)
        return fq_error(F ":rt_prof_mark: cudaEventRecord failed");
    p->op[p->n++] = (unsigned char)op;
    return FQ_OK;
}

#else

int rt_prof_init(rt_profile *p, fq_cuda_ctx *ctx)
{
    (void)ctx;
    if (p)
        memset(p, 0, sizeof *p);
    return fq_error(F ":rt_prof_init: flatq was built without the CUDA backend");
}

void rt_prof_free(rt_profile *p)
{
    (void)p;
}

int rt_prof_flush(rt_profile *p)
{
    (void)p;
    return FQ_OK;
}

int rt_prof_mark(rt_profile *p, int op)
{
    (void)p;
    (void)op;
    return FQ_OK;
}

#endif
