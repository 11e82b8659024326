"""GPTQ: lazy batches equal the unbatched specification, identity Hessian equals round to nearest,
codes agree with refsim's integer quantizer, error feedback lowers the layer output error."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refsim

torch = pytest.importorskip("torch")

from refsim.rptq.gptq import Hessian, gptq_quantize, gptq_scalar, rtn_quantize  # noqa: E402


def problem(seed, rows=24, cols=70, tokens=96):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((cols, cols)).astype(np.float32)
    x = rng.standard_normal((3, tokens, cols)).astype(np.float32) @ mix  # correlated inputs
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    h = Hessian(cols)
    h.add_batch(x[:1])
    h.add_batch(x[1:])
    return w, h.h.numpy(), x.reshape(-1, cols)


def test_hessian_is_two_over_n_sum_xxt():
    _, h, x = problem(0)
    x64 = x.astype(np.float64)
    ref = 2.0 / 3 * x64.T @ x64  # n counts sequences (3), as the published add_batch
    assert np.allclose(h, ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())


@settings(max_examples=8)
@given(st.integers(0, 2**31), st.sampled_from([3, 4]), st.sampled_from([1, 7, 32, 128]), st.booleans())
def test_lazy_batches_equal_unbatched_specification(seed, bits, blocksize, sym):
    """float64 loop: the blocked updates are the unbatched ones reassociated; codes agree exactly
    unless a value lies within ~1e-12 of a rounding boundary (seeded draws; none does)."""
    w, h, _ = problem(seed % 1000, rows=8, cols=40)
    blocked = gptq_quantize(w, h, bits=bits, sym=sym, blocksize=blocksize, dtype="float64")
    spec = gptq_scalar(w, h, bits=bits, sym=sym)
    assert np.array_equal(blocked.codes.astype(np.int32), spec)


def test_identity_hessian_is_round_to_nearest():
    """With H = I the inverse Cholesky factor is diagonal: no error feedback, so GPTQ is RTN exactly."""
    w, _, _ = problem(1)
    for groups in (None, np.repeat(np.arange(5), 14)):
        g = gptq_quantize(w, np.eye(w.shape[1], dtype=np.float32), bits=4, groups=groups)
        r = rtn_quantize(w, bits=4, groups=groups)
        assert np.array_equal(g.codes, r.codes)
        assert np.array_equal(g.scale, r.scale) and np.array_equal(g.zero, r.zero)


def test_codes_agree_with_reference_quantizer():
    """Codes reproduce from the returned scale/zero with refsim.quantize (gptq preset), and parameters
    per row x cluster come from refsim.gptq_params (here static groups: from the original weights)."""
    w, h, _ = problem(2)
    groups = np.repeat(np.arange(3), [20, 30, 20])
    g = gptq_quantize(w, h, bits=3, groups=groups, static_groups=True, act_order=True)
    for c in range(3):
        cols = groups == c
        s, z = refsim.gptq_params(w[:, cols].min(1), w[:, cols].max(1), bits=3, spec=refsim.preset("gptq"))
        assert np.array_equal(g.scale[:, c], s) and np.array_equal(g.zero[:, c], z)
    assert g.codes.max() <= 7
    deq = g.dequantize()
    again = refsim.quantize(deq, g.scale, g.zero, bits=3, axis=1, clusters=g.g_idx,
                            spec=refsim.preset("gptq").replace(signed=False))
    assert np.array_equal(again, g.codes.astype(np.int32))


@pytest.mark.parametrize("kw", [dict(), dict(groupsize=16), dict(act_order=True), dict(sym=True),
                                dict(groupsize=16, act_order=True), dict(groupsize=16, act_order=True,
                                                                          static_groups=True)])
def test_gptq_beats_round_to_nearest_on_layer_output(kw):
    w, h, x = problem(3)
    g = gptq_quantize(w, h, bits=3, **kw)
    rkw = {k: v for k, v in kw.items() if k in ("groupsize", "sym")}
    r = rtn_quantize(w, bits=3, **rkw)
    ref = x @ w.T
    assert refsim.sqnr_db(ref, x @ g.dequantize().T) > refsim.sqnr_db(ref, x @ r.dequantize().T) + 1.0
    if kw.get("act_order") and kw.get("groupsize") and not kw.get("static_groups"):
        # published g_idx: groups formed in act order, so g_idx is not sorted
        assert not np.all(np.diff(g.g_idx) >= 0)


def test_dead_columns_are_zeroed():
    w, h, _ = problem(4)
    h[5, :] = 0
    h[:, 5] = 0
    g = gptq_quantize(w, h, bits=4)
    assert np.all(g.dequantize()[:, 5] == 0)


def test_bad_arguments():
    w, h, _ = problem(5, cols=20)
    with pytest.raises(ValueError, match="bits="):
        gptq_quantize(w, h, bits=9)
    with pytest.raises(ValueError, match="hessian"):
        gptq_quantize(w, h[:5, :5])
    with pytest.raises(ValueError, match="static_groups"):
        gptq_quantize(w, h, groups=np.repeat([0, 1], 10), act_order=True)
    with pytest.raises(ValueError, match="contiguous"):
        gptq_quantize(w, h, groups=np.tile([0, 1], 10))
    with pytest.raises(ValueError, match="dtype"):
        gptq_quantize(w, h, dtype="float16")
