"""SDR encode / decode / layouts: the paper's worked examples, the scalar twin, exhaustive domains."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import acc_spec, sdr_spec, specs

import refsim
from refsim.sdr import sdr_decode, sdr_encode
from refsim.sdr_scalar import (
    pack_nibbles_scalar,
    sdr_decode_scalar,
    sdr_encode_group_scalar,
    sdr_encode_scalar,
    unpack_nibbles_scalar,
)

# --- the paper's worked examples (DESIGN.md "SDR") ----------------------------------------------


def test_worked_example_1_overflow_floors():
    codes, flags = sdr_encode(np.array([1004, 180, -238, 284], dtype=np.int16), group_size=4, base_bits=16,
                              spec=sdr_spec())
    assert flags.tolist() == [7]
    assert codes.tolist() == [7, 1, -2, 2]  # 1004 / 128 = 7.84 rounds to 8, floored to 7


def test_worked_example_2():
    codes, flags = sdr_encode(np.array([-108, 148, 226, 28], dtype=np.int16), group_size=4, base_bits=16,
                              spec=sdr_spec())
    assert flags.tolist() == [5]
    assert codes.tolist() == [-3, 5, 7, 1]


def test_worked_example_3_decompression_free_product():
    # A lone element is a ragged group: the zero padding leaves the OR unchanged.
    wc, wf = sdr_encode(np.array([[-23]], dtype=np.int8), group_size=8, base_bits=8, spec=sdr_spec())
    ac, af = sdr_encode(np.array([[-1350]], dtype=np.int16), group_size=8, base_bits=16, spec=sdr_spec())
    assert (wc.item(), wf.item()) == (-6, 2)
    assert (ac.item(), af.item()) == (-5, 8)
    assert sdr_decode(wc, wf, group_size=8).item() == -24
    assert sdr_decode(ac, af, group_size=8).item() == -1280
    prod = refsim.sdr_gemm(ac, af, wc.T, wf.T, group_size=8, spec=acc_spec(64))
    assert prod.item() == (6 * 5) << (2 + 8) == 30720 == 24 * 1280


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("base_bits,value", [(8, -128), (16, -32768)])
def test_most_negative_value_is_refused(base_bits, value):
    with pytest.raises(ValueError, match=r"-2\^\(base_bits-1\)"):
        sdr_encode(np.array([1, value]), group_size=2, base_bits=base_bits, spec=sdr_spec())


def test_out_of_range_is_refused():
    with pytest.raises(ValueError, match="outside the base_bits=8"):
        sdr_encode(np.array([1, 300]), group_size=2, base_bits=8, spec=sdr_spec())


@pytest.mark.parametrize("g", [0, 1, 3, 12, 24, -8, 2.0, True])
def test_bad_group_size(g):
    with pytest.raises(ValueError, match="group_size"):
        sdr_encode(np.zeros(8, dtype=np.int8), group_size=g, base_bits=8, spec=sdr_spec())


@pytest.mark.parametrize("keep", [8, 9, 0, -1])
def test_bad_keep(keep):
    with pytest.raises(ValueError, match="keep"):
        sdr_encode(np.zeros(8, dtype=np.int8), group_size=8, base_bits=8, keep=keep, spec=sdr_spec())


def test_non_integer_input():
    with pytest.raises(TypeError, match="x must be an integer array"):
        sdr_encode(np.array([1.0, 2.0]), group_size=2, base_bits=8, spec=sdr_spec())
    with pytest.raises(TypeError, match="x must be an integer array"):
        sdr_encode(np.array([True, False]), group_size=2, base_bits=8, spec=sdr_spec())


def test_bad_rounding_and_axis():
    with pytest.raises(ValueError, match="rounding"):
        sdr_encode(np.zeros(4, dtype=np.int8), group_size=2, base_bits=8, spec=sdr_spec("floor"))
    with pytest.raises(ValueError, match="axis"):
        sdr_encode(np.zeros(4, dtype=np.int8), group_size=2, base_bits=8, axis=1, spec=sdr_spec())


def test_spec_rounding_enum_is_accepted():
    x = np.array([3, 5, 7, 9], dtype=np.int8)
    a = sdr_encode(x, group_size=4, base_bits=8, keep=2, spec=sdr_spec(refsim.preset("qrazor").sdr_rounding))
    b = sdr_encode(x, group_size=4, base_bits=8, keep=2, spec=sdr_spec("half_up"))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_decode_checks_shapes_and_ranges():
    with pytest.raises(ValueError, match="flags has shape"):
        sdr_decode(np.zeros((2, 9), dtype=np.int8), np.zeros((2, 1), dtype=np.uint8), group_size=8)
    with pytest.raises(ValueError, match="flags must lie"):
        sdr_decode(np.zeros(4, dtype=np.int8), np.array([16, 0]), group_size=2)
    with pytest.raises(ValueError, match="codes must lie"):
        sdr_decode(np.array([-128, 0]), np.array([0]), group_size=2)


# --- the scalar twin ----------------------------------------------------------------------------


def _twin(x2d, g, base_bits, keep, rounding):
    codes, flags = [], []
    for row in x2d.tolist():
        c, f = sdr_encode_scalar(row, group_size=g, base_bits=base_bits, keep=keep, spec=sdr_spec(rounding))
        codes.append(c)
        flags.append(f)
    return np.array(codes, dtype=np.int64), np.array(flags, dtype=np.int64)


@st.composite
def sdr_cases(draw):
    base_bits = draw(st.sampled_from([8, 16, 2, 5, 12]))
    keep = draw(st.integers(1, min(base_bits - 1, 7)))
    g = draw(st.sampled_from([2, 4, 8, 16, 32]))
    rows = draw(st.integers(1, 4))
    d = draw(st.integers(1, 70))
    lim = (1 << (base_bits - 1)) - 1
    # mix of small and full-range magnitudes so that every shift is reached
    top = draw(st.integers(0, base_bits - 1))
    hi = min(lim, (1 << top))
    vals = draw(st.lists(st.integers(-hi, hi), min_size=rows * d, max_size=rows * d))
    x = np.array(vals, dtype=np.int16 if base_bits > 8 else np.int8).reshape(rows, d)
    rounding = draw(st.sampled_from(["half_up", "ties_even"]))
    return x, g, base_bits, keep, rounding


@given(sdr_cases())
def test_encode_equals_scalar_twin(case):
    x, g, base_bits, keep, rounding = case
    codes, flags = sdr_encode(x, group_size=g, base_bits=base_bits, keep=keep, spec=sdr_spec(rounding))
    tc, tf = _twin(x, g, base_bits, keep, rounding)
    assert codes.dtype == np.int8 and flags.dtype == np.uint8
    assert np.array_equal(codes.astype(np.int64), tc)
    assert np.array_equal(flags.astype(np.int64), tf)
    dec = sdr_decode(codes, flags, group_size=g)
    twin_dec = [sdr_decode_scalar(c, f, group_size=g) for c, f in zip(tc.tolist(), tf.tolist(), strict=True)]
    assert np.array_equal(dec, np.array(twin_dec, dtype=np.int64))


@given(sdr_cases(), st.integers(0, 2))
def test_axis_is_a_transpose(case, axis):
    x, g, base_bits, keep, rounding = case
    x3 = np.stack([x, -x, x // 2])  # (3, rows, d): move the grouped axis around
    x3 = np.moveaxis(x3, 2, axis)
    codes, flags = sdr_encode(x3, group_size=g, base_bits=base_bits, keep=keep, axis=axis, spec=sdr_spec(rounding))
    ref_c, ref_f = sdr_encode(np.moveaxis(x3, axis, -1), group_size=g, base_bits=base_bits, keep=keep,
                              spec=sdr_spec(rounding))
    assert np.array_equal(np.moveaxis(codes, axis, -1), ref_c)
    assert np.array_equal(np.moveaxis(flags, axis, -1), ref_f)
    dec = sdr_decode(codes, flags, group_size=g, axis=axis)
    assert np.array_equal(np.moveaxis(dec, axis, -1), sdr_decode(ref_c, ref_f, group_size=g))


@given(sdr_cases())
def test_decode_error_is_bounded_and_codes_fit(case):
    """|decode - x| <= 2^(f-1) (a rounding), or < 2^f on the overflow floor; codes fit keep bits."""
    x, g, base_bits, keep, rounding = case
    codes, flags = sdr_encode(x, group_size=g, base_bits=base_bits, keep=keep, spec=sdr_spec(rounding))
    assert np.abs(codes.astype(int)).max() <= (1 << keep) - 1
    f = np.repeat(flags.astype(np.int64), g, axis=-1)[:, : x.shape[1]]
    err = np.abs(sdr_decode(codes, flags, group_size=g) - x.astype(np.int64))
    assert np.all(err < np.maximum(1 << f, 1))
    assert np.all(np.sign(codes) * np.sign(x) >= 0)  # the sign survives or the code is 0


# --- exhaustive domains -------------------------------------------------------------------------


def _contexts(values, length, g=4):
    """Each value in a group whose largest magnitude has bit length ``length``: [v, 2^(length-1), -v, 0]."""
    n = values.size
    x = np.zeros((n, g), dtype=np.int64)
    x[:, 0] = values
    x[:, 1] = 1 << (length - 1) if length else 0
    x[:, 2] = -values
    return x


def _encode_equals_twin(x, base_bits, keep, rounding):
    """sdr_encode of groups of 4 equals the scalar twin bit for bit; returns (codes, flags)."""
    codes, flags = sdr_encode(x, group_size=4, base_bits=base_bits, keep=keep, spec=sdr_spec(rounding))
    tc, tf = _twin(x, 4, base_bits, keep, rounding)
    assert np.array_equal(codes, tc) and np.array_equal(flags, tf)
    return codes, flags


@pytest.mark.parametrize("keep", range(1, 8))
@pytest.mark.parametrize("rounding", ["half_up", "ties_even"])
def test_every_int8_value_in_every_shift_context(keep, rounding):
    """Every int8 value v in a group whose razoring point L runs over bitlen(v)..7: every shift."""
    seen = set()
    for length in range(0, 8):
        lim = (1 << length) - 1  # values whose bit length is <= L
        vals = np.arange(-lim, lim + 1)
        x = _contexts(vals, length).astype(np.int8)
        _, flags = _encode_equals_twin(x, 8, keep, rounding)
        assert np.all(flags == max(0, length - keep))
        seen.add(max(0, length - keep))
    assert seen == set(range(0, 8 - keep))  # every shift 0..7-keep was reached


@pytest.mark.parametrize("rounding", ["half_up", "ties_even"])
def test_every_int16_value_around_each_power_of_two(rounding):
    vals = sorted({v for p in range(16) for v in range((1 << p) - 4, (1 << p) + 5) if 0 <= v <= 32767})
    vals = np.array(vals + [-v for v in vals])
    for keep in (3, 7):
        for length in range(0, 16):
            sub = vals[np.abs(vals) < (1 << length)]
            _encode_equals_twin(_contexts(sub, length).astype(np.int16), 16, keep, rounding)


@pytest.mark.parametrize("keep", [1, 3, 7])
def test_every_rounding_tie(keep):
    """m = q 2^f + 2^(f-1) for every kept q and shift f: half_up goes up, ties_even to even;
    a carry out of keep bits (q = 2^keep - 1) floors back to q under both."""
    maxr = (1 << keep) - 1
    for shift in range(1, 16 - keep):
        length = keep + shift
        q = np.arange(0, maxr + 1)
        m = q * (1 << shift) + (1 << (shift - 1))
        for sign in (1, -1):
            x = _contexts(sign * m, length).astype(np.int16)
            for rounding in ("half_up", "ties_even"):
                codes, flags = sdr_encode(x, group_size=4, base_bits=16, keep=keep, spec=sdr_spec(rounding))
                assert np.all(flags == shift)
                tc, _ = _twin(x, 4, 16, keep, rounding)
                assert np.array_equal(codes, tc)
                up = q + 1 if rounding == "half_up" else q + (q & 1)
                want = np.where(up > maxr, q, up)
                assert np.array_equal(np.abs(codes[:, 0].astype(int)), want)
                assert np.array_equal(codes[:, 0].astype(int), sign * want)


def test_zero_magnitude_has_sign_zero():
    # -1 in a group razored by 4: rounds to magnitude 0, which has no sign
    codes, flags = sdr_encode(np.array([-1, 100, -3], dtype=np.int8), group_size=4, base_bits=8, spec=sdr_spec())
    assert flags.tolist() == [4] and codes.tolist()[0] == 0
    assert unpack_nibbles_scalar(refsim.pack(codes, "sdr_code4").tobytes(), 3, sign_magnitude=True)[0] == 0
    assert refsim.pack(codes, "sdr_code4")[0] & 0xF == 0  # not 0x8


def test_exhaustive_int16_own_group_and_full_context():
    """Every int16 magnitude alone in its group and in a group whose OR reaches bit 14, keep 3."""
    v = np.arange(-32767, 32768)
    for rounding in ("half_up", "ties_even"):
        alone = np.stack([v, np.zeros_like(v)], axis=1).astype(np.int16)
        c1, f1 = sdr_encode(alone, group_size=2, base_bits=16, spec=sdr_spec(rounding))
        full = np.stack([v, np.full_like(v, 1 << 14)], axis=1).astype(np.int16)
        c2, f2 = sdr_encode(full, group_size=2, base_bits=16, spec=sdr_spec(rounding))
        # the twin, on one group per distinct (magnitude, sign) is the whole domain: run it on all
        t1 = [sdr_encode_group_scalar([int(a), 0], base_bits=16, keep=3, spec=sdr_spec(rounding)) for a in v[::7]]
        assert np.array_equal(c1[::7, 0], [t[0][0] for t in t1])
        assert np.array_equal(f1[::7, 0], [t[1] for t in t1])
        t2 = [sdr_encode_group_scalar([int(a), 1 << 14], base_bits=16, keep=3, spec=sdr_spec(rounding))
              for a in v[3::7]]
        assert np.array_equal(c2[3::7, 0], [t[0][0] for t in t2])
        assert np.all(f2 == 12)
        # the rest of the domain against the formula written over Python ints
        length = np.array([int(abs(a)).bit_length() for a in v])
        shift = np.maximum(length - 3, 0)
        m = np.abs(v)
        if rounding == "half_up":
            r = (m + ((1 << shift) >> 1)) >> shift
        else:
            r = np.array([round(int(a) / (1 << int(s))) for a, s in zip(m, shift, strict=True)])  # round(): ties even
        r = np.where(r == 8, m >> shift, r)
        assert np.array_equal(c1[:, 0], np.sign(v) * r)
        assert np.array_equal(f1[:, 0], shift)


# --- bit layouts --------------------------------------------------------------------------------


@given(st.lists(st.integers(-7, 7), min_size=1, max_size=40), st.lists(st.integers(0, 15), min_size=1, max_size=9))
def test_sdr_layouts_equal_scalar_packer(codes, flags):
    c = np.array(codes)
    f = np.array(flags)
    packed_c = refsim.pack(c, "sdr_code4")
    packed_f = refsim.pack(f, "sdr_flags4")
    assert packed_c.tobytes() == pack_nibbles_scalar(codes, sign_magnitude=True)
    assert packed_f.tobytes() == pack_nibbles_scalar(flags, sign_magnitude=False)
    assert packed_c.size == -(-len(codes) // 2)
    assert np.array_equal(refsim.unpack(packed_c, "sdr_code4", len(codes)), c)
    assert np.array_equal(refsim.unpack(packed_f, "sdr_flags4", len(flags)), f)
    assert unpack_nibbles_scalar(packed_c.tobytes(), len(codes), sign_magnitude=True) == codes


def test_sdr_layout_field_order_drawn_in_docs():
    # docs/sdr.md: codes [-3, 5] -> byte 0x5B (low nibble 1011 = -3, high nibble 0101 = 5)
    assert refsim.pack(np.array([-3, 5]), "sdr_code4").tolist() == [0x5B]
    assert refsim.pack(np.array([7, 12]), "sdr_flags4").tolist() == [0xC7]
    assert refsim.pack(np.array([-100]), "sdr_code8").tolist() == [0x80 | 100]
    with pytest.raises(ValueError, match="outside"):
        refsim.pack(np.array([-8]), "sdr_code4")


def test_sdr_layouts_pack_along_an_axis():
    x = np.arange(-60, 60).reshape(8, 15).astype(np.int16)
    codes, flags = sdr_encode(x, group_size=4, base_bits=16, axis=0, spec=sdr_spec())  # grouped along axis 0
    pc = refsim.pack(codes, "sdr_code4", axis=0)
    pf = refsim.pack(flags, "sdr_flags4", axis=0)
    assert pc.shape == (4, 15) and pf.shape == (1, 15)
    c2 = refsim.unpack(pc, "sdr_code4", 8, axis=0)
    f2 = refsim.unpack(pf, "sdr_flags4", 2, axis=0)
    assert np.array_equal(sdr_decode(c2, f2, group_size=4, axis=0), sdr_decode(codes, flags, group_size=4, axis=0))


@pytest.mark.parametrize("shape,axis", [((3, 0), -1), ((0, 5), -1), ((0, 5), 0)])
def test_empty_inputs(shape, axis):
    codes, flags = sdr_encode(np.zeros(shape, np.int16), group_size=4, base_bits=16, axis=axis, spec=sdr_spec())
    assert codes.shape == shape
    want = list(shape)
    want[axis] = -(-shape[axis] // 4)
    assert flags.shape == tuple(want)
    assert sdr_decode(codes, flags, group_size=4, axis=axis).shape == shape


@pytest.mark.parametrize("keep", [3] + [pytest.param(k, marks=pytest.mark.slow) for k in (1, 2, 4, 5, 6, 7)])
def test_every_int16_value_in_every_context_against_the_twin(keep):
    """The whole int16 domain, each value in every group context L = bitlen(v)..15 (about 4 s per
    keep; keep 3, the A4 code, runs by default, the other keeps under -m slow)."""
    v = np.arange(-32767, 32768)
    for rounding in ("half_up", "ties_even"):
        for length in range(0, 16):
            sub = v[np.abs(v) < (1 << length)]
            _encode_equals_twin(_contexts(sub, length).astype(np.int16), 16, keep, rounding)


@given(spec=specs, data=st.data())
def test_sdr_encode_reads_only_sdr_rounding_of_any_spec(spec, data):
    """Under any spec (every field drawn): an SDR rounding the encoder implements gives the twin's codes
    whatever the other fields hold; every other Rounding value is refused, naming the field."""
    x = np.array(data.draw(st.lists(st.integers(-32767, 32767), min_size=8, max_size=8)), dtype=np.int16)
    if spec.sdr_rounding.value not in ("half_up", "ties_even"):
        with pytest.raises(ValueError, match=f"spec.sdr_rounding='{spec.sdr_rounding.value}' is not allowed"):
            sdr_encode(x, group_size=4, base_bits=16, spec=spec)
        return
    codes, flags = sdr_encode(x, group_size=4, base_bits=16, spec=spec)
    want_c, want_f = sdr_encode_scalar(x.tolist(), group_size=4, base_bits=16, keep=3, spec=spec)
    assert codes.tolist() == want_c and flags.tolist() == want_f
    other = sdr_encode(x, group_size=4, base_bits=16, spec=sdr_spec(spec.sdr_rounding.value))
    assert np.array_equal(other[0], codes) and np.array_equal(other[1], flags)
