#!/usr/bin/env python3
"""Run the cocotb bench that matches a golden bundle, under Icarus Verilog or Verilator; exit 0 only on PASS.

    python examples/rtl/cocotb/run_cocotb.py BUNDLE_DIR [--sim icarus|verilator] [--define PLANT_RTL_BUG]
                                             [--build DIR]

The bench (tb_units.py) is chosen by the bundle's preset, as run_tb.py chooses a Verilog testbench
(and with its checks: a wrapping accumulator, the half_up SDR rounding, whole groups):
gemm_w4a4 / gemm_w3a3 -> int_dot_zp; sdr_a16_g16/g32, sdr_w8_g16/g32 -> sdr_group_encoder. The
design is refsim_units.v, one instance per parameter set, built with cocotb's Python runner once
per simulator and set of defines into BUILD (default examples/rtl/cocotb/build/SIM[-DEFINES]) and
reused while the sources are unchanged. Needs cocotb (the `test` extra), numpy and iverilog or
verilator (Debian: apt-get install iverilog verilator); not refsim, whose bundles it reads.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
RTL = HERE.parent
SOURCES = [RTL / "int_dot_zp.v", RTL / "sdr_group_encoder.v", HERE / "refsim_units.v"]
TOP = "refsim_units"
TEST_MODULE = "tb_units"
SIMULATORS = {"icarus": ("iverilog", "vvp"), "verilator": ("verilator",)}
# Verilator's lint stops the build at a WIDTH warning; the units extend their narrow codes into the
# 32-bit sums on purpose (Verilog's context-determined widths), exactly as Icarus compiles them.
BUILD_ARGS = {"icarus": [], "verilator": ["-Wno-WIDTH"]}
MARKER = ".refsim-cocotb-build.json"


def _load_run_tb():
    spec = importlib.util.spec_from_file_location("run_tb", RTL / "run_tb.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def get_runner(simulator: str):
    """cocotb's Python runner for ``simulator`` (``cocotb_tools.runner`` from cocotb 2, ``cocotb.runner`` before)."""
    try:
        from cocotb_tools.runner import get_runner as _get
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # 1.x marks the runner experimental on import
            from cocotb.runner import get_runner as _get
    return _get(simulator)


def bench_for(manifest: dict) -> tuple[str, str]:
    """(cocotb test name, refsim_units.v instance) for a bundle; a SystemExit names what is not supported."""
    top, _, params = _load_run_tb().plan(manifest)
    if top == "tb_int_dot_zp":
        if params["ACC"] != 32:
            raise SystemExit(f"{manifest['preset']}: refsim_units.v instantiates int_dot_zp with ACC=32; "
                             f"this bundle's accumulator is {params['ACC']} bits")
        return "int_dot_zp_matches_bundle", f"dot_b{params['BITS']}"
    if params["KEEP"] != 3:
        raise SystemExit(f"{manifest['preset']}: refsim_units.v instantiates sdr_group_encoder with KEEP=3; "
                         f"this bundle keeps {params['KEEP']} bits")
    return "sdr_group_encoder_matches_bundle", f"sdr_g{params['G']}_b{params['B']}"


def _build_key(simulator: str, defines) -> dict:
    digest = hashlib.sha256()
    for src in SOURCES:
        digest.update(src.read_bytes())
    return {"simulator": simulator, "defines": sorted(defines), "top": TOP, "sources_sha256": digest.hexdigest(),
            "build_args": BUILD_ARGS[simulator]}


def default_build_dir(simulator: str, defines=()) -> Path:
    return HERE / "build" / "-".join([simulator, *sorted(defines)])


@contextlib.contextmanager
def _captured_output(log_path: Path):
    """Send this process's stdout and stderr (file descriptors 1 and 2, which the runner's
    simulator subprocesses inherit) to ``log_path`` for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "wb") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def _importable():
    """The bench's folder on sys.path, which the runner hands to the simulator as PYTHONPATH."""
    added = [str(HERE)] if str(HERE) not in sys.path else []
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            sys.path.remove(p)


def build(simulator: str = "icarus", *, defines=(), build_dir=None) -> tuple[Path, str]:
    """Compile refsim_units.v for ``simulator`` unless BUILD already holds this very build.

    Returns (build directory, build log). A directory that exists, is not empty and is not one of
    these builds is refused (nothing this script did not create is overwritten).
    """
    if simulator not in SIMULATORS:
        raise SystemExit(f"--sim {simulator!r}: allowed: {', '.join(SIMULATORS)}")
    missing = [t for t in SIMULATORS[simulator] if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"{', '.join(missing)} not found: install it (Debian/Ubuntu: apt-get install "
                         f"{'iverilog' if simulator == 'icarus' else 'verilator'})")
    build_dir = Path(build_dir) if build_dir else default_build_dir(simulator, defines)
    marker = build_dir / MARKER
    key = _build_key(simulator, defines)
    if marker.is_file():
        held = json.loads(marker.read_text())
        if held.get("complete") and held.get("key") == key:
            return build_dir, "(reused build)\n"
    elif build_dir.exists() and any(build_dir.iterdir()):
        raise SystemExit(f"--build {build_dir}: exists and is not a cocotb build of this script; choose another")
    build_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"key": key, "complete": False}))  # the directory is ours from here on
    runner = get_runner(simulator)
    log_path = build_dir / "build.log"
    with _captured_output(log_path):
        try:
            runner.build(verilog_sources=SOURCES, hdl_toplevel=TOP, defines={d: 1 for d in defines},
                         build_args=BUILD_ARGS[simulator], build_dir=build_dir, always=True)
            ok = True
        except SystemExit:
            ok = False
    log = log_path.read_text(errors="replace")
    if not ok:
        raise SystemExit(f"{simulator} build failed:\n{log}")
    marker.write_text(json.dumps({"key": key, "complete": True}))
    return build_dir, log


def run(bundle, simulator: str = "icarus", *, defines=(), build_dir=None) -> tuple[int, str]:
    """Build (or reuse) and run the bundle's bench; returns (exit status, log). Status 0 means PASS."""
    bundle = Path(bundle).resolve()
    manifest = json.loads((bundle / "manifest.json").read_text())
    testcase, instance = bench_for(manifest)
    build_dir, _ = build(simulator, defines=defines, build_dir=build_dir)
    runner = get_runner(simulator)
    with tempfile.TemporaryDirectory(prefix="refsim-cocotb-") as tmp:
        log_path = Path(tmp) / "sim.log"
        with _importable(), _captured_output(log_path):
            try:
                results = runner.test(test_module=TEST_MODULE, hdl_toplevel=TOP, hdl_toplevel_lang="verilog",
                                      testcase=testcase, build_dir=build_dir, test_dir=tmp, results_xml="results.xml",
                                      extra_env={"REFSIM_BUNDLE": str(bundle), "REFSIM_INSTANCE": instance})
            except SystemExit:  # a failing test under pytest, or a simulator that died
                results = None
        log = log_path.read_text(errors="replace")
        tests, failed = _results(Path(results) if results else next(Path(tmp).glob("*results.xml"), None))
    passed = tests == 1 and failed == 0 and "PASS:" in log
    return (0 if passed else 1), log


def _results(path) -> tuple[int, int]:
    """(tests, failures) from cocotb's xUnit results file; (0, 0) when the simulator wrote none."""
    if path is None or not Path(path).is_file():
        return 0, 0
    cases = list(ET.parse(path).iter("testcase"))
    return len(cases), sum(1 for c in cases if c.find("failure") is not None or c.find("error") is not None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--sim", default="icarus", choices=sorted(SIMULATORS))
    ap.add_argument("--define", action="append", default=[], help="a Verilog macro, e.g. PLANT_RTL_BUG")
    ap.add_argument("--build", default=None, help="build directory (default examples/rtl/cocotb/build/SIM)")
    args = ap.parse_args(argv)
    rc, log = run(args.bundle, args.sim, defines=args.define, build_dir=args.build)
    print(log, end="")
    print("PASS" if rc == 0 else "FAIL")
    return rc


if __name__ == "__main__":
    sys.exit(main())
