"""Exact integer GEMM and accumulator rules against the scalar MAC specification."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import int_matrix

import refsim
from refsim.accumulate import signed_bits
from refsim.gemm import exact_matmul
from refsim.scalar import int_gemm_scalar, signed_bits_scalar


@pytest.mark.parametrize("lo,hi", [(-4, 3), (0, 7), (-8, 7), (0, 15), (-128, 127), (0, 255)])
def test_every_pair_of_products(lo, hi):
    """Exhaustive over int3/uint3/int4/uint4/int8/uint8: an outer product (K = 1) holds every pair."""
    v = np.arange(lo, hi + 1)
    got = refsim.int_gemm(v[:, None], v[None, :])
    assert np.array_equal(got, np.array([[x * y for y in v.tolist()] for x in v.tolist()], dtype=np.int64))


@given(data=st.data())
def test_int_gemm_equals_the_scalar_mac(data):
    m, k, n = (data.draw(st.integers(1, 6)) for _ in range(3))
    wa, wb = data.draw(st.sampled_from([(4, 4), (3, 3), (8, 8), (16, 8), (16, 16), (8, 4)]))
    sa, sb = data.draw(st.booleans()), data.draw(st.booleans())
    a = int_matrix(data.draw, (m, k), -(1 << (wa - 1)) if sa else 0, (1 << (wa - 1)) - 1 if sa else (1 << wa) - 1)
    b = int_matrix(data.draw, (k, n), -(1 << (wb - 1)) if sb else 0, (1 << (wb - 1)) - 1 if sb else (1 << wb) - 1)
    acc_bits = data.draw(st.integers(2, 40))
    overflow = data.draw(st.sampled_from(["wrap", "saturate", "raise"]))
    try:
        expect = int_gemm_scalar(a.tolist(), b.tolist(), acc_bits=acc_bits, overflow=overflow)
    except OverflowError as exc:
        mm, nn, kk = exc.args[0]
        with pytest.raises(ValueError, match=f"at output \\(m={mm}, n={nn}\\), k={kk}"):
            refsim.int_gemm(a, b, acc_bits=acc_bits, overflow=overflow)
        return
    assert np.array_equal(refsim.int_gemm(a, b, acc_bits=acc_bits, overflow=overflow), np.array(expect, np.int64))


@given(data=st.data())
def test_acc_bits_needed_equals_the_scalar_scan(data):
    m, k, n = (data.draw(st.integers(1, 5)) for _ in range(3))
    a = int_matrix(data.draw, (m, k), -(1 << 15), (1 << 15) - 1)
    b = int_matrix(data.draw, (k, n), -128, 127)
    need = refsim.acc_bits_needed(a, b)
    finals, partials, bound = [], [0], 1
    for i in range(m):
        for j in range(n):
            acc = pos = neg = 0
            for t in range(k):
                p = int(a[i, t]) * int(b[t, j])
                acc += p
                partials.append(acc)
                pos, neg = pos + max(p, 0), neg + max(-p, 0)
            finals.append(acc)
            bound = max(bound, signed_bits_scalar(pos), signed_bits_scalar(-neg))
    assert need.final == max(signed_bits_scalar(v) for v in finals)
    assert need.partial == max(signed_bits_scalar(v) for v in partials)
    assert need.bound == bound
    # the claims in AccBitsNeeded's docstring, checked: each width is enough for its rule
    exact = a @ b
    assert np.array_equal(refsim.int_gemm(a, b, acc_bits=max(need.final, 2), overflow="wrap"), exact)
    assert np.array_equal(refsim.int_gemm(a, b, acc_bits=max(need.partial, 2), overflow="raise"), exact)


@given(st.integers(-(2**62), 2**62), st.integers(0, 62))
def test_signed_bits_vectorized_equals_scalar(v, shift):
    v = v >> shift
    assert int(signed_bits(np.array([v]))[0]) == signed_bits_scalar(v)


@pytest.mark.parametrize("lo,hi,k", [(-128, 127, 5000), (-(1 << 15), (1 << 15) - 1, 300)])
def test_chunked_blas_paths_equal_python_ints(lo, hi, k):
    """K beyond one chunk: float32 chunks (int8, chunk 1024) and float64 (int16, one chunk of 2^23)."""
    rng = np.random.default_rng(k)
    a = rng.integers(lo, hi + 1, size=(3, k))
    b = rng.integers(lo, hi + 1, size=(k, 2))
    a[0], b[:, 0] = lo, lo  # the extreme product everywhere: every chunk at its exactness bound
    want = [[sum(int(a[i, t]) * int(b[t, j]) for t in range(k)) for j in range(2)] for i in range(3)]
    assert exact_matmul(a, b, backend="blas").tolist() == want


def test_float64_chunking_beyond_2_to_the_21():
    """uint16 x uint16 products need float64 with chunks of 2^53 // 65535^2 = 2^21 + 64: K = 2^21 + 1000 takes two."""
    k = (1 << 21) + 1000
    a = np.full((1, k), 65535, dtype=np.uint16)
    b = np.full((k, 1), 65535, dtype=np.uint16)
    b[-1, 0] = 7
    assert exact_matmul(a, b, backend="blas")[0, 0] == (k - 1) * 65535 * 65535 + 65535 * 7


def test_float_path_is_exact_at_its_bounds():
    """Operands whose partial sums sit at 2^24 (float32) and beyond it (chunked / float64)."""
    k = 1 << 10
    a = np.full((2, k), -128)
    b = np.full((k, 3), -128)  # each product 2^14; the sum 2^24 exactly
    assert np.array_equal(exact_matmul(a, b), np.full((2, 3), 1 << 24))
    a = np.full((1, 4097), 32767)
    b = np.full((4097, 1), -32768)
    assert exact_matmul(a, b)[0, 0] == 4097 * 32767 * -32768
    a = np.full((1, 3), 65535)
    b = np.array([[65535], [65535], [1]])
    assert exact_matmul(a, b)[0, 0] == 2 * 65535 * 65535 + 65535


def test_k_permutation_leaves_the_wrapped_result_unchanged():
    rng = np.random.default_rng(0)
    a = rng.integers(-(1 << 15), 1 << 15, size=(7, 300))
    b = rng.integers(-128, 128, size=(300, 5))
    perm = rng.permutation(300)
    for bits in (16, 24, 32):
        assert np.array_equal(refsim.int_gemm(a, b, acc_bits=bits), refsim.int_gemm(a[:, perm], b[perm], acc_bits=bits))


def test_saturation_depends_on_order_and_is_reported():
    a = np.array([[100, 100, -100]])
    b = np.array([[1], [1], [1]])
    assert refsim.int_gemm(a, b, acc_bits=8, overflow="saturate")[0, 0] == 27  # 100, 127, 27
    assert refsim.int_gemm(a[:, ::-1], b[::-1], acc_bits=8, overflow="saturate")[0, 0] == 100
    with pytest.raises(ValueError, match=r"at output \(m=0, n=0\), k=1.*8-bit range \[-128, 127\].*needs 9 bits"):
        refsim.int_gemm(a, b, acc_bits=8, overflow="raise")


def test_worst_case_bound_for_the_hardware_question():
    """K = 14336 of int16 x int4 symmetric products needs a 33-bit accumulator in the worst case."""
    bits = refsim.acc_bits_worst_case(14336, (-32767, 32767), (-7, 7))
    assert bits == signed_bits_scalar(14336 * 32767 * 7) == 33


def test_torch_backend_agrees():
    pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, size=(33, 70))
    b = rng.integers(-128, 128, size=(70, 9))
    assert np.array_equal(refsim.int_gemm(a, b, backend="torch"), a @ b)
    # +128 and uint8 values do not fit int8: they must not reach torch._int_mm
    a[0, 0], b[1, 1] = 128, 255
    assert np.array_equal(refsim.int_gemm(a, b, backend="torch"), a @ b)


@pytest.mark.parametrize("kwargs,match", [
    (dict(acc_bits=1), "acc_bits=1 is not allowed"),
    (dict(overflow="clip"), "overflow='clip' is not allowed; allowed: 'wrap', 'saturate', 'raise'"),
    (dict(backend="gpu"), "backend='gpu'"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        refsim.int_gemm(np.ones((2, 2), int), np.ones((2, 2), int), **kwargs)


def test_bad_operands():
    with pytest.raises(ValueError, match="inner dimensions"):
        refsim.int_gemm(np.ones((2, 3), int), np.ones((2, 2), int))
    with pytest.raises(ValueError, match=r"a\(0, 1\) = 70000 is outside.*16 bits"):
        refsim.int_gemm(np.array([[0, 70000]]), np.ones((2, 1), int))
    with pytest.raises(TypeError, match="b must be an integer array"):
        refsim.int_gemm(np.ones((2, 2), int), np.ones((2, 2)))


@given(data=st.data())
def test_cluster_int_gemm_equals_per_cluster_scalar_sums(data):
    m, k, n = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 12)), data.draw(st.integers(1, 4))
    n_clusters = data.draw(st.integers(1, min(k, 4)))
    ids = np.array(data.draw(st.permutations(list(range(n_clusters)) + data.draw(
        st.lists(st.integers(0, n_clusters - 1), min_size=k - n_clusters, max_size=k - n_clusters)))))
    a = int_matrix(data.draw, (m, k), -8, 7)
    b = int_matrix(data.draw, (k, n), 0, 15)
    za = np.array(data.draw(st.lists(st.integers(-20, 20), min_size=n_clusters, max_size=n_clusters)))
    zb = int_matrix(data.draw, (n_clusters, n), 0, 15)
    got = refsim.cluster_int_gemm(a, za, b, zb, ids)
    for c in range(n_clusters):
        for i in range(m):
            for j in range(n):
                want = sum((int(a[i, t]) - int(za[c])) * (int(b[t, j]) - int(zb[c, j]))
                           for t in range(k) if ids[t] == c)
                assert got[c, i, j] == want
    # the clusters' sums add up to the whole corrected product when zero points are shared
    whole = refsim.cluster_int_gemm(a, np.full(n_clusters, 3), b, 8, ids).sum(axis=0)
    assert np.array_equal(whole, (a - 3) @ (b - 8))


def test_cluster_int_gemm_with_a_far_zero_point_and_empty_clusters():
    """RPTQ zero points can sit far outside the code range (a cluster whose range excludes 0)."""
    s, z = refsim.rptq_params(np.array([-4.0]), np.array([-3.99]), bits=8)
    qa = refsim.quantize(np.array([[-4.0, -3.995]], np.float32), s, z, bits=8, spec=refsim.preset("rptq"))
    b = np.full((2, 1), 3)
    got = refsim.cluster_int_gemm(qa, z, b, 0, np.zeros(2, int), acc_bits=64)
    assert got[0, 0, 0] == 3 * int((qa - z).sum())
    with pytest.raises(ValueError, match="outside the allowed range"):
        refsim.cluster_int_gemm(qa, z, b, 0, np.zeros(2, int), acc_bits=64, overflow="saturate")
    got = refsim.cluster_int_gemm(np.ones((1, 3), int), 0, np.ones((3, 2), int), 0, [0, 0, 1], n_clusters=4)
    assert got.shape == (4, 1, 2) and got[2:].sum() == 0 and got[0, 0, 0] == 2
