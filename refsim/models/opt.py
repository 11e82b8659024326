"""OPT's decoder block (pre-LayerNorm OPT-125m ... 175B; not the post-LN 350m), as RPTQ reorders it.

The single place the OPT block's structure is written (RPTQ, arXiv 2304.01089, Figure 3):

    ln1    = LayerNorm(x)                 R1   (fused: gamma1 / beta1 permuted)
    q, k   = ln1 @ W^T + b                R1 in, R2 out (within each head, shared by q and k)
    v      = ln1 @ Wv^T + bv              R1 in, R3 out
    attn   = softmax(causal(q k^T)) v     per head, R3 order;  q scaled by head_dim^-0.5
    h1     = x + attn @ Wo^T + bo         R3 in, not reordered out (the residual stream)
    ln2    = LayerNorm(h1)                R4
    fc1    = ln2 @ W1^T + b1              R4 in, R5 out;  relu = max(fc1, 0)
    out    = h1 + relu @ W2^T + b2        R5 in

Calibration points and bits (RPTQ's public code): ln1 / ln2 at max(8, abits), q, attn (out_proj
input) and fc2_in at abits, k and v at kvbits.
"""

from refsim.models.topology import MLP, Attention, Linear, MLPKind, Norm, NormKind, Point, Reorder, Topology

OPT = Topology(
    name="opt",
    norm_kind=NormKind.LAYER_NORM,
    norms=(Norm("ln1", "x", "R1"), Norm("ln2", "h1", "R4")),
    linears=(
        Linear("q", "q", "R1", "R2", "ln1", "qkv"),
        Linear("k", "k", "R1", "R2", "ln1", "qkv"),
        Linear("v", "v", "R1", "R3", "ln1", "qkv"),
        Linear("out", "out_proj", "R3", None, "attn", "out"),
        Linear("fc1", "fc1", "R4", "R5", "ln2", "fc1", out_dim="ffn"),
        Linear("fc2", "fc2", "R5", None, "fc2_in", "fc2", in_dim="ffn"),
    ),
    points=(
        Point("ln1", "ln1", "R1", "norm"),
        Point("q", "q", "R2", "act"),
        Point("k", "k", "R2", "kv"),
        Point("v", "v", "R3", "kv"),
        Point("attn", "attn", "R3", "act"),
        Point("ln2", "ln2", "R4", "norm"),
        Point("fc2_in", "relu", "R5", "act", dim="ffn"),
    ),
    reorders=(Reorder("R1"), Reorder("R2", per_head=True), Reorder("R3", per_head=True, features=("attn",)),
              Reorder("R4"), Reorder("R5", dim="ffn")),
    attention=Attention(),
    mlp=MLP(MLPKind.RELU, up="fc1", down="fc2", act_stage="relu"),
)

# --- the family interface (refsim.models.family_of; refsim.models.model) -------------------------------
# What the whole model needs besides the block: OPT embeds positions with a learned table offset by
# two rows (transformers' OPTLearnedPositionalEmbedding: position p reads row p + 2), may project the
# word embedding in and out (word_embed_proj_dim != hidden_size, OPT-350m), and ends with a LayerNorm.

TOPOLOGY = OPT
MODEL_TYPES = ("opt",)
POS_OFFSET = 2


def decoder_layers(hf_model):
    return hf_model.model.decoder.layers


def block_meta(hf_config) -> dict:
    """The block meta the forward pass reads: hidden, heads, ffn, eps (OPT's LayerNorms use 1e-5)."""
    return {"hidden": int(hf_config.hidden_size), "heads": int(hf_config.num_attention_heads),
            "ffn": int(hf_config.ffn_dim), "eps": 1e-5}


def _np(t):
    return t.detach().float().numpy().copy()


def layer_arrays(hf_layer) -> dict:
    """One OPTDecoderLayer's float32 arrays keyed by the topology's names (original channel order)."""
    a = hf_layer.self_attn
    mods = {"ln1": hf_layer.self_attn_layer_norm, "ln2": hf_layer.final_layer_norm, "q": a.q_proj, "k": a.k_proj,
            "v": a.v_proj, "out": a.out_proj, "fc1": hf_layer.fc1, "fc2": hf_layer.fc2}
    return {f"{n}.{p}": _np(getattr(m, p)) for n, m in mods.items() for p in ("weight", "bias")}


def model_arrays(hf_model) -> dict:
    """embed.weight (V, E), pos_embed.weight (P + 2, H), project_in.weight (H, E) / project_out.weight (E, H) when
    present, norm.weight / .bias (the final LayerNorm), lm_head.weight (V, E; the embedding array itself when
    the weights are tied)."""
    dec = hf_model.model.decoder
    if dec.final_layer_norm is None:
        raise ValueError("OPT without a final LayerNorm (post-LayerNorm OPT-350m) is not supported")
    out = {"embed.weight": _np(dec.embed_tokens.weight), "pos_embed.weight": _np(dec.embed_positions.weight),
           "norm.weight": _np(dec.final_layer_norm.weight), "norm.bias": _np(dec.final_layer_norm.bias)}
    for name in ("project_in", "project_out"):
        mod = getattr(dec, name, None)
        if mod is not None:
            out[f"{name}.weight"] = _np(mod.weight)
    tied = hf_model.lm_head.weight.data_ptr() == dec.embed_tokens.weight.data_ptr()
    out["lm_head.weight"] = out["embed.weight"] if tied else _np(hf_model.lm_head.weight)
    return out
