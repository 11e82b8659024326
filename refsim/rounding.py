"""Float-to-integer rounding, vectorized and exact.

``round_to_integral(v, mode)`` takes float values (any IEEE dtype, widened to float64, which
is exact) and returns float64 integral values. Every mode is written so that no step rounds:
``v - floor(v)`` and ``v - trunc(v)`` are exact in IEEE arithmetic (the result's significand
fits), whereas the tempting ``floor(v + 0.5)`` is not (0.49999997f + 0.5 rounds up to 1).

Modes (IEEE 754 / RISC-V ``vxrm`` names):
    ties_even  nearest, ties to even              (rne)
    ties_away  nearest, ties away from zero       (C ``round``)
    half_up    nearest, ties toward +inf          (rnu: floor(v + 1/2) in exact arithmetic)
    floor      toward -inf                        (rdn)
    trunc      toward zero
    odd        an inexact value goes to its odd neighbour (rod, "jamming")
    ceil       toward +inf                        (rup; QONNX CEIL)
    away       toward the larger magnitude        (sign(v) * ceil(|v|); QONNX UP)
    ties_zero  nearest, ties toward zero          (QONNX HALF_DOWN's intent)

Two named variants reproduce a published float formula, its rounding step included, with
fl() the round-to-nearest-even of ``fmt`` (the compute dtype; by default v's own dtype):
    ties_away_add_half   sign(v) * floor(fl(|v| + 0.5))   QONNX HALF_UP: 0.49999997f -> 1,
                                                          and an odd integer >= 2^23 (float32) -> +1
    ties_zero_sub_half   sign(v) * ceil(fl(|v| - 0.5))    QONNX HALF_DOWN: an odd integer >= 2^23
                                                          (float32; >= 2^10 in float16) -> -1

The scalar specification is ``refsim.scalar.round_rational``.
"""

from __future__ import annotations

import numpy as np

from refsim.spec import Rounding

BFLOAT16_MAX = float.fromhex("0x1.fep127")


def round_to_bfloat16(a) -> np.ndarray:
    """Each value rounded once (nearest, ties to even) to bfloat16, returned as float32 values.

    numpy has no bfloat16, and float64 -> float32 -> bfloat16 would round twice. The value is
    scaled by a power of two (exact) so that the bfloat16 quantum 2^(max(e, -126) - 7) becomes
    1, rounded with rint, and scaled back; results of magnitude >= 2^128 are +-inf, as IEEE
    overflow gives. Every bfloat16 value is a float32 value, so the float32 holder is exact.
    """
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.frexp(a)[1] - 1  # 2^e <= |a| < 2^(e+1)
        q = np.maximum(e, -126) - 7
        r = np.ldexp(np.rint(np.ldexp(a, -q)), q)
        r = np.where(np.abs(r) > BFLOAT16_MAX, np.copysign(np.inf, a), r)
        return np.where(np.isfinite(a), r, a).astype(np.float32)


def _round_half_in(a, fmt, op):
    """fl(a op 0.5) in ``fmt``: a numpy float dtype, or "bfloat16" (values held in float32)."""
    fmt = getattr(fmt, "value", fmt)
    if fmt == "bfloat16":
        return round_to_bfloat16(op(a.astype(np.float64), 0.5)).astype(np.float64)
    dt = np.dtype(fmt)
    with np.errstate(over="ignore", invalid="ignore"):
        return op(a.astype(dt), dt.type(0.5)).astype(np.float64)


def round_to_integral(v, mode, fmt=None) -> np.ndarray:
    """Integral float64 values of ``v`` under ``mode``; ``fmt`` only matters to the two named
    float-formula variants (default: v's dtype if it is a float16/32/64 array, else float64)."""
    mode = Rounding(mode)
    if fmt is None:
        dt = getattr(v, "dtype", None)
        fmt = dt if dt is not None and dt in (np.float16, np.float32, np.float64) else np.float64
    v = np.asarray(v, dtype=np.float64)
    if mode is Rounding.TIES_EVEN:
        return np.rint(v)
    if mode is Rounding.FLOOR:
        return np.floor(v)
    if mode is Rounding.TRUNC:
        return np.trunc(v)
    if mode is Rounding.HALF_UP:
        f = np.floor(v)
        return f + (v - f >= 0.5)
    if mode is Rounding.TIES_AWAY:
        t = np.trunc(v)
        return t + np.sign(v) * (np.abs(v - t) >= 0.5)
    if mode is Rounding.ODD:
        f = np.floor(v)
        inexact = v != f
        f_is_even = np.fmod(f, 2.0) == 0.0
        return f + (inexact & f_is_even)
    if mode is Rounding.CEIL:
        return np.ceil(v)
    if mode is Rounding.AWAY:
        t = np.trunc(v)
        return t + np.sign(v) * (v != t)
    if mode is Rounding.TIES_ZERO:
        t = np.trunc(v)
        return t + np.sign(v) * (np.abs(v - t) > 0.5)
    if mode in (Rounding.TIES_AWAY_ADD_HALF, Rounding.TIES_ZERO_SUB_HALF):
        a = np.abs(v)
        with np.errstate(invalid="ignore"):  # NaN stays NaN; the caller's policy handles it
            if mode is Rounding.TIES_AWAY_ADD_HALF:
                return np.sign(v) * np.floor(_round_half_in(a, fmt, np.add))
            return np.sign(v) * np.ceil(_round_half_in(a, fmt, np.subtract))
    raise AssertionError(mode)  # every Rounding member is handled above
