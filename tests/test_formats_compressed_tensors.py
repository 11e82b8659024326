"""compressed-tensors pack-quantized: refsim GPTQ results written, read back exactly, and read by
compressed-tensors' own ``unpack_from_int32`` (the independent implementation) to the same signed codes."""

import numpy as np
import pytest
from formats_cases import gptq_result

torch = pytest.importorskip("torch")
helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")

from refsim.formats import compressed_tensors as ctf  # noqa: E402


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("groupsize", [16, 32])
def test_round_trip_and_the_library_reads_it(bits, sym, groupsize):
    r = gptq_result(n=32, k=64, bits=bits, groupsize=groupsize, sym=sym, seed=bits + groupsize)
    half = 1 << (bits - 1)
    t = ctf.write(r.codes, r.scale, None if sym else r.zero, bits=bits)
    codes, scale, zero, g_idx = ctf.read(t, bits=bits)
    assert np.array_equal(codes, r.codes.astype(np.int64)) and np.array_equal(zero, np.asarray(r.zero, np.int64))
    assert np.array_equal(scale.view(np.int32), np.asarray(r.scale, np.float32).view(np.int32))
    assert np.array_equal(g_idx, r.g_idx.astype(np.int64))
    theirs = helpers.unpack_from_int32(torch.from_numpy(t["weight_packed"]), bits, torch.Size((32, 64)))
    assert np.array_equal(theirs.numpy().astype(np.int64), r.codes.astype(np.int64) - half)
    ours = helpers.pack_to_int32(torch.from_numpy((r.codes.astype(np.int64) - half).astype(np.int8)), bits)
    assert np.array_equal(ours.numpy(), t["weight_packed"])
    if not sym:
        zp = helpers.pack_to_int32(torch.from_numpy((np.asarray(r.zero) - half).astype(np.int8)), bits, packed_dim=0)
        assert np.array_equal(zp.numpy(), t["weight_zero_point"])
