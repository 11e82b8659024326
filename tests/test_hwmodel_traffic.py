"""Traffic, roofline, hardware table and energy."""

import json

import numpy as np
import pytest

from hwmodel import get_hardware, layer_table, throughput
from hwmodel.energy import BITFUSION_PJ, FP16_MAC_PJ, energy_table, int_mac_pj, is_interpolated
from hwmodel.hardware import Hardware
from hwmodel.quantconfig import PRESETS, stack
from hwmodel.shapes import get_shape
from hwmodel.traffic import build_ops, stage_totals


def ops_by_name(model, config, hw, batch, seq, stage):
    return {r["op"]: r for r in layer_table(model, config, hw, batch=batch, seq=seq, stage=stage)}


def test_opt_ops_and_lm_head_count():
    rows = ops_by_name("opt-66b", "W16A16", "H200", 2, 512, "prefill")
    assert [k for k in rows if k.startswith("fc")] == ["fc1", "fc2"]
    assert "gate_up" not in rows
    h, V, f = 9216, 50272, 36864
    assert rows["lm_head"]["ops"] == 2 * 2 * 512 * h * V  # 2 b s h V (DESIGN.md)
    assert rows["fc1"]["ops"] == 2 * 2 * 512 * h * f and rows["fc1"]["count"] == 64
    assert rows["q_proj"]["weight_bytes"] == h * h * 2 + h * 2  # fp16 weight + fp16 bias
    # causal attention: s(s+1)/2 pairs per head, 2 matmuls of 2 ops per MAC, plus 5 softmax ops per pair
    pairs = 512 * 513 / 2
    assert rows["attention"]["ops"] == 2 * 72 * pairs * (4 * 128 + 5)
    dec = ops_by_name("opt-66b", "W16A16", "H200", 2, 512, "decode")
    assert dec["lm_head"]["ops"] == 2 * 2 * h * V
    assert dec["attention"]["kv_load_bytes"] == 2 * 512 * 2 * h * 2  # whole fp16 cache of 2 sequences


def test_llama_gated_mlp_and_gqa_kv_store():
    rows = ops_by_name("llama-3-8b", "W4A4", "H200", 1, 1024, "prefill")
    assert rows["gate_up"]["ops"] == 2 * 1024 * 4096 * 2 * 14336
    assert rows["k_proj"]["kv_store_bytes"] == 1024 * 1024 * 4 / 8  # 8 KV heads x 128 at 4 bits
    assert rows["gate_up"]["datapath"] == "W4A8 on int8"  # LayerNorm output at max(8, a)
    assert rows["down"]["datapath"] == "W4A4 on int8"  # Hopper: no int4 tensor cores


def test_quantized_lm_head_runs_on_the_fp16_path_and_energy_sources():
    from hwmodel.traffic import mac_energy_notes

    rows = ops_by_name("opt-66b", "W4A4", "H200", 1, 128, "decode")
    assert rows["lm_head"]["datapath"] == "fp16"
    # 4-bit codes + one (scale, zero) fp16 pair per row
    assert rows["lm_head"]["weight_bytes"] == 50272 * 9216 / 2 + 50272 * 4
    notes = {n["mac"]: n for n in mac_energy_notes("opt-66b", "W4A4", "H200")}
    assert notes["W4A4"]["source"] == "BitFusion" and notes["W4A8"]["source"].startswith("interpolated")
    assert notes["fp16"]["pj"] == 1.5


def test_decode_batch1_is_weight_streaming():
    t = throughput("opt-66b", "W16A16", "H200", batch=1, seq=128)["decode"]
    weights = get_shape("opt-66b").n_params * 2
    # memory bound: one step reads every weight once (plus a small KV cache and embeddings)
    assert t["t_memory"] > 20 * t["t_compute"]
    assert t["time_s"] == pytest.approx(weights / 4.8e12, rel=0.02)


def test_hopper_has_no_int4_and_a100_does():
    h200, a100 = get_hardware("h200"), get_hardware("A100")
    assert h200.peak(4, 4) == h200.peak(8, 8) == 1978.9e12
    assert h200.peak(3, 3) == h200.peak(8, 8)
    assert a100.peak(4, 4) == 2 * a100.peak(8, 8)
    assert h200.peak(4, 16) == h200.peak(16, 16)  # weight-only: dequantized onto the fp16 path
    # compute-bound prefill: W4A4 on H200 is at most 2x W16A16 (int8 vs fp16), on H200-int4 more
    t16 = throughput("opt-66b", "W16A16", "H200", batch=8, seq=2048)["prefill"]["t_compute"]
    t4 = throughput("opt-66b", "W4A4", "H200", batch=8, seq=2048)["prefill"]["t_compute"]
    t4x = throughput("opt-66b", "W4A4", "H200-int4", batch=8, seq=2048)["prefill"]["t_compute"]
    assert 1.9 < t16 / t4 < 2.0
    assert t4x < t4


def test_user_defined_accelerator_from_mac_array_and_json(tmp_path):
    acc = Hardware.from_mac_array("x", rows=128, cols=64, mac_w_bits=3, mac_a_bits=3, clock_hz=1e9,
                                  bandwidth=1e12, capacity=2**34, buffer=2**24)
    base = 2 * 128 * 64 * 1e9
    assert acc.peak(3, 3) == base
    assert acc.peak(4, 4) == base / 4  # bit-sliced: 2 passes per operand
    assert acc.peak(2, 3) == base  # floor(3/2) = 1 two-bit value per 3-bit slice
    spec = {"name": "my-acc", "bandwidth_gbs": 800, "capacity_gib": 32, "buffer_mib": 16, "clock_ghz": 1.2,
            "mac_rows": 64, "mac_cols": 64, "mac_w_bits": 4, "mac_a_bits": 8, "peak_tops": {"3,3": 50}}
    path = tmp_path / "acc.json"
    path.write_text(json.dumps(spec))
    hw = get_hardware(str(path))
    assert hw.bandwidth == 800e9 and hw.capacity == 32 * 2**30 and hw.buffer == 16 * 2**20
    assert hw.peak(4, 8) == 2 * 64 * 64 * 1.2e9 and hw.peak(2, 4) == 2 * 64 * 64 * 1.2e9 * 2 * 2
    assert hw.peak(3, 3) == max(50e12, hw.peaks[(4, 4)])
    t = throughput("opt-1.3b", "W3A3KV", hw, batch=1, seq=256)
    assert t["decode"]["tokens_per_s"] > 0


@pytest.mark.parametrize("bad, match", [
    ("B200", "unknown hardware 'B200'; known: A100, H100, H200"),
    ({"name": "x"}, "missing keys"),
    ({"name": "x", "bandwidth_gbs": 1, "capacity_gib": 1, "buffer_mib": 1, "clock_ghz": 1, "typo": 1},
     "unknown keys"),
])
def test_bad_hardware(bad, match):
    with pytest.raises(ValueError, match=match):
        get_hardware(bad)


def test_on_chip_buffer_keeps_small_activations_off_dram():
    rows = ops_by_name("opt-1.3b", "W16A16", "H200", 1, 64, "decode")
    assert rows["ln1"]["dram_bytes"] == 0 and rows["ln1"]["act_load_bytes"] > 0
    assert rows["fc1"]["dram_bytes"] == rows["fc1"]["weight_bytes"]
    big = ops_by_name("opt-1.3b", "W16A16", "H200", 64, 2048, "prefill")
    assert big["ln1"]["dram_bytes"] == big["ln1"]["act_load_bytes"] + big["ln1"]["act_store_bytes"]


def test_energy_sources_and_interpolation():
    for bits, pj in BITFUSION_PJ.items():
        assert int_mac_pj(bits, bits) == pytest.approx(pj, rel=1e-12)
        assert not is_interpolated(bits, bits)
    e3 = float(int_mac_pj(3, 3))
    assert BITFUSION_PJ[2] < e3 < BITFUSION_PJ[4] and is_interpolated(3, 3)
    assert e3 == pytest.approx(0.063 * (9 / 4) ** (np.log(0.136 / 0.063) / np.log(4)), rel=1e-12)
    assert int_mac_pj(4, 8) == pytest.approx(float(np.sqrt(0.136 * 0.344)), rel=1e-12)  # product 32
    labels = {(r["w_bits"], r["a_bits"]): r["source"] for r in energy_table()}
    assert labels[(3, 3)].startswith("interpolated") and labels[(8, 8)].startswith("BitFusion")
    # decode energy per token: fp16 MACs and DRAM; fewer bits -> less energy
    e16 = throughput("llama-2-7b", "W16A16", "H200", batch=8, seq=1024)["decode"]["energy_per_token_j"]
    e4 = throughput("llama-2-7b", "W4A4", "H200", batch=8, seq=1024)["decode"]["energy_per_token_j"]
    assert e4 < e16 / 2
    assert FP16_MAC_PJ == 1.5


def test_stage_totals_vectorized_equals_scalar():
    shape, hw = get_shape("mistral-7b"), get_hardware("H100")
    cfgs = [PRESETS[n] for n in ("W16A16", "W4A16", "W4A4", "qrazor-W4A4KV4", "W3A3KV")]
    b = np.array([1, 4, 64, 8, 2])
    s = np.array([128, 8192, 1024, 16384, 3])
    for stage in ("prefill", "decode"):
        vec = stage_totals(shape, stack(cfgs), hw, b, s, stage)
        for i, c in enumerate(cfgs):
            one = stage_totals(shape, c.fields(), hw, int(b[i]), int(s[i]), stage)
            for k in ("time_s", "energy_j", "dram_bytes", "ops"):
                assert float(one[k]) == pytest.approx(vec[k][i], rel=1e-12)


def test_build_ops_rejects_unknown_stage():
    with pytest.raises(ValueError, match="stage must be one of"):
        build_ops(get_shape("opt-125m"), PRESETS["W4A4"].fields(), get_hardware("A100"), 1, 1, "train")
