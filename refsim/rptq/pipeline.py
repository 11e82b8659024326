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

Any topology (``topology=``): each recorded reorder is clustered on the calibration points named by
``Reorder.features`` (default: the points it parameterizes, directly or through a reorder derived
from it) with ``refsim.rptq.cluster.group_reorder`` -- per head of head_dim channels when per_head
(per KV head under GQA, query-side statistics reduced over the group), rotary pairs together when
``pairs`` -- and a derived reorder (``group_of``: LLaMA's R2q, R3o) is its source repeated for
every query head of the group (``expand_to_group``). OPT's five reorders come out exactly as
above (the same features, the same k-means calls).
"""

from __future__ import annotations

import time

import numpy as np

from refsim.models.opt import OPT
from refsim.progress import report_progress
from refsim.rptq.block import QuantizedOPTBlock
from refsim.rptq.cluster import expand_to_group, group_reorder
from refsim.rptq.reorder import identity_reorder, permute_hessian, permute_layer, permute_stats, reorder_arrays

HESSIAN_OF = OPT.hessian_of  # linears reading the same input share one GPTQ Hessian


def reorder_features(topology, r) -> tuple:
    """The calibration points whose statistics cluster reorder ``r`` (``Reorder.features``, else the points
    it parameterizes directly or through a reorder derived from it), in the topology's point order."""
    if r.features:
        return tuple(r.features)
    serves = {r.name} | {x.name for x in topology.reorders if x.group_of == r.name}
    return tuple(p.name for p in topology.points if p.reorder in serves)


def find_reorders(stats, *, heads, n_clusters=32, head_clusters=4, seed=0, reorder=True, topology=OPT,
                  head_dim=None) -> dict:
    """Every recorded reorder of one layer of ``topology`` from its per-channel (min, max) statistics
    {point: (min, max)} (module docstring). ``heads``: query heads; ``head_dim`` None: hidden // heads."""
    sizes = {p.name: np.asarray(stats[p.name][0]).size for p in topology.points if p.name in stats}
    missing = [p.name for p in topology.points if p.name not in stats]
    if missing:
        raise ValueError(f"stats is missing the points {missing}; needed: {[p.name for p in topology.points]}")
    dims = {p.dim: sizes[p.name] for p in topology.points}
    dims = topology.dims(dims["hidden"], dims["ffn"], q=dims.get("q"), kv=dims.get("kv"))
    d = int(head_dim) if head_dim else dims["q"] // int(heads)
    width = {r.name: dims[r.dim] for r in topology.reorders}
    if not reorder:
        return {r.name: identity_reorder(width[r.name], width[r.name] // d if r.per_head else None)
                for r in topology.reorders}
    out = {}
    for r in topology.reorders:
        if r.group_of:
            continue
        mm = [(stats[p][1], stats[p][0]) for p in reorder_features(topology, r)]
        if r.per_head:
            out[r.name] = group_reorder(mm, head_clusters, kv_heads=width[r.name] // d, head_dim=d, pairs=r.pairs,
                                        seed=seed)
        else:
            out[r.name] = group_reorder(mm, n_clusters, kv_heads=1, head_dim=width[r.name], seed=seed)
    for r in topology.reorders:
        if r.group_of:
            kv = width[r.group_of] // d
            out[r.name] = expand_to_group(out[r.group_of], kv_heads=kv, group=width[r.name] // d // kv)
    return {r.name: out[r.name] for r in topology.reorders}


def build_block(layer, stats, hessians, *, heads, eps=1e-5, wbits=4, n_clusters=32, head_clusters=4, seed=0,
                reorder=True, act_order=False, rtn=False, timings=None, topology=OPT,
                family_meta=None, reorders=None) -> QuantizedOPTBlock:
    """A QuantizedOPTBlock (physical layout) of one layer; ``timings`` (a dict) accumulates seconds per step.

    ``topology``: the layer's family (OPT by default); ``family_meta``: the family's block meta
    (``refsim.models.<family>.block_meta``: kv_heads, head_dim, rope_theta, ...), merged into the
    block's meta (its hidden / heads / ffn / eps must agree with the arrays and ``heads`` / ``eps``).
    ``reorders``: {name: Reorder} made elsewhere (the block-aligned ones of ``refsim.rptq.native``) instead
    of calling ``find_reorders``."""
    from refsim.rptq.gptq import gptq_quantize, rtn_quantize

    family_meta = dict(family_meta or {})
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    if reorders is None:
        reorders = find_reorders(stats, heads=heads, n_clusters=n_clusters, head_clusters=head_clusters, seed=seed,
                                 reorder=reorder, topology=topology, head_dim=family_meta.get("head_dim"))
    t1 = time.perf_counter()
    timings["clustering"] = timings.get("clustering", 0.0) + t1 - t0
    arrays = permute_layer(layer, reorders, topology)
    arrays.update(permute_stats(stats, reorders, topology))
    arrays.update(reorder_arrays(reorders, topology))
    if wbits is not None:
        for lin in topology.linear_names:
            r = reorders[topology.linear_in[lin]]
            w = arrays[f"{lin}.weight"]
            if rtn:
                res = rtn_quantize(w, bits=wbits, groups=r.ids_new)
            else:
                h = permute_hessian(hessians[topology.hessian_of[lin]], r.perm)
                res = gptq_quantize(w, h, bits=wbits, groups=r.ids_new, act_order=act_order,
                                    static_groups=act_order)
            arrays[f"{lin}.codes"], arrays[f"{lin}.scale"], arrays[f"{lin}.zero"] = res.codes, res.scale, res.zero
    timings["gptq" if not rtn else "rtn"] = timings.get("gptq" if not rtn else "rtn", 0.0) + \
        time.perf_counter() - t1
    dims = topology.dims_of(layer)
    meta = {**family_meta, "hidden": dims["hidden"], "heads": int(heads), "ffn": dims["ffn"],
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
