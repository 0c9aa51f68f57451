/* rt_profile.h — where a GPU forward spends its time, op by op (`flatq run --bench
 * --profile`). The forward records a CUDA event on its stream after each step and names
 * the step that just ended; after the stream is synchronised, rt_prof_flush adds the time
 * between consecutive events to that step's total. Off (NULL profile), a mark costs one
 * branch. With it on, nothing waits inside the forward unless the event pool fills.
 */
#ifndef FQ_RT_PROFILE_H
#define FQ_RT_PROFILE_H

#include "kernels/flatq_cuda.h"

enum {
    RTP_START,     /* the first mark of a forward: no time of its own */
    RTP_EMBED,     /* embedding gather, position upload */
    RTP_NORM,      /* RMSNorm */
    RTP_TQUANT,    /* fused online transform + activation quantization (W4A4) */
    RTP_GEMM,      /* the linears: W4A4 GEMMs or cuBLAS BF16 */
    RTP_ROPE,      /* RoPE and the M_k / M_v vector transforms */
    RTP_KV,        /* KV cache write (KV4 quantization or BF16 copy) */
    RTP_ATTN,      /* attention over the cache */
    RTP_ALLREDUCE, /* NCCL all-reduce after a row-parallel linear */
    RTP_SWIGLU,    /* SiLU gate */
    RTP_HEAD,      /* final norm, lm_head, logits gather */
    RTP_NOPS
};

#define RTP_MAX_MARKS 8192

typedef struct {
    int n;                      /* marks recorded since the last flush */
    void *ev[RTP_MAX_MARKS];    /* cudaEvent_t */
    unsigned char op[RTP_MAX_MARKS];
    double ms[RTP_NOPS];        /* accumulated since the last reset */
    long marks[RTP_NOPS];
    fq_cuda_ctx *ctx;
} rt_profile;

int rt_prof_init(rt_profile *p, fq_cuda_ctx *ctx);
void rt_prof_free(rt_profile *p);
/* Record that op `op` ends now. Always FQ_OK when p is NULL (so it chains in ||-lists). */
int rt_prof_mark(rt_profile *p, int op);
/* After the stream was synchronised: turn the recorded marks into times. */
int rt_prof_flush(rt_profile *p);
void rt_prof_reset(rt_profile *p);
const char *rt_prof_name(int op);

#endif
