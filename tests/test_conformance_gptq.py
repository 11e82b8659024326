"""Conformance of ``refsim.gptq_params`` + the ``gptq`` preset with the published GPTQ quantizer.

The oracle is the IST-DASLab ``gptq`` repository's ``quant.py`` (``Quantizer.find_params`` with
``weight=True`` and ``quantize``), rewritten here in torch from its published formulas, float32
on the CPU as the reference runs them (mse grid search off, its default):

    find_params (per channel: one row of W per output channel; per tensor: W flattened):
        xmin = minimum(x.min(1), 0);  xmax = maximum(x.max(1), 0)
        sym:  xmax = maximum(|xmin|, xmax);  xmin[xmin < 0] = -xmax[xmin < 0]
        xmin[(xmin == 0) & (xmax == 0)] = -1;  xmax[same] = +1
        scale = (xmax - xmin) / maxq,  maxq = 2^bits - 1
        zero  = full_like(scale, (maxq + 1) / 2) if sym else round(-xmin / scale)
    quantize:  q = clamp(round(x / scale) + zero, 0, maxq);  dequant = scale * (q - zero)

torch.round is round-half-to-even. Scales are compared as float32 bit patterns, zero points and
codes as integers, dequantized weights as float32 bit patterns.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

torch = pytest.importorskip("torch")

import refsim  # noqa: E402

GPTQ = refsim.preset("gptq")


# --- the published formulas, in torch ------------------------------------------------------------

def gptq_find_params(w: torch.Tensor, bits: int, *, sym: bool, perchannel: bool = True):
    """Quantizer.find_params(w, weight=True) of IST-DASLab quant.py (mse=False)."""
    maxq = torch.tensor(2**bits - 1)
    x = w.flatten(1) if perchannel else w.flatten().unsqueeze(0)
    tmp = torch.zeros(x.shape[0])
    xmin = torch.minimum(x.min(1)[0], tmp)
    xmax = torch.maximum(x.max(1)[0], tmp)
    if sym:
        xmax = torch.maximum(torch.abs(xmin), xmax)
        tmp = xmin < 0
        if torch.any(tmp):
            xmin[tmp] = -xmax[tmp]
    tmp = (xmin == 0) & (xmax == 0)
    xmin[tmp] = -1
    xmax[tmp] = +1
    scale = (xmax - xmin) / maxq
    if sym:
        zero = torch.full_like(scale, (maxq + 1) / 2)
    else:
        zero = torch.round(-xmin / scale)
    if not perchannel:
        scale = scale.repeat(w.shape[0])
        zero = zero.repeat(w.shape[0])
    return scale.reshape(-1, 1), zero.reshape(-1, 1), maxq


def gptq_quantize_codes(x, scale, zero, maxq):
    """The integer codes inside quant.py's quantize(): clamp(round(x / scale) + zero, 0, maxq)."""
    return torch.clamp(torch.round(x / scale) + zero, 0, maxq)


def gptq_dequantize(q, scale, zero):
    return scale * (q - zero)


# --- refsim side -----------------------------------------------------------------------------------

def refsim_gptq(w: np.ndarray, bits: int, *, sym: bool, perchannel: bool = True):
    if perchannel:
        s, z = refsim.gptq_params(w.min(axis=1), w.max(axis=1), bits=bits, sym=sym, spec=refsim.preset("gptq"))
        q = refsim.quantize(w, s, z, bits=bits, axis=0, spec=GPTQ)
        deq = refsim.dequantize(q, s, z, axis=0)
    else:
        s, z = refsim.gptq_params(w.min(), w.max(), bits=bits, sym=sym, spec=refsim.preset("gptq"))
        q = refsim.quantize(w, s, z, bits=bits, spec=GPTQ)
        deq = refsim.dequantize(q, s, z)
    return np.asarray(s, dtype=np.float32), np.asarray(z), q, deq


def _assert_same(w: np.ndarray, bits: int, sym: bool, perchannel: bool = True):
    wt = torch.from_numpy(w)
    scale, zero, maxq = gptq_find_params(wt.clone(), bits, sym=sym, perchannel=perchannel)
    if torch.any(scale == 0):
        # A span below maxq * 2^-149 underflows the scale to 0: the published code then gets NaN zero
        # points and its Quantizer.ready() is False, so quantize() returns x unquantized. refsim refuses it.
        with pytest.raises(ValueError, match="underflow"):
            refsim_gptq(w, bits, sym=sym, perchannel=perchannel)
        return
    q_ref = gptq_quantize_codes(wt, scale, zero, maxq)
    deq_ref = gptq_dequantize(q_ref, scale, zero).numpy()
    s, z, q, deq = refsim_gptq(w, bits, sym=sym, perchannel=perchannel)
    s_ref = scale.numpy().reshape(-1)
    z_ref = zero.numpy().reshape(-1)
    assert s_ref.dtype == np.float32 and deq_ref.dtype == np.float32
    if perchannel:
        assert np.array_equal(s.reshape(-1).view(np.int32), s_ref.view(np.int32))
        assert np.array_equal(np.trunc(z_ref), z_ref)  # GPTQ's zero is an integral float
        assert np.array_equal(z.reshape(-1).astype(np.int64), z_ref.astype(np.int64))
    else:
        assert np.array_equal(np.full_like(s_ref, s.reshape(())).view(np.int32), s_ref.view(np.int32))
        assert np.array_equal(np.full(z_ref.shape, int(z)), z_ref.astype(np.int64))
    assert np.array_equal(q.astype(np.int64), q_ref.numpy().astype(np.int64))
    assert np.array_equal(deq.view(np.int32), deq_ref.view(np.int32))


# --- inputs ------------------------------------------------------------------------------------------

weights = st.one_of(st.floats(min_value=-4.0, max_value=4.0, width=32, allow_subnormal=True),
                    st.floats(width=32, allow_nan=False, min_value=-(2.0**100), max_value=2.0**100),
                    st.sampled_from([0.0, -0.0, 1e-45, -1e-45, 0.5, -0.5]))


def _special_rows(cols: int, rng) -> np.ndarray:
    """All-zero, all-positive, all-negative, one-value, mixed, tiny and large rows."""
    rows = [
        np.zeros(cols),
        rng.uniform(0.1, 2.0, cols),
        -rng.uniform(0.1, 2.0, cols),
        np.full(cols, 0.37),
        np.full(cols, -0.37),
        rng.standard_normal(cols),
        rng.standard_normal(cols) * 1e-30,
        rng.standard_normal(cols) * 1e20,
        np.where(np.arange(cols) % 2 == 0, 1.0, 0.0),
        np.where(np.arange(cols) % 3 == 0, -1.0, 0.0),
        np.linspace(-1, 3, cols),
    ]
    return np.stack(rows).astype(np.float32)


# --- tests ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sym", [False, True], ids=["asym", "sym"])
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_special_rows_match_published_quantizer(bits, sym):
    rng = np.random.default_rng(bits)
    _assert_same(_special_rows(37, rng), bits, sym)


@settings(max_examples=60)
@given(st.integers(2, 8), st.booleans(), hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 33)),
                                                    elements=weights))
def test_random_weights_match_published_quantizer(bits, sym, w):
    _assert_same(w, bits, sym)


@settings(max_examples=30)
@given(st.integers(2, 8), st.booleans(), hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 20)),
                                                    elements=weights))
def test_per_tensor_matches_published_quantizer(bits, sym, w):
    _assert_same(w, bits, sym, perchannel=False)


@pytest.mark.parametrize("sym", [False, True], ids=["asym", "sym"])
def test_grouped_matches_published_quantizer_group_by_group(sym):
    """Static groups: GPTQ calls find_params on W[:, g:g + groupsize] for each group; refsim takes one
    (rows, ngroups) parameter array with block_size (the last group ragged here: 37 = 4 * 8 + 5)."""
    rng = np.random.default_rng(5)
    w = np.concatenate([_special_rows(37, rng), (rng.standard_normal((5, 37)) * 0.1).astype(np.float32)])
    bits, g = 3, 8
    wt = torch.from_numpy(w)
    q_ref = torch.empty_like(wt)
    s_ref, z_ref = [], []
    for c in range(0, w.shape[1], g):
        scale, zero, maxq = gptq_find_params(wt[:, c:c + g].clone(), bits, sym=sym)
        q_ref[:, c:c + g] = gptq_quantize_codes(wt[:, c:c + g], scale, zero, maxq)
        s_ref.append(scale.numpy())
        z_ref.append(zero.numpy())
    s_ref = np.concatenate(s_ref, axis=1)
    z_ref = np.concatenate(z_ref, axis=1)
    nblocks = -(-w.shape[1] // g)
    pad = np.pad(w, ((0, 0), (0, nblocks * g - w.shape[1])), constant_values=np.nan).reshape(w.shape[0], nblocks, g)
    s, z = refsim.gptq_params(np.nanmin(pad, axis=2), np.nanmax(pad, axis=2), bits=bits, sym=sym,
                              spec=refsim.preset("gptq"))
    q = refsim.quantize(w, s, z, bits=bits, axis=1, block_size=g, spec=GPTQ)
    assert np.array_equal(s.view(np.int32), s_ref.view(np.int32))
    assert np.array_equal(z.astype(np.int64), z_ref.astype(np.int64))
    assert np.array_equal(q.astype(np.int64), q_ref.numpy().astype(np.int64))


def test_symmetric_all_positive_row_keeps_xmin_zero():
    """A published quirk refsim keeps: sym with an all-positive row leaves xmin = 0, so the scale is
    xmax / maxq with zero (maxq + 1) / 2 and the upper half of the values clamps to maxq."""
    w = np.array([[0.5, 1.0, 1.5, 3.0]], dtype=np.float32)
    _assert_same(w, 4, True)
    s, z, q, _ = refsim_gptq(w, 4, sym=True)
    assert int(z[0]) == 8 and s[0] == np.float32(np.float32(3.0) / np.float32(15))
    # 1.5 / 0.2 = 7.5 and 3.0 / 0.2 = 15 land above maxq - 8 = 7: both clamp to 15 (dequantized 1.4, not 3.0).
    assert q[0, 2:].tolist() == [15, 15]


def test_ties_round_half_to_even():
    # x / scale = k + 1/2 exactly: torch.round and the gptq preset both go to the even neighbour.
    w = np.array([[0.0, 0.25, 0.75, 1.25, 1.75, 3.75]], dtype=np.float32)  # asym 4-bit: scale = 3.75 / 15 = 0.25
    _assert_same(w, 4, False)


def test_scale_underflow_is_refused_where_the_published_code_skips_quantization():
    w = np.array([[1e-45, 0.0, 1e-45]], dtype=np.float32)
    scale, zero, _ = gptq_find_params(torch.from_numpy(w), 4, sym=False)
    assert scale.item() == 0.0 and torch.isnan(zero).all()  # round(-0 / 0) = NaN in the published code
    with pytest.raises(ValueError, match="underflow"):
        refsim_gptq(w, 4, sym=False)
