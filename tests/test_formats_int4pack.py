"""torch int4pack (CPU): refsim's packer equals torch._convert_weight_to_int4pack_for_cpu byte for byte, reads
back exactly, and torch._weight_int4pack_mm_for_cpu on the written weights computes the tinygemm dequantization."""

import numpy as np
import pytest
from formats_cases import gptq_result

torch = pytest.importorskip("torch")

import refsim  # noqa: E402
from refsim.formats import int4pack  # noqa: E402


@pytest.mark.parametrize("n", [16, 32, 48, 64, 80])
@pytest.mark.parametrize("k", [32, 64, 128])
def test_packer_equals_torch(n, k):
    rng = np.random.default_rng(n * k)
    q = rng.integers(0, 16, size=(n, k))
    theirs = torch._convert_weight_to_int4pack_for_cpu(torch.from_numpy(q.astype(np.int32)), 2).numpy()
    ours = int4pack.pack_weight(q)
    assert np.array_equal(ours, theirs)
    assert np.array_equal(int4pack.unpack_weight(ours, k), q)


@pytest.mark.parametrize("groupsize", [32, 64])
def test_gptq_result_through_the_kernel(groupsize):
    n, k = 48, 128
    r = gptq_result(n=n, k=k, bits=4, groupsize=groupsize, seed=groupsize)
    t = int4pack.write(r.codes, r.scale, r.zero, groupsize=groupsize)
    codes, scale, zf, g_idx = int4pack.read(t, k=k)
    assert np.array_equal(codes, r.codes.astype(np.int64)) and np.array_equal(g_idx, r.g_idx)
    assert np.array_equal(scale, np.asarray(r.scale, np.float32))
    y = torch._weight_int4pack_mm_for_cpu(torch.eye(k, dtype=torch.float32), torch.from_numpy(t["weight"]),
                                          groupsize, torch.from_numpy(t["scales_and_zeros"])).numpy()
    fused = refsim.dequantize_float_zero(codes, scale, zf, form="tinygemm_fused", axis=1, block_size=groupsize)
    assert np.array_equal(y.T.view(np.int32), fused.view(np.int32))  # the kernel's dequantization is one FMA
    unfused = refsim.dequantize_float_zero(codes, scale, zf, form="tinygemm", axis=1, block_size=groupsize)
    assert not np.array_equal(unfused, fused)  # torchao's Python reference rounds twice: ~10% differ by an ulp
    # against GPTQ's own fl(s (q - z)): three roundings apart (the float zero, the FMA and GPTQ's product)
    exact = r.dequantize()
    bound = 3 * np.maximum(np.abs(exact), np.abs(np.repeat(zf, groupsize, 1))) * 2.0**-24
    assert np.all(np.abs(fused - exact) <= bound)
