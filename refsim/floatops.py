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


# A faithful float64 exp (any libm or SIMD implementation: error < 1 ulp, i.e. < 2^-52 relative)
# cannot move the value across a float32 rounding boundary unless it lies within this margin.
_EXP_MARGIN = 2.0**-50


def _exp_decimal_f32(x: float) -> np.float32:
    """exp(x) correctly rounded to float32, evaluated in decimal at 60 digits (the slow, exact path)."""
    import decimal
    from fractions import Fraction

    from refsim.scalar import round_to_format

    with decimal.localcontext() as ctx:
        ctx.prec = 60
        value = Fraction(decimal.Decimal(x).exp())
    r = round_to_format(value, "float32")
    return np.float32(float(r))


def exp_float32(x) -> np.ndarray:
    """exp(x) correctly rounded to float32, the same on every machine.

    numpy's float64 exp differs between builds and CPUs (libm, or SIMD kernels chosen at run
    time) in the last float64 bit. Its result is rounded to float32 twice, at exp * (1 - 2^-50)
    and exp * (1 + 2^-50): where both agree, every faithful float64 exp gives that float32
    value, which is then the correctly rounded one. The rare values near a float32 rounding
    boundary are recomputed exactly (decimal arithmetic, 60 digits) and rounded once.
    """
    x32 = np.asarray(x, dtype=np.float32)
    x64 = np.atleast_1d(x32).astype(np.float64)
    with np.errstate(over="ignore", under="ignore"):
        e = np.exp(x64)
        lo = (e * (1.0 - _EXP_MARGIN)).astype(np.float32)
        hi = (e * (1.0 + _EXP_MARGIN)).astype(np.float32)
    out = hi.copy()
    for idx in zip(*np.nonzero((lo != hi) & np.isfinite(x64)), strict=True):
        out[idx] = _exp_decimal_f32(float(x64[idx]))
    return out.reshape(x32.shape)


def fsum_rows(x) -> np.ndarray:
    """Correctly rounded float64 sums over the last axis (``math.fsum`` per row).

    A correctly rounded sum does not depend on the order of its terms, nor on the BLAS, SIMD
    width or numpy version that a pairwise or blocked sum would: it is the same on every IEEE
    machine, and the same for a channel-permuted row (RPTQ's reordered layout).
    """
    import math

    a = np.asarray(x, dtype=np.float64)
    rows = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
    return np.array([math.fsum(r) for r in rows.tolist()], dtype=np.float64).reshape(a.shape[:-1])
