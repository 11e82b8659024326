"""Bundles: CLI, manifest and schema, verify/compare, safety, determinism, and the stage formulas."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import golden
import refsim
from golden import bundle as gbundle
from golden import hexio
from golden.presets import PRESETS
from golden.verify import BundleError, load_manifest, schema_errors
from refsim_app.cli import main


@pytest.fixture(scope="module")
def default_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "default"
    assert main(["golden", "--out", str(out)]) == 0
    return out


def test_default_bundle_verifies(default_bundle, capsys):
    m = json.loads((default_bundle / "manifest.json").read_text())
    assert m["preset"] == golden.DEFAULT_PRESET and m["level"] == 0 and m["generator"]["seed"] == 0
    assert main(["verify", str(default_bundle)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "re-derived bit for bit" in out
    report = golden.verify_bundle(default_bundle)
    assert report.ok and len(report.checks) > 3 * len(m["stages"])


def test_list_explains_each_preset(capsys):
    assert main(["golden", "--list"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith(("(", "    "))]
    assert len(lines) == len(PRESETS)
    assert all(any(f" {name}: " in ln for ln in lines) for name in PRESETS)
    assert main(["golden", "--list", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_name = {p["name"]: p for p in doc["presets"]}
    assert doc["default"] == golden.DEFAULT_PRESET and set(by_name) == set(PRESETS)
    assert by_name["gemm_w4a4"]["bits"] == {"bits": 4} and by_name["opt_block_w4a4"]["levels"] == {"0": "random"}
    assert by_name["sdr_gemm_g16"]["levels"] == {"0": "random", "1": "patterns"}
    assert by_name["gemm_w4a4"]["specs"]["act"] == PRESETS["gemm_w4a4"].specs["act"].to_dict()


def test_manifest_has_everything_and_no_paths_or_times(default_bundle):
    text = (default_bundle / "manifest.json").read_text()
    m = json.loads(text)
    assert schema_errors(m) == []
    assert str(default_bundle) not in text and "/tmp" not in text
    for key in ("time", "date", "host", "user"):
        assert key not in m
    assert m["specs"]["act"]["spec"] == refsim.preset("rptq").to_dict()
    assert m["specs"]["act"]["uses"] == list(PRESETS["gemm_w4a4"].spec_use["act"].fields)
    for e in m["stages"]:
        for k in ("name", "npy", "hex", "dtype", "shape", "word_bits", "signed", "layout", "sha256"):
            assert k in e
        assert gbundle.sha256_file(default_bundle / e["npy"]) == e["sha256"]["npy"]
    assert sorted(os.listdir(default_bundle)) == sorted(
        ["manifest.json"] + [e["npy"] for e in m["stages"]] + [e["hex"] for e in m["stages"]])


def test_schema_rejects_a_broken_manifest(default_bundle):
    m = json.loads((default_bundle / "manifest.json").read_text())
    m["stages"][0]["word_bits"] = 0
    del m["generator"]
    errs = schema_errors(m)
    assert any("generator" in e for e in errs) and any("word_bits" in e for e in errs)


def test_schema_allows_exactly_the_spec_values_refsim_has():
    """The manifest schema lists each spec field's allowed values: every value NumericsSpec accepts, no other."""
    import dataclasses
    import enum

    schema = json.loads((Path(golden.__file__).parent / "manifest.schema.json").read_text())
    props = schema["$defs"]["spec"]["properties"]
    spec = refsim.preset("onnx")
    for f in dataclasses.fields(refsim.NumericsSpec):
        value = getattr(spec, f.name)
        if isinstance(value, enum.Enum):
            assert props[f.name]["enum"] == [m.value for m in type(value)], f.name
    # a bundle recording a spec with one of the newer values passes the schema
    m = json.loads(json.dumps(make_manifest_for_test()))
    m["specs"] = {role: dict(e, spec=refsim.preset("torchao").to_dict()) for role, e in m["specs"].items()}
    assert not schema_errors(m)


def make_manifest_for_test():
    p = gbundle.get_preset(None)
    stages, shape = gbundle.build_stages(p, seed=0, level=0, shape=None)
    entries = [gbundle.stage_entry(s) | {"sha256": {"npy": "0" * 64, "hex": "0" * 64}} for s in stages]
    return gbundle.make_manifest(p, seed=0, level=0, shape=shape, entries=entries)


def _corrupt_one_bit(path: Path, line: int, bit: int = 0):
    lines = path.read_text().split("\n")
    lines[line] = format(int(lines[line], 16) ^ (1 << bit), f"0{len(lines[line])}x")
    path.write_text("\n".join(lines))


def test_compare_reports_first_mismatches(default_bundle, tmp_path, capsys):
    dut = tmp_path / "isum.hex"
    shutil.copy(default_bundle / "isum.hex", dut)
    assert main(["compare", str(default_bundle), "--stage", "isum", "--dut", str(dut)]) == 0
    _corrupt_one_bit(dut, 9, bit=3)
    _corrupt_one_bit(dut, 70, bit=31)
    capsys.readouterr()
    assert main(["compare", str(default_bundle), "--stage", "isum", "--dut", str(dut)]) == 1
    out = capsys.readouterr().out
    assert "FAILED: 2 mismatching words" in out
    assert "0x00000008" in out and "0x80000000" in out  # the XOR of the planted bits
    res = golden.compare(default_bundle, "isum", dut)
    assert [m.index for m in res.first] == [9, 70] and res.first[0].position == (0, 1, 1)


def test_compare_npy_dut_and_errors(default_bundle, tmp_path):
    a = np.load(default_bundle / "a_codes.npy")
    np.save(tmp_path / "dut.npy", a.astype(np.int32))
    assert golden.compare(default_bundle, "a_codes", tmp_path / "dut.npy").ok
    np.save(tmp_path / "short.npy", a.reshape(-1)[:-1])
    res = golden.compare(default_bundle, "a_codes", tmp_path / "short.npy")
    assert not res.ok and "LENGTH MISMATCH" in str(res)
    with pytest.raises(ValueError, match="--stage 'nope' is not in bundle"):
        golden.compare(default_bundle, "nope", tmp_path / "dut.npy")


def test_verify_refuses_bad_bundles(default_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(default_bundle, bad)
    _corrupt_one_bit(bad / "isum.hex", 3)
    r = golden.verify_bundle(bad)
    assert not r.ok and any("isum.hex" in c.detail and "sha256" in c.detail for c in r.failures)
    assert main(["verify", str(bad)]) == 1

    shutil.rmtree(bad)
    shutil.copytree(default_bundle, bad)
    (bad / "w_codes.npy").unlink()
    r = golden.verify_bundle(bad)
    assert any("w_codes.npy: missing" in c.detail for c in r.failures)

    m = json.loads((bad / "manifest.json").read_text())
    m["schema_version"] = 99
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"manifest.json: schema_version 99 is not supported"):
        golden.verify_bundle(bad)
    assert main(["verify", str(bad)]) == 2
    (bad / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json: missing"):
        load_manifest(bad)


def test_verify_catches_a_wrong_reference_stage(default_bundle, tmp_path):
    """A stage whose files agree with the manifest but not with the formula: re-derivation catches it."""
    bad = tmp_path / "bad"
    shutil.copytree(default_bundle, bad)
    m = json.loads((bad / "manifest.json").read_text())
    y = np.load(bad / "isum.npy")
    y.reshape(-1)[5] ^= 1
    np.save(bad / "isum.npy", y)
    words = hexio.words_from_array(y, 32)
    hexio.write_hex(bad / "isum.hex", words, 32)
    for e in m["stages"]:
        if e["name"] == "isum":
            e["sha256"] = {"npy": gbundle.sha256_file(bad / "isum.npy"), "hex": gbundle.sha256_file(bad / "isum.hex")}
    (bad / "manifest.json").write_text(gbundle.dump_manifest(m))
    r = golden.verify_bundle(bad)
    fails = [c for c in r.failures]
    assert [(c.stage, c.what) for c in fails] == [("isum", "derive")]
    assert "first at (0, 0, 5)" in fails[0].detail


def test_never_overwrites_without_force(default_bundle, tmp_path, capsys):
    out = tmp_path / "b"
    golden.write_bundle("pack_int4_lo_first", out)
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(FileExistsError, match="pass --force"):
        golden.write_bundle("requant", out)
    assert main(["golden", "requant", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert (out / "manifest.json").read_bytes() == before
    golden.write_bundle("requant", out, force=True)
    assert json.loads((out / "manifest.json").read_text())["preset"] == "requant"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temporary left behind


def test_a_crash_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(hexio, "write_array_hex", boom)
    with pytest.raises(RuntimeError):
        golden.write_bundle(None, tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_deterministic_bytes(tmp_path):
    for name in ("gemm_w3a3", "sdr_w8_g16", "quant_rptq_int4"):
        a = golden.write_bundle(name, tmp_path / f"{name}-a", seed=7, level=1)
        b = golden.write_bundle(name, tmp_path / f"{name}-b", seed=7, level=1)
        for f in sorted(os.listdir(a)):
            assert (a / f).read_bytes() == (b / f).read_bytes(), f
    c = golden.write_bundle("gemm_w4a4", tmp_path / "s1", seed=1)
    d = golden.write_bundle("gemm_w4a4", tmp_path / "s2", seed=2)
    assert (c / "x.npy").read_bytes() != (d / "x.npy").read_bytes()


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="preset='nope' is not known; allowed: gemm_w4a4"):
        golden.write_bundle("nope", tmp_path / "x")
    with pytest.raises(ValueError, match="level=3 is not allowed"):
        golden.write_bundle(None, tmp_path / "x", level=3)
    with pytest.raises(ValueError, match=r"3 positive integers \(M,K,N\)"):
        golden.write_bundle(None, tmp_path / "x", shape="4,4")
    with pytest.raises(ValueError, match="shape is not allowed at level 2"):
        golden.write_bundle(None, tmp_path / "x", level=2, shape=(2, 64, 2))
    with pytest.raises(ValueError, match="level=2 is not allowed for preset sdr_gemm_g16; allowed: 0, 1"):
        golden.write_bundle("sdr_gemm_g16", tmp_path / "x", level=2)
    with pytest.raises(ValueError, match="level=1 is not allowed for preset opt_block_w4a4; allowed: 0"):
        golden.write_bundle("opt_block_w4a4", tmp_path / "x", level=1)
    with pytest.raises(TypeError, match="needs out"):
        golden.write_bundle("requant")
    assert not (tmp_path / "x").exists()


def test_shape_option(tmp_path):
    assert main(["golden", "gemm_w4a4", "--shape", "3x40x5", "--out", str(tmp_path / "g")]) == 0
    m = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert m["shape"] == {"M": 3, "K": 40, "N": 5}
    assert np.load(tmp_path / "g" / "y.npy").shape == (3, 5)
    assert golden.verify_bundle(tmp_path / "g").ok


def test_progress_messages(tmp_path):
    msgs = []
    golden.write_bundle("requant", tmp_path / "r", progress=msgs.append)
    assert msgs[0].startswith("[1/") and "wrote" in msgs[-1]


FAST_LEVELS = [(n, lv) for n, p in PRESETS.items() for lv in p.fast_levels]


@pytest.mark.parametrize("name, level", FAST_LEVELS)
def test_every_preset_and_level_verifies(tmp_path, name, level):
    out = golden.write_bundle(name, tmp_path / "b", level=level)
    report = golden.verify_bundle(out)
    assert report.ok, str(report)
    m = load_manifest(out)
    assert m["exhaustive"] == (level == 2)


@pytest.mark.parametrize("name, level", [(n, lv) for n, p in PRESETS.items() for lv in p.slow_levels])
def test_big_exhaustive_bundles_verify(tmp_path, name, level):
    assert golden.verify_bundle(golden.write_bundle(name, tmp_path / "b", level=level)).ok


def _load(path):
    m = json.loads((path / "manifest.json").read_text())
    return m, {e["name"]: np.load(path / e["npy"]) for e in m["stages"]}


@pytest.mark.parametrize("name, level", [("gemm_w4a4", 0), ("gemm_w4a4", 1), ("gemm_w3a3", 2)])
def test_gemm_zero_point_correction_scalar_twin(tmp_path, name, level):
    """The RTL's correction, in Python ints, from the bundle's own codes: equals the isum stage."""
    m, s = _load(golden.write_bundle(name, tmp_path / "b", level=level))
    acc_bits = m["specs"]["act"]["spec"]["acc_bits"]
    wrap = lambda v: ((v + (1 << (acc_bits - 1))) % (1 << acc_bits)) - (1 << (acc_bits - 1))  # noqa: E731
    qa, qw, cl = s["a_codes"].tolist(), s["w_codes"].tolist(), s["a_cluster"].tolist()
    za, zw = s["a_zero"].tolist(), s["w_zero"].tolist()
    C, M, N = s["isum"].shape
    for c in range(C):
        ks = [k for k in range(len(cl)) if cl[k] == c]
        for mi in range(M):
            for n in range(N):
                raw = sum(qa[mi][k] * qw[k][n] for k in ks)
                sa = sum(qa[mi][k] for k in ks)
                sw = sum(qw[k][n] for k in ks)
                direct = sum((qa[mi][k] - za[c]) * (qw[k][n] - zw[n]) for k in ks)
                corrected = raw - zw[n] * sa - za[c] * sw + len(ks) * za[c] * zw[n]
                assert wrap(corrected) == wrap(direct) == int(s["isum"][c, mi, n])
                assert wrap(raw) == int(s["isum_raw"][c, mi, n])


def test_gemm_level2_covers_every_code_pair(tmp_path):
    _, s = _load(golden.write_bundle("gemm_w4a4", tmp_path / "b", level=2))
    qa, qw = s["a_codes"].astype(int), s["w_codes"].astype(int)
    for k in range(qa.shape[1]):
        pairs = {(a, w) for a in qa[:, k] for w in qw[k, :]}
        assert len(pairs) == 256


def test_quant_level1_hits_every_tie(tmp_path):
    """Level 1 puts x / s exactly on j + 1/2 for every code j of every cluster."""
    _, s = _load(golden.write_bundle("quant_rptq_int4", tmp_path / "b", level=1))
    for c in range(s["scale"].size):
        cols = s["cluster"] == c
        v = s["x"][:, cols].astype(np.float64) / float(s["scale"][c])
        ties = {float(t) for t in v.ravel() if t % 1 == 0.5}
        z = int(s["zero_point"][c])
        assert {j - z + 0.5 for j in range(-8, 8)} <= ties


def test_sdr_stages_and_paper_example(tmp_path):
    m, s = _load(golden.write_bundle("sdr_a16_g16", tmp_path / "b", level=1))
    assert {"base_int", "sdr_codes", "sdr_flags"} <= set(s)
    rows = [i for i in range(s["base_int"].shape[0]) if s["base_int"][i, :4].tolist() == [1004, 180, -238, 284]]
    assert rows and s["sdr_codes"][rows[0], :4].tolist() == [7, 1, -2, 2] and int(s["sdr_flags"][rows[0], 0]) == 7
    hexcodes = hexio.read_hex(tmp_path / "b" / "sdr_codes.hex", word_bits=4)
    assert int(hexcodes[rows[0] * s["base_int"].shape[1] + 2]) == 0b1010  # -2 in sign-magnitude
    flags = {int(f) for f in s["sdr_flags"].ravel()}
    assert flags == set(range(13))  # every int16 shift 0..12


def test_sdr_level2_every_value_in_every_context(tmp_path):
    _, s = _load(golden.write_bundle("sdr_w8_g16", tmp_path / "b", level=2))
    x, f = s["base_int"].astype(int), s["sdr_flags"].astype(int)[:, 0]
    seen = {(int(v), int(fl)) for row, fl in zip(x, f, strict=True) for v in row}
    for L in range(1, 8):
        flag = max(0, L - 3)
        assert all((v, flag) in seen for v in range(-(2**L - 1), 2**L))


def test_opt_block_bundle_stages(tmp_path):
    """Every stage of refsim.rptq.block's integer dataflow is in the bundle, and re-derives."""
    from refsim.rptq.block import STAGES

    out = golden.write_bundle("opt_block_w4a4", tmp_path / "b", shape=(4, 16, 32))
    m, s = _load(out)
    assert set(STAGES) <= set(s)
    assert all(m_["role"] == "input" for m_ in m["stages"] if m_["name"].startswith("param_") or m_["name"] == "x")
    assert s["out"].shape == (4, 16) and s["fc2_acc"].dtype == np.int64
    assert golden.verify_bundle(out).ok


def test_golden_with_no_options_writes_the_default_bundle(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["golden"]) == 0
    out = tmp_path / f"golden-{golden.DEFAULT_PRESET}-level0-seed0"
    assert capsys.readouterr().out.strip() == str(out.relative_to(tmp_path))
    assert main(["verify", str(out)]) == 0
    assert main(["golden"]) == 2  # never overwritten without --force
