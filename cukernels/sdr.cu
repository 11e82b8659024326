// QRazor SDR kernels (DESIGN.md "SDR", refsim.sdr): encode and the decompression-free GEMM.
//
// Packed format (cukernels.host.pack_sdr = refsim layouts sdr_code4 / sdr_flags4): codes as 4-bit sign-magnitude fields (sign << 3 |
// magnitude, keep = 3), flags as 4-bit shifts, each its own stream with the first element in
// the low nibble of a byte (refsim int4_lo_first bit order); a ragged last byte is zero-padded.
#include "common.cuh"

#define SDR_KEEP 3

// One thread per (row, pair of groups): the pair shares one flag byte. Groups are 16 or 32
// codes, i.e. whole code bytes; a ragged last group is zero-padded (padding adds nothing to
// the OR and its code nibbles are written as 0). err[0] |= 1 on a value outside the symmetric
// base range |x| <= 2^(b-1) - 1 (refsim refuses it; the launcher raises).
template <typename T>
__device__ void sdr_encode(const T *__restrict__ x, i64 ldx, int rows, int K, int g, int base_bits, int ties_even,
                           u8 *__restrict__ codes, i64 ldc, u8 *__restrict__ flags, i64 ldf, int *__restrict__ err) {
    const int groups = (K + g - 1) / g, pairs = (groups + 1) / 2;
    const i64 task = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (task >= (i64)rows * pairs) return;
    const int row = (int)(task / pairs), pair = (int)(task % pairs);
    const T *xr = x + (i64)row * ldx;
    u32 flag_byte = 0;
    for (int half = 0; half < 2; ++half) {
        const int grp = 2 * pair + half;
        if (grp >= groups) break;
        const int k0 = grp * g, k1 = min(k0 + g, K);
        u32 orv = 0;
        for (int k = k0; k < k1; ++k) {
            const int v = (int)xr[k];
            if (v < -((1 << (base_bits - 1)) - 1) || v > (1 << (base_bits - 1)) - 1) atomicOr(err, 1);
            orv |= (u32)(v < 0 ? -v : v);
        }
        const int L = 32 - __clz((int)orv);
        const int s = max(0, L - SDR_KEEP);
        flag_byte |= (u32)s << (4 * half);
        u8 *cr = codes + (i64)row * ldc;
        for (int k = k0; k < k0 + g; k += 2) {
            if (k >= K) break;
            const u32 lo = sdr_field((int)xr[k], s, SDR_KEEP, ties_even);
            const u32 hi = (k + 1 < K) ? sdr_field((int)xr[k + 1], s, SDR_KEEP, ties_even) : 0u;
            cr[k / 2] = (u8)(lo | (hi << 4));
        }
    }
    flags[(i64)row * ldf + pair] = (u8)flag_byte;
}

extern "C" __global__ void sdr_encode_i16(const short *x, i64 ldx, int rows, int K, int g, int base_bits,
                                          int ties_even, u8 *codes, i64 ldc, u8 *flags, i64 ldf, int *err) {
    sdr_encode<short>(x, ldx, rows, K, g, base_bits, ties_even, codes, ldc, flags, ldf, err);
}

extern "C" __global__ void sdr_encode_i8(const signed char *x, i64 ldx, int rows, int K, int g, int base_bits,
                                         int ties_even, u8 *codes, i64 ldc, u8 *flags, i64 ldf, int *err) {
    sdr_encode<signed char>(x, ldx, rows, K, g, base_bits, ties_even, codes, ldc, flags, ldf, err);
}

__device__ __forceinline__ u32 nibble(const u8 *row, int i) { return (row[i / 2] >> (4 * (i & 1))) & 15u; }

// Decompression-free GEMM, one thread per output (m, n):
//   acc = sum over groups j ascending of (sum_{k in j} a[m, k] * w[n, k]) << (fa[m, j] + fw[n, j])
// in wrapping 64-bit arithmetic, then wrapped to acc_bits (wrap is associative, so wrapping
// once at the end equals wrapping every step). Group sums of 4-bit codes fit int32.
extern "C" __global__ void sdr_gemm(const u8 *__restrict__ a_codes, i64 lda, const u8 *__restrict__ a_flags, i64 ldaf,
                                    const u8 *__restrict__ w_codes, i64 ldw, const u8 *__restrict__ w_flags, i64 ldwf,
                                    int M, int N, int K, int g, int acc_bits, i64 *__restrict__ out) {
    // All tiles on gridDim.x, row-major (host.sdr_gemm_tile): gridDim.y would limit M to 65535 tiles.
    const int tiles_n = (N + blockDim.x - 1) / blockDim.x;
    const int n = (blockIdx.x % tiles_n) * blockDim.x + threadIdx.x;
    const int m = (blockIdx.x / tiles_n) * blockDim.y + threadIdx.y;
    if (m >= M || n >= N) return;
    const u8 *ar = a_codes + (i64)m * lda, *wr = w_codes + (i64)n * ldw;
    const u8 *afr = a_flags + (i64)m * ldaf, *wfr = w_flags + (i64)n * ldwf;
    u64 acc = 0;
    const int groups = (K + g - 1) / g;
    for (int j = 0; j < groups; ++j) {
        int dot = 0;
        const int k1 = min(K, (j + 1) * g);
        for (int k = j * g; k < k1; ++k) dot += sdr_value(nibble(ar, k)) * sdr_value(nibble(wr, k));
        const int shift = (int)(nibble(afr, j) + nibble(wfr, j));
        acc += ((u64)(i64)dot) << shift;
    }
    i64 v = (i64)acc;
    if (acc_bits < 64) v = (i64)(acc << (64 - acc_bits)) >> (64 - acc_bits);
    out[(i64)m * N + n] = v;
}
