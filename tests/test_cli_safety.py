"""A command never replaces what it did not write, refuses a bad output before any work, and ends a
failure, Ctrl-C or a closed pipe in one line: the reproductions of issue 10, tried as a user would."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from clitools import REPO, assert_one_line_error, cli, snapshot

import golden
from refsim import outputs as cliutil

SMALL_DEMO = ("--tokens", "16", "--hidden", "16", "--clusters", "2")


def users_dir(root: Path, name="d") -> Path:
    d = root / name
    d.mkdir()
    (d / "notes.txt").write_text("my notes\n")
    (d / "sub").mkdir()
    (d / "sub" / "rtl.v").write_text("module m; endmodule\n")
    return d


# ----------------------------------------------------------------------------- foreign outputs

@pytest.mark.parametrize("argv", [
    ["demo", *SMALL_DEMO, "--out", "{d}"],                      # no flag at all
    ["golden", "--out", "{d}"],
    ["golden", "--out", "{d}", "--force"],
    ["golden", "requant", "--out", "{d}", "--force", "--level", "1"],
])
def test_a_users_directory_survives_every_flag(tmp_path, capsys, argv):
    d = users_dir(tmp_path)
    before = snapshot(tmp_path)
    rc, _, err = cli(capsys, *[a.format(d=d) for a in argv])
    assert_one_line_error(rc, err, names="--out")
    assert "not an output this command wrote" in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("cmd", [["demo", *SMALL_DEMO], ["golden", "--force"]])
def test_a_plain_file_is_never_replaced(tmp_path, capsys, cmd):
    f = tmp_path / "f"
    f.write_text("keep me\n")
    rc, _, err = cli(capsys, *cmd, "--out", f)
    assert_one_line_error(rc, err, names="--out")
    assert f.read_text() == "keep me\n" and sorted(os.listdir(tmp_path)) == ["f"]


def test_a_bundle_with_a_users_file_in_it_is_foreign(tmp_path, capsys):
    b = golden.write_bundle(None, tmp_path / "b")
    (b / "notes.txt").write_text("results of my RTL run\n")
    before = snapshot(tmp_path)
    rc, _, err = cli(capsys, "golden", "--out", b, "--force")
    assert_one_line_error(rc, err, names="--out")
    rc, _, err = cli(capsys, "demo", *SMALL_DEMO, "--out", b)
    assert_one_line_error(rc, err, names="--out")
    assert snapshot(tmp_path) == before


def test_own_outputs_are_replaced_only_as_asked(tmp_path, capsys):
    out = tmp_path / "b"
    assert cli(capsys, "golden", "requant", "--out", out)[0] == 0
    rc, _, err = cli(capsys, "golden", "--out", out)
    assert_one_line_error(rc, err, names="--force")
    assert json.loads((out / "manifest.json").read_text())["preset"] == "requant"
    assert cli(capsys, "golden", "--out", out, "--force")[0] == 0
    assert json.loads((out / "manifest.json").read_text())["preset"] == golden.DEFAULT_PRESET
    # refsim golden's bundle is not the demo's: the demo refuses it, with or without a flag
    before = snapshot(tmp_path)
    rc, _, err = cli(capsys, "demo", *SMALL_DEMO, "--out", out)
    assert_one_line_error(rc, err, names="--out")
    assert snapshot(tmp_path) == before
    # the demo replaces its own bundle without a flag: a re-run is the normal case
    own = tmp_path / "d"
    assert cli(capsys, "demo", *SMALL_DEMO, "--out", own)[0] == 0
    assert cli(capsys, "demo", *SMALL_DEMO, "--seed", "3", "--out", own)[0] == 0
    assert json.loads((own / "manifest.json").read_text())["generator"]["seed"] == 3
    assert sorted(os.listdir(tmp_path)) == ["b", "d"]  # no temporary or old copy left beside them
    # and refsim golden --force may replace the demo's bundle (both are refsim's own)
    assert cli(capsys, "golden", "requant", "--out", own, "--force")[0] == 0


def test_out_dot_is_refused_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    b = golden.write_bundle(None, tmp_path / "b")
    monkeypatch.chdir(b)
    before = snapshot(tmp_path)
    for argv in (["golden", "--out", ".", "--force"], ["golden", "--out", "..", "--force"],
                 ["demo", *SMALL_DEMO, "--out", "."]):
        rc, _, err = cli(capsys, *argv)
        assert_one_line_error(rc, err, names="current directory")
    assert snapshot(tmp_path) == before
    assert not [p for p in tmp_path.rglob("*") if ".old-" in p.name or ".tmp-" in p.name]


@pytest.mark.parametrize("out", ["/proc/refsim-out", "/proc/refsim/deeper", "/sys/refsim-out"])
def test_unwritable_output_is_refused_before_any_work(capsys, out, monkeypatch):
    import golden.bundle as gb

    monkeypatch.setattr(gb, "build_stages", lambda *a, **k: pytest.fail("computed before checking --out"))
    for argv in (["golden", "--out", out], ["demo", *SMALL_DEMO, "--out", out]):
        rc, _, err = cli(capsys, *argv)
        assert_one_line_error(rc, err, names="--out")
        assert "not writable" in err


def test_read_only_directory_is_refused(tmp_path, capsys, monkeypatch):
    """As root a chmod'ed directory is still writable, so the check tries to create something there."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        writable = cliutil._can_create_in(ro)
        rc, _, err = cli(capsys, "golden", "--out", ro / "b")
        if writable:  # root: the directory really is writable, and the bundle is written
            assert rc == 0
        else:
            assert_one_line_error(rc, err, names="not writable")
            assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)


# ----------------------------------------------------------------------------- calibrate and realdemo

@pytest.fixture
def fake_model(tmp_path):
    """Enough of a checkpoint directory for the output checks, which come before reading it."""
    m = tmp_path / "M"
    m.mkdir()
    (m / "config.json").write_text('{"model_type": "opt"}\n')
    (m / "model.safetensors").write_bytes(b"\0" * 64)
    return m


def _calibrate_refusals(tmp_path, m):
    d = users_dir(tmp_path, "d")
    np.save(d / "ids.npy", np.zeros((2, 8), np.int64))
    return [
        (["--out", m, "--overwrite"], "input MODEL_DIR"),
        (["--out", m / "sub", "--overwrite"], "input MODEL_DIR"),
        (["--out", tmp_path, "--overwrite"], "input MODEL_DIR"),
        (["--out", d, "--overwrite"], "not an output this command wrote"),
        (["--out", d, "--calib", d / "ids.npy", "--overwrite"], "input --calib"),
        (["--out", d / "notes.txt", "--overwrite"], "not a directory"),
    ]


def test_calibrate_never_touches_its_input_or_a_users_directory(tmp_path, capsys, fake_model):
    pytest.importorskip("transformers")
    cases = _calibrate_refusals(tmp_path, fake_model)
    before = snapshot(tmp_path)
    for args, message in cases:
        rc, _, err = cli(capsys, "calibrate", fake_model, *args, "--quiet")
        assert_one_line_error(rc, err, names="--out")
        assert message in err, (args, err)
    assert snapshot(tmp_path) == before


def test_realdemo_refuses_its_input_and_foreign_outputs(tmp_path, capsys, fake_model):
    pytest.importorskip("transformers")
    from refsim_app import realdemo

    d = users_dir(tmp_path)
    before = snapshot(tmp_path)
    for argv, message in ((["--model-dir", fake_model, "--out", fake_model, "--overwrite"], "input --model-dir"),
                          (["--model-dir", fake_model, "--out", d, "--overwrite"], "not an output"),
                          (["--model-dir", tmp_path / "nope", "--out", tmp_path / "o"], "--model-dir")):
        rc = realdemo.main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert_one_line_error(rc, err, names=message)
    assert snapshot(tmp_path) == before


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    pytest.importorskip("transformers")
    from clitools import tiny_opt

    return Path(tiny_opt(tmp_path_factory.mktemp("opt") / "tiny"))


@pytest.fixture
def no_calibration(monkeypatch):
    """Fail the test if a command reaches the model load (all checks must come before it)."""
    import refsim.rptq.calibrate as cal

    monkeypatch.setattr(cal, "load_opt", lambda *a, **k: pytest.fail("the model was loaded before the checks"))


def test_calibrate_checks_arguments_before_calibrating(tiny_model, tmp_path, capsys, no_calibration):
    bad_npy = tmp_path / "garbage.npy"
    bad_npy.write_bytes(b"this is not numpy")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    np.save(tmp_path / "floats.npy", np.ones((2, 16)))
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 16), np.int64))
    np.save(tmp_path / "big.npy", np.full((2, 16), 999, np.int64))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cases = [
        (["--plot-layer", "5"], "--plot-layer=5 is not allowed; allowed: 0..1"),
        (["--plot-layer", "-1"], "--plot-layer"),
        (["--calib", bad_npy], "--calib"),
        (["--calib", latin], "--calib"),
        (["--calib", tmp_path / "floats.npy"], "--calib"),
        (["--calib", tmp_path / "cube.npy"], "--calib"),
        (["--calib", tmp_path / "big.npy"], "--calib token ids must lie in 0..63"),
        (["--calib", tmp_path / "obj.npy"], "--calib"),
        (["--calib", tmp_path], "--calib"),
        (["--calib", tmp_path / "missing.npy"], "--calib"),
        (["--clusters", "33"], "--clusters=33"),
        (["--seqlen", "65"], "--seqlen=65 exceeds"),
        (["--report-seqs", "20"], "--report-seqs=20"),
    ]
    for args, message in cases:
        rc, _, err = cli(capsys, "calibrate", tiny_model, "--out", tmp_path / "o", "--quiet", "--seqlen", "16",
                         *args)
        assert_one_line_error(rc, err, names=message)
    assert not (tmp_path / "o").exists()


def test_truncated_checkpoint_is_one_line(tiny_model, tmp_path, capsys, no_calibration):
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(tiny_model, cut)
    st = cut / "model.safetensors"
    data = st.read_bytes()
    for size in (len(data) // 2, 100, 4):
        st.write_bytes(data[:size])
        rc, _, err = cli(capsys, "calibrate", cut, "--out", tmp_path / "o", "--quiet")
        assert_one_line_error(rc, err, names="model.safetensors")
        assert len(err.strip().splitlines()) == 1
    st.write_bytes(data)
    (cut / "config.json").write_text("{not json")
    rc, _, err = cli(capsys, "calibrate", cut, "--out", tmp_path / "o", "--quiet")
    assert_one_line_error(rc, err, names="MODEL_DIR")


def test_calibrate_output_follows_the_umask_and_is_replaced_only_as_asked(tiny_model, tmp_path, capsys):
    out = tmp_path / "q"
    args = ["calibrate", tiny_model, "--out", out, "--quiet", "--seqlen", "8", "--nsamples", "2", "--clusters", "2",
            "--head-clusters", "1"]
    old = os.umask(0o027)
    try:
        assert cli(capsys, *args)[0] == 0
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == 0o750
    assert {(p.stat().st_mode & 0o777) for p in out.iterdir()} == {0o640}
    rc, _, err = cli(capsys, *args)
    assert_one_line_error(rc, err, names="--overwrite")
    (out / "mine.txt").write_text("a file of mine\n")  # now it is no longer only refsim's
    rc, _, err = cli(capsys, *args, "--overwrite")
    assert_one_line_error(rc, err, names="not an output this command wrote")
    assert (out / "mine.txt").exists() and sorted(os.listdir(tmp_path)) == ["q"]


def test_save_quantized_replaces_only_its_own_output(tmp_path):
    pytest.importorskip("safetensors")
    from refsim.rptq.model_io import save_quantized

    class Block:  # what save_quantized reads of a QuantizedOPTBlock
        arrays = {"ln1.weight": np.ones(4, np.float32)}
        meta = {"hidden": 4}

    out = save_quantized(tmp_path / "q", [Block()])
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_quantized(out, [Block()])
    assert save_quantized(out, [Block()], info={"run": 2}, overwrite=True) == out
    assert json.loads((tmp_path / "q" / "quant_config.json").read_text())["run"] == 2
    assert sorted(os.listdir(tmp_path)) == ["q"]


# ----------------------------------------------------------------------------- sizes, umask, temporaries

def test_huge_shape_refused_up_front_naming_the_flag(tmp_path, capsys):
    t0 = time.perf_counter()
    rc, _, err = cli(capsys, "golden", "gemm_w4a4", "--shape", "100000,100000,100000", "--out", tmp_path / "g")
    assert_one_line_error(rc, err, names="--shape 100000,100000,100000")
    assert "memory" in err and not (tmp_path / "g").exists() and os.listdir(tmp_path) == []
    assert time.perf_counter() - t0 < 120  # small trial builds, never the bundle itself


def test_bundle_size_estimate_is_exact_for_products_of_dimensions():
    from golden.bundle import _sizes, build_stages, estimate_bundle
    from golden.presets import PRESETS

    for name, shape in (("gemm_w4a4", (9, 200, 3)), ("sdr_a16_g16", (5, 96)), ("requant", (33, 7))):
        est = estimate_bundle(PRESETS[name], shape=shape)
        assert est == _sizes(build_stages(PRESETS[name], shape=shape)[0])
        bound = estimate_bundle(PRESETS[name], shape=shape, bound_only=True)
        assert bound[0] >= est[0] and bound[1] >= est[1]


def test_bundle_size_estimate_is_exact_where_a_dimension_enters_squared():
    """The OPT block's T x T scores and hidden x hidden weights: a multilinear fit under-counted them
    (35x at T = 1024); the per-dimension degree makes the interpolation exact and the bound a bound."""
    from golden.bundle import _sizes, build_stages, estimate_bundle
    from golden.presets import PRESETS

    p = PRESETS["opt_block_w4a4"]
    assert p.size_degree == (2, 2, 1)
    for shape in ((40, 48, 80), (128, 32, 64)):
        est = estimate_bundle(p, shape=shape)
        assert est == _sizes(build_stages(p, shape=shape)[0])
        bound = estimate_bundle(p, shape=shape, bound_only=True)
        assert bound[0] >= est[0] and bound[1] >= est[1]


def test_outputs_follow_the_umask(tmp_path, capsys):
    old = os.umask(0o027)
    try:
        assert cli(capsys, "golden", "requant", "--out", tmp_path / "b")[0] == 0
        assert cli(capsys, "demo", *SMALL_DEMO, "--out", tmp_path / "d")[0] == 0
    finally:
        os.umask(old)
    for d in (tmp_path / "b", tmp_path / "d"):
        assert (d.stat().st_mode & 0o777) == 0o750
        assert {(p.stat().st_mode & 0o777) for p in d.iterdir()} == {0o640}


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_killed_runs_temporary_is_removed_by_the_next_run(tmp_path, capsys):
    stale = tmp_path / f".b{cliutil.TMP_TAG}{_dead_pid()}-abcdef"
    stale.mkdir()
    cliutil.write_marker(stale, "golden-bundle", state="incomplete", pid=_dead_pid())
    (stale / "x.npy").write_bytes(b"half")
    not_ours = tmp_path / f".b{cliutil.TMP_TAG}user"
    not_ours.mkdir()
    assert cli(capsys, "golden", "--out", tmp_path / "b")[0] == 0
    assert not stale.exists() and not_ours.exists()


def _popen_golden(tmp_path, shape):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("REFSIM_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "refsim_app", "golden", "gemm_w4a4", "--shape", shape, "--out",
                             str(tmp_path / "big")], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_writing(proc):
    """Block until the bundle reports writing its first stage (it is then inside the staged directory)."""
    for line in proc.stderr:
        if "[1/" in line:
            return line
    pytest.fail("no progress line from a bundle over 16 MiB")


def test_ctrl_c_exits_130_and_leaves_nothing(tmp_path):
    # The writing phase lasts about 0.2 s after its first progress line; on a busy machine the bundle can be
    # written completely before this process gets to signal it (exit 0, "wrote"): that try did not test
    # Ctrl-C at all, so it is repeated in a fresh directory, and every try that was interrupted is checked.
    for attempt in range(5):
        where = tmp_path / f"try{attempt}"
        where.mkdir()
        proc = _popen_golden(where, "700,700,700")
        _wait_for_writing(proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        if not (proc.returncode == 0 and "wrote" in err):
            break
        shutil.rmtree(where)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert os.listdir(where) == []


def test_kill_leaves_only_a_temporary_that_the_next_run_removes(tmp_path, capsys):
    proc = _popen_golden(tmp_path, "700,700,700")
    _wait_for_writing(proc)
    proc.kill()
    proc.communicate(timeout=60)
    left = os.listdir(tmp_path)
    assert all(name.startswith(f".big{cliutil.TMP_TAG}") for name in left), left
    assert cli(capsys, "golden", "requant", "--out", tmp_path / "big")[0] == 0
    assert os.listdir(tmp_path) == ["big"]


@pytest.mark.parametrize("argv", [["golden", "--list"], ["spec", "--list"], ["--help"], ["golden", "--help"]])
def test_closed_pipe_is_quiet(argv):
    """``refsim ... | head``: the reader is gone before refsim writes; no BrokenPipeError traceback."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, "-m", "refsim_app", *argv], stdout=w, stderr=subprocess.PIPE, text=True,
                           env=env, timeout=120)
    finally:
        os.close(w)
    assert "Traceback" not in p.stderr and "Exception ignored" not in p.stderr, p.stderr
    assert p.returncode in (0, 141), p.stderr


# ----------------------------------------------------------------------------- verify, compare, demo errors

def _edit_manifest(bundle, edit):
    m = json.loads((bundle / "manifest.json").read_text())
    edit(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("edit, what", [
    (lambda m: m["shape"].update(M=4096), "shape"),
    (lambda m: m["shape"].update(K=m["shape"]["N"]), "shape"),
    (lambda m: m["stages"][0].update(word_bits=m["stages"][0]["word_bits"] + 1), "shape"),
    (lambda m: m["stages"][0].update(layout="sign_magnitude"), "shape"),
    (lambda m: m["generator"].update(seed=m["generator"]["seed"] + 1), "seed"),
])
def test_verify_checks_the_top_level_fields(tmp_path, capsys, edit, what):
    b = golden.write_bundle(None, tmp_path / "b")
    _edit_manifest(b, edit)
    rc, out, _ = cli(capsys, "verify", b, "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["ok"] is False
    assert any(c["stage"] == "manifest" and c["what"] == what and not c["ok"] for c in doc["checks"]), doc


@pytest.mark.parametrize("edit", [
    lambda m: m.update(config={}),
    lambda m: m["config"].update(extra_knob=1),
    lambda m: m.update(specs={}),
    lambda m: m["specs"].pop(next(iter(m["specs"]))),
])
def test_verify_reports_an_edited_config_or_spec_set_as_a_failed_check(tmp_path, capsys, edit):
    b = golden.write_bundle(None, tmp_path / "b")
    _edit_manifest(b, edit)
    rc, out, err = cli(capsys, "verify", b, "--json")
    assert rc == 1 and "internal error" not in err and "Traceback" not in err
    doc = json.loads(out)
    assert doc["ok"] is False
    assert any(not c["ok"] and ("config" in c["detail"] or "specs" in c["detail"]) for c in doc["checks"]), doc


def test_verify_and_compare_json(tmp_path, capsys):
    b = golden.write_bundle(None, tmp_path / "b")
    rc, out, _ = cli(capsys, "verify", b, "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["ok"] and doc["passed"] == doc["total"] == len(doc["checks"])
    rc, out, _ = cli(capsys, "compare", b, "--stage", "isum", "--dut", b / "isum.hex", "--json")
    assert rc == 0 and json.loads(out)["mismatches"] == 0
    y = np.load(b / "isum.npy")
    y.reshape(-1)[3] += 4
    np.save(tmp_path / "dut.npy", y)
    rc, out, _ = cli(capsys, "compare", b, "--stage", "isum", "--dut", tmp_path / "dut.npy", "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["mismatches"] == 1 and doc["first"][0]["index"] == 3
    assert doc["first"][0]["xor"] == doc["first"][0]["expected"] ^ doc["first"][0]["received"]


@pytest.mark.parametrize("args, flag", [
    (["--tokens", "0"], "--tokens"), (["--tokens", "-1"], "--tokens"), (["--seed", "-1"], "--seed"),
    (["--hidden", "0"], "--hidden"), (["--hidden", "2"], "--hidden"), (["--clusters", "0"], "--clusters"),
    (["--hidden", "8", "--clusters", "9"], "--clusters"), (["--tokens", "x"], "--tokens"),
    (["--tokens", "100000000", "--hidden", "100000"], "--tokens/--hidden"),
])
def test_demo_arguments(tmp_path, capsys, args, flag):
    rc, _, err = cli(capsys, "demo", "--out", tmp_path / "d", *args)
    assert_one_line_error(rc, err, names=flag)
    if flag == "--hidden":  # it used to blame --clusters
        assert not [ln for ln in err.splitlines() if "error:" in ln and "--clusters" in ln]
    assert os.listdir(tmp_path) == []


def test_spec_prints_every_preset_as_json(capsys):
    import refsim
    from golden.presets import PRESETS

    rc, out, _ = cli(capsys, "spec", "--list")
    names = json.loads(out)
    assert rc == 0 and names == {"numerics": list(refsim.PRESETS), "golden": list(PRESETS)}
    for name in names["numerics"]:
        rc, out, _ = cli(capsys, "spec", name)
        assert rc == 0 and refsim.NumericsSpec.from_dict(json.loads(out)) == refsim.PRESETS[name]
    for name in names["golden"]:
        rc, out, _ = cli(capsys, "spec", name)
        doc = json.loads(out)
        assert rc == 0 and doc["specs"] == {r: s.to_dict() for r, s in PRESETS[name].specs.items()}
    rc, _, err = cli(capsys, "spec", "nosuch")
    assert_one_line_error(rc, err, names="PRESET 'nosuch'")
    assert "rptq" in err and "gemm_w4a4" in err


def test_python_dash_m_refsim_and_every_help():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "refsim_app", "--help"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 0 and "spec" in p.stdout and "calibrate" in p.stdout


@pytest.mark.parametrize("command", ["demo", "golden", "verify", "compare", "calibrate", "spec"])
def test_every_option_has_help(command):
    from refsim_app.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    missing = [a.option_strings or a.dest for a in sub._actions if not a.help]
    assert not missing, f"{command}: options without --help text: {missing}"
