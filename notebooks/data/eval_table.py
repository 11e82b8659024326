"""The markdown tables of docs/eval.md from a `refsim eval --json` results file.

    python notebooks/data/eval_table.py notebooks/data/smollm2_eval.json [--float-ppl X]

Prints one table per group (RPTQ's Table 1 rows, the native-weights rows, QRazor, the cluster ablation,
GPTQ against RTN), each row with the perplexity, its ratio to W16A16, the predicted tokens and the SQNR
(dB, against refsim's own W16A16 on the same blocks) of q, k, v, the attention output, the layer output
and the logits. ``--float-ppl``: transformers' own float32 perplexity on the same windows, shown first.
"""

from __future__ import annotations

import argparse
import json
import math

SQNR = ("q", "k", "v", "attn", "out", "logits")
GROUPS = (
    ("RPTQ (Table 1 rows), 32 clusters, 4 per head, GPTQ weights",
     lambda c: "@" not in c and not c.startswith(("QRAZOR", "NATIVE"))),
    ("GGUF native weights (the file's Q4_1 codes, block-aligned reorders)", lambda c: c.startswith("NATIVE")),
    ("QRazor (absmax base precision + SDR; group size after @g, 16 by default)", lambda c: c.startswith("QRAZOR")),
    ("Cluster ablation (RPTQ Figure 4): W4A4 with N clusters of R1/R4/R5 (c1: one range per tensor, no reorder)",
     lambda c: c.startswith("W4A4@c") or c == "W4A4"),
    ("GPTQ against round-to-nearest weights", lambda c: c.endswith("@rtn") or c == "W4A4"),
)


def _db(v) -> str:
    if v is None:
        return "--"
    return "inf" if math.isinf(v) else f"{v:.1f}"


def table(results: list[dict], float_ppl: float | None = None) -> str:
    by = {r["config"]: r for r in results}
    ref = by.get("W16A16", {}).get("perplexity")
    out = []
    for title, keep in GROUPS:
        rows = [r for r in results if keep(r["config"])]
        if not rows:
            continue
        if title.startswith("Cluster"):
            rows.sort(key=lambda r: r.get("clusters") or 0)
        out += [f"**{title}**", "", "| config | weights | perplexity | / W16A16 | predicted tokens | SQNR dB: "
                + " / ".join(SQNR) + " |", "|---|---|---:|---:|---:|---|"]
        if float_ppl is not None and ref and title.startswith("RPTQ"):
            out.append(f"| transformers float32 | GGUF dequantized | {float_ppl:.4f} | {float_ppl / ref:.4f} "
                       "| -- | -- |")
        for r in rows:
            ratio = f"{r['perplexity'] / ref:.3f}" if ref else "--"
            sq = "(the reference)" if r["config"] == "W16A16" else " / ".join(_db(r["sqnr_db"].get(s)) for s in SQNR)
            out.append(f"| {r['config']} | {r.get('weights', '--')} | {r['perplexity']:.4f} | {ratio} | "
                       f"{r['tokens']} | {sq} |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--float-ppl", type=float, default=None)
    a = ap.parse_args(argv)
    with open(a.results, encoding="utf-8") as f:
        doc = json.load(f)
    print(table(doc["results"], a.float_ppl))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
