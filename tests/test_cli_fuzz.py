"""Hypothesis fuzzes the command line as users get it wrong: wrong types, zero, negative, huge,
unknown names, paths that do not exist, are files, are unwritable or are the input.

Every drawn argument vector holds at least one bad argument (plus, possibly, good ones), so every
run must end with a non-zero status, an error line naming the flag as typed, no traceback, and no
file changed anywhere in the test's directory tree (no vector is valid, so none may write). The
default suite runs a bounded number of examples in-process; ``slow`` runs many more.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
from clitools import assert_one_line_error, cli, snapshot
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import golden
from golden.presets import PRESETS

FEW = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MANY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ----------------------------------------------------------------------------- the world the vectors point at

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    w = {"root": root}
    w["bundle"] = golden.write_bundle(None, root / "bundle")
    w["file"] = root / "plain.txt"
    w["file"].write_text("a user's file\n")
    w["foreign"] = root / "users"
    w["foreign"].mkdir()
    (w["foreign"] / "notes.txt").write_text("notes\n")
    w["broken"] = root / "broken-bundle"
    shutil.copytree(w["bundle"], w["broken"])
    (w["broken"] / "manifest.json").write_text("{ not json")
    w["garbage_hex"] = root / "garbage.hex"
    w["garbage_hex"].write_text("zz\nnot hex\n")
    w["garbage_npy"] = root / "garbage.npy"
    w["garbage_npy"].write_bytes(b"\x93NUMPY broken")
    w["empty_dir"] = root / "empty"
    w["empty_dir"].mkdir()
    w["missing"] = root / "does-not-exist"
    w["unwritable"] = Path("/proc/refsim-fuzz-out")
    return w


def bad_path_for_out(w):
    """An --out that must be refused: a user's directory, a plain file, the current directory,
    somewhere unwritable, a bundle's own file."""
    return st.sampled_from([w["foreign"], w["file"], Path("."), w["unwritable"], w["bundle"] / "x.npy",
                            w["foreign"] / "notes.txt" / "below-a-file"])


NOT_INTS = st.sampled_from(["abc", "1.5", "", "0x10", "1e3", "nan", "inf", "four", "3-", "--1", "1_0y", "+-2"])


def below(lo):
    return st.integers(max_value=lo - 1, min_value=lo - 10**20).map(str)


def above(hi):
    return st.integers(min_value=hi + 1, max_value=hi + 10**20).map(str)


def unknown_name(known):
    return st.text(alphabet=string.ascii_lowercase + string.digits + "_", min_size=1, max_size=12).filter(
        lambda s: s not in known)


def run_and_check(capsys, world, argv, name):
    before = snapshot(world["root"])
    rc, _, err = cli(capsys, *argv)
    assert_one_line_error(rc, err, names=name)
    assert snapshot(world["root"]) == before, argv


# Each command's bad cases, by kind: {kind: strategy of (argv, what the error line must name)}.
# The default suite draws a few examples of every kind (so each flag is tried every run); the
# slow test draws many from their union.

def demo_cases(w):
    out = ["--out", str(w["root"] / "demo-out")]
    small = ["--hidden", "8", "--clusters", "2"]

    def with_flag(flag, values, name=None, base=()):
        return st.tuples(values, st.booleans()).map(
            lambda t: (["demo", *out, *(small if t[1] else []), *base, flag, t[0]], name or flag))

    return {
        "--tokens": with_flag("--tokens", st.one_of(NOT_INTS, below(1))),
        "--hidden": with_flag("--hidden", st.one_of(NOT_INTS, below(4))),
        "--clusters": with_flag("--clusters", st.one_of(NOT_INTS, below(1))),
        "--clusters>--hidden": st.integers(4, 64).flatmap(lambda h: st.integers(h + 1, 10**6).map(
            lambda c: (["demo", *out, "--hidden", str(h), "--clusters", str(c)], "--clusters"))),
        "--seed": with_flag("--seed", st.one_of(NOT_INTS, below(0), above(2**63 - 1))),
        "huge": with_flag("--tokens", st.integers(10**12, 10**40).map(str), name="--tokens/--hidden"),
        "--out": st.tuples(bad_path_for_out(w), st.booleans()).map(
            lambda t: (["demo", *(small if t[1] else []), "--out", str(t[0])], "--out")),
    }


def golden_cases(w):
    out = ["--out", str(w["root"] / "golden-out")]
    preset = st.sampled_from(sorted(PRESETS))

    def pad(name, dims):
        return ",".join(map(str, dims + [1] * (len(PRESETS[name].shape_names) - len(dims))))

    return {
        "PRESET": unknown_name(PRESETS).map(lambda n: (["golden", n, *out], "PRESET")),
        "--level": st.one_of(NOT_INTS, below(0), above(2)).map(lambda v: (["golden", *out, "--level", v], "--level")),
        "--seed": st.one_of(NOT_INTS, below(0), above(2**63 - 1)).map(
            lambda v: (["golden", *out, "--seed", v], "--seed")),
        "--shape<=0": st.tuples(preset, st.lists(st.integers(-5, 0), min_size=1, max_size=3)).map(
            lambda t: (["golden", t[0], "--shape", pad(t[0], t[1]), *out], "--shape")),
        "--shape count": st.tuples(preset, st.integers(1, 5)).filter(
            lambda t: t[1] != len(PRESETS[t[0]].shape_names)).map(
            lambda t: (["golden", t[0], "--shape", ",".join(["2"] * t[1]), *out], "--shape")),
        "--shape limits": st.sampled_from([("gemm_w4a4", "4,2,4"), ("sdr_gemm_g16", "2,5,2"),
                                           ("quant_rptq_int4", "3,2"), ("opt_block_w4a4", "2,3,4"),
                                           ("gemm_w3a3", "2,1,2")]).map(
            lambda t: (["golden", t[0], "--shape", t[1], *out], "--shape")),
        "--shape text": st.tuples(preset, NOT_INTS.filter(bool)).map(
            lambda t: (["golden", t[0], "--shape", t[1] + ",2,2", *out], "--shape")),
        "--out": st.tuples(preset, bad_path_for_out(w)).map(
            lambda t: (["golden", t[0], "--out", str(t[1]), "--force"], "--out")),
        "--json": st.just((["golden", "--json", *out], "--json")),
    }


def verify_cases(w):
    paths = st.sampled_from([w["missing"], w["file"], w["foreign"], w["broken"], w["empty_dir"]])
    return {"DIR": st.tuples(paths, st.booleans()).map(
        lambda t: (["verify", str(t[0])] + (["--json"] if t[1] else []), str(t[0])))}


def compare_cases(w):
    b = str(w["bundle"])
    good = ["--stage", "isum", "--dut", str(w["bundle"] / "isum.hex")]
    names = {s["name"] for s in json.loads((w["bundle"] / "manifest.json").read_text())["stages"]}
    return {
        "--stage": unknown_name(names).map(lambda n: (["compare", b, "--stage", n, "--dut", good[3]], "--stage")),
        "--dut": st.sampled_from([w["missing"], w["empty_dir"], w["garbage_hex"], w["garbage_npy"]]).map(
            lambda p: (["compare", b, "--stage", "isum", "--dut", str(p)], "--dut")),
        "--max": st.one_of(NOT_INTS, below(1)).map(lambda v: (["compare", b, *good, "--max", v], "--max")),
        "DIR": st.sampled_from([w["missing"], w["foreign"], w["broken"], w["file"]]).map(
            lambda p: (["compare", str(p), *good], str(p))),
    }


@pytest.fixture(scope="module")
def model(world):
    pytest.importorskip("transformers")
    from clitools import tiny_opt

    return Path(tiny_opt(world["root"] / "tiny-opt"))


# (flag, lowest allowed, highest allowed) for the tiny model: 2 layers, hidden 32, 4 heads, ffn 64, 64 positions
CAL_INTS = [("--wbits", 2, 8), ("--nsamples", 1, 1 << 20), ("--seqlen", 1, 64), ("--clusters", 1, 32),
            ("--head-clusters", 1, 8), ("--report-seqs", 1, 16), ("--plot-layer", 0, 1), ("--seed", 0, 2**64 - 1)]


def calibrate_cases(w, m):
    out = ["--out", str(w["root"] / "cal-out"), "--seqlen", "8"]  # the default 128 is more than its 64 positions

    def cal(argv, name):
        return (["calibrate", *argv, "--quiet"], name)

    cases = {f: st.one_of(NOT_INTS, below(lo), above(hi)).map(lambda v, f=f: cal([str(m), *out, f, v], f))
             for f, lo, hi in CAL_INTS}
    for f in ("--abits", "--kvbits"):
        cases[f] = st.one_of(NOT_INTS, below(2), st.integers(9, 15).map(str), above(16)).map(
            lambda v, f=f: cal([str(m), *out, f, v], f))
    cases["MODEL_DIR"] = st.sampled_from([w["missing"], w["file"], w["empty_dir"]]).map(
        lambda p: cal([str(p), *out], "MODEL_DIR"))
    cases["--out"] = st.sampled_from([m, m / "inside", w["root"], w["foreign"], w["file"], w["unwritable"]]).map(
        lambda p: cal([str(m), "--out", str(p), "--overwrite"], "--out"))
    cases["--calib"] = st.sampled_from([w["missing"], w["empty_dir"], w["garbage_npy"], w["file"]]).map(
        lambda p: cal([str(m), *out, "--calib", str(p)], "--calib"))
    return cases


def spec_cases():
    import refsim

    known = set(refsim.PRESETS) | set(PRESETS)
    return {"PRESET": st.one_of(unknown_name(known).map(lambda n: (["spec", n], "PRESET")),
                                st.just((["spec"], "PRESET"))),
            "--list": st.sampled_from(sorted(known)).map(lambda n: (["spec", n, "--list"], "--list"))}


KINDS = {
    "demo": ["--tokens", "--hidden", "--clusters", "--clusters>--hidden", "--seed", "huge", "--out"],
    "golden": ["PRESET", "--level", "--seed", "--shape<=0", "--shape count", "--shape limits", "--shape text", "--out",
               "--json"],
    "verify": ["DIR"],
    "compare": ["--stage", "--dut", "--max", "DIR"],
    "calibrate": [f for f, *_ in CAL_INTS] + ["--abits", "--kvbits", "MODEL_DIR", "--out", "--calib"],
    "spec": ["PRESET", "--list"],
}


def cases_of(command, world, request):
    if command == "calibrate":
        return calibrate_cases(world, request.getfixturevalue("model"))
    return {"demo": demo_cases, "golden": golden_cases, "verify": verify_cases,
            "compare": compare_cases}[command](world) if command != "spec" else spec_cases()


def no_model_load(argv):
    import refsim.rptq.calibrate as cal

    mp = pytest.MonkeyPatch()  # a calibrate vector that got past every check would load the model
    mp.setattr(cal, "load_opt", lambda *a, **k: pytest.fail(f"{argv} passed every check"))
    return mp


@pytest.mark.parametrize("command, kind", [(c, k) for c, ks in KINDS.items() for k in ks],
                         ids=[f"{c} {k}" for c, ks in KINDS.items() for k in ks])
@FEW
@given(data=st.data())
def test_fuzz_command(world, capsys, request, command, kind, data):
    argv, name = data.draw(cases_of(command, world, request)[kind], label="argv")
    mp = no_model_load(argv)
    try:
        run_and_check(capsys, world, argv, name)
    finally:
        mp.undo()


def test_every_kind_has_a_strategy(world, request):
    for command, kinds in KINDS.items():
        assert set(cases_of(command, world, request)) == set(kinds), command


# ----------------------------------------------------------------------------- every subcommand's parser

def typed_options():
    """(command, flag, type, choices) of every option of every registered subcommand that converts its value."""
    from refsim_app.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = []
    for cmd, p in sub.choices.items():
        for a in p._actions:
            if a.option_strings and a.nargs in (None, 1) and (a.type not in (None, str, Path) or a.choices):
                out.append((cmd, a.option_strings[-1], a.type, tuple(a.choices) if a.choices else None))
    return out


PROBES = ("abc", "1.5", "", "nan", "-1", "0", "99999999999999999999", "x,y", "☃")


def _rejects(kind, choices, text) -> bool:
    if choices is not None:
        try:
            value = kind(text) if kind else text
        except (argparse.ArgumentTypeError, ValueError, TypeError):
            return True
        return value not in choices
    try:
        kind(text)
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return True
    return False


# options whose type refuses some value (an option that takes any text has nothing to refuse)
TYPED = [t for t in typed_options() if any(_rejects(t[2], t[3], p) for p in PROBES)]


def test_every_subcommand_has_typed_options():
    commands = {c for c, *_ in TYPED}
    assert {"demo", "golden", "compare", "calibrate"} <= commands, commands


@pytest.mark.parametrize("command, flag, kind, choices", TYPED, ids=[f"{c} {f}" for c, f, *_ in TYPED])
@FEW
@given(text=st.one_of(NOT_INTS, st.text(min_size=0, max_size=8), st.integers().map(str)))
def test_fuzz_every_typed_option(tmp_path_factory, capsys, command, flag, kind, choices, text):
    """A value the option's own type (or choices) refuses is refused by the command line, naming the flag,
    before the command runs."""
    assume(not text.startswith("-") and _rejects(kind, choices, text))  # else a value the option accepts
    cwd = tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())
    here = os.getcwd()
    os.chdir(cwd)
    try:
        rc, _, err = cli(capsys, command, f"{flag}={text}")
    finally:
        os.chdir(here)
    assert rc == 2 and "Traceback" not in err
    assert flag in err, err
    assert os.listdir(cwd) == []


# ----------------------------------------------------------------------------- many more, when asked

@pytest.mark.slow
@MANY
@given(data=st.data())
def test_fuzz_all_commands_long(world, capsys, request, data):
    argv, name = data.draw(st.one_of([s for c in KINDS for s in cases_of(c, world, request).values()]), label="argv")
    mp = no_model_load(argv)
    try:
        run_and_check(capsys, world, argv, name)
    finally:
        mp.undo()


@pytest.mark.slow
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dims=st.lists(st.integers(10**4, 10**6), min_size=3, max_size=3))
def test_fuzz_huge_golden_shapes_long(world, capsys, dims):
    run_and_check(capsys, world, ["golden", "gemm_w4a4", "--shape", ",".join(map(str, dims)), "--out",
                                  str(world["root"] / "huge")], "--shape")


def test_fuzz_world_is_what_the_cases_assume(world):
    """The fixtures the strategies point at are what they claim (so a vector is bad for the stated reason)."""
    assert golden.verify_bundle(world["bundle"]).ok
    assert not world["missing"].exists() and world["file"].is_file() and os.listdir(world["empty_dir"]) == []
    with pytest.raises(ValueError):
        np.load(world["garbage_npy"])
