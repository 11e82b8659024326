"""The harness on kernels people ship, on this CPU (cukernels/cpu_targets.py): a few hundred cases each here,
10^4 each under ``slow``. Integer targets are bit-exact; float targets within the bound they state."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from cukernels import cpu_targets, harness  # noqa: E402

GOOD = ["torch_int4pack_mm", "torch_int_mm", "ort_matmul_integer", "ort_matmul_nbits"]


@pytest.mark.parametrize("name", GOOD)
def test_real_kernel_meets_its_contract(name):
    report = cpu_targets.validate(name, max_examples=200, seed=13)
    assert report.cases_run == 200 and report.ok, report.format()


def test_the_harness_catches_ort_u8s8_saturation():
    """MatMulInteger uint8 x int8 on x86 AVX2 saturates pair sums to int16 (docs/conformance.md #5)."""
    report = cpu_targets.validate("ort_matmul_integer_u8s8", max_examples=200, seed=13)
    assert not report.ok
    failing = report.failures[0].params
    again = cpu_targets.run_case(cpu_targets.ort_matmul_integer, failing)  # the reported case reproduces on its own
    assert again.mismatch_count > 0


def test_a_wrong_kernel_is_caught():
    """An adapter that drops the float zero point of int4pack is outside the bound."""
    def wrong(x, w_packed, scales_and_zeros, group_size, out=None):
        sz = cpu_targets._torch(scales_and_zeros).clone()
        sz[..., 1] = 0
        return cpu_targets.torch_int4pack_mm(x, w_packed, sz, group_size)

    assert not cpu_targets.validate("torch_int4pack_mm", wrong, max_examples=20, seed=2).ok


def test_the_harness_target_list_is_left_alone():
    assert not set(cpu_targets.CPU_TARGETS) & set(harness.TARGETS)
    with cpu_targets.registered():
        assert set(cpu_targets.CPU_TARGETS) <= set(harness.TARGETS)
    assert not set(cpu_targets.CPU_TARGETS) & set(harness.TARGETS)


@pytest.mark.slow
@pytest.mark.parametrize("name", GOOD)
def test_real_kernel_campaign(name):
    report = cpu_targets.validate(name, max_examples=10_000, seed=2026, shrink=False)
    assert report.cases_run == 10_000 and report.ok, report.format()
