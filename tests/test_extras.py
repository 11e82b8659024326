"""Each install set runs the commands the README names for it, or stops before any work with one
line naming the extra to install.

Installs are emulated in a fresh interpreter in which every package of the missing extras cannot
be imported (tests/clitools.py): the core install (numpy, numba, scikit-learn, jsonschema) and the
core plus ``[hf]``. Under ``slow``, a real virtual environment with only ``pip install -e .``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clitools import CORE_BLOCKED, HF_ONLY_BLOCKED, REPO, run_blocked, run_commands_blocked

from refsim_app.cli import SUBCOMMAND_MODULES, build_parser

COMMANDS = sorted(next(a for a in build_parser()._actions if a.dest == "command").choices)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len([ln for ln in lines if "error:" in ln]) == 1, err
    return next(ln for ln in lines if "error:" in ln)


def test_core_install_runs_the_golden_workflow_and_names_the_extras(tmp_path):
    fake_model = tmp_path / "M"
    fake_model.mkdir()
    (fake_model / "config.json").write_text('{"model_type": "opt"}')
    commands = [
        ["--help"],
        *[[c, "--help"] for c in COMMANDS],
        ["demo", "--tokens", "16", "--hidden", "16", "--clusters", "2", "--out", "demo"],
        ["golden", "requant", "--out", "b", "--level", "1"],
        ["verify", "b"],
        ["verify", "demo", "--json"],
        ["compare", "b", "--stage", "out_codes", "--dut", "b/out_codes.hex"],
        ["golden", "--list", "--json"],
        ["spec", "rptq"],
        ["calibrate", fake_model, "--out", "q"],
        ["realdemo", "--out", "r"],
    ]
    t0 = time.perf_counter()
    results = run_commands_blocked(commands, blocked=CORE_BLOCKED, cwd=tmp_path)
    by = {" ".join(map(str, argv[:1])) if argv[-1] != "--help" else "help " + argv[0]: (rc, err)
          for argv, rc, err in results}
    for argv, rc, err in results:
        if argv[0] in ("calibrate", "realdemo") and argv[-1] != "--help":
            continue
        assert rc == 0, (argv, err)
        assert "Traceback" not in err
    rc, err = by["calibrate"]
    assert rc == 2 and "needs the [hf] extra" in _one_error_line(err) and "pip install 'refsim[hf]'" in err
    rc, err = by["realdemo"]
    assert rc == 2 and "needs the [hf] extra" in _one_error_line(err)
    assert sorted(os.listdir(tmp_path)) == ["M", "b", "demo"]  # calibrate and realdemo stopped before any work
    assert time.perf_counter() - t0 < 600


def test_every_subcommand_module_imports_on_the_core():
    """refsim_app.cli skips a module whose own import fails; each must import on the core install, so no
    command silently disappears from the core install."""
    code = "import sys\nfor m in sys.argv[1].split(','): sys.modules[m] = None\n" + "\n".join(
        f"import {m}" for m in SUBCOMMAND_MODULES)
    p = subprocess.run([sys.executable, "-c", code, ",".join(CORE_BLOCKED)], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert p.returncode == 0, p.stderr


def test_python_dash_m_refsim_on_the_core(tmp_path):
    p = run_blocked(["golden", "--out", "b"], blocked=CORE_BLOCKED, cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == "b", p.stderr
    p = run_blocked(["calibrate", tmp_path, "--out", "q"], blocked=CORE_BLOCKED, cwd=tmp_path)
    assert p.returncode == 2 and "needs the [hf] extra" in _one_error_line(p.stderr)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    pytest.importorskip("transformers")
    from clitools import tiny_opt

    return Path(tiny_opt(tmp_path_factory.mktemp("opt") / "tiny", layers=1))


def test_hf_install_calibrates_and_notes_the_missing_plot(tiny_model, tmp_path):
    results = run_commands_blocked([
        ["calibrate", tiny_model, "--out", "q", "--quiet", "--nsamples", "1", "--seqlen", "8", "--clusters", "2",
         "--head-clusters", "1"],
        ["realdemo", "--out", "r"],
    ], blocked=HF_ONLY_BLOCKED, cwd=tmp_path)
    (_, rc, err), (_, rc2, err2) = results
    assert rc == 0, err
    assert "matplotlib is not installed: ranges.png is not written" in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path / "q")) == [".refsim-output.json", "model.safetensors", "quant_config.json",
                                                  "report.json", "report.md"]
    assert rc2 == 2 and "needs the [realmodel] extra" in _one_error_line(err2)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_real_core_only_venv(tmp_path):
    """``pip install -e .`` into an empty venv (PyPI needed), then the core commands with that venv's refsim."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["setuptools>=70.1", "wheel"], check=True, timeout=900)  # bdist_wheel for -e
    subprocess.run(pip + ["--no-build-isolation", "-e", str(REPO)], check=True, timeout=1800)
    refsim = str(venv / "bin" / "refsim")
    work = tmp_path / "work"
    work.mkdir()

    def run(*argv):
        return subprocess.run([refsim, *map(str, argv)], capture_output=True, text=True, cwd=work, timeout=900,
                              env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "REFSIM_DEBUG")})

    for argv in (["demo", "--tokens", "16", "--hidden", "16", "--clusters", "2", "--out", "d"],
                 ["golden", "--out", "b"], ["verify", "b"], ["compare", "b", "--stage", "isum", "--dut", "b/isum.hex"],
                 ["golden", "--list"], ["spec", "gptq"]):
        p = run(*argv)
        assert p.returncode == 0 and "Traceback" not in p.stderr, (argv, p.stderr)
    p = run("calibrate", work, "--out", tmp_path / "q")
    assert p.returncode == 2 and "needs the [hf] extra" in _one_error_line(p.stderr)
    assert not (tmp_path / "q").exists()
    shutil.rmtree(venv, ignore_errors=True)
