"""Float operations with a single rounding that numpy does not offer directly."""

from __future__ import annotations

import numpy as np


def fused_multiply_add(a, b, c, dtype) -> np.ndarray:
    """fl(a * b + c) rounded once into ``dtype`` (float32 or float16), as an FMA unit computes it.

    a and b are float32/float16 values and c integers of magnitude < 2^53. The product is
    exact in float64 (at most 24 + 24 significant bits). The sum is taken in float64 with
    *round to odd* (TwoSum gives the exact error; an inexact even result steps to its odd
    neighbour), and rounding to odd at 53 bits followed by round-to-nearest-even at
    p <= 24 bits equals a single round-to-nearest-even (53 >= 2p + 2; Boldo and Melquiond,
    "Emulation of FMA and correctly rounded sums: proved algorithms using rounding to odd").
    """
    # Infinite inputs (an overflowed fp16 x) make NaN error terms; they keep t = +-inf.
    with np.errstate(over="ignore", invalid="ignore"):
        p = np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64)
        zc = np.asarray(c, dtype=np.float64)
        t = p + zc
        bb = t - p
        err = (p - (t - bb)) + (zc - bb)  # TwoSum: t + err == p + c exactly
        mant = np.frexp(t)[0]
        even = np.fmod(np.abs(mant) * 2.0**53, 2.0) == 0.0
        step = np.nextafter(t, np.where(err > 0, np.inf, -np.inf))
        t = np.where((err != 0) & even & np.isfinite(t), step, t)
        return t.astype(dtype)
