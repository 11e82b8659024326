"""The Icarus Verilog testbenches of examples/rtl on bundles generated here.

They pass on correct bundles and fail on a planted one-bit error, in a stage or in the RTL.
Skipped only when iverilog is absent; CI (.ci/run) installs it and sets
REFSIM_REQUIRE_IVERILOG=1, which turns the skip into a failure.
"""

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

import golden

RTL = Path(__file__).resolve().parents[1] / "examples" / "rtl"

if shutil.which("iverilog") is None or shutil.which("vvp") is None:
    if os.environ.get("REFSIM_REQUIRE_IVERILOG"):
        raise RuntimeError("REFSIM_REQUIRE_IVERILOG is set but iverilog/vvp are not on PATH")
    pytest.skip("Icarus Verilog (iverilog, vvp) is not installed; CI installs it (apt-get install iverilog)",
                allow_module_level=True)


def _runner():
    spec = importlib.util.spec_from_file_location("run_tb", RTL / "run_tb.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


run_tb = _runner()

CASES = [("gemm_w4a4", 0), ("gemm_w4a4", 1), ("gemm_w4a4", 2), ("gemm_w3a3", 1), ("gemm_w3a3", 2),
         ("sdr_a16_g16", 0), ("sdr_a16_g16", 1), ("sdr_a16_g32", 1), ("sdr_w8_g16", 2), ("sdr_w8_g32", 0),
         ("sdr_w8_g32", 2)]


@pytest.mark.parametrize("name, level", CASES)
def test_testbench_passes(tmp_path, name, level):
    out = golden.write_bundle(name, tmp_path / "b", level=level)
    rc, log = run_tb.run(out)
    assert rc == 0, log
    assert "PASS:" in log


def _flip_bit(path: Path, line: int, bit: int):
    lines = path.read_text().split("\n")
    lines[line] = format(int(lines[line], 16) ^ (1 << bit), f"0{len(lines[line])}x")
    path.write_text("\n".join(lines))


@pytest.mark.parametrize("name, stage, line, bit", [
    ("gemm_w4a4", "isum", 17, 0),
    ("gemm_w4a4", "isum_raw", 3, 30),
    ("gemm_w3a3", "w_sum", 1, 2),
    ("sdr_a16_g16", "sdr_codes", 5, 3),   # the sign bit of one code
    ("sdr_w8_g16", "sdr_flags", 0, 0),
])
def test_planted_stage_error_fails(tmp_path, name, stage, line, bit):
    out = golden.write_bundle(name, tmp_path / "b", level=1)
    _flip_bit(out / f"{stage}.hex", line, bit)
    rc, log = run_tb.run(out)
    assert rc != 0, log
    assert f"MISMATCH {stage}[" in log and "FAIL:" in log


@pytest.mark.parametrize("name", ["gemm_w4a4", "sdr_a16_g16"])
def test_planted_rtl_error_fails(tmp_path, name):
    out = golden.write_bundle(name, tmp_path / "b", level=1)
    rc, log = run_tb.run(out, defines=["PLANT_RTL_BUG"])
    assert rc != 0 and "FAIL:" in log, log
