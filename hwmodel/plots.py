"""Plots of the cost model (matplotlib, Agg backend; imported only when plotting).

* :func:`plot_memory`: memory stacked by component (weights, KV cache, activations) for each
  configuration across batch and sequence length, with the hardware's capacity;
* :func:`plot_savings`: memory saved against W16A16, per configuration and (batch, sequence);
* :func:`plot_roofline`: the hardware's roofs (one per datapath) with every operation of a layer
  placed at its arithmetic intensity and attained throughput, prefill and decode;
* :func:`plot_pareto`: quantization error (SQNR of a layer's output) against memory and against
  decode energy per token for every sweep point, with the Pareto fronts.
"""

from __future__ import annotations

import os

import numpy as np

from .footprint import GIB, memory
from .hardware import Hardware
from .traffic import build_ops, cost_ops

COMPONENT_COLORS = {"weights": "#4C72B0", "KV cache": "#DD8452", "activations": "#55A868"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    """Write the figure to a temporary name beside ``path`` and rename it: never a half-written plot."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp-{os.getpid()}{ext}"  # savefig takes the format from the extension
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        _plt().close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def plot_memory(model, configs, hw: Hardware, batches, seqs, path: str) -> str:
    plt = _plt()
    batches, seqs = sorted(set(batches)), sorted(set(seqs))
    fig, axes = plt.subplots(1, len(batches), figsize=(4.2 * len(batches) + 1, 4.8), squeeze=False)
    n_cfg, n_seq = len(configs), len(seqs)
    width = 0.8 / n_seq
    for ax, b in zip(axes[0], batches, strict=True):
        for j, s in enumerate(seqs):
            ms = [memory(model, c, batch=b, seq=s) for c in configs]
            x = np.arange(n_cfg) + (j - (n_seq - 1) / 2) * width
            bottom = np.zeros(n_cfg)
            comps = (("weights", [m.weights_gib for m in ms]), ("KV cache", [m.kv_cache_gib for m in ms]),
                     ("activations", [m.activations_gib for m in ms]))
            for comp, vals in comps:
                ax.bar(x, vals, width * 0.92, bottom=bottom, color=COMPONENT_COLORS[comp],
                       edgecolor="white", linewidth=0.4, label=comp if j == 0 else None)
                bottom += np.array(vals)
            for xi, tot in zip(x, bottom, strict=True):
                ax.text(xi, tot, f"{s // 1024}k", ha="center", va="bottom", fontsize=6, rotation=90)
        ax.axhline(hw.capacity / GIB, color="crimson", ls="--", lw=1,
                   label=f"{hw.name} capacity {hw.capacity / GIB:.0f} GiB")
        ax.set_xticks(np.arange(n_cfg))
        ax.set_xticklabels([getattr(c, "name", c) for c in configs], rotation=45, ha="right", fontsize=8)
        ax.set_title(f"batch {b}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.08)
    axes[0][0].set_ylabel("memory (GiB = 2^30 bytes)")
    axes[0][-1].legend(fontsize=8, loc="upper right")
    name = getattr(model, "name", model)
    fig.suptitle(f"{name}: memory by component; bars per sequence length {', '.join(str(s) for s in seqs)} "
                 f"(labels in k tokens)", fontsize=10)
    return _save(fig, path)


def plot_savings(model, configs, batches, seqs, path: str, baseline: str = "W16A16") -> str:
    plt = _plt()
    grid = [(b, s) for b in sorted(set(batches)) for s in sorted(set(seqs))]
    base = np.array([memory(model, baseline, batch=b, seq=s).total for b, s in grid])
    sav = np.array([[1 - memory(model, c, batch=b, seq=s).total / bt
                     for (b, s), bt in zip(grid, base, strict=True)] for c in configs]) * 100
    fig, ax = plt.subplots(figsize=(1.0 * len(grid) + 3, 0.45 * len(configs) + 1.8))
    im = ax.imshow(sav, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i in range(len(configs)):
        for j in range(len(grid)):
            ax.text(j, i, f"{sav[i, j]:.0f}%", ha="center", va="center", fontsize=8,
                    color="white" if sav[i, j] < 60 else "black")
    ax.set_xticks(range(len(grid)))
    ax.set_xticklabels([f"b{b}\ns{s}" for b, s in grid], fontsize=8)
    ax.set_yticks(range(len(configs)))
    ax.set_yticklabels([getattr(c, "name", c) for c in configs], fontsize=8)
    fig.colorbar(im, ax=ax, label=f"memory saved vs {baseline} (%)")
    name = getattr(model, "name", model)
    ax.set_title(f"{name}: total memory saved against {baseline} (batch b, sequence s)", fontsize=10)
    return _save(fig, path)


def plot_roofline(shape, config, hw: Hardware, batch: int, seq: int, path: str, compare=None) -> str:
    plt = _plt()
    from .quantconfig import parse_config

    fig, ax = plt.subplots(figsize=(8.5, 5.8))
    xs = np.logspace(-1, 5, 200)
    roofs = sorted(hw.peaks.items(), key=lambda kv: kv[1])
    for (w, a), p in roofs:
        label = "fp16" if (w, a) == (16, 16) else (f"int{w}" if w == a else f"W{w}A{a}")
        ax.plot(xs, np.minimum(p, xs * hw.bandwidth), lw=1.2, label=f"{label} roof {p / 1e12:g} TOP/s")
    ax.axhline(hw.vector_ops, color="gray", lw=0.8, ls=":", label=f"vector {hw.vector_ops / 1e12:g} TOP/s")
    configs = [parse_config(config)] + ([parse_config(compare)] if compare else [])
    markers = {"prefill": "o", "decode": "s"}
    lowest = np.inf
    for ci, cfg in enumerate(configs):
        for stage in ("prefill", "decode"):
            labels: dict[tuple, list[str]] = {}
            for c in cost_ops(build_ops(shape, cfg.fields(), hw, batch, seq, stage), hw):
                if c.op.kind == "vector" or float(c.op.dram_bytes) == 0:
                    continue
                inten = float(c.intensity)
                perf = float(c.op.ops / c.time)
                lowest = min(lowest, perf)
                col = "C3" if stage == "prefill" else "C4"
                ax.scatter(inten, perf, marker=markers[stage], s=36, zorder=3, edgecolors=col,
                           facecolors=col if ci == 0 else "none")
                # operations at (almost) the same place share one label
                key = (round(np.log10(inten) * 8), round(np.log10(perf) * 8))
                labels.setdefault(key, [inten, perf]).append(c.op.name)
            if ci == 0:  # labels fanned out above (prefill) or below (decode) with leader lines
                sign = 1 if stage == "prefill" else -1
                for i, (inten, perf, *names) in enumerate(sorted(labels.values())):
                    ax.annotate(", ".join(names), (inten, perf), fontsize=6,
                                ha="right" if sign < 0 else "left", xytext=(6 * sign, sign * (8 + 11 * i)),
                                textcoords="offset points",
                                arrowprops=dict(arrowstyle="-", lw=0.4, color="0.5"))
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    for ci, cfg in enumerate(configs):
        for stage, col in (("prefill", "C3"), ("decode", "C4")):
            handles.append(Line2D([], [], ls="", marker=markers[stage], color=col,
                                  markerfacecolor=col if ci == 0 else "none"))
            labels.append(f"{cfg.name} {stage}")
    ax.legend(handles, labels, fontsize=7, loc="lower right")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(min(lowest, hw.vector_ops) / 8, max(p for p in hw.peaks.values()) * 8)
    ax.set_xlabel("arithmetic intensity (ops per DRAM byte)")
    ax.set_ylabel("attained ops/s (MAC = 2 ops)")
    ax.grid(which="both", alpha=0.25)
    name = getattr(shape, "name", shape)
    ax.set_title(f"{name} on {hw.name}: roofline, one layer's operations + lm_head "
                 f"(batch {batch}, seq {seq})",
                 fontsize=10)
    return _save(fig, path)


def plot_pareto(result, path: str) -> str:
    plt = _plt()
    rows = result.rows
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    colors = {"rptq": "C0", "qrazor": "C1"}
    for ax, key, front_key, xlabel in (
        (axes[0], "memory_gib", "pareto_memory",
         f"total memory (GiB), batch {result.batch}, seq {result.seq}"),
        (axes[1], "decode_energy_per_token_j", "pareto_energy",
         "decode energy per token (J, 45 nm MAC figures)"),
    ):
        for method, col in colors.items():
            pts = [r for r in rows if r["method"] == method]
            if pts:
                ax.scatter([r[key] for r in pts], [r["sqnr_db"] for r in pts], s=14, color=col, alpha=0.5,
                           label=method)
        front = sorted((r for r in rows if r[front_key]), key=lambda r: r[key])
        ax.plot([r[key] for r in front], [r["sqnr_db"] for r in front], "k-", lw=1, marker="o", ms=5,
                mfc="none", label="Pareto front")
        last = -np.inf
        for r in front:  # label the front, skipping points within 1.5 dB of the last label (legibility)
            if r["sqnr_db"] - last >= 1.5:
                ax.annotate(r["label"], (r[key], r["sqnr_db"]), fontsize=7, xytext=(5, -3),
                            textcoords="offset points")
                last = r["sqnr_db"]
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("SQNR (dB): layer output and K cache noise together, refsim")
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{result.model} on {result.hardware}: co-design sweep ({len(rows)} points; calibration "
                 f"{result.calib_source})", fontsize=10)
    return _save(fig, path)
