"""``qmatmul``'s float32 output without its integer sums: per-cluster float32 products, the epilogue fused,
a tile of rows at a time.

The specification is ``refsim.qtensor.qmatmul``: ``qgemm`` materializes the per-cluster sums (C, M, N)
in int64, then ``epilogue`` adds them in float32, clusters ascending, bias last. ``fused_qmatmul``
computes the same y bit for bit and never holds more than one (rows, N) tile of sums:

    for each tile r of rows:   acc = +0.0f
      for c = 0 .. C-1:        S   = (qa[r, k in c] - za[c]) @ (qw[:, k in c] - zw[:, c])^T     float32 BLAS
                               acc = fl32(acc + fl32(fl32(S * s_a[c]) * s_w[:, c]))
      y[r] = fl32(acc + bias)

Why S is the exact sum: the codes' own minimum and maximum bound |qa - za[c]| <= A_c and
|qw - zw[n, c]| <= B_c, so every partial sum of cluster c, in any order, is an integer of magnitude
<= K_c * A_c * B_c. Where that bound is <= 2^24 for every cluster, float32 represents each of those
integers, so no operation of BLAS (any blocking, order or FMA) rounds: S = f32(isum[c]). Where the
bound is also <= 2^(acc_bits - 1) - 1, no accumulator rule (wrap, saturate, raise) changes a sum.
Where either fails, ``fused_qmatmul`` returns None and the caller takes ``qmatmul``.

Speed: the tiles are independent, so they run on a few Python threads (``refsim.threads``) (numpy's BLAS call and the
compiled epilogue release the GIL) with BLAS held to one thread each: small products on a
multi-threaded BLAS spend longer synchronizing its threads than multiplying (docs/benchmarks.md).
Every tile computes the same operations whichever thread runs it, so y does not depend on the count.

Why the epilogue is the reference's: each operation is the same IEEE float32 operation on the same
operands in the same order (the numba kernel is compiled without fast-math, so no multiply-add is
contracted). The reference adds each cluster's term as fl32(0 + t); that differs from t only for
t = -0, and adding -0 or +0 to an accumulator that is never -0 (it starts as +0 and a sum that
cancels to zero is +0 under round-to-nearest) gives the same value.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from refsim.accumulate import acc_limits, spec_acc
from refsim.gemm import FLOAT32_EXACT, _minmax
from refsim.qtensor import BlockOffsetTensor, QuantizedTensor, reduced_clusters, reduced_params
from refsim.spec import NumericsSpec
from refsim.threads import run_all

# Elements per tile (rows x N): the fastest of 2^15 .. 2^20 on the development machine (W4A4 gate_proj).
TILE_ELEMENTS = 1 << 18


@functools.cache
def _blas_limit():
    """The controller that holds BLAS to one thread while the tiles run on the pool's threads."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@numba.njit(cache=True, nogil=True)
def _add_cluster_term(acc, s, sa, sw):
    """acc[i, j] = fl32(acc[i, j] + fl32(fl32(s[i, j] * sa) * sw[j])), float32 throughout."""
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            acc[i, j] = acc[i, j] + (s[i, j] * sa) * sw[j]


@numba.njit(cache=True, nogil=True)
def _centered(q, order, zero, out):
    """out[i, j] = f32(q[i, order[j]]) - zero[j] (zero: float32 per column) in one pass; returns (min, max) of q.
    Exact wherever the bound of the module docstring holds (integers of magnitude <= 2^24)."""
    lo = q[0, 0]
    hi = q[0, 0]
    for i in range(q.shape[0]):
        for j in range(order.size):
            v = q[i, order[j]]
            lo = min(lo, v)
            hi = max(hi, v)
            out[i, j] = np.float32(v) - zero[j]
    return lo, hi


def _exact_in_float32(counts, arange, za, wrange, zw, spec) -> bool:
    """Whether every partial sum of every cluster is an integer float32 holds and the accumulator never
    leaves its range (module docstring), proven from the codes' own (min, max) ``arange`` and ``wrange``."""
    (alo, ahi), (wlo, whi) = (tuple(int(v) for v in r) for r in (arange, wrange))
    za = np.asarray(za, dtype=np.int64)
    zw = np.asarray(zw, dtype=np.int64)
    a_c = np.maximum(np.abs(alo - za), np.abs(ahi - za))  # (C,)
    b_c = np.maximum(np.abs(wlo - zw), np.abs(whi - zw)).max(axis=0)  # (N, C) -> (C,)
    limit = min(FLOAT32_EXACT, acc_limits(spec_acc(spec)[0])[1])
    bound = [int(k) * int(x) * int(y) for k, x, y in zip(counts, a_c, b_c, strict=True)]  # Python ints: no wrap
    return max(bound, default=0) <= limit


@numba.njit(cache=True, nogil=True)
def _mask_above_diagonal(acc, r0):
    """acc[i, j] = -inf for j > r0 + i: row r0 + i of a causal score matrix sees columns 0 .. r0 + i."""
    for i in range(acc.shape[0]):
        for j in range(r0 + i + 1, acc.shape[1]):
            acc[i, j] = -np.inf


@numba.njit(cache=True)
def _zero_above_diagonal(codes, zero):
    """Whether codes[m, k] == zero for every k > m (a causal matrix of probabilities: its terms there are 0)."""
    for m in range(codes.shape[0]):
        for k in range(m + 1, codes.shape[1]):
            if codes[m, k] != zero:
                return False
    return True


def fused_qmatmul(a: QuantizedTensor, w: QuantizedTensor, bias=None, *, spec: NumericsSpec,
                  rows: int | None = None, causal_out: bool = False, causal_in: bool = False) -> np.ndarray | None:
    """y (M, N) float32 of a (M, K) x w (N, K)^T, equal bit for bit to ``qmatmul(a, w, bias, spec=spec)[1]``,
    or None where the module docstring's bound does not prove float32 exact (the caller takes qmatmul).
    Affine tensors only (an SDR or GGUF block product returns None). ``rows``: rows per tile.

    Causal attention skips what it does not need, with the same result where it is read:
    ``causal_out``: y[m, n] = -inf for n > m (the causal mask applied; those outputs are not computed).
    ``causal_in``: a is a causal matrix (probabilities: a[m, k] for k > m is the zero point, checked here;
    one cluster), so row m's sum stops at k = m; where the check fails every k is summed."""
    if not isinstance(spec, NumericsSpec):
        raise TypeError("spec must be a refsim.NumericsSpec")
    if isinstance(w, BlockOffsetTensor) or a.sdr is not None or w.sdr is not None:
        return None
    qa, qw = np.asarray(a.codes), np.asarray(w.codes)
    if qa.ndim != 2 or qw.ndim != 2 or qa.shape[1] != qw.shape[1]:
        raise ValueError(f"a (M, K) and w (N, K) must agree on K, got {qa.shape} and {qw.shape}")
    ids, c = reduced_clusters(a, w)
    sa, za, sw, zw = reduced_params(a, w, c)
    counts = np.bincount(ids, minlength=c)
    if qa.size == 0 or qw.size == 0:
        return None
    m, n = qa.shape[0], qw.shape[0]
    order = np.argsort(ids, kind="stable")  # each cluster's channels contiguous; the sum is exact in any order
    ends = np.cumsum(counts)
    # the centred activations in float32 and the codes' range in one pass (exact once the bound, checked next
    # from that range, holds)
    af = np.empty(qa.shape, dtype=np.float32)
    arange = _centered(qa, order, np.asarray(za, dtype=np.float32)[ids[order]], af)
    if not _exact_in_float32(counts, arange, za, _minmax(qw), zw, spec):
        return None
    k_stop = causal_in and c == 1 and _zero_above_diagonal(qa, int(np.asarray(za).reshape(-1)[0]))
    wf = qw[:, order].astype(np.float32) - np.asarray(zw, dtype=np.float32)[:, ids[order]]
    w_cn = [np.ascontiguousarray(wf[:, e - k:e].T) for k, e in zip(counts, ends, strict=True)]  # (K_c, N)
    sa32 = np.ascontiguousarray(sa, dtype=np.float32)
    sw32 = np.ascontiguousarray(np.asarray(sw, dtype=np.float32).T)  # (C, N)
    b32 = None if bias is None else np.asarray(bias, dtype=np.float32).reshape(-1)
    if b32 is not None and b32.shape != (n,):
        raise ValueError(f"bias must have shape ({n},), got {np.shape(bias)}")
    tile = rows or max(16, TILE_ELEMENTS // max(n, 1))
    y = np.empty((m, n), dtype=np.float32)

    def run_tile(r0):
        r1 = min(m, r0 + tile)
        cols = min(n, r1) if causal_out else n
        acc = np.zeros((r1 - r0, cols), dtype=np.float32)
        for cc in range(c):
            k0, k1 = ends[cc] - counts[cc], ends[cc]
            if k_stop:  # one cluster, identity order: row r0 + i needs k <= r0 + i < r1 only
                k1 = min(k1, r1)
            s = np.matmul(af[r0:r1, k0:k1], w_cn[cc][:k1 - k0, :cols])
            _add_cluster_term(acc, s, sa32[cc], sw32[cc, :cols])
        if b32 is not None:
            np.add(acc, b32[:cols], out=acc)
        if causal_out:
            _mask_above_diagonal(acc, r0)
            y[r0:r1, cols:] = -np.inf
        y[r0:r1, :cols] = acc

    with _blas_limit().limit(limits=1, user_api="blas"):
        run_all(run_tile, range(0, m, tile))
    return y
