"""The float steps of a decoder block, identical on every IEEE machine (DESIGN.md "RPTQ: reordered dataflow").

LayerNorm and softmax take their sums correctly rounded (``refsim.floatops.fsum_rows``) and their exp
correctly rounded to float32 (``refsim.floatops.exp_float32``), so neither depends on the channel
order, the BLAS build or the CPU. rms_norm, rope and silu (the LLaMA family) are in refsim.floatops.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from refsim.floatops import (
    _EXP_MARGIN,
    _exp_decimal_f32,
    exp_f32_bracketed,
    exp_float32_numpy,
    fsum_rows,
    fsum_rows_python,
)
from refsim.threads import row_spans, run_all


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

    (the quotient is taken in float64, then rounded to float32). Compiled, rows split over ``refsim.threads``; the
    specification is ``softmax_numpy`` (the same steps as numpy array operations), equal bit for bit.
    """
    s = np.ascontiguousarray(scores, dtype=np.float32)
    if s.ndim == 0 or s.size == 0:
        return softmax_numpy(s)
    rows = s.reshape(-1, s.shape[-1])
    e = np.empty_like(rows)
    peak = np.empty(rows.shape[0], dtype=np.float32)
    near = np.zeros(rows.shape, dtype=np.bool_)
    spans = row_spans(rows.shape[0], 64)
    run_all(lambda sp: _exp_shifted_rows(rows[sp[0]:sp[1]], e[sp[0]:sp[1]], peak[sp[0]:sp[1]], near[sp[0]:sp[1]],
                                         _EXP_MARGIN), spans)
    for r, j in zip(*np.nonzero(near), strict=True):  # near a float32 rounding boundary: rare, exact
        e[r, j] = _exp_decimal_f32(float(np.float32(rows[r, j] - peak[r])))
    total = fsum_rows(e)
    p = np.empty_like(rows)
    run_all(lambda sp: _divide_rows(e[sp[0]:sp[1]], total[sp[0]:sp[1]], p[sp[0]:sp[1]]), spans)
    return p.reshape(s.shape)


def softmax_numpy(scores) -> np.ndarray:
    """``softmax`` as numpy array operations (its specification and test twin)."""
    s = np.asarray(scores, dtype=np.float32)
    t = (s - s.max(axis=-1, keepdims=True)).astype(np.float32)
    e = exp_float32_numpy(t)
    return (e.astype(np.float64) / fsum_rows_python(e)[..., None]).astype(np.float32)


@numba.njit(cache=True, nogil=True)
def _exp_shifted_rows(s, e, peak, near, margin):
    """peak[r] = max(s[r]) (NaN if any is); e = float32 of exp(fl32(s - peak)) where exp * (1 -+ margin)
    round alike (``refsim.floatops.exp_float32``), near = True where they do not and the argument is finite."""
    for r in range(s.shape[0]):
        m = s[r, 0]
        for j in range(s.shape[1]):
            v = s[r, j]
            if v > m or math.isnan(v):
                m = v
                if math.isnan(v):
                    break
        peak[r] = m
        for j in range(s.shape[1]):
            t = s[r, j] - m  # float32 - float32: rounded to float32
            if t == -np.inf:
                e[r, j] = 0.0
                continue
            e[r, j], near[r, j] = exp_f32_bracketed(t, margin)


@numba.njit(cache=True, nogil=True)
def _divide_rows(e, total, p):
    for r in range(e.shape[0]):
        for j in range(e.shape[1]):
            p[r, j] = np.float32(np.float64(e[r, j]) / total[r])


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
