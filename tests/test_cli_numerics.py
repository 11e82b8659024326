"""``--preset NAME`` / ``--spec FILE.json`` on the application's numerics commands (refsim_cli.numerics).

For each command: the option reaches the numerics (the printed or written result changes where the
command applies that field), the spec used is recorded where the command writes or prints a record,
and a bad value is one error line with exit status 2, before any work.
"""

import argparse
import json

import pytest
from clitools import assert_one_line_error, cli

import refsim
from refsim_cli import UsageError
from refsim_cli.numerics import add_spec_arguments, check_applied, read_spec_file, spec_from_args, spec_source


def write_spec(path, spec=None, **doc):
    d = (spec.to_dict() if spec is not None else {}) | doc
    path.write_text(json.dumps(d))
    return path


def parse(*argv, default="rptq"):
    p = argparse.ArgumentParser()
    add_spec_arguments(p, default=default)
    return p.parse_args(list(argv))


def one_line(rc, err, names):
    assert rc == 2, err
    assert_one_line_error(rc, err, names=names)
    assert len(err.strip().splitlines()) == 1, err


# --- the helper ----------------------------------------------------------------------------------

def test_the_helper_resolves_preset_file_and_default(tmp_path):
    assert spec_from_args(parse()) is refsim.preset("rptq")
    assert spec_from_args(parse(default="qrazor")) is refsim.preset("qrazor")
    assert spec_from_args(parse("--preset", "tflite")) is refsim.preset("tflite")
    custom = refsim.preset("onnx").replace(rounding="floor", acc_bits=40)
    f = write_spec(tmp_path / "s.json", custom)
    assert spec_from_args(parse("--spec", str(f))) == custom
    assert spec_source(parse("--spec", str(f))) == f"file {f}"
    assert spec_source(parse("--preset", "torch")) == "preset torch" and spec_source(parse()) == "preset rptq"


@pytest.mark.parametrize("make, names", [
    (lambda t: ["--preset", "nosuch"], "allowed: onnx, torch"),
    (lambda t: ["--preset", "onnx", "--spec", str(t / "x.json")], "not both"),
    (lambda t: ["--spec", str(t / "missing.json")], "cannot read it"),
    (lambda t: ["--spec", str(write_spec(t / "p.json", rounding="floor"))], "is missing fields ['scale_op'"),
    (lambda t: ["--spec", str(write_spec(t / "u.json", refsim.preset("onnx"), colour="red"))],
     "unknown fields ['colour']"),
    (lambda t: ["--spec", str(write_spec(t / "v.json", refsim.preset("onnx"), rounding="sideways"))],
     "rounding='sideways' is not allowed"),
])
def test_the_helper_refuses_in_one_line_naming_the_file_and_fields(tmp_path, make, names):
    argv = make(tmp_path)
    with pytest.raises(UsageError) as exc:
        spec_from_args(parse(*argv))
    msg = str(exc.value)
    assert names in msg and "\n" not in msg
    if "--spec" in argv and "--preset" not in argv:
        assert argv[-1] in msg  # the file is named


def test_a_file_that_is_not_a_json_object(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match=r"bad.json: not JSON \(.* line 1 column 2\)"):
        read_spec_file(tmp_path / "bad.json")
    with pytest.raises(UsageError, match="list.json: expected a JSON object"):
        read_spec_file(tmp_path / "list.json")


def test_check_applied_refuses_only_the_fields_not_applied():
    q = refsim.preset("qrazor")
    assert check_applied(q.replace(sdr_rounding="ties_even"), command="c", base="qrazor",
                         applied=("sdr_rounding",)).sdr_rounding.value == "ties_even"
    with pytest.raises(UsageError, match=r"changes narrow=False, acc_overflow='wrap' \(allowed: the qrazor preset's "
                                         r"narrow=True, acc_overflow='raise'\)"):
        check_applied(refsim.preset("onnx"), command="c", base="qrazor", applied=("sdr_rounding",))


# --- refsim spec -----------------------------------------------------------------------------------

def test_spec_prints_the_resolved_spec(capsys, tmp_path):
    rc, out, _ = cli(capsys, "spec", "--preset", "tflite")
    assert rc == 0 and json.loads(out) == refsim.preset("tflite").to_dict()
    custom = refsim.preset("rptq").replace(rounding="odd")
    rc, out, _ = cli(capsys, "spec", "--spec", write_spec(tmp_path / "s.json", custom))
    assert rc == 0 and refsim.NumericsSpec.from_dict(json.loads(out)) == custom


@pytest.mark.parametrize("argv, names", [
    (["--preset", "nosuch"], "--preset nosuch"),
    (["rptq", "--preset", "rptq"], "PRESET and --preset/--spec"),
    (["--list", "--preset", "rptq"], "--list and --preset/--spec"),
])
def test_spec_bad_options(capsys, argv, names):
    rc, out, err = cli(capsys, "spec", *argv)
    one_line(rc, err, names)
    assert out == ""


def test_spec_partial_file(capsys, tmp_path):
    f = write_spec(tmp_path / "partial.json", rounding="floor", acc_bits=16)
    rc, out, err = cli(capsys, "spec", "--spec", f)
    one_line(rc, err, str(f))
    assert "missing fields" in err and "'scale_op'" in err and "'rounding'" not in err


# --- refsim demo -----------------------------------------------------------------------------------

DEMO = ["demo", "--tokens", "32", "--hidden", "16", "--clusters", "2"]


def _sqnr_lines(out):
    return [ln for ln in out.splitlines() if "SQNR" in ln]


def test_demo_takes_its_numerics_from_the_spec_and_records_it(capsys, tmp_path):
    rc, base, _ = cli(capsys, *DEMO, "--out", tmp_path / "a")
    assert rc == 0 and "activations preset rptq" in base
    # gptq's unsigned range [0, 15] under RPTQ's signed zero points: other codes, other SQNR
    rc, unsigned, _ = cli(capsys, *DEMO, "--out", tmp_path / "b", "--preset", "gptq")
    assert rc == 0 and "activations preset gptq" in unsigned
    assert _sqnr_lines(unsigned)[0] != _sqnr_lines(base)[0]
    # rounding floor from a file: the activation SQNR changes again
    f = write_spec(tmp_path / "floor.json", refsim.preset("rptq").replace(rounding="floor"))
    rc, floor, _ = cli(capsys, *DEMO, "--out", tmp_path / "c", "--spec", f)
    assert rc == 0 and _sqnr_lines(floor)[0] != _sqnr_lines(base)[0]
    notes = json.loads((tmp_path / "c" / "manifest.json").read_text())["notes"]
    rec = [n for n in notes if n.startswith("refsim demo's printed figures: activation spec (file ")]
    assert len(rec) == 1 and json.loads(rec[0].split(") ", 1)[1]) == refsim.preset("rptq").replace(
        rounding="floor").to_dict()


def test_demo_accumulator_comes_from_the_spec(capsys, tmp_path):
    # a 4-bit saturating accumulator cannot hold these sums: the output changes
    f = write_spec(tmp_path / "acc.json", refsim.preset("rptq").replace(acc_bits=4, acc_overflow="saturate"))
    rc, base, _ = cli(capsys, *DEMO, "--out", tmp_path / "a")
    rc2, small, _ = cli(capsys, *DEMO, "--out", tmp_path / "b", "--spec", f)
    assert rc == rc2 == 0
    out_line = [ln for ln in base.splitlines() if "output SQNR" in ln]
    assert out_line and out_line != [ln for ln in small.splitlines() if "output SQNR" in ln]


@pytest.mark.parametrize("argv, names", [
    (["--preset", "nosuch"], "allowed: onnx, torch"),
    (["--preset", "tflite"], "requant='double_rounding'"),
])
def test_demo_bad_spec_is_one_line_and_writes_nothing(capsys, tmp_path, argv, names):
    rc, out, err = cli(capsys, *DEMO, "--out", tmp_path / "d", *argv)
    one_line(rc, err, names)
    assert not (tmp_path / "d").exists() and out == ""


def test_demo_partial_spec_file(capsys, tmp_path):
    f = write_spec(tmp_path / "partial.json", rounding="floor")
    rc, _, err = cli(capsys, *DEMO, "--out", tmp_path / "d", "--spec", f)
    one_line(rc, err, str(f))
    assert "missing fields" in err and not (tmp_path / "d").exists()


# --- refsim sdr ------------------------------------------------------------------------------------

ACC = ["sdr", "accbits", "--k", "4096", "--json"]
MEASURE = ACC + ["--measure", "--m", "8", "--n", "8"]


def test_sdr_accbits_takes_acc_bits_and_sdr_rounding_from_the_spec(capsys, tmp_path):
    rc, out, _ = cli(capsys, *ACC)
    base = json.loads(out)
    assert rc == 0 and base["acc_bits"] == 32 and base["spec"] == refsim.preset("qrazor").to_dict()
    rc, out, _ = cli(capsys, *ACC, "--spec", write_spec(tmp_path / "a.json", refsim.preset("qrazor").replace(
        acc_bits=40)))
    wide = json.loads(out)
    assert rc == 0 and wide["acc_bits"] == 40 and wide["enough"] and not base["enough"]
    assert wide["spec_source"].startswith("file ")
    # --acc-bits edits the spec's width and the record says so
    rc, out, _ = cli(capsys, *ACC, "--acc-bits", "40")
    assert rc == 0 and json.loads(out)["spec"]["acc_bits"] == 40
    # the SDR rounding reaches the razoring of the measured data
    rc, out, _ = cli(capsys, *MEASURE)
    half_up = json.loads(out)["measured"]
    te = write_spec(tmp_path / "te.json", refsim.preset("qrazor").replace(sdr_rounding="ties_even"))
    rc2, out, _ = cli(capsys, *MEASURE, "--spec", te)
    ties_even = json.loads(out)["measured"]
    assert rc == rc2 == 0 and half_up != ties_even


@pytest.mark.parametrize("sub", [ACC, ["sdr", "sqnr", "--m", "4", "--k", "32", "--n", "4", "--groups", "16"]])
def test_sdr_refuses_what_it_does_not_apply(capsys, sub):
    rc, out, err = cli(capsys, *sub, "--preset", "onnx")
    one_line(rc, err, "narrow=False")
    rc, out, err = cli(capsys, *sub, "--preset", "nosuch")
    one_line(rc, err, "--preset nosuch")


def test_sdr_sqnr_records_the_spec(capsys):
    rc, out, _ = cli(capsys, "sdr", "sqnr", "--m", "4", "--k", "32", "--n", "4", "--groups", "16", "--configs",
                     "W4A4", "--json", "--preset", "qrazor")
    doc = json.loads(out)
    assert rc == 0 and doc["spec"] == refsim.preset("qrazor").to_dict() and doc["spec_source"] == "preset qrazor"


# --- refsim calibrate ------------------------------------------------------------------------------

def test_calibrate_refuses_a_spec_it_cannot_apply_before_any_work(capsys, tmp_path):
    # the check needs no model and no [hf] extra: it comes first
    rc, out, err = cli(capsys, "calibrate", tmp_path / "no-model", "--out", tmp_path / "o", "--preset", "tflite")
    one_line(rc, err, "requant='double_rounding'")
    f = write_spec(tmp_path / "partial.json", rounding="floor")
    rc, out, err = cli(capsys, "calibrate", tmp_path / "no-model", "--out", tmp_path / "o", "--spec", f)
    one_line(rc, err, str(f))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["partial.json"]


def test_calibrate_records_the_spec(capsys, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from clitools import tiny_opt

    model = tiny_opt(tmp_path / "m", layers=1)
    f = write_spec(tmp_path / "rptq.json", refsim.preset("rptq"))
    rc, _, err = cli(capsys, "calibrate", model, "--clusters", "2", "--head-clusters", "1", "--nsamples", "2",
                     "--seqlen", "8", "--out", tmp_path / "o", "--quiet", "--spec", f)
    assert rc == 0, err
    for name in ("quant_config.json", "report.json"):
        numerics = json.loads((tmp_path / "o" / name).read_text())["numerics"]
        assert numerics["activations"] == refsim.preset("rptq").to_dict()
        assert numerics["activations_source"] == f"file {f}" and numerics["weights"] == refsim.preset(
            "gptq").to_dict()
    # another spec is applied to the run's own configuration (and only to it): onnx computes the parameters
    # in float32 where rptq rounds them to float16, so the CLI row's SQNR moves, the published W4A4 row's not
    rc, _, err = cli(capsys, "calibrate", model, "--clusters", "2", "--head-clusters", "1", "--nsamples", "2",
                     "--seqlen", "8", "--out", tmp_path / "o2", "--quiet", "--preset", "onnx")
    assert rc == 0, err
    a, b = (json.loads((tmp_path / d / "report.json").read_text())["layers"][0] for d in ("o", "o2"))
    assert a["stages"]["CLI"] != b["stages"]["CLI"]
    assert a["stages"]["W4A4"] == b["stages"]["W4A4"]
    assert json.loads((tmp_path / "o2" / "report.json").read_text())["numerics"]["activations"] == refsim.preset(
        "onnx").to_dict()


def test_sdr_sqnr_applies_the_spec(capsys, tmp_path):
    """`sdr sqnr` razors under the given spec: another SDR rounding moves the SQNR row."""
    args = ["sdr", "sqnr", "--m", "8", "--k", "64", "--n", "8", "--groups", "16", "--configs", "W4A4", "--json"]
    rc, out, _ = cli(capsys, *args)
    base = json.loads(out)
    te = write_spec(tmp_path / "te.json", refsim.preset("qrazor").replace(sdr_rounding="ties_even"))
    rc2, out, _ = cli(capsys, *args, "--spec", te)
    other = json.loads(out)
    assert rc == rc2 == 0 and other["spec"]["sdr_rounding"] == "ties_even"
    assert base["rows"] != other["rows"]
