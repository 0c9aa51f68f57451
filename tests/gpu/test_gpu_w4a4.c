/* test_gpu_w4a4.c — kernels/w4a4_*.cu against the C references of core/w4a4_ref.c.
 *
 * Bit-exact: the GEMM's int32 accumulators (all three kernels: mma.sync and wgmma prefill,
 * decode; K with a 64-element tail, the
 * largest products over K = 28672), its bf16 outputs (the epilogue order is the
 * reference's, kblocks 1 and > 1, block lengths that end mid-tile, with a residual and with
 * y aliasing the residual), transform+quant codes and scales when the transform is
 * identity, KV4 codes and (scale, zero) pairs, untouched cache slots.
 * Measured: with random L, R the GPU sums the transform in another order than BLAS, so a
 * value within an ulp of a rounding tie may take the neighbouring code: the check reports
 * the fraction of differing codes (tolerance 1e-3, each off by exactly one) and the worst
 * relative scale difference (1e-5). Attention (fp32, online softmax, bf16 output) against
 * the float64 reference: ‖out − ref‖/‖ref‖ ≤ 5e-3 (bf16 output rounding alone is ~1e-3).
 * Padded rows (K % 64 != 0: stories260K's f = 172 as T_d 2 × 86; rows of round_up(K, 64)
 * codes, zero after K) get the same checks: transform+quant codes over the whole padded row
 * (bit-exact with identity transforms, the code-difference rate with random ones) and the
 * GEMM on padded rows bit-exact, every path. 16m's K = 1024 as 32 × 32 too. Attention
 * also for GQA groups the kernel masks (3 with dh 64 as in flatq-llama-16m, 6) and splits
 * over several CTAs (24, 32).
 * Refused shapes return FQ_ERR before any launch.
 */
#include <cuda_runtime.h>

#include "dtype.h"
#include "gpu_check.h"
#include "kernels/w4a4.h"
#include "w4a4_ref.h"

/* This suite allocates more buffers than gpu_check.h tracks, so it keeps its own list. */
#define W_MAX_ALLOCS 1024
static void *w_allocs[W_MAX_ALLOCS];
static int w_nallocs;

static void *dev_bytes(gpu_suite *t, size_t n)
{
    void *d;
    if (w_nallocs == W_MAX_ALLOCS || cudaMalloc(&d, n ? n : 1) != cudaSuccess)
        gpu_die(t, "cudaMalloc");
    w_allocs[w_nallocs++] = d;
    return d;
}

static void dev_free_all(void)
{
    for (int i = 0; i < w_nallocs; i++)
        cudaFree(w_allocs[i]);
    w_nallocs = 0;
}

static float *dev_floats(gpu_suite *t, size_t n) { return dev_bytes(t, n * sizeof(float)); }

static float *dev_floats_copy(gpu_suite *t, const float *h, size_t n)
{
    float *d = dev_floats(t, n);
    if (cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess)
        gpu_die(t, "cudaMemcpy H2D");
    return d;
}

/* NaN-filled: whatever the kernel does not write stays NaN. */
static float *dev_floats_poison(gpu_suite *t, size_t n)
{
    float *d = dev_floats(t, n);
    if (cudaMemset(d, 0xFF, n * sizeof(float)) != cudaSuccess)
        gpu_die(t, "cudaMemset");
    return d;
}

static void *dev_upload(gpu_suite *t, const void *h, size_t n)
{
    void *d = dev_bytes(t, n);
    if (cudaMemcpy(d, h, n, cudaMemcpyHostToDevice) != cudaSuccess)
        gpu_die(t, "cudaMemcpy H2D");
    return d;
}

static void *dev_poison_bytes(gpu_suite *t, size_t n, int byte)
{
    void *d = dev_bytes(t, n);
    if (cudaMemset(d, byte, n) != cudaSuccess)
        gpu_die(t, "cudaMemset");
    return d;
}

static void *host_fetch(gpu_suite *t, const void *d, size_t n)
{
    void *h = malloc(n ? n : 1);
    if (!h || fq_cuda_sync(&t->ctx) || cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost) != cudaSuccess)
        gpu_die(t, "download");
    return h;
}

/* Bit-exact byte comparison; measured = differing elements of `elem` bytes. */
static void check_bytes(gpu_suite *t, const char *check, const void *got, const void *ref,
                        size_t n, size_t elem)
{
    size_t diff = 0, first = n;
    for (size_t i = 0; i < n / elem; i++)
        if (memcmp((const char *)got + i * elem, (const char *)ref + i * elem, elem)) {
            if (first == n)
                first = i;
            diff++;
        }
    if (diff)
        fprintf(stderr, "%s: %s: %zu of %zu differ, first at %zu\n", t->group, check, diff,
                n / elem, first);
    gpu_report(t, check, (double)diff, 0, diff == 0, " diff");
}

static void rand_packed(gpu_suite *t, uint8_t *p, size_t nbytes)
{
    for (size_t i = 0; i < nbytes; i++)
        p[i] = (uint8_t)(gpu_uniform(t) * 256);
}

static void rand_bf16(gpu_suite *t, uint16_t *x, size_t n, double sd)
{
    float *f = gpu_host(n);
    gpu_fill_normal(t, f, n, sd);
    for (size_t i = 0; i < n; i++)
        x[i] = fq_f32_to_bf16(f[i]);
    free(f);
}

/* ---------- GEMM ---------- */

static const char *path_name(int path)
{
    return path == FQ_W4A4_WGMMA ? "wgmma" : path == FQ_W4A4_DECODE ? "decode" : "prefill";
}

static void test_gemm_i32(gpu_suite *t, int M, int N, int K, int path, int extreme)
{
    size_t bx = (size_t)M * K / 2, bw = (size_t)N * K / 2;
    uint8_t *qx = malloc(bx), *qw = malloc(bw);
    rand_packed(t, qx, bx);
    rand_packed(t, qw, bw);
    if (extreme) /* every code −8: the largest |acc| = 64·K */
        memset(qx, 0x88, bx), memset(qw, 0x88, bw);
    int32_t *ref = malloc(sizeof(int32_t) * M * N);
    if (fq_w4a4_gemm_i32(ref, qx, qw, M, N, K))
        gpu_die(t, "CPU fq_w4a4_gemm_i32");
    uint8_t *d_qx = dev_upload(t, qx, bx), *d_qw = dev_upload(t, qw, bw);
    int32_t *d_acc = dev_poison_bytes(t, sizeof(int32_t) * M * N, 0xA5);
    gpu_call(t, fq_w4a4_gemm_i32_cuda(&t->ctx, d_acc, d_qx, d_qw, M, N, K, path),
             "fq_w4a4_gemm_i32_cuda");
    int32_t *got = host_fetch(t, d_acc, sizeof(int32_t) * M * N);
    char name[96];
    snprintf(name, sizeof name, "gemm i32 %s %dx%dx%d%s", path_name(path),
             M, N, K, extreme ? " all -8" : "");
    check_bytes(t, name, got, ref, sizeof(int32_t) * M * N, sizeof(int32_t));
    free(qx), free(qw), free(ref), free(got);
}

/* One random bf16-output GEMM: host operands, the C reference's output, and the device
 * problem (y poisoned, or the residual buffer itself when residual_mode is 2). */
typedef struct {
    size_t ny;
    uint8_t *qx, *qw;
    float *sx, *sw;
    uint16_t *res, *ref;
    fq_w4a4_problem dev;
} gemm_case;

static void gemm_case_make(gpu_suite *t, gemm_case *g, int M, int N, int K, int kblocks,
                           int residual_mode /* 0 none, 1 separate, 2 y aliases it */)
{
    size_t bx = (size_t)M * K / 2, bw = (size_t)N * K / 2;
    g->ny = (size_t)M * N;
    g->qx = malloc(bx), g->qw = malloc(bw);
    g->sx = gpu_host((size_t)M * kblocks), g->sw = gpu_host(N);
    g->res = malloc(sizeof(uint16_t) * g->ny), g->ref = malloc(sizeof(uint16_t) * g->ny);
    rand_packed(t, g->qx, bx);
    rand_packed(t, g->qw, bw);
    for (int i = 0; i < M * kblocks; i++)
        g->sx[i] = (float)(0.01 + 0.2 * gpu_uniform(t));
    for (int i = 0; i < N; i++)
        g->sw[i] = (float)(0.001 + 0.02 * gpu_uniform(t));
    rand_bf16(t, g->res, g->ny, 3.0);
    if (fq_w4a4_gemm(g->ref, g->qx, g->sx, kblocks, g->qw, g->sw, M, N, K,
                     residual_mode ? g->res : NULL))
        gpu_die(t, "CPU fq_w4a4_gemm");
    uint16_t *d_res = residual_mode ? dev_upload(t, g->res, sizeof(uint16_t) * g->ny) : NULL;
    fq_w4a4_problem d = {residual_mode == 2 ? d_res
                                            : dev_poison_bytes(t, sizeof(uint16_t) * g->ny, 0xFF),
                         dev_upload(t, g->qx, bx), dev_upload(t, g->qw, bw),
                         dev_floats_copy(t, g->sx, (size_t)M * kblocks),
                         dev_floats_copy(t, g->sw, N), N, d_res};
    g->dev = d;
}

/* the device output against the reference, bit for bit; frees the host side */
static void gemm_case_check(gpu_suite *t, gemm_case *g, const char *name)
{
    uint16_t *got = host_fetch(t, g->dev.y, sizeof(uint16_t) * g->ny);
    check_bytes(t, name, got, g->ref, sizeof(uint16_t) * g->ny, sizeof(uint16_t));
    free(g->qx), free(g->qw), free(g->sx), free(g->sw), free(g->res), free(g->ref), free(got);
}

static void test_gemm_bf16(gpu_suite *t, int M, int N, int K, int kblocks, int path,
                           int residual_mode /* 0 none, 1 separate, 2 y aliases it */)
{
    gemm_case g;
    gemm_case_make(t, &g, M, N, K, kblocks, residual_mode);
    gpu_call(t, fq_w4a4_gemm_path_cuda(&t->ctx, g.dev.y, g.dev.qx, g.dev.sx, kblocks, g.dev.qw,
                                       g.dev.sw, M, N, K, g.dev.residual, path),
             "fq_w4a4_gemm_path_cuda");
    char name[96];
    snprintf(name, sizeof name, "gemm bf16 %s %dx%dx%d kb%d%s",
             path_name(path), M, N, K, kblocks,
             residual_mode == 2 ? " +res(in place)" : residual_mode ? " +res" : "");
    gemm_case_check(t, &g, name);
}

/* fq_w4a4_gemm_multi_cuda: np problems with their own codes, scales, N (and a residual on
 * the last), one launch at decode sizes; each output bit-exact with fq_w4a4_gemm */
static void test_gemm_multi(gpu_suite *t, int np, const int *Ns, int M, int K, int kblocks)
{
    gemm_case g[3];
    fq_w4a4_problem pr[3];
    for (int i = 0; i < np; i++) {
        gemm_case_make(t, &g[i], M, Ns[i], K, kblocks, i == np - 1);
        pr[i] = g[i].dev;
    }
    gpu_call(t, fq_w4a4_gemm_multi_cuda(&t->ctx, np, pr, kblocks, M, K), "fq_w4a4_gemm_multi_cuda");
    for (int i = 0; i < np; i++) {
        char name[96];
        snprintf(name, sizeof name, "gemm multi %d/%d M%d N%d K%d kb%d%s", i + 1, np, M, Ns[i],
                 K, kblocks, i == np - 1 ? " +res" : "");
        gemm_case_check(t, &g[i], name);
    }
}

/* Rows of K real codes padded with zero codes to Kp = round_up(K, 64), as the runtime
 * uploads weights and the quantizer writes activations: bf16 outputs bit-exact with the
 * reference on the padded rows, and the reference's int32 sums equal the sums over K. */
static void test_gemm_padded(gpu_suite *t, int M, int N, int K, int path)
{
    const int Kp = fq_w4a4_padded_k(K);
    size_t bx = (size_t)M * Kp / 2, bw = (size_t)N * Kp / 2, ny = (size_t)M * N;
    uint8_t *qx = malloc(bx), *qw = malloc(bw);
    rand_packed(t, qx, bx);
    rand_packed(t, qw, bw);
    for (int r = 0; r < M + N; r++) { /* zero codes K..Kp-1 of every row */
        uint8_t *row = r < M ? qx + (size_t)r * Kp / 2 : qw + (size_t)(r - M) * Kp / 2;
        for (int j = K; j < Kp; j++)
            row[j / 2] &= (uint8_t)(j & 1 ? 0x0F : 0xF0);
    }
    float *sx = gpu_host(M), *sw = gpu_host(N);
    for (int i = 0; i < M; i++)
        sx[i] = (float)(0.01 + 0.2 * gpu_uniform(t));
    for (int i = 0; i < N; i++)
        sw[i] = (float)(0.001 + 0.02 * gpu_uniform(t));
    uint16_t *ref = malloc(sizeof(uint16_t) * ny);
    int32_t *acc = malloc(sizeof(int32_t) * ny);
    if (fq_w4a4_gemm(ref, qx, sx, 1, qw, sw, M, N, Kp, NULL) ||
        fq_w4a4_gemm_i32(acc, qx, qw, M, N, Kp))
        gpu_die(t, "CPU fq_w4a4_gemm (padded)");
    size_t wrong = 0; /* the padding must add nothing: an independent sum over K */
    for (int m = 0; m < M; m++)
        for (int o = 0; o < N; o++) {
            long sum = 0;
            for (int j = 0; j < K; j++) {
                int a = (qx[(size_t)m * Kp / 2 + j / 2] >> (4 * (j & 1))) & 0xF;
                int b = (qw[(size_t)o * Kp / 2 + j / 2] >> (4 * (j & 1))) & 0xF;
                sum += (long)(a >= 8 ? a - 16 : a) * (b >= 8 ? b - 16 : b);
            }
            wrong += sum != acc[(size_t)m * N + o];
        }
    char name[96];
    snprintf(name, sizeof name, "gemm padded ref i32 K%d->%d", K, Kp);
    gpu_report(t, name, (double)wrong, 0, wrong == 0, " diff");
    uint8_t *d_qx = dev_upload(t, qx, bx), *d_qw = dev_upload(t, qw, bw);
    float *d_sx = dev_floats_copy(t, sx, M), *d_sw = dev_floats_copy(t, sw, N);
    uint16_t *d_y = dev_poison_bytes(t, sizeof(uint16_t) * ny, 0xFF);
    gpu_call(t, fq_w4a4_gemm_path_cuda(&t->ctx, d_y, d_qx, d_sx, 1, d_qw, d_sw, M, N, Kp, NULL,
                                       path), "fq_w4a4_gemm_path_cuda (padded)");
    uint16_t *got = host_fetch(t, d_y, sizeof(uint16_t) * ny);
    snprintf(name, sizeof name, "gemm bf16 %s padded %dx%dx%d->%d",
             path_name(path), M, N, K, Kp);
    check_bytes(t, name, got, ref, sizeof(uint16_t) * ny, sizeof(uint16_t));
    free(qx), free(qw), free(sx), free(sw), free(ref), free(acc), free(got);
}

/* ---------- transform + quantize ---------- */

/* The device codes and scales of nc consumers against the C reference's: bit for bit when
 * exact (identity transforms), else at most 1e-3 of the codes off by one (fp32 sums in
 * another order near rounding ties) and scales within scale_tol. */
static void check_quant(gpu_suite *t, const char *what, const fq_quant_dst *dd,
                        const fq_quant_dst *hd, int nc, size_t nq, int rows, int exact,
                        double code_tol, double scale_tol)
{
    for (int p = 0; p < nc; p++) {
        uint8_t *codes = host_fetch(t, dd[p].codes, nq / 2);
        float *scales = host_fetch(t, dd[p].scales, sizeof(float) * rows);
        char name[128];
        snprintf(name, sizeof name, "%s consumer %d", what, p);
        if (exact) {
            check_bytes(t, name, codes, hd[p].codes, nq / 2, 1);
            snprintf(name, sizeof name, "%s scales consumer %d", what, p);
            gpu_check_exact(t, name, scales, hd[p].scales, (size_t)rows);
        } else {
            size_t diff = 0, far = 0;
            for (size_t i = 0; i < nq; i++) {
                int a = (codes[i / 2] >> (4 * (i & 1))) & 0xF, b = (hd[p].codes[i / 2] >> (4 * (i & 1))) & 0xF;
                a = a >= 8 ? a - 16 : a, b = b >= 8 ? b - 16 : b;
                diff += a != b;
                far += abs(a - b) > 1;
            }
            double worst = 0;
            for (int i = 0; i < rows; i++)
                worst = fmax(worst, fabs((double)scales[i] - hd[p].scales[i]) / hd[p].scales[i]);
            double frac = (double)diff / (double)nq;
            if (far)
                fprintf(stderr, "%s: %zu codes differ by more than one\n", name, far);
            gpu_report(t, name, frac, code_tol, frac <= code_tol && far == 0, " codes");
            snprintf(name, sizeof name, "%s scales consumer %d", what, p);
            gpu_report(t, name, worst, scale_tol, worst <= scale_tol, "");
        }
        free(codes), free(scales);
    }
}

/* consumers' host and device destinations (the device ones poisoned) */
static void quant_dsts_make(gpu_suite *t, fq_quant_dst *hd, fq_quant_dst *dd, int nc, size_t nq,
                            int rows)
{
    const float clips[3][2] = {{0.98f, 0.95f}, {0.8f, 1.0f}, {1.0f, 0.6f}};
    for (int p = 0; p < nc; p++) {
        hd[p] = (fq_quant_dst){clips[p][0], clips[p][1], malloc(nq / 2), gpu_host((size_t)rows)};
        dd[p] = (fq_quant_dst){clips[p][0], clips[p][1], dev_poison_bytes(t, nq / 2, 0xA5),
                               dev_floats_poison(t, (size_t)rows)};
    }
}

static void test_transform_quant(gpu_suite *t, int M, int K, int blocks, int n1, int n2,
                                 int kblocks, int use_l, int use_r, int nc)
{
    /* nx real inputs, nq codes (rows padded to Kp) */
    size_t nx = (size_t)M * K, nq = (size_t)M * fq_w4a4_padded_k(K);
    uint16_t *x = malloc(sizeof(uint16_t) * nx);
    rand_bf16(t, x, nx, 1.0);
    for (int m = 0; m < M; m += 5)
        x[(size_t)m * K + (m * 37) % K] = fq_f32_to_bf16(60.0f); /* outlier channels */
    float *L = gpu_host((size_t)blocks * n1 * n1), *R = gpu_host((size_t)blocks * n2 * n2);
    gpu_fill_normal(t, L, (size_t)blocks * n1 * n1, 1.0 / sqrt(n1));
    gpu_fill_normal(t, R, (size_t)blocks * n2 * n2, 1.0 / sqrt(n2));
    /* use_l, use_r = 2: identity factors passed as matrices (the transform exact on every
     * path, so the codes and scales must match to the bit) */
    for (int b = 0; b < blocks; b++) {
        for (int i = 0; i < n1 * n1 && use_l == 2; i++)
            L[(size_t)b * n1 * n1 + i] = i % (n1 + 1) == 0;
        for (int i = 0; i < n2 * n2 && use_r == 2; i++)
            R[(size_t)b * n2 * n2 + i] = i % (n2 + 1) == 0;
    }
    fq_quant_dst hd[3], dd[3];
    quant_dsts_make(t, hd, dd, nc, nq, M * kblocks);
    if (fq_transform_quant(hd, nc, x, M, K, blocks, n1, n2, use_l ? L : NULL, use_r ? R : NULL,
                           kblocks, 4))
        gpu_die(t, "CPU fq_transform_quant");
    uint16_t *d_x = dev_upload(t, x, sizeof(uint16_t) * nx);
    float *d_L = dev_floats_copy(t, L, (size_t)blocks * n1 * n1);
    float *d_R = dev_floats_copy(t, R, (size_t)blocks * n2 * n2);
    gpu_call(t, fq_transform_quant_cuda(&t->ctx, dd, nc, d_x, M, K, blocks, n1, n2,
                                        use_l ? d_L : NULL, use_r ? d_R : NULL, kblocks, 4),
             "fq_transform_quant_cuda");
    int exact = use_l != 1 && use_r != 1;
    char what[96];
    /* prefill sizes with both factors: the cuBLAS transform unless ctx.transform_gemm = 0,
     * in fp32 or on TF32 tensor cores (ctx.transform_tf32: the factors and X̃·R rounded to
     * 10 mantissa bits, so up to 1 % of the codes may sit one step off and the scales
     * 2e-3 away) */
    const int tc = M > 64 && fq_transform_quant_tc_takes(&t->ctx, M, K, blocks, n1, n2, use_l,
                                                         use_r, kblocks);
    const int gemm = !tc && M > 64 && use_l && use_r && t->ctx.transform_gemm;
    const int tf32 = tc || (gemm && t->ctx.transform_tf32);
    const char *path = tc                     ? " tc"
                       : M > 64 && use_l && use_r ? (!gemm ? " per-token" : tf32 ? " tf32" : " sgemm")
                                              : "";
    snprintf(what, sizeof what, "quant %s K%d b%d kb%d%s",
             exact ? (use_l || use_r ? "identity matrices" : "identity")
                   : use_l && use_r ? "L,R" : use_l ? "L only" : "R only",
             K, blocks, kblocks, path);
    check_quant(t, what, dd, hd, nc, nq, M * kblocks, exact, tf32 ? 1e-2 : 1e-3, tf32 ? 2e-3 : 1e-5);
    for (int p = 0; p < nc; p++)
        free(hd[p].codes), free(hd[p].scales);
    free(x), free(L), free(R);
}

/* The fused decode forms: RMSNorm (swiglu = 0; x the residual, blocks = 1) or SwiGLU
 * (swiglu = 1; x = gate beside up) before the transform, against the C reference on the
 * row that rt_rmsnorm_bf16 / rt_swiglu_bf16 would have written (float math as on the GPU;
 * the norm's sum of squares in double, so a value at a bf16 rounding tie may land on the
 * other side: the codes' 1e-3 and the scales' 1e-3 allow for that). */
static void test_fused_quant(gpu_suite *t, int swiglu, int M, int K, int blocks, int n1, int n2,
                             int nc)
{
    const float eps = 1e-5f;
    size_t nx = (size_t)M * K, nq = nx;
    uint16_t *x = malloc(sizeof(uint16_t) * nx), *up = malloc(sizeof(uint16_t) * nx);
    uint16_t *in = malloc(sizeof(uint16_t) * nx);
    rand_bf16(t, x, nx, swiglu ? 2.0 : 1.0);
    rand_bf16(t, up, nx, 1.0);
    for (int m = 0; m < M; m += 3)
        x[(size_t)m * K + (m * 37) % K] = fq_f32_to_bf16(40.0f); /* outlier channels */
    float *gam = gpu_host(K), *L = gpu_host((size_t)blocks * n1 * n1);
    float *R = gpu_host((size_t)blocks * n2 * n2);
    gpu_fill_normal(t, gam, K, 0.5);
    gpu_fill_normal(t, L, (size_t)blocks * n1 * n1, 1.0 / sqrt(n1));
    gpu_fill_normal(t, R, (size_t)blocks * n2 * n2, 1.0 / sqrt(n2));
    for (int m = 0; m < M; m++) {
        const uint16_t *xr = x + (size_t)m * K, *ur = up + (size_t)m * K;
        double ss = 0;
        for (int j = 0; j < K; j++)
            ss += (double)fq_bf16_to_f32(xr[j]) * fq_bf16_to_f32(xr[j]);
        float r = (float)(1.0 / sqrt(ss / K + eps));
        for (int j = 0; j < K; j++) {
            float g = fq_bf16_to_f32(xr[j]);
            in[(size_t)m * K + j] = fq_f32_to_bf16(
                swiglu ? g / (1.0f + expf(-g)) * fq_bf16_to_f32(ur[j]) : gam[j] * (g * r));
        }
    }
    fq_quant_dst hd[3], dd[3];
    quant_dsts_make(t, hd, dd, nc, nq, M * blocks);
    if (fq_transform_quant(hd, nc, in, M, K, blocks, n1, n2, L, R, blocks, 4))
        gpu_die(t, "CPU fq_transform_quant");
    uint16_t *d_x = dev_upload(t, x, sizeof(uint16_t) * nx);
    uint16_t *d_up = dev_upload(t, up, sizeof(uint16_t) * nx);
    float *d_g = dev_floats_copy(t, gam, K), *d_L = dev_floats_copy(t, L, (size_t)blocks * n1 * n1);
    float *d_R = dev_floats_copy(t, R, (size_t)blocks * n2 * n2);
    if (!fq_transform_quant_fuses(&t->ctx, M, K, blocks, n1, n2, blocks))
        gpu_die(t, "fq_transform_quant_fuses refused a decode shape");
    if (swiglu)
        gpu_call(t, fq_swiglu_transform_quant_cuda(&t->ctx, dd, nc, d_x, d_up, M, K, blocks, n1,
                                                   n2, d_L, d_R, blocks, 4),
                 "fq_swiglu_transform_quant_cuda");
    else
        gpu_call(t, fq_norm_transform_quant_cuda(&t->ctx, dd, nc, d_x, d_g, eps, M, K, n1, n2,
                                                 d_L, d_R, 4),
                 "fq_norm_transform_quant_cuda");
    char what[96];
    snprintf(what, sizeof what, "quant fused %s M%d K%d b%d", swiglu ? "swiglu" : "rmsnorm", M,
             K, blocks);
    check_quant(t, what, dd, hd, nc, nq, M * blocks, 0, 1e-3, 1e-3);
    for (int p = 0; p < nc; p++)
        free(hd[p].codes), free(hd[p].scales);
    free(x), free(up), free(in), free(gam), free(L), free(R);
}

/* ---------- KV4 ---------- */

typedef struct {
    fq_kv4_cache h, d;
    size_t code_bytes, sz_bytes;
} kv_pair;

static void kv_pair_init(gpu_suite *t, kv_pair *kp, int batch, int kv_heads, int max_ctx, int dh)
{
    size_t slots = (size_t)batch * kv_heads * max_ctx;
    kp->code_bytes = slots * dh / 2;
    kp->sz_bytes = slots * 2 * sizeof(uint16_t);
    kp->h = (fq_kv4_cache){batch, kv_heads, max_ctx, dh, malloc(kp->code_bytes),
                           malloc(kp->code_bytes), malloc(kp->sz_bytes), malloc(kp->sz_bytes)};
    rand_packed(t, kp->h.k_codes, kp->code_bytes);
    rand_packed(t, kp->h.v_codes, kp->code_bytes);
    rand_packed(t, (uint8_t *)kp->h.k_sz, kp->sz_bytes);
    rand_packed(t, (uint8_t *)kp->h.v_sz, kp->sz_bytes);
    kp->d = kp->h;
    kp->d.k_codes = dev_upload(t, kp->h.k_codes, kp->code_bytes);
    kp->d.v_codes = dev_upload(t, kp->h.v_codes, kp->code_bytes);
    kp->d.k_sz = dev_upload(t, kp->h.k_sz, kp->sz_bytes);
    kp->d.v_sz = dev_upload(t, kp->h.v_sz, kp->sz_bytes);
}

static void kv_pair_free(kv_pair *kp)
{
    free(kp->h.k_codes), free(kp->h.v_codes), free(kp->h.k_sz), free(kp->h.v_sz);
}

/* Writes n_new tokens at pos0 into both caches and compares every byte. */
static void kv_write_both(gpu_suite *t, kv_pair *kp, int n_new, const int *pos0, double sd,
                          int check)
{
    size_t n = (size_t)kp->h.batch * n_new * kp->h.kv_heads * kp->h.dh;
    uint16_t *k = malloc(sizeof(uint16_t) * n), *v = malloc(sizeof(uint16_t) * n);
    rand_bf16(t, k, n, sd);
    rand_bf16(t, v, n, sd * 0.5);
    for (int j = 0; j < kp->h.dh; j++)
        v[j] = 0; /* an all-zero head vector */
    if (fq_kv4_write(&kp->h, k, v, n_new, pos0, 0.97f, 0.9f, 1.0f, 0.85f, 4))
        gpu_die(t, "CPU fq_kv4_write");
    uint16_t *d_k = dev_upload(t, k, sizeof(uint16_t) * n), *d_v = dev_upload(t, v, sizeof(uint16_t) * n);
    gpu_call(t, fq_kv4_write_cuda(&t->ctx, &kp->d, d_k, d_v, n_new, pos0, 0.97f, 0.9f, 1.0f,
                                  0.85f, 4), "fq_kv4_write_cuda");
    if (check) {
        char name[96];
        const char *what[4] = {"k codes", "v codes", "k (scale,zero)", "v (scale,zero)"};
        void *dp[4] = {kp->d.k_codes, kp->d.v_codes, kp->d.k_sz, kp->d.v_sz};
        void *hp[4] = {kp->h.k_codes, kp->h.v_codes, kp->h.k_sz, kp->h.v_sz};
        for (int i = 0; i < 4; i++) {
            size_t bytes = i < 2 ? kp->code_bytes : kp->sz_bytes;
            void *got = host_fetch(t, dp[i], bytes);
            snprintf(name, sizeof name, "kv4 write %s (whole cache)", what[i]);
            check_bytes(t, name, got, hp[i], bytes, 1);
            free(got);
        }
    }
    free(k), free(v);
}

static void test_kv4_write(gpu_suite *t)
{
    kv_pair kp;
    kv_pair_init(t, &kp, 2, 8, 64, 128);
    int pos0[2] = {3, 40};
    kv_write_both(t, &kp, 5, pos0, 2.0, 1);
    kv_pair_free(&kp);
}

/* kernel: 1 the tensor-core attention (where it applies: dh 64/128), 0 the CUDA-core one */
static void test_attention_on(gpu_suite *t, int batch, int kv_heads, int heads, int dh,
                              const int *ctx, int n_q, int kernel)
{
    t->ctx.attn_tc = kernel;
    const char *kn = kernel && (dh == 64 || dh == 128) ? "tc" : "cc";
    int max_ctx = 0;
    for (int b = 0; b < batch; b++)
        max_ctx = ctx[b] > max_ctx ? ctx[b] : max_ctx;
    kv_pair kp;
    kv_pair_init(t, &kp, batch, kv_heads, max_ctx, dh);
    int zero[256] = {0};
    kv_write_both(t, &kp, max_ctx, zero, 1.0, 0);
    size_t nq = (size_t)batch * n_q * heads * dh;
    uint16_t *q = malloc(sizeof(uint16_t) * nq), *ref = malloc(sizeof(uint16_t) * nq);
    rand_bf16(t, q, nq, 1.0);
    if (fq_attention_kv4(ref, q, &kp.h, n_q, ctx, heads))
        gpu_die(t, "CPU fq_attention_kv4");
    uint16_t *d_q = dev_upload(t, q, sizeof(uint16_t) * nq);
    uint16_t *d_out = dev_poison_bytes(t, sizeof(uint16_t) * nq, 0xFF);
    gpu_call(t, fq_attention_kv4_cuda(&t->ctx, d_out, d_q, &kp.d, n_q, ctx, heads),
             "fq_attention_kv4_cuda");
    uint16_t *got = host_fetch(t, d_out, sizeof(uint16_t) * nq);
    float *gf = gpu_host(nq), *rf = gpu_host(nq);
    for (size_t i = 0; i < nq; i++)
        gf[i] = fq_bf16_to_f32(got[i]), rf[i] = fq_bf16_to_f32(ref[i]);
    char name[96];
    snprintf(name, sizeof name, "attn kv4 %s %s b%d h%d/%d dh%d ctx%d nq%d", kn,
             n_q == 1 ? "decode" : "prefill", batch, heads, kv_heads, dh, ctx[0], n_q);
    gpu_check_rel(t, name, gf, rf, nq, 5e-3);

    /* the BF16-KV instance of the same kernel (the BF16 runtime's attention) on the cache
     * dequantized to bf16, against the same reference: the two differ only by the bf16
     * rounding of scale·(code − zero) */
    const size_t vecs = (size_t)batch * kv_heads * max_ctx, nkv = vecs * dh;
    uint16_t *k16 = malloc(sizeof(uint16_t) * nkv), *v16 = malloc(sizeof(uint16_t) * nkv);
    for (size_t vi = 0; vi < vecs; vi++)
        for (int j = 0; j < dh; j++) {
            const uint8_t *kc = kp.h.k_codes + vi * dh / 2, *vc = kp.h.v_codes + vi * dh / 2;
            int ck = (kc[j / 2] >> (4 * (j & 1))) & 0xF, cv = (vc[j / 2] >> (4 * (j & 1))) & 0xF;
            float ks = fq_f16_to_f32(kp.h.k_sz[2 * vi]), kz = fq_f16_to_f32(kp.h.k_sz[2 * vi + 1]);
            float vs = fq_f16_to_f32(kp.h.v_sz[2 * vi]), vz = fq_f16_to_f32(kp.h.v_sz[2 * vi + 1]);
            k16[vi * dh + j] = fq_f32_to_bf16(ks * ((float)ck - kz));
            v16[vi * dh + j] = fq_f32_to_bf16(vs * ((float)cv - vz));
        }
    uint16_t *d_k = dev_upload(t, k16, sizeof(uint16_t) * nkv);
    uint16_t *d_v = dev_upload(t, v16, sizeof(uint16_t) * nkv);
    uint16_t *d_o16 = dev_poison_bytes(t, sizeof(uint16_t) * nq, 0xFF);
    gpu_call(t, fq_attention_bf16kv_cuda(&t->ctx, d_o16, d_q, d_k, d_v, batch, kv_heads, max_ctx,
                                         dh, n_q, ctx, heads),
             "fq_attention_bf16kv_cuda");
    uint16_t *got16 = host_fetch(t, d_o16, sizeof(uint16_t) * nq);
    for (size_t i = 0; i < nq; i++)
        gf[i] = fq_bf16_to_f32(got16[i]);
    snprintf(name, sizeof name, "attn bf16-kv %s %s b%d h%d/%d dh%d ctx%d nq%d", kn,
             n_q == 1 ? "decode" : "prefill", batch, heads, kv_heads, dh, ctx[0], n_q);
    gpu_check_rel(t, name, gf, rf, nq, 1e-2);
    free(k16), free(v16), free(got16);
    free(q), free(ref), free(got), free(gf), free(rf);
    kv_pair_free(&kp);
    t->ctx.attn_tc = 1;
}

/* both kernels where the tensor-core one applies, the CUDA-core one alone elsewhere */
static void test_attention(gpu_suite *t, int batch, int kv_heads, int heads, int dh,
                           const int *ctx, int n_q)
{
    test_attention_on(t, batch, kv_heads, heads, dh, ctx, n_q, 1);
    if (dh == 64 || dh == 128)
        test_attention_on(t, batch, kv_heads, heads, dh, ctx, n_q, 0);
}

/* ---------- refused shapes ---------- */

static void expect_refused(gpu_suite *t, const char *check, int rc, const char *needle)
{
    int ok = rc == FQ_ERR && strstr(fq_errmsg(), needle) != NULL;
    if (!ok)
        fprintf(stderr, "%s: rc %d, message \"%s\" (expected \"%s\")\n", check, rc, fq_errmsg(),
                needle);
    gpu_report(t, check, ok ? 0 : 1, 0, ok, " wrong");
}

static void test_refused(gpu_suite *t)
{
    uint8_t *qx = dev_bytes(t, 4096), *qw = dev_bytes(t, 4096);
    float *s = dev_floats(t, 64);
    uint16_t *y = dev_bytes(t, 4096);
    int32_t *acc = dev_bytes(t, 4096);
    expect_refused(t, "refuse gemm K % 64", fq_w4a4_gemm_cuda(&t->ctx, y, qx, s, 1, qw, s, 2, 2, 96, NULL), "K = 96");
    expect_refused(t, "refuse gemm M = 0", fq_w4a4_gemm_cuda(&t->ctx, y, qx, s, 1, qw, s, 0, 2, 64, NULL), "M = 0");
    expect_refused(t, "refuse gemm kblocks", fq_w4a4_gemm_cuda(&t->ctx, y, qx, s, 3, qw, s, 2, 2, 128, NULL), "kblocks = 3");
    expect_refused(t, "refuse gemm_i32 K % 64", fq_w4a4_gemm_i32_cuda(&t->ctx, acc, qx, qw, 1, 1, 65, 0), "K = 65");
    expect_refused(t, "refuse decode M > 64", fq_w4a4_gemm_i32_cuda(&t->ctx, acc, qx, qw, 65, 1, 64, FQ_W4A4_DECODE), "M = 65");
    expect_refused(t, "refuse decode kblocks x tiles", fq_w4a4_gemm_path_cuda(&t->ctx, y, qx, s, 32, qw, s, 40, 1, 2048, NULL, FQ_W4A4_DECODE), "kblocks = 32");
    expect_refused(t, "refuse decode config", fq_w4a4_decode_config(3, 8), "loads 3");
    expect_refused(t, "refuse kblocks config", fq_w4a4_kblocks_config(64), "tile 64");
    expect_refused(t, "refuse tile config", fq_w4a4_tile_config(192, 5), "tile 192");
    fq_w4a4_problem pr4[1] = {{y, qx, qw, s, s, 1, NULL}};
    expect_refused(t, "refuse gemm multi 4 problems", fq_w4a4_gemm_multi_cuda(&t->ctx, 4, pr4, 1, 1, 64), "4 problems");
    expect_refused(t, "refuse unaligned qx", fq_w4a4_gemm_cuda(&t->ctx, y, qx + 8, s, 1, qw, s, 1, 1, 64, NULL), "aligned");
    fq_quant_dst d = {0.9f, 0.9f, qx, s};
    expect_refused(t, "refuse fused norm quant M = 65",
                   fq_norm_transform_quant_cuda(&t->ctx, &d, 1, y, s, 1e-5f, 65, 64, 8, 8, NULL,
                                                NULL, 4), "M = 65");
    expect_refused(t, "refuse fused swiglu quant no up",
                   fq_swiglu_transform_quant_cuda(&t->ctx, &d, 1, y, NULL, 1, 64, 1, 8, 8, NULL,
                                                  NULL, 1, 4), "up");
    expect_refused(t, "refuse quant M = 0", fq_transform_quant_cuda(&t->ctx, &d, 1, y, 0, 64, 1, 8, 8, NULL, NULL, 1, 4), "M = 0");
    expect_refused(t, "refuse quant padded K, kblocks 2", fq_transform_quant_cuda(&t->ctx, &d, 1, y, 1, 172, 2, 2, 43, NULL, NULL, 2, 4), "kblocks = 2 with K = 172");
    fq_kv4_cache c = {1, 1, 16, 96, qx, qw, y, y};
    int ctx = 4;
    expect_refused(t, "refuse attn dh 96", fq_attention_kv4_cuda(&t->ctx, y, y, &c, 1, &ctx, 1), "dh = 96");
    c.dh = 64;
    expect_refused(t, "refuse attn heads/kv 33", fq_attention_kv4_cuda(&t->ctx, y, y, &c, 1, &ctx, 33), "heads/kv_heads = 33");
    ctx = 17;
    expect_refused(t, "refuse attn ctx > max", fq_attention_kv4_cuda(&t->ctx, y, y, &c, 1, &ctx, 1), "ctx_len[0] = 17");
    int pos = 15;
    expect_refused(t, "refuse kv write past end", fq_kv4_write_cuda(&t->ctx, &c, y, y, 2, &pos, 1, 1, 1, 1, 4), "pos0[0] = 15");
}

/* The wgmma kernel on every case it must get bit-exact: M, N and K tails (K = 1088: half a
 * last 128-k tile; K = 64: a single half tile), 128- and 256-token tiles (2048 × 2048 and
 * 1100 × 2304 take 256 on 132 SMs), M = 1, every code −8, per-block scales with blocks
 * ending mid-tile, the residual beside y and in place, padded rows. */
static void test_wgmma(gpu_suite *t)
{
    test_gemm_i32(t, 293, 300, 1088, FQ_W4A4_WGMMA, 0);
    test_gemm_i32(t, 2048, 2048, 128, FQ_W4A4_WGMMA, 0);
    test_gemm_i32(t, 40, 24, 28672, FQ_W4A4_WGMMA, 1);
    test_gemm_i32(t, 1, 520, 4096, FQ_W4A4_WGMMA, 0);
    test_gemm_i32(t, 130, 260, 64, FQ_W4A4_WGMMA, 0);
    test_gemm_i32(t, 700, 1000, 8192, FQ_W4A4_WGMMA, 0);
    test_gemm_bf16(t, 1100, 2304, 256, 1, FQ_W4A4_WGMMA, 1);
    test_gemm_bf16(t, 200, 136, 1024, 1, FQ_W4A4_WGMMA, 0);
    test_gemm_bf16(t, 130, 96, 1152, 1, FQ_W4A4_WGMMA, 2);
    test_gemm_bf16(t, 150, 72, 1024, 4, FQ_W4A4_WGMMA, 1);
    test_gemm_bf16(t, 130, 96, 1152, 2, FQ_W4A4_WGMMA, 2);
    test_gemm_bf16(t, 300, 400, 4096, 8, FQ_W4A4_WGMMA, 0);
    test_gemm_bf16(t, 300, 600, 28672, 8, FQ_W4A4_WGMMA, 1);
    test_gemm_bf16(t, 130, 96, 1152, 18, FQ_W4A4_WGMMA, 0); /* scales past the staged 16 */
    test_gemm_bf16(t, 2048, 4096, 512, 4, FQ_W4A4_WGMMA, 2);
    /* kblocks > 1 at 256-token tiles (the fp32 sums through L2): 2048 × 4096 takes them */
    gpu_call(t, fq_w4a4_kblocks_config(256), "fq_w4a4_kblocks_config");
    test_gemm_bf16(t, 2048, 4096, 256, 2, FQ_W4A4_WGMMA, 1);
    test_gemm_bf16(t, 1100, 2304, 1152, 18, FQ_W4A4_WGMMA, 0);
    gpu_call(t, fq_w4a4_kblocks_config(128), "fq_w4a4_kblocks_config");
    /* blocks of whole tiles flushed at the k-step instead (MODE 1 on MODE 3's shapes) */
    gpu_call(t, fq_w4a4_kblocks_aligned_config(0), "fq_w4a4_kblocks_aligned_config");
    test_gemm_bf16(t, 1024, 640, 2048, 4, FQ_W4A4_WGMMA, 1);
    gpu_call(t, fq_w4a4_kblocks_aligned_config(1), "fq_w4a4_kblocks_aligned_config");
    test_gemm_bf16(t, 1000, 600, 2048, 4, FQ_W4A4_WGMMA, 2);
    test_gemm_padded(t, 300, 130, 172, FQ_W4A4_WGMMA);
    /* the forced token tiles of fq_w4a4_tile_config, and 5 stages at 128 tokens (K = 2176:
     * 17 k-tiles wrap the stage ring of 8 twice, of 5 three times; a half last tile) */
    gpu_call(t, fq_w4a4_tile_config(128, 8), "fq_w4a4_tile_config");
    test_gemm_i32(t, 293, 300, 2176, FQ_W4A4_WGMMA, 0);
    gpu_call(t, fq_w4a4_tile_config(128, 5), "fq_w4a4_tile_config");
    test_gemm_i32(t, 293, 300, 2176, FQ_W4A4_WGMMA, 0);
    test_gemm_bf16(t, 700, 1000, 8192, 1, FQ_W4A4_WGMMA, 1);
    test_gemm_bf16(t, 1000, 600, 2048, 4, FQ_W4A4_WGMMA, 2);
    test_gemm_bf16(t, 300, 600, 28672, 8, FQ_W4A4_WGMMA, 0);
    gpu_call(t, fq_w4a4_tile_config(256, 8), "fq_w4a4_tile_config");
    test_gemm_i32(t, 293, 300, 2176, FQ_W4A4_WGMMA, 1);
    test_gemm_bf16(t, 130, 96, 1152, 1, FQ_W4A4_WGMMA, 2);
    gpu_call(t, fq_w4a4_tile_config(0, 8), "fq_w4a4_tile_config");
}

int main(void)
{
    gpu_suite t;
    gpu_suite_begin(&t, "w4a4", 7);
    test_gemm_i32(&t, 293, 300, 1088, FQ_W4A4_PREFILL, 0);
    test_gemm_i32(&t, 128, 256, 4096, FQ_W4A4_PREFILL, 0);
    test_gemm_i32(&t, 40, 24, 28672, FQ_W4A4_PREFILL, 1);
    test_wgmma(&t);
    test_gemm_i32(&t, 5, 77, 576, FQ_W4A4_DECODE, 0);
    test_gemm_i32(&t, 16, 64, 28672, FQ_W4A4_DECODE, 1);
    test_gemm_i32(&t, 1, 130, 8192, FQ_W4A4_DECODE, 0);
    test_gemm_bf16(&t, 200, 136, 1024, 1, FQ_W4A4_PREFILL, 0);
    test_gemm_bf16(&t, 150, 72, 1024, 4, FQ_W4A4_PREFILL, 1);
    test_gemm_bf16(&t, 130, 96, 1152, 2, FQ_W4A4_PREFILL, 2); /* blocks of 576 end mid-tile */
    test_gemm_bf16(&t, 7, 100, 576, 3, FQ_W4A4_DECODE, 1);
    test_gemm_bf16(&t, 16, 48, 2048, 1, FQ_W4A4_DECODE, 2);
    test_gemm_bf16(&t, 1, 33, 4096, 2, FQ_W4A4_DECODE, 0);
    /* two and four 16-token tiles (M 17..32, 33..64); M = 64 at TP 4's o_proj K-blocks */
    test_gemm_i32(&t, 17, 80, 1024, FQ_W4A4_DECODE, 0);
    test_gemm_i32(&t, 64, 48, 28672, FQ_W4A4_DECODE, 1);
    test_gemm_bf16(&t, 31, 70, 2048, 4, FQ_W4A4_DECODE, 1);
    test_gemm_bf16(&t, 45, 64, 4096, 8, FQ_W4A4_DECODE, 2);
    test_gemm_bf16(&t, 64, 100, 576, 3, FQ_W4A4_DECODE, 0);
    /* grids of more than 4 CTAs per SM take the 8-warp shapes of the 2- and 4-tile kernels */
    test_gemm_bf16(&t, 20, 16400, 256, 2, FQ_W4A4_DECODE, 1);
    test_gemm_i32(&t, 50, 16400, 128, FQ_W4A4_DECODE, 1);
    /* every one-tile shape the benchmarks may pick (loads 2/4 × 8/16 warps), 8- and 16-byte */
    for (int loads = 2; loads <= 4; loads += 2)
        for (int warps = 8; warps <= 16; warps += 8) {
            gpu_call(&t, fq_w4a4_decode_config(loads, warps), "fq_w4a4_decode_config");
            test_gemm_bf16(&t, 9, 40, 8192, 2, FQ_W4A4_DECODE, 1);
            test_gemm_bf16(&t, 3, 24, 576, 3, FQ_W4A4_DECODE, 0);
            test_gemm_i32(&t, 16, 64, 28672, FQ_W4A4_DECODE, 1);
        }
    gpu_call(&t, fq_w4a4_decode_config(0, 0), "fq_w4a4_decode_config");
    /* q/k/v and gate/up in one launch: one tile, four tiles, and the prefill fallback */
    test_gemm_multi(&t, 3, (int[]){96, 40, 40}, 1, 2048, 1);
    test_gemm_multi(&t, 2, (int[]){130, 64}, 40, 1024, 2);
    test_gemm_multi(&t, 3, (int[]){64, 16, 16}, 100, 576, 1);
    test_transform_quant(&t, 37, 4096, 1, 64, 64, 1, 0, 0, 3);
    test_transform_quant(&t, 19, 2048, 2, 32, 32, 4, 0, 0, 1);
    test_transform_quant(&t, 64, 4096, 1, 64, 64, 1, 1, 1, 3);
    test_transform_quant(&t, 16, 2048, 2, 32, 32, 2, 1, 0, 1);
    test_transform_quant(&t, 8, 28672, 1, 128, 224, 1, 1, 1, 1);
    /* the decode step's 70B shapes (Nsight Compute, session 7): attention/MLP input, o's
     * per-head blocks (L only), down at TP 1 with 8 TP blocks and with one; M = 40 has
     * enough CTAs for 16-column blocks */
    test_transform_quant(&t, 1, 8192, 1, 64, 128, 1, 1, 1, 3);
    test_transform_quant(&t, 1, 8192, 8, 8, 128, 8, 1, 0, 1);
    test_transform_quant(&t, 2, 28672, 8, 56, 64, 8, 1, 1, 1);
    test_transform_quant(&t, 1, 28672, 1, 128, 224, 1, 1, 1, 1);
    test_transform_quant(&t, 40, 8192, 1, 64, 128, 1, 1, 1, 2);
    /* the decode step's fused forms: the norm into the q/k/v and gate/up transforms, SwiGLU
     * into down's (test_refused: a prefill size the fused entry points refuse) */
    test_fused_quant(&t, 0, 1, 8192, 1, 64, 128, 3);
    test_fused_quant(&t, 0, 8, 4096, 1, 64, 64, 2);
    test_fused_quant(&t, 1, 1, 28672, 8, 56, 64, 1);
    test_fused_quant(&t, 1, 5, 4096, 2, 32, 64, 1);
    /* M > 64 takes the one-CTA-per-token kernel, M <= 64 the column-split one; n1 % 8 != 0
     * and n2 % 4 != 0 take the unblocked loops; kblocks/blocks not dividing n1 the fused one */
    test_transform_quant(&t, 100, 4096, 1, 64, 64, 1, 1, 1, 3);
    test_transform_quant(&t, 70, 2048, 2, 32, 32, 4, 0, 0, 2);
    test_transform_quant(&t, 80, 1024, 1, 32, 32, 1, 1, 0, 1);
    test_transform_quant(&t, 5, 192, 1, 12, 16, 1, 1, 1, 1);
    test_transform_quant(&t, 90, 192, 1, 12, 16, 1, 1, 1, 1);
    test_transform_quant(&t, 3, 192, 1, 32, 6, 1, 1, 1, 1);
    test_transform_quant(&t, 66, 192, 1, 32, 6, 1, 1, 1, 1);
    test_transform_quant(&t, 9, 768, 1, 6, 128, 4, 1, 1, 1); /* kblocks 4 ∤ n1 = 6 */
    /* the cuBLAS prefill transform: TP blocks with per-block scales, and a token count
     * past one chunk of 2^25 values (down's T_d 128 × 224); then prefill shapes on the
     * one-CTA-per-token kernel it replaced */
    test_transform_quant(&t, 300, 4096, 2, 32, 64, 4, 1, 1, 2);
    test_transform_quant(&t, 1200, 28672, 1, 128, 224, 1, 1, 1, 1);
    t.ctx.transform_gemm = 0;
    test_transform_quant(&t, 100, 4096, 1, 64, 64, 1, 1, 1, 3);
    test_transform_quant(&t, 300, 4096, 2, 32, 64, 4, 1, 1, 2);
    test_transform_quant(&t, 130, 1024, 1, 32, 32, 1, 1, 1, 1);
    t.ctx.transform_gemm = 1;
    /* the runtime's default: the cuBLAS transform on TF32 tensor cores */
    t.ctx.transform_tf32 = 1;
    test_transform_quant(&t, 100, 4096, 1, 64, 64, 1, 1, 1, 3);
    test_transform_quant(&t, 300, 4096, 2, 32, 64, 4, 1, 1, 2);
    test_transform_quant(&t, 1200, 28672, 1, 128, 224, 1, 1, 1, 1);
    test_transform_quant(&t, 2048, 8192, 1, 64, 128, 1, 1, 1, 3);
    t.ctx.transform_tf32 = 0;
    /* the fused tensor-core transform (ctx.transform_tc): the attention/MLP input, down's
     * tp-8 blocks, o's M_o alone (8 heads × 128), R alone, TP blocks of 32 × 64, n1 not a
     * multiple of 8, n2 of 16 (8-byte loads: 5120's 64 × 80; 16m's 16 × 24 is not taken),
     * down's tp-2 block 112 × 128 (14 n tiles; added after the session's last device call),
     * 128 × 128 (refused: its staging for three consumers passes the shared memory), a token
     * count that leaves CTAs without a second item; the path each ran is in the row's name */
    t.ctx.transform_tc = 1;
    test_transform_quant(&t, 300, 8192, 1, 64, 128, 1, 1, 1, 3);
    test_transform_quant(&t, 200, 28672, 8, 56, 64, 8, 1, 1, 1);
    test_transform_quant(&t, 150, 8192, 8, 8, 128, 8, 1, 0, 1);
    test_transform_quant(&t, 90, 4096, 1, 32, 128, 1, 0, 1, 2);
    test_transform_quant(&t, 130, 4096, 2, 32, 64, 2, 1, 1, 2);
    test_transform_quant(&t, 70, 1920, 1, 30, 64, 1, 1, 1, 1);
    test_transform_quant(&t, 100, 5120, 1, 64, 80, 1, 1, 1, 2);
    test_transform_quant(&t, 77, 384, 1, 16, 24, 1, 1, 1, 3);
    test_transform_quant(&t, 120, 14336, 1, 112, 128, 1, 1, 1, 1);
    test_transform_quant(&t, 81, 16384, 1, 128, 128, 1, 1, 1, 1);
    test_transform_quant(&t, 65, 28672, 8, 56, 64, 8, 0, 1, 1);
    /* identity factors: the kernel's quantization (code4_recip) to the bit */
    test_transform_quant(&t, 400, 8192, 1, 64, 128, 1, 2, 2, 3);
    test_transform_quant(&t, 300, 28672, 8, 56, 64, 8, 2, 2, 1);
    test_transform_quant(&t, 200, 8192, 8, 8, 128, 8, 2, 0, 1);
    t.ctx.transform_tc = 0;
    test_transform_quant(&t, 2, 320, 1, 5, 64, 1, 1, 1, 1);  /* n1² odd: L staged by floats */
    /* padded rows: stories260K's down input (f = 172, T_d 2 × 86), both kernels' M ranges,
     * identity (bit-exact) and random L, R; an odd K; 16m's T_d 32 × 32 on K = 1024 */
    test_transform_quant(&t, 37, 172, 1, 2, 86, 1, 0, 0, 3);
    test_transform_quant(&t, 12, 172, 1, 2, 86, 1, 1, 1, 1);
    test_transform_quant(&t, 100, 172, 1, 2, 86, 1, 1, 1, 2);
    test_transform_quant(&t, 70, 172, 1, 2, 86, 1, 1, 0, 1);
    test_transform_quant(&t, 60, 35, 1, 5, 7, 1, 1, 1, 1);
    test_transform_quant(&t, 3, 1024, 1, 32, 32, 1, 1, 1, 2);
    test_transform_quant(&t, 130, 1024, 1, 32, 32, 1, 1, 1, 1);
    test_gemm_padded(&t, 300, 130, 172, FQ_W4A4_PREFILL);
    test_gemm_padded(&t, 5, 64, 172, FQ_W4A4_DECODE);
    test_gemm_padded(&t, 1, 40, 35, FQ_W4A4_DECODE);
    test_gemm_padded(&t, 20, 33, 35, FQ_W4A4_PREFILL);
    test_kv4_write(&t);
    test_attention(&t, 2, 2, 16, 128, (int[]){1000, 777}, 1);
    test_attention(&t, 1, 8, 64, 128, (int[]){8192}, 1);
    test_attention(&t, 1, 8, 64, 128, (int[]){2048}, 1); /* few CTAs: 2 heads per CTA */
    test_attention(&t, 1, 2, 8, 64, (int[]){100}, 37);
    test_attention(&t, 2, 4, 4, 128, (int[]){64, 64}, 64);
    /* GQA groups beyond 1, 2, 4, 8, 16: 16m's 6/2 (group 3, dh 64), 6, 24, 32 */
    test_attention(&t, 2, 2, 6, 64, (int[]){600, 333}, 1);
    test_attention(&t, 1, 2, 6, 64, (int[]){128}, 40);
    test_attention(&t, 1, 2, 12, 64, (int[]){300}, 1);
    test_attention(&t, 1, 1, 6, 32, (int[]){90}, 90);
    test_attention(&t, 1, 1, 24, 64, (int[]){513}, 1);
    test_attention(&t, 1, 2, 64, 128, (int[]){200}, 3);
    /* the tensor-core kernel's prefill tiles: 4 row tiles per CTA, causal rows across
     * tiles, sequences of different lengths, a partial last tile, GQA 8 and 4 */
    test_attention(&t, 1, 8, 64, 128, (int[]){300}, 300);
    test_attention(&t, 2, 4, 16, 64, (int[]){200, 150}, 64);
    test_attention(&t, 1, 2, 16, 128, (int[]){1500}, 37);
    test_attention(&t, 4, 8, 64, 128, (int[]){4100, 3000, 17, 2048}, 1); /* decode b4, splits */
    test_refused(&t);
    dev_free_all();
    return gpu_suite_end(&t);
}
