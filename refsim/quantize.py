"""Quantize and dequantize, with every numerics knob taken from a ``NumericsSpec``.

Specification (DESIGN.md "Numerics"; ONNX QuantizeLinear opset 21 is the ``onnx`` preset):

    xc = fl(x)                       x in the spec's compute dtype (float32 or float16)
    sc = fl(s)                       the scale in the compute dtype
    v  = fl(xc / sc)                 scale_op = div
       = fl(xc * fl(1 / sc))         scale_op = mul_recip
    zero_point_stage = after_round:  q = round(v) + z
    zero_point_stage = before_round: q = round(fl(v + fl(z)))
    zero_point_stage = before_round_fused (mul_recip only): q = round(fl(xc * fl(1 / sc) + z)),
                     one rounding, as an FMA computes it (FBGEMM's AVX2 quantizer)
    q  = saturate(q) or wrap(q)      into [qmin, qmax] of (bits, signed, narrow)

fl() is IEEE round-to-nearest-even into the compute dtype; round() is the spec's rounding.
Non-finite x raises under ``nonfinite="raise"``; under ``"saturate"``, +Inf -> qmax,
-Inf -> qmin, NaN -> z. A finite x whose quotient overflows the compute dtype (fp16) is an
infinity that saturates like any large value (and cannot be wrapped: that is an error).
Refused scales: not finite and > 0; 0 or inf in the compute dtype; under mul_recip, a scale
whose reciprocal fl(1 / sc) is inf (0 * inf would be a NaN quotient).

Granularity (the parameters are broadcast to x):
    per tensor   axis=None, scale a scalar
    per axis     axis=a, scale of shape (x.shape[a],)
    per block    axis=a, block_size=B: scale has x's rank with ceil(D/B) along a, the last
                 block ragged (ONNX blocked quantization)
    per cluster  axis=a, clusters=c (an int cluster id per channel along a): scale of shape
                 (C,) or x's rank with C along a

The scalar specification is ``refsim.scalar.quantize_scalar``.
"""

from __future__ import annotations

import numpy as np

from refsim.checks import as_int_array, check_bits, check_range, code_range, normalize_axis
from refsim.floatops import fused_multiply_add
from refsim.rounding import round_to_integral
from refsim.spec import ComputeDtype, NonFinite, NumericsSpec, Saturation, ScaleOp, ZeroPointStage

COMPUTE_DTYPES = {ComputeDtype.FLOAT32: np.float32, ComputeDtype.FLOAT16: np.float16}


def broadcast_param(p, x_shape, *, axis=None, block_size=None, clusters=None, name="scale") -> np.ndarray:
    """Expand a quantization parameter to an array broadcastable against ``x_shape``."""
    p = np.asarray(p)
    ndim = len(x_shape)
    if axis is None:
        if block_size is not None or clusters is not None:
            raise ValueError("axis must be given with block_size or clusters")
        if p.size != 1:
            raise ValueError(f"{name} must be a scalar for per-tensor quantization (axis=None), got shape {p.shape}")
        return p.reshape(())
    ax = normalize_axis(axis, ndim)
    dim = x_shape[ax]
    if block_size is not None and clusters is not None:
        raise ValueError("block_size and clusters are exclusive; give one of them")
    if p.ndim == 0:  # one value for every element (a default zero point of 0, say)
        return p

    def along_axis(q):
        shape = [1] * ndim
        shape[ax] = q.shape[0]
        return q.reshape(shape)

    if block_size is not None:
        if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
            raise ValueError(f"block_size={block_size!r} is not allowed; allowed: a positive integer")
        nblocks = -(-dim // block_size)
        if p.ndim == 1 and ndim == 1:
            p = p.reshape(-1)
        expect = tuple(nblocks if i == ax else x_shape[i] for i in range(ndim))
        if p.shape != expect:
            raise ValueError(
                f"{name} has shape {p.shape}; block_size={block_size} along axis {ax} of an input of shape "
                f"{tuple(x_shape)} needs shape {expect}"
            )
        return np.take(np.repeat(p, block_size, axis=ax), np.arange(dim), axis=ax)
    if clusters is not None:
        c = as_int_array(clusters, name="clusters")
        if c.shape != (dim,):
            raise ValueError(f"clusters must have shape ({dim},) (one id per channel along axis {ax}), got {c.shape}")
        n_clusters = p.shape[0] if p.ndim == 1 else p.shape[ax]
        check_range(c, 0, n_clusters - 1, name="clusters", what=f"(the {name} has {n_clusters} clusters)")
        if p.ndim == 1:
            return along_axis(p[c])
        expect = tuple(n_clusters if i == ax else x_shape[i] for i in range(ndim))
        if p.shape != expect:
            raise ValueError(f"{name} has shape {p.shape}; per-cluster parameters need (C,) or {expect}")
        return np.take(p, c, axis=ax)
    if p.shape != (dim,):
        raise ValueError(f"{name} has shape {p.shape}; per-axis quantization along axis {ax} needs ({dim},)")
    return along_axis(p)


def _check_scale(scale, name="scale") -> np.ndarray:
    s = np.asarray(scale)
    if not np.issubdtype(s.dtype, np.floating) and not np.issubdtype(s.dtype, np.integer):
        raise TypeError(f"{name} must be a float array, got dtype {s.dtype}")
    s = s.astype(np.float64) if s.dtype.kind in "iu" else s
    bad = ~np.isfinite(s) | (s <= 0)
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0]) if s.ndim else ()
        raise ValueError(f"{name}{i if s.ndim else ''} = {float(s[i])} is not allowed; allowed: finite and > 0")
    return s


def quantize(x, scale, zero_point=0, *, bits, signed=None, narrow=None, axis=None, block_size=None,
             clusters=None, spec: NumericsSpec) -> np.ndarray:
    """Integer codes (int32) of float ``x``; see the module docstring for the exact formula."""
    if not isinstance(spec, NumericsSpec):
        raise TypeError(f"spec must be a refsim.NumericsSpec (e.g. refsim.preset('onnx')), got {type(spec).__name__}")
    bits = check_bits(bits)
    signed = spec.signed if signed is None else bool(signed)
    narrow = spec.narrow if narrow is None else bool(narrow)
    qmin, qmax = code_range(bits, signed, narrow)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x must be a float array (float16, float32 or float64), got dtype {x.dtype}")
    nonfinite = ~np.isfinite(x)
    if nonfinite.any() and spec.nonfinite is NonFinite.RAISE:
        i = tuple(int(j) for j in np.argwhere(nonfinite)[0])
        raise ValueError(f"x{i} = {float(x[i])} is not finite; nonfinite='raise' (set nonfinite='saturate' to map it)")
    cdt = COMPUTE_DTYPES[spec.compute_dtype]
    kw = dict(axis=axis, block_size=block_size, clusters=clusters)
    s = broadcast_param(_check_scale(scale), x.shape, name="scale", **kw).astype(cdt)
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError(f"scale is not representable as a positive finite {cdt.__name__} (it under- or overflows)")
    z = broadcast_param(as_int_array(zero_point, name="zero_point"), x.shape, name="zero_point", **kw)
    # z may lie outside [qmin, qmax]: RPTQ's min-max parameters put it there when a channel's
    # range excludes 0. It is held in int32, as the references store it.
    check_range(np.asarray(z), -(1 << 31), (1 << 31) - 1, name="zero_point", what="(int32)")

    with np.errstate(over="ignore", invalid="ignore"):
        xc = x.astype(cdt)
        if spec.scale_op is ScaleOp.DIV:
            v = (xc / s).astype(cdt)
        else:
            recip = (np.asarray(1, dtype=cdt) / s).astype(cdt)
            if not np.all(np.isfinite(recip)):  # 0 * inf would be a NaN quotient, not a code
                raise ValueError(f"scale's reciprocal overflows the {cdt.__name__} compute dtype "
                                 "(scale_op='mul_recip'); allowed: a scale whose reciprocal is finite")
            if spec.zero_point_stage is ZeroPointStage.BEFORE_ROUND_FUSED:
                v = fused_multiply_add(xc, recip, z, cdt)
            else:
                v = (xc * recip).astype(cdt)
        if spec.zero_point_stage is ZeroPointStage.BEFORE_ROUND:
            v = (v + z.astype(cdt)).astype(cdt)
        r = round_to_integral(v, spec.rounding)
        if spec.saturation is Saturation.WRAP:
            inf = np.isinf(r) & ~nonfinite
            if inf.any():
                i = tuple(int(j) for j in np.argwhere(inf)[0])
                raise ValueError(f"x{i} = {float(x[i])} overflows the {cdt.__name__} compute dtype "
                                 "and cannot be wrapped")
        if spec.zero_point_stage is ZeroPointStage.AFTER_ROUND:
            if spec.saturation is Saturation.WRAP:
                # Exact: fmod of an integral float is exact, so no value above 2^53 is lost.
                r = np.fmod(r, float(1 << bits))
            r = r + z
    nan = np.isnan(r)
    if spec.saturation is Saturation.SATURATE:
        q = np.clip(np.where(nan, 0.0, r), qmin, qmax).astype(np.int64)
    else:
        span = 1 << bits
        q = np.fmod(np.where(np.isfinite(r), r, 0.0), float(span)).astype(np.int64)
        q = (q - qmin) % span + qmin
    if nonfinite.any():  # the stated mapping of nonfinite='saturate'
        zb = np.broadcast_to(z, x.shape)
        q = np.where(np.isnan(x), zb, q)
        q = np.where(np.isposinf(x), qmax, q)
        q = np.where(np.isneginf(x), qmin, q)
    return q.astype(np.int32)


def dequantize(q, scale, zero_point=0, *, axis=None, block_size=None, clusters=None, dtype=np.float32):
    """x = fl(fl(q - z) * fl(s)) in ``dtype`` (float32 by default; float16 for RPTQ's fp16 dataflow).

    q - z is an exact integer; its conversion fl() to ``dtype`` is exact while |q - z| <= 2^24
    (float32) or 2^11 (float16), and rounds to nearest even beyond, as a tensor subtraction in
    that dtype does.
    """
    q = as_int_array(q, name="q")
    dtype = np.dtype(dtype)
    if dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"dtype={dtype} is not allowed; allowed: float16, float32, float64")
    kw = dict(axis=axis, block_size=block_size, clusters=clusters)
    s = broadcast_param(_check_scale(scale), q.shape, name="scale", **kw).astype(dtype)
    z = broadcast_param(as_int_array(zero_point, name="zero_point"), q.shape, name="zero_point", **kw)
    with np.errstate(over="ignore"):
        return ((q - z).astype(dtype) * s).astype(dtype)
