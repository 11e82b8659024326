"""The GPU section of docs/benchmarks.md, written by ``make gpu-campaign`` (cukernels.campaign).

The section lies between the markers BEGIN and END; writing it replaces only what lies between
them (the markers are appended at the end of the file the first time), through a temporary file
renamed into place. Its figures come from the benchmark's JSON (benchmarks/bench_kernels.py
``--json``) and the campaign's counts, with the date, the device and the command that made them.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from refsim.outputs import atomic_write_text

BEGIN = "<!-- gpu-campaign: begin (written by `make gpu-campaign`; do not edit by hand) -->"
END = "<!-- gpu-campaign: end -->"


def render(*, bench: dict | None, campaign: dict | None, tests_rc: int | None, command: str,
           seconds: float | None = None, date: str | None = None) -> str:
    """Markdown of one run: the benchmark table (ratios against their baselines), the campaign counts."""
    date = date or datetime.date.today().isoformat()
    device = (bench or {}).get("device", "unknown device")
    lines = [f"## GPU kernels on {device}", "",
             f"Date {date}, device {device}, command `{command}`"
             + (f" ({seconds:.0f} s in all)." if seconds is not None else "."), ""]
    if tests_rc is not None:
        lines += [f"GPU test suite (`pytest -m gpu tests/test_cukernels_gpu.py`): "
                  f"{'passed' if tests_rc == 0 else f'FAILED (exit {tests_rc})'}.", ""]
    if campaign:
        lines += ["| harness target | cases | failing cases |", "|---|---|---|"]
        for t, r in campaign.items():
            if not t.startswith("_"):
                lines.append(f"| {t} | {r['cases']} | {r['failing']} |")
        if campaign.get("_lost_workers"):
            lines.append(f"\n{campaign['_lost_workers']} campaign workers did not report (counted as a failure).")
        lines.append("")
    if bench:
        lines += [f"Copy bandwidth (device to device, {bench.get('copy_bytes', 0) / 2**30:.0f} GiB): "
                  f"{bench['copy_bandwidth'] / 1e12:.2f} TB/s. Kernel times are CUDA-event times of the kernel "
                  f"launches alone (operands prepared on the device first), median of {bench.get('repeat', '?')}.",
                  "", "| kernel | shape | time (us) | baseline | baseline (us) | ratio | target |",
                  "|---|---|---|---|---|---|---|"]
        for r in bench["rows"]:
            lines.append(f"| {r['name']} | {r['shape']} | {r['us']:.1f} | {r['baseline']} | {r['baseline_us']:.1f} | "
                         f"{r['ratio']:.2f}x | {r.get('target') or ''} |")
        lines.append("")
    elif bench is None:
        lines += ["The benchmark did not finish: no figures.", ""]
    return "\n".join(lines).rstrip() + "\n"


def replace_section(text: str, section: str) -> str:
    """``text`` with the marked section replaced by ``section`` (appended when there is none)."""
    block = f"{BEGIN}\n{section.rstrip()}\n{END}"
    if BEGIN in text and END in text and text.index(BEGIN) < text.index(END):
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        return head + block + tail
    if BEGIN in text or END in text:
        raise ValueError("the GPU section markers are incomplete or out of order; fix the file by hand")
    return text.rstrip("\n") + "\n\n" + block + "\n"


def write_section(path, section: str) -> None:
    p = Path(path)
    atomic_write_text(p, replace_section(p.read_text() if p.exists() else "", section))
