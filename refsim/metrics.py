"""Error metrics between a float reference and its quantized approximation."""

from __future__ import annotations

import numpy as np


def sqnr_db(reference, test) -> float:
    """Signal-to-quantization-noise ratio, 10 log10(sum ref^2 / sum (ref - test)^2), in float64.

    +inf when the two are equal; -inf when the reference is all zero and the test is not.
    """
    r = np.asarray(reference, dtype=np.float64)
    t = np.asarray(test, dtype=np.float64)
    if r.shape != t.shape:
        raise ValueError(f"reference and test must have the same shape, got {r.shape} and {t.shape}")
    noise = float(np.sum((r - t) ** 2))
    signal = float(np.sum(r**2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(signal / noise))


def ulp_distance_float32(a, b) -> np.ndarray:
    """|a - b| in float32 ulps: the distance between their positions on the ordered float32 line
    (the bit pattern read as a sign-magnitude integer, so -0 and +0 are 0 apart)."""
    def position(x):
        i = np.ascontiguousarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)
    return np.abs(position(a) - position(b))
