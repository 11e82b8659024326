"""From calibration statistics to quantized blocks: clustering, reordering, GPTQ (torch for GPTQ only).

``build_block(layer, stats, hessians, ...)`` for one decoder layer:
    R1 = k-means on ln1 [max, min]            (n_clusters)
    R2 = k-means on [q_max, k_max, q_min, k_min] per head      (head_clusters per head)
    R3 = k-means on attn (out_proj input) [max, min] per head    (head_clusters per head)
    R4 = k-means on ln2 [max, min]            (n_clusters)
    R5 = k-means on fc2_in [max, min]         (n_clusters)
then the permutations are applied (``reorder.permute_layer``), and each linear is quantized by
GPTQ on its reordered weight and reordered Hessian, asymmetric, with one parameter group per
input cluster (per output row x per input cluster). ``reorder=False`` gives the baseline with
no reordering: one cluster per tensor (per head for R2/R3).
"""

from __future__ import annotations

import time

import numpy as np

from refsim.models.opt import OPT
from refsim.progress import report_progress
from refsim.rptq.block import LINEAR_IN, LINEARS, QuantizedOPTBlock
from refsim.rptq.cluster import reorder_index
from refsim.rptq.reorder import identity_reorder, permute_hessian, permute_layer, permute_stats, reorder_arrays

HESSIAN_OF = OPT.hessian_of  # linears reading the same input share one GPTQ Hessian


def find_reorders(stats, *, heads, n_clusters=32, head_clusters=4, seed=0, reorder=True) -> dict:
    """The five recorded reorders of one layer from its per-channel (min, max) statistics."""
    hidden = stats["ln1"][0].size
    ffn = stats["fc2_in"][0].size
    if not reorder:
        sizes = OPT.reorder_sizes(hidden, ffn)
        return {r.name: identity_reorder(sizes[r.name], heads if r.per_head else None) for r in OPT.reorders}

    def mm(p):
        lo, hi = stats[p]
        return hi, lo

    qmax, qmin = mm("q")
    kmax, kmin = mm("k")
    return {
        "R1": reorder_index(*mm("ln1"), n_clusters, seed=seed),
        "R2": reorder_index(qmax, qmin, head_clusters, seed=seed, n_heads=heads, joint=(kmax, kmin)),
        "R3": reorder_index(*mm("attn"), head_clusters, seed=seed, n_heads=heads),
        "R4": reorder_index(*mm("ln2"), n_clusters, seed=seed),
        "R5": reorder_index(*mm("fc2_in"), n_clusters, seed=seed),
    }


def build_block(layer, stats, hessians, *, heads, eps=1e-5, wbits=4, n_clusters=32, head_clusters=4, seed=0,
                reorder=True, act_order=False, rtn=False, timings=None) -> QuantizedOPTBlock:
    """A QuantizedOPTBlock (physical layout) of one layer; ``timings`` (a dict) accumulates seconds per step."""
    from refsim.rptq.gptq import gptq_quantize, rtn_quantize

    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    reorders = find_reorders(stats, heads=heads, n_clusters=n_clusters, head_clusters=head_clusters, seed=seed,
                             reorder=reorder)
    t1 = time.perf_counter()
    timings["clustering"] = timings.get("clustering", 0.0) + t1 - t0
    arrays = permute_layer(layer, reorders)
    arrays.update(permute_stats(stats, reorders))
    arrays.update(reorder_arrays(reorders))
    if wbits is not None:
        for lin in LINEARS:
            r = reorders[LINEAR_IN[lin]]
            w = arrays[f"{lin}.weight"]
            if rtn:
                res = rtn_quantize(w, bits=wbits, groups=r.ids_new)
            else:
                h = permute_hessian(hessians[HESSIAN_OF[lin]], r.perm)
                res = gptq_quantize(w, h, bits=wbits, groups=r.ids_new, act_order=act_order,
                                    static_groups=act_order)
            arrays[f"{lin}.codes"], arrays[f"{lin}.scale"], arrays[f"{lin}.zero"] = res.codes, res.scale, res.zero
    timings["gptq" if not rtn else "rtn"] = timings.get("gptq" if not rtn else "rtn", 0.0) + \
        time.perf_counter() - t1
    meta = {"hidden": int(layer["ln1.weight"].shape[0]), "heads": int(heads), "ffn": int(layer["fc1.weight"].shape[0]),
            "eps": float(eps), "wbits": wbits, "layout": "physical", "n_clusters": n_clusters,
            "head_clusters": head_clusters, "seed": seed, "reorder": reorder, "act_order": act_order,
            "weight_quantizer": "rtn" if rtn else "gptq"}
    return QuantizedOPTBlock(arrays, meta)


def model_layer_blocks(model, calibration, *, wbits=4, n_clusters=32, head_clusters=4, seed=0, reorder=True,
                       act_order=False, progress=True, timings=None):
    """QuantizedOPTBlocks of every decoder layer of an OPT model after ``calibration.run``."""

    from refsim.rptq.calibrate import decoder_layers, layer_arrays

    cfg = model.config
    stats, hess = calibration.stats, calibration.hessians
    blocks = []
    layers = decoder_layers(model)
    for i, layer in enumerate(layers):
        if progress:
            report_progress("quantize: layer", i + 1, len(layers))
        blocks.append(build_block(layer_arrays(layer), stats[i], hess[i], heads=cfg.num_attention_heads,
                                  eps=float(layer.self_attn_layer_norm.eps), wbits=wbits, n_clusters=n_clusters,
                                  head_clusters=head_clusters, seed=seed, reorder=reorder, act_order=act_order,
                                  timings=timings))
    return blocks


def block_hessians_numpy(hessians: dict) -> dict:
    return {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in hessians.items()}
