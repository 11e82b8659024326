"""The integer OPT block: per-cluster GEMM vs its scalar twin, K-permutation invariance, and the
physically reordered dataflow equal to the logical one, bit for bit, on hypothesis-drawn shapes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import acc_spec

import refsim
from refsim.rptq.block import (
    CONFIGS,
    QuantizedOPTBlock,
    cluster_isums,
    cluster_matmul,
    config_bits,
    layer_norm,
    opt_block,
)
from refsim.rptq.cluster import Reorder
from refsim.rptq.reorder import permute_layer, reorder_arrays
from refsim.rptq.scalar import cluster_matmul_scalar
from refsim.rptq.synthetic import calibrated_block, random_opt_layer

ACC64 = refsim.preset("onnx").replace(acc_bits=64)  # a 64-bit wrapping accumulator: no sum leaves it

INT_CONFIGS = ("W4A8", "W4A4")


@st.composite
def cluster_problem(draw):
    m, n, k = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 9))
    c = draw(st.integers(1, k))
    ids = np.array(draw(st.lists(st.integers(0, c - 1), min_size=k, max_size=k)), dtype=np.int64)
    ids[:c] = np.arange(c)  # every cluster non-empty (order is still arbitrary after shuffling)
    ids = np.random.default_rng(draw(st.integers(0, 99))).permutation(ids)
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    abits, bbits = draw(st.sampled_from([(4, 4), (8, 4), (4, 3), (8, 8)]))
    qa = rng.integers(-(1 << (abits - 1)), 1 << (abits - 1), (m, k))
    qb = rng.integers(0, 1 << bbits, (n, k))
    za = rng.integers(-300, 300, c)
    zb = rng.integers(0, 1 << bbits, (n, c))
    sa = (rng.uniform(0.01, 2, c)).astype(np.float16)
    sb = rng.uniform(0.001, 1, (n, c)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    return qa, za, sa, qb, zb, sb, ids, c, bias


@given(cluster_problem())
def test_cluster_matmul_equals_scalar_twin(p):
    qa, za, sa, qb, zb, sb, ids, c, bias = p
    isums, y = cluster_matmul(qa, za, sa, qb, zb, sb, ids, c, bias=bias, spec=ACC64)
    s_isums, s_y = cluster_matmul_scalar(qa, za, sa, qb, zb, sb, ids, c, bias=bias)
    assert np.array_equal(isums, np.array(s_isums, dtype=np.int64))
    assert np.array_equal(y.view(np.int32), s_y.view(np.int32))


@given(cluster_problem(), st.integers(0, 2**31))
def test_k_permuted_gemm_equals_unpermuted(p, seed):
    """Permuting K (columns of both operands, and their cluster ids) leaves every int sum unchanged."""
    qa, za, sa, qb, zb, sb, ids, c, _ = p
    perm = np.random.default_rng(seed).permutation(ids.size)
    a = cluster_isums(qa, za, qb, zb, ids, c, spec=ACC64)
    b = cluster_isums(qa[:, perm], za, qb[:, perm], zb, ids[perm], c, spec=ACC64)
    assert np.array_equal(a, b)
    # the same for the plain accumulator under wrap at a narrow width (wrap is associative)
    w1 = refsim.int_gemm(qa, qb.T, spec=acc_spec(8))
    w2 = refsim.int_gemm(qa[:, perm], qb[:, perm].T, spec=acc_spec(8))
    assert np.array_equal(w1, w2)


def test_saturation_is_order_dependent():
    """Saturation is not associative: the K order changes the result (reported, not hidden)."""
    a = np.array([[100, 100, -100]])
    b = np.array([[1], [1], [1]])
    assert refsim.int_gemm(a, b, spec=acc_spec(8, "saturate"))[0, 0] == 27
    assert refsim.int_gemm(a[:, [2, 0, 1]], b[[2, 0, 1]], spec=acc_spec(8, "saturate"))[0, 0] == 100


def test_layer_norm_writes_permuted_addresses():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 12)).astype(np.float32) * 3
    g, b = rng.standard_normal(12).astype(np.float32), rng.standard_normal(12).astype(np.float32)
    perm = rng.permutation(12)
    y = layer_norm(x, g, b)
    yp = layer_norm(x, g[perm], b[perm], perm=perm)
    assert np.array_equal(y[:, perm], yp)
    # against the textbook formula in float64 (one float32 rounding apart)
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5) * g + b
    assert np.max(np.abs(y - ref)) < 1e-5


def random_block(rng, hidden, heads, ffn, n_clusters, head_clusters, wbits=4, seed=0):
    """A random layer calibrated on its own input x (``refsim.rptq.synthetic``)."""
    layer = random_opt_layer(rng, hidden, ffn)
    x = (rng.standard_normal((9, hidden)) * 2).astype(np.float32)
    block, reorders, _ = calibrated_block(layer, x, heads=heads, n_clusters=n_clusters, head_clusters=head_clusters,
                                          wbits=wbits, seed=seed)
    return layer, block, x, reorders


@st.composite
def block_shapes(draw):
    heads = draw(st.integers(1, 3))
    d = draw(st.integers(2, 6))
    hidden = heads * d
    ffn = draw(st.integers(2, 3 * hidden))
    return hidden, heads, ffn, draw(st.integers(1, min(4, hidden))), draw(st.integers(1, min(3, d))), \
        draw(st.integers(0, 2**31))


@settings(max_examples=15)  # each example runs k-means five times
@given(block_shapes())
def test_physical_dataflow_equals_logical(shape):
    hidden, heads, ffn, nc, hc, seed = shape
    rng = np.random.default_rng(seed)
    if ffn < nc:
        ffn = nc
    _, block, x, reorders = random_block(rng, hidden, heads, ffn, nc, hc)
    logical = block.logical()
    for config in INT_CONFIGS:
        a = opt_block(block, x, config=config)
        b = opt_block(logical, x, config=config)
        assert np.array_equal(a["out"].view(np.int32), b["out"].view(np.int32))
        for stage, r in (("ln1_codes", "R1"), ("q_codes", "R2"), ("k_codes", "R2"), ("v_codes", "R3"),
                         ("attn_codes", "R3"), ("ln2_codes", "R4"), ("fc2_in_codes", "R5")):
            assert np.array_equal(a[stage], b[stage][:, reorders[r].perm]), stage
        for stage in ("probs_codes", "out_acc", "fc2_acc", "scores_acc", "h1", "out_proj"):
            assert np.array_equal(a[stage], b[stage]), stage
        for stage, r in (("q_acc", "R2"), ("k_acc", "R2"), ("v_acc", "R3"), ("fc1_acc", "R5")):
            assert np.array_equal(a[stage], b[stage][..., reorders[r].perm]), stage
        heads_cat = [np.concatenate(list(s["attn_acc"][:, 0]), axis=-1) for s in (a, b)]
        assert np.array_equal(heads_cat[0], heads_cat[1][:, reorders["R3"].perm])


def test_reordered_float_block_equals_unreordered():
    """Quantization off: the reordered float block equals the layer without any reordering (float tolerance:
    only the float64 summation order of the GEMMs differs, then one float32 rounding)."""
    rng = np.random.default_rng(3)
    layer, block, x, _ = random_block(rng, 12, 3, 20, 3, 2)
    ident = {r: Reorder(np.arange(n), np.zeros(n, np.int64), np.array([n]))
             for r, n in (("R1", 12), ("R2", 12), ("R3", 12), ("R4", 12), ("R5", 20))}
    plain = QuantizedOPTBlock({**permute_layer(layer, ident), **reorder_arrays(ident),
                               **{k: v for k, v in block.arrays.items() if k.startswith("stat.")}},
                              {**block.meta, "wbits": None})
    a = opt_block(block, x, config="W16A16")["out"]
    b = opt_block(plain, x, config="W16A16")["out"]
    assert np.max(np.abs(a - b)) <= 4 * np.finfo(np.float32).eps * np.max(np.abs(b))


def test_reordering_improves_low_bit_error():
    rng = np.random.default_rng(5)
    layer, block, x, _ = random_block(rng, 16, 2, 32, 4, 2)
    ref = opt_block(block, x, config="W16A16")
    s = opt_block(block, x, config={"wbits": None, "abits": 4, "kvbits": 4})
    one = QuantizedOPTBlock({**block.arrays, "R1.ids": np.zeros(16, np.int64), "R1.sizes": np.array([16])},
                            block.meta)
    s1 = opt_block(one, x, config={"wbits": None, "abits": 4, "kvbits": 4})
    deq = refsim.dequantize(s["ln1_codes"], s["ln1_scale"], s["ln1_zero"], axis=-1, clusters=block["R1.ids"])
    deq1 = refsim.dequantize(s1["ln1_codes"], s1["ln1_scale"], s1["ln1_zero"])
    assert refsim.sqnr_db(ref["ln1"], deq) > refsim.sqnr_db(ref["ln1"], deq1) + 3


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_every_config_runs_and_reports_stages(config):
    rng = np.random.default_rng(7)
    wbits = CONFIGS[config][0] or 4
    _, block, x, _ = random_block(rng, 8, 2, 12, 2, 2, wbits=wbits)
    ref = opt_block(block, x, config="W16A16")
    s = opt_block(block, x, config=config)
    assert s["out"].shape == x.shape and s["out"].dtype == np.float32
    if config == "W16A16":
        assert refsim.sqnr_db(ref["out"], s["out"]) == np.inf
    else:
        assert 0 < refsim.sqnr_db(ref["out"], s["out"]) < np.inf
    _, abits, kvbits = CONFIGS[config]
    assert ("ln1_codes" in s) == (abits is not None)
    assert ("k_codes" in s) == (kvbits is not None)
    if kvbits is not None:
        assert s["k_codes"].min() >= -(1 << (kvbits - 1)) and s["k_codes"].max() < (1 << (kvbits - 1))
    if abits is not None:
        assert s["ln1_codes"].max() < (1 << (max(8, abits) - 1))
        assert s["probs_codes"].min() >= 0 and s["probs_codes"].max() <= 255


def test_bad_arguments():
    rng = np.random.default_rng(7)
    _, block, x, _ = random_block(rng, 8, 2, 12, 2, 2)
    with pytest.raises(ValueError, match="config="):
        opt_block(block, x, config="W5A5")
    with pytest.raises(ValueError, match="wbits"):
        opt_block(block, x, config="W3A3KV")
    with pytest.raises(ValueError, match="abits"):
        config_bits({"wbits": 4, "abits": 1, "kvbits": None})
    with pytest.raises(ValueError, match="NaN"):
        opt_block(block, np.full_like(x, np.nan), config="W4A4")
    with pytest.raises(ValueError, match="shape"):
        opt_block(block, x[:, :4], config="W4A4")


def test_qrazor_sdr_path():
    rng = np.random.default_rng(11)
    _, block, x, _ = random_block(rng, 32, 2, 48, 4, 2)
    ref = opt_block(block, x, config="W16A16")
    runs = {c: opt_block(block, x, config=c) for c in ("QRAZOR_W4A4", "QRAZOR_W4A4KV4", "QRAZOR_W4A8")}
    s = runs["QRAZOR_W4A4"]
    assert np.array_equal(s["out"], opt_block(block, x, config="QRAZOR")["out"])  # the alias
    assert s["ln1_codes"].dtype == np.int8 and np.abs(s["ln1_codes"]).max() <= 7
    assert s["ln1_flags"].shape == (x.shape[0], 2) and s["ln1_flags"].max() <= 12  # 32 channels, g = 16
    assert s["fc2_acc"].dtype == np.int32 and s["probs_codes"].shape == (2, x.shape[0], x.shape[0])  # 32-bit acc
    assert np.abs(runs["QRAZOR_W4A4KV4"]["k_codes"]).max() <= 7  # K razored to 4-bit codes
    q = {c: refsim.sqnr_db(ref["out"], r["out"]) for c, r in runs.items()}
    assert q["QRAZOR_W4A8"] > q["QRAZOR_W4A4"] > 5
