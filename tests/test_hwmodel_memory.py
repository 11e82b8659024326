"""Memory footprint: RPTQ Table 3 (OPT-66b) and GPTQ's OPT-175B figures, plus exact per-term checks."""

import numpy as np
import pytest

from hwmodel import memory
from hwmodel.footprint import GB, GIB, memory_parts
from hwmodel.quantconfig import PRESETS, custom, parse_config, qrazor, rptq, stack
from hwmodel.shapes import get_shape

# RPTQ (arXiv 2304.01089) Table 3, OPT-66b, GiB; columns: batch 1, 8, 64 x sequence 2048, 4096, 8192
TABLE3 = {
    "W16A16": [128.1, 133.0, 142.7, 162.1, 200.9, 278.5, 433.8, 744.3, 1365.3],
    "W4A16": [35.7, 40.5, 50.2, 69.6, 108.4, 186.1, 341.3, 651.9, 1272.9],
    "W4A8": [33.3, 35.8, 40.7, 50.6, 70.5, 110.1, 189.5, 348.1, 665.4],
    "W4A4": [32.1, 33.4, 36.0, 41.2, 51.5, 72.2, 113.5, 196.2, 361.6],
    "W4A4KV": [32.2, 33.7, 36.5, 42.2, 53.6, 76.4, 122.0, 213.1, 395.4],
    "W4A3KV": [32.0, 33.1, 35.4, 39.9, 49.0, 67.2, 103.7, 176.5, 322.3],
    "W3A3KV": [24.3, 25.4, 27.7, 32.2, 41.3, 59.5, 96.0, 168.8, 314.6],
}
CELLS = [(b, s) for b in (1, 8, 64) for s in (2048, 4096, 8192)]


@pytest.mark.parametrize("config", list(TABLE3))
def test_rptq_table3_every_cell_within_1_percent(config):
    got = np.array([memory("opt-66b", config, batch=b, seq=s).total_gib for b, s in CELLS])
    rel = np.abs(got / np.array(TABLE3[config]) - 1)
    assert rel.max() < 0.01, f"{config}: worst cell off by {rel.max():.2%}: {np.round(got, 1)}"
    # the accounting is not merely inside the tolerance: every cell is within 0.25%
    assert rel.max() < 0.0025


def test_gptq_opt175b_3bit():
    m = memory("opt-175b", "gptq-W3", batch=1, seq=2048)
    # "about 63 GB" (GiB): 3-bit linear layers, fp16 embeddings and output layer
    assert m.weights_gib == pytest.approx(63.0, rel=0.01)
    # "about 9 GB" of keys and values for 2048 tokens: exactly 2 * 96 * 2048 * 12288 * 2 bytes = 9 GiB
    assert m.kv_cache == 2 * 96 * 2048 * 12288 * 2
    assert m.kv_cache_gib == 9.0
    # the fp16 embeddings and output layer are 2 * 50272 * 12288 * 2 bytes of the 63
    assert m.parts["lm_head"] == 50272 * 12288 * 2


def test_units_gib_and_gb():
    m = memory("opt-66b", "W4A4KV", batch=64, seq=8192)
    assert m.total_gib == m.total / GIB and m.total_gb == m.total / GB
    for k in ("weights", "kv_cache", "activations"):
        assert getattr(m, f"{k}_gib") == getattr(m, k) / 2**30
        assert getattr(m, f"{k}_gb") == getattr(m, k) / 1e9
    assert m.total == pytest.approx(m.weights + m.kv_cache + m.activations, rel=1e-15)
    d = m.to_dict()
    assert d["total_gib"] == m.total_gib and d["total_gb"] == m.total_gb
    assert sum(d["parts_bytes"].values()) == pytest.approx(m.total, rel=1e-12)


def test_weight_terms_are_code_bits_plus_row_parameters():
    shape = get_shape("opt-66b")
    w16 = memory(shape, "W16A16", batch=1, seq=1).parts
    w4 = memory(shape, "W4A16", batch=1, seq=1).parts
    assert w4["linear"] * 4 == w16["linear"] == shape.params_by_kind()["linear"] * 2
    rows = 64 * (4 * 9216 + 36864 + 9216)  # one fp16 scale + one fp16 zero per output row
    assert w4["w_params"] == rows * 4 and w16["w_params"] == 0


def test_kv_cache_gqa_window_and_sdr_flags():
    # LLaMA-3-8B: 8 KV heads of 128 -> 2 * 32 layers * 1024 * 2 bytes per token: 8192 tokens = 1 GiB fp16
    assert memory("llama-3-8b", "W16A16", batch=1, seq=8192).kv_cache == 2**30
    # Mistral-7B-v0.1's 4096-position sliding window bounds the cache
    a = memory("mistral-7b", "W16A16", batch=2, seq=4096).kv_cache
    assert memory("mistral-7b", "W16A16", batch=2, seq=16384).kv_cache == a
    # QRazor KV4: 4-bit codes + a 4-bit flag per 16 -> 4.25 bits per element
    k4 = memory("llama-2-7b", "qrazor-W4A4KV4", batch=1, seq=1000).parts["kv_cache"]
    assert k4 == 2 * 32 * 1000 * 4096 * 4.25 / 8


def test_rptq_reorder_indices_and_cluster_weights():
    base = memory("opt-66b", "W4A4", batch=1, seq=1).parts
    assert base["reorder_idx"] == 64 * 2 * 9216 * 4  # R1 and R4 permutations, int32
    assert memory("opt-66b", "W4A4KV", batch=1, seq=1).parts["reorder_idx"] == 0
    per_cluster = memory("opt-66b", rptq(4, 4, weights_per_cluster=True), batch=1, seq=1).parts
    # per output row and input cluster: q/k/v, fc1, fc2 by 32 clusters, out_proj by 72 heads x 4
    rows_32 = 64 * (3 * 9216 + 36864 + 9216)
    assert per_cluster["w_params"] == (rows_32 * 32 + 64 * 9216 * 72 * 4) * 4


def test_lm_head_storage_and_activation_sets():
    shared = memory("opt-66b", "W16A16", batch=1, seq=2048, lm_head_storage="shared")
    separate = memory("opt-66b", "W16A16", batch=1, seq=2048)
    assert separate.weights - shared.weights == 50272 * 9216 * 2
    with pytest.raises(ValueError, match="lm_head_bits == embed_bits"):
        memory("opt-66b", custom(w=4, embed=4, lm_head=16), batch=1, seq=1, lm_head_storage="shared")
    lin = memory("opt-66b", "W4A4", batch=8, seq=2048)
    allx = memory("opt-66b", "W4A4", batch=8, seq=2048, activations="all")
    # + two LayerNorm outputs at 8 bits and the attention context at 4 bits per token
    assert allx.activations - lin.activations == 8 * 2048 * (2 * 9216 * 1 + 9216 * 0.5)


def test_vectorized_equals_scalar():
    shape = get_shape("llama-3-70b")
    cfgs = [PRESETS[n] for n in ("W16A16", "W4A8", "W3A3KV", "qrazor-W4A4KV4", "gptq-W4-g128")]
    batch = np.array([1, 8, 64, 3, 17])
    seq = np.array([2048, 100, 8192, 4096, 1])
    vec = memory_parts(shape, stack(cfgs), batch, seq)["total"]
    for c, b, s, v in zip(cfgs, batch, seq, vec, strict=True):
        assert memory(shape, c, batch=int(b), seq=int(s)).total == pytest.approx(v, rel=1e-12)


def test_config_parsing():
    assert parse_config("W4A4KV").a_bits == 16 and parse_config("W4A4KV").kv_bits == 4
    c = parse_config("W3A8KV4")
    assert (c.w_bits, c.a_bits, c.kv_bits, c.embed_bits) == (3, 8, 4, 16)
    assert parse_config("w=3,a=8,kv=4,group=128").w_group == 128
    assert parse_config("qrazor-W4A4-g32").a_sdr_group == 32
    assert parse_config("W4A4-c8").clusters == 8
    assert qrazor(True).kv_eff_bits == 4.25


@pytest.mark.parametrize("bad, match", [
    ("W0A4", "w_bits must be in 1..32"), ("W4A0", "a_bits must be in 1..32"), ("W4A4KV0", "kv_bits"),
    ("W4X4", "unknown configuration 'W4X4'; known: W16A16"), ("w=4,foo=1", "unknown key 'foo'"),
])
def test_bad_configs(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_config(bad)


@pytest.mark.parametrize("kw, match", [
    (dict(batch=0, seq=2048), "batch must be a positive integer, got 0"),
    (dict(batch=1, seq=-5), "seq must be a positive integer, got -5"),
    (dict(batch=1.5, seq=8), "batch must be a positive integer"),
])
def test_bad_batch_and_seq(kw, match):
    with pytest.raises(ValueError, match=match):
        memory("opt-66b", "W4A4", **kw)
