"""refsim.qtensor: the quantized-tensor type, its quantizers, qgemm and the epilogue, against scalar twins."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refsim
from refsim.qtensor import (
    Granularity,
    QuantizedTensor,
    absmax_quantize,
    cluster_ranges,
    fixed_quantize,
    gptq_form_quantize,
    qgemm,
    qmatmul,
    rptq_quantize,
    sdr_quantize,
    weight_tensor,
)
from refsim.rptq.scalar import cluster_matmul_scalar
from refsim.scalar import dequantize_scalar, quantize_scalar, rptq_params_scalar
from refsim.sdr_scalar import sdr_gemm_scalar

ACC64 = refsim.preset("onnx").replace(acc_bits=64)  # a 64-bit wrapping accumulator: no sum leaves it


@st.composite
def cluster_problem(draw):
    m, n, k = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 9))
    c = draw(st.integers(1, k))
    ids = np.array(draw(st.lists(st.integers(0, c - 1), min_size=k, max_size=k)), dtype=np.int64)
    ids[:c] = np.arange(c)
    ids = np.random.default_rng(draw(st.integers(0, 99))).permutation(ids)
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    bits = draw(st.sampled_from([3, 4, 8]))
    x = (rng.standard_normal((m, k)) * draw(st.sampled_from([0.01, 1.0, 50.0]))).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    return x, w, ids, c, bits


@given(cluster_problem())
def test_rptq_quantize_equals_scalar_twin(p):
    """Every code and dequantized value of the per-cluster RPTQ recipe, one element at a time from the formula."""
    x, _, ids, c, bits = p
    lo, hi = cluster_ranges(x.min(axis=0) - 1, x.max(axis=0) + 1, ids, c)  # a one-point range overflows z in fp16
    qt = rptq_quantize(x, lo, hi, ids, bits=bits)
    assert qt.granularity is Granularity.CLUSTER and qt.n_clusters == c and qt.signed
    spec = refsim.preset("rptq")
    deq = qt.dequantize()
    for cl in range(c):
        s, z = rptq_params_scalar(float(lo[cl]), float(hi[cl]), bits, spec=spec)
        assert float(qt.scale[cl]) == float(s) and int(qt.zero[cl]) == int(z)
    for (m, k), v in np.ndenumerate(x):
        cl = ids[k]
        q = quantize_scalar(float(v), float(qt.scale[cl]), int(qt.zero[cl]), bits=bits, spec=spec)
        assert int(qt.codes[m, k]) == q
        assert float(deq[m, k]) == float(dequantize_scalar(q, float(qt.scale[cl]), int(qt.zero[cl])))


@given(cluster_problem())
def test_qmatmul_equals_scalar_twin(p):
    """qgemm + epilogue of an RPTQ activation and GPTQ-form weight equal the per-cluster scalar twin (sums and
    float32 bits), and a K permutation (both operands and the ids) changes no sum."""
    x, w, ids, c, bits = p
    lo, hi = cluster_ranges(x.min(axis=0) - 1, x.max(axis=0) + 1, ids, c)
    a = rptq_quantize(x, lo, hi, ids, bits=bits)
    onehot = ids[None, :] == np.arange(c)[:, None]
    wlo = np.stack([np.where(onehot[g], w, np.inf).min(axis=1) for g in range(c)], axis=1)
    whi = np.stack([np.where(onehot[g], w, -np.inf).max(axis=1) for g in range(c)], axis=1)
    sw, zw = refsim.gptq_params(wlo, whi, bits=4, spec=refsim.preset("gptq"))
    wq = gptq_form_quantize(w, sw, zw, bits=4, axis=1, clusters=ids)
    bias = np.linspace(-1, 1, w.shape[0]).astype(np.float32)
    isums, y = qmatmul(a, wq, bias, spec=ACC64)
    s_isums, s_y = cluster_matmul_scalar(a.codes, a.zero, a.scale, wq.codes, wq.zero, wq.scale, ids, c, bias=bias)
    assert np.array_equal(isums, np.array(s_isums, dtype=np.int64))
    assert np.array_equal(y.view(np.int32), s_y.view(np.int32))
    perm = np.random.default_rng(c).permutation(ids.size)
    ap = QuantizedTensor(a.codes[:, perm], a.scale, a.zero, a.granularity, a.bits, a.signed, a.spec, axis=-1,
                         clusters=ids[perm])
    wp = weight_tensor(wq.codes[:, perm], wq.scale, wq.zero, ids[perm], bits=4)
    assert np.array_equal(qgemm(ap, wp, spec=ACC64), isums)


@settings(max_examples=40)
@given(st.integers(1, 5), st.integers(1, 40), st.integers(1, 4), st.sampled_from([8, 16, 32]), st.integers(0, 2**31))
def test_sdr_qgemm_equals_scalar_twin(m, k, n, g, seed):
    """SDR tensors: qgemm of a (M, K) and a weight (N, K) equals the decompression-free scalar MAC on (K, N)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_t(3, (m, k)) * 4).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    sx = refsim.absmax_params(x, bits=16, spec=refsim.preset("qrazor"))
    sw = refsim.absmax_params(w, bits=8, axis=0, spec=refsim.preset("qrazor"))
    a = sdr_quantize(x, sx, base_bits=16, keep=3, group_size=g, axis=1)
    b = sdr_quantize(w, sw, base_bits=8, keep=3, group_size=g, axis=1, scale_axis=0)
    acc = qgemm(a, b, spec=ACC64)
    ref = sdr_gemm_scalar(a.codes.tolist(), a.sdr.flags.tolist(), b.codes.T.tolist(), b.sdr.flags.T.tolist(),
                          group_size=g, spec=ACC64)
    assert np.array_equal(acc, np.array(ref, dtype=np.int64).reshape(m, n))
    # its value: decode(codes, flags) * s, elementwise
    dec = refsim.sdr_decode(b.codes, b.sdr.flags, group_size=g, axis=1)
    assert np.array_equal(b.dequantize(), refsim.dequantize(dec, sw, axis=0))


@given(st.integers(1, 5), st.integers(1, 70), st.sampled_from(["int4_lo_first", "int4_word32", "int3_gptq",
                                                                "int3_planar", "int3_stream"]),
       st.integers(0, 2**31))
def test_pack_round_trip(rows, cols, layout, seed):
    """pack(layout) keeps the codes: unpacked() gives them back, and words are refsim.pack's bytes."""
    bits = 4 if layout.startswith("int4") else 3
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    s, z = refsim.gptq_params(w.min(axis=1), w.max(axis=1), bits=bits, spec=refsim.preset("gptq"))
    qt = gptq_form_quantize(w, s, z, bits=bits, axis=0)
    packed = qt.pack(layout)
    assert packed.layout == layout and qt.words is None
    assert np.array_equal(packed.words, refsim.pack(qt.codes, layout, signed=False))
    assert np.array_equal(packed.unpacked(), qt.codes)
    assert np.array_equal(packed.dequantize(), qt.dequantize())


def test_absmax_and_fixed_quantizers():
    x = np.array([[-3.0, 0.5, 2.0, 7.0]], dtype=np.float32)
    s = refsim.absmax_params(x, bits=8, spec=refsim.preset("qrazor"))
    qt = absmax_quantize(x, s, bits=8)
    assert qt.granularity is Granularity.TENSOR and qt.codes.max() == 127
    assert np.array_equal(qt.codes, refsim.quantize(x, s, bits=8, spec=refsim.preset("qrazor")))
    p = fixed_quantize(np.array([0.0, 0.5, 1.0], np.float32), np.float16(1 / 255), 0, bits=8, signed=False,
                       spec=refsim.preset("rptq"))
    assert p.codes.tolist() == [0, 128, 255] and not p.signed


def test_gptq_result_is_a_quantized_tensor():
    from refsim.rptq.gptq import rtn_quantize

    w = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    res = rtn_quantize(w, bits=4, groups=np.repeat([0, 1], 4))
    qt = res.qtensor()
    assert qt.granularity is Granularity.CLUSTER and not qt.signed and qt.bits == 4
    assert np.array_equal(qt.dequantize(), res.dequantize())


def test_razored_tensor_round_trip():
    from refsim.qrazor import RazoredTensor, razor

    x = np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32)
    s = refsim.absmax_params(x, bits=16, spec=refsim.preset("qrazor"))
    r = razor(x, s, base_bits=16, keep=3, group_size=16, axis=1, spec=refsim.preset("qrazor"))
    qt = r.qtensor()
    back = RazoredTensor.from_qtensor(qt)
    for f in ("base", "codes", "flags"):
        assert np.array_equal(getattr(back, f), getattr(r, f))
    assert np.array_equal(qt.dequantize(), refsim.dequantize(refsim.sdr_decode(r.codes, r.flags, group_size=16), s))


def test_bad_arguments():
    x = np.zeros((2, 3), np.int32)
    with pytest.raises(ValueError, match="needs an axis"):
        QuantizedTensor(x, np.ones(1), np.zeros(1), Granularity.AXIS, 4, True, None)
    with pytest.raises(ValueError, match="needs clusters"):
        QuantizedTensor(x, np.ones(1), np.zeros(1), Granularity.CLUSTER, 4, True, None, axis=1)
    a = QuantizedTensor(x, np.ones(()), np.zeros(()), Granularity.TENSOR, 4, True, None)
    b = QuantizedTensor(np.zeros((2, 4), np.int32), np.ones(()), np.zeros(()), Granularity.TENSOR, 4, True, None)
    with pytest.raises(ValueError, match="agree on K"):
        qgemm(a, b, spec=ACC64)
    with pytest.raises(ValueError, match="not packed"):
        a.unpacked()
