"""Harness targets for real kernels that run on this CPU, and built-in adapters for them.

``registered()`` adds these targets to ``cukernels.harness.TARGETS`` for the duration of a ``with`` block (the
harness API is unchanged; importing this module changes nothing, so the harness's own target list, which
``refsim validate-kernels`` pairs with this project's CUDA kernels, stays as it is). ``validate(name)`` and
``run_case(kernel, params)`` run a campaign or one case of a target with its built-in adapter:

    torch_int4pack_mm   torch._weight_int4pack_mm_for_cpu(x, w, group_size, scales_and_zeros), float32 x;
                        w[n, k] = fl((q - 8) s + zero) (one FMA, established bit for bit in
                        tests/test_formats_int4pack.py); result within gamma_K * sum |x_k w_k| of the
                        exact sum (any summation order, with or without FMA: Higham, Accuracy and
                        Stability, eq. 3.5, plus the half ulp of the float32 expected value)
    torch_int_mm        torch._int_mm(a, b), int8 x int8 -> int32: bit-exact (|sum| <= K 2^14 < 2^31)
    ort_matmul_integer  ONNX Runtime MatMulInteger with zero points, uint8 x uint8 and int8 x int8 (drawn
                        from the case seed): bit-exact int32. ``ort_matmul_integer_u8s8`` is uint8 x int8,
                        whose x86 AVX2 kernel saturates pair sums to int16 (docs/conformance.md #5): the
                        reference is the operator spec, so a campaign reports that bug
    ort_matmul_nbits    ONNX Runtime MatMulNBits, 4 bits, uint8 zero points, accuracy_level 0, float32 x;
                        w = fl((q - z) s) (established bit for bit); the same float bound as above

Each reference is the exact sum (``math.fsum`` of exact float64 products) rounded once to float32.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from cukernels import harness
from refsim.formats import awq, compressed_tensors, gptq, int4pack, matmul_nbits
from refsim.quantize import dequantize, dequantize_float_zero

U = 2.0**-24  # float32 unit roundoff
# Activation dtypes and their unit roundoff u_d and half their smallest subnormal (the absolute error of a result
# rounded into the subnormal range).
UNIT = {"float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
TINY = {"float32": 2.0**-150, "float16": 2.0**-25, "bfloat16": 2.0**-134}


def _gamma(n):
    return n * U / (1 - n * U)


def np_dtype(name):
    """numpy dtype of an activation dtype name (bfloat16: ml_dtypes')."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    if name not in UNIT:
        raise ValueError(f"dtype={name!r} is not allowed; allowed: {', '.join(UNIT)}")
    return np.dtype(name)


def _float_gemm_reference(x, w, dtype="float32"):
    """(y, bound) for a kernel that returns y ~ x @ w.T in ``dtype`` from exact float inputs.

    y = fl32(sum_k x[m, k] w[n, k]): the exact sum (``math.fsum`` of float64 products, each exact: x has at most
    24 significant bits and every weight here at most 24) rounded to float32, the correctly rounded float32 value.
    bound = gamma_K S + u_d (|y| + gamma_K S) + (u + 2^-52) |y| + K 2^-150 + tiny_d + 2^-150, S = sum_k |x w|:

    - products and sums in float32 or wider, in any order, fused or not: within gamma_K S of the exact sum
      (Higham, Accuracy and Stability of Numerical Algorithms, eq. 3.5; any summation tree has depth <= K);
    - a float16 / bfloat16 result is that float32 value rounded once more: u_d times its magnitude plus half the
      smallest subnormal of d (u_d = 0 for a float32 result: the accumulator is the result);
    - the expected value itself is rounded to float32 (u |y|, 2^-150 below the normals) after fsum's float64
      rounding (2^-52 |y|); K 2^-150 covers a float32 product that underflows.
    A kernel that accumulates in float16 / bfloat16 (or rounds partial sums to them) is outside this bound: the
    bound is the contract "accumulate in at least float32" that torch's CPU matmul and these kernels claim."""
    x64, w64 = np.asarray(x).astype(np.float64), np.asarray(w).astype(np.float64)
    m, k = x64.shape
    y = np.array([[math.fsum((x64[i] * w64[j]).tolist()) for j in range(w64.shape[0])] for i in range(m)])
    y = y.reshape(m, w64.shape[0])
    mag = (np.abs(x64) @ np.abs(w64).T) * (1 + (k + 2) * 2.0**-52)  # rounded up past float64's own rounding
    g, ud = _gamma(k), (0.0 if dtype == "float32" else UNIT[dtype])
    ay = np.abs(y)
    bound = g * mag + ud * (ay + g * mag) + (U + 2.0**-52) * ay + k * 2.0**-150 + TINY[dtype] + 2.0**-150
    return y.astype(np.float32), bound


def _rng(p):
    return np.random.Generator(np.random.PCG64(p.seed))


def _activations(rng, shape, dtype):
    """Standard normal activations rounded to ``dtype`` (the array the kernel receives, in that dtype)."""
    return rng.standard_normal(shape).astype(np.float32).astype(np_dtype(dtype))


def _exact_scales(rng, shape):
    """s = (8 + j) 2^(e - 3), j in 0..7, e in -10..-3: four significant bits, in [2^-10, 0.24).

    s (q - z) with |q - z| <= 16 then has at most eight significant bits and is a normal number in every
    activation dtype (bfloat16 holds 8 bits, float16 11 and normals from 2^-14): the dequantized weight is exact
    whether a kernel dequantizes in float32, float16 or bfloat16, so the campaign checks unpacking, zero points,
    groups and accumulation, and the bound needs no weight-rounding term. (The rounding of dequantization itself
    is compared bit for bit in tests/test_formats_*.py.)"""
    return ((8 + rng.integers(0, 8, shape)) * 2.0 ** (rng.integers(-10, -2, shape) - 3)).astype(np.float32)


def _dtype_strategy(st, dtypes, allowed):
    bad = [d for d in dtypes if d not in allowed]
    if bad or not dtypes:
        raise ValueError(f"dtypes={tuple(dtypes)!r} is not allowed; allowed: a non-empty subset of {allowed}")
    return st.sampled_from(tuple(dtypes))


# --- torch int4pack ----------------------------------------------------------------------------

def _int4pack_case(p):
    rng = _rng(p)
    groups = p.k // p.group_size
    q = harness._codes(rng, (p.n, p.k), 0, 15, p.fill)
    if p.dtype == "float32":  # any float32 scale and zero: the kernel's fused dequantization is identified
        s = (rng.uniform(0.5, 2.0, (p.n, groups)) * 2.0 ** rng.integers(-8, 0, (p.n, groups))).astype(np.float32)
        zero = (rng.uniform(-1, 1, (p.n, groups)) * 8 * s).astype(np.float32)
        w = dequantize_float_zero(q, s, zero, form="tinygemm_fused", axis=1, block_size=p.group_size)
    else:  # zero = j s: w = (q - 8 + j) s is exact in the activation dtype however the kernel dequantizes
        s = _exact_scales(rng, (p.n, groups))
        zero = (rng.integers(-8, 9, (p.n, groups)) * s).astype(np.float32)
        w = np.repeat(s, p.group_size, 1) * (q - 8) + np.repeat(zero, p.group_size, 1)
    dt = np_dtype(p.dtype)
    x = _activations(rng, (p.m, p.k), p.dtype)
    t = {"weight": int4pack.pack_weight(q), "scales_and_zeros": np.ascontiguousarray(np.stack([s.T, zero.T], -1))}
    y, bound = _float_gemm_reference(x, w, p.dtype)
    return harness.Case(inputs={"x": x, "w_packed": t["weight"], "scales_and_zeros": t["scales_and_zeros"].astype(dt),
                                "group_size": p.group_size},
                        outputs={"out": ((p.m, p.n), dt)}, expected={"out": (y, bound)})


def _int4pack_strategy(st, *, max_mn=12, max_k=512, bits=(4,), dtypes=("float32", "float16", "bfloat16")):
    def make(m, j, i, g, seed, fill, offset, row_pad, dtype):  # N a multiple of 16, K a multiple of the group
        return harness.CaseParams("torch_int4pack_mm", m, 16 * j, g * max(1, min(i, max_k // g)), seed, group_size=g,
                                  fill=fill, offset=offset, row_pad=row_pad, dtype=dtype)

    return st.builds(make, st.integers(1, max_mn), st.integers(1, 5), st.integers(1, 16),
                     st.sampled_from([32, 64, 128]), st.integers(0, 2**32 - 1),
                     st.sampled_from(["random", "random", "min", "max"]), st.integers(0, 3), st.integers(0, 5),
                     _dtype_strategy(st, dtypes, DTYPES["torch_int4pack_mm"]))


def _torch(a, dtype=None):
    """A fresh CPU tensor of ``a`` (numpy, bfloat16 included, or torch) with row-major strides, optionally converted
    to ``dtype``. Fresh, not ``.contiguous()``: that keeps the odd stride of a size-1 dimension of a strided view,
    which the kernels' own ``.view`` calls then refuse (compressed-tensors, issue #7's root cause)."""
    import torch

    t = a if isinstance(a, torch.Tensor) else harness.ArrayModule("torch", device="cpu").put(np.array(a))
    fresh = torch.empty(tuple(t.shape), dtype=t.dtype if dtype is None else dtype)
    return fresh.copy_(t)


def torch_int4pack_mm(x, w_packed, scales_and_zeros, group_size, out=None):
    """Adapter: torch._weight_int4pack_mm_for_cpu (inputs made contiguous: the kernel ignores strides)."""
    import torch

    return torch._weight_int4pack_mm_for_cpu(_torch(x), _torch(w_packed), int(group_size), _torch(scales_and_zeros))


# --- torch._int_mm ------------------------------------------------------------------------------

def _int_mm_case(p):
    rng = _rng(p)
    a = harness._codes(rng, (p.m, p.k), -128, 127, p.fill).astype(np.int8)
    b = harness._codes(rng, (p.k, p.n), -128, 127, "min" if p.fill == "max" else p.fill).astype(np.int8)
    y = (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32)
    return harness.Case(inputs={"a": a, "b": b}, outputs={"out": ((p.m, p.n), np.int32)}, expected={"out": y})


def _int_mm_strategy(st, *, max_mn=40, max_k=600, bits=(8,)):
    return st.builds(harness.CaseParams, target=st.just("torch_int_mm"), m=st.integers(1, max_mn),
                     n=st.integers(1, max_mn), k=st.integers(1, max_k), seed=st.integers(0, 2**32 - 1),
                     bits=st.just(8), fill=st.sampled_from(["random", "random", "min", "max", "alternating"]),
                     offset=st.integers(0, 3), row_pad=st.integers(0, 5))


def torch_int_mm(a, b, out=None):
    import torch

    return torch._int_mm(_torch(a), _torch(b))


# --- ONNX Runtime ---------------------------------------------------------------------------------

_SESSIONS: dict = {}


def _session(key, build):
    if key not in _SESSIONS:
        _SESSIONS[key] = build()
    return _SESSIONS[key]


def _ort_model(nodes, inputs, outputs):
    import onnxruntime as ort
    from onnx import helper

    g = helper.make_graph(nodes, "g", inputs, outputs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 10
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


def _mmi_case(p, types):
    rng = _rng(p)
    if types is None:
        types = ("uint8", "uint8") if p.seed % 2 else ("int8", "int8")
    lim = {"uint8": (0, 255), "int8": (-128, 127)}
    a = harness._codes(rng, (p.m, p.k), *lim[types[0]], p.fill).astype(types[0])
    b = harness._codes(rng, (p.k, p.n), *lim[types[1]], p.fill).astype(types[1])
    za = np.array([rng.integers(*lim[types[0]], endpoint=True)], dtype=types[0])
    zb = np.array([rng.integers(*lim[types[1]], endpoint=True)], dtype=types[1])
    y = ((a.astype(np.int64) - int(za[0])) @ (b.astype(np.int64) - int(zb[0]))).astype(np.int32)
    return harness.Case(inputs={"a": a, "b": b, "a_zero": za, "b_zero": zb}, outputs={"out": ((p.m, p.n), np.int32)},
                        expected={"out": y})


def _mmi_strategy_for(name):
    def strategy(st, *, max_mn=24, max_k=400, bits=(8,)):
        return st.builds(harness.CaseParams, target=st.just(name), m=st.integers(1, max_mn),
                         n=st.integers(1, max_mn), k=st.integers(1, max_k), seed=st.integers(0, 2**32 - 1),
                         bits=st.just(8), fill=st.sampled_from(["random", "random", "min", "max", "alternating"]),
                         offset=st.integers(0, 3), row_pad=st.integers(0, 5))
    return strategy


def ort_matmul_integer(a, b, a_zero, b_zero, out=None):
    """Adapter: a one-node MatMulInteger model on the CPU execution provider (sessions cached by dtypes)."""
    from onnx import TensorProto, helper

    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    elem = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}

    def build():
        vi = helper.make_tensor_value_info
        return _ort_model([helper.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])],
                          [vi("a", elem[a.dtype], ["M", "K"]), vi("b", elem[b.dtype], ["K", "N"]),
                           vi("za", elem[a.dtype], []), vi("zb", elem[b.dtype], [])],
                          [vi("y", TensorProto.INT32, ["M", "N"])])

    sess = _session(("mmi", a.dtype.str, b.dtype.str), build)
    za, zb = np.asarray(a_zero).reshape(()), np.asarray(b_zero).reshape(())
    return sess.run(None, {"a": a, "b": b, "za": za, "zb": zb})[0]


def _nbits_case(p):
    rng = _rng(p)
    block = p.group_size
    nb = -(-p.k // block)
    q = harness._codes(rng, (p.n, p.k), 0, 15, p.fill)
    if p.dtype == "float32":
        s = (rng.uniform(0.5, 2.0, (p.n, nb)) * 2.0 ** rng.integers(-8, 0, (p.n, nb))).astype(np.float32)
    else:  # float16: (q - z) s exact in float16 (no rounding of the dequantized weight to account for)
        s = _exact_scales(rng, (p.n, nb))
    z = rng.integers(0, 16, size=(p.n, nb))
    t = matmul_nbits.write(q, s, z, block=block)
    x = _activations(rng, (p.m, p.k), p.dtype)
    w = dequantize(np.pad(q, ((0, 0), (0, nb * block - p.k))), s, z, axis=1, block_size=block)[:, :p.k]
    y, bound = _float_gemm_reference(x, w, p.dtype)
    return harness.Case(inputs={"x": x, "B": t["B"], "scales": t["scales"].astype(np_dtype(p.dtype)),
                                "zero_points": t["zero_points"], "k": p.k, "n": p.n, "block": block},
                        outputs={"out": ((p.m, p.n), np_dtype(p.dtype))}, expected={"out": (y, bound)})


def _nbits_strategy(st, *, max_mn=12, max_k=400, bits=(4,), dtypes=("float32", "float16")):
    return st.builds(harness.CaseParams, target=st.just("ort_matmul_nbits"), m=st.integers(1, max_mn),
                     n=st.integers(1, 40), k=st.integers(1, max_k), seed=st.integers(0, 2**32 - 1),
                     group_size=st.sampled_from([16, 32, 64, 128]),
                     fill=st.sampled_from(["random", "random", "min", "max"]), offset=st.integers(0, 3),
                     row_pad=st.integers(0, 5), dtype=_dtype_strategy(st, dtypes, DTYPES["ort_matmul_nbits"]))


def ort_matmul_nbits(x, B, scales, zero_points, k, n, block, out=None):
    """Adapter: MatMulNBits (bits 4, accuracy_level 0) with B, scales, zero_points as graph inputs; T is x's
    dtype (ORT 1.32's CPU provider implements float and float16, not bfloat16)."""
    from onnx import TensorProto, helper

    nb = -(-int(k) // int(block))
    x = np.ascontiguousarray(x)
    elem = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16}[x.dtype]

    def build():
        vi = helper.make_tensor_value_info
        node = helper.make_node("MatMulNBits", ["A", "B", "S", "Z"], ["Y"], domain="com.microsoft", K=int(k),
                                N=int(n), bits=4, block_size=int(block), accuracy_level=0)
        return _ort_model([node], [vi("A", elem, ["M", int(k)]),
                                   vi("B", TensorProto.UINT8, [int(n), nb, int(block) // 2]),
                                   vi("S", elem, [int(n) * nb]),
                                   vi("Z", TensorProto.UINT8, [int(n) * -(-nb // 2)])],
                          [vi("Y", elem, ["M", int(n)])])

    sess = _session(("nbits", int(k), int(n), int(block), x.dtype.str), build)
    feeds = {"A": x, "B": np.ascontiguousarray(B).reshape(int(n), nb, int(block) // 2),
             "S": np.ascontiguousarray(scales, x.dtype).reshape(-1), "Z": np.ascontiguousarray(zero_points).reshape(-1)}
    return sess.run(None, feeds)[0]


# --- checkpoint-format linears: GPTQ v1 / v2, AWQ, compressed-tensors pack-quantized -------------------------
#
# Each case writes a checkpoint with refsim.formats (the writers whose round trips and packers are tested in
# tests/test_formats_*.py), hands its tensors and activations x (M, K) in the case's dtype to the kernel, and
# holds the result y (M, N) = x @ W^T to the bound of ``_float_gemm_reference``, W[n, k] = s (q - z) exact.

_SWAP = {"min": "max", "max": "min"}  # extreme codes against the opposite extreme zero point: |q - z| largest


def _group_sizes(k, g):
    return k if g == -1 else g  # -1: one group per row (AutoGPTQ's group_size=-1, compressed-tensors' channel)


def _gptq_case(p, version):
    rng = _rng(p)
    b, g = p.bits, p.group_size
    groups = -(-p.k // g)
    g_idx = np.arange(p.k) // g
    if p.act_order:  # GPTQ's desc_act: columns quantized in the order perm, group i // g for the i-th of them
        g_idx = np.empty(p.k, np.int64)
        g_idx[rng.permutation(p.k)] = np.arange(p.k) // g
    maxq = (1 << b) - 1
    lo, hi = (1, maxq + 1) if version == 1 else (0, maxq)  # v1 stores zero - 1 in b unsigned bits
    q = harness._codes(rng, (p.n, p.k), 0, maxq, p.fill)
    z = harness._codes(rng, (p.n, groups), lo, hi, _SWAP.get(p.fill, p.fill))
    s = _exact_scales(rng, (p.n, groups))
    t = gptq.write(q, s, z, g_idx, bits=b, version=version)
    w = s[:, g_idx] * (q - z[:, g_idx])
    x = _activations(rng, (p.m, p.k), p.dtype)
    y, bound = _float_gemm_reference(x, w, p.dtype)
    return harness.Case(inputs={"x": x, "qweight": t["qweight"], "qzeros": t["qzeros"], "scales": t["scales"],
                                "g_idx": t["g_idx"], "bits": b, "group_size": g},
                        outputs={"out": ((p.m, p.n), np_dtype(p.dtype))}, expected={"out": (y, bound)})


def _gptq_strategy_for(name):
    def strategy(st, *, max_mn=8, max_k=512, bits=(3, 4), dtypes=("float32", "float16", "bfloat16")):
        def make(m, nj, kj, b, g, seed, fill, act, offset, row_pad, dtype):
            # qweight packs K in 32-code runs; qzeros packs N in words: 8 columns (4 bits), 32 (3 bits)
            n, k = nj * (32 if b == 3 else 8), 32 * kj
            return harness.CaseParams(name, m, n, k, seed, bits=b, group_size=_group_sizes(k, g), fill=fill,
                                      act_order=act, offset=offset, row_pad=row_pad, dtype=dtype)

        return st.builds(make, st.integers(1, max_mn), st.integers(1, 5), st.integers(1, max(1, max_k // 32)),
                         st.sampled_from(bits), st.sampled_from([32, 64, 128, -1]), st.integers(0, 2**32 - 1),
                         st.sampled_from(["random", "random", "random", "min", "max"]), st.booleans(),
                         st.integers(0, 3), st.integers(0, 5), _dtype_strategy(st, dtypes, DTYPES[name]))
    return strategy


# AutoGPTQ's 3-bit unpacking: 32 codes in three int32 words; word 0 holds codes 0-9 at 3i and the low two bits
# of code 10 at 30; word 1 its top bit at 0, codes 11-20 at 3i + 1 and the low bit of code 21 at 31; word 2
# the top two bits of code 21 at 0 and codes 22-31 at 3i + 2. Each row of shifts reads twelve fields of a word.
_GPTQ3_SHIFTS = ((0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 0),
                 (0, 1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31),
                 (0, 2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 0))


def _gptq_unpack(words, bits):
    """int32 words (R, C) packed along dim 0 -> codes (32 R / bits, C), as AutoGPTQ's torch path unpacks them
    (``QuantLinear.forward`` when no CUDA extension runs: right shifts by a table, masks, and for 3 bits the two
    codes that straddle words put together from both). Transcribed, not imported: auto-gptq does not install here."""
    import torch

    r, c = words.shape
    if bits in (2, 4, 8):
        shifts = torch.arange(0, 32, bits, dtype=torch.int32)
        v = torch.bitwise_right_shift(words[:, None, :], shifts[None, :, None]) & ((1 << bits) - 1)
        return v.reshape(r * (32 // bits), c).to(torch.int16)
    v = words.reshape(r // 3, 3, 1, c) >> torch.tensor(_GPTQ3_SHIFTS, dtype=torch.int32).reshape(1, 3, 12, 1)
    v[:, 0, 10] = (v[:, 0, 10] & 0x3) | ((v[:, 1, 0] << 2) & 0x4)  # code 10: two bits of word 0, one of word 1
    v[:, 1, 11] = (v[:, 1, 11] & 0x1) | ((v[:, 2, 0] << 1) & 0x6)  # code 21: one bit of word 1, two of word 2
    v = torch.cat([v[:, 0, :11], v[:, 1, 1:12], v[:, 2, 1:11]], dim=1) & 0x7
    return v.reshape(r // 3 * 32, c).to(torch.int16)


def _gptq_linear(x, qweight, qzeros, scales, g_idx, bits, zero_offset):
    """y = x @ W, W[k, n] = scales[g_idx[k], n] * (q[k, n] - (stored zero[g_idx[k], n] + zero_offset)), the
    weight built in x's dtype (a model cast to that dtype holds its scales in it), then torch.matmul."""
    import torch

    x = _torch(x)
    weight = _gptq_unpack(_torch(qweight), int(bits))  # (K, N)
    zeros = _gptq_unpack(_torch(qzeros).T.contiguous(), int(bits)).T + int(zero_offset)  # (G, N), packed along N
    gi = _torch(g_idx).long()
    w = _torch(scales, x.dtype)[gi] * (weight - zeros[gi])
    return torch.matmul(x, w).to(x.dtype)


def autogptq_linear(x, qweight, qzeros, scales, g_idx, bits, group_size=None, out=None):
    """Adapter, a TRANSCRIPTION of AutoGPTQ 0.7's ``QuantLinear`` torch path (qlinear_cuda.py without its CUDA
    extension): GPTQ v1, zero = stored + 1, W = scales[g_idx] * (q - zero[g_idx]), torch.matmul(x, W). auto-gptq
    does not install here (it builds CUDA extensions), so this is a re-implementation of its unpacking code, not
    the package: it checks refsim's v1 writer and the v1 contract, not AutoGPTQ's own build."""
    return _gptq_linear(x, qweight, qzeros, scales, g_idx, bits, 1)


def gptqmodel_linear(x, qweight, qzeros, scales, g_idx, bits, group_size=None, out=None):
    """Adapter, a TRANSCRIPTION of GPTQModel's ``TorchQuantLinear.dequantize_weight`` (format gptq_v2: the zero
    point stored as is) followed by torch.matmul; gptqmodel does not install next to torch 2.13 here."""
    return _gptq_linear(x, qweight, qzeros, scales, g_idx, bits, 0)


def _awq_case(p):
    rng = _rng(p)
    g = p.group_size
    groups = p.k // g
    q = harness._codes(rng, (p.n, p.k), 0, 15, p.fill)
    z = harness._codes(rng, (p.n, groups), 0, 15, _SWAP.get(p.fill, p.fill))
    s = _exact_scales(rng, (p.n, groups))
    t = awq.write(q, s, z, group_size=g)
    w = np.repeat(s, g, 1) * (q - np.repeat(z, g, 1))
    x = _activations(rng, (p.m, p.k), p.dtype)
    y, bound = _float_gemm_reference(x, w, p.dtype)
    return harness.Case(inputs={"x": x, "qweight": t["qweight"], "qzeros": t["qzeros"], "scales": t["scales"],
                                "group_size": g},
                        outputs={"out": ((p.m, p.n), np_dtype(p.dtype))}, expected={"out": (y, bound)})


def _awq_strategy(st, *, max_mn=8, max_k=512, bits=(4,), dtypes=("float32", "float16", "bfloat16")):
    def make(m, nj, i, g, seed, fill, offset, row_pad, dtype):  # N eight to a word, K whole groups
        return harness.CaseParams("awq_linear", m, 8 * nj, g * max(1, min(i, max_k // g)), seed, group_size=g,
                                  fill=fill, offset=offset, row_pad=row_pad, dtype=dtype)

    return st.builds(make, st.integers(1, max_mn), st.integers(1, 6), st.integers(1, 16),
                     st.sampled_from([32, 64, 128]), st.integers(0, 2**32 - 1),
                     st.sampled_from(["random", "random", "random", "min", "max"]), st.integers(0, 3),
                     st.integers(0, 5), _dtype_strategy(st, dtypes, DTYPES["awq_linear"]))


AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)  # AutoAWQ's: column 8j + i of a word's eight sits at nibble order[i]


def autoawq_linear(x, qweight, qzeros, scales, group_size, out=None):
    """Adapter, a TRANSCRIPTION of AutoAWQ 0.2's ``dequantize_gemm`` (awq/utils/packing_utils.py: shift out the
    eight nibbles of each word, undo the interleave with AWQ_REVERSE_ORDER, mask, (q - z) * scales with the
    scales and zeros repeated over each group of K) followed by torch.matmul(x, W), its path without awq_ext.
    autoawq does not install here (deprecated; it pins its own torch), so this re-implements its code."""
    import torch

    x = _torch(x)
    qweight, qzeros = _torch(qweight), _torch(qzeros)
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    iw = torch.bitwise_right_shift(qweight[:, :, None], shifts[None, None, :]).to(torch.int8)
    iz = torch.bitwise_right_shift(qzeros[:, :, None], shifts[None, None, :]).to(torch.int8)
    iw, iz = iw.reshape(iw.shape[0], -1), iz.reshape(iz.shape[0], -1)
    order = torch.arange(iw.shape[-1]).reshape(-1, 8)[:, list(AWQ_REVERSE_ORDER)].reshape(-1)
    iw, iz = iw[:, order] & 15, iz[:, order] & 15
    g = int(group_size)
    w = (iw - iz.repeat_interleave(g, dim=0)) * _torch(scales, x.dtype).repeat_interleave(g, dim=0)
    return torch.matmul(x, w).to(x.dtype)


def _ct_case(p):
    rng = _rng(p)
    b, g = p.bits, p.group_size
    groups = p.k // g
    maxq = (1 << b) - 1
    q = harness._codes(rng, (p.n, p.k), 0, maxq, p.fill)
    z = None if p.symmetric else harness._codes(rng, (p.n, groups), 0, maxq, _SWAP.get(p.fill, p.fill))
    s = _exact_scales(rng, (p.n, groups))
    t = compressed_tensors.write(q, s, z, bits=b, scale_dtype=np_dtype(p.dtype))  # scales in the model's dtype
    zz = np.full((p.n, groups), 1 << (b - 1)) if z is None else z  # symmetric: signed codes, zero 2^(b-1) unsigned
    w = np.repeat(s, g, 1) * (q - np.repeat(zz, g, 1))
    x = _activations(rng, (p.m, p.k), p.dtype)
    y, bound = _float_gemm_reference(x, w, p.dtype)
    inputs = {"x": x, "weight_packed": t["weight_packed"], "weight_scale": t["weight_scale"],
              "weight_shape": t["weight_shape"], "bits": b, "group_size": g}
    if z is not None:
        inputs["weight_zero_point"] = t["weight_zero_point"]
    return harness.Case(inputs=inputs, outputs={"out": ((p.m, p.n), np_dtype(p.dtype))}, expected={"out": (y, bound)})


def _ct_strategy(st, *, max_mn=8, max_k=512, bits=(3, 4), dtypes=("float32", "float16", "bfloat16")):
    def make(m, n, i, kk, b, g, sym, seed, fill, offset, row_pad, dtype):
        k = kk if g == -1 else g * max(1, min(i, max_k // g))  # -1: one group per row (the channel strategy)
        gs = k if g == -1 else g
        if not sym and b == 4 and k // gs > 1:  # zero points of N <= 8 rows in one word hit issue #7: keep N > 8
            n = max(n, 9)
        return harness.CaseParams("compressed_tensors_linear", m, n, k, seed, bits=b, group_size=gs, symmetric=sym,
                                  fill=fill, offset=offset, row_pad=row_pad, dtype=dtype)

    return st.builds(make, st.integers(1, max_mn), st.integers(1, 40), st.integers(1, 16), st.integers(1, max_k),
                     st.sampled_from(bits), st.sampled_from([8, 16, 32, 64, 128, -1]), st.booleans(),
                     st.integers(0, 2**32 - 1), st.sampled_from(["random", "random", "random", "min", "max"]),
                     st.integers(0, 3), st.integers(0, 5),
                     _dtype_strategy(st, dtypes, DTYPES["compressed_tensors_linear"]))


def compressed_tensors_linear(x, weight_packed, weight_scale, weight_shape, bits, group_size, weight_zero_point=None,
                              out=None):
    """Adapter: compressed-tensors' OWN decompression (the installed package: ``PackedQuantizationCompressor
    .decompress`` = ``unpack_from_int32`` + ``dequantize``, W = (q - z) * scale in the scale's dtype), then
    ``torch.nn.functional.linear(x, W)`` as a decompressed model runs it. Group strategy, or channel when the
    group is the whole row; symmetric when there is no zero-point tensor."""
    import torch
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    shape = _torch(weight_shape)
    k = int(shape[1])
    channel = int(group_size) == k
    args = QuantizationArgs(num_bits=int(bits), type="int", symmetric=weight_zero_point is None,
                            strategy="channel" if channel else "group", group_size=None if channel else int(group_size))
    state = {"weight_packed": _torch(weight_packed), "weight_scale": _torch(weight_scale), "weight_shape": shape}
    if weight_zero_point is not None:
        state["weight_zero_point"] = _torch(weight_zero_point)
    w = PackedQuantizationCompressor.decompress(state, QuantizationScheme(targets=["Linear"], weights=args))["weight"]
    x = _torch(x)
    return torch.nn.functional.linear(x, w.to(x.dtype))


_FLOAT = "within gamma_K sum |x w| + u_d |y| of the exact sum (float32 accumulation)"
_X3 = "x float32/float16/bfloat16"
CPU_TARGETS = {
    "torch_int4pack_mm": harness.Target("torch_int4pack_mm", _int4pack_case, _int4pack_strategy,
                                        f"torch _weight_int4pack_mm_for_cpu, x float32/float16/bfloat16: {_FLOAT}"),
    "torch_int_mm": harness.Target("torch_int_mm", _int_mm_case, _int_mm_strategy,
                                   "torch._int_mm int8 x int8 -> int32, bit-exact"),
    "ort_matmul_integer": harness.Target("ort_matmul_integer", lambda p: _mmi_case(p, None),
                                         _mmi_strategy_for("ort_matmul_integer"),
                                         "ONNX Runtime MatMulInteger u8u8 / s8s8 with zero points, bit-exact"),
    "ort_matmul_integer_u8s8": harness.Target("ort_matmul_integer_u8s8", lambda p: _mmi_case(p, ("uint8", "int8")),
                                              _mmi_strategy_for("ort_matmul_integer_u8s8"),
                                              "ONNX Runtime MatMulInteger u8s8 against the operator spec, bit-exact"),
    "ort_matmul_nbits": harness.Target("ort_matmul_nbits", _nbits_case, _nbits_strategy,
                                       f"ONNX Runtime MatMulNBits 4-bit, x float32/float16: {_FLOAT}"),
    "gptq_v1_linear": harness.Target(
        "gptq_v1_linear", lambda p: _gptq_case(p, 1), _gptq_strategy_for("gptq_v1_linear"),
        f"GPTQ v1 checkpoint (AutoGPTQ: qzeros = zero - 1; groups, act-order g_idx) linear, {_X3}: {_FLOAT}; "
        "adapter: a transcription of AutoGPTQ's torch path (auto-gptq does not install here)"),
    "gptq_v2_linear": harness.Target(
        "gptq_v2_linear", lambda p: _gptq_case(p, 2), _gptq_strategy_for("gptq_v2_linear"),
        f"GPTQ v2 checkpoint (GPTQModel: true zeros; groups, act-order g_idx) linear, {_X3}: {_FLOAT}; "
        "adapter: a transcription of GPTQModel's TorchQuantLinear (gptqmodel does not install here)"),
    "awq_linear": harness.Target(
        "awq_linear", _awq_case, _awq_strategy,
        f"AWQ GEMM checkpoint (AutoAWQ interleaved nibbles) linear, {_X3}: {_FLOAT}; "
        "adapter: a transcription of AutoAWQ's dequantize_gemm (autoawq does not install here)"),
    "compressed_tensors_linear": harness.Target(
        "compressed_tensors_linear", _ct_case, _ct_strategy,
        f"compressed-tensors pack-quantized linear (group / channel, sym / asym), {_X3}: {_FLOAT}; "
        "adapter: compressed-tensors' own decompress (the installed package) + torch linear"),
}
# Targets that fail on a known, reported upstream bug: run only when named with --target, so that a plain
# `refsim validate-kernels` tells whether *this* setup is sound (the bug itself stays pinned by its test).
KNOWN_UPSTREAM_BUGS = {
    "ort_matmul_integer_u8s8": "ORT's x86 AVX2 MatMulInteger u8s8 saturates each pair of products to int16 "
                               "(docs/conformance.md)",
}

# The bit widths each target's cases draw (``--bits`` may only narrow to these), the activation dtypes (the
# strategy option ``dtypes`` may only narrow to these: each is one the real kernel accepts on this CPU), the
# modules it needs, and its built-in adapter (TRANSCRIPTION: a re-implementation of a package that does not
# install here; every other adapter calls the installed package itself).
BITS = {"torch_int4pack_mm": (4,), "torch_int_mm": (8,), "ort_matmul_integer": (8,), "ort_matmul_integer_u8s8": (8,),
        "ort_matmul_nbits": (4,), "gptq_v1_linear": (3, 4), "gptq_v2_linear": (3, 4), "awq_linear": (4,),
        "compressed_tensors_linear": (3, 4)}
_ALL = ("float32", "float16", "bfloat16")
DTYPES = {"torch_int4pack_mm": _ALL,  # x and scales_and_zeros in one dtype (a float32 table with bf16 x: refused)
          "ort_matmul_nbits": ("float32", "float16"),  # ORT 1.32 CPU: no bfloat16 kernel (NOT_IMPLEMENTED)
          "gptq_v1_linear": _ALL, "gptq_v2_linear": _ALL, "awq_linear": _ALL, "compressed_tensors_linear": _ALL}
REQUIRES = {"torch_int4pack_mm": ("torch",), "torch_int_mm": ("torch",), "ort_matmul_integer": ("onnxruntime", "onnx"),
            "ort_matmul_integer_u8s8": ("onnxruntime", "onnx"), "ort_matmul_nbits": ("onnxruntime", "onnx"),
            "gptq_v1_linear": ("torch",), "gptq_v2_linear": ("torch",), "awq_linear": ("torch",),
            "compressed_tensors_linear": ("torch", "compressed_tensors")}
ADAPTERS = {"torch_int4pack_mm": torch_int4pack_mm, "torch_int_mm": torch_int_mm,
            "ort_matmul_integer": ort_matmul_integer, "ort_matmul_integer_u8s8": ort_matmul_integer,
            "ort_matmul_nbits": ort_matmul_nbits, "gptq_v1_linear": autogptq_linear,
            "gptq_v2_linear": gptqmodel_linear, "awq_linear": autoawq_linear,
            "compressed_tensors_linear": compressed_tensors_linear}
TRANSCRIPTIONS = {"gptq_v1_linear": "AutoGPTQ 0.7 QuantLinear torch path",
                  "gptq_v2_linear": "GPTQModel TorchQuantLinear", "awq_linear": "AutoAWQ 0.2 dequantize_gemm"}


@contextlib.contextmanager
def registered():
    """The CPU targets in ``harness.TARGETS`` inside the block, removed again after it."""
    added = [k for k in CPU_TARGETS if k not in harness.TARGETS]
    harness.TARGETS.update({k: CPU_TARGETS[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            harness.TARGETS.pop(k, None)


def validate(name, kernel=None, **options) -> harness.ValidationReport:
    """``harness.validate`` of ``kernel`` (default: the built-in adapter) against the CPU target ``name``."""
    if name not in CPU_TARGETS:
        raise ValueError(f"target={name!r} is not a CPU target; allowed: {', '.join(CPU_TARGETS)}")
    with registered():
        report = harness.validate(kernel or ADAPTERS[name], name, **options)
    report.runner = "cukernels.cpu_targets.run_case"
    return report


def run_case(kernel, params, **options) -> harness.CaseResult:
    """``harness.run_case`` of one CPU-target case (``options``: xp, max_report), e.g. one a report names."""
    with registered():
        return harness.run_case(kernel, params, **options)


def worst_bound_ratio(name, max_examples=2000, seed=7, **options):
    """(cases, largest |kernel - exact| / bound) of a float target's built-in adapter over drawn cases: how close
    a real kernel comes to the bound it is held to (figures in docs/conformance.md). ``options`` narrow the
    draw (e.g. ``dtypes=("bfloat16",)``); ``worst_by_dtype`` gives the figure per activation dtype."""
    cases, ratios = _bound_ratios(name, max_examples, seed, **options)
    return cases, max(ratios.values(), default=0.0)


def worst_by_dtype(name, max_examples=2000, seed=7, **options):
    """{dtype: (cases, largest |kernel - exact| / bound)} of a float target's built-in adapter."""
    return _bound_ratios(name, max_examples, seed, per_dtype=True, **options)[1]


def _bound_ratios(name, max_examples, seed, per_dtype=False, **options):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    tgt = CPU_TARGETS[name]
    seen = {"cases": 0}
    ratios: dict = {}
    numpy_xp = harness.ArrayModule("numpy", device="cpu")

    @settings(max_examples=max_examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @hseed(seed)
    @given(p=tgt.strategy(st, **options))
    def run(p):
        case = tgt.build(p)
        got = numpy_xp.get(ADAPTERS[name](**case.inputs)).astype(np.float64)
        y, bound = case.expected["out"]
        r = float(np.nan_to_num(np.abs(got - y) / bound, nan=np.inf).max())  # a NaN result is never within
        key = p.dtype
        n, worst = ratios.get(key, (0, 0.0))
        ratios[key] = (n + 1, max(worst, r))
        seen["cases"] += 1

    run()
    if per_dtype:
        return seen["cases"], ratios
    return seen["cases"], {k: v[1] for k, v in ratios.items()}
