"""ONNX Runtime MatMulNBits initializers: refsim GPTQ results written, read back exactly, and run by ORT's own
MatMulNBits on the identity, which returns the dequantized weight bit for bit (refsim.dequantize)."""

import numpy as np
import pytest
from formats_cases import gptq_result

ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

import refsim  # noqa: E402
from refsim.formats import matmul_nbits  # noqa: E402


def run_matmul_nbits(t, k, n, block, a):
    nb = -(-k // block)
    inputs = [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", k])]
    inits = [helper.make_tensor("B", TensorProto.UINT8, [n, nb, block // 2], t["B"].tobytes(), raw=True),
             helper.make_tensor("scales", TensorProto.FLOAT, [n * nb], t["scales"].tobytes(), raw=True)]
    names = ["A", "B", "scales"]
    if "zero_points" in t:
        inits.append(helper.make_tensor("zero_points", TensorProto.UINT8, [t["zero_points"].size],
                                        t["zero_points"].tobytes(), raw=True))
        names.append("zero_points")
    node = helper.make_node("MatMulNBits", names, ["Y"], domain="com.microsoft", K=k, N=n, bits=4, block_size=block)
    g = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 10
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"A": a})[0]


@pytest.mark.parametrize("block", [16, 32, 64])
@pytest.mark.parametrize("sym", [True, False])
def test_round_trip_and_ort_runs_it(block, sym):
    k, n = 128, 24
    r = gptq_result(n=n, k=k, bits=4, groupsize=block, sym=sym, seed=block)
    t = matmul_nbits.write(r.codes, r.scale, None if sym else r.zero, block=block)
    codes, scale, zero, g_idx = matmul_nbits.read(t, k=k, n=n, block=block)
    assert np.array_equal(codes, r.codes.astype(np.int64)) and np.array_equal(zero, np.asarray(r.zero, np.int64))
    assert np.array_equal(scale.view(np.int32), np.asarray(r.scale, np.float32).view(np.int32))
    y = run_matmul_nbits(t, k, n, block, np.eye(k, dtype=np.float32))
    want = refsim.dequantize(codes.astype(np.int32), scale, zero, axis=1, block_size=block)
    assert np.array_equal(y.T.view(np.int32), want.view(np.int32))
    assert np.array_equal(want, r.dequantize())  # the same weights refsim's GPTQ produced
