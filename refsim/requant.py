"""Requantization: gemmlowp / TFLite fixed point, and the float32 epilogue.

Fixed point (gemmlowp ``fixedpoint.h``, TFLite ``common.h`` / ``quantization_util.cc``):

    QuantizeMultiplier(M):   q, e = frexp(M)  (q in [0.5, 1));  Q = round_half_away(q * 2^31);
                             if Q == 2^31: Q = 2^30, e += 1;  if e < -31: Q = 0, e = 0;
                             (single rounding only) if e > 30: Q = 2^31 - 1, e = 30
    SaturatingRoundingDoublingHighMul(a, b):
                             INT32_MAX if a == b == INT32_MIN, else
                             (a*b + (2^30 if a*b >= 0 else 1 - 2^30)) / 2^31, truncated toward 0
    RoundingDivideByPOT(x, e):  (x >> e) + (remainder > threshold), remainder = x & (2^e - 1),
                             threshold = (2^e - 1) >> 1, plus 1 when x < 0  (ties away from 0)
    double_rounding:         RoundingDivideByPOT(SRDHM(x * 2^max(e,0), Q), max(-e, 0))
    single_rounding:         (x * Q + 2^(30 - e)) >> (31 - e)     (TFLITE_SINGLE_ROUNDING)

The two forms disagree on a few percent of random inputs (DESIGN.md); the spec names which.
All functions take int32-range integers as int64 numpy arrays and return int64. The scalar
specification is in ``refsim.scalar``.

Float epilogue (DESIGN.md "Float epilogue"), per output (m, n), every op separately rounded
to float32 (no FMA), clusters in ascending order:

    acc = 0.0f
    for c in 0 .. C-1:  acc = acc + (f32(isum[c, m, n]) * s_a[c]) * s_w[n]
    y = acc + bias[n]                                   (when a bias is given)

f32() converts an integer with round-to-nearest-even (exact below 2^24).
"""

from __future__ import annotations

import numpy as np

from refsim.checks import as_int_array, check_bits, check_range, code_range
from refsim.rounding import round_to_integral
from refsim.spec import NumericsSpec, Requant, Saturation

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def quantize_multiplier(real_multiplier, *, single_rounding=False):
    """(quantized_multiplier int32, shift) of a non-negative real multiplier, as TFLite computes it."""
    m = float(real_multiplier)
    if not np.isfinite(m) or m < 0:
        raise ValueError(f"real_multiplier={real_multiplier!r} is not allowed; allowed: finite and >= 0")
    if m == 0.0:
        return 0, 0
    q, shift = np.frexp(m)
    q_fixed = int(np.trunc(q * (1 << 31) + 0.5))  # TfLiteRound: half away (q > 0); q * 2^31 is exact
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    if single_rounding and shift > 30:
        shift, q_fixed = 30, (1 << 31) - 1
    return q_fixed, int(shift)


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b  # |a*b| <= 2^62: exact in int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    s = ab + nudge
    high = np.where(s >= 0, s >> 31, -((-s) >> 31))  # C++ division truncates toward zero
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    if np.any((e < 0) | (e > 31)):
        raise ValueError("exponent must lie in 0..31")
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, quantized_multiplier, shift, *, single_rounding=False) -> np.ndarray:
    """x * M in fixed point; double rounding (gemmlowp default) or single (TFLITE_SINGLE_ROUNDING)."""
    x = np.asarray(x, dtype=np.int64)
    qm = np.asarray(quantized_multiplier, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    check_range(x, INT32_MIN, INT32_MAX, name="x", what="(int32)")
    if single_rounding:
        if np.any((shift < -31) | (shift > 30)) or np.any(qm < 0):
            raise ValueError("single rounding needs shift in -31..30 and a non-negative multiplier")
        total = 31 - shift
        result = (x * qm + (np.int64(1) << (total - 1))) >> total
        # TFLite requires (TFLITE_DCHECK) that the result fits int32; refuse rather than widen.
        check_range(result, INT32_MIN, INT32_MAX, name="x * multiplier", what="(int32, as TFLite requires)")
        return result
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    # TFLite computes x * 2^left in int32; an overflow there is undefined behaviour in C++,
    # so it is refused rather than given an invented value.
    shifted = x << left
    check_range(shifted, INT32_MIN, INT32_MAX, name="x * 2^shift", what="(int32, as in TFLite)")
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, qm), right)


def float_epilogue(isums, scale_a, scale_w, *, bias=None) -> np.ndarray:
    """float32 outputs from per-cluster int sums (C, M, N) or a single (M, N); see module docstring."""
    s = as_int_array(isums, name="isums")
    if s.ndim == 2:
        s = s[None]
    if s.ndim != 3:
        raise ValueError(f"isums must be (M, N) or (C, M, N), got shape {s.shape}")
    c_count, _, n = s.shape
    sa = np.broadcast_to(np.asarray(scale_a, dtype=np.float32).reshape(-1), (c_count,))
    sw = np.asarray(scale_w, dtype=np.float32).reshape(-1)
    if sw.size == 1:
        sw = np.broadcast_to(sw, (n,))
    if sw.shape != (n,):
        raise ValueError(f"scale_w must be a scalar or have shape ({n},), got {np.shape(scale_w)}")
    acc = np.zeros(s.shape[1:], dtype=np.float32)
    for c in range(c_count):
        acc = (acc + (s[c].astype(np.float32) * sa[c]) * sw).astype(np.float32)
    if bias is not None:
        b = np.asarray(bias, dtype=np.float32).reshape(-1)
        if b.shape != (n,):
            raise ValueError(f"bias must have shape ({n},), got {np.shape(bias)}")
        acc = (acc + b).astype(np.float32)
    return acc


def requantize(acc, real_multiplier, *, zero_point=0, bits=8, spec: NumericsSpec) -> np.ndarray:
    """int32 accumulators to ``bits``-bit output codes: q = sat(requant(acc, M) + zero_point).

    spec.requant = float:           round(fl32(f32(acc) * fl32(M))) with spec.rounding
                 = double_rounding:  gemmlowp MultiplyByQuantizedMultiplier
                 = single_rounding:  TFLITE_SINGLE_ROUNDING form
    ``real_multiplier`` is one value (per tensor) or one per last-axis channel.
    The output code range is the spec's, as ``quantize`` takes it: spec.signed and spec.narrow
    (signed narrow [-(2^(b-1)-1), 2^(b-1)-1], unsigned narrow [0, 2^b-2]); spec.saturation
    clamps, wraps as ``quantize`` does ((r - qmin) mod 2^b + qmin) or sends an out-of-range
    code to 0 (``zero``). Reads requant, rounding (float form), signed, narrow, saturation.
    """
    if not isinstance(spec, NumericsSpec):
        raise TypeError("spec must be a refsim.NumericsSpec")
    bits = check_bits(bits)
    qmin, qmax = code_range(bits, spec.signed, spec.narrow)
    a = as_int_array(acc, name="acc")
    check_range(a, INT32_MIN, INT32_MAX, name="acc", what="(int32 accumulators)")
    mult = np.asarray(real_multiplier, dtype=np.float64)
    if np.any(~np.isfinite(mult) | (mult < 0)):
        raise ValueError("real_multiplier must be finite and >= 0")
    if spec.requant is Requant.FLOAT:
        y = (a.astype(np.float32) * mult.astype(np.float32)).astype(np.float32)
        r = round_to_integral(y, spec.rounding) + zero_point
    else:
        single = spec.requant is Requant.SINGLE_ROUNDING
        flat = mult.reshape(-1)
        pairs = [quantize_multiplier(m, single_rounding=single) for m in flat]
        qm = np.array([p[0] for p in pairs], dtype=np.int64).reshape(mult.shape)
        sh = np.array([p[1] for p in pairs], dtype=np.int64).reshape(mult.shape)
        r = multiply_by_quantized_multiplier(a, qm, sh, single_rounding=single) + zero_point
    if spec.saturation is Saturation.SATURATE:
        return np.clip(r, qmin, qmax).astype(np.int32)
    if spec.saturation is Saturation.ZERO:
        r = np.asarray(r, dtype=np.int64)
        return np.where((r < qmin) | (r > qmax), 0, r).astype(np.int32)
    span = 1 << bits
    return ((np.asarray(r, dtype=np.int64) - qmin) % span + qmin).astype(np.int32)
