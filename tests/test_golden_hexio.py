"""$readmemh writer and reader: the vectorized paths against their slow twins, and a fuzzed reader."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from golden import hexio


@st.composite
def words_and_bits(draw):
    bits = draw(st.integers(1, 64))
    vals = draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=0, max_size=40))
    dt = hexio.word_dtype(bits)
    return np.array(vals, dtype=np.uint64).astype(dt), bits


@given(words_and_bits())
def test_format_hex_equals_scalar_twin(wb):
    w, bits = wb
    assert hexio.format_hex(w, bits) == hexio.format_hex_scalar(w, bits)


def test_format_hex_exhaustive_small_widths():
    for bits in range(1, 17):
        w = np.arange(1 << bits, dtype=np.uint64).astype(hexio.word_dtype(bits))
        assert hexio.format_hex(w, bits) == hexio.format_hex_scalar(w, bits)


def test_format_hex_across_chunks(monkeypatch):
    monkeypatch.setattr(hexio, "CHUNK_WORDS", 7)
    w = np.arange(100, dtype=np.uint32) * 0x01010101
    assert hexio.format_hex(w, 32) == hexio.format_hex_scalar(w, 32)


def test_format_hex_refuses_wide_words():
    with pytest.raises(ValueError, match=r"words\[1\].*wider than word_bits=4"):
        hexio.format_hex(np.array([3, 16], np.uint8), 4)
    with pytest.raises(ValueError, match="word_bits=0 is not allowed"):
        hexio.format_hex(np.array([1], np.uint8), 0)


@given(words_and_bits())
def test_parse_fast_path_equals_tolerant_twin(wb):
    w, bits = wb
    text = hexio.format_hex(w, bits)
    fast = hexio.parse_hex(text, word_bits=bits)
    slow = hexio.parse_hex_tolerant(text, word_bits=bits)
    assert np.array_equal(fast, slow)
    assert np.array_equal(fast, w.astype(np.uint64))


@st.composite
def messy_hex(draw):
    """Words rendered the way hand-written or simulator-dumped files look."""
    bits = draw(st.integers(1, 64))
    vals = draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=1, max_size=30))
    parts = []
    addr = 0
    order = list(range(len(vals)))
    if draw(st.booleans()):  # write the second half first, each half under its own @address
        half = len(vals) // 2
        order = order[half:] + order[:half]
    prev = None
    for i in order:
        if prev is None or i != prev + 1:
            parts.append(draw(st.sampled_from(["@", "@0", "@00"])) + f"{i:x}" if i or prev is not None else "")
        prev = i
        digits = f"{vals[i]:x}"
        if draw(st.booleans()):
            digits = digits.upper()
        if draw(st.booleans()):
            digits = "0" * draw(st.integers(0, 3)) + digits
        if len(digits) > 1 and draw(st.booleans()):
            cut = draw(st.integers(1, len(digits) - 1))
            digits = digits[:cut] + "_" + digits[cut:]
        parts.append(digits)
        sep = draw(st.sampled_from([" ", "\n", "\t", "\r\n", "  // note\n", " /* c */ ", "\n\n", "/*a\nb*/\n"]))
        parts.append(sep)
        addr += 1
    head = draw(st.sampled_from(["", "// header\n", "/* multi\n line */\n", "\n"]))
    return head + " ".join(p for p in parts if p != ""), vals, bits


@given(messy_hex())
def test_tolerant_reader_fuzz(case):
    text, vals, bits = case
    got = hexio.parse_hex(text, word_bits=bits)
    assert got.tolist() == vals


@pytest.mark.parametrize("text, match", [
    ("01\nx1\n", "line 2: word 'x1' has unknown"),
    ("01\n1z\n", "unknown"),
    ("1ff\n", "wider than 8 bits"),
    ("@2 01\n", "address 0x0 has no word"),
    ("01 /* open\n02\n", "unterminated"),
    ("0g\n", "not a hex word"),
    ("@ 01\n", "bad address"),
])
def test_reader_refuses_with_line(text, match):
    with pytest.raises(ValueError, match=match):
        hexio.parse_hex(text, word_bits=8)


def test_reader_comment_glued_to_word():
    assert hexio.parse_hex("0a//c\n0b/*d*/0c\n", word_bits=8).tolist() == [10, 11, 12]


@pytest.mark.parametrize("dtype, bits, signed", [
    (np.int8, 4, True), (np.uint8, 4, False), (np.int8, 3, True), (np.int16, 16, True), (np.int32, 32, True),
    (np.int64, 33, True), (np.uint32, 32, False), (np.int64, 64, True), (np.uint64, 64, False), (np.int32, 8, True),
])
def test_words_roundtrip_integers(dtype, bits, signed):
    info = np.iinfo(dtype)
    lo = max(info.min, -(1 << (bits - 1))) if signed else 0
    hi = min(info.max, (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1)
    a = np.array(sorted({lo, lo + 1, -1 if signed else 1, 0, 1, hi - 1, hi}), dtype=dtype)
    w = hexio.words_from_array(a, bits)
    assert w.dtype == hexio.word_dtype(bits)
    mask = (1 << bits) - 1
    assert [int(x) for x in w] == [int(v) & mask for v in a]  # two's complement, by Python ints
    back = hexio.array_from_words(w, dtype=dtype, shape=a.shape, word_bits=bits, signed=signed)
    assert back.dtype == a.dtype and np.array_equal(back, a)


def test_words_refuse_out_of_range():
    with pytest.raises(ValueError, match=r"array\[2\] = 8 does not fit in a 3-bit word"):
        hexio.words_from_array(np.array([0, 1, 8], np.int8), 3)
    with pytest.raises(ValueError, match="sign-magnitude"):
        hexio.words_from_array(np.array([-8], np.int8), 4, sign_magnitude=True)


def test_sign_magnitude_words_exhaustive():
    a = np.arange(-7, 8, dtype=np.int8)
    w = hexio.words_from_array(a, 4, sign_magnitude=True)
    assert [int(x) for x in w] == [(8 | -v) if v < 0 else v for v in range(-7, 8)]
    back = hexio.array_from_words(w, dtype=np.int8, shape=a.shape, word_bits=4, signed=True, sign_magnitude=True)
    assert np.array_equal(back, a)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_words_are_bit_patterns(dtype):
    a = np.array([0.0, -0.0, 1.5, -2.0, np.inf, np.nan, np.finfo(dtype).tiny], dtype=dtype)
    bits = a.dtype.itemsize * 8
    w = hexio.words_from_array(a, bits)
    assert np.array_equal(w, a.view(f"u{a.dtype.itemsize}"))
    back = hexio.array_from_words(w, dtype=dtype, shape=a.shape, word_bits=bits, signed=False)
    assert np.array_equal(back.view(w.dtype), w)
    with pytest.raises(ValueError, match="needs word_bits"):
        hexio.words_from_array(a, bits // 2)


def test_write_and_read_file(tmp_path):
    w = np.array([0, 5, 0xFFFFFFFF], dtype=np.uint32)
    calls = []
    hexio.write_hex(tmp_path / "a.hex", w, 32, progress=lambda d, n: calls.append((d, n)))
    assert (tmp_path / "a.hex").read_bytes() == b"00000000\n00000005\nffffffff\n"
    assert calls[-1] == (3, 3)
    assert hexio.read_hex(tmp_path / "a.hex", word_bits=32).tolist() == [0, 5, 0xFFFFFFFF]


@st.composite
def typed_arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(["i1", "u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8"])))
    signed = dtype.kind == "i"
    bits = draw(st.integers(1, 8 * dtype.itemsize))
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    vals = draw(st.lists(st.integers(lo, hi), max_size=30))
    return np.array(vals, dtype=dtype), bits


@given(typed_arrays(), st.sampled_from([1, 3, 1 << 18]))
def test_array_writer_equals_scalar_twin(tmp_path_factory, case, chunk):
    """write_array_hex (per-chunk conversion, unmasked fast path) == Python formatting of v mod 2^bits."""
    a, bits = case
    old = hexio.CHUNK_WORDS
    hexio.CHUNK_WORDS = chunk
    try:
        path = tmp_path_factory.mktemp("h") / "a.hex"
        hexio.write_array_hex(path, a, bits)
    finally:
        hexio.CHUNK_WORDS = old
    assert path.read_bytes() == hexio.format_hex_scalar([int(v) % (1 << bits) for v in a], bits)


def test_a_stage_must_fit_its_declared_signedness():
    """8 fits a 4-bit word only as unsigned: a signed stage holding it would read back as -8."""
    from golden.presets import stage

    with pytest.raises(ValueError, match=r"does not fit the signed 4-bit range \[-8, 7\]"):
        stage("codes", np.array([1, 8], np.int8), doc="", word_bits=4, signed=True)
    with pytest.raises(ValueError, match=r"does not fit the unsigned 4-bit range \[0, 15\]"):
        stage("codes", np.array([-1], np.int8), doc="", word_bits=4, signed=False)
    assert stage("codes", np.array([8], np.uint8), doc="", word_bits=4, signed=False).word_bits == 4
