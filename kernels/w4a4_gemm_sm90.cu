/* w4a4_gemm_sm90.cu — the W4A4 prefill GEMM on Hopper's warpgroup MMA (wgmma m64nNk32 s8,
 * int32 accumulation, tensor-memory-accelerator copies): the same product and epilogue as the
 * mma.sync prefill kernel of kernels/w4a4_gemm.cu, bit for bit, at 1200–1600 int8 TOPS on an
 * H200 (bench/NOTES.md, session 12).
 *
 * The operands. wgmma takes one operand from registers and the other from shared memory, and
 * on Hopper the shared-memory one must be int8 there. The weights, which must stay 4-bit in
 * memory, are the register operand: each thread's fragments come from the packed tile and
 * are unpacked in registers (four logic ops per 8 codes). The activations are transient, so
 * one bandwidth pass (w4a4_unpack_x8 below, ~1.5 bytes per code, ~3 % of the GEMM) writes
 * them as int8 in a scratch buffer, from which the tensor-memory accelerator copies tiles
 * straight into the 128-byte swizzle the MMA reads. The int8 layout: per 32-code group,
 * 16·q of the 16 even elements, then of the 16 odd ones (16·q: a nibble in the high half of
 * a byte, w4a4_gemm.cuh), which is the k order of the weight fragments (load_a).
 * Why: sessions 9–11 expanded the weight nibbles into shared memory inside the k loop and
 * copied tiles with cp.async; those kernels stayed at 400–880 TOPS (0.85× cuBLAS BF16). In
 * Nsight Compute a form with nothing to expand but cp.async copies still kept the tensor
 * pipe only 29 % busy, its consumers waiting for data 58 % of the time at 24 % of L2's
 * throughput: per-thread copies could not keep enough bytes in flight. With TMA the same
 * kernel ran at 77 % tensor-pipe utilisation, 2.2× the expanding kernels over 48 prefill
 * shapes.
 *
 * Structure (warp-specialised). One thread of warpgroup 0 has the TMA copy each 128-k tile
 * (BT token rows of int8, 128 B each in the 128-byte swizzle; 128 weight rows packed, 64 B
 * each in the 64-byte swizzle, load_a's conflict-free layout) into one of ST stages (5 at
 * BT = 256, 8 at 128), completing on the stage's full mbarrier; warpgroups 1 and 2 each own
 * 64 weight rows × BT tokens, wait on full, read their weight fragments, issue four m64nBTk32
 * MMAs and release the stage on its empty mbarrier once those MMAs are done (one tile later;
 * setmaxnreg moves the producer's registers to them). The tile's outputs are transposed
 * (weights run along the accumulator rows), so the epilogue stages them through shared memory
 * and writes whole token rows. kblocks > 1 (the TP per-block activation scales): the int32
 * sums are flushed into fp32 sums at every block end, kept in registers (128-token tiles, the
 * default) or in an L2-resident scratch buffer (256-token tiles, fq_w4a4_kblocks_config).
 */
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <stdint.h>

#include "kernels/cuda_common.cuh"
#include "kernels/w4a4.h"
#include "kernels/w4a4_gemm.cuh"

#define FILE_ "kernels/w4a4_gemm_sm90.cu"

namespace {

/* ---- Hopper primitives: the s8 MMA with A from registers, its fences and waits, the
 * shared-memory descriptor of the 128-byte swizzle, mbarriers, TMA ---- */

/* packed bytes per row and k-tile of 128 codes */
constexpr int WG_TILE_BYTES = 64;

/* The MMA's accumulator operands: %0..%63 (n128) and %64..%127 (n256's second half), and
 * the matching "+r" bindings of d[]. */
#define WG_REGS_LO \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
    "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, " \
    "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, " \
    "%56, %57, %58, %59, %60, %61, %62, %63"
#define WG_REGS_HI \
    "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, " \
    "%82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, " \
    "%100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, " \
    "%115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
#define WG_D8(i) "+r"(d[i]), "+r"(d[i + 1]), "+r"(d[i + 2]), "+r"(d[i + 3]), "+r"(d[i + 4]), \
                 "+r"(d[i + 5]), "+r"(d[i + 6]), "+r"(d[i + 7])
#define WG_D64(i) WG_D8(i), WG_D8(i + 8), WG_D8(i + 16), WG_D8(i + 24), WG_D8(i + 32), \
                  WG_D8(i + 40), WG_D8(i + 48), WG_D8(i + 56)

/* A from registers (four .b32 of 8-bit codes per thread, mma.sync's m16n8k32 A fragment
 * per warp), B from shared memory; scale-d (acc) is a predicate operand, set from a
 * register so it can change at run time */
__device__ __forceinline__ void wgmma_s8_n256(int (&d)[128], const uint32_t *a, uint64_t db, int acc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n256k32.s32.s8.s8 {" WG_REGS_LO ", " WG_REGS_HI
                 "}, {%128, %129, %130, %131}, %132, p;\n}\n"
                 : WG_D64(0), WG_D64(64)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc));
}

__device__ __forceinline__ void wgmma_s8_n128(int (&d)[64], const uint32_t *a, uint64_t db, int acc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 {" WG_REGS_LO
                 "}, {%64, %65, %66, %67}, %68, p;\n}\n"
                 : WG_D64(0)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc));
}

/* d (+)= A·B over 32 k; acc = 0: d = A·B, the accumulators restart without an instruction
 * writing them (which would make ptxas serialise the MMAs) */
template <int BN> __device__ __forceinline__ void wgmma_s8(int (&d)[BN / 2], const uint32_t *a, uint64_t db, int acc)
{
    if constexpr (BN == 256)
        wgmma_s8_n256(d, a, db, acc);
    else
        wgmma_s8_n128(d, a, db, acc);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait()
{
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/* Keeps the compiler from moving reads or writes of the accumulators across the
 * asynchronous MMAs that own them between issue and wait. */
template <int R> __device__ __forceinline__ void acc_fence(int (&d)[R])
{
#pragma unroll
    for (int i = 0; i < R; i++)
        asm volatile("" : "+r"(d[i])::"memory");
}

/* Shared-memory matrix descriptor of a K-major tile in the 128-byte swizzle: rows of 128
 * bytes (the tile's 128 k), 16-byte chunk j of row r stored at chunk j ^ (r & 7), 8-row
 * groups 1 KiB apart (SBO); LBO is unused in this mode (1 by convention). The buffer must
 * be 1 KiB aligned; a k-step's descriptor starts 32 bytes further into the row, and the
 * hardware applies the XOR to the address it forms. */
__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* The first 1 KiB boundary at or after the dynamic shared memory's start (the swizzle needs
 * it; the launches add 1 KiB of room). */
__device__ __forceinline__ uint8_t *align_1k(uint8_t *p) { return p + ((1024 - (smem_u32(p) & 1023)) & 1023); }

__device__ __forceinline__ uint64_t smem_desc(const void *p)
{
    uint64_t a = smem_u32(p);
    return ((a & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) |
           ((uint64_t)1 << 62);
}

__device__ __forceinline__ void mbar_init(uint64_t *b, unsigned count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(b)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t *b)
{
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(smem_u32(b))
                 : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t *b, unsigned parity)
{
    asm volatile("{\n.reg .pred done;\nWAIT_%=:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                 "@!done bra WAIT_%=;\n}\n" ::"r"(smem_u32(b)),
                 "r"(parity)
                 : "memory");
}

/* A thread's weight fragments of a k-tile, straight from its packed stage: for k-step s,
 * word t of chunk s of rows r0 and r0 + 8 (the codes that the int8 activation chunks 2s and
 * 2s + 1 hold at positions 4t..4t+3, even and odd elements). */
__device__ __forceinline__ void load_a(uint32_t (&af)[16], const uint8_t *st, int r0, int lane)
{
    const int t4 = 4 * (lane & 3);
#pragma unroll
    for (int s = 0; s < 4; s++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int r = r0 + 8 * h;
            const uint32_t w = *reinterpret_cast<const uint32_t *>(
                st + r * WG_TILE_BYTES + ((s ^ ((r >> 1) & 3)) << 4) + t4);
            af[4 * s + h] = nib_even(w);
            af[4 * s + 2 + h] = nib_odd(w);
        }
}

/* ---- the kernel ---- */

constexpr int WG_BW = 128;     /* weight rows per CTA: two consumer warpgroups of m64 */
constexpr int WG_STAGES = 5;   /* 5 × 40 KiB at BT = 256 */
/* 8 × 24 KiB at BT = 128: a stage there is half the MMA time of one at 256, so 5 of them
 * covered half the copy latency (8 stages: faster on 41 of 48 prefill rows, 3 % geo-mean,
 * up to 24 %; bench_w4a4, session 14) */
constexpr int WG_STAGES_128 = 8;
constexpr int WG_THREADS = 384, WG_CONSUMERS = 256;
constexpr int WG_SX_MAX_KB = 16; /* K-blocks whose scales a CTA stages in shared memory */
/* the modes with K-blocks of activation scales (fp32 block sums, staged scales) */
__host__ __device__ constexpr bool wg_kblocks(int mode) { return mode == 1 || mode == 3; }
constexpr int WG_GROUP = 8;    /* token tiles per raster group (L2 reuse of a weight band) */
constexpr int WG_PITCH = 68;   /* floats per token row of the epilogue's staging (64 + 4:
                                * the transposed writes of a warp hit 32 distinct banks) */

template <int BT, int ST> struct wg_smem {
    static constexpr int XB = BT * 128;        /* int8 activations of one stage */
    static constexpr int WB = WG_BW * WG_TILE_BYTES; /* packed weights of one stage */
    static constexpr int STAGE = XB + WB;      /* a multiple of 1 KiB */
    /* barriers in the first KiB, then the stages, then 1 KiB of alignment room */
    static constexpr int BYTES = 1024 + ST * STAGE + 1024;
    /* kblocks > 1: + the tile's activation scales [kblocks][BT] after the stages */
    static constexpr int SX_BYTES = BT * WG_SX_MAX_KB * 4;
    static_assert(2 * BT * WG_PITCH * 4 <= ST * STAGE, "the epilogue's staging reuses the stages");
    static_assert(BYTES + SX_BYTES <= 227 * 1024, "an SM's shared memory");
};

/* The mbarrier expects `bytes` more of tensor-copy data in its current phase (and counts
 * this thread's arrival). */
__device__ __forceinline__ void mbar_expect_tx(uint64_t *b, unsigned bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(b)), "r"(bytes)
                 : "memory");
}

/* One box of a 2-D tensor map at (inner c0, outer c1) → shared memory, completing on b;
 * the map's swizzle decides the layout. */
__device__ __forceinline__ void tma_load_2d(void *dst, const CUtensorMap *map, int c0, int c1, uint64_t *b)
{
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes "
                 "[%0], [%1, {%2, %3}], [%4];\n" ::"r"(smem_u32(dst)),
                 "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(smem_u32(b))
                 : "memory");
}

/* MODE 0: bf16 out, one K-block; 1: bf16 out, kblocks > 1 (the fp32 block sums in registers
 * at BT = 128, else in fscr: a thread's R floats at stride WG_CONSUMERS, CTA by CTA), flushed
 * at the k-step that ends a block; 3: the same when every block is whole 128-k tiles, flushed
 * between tiles, so no branch sits between a tile's MMAs; 2: the int32 sums >> 8. K is the
 * packed row length Kp (x8 rows are K bytes, qw rows K/2). */
template <int MODE, int BT, int ST>
__global__ void __launch_bounds__(WG_THREADS, 1)
    w4a4_gemm_wgmma(uint16_t *__restrict__ y, int32_t *__restrict__ acc_out,
                 const __grid_constant__ CUtensorMap tx, const float *__restrict__ sx,
                 const __grid_constant__ CUtensorMap tw, const float *__restrict__ sw, int M, int N,
                 int K, int kblocks, const uint16_t *residual, float *__restrict__ fscr)
{
    using S = wg_smem<BT, ST>;
    extern __shared__ __align__(1024) uint8_t smem_raw[];
    uint8_t *const base = align_1k(smem_raw);
    uint64_t *const full = reinterpret_cast<uint64_t *>(base), *const empty = full + ST;
    auto xs = [&](int s) { return base + 1024 + s * S::STAGE; };
    auto ws = [&](int s) { return base + 1024 + s * S::STAGE + S::XB; };
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2;

    /* grouped raster: WG_GROUP token tiles side by side walk the weight tiles together */
    const int tiles_t = (M + BT - 1) / BT, tiles_w = (N + WG_BW - 1) / WG_BW;
    const int per_group = WG_GROUP * tiles_w, g = blockIdx.x / per_group;
    const int first_t = g * WG_GROUP, gsize = min(tiles_t - first_t, WG_GROUP);
    const int in_g = blockIdx.x % per_group;
    const int t0 = (first_t + in_g % gsize) * BT, n0 = (in_g / gsize) * WG_BW;
    const int ntiles = (K + 127) / 128;

    if (tid == 0)
        for (int s = 0; s < ST; s++) {
            mbar_init(full + s, 1); /* the producer's expect_tx; the copies complete it */
            mbar_init(empty + s, 8); /* lane 0 of each consumer warp */
        }
    /* the barriers' initialisation, visible to the tensor copies (async proxy) */
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    __syncthreads();

    if (wg == 0) { /* producer: one thread issues the tensor copies of each tile */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
        if (tid != 0)
            return;
        for (int kt = 0; kt < ntiles; kt++) {
            const int s = kt % ST;
            if (kt >= ST)
                mbar_wait(empty + s, (kt / ST - 1) & 1);
            /* the whole boxes count, zero-filled parts past M, N or K included */
            mbar_expect_tx(full + s, S::STAGE);
            tma_load_2d(xs(s), &tx, kt * 128, t0, full + s);
            tma_load_2d(ws(s), &tw, kt * WG_TILE_BYTES, n0, full + s);
        }
        return;
    }

    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
    constexpr int R = BT / 2;
    const int c_wg = wg - 1;
    const int r0 = c_wg * 64 + (warp & 3) * 16 + (lane >> 2); /* the thread's weight rows r0, r0 + 8 */
    int acc[R];
#pragma unroll
    for (int i = 0; i < R; i++)
        acc[i] = 0;
    /* MODE 1: at each K-block's end the int32 sums join the fp32 ones, v += (acc >> 8)·sx[t, b]
     * in block order as the C reference, and the next MMA restarts them (scale-d = 0);
     * accumulator 4j + 2·half + e belongs to token 8j + 2·(lane & 3) + e. The fp32 sums
     * stay in registers at BT = 128 (REG); at BT = 256 they would not fit beside the int32
     * ones and wait in fscr (L2) between blocks, where the epilogue reads them (writing the
     * int32 registers between MMAs instead made ptxas serialise every MMA of the kernel).
     * The tile's scales are staged in shared memory first (up to WG_SX_MAX_KB blocks): read
     * from global memory at each flush they made kblocks = 8 run at 0.4× the speed of one
     * K-block (session 12). */
    constexpr bool KB = wg_kblocks(MODE), REG = KB && BT == 128;
    const int blen = K / kblocks;
    int keep = 1;
    float facc[REG ? R : 1];
#pragma unroll
    for (int i = 0; i < (REG ? R : 1); i++)
        facc[i] = 0.f;
    float *const fs = KB && !REG ? fscr + (size_t)blockIdx.x * R * WG_CONSUMERS + (tid - 128) : nullptr;
    float *const sxs = reinterpret_cast<float *>(base + 1024 + ST * S::STAGE);
    const bool sx_staged = KB && kblocks <= WG_SX_MAX_KB;
    if (sx_staged) {
        for (int e = tid - 128; e < BT * kblocks; e += WG_CONSUMERS) {
            const int tl = e / kblocks, b = e - tl * kblocks;
            sxs[b * BT + tl] = sx[(size_t)min(t0 + tl, M - 1) * kblocks + b];
        }
        asm volatile("bar.sync 1, 256;\n" ::: "memory");
    }
    auto flush = [&](int b) {
#pragma unroll
        for (int i = 0; i < (KB ? R : 0); i++) {
            const int tl = 8 * (i >> 2) + 2 * (lane & 3) + (i & 1);
            const float s = sx_staged ? sxs[b * BT + tl] : sx[(size_t)min(t0 + tl, M - 1) * kblocks + b];
            const float p = __fmul_rn((float)(acc[i] >> 8), s);
            if constexpr (REG) {
                facc[i] = __fadd_rn(facc[i], p);
            } else {
                const float prev = b == 0 ? 0.f : fs[(size_t)i * WG_CONSUMERS];
                fs[(size_t)i * WG_CONSUMERS] = __fadd_rn(prev, p);
            }
        }
    };
    /* two fragment sets (the loop is unrolled by two): tile kt's MMAs may still read one
     * while tile kt + 1 loads the other; the wait after each tile's issue (tile kt − 1 done)
     * frees the set and the stage of tile kt − 1 */
    auto tile = [&](int kt, uint32_t (&af)[16]) {
        const int s = kt % ST;
        mbar_wait(full + s, (kt / ST) & 1);
        load_a(af, ws(s), r0, lane);
        wgmma_fence();
        /* MODE 3 (K-blocks of whole tiles): a tile that starts a block restarts the sums */
        const int first = MODE == 3 && (kt * 128) % blen == 0 ? 0 : 1;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            wgmma_s8<BT>(acc, af + 4 * k, smem_desc(xs(s) + 32 * k),
                         MODE == 1 ? keep : MODE == 3 && k == 0 ? first : 1);
            if constexpr (MODE == 1) {
                keep = 1;
                const int kend = kt * 128 + 32 * (k + 1);
                if (kend <= K && kend % blen == 0) {
                    wgmma_commit();
                    wgmma_wait<0>();
                    acc_fence(acc);
                    flush(kend / blen - 1);
                    keep = 0;
                    wgmma_fence();
                }
            }
        }
        wgmma_commit();
        /* MODE 3: the flush after the tile that ends a block, outside the MMAs' issue */
        if constexpr (MODE == 3) {
            if (((kt + 1) * 128) % blen == 0) {
                wgmma_wait<0>();
                acc_fence(acc);
                flush((kt + 1) * 128 / blen - 1);
            }
        }
        wgmma_wait<1>();
        if (kt >= 1 && lane == 0)
            mbar_arrive(empty + (kt - 1) % ST);
    };
    uint32_t af0[16], af1[16];
    int kt = 0;
    for (; kt + 1 < ntiles; kt += 2) {
        tile(kt, af0);
        tile(kt + 1, af1);
    }
    if (kt < ntiles)
        tile(kt, af0);
    wgmma_wait<0>();
    acc_fence(acc);

    /* Epilogue. Both consumer warpgroups must be done reading the stages before either
     * overwrites them (named barrier 1: the 256 consumer threads). Accumulator 4j + 2·half
     * + e is weight row r0 + 8·half, token 8j + 2·(lane & 3) + e. */
    asm volatile("bar.sync 1, 256;\n" ::: "memory");
    float *const stg = reinterpret_cast<float *>(base + 1024) + c_wg * BT * WG_PITCH;
    const int wl = r0 - c_wg * 64;
#pragma unroll
    for (int j = 0; j < BT / 8; j++)
#pragma unroll
        for (int half = 0; half < 2; half++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int tl = 8 * j + 2 * (lane & 3) + e, i = 4 * j + 2 * half + e, a = acc[i] >> 8;
                stg[tl * WG_PITCH + wl + 8 * half] = MODE == 0   ? __fmul_rn((float)a, sx[min(t0 + tl, M - 1)])
                                                     : REG       ? facc[REG ? i : 0]
                                                     : KB        ? fs[(size_t)i * WG_CONSUMERS]
                                                                 : __int_as_float(a);
            }
    asm volatile("bar.sync %0, 128;\n" ::"r"(2 + c_wg) : "memory");
    /* a warp writes token rows: 64 weights, two per lane */
    const int nb = n0 + c_wg * 64;
    for (int tl = warp & 3; tl < BT && t0 + tl < M; tl += 4)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int n = nb + lane + 32 * h;
            if (n >= N)
                continue;
            const size_t at = (size_t)(t0 + tl) * N + n;
            const float v = stg[tl * WG_PITCH + lane + 32 * h];
            if constexpr (MODE == 2)
                acc_out[at] = __float_as_int(v);
            else
                y[at] = epilogue_bf16(v, sw[n], residual, at);
        }
}

/* Packed activations [M, K/2] → the int8 layout above [M, K]: 16 packed bytes become 32
 * int8 codes (even elements, then odd), one 16-byte load and two 16-byte stores. */
__global__ void w4a4_unpack_x8(uint8_t *__restrict__ x8, const uint8_t *__restrict__ qx, size_t chunks)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < chunks;
         i += (size_t)gridDim.x * blockDim.x) {
        const uint4 v = reinterpret_cast<const uint4 *>(qx)[i];
        uint4 *const d = reinterpret_cast<uint4 *>(x8) + 2 * i;
        d[0] = make_uint4(nib_even(v.x), nib_even(v.y), nib_even(v.z), nib_even(v.w));
        d[1] = make_uint4(nib_odd(v.x), nib_odd(v.y), nib_odd(v.z), nib_odd(v.w));
    }
}

/* cuTensorMapEncodeTiled through the runtime (no link against the driver library) */
PFN_cuTensorMapEncodeTiled_v12000 encode_tiled()
{
    static PFN_cuTensorMapEncodeTiled_v12000 fn;
    if (!fn) {
        void *p = nullptr;
        cudaDriverEntryPointQueryResult q;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) ==
                cudaSuccess &&
            q == cudaDriverEntryPointSuccess)
            fn = (PFN_cuTensorMapEncodeTiled_v12000)p;
    }
    return fn;
}

/* A row-major byte matrix [rows, cols] read as boxes of box_cols × box_rows in the given
 * swizzle (128 B for the int8 activations, 64 B for the packed weights: the layouts that
 * smem_desc and load_a read); parts of a box past the matrix arrive as zeros. */
int tensor_map(CUtensorMap *map, const char *where, const char *what, const uint8_t *p, int rows,
               int cols, int box_cols, int box_rows, CUtensorMapSwizzle swz)
{
    PFN_cuTensorMapEncodeTiled_v12000 enc = encode_tiled();
    if (!enc)
        return fq_error("%s: cuTensorMapEncodeTiled is not available from the driver (expected a "
                        "CUDA 12+ driver)", where);
    const cuuint64_t dim[2] = {(cuuint64_t)cols, (cuuint64_t)rows}, stride[1] = {(cuuint64_t)cols};
    const cuuint32_t box[2] = {(cuuint32_t)box_cols, (cuuint32_t)box_rows}, estr[2] = {1, 1};
    const CUresult r = enc(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, (void *)p, dim, stride, box, estr,
                           CU_TENSOR_MAP_INTERLEAVE_NONE, swz, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                           CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS)
        return fq_error("%s: cuTensorMapEncodeTiled of %s [%d, %d] bytes failed (CUresult %d)", where,
                        what, rows, cols, (int)r);
    return FQ_OK;
}

template <int MODE, int BT, int ST>
int launch(fq_cuda_ctx *ctx, const char *where, uint16_t *y, int32_t *acc, const uint8_t *x8,
           const float *sx, int kblocks, const uint8_t *qw, const float *sw, int M, int N, int K,
           const uint16_t *residual)
{
    CUtensorMap tx, tw;
    if (tensor_map(&tx, where, "the int8 activations", x8, M, K, 128, BT, CU_TENSOR_MAP_SWIZZLE_128B) ||
        tensor_map(&tw, where, "the packed weights", qw, N, K / 2, WG_TILE_BYTES, WG_BW,
                   CU_TENSOR_MAP_SWIZZLE_64B))
        return FQ_ERR;
    auto kern = w4a4_gemm_wgmma<MODE, BT, ST>;
    const int smem = wg_smem<BT, ST>::BYTES + (wg_kblocks(MODE) ? wg_smem<BT, ST>::SX_BYTES : 0);
    CU_CHECK(fq_smem_optin((const void *)kern, ctx->device, smem), FILE_, where, "cudaFuncSetAttribute");
    const int ctas = ((M + BT - 1) / BT) * ((N + WG_BW - 1) / WG_BW);
    float *fscr = nullptr; /* MODE 1 or 3 at BT = 256: the fp32 block sums, BT / 2 per consumer thread */
    if (wg_kblocks(MODE) && BT == 256 && fq_cuda_scratch(ctx, FQ_SCRATCH_KBLOCKS, sizeof(float) * (size_t)ctas * (BT / 2) * WG_CONSUMERS,
                                     (void **)&fscr))
        return fq_error_wrap("%s: the fp32 block sums of %d CTAs", where, ctas);
    kern<<<ctas, WG_THREADS, smem, CTX_STREAM(ctx)>>>(y, acc, tx, sx, tw, sw, M, N, K, kblocks, residual,
                                                      fscr);
    LAUNCH_CHECK(FILE_, where, "w4a4_gemm_wgmma");
    return FQ_OK;
}

/* fq_w4a4_tile_config: 0 (pick_bt) or a token tile forced for one K-block; the stages of
 * a 128-token tile (process-wide) */
int g_tile = 0;
int g_stages128 = WG_STAGES_128;

/* launch<MODE, bt, stages> for a token tile bt of 128 or 256 */
template <int MODE>
int launch_bt(int bt, fq_cuda_ctx *ctx, const char *where, uint16_t *y, int32_t *acc,
              const uint8_t *x8, const float *sx, int kblocks, const uint8_t *qw, const float *sw,
              int M, int N, int K, const uint16_t *residual)
{
    if (bt == 256)
        return launch<MODE, 256, WG_STAGES>(ctx, where, y, acc, x8, sx, kblocks, qw, sw, M, N, K, residual);
    if (g_stages128 == WG_STAGES)
        return launch<MODE, 128, WG_STAGES>(ctx, where, y, acc, x8, sx, kblocks, qw, sw, M, N, K, residual);
    return launch<MODE, 128, WG_STAGES_128>(ctx, where, y, acc, x8, sx, kblocks, qw, sw, M, N, K, residual);
}

/* fq_w4a4_kblocks_config's choice of token tile for kblocks > 1 (process-wide) */
int g_kb_tile = 128;
/* fq_w4a4_kblocks_aligned_config: blocks of whole 128-k tiles flush between tiles (MODE 3) */
int g_kb_aligned = 1;

/* 256-token tiles unless 128-token ones finish in under 0.9 of their time. A 128-token tile
 * does half the MMA work per weight fragment and per stage, and ran ~8 % slower per token
 * than a 256-token one on an H200 (bench_w4a4, session 14: 48 prefill rows with each tile
 * forced); with one CTA per SM a tile count just over a multiple of the SMs costs a whole
 * wave, which is where 128 wins (qkv at TP 2/4 and M 2048–4096: 0.10 against 0.13 ms). */
int pick_bt(const fq_cuda_ctx *ctx, int M, int N)
{
    const long sms = ctx->sm_count > 0 ? ctx->sm_count : 1, wt = (N + WG_BW - 1) / WG_BW;
    const long w256 = (wt * ((M + 255) / 256) + sms - 1) / sms, w128 = (wt * ((M + 127) / 128) + sms - 1) / sms;
    return 10 * w128 * 128 < 9 * w256 * 256 ? 128 : 256;
}

} // namespace

int w4a4_gemm_wgmma_launch(fq_cuda_ctx *ctx, const char *where, uint16_t *y, int32_t *acc,
                        const uint8_t *qx, const float *sx, int kblocks, const uint8_t *qw,
                        const float *sw, int M, int N, int K, const uint16_t *residual)
{
    uint8_t *x8 = nullptr;
    if (fq_cuda_scratch(ctx, FQ_SCRATCH_X8, (size_t)M * K, (void **)&x8))
        return fq_error_wrap("%s: the int8 activations (%d × %d bytes)", where, M, K);
    const size_t chunks = (size_t)M * K / 32;
    const int ctas = (int)min((chunks + 255) / 256, (size_t)ctx->sm_count * 8);
    w4a4_unpack_x8<<<ctas, 256, 0, CTX_STREAM(ctx)>>>(x8, qx, chunks);
    LAUNCH_CHECK(FILE_, where, "w4a4_unpack_x8");
    const int bt = g_tile ? g_tile : pick_bt(ctx, M, N);
    if (acc)
        return launch_bt<2>(bt, ctx, where, y, acc, x8, sx, 1, qw, sw, M, N, K, residual);
    if (kblocks > 1) {
        const int kbt = g_kb_tile == 256 ? bt : 128;
        return g_kb_aligned && (K / kblocks) % 128 == 0 /* blocks of whole tiles */
                   ? launch_bt<3>(kbt, ctx, where, y, acc, x8, sx, kblocks, qw, sw, M, N, K, residual)
                   : launch_bt<1>(kbt, ctx, where, y, acc, x8, sx, kblocks, qw, sw, M, N, K, residual);
    }
    return launch_bt<0>(bt, ctx, where, y, acc, x8, sx, 1, qw, sw, M, N, K, residual);
}

extern "C" int fq_w4a4_kblocks_config(int tile)
{
    if (tile != 128 && tile != 256)
        return fq_error(FILE_ ":fq_w4a4_kblocks_config: tile %d (expected 128, the default, or "
                        "256)", tile);
    g_kb_tile = tile;
    return FQ_OK;
}

extern "C" int fq_w4a4_kblocks_aligned_config(int on)
{
    if (on != 0 && on != 1)
        return fq_error(FILE_ ":fq_w4a4_kblocks_aligned_config: %d (expected 0 or 1)", on);
    g_kb_aligned = on;
    return FQ_OK;
}

extern "C" int fq_w4a4_tile_config(int tile, int stages128)
{
    if ((tile != 0 && tile != 128 && tile != 256) || (stages128 != WG_STAGES && stages128 != WG_STAGES_128))
        return fq_error(FILE_ ":fq_w4a4_tile_config: tile %d, stages %d (expected tile 0 (automatic), 128 "
                        "or 256, and %d (the default) or %d stages of a 128-token tile)", tile, stages128,
                        WG_STAGES_128, WG_STAGES);
    g_tile = tile;
    g_stages128 = stages128;
    return FQ_OK;
}
