"""Seeded synthetic decoder layers (OPT, LLaMA), calibrated and reordered: for tests and golden bundles.

No model hub is reachable, so the block-level tests and the whole-block golden presets build their
layer here: Gaussian weights scaled 1/sqrt(fan-in), norm gains around 1 with two outlier channels x8
in each norm (as real norm outputs have), calibrated by running the float block (the one forward
pass, W16A16) on the given calibration tokens, reordered by k-means (``find_reorders``, recorded),
and weights quantized round-to-nearest in GPTQ form per output row x input cluster.
"""

from __future__ import annotations

import numpy as np

from refsim.models.opt import OPT

# activation point -> the stage of the float block whose per-channel min/max calibrate it (the topology's)
CALIBRATION_STAGES = OPT.calibration_stages
# each linear layer and the reorder of its input channels
LINEAR_INPUT_REORDER = tuple(OPT.linear_in.items())


def random_opt_layer(rng, hidden, ffn) -> dict:
    """Float32 arrays of one OPT layer in transformers' layout (weights (out, in))."""
    layer = {"ln1.weight": 1 + 0.3 * rng.standard_normal(hidden), "ln1.bias": 0.1 * rng.standard_normal(hidden),
             "ln2.weight": 1 + 0.3 * rng.standard_normal(hidden), "ln2.bias": 0.1 * rng.standard_normal(hidden)}
    for name, shp in OPT.linear_shapes(hidden, ffn).items():
        layer[f"{name}.weight"] = rng.standard_normal(shp) / np.sqrt(shp[1])
        layer[f"{name}.bias"] = 0.1 * rng.standard_normal(shp[0])
    layer["ln1.weight"][rng.integers(0, hidden, 2)] *= 8
    layer["ln2.weight"][rng.integers(0, hidden, 2)] *= 8
    return {k: v.astype(np.float32) for k, v in layer.items()}


def random_llama_layer(rng, hidden, ffn, *, heads, kv_heads, head_dim=None, qkv_bias=False) -> dict:
    """Float32 arrays of one LLaMA-family layer in transformers' layout (refsim.models.llama's names);
    ``qkv_bias``: q/k/v biases (Qwen2)."""
    from refsim.models.llama import TOPOLOGY

    d = hidden // heads if head_dim is None else int(head_dim)
    layer = {f"{n.name}.weight": 1 + 0.3 * rng.standard_normal(hidden) for n in TOPOLOGY.norms}
    for name, shp in TOPOLOGY.linear_shapes(hidden, ffn, q=heads * d, kv=kv_heads * d).items():
        layer[f"{name}.weight"] = rng.standard_normal(shp) / np.sqrt(shp[1])
        if qkv_bias and name in ("q", "k", "v"):
            layer[f"{name}.bias"] = 0.1 * rng.standard_normal(shp[0])
    for n in TOPOLOGY.norms:
        layer[f"{n.name}.weight"][rng.integers(0, hidden, 2)] *= 8
    return {k: v.astype(np.float32) for k, v in layer.items()}


def float_block(layer, *, heads, topology=OPT, meta=None):
    """The layer as a float block of ``topology``: identity reorders (one cluster each), zero calibration
    ranges; ``meta`` adds the family's block meta (kv_heads, head_dim, rope_theta, eps)."""
    from refsim.rptq.block import QuantizedOPTBlock
    from refsim.rptq.cluster import Reorder
    from refsim.rptq.reorder import permute_layer, reorder_arrays

    dims = topology.dims_of(layer)
    hidden, ffn = dims["hidden"], dims["ffn"]
    d = (meta or {}).get("head_dim") or hidden // heads
    if dims["q"] != heads * d:
        raise ValueError(f"hidden={hidden} is not allowed with heads={heads}; allowed: a multiple of {heads}")
    qkv = {"q": dims["q"], "kv": dims["kv"]}
    ident = {r: Reorder(np.arange(n), np.zeros(n, np.int64), np.array([n]))
             for r, n in topology.reorder_sizes(hidden, ffn, **qkv).items()}
    stats0 = {f"stat.{p}.{m}": np.zeros(n, np.float32) for p, n in topology.point_sizes(hidden, ffn, **qkv).items()
              for m in ("min", "max")}
    full = {"hidden": hidden, "heads": heads, "ffn": ffn, "eps": 1e-5, **(meta or {}), "wbits": None,
            "layout": "physical"}
    arrays = {**permute_layer(layer, ident, topology), **reorder_arrays(ident, topology), **stats0}
    return QuantizedOPTBlock(arrays, full), ident


def calibrated_block(layer, calib, *, heads, n_clusters, head_clusters, wbits=4, seed=0, topology=OPT, meta=None):
    """(QuantizedOPTBlock, reorders, stats): ``layer`` of ``topology`` calibrated on ``calib`` (T, hidden)
    float32 (``meta``: the family's block meta beyond hidden / heads / ffn, e.g. kv_heads, head_dim,
    rope_theta, eps; OPT's eps is 1e-5)."""
    from refsim.models.forward import forward
    from refsim.rptq.block import QuantizedOPTBlock
    from refsim.rptq.gptq import rtn_quantize
    from refsim.rptq.pipeline import find_reorders
    from refsim.rptq.reorder import permute_layer, permute_stats, reorder_arrays
    from refsim.schemes import scheme

    fblock, _ = float_block(layer, heads=heads, topology=topology, meta=meta)
    run = forward(topology, fblock, calib, scheme("W16A16"))
    stats = {p: (run[k].min(0), run[k].max(0)) for p, k in topology.calibration_stages}
    reorders = find_reorders(stats, heads=heads, n_clusters=n_clusters, head_clusters=head_clusters, seed=seed,
                             topology=topology, head_dim=fblock.meta.get("head_dim"))
    arrays = {**permute_layer(layer, reorders, topology), **permute_stats(stats, reorders, topology),
              **reorder_arrays(reorders, topology)}
    for lin, r in topology.linear_in.items():
        res = rtn_quantize(arrays[f"{lin}.weight"], bits=wbits, groups=reorders[r].ids_new)
        arrays[f"{lin}.codes"], arrays[f"{lin}.scale"], arrays[f"{lin}.zero"] = res.codes, res.scale, res.zero
    return QuantizedOPTBlock(arrays, {**fblock.meta, "wbits": wbits}), reorders, stats
