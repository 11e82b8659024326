"""Scalar twins (the specification) of the per-cluster integer GEMM and its float32 epilogue.

Plain Python ints and numpy float32 scalars, one output at a time, written from the formulas:

    isum[c, m, n] = sum over k with ids[k] == c, ascending, of (qa[m, k] - za[c]) * (qb[n, k] - zb[n, c])
    y[m, n]       = acc after: acc = 0.0f; for c ascending: acc = acc + (f32(isum) * s_a[c]) * s_b[n, c];
                    then acc + bias[n]

The accumulator rule is the 64-bit exact sum here (the fast path's ``wrap`` at 64 bits).
"""

from __future__ import annotations

import numpy as np


def cluster_isum_scalar(qa, za, qb, zb, ids, c, m, n) -> int:
    total = 0
    for k in range(len(ids)):
        if int(ids[k]) == c:
            total += (int(qa[m][k]) - int(za[c])) * (int(qb[n][k]) - int(zb[n][c]))
    return total


def cluster_matmul_scalar(qa, za, sa, qb, zb, sb, ids, n_clusters, bias=None):
    """(isums as nested lists [c][m][n] of ints, y as a float32 array (M, N))."""
    m_count, n_count = len(qa), len(qb)
    isums = [[[cluster_isum_scalar(qa, za, qb, zb, ids, c, m, n) for n in range(n_count)]
              for m in range(m_count)] for c in range(n_clusters)]
    y = np.zeros((m_count, n_count), dtype=np.float32)
    for m in range(m_count):
        for n in range(n_count):
            acc = np.float32(0.0)
            for c in range(n_clusters):
                term = np.float32(np.float32(isums[c][m][n]) * np.float32(sa[c])) * np.float32(sb[n][c])
                acc = np.float32(acc + np.float32(term))
            if bias is not None:
                acc = np.float32(acc + np.float32(bias[n]))
            y[m, n] = acc
    return isums, y
