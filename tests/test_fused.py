"""refsim.fused: the tiled per-cluster product with its epilogue fused equals qmatmul's y bit for bit."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refsim
from refsim.fused import fused_qmatmul
from refsim.qtensor import cluster_ranges, fixed_quantize, gptq_form_quantize, qmatmul, rptq_quantize, weight_tensor

RPTQ = refsim.preset("rptq")


def _bits(y):
    return np.asarray(y, dtype=np.float32).view(np.uint32)


@st.composite
def cluster_product(draw):
    m, n, k = draw(st.integers(1, 40)), draw(st.integers(1, 24)), draw(st.integers(1, 48))
    c = draw(st.integers(1, min(k, 8)))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    ids = rng.permutation(np.concatenate([np.arange(c), rng.integers(0, c, k - c)])).astype(np.int64)
    abits, wbits = draw(st.sampled_from([3, 4, 8])), draw(st.sampled_from([3, 4]))
    x = (rng.standard_normal((m, k)) * draw(st.sampled_from([0.01, 1.0, 30.0]))).astype(np.float32)
    x += np.float32(draw(st.sampled_from([0.0, 5.0, -40.0])))  # ranges that exclude 0: zero points outside the codes
    lo, hi = cluster_ranges(x.min(axis=0) - 0.5, x.max(axis=0) + 0.5, ids, c)
    a = rptq_quantize(x, lo, hi, ids, bits=abits, spec=RPTQ)
    codes = rng.integers(0, 1 << wbits, (n, k))
    scale = (rng.random((n, c)) * 0.1 + 1e-3).astype(np.float16).astype(np.float32)
    zero = rng.integers(0, 1 << wbits, (n, c))
    w = weight_tensor(codes, scale, zero, ids, bits=wbits)
    bias = rng.standard_normal(n).astype(np.float32) if draw(st.booleans()) else None
    return a, w, bias, draw(st.sampled_from([None, 1, 3, 16]))


@settings(max_examples=150, deadline=None)
@given(cluster_product())
def test_fused_equals_qmatmul_per_cluster(p):
    """RPTQ's product: per-cluster activations x per-row x per-input-cluster weights, any tiling of the rows."""
    a, w, bias, rows = p
    want = qmatmul(a, w, bias, spec=RPTQ)[1]
    got = fused_qmatmul(a, w, bias, spec=RPTQ, rows=rows)
    assert got is not None and got.dtype == np.float32
    assert np.array_equal(_bits(got), _bits(want))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 64), st.integers(1, 16), st.integers(0, 2**31), st.sampled_from([4, 8]))
def test_fused_equals_qmatmul_per_tensor_times_per_row(t, d, seed, bits):
    """Attention's P V: fixed-scale unsigned probabilities (one cluster) x V^T with one pair per row."""
    rng = np.random.default_rng(seed)
    p = rng.random((t, t)).astype(np.float32)
    p /= p.sum(axis=1, keepdims=True)
    probs = fixed_quantize(p, np.float16(1 / 255), 0, bits=8, signed=False, spec=RPTQ)
    v = rng.standard_normal((d, t)).astype(np.float32)
    s = (np.abs(v).max(axis=1) / 7 + 1e-3).astype(np.float32)
    vq = gptq_form_quantize(v, s, np.full(d, 8), bits=bits, axis=0)
    want = qmatmul(probs, vq, spec=RPTQ)[1]
    got = fused_qmatmul(probs, vq, spec=RPTQ, rows=7)
    assert got is not None and np.array_equal(_bits(got), _bits(want))


def test_fused_declines_where_float32_or_the_accumulator_could_round():
    """The bound decides: a 12-bit accumulator (sums may leave it) and 16-bit codes over a long K both go
    to qmatmul (None), and qmatmul's accumulator rule still applies there."""
    rng = np.random.default_rng(0)
    k = 64
    ids = np.zeros(k, np.int64)
    x = rng.standard_normal((8, k)).astype(np.float32)
    a = rptq_quantize(x, np.array([-4.0], np.float32), np.array([4.0], np.float32), ids, bits=8, spec=RPTQ)
    w = weight_tensor(rng.integers(0, 16, (5, k)), np.full((5, 1), 0.01, np.float32), np.zeros((5, 1), np.int64),
                      ids, bits=4)
    small = RPTQ.replace(acc_bits=12, acc_overflow="saturate")
    assert fused_qmatmul(a, w, spec=small) is None
    assert fused_qmatmul(a, w, spec=RPTQ) is not None
    big = rptq_quantize(np.repeat(x, 400, axis=1), np.array([-4.0], np.float32), np.array([4.0], np.float32),
                        np.zeros(k * 400, np.int64), bits=16, spec=RPTQ)
    wbig = weight_tensor(rng.integers(0, 16, (5, k * 400)), np.full((5, 1), 0.01, np.float32),
                         np.zeros((5, 1), np.int64), np.zeros(k * 400, np.int64), bits=4)
    assert fused_qmatmul(big, wbig, spec=RPTQ.replace(acc_bits=64)) is None


def test_fused_refuses_bad_arguments():
    a = rptq_quantize(np.ones((2, 4), np.float32), np.array([0.0], np.float32), np.array([1.0], np.float32),
                      np.zeros(4, np.int64), bits=4, spec=RPTQ)
    w = weight_tensor(np.ones((3, 5), np.int64), np.ones((3, 1), np.float32), np.zeros((3, 1), np.int64),
                      np.zeros(5, np.int64), bits=4)
    with pytest.raises(ValueError, match="agree on K"):
        fused_qmatmul(a, w, spec=RPTQ)
    with pytest.raises(TypeError, match="NumericsSpec"):
        fused_qmatmul(a, a, spec="rptq")


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.integers(1, 16), st.integers(0, 2**31), st.sampled_from([None, 1, 5, 32]),
       st.booleans())
def test_causal_skips_change_nothing_that_is_read(t, d, seed, rows, leak):
    """causal_out equals qmatmul then the mask; causal_in on causal probabilities equals the full sum (and a
    matrix that is not causal, ``leak``, is summed in full, so it equals too)."""
    rng = np.random.default_rng(seed)
    c = min(d, 4)
    ids = rng.permutation(np.arange(d) % c)
    q = rptq_quantize(rng.standard_normal((t, d)).astype(np.float32), -np.ones(c, np.float32) * 3,
                      np.ones(c, np.float32) * 3, ids, bits=4, spec=RPTQ)
    k = rptq_quantize(rng.standard_normal((t, d)).astype(np.float32), -np.ones(c, np.float32) * 3,
                      np.ones(c, np.float32) * 3, ids, bits=4, spec=RPTQ)
    kw = weight_tensor(np.asarray(k.codes) + 8, np.broadcast_to(k.scale, (t, c)), np.broadcast_to(k.zero + 8, (t, c)),
                       ids, bits=4)
    want = qmatmul(q, kw, spec=RPTQ)[1]
    want[np.triu(np.ones((t, t), dtype=bool), k=1)] = -np.inf
    got = fused_qmatmul(q, kw, spec=RPTQ, rows=rows, causal_out=True)
    assert np.array_equal(_bits(got), _bits(want))
    p = np.tril(rng.random((t, t))).astype(np.float32)
    if leak and t > 1:
        p[0, t - 1] = 0.5
    probs = fixed_quantize(p, np.float16(1 / 255), 0, bits=8, signed=False, spec=RPTQ)
    v = gptq_form_quantize(rng.standard_normal((d, t)).astype(np.float32), np.full(d, 0.3, np.float32),
                           np.full(d, 8), bits=4, axis=0)
    want = qmatmul(probs, v, spec=RPTQ)[1]
    got = fused_qmatmul(probs, v, spec=RPTQ, rows=rows, causal_in=True)
    assert np.array_equal(_bits(got), _bits(want))
