"""Host logic of the launchers (padding, layouts, maps, grids, checks) and the reference wrappers, on CPU.

What a launcher hands to a kernel is checked against refsim: packed operands unpack through
refsim.unpack to the right codes, per-cluster K offsets and source maps are right, grids
cover every output. The reference wrappers are checked against scalar twins written from
their formulas.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import sdr_spec

from cukernels import host, reference
from refsim.layouts import unpack
from refsim.requant import float_epilogue

sizes_st = st.lists(st.integers(1, 80), min_size=1, max_size=6).map(tuple)


@given(sizes=sizes_st)
def test_padded_offsets_and_source_map(sizes):
    poff = host.padded_cluster_offsets(sizes)
    off = host.cluster_offsets(sizes)
    src, cid = host.padded_source_map(sizes)
    for c, s in enumerate(sizes):
        width = poff[c + 1] - poff[c]
        assert width % host.TILE_K == 0 and s <= width < s + host.TILE_K
        assert list(src[poff[c]:poff[c] + s]) == list(range(off[c], off[c + 1]))
        assert np.all(src[poff[c] + s:poff[c + 1]] == -1)
        assert np.all(cid[poff[c]:poff[c + 1]] == c)
    # Every real channel appears exactly once.
    assert sorted(src[src >= 0].tolist()) == list(range(sum(sizes)))


@given(sizes=sizes_st, bits=st.sampled_from([3, 4]), rows=st.integers(1, 5), seed=st.integers(0, 2 ** 32 - 1))
def test_packed_operand_unpacks_to_the_codes(sizes, bits, rows, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1, size=(rows, sum(sizes)), endpoint=True)
    packed = host.pack_lowbit_operand(codes, sizes, bits)
    kp = int(host.padded_cluster_offsets(sizes)[-1])
    assert packed.shape == (rows, host.packed_row_bytes(kp, host.LOWBIT_LAYOUTS[bits]))
    assert packed.shape[1] % 4 == 0  # the kernels load 32-bit words
    got = unpack(packed, host.LOWBIT_LAYOUTS[bits], kp, axis=1, signed=True)
    src, _ = host.padded_source_map(sizes)
    assert np.array_equal(got[:, src >= 0], codes[:, src[src >= 0]])
    assert np.array_equal(got[:, src < 0], np.zeros_like(got[:, src < 0]))


@given(sizes=sizes_st, seed=st.integers(0, 2 ** 32 - 1))
def test_weight_colsum_matches_scalar_sums(sizes, seed):
    rng = np.random.default_rng(seed)
    w = rng.integers(-8, 7, size=(3, sum(sizes)), endpoint=True)
    colsum = host.weight_colsum(w, sizes)
    start = 0
    for c, s in enumerate(sizes):
        for n in range(3):
            assert colsum[c, n] == sum(int(v) for v in w[n, start:start + s])
        start += s


@given(sizes=sizes_st, seed=st.integers(0, 2 ** 32 - 1))
def test_ln_plan_maps_padded_positions_to_original_channels(sizes, seed):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(sum(sizes))
    plan = host.ln_quant_plan(perm, sizes)
    src, cid = host.padded_source_map(sizes)
    assert np.array_equal(plan["cluster_of"], cid)
    assert np.array_equal(plan["src_index"][src >= 0], perm[src[src >= 0]])
    assert np.all(plan["src_index"][src < 0] == -1)


def test_ln_plan_refuses_a_non_permutation():
    with pytest.raises(ValueError, match="perm must be a permutation"):
        host.ln_quant_plan([0, 0, 1], [3])


@given(m=st.integers(1, 5000), n=st.integers(1, 5000))
def test_grids_cover_every_output(m, n):
    grid, block = host.lowbit_gemm_grid(m, n)
    assert grid[0] == host.ceil_div(m, host.GEMM_BLOCK_M) * host.ceil_div(n, host.GEMM_BLOCK_N)
    assert grid[1:] == (1, 1) and block == (host.GEMM_THREADS, 1, 1)
    g, b = host.ln_quant_grid(m)
    assert g[0] * host.LN_WARPS_PER_BLOCK >= m and b[0] == 32 * host.LN_WARPS_PER_BLOCK
    for mm in (1, 4, 5, 16):
        g, b, shared = host.wxa16_grid(n, mm)
        cols = host.WXA16_WARPS_PER_BLOCK * host.wxa16_columns_per_warp(mm)
        assert g[0] * cols >= n > (g[0] - 1) * cols and shared == 4 * mm * host.WXA16_CHUNK
    g, b = host.sdr_gemm_grid(m, n)
    assert g[0] == host.ceil_div(m, b[1]) * host.ceil_div(n, b[0]) and g[1:] == (1, 1)


@given(m=st.integers(1, 2000), n=st.integers(1, 2000))
def test_gemm_block_order_is_a_bijection_onto_the_tiles(m, n):
    """lowbit_gemm.cu's gemm_tile (grouped order) and sdr.cu's row-major decode hit every tile once."""
    grid, _ = host.lowbit_gemm_grid(m, n)
    tiles = {host.lowbit_gemm_tile(t, m, n) for t in range(grid[0])}
    tm, tn = host.ceil_div(m, host.GEMM_BLOCK_M), host.ceil_div(n, host.GEMM_BLOCK_N)
    assert tiles == {(i, j) for i in range(tm) for j in range(tn)}
    grid, block = host.sdr_gemm_grid(m, n)
    tiles = {host.sdr_gemm_tile(t, n) for t in range(grid[0])}
    assert tiles == {(i, j) for i in range(host.ceil_div(m, block[1])) for j in range(host.ceil_div(n, block[0]))}


def test_grouped_order_walks_group_rows_first():
    # 8 tile rows of a group share a weight tile: blocks 0..7 are column 0 of rows 0..7.
    m, n = 20 * host.GEMM_BLOCK_M, 3 * host.GEMM_BLOCK_N
    assert [host.lowbit_gemm_tile(t, m, n) for t in range(9)] == [(i, 0) for i in range(8)] + [(0, 1)]
    # the last group holds the 4 remaining rows
    first_last = 2 * host.GEMM_GROUP_M * 3
    assert [host.lowbit_gemm_tile(first_last + t, m, n) for t in range(5)] == [(16, 0), (17, 0), (18, 0), (19, 0),
                                                                               (16, 1)]


def test_grids_past_the_old_grid_y_limits():
    """M beyond 65535 tiles (gridDim.y) launches on gridDim.x; beyond 2^31 - 1 blocks is refused."""
    rows = 65535 * host.GEMM_BLOCK_M + 1  # one row past 65535 tiles on gridDim.y
    g, _ = host.lowbit_gemm_grid(rows, 64)
    assert g == (65536, 1, 1)
    g, _ = host.sdr_gemm_grid(1_048_561, 16)
    assert g == (65536, 1, 1)
    with pytest.raises(ValueError, match="at most 2147483647"):
        host.sdr_gemm_grid(1 << 24, 1 << 24)


@given(rows=st.integers(1, 100), k=st.integers(1, 2000), gs=st.sampled_from(host.SDR_GROUPS))
def test_sdr_encode_grid_has_one_thread_per_group_pair(rows, k, gs):
    grid, block = host.sdr_encode_grid(rows, k, gs)
    groups = (k + gs - 1) // gs
    pairs = (groups + 1) // 2
    assert grid[0] * block[0] >= rows * pairs > (grid[0] - 1) * block[0]


def test_plan_rows_takes_aligned_views_and_copies_the_rest():
    a = np.zeros((4, 64), dtype=np.uint8)
    assert host.plan_rows(a.shape, a.strides, 1, 256, 4) == (False, 64)
    assert host.plan_rows((4, 60), (70, 1), 1, 256, 4) == (True, 60)  # row stride not a multiple of 4
    assert host.plan_rows((4, 60), (72, 1), 1, 257, 4) == (True, 60)  # misaligned start
    assert host.plan_rows((4, 60), (72, 1), 1, 260, 4) == (False, 72)  # a strided, aligned view
    assert host.plan_rows((4, 8), (16, 2), 1, 0, 1) == (True, 8)  # non-unit stride along the row
    assert host.plan_rows((3, 10), (80, 4), 4, 0, 4) == (False, 20)


def _lowbit_args(m=3, n=5, sizes=(7, 40), bits=4):
    rng = np.random.default_rng(0)
    a = rng.integers(-8, 7, size=(m, sum(sizes)), endpoint=True)
    w = rng.integers(-8, 7, size=(n, sum(sizes)), endpoint=True)
    prep = host.prepare_lowbit_weights(w, sizes, bits)
    c = len(sizes)
    return dict(a_packed=host.pack_lowbit_operand(a, sizes, bits), w_packed=prep["w_packed"],
                a_zero=np.zeros(c, np.int32), w_colsum=prep["w_colsum"], cluster_offsets=prep["cluster_offsets"],
                scale_a=np.ones(c, np.float32), scale_w=np.ones(n, np.float32), bias=None,
                out_isums=np.zeros((c, m, n), np.int32), out_y=np.zeros((m, n), np.float32), bits=bits)


def test_lowbit_checks_accept_a_good_call_and_name_what_is_wrong():
    assert host.check_lowbit_gemm_args(**_lowbit_args()) == (3, 5, 96, 2)
    bad = _lowbit_args()
    bad["a_zero"] = np.array([0, 40000], np.int32)
    with pytest.raises(ValueError, match=r"a_zero\(1,\) = 40000 is outside"):
        host.check_lowbit_gemm_args(**bad)
    bad = _lowbit_args()
    bad["scale_a"] = bad["scale_a"].astype(np.float64)
    with pytest.raises(TypeError, match="scale_a must have dtype float32"):
        host.check_lowbit_gemm_args(**bad)
    bad = _lowbit_args()
    bad["cluster_offsets"] = np.array([0, 7, 47], np.int32)
    with pytest.raises(ValueError, match="multiple of 32"):
        host.check_lowbit_gemm_args(**bad)
    bad = _lowbit_args()
    bad["bits"] = 2
    with pytest.raises(ValueError, match="bits=2 is not supported.*allowed: 3, 4"):
        host.check_lowbit_gemm_args(**bad)
    bad = _lowbit_args()
    bad["w_packed"] = bad["w_packed"][:, :-4]
    with pytest.raises(ValueError, match="w_packed must have shape"):
        host.check_lowbit_gemm_args(**bad)


def test_ln_kernel_accepts_only_the_rptq_dataflow():
    from refsim.spec import preset

    assert host.check_spec_for_ln_kernel(preset("rptq")) == "float16"
    assert host.check_spec_for_ln_kernel(preset("rptq").replace(compute_dtype="float32")) == "float32"
    with pytest.raises(ValueError, match="spec.rounding=.*not supported.*ties_even"):
        host.check_spec_for_ln_kernel(preset("tflite"))


def test_wxa16_checks():
    x = np.zeros((17, 64), np.float16)
    w = host.prepare_wxa16_weights(np.zeros((3, 64), np.int64), 4)
    kw = dict(w_packed=w, scales=np.ones((3, 1), np.float16), zeros=np.zeros((3, 1), np.int32), group_size=64,
              bits=4, out=np.zeros((17, 3), np.float32))
    with pytest.raises(ValueError, match="M=17 is not supported.*1..16"):
        host.check_wxa16_args(x=x, **kw)
    kw["group_size"] = 48
    with pytest.raises(ValueError, match="group_size=48 is not supported"):
        host.check_wxa16_args(x=x[:2], **{**kw, "out": np.zeros((2, 3), np.float32)})
    with pytest.raises(TypeError, match="x must have dtype float16"):
        host.check_wxa16_args(x=x[:2].astype(np.float32), **{**kw, "group_size": 64,
                                                               "out": np.zeros((2, 3), np.float32)})


@given(k=st.integers(1, 100), bits=st.sampled_from([3, 4]), seed=st.integers(0, 2 ** 32 - 1))
def test_wxa16_weights_unpack_to_the_codes(k, bits, seed):
    w = np.random.default_rng(seed).integers(0, (1 << bits) - 1, size=(2, k), endpoint=True)
    packed = host.prepare_wxa16_weights(w, bits)
    kp = host.wxa16_padded_k(k)
    got = unpack(packed, host.WXA16_LAYOUTS[bits], kp, axis=1, signed=False)
    assert np.array_equal(got[:, :k], w) and np.all(got[:, k:] == 0)
    assert packed.shape[1] % (16 if bits == 4 else 4) == 0  # the kernel's load width


@given(seed=st.integers(0, 2 ** 32 - 1), k=st.integers(1, 70), gs=st.sampled_from([16, 32]),
       base=st.sampled_from([8, 16]))
def test_sdr_packing_round_trips_through_refsim_unpack(seed, k, gs, base):
    from refsim.sdr import sdr_encode

    hi = (1 << (base - 1)) - 1
    x = np.random.default_rng(seed).integers(-hi, hi, size=(3, k), endpoint=True)
    codes, flags = sdr_encode(x, group_size=gs, base_bits=base, spec=sdr_spec())
    pc, pf = host.pack_sdr(codes, flags)
    fields = unpack(pc, "int4_lo_first", k, axis=1, signed=False)  # the raw nibbles the kernel reads
    assert np.array_equal(np.where(fields & 8, -(fields & 7), fields & 7), codes)
    assert np.array_equal(unpack(pf, "int4_lo_first", flags.shape[1], axis=1, signed=False), flags)
    assert np.all((fields & 8) == (codes < 0) * 8)  # magnitude 0 keeps sign 0


# --- reference wrappers against scalar twins --------------------------------------------------

def _lowbit_scalar(a, z, w, sizes, sa, sw, bias):
    """The formula, one output at a time: Python ints, numpy float32 scalars (no FMA)."""
    f32 = np.float32
    m, n = a.shape[0], w.shape[0]
    isums = np.zeros((len(sizes), m, n), dtype=np.int64)
    y = np.zeros((m, n), dtype=np.float32)
    for i in range(m):
        for j in range(n):
            acc = f32(0)
            k0 = 0
            for c, s in enumerate(sizes):
                v = sum((int(a[i, k]) - int(z[c])) * int(w[j, k]) for k in range(k0, k0 + s))
                v = (v + (1 << 31)) % (1 << 32) - (1 << 31)
                isums[c, i, j] = v
                acc = f32(acc + f32(f32(f32(v) * sa[c]) * sw[j]))
                k0 += s
            y[i, j] = acc if bias is None else f32(acc + bias[j])
    return isums, y


@given(sizes=st.lists(st.integers(1, 20), min_size=1, max_size=4).map(tuple), m=st.integers(1, 4),
       n=st.integers(1, 4), seed=st.integers(0, 2 ** 32 - 1), bias=st.booleans(), big_z=st.booleans())
def test_lowbit_reference_matches_scalar_twin(sizes, m, n, seed, bias, big_z):
    rng = np.random.default_rng(seed)
    k = sum(sizes)
    a = rng.integers(-8, 7, size=(m, k), endpoint=True)
    w = rng.integers(-8, 7, size=(n, k), endpoint=True)
    lim = host.ZERO_POINT_LIMIT if big_z else 20
    z = rng.integers(-lim, lim, size=len(sizes), endpoint=True)
    sa = rng.uniform(1e-3, 2, len(sizes)).astype(np.float32)
    sw = rng.uniform(1e-3, 2, n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    isums, y = reference.lowbit_gemm_reference(a, z, w, sizes, sa, sw, b)
    ei, ey = _lowbit_scalar(a, z, w, sizes, sa, sw, b)
    assert np.array_equal(isums.astype(np.int64), ei)
    assert np.array_equal(y.view(np.uint32), ey.view(np.uint32))
    assert np.array_equal(y.view(np.uint32), float_epilogue(isums, sa, sw, bias=b).view(np.uint32))


def _layernorm_scalar(x, gamma, beta, eps):
    """One row at a time, one lane at a time, in the order the kernel docstring states."""
    f32 = np.float32
    out = np.zeros_like(x)
    h = x.shape[1]

    def warp_sum(vals):
        lanes = [f32(0)] * 32
        for i, v in enumerate(vals):
            lanes[i % 32] = f32(lanes[i % 32] + v)
        for d in (16, 8, 4, 2, 1):
            lanes = [f32(lanes[lane] + lanes[lane ^ d]) for lane in range(32)]
        assert len({float(v) for v in lanes}) == 1  # every lane holds the same sum
        return lanes[0]

    for r in range(x.shape[0]):
        mean = f32(warp_sum(x[r]) / f32(h))
        d = [f32(v - mean) for v in x[r]]
        var = f32(warp_sum([f32(e * e) for e in d]) / f32(h))
        rstd = f32(f32(1) / np.sqrt(f32(var + f32(eps))))
        out[r] = [f32(f32(f32(e * rstd) * gamma[i]) + beta[i]) for i, e in enumerate(d)]
    return out


@given(m=st.integers(1, 3), h=st.integers(1, 100), seed=st.integers(0, 2 ** 32 - 1))
def test_layernorm_order_matches_scalar_twin(m, h, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, h)) * rng.uniform(0.01, 100)).astype(np.float32)
    g = rng.uniform(-2, 2, h).astype(np.float32)
    b = rng.uniform(-1, 1, h).astype(np.float32)
    got = reference.layernorm_warp_order(x, g, b, 1e-5)
    assert np.array_equal(got.view(np.uint32), _layernorm_scalar(x, g, b, 1e-5).view(np.uint32))


def test_ln_quant_reference_saturates_and_refuses_nan():
    from refsim.spec import preset

    x = np.array([[0.0, 1.0, 2.0, 1000.0]], np.float32)
    codes = reference.ln_quant_reference(x, np.ones(4, np.float32), np.zeros(4, np.float32), 1e-5, [3, 0, 1, 2],
                                         [1, 3], np.array([0.01, 0.01], np.float32), np.array([0, 0], np.int32),
                                         bits=4, spec=preset("rptq"))
    assert codes[0, 0] == 7 and codes[0, 1] == -8
    x[0, 1] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        reference.ln_quant_reference(x, np.ones(4, np.float32), np.zeros(4, np.float32), 1e-5, [3, 0, 1, 2],
                                     [1, 3], np.array([0.01, 0.01], np.float32), np.array([0, 0], np.int32),
                                     bits=4, spec=preset("rptq"))


@given(m=st.integers(1, 4), n=st.integers(1, 4), k=st.integers(1, 300), seed=st.integers(0, 2 ** 32 - 1))
def test_wxa16_bound_holds_for_float32_summation(m, n, k, seed):
    """Sequential float32 sums (the worst order for rounding error) stay within the stated bound."""
    rng = np.random.default_rng(seed)
    w = rng.integers(0, 15, size=(n, k), endpoint=True)
    x = rng.standard_normal((m, k)).astype(np.float16)
    g = 32
    s = rng.uniform(0.01, 1, (n, -(-k // g))).astype(np.float16)
    z = rng.integers(0, 15, size=s.shape, endpoint=True).astype(np.int32)
    y, bound = reference.wxa16_reference(x, w, s, z, group_size=g)
    wd = ((w - np.repeat(z, g, axis=1)[:, :k]).astype(np.float32) * np.repeat(s, g, axis=1)[:, :k].astype(np.float32))
    for i in range(m):
        for j in range(n):
            acc = np.float32(0)
            for kk in range(k):
                acc = np.float32(acc + np.float32(np.float32(x[i, kk]) * wd[j, kk]))
            assert abs(float(acc) - y[i, j]) <= bound[i, j]


def test_dtype_check_reads_torch_dtypes():
    torch = pytest.importorskip("torch")
    assert host.check_dtype(torch.zeros(2, dtype=torch.float16), ["float16"], name="x") == np.float16
    with pytest.raises(TypeError, match="x must have dtype uint8, got int32"):
        host.check_dtype(torch.zeros(2, dtype=torch.int32), ["uint8"], name="x")



def test_wxa16_swizzle_is_a_bijection_and_conflict_free():
    """Each 32-float lane segment is permuted by 16-byte unit; the 128-bit reads of unit u by 8 lanes of a
    quarter warp (32 l + 4 (u ^ (l & 7))) fall in 8 distinct 4-bank groups (32 banks of 4 bytes)."""
    p = np.arange(host.WXA16_CHUNK)
    phys = host.wxa16_swizzle(p)
    assert sorted(phys.tolist()) == p.tolist()
    assert np.array_equal(phys // 32, p // 32)  # a lane's data stays in its own segment
    for lane0 in range(0, 32, 8):
        for u in range(8):
            lanes = np.arange(lane0, lane0 + 8)
            start = host.wxa16_swizzle(32 * lanes + 4 * u)
            assert np.array_equal(start, 32 * lanes + 4 * (u ^ (lanes & 7)))
            assert len({int(a) // 4 % 8 for a in start}) == 8


@pytest.mark.parametrize("bits", [3, 4])
def test_wxa16_lane_positions_cover_each_code_once(bits):
    pos = np.concatenate([host.wxa16_lane_positions(lane, bits) for lane in range(32)])
    assert sorted(pos.tolist()) == list(range(host.WXA16_CHUNK))


def test_wxa16_magic_number_dequantization_is_exact():
    """fp16 bits 0x6400 | q are 1024 + q, and (1024 + q) - (1024 + z) = q - z exactly: all 16 x 16 (q, z)."""
    for q in range(16):
        for z in range(16):
            h = np.array([0x6400 | q], np.uint16).view(np.float16)[0]
            zh = np.array([0x6400 | z], np.uint16).view(np.float16)[0]
            assert float(h) == 1024 + q and float(np.float16(h - zh)) == q - z
            d = np.float32(np.float16(h - zh))
            for s in (np.float32(np.float16(0.01)), np.float32(np.float16(6e-8)), np.float32(np.float16(65504))):
                assert np.float32(d * s) == np.float64(q - z) * np.float64(s)  # fl32((q - z) s) is exact


@given(seed=st.integers(0, 2 ** 32 - 1))
def test_wxa16_unpack_selectors_match_the_layouts(seed):
    """The kernel's pair selectors read the codes refsim's int4_word32 / int3_planar layouts put there."""
    rng = np.random.default_rng(seed)
    for bits in (4, 3):
        codes = rng.integers(0, (1 << bits) - 1, size=(1, 32), endpoint=True)
        words = host.prepare_wxa16_weights(codes, bits).view("<u4")[0]
        order = host.wxa16_lane_positions(0, bits)
        got = []
        if bits == 4:
            for wi in range(4):
                for j in range(4):
                    got.extend(host.wxa16_magic_pair(words[wi], 4 * j).astype(np.float64) - 1024)
        else:
            for pair in range(16):
                got.extend(host.wxa16_planar3_pair(*words[:3], 4 * (pair // 4) + pair % 4).astype(np.float64) - 1024)
        assert np.array_equal(np.array(got), codes[0, order].astype(np.float64))


def _wxa16_emulation(x, w_packed, scales, zeros, g, bits):
    """wxa16.cu's data flow on one column at a time: chunks of 1024 codes, x staged as float32 through the
    swizzle, lanes over 32 contiguous codes with the pair order and the magic dequantization, FMA chains
    per lane, the butterfly. Returns float32 (M, N)."""
    m, k = x.shape
    n = w_packed.shape[0]
    kp = host.wxa16_padded_k(k)
    words = w_packed.view("<u4")
    out = np.zeros((m, n), np.float32)
    for col in range(n):
        acc = np.zeros((m, 32), np.float32)
        for c0 in range(0, k, host.WXA16_CHUNK):
            xs = np.zeros((m, host.WXA16_CHUNK), np.float32)
            p = np.arange(host.WXA16_CHUNK)
            valid = c0 + p < k
            xs[:, host.wxa16_swizzle(p[valid])] = x[:, c0 + p[valid]].astype(np.float32)
            for lane in range(32):
                blk = c0 // 32 + lane
                if blk >= kp // 32:
                    continue
                grp = 32 * blk // g
                s = np.float32(scales[col, grp])
                zh = np.array([0x6400 | int(zeros[col, grp])], np.uint16).view(np.float16)[0]
                if bits == 4:
                    w = words[col, 4 * blk:4 * blk + 4]
                    pairs = [host.wxa16_magic_pair(w[wi], 4 * j) for wi in range(4) for j in range(4)]
                else:
                    w = words[col, 3 * blk:3 * blk + 3]
                    pairs = [host.wxa16_planar3_pair(*w, j) for j in (4 * u + e for u in range(4) for e in range(4))]
                vals = [np.float32(np.float16(h - zh)) * s for pair in pairs for h in pair]
                for pos, wv in zip(host.wxa16_lane_positions(lane, bits), vals, strict=True):
                    xv = xs[:, host.wxa16_swizzle(pos)]
                    # fmaf through float64 (the product is exact there; the sum may round twice: the
                    # check is the bound, which holds for any rounding of each step)
                    acc[:, lane] = (xv.astype(np.float64) * np.float64(wv) + acc[:, lane]).astype(np.float32)
        for d in (16, 8, 4, 2, 1):
            acc = (acc + acc[:, np.arange(32) ^ d]).astype(np.float32)
        out[:, col] = acc[:, 0]
    return out


@given(m=st.integers(1, 3), n=st.integers(1, 3), k=st.integers(1, 2200), bits=st.sampled_from([3, 4]),
       g=st.sampled_from([32, 96, 128]), seed=st.integers(0, 2 ** 32 - 1))
@settings(max_examples=12, deadline=None)
def test_wxa16_kernel_emulation_meets_the_bound(m, n, k, bits, g, seed):
    """The kernel's own mapping (not the reference's): inside the stated bound on chunked, ragged K."""
    rng = np.random.default_rng(seed)
    groups = host.ceil_div(k, g)
    w = rng.integers(0, (1 << bits) - 1, size=(n, k), endpoint=True)
    x = rng.standard_normal((m, k)).astype(np.float16)
    scales = (rng.uniform(0.5, 2.0, (n, groups)) * 2.0 ** -6).astype(np.float16)
    zeros = rng.integers(0, (1 << bits) - 1, size=(n, groups), endpoint=True).astype(np.int32)
    y, bound = reference.wxa16_reference(x, w, scales, zeros, group_size=g)
    got = _wxa16_emulation(x, host.prepare_wxa16_weights(w, bits), scales, zeros, g, bits)
    assert np.all(np.abs(got.astype(np.float64) - y) <= bound)
    assert np.array_equal(host.check_wxa16_zeros(zeros, bits), zeros.astype(np.uint8))


def test_wxa16_zero_points_must_fit_a_byte_of_bits():
    with pytest.raises(ValueError, match=r"zeros\(0, 1\) = 16 is outside"):
        host.check_wxa16_zeros(np.array([[0, 16]], np.int32), 4)


def test_ln_quant_refuses_scales_that_do_not_fit_fp16_and_big_zero_points():
    ok = np.array([1e-3, 2.0 ** -24], np.float32)
    host.check_ln_quant_params(ok, np.array([3, -3], np.int32), "float16")
    for bad in (2.0 ** -26, 7e4, np.inf, np.nan, 0.0, -1.0):
        with pytest.raises(ValueError, match=r"scale\[1\] = .* positive finite float16"):
            host.check_ln_quant_params(np.array([1.0, bad], np.float32), np.zeros(2, np.int32), "float16")
    host.check_ln_quant_params(np.array([2.0 ** -26], np.float32), np.zeros(1, np.int32), "float32")
    with pytest.raises(ValueError, match="zero"):
        host.check_ln_quant_params(np.ones(1, np.float32), np.array([1 << 20], np.int32), "float16")


def test_output_alignment_is_checked_for_word_stores():
    host.check_output_alignment(4096, 4, name="out_packed")
    host.check_output_alignment(4097, 1, name="out_codes")
    with pytest.raises(ValueError, match="out_packed starts at byte address 4097, not a multiple of 4"):
        host.check_output_alignment(4097, 4, name="out_packed")


def test_cuda_include_dirs_are_found_from_env_nvcc_and_wheels(tmp_path):
    from cukernels.compile import cuda_include_dirs

    def root(name):
        inc = tmp_path / name / "include"
        inc.mkdir(parents=True)
        (inc / "cuda_fp16.h").write_text("")
        return tmp_path / name

    env_root, nvcc_root, wheel = root("env"), root("nvcc"), root("wheel")
    (nvcc_root / "bin").mkdir()
    (nvcc_root / "bin" / "nvcc").write_text("")
    script = tmp_path / "wrapper-nvcc"
    script.write_text(f'#!/bin/sh\nexec {nvcc_root}/bin/nvcc "$@"\n')
    got = cuda_include_dirs(env={"CUDA_PATH": str(env_root)}, nvcc=str(script), cupy_path="",
                            wheel_dirs=[wheel / "include", tmp_path / "missing"])
    inc = [str((r / "include").resolve()) for r in (env_root, nvcc_root, wheel)]
    assert got[0] == inc[0] and got.index(inc[1]) < got.index(inc[2])  # env first, the wrapped nvcc, the wheel
    assert not any("missing" in d for d in got)
    from cukernels.launch import rawmodule_options

    assert rawmodule_options(["/a", "/b"])[-2:] == ("-I/a", "-I/b")


@given(g_blocks=st.integers(1, 200), chunks=st.integers(1, 12))
def test_wxa16_group_tracking_without_division(g_blocks, chunks):
    """wxa16.cu keeps grp = blk / bpg, rem = blk % bpg for blk = 32 c + lane, advancing by 32 blocks per
    chunk as step_q = 32 / bpg, step_r = 32 % bpg plus a carry: equal to the division for every lane."""
    bpg = g_blocks  # group size g = 32 bpg
    step_q, step_r = 32 // bpg, 32 % bpg
    for lane in range(32):
        grp, rem = lane // bpg, lane % bpg
        for c in range(chunks):
            if c > 0:
                grp, rem = grp + step_q, rem + step_r
                if rem >= bpg:
                    rem, grp = rem - bpg, grp + 1
            blk = 32 * c + lane
            assert (grp, rem) == (blk // bpg, blk % bpg) == ((32 * blk) // (32 * bpg), blk % bpg)


def _ln_quant_pack_emulation(codes_row, bits):
    """ln_quant.cu's packing of one row: per 32-code block b, lane j holds code j; int4: f = (code & 15) << 4 (j & 7),
    OR over shfl_xor 1, 2, 4, lane with j & 7 == 0 stores word 4 b + j / 8; int3: f = (code & 3) << 2 (j & 15), OR over
    shfl_xor 1, 2, 4, 8, lanes 0 and 16 store words 3 b, 3 b + 1, lane 0 stores the ballot of bit 2 as word 3 b + 2."""
    words = []
    for b in range(len(codes_row) // 32):
        c = [int(v) for v in codes_row[32 * b:32 * b + 32]]
        if bits == 4:
            f = [(c[j] & 15) << (4 * (j & 7)) for j in range(32)]
            for d in (1, 2, 4):
                f = [f[j] | f[j ^ d] for j in range(32)]
            words += [f[j] for j in range(32) if j & 7 == 0]
        else:
            f = [(c[j] & 3) << (2 * (j & 15)) for j in range(32)]
            for d in (1, 2, 4, 8):
                f = [f[j] | f[j ^ d] for j in range(32)]
            words += [f[0], f[16], sum(((c[j] >> 2) & 1) << j for j in range(32))]
    return np.array(words, dtype="<u4").view(np.uint8)


@given(bits=st.sampled_from([3, 4]), blocks=st.integers(1, 4), seed=st.integers(0, 2 ** 32 - 1))
def test_ln_quant_shuffle_packing_is_the_refsim_layout(bits, blocks, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1, size=(1, 32 * blocks), endpoint=True)
    want = host.pack_lowbit_operand(codes, [32 * blocks], bits)[0]
    assert np.array_equal(_ln_quant_pack_emulation(codes[0], bits), want)


def _fragments_scalar(wp, bits):
    """Scalar twin of host.prepare_lowbit_weight_fragments from its formula: lane 4 g + t of group G, K tile kt holds
    code q = 8 j + 4 r + b = w[32 G + 8 j + g, 32 kt + 16 r + 4 t + b] (0 past N), packed with the operand layout."""
    n, kp = wp.shape
    groups = -(-n // 32)
    seq = np.zeros((groups, kp // 32, 32, 32), dtype=np.int64)
    for G in range(groups):
        for kt in range(kp // 32):
            for lane in range(32):
                g, t = lane // 4, lane % 4
                for j in range(4):
                    for r in range(2):
                        for b in range(4):
                            row = 32 * G + 8 * j + g
                            if row < n:
                                seq[G, kt, lane, 8 * j + 4 * r + b] = wp[row, 32 * kt + 16 * r + 4 * t + b]
    return host.pack_lowbit_operand(seq.reshape(-1, 32), [32], bits).reshape(groups, kp // 32, 32, -1)


@settings(max_examples=30, deadline=None)
@given(bits=st.sampled_from([3, 4]), n=st.integers(1, 70), sizes=sizes_st, seed=st.integers(0, 2 ** 32 - 1))
def test_fragment_weights_match_scalar_twin_and_invert_exactly(bits, n, sizes, seed):
    rng = np.random.default_rng(seed)
    w = rng.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1, size=(n, sum(sizes)), endpoint=True)
    frag = host.prepare_lowbit_weight_fragments(w, sizes, bits)
    wp = host.pad_clusters(w, sizes)
    assert np.array_equal(frag, _fragments_scalar(wp, bits))
    back = host.unprepare_lowbit_weight_fragments(frag, n, bits)
    assert back.dtype == np.int32 and np.array_equal(back, wp)
    # and back to the row layout the kernel reads today
    rows = host.pack_lowbit_operand(w, sizes, bits)
    assert np.array_equal(host.pack_lowbit_operand(back, [back.shape[1]], bits), rows)


def test_fragment_weights_exhaustive_per_position():
    """Every code value at every (n, k) position of a 32 x 32 tile (both widths) lands where the twin puts it."""
    for bits in (3, 4):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        for v in range(lo, hi + 1):
            w = np.full((32, 32), v, dtype=np.int64)
            w[::3, ::5] = lo if v != lo else hi  # break the symmetry so that a transposed mapping shows
            assert np.array_equal(host.prepare_lowbit_weight_fragments(w, [32], bits), _fragments_scalar(w, bits))
            assert np.array_equal(host.unprepare_lowbit_weight_fragments(
                host.prepare_lowbit_weight_fragments(w, [32], bits), 32, bits), w)


def test_fragment_weights_refuse_bad_input():
    with pytest.raises(ValueError, match="w_codes"):
        host.prepare_lowbit_weight_fragments(np.full((2, 32), 8), [32], 4)
    with pytest.raises(ValueError, match="w_codes"):
        host.prepare_lowbit_weight_fragments(np.full((2, 32), -5), [32], 3)
    with pytest.raises(ValueError, match="bits"):
        host.prepare_lowbit_weight_fragments(np.zeros((2, 32)), [32], 8)
    frag = host.prepare_lowbit_weight_fragments(np.zeros((33, 32), dtype=np.int64), [32], 4)
    with pytest.raises(ValueError, match="frag must be"):
        host.unprepare_lowbit_weight_fragments(frag, 65, 4)
    with pytest.raises(ValueError, match="frag must be"):
        host.unprepare_lowbit_weight_fragments(frag, 33, 3)
    with pytest.raises(TypeError, match="frag"):
        host.unprepare_lowbit_weight_fragments(frag.astype(np.int16), 33, 4)
