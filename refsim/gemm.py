"""Exact integer GEMM under an accumulator rule, and the accumulator bits a product needs.

    C[m, n] = sum_k A[m, k] * B[k, n]       exact, then the accumulator rule (refsim.accumulate)

Operands are integer arrays whose values fit in 16 bits (int16 or uint16 range). The fast
path runs the product on float BLAS and is exact by construction: with |A| <= a, |B| <= b,
each product and every partial sum of a K-chunk is an integer of magnitude at most
chunk * a * b. The chunk is chosen so that bound is <= 2^24 (float32) or <= 2^53 (float64);
every integer of that magnitude is representable, so no operation BLAS performs, in any
order, blocking or with FMA, ever rounds. Chunks are summed in int64. The ``torch`` path
runs torch._int_mm on int8-range operands when K * |a| * |b| < 2^31 bounds every partial
sum, so its int32 accumulator cannot wrap.

The scalar specification is ``refsim.scalar.int_gemm_scalar`` (Python ints, ascending k).
"""

from __future__ import annotations

import functools
import importlib.util
from typing import NamedTuple

import numba
import numpy as np

from refsim.accumulate import (
    acc_limits,
    max_signed_bits,
    sequential_step,
    settle_sequential,
    spec_acc,
    wrap_to,
)
from refsim.checks import check_choice, check_range
from refsim.spec import NumericsSpec

OPERAND_MIN, OPERAND_MAX = -(1 << 15), (1 << 16) - 1
FLOAT32_EXACT = 1 << 24
FLOAT64_EXACT = 1 << 53
INT32_EXACT = 1 << 31
# Below this many multiply-adds ``auto`` stays on float BLAS: importing torch costs more than the product.
AUTO_TORCH_MIN_MACS = 1 << 24


class Operand(NamedTuple):
    """An integer operand in its own dtype (no copy) and proven bounds lo <= every value <= hi.

    ``scanned``: lo and hi are the data's own min and max; otherwise they are the limits of a
    dtype no wider than 16 bits, which prove the range without reading the data.
    """

    values: np.ndarray
    lo: int
    hi: int
    scanned: bool

    @property
    def absmax(self) -> int:
        return max(-self.lo, self.hi)


@numba.njit(cache=True)
def _minmax_flat(x):
    lo = x[0]
    hi = x[0]
    for i in range(x.size):
        v = x[i]
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi


def _minmax(x: np.ndarray) -> tuple[int, int]:
    """(min, max) of an integer array in one pass over its memory, in its own dtype."""
    if x.size == 0:
        return 0, 0
    if x.flags.c_contiguous or x.flags.f_contiguous:
        lo, hi = _minmax_flat(x.ravel(order="K"))  # a view: no copy
    else:
        lo, hi = x.min(), x.max()
    return int(lo), int(hi)


def _operand(x, name) -> Operand:
    x = np.asarray(x)
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-d, got shape {x.shape}")
    info = np.iinfo(x.dtype)
    if OPERAND_MIN <= info.min and info.max <= OPERAND_MAX:
        return Operand(x, int(info.min), int(info.max), False)  # the dtype is the range check
    lo, hi = _minmax(x)
    if lo < OPERAND_MIN or hi > OPERAND_MAX:
        check_range(x, OPERAND_MIN, OPERAND_MAX, name=name, what="(operands are up to 16 bits)")
    return Operand(x, lo, hi, True)


def _scanned(x: Operand) -> Operand:
    """The operand with its data's own range (tighter than its dtype's; one pass, done once)."""
    return x if x.scanned else Operand(x.values, *_minmax(x.values), True)


def _operands(a, b) -> tuple[Operand, Operand]:
    a, b = _operand(a, "a"), _operand(b, "b")
    if a.values.shape[1] != b.values.shape[0]:
        raise ValueError(f"a is {a.values.shape} and b is {b.values.shape}: the inner dimensions (K) differ")
    return a, b


def _int_mm_exact(a: Operand, b: Operand, k: int) -> bool:
    """int8 x int8 -> int32 is exact: both in int8 range and K * |a| * |b| < 2^31 bounds every partial sum."""
    int8 = -128 <= min(a.lo, b.lo) and max(a.hi, b.hi) <= 127
    return int8 and k * a.absmax * b.absmax < INT32_EXACT


def exact_matmul(a, b, *, backend="auto") -> np.ndarray:
    """Exact int64 A @ B of 16-bit operands (see the module docstring for why it is exact)."""
    if not isinstance(a, Operand):
        a, b = _operands(a, b)
    return _exact_matmul(a, b, backend)[0].astype(np.int64, copy=False)


def _exact_matmul(a: Operand, b: Operand, backend) -> tuple[np.ndarray, Operand, Operand]:
    """The exact product (int64, or int32 from torch._int_mm, where every partial sum is proven to fit
    int32) and the operands with the tightest bounds it had to establish.

    Each decision is taken from proven bounds first (an int8 array needs no pass over its data
    to prove that int32 holds K = 2048 of its products); the data is read for its range only
    where the bounds of its dtype do not settle the choice.
    """
    m, k = a.values.shape
    n = b.values.shape[1]
    if m == 0 or n == 0 or k == 0:
        return np.zeros((m, n), dtype=np.int64), a, b
    if backend == "auto":
        backend = "torch" if m * n * k >= AUTO_TORCH_MIN_MACS and _torch_int8_is_fast() else "blas"
    if backend == "torch":
        if not _int_mm_exact(a, b, k):
            a, b = _scanned(a), _scanned(b)
        if _int_mm_exact(a, b, k):
            return _torch_int_mm(a.values, b.values), a, b
    a, b = _scanned(a), _scanned(b)  # the chunk length follows the data's own range
    bound = a.absmax * b.absmax
    if bound == 0:
        return np.zeros((m, n), dtype=np.int64), a, b
    if FLOAT32_EXACT // bound >= min(k, 512):
        dtype, chunk = np.float32, FLOAT32_EXACT // bound
    else:
        dtype, chunk = np.float64, FLOAT64_EXACT // bound
    af = a.values.astype(dtype)
    bf = b.values.astype(dtype)
    if chunk >= k:
        return np.matmul(af, bf).astype(np.int64), a, b
    out = np.empty((m, n), dtype=np.int64)
    for k0 in range(0, k, chunk):
        _add_chunk(out.reshape(-1), np.matmul(af[:, k0:k0 + chunk], bf[k0:k0 + chunk]).reshape(-1), k0 == 0)
    return out, a, b


@numba.njit(cache=True)
def _add_chunk(out, chunk, first):
    """out (+)= int64(chunk) in one pass: each chunk's float sums are exact integers (see above)."""
    for i in range(out.size):
        v = np.int64(chunk[i])
        out[i] = v if first else out[i] + v


@functools.cache
def _torch_int8_capable() -> bool:
    """Whether torch._int_mm has a real int8 kernel on this CPU.

    aten's ``_int_mm_out_cpu`` calls oneDNN only when mkldnn is enabled and the CPU has
    AVX512-VNNI (``at::cpu::is_avx512_vnni_supported``); otherwise it runs a scalar triple
    loop, measured here at under 1 GOPS, far below float32 BLAS (docs/benchmarks.md).
    """
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    vnni = getattr(getattr(torch, "cpu", None), "_is_vnni_supported", None)
    return bool(vnni is not None and vnni() and torch.backends.mkldnn.is_available())


def _torch_int8_is_fast() -> bool:
    if not _torch_int8_capable():
        return False
    import torch

    return bool(torch.backends.mkldnn.enabled)  # a user may switch oneDNN off at run time


def _torch_int_mm(a, b):
    """torch._int_mm (int8 x int8 -> int32, exact while K * |a||b| < 2^31; oneDNN on CPU)."""
    import torch

    m, k = a.shape
    n = b.shape[1]
    # CUDA's _int_mm wants M > 16 and K, N multiples of 8 (older CPU builds too); zero padding
    # leaves the sum unchanged.
    mp, kp, np_ = max(m, 17), -(-k // 8) * 8, -(-n // 8) * 8
    if (mp, kp, np_) == (m, k, n):
        # No copy where the operand already is C-contiguous int8 (torch.from_numpy shares it);
        # a read-only array is copied, since torch only shares writable memory.
        ap, bp = np.ascontiguousarray(a, dtype=np.int8), np.ascontiguousarray(b, dtype=np.int8)
        ap, bp = (x if x.flags.writeable else x.copy() for x in (ap, bp))
    else:
        ap = np.zeros((mp, kp), dtype=np.int8)
        bp = np.zeros((kp, np_), dtype=np.int8)
        ap[:m, :k] = a
        bp[:k, :n] = b
    c = torch._int_mm(torch.from_numpy(ap), torch.from_numpy(bp)).numpy()
    return c[:m, :n]  # int32, exact (the caller proved K * |a||b| < 2^31); widened only where a caller needs it


@numba.njit(cache=True)
def _sequential(a, b, rows, cols, lo, hi, mode):
    """Ascending-k accumulation of the listed outputs. mode 0: saturate; 1: first k out of range."""
    out = np.empty(rows.shape[0], dtype=np.int64)
    for t in range(rows.shape[0]):
        m, n = rows[t], cols[t]
        acc = 0
        first = -1
        for k in range(a.shape[1]):
            acc, first = sequential_step(acc + a[m, k] * b[k, n], lo, hi, mode, first, k)
        out[t] = acc if mode == 0 else first
    return out


def _partial_sum_bounds(a: Operand, b: Operand, backend):
    """(P, N): every partial sum, in any order, lies in [-N, P] (sums of positive / negative products)."""
    av, bv = a.values.astype(np.int64), b.values.astype(np.int64)
    ap, an = np.maximum(av, 0), np.maximum(-av, 0)
    bp, bn = np.maximum(bv, 0), np.maximum(-bv, 0)
    pos = exact_matmul(ap, bp, backend=backend) + exact_matmul(an, bn, backend=backend)
    neg = exact_matmul(ap, bn, backend=backend) + exact_matmul(an, bp, backend=backend)
    return pos, neg


def int_gemm(a, b, *, spec: NumericsSpec, backend="auto") -> np.ndarray:
    """A (M, K) @ B (K, N) of integers up to 16 bits, under the spec's accumulator.

    The accumulator is ``spec.acc_bits`` wide (the result is int32 when acc_bits <= 32, else
    int64) with ``spec.acc_overflow``: ``wrap`` (modulo 2^acc_bits), ``saturate`` (each
    ascending-k partial sum clamped) or ``raise`` (ValueError naming the first (m, n, k) whose
    partial sum leaves the range). No other spec field is read.
    backend: ``blas`` (float BLAS, exact as the module docstring proves),
    ``torch`` (torch._int_mm, int8 x int8 -> int32, for int8-range operands where int32
    cannot overflow; otherwise blas) or ``auto`` (torch for products of at least 2^24 MACs
    where torch._int_mm has its oneDNN kernel, i.e. AVX512-VNNI; else blas, which beats
    torch's fallback loop by far). Every backend returns the same integers; only the speed
    differs. Operands are read in their own dtype: an int8 or int16 array needs no pass over
    its data to prove its range, and one min/max pass serves a wider one.
    ``acc_bits_needed`` tells how wide the accumulator had to be.
    """
    acc_bits, overflow = spec_acc(spec)
    return _as_acc_dtype(accumulate_gemm(a, b, acc_bits=acc_bits, overflow=overflow, backend=backend), acc_bits)


def _as_acc_dtype(c: np.ndarray, acc_bits: int) -> np.ndarray:
    """The accumulator's own width: int32 holds every acc_bits <= 32 result (no copy when it already is)."""
    return c.astype(np.int32, copy=False) if acc_bits <= 32 else c.astype(np.int64, copy=False)


def accumulate_gemm(a, b, *, acc_bits, overflow, backend="auto") -> np.ndarray:
    """``int_gemm`` with the accumulator given as (acc_bits, overflow); internal (the public
    functions take a spec). Returns int64, or int32 where the torch path's int32 result is exact
    and no rule changes it (int_gemm then hands it on without a copy when acc_bits <= 32)."""
    check_choice(backend, ("auto", "blas", "torch"), name="backend")
    a, b = _operands(a, b)
    exact, a, b = _exact_matmul(a, b, backend)
    lo, hi = acc_limits(acc_bits)
    k = a.values.shape[1]
    if k * a.absmax * b.absmax > hi:  # the dtypes' bounds do not settle it: the data's own range may
        a, b = _scanned(a), _scanned(b)
    if k * a.absmax * b.absmax <= hi:  # no partial sum can leave the range: every rule is the identity
        return exact
    exact = exact.astype(np.int64, copy=False)
    if overflow == "wrap":
        return wrap_to(exact, acc_bits)
    pos, neg = _partial_sum_bounds(a, b, backend)
    rows, cols = np.nonzero((pos > hi) | (-neg < lo))  # row-major order
    if rows.size == 0:
        return exact
    mode = 0 if overflow == "saturate" else 1
    av, bv = a.values.astype(np.int64), b.values.astype(np.int64)
    res = _sequential(av, bv, rows.astype(np.int64), cols.astype(np.int64), lo, hi, mode)

    def describe(m, n, k):
        return (f"accumulator overflow at output (m={m}, n={n}), k={k}: the ascending partial sum leaves the "
                f"{acc_bits}-bit range [{lo}, {hi}] (overflow='raise'; the data needs "
                f"{acc_bits_needed(av, bv).partial} bits)")

    return settle_sequential(exact, rows, cols, res, overflow, describe)


class AccBitsNeeded(NamedTuple):
    """Signed accumulator widths, each sufficient for a different rule.

    final:   bits of the largest final value; enough for a wrap accumulator (wrap is
             associative, so intermediate overflow cancels).
    partial: bits of the largest ascending-k partial sum; enough for a saturating or
             raising accumulator that sums in ascending k.
    bound:   bits of max(sum of positive products, sum of negative products) per output;
             enough in any summation order.
    """

    final: int
    partial: int
    bound: int


@numba.njit(cache=True)
def _prefix_extremes(a, b):
    lo = 0
    hi = 0
    for m in range(a.shape[0]):
        for n in range(b.shape[1]):
            acc = 0
            for k in range(a.shape[1]):
                acc += a[m, k] * b[k, n]
                if acc > hi:
                    hi = acc
                elif acc < lo:
                    lo = acc
    return lo, hi


def acc_bits_needed(a, b) -> AccBitsNeeded:
    """The accumulator bits this data needed (see ``AccBitsNeeded``); costs one pass of M*N*K."""
    a, b = _operands(a, b)
    exact = exact_matmul(a, b)
    pos, neg = _partial_sum_bounds(a, b, "blas")
    lo, hi = _prefix_extremes(a.values.astype(np.int64), b.values.astype(np.int64))
    bound = max(max_signed_bits(pos), max_signed_bits(-neg))
    partial = max_signed_bits(np.array([lo, hi]))
    return AccBitsNeeded(final=max_signed_bits(exact), partial=partial, bound=bound)


def acc_bits_worst_case(k, a_range, b_range) -> int:
    """Proven bound: signed bits that hold any sum of ``k`` products of a in a_range, b in b_range.

    The extreme products are among the four corner products; the sum of k of them lies in
    [k * min_product, k * max_product]. (E.g. int16 x int4 symmetric at K = 14336.)
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r} is not allowed; allowed: a positive integer")
    corners = [x * y for x in a_range for y in b_range]
    return max_signed_bits(np.array([int(k) * min(corners), int(k) * max(corners)], dtype=np.int64))


def cluster_int_gemm(a_codes, a_zero, b_codes, b_zero, clusters, *, n_clusters=None, spec: NumericsSpec,
                     backend="auto") -> np.ndarray:
    """Per-cluster integer sums with exact zero-point correction (RPTQ's W·A GEMM), (C, M, N).

    The accumulator is the spec's (``spec.acc_bits``, ``spec.acc_overflow``); the sums are
    int32 when acc_bits <= 32, else int64. The clusters are summed separately, in ascending
    cluster id; the epilogue (``refsim.float_epilogue``) adds them in that order, bias last.

        isum[c, m, n] = sum over k with clusters[k] == c, ascending, of
                        (a[m, k] - a_zero[c]) * (b[k, n] - b_zero[c, n])

    ``a`` (M, K) are activation codes with one zero point per cluster (``a_zero`` of shape (C,)
    or a scalar); ``b`` (K, N) are weight codes with zero points per output column (N,), per
    (cluster, column) (C, N) as RPTQ's per-output-row x per-input-cluster weights, or a scalar.
    ``n_clusters`` defaults to max(clusters) + 1; give it when trailing clusters may be empty
    (their sums are 0). Each cluster's sum is an ``int_gemm`` of the corrected operands under
    the accumulator rule. RPTQ zero points may lie far outside the code range (a cluster whose
    range excludes 0), so a - a_zero can leave 16 bits; under ``wrap`` such a cluster is
    computed as a @ b' - a_zero * colsum(b'), b' = b - b_zero, exact in int64 and then wrapped
    (wrap is associative, so this equals the corrected MAC sequence); ``saturate`` and ``raise``
    need the corrected products themselves and refuse it. The float epilogue
    (``refsim.float_epilogue``) turns the sums into outputs.
    """
    from refsim.checks import as_int_array

    acc_bits, overflow = spec_acc(spec)
    a = as_int_array(a_codes, name="a_codes")
    b = as_int_array(b_codes, name="b_codes")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"a_codes (M, K) and b_codes (K, N) must agree on K, got {a.shape} and {b.shape}")
    c = as_int_array(clusters, name="clusters")
    if c.shape != (a.shape[1],):
        raise ValueError(f"clusters must have shape ({a.shape[1]},) (one id per K channel), got {c.shape}")
    if n_clusters is None:
        n_clusters = int(c.max()) + 1 if c.size else 0
    elif isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters < 1:
        raise ValueError(f"n_clusters={n_clusters!r} is not allowed; allowed: a positive integer")
    check_range(c, 0, max(int(n_clusters) - 1, 0), name="clusters", what=f"(n_clusters={n_clusters})")
    za = as_int_array(a_zero, name="a_zero").reshape(-1)
    if za.size == 1:
        za = np.broadcast_to(za, (n_clusters,))
    if za.shape != (n_clusters,):
        raise ValueError(f"a_zero must be a scalar or have shape ({n_clusters},) (one per cluster), got {za.shape}")
    zb = as_int_array(b_zero, name="b_zero")
    n = b.shape[1]
    if zb.size == 1:
        zb = np.full((n_clusters, n), int(zb.reshape(-1)[0]), dtype=np.int64)
    elif zb.shape == (n,):
        zb = np.broadcast_to(zb, (n_clusters, n))
    elif zb.shape != (n_clusters, n):
        raise ValueError(f"b_zero must be a scalar, ({n},) or ({n_clusters}, {n}), got {zb.shape}")
    out = np.zeros((n_clusters, a.shape[0], n), dtype=np.int64)
    for k in range(n_clusters):
        idx = np.nonzero(c == k)[0]
        ak, bk = a[:, idx] - za[k], b[idx] - zb[k]
        lo_a, hi_a = (int(ak.min()), int(ak.max())) if ak.size else (0, 0)
        if lo_a >= OPERAND_MIN and hi_a <= OPERAND_MAX or overflow != "wrap":
            out[k] = accumulate_gemm(ak, bk, acc_bits=acc_bits, overflow=overflow, backend=backend)
        else:
            exact = exact_matmul(a[:, idx], bk, backend=backend) - int(za[k]) * bk.sum(axis=0)
            out[k] = wrap_to(exact, acc_bits)
    return _as_acc_dtype(out, acc_bits)
