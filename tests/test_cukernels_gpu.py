"""The CuPy kernels on a CUDA device, validated by the harness (skipped cleanly without cupy or a GPU).

Run with ``make test-gpu`` (pytest -m gpu). Each bit-exact kernel must show zero mismatches
over its campaign; the W4A16 / W3A16 kernel stays within its stated float bound.
"""

import numpy as np
import pytest

from cukernels import harness, host
from cukernels.compile import gpu_available

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not gpu_available(), reason="needs cupy and a CUDA device")]

CAMPAIGN = 300


@pytest.fixture(scope="module")
def launch():
    from cukernels import launch

    return launch


@pytest.mark.parametrize("target", ["lowbit_gemm", "ln_quant", "sdr_encode", "sdr_gemm", "wxa16"])
def test_kernel_has_zero_mismatches(launch, target):
    kernel = launch.KERNELS[target][0]
    report = harness.validate(kernel, target, max_examples=CAMPAIGN, seed=2024, xp="cupy")
    assert report.ok, report.format()


def test_lowbit_gemm_from_torch_tensors(launch):
    pytest.importorskip("torch")
    report = harness.validate(launch.lowbit_gemm, "lowbit_gemm", max_examples=50, seed=7, xp="torch")
    assert report.ok, report.format()


def test_large_lowbit_gemm_with_many_clusters(launch):
    params = harness.CaseParams("lowbit_gemm", m=333, n=517, k=0, seed=11, bits=4,
                                cluster_sizes=(1, 31, 33, 64, 100, 250, 7, 500))
    res = harness.run_case(launch.lowbit_gemm, params, xp="cupy")
    assert res.ok, res.mismatches


def test_unsupported_input_is_refused_before_launch(launch):
    import cupy as cp

    with pytest.raises(ValueError, match="overflow='saturate' is not supported"):
        launch.sdr_gemm(a_codes=cp.zeros((1, 8), cp.uint8), a_flags=cp.zeros((1, 1), cp.uint8),
                        w_codes=cp.zeros((1, 8), cp.uint8), w_flags=cp.zeros((1, 1), cp.uint8), k=16,
                        group_size=16, overflow="saturate")
    with pytest.raises(TypeError, match="x must have dtype int16 or int8"):
        launch.sdr_encode(x=cp.zeros((2, 32), cp.int32), group_size=16, base_bits=16)
    with pytest.raises(ValueError, match="outside the symmetric base range"):
        launch.sdr_encode(x=cp.full((1, 16), -32768, cp.int16), group_size=16, base_bits=16)
    with pytest.raises(ValueError, match="not finite"):
        plan = host.ln_quant_plan(np.arange(4), [4])
        x = cp.asarray(np.array([[0, np.nan, 1, 2]], np.float32))
        launch.ln_quant(x=x, gamma=cp.ones(4, cp.float32), beta=cp.zeros(4, cp.float32), eps=1e-5,
                        src_index=plan["src_index"], cluster_of=plan["cluster_of"],
                        scale=np.ones(1, np.float32), zero=np.zeros(1, np.int32), bits=4)
