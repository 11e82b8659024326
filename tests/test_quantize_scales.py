"""quantize over every positive float32 scale, subnormal to max, against its scalar twin.

The documented refusals are predicted here and asserted with their messages, never swallowed:
  - a scale that rounds to 0 or to infinity in the compute dtype (float16 from about 2.98e-8
    down and from 65520 up): "scale is not representable as a positive finite ...";
  - under scale_op="mul_recip", a scale whose reciprocal fl(1 / s) overflows the compute dtype
    (0 * inf would be a NaN quotient): "reciprocal overflows";
  - under saturation="wrap", a quotient that overflows the compute dtype: "cannot be wrapped"
    (the scalar twin refuses the same element).
Everything else is an integer code equal to the twin's.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import finite_f32, float32_scales, specs

import refsim
from refsim.quantize import COMPUTE_DTYPES
from refsim.rounding import round_to_bfloat16
from refsim.scalar import quantize_scalar


def _twin(x, s, z, bits, spec):
    """The twin's codes, or None for an element the twin refuses (wrap of an infinite quotient)."""
    out = []
    for v in x.tolist():
        try:
            out.append(quantize_scalar(v, s, z, bits=bits, spec=spec))
        except ValueError as exc:
            assert "cannot wrap" in str(exc)
            out.append(None)
    return out


@given(spec=specs, bits=st.integers(2, 16), s=float32_scales, data=st.data())
def test_quantize_over_the_whole_float32_scale_range(spec, bits, s, data):
    spec = spec.replace(nonfinite="raise")  # finite inputs only: the policy is tested elsewhere
    if spec.scale_op.value == "mul_range_recip":
        # its scale is fl(amax / qmax), drawn with amax= (tests/test_quantize.py): not a free scale
        spec = spec.replace(scale_op="mul_recip")
    x = np.array(data.draw(st.lists(finite_f32, min_size=1, max_size=16)), dtype=np.float32)
    # values near the code range at this scale, where rounding and saturation decide
    k = np.array(data.draw(st.lists(st.integers(-(2**bits), 2**bits), min_size=1, max_size=8)), dtype=np.float64)
    with np.errstate(over="ignore"):
        near = (k * s).astype(np.float32)
    x = np.concatenate([x, near[np.isfinite(near)]])
    z = data.draw(st.integers(-(1 << bits), 1 << bits))
    cdt = COMPUTE_DTYPES[spec.compute_dtype]
    with np.errstate(over="ignore", divide="ignore"):
        if spec.compute_dtype.value == "bfloat16":  # held in float32, each operation rounded once to bfloat16
            sc = round_to_bfloat16(np.float32(s))
            recip = round_to_bfloat16(np.float64(1) / np.float64(sc)) if sc > 0 else np.float32(np.inf)
        else:
            sc = cdt(s)
            recip = cdt(1) / sc
    if not (np.isfinite(sc) and sc > 0):
        with pytest.raises(ValueError, match="scale is not representable as a positive finite"):
            refsim.quantize(x, s, z, bits=bits, spec=spec)
        return
    if spec.scale_op.value == "mul_recip" and not np.isfinite(recip):
        with pytest.raises(ValueError, match="scale's reciprocal overflows the b?float\\d+ compute dtype"):
            refsim.quantize(x, s, z, bits=bits, spec=spec)
        with pytest.raises(ValueError, match="reciprocal overflows"):
            quantize_scalar(float(x[0]), s, z, bits=bits, spec=spec)
        return
    want = _twin(x, s, z, bits, spec)
    if None in want:
        assert spec.saturation.value == "wrap"
        with pytest.raises(ValueError, match=r"x\(\d+,\) = .* overflows the b?float\d+ compute dtype and cannot be "
                                             "wrapped"):
            refsim.quantize(x, s, z, bits=bits, spec=spec)
        x = x[[w is not None for w in want]]  # the rest must still be quantized exactly
        want = [w for w in want if w is not None]
        if x.size == 0:
            return
    assert refsim.quantize(x, s, z, bits=bits, spec=spec).tolist() == want


@pytest.mark.parametrize("compute_dtype,refused,accepted", [
    ("float16", [2.0**-25, 65520.0, 2.0**-149, 3.4028235e38], [2.0**-24, 65504.0]),
    ("float32", [], [2.0**-149, 3.4028235e38]),
])
def test_scale_refusals_at_the_compute_dtype_edges(compute_dtype, refused, accepted):
    spec = refsim.preset("onnx").replace(compute_dtype=compute_dtype)
    x = np.array([0.0, 1.0, -1.0], np.float32)
    for s in refused:
        with pytest.raises(ValueError, match=f"scale is not representable as a positive finite {compute_dtype}"):
            refsim.quantize(x, s, bits=8, spec=spec)
    for s in accepted:
        assert refsim.quantize(x, s, bits=8, spec=spec).tolist() == _twin(x, s, 0, 8, spec)
    for s in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="finite and > 0"):
            refsim.quantize(x, s, bits=8, spec=spec)
