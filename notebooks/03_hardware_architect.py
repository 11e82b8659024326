# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Hardware architect: is a 3-bit accelerator worth it?
#
# The question: what do int3 (or int4) tensor cores buy for a large LLM, and what does the
# quantization they need cost in accuracy? Cost comes from `hwmodel` (the model behind `refsim cost`
# and `refsim sweep`: memory footprint, DRAM traffic, a roofline for throughput, an energy model);
# accuracy from two sources, never mixed on one front:
#
# * **measured here**: `refsim eval` on SmolLM2-135M (a real LLaMA-architecture model, the GGUF that
#   the `realmodel` extra installs), read from the committed results file
#   `notebooks/data/smollm2_eval.json` (its command and setup: `notebooks/data/README.md`): one window
#   of 2048 tokens of Persuasion (2047 predicted tokens), calibrated on 4 x 512 tokens of Sense and
#   Sensibility, *not* RPTQ's Table 1 setup (128 x 2048 calibration tokens, whole test sets); its W16A16
#   weights are the GGUF's Q4_1 weights dequantized. It stands in, labelled, for the
#   LLaMA-family model of the cost grid (LLaMA-2-7B), which cannot run on this machine.
# * **the papers' figures**: RPTQ's published WikiText2 perplexities of OPT-66b
#   (`hwmodel/paper_accuracy.py`, every row labelled `paper: ...`). OPT-175b has no verified published
#   figure here, so it gets costs only.
#
# Hardware: the H200 (no int4 tensor cores: W4A4 runs on int8) and two *hypothetical* parts, H200-int4
# (int4 tensor cores at 2x int8) and H200-int3 (int3 at 2.67x int8); see docs/costmodel.md.

# %%
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from IPython.display import Image, display

import hwmodel
from hwmodel.paper_accuracy import paper_rows

ROOT = Path(os.environ.get("REFSIM_REPO") or Path.cwd().resolve().parent)  # the checkout (notebooks/..)
WORK = Path(tempfile.mkdtemp(prefix="refsim-arch-"))  # everything this notebook writes goes here
RESULTS = ROOT / "notebooks" / "data" / "smollm2_eval.json"

MODELS = ["opt-66b", "opt-175b", "llama-2-7b"]
LLAMA = "llama-2-7b"  # the LLaMA-family model SmolLM2's measured perplexity stands in for
CONFIGS = ["W16A16", "W4A16", "W4A4", "W4A4KV", "W3A3KV", "W3A3"]
HW = ["H200", "H200-int4", "H200-int3"]
BATCHES, SEQ = [1, 64], 2048

measured_doc = json.loads(RESULTS.read_text())
measured = {r["config"]: r for r in measured_doc["results"]}
print(f"measured by refsim eval: {Path(measured_doc['model']).name} on {measured_doc['text']}, "
      f"calibration {measured_doc['calibration']}")
print(measured_doc["weights_note"])
for cfg, r in measured.items():
    print(f"  {cfg:7} perplexity {r['perplexity']:8.3f}   {r['tokens']} predicted tokens, "
          f"{r['windows']} windows of {r['seqlen']}")
papers = {r["config"]: r for r in paper_rows(("wikitext2",)) if r["model"] == "opt-66b"}
print(f"papers' figures ({next(iter(papers.values()))['source']}), OPT-66b:")
for cfg, r in papers.items():
    print(f"  {cfg:7} perplexity {r['perplexity']:6.2f}")

# %% [markdown]
# ## Memory and traffic
#
# What each configuration needs at 64 sequences of 2048 tokens (weights, KV cache, prefill
# activations), whether it fits the H200's 141 GB, and the DRAM bytes one decode step moves per
# generated token (decode is bandwidth-bound: these bytes set its speed on every H200 variant).

# %%
h200 = hwmodel.get_hardware("H200")
print(f"{'model':10} {'config':7} {'weights GiB':>11} {'KV GiB':>8} {'total GiB':>9} {'fits H200':>9} "
      f"{'decode MB/token':>15}")
mem = {}
for model in MODELS:
    for cfg in CONFIGS:
        m = hwmodel.memory(model, cfg, batch=64, seq=SEQ)
        dec = hwmodel.throughput(model, cfg, "H200", batch=64, seq=SEQ)["decode"]
        mem[model, cfg] = m
        print(f"{model:10} {cfg:7} {m.weights / hwmodel.GIB:11.1f} {m.kv_cache_gib:8.1f} {m.total_gib:9.1f} "
              f"{str(m.total <= h200.capacity):>9} {dec['dram_bytes'] / dec['tokens'] / 1e6:15.1f}")

# %% [markdown]
# ## The sweep: cost against accuracy
#
# `refsim sweep` costs every (model, configuration, hardware, batch) point and joins the
# perplexities: the measured file joined to LLaMA-2-7B (`FILE.json=llama-2-7b`, so each row names
# SmolLM2 as its `accuracy_model`), RPTQ's published WikiText2 figures to OPT-66b. It writes
# sweep.json and the Pareto plot `pareto.png` into this notebook's output directory.

# %%
sweep_dir = WORK / "sweep"
cmd = [sys.executable, "-m", "refsim_app", "sweep", "--models", ",".join(MODELS), "--configs", ",".join(CONFIGS),
       "--hw", ",".join(HW), "--batch", ",".join(map(str, BATCHES)), "--seq", str(SEQ),
       "--accuracy", f"{RESULTS}={LLAMA}", "--paper", "wikitext2", "--scheduler", "inline",
       "--out", str(sweep_dir), "--json"]
env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=WORK)
assert proc.returncode == 0, proc.stderr[-2000:]
summary = json.loads(proc.stdout)
rows = json.loads((sweep_dir / "sweep.json").read_text())["rows"]
print("refsim sweep " + " ".join(cmd[4:]).replace(str(ROOT) + "/", ""))
print(f"{len(rows)} rows, {summary['accuracy']['rows_with_perplexity']} with a perplexity; "
      f"{sum(r['pareto_decode'] for r in rows)} on a decode front, {sum(r['pareto_prefill'] for r in rows)} "
      "on a prefill front")
display(Image(filename=str(sweep_dir / "pareto.png")))

# %% [markdown]
# Left: decode. Every H200 variant lands on the same place: decode reads all weights and the KV
# cache for every token, so its speed is bandwidth, and fewer bits there (W4, KV at 4 or 3 bits) is
# what moves a point right. Right: prefill, which is compute-bound: only configurations whose GEMM
# inputs are all low-bit (W4A4, W3A3) move with int4 / int3 tensor cores.
#
# ## What int3 tensor cores buy
#
# The ratio of each hypothetical part's throughput to the H200's and to the int4 part's, per model
# and configuration, at batch 64 x 2048 tokens, read from the sweep's rows.

# %%
def row(model, cfg, hw, batch=64, source=None):
    """The sweep's row of one point (the first accuracy source unless one is named)."""
    found = [r for r in rows if (r["model"], r["config"], r["hardware"], r["batch"]) == (model, cfg, hw, batch)
             and (source is None or r["source"] == source)]
    assert found, (model, cfg, hw, batch, source)
    return found[0]


gain = {}
print(f"{'model':10} {'config':7} {'prefill int3/H200':>17} {'prefill int3/int4':>17} {'decode int3/int4':>16} "
      f"{'J/token int3':>12}")
for model in MODELS:
    for cfg in ("W4A4", "W3A3", "W3A3KV"):
        base, i4, i3 = (row(model, cfg, h) for h in HW)
        gain[model, cfg] = {"prefill_vs_h200": i3["prefill_tokens_per_s"] / base["prefill_tokens_per_s"],
                            "prefill_vs_int4": i3["prefill_tokens_per_s"] / i4["prefill_tokens_per_s"],
                            "decode_vs_int4": i3["decode_tokens_per_s"] / i4["decode_tokens_per_s"]}
        g = gain[model, cfg]
        print(f"{model:10} {cfg:7} {g['prefill_vs_h200']:17.3f} {g['prefill_vs_int4']:17.3f} "
              f"{g['decode_vs_int4']:16.3f} {i3['decode_energy_per_token_j']:12.4f}")

peak_ratio = hwmodel.get_hardware("H200-int3").peak(3, 3) / hwmodel.get_hardware("H200-int4").peak(3, 3)
print(f"int3 / int4 peak of the (3, 3) datapath: {peak_ratio:.3f}; realised on W3A3 prefill: "
      f"{min(g['prefill_vs_int4'] for (m, c), g in gain.items() if c == 'W3A3'):.3f} .. "
      f"{max(g['prefill_vs_int4'] for (m, c), g in gain.items() if c == 'W3A3'):.3f} "
      "(attention's softmax and the norms do not get faster)")

# %% [markdown]
# ## At what accuracy?
#
# The configuration that int3 tensor cores speed up is W3A3: 3-bit weights *and* 3-bit GEMM inputs
# (the norm outputs stay at 8 bits, RPTQ's rule). `refsim eval` measured it on SmolLM2, next to W4A4,
# which is what int4 tensor cores run, and to RPTQ's W3A3KV (3-bit weights and KV cache, GEMMs on the
# fp16 path), measured here and published for OPT-66b.

# %%
ppl16, ppl4w, ppl44, ppl33kv, ppl33 = (measured[c]["perplexity"]
                                       for c in ("W16A16", "W4A16", "W4A4", "W3A3KV", "W3A3"))
paper16, paper33kv, paper44 = (papers[c]["perplexity"] for c in ("W16A16", "W3A3KV", "W4A4"))
g66 = gain["opt-66b", "W3A3"]
answer = (
    f"At 64 x {SEQ} tokens, int3 tensor cores speed up OPT-66b's W3A3 prefill {g66['prefill_vs_int4']:.3f}x over "
    f"int4 tensor cores ({g66['prefill_vs_h200']:.2f}x over the H200) and its decode {g66['decode_vs_int4']:.3f}x "
    f"(bandwidth-bound), while the 3-bit activations they need raise SmolLM2-135M's measured perplexity "
    f"{ppl33 / ppl16:.0f}x ({ppl16:.2f} -> {ppl33:.0f}), against {ppl44 / ppl16:.1f}x for the 4-bit activations "
    f"int4 tensor cores take ({ppl44:.1f}) and {ppl33kv / ppl16:.1f}x for W3A3KV, which stores 3-bit weights and "
    f"KV cache without the 3-bit datapath ({ppl33kv:.1f}; RPTQ publishes {paper16:.2f} -> {paper33kv:.2f} for "
    f"OPT-66b): 3-bit hardware buys about {100 * (g66['prefill_vs_int4'] - 1):.0f}% of prefill over 4-bit "
    "hardware, at an accuracy that RPTQ-style 3-bit activations do not deliver on this model.")
print(answer)

# %% [markdown]
# **Answer.** The sentence printed above is computed from the sweep and the results file; its gist:
# 3-bit tensor cores buy a few percent of prefill over 4-bit ones (the roofline's 4/3 on the GEMMs,
# diluted by the work that stays at fp16/fp32), nothing in decode, where bandwidth rules and where
# low-bit *storage* (W3 weights, a 3-bit KV cache) is what pays; and the 3-bit activations they need
# wreck a small model's accuracy under RPTQ-style quantization (W3A3 on SmolLM2 is two orders of
# magnitude worse than W16A16; W4A4 is already several times worse on this 135M model at 2048-token
# windows). Storage at 3 bits with fp16 arithmetic (W3A3KV) is the 3-bit design this data supports.
#
# ## Checks

# %%
# the measured perplexities: finite, from the stated run, ordered by bits
assert all(np.isfinite(r["perplexity"]) and r["perplexity"] > 1 for r in measured.values())
assert all(measured[c]["tokens"] == 2047 and measured[c]["seqlen"] == 2048 for c in CONFIGS)
assert ppl16 <= ppl4w <= ppl44 <= ppl33 and ppl4w <= ppl33kv <= ppl33
# the sweep joined what was asked: measured rows on LLaMA-2-7B only, named as SmolLM2's, paper rows on OPT-66b
meas_rows = [r for r in rows if r["source"] == "measured (refsim eval)"]
assert meas_rows and {r["model"] for r in meas_rows} == {LLAMA}
assert all("SmolLM2" in r["accuracy_model"] for r in meas_rows)
assert {r["model"] for r in rows if (r["source"] or "").startswith("paper")} == {"opt-66b"}
assert all(r["perplexity"] == measured[r["config"]]["perplexity"] for r in meas_rows)
# every Pareto front is non-empty and monotone: more throughput never comes with lower perplexity
fronts = {}
for r in rows:
    if r["pareto_decode"]:
        fronts.setdefault((r["model"], r["source"], r["batch"]), []).append(r)
assert {(m, b) for m, _, b in fronts} == {(m, b) for m in ("opt-66b", LLAMA) for b in BATCHES}
for key, pts in fronts.items():
    pts = sorted(pts, key=lambda r: (r["decode_tokens_per_s"], r["perplexity"]))
    assert all(p["fits"] for p in pts), key
    assert np.all(np.diff([p["perplexity"] for p in pts]) >= 0), key
# the sweep's throughputs are hwmodel's, and int3's gain is what hwmodel's roofline says
for model in MODELS:
    api = {h: hwmodel.throughput(model, "W3A3", h, batch=64, seq=SEQ)["prefill"]["tokens_per_s"] for h in HW}
    assert row(model, "W3A3", "H200-int3")["prefill_tokens_per_s"] == api["H200-int3"]
    assert gain[model, "W3A3"]["prefill_vs_int4"] == api["H200-int3"] / api["H200-int4"]
    assert 1 < gain[model, "W3A3"]["prefill_vs_int4"] < peak_ratio  # roofline: never more than the peak ratio
    assert gain[model, "W4A4"]["prefill_vs_int4"] == 1.0  # W4A4 already runs on int4: int3 buys it nothing
    assert abs(gain[model, "W3A3"]["decode_vs_int4"] - 1) < 1e-9  # decode is bandwidth-bound
assert abs(peak_ratio - 4 / 3) < 1e-12
# OPT-175b W16A16 does not fit one H200 at this batch; its W4A4KV needs far less
assert not mem["opt-175b", "W16A16"].total <= h200.capacity
assert mem["opt-175b", "W4A4KV"].total < mem["opt-175b", "W16A16"].total / 3
assert (sweep_dir / "pareto.png").stat().st_size > 10_000
print("all checks passed")
