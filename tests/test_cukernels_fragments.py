"""lowbit_gemm.cu's index mappings checked against the PTX ISA's stated layouts, not against the reference.

PTX ISA v9.2, section 9.7.14.5 "Matrix Fragments for mma.m16n8k32", .s8 operands (Figure 88 for A,
the B and C/D figures after it), with groupID = laneid >> 2 and threadID_in_group = laneid % 4:
  A (16 x 32, row): element a_i (i = 0..15; register i // 4, byte i % 4) sits at
      row = groupID for 0 <= i < 4 or 8 <= i < 12, groupID + 8 otherwise;
      col = threadID_in_group * 4 + (i & 3) for i < 8, + 16 for i >= 8;
  B (32 x 8, col): b_i (i = 0..7; register i // 4) at row = threadID_in_group * 4 + (i & 3) (+ 16 for
      i >= 4), col = groupID;
  C / D (16 x 8, s32): c_i (i = 0..3) at row = groupID (+ 8 for i >= 2), col = threadID_in_group * 2 + (i & 1).
and section 9.7.14.5.15 "ldmatrix" (.m8n8 .x4 .b16): lanes 8 q .. 8 q + 7 give the addresses of
the 8 rows (16 bytes each) of matrix q; lane l receives in register q the 32 bits at b16
columns 2 (l % 4), 2 (l % 4) + 1 of row l // 4 of matrix q.
The functions below are those formulas; the emulations are the kernel's code, line for line
(issue_tile's row and byte choice, unpack_tile, the ldmatrix row addresses, frag_row / frag_col,
unpack8_int4 with __byte_perm and __vsub4 as the CUDA Math API defines them, planar3_to_int4x8);
planar3_code is a scalar decoder written from the int3_planar layout, to check them against.
"""

import numpy as np
from hypothesis import given, settings
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
    """Code j of an int3_planar block, scalar, from the layout's definition (the reference decoder)."""
    low = ((w0 if j < 16 else w1) >> (2 * (j & 15))) & 3
    v = low | (((w2 >> j) & 1) << 2)
    return ((v ^ 4) - 4) if is_signed else v


def planar3_to_int4x8(low16, high8):
    """common.cuh planar3_to_int4x8, as written."""
    v = low16 & 0xFFFF
    v = (v | (v << 8)) & 0x00FF00FF
    v = (v | (v << 4)) & 0x0F0F0F0F
    v = (v | (v << 2)) & 0x33333333
    h = high8 & 0xFF
    h = (h | (h << 12)) & 0x000F000F
    h = (h | (h << 6)) & 0x03030303
    h = (h | (h << 3)) & 0x11111111
    nib = v | (h << 2)
    return (nib | ((nib & 0x44444444) << 1)) & 0xFFFFFFFF


def int8s(word):
    return [((word >> (8 * n)) & 0xFF) - (256 if (word >> (8 * n)) & 0x80 else 0) for n in range(4)]


RAW_WORDS = {4: 4, 3: 3}
BM = BN = 128


def issue_and_unpack(packed, bits, row0, kt, rows_total, kt_total):
    """issue_tile (thread r copies row row0 + r of K tile kt: bytes kt * 4 RAW_WORDS .. + 4 RAW_WORDS, zeros past
    the rows or tiles) then unpack_tile (the same thread writes words 0..7 of int8 row r): dst[BM][SROW]."""
    words = packed.view("<u4")
    dst = np.full((BM, SROW), -1, dtype=np.int64)  # -1: never written (pad words are never read either)
    rw = RAW_WORDS[bits]
    for r in range(BM):
        valid = row0 + r < rows_total and kt < kt_total
        raw = [int(v) for v in words[row0 + r, kt * rw:kt * rw + rw]] if valid else [0] * rw
        out = []
        if bits == 4:
            for v in raw:
                out.extend(unpack8_int4(v))
        else:
            w0, w1, w2 = raw
            for o in range(4):
                out.extend(unpack8_int4(planar3_to_int4x8((w0 if o < 2 else w1) >> (16 * (o % 2)), w2 >> (8 * o))))
        dst[r, :8] = out
    return dst


def ldmatrix_x4(smem, rows_of, words_of):
    """PTX ldmatrix .x4 .b16 on int8 rows of SROW words: lane l gives row rows_of(l), word offset words_of(l);
    returns regs[lane][q] (32-bit words) as the PTX ISA distributes them."""
    addr = [(rows_of(lane), words_of(lane)) for lane in range(32)]
    regs = [[0] * 4 for _ in range(32)]
    for q in range(4):
        rows = addr[8 * q:8 * q + 8]  # the 8 row addresses of matrix q
        for lane in range(32):
            r, w = rows[lane // 4]
            regs[lane][q] = int(smem[r, w + lane % 4])  # b16 columns 2 (l % 4), +1 = 32-bit word l % 4
    return regs


@given(bits=st.sampled_from([3, 4]), rows=st.integers(1, 140), tiles=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_unpacked_tile_holds_codes_4j_to_4j_plus_3_in_word_j(bits, rows, tiles, seed):
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    codes = rng.integers(lo, hi, size=(rows, 32 * tiles), endpoint=True)
    packed = host.pack_lowbit_operand(codes, [32 * tiles], bits)
    assert np.array_equal(unpack(packed, host.LOWBIT_LAYOUTS[bits], 32 * tiles, axis=1, signed=True), codes)
    kt = int(rng.integers(0, tiles + 1))  # one past the last tile: zeros (the ring's tail)
    dst = issue_and_unpack(packed, bits, 0, kt, rows, tiles)
    for r in range(BM):
        for j in range(8):
            real = r < rows and kt < tiles
            want = list(codes[r, 32 * kt + 4 * j:32 * kt + 4 * j + 4]) if real else [0, 0, 0, 0]
            assert int8s(int(dst[r, j])) == want, (r, j)
        assert np.all(dst[r, 8:] == -1)


def test_ldmatrix_loads_give_the_ptx_fragments_and_the_mma_product():
    """The kernel's ldmatrix row addresses (a_row, a_word, b_row, b_word) give exactly the elements the PTX ISA
    assigns to a0..a15 and b0..b7 of every m16n8k32 tile of every warp's 64 x 32 block; the D fragment
    assembled by ptx_c equals A @ W^T, and frag_row / frag_col are ptx_c."""
    rng = np.random.default_rng(5)
    a = rng.integers(-8, 7, size=(BM, 32), endpoint=True)
    w = rng.integers(-8, 7, size=(BN, 32), endpoint=True)
    As = issue_and_unpack(host.pack_lowbit_operand(a, [32], 4), 4, 0, 0, BM, 1)
    Ws = issue_and_unpack(host.pack_lowbit_operand(w, [32], 4), 4, 0, 0, BN, 1)
    for warp in range(8):
        wm, wn = (warp // 4) * 64, (warp % 4) * 32
        bf = [[0, 0] for _ in range(4)]
        for jj in (0, 2):
            regs = ldmatrix_x4(Ws, lambda lane, jj=jj, wn=wn: wn + 8 * (lane // 16) + lane % 8 + 8 * jj,
                               lambda lane: 4 * ((lane // 8) % 2))
            for j in (jj, jj + 1):  # registers 0, 1: b0, b1 of n-tile jj; 2, 3: of jj + 1
                bf[j] = [[regs[lane][2 * (j - jj)], regs[lane][2 * (j - jj) + 1]] for lane in range(32)]
        for i in range(4):
            af = ldmatrix_x4(As, lambda lane, i=i, wm=wm: wm + lane % 8 + 8 * ((lane // 8) % 2) + 16 * i,
                             lambda lane: 4 * (lane // 16))
            for j in range(4):
                tile = a[wm + 16 * i:wm + 16 * i + 16] @ w[wn + 8 * j:wn + 8 * j + 8].T
                d = np.zeros((16, 8), dtype=np.int64)
                for lane in range(32):
                    g, t = lane >> 2, lane % 4
                    for e in range(16):
                        row, col = ptx_a(lane, e)
                        assert int8s(af[lane][e // 4])[e % 4] == a[wm + 16 * i + row, col], (warp, i, lane, e)
                    for e in range(8):
                        k, col = ptx_b(lane, e)
                        assert int8s(bf[j][lane][e // 4])[e % 4] == w[wn + 8 * j + col, k], (warp, j, lane, e)
                    for e in range(4):
                        row, col = ptx_c(lane, e)
                        d[row, col] = tile[row, col]
                        # lowbit_gemm.cu frag_row(i, g, e) = 16 i + g + 8 (e / 2); frag_col(j, t, e) = 8 j + 2 t + e % 2
                        assert (16 * i + g + 8 * (e // 2), 8 * j + 2 * t + e % 2) == (16 * i + row, 8 * j + col)
                assert np.array_equal(d, tile)


def test_warps_tile_the_block_once():
    cells = {(wm + r, wn + c) for warp in range(8) for wm, wn in [((warp // 4) * 64, (warp % 4) * 32)]
             for r in range(64) for c in range(32)}
    assert cells == {(r, c) for r in range(BM) for c in range(BN)}


def test_ptx_fragments_cover_each_element_once():
    a_cells = sorted(ptx_a(lane, e) for lane in range(32) for e in range(16))
    assert a_cells == [(r, c) for r in range(16) for c in range(32)]
    b_cells = sorted(ptx_b(lane, e) for lane in range(32) for e in range(8))
    assert b_cells == [(k, n) for k in range(32) for n in range(8)]
    c_cells = sorted(ptx_c(lane, e) for lane in range(32) for e in range(4))
    assert c_cells == [(r, c) for r in range(16) for c in range(8)]


def test_shared_memory_accesses_are_bank_conflict_free():
    """Row stride SROW = 12 words. ldmatrix reads 8 rows of 16 bytes per phase, unpack_tile writes 16 bytes per lane
    (8 lanes per phase), at rows r0 .. r0 + 7: their 4-word groups must fall in 8 distinct bank groups."""
    for r0 in range(0, 128, 8):
        for word in (0, 4):
            groups = {((r0 + r) * SROW + word) % 32 // 4 for r in range(8)}
            assert len(groups) == 8
    # the packed ring: int4 rows of 16 bytes (LDS.128, 8 lanes contiguous), int3 rows of 3 words (LDS.32)
    assert len({(3 * r + 1) % 32 for r in range(32)}) == 32


def test_unpack_helpers_match_refsim_layouts_exhaustively():
    # every nibble value at every position of an int4 word
    for v in range(16):
        for pos in range(8):
            lo, hi = unpack8_int4(v << (4 * pos))
            got = int8s(lo) + int8s(hi)
            want = [0] * 8
            want[pos] = v - 16 if v >= 8 else v
            assert got == want
    # every 3-bit code at every position of an int3_planar block, through both decoders
    for v in range(8):
        for j in range(32):
            codes = np.zeros((1, 32), dtype=np.int64)
            codes[0, j] = v - 8 if v >= 4 else v
            w0, w1, w2 = (int(x) for x in host.pack_lowbit_operand(codes, [32], 3).view("<u4")[0])
            assert [planar3_code(w0, w1, w2, i, True) for i in range(32)] == list(codes[0])
            fast = []
            for o in range(4):
                lo, hi = unpack8_int4(planar3_to_int4x8((w0 if o < 2 else w1) >> (16 * (o % 2)), w2 >> (8 * o)))
                fast.extend(int8s(lo) + int8s(hi))
            assert fast == list(codes[0])


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


def _source_defines():
    import re

    from cukernels.compile import KERNEL_DIR

    text = (KERNEL_DIR / "lowbit_gemm.cu").read_text()
    return {k: int(v) for k, v in re.findall(r"^#define (\w+) (\d+)", text, flags=re.M)}


def test_the_emulations_use_the_kernels_constants():
    d = _source_defines()
    assert (d["BM"], d["BN"], d["BK"], d["SROW"], d["THREADS"]) == (BM, BN, 32, SROW, host.GEMM_THREADS)
    assert (host.GEMM_BLOCK_M, host.GEMM_BLOCK_N, host.GEMM_GROUP_M) == (d["BM"], d["BN"], d["GROUP_M"])
    assert d["THREADS"] == BM + BN  # issue_tile / unpack_tile: one thread per row of A and of W


def test_cp_async_ring_schedule_never_reads_an_unlanded_or_overwritten_slot():
    """The loop's order: wait_group(STAGES - 2), barrier, unpack slot kt % STAGES, barrier, issue tile
    kt + STAGES - 1 into slot (kt + STAGES - 1) % STAGES, commit (one group per tile, empty past KT)."""
    stages = _source_defines()["STAGES"]
    for kt_total in range(1, 14):
        slot_tile, groups = {}, []
        for s in range(stages - 1):
            slot_tile[s] = s
            groups.append(s)
        for kt in range(kt_total):
            landed = groups[:len(groups) - (stages - 2)]  # wait_group N: all but the newest N groups are complete
            assert kt in landed and slot_tile[kt % stages] == kt
            nxt = kt + stages - 1
            assert slot_tile.get(nxt % stages, -1) <= kt - 1  # the slot overwritten was consumed already
            slot_tile[nxt % stages] = nxt
            groups.append(nxt)


def fragment_load_and_unpack(frag, bits, group, kt):
    """The per-lane load of the fragment-ordered weights (host.prepare_lowbit_weight_fragments): lane l of the warp
    on 32-column group `group` reads the FRAG_LANE_BYTES[bits] bytes at ((group * KT + kt) * 32 + l) * lane_bytes
    (zeros past the groups or tiles, as a zero-filled cp.async gives) and unpacks them with the kernel's own
    helpers, word j (int4) or (low 16 bits of w0 / w1, byte j of w2) (int3) -> bf[j][0], bf[j][1]."""
    groups, kt_total = frag.shape[:2]
    lane_bytes = host.FRAG_LANE_BYTES[bits]
    flat = frag.reshape(-1)  # the device buffer, byte addressed
    bf = []
    for lane in range(32):
        if group < groups and kt < kt_total:
            at = ((group * kt_total + kt) * 32 + lane) * lane_bytes
            raw = [int(v) for v in flat[at:at + lane_bytes].view("<u4")]
        else:
            raw = [0] * (lane_bytes // 4)
        if bits == 4:
            regs = [list(unpack8_int4(raw[j])) for j in range(4)]
        else:
            w0, w1, w2 = raw
            regs = [list(unpack8_int4(planar3_to_int4x8((w0 if j < 2 else w1) >> (16 * (j % 2)), w2 >> (8 * j))))
                    for j in range(4)]
        bf.append(regs)
    return bf  # bf[lane][j][r]


@settings(max_examples=25, deadline=None)
@given(bits=st.sampled_from([3, 4]), n=st.integers(1, 300), sizes=st.lists(st.integers(1, 70), min_size=1, max_size=3),
       seed=st.integers(0, 2**32 - 1))
def test_fragment_ordered_weights_load_straight_into_the_ptx_b_fragments(bits, n, sizes, seed):
    """For every block column tile, warp, K tile (one past the last included), lane, n-tile, register and byte: the
    code the per-lane load + unpack yields is the B element the PTX ISA assigns there, w[n0 + wn + 8 j + g,
    32 kt + 4 t + b (+ 16 r)] of the cluster-padded weights, and 0 past N or K'. Ragged N (not a multiple of 32 or
    128) and ragged clusters (sizes not multiples of 32) are drawn."""
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    w = rng.integers(lo, hi, size=(n, sum(sizes)), endpoint=True)
    wp = host.pad_clusters(w, sizes)
    frag = host.prepare_lowbit_weight_fragments(w, sizes, bits)
    kt_total = wp.shape[1] // 32
    assert frag.dtype == np.uint8 and frag.shape == (-(-n // 32), kt_total, 32, host.FRAG_LANE_BYTES[bits])
    for n0 in range(0, n, BN):
        for warp in range(8):
            wn = (warp % 4) * 32  # warps 0-3 and 4-7 share the column groups (they differ in wm only)
            for kt in range(kt_total + 1):
                bf = fragment_load_and_unpack(frag, bits, (n0 + wn) // 32, kt)
                for lane in range(32):
                    for j in range(4):
                        for e in range(8):
                            k, col = ptx_b(lane, e)
                            nn, kk = n0 + wn + 8 * j + col, 32 * kt + k
                            want = int(wp[nn, kk]) if nn < n and kk < wp.shape[1] else 0
                            assert int8s(bf[lane][j][e // 4])[e % 4] == want, (n0, warp, kt, lane, j, e)


def test_fragment_ordered_chunks_are_whole_cp_async_pieces():
    """A warp's bytes for one K tile are contiguous and a multiple of 16 (cp.async 16-byte chunks, 16-byte aligned
    in a 16-byte aligned buffer); an int4 lane's 32 codes are exactly one chunk."""
    for bits in (3, 4):
        warp_bytes = 32 * host.FRAG_LANE_BYTES[bits]
        assert warp_bytes % 16 == 0
        frag = host.prepare_lowbit_weight_fragments(np.zeros((40, 70), dtype=np.int64), [70], bits)
        assert frag.flags.c_contiguous and frag.shape[2:] == (32, host.FRAG_LANE_BYTES[bits])
    assert host.FRAG_LANE_BYTES[4] == 16 and host.FRAG_WARP_N == 4 * 8
