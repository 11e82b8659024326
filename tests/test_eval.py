"""The whole model and ``refsim eval``: tiny random OPT (and LLaMA with GQA, once its family module exists)
saved with transformers, end to end: float-mode equality with transformers, the quantized configurations,
the KV cache, resume, Dask against inline, the reduction, and the errors."""

import importlib.util
import json
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from clitools import assert_one_line_error, cli, run_blocked, snapshot, tiny_opt  # noqa: E402

from refsim.eval import evaluate, parse_configs, window_nll, windows  # noqa: E402
from refsim.models.model import token_nll  # noqa: E402
from refsim.outputs import UsageError  # noqa: E402
from refsim.rptq.calibrate import float_model, load_causal_lm  # noqa: E402
from refsim.schemes import scheme  # noqa: E402

SEQLEN = 32
QUANT = "W4A16,W4A8,W4A4,W4A4KV,W4A3KV,W3A3KV,W4A4@c1,W4A4@rtn,QRAZOR_W4A4@g16,QRAZOR_W4A8@g32"
HAS_LLAMA = importlib.util.find_spec("refsim.models.llama") is not None


def tiny_llama(path, *, layers=2, seed=0) -> str:
    """A small random LLaMA with grouped-query attention (4 query heads, 2 KV heads), tied embeddings."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   rope_theta=10000.0, tie_word_embeddings=True, rms_norm_eps=1e-5)
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    return str(path)


FAMILIES = ["opt", pytest.param("llama", marks=pytest.mark.skipif(not HAS_LLAMA, reason="refsim.models.llama "
                                                                   "(the LLaMA family module) is not there yet"))]


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    path = (tiny_opt if request.param == "opt" else tiny_llama)(d / "model")
    hf, _, _ = load_causal_lm(path)
    rng = np.random.default_rng(0)
    ev, cal = rng.integers(0, 64, 4 * SEQLEN + 5), rng.integers(0, 64, (2, SEQLEN))
    np.save(d / "ev.npy", ev)
    np.save(d / "cal.npy", cal)
    return {"path": path, "hf": hf, "model": float_model(hf), "ev": ev, "cal": cal, "dir": d}


def transformers_perplexity(hf, ids, seqlen):
    nll, n = [], 0
    with torch.no_grad():
        for a, b in windows(len(ids), seqlen):
            x = torch.from_numpy(np.asarray(ids[a:b]))[None]
            lg = hf(input_ids=x).logits[0, :-1].double()
            nll.append(float(torch.nn.functional.cross_entropy(lg, x[0, 1:], reduction="sum")))
            n += b - a - 1
    return math.exp(math.fsum(nll) / n)


def test_float_logits_equal_transformers(tiny):
    """W16A16: embedding, layers, final norm and lm_head against transformers' causal LM. Both compute in
    float32 (refsim: float64 sums rounded once, correctly rounded norms), so they differ by float32 rounding of
    the intermediates; 1e-5 of the logits' range bounds that with a wide margin on these sizes."""
    ids = tiny["ev"][:SEQLEN]
    ours = tiny["model"].forward(ids, scheme("W16A16"))
    with torch.no_grad():
        ref = tiny["hf"](input_ids=torch.from_numpy(ids)[None]).logits[0].numpy()
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert np.max(np.abs(ours - ref)) <= 1e-5 * np.max(np.abs(ref))


def test_float_perplexity_equals_transformers_through_the_command(tiny, capsys):
    """refsim eval W16A16 against transformers' perplexity on the same windows: within 1e-6 relative (the
    logits agree to ~1e-7 relative; the NLL is a smooth function of them)."""
    rc, out, err = cli(capsys, "eval", tiny["path"], "--configs", "W16A16", "--token-ids", tiny["dir"] / "ev.npy",
                       "--calib-token-ids", tiny["dir"] / "cal.npy", "--seqlen", SEQLEN, "--scheduler", "inline",
                       "--json", "--quiet")
    assert rc == 0, err
    r = json.loads(out)["results"][0]
    ref = transformers_perplexity(tiny["hf"], tiny["ev"], SEQLEN)
    assert r["config"] == "W16A16" and r["tokens"] == 4 * (SEQLEN - 1) and r["windows"] == 4
    assert abs(r["perplexity"] - ref) <= 1e-6 * ref


@pytest.fixture(scope="module")
def quantized(tiny):
    cfgs = parse_configs("W16A16," + QUANT, clusters=4, head_clusters=2)
    res = evaluate(tiny["model"], tiny["ev"], tiny["cal"], cfgs, seqlen=SEQLEN, sqnr_tokens=SEQLEN, progress=False)
    return {r["config"]: r for r in res}


def test_quantized_configurations_run(quantized):
    fp = quantized["W16A16"]
    assert all(math.isinf(v) for v in fp["sqnr_db"].values())
    for name in QUANT.split(","):
        r = quantized[name]
        assert math.isfinite(r["perplexity"]) and r["tokens"] == fp["tokens"]
        assert r["perplexity"] != fp["perplexity"], name  # quantization changed something
        assert math.isfinite(r["sqnr_db"]["logits"]) and r["sqnr_db"]["logits"] > 0, name
    # fewer bits, more error at the logits; reordering into clusters beats one range per tensor
    s = {k: v["sqnr_db"]["logits"] for k, v in quantized.items()}
    assert s["W4A16"] > s["W4A8"] > s["W4A4"]
    assert s["W4A4KV"] > s["W4A3KV"]
    assert s["W4A4"] > s["W4A4@c1"]


def test_kv_cache_is_stored_at_kvbits(tiny):
    from refsim.eval import build_config

    cfg = parse_configs("W4A3KV", clusters=4, head_clusters=2)[0]
    m = build_config(tiny["model"], tiny["cal"], cfg)
    out = m.hidden(tiny["ev"][:SEQLEN], cfg.scheme(), kv_cache=True)
    assert len(out["kv"]) == len(m.blocks)
    lo, hi = (-4, 3) if cfg.scheme().spec.signed else (0, 7)
    for kv in out["kv"]:
        for r in ("k", "v"):
            c = kv[f"{r}_codes"]
            assert c.dtype.kind in "iu" and lo <= c.min() and c.max() <= hi  # 3-bit codes
            assert np.any(c < lo // 2) or np.any(c > hi // 2)  # ... that 2 bits would not hold
    assert tiny["model"].hidden(tiny["ev"][:SEQLEN], scheme("W16A16"), kv_cache=True)["kv"] == [{}, {}]


def test_head_dtype_float16_rounds_embedding_and_lm_head(tiny):
    m16 = tiny["model"].with_blocks(tiny["model"].blocks)
    m16.meta["head_dtype"] = "float16"
    lg = m16.forward(tiny["ev"][:8], scheme("W16A16"))
    assert np.array_equal(lg, lg.astype(np.float16).astype(np.float32))
    assert not np.array_equal(lg, tiny["model"].forward(tiny["ev"][:8], scheme("W16A16")))


def _nll_scalar(logits_row, target):
    m = max(logits_row)
    return m + math.log(math.fsum(math.exp(v - m) for v in logits_row)) - logits_row[target]


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 12), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_token_nll_equals_its_scalar_twin(n, rows, seed):
    """The chunked float64 NLL against a per-token scalar log-sum-exp: within 1e-12 (both float64; numpy's sum
    order against fsum)."""
    from refsim.models.model import Model

    rng = np.random.default_rng(seed)
    model = Model(tiny_topology(), {"embed.weight": rng.standard_normal((7, 4), dtype=np.float32),
                                    "lm_head.weight": rng.standard_normal((7, 4), dtype=np.float32),
                                    "norm.weight": np.ones(4, np.float32)}, [], {"eps": 1e-5})
    h = rng.standard_normal((n, 4), dtype=np.float32) * 3
    y = rng.integers(0, 7, n)
    got = token_nll(model, h, y, rows=rows)
    lg = model.logits(h).astype(np.float64)
    want = [_nll_scalar(lg[t].tolist(), y[t]) for t in range(n)]
    assert np.allclose(got, want, rtol=1e-12, atol=1e-12)


def tiny_topology():
    from refsim.models.opt import OPT

    return OPT


@given(st.integers(0, 500), st.integers(2, 64), st.one_of(st.none(), st.integers(1, 600)))
def test_windows_are_the_full_non_overlapping_ones(n, seqlen, max_tokens):
    w = windows(n, seqlen, max_tokens)
    limit = n if max_tokens is None else min(n, max_tokens)
    assert w == [(a, a + seqlen) for a in range(0, limit - seqlen + 1, seqlen)]


def test_window_nll_is_the_fsum_of_the_token_nlls(tiny):
    ids = tiny["ev"][:SEQLEN]
    m = tiny["model"]
    r = window_nll(m, ids, scheme("W16A16"))
    h = m.hidden(ids, scheme("W16A16"))["h"]
    assert r["tokens"] == SEQLEN - 1 and r["nll"] == math.fsum(token_nll(m, h[:-1], ids[1:]).tolist())


def test_resume_uses_the_cache_and_refuses_a_foreign_directory(tiny, capsys, tmp_path):
    out = tmp_path / "cache"
    argv = ("eval", tiny["path"], "--configs", "W16A16,W4A4", "--token-ids", tiny["dir"] / "ev.npy",
            "--calib-token-ids", tiny["dir"] / "cal.npy", "--seqlen", SEQLEN, "--scheduler", "inline",
            "--clusters", 4, "--head-clusters", 2, "--json", "--out", out)
    rc, first, err = cli(capsys, *argv)
    assert rc == 0, err
    before = snapshot(out)
    rc, second, err = cli(capsys, *argv)
    assert rc == 0 and "eval:" not in err  # nothing recomputed
    assert json.loads(second)["results"] == json.loads(first)["results"] and snapshot(out) == before
    w4 = next(p for p in out.iterdir() if p.name.startswith("W4A4-"))
    os.remove(w4 / "window-00002.json")  # as if the run had stopped before this window
    rc, third, err = cli(capsys, *argv)
    assert rc == 0 and "eval: 1/1" in err
    assert json.loads(third)["results"] == json.loads(first)["results"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a user's file")
    snap = snapshot(foreign)
    rc, _, err = cli(capsys, *argv[:-1], foreign)
    assert_one_line_error(rc, err, names="--out")
    assert snapshot(foreign) == snap


def test_dask_equals_inline(tiny):
    """Configurations and windows as tasks on a local cluster of two worker processes: the same bits."""
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    cfgs = parse_configs("W4A4,QRAZOR_W4A4", clusters=4, head_clusters=2)
    kw = dict(seqlen=SEQLEN, sqnr_tokens=SEQLEN, progress=False)
    inline = evaluate(tiny["model"], tiny["ev"], tiny["cal"], cfgs, **kw)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        dask = evaluate(tiny["model"], tiny["ev"], tiny["cal"], cfgs, client=client, **kw)
    assert dask == inline


def test_float_calibration_inputs_share_one_calibration(tiny):
    cfgs = parse_configs("W4A4", clusters=4, head_clusters=2)
    q = evaluate(tiny["model"], tiny["ev"], tiny["cal"], cfgs, seqlen=SEQLEN, sqnr_tokens=SEQLEN, progress=False)
    f = evaluate(tiny["model"], tiny["ev"], tiny["cal"], cfgs, seqlen=SEQLEN, sqnr_tokens=SEQLEN, progress=False,
                 calib_inputs="float")
    assert q[0]["perplexity"] != f[0]["perplexity"]  # layer 2 saw different inputs


def test_statistics_match_transformers_hooks(tiny):
    """The ranges read from refsim's float pass equal those of transformers' hooks on the same float inputs
    (refsim.rptq.calibrate.Calibration, OPT only) within float32 rounding."""
    if tiny["model"].meta["family"] != "opt":
        pytest.skip("the hook-based Calibration is OPT's")
    from refsim.rptq.calibrate import Calibration, layer_statistics

    cal = Calibration(tiny["hf"], hessians=False, keep_inputs=2).run(tiny["cal"], progress=False)
    m = tiny["model"]
    xs = [m.embed(s) for s in tiny["cal"]]
    for i, block in enumerate(m.blocks):
        stats, _, xs = layer_statistics(m.topology, block, xs)
        for p, (lo, hi) in stats.items():
            rlo, rhi = cal.stats[i][p]
            scale = max(np.abs(rlo).max(), np.abs(rhi).max())
            assert np.max(np.abs(lo - rlo)) <= 1e-5 * scale and np.max(np.abs(hi - rhi)) <= 1e-5 * scale, (i, p)


def test_bad_configs_and_inputs_are_one_line_errors(tiny, capsys):
    base = ("eval", tiny["path"], "--token-ids", tiny["dir"] / "ev.npy", "--seqlen", SEQLEN, "--scheduler", "inline")
    rc, _, err = cli(capsys, *base, "--configs", "W4A5")
    assert_one_line_error(rc, err, names="--configs")
    rc, _, err = cli(capsys, *base, "--configs", "W4A4@x3")
    assert_one_line_error(rc, err, names="--configs")
    rc, _, err = cli(capsys, *base, "--configs", "W4A4@c999")
    assert_one_line_error(rc, err, names="--configs")
    bad = tiny["dir"] / "bad.npy"
    np.save(bad, np.array([1, 2, 999]))
    rc, _, err = cli(capsys, "eval", tiny["path"], "--token-ids", bad, "--scheduler", "inline")
    assert_one_line_error(rc, err, names="--token-ids")
    with pytest.raises(UsageError):
        parse_configs(" , ")


def test_without_dask_one_line_names_the_extra(tiny):
    p = run_blocked(["eval", tiny["path"], "--configs", "W16A16", "--token-ids", tiny["dir"] / "ev.npy",
                     "--seqlen", SEQLEN, "--quiet"], blocked=("dask", "distributed"))
    assert_one_line_error(p.returncode, p.stderr, names="eval")
    assert "dask" in p.stderr and "--scheduler inline" in p.stderr


# --- the real model (make realmodel) -----------------------------------------------------------------
def _smollm2():
    try:
        from refsim.formats.gguf import smollm2_gguf

        return smollm2_gguf()
    except (FileNotFoundError, ImportError, OSError):
        return None


def _persuasion():
    from refsim.corpus import CorpusMissing, austen_novel

    try:
        return austen_novel("persuasion")
    except CorpusMissing:
        return None


@pytest.mark.slow  # about 6 minutes on the 2-core machine (load, 30 layers twice, transformers)
@pytest.mark.skipif(_smollm2() is None or not HAS_LLAMA or _persuasion() is None,
                    reason="needs SmolLM2's GGUF and the Austen novels (make realmodel) and the LLaMA family module")
def test_smollm2_float_perplexity_equals_transformers(capsys, tmp_path):
    """The first 512 tokens of Persuasion in two windows of 256 (a short check: ~1 s a layer)."""
    path = _smollm2()
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ids = np.asarray(tok(_persuasion()[:20000], add_special_tokens=False)["input_ids"][:512])
    np.save(tmp_path / "ev.npy", ids)
    rc, out, err = cli(capsys, "eval", path, "--configs", "W16A16", "--token-ids", tmp_path / "ev.npy", "--seqlen",
                       256, "--scheduler", "inline", "--json", "--quiet")
    assert rc == 0, err
    doc = json.loads(out)
    r = doc["results"][0]
    assert "dequantized" in r["weights_note"] and "Q4_1" in r["weights_note"]
    hf, _, _ = load_causal_lm(str(path))
    ref = transformers_perplexity(hf, ids, 256)
    assert abs(r["perplexity"] - ref) <= 1e-4 * ref


def test_float_calibration_is_shared_by_the_configurations_that_agree_on_it(tiny, monkeypatch):
    """calib_inputs="float": W4A16, W4A8 and W4A4 share one calibration (same weights, clusters, reorders), @c1
    has its own; the results equal those of each configuration evaluated alone."""
    import refsim.eval as E

    calls = []
    real = E.build_config
    monkeypatch.setattr(E, "build_config", lambda *a, **k: calls.append(a[2].label) or real(*a, **k))
    cfgs = parse_configs("W4A16,W4A8,W4A4,W4A4@c1", clusters=4, head_clusters=2)
    kw = dict(seqlen=SEQLEN, sqnr_tokens=SEQLEN, progress=False, calib_inputs="float")
    together = evaluate(tiny["model"], tiny["ev"], tiny["cal"], cfgs, **kw)
    assert calls == ["W4A16", "W4A4@c1"]
    for c, r in zip(cfgs, together, strict=True):
        alone = evaluate(tiny["model"], tiny["ev"], tiny["cal"], [c], **kw)[0]
        assert r["nll"] == alone["nll"] and r["sqnr_db"] == alone["sqnr_db"], c.label
