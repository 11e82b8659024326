"""refsim.quantize / dequantize against the scalar specification, exhaustively and by hypothesis."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import finite_f32, scales, specs

import refsim
from refsim.scalar import dequantize_scalar, quantize_scalar

PRESETS = sorted(refsim.PRESETS)


def twin(x, s, z, bits, spec, signed=None, narrow=None):
    return np.array([quantize_scalar(float(v), float(s), int(z), bits=bits, signed=signed, narrow=narrow, spec=spec)
                     for v in np.asarray(x).reshape(-1)], dtype=np.int64).reshape(np.shape(x))


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
    try:
        fast = refsim.quantize(x, s, z, bits=bits, spec=spec)
    except ValueError:
        with pytest.raises(ValueError):
            twin(x, s, z, bits, spec)
        return
    assert np.array_equal(fast, twin(x, s, z, bits, spec))


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("bits", [3, 4, 8])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("s", [0.25, 0.1, 0.0123])
def test_every_code_its_ties_and_their_neighbours(name, bits, signed, s):
    """Exhaustive over the int3/int4/int8 code range: each code, each tie between codes, and the
    float32 neighbours of both, plus a margin beyond the range (saturation)."""
    spec = refsim.preset(name)
    lo = -(1 << bits) if signed else -(1 << (bits - 1))
    k = np.arange(lo - 2, (1 << bits) + 2, dtype=np.float64)
    centers = np.concatenate([k, k + 0.5]) * s
    x = centers.astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(-np.inf))])
    for z in (0, 1, -1 if signed else 3):
        fast = refsim.quantize(x, s, z, bits=bits, signed=signed, spec=spec)
        assert np.array_equal(fast, twin(x, s, z, bits, spec, signed=signed))


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
    assert refsim.quantize(x, 1.0, bits=16, spec=spec, signed=True)[0] == 2048
    assert refsim.quantize(x, 1.0, bits=16, spec=spec.replace(compute_dtype="float32"))[0] == 2049


@given(spec=specs, bits=st.integers(2, 8), data=st.data())
def test_per_axis_block_and_cluster_equal_per_element_quantization(spec, bits, data):
    rows, cols = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 13))
    x = np.array(data.draw(st.lists(st.floats(-100, 100, width=32), min_size=rows * cols, max_size=rows * cols)),
                 dtype=np.float32).reshape(rows, cols)
    if spec.saturation.value == "wrap":
        spec = spec.replace(saturation="saturate")
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
