"""Golden's stimulus levels as hypothesis strategies, and as fills the kernel harness replays.

The pattern level (level 1) of each preset family, in the values golden's bundles use:

    codes          int_patterns: 0, 1, all ones, max, min, max-1, min+1, alternating bits,
                   walking ones and zeros of a ``bits``-bit code (pack, gemm)
    float16        the extremes quant adds to every cluster's grid (both zeros, the smallest
                   subnormal, the largest finite float16, each signed) and the grid's ties (quant)
    accumulators   every tie (2i + 1) * 2^(e - 1) of a multiplier 2^-e and its neighbours (requant)
    SDR groups     per leading-one position: the overflow boundary, every rounding tie, walking
                   ones, alternating bits, the paper's examples (sdr, sdr_gemm)

Strategies (``codes``, ``pattern_codes``, ``sdr_groups``, ``float16_values``, ``requant_accumulators``,
``phases``) need hypothesis, a test extra: it is imported inside each function, so golden imports
without it. The fills (``fill_codes``, ``fill_sdr``) are numpy only: the harness rebuilds a case from
its parameters, so it draws a pattern *phase* with ``phases`` and fills with the same values as the
bundles.
"""

from __future__ import annotations

import numpy as np

from golden.presets.quantize import special_values
from golden.presets.requant import tie_accumulators
from golden.presets.sdr import pattern_groups
from golden.stimulus import code_limits, cycle_fill, grid_points, int_patterns

__all__ = ["codes", "fill_codes", "fill_sdr", "float16_values", "pattern_codes", "phases", "requant_accumulators",
           "sdr_groups", "special_codes"]

# A phase is an offset into a pattern cycle; every cycle here is shorter than this.
MAX_PHASE = 1 << 12


def _st():
    try:
        import hypothesis.strategies as st
    except ImportError:
        raise ImportError("golden.strategies needs hypothesis, a test extra: pip install 'refsim[test]'") from None
    return st


def special_codes(bits: int, signed: bool) -> np.ndarray:
    """The level-1 code patterns of a ``bits``-bit code (golden.stimulus.int_patterns)."""
    return int_patterns(bits, signed)


def pattern_codes(bits: int, signed: bool):
    """Strategy: one of the level-1 code patterns."""
    return _st().sampled_from([int(v) for v in special_codes(bits, signed)])


def codes(bits: int, signed: bool):
    """Strategy: a code, a level-1 pattern half the time, else any code of the range."""
    st = _st()
    lo, hi = code_limits(bits, signed)
    return st.one_of(pattern_codes(bits, signed), st.integers(lo, hi))


def float16_values(scale: float = 0.25, bits: int = 4):
    """Strategy: a float16 from quant's level 1: the extremes, or a grid point or tie of a
    power-of-two ``scale`` over the ``bits``-bit code range (x / s lands exactly on it)."""
    lo, hi = code_limits(bits, True)
    vals = np.concatenate([special_values(np.float16), grid_points(scale, lo - 2, hi + 2, np.float16)])
    return _st().sampled_from([np.float16(v) for v in vals])


def requant_accumulators(e: int):
    """Strategy: an int32 accumulator from requant's level 1 for a multiplier 2^-e (ties, neighbours, patterns)."""
    return _st().sampled_from([int(v) for v in tie_accumulators(e)])


def sdr_groups(base_bits: int, group_size: int, keep: int = 3):
    """Strategy: one SDR level-1 group (an int64 array of ``group_size`` values)."""
    groups = pattern_groups(base_bits, group_size, keep)
    return _st().sampled_from(range(groups.shape[0])).map(lambda i: groups[i].copy())


def phases():
    """Strategy: the start of a pattern cycle (``fill_codes`` / ``fill_sdr``'s ``phase``)."""
    return _st().integers(0, MAX_PHASE - 1)


def fill_codes(bits: int, signed: bool, shape, phase: int = 0, *, stride: int = 1) -> np.ndarray:
    """(rows, cols) int32 codes: the level-1 code patterns cycled from ``phase``, row r ``r * stride`` on
    (golden.stimulus.cycle_fill): any ``rows * cols >= len(patterns)`` array holds every pattern."""
    pats = special_codes(bits, signed)
    rolled = np.roll(pats, -(int(phase) % pats.size))
    return cycle_fill(rolled, tuple(shape), stride=stride).astype(np.int32)


def fill_sdr(base_bits: int, group_size: int, shape, phase: int = 0, *, keep: int = 3) -> np.ndarray:
    """(rows, cols) base-precision ints: SDR level-1 groups along each row, group j of row r being
    pattern group (phase + r * groups_per_row + j) mod count; a row's last group cut at ``cols``."""
    rows, cols = shape
    groups = pattern_groups(base_bits, group_size, keep)
    per_row = -(-cols // group_size)
    idx = (int(phase) + np.arange(rows * per_row)) % groups.shape[0]
    x = groups[idx].reshape(rows, per_row * group_size)[:, :cols]
    return x.astype(np.int16 if base_bits > 8 else np.int8)
