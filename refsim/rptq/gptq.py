"""GPTQ weight quantization (arXiv 2210.17323), following IST-DASLab ``gptq.py`` (torch, CPU).

    H = 2/n * sum_b X_b X_b^T        (n counts calibration sequences, as ``GPTQ.add_batch``)
    dead columns (H_jj = 0): H_jj = 1, W[:, j] = 0
    act-order: columns by descending diag(H)
    H += 0.01 * mean(diag(H)) * I;   U = cholesky(H^-1, upper)
    for each block of 128 columns, for each column j in it:
        (group start: parameters from the current weights of the group's columns, or the
         static ones computed from the original W before any update)
        q_j = dequant(quant(w_j));  err = (w_j - q_j) / U_jj
        W[:, j:block end] -= err U[j, j:block end];     then once per block:
        W[:, block end:] -= Err U[block, block end:]      (lazy batch update)

The integer quantizer is refsim's: ``refsim.gptq_params`` (per output row over the group's
columns) and ``refsim.quantize(..., spec=preset("gptq"))``, dequantization
``refsim.dequantize`` (s * (q - z) in float32), so the codes agree with the reference bit for
bit; the error-feedback loop itself is float torch code (deterministic on one platform).

Groups: ``groupsize`` (consecutive columns, as published) or ``groups`` (a group id per
column, each group contiguous: RPTQ's per output row x per input cluster parameters on a
reordered layer). Like the published code, a group's parameters are found when the loop
reaches its first column, from the outer W, which has received the updates of earlier
blocks but not yet those of the current block.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

import refsim
from refsim.qtensor import gptq_form_quantize


class GPTQResult(NamedTuple):
    """codes (rows, cols) uint8 in [0, 2^bits - 1]; scale, zero (rows, G); g_idx (cols,) group of each column;
    bits. ``qtensor()`` is the same weight as a ``refsim.qtensor.QuantizedTensor`` (N, K), per row x group."""

    codes: np.ndarray
    scale: np.ndarray
    zero: np.ndarray
    g_idx: np.ndarray
    bits: int | None = None

    def qtensor(self):
        from refsim.qtensor import weight_tensor

        if self.bits is None:
            raise ValueError("this GPTQResult does not record its bits; build it with bits=")
        return weight_tensor(self.codes.astype(np.int32), self.scale, self.zero, self.g_idx, bits=self.bits)

    def dequantize(self) -> np.ndarray:
        return refsim.dequantize(self.codes.astype(np.int32), self.scale, self.zero, axis=1, clusters=self.g_idx)


class Hessian:
    """Running H = 2/n sum X X^T over calibration batches (IST-DASLab ``GPTQ.add_batch``)."""

    def __init__(self, columns: int):
        import torch

        self.h = torch.zeros(columns, columns, dtype=torch.float32)
        self.nsamples = 0

    def add_batch(self, inp) -> None:
        import torch

        inp = torch.as_tensor(inp)
        n = inp.shape[0] if inp.dim() == 3 else 1  # sequences in the batch
        x = inp.reshape(-1, inp.shape[-1]).t().float()
        if x.shape[0] != self.h.shape[0]:
            raise ValueError(f"input has {x.shape[0]} channels, the Hessian {self.h.shape[0]}")
        self.h *= self.nsamples / (self.nsamples + n)
        self.nsamples += n
        x = math.sqrt(2 / self.nsamples) * x
        self.h += x.matmul(x.t())


def _check(bits, blocksize, percdamp):
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"bits={bits!r} is not allowed; allowed: an integer in 2..8")
    if not isinstance(blocksize, int) or blocksize < 1:
        raise ValueError(f"blocksize={blocksize!r} is not allowed; allowed: a positive integer")
    if not 0 <= percdamp < 1:
        raise ValueError(f"percdamp={percdamp!r} is not allowed; allowed: 0 <= percdamp < 1")


def _group_ids(cols, groupsize, groups):
    if groups is not None:
        if groupsize is not None:
            raise ValueError("give groupsize or groups, not both")
        g = np.asarray(groups, dtype=np.int64)
        if g.shape != (cols,):
            raise ValueError(f"groups must have shape ({cols},), got {g.shape}")
        if g.size and (g[0] != 0 or np.any(np.diff(g) < 0) or np.any(np.diff(g) > 1)):
            raise ValueError("groups must be contiguous ids 0, 0, ..., 1, 1, ... (reorder the layer first)")
        return g
    if groupsize is None:
        return np.zeros(cols, dtype=np.int64)
    if isinstance(groupsize, bool) or not isinstance(groupsize, int) or groupsize < 1:
        raise ValueError(f"groupsize={groupsize!r} is not allowed; allowed: a positive integer or None")
    return np.arange(cols, dtype=np.int64) // groupsize


class _Params:
    def __init__(self, w, bits, sym):
        wn = w.numpy()
        self.scale, self.zero = refsim.gptq_params(wn.min(axis=1), wn.max(axis=1), bits=bits, sym=sym,
                                                   spec=refsim.preset("gptq"))


def _quant_column(w, p: _Params, bits):
    import torch

    wn = w.numpy().astype(np.float32)
    qt = gptq_form_quantize(wn, p.scale, p.zero, bits=bits, axis=0)
    return qt.codes, torch.from_numpy(qt.dequantize().astype(wn.dtype)).to(w.dtype)


def gptq_quantize(weight, hessian, *, bits=4, sym=False, groupsize=None, groups=None, act_order=False,
                  static_groups=False, blocksize=128, percdamp=0.01, dtype="float32") -> GPTQResult:
    """GPTQ codes of ``weight`` (rows, cols) given the Hessian (cols, cols) of its inputs.

    groupsize / groups: parameter groups along the input columns (None: one per row).
    act_order: columns in descending diag(H) order; with ``groups`` it needs static_groups.
    dtype: torch dtype of the loop (float32 as published; float64 for checking).
    """
    import torch

    _check(bits, blocksize, percdamp)
    tdt = {"float32": torch.float32, "float64": torch.float64}.get(dtype)
    if tdt is None:
        raise ValueError(f"dtype={dtype!r} is not allowed; allowed: 'float32', 'float64'")
    W = torch.as_tensor(np.asarray(weight)).to(tdt).clone()
    H = torch.as_tensor(np.asarray(hessian) if not torch.is_tensor(hessian) else hessian).to(tdt).clone()
    rows, cols = W.shape
    if H.shape != (cols, cols):
        raise ValueError(f"hessian must have shape ({cols}, {cols}), got {tuple(H.shape)}")
    if not torch.isfinite(W).all() or not torch.isfinite(H).all():
        raise ValueError("weight and hessian must be finite")
    g_idx = _group_ids(cols, groupsize, groups)
    if act_order and groups is not None and not static_groups:
        raise ValueError("act_order with groups (clusters) needs static_groups=True: a cluster is a fixed set "
                         "of input channels")
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    n_groups = int(g_idx.max()) + 1 if cols else 0
    static = None
    if static_groups:
        static = [_Params(W[:, g_idx == g], bits, sym) for g in range(n_groups)]
    perm = np.arange(cols)
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True, stable=True).numpy()
        W, H = W[:, perm], H[perm][:, perm]
        if groups is None and not static_groups and groupsize is not None:
            g_idx = np.empty(cols, dtype=np.int64)
            g_idx[perm] = np.arange(cols) // groupsize  # groups formed in act order (published g_idx)
    g_loop = g_idx[perm]  # group of loop column j
    starts = np.ones(cols, dtype=bool)
    starts[1:] = g_loop[1:] != g_loop[:-1]
    damp = percdamp * torch.mean(torch.diag(H))
    idx = torch.arange(cols)
    H[idx, idx] += damp
    L = torch.linalg.cholesky(H)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)

    codes = np.zeros((rows, cols), dtype=np.int32)
    scale = np.zeros((rows, n_groups), dtype=np.float32)
    zero = np.zeros((rows, n_groups), dtype=np.int32)
    params = None
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            g = int(g_loop[j])
            if static is not None:
                params = static[g]
            elif starts[j]:
                span = np.nonzero(g_loop == g)[0]
                params = _Params(W[:, span[0]:span[-1] + 1], bits, sym)
            scale[:, g], zero[:, g] = params.scale, params.zero
            w = W1[:, i]
            q, deq = _quant_column(w, params, bits)
            codes[:, perm[j]] = q
            err = (w - deq) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return GPTQResult(codes.astype(np.uint8), scale, zero, g_idx, int(bits))


def rtn_quantize(weight, *, bits=4, sym=False, groupsize=None, groups=None) -> GPTQResult:
    """Round to nearest with the same parameter rule and groups (the GPTQ baseline)."""
    w = np.asarray(weight, dtype=np.float32)
    rows, cols = w.shape
    g_idx = _group_ids(cols, groupsize, groups)
    n_groups = int(g_idx.max()) + 1
    lo = np.stack([w[:, g_idx == g].min(axis=1) for g in range(n_groups)], axis=1)
    hi = np.stack([w[:, g_idx == g].max(axis=1) for g in range(n_groups)], axis=1)
    s, z = refsim.gptq_params(lo, hi, bits=bits, sym=sym, spec=refsim.preset("gptq"))
    q = gptq_form_quantize(w, s, z, bits=bits, axis=1, clusters=g_idx).codes
    return GPTQResult(q.astype(np.uint8), s.astype(np.float32), z.astype(np.int32), g_idx, int(bits))


def gptq_scalar(weight, hessian, *, bits=4, sym=False, percdamp=0.01) -> np.ndarray:
    """The specification, one column at a time with no lazy batches (float64 numpy, one group per row):

    U = upper Cholesky factor of (H + damp I)^-1; for j = 0 .. cols-1:
        q_j = quant(w_j); W[:, k] -= (w_j - deq(q_j)) / U_jj * U_jk  for every k > j.
    Returns the codes. Equal to ``gptq_quantize(..., dtype="float64")`` up to float rounding
    (their codes agree unless a value lies within ~1e-12 of a rounding boundary).
    """
    W = np.array(weight, dtype=np.float64)
    H = np.array(hessian, dtype=np.float64)
    cols = W.shape[1]
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H = H + percdamp * np.mean(np.diag(H)) * np.eye(cols)
    U = np.linalg.cholesky(np.linalg.inv(H)).T  # upper: U^T U = H^-1
    wq = W.astype(np.float32)
    s, z = refsim.gptq_params(wq.min(axis=1), wq.max(axis=1), bits=bits, sym=sym, spec=refsim.preset("gptq"))
    codes = np.zeros(W.shape, dtype=np.int32)
    for j in range(cols):
        qt = gptq_form_quantize(W[:, j], s, z, bits=bits, axis=0)
        q, deq = qt.codes, qt.dequantize().astype(np.float64)
        codes[:, j] = q
        err = (W[:, j] - deq) / U[j, j]
        W[:, j + 1:] -= np.outer(err, U[j, j + 1:])
    return codes
