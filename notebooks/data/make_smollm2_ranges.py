#!/usr/bin/env python3
"""Write notebooks/data/smollm2_ranges.json: SmolLM2-135M's per-channel (min, max) at RPTQ's hidden-size
reorder points, and the reorders refsim computes from them, for notebooks/05_rptq_seen.py.

    REFSIM_DATA=/tmp/i12data python notebooks/data/make_smollm2_ranges.py [--out FILE] [--layers 0,11,29]

Needs the model and the novels (``make realmodel``). The calibration is refsim eval's, taken through its
own code: the first 512 tokens of *Sense and Sensibility* (``refsim.corpus.austen_novel``), tokenized and
cut into 2 sequences of 256 by ``refsim_app.eval._calibration`` (what ``refsim eval --calib-text
sense.txt --nsamples 2 --calib-seqlen 256`` calibrates on, as for notebooks/data/smollm2_eval.json), the
model loaded by ``refsim.rptq.calibrate.load_causal_lm`` / ``float_model`` (the GGUF's Q4_1 weights
dequantized to float32), each layer's ranges measured by ``refsim.rptq.calibrate.layer_statistics`` on
the float outputs of the layers before it (``--calib-inputs float``: one float forward pass), and the
reorders by ``refsim.rptq.pipeline.find_reorders`` (k-means, 32 clusters, seed 0, what ``build_block``
uses). Kept: for every layer, the spread (widest channel range / median range) of each point; for the
layers of ``--layers``, the points ``rms1`` (input RMSNorm output, R1), ``rms2`` (post-attention RMSNorm
output, R4) and ``down_in`` (down_proj input, R5): per-channel min and max (float32, written as the
shortest decimal that reads back to the same float32) and the 32-cluster reorder (perm, cluster ids
in the original channel order, sizes). The calibration token ids are kept too (``calib_ids``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
POINTS = ("rms1", "rms2", "down_in")
CLUSTERS = 32
NSAMPLES, SEQLEN = 2, 256  # 512 tokens, the calibration of smollm2_eval.json


def f32(a) -> list[float]:
    """float32 values as the shortest decimals that read back to the same float32 (exact, and short)."""
    a = np.asarray(a, np.float32)
    out = [float(np.format_float_positional(v, unique=True, trim="-")) for v in a]
    if not np.array_equal(np.asarray(out, np.float32), a):  # JSON's float64 must read back to these float32
        raise AssertionError("a float32 value does not survive its decimal")
    return out


def spread(lo, hi) -> float:
    r = np.asarray(hi, np.float64) - np.asarray(lo, np.float64)
    return float(r.max() / np.median(r))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(HERE / "smollm2_ranges.json"), help="the JSON file to write")
    ap.add_argument("--layers", default="0,11,29", help="layers whose ranges are kept (default 0,11,29)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from golden.bundle import sha256_file
    from refsim.corpus import austen_novel
    from refsim.formats.gguf import smollm2_gguf
    from refsim.outputs import atomic_write_text
    from refsim.progress import report_progress
    from refsim.rptq.calibrate import float_model, layer_statistics, load_causal_lm
    from refsim.rptq.pipeline import find_reorders
    from refsim_app.eval import _calibration

    path = smollm2_gguf()
    hf, cfg, _ = load_causal_lm(str(path))
    model = float_model(hf)
    del hf
    layers = [int(t) for t in args.layers.split(",")]
    if any(not 0 <= i < len(model.blocks) for i in layers):
        raise SystemExit(f"--layers {args.layers}: allowed 0..{len(model.blocks) - 1}")
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "sense.txt"
        text.write_text(austen_novel("sensesensibility"), encoding="utf-8")
        ns = argparse.Namespace(model=str(path), nsamples=NSAMPLES, seed=0, calib_text=str(text),
                                calib_token_ids=None)
        ids, note = _calibration(ns, model.meta["vocab"], SEQLEN)
        note = note.replace(str(text), "sense.txt = refsim.corpus.austen_novel('sensesensibility')")
    topo = model.topology
    reorder_of = {p.name: p.reorder for p in topo.points}
    xs = [model.embed(s) for s in ids]
    spreads, kept = [], {}
    for i, block in enumerate(model.blocks):
        stats, _, xs = layer_statistics(topo, block, xs)  # float calibration inputs: the float model's outputs
        spreads.append({p: round(spread(*stats[p]), 3) for p in POINTS})
        if i in layers:
            ro = find_reorders(stats, heads=block.heads, n_clusters=CLUSTERS, head_clusters=4, seed=0,
                               topology=topo, head_dim=block.meta.get("head_dim"))
            kept[str(i)] = {p: {"reorder": reorder_of[p], "min": f32(stats[p][0]), "max": f32(stats[p][1]),
                                "perm": ro[reorder_of[p]].perm.tolist(),
                                "ids": ro[reorder_of[p]].ids_old.tolist(),
                                "sizes": ro[reorder_of[p]].sizes.tolist()} for p in POINTS}
        report_progress("smollm2 ranges: layer", i + 1, len(model.blocks))
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    doc = {
        "what": "SmolLM2-135M per-channel (min, max) at RPTQ's hidden-size reorder points and refsim's reorders",
        "model": path.name, "model_sha256": sha256_file(path), "model_type": cfg.model_type,
        "weights_note": "the GGUF's Q4_1 weights dequantized to float32 by transformers (float forward pass)",
        "calibration": note, "calib_tokens": int(ids.size),
        "calib_sha256": hashlib.sha256(np.ascontiguousarray(ids).tobytes()).hexdigest(),
        "calib_ids": ids.tolist(),
        "calib_inputs": "float (each layer on the float outputs of the layers before it)",
        "clusters": CLUSTERS, "kmeans_seed": 0, "points": {p: reorder_of[p] for p in POINTS},
        "command": "REFSIM_DATA=/tmp/i12data python notebooks/data/make_smollm2_ranges.py --layers " + args.layers,
        "refsim_commit": commit, "made": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "layers": len(model.blocks), "spread": spreads, "ranges": kept,
    }
    atomic_write_text(args.out, json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
