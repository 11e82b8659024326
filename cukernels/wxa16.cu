// W4A16 / W3A16 GEMV-GEMM (M <= 16) with fp16 activations and GPTQ-style unsigned weight codes.
// One warp per output column n; each lane takes 32-code blocks of the weight row in turn.
//   w[n, k] = fl32((q[n, k] - zeros[n, k / g]) * scales[n, k / g])      (= refsim.dequantize)
//   y[m, n] = sum_k x[m, k] * w[n, k]                                   float32, FMA, any order
// A float result: cukernels.reference.wxa16_reference states the bound it must meet
// (gamma_K * sum |x| |w|). Weight rows: int4_word32 (16 bytes per 32 codes) or int3_planar
// (12 bytes), K padded to a multiple of 32 with code 0; padded positions are skipped.
#include "common.cuh"

#define WX_WARPS 4
#define WX_MAX_M 16

template <int BITS>
__device__ void wxa16(const __half *__restrict__ x, i64 ldx, const u8 *__restrict__ W, i64 ldw,
                      const __half *__restrict__ scales, i64 lds, const int *__restrict__ zeros, i64 ldz, int g,
                      float *__restrict__ out, int M, int N, int K) {
    const int lane = threadIdx.x % 32;
    const int n = blockIdx.x * WX_WARPS + threadIdx.x / 32;
    if (n >= N) return;
    float acc[WX_MAX_M];
#pragma unroll
    for (int m = 0; m < WX_MAX_M; ++m) acc[m] = 0.0f;
    const int blocks = (K + 31) / 32;
    const u8 *wrow = W + (i64)n * ldw;
    for (int blk = lane; blk < blocks; blk += 32) {
        const int k0 = 32 * blk;
        const int grp = k0 / g;  // g is a multiple of 32: a block lies in one group
        const float s = __half2float(scales[(i64)n * lds + grp]);
        const int z = zeros[(i64)n * ldz + grp];
        int q[32];
        if (BITS == 4) {
            const uint4 v = *(const uint4 *)(wrow + (i64)blk * 16);
            const u32 words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int i = 0; i < 32; ++i) q[i] = (int)((words[i / 8] >> (4 * (i % 8))) & 15u);
        } else {
            const u32 *p = (const u32 *)(wrow + (i64)blk * 12);
            const u32 w0 = p[0], w1 = p[1], w2 = p[2];
#pragma unroll
            for (int i = 0; i < 32; ++i) q[i] = planar3_code(w0, w1, w2, i, false);
        }
#pragma unroll
        for (int i = 0; i < 32; ++i) {
            const int k = k0 + i;
            if (k < K) {
                const float wd = __fmul_rn((float)(q[i] - z), s);
#pragma unroll
                for (int m = 0; m < WX_MAX_M; ++m)
                    if (m < M) acc[m] = fmaf(__half2float(x[(i64)m * ldx + k]), wd, acc[m]);
            }
        }
    }
#pragma unroll
    for (int m = 0; m < WX_MAX_M; ++m) {
        if (m < M) {
            float v = acc[m];
#pragma unroll
            for (int d = 16; d >= 1; d /= 2) v += __shfl_xor_sync(FULL_MASK, v, d);
            if (lane == 0) out[(i64)m * N + n] = v;
        }
    }
}

extern "C" __global__ void __launch_bounds__(32 * WX_WARPS)
wxa16_w4(const __half *x, i64 ldx, const u8 *W, i64 ldw, const __half *scales, i64 lds, const int *zeros, i64 ldz,
         int g, float *out, int M, int N, int K) {
    wxa16<4>(x, ldx, W, ldw, scales, lds, zeros, ldz, g, out, M, N, K);
}

extern "C" __global__ void __launch_bounds__(32 * WX_WARPS)
wxa16_w3(const __half *x, i64 ldx, const u8 *W, i64 ldw, const __half *scales, i64 lds, const int *zeros, i64 ldz,
         int g, float *out, int M, int N, int K) {
    wxa16<3>(x, ldx, W, ldw, scales, lds, zeros, ldz, g, out, M, N, K);
}
