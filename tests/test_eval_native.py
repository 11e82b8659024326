"""``refsim eval`` with the native-weights configurations (NATIVE_*, docs/gguf.md) on a tiny random LLaMA
written as a GGUF file here (Q4_1 linears, Q8_0 embedding, as llama.cpp's converter writes SmolLM2):
NATIVE_W4A16 equals W16A16 bit for bit, the quantized ones run end to end through the command, the
calibrated blocks have block-aligned column reorders and RPTQ's own R2, Dask equals inline, and the
refusals are one-line errors."""

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
pytest.importorskip("accelerate")

from clitools import assert_one_line_error, cli  # noqa: E402
from test_eval import tiny_llama  # noqa: E402

from refsim.eval import build_config, calibration_key, evaluate, parse_configs  # noqa: E402
from refsim.outputs import UsageError  # noqa: E402
from refsim.rptq.calibrate import float_model, load_causal_lm  # noqa: E402
from refsim.schemes import NativeWeightsScheme, scheme  # noqa: E402

SEQLEN = 32
BLOCK = 32
# hidden 256 = 8 blocks (R1, R4), FFN 512 = 16 blocks (R5), head_dim 64 = 2 blocks per KV head (R3): every
# block-aligned reorder has more than one block to cluster
SHAPE = dict(hidden=256, heads=4, kv_heads=2, ffn=512, vocab=128, layers=2)
GGUF_LINEARS = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                "ffn_down": "mlp.down_proj"}


def llama_cpp_permute(w, n_head):
    """llama.cpp convert_hf_to_gguf.py ``LlamaModel.permute``: the rows of each head of q / k in its RoPE layout
    (transformers' GGUF loader and refsim.formats.gguf.llama_unpermute_rows undo it)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path, *, seed=0, layers=2, hidden=256, heads=4, kv_heads=2, ffn=512, vocab=128) -> str:
    """A random LlamaForCausalLM (GQA, tied embeddings) written as llama.cpp's converter writes one: the
    metadata transformers' GGUF loader reads, Q4_1 linears (q / k rows permuted), Q8_0 token_embd, F32 norms.
    The norm gains are random, with a few large blocks of channels, so the activation ranges differ from
    block to block and the block-aligned k-means has something to separate."""
    from gguf import GGMLQuantizationType as QT

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn,
                                   num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                                   max_position_embeddings=256, rope_theta=10000.0, tie_word_embeddings=True,
                                   rms_norm_eps=1e-5)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in transformers.LlamaForCausalLM(cfg).state_dict().items()}

    def gains():
        g = rng.uniform(0.5, 1.5, hidden).astype(np.float32)
        g[rng.choice(hidden // BLOCK, 2, replace=False)[:, None] * BLOCK + np.arange(BLOCK)] *= 8
        return g

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny random llama")
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(hidden // heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)

    def put(name, data, qt):
        if qt == QT.F32:
            w.add_tensor(name, np.ascontiguousarray(data, np.float32))
        else:
            w.add_tensor(name, gguf.quants.quantize(np.ascontiguousarray(data, np.float32), qt), raw_dtype=qt)

    put("token_embd.weight", sd["model.embed_tokens.weight"], QT.Q8_0)
    put("output_norm.weight", gains(), QT.F32)
    for i in range(layers):
        p = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", gains(), QT.F32)
        put(f"blk.{i}.ffn_norm.weight", gains(), QT.F32)
        for g, t in GGUF_LINEARS.items():
            x = sd[p + t + ".weight"]
            x = llama_cpp_permute(x, heads) if g == "attn_q" else llama_cpp_permute(x, kv_heads) if g == "attn_k" else x
            put(f"blk.{i}.{g}.weight", x, QT.Q4_1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("native")
    path = write_tiny_gguf(d / "tiny.Q4_1.gguf", **SHAPE)
    hf, cfg, gguf_file = load_causal_lm(path)
    assert gguf_file == "tiny.Q4_1.gguf" and cfg.model_type == "llama"
    rng = np.random.default_rng(0)
    ev, cal = rng.integers(0, SHAPE["vocab"], 3 * SEQLEN + 5), rng.integers(0, SHAPE["vocab"], (2, SEQLEN))
    np.save(d / "ev.npy", ev)
    np.save(d / "cal.npy", cal)
    return {"path": path, "model": float_model(hf, gguf=path), "ev": ev, "cal": cal, "dir": d}


KW = dict(seqlen=SEQLEN, sqnr_tokens=SEQLEN, progress=False)


def test_parse_native_configs():
    c, h, k = parse_configs("NATIVE_W4A4@c4@h2,NATIVE_W4A16,W4A4", clusters=8)
    assert c.is_native and c.clusters == 4 and c.head_clusters == 2 and c.bits == (4, 4, 4) and c.reorder
    assert h.is_native and h.bits == (4, None, None) and not h.calibrated and c.calibrated
    assert not k.is_native
    s = c.scheme()
    assert isinstance(s, NativeWeightsScheme) and s.keep_sums is False and s.name == "NATIVE_W4A4"
    # native calibrations (block-aligned reorders, no GPTQ) are never an RPTQ one, under either chain
    rptq = parse_configs("W4A4@c4@h2")[0]
    for inputs in ("float", "quantized"):
        assert calibration_key(c, inputs) != calibration_key(rptq, inputs)
    assert calibration_key(c, "float") == calibration_key(parse_configs("NATIVE_W4A8@c4@h2")[0], "float")
    assert calibration_key(c, "quantized") != calibration_key(parse_configs("NATIVE_W4A8@c4@h2")[0], "quantized")
    for bad in ("NATIVE_W4A4@rtn", "NATIVE_W4A8@g32", "NATIVE_W4A5"):
        with pytest.raises(UsageError, match="--configs") as e:
            parse_configs(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match="does not apply to a NATIVE"):
        parse_configs("NATIVE_W4A4@rtn")


def test_native_w4a16_equals_w16a16_bit_for_bit(tiny):
    """The GGUF model's float weights are its codes dequantized (transformers and refsim.formats.gguf decode the
    same blocks): NATIVE_W4A16, which multiplies the codes' values, gives W16A16's logits and perplexity exactly."""
    cfgs = parse_configs("W16A16,NATIVE_W4A16")
    fp, nat = evaluate(tiny["model"], tiny["ev"], tiny["cal"], cfgs, **KW)
    assert nat["perplexity"] == fp["perplexity"] and nat["nll"] == fp["nll"] and nat["tokens"] == fp["tokens"]
    assert nat["weights"] == "gguf native Q4_1 codes, dequantized, float GEMM"
    m = build_config(tiny["model"], tiny["cal"], cfgs[1])
    assert all("q.native.codes" in b.arrays for b in m.blocks)
    ids = tiny["ev"][:SEQLEN]
    a = tiny["model"].forward(ids, scheme("W16A16"))
    b = m.forward(ids, cfgs[1].scheme())
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def _runs_are_blocks(block, r):
    """Every physical run of 32 channels of reorder r is one whole file block, in one cluster."""
    perm, ids = np.asarray(block[f"{r}.perm"]).reshape(-1, BLOCK), block.ids(r).reshape(-1, BLOCK)
    return bool(np.all(perm // BLOCK == perm[:, :1] // BLOCK) and np.all(perm % BLOCK == np.arange(BLOCK))
                and np.all(ids == ids[:, :1]))


def test_native_blocks_have_block_aligned_column_reorders(tiny):
    """Under float calibration inputs NATIVE_W4A4 and RPTQ's W4A4 see the same statistics: R2 (q/k rows) is
    RPTQ's own, the column reorders (R1, R3 per KV head and R3o, R4, R5) are block-aligned, with more than one
    cluster, and the native arrays are in the block's own layout."""
    nat, rptq = parse_configs("NATIVE_W4A4@c4@h2,W4A4@c4@h2")
    mn = build_config(tiny["model"], tiny["cal"], nat, calib_inputs="float")
    mr = build_config(tiny["model"], tiny["cal"], rptq, calib_inputs="float")
    for bn, br in zip(mn.blocks, mr.blocks, strict=True):
        for r in ("R2", "R2q"):
            assert np.array_equal(bn[f"{r}.perm"], br[f"{r}.perm"]) and np.array_equal(bn.ids(r), br.ids(r))
        for r in ("R1", "R3", "R3o", "R4", "R5"):
            assert _runs_are_blocks(bn, r), r
            assert not _runs_are_blocks(br, r), r  # RPTQ's own splits blocks: the check can fail
        assert bn.n_clusters("R1") == bn.n_clusters("R4") == bn.n_clusters("R5") == 4
        assert bn.n_clusters("R3") == 2 * SHAPE["kv_heads"]  # 2 blocks per KV head, 2 clusters each
        for lin in ("q", "k", "v", "o", "gate", "up", "down"):
            assert f"{lin}.codes" not in bn.arrays  # no GPTQ
            assert np.array_equal(bn[f"{lin}.native.cols"], bn[f"{_in(lin)}.perm"])
        assert bn.meta["weight_quantizer"] == "gguf native"
    # more clusters than blocks: one per block (hidden 256: 8, FFN 512: 16, head_dim 64: 2 per KV head)
    from refsim.rptq.native import block_clusters

    assert block_clusters(mn.topology, mn.blocks[0], 32, 4) == {"R1": 8, "R3": 2, "R4": 8, "R5": 16}


def _in(lin):
    from refsim.models.llama import TOPOLOGY

    return TOPOLOGY.linear(lin).in_reorder


def test_native_configurations_through_the_command(tiny, capsys):
    """NATIVE_W4A8 / NATIVE_W4A4 / NATIVE_W4A4KV end to end through ``refsim eval --json``: finite perplexities,
    a per-stage SQNR, every result saying what its weights are; more activation bits, less error."""
    rc, out, err = cli(capsys, "eval", tiny["path"], "--configs", "W16A16,NATIVE_W4A8,NATIVE_W4A4,NATIVE_W4A4KV",
                       "--token-ids", tiny["dir"] / "ev.npy", "--calib-token-ids", tiny["dir"] / "cal.npy",
                       "--seqlen", SEQLEN, "--sqnr-tokens", SEQLEN, "--clusters", 4, "--head-clusters", 2,
                       "--scheduler", "inline", "--json", "--quiet")
    assert rc == 0, err
    doc = json.loads(out)
    res = {r["config"]: r for r in doc["results"]}
    fp = res["W16A16"]
    for name in ("NATIVE_W4A8", "NATIVE_W4A4", "NATIVE_W4A4KV"):
        r = res[name]
        assert math.isfinite(r["perplexity"]) and r["tokens"] == fp["tokens"] == 3 * (SEQLEN - 1), name
        assert r["perplexity"] != fp["perplexity"], name
        assert r["weights"].startswith("gguf native Q4_1 codes") and "dequantized" in r["weights_note"], name
        assert r["wbits"] == 4
        stages = {k: v for k, v in r["sqnr_db"].items() if k != "logits"}
        assert {"rms1", "q", "attn", "down"} <= set(stages), stages
        assert all(v is None or (math.isfinite(v) and v > 0) for v in r["sqnr_db"].values()), r["sqnr_db"]
        assert r["sqnr_db"]["logits"] is not None
    assert res["NATIVE_W4A4"]["weights"] == "gguf native Q4_1 codes, exact integer GEMM"
    assert res["NATIVE_W4A4"]["block_clusters"] == {"R1": 4, "R3": 2, "R4": 4, "R5": 4}
    s = {k: v["sqnr_db"]["logits"] for k, v in res.items()}
    assert s["NATIVE_W4A8"] > s["NATIVE_W4A4"]
    assert s["NATIVE_W4A4KV"] > s["NATIVE_W4A4"]


def test_dask_equals_inline(tiny):
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    cfgs = parse_configs("NATIVE_W4A16,NATIVE_W4A4", clusters=4, head_clusters=2)
    inline = evaluate(tiny["model"], tiny["ev"], tiny["cal"], cfgs, **KW)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        dask = evaluate(tiny["model"], tiny["ev"], tiny["cal"], cfgs, client=client, **KW)
    assert dask == inline


def test_native_on_a_transformers_directory_is_one_line(tiny, capsys, tmp_path):
    path = tiny_llama(tmp_path / "llama")
    rc, _, err = cli(capsys, "eval", path, "--configs", "W16A16,NATIVE_W4A4", "--token-ids", tiny["dir"] / "ev.npy",
                     "--seqlen", SEQLEN, "--scheduler", "inline", "--quiet")
    assert rc == 2
    assert_one_line_error(rc, err, names="--configs")
    assert ".gguf MODEL" in err
    rc, _, err = cli(capsys, "eval", tiny["path"], "--configs", "NATIVE_W4A4@rtn", "--token-ids",
                     tiny["dir"] / "ev.npy", "--seqlen", SEQLEN, "--scheduler", "inline", "--quiet")
    assert rc == 2
    assert_one_line_error(rc, err, names="--configs")
    hf, _, _ = load_causal_lm(path)
    with pytest.raises(UsageError, match=r"needs a \.gguf MODEL"):
        evaluate(float_model(hf), tiny["ev"], tiny["cal"], parse_configs("NATIVE_W4A4"), **KW)


def test_another_gguf_file_is_refused(tiny, tmp_path):
    """The native arrays must dequantize to the model's own float weights: a model pointed at another file's
    blocks is refused rather than evaluated."""
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=1, **SHAPE)
    m = tiny["model"]
    wrong = type(m)(m.topology, m.arrays, m.blocks, {**m.meta, "gguf": other})
    with pytest.raises(ValueError, match="do not dequantize"):
        build_config(wrong, tiny["cal"], parse_configs("NATIVE_W4A16")[0])


@pytest.mark.slow
def test_smollm2_one_native_layer():
    """SmolLM2's layer 0 as a native block, calibrated as ``refsim eval`` does (one layer of the model): its GGUF
    codes dequantize to transformers' weights (native_block checks it), NATIVE_W4A16 equals W16A16 on the layer
    bit for bit, and NATIVE_W4A4 runs with R1 / R4 at one cluster per block (18 blocks at hidden 576)."""
    import refsim
    from refsim.eval import gguf_layers
    from refsim.formats.gguf import smollm2_gguf
    from refsim.models.forward import forward
    from refsim.rptq.calibrate import calibrate_layers
    from refsim.rptq.native import native_block

    try:
        path = smollm2_gguf()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    hf, _, _ = load_causal_lm(str(path))
    full = float_model(hf, gguf=path)
    del hf
    layers = gguf_layers(full)[:1]
    model = full.with_blocks(full.blocks[:1])
    ids = np.random.default_rng(0).integers(0, model.meta["vocab"], (1, 64))
    nat = parse_configs("NATIVE_W4A4")[0]
    (block,) = calibrate_layers(model, ids, n_clusters=32, head_clusters=4, chain=nat.scheme(), native=layers)
    assert block.n_clusters("R1") == block.n_clusters("R4") == 18 and block.n_clusters("R5") == 32
    assert _runs_are_blocks(block, "R1") and _runs_are_blocks(block, "R5") and _runs_are_blocks(block, "R3o")
    top, fb, x = model.topology, model.blocks[0], model.embed(ids[0])
    a = forward(top, fb, x, scheme("W16A16"))["out"]
    b = forward(top, native_block(fb, top, layers[0]), x, parse_configs("NATIVE_W4A16")[0].scheme())["out"]
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    ref = forward(top, block, x, scheme("W16A16"))["out"]
    out = forward(top, block, x, nat.scheme(), record_sums=False)["out"]
    assert np.all(np.isfinite(out)) and refsim.sqnr_db(ref, out) > 10
