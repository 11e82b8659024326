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


@given(st.lists(st.tuples(st.floats(-1e6, 1e6, width=32), st.floats(-1e6, 1e6, width=32)), min_size=1, max_size=20),
       st.integers(2, 8), st.booleans())
def test_gptq_params_equal_scalar(pairs, bits, sym):
    lo = np.array([min(p) for p in pairs], np.float32)
    hi = np.array([max(p) for p in pairs], np.float32)
    try:
        s, z = refsim.gptq_params(lo, hi, bits=bits, sym=sym, spec=refsim.preset("gptq"))
    except ValueError:
        with pytest.raises(ValueError):
            for i in range(len(pairs)):
                scalar.gptq_params_scalar(float(lo[i]), float(hi[i]), bits, sym)
        return
    for i in range(len(pairs)):
        ws, wz = scalar.gptq_params_scalar(float(lo[i]), float(hi[i]), bits, sym)
        assert Fraction(float(s[i])) == ws and int(z[i]) == wz


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
