"""Fuzz ``refsim cost`` and ``refsim sdr`` with what users type wrong (issue 10).

hypothesis draws a subcommand, one flag and a bad value for it (wrong type, zero, negative, huge,
unknown name, a path that does not exist / is a file / is a directory / is a link / is read-only), on
top of otherwise valid arguments, and checks: a non-zero exit, an error that names the flag as typed,
no "Traceback", and no file created, changed or removed anywhere in the working directory. Runs in
process (refsim_app.cli.main); a few examples in the default suite, many more under ``slow``, and the
same through a real interpreter under ``slow``.
"""

import contextlib
import io
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refsim_app.cli import main

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0  # root writes into read-only directories

# ----------------------------------------------------------------------------- bad values

not_integers = st.sampled_from(["abc", "1.5", "", " ", "1e3", "0x10", "--", "∞", "nan", "12abc"])


def ints_outside(lo, hi):
    return st.one_of(st.integers(max_value=lo - 1), st.integers(min_value=hi + 1)).map(str)


def bad_int(lo, hi):
    return st.one_of(not_integers, ints_outside(lo, hi))


# path kinds are made inside the test's directory: (kind, relative path)
PATH_KINDS = ["missing", "file", "dir", "link", "readonly", "foreign_plot"]


def make_path(root, kind: str) -> str:
    if kind == "missing":
        return str(root / "no" / "such" / "thing.json")
    if kind == "file":
        p = root / "plain.json"  # a file whose contents are not what the flag wants
        p.write_text("hello, not JSON {")
        return str(p)
    if kind == "dir":
        d = root / "userdir"
        d.mkdir(exist_ok=True)
        (d / "notes.txt").write_text("mine")
        return str(d)
    if kind == "link":
        target = root / "target"
        target.mkdir(exist_ok=True)
        link = root / "link"
        if not link.exists():
            link.symlink_to(target)
        return str(link)
    if kind == "readonly":
        d = root / "ro"
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o555)
        return str(d / "out")
    if kind == "foreign_plot":
        d = root / "plots"
        d.mkdir(exist_ok=True)
        (d / "cost_pareto.png").write_bytes(b"my own figure")
        return str(d)
    raise AssertionError(kind)


# (flag, strategy of bad values or path kinds that are wrong for it, extra valid arguments)
COST_CASES = [
    ("MODEL", st.one_of(st.sampled_from(["gpt-5", "opt", "llama-9b", "OPT-66B-x", "-"]),
                        st.sampled_from(["missing", "file", "dir"]).map(lambda k: ("path", k))), []),
    ("--hw", st.one_of(st.sampled_from(["TPU", "h300", "", "A100 ", "x.json"]),
                       st.sampled_from(["missing", "file", "dir"]).map(lambda k: ("path", k))), []),
    ("--config", st.sampled_from(["W0A4", "W4A0", "W99A4", "W4A4KV0", "nosuch", "w=abc", "w=3:q=4", ",",
                                  "qrazor-W4A4-gx", "W-4A4", "w=0", "w=1e999"]), []),
    ("--batch", bad_int(1, 1 << 20), []),
    ("--seq", bad_int(1, 1 << 24), []),
    ("--workers", bad_int(1, 256), ["--sweep"]),
    ("--grid", st.sampled_from(["huge", "", "Default", "1"]), ["--sweep"]),
    ("--calib", st.sampled_from(["missing", "file", "dir", "link"]).map(lambda k: ("path", k)),
     ["--sweep", "--scheduler", "inline", "--grid", "small"]),
    ("--calib", st.just("x.npz"), []),  # given without the sweep that uses it
    ("--scheduler", st.sampled_from(["inline", "tcp://10.0.0.1:8786"]), []),  # without the sweep
    ("--scheduler", st.sampled_from(["", "  "]), ["--sweep"]),
    ("--plot", st.sampled_from(["file", "link", "foreign_plot"] + ([] if ROOT_USER else ["readonly"]))
     .map(lambda k: ("path", k)), ["--scheduler", "inline"]),
    ("--csv-dir", st.sampled_from(["file", "dir", "link"] + ([] if ROOT_USER else ["readonly"]))
     .map(lambda k: ("path", k)), []),
    ("--csv-dir", st.sampled_from(["dir"]).map(lambda k: ("path", k)), ["--force"]),
]

SDR_ACC = [
    ("--k", bad_int(1, 1 << 40), []),
    ("--abits", bad_int(2, 16), []),
    ("--wbits", bad_int(2, 16), []),
    ("--akeep", bad_int(1, 7), []),
    ("--akeep", st.integers(4, 7).map(str), ["--abits", "4"]),  # in 1..7 but beyond int4's 3 magnitude bits
    ("--wkeep", bad_int(1, 7), []),
    ("--wkeep", st.integers(2, 7).map(str), ["--wbits", "2"]),
    ("--group", st.one_of(bad_int(2, 1 << 16), st.sampled_from(["3", "6", "24", "100", "65535"])), []),
    ("--acc-bits", bad_int(2, 64), []),
    ("--m", bad_int(1, 1 << 24), ["--measure"]),
    ("--n", bad_int(1, 1 << 24), ["--measure"]),
    ("--seed", bad_int(0, 2**64 - 1), ["--measure"]),
    ("--m", st.integers(1, 64).map(str), []),  # a valid size, but without --measure
    ("--m", st.just(str(1 << 24)), ["--measure"]),  # in range, far beyond this machine's memory
]

SDR_SQNR = [
    ("--configs", st.sampled_from(["W4A2", "w4a4", "", "W8A8"]), []),
    ("--groups", st.one_of(bad_int(2, 1 << 16), st.sampled_from(["3", "12", "1000"])), []),
    ("--m", bad_int(1, 1 << 24), []),
    ("--k", bad_int(1, 1 << 24), []),
    ("--n", bad_int(1, 1 << 24), []),
    ("--seed", bad_int(0, 2**64 - 1), []),
    ("--k", st.just(str(1 << 24)), []),  # in range, far beyond this machine's memory
]

BASE = {"cost": ["cost", "opt-125m", "--config", "W4A4"], "accbits": ["sdr", "accbits", "--k", "4096"],
        "sqnr": ["sdr", "sqnr", "--groups", "16", "--configs", "W4A4"]}

cases = st.one_of(
    st.sampled_from(COST_CASES).flatmap(lambda c: st.tuples(st.just("cost"), st.just(c[0]), c[1], st.just(c[2]))),
    st.sampled_from(SDR_ACC).flatmap(lambda c: st.tuples(st.just("accbits"), st.just(c[0]), c[1], st.just(c[2]))),
    st.sampled_from(SDR_SQNR).flatmap(lambda c: st.tuples(st.just("sqnr"), st.just(c[0]), c[1], st.just(c[2]))),
)


def argv_for(root, command, flag, value, extra):
    if isinstance(value, tuple):
        value = make_path(root, value[1])
    argv = list(BASE[command])
    if flag == "MODEL":
        argv[1] = value
    elif command == "cost" and flag == "--config":
        argv[argv.index("--config") + 1] = value
    elif flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        # "-3" must be attached (--k=-3) or argparse reads it as a flag; "--k=--" is left out: argparse
        # itself turns it into an empty list (a quirk of argparse, not of refsim; reported)
        argv += [f"{flag}={value}"] if value.startswith("-") and value != "--" else [flag, value]
    return argv + extra


def snapshot(root) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st_ = os.lstat(p)
            content = None
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    content = f.read()
            out[os.path.relpath(p, root)] = (st_.st_mode, content)
    return out


def run_in_process(argv) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse's own errors
            rc = exc.code
    return rc, out.getvalue() + err.getvalue()


def check_case(root, command, flag, value, extra):
    argv = argv_for(root, command, flag, value, extra)
    before = snapshot(root)
    rc, text = run_in_process(argv)
    assert rc not in (0, None), (argv, text)
    assert "Traceback" not in text, (argv, text)
    assert flag in text, (argv, text)  # the error names the flag as the user typed it
    assert snapshot(root) == before, argv  # nothing created, changed or removed


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for dirpath, dirnames, _ in os.walk(tmp_path):  # let pytest clean up read-only directories
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)


FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow])


@settings(FUZZ, max_examples=80)
@given(case=cases)
def test_bad_arguments_fail_cleanly_naming_the_flag(workdir, case):
    check_case(workdir, *case)


@pytest.mark.slow
@settings(FUZZ, max_examples=1500)
@given(case=cases)
def test_bad_arguments_fail_cleanly_naming_the_flag_many(workdir, case):
    check_case(workdir, *case)


@pytest.mark.slow
@pytest.mark.parametrize("argv, flag", [
    (["cost", "opt-125m", "--batch", "-3"], "--batch"),
    (["cost", "opt-125m", "--hw", "nosuch.json"], "--hw"),
    (["sdr", "accbits", "--k", "100", "--wbits", "64"], "--wbits"),
    (["sdr", "sqnr", "--m", "0"], "--m"),
])
def test_bad_arguments_through_a_real_interpreter(tmp_path, argv, flag):
    r = subprocess.run([sys.executable, "-m", "refsim_app", *argv], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode == 2 and flag in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- the reproductions of issue 10

@pytest.mark.parametrize("argv, message", [
    (["sdr", "accbits", "--k", "100", "--wbits", "64"], "argument --wbits: allowed: an integer in 2..16; got 64"),
    (["sdr", "accbits", "--k", "100", "--abits", "0"], "argument --abits: allowed: an integer in 2..16; got 0"),
    (["sdr", "accbits", "--k", "100", "--abits", "4", "--akeep", "4"], "--akeep 4: allowed: an integer in 1..3 "
                                                                       "for --abits 4"),
    (["sdr", "accbits", "--k", "100", "--measure", "--m", "0"], "argument --m: allowed: an integer in 1.."),
    (["sdr", "accbits", "--k", "100", "--m", "8"], "--m: used only with --measure"),
    (["sdr", "accbits", "--k", str(1 << 30), "--measure", "--m", "4096", "--n", "4096"], "of memory"),
    (["sdr", "sqnr", "--m", "0"], "argument --m: allowed: an integer in 1.."),
    (["sdr", "sqnr", "--m", str(1 << 22), "--k", str(1 << 22)], "--m 4194304 --k 4194304"),
    (["sdr", "sqnr", "--groups", "12"], "argument --groups: allowed: a power of two in 2..65536; got 12"),
])
def test_sdr_reproductions_are_one_line_errors(argv, message):
    rc, text = run_in_process(argv)
    assert rc == 2 and message in text and "Traceback" not in text, text


def _strict(text):
    def refuse(name):
        raise AssertionError(f"non-standard JSON token {name}")

    import json

    return json.loads(text, parse_constant=refuse)


def test_sdr_json_outputs():
    rc, text = run_in_process(["sdr", "accbits", "--k", "14336", "--json"])
    doc = _strict(text)
    assert rc == 0 and doc["worst_case_bits"] == 37 and doc["max_k"] == 668 and doc["enough"] is False
    assert doc["measured"] is None
    rc, text = run_in_process(["sdr", "sqnr", "--configs", "W4A4", "--groups", "16", "--m", "8", "--k", "64",
                               "--n", "8", "--json"])
    doc = _strict(text)
    assert rc == 0 and [r["group_size"] for r in doc["rows"]] == [16] and doc["rows"][0]["a_effective_bits"] == 4.25
    assert "null" in doc["null"]


def test_every_sdr_and_cost_option_has_help_text():
    import argparse

    from refsim_app.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sdr = next(a for a in sub.choices["sdr"]._actions if isinstance(a, argparse._SubParsersAction))
    for p in (sub.choices["cost"], sdr.choices["accbits"], sdr.choices["sqnr"]):
        for action in p._actions:
            assert action.help, (p.prog, action.dest)
