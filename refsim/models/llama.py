"""The LLaMA family's decoder block (LLaMA 2/3, Mistral, SmolLM, Qwen2-style), as RPTQ reorders it.

The single place the LLaMA block's structure is written (transformers' ``LlamaDecoderLayer``; the
reorders follow RPTQ's Figure 3, extended to RoPE and grouped-query attention, docs/rptq.md):

    rms1   = RMSNorm(x)                          R1   (fused: gain permuted)
    q      = rope(rms1 @ Wq^T [+ bq]) * d^-0.5   R1 in, R2q out  (R2 of the head's KV group)
    k      = rope(rms1 @ Wk^T [+ bk])            R1 in, R2 out   (per KV head; rotary pairs together)
    v      =      rms1 @ Wv^T [+ bv]             R1 in, R3 out   (per KV head)
    attn_h = softmax(causal(q_h k_g^T)) v_g      g = h // (heads / kv_heads);  attn in R3o order
    h1     = x + attn @ Wo^T                     R3o in (R3 of each head's group), not reordered out
    rms2   = RMSNorm(h1)                         R4
    gate, up = rms2 @ W^T                        R4 in, R5 out (one permutation for both)
    swiglu = silu(gate) * up;  out = h1 + swiglu @ Wdown^T     R5 in

R2q and R3o are R2 and R3 repeated for every query head of a KV group (``Reorder.group_of``):
recorded like every reorder, derived, never clustered on their own. Biases are optional (Qwen2:
q/k/v; LLaMA's ``attention_bias`` / ``mlp_bias``): a linear has one when the layer holds it.

Calibration points and bits (RPTQ's public code, as for OPT): rms1 / rms2 at max(8, abits), q,
attn (o_proj input) and down_in at abits, k and v at kvbits.

The family interface (docs/architecture.md; torch / transformers are imported by the caller only):
``TOPOLOGY``, ``MODEL_TYPES``, ``block_meta(hf_config)``, ``layer_arrays(hf_layer)``,
``model_arrays(hf_model)``.
"""

from __future__ import annotations

import numpy as np

from refsim.models.topology import MLP, Attention, Linear, MLPKind, Norm, NormKind, Point, Reorder, Topology

TOPOLOGY = Topology(
    name="llama",
    norm_kind=NormKind.RMS_NORM,
    norms=(Norm("rms1", "x", "R1"), Norm("rms2", "h1", "R4")),
    linears=(
        Linear("q", "q", "R1", "R2q", "rms1", "qkv", out_dim="q"),
        Linear("k", "k", "R1", "R2", "rms1", "qkv", out_dim="kv"),
        Linear("v", "v", "R1", "R3", "rms1", "qkv", out_dim="kv"),
        Linear("o", "o_proj", "R3o", None, "attn", "o", in_dim="q"),
        Linear("gate", "gate", "R4", "R5", "rms2", "mlp", out_dim="ffn"),
        Linear("up", "up", "R4", "R5", "rms2", "mlp", out_dim="ffn"),
        Linear("down", "down", "R5", None, "down_in", "down", in_dim="ffn"),
    ),
    points=(
        Point("rms1", "rms1", "R1", "norm"),
        Point("q", "q", "R2q", "act", dim="q"),
        Point("k", "k", "R2", "kv", dim="kv"),
        Point("v", "v", "R3", "kv", dim="kv"),
        Point("attn", "attn", "R3o", "act", dim="q"),
        Point("rms2", "rms2", "R4", "norm"),
        Point("down_in", "swiglu", "R5", "act", dim="ffn"),
    ),
    reorders=(
        Reorder("R1"),
        Reorder("R2", dim="kv", per_head=True, pairs=True),
        Reorder("R2q", dim="q", per_head=True, pairs=True, group_of="R2"),
        Reorder("R3", dim="kv", per_head=True, features=("attn",)),
        Reorder("R3o", dim="q", per_head=True, group_of="R3"),
        Reorder("R4"),
        Reorder("R5", dim="ffn"),
    ),
    attention=Attention(out="o", kv_heads="kv_heads", rope=True),
    mlp=MLP(MLPKind.SWIGLU, up="up", down="down", act_stage="swiglu", gate="gate"),
    norm_bias=False,
    linear_bias=None,
)

MODEL_TYPES = ("llama", "mistral", "qwen2")  # SmolLM / SmolLM2 are model_type "llama"

# transformers' module names of one decoder layer, keyed by the topology's array names
_NORMS = {"rms1": "input_layernorm", "rms2": "post_attention_layernorm"}
_LINEARS = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
            "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


def _get(cfg, name, default=None):
    v = getattr(cfg, name, default)
    return default if v is None else v


def block_meta(hf_config) -> dict:
    """The block's meta from a transformers config: hidden, heads, kv_heads, head_dim, ffn, eps, rope_theta.

    Only the default rotary embedding is taken (``rope_type`` "default", attention scaling 1); a scaled
    rope (LLaMA 3.1's "llama3", YaRN, ...) or a head layout that does not divide is refused with a
    one-line error. ``sliding_window`` (Mistral) is recorded: the forward pass refuses a sequence
    longer than it (full causal attention is the same below the window)."""
    mt = _get(hf_config, "model_type")
    if mt not in MODEL_TYPES:
        raise ValueError(f"model_type={mt!r} is not allowed; allowed: {', '.join(MODEL_TYPES)}")
    hidden = int(hf_config.hidden_size)
    heads = int(hf_config.num_attention_heads)
    kv_heads = int(_get(hf_config, "num_key_value_heads", heads))
    head_dim = int(_get(hf_config, "head_dim", hidden // heads))
    if heads % kv_heads or head_dim % 2:
        raise ValueError(f"num_attention_heads={heads}, num_key_value_heads={kv_heads}, head_dim={head_dim} is "
                         "not allowed; allowed: kv heads dividing the heads, an even head_dim")
    rope = dict(_get(hf_config, "rope_parameters", None) or {})
    scaling = _get(hf_config, "rope_scaling", None)
    if scaling:
        rope = {**rope, **scaling}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"rope_type={rope_type!r} is not allowed; allowed: 'default' (no rope scaling)")
    theta = rope.get("rope_theta", _get(hf_config, "rope_theta", 10000.0))
    window = _get(hf_config, "sliding_window", None)
    if mt == "qwen2" and not _get(hf_config, "use_sliding_window", False):
        window = None  # Qwen2 records a window it does not use
    return {"hidden": hidden, "heads": heads, "kv_heads": kv_heads, "head_dim": head_dim,
            "ffn": int(hf_config.intermediate_size), "eps": float(hf_config.rms_norm_eps),
            "rope_theta": float(theta), "sliding_window": None if window is None else int(window),
            "tie_word_embeddings": bool(_get(hf_config, "tie_word_embeddings", False)),
            "vocab": int(hf_config.vocab_size)}


def _numpy(t) -> np.ndarray:
    return t.detach().to("cpu").float().numpy().astype(np.float32, copy=True)


def _module(root, dotted):
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


def layer_arrays(hf_layer) -> dict:
    """Float32 numpy arrays of one transformers decoder layer, keyed by the topology's array names
    ({rms1, rms2}.weight, {q, k, v, o, gate, up, down}.weight (out, in), and .bias where the layer has one)."""
    out = {f"{n}.weight": _numpy(_module(hf_layer, m).weight) for n, m in _NORMS.items()}
    for n, m in _LINEARS.items():
        mod = _module(hf_layer, m)
        out[f"{n}.weight"] = _numpy(mod.weight)
        if getattr(mod, "bias", None) is not None:
            out[f"{n}.bias"] = _numpy(mod.bias)
    return out


def model_arrays(hf_model) -> dict:
    """The arrays outside the layers: embed.weight (vocab, hidden), norm.weight (the final RMSNorm's gain),
    lm_head.weight (vocab, hidden). With tied embeddings lm_head.weight is the embedding array itself."""
    base = getattr(hf_model, "model", hf_model)
    embed = _numpy(base.embed_tokens.weight)
    head = getattr(hf_model, "lm_head", None)
    tied = head is None or head.weight.data_ptr() == base.embed_tokens.weight.data_ptr()
    return {"embed.weight": embed, "norm.weight": _numpy(base.norm.weight),
            "lm_head.weight": embed if tied else _numpy(head.weight)}


def decoder_layers(hf_model):
    """The decoder layers of a transformers LLaMA-family model (a ``*ForCausalLM`` or its base model)."""
    return list(getattr(hf_model, "model", hf_model).layers)
