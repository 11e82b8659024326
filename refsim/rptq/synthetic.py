"""A seeded synthetic OPT decoder layer, calibrated and reordered: for tests and golden bundles.

No model hub is reachable, so the block-level tests and the whole-block golden preset build their
layer here: Gaussian weights scaled 1/sqrt(fan-in), LayerNorm gains around 1 with two outlier
channels x8 in each LayerNorm (as real LayerNorm outputs have), calibrated by running the float
block on the given calibration tokens, reordered by k-means (``find_reorders``, recorded), and
weights quantized round-to-nearest in GPTQ form per output row x input cluster.
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


def calibrated_block(layer, calib, *, heads, n_clusters, head_clusters, wbits=4, seed=0):
    """(QuantizedOPTBlock, reorders, stats): ``layer`` calibrated on ``calib`` (T, hidden) float32."""
    from refsim.rptq.block import QuantizedOPTBlock, opt_block
    from refsim.rptq.cluster import Reorder
    from refsim.rptq.gptq import rtn_quantize
    from refsim.rptq.pipeline import find_reorders
    from refsim.rptq.reorder import permute_layer, permute_stats, reorder_arrays

    hidden, ffn = layer["fc1.weight"].shape[1], layer["fc1.weight"].shape[0]
    if hidden % heads:
        raise ValueError(f"hidden={hidden} is not allowed with heads={heads}; allowed: a multiple of {heads}")
    ident = {r: Reorder(np.arange(n), np.zeros(n, np.int64), np.array([n]))
             for r, n in OPT.reorder_sizes(hidden, ffn).items()}
    stats0 = {f"stat.{p}.{m}": np.zeros(n, np.float32) for p, n in OPT.point_sizes(hidden, ffn).items()
              for m in ("min", "max")}
    meta = {"hidden": hidden, "heads": heads, "ffn": ffn, "eps": 1e-5, "wbits": None, "layout": "physical"}
    float_block = QuantizedOPTBlock({**permute_layer(layer, ident), **reorder_arrays(ident), **stats0}, meta)
    run = opt_block(float_block, calib, config="W16A16")
    stats = {p: (run[k].min(0), run[k].max(0)) for p, k in CALIBRATION_STAGES}
    reorders = find_reorders(stats, heads=heads, n_clusters=n_clusters, head_clusters=head_clusters, seed=seed)
    arrays = {**permute_layer(layer, reorders), **permute_stats(stats, reorders), **reorder_arrays(reorders)}
    for lin, r in LINEAR_INPUT_REORDER:
        res = rtn_quantize(arrays[f"{lin}.weight"], bits=wbits, groups=reorders[r].ids_new)
        arrays[f"{lin}.codes"], arrays[f"{lin}.scale"], arrays[f"{lin}.zero"] = res.codes, res.scale, res.zero
    return QuantizedOPTBlock(arrays, {**meta, "wbits": wbits}), reorders, stats
