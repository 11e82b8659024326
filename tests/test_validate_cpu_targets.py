"""`refsim validate-kernels` on the CPU real-kernel targets: --list, --kernel NAME / module:function, --xp torch
on CPU tensors, --bits checked before anything runs."""

import textwrap

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("hypothesis")

from cukernels import cpu_targets, harness  # noqa: E402
from cukernels.compile import gpu_available  # noqa: E402
from refsim_app.cli import main  # noqa: E402


def test_list_names_every_target_with_what_it_checks(capsys):
    assert main(["validate-kernels", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [ln.split()[0] for ln in lines]
    assert names == [*harness.TARGETS, *cpu_targets.CPU_TARGETS]
    for ln in lines:
        assert ("bit-exact" in ln or "within gamma" in ln) and "runs here: " in ln
    cpu = [ln for ln in lines if ln.split()[1] == "cpu"]
    assert len(cpu) == len(cpu_targets.CPU_TARGETS) and all("runs here: yes" in ln for ln in cpu)
    # a target that fails on a known upstream bug says so and is left out of a plain run
    known = cpu_targets.KNOWN_UPSTREAM_BUGS
    for ln in cpu:
        assert ("known upstream bug, run only with --target" in ln) == (ln.split()[0] in known)
    if not gpu_available():
        assert all("runs here: no, needs cupy and a CUDA device" in ln for ln in lines if ln.split()[1] == "cuda")


def test_builtin_adapter_by_name_passes(capsys):
    rc = main(["validate-kernels", "--kernel", "torch_int_mm", "--examples", "30", "--seed", "5"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "cukernels.cpu_targets.torch_int_mm against target torch_int_mm: 30 cases, 0 failing, campaign seed 5" in out


@pytest.mark.parametrize("name", ["gptq_v1_linear", "gptq_v2_linear", "awq_linear", "compressed_tensors_linear"])
def test_every_format_target_runs_by_name(capsys, name):
    """--kernel NAME runs the built-in adapter of a checkpoint-format target on its own contract."""
    rc = main(["validate-kernels", "--kernel", name, "--examples", "8", "--seed", "2", "--no-shrink"])
    out = capsys.readouterr().out
    assert rc == 0, out
    fn = cpu_targets.ADAPTERS[name].__name__
    assert f"cukernels.cpu_targets.{fn} against target {name}: 8 cases, 0 failing, campaign seed 2" in out


def test_list_says_which_adapters_are_transcriptions(capsys):
    assert main(["validate-kernels", "--list"]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.strip().splitlines()}
    for name in cpu_targets.CPU_TARGETS:
        assert ("transcription" in lines[name]) == (name in cpu_targets.TRANSCRIPTIONS), lines[name]
    assert "compressed-tensors' own decompress" in lines["compressed_tensors_linear"]
    assert " bits 3,4 " in lines["gptq_v1_linear"] and " bits 4 " in lines["awq_linear"]


def test_bits_narrow_a_gptq_draw_on_torch_tensors(capsys, tmp_path, monkeypatch):
    _write_module(tmp_path, monkeypatch, "gptq_bits_seen_i13", """
        import torch
        from cukernels import cpu_targets

        SEEN = set()

        def linear(x, **kw):
            assert isinstance(x, torch.Tensor) and x.device.type == "cpu"
            SEEN.add((kw["bits"], str(x.dtype)))
            return cpu_targets.gptqmodel_linear(x, **kw)
        """)
    rc = main(["validate-kernels", "--kernel", "gptq_bits_seen_i13:linear", "--target", "gptq_v2_linear",
               "--xp", "torch", "--bits", "3", "--examples", "12", "--seed", "3", "--no-shrink"])
    assert rc == 0, capsys.readouterr().out
    import gptq_bits_seen_i13

    assert {b for b, _ in gptq_bits_seen_i13.SEEN} == {3} and len(gptq_bits_seen_i13.SEEN) >= 2


def _write_module(tmp_path, monkeypatch, name, body):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))


def test_a_wrong_kernel_fails_with_the_reproducing_seed(capsys, tmp_path, monkeypatch):
    _write_module(tmp_path, monkeypatch, "wrong_int_mm_i13", """
        import numpy as np

        def gemm(a, b, out=None):  # off by one in every last column: a wrong kernel
            y = np.asarray(a).astype(np.int64) @ np.asarray(b).astype(np.int64)
            y[:, -1] += 1
            return y.astype(np.int32)
        """)
    rc = main(["validate-kernels", "--kernel", "wrong_int_mm_i13:gemm", "--target", "torch_int_mm",
               "--examples", "10", "--seed", "9"])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "campaign seed 9" in out and "mismatching elements" in out
    line = next(ln for ln in out.splitlines() if "reproduce:" in ln)
    assert line.strip().startswith("reproduce: cukernels.cpu_targets.run_case(kernel, cukernels.harness.CaseParams(")
    import wrong_int_mm_i13

    params = eval(line.split("run_case(kernel, ", 1)[1][:-1], {"cukernels": __import__("cukernels.harness")})
    assert "seed=" in line and cpu_targets.run_case(wrong_int_mm_i13.gemm, params).mismatch_count > 0


def test_xp_torch_hands_cpu_tensors(capsys, tmp_path, monkeypatch):
    _write_module(tmp_path, monkeypatch, "torch_cpu_kernel_i13", """
        import torch

        def gemm(a, b, out=None):
            assert isinstance(a, torch.Tensor) and a.device.type == "cpu" and isinstance(out, torch.Tensor)
            return torch._int_mm(a.contiguous(), b.contiguous())
        """)
    rc = main(["validate-kernels", "--kernel", "torch_cpu_kernel_i13:gemm", "--target", "torch_int_mm",
               "--xp", "torch", "--examples", "10", "--no-shrink"])
    out = capsys.readouterr().out
    assert rc == 0 and "zero mismatches" in out, out


def test_bits_narrow_a_cuda_target_draw(capsys, tmp_path, monkeypatch):
    _write_module(tmp_path, monkeypatch, "bits_seen_i13", """
        from test_harness import _lowbit_numpy

        SEEN = set()

        def gemm(**kw):
            SEEN.add(kw["bits"])
            return _lowbit_numpy(**kw)
        """)
    rc = main(["validate-kernels", "--kernel", "bits_seen_i13:gemm", "--target", "lowbit_gemm",
               "--xp", "numpy", "--bits", "3", "--examples", "8", "--seed", "1"])
    assert rc == 0, capsys.readouterr().out
    import bits_seen_i13

    assert bits_seen_i13.SEEN == {3}


@pytest.mark.parametrize("argv, words", [
    (["--target", "lowbit_gemm", "--bits", "5"], "--bits='5' is not allowed for target lowbit_gemm; allowed: 3, 4"),
    (["--target", "torch_int_mm", "--bits", "4"], "--bits='4' is not allowed for target torch_int_mm; allowed: 8"),
    (["--target", "sdr_gemm", "--bits", "4"], "--bits is not allowed with --target sdr_gemm"),
    (["--target", "torch_int_mm", "--bits", "four"], "--bits='four' is not allowed; allowed: comma-separated"),
    (["--kernel", "torch_int_mm", "--target", "lowbit_gemm"], "--kernel torch_int_mm implements target torch_int_mm"),
    (["--target", "awq_linear", "--bits", "3"], "--bits='3' is not allowed for target awq_linear; allowed: 4"),
    (["--kernel", "gptq_v1_linear", "--target", "gptq_v2_linear"],
     "--kernel gptq_v1_linear implements target gptq_v1_linear, not --target gptq_v2_linear"),
    (["--target", "torch_int_mm", "--xp", "cupy"], "--xp cupy is not allowed with the CPU target torch_int_mm"),
    (["--kernel", "nosuch_adapter"], "allowed: module:function"),
])
def test_refusals_are_one_line(capsys, argv, words):
    rc = main(["validate-kernels", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU path")
def test_without_a_device_cuda_targets_skip_and_cpu_targets_run(capsys):
    rc = main(["validate-kernels", "--target", "wxa16", "--target", "ort_matmul_integer", "--examples", "10"])
    cap = capsys.readouterr()
    assert rc == 0, cap.out
    skip = [ln for ln in cap.err.splitlines() if "skipped" in ln]
    assert len(skip) == 1 and skip[0].startswith("validate-kernels: wxa16: skipped: needs cupy and a CUDA device")
    assert "Traceback" not in cap.err and "ort_matmul_integer: 10 cases, 0 failing" in cap.out


def test_a_plain_run_leaves_out_the_known_upstream_bug(capsys):
    assert "ort_matmul_integer_u8s8" in cpu_targets.KNOWN_UPSTREAM_BUGS
    rc = main(["validate-kernels", "--examples", "5", "--seed", "1", "--no-shrink"])
    out = capsys.readouterr().out
    assert "ort_matmul_integer_u8s8" not in out and "torch_int_mm" in out
    if not gpu_available():
        assert rc == 0  # the CUDA targets skip, the CPU targets pass
    rc = main(["validate-kernels", "--target", "ort_matmul_integer_u8s8", "--examples", "20", "--seed", "1"])
    assert rc == 1  # named, it runs and reports the saturation
