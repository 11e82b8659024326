"""refsim.code_thresholds: codes read from the quantizer's thresholds equal refsim.quantize's, for every spec."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import refsim
from refsim.code_thresholds import code_thresholds, quantize_tensor
from refsim.spec import ComputeDtype, Rounding, ScaleOp, ZeroPointStage


@st.composite
def monotone_spec(draw):
    """Every spec under which one (s, z) quantizes monotonically: saturation 'saturate', no range reciprocal."""
    spec = refsim.preset(draw(st.sampled_from(["onnx", "rptq", "gptq", "qrazor"])))
    kw = dict(rounding=draw(st.sampled_from(list(Rounding))),
              compute_dtype=draw(st.sampled_from(list(ComputeDtype))),
              scale_op=draw(st.sampled_from([ScaleOp.DIV, ScaleOp.MUL_RECIP])),
              signed=draw(st.booleans()), narrow=draw(st.booleans()), saturation="saturate", nonfinite="raise")
    kw["zero_point_stage"] = draw(st.sampled_from(
        list(ZeroPointStage) if kw["scale_op"] is ScaleOp.MUL_RECIP else
        [ZeroPointStage.AFTER_ROUND, ZeroPointStage.BEFORE_ROUND]))
    try:
        return spec.replace(**kw)
    except ValueError:  # a combination the spec itself refuses
        return spec


def _inputs(rng, scale, n):
    """Values around every code boundary (x near (j - z + 1/2) s), wide magnitudes, zeros of both signs."""
    near = (rng.integers(-300, 300, n) + rng.choice([-0.5, 0.5, 0.0], n)) * scale
    toward = np.where(rng.random(n) < 0.5, np.float32(np.inf), np.float32(-np.inf))
    x = np.where(rng.random(n) < 0.3, near.astype(np.float32), np.nextafter(near.astype(np.float32), toward))
    wide = (rng.standard_normal(n) * 10.0 ** rng.integers(-6, 6, n)).astype(np.float32)
    return np.concatenate([x, wide, np.array([0.0, -0.0, 3.4e38, -3.4e38, 1e-45, -1e-45], np.float32)])


@settings(max_examples=120, deadline=None)
@given(monotone_spec(), st.integers(2, 8), st.floats(1e-4, 10.0), st.integers(-20, 20), st.integers(0, 2**31))
def test_codes_from_thresholds_equal_quantize(spec, bits, scale, zero, seed):
    rng = np.random.default_rng(seed)
    s = np.float32(scale)
    x = _inputs(rng, float(s), 2000)
    want = refsim.quantize(x, s, zero, bits=bits, spec=spec)
    got = quantize_tensor(x, s, zero, bits=bits, spec=spec, min_elements=0)
    assert got.dtype == np.int32 and np.array_equal(got, want)


def test_every_float16_value_and_its_neighbours_exhaustively():
    """All finite float16 values (as float32) and their float32 neighbours, under the rptq preset's fp16
    compute (the probabilities' quantizer: s = fp16(1/255), z = 0, unsigned 8-bit) and onnx's float32."""
    h = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    h = h[np.isfinite(h)].astype(np.float32)
    x = np.concatenate([h, np.nextafter(h, np.float32(np.inf)), np.nextafter(h, np.float32(-np.inf))])
    cases = [(refsim.preset("rptq").replace(signed=False), np.float16(1 / 255), 0, 8),
             (refsim.preset("onnx"), np.float32(0.0371), 3, 4),
             (refsim.preset("rptq"), np.float16(0.25), -9, 3)]
    for spec, s, z, bits in cases:
        assert np.array_equal(quantize_tensor(x, s, z, bits=bits, spec=spec, min_elements=0),
                              refsim.quantize(x, s, z, bits=bits, spec=spec))


def test_thresholds_are_the_first_value_of_each_code():
    spec = refsim.preset("onnx")
    t = code_thresholds(np.float32(0.5), 0, bits=4, spec=spec)
    assert t.shape == (15,) and np.all(np.diff(t) >= 0)
    q = refsim.quantize(t, np.float32(0.5), 0, bits=4, spec=spec)
    below = refsim.quantize(np.nextafter(t, np.float32(-np.inf)), np.float32(0.5), 0, bits=4, spec=spec)
    assert np.array_equal(q, np.arange(-7, 8)) and np.array_equal(below, np.arange(-8, 7))


def test_other_cases_go_to_quantize():
    """Non-finite input (raised as quantize raises), 'wrap' saturation: the same result as refsim.quantize."""
    import pytest

    x = np.linspace(-50, 50, 70000, dtype=np.float32)
    wrap = refsim.preset("onnx").replace(saturation="wrap")
    assert np.array_equal(quantize_tensor(x, np.float32(0.1), 0, bits=8, spec=wrap),
                          refsim.quantize(x, np.float32(0.1), 0, bits=8, spec=wrap))
    x[5] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        quantize_tensor(x, np.float32(0.1), 0, bits=8, spec=refsim.preset("onnx"))
