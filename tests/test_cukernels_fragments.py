"""lowbit_gemm.cu's index mappings checked against the PTX ISA's stated layouts, not against the reference.

PTX ISA v9.2, section 9.7.14.5 "Matrix Fragments for mma.m16n8k32", .s8 operands (Figure 88 for A,
the B and C/D figures after it), with groupID = laneid >> 2 and threadID_in_group = laneid % 4:
  A (16 x 32, row): element a_i (i = 0..15; register i // 4, byte i % 4) sits at
      row = groupID for 0 <= i < 4 or 8 <= i < 12, groupID + 8 otherwise;
      col = threadID_in_group * 4 + (i & 3) for i < 8, + 16 for i >= 8;
  B (32 x 8, col): b_i (i = 0..7; register i // 4) at row = threadID_in_group * 4 + (i & 3) (+ 16 for
      i >= 4), col = groupID;
  C / D (16 x 8, s32): c_i (i = 0..3) at row = groupID (+ 8 for i >= 2), col = threadID_in_group * 2 + (i & 1).
The functions below are those formulas; the emulations are the kernel's code, line for line
(load_tile, the fragment loads from the shared rows, frag_row / frag_col, unpack8_int4 with
__byte_perm and __vsub4 as the CUDA Math API defines them, planar3_code).
"""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cukernels import host
from refsim.layouts import unpack

SROW = 12  # lowbit_gemm.cu: words per shared row


def ptx_a(lane, i):
    g, t = lane >> 2, lane % 4
    row = g if (i < 4 or 8 <= i < 12) else g + 8
    col = t * 4 + (i & 3) + (16 if i >= 8 else 0)
    return row, col


def ptx_b(lane, i):
    g, t = lane >> 2, lane % 4
    return t * 4 + (i & 3) + (16 if i >= 4 else 0), g


def ptx_c(lane, i):
    g, t = lane >> 2, lane % 4
    return g + (8 if i >= 2 else 0), t * 2 + (i & 1)


def byte_perm(x, y, s):
    """CUDA __byte_perm(x, y, s): result byte n is byte ((s >> 4 n) & 7) of the 8 bytes x0..x3 y0..y3."""
    src = [(x >> (8 * b)) & 0xFF for b in range(4)] + [(y >> (8 * b)) & 0xFF for b in range(4)]
    return sum(src[(s >> (4 * n)) & 7] << (8 * n) for n in range(4))


def vsub4(a, b):
    """CUDA __vsub4: bytewise a - b modulo 256, no borrow between bytes."""
    return sum(((((a >> (8 * n)) & 0xFF) - ((b >> (8 * n)) & 0xFF)) & 0xFF) << (8 * n) for n in range(4))


def unpack8_int4(word):
    """common.cuh unpack8_int4, as written."""
    even = vsub4((word & 0x0F0F0F0F) ^ 0x08080808, 0x08080808)
    odd = vsub4(((word >> 4) & 0x0F0F0F0F) ^ 0x08080808, 0x08080808)
    return byte_perm(even, odd, 0x5140), byte_perm(even, odd, 0x7362)


def planar3_code(w0, w1, w2, j, is_signed):
    """common.cuh planar3_code, as written."""
    low = ((w0 if j < 16 else w1) >> (2 * (j & 15))) & 3
    v = low | (((w2 >> j) & 1) << 2)
    return ((v ^ 4) - 4) if is_signed else v


def pack4_int8(a, b, c, d):
    return (a & 0xFF) | ((b & 0xFF) << 8) | ((c & 0xFF) << 16) | ((d & 0xFF) << 24)


def int8s(word):
    return [((word >> (8 * n)) & 0xFF) - (256 if (word >> (8 * n)) & 0x80 else 0) for n in range(4)]


def load_tile(packed, bits, row0, kt, rows_total):
    """load_tile<BITS>: the 128 threads' stores of rows [row0, row0 + 64) of K tile kt into dst[64][SROW]."""
    words = packed.view("<u4")
    dst = np.full((64, SROW), -1, dtype=np.int64)  # -1: never written (pad words stay unread)
    for tid in range(128):
        if bits == 4:
            for rep in range(2):
                r, w = tid // 4 + rep * 32, tid % 4
                lo = hi = 0
                if row0 + r < rows_total:
                    lo, hi = unpack8_int4(int(words[row0 + r, kt * 4 + w]))
                dst[r, 2 * w], dst[r, 2 * w + 1] = lo, hi
        else:
            r, h = tid // 2, tid % 2
            out = [0, 0, 0, 0]
            if row0 + r < rows_total:
                w0, w1, w2 = (int(v) for v in words[row0 + r, kt * 3:kt * 3 + 3])
                for q in range(4):
                    j = 16 * h + 4 * q
                    out[q] = pack4_int8(*(planar3_code(w0, w1, w2, j + e, True) for e in range(4)))
            for q in range(4):
                dst[r, 4 * h + q] = out[q]
    return dst


@given(bits=st.sampled_from([3, 4]), rows=st.integers(1, 70), tiles=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_load_tile_puts_codes_4j_to_4j_plus_3_in_word_j(bits, rows, tiles, seed):
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    codes = rng.integers(lo, hi, size=(rows, 32 * tiles), endpoint=True)
    packed = host.pack_lowbit_operand(codes, [32 * tiles], bits)
    assert np.array_equal(unpack(packed, host.LOWBIT_LAYOUTS[bits], 32 * tiles, axis=1, signed=True), codes)
    kt = int(rng.integers(0, tiles))
    dst = load_tile(packed, bits, 0, kt, rows)
    for r in range(64):
        for j in range(8):
            want = list(codes[r, 32 * kt + 4 * j:32 * kt + 4 * j + 4]) if r < rows else [0, 0, 0, 0]
            assert int8s(int(dst[r, j])) == want, (r, j)
        assert np.all(dst[r, 8:] == -1)  # the 4 pad words are never written (nor read: see below)


def test_fragment_loads_give_the_ptx_fragments_and_the_mma_product():
    """As[r][t], As[r + 8][t], As[r][t + 4], As[r + 8][t + 4] and Ws[nr][t], Ws[nr][t + 4] (the kernel's loads)
    hold exactly the elements the PTX ISA assigns to a0..a15 and b0..b7; the D fragment assembled by
    ptx_c then equals A @ B^T, and frag_row / frag_col (host twins) are ptx_c."""
    rng = np.random.default_rng(5)
    a = rng.integers(-8, 7, size=(64, 32), endpoint=True)
    w = rng.integers(-8, 7, size=(64, 32), endpoint=True)
    As = load_tile(host.pack_lowbit_operand(a, [32], 4), 4, 0, 0, 64)
    Ws = load_tile(host.pack_lowbit_operand(w, [32], 4), 4, 0, 0, 64)
    for warp in range(4):
        wm, wn = (warp // 2) * 32, (warp % 2) * 32
        for i in range(2):
            for j in range(4):
                d = np.zeros((16, 8), dtype=np.int64)
                for lane in range(32):
                    g, t = lane >> 2, lane % 4
                    r, nr = wm + 16 * i + g, wn + 8 * j + g
                    regs_a = [As[r, t], As[r + 8, t], As[r, t + 4], As[r + 8, t + 4]]
                    regs_b = [Ws[nr, t], Ws[nr, t + 4]]
                    for e in range(16):
                        row, col = ptx_a(lane, e)
                        assert int8s(int(regs_a[e // 4]))[e % 4] == a[wm + 16 * i + row, col]
                    for e in range(8):
                        k, col = ptx_b(lane, e)
                        assert int8s(int(regs_b[e // 4]))[e % 4] == w[wn + 8 * j + col, k]
                    tile = a[wm + 16 * i:wm + 16 * i + 16] @ w[wn + 8 * j:wn + 8 * j + 8].T
                    for e in range(4):
                        row, col = ptx_c(lane, e)
                        d[row, col] = tile[row, col]
                        # lowbit_gemm.cu frag_row(i, g, e) = 16 i + g + 8 (e / 2); frag_col(j, t, e) = 8 j + 2 t + e % 2
                        assert (16 * i + g + 8 * (e // 2), 8 * j + 2 * t + e % 2) == (16 * i + row, 8 * j + col)
                assert np.array_equal(d, a[wm + 16 * i:wm + 16 * i + 16] @ w[wn + 8 * j:wn + 8 * j + 8].T)


def test_ptx_fragments_cover_each_element_once():
    a_cells = sorted(ptx_a(lane, e) for lane in range(32) for e in range(16))
    assert a_cells == [(r, c) for r in range(16) for c in range(32)]
    b_cells = sorted(ptx_b(lane, e) for lane in range(32) for e in range(8))
    assert b_cells == [(k, n) for k in range(32) for n in range(8)]
    c_cells = sorted(ptx_c(lane, e) for lane in range(32) for e in range(4))
    assert c_cells == [(r, c) for r in range(16) for c in range(8)]


def test_fragment_loads_are_bank_conflict_free():
    """Row stride 12 words: the 32 lanes' As[r][t] (r = base + g) fall in 32 distinct banks, for every word offset."""
    for base in (0, 8, 16, 24, 32, 48):
        for off in (0, 4):
            banks = {((base + (lane >> 2)) * SROW + (lane % 4) + off) % 32 for lane in range(32)}
            assert len(banks) == 32


def test_unpack_helpers_match_refsim_layouts_exhaustively():
    # every nibble value at every position of an int4 word
    for v in range(16):
        for pos in range(8):
            lo, hi = unpack8_int4(v << (4 * pos))
            got = int8s(lo) + int8s(hi)
            want = [0] * 8
            want[pos] = v - 16 if v >= 8 else v
            assert got == want
    # every 3-bit code at every position of an int3_planar block
    for v in range(8):
        for j in range(32):
            codes = np.zeros((1, 32), dtype=np.int64)
            codes[0, j] = v - 8 if v >= 4 else v
            w0, w1, w2 = (int(x) for x in host.pack_lowbit_operand(codes, [32], 3).view("<u4")[0])
            assert [planar3_code(w0, w1, w2, i, True) for i in range(32)] == list(codes[0])


@given(sizes=st.lists(st.integers(1, 70), min_size=1, max_size=5), seed=st.integers(0, 2**32 - 1))
def test_cluster_padding_keeps_tiles_inside_clusters(sizes, seed):
    """The kernel walks tiles kt in [poff[c] / 32, poff[c + 1] / 32) per cluster c: every tile holds codes of
    one cluster only (real ones first, then zero padding), which is what lets the accumulators restart per cluster."""
    poff = host.padded_cluster_offsets(sizes)
    src, cid = host.padded_source_map(sizes)
    tiles = [(kt, c) for c in range(len(sizes)) for kt in range(poff[c] // 32, poff[c + 1] // 32)]
    assert [kt for kt, _ in tiles] == list(range(int(poff[-1]) // 32))
    for kt, c in tiles:
        assert np.all(cid[32 * kt:32 * kt + 32] == c)
        real = src[32 * kt:32 * kt + 32] >= 0
        assert not np.any(np.diff(real.astype(int)) > 0)  # real codes, then padding
