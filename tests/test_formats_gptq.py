"""GPTQ v1 (AutoGPTQ) and v2 (GPTQModel) QuantLinear tensors: refsim GPTQ results out and back, exactly; and the
v1 packing checked against a transcription of AutoGPTQ's ``QuantLinear.pack`` loop (4 bits)."""

import numpy as np
import pytest
from formats_cases import gptq_result

import refsim
from refsim.formats import gptq


def autogptq_pack_4bit(intweight_kn, zeros_gn):
    """AutoGPTQ QuantLinear.pack for bits == 4, literally: eight rows of K per int32 word; qzeros of zero - 1."""
    k, n = intweight_kn.shape
    iw = intweight_kn.astype(np.uint32)
    qweight = np.zeros((k // 8, n), dtype=np.uint32)
    for row in range(k // 8):
        for j in range(8):
            qweight[row] |= iw[row * 8 + j] << (4 * j)
    z = (zeros_gn - 1).astype(np.uint32)
    qzeros = np.zeros((z.shape[0], n // 8), dtype=np.uint32)
    for col in range(n // 8):
        for j in range(8):
            qzeros[:, col] |= z[:, col * 8 + j] << (4 * j)
    return qweight.view(np.int32), qzeros.view(np.int32)


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("groupsize,act_order", [(32, False), (None, False), (32, True), (16, True)])
def test_round_trip_is_exact(bits, version, groupsize, act_order):
    r = gptq_result(n=32, k=64, bits=bits, groupsize=groupsize, act_order=act_order, seed=bits)
    zero = np.asarray(r.zero)
    if version == 1 and (zero == 0).any():
        with pytest.raises(ValueError, match="do not fit GPTQ v1 qzeros"):
            gptq.write(r.codes, r.scale, zero, r.g_idx, bits=bits, version=1)
        zero = np.maximum(zero, 1)  # what the rest of this test writes
    t = gptq.write(r.codes, r.scale, zero, r.g_idx, bits=bits, version=version)
    assert t["qweight"].dtype == np.int32 and t["qweight"].shape == (64 * bits // 32, 32)
    codes, scale, z, g_idx = gptq.read(t, bits=bits, version=version, in_features=64)
    assert np.array_equal(codes, r.codes.astype(np.int64)) and np.array_equal(z, zero.astype(np.int64))
    assert np.array_equal(g_idx, r.g_idx.astype(np.int64))
    assert np.array_equal(scale, np.asarray(r.scale).astype(np.float16).astype(np.float32))  # stored as fp16
    t2 = gptq.write(codes, scale, z, g_idx, bits=bits, version=version)
    assert all(np.array_equal(t[key], t2[key]) for key in t)  # read then write gives the same tensors
    w = refsim.dequantize(codes.astype(np.int32), scale, z, axis=1, clusters=g_idx)
    assert np.array_equal(w, refsim.dequantize(r.codes.astype(np.int32), scale, zero, axis=1, clusters=r.g_idx))


def test_v1_qweight_and_qzeros_equal_autogptq_pack():
    r = gptq_result(n=16, k=64, bits=4, groupsize=32, seed=3)
    zero = np.maximum(np.asarray(r.zero), 1)
    t = gptq.write(r.codes, r.scale, zero, r.g_idx, bits=4, version=1)
    qw, qz = autogptq_pack_4bit(np.asarray(r.codes).T, zero.T)
    assert np.array_equal(t["qweight"], qw) and np.array_equal(t["qzeros"], qz)
    assert np.array_equal(gptq.write(r.codes, r.scale, zero, r.g_idx, bits=4, version=2)["qzeros"],
                          autogptq_pack_4bit(np.asarray(r.codes).T, zero.T + 1)[1])  # v2: the zeros themselves


def test_errors():
    with pytest.raises(ValueError, match="bits=5 is not allowed"):
        gptq.write(np.zeros((8, 32)), np.ones((8, 1)), np.ones((8, 1)), np.zeros(32), bits=5)
    with pytest.raises(ValueError, match="version=3 is not allowed"):
        gptq.read({}, bits=4, version=3)
