"""Conformance of the ``qonnx`` preset with QONNX's Quant op (``qonnx.custom_op.general.intquant.int_quant``).

QONNX computes, in the inputs' numpy dtype (float32 here):

    y = x / scale + zeropt;  y = clip(y, min_int, max_int);  y = rounding_mode(y);  out = (y - zeropt) * scale

so the codes are ``rounding(clip(fl(fl(x / s) + z)))``: refsim's ``div`` with ``zero_point_stage="before_round"``.
Clipping to integer bounds before a monotone rounding equals rounding then saturating. The op returns the
dequantized floats; (y - zeropt) is an exact small integer and the product one float32 rounding, as in
``refsim.dequantize``, so equal float32 bit patterns mean equal codes (the map from codes is injective).

Rounding modes: ROUND/HALF_EVEN -> ties_even, CEIL -> ceil, FLOOR -> floor, UP -> away, DOWN -> trunc,
HALF_UP -> ties_away_add_half (QONNX's float formula sign(v) * floor(|v| + 0.5)), HALF_DOWN ->
ties_zero_sub_half (sign(v) * ceil(|v| - 0.5)). The exact ties_away differs from QONNX HALF_UP on the
float32 just below each half-integer tie k + 0.5 whose fl(|v| + 0.5) rounds up (0.49999997 -> 1).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

intquant = pytest.importorskip("qonnx.custom_op.general.intquant")

import refsim  # noqa: E402

QONNX = refsim.preset("qonnx")
MODES = {"ROUND": "ties_even", "HALF_EVEN": "ties_even", "CEIL": "ceil", "FLOOR": "floor", "UP": "away",
         "DOWN": "trunc", "HALF_UP": "ties_away_add_half", "HALF_DOWN": "ties_zero_sub_half"}


def qonnx_quant(x, s, z, bits, signed, narrow, mode):
    out = intquant.int_quant(np.asarray(x, np.float32), np.asarray(s, np.float32), np.asarray(z, np.float32),
                             np.asarray(bits, np.float32), signed, narrow, mode)
    assert out.dtype == np.float32
    return out


def refsim_quant(x, s, z, bits, signed, narrow, mode, axis=None):
    spec = QONNX.replace(rounding=MODES[mode])
    zi = np.asarray(z, dtype=np.int64)
    q = refsim.quantize(np.asarray(x, np.float32), np.asarray(s, np.float32).reshape(-1) if axis is not None else s,
                        zi.reshape(-1) if axis is not None else zi, bits=bits,
                        axis=axis, spec=spec.replace(signed=signed, narrow=narrow))
    return q, refsim.dequantize(q, np.asarray(s, np.float32).reshape(-1) if axis is not None else s,
                                zi.reshape(-1) if axis is not None else zi, axis=axis)


def near_ties(s, bits):
    """Every code k and tie k + 1/2 (times s) over the range and beyond, and their float32 neighbours."""
    k = np.arange(-(1 << bits) - 2, (1 << bits) + 3, dtype=np.float64)
    t = (np.concatenate([k, k + 0.5]) * np.float64(np.float32(s))).astype(np.float32)
    return np.concatenate([t, np.nextafter(t, np.float32(np.inf)), np.nextafter(t, np.float32(-np.inf)),
                           np.array([0.0, -0.0, 1e-45, -1e-45], np.float32)])


def qonnx_codes(out, s, z, bits, signed, narrow):
    """QONNX's integer codes, read back from its output through the table of every code's dequantized value
    (fl32((q - z) * s) is strictly increasing in q, so the table is exact; -0.0 and 0.0 both read as code z)."""
    lo = -(1 << (bits - 1)) + narrow if signed else 0
    hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1 - narrow
    codes = np.arange(lo, hi + 1)
    table = refsim.dequantize(codes, s, int(z))
    idx = np.searchsorted(table, out)
    assert np.all(idx < codes.size) and np.array_equal(table[idx], out), "QONNX returned a value that is no code"
    return codes[idx]


def _check(x, s, z, bits, signed, narrow, mode):
    got = qonnx_quant(x, s, z, bits, signed, narrow, mode)
    q, want = refsim_quant(x, s, z, bits, signed, narrow, mode)
    assert np.array_equal(qonnx_codes(got, s, z, bits, signed, narrow), q), (mode, x[got != want][:4])
    return q


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("bits,signed,narrow", [(2, True, False), (3, True, True), (4, True, False), (4, False, False),
                                                (8, True, False), (8, False, True)])
@pytest.mark.parametrize("s", [1.0, 0.25, 0.1, 0.00214854861, 3.0])
def test_every_code_tie_and_neighbour(mode, bits, signed, narrow, s):
    x = near_ties(s, bits)
    for z in ((0, 1, -1) if signed else (0, 3, (1 << bits) - 1)):
        _check(x, s, z, bits, signed, narrow, mode)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(-300, 300, width=32), min_size=1, max_size=40),
       st.floats(2.0**-12, 8.0, width=32), st.integers(-3, 3), st.sampled_from([2, 3, 4, 5, 8]),
       st.booleans(), st.booleans(), st.sampled_from(sorted(MODES)))
def test_random_inputs(xs, s, z, bits, signed, narrow, mode):
    z = z if signed else abs(z)
    _check(np.array(xs, np.float32), s, z, bits, signed, narrow, mode)


def test_per_channel_scale_broadcast():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((5, 17)) * 3).astype(np.float32)
    s = rng.uniform(0.05, 0.7, size=(5, 1)).astype(np.float32)
    z = rng.integers(-2, 3, size=(5, 1)).astype(np.float32)
    for mode in MODES:
        got = qonnx_quant(x, s, z, 4, True, False, mode)
        q, want = refsim_quant(x, s, z.astype(np.int64), 4, True, False, mode, axis=0)
        for r in range(5):
            assert np.array_equal(qonnx_codes(got[r], s[r, 0], z[r, 0], 4, True, False), q[r])


def test_half_up_is_the_float_formula_not_ties_away():
    """QONNX HALF_UP of 0.49999997 is 1 (fl(0.49999997 + 0.5) = 1.0); exact ties away gives 0."""
    x = np.array([0.49999997, -0.49999997, 1.4999999, 2.5], np.float32)
    got = qonnx_quant(x, 1.0, 0, 8, True, False, "HALF_UP")
    assert got.tolist() == [1.0, -1.0, 1.0, 3.0]
    assert refsim.quantize(x, 1.0, bits=8, spec=QONNX.replace(rounding="ties_away_add_half")).tolist() == [1, -1, 1, 3]
    assert refsim.quantize(x, 1.0, bits=8, spec=QONNX.replace(rounding="ties_away")).tolist() == [0, 0, 1, 3]


def test_zero_point_before_rounding_differs_from_after():
    """rint(fl(0.5 + 1)) = 2 (QONNX) but rint(0.5) + 1 = 1 (ONNX QuantizeLinear)."""
    got = qonnx_quant(np.array([0.5], np.float32), 1.0, 1, 8, True, False, "ROUND")
    assert got.tolist() == [1.0]  # (2 - 1) * 1
    assert refsim.quantize(np.array([0.5], np.float32), 1.0, 1, bits=8, spec=refsim.preset("onnx")).tolist() == [1]


def test_float16_half_up_leaves_the_range_qonnx_bug():
    """QONNX clips before rounding, so its float formula can round the clipped qmax up: in float16, 12-bit signed
    HALF_UP takes 2047.4 to clip 2047, then floor(fl16(2047 + 0.5)) = 2048 (ties to even) > qmax. refsim rounds
    first and saturates after (the Quant op's documented range), giving 2047 (docs/conformance.md)."""
    x = np.array([2047.4, 3000.0], np.float16)
    got = intquant.int_quant(x, np.float16(1), np.float16(0), np.float16(12), True, False, "HALF_UP")
    assert got.tolist() == [2048.0, 2048.0]  # outside [-2048, 2047]
    spec = QONNX.replace(rounding="ties_away_add_half", compute_dtype="float16")
    assert refsim.quantize(x, 1.0, bits=12, spec=spec).tolist() == [2047, 2047]
