"""The command line: help works and the demo runs end to end."""

import os
import subprocess
import sys

from refsim_app.cli import main


def test_help_lists_the_subcommands(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    assert "demo" in out


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "refsim_app.cli", "--help"], capture_output=True, text=True, check=True)
    assert "usage: refsim" in out.stdout


def test_demo_runs_and_reports(tmp_path, capsys):
    rc = main(["demo", "--tokens", "32", "--hidden", "64", "--clusters", "4", "--out", str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "per-cluster (4 clusters)" in out and "output SQNR" in out and "round trip exact" in out


def test_demo_rejects_bad_clusters(capsys):
    rc = main(["demo", "--hidden", "16", "--clusters", "17"])
    assert rc == 2
    assert "--clusters=17 is not allowed" in capsys.readouterr().err


def test_progress_lines_on_a_log_and_on_a_terminal():
    import io

    from refsim.progress import report_progress

    log = io.StringIO()
    for i in range(1, 101):
        report_progress("work", i, 100, unit="items", stream=log)
    lines = log.getvalue().splitlines()
    assert lines[0] == "work: 10/100 items" and lines[-1] == "work: 100/100 items" and len(lines) == 10

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    for i in range(1, 4):
        report_progress("work", i, 3, stream=tty)
    assert tty.getvalue() == "\rwork: 1/3\rwork: 2/3\rwork: 3/3\n"


def test_cliutil_outputs_and_sizes(tmp_path, monkeypatch):
    import argparse

    import pytest

    import refsim_cli as cliutil

    with pytest.raises(argparse.ArgumentTypeError, match=r"allowed: an integer in 2\.\.8; got 9"):
        cliutil.int_range(2, 8)("9")
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer >= 1, got 'x'"):
        cliutil.positive_int("x")
    with cliutil.staged_output(tmp_path / "o", kind="demo") as tmp:
        (tmp / "a.txt").write_text("a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b")
    assert cliutil.read_marker(tmp_path / "o")["files"] == ["a.txt", "sub/b.txt"]
    assert cliutil.is_own_output(tmp_path / "o", ("demo",)) and not cliutil.is_own_output(tmp_path / "o", ("x",))
    (tmp_path / "o" / "sub" / "mine").mkdir()  # an empty directory of the user's counts too
    assert not cliutil.is_own_output(tmp_path / "o")
    with pytest.raises(cliutil.UsageError, match="is, is inside, or contains the input --in"):
        cliutil.check_output(tmp_path / "o" / "x", inputs={"--in": tmp_path / "o"})
    monkeypatch.chdir(tmp_path / "o" / "sub")
    with pytest.raises(cliutil.UsageError, match="current directory"):
        cliutil.check_output(tmp_path / "o")
    with pytest.raises(cliutil.UsageError, match="would be written but only"):
        cliutil.check_output(tmp_path / "new", estimate_bytes=1 << 62)
    with pytest.raises(cliutil.UsageError, match=r"--size 9: the test would need about .* choose a smaller --size"):
        cliutil.check_memory(1 << 62, flag="--size", value=9, what="the test")
    assert cliutil.format_size(512) == "512 B" and cliutil.format_size(3 << 20) == "3.0 MiB"
    assert (cliutil.available_memory() or 1) > 0
    assert "refsim" in cliutil.refsim_command()


def test_an_output_that_appears_during_the_run_is_left_untouched(tmp_path):
    import pytest

    import refsim_cli as cliutil

    out = tmp_path / "o"
    with pytest.raises(cliutil.UsageError, match="appeared during the run"):
        with cliutil.staged_output(out, kind="demo") as tmp:
            (tmp / "result.txt").write_text("computed")
            out.mkdir()  # something else creates the output while the command computes
            (out / "notes.txt").write_text("a user's file")
    assert sorted(os.listdir(tmp_path)) == ["o"] and os.listdir(out) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "a user's file"
    # an earlier output of the command itself is still replaced
    with cliutil.staged_output(tmp_path / "p", kind="demo") as tmp:
        (tmp / "v1").write_text("1")
    with cliutil.staged_output(tmp_path / "p", kind="demo") as tmp:
        (tmp / "v2").write_text("2")
    assert sorted(os.listdir(tmp_path / "p")) == [cliutil.MARKER, "v2"]
