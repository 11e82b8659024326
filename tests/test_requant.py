"""Requantization fast paths against the scalar specification."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import specs

import refsim
from refsim import scalar
from refsim.checks import code_range

i32 = st.integers(-(2**31), 2**31 - 1)
CORNERS = [-(2**31), -(2**31) + 1, -(2**30), -1, 0, 1, 2**30, 2**31 - 1]


@given(st.lists(st.tuples(i32, i32), min_size=1, max_size=50))
def test_srdhm_equals_scalar(pairs):
    pairs += [(a, b) for a in CORNERS for b in CORNERS]
    a, b = np.array(pairs).T
    got = refsim.saturating_rounding_doubling_high_mul(a, b)
    assert got.tolist() == [scalar.srdhm_scalar(int(x), int(y)) for x, y in pairs]


@given(st.lists(i32, min_size=1, max_size=50), st.integers(0, 31))
def test_rounding_divide_by_pot_equals_scalar(xs, e):
    xs += CORNERS
    got = refsim.rounding_divide_by_pot(np.array(xs), e)
    assert got.tolist() == [scalar.rounding_divide_by_pot_scalar(x, e) for x in xs]


def test_rounding_divide_by_pot_rounds_ties_away_from_zero():
    assert refsim.rounding_divide_by_pot(np.array([5, -5, 6, -6, 7, -7]), 1).tolist() == [3, -3, 3, -3, 4, -4]


@given(st.floats(min_value=0, max_value=2.0**40, allow_nan=False), st.booleans())
def test_quantize_multiplier_equals_scalar(m, single):
    assert refsim.quantize_multiplier(m, single_rounding=single) == scalar.quantize_multiplier_scalar(m, single)


def test_quantize_multiplier_corner_cases():
    assert refsim.quantize_multiplier(1.0 - 2.0**-33) == (1 << 30, 1)  # mantissa rounds to 2^31
    assert refsim.quantize_multiplier(2.0**-40) == (0, 0)  # shift < -31
    assert refsim.quantize_multiplier(2.0**40, single_rounding=True) == (2**31 - 1, 30)
    assert refsim.quantize_multiplier(0.0) == (0, 0)
    with pytest.raises(ValueError, match="real_multiplier"):
        refsim.quantize_multiplier(-1.0)


@given(st.lists(st.integers(-(2**20), 2**20), min_size=1, max_size=40),
       st.floats(min_value=2.0**-20, max_value=0.99, allow_nan=False), st.booleans())
def test_multiply_by_quantized_multiplier_equals_scalar(xs, m, single):
    qm, shift = refsim.quantize_multiplier(m, single_rounding=single)
    got = refsim.multiply_by_quantized_multiplier(np.array(xs), qm, shift, single_rounding=single)
    assert got.tolist() == [scalar.multiply_by_quantized_multiplier_scalar(x, qm, shift, single) for x in xs]


def test_double_and_single_rounding_disagree_sometimes():
    rng = np.random.default_rng(0)
    x = rng.integers(-(2**31), 2**31, size=20000)
    m = rng.uniform(2.0**-12, 0.999, size=20000)
    dr = np.array([refsim.multiply_by_quantized_multiplier(xi, *refsim.quantize_multiplier(mi)) for xi, mi in
                   zip(x[:2000], m[:2000], strict=True)])
    sr = np.array([refsim.multiply_by_quantized_multiplier(xi, *refsim.quantize_multiplier(mi, single_rounding=True),
                                                           single_rounding=True)
                   for xi, mi in zip(x[:2000], m[:2000], strict=True)])
    frac = float(np.mean(dr != sr))
    assert 0.001 < frac < 0.2  # they are different algorithms; both are exact to within one unit
    assert np.all(np.abs(dr - sr) <= 1)


@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(0, 10**6), st.booleans())
def test_float_epilogue_equals_scalar(c, m, n, seed, with_bias):
    rng = np.random.default_rng(seed)
    isums = rng.integers(-(2**31), 2**31, size=(c, m, n))
    sa = rng.uniform(1e-4, 1.0, size=c).astype(np.float32)
    sw = rng.uniform(1e-4, 1.0, size=n).astype(np.float32)
    bias = rng.normal(size=n).astype(np.float32) if with_bias else None
    got = refsim.float_epilogue(isums, sa, sw, bias=bias)
    for i in range(m):
        for j in range(n):
            want = scalar.float_epilogue_scalar(isums[:, i, j].tolist(), sa.tolist(), float(sw[j]),
                                                None if bias is None else float(bias[j]))
            assert Fraction(float(got[i, j])) == want


@pytest.mark.parametrize("requant", ["float", "double_rounding", "single_rounding"])
def test_requantize_paths(requant):
    spec = refsim.preset("tflite").replace(requant=requant)
    acc = np.array([-100000, -1, 0, 1, 99999, 2**31 - 1, -(2**31)])
    m = 0.00123
    got = refsim.requantize(acc, m, zero_point=3, bits=8, spec=spec)
    if requant == "float":
        y = [float(np.float32(np.float32(a) * np.float32(m))) for a in acc]
        want = [min(max(scalar.round_rational(Fraction(v), "ties_away") + 3, -128), 127) for v in y]
    else:
        single = requant == "single_rounding"
        qm, sh = scalar.quantize_multiplier_scalar(m, single)
        want = [min(max(scalar.multiply_by_quantized_multiplier_scalar(int(a), qm, sh, single) + 3, -128), 127)
                for a in acc]
    assert got.tolist() == want


def test_requantize_refuses_wide_accumulators():
    with pytest.raises(ValueError, match="acc.*outside the allowed range"):
        refsim.requantize(np.array([2**31]), 0.5, spec=refsim.preset("tflite"))


@pytest.mark.parametrize("name", sorted(refsim.PRESETS))
@pytest.mark.parametrize("saturation", ["saturate", "wrap", "zero"])
def test_requantize_and_quantize_agree_on_the_range_ends(name, saturation):
    """Both take the code range from the spec (signed, narrow) and leave it the same way.

    With multiplier 1/2 and scale 2 both see the same integers v = acc / 2, exactly, so the
    rounding rule plays no part: only the range and the saturation rule do.
    """
    if saturation == "wrap" and refsim.preset(name).narrow:
        # wrapping modulo 2^bits could give the code the narrow range excludes: the spec refuses it
        with pytest.raises(ValueError, match="narrow=True with saturation='wrap' is not allowed"):
            refsim.preset(name).replace(saturation=saturation)
        return
    spec = refsim.preset(name).replace(saturation=saturation)
    if spec.scale_op.value == "mul_range_recip":  # takes its scale from amax; x / 2 is exact either way
        spec = spec.replace(scale_op="div")
    # float16 holds every integer up to 2^11 and bfloat16 up to 2^8, and v = qmax + 2 must be one of them
    top = {"float16": 11, "bfloat16": 8}.get(spec.compute_dtype.value, 16)
    for bits in range(2, (top if saturation == "saturate" else min(top, 8)) + 1):
        for signed in (True, False):
            qmin, qmax = code_range(bits, signed, spec.narrow)
            if max(qmax + 2, 2 - qmin) > 2**top:
                continue  # qmax + 2 (or qmin - 2) is not exact in the compute dtype
            v = [qmin - 2, qmin - 1, qmin, qmin + 1, qmax - 1, qmax, qmax + 1, qmax + 2]
            if saturation == "saturate":
                v += [-(2**30), 2**30 - 1]  # far outside: clamped to the ends
            acc = np.array([2 * x for x in v])
            got = refsim.requantize(acc, 0.5, bits=bits, spec=spec.replace(signed=signed))
            want = refsim.quantize(acc.astype(np.float32), 2.0, bits=bits, spec=spec.replace(signed=signed))
            assert got.tolist() == want.tolist(), (bits, signed)
            inside = got[2:6].tolist()
            assert inside == v[2:6]  # the ends themselves are codes
            assert qmin <= got.min() and got.max() <= qmax or saturation == "zero"  # wrapped or clamped: in range
            if saturation == "zero":  # out of range -> 0, which need not be a code of an unsigned narrow range
                assert got.tolist() == [x if qmin <= x <= qmax else 0 for x in v]
            if saturation == "saturate":
                assert got.min() == qmin and got.max() == qmax


def test_requantize_honours_the_narrow_range_of_qrazor():
    """QRazor's narrow range: the most negative accumulator requantizes to -127, as quantize gives."""
    spec = refsim.preset("qrazor")
    assert refsim.requantize(np.array([-(2**31), 2**31 - 1]), 1.0, bits=8, spec=spec).tolist() == [-127, 127]
    full = spec.replace(narrow=False)
    assert refsim.requantize(np.array([-(2**31), 2**31 - 1]), 1.0, bits=8, spec=full).tolist() == [-128, 127]


def _requantize_twin(acc, m, zero_point, bits, spec):
    """One output code of refsim.requantize, from its docstring's formula, in Python integers."""
    if spec.requant.value == "float":
        y = float(np.float32(np.float32(acc) * np.float32(m)))
        r = scalar.round_rational(Fraction(y), spec.rounding.value) + zero_point
    else:
        single = spec.requant.value == "single_rounding"
        qm, sh = scalar.quantize_multiplier_scalar(m, single)
        r = scalar.multiply_by_quantized_multiplier_scalar(acc, qm, sh, single) + zero_point
    qmin, qmax = scalar.code_range(bits, spec.signed, spec.narrow)
    if spec.saturation.value == "saturate":
        return min(max(r, qmin), qmax)
    if spec.saturation.value == "zero":  # an out-of-range code becomes 0, as quantize's 'zero' does
        return r if qmin <= r <= qmax else 0
    return (r - qmin) % 2**bits + qmin


@given(spec=specs, bits=st.integers(2, 16), data=st.data())
def test_requantize_equals_scalar_twin_under_every_spec(spec, bits, data):
    """Every requantization knob of the spec at once: requant form, rounding (float form), signed,
    narrow and saturation; multipliers below 1, as an accumulator's rescale is."""
    acc = data.draw(st.lists(i32, min_size=1, max_size=30)) + CORNERS
    m = data.draw(st.floats(min_value=2.0**-30, max_value=0.999, allow_nan=False))
    zp = data.draw(st.integers(-(1 << bits), 1 << bits))
    got = refsim.requantize(np.array(acc), m, zero_point=zp, bits=bits, spec=spec)
    assert got.tolist() == [_requantize_twin(a, m, zp, bits, spec) for a in acc]
