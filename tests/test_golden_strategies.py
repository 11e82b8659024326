"""golden.strategies: the level patterns as hypothesis strategies and harness fills hold the level's special values."""

import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from golden import strategies as gs
from golden.presets.quantize import special_values
from golden.presets.sdr import pattern_groups
from golden.stimulus import code_limits


@pytest.mark.parametrize("bits, signed", [(3, True), (4, True), (4, False), (8, True)])
def test_code_strategies_reach_every_special_code(bits, signed):
    lo, hi = code_limits(bits, signed)
    ones = (1 << bits) - 1
    walking = [int(v) for v in gs.special_codes(bits, signed)]
    must = {0, 1, lo, hi, lo + 1, hi - 1}
    assert must <= set(walking)
    for v in walking:  # every pattern (walking ones and zeros, alternating bits, extremes) is drawn
        assert find(gs.pattern_codes(bits, signed), lambda x, v=v: x == v) == v
        assert find(gs.codes(bits, signed), lambda x, v=v: x == v) == v
    for i in range(bits):  # walking ones, read as a code
        field = 1 << i
        code = field - ((field >> (bits - 1)) << bits) if signed else field
        assert code in walking
    assert (ones - ((ones >> (bits - 1)) << bits) if signed else ones) in walking  # all ones


@settings(max_examples=60, deadline=None)
@given(bits=st.sampled_from([3, 4, 8]), signed=st.booleans(), rows=st.integers(1, 9), cols=st.integers(1, 40),
       phase=gs.phases(), stride=st.integers(1, 5))
def test_fill_codes_holds_every_pattern_once_big_enough(bits, signed, rows, cols, phase, stride):
    pats = gs.special_codes(bits, signed)
    x = gs.fill_codes(bits, signed, (rows, cols), phase, stride=stride)
    lo, hi = code_limits(bits, signed)
    assert x.shape == (rows, cols) and x.min() >= lo and x.max() <= hi
    if cols >= pats.size:  # each row is one whole turn of the cycle
        assert set(pats.tolist()) <= set(x.ravel().tolist())
    assert set(x.ravel().tolist()) <= set(pats.tolist())


@settings(max_examples=40, deadline=None)
@given(base_bits=st.sampled_from([8, 16]), g=st.sampled_from([16, 32]), phase=gs.phases(), rows=st.integers(1, 5))
def test_fill_sdr_rows_are_golden_groups(base_bits, g, phase, rows):
    groups = pattern_groups(base_bits, g, 3)
    x = gs.fill_sdr(base_bits, g, (rows, 3 * g), phase)
    for r in range(rows):
        for j in range(3):
            want = groups[(phase + r * 3 + j) % groups.shape[0]]
            assert np.array_equal(x[r, j * g:(j + 1) * g].astype(np.int64), want)


def test_sdr_group_strategy_draws_ties_and_overflow_boundaries():
    groups = pattern_groups(8, 16, 3)
    for i in (0, 1, groups.shape[0] - 1):  # the all-zero group, the first pattern group, the paper's example
        got = find(gs.sdr_groups(8, 16), lambda grp, i=i: np.array_equal(grp, groups[i]))
        assert np.array_equal(got, groups[i])
    # the overflow boundary 2^L - 1 of every leading-one position appears in some group
    flat = set(groups.ravel().tolist())
    assert all(((1 << L) - 1) in flat for L in range(1, 8))


def test_float16_and_requant_strategies_reach_their_extremes():
    for v in special_values(np.float16):
        got = find(gs.float16_values(), lambda x, v=v: np.float16(x).view(np.uint16) == np.float16(v).view(np.uint16))
        assert np.float16(got).view(np.uint16) == np.float16(v).view(np.uint16)
    assert find(gs.requant_accumulators(3), lambda a: a == (1 << 31) - 1) == (1 << 31) - 1
    assert find(gs.requant_accumulators(3), lambda a: a == 5 * 4) == 20  # the tie (2*2 + 1) * 2^(3 - 1)


def test_harness_pattern_cases_carry_golden_codes():
    from cukernels import harness

    p = harness.CaseParams(target="lowbit_gemm", m=3, n=2, k=0, seed=1, bits=4, cluster_sizes=(20, 13),
                           fill="patterns", phase=5)
    case = harness.TARGETS["lowbit_gemm"].build(p)
    assert case.expected["out_isums"].shape == (2, 3, 2)
    a = harness._codes(None, (3, 33), -8, 7, "patterns", 5)
    assert np.array_equal(a, gs.fill_codes(4, True, (3, 33), 5))
    x = harness._sdr_values(None, (2, 64), 16, "patterns", 32, 7)
    assert np.array_equal(x, gs.fill_sdr(16, 32, (2, 64), 7))


def test_golden_imports_without_hypothesis():
    import subprocess
    import sys

    code = ("import sys; sys.modules['hypothesis'] = None; sys.modules['hypothesis.strategies'] = None\n"
            "import golden, golden.strategies as gs, golden.presets\n"
            "assert gs.fill_codes(4, True, (2, 20)).shape == (2, 20)\n"
            "try:\n    gs.codes(4, True)\nexcept ImportError as e:\n    assert 'test extra' in str(e)\n"
            "else:\n    raise SystemExit('no ImportError')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
