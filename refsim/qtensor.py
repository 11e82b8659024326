"""The quantized tensor: integer codes with the parameters, granularity and spec that give them meaning.

A ``QuantizedTensor`` is what every quantizer of the reference returns and what the one exact
GEMM (``qgemm``) and the one float epilogue (``epilogue``) consume:

    x ~ dequantize(q) = fl(fl(q - z) * fl(s))                 (``refsim.dequantize``)

with the scale s and zero point z broadcast by the granularity (DESIGN.md "Quantizers"):

    TENSOR   one (s, z)
    AXIS     one (s, z) per index of ``axis``                  (per channel / per output row)
    BLOCK    one (s, z) per ``block_size`` elements along ``axis`` (ragged last block as ONNX)
    CLUSTER  one (s, z) per cluster; ``clusters[k]`` is the cluster of index k along ``axis``
             (RPTQ: contiguous after reordering; scattered on the logical layout). The
             parameters are (C,), or (N, C) for a weight (N, K) with one pair per output row x
             input cluster (RPTQ / GPTQ with groups)

An SDR-razored tensor (QRazor, ``sdr_quantize``) keeps the same fields: ``codes`` are the SDR
sign-magnitude codes, ``sdr`` holds the per-group shift flags, the group size, the kept
magnitude bits and the base-precision integers before razoring; its value is
fl(decode(codes, flags) * s) with decode(c, f) = sign * (|c| << f) (``refsim.sdr_decode``).

Weights are (N, K) at every boundary, as in torch's ``nn.Linear``: ``qgemm(a, w)`` computes
a (M, K) x w (N, K)^T. The primitives that take (K, N) are called here, once each
(``_cluster_int_gemm``, ``_sdr_gemm``), so no caller transposes.

Every call into the numerics primitives that take accumulator / rounding / parameter knobs goes
through the few private functions at the top of this module (``_rptq_params``, ``_quantize``,
``_cluster_int_gemm``, ``_sdr_encode``, ``_sdr_gemm``): they are where the spec's fields become
the primitives' arguments.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from refsim.spec import NumericsSpec, preset


class Granularity(enum.Enum):
    TENSOR = "tensor"
    AXIS = "axis"
    BLOCK = "block"
    CLUSTER = "cluster"


@dataclass(frozen=True, eq=False)
class SDRFields:
    """The razoring part of an SDR tensor: flags (one per group of ``group_size`` along ``axis``),
    kept magnitude bits, base precision, and the base-precision integers the codes came from."""

    flags: np.ndarray
    group_size: int
    keep: int
    base_bits: int
    base: np.ndarray
    axis: int
    rounding: str = "half_up"


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """Codes plus everything needed to read them (module docstring). Frozen; arrays are not copied."""

    codes: np.ndarray
    scale: np.ndarray
    zero: np.ndarray
    granularity: Granularity
    bits: int
    signed: bool
    spec: NumericsSpec
    axis: int | None = None
    block_size: int | None = None
    clusters: np.ndarray | None = None
    sdr: SDRFields | None = None
    layout: str | None = None
    words: np.ndarray | None = None

    def __post_init__(self):
        if not isinstance(self.granularity, Granularity):
            raise TypeError(f"granularity must be a Granularity, got {self.granularity!r}")
        if self.granularity is not Granularity.TENSOR and self.axis is None:
            raise ValueError(f"granularity {self.granularity.value} needs an axis")
        if self.granularity is Granularity.BLOCK and not self.block_size:
            raise ValueError("granularity block needs block_size")
        if self.granularity is Granularity.CLUSTER and self.clusters is None:
            raise ValueError("granularity cluster needs clusters (one id per index along axis)")

    @property
    def shape(self):
        return self.codes.shape

    @property
    def n_clusters(self) -> int:
        """Parameter groups along the reduced axis: C for CLUSTER, else 1."""
        if self.granularity is Granularity.CLUSTER:
            return int(np.asarray(self.scale).shape[-1])
        return 1

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        """fl(fl(q - z) * fl(s)) in ``dtype``; SDR: fl(decode(codes, flags) * s)."""
        import refsim

        if self.sdr is not None:
            q = refsim.sdr_decode(self.codes, self.sdr.flags, group_size=self.sdr.group_size, axis=self.sdr.axis)
            return refsim.dequantize(q, self.scale, axis=self.axis if self.granularity is Granularity.AXIS else None,
                                     dtype=dtype)
        kw = {}
        if self.granularity is Granularity.AXIS:
            kw = dict(axis=self.axis)
        elif self.granularity is Granularity.BLOCK:
            kw = dict(axis=self.axis, block_size=self.block_size)
        elif self.granularity is Granularity.CLUSTER:
            kw = dict(axis=self.axis, clusters=self.clusters)
        return refsim.dequantize(self.codes, self.scale, self.zero, dtype=dtype, **kw)

    def pack(self, layout, *, axis=-1) -> "QuantizedTensor":
        """The same tensor with its codes packed in ``layout`` (``refsim.layouts.pack``): ``words`` holds
        the packed bytes, ``layout`` the layout's name. ``unpacked()`` gives the codes back."""
        from refsim.layouts import get_layout, pack

        lay = get_layout(layout)
        if self.sdr is not None:
            raise ValueError("an SDR tensor packs its codes and flags as two streams (docs/sdr.md); "
                             "pack qt.codes and qt.sdr.flags with refsim.pack")
        words = pack(self.codes, lay, axis=axis, signed=self.signed)
        return replace(self, layout=lay.name, words=words)

    def unpacked(self, *, axis=-1) -> np.ndarray:
        """The codes read back from ``words`` (``refsim.layouts.unpack``); equal to ``codes``."""
        from refsim.layouts import unpack

        if self.words is None:
            raise ValueError("the tensor is not packed; call pack(layout) first")
        return unpack(self.words, self.layout, self.codes.shape[axis], axis=axis, signed=self.signed)

    def head(self, sl: slice, *, axis=-1) -> "QuantizedTensor":
        """The channels ``sl`` along the cluster axis, with their clusters renumbered from 0 and only the
        parameters of the clusters they cover (one attention head of a per-head reorder: contiguous)."""
        if self.granularity is not Granularity.CLUSTER:
            raise ValueError("head() slices a cluster-granular tensor")
        cid = np.asarray(self.clusters)[sl]
        lo, hi = int(cid.min()), int(cid.max()) + 1
        codes = np.asarray(self.codes)
        idx = [slice(None)] * codes.ndim
        idx[axis] = sl
        return replace(self, codes=codes[tuple(idx)], scale=np.asarray(self.scale)[..., lo:hi],
                       zero=np.asarray(self.zero)[..., lo:hi], clusters=cid - lo, layout=None, words=None)


# ---------------------------------------------------------------------------------------------
# the calls into the numerics primitives (one place each: the spec helper's signatures land here)

def _rptq_params(lo, hi, *, bits, spec: NumericsSpec):
    import refsim

    return refsim.rptq_params(lo, hi, bits=bits, spec=spec)


def _quantize(x, scale, zero=0, *, bits, spec, signed=None, narrow=None, **kw):
    """``refsim.quantize`` under ``spec`` with the code range a quantizer fixes (signed / narrow) written in."""
    import refsim

    fixed = {k: bool(v) for k, v in (("signed", signed), ("narrow", narrow)) if v is not None}
    spec = spec.replace(**fixed) if fixed else spec
    if all(v is None for v in kw.values()):  # one (s, z): a large tensor's codes come from its thresholds
        from refsim.code_thresholds import quantize_tensor

        return quantize_tensor(x, scale, zero, bits=bits, spec=spec)
    return refsim.quantize(x, scale, zero, bits=bits, spec=spec, **kw)


def _cluster_int_gemm(a_codes, a_zero, b_codes_kn, b_zero_cn, ids, *, spec):
    import refsim

    return refsim.cluster_int_gemm(a_codes, a_zero, b_codes_kn, b_zero_cn, ids, spec=spec)


def _sdr_encode(base, *, group_size, base_bits, keep, axis, spec):
    import refsim

    return refsim.sdr_encode(base, group_size=group_size, base_bits=base_bits, keep=keep, axis=axis, spec=spec)


def _sdr_gemm(a_codes, a_flags, b_codes_kn, b_flags_kn, *, group_size, spec):
    import refsim

    return refsim.sdr_gemm(a_codes, a_flags, b_codes_kn, b_flags_kn, group_size=group_size, spec=spec)


# ---------------------------------------------------------------------------------------------
# quantizers

def cluster_ranges(ch_min, ch_max, ids, n_clusters=None):
    """Per-cluster (min of mins, max of maxes) of per-channel ranges (``refsim.rptq.cluster.cluster_minmax``)."""
    from refsim.rptq.cluster import cluster_minmax

    ids = np.asarray(ids, dtype=np.int64)
    n = int(ids.max()) + 1 if n_clusters is None else int(n_clusters)
    return cluster_minmax(ch_min, ch_max, ids, n)


def rptq_quantize(x, cluster_min, cluster_max, ids, *, bits, axis=-1, spec: NumericsSpec | None = None
                  ) -> QuantizedTensor:
    """RPTQ min-max per cluster (DESIGN.md "Min-max asymmetric, RPTQ form"), the one recipe:

        s_c, z_c = rptq_params(min_c, max_c, bits)        (compute dtype of the spec: fp16 for ``rptq``)
        q = clamp(round(x / s_c) + z_c)                   for every channel k along ``axis`` in cluster ids[k]

    cluster_min / cluster_max (C,) are the clusters' calibration ranges (``cluster_ranges`` of the
    per-channel ones); ids (K,) is each channel's cluster, in any order. ``spec`` defaults to the
    ``rptq`` preset. One cluster (ids all 0) is per-tensor quantization.
    """
    spec = preset("rptq") if spec is None else spec
    ids = np.asarray(ids, dtype=np.int64)
    s, z = _rptq_params(cluster_min, cluster_max, bits=bits, spec=spec)
    codes = _quantize(x, s, z, bits=bits, axis=axis, clusters=ids, spec=spec)
    return QuantizedTensor(codes, s, z, Granularity.CLUSTER, bits, bool(spec.signed), spec, axis=axis, clusters=ids)


def rptq_fake_quant(x, ch_min, ch_max, ids, *, bits, spec=None) -> np.ndarray:
    """float32 dequantize(rptq_quantize(x, per-cluster ranges of the channels' ranges)) of x (T, K)."""
    lo, hi = cluster_ranges(ch_min, ch_max, ids)
    return rptq_quantize(x, lo, hi, ids, bits=bits, spec=spec).dequantize()


def fixed_quantize(x, scale, zero=0, *, bits, signed=None, spec: NumericsSpec) -> QuantizedTensor:
    """One given (s, z) for the whole tensor (e.g. RPTQ's softmax probabilities: s = fp16(1/255), z = 0,
    ``signed=False``); ``signed`` defaults to the spec's."""
    signed = bool(spec.signed) if signed is None else bool(signed)
    codes = _quantize(x, scale, zero, bits=bits, signed=signed, spec=spec)
    return QuantizedTensor(codes, np.asarray(scale), np.asarray(zero), Granularity.TENSOR, bits, signed, spec)


def absmax_quantize(x, scale, *, bits, axis=None, spec: NumericsSpec | None = None) -> QuantizedTensor:
    """Symmetric absmax (QRazor's base precision): q = clamp(round(x / s), -(2^(b-1) - 1), 2^(b-1) - 1), with
    s = ``refsim.absmax_params`` of the calibrated max (per tensor, or per index of ``axis``); the ``qrazor``
    preset (narrow signed range) by default."""
    spec = preset("qrazor") if spec is None else spec
    codes = _quantize(x, scale, bits=bits, axis=axis, signed=True, narrow=True, spec=spec)
    gran = Granularity.TENSOR if axis is None else Granularity.AXIS
    return QuantizedTensor(codes, np.asarray(scale, dtype=np.float32), np.zeros((), np.int64), gran, bits, True,
                           spec, axis=axis)


def sdr_quantize(x, scale, *, base_bits, keep, group_size, axis, scale_axis=None,
                 spec: NumericsSpec | None = None) -> QuantizedTensor:
    """QRazor: absmax base precision (``absmax_quantize``), then SDR per group of ``group_size`` along
    ``axis`` (``refsim.sdr_encode``, rounding spec.sdr_rounding): codes = sign + ``keep`` magnitude bits, one
    4-bit shift flag per group."""
    base = absmax_quantize(x, scale, bits=base_bits, axis=scale_axis, spec=spec)
    spec, rounding = base.spec, base.spec.sdr_rounding.value
    ax = axis % base.codes.ndim
    codes, flags = _sdr_encode(base.codes, group_size=group_size, base_bits=base_bits, keep=keep, axis=ax,
                               spec=spec)
    return replace(base, codes=codes, bits=keep + 1,
                   sdr=SDRFields(flags, int(group_size), int(keep), int(base_bits), base.codes, ax, rounding))


def gptq_form_quantize(w, scale, zero, *, bits, axis, clusters=None, spec: NumericsSpec | None = None
                       ) -> QuantizedTensor:
    """GPTQ form (IST-DASLab ``quant.py``): q = clamp(round(w / s) + z, 0, 2^bits - 1), unsigned, with (s, z)
    from ``refsim.gptq_params`` per index of ``axis`` (per output row) or per (row, group) with ``clusters``
    (the group of each input column); the ``gptq`` preset by default."""
    spec = preset("gptq") if spec is None else spec
    if clusters is None:
        codes = _quantize(w, scale, zero, bits=bits, signed=False, axis=axis, spec=spec)
        return QuantizedTensor(codes, np.asarray(scale), np.asarray(zero), Granularity.AXIS, int(bits), False, spec,
                               axis=axis)
    ids = np.asarray(clusters, dtype=np.int64)
    codes = _quantize(w, scale, zero, bits=bits, signed=False, axis=axis, clusters=ids, spec=spec)
    return QuantizedTensor(codes, np.asarray(scale), np.asarray(zero), Granularity.CLUSTER, int(bits), False, spec,
                           axis=axis, clusters=ids)


def weight_tensor(codes, scale, zero, ids, *, bits, spec: NumericsSpec | None = None) -> QuantizedTensor:
    """GPTQ-form weight codes (N, K), unsigned, with (s, z) per output row x input cluster (N, C)."""
    spec = preset("gptq") if spec is None else spec
    return QuantizedTensor(np.asarray(codes), np.asarray(scale), np.asarray(zero), Granularity.CLUSTER, int(bits),
                           False, spec, axis=1, clusters=np.asarray(ids, dtype=np.int64))


# ---------------------------------------------------------------------------------------------
# the exact GEMM and the epilogue

def _reduced_params(t: QuantizedTensor, rows: int, c: int, *, weight: bool):
    """(scale, zero) of ``t`` as (C,) for the activation side or (N, C) for the weight side."""
    s, z = np.asarray(t.scale), np.asarray(t.zero)
    if not weight:
        return np.broadcast_to(s.reshape(-1), (c,)), np.broadcast_to(z.reshape(-1), (c,))
    if t.granularity is Granularity.TENSOR:
        return np.broadcast_to(s.reshape(1, 1), (rows, c)), np.broadcast_to(z.reshape(1, 1), (rows, c))
    if t.granularity is Granularity.AXIS and t.axis % 2 == 0:  # one pair per row n (on the output axis)
        return (np.broadcast_to(np.asarray(s, np.float32).reshape(-1, 1), (rows, 1)),
                np.broadcast_to(z.reshape(-1, 1), (rows, 1)))
    if s.ndim == 1 and t.granularity is Granularity.CLUSTER:  # one pair per cluster, shared by all rows
        return np.broadcast_to(s, (rows, c)), np.broadcast_to(z, (rows, c))
    return np.broadcast_to(s.reshape(rows, -1), (rows, c)), np.broadcast_to(z.reshape(rows, -1), (rows, c))


def reduced_clusters(a: QuantizedTensor, w: QuantizedTensor) -> tuple[np.ndarray, int]:
    """(ids (K,), C): the cluster of each index of the reduced axis of a (M, K) x w (N, K)^T, and their count
    (the activation's clusters, else the weight's input clusters, else one)."""
    k = a.codes.shape[1]
    if a.granularity is Granularity.CLUSTER:
        ids, c = np.asarray(a.clusters, dtype=np.int64), a.n_clusters
    elif w.granularity is Granularity.CLUSTER and w.axis in (1, -1):
        ids, c = np.asarray(w.clusters, dtype=np.int64), w.n_clusters
    else:
        ids, c = np.zeros(k, np.int64), 1
    if ids.size and int(ids.max()) + 1 != c:
        raise ValueError(f"ids name {int(ids.max()) + 1} clusters, expected n_clusters={c}")
    return ids, c


def reduced_params(a: QuantizedTensor, w: QuantizedTensor, c: int):
    """(s_a (C,), z_a (C,), s_w (N, C), z_w (N, C)) of a (M, K) x w (N, K)^T over its C reduced clusters."""
    sa, za = _reduced_params(a, a.codes.shape[0], c, weight=False)
    sw, zw = _reduced_params(w, w.codes.shape[0], c, weight=True)
    return sa, za, sw, zw


def qgemm(a: QuantizedTensor, w: QuantizedTensor, *, spec: NumericsSpec):
    """Exact integer sums of a (M, K) x w (N, K)^T.

    Affine codes: per cluster c of the reduced axis (both tensors share the clusters; a single
    parameter pair is one cluster), int64 (C, M, N):

        isum[c, m, n] = sum_{k : ids[k] == c, ascending} (qa[m, k] - za[c]) * (qw[n, k] - zw[n, c])

    each under the accumulator rule of ``spec`` (spec.acc_bits, spec.acc_overflow; ``refsim.cluster_int_gemm``):
    the accumulator is the product's, so it is named here rather than read from either operand.
    SDR codes: the decompression-free product (``refsim.sdr_gemm``), int64 (M, N):
    sum_groups 2^(fa + fw) * sum_{k in group} ca[m, k] * cw[n, k], in group order.
    GGUF block weights (``BlockOffsetTensor``): ``block_offset_gemm``'s per-(block x cluster) ``BlockSums``.
    """
    if isinstance(w, BlockOffsetTensor):  # GGUF block weights: per-(block x cluster) sums (below)
        return block_offset_gemm(a, w, spec=spec)
    if (a.sdr is None) != (w.sdr is None):
        raise ValueError("qgemm needs two SDR tensors or two affine tensors")
    if a.codes.ndim != 2 or w.codes.ndim != 2 or a.codes.shape[1] != w.codes.shape[1]:
        raise ValueError(f"a (M, K) and w (N, K) must agree on K, got {a.codes.shape} and {w.codes.shape}")
    if a.sdr is not None:
        if a.sdr.group_size != w.sdr.group_size:
            raise ValueError(f"SDR group sizes differ: {a.sdr.group_size} and {w.sdr.group_size}")
        return _sdr_gemm(a.codes, a.sdr.flags, w.codes.T, w.sdr.flags.T, group_size=a.sdr.group_size,
                         spec=spec)
    ids, c = reduced_clusters(a, w)
    _, za, _, zw = reduced_params(a, w, c)
    return _cluster_int_gemm(np.asarray(a.codes), np.asarray(za).reshape(-1), np.asarray(w.codes).T,
                             np.asarray(zw).T, ids, spec=spec)


def epilogue(isums, scale_a, scale_w, bias=None) -> np.ndarray:
    """float32 y[m, n] from per-cluster int sums, every op rounded to float32, clusters ascending, bias last:

        acc = 0.0f;  for c: acc = acc + (f32(isum[c, m, n]) * s_a[c]) * s_w[n, c];  y = acc + bias[n]

    ``refsim.float_epilogue`` per cluster (its single-cluster value is each term), so a weight scale may
    vary by cluster (RPTQ's per output row x per input cluster weights). isums (C, M, N) or (M, N);
    scale_a (C,) or a scalar; scale_w (N, C), (N,) or a scalar.
    """
    import refsim

    isums = np.asarray(isums)
    if isums.ndim == 2:
        isums = isums[None]
    n = isums.shape[2]
    sa = np.broadcast_to(np.asarray(scale_a, dtype=np.float32).reshape(-1), (isums.shape[0],))
    sb = np.asarray(scale_w, dtype=np.float32)
    sb = np.broadcast_to(sb.reshape(n, -1) if sb.size > 1 else sb.reshape(1, 1), (n, isums.shape[0]))
    acc = refsim.float_epilogue(isums[0], sa[0], sb[:, 0])
    for c in range(1, isums.shape[0]):
        acc = (acc + refsim.float_epilogue(isums[c], sa[c], sb[:, c])).astype(np.float32)
    if bias is not None:
        acc = (acc + np.asarray(bias, dtype=np.float32)).astype(np.float32)
    return acc


def qmatmul(a: QuantizedTensor, w: QuantizedTensor, bias=None, *, spec: NumericsSpec):
    """(isums, y): ``qgemm`` and its float32 ``epilogue`` with both tensors' scales."""
    if isinstance(w, BlockOffsetTensor):
        return block_offset_matmul(a, w, bias, spec=spec)
    isums = qgemm(a, w, spec=spec)
    c = 1 if isums.ndim == 2 else isums.shape[0]
    sa, _, sw, _ = reduced_params(a, w, c)
    return isums, epilogue(isums, sa, sw, bias)


# ---------------------------------------------------------------------------------------------
# native GGUF weights: block granularity with a float offset, and their exact GEMM (docs/gguf.md)

@dataclass(frozen=True, eq=False)
class BlockOffsetTensor(QuantizedTensor):
    """GGUF block weights (N, K) as integer codes with per-(row, block) parameters (docs/gguf.md):

        Q4_1:  w[n, k] = fl32(fl32(d[n, b] * q[n, k]) + m[n, b])     codes 0..15, m the float offset
        Q8_0:  w[n, k] = fl32(d[n, b] * q[n, k])                     codes int8, ``offset`` None
                                                                    b = blocks[k]

    ``scale`` = d (N, B) and ``offset`` = m (N, B) are fp16; ``zero`` is 0 and unused (m is a float,
    not a multiple of d: no integer zero point exists, docs/numerics.md "Offset form"); granularity
    BLOCK along axis 1, block_size 32. ``blocks`` (K,): the file's block of each column, k // 32 in
    the file's order and scattered when the columns were permuted with an activation reorder (each
    column keeps its own d and m). No NumericsSpec field governs this dequantization (``spec`` is
    None): the format fixes fp16 parameters and float32 operations rounded to nearest even, the
    offset form ``refsim.formats.gguf.dequantize_blocks``, equal to the gguf package's dequantizer
    bit for bit. The product's accumulator comes from the product's spec (``block_offset_gemm``).
    ``keep_sums``: whether ``qmatmul`` returns the per-(block x cluster) sums; False computes one
    pair at a time and returns None for them (a whole model need not hold them).
    """

    offset: np.ndarray | None = None
    blocks: np.ndarray | None = None
    keep_sums: bool = True

    def __post_init__(self):
        super().__post_init__()
        from refsim.formats.gguf import check_column_blocks

        if self.granularity is not Granularity.BLOCK or self.axis != 1 or self.block_size != BLOCK_OFFSET_SIZE:
            raise ValueError(f"a BlockOffsetTensor is block-granular along axis 1 in blocks of {BLOCK_OFFSET_SIZE}")
        n, k = np.shape(self.codes)
        for name, p in (("scale", self.scale), ("offset", self.offset)):
            if p is None and name == "offset":
                continue
            p = np.asarray(p)
            if p.dtype != np.float16 or p.shape != (n, k // BLOCK_OFFSET_SIZE) or not np.all(np.isfinite(p)):
                raise ValueError(f"{name} must be finite float16 of shape ({n}, {k // BLOCK_OFFSET_SIZE}) "
                                 f"(one per row x block), got {p.dtype} {p.shape}")
        check_column_blocks(self.blocks, k)

    @property
    def n_blocks(self) -> int:
        return int(np.asarray(self.scale).shape[1])

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        """float32 w (class docstring); only float32 is the format's own value."""
        from refsim.formats.gguf import dequantize_blocks

        if np.dtype(dtype) != np.float32:
            raise ValueError(f"dtype={dtype} is not allowed; allowed: float32 (GGUF's dequantized values)")
        return dequantize_blocks(self.codes, self.scale, self.offset, blocks=self.blocks)


BLOCK_OFFSET_SIZE = 32  # GGUF's QK4_1 = QK8_0


def block_offset_weight(codes, d, m=None, *, blocks=None, keep_sums=True) -> BlockOffsetTensor:
    """A ``BlockOffsetTensor`` from GGUF codes (N, K) and fp16 d, m (N, K/32): Q4_1 when m is given
    (unsigned 4-bit codes), Q8_0 when m is None (int8 codes). ``blocks`` defaults to k // 32."""
    from refsim.checks import as_int_array, check_range
    from refsim.formats.gguf import column_blocks

    q = as_int_array(codes, name="codes")
    if q.ndim != 2 or q.shape[1] % BLOCK_OFFSET_SIZE:
        raise ValueError(f"codes must be (N, K) with K a multiple of {BLOCK_OFFSET_SIZE}, got {q.shape}")
    bits, signed = (4, False) if m is not None else (8, True)
    lo, hi = (0, 15) if m is not None else (-128, 127)
    check_range(q, lo, hi, name="codes", what="(Q4_1: 0..15)" if m is not None else "(Q8_0: int8)")
    blocks = column_blocks(q.shape[1]) if blocks is None else np.asarray(blocks)
    return BlockOffsetTensor(q, np.asarray(d), np.zeros((), np.int64), Granularity.BLOCK, bits, signed, None, axis=1,
                             block_size=BLOCK_OFFSET_SIZE, offset=None if m is None else np.asarray(m),
                             blocks=blocks, keep_sums=bool(keep_sums))


class BlockSums(NamedTuple):
    """The exact integer sums of ``block_offset_gemm``, one entry per non-empty (block, cluster) pair p,
    pairs ordered by block ascending, then cluster ascending:

        s[p, m, n] = sum_{k in pair p, ascending} (qa[m, k] - za[c]) * qw[n, k]
        a[p, m]    = sum_{k in pair p, ascending} (qa[m, k] - za[c])           (None for Q8_0: no offset)
    """

    s: np.ndarray
    a: np.ndarray | None
    block: np.ndarray
    cluster: np.ndarray


def block_cluster_pairs(blocks, ids):
    """(pair of each column (K,), block of each pair (P,), cluster of each pair (P,)): the non-empty
    intersections of a weight block and an activation cluster, ordered by (block, cluster)."""
    blocks, ids = np.asarray(blocks, np.int64), np.asarray(ids, np.int64)
    n_c = int(ids.max()) + 1 if ids.size else 1
    keys, pair = np.unique(blocks * n_c + ids, return_inverse=True)
    return pair.reshape(-1), keys // n_c, keys % n_c


def _activation_clusters(a: QuantizedTensor):
    """(ids (K,), scale (C,), zero (C,)) of an activation operand: its clusters, or one for TENSOR."""
    k = a.codes.shape[1]
    if a.granularity is Granularity.CLUSTER:
        ids, c = np.asarray(a.clusters, np.int64), a.n_clusters
    elif a.granularity is Granularity.TENSOR:
        ids, c = np.zeros(k, np.int64), 1
    else:
        raise ValueError(f"a block-offset product takes a per-tensor or per-cluster activation, got "
                         f"{a.granularity.value}")
    sa, za = _reduced_params(a, a.codes.shape[0], c, weight=False)
    return ids, np.asarray(sa), np.asarray(za)


def _pair_sums(a: QuantizedTensor, w: BlockOffsetTensor, *, spec):
    """Yield (block, cluster, s (M, N), a (M,) or None) per pair, in the pair order: each sum is one
    ``cluster_int_gemm`` of the pair's columns (ascending k) under the spec's accumulator."""
    if a.sdr is not None or a.codes.ndim != 2 or a.codes.shape[1] != w.codes.shape[1]:
        raise ValueError(f"a (M, K) affine codes and w (N, K) must agree on K, got {a.codes.shape} and "
                         f"{w.codes.shape}")
    ids, _, za = _activation_clusters(a)
    pair, pb, pc = block_cluster_pairs(w.blocks, ids)
    qa, qw = np.asarray(a.codes), np.asarray(w.codes)
    for p in range(pb.size):
        cols = np.nonzero(pair == p)[0]
        one = np.zeros(cols.size, np.int64)
        za_p = np.asarray(za[pc[p]]).reshape(1)
        s = _cluster_int_gemm(qa[:, cols], za_p, qw[:, cols].T, 0, one, spec=spec)[0]
        sa = None
        if w.offset is not None:
            sa = _cluster_int_gemm(qa[:, cols], za_p, np.ones((cols.size, 1), np.int64), 0, one, spec=spec)[0, :, 0]
        yield int(pb[p]), int(pc[p]), s, sa


def block_offset_gemm(a: QuantizedTensor, w: BlockOffsetTensor, *, spec: NumericsSpec) -> BlockSums:
    """Exact integer sums of a (M, K) x w (N, K)^T with GGUF block weights (``BlockSums``).

    Activations a = s_a[c] * (qa - za[c]) per cluster c (RPTQ; one cluster for a per-tensor tensor),
    weights w = d[n, b] * qw + m[n, b] per (row, block) (``BlockOffsetTensor``): the product needs,
    per non-empty (block b, cluster c), S = sum (qa - za) * qw and A = sum (qa - za) over the k in
    both, each under the accumulator of ``spec`` (spec.acc_bits, spec.acc_overflow; ascending k).
    A block lying inside one cluster is one pair (llama.cpp's vec_dot_q4_1_q8_1 form)."""
    out = list(_pair_sums(a, w, spec=spec))
    m, n = a.codes.shape[0], w.codes.shape[0]
    s = np.stack([o[2] for o in out]) if out else np.zeros((0, m, n), np.int64)
    sa = None if w.offset is None else (np.stack([o[3] for o in out]) if out else np.zeros((0, m), np.int64))
    return BlockSums(s, sa, np.array([o[0] for o in out], np.int64), np.array([o[1] for o in out], np.int64))


def _pair_term(acc, s, sa, scale_a, d_n, m_n):
    """acc + fl(fl(f32(S) * fl(s_a * d)) + fl(f32(A) * fl(s_a * m))), every op float32 (block_offset_epilogue)."""
    f32 = np.float32
    p = (f32(scale_a) * d_n.astype(f32)).astype(f32)  # exact: two fp16 significands fit float32's
    t = (s.astype(f32) * p[None, :]).astype(f32)
    if sa is not None:
        q = (f32(scale_a) * m_n.astype(f32)).astype(f32)
        t = (t + (sa.astype(f32)[:, None] * q[None, :]).astype(f32)).astype(f32)
    return (acc + t).astype(f32)


def block_offset_epilogue(sums: BlockSums, scale_a, w: BlockOffsetTensor, bias=None) -> np.ndarray:
    """float32 y (M, N) from ``BlockSums``, in the pair order (blocks ascending, clusters ascending in each):

        acc = 0.0f
        for (b, c):  acc = acc + ( f32(S) * (s_a[c] * d[n, b]) + f32(A) * (s_a[c] * m[n, b]) )
        y = acc + bias[n]

    every operation rounded to float32 (nearest even) in the order written; s_a * d and s_a * m are
    exact (fp16 x fp16); f32(S) is exact while |S| <= 2^24. Q8_0 (no offset): the A term is absent."""
    sa = np.asarray(scale_a, np.float32).reshape(-1)
    d, m = np.asarray(w.scale), None if w.offset is None else np.asarray(w.offset)
    acc = np.zeros(sums.s.shape[1:], np.float32)
    for p in range(sums.block.size):
        b = int(sums.block[p])
        acc = _pair_term(acc, sums.s[p], None if sums.a is None else sums.a[p], sa[int(sums.cluster[p])], d[:, b],
                         None if m is None else m[:, b])
    return acc if bias is None else (acc + np.asarray(bias, np.float32)).astype(np.float32)


def block_offset_matmul(a: QuantizedTensor, w: BlockOffsetTensor, bias=None, *, spec: NumericsSpec):
    """(sums, y): ``block_offset_gemm`` and ``block_offset_epilogue``; with ``w.keep_sums`` False each
    pair's sums are folded into y as they are made and ``sums`` is None (the same y bit for bit)."""
    if w.keep_sums:
        sums = block_offset_gemm(a, w, spec=spec)
        return sums, block_offset_epilogue(sums, _activation_clusters(a)[1], w, bias)
    _, sa, _ = _activation_clusters(a)
    d, m = np.asarray(w.scale), None if w.offset is None else np.asarray(w.offset)
    acc = np.zeros((a.codes.shape[0], w.codes.shape[0]), np.float32)
    for b, c, s, asum in _pair_sums(a, w, spec=spec):
        acc = _pair_term(acc, s, asum, sa[c], d[:, b], None if m is None else m[:, b])
    return None, acc if bias is None else (acc + np.asarray(bias, np.float32)).astype(np.float32)


def _gamma(j, u):
    return j * u / (1 - j * u)


def block_offset_error_bound(a: QuantizedTensor, w: BlockOffsetTensor) -> np.ndarray:
    """float64 (M, N): a bound on |y - y_exact| for ``block_offset_epilogue``'s y without bias, where
    y_exact = sum_k s_a (qa - za) (d qw + m) is the real product of the two tensors' exact values:

        |y - y_exact| <= gamma_{P+3} * B,   B = sum_k |s_a (qa - za)| * (|d qw| + |m|),
        gamma_j = j u / (1 - j u),  u = 2^-24,  P = the number of (block, cluster) pairs

    (Higham, Accuracy and Stability, Lemma 3.1 and Sec. 4.2: each term has <= 3 roundings
    (f32(S) when |S| > 2^24, its product, the sum of the two products), each of the P additions to
    acc one more, and every |term| is at most its share of B). Compare with a float64 product of
    the dequantized operands by adding gamma_K (u = 2^-53) * B for the float64 sum's own error."""
    ids, sa, za = _activation_clusters(a)
    av = np.abs(sa.astype(np.float64)[ids] * (np.asarray(a.codes, np.float64) - za.astype(np.float64)[ids]))
    d = np.asarray(w.scale, np.float64)[:, w.blocks]
    wv = np.abs(d * np.asarray(w.codes, np.float64))
    if w.offset is not None:
        wv = wv + np.abs(np.asarray(w.offset, np.float64)[:, w.blocks])
    n_pairs = block_cluster_pairs(w.blocks, ids)[1].size
    big = av @ wv.T
    return _gamma(n_pairs + 3, 2.0**-24) * big * (1 + 2.0**-40)  # the last factor covers B's own float64 rounding
