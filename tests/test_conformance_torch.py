"""Conformance of the ``torch`` preset with ``torch.quantize_per_tensor`` / ``quantize_per_channel``.

What torch really computes on this (x86-64, USE_FBGEMM) build, from the source and confirmed
here case by case (docs/conformance.md has the full story):

* ``quantize_per_tensor`` calls ``fbgemm::Quantize<T>`` with its default ``LEGACY = true``.
  For qint8 / quint8 the AVX2 kernel (vector body and masked remainder alike) computes
  ``cvtps_epi32(min(fma(x, inv_scale, float(zp)), 2^31 - 128))``: the zero point is added
  *before* rounding, inside one fused multiply-add (a single rounding to float32).
  For qint32 the scalar ``Quantize`` runs: ``nearbyint(float(zp) + fl32(x * inv_scale))``,
  zero point before rounding, two separately rounded float32 operations.
* ``quantize_per_channel`` calls ``at::native::quantize_val`` per element, which under
  USE_FBGEMM is the same scalar ``fbgemm::Quantize<T>`` (LEGACY): before rounding, unfused.
* In every path ``inv_scale = 1.0f / float(scale)`` (rounded once) and x is multiplied by it.

refsim's ``torch`` preset is ``mul_recip`` with ``zero_point_stage="before_round_fused"``
(one float32 rounding of x * fl(1/s) + z, as the FMA computes it): torch.quantize_per_tensor
for qint8 / quint8. The ``torch_per_channel`` preset is the unfused ``before_round`` form:
quantize_per_channel and per-tensor qint32. (An earlier torch preset added the zero point after
rounding, ATen's non-FBGEMM ``quantize_val``; these tests found that it differs on every tie
with an odd zero point, docs/conformance.md.) All three forms coincide when the zero point is 0.

Codes are compared as integers (``np.array_equal`` on ``int_repr()``).
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

torch = pytest.importorskip("torch")

import refsim  # noqa: E402

TORCH = refsim.preset("torch")
TORCH_BEFORE = refsim.preset("torch_per_channel")

# torch dtype -> (refsim bits, signed, qmin, qmax). qint32 is compared through 16-bit codes with
# inputs kept inside the int16 range (refsim codes are at most 16 bits), which still exercises
# torch's qint32 arithmetic path.
DTYPES = {
    torch.qint8: (8, True, -128, 127),
    torch.quint8: (8, False, 0, 255),
    torch.qint32: (16, True, -(2**15), 2**15 - 1),
}
INT32_FLOAT_MAX = np.float32(2**31 - 128)  # FBGEMM clips here before _mm256_cvtps_epi32

pytestmark = pytest.mark.filterwarnings("ignore:.*quantize_per_tensor.*:UserWarning")


def _quiet(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13 deprecates the quantized dtypes with a UserWarning
        return fn(*args)


def torch_per_tensor(x, s, z, dtype):
    q = _quiet(torch.quantize_per_tensor, torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
               float(np.float32(s)), int(z), dtype)
    return q.int_repr().numpy().astype(np.int64)


def torch_per_channel(x, s, z, axis, dtype):
    q = _quiet(torch.quantize_per_channel, torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
               torch.from_numpy(np.asarray(s, dtype=np.float32).astype(np.float64)),
               torch.from_numpy(np.asarray(z, dtype=np.int64)), axis, dtype)
    return q.int_repr().numpy().astype(np.int64)


def refsim_codes(x, s, z, dtype, spec=TORCH, **kw):
    bits, signed, _, _ = DTYPES[dtype]
    return refsim.quantize(np.asarray(x, dtype=np.float32), np.asarray(s, dtype=np.float32),
                           np.asarray(z, dtype=np.int64), bits=bits,
                               spec=spec.replace(signed=signed), **kw).astype(np.int64)


# --- an independent transcription of FBGEMM's LEGACY Quantize -------------------------------------

def _f32_nearest(v: Fraction) -> np.float32:
    """v correctly rounded to float32 (nearest, ties to even), by comparing the float32 neighbours."""
    f = np.float32(float(v))
    best = None
    for c in (np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))):
        key = (abs(Fraction(float(c)) - v), int(np.asarray(c, dtype=np.float32).view(np.int32)) & 1)
        if best is None or key < best[0]:
            best = (key, c)
    return np.float32(best[1])


def fbgemm_quantize_legacy(x, s, z, qmin, qmax, *, fused):
    """fbgemm::Quantize<T, LEGACY=true>: q = clamp(nearbyint(zp + x * inv_scale)), inv_scale = 1.0f / scale.

    fused=True:  QuantizeAvx2 (int8/uint8): t = fma(x, inv_scale, float(zp)) rounded once to float32,
                 t = min(t, 2^31 - 128), cvtps_epi32 (round to nearest even), clamp.
    fused=False: scalar Quantize: t = fl32(x * inv_scale); nearbyint(fl32(float(zp) + t)); clamp in double.
    """
    inv = np.float32(1.0) / np.float32(s)
    out = []
    for xi in np.asarray(x, dtype=np.float32).tolist():
        if fused:
            t = _f32_nearest(Fraction(xi) * Fraction(float(inv)) + z)
            t = min(t, INT32_FLOAT_MAX)
        else:
            t = _f32_nearest(Fraction(float(np.float32(xi) * inv)) + Fraction(float(np.float32(z))))
        r = int(np.rint(np.float64(t)))
        out.append(min(max(r, qmin), qmax))
    return np.asarray(out, dtype=np.int64)


# What this build does, probed once so that a build without FBGEMM (or without AVX2/FMA) runs the
# same tests against its own semantics instead of failing on ours.
# x / s = 0.5 with z = 3: after rounding 0 + 3 = 3, before rounding rint(3.5) = 4.
FBGEMM_LEGACY = torch_per_tensor(np.array([0.25], dtype=np.float32), 0.5, 3, torch.qint8).tolist() == [4]
FMA_CASE = (np.float32(-1.2917585), np.float32(0.5167034), 3)  # x * fl(1/s) is just above -2.5; z = 3
FUSED_INT8 = FBGEMM_LEGACY and torch_per_tensor(np.array([FMA_CASE[0]]), FMA_CASE[1], 3, torch.qint8).tolist() == [1]
needs_legacy = pytest.mark.skipif(not FBGEMM_LEGACY, reason="this torch build adds the zero point after rounding")
needs_fused = pytest.mark.skipif(not FUSED_INT8, reason="this torch build has no fused (AVX2 FMA) int8 quantizer")

# --- inputs ---------------------------------------------------------------------------------------

scales = st.one_of(st.floats(min_value=2.0**-12, max_value=4.0, width=32),
                   st.sampled_from([1.0, 0.5, 0.1, 0.00214854861, 0.3, 2.0**-10]))
elements = st.one_of(st.floats(min_value=-300.0, max_value=300.0, width=32, allow_subnormal=True),
                     st.sampled_from([0.0, -0.0, 1e-45, -1e-45, 0.5, -0.5, 1.5, 2.5, -2.5]))


def _ties(s, k_range=range(-20, 21)):
    """x = (k + 1/2) * s in float32 and both float32 neighbours: where the conventions differ."""
    s = np.float32(s)
    t = ((np.asarray(k_range, dtype=np.float32) + np.float32(0.5)) * s).astype(np.float32)
    return np.concatenate([t, np.nextafter(t, np.float32(-np.inf)), np.nextafter(t, np.float32(np.inf)),
                           np.array([0.0, -0.0, 1e-45], dtype=np.float32)])


def _bounded(x, s, dtype):
    """Keep |x / s| well inside the code range of 16-bit stand-ins for qint32."""
    if dtype is not torch.qint32:
        return x
    lim = np.float32(20000.0) * np.float32(s)
    return np.clip(x, -lim, lim).astype(np.float32)


# --- named example ---------------------------------------------------------------------------------

def test_fbgemm_example_onnx_and_torch_presets_differ_and_each_matches_its_source():
    """FBGEMM's own example: s = 0.00214854861f, x = 0.273939937f. x / s rounds to 127.49999 (ONNX
    divides) but x * fl(1/s) to 127.5 (torch multiplies by the reciprocal), which rounds to even 128.
    Shown with uint8 codes (int8 would clamp both to 127)."""
    s, x = np.float32(0.00214854861), np.array([0.273939937], dtype=np.float32)
    assert x[0] / s == np.float32(127.49999) and x[0] * (np.float32(1) / s) == np.float32(127.5)
    assert torch_per_tensor(x, s, 0, torch.quint8).tolist() == [128]
    assert refsim_codes(x, s, 0, torch.quint8).tolist() == [128]
    onnx_codes = refsim.quantize(x, s, 0, bits=8, spec=refsim.preset("onnx").replace(signed=False))
    assert onnx_codes.tolist() == [127]
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    graph = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
                                            helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
                                            helper.make_tensor_value_info("z", TensorProto.UINT8, [])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.checker.check_model(model)
    ref = ReferenceEvaluator(model).run(None, {"x": x, "s": s, "z": np.uint8(0)})[0]
    assert np.array_equal(onnx_codes, ref.astype(np.int32))


# --- per tensor ------------------------------------------------------------------------------------

@settings(max_examples=60)
@given(st.sampled_from(list(DTYPES)), hnp.arrays(np.float32, st.integers(1, 70), elements=elements), scales)
def test_per_tensor_zero_point_zero_matches_torch(dtype, x, s):
    """With zero point 0 the after-round, before-round and fused forms coincide: the torch preset
    must equal torch exactly (lengths up to 70 cover FBGEMM's 8-wide body and its masked remainder)."""
    x = _bounded(np.concatenate([x, _ties(s)]), s, dtype)
    assert np.array_equal(refsim_codes(x, s, 0, dtype), torch_per_tensor(x, s, 0, dtype))


@needs_legacy
@settings(max_examples=60)
@given(st.sampled_from(list(DTYPES)), hnp.arrays(np.float32, st.integers(1, 40), elements=elements), scales,
       st.data())
def test_per_tensor_matches_the_fbgemm_legacy_transcription(dtype, x, s, data):
    """Root cause, shown: torch.quantize_per_tensor equals FBGEMM's LEGACY formula, fused for int8/uint8
    and unfused for qint32, for any zero point."""
    bits, signed, qmin, qmax = DTYPES[dtype]
    zlo, zhi = (-128, 127) if dtype is torch.qint8 else (0, 255) if dtype is torch.quint8 else (-1000, 1000)
    z = data.draw(st.integers(zlo, zhi), label="zero_point")
    x = _bounded(np.concatenate([x, _ties(s, range(-6, 7))]), s, dtype)
    expect = fbgemm_quantize_legacy(x, s, z, qmin, qmax, fused=FUSED_INT8 and dtype is not torch.qint32)
    assert np.array_equal(torch_per_tensor(x, s, z, dtype), expect)


@needs_legacy
@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
def test_torch_preset_with_odd_zero_point_matches_torch(dtype):
    x = (np.arange(-6, 6, dtype=np.float32) + np.float32(0.5)) * np.float32(0.5)  # x / s = k + 1/2 exactly
    z = 3
    spec = TORCH_BEFORE if dtype is torch.qint32 else TORCH
    assert np.array_equal(refsim_codes(x, 0.5, z, dtype, spec=spec), torch_per_tensor(x, 0.5, z, dtype))
    after = TORCH.replace(zero_point_stage="after_round")  # what the torch preset used to be: wrong here
    assert not np.array_equal(refsim_codes(x, 0.5, z, dtype, spec=after), torch_per_tensor(x, 0.5, z, dtype))


@needs_legacy
@settings(max_examples=40)
@given(hnp.arrays(np.float32, st.integers(1, 40), elements=elements), scales, st.integers(-1000, 1000))
def test_before_round_spec_matches_torch_qint32(x, s, z):
    x = _bounded(np.concatenate([x, _ties(s)]), s, torch.qint32)
    got = refsim_codes(x, s, z, torch.qint32, spec=TORCH_BEFORE)
    assert np.array_equal(got, torch_per_tensor(x, s, z, torch.qint32))


@needs_fused
def test_fused_multiply_add_case_is_what_torch_int8_computes():
    """x * inv is just above -2.5, so fl32(x * inv) = -2.5 exactly and fl32(-2.5 + 3) = 0.5 rounds to 0,
    whereas the fused fma(x, inv, 3) = 0.5000000x rounds to 1. torch's int8 path is fused, its qint32
    path is not."""
    x, s, z = FMA_CASE
    inv = np.float32(1) / s
    exact = Fraction(float(x)) * Fraction(float(inv))
    assert exact > Fraction(-5, 2) and np.float32(x * inv) == np.float32(-2.5)
    xs = np.full(9, x, dtype=np.float32)  # 8 in the vector body, 1 in the masked remainder
    assert torch_per_tensor(xs, s, z, torch.qint8).tolist() == [1] * 9
    assert fbgemm_quantize_legacy(xs, s, z, -128, 127, fused=True).tolist() == [1] * 9
    assert torch_per_tensor(xs, s, z, torch.qint32).tolist() == [0] * 9
    assert refsim_codes(xs, s, z, torch.qint32, spec=TORCH_BEFORE).tolist() == [0] * 9
    after = TORCH.replace(zero_point_stage="after_round")
    assert refsim_codes(xs, s, z, torch.qint8, spec=after).tolist() == [1] * 9  # rint(-2.5) + 3 = 1, by luck


@needs_fused
def test_torch_preset_matches_torch_int8_fma_case_and_unfused_does_not():
    x, s, z = FMA_CASE
    xs = np.full(9, x, dtype=np.float32)
    assert np.array_equal(refsim_codes(xs, s, z, torch.qint8), torch_per_tensor(xs, s, z, torch.qint8))
    assert not np.array_equal(refsim_codes(xs, s, z, torch.qint8, spec=TORCH_BEFORE),
                              torch_per_tensor(xs, s, z, torch.qint8))


# --- per channel -----------------------------------------------------------------------------------

@needs_legacy
@settings(max_examples=40)
@given(st.sampled_from(list(DTYPES)), st.integers(1, 4), st.integers(1, 12), st.sampled_from([0, 1]), st.data())
def test_before_round_spec_matches_torch_per_channel(dtype, d0, d1, axis, data):
    shape = (d0, d1)
    x = data.draw(hnp.arrays(np.float32, shape, elements=elements), label="x")
    n = shape[axis]
    s = np.asarray(data.draw(st.lists(scales, min_size=n, max_size=n), label="scales"), dtype=np.float32)
    _, _, qmin, qmax = DTYPES[dtype]
    zlo, zhi = (qmin, qmax) if dtype is not torch.qint32 else (-1000, 1000)
    z = np.asarray(data.draw(st.lists(st.integers(zlo, zhi), min_size=n, max_size=n), label="zps"))
    if dtype is torch.qint32:
        lim = (np.float32(20000.0) * s).astype(np.float32)
        x = np.clip(x, -lim.reshape((-1, 1) if axis == 0 else (1, -1)), lim.reshape((-1, 1) if axis == 0 else (1, -1)))
        x = x.astype(np.float32)
    got = refsim_codes(x, s, z, dtype, spec=TORCH_BEFORE, axis=axis)
    assert np.array_equal(got, torch_per_channel(x, s, z, axis, dtype))


@settings(max_examples=30)
@given(st.sampled_from([torch.qint8, torch.quint8]), st.integers(1, 4), st.integers(1, 12), st.data())
def test_torch_preset_matches_torch_per_channel_with_zero_zero_points(dtype, d0, d1, data):
    x = data.draw(hnp.arrays(np.float32, (d0, d1), elements=elements), label="x")
    s = np.asarray(data.draw(st.lists(scales, min_size=d0, max_size=d0), label="scales"), dtype=np.float32)
    z = np.zeros(d0, dtype=np.int64)
    assert np.array_equal(refsim_codes(x, s, z, dtype, axis=0), torch_per_channel(x, s, z, 0, dtype))


@needs_legacy
def test_torch_per_channel_preset_matches_torch_per_channel_with_odd_zero_points():
    s = np.array([0.5, 0.25], dtype=np.float32)
    x = ((np.arange(-8, 8, dtype=np.float32) + np.float32(0.5))[None, :] * s[:, None]).astype(np.float32)
    z = np.array([3, -5])
    got = refsim_codes(x, s, z, torch.qint8, spec=TORCH_BEFORE, axis=0)
    assert np.array_equal(got, torch_per_channel(x, s, z, 0, torch.qint8))


def test_saturation_beyond_the_code_range():
    # Far outside the range (and beyond int32 for float32 inputs): torch clamps, refsim saturates.
    x = np.array([3e9, -3e9, 1e38, -1e38, 2147483520.0, 300.0, -300.0], dtype=np.float32)
    for dtype in (torch.qint8, torch.quint8):
        _, _, qmin, qmax = DTYPES[dtype]
        for z in (qmin, qmax):
            assert np.array_equal(refsim_codes(x, 1.0, z, dtype), torch_per_tensor(x, 1.0, z, dtype)), (dtype, z)


@needs_fused
@pytest.mark.parametrize("dtype", [torch.qint8, torch.quint8], ids=str)
def test_fused_stage_matches_torch_per_tensor_int8_at_scale(dtype):
    """The ``before_round_fused`` stage of the torch preset: on ties, cancelled ties, their float32
    neighbours and Gaussian values, for 40 random (scale, zero point) pairs, it equals torch exactly."""
    _, _, qmin, qmax = DTYPES[dtype]
    rng = np.random.default_rng(2026)
    for _ in range(40):
        s = np.float32(np.exp(rng.uniform(-12.0, 2.0)))
        z = int(rng.integers(qmin, qmax, endpoint=True))
        k = np.arange(-200, 200, dtype=np.float64) + 0.5
        x = np.concatenate([rng.standard_normal(1000) * 100 * s, k * s, (k - z) * s]).astype(np.float32)
        x = np.concatenate([x, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(-np.inf))])
        assert np.array_equal(refsim_codes(x, s, z, dtype), torch_per_tensor(x, s, z, dtype)), (s, z)
    x, s, z = FMA_CASE
    # fl32(fma) = 0.50000012 rounds to 1 (in range for both dtypes), as torch computes it
    assert refsim_codes(np.array([x]), s, z, dtype).tolist() == [1] == torch_per_tensor(
        np.array([x]), s, z, dtype).tolist()


# --- dequantize --------------------------------------------------------------------------------------

@settings(max_examples=30)
@given(st.sampled_from([torch.qint8, torch.quint8]), hnp.arrays(np.float32, st.integers(1, 40), elements=elements),
       st.integers(1, 5), st.data())
def test_dequantize_matches_torch(dtype, x, rows, data):
    """Tensor.dequantize(): (q - z) * s in float32 (q - z exact), so one correctly rounded product:
    bit equality with refsim.dequantize, per tensor and per channel."""
    _, _, qmin, qmax = DTYPES[dtype]
    s = np.float32(data.draw(scales, label="scale"))
    z = data.draw(st.integers(qmin, qmax), label="zero_point")
    q = _quiet(torch.quantize_per_tensor, torch.from_numpy(x), float(s), z, dtype)
    got = refsim.dequantize(q.int_repr().numpy().astype(np.int64), s, z)
    assert np.array_equal(got.view(np.int32), q.dequantize().numpy().view(np.int32))
    xs = np.resize(x, (rows, x.size)).astype(np.float32)
    sc = np.asarray(data.draw(st.lists(scales, min_size=rows, max_size=rows), label="scales"), dtype=np.float32)
    zc = np.asarray(data.draw(st.lists(st.integers(qmin, qmax), min_size=rows, max_size=rows), label="zps"))
    qc = _quiet(torch.quantize_per_channel, torch.from_numpy(xs), torch.from_numpy(sc.astype(np.float64)),
                torch.from_numpy(zc), 0, dtype)
    got_c = refsim.dequantize(qc.int_repr().numpy().astype(np.int64), sc, zc, axis=0)
    assert np.array_equal(got_c.view(np.int32), qc.dequantize().numpy().view(np.int32))
