"""Native GGUF weights (docs/gguf.md): Q4_1 / Q8_0 blocks as a BlockOffsetTensor, their exact GEMM against
RPTQ activations, the scalar twin, the float bound, and the NATIVE_* configurations on a block."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refsim.formats import gguf as G
from refsim.models.floatops import float_matmul
from refsim.qtensor import (
    BlockOffsetTensor,
    Granularity,
    QuantizedTensor,
    block_cluster_pairs,
    block_offset_error_bound,
    block_offset_gemm,
    block_offset_matmul,
    block_offset_weight,
    qgemm,
    qmatmul,
    rptq_quantize,
)
from refsim.scalar import block_offset_matmul_scalar
from refsim.spec import preset

U32 = 2.0**-24
U64 = 2.0**-53


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def gamma(j, u):
    return j * u / (1 - j * u)


def q4_1_quantize(w):
    """Q4_1 form of float weights (N, K), as ggml's quantize_row_q4_1_ref: per block of 32,
    d = fp16((max - min) / 15), m = fp16(min), q = min(15, int(fl32((x - min) * (1 / d)) + 0.5))."""
    w = np.asarray(w, np.float32)
    n, k = w.shape
    b = w.reshape(n, k // 32, 32)
    lo, hi = b.min(-1), b.max(-1)
    d = ((hi - lo) / np.float32(15)).astype(np.float32)
    inv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
    x = ((b - lo[..., None]) * inv[..., None]).astype(np.float32)
    q = np.minimum(15, (x + np.float32(0.5)).astype(np.int64))
    return q.reshape(n, k).astype(np.uint8), d.astype(np.float16), lo.astype(np.float16)


def q8_0_quantize(w):
    w = np.asarray(w, np.float32)
    n, k = w.shape
    b = w.reshape(n, k // 32, 32)
    d = (np.abs(b).max(-1) / np.float32(127)).astype(np.float32)
    inv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
    q = np.rint(b * inv[..., None]).astype(np.int64)
    return q.reshape(n, k).astype(np.int8), d.astype(np.float16)


def activation(rng, m, k, *, bits, n_clusters):
    x = (rng.standard_normal((m, k)) * rng.uniform(0.2, 4, k)).astype(np.float32)
    ids = rng.integers(0, n_clusters, k)
    ids[:n_clusters] = np.arange(n_clusters)  # every cluster non-empty
    lo = np.array([x[:, ids == c].min() for c in range(n_clusters)], np.float32)
    hi = np.array([x[:, ids == c].max() for c in range(n_clusters)], np.float32)
    return x, rptq_quantize(x, lo, hi, ids, bits=bits, spec=preset("rptq"))


def scalar_of(a, w, bias=None, spec=None):
    spec = preset("rptq") if spec is None else spec
    ids = np.asarray(a.clusters) if a.granularity is Granularity.CLUSTER else np.zeros(a.codes.shape[1], int)
    za = np.asarray(a.zero).reshape(-1)
    sa = np.asarray(a.scale).reshape(-1)
    return block_offset_matmul_scalar(a.codes.tolist(), za.tolist(), sa.tolist(), ids.tolist(), w.codes.tolist(),
                                      np.asarray(w.scale).tolist(),
                                      None if w.offset is None else np.asarray(w.offset).tolist(), w.blocks.tolist(),
                                      None if bias is None else np.asarray(bias).tolist(), spec=spec)


def assert_equals_scalar(a, w, bias=None, spec=None):
    spec = preset("rptq") if spec is None else spec
    sums, y = block_offset_matmul(a, w, bias, spec=spec)
    s_ref, a_ref, y_ref = scalar_of(a, w, bias, spec)
    pairs = list(zip(sums.block.tolist(), sums.cluster.tolist(), strict=True))
    assert pairs == sorted(s_ref)
    for p, key in enumerate(pairs):
        assert np.array_equal(sums.s[p], np.array(s_ref[key], dtype=np.int64))
        if a_ref is not None:
            assert np.array_equal(sums.a[p], np.array(a_ref[key], dtype=np.int64))
    assert (sums.a is None) == (a_ref is None)
    assert np.array_equal(bits(y), bits(np.array([[float(v) for v in r] for r in y_ref], np.float32)))
    streamed = block_offset_matmul(a, BlockOffsetTensor(**{**w.__dict__, "keep_sums": False}), bias, spec=spec)
    assert streamed[0] is None and np.array_equal(bits(streamed[1]), bits(y))
    return sums, y


# ------------------------------------------------------------------ the tensor: dequantize equals gguf's

gguf = pytest.importorskip("gguf")


@pytest.mark.parametrize("qtype", ["Q4_1", "Q8_0"])
def test_dequantize_equals_gguf_package_bit_for_bit(qtype):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 128)).astype(np.float32)
    w[0] = 0.0
    w[1, :32] = rng.uniform(-1e-6, 1e-6, 32)
    raw = gguf.quants.quantize(w, gguf.GGMLQuantizationType[qtype])
    ref = np.asarray(gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qtype]), np.float32).reshape(w.shape)
    decoded = G.decode_q4_1(raw, 128) if qtype == "Q4_1" else (*G.decode_q8_0(raw, 128), None)
    qt = block_offset_weight(*decoded)
    assert isinstance(qt, QuantizedTensor) and qt.granularity is Granularity.BLOCK and qt.block_size == 32
    assert (qt.bits, qt.signed) == ((4, False) if qtype == "Q4_1" else (8, True))
    assert np.array_equal(bits(qt.dequantize()), bits(ref))
    # columns permuted with an activation reorder keep their own (d, m): the permuted dequantized weight
    perm = rng.permutation(128)
    codes, d, m = decoded
    moved = block_offset_weight(codes[:, perm], d, m, blocks=perm // 32)
    assert np.array_equal(bits(moved.dequantize()), bits(ref[:, perm]))


def test_bad_tensors_are_refused():
    q, d, m = q4_1_quantize(np.ones((2, 64), np.float32))
    with pytest.raises(ValueError, match="codes .* outside|Q4_1: 0..15"):
        block_offset_weight(q.astype(np.int64) + 16, d, m)
    with pytest.raises(ValueError, match="scale must be finite float16 of shape \\(2, 2\\)"):
        block_offset_weight(q, d.astype(np.float32), m)
    with pytest.raises(ValueError, match="each of the 2 blocks exactly 32 times"):
        block_offset_weight(q, d, m, blocks=np.zeros(64, np.int64))
    with pytest.raises(ValueError, match="multiple of 32"):
        block_offset_weight(q[:, :40], d, m)
    bad = d.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="finite float16"):
        block_offset_weight(q, bad, m)
    with pytest.raises(ValueError, match="float32"):
        block_offset_weight(q, d, m).dequantize(np.float16)


def test_pairs_are_block_then_cluster_ordered():
    blocks = np.array([1, 1, 0, 0, 1, 0])
    ids = np.array([2, 0, 2, 2, 0, 1])
    pair, pb, pc = block_cluster_pairs(blocks, ids)
    assert list(zip(pb.tolist(), pc.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 0), (1, 2)]
    assert pair.tolist() == [3, 2, 1, 1, 2, 0]


# ------------------------------------------------------------------ fast GEMM == scalar twin

f16_bits = st.integers(0, 0xFFFF).filter(lambda b: (b >> 10) & 0x1F != 0x1F)


def f16(b):
    return np.array(b, dtype=np.uint16).view(np.float16)


@st.composite
def gemm_problem(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    m, n, nb = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = 32 * nb
    c = draw(st.integers(1, 3))
    abits = draw(st.sampled_from([3, 4, 8]))
    ids = rng.integers(0, c, k)
    ids[:c] = np.arange(c)
    a_codes = rng.integers(-(1 << (abits - 1)), 1 << (abits - 1), (m, k))
    za = rng.integers(-40, 40, c)
    sa = np.abs(f16(draw(st.lists(f16_bits, min_size=c, max_size=c)))).astype(np.float16)
    sa[sa == 0] = np.float16(2.0**-10)
    if c == 1 and draw(st.booleans()):  # a per-tensor activation (one scale, one zero point)
        a = QuantizedTensor(a_codes, sa[0], za[0], Granularity.TENSOR, abits, True, preset("rptq"))
    else:
        a = QuantizedTensor(a_codes, sa, za, Granularity.CLUSTER, abits, True, preset("rptq"), axis=-1, clusters=ids)
    perm = rng.permutation(k) if draw(st.booleans()) else np.arange(k)
    q4 = draw(st.booleans())
    d = f16(draw(st.lists(f16_bits, min_size=n * nb, max_size=n * nb))).reshape(n, nb)
    if q4:
        mm = f16(draw(st.lists(f16_bits, min_size=n * nb, max_size=n * nb))).reshape(n, nb)
        w = block_offset_weight(rng.integers(0, 16, (n, k))[:, perm], d, mm, blocks=perm // 32)
    else:
        w = block_offset_weight(rng.integers(-128, 128, (n, k))[:, perm], d, blocks=perm // 32)
    bias = rng.standard_normal(n).astype(np.float32) if draw(st.booleans()) else None
    return a, w, bias


@settings(max_examples=60, deadline=None)
@given(gemm_problem())
def test_block_offset_gemm_equals_scalar_twin(p):
    """Any fp16 d, m (zeros, subnormals, 65504, negatives), any cluster / permuted-block layout, Q4_1 and Q8_0."""
    a, w, bias = p
    sums, y = assert_equals_scalar(a, w, bias)
    for g in (block_offset_gemm(a, w, spec=preset("rptq")), qgemm(a, w, spec=preset("rptq"))):
        assert np.array_equal(g.s, sums.s) and np.array_equal(g.block, sums.block)
    assert np.array_equal(bits(qmatmul(a, w, bias, spec=preset("rptq"))[1]), bits(y))


@settings(max_examples=25, deadline=None)
@given(gemm_problem(), st.sampled_from(["wrap", "saturate"]), st.integers(6, 12))
def test_narrow_accumulators_equal_scalar_twin(p, overflow, acc_bits):
    """A narrow accumulator wraps / saturates S and A step by step, in ascending k, as the twin does."""
    a, w, bias = p
    assert_equals_scalar(a, w, bias, preset("rptq").replace(acc_bits=acc_bits, acc_overflow=overflow))


def test_raise_accumulator_names_the_overflow():
    a = QuantizedTensor(np.full((1, 32), 7), np.ones(1, np.float16), np.zeros(1, np.int64), Granularity.TENSOR, 4,
                        True, preset("rptq"))
    w = block_offset_weight(np.full((1, 32), 15), np.ones((1, 1), np.float16), np.zeros((1, 1), np.float16))
    with pytest.raises(ValueError, match="accumulator overflow"):
        block_offset_matmul(a, w, spec=preset("rptq").replace(acc_bits=8, acc_overflow="raise"))


EXTREMES = [0.0, -0.0, 2.0**-24, 2.0**-14, 2.0**-3, 1.0, -1.5, 65504.0, -65504.0]


def test_exhaustive_codes_and_extreme_parameters():
    """Every (activation code, weight code) pair (4-bit signed x Q4_1's 0..15: row i of a holds code
    (k + i) mod 16 - 8 at column k, every weight row holds k mod 16), against every pair of extreme fp16 d, m
    and two activation scales (one block, 2 clusters interleaved): fast == scalar twin bit for bit, and each
    output within the stated bound of the exact real product (Fractions)."""
    k = np.arange(32)
    a_codes = (k[None, :] + np.arange(16)[:, None]) % 16 - 8
    ids = k % 2
    za = np.array([-3, 5])
    sa = np.array([2.0**-7, 65504.0], np.float16)
    a = QuantizedTensor(a_codes, sa, za, Granularity.CLUSTER, 4, True, preset("rptq"), axis=-1, clusters=ids)
    pairs = [(x, y) for x in EXTREMES for y in EXTREMES]
    n = len(pairs)
    qw = np.tile(k % 16, (n, 1))
    d = np.array([p[0] for p in pairs], np.float16).reshape(n, 1)
    m = np.array([p[1] for p in pairs], np.float16).reshape(n, 1)
    w = block_offset_weight(qw, d, m)
    _, y = assert_equals_scalar(a, w)
    bound = block_offset_error_bound(a, w)
    for i in range(16):
        for j in range(n):
            exact = sum(Fraction(float(sa[ids[c]])) * (int(a_codes[i, c]) - int(za[ids[c]]))
                        * (Fraction(float(d[j, 0])) * int(qw[j, c]) + Fraction(float(m[j, 0]))) for c in range(32))
            assert abs(Fraction(float(y[i, j])) - exact) <= Fraction(float(bound[i, j]))


# ------------------------------------------------------------------ the float bound

@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([4, 8]), st.integers(1, 6), st.booleans())
def test_within_bound_of_float64_and_dequantized_float_path(seed, abits, n_clusters, permuted):
    """|y - y64| <= gamma_{P+3} B + gamma_K(2^-53) B against the float64 product of the exact values;
    against forward's float path (float64 matmul of the float32 dequantized operands, rounded once),
    additionally 2u |y_f| + (u + gamma_K(2^-53)(1 + u)) B: the weight's own rounding to float32 and the final one."""
    rng = np.random.default_rng(seed)
    x, a = activation(rng, 5, 128, bits=abits, n_clusters=n_clusters)
    q, d, m = q4_1_quantize(rng.standard_normal((7, 128)) * 0.05)
    perm = rng.permutation(128) if permuted else np.arange(128)
    w = block_offset_weight(q[:, perm], d, m, blocks=perm // 32)
    _, y = block_offset_matmul(a, w, spec=preset("rptq"))
    bound = block_offset_error_bound(a, w)
    av = a.dequantize().astype(np.float64)  # exact: (q - z) times an fp16 scale
    wexact = d.astype(np.float64)[:, perm // 32] * q[:, perm] + m.astype(np.float64)[:, perm // 32]
    y64 = av @ wexact.T
    babs = np.abs(av) @ np.abs(wexact).T
    assert np.all(np.abs(y - y64) <= bound + gamma(128, U64) * babs)
    yf = float_matmul(a.dequantize(), w.dequantize())
    slack = 2 * U32 * np.abs(yf) + (U32 + gamma(128, U64) * (1 + U32)) * babs
    assert np.all(np.abs(y.astype(np.float64) - yf) <= bound + slack)


# ------------------------------------------------------------------ the NATIVE configurations on a block

def q4_1_opt_layer(rng, hidden, ffn):
    """(a random OPT layer whose linear weights are their Q4_1 dequantization, {linear: its BlockTensor})."""
    from refsim.models.opt import OPT
    from refsim.rptq.synthetic import random_opt_layer

    layer = random_opt_layer(rng, hidden, ffn)
    tensors = {}
    for lin in OPT.linear_names:
        q, d, m = q4_1_quantize(layer[f"{lin}.weight"])
        tensors[lin] = G.BlockTensor(lin, "Q4_1", q.shape, codes=q, scale=d, offset=m)
        layer[f"{lin}.weight"] = tensors[lin].dequantize()
    return layer, tensors


def native_opt_block(seed=0, hidden=64, ffn=128, heads=2, n_clusters=4, head_clusters=2):
    """A synthetic OPT block whose weights are GGUF Q4_1 (quantized here): the float weights of the block are
    the dequantized Q4_1 ones (what a GGUF model's W16A16 is), and the native arrays carry the codes."""
    from refsim.models.opt import OPT
    from refsim.rptq.synthetic import calibrated_block

    rng = np.random.default_rng(seed)
    layer, tensors = q4_1_opt_layer(rng, hidden, ffn)
    calib = rng.standard_normal((16, hidden)).astype(np.float32)
    block, reorders, _ = calibrated_block(layer, calib, heads=heads, n_clusters=n_clusters,
                                          head_clusters=head_clusters)
    assert all(np.array_equal(block[f"{r}.perm"], reorders[r].perm) for r in reorders)
    x = rng.standard_normal((6, hidden)).astype(np.float32)
    return with_native(block, tensors, OPT), tensors, x


def with_native(block, tensors, topology):
    """The block's native arrays rebuilt for its own layout (its recorded perms)."""
    from refsim.rptq.block import QuantizedOPTBlock

    return QuantizedOPTBlock({**block.arrays, **G.native_block_arrays(block, topology, tensors)}, block.meta)


@pytest.fixture(scope="module")
def native_block():
    return native_opt_block()


def test_native_configs_are_schemes():
    from refsim.schemes import NATIVE_CONFIGS, NativeWeightsScheme, RPTQScheme, scheme

    assert set(NATIVE_CONFIGS) >= {"NATIVE_W4A16", "NATIVE_W4A8", "NATIVE_W4A4"}
    for name, bits in NATIVE_CONFIGS.items():
        s = scheme(name)
        assert isinstance(s, NativeWeightsScheme) and isinstance(s, RPTQScheme)
        assert (s.wbits, s.abits, s.kvbits) == bits and s.name == name
    from refsim.models.opt import OPT

    assert "GGUF native" in scheme("NATIVE_W4A4").roles(OPT)["weight"][2]
    with pytest.raises(ValueError, match="NATIVE_W4A4"):
        from refsim.schemes import native_scheme

        native_scheme("NATIVE_W2A2")


@pytest.mark.parametrize("config", ["NATIVE_W4A8", "NATIVE_W4A4"])
def test_native_block_exact_and_layout_independent(native_block, config):
    """Integer products with the native codes: keep_sums on or off gives the same bits; the logical layout
    (scattered clusters, blocks in file order) equals the physical one (blocks scattered over the reordered
    columns) bit for bit; the per-(block x cluster) sums are the stage."""
    from refsim.models.forward import forward
    from refsim.models.opt import OPT
    from refsim.schemes import native_scheme

    block, tensors, x = native_block
    st = forward(OPT, block, x, native_scheme(config))
    lean = forward(OPT, block, x, native_scheme(config, keep_sums=False))
    for k in ("q", "v", "attn", "out"):
        assert np.array_equal(bits(st[k]), bits(lean[k])), k
    assert lean["v_acc"] is None and st["v_acc"].s.ndim == 3
    assert st["q_acc"].block.size > 64 // 32  # channel-level clusters: the blocks are split (option (b))
    logical = with_native(block.logical(OPT), tensors, OPT)
    lst = forward(OPT, logical, x, native_scheme(config))
    assert np.array_equal(bits(lst["out"]), bits(st["out"]))
    assert np.array_equal(st["fc2_acc"].s, lst["fc2_acc"].s)  # the same pairs, the same integers
    with pytest.raises(ValueError, match="native.cols is not this block's"):
        forward(OPT, block.logical(OPT), x, native_scheme(config))  # physical native arrays on a logical block


def test_native_w4a16_is_the_gguf_float_weights(native_block):
    """NATIVE_W4A16 multiplies float activations by the dequantized codes: on a block whose float weights are
    the GGUF ones it equals W16A16 bit for bit."""
    from refsim.models.forward import forward
    from refsim.models.opt import OPT
    from refsim.schemes import scheme

    block, _, x = native_block
    a, b = forward(OPT, block, x, scheme("NATIVE_W4A16")), forward(OPT, block, x, scheme("W16A16"))
    assert np.array_equal(bits(a["out"]), bits(b["out"]))


@pytest.mark.parametrize("config", ["NATIVE_W4A8", "NATIVE_W4A4"])
def test_native_linear_within_bound_of_dequantized_float_path(native_block, config):
    """Stage v (input ln1, the same in both runs): the integer product against forward's float path on the
    same dequantized operands, within the stated bound (+ the bias add's rounding in each path)."""
    from refsim.models.forward import Context, Operand, forward
    from refsim.models.opt import OPT
    from refsim.schemes import NativeWeightsScheme, native_scheme, native_weight

    class FloatWeights(NativeWeightsScheme):
        def weight(self, ctx, lin):
            return Operand(None, native_weight(ctx.block, ctx.topology, lin).dequantize())

    block, _, x = native_block
    s = native_scheme(config)
    st = forward(OPT, block, x, s)
    fl = forward(OPT, block, x, FloatWeights(**s.__dict__))
    assert np.array_equal(bits(st["ln1"]), bits(fl["ln1"]))
    a = s.activation(Context(OPT, block, {}, s.spec), "ln1", st["ln1"]).qt
    w = native_weight(block, OPT, "v")
    bound = block_offset_error_bound(a, w)
    babs = np.abs(a.dequantize().astype(np.float64)) @ np.abs(w.dequantize().astype(np.float64)).T
    y, yf = st["v"].astype(np.float64), fl["v"].astype(np.float64)
    slack = 2 * U32 * (np.abs(yf) + np.abs(y)) + (U32 + gamma(64, U64) * (1 + U32)) * babs * (1 + U32)
    assert np.all(np.abs(y - yf) <= bound + slack)
    assert not np.array_equal(st["v"], fl["v"])  # two different computations: exact sums vs float weights
    y_ref = scalar_of(a, w, block["v.bias"])[2]  # and the block's own product is the scalar twin's, bit for bit
    assert np.array_equal(bits(st["v"]), bits(np.array([[float(v) for v in r] for r in y_ref], np.float32)))


# ------------------------------------------------------------------ the real model (make realmodel)

def _smollm2():
    try:
        return G.smollm2_gguf()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_smollm2_q_proj_codes_equal_gguf_dequantizer():
    """Layer 0's attn_q as a BlockOffsetTensor (rows un-permuted to transformers' order) dequantizes to the gguf
    package's own dequantized tensor, rows un-permuted, bit for bit."""
    path = _smollm2()
    reader = gguf.GGUFReader(str(path))
    t = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    bt = G.transformers_rows(G.read_tensor(path, t), heads=9)
    w = block_offset_weight(bt.codes, bt.scale, bt.offset)
    ref = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32).reshape(bt.shape)
    assert np.array_equal(bits(w.dequantize()), bits(ref[G.llama_unpermute_rows(576, 9)]))
    assert w.codes.shape == (576, 576) and w.n_blocks == 18
    # the real codes in the exact product, on block-aligned clusters of a random activation
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((8, 576)) * rng.uniform(0.2, 3, 576)).astype(np.float32)
    from refsim.rptq.native import block_reorder

    reorder = block_reorder(x.max(0), x.min(0), 6)
    ids = reorder.ids_old  # the logical layout: clusters are unions of the file's blocks
    lo = np.array([x[:, ids == c].min() for c in range(6)], np.float32)
    hi = np.array([x[:, ids == c].max() for c in range(6)], np.float32)
    a = rptq_quantize(x, lo, hi, ids, bits=4, spec=preset("rptq"))
    sums, y = block_offset_matmul(a, w, spec=preset("rptq"))
    assert sums.block.size == 18
    yf = float_matmul(a.dequantize(), w.dequantize())
    babs = np.abs(a.dequantize().astype(np.float64)) @ np.abs(w.dequantize().astype(np.float64)).T
    slack = 2 * U32 * np.abs(yf) + (U32 + gamma(576, U64) * (1 + U32)) * babs * (1 + U32)
    assert np.all(np.abs(y - yf.astype(np.float64)) <= block_offset_error_bound(a, w) + slack)
    rows = block_offset_weight(w.codes[:3], w.scale[:3], w.offset[:3])
    y_ref = scalar_of(a, rows)[2]
    assert np.array_equal(bits(y[:, :3]), bits(np.array([[float(v) for v in r] for r in y_ref], np.float32)))


@pytest.mark.slow
def test_smollm2_q_proj_codes_equal_transformers_weight():
    """The same codes against transformers' own loading of the file (from_pretrained(gguf_file=)), bit for bit,
    for q_proj and k_proj of layer 0 (both row-permuted by llama.cpp) and v_proj."""
    path = _smollm2()
    torch = pytest.importorskip("torch")
    pytest.importorskip("accelerate")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    cfg = model.config
    attn = model.model.layers[0].self_attn
    linears = ("q", "k", "v")
    layer = G.llama_layer_tensors(G.read_gguf(path, [G.gguf_linear_name(0, lin) for lin in G.LLAMA_LINEARS]), 0,
                                  heads=cfg.num_attention_heads, kv_heads=cfg.num_key_value_heads)
    for lin in linears:
        bt = layer[lin]
        w = block_offset_weight(bt.codes, bt.scale, bt.offset)
        ref = getattr(attn, f"{lin}_proj").weight.detach().numpy()
        assert np.array_equal(bits(w.dequantize()), bits(ref)), lin


# ------------------------------------------------------------------ block-aligned reorders (the NATIVE decision)

@pytest.mark.parametrize("heads", [None, 3])
def test_block_reorder_clusters_are_unions_of_blocks(heads):
    from refsim.rptq.native import block_reorder

    rng = np.random.default_rng(3)
    k = 192
    hi = rng.uniform(0.5, 2, k) * np.where(rng.random(k) < 0.05, 20, 1)
    lo = -rng.uniform(0.5, 2, k)
    r = block_reorder(hi, lo, 4, n_heads=heads)
    assert np.array_equal(np.sort(r.perm), np.arange(k)) and r.sizes.sum() == k
    blocks = r.perm // 32
    for j in range(0, k, 32):  # the file's blocks stay whole and in order inside, and lie in one cluster
        assert np.all(blocks[j:j + 32] == blocks[j]) and np.array_equal(r.perm[j:j + 32] % 32, np.arange(32))
        assert np.unique(r.ids_new[j:j + 32]).size == 1
    if heads:  # per head: blocks never leave their head
        assert np.all(blocks // 2 == np.arange(k) // 64)
    pairs = block_cluster_pairs(blocks, r.ids_new)[1]
    assert pairs.size == k // 32  # one (S, A) pair per block
    with pytest.raises(ValueError, match="multiple of n_heads"):
        block_reorder(hi[:100], lo[:100], 4)


def test_block_aligned_native_block_has_one_pair_per_block():
    """The NATIVE decision on a block: with block-aligned reorders (R1, R4, R5, R3) every linear's product is one
    (S, A) pair per file block, and the physical block (blocks moved whole) equals the logical one bit for bit."""
    from refsim.models.forward import forward
    from refsim.models.opt import OPT
    from refsim.rptq.block import QuantizedOPTBlock
    from refsim.rptq.native import block_reorder
    from refsim.rptq.pipeline import find_reorders
    from refsim.rptq.reorder import permute_layer, permute_stats, reorder_arrays
    from refsim.rptq.synthetic import calibrated_block
    from refsim.schemes import native_scheme

    rng = np.random.default_rng(5)
    hidden, ffn, heads = 128, 256, 2
    layer, tensors = q4_1_opt_layer(rng, hidden, ffn)
    calib = rng.standard_normal((16, hidden)).astype(np.float32)
    block, _, stats = calibrated_block(layer, calib, heads=heads, n_clusters=4, head_clusters=2)
    reorders = find_reorders(stats, heads=heads, n_clusters=4, head_clusters=2)
    for r, point, h in (("R1", "ln1", None), ("R4", "ln2", None), ("R5", "fc2_in", None), ("R3", "attn", heads)):
        lo, hi = stats[point]
        reorders[r] = block_reorder(hi, lo, 2 if h else 4, n_heads=h)
    arrays = {**permute_layer(layer, reorders), **permute_stats(stats, reorders), **reorder_arrays(reorders)}
    aligned = QuantizedOPTBlock(arrays, block.meta)
    aligned = with_native(aligned, tensors, OPT)
    x = rng.standard_normal((5, hidden)).astype(np.float32)
    st = forward(OPT, aligned, x, native_scheme("NATIVE_W4A4"))
    for lin in OPT.linears:
        k = tensors[lin.name].shape[1]
        sums = st[f"{lin.name}_acc"]
        assert sums.block.size == k // 32 and np.array_equal(np.sort(sums.block), np.arange(k // 32)), lin.name
    logical = with_native(aligned.logical(OPT), tensors, OPT)
    assert np.array_equal(bits(forward(OPT, logical, x, native_scheme("NATIVE_W4A4"))["out"]), bits(st["out"]))
