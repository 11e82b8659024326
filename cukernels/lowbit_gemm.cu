// W4A4 / W3A3 GEMM on int8 tensor cores (mma.sync m16n8k32 s8), per-cluster activation zero
// points corrected exactly, per-cluster int32 sums and the float32 epilogue (docs/kernels.md).
//
//   isum[c, m, n] = wrap32( sum_{k in cluster c} a[m, k] * w[n, k]  -  z[c] * colsum[c, n] )
//   y[m, n]       = acc_{C-1} (+ bias[n]),  acc_c = acc_{c-1} + (f32(isum[c, m, n]) * s_a[c]) * s_w[n]
//
// Operands are packed rows along cluster-padded K (each cluster a multiple of 32 codes, padding
// codes 0): int4_lo_first (4-bit) or int3_planar (3-bit), signed. A K tile of 32 codes never
// straddles two clusters, so the int32 accumulators restart at each cluster boundary. The
// products and sums of the epilogue are __fmul_rn / __fadd_rn: no contraction into FMA.
#include "common.cuh"

#define BM 64
#define BN 64
#define BK 32
#define SROW 12  // words per shared-memory row: 8 data + 4 pad (fragment loads hit 32 banks)

__device__ __forceinline__ void mma_s8_16832(int (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Unpack rows [row0, row0 + 64) of one 32-code K tile (tile index kt) into shared int8 rows.
// Accumulator fragment e (0..3) of an m16n8k32 tile at (16 i, 8 j) of a warp's 32 x 32 block:
// lane = 4 g + t holds rows g and g + 8, columns 2 t and 2 t + 1 (PTX ISA, mma.m16n8k32 s32 layout).
__device__ __forceinline__ int frag_row(int i, int g, int e) { return 16 * i + g + 8 * (e / 2); }
__device__ __forceinline__ int frag_col(int j, int t, int e) { return 8 * j + 2 * t + (e % 2); }

// Tile of block t, all tiles on gridDim.x (gridDim.y would limit M to 65535 tiles), in grouped
// order: GROUP_M tile rows walked column by column (host.lowbit_gemm_tile is the twin).
#define GROUP_M 8
__device__ __forceinline__ void gemm_tile(int t, int M, int N, int &tm, int &tn) {
    const int tiles_m = (M + BM - 1) / BM, tiles_n = (N + BN - 1) / BN;
    const int per_group = GROUP_M * tiles_n;
    const int first = (t / per_group) * GROUP_M;
    const int rows = min(tiles_m - first, GROUP_M);
    tm = first + (t % per_group) % rows;
    tn = (t % per_group) / rows;
}

template <int BITS>
__device__ __forceinline__ void load_tile(u32 (*dst)[SROW], const u8 *src, i64 ld, int rows, int row0, int kt) {
    const int tid = threadIdx.x;
    if (BITS == 4) {
        // 16 bytes (4 words) per row and tile; 256 words, two per thread.
#pragma unroll
        for (int rep = 0; rep < 2; ++rep) {
            const int r = tid / 4 + rep * 32, w = tid % 4;
            u32 lo = 0, hi = 0;
            if (row0 + r < rows) {
                const u32 word = *(const u32 *)(src + (i64)(row0 + r) * ld + (i64)kt * 16 + 4 * w);
                unpack8_int4(word, lo, hi);
            }
            dst[r][2 * w] = lo;
            dst[r][2 * w + 1] = hi;
        }
    } else {
        // 12 bytes (3 words) per row and tile; each thread unpacks one half block (16 codes).
        const int r = tid / 2, h = tid % 2;
        u32 out[4] = {0, 0, 0, 0};
        if (row0 + r < rows) {
            const u32 *p = (const u32 *)(src + (i64)(row0 + r) * ld + (i64)kt * 12);
            const u32 w0 = p[0], w1 = p[1], w2 = p[2];
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                const int j = 16 * h + 4 * q;
                out[q] = pack4_int8(planar3_code(w0, w1, w2, j, true), planar3_code(w0, w1, w2, j + 1, true),
                                    planar3_code(w0, w1, w2, j + 2, true), planar3_code(w0, w1, w2, j + 3, true));
            }
        }
#pragma unroll
        for (int q = 0; q < 4; ++q) dst[r][4 * h + q] = out[q];
    }
}

template <int BITS>
__device__ void lowbit_gemm(const u8 *__restrict__ A, i64 lda, const u8 *__restrict__ W, i64 ldw,
                            const int *__restrict__ a_zero, const int *__restrict__ w_colsum,
                            const int *__restrict__ poff, int C, const float *__restrict__ scale_a,
                            const float *__restrict__ scale_w, const float *__restrict__ bias,
                            int *__restrict__ out_isums, float *__restrict__ out_y, int M, int N) {
    __shared__ u32 As[BM][SROW];
    __shared__ u32 Ws[BN][SROW];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int g = lane / 4, t = lane % 4;
    const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
    int tm, tn;
    gemm_tile(blockIdx.x, M, N, tm, tn);
    const int m0 = tm * BM, n0 = tn * BN;

    float yacc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) yacc[i][j][e] = 0.0f;

    for (int c = 0; c < C; ++c) {
        int acc[2][4][4];
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[i][j][e] = 0;
        for (int kt = poff[c] / BK; kt < poff[c + 1] / BK; ++kt) {
            load_tile<BITS>(As, A, lda, M, m0, kt);
            load_tile<BITS>(Ws, W, ldw, N, n0, kt);
            __syncthreads();
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int r = wm + 16 * i + g;
                const u32 a[4] = {As[r][t], As[r + 8][t], As[r][t + 4], As[r + 8][t + 4]};
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const int nr = wn + 8 * j + g;
                    mma_s8_16832(acc[i][j], a, Ws[nr][t], Ws[nr][t + 4]);
                }
            }
            __syncthreads();
        }
        // Zero-point correction in wrapping 32-bit arithmetic (unsigned: defined overflow).
        const u32 z = (u32)a_zero[c];
        const float sa = scale_a[c];
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int m = m0 + wm + frag_row(i, g, e);
                    const int n = n0 + wn + frag_col(j, t, e);
                    if (m < M && n < N) {
                        const int isum = (int)((u32)acc[i][j][e] - z * (u32)w_colsum[(i64)c * N + n]);
                        if (out_isums) out_isums[((i64)c * M + m) * N + n] = isum;  // null: y only
                        yacc[i][j][e] =
                            __fadd_rn(yacc[i][j][e], __fmul_rn(__fmul_rn(__int2float_rn(isum), sa), scale_w[n]));
                    }
                }
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int m = m0 + wm + frag_row(i, g, e);
                const int n = n0 + wn + frag_col(j, t, e);
                if (m < M && n < N) {
                    const float y = yacc[i][j][e];
                    out_y[(i64)m * N + n] = bias ? __fadd_rn(y, bias[n]) : y;
                }
            }
}

extern "C" __global__ void __launch_bounds__(128)
lowbit_gemm_w4a4(const u8 *A, i64 lda, const u8 *W, i64 ldw, const int *a_zero, const int *w_colsum,
                 const int *poff, int C, const float *scale_a, const float *scale_w, const float *bias,
                 int *out_isums, float *out_y, int M, int N) {
    lowbit_gemm<4>(A, lda, W, ldw, a_zero, w_colsum, poff, C, scale_a, scale_w, bias, out_isums, out_y, M, N);
}

extern "C" __global__ void __launch_bounds__(128)
lowbit_gemm_w3a3(const u8 *A, i64 lda, const u8 *W, i64 ldw, const int *a_zero, const int *w_colsum,
                 const int *poff, int C, const float *scale_a, const float *scale_w, const float *bias,
                 int *out_isums, float *out_y, int M, int N) {
    lowbit_gemm<3>(A, lda, W, ldw, a_zero, w_colsum, poff, C, scale_a, scale_w, bias, out_isums, out_y, M, N);
}
