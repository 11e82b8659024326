"""Quantization parameter rules: absmax symmetric, RPTQ min-max, GPTQ min-max.

Each rule is computed in the float format its source computes in, one separately rounded
operation at a time, so the parameters themselves are bit-exact. Given parameters (ONNX
style) need no rule: pass them to ``refsim.quantize`` directly.
"""

from __future__ import annotations

import numpy as np

from refsim.checks import check_bits, normalize_axis
from refsim.spec import ComputeDtype, NumericsSpec


def _compute_dtype(spec, rule: str, allowed=("float32",)) -> str:
    """The spec's compute dtype, where ``rule`` computes in it; a dtype the rule's source never
    computes in is refused rather than silently replaced by float32."""
    if not isinstance(spec, NumericsSpec):
        raise TypeError(f"spec must be a refsim.NumericsSpec (e.g. refsim.preset('onnx')), got {type(spec).__name__}")
    name = spec.compute_dtype.value
    if name not in allowed:
        raise ValueError(f"{rule} computes in {' / '.join(allowed)} as its source does; spec.compute_dtype={name!r} "
                         f"is not allowed; allowed: {', '.join(repr(a) for a in allowed)}")
    return name


_ALL_DTYPES = tuple(c.value for c in ComputeDtype)


def _reduce_all_but(x, axis, fn):
    x = np.asarray(x)
    if axis is None:
        return fn(x)
    ax = normalize_axis(axis, x.ndim)
    return fn(x, axis=tuple(i for i in range(x.ndim) if i != ax))


def absmax_params(x, *, bits, axis=None, spec: NumericsSpec) -> np.ndarray:
    """QRazor base precision: s = fl32(absmax / (2^(b-1) - 1)), per tensor or per channel (``axis``).

    float32 as the QRazor code computes: ``spec.compute_dtype`` must be float32 (the only field read).

    Codes are then q = round(x / s) in the narrow signed range +-(2^(b-1) - 1) (use the
    ``qrazor`` preset). An all-zero channel has no scale to speak of: it gets s = 1.0, which
    maps it to code 0 like any other scale would.
    """
    _compute_dtype(spec, "absmax_params")
    bits = check_bits(bits)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x must be a float array, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x has non-finite values; absmax calibration needs finite data")
    amax = _reduce_all_but(np.abs(x.astype(np.float32)), axis, np.max).astype(np.float32)
    s = (amax / np.float32((1 << (bits - 1)) - 1)).astype(np.float32)
    return np.where(amax == 0, np.float32(1.0), s).astype(np.float32)


RPTQ_SCALE_MIN = 1e-4
RPTQ_SCALE_MAX = 1e4


def _check_range(lo, hi) -> None:
    """xmin / xmax of a min-max rule: the same shape, finite, xmin <= xmax element-wise."""
    if lo.shape != hi.shape:
        raise ValueError(f"xmin and xmax must have the same shape, got {lo.shape} and {hi.shape}")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError("xmin and xmax must be finite")
    if np.any(lo > hi):
        raise ValueError("xmin must be <= xmax element-wise")


def rptq_params(xmin, xmax, *, bits, spec: NumericsSpec):
    """RPTQ min-max asymmetric parameters (DESIGN.md, from the public RPTQ4LLM quantizer).

        s = clamp(fl(fl(xmax - xmin) / 2^k), 1e-4, 1e4)     (2^k, not 2^k - 1)
        z = round_half_even(fl(fl(xmax + xmin) * fl(-0.5 / s)))

    all in ``spec.compute_dtype`` (the only field read; the ``rptq`` preset: fp16, as the public
    code runs OPT; bfloat16 values are held in float32); the clamp bounds are the compute dtype's
    values nearest 1e-4 and 1e4. Codes use the signed range [-2^(k-1), 2^(k-1) - 1] with
    the zero point added after rounding; xmax lands on code 2^(k-1) and is clamped. Min and
    max are not forced to include 0, so z may lie outside the code range.
    Returns (scale in the compute dtype, zero_point as int32).
    """
    name = _compute_dtype(spec, "rptq_params", _ALL_DTYPES)
    bits = check_bits(bits)
    if name == "bfloat16":
        return _rptq_params_bfloat16(xmin, xmax, bits)
    dt = np.dtype(name)
    lo, hi = np.asarray(xmin), np.asarray(xmax)
    _check_range(lo, hi)
    lo, hi = lo.astype(dt), hi.astype(dt)
    with np.errstate(over="ignore"):
        s = ((hi - lo).astype(dt) / dt.type(1 << bits)).astype(dt)
        s = np.clip(s, dt.type(RPTQ_SCALE_MIN), dt.type(RPTQ_SCALE_MAX)).astype(dt)
        neg_half_over_s = (dt.type(-0.5) / s).astype(dt)
        z = np.rint(((hi + lo).astype(dt) * neg_half_over_s).astype(dt))
    if not np.all(np.isfinite(z)):
        raise ValueError(f"the RPTQ zero point overflows {dt}: the range is too far from 0 for its width")
    return s, z.astype(np.int32)


def _rptq_params_bfloat16(xmin, xmax, bits):
    """rptq_params's formula with every op rounded to bfloat16 (each op exact in float64, then one
    rounding: innocuous double rounding, see refsim.quantize.to_compute)."""
    _, fl = _eps_and_rounder("bfloat16")
    lo, hi = np.asarray(xmin, dtype=np.float64), np.asarray(xmax, dtype=np.float64)
    _check_range(lo, hi)
    lo, hi = fl(lo), fl(hi)
    with np.errstate(over="ignore", invalid="ignore"):
        s = np.clip(fl(fl(hi - lo) / float(1 << bits)), fl(RPTQ_SCALE_MIN), fl(RPTQ_SCALE_MAX))
        z = np.rint(fl(fl(hi + lo) * fl(-0.5 / s)))
    if not np.all(np.isfinite(z)):
        raise ValueError("the RPTQ zero point overflows bfloat16: the range is too far from 0 for its width")
    return s.astype(np.float32), z.astype(np.int32)


def gptq_params(xmin, xmax, *, bits, sym=False, spec: NumericsSpec):
    """GPTQ min-max parameters (IST-DASLab ``quant.py`` Quantizer.find_params), float32.

        xmin = min(xmin, 0), xmax = max(xmax, 0)
        sym:  xmax = max(|xmin|, xmax); xmin = -xmax where xmin < 0   (an all-nonnegative
              row keeps xmin = 0, as the published code does)
        xmin = xmax = 0  ->  [-1, +1]
        s = fl32((xmax - xmin) / maxq),  maxq = 2^bits - 1
        z = (maxq + 1) / 2 (sym)  or  round_half_even(fl32(-xmin / s))
    Codes: q = clamp(round(x / s) + z, 0, maxq) (``gptq`` preset); dequant s * (q - z).
    ``spec.compute_dtype`` must be float32, as the published code computes (the only field read);
    ``sym`` is GPTQ's choice of parameter rule, not a numerics knob of the spec.
    Returns (scale float32, zero_point int32).
    """
    _compute_dtype(spec, "gptq_params")
    bits = check_bits(bits)
    maxq = np.float32((1 << bits) - 1)
    lo = np.minimum(np.asarray(xmin, dtype=np.float32), np.float32(0))
    hi = np.maximum(np.asarray(xmax, dtype=np.float32), np.float32(0))
    if sym:
        hi = np.maximum(np.abs(lo), hi)
        lo = np.where(lo < 0, -hi, lo)
    both_zero = (lo == 0) & (hi == 0)
    lo = np.where(both_zero, np.float32(-1), lo).astype(np.float32)
    hi = np.where(both_zero, np.float32(1), hi).astype(np.float32)
    s = ((hi - lo).astype(np.float32) / maxq).astype(np.float32)
    if np.any(s == 0):
        raise ValueError("xmin/xmax span a range so small that the GPTQ scale underflows float32 to 0 "
                         "(the published code would produce NaN zero points)")
    if sym:
        z = np.full(s.shape, (int(maxq) + 1) // 2, dtype=np.int32)
    else:
        z = np.rint((-lo / s).astype(np.float32)).astype(np.int32)
    return s, z


def _eps_and_rounder(dtype: str):
    """(smallest normal, fl) of float16 / float32 / "bfloat16" (bfloat16 values held in float32)."""
    from refsim.quantize import to_compute

    eps = {"float32": 2.0**-126, "bfloat16": 2.0**-126, "float16": 2.0**-14}
    return eps[dtype], (lambda a: to_compute(np.asarray(a, dtype=np.float64), dtype).astype(np.float64))


def affine_minmax_params(xmin, xmax, *, qmin, qmax, symmetric, spec: NumericsSpec):
    """torchao 0.18 ``choose_qparams_affine`` (MappingType SYMMETRIC / ASYMMETRIC, default eps), from the
    per-block min and max, every op rounded in ``spec.compute_dtype`` (the input's dtype, as torchao
    computes; the only field read):

        lo = min(xmin, 0), hi = max(xmax, 0)
        symmetric:  s = max(fl(max(-lo, hi) / ((qmax - qmin) / 2)), eps);  z = int((qmax + qmin + 1) / 2)
        asymmetric: s = max(fl(fl(hi - lo) / (qmax - qmin)), eps);  z = clamp(qmin - rne(fl(lo / s)), qmin, qmax)

    eps = the dtype's smallest normal. The divisors are exact constants (torch keeps a Python scalar in
    float32 opmath), so each division is one rounding. Returns (scale as float32 holding compute-dtype
    values, zero point int32).
    """
    eps, fl = _eps_and_rounder(_compute_dtype(spec, "affine_minmax_params", _ALL_DTYPES))
    lo = np.minimum(fl(xmin), 0.0)
    hi = np.maximum(fl(xmax), 0.0)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError("xmin and xmax must be finite")
    if symmetric:
        s = np.maximum(fl(np.maximum(-lo, hi) / ((qmax - qmin) / 2)), eps)
        z = np.full(s.shape, int((qmax + qmin + 1) / 2), dtype=np.int64)
    else:
        s = np.maximum(fl(fl(hi - lo) / float(qmax - qmin)), eps)
        z = np.clip(qmin - np.rint(fl(lo / s)), qmin, qmax).astype(np.int64)
    return s.astype(np.float32), z.astype(np.int32)


def range_recip_params(amax, *, bits=8, spec: NumericsSpec):
    """ONNX Runtime MLAS int8 block quantization (MatMulNBits accuracy_level 4, QuantizeARow):
    scale = fl32(amax / qmax), qmax = 2^(bits-1) - 1; the codes then use scale_op='mul_range_recip'
    (q = rne(x * fl32(qmax / amax)), 0 where amax = 0, as MLAS stores scale 0). Returns float32 scales.
    ``spec.compute_dtype`` must be float32, as MLAS computes (the only field read).
    """
    _compute_dtype(spec, "range_recip_params")
    bits = check_bits(bits)
    a = np.asarray(amax, dtype=np.float32)
    if not np.all(np.isfinite(a) & (a >= 0)):
        raise ValueError("amax must be finite and >= 0")
    return (a / np.float32((1 << (bits - 1)) - 1)).astype(np.float32)
