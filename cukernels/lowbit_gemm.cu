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

// Block tile BM x BN = 128 x 128, 8 warps in a 2 (M) x 4 (N) grid, each warp 64 x 32 outputs
// (4 x 4 m16n8k32 tiles). K moves one 32-code tile at a time through a STAGES-deep cp.async ring
// of packed rows in shared memory (the copies of tile kt + STAGES - 1 fly while tile kt is
// computed); each tile is unpacked once, by one thread per row, into int8 rows of SROW words, from
// which ldmatrix.x4 loads the mma fragments (docs/kernels.md; tests/test_cukernels_fragments.py
// checks every mapping against the PTX ISA). The k-tile sequence runs across clusters; the int32
// accumulators are folded into the float32 ones, and restarted, at each cluster's last tile.
#define BM 128
#define BN 128
#define BK 32
#define THREADS 256
#define STAGES 4
#define SROW 12  // words per int8 row: 8 data + 4 pad (ldmatrix row addresses 48 bytes apart: no bank conflict)
#define RAW_WORDS(BITS) ((BITS) == 4 ? 4 : 3)  // packed words per row and K tile

__device__ __forceinline__ void mma_s8_16832(int (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4(u32 (&r)[4], const void *smem) {
    const u32 addr = (u32)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// cp.async of `bytes` (16 or 4) with zero fill: src_bytes = 0 reads nothing and writes zeros.
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid) {
    const u32 d = (u32)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async4(void *dst, const void *src, bool valid) {
    const u32 d = (u32)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Accumulator fragment e (0..3) of the m16n8k32 tile (i, j) of a warp's 64 x 32 block:
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

// Issue the copies of K tile kt into ring slot `slot`: thread tid < 128 copies row tid of the A
// tile, thread tid >= 128 row tid - 128 of the W tile (rows past M or N, tiles past KT: zeros).
template <int BITS>
__device__ __forceinline__ void issue_tile(u32 (*raw)[2][BM][RAW_WORDS(BITS)], int slot, const u8 *A, i64 lda,
                                          const u8 *W, i64 ldw, int m0, int n0, int M, int N, int kt, int KT) {
    const int tid = threadIdx.x, op = tid / BM, r = tid % BM;
    const u8 *base = op ? W : A;
    const i64 ld = op ? ldw : lda;
    const int row = (op ? n0 : m0) + r;
    const bool valid = row < (op ? N : M) && kt < KT;
    const u8 *src = valid ? base + (i64)row * ld + (i64)kt * 4 * RAW_WORDS(BITS) : base;
    u32 *dst = raw[slot][op][r];
    if (BITS == 4) {
        cp_async16(dst, src, valid);
    } else {
#pragma unroll
        for (int w = 0; w < 3; ++w) cp_async4(dst + w, src + 4 * w, valid);
    }
}

// Unpack row tid % 128 of operand tid / 128 of ring slot `slot` into the int8 rows: word j of a
// row holds codes 4 j .. 4 j + 3 of the tile (the order the fragments read).
template <int BITS>
__device__ __forceinline__ void unpack_tile(const u32 (*raw)[2][BM][RAW_WORDS(BITS)], int slot, u32 (*As)[SROW],
                                           u32 (*Ws)[SROW]) {
    const int tid = threadIdx.x, op = tid / BM, r = tid % BM;
    const u32 *src = raw[slot][op][r];
    u32 *dst = op ? Ws[r] : As[r];
    u32 out[8];
    if (BITS == 4) {
        const uint4 v = *(const uint4 *)src;
        unpack8_int4(v.x, out[0], out[1]);
        unpack8_int4(v.y, out[2], out[3]);
        unpack8_int4(v.z, out[4], out[5]);
        unpack8_int4(v.w, out[6], out[7]);
    } else {
        const u32 w0 = src[0], w1 = src[1], w2 = src[2];
        // codes 8 o .. 8 o + 7: low fields in bits 16 (o % 2) .. of w0 (o < 2) or w1, high bits 8 o .. of w2
#pragma unroll
        for (int o = 0; o < 4; ++o)
            unpack8_int4(planar3_to_int4x8((o < 2 ? w0 : w1) >> (16 * (o % 2)), w2 >> (8 * o)), out[2 * o],
                         out[2 * o + 1]);
    }
    *(uint4 *)&dst[0] = make_uint4(out[0], out[1], out[2], out[3]);
    *(uint4 *)&dst[4] = make_uint4(out[4], out[5], out[6], out[7]);
}

template <int BITS>
__device__ void lowbit_gemm(const u8 *__restrict__ A, i64 lda, const u8 *__restrict__ W, i64 ldw,
                            const int *__restrict__ a_zero, const int *__restrict__ w_colsum,
                            const int *__restrict__ poff, int C, const float *__restrict__ scale_a,
                            const float *__restrict__ scale_w, const float *__restrict__ bias,
                            int *__restrict__ out_isums, float *__restrict__ out_y, int M, int N) {
    __shared__ __align__(16) u32 raw[STAGES][2][BM][RAW_WORDS(BITS)];
    __shared__ __align__(16) u32 As[BM][SROW];
    __shared__ __align__(16) u32 Ws[BN][SROW];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int g = lane / 4, t = lane % 4;
    const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;
    int tm, tn;
    gemm_tile(blockIdx.x, M, N, tm, tn);
    const int m0 = tm * BM, n0 = tn * BN;
    const int KT = poff[C] / BK;

    float yacc[4][4][4];
    int acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                yacc[i][j][e] = 0.0f;
                acc[i][j][e] = 0;
            }

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        issue_tile<BITS>(raw, s, A, lda, W, ldw, m0, n0, M, N, s, KT);
        cp_async_commit();
    }
    // ldmatrix row addresses (PTX ISA, ldmatrix .x4: lanes 8 q .. 8 q + 7 give the rows of matrix q):
    // A of m-tile i: matrices (rows 0-7, words 0-3), (rows 8-15, 0-3), (rows 0-7, 4-7), (rows 8-15, 4-7)
    // = a0..a3; W of n-tiles j, j + 1: (rows 0-7 of j, words 0-3), (0-7 of j, 4-7), (j + 1, 0-3), (j + 1, 4-7)
    // = b0, b1 of j, b0, b1 of j + 1.
    const int a_row = wm + (lane % 8) + 8 * ((lane / 8) % 2), a_word = 4 * (lane / 16);
    const int b_row = wn + 8 * (lane / 16) + (lane % 8), b_word = 4 * ((lane / 8) % 2);

    int kt_end = 0;
    for (int c = 0; c < C; ++c) {
        const int kt_begin = kt_end;  // clusters are contiguous: poff[c] = poff[c - 1] + ...
        kt_end = poff[c + 1] / BK;    // read once per cluster, not per K tile
        for (int kt = kt_begin; kt < kt_end; ++kt) {
            cp_async_wait<STAGES - 2>();  // this thread's copies of tile kt have landed
            __syncthreads();              // everyone's have; the previous tile's fragment reads are done
            unpack_tile<BITS>(raw, kt % STAGES, As, Ws);
            __syncthreads();
            // the slot of tile kt - 1, unpacked before the barrier above, takes tile kt + STAGES - 1
            issue_tile<BITS>(raw, (kt + STAGES - 1) % STAGES, A, lda, W, ldw, m0, n0, M, N, kt + STAGES - 1, KT);
            cp_async_commit();
            u32 bf[4][2];
#pragma unroll
            for (int jj = 0; jj < 4; jj += 2) {
                u32 r[4];
                ldmatrix_x4(r, &Ws[b_row + 8 * jj][b_word]);
                bf[jj][0] = r[0];
                bf[jj][1] = r[1];
                bf[jj + 1][0] = r[2];
                bf[jj + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                u32 af[4];
                ldmatrix_x4(af, &As[a_row + 16 * i][a_word]);
#pragma unroll
                for (int j = 0; j < 4; ++j) mma_s8_16832(acc[i][j], af, bf[j][0], bf[j][1]);
            }
        }
        // Zero-point correction in wrapping 32-bit arithmetic (unsigned: defined overflow), then the
        // cluster's float32 term; the int32 accumulators restart for the next cluster.
        const u32 z = (u32)a_zero[c];
        const float sa = scale_a[c];
#pragma unroll
        for (int i = 0; i < 4; ++i)
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
                    acc[i][j][e] = 0;
                }
    }
    cp_async_wait<0>();  // no copy may outlive the block
#pragma unroll
    for (int i = 0; i < 4; ++i)
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

extern "C" __global__ void __launch_bounds__(THREADS, 1)
lowbit_gemm_w4a4(const u8 *A, i64 lda, const u8 *W, i64 ldw, const int *a_zero, const int *w_colsum,
                 const int *poff, int C, const float *scale_a, const float *scale_w, const float *bias,
                 int *out_isums, float *out_y, int M, int N) {
    lowbit_gemm<4>(A, lda, W, ldw, a_zero, w_colsum, poff, C, scale_a, scale_w, bias, out_isums, out_y, M, N);
}

extern "C" __global__ void __launch_bounds__(THREADS, 1)
lowbit_gemm_w3a3(const u8 *A, i64 lda, const u8 *W, i64 ldw, const int *a_zero, const int *w_colsum,
                 const int *poff, int C, const float *scale_a, const float *scale_w, const float *bias,
                 int *out_isums, float *out_y, int M, int N) {
    lowbit_gemm<3>(A, lda, W, ldw, a_zero, w_colsum, poff, C, scale_a, scale_w, bias, out_isums, out_y, M, N);
}
