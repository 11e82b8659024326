"""sdr_gemm: equal to int_gemm of the decoded operands (wrap), to the scalar MAC twin (every rule)."""

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from strategies import acc_spec, sdr_spec

import refsim
from refsim.scalar import signed_bits_scalar
from refsim.sdr import sdr_acc_bits_needed, sdr_decode, sdr_encode, sdr_gemm
from refsim.sdr_scalar import sdr_gemm_scalar


@st.composite
def gemm_cases(draw, max_dim=12):
    g = draw(st.sampled_from([2, 4, 8, 16]))
    m = draw(st.integers(1, max_dim))
    n = draw(st.integers(1, max_dim))
    k = draw(st.integers(1, 40))  # often not a multiple of g: a ragged last group
    a_bits = draw(st.sampled_from([16, 8]))
    b_bits = draw(st.sampled_from([8, 16]))
    a_keep = draw(st.sampled_from([3, 7]))
    b_keep = draw(st.sampled_from([3, 7]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)

    def operand(shape, bits):
        lim = (1 << (bits - 1)) - 1
        mag = rng.integers(0, bits, size=shape)  # spread of magnitudes: groups reach every shift
        x = rng.integers(-lim, lim + 1, size=shape) >> (bits - 1 - mag)
        return np.clip(x, -lim, lim)

    a = operand((m, k), a_bits)
    b = operand((k, n), b_bits)
    ac, af = sdr_encode(a, group_size=g, base_bits=a_bits, keep=a_keep, axis=1, spec=sdr_spec())
    bc, bf = sdr_encode(b, group_size=g, base_bits=b_bits, keep=b_keep, axis=0, spec=sdr_spec())
    return ac, af, bc, bf, g


@given(gemm_cases(), st.integers(2, 64))
def test_wrap_equals_int_gemm_of_decoded(case, acc_bits):
    ac, af, bc, bf, g = case
    got = sdr_gemm(ac, af, bc, bf, group_size=g, spec=acc_spec(acc_bits))
    da = sdr_decode(ac, af, group_size=g, axis=1)
    db = sdr_decode(bc, bf, group_size=g, axis=0)
    assert np.array_equal(got, refsim.int_gemm(da, db, spec=acc_spec(acc_bits)))


@given(gemm_cases(max_dim=5), st.integers(6, 30), st.sampled_from(["wrap", "saturate", "raise"]))
def test_every_rule_equals_the_scalar_mac(case, acc_bits, overflow):
    ac, af, bc, bf, g = case
    lists = (ac.tolist(), af.tolist(), bc.tolist(), bf.tolist())
    try:
        want = sdr_gemm_scalar(*lists, group_size=g, spec=acc_spec(acc_bits, overflow))
    except OverflowError as exc:
        event(f"{overflow}: overflow raised")
        m, n, j = exc.args[0]
        with pytest.raises(ValueError, match=rf"\(m={m}, n={n}\), group {j} "):
            sdr_gemm(ac, af, bc, bf, group_size=g, spec=acc_spec(acc_bits, overflow))
        return
    got = sdr_gemm(ac, af, bc, bf, group_size=g, spec=acc_spec(acc_bits, overflow))
    exact = sdr_gemm(ac, af, bc, bf, group_size=g, spec=acc_spec(64))
    event(f"{overflow}: {'differs from' if np.any(got != exact) else 'equals'} exact")
    assert np.array_equal(got, np.array(want, dtype=np.int64).reshape(got.shape))


@given(gemm_cases(max_dim=6), st.integers(8, 40))
def test_saturate_and_raise_against_int_gemm(case, acc_bits):
    """What holds: if int_gemm(decoded, raise) passes, sdr_gemm(raise) passes and both saturating
    products are exact; whenever sdr_gemm(raise) passes, its value is exact."""
    ac, af, bc, bf, g = case
    da = sdr_decode(ac, af, group_size=g, axis=1)
    db = sdr_decode(bc, bf, group_size=g, axis=0)
    exact = refsim.int_gemm(da, db, spec=acc_spec(64))
    try:
        refsim.int_gemm(da, db, spec=acc_spec(acc_bits, "raise"))
        int_ok = True
    except ValueError:
        int_ok = False
    try:
        got = sdr_gemm(ac, af, bc, bf, group_size=g, spec=acc_spec(acc_bits, "raise"))
        sdr_ok = True
    except ValueError:
        sdr_ok = False
    event(f"int_gemm raise passes: {int_ok}, sdr_gemm raise passes: {sdr_ok}")
    if int_ok:
        assert sdr_ok
        assert np.array_equal(sdr_gemm(ac, af, bc, bf, group_size=g, spec=acc_spec(acc_bits, "saturate")),
                              refsim.int_gemm(da, db, spec=acc_spec(acc_bits, "saturate")))
    if sdr_ok:
        assert np.array_equal(got, exact)
        assert np.array_equal(sdr_gemm(ac, af, bc, bf, group_size=g, spec=acc_spec(acc_bits, "saturate")), exact)


def test_intra_group_excursion_differs_from_int_gemm():
    """A prefix inside a group leaves the range but every group boundary stays inside: the
    group-order accumulator never overflows, the per-k one does (documented in refsim.sdr)."""
    a = np.array([[7, -7]])  # one group of two, flag 0
    b = np.array([[7], [7]])
    ac, af = sdr_encode(a, group_size=2, base_bits=8, axis=1, spec=sdr_spec())
    bc, bf = sdr_encode(b, group_size=2, base_bits=8, axis=0, spec=sdr_spec())
    assert sdr_gemm(ac, af, bc, bf, group_size=2, spec=acc_spec(6, "raise")).item() == 0
    assert sdr_gemm(ac, af, bc, bf, group_size=2, spec=acc_spec(6, "saturate")).item() == 0
    with pytest.raises(ValueError, match="overflow"):
        refsim.int_gemm(a, b, spec=acc_spec(6, "raise"))
    assert refsim.int_gemm(a, b, spec=acc_spec(6, "saturate")).item() == 31 - 49  # 49 clamps to 31
    assert sdr_acc_bits_needed(ac, af, bc, bf, group_size=2).partial == 1  # only the prefix 0
    assert refsim.acc_bits_needed(a, b).partial == 7  # 49


@given(gemm_cases(max_dim=5))
def test_acc_bits_needed_matches_scalar(case):
    ac, af, bc, bf, g = case
    need = sdr_acc_bits_needed(ac, af, bc, bf, group_size=g)
    lists = (ac.tolist(), af.tolist(), bc.tolist(), bf.tolist())
    exact = np.array(sdr_gemm_scalar(*lists, group_size=g, spec=acc_spec(64)))
    assert need.final == max(signed_bits_scalar(int(v)) for v in exact.flat)
    # partial: the narrowest accumulator that does not raise in group order is exactly `partial` bits
    sdr_gemm(ac, af, bc, bf, group_size=g, spec=acc_spec(max(need.partial, 2), "raise"))
    if need.partial > 2:
        with pytest.raises(ValueError):
            sdr_gemm(ac, af, bc, bf, group_size=g, spec=acc_spec(need.partial - 1, "raise"))
    assert need.final <= need.partial <= need.bound


def test_gemm_argument_errors():
    ac = np.zeros((2, 8), np.int8)
    af = np.zeros((2, 1), np.uint8)
    bc = np.zeros((8, 3), np.int8)
    bf = np.zeros((1, 3), np.uint8)
    with pytest.raises(ValueError, match="inner dimensions"):
        sdr_gemm(ac, af, bc[:4], bf, group_size=8, spec=acc_spec(64))
    with pytest.raises(ValueError, match="flags has shape"):
        sdr_gemm(ac, af, bc, bf.T, group_size=8, spec=acc_spec(64))
    with pytest.raises(ValueError, match="overflow"):
        sdr_gemm(ac, af, bc, bf, group_size=8, spec=acc_spec(64, "clip"))
    with pytest.raises(ValueError, match="acc_bits"):
        sdr_gemm(ac, af, bc, bf, group_size=8, spec=acc_spec(65))
    with pytest.raises(ValueError, match="2-d"):
        sdr_gemm(ac[0], af[0], bc, bf, group_size=8, spec=acc_spec(64))


def test_flags_beyond_the_base_precision_are_named():
    with pytest.raises(ValueError, match=r"a_codes\(0, 0\) << a_flags decodes to -57344"):
        refsim.sdr_gemm([[-7]], [[13]], [[1]], [[0]], group_size=2, spec=acc_spec(64))


@pytest.mark.parametrize("k,g,acc_bits", [(1000, 16, 32), (777, 32, 24), (2048, 128, 20)])
def test_wrap_against_an_independent_group_order_reference(k, g, acc_bits):
    """Large K: the group sums shifted by f_a + f_b, accumulated in int64 and reduced mod 2^acc_bits,
    computed here from the codes and flags directly (not through sdr_decode or int_gemm)."""
    rng = np.random.default_rng(k)
    m, n = 3, 4
    x = rng.integers(-(2**15) + 1, 2**15, size=(m, k))
    w = rng.integers(-127, 128, size=(k, n))
    ac, af = refsim.sdr_encode(x, group_size=g, base_bits=16, axis=1, spec=sdr_spec())
    bc, bf = refsim.sdr_encode(w, group_size=g, base_bits=8, axis=0, spec=sdr_spec())
    want = np.zeros((m, n), dtype=np.int64)
    for j in range(af.shape[1]):
        sl = slice(j * g, min(j * g + g, k))
        group = ac[:, sl].astype(np.int64) @ bc[sl].astype(np.int64)
        want += group << (af[:, j].astype(np.int64)[:, None] + bf[j].astype(np.int64)[None, :])
    lo = 1 << (acc_bits - 1)
    want = ((want + lo) % (1 << acc_bits)) - lo
    assert np.array_equal(refsim.sdr_gemm(ac, af, bc, bf, group_size=g, spec=acc_spec(acc_bits)), want)
