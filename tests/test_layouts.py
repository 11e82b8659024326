"""Bit layouts: every code through pack/unpack in every layout, against each source's own description."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refsim
from refsim.layouts import LAYOUTS, code_limits
from refsim.scalar import pack_scalar, unpack_scalar

CORE_LAYOUTS = ["int4_lo_first", "int4_word32", "int3_gptq", "int3_planar", "int3_stream", "int8", "int3_word32",
                "int4_word32_offset", "int3_word32_offset"]


def all_codes(lay, signed):
    lo, hi = code_limits(lay, signed)
    return np.arange(lo, hi + 1)


@pytest.mark.parametrize("name", CORE_LAYOUTS)
@pytest.mark.parametrize("signed", [True, False])
def test_every_code_at_every_position(name, signed):
    """Exhaustive: each code value sits at each position of a padding block (and across blocks)."""
    lay = LAYOUTS[name]
    codes = all_codes(lay, signed)
    period = max(lay.block_values, 8)
    for count in range(1, 2 * period + 2):
        for shift in range(len(codes)):
            seq = np.roll(np.resize(codes, count), shift)  # every code, at shifting positions
            packed = refsim.pack(seq, name, signed=signed)
            assert packed.dtype == np.uint8 and packed.size == lay.nbytes(count)
            assert packed.tobytes() == pack_scalar(seq.tolist(), name)
            assert np.array_equal(refsim.unpack(packed, name, count, signed=signed), seq)
            assert unpack_scalar(packed.tobytes(), name, count, signed) == seq.tolist()
            if count > 40:
                break


@pytest.mark.parametrize("name", CORE_LAYOUTS)
@given(data=st.data())
def test_random_codes_match_the_scalar_packer(name, data):
    lay = LAYOUTS[name]
    signed = data.draw(st.booleans())
    lo, hi = code_limits(lay, signed)
    seq = np.array(data.draw(st.lists(st.integers(lo, hi), min_size=1, max_size=200)))
    packed = refsim.pack(seq, name, signed=signed)
    assert packed.tobytes() == pack_scalar(seq.tolist(), name)
    assert np.array_equal(refsim.unpack(packed, name, len(seq), signed=signed), seq)


def test_gptq_int3_is_the_plain_bit_stream_padded_to_32_values():
    """The GPTQ packer's straddling words (values 10 and 21) are exactly bits [3i, 3i+3)."""
    seq = np.arange(64) % 8
    assert pack_scalar(seq.tolist(), "int3_gptq") == pack_scalar(seq.tolist(), "int3_stream")
    w = np.frombuffer(pack_scalar([0] * 10 + [7] + [0] * 21, "int3_gptq"), dtype="<u4")
    assert w.tolist() == [0b11 << 30, 0b1, 0]  # value 10: two bits at 30..31 of word 0, one in word 1


def test_onnx_nibble_order_and_word32_order():
    assert refsim.pack(np.array([1, -2, 3]), "int4_lo_first").tolist() == [0xE1, 0x03]
    w = np.frombuffer(refsim.pack(np.arange(8), "int4_word32").tobytes(), dtype="<u4")
    assert w.tolist() == [0x76543210]


def test_planar_fields():
    seq = np.zeros(32, dtype=np.int64)
    seq[17] = 0b110
    w = np.frombuffer(refsim.pack(seq, "int3_planar").tobytes(), dtype="<u4")
    assert w.tolist() == [0, 0b10 << 2, 1 << 17]


@given(st.integers(1, 4), st.integers(1, 40), st.sampled_from(CORE_LAYOUTS), st.integers(0, 10**6))
def test_packing_along_an_axis(rows, count, name, seed):
    rng = np.random.default_rng(seed)
    lay = LAYOUTS[name]
    lo, hi = code_limits(lay, lay.signed)
    c = rng.integers(lo, hi + 1, size=(count, rows))
    packed = refsim.pack(c, name, axis=0)
    assert packed.shape == (lay.nbytes(count), rows)
    for r in range(rows):
        assert np.array_equal(packed[:, r], refsim.pack(c[:, r], name))
    assert np.array_equal(refsim.unpack(packed, name, count, axis=0), c)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"codes\(1,\) = 8 is outside the allowed range \[-8, 7\]"):
        refsim.pack(np.array([0, 8]), "int4_lo_first")
    with pytest.raises(ValueError, match=r"codes\(0,\) = -1 is outside the allowed range \[0, 7\]"):
        refsim.pack(np.array([-1]), "int3_gptq")
    with pytest.raises(ValueError, match="layout='int5' is not known; allowed: int4_lo_first"):
        refsim.pack(np.array([0]), "int5")
    with pytest.raises(ValueError, match="data holds 1 bytes along axis 0; 3 codes of layout int4_lo_first need 2"):
        refsim.unpack(np.zeros(1, np.uint8), "int4_lo_first", 3)
    with pytest.raises(TypeError, match="codes must be an integer array"):
        refsim.pack(np.array([1.0]), "int4_lo_first")
    with pytest.raises(TypeError, match="data must be a uint8 array"):
        refsim.unpack(np.zeros(2, np.int8), "int4_lo_first", 3)


def test_compressed_tensors_3bit_stream_pads_to_words_not_values():
    """33 codes of 3 bits: 99 bits -> 4 words (int3_word32), whereas GPTQ pads to 64 values (6 words)."""
    assert refsim.LAYOUTS["int3_word32"].nbytes(33) == 16
    assert refsim.LAYOUTS["int3_gptq"].nbytes(33) == 24
    assert refsim.LAYOUTS["int3_stream"].nbytes(33) == 13
    seq = np.arange(33) % 8
    assert refsim.pack(seq, "int3_word32").tobytes()[:13] == refsim.pack(seq, "int3_stream").tobytes()


def test_offset_binary_stores_v_plus_half_the_range():
    w = np.frombuffer(refsim.pack(np.array([-8, -1, 0, 7, 0, 0, 0, 0]), "int4_word32_offset").tobytes(), "<u4")
    assert w.tolist() == [0x8888F870]  # nibbles 0, 7, 8, 15, then 8s
    with pytest.raises(ValueError, match=r"codes\(0,\) = 8 is outside the allowed range \[-8, 7\]"):
        refsim.pack(np.array([8]), "int4_word32_offset")
    assert refsim.pack(np.array([-128, -1, 127]), "int8").tolist() == [0x80, 0xFF, 0x7F]
