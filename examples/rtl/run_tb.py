#!/usr/bin/env python3
"""Run the Icarus Verilog testbench that matches a golden bundle; exit 0 only on PASS.

    python examples/rtl/run_tb.py BUNDLE_DIR [--define PLANT_RTL_BUG] [--iverilog iverilog]

The testbench is chosen by the bundle's preset (manifest.json): gemm_w4a4 / gemm_w3a3 ->
tb_int_dot_zp.v with int_dot_zp.v; sdr_a16_g16/g32, sdr_w8_g16/g32 -> tb_sdr_group_encoder.v
with sdr_group_encoder.v. Its parameters (shapes, code width, accumulator width) come from
the manifest and are set with ``iverilog -P``; the bundle path is the plusarg ``+BUNDLE=``.
Only the standard library is used, so RTL engineers can run it without refsim installed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def plan(manifest: dict) -> tuple[str, list[str], dict]:
    """(top module, sources, parameters) for a bundle's preset."""
    preset = manifest["preset"]
    shape = manifest["shape"]
    cfg = manifest["config"]
    if preset in ("gemm_w4a4", "gemm_w3a3"):
        params = {"BITS": cfg["bits"], "ACC": manifest["specs"]["act"]["spec"]["acc_bits"], "M": shape["M"],
                  "K": shape["K"], "N": shape["N"], "C": len(_stage(manifest, "a_zero")["shape"]) and
                  _stage(manifest, "a_zero")["shape"][0]}
        if manifest["specs"]["act"]["spec"]["acc_overflow"] != "wrap":
            raise SystemExit(f"{preset}: int_dot_zp models a wrapping accumulator; this bundle's is "
                             f"{manifest['specs']['act']['spec']['acc_overflow']}")
        return "tb_int_dot_zp", ["int_dot_zp.v", "tb_int_dot_zp.v"], params
    if preset.startswith("sdr_a16_") or preset.startswith("sdr_w8_"):
        if manifest["specs"]["sdr"]["spec"]["sdr_rounding"] != "half_up":
            raise SystemExit(f"{preset}: sdr_group_encoder implements the half_up rounding bit only")
        r, d = _stage(manifest, "base_int")["shape"]
        if d % cfg["group_size"]:
            raise SystemExit(f"{preset}: D={d} is not a multiple of the group size {cfg['group_size']}; the "
                             "testbench feeds whole groups (generate with --shape R,D, D a multiple of G)")
        params = {"G": cfg["group_size"], "B": cfg["base_bits"], "KEEP": cfg["keep"], "R": r, "D": d}
        return "tb_sdr_group_encoder", ["sdr_group_encoder.v", "tb_sdr_group_encoder.v"], params
    raise SystemExit(f"no testbench for preset {preset!r}; available: gemm_w4a4, gemm_w3a3, sdr_a16_g16, "
                     "sdr_a16_g32, sdr_w8_g16, sdr_w8_g32")


def _stage(manifest, name):
    for s in manifest["stages"]:
        if s["name"] == name:
            return s
    raise SystemExit(f"the bundle has no stage {name!r}")


def run(bundle, *, defines=(), iverilog="iverilog", vvp="vvp", timeout=300) -> tuple[int, str]:
    """Compile and simulate; returns (exit status, simulator output). Status 0 means PASS."""
    bundle = Path(bundle).resolve()
    manifest = json.loads((bundle / "manifest.json").read_text())
    top, sources, params = plan(manifest)
    with tempfile.TemporaryDirectory(prefix="refsim-tb-") as tmp:
        exe = Path(tmp) / "sim.vvp"
        cmd = [iverilog, "-g2012", "-Wall", "-o", str(exe), "-s", top]
        cmd += [f"-P{top}.{k}={v}" for k, v in params.items()]
        cmd += [f"-D{d}" for d in defines]
        cmd += [str(HERE / s) for s in sources]
        comp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if comp.returncode:
            return comp.returncode, f"iverilog failed:\n{comp.stdout}{comp.stderr}"
        sim = subprocess.run([vvp, "-n", str(exe), f"+BUNDLE={bundle}"], capture_output=True, text=True,
                             timeout=timeout)
    out = sim.stdout + sim.stderr
    passed = sim.returncode == 0 and "PASS:" in out and "FAIL" not in out
    return (0 if passed else (sim.returncode or 1)), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--define", action="append", default=[], help="a Verilog macro, e.g. PLANT_RTL_BUG")
    ap.add_argument("--iverilog", default="iverilog")
    args = ap.parse_args(argv)
    if shutil.which(args.iverilog) is None:
        print(f"{args.iverilog} not found: install Icarus Verilog (Debian/Ubuntu: apt-get install iverilog)",
              file=sys.stderr)
        return 2
    rc, out = run(args.bundle, defines=args.define, iverilog=args.iverilog)
    print(out, end="")
    return rc


if __name__ == "__main__":
    sys.exit(main())
