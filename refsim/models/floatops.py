"""The float steps of a decoder block, identical on every IEEE machine (DESIGN.md "RPTQ: reordered dataflow").

LayerNorm and softmax take their sums correctly rounded (``refsim.floatops.fsum_rows``) and their exp
correctly rounded to float32 (``refsim.floatops.exp_float32``), so neither depends on the channel
order, the BLAS build or the CPU. rms_norm, rope and silu (the LLaMA family) are in refsim.floatops.
"""

from __future__ import annotations

import numpy as np

from refsim.floatops import exp_float32, fsum_rows


def layer_norm(x, gamma, beta, *, eps=1e-5, perm=None) -> np.ndarray:
    """y[j] = (x[perm[j]] - mean) / sqrt(var + eps) * gamma[j] + beta[j] over the last axis (biased
    variance): the LayerNorm reads the residual in its original order and writes permuted addresses
    (gamma and beta are given already permuted; perm=None is the identity).

    In float64 from float32 inputs, every operation IEEE-rounded, the two sums correctly rounded
    (``refsim.floatops.fsum_rows``: independent of channel order and of the machine):

        mean = fsum(x) / H;  d = x - mean;  var = fsum(d * d) / H
        y = fl32((d / sqrt(var + eps)) * gamma + beta)
    """
    x64 = np.asarray(x, dtype=np.float32).astype(np.float64)
    h = x64.shape[-1]
    mean = fsum_rows(x64)[..., None] / h
    d = x64 - mean
    if perm is not None:
        d = d[..., np.asarray(perm)]
    var = fsum_rows(d * d)[..., None] / h
    y = d / np.sqrt(var + eps) * np.asarray(gamma, np.float32).astype(np.float64) \
        + np.asarray(beta, np.float32).astype(np.float64)
    return y.astype(np.float32)


def softmax(scores) -> np.ndarray:
    """Softmax over the last axis, the same on every machine; -inf (masked) -> 0:

        t = fl32(s - max(s));  e = exp_float32(t) (correctly rounded);  p = fl32(e / fsum(e))

    (the quotient is taken in float64, then rounded to float32).
    """
    s = np.asarray(scores, dtype=np.float32)
    t = (s - s.max(axis=-1, keepdims=True)).astype(np.float32)
    e = exp_float32(t)
    return (e.astype(np.float64) / fsum_rows(e)[..., None]).astype(np.float32)


def float_matmul(a, b_nk, bias=None) -> np.ndarray:
    """fl32(a @ b_nk^T) computed in float64 from float32 operands, then + bias in float32.

    Not bit-exact across BLAS builds (the float64 sum order is the library's): stages that come from
    it are compared with a tolerance."""
    y = (np.asarray(a, np.float32).astype(np.float64) @ np.asarray(b_nk, np.float32).astype(np.float64).T)
    y = y.astype(np.float32)
    if bias is not None:
        y = (y + np.asarray(bias, np.float32)).astype(np.float32)
    return y


def relu(x) -> np.ndarray:
    return np.maximum(x, np.float32(0))
