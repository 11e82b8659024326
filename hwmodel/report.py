"""Text, JSON and CSV renderings of cost-model results (no plotting here)."""

from __future__ import annotations

import csv
import io
import math

from refsim.outputs import finite_or_null as _clean
from refsim.outputs import to_json  # noqa: F401  (hwmodel.report.to_json is public)

from .footprint import GB, GIB, MemoryReport
from .hardware import Hardware


def fmt_si(x: float, unit: str = "") -> str:
    """3 significant digits with an SI prefix (1.23 G, 456 M)."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}{unit}"
    for p, s in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"),
                 (1e-6, "u"), (1e-9, "n")):
        if abs(x) >= p:
            return f"{x / p:.3g} {s}{unit}".rstrip()
    return f"{x:.3g}{unit}"


def table(rows: list[list[str]], header: list[str]) -> str:
    cols = list(zip(header, *rows, strict=True))
    widths = [max(len(str(c)) for c in col) for col in cols]

    def line(r):
        cells = zip(r, widths, strict=True)
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(cells))

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def summary_rows(results: list[dict], hw: Hardware) -> tuple[list[str], list[list[str]]]:
    header = ["config", "weights GiB", "KV GiB", "act GiB", "total GiB", "total GB", f"fits {hw.name}",
              "prefill tok/s", "decode tok/s", "decode J/token", "decode bound"]
    rows = []
    for r in results:
        m: MemoryReport = r["memory"]
        d, p = r["throughput"]["decode"], r["throughput"]["prefill"]
        bound = "compute" if d["t_compute"] >= d["t_memory"] else "memory"
        rows.append([m.config, f"{m.weights / GIB:.2f}", f"{m.kv_cache / GIB:.2f}",
                     f"{m.activations / GIB:.2f}", f"{m.total / GIB:.2f}", f"{m.total / GB:.2f}",
                     "yes" if m.total <= hw.capacity else "no", f"{p['tokens_per_s']:.4g}",
                     f"{d['tokens_per_s']:.4g}", f"{d['energy_per_token_j']:.3g}", bound])
    return header, rows


def layer_rows(layers: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["stage", "op", "x", "ops", "weights B", "act ld B", "act st B", "KV ld B", "KV st B", "DRAM B",
              "ops/B", "datapath", "time", "bound", "energy J"]
    rows = []
    for r in layers:
        inten = "on-chip" if r["intensity"] is None else f"{r['intensity']:.3g}"
        rows.append([r["stage"], r["op"], str(r["count"]), fmt_si(r["ops"]), fmt_si(r["weight_bytes"]),
                     fmt_si(r["act_load_bytes"]), fmt_si(r["act_store_bytes"]), fmt_si(r["kv_load_bytes"]),
                     fmt_si(r["kv_store_bytes"]), fmt_si(r["dram_bytes"]), inten, r["datapath"],
                     fmt_si(r["time_s"], "s"), r["bound"], f"{r['energy_j']:.3g}"])
    return header, rows


def to_csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    keys = list(rows[0])
    for r in rows[1:]:
        keys += [k for k in r if k not in keys]
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(_clean(r))
    return buf.getvalue()
