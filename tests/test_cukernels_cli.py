"""`refsim validate-kernels` on CPU: a numpy kernel through --kernel, the skip status, the compile check."""

import pytest

from cukernels import cli
from cukernels.compile import gpu_available, nvcc_path
from refsim.cli import main


def test_numpy_kernel_validates_through_the_cli(capsys):
    rc = main(["validate-kernels", "--kernel", "test_harness:_lowbit_numpy", "--target", "lowbit_gemm",
               "--xp", "numpy", "--examples", "15", "--seed", "3"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "15 cases, 0 failing, campaign seed 3" in out and "zero mismatches" in out


def test_buggy_numpy_kernel_fails_the_cli(capsys):
    rc = main(["validate-kernels", "--kernel", "test_cukernels_cli:_buggy", "--target", "lowbit_gemm",
               "--xp", "numpy", "--examples", "30", "--no-shrink"])
    out = capsys.readouterr().out
    assert rc == 1 and "bit difference" in out and "reproduce:" in out


def _buggy(**kw):
    from test_harness import _lowbit_numpy

    return _lowbit_numpy(**kw, bug="no_zero_point")


def test_kernel_needs_a_target(capsys):
    assert main(["validate-kernels", "--kernel", "x:y", "--xp", "numpy"]) == 2
    assert "--target is required" in capsys.readouterr().err


@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU path")
def test_builtin_kernels_skip_without_a_gpu(capsys):
    assert main(["validate-kernels", "--target", "lowbit_gemm"]) == cli.SKIPPED
    assert "skipped" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(nvcc_path() is None, reason="nvcc is not on PATH")
def test_compile_flag_builds_every_source(capsys):
    assert main(["validate-kernels", "--compile"]) == 0
    assert "FAILED" not in capsys.readouterr().out
