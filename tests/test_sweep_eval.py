"""`refsim sweep --eval MODEL`: accuracy computed by refsim eval inside the sweep (refsim_app.sweep), on the
tiny random LLaMA / OPT of tests/test_eval.py: the joined perplexities are exactly `refsim eval --json`'s, a
rerun resumes from the cache, errors name the flag, and Dask gives the same rows as inline."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from clitools import assert_one_line_error, cli, snapshot, tiny_opt  # noqa: E402
from test_eval import tiny_llama  # noqa: E402

from hwmodel.sweep_cli import MEASURED  # noqa: E402
from refsim_app.sweep import sweep_flags  # noqa: E402

SEQLEN = 16
EVAL_CONFIGS = "W16A16,W4A4,W4A4@c1"


def make_tiny(family, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp(family)
    path = (tiny_llama if family == "llama" else tiny_opt)(d / "model")
    rng = np.random.default_rng(1)
    np.save(d / "ev.npy", rng.integers(0, 64, 2 * SEQLEN + 3))
    np.save(d / "cal.npy", rng.integers(0, 64, (2, SEQLEN)))
    return {"path": path, "dir": d}


@pytest.fixture(scope="module", params=["llama", "opt"])
def tiny(request, tmp_path_factory):
    return make_tiny(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return make_tiny("llama", tmp_path_factory)


def eval_flags(tiny, configs=EVAL_CONFIGS):
    return ["--eval-token-ids", tiny["dir"] / "ev.npy", "--eval-calib-token-ids", tiny["dir"] / "cal.npy",
            "--eval-seqlen", SEQLEN, "--eval-clusters", 4, "--eval-head-clusters", 2,
            *(["--eval-configs", configs] if configs else [])]


def grid(tiny):
    return ["--models", f"{tiny['path']},opt-66b", "--configs", "W16A16,W4A4,W4A4KV", "--hw", "H200,H200-int3",
            "--batch", "1,8", "--seq", "64", "--paper", "none"]


def refsim_eval(capsys, tiny, configs):
    rc, out, err = cli(capsys, "eval", tiny["path"], "--configs", configs, "--token-ids", tiny["dir"] / "ev.npy",
                       "--calib-token-ids", tiny["dir"] / "cal.npy", "--seqlen", SEQLEN, "--clusters", 4,
                       "--head-clusters", 2, "--scheduler", "inline", "--json", "--quiet")
    assert rc == 0, err
    return json.loads(out)


def test_joined_perplexities_are_refsim_evals_and_a_rerun_resumes(tiny, capsys, tmp_path):
    """(a) every measured row holds exactly (==) the perplexity `refsim eval --json` prints for that model,
    tokens and configuration; default --eval-configs: the --configs refsim eval knows (W4A4KV is hwmodel's
    RPTQ Table 3 name, and refsim eval's too, so all three); (b) a --force rerun recomputes nothing."""
    want = {r["config"]: r for r in refsim_eval(capsys, tiny, "W16A16,W4A4,W4A4KV")["results"]}
    out = tmp_path / "o"
    argv = ["sweep", *grid(tiny), "--scheduler", "inline", "--eval", tiny["path"], *eval_flags(tiny, None),
            "--out", out, "--no-plot", "--json"]
    rc, stdout, err = cli(capsys, *argv)
    assert rc == 0, err
    assert "eval: " in err  # computed: refsim eval's progress
    summary = json.loads(stdout)
    assert summary["accuracy"]["eval"]["configs"] == ["W16A16", "W4A4", "W4A4KV"]
    assert summary["accuracy"]["eval"]["not_evaluated"] == []
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    measured = [r for r in rows if r["source"] == MEASURED]
    assert len(measured) == 3 * 2 * 2  # configurations x hardware x batch, all on the tiny model
    for r in measured:
        assert r["model"] == tiny["path"] and r["accuracy_model"] == str(tiny["path"])
        assert r["perplexity"] == want[r["config"]]["perplexity"] and r["tokens"] == want[r["config"]]["tokens"]
        assert r["reference"] == str(out / "eval.json")
    assert all(r["perplexity"] is None for r in rows if r["model"] == "opt-66b")  # nothing made up
    doc = json.loads((out / "eval.json").read_text())
    assert [r["perplexity"] for r in doc["results"]] == [want[c]["perplexity"] for c in ("W16A16", "W4A4", "W4A4KV")]
    # the written eval.json, given back with --accuracy, joins to the same rows
    rc, _, err = cli(capsys, "sweep", *grid(tiny), "--scheduler", "inline", "--accuracy", out / "eval.json",
                     "--out", tmp_path / "f", "--no-plot")
    assert rc == 0, err
    assert json.loads((tmp_path / "f" / "sweep.json").read_text())["rows"] == rows

    before = {k: v for k, v in snapshot(out / "eval-cache").items()}
    rc, stdout2, err = cli(capsys, *argv, "--force")
    assert rc == 0, err
    assert "eval: " not in err and "calibrate" not in err  # (b) nothing recomputed: every window cached
    assert json.loads((out / "sweep.json").read_text())["rows"] == rows
    assert snapshot(out / "eval-cache") == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the working cache is gone


def test_eval_cache_is_refsim_evals_out(tiny, capsys, tmp_path):
    """--eval-cache DIR is `refsim eval --out DIR`: a cache refsim eval filled serves the sweep, which
    recomputes nothing and joins the same bits."""
    cache = tmp_path / "cache"
    rc, out, err = cli(capsys, "eval", tiny["path"], "--configs", "W4A4@c1", "--token-ids", tiny["dir"] / "ev.npy",
                       "--calib-token-ids", tiny["dir"] / "cal.npy", "--seqlen", SEQLEN, "--clusters", 4,
                       "--head-clusters", 2, "--scheduler", "inline", "--json", "--quiet", "--out", cache)
    assert rc == 0, err
    want = json.loads(out)["results"][0]["perplexity"]
    rc, stdout, err = cli(capsys, "sweep", *grid(tiny), "--configs", "W4A4", "--scheduler", "inline", "--eval",
                          f"{tiny['path']}", *eval_flags(tiny, "W4A4@c1"), "--eval-cache", cache, "--json")
    assert rc == 0, err
    assert "eval: " not in err
    summary = json.loads(stdout)
    # W4A4@c1 is not a --configs entry: evaluated, listed as not joined (as a file's would be)
    assert summary["accuracy"]["not_joined"] == [{"model": tiny["path"], "config": "W4A4@c1", "source": MEASURED}]
    assert json.loads((cache / ".refsim-output.json").read_text())["kind"] == "eval"
    rc, stdout, err = cli(capsys, "sweep", *grid(tiny), "--configs", "W4A4", "--scheduler", "inline", "--eval",
                          f"{tiny['path']}=opt-66b", *eval_flags(tiny, "W4A4@c1"), "--eval-cache", cache, "--json",
                          "--no-plot", "--out", tmp_path / "o")
    assert rc == 0 and "eval: " not in err, err
    assert json.loads((tmp_path / "o" / "eval.json").read_text())["results"][0]["perplexity"] == want
    assert not (tmp_path / "o" / "eval-cache").exists()  # kept where --eval-cache says


def test_configs_refsim_eval_does_not_know_are_listed(tiny, capsys, tmp_path):
    rc, stdout, err = cli(capsys, "sweep", *grid(tiny), "--configs", "W4A4,W4A4-c8,gptq-W4", "--scheduler",
                          "inline", "--eval", tiny["path"], *eval_flags(tiny, None), "--json")
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["accuracy"]["eval"]["configs"] == ["W4A4"]
    assert summary["accuracy"]["eval"]["not_evaluated"] == ["W4A4-c8", "gptq-W4"]
    assert "--configs W4A4-c8 is not a refsim eval configuration: not evaluated" in err


@pytest.mark.parametrize("extra, names", [
    ([], "--eval-text FILE or --eval-token-ids"),  # --eval with no text
    (["--eval-text", "t.txt", "--eval-token-ids", "ev.npy"], "not both"),
    (["--eval-token-ids", "ev.npy", "--eval-calib-text", "c.txt", "--eval-calib-token-ids", "cal.npy"],
     "--eval-calib-text and --eval-calib-token-ids"),
    (["--eval-token-ids", "ev.npy", "--eval-configs", "W4A5"], "--eval-configs entry 'W4A5'"),
    (["--eval-token-ids", "ev.npy", "--eval-seqlen", "64"], "--eval-seqlen 64"),  # no full window
    (["--eval-token-ids", "ev.npy", "--eval-max-tokens", "4"], "--eval-max-tokens 4"),
    (["--eval-token-ids", "missing.npy"], "--eval-token-ids"),
    (["--eval-token-ids", "ev.npy", "--eval-clusters", "99"], "--eval-configs W4A4"),
    (["--eval-token-ids", "ev.npy", "--configs", "W4A4-c8"], "--eval: none of --configs"),
    (["--eval-token-ids", "ev.npy", "--eval-cache", "o/c", "--out", "o"], "--eval-cache o/c: must lie outside"),
])
def test_bad_eval_combinations_are_one_line_errors(tiny, capsys, monkeypatch, extra, names):
    monkeypatch.chdir(tiny["dir"])
    rc, out, err = cli(capsys, "sweep", *grid(tiny), "--configs", "W4A4", "--scheduler", "inline",
                       "--eval", tiny["path"], *extra)
    assert_one_line_error(rc, err, names=names)
    assert out == "" and not (tiny["dir"] / "o").exists()


def test_foreign_eval_cache_is_refused_and_ctrl_c_leaves_nothing(tiny, capsys, tmp_path, monkeypatch):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a user's file")
    snap = snapshot(foreign)
    rc, _, err = cli(capsys, "sweep", *grid(tiny), "--scheduler", "inline", "--eval", tiny["path"],
                     *eval_flags(tiny), "--eval-cache", foreign)
    assert_one_line_error(rc, err, names="--eval-cache")
    assert snapshot(foreign) == snap
    import refsim_app.eval

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(refsim_app.eval, "evaluate_command", interrupted)  # Ctrl-C while refsim eval runs
    rc, out, err = cli(capsys, "sweep", *grid(tiny), "--scheduler", "inline", "--eval", tiny["path"],
                       *eval_flags(tiny), "--out", tmp_path / "o")
    assert rc == 130 and out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no output, no working cache


@pytest.mark.parametrize("argv, names", [
    (["--eval-seqlen", "16"], "--eval-seqlen is an option of --eval MODEL"),
    (["--eval-cache", "c"], "--eval-cache is an option of --eval MODEL"),
    (["--eval", "no/such/model", "--eval-token-ids", "x.npy"], "--eval no/such/model: no such model"),
    (["--eval-seqlen", "1"], "--eval-seqlen"),
])
def test_eval_flag_errors_without_a_model(capsys, tmp_path, monkeypatch, argv, names):
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli(capsys, "sweep", "--scheduler", "inline", *argv)
    assert_one_line_error(rc, err, names=names)


def test_eval_model_must_join_a_sweep_model_before_any_work(tiny, capsys):
    rc, _, err = cli(capsys, "sweep", "--models", "opt-66b", "--scheduler", "inline", "--eval", tiny["path"],
                     *eval_flags(tiny))
    assert_one_line_error(rc, err, names="add it to --models")
    assert "eval: " not in err  # refused before refsim eval ran
    rc, _, err = cli(capsys, "sweep", "--models", "opt-66b", "--scheduler", "inline", "--eval",
                     f"{tiny['path']}=llama-2-7b", *eval_flags(tiny))
    assert_one_line_error(rc, err, names="'llama-2-7b' is not one of --models")


def test_eval_messages_name_the_sweeps_flags():
    assert sweep_flags("--seqlen 64: no --max-tokens, MODEL has no --text") == (
        "--eval-seqlen 64: no --eval-max-tokens, --eval MODEL has no --eval-text")
    assert sweep_flags("--out x exists; --scheduler 'a'") == "--eval-cache x exists; --scheduler 'a'"
    assert sweep_flags("--calib-token-ids f and --token-ids g") == "--eval-calib-token-ids f and --eval-token-ids g"


def test_help_documents_the_eval_options(capsys):
    rc, out, _ = cli(capsys, "sweep", "--help")
    assert rc == 0
    for flag in ("--eval MODEL", "--eval-text", "--eval-token-ids", "--eval-calib-text", "--eval-calib-token-ids",
                 "--eval-configs", "--eval-seqlen", "--eval-max-tokens", "--eval-cache", "eval.json", "eval-cache/"):
        assert flag in out, flag


def test_dask_gives_the_rows_of_inline(llama, capsys, tmp_path):
    """(d) the default scheduler (a new local cluster of 2 workers: refsim eval's tasks, then the cost cells)
    writes the same rows and eval results as --scheduler inline (one family: two local clusters take a while)."""
    pytest.importorskip("distributed")
    tiny = llama
    common = [*grid(tiny), "--eval", tiny["path"], *eval_flags(tiny, "W16A16,W4A4"), "--no-plot"]
    assert cli(capsys, "sweep", *common, "--scheduler", "inline", "--out", tmp_path / "a")[0] == 0
    rc, _, err = cli(capsys, "sweep", *common, "--workers", "2", "--out", tmp_path / "b")
    assert rc == 0, err
    for name in ("sweep.json", "eval.json"):
        a = json.loads((tmp_path / "a" / name).read_text().replace(str(tmp_path / "a"), "OUT"))
        b = json.loads((tmp_path / "b" / name).read_text().replace(str(tmp_path / "b"), "OUT"))
        assert a == b, name
