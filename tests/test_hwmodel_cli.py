"""``refsim cost``: tables, JSON, CSV, plots and errors, through the refsim entry point."""

import csv
import io
import json
import subprocess
import sys

import pytest

refsim_cli = pytest.importorskip("refsim.cli")


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
    rc, out, err = cost(capsys, "opt-6.7b", "--hw", "A100", "--config", "W4A4", "--batch", "8",
                        "--seq", "2048",
                        "--plot", str(tmp_path), "--grid", "small", "--scheduler", "inline")
    assert rc == 0 and "Pareto front" in out
    for name in ("memory", "savings", "roofline", "pareto"):
        png = tmp_path / f"cost_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


@pytest.mark.parametrize("argv, message", [
    (["gpt-5"], "unknown model 'gpt-5'; known models: opt-125m"),
    (["opt-66b", "--hw", "TPU"], "unknown hardware 'TPU'; known: A100, H100, H200"),
    (["opt-66b", "--config", "W0A4"], "w_bits must be in 1..32"),
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
    assert f"{flag.strip('-')} must be a positive integer, got 0" in capsys.readouterr().err


def test_list(capsys):
    rc, out, _ = cost(capsys, "--list")
    assert rc == 0 and "mistral-7b" in out and "acc-int3 (hypothetical)" in out and "interpolated" in out


def test_module_entry_point_runs_in_a_fresh_interpreter():
    r = subprocess.run([sys.executable, "-m", "refsim.cli", "cost", "opt-125m", "--config", "W3A3KV"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "W3A3KV" in r.stdout
