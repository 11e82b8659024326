"""refsim.quantize / dequantize against the scalar specification, exhaustively and by hypothesis."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import finite_f32, scales, specs

import refsim
from refsim.quantize import to_compute
from refsim.scalar import (
    affine_minmax_params_scalar,
    dequantize_float_zero_scalar,
    dequantize_scalar,
    quantize_scalar,
)

PRESETS = sorted(refsim.PRESETS)


def assert_agrees_with_twin(x, s, z, bits, spec):
    """The fast quantizer and its scalar twin give the same codes, or both refuse the input."""
    try:
        fast = refsim.quantize(x, s, z, bits=bits, spec=spec)
    except ValueError:
        with pytest.raises(ValueError):
            twin(x, s, z, bits, spec)
        return
    assert np.array_equal(fast, twin(x, s, z, bits, spec))


def twin(x, s, z, bits, spec, amax=None):
    return np.array([quantize_scalar(float(v), float(s), int(z), bits=bits, spec=spec,
                                     amax=amax) for v in np.asarray(x).reshape(-1)],
                    dtype=np.int64).reshape(np.shape(x))


def range_scale(s, bits):
    """(scale, amax) with scale = fl32(amax / qmax), amax near s * qmax: a scale_op='mul_range_recip' pair."""
    qmax = (1 << (bits - 1)) - 1
    amax = np.float32(np.float32(s) * np.float32(qmax))
    return np.float32(amax / np.float32(qmax)), amax


@given(spec=specs, bits=st.integers(2, 16), s=scales, data=st.data())
def test_quantize_equals_scalar_twin(spec, bits, s, data):
    x = np.array(data.draw(st.lists(finite_f32, min_size=1, max_size=24)), dtype=np.float32)
    # values near the code range, where rounding and saturation decide
    near = np.array(data.draw(st.lists(st.floats(-2.0**bits, 2.0**bits, width=32), min_size=1, max_size=24)),
                    dtype=np.float32) * np.float32(s)
    x = np.concatenate([x, near.astype(np.float32)])
    z = data.draw(st.integers(-(1 << bits), (1 << bits)))
    if spec.saturation.value == "wrap":
        x = x[np.isfinite((x.astype(np.float64) / s))]
        x = x[np.abs(x.astype(np.float64) / s) < 6e4]  # the fp16 compute dtype must not overflow
    assert_agrees_with_twin(x, s, z, bits, spec)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("bits", [3, 4, 8])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("s", [0.25, 0.1, 0.0123])
def test_every_code_its_ties_and_their_neighbours(name, bits, signed, s):
    """Exhaustive over the int3/int4/int8 code range: each code, each tie between codes, and the
    float32 neighbours of both, plus a margin beyond the range (saturation)."""
    spec = refsim.preset(name)
    amax = None
    if spec.scale_op.value == "mul_range_recip":
        if not signed:
            with pytest.raises(ValueError, match="needs a spec with signed=True"):
                refsim.quantize(np.zeros(1, np.float32), s, bits=bits, amax=s, spec=spec.replace(signed=False))
            return
        s, amax = range_scale(s, bits)
    lo = -(1 << bits) if signed else -(1 << (bits - 1))
    k = np.arange(lo - 2, (1 << bits) + 2, dtype=np.float64)
    centers = np.concatenate([k, k + 0.5]) * s
    x = centers.astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(-np.inf))])
    for z in (0, 1, -1 if signed else 3):
        fast = refsim.quantize(x, s, z, bits=bits, spec=spec.replace(signed=signed), amax=amax)
        assert np.array_equal(fast, twin(x, s, z, bits, spec.replace(signed=signed), amax=amax))


def test_zero_point_stage_differs_under_ties_even():
    """DESIGN.md: rint(0.5) + 1 = 1 but rint(0.5 + 1) = 2."""
    after = refsim.preset("onnx")
    before = after.replace(zero_point_stage="before_round")
    x = np.array([0.5], dtype=np.float32)
    assert refsim.quantize(x, 1.0, 1, bits=8, spec=after)[0] == 1
    assert refsim.quantize(x, 1.0, 1, bits=8, spec=before)[0] == 2


def test_div_and_reciprocal_differ_on_fbgemm_example():
    """FBGEMM's example (DESIGN.md): x / s = 127.49999 but x * (1/s) = 127.5 in float32."""
    s, x = np.float32(0.00214854861), np.float32(0.273939937)
    assert np.float32(x / s) < 127.5
    assert np.float32(x * np.float32(1 / s)) == 127.5
    onnx = refsim.quantize(np.array([x]), s, bits=8, spec=refsim.preset("onnx"))
    away = {name: refsim.preset(name).replace(rounding="ties_away") for name in ("onnx", "torch")}
    torch_ = refsim.quantize(np.array([x]), s, bits=8, spec=away["torch"])
    assert (onnx[0], torch_[0]) == (127, 127)  # 127.5 ties away -> 128 saturates to 127
    assert refsim.quantize(np.array([x]), s, bits=9, spec=away["torch"])[0] == 128
    assert refsim.quantize(np.array([x]), s, bits=9, spec=away["onnx"])[0] == 127


def test_fp16_compute_rounds_the_quotient_to_half_precision():
    spec = refsim.preset("rptq")
    x = np.array([2049.0], dtype=np.float32)  # not representable in fp16: becomes 2048 (ties even)
    assert refsim.quantize(x, 1.0, bits=16, spec=spec.replace(signed=True))[0] == 2048
    assert refsim.quantize(x, 1.0, bits=16, spec=spec.replace(compute_dtype="float32"))[0] == 2049


@given(spec=specs, bits=st.integers(2, 8), data=st.data())
def test_per_axis_block_and_cluster_equal_per_element_quantization(spec, bits, data):
    rows, cols = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 13))
    x = np.array(data.draw(st.lists(st.floats(-100, 100, width=32), min_size=rows * cols, max_size=rows * cols)),
                 dtype=np.float32).reshape(rows, cols)
    if spec.saturation.value == "wrap":
        spec = spec.replace(saturation="saturate")
    if spec.scale_op.value == "mul_range_recip":  # needs amax=; its granularity is tested on its own
        spec = spec.replace(scale_op="mul_recip")
    block = data.draw(st.integers(1, cols + 2))
    nb = -(-cols // block)
    s_blk = np.array(data.draw(st.lists(scales, min_size=rows * nb, max_size=rows * nb)), np.float32).reshape(rows, nb)
    z_blk = np.array(data.draw(st.lists(st.integers(-3, 3), min_size=rows * nb, max_size=rows * nb))).reshape(rows, nb)
    got = refsim.quantize(x, s_blk, z_blk, bits=bits, axis=1, block_size=block, spec=spec)
    for r in range(rows):
        for c in range(cols):
            assert got[r, c] == quantize_scalar(float(x[r, c]), float(s_blk[r, c // block]), int(z_blk[r, c // block]),
                                                bits=bits, spec=spec)
    n_clusters = data.draw(st.integers(1, 4))
    ids = np.array(data.draw(st.lists(st.integers(0, n_clusters - 1), min_size=cols, max_size=cols)))
    s_cl = np.array(data.draw(st.lists(scales, min_size=n_clusters, max_size=n_clusters)), np.float32)
    got = refsim.quantize(x, s_cl, 0, bits=bits, axis=1, clusters=ids, spec=spec)
    per_axis = refsim.quantize(x, s_cl[ids], 0, bits=bits, axis=1, spec=spec)
    assert np.array_equal(got, per_axis)
    for c in range(cols):
        assert np.array_equal(got[:, c], refsim.quantize(x[:, c], s_cl[ids[c]], bits=bits, spec=spec))


@given(st.integers(2, 12), st.lists(st.integers(-2048, 2048), min_size=1, max_size=30), scales, st.integers(-8, 8))
def test_dequantize_equals_scalar_twin(bits, q, s, z):
    q = np.array(q)
    got = refsim.dequantize(q, s, z)
    assert got.dtype == np.float32
    assert all(Fraction(float(g)) == dequantize_scalar(int(v), float(s), z) for g, v in zip(got, q, strict=True))
    got16 = refsim.dequantize(q, s, z, dtype=np.float16)
    assert all(Fraction(float(g)) == dequantize_scalar(int(v), float(s), z, "float16")
               for g, v in zip(got16, q, strict=True) if np.isfinite(g))


def test_nonfinite_policy():
    x = np.array([np.nan, np.inf, -np.inf, 1.0], dtype=np.float32)
    with pytest.raises(ValueError, match=r"x\(0,\) = .*nan.* not finite"):
        refsim.quantize(x, 1.0, bits=4, spec=refsim.preset("onnx"))
    spec = refsim.preset("onnx").replace(nonfinite="saturate")
    assert refsim.quantize(x, 1.0, 2, bits=4, spec=spec).tolist() == [2, 7, -8, 3]


def test_wrap_keeps_low_bits_and_refuses_infinity():
    spec = refsim.preset("onnx").replace(saturation="wrap")
    x = np.array([7, 8, 9, -9, 100, 1e9], dtype=np.float32)
    assert refsim.quantize(x, 1.0, bits=4, spec=spec).tolist() == [7, -8, -7, 7, 4, int((1e9 + 8) % 16 - 8)]
    with pytest.raises(ValueError, match="cannot be wrapped"):
        refsim.quantize(np.array([70000.0], np.float32), 1.0, bits=4, spec=spec.replace(compute_dtype="float16"))


@pytest.mark.parametrize("kwargs,match", [
    (dict(bits=1), "bits=1 is not allowed; allowed: an integer in 2..16"),
    (dict(bits=17), "bits=17"),
    (dict(bits=4, scale=0.0), "scale = 0.0 is not allowed; allowed: finite and > 0"),
    (dict(bits=4, scale=-1.0), "scale"),
    (dict(bits=4, scale=np.inf), "scale"),
    (dict(bits=4, scale=np.ones(3), axis=1), "scale has shape \\(3,\\); per-axis.*needs \\(4,\\)"),
    (dict(bits=4, scale=np.ones((2, 1)), axis=1, block_size=3), "needs shape \\(2, 2\\)"),
    (dict(bits=4, scale=np.ones(2), axis=1, clusters=[0, 1, 2, 0]), "clusters\\(2,\\) = 2 is outside"),
    (dict(bits=4, axis=5), "axis=5 is not allowed"),
    (dict(bits=4, scale=1e-9, spec="rptq"), "not representable as a positive finite float16"),
])
def test_bad_input_names_the_argument(kwargs, match):
    kwargs = dict(kwargs)
    spec = refsim.preset(kwargs.pop("spec", "onnx"))
    scale = kwargs.pop("scale", 1.0)
    with pytest.raises((ValueError, TypeError), match=match):
        refsim.quantize(np.zeros((2, 4), np.float32), scale, bits=kwargs.pop("bits"), spec=spec, **kwargs)


def test_integer_input_and_missing_spec_are_refused():
    with pytest.raises(TypeError, match="x must be a float array"):
        refsim.quantize(np.arange(3), 1.0, bits=4, spec=refsim.preset("onnx"))
    with pytest.raises(TypeError, match="spec must be a refsim.NumericsSpec"):
        refsim.quantize(np.zeros(3, np.float32), 1.0, bits=4, spec="onnx")


# --- the knobs that the shipped libraries need (docs/numerics.md) --------------------------------------------

@given(spec=specs, bits=st.integers(2, 8), data=st.data())
def test_new_knobs_equal_the_scalar_twin(spec, bits, data):
    """bfloat16 compute, ceil / away / ties_zero and the two float-formula roundings, saturation 'zero' and
    nonfinite 'zero' drawn together with every other knob."""
    spec = spec.replace(compute_dtype=data.draw(st.sampled_from(["bfloat16", "float32", "float16"])),
                        nonfinite=data.draw(st.sampled_from(["zero", "saturate"])))
    if spec.scale_op.value == "mul_range_recip":
        spec = spec.replace(scale_op="div")
    s = data.draw(scales)
    x = np.array(data.draw(st.lists(st.floats(-2.0**(bits + 1), 2.0**(bits + 1), width=32), min_size=1, max_size=20)),
                 dtype=np.float32) * np.float32(s)
    x = np.concatenate([x.astype(np.float32), np.array([np.nan, np.inf, -np.inf], np.float32)])
    z = data.draw(st.integers(-4, 4))
    if spec.saturation.value == "wrap":
        spec = spec.replace(nonfinite="zero")
    assert_agrees_with_twin(x, s, z, bits, spec)


@pytest.mark.parametrize("compute", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("bits", [4, 8])
def test_range_reciprocal_every_tie_and_neighbour(compute, bits):
    """scale_op='mul_range_recip' exhaustively over the codes, their ties and float32 neighbours, against the twin,
    for several ranges; and it differs from both div and mul_recip on some of them (ONNX Runtime's own rule)."""
    spec = refsim.preset("onnxruntime_dynamic_int8").replace(compute_dtype=compute)
    qmax = (1 << (bits - 1)) - 1
    differs = 0
    for amax in (np.float32(1.0), np.float32(3.7), np.float32(0.0123), np.float32(1000.1)):
        s = refsim.range_recip_params(amax, bits=bits, spec=refsim.preset("onnxruntime_dynamic_int8"))
        if compute != "float32":  # the stored scale in that dtype: fl(fl(amax) / qmax)
            s = to_compute(np.float64(to_compute(amax, compute)) / qmax, compute).astype(np.float32)
        k = np.arange(-qmax - 2, qmax + 3, dtype=np.float64)
        x = (np.concatenate([k, k + 0.5]) * np.float64(amax) / qmax).astype(np.float32)
        x = np.concatenate([x, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(-np.inf))])
        fast = refsim.quantize(x, s, bits=bits, amax=amax, spec=spec)
        assert np.array_equal(fast, twin(x, s, 0, bits, spec, amax=amax))
        for other in ("div", "mul_recip"):
            differs += int((fast != refsim.quantize(x, s, bits=bits, spec=spec.replace(scale_op=other))).sum())
    if compute == "float32":
        assert differs > 0


def test_range_reciprocal_zero_block_and_errors():
    spec = refsim.preset("onnxruntime_dynamic_int8")
    x = np.zeros((2, 4), np.float32)
    x[1] = [1.0, -2.0, 0.5, 0.25]
    amax = np.array([[0.0], [2.0]], np.float32)
    s = refsim.range_recip_params(amax, spec=refsim.preset("onnxruntime_dynamic_int8"))
    assert s[0, 0] == 0.0  # MLAS stores scale 0 for an all-zero block and codes 0
    q = refsim.quantize(x, s, bits=8, axis=1, block_size=4, amax=amax, spec=spec)
    assert q.tolist() == [[0, 0, 0, 0], [64, -127, 32, 16]]
    with pytest.raises(ValueError, match="needs amax="):
        refsim.quantize(x, 1.0, bits=8, spec=spec)
    with pytest.raises(ValueError, match="amax is only used by scale_op='mul_range_recip'"):
        refsim.quantize(x, 1.0, bits=8, amax=1.0, spec=refsim.preset("onnx"))
    with pytest.raises(ValueError, match="does not equal fl\\(amax / 127\\)"):
        refsim.quantize(x, 0.5, bits=8, amax=np.float32(2.0), spec=spec)


def test_ml_dtypes_cast_truncates_and_zeroes_what_it_cannot_hold():
    spec = refsim.preset("ml_dtypes")
    x = np.array([0.6, -1.5, 7.9, 8.0, -8.5, -9.0, np.nan, np.inf, -np.inf], np.float32)
    assert refsim.quantize(x, 1.0, bits=4, spec=spec).tolist() == [0, -1, 7, 0, -8, 0, 0, 0, 0]
    assert refsim.quantize(x, 1.0, bits=4, spec=spec.replace(signed=False)).tolist() == [0, 0, 7, 8, 0, 0, 0, 0, 0]


@given(st.lists(st.integers(0, 15), min_size=1, max_size=20), scales, st.floats(-8, 8, width=32),
       st.sampled_from(["ort", "tinygemm", "tinygemm_fused"]), st.sampled_from(["float32", "float16", "bfloat16"]))
def test_dequantize_float_zero_equals_scalar_twin(q, s, z, form, dtype):
    got = refsim.dequantize_float_zero(np.array(q), np.float32(s), np.float32(z), form=form,
                                       dtype=dtype if dtype == "bfloat16" else np.dtype(dtype))
    want = [dequantize_float_zero_scalar(v, float(s), float(z), form=form, fmt=dtype) for v in q]
    assert [Fraction(float(g)) for g in got] == want


def test_affine_minmax_params_equal_the_scalar_twin_exhaustively():
    """Every pair of small bfloat16 / float16 / float32 bounds on a grid (ties of the zero point included)."""
    grid = np.concatenate([np.linspace(-3, 3, 25), [0.0, 1e-30, -1e-30, 127.5, -0.1]]).astype(np.float32)
    lo, hi = np.meshgrid(grid, grid)
    lo, hi = np.minimum(lo, hi).ravel(), np.maximum(lo, hi).ravel()
    for fmt in ("float32", "float16", "bfloat16"):
        for qmin, qmax in ((-8, 7), (0, 15), (-128, 127), (0, 255), (-4, 3)):
            for sym in (True, False):
                s, z = refsim.affine_minmax_params(lo, hi, qmin=qmin, qmax=qmax, symmetric=sym,
                                                   spec=refsim.preset("torchao").replace(compute_dtype=fmt))
                for i in range(0, lo.size, 7):
                    ws, wz = affine_minmax_params_scalar(lo[i], hi[i], qmin=qmin, qmax=qmax, symmetric=sym,
                                                         spec=refsim.preset("torchao").replace(compute_dtype=fmt))
                    assert (Fraction(float(s[i])), int(z[i])) == (ws, wz)
