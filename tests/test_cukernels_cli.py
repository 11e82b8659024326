"""`refsim validate-kernels` on CPU: a numpy kernel through --kernel, the skip status, the compile check."""

import pytest

from cukernels import cli
from cukernels.compile import gpu_available, nvcc_path
from refsim_app.cli import main


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


@pytest.mark.parametrize("spec, words", [("nosuch_mod_xyz:f", "module 'nosuch_mod_xyz' not found"),
                                         ("test_harness:nosuch", "has no attribute 'nosuch'"),
                                         ("test_harness", "allowed: module:function"),
                                         ("cukernels.host:TILE_K", "not a callable")])
def test_a_kernel_that_cannot_be_loaded_is_one_line(capsys, spec, words):
    rc = main(["validate-kernels", "--kernel", spec, "--target", "lowbit_gemm", "--xp", "numpy"])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def _raises(**kw):
    raise TypeError("bad operand")


def test_a_kernel_that_raises_is_a_crash_not_a_mismatch(capsys):
    rc = main(["validate-kernels", "--kernel", "test_cukernels_cli:_raises", "--target", "sdr_gemm",
               "--xp", "numpy", "--examples", "5", "--no-shrink"])
    out = capsys.readouterr().out
    assert rc == 1 and "crashed: the kernel raised TypeError: bad operand" in out
    assert "mismatching elements" not in out


def test_missing_hypothesis_names_the_test_extra(capsys, monkeypatch):
    import refsim.outputs as cu

    real = cu.missing_modules
    monkeypatch.setattr(cu, "missing_modules", lambda *m: ["hypothesis"] if "hypothesis" in m else real(*m))
    rc = main(["validate-kernels", "--target", "lowbit_gemm", "--xp", "numpy", "--kernel", "x:y"])
    err = capsys.readouterr().err
    assert rc == 2 and "[test] extra" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, flag", [(["--examples", "0"], "--examples"), (["--seed", "-1"], "--seed"),
                                        (["--target", "nosuch"], "--target")])
def test_bad_arguments_name_the_flag(capsys, argv, flag):
    try:
        rc = main(["validate-kernels", "--xp", "numpy", "--kernel", "test_harness:_lowbit_numpy", *argv])
    except SystemExit as exc:  # argparse's own one-line error
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and flag in err and "Traceback" not in err


def test_every_option_has_help(capsys):
    with pytest.raises(SystemExit):
        main(["validate-kernels", "--help"])
    out = capsys.readouterr().out
    assert all(opt in out for opt in ("--target", "--kernel", "--xp", "--examples", "--seed", "--compile"))
    import argparse

    from cukernels import cli as kcli

    parser = argparse.ArgumentParser()
    kcli.register(parser.add_subparsers())
    sub = parser._subparsers._group_actions[0].choices["validate-kernels"]
    assert all(a.help for a in sub._actions)
