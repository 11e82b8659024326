"""Conformance of the ``torchao`` preset with torchao's ``choose_qparams_affine``, ``quantize_affine`` and
``dequantize_affine`` (integer zero-point domain), and of ``refsim.dequantize_float_zero(form="tinygemm")``
with its float zero-point domain.

torchao 0.18 (``quantization/quant_primitives.py``), every op in the tensors' own dtype:

    choose_qparams_affine:  lo = min(min(x), 0), hi = max(max(x), 0)
        SYMMETRIC:   s = max(hi' / ((qmax - qmin) / 2), eps), hi' = max(-lo, hi), z = int((qmax + qmin + 1) / 2)
        ASYMMETRIC:  s = max((hi - lo) / (qmax - qmin), eps),  z = clamp(qmin - round(lo / s), qmin, qmax)
    quantize_affine:        q = clamp(round(x * (1.0 / s)) + z, qmin, qmax)       (refsim mul_recip, after_round)
    dequantize_affine:      x = (q.to(out) - z.to(out)) * s
    _dequantize_affine_tinygemm: x = (q - mid).to(out) * s + z  (mid = (qmax + qmin + 1) / 2, z a float)

so the preset is ``mul_recip`` with the compute dtype of the model (bfloat16 by default; fl_bf16(x *
fl_bf16(1 / s))). Codes are compared as integers, scales and dequantized values as float32 bit patterns.
Granularities: per tensor (block = x's shape), per channel (block (1, K)) and per group (block (1, g)).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
qp = pytest.importorskip("torchao.quantization.quant_primitives")

import refsim  # noqa: E402

AO = refsim.preset("torchao")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# (bits, signed) -> (torch storage dtype, qmin, qmax)
RANGES = {(3, True): (torch.int8, -4, 3), (4, True): (torch.int8, -8, 7), (4, False): (torch.uint8, 0, 15),
          (8, True): (torch.int8, -128, 127), (8, False): (torch.uint8, 0, 255), (3, False): (torch.uint8, 0, 7)}


def f32(t):
    return t.to(torch.float32).numpy()


def blocks(rows, cols, gran):
    if gran == "tensor":
        return (rows, cols), {}
    if gran == "channel":
        return (1, cols), dict(axis=0)
    return (1, gran), dict(axis=1, block_size=gran)


def refsim_params(xn, gran, qmin, qmax, symmetric, dtype):
    rows, cols = xn.shape
    if gran == "tensor":
        lo, hi = xn.min(), xn.max()
    elif gran == "channel":
        lo, hi = xn.min(axis=1), xn.max(axis=1)
    else:
        g = xn.reshape(rows, cols // gran, gran)
        lo, hi = g.min(axis=2), g.max(axis=2)
    return refsim.affine_minmax_params(lo, hi, qmin=qmin, qmax=qmax, symmetric=symmetric,
                                       spec=refsim.preset("torchao").replace(compute_dtype=dtype))


def run_case(x, gran, bits, signed, symmetric, dtype):
    tdt, qmin, qmax = RANGES[(bits, signed)]
    rows, cols = x.shape
    block, kw = blocks(rows, cols, gran)
    mapping = qp.MappingType.SYMMETRIC if symmetric else qp.MappingType.ASYMMETRIC
    s_t, z_t = qp.choose_qparams_affine(x, mapping, block, tdt, qmin, qmax)
    q_t = qp.quantize_affine(x, block, s_t, z_t, tdt, qmin, qmax)
    d_t = qp.dequantize_affine(q_t, block, s_t, z_t, tdt, qmin, qmax, output_dtype=x.dtype)
    xn = f32(x)
    s, z = refsim_params(xn, gran, qmin, qmax, symmetric, dtype)
    assert np.array_equal(f32(s_t).reshape(s.shape).view(np.int32), s.view(np.int32)), "scale"
    assert np.array_equal(z_t.numpy().astype(np.int64).reshape(z.shape), z.astype(np.int64)), "zero point"
    sq, zq = (s.reshape(()), z.reshape(())) if gran == "tensor" else (s, z)
    q = refsim.quantize(xn, sq, zq, bits=bits, spec=AO.replace(compute_dtype=dtype).replace(signed=signed), **kw)
    assert np.array_equal(q_t.numpy().astype(np.int64), q.astype(np.int64)), "codes"
    d = refsim.dequantize(q, sq, zq, dtype=dtype if dtype == "bfloat16" else np.dtype(dtype), **kw)
    assert np.array_equal(f32(d_t).view(np.int32), d.astype(np.float32).view(np.int32)), "dequantized"
    return q.size


def grid_input(rows, cols, seed, dtype):
    """Gaussian weights with outliers, a zero row, a constant row, exact multiples and half-multiples."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)) * rng.choice([0.01, 1.0, 30.0], size=(rows, 1))
    x[0] = 0.0
    x[1] = 0.37
    x[2] = np.round(rng.standard_normal(cols) * 8) / 16  # many exact ties after scaling
    x[3, ::5] *= 20
    return torch.from_numpy(x.astype(np.float32)).to(DTYPES[dtype])


GRID = [(gran, bits, signed, sym, dtype) for gran in ("tensor", "channel", 16, 32)
        for (bits, signed) in RANGES for sym in (True, False) for dtype in DTYPES]


@pytest.mark.parametrize("gran,bits,signed,symmetric,dtype", GRID)
def test_choose_quantize_dequantize(gran, bits, signed, symmetric, dtype):
    for seed in range(2):
        run_case(grid_input(8, 64, seed, dtype), gran, bits, signed, symmetric, dtype)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, width=32), min_size=32, max_size=32), st.sampled_from(sorted(DTYPES)),
       st.sampled_from(sorted(RANGES)), st.booleans(), st.sampled_from(["tensor", "channel", 16]))
def test_random(xs, dtype, rng_key, symmetric, gran):
    x = torch.tensor(xs, dtype=torch.float32).reshape(2, 16).to(DTYPES[dtype])
    run_case(x, gran, rng_key[0], rng_key[1], symmetric, dtype)


def test_reciprocal_multiply_differs_from_division_in_bfloat16():
    """torchao multiplies by fl_bf16(1 / s); dividing (compressed-tensors) differs on some bf16 inputs."""
    x = torch.arange(-512, 512, dtype=torch.float32).to(torch.bfloat16) / 64
    s = torch.tensor([0.3], dtype=torch.bfloat16)
    zero = torch.tensor([0], dtype=torch.int32)
    q_t = qp.quantize_affine(x.reshape(1, -1), (1, 1024), s, zero, torch.int8, -128, 127)
    xn = f32(x)
    q = refsim.quantize(xn, f32(s)[0], bits=8, spec=AO)
    assert np.array_equal(q_t.numpy().reshape(-1).astype(np.int64), q.astype(np.int64))
    assert (q != refsim.quantize(xn, f32(s)[0], bits=8, spec=AO.replace(scale_op="div"))).any()


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_float_zero_point_domain_dequantize(dtype):
    """_dequantize_affine_tinygemm: x = fl(fl((q - 8) * s) + z), z a float (torchao's int4 tinygemm layout)."""
    rng = np.random.default_rng(3)
    q = torch.from_numpy(rng.integers(0, 16, size=(4, 64)).astype(np.int32))
    s = torch.from_numpy(rng.uniform(0.001, 0.2, size=(4, 2)).astype(np.float32)).to(DTYPES[dtype])
    z = torch.from_numpy(rng.uniform(-1, 1, size=(4, 2)).astype(np.float32)).to(DTYPES[dtype])
    d_t = qp._dequantize_affine_tinygemm(q, (1, 32), s, z, torch.int32, 0, 15, output_dtype=DTYPES[dtype])
    d = refsim.dequantize_float_zero(q.numpy(), f32(s), f32(z), form="tinygemm", axis=1, block_size=32,
                                     dtype=dtype if dtype == "bfloat16" else np.dtype(dtype))
    assert np.array_equal(f32(d_t).view(np.int32), d.astype(np.float32).view(np.int32))
