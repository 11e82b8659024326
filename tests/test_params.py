"""Quantization parameter rules against their scalar twins (each op rounded in its source's format)."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refsim
from refsim import scalar

f16_range = st.floats(-60000, 60000, width=16)


def _rptq_twin(lo, hi, bits):
    """The scalar twin's (s, z), or None where its zero point overflows fp16.

    Only the zero point can overflow (s is clamped to [1e-4, 1e4]): round_to_format gives
    +-inf for fl16(fl16(hi + lo) * fl16(-0.5 / s)) beyond 65504, and rounding inf to an
    integer raises OverflowError. Those are exactly the inputs rptq_params must refuse.
    """
    try:
        return scalar.rptq_params_scalar(lo, hi, bits, spec=refsim.preset("rptq"))
    except OverflowError:
        return None


@given(st.lists(st.tuples(f16_range, f16_range), min_size=1, max_size=20), st.integers(2, 8))
def test_rptq_params_equal_scalar(pairs, bits):
    lo = np.array([min(p) for p in pairs], np.float16)
    hi = np.array([max(p) for p in pairs], np.float16)
    want = [_rptq_twin(float(a), float(b), bits) for a, b in zip(lo, hi, strict=True)]
    ok = np.array([w is not None for w in want])
    if not ok.all():  # a row whose zero point overflows: the whole call is refused, with the reason
        with pytest.raises(ValueError, match="the RPTQ zero point overflows float16"):
            refsim.rptq_params(lo, hi, bits=bits, spec=refsim.preset("rptq"))
        lo, hi, want = lo[ok], hi[ok], [w for w in want if w is not None]
        if not want:
            return
    s, z = refsim.rptq_params(lo, hi, bits=bits, spec=refsim.preset("rptq"))  # every other row is computed exactly
    for i, (ws, wz) in enumerate(want):
        assert Fraction(float(s[i])) == ws and int(z[i]) == wz


def test_rptq_top_of_range_lands_on_2_to_the_k_minus_1_and_is_clamped():
    s, z = refsim.rptq_params(np.float16(-1.0), np.float16(1.0), bits=4, spec=refsim.preset("rptq"))
    assert float(s) == 0.125 and int(z) == 0
    q = refsim.quantize(np.array([-1.0, 1.0], np.float32), s, z, bits=4, spec=refsim.preset("rptq"))
    assert q.tolist() == [-8, 7]  # xmax -> 8 -> clamped to 7


def test_rptq_range_excluding_zero_puts_the_zero_point_outside_the_codes():
    s, z = refsim.rptq_params(np.float16(1.0), np.float16(3.0), bits=4, spec=refsim.preset("rptq"))
    assert int(z) == -16
    q = refsim.quantize(np.array([1.0, 2.0, 3.0], np.float32), s, z, bits=4, spec=refsim.preset("rptq"))
    assert q.tolist() == [-8, 0, 7]


def test_rptq_zero_point_overflow_is_refused():
    with pytest.raises(ValueError, match="zero point overflows"):
        refsim.rptq_params(np.float16(60000), np.float16(60000), bits=4, spec=refsim.preset("rptq"))


def _gptq_twin(lo, hi, bits, sym):
    """The scalar twin's (s, z), or the ValueError it raises (a range whose scale underflows to 0)."""
    try:
        return scalar.gptq_params_scalar(lo, hi, bits, sym)
    except ValueError as exc:
        return exc


TINY_F32 = [0.0, float(np.float32(2.0**-149)), -float(np.float32(2.0**-149)), float(np.float32(2.0**-140))]


@given(st.lists(st.tuples(st.one_of(st.floats(-1e6, 1e6, width=32), st.sampled_from(TINY_F32)),
                          st.one_of(st.floats(-1e6, 1e6, width=32), st.sampled_from(TINY_F32))),
                min_size=1, max_size=20),
       st.integers(2, 8), st.booleans())
def test_gptq_params_equal_scalar(pairs, bits, sym):
    """Row by row equal to the twin; where the twin refuses a row, the fast path refuses the call with the
    same reason, and still computes every other row exactly (a raise in only one of them fails)."""
    lo = np.array([min(p) for p in pairs], np.float32)
    hi = np.array([max(p) for p in pairs], np.float32)
    want = [_gptq_twin(float(a), float(b), bits, sym) for a, b in zip(lo, hi, strict=True)]
    ok = np.array([not isinstance(w, ValueError) for w in want])
    if not ok.all():
        reason = "the GPTQ scale underflows float32 to 0"
        assert all(reason in str(w) for w in want if isinstance(w, ValueError))
        with pytest.raises(ValueError, match=reason):
            refsim.gptq_params(lo, hi, bits=bits, sym=sym, spec=refsim.preset("gptq"))
        lo, hi, want = lo[ok], hi[ok], [w for w in want if not isinstance(w, ValueError)]
        if not want:
            return
    s, z = refsim.gptq_params(lo, hi, bits=bits, sym=sym, spec=refsim.preset("gptq"))
    for i, (ws, wz) in enumerate(want):
        assert Fraction(float(s[i])) == ws and int(z[i]) == wz


def test_gptq_underflowing_scale_is_refused_by_both():
    lo, hi = np.float32(0), np.float32(2.0**-149)  # s = 2^-149 / 15 rounds to 0 in float32
    with pytest.raises(ValueError, match="GPTQ scale underflows float32 to 0"):
        scalar.gptq_params_scalar(float(lo), float(hi), 4, False)
    with pytest.raises(ValueError, match="GPTQ scale underflows float32 to 0"):
        refsim.gptq_params(lo, hi, bits=4, spec=refsim.preset("gptq"))


@pytest.mark.parametrize("compute_dtype", ["float16", "float32", "bfloat16"])
@given(pairs=st.lists(st.tuples(st.floats(-3e4, 3e4, width=32), st.floats(-3e4, 3e4, width=32)), min_size=1,
                      max_size=12), bits=st.integers(2, 8))
def test_rptq_params_follow_the_spec_compute_dtype(compute_dtype, pairs, bits):
    """rptq_params reads spec.compute_dtype (no dtype= of its own): each op rounded in it, as the twin does."""
    spec = refsim.preset("rptq").replace(compute_dtype=compute_dtype)
    lo = np.array([min(p) for p in pairs], np.float32)
    hi = np.array([max(p) for p in pairs], np.float32)
    want = []
    for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
        try:
            want.append(scalar.rptq_params_scalar(a, b, bits, spec=spec))
        except OverflowError:  # the zero point overflows the compute dtype: the call is refused
            with pytest.raises(ValueError, match=f"zero point overflows {compute_dtype}"):
                refsim.rptq_params(lo, hi, bits=bits, spec=spec)
            return
    s, z = refsim.rptq_params(lo, hi, bits=bits, spec=spec)
    assert s.dtype == (np.float32 if compute_dtype == "bfloat16" else np.dtype(compute_dtype))
    for i, (ws, wz) in enumerate(want):
        assert Fraction(float(s[i])) == ws and int(z[i]) == wz


@pytest.mark.parametrize("rule,call", [
    ("absmax_params", lambda spec: refsim.absmax_params(np.ones(2, np.float32), bits=8, spec=spec)),
    ("gptq_params", lambda spec: refsim.gptq_params(np.float32(-1), np.float32(1), bits=4, spec=spec)),
    ("range_recip_params", lambda spec: refsim.range_recip_params(np.float32(1), spec=spec)),
])
def test_float32_rules_refuse_another_compute_dtype(rule, call):
    """Rules whose source computes in float32 take the spec's compute dtype and refuse any other, by name."""
    assert np.all(np.isfinite(call(refsim.preset("onnx"))))
    for cd in ("float16", "bfloat16"):
        with pytest.raises(ValueError, match=f"{rule} computes in float32.*compute_dtype='{cd}' is not allowed"):
            call(refsim.preset("onnx").replace(compute_dtype=cd))
    with pytest.raises(TypeError, match="spec must be a refsim.NumericsSpec"):
        call("onnx")


def test_gptq_quirks():
    s, z = refsim.gptq_params(np.float32(0), np.float32(0), bits=4, spec=refsim.preset("gptq"))
    # [-1, 1]: s = fl32(2/15) lies just above 2/15, so fl32(1 / s) = 7.4999995 rounds to 7, not 8
    assert (float(s), int(z)) == (np.float32(2 / 15), 7)
    s, z = refsim.gptq_params(np.float32(1.0), np.float32(3.0), bits=4, sym=True, spec=refsim.preset("gptq"))
    assert float(s) == np.float32(3.0 / 15) and int(z) == 8  # all-positive row keeps xmin = 0


@given(st.lists(st.floats(-1e4, 1e4, width=32), min_size=1, max_size=30), st.integers(2, 16))
def test_absmax_equals_scalar(xs, bits):
    s = refsim.absmax_params(np.array(xs, np.float32), bits=bits, spec=refsim.preset("qrazor"))
    assert Fraction(float(s)) == scalar.absmax_scale_scalar(xs, bits)


def test_absmax_per_channel():
    x = np.array([[1.0, -4.0], [2.0, 0.0]], np.float32)
    assert refsim.absmax_params(x, bits=8, axis=1,
                                spec=refsim.preset("qrazor")).tolist() == [np.float32(2 / 127), np.float32(4 / 127)]
    assert refsim.absmax_params(np.zeros(3, np.float32), bits=8, spec=refsim.preset("qrazor")) == 1.0
