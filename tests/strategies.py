"""Hypothesis strategies shared by the tests."""

import dataclasses
import enum

import numpy as np
from hypothesis import strategies as st

import refsim
from refsim.spec import NumericsSpec, Overflow, Saturation, ScaleOp, ZeroPointStage


def _spec(base, **kw):
    if kw["zero_point_stage"] is ZeroPointStage.BEFORE_ROUND_FUSED:
        kw["scale_op"] = ScaleOp.MUL_RECIP  # the fused stage is an FMA: reciprocal multiply only
    if kw["narrow"] and kw["saturation"] is Saturation.WRAP:
        kw["narrow"] = False  # refused by the spec: wrapping can give the code narrow excludes
    return refsim.preset(base).replace(**kw)


def _field_strategy(field: dataclasses.Field):
    """Every value a NumericsSpec field allows: each member of an enum, both bools, acc_bits 2..64."""
    value = getattr(refsim.preset("onnx"), field.name)
    if isinstance(value, enum.Enum):
        return st.sampled_from(list(type(value)))
    if isinstance(value, bool):
        return st.booleans()
    if field.name == "acc_bits":
        return st.integers(2, 64)
    raise TypeError(f"no strategy for NumericsSpec field {field.name!r}: add one here")


# Every field of the spec varies (a new field without a strategy fails at import, above), on top
# of a preset drawn at random; the combinations the spec refuses are repaired in _spec.
SPEC_FIELD_STRATEGIES = {f.name: _field_strategy(f) for f in dataclasses.fields(NumericsSpec)}
specs = st.builds(_spec, st.sampled_from(sorted(refsim.PRESETS)), **SPEC_FIELD_STRATEGIES)

finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
# scales that stay positive and finite in float16 as well as float32
scales = st.floats(min_value=2.0**-10, max_value=2.0**10, width=32, allow_subnormal=False)
# every positive finite float32, from the smallest subnormal 2^-149 to the largest 3.4028235e38:
# the quantizer's refusals (a scale that is 0 or inf in the compute dtype) are among them
F32_TINY = float(np.float32(2.0**-149))
F32_MAX = float(np.finfo(np.float32).max)
float32_scales = st.one_of(
    st.floats(min_value=F32_TINY, max_value=F32_MAX, width=32, allow_subnormal=True),
    st.sampled_from([F32_TINY, float(np.finfo(np.float32).tiny), float(np.finfo(np.float16).smallest_subnormal),
                     float(np.float32(np.finfo(np.float16).smallest_subnormal) / 2), 65504.0, 65520.0, F32_MAX]),
)


def int_matrix(draw, shape, lo, hi):
    return np.array(draw(st.lists(st.integers(lo, hi), min_size=shape[0] * shape[1],
                                  max_size=shape[0] * shape[1])), dtype=np.int64).reshape(shape)


def acc_spec(acc_bits=32, overflow="wrap", base="onnx"):
    """``base`` with its accumulator replaced: the spec a GEMM test hands the GEMM (ONNX's is 32-bit wrap)."""
    return refsim.preset(base).replace(acc_bits=acc_bits, acc_overflow=overflow)


# Every accumulator the spec allows (width 2..64, each overflow rule) on top of a random preset: the GEMMs
# read only these two fields, so the preset underneath must not matter.
acc_specs = st.builds(acc_spec, st.integers(2, 64), st.sampled_from([o.value for o in Overflow]),
                      st.sampled_from(sorted(refsim.PRESETS)))


def sdr_spec(sdr_rounding="half_up", base="qrazor"):
    """``base`` with its SDR rounding replaced (the ``qrazor`` preset's is half_up, the paper's rounding bit)."""
    return refsim.preset(base).replace(sdr_rounding=sdr_rounding)
