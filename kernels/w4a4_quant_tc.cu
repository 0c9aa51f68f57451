/* w4a4_quant_tc.cu — the prefill transform + quantize fused on TF32 tensor cores
 * (ctx->transform_tc): one read of the bf16 activations, one write of the codes and scales.
 *
 * Why. The cuBLAS path (kernels/w4a4_quant.cu transform_quant_gemm) moves ~26 bytes per
 * element through fp32 copies between its passes and launches tiny batched GEMMs for TP
 * blocks: on an H200 it took 1.16 ms for 16384 tokens × 8192 and 5.5 ms for down's 8 TP
 * blocks of 56 × 64 over 28672 (bench_w4a4, session 13), against a floor of ~0.1 ms and
 * ~0.3 ms (bytes and TF32 FLOPs). This kernel: 0.45 ms and 1.2 ms (2.2× geo-mean over
 * bench_w4a4's 48 prefill rows). It is issue-bound in the quantization (per element: the
 * extrema, the code, the packing), not in the MMAs: what moved it was interleaving the
 * MMAs of different n tiles (loops without a runtime bound), the codes through the
 * reciprocal, and item groups that do not wait for each other (bench/NOTES.md, session 13);
 * then the code rule and the TF32 rounding of Z in full-rate adds and integer ops instead of
 * conversions, and the codes packed by byte permutes (9 % over the 48 rows, session 14).
 *
 * The math. Per token and transform block b, X = the block viewed [n1, n2] (ALGORITHM §3.1:
 * Y = Lᵀ·X·R). The kernel computes transposes, each a product on mma.sync m16n8k8 TF32
 * with fp32 accumulation:
 *   Zᵀ = Rᵀ·Xᵀ   [n2, n1]  (A = Rᵀ: staged fragments; B = Xᵀ: the bf16 staging copy of x,
 *                          exact in TF32)
 *   Yᵀ = Zᵀ·L    [n2, n1]  (A = Zᵀ: the first product's accumulators; B = L: staged)
 * A warp owns 16 rows j of both (its chunk c), all n1 columns. The accumulator fragment of
 * the first product holds columns (2t, 2t+1) of each 8-wide slab, where the A fragment of
 * the second wants (t, t+4); since a product does not see the order of its k, slot s of
 * every 8-slab of the second product's k is mapped to 2s (s < 4) or 2(s − 4) + 1 (s ≥ 4),
 * L's fragments are staged in that order, and Z never leaves the registers. The first
 * product permutes its k the same way over slabs of 4·KW: thread t's B values of KW/2
 * consecutive k-steps are then KW adjacent bf16 of one X row, one vector load.
 * R = NULL (M_o alone) fills Zᵀ from the staged X; L = NULL takes Yᵀ = Zᵀ.
 *
 * Quantization. The extrema of each (token, block) over its warps through shared memory
 * (one scale per transform block: kblocks == blocks), then every consumer's codes from the
 * registers: the two j of a code byte sit in lanes g and g ^ 1 (one shuffle), bytes go to a
 * shared row that the CTA stores with 16-byte writes.
 *
 * Accuracy: as the cuBLAS path on TF32 (ctx->transform_tf32): the factors and Z rounded to
 * 10 mantissa bits, ~5e-4 of the codes one step off a float64 reference (tests/gpu).
 *
 * Shapes: K % 64 == 0, kblocks == blocks, n2 % 8 == 0 (≤ 256), n1 ≤ 128 (padded to 8·NT
 * with NT an instantiated tile count), n2/16 (rounded up) warps per item within the
 * kernel's warps (16, or 8 at NT > 8), and the staging within the shared memory of one SM;
 * everything else takes the cuBLAS path (e.g. down's T_d 128 × 224 at TP 1: 14 warps of
 * 16 tiles would need twice the registers of an SM).
 */
#include <algorithm>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/cuda_common.cuh"
#include "kernels/w4a4_gemm.cuh"
#include "kernels/w4a4_quant.cuh"

#define FILE_ "kernels/w4a4_quant_tc.cu"

namespace {

constexpr size_t TCQ_MAX_SMEM = 227 * 1024;

/* the launch's geometry, the same on host and device */
struct tcq_shape {
    int n1p, n2p;   /* n1 rounded up to 8 (the n tiles), n2 to 16 (the warps' chunks) */
    int nt, nch;    /* n tiles (n1p / 8), warps per item (n2p / 16) */
    int kw;         /* bf16 per B load of the first product: 8, 4 or 2 */
    int ipc;        /* items (tokens of one block) per CTA at once */
    int xs;         /* the staged X's row stride in bf16 (rows 8·kw bytes past 128-byte lines:
                     * the vector loads of a warp's quarter hit distinct banks) */
    int cbytes;     /* one item's code bytes (n1·n2 / 2, rounded up to 16) */
    size_t off_l, off_x, off_c, off_red, bytes; /* shared memory: R frags at 0, then these */
};

int tcq_warps_max(int nt) { return nt > 8 ? 8 : 16; } /* the kernels' launch bounds / 32 */

/* the n tiles of an instantiated kernel for n1 (the loops over them have no runtime bound,
 * so the MMAs of different tiles interleave): 1, 2, 4, 8, 16, and 7, 14 for the 70B TP
 * blocks (56, 112) with 16-byte loads; 0 when n1 > 128 */
int tcq_tiles(int n1, int kw)
{
    const int need = (n1 + 7) / 8;
    if (kw == 8 && (need == 7 || need == 14))
        return need;
    for (int nt = 1; nt <= 16; nt *= 2)
        if (nt >= need)
            return nt;
    return 0;
}

tcq_shape tcq_make(int n1, int n2, int have_l, int have_r, int nc, int ipc)
{
    tcq_shape s{};
    s.kw = n2 % 32 == 0 ? 8 : n2 % 16 == 0 ? 4 : 2;
    s.nt = tcq_tiles(n1, s.kw), s.n1p = 8 * s.nt;
    s.n2p = (n2 + 15) / 16 * 16, s.nch = s.n2p / 16;
    s.ipc = ipc;
    int rb = (2 * n2 + 127) / 128 * 128 + 8 * s.kw; /* row bytes ≡ 8·kw (mod 128) */
    s.xs = rb / 2;
    s.cbytes = (n1 * n2 / 2 + 15) / 16 * 16;
    const size_t r_bytes = have_r ? (size_t)s.nch * (n2 / 8) * 32 * 16 : 0;
    const size_t l_bytes = have_l ? (size_t)s.nt * s.nt * 32 * 8 : 0;
    s.off_l = r_bytes;
    s.off_x = s.off_l + l_bytes;
    s.off_c = s.off_x + (size_t)2 * ipc * s.n1p * s.xs * 2;
    s.off_red = s.off_c + (size_t)ipc * nc * s.cbytes;
    s.bytes = s.off_red + (size_t)ipc * s.nch * 2 * sizeof(float);
    return s;
}

struct tcq_args {
    quant_dsts d;
    int nc;
    const uint16_t *x;
    int M, K, blocks, n1, n2;
    const float *L, *R;
    int qmax;
    float qlo, qhi; /* the codes' clamp, −qmax − 1 and qmax */
};

/* f rounded to TF32 (10 mantissa bits, to nearest, ties away from zero: cvt.rna.tf32.f32
 * for every finite f) in two integer ops: the cvt is a conversion, at a quarter of their
 * rate on sm_90, and the second product rounds every Z value it reads */
__device__ __forceinline__ uint32_t tf32_bits(float f)
{
    return (__float_as_uint(f) + 0x1000u) & 0xFFFFE000u;
}
__device__ __forceinline__ float tf32_round(float f) { return __uint_as_float(tf32_bits(f)); }

__device__ __forceinline__ void mma_tf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, "
                 "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* KW adjacent bf16 (2·KW bytes, aligned) as KW/2 words */
template <int KW> __device__ __forceinline__ void lds_bf16(uint32_t (&w)[KW / 2], const uint16_t *p)
{
    if constexpr (KW == 8) {
        const uint4 v = *reinterpret_cast<const uint4 *>(p);
        w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
    } else if constexpr (KW == 4) {
        const uint2 v = *reinterpret_cast<const uint2 *>(p);
        w[0] = v.x, w[1] = v.y;
    } else {
        w[0] = *reinterpret_cast<const uint32_t *>(p);
    }
}

/* NT: the n tiles (tcq_tiles: n1p = 8·NT, rows past n1 zero); KW: as tcq_shape::kw */
template <int NT, int KW>
__global__ void __launch_bounds__(NT > 8 ? 256 : 512, 1)
    transform_quant_tc_kernel(const tcq_args a, const tcq_shape sh)
{
    extern __shared__ __align__(16) unsigned char tcq_smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int b = blockIdx.y, n1 = a.n1, n2 = a.n2, n = n1 * n2, nk1 = n2 / 8;
    const int item = warp / sh.nch, c = warp % sh.nch;
    const float4 *Af = reinterpret_cast<const float4 *>(tcq_smem);
    const float2 *Lf = reinterpret_cast<const float2 *>(tcq_smem + sh.off_l);
    uint16_t *Xs = reinterpret_cast<uint16_t *>(tcq_smem + sh.off_x);
    uint8_t *Cs = tcq_smem + sh.off_c;
    float *red = reinterpret_cast<float *>(tcq_smem + sh.off_red);
    const float *Rb = a.R ? a.R + (size_t)b * n2 * n2 : nullptr;
    const float *Lb = a.L ? a.L + (size_t)b * n1 * n1 : nullptr;

    /* the factors' fragments, TF32-rounded, in the permuted k orders above */
    if (Rb)
        for (int e = threadIdx.x; e < sh.nch * nk1 * 32; e += blockDim.x) {
            const int ln = e & 31, kk = (e >> 5) % nk1, cc = (e >> 5) / nk1;
            const int j0 = kk / (KW / 2) * 4 * KW + KW * (ln & 3) + 2 * (kk % (KW / 2));
            const int r0 = 16 * cc + (ln >> 2), r1 = r0 + 8;
            auto rv = [&](int jp, int j) { return j < n2 ? tf32_round(Rb[(size_t)jp * n2 + j]) : 0.f; };
            reinterpret_cast<float4 *>(tcq_smem)[e] =
                make_float4(rv(j0, r0), rv(j0, r1), rv(j0 + 1, r0), rv(j0 + 1, r1));
        }
    if (Lb)
        for (int e = threadIdx.x; e < NT * NT * 32; e += blockDim.x) {
            const int ln = e & 31, nn = (e >> 5) % NT, ks = (e >> 5) / NT;
            const int i0 = 8 * ks + 2 * (ln & 3), col = 8 * nn + (ln >> 2);
            auto lv = [&](int i, int j) { return i < n1 && j < n1 ? tf32_round(Lb[i * n1 + j]) : 0.f; };
            reinterpret_cast<float2 *>(tcq_smem + sh.off_l)[e] = make_float2(lv(i0, col), lv(i0 + 1, col));
        }
    /* X's padding rows (n1 ≤ i < n1p) stay zero: the copies below never write them */
    for (int e = threadIdx.x; e < 2 * sh.ipc * (sh.n1p - n1) * sh.xs; e += blockDim.x) {
        const int per = (sh.n1p - n1) * sh.xs, ib = e / per, r = e % per; /* ib: buffer·ipc + item */
        Xs[((size_t)ib * sh.n1p + n1) * sh.xs + r] = 0;
    }

    __syncthreads(); /* the factors and the padding are in place */

    /* From here each item group (the nch warps of one item) runs on its own: its tokens are
     * item, item + ipc·gridDim.x, …; it stages its own X (double-buffered, one token ahead)
     * and waits only on its named barrier, so the groups of a CTA drift apart and one's
     * MMAs overlap another's quantization. */
    const int gthreads = sh.nch * 32;
    auto group_sync = [&]() { asm volatile("bar.sync %0, %1;\n" ::"r"(1 + item), "r"(gthreads) : "memory"); };
    /* a stage's copies: a warp takes 32 / cpr rows at once (cpr: 16-byte pieces per row, at
     * most 32) */
    const int cpr = n2 / 8, rpw = 32 / cpr, sub = lane / cpr, ch = lane % cpr;
    auto stage = [&](int buf, int tok) {
        if (sub < rpw && tok < a.M)
            for (int row = c * rpw + sub; row < n1; row += sh.nch * rpw)
                cp_async16(Xs + (((size_t)buf * sh.ipc + item) * sh.n1p + row) * sh.xs + ch * 8,
                           a.x + (size_t)tok * a.K + (size_t)b * n + (size_t)row * n2 + ch * 8, true);
        cp_async_commit();
    };
    /* which of this thread's accumulators are real values (row j < n2, column i < n1): bit
     * 4·nn + 2h + e for y[nn][2h + e], the same for every token */
    unsigned long long valid = 0;
#pragma unroll
    for (int nn = 0; nn < NT; nn++)
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int e = 0; e < 2; e++)
                if (16 * c + g + 8 * h < n2 && 8 * nn + 2 * t + e < n1)
                    valid |= 1ull << (4 * nn + 2 * h + e);

    const bool full = valid == (NT == 16 ? ~0ull : (1ull << 4 * NT) - 1);
    const int step = gridDim.x * sh.ipc;
    int buf = 0;
    stage(0, blockIdx.x * sh.ipc + item);
    for (int tok = blockIdx.x * sh.ipc + item; tok < a.M; tok += step, buf ^= 1) {
        cp_async_wait<0>();
        group_sync(); /* X[buf] is here; the group's last reads of X[buf^1], its codes and its
                       * extrema are done */
        stage(buf ^ 1, tok + step);
        const uint16_t *X = Xs + ((size_t)buf * sh.ipc + item) * sh.n1p * sh.xs;

        float z[NT][4];
#pragma unroll
        for (int i = 0; i < NT; i++)
            z[i][0] = z[i][1] = z[i][2] = z[i][3] = 0.f;
        if (Rb) {
            for (int s = 0; s < n2 / (4 * KW); s++) {
                uint32_t af[KW / 2][4];
#pragma unroll
                for (int q = 0; q < KW / 2; q++) {
                    const float4 v = Af[((size_t)c * nk1 + s * (KW / 2) + q) * 32 + lane];
                    af[q][0] = __float_as_uint(v.x), af[q][1] = __float_as_uint(v.y);
                    af[q][2] = __float_as_uint(v.z), af[q][3] = __float_as_uint(v.w);
                }
#pragma unroll
                for (int nn = 0; nn < NT; nn++) {
                    uint32_t w[KW / 2];
                    lds_bf16<KW>(w, X + (8 * nn + g) * sh.xs + s * 4 * KW + KW * t);
#pragma unroll
                    for (int q = 0; q < KW / 2; q++)
                        mma_tf32(z[nn], af[q], w[q] << 16, w[q] & 0xFFFF0000u);
                }
            }
        } else { /* R = I: Zᵀ[j][i] = X[i][j] */
            const int j0 = 16 * c + g, j1 = j0 + 8;
#pragma unroll
            for (int nn = 0; nn < NT; nn++) {
                const uint16_t *x0 = X + (8 * nn + 2 * t) * sh.xs, *x1 = x0 + sh.xs;
                z[nn][0] = j0 < n2 ? __uint_as_float((uint32_t)x0[j0] << 16) : 0.f;
                z[nn][1] = j0 < n2 ? __uint_as_float((uint32_t)x1[j0] << 16) : 0.f;
                z[nn][2] = j1 < n2 ? __uint_as_float((uint32_t)x0[j1] << 16) : 0.f;
                z[nn][3] = j1 < n2 ? __uint_as_float((uint32_t)x1[j1] << 16) : 0.f;
            }
        }

        float y[NT][4];
#pragma unroll
        for (int i = 0; i < NT; i++)
            y[i][0] = z[i][0], y[i][1] = z[i][1], y[i][2] = z[i][2], y[i][3] = z[i][3];
        if (Lb) {
#pragma unroll
            for (int i = 0; i < NT; i++)
                y[i][0] = y[i][1] = y[i][2] = y[i][3] = 0.f;
#pragma unroll
            for (int ks = 0; ks < NT; ks++) {
                const uint32_t za[4] = {tf32_bits(z[ks][0]), tf32_bits(z[ks][2]),
                                        tf32_bits(z[ks][1]), tf32_bits(z[ks][3])};
#pragma unroll
                for (int nn = 0; nn < NT; nn++) {
                    const float2 l = Lf[(ks * NT + nn) * 32 + lane];
                    mma_tf32(y[nn], za, __float_as_uint(l.x), __float_as_uint(l.y));
                }
            }
        }

        /* the item's extrema: y[nn][2h + e] is Yᵀ[16c + g + 8h][8nn + 2t + e] (a thread of
         * whole tiles tests no bits) */
        float mx = -INFINITY, mn = INFINITY;
        if (full) {
#pragma unroll
            for (int nn = 0; nn < NT; nn++)
#pragma unroll
                for (int v = 0; v < 4; v++)
                    mx = fmaxf(mx, y[nn][v]), mn = fminf(mn, y[nn][v]);
        } else {
#pragma unroll
            for (int nn = 0; nn < NT; nn++)
#pragma unroll
                for (int v = 0; v < 4; v++)
                    if (valid >> (4 * nn + v) & 1)
                        mx = fmaxf(mx, y[nn][v]), mn = fminf(mn, y[nn][v]);
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            mn = fminf(mn, __shfl_xor_sync(0xffffffffu, mn, o));
        }
        if (lane == 0)
            red[(item * sh.nch + c) * 2] = mx, red[(item * sh.nch + c) * 2 + 1] = mn;
        group_sync();
        mx = -INFINITY, mn = INFINITY;
        for (int w = 0; w < sh.nch; w++)
            mx = fmaxf(mx, red[(item * sh.nch + w) * 2]), mn = fminf(mn, red[(item * sh.nch + w) * 2 + 1]);

        /* codes: byte (i, j even) = code(i, j) | code(i, j + 1) << 4; lane g even writes
         * rows (16c + g, + 1), lane g odd rows (16c + g + 7, + 8), each for i = 8nn + 2t, + 1.
         * kq[nn] holds the thread's four codes in its bytes' low nibbles (v = 2h + e: byte v);
         * each lane sends its partner (lane ^ 4) the pair of the rows the partner writes: an
         * even lane g sends bytes 2, 3 (its row 16c + g + 8, which odd partner g + 1 writes)
         * and keeps 0, 1 as the pair's first row; an odd lane sends 0, 1 and keeps 2, 3 as
         * the pair's second row. (Set here, in the token loop: hoisted out of it, they made
         * <8, 8> spill.) */
        const bool odd = g & 1;
        const int jb = 16 * c + g + (odd ? 7 : 0);
        const uint32_t sel_send = odd ? 0x10u : 0x32u, sel_pair = odd ? 0x3254u : 0x5410u;
        for (int p = 0; p < a.nc; p++) {
            const float s = sym_scale(mx, mn, a.d.kmax[p], a.d.kmin[p], a.qmax);
            const float inv = __frcp_rn(s);
            if (c == 0 && lane == 0)
                a.d.scales[p][(size_t)tok * a.blocks + b] = s;
            uint8_t *cb = Cs + ((size_t)item * a.nc + p) * sh.cbytes;
            /* where any lane of the warp has a product near a tie (code4_recip), the whole
             * warp divides */
            uint32_t kq[NT];
            bool tie = !isfinite(inv);
#pragma unroll
            for (int nn = 0; nn < NT; nn++) {
                uint32_t u[4];
#pragma unroll
                for (int v = 0; v < 4; v++)
                    u[v] = code4_recip(y[nn][v], inv, a.qlo, a.qhi, tie);
                kq[nn] = __byte_perm(__byte_perm(u[0], u[1], 0x0040), __byte_perm(u[2], u[3], 0x0040), 0x5410);
            }
            if (__any_sync(0xffffffffu, tie))
#pragma unroll
                for (int nn = 0; nn < NT; nn++) {
                    kq[nn] = 0;
#pragma unroll
                    for (int v = 0; v < 4; v++)
                        kq[nn] |= code4(y[nn][v], s, a.qmax) << 8 * v;
                }
#pragma unroll
            for (int nn = 0; nn < NT; nn++) {
                const uint32_t got = __shfl_xor_sync(0xffffffffu, __byte_perm(kq[nn], 0, sel_send), 4);
                /* bytes (low nibbles of the pair's first row for i0, i0 + 1, then of its
                 * second row), merged into the code bytes of (i0, jb) and (i0 + 1, jb) */
                const uint32_t w = __byte_perm(kq[nn], got, sel_pair);
                const uint32_t pk = (w & 0x0F0Fu) | ((w >> 12) & 0xF0F0u);
                const int i0 = 8 * nn + 2 * t;
                if (jb < n2) {
                    if (i0 < n1)
                        cb[(i0 * n2 + jb) / 2] = (uint8_t)pk;
                    if (i0 + 1 < n1)
                        cb[((i0 + 1) * n2 + jb) / 2] = (uint8_t)(pk >> 8);
                }
            }
        }
        group_sync();
        /* the item's code rows out, 16 bytes a store where the rows allow it */
        const int nb = n / 2, gt = threadIdx.x - item * gthreads;
        const bool vec = nb % 16 == 0 && a.K % 32 == 0;
        for (int p = 0; p < a.nc; p++) {
            const uint8_t *src = Cs + ((size_t)item * a.nc + p) * sh.cbytes;
            uint8_t *dst = a.d.codes[p] + ((size_t)tok * a.K + (size_t)b * n) / 2;
            if (vec)
                for (int e = gt; e < nb / 16; e += gthreads)
                    reinterpret_cast<uint4 *>(dst)[e] = reinterpret_cast<const uint4 *>(src)[e];
            else
                for (int e = gt; e < nb; e += gthreads)
                    dst[e] = src[e];
        }
    }
}

template <int NT, int KW> const void *tcq_kernel() { return (const void *)transform_quant_tc_kernel<NT, KW>; }

const void *tcq_pick(int nt, int kw)
{
    switch (nt * 16 + kw) {
    case 1 * 16 + 8: return tcq_kernel<1, 8>();
    case 1 * 16 + 4: return tcq_kernel<1, 4>();
    case 1 * 16 + 2: return tcq_kernel<1, 2>();
    case 2 * 16 + 8: return tcq_kernel<2, 8>();
    case 2 * 16 + 4: return tcq_kernel<2, 4>();
    case 2 * 16 + 2: return tcq_kernel<2, 2>();
    case 4 * 16 + 8: return tcq_kernel<4, 8>();
    case 4 * 16 + 4: return tcq_kernel<4, 4>();
    case 4 * 16 + 2: return tcq_kernel<4, 2>();
    case 7 * 16 + 8: return tcq_kernel<7, 8>();
    case 8 * 16 + 8: return tcq_kernel<8, 8>();
    case 8 * 16 + 4: return tcq_kernel<8, 4>();
    case 8 * 16 + 2: return tcq_kernel<8, 2>();
    case 14 * 16 + 8: return tcq_kernel<14, 8>();
    case 16 * 16 + 8: return tcq_kernel<16, 8>();
    case 16 * 16 + 4: return tcq_kernel<16, 4>();
    case 16 * 16 + 2: return tcq_kernel<16, 2>();
    default: return nullptr;
    }
}

/* the most items per CTA (up to the kernel's warps) whose staging fits; 0: none fits */
tcq_shape tcq_plan(int n1, int n2, int have_l, int have_r, int nc)
{
    tcq_shape s = tcq_make(n1, n2, have_l, have_r, nc, 1);
    /* named barriers 1..ipc: at most 8 groups */
    for (int ipc = std::min(8, tcq_warps_max(s.nt) / s.nch); ipc >= 1; ipc--) {
        s = tcq_make(n1, n2, have_l, have_r, nc, ipc);
        if (s.bytes <= TCQ_MAX_SMEM)
            return s;
    }
    s.ipc = 0;
    return s;
}

} // namespace

extern "C" int fq_transform_quant_tc_takes(const fq_cuda_ctx *ctx, int M, int K, int blocks, int n1, int n2,
                                          int have_l, int have_r, int kblocks)
{
    if (!ctx || !ctx->transform_tc || M < 1 || K % 64 || blocks < 1 || kblocks != blocks ||
        n1 < 1 || n2 < 8 || n2 % 8 || n1 > 128 || n2 > 256 || (size_t)n1 * n2 * blocks != (size_t)K ||
        (!have_l && !have_r))
        return 0;
    /* planned for three consumers, the most a call has, so the answer holds for any count
     * (an item of more warps than the kernel has plans no items) */
    return tcq_plan(n1, n2, have_l, have_r, 3).ipc > 0;
}

int w4a4_quant_tc_launch(fq_cuda_ctx *ctx, const char *where, const quant_dsts &d, int nc,
                         const uint16_t *x, int M, int K, int blocks, int n1, int n2,
                         const float *L, const float *R, int qmax)
{
    const tcq_shape sh = tcq_plan(n1, n2, L != nullptr, R != nullptr, nc);
    if (sh.ipc < 1)
        return fq_error("%s: n1·n2 = %d·%d (expected a shape fq_transform_quant_tc_takes accepts)",
                        where, n1, n2);
    const void *kern = tcq_pick(sh.nt, sh.kw);
    if (!kern)
        return fq_error("%s: %d n tiles, %d-value loads (expected an instantiated kernel)",
                        where, sh.nt, sh.kw);
    const int threads = sh.ipc * sh.nch * 32;
    CU_CHECK(fq_smem_optin(kern, ctx->device, (int)sh.bytes), FILE_, where, "cudaFuncSetAttribute");
    const int per_sm = std::max(1, fq_max_resident(kern, ctx->device, threads, sh.bytes));
    const int items = (M + sh.ipc - 1) / sh.ipc;
    /* whole waves: one CTA more than the SMs hold would double the time */
    const int per_block = std::max(1, std::min(items, ctx->sm_count * per_sm / blocks));
    const tcq_args args = {d, nc, x, M, K, blocks, n1, n2, L, R, qmax, (float)(-qmax - 1), (float)qmax};
    void *params[] = {(void *)&args, (void *)&sh};
    CU_CHECK(cudaLaunchKernel(kern, dim3(per_block, blocks), dim3(threads), params, sh.bytes,
                              CTX_STREAM(ctx)),
             FILE_, where, "transform_quant_tc_kernel");
    return FQ_OK;
}
