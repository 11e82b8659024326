"""Memory footprint of LLM inference: weights, KV cache and dynamic activations, in bytes.

``memory(model, config, batch=, seq=)`` returns a :class:`MemoryReport`; every component is in bytes,
with ``*_gib`` (2^30 bytes) and ``*_gb`` (10^9 bytes) next to it. The formulas (all sizes in bits,
divided by 8 at the end; L layers, h hidden, f FFN width, V vocabulary, b batch, s sequence):

Weights (stored once, independent of b and s)
    linear      sum over the GEMM weights of a layer, times L:  out * in * (w + 4/g_sdr)
                [the integer codes of every q/k/v/o, fc1/fc2 (gate/up/down) weight, plus QRazor's 4-bit
                SDR flag per group of g_sdr inputs]
    w_params    L * sum(out * pairs_per_row) * (scale_bits + zero_bits)
                [the dequantization parameters: one pair per output row, per row and input cluster
                (RPTQ code), or per group of g inputs (GPTQ groupsize)]
    embed       (V * e + P * h + projections) * embed_bits + rows * (scale + zero) when quantized
                [token table, OPT's learned position table (P = max_positions + 2), OPT-350m's
                project_in/out]
    lm_head     V * e * lm_head_bits (+ per-row parameters)
                [the output layer. A tied output layer is stored as its own GEMM operand by default
                (``lm_head_storage="separate"``): the GEMM reads it in its packed layout, the embedding
                is a row-gather table. GPTQ's "embeddings and output layer in fp16" and RPTQ's Table 3
                both count it separately; ``"shared"`` counts a tied one once.]
    norms_bias  LayerNorm / RMSNorm gains and shifts, linear biases, at fp16
    act_params  static activation quantization parameters: an fp16 (scale, zero) pair per cluster
                (RPTQ) or per tensor, per layer
    reorder_idx RPTQ: the LayerNorm-output permutations R1 and R4 (h indices each, per layer), which the
                LayerNorm uses to write permuted addresses. R2, R3 and R5 are folded into weight
                layouts offline and cost nothing at run time.

KV cache
    kv_cache    2 * L * b * min(s, window) * kv_dim * (kv + 4/g_sdr)   [keys and values of every layer
                for every cached position; kv_dim = n_kv_heads * head_dim (GQA); Mistral's sliding
                window bounds the positions]  + static K/V scales

Dynamic activations (prefill of b * s tokens, one layer live at a time: layers run in sequence and
reuse the same buffers, so this is one layer's working set, not L of them)
    act_residual   b*s*h*16         the fp16 residual stream entering the layer (kept for the skips)
    act_q          b*s*q_dim*a      the query projection output
    act_kv_new     b*s*2*kv_dim*kv  the layer's fresh key/value projection outputs, at cache precision
    act_attn_out   b*s*h*16         the out_proj / o_proj output, fp16, added into the residual
    act_ffn        b*s*f*a          the FFN intermediate (fc1 -> ReLU, requantized in the GEMM
                                    epilogue; gated MLPs run gate and up as one GEMM whose epilogue
                                    stores SiLU(gate) * up, one f-wide tensor)
    act_ffn_out    b*s*h*16         the fc2 / down_proj output, fp16, added into the residual
  i.e. the layer input and the output of every linear layer, each at the precision it is stored in.
  With ``activations="all"`` the inputs that are not linear outputs are added too:
    act_ln         b*s*2*h*ln       the two LayerNorm outputs (RPTQ: max(8, a) bits)
    act_context    b*s*q_dim*a      the attention context (out_proj input)
  The default set is what RPTQ's Table 3 counts (see docs/costmodel.md for the cell-by-cell check);
  attention score matrices are not held (fused, FlashAttention-style, attention).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .quantconfig import FP16, SDR_FLAG_BITS, QuantConfig, parse_config
from .shapes import ModelShape, get_shape

GIB = 2**30  # gibibyte: what Table 3 of RPTQ and GPTQ's "63 GB" actually are
GB = 10**9  # gigabyte (SI)

ACTIVATION_SETS = ("linear_outputs", "all")
LM_HEAD_STORAGE = ("separate", "shared")

MEANINGS = {
    "linear": "integer codes of the decoder GEMM weights (+ SDR flags)",
    "w_params": "weight dequantization parameters (scale, zero) per row / cluster / group",
    "embed": "token and position embedding tables (+ their per-row parameters when quantized)",
    "lm_head": "output layer, stored as its own GEMM operand",
    "norms_bias": "LayerNorm/RMSNorm gains and shifts, linear biases (fp16)",
    "act_params": "static activation quantization parameters (per cluster or per tensor)",
    "reorder_idx": "RPTQ LayerNorm-output permutations R1, R4",
    "kv_cache": "keys and values of every layer for every cached position",
    "kv_params": "static K/V quantization parameters",
    "act_residual": "fp16 residual stream entering the layer",
    "act_q": "query projection output",
    "act_kv_new": "the layer's fresh K/V projection outputs at cache precision",
    "act_attn_out": "out_proj output (fp16, added into the residual)",
    "act_ffn": "FFN intermediate (fc1 output after ReLU, or SiLU(gate) * up)",
    "act_ffn_out": "fc2/down output (fp16, added into the residual)",
    "act_ln": "LayerNorm outputs (only with activations='all')",
    "act_context": "attention context, out_proj input (only with activations='all')",
}

WEIGHT_PARTS = ("linear", "w_params", "embed", "lm_head", "norms_bias", "act_params", "reorder_idx")
KV_PARTS = ("kv_cache", "kv_params")
ACT_PARTS = ("act_residual", "act_q", "act_kv_new", "act_attn_out", "act_ffn", "act_ffn_out",
             "act_ln", "act_context")


def _check_positive(name: str, value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf" or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return arr


def _eff(bits, group):
    """Bits per element of a code of ``bits`` with a 4-bit SDR flag per ``group`` elements (group 0: none)."""
    group = np.asarray(group, dtype=np.float64)
    return bits + np.where(group > 0, SDR_FLAG_BITS / np.maximum(group, 1), 0.0)


def _pairs_per_row(f, in_features: int, head_clusters_total=None):
    """Weight (scale, zero) pairs per output row: per input cluster, per group, or one.

    With per-cluster weights (``w_clusters > 0``) the input clusters of out_proj are RPTQ's R3
    clusters, ``head_clusters`` per head (``head_clusters_total`` = n_heads * head_clusters)."""
    clusters, group = f["w_clusters"], f["w_group"]
    if head_clusters_total is not None:
        clusters = np.where(clusters > 0, np.maximum(head_clusters_total, 1), 0.0)
    per_group = np.ceil(in_features / np.maximum(group, 1))
    return np.where(clusters > 0, clusters, np.where(group > 0, per_group, 1.0))


def _is_attn_out(name: str) -> bool:
    return name in ("out_proj", "o_proj")


def memory_parts(shape: ModelShape, f: dict[str, Any], batch, seq, *, activations: str = "linear_outputs",
                 lm_head_storage: str = "separate") -> dict[str, np.ndarray]:
    """Every memory term in bytes, vectorized: ``f`` holds scalars or broadcastable arrays of the
    numeric fields of :class:`QuantConfig`; ``batch`` and ``seq`` broadcast with them."""
    if activations not in ACTIVATION_SETS:
        raise ValueError(f"activations must be one of {ACTIVATION_SETS}, got {activations!r}")
    if lm_head_storage not in LM_HEAD_STORAGE:
        raise ValueError(f"lm_head_storage must be one of {LM_HEAD_STORAGE}, got {lm_head_storage!r}")
    f = {k: np.asarray(v, dtype=np.float64) for k, v in f.items()}
    b = np.asarray(batch, dtype=np.float64)
    s = np.asarray(seq, dtype=np.float64)
    L, h, V, e = shape.n_layers, shape.hidden, shape.vocab, shape.word_embed_proj_dim
    wq = f["w_bits"] < 16  # a quantized weight carries dequantization parameters
    pair_bits = f["w_scale_bits"] + f["w_zero_bits"]

    # ---- weights ------------------------------------------------------------------------------
    w_eff = _eff(f["w_bits"], f["w_sdr_group"])
    linear = 0.0
    params = 0.0
    for name, out_f, in_f in shape.layer_linears():
        linear = linear + out_f * in_f * w_eff
        hc = shape.n_heads * f["head_clusters"] if _is_attn_out(name) else None
        params = params + out_f * _pairs_per_row(f, in_f, hc) * pair_bits
    linear = L * linear
    w_params = np.where(wq, L * params, 0.0)

    def table_bits(rows: int, cols: int, bits):
        # a quantized table carries one (scale, zero) pair per row (or per embed_group columns)
        pairs = np.where(f["embed_group"] > 0, np.ceil(cols / np.maximum(f["embed_group"], 1)), 1.0)
        return rows * cols * bits + np.where(bits < 16, rows * pairs * pair_bits, 0.0)

    embed = table_bits(V, e, f["embed_bits"])
    if shape.family == "opt":
        embed = embed + table_bits(shape.max_positions + 2, h, f["embed_bits"])
    if e != h:
        embed = embed + table_bits(h, e, f["embed_bits"]) + table_bits(e, h, f["embed_bits"])
    if shape.tie_word_embeddings and lm_head_storage == "shared":
        if np.any(f["lm_head_bits"] != f["embed_bits"]):
            raise ValueError("lm_head_storage='shared' needs lm_head_bits == embed_bits for a tied model")
        lm_head = np.zeros_like(embed)
    else:
        lm_head = table_bits(V, e, f["lm_head_bits"])
    kinds = shape.params_by_kind()
    norms_bias = (kinds.get("norm", 0) + kinds.get("bias", 0)) * FP16
    aq = f["a_bits"] < 16
    kvq = f["kv_bits"] < 16
    # static activation parameters, fp16 scale + zero: per cluster at R1/R4/R5 and per head cluster at
    # R2 (q, k) / R3 (v, out_proj input) with RPTQ; per activation tensor (7 per layer) otherwise
    per_layer_pairs = np.where(f["clusters"] > 0, 3 * f["clusters"] + 2 * shape.n_heads * f["head_clusters"],
                               np.where(aq, 7.0, 0.0))
    act_params = L * per_layer_pairs * 2 * FP16
    reorder_idx = np.where(f["clusters"] > 0, L * 2 * h * f["index_bits"], 0.0)

    # ---- KV cache -----------------------------------------------------------------------------
    kv_eff = _eff(f["kv_bits"], f["kv_sdr_group"])
    kv_pos = shape.kv_positions(s)
    kv_cache = 2 * L * b * kv_pos * shape.kv_dim * kv_eff
    kv_params = np.where(kvq & (f["head_clusters"] == 0), L * 2 * 2 * FP16, 0.0)
    kv_params = kv_params + np.where(kvq, L * 2 * shape.n_kv_heads * f["head_clusters"] * 2 * FP16, 0.0)

    # ---- dynamic activations (one layer's working set during prefill of b*s tokens) -------------
    a_eff = _eff(f["a_bits"], f["a_sdr_group"])
    ln_eff = _eff(f["ln_bits"], f["a_sdr_group"])
    tokens = b * s
    parts_act = {
        "act_residual": tokens * h * FP16,
        "act_q": tokens * shape.q_dim * a_eff,
        "act_kv_new": tokens * 2 * shape.kv_dim * kv_eff,
        "act_attn_out": tokens * h * FP16,
        "act_ffn": tokens * shape.ffn * a_eff,
        "act_ffn_out": tokens * h * FP16,
    }
    if activations == "all":
        parts_act["act_ln"] = tokens * 2 * h * ln_eff
        parts_act["act_context"] = tokens * shape.q_dim * a_eff
    else:
        parts_act["act_ln"] = np.zeros_like(tokens)
        parts_act["act_context"] = np.zeros_like(tokens)

    bits = {"linear": linear, "w_params": w_params, "embed": embed, "lm_head": lm_head,
            "norms_bias": norms_bias, "act_params": act_params, "reorder_idx": reorder_idx,
            "kv_cache": kv_cache, "kv_params": kv_params, **parts_act}
    out = {k: np.asarray(v, dtype=np.float64) / 8 for k, v in bits.items()}
    full = np.broadcast_shapes(*(v.shape for v in out.values()))
    out = {k: np.broadcast_to(v, full) for k, v in out.items()}
    out["weights"] = sum(out[k] for k in WEIGHT_PARTS)
    out["kv"] = sum(out[k] for k in KV_PARTS)
    out["activations"] = sum(out[k] for k in ACT_PARTS)
    out["total"] = out["weights"] + out["kv"] + out["activations"]
    return out


@dataclass(frozen=True)
class MemoryReport:
    """Memory of one deployment, in bytes (``*_gib``: 2^30 bytes, ``*_gb``: 10^9 bytes)."""

    model: str
    config: str
    batch: int
    seq: int
    weights: float
    kv_cache: float
    activations: float
    total: float
    parts: dict[str, float] = field(default_factory=dict)

    def __getattr__(self, name: str):
        for suffix, unit in (("_gib", GIB), ("_gb", GB)):
            if name.endswith(suffix):
                base = name[: -len(suffix)]
                if base in ("weights", "kv_cache", "activations", "total"):
                    return object.__getattribute__(self, base) / unit
        raise AttributeError(name)

    @property
    def total_gib(self) -> float:
        return self.total / GIB

    @property
    def total_gb(self) -> float:
        return self.total / GB

    def to_dict(self) -> dict:
        d = {"model": self.model, "config": self.config, "batch": self.batch, "seq": self.seq}
        for k in ("weights", "kv_cache", "activations", "total"):
            d[f"{k}_bytes"] = self.__dict__[k]
            d[f"{k}_gib"] = self.__dict__[k] / GIB
            d[f"{k}_gb"] = self.__dict__[k] / GB
        d["parts_bytes"] = dict(self.parts)
        return d


def memory(model, config, *, batch: int, seq: int, activations: str = "linear_outputs",
           lm_head_storage: str = "separate") -> MemoryReport:
    """Memory footprint of ``model`` (a name such as ``"opt-66b"``, a path, a config object or a
    :class:`~hwmodel.shapes.ModelShape`) under ``config`` (a preset name, ``W<w>A<a>[KV<k>]``,
    ``key=value,...`` or a :class:`~hwmodel.quantconfig.QuantConfig`), for ``batch`` sequences of
    ``seq`` tokens. See the module docstring for every term."""
    shape = get_shape(model)
    cfg = parse_config(config)
    for name, v in (("batch", batch), ("seq", seq)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    p = memory_parts(shape, cfg.fields(), batch, seq, activations=activations,
                     lm_head_storage=lm_head_storage)
    parts = {k: float(p[k]) for k in (*WEIGHT_PARTS, *KV_PARTS, *ACT_PARTS)}
    return MemoryReport(model=shape.name, config=cfg.name, batch=int(batch), seq=int(seq),
                        weights=float(p["weights"]), kv_cache=float(p["kv"]),
                        activations=float(p["activations"]), total=float(p["total"]), parts=parts)


def config_for(config) -> QuantConfig:
    return parse_config(config)
