"""Conformance of the ``compressed_tensors`` preset with compressed-tensors' quantize / dequantize forward and
its ``pack_to_int32`` packer.

compressed-tensors (``quantization/lifecycle/forward_helpers._quantize``) computes, in x's dtype:

    scaled = x / scale;  scaled += zero_point.to(x.dtype);  q = round(clamp(scaled, q_min, q_max))

the zero point added *before* rounding (refsim ``div`` + ``before_round``), each op one rounding in x's
dtype (bfloat16 for the models it ships; a bf16 tensor op in torch rounds the exact result once, since
its float32 opmath has 24 >= 2 * 8 + 2 bits). Clamping to integer bounds before the monotone rounding
equals rounding then saturating. ``_dequantize``: ``(q.to(s.dtype) - z.to(s.dtype)) * s`` in the scale's
dtype, refsim ``dequantize(dtype=...)``. ``pack_to_int32`` adds 2^(bits-1) and packs one little-endian bit
stream into ceil(n * bits / 32) int32 words: refsim ``int4_word32_offset`` / ``int3_word32_offset``.
Codes are compared as integers, dequantized values and packed words as bit patterns.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
ct_forward = pytest.importorskip("compressed_tensors.quantization.lifecycle.forward")
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32  # noqa: E402
from compressed_tensors.quantization import QuantizationArgs  # noqa: E402

import refsim  # noqa: E402

CT = refsim.preset("compressed_tensors")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
LAYOUT = {3: "int3_word32_offset", 4: "int4_word32_offset"}


def to_numpy(t):
    """A float tensor as float32 numpy values (bfloat16 and float16 widen exactly)."""
    return t.to(torch.float32).numpy()


def ct_quantize(x, s, z, bits, strategy, group):
    args = QuantizationArgs(num_bits=bits, type="int", symmetric=z is None, strategy=strategy, group_size=group)
    return ct_forward.quantize(x, s, z, args, dtype=torch.int8), args


def case(rows, cols, bits, strategy, group, dtype, seed, asym):
    """Weights, scales and zero points in the shapes compressed-tensors expects, with many near-ties."""
    rng = np.random.default_rng(seed)
    td = DTYPES[dtype]
    nscale = {"tensor": (1,), "channel": (rows, 1), "group": (rows, cols // group if group else 1)}[strategy]
    s = torch.from_numpy(rng.uniform(0.02, 0.9, size=nscale).astype(np.float32)).to(td)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    k = rng.integers(lo - 2, hi + 3, size=(rows, cols)) + rng.choice([0.0, 0.5, 0.49, 0.51, 0.25], size=(rows, cols))
    sx = to_numpy(s)
    if strategy == "tensor":
        s_full = np.full((rows, cols), sx[0])
    else:
        s_full = np.repeat(sx, cols if strategy == "channel" else group, axis=1)
    x = torch.from_numpy((k * s_full).astype(np.float32)).to(td)
    z = torch.from_numpy(rng.integers(lo, hi + 1, size=nscale).astype(np.int8)) if asym else None
    return x, s, z


def refsim_codes(x, s, z, bits, strategy, group, dtype):
    xn, sn = to_numpy(x), to_numpy(s)
    zn = np.zeros(sn.shape, np.int64) if z is None else z.numpy().astype(np.int64)
    spec = CT.replace(compute_dtype=dtype)
    if strategy == "tensor":
        return refsim.quantize(xn, sn[0], zn[0], bits=bits, spec=spec), (sn[0], zn[0], {})
    if strategy == "channel":
        kw = dict(axis=0)
        return refsim.quantize(xn, sn[:, 0], zn[:, 0], bits=bits, spec=spec, **kw), (sn[:, 0], zn[:, 0], kw)
    kw = dict(axis=1, block_size=group)
    return refsim.quantize(xn, sn, zn, bits=bits, spec=spec, **kw), (sn, zn, kw)


GRID = [(strategy, group, bits, dtype, asym)
        for strategy, group in (("tensor", None), ("channel", None), ("group", 8), ("group", 16))
        for bits in (3, 4, 8) for dtype in DTYPES for asym in (False, True)]


@pytest.mark.parametrize("strategy,group,bits,dtype,asym", GRID)
def test_quantize_and_dequantize_forward(strategy, group, bits, dtype, asym):
    for seed in range(3):
        x, s, z = case(6, 32, bits, strategy, group, dtype, seed, asym)
        q_ct, args = ct_quantize(x, s, z, bits, strategy, group)
        q, (sn, zn, kw) = refsim_codes(x, s, z, bits, strategy, group, dtype)
        assert np.array_equal(q_ct.numpy().astype(np.int64), q.astype(np.int64))
        d_ct = to_numpy(ct_forward.dequantize(q_ct, s, z, args))
        d = refsim.dequantize(q, sn, zn, dtype=dtype if dtype == "bfloat16" else np.dtype(dtype), **kw)
        assert np.array_equal(d_ct.view(np.int32), d.astype(np.float32).view(np.int32))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-50, 50, width=32), min_size=16, max_size=16), st.floats(2.0**-7, 4.0, width=32),
       st.integers(-8, 7), st.sampled_from(sorted(DTYPES)), st.sampled_from([3, 4, 8]))
def test_random_per_tensor(xs, s, z, dtype, bits):
    td = DTYPES[dtype]
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    z = min(max(z, lo), hi)
    x = torch.tensor(xs, dtype=torch.float32).to(td).reshape(1, 16)
    st_ = torch.tensor([s], dtype=torch.float32).to(td)
    zt = torch.tensor([z], dtype=torch.int8)
    q_ct, _ = ct_quantize(x, st_, zt, bits, "tensor", None)
    q = refsim.quantize(to_numpy(x), to_numpy(st_)[0], z, bits=bits, spec=CT.replace(compute_dtype=dtype))
    assert np.array_equal(q_ct.numpy().astype(np.int64), q.astype(np.int64))


def test_bfloat16_zero_point_before_rounding_is_what_it_computes():
    """x / s = 0.5 exactly with z = 1: compressed-tensors gives rint(1.5) = 2, ONNX's after-round form 1."""
    x = torch.tensor([[0.5]], dtype=torch.bfloat16)
    s, z = torch.tensor([1.0], dtype=torch.bfloat16), torch.tensor([1], dtype=torch.int8)
    q_ct, _ = ct_quantize(x, s, z, 4, "tensor", None)
    assert q_ct.item() == 2 == refsim.quantize(np.array([0.5], np.float32), 1.0, 1, bits=4, spec=CT)[0]
    assert refsim.quantize(np.array([0.5], np.float32), 1.0, 1, bits=4, spec=CT.replace(
        zero_point_stage="after_round"))[0] == 1


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("cols", [1, 7, 8, 10, 11, 31, 32, 33, 64, 100])
@pytest.mark.parametrize("packed_dim", [0, 1])
def test_pack_to_int32_equals_the_offset_layouts(bits, cols, packed_dim):
    """Every code of the range at every position (np.roll), packed along either dimension, both ways."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    rows = hi - lo + 1
    base = np.resize(np.arange(lo, hi + 1), cols)
    codes = np.stack([np.roll(base, r) for r in range(rows)])  # (rows, cols)
    if packed_dim == 0:
        codes = codes.T.copy()
    t = torch.from_numpy(codes.astype(np.int8))
    packed = pack_to_int32(t, bits, packed_dim=packed_dim).numpy()
    axis = 1 if packed_dim == 1 else 0
    ours = refsim.pack(codes, LAYOUT[bits], axis=axis)
    words = np.ascontiguousarray(np.moveaxis(ours, axis, -1)).view("<i4")
    assert np.array_equal(np.moveaxis(packed, axis, -1), words)
    if packed_dim == 0 and bits == 4 and packed.shape[0] == 1:
        # compressed-tensors bug (docs/conformance.md): one packed word along dim 0 makes the transposed tensor
        # (n, 1) count as contiguous with stride 16, and its 4-bit fast path's .view(torch.uint8) fails.
        with pytest.raises(RuntimeError, match="must be 1 to view Int as Byte"):
            unpack_from_int32(torch.from_numpy(packed), bits, torch.Size(codes.shape), packed_dim=packed_dim)
        return
    back = unpack_from_int32(torch.from_numpy(packed), bits, torch.Size(codes.shape), packed_dim=packed_dim)
    assert np.array_equal(back.numpy().astype(np.int64), codes)
    assert np.array_equal(refsim.unpack(ours, LAYOUT[bits], codes.shape[axis], axis=axis), codes)
