"""The LLaMA family's machine-independent float steps: RMSNorm, RoPE tables, SiLU (refsim.floatops).

Bit-exactness of each fast path against its scalar twin (hypothesis, edges), and closeness to
transformers' own float32 modules (the bounds are stated beside each comparison).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refsim import floatops as F
from refsim.metrics import ulp_distance_float32 as ulp_distance


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
moderate = st.floats(-1e6, 1e6, width=32, allow_nan=False)


# ------------------------------------------------------------------ rsqrt

@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, exclude_min=True, allow_infinity=False, width=32))
def test_rsqrt_is_correctly_rounded(t):
    t = float(np.float32(t))
    r = F.rsqrt_float32_exact(t)
    assert bits(F.rsqrt_float32(np.float32(t))) == bits(r)
    # the definition: 1/sqrt(t) lies in r's rounding interval, (r -+ half the gaps to its neighbours)^2 * t vs 1
    lo, hi = (Fraction(float(np.nextafter(r, np.float32(s)))) for s in (-np.inf, np.inf))
    rf = Fraction(float(r))
    assert ((rf + lo) / 2) ** 2 * Fraction(t) <= 1 <= ((rf + hi) / 2) ** 2 * Fraction(t)


def test_rsqrt_exact_cases_and_limits():
    t = np.array([1, 4, 0.25, 2.0**-148, 2.0**126, 2, 0, np.inf], np.float32)
    want = np.array([1, 0.5, 2, 2.0**74, 2.0**-63, 0.70710677, np.inf, 0], np.float32)
    assert np.array_equal(bits(F.rsqrt_float32(t)), bits(want))
    # every fast value through the exact path (margin forcing the fallback) is the same
    x = np.random.default_rng(0).uniform(1e-30, 1e30, 500).astype(np.float32)
    exact = np.array([F.rsqrt_float32_exact(float(v)) for v in x], np.float32)
    assert np.array_equal(bits(F.rsqrt_float32(x)), bits(exact))
    with pytest.raises(ValueError, match="t >= 0"):
        F.rsqrt_float32(np.float32(-1))


# ------------------------------------------------------------------ rms_norm

rows = st.integers(1, 48).flatmap(lambda h: hnp.arrays(np.float32, (h,), elements=f32))


@settings(max_examples=150, deadline=None)
@given(rows, st.sampled_from([1e-5, 1e-6, 9.999999747378752e-06, 0.1]), st.integers(0, 2**32 - 1))
def test_rms_norm_equals_scalar_twin(x, eps, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(x.size).astype(np.float32)
    perm = rng.permutation(x.size)
    got = F.rms_norm(x[None], w, eps=eps, perm=perm)[0]
    want = np.array([float(v) for v in F.rms_norm_scalar(x, w, eps=eps, perm=perm)], np.float32)
    assert np.array_equal(bits(got), bits(want))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 96), st.integers(0, 2**32 - 1), st.floats(-20, 20))
def test_rms_norm_permuted_input_gives_permuted_output(h, seed, log_scale):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((3, h)) * 2.0**log_scale).astype(np.float32)
    w = rng.standard_normal(h).astype(np.float32)
    perm = rng.permutation(h)
    plain = F.rms_norm(x, w, eps=1e-5)
    assert np.array_equal(bits(F.rms_norm(x, w[perm], eps=1e-5, perm=perm)), bits(plain[:, perm]))
    # the sum does not depend on the order in which the channels are read
    assert np.array_equal(bits(F.rms_norm(x[:, perm], w[perm], eps=1e-5)), bits(plain[:, perm]))


def test_rms_norm_edges():
    w = np.ones(4, np.float32)
    zero = F.rms_norm(np.zeros((1, 4), np.float32), w, eps=1e-5)
    assert np.array_equal(bits(zero), bits(np.zeros((1, 4))))
    huge = F.rms_norm(np.full((1, 4), 1e20, np.float32), w, eps=1e-5)  # v overflows: r = 0, as in torch
    assert np.array_equal(bits(huge), bits(np.zeros((1, 4))))
    tiny = np.array([[2.0**-149, 0, 0, 0]], np.float32)  # eps dominates
    assert F.rms_norm(tiny, w, eps=1e-5)[0, 0] == np.float32(2.0**-149) * F.rsqrt_float32(np.float32(1e-5))
    with pytest.raises(ValueError, match="NaN or Inf"):
        F.rms_norm(np.array([[1, np.nan]], np.float32), w[:2], eps=1e-5)
    with pytest.raises(ValueError, match="eps=0 is not allowed"):
        F.rms_norm(np.ones((1, 2), np.float32), w[:2], eps=0)


def test_rms_norm_close_to_transformers():
    """Bound: transformers' float32 mean(x^2) differs from the correctly rounded one by a few ulp
    of v (a float32 reduction of H terms), its rsqrt by about an ulp; each moves r, hence y, by a
    relative ~2^-23 per ulp. With H = 576 that stays well inside 16 ulp of y."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 576)) * rng.uniform(0.1, 30, 576)).astype(np.float32)
    w = rng.uniform(-2, 2, 576).astype(np.float32)
    mod = LlamaRMSNorm(576, eps=1e-5)
    with torch.no_grad():
        mod.weight.copy_(torch.from_numpy(w))
        ref = mod(torch.from_numpy(x)).numpy()
    got = F.rms_norm(x, w, eps=1e-5)
    assert int(ulp_distance(got, ref).max()) <= 16
    assert np.mean(bits(got) == bits(ref)) > 0.5  # mostly the very same bits


# ------------------------------------------------------------------ RoPE

def test_rope_inv_freq_equals_scalar_and_transformers():
    pytest.importorskip("transformers")
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    for dim, theta in ((64, 1e5), (64, 1e4), (128, 5e5), (8, 1e6), (2, 10.0)):
        got = F.rope_inv_freq(dim, theta)
        twin = np.array([float(v) for v in F.rope_inv_freq_scalar(dim, theta)], np.float32)
        assert np.array_equal(bits(got), bits(twin))
        cfg = LlamaConfig(hidden_size=dim * 2, num_attention_heads=2, head_dim=dim, rope_theta=theta)
        ref = LlamaRotaryEmbedding(cfg).inv_freq.numpy()
        # only torch's float32 pow is not correctly rounded: at most an ulp apart (equal in practice)
        assert int(ulp_distance(got, ref).max()) <= 1, (dim, theta)
    with pytest.raises(ValueError, match="dim=3 is not allowed"):
        F.rope_inv_freq(3, 1e4)
    with pytest.raises(ValueError, match="theta=-1.0 is not allowed"):
        F.rope_inv_freq(4, -1.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2**24 - 1), min_size=1, max_size=3),
       st.lists(st.floats(2.0**-20, 1.0, width=32), min_size=1, max_size=4))
def test_rope_cos_sin_equals_scalar_twin(positions, inv_freq):
    cos, sin = F.rope_cos_sin(np.array(positions), np.array(inv_freq, np.float32))
    tc, ts = F.rope_cos_sin_scalar(positions, np.array(inv_freq, np.float32))
    assert np.array_equal(bits(cos), bits(np.array(tc, np.float32)))
    assert np.array_equal(bits(sin), bits(np.array(ts, np.float32)))


def test_rope_fast_path_equals_exact_path(monkeypatch):
    """Every angle of a 2048-position table for dim 64, theta 1e5: the float64 route (with its
    margin) gives the same bits as the exact decimal route forced on a sample of elements."""
    inv = F.rope_inv_freq(64, 1e5)
    cos, sin = F.rope_cos_sin(np.arange(2048), inv)
    assert cos.shape == sin.shape == (2048, 64) and cos.dtype == np.float32
    assert np.array_equal(cos[:, :32], cos[:, 32:])  # rotate_half convention: emb = cat(freqs, freqs)
    monkeypatch.setattr(F, "_TRIG_MARGIN", 1.0)  # every element through the exact path
    pos = np.r_[0, 1, 2, 7, 100, 1023, 2047]
    cos_x, sin_x = F.rope_cos_sin(pos, inv)
    assert np.array_equal(bits(cos_x), bits(cos[pos])) and np.array_equal(bits(sin_x), bits(sin[pos]))


def test_rope_angles_mirror_transformers_exactly_and_tables_are_close():
    """Angles: the same float32 product as transformers (bit for bit, given its inv_freq).
    cos/sin: torch's float32 SIMD cos/sin are within about an ulp; bound used: 2^-22 absolute."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = LlamaConfig(hidden_size=576, num_attention_heads=9, num_key_value_heads=3, head_dim=64, rope_theta=1e5)
    rot = LlamaRotaryEmbedding(cfg)
    inv = rot.inv_freq.numpy()
    pos = np.arange(2048)
    ref_angles = (torch.arange(2048)[:, None].float() * rot.inv_freq[None, :]).numpy()
    assert np.array_equal(bits(F.rope_angles(pos, inv)), bits(ref_angles))
    with torch.no_grad():
        rc, rs = rot(torch.zeros(1, 2048, 64), torch.from_numpy(pos)[None])
    cos, sin = F.rope_cos_sin(pos, inv)
    assert float(np.abs(cos - rc[0].numpy()).max()) <= 2.0**-22
    assert float(np.abs(sin - rs[0].numpy()).max()) <= 2.0**-22
    with pytest.raises(ValueError, match="positions must be"):
        F.rope_angles(np.array([-1]), inv)


# ------------------------------------------------------------------ SiLU

@settings(max_examples=300, deadline=None)
@given(f32)
def test_silu_equals_scalar_twin(x):
    got = F.silu(np.float32(x))
    assert bits(got) == bits(np.float32(F.silu_scalar(x)))


@pytest.mark.parametrize("step", [2**21, pytest.param(2**15, marks=pytest.mark.slow)])
def test_silu_sweep_and_edges(step):
    # a sweep over float32 bit patterns (every step-th, both signs) plus the overflow threshold
    pats = np.arange(0, 2**31, step, dtype=np.int64)
    xs = np.concatenate([pats, pats | 2**31]).astype(np.uint32).view(np.float32)
    xs = xs[np.isfinite(xs)]
    xs = np.concatenate([xs, np.float32(-88.72) + np.arange(-50, 50, dtype=np.float32) * np.float32(1e-4)])
    got = F.silu(xs)
    want = np.array([F.silu_scalar(float(v)) for v in xs], np.float32)
    assert np.array_equal(bits(got), bits(want))
    edge = F.silu(np.array([-0.0, 0.0, -100, np.inf, -np.inf], np.float32))
    assert np.array_equal(bits(edge[:3]), bits(np.array([-0.0, 0.0, -0.0], np.float32)))
    assert edge[3] == np.inf and np.isnan(edge[4])


def test_silu_close_to_torch():
    """torch's float32 silu, x / (1 + exp(-x)) with its own exp (about an ulp): within 4 ulp."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(20000) * 8, rng.uniform(-87, 87, 20000)]).astype(np.float32)
    ref = torch.nn.functional.silu(torch.from_numpy(x)).numpy()
    got = F.silu(x)
    assert int(ulp_distance(got, ref).max()) <= 4


def test_ulp_distance_counts_float32_steps():
    one = np.float32(1.0)
    up = np.nextafter(one, np.float32(2))
    tiny = np.float32(2.0**-149)
    assert ulp_distance(one, up) == 1 and ulp_distance(up, one) == 1
    assert ulp_distance(np.float32(0.0), np.float32(-0.0)) == 0
    assert ulp_distance(-tiny, tiny) == 2  # across zero: -tiny, 0, tiny
    steps = np.arange(50, dtype=np.int32)
    walk = (np.float32(3.5).view(np.int32) + steps).view(np.float32)
    assert np.array_equal(ulp_distance(walk, np.float32(3.5)), steps)
