"""Stimulus in three levels, in the manner of Berkeley TestFloat, from numpy's PCG64.

    level 0  random      values drawn from ``numpy.random.Generator(PCG64(seed))``
    level 1  patterns    0, 1, all ones, max, min, alternating bits, walking ones and zeros,
                         and, for quantizers, every rounding tie of the code grid
    level 2  exhaustive  every value of a small domain (every finite float16; every code pair)

Everything here is a pure function of its arguments (and of the seed), so the same preset,
seed and level give byte-identical bundles on any machine. Only ``integers``, ``random`` and
``standard_normal`` of numpy's Generator are used: their streams have been stable since
numpy 1.17.
"""

from __future__ import annotations

import numpy as np

from refsim.checks import code_range

LEVELS = {0: "random", 1: "patterns", 2: "exhaustive"}
GENERATOR = "numpy.random.Generator(PCG64)"


def check_level(level) -> int:
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or int(level) not in LEVELS:
        raise ValueError(f"level={level!r} is not allowed; allowed: 0 (random), 1 (patterns), 2 (exhaustive)")
    return int(level)


def make_rng(seed) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**63:
        raise ValueError(f"seed={seed!r} is not allowed; allowed: an integer in 0..2^63-1")
    return np.random.Generator(np.random.PCG64(int(seed)))


def code_limits(bits: int, signed: bool) -> tuple[int, int]:
    """Full-range [qmin, qmax] of a ``bits``-bit code (refsim's code_range, never narrow)."""
    return code_range(bits, signed, False)


def as_code(field, bits: int, signed: bool) -> np.ndarray:
    """Read ``bits``-bit fields (0..2^bits-1) as codes: two's complement when signed."""
    f = np.asarray(field, dtype=np.int64) & ((1 << bits) - 1)
    return f - ((f >> (bits - 1)) << bits) if signed else f


def int_patterns(bits: int, signed: bool) -> np.ndarray:
    """TestFloat-style integer patterns of a ``bits``-bit code, without repeats, in a fixed order.

    0, 1, all ones, max, min, max-1, min+1, alternating 0101.. and 1010.., walking ones
    (1 << i) and walking zeros (all ones without bit i), each field read as a code.
    """
    ones = (1 << bits) - 1
    alt = sum(1 << i for i in range(0, bits, 2))
    lo, hi = code_limits(bits, signed)
    fields = [0, 1, ones, hi & ones, lo & ones, (hi - 1) & ones, (lo + 1) & ones, alt, ones ^ alt]
    fields += [1 << i for i in range(bits)] + [ones ^ (1 << i) for i in range(bits)]
    seen: list[int] = []
    for f in fields:
        if f not in seen:
            seen.append(f)
    return as_code(np.array(seen), bits, signed)


def cycle_fill(values, shape, *, stride: int = 1) -> np.ndarray:
    """Fill ``shape`` (2-d) with ``values`` cycled; row r starts ``r * stride`` further along.

    The row offset makes two cycled operands meet in every combination when their pattern
    lengths are coprime with the shape.
    """
    v = np.asarray(values)
    rows, cols = shape
    idx = (np.arange(rows)[:, None] * stride + np.arange(cols)[None, :]) % v.size
    return v[idx]


def all_finite_float16() -> np.ndarray:
    """Every finite float16 (both zeros and the subnormals), in bit-pattern order: 63488 values."""
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    v = bits.view(np.float16)
    return v[np.isfinite(v)].copy()


def grid_points(scale: float, lo_code: int, hi_code: int, dtype=np.float16) -> np.ndarray:
    """Every grid point j*s and every tie (j + 1/2)*s for j in [lo_code, hi_code], ascending.

    With ``scale`` a power of two these are exact in ``dtype`` (while in range), so x / s lands
    exactly on the integer or exactly on the tie: the rounding mode alone decides the code.
    """
    j = np.arange(lo_code, hi_code + 1, dtype=np.float64)
    v = np.concatenate([j, j + 0.5])
    v = np.sort(v) * scale
    out = v.astype(dtype)
    if not np.array_equal(out.astype(np.float64), v):
        raise ValueError(f"grid of scale {scale} over [{lo_code}, {hi_code}] is not exact in {np.dtype(dtype)}")
    return out
