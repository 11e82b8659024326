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

The scalar specification is ``refsim.scalar.round_rational``.
"""

from __future__ import annotations

import numpy as np

from refsim.spec import Rounding


def round_to_integral(v, mode) -> np.ndarray:
    mode = Rounding(mode)
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
    raise AssertionError(mode)  # every Rounding member is handled above
