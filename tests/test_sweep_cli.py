"""`refsim sweep`: the grid, the join with refsim eval results and paper rows, Dask == inline, the
Pareto front against a brute-force twin, one-line errors, outputs that never replace a user's files."""

import csv
import json

import numpy as np
import pytest
from clitools import assert_one_line_error, cli
from hypothesis import given, settings
from hypothesis import strategies as st

from hwmodel.paper_accuracy import PAPER_ROWS, paper_rows
from hwmodel.sweep import pareto_mask
from hwmodel.sweep_cli import MEASURED, load_accuracy

SMALL = ["--models", "opt-66b,llama-2-7b", "--configs", "W16A16,W4A4,W4A4KV", "--hw", "H200,H200-int3",
         "--batch", "1,8", "--seq", "2048"]


def results_file(path, model="opt-66b", rows=None):
    rows = rows if rows is not None else [{"config": "W16A16", "perplexity": 20.5, "tokens": 4096},
                                          {"config": "W4A4", "perplexity": 31.25, "tokens": 4096},
                                          {"config": "W3A3KV", "perplexity": 25.0, "tokens": 4096}]
    path.write_text(json.dumps({"model": model, "results": rows}))
    return path


def sweep_json(capsys, *extra):
    rc, out, err = cli(capsys, "sweep", *SMALL, "--scheduler", "inline", "--json", *extra)
    assert rc == 0, err
    return json.loads(out), err


def test_grid_size_and_rows(tmp_path, capsys):
    summary, _ = sweep_json(capsys, "--paper", "none", "--out", tmp_path / "o", "--no-plot")
    assert summary["grid"]["points"] == 2 * 3 * 2 * 2 * 1
    rows = list(csv.DictReader(open(tmp_path / "o" / "sweep.csv")))
    assert len(rows) == 24 and summary["rows"] == 24
    assert {(r["model"], r["hardware"], r["batch"], r["config"]) for r in rows} == {
        (m, h, b, c) for m in ("opt-66b", "llama-2-7b") for h in ("H200", "H200-int3") for b in ("1", "8")
        for c in ("W16A16", "W4A4", "W4A4KV")}
    assert all(r["perplexity"] == "" and r["source"] == "" for r in rows)  # no accuracy given: nothing made up
    assert summary["pareto"] == []
    header = (tmp_path / "o" / "pareto.csv").read_text().splitlines()
    assert header == [",".join(rows[0])]  # no front: the columns of sweep.csv, no rows
    doc = json.loads((tmp_path / "o" / "sweep.json").read_text())
    assert doc["rows"][0]["perplexity"] is None  # strict JSON null, not NaN


def test_join_with_accuracy_file_and_paper_rows(tmp_path, capsys):
    f = results_file(tmp_path / "eval.json")
    summary, err = sweep_json(capsys, "--accuracy", f, "--out", tmp_path / "o", "--no-plot")
    rows = json.loads((tmp_path / "o" / "sweep.json").read_text())["rows"]
    measured = [r for r in rows if r["source"] == MEASURED]
    # 2 configs of the file in --configs x 2 hardware x 2 batch; W3A3KV is not in --configs: reported
    assert len(measured) == 8 and {r["config"] for r in measured} == {"W16A16", "W4A4"}
    assert all(r["model"] == "opt-66b" and r["accuracy_model"] == "opt-66b" for r in measured)
    assert {r["perplexity"] for r in measured if r["config"] == "W4A4"} == {31.25}
    assert "W3A3KV" in err and "not joined" in err
    assert summary["accuracy"]["not_joined"][0]["config"] == "W3A3KV"
    paper = [r for r in rows if r["source"] and r["source"].startswith("paper")]
    assert paper and all(r["source"] == "paper: RPTQ Table 1 (WikiText2)" and r["model"] == "opt-66b"
                         and "RPTQ4LLM" in r["reference"] and r["dataset"] == "wikitext2" for r in paper)
    assert {(r["config"], r["perplexity"]) for r in paper} == {("W16A16", 9.34), ("W4A4", 12.31), ("W4A4KV", 9.75)}
    # a point covered by both sources appears once per source, never merged
    both = [r for r in rows if r["model"] == "opt-66b" and r["config"] == "W4A4" and r["hardware"] == "H200"
            and r["batch"] == 1]
    assert sorted(r["source"] for r in both) == [MEASURED, "paper: RPTQ Table 1 (WikiText2)"]
    # llama-2-7b: no verified paper figure is committed, so it has no perplexity at all
    assert all(r["perplexity"] is None for r in rows if r["model"] == "llama-2-7b")
    # fronts never mix sources: measured W16A16 (20.5) is on its front although the paper's W4A4KV
    # (9.75, faster) would dominate it on a mixed one
    m16 = [r for r in measured if r["config"] == "W16A16" and r["batch"] == 1 and r["hardware"] == "H200"]
    p4kv = [r for r in paper if r["config"] == "W4A4KV" and r["batch"] == 1 and r["hardware"] == "H200"]
    assert p4kv[0]["decode_tokens_per_s"] > m16[0]["decode_tokens_per_s"] and p4kv[0]["perplexity"] < 20.5
    assert m16[0]["pareto_decode"] and m16[0]["pareto_energy"]
    front_rows = list(csv.DictReader(open(tmp_path / "o" / "pareto.csv")))
    assert len(front_rows) == sum(r["pareto_decode"] or r["pareto_prefill"] or r["pareto_energy"] for r in rows)


def test_accuracy_file_joined_to_another_model(tmp_path, capsys):
    f = results_file(tmp_path / "smol.json", model="/models/SmolLM2-135M-Instruct")
    rc, _, err = cli(capsys, "sweep", *SMALL, "--scheduler", "inline", "--accuracy", f)
    assert_one_line_error(rc, err, names="--models")
    summary, _ = sweep_json(capsys, "--paper", "none", "--accuracy", f"{f}=llama-2-7b")
    front = summary["pareto"]
    assert front and all(r["model"] == "llama-2-7b" and r["accuracy_model"] == "/models/SmolLM2-135M-Instruct"
                         for r in front)


def test_two_files_for_one_model_are_two_fronts_and_a_repeat_is_refused(tmp_path, capsys):
    a = results_file(tmp_path / "a.json", rows=[{"config": "W4A4", "perplexity": 30.0, "tokens": 10}])
    b = results_file(tmp_path / "b.json", model="smol", rows=[{"config": "W16A16", "perplexity": 90.0, "tokens": 10}])
    summary, _ = sweep_json(capsys, "--paper", "none", "--accuracy", a, "--accuracy", f"{b}=opt-66b")
    front = [r for r in summary["pareto"] if r["batch"] == 1 and r["hardware"] == "H200"]
    # smol's W16A16 (90) would be dominated by opt-66b's own W4A4 (30, faster) on one front; it is not
    assert {(r["config"], r["accuracy_model"]) for r in front} == {("W4A4", "opt-66b"), ("W16A16", "smol")}
    rc, _, err = cli(capsys, "sweep", *SMALL, "--scheduler", "inline", "--accuracy", a, "--accuracy", a)
    assert_one_line_error(rc, err, names="measured in")


def test_w3a3_is_rptq_costed_on_int3_rows_and_joins_eval_results(tmp_path, capsys):
    """refsim eval's W3A3 (every GEMM operand at 3 bits) joins the cost of the same RPTQ scheme: 3-bit weights,
    embeddings and activations, 32 reorder clusters (as W4A4 is counted), and only the int3 tensor cores of
    H200-int3 prefill it faster than H200-int4; decode is bandwidth-bound, the same on both."""
    import hwmodel
    from hwmodel.quantconfig import parse_config, rptq

    assert parse_config("W3A3") == rptq(3, 3) and parse_config("w3a3").method == "rptq"
    f = results_file(tmp_path / "eval.json", rows=[{"config": "W3A3", "perplexity": 40.0, "tokens": 4096},
                                                     {"config": "W4A4", "perplexity": 31.25, "tokens": 4096}])
    rc, out, err = cli(capsys, "sweep", "--models", "opt-66b", "--configs", "W4A4,W3A3", "--hw",
                       "H200,H200-int4,H200-int3", "--batch", "64", "--seq", "2048", "--paper", "none",
                       "--scheduler", "inline", "--accuracy", f, "--out", tmp_path / "o", "--no-plot")
    assert rc == 0, err
    rows = {(r["hardware"], r["config"]): r for r in json.loads((tmp_path / "o" / "sweep.json").read_text())["rows"]}
    assert len(rows) == 6 and "not joined" not in err
    for hw in ("H200", "H200-int4", "H200-int3"):
        r = rows[hw, "W3A3"]
        assert (r["w_bits"], r["a_bits"], r["kv_bits"], r["perplexity"], r["source"]) == (3, 3, 3, 40.0, MEASURED)
        api = hwmodel.throughput("opt-66b", "W3A3", hw, batch=64, seq=2048)
        assert r["prefill_tokens_per_s"] == api["prefill"]["tokens_per_s"]
    p = {hw: rows[hw, "W3A3"]["prefill_tokens_per_s"] for hw in ("H200", "H200-int4", "H200-int3")}
    assert p["H200"] < p["H200-int4"] < p["H200-int3"]
    assert rows["H200-int3", "W4A4"]["prefill_tokens_per_s"] == rows["H200-int4", "W4A4"]["prefill_tokens_per_s"]
    assert rows["H200-int3", "W3A3"]["decode_tokens_per_s"] == rows["H200-int4", "W3A3"]["decode_tokens_per_s"]
    assert rows["H200", "W3A3"]["memory_gib"] < rows["H200", "W4A4"]["memory_gib"]

def test_a_document_joined_by_add_measured_is_a_file_given_with_accuracy(tmp_path, capsys):
    """refsim sweep --eval (refsim_app.sweep) hands its refsim eval document to add_measured: the rows it
    joins are those of the same document read from an --accuracy file, and a bad one is refused alike."""
    import argparse

    from hwmodel import sweep_cli

    doc = {"model": "opt-66b", "results": [{"config": "W4A4", "perplexity": 31.25, "tokens": 4096, "x": 1}]}
    f = results_file(tmp_path / "eval.json", rows=doc["results"])
    parser = argparse.ArgumentParser().add_subparsers()
    p = sweep_cli.register(parser)
    base = [*SMALL, "--scheduler", "inline", "--paper", "none"]
    by_file = sweep_cli.prepare(p.parse_args([*base, "--accuracy", str(f)]))
    ctx = sweep_cli.prepare(p.parse_args(base))
    sweep_cli.add_measured(ctx, doc, flag="--eval", spec="m", target="", reference=str(f))
    assert ctx["accuracy"] == by_file["accuracy"] and ctx["files"] == by_file["files"]
    with pytest.raises(sweep_cli.UsageError, match=r"--eval m: results\[0\].perplexity"):
        sweep_cli.add_measured(ctx, {"model": "opt-66b", "results": [{"config": "W4A8", "perplexity": -1,
                                                                       "tokens": 1}]},
                               flag="--eval", spec="m", target="", reference="r")
    with pytest.raises(sweep_cli.UsageError, match="measured in"):
        sweep_cli.add_measured(ctx, doc, flag="--eval", spec="m", target="", reference="r")

def test_paper_table_rows_are_labelled():
    assert len(PAPER_ROWS) == 7 * 3
    for r in PAPER_ROWS:
        assert r["source"].startswith("paper: RPTQ Table 1 (") and r["reference"] and r["tokens"] is None
    assert [r["perplexity"] for r in paper_rows(("c4",))][:2] == [10.28, 10.31]
    with pytest.raises(ValueError, match="allowed wikitext2, ptb, c4"):
        paper_rows(("wiki",))


@pytest.mark.parametrize("content, names", [
    ("not json", "not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"results": []}', "'model'"),
    ('{"model": "opt-66b", "results": []}', "'results'"),
    ('{"model": "opt-66b", "results": [{"config": "W4A4", "tokens": 5}]}', "results[0]: missing key 'perplexity'"),
    ('{"model": "opt-66b", "results": [{"config": "W4A4", "perplexity": NaN, "tokens": 5}]}',
     "results[0].perplexity"),
    ('{"model": "opt-66b", "results": [{"config": "W4A4", "perplexity": -1, "tokens": 5}]}', "results[0].perplexity"),
    ('{"model": "opt-66b", "results": [{"config": "W4A4", "perplexity": 3, "tokens": 1.5}]}', "results[0].tokens"),
    ('{"model": "opt-66b", "results": [{"config": "", "perplexity": 3, "tokens": 1}]}', "results[0].config"),
    ('{"model": "opt-66b", "results": [{"config": "W4A4", "perplexity": 3, "tokens": 1}, '
     '{"config": "w4a4", "perplexity": 3, "tokens": 1}]}', "appears twice"),
])
def test_bad_accuracy_file_is_one_line_naming_file_and_key(tmp_path, capsys, content, names):
    f = tmp_path / "bad.json"
    f.write_text(content)
    with pytest.raises(ValueError, match=None) as exc:
        load_accuracy(str(f))
    assert names in str(exc.value) and str(f) in str(exc.value) and "\n" not in str(exc.value)
    rc, _, err = cli(capsys, "sweep", *SMALL, "--scheduler", "inline", "--accuracy", f)
    assert_one_line_error(rc, err, names=names)


@pytest.mark.parametrize("args, names", [
    (["--models", "opt-66b,nope"], "--models nope"),
    (["--models", "opt-66b,,llama-2-7b"], "--models"),
    (["--configs", "W4A4,W4A4"], "given twice"),
    (["--configs", "W4A4,w4a4"], "two entries name the same config (w4a4)"),
    (["--models", "opt-66b,OPT-66b"], "--models: two entries"),
    (["--configs", "W4Z4"], "--configs W4Z4"),
    (["--hw", "H200,H999"], "--hw H999"),
    (["--batch", "0"], "1..1048576"),
    (["--batch", "x"], "--batch"),
    (["--seq", "2048,-1"], "--seq"),
    (["--paper", "wiki"], "--paper"),
    (["--workers", "2", "--scheduler", "inline"], "--workers"),
    (["--force"], "--force"),
    (["--no-plot"], "--no-plot"),
    (["--accuracy", "missing.json"], "no such file"),
    (["--scheduler", " "], "--scheduler"),
])
def test_bad_arguments_are_one_line_errors(capsys, args, names):
    rc, out, err = cli(capsys, "sweep", "--scheduler", "inline", *args) if "--scheduler" not in args else cli(
        capsys, "sweep", *args)
    assert_one_line_error(rc, err, names=names)
    assert out == ""


def test_help_documents_every_option(capsys):
    rc, out, _ = cli(capsys, "sweep", "--help")
    assert rc == 0
    for flag in ("--models", "--configs", "--hw", "--batch", "--seq", "--accuracy", "--paper", "--scheduler",
                 "--workers", "--out", "--force", "--no-plot", "--json"):
        assert flag in out
    assert "refsim eval --json" in out and "pareto.png" in out
    from refsim_app.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["sweep"]
    assert [a.dest for a in sub._actions if not a.help] == []
    rc, out, _ = cli(capsys, "cost", "--help")
    assert "refsim sweep" in out


def test_foreign_out_survives_and_own_out_needs_force(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    rc, _, err = cli(capsys, "sweep", *SMALL, "--scheduler", "inline", "--out", foreign, "--no-plot")
    assert_one_line_error(rc, err, names="--out")
    assert (foreign / "notes.txt").read_text() == "keep me" and sorted(p.name for p in foreign.iterdir()) == [
        "notes.txt"]
    out = tmp_path / "o"
    assert cli(capsys, "sweep", *SMALL, "--scheduler", "inline", "--out", out, "--no-plot")[0] == 0
    rc, _, err = cli(capsys, "sweep", *SMALL, "--scheduler", "inline", "--out", out, "--no-plot")
    assert_one_line_error(rc, err, names="--force")
    assert cli(capsys, "sweep", *SMALL, "--scheduler", "inline", "--out", out, "--no-plot", "--force")[0] == 0
    f = results_file(out / "eval.json")  # a user's file added later makes the output foreign
    rc, _, err = cli(capsys, "sweep", *SMALL, "--scheduler", "inline", "--out", tmp_path / "o2",
                     "--accuracy", f"{f}")
    assert rc == 0, err
    rc, _, err = cli(capsys, "sweep", *SMALL, "--scheduler", "inline", "--out", out, "--force", "--no-plot")
    assert_one_line_error(rc, err, names="--out")


def test_plot_written(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    f = results_file(tmp_path / "eval.json")
    rc, _, err = cli(capsys, "sweep", *SMALL, "--scheduler", "inline", "--accuracy", f, "--out", tmp_path / "o")
    assert rc == 0, err
    png = (tmp_path / "o" / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_local_cluster_is_bit_identical_to_inline(tmp_path, capsys):
    pytest.importorskip("distributed")
    f = results_file(tmp_path / "eval.json")
    common = [*SMALL, "--accuracy", f, "--no-plot"]
    assert cli(capsys, "sweep", *common, "--scheduler", "inline", "--out", tmp_path / "a")[0] == 0
    rc, _, err = cli(capsys, "sweep", *common, "--workers", "2", "--out", tmp_path / "b")
    assert rc == 0, err
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        rc, _, err = cli(capsys, "sweep", *common, "--scheduler", cluster.scheduler_address, "--out", tmp_path / "c")
    assert rc == 0, err
    for name in ("sweep.csv", "sweep.json", "pareto.csv"):
        a = (tmp_path / "a" / name).read_text().replace(str(tmp_path / "a"), "OUT")
        for other in ("b", "c"):
            assert (tmp_path / other / name).read_text().replace(str(tmp_path / other), "OUT") == a, (name, other)
    assert len(json.loads((tmp_path / "a" / "sweep.json").read_text())["rows"]) == 32


def test_core_install_runs_inline_and_names_the_extra(tmp_path):
    from clitools import CORE_BLOCKED, run_blocked

    base = ["sweep", "--models", "opt-66b", "--configs", "W4A4", "--hw", "H200", "--batch", "1", "--seq", "2048"]
    p = run_blocked([*base, "--scheduler", "inline", "--out", "o", "--no-plot"], blocked=CORE_BLOCKED, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in (tmp_path / "o").iterdir()) == [".refsim-output.json", "pareto.csv", "sweep.csv",
                                                                   "sweep.json"]
    p = run_blocked(base, blocked=CORE_BLOCKED, cwd=tmp_path)
    assert_one_line_error(p.returncode, p.stderr, names="needs the [cost] extra")
    p = run_blocked([*base, "--scheduler", "inline", "--out", "o2"], blocked=CORE_BLOCKED, cwd=tmp_path)
    assert_one_line_error(p.returncode, p.stderr, names="--no-plot skips it")
    assert not (tmp_path / "o2").exists()


# ---- the Pareto front against its brute-force twin ------------------------------------------------------
def front_brute_force(points):
    """On the front iff no other point is at least as good on both axes (x higher, y lower) and
    strictly better on one: the definition, pair by pair."""
    out = []
    for i, (xi, yi) in enumerate(points):
        dominated = any(xj >= xi and yj <= yi and (xj > xi or yj < yi)
                        for j, (xj, yj) in enumerate(points) if j != i)
        out.append(not dominated)
    return out


def test_front_small_domain_exhaustive():
    grid = [(x, y) for x in range(3) for y in range(3)]
    for mask in range(1, 1 << len(grid)):
        pts = [p for k, p in enumerate(grid) if mask >> k & 1]
        x = np.array([p[0] for p in pts], dtype=float)
        y = np.array([p[1] for p in pts], dtype=float)
        assert pareto_mask(-x, y).tolist() == front_brute_force(pts)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.floats(0.5, 50, allow_nan=False)), min_size=1, max_size=25))
def test_front_matches_brute_force(points):
    pts = [(float(10 ** (x / 3)), y) for x, y in points]  # ties on x are common, as on one hardware row
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    assert pareto_mask(-x, y).tolist() == front_brute_force(pts)


def test_cli_front_is_the_brute_force_front(tmp_path, capsys):
    f = results_file(tmp_path / "eval.json")
    _, _ = sweep_json(capsys, "--accuracy", f, "--out", tmp_path / "o", "--no-plot")
    rows = json.loads((tmp_path / "o" / "sweep.json").read_text())["rows"]
    groups = {}
    for r in rows:
        if r["perplexity"] is not None and r["fits"]:
            groups.setdefault((r["model"], r["source"], r["accuracy_model"], r["batch"], r["seq"]), []).append(r)
    assert groups
    for g in groups.values():
        want = front_brute_force([(r["decode_tokens_per_s"], r["perplexity"]) for r in g])
        assert [r["pareto_decode"] for r in g] == want
        want_p = front_brute_force([(r["prefill_tokens_per_s"], r["perplexity"]) for r in g])
        assert [r["pareto_prefill"] for r in g] == want_p
        want_e = front_brute_force([(-r["decode_energy_per_token_j"], r["perplexity"]) for r in g])
        assert [r["pareto_energy"] for r in g] == want_e
    assert not any(r["pareto_decode"] or r["pareto_prefill"] or r["pareto_energy"]
                   for r in rows if not r["fits"] or r["perplexity"] is None)


def test_progress_and_ctrl_c_leave_no_output(tmp_path, capsys, monkeypatch):
    import hwmodel.plots

    rc, _, err = cli(capsys, "sweep", *SMALL, "--scheduler", "inline", "--paper", "none")
    assert rc == 0 and "refsim sweep: 8/8 cells (24/24 points)" in err

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(hwmodel.plots, "plot_accuracy_pareto", interrupted)  # Ctrl-C while the outputs are staged
    rc, out, err = cli(capsys, "sweep", *SMALL, "--scheduler", "inline", "--out", tmp_path / "o")
    assert rc == 130 and "interrupted" in err and out == ""
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary directory
