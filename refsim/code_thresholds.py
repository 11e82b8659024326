"""Per-tensor codes of a large tensor by thresholds, exact for every spec whose quantizer is monotone.

With one (s, z) for the whole tensor and ``saturation="saturate"``, the code q(x) of ``refsim.quantize``
is a non-decreasing function of x over the finite float32 values: each of its steps is (x / s or
x * fl(1/s), an optional + z or fused multiply-add, each rounded into the compute dtype; a rounding
mode; + z; a clamp) and every one of them is non-decreasing. Such a function is fixed by its
thresholds

    t_j = min { x finite float32 : q(x) >= j }          for j = qmin + 1 .. qmax   (+inf if none)

and then, for every finite x,

    q(x) = qmin + #{ j : t_j <= x }.

The thresholds are found by bisection over the float32 values in their order, asking
``refsim.quantize`` itself (all thresholds at once, one vectorized call per step: 32 calls of
2^bits - 1 values), so the spec is the only source of every code; the codes of the tensor are then
read from the thresholds by a compiled pass that starts at x / s + z and steps to the right code.
Where the preconditions fail (another saturation, a non-finite value, a per-channel scale, the
``mul_range_recip`` scale op), ``quantize_tensor`` calls ``refsim.quantize``.
"""

from __future__ import annotations

import numba
import numpy as np

from refsim.quantize import code_range, quantize
from refsim.spec import NumericsSpec, Saturation, ScaleOp
from refsim.threads import row_spans, run_all

# Below this many elements, or above this many bits (2^bits - 1 thresholds to find), refsim.quantize itself
# is cheaper than finding the thresholds.
MIN_ELEMENTS = 1 << 16
MAX_BITS = 10
_MAX_KEY = 0x7F7FFFFF  # the order key of the largest finite float32


def _floats(keys: np.ndarray) -> np.ndarray:
    """float32 values of order keys: k >= 0 are the bit patterns of +0 .. max, k < 0 those of -|k|."""
    k = np.asarray(keys, dtype=np.int64)
    bits = np.where(k >= 0, k, np.int64(0x80000000) | -k).astype(np.uint32)
    return bits.view(np.float32)


def code_thresholds(scale, zero, *, bits: int, spec: NumericsSpec) -> np.ndarray:
    """t_j (float32, ascending, one per code qmin + 1 .. qmax; +inf for a code no finite x reaches) of the
    per-tensor quantizer (s, z) under ``spec`` (module docstring), by bisection on ``refsim.quantize``."""
    qmin, qmax = code_range(bits, spec.signed, spec.narrow)
    want = np.arange(qmin + 1, qmax + 1, dtype=np.int64)

    def codes(keys):
        return quantize(_floats(keys), scale, zero, bits=bits, spec=spec).astype(np.int64)

    lo = np.full(want.shape, -_MAX_KEY - 1, dtype=np.int64)  # q(lo) < j (lo below every float: virtual)
    hi = np.full(want.shape, _MAX_KEY, dtype=np.int64)  # q(hi) >= j, once checked
    reached = codes(hi) >= want
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        up = codes(mid) >= want
        hi = np.where(up, mid, hi)
        lo = np.where(up, lo, mid)
    t = _floats(hi)
    return np.where(reached, t, np.float32(np.inf)).astype(np.float32)


@numba.njit(cache=True, nogil=True)
def _codes_by_thresholds(x, t, qmin, guess_scale, guess_zero, out):
    """out[i] = qmin + #{j : t[j] <= x[i]}, stepping from the guess x * guess_scale + guess_zero; returns
    False (out incomplete) if some x is not finite."""
    n = t.size
    bad = 0
    for i in range(x.size):
        v = x[i]
        if not np.isfinite(v):
            bad += 1
            continue
        g = np.float64(v) * guess_scale + guess_zero - qmin
        j = 0 if not g > 0.0 else (n if g >= n else int(g + 0.5))
        while j > 0 and v < t[j - 1]:
            j -= 1
        while j < n and v >= t[j]:
            j += 1
        out[i] = qmin + j
    return bad == 0


def quantize_tensor(x, scale, zero=0, *, bits: int, spec: NumericsSpec, min_elements=MIN_ELEMENTS) -> np.ndarray:
    """``refsim.quantize(x, scale, zero, bits=bits, spec=spec)`` for one (s, z), equal code for code (int32);
    through the thresholds where the module docstring's conditions hold, x has at least ``min_elements``
    elements and bits <= MAX_BITS, else refsim.quantize itself."""
    x = np.asarray(x)
    s, z = np.asarray(scale), np.asarray(zero)
    simple = (s.size == 1 and z.size == 1 and x.dtype == np.float32 and x.size >= min_elements and bits <= MAX_BITS
              and spec.saturation is Saturation.SATURATE and spec.scale_op is not ScaleOp.MUL_RANGE_RECIP)
    if simple and np.isfinite(float(s.reshape(-1)[0])) and float(s.reshape(-1)[0]) > 0:
        t = code_thresholds(s, z, bits=bits, spec=spec)
        qmin = code_range(bits, spec.signed, spec.narrow)[0]
        flat = np.ascontiguousarray(x).reshape(-1)
        out = np.empty(flat.shape, dtype=np.int32)
        g_s, g_z = 1.0 / float(s.reshape(-1)[0]), float(z.reshape(-1)[0])
        ok = run_all(lambda sp: _codes_by_thresholds(flat[sp[0]:sp[1]], t, qmin, g_s, g_z, out[sp[0]:sp[1]]),
                     row_spans(flat.size, 1 << 16))
        if all(ok):
            return out.reshape(x.shape)
    return quantize(x, scale, zero, bits=bits, spec=spec)
