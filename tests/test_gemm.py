"""Exact integer GEMM and accumulator rules against the scalar MAC specification."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import acc_spec, acc_specs, int_matrix

import refsim
from refsim.accumulate import signed_bits
from refsim.gemm import exact_matmul
from refsim.scalar import int_gemm_scalar, signed_bits_scalar


@pytest.mark.parametrize("lo,hi", [(-4, 3), (0, 7), (-8, 7), (0, 15), (-128, 127), (0, 255)])
def test_every_pair_of_products(lo, hi):
    """Exhaustive over int3/uint3/int4/uint4/int8/uint8: an outer product (K = 1) holds every pair."""
    v = np.arange(lo, hi + 1)
    got = refsim.int_gemm(v[:, None], v[None, :], spec=acc_spec())
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
        expect = int_gemm_scalar(a.tolist(), b.tolist(), spec=acc_spec(acc_bits, overflow))
    except OverflowError as exc:
        mm, nn, kk = exc.args[0]
        with pytest.raises(ValueError, match=f"at output \\(m={mm}, n={nn}\\), k={kk}"):
            refsim.int_gemm(a, b, spec=acc_spec(acc_bits, overflow))
        return
    assert np.array_equal(refsim.int_gemm(a, b, spec=acc_spec(acc_bits, overflow)), np.array(expect, np.int64))


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
    assert np.array_equal(refsim.int_gemm(a, b, spec=acc_spec(max(need.final, 2), "wrap")), exact)
    assert np.array_equal(refsim.int_gemm(a, b, spec=acc_spec(max(need.partial, 2), "raise")), exact)


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


@pytest.mark.parametrize("dk", [-1, 0, 1])
def test_float64_chunk_boundary_both_sides(dk):
    """uint16 x uint16: chunk c = 2^53 // 65535^2 = 2^21 + 64; K = c - 1 and c are one chunk, c + 1 two.
    Every product is 65535^2 but the last, so the sums sit at the exactness bound in every chunk."""
    c = (1 << 53) // (65535 * 65535)
    k = c + dk
    a = np.full((1, k), 65535, dtype=np.uint16)
    b = np.full((k, 2), 65535, dtype=np.uint16)
    b[-1, 1] = 7
    assert exact_matmul(a, b, backend="blas").tolist() == [[k * 65535 * 65535, (k - 1) * 65535 * 65535 + 65535 * 7]]


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
        spec = acc_spec(bits)
        assert np.array_equal(refsim.int_gemm(a, b, spec=spec), refsim.int_gemm(a[:, perm], b[perm], spec=spec))


def test_saturation_depends_on_order_and_is_reported():
    a = np.array([[100, 100, -100]])
    b = np.array([[1], [1], [1]])
    assert refsim.int_gemm(a, b, spec=acc_spec(8, "saturate"))[0, 0] == 27  # 100, 127, 27
    assert refsim.int_gemm(a[:, ::-1], b[::-1], spec=acc_spec(8, "saturate"))[0, 0] == 100
    with pytest.raises(ValueError, match=r"at output \(m=0, n=0\), k=1.*8-bit range \[-128, 127\].*needs 9 bits"):
        refsim.int_gemm(a, b, spec=acc_spec(8, "raise"))


def test_worst_case_bound_for_the_hardware_question():
    """K = 14336 of int16 x int4 symmetric products needs a 33-bit accumulator in the worst case."""
    bits = refsim.acc_bits_worst_case(14336, (-32767, 32767), (-7, 7))
    assert bits == signed_bits_scalar(14336 * 32767 * 7) == 33


def test_torch_backend_agrees():
    pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, size=(33, 70))
    b = rng.integers(-128, 128, size=(70, 9))
    assert np.array_equal(refsim.int_gemm(a, b, spec=acc_spec(), backend="torch"), a @ b)
    # +128 and uint8 values do not fit int8: they must not reach torch._int_mm
    a[0, 0], b[1, 1] = 128, 255
    assert np.array_equal(refsim.int_gemm(a, b, spec=acc_spec(), backend="torch"), a @ b)


def test_bad_arguments():
    """The accumulator's knobs are the spec's: a bad width or rule is refused where the spec is made."""
    with pytest.raises(ValueError, match="acc_bits=1 is not allowed"):
        acc_spec(1)
    with pytest.raises(ValueError, match="acc_overflow='clip' is not allowed; allowed: 'wrap', 'saturate', 'raise'"):
        acc_spec(32, "clip")
    with pytest.raises(ValueError, match="backend='gpu'"):
        refsim.int_gemm(np.ones((2, 2), int), np.ones((2, 2), int), spec=acc_spec(), backend="gpu")
    for fn, args in ((refsim.int_gemm, (np.ones((2, 2), int),) * 2),
                     (refsim.cluster_int_gemm, (np.ones((2, 2), int), 0, np.ones((2, 2), int), 0, [0, 0]))):
        with pytest.raises(TypeError, match="spec must be a refsim.NumericsSpec"):
            fn(*args, spec={"acc_bits": 32})
        with pytest.raises(TypeError, match="spec"):
            fn(*args)  # no default accumulator: the spec names it


@given(spec=acc_specs, data=st.data())
def test_only_the_accumulator_fields_matter_and_the_result_has_their_width(spec, data):
    """int_gemm and cluster_int_gemm read acc_bits and acc_overflow and nothing else of the spec; the
    result is int32 for acc_bits <= 32 (every value fits), int64 above."""
    a = int_matrix(data.draw, (2, 5), -128, 127)
    b = int_matrix(data.draw, (5, 3), -128, 127)
    other = refsim.preset("tflite").replace(acc_bits=spec.acc_bits, acc_overflow=spec.acc_overflow)
    dtype = np.int32 if spec.acc_bits <= 32 else np.int64
    try:
        want = int_gemm_scalar(a.tolist(), b.tolist(), spec=spec)
    except OverflowError:
        for s in (spec, other):
            with pytest.raises(ValueError, match="accumulator overflow"):
                refsim.int_gemm(a, b, spec=s)
        return
    for s in (spec, other):
        got = refsim.int_gemm(a, b, spec=s)
        assert got.dtype == dtype and got.tolist() == want
        c = refsim.cluster_int_gemm(a, 0, b, 0, np.zeros(5, int), spec=s)
        assert c.dtype == dtype and c[0].tolist() == want


def test_bad_operands():
    with pytest.raises(ValueError, match="inner dimensions"):
        refsim.int_gemm(np.ones((2, 3), int), np.ones((2, 2), int), spec=acc_spec())
    with pytest.raises(ValueError, match=r"a\(0, 1\) = 70000 is outside.*16 bits"):
        refsim.int_gemm(np.array([[0, 70000]]), np.ones((2, 1), int), spec=acc_spec())
    with pytest.raises(TypeError, match="b must be an integer array"):
        refsim.int_gemm(np.ones((2, 2), int), np.ones((2, 2)), spec=acc_spec())


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
    got = refsim.cluster_int_gemm(a, za, b, zb, ids, spec=acc_spec())
    for c in range(n_clusters):
        for i in range(m):
            for j in range(n):
                want = sum((int(a[i, t]) - int(za[c])) * (int(b[t, j]) - int(zb[c, j]))
                           for t in range(k) if ids[t] == c)
                assert got[c, i, j] == want
    # the clusters' sums add up to the whole corrected product when zero points are shared
    whole = refsim.cluster_int_gemm(a, np.full(n_clusters, 3), b, 8, ids, spec=acc_spec()).sum(axis=0)
    assert np.array_equal(whole, (a - 3) @ (b - 8))


def test_cluster_int_gemm_with_a_far_zero_point_and_empty_clusters():
    """RPTQ zero points can sit far outside the code range (a cluster whose range excludes 0)."""
    s, z = refsim.rptq_params(np.array([-4.0]), np.array([-3.99]), bits=8, spec=refsim.preset("rptq"))
    qa = refsim.quantize(np.array([[-4.0, -3.995]], np.float32), s, z, bits=8, spec=refsim.preset("rptq"))
    b = np.full((2, 1), 3)
    got = refsim.cluster_int_gemm(qa, z, b, 0, np.zeros(2, int), spec=acc_spec(64))
    assert got[0, 0, 0] == 3 * int((qa - z).sum())
    with pytest.raises(ValueError, match="outside the allowed range"):
        refsim.cluster_int_gemm(qa, z, b, 0, np.zeros(2, int), spec=acc_spec(64, "saturate"))
    got = refsim.cluster_int_gemm(np.ones((1, 3), int), 0, np.ones((3, 2), int), 0, [0, 0, 1], n_clusters=4,
                                  spec=acc_spec())
    assert got.shape == (4, 1, 2) and got[2:].sum() == 0 and got[0, 0, 0] == 2


def _narrowest(x):
    """The narrowest integer dtype holding x's values (int8 for 4- and 8-bit codes), so that the
    proven bounds of the dtype, not a pass over the data, decide the path where they can."""
    for dt in (np.int8, np.uint8, np.int16, np.uint16, np.int32):
        info = np.iinfo(dt)
        if x.size == 0 or (info.min <= x.min() and x.max() <= info.max):
            return x.astype(dt)
    return x


@given(data=st.data())
def test_k_on_both_sides_of_every_chunk_boundary(data):
    """K at the chunk lengths of the float BLAS path, one below, at and above each.

    For operands with |a| <= ma, |b| <= mb (both attained) the path is: float32 in chunks of
    c = 2^24 // (ma * mb) when c >= min(K, 512) (one matmul when c >= K), else float64. So K in
    {c - 1, c, c + 1, 2c, 2c + 1} crosses from one chunk to two and three, and K in {511, 512,
    513} with c near 512 crosses from float32 to float64.
    """
    target = data.draw(st.sampled_from([300, 511, 512, 513, 700, 1023, 1024, 1025]), label="target chunk")
    ma = data.draw(st.integers(max(1, (1 << 24) // target >> 15), min(1 << 15, (1 << 24) // target)), label="ma")
    mb = max(1, min(1 << 15, ((1 << 24) // target) // ma))
    c = (1 << 24) // (ma * mb)
    ks = sorted({k for k in (c - 1, c, c + 1, 2 * c, 2 * c + 1, 511, 512, 513) if 1 <= k <= 2100})
    k = data.draw(st.sampled_from(ks), label="k")
    m, n = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    fill = data.draw(st.sampled_from(["random", "extreme", "alternating"]), label="fill")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    if fill == "random":
        a, b = rng.integers(-ma, ma + 1, (m, k)), rng.integers(-mb, mb + 1, (k, n))
    elif fill == "extreme":  # every product is +-ma*mb: each chunk's partial sums reach the bound
        a, b = np.full((m, k), -ma), np.full((k, n), -mb) * rng.choice([-1, 1], size=(1, n))
    else:
        a, b = np.full((m, k), ma) * (-1) ** np.arange(k), np.full((k, n), mb)
    a[0, 0], b[0, 0] = data.draw(st.sampled_from([-ma, ma])), data.draw(st.sampled_from([-mb, mb]))
    want = int_gemm_scalar(a.tolist(), b.tolist(), spec=acc_spec(64, "wrap"))
    for x, y in ((a, b), (_narrowest(a), _narrowest(b))):
        assert exact_matmul(x, y, backend="blas").tolist() == want
    acc_bits = data.draw(st.integers(8, 40), label="acc_bits")
    overflow = data.draw(st.sampled_from(["wrap", "saturate", "raise"]), label="overflow")
    try:
        expect = int_gemm_scalar(a.tolist(), b.tolist(), spec=acc_spec(acc_bits, overflow))
    except OverflowError as exc:
        mm, nn, kk = exc.args[0]
        with pytest.raises(ValueError, match=f"at output \\(m={mm}, n={nn}\\), k={kk}"):
            refsim.int_gemm(_narrowest(a), _narrowest(b), spec=acc_spec(acc_bits, overflow))
        return
    got = refsim.int_gemm(_narrowest(a), _narrowest(b), spec=acc_spec(acc_bits, overflow))
    assert got.dtype == (np.int32 if acc_bits <= 32 else np.int64) and got.tolist() == expect


@pytest.mark.parametrize("dtype", [np.int64, np.int8])
@pytest.mark.parametrize("k,value", [((1 << 17) - 1, -128), (1 << 17, -128), (1 << 17, 127), ((1 << 17) + 1, 127)])
def test_torch_path_on_both_sides_of_the_int32_bound(dtype, k, value, monkeypatch):
    """torch._int_mm (int32) is taken only while K * |a| * |b| < 2^31 bounds every partial sum.

    K = 2^17 products of (-128)^2 sum to exactly 2^31, one past int32: that K must leave for
    float BLAS; K = 2^17 - 1 stays. For int8 data within +-127 the dtype's bound (128) would
    refuse K = 2^17, but the data's own range (127^2 * 2^17 < 2^31) admits it.
    """
    pytest.importorskip("torch")
    import refsim.gemm as gemm

    calls = []
    real = gemm._torch_int_mm
    monkeypatch.setattr(gemm, "_torch_int_mm", lambda x, y: calls.append(1) or real(x, y))
    a = np.full((1, k), value, dtype=dtype)
    b = np.full((k, 3), value, dtype=dtype)
    b[-1, 1] = 0
    want = [[k * value * value, (k - 1) * value * value, k * value * value]]
    assert exact_matmul(a, b, backend="torch").tolist() == want
    assert refsim.int_gemm(a, b, spec=acc_spec(64), backend="torch").tolist() == want
    assert len(calls) == (2 if k * value * value < 1 << 31 else 0)


def test_auto_backend_equals_blas_where_it_picks_torch(monkeypatch):
    """auto picks torch only where _int_mm has its oneDNN kernel; the integers are the same either way."""
    pytest.importorskip("torch")
    import refsim.gemm as gemm

    rng = np.random.default_rng(3)
    a = rng.integers(-128, 128, size=(256, 256), dtype=np.int8)
    b = rng.integers(-128, 128, size=(256, 256), dtype=np.int8)
    want = exact_matmul(a, b, backend="blas")
    monkeypatch.setattr(gemm, "_torch_int8_is_fast", lambda: True)
    calls = []
    real = gemm._torch_int_mm
    monkeypatch.setattr(gemm, "_torch_int_mm", lambda x, y: calls.append(1) or real(x, y))
    assert np.array_equal(refsim.int_gemm(a, b, spec=acc_spec()), want) and calls == [1]
    monkeypatch.setattr(gemm, "_torch_int8_is_fast", lambda: False)
    assert np.array_equal(refsim.int_gemm(a, b, spec=acc_spec()), want) and calls == [1]


def test_operands_need_no_copy_or_pass_in_their_own_dtype():
    """An int8 operand's range is its dtype's (no pass over the data); a wider one is read once,
    and the 16-bit check names the first offending element."""
    from refsim.gemm import _operand

    x = np.arange(-8, 8, dtype=np.int8).reshape(4, 4)
    op = _operand(x, "a")
    assert op.values is x and (op.lo, op.hi, op.scanned) == (-128, 127, False)
    op = _operand(x.astype(np.int32).T, "a")  # a transposed view: read in memory order, not copied
    assert (op.lo, op.hi, op.scanned) == (-8, 7, True)
    with pytest.raises(ValueError, match=r"a\(1, 2\) = -40000 is outside"):
        _operand(np.array([[0, 0, 0], [0, 1, -40000]], dtype=np.int32), "a")


# (ma, mb): operand magnitudes whose float32 chunk 2^24 // (ma * mb) the fast path uses: int4 x int4
# (2^18, the longest), symmetric int4 (342392), uint4 (74565), int8 (1024), symmetric int8 (1040), uint8 (258)
LONG_CHUNKS = [(8, 8), (7, 7), (15, 15), (128, 128), (127, 127), (255, 255)]


@settings(max_examples=12)
@given(data=st.data())
def test_k_past_every_chunk_length_of_the_fast_path(data):
    """K one below, at, one past and two chunks past each float32 chunk length in use, up to int4's 2^18
    (K = 2^19 + 1), at the bound (every product +-ma*mb) or random; against the ascending-k twin under a
    drawn accumulator. (A float64 chunk is at least 2^21: test_float64_chunk_boundary_both_sides.)"""
    ma, mb = data.draw(st.sampled_from(LONG_CHUNKS), label="ma, mb")
    c = (1 << 24) // (ma * mb)
    k = data.draw(st.sampled_from([c - 1, c, c + 1, 2 * c + 1]), label="k")
    unsigned = ma in (15, 255)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    lo = 0 if unsigned else -ma
    if data.draw(st.booleans(), label="at the bound"):
        a = np.full((1, k), ma if unsigned else -ma, dtype=np.int64)
        b = np.full((k, 2), mb if unsigned else -mb, dtype=np.int64)
        b[-1, 1] = 0 if unsigned else mb  # the last product flips: one output just under the bound
    else:
        a = rng.integers(lo, ma + 1, (1, k))
        b = rng.integers(0 if unsigned else -mb, mb + 1, (k, 2))
    spec = data.draw(acc_specs.filter(lambda s: s.acc_bits >= 20), label="spec")
    al = a[0].tolist()
    dots = [sum(x * y for x, y in zip(al, col, strict=True)) for col in b.T.tolist()]
    assert exact_matmul(a, b, backend="blas").tolist() == [dots]
    try:
        want = int_gemm_scalar(a.tolist(), b.tolist(), spec=spec)
    except OverflowError as exc:
        mm, nn, kk = exc.args[0]
        for x, y in ((a, b), (_narrowest(a), _narrowest(b))):
            with pytest.raises(ValueError, match=f"at output \\(m={mm}, n={nn}\\), k={kk}"):
                refsim.int_gemm(x, y, spec=spec)
        return
    for x, y in ((a, b), (_narrowest(a), _narrowest(b))):
        assert refsim.int_gemm(x, y, spec=spec).tolist() == want


@given(spec=acc_specs, data=st.data())
def test_torch_path_equals_the_twin_without_copies(spec, data):
    """backend='torch' on int8 arrays (padded shapes included: M <= 16, K and N not multiples of 8) equals
    the ascending-k twin under any accumulator; where acc_bits <= 32 the int32 result is _int_mm's own."""
    pytest.importorskip("torch")
    m, k, n = data.draw(st.integers(1, 20)), data.draw(st.integers(1, 40)), data.draw(st.integers(1, 12))
    a = int_matrix(data.draw, (m, k), -128, 127).astype(np.int8)
    b = int_matrix(data.draw, (k, n), -128, 127).astype(np.int8)
    try:
        want = int_gemm_scalar(a.tolist(), b.tolist(), spec=spec)
    except OverflowError:
        with pytest.raises(ValueError, match="accumulator overflow"):
            refsim.int_gemm(a, b, spec=spec, backend="torch")
        return
    got = refsim.int_gemm(a, b, spec=spec, backend="torch")
    assert got.dtype == (np.int32 if spec.acc_bits <= 32 else np.int64) and got.tolist() == want
