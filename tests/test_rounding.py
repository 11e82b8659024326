"""Rounding modes on exact ties and on the floating-point neighbours of every tie."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refsim.rounding import round_to_bfloat16, round_to_integral
from refsim.scalar import round_rational, round_to_format
from refsim.spec import Rounding

MODES = [m.value for m in Rounding]


def ties_and_neighbours(dtype, limit):
    k = np.arange(-limit, limit, dtype=np.float64)
    ties = (k + 0.5).astype(dtype)
    inf = dtype(np.inf)
    vals = [ties, np.nextafter(ties, inf), np.nextafter(ties, -inf), k.astype(dtype),
            np.nextafter(k.astype(dtype), inf), np.nextafter(k.astype(dtype), -inf)]
    return np.concatenate(vals)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype,limit", [(np.float16, 1024), (np.float32, 4096), (np.float64, 4096)])
def test_every_tie_and_its_neighbours(mode, dtype, limit):
    v = ties_and_neighbours(dtype, limit)
    fast = round_to_integral(v, mode)
    fmt = np.dtype(dtype).name
    slow = np.array([round_rational(Fraction(float(x)), mode, fmt) for x in v], dtype=np.float64)
    assert np.array_equal(fast, slow)


def test_the_classic_trap_of_floor_plus_half():
    x = np.float32(0.49999997)  # the largest float32 below 0.5: fl(x + 0.5) == 1.0
    assert round_to_integral(x, "half_up") == 0.0
    assert round_to_integral(x, "ties_away") == 0.0
    assert round_to_integral(-x, "ties_away") == 0.0


@pytest.mark.parametrize("mode,expect", [
    ("ties_even", [-2, -2, -0, 0, 2, 2]), ("ties_away", [-3, -2, -1, 1, 2, 3]),
    ("half_up", [-2, -1, 0, 1, 2, 3]), ("floor", [-3, -2, -1, 0, 1, 2]),
    ("trunc", [-2, -1, 0, 0, 1, 2]), ("odd", [-3, -1, -1, 1, 1, 3]),
    ("ceil", [-2, -1, 0, 1, 2, 3]), ("away", [-3, -2, -1, 1, 2, 3]), ("ties_zero", [-2, -1, 0, 0, 1, 2]),
    ("ties_away_add_half", [-3, -2, -1, 1, 2, 3]), ("ties_zero_sub_half", [-2, -1, 0, 0, 1, 2]),
])
def test_mode_table_on_half_integers(mode, expect):
    v = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
    assert np.array_equal(round_to_integral(v, mode), np.array(expect, dtype=np.float64))


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=50),
       st.sampled_from(MODES))
def test_random_values_agree_with_the_rational_twin(xs, mode):
    v = np.array(xs)
    fast = round_to_integral(v, mode)
    slow = np.array([round_rational(Fraction(x), mode) for x in xs], dtype=np.float64)
    assert np.array_equal(fast, slow)


@given(st.fractions(), st.sampled_from(["float32", "float16"]))
def test_round_to_format_matches_numpy_casts(fr, fmt):
    """The twin's Fraction -> float rounding agrees with numpy where numpy is correctly rounded."""
    dt = {"float32": np.float32, "float16": np.float16}[fmt]
    x = float(fr)  # correctly rounded to float64 first ...
    if Fraction(x) != fr:
        return  # ... so compare only exactly representable inputs (no double rounding)
    with np.errstate(over="ignore"):
        expect = float(np.asarray(x).astype(dt))
    got = round_to_format(fr, fmt)
    assert (got == expect) if np.isfinite(expect) else got == expect


@given(st.lists(st.tuples(st.floats(width=32, allow_nan=False, allow_infinity=False),
                          st.floats(width=32, allow_nan=False, allow_infinity=False),
                          st.integers(-(2**31), 2**31)), min_size=1, max_size=40),
       st.sampled_from(["float32", "float16"]))
def test_fused_multiply_add_rounds_once(triples, fmt):
    from refsim.floatops import fused_multiply_add

    dt = {"float32": np.float32, "float16": np.float16}[fmt]
    with np.errstate(over="ignore"):  # float32 values beyond float16's range become +-inf: skipped below
        a = np.array([t[0] for t in triples], dtype=np.float32).astype(dt)
        b = np.array([t[1] for t in triples], dtype=np.float32).astype(dt)
    c = np.array([t[2] for t in triples], dtype=np.int64)
    got = fused_multiply_add(a, b, c, dt)
    for g, x, y, z in zip(got, a, b, c, strict=True):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        want = round_to_format(Fraction(float(x)) * Fraction(float(y)) + int(z), fmt)
        assert (Fraction(float(g)) == want) if np.isfinite(g) else float(g) == want


def test_fused_multiply_add_keeps_what_two_roundings_lose():
    from refsim.floatops import fused_multiply_add

    x, s = np.float32(-1.2917585), np.float32(0.5167034)
    r = np.float32(1) / s
    assert np.float32(x * r) + np.float32(3) == np.float32(0.5)  # two roundings: a tie
    assert fused_multiply_add(x, r, 3, np.float32) > np.float32(0.5)  # one rounding: above it


@given(st.lists(st.floats(-110, 90, width=32), min_size=1, max_size=40))
def test_exp_float32_is_correctly_rounded(xs):
    import decimal

    from refsim.floatops import exp_float32

    got = exp_float32(np.array(xs, dtype=np.float32))
    with decimal.localcontext() as ctx:
        ctx.prec = 80
        for g, x in zip(got, xs, strict=True):
            want = round_to_format(Fraction(decimal.Decimal(float(np.float32(x))).exp()), "float32")
            assert (Fraction(float(g)) == want) if np.isfinite(g) else float(g) == want


def test_exp_float32_on_a_dense_grid_and_its_boundary_cases():
    from refsim.floatops import _exp_decimal_f32, exp_float32

    x = np.linspace(-20, 0, 20001, dtype=np.float32)  # the range a max-subtracted softmax uses
    got = exp_float32(x)
    e = np.exp(x.astype(np.float64))
    near = (e * (1 - 2.0**-50)).astype(np.float32) != (e * (1 + 2.0**-50)).astype(np.float32)
    for i in np.nonzero(near)[0]:
        assert got[i] == _exp_decimal_f32(float(x[i]))
    # and an independent check of the fast path: every 20th grid point against 60-digit decimal
    for i in range(0, x.size, 20):
        assert got[i] == _exp_decimal_f32(float(x[i])), float(x[i])
    assert exp_float32(np.float32(0)) == 1.0 and exp_float32(np.float32(-np.inf)) == 0.0


def test_fsum_rows_is_order_independent_and_correctly_rounded():
    import math

    from refsim.floatops import fsum_rows

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5, 300)) * 10.0 ** rng.integers(-8, 8, (5, 300))).astype(np.float32)
    got = fsum_rows(x)
    assert got.shape == (5,)
    for r in range(5):
        assert got[r] == math.fsum(map(float, x[r]))
        assert fsum_rows(x[r][rng.permutation(300)]) == got[r]


@pytest.mark.parametrize("mode,expect", [
    ("ceil", [-1, 0, 0, 1, 1, 2]), ("away", [-2, -1, -1, 1, 1, 2]), ("ties_zero", [-1, -1, 0, 0, 1, 1]),
])
def test_directed_and_ties_zero_off_the_ties(mode, expect):
    v = np.array([-1.25, -0.75, -0.25, 0.25, 0.75, 1.25])
    assert np.array_equal(round_to_integral(v, mode), np.array(expect, dtype=np.float64))


def test_qonnx_half_up_formula_rounds_the_float_below_one_half_up():
    """QONNX HALF_UP is sign(v) * floor(|v| + 0.5) in the tensor's dtype: 0.49999997f + 0.5 rounds to 1."""
    x = np.array([0.49999997, -0.49999997, 2.0**23 + 1, 0.5, 2.5], dtype=np.float32)
    assert round_to_integral(x, "ties_away_add_half").tolist() == [1, -1, 2.0**23 + 2, 1, 3]
    assert round_to_integral(x, "ties_away").tolist() == [0, 0, 2.0**23 + 1, 1, 3]
    # the same values in float64 arithmetic: only the float32 formula has the quirk
    assert round_to_integral(x.astype(np.float64), "ties_away_add_half").tolist() == [0, 0, 2.0**23 + 1, 1, 3]
    assert round_rational(Fraction(float(x[0])), "ties_away_add_half", "float32") == 1


def test_qonnx_half_down_formula_is_exact_below_2_to_the_23():
    """sign(v) * ceil(|v| - 0.5): |v| - 0.5 is exact below 2^23 (float32), so it is ties toward zero there;
    an odd integer above loses one (fl(2^23 + 1 - 0.5) = 2^23, ties to even)."""
    k = np.arange(-4096, 4096, dtype=np.float32)
    v = np.concatenate([k, k + np.float32(0.5), np.nextafter(k + np.float32(0.5), np.float32(np.inf)),
                        np.nextafter(k + np.float32(0.5), np.float32(-np.inf))])
    assert np.array_equal(round_to_integral(v, "ties_zero_sub_half"), round_to_integral(v, "ties_zero"))
    big = np.array([2.0**23 + 1, -(2.0**23 + 1)], dtype=np.float32)
    assert round_to_integral(big, "ties_zero_sub_half").tolist() == [2.0**23, -(2.0**23)]
    assert round_to_integral(big, "ties_zero").tolist() == [2.0**23 + 1, -(2.0**23 + 1)]


@pytest.mark.parametrize("mode", ["ties_away_add_half", "ties_zero_sub_half"])
def test_float_formula_variants_in_bfloat16(mode):
    """In bfloat16 (8-bit significand) the formula's rounding bites already at 2^7: every bfloat16 value in
    [-512, 512] and every tie, against the rational twin with fl() in bfloat16."""
    k = np.arange(-1024, 1025, dtype=np.float64) / 2
    v = np.unique(np.concatenate([round_to_bfloat16(k), round_to_bfloat16(k * (1 + 2.0**-8)),
                                  round_to_bfloat16(k * (1 - 2.0**-8)), round_to_bfloat16(k / 128)]))
    fast = round_to_integral(v, mode, fmt="bfloat16")
    slow = np.array([round_rational(Fraction(float(x)), mode, "bfloat16") for x in v], dtype=np.float64)
    assert np.array_equal(fast, slow)
    assert not np.array_equal(fast, round_to_integral(v, mode, fmt="float64"))  # the variant is not exact there


def _bf16_neighbours(n):
    """Every bfloat16 bit pattern in a band of exponents, plus the ties between neighbours."""
    bits = np.arange(n, dtype=np.uint32) << 16
    return bits.view(np.float32)


def test_round_to_bfloat16_equals_the_rational_twin_on_every_tie():
    """Every positive and negative bfloat16 value (all 2^16 patterns) and the midpoint between each pair of
    neighbours, and both float32 neighbours of that midpoint, rounded once; subnormals and overflow included."""
    b = _bf16_neighbours(1 << 16)
    b = b[np.isfinite(b)]
    b = np.sort(b.astype(np.float64))
    mids = (b[:-1] + b[1:]) / 2  # exact in float64
    x = np.concatenate([b, mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf), [3.4e38, -3.4e38]])
    sample = np.random.default_rng(1).choice(x, 4000, replace=False)
    fast = round_to_bfloat16(sample).astype(np.float64)
    slow = np.array([float(round_to_format(Fraction(float(v)), "bfloat16")) for v in sample])
    assert np.array_equal(fast, slow)
    # the full set against an independent exact rule: the result is a bfloat16 value and the nearest one
    got = round_to_bfloat16(x).astype(np.float32)
    assert np.all((got.view(np.uint32) & 0xFFFF) == 0)
    assert np.array_equal(round_to_bfloat16(b), b.astype(np.float32))  # bfloat16 values are fixed points
    up = round_to_bfloat16(np.nextafter(mids, np.inf)).astype(np.float64)
    down = round_to_bfloat16(np.nextafter(mids, -np.inf)).astype(np.float64)
    assert np.array_equal(up, b[1:]) and np.array_equal(down, b[:-1])  # just off a tie: the nearer neighbour
    ties = round_to_bfloat16(mids).astype(np.float32)  # on a tie: the neighbour with an even last bit
    even = np.where((b[:-1].astype(np.float32).view(np.uint32) >> 16) % 2 == 0, b[:-1], b[1:])
    assert np.array_equal(ties.astype(np.float64), even)


@st.composite
def float_rows(draw):
    """Rows with wide exponents, exact cancellations, zeros of both signs and ties of the half-even fix."""
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    n = draw(st.integers(1, 300))
    x = rng.standard_normal(n) * 2.0 ** rng.integers(-60, 60, n)
    if draw(st.booleans()):
        x = np.concatenate([x, -x[: n // 2]])  # cancellations
    if draw(st.booleans()):
        x[rng.integers(0, x.size, max(1, x.size // 3))] = draw(st.sampled_from([0.0, -0.0]))
    if draw(st.booleans()):
        x = np.concatenate([x, [1e16, 1.0, 1e-16, -1e16, 2.0**-1074, 2.0**1000, 2.0**1000]])
    return rng.permutation(x)


@given(float_rows(), st.booleans())
def test_fsum_rows_equals_math_fsum(x, single):
    """The compiled fsum is math.fsum, row by row (float64 and float32 rows; all-zero and one-term rows)."""
    from refsim.floatops import fsum_rows, fsum_rows_python

    x = np.clip(x, -3e38, 3e38).astype(np.float32) if single else x
    rows = np.stack([x, np.zeros_like(x), np.full_like(x, -0.0), np.where(np.arange(x.size) == 0, x, 0)])
    assert np.array_equal(fsum_rows(rows).view(np.int64), fsum_rows_python(rows).view(np.int64))


def test_fsum_rows_leaves_inf_nan_and_overflow_to_math_fsum():
    import math

    from refsim.floatops import fsum_rows

    got = fsum_rows(np.array([[1.0, np.inf, 2.0], [np.inf, -5.0, 1.0], [1.0, 2.0, 3.0]]))
    assert got[0] == np.inf and got[1] == np.inf and got[2] == 6.0
    assert np.isnan(fsum_rows(np.array([[np.nan, 1.0]])))[0]
    for bad in ([np.inf, -np.inf], [1e308, 1e308]):
        with pytest.raises((ValueError, OverflowError)):
            math.fsum(bad)
        with pytest.raises((ValueError, OverflowError)):
            fsum_rows(np.array([bad]))


@given(st.lists(st.floats(-110, 90, width=32) | st.sampled_from([-np.inf, np.inf, np.nan, -0.0]), min_size=1,
                max_size=200))
def test_exp_float32_equals_its_numpy_twin(xs):
    """The compiled exp_float32 and the numpy one apply the same rule; both are correctly rounded."""
    from refsim.floatops import exp_float32, exp_float32_numpy

    x = np.array(xs, dtype=np.float32)
    assert np.array_equal(exp_float32(x).view(np.uint32), exp_float32_numpy(x).view(np.uint32))


@given(st.integers(1, 6), st.integers(1, 80), st.integers(0, 2**31), st.sampled_from([0.1, 3.0, 40.0]),
       st.booleans())
def test_softmax_equals_its_numpy_twin(rows, cols, seed, spread, causal):
    """The compiled softmax and softmax_numpy agree bit for bit, masked (-inf) entries and NaN rows included."""
    from refsim.models.floatops import softmax, softmax_numpy

    rng = np.random.default_rng(seed)
    s = (rng.standard_normal((2, rows, cols)) * spread).astype(np.float32)
    if causal:
        s[:, np.triu(np.ones((rows, cols), dtype=bool), k=1)] = -np.inf
    s[1, 0, :] = -np.inf  # a fully masked row: NaN in both
    if cols > 2:
        s[0, -1, 1] = np.nan
    with np.errstate(invalid="ignore"):
        got, want = softmax(s), softmax_numpy(s)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
