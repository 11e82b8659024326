"""The model topology: OPT's derived structure, and a second family through the same forward pass."""

import numpy as np
import pytest

import refsim
from refsim.models.forward import forward
from refsim.models.opt import OPT
from refsim.models.topology import MLP, Attention, Linear, MLPKind, Norm, NormKind, Point, Reorder, Topology
from refsim.rptq.block import QuantizedOPTBlock
from refsim.schemes import RPTQScheme

# The stage list docs/rptq.md documents (written out here once, so a topology change that moves a stage shows)
OPT_STAGES = (
    "x", "ln1", "ln1_codes", "q", "q_codes", "k", "k_codes", "v", "v_codes",
    "q_acc", "k_acc", "v_acc", "scores_acc", "scores", "probs", "probs_codes", "attn_acc", "attn",
    "attn_codes", "out_acc", "out_proj", "h1", "ln2", "ln2_codes", "fc1_acc", "fc1", "relu", "fc2_in_codes",
    "fc2_acc", "fc2", "out",
)


def test_opt_topology_derivations():
    assert OPT.stages == OPT_STAGES
    assert OPT.linear_in == {"q": "R1", "k": "R1", "v": "R1", "out": "R3", "fc1": "R4", "fc2": "R5"}
    assert OPT.calibration_stages[-1] == ("fc2_in", "relu")
    assert OPT.point_bits("ln1", 4, 4) == 8 and OPT.point_bits("ln2", None, 4) is None
    assert OPT.point_bits("k", 4, 3) == 3 and OPT.point_bits("attn", 3, 8) == 3
    assert OPT.reorder_sizes(32, 64) == {"R1": 32, "R2": 32, "R3": 32, "R4": 32, "R5": 64}
    assert OPT.linear_shapes(32, 64)["fc2"] == (32, 64)


# --- a second family in one topology: RMSNorm, SwiGLU MLP, no biases (a LLaMA skeleton without RoPE / GQA) ---

SKELETON = Topology(
    name="skeleton",
    norm_kind=NormKind.RMS_NORM,
    norms=(Norm("n1", "x", "R1"), Norm("n2", "h1", "R4")),
    linears=(
        Linear("q", "q", "R1", "R2", "n1", "qkv"), Linear("k", "k", "R1", "R2", "n1", "qkv"),
        Linear("v", "v", "R1", "R3", "n1", "qkv"), Linear("o", "o_proj", "R3", None, "attn", "o"),
        Linear("gate", "gate", "R4", "R5", "n2", "mlp", out_dim="ffn"),
        Linear("up", "up", "R4", "R5", "n2", "mlp", out_dim="ffn"),
        Linear("down", "down", "R5", None, "down_in", "down", in_dim="ffn"),
    ),
    points=(Point("n1", "n1", "R1", "norm"), Point("q", "q", "R2", "act"), Point("k", "k", "R2", "kv"),
            Point("v", "v", "R3", "kv"), Point("attn", "attn", "R3", "act"), Point("n2", "n2", "R4", "norm"),
            Point("down_in", "act", "R5", "act", dim="ffn")),
    reorders=(Reorder("R1"), Reorder("R2", per_head=True), Reorder("R3", per_head=True), Reorder("R4"),
              Reorder("R5", dim="ffn")),
    attention=Attention(out="o"),
    mlp=MLP(MLPKind.SWIGLU, up="up", down="down", act_stage="act", gate="gate"),
    norm_bias=False,
    linear_bias=False,
)


def _skeleton_block(rng, hidden=16, heads=2, ffn=24):
    arrays = {}
    for n in SKELETON.norms:
        arrays[f"{n.name}.weight"] = (1 + 0.2 * rng.standard_normal(hidden)).astype(np.float32)
    for name, (o, i) in SKELETON.linear_shapes(hidden, ffn).items():
        arrays[f"{name}.weight"] = (rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32)
    for r, n in SKELETON.reorder_sizes(hidden, ffn).items():  # identity reorders, two contiguous clusters
        arrays[f"{r}.perm"] = np.arange(n)
        arrays[f"{r}.ids"] = (np.arange(n) * 2 // n).astype(np.int64)
        arrays[f"{r}.sizes"] = np.bincount(arrays[f"{r}.ids"])
    meta = {"hidden": hidden, "heads": heads, "ffn": ffn, "eps": 1e-6, "wbits": None, "layout": "physical"}
    for p, n in SKELETON.point_sizes(hidden, ffn).items():
        arrays[f"stat.{p}.min"], arrays[f"stat.{p}.max"] = np.zeros(n, np.float32), np.zeros(n, np.float32)
    return QuantizedOPTBlock(arrays, meta)


def _float_reference(b, x, heads):
    """The skeleton's block in float64 numpy, written directly from the formulas."""
    def rms(v, g):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + 1e-6) * g

    def lin(v, name):
        return v @ b[f"{name}.weight"].astype(np.float64).T

    x = x.astype(np.float64)
    t, hidden = x.shape
    d = hidden // heads
    h = rms(x, b["n1.weight"])
    q, k, v = lin(h, "q") * d ** -0.5, lin(h, "k"), lin(h, "v")
    attn = np.empty_like(q)
    mask = np.triu(np.ones((t, t), bool), 1)
    for i in range(heads):
        sl = slice(i * d, (i + 1) * d)
        s = q[:, sl] @ k[:, sl].T
        s[mask] = -np.inf
        p = np.exp(s - s.max(-1, keepdims=True))
        attn[:, sl] = (p / p.sum(-1, keepdims=True)) @ v[:, sl]
    h1 = x + lin(attn, "o")
    h2 = rms(h1, b["n2.weight"])
    g = lin(h2, "gate")
    return h1 + lin(g / (1 + np.exp(-g)) * lin(h2, "up"), "down")


def test_second_topology_runs_through_the_same_forward():
    rng = np.random.default_rng(0)
    block = _skeleton_block(rng)
    x = rng.standard_normal((6, 16)).astype(np.float32)
    st = forward(SKELETON, block, x, RPTQScheme("W16A16", None, None, None))
    ref = _float_reference(block, x, 2)
    assert np.allclose(st["out"], ref, rtol=1e-5, atol=1e-5)
    assert set(SKELETON.stages) - set(st) == {f"{p}_codes" for p in ("n1", "q", "k", "v", "attn", "n2", "down_in")} \
        | {f"{n}_acc" for n in ("q", "k", "v", "o", "gate", "up", "down")} | {"scores_acc", "attn_acc", "probs_codes"}
    # calibrate the points on the float run, then quantize activations (A8, KV8): every product integer
    for p in SKELETON.points:
        block.arrays[f"stat.{p.name}.min"] = st[p.stage].min(0)
        block.arrays[f"stat.{p.name}.max"] = st[p.stage].max(0)
    q = forward(SKELETON, block, x, RPTQScheme("A8", None, 8, 8))
    # activations quantized, weights float: attention products are integer, the linears float
    assert "down_in_codes" in q and "scores_acc" in q and "attn_acc" in q and "q_acc" not in q
    assert refsim.sqnr_db(st["out"], q["out"]) > 25
    assert q["n1_codes"].max() <= 127


def test_forward_refuses_a_bad_kv_head_count():
    """Grouped-query attention is a step of the forward pass now (tests/test_models_llama.py); a KV head count
    that does not divide the heads is refused by name."""
    from dataclasses import replace

    gqa = replace(SKELETON, attention=Attention(out="o", kv_heads="kv_heads"))
    block = _skeleton_block(np.random.default_rng(1))
    block.meta["kv_heads"] = 3
    with pytest.raises(ValueError, match="kv_heads=3 is not allowed"):
        forward(gqa, block, np.zeros((2, 16), np.float32), RPTQScheme("W16A16", None, None, None))


def test_second_topology_physical_equals_logical():
    """The skeleton, calibrated, reordered by k-means (R2/R3 per head) and RTN-quantized per input cluster:
    its physically reordered forward pass equals the logical one bit for bit, as OPT's does."""
    from refsim.rptq.cluster import reorder_index
    from refsim.rptq.gptq import rtn_quantize
    from refsim.rptq.reorder import permute_layer, permute_stats, reorder_arrays

    rng = np.random.default_rng(3)
    hidden, heads, ffn = 16, 2, 24
    ident = _skeleton_block(rng, hidden, heads, ffn)
    layer = {k: ident[k] for k in SKELETON.layer_keys()}
    for n in SKELETON.norms:  # a few outlier channels, as real norm outputs have
        layer[f"{n.name}.weight"][rng.integers(0, hidden, 2)] *= 6
    ident.arrays.update(layer)
    x = (rng.standard_normal((7, hidden)) * 2).astype(np.float32)
    run = forward(SKELETON, ident, x, RPTQScheme("W16A16", None, None, None))
    stats = {p.name: (run[p.stage].min(0), run[p.stage].max(0)) for p in SKELETON.points}
    feed = {r.name: next(p.name for p in SKELETON.points if p.reorder == r.name) for r in SKELETON.reorders}
    reorders = {r.name: reorder_index(stats[feed[r.name]][1], stats[feed[r.name]][0], 2, seed=0,
                                      n_heads=heads if r.per_head else None) for r in SKELETON.reorders}
    arrays = {**permute_layer(layer, reorders, SKELETON), **permute_stats(stats, reorders, SKELETON),
              **reorder_arrays(reorders, SKELETON)}
    for lin in SKELETON.linears:
        res = rtn_quantize(arrays[f"{lin.name}.weight"], bits=4, groups=reorders[lin.in_reorder].ids_new)
        arrays[f"{lin.name}.codes"], arrays[f"{lin.name}.scale"], arrays[f"{lin.name}.zero"] = res[:3]
    phys = QuantizedOPTBlock(arrays, {**ident.meta, "wbits": 4})
    assert any(not np.array_equal(reorders[r].perm, np.arange(reorders[r].perm.size)) for r in reorders)
    scheme = RPTQScheme("W4A8", 4, 8, 8)
    a = forward(SKELETON, phys, x, scheme)
    b = forward(SKELETON, phys.logical(SKELETON), x, scheme)
    assert np.array_equal(a["out"].view(np.int32), b["out"].view(np.int32))
    for p in SKELETON.points:
        assert np.array_equal(a[f"{p.name}_codes"], b[f"{p.name}_codes"][:, reorders[p.reorder].perm]), p.name
    for stage in ("down_acc", "o_acc", "scores_acc", "probs_codes"):
        assert np.array_equal(a[stage], b[stage]), stage
