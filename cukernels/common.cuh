// Shared device helpers of the cukernels sources (docs/kernels.md).
// Built both by nvcc (the compile test, sm_80 / sm_90) and by NVRTC through cupy.RawModule,
// so no C++ standard library headers: fixed-width types are spelled out here.
#pragma once
#include <cuda_fp16.h>

typedef unsigned char u8;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

#define FULL_MASK 0xffffffffu

// int4_lo_first (signed): 8 codes of one little-endian word -> two words of 4 int8 each.
// Nibbles 0,2,4,6 sit in the low nibble of each byte, 1,3,5,7 in the high one; (b ^ 8) - 8
// sign-extends a nibble held in a byte, and __byte_perm interleaves them back in order.
__device__ __forceinline__ void unpack8_int4(u32 word, u32 &lo_codes, u32 &hi_codes) {
    const u32 even = __vsub4((word & 0x0F0F0F0Fu) ^ 0x08080808u, 0x08080808u);
    const u32 odd = __vsub4(((word >> 4) & 0x0F0F0F0Fu) ^ 0x08080808u, 0x08080808u);
    lo_codes = __byte_perm(even, odd, 0x5140);  // codes 0, 1, 2, 3
    hi_codes = __byte_perm(even, odd, 0x7362);  // codes 4, 5, 6, 7
}

// 8 codes of an int3_planar block as one int4_lo_first word of signed nibbles (for unpack8_int4).
// int3_planar (one 32-code block): words w0, w1 hold the 2-bit low fields of codes 0..15 and
// 16..31 at bits 2j, w2 the high bit of code j at bit j; here low16 holds the 8 codes' low
// fields at bits 2i, high8 their high bits at bit i. The fields are
// spread to nibbles by shift-and-mask (Morton) steps, and a set bit 2 is copied into bit 3, which
// sign-extends a 3-bit code to 4 bits.
__device__ __forceinline__ u32 planar3_to_int4x8(u32 low16, u32 high8) {
    u32 v = low16 & 0xFFFFu;
    v = (v | (v << 8)) & 0x00FF00FFu;
    v = (v | (v << 4)) & 0x0F0F0F0Fu;
    v = (v | (v << 2)) & 0x33333333u;  // low field i at bits 4 i, 4 i + 1
    u32 h = high8 & 0xFFu;
    h = (h | (h << 12)) & 0x000F000Fu;
    h = (h | (h << 6)) & 0x03030303u;
    h = (h | (h << 3)) & 0x11111111u;  // high bit i at bit 4 i
    const u32 nib = v | (h << 2);
    return nib | ((nib & 0x44444444u) << 1);
}

// One SDR element: sign-magnitude 4-bit field (sign << 3 | r) of base integer x under flag s.
// r = rounded m >> s (half up: the rounding bit; ties_even on request), floored if it overflows.
__device__ __forceinline__ u32 sdr_field(int x, int s, int keep, bool ties_even) {
    const int m = x < 0 ? -x : x;
    int r = m;
    if (s > 0) {
        const int q = m >> s;
        if (ties_even) {
            const int rem = m & ((1 << s) - 1), half = 1 << (s - 1);
            r = q + ((rem > half || (rem == half && (q & 1))) ? 1 : 0);
        } else {
            r = q + ((m >> (s - 1)) & 1);
        }
        if (r == (1 << keep)) r = q;
    }
    return ((x < 0 && r != 0) ? 8u : 0u) | (u32)r;
}

__device__ __forceinline__ int sdr_value(u32 field) {
    const int mag = (int)(field & 7u);
    return (field & 8u) ? -mag : mag;
}
