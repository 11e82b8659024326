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

CAMPAIGN = 100  # per target here; `make gpu-campaign` runs at least 10^4 per bit-exact kernel


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


@pytest.mark.parametrize("m", range(1, 17))
def test_wxa16_every_m_over_several_chunks_and_blocks(launch, m):
    """Each (BITS, M) instantiation, K over three 1024-code chunks of x, N over several blocks of columns."""
    for bits in (4, 3):
        params = harness.CaseParams("wxa16", m=m, n=150, k=2500 + m, seed=m, bits=bits, group_size=96, offset=1,
                                    row_pad=3)
        res = harness.run_case(launch.wxa16, params, xp="cupy")
        assert res.ok, (res.error, res.mismatches)


def test_lowbit_gemm_spanning_many_blocks_and_k_tiles(launch):
    params = harness.CaseParams("lowbit_gemm", m=700, n=300, k=0, seed=3, bits=3, fill="alternating",
                                cluster_sizes=(97, 1, 64, 33, 200, 5, 31, 300, 90, 64), use_bias=True)
    res = harness.run_case(launch.lowbit_gemm, params, xp="cupy")
    assert res.ok, (res.error, res.mismatches)


def test_grids_past_the_old_grid_y_limits(launch):
    """M beyond 65535 row tiles: sdr_gemm above 1,048,560 rows and lowbit_gemm above 4,194,240 rows launch and agree."""
    import cupy as cp

    from cukernels import reference

    rng = np.random.default_rng(0)
    m = 1_048_561 + 15
    a = rng.integers(-100, 100, size=(m, 16)).astype(np.int16)
    w = rng.integers(-100, 100, size=(1, 16)).astype(np.int8)
    ac, af = reference.sdr_encode_reference(a, group_size=16, base_bits=16)
    wc, wf = reference.sdr_encode_reference(w, group_size=16, base_bits=8)
    want = reference.sdr_gemm_reference(ac, af, wc, wf, group_size=16)
    pac, paf = host.pack_sdr(ac, af)
    pwc, pwf = host.pack_sdr(wc, wf)
    got = launch.sdr_gemm(a_codes=cp.asarray(pac), a_flags=cp.asarray(paf), w_codes=cp.asarray(pwc),
                          w_flags=cp.asarray(pwf), k=16, group_size=16).get()
    assert np.array_equal(got, np.asarray(want, dtype=np.int64))
    m = 65535 * host.GEMM_BLOCK_M + 63  # past 65535 row tiles (the old kernel's limit was 4,194,240)
    base = rng.integers(-8, 7, size=(1000, 32), endpoint=True)  # 1000 distinct rows, tiled over M
    w = rng.integers(-8, 7, size=(2, 32), endpoint=True)
    reps = -(-m // 1000)
    a_packed = np.tile(host.pack_lowbit_operand(base, [32], 4), (reps, 1))[:m]
    z = np.array([3], np.int32)
    prep = host.prepare_lowbit_weights(w, [32], 4)
    isums, y = launch.lowbit_gemm(a_packed=cp.asarray(a_packed), w_packed=cp.asarray(prep["w_packed"]),
                                  a_zero=cp.asarray(z), w_colsum=cp.asarray(prep["w_colsum"]),
                                  cluster_offsets=cp.asarray(prep["cluster_offsets"]),
                                  scale_a=cp.ones(1, cp.float32), scale_w=cp.ones(2, cp.float32), bits=4)
    want = np.tile(((base - 3) @ w.T).astype(np.int32), (reps, 1))[:m]
    assert np.array_equal(isums.get()[0], want)


def test_ln_quant_refuses_misaligned_outputs_and_tiny_scales(launch):
    import cupy as cp

    plan = host.ln_quant_plan(np.arange(4), [4])
    args = dict(x=cp.ones((1, 4), cp.float32), gamma=cp.ones(4, cp.float32), beta=cp.zeros(4, cp.float32), eps=1e-5,
                src_index=plan["src_index"], cluster_of=plan["cluster_of"], zero=np.zeros(1, np.int32), bits=4)
    buf = cp.zeros(32, cp.uint8)
    with pytest.raises(ValueError, match="out_packed starts at byte address .* not a multiple of 4"):
        launch.ln_quant(**args, scale=np.ones(1, np.float32), out_packed=buf[1:17].reshape(1, 16))
    with pytest.raises(ValueError, match="positive finite float16"):
        launch.ln_quant(**args, scale=np.full(1, 2.0 ** -26, np.float32))
    packed, _ = launch.ln_quant(**args, scale=np.ones(1, np.float32), out_packed=buf[4:20].reshape(1, 16))
    assert packed.data.ptr == buf.data.ptr + 4


def test_prepared_launch_runs_the_kernel_alone(launch):
    import cupy as cp

    params = harness.CaseParams("sdr_gemm", m=20, n=30, k=70, seed=1, group_size=16, base_bits=64)
    case = harness.TARGETS["sdr_gemm"].build(params)
    prepared = launch.prepare_sdr_gemm(**{k: (cp.asarray(v) if isinstance(v, np.ndarray) else v)
                                          for k, v in case.inputs.items()})
    prepared.launch()
    prepared.launch()  # idempotent: same operands, same output
    assert np.array_equal(prepared.finish().get(), case.expected["out"])
