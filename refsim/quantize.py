"""Quantize and dequantize, with every numerics knob taken from a ``NumericsSpec``.

Specification (DESIGN.md "Numerics"; ONNX QuantizeLinear opset 21 is the ``onnx`` preset):

    xc = fl(x)                       x in the spec's compute dtype (float32 or float16)
    sc = fl(s)                       the scale in the compute dtype
    v  = fl(xc / sc)                 scale_op = div
       = fl(xc * fl(1 / sc))         scale_op = mul_recip
       = fl(xc * fl(qmax / fl(amax)))  scale_op = mul_range_recip (0 where amax = 0), with the
                                     stored scale sc = fl(amax / qmax) checked (ONNX Runtime MLAS)
    zero_point_stage = after_round:  q = round(v) + z
    zero_point_stage = before_round: q = round(fl(v + fl(z)))
    zero_point_stage = before_round_fused (mul_recip only): q = round(fl(xc * fl(1 / sc) + z)),
                     one rounding, as an FMA computes it (FBGEMM's AVX2 quantizer)
    q  = saturate(q) or wrap(q)      into [qmin, qmax] of (bits, signed, narrow),
         or 0 where q leaves it      (saturation = zero: ml_dtypes' cast)

fl() is IEEE round-to-nearest-even into the compute dtype (float32, float16, or bfloat16 held
in float32 arrays); round() is the spec's rounding.
Non-finite x raises under ``nonfinite="raise"``; under ``"saturate"``, +Inf -> qmax,
-Inf -> qmin, NaN -> z; under ``"zero"`` all three give code 0. A finite x whose quotient
overflows the compute dtype (fp16) is an infinity that saturates like any large value (and
cannot be wrapped: that is an error).
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
from refsim.rounding import round_to_bfloat16, round_to_integral
from refsim.spec import ComputeDtype, NonFinite, NumericsSpec, Saturation, ScaleOp, ZeroPointStage

# The numpy dtype that holds values of each compute dtype (bfloat16 values are held in float32).
COMPUTE_DTYPES = {ComputeDtype.FLOAT32: np.float32, ComputeDtype.FLOAT16: np.float16,
                  ComputeDtype.BFLOAT16: np.float32}


def to_compute(a, compute_dtype) -> np.ndarray:
    """fl(a): each value rounded once (nearest even) to the compute dtype, in its holder dtype.

    For bfloat16 the value is computed in float64 first: a sum, product or quotient of two
    bfloat16 (or float16 and integer) operands rounded to float64 and then to bfloat16 equals
    the single rounding, because 53 >= 2 * 8 + 2 (double rounding is innocuous; Figueroa, "When
    is double rounding innocuous?"), the same reason float32 arithmetic gives correct float16.
    """
    cd = ComputeDtype(compute_dtype)
    if cd is ComputeDtype.BFLOAT16:
        return round_to_bfloat16(a)
    with np.errstate(over="ignore"):
        return np.asarray(a).astype(COMPUTE_DTYPES[cd])

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


def _range_reciprocal(amax, scale, shape, qmax, cd, kw) -> np.ndarray:
    """fl(qmax / fl(amax)) for scale_op = mul_range_recip; 0 where amax = 0 (as MLAS sets it)."""
    a = np.asarray(amax)
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"amax must be a float array, got dtype {a.dtype}")
    bad = ~np.isfinite(a) | (a < 0)
    if bad.any():
        raise ValueError(f"amax has a value {float(a[bad][0])} that is not allowed; allowed: finite and >= 0")
    a = to_compute(broadcast_param(a, shape, name="amax", **kw), cd).astype(np.float64)
    s = to_compute(broadcast_param(np.asarray(scale), shape, name="scale", **kw), cd).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = to_compute(a / qmax, cd).astype(np.float64)
        recip = to_compute(np.where(a > 0, qmax / a, 0.0), cd)
    if not np.all(np.isfinite(s) & (s >= 0)):
        raise ValueError("scale must be finite and >= 0 under scale_op='mul_range_recip'")
    mism = (a > 0) & (s != want)
    if mism.any():
        raise ValueError(f"scale = {float(s[mism][0])} does not equal fl(amax / {qmax}) = {float(want[mism][0])}; "
                         "under scale_op='mul_range_recip' the stored scale is amax / qmax")
    return recip


def quantize(x, scale, zero_point=0, *, bits, axis=None, block_size=None, clusters=None, amax=None,
             spec: NumericsSpec) -> np.ndarray:
    """Integer codes (int32) of float ``x``; see the module docstring for the exact formula.

    Every rule comes from ``spec`` (the code range from spec.signed and spec.narrow: for unsigned
    codes pass ``spec.replace(signed=False)``); reads every field but acc_bits, acc_overflow,
    requant and sdr_rounding.

    ``amax`` (the range the scale was taken from, shaped like ``scale``) is required by
    ``scale_op="mul_range_recip"`` and refused by every other scale op.
    """
    if not isinstance(spec, NumericsSpec):
        raise TypeError(f"spec must be a refsim.NumericsSpec (e.g. refsim.preset('onnx')), got {type(spec).__name__}")
    bits = check_bits(bits)
    signed, narrow = spec.signed, spec.narrow  # NumericsSpec refuses narrow with saturation='wrap'
    qmin, qmax = code_range(bits, signed, narrow)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x must be a float array (float16, float32 or float64), got dtype {x.dtype}")
    range_recip = spec.scale_op is ScaleOp.MUL_RANGE_RECIP
    if range_recip and (amax is None or not signed):
        raise ValueError("scale_op='mul_range_recip' needs amax= (the range of each scale) and signed codes"
                         if amax is None else
                         "scale_op='mul_range_recip' is symmetric: it needs a spec with signed=True")
    if amax is not None and not range_recip:
        raise ValueError(f"amax is only used by scale_op='mul_range_recip'; this spec has "
                         f"scale_op={spec.scale_op.value!r}")
    nonfinite = ~np.isfinite(x)
    if nonfinite.any() and spec.nonfinite is NonFinite.RAISE:
        i = tuple(int(j) for j in np.argwhere(nonfinite)[0])
        raise ValueError(f"x{i} = {float(x[i])} is not finite; nonfinite='raise' (set nonfinite='saturate' to map it)")
    cd = spec.compute_dtype
    cdt = COMPUTE_DTYPES[cd]
    bf16 = cd is ComputeDtype.BFLOAT16
    kw = dict(axis=axis, block_size=block_size, clusters=clusters)
    if range_recip:
        recip = _range_reciprocal(amax, scale, x.shape, qmax, cd, kw)
    else:
        s = to_compute(broadcast_param(_check_scale(scale), x.shape, name="scale", **kw), cd)
        if not np.all(np.isfinite(s) & (s > 0)):
            raise ValueError(f"scale is not representable as a positive finite {cd.value} (it under- or overflows)")
    z = broadcast_param(as_int_array(zero_point, name="zero_point"), x.shape, name="zero_point", **kw)
    # z may lie outside [qmin, qmax]: RPTQ's min-max parameters put it there when a channel's
    # range excludes 0. It is held in int32, as the references store it.
    check_range(np.asarray(z), -(1 << 31), (1 << 31) - 1, name="zero_point", what="(int32)")

    def fl(value):  # one rounding into the compute dtype; float16/32 keep numpy's own arithmetic
        return round_to_bfloat16(value) if bf16 else value.astype(cdt)

    wide = np.float64 if bf16 else cdt  # bfloat16 operands are combined in float64, then rounded once
    with np.errstate(over="ignore", invalid="ignore"):
        xc = to_compute(x, cd).astype(wide)
        if spec.scale_op is ScaleOp.DIV:
            v = fl(xc / s.astype(wide))
        else:
            if not range_recip:
                recip = fl(np.asarray(1, dtype=wide) / s.astype(wide))
                if not np.all(np.isfinite(recip)):  # 0 * inf would be a NaN quotient, not a code
                    raise ValueError(f"scale's reciprocal overflows the {cd.value} compute dtype "
                                     "(scale_op='mul_recip'); allowed: a scale whose reciprocal is finite")
            if spec.zero_point_stage is ZeroPointStage.BEFORE_ROUND_FUSED:
                v = fused_multiply_add(xc, recip, z, np.float64 if bf16 else cdt)
                v = fl(v) if bf16 else v
            else:
                v = fl(xc * recip.astype(wide))
        if spec.zero_point_stage is ZeroPointStage.BEFORE_ROUND:
            v = fl(v.astype(wide) + to_compute(z, cd).astype(wide))
        r = round_to_integral(v, spec.rounding, fmt=cd.value)
        if spec.saturation is Saturation.WRAP:
            inf = np.isinf(r) & ~nonfinite
            if inf.any():
                i = tuple(int(j) for j in np.argwhere(inf)[0])
                raise ValueError(f"x{i} = {float(x[i])} overflows the {cd.value} compute dtype "
                                 "and cannot be wrapped")
        if spec.zero_point_stage is ZeroPointStage.AFTER_ROUND:
            if spec.saturation is Saturation.WRAP:
                # Exact: fmod of an integral float is exact, so no value above 2^53 is lost.
                r = np.fmod(r, float(1 << bits))
            r = r + z
    nan = np.isnan(r)
    if spec.saturation is Saturation.SATURATE:
        q = np.clip(np.where(nan, 0.0, r), qmin, qmax).astype(np.int64)
    elif spec.saturation is Saturation.ZERO:
        q = np.where((r >= qmin) & (r <= qmax), r, 0.0).astype(np.int64)  # NaN and +-inf compare False
    else:
        span = 1 << bits
        q = np.fmod(np.where(np.isfinite(r), r, 0.0), float(span)).astype(np.int64)
        q = (q - qmin) % span + qmin
    if nonfinite.any() and spec.nonfinite is NonFinite.ZERO:
        q = np.where(nonfinite, 0, q)
    elif nonfinite.any():  # the stated mapping of nonfinite='saturate'
        zb = np.broadcast_to(z, x.shape)
        q = np.where(np.isnan(x), zb, q)
        q = np.where(np.isposinf(x), qmax, q)
        q = np.where(np.isneginf(x), qmin, q)
    return q.astype(np.int32)


def dequantize(q, scale, zero_point=0, *, axis=None, block_size=None, clusters=None, dtype=np.float32):
    """x = fl(fl(q - z) * fl(s)) in ``dtype`` (float32 by default; float16 for RPTQ's fp16 dataflow;
    "bfloat16" gives float32 values that are each a bfloat16, computed as a bf16 tensor op rounds).

    q - z is an exact integer; its conversion fl() to ``dtype`` is exact while |q - z| <= 2^24
    (float32), 2^11 (float16) or 2^8 (bfloat16), and rounds to nearest even beyond, as a tensor
    subtraction in that dtype does.
    """
    q = as_int_array(q, name="q")
    fl, holder = _float_holder(dtype)
    kw = dict(axis=axis, block_size=block_size, clusters=clusters)
    s = fl(broadcast_param(_check_scale(scale), q.shape, name="scale", **kw))
    z = broadcast_param(as_int_array(zero_point, name="zero_point"), q.shape, name="zero_point", **kw)
    with np.errstate(over="ignore"):
        if holder is np.float32 and fl is round_to_bfloat16:
            return round_to_bfloat16(fl(q - z).astype(np.float64) * s.astype(np.float64))
        return (fl(q - z) * s).astype(holder)


def _float_holder(dtype):
    """(rounding function, holder dtype) of a float output format: float16/32/64 or "bfloat16"."""
    if isinstance(dtype, str) and dtype == "bfloat16":
        return round_to_bfloat16, np.float32
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.float16, np.float32, np.float64):
        raise ValueError(f"dtype={dtype} is not allowed; allowed: float16, float32, float64, 'bfloat16'")
    return (lambda a: np.asarray(a).astype(dt)), dt


FLOAT_ZERO_FORMS = ("ort", "tinygemm", "tinygemm_fused")


def dequantize_float_zero(q, scale, zero, *, form, bits=4, axis=None, block_size=None, dtype=np.float32):
    """Dequantize with a float zero point, in one of the two forms that ship (each op rounded in ``dtype``):

        form="ort":       x = fl(fl(q * s) - fl(z * s))          ONNX Runtime MatMulNBits with a float
                                                                 zero_points input (z in the scale's dtype)
        form="tinygemm":  x = fl(fl((q - 2^(bits-1)) * s) + z)   torch _weight_int4pack_mm's scales_and_zeros
                                                                 and torchao's float zero-point domain
                                                                 (_dequantize_affine_tinygemm: mid point 8)
        form="tinygemm_fused": x = fl((q - 2^(bits-1)) * s + z)  one rounding, an FMA: what torch's CPU kernel
                                                                 _weight_int4pack_mm_for_cpu computes (x86 FMA)

    q are integer codes (unsigned for both sources), s and z float arrays broadcast like ``dequantize``'s
    parameters; ``dtype`` is float16, float32, float64 or "bfloat16" (float32 values that are bfloat16).
    """
    if form not in FLOAT_ZERO_FORMS:
        raise ValueError(f"form={form!r} is not allowed; allowed: {', '.join(map(repr, FLOAT_ZERO_FORMS))}")
    q = as_int_array(q, name="q")
    fl, holder = _float_holder(dtype)
    kw = dict(axis=axis, block_size=block_size)
    s = fl(broadcast_param(_check_scale(scale), q.shape, name="scale", **kw)).astype(np.float64)
    zero = np.asarray(zero)
    if not np.issubdtype(zero.dtype, np.floating) or not np.all(np.isfinite(zero)):
        raise ValueError("zero must be a finite float array (a float zero point)")
    z = fl(broadcast_param(zero, q.shape, name="zero", **kw)).astype(np.float64)
    with np.errstate(over="ignore"):
        if form == "ort":
            x = fl(fl(fl(q).astype(np.float64) * s).astype(np.float64) - fl(z * s).astype(np.float64))
        elif form == "tinygemm":
            mid = 1 << (check_bits(bits) - 1)
            x = fl(fl(fl(q - mid).astype(np.float64) * s).astype(np.float64) + z)
        else:  # the product of a small integer and a float is exact in float64; the sum is rounded once
            mid = 1 << (check_bits(bits) - 1)
            x = fl(fused_multiply_add(fl(q - mid), s, z, np.float64))
    return np.asarray(x).astype(holder)
