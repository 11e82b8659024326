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
