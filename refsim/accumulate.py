"""Integer accumulators of a given width and overflow rule, and the bits a sum needs.

An accumulator of ``acc_bits`` holds [-2^(w-1), 2^(w-1) - 1]. The overflow rules:

    wrap      the result modulo 2^w (two's complement). Wrap arithmetic is associative, so
              the order of the sum does not matter and only the final value counts.
    saturate  every partial sum, taken in ascending k, is clamped to the range (a saturating
              MAC unit). Saturation is not associative: the result depends on that order.
    raise     ValueError naming the first output index (row-major) and the first k whose
              ascending partial sum leaves the range.

``signed_bits(v)`` is the two's complement width that holds v: v.bit_length() + 1 for
v >= 0, (-v - 1).bit_length() + 1 for v < 0.
"""

from __future__ import annotations

import numba
import numpy as np

from refsim.checks import check_bits, check_choice

OVERFLOW_RULES = ("wrap", "saturate", "raise")


def acc_limits(acc_bits: int) -> tuple[int, int]:
    return -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1


def check_acc(acc_bits, overflow):
    acc_bits = check_bits(acc_bits, name="acc_bits", lo=2, hi=64)
    overflow = getattr(overflow, "value", overflow)
    check_choice(overflow, OVERFLOW_RULES, name="overflow")
    return acc_bits, overflow


def spec_acc(spec) -> tuple[int, str]:
    """(acc_bits, overflow) of a ``NumericsSpec``: the accumulator every exact GEMM takes from it."""
    from refsim.spec import NumericsSpec

    if not isinstance(spec, NumericsSpec):
        raise TypeError(f"spec must be a refsim.NumericsSpec (e.g. refsim.preset('onnx')), got {type(spec).__name__}")
    return check_acc(spec.acc_bits, spec.acc_overflow)


def wrap_to(v: np.ndarray, acc_bits: int) -> np.ndarray:
    """v modulo 2^acc_bits into the signed range (int64 in, int64 out; exact for any int64 v)."""
    v = np.asarray(v, dtype=np.int64)
    if acc_bits == 64:
        return v
    lo = 1 << (acc_bits - 1)
    return ((v + lo) & ((1 << acc_bits) - 1)) - lo


def signed_bits(v) -> np.ndarray:
    """Element-wise two's complement width of int64 values (1 for 0 and -1)."""
    v = np.asarray(v, dtype=np.int64)
    mag = np.where(v < 0, -(v + 1), v).astype(np.uint64)
    # bit_length of a uint64 via frexp would round above 2^53; count with shifts instead.
    n = np.zeros(v.shape, dtype=np.int64)
    for shift in (32, 16, 8, 4, 2, 1):
        big = mag >= (np.uint64(1) << np.uint64(shift))
        n = n + big * shift
        mag = np.where(big, mag >> np.uint64(shift), mag)
    return n + (mag > 0) + 1


def max_signed_bits(v) -> int:
    v = np.asarray(v, dtype=np.int64)
    if v.size == 0:
        return 1
    return int(max(signed_bits(v.min()), signed_bits(v.max())))


@numba.njit(cache=True, inline="always")
def sequential_step(acc, lo, hi, mode, first, step):
    """The overflow rule after one MAC step (acc already holds the new partial sum), for the numba
    MAC loops: mode 0 saturates acc; mode 1 keeps it and records the first step out of range."""
    if acc > hi or acc < lo:
        if mode == 0:
            acc = hi if acc > hi else lo
        elif first < 0:
            first = step
    return acc, first


def settle_sequential(exact: np.ndarray, rows, cols, result, overflow: str, describe) -> np.ndarray:
    """Finish a saturating or raising GEMM from its sequential re-run of the risky outputs.

    ``exact`` holds the exact sums; ``rows``/``cols`` (row-major order) list the outputs whose
    partial sums might leave the range, and ``result`` what the sequential accumulation gave
    for each: the saturated value (``saturate``) or the first offending step, -1 for none
    (``raise``). Under ``raise`` the first offender's message is ``describe(m, n, step)``.
    """
    if overflow == "saturate":
        exact[rows, cols] = result
        return exact
    hit = np.nonzero(np.asarray(result) >= 0)[0]
    if hit.size:
        t = hit[0]
        raise ValueError(describe(int(rows[t]), int(cols[t]), int(result[t])))
    return exact
