"""The full QRazor path: calibration, razoring, the product, SQNR, effective bits, accumulator analysis."""

from fractions import Fraction

import numpy as np
import pytest
from strategies import acc_spec, sdr_spec

import refsim
from refsim.qrazor import (
    AbsmaxCalibrator,
    QRazorConfig,
    accumulator_question,
    gaussian_weights,
    heavy_tailed_activations,
    qrazor_config,
    qrazor_matmul,
    razor,
    sdr_max_magnitude,
    sqnr_table,
)
from refsim.scalar import float_epilogue_scalar, signed_bits_scalar
from refsim.sdr import sdr_acc_bits_needed, sdr_decode, sdr_encode, sdr_gemm
from refsim.sdr_scalar import sdr_encode_scalar
from refsim_app.cli import main

# --- calibration --------------------------------------------------------------------------------


def test_running_max_equals_max_over_all_batches():
    rng = np.random.default_rng(1)
    batches = [rng.standard_normal((5, 7)).astype(np.float32) * (i + 1) for i in range(4)]
    cat = np.concatenate(batches)
    per_tensor = AbsmaxCalibrator()
    per_channel = AbsmaxCalibrator(axis=1)
    for b in batches:
        per_tensor.update(b)
        per_channel.update(b)
    assert per_tensor.batches == 4
    assert np.array_equal(per_tensor.scale(16), refsim.absmax_params(cat, bits=16, spec=refsim.preset("qrazor")))
    assert np.array_equal(per_channel.scale(8), refsim.absmax_params(cat, bits=8, axis=1, spec=refsim.preset("qrazor")))
    assert per_channel.scale(8).shape == (7,)


def test_calibrator_errors():
    with pytest.raises(ValueError, match="no calibration batch"):
        AbsmaxCalibrator().scale(8)
    with pytest.raises(ValueError, match="non-finite"):
        AbsmaxCalibrator().update(np.array([1.0, np.nan]))
    with pytest.raises(TypeError, match="float"):
        AbsmaxCalibrator().update(np.array([1, 2]))
    cal = AbsmaxCalibrator(axis=1).update(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="channels"):
        cal.update(np.ones((2, 4), np.float32))


def test_static_calibration_saturates_beyond_the_calibrated_range():
    s = AbsmaxCalibrator().update(np.array([1.0, -2.0], np.float32)).scale(16)
    r = razor(np.array([[3.0, -5.0, 2.0, 0.0]], np.float32), s, base_bits=16, keep=3, group_size=4, axis=1,
              spec=sdr_spec())
    assert r.base.tolist() == [[32767, -32767, 32767, 0]]


# --- razoring and the product -------------------------------------------------------------------


def test_razor_is_quantize_then_sdr():
    x = heavy_tailed_activations(6, 40, seed=3)
    s = refsim.absmax_params(x, bits=16, spec=refsim.preset("qrazor"))
    r = razor(x, s, base_bits=16, keep=3, group_size=16, axis=1, spec=sdr_spec())
    base = refsim.quantize(x, s, bits=16, spec=refsim.preset("qrazor"))
    assert np.array_equal(r.base, base)
    assert np.abs(base).max() == 32767  # the absmax element lands on the narrow range's end
    codes, flags = sdr_encode(base, group_size=16, base_bits=16, spec=sdr_spec())
    assert np.array_equal(r.codes, codes) and np.array_equal(r.flags, flags)


@pytest.mark.parametrize("name", ["W4A4", "W4A4KV4", "W4A8"])
def test_product_is_the_sdr_gemm_then_the_float_epilogue(name):
    x = heavy_tailed_activations(5, 37, seed=4)  # K = 37: ragged last group
    w = gaussian_weights(37, 3, seed=5)
    res = qrazor_matmul(x, w, config=qrazor_config(name, group_size=8))
    da = sdr_decode(res.x.codes, res.x.flags, group_size=8, axis=1)
    dw = sdr_decode(res.y.codes, res.y.flags, group_size=8, axis=0)
    assert np.array_equal(res.acc, refsim.int_gemm(da, dw, spec=acc_spec(64)))
    assert res.y.scale.shape == (3,) and res.x.scale.shape == ()
    for m in range(5):
        for n in range(3):  # the float32 epilogue against its scalar twin (Fractions, each op rounded)
            want = float_epilogue_scalar([int(res.acc[m, n])], [float(res.x.scale)], float(res.y.scale[n]))
            assert Fraction(float(res.output[m, n])) == want
    assert res.output.dtype == np.float32


def test_kv_role_is_per_tensor_and_razored_only_in_kv4():
    q = heavy_tailed_activations(8, 64, seed=6)
    k = heavy_tailed_activations(8, 64, seed=7)
    plain = qrazor_matmul(q, k.T, config=qrazor_config("W4A4"), y_role="kv")
    kv4 = qrazor_matmul(q, k.T, config=qrazor_config("W4A4KV4"), y_role="kv")
    assert plain.y.scale.shape == () and np.all(plain.y.flags == 0)  # int8 kept: lossless
    assert np.array_equal(plain.y.codes, plain.y.base)
    assert np.abs(kv4.y.codes.astype(int)).max() <= 7
    assert plain.y.effective_bits() == 8.0 and kv4.y.effective_bits() == 4 + 4 / 16
    assert plain.sqnr_db > kv4.sqnr_db


def test_effective_bits_count_flags():
    x = heavy_tailed_activations(3, 20, seed=8)
    s = refsim.absmax_params(x, bits=16, spec=refsim.preset("qrazor"))
    r = razor(x, s, base_bits=16, keep=3, group_size=16, axis=1, spec=sdr_spec())
    assert r.effective_bits() == (4 * 20 + 4 * 2) / 20  # a ragged group still stores a flag
    r = razor(x[:, :16], s, base_bits=16, keep=7, group_size=16, axis=1, spec=sdr_spec())
    assert r.effective_bits() == 8 + 4 / 16


def test_sqnr_orders_on_heavy_tailed_data():
    rows = {(r["config"], r["group_size"]): r for r in
            sqnr_table(("W4A4", "W4A4KV4", "W4A8"), (16, 128), m=32, k=1024, n=32, calibration_batches=2)}
    assert rows["W4A4", 16]["sqnr_db"] > rows["W4A4", 128]["sqnr_db"]  # smaller groups razor less
    assert rows["W4A8", 16]["sqnr_db"] > rows["W4A4", 16]["sqnr_db"]
    assert rows["W4A4", 16]["qk_sqnr_db"] > rows["W4A4KV4", 16]["qk_sqnr_db"]
    assert all(5 < r["sqnr_db"] < 60 for r in rows.values())


def test_accumulator_rule_reaches_the_product():
    x = heavy_tailed_activations(4, 512, seed=9)
    w = gaussian_weights(512, 4, seed=10)
    """The accumulator is the config's spec's: width and rule both reach sdr_gemm."""
    def cfg(bits, overflow):
        return qrazor_config("W4A4", spec=acc_spec(bits, overflow, base="qrazor"))

    need = qrazor_matmul(x, w, config=cfg(64, "wrap"), measure_acc=True).acc_needed
    ok = qrazor_matmul(x, w, config=cfg(need.partial, "raise"))
    assert np.array_equal(ok.acc, qrazor_matmul(x, w, config=cfg(64, "wrap")).acc)
    with pytest.raises(ValueError, match="accumulator overflow"):
        qrazor_matmul(x, w, config=cfg(need.partial - 1, "raise"))
    sat = qrazor_matmul(x, w, config=cfg(need.partial - 1, "saturate")).acc
    assert sat.dtype == np.int32 and not np.array_equal(sat, ok.acc)  # clamped somewhere
    # the default config is the qrazor preset's 32-bit raising accumulator
    assert qrazor_config("W4A4").spec == refsim.preset("qrazor")


def test_sdr_rounding_comes_from_the_spec():
    """QRazorConfig holds the spec; its sdr_rounding decides the razoring (half_up vs ties_even), and a
    spec the razor cannot take (not signed narrow, or an SDR rounding it does not implement) is refused."""
    x = np.array([[3 * 2**11, 5 * 2**11, -7 * 2**11, 2**15 - 1]], np.float32)  # ties at the kept bits
    s = np.float32(1.0)
    half = razor(x, s, base_bits=16, keep=3, group_size=4, axis=1, spec=sdr_spec("half_up"))
    even = razor(x, s, base_bits=16, keep=3, group_size=4, axis=1, spec=sdr_spec("ties_even"))
    for r, rounding in ((half, "half_up"), (even, "ties_even")):
        want = sdr_encode_scalar(r.base[0].tolist(), group_size=4, base_bits=16, keep=3, spec=sdr_spec(rounding))
        assert (r.codes[0].tolist(), r.flags[0].tolist()) == want
    assert not np.array_equal(half.codes, even.codes)
    with pytest.raises(ValueError, match="sdr_rounding='floor' is not allowed"):
        qrazor_config("W4A4", spec=sdr_spec("floor"))
    with pytest.raises(ValueError, match="signed narrow range"):
        qrazor_config("W4A4", spec=refsim.preset("onnx"))


def test_config_and_argument_errors():
    with pytest.raises(ValueError, match="name"):
        qrazor_config("W3A3")
    with pytest.raises(ValueError, match="group_size"):
        qrazor_config("W4A4", group_size=24)
    with pytest.raises(ValueError, match="base_bits=8"):
        QRazorConfig(name="x", a_keep=None)
    with pytest.raises(ValueError, match="x_role"):
        qrazor_matmul(np.ones((2, 4), np.float32), np.ones((4, 2), np.float32), config=qrazor_config("W4A4"),
                      x_role="weight")
    with pytest.raises(TypeError, match="QRazorConfig"):
        qrazor_matmul(np.ones((2, 4), np.float32), np.ones((4, 2), np.float32), config="W4A4")


# --- accumulator analysis -----------------------------------------------------------------------


@pytest.mark.parametrize("bits,keep", [(16, 3), (8, 3), (16, 7), (8, 7), (8, 1)])
def test_max_magnitude_is_the_largest_decode_and_attained(bits, keep):
    lim = (1 << (bits - 1)) - 1
    x = np.arange(-lim, lim + 1)
    codes, flags = sdr_encode(np.stack([x, np.zeros_like(x)], 1), group_size=2, base_bits=bits, keep=keep,
                              spec=sdr_spec())
    assert np.abs(sdr_decode(codes, flags, group_size=2)).max() == sdr_max_magnitude(bits, keep)


def test_worst_case_bound_is_attained_at_max_k():
    ans = accumulator_question(14336, spec=acc_spec(32, base="qrazor"))
    amax, wmax = sdr_max_magnitude(16, 3), sdr_max_magnitude(8, 3)
    assert (amax, wmax) == (28672, 112)
    assert ans.worst_case_bits == signed_bits_scalar(14336 * amax * wmax) == 37
    assert ans.base_worst_case_bits == signed_bits_scalar(14336 * 32767 * 127)
    assert not ans.enough and ans.max_k == (2**31 - 1) // (amax * wmax)
    assert accumulator_question(14336, spec=acc_spec(37, base="qrazor")).enough and not accumulator_question(14336,
        spec=acc_spec(36, base="qrazor")).enough
    # data that reaches the bound: every product at its maximum, K = max_k fits 32 bits, max_k + 1 does not
    for k, fits in ((ans.max_k, True), (ans.max_k + 1, False)):
        ac, af = sdr_encode(np.full((1, k), amax), group_size=16, base_bits=16, axis=1, spec=sdr_spec())
        wc, wf = sdr_encode(np.full((k, 1), wmax), group_size=16, base_bits=8, axis=0, spec=sdr_spec())
        need = sdr_acc_bits_needed(ac, af, wc, wf, group_size=16)
        assert need.bound == accumulator_question(k, spec=acc_spec(32, base="qrazor")).worst_case_bits
        if fits:
            assert sdr_gemm(ac, af, wc, wf, group_size=16, spec=acc_spec(32, "raise")).item() == k * amax * wmax
        else:
            with pytest.raises(ValueError, match="accumulator overflow"):
                sdr_gemm(ac, af, wc, wf, group_size=16, spec=acc_spec(32, "raise"))
    assert ans.group_sum_bits == signed_bits_scalar(16 * 7 * 7) and ans.max_shift == 12 + 4


def test_cli_answers_the_accumulator_question(capsys):
    assert main(["sdr", "accbits", "--k", "14336", "--abits", "16", "--wbits", "8", "--group", "16"]) == 0
    out = capsys.readouterr().out
    assert "NO, in the worst case" in out and "37 bits" in out and "K <= 668" in out
    assert main(["sdr", "accbits", "--k", "256", "--measure", "--m", "4", "--n", "4"]) == 0
    assert "YES" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="2"):  # an argparse error now: --group is checked as it is parsed
        main(["sdr", "accbits", "--k", "64", "--group", "12"])


def test_cli_sqnr_table(capsys):
    argv = ["sdr", "sqnr", "--configs", "W4A4", "W4A8", "--groups", "16", "--m", "8", "--k", "64", "--n", "8"]
    assert main(argv) == 0
    lines = [ln.split() for ln in capsys.readouterr().out.splitlines() if ln.startswith(("W4A4", "W4A8"))]
    assert [ln[:2] for ln in lines] == [["W4A4", "16"], ["W4A8", "16"]]
    assert float(lines[1][2]) > float(lines[0][2])  # A8 beats A4 on the same data
