// Fused LayerNorm + RPTQ reorder + per-cluster asymmetric quantization + packing (int4, int3).
// One warp per row. The float32 order is cukernels.reference.layernorm_warp_order:
//   lane sums over h = lane, lane + 32, ... ascending; butterfly over lane distance 16..1;
//   mean = sum / H; var = (same order over d * d) / H; rstd = 1 / sqrt(var + eps);
//   y = ((x - mean) * rstd) * gamma + beta; every op correctly rounded (_rn intrinsics).
// Output position j (cluster-padded K) takes original channel src_index[j] (-1: padding, code 0)
// and quantizes it with its cluster's scale and zero point as refsim.quantize does under the
// rptq preset (compute in fp16 or fp32, x / s, ties to even, zero point after rounding,
// saturate to the signed range). Codes are packed 32 at a time with warp shuffles / ballots:
// int4_lo_first (4 words per 32 codes) or int3_planar (3 words). A row that produced a
// non-finite y gets out_nonfinite[row] = 1 (the launcher raises; never a silent code).
#include "common.cuh"

#define LN_WARPS 4

__device__ __forceinline__ float warp_sum(float p) {
#pragma unroll
    for (int d = 16; d >= 1; d /= 2) p = __fadd_rn(p, __shfl_xor_sync(FULL_MASK, p, d));
    return p;
}

template <int BITS>
__device__ void ln_quant(const float *__restrict__ x, i64 ldx, const float *__restrict__ gamma,
                         const float *__restrict__ beta, float eps, const int *__restrict__ src_index,
                         const int *__restrict__ cluster_of, const float *__restrict__ scale,
                         const int *__restrict__ zero, int fp16_compute, u8 *__restrict__ out, i64 ldo,
                         int *__restrict__ out_nonfinite, int M, int H, int Kp) {
    const int lane = threadIdx.x % 32;
    const int row = blockIdx.x * LN_WARPS + threadIdx.x / 32;
    if (row >= M) return;  // whole warps leave together
    const float *xr = x + (i64)row * ldx;
    float p = 0.0f;
    for (int h = lane; h < H; h += 32) p = __fadd_rn(p, xr[h]);
    const float mean = __fdiv_rn(warp_sum(p), (float)H);
    float q = 0.0f;
    for (int h = lane; h < H; h += 32) {
        const float d = __fsub_rn(xr[h], mean);
        q = __fadd_rn(q, __fmul_rn(d, d));
    }
    const float var = __fdiv_rn(warp_sum(q), (float)H);
    const float rstd = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(var, eps)));
    const int qmin = -(1 << (BITS - 1)), qmax = (1 << (BITS - 1)) - 1;
    int bad = 0;
    u32 *orow = (u32 *)(out + (i64)row * ldo);
    for (int b = 0; b < Kp / 32; ++b) {
        const int j = 32 * b + lane;
        const int src = src_index[j];
        int code = 0;
        if (src >= 0) {
            const int c = cluster_of[j];
            const float y = __fadd_rn(__fmul_rn(__fmul_rn(__fsub_rn(xr[src], mean), rstd), gamma[src]), beta[src]);
            bad |= !isfinite(y);
            float v;
            if (fp16_compute) {
                const float xh = __half2float(__float2half_rn(y));
                const float sh = __half2float(__float2half_rn(scale[c]));
                // fp32 division then rounding to fp16 is the correctly rounded fp16 quotient
                // (24 >= 2 * 11 + 2: double rounding is innocuous for division).
                v = __half2float(__float2half_rn(__fdiv_rn(xh, sh)));
            } else {
                v = __fdiv_rn(y, scale[c]);
            }
            // rintf: ties to even. Clamp before the int conversion: beyond +-2^20 the code
            // saturates whatever the zero point (|z| < 2^15); an infinity saturates too.
            const float r = fminf(fmaxf(rintf(v), -1048576.0f), 1048576.0f);
            code = min(max((int)r + zero[c], qmin), qmax);
        }
        if (BITS == 4) {
            u32 f = (u32)(code & 15) << (4 * (lane & 7));
            f |= __shfl_xor_sync(FULL_MASK, f, 1);
            f |= __shfl_xor_sync(FULL_MASK, f, 2);
            f |= __shfl_xor_sync(FULL_MASK, f, 4);
            if ((lane & 7) == 0) orow[4 * b + lane / 8] = f;
        } else {
            u32 f = (u32)(code & 3) << (2 * (lane & 15));
            f |= __shfl_xor_sync(FULL_MASK, f, 1);
            f |= __shfl_xor_sync(FULL_MASK, f, 2);
            f |= __shfl_xor_sync(FULL_MASK, f, 4);
            f |= __shfl_xor_sync(FULL_MASK, f, 8);
            const u32 high = __ballot_sync(FULL_MASK, (code >> 2) & 1);
            if ((lane & 15) == 0) orow[3 * b + lane / 16] = f;
            if (lane == 0) orow[3 * b + 2] = high;
        }
    }
    bad = __any_sync(FULL_MASK, bad);
    if (lane == 0) out_nonfinite[row] = bad ? 1 : 0;
}

extern "C" __global__ void __launch_bounds__(32 * LN_WARPS)
ln_quant_int4(const float *x, i64 ldx, const float *gamma, const float *beta, float eps, const int *src_index,
              const int *cluster_of, const float *scale, const int *zero, int fp16_compute, u8 *out, i64 ldo,
              int *out_nonfinite, int M, int H, int Kp) {
    ln_quant<4>(x, ldx, gamma, beta, eps, src_index, cluster_of, scale, zero, fp16_compute, out, ldo,
                out_nonfinite, M, H, Kp);
}

extern "C" __global__ void __launch_bounds__(32 * LN_WARPS)
ln_quant_int3(const float *x, i64 ldx, const float *gamma, const float *beta, float eps, const int *src_index,
              const int *cluster_of, const float *scale, const int *zero, int fp16_compute, u8 *out, i64 ldo,
              int *out_nonfinite, int M, int H, int Kp) {
    ln_quant<3>(x, ldx, gamma, beta, eps, src_index, cluster_of, scale, zero, fp16_compute, out, ldo,
                out_nonfinite, M, H, Kp);
}
