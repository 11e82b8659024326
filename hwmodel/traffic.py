"""Per-layer operations, bytes moved, arithmetic intensity, roofline time and energy (LLM-Viewer style).

For each operation of a decoder layer and each stage:

* ``prefill``: b sequences of s tokens enter at once (n = b*s query tokens, causal attention);
* ``decode``: one new token per sequence (n = b) attends to a KV cache of min(s, window) positions,
  i.e. a decode step late in a generation of s tokens;

the model counts operations (a multiply-accumulate is 2 ops) and bytes: weights loaded (with their
dequantization parameters and SDR flags), activations loaded and stored, KV cache loaded and stored.
Roofline time is max(compute time, DRAM time), compute time = GEMM ops / peak(w, a) + vector ops /
vector rate, DRAM time = DRAM bytes / bandwidth. An activation tensor no larger than the on-chip
buffer stays on chip between consecutive operations (no DRAM bytes); weights and the KV cache always
come from DRAM. Arithmetic intensity = ops / DRAM bytes.

Operations of one layer (OPT names; LLaMA: o_proj, gate_up (one GEMM over the concatenated gate and
up weights with a SiLU(gate)*up epilogue), down):

=========  ==============================  ===========================================================
op         ops                              bytes
=========  ==============================  ===========================================================
ln1        8 n h (LayerNorm; RMSNorm 6)     load residual n h fp16, store n h at ln bits
q_proj     2 n h q_dim                      weight, load ln output, store q at a bits
k_proj     2 n h kv_dim                     weight, load ln output, store K into the cache (kv bits)
v_proj     2 n h kv_dim                     weight, load ln output, store V into the cache
attention  4 b H head_dim P + 5 b H P       load q, load K and V (prefill: the fresh b s positions,
           (P: (query, key) pairs per           read once; decode: the whole cache), store the context
           head: causal s(s+1)/2 prefill,       at a bits. Fused (FlashAttention-style): scores and
           cache length decode)                 probabilities never reach DRAM.
out_proj   2 n q_dim h                      weight, load context, load + store the fp16 residual (the
                                            residual add is fused in the GEMM epilogue)
ln2        as ln1
fc1        2 n h f (gated: 2 n h 2f)        weight, load ln output, store the intermediate at a bits
fc2        2 n f h                          weight, load intermediate, load + store the fp16 residual
=========  ==============================  ===========================================================

Once per forward pass: ``embed`` (gather n rows of the token table and of OPT's position table),
``final_norm`` and ``lm_head`` (2 n' h V ops with n' = b s in prefill, as DESIGN.md counts it, and
n' = b in decode; loads the output layer and stores fp16 logits).

GEMM datapath: with quantized activations (a < 16) the GEMMs are integer (w-bit weights times the
input's bits: ln bits for q/k/v and fc1, a bits for out_proj and fc2); with fp16 activations the
weights are dequantized in registers and the fp16 path runs. Attention matmuls are integer (kv bits
times ln bits, RPTQ's P at max(8, a)) when both q and the cache are quantized, fp16 otherwise.
``Hardware.peak`` picks the fastest datapath holding both operands (Hopper: int4 and int3 on int8).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .energy import VECTOR_OP_PJ, mac_pj
from .footprint import _eff, _is_attn_out, _pairs_per_row
from .hardware import Hardware, get_hardware
from .quantconfig import FP16, parse_config
from .shapes import ModelShape, get_shape

STAGES = ("prefill", "decode")
LAYERNORM_OPS = 8  # per element: mean, centre, square, variance sum, scale, gain, shift, quantize
RMSNORM_OPS = 6  # per element: square, sum, scale, gain, quantize, (residual read counted as bytes)
SOFTMAX_OPS = 5  # per score: max, subtract, exp, sum, divide


@dataclass
class Op:
    """One operation, every field an array broadcast over design points."""

    name: str
    kind: str  # "gemm", "attention", "vector"
    per_layer: bool
    mm_ops: np.ndarray  # matrix ops (2 per MAC)
    vec_ops: np.ndarray  # vector ops
    w_bytes: np.ndarray
    act_load: np.ndarray  # all activation bytes loaded (on chip or not)
    act_store: np.ndarray
    act_dram: np.ndarray  # the part of act_load + act_store that goes to DRAM
    kv_load: np.ndarray
    kv_store: np.ndarray
    w_c: np.ndarray  # datapath operand widths
    a_c: np.ndarray
    float_path: np.ndarray

    @property
    def ops(self):
        return self.mm_ops + self.vec_ops

    @property
    def dram_bytes(self):
        return self.w_bytes + self.kv_load + self.kv_store + self.act_dram

    @property
    def bytes(self):
        return self.w_bytes + self.kv_load + self.kv_store + self.act_load + self.act_store


def _attention_pairs(shape: ModelShape, s, stage: str):
    """(query, key) pairs per head and sequence: causal, bounded by a sliding window."""
    s = np.asarray(s, dtype=np.float64)
    if stage == "decode":
        return shape.kv_positions(s)
    if not shape.sliding_window:
        return s * (s + 1) / 2
    w = float(shape.sliding_window)
    return np.where(s <= w, s * (s + 1) / 2, w * (w + 1) / 2 + (s - w) * w)


def build_ops(shape: ModelShape, f: dict, hw: Hardware, batch, seq, stage: str) -> list[Op]:
    """The operations of one layer (``per_layer=True``) and the once-per-pass ones, vectorized."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    f = {k: np.asarray(v, dtype=np.float64) for k, v in f.items()}
    b = np.asarray(batch, dtype=np.float64)
    s = np.asarray(seq, dtype=np.float64)
    n = b * s if stage == "prefill" else b
    h, e, V = shape.hidden, shape.word_embed_proj_dim, shape.vocab
    buf = hw.buffer
    a_eff = _eff(f["a_bits"], f["a_sdr_group"])
    ln_eff = _eff(f["ln_bits"], f["a_sdr_group"])
    kv_eff = _eff(f["kv_bits"], f["kv_sdr_group"])
    w_eff = _eff(f["w_bits"], f["w_sdr_group"])
    int_act = f["a_bits"] < 16
    pair_bits = np.where(f["w_bits"] < 16, f["w_scale_bits"] + f["w_zero_bits"], 0.0)
    zero = np.zeros(np.broadcast_shapes(n.shape, *(v.shape for v in f.values())))

    def act(*tensors):
        tot = zero.copy()
        dram = zero.copy()
        for t in tensors:
            t = np.asarray(t, dtype=np.float64)
            tot = tot + t
            dram = dram + np.where(t > buf, t, 0.0)
        return tot, dram

    ops: list[Op] = []

    def add(name, kind, per_layer, mm=0.0, vec=0.0, w_bytes=0.0, loads=(), stores=(), kv_load=0.0,
            kv_store=0.0, w_c=FP16, a_c=FP16, float_path=True):
        lt, ld = act(*loads)
        st, sd = act(*stores)
        ops.append(Op(name, kind, per_layer, zero + mm, zero + vec, zero + w_bytes, lt, st, ld + sd,
                      zero + kv_load, zero + kv_store, zero + w_c, zero + a_c, zero + float_path))

    def weight_bytes(out_f, in_f, name=""):
        hc = shape.n_heads * f["head_clusters"] if _is_attn_out(name) else None
        return out_f * in_f * w_eff / 8 + out_f * _pairs_per_row(f, in_f, hc) * pair_bits / 8

    norm_ops = LAYERNORM_OPS if shape.family == "opt" else RMSNORM_OPS
    bias = 1 if shape.linear_bias else 0
    res = n * h * FP16 / 8  # the fp16 residual stream
    ln_out = n * h * ln_eff / 8
    # datapath of the GEMMs fed by a LayerNorm (q/k/v, fc1) and by a quantized activation (out_proj, fc2)
    gemm_ln = dict(w_c=np.where(int_act, f["w_bits"], FP16), a_c=np.where(int_act, f["ln_bits"], FP16),
                   float_path=~int_act)
    gemm_a = dict(w_c=np.where(int_act, f["w_bits"], FP16), a_c=np.where(int_act, f["a_bits"], FP16),
                  float_path=~int_act)
    names = {name: (o, i) for name, o, i in shape.layer_linears()}
    lin = list(names)

    add("ln1", "vector", True, vec=norm_ops * n * h, loads=[res], stores=[ln_out])
    for name, width, is_kv in ((lin[0], shape.q_dim, False), (lin[1], shape.kv_dim, True),
                               (lin[2], shape.kv_dim, True)):
        o, i = names[name]
        wb = weight_bytes(o, i) + bias * o * FP16 / 8
        if is_kv:
            add(name, "gemm", True, mm=2 * n * i * o, w_bytes=wb, loads=[ln_out],
                kv_store=n * width * kv_eff / 8, **gemm_ln)
        else:
            add(name, "gemm", True, mm=2 * n * i * o, w_bytes=wb, loads=[ln_out],
                stores=[n * width * a_eff / 8], **gemm_ln)
    pairs = _attention_pairs(shape, s, stage)
    kv_len = shape.kv_positions(s)
    kv_read = b * kv_len * 2 * shape.kv_dim * kv_eff / 8
    attn_int = int_act & (f["kv_bits"] < 16)
    add("attention", "attention", True, mm=4 * b * shape.n_heads * shape.head_dim * pairs,
        vec=SOFTMAX_OPS * b * shape.n_heads * pairs, loads=[n * shape.q_dim * a_eff / 8],
        stores=[n * shape.q_dim * a_eff / 8], kv_load=kv_read,
        w_c=np.where(attn_int, f["kv_bits"], FP16), a_c=np.where(attn_int, f["ln_bits"], FP16),
        float_path=~attn_int)
    o, i = names[lin[3]]
    add(lin[3], "gemm", True, mm=2 * n * i * o, w_bytes=weight_bytes(o, i, lin[3]) + bias * o * FP16 / 8,
        loads=[n * i * a_eff / 8, res], stores=[res], **gemm_a)
    add("ln2", "vector", True, vec=norm_ops * n * h, loads=[res], stores=[ln_out])
    ffn_store = n * shape.ffn * a_eff / 8
    if shape.gated:
        (go, gi), (uo, ui), (do, di) = names["gate_proj"], names["up_proj"], names["down_proj"]
        add("gate_up", "gemm", True, mm=2 * n * gi * (go + uo),
            w_bytes=weight_bytes(go, gi) + weight_bytes(uo, ui), loads=[ln_out], stores=[ffn_store],
            **gemm_ln)
        add("down", "gemm", True, mm=2 * n * di * do, w_bytes=weight_bytes(do, di),
            loads=[ffn_store, res], stores=[res], **gemm_a)
    else:
        (o1, i1), (o2, i2) = names["fc1"], names["fc2"]
        add("fc1", "gemm", True, mm=2 * n * i1 * o1, w_bytes=weight_bytes(o1, i1) + bias * o1 * FP16 / 8,
            loads=[ln_out], stores=[ffn_store], **gemm_ln)
        add("fc2", "gemm", True, mm=2 * n * i2 * o2, w_bytes=weight_bytes(o2, i2) + bias * o2 * FP16 / 8,
            loads=[ffn_store, res], stores=[res], **gemm_a)

    # ---- once per forward pass ----------------------------------------------------------------
    emb_bits = f["embed_bits"]
    gather = n * e * emb_bits / 8 + (n * h * emb_bits / 8 if shape.family == "opt" else 0.0)
    add("embed", "vector", False, vec=n * h, w_bytes=gather, stores=[res])
    if shape.final_norm:
        add("final_norm", "vector", False, vec=norm_ops * n * h, loads=[res], stores=[res])
    n_out = n  # prefill: logits for all b*s positions (DESIGN.md: 2 b s h V); decode: b
    lm_pair_bits = f["w_scale_bits"] + f["w_zero_bits"]  # one (scale, zero) per row when quantized
    lm_w = V * e * f["lm_head_bits"] / 8 + np.where(f["lm_head_bits"] < 16, V * lm_pair_bits / 8, 0.0)
    # the output layer's input (the final norm's output) is fp16 in every configuration here, so a quantized
    # output layer is dequantized in registers and runs on the fp16 path, like a weight-only GEMM
    add("lm_head", "gemm", False, mm=2 * n_out * e * V, w_bytes=lm_w, loads=[n_out * e * FP16 / 8],
        stores=[n_out * V * FP16 / 8])
    return ops


@dataclass
class OpCost:
    """Roofline and energy of one operation (arrays broadcast over design points)."""

    op: Op
    t_compute: np.ndarray
    t_memory: np.ndarray
    energy_pj: np.ndarray

    @property
    def time(self):
        return np.maximum(self.t_compute, self.t_memory)

    @property
    def intensity(self):
        """ops / DRAM bytes; +inf for an operation that moves no DRAM bytes (on-chip: undefined ratio)."""
        ops, dram = np.broadcast_arrays(np.asarray(self.op.ops, dtype=np.float64),
                                        np.asarray(self.op.dram_bytes, dtype=np.float64))
        return np.divide(ops, dram, out=np.full(ops.shape, np.inf), where=dram > 0)

    @property
    def bound(self):
        return np.where(self.t_compute >= self.t_memory, "compute", "memory")


def cost_ops(ops: list[Op], hw: Hardware) -> list[OpCost]:
    out = []
    for op in ops:
        peak = hw.peak(op.w_c, op.a_c)
        t_c = op.mm_ops / peak + op.vec_ops / hw.vector_ops
        t_m = op.dram_bytes / hw.bandwidth
        e = (op.mm_ops / 2 * mac_pj(op.w_c, op.a_c, float_path=op.float_path) + op.vec_ops * VECTOR_OP_PJ
             + op.dram_bytes * 8 * hw.dram_pj_per_bit)
        out.append(OpCost(op, t_c, t_m, e))
    return out


def stage_totals(shape: ModelShape, f: dict, hw: Hardware, batch, seq, stage: str) -> dict[str, np.ndarray]:
    """Whole-model totals of one stage, vectorized: time (s), ops, DRAM bytes, energy (J), tokens/s,
    energy per token (J)."""
    costs = cost_ops(build_ops(shape, f, hw, batch, seq, stage), hw)
    L = shape.n_layers
    tot = {"time_s": 0.0, "ops": 0.0, "dram_bytes": 0.0, "energy_j": 0.0, "t_compute": 0.0, "t_memory": 0.0}
    for c in costs:
        m = L if c.op.per_layer else 1
        tot["time_s"] = tot["time_s"] + m * c.time
        tot["t_compute"] = tot["t_compute"] + m * c.t_compute
        tot["t_memory"] = tot["t_memory"] + m * c.t_memory
        tot["ops"] = tot["ops"] + m * c.op.ops
        tot["dram_bytes"] = tot["dram_bytes"] + m * c.op.dram_bytes
        tot["energy_j"] = tot["energy_j"] + m * c.energy_pj * 1e-12
    b = np.asarray(batch, dtype=np.float64)
    tokens = b * np.asarray(seq, dtype=np.float64) if stage == "prefill" else b
    tot["tokens"] = tokens + 0 * tot["time_s"]
    tot["tokens_per_s"] = tokens / tot["time_s"]
    tot["energy_per_token_j"] = tot["energy_j"] / tokens
    return tot


def layer_table(model, config, hw, *, batch: int, seq: int, stage: str) -> list[dict]:
    """Per-operation rows for one configuration: ops, bytes, intensity, roofline time, bound, energy."""
    shape, cfg, hw = get_shape(model), parse_config(config), get_hardware(hw)
    rows = []
    for c in cost_ops(build_ops(shape, cfg.fields(), hw, batch, seq, stage), hw):
        op = c.op
        rows.append({
            "stage": stage, "op": op.name, "count": shape.n_layers if op.per_layer else 1,
            "ops": float(op.ops), "weight_bytes": float(op.w_bytes), "act_load_bytes": float(op.act_load),
            "act_store_bytes": float(op.act_store), "kv_load_bytes": float(op.kv_load),
            "kv_store_bytes": float(op.kv_store), "dram_bytes": float(op.dram_bytes),
            # ops per DRAM byte; None (JSON null) for an operation that moves no DRAM bytes (on-chip)
            "intensity": float(c.intensity) if float(op.dram_bytes) > 0 else None, "datapath": _datapath(op, hw),
            "t_compute_s": float(c.t_compute), "t_memory_s": float(c.t_memory), "time_s": float(c.time),
            "bound": str(c.bound), "energy_j": float(c.energy_pj) * 1e-12,
        })
    return rows


def mac_energy_notes(model, config, hw) -> list[dict]:
    """The MAC widths a configuration's operations use, with their energy and its source."""
    from .energy import FP16_MAC_PJ, int_mac_pj, is_interpolated

    shape, cfg, hw = get_shape(model), parse_config(config), get_hardware(hw)
    seen = {}
    for op in build_ops(shape, cfg.fields(), hw, 1, 1, "decode"):
        if op.kind == "vector":
            continue
        w, a, fl = float(op.w_c), float(op.a_c), bool(op.float_path)
        if fl:
            seen["fp16"] = {"mac": "fp16", "pj": FP16_MAC_PJ, "source": "Horowitz ISSCC 2014"}
        else:
            key = f"W{w:g}A{a:g}"
            seen[key] = {"mac": key, "pj": float(int_mac_pj(w, a)),
                         "source": "interpolated from BitFusion" if is_interpolated(w, a) else "BitFusion"}
    return list(seen.values())


def _datapath(op: Op, hw: Hardware) -> str:
    if op.kind == "vector":
        return "vector"
    w, a = int(np.ceil(op.w_c)), int(np.ceil(op.a_c))
    nw, na = hw.native(w, a)
    name = "fp16" if (nw, na) == (16, 16) else f"int{nw}" if nw == na else f"W{nw}A{na}"
    return name if (nw, na) == (w, a) else f"W{w}A{a} on {name}"


def throughput(model, config, hw, *, batch: int, seq: int) -> dict:
    """Prefill and decode summary for one configuration (scalars)."""
    shape, cfg, hw = get_shape(model), parse_config(config), get_hardware(hw)
    out = {}
    for stage in STAGES:
        t = stage_totals(shape, cfg.fields(), hw, batch, seq, stage)
        out[stage] = {k: float(v) for k, v in t.items()}
    return out
