"""Argument checks shared by the public functions: every error names the argument and what is allowed."""

from __future__ import annotations

import numpy as np


def check_bits(bits, *, name="bits", lo=2, hi=16) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not lo <= int(bits) <= hi:
        raise ValueError(f"{name}={bits!r} is not allowed; allowed: an integer in {lo}..{hi}")
    return int(bits)


def check_choice(value, allowed, *, name):
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; allowed: {', '.join(map(repr, allowed))}")
    return value


def as_int_array(x, *, name) -> np.ndarray:
    """View ``x`` as an int64 array; floats are refused even when integral (a silent cast hides bugs)."""
    a = np.asarray(x)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    if a.dtype == np.uint64 and a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name} has values above the int64 range")
    return a.astype(np.int64, copy=False)


def check_range(a: np.ndarray, lo: int, hi: int, *, name, what="") -> None:
    """Raise naming the first element of ``a`` outside [lo, hi]."""
    if a.size == 0:
        return
    bad = (a < lo) | (a > hi)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name}{idx if a.ndim else ''} = {int(a[idx])} is outside the allowed range "
            f"[{lo}, {hi}]{' ' + what if what else ''}"
        )


def normalize_axis(axis, ndim, *, name="axis") -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis!r} is not allowed for a {ndim}-d input; allowed: {-ndim}..{ndim - 1}")
    return int(axis) % ndim


def code_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """[qmin, qmax] of a ``bits``-bit code: signed full, signed narrow, unsigned, unsigned narrow."""
    if signed:
        return (-(1 << (bits - 1)) + (1 if narrow else 0), (1 << (bits - 1)) - 1)
    return (0, (1 << bits) - 1 - (1 if narrow else 0))
