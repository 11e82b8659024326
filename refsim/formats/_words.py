"""Little-endian 32-bit words <-> the byte streams of ``refsim.pack``, along one axis."""

from __future__ import annotations

import numpy as np


def bytes_to_words(b: np.ndarray, axis: int) -> np.ndarray:
    """uint8 bytes (a multiple of 4 along ``axis``) -> int32 words, byte 4w + j at bits 8j of word w."""
    m = np.moveaxis(np.asarray(b, dtype=np.uint8), axis, -1)
    if m.shape[-1] % 4:
        raise ValueError(f"{m.shape[-1]} bytes along axis {axis} are not whole 32-bit words")
    return np.moveaxis(np.ascontiguousarray(m).view("<i4").astype(np.int32), -1, axis)


def words_to_bytes(w: np.ndarray, axis: int) -> np.ndarray:
    a = np.asarray(w)
    if a.dtype not in (np.int32, np.uint32):
        raise TypeError(f"packed words must be int32 (or uint32), got dtype {a.dtype}")
    m = np.ascontiguousarray(np.moveaxis(a.astype("<i4"), axis, -1))
    return np.moveaxis(m.view(np.uint8), -1, axis)
