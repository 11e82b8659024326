"""ONNX Runtime ``MatMulNBits`` (com.microsoft, bits = 4) initializers, to and from refsim codes.

    B            uint8 (N, ceil(K / block), block / 2)   codes of each block along K, two per byte,
                                                         element k in the low nibble when k is even
                                                         (refsim ``int4_lo_first``, unsigned)
    scales       float32 (N * ceil(K / block),)
    zero_points  uint8 (N * ceil(ceil(K / block) / 2),)  per row, two block zero points per byte, low first;
                                                         absent: zero point 8

Y = A @ W^T with W[n, k] = fl(fl(q - z) * s) for uint8 zero points (``refsim.dequantize``); a float
zero_points input instead gives fl(fl(q * s) - fl(z * s)) (``refsim.dequantize_float_zero(form="ort")``).
Groups must be consecutive blocks of ``block`` inputs (no act-order).
"""

from __future__ import annotations

import numpy as np

from refsim.layouts import pack, unpack


def write(codes, scale, zero=None, *, block) -> dict:
    """codes (N, K) in [0, 15], scale and zero (N, ceil(K / block)); zero None means 8."""
    codes = np.asarray(codes, np.int64)
    n, k = codes.shape
    nb = -(-k // block)
    if np.asarray(scale).shape != (n, nb):
        raise ValueError(f"scale has shape {np.asarray(scale).shape}; K={k} in blocks of {block} needs ({n}, {nb})")
    padded = np.zeros((n, nb * block), np.int64)
    padded[:, :k] = codes
    out = {"B": pack(padded.reshape(n, nb, block), "int4_lo_first", axis=2, signed=False),
           "scales": np.asarray(scale, np.float32).reshape(-1)}
    if zero is not None:
        out["zero_points"] = pack(np.asarray(zero, np.int64), "int4_lo_first", axis=1, signed=False).reshape(-1)
    return out


def read(tensors: dict, *, k, n, block):
    """(codes (N, K), scale (N, G) float32, zero (N, G), g_idx (K,)) of MatMulNBits' B, scales, zero_points."""
    nb = -(-k // block)
    codes = unpack(np.asarray(tensors["B"]).reshape(n, nb, block // 2), "int4_lo_first", block, axis=2,
                   signed=False).reshape(n, nb * block)[:, :k]
    scale = np.asarray(tensors["scales"], np.float32).reshape(n, nb)
    if "zero_points" in tensors:
        zero = unpack(np.asarray(tensors["zero_points"]).reshape(n, -1), "int4_lo_first", nb, axis=1, signed=False)
    else:
        zero = np.full((n, nb), 8, dtype=np.int32)
    return codes.astype(np.int64), scale, zero.astype(np.int64), np.arange(k, dtype=np.int64) // block
