// W4A16 / W3A16 GEMV-GEMM (M <= 16) with fp16 activations and GPTQ-style unsigned weight codes.
//   w[n, k] = fl32((q[n, k] - zeros[n, k / g]) * scales[n, k / g])      (= refsim.dequantize)
//   y[m, n] = sum_k x[m, k] * w[n, k]                                   float32, FMA, any order
// A float result: cukernels.reference.wxa16_reference states the bound it must meet
// (gamma_K * sum |x| |w|, which holds for any summation order). Weight rows: int4_word32
// (16 bytes per 32 codes) or int3_planar (12 bytes), K padded to a multiple of 32 with code 0.
//
// Structure (docs/kernels.md, "wxa16"):
//  - one kernel per (BITS, M): the M loop is unrolled at compile time, nothing is predicated on M;
//  - a block of WX_WARPS warps handles WX_WARPS * WX_CPW output columns; each warp WX_CPW of them
//    (host.wxa16_columns_per_warp is its twin);
//  - K is walked in chunks of WX_KC = 1024 codes; lane l covers the 32 contiguous codes
//    [32 l, 32 l + 32) of a chunk, so a warp's weight loads are contiguous (one 128-bit load per
//    lane and column for int4, all WX_CPW of them issued before any is used);
//  - the chunk of x is staged once per block in shared memory as float32 (zero beyond K, so the
//    padded codes add exactly 0), XOR-swizzled by 16-byte unit so that the 128-bit reads of
//    8 lanes 128 bytes apart fall in distinct banks (host.wxa16_swizzle is its twin);
//  - dequantization by the magic number 0x6400 (fp16 1024.0): the half with bits 0x6400 | q is
//    1024 + q exactly (q < 1024), and (1024 + q) - (1024 + z) = q - z exactly in fp16 (both
//    integers <= 2048), so one LOP3 and one HSUB2 give two exact differences; then
//    fl32((q - z) * s) is exact too (a 5-bit integer times an 11-bit significand), as the
//    reference's dequantize computes it;
//  - zero points arrive as one byte per group (the launcher compacts the int32 input once).
#include "common.cuh"

#define WX_WARPS 8
#define WX_THREADS (32 * WX_WARPS)
// Columns per warp: 4 while M <= 4 (more weight loads in flight, the x reads shared by more columns),
// 2 above (the M x WX_CPW accumulators and x registers must fit without spilling).
#define WX_CPW_OF(M) ((M) <= 4 ? 4 : 2)
#define WX_KC 1024
// Blocks per SM ptxas must fit (register budget): 3 for M <= 2 (the GEMV needs many loads in flight),
// 2 up to M = 4, then 1, which lets the M x WX_CPW accumulators use up to 255 registers (with 2,
// ptxas capped M = 11 and 15 at 128 registers and spilled).
#define WX_MIN_BLOCKS(M) ((M) <= 2 ? 3 : (M) <= 4 ? 2 : 1)

// Float index of code position p (0..WX_KC-1) of a chunk row in shared memory.
__device__ __forceinline__ int wx_swizzle(int p) { return (p & ~31) | ((((p >> 2) & 7) ^ ((p >> 5) & 7)) << 2) | (p & 3); }

__device__ __forceinline__ u32 wx_magic_pair(u32 word, int shift) {
    // codes at bit offsets shift and shift + 16 of the word, as two fp16 1024 + q
    return ((word >> shift) & 0x000F000Fu) | 0x64006400u;
}

// Codes j (low half) and j + 16 (high half) of an int3_planar block (w0: low fields of codes
// 0..15, w1: of 16..31, at bits 2j; w2: the high bit of code j at bit j), as two fp16 1024 + q.
__device__ __forceinline__ u32 wx_planar3_pair(u32 w0, u32 w1, u32 w2, int j) {
    const u32 lo = (w0 >> (2 * j)) & 3u;
    const u32 hi = ((w1 >> (2 * j)) & 3u) << 16;
    const u32 top = ((w2 >> j) & 0x00010001u) << 2;
    return lo | hi | top | 0x64006400u;
}

// The 4 floats of x at 16-byte unit u (0..7) of lane's 32 positions, row m, from the swizzled chunk.
__device__ __forceinline__ float4 wx_x4(const float *xs, int m, int lane, int u) {
    return *(const float4 *)(xs + m * WX_KC + 32 * lane + 4 * (u ^ (lane & 7)));
}

__device__ __forceinline__ float wx_get(const float4 &v, int e) { return e == 0 ? v.x : e == 1 ? v.y : e == 2 ? v.z : v.w; }

template <int BITS, int M, int WX_CPW = WX_CPW_OF(M)>
__device__ void wxa16(const __half *__restrict__ x, i64 ldx, const u8 *__restrict__ W, i64 ldw,
                      const __half *__restrict__ scales, i64 lds, const u8 *__restrict__ zeros, i64 ldz, int g,
                      float *__restrict__ out, int N, int K) {
    extern __shared__ float xs[];  // [M][WX_KC], swizzled
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int n0 = (blockIdx.x * WX_WARPS + warp) * WX_CPW;
    const int blocks = (K + 31) / 32;  // 32-code blocks of a (padded) weight row
    int nrow[WX_CPW];
#pragma unroll
    for (int cc = 0; cc < WX_CPW; ++cc) nrow[cc] = min(n0 + cc, N - 1);  // a column past N repeats N - 1 (not stored)
    float acc[M][WX_CPW];
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
        for (int cc = 0; cc < WX_CPW; ++cc) acc[m][cc] = 0.0f;

    // Group of the lane's block blk = c0 / 32 + lane, kept as grp = blk / bpg, rem = blk % bpg without
    // a division in the loop (g is a multiple of 32, so a 32-code block lies in one group).
    const int bpg = g / 32, step_q = 32 / bpg, step_r = 32 % bpg;
    int grp = lane / bpg, rem = lane % bpg;
    for (int c0 = 0; c0 < K; c0 += WX_KC) {
        __syncthreads();  // the previous chunk's readers are done
#pragma unroll 4
        for (int r = 0; r < M * WX_KC / WX_THREADS; ++r) {
            const int i = r * WX_THREADS + threadIdx.x;
            const int m = i / WX_KC, p = i % WX_KC, k = c0 + p;
            xs[m * WX_KC + wx_swizzle(p)] = k < K ? __half2float(x[(i64)m * ldx + k]) : 0.0f;
        }
        __syncthreads();
        const int blk = c0 / 32 + lane;
        if (c0 > 0) {  // blk advanced by 32 blocks: 32 = step_q * bpg + step_r
            grp += step_q;
            rem += step_r;
            if (rem >= bpg) {
                rem -= bpg;
                ++grp;
            }
        }
        if (blk >= blocks) continue;  // lane-uniform: a lane past the row's end has nothing to add
        if (BITS == 4) {
            uint4 v[WX_CPW];
            float s[WX_CPW];
            u32 zz[WX_CPW];
#pragma unroll
            for (int cc = 0; cc < WX_CPW; ++cc) {
                v[cc] = *(const uint4 *)(W + (i64)nrow[cc] * ldw + (i64)blk * 16);
                s[cc] = __half2float(scales[(i64)nrow[cc] * lds + grp]);
                const u32 zh = 0x6400u | zeros[(i64)nrow[cc] * ldz + grp];  // fp16 1024 + z
                zz[cc] = zh | (zh << 16);
            }
#pragma unroll
            for (int wi = 0; wi < 4; ++wi) {
                // x at the word's 8 positions 8 wi .. 8 wi + 7: units 2 wi, 2 wi + 1, read once for all columns
                float4 xa[M], xb[M];
#pragma unroll
                for (int m = 0; m < M; ++m) {
                    xa[m] = wx_x4(xs, m, lane, 2 * wi);
                    xb[m] = wx_x4(xs, m, lane, 2 * wi + 1);
                }
#pragma unroll
                for (int cc = 0; cc < WX_CPW; ++cc) {
                    const u32 word = wi == 0 ? v[cc].x : wi == 1 ? v[cc].y : wi == 2 ? v[cc].z : v[cc].w;
#pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        // nibbles j and j + 4 of the word: positions 8 wi + j (unit 2 wi) and 8 wi + j + 4 (unit 2 wi + 1)
                        const u32 q2 = wx_magic_pair(word, 4 * j);
                        const __half2 d = __hsub2(*(const __half2 *)&q2, *(const __half2 *)&zz[cc]);
                        const float wlo = __fmul_rn(__low2float(d), s[cc]), whi = __fmul_rn(__high2float(d), s[cc]);
#pragma unroll
                        for (int m = 0; m < M; ++m) {
                            acc[m][cc] = fmaf(wx_get(xa[m], j), wlo, acc[m][cc]);
                            acc[m][cc] = fmaf(wx_get(xb[m], j), whi, acc[m][cc]);
                        }
                    }
                }
            }
        } else {
            u32 w0[WX_CPW], w1[WX_CPW], w2[WX_CPW];
            float s[WX_CPW];
            u32 zz[WX_CPW];
#pragma unroll
            for (int cc = 0; cc < WX_CPW; ++cc) {
                const u32 *p = (const u32 *)(W + (i64)nrow[cc] * ldw + (i64)blk * 12);
                w0[cc] = p[0];
                w1[cc] = p[1];
                w2[cc] = p[2];
                s[cc] = __half2float(scales[(i64)nrow[cc] * lds + grp]);
                const u32 zh = 0x6400u | zeros[(i64)nrow[cc] * ldz + grp];
                zz[cc] = zh | (zh << 16);
            }
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                // positions 4 u .. 4 u + 3 (unit u) and 16 + 4 u .. (unit u + 4): codes j and j + 16 pair up
                float4 xa[M], xb[M];
#pragma unroll
                for (int m = 0; m < M; ++m) {
                    xa[m] = wx_x4(xs, m, lane, u);
                    xb[m] = wx_x4(xs, m, lane, u + 4);
                }
#pragma unroll
                for (int cc = 0; cc < WX_CPW; ++cc)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const u32 q2 = wx_planar3_pair(w0[cc], w1[cc], w2[cc], 4 * u + e);
                        const __half2 d = __hsub2(*(const __half2 *)&q2, *(const __half2 *)&zz[cc]);
                        const float wlo = __fmul_rn(__low2float(d), s[cc]), whi = __fmul_rn(__high2float(d), s[cc]);
#pragma unroll
                        for (int m = 0; m < M; ++m) {
                            acc[m][cc] = fmaf(wx_get(xa[m], e), wlo, acc[m][cc]);
                            acc[m][cc] = fmaf(wx_get(xb[m], e), whi, acc[m][cc]);
                        }
                    }
            }
        }
    }
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
        for (int cc = 0; cc < WX_CPW; ++cc) {
            float v = acc[m][cc];
#pragma unroll
            for (int d = 16; d >= 1; d /= 2) v += __shfl_xor_sync(FULL_MASK, v, d);
            if (lane == 0 && n0 + cc < N) out[(i64)m * N + n0 + cc] = v;
        }
}

// One kernel per (BITS, M): NVRTC instantiates only the one a launch needs (cupy name
// expressions "wxa16_kernel<4, 1>"); nvcc (the compile test and cukernels/sass.py) builds these.
template <int BITS, int M>
__global__ void __launch_bounds__(WX_THREADS, WX_MIN_BLOCKS(M))
wxa16_kernel(const __half *x, i64 ldx, const u8 *W, i64 ldw, const __half *scales, i64 lds, const u8 *zeros,
             i64 ldz, int g, float *out, int N, int K) {
    wxa16<BITS, M>(x, ldx, W, ldw, scales, lds, zeros, ldz, g, out, N, K);
}

#if !defined(__CUDACC_RTC__) && defined(WX_ALL_M)  // every instantiation (the slow SASS test: no spills for any M)
#define WX_INST(B, M) template __global__ void wxa16_kernel<B, M>(const __half *, i64, const u8 *, i64, const __half *, \
                                                               i64, const u8 *, i64, int, float *, int, int);
#define WX_INST_ALL(B) WX_INST(B, 2) WX_INST(B, 3) WX_INST(B, 4) WX_INST(B, 5) WX_INST(B, 6) WX_INST(B, 7) \
    WX_INST(B, 8) WX_INST(B, 9) WX_INST(B, 10) WX_INST(B, 11) WX_INST(B, 12) WX_INST(B, 13) WX_INST(B, 14) WX_INST(B, 15)
WX_INST_ALL(4)
WX_INST_ALL(3)
#endif
#ifndef __CUDACC_RTC__
template __global__ void wxa16_kernel<4, 1>(const __half *, i64, const u8 *, i64, const __half *, i64, const u8 *,
                                            i64, int, float *, int, int);
template __global__ void wxa16_kernel<4, 16>(const __half *, i64, const u8 *, i64, const __half *, i64, const u8 *,
                                             i64, int, float *, int, int);
template __global__ void wxa16_kernel<3, 1>(const __half *, i64, const u8 *, i64, const __half *, i64, const u8 *,
                                            i64, int, float *, int, int);
template __global__ void wxa16_kernel<3, 16>(const __half *, i64, const u8 *, i64, const __half *, i64, const u8 *,
                                             i64, int, float *, int, int);
#endif
