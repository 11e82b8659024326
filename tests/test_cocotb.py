"""The cocotb benches of examples/rtl/cocotb under Icarus Verilog and Verilator, on bundles made here.

The same cases as the ``$readmemh`` testbenches (tests/test_golden_rtl.py): every unit passes on
correct bundles, and a planted one-bit error in a stage or in the RTL fails. Each simulator compiles
the design once per session (and once more with the planted RTL bug).

A simulator that is absent is skipped locally; CI (.ci/run) installs both and sets
REFSIM_REQUIRE_IVERILOG=1 and REFSIM_REQUIRE_VERILATOR=1, which turn the skip into a failure.
"""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import golden
from golden.compare import read_dut
from golden.hexio import array_from_words

HERE = Path(__file__).resolve().parents[1] / "examples" / "rtl" / "cocotb"
REQUIRE = {"icarus": "REFSIM_REQUIRE_IVERILOG", "verilator": "REFSIM_REQUIRE_VERILATOR"}
TOOLS = {"icarus": ("iverilog", "vvp"), "verilator": ("verilator",)}

if importlib.util.find_spec("cocotb") is None:
    if any(os.environ.get(v) for v in REQUIRE.values()):
        raise RuntimeError("a REFSIM_REQUIRE_* simulator variable is set but cocotb is not installed (the test extra)")
    pytest.skip("cocotb is not installed (pip install -e '.[test]')", allow_module_level=True)


def _load(name):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


run_cocotb = _load("run_cocotb")
bundle_py = _load("bundle")


def _simulator(sim):
    """The simulator's name, after its presence is checked: skipped locally, an error where required."""
    missing = [t for t in TOOLS[sim] if shutil.which(t) is None]
    if missing:
        if os.environ.get(REQUIRE[sim]):
            pytest.fail(f"{REQUIRE[sim]} is set but {', '.join(missing)} is not on PATH")
        pytest.skip(f"{', '.join(missing)} is not installed; CI installs it (apt-get install {TOOLS[sim][0]})")
    return sim


SIMS = [pytest.param("icarus", id="icarus"), pytest.param("verilator", id="verilator")]


@pytest.fixture(scope="session")
def builds(tmp_path_factory):
    """(simulator, defines) -> build directory, each compiled once per session."""
    root = tmp_path_factory.mktemp("cocotb-builds")
    cache = {}

    def get(sim, defines=()):
        key = (sim, tuple(defines))
        if key not in cache:
            cache[key], _ = run_cocotb.build(sim, defines=defines, build_dir=root / "-".join([sim, *defines]))
        return cache[key]

    return get


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    """(preset, level) -> a bundle written once per session; tests that plant errors copy it first."""
    root = tmp_path_factory.mktemp("cocotb-bundles")
    cache = {}

    def get(name, level):
        if (name, level) not in cache:
            cache[name, level] = golden.write_bundle(name, root / f"{name}-{level}", level=level)
        return cache[name, level]

    return get


def _run(builds, sim, bundle, defines=()):
    return run_cocotb.run(bundle, sim, defines=defines, build_dir=builds(sim, defines))


PASS_CASES = [("gemm_w4a4", 1), ("gemm_w3a3", 1), ("sdr_a16_g16", 1), ("sdr_a16_g32", 1), ("sdr_w8_g16", 1),
              ("sdr_w8_g32", 0)]


@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize("name, level", PASS_CASES)
def test_bench_passes(builds, bundles, sim, name, level):
    rc, log = _run(builds, _simulator(sim), bundles(name, level))
    assert rc == 0, log
    assert "PASS:" in log and "MISMATCH" not in log


def _flip_npy_bit(bundle: Path, stage: str, index: int, bit: int) -> int:
    """Flip one bit of one memory word of a stage's .npy (the file the bench reads); returns the
    word's index. A sign-magnitude sign bit is flipped at the first word from ``index`` on whose
    magnitude is not zero, since an int8 array has no -0 (the .hex test flips the sign of a 0)."""
    entry = {e["name"]: e for e in json.loads((bundle / "manifest.json").read_text())["stages"]}[stage]
    words = read_dut(bundle / entry["npy"], entry)
    if entry["layout"] == "sign_magnitude" and bit == entry["word_bits"] - 1:
        index += int(np.argmax((words[index:] & ((1 << bit) - 1)) != 0))
    words[index] ^= np.uint64(1 << bit)
    arr = array_from_words(words, dtype=entry["dtype"], shape=entry["shape"], word_bits=entry["word_bits"],
                           signed=entry["signed"], sign_magnitude=entry["layout"] == "sign_magnitude")
    assert not np.array_equal(arr, np.load(bundle / entry["npy"])), "the planted error changed nothing"
    np.save(bundle / entry["npy"], arr)
    return index


# The planted stage errors of tests/test_golden_rtl.py: (preset, stage, word, bit), at level 1.
STAGE_ERRORS = [
    ("gemm_w4a4", "isum", 17, 0),
    ("gemm_w4a4", "isum_raw", 3, 30),
    ("gemm_w3a3", "w_sum", 1, 2),
    ("sdr_a16_g16", "sdr_codes", 5, 3),   # the sign bit of one code
    ("sdr_w8_g16", "sdr_flags", 0, 0),
]


@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize("name, stage, index, bit", STAGE_ERRORS)
def test_planted_stage_error_fails(tmp_path, builds, bundles, sim, name, stage, index, bit):
    sim = _simulator(sim)
    bundle = Path(shutil.copytree(bundles(name, 1), tmp_path / "b"))
    index = _flip_npy_bit(bundle, stage, index, bit)
    rc, log = _run(builds, sim, bundle)
    assert rc != 0, log
    assert f"MISMATCH {stage}[{index}]" in log and "FAIL:" in log, log


@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize("name", ["gemm_w4a4", "sdr_a16_g16"])
def test_planted_rtl_error_fails(builds, bundles, sim, name):
    rc, log = _run(builds, _simulator(sim), bundles(name, 1), defines=["PLANT_RTL_BUG"])
    assert rc != 0, log
    assert "MISMATCH" in log and "FAIL:" in log, log


def _manifest(bundle):
    return json.loads((bundle / "manifest.json").read_text())


@pytest.mark.parametrize("name", ["gemm_w4a4", "gemm_w3a3", "sdr_a16_g16", "sdr_a16_g32", "sdr_w8_g16", "sdr_w8_g32"])
def test_every_preset_has_an_instance(bundles, name):
    """Each preset a bench takes maps to an instance that refsim_units.v declares."""
    testcase, instance = run_cocotb.bench_for(_manifest(bundles(name, 0)))
    assert f") {instance} (" in (HERE / "refsim_units.v").read_text(), instance
    assert testcase == ("int_dot_zp_matches_bundle" if name.startswith("gemm") else "sdr_group_encoder_matches_bundle")


def test_unsupported_bundles_are_refused(bundles):
    m = _manifest(bundles("gemm_w4a4", 0))
    m["specs"]["act"]["spec"]["acc_bits"] = 24
    with pytest.raises(SystemExit, match="ACC=32"):
        run_cocotb.bench_for(m)
    m["specs"]["act"]["spec"]["acc_overflow"] = "saturate"
    with pytest.raises(SystemExit, match="wrapping accumulator"):
        run_cocotb.bench_for(m)
    with pytest.raises(SystemExit, match="no testbench"):
        run_cocotb.bench_for(_manifest(bundles("quant_rptq_int4", 0)))


def test_a_foreign_build_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not a cocotb build"):
        run_cocotb.build(_simulator("icarus"), build_dir=tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_bench_words_equal_refsims_conversion(bundles):
    """bundle.py (numpy only) reads every integer stage the benches use as refsim compare does."""
    for name, level in PASS_CASES:
        path = bundles(name, level)
        b = bundle_py.Bundle(path)
        for stage, entry in b.entries.items():
            if np.dtype(entry["dtype"]).kind in "iu" and entry["layout"] in ("element", "sign_magnitude"):
                assert np.array_equal(b.words(stage), read_dut(path / entry["npy"], entry)), (name, stage)
