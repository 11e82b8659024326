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
    """Write the figure to a temporary name beside ``path`` and rename it: never a half-written plot.

    The PNG carries the text chunk ``Software: refsim cost`` (:mod:`hwmodel.outputs`), by which a
    later ``refsim cost --plot`` recognises a file it may replace."""
    from .outputs import PNG_METADATA

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp-{os.getpid()}{ext}"  # savefig takes the format from the extension
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", metadata=PNG_METADATA)
        os.replace(tmp, path)
    finally:
        _plt().close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _plain_log_ticks(axis) -> None:
    """Log-axis ticks as plain numbers (300, 0.2), not 3x10^2: what an architect reads off a chart."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    def fmt(v, _pos):
        return f"{v:.4g}"

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(fmt))
    axis.set_minor_formatter(FuncFormatter(lambda v, p: ""))


def _dense_log_ticks(axis) -> None:
    """Plain-number log ticks at 1..9 x 10^k with thousands separators: readable over a narrow range
    (prefill throughputs of one model span less than a decade)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:,.0f}" if v >= 100 else f"{v:.3g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, p: ""))


def plot_memory(model, configs, hw: Hardware, batches, seqs, path: str) -> str:
    plt = _plt()
    batches, seqs = sorted(set(batches)), sorted(set(seqs))
    fig, axes = plt.subplots(1, len(batches), figsize=(4.2 * len(batches) + 1, 4.8), squeeze=False)
    n_cfg, n_seq = len(configs), len(seqs)
    width = 0.8 / n_seq
    over_seen = False
    for ax, b in zip(axes[0], batches, strict=True):
        for j, s in enumerate(seqs):
            ms = [memory(model, c, batch=b, seq=s) for c in configs]
            x = np.arange(n_cfg) + (j - (n_seq - 1) / 2) * width
            bottom = np.zeros(n_cfg)
            comps = (("weights", [m.weights_gib for m in ms]), ("KV cache", [m.kv_cache_gib for m in ms]),
                     ("activations", [m.activations_gib for m in ms]))
            over = np.array([m.total > hw.capacity for m in ms])
            for comp, vals in comps:
                ax.bar(x, vals, width * 0.92, bottom=bottom, color=COMPONENT_COLORS[comp],
                       edgecolor="white", linewidth=0.4, label=comp if j == 0 else None)
                bottom += np.array(vals)
            if over.any():  # configurations that do not fit the device: hatched over the whole bar
                ax.bar(x[over], bottom[over], width * 0.92, color="none", edgecolor="0.15", linewidth=0,
                       hatch="////", label=f"does not fit in {hw.capacity / GIB:.0f} GiB" if not over_seen else None)
                over_seen = True
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
    handles = {}
    for ax in axes[0]:  # one legend for all panels (the hatch may appear in any of them)
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    axes[0][-1].legend(list(handles.values()), list(handles), fontsize=8, loc="upper right")
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
    lowest, top = np.inf, max(hw.peaks.values())
    label_rows = []  # (stage, intensity, perf, names) of the first configuration
    for ci, cfg in enumerate(configs):
        for stage in ("prefill", "decode"):
            groups: dict[tuple, list] = {}
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
                groups.setdefault(key, [inten, perf]).append(c.op.name)
            if ci == 0:
                label_rows += [(stage, *g) for g in sorted(groups.values())]
    # Labels never sit on a marker: prefill labels (compute-bound, at the roofs) in rows above the
    # highest roof, decode labels (memory-bound, on the bandwidth slope) in rows below and right of
    # the slope, where no operation can be placed (attained <= intensity x bandwidth). Each label
    # has its own row, so no two overlap; a leader line joins it to its point.
    step = 1.75  # one row of 6-pt text on this log axis, with a gap
    n_pre = 0
    n_dec = 0
    for stage, inten, perf, *names in label_rows:
        if stage == "prefill":
            xy_text = (inten, top * 2.5 * step**n_pre)
            n_pre += 1
        else:
            xy_text = (inten * 6, perf / (4 * step**n_dec))
            n_dec += 1
        ax.annotate(", ".join(names), (inten, perf), xytext=xy_text, textcoords="data", fontsize=6,
                    ha="center" if stage == "prefill" else "left", va="center", zorder=4,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85),
                    arrowprops=dict(arrowstyle="-", lw=0.4, color="0.45", shrinkA=0, shrinkB=3))
    top_label = top * 2.5 * step**max(n_pre - 1, 0)
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
    ax.set_ylim(min(lowest / (4 * step ** max(n_dec, 1)), hw.vector_ops) / 4, max(top * 8, top_label * 3))
    ax.set_xlabel("arithmetic intensity (ops per DRAM byte)")
    ax.set_ylabel("attained ops/s (MAC = 2 ops)")
    ax.grid(which="both", alpha=0.25)
    name = getattr(shape, "name", shape)
    ax.set_title(f"{name} on {hw.name}: roofline, one layer's operations + lm_head "
                 f"(batch {batch}, seq {seq})",
                 fontsize=10)
    return _save(fig, path)


def plot_pareto(result, path: str, capacity_gib: float | None = None) -> str:
    """SQNR against memory and against decode energy per token, one point per design point.

    ``capacity_gib``: the device's memory; points that need more are drawn hollow and listed in the
    legend as "does not fit in N GiB" (and the memory panel shows the capacity as a line)."""
    plt = _plt()
    rows = result.rows
    fig, axes = plt.subplots(1, 2, figsize=(13.5, 5.4), sharey=True)
    fig.subplots_adjust(wspace=0.06)
    colors = {"rptq": "C0", "qrazor": "C1"}

    def fits(r):
        return capacity_gib is None or r["memory_gib"] <= capacity_gib

    for ax, key, front_key, xlabel in (
        (axes[0], "memory_gib", "pareto_memory",
         f"total memory (GiB), batch {result.batch}, seq {result.seq}"),
        (axes[1], "decode_energy_per_token_j", "pareto_energy",
         "decode energy per token (J, 45 nm MAC figures)"),
    ):
        for method, col in colors.items():
            pts = [r for r in rows if r["method"] == method and fits(r)]
            if pts:
                ax.scatter([r[key] for r in pts], [r["sqnr_db"] for r in pts], s=14, color=col, alpha=0.55,
                           label=method)
            big = [r for r in rows if r["method"] == method and not fits(r)]
            if big:
                ax.scatter([r[key] for r in big], [r["sqnr_db"] for r in big], s=16, facecolors="none",
                           edgecolors=col, linewidths=0.8, alpha=0.8,
                           label=f"{method}: does not fit in {capacity_gib:.0f} GiB")
        if capacity_gib is not None and key == "memory_gib":
            ax.axvline(capacity_gib, color="crimson", ls="--", lw=1, label=f"{result.hardware} capacity")
        front = sorted((r for r in rows if r[front_key]), key=lambda r: r[key])
        ax.plot([r[key] for r in front], [r["sqnr_db"] for r in front], "k-", lw=1, marker="o", ms=5,
                mfc="none", label="Pareto front")
        ax.set_xscale("log")
        xs = [r[key] for r in rows]
        if capacity_gib is not None and key == "memory_gib":
            xs.append(capacity_gib)  # the capacity line stays in view
        lo, hi = min(xs) / 1.15, max(xs) * 1.15
        ax.set_xlim(lo, hi)
        split = np.exp(np.log(lo) + 0.62 * (np.log(hi) - np.log(lo)))  # labels of points right of this go left
        last = -np.inf
        for r in front:  # label the front, skipping points within 1.5 dB of the last label (legibility)
            if r["sqnr_db"] - last >= 1.5:
                left = r[key] > split
                ax.annotate(r["label"], (r[key], r["sqnr_db"]), fontsize=7, xytext=(-6 if left else 6, -3),
                            ha="right" if left else "left", textcoords="offset points",
                            bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.7))
                last = r["sqnr_db"]
        _plain_log_ticks(ax.xaxis)
        ax.set_xlabel(xlabel)
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")  # the front climbs to the upper right: that corner is busy
    axes[0].set_ylabel("SQNR (dB): layer output and K cache noise together, refsim")
    fig.suptitle(f"{result.model} on {result.hardware}: co-design sweep ({len(rows)} points; calibration "
                 f"{result.calib_source})", fontsize=10)
    return _save(fig, path)


def plot_accuracy_pareto(rows: list[dict], path: str) -> str:
    """``refsim sweep``: perplexity against decode and against prefill tokens/s per device, per model.

    Colour: hardware (hypothetical parts named so in the legend). Marker: the accuracy source,
    circles for what ``refsim eval`` measured, triangles for a paper's table. Hollow: the point does
    not fit the device's memory (never on a front). Lines: the Pareto fronts of that panel's axis, one
    per (source, batch, sequence), labelled with their configurations (and the hardware, unless every
    hardware of the sweep shares the point). Decode is
    bandwidth-bound, so hardware that differs only in its integer datapaths lands on one place there;
    prefill shows what int4 / int3 tensor cores buy."""
    plt = _plt()
    rows = [r for r in rows if r["perplexity"] is not None]
    models = list(dict.fromkeys(r["model"] for r in rows))
    panels = [("decode_tokens_per_s", "pareto_decode", "decode"), ("prefill_tokens_per_s", "pareto_prefill",
                                                                   "prefill")]
    fig, axes = plt.subplots(max(len(models), 1), 2, figsize=(15, 5.2 * max(len(models), 1)), squeeze=False)
    hws = list(dict.fromkeys(r["hardware"] for r in rows))
    color = {h: f"C{i % 10}" for i, h in enumerate(hws)}
    hypo = {r["hardware"]: r["hypothetical"] for r in rows}

    def marker(source: str) -> str:
        return "^" if source.startswith("paper") else "o"

    if not models:
        for ax in axes[0]:
            ax.text(0.5, 0.5, "no point has a perplexity:\ngive --accuracy FILE.json or --paper",
                    ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
    for row_axes, model in zip(axes, models, strict=False):
        pts = [r for r in rows if r["model"] == model]
        for ax, (key, flag, stage) in zip(row_axes, panels, strict=True):
            # smaller markers for later hardware, so points that coincide stay visible as rings
            for k, h in enumerate(hws):
                for r in (r for r in pts if r["hardware"] == h):
                    c = color[h]
                    ax.scatter(r[key], r["perplexity"], s=60 / (1 + k), marker=marker(r["source"]),
                               facecolors=c if r["fits"] else "none", edgecolors=c, linewidths=0.9, zorder=3 + k)
            fronts: dict[tuple, list] = {}
            labels: dict[tuple, list] = {}
            for r in pts:
                if r[flag]:
                    fronts.setdefault((r["source"], r["accuracy_model"], r["batch"], r["seq"]), []).append(r)
            for (_source, _whose, b, s), fr in fronts.items():
                fr.sort(key=lambda r: r[key])
                ax.plot([r[key] for r in fr], [r["perplexity"] for r in fr], "-", color="0.25", lw=0.8, zorder=2)
                ax.annotate(f"b{b} s{s}", (fr[-1][key], fr[-1]["perplexity"]), fontsize=6, xytext=(4, 4),
                            textcoords="offset points", color="0.25")
                for r in fr:  # points at one place (hardware whose extra datapaths go unused) share a label
                    at = (round(np.log10(r[key]), 2), round(r["perplexity"], 1))
                    labels.setdefault(at, {}).setdefault(r["config"], []).append(r["hardware"])
            xs = [r[key] for r in pts]
            lo, hi = np.log10(min(xs)), np.log10(max(xs))
            for (lx, y), by_cfg in labels.items():
                text = ", ".join(c if len(set(h)) == len(hws) else f"{c} ({', '.join(dict.fromkeys(h))})"
                                 for c, h in by_cfg.items())
                right = hi > lo and (lx - lo) / (hi - lo) > 0.6  # near the right edge: label to the left
                ax.annotate(text, (10**lx, y), fontsize=6, xytext=(-4 if right else 4, -8),
                            ha="right" if right else "left", textcoords="offset points", color="0.3")
            ax.set_xscale("log")
            if hi - lo < 1.3:  # less than about a decade: ticks at 1..7 x 10^k, else the usual 1, 2, 3, 5
                _dense_log_ticks(ax.xaxis)
            else:
                _plain_log_ticks(ax.xaxis)
            ax.set_xlabel(f"{stage} tokens/s per device (roofline upper bound)")
            ax.set_ylabel("perplexity")
            ax.set_title(f"{model}: {stage}", fontsize=10)
            ax.grid(which="both", alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="s", color=color[h], label=h + (" (hypothetical)" if hypo[h] else ""))
               for h in hws]
    handles += [Line2D([], [], ls="", marker=marker(s), color="0.3", label=s) for s in sorted({r["source"]
                                                                                               for r in rows})]
    handles += [Line2D([], [], ls="", marker="o", markerfacecolor="none", color="0.3", label="does not fit the device"),
                Line2D([], [], color="0.25", lw=0.8, label="Pareto front (per source, batch b, sequence s)")]
    fig.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 0.95))
    fig.suptitle("refsim sweep: perplexity against throughput (measured and published perplexities are never "
                 "on one front)", fontsize=10)
    return _save(fig, path)
