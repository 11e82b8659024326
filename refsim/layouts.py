"""Bit layouts of packed 3- and 4-bit codes (drawn in docs/numerics.md).

Every layout is a map from (value index i, bit b of the value) to a bit position in a
little-endian byte stream (bit p lives in byte p // 8 at weight 2^(p % 8)), plus a padding
granularity. A value's field holds its ``bits`` low bits (two's complement for signed codes).

    int4_lo_first  pos = 4i + b                       pad to 1 byte (2 values)       ONNX int4
    int4_word32    pos = 4i + b                       pad to 4 bytes (8 values)      GPTQ qweight
    int3_stream    pos = 3i + b                       pad to 1 byte
    int3_word32    pos = 3i + b                       pad to 4 bytes (one stream)    compressed-tensors 3-bit
    int8           pos = 8i + b                       1 byte per code                ONNX / torch int8
    int4_word32_offset, int3_word32_offset: the same streams holding v + 2^(b-1) (offset binary),
                   compressed-tensors' pack_to_int32 for signed codes
    int3_gptq      pos = 3i + b                       pad to 12 bytes (32 values)    GPTQ 3-bit
    int3_planar    per 32 values j (block base 96*(i // 32)):
                   b in {0, 1}: 2j + b  (words 0-1: low 2-bit fields)
                   b = 2:       64 + j  (word 2: high bits)                          kernel friendly
    sdr_flags4     pos = 4i + b, unsigned shift 0..15     pad to 1 byte              QRazor SDR flags
    sdr_code4      pos = 4i + b, sign-magnitude: bit 3 = sign, bits 0-2 = |v|        QRazor 4-bit codes
    sdr_code8      pos = 8i + b, sign-magnitude: bit 7 = sign, bits 0-6 = |v|        QRazor A8 codes
                   (drawn in docs/sdr.md; sign-magnitude fields hold [-(2^(b-1)-1), 2^(b-1)-1])

int4_word32 ("eight codes per little-endian 32-bit word, value j at bits 4j") is therefore
the same bit stream as int4_lo_first, and int3_gptq (the GPTQ packer's three words with
values 10 and 21 straddling word boundaries) is the same stream as int3_stream: only the
padding differs. The scalar twins in ``refsim.scalar`` follow each source's own description
(GPTQ's packer loop literally), and the tests show the identities hold.

Packing works along ``axis`` (default last): the output has that axis replaced by bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from refsim.checks import as_int_array, check_range, code_range, normalize_axis


@dataclass(frozen=True)
class Layout:
    name: str
    bits: int
    signed: bool  # the default code interpretation (override with pack/unpack's ``signed``)
    block_values: int  # padding granularity, in values
    block_bytes: int  # bytes per padded block
    position: Callable[[np.ndarray, int], np.ndarray]  # (i, b) -> bit position in the stream
    description: str
    sign_magnitude: bool = False  # field = (v < 0) << (bits - 1) | |v| instead of two's complement
    offset_binary: bool = False  # field = v + 2^(bits - 1): signed codes stored unsigned (v + 8 for 4 bits)
    pad_bytes: int = 1  # a pure bit stream (block_values 0) is padded to a multiple of this many bytes

    def nbytes(self, count: int) -> int:
        """Bytes that hold ``count`` values, padding included."""
        if self.block_values == 0:  # pure bit stream: pad to whole bytes (or words)
            return -(-count * self.bits // (8 * self.pad_bytes)) * self.pad_bytes
        return -(-count // self.block_values) * self.block_bytes


def _stream(bits):
    return lambda i, b: bits * i + b


def _planar(i, b):
    block, j = np.divmod(i, 32)
    return 96 * block + (2 * j + b if b < 2 else 64 + j)


LAYOUTS: dict[str, Layout] = {
    "int4_lo_first": Layout("int4_lo_first", 4, True, 2, 1, _stream(4),
                            "two's complement nibbles, first element in the low nibble (ONNX int4)"),
    "int4_word32": Layout("int4_word32", 4, False, 8, 4, _stream(4),
                          "eight 4-bit codes per little-endian 32-bit word, value j at bits 4j (GPTQ qweight)"),
    "int3_stream": Layout("int3_stream", 3, False, 0, 0, _stream(3),
                          "little-endian bit stream, value i at bits [3i, 3i+3)"),
    "int3_gptq": Layout("int3_gptq", 3, False, 32, 12, _stream(3),
                        "32 values in three 32-bit words, values 10 and 21 straddle words (GPTQ)"),
    "int3_planar": Layout("int3_planar", 3, False, 32, 12, _planar,
                          "per 32 codes: two words of 2-bit low fields, then one word of high bits"),
    "int8": Layout("int8", 8, True, 1, 1, _stream(8), "one two's complement byte per code (ONNX int8, torch int8)"),
    "int3_word32": Layout("int3_word32", 3, False, 0, 0, _stream(3),
                          "value i at bits [3i, 3i+3) of one little-endian stream padded to 32-bit words",
                          pad_bytes=4),
    "int4_word32_offset": Layout("int4_word32_offset", 4, True, 8, 4, _stream(4),
                                 "offset binary v + 8, eight per little-endian 32-bit word "
                                 "(compressed-tensors pack_to_int32, 4 bits)", offset_binary=True),
    "int3_word32_offset": Layout("int3_word32_offset", 3, True, 0, 0, _stream(3),
                                 "offset binary v + 4 in one stream padded to 32-bit words "
                                 "(compressed-tensors pack_to_int32, 3 bits)", offset_binary=True, pad_bytes=4),
    "sdr_flags4": Layout("sdr_flags4", 4, False, 2, 1, _stream(4),
                         "QRazor SDR flags: 4-bit unsigned shifts, first group in the low nibble"),
    "sdr_code4": Layout("sdr_code4", 4, True, 2, 1, _stream(4),
                        "QRazor SDR codes: 4-bit sign-magnitude (bit 3 = sign), first code in the low nibble",
                        sign_magnitude=True),
    "sdr_code8": Layout("sdr_code8", 8, True, 1, 1, _stream(8),
                        "QRazor SDR A8 codes: one byte per code, sign-magnitude (bit 7 = sign)",
                        sign_magnitude=True),
}


def get_layout(layout) -> Layout:
    if isinstance(layout, Layout):
        return layout
    try:
        return LAYOUTS[layout]
    except KeyError:
        raise ValueError(f"layout={layout!r} is not known; allowed: {', '.join(LAYOUTS)}") from None


def code_limits(lay: Layout, signed: bool) -> tuple[int, int]:
    if lay.offset_binary:  # the codes are signed whatever ``signed`` says: the offset makes the field unsigned
        return code_range(lay.bits, True, False)
    if lay.sign_magnitude:
        return -((1 << (lay.bits - 1)) - 1), (1 << (lay.bits - 1)) - 1
    return code_range(lay.bits, signed, False)


def _positions(lay: Layout, count: int) -> np.ndarray:
    """(count, bits) array of stream bit positions."""
    i = np.arange(count, dtype=np.int64)
    return np.stack([lay.position(i, b) for b in range(lay.bits)], axis=1)


def pack(codes, layout, *, axis=-1, signed=None) -> np.ndarray:
    """Pack integer codes into the layout's little-endian bytes (uint8), along ``axis``.

    Codes must lie in the layout's range: [-2^(b-1), 2^(b-1)-1] if signed, [0, 2^b-1] if not
    (``signed`` defaults to the layout's own convention: signed for int4_lo_first, unsigned
    for the GPTQ and kernel layouts). Padding fields are zero.
    """
    lay = get_layout(layout)
    signed = lay.signed if signed is None else bool(signed)
    c = as_int_array(codes, name="codes")
    if c.ndim == 0:
        raise ValueError("codes must have at least one dimension")
    lo, hi = code_limits(lay, signed)
    check_range(c, lo, hi, name="codes", what=f"of layout {lay.name} ({'signed' if signed else 'unsigned'})")
    ax = normalize_axis(axis, c.ndim)
    c = np.moveaxis(c, ax, -1)
    count = c.shape[-1]
    nbytes = lay.nbytes(count)
    if lay.sign_magnitude:
        c = np.where(c < 0, -c | (1 << (lay.bits - 1)), c)
    elif lay.offset_binary:
        c = c + (1 << (lay.bits - 1))
    field = (c & ((1 << lay.bits) - 1)).astype(np.uint8)
    bitvals = (field[..., None] >> np.arange(lay.bits, dtype=np.uint8)) & 1  # (..., count, bits)
    stream = np.zeros(c.shape[:-1] + (nbytes * 8,), dtype=np.uint8)
    stream[..., _positions(lay, count).reshape(-1)] = bitvals.reshape(c.shape[:-1] + (-1,))
    out = np.packbits(stream, axis=-1, bitorder="little")
    return np.moveaxis(out, -1, ax)


def unpack(data, layout, count, *, axis=-1, signed=None) -> np.ndarray:
    """Inverse of ``pack``: ``count`` codes (int32) along ``axis`` from the layout's bytes."""
    lay = get_layout(layout)
    signed = lay.signed if signed is None else bool(signed)
    d = np.asarray(data)
    if d.dtype != np.uint8:
        raise TypeError(f"data must be a uint8 array of packed bytes, got dtype {d.dtype}")
    if d.ndim == 0:
        raise ValueError("data must have at least one dimension")
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count={count!r} is not allowed; allowed: a non-negative integer")
    ax = normalize_axis(axis, d.ndim)
    d = np.moveaxis(d, ax, -1)
    need = lay.nbytes(int(count))
    if d.shape[-1] < need:
        raise ValueError(f"data holds {d.shape[-1]} bytes along axis {ax}; {count} codes of layout "
                         f"{lay.name} need {need}")
    stream = np.unpackbits(d[..., :need], axis=-1, bitorder="little")
    bits = stream[..., _positions(lay, int(count))].astype(np.int32)  # (..., count, bits)
    field = (bits << np.arange(lay.bits, dtype=np.int32)).sum(axis=-1, dtype=np.int32)
    if lay.sign_magnitude:  # a sign bit over a zero magnitude (never written by pack) reads as 0
        sign = field >> (lay.bits - 1)
        field = (field & ((1 << (lay.bits - 1)) - 1)) * (1 - 2 * sign)
    elif lay.offset_binary:
        field = field - (1 << (lay.bits - 1))
    elif signed:
        field = field - ((field >> (lay.bits - 1)) << lay.bits)
    return np.moveaxis(field.astype(np.int32), -1, ax)
