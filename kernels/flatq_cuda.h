/* flatq_cuda.h — the plain-C face of flatq's CUDA calibration kernels.
 *
 * Each function mirrors a CPU reference op of core/ by name (rmsnorm_fwd → rmsnorm_fwd_cuda)
 * and by argument order and semantics: same shapes, same row-major token-major layouts,
 * same "backward ACCUMULATES into input gradients" rule where the CPU op has it, so a reader
 * moves between core/ and kernels/ by name and a test compares the two directly.
 * Differences: every function takes the context first; every float* is DEVICE memory
 * (scalars such as clip logits stay on the host; accumulated scalar gradients are device
 * floats); the attention keeps its softmax rows in a caller buffer instead of recomputing.
 *
 * The header needs no CUDA headers: the context holds the cuBLAS handle and the stream as
 * opaque pointers, so C code compiled without -I$(CUDA_HOME)/include can call it. Every
 * function returns FQ_OK or FQ_ERR with fq_error() set; a CUDA or cuBLAS failure names
 * the file, the function and the kernel or GEMM that failed. Calls are asynchronous on the
 * context's stream: an error of a launched kernel may surface only at the next
 * fq_cuda_sync (which reports it).
 *
 * Math is fp32 with fp32 accumulation; cuBLAS runs in its default (no TF32) mode, so the
 * results match the CPU reference to rounding (see kernels/README.md for the measured
 * tolerances).
 */
#ifndef FQ_FLATQ_CUDA_H
#define FQ_FLATQ_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* GEMM math of a context: FP32 (the default; what the tests compare at 1e-5), or tensor
 * cores with fp32 inputs rounded to TF32 or to bf16 inside cuBLAS, accumulating in fp32
 * (CUBLAS_COMPUTE_32F_FAST_TF32 / _FAST_16BF), for the linears and the attention; with
 * FQ_MATH_BF16 the fake-quantized linears of the layer step run on bf16 codes
 * (kernels/linear_codes_cuda.h). The transforms' GEMMs (kron, vec, head) keep fp32
 * accuracy in every mode: plain SGEMM, or split TF32 ("3xTF32": a = a_hi + a_lo, three
 * tensor-core products, about 2^-21 relative) in a tensor-core mode when split_transforms
 * is set (measured slower on these memory-bound shapes, so off by default). Everything
 * that is not a GEMM stays fp32. */
typedef enum { FQ_MATH_FP32 = 0, FQ_MATH_TF32 = 1, FQ_MATH_BF16 = 2 } fq_math_mode;

/* users of the context's scratch buffers (fq_cuda_scratch) */
typedef enum { FQ_SCRATCH_SPLIT = 0, FQ_SCRATCH_QUANT = 1, FQ_SCRATCH_ATTN = 2,
               FQ_SCRATCH_BARRIER = 3, FQ_SCRATCH_KSPLIT = 4, FQ_SCRATCH_X8 = 5,
               FQ_SCRATCH_KBLOCKS = 6, FQ_SCRATCH_SLOTS = 7 } fq_scratch_slot;

typedef struct {
    int device;     /* CUDA device ordinal */
    int sm_count;   /* its multiprocessors (grid sizing of bandwidth kernels) */
    void *cublas;   /* cublasHandle_t */
    void *stream;   /* cudaStream_t (a non-blocking stream owned by the context) */
    int math;       /* fq_math_mode of every GEMM issued through this context */
    int split_transforms; /* 1: transform GEMMs as split TF32 in tensor-core modes (else SGEMM) */
    /* 1 (fq_cuda_init's default): exact GEMMs with a small output and K >= 65536 (factor
     * gradients summed over all rows) run split over K with a fixed-order fold; 0: one SGEMM */
    int tallk_split;
    /* 1: the inference kernels launch as programmatic dependents (Hopper PDL): each may start
     * while the kernel before it in the stream finishes, doing what does not depend on it
     * (weights, factors, shared-memory set-up) and waiting (griddepcontrol.wait) before it
     * reads an activation. 0 (fq_cuda_init's default): ordinary stream order. */
    int pdl;
    /* 1 (fq_cuda_init's default): kernels may meet at a grid barrier when their whole grid
     * fits on the GPU (the decode transform's fused quantization). That needs the SMs to
     * themselves: 0 where other clients share them at once (CUDA MPS). */
    int grid_barrier;
    /* 1 (fq_cuda_init's default): the inference attention runs on the tensor-core kernel
     * where it applies (kernels/w4a4_attn.cu: dh 64/128, aligned buffers); 0: the CUDA-core
     * kernel everywhere (the tests and benchmarks compare the two). */
    int attn_tc;
    /* 1 (fq_cuda_init's default): the W4A4 GEMM at prefill sizes runs on the wgmma kernel
     * (kernels/w4a4_gemm_sm90.cu); 0: on the mma.sync one (the benchmark compares both) */
    int gemm_wgmma;
    /* 1 (fq_cuda_init's default): the W4A4 transform + quantize at prefill sizes (M > 64,
     * both Kronecker factors) runs its transform as fp32 cuBLAS GEMMs (kernels/w4a4_quant.cu
     * transform_quant_gemm); 0: the one-CTA-per-token kernel */
    int transform_gemm;
    /* 1: those cuBLAS transform GEMMs on TF32 tensor cores (kron_fwd_tf32_cuda: x is bf16,
     * exact in TF32; the factors and X̃·R rounded to 10 mantissa bits, about 1e-3 of the codes
     * one step off near rounding ties, tests/gpu); 0 (fq_cuda_init's default, and everything
     * calibration runs): fp32 SGEMM. The inference runtime sets 1 (FLATQ_TRANSFORM_TF32=0
     * clears it): the transform + quantize 1.7× faster (geometric mean over the 48 prefill
     * rows of bench_w4a4 on an H200, 1.15–2.3×; bench/NOTES.md, session 12): what is left
     * is the fp32 copies between its passes. */
    int transform_tf32;
    /* 1: the transform + quantize of the shapes it takes (fq_transform_quant_tc_takes) as
     * one fused kernel on TF32 mma.sync (kernels/w4a4_quant_tc.cu: one read of x, one write
     * of the codes; the accuracy of the TF32 path above); 0 (fq_cuda_init's default, and
     * everything calibration runs): as above. The inference runtime sets 1
     * (FLATQ_TRANSFORM_TC=0 clears it). */
    int transform_tc;
    /* device scratch owned by the context, one buffer per user, grown on demand and kept:
     * allocating per call (cudaMallocAsync/FreeAsync) cost host time on every decode step */
    void *scratch[FQ_SCRATCH_SLOTS];
    size_t scratch_cap[FQ_SCRATCH_SLOTS];
    /* the grid barrier's arrivals so far (fq_cuda_grid_barrier): the device counter in
     * slot FQ_SCRATCH_BARRIER only grows, each launch waits for its own total */
    unsigned long long barrier_arrivals;
} fq_cuda_ctx;

/* A device buffer of at least `bytes` in the context's slot (fq_scratch_slot), valid until
 * the next call for the same slot; growing it waits for the device (cudaFree). */
int fq_cuda_scratch(fq_cuda_ctx *ctx, int slot, size_t bytes, void **out);

/* For a launch of `ctas` CTAs that all meet at one grid barrier: the device counter they
 * add to and the total they wait for (kernels/cuda_common.cuh, grid_arrive_wait). Only for
 * grids whose CTAs can all be resident at once; the counter is zeroed when first made. */
int fq_cuda_grid_barrier(fq_cuda_ctx *ctx, unsigned ctas, unsigned long long **counter,
                         unsigned long long *target);

/* ---- context and memory (kernels/cuda_ctx.cu) ---- */
int fq_cuda_init(fq_cuda_ctx *ctx, int device);
void fq_cuda_free_ctx(fq_cuda_ctx *ctx);
int fq_cuda_device_count(int *count);
/* A name like "NVIDIA H100 80GB HBM3" for reports. */
int fq_cuda_device_name(const fq_cuda_ctx *ctx, char *buf, size_t cap);
int fq_cuda_sync(fq_cuda_ctx *ctx);
/* Make ctx's device the calling thread's current one (the CUDA runtime keeps it per thread:
 * a context used from a thread other than the one that made it needs this first). */
int fq_cuda_bind(fq_cuda_ctx *ctx);
/* Page-lock a host buffer that many copies go through (cudaHostRegister): pageable copies
 * run at ~4–6 GB/s through a staging buffer, pinned ones at the link's speed. Costs time
 * once (per GB) and non-swappable memory until fq_cuda_host_unregister. */
int fq_cuda_host_register(void *p, size_t bytes);
void fq_cuda_host_unregister(void *p);
/* what: a few words naming the buffer, used in the out-of-memory message. */
int fq_cuda_alloc(float **dptr, size_t count, const char *what);
void fq_cuda_free(void *dptr);
int fq_cuda_upload(fq_cuda_ctx *ctx, float *dst, const float *src, size_t count);
int fq_cuda_download(fq_cuda_ctx *ctx, float *dst, const float *src, size_t count);
/* Device to device, asynchronous on the context's stream (no synchronisation). */
int fq_cuda_copy(fq_cuda_ctx *ctx, float *dst, const float *src, size_t count);
/* The same for byte buffers (int8 codes, packed nibbles): sizes in bytes, allocations
 * rounded up to whole floats; upload and download synchronise as the float ones do. */
int fq_cuda_alloc_bytes(void **dptr, size_t bytes, const char *what);
int fq_cuda_upload_bytes(fq_cuda_ctx *ctx, void *dst, const void *src, size_t bytes);
int fq_cuda_download_bytes(fq_cuda_ctx *ctx, void *dst, const void *src, size_t bytes);
int fq_cuda_fill(fq_cuda_ctx *ctx, float *dst, float value, size_t count);
/* FQ_MATH_FP32 / TF32 / BF16 for the GEMMs that follow. */
int fq_cuda_set_math(fq_cuda_ctx *ctx, int math);
/* Free and total bytes of the current device (cudaMemGetInfo). */
int fq_cuda_mem_info(size_t *free_bytes, size_t *total_bytes);
/* dst[0] += Σ src[0..n): one block, a fixed summation order, so the same inputs give the
 * same bits (atomics would not). */
int fq_cuda_sum_into(fq_cuda_ctx *ctx, float *dst, const float *src, size_t n);

/* Row-major C[M,N] = alpha·op(A)·op(B) + beta·C, the device twin of real_gemm. */
int fq_gemm_cuda(fq_cuda_ctx *ctx, int trans_a, int trans_b, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
/* The transforms' GEMMs, row-major and strided-batched like fq_gemm_strided_cuda, at fp32
 * accuracy whatever ctx->math says (their outputs feed the quantizers, and the weight-side
 * inverse must cancel the activation-side transform): SGEMM, split over K with a
 * fixed-order fold when K is tall and the output small (ctx->tallk_split), or in a
 * tensor-core mode split TF32 when ctx->split_transforms asks (measured slower on H200:
 * off). */
int fq_gemm_strided_exact_cuda(fq_cuda_ctx *ctx, int trans_a, int trans_b, int m, int n, int k,
                               float alpha, const float *a, int lda, long long stride_a,
                               const float *b, int ldb, long long stride_b, float beta,
                               float *c, int ldc, long long stride_c, int batch,
                               const char *where);

/* The same GEMM in the given fq_math_mode, whatever ctx->math says (the inference
 * transform's TF32 products). */
int fq_gemm_strided_math_cuda(fq_cuda_ctx *ctx, int math, int trans_a, int trans_b, int m, int n,
                              int k, float alpha, const float *a, int lda, long long stride_a,
                              const float *b, int ldb, long long stride_b, float beta, float *c,
                              int ldc, long long stride_c, int batch, const char *where);

/* ---- LLaMA ops (kernels/llama_ops.cu), see core/llama_ops.h ---- */
int rmsnorm_fwd_cuda(fq_cuda_ctx *ctx, float *out, float *rstd, const float *x,
                     const float *gamma, int n, int d, float eps);
int rmsnorm_bwd_cuda(fq_cuda_ctx *ctx, float *dx, const float *dy, const float *x,
                     const float *gamma, const float *rstd, int n, int d);
/* cos, sin: the rope_table arrays [s, dh/2] on the device. In place on x / dx. */
int rope_fwd_cuda(fq_cuda_ctx *ctx, float *x, int b, int s, int heads, int dh,
                  const float *cos, const float *sin);
int rope_bwd_cuda(fq_cuda_ctx *ctx, float *dx, int b, int s, int heads, int dh,
                  const float *cos, const float *sin);
/* probs [b, h, s, s] is required: the causal softmax rows (zeros above the diagonal),
 * kept for attention_bwd_cuda. */
int attention_fwd_cuda(fq_cuda_ctx *ctx, float *out, float *probs, const float *q,
                       const float *k, const float *v, int b, int s, int h, int g, int dh);
/* probs: what the forward wrote; scratch: b·s·s floats. Accumulates dq, dk, dv. */
int attention_bwd_cuda(fq_cuda_ctx *ctx, float *dq, float *dk, float *dv, const float *dout,
                       const float *q, const float *k, const float *v, const float *probs,
                       int b, int s, int h, int g, int dh, float *scratch);
int swiglu_fwd_cuda(fq_cuda_ctx *ctx, float *out, const float *gate, const float *up, size_t n);
int swiglu_bwd_cuda(fq_cuda_ctx *ctx, float *dgate, float *dup, const float *dout,
                    const float *gate, const float *up, size_t n);
int linear_fwd_cuda(fq_cuda_ctx *ctx, float *out, const float *x, const float *w, int n,
                    int in, int o);
/* dx, dw accumulated; either may be NULL. */
int linear_bwd_cuda(fq_cuda_ctx *ctx, float *dx, float *dw, const float *dout, const float *x,
                    const float *w, int n, int in, int o);

/* ---- fake quantizers (kernels/quantizer.cu), see core/quantizer.h ----
 * The *_rows_cuda backward variants write each row's share of the shared clip-logit
 * gradient into g_cmax_rows / g_cmin_rows [rows·blocks] (zero for rows that contribute
 * nothing) instead of adding it atomically, so fq_cuda_sum_into can reduce them in a fixed
 * order: the calibration loop's determinism rests on that.
 * Clip logits are host scalars; g_cmax / g_cmin point to ONE device float each,
 * accumulated (+=). Unlike the CPU forward, a non-finite row range is not reported: its
 * outputs become NaN, which the calibration loss then exposes. */
int quant_act_sym_fwd_cuda(fq_cuda_ctx *ctx, float *out, float *scale, const float *in,
                           int rows, int k, int blocks, int bits, float cmax, float cmin);
int quant_act_sym_bwd_cuda(fq_cuda_ctx *ctx, float *g_in, float *g_cmax, float *g_cmin,
                           const float *g_out, const float *in, const float *scale, int rows,
                           int k, int blocks, int bits, float cmax, float cmin);
int quant_kv_asym_fwd_cuda(fq_cuda_ctx *ctx, float *out, float *scale, float *zero,
                           const float *in, int rows, int len, int bits, float cmax,
                           float cmin);
int quant_kv_asym_bwd_cuda(fq_cuda_ctx *ctx, float *g_in, float *g_cmax, float *g_cmin,
                           const float *g_out, const float *in, const float *scale,
                           const float *zero, int rows, int len, int bits, float cmax,
                           float cmin);
/* The forwards given clip ratios κ = σ(logit) directly, as core/quantizer.h's *_ratio
 * functions take them: a finished checkpoint stores κ (core/qlayer.h), not the logits. */
int quant_act_sym_ratio_cuda(fq_cuda_ctx *ctx, float *out, float *scale, const float *in,
                             int rows, int k, int blocks, int bits, float kmax, float kmin);
int quant_kv_asym_ratio_cuda(fq_cuda_ctx *ctx, float *out, float *scale, float *zero,
                             const float *in, int rows, int len, int bits, float kmax,
                             float kmin);
int quant_act_sym_bwd_rows_cuda(fq_cuda_ctx *ctx, float *g_in, float *g_cmax_rows,
                                float *g_cmin_rows, const float *g_out, const float *in,
                                const float *scale, int rows, int k, int blocks, int bits,
                                float cmax, float cmin);
int quant_kv_asym_bwd_rows_cuda(fq_cuda_ctx *ctx, float *g_in, float *g_cmax_rows,
                                float *g_cmin_rows, const float *g_out, const float *in,
                                const float *scale, const float *zero, int rows, int len,
                                int bits, float cmax, float cmin);
/* a, b: per-row weight clip logits [rows] on the DEVICE (they are learned on the GPU). */
int quant_weight_lwc_fwd_cuda(fq_cuda_ctx *ctx, float *out, float *scale, const float *w,
                              int rows, int cols, int bits, const float *a, const float *b);
/* g_w written (may be NULL); g_a, g_b [rows] accumulated (either may be NULL). */
int quant_weight_lwc_bwd_cuda(fq_cuda_ctx *ctx, float *g_w, float *g_a, float *g_b,
                              const float *g_out, const float *w, const float *scale,
                              int rows, int cols, int bits, const float *a, const float *b);

/* ---- transforms (kernels/kron.cu), see core/kron.h; work sizes as kron_*_work ---- */
int kron_fwd_cuda(fq_cuda_ctx *ctx, float *y, const float *x, int rows, int n1, int n2,
                  const float *L, const float *R, float *work);
/* The forward's two products on TF32 tensor cores (inference only: ctx->transform_tf32);
 * work: rows·n1·n2 floats (Z). */
int kron_fwd_tf32_cuda(fq_cuda_ctx *ctx, float *y, const float *x, int rows, int n1, int n2,
                       const float *L, const float *R, float *work);
int kron_bwd_cuda(fq_cuda_ctx *ctx, float *g_x, float *g_L, float *g_R, const float *g_y,
                  const float *x, int rows, int n1, int n2, const float *L, const float *R,
                  float *work);
/* The same keeping Z = X̃·R: the forward writes it to z ([rows, n1·n2], not work), the
 * backward reads it instead of recomputing it (z NULL: recompute) — one of the backward's
 * five products saved where the caller can hold Z from one to the other. */
int kron_fwd_z_cuda(fq_cuda_ctx *ctx, float *y, float *z, const float *x, int rows, int n1,
                    int n2, const float *L, const float *R);
int kron_bwd_z_cuda(fq_cuda_ctx *ctx, float *g_x, float *g_L, float *g_R, const float *g_y,
                    const float *x, const float *z, int rows, int n1, int n2, const float *L,
                    const float *R, float *work);
int kron_weight_fwd_cuda(fq_cuda_ctx *ctx, float *w_out, const float *w, int out_rows, int n1,
                         int n2, const float *L_invT, const float *R_invT, float *work);
int kron_weight_bwd_cuda(fq_cuda_ctx *ctx, float *g_w, float *g_L_invT, float *g_R_invT,
                         const float *g_w_out, const float *w, int out_rows, int n1, int n2,
                         const float *L_invT, const float *R_invT, float *work);
int chscale_act_fwd_cuda(fq_cuda_ctx *ctx, float *y, const float *x, const float *c, int rows,
                         int n);
int chscale_act_bwd_cuda(fq_cuda_ctx *ctx, float *g_x, float *g_c, const float *g_y,
                         const float *x, const float *c, int rows, int n);
int chscale_weight_fwd_cuda(fq_cuda_ctx *ctx, float *w1, const float *w, const float *c,
                            int rows, int n);
int chscale_weight_bwd_cuda(fq_cuda_ctx *ctx, float *g_w, float *g_c, const float *g_w1,
                            const float *w, const float *c, int rows, int n);
int vec_transform_fwd_cuda(fq_cuda_ctx *ctx, float *y, const float *x, int nvec, int k,
                           const float *M);
int vec_transform_bwd_cuda(fq_cuda_ctx *ctx, float *g_x, float *g_M, const float *g_y,
                           const float *x, int nvec, int k, const float *M);
/* work: tokens·h·dh (fwd), 2·tokens·h·dh (bwd), as the CPU op. */
int head_transform_fwd_cuda(fq_cuda_ctx *ctx, float *o1, const float *o, int tokens, int h,
                            int dh, const float *Mo, float *work);
int head_transform_bwd_cuda(fq_cuda_ctx *ctx, float *g_o, float *g_Mo, const float *g_o1,
                            const float *o, int tokens, int h, int dh, const float *Mo,
                            float *work);

#ifdef __cplusplus
}
#endif

#endif
