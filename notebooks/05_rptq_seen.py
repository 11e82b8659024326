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
# # 5. RPTQ, seen: a real model's channel ranges, before and after reordering
#
# RPTQ (Yuan et al., 2023, arXiv 2304.01089) starts from one picture (its Figure 1): in an LLM's
# activations, a few channels have ranges far wider than the rest, so one scale for the whole
# tensor wastes most of the 3 or 4 bits on range that almost no channel uses. RPTQ clusters the
# channels by their calibrated (min, max) with k-means, reorders them so that each cluster is
# contiguous, and gives each cluster its own scale and zero point. Its Figure 4 asks how many
# clusters it takes.
#
# Here both, on **SmolLM2-135M-Instruct** (a 30-layer LLaMA-family model, hidden size 576, FFN 1536;
# the Q4_1 GGUF of the `realmodel` extra, its weights dequantized to float32). The model is not
# installed where this notebook runs in CI, so it reads two **committed data files**
# (`notebooks/data/README.md` gives the command that made each):
#
# * `notebooks/data/smollm2_ranges.json`: per-channel (min, max) of three layers at RPTQ's three
#   hidden-size reorder points (`rms1`, the input RMSNorm's output, R1; `rms2`, the post-attention
#   RMSNorm's output, R4; `down_in`, the down-projection's input, R5), calibrated by refsim's own
#   float forward pass on the first 512 tokens of *Sense and Sensibility*, and the 32-cluster reorders
#   refsim computed from them (`notebooks/data/make_smollm2_ranges.py`);
# * `notebooks/data/smollm2_eval.json`: what `refsim eval --json` measured, among it the perplexity
#   of W4A4 with 1, 2, 4, 8 and 32 clusters (rows `W4A4@c1` .. `W4A4@c8` and `W4A4`).
#
# `REFSIM_SMOLLM2_RANGES` / `REFSIM_SMOLLM2_EVAL` point the notebook at other files of the same format.

# %%
import hashlib
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import refsim
from refsim.rptq.cluster import cluster_minmax, group_reorder
from refsim.rptq.report import fake_quant

ROOT = Path(os.environ.get("REFSIM_REPO") or Path.cwd().resolve().parent)  # the checkout (notebooks/..)
RANGES = Path(os.environ.get("REFSIM_SMOLLM2_RANGES") or ROOT / "notebooks" / "data" / "smollm2_ranges.json")
EVAL = Path(os.environ.get("REFSIM_SMOLLM2_EVAL") or ROOT / "notebooks" / "data" / "smollm2_eval.json")
data = json.loads(RANGES.read_text())
print(f"{RANGES.name}: {data['model']} (sha256 {data['model_sha256'][:12]}...), {data['weights_note']}")
print(f"calibration: {data['calibration']}; {data['calib_inputs']}")
print(f"made {data['made']} by: {data['command']}")

# %% [markdown]
# ## Where the outliers are
#
# The spread of a point is its widest channel range divided by the median channel range: 1 for a
# tensor whose channels all span the same range. The file keeps it for every layer.

# %%
POINTS = list(data["points"])
spread = {p: np.array([s[p] for s in data["spread"]]) for p in POINTS}
fig, ax = plt.subplots(figsize=(8, 3.2))
for p in POINTS:
    ax.semilogy(np.arange(data["layers"]), spread[p], marker=".", label=f"{p} ({data['points'][p]})")
ax.set(xlabel="layer", ylabel="widest / median channel range", title="SmolLM2-135M: outlier channels per layer")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
kept = {(int(L), p): v for L, pts in data["ranges"].items() for p, v in pts.items()}
LAYER, POINT = max(kept, key=lambda k: spread[k[1]][k[0]])  # the kept point with the widest outliers
rec = kept[LAYER, POINT]
lo, hi = np.array(rec["min"], np.float32), np.array(rec["max"], np.float32)
NAME = f"SmolLM2 layer {LAYER} {POINT}"
widest = np.argsort(hi - lo)[::-1][:5]
print(f"{NAME} ({lo.size} channels): spread {spread[POINT][LAYER]:.0f}; widest channels:",
      {int(c): (round(float(lo[c]), 2), round(float(hi[c]), 2)) for c in widest})

# %% [markdown]
# ## Figure 1: per-channel (min, max), before and after reordering
#
# Each vertical bar is one channel's calibrated range. Left: the channels in the model's order; the
# outliers are scattered, so no contiguous group of channels shares a narrow range. Right: after
# RPTQ's k-means on (max, min) with 32 clusters and the reorder (clusters by their largest maximum,
# channels ascending within each), as refsim computed it when the file was made: each cluster is a
# contiguous block (red lines: cluster boundaries), and the shaded box is the one range, hence the one
# scale, its channels share. The vertical axis is symmetric-log, so that the narrow channels and the
# outliers both show. The same reorder is recomputed here from the ranges alone (`group_reorder`, what
# `refsim.rptq.pipeline.find_reorders` calls) and must be the committed one.


# %%
def reorder(n):
    return group_reorder([(hi, lo)], n, kv_heads=1, head_dim=lo.size, seed=data["kmeans_seed"])


r32 = reorder(data["clusters"])
perm, ids, sizes = np.array(rec["perm"]), np.array(rec["ids"]), np.array(rec["sizes"])
same_as_committed = (np.array_equal(r32.perm, perm) and np.array_equal(r32.ids_old, ids)
                     and np.array_equal(r32.sizes, sizes))
print("recomputed reorder == committed reorder:", same_as_committed)
box_lo, box_hi = cluster_minmax(lo, hi, ids, sizes.size)


def figure1(lo, hi, perm, sizes, box_lo, box_hi, name):
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 4), sharey=True)
    ch = np.arange(lo.size)
    lw = max(0.8, min(1.5, 400 / lo.size))  # wide enough that a one-channel outlier cluster shows
    ax0.vlines(ch, lo, hi, lw=lw, color="tab:blue")
    ax0.axhspan(lo.min(), hi.max(), color="tab:red", alpha=0.08, label="one range for the tensor")
    ax0.set(title=f"{name}: original channel order", xlabel="channel", ylabel="min .. max")
    ax1.vlines(ch, lo[perm], hi[perm], lw=lw, color="tab:blue", zorder=3)  # above the boundaries
    start = 0
    for c, size in enumerate(sizes):
        ax1.add_patch(plt.Rectangle((start - 0.5, box_lo[c]), size, box_hi[c] - box_lo[c], color="tab:green",
                                    alpha=0.2, lw=0))
        if start:
            ax1.axvline(start - 0.5, color="tab:red", lw=0.4, zorder=1)
        start += size
    top = np.argsort(hi - lo)[::-1][:3]  # the widest channels, marked so that a one-channel cluster shows
    ax0.plot(top, hi[top], "v", color="tab:orange", ms=6, label="3 widest channels")
    where = np.argsort(perm)[top]  # their positions after the reorder
    ax1.plot(where, hi[top], "v", color="tab:orange", ms=6)
    ax0.legend(loc="lower left", fontsize=8)
    ax1.set(title=f"after reordering: {len(sizes)} clusters, one range each", xlabel="position after reorder")
    ax0.set_yscale("symlog", linthresh=max(1e-3, float(np.median(hi - lo))))
    fig.tight_layout()
    plt.show()


figure1(lo, hi, perm, sizes, box_lo, box_hi, NAME)
print("cluster sizes:", sizes.tolist())
for (L, p), v in sorted(kept.items()):
    if (L, p) != (LAYER, POINT) and p == "rms1":
        a, b = np.array(v["min"]), np.array(v["max"])
        bl, bh = cluster_minmax(a, b, np.array(v["ids"]), len(v["sizes"]))
        figure1(a, b, np.array(v["perm"]), np.array(v["sizes"]), bl, bh, f"SmolLM2 layer {L} {p}")

# %% [markdown]
# ## How many clusters, on these ranges
#
# 1, 2, 4, 8 and 32 clusters, k-means each time, then RPTQ's min-max quantization of each cluster
# (`refsim.rptq.report.fake_quant`: `refsim.rptq_params` and `refsim.quantize` under the `rptq`
# preset, fp16 compute, ties to even). Only the ranges are committed, not the activations, so the
# values quantized here are a **stand-in**: 256 seeded draws per channel, uniform over the channel's
# own calibrated range. That isolates what the clusters change, the range each channel is quantized
# with; it is not the model's SQNR (real activations sit mostly near zero, rarely at their extremes),
# and the model's own answer is the perplexity ablation below. Two figures, in dB
# (10 log10(signal power / error power), ~6 dB a bit): the **tensor's SQNR**, which the outliers'
# large values dominate, and the **median channel's SQNR** (each channel's own signal against its own
# error), which shows what one range does to the many narrow channels: it leaves them almost no codes.

# %%
COUNTS = [1, 2, 4, 8, 32]
BITS = [3, 4]
stand_in = np.random.default_rng(0).uniform(lo, hi, size=(256, lo.size)).astype(np.float32)
reorders = {n: (r32 if n == data["clusters"] else reorder(n)) for n in COUNTS}


def channel_sqnr_db(x, q):
    """Each channel's own SQNR, 10 log10(sum_t x^2 / sum_t (x - q)^2), in float64."""
    x, e = x.astype(np.float64), x.astype(np.float64) - q.astype(np.float64)
    return 10 * np.log10((x * x).sum(0) / (e * e).sum(0))


sqnr, median_ch = {b: [] for b in BITS}, {b: [] for b in BITS}
for n in COUNTS:
    for b in BITS:
        q = fake_quant(stand_in, lo, hi, reorders[n].ids_old, b)
        sqnr[b].append(refsim.sqnr_db(stand_in, q))
        median_ch[b].append(float(np.median(channel_sqnr_db(stand_in, q))))
print(f"{NAME}, stand-in values: tensor SQNR | median channel SQNR (dB)")
head = " ".join(f"{f'{b}-bit':>8}" for b in BITS)
print(f"{'clusters':>8} {head} | {head}")
for i, n in enumerate(COUNTS):
    print(f"{n:>8} " + " ".join(f"{sqnr[b][i]:>8.2f}" for b in BITS) + " | "
          + " ".join(f"{median_ch[b][i]:>8.2f}" for b in BITS))

# %% [markdown]
# ## Figure 4: the cluster-count ablation, measured perplexity
#
# `refsim eval` on the real model: W4A4 (4-bit GPTQ weights, 4-bit activations, 8-bit RMSNorm
# outputs, 4-bit KV cache) with R1/R4/R5 split into 1 (`@c1`: one range per tensor and per head, no
# reorder), 2, 4, 8 and 32 clusters, each calibrated RPTQ's way and evaluated on the same held-out
# tokens of *Persuasion* (the setup: `notebooks/data/README.md`). Read from the committed results file.

# %%
ABLATION = {1: "W4A4@c1", 2: "W4A4@c2", 4: "W4A4@c4", 8: "W4A4@c8", 32: "W4A4"}
evaldoc = json.loads(EVAL.read_text())
by_label = {r["config"]: r for r in evaldoc["results"]}
missing = [label for label in ABLATION.values() if label not in by_label]
if missing:
    print(f"MISSING: {EVAL} has no rows {', '.join(missing)} (it holds {', '.join(by_label)}): the perplexity "
          "ablation cannot be shown, and the checks below fail until the file is regenerated with them "
          "(the command: notebooks/data/README.md).")
    ppl = None
else:
    ppl = [by_label[ABLATION[n]]["perplexity"] for n in COUNTS]
    print(f"{EVAL.name}: {evaldoc['text']}; {evaldoc['calibration']}")
    print(f"{'clusters':>8} {'config':>8} {'perplexity':>11}")
    for n, p in zip(COUNTS, ppl, strict=True):
        print(f"{n:>8} {ABLATION[n]:>8} {p:>11.3f}")
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 3.8))
    for b, color in zip(BITS, ("tab:blue", "tab:green"), strict=True):
        ax0.plot(COUNTS, median_ch[b], marker="o", color=color, label=f"{b}-bit, median channel")
        ax0.plot(COUNTS, sqnr[b], marker=".", ls=":", color=color, label=f"{b}-bit, tensor")
    ax0.set(xlabel="clusters", ylabel="SQNR (dB), stand-in values", title=f"{NAME}: quantization error")
    ax0.legend()
    ax1.plot(COUNTS, ppl, marker="o", color="tab:red", label="W4A4 (refsim eval)")
    if "W16A16" in by_label:
        ax1.axhline(by_label["W16A16"]["perplexity"], color="k", lw=0.8, ls="--", label="W16A16")
    ax1.set(xlabel="clusters (R1, R4, R5)", ylabel="perplexity (log)", title="SmolLM2-135M W4A4: perplexity",
            yscale="log")
    ax1.legend()
    for ax in (ax0, ax1):
        ax.set_xscale("log", base=2)
        ax.set_xticks(COUNTS, [str(n) for n in COUNTS])
        ax.grid(alpha=0.3)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# What the pictures say: SmolLM2's outliers are a few channels (the widest span hundreds of times the
# median range at the down-projection input), and after the reorder a handful of clusters holds them
# apart from the many narrow channels. More clusters shrink the range each channel is quantized with;
# in hardware each costs one scale and zero point, and one partial sum per cluster in the integer
# GEMM (`refsim.cluster_int_gemm`), which is what `golden`'s `gemm_w4a4` bundle checks an RTL unit
# against. Whether the model notices is the measured perplexity on the right.

# %% [markdown]
# ## Checked

# %%
assert spread[POINT][LAYER] > 5, "the chosen point has outlier channels"
calib = np.array(data["calib_ids"], np.int64)
assert calib.size == data["calib_tokens"] == 512, "the first 512 tokens of Sense and Sensibility"
assert hashlib.sha256(calib.tobytes()).hexdigest() == data["calib_sha256"], "the tokens are the recorded ones"
for (L, p), v in kept.items():  # the per-layer spreads and the kept ranges are one measurement
    r = np.array(v["max"], np.float64) - np.array(v["min"], np.float64)
    assert round(float(r.max() / np.median(r)), 3) == spread[p][L], f"layer {L} {p}: spread and ranges disagree"
    assert len(v["ids"]) == len(v["min"]) == len(v["perm"]) == sum(v["sizes"]), f"layer {L} {p}: sizes disagree"
assert same_as_committed, "refsim's k-means on the committed ranges must give the committed reorder"
assert sorted(perm.tolist()) == list(range(lo.size)), "the reorder is a permutation"
assert np.all(np.diff(ids[perm]) >= 0) and sizes.sum() == lo.size, "clusters are contiguous after it"
assert np.all(lo >= box_lo[ids]) and np.all(hi <= box_hi[ids]), "each box holds its channels' ranges"
for b in BITS:
    assert median_ch[b][-1] > median_ch[b][0] + 6, f"{b}-bit: 32 clusters must give the median channel > 1 bit"
    assert sqnr[b][-1] >= sqnr[b][0], f"{b}-bit: 32 clusters must not lose to one range on the tensor"
assert all(s4 > s3 for s3, s4 in zip(sqnr[3], sqnr[4], strict=True)), "more bits, less error"
assert not missing, f"{EVAL.name} lacks the ablation rows {missing}: regenerate it (notebooks/data/README.md)"
for n in COUNTS:
    r = by_label[ABLATION[n]]
    assert r["clusters"] == n, f"{ABLATION[n]} must be the {n}-cluster run, its file says {r['clusters']}"
    assert r["tokens"] == by_label["W4A4"]["tokens"], "every ablation row is measured on the same tokens"
assert ppl[-1] < ppl[0], "32 clusters must give a lower perplexity than one range per tensor"
print("all checks passed")
