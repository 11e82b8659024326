"""compressed-tensors ``pack-quantized`` checkpoints (compressors/pack_quantized/base.py), to and from refsim codes.

compressed-tensors holds signed codes: an unsigned GPTQ code q with zero point z is q - 2^(b-1), its zero
z - 2^(b-1) (the same q - z). ``pack_to_int32`` adds 2^(b-1) back and packs one little-endian bit stream:

    weight_packed       int32 (N, ceil(K * b / 32))   codes along K (refsim ``int4_word32_offset`` /
                                                      ``int3_word32_offset``)
    weight_scale        (N, G) in the model's dtype
    weight_zero_point   int32 (ceil(N * b / 32), G)   asymmetric only: zero points packed along N
    weight_shape        int64 (2,)                    [N, K]

Groups are consecutive runs of K / G inputs (act-order files carry ``weight_g_idx`` as well).
"""

from __future__ import annotations

import numpy as np

from refsim.formats._words import bytes_to_words, words_to_bytes
from refsim.layouts import pack, unpack

LAYOUTS = {4: "int4_word32_offset", 3: "int3_word32_offset"}


def _check(bits):
    if bits not in LAYOUTS:
        raise ValueError(f"bits={bits!r} is not allowed; allowed: 3, 4")


def write(codes, scale, zero=None, g_idx=None, *, bits, scale_dtype=np.float32) -> dict:
    """Unsigned codes (N, K) in [0, 2^b - 1], scale (N, G), zero (N, G) or None (symmetric: zero 2^(b-1))."""
    _check(bits)
    half = 1 << (bits - 1)
    codes = np.asarray(codes, np.int64)
    out = {"weight_packed": bytes_to_words(pack(codes - half, LAYOUTS[bits], axis=1), axis=1),
           "weight_scale": np.asarray(scale).astype(scale_dtype),
           "weight_shape": np.array(codes.shape, dtype=np.int64)}
    if zero is not None:
        out["weight_zero_point"] = bytes_to_words(pack(np.asarray(zero, np.int64) - half, LAYOUTS[bits], axis=0),
                                                  axis=0)
    if g_idx is not None:
        out["weight_g_idx"] = np.asarray(g_idx, dtype=np.int32)
    return out


def read(tensors: dict, *, bits):
    """(codes (N, K) unsigned, scale (N, G) float32, zero (N, G), g_idx (K,)) of a pack-quantized weight."""
    _check(bits)
    half = 1 << (bits - 1)
    n, k = (int(v) for v in np.asarray(tensors["weight_shape"]))
    codes = unpack(words_to_bytes(tensors["weight_packed"], axis=1), LAYOUTS[bits], k, axis=1) + half
    scale = np.asarray(tensors["weight_scale"]).astype(np.float32)
    if "weight_zero_point" in tensors:
        zero = unpack(words_to_bytes(tensors["weight_zero_point"], axis=0), LAYOUTS[bits], n, axis=0) + half
    else:
        zero = np.full(scale.shape, half, dtype=np.int64)
    g = scale.shape[1]
    g_idx = (np.asarray(tensors["weight_g_idx"], np.int64) if "weight_g_idx" in tensors
             else np.arange(k, dtype=np.int64) // (k // g))
    return codes.astype(np.int64), scale, zero.astype(np.int64), g_idx
