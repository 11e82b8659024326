"""``$readmemh`` files: a vectorized writer and a reader that accepts what simulators accept.

Format written (IEEE 1800-2017 21.4, ``$readmemh``): one word per line, lower-case hex, exactly
``ceil(word_bits / 4)`` digits, most significant digit first, ``\\n`` line ends, no address
records and no comments, so the n-th line is memory word n. A signed value is written as its
two's complement in ``word_bits`` bits (``-1`` at 4 bits is ``f``); a float stage is written as
its IEEE bit pattern (see ``words_from_array``).

Format read: whitespace-separated hex words, any number per line; ``//`` line comments and
``/* */`` block comments (which may span lines); blank lines; ``_`` inside a number (ignored, as
in Verilog literals); ``@hhhh`` address records, which move the load address. Digits ``x``/``z``
(unknown) are refused with the line number, as are words wider than ``word_bits`` and addresses
left without a word. The reader has a fast path for files in the writer's own format and a slow,
token-by-token twin (``parse_hex_tolerant``) that the tests show agrees with it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import numpy as np

_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# Words per formatting chunk: big enough to amortize numpy's per-call cost, small enough for
# the temporaries to stay in cache (measured by benchmarks/bench_golden.py).
CHUNK_WORDS = 1 << 18
MAX_WORD_BITS = 64


def hex_digits(word_bits: int) -> int:
    return -(-word_bits // 4)


def check_word_bits(word_bits) -> int:
    if isinstance(word_bits, bool) or not isinstance(word_bits, (int, np.integer)) or not (
        1 <= int(word_bits) <= MAX_WORD_BITS
    ):
        raise ValueError(f"word_bits={word_bits!r} is not allowed; allowed: an integer in 1..{MAX_WORD_BITS}")
    return int(word_bits)


def word_dtype(word_bits: int) -> np.dtype:
    """The narrowest unsigned dtype that holds a ``word_bits``-bit word."""
    return np.dtype(np.uint8 if word_bits <= 8 else np.uint16 if word_bits <= 16 else
                    np.uint32 if word_bits <= 32 else np.uint64)


def words_from_array(a: np.ndarray, word_bits: int, *, name: str = "array",
                     sign_magnitude: bool = False, mask: bool = True) -> np.ndarray:
    """The memory words of an array (``word_dtype(word_bits)``), flattened in C order.

    Integers: the low ``word_bits`` bits of the two's complement (a value that fits neither
    the signed nor the unsigned ``word_bits`` range is an error naming its index), or with
    ``sign_magnitude`` the top bit = (v < 0) and the low bits |v| (|v| < 2^(word_bits-1)).
    float16 / float32 / float64: the IEEE bit pattern, which needs word_bits = 16 / 32 / 64.
    ``mask=False`` leaves the bits above ``word_bits`` of a negative value set (the hex writer
    masks them itself; internal use).
    """
    word_bits = check_word_bits(word_bits)
    a = np.asarray(a)
    if sign_magnitude:
        if a.dtype.kind != "i":
            raise TypeError(f"{name} must be a signed integer array for a sign-magnitude stage, got {a.dtype}")
        top = (1 << (word_bits - 1)) - 1
        if a.size and (int(a.min()) < -top or int(a.max()) > top):
            i = int(np.argmax(np.abs(a.reshape(-1).astype(np.int64)) > top))
            raise ValueError(f"{name}[{i}] = {int(a.reshape(-1)[i])} does not fit a {word_bits}-bit "
                             "sign-magnitude word")
        mag = np.abs(a.reshape(-1).astype(np.int64))
        a = np.where(a.reshape(-1) < 0, mag | (1 << (word_bits - 1)), mag).astype(np.uint64)
    wdt = word_dtype(word_bits)
    if a.dtype.kind == "f":
        need = a.dtype.itemsize * 8
        if word_bits != need:
            raise ValueError(f"{name} is {a.dtype}; its bit pattern needs word_bits={need}, got {word_bits}")
        return np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"))).reshape(-1).view(wdt)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer or float array, got dtype {a.dtype}")
    flat = a.reshape(-1)
    if flat.size:
        lo, hi = -(1 << (word_bits - 1)), (1 << word_bits) - 1
        vmin, vmax = int(flat.min()), int(flat.max())  # reductions: cheaper than a mask on big stages
        if vmin < lo or vmax > hi:
            i = int(np.argmax([int(v) < lo or int(v) > hi for v in flat]))  # error path only
            raise ValueError(f"{name}[{i}] = {int(flat[i])} does not fit in a {word_bits}-bit word")
    sdt = np.dtype(f"i{wdt.itemsize}")
    if a.dtype.kind == "i" and a.dtype.itemsize > wdt.itemsize and vmax > np.iinfo(sdt).max:
        w = flat.astype(np.int64).view(np.uint64).astype(wdt)  # an unsigned value in a signed array
    else:
        w = flat.astype(sdt if a.dtype.kind == "i" else wdt, copy=False).view(wdt)
    if word_bits < 8 * wdt.itemsize and mask:
        w = w & wdt.type((1 << word_bits) - 1)
    return w


def check_stage_range(a: np.ndarray, word_bits: int, signed: bool, *, name: str = "array") -> None:
    """An integer stage's values must fit its declared interpretation: [-2^(w-1), 2^(w-1)-1] when
    signed, [0, 2^w-1] when not (``words_from_array`` alone accepts either, and an RTL reader of a
    signed 4-bit word would take 8 for -8)."""
    a = np.asarray(a)
    if a.dtype.kind not in "iu" or a.size == 0:
        return
    lo, hi = (-(1 << (word_bits - 1)), (1 << (word_bits - 1)) - 1) if signed else (0, (1 << word_bits) - 1)
    vmin, vmax = int(a.min()), int(a.max())
    if vmin < lo or vmax > hi:
        bad = vmin if vmin < lo else vmax
        i = int(np.argmax(a.reshape(-1) == bad))
        raise ValueError(f"{name}[{i}] = {bad} does not fit the {'signed' if signed else 'unsigned'} {word_bits}-bit "
                         f"range [{lo}, {hi}] the stage declares")


def array_from_words(words: np.ndarray, *, dtype, shape, word_bits: int, signed: bool,
                     sign_magnitude: bool = False) -> np.ndarray:
    """Inverse of ``words_from_array``: unsigned words to an array of ``dtype`` and ``shape``."""
    dtype = np.dtype(dtype)
    w = np.asarray(words, dtype=np.uint64)
    if sign_magnitude:
        top = np.uint64(1 << (word_bits - 1))
        mag = (w & (top - np.uint64(1))).astype(np.int64)
        return np.where((w & top) != 0, -mag, mag).astype(dtype).reshape(shape)
    if dtype.kind == "f":
        return w.astype(f"<u{dtype.itemsize}").view(dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    if signed and word_bits < 64:
        sign = np.uint64(1 << (word_bits - 1))
        v = (w ^ sign).astype(np.int64) - np.int64(1 << (word_bits - 1))  # sign-extend
    else:
        v = w.view(np.int64) if signed else w
    return v.astype(dtype).reshape(shape)


def _container(nbytes_needed: int):
    return np.dtype(np.uint8 if nbytes_needed == 1 else np.uint16 if nbytes_needed == 2 else
                    np.uint32 if nbytes_needed <= 4 else np.uint64).type


def _line_dtype(parts):
    """A packed struct per text line: digit fields of 8/4/2/1 bytes, then the newline byte.

    parts: [(ndigits, source)] in display order. Returns (dtype, [(field, source, byte offset)]).
    """
    fields, plan = [], []
    for nd, src in parts:
        off = 0
        for size in (8, 4, 2, 1):
            while nd - off >= size:
                fields.append((f"{src}{off}", f"<u{size}"))
                plan.append((f"{src}{off}", src, off))
                off += size
    fields.append(("nl", "u1"))
    return np.dtype(fields), plan


def _lanes(step: int, nbytes: int) -> int:
    """A mask that keeps the low ``step`` bits of every 2*step-bit lane of an nbytes-byte word."""
    lane = (1 << step) - 1
    return sum(lane << (2 * step * i) for i in range(8 * nbytes // (2 * step)))


def _ascii_digits(w: np.ndarray, nd: int, x: np.ndarray, t: np.ndarray) -> None:
    """x <- the nd low hex digits of w as ASCII bytes 0..nd-1, the most significant digit in byte 0.

    SWAR: the nibbles are spread one per byte in log2(nd) shift-or-mask steps, byte-swapped
    into reading order, and mapped to '0'-'9' / 'a'-'f' with a carry trick (nibble + 6
    carries into bit 4 exactly when nibble > 9), all in place on x and t. Bytes of x above
    nd - 1 are left zero.
    """
    cont = x.dtype.type
    nbytes = x.dtype.itemsize
    np.copyto(x, w, casting="unsafe")  # unsigned words, widened; or narrowed after a range check
    if nd < 2 * nbytes:
        np.bitwise_and(x, cont((1 << (4 * nd)) - 1), out=x)
    for step in (16, 8, 4):  # spread: nibble i of w moves to byte i
        if step > 2 * nbytes or 4 * nd <= step:
            continue
        np.left_shift(x, cont(step), out=t)
        np.bitwise_or(x, t, out=x)
        np.bitwise_and(x, cont(_lanes(step, nbytes)), out=x)
    if nd > 1:
        x.byteswap(inplace=True)  # the most significant digit to the lowest address
        if nd < nbytes:
            np.right_shift(x, cont(8 * (nbytes - nd)), out=x)
    ones = sum(1 << (8 * d) for d in range(nd))
    np.add(x, cont(6 * ones), out=t)
    np.right_shift(t, cont(4), out=t)
    if nd > 1:  # a single digit has nothing above it to shift in
        np.bitwise_and(t, cont(ones), out=t)
    np.multiply(t, cont(0x27), out=t)
    np.add(x, t, out=x)
    np.add(x, cont(0x30 * ones), out=x)


def _iter_hex_chunks(a: np.ndarray, word_bits: int, *, sign_magnitude: bool = False):
    """Yield the ``$readmemh`` text of array ``a`` (see ``words_from_array``) chunk by chunk.

    The words are converted per chunk, so no full-size copy is made. The yielded buffers are
    reused: consume each before asking for the next.
    """
    flat = np.asarray(a).reshape(-1)
    nd = hex_digits(word_bits)
    n_max = max(1, min(CHUNK_WORDS, flat.size))
    if nd + 1 in (2, 4, 8):  # a line fills a machine word: digits in the low bytes, "\n" on top
        cont = _container(nd + 1)
        # One digit: the arithmetic runs on bytes and only the last step widens to the line.
        work = _container(nd)
        x, t = np.empty(n_max, work), np.empty(n_max, work)
        line = np.empty(n_max, cont) if work is not cont else x
        for start in range(0, flat.size, CHUNK_WORDS):
            # _ascii_digits keeps the low 4*nd bits: the words need masking only when word_bits is not 4*nd
            w = words_from_array(flat[start:start + CHUNK_WORDS], word_bits, sign_magnitude=sign_magnitude,
                                 mask=word_bits != 4 * nd)
            xv, tv, lv = x[:w.size], t[:w.size], line[:w.size]
            _ascii_digits(w, nd, xv, tv)
            np.bitwise_or(xv, cont(10 << (8 * nd)), out=lv)
            yield lv
        return
    lo_nd, hi_nd = min(nd, 8), max(nd - 8, 0)
    ldt, plan = _line_dtype(([(hi_nd, "h")] if hi_nd else []) + [(lo_nd, "l")])
    bufs = {"l": (np.empty(n_max, _container(lo_nd)), np.empty(n_max, _container(lo_nd)))}
    if hi_nd:
        bufs["h"] = (np.empty(n_max, _container(hi_nd)), np.empty(n_max, _container(hi_nd)))
    out = np.empty(n_max, ldt)
    out["nl"] = 10
    for start in range(0, flat.size, CHUNK_WORDS):
        w = words_from_array(flat[start:start + CHUNK_WORDS], word_bits, sign_magnitude=sign_magnitude)
        n = w.size
        _ascii_digits(w, lo_nd, bufs["l"][0][:n], bufs["l"][1][:n])
        if hi_nd:
            _ascii_digits(w >> w.dtype.type(32), hi_nd, bufs["h"][0][:n], bufs["h"][1][:n])
        o = out[:n]
        for name, src, base in plan:
            xs = bufs[src][0][:n]
            o[name] = xs >> xs.dtype.type(8 * base) if base else xs
        yield o


def format_hex(words: np.ndarray, word_bits: int) -> bytes:
    """The ``$readmemh`` text of unsigned words: one fixed-width lower-case word per line.

    Vectorized (``_ascii_digits``): no Python loop per word.
    """
    word_bits = check_word_bits(word_bits)
    w = _as_words(words, word_bits)
    return b"".join(bytes(chunk) for chunk in _iter_hex_chunks(w, word_bits))


def _as_words(words, word_bits: int) -> np.ndarray:
    w = np.asarray(words).reshape(-1)
    if w.dtype.kind != "u":
        raise TypeError(f"words must be an unsigned integer array (see words_from_array), got dtype {w.dtype}")
    if w.size and word_bits < 64 and int(w.max()) >> word_bits:
        i = int(np.argmax([int(v) >> word_bits != 0 for v in w]))  # the error path only
        raise ValueError(f"words[{i}] = {int(w[i]):#x} is wider than word_bits={word_bits}")
    return w


def format_hex_scalar(words, word_bits: int) -> bytes:
    """Slow twin of ``format_hex``: Python's own formatting, one word at a time."""
    nd = hex_digits(word_bits)
    return "".join(f"{int(v):0{nd}x}\n" for v in words).encode("ascii")


def write_hex(path, words: np.ndarray, word_bits: int, *, progress: Callable[[int, int], None] | None = None) -> None:
    """Write unsigned words as a ``$readmemh`` file, in chunks (``progress(done, total)`` after each)."""
    word_bits = check_word_bits(word_bits)
    _write_chunks(path, _as_words(words, word_bits), word_bits, progress, False)


def write_array_hex(path, a: np.ndarray, word_bits: int, *, sign_magnitude: bool = False,
                    progress: Callable[[int, int], None] | None = None) -> None:
    """Write an array's words (``words_from_array``, converted chunk by chunk) as a ``$readmemh`` file.

    The caller names a path inside a temporary bundle directory (the bundle is renamed into
    place whole), so no temporary name is needed here.
    """
    word_bits = check_word_bits(word_bits)
    _write_chunks(path, np.asarray(a), word_bits, progress, sign_magnitude)


def _write_chunks(path, a, word_bits, progress, sign_magnitude):
    done = 0
    with open(path, "wb") as f:
        for chunk in _iter_hex_chunks(a, word_bits, sign_magnitude=sign_magnitude):
            f.write(chunk)
            done += chunk.size
            if progress is not None:
                progress(done, a.size)


_FAST_OK = re.compile(rb"\A(?:[0-9a-fA-F]+\n)*\Z")
_TOKEN = re.compile(r"//[^\n]*|/\*.*?\*/|/\*|/|[^\s/]+", re.S)


def parse_hex(text, *, word_bits: int, source: str = "hex text") -> np.ndarray:
    """uint64 words of ``$readmemh`` text; fast when the text is in the writer's format."""
    word_bits = check_word_bits(word_bits)
    data = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    nd = hex_digits(word_bits)
    if data and len(data) % (nd + 1) == 0 and _FAST_OK.match(data):
        lines = np.frombuffer(data, dtype=np.uint8).reshape(-1, nd + 1)
        if np.all(lines[:, nd] == 10):
            return _parse_fixed(lines[:, :nd], word_bits, source)
    return parse_hex_tolerant(data, word_bits=word_bits, source=source)


def _parse_fixed(digits: np.ndarray, word_bits: int, source: str) -> np.ndarray:
    d = digits.astype(np.uint64)
    val = np.where(d >= ord("a"), d - ord("a") + 10, np.where(d >= ord("A"), d - ord("A") + 10, d - ord("0")))
    words = np.zeros(digits.shape[0], dtype=np.uint64)
    for j in range(digits.shape[1]):
        words = (words << np.uint64(4)) | val[:, j]
    if word_bits < 64 and words.size:
        over = words >> np.uint64(word_bits)
        if over.any():
            i = int(np.argmax(over != 0))
            raise ValueError(f"{source}: line {i + 1}: word {int(words[i]):x} is wider than {word_bits} bits")
    return words


def parse_hex_tolerant(text, *, word_bits: int, source: str = "hex text") -> np.ndarray:
    """Token-by-token reader (the specification of ``parse_hex``): comments, blanks, ``_``, ``@addr``."""
    word_bits = check_word_bits(word_bits)
    s = text.decode("ascii", "replace") if isinstance(text, (bytes, bytearray)) else str(text)
    mem: dict[int, int] = {}
    addr = 0
    for m in _TOKEN.finditer(s):
        tok = m.group(0)
        if tok.startswith("//") or (tok.startswith("/*") and tok.endswith("*/") and len(tok) >= 4):
            continue
        line = s.count("\n", 0, m.start()) + 1
        if tok == "/*":
            raise ValueError(f"{source}: line {line}: unterminated /* comment")
        if tok.startswith("@"):
            digits = tok[1:].replace("_", "")
            if not digits or not re.fullmatch(r"[0-9a-fA-F]+", digits):
                raise ValueError(f"{source}: line {line}: bad address record {tok!r}; allowed: @ then hex digits")
            addr = int(digits, 16)
            continue
        digits = tok.replace("_", "")
        if re.search(r"[xXzZ?]", digits):
            raise ValueError(f"{source}: line {line}: word {tok!r} has unknown (x/z) digits; "
                             "a golden word must be known")
        if not digits or not re.fullmatch(r"[0-9a-fA-F]+", digits):
            raise ValueError(f"{source}: line {line}: {tok!r} is not a hex word")
        v = int(digits, 16)
        if v >> word_bits:
            raise ValueError(f"{source}: line {line}: word {digits} is wider than {word_bits} bits")
        mem[addr] = v
        addr += 1
    if not mem:
        return np.zeros(0, dtype=np.uint64)
    size = max(mem) + 1
    if len(mem) != size:
        missing = next(i for i in range(size) if i not in mem)
        raise ValueError(f"{source}: address {missing:#x} has no word (the file leaves a hole before {size - 1:#x})")
    return np.array([mem[i] for i in range(size)], dtype=np.uint64)


def read_hex(path, *, word_bits: int) -> np.ndarray:
    """uint64 words of a ``$readmemh`` file (see ``parse_hex``)."""
    p = Path(os.fspath(path))
    return parse_hex(p.read_bytes(), word_bits=word_bits, source=str(p.name))
