"""A decoder block described as data: the single description every user of a model family derives from.

A ``Topology`` names, for one pre-norm decoder block:

    norms        each norm (its kind, the stage it reads, the reorder it writes its output in)
    linears      each linear layer: the reorder of its input and of its output channels, the
                 calibration point that feeds it, its GPTQ Hessian group, its width (hidden / ffn)
    points       each calibration point: the float stage it measures, its reorder (whose
                 clusters parameterize it) and its bit rule (``norm``: max(8, abits), RPTQ's
                 LayerNorm outputs; ``act``: abits; ``kv``: kvbits)
    reorders     each recorded permutation, its width, whether it is per head, whether it moves rotary
                 pairs together, and whether it is another reorder expanded to every query head of a
                 KV group (GQA)
    attention    causal, the scaling head_dim^-0.5 on q, heads / KV heads, rotary embedding on q and k
    mlp          its kind: ``relu`` (fc1 -> ReLU -> fc2, OPT) or ``swiglu`` (silu(gate) * up -> down)

From it derive the block's forward pass (``refsim.models.forward``), the calibration hooks'
points, the reorders each linear receives, the GPTQ groups, the block's stage names and array
keys (the golden block preset) and the per-point bits (reports, cost model).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class NormKind(enum.Enum):
    LAYER_NORM = "layer_norm"
    RMS_NORM = "rms_norm"


class MLPKind(enum.Enum):
    RELU = "relu"        # down(relu(up(x)))                 OPT fc1 / fc2
    SWIGLU = "swiglu"    # down(silu(gate(x)) * up(x))        LLaMA gate / up / down


BIT_RULES = ("norm", "act", "kv")


@dataclass(frozen=True)
class Norm:
    name: str          # stage name and array prefix ({name}.weight, {name}.bias)
    source: str        # the stage it normalizes
    reorder: str       # its output is written in this reorder (gain / bias permuted)


@dataclass(frozen=True)
class Linear:
    name: str          # array prefix ({name}.weight (out, in), .bias, .codes, .scale, .zero)
    # dims: "hidden", "ffn", "q" (heads * head_dim) and "kv" (kv_heads * head_dim); q and kv default to hidden
    stage: str         # the stage of its output
    in_reorder: str
    out_reorder: str | None
    point: str         # the calibration point that quantizes its input
    hessian: str       # GPTQ Hessian group (linears reading the same input share one)
    in_dim: str = "hidden"
    out_dim: str = "hidden"


@dataclass(frozen=True)
class Point:
    name: str
    stage: str         # the float stage it measures
    reorder: str
    bits: str          # one of BIT_RULES
    dim: str = "hidden"


@dataclass(frozen=True)
class Reorder:
    name: str
    dim: str = "hidden"
    per_head: bool = False
    pairs: bool = False          # rotary pairs (i, i + d/2) of each head move together (R2 under RoPE)
    group_of: str | None = None  # this reorder is ``group_of`` (per KV head) repeated for every query head
                                 # of its group: derived, recorded so that every array has its own reorder
    features: tuple = ()         # the calibration points whose statistics cluster it (default: those it serves)


@dataclass(frozen=True)
class Attention:
    q: str = "q"
    k: str = "k"
    v: str = "v"
    out: str = "out"
    causal: bool = True
    scale_q: bool = True   # q = (x Wq^T + bq) * head_dim^-0.5 before quantization (OPT, transformers)
    kv_heads: str = "heads"   # the meta key of the KV head count ("heads": one KV head per query head)
    rope: bool = False        # rotary position embedding on q and k (transformers' rotate_half convention)


@dataclass(frozen=True)
class MLP:
    kind: MLPKind
    up: str             # relu: fc1; swiglu: up
    down: str           # fc2 / down
    act_stage: str      # the stage of the activation output (relu)
    gate: str | None = None


@dataclass(frozen=True)
class Topology:
    name: str
    norm_kind: NormKind
    norms: tuple[Norm, ...]
    linears: tuple[Linear, ...]
    points: tuple[Point, ...]
    reorders: tuple[Reorder, ...]
    attention: Attention
    mlp: MLP
    norm_bias: bool = True
    linear_bias: bool | None = True   # None: optional, a linear has a bias when the layer holds {name}.bias
    prob_bits: int = 8

    # --- look-ups ---------------------------------------------------------------------------
    def linear(self, name) -> Linear:
        for lin in self.linears:
            if lin.name == name:
                return lin
        raise KeyError(f"{self.name} has no linear {name!r}; it has {[x.name for x in self.linears]}")

    def point(self, name) -> Point:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(f"{self.name} has no calibration point {name!r}; it has {[x.name for x in self.points]}")

    def norm(self, name) -> Norm:
        for n in self.norms:
            if n.name == name:
                return n
        raise KeyError(f"{self.name} has no norm {name!r}")

    def bias_of(self, layer, lin: str):
        """The bias of linear ``lin`` in ``layer`` (a dict or a block), or None when it has none."""
        if self.linear_bias is False:
            return None
        try:
            return layer[f"{lin}.bias"]
        except KeyError:
            if self.linear_bias is None:
                return None
            raise

    @property
    def linear_names(self) -> tuple[str, ...]:
        return tuple(x.name for x in self.linears)

    @property
    def reorder_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.reorders)

    @property
    def linear_in(self) -> dict:
        return {x.name: x.in_reorder for x in self.linears}

    @property
    def linear_out(self) -> dict:
        return {x.name: x.out_reorder for x in self.linears}

    @property
    def point_reorders(self) -> dict:
        """{point: the reorder whose clusters parameterize it}."""
        return {p.name: p.reorder for p in self.points}

    @property
    def calibration_stages(self) -> tuple:
        """((point, float stage it measures), ...) in dataflow order."""
        return tuple((p.name, p.stage) for p in self.points)

    @property
    def hessian_of(self) -> dict:
        return {x.name: x.hessian for x in self.linears}

    @property
    def norm_reorders(self) -> tuple:
        return tuple((n.name, n.reorder) for n in self.norms)

    def reorder(self, name) -> Reorder:
        for r in self.reorders:
            if r.name == name:
                return r
        raise KeyError(f"{self.name} has no reorder {name!r}; it has {list(self.reorder_names)}")

    def dims(self, hidden: int, ffn: int, *, q: int | None = None, kv: int | None = None) -> dict:
        """{dim name: width}: q (heads * head_dim) and kv (kv_heads * head_dim) default to hidden."""
        return {"hidden": hidden, "ffn": ffn, "q": hidden if q is None else q, "kv": hidden if kv is None else kv}

    def dims_of(self, layer) -> dict:
        """{dim name: width} read off a layer's (or block's) linear weights (out, in)."""
        out = {}
        for lin in self.linears:
            o, i = layer[f"{lin.name}.weight"].shape
            for dim, n in ((lin.out_dim, o), (lin.in_dim, i)):
                if out.setdefault(dim, n) != n:
                    raise ValueError(f"{lin.name}.weight has {dim} width {n}, another linear has {out[dim]}")
        return self.dims(out["hidden"], out["ffn"], q=out.get("q"), kv=out.get("kv"))

    def reorder_sizes(self, hidden: int, ffn: int, **qkv) -> dict:
        d = self.dims(hidden, ffn, **qkv)
        return {r.name: d[r.dim] for r in self.reorders}

    def point_sizes(self, hidden: int, ffn: int, **qkv) -> dict:
        d = self.dims(hidden, ffn, **qkv)
        return {p.name: d[p.dim] for p in self.points}

    def linear_shapes(self, hidden: int, ffn: int, **qkv) -> dict:
        """{linear: (out, in)} (torch nn.Linear orientation)."""
        d = self.dims(hidden, ffn, **qkv)
        return {x.name: (d[x.out_dim], d[x.in_dim]) for x in self.linears}

    # --- bits ---------------------------------------------------------------------------------
    def point_bits(self, point, abits, kvbits):
        """Bits of a calibration point under (abits, kvbits), None = float: the point's bit rule."""
        rule = self.point(point).bits
        if rule == "kv":
            return kvbits
        if rule == "norm":
            return None if abits is None else max(8, abits)
        return abits

    def code_bits(self, abits, kvbits) -> dict:
        """{"{point}_codes": bits} of every quantized stage, plus the softmax probabilities' codes."""
        out = {f"{p.name}_codes": self.point_bits(p.name, abits, kvbits) for p in self.points
               if self.point_bits(p.name, abits, kvbits) is not None}
        if abits is not None:
            out["probs_codes"] = self.prob_bits
        return out

    # --- arrays ---------------------------------------------------------------------------------
    def array_keys(self, *, quantized_weights=True) -> list:
        """The arrays a quantized block of this topology holds (``QuantizedOPTBlock.arrays``)."""
        keys = []
        for n in self.norms:
            keys += [f"{n.name}.weight"] + ([f"{n.name}.bias"] if self.norm_bias else [])
        for lin in self.linears:  # an optional bias (linear_bias None) is not a required key
            keys += [f"{lin.name}.weight"] + ([f"{lin.name}.bias"] if self.linear_bias is True else [])
            if quantized_weights:
                keys += [f"{lin.name}.{p}" for p in ("codes", "scale", "zero")]
        for r in self.reorders:
            keys += [f"{r.name}.{p}" for p in ("perm", "ids", "sizes")]
        for p in self.points:
            keys += [f"stat.{p.name}.min", f"stat.{p.name}.max"]
        return keys

    def layer_keys(self) -> tuple:
        """The float arrays of one un-quantized layer (norm gains/biases, linear weights/biases)."""
        return tuple(k for k in self.array_keys(quantized_weights=False)
                     if not k.startswith("stat.") and k.split(".")[0] not in self.reorder_names)

    # --- the stages of the forward pass --------------------------------------------------------
    @property
    def stages(self) -> tuple:
        """Stage names in dataflow order (docs/rptq.md)."""
        a, m = self.attention, self.mlp
        n1, n2 = self.norms
        q, k, v = (self.linear(x) for x in (a.q, a.k, a.v))
        out = self.linear(a.out)
        st = ["x", n1.name, f"{self.point_of_stage(n1.name)}_codes"]
        for lin in (q, k, v):
            if a.rope and lin is not v:  # the linear's float32 output before the rotary embedding
                st.append(f"{lin.stage}_linear")
            st += [lin.stage, f"{self.point_of_stage(lin.stage)}_codes"]
        st += [f"{q.name}_acc", f"{k.name}_acc", f"{v.name}_acc", "scores_acc", "scores", "probs", "probs_codes",
               "attn_acc", "attn", f"{out.point}_codes", f"{out.name}_acc", out.stage, "h1", n2.name,
               f"{self.point_of_stage(n2.name)}_codes"]
        mlp_in = [self.linear(m.gate)] if m.gate else []
        mlp_in.append(self.linear(m.up))
        for lin in mlp_in:
            st += [f"{lin.name}_acc", lin.stage]
        down = self.linear(m.down)
        st += [m.act_stage, f"{down.point}_codes", f"{down.name}_acc", down.stage, "out"]
        return tuple(st)

    def point_of_stage(self, stage) -> str:
        for p in self.points:
            if p.stage == stage:
                return p.name
        raise KeyError(f"no calibration point measures stage {stage!r}")
