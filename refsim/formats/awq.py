"""AWQ checkpoints (AutoAWQ ``WQLinear_GEMM``): 4-bit codes packed along the outputs in AWQ's interleaved order.

    qweight int32 (K, N / 8)   word j of row k holds columns 8j + order[i] at bits 4i,
                               order = (0, 2, 4, 6, 1, 3, 5, 7)  (AutoAWQ ``AWQ_ORDER``)
    qzeros  int32 (G, N / 8)   zero points, the same interleave, true zeros (no offset)
    scales  float16 (G, N)     groups of ``group_size`` consecutive input columns

w[n, k] = scales[k // group_size, n] * (q[k, n] - zero[k // group_size, n]). The interleave is a
permutation of each run of eight columns before the plain ``int4_word32`` packing.
"""

from __future__ import annotations

import numpy as np

from refsim.formats._words import bytes_to_words, words_to_bytes
from refsim.layouts import pack, unpack

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
_INVERSE = tuple(int(i) for i in np.argsort(AWQ_ORDER))


def _interleave(a, order):
    """Along the last axis (a multiple of 8): position 8j + i takes column 8j + order[i]."""
    n = a.shape[-1]
    if n % 8:
        raise ValueError(f"AWQ packs the outputs eight to a word: N={n} is not a multiple of 8")
    return a.reshape(a.shape[:-1] + (n // 8, 8))[..., list(order)].reshape(a.shape)


def _pack(a):
    return bytes_to_words(pack(_interleave(np.asarray(a, np.int64), AWQ_ORDER), "int4_word32", axis=1, signed=False),
                          axis=1)


def _unpack(w, n):
    return _interleave(unpack(words_to_bytes(w, axis=1), "int4_word32", n, axis=1, signed=False), _INVERSE)


def write(codes, scale, zero, *, group_size, scale_dtype=np.float16) -> dict:
    """codes (N, K), scale and zero (N, K / group_size), consecutive groups -> AutoAWQ GEMM tensors."""
    codes = np.asarray(codes, np.int64)
    if codes.shape[1] % group_size or np.asarray(scale).shape[1] != codes.shape[1] // group_size:
        raise ValueError(f"AWQ groups are consecutive runs of group_size={group_size} inputs: K={codes.shape[1]} "
                         f"needs {codes.shape[1] // group_size} groups, the scale has {np.asarray(scale).shape[1]}")
    return {"qweight": _pack(codes.T), "qzeros": _pack(np.asarray(zero).T),
            "scales": np.asarray(scale).T.astype(scale_dtype)}


def read(tensors: dict, *, group_size):
    """(codes (N, K), scale (N, G) float32, zero (N, G), g_idx (K,)) of an AutoAWQ GEMM layer."""
    scales = np.asarray(tensors["scales"])
    n = scales.shape[1]
    codes = _unpack(tensors["qweight"], n).T.astype(np.int64)
    zero = _unpack(tensors["qzeros"], n).T.astype(np.int64)
    g_idx = np.arange(codes.shape[1], dtype=np.int64) // group_size
    return codes, scales.T.astype(np.float32), zero, g_idx
