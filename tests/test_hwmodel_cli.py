"""``refsim cost``: tables, JSON, CSV, plots and errors, through the refsim entry point."""

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest

refsim_cli = pytest.importorskip("refsim_app.cli")
from hwmodel.outputs import PLOT_NAMES, is_own_plot  # noqa: E402


def cost(capsys, *argv):
    rc = refsim_cli.main(["cost", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_table(capsys):
    rc, out, _ = cost(capsys, "opt-66b", "--hw", "H200", "--config", "W4A4KV",
                      "--batch", "64", "--seq", "8192")
    assert rc == 0
    assert "opt-66b: 64 layers" in out and "GiB = 2^30 bytes, GB = 10^9 bytes" in out
    row = next(line for line in out.splitlines() if line.startswith("W4A4KV"))
    assert row.split()[4] == "395.35"  # total GiB, Table 3: 395.4
    assert "no int4 tensor cores" in out
    assert "W4A4" not in out.split("energy")[1] and "fp16 1.5 pJ [Horowitz ISSCC 2014]" in out


def test_tensors_and_interpolated_energy_label(capsys):
    rc, out, _ = cost(capsys, "llama-3-70b", "--config", "W3A3KV,W4A4", "--tensors")
    assert rc == 0 and "W4A8 0.216 pJ [interpolated from BitFusion]" in out
    assert "layers.k_proj      linear    1024x8192      80" in out
    assert "total 70,553,706,496 parameters" in out


def test_json_and_layers(capsys):
    rc, out, _ = cost(capsys, "llama-3-8b", "--config", "W4A4,W16A16", "--batch", "4", "--seq", "4096",
                      "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["units"]["gib"] == "2^30 B"
    assert [r["config"]["name"] for r in doc["results"]] == ["W4A4", "W16A16"]
    mem = doc["results"][0]["memory"]
    assert mem["total_gib"] == pytest.approx(mem["total_bytes"] / 2**30)
    ops = {(r["stage"], r["op"]) for r in doc["results"][0]["layers"]}
    assert ("decode", "gate_up") in ops and ("prefill", "lm_head") in ops
    decode = [r["throughput"]["decode"]["tokens_per_s"] for r in doc["results"]]
    assert decode[1] < decode[0]


def test_csv(capsys):
    rc, out, _ = cost(capsys, "opt-1.3b", "--config", "W4A8,qrazor-W4A4KV4", "--csv")
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 4 and {r["stage"] for r in rows} == {"prefill", "decode"}
    assert {"total_gib", "total_gb", "tokens_per_s", "energy_per_token_j"} <= set(rows[0])


def test_plots_with_small_sweep(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")  # a user's file beside the plots stays
    argv = ["opt-6.7b", "--hw", "A100", "--config", "W4A4", "--batch", "8", "--seq", "2048",
            "--plot", str(tmp_path), "--grid", "small", "--scheduler", "inline"]
    rc, out, err = cost(capsys, *argv)
    assert rc == 0 and "Pareto front" in out
    for name in ("memory", "savings", "roofline", "pareto"):
        png = tmp_path / f"cost_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
        assert is_own_plot(png)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*PLOT_NAMES, "notes.txt"])  # no temporaries
    first = {n: (tmp_path / n).read_bytes() for n in PLOT_NAMES}
    assert cost(capsys, *argv)[0] == 0  # its own plots are replaced, with the same bytes
    assert {n: (tmp_path / n).read_bytes() for n in PLOT_NAMES} == first
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_ctrl_c_during_the_sweep_leaves_nothing(capsys, tmp_path, monkeypatch):
    import hwmodel.sweep

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(hwmodel.sweep, "compute_errors", interrupted)
    for argv in (["--csv-dir", str(tmp_path / "t")], ["--plot", str(tmp_path / "p")]):
        rc, out, err = cost(capsys, "opt-125m", "--sweep", "--scheduler", "inline", "--grid", "small", *argv)
        assert rc == 130 and err.strip() == "refsim cost: interrupted"
    assert [p.name for p in tmp_path.iterdir()] == []  # no output, no temporary


@pytest.mark.slow
def test_ctrl_c_during_a_dask_sweep_is_one_line():
    import os
    import signal

    p = subprocess.Popen([sys.executable, "-m", "refsim_app", "cost", "opt-125m", "--sweep"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True, text=True)
    # the first progress line says the cluster is up and computing (a fixed sleep raced the sweep's end)
    first = p.stderr.readline()
    assert first.startswith("sweep errors"), first
    os.killpg(p.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
    out, rest = p.communicate(timeout=120)
    err = first + rest
    assert p.returncode == 130 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.strip() and not line.startswith("sweep errors")] == [
        "refsim cost: interrupted"]


@pytest.mark.parametrize("argv, message", [
    (["gpt-5"], "unknown model 'gpt-5'; known models: opt-125m"),
    (["opt-66b", "--hw", "TPU"], "unknown hardware 'TPU'; known: A100, H100, H200"),
    (["opt-66b", "--config", "W0A4"], "--config W0A4: config 'W0A4': w_bits must be in 1..32"),
    (["opt-66b", "--config", "W4A4KV0"], "kv_bits must be in 1..32"),
])
def test_errors_exit_2_with_a_clear_message(capsys, argv, message):
    rc, _, err = cost(capsys, *argv)
    assert rc == 2 and message in err


@pytest.mark.parametrize("flag", ["--batch", "--seq"])
def test_nonpositive_batch_and_seq(capsys, flag):
    with pytest.raises(SystemExit) as exc:
        refsim_cli.main(["cost", "opt-66b", flag, "0"])
    assert exc.value.code == 2
    assert f"argument {flag}: allowed: an integer in 1.." in capsys.readouterr().err


def test_list(capsys):
    rc, out, _ = cost(capsys, "--list")
    assert rc == 0 and "mistral-7b" in out and "acc-int3 (hypothetical)" in out and "interpolated" in out
    # every configuration name explained: what is quantized at which bits
    assert ("W4A4KV [rptq]: weights 4-bit, scale+zero per row; embeddings and output layer 4-bit; "
            "activations fp16; KV cache 4-bit") in out
    assert "qrazor-W4A4 [qrazor]: weights 4-bit SDR (razored from int8, 4-bit flag per 16)" in out
    assert "gptq-W4-g128 [gptq]: weights 4-bit, scale+zero per 128 inputs" in out


def test_module_entry_point_runs_in_a_fresh_interpreter():
    r = subprocess.run([sys.executable, "-m", "refsim_app.cli", "cost", "opt-125m", "--config", "W3A3KV"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "W3A3KV" in r.stdout


# ----------------------------------------------------------------------------- bad inputs (issue 10)

def _model_dir(tmp_path, cfg: str):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(cfg)
    return d


def test_config_json_missing_key_names_file_and_key(capsys, tmp_path):
    d = _model_dir(tmp_path, '{"model_type": "opt"}')
    rc, _, err = cost(capsys, str(d))
    assert rc == 2 and "Traceback" not in err
    assert f"model config {d / 'config.json'}: missing key 'hidden_size'" in err and err.count("\n") == 1


def test_config_json_that_does_not_parse(capsys, tmp_path):
    d = _model_dir(tmp_path, '{"model_type": "opt",\n  "hidden_size": }')
    rc, _, err = cost(capsys, str(d))
    assert rc == 2 and "not valid JSON" in err and "line 2" in err and str(d / "config.json") in err


def test_hw_json_that_does_not_parse_names_file_and_line(capsys, tmp_path):
    hw = tmp_path / "hw.json"
    hw.write_text('{"name": "x",\n')
    rc, _, err = cost(capsys, "opt-125m", "--hw", str(hw))
    assert rc == 2 and f"--hw {hw}: hardware file {hw}: not valid JSON" in err and "line 2" in err


@pytest.mark.parametrize("spec, key", [
    ({"name": "x", "bandwidth_gbs": "fast", "capacity_gib": 8, "buffer_mib": 1, "clock_ghz": 1,
      "peak_tops": {"4,4": 10}}, "'bandwidth_gbs' must be a positive number"),
    ({"name": "x", "bandwidth_gbs": 100, "capacity_gib": 8, "buffer_mib": 1, "clock_ghz": 1,
      "peak_tops": {"4,4": -1}}, "peak_tops['4,4']"),
    ({"name": "x", "bandwidth_gbs": 100, "capacity_gib": 8, "buffer_mib": 1}, "missing keys ['clock_ghz']"),
    ({"name": "x", "bandwidth_gbs": 100, "capacity_gib": 8, "buffer_mib": 1, "clock_ghz": 1, "mac_rows": 8},
     "missing ['mac_cols', 'mac_w_bits', 'mac_a_bits']"),
])
def test_hw_json_bad_values_name_the_key(capsys, tmp_path, spec, key):
    hw = tmp_path / "acc.json"
    hw.write_text(json.dumps(spec))
    rc, _, err = cost(capsys, "opt-125m", "--hw", str(hw))
    assert rc == 2 and f"hardware file {hw}" in err and key in err


@pytest.mark.parametrize("content, message", [
    (b"junk", "not a NumPy .npz archive"),
    ("arrays", "lacks arrays ['k']"),
])
def test_bad_calib_file_names_file_and_key(capsys, tmp_path, content, message):
    path = tmp_path / "c.npz"
    if content == "arrays":
        np.savez(path, x=np.ones((4, 8)), w=np.ones((2, 8)))
    else:
        path.write_bytes(content)
    rc, _, err = cost(capsys, "opt-125m", "--sweep", "--scheduler", "inline", "--grid", "small",
                      "--calib", str(path))
    assert rc == 2 and f"calib file {path}" in err and message in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["opt-125m", "--calib", "x.npz"], "--calib is used only by the sweep"),
    (["opt-125m", "--grid", "small"], "--grid is used only by the sweep"),
    (["opt-125m", "--csv", "--layers"], "use --csv-dir DIR"),
    (["opt-125m", "--force"], "--force replaces an earlier --csv-dir output"),
    (["opt-125m", "--config", ","], "give at least one configuration"),
])
def test_inconsistent_flags_refused_up_front(capsys, argv, message):
    rc, out, err = cost(capsys, *argv)
    assert rc == 2 and message in err and out == ""


def test_plot_and_sweep_name_the_extra_on_a_core_install(capsys, tmp_path, monkeypatch):
    from refsim import outputs as cliutil

    real = cliutil.missing_modules
    monkeypatch.setattr(cliutil, "missing_modules",
                        lambda *m: [x for x in m if x in ("matplotlib", "distributed")] or real(*m))
    for argv in (["--plot", str(tmp_path / "p")], ["--sweep"]):
        rc, out, err = cost(capsys, "opt-125m", *argv)
        assert rc == 2 and "needs the [cost] extra" in err and "pip install 'refsim[cost]'" in err and out == ""
    assert not (tmp_path / "p").exists()


def test_json_is_strict_with_null_for_undefined_ratios(capsys):
    rc, out, _ = cost(capsys, "opt-125m", "--json")
    assert rc == 0

    def no_constants(name):
        raise AssertionError(f"non-standard JSON token {name}")

    doc = json.loads(out, parse_constant=no_constants)
    layers = [row for r in doc["results"] for row in r["layers"]]
    on_chip = [row for row in layers if row["dram_bytes"] == 0]
    assert on_chip and all(row["intensity"] is None for row in on_chip)
    assert all(0 < row["intensity"] < 1e9 for row in layers if row["dram_bytes"] > 0)
    assert "null" in doc["null"]


def test_csv_dir_writes_one_table_per_file(capsys, tmp_path):
    out = tmp_path / "tables"
    rc, _, err = cost(capsys, "opt-125m", "--config", "W4A4,W16A16", "--csv-dir", str(out), "--sweep",
                      "--scheduler", "inline", "--grid", "small")
    assert rc == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == [".refsim-output.json", "layers.csv", "summary.csv", "sweep.csv", "tensors.csv"]
    for name in ("layers.csv", "summary.csv", "sweep.csv", "tensors.csv"):
        text = (out / name).read_text()
        rows = list(csv.DictReader(io.StringIO(text)))
        assert rows and all(None not in r and len(r) == len(rows[0]) for r in rows)  # one header, one table
        assert text.count("\n\n") == 0
    assert len(list(csv.DictReader(io.StringIO((out / "summary.csv").read_text())))) == 4
    # replacing it needs --force; a foreign directory is refused whatever flag is given
    rc, _, err = cost(capsys, "opt-125m", "--csv-dir", str(out))
    assert rc == 2 and "pass --force" in err
    assert cost(capsys, "opt-125m", "--csv-dir", str(out), "--force")[0] == 0
    assert not (out / "sweep.csv").exists()


def _snapshot(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_foreign_files_in_the_way_of_plot_and_csv_dir_survive(capsys, tmp_path):
    plots_dir = tmp_path / "plots"
    plots_dir.mkdir()
    (plots_dir / "cost_memory.png").write_bytes(b"\x89PNG\r\n\x1a\nnot refsim's")
    (plots_dir / "notes.txt").write_text("mine")
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "summary.csv").write_text("a,b\n1,2\n")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    before = _snapshot(tmp_path)
    for argv, message in (
        (["--plot", str(plots_dir), "--scheduler", "inline"], "cost_memory.png exists and was not written by refsim"),
        (["--plot", str(a_file), "--scheduler", "inline"], "exists and is not a directory"),
        (["--csv-dir", str(user_dir), "--force"], "is not an output this command wrote"),
        (["--csv-dir", str(a_file)], "exists and is not a directory"),
    ):
        rc, out, err = cost(capsys, "opt-125m", *argv)
        assert rc == 2 and message in err and out == "", argv
    assert _snapshot(tmp_path) == before


def test_broken_pipe_is_quiet():
    p = subprocess.Popen([sys.executable, "-m", "refsim_app", "cost", "opt-125m", "--layers"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.readline()
    p.stdout.close()  # like `| head -1`
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) in (0, 141) and "Traceback" not in err


def test_to_json_writes_null_for_non_finite_numbers():
    from hwmodel.report import to_json

    text = to_json({"inf": float("inf"), "rows": [{"nan": float("nan"), "neg": -float("inf"), "x": 1.5}]})
    assert json.loads(text) == {"inf": None, "rows": [{"nan": None, "neg": None, "x": 1.5}]}
    assert "Infinity" not in text and "NaN" not in text


LLAMA = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 8, "num_hidden_layers": 2,
         "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 256}


@pytest.mark.parametrize("cfg, message", [
    ({**LLAMA, "hidden_size": 10**21}, "key 'hidden_size' must be a positive integer up to"),
    ({**LLAMA, "hidden_size": 100, "num_attention_heads": 7}, "not a multiple of num_attention_heads"),
    ({"model_type": "opt", "hidden_size": "768"}, "key 'hidden_size' must be a positive integer"),
    ({"model_type": "opt", "hidden_size": 768, "num_attention_heads": -12}, "key 'num_attention_heads'"),
    ({"model_type": "gpt2"}, "model_type must be one of 'opt', 'llama', 'mistral'"),
    ([1, 2], "expected a JSON object"),
])
def test_config_json_bad_values(capsys, tmp_path, cfg, message):
    d = _model_dir(tmp_path, json.dumps(cfg))
    rc, out, err = cost(capsys, str(d))
    assert rc == 2 and message in err and str(d / "config.json") in err and out == ""
