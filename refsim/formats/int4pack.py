"""torch int4pack for CPU (``torch._convert_weight_to_int4pack_for_cpu`` / ``_weight_int4pack_mm_for_cpu``).

Weights: unsigned 4-bit codes q (N, K), dequantized by the kernel as w = (q - 8) * scale + zero with float
``scales_and_zeros`` of shape (K / groupsize, N, 2) (torchao's float zero-point domain, tinygemm). The
packed tensor is uint8 (N, K / 2), a nibble stream (nibble p in byte p // 2, low nibble first) laid out
per block of 32 output rows (ATen ``int4mm_kernel.cpp``, BLOCK_N = 32):

    rows 32b .. 32b + 31:   nibble 32 b K + 32 k + 2 (n % 16) + (n % 32) // 16
    a last block of 16 rows (N % 32 == 16) at base nibble B:   nibble B + 16 k + (n - 32 b)

N must be a multiple of 16. GPTQ's integer zero point z is stored as the float zero fl((8 - z) * s), so the
kernel's fl((q - 8) * s) + zero is within a rounding of s * (q - z) (``dequantize_float_zero(form="tinygemm")``).
"""

from __future__ import annotations

import numpy as np


def _nibble_index(n_rows, k):
    """(N, K) nibble position of each code."""
    if n_rows % 16:
        raise ValueError(f"N={n_rows} is not allowed; allowed: a multiple of 16 (int4pack's row blocks)")
    if k % 2:
        raise ValueError(f"K={k} is not allowed; allowed: an even number")
    n = np.arange(n_rows)[:, None]
    kk = np.arange(k)[None, :]
    full = n_rows // 32 * 32
    block = n // 32
    in_full = 32 * block * k + 32 * kk + 2 * (n % 16) + (n % 32) // 16
    tail = 32 * (full // 32) * k + 16 * kk + (n - full)
    return np.where(n < full, in_full, tail)


def pack_weight(codes) -> np.ndarray:
    """uint8 (N, K / 2) equal to ``torch._convert_weight_to_int4pack_for_cpu(codes, inner_k_tiles)``."""
    c = np.asarray(codes, np.int64)
    if c.ndim != 2 or c.size and (c.min() < 0 or c.max() > 15):
        raise ValueError("codes must be a 2-d array of unsigned 4-bit values (0..15)")
    idx = _nibble_index(*c.shape)
    nib = np.zeros(c.size, np.uint8)
    nib[idx.reshape(-1)] = c.reshape(-1)
    return (nib[0::2] | (nib[1::2] << 4)).reshape(c.shape[0], c.shape[1] // 2)


def unpack_weight(packed, k) -> np.ndarray:
    p = np.asarray(packed, np.uint8).reshape(-1)
    nib = np.stack([p & 15, p >> 4], axis=1).reshape(-1)
    n_rows = p.size * 2 // k
    return nib[_nibble_index(n_rows, k)].astype(np.int64)


def write(codes, scale, zero, *, groupsize) -> dict:
    """codes (N, K), scale (N, G) and integer zero points (N, G) -> packed weight and scales_and_zeros (G, N, 2)
    float32, zero stored as fl32((8 - z) * s)."""
    s = np.asarray(scale, np.float32)
    zf = ((8 - np.asarray(zero, np.float32)) * s).astype(np.float32)
    sz = np.ascontiguousarray(np.stack([s.T, zf.T], axis=-1))  # the kernel reads it as contiguous memory
    return {"weight": pack_weight(codes), "scales_and_zeros": sz, "groupsize": groupsize}


def read(tensors: dict, *, k):
    """(codes (N, K), scale (N, G) float32, float zero (N, G) float32, g_idx (K,))."""
    codes = unpack_weight(tensors["weight"], k)
    sz = np.asarray(tensors["scales_and_zeros"], np.float32)
    return codes, sz[..., 0].T.copy(), sz[..., 1].T.copy(), np.arange(k) // int(tensors["groupsize"])
