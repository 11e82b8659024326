"""Applying the recorded permutations to an OPT layer, as RPTQ deploys them (its Figure 3).

Convention: new[j] = old[perm[j]] (``refsim.rptq.cluster``). A layer is a dict of float32
numpy arrays in the original channel order:

    ln1.weight, ln1.bias, ln2.weight, ln2.bias          LayerNorm gamma, beta (hidden,)
    {q,k,v,out,fc1,fc2}.weight (out, in), .bias (out,)  torch nn.Linear layout

Where each permutation goes:
    R1: LayerNorm-1 gamma/beta (the LayerNorm writes permuted addresses), q/k/v input columns
    R2: q and k output rows and biases (one permutation for both, within each head)
    R3: v output rows and bias, out_proj input columns
    R4: LayerNorm-2 gamma/beta, fc1 input columns
    R5: fc1 output rows and bias, fc2 input columns
Never reordered: the residual stream, out_proj and fc2 outputs, attention scores.

Any other topology (``topology=``, e.g. refsim.models.llama's) puts each reorder where its norms and
linears name it; an optional bias is permuted where the layer has one.
"""

from __future__ import annotations

import numpy as np

from refsim.models.opt import OPT
from refsim.rptq.cluster import Reorder

LAYER_KEYS = OPT.layer_keys()


def identity_reorder(channels: int, n_heads=None) -> Reorder:
    """No reordering and one cluster (per head when n_heads is given): per-tensor (per-head) parameters."""
    heads = 1 if n_heads is None else int(n_heads)
    d = channels // heads
    return Reorder(np.arange(channels, dtype=np.int64), np.repeat(np.arange(heads, dtype=np.int64), d),
                   np.full(heads, d, dtype=np.int64))


def check_layer(layer: dict, topology=OPT) -> None:
    keys = topology.layer_keys()
    missing = [k for k in keys if k not in layer]
    if missing:
        raise ValueError(f"layer is missing arrays {missing}; a layer needs {list(keys)}")


def check_reorders(reorders: dict, hidden: int, ffn: int, topology=OPT, **qkv) -> None:
    for r, n in topology.reorder_sizes(hidden, ffn, **qkv).items():
        if r not in reorders:
            raise ValueError(f"reorders is missing {r}; needed: {list(topology.reorder_names)}")
        p = np.asarray(reorders[r].perm)
        if p.shape != (n,) or not np.array_equal(np.sort(p), np.arange(n)):
            raise ValueError(f"{r}.perm is not a permutation of {n} channels")


def layer_dims(layer: dict, topology=OPT) -> tuple[int, int]:
    """(hidden, ffn) of a layer: the first norm's width and the width of the first linear writing ffn."""
    hidden = layer[f"{topology.norms[0].name}.weight"].shape[0]
    ffn = next(layer[f"{x.name}.weight"].shape[0] for x in topology.linears if x.out_dim == "ffn")
    return hidden, ffn


def _qkv_dims(layer: dict, topology) -> dict:
    d = topology.dims_of(layer)
    return {"q": d["q"], "kv": d["kv"]}


def permute_layer(layer: dict, reorders: dict, topology=OPT) -> dict:
    """The layer's arrays in the physical (reordered) layout, each reorder where ``topology`` puts it
    (an optional bias, ``Topology.linear_bias`` None, is permuted where the layer has one)."""
    check_layer(layer, topology)
    hidden, ffn = layer_dims(layer, topology)
    check_reorders(reorders, hidden, ffn, topology, **_qkv_dims(layer, topology))
    p = {r: reorders[r].perm for r in topology.reorder_names}
    out = {}
    for ln, r in topology.norm_reorders:
        for part in ("weight", "bias") if topology.norm_bias else ("weight",):
            out[f"{ln}.{part}"] = np.asarray(layer[f"{ln}.{part}"], np.float32)[p[r]]
    for lin in topology.linears:
        w = np.asarray(layer[f"{lin.name}.weight"], np.float32)[:, p[lin.in_reorder]]
        b = topology.bias_of(layer, lin.name)
        b = None if b is None else np.asarray(b, np.float32)
        if lin.out_reorder:
            w = w[p[lin.out_reorder]]
            b = None if b is None else b[p[lin.out_reorder]]
        out[f"{lin.name}.weight"] = np.ascontiguousarray(w)
        if b is not None:
            out[f"{lin.name}.bias"] = b
    return out


def permute_stats(stats: dict, reorders: dict, topology=OPT) -> dict:
    """Per-channel calibration ranges {point: (min, max)} in the physical layout, as block arrays."""
    out = {}
    points = topology.point_reorders
    for point, r in points.items():
        if point not in stats:
            raise ValueError(f"stats is missing the point {point!r}; needed: {list(points)}")
        lo, hi = stats[point]
        out[f"stat.{point}.min"] = np.asarray(lo, np.float32)[reorders[r].perm]
        out[f"stat.{point}.max"] = np.asarray(hi, np.float32)[reorders[r].perm]
    return out


def reorder_arrays(reorders: dict, topology=OPT) -> dict:
    out = {}
    for r in topology.reorder_names:
        out[f"{r}.perm"] = np.asarray(reorders[r].perm, np.int64)
        out[f"{r}.ids"] = np.asarray(reorders[r].ids_new, np.int64)
        out[f"{r}.sizes"] = np.asarray(reorders[r].sizes, np.int64)
    return out


def permute_hessian(h, perm):
    """H of the permuted input channels: H'[i, j] = H[perm[i], perm[j]]."""
    return h[np.ix_(perm, perm)] if isinstance(h, np.ndarray) else h[perm][:, perm]
