"""Preset family llama_block_*: a whole LLaMA-family decoder block (RMSNorm, RoPE, GQA, SwiGLU), RPTQ W4A4.

The LLaMA twin of ``opt_block_w4a4`` (golden/presets/block.py, whose input and derived stage helpers it
shares): a random layer of refsim.models.llama's topology with grouped-query attention, calibrated on its
own float run, reordered (R1 .. R5 with R2 moving rotary pairs together and shared by each KV group,
R3 per KV head; R2q / R3o their per-query-head expansions), weights round-to-nearest in GPTQ form.
The derived stages are every stage of the forward pass plus the rotary tables it reads, at positions
offset by ``position_offset`` (a KV-cache continuation).
"""

from __future__ import annotations

import numpy as np

import refsim
from golden.presets import ops
from golden.presets.base import Preset, stage
from golden.presets.block import BLOCK_USE, block_arrays, derived_stages, input_stages
from golden.presets.registry import register

LIST_ORDER = 71  # right after the OPT block in `refsim golden --list`


def _meta(cfg, hidden, ffn):
    return {"hidden": hidden, "heads": cfg["heads"], "kv_heads": cfg["kv_heads"], "head_dim": hidden // cfg["heads"],
            "ffn": ffn, "eps": cfg["eps"], "rope_theta": cfg["rope_theta"], "wbits": cfg["wbits"],
            "layout": "physical"}


def _check_shape(shape, cfg):
    t, hidden, ffn = shape
    heads, kv = cfg["heads"], cfg["kv_heads"]
    if hidden % heads or (hidden // heads) % 2 or heads % kv:
        raise ValueError(f"hidden={hidden} is not allowed with heads={heads}, kv_heads={kv}; allowed: a multiple of "
                         f"{2 * heads} (an even head_dim)")


def _inputs(rng, level, shape, cfg, specs):
    """A random LLaMA layer (GQA) calibrated on its own float run, reordered (k-means, recorded), RTN weights."""
    from refsim.models.llama import TOPOLOGY
    from refsim.rptq.synthetic import calibrated_block, random_llama_layer

    _check_shape(shape, cfg)
    t, hidden, ffn = shape
    layer = random_llama_layer(rng, hidden, ffn, heads=cfg["heads"], kv_heads=cfg["kv_heads"])
    calib = (rng.standard_normal((4 * t, hidden)) * 2).astype(np.float32)
    meta = _meta(cfg, hidden, ffn)
    block, _, _ = calibrated_block(layer, calib, heads=cfg["heads"], n_clusters=cfg["clusters"],
                                   head_clusters=cfg["head_clusters"], wbits=cfg["wbits"], seed=0, topology=TOPOLOGY,
                                   meta={k: meta[k] for k in ("kv_heads", "head_dim", "eps", "rope_theta")})
    x = (rng.standard_normal((t, hidden)) * 2).astype(np.float32)
    return input_stages(block.arrays, x, cfg["wbits"])


def _derive(a, specs, cfg):
    from refsim.models.forward import rope_tables
    from refsim.models.llama import TOPOLOGY
    from refsim.rptq.block import QuantizedOPTBlock

    act = specs["act"]
    arrays = block_arrays(a, TOPOLOGY)
    t, hidden = a["x"].shape
    block = QuantizedOPTBlock(arrays, _meta(cfg, int(hidden), int(arrays["down.weight"].shape[1])))
    positions = np.arange(t, dtype=np.int64) + cfg["position_offset"]
    st = ops.block_forward(TOPOLOGY, block, a["x"], spec=act, positions=positions,
                           bits={"wbits": cfg["wbits"], "abits": cfg["abits"], "kvbits": cfg["kvbits"]})
    cos, sin = rope_tables(block, positions, int(t))
    out = [stage("rope_cos", cos, doc="cos of the rotary angles (T, head_dim), correctly rounded to float32"),
           stage("rope_sin", sin, doc="sin of the rotary angles (T, head_dim), correctly rounded to float32")]
    return out + derived_stages(TOPOLOGY, st, cfg, act)


def llama_block_preset():
    return Preset(
        name="llama_block_w4a4",
        summary="a whole LLaMA-family decoder block (RMSNorm, RoPE, grouped-query attention 4:2, SwiGLU), RPTQ "
        "W4A4 integer dataflow: every stage (RMSNorm codes, rotary tables, per-cluster q/k/v/attention/o/gate/up/"
        "down sums, softmax codes, outputs)",
        specs={"act": refsim.preset("rptq")},
        spec_use={"act": BLOCK_USE},
        shape_names=("T", "hidden", "ffn"),
        default_shape=(8, 32, 48),
        config={"wbits": 4, "abits": 4, "kvbits": 4, "heads": 4, "kv_heads": 2, "clusters": 4, "head_clusters": 2,
                "eps": 1e-6, "rope_theta": 10000.0, "position_offset": 3},
        inputs=_inputs,
        derive=_derive,
        levels=(0,),
        portable=False,
        size_degree=(2, 2, 1),  # T x T attention scores; hidden x hidden weights
        notes=["level 0 only: a random LLaMA layer (4 query heads, 2 KV heads) calibrated on a random sequence; the "
               "reorders (k-means; R2 moves rotary pairs together, shared by each KV group) and weight codes (round "
               "to nearest, GPTQ form) are recorded as param_* input stages",
               "positions start at position_offset (a KV-cache continuation); rope_cos / rope_sin are the rotary "
               "tables the block reads, correctly rounded, in the logical channel order of one head",
               "float stages (RMSNorm, RoPE, softmax, SiLU) are correctly rounded, so every derived stage is the same "
               "on any machine given the input stages; generating the inputs (a float calibration run through "
               "BLAS, then k-means) may differ in the last bit between BLAS builds, so a regenerated bundle is "
               "byte-identical on the same platform stack only (not portable, like opt_block_w4a4)"],
    )


register(llama_block_preset())
