"""Error reports: SQNR per stage of the quantized block, per-tensor vs per-cluster activation
quantization at each RPTQ point, and the per-channel range plot (RPTQ's Figure 1).

SQNR = ``refsim.sqnr_db`` against the float block (config W16A16) on the same input.
"""

from __future__ import annotations

import numpy as np

import refsim
from refsim.models.opt import OPT
from refsim.qtensor import rptq_fake_quant
from refsim.rptq.block import CONFIGS, POINTS, opt_block

FLOAT_STAGES = ("ln1", "q", "k", "v", "probs", "attn", "out_proj", "h1", "ln2", "fc1", "relu", "fc2", "out")
# activation point -> the float stage it quantizes (the topology's)
POINT_STAGE = dict(OPT.calibration_stages)


def point_bits(point, abits, kvbits):
    """Bits of an OPT calibration point: the topology's bit rule (``Topology.point_bits``)."""
    return OPT.point_bits(point, abits, kvbits)


def stage_sqnr(block, xs, configs) -> dict:
    """{label: {stage: SQNR dB}} over the sequences ``xs`` (list of (T, hidden)); stages concatenated.

    configs: {label: config} (a config name, {"wbits", "abits", "kvbits"} or a scheme, ``refsim.schemes``,
    e.g. one with a given spec), or a list of names.
    """
    if not isinstance(configs, dict):
        configs = {c: c for c in configs}
    refs = [opt_block(block, x, config="W16A16") for x in xs]
    out = {}
    for label, config in configs.items():
        runs = [opt_block(block, x, config=config) for x in xs]
        out[label] = {s: refsim.sqnr_db(np.concatenate([r[s].ravel() for r in refs]),
                                         np.concatenate([r[s].ravel() for r in runs])) for s in FLOAT_STAGES}
    return out


def acc_bits(block, xs, config) -> dict:
    """{gemm: signed bits of the largest per-cluster int sum} of the integer GEMMs under ``config`` (as in
    ``stage_sqnr``) over the sequences ``xs``: the width a wrap accumulator per cluster sum needs for this data."""
    from refsim.accumulate import max_signed_bits

    out = {}
    for x in xs:
        st = opt_block(block, x, config=config)
        for k, v in st.items():
            if k.endswith("_acc"):
                out[k[:-4]] = max(out.get(k[:-4], 1), max_signed_bits(v))
    return out


def fake_quant(x, lo, hi, ids, bits, *, spec=None):
    """RPTQ min-max fake quantization of x (T, C) with per-cluster ranges (ids per channel) under ``spec``
    (None: the ``rptq`` preset): ``refsim.qtensor.rptq_fake_quant``, the one per-cluster recipe."""
    return rptq_fake_quant(x, lo, hi, np.asarray(ids), bits=bits, spec=spec)


def activation_sqnr(block, xs, *, abits=4, kvbits=4, spec=None) -> dict:
    """{point: {"bits", "per_tensor", "per_cluster", "clusters"}}: SQNR (dB) of quantizing each point's float
    activation alone under ``spec`` (None: ``rptq``), with one range for the whole tensor vs one per cluster
    (the block's reorder)."""
    refs = [opt_block(block, x, config="W16A16") for x in xs]
    out = {}
    for point, r in POINTS.items():
        bits = point_bits(point, abits, kvbits)
        if bits is None:
            continue
        x = np.concatenate([s[POINT_STAGE[point]] for s in refs], axis=0)
        lo, hi = block[f"stat.{point}.min"], block[f"stat.{point}.max"]
        ids = block.ids(r)
        per_tensor = fake_quant(x, lo, hi, np.zeros_like(ids), bits, spec=spec)
        per_cluster = fake_quant(x, lo, hi, ids, bits, spec=spec)
        out[point] = {"bits": bits, "reorder": r, "clusters": block.n_clusters(r),
                      "per_tensor": refsim.sqnr_db(x, per_tensor), "per_cluster": refsim.sqnr_db(x, per_cluster)}
    return out


def plot_ranges(panels, path, *, title="") -> None:
    """Per-channel [min, max] before and after reordering, one row per panel.

    panels: list of (name, xmin, xmax, perm, sizes) with xmin/xmax in the original channel order.
    Written to a temporary name and renamed.
    """
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 2, figsize=(12, 2.6 * len(panels)), squeeze=False)
    for row, (name, lo, hi, perm, sizes) in enumerate(panels):
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        for col, (order, label) in enumerate(((np.arange(lo.size), "original order"), (perm, "after reordering"))):
            ax = axes[row, col]
            ch = np.arange(lo.size)
            ax.vlines(ch, lo[order], hi[order], linewidth=max(0.2, min(2.0, 400 / lo.size)), color="tab:blue")
            if col == 1:
                for b in np.cumsum(sizes)[:-1]:
                    ax.axvline(b - 0.5, color="tab:red", linewidth=0.6, alpha=0.7)
            ax.set_title(f"{name}: {label}" + (f" ({len(sizes)} clusters)" if col == 1 else ""), fontsize=9)
            ax.set_xlabel("channel" if col == 0 else "reordered position (new[j] = old[perm[j]])")
            ax.set_ylabel("min .. max")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = f"{path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def markdown_report(layers, *, calib_note, configs=tuple(CONFIGS), abits=4, kvbits=4) -> str:
    """The human-readable report: per layer, per-tensor vs per-cluster SQNR per point, SQNR per stage."""
    lines = ["# refsim calibrate: error report", "", calib_note, "",
             "SQNR in dB against the float (W16A16) block on held calibration sequences.", ""]
    for i, rep in enumerate(layers):
        lines += [f"## layer {i}", "", f"Activation quantization alone (abits={abits}, kvbits={kvbits}):", "",
                  "| point | reorder | bits | clusters | per-tensor | per-cluster (reordered) |",
                  "|---|---|---|---|---|---|"]
        for p, r in rep["activations"].items():
            lines.append(f"| {p} | {r['reorder']} | {r['bits']} | {r['clusters']} | {r['per_tensor']:.2f} | "
                         f"{r['per_cluster']:.2f} |")
        stages = list(FLOAT_STAGES)
        lines += ["", "Whole block, SQNR per stage:", "", "| config | " + " | ".join(stages) + " |",
                  "|---" * (len(stages) + 1) + "|"]
        for c, row in rep["stages"].items():
            lines.append(f"| {c} | " + " | ".join(f"{row[s]:.1f}" for s in stages) + " |")
        if rep.get("acc_bits"):
            lines += ["", "Accumulator bits the command's configuration needed (largest per-cluster sum): " +
                      ", ".join(f"{k} {v}" for k, v in rep["acc_bits"].items())]
        lines.append("")
    return "\n".join(lines) + "\n"
