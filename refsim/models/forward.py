"""One forward pass of a pre-norm decoder block over a topology and a scheme.

``forward(topology, block, x, scheme)`` runs the block described by ``topology`` (norms, linears,
attention, MLP; ``refsim.models.topology``) on one sequence x (T, hidden) float32 and returns every
stage by name (``topology.stages``). The *scheme* (``refsim.schemes``) decides, for each tensor
role, whether and how it is quantized: it turns a float tensor at a calibration point, a linear's
weight, or one head's attention operand into an ``Operand`` (a ``QuantizedTensor`` and/or its float
value) and records its code stages. The forward pass itself never depends on the method:

    product(a, w):  both quantized   -> qgemm (exact integer sums; per cluster) + float32 epilogue
                    otherwise        -> float64 matmul of the float32 values, rounded once to float32

Attention is per head: scores_h = causal(q_h k_g^T) (q scaled by head_dim^-0.5 before its
quantization when ``attention.scale_q``), probs = softmax(scores), attn_h = probs_h v_g, where
g = h // (heads / kv_heads) is the KV head serving query head h (grouped-query attention; g = h
when ``attention.kv_heads`` is "heads"). Masked scores are -inf. The MLP is ``relu``
(down(relu(up x))) or ``swiglu`` (down(silu(gate x) * up x)). Residual adds and ReLU are float32.

Rotary position embedding (``attention.rope``; transformers' ``apply_rotary_pos_emb`` with
``rotate_half``), on q and k after their linear (stages ``q_linear``, ``k_linear``) and before q's
scaling, per head of d channels:

    rope(y)[j] = fl32(fl32(y[j] * cos[p, j]) + fl32(rh(y)[j] * sin[p, j]))
    rh(y)[j]   = -y[j + d/2] (j < d/2),  y[j - d/2] (j >= d/2)

with (cos, sin) = ``refsim.floatops.rope_cos_sin(positions, rope_inv_freq(d, rope_theta))``
(correctly rounded). On a reordered layout (R2, ``Reorder.pairs``: a permutation sigma of the d/2
rotary pairs applied to both halves, perm[j] = sigma[j], perm[j + d/2] = sigma[j] + d/2) the pass
reads cos/sin at the permuted columns: rh of the permuted vector is the permuted rh, so the result
is the permuted RoPE bit for bit (``rope`` checks the pair structure and refuses any other perm).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from refsim.fused import fused_qmatmul
from refsim.models.floatops import float_matmul, layer_norm, relu, softmax
from refsim.models.topology import MLPKind, NormKind, Topology
from refsim.qtensor import QuantizedTensor, qmatmul


class Operand(NamedTuple):
    """A GEMM operand: its quantized tensor (None: float) and its float32 value (None: dequantize when needed).
    A weight-side operand is (N, K)."""

    qt: QuantizedTensor | None
    value: np.ndarray | None

    def float_value(self) -> np.ndarray:
        return self.qt.dequantize() if self.value is None else self.value


class Context:
    """What a scheme sees: the topology, the block's arrays, the stages so far, and the spec whose
    accumulator rule (acc_bits, acc_overflow) every integer product follows."""

    def __init__(self, topology: Topology, block, stages: dict, spec, *, record_sums=True):
        self.topology, self.block, self.stages, self.spec = topology, block, stages, spec
        self.record_sums = record_sums  # False: integer sums are used by the epilogue and dropped, never stored
        self.cache: dict = {}


def product(ctx: Context, a: Operand, w: Operand, bias=None, *, acc_name=None, acc_list=None,
            causal_out=False, causal_in=False) -> np.ndarray:
    """a (M, K) x w (N, K)^T (+ bias): exact when both are quantized (module docstring).
    ``causal_out``: the causal mask applied (y[m, n] = -inf for n > m). ``causal_in``: a is a causal matrix
    of probabilities, which lets the fused path stop row m's sum at k = m (``refsim.fused``)."""
    if a.qt is not None and w.qt is not None:
        if not ctx.record_sums:  # no sums wanted: the fused path's y equals qmatmul's, bit for bit
            y = fused_qmatmul(a.qt, w.qt, bias, spec=ctx.spec, causal_out=causal_out, causal_in=causal_in)
            if y is not None:
                return y
        isums, y = qmatmul(a.qt, w.qt, bias, spec=ctx.spec)
        if ctx.record_sums:
            if acc_name is not None:
                ctx.stages[acc_name] = isums
            if acc_list is not None:
                acc_list.append(isums)
    else:
        y = float_matmul(a.float_value(), w.float_value(), bias)
    if causal_out:
        y[np.triu(np.ones(y.shape, dtype=bool), k=1)] = -np.inf
    return y


def norm(topology: Topology, block, name: str, x) -> np.ndarray:
    n = topology.norm(name)
    perm = block[f"{n.reorder}.perm"]
    if topology.norm_kind is NormKind.LAYER_NORM:
        return layer_norm(x, block[f"{n.name}.weight"], block[f"{n.name}.bias"], eps=float(block.meta["eps"]),
                          perm=perm)
    from refsim.floatops import rms_norm

    return rms_norm(x, block[f"{n.name}.weight"], eps=float(block.meta["eps"]), perm=perm)


def _bias(topology, block, lin):
    return topology.bias_of(block, lin)


def linear(ctx: Context, scheme, name: str, x) -> np.ndarray:
    lin = ctx.topology.linear(name)
    a = scheme.activation(ctx, lin.point, x)
    w = scheme.weight(ctx, lin.name)
    return product(ctx, a, w, _bias(ctx.topology, ctx.block, lin.name), acc_name=f"{lin.name}_acc")


def kv_heads(topology: Topology, block) -> int:
    """The number of KV heads (``attention.kv_heads`` names the meta key; "heads": as many as query heads)."""
    key = topology.attention.kv_heads
    n = block.heads if key == "heads" else int(block.meta[key])
    if n < 1 or block.heads % n:
        raise ValueError(f"{key}={n} is not allowed; allowed: a positive divisor of heads={block.heads}")
    return n


def head_dim(block) -> int:
    return int(block.meta.get("head_dim") or block.hidden // block.heads)


def check_rotary_pairs(perm, d: int, name: str = "perm") -> None:
    """Refuse a per-head permutation that does not move rotary pairs (j, j + d/2) together, halves kept."""
    p = np.asarray(perm).reshape(-1, d) - (np.arange(np.asarray(perm).size // d) * d)[:, None]
    h = d // 2
    if not (np.all((p[:, :h] >= 0) & (p[:, :h] < h)) and np.array_equal(p[:, h:], p[:, :h] + h)):
        raise ValueError(f"{name} does not move rotary pairs (j, j + {h}) together within each head of {d}; "
                         "allowed: one permutation of the pairs applied to both halves")


def rope(y, cos, sin, perm=None) -> np.ndarray:
    """Rotary embedding of y (T, heads * d) with (cos, sin) (T, d), every head alike (module docstring);
    ``perm`` (heads * d,): y's layout, each channel inside its head, rotary pairs together."""
    t, width = y.shape
    d = cos.shape[1]
    heads = width // d
    if perm is not None:
        check_rotary_pairs(perm, d)
        col = np.asarray(perm) % d  # cos/sin of the channel's own (logical) position within its head
    else:
        col = np.tile(np.arange(d), heads)
    c, s = cos[:, col], sin[:, col]
    y3 = y.reshape(t, heads, d)
    rh = np.concatenate([-y3[..., d // 2:], y3[..., :d // 2]], axis=-1).reshape(t, width)
    return ((y * c).astype(np.float32) + (rh * s).astype(np.float32)).astype(np.float32)


def rope_tables(block, positions, t):
    """(cos, sin) (T, d) of the block's rotary embedding at ``positions`` (None: 0 .. T-1)."""
    from refsim.floatops import rope_cos_sin, rope_inv_freq

    pos = np.arange(t, dtype=np.int64) if positions is None else np.asarray(positions)
    if pos.shape != (t,):
        raise ValueError(f"positions must have shape ({t},) (one per token), got {pos.shape}")
    return rope_cos_sin(pos, rope_inv_freq(head_dim(block), float(block.meta["rope_theta"])))


def attention(ctx: Context, scheme, q, k, v) -> np.ndarray:
    """Per-head causal attention; the scheme gives each head's operands (q_h (T, d), k_g (T, d), probs_h
    (T, T), v_g^T (d, T)), k and v per KV head g, shared by the group's query heads."""
    t, width = q.shape
    heads = ctx.block.heads
    n_kv = kv_heads(ctx.topology, ctx.block)
    group = heads // n_kv
    d = width // heads
    qs = scheme.heads(ctx, "q", q, heads, side="a")
    ks = scheme.heads(ctx, "k", k, n_kv, side="w")
    vs = scheme.heads(ctx, "v", v, n_kv, side="wT")
    causal = ctx.topology.attention.causal
    scores = np.empty((heads, t, t), dtype=np.float32)
    s_acc, a_acc = [], []
    for h in range(heads):  # masked scores are -inf
        scores[h] = product(ctx, qs[h], ks[h // group], acc_list=s_acc, causal_out=causal)
    probs = softmax(scores)
    ctx.stages["scores"], ctx.stages["probs"] = scores, probs
    ps = scheme.probs(ctx, probs)
    attn = np.empty((t, width), dtype=np.float32)
    for h in range(heads):
        attn[:, h * d:(h + 1) * d] = product(ctx, ps[h], vs[h // group], acc_list=a_acc, causal_in=causal)
    if s_acc:
        ctx.stages["scores_acc"] = np.stack(s_acc)
    if a_acc:
        ctx.stages["attn_acc"] = np.stack(a_acc)
    scheme.finish_attention(ctx)
    return attn


def check_input(block, x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != block.hidden:
        raise ValueError(f"x must be float32 of shape (T, {block.hidden}), got {x.dtype} {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x has NaN or Inf values")
    return x


def forward(topology: Topology, block, x, scheme, *, positions=None, record_sums=True) -> dict:
    """Every stage of the block on x (T, hidden) under ``scheme`` (module docstring); {stage: ndarray}.

    ``positions`` (T,) int: the tokens' positions for the rotary embedding (None: 0 .. T-1; a KV-cache
    caller passes its offset ones); refused for a topology without RoPE when not None.
    Every integer product accumulates under ``scheme.spec`` (acc_bits, acc_overflow). Stages absent
    from the result were not computed under this scheme (e.g. codes of a float stage).
    ``record_sums=False`` leaves out the ``*_acc`` stages: each product's integer sums feed its epilogue
    and are dropped (a whole-model run holds one product's sums at a time); every other stage is the same."""
    x = check_input(block, x)
    if positions is not None and not topology.attention.rope:
        raise ValueError(f"positions is not allowed for {topology.name} (no rotary embedding); allowed: None")
    window = block.meta.get("sliding_window")
    if window is not None and x.shape[0] > int(window):
        raise ValueError(f"T={x.shape[0]} is longer than the sliding window {window}; allowed: T <= {window}")
    st = {"x": x}
    ctx = Context(topology, block, st, scheme.spec, record_sums=record_sums)
    a, m = topology.attention, topology.mlp
    n1, n2 = topology.norms
    st[n1.name] = norm(topology, block, n1.name, x)
    qkv = {}
    tables = rope_tables(block, positions, x.shape[0]) if a.rope else None
    for role in (a.q, a.k, a.v):
        lin = topology.linear(role)
        y = linear(ctx, scheme, role, st[n1.name])
        if tables is not None and role != a.v:
            st[f"{lin.stage}_linear"] = y
            y = rope(y, *tables, perm=block[f"{lin.out_reorder}.perm"])
        if role == a.q and a.scale_q:
            y = (y * np.float32(head_dim(block) ** -0.5)).astype(np.float32)
        st[lin.stage] = qkv[role] = y
    st["attn"] = attention(ctx, scheme, qkv[a.q], qkv[a.k], qkv[a.v])
    out = topology.linear(a.out)
    st[out.stage] = linear(ctx, scheme, a.out, st["attn"])
    st["h1"] = (x + st[out.stage]).astype(np.float32)
    st[n2.name] = norm(topology, block, n2.name, st["h1"])
    up = topology.linear(m.up)
    st[up.stage] = linear(ctx, scheme, m.up, st[n2.name])
    if m.kind is MLPKind.RELU:
        st[m.act_stage] = relu(st[up.stage])
    else:
        from refsim.floatops import silu

        gate = topology.linear(m.gate)
        st[gate.stage] = linear(ctx, scheme, m.gate, st[n2.name])
        st[m.act_stage] = (silu(st[gate.stage]) * st[up.stage]).astype(np.float32)
    down = topology.linear(m.down)
    st[down.stage] = linear(ctx, scheme, m.down, st[m.act_stage])
    st["out"] = (st["h1"] + st[down.stage]).astype(np.float32)
    return st
