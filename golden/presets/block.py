"""Preset family opt_block_*: a whole OPT decoder block, RPTQ W4A4 integer dataflow."""

from __future__ import annotations

import numpy as np

import refsim
from golden.presets import ops
from golden.presets.base import ACCUMULATOR_FIELDS, QUANTIZE_FIELDS, Preset, SpecUse, no_overflow_at, stage
from golden.presets.registry import register

LIST_ORDER = 70  # where `refsim golden --list` shows this family (golden.presets discovers it)


def _param_stage_name(key: str) -> str:
    return "param_" + key.replace(".", "_").lower()


def _inputs(rng, level, shape, cfg, specs):
    """A random OPT layer, calibrated on its own float run, reordered (k-means, recorded), RTN weights.

    Everything downstream depends only on the recorded arrays (permutations, cluster ids,
    calibration ranges, weight codes), which are input stages of the bundle.
    """
    from refsim.rptq.synthetic import calibrated_block, random_opt_layer

    t, hidden, ffn = shape
    heads = cfg["heads"]
    if hidden % heads:
        raise ValueError(f"hidden={hidden} is not allowed with heads={heads}; allowed: a multiple of {heads}")
    layer = random_opt_layer(rng, hidden, ffn)
    calib = (rng.standard_normal((4 * t, hidden)) * 2).astype(np.float32)
    block, _, _ = calibrated_block(layer, calib, heads=heads, n_clusters=cfg["clusters"],
                                   head_clusters=cfg["head_clusters"], wbits=cfg["wbits"], seed=0)
    x = (rng.standard_normal((t, hidden)) * 2).astype(np.float32)
    return input_stages(block.arrays, x, cfg["wbits"])


def input_stages(arrays, x, wbits):
    """The block input x and every block array as an input stage (param_*), weight codes at ``wbits``."""
    out = [stage("x", x, role="input", doc="the block input (T, hidden), float32 residual stream")]
    for key in sorted(arrays):
        a = arrays[key]
        if a.dtype.kind == "f":
            out.append(stage(_param_stage_name(key), a.astype(np.float32), role="input", doc=f"block array {key}"))
        elif key.endswith(".codes"):
            out.append(stage(_param_stage_name(key), a.astype(np.uint8), role="input", word_bits=wbits,
                             signed=False, doc=f"block array {key}: GPTQ-form weight codes (out, in), unsigned"))
        else:
            signed = key.endswith(".zero")
            out.append(stage(_param_stage_name(key), a.astype(np.int32), role="input", word_bits=32, signed=signed,
                             doc=f"block array {key}"))
    return out


def block_arrays(a, topology) -> dict:
    """The block's arrays back from the input stages (reorders as int64), keyed by the topology's names."""
    keys = {_param_stage_name(k): k for k in topology.array_keys()}
    arrays = {keys[n]: v for n, v in a.items() if n in keys}
    for r in topology.reorder_names:
        for p in ("perm", "ids", "sizes"):
            arrays[f"{r}.{p}"] = arrays[f"{r}.{p}"].astype(np.int64)
    return arrays


def derived_stages(topology, st, cfg, act) -> list:
    """Every stage the forward pass computed, in the topology's order (x, an input, left out)."""
    code_bits = topology.code_bits(cfg["abits"], cfg["kvbits"])
    out = []
    for name in topology.stages:
        if name == "x" or name not in st:
            continue
        v = st[name]
        if name.endswith("_acc"):
            out.append(stage(name, v.astype(np.int64), word_bits=act.acc_bits, signed=True, spec="act",
                             doc="per-cluster integer sums with zero-point correction (refsim.rptq.block)"))
        elif name.endswith("_codes"):
            signed = name != "probs_codes"
            out.append(stage(name, v.astype(np.int8 if signed else np.uint8), word_bits=code_bits[name],
                             signed=signed, spec="act", doc="activation codes (RPTQ per-cluster, physical order)"))
        else:
            # a float operation (LayerNorm, softmax, the epilogue's float32 sum) reads no spec; the act spec
            # reaches it through the codes and sums it is made from
            out.append(stage(name, np.asarray(v, np.float32), doc="float32 stage (refsim.rptq.block)"))
    return out


def _derive(a, specs, cfg):
    from refsim.models.opt import OPT
    from refsim.rptq.block import QuantizedOPTBlock

    act = specs["act"]
    arrays = block_arrays(a, OPT)
    hidden = int(a["x"].shape[1])
    meta = {"hidden": hidden, "heads": cfg["heads"], "ffn": int(arrays["fc1.bias"].shape[0]), "eps": 1e-5,
            "wbits": cfg["wbits"], "layout": "physical"}
    st = ops.opt_block(QuantizedOPTBlock(arrays, meta), a["x"], spec=act,
                       bits={"wbits": cfg["wbits"], "abits": cfg["abits"], "kvbits": cfg["kvbits"]})
    return derived_stages(OPT, st, cfg, act)


def _block_keys():
    """The block's array keys, from the OPT topology (its norms, linears, reorders and calibration points)."""
    from refsim.models.opt import OPT

    return OPT.array_keys()


BLOCK_USE = SpecUse(QUANTIZE_FIELDS + ACCUMULATOR_FIELDS, inert={"acc_overflow": no_overflow_at(32)})


def block_preset():
    return Preset(
        name="opt_block_w4a4",
        summary="a whole OPT decoder block, RPTQ W4A4 integer dataflow: every stage (LayerNorm codes, "
        "per-cluster q/k/v/attention/out/fc1/fc2 sums, softmax codes, outputs)",
        specs={"act": refsim.preset("rptq")},
        spec_use={"act": BLOCK_USE},
        shape_names=("T", "hidden", "ffn"),
        default_shape=(8, 32, 64),
        config={"wbits": 4, "abits": 4, "kvbits": 4, "heads": 2, "clusters": 4, "head_clusters": 2},
        inputs=_inputs,
        derive=_derive,
        levels=(0,),
        portable=False,
        size_degree=(2, 2, 1),  # T x T attention scores; hidden x hidden weights
        notes=["level 0 only: a random layer calibrated on a random sequence; the reorders (k-means) and weight "
               "codes (round to nearest, GPTQ form) are recorded as param_* input stages",
               "float stages (LayerNorm, softmax) follow refsim.rptq.block: correctly rounded sums and a correctly "
               "rounded float32 exp, so every derived stage is the same on any machine given the input stages; "
               "generating the inputs (a float calibration run through BLAS, then k-means) may differ in the last "
               "bit between BLAS builds, so a regenerated bundle is byte-identical on the same platform stack only"],
    )


register(block_preset())
