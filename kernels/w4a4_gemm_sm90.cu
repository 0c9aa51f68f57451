/* w4a4_gemm_sm90.cu — the W4A4 prefill GEMM on Hopper's warpgroup MMA (wgmma m64nNk32 s8,
 * int32 accumulation): the same product and epilogue as the mma.sync prefill kernel of
 * kernels/w4a4_gemm.cu, bit for bit, at a higher share of the int8 tensor-core peak.
 *
 * The idea. wgmma reads B from shared memory, so the weight nibbles must be int8 THERE; the
 * activations enter as register fragments (the RS form), expanded in registers like the
 * mma.sync kernel's. The packed k-tiles of both operands arrive by cp.async in a 4-stage
 * ring (64 bytes per row per tile of 128 codes, 16-byte chunks XOR-swizzled by row pairs so
 * that the expansion's 16-byte reads and the fragments' 4-byte reads are free of bank
 * conflicts); all 256 threads expand tile kt's B rows into one of three int8 buffers
 * (kernels/w4a4_gemm.cuh: 16·q bytes, even elements first) and load their A fragments
 * while the tensor cores work on tiles kt − 1 and kt − 2 (three buffers, the default since
 * session 10: 1.08× the two-buffer form, which kblocks > 1 keeps). The int8 buffers use wgmma's K-major layout
 * with the 128-byte swizzle: a tile row of 128 k is one 128-byte line, 16-byte chunk j of
 * row r sits at chunk j ^ (r & 7), so the MMA's operand reads and the expansion's stores
 * (8 lanes: 8 rows, one chunk) spread over all banks.
 * Why RS: the first version (session 9, call 2) expanded A into shared memory too and
 * reached only 430–830 TOPS, no faster than mma.sync: per 128-k tile it moved ~176 KB
 * through shared memory (cp.async, expansion read and write, the MMAs' operand reads)
 * against ~128 KB that the 1024 cycles of its MMAs allow; A in registers saves ~32 KB.
 * Tiles: BM = 128 rows of activations (one m64 per warpgroup) × BN = 256 weight rows
 * (128 when that leaves fewer idle SMs in the last wave, and for kblocks > 1, whose fp32
 * block sums need the registers); one CTA per SM (160 KiB of shared memory at BN = 256).
 * kblocks > 1 (the TP per-block activation scales): the accumulators are flushed into fp32
 * at every block end, waiting for the MMAs in flight first (at most kblocks times per tile).
 */
#include <cuda_bf16.h>
#include <stdint.h>

#include "kernels/cuda_common.cuh"
#include "kernels/w4a4.h"
#include "kernels/w4a4_gemm.cuh"

#define FILE_ "kernels/w4a4_gemm_sm90.cu"

namespace {

constexpr int WG_BM = 128, WG_TILE_BYTES = 64 /* packed bytes per row and k-tile */;
constexpr int WG_STAGES = 4, WG_THREADS = 256;

/* NB int8 buffers of B: tiles whose MMAs may be in flight at once (2, or 3 to keep the
 * tensor cores fed through a longer expansion) */
template <int BN, int NB> struct wg_smem {
    static constexpr int ROWS = WG_BM + BN;             /* packed: A rows, then B rows */
    static constexpr int INT8 = BN * 128;               /* one int8 buffer of B */
    static constexpr int PACKED = ROWS * WG_TILE_BYTES; /* one packed stage */
    static constexpr int BYTES = NB * INT8 + WG_STAGES * PACKED + 1024; /* + alignment room */
};

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

/* ---- the pieces both kernels use: a thread's share of one packed k-tile load, of one
 * B expansion, its A fragments, and the epilogue of its accumulators ---- */

/* Packed k-tile kt of the CTA's A rows (m0 …) and B rows (n0 …) → stage st, 16-byte
 * chunks t, t + nt, … (chunk c of row r at c ^ ((r >> 1) & 3): conflict-free reads below);
 * rows or k past the matrix are zero-filled. */
template <int BN>
__device__ __forceinline__ void load_packed(uint8_t *st, int kt, int t, int nt, const uint8_t *qx,
                                            const uint8_t *qw, int m0, int n0, int M, int N, int KB)
{
    constexpr int ROWS = WG_BM + BN;
#pragma unroll
    for (int i = t; i < ROWS * 4; i += nt) {
        const int r = i >> 2, c = i & 3, kbyte = kt * WG_TILE_BYTES + c * 16;
        const bool isa = r < WG_BM;
        const int row = isa ? m0 + r : n0 + r - WG_BM;
        const bool valid = kbyte < KB && row < (isa ? M : N);
        const uint8_t *src = isa ? qx : qw;
        cp_async16(st + r * WG_TILE_BYTES + ((c ^ ((r >> 1) & 3)) << 4),
                   valid ? src + (size_t)row * KB + kbyte : src, valid);
    }
}

/* The B rows of packed stage st → int8 buffer dst: warp w of nw takes 8-row groups w,
 * w + nw, …, lane = (16-byte chunk c, row rl); packed chunk c becomes the int8 chunks 2c
 * (even elements) and 2c + 1 (odd elements) of its row, swizzled; then the fence that lets
 * the async proxy (wgmma) see these generic-proxy stores. */
template <int BN>
__device__ __forceinline__ void expand_b(uint8_t *dst, const uint8_t *st, int w, int nw, int lane)
{
    const int rl = lane & 7, c = lane >> 3;
#pragma unroll
    for (int grp = w; grp < BN / 8; grp += nw) {
        const int r = WG_BM + grp * 8 + rl;
        const uint4 v = *reinterpret_cast<const uint4 *>(st + r * WG_TILE_BYTES +
                                                         ((c ^ ((r >> 1) & 3)) << 4));
        uint8_t *d = dst + (grp * 8 + rl) * 128;
        *reinterpret_cast<uint4 *>(d + (((2 * c) ^ rl) << 4)) =
            make_uint4(nib_even(v.x), nib_even(v.y), nib_even(v.z), nib_even(v.w));
        *reinterpret_cast<uint4 *>(d + (((2 * c + 1) ^ rl) << 4)) =
            make_uint4(nib_odd(v.x), nib_odd(v.y), nib_odd(v.z), nib_odd(v.w));
    }
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

/* A thread's A fragments of a k-tile, straight from its packed stage: for k-step s, word t
 * of chunk s of rows r0 and r0 + 8 (the codes that B's int8 chunks 2s and 2s + 1 hold at
 * positions 4t..4t+3, even and odd elements). */
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

/* The thread's outputs: accumulator 4j + 2·half + e is (row rbase + 8·half, column
 * cbase + 8j + e). MODE 0: (acc >> 8)·sx, MODE 1: the fp32 block sums, then both through
 * the bit-exact epilogue; MODE 2: acc >> 8. */
template <int MODE, int BN>
__device__ __forceinline__ void store_tile(const int (&acc)[BN / 2], const float *facc, uint16_t *y,
                                           int32_t *acc_out, const float *sx, const float *sw,
                                           const uint16_t *residual, int M, int N, int rbase,
                                           int cbase)
{
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int row = rbase + 8 * half;
        if (row >= M)
            continue;
        const float sxr = MODE == 0 ? sx[row] : 0.f;
#pragma unroll
        for (int j = 0; j < BN / 8; j++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int col = cbase + 8 * j + e, i = 4 * j + 2 * half + e;
                if (col >= N)
                    continue;
                const size_t at = (size_t)row * N + col;
                if constexpr (MODE == 2) {
                    acc_out[at] = acc[i] >> 8;
                } else {
                    const float v = MODE == 0 ? __fmul_rn((float)(acc[i] >> 8), sxr) : facc[MODE == 1 ? i : 0];
                    y[at] = epilogue_bf16(v, sw[col], residual, at);
                }
            }
        }
    }
}

/* MODE 0: bf16 out, one K-block; 1: bf16 out, kblocks > 1 (BN = 128); 2: int32 out. */
template <int MODE, int BN, int NB>
__global__ void __launch_bounds__(WG_THREADS, 1)
    w4a4_gemm_wgmma(uint16_t *__restrict__ y, int32_t *__restrict__ acc_out,
                    const uint8_t *__restrict__ qx, const float *__restrict__ sx, int kblocks,
                    const uint8_t *__restrict__ qw, const float *__restrict__ sw, int M, int N,
                    int K, const uint16_t *residual)
{
    static_assert(MODE != 1 || BN == 128, "kblocks > 1 keeps fp32 block sums beside the int32 ones");
    static_assert(NB == 2 || (NB == 3 && MODE != 1), "a third A-fragment set does not fit MODE 1's registers");
    using S = wg_smem<BN, NB>;
    constexpr int R = BN / 2; /* accumulators per thread */
    extern __shared__ __align__(1024) uint8_t smem_raw[];
    uint8_t *const i8 = align_1k(smem_raw);
    uint8_t *const packed = i8 + NB * S::INT8;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
    const int m0 = blockIdx.y * WG_BM, n0 = blockIdx.x * BN;
    const int KB = K / 2, ntiles = (K + 127) / 128, blen = K / kblocks;
    const int r0 = wg * 64 + (warp & 3) * 16 + (lane >> 2); /* the thread's A rows r0, r0 + 8 */

    int acc[R];
    float facc[MODE == 1 ? R : 1];
#pragma unroll
    for (int i = 0; i < R; i++)
        acc[i] = 0;
#pragma unroll
    for (int i = 0; i < (MODE == 1 ? R : 1); i++)
        facc[i] = 0.f;
    auto stage = [&](int kt) { return packed + (kt % WG_STAGES) * S::PACKED; };
    /* fp32 block sums (MODE 1): v += (acc >> 8)·sx[t, b], in block order as the C reference;
     * the next MMA then restarts the int32 sums (scale-d = 0) */
    auto flush = [&](int b) {
        const float s0 = sx[(size_t)min(m0 + r0, M - 1) * kblocks + b];
        const float s1 = sx[(size_t)min(m0 + r0 + 8, M - 1) * kblocks + b];
#pragma unroll
        for (int i = 0; i < R; i++) {
            facc[MODE == 1 ? i : 0] = __fadd_rn(facc[MODE == 1 ? i : 0],
                                                __fmul_rn((float)(acc[i] >> 8), (i & 2) ? s1 : s0));
        }
    };

#pragma unroll
    for (int s = 0; s < WG_STAGES - 1; s++) {
        if (s < ntiles)
            load_packed<BN>(stage(s), s, tid, WG_THREADS, qx, qw, m0, n0, M, N, KB);
        cp_async_commit();
    }

    int keep = 1; /* scale-d of the next MMA */
    /* One k-tile. The A fragments rotate through NB register sets (af[u]: the loop below is
     * unrolled by NB so all stay in registers): the MMAs of the last NB − 1 tiles may still
     * read theirs; the wait at the end of each tile (tile kt − NB + 1 done) frees the set and
     * the int8 buffer that the next tile overwrites. */
    auto tile = [&](int kt, uint32_t (&af)[16]) {
        cp_async_wait<WG_STAGES - 2>();
        /* tile kt has landed for every thread, and every warpgroup has waited for the MMAs
         * of tile kt − NB, the last readers of the int8 buffer that tile kt now fills */
        __syncthreads();
        if (kt + WG_STAGES - 1 < ntiles)
            load_packed<BN>(stage(kt + WG_STAGES - 1), kt + WG_STAGES - 1, tid, WG_THREADS, qx,
                            qw, m0, n0, M, N, KB);
        cp_async_commit();
        expand_b<BN>(i8 + (kt % NB) * S::INT8, stage(kt), warp, WG_THREADS / 32, lane);
        load_a(af, stage(kt), r0, lane);
        __syncthreads();

        const uint8_t *b = i8 + (kt % NB) * S::INT8;
        wgmma_fence();
#pragma unroll
        for (int s = 0; s < 4; s++) {
            wgmma_s8<BN>(acc, af + 4 * s, smem_desc(b + 32 * s), keep);
            if constexpr (MODE == 1) {
                keep = 1;
                const int kend = kt * 128 + 32 * (s + 1);
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
        wgmma_wait<NB - 1>();
    };
    uint32_t af[NB][16];
    int kt = 0;
    for (; kt + NB - 1 < ntiles; kt += NB)
#pragma unroll
        for (int u = 0; u < NB; u++)
            tile(kt + u, af[u]);
#pragma unroll
    for (int u = 0; u < NB - 1; u++)
        if (kt + u < ntiles)
            tile(kt + u, af[u]);
    wgmma_wait<0>();
    acc_fence(acc);
    cp_async_wait<0>();

    store_tile<MODE, BN>(acc, facc, y, acc_out, sx, sw, residual, M, N, m0 + r0, n0 + 2 * (lane & 3));
}

/* ---- the warp-specialised form (fq_w4a4_wgmma_config(FQ_WGMMA_WARPSPEC); tests and
 * benchmarks until it has been measured) ----
 * Why: in the kernel above the same 8 warps load, expand and issue, one tile of MMAs is in
 * flight, and every tile pays two CTA barriers; measured, it is no faster than mma.sync
 * (bench/NOTES.md, session 9, calls 4–6) although neither its shared-memory bytes nor bank
 * conflicts bound it. Here a producer warpgroup (warps 0–3, few registers) does the
 * cp.async of packed tiles and the B expansion into WS_STAGES stages, and two consumer
 * warpgroups (warps 4–11; setmaxnreg moves registers: 56 per producer thread, 224 per
 * consumer thread, 64 512 of the 65 536) only load A fragments and issue
 * MMAs. They meet at two mbarriers per stage: full (128 producer arrivals: packed A and
 * int8 B of the tile are in place) and empty (256 consumer arrivals: the tile's MMAs are
 * done and its A fragments read). One stage: int8 B (1 KiB aligned, swizzled), then the
 * packed A and B rows. MODE 0 and 2 (one K-block); kblocks > 1 stays on the kernel above. */
constexpr int WS_STAGES = 3, WS_THREADS = 384;
template <int BN> struct ws_smem {
    static constexpr int INT8 = wg_smem<BN, 2>::INT8, PACKED = wg_smem<BN, 2>::PACKED;
    static constexpr int STAGE = INT8 + PACKED; /* a multiple of 1 KiB */
    /* barriers in the first KiB, the stages after it, 1 KiB of alignment room */
    static constexpr int BYTES = 1024 + WS_STAGES * STAGE + 1024;
};

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

template <int MODE, int BN>
__global__ void __launch_bounds__(WS_THREADS, 1)
    w4a4_gemm_ws(uint16_t *__restrict__ y, int32_t *__restrict__ acc_out,
                 const uint8_t *__restrict__ qx, const float *__restrict__ sx,
                 const uint8_t *__restrict__ qw, const float *__restrict__ sw, int M, int N, int K,
                 const uint16_t *residual)
{
    static_assert(MODE != 1, "kblocks > 1 runs on w4a4_gemm_wgmma");
    using S = ws_smem<BN>;
    extern __shared__ __align__(1024) uint8_t smem_raw[];
    uint8_t *const base = align_1k(smem_raw);
    uint64_t *const full = reinterpret_cast<uint64_t *>(base), *const empty = full + WS_STAGES;
    auto i8 = [&](int s) { return base + 1024 + s * S::STAGE; };
    auto packed = [&](int s) { return base + 1024 + s * S::STAGE + S::INT8; };
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
    const int m0 = blockIdx.y * WG_BM, n0 = blockIdx.x * BN;
    const int KB = K / 2, ntiles = (K + 127) / 128;
    if (tid == 0)
        for (int s = 0; s < WS_STAGES; s++) {
            mbar_init(full + s, 128);
            mbar_init(empty + s, 256);
        }
    __syncthreads();

    if (wg == 0) { /* producer */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 56;\n" ::: "memory");
        /* tile kt + 1's copies are in flight while tile kt is expanded; a stage is
         * refilled once the consumers have released its previous tile */
        auto issue = [&](int kt) {
            const int s = kt % WS_STAGES;
            if (kt >= WS_STAGES)
                mbar_wait(empty + s, (kt / WS_STAGES - 1) & 1);
            load_packed<BN>(packed(s), kt, tid, 128, qx, qw, m0, n0, M, N, KB);
        };
        issue(0);
        cp_async_commit();
        for (int kt = 0; kt < ntiles; kt++) {
            if (kt + 1 < ntiles)
                issue(kt + 1);
            cp_async_commit();
            cp_async_wait<1>();
            /* every producer thread's chunks of tile kt have landed */
            asm volatile("bar.sync 1, 128;\n" ::: "memory");
            const int s = kt % WS_STAGES;
            expand_b<BN>(i8(s), packed(s), warp, 4, lane);
            mbar_arrive(full + s);
        }
        return;
    }

    asm volatile("setmaxnreg.inc.sync.aligned.u32 224;\n" ::: "memory");
    constexpr int R = BN / 2;
    const int r0 = (wg - 1) * 64 + (warp & 3) * 16 + (lane >> 2);
    int acc[R];
#pragma unroll
    for (int i = 0; i < R; i++)
        acc[i] = 0;
    /* two A-fragment sets (the loop is unrolled by two): tile kt's MMAs may still read one
     * while tile kt + 1 loads the other; the wait after each tile's issue (tile kt − 1
     * done) frees the set and the stage of tile kt − 1 */
    auto tile = [&](int kt, uint32_t (&af)[16]) {
        const int s = kt % WS_STAGES;
        mbar_wait(full + s, (kt / WS_STAGES) & 1);
        load_a(af, packed(s), r0, lane);
        wgmma_fence();
#pragma unroll
        for (int k = 0; k < 4; k++)
            wgmma_s8<BN>(acc, af + 4 * k, smem_desc(i8(s) + 32 * k), 1);
        wgmma_commit();
        wgmma_wait<1>();
        if (kt >= 1)
            mbar_arrive(empty + (kt - 1) % WS_STAGES);
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
    store_tile<MODE, BN>(acc, nullptr, y, acc_out, sx, sw, residual, M, N, m0 + r0,
                         n0 + 2 * (lane & 3));
}

template <int MODE, int BN>
int launch_ws(fq_cuda_ctx *ctx, const char *where, uint16_t *y, int32_t *acc, const uint8_t *qx,
              const float *sx, const uint8_t *qw, const float *sw, int M, int N, int K,
              const uint16_t *residual)
{
    auto kern = w4a4_gemm_ws<MODE, BN>;
    const int smem = ws_smem<BN>::BYTES;
    CU_CHECK(fq_smem_optin((const void *)kern, ctx->device, smem), FILE_, where, "cudaFuncSetAttribute");
    dim3 grid((N + BN - 1) / BN, (M + WG_BM - 1) / WG_BM);
    kern<<<grid, WS_THREADS, smem, CTX_STREAM(ctx)>>>(y, acc, qx, sx, qw, sw, M, N, K, residual);
    LAUNCH_CHECK(FILE_, where, "w4a4_gemm_ws");
    return FQ_OK;
}

template <int MODE, int BN, int NB>
int launch_nb(fq_cuda_ctx *ctx, const char *where, uint16_t *y, int32_t *acc, const uint8_t *qx,
              const float *sx, int kblocks, const uint8_t *qw, const float *sw, int M, int N,
              int K, const uint16_t *residual)
{
    auto kern = w4a4_gemm_wgmma<MODE, BN, NB>;
    const int smem = wg_smem<BN, NB>::BYTES;
    CU_CHECK(fq_smem_optin((const void *)kern, ctx->device, smem), FILE_, where, "cudaFuncSetAttribute");
    dim3 grid((N + BN - 1) / BN, (M + WG_BM - 1) / WG_BM);
    kern<<<grid, WG_THREADS, smem, CTX_STREAM(ctx)>>>(y, acc, qx, sx, kblocks, qw, sw, M, N, K, residual);
    LAUNCH_CHECK(FILE_, where, "w4a4_gemm_wgmma");
    return FQ_OK;
}

/* fq_w4a4_wgmma_config's choice (process-wide, for tests and benchmarks) */
int g_wg_form = FQ_WGMMA_3BUF;

template <int MODE, int BN>
int launch(fq_cuda_ctx *ctx, const char *where, uint16_t *y, int32_t *acc, const uint8_t *qx,
           const float *sx, int kblocks, const uint8_t *qw, const float *sw, int M, int N, int K,
           const uint16_t *residual)
{
    if constexpr (MODE != 1) {
        if (g_wg_form == FQ_WGMMA_3BUF)
            return launch_nb<MODE, BN, 3>(ctx, where, y, acc, qx, sx, kblocks, qw, sw, M, N, K,
                                          residual);
        if (g_wg_form == FQ_WGMMA_WARPSPEC)
            return launch_ws<MODE, BN>(ctx, where, y, acc, qx, sx, qw, sw, M, N, K, residual);
    }
    return launch_nb<MODE, BN, 2>(ctx, where, y, acc, qx, sx, kblocks, qw, sw, M, N, K, residual);
}

/* 256-wide tiles unless 128-wide ones finish sooner: one CTA per SM, so a tile count just
 * over a multiple of the SMs costs a whole wave (rounded-up waves × tile width). */
int pick_bn(const fq_cuda_ctx *ctx, int M, int N)
{
    const long sms = ctx->sm_count > 0 ? ctx->sm_count : 1, mt = (M + WG_BM - 1) / WG_BM;
    const long w256 = (mt * ((N + 255) / 256) + sms - 1) / sms, w128 = (mt * ((N + 127) / 128) + sms - 1) / sms;
    return w128 * 128 < w256 * 256 ? 128 : 256;
}

} // namespace

int w4a4_gemm_wgmma_launch(fq_cuda_ctx *ctx, const char *where, uint16_t *y, int32_t *acc,
                           const uint8_t *qx, const float *sx, int kblocks, const uint8_t *qw,
                           const float *sw, int M, int N, int K, const uint16_t *residual)
{
    if (acc)
        return pick_bn(ctx, M, N) == 256
                   ? launch<2, 256>(ctx, where, y, acc, qx, sx, 1, qw, sw, M, N, K, residual)
                   : launch<2, 128>(ctx, where, y, acc, qx, sx, 1, qw, sw, M, N, K, residual);
    if (kblocks > 1)
        return launch<1, 128>(ctx, where, y, acc, qx, sx, kblocks, qw, sw, M, N, K, residual);
    return pick_bn(ctx, M, N) == 256
               ? launch<0, 256>(ctx, where, y, acc, qx, sx, 1, qw, sw, M, N, K, residual)
               : launch<0, 128>(ctx, where, y, acc, qx, sx, 1, qw, sw, M, N, K, residual);
}

extern "C" int fq_w4a4_wgmma_config(int variant)
{
    if (variant != FQ_WGMMA_2BUF && variant != FQ_WGMMA_3BUF && variant != FQ_WGMMA_WARPSPEC)
        return fq_error(FILE_ ":fq_w4a4_wgmma_config: variant %d (expected FQ_WGMMA_2BUF, "
                        "FQ_WGMMA_3BUF, the default, or FQ_WGMMA_WARPSPEC)", variant);
    g_wg_form = variant;
    return FQ_OK;
}
