"""Hypothesis strategies shared by the tests."""

import numpy as np
from hypothesis import strategies as st

import refsim
from refsim.spec import ComputeDtype, Rounding, Saturation, ScaleOp, ZeroPointStage


def _spec(base, **kw):
    if kw["zero_point_stage"] is ZeroPointStage.BEFORE_ROUND_FUSED:
        kw["scale_op"] = ScaleOp.MUL_RECIP  # the fused stage is an FMA: reciprocal multiply only
    return refsim.preset(base).replace(**kw)


specs = st.builds(
    _spec,
    st.sampled_from(sorted(refsim.PRESETS)),
    scale_op=st.sampled_from(list(ScaleOp)),
    compute_dtype=st.sampled_from(list(ComputeDtype)),
    rounding=st.sampled_from(list(Rounding)),
    zero_point_stage=st.sampled_from(list(ZeroPointStage)),
    saturation=st.sampled_from(list(Saturation)),
    signed=st.booleans(),
    narrow=st.booleans(),
)

finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
# scales that stay positive and finite in float16 as well as float32
scales = st.floats(min_value=2.0**-10, max_value=2.0**10, width=32, allow_subnormal=False)


def int_matrix(draw, shape, lo, hi):
    return np.array(draw(st.lists(st.integers(lo, hi), min_size=shape[0] * shape[1],
                                  max_size=shape[0] * shape[1])), dtype=np.int64).reshape(shape)
