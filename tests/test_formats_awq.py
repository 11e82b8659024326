"""AWQ (AutoAWQ WQLinear_GEMM) tensors: the interleaved nibble order, round trips, and AutoAWQ's packing loop."""

import numpy as np
import pytest
from formats_cases import gptq_result

from refsim.formats import awq


def autoawq_pack(intweight_kn):
    """AutoAWQ WQLinear_GEMM.from_linear, literally: word col |= intweight[:, 8 col + order_map[i]] << 4 i."""
    order_map = [0, 2, 4, 6, 1, 3, 5, 7]
    k, n = intweight_kn.shape
    iw = intweight_kn.astype(np.uint32)
    q = np.zeros((k, n // 8), dtype=np.uint32)
    for col in range(n // 8):
        for i in range(8):
            q[:, col] |= iw[:, col * 8 + order_map[i]] << (i * 4)
    return q.view(np.int32)


def test_interleave_of_one_word():
    codes = np.arange(8)[None, :].repeat(8, axis=0).T  # (N=8, K=8): output n has code n
    t = awq.write(codes, np.ones((8, 1)), np.zeros((8, 1), np.int64), group_size=8)
    assert f"{int(t['qweight'][0, 0]) & 0xFFFFFFFF:08x}" == "75316420"  # nibbles 0, 2, 4, 6, 1, 3, 5, 7


@pytest.mark.parametrize("group_size", [16, 32, 64])
def test_round_trip_and_autoawq_packing(group_size):
    r = gptq_result(n=32, k=64, bits=4, groupsize=group_size, seed=group_size)
    t = awq.write(r.codes, r.scale, r.zero, group_size=group_size)
    assert np.array_equal(t["qweight"], autoawq_pack(np.asarray(r.codes).T))
    assert np.array_equal(t["qzeros"], autoawq_pack(np.asarray(r.zero).T))
    codes, scale, zero, g_idx = awq.read(t, group_size=group_size)
    assert np.array_equal(codes, r.codes.astype(np.int64)) and np.array_equal(zero, np.asarray(r.zero, np.int64))
    assert np.array_equal(g_idx, r.g_idx.astype(np.int64))
    assert np.array_equal(scale, np.asarray(r.scale).astype(np.float16).astype(np.float32))


def test_errors():
    with pytest.raises(ValueError, match="N=12 is not a multiple of 8"):
        awq.write(np.zeros((12, 32), np.int64), np.ones((12, 1)), np.zeros((12, 1), np.int64), group_size=32)
    with pytest.raises(ValueError, match="consecutive runs of group_size=16"):
        awq.write(np.zeros((8, 32), np.int64), np.ones((8, 1)), np.zeros((8, 1), np.int64), group_size=16)
