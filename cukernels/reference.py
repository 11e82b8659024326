"""The reference answer for each kernel, computed by refsim (numpy, any machine).

Each function takes the kernel's *logical* operands (unpacked codes in reordered order) and
returns what the kernel must produce, bit for bit, except ``wxa16_reference`` whose kernel
returns floats and is checked within a stated bound.
"""

from __future__ import annotations

import math

import numpy as np

from cukernels import host
from refsim.checks import as_int_array
from refsim.gemm import cluster_int_gemm
from refsim.quantize import dequantize, quantize
from refsim.requant import float_epilogue
from refsim.spec import preset

INT32 = 32


def lowbit_gemm_reference(a_codes, a_zero, w_codes, sizes, scale_a, scale_w, bias=None):
    """W{b}A{b} GEMM with per-cluster activation zero points (DESIGN.md "Float epilogue").

        isum[c, m, n] = wrap32( sum_{k in cluster c} (a[m, k] - z[c]) * w[n, k] )
        y[m, n]       = float_epilogue(isum, scale_a, scale_w, bias)   (refsim.requant)

    The kernel computes sum a*w on int8 tensor cores and subtracts z[c] * colsum[c, n] in
    wrapping int32: equal modulo 2^32, hence equal after wrap32.
    Returns (isums (C, M, N) int32, y (M, N) float32).
    """
    w = as_int_array(w_codes, name="w_codes")
    sizes = host.check_cluster_sizes(sizes)
    clusters = np.repeat(np.arange(sizes.size), sizes)  # contiguous clusters, as the kernel walks them
    isums = cluster_int_gemm(a_codes, a_zero, w.T, 0, clusters, n_clusters=sizes.size,
                             spec=preset("rptq").replace(acc_bits=INT32, acc_overflow="wrap")).astype(np.int32)
    return isums, float_epilogue(isums, scale_a, scale_w, bias=bias)


def layernorm_warp_order(x, gamma, beta, eps) -> np.ndarray:
    """float32 LayerNorm in the fused kernel's documented order (one warp of 32 lanes per row).

        lane sums:   p[l] = x[l] + x[l + 32] + x[l + 64] + ...      ascending, float32
        warp sum:    butterfly over lane distance 16, 8, 4, 2, 1:   p[l] = p[l] + p[l ^ d]
                     (every lane ends with the same value: each pair is added commutatively)
        mean  = sum / H                                             (correctly rounded division)
        var   = (same order over (x - mean) * (x - mean)) / H
        rstd  = 1 / sqrt(var + eps)                                 (each op correctly rounded)
        y     = ((x - mean) * rstd) * gamma + beta                  (separate mul, mul, add; no FMA)

    Not refsim's LayerNorm (``refsim.rptq.block.layer_norm`` is float64 over sorted values, an
    order-free definition no warp-parallel float32 kernel matches cheaply): the order of a
    parallel reduction is the kernel's choice, and this states it so that the kernel can be
    checked bit for bit.
    """
    x = np.asarray(x)
    if x.dtype != np.float32 or x.ndim != 2:
        raise TypeError("x must be a 2-d float32 array (M, H)")
    h = x.shape[1]
    f32 = np.float32
    g = np.asarray(gamma, dtype=f32)
    b = np.asarray(beta, dtype=f32)

    def warp_sum(v):
        lanes = np.zeros((v.shape[0], 32), dtype=f32)
        for j in range(0, h, 32):
            chunk = v[:, j:j + 32]
            lanes[:, :chunk.shape[1]] = lanes[:, :chunk.shape[1]] + chunk
        for d in (16, 8, 4, 2, 1):
            lanes = lanes + lanes[:, np.arange(32) ^ d]
        return lanes[:, 0]

    with np.errstate(over="ignore", invalid="ignore"):
        mean = (warp_sum(x) / f32(h)).astype(f32)[:, None]
        d = (x - mean).astype(f32)
        var = (warp_sum((d * d).astype(f32)) / f32(h)).astype(f32)[:, None]
        rstd = (f32(1) / np.sqrt((var + f32(eps)).astype(f32))).astype(f32)
        return (((d * rstd).astype(f32) * g).astype(f32) + b).astype(f32)


def ln_quant_reference(x, gamma, beta, eps, perm, sizes, scale, zero, *, bits, spec):
    """Fused LayerNorm + RPTQ reorder + per-cluster asymmetric quantization: codes (M, K) int32.

    y = layernorm_warp_order(x); reordered y'[:, j] = y[:, perm[j]]; codes = refsim.quantize(y',
    scale[c], zero[c], per cluster c of position j, bits, spec). Packing is host.pack_lowbit_operand.
    """
    y = layernorm_warp_order(x, gamma, beta, eps)[:, as_int_array(perm, name="perm")]
    s = host.check_cluster_sizes(sizes)
    cid = np.repeat(np.arange(s.size), s)
    return quantize(y, np.asarray(scale), np.asarray(zero), bits=bits, axis=1, clusters=cid, spec=spec)


def sdr_encode_reference(x, *, group_size, base_bits, rounding="half_up"):
    """refsim's SDR encode (keep = 3) along the last axis -> (codes int8, flags uint8); ``rounding`` is the
    kernel's SDR rounding argument, handed to refsim as the qrazor spec's sdr_rounding."""
    from refsim.sdr import sdr_encode

    return sdr_encode(x, group_size=group_size, base_bits=base_bits, keep=3, axis=-1,
                      spec=preset("qrazor").replace(sdr_rounding=rounding))


def sdr_gemm_reference(a_codes, a_flags, w_codes, w_flags, *, group_size, acc_bits=64):
    """refsim's decompression-free GEMM with weights given as rows (N, K) / flags (N, G): wrap accumulator."""
    from refsim.sdr import sdr_gemm

    return sdr_gemm(a_codes, a_flags, np.asarray(w_codes).T, np.asarray(w_flags).T, group_size=group_size,
                    spec=preset("qrazor").replace(acc_bits=acc_bits, acc_overflow="wrap"))


def gamma_n(n: int, unit_roundoff: float) -> float:
    """Higham's gamma_n = n u / (1 - n u): bound on the relative error of an n-term dot product."""
    nu = n * unit_roundoff
    if nu >= 1:
        return math.inf
    return nu / (1 - nu)


def wxa16_reference(x, w_codes, scales, zeros, *, group_size):
    """W{b}A16: y = x @ dequant(w).T, and the error bound a float32-accumulating kernel must meet.

    dequant(w)[n, k] = fl32((q - z) * s) per group of ``group_size`` along K (refsim.dequantize),
    exactly what the kernel computes. The kernel then forms K products and sums them in float32,
    in any order and with or without FMA, so (Higham, Eq. 3.5)
        |y_kernel - y_exact| <= gamma_K(2^-24) * sum_k |x[m, k]| |w[n, k]|.
    The reference sums in float64, off by at most gamma_K(2^-53) * the same sum, so the test
    bound is (gamma_K(2^-24) + gamma_K(2^-53)) * sum |x||w| (plus the smallest subnormal).
    Returns (y float64 (M, N), bound float64 (M, N)).
    """
    xf = np.asarray(x).astype(np.float64)
    wd = dequantize(as_int_array(w_codes, name="w_codes"), np.asarray(scales), np.asarray(zeros), axis=1,
                    block_size=group_size, dtype=np.float32).astype(np.float64)
    k = xf.shape[1]
    y = xf @ wd.T
    mag = np.abs(xf) @ np.abs(wd).T
    bound = (gamma_n(k, 2.0 ** -24) + gamma_n(k, 2.0 ** -53)) * mag + 2.0 ** -149
    return y, bound
