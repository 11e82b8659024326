"""The spec-edit test (issue 11): a bundle's recorded specs are the ones verify applies.

For every preset, on a level-0 bundle at its default shape:
  (a) editing any recorded spec field (or the config) without re-sealing: verify refuses the seal;
  (b) re-sealed, for each field the preset declares used, some allowed alternative makes verify fail
      (a mismatch or a clear error); an inert
      field re-derives the same, and under its witness (e.g. acc_bits=8) some alternative changes a stage;
  (c) re-sealed, every allowed value of a field NOT declared used re-derives every stage identically.
(b) and (c) run the checks verify itself runs after the file checks (_check_top_level, _rederive) on the
edited manifest; the issue's own example goes through `refsim verify` on disk.
"""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest

import golden
import refsim
from golden import verify as gverify
from golden.bundle import MANIFEST, build_stages, seal
from golden.presets import PRESETS
from refsim.spec import _ENUM_FIELDS, NumericsSpec

FIELDS = [f for f in NumericsSpec.__dataclass_fields__]
FAST_ACC_BITS = (2, 8, 16, 31, 33, 64)


def field_values(name, acc_bits=FAST_ACC_BITS):
    if name in _ENUM_FIELDS:
        return [m.value for m in _ENUM_FIELDS[name]]
    if name in ("signed", "narrow"):
        return [False, True]
    return list(acc_bits)


def alternatives(spec_dict, name, acc_bits=FAST_ACC_BITS):
    """Every other value of field ``name`` that still makes a valid NumericsSpec with the rest."""
    out = []
    for v in field_values(name, acc_bits):
        if v == spec_dict[name]:
            continue
        try:
            NumericsSpec.from_dict({**spec_dict, name: v})
        except ValueError:
            continue  # not an allowed value beside the spec's other fields (e.g. narrow with wrap)
        out.append(v)
    return out


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec-edit")
    return {name: golden.write_bundle(name, root / name, progress=False) for name in PRESETS}


def _manifest(path):
    return json.loads((path / MANIFEST).read_text())


def _arrays(path, manifest):
    return {e["name"]: np.load(path / e["npy"]) for e in manifest["stages"]}


def rederive(manifest, arrays) -> gverify.VerifyReport:
    """What verify reports after its file checks, for an (edited) manifest and the stored arrays."""
    report = gverify.VerifyReport(path=None, preset=manifest["preset"])
    gverify._check_top_level(manifest, arrays, report)
    gverify._rederive(manifest, arrays, report)
    return report


def edited(manifest, role, name, value, *, reseal=True):
    m = copy.deepcopy(manifest)
    m["specs"][role]["spec"][name] = value
    if reseal:
        m["seal"] = seal(m)
    return m


@pytest.mark.parametrize("name", list(PRESETS))
def test_unsealed_edit_is_refused(bundles, tmp_path, name):
    src = bundles[name]
    m = _manifest(src)
    edits = [(role, f) for role in m["specs"] for f in FIELDS]
    for role, f in edits + [(None, "config")]:
        out = tmp_path / "b"
        shutil.copytree(src, out)
        mm = copy.deepcopy(m)
        if role is None:
            key = next(iter(mm["config"]))
            mm["config"][key] = "edited"
        else:
            spec = mm["specs"][role]["spec"]
            spec[f] = (not spec[f]) if isinstance(spec[f], bool) else (
                spec[f] + 1 if isinstance(spec[f], int) else field_values(f)[field_values(f)[0] == spec[f]])
        (out / MANIFEST).write_text(json.dumps(mm, indent=2))
        report = golden.verify_bundle(out)
        assert not report.ok, (role, f)
        assert [c.what for c in report.failures] == ["seal"] and "edited by hand" in report.failures[0].detail
        shutil.rmtree(out)


@pytest.mark.parametrize("name", list(PRESETS))
def test_resealed_unchanged_manifest_verifies(bundles, name):
    m = _manifest(bundles[name])
    assert rederive(m, _arrays(bundles[name], m)).ok


def _used_cases():
    return [(n, role, f) for n, p in PRESETS.items() for role, use in p.spec_use.items() for f in use.fields]


@pytest.mark.parametrize("name, role, field", _used_cases())
def test_every_used_field_changes_some_stage(bundles, name, role, field):
    p = PRESETS[name]
    use = p.spec_use[role]
    m = _manifest(bundles[name])
    arrays = _arrays(bundles[name], m)
    alts = alternatives(m["specs"][role]["spec"], field)
    assert alts, f"{name}: no allowed alternative value of {role}.{field}"
    reports = {v: rederive(edited(m, role, field, v), arrays) for v in alts}
    if field in use.inert:
        assert all(r.ok for r in reports.values()), f"{role}.{field} is declared inert but changes a stage"
        witness = use.inert[field].witness
        inputs = {e["name"]: arrays[e["name"]] for e in m["stages"] if e["role"] == "input"}
        base = p.specs[role].replace(**witness)
        changed = [v for v in alts if _outcome(p, inputs, role, base) != _outcome(p, inputs, role,
                                                                                 base.replace(**{field: v}))]
        assert changed, f"{role}.{field}: no value changes a stage even under the witness {witness}"
    else:
        assert any(not r.ok for r in reports.values()), f"{name}: no value of {role}.{field} changes any stage"


def _outcome(p, inputs, role, spec):
    """The derived stages' bytes under ``spec`` for ``role``, or the error derive raises."""
    try:
        stages = p.derive(inputs, {**p.specs, role: spec}, p.config)
    except (ValueError, ArithmeticError) as exc:
        return type(exc).__name__
    return [(s.name, s.array.dtype.str, s.word_bits, s.array.tobytes()) for s in stages]


def _unused_cases():
    return [(n, role, f) for n, p in PRESETS.items() for role, use in p.spec_use.items()
            for f in FIELDS if f not in use.fields]


@pytest.mark.parametrize("name, role, field", _unused_cases())
def test_every_unused_field_changes_nothing(bundles, name, role, field):
    m = _manifest(bundles[name])
    arrays = _arrays(bundles[name], m)
    for v in alternatives(m["specs"][role]["spec"], field):
        r = rederive(edited(m, role, field, v), arrays)
        assert r.ok, f"{role}.{field}={v!r} is not declared used but changes a stage:\n{r}"


@pytest.mark.slow
@pytest.mark.parametrize("name, role, field", [c for c in _unused_cases() if c[2] == "acc_bits"])
def test_every_acc_bits_value_of_an_unused_accumulator(bundles, name, role, field):
    m = _manifest(bundles[name])
    arrays = _arrays(bundles[name], m)
    for v in alternatives(m["specs"][role]["spec"], field, acc_bits=range(2, 65)):
        assert rederive(edited(m, role, field, v), arrays).ok, v


def test_recorded_roles_are_those_the_stages_apply(bundles):
    for name, path in bundles.items():
        m = _manifest(path)
        applied = {e["spec"] for e in m["stages"] if e["spec"]}
        assert set(m["specs"]) == applied, name
        for role, entry in m["specs"].items():
            assert entry["uses"] == list(PRESETS[name].spec_use[role].fields)
        assert all(e["spec"] is None for e in m["stages"] if e["role"] == "input")


def test_issue_example_opt_block_floor_float32_fails_verify(bundles, tmp_path):
    """Issue 11: rounding floor and compute dtype float32 in an opt_block_w4a4 bundle, re-sealed."""
    out = tmp_path / "b"
    shutil.copytree(bundles["opt_block_w4a4"], out)
    m = edited(_manifest(out), "act", "rounding", "floor")
    m = edited(m, "act", "compute_dtype", "float32")
    (out / MANIFEST).write_text(json.dumps(m, indent=2))
    report = golden.verify_bundle(out)
    assert not report.ok
    # the recorded spec is the one applied: the first codes re-derived under it differ from the stored ones
    assert any("ln1_codes" in str(c) and "re-derived values differ" in c.detail for c in report.failures), str(report)
    assert not any("seal" in str(c) for c in report.failures), str(report)


def test_verify_uses_the_recorded_spec_not_the_presets(tmp_path):
    """A bundle written with another spec verifies, and its stages are that spec's, not the preset's."""
    spec = PRESETS["sdr_w8_g16"].specs["sdr"].replace(sdr_rounding="ties_even")
    out = golden.write_bundle("sdr_w8_g16", tmp_path / "b", specs={"sdr": spec}, progress=False)
    assert golden.verify_bundle(out).ok
    m = _manifest(out)
    assert m["specs"]["sdr"]["spec"]["sdr_rounding"] == "ties_even"
    default = {s.name: s.array for s in build_stages(PRESETS["sdr_w8_g16"])[0]}
    stored = _arrays(out, m)
    assert not np.array_equal(default["sdr_codes"], stored["sdr_codes"])


# ---------------------------------------------------------------- refsim golden --numerics / --spec

def test_cli_spec_file_and_numerics_are_recorded(capsys, tmp_path):
    from clitools import cli

    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(PRESETS["sdr_w8_g16"].specs["sdr"].replace(sdr_rounding="ties_even").to_dict()))
    rc, _, err = cli(capsys, "golden", "sdr_w8_g16", "--spec", spec, "--out", tmp_path / "a", "--quiet")
    assert rc == 0, err
    assert _manifest(tmp_path / "a")["specs"]["sdr"]["spec"]["sdr_rounding"] == "ties_even"
    rc, _, err = cli(capsys, "golden", "gemm_w4a4", "--numerics", "weight=onnx", "--out", tmp_path / "b", "--quiet")
    assert rc == 0, err
    m = _manifest(tmp_path / "b")
    assert m["specs"]["weight"]["spec"] == refsim_preset("onnx") and m["specs"]["act"]["spec"] == refsim_preset("rptq")
    assert golden.verify_bundle(tmp_path / "b").ok


def refsim_preset(name):
    import refsim

    return refsim.preset(name).to_dict()


@pytest.mark.parametrize("argv, words", [
    (["gemm_w4a4", "--numerics", "onnx"], "has spec roles act, weight; name one as --numerics ROLE=onnx"),
    (["gemm_w4a4", "--numerics", "out=onnx"], "role 'out' is not one of preset gemm_w4a4's; allowed: act, weight"),
    (["requant", "--numerics", "nope"], "is not a numerics preset; allowed: onnx, "),
    (["requant", "--numerics", "onnx", "--numerics", "out=tflite"], "role 'out' is given twice"),
    (["pack_int4_word32", "--numerics", "onnx"], "applies no numerics spec"),
    (["requant", "--spec", "/nonexistent/s.json"], "--spec /nonexistent/s.json: cannot be read"),
])
def test_cli_spec_errors_are_one_line(capsys, tmp_path, argv, words):
    from clitools import cli

    rc, out, err = cli(capsys, "golden", *argv, "--out", tmp_path / "x", "--quiet")
    assert rc == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_cli_bad_spec_file_names_the_field(capsys, tmp_path):
    from clitools import cli

    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({**refsim_preset("tflite"), "rounding": "sideways"}))
    rc, _, err = cli(capsys, "golden", "requant", "--spec", spec, "--out", tmp_path / "x")
    assert rc == 2 and "rounding='sideways' is not allowed; allowed: " in err


def test_a_schema_2_bundle_still_verifies(bundles, tmp_path):
    """Schema 1 and 2 manifests held the spec dict itself per role, no stage roles and no seal."""
    out = tmp_path / "b"
    shutil.copytree(bundles["gemm_w4a4"], out)
    m = _manifest(out)
    m["schema_version"] = 2
    m["specs"] = {role: e["spec"] for role, e in m["specs"].items()}
    del m["seal"]
    for e in m["stages"]:
        del e["spec"]
    (out / MANIFEST).write_text(json.dumps(m, indent=2))
    report = golden.verify_bundle(out)
    assert report.ok, str(report)
    assert any(c.what == "seal" and "carry no seal" in c.detail for c in report.checks)
    m["specs"]["act"]["rounding"] = "floor"  # still re-derived with what it records
    (out / MANIFEST).write_text(json.dumps(m, indent=2))
    assert not golden.verify_bundle(out).ok


def test_block_bundle_under_another_spec_verifies_and_differs(tmp_path):
    """The OPT block applies its recorded act spec (onnx: float32 parameters and division) everywhere."""
    out = golden.write_bundle("opt_block_w4a4", tmp_path / "b", specs={"act": refsim.preset("onnx")}, progress=False)
    assert golden.verify_bundle(out).ok
    m = _manifest(out)
    assert m["specs"]["act"]["spec"]["compute_dtype"] == "float32"
    default = {s.name: s.array for s in build_stages(PRESETS["opt_block_w4a4"])[0]}
    stored = _arrays(out, m)
    assert not np.array_equal(default["ln1_codes"], stored["ln1_codes"])
