"""Quantization configurations: which tensor is stored with how many bits, and what metadata it carries.

A :class:`QuantConfig` names the bit width of every tensor class and the metadata that makes the
*effective* bits per element larger than the code width:

* weights: one (scale, zero point) pair per output row, per row and input cluster (RPTQ's code), or per
  group of ``w_group`` input elements (GPTQ ``groupsize``); SDR flags (4 bits per group, QRazor);
* activations and KV cache: SDR flags per group (QRazor); static per-tensor / per-cluster parameters;
* RPTQ reorder indices for the LayerNorm outputs that are written in permuted order.

Named presets (:data:`PRESETS`):

* RPTQ Table 3 (Yuan et al., arXiv 2304.01089): ``W16A16 W4A16 W4A8 W4A4 W4A4KV W4A3KV W3A3KV``,
  and ``W3A3`` (every GEMM operand at 3 bits: the configuration an int3 tensor core runs, not in the
  paper's tables), counted as RPTQ's W4A4 is (``rptq(3, 3)``: reorder clusters, embeddings at 3 bits),
  the same scheme as ``refsim eval``'s W3A3 (refsim.schemes.CONFIGS), so its measured perplexity joins
  the cost of what it measured.
  ``WxAyKV`` means only the K/V cache is quantized to y bits (the public code's ``--only_quant_kv``);
  every other activation stays fp16.
* QRazor (arXiv 2501.13331): ``qrazor-W4A4`` (weights razored from int8 and activations from int16
  to 4-bit sign-magnitude codes plus a 4-bit flag per group of 16; KV cache int8) and
  ``qrazor-W4A4KV4`` (the KV cache razored from int8 too).
* GPTQ (Frantar et al., arXiv 2210.17323): ``gptq-W3``, ``gptq-W4`` (weight-only, one fp16 scale
  and zero per output row, embeddings and output layer fp16), ``gptq-W4-g128`` (groups of 128).

and any string ``W<w>A<a>[KV<k>]`` (uniform quantization, per-row weight parameters, embeddings and
output layer fp16), a ``key=value,...`` string (see :func:`parse_config`) or keyword arguments of
:func:`custom` for explicit per-tensor bits. A trailing ``-g<N>`` sets the group size of the weights
(or the SDR group of a QRazor preset), ``-c<N>`` the RPTQ cluster count.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

#: Fields that are numbers (vectorizable). ``name`` and ``method`` are labels.
NUMERIC_FIELDS = (
    "w_bits", "embed_bits", "lm_head_bits", "a_bits", "ln_bits", "kv_bits",
    "w_group", "w_clusters", "w_scale_bits", "w_zero_bits", "w_sdr_group",
    "a_sdr_group", "kv_sdr_group", "clusters", "head_clusters", "index_bits", "embed_group",
)

SDR_FLAG_BITS = 4  # QRazor: the razoring shift of a group is stored in a 4-bit flag (DESIGN.md, SDR step 4)
FP16 = 16


@dataclass(frozen=True)
class QuantConfig:
    """Bits of every tensor class of an inference deployment.

    w_bits: decoder-layer GEMM weights (code width). embed_bits: token and positional embedding
    tables (and OPT-350m's project_in/out). lm_head_bits: the output layer. a_bits: activations that
    are GEMM or attention inputs other than LayerNorm outputs (q, attention context, FFN intermediate).
    ln_bits: LayerNorm outputs (RPTQ keeps them at max(8, a_bits)). kv_bits: K/V cache codes.
    Residual stream, LayerNorm gains and biases are always fp16. 16 means "not quantized, fp16".

    w_group: input elements per weight (scale, zero) pair; 0 = one pair per output row.
    w_clusters: if > 0, one pair per output row and input cluster (RPTQ code); overrides w_group.
    w_scale_bits, w_zero_bits: width of the stored scale and zero point (0 = symmetric, no zero).
    w_sdr_group, a_sdr_group, kv_sdr_group: SDR group size (0 = no SDR); adds 4 flag bits per group.
    clusters: RPTQ activation clusters of the hidden-size reorder points (R1, R4, R5);
    head_clusters: clusters of R2/R3 (per head). index_bits: width of a stored reorder index.
    embed_group: per-row (0) or grouped parameters of a quantized embedding table.
    """

    name: str
    method: str = "uniform"
    w_bits: float = 16
    embed_bits: float = 16
    lm_head_bits: float = 16
    a_bits: float = 16
    ln_bits: float = 16
    kv_bits: float = 16
    w_group: int = 0
    w_clusters: int = 0
    w_scale_bits: float = 16
    w_zero_bits: float = 16
    w_sdr_group: int = 0
    a_sdr_group: int = 0
    kv_sdr_group: int = 0
    clusters: int = 0
    head_clusters: int = 0
    index_bits: float = 32
    embed_group: int = 0

    def __post_init__(self):
        for f in ("w_bits", "embed_bits", "lm_head_bits", "a_bits", "ln_bits", "kv_bits"):
            v = getattr(self, f)
            if not np.isfinite(v) or v <= 0 or v > 32:
                raise ValueError(f"config {self.name!r}: {f} must be in 1..32 bits, got {v!r}")
        for f in ("w_group", "w_clusters", "w_sdr_group", "a_sdr_group", "kv_sdr_group", "clusters",
                  "head_clusters", "embed_group"):
            v = getattr(self, f)
            if int(v) != v or v < 0:
                raise ValueError(f"config {self.name!r}: {f} must be a non-negative integer, got {v!r}")

    # ---- effective bits per element (code + per-element share of flags) --------------------------
    @property
    def a_eff_bits(self) -> float:
        """Activation bits per element including SDR flags: a + 4/g."""
        return self.a_bits + (SDR_FLAG_BITS / self.a_sdr_group if self.a_sdr_group else 0.0)

    @property
    def kv_eff_bits(self) -> float:
        """KV-cache bits per element including SDR flags: kv + 4/g."""
        return self.kv_bits + (SDR_FLAG_BITS / self.kv_sdr_group if self.kv_sdr_group else 0.0)

    def fields(self) -> dict[str, float]:
        """The numeric fields as a dict (the form the vectorized model consumes)."""
        return {k: float(getattr(self, k)) for k in NUMERIC_FIELDS}

    def label(self) -> str:
        return self.name

    def describe(self) -> str:
        """What is quantized at which bits, in words (``refsim cost --list``)."""
        def bits(v, sdr=0, base=None):
            if v >= 16:
                return "fp16"
            t = f"{v:g}-bit"
            if sdr:
                t += f" SDR (razored from int{base}, 4-bit flag per {sdr})"
            return t

        if self.w_bits >= 16:
            w = "fp16"
        else:
            if self.w_clusters:
                par = f"scale+zero per row and input cluster ({self.w_clusters})"
            elif self.w_group:
                par = f"scale+zero per {self.w_group} inputs"
            else:
                par = "scale+zero per row" if self.w_zero_bits else "scale per row"
            w = f"{bits(self.w_bits, self.w_sdr_group, 8)}, {par}"
        parts = [f"weights {w}"]
        if self.embed_bits == self.lm_head_bits:
            parts.append(f"embeddings and output layer {bits(self.embed_bits)}")
        else:
            parts.append(f"embeddings {bits(self.embed_bits)}, output layer {bits(self.lm_head_bits)}")
        act = f"activations {bits(self.a_bits, self.a_sdr_group, 16)}"
        if self.a_bits < 16 and self.ln_bits != self.a_bits:
            act += f" (LayerNorm outputs {bits(self.ln_bits)})"
        if self.clusters:
            act += f", {self.clusters} reorder clusters"
        parts.append(act)
        parts.append(f"KV cache {bits(self.kv_bits, self.kv_sdr_group, 8)}")
        return f"{self.name} [{self.method}]: " + "; ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)


def stack(configs) -> dict[str, np.ndarray]:
    """Stack configurations into one array per numeric field (for the vectorized model)."""
    configs = list(configs)
    return {k: np.array([getattr(c, k) for c in configs], dtype=np.float64) for k in NUMERIC_FIELDS}


# ---- presets --------------------------------------------------------------------------------------
def norm_output_bits(a):
    """Bits of a LayerNorm output when activations are at ``a`` bits: the OPT topology's bit rule for its
    norm points (``refsim.models.opt``: max(8, a), RPTQ's public code), so the cost model and the
    reference count the same widths."""
    from refsim.models.opt import OPT

    return OPT.point_bits("ln1", a, None)


def rptq(w: float, a: float, kv: float | None = None, *, only_kv: bool = False, clusters: int = 32,
         head_clusters: int = 4, weights_per_cluster: bool = False, name: str | None = None) -> QuantConfig:
    """RPTQ configuration as Table 3 of arXiv 2304.01089 counts it.

    Every weight tensor is stored at ``w`` bits, the embedding tables and the output layer included
    (Table 3's W4A16 column is exactly a quarter of W16A16's weights), with one fp16 scale and one
    fp16 zero point per output row (per embedding row). Activations: q, attention context and FFN
    intermediate at ``a`` bits, LayerNorm outputs at max(8, a), K/V at ``a`` bits (``kv`` overrides).
    ``only_kv``: only the K/V cache is quantized (``W4A4KV``); all other activations stay fp16.
    ``weights_per_cluster``: one weight (scale, zero) pair per output row *and input cluster*, as the
    public code's ``set_ic_cluster_counts`` does (Table 3 does not count these; see docs/costmodel.md).
    """
    kv = a if kv is None else kv
    act = FP16 if only_kv or a >= 16 else a
    ln = FP16 if act >= 16 else norm_output_bits(act)
    quant_act = act < 16
    label = name or (f"W{w:g}A{a:g}KV" if only_kv else f"W{w:g}A{a:g}")
    return QuantConfig(
        name=label, method="rptq" if (w < 16 or a < 16) else "none", w_bits=w, embed_bits=w, lm_head_bits=w,
        a_bits=act, ln_bits=ln, kv_bits=kv, w_scale_bits=FP16 if w < 16 else 0,
        w_zero_bits=FP16 if w < 16 else 0, w_clusters=clusters if (weights_per_cluster and quant_act) else 0,
        clusters=clusters if quant_act else 0, head_clusters=head_clusters if (quant_act or kv < 16) else 0)


def qrazor(kv4: bool = False, *, group: int = 16, w: int = 4, a: int = 4, kv: int | None = None,
           name: str | None = None) -> QuantConfig:
    """QRazor (arXiv 2501.13331): SDR razoring of int8 weights and int16 activations.

    Weights: int8 absmax per output channel (one fp16 scale per row, symmetric: no zero point), then
    razored to ``w`` bits (1 sign + w-1 magnitude bits) per group of ``group`` input elements, plus a
    4-bit flag per group: w + 4/group bits. Activations (all GEMM inputs and q): int16 absmax per
    tensor, razored the same way to ``a`` bits. KV cache: int8 absmax per tensor, or razored to 4 bits
    + flags with ``kv4`` (``kv`` sets another width). A width of 8 (weights, KV) or 16 (activations)
    is the base precision, without razoring or flags. Embeddings and the output layer stay fp16.
    """
    kv = (4 if kv4 else 8) if kv is None else kv
    for label, v, base in (("w", w, 8), ("a", a, 16), ("kv", kv, 8)):
        if not (2 <= v <= min(8, base) or v == base):
            raise ValueError(f"qrazor {label} bits must be 2..8 (razored) or {base} (base precision), "
                             f"got {v}")
    return QuantConfig(
        name=name or ("qrazor-W4A4KV4" if kv4 else "qrazor-W4A4"), method="qrazor", w_bits=w,
        embed_bits=FP16, lm_head_bits=FP16, a_bits=a, ln_bits=a, kv_bits=kv,
        w_scale_bits=FP16, w_zero_bits=0, w_sdr_group=group if w < 8 else 0,
        a_sdr_group=group if a < 16 else 0, kv_sdr_group=group if kv < 8 else 0)


def gptq(w: float, *, group: int = 0, name: str | None = None) -> QuantConfig:
    """GPTQ weight-only (arXiv 2210.17323): linear layers at ``w`` bits with an fp16 scale and zero per
    output row (or per ``group`` inputs), embeddings and output layer fp16 (as its Section 5 counts
    OPT-175B), activations and KV cache fp16."""
    return QuantConfig(name=name or (f"gptq-W{w:g}" + (f"-g{group}" if group else "")), method="gptq",
                       w_bits=w, w_group=group, w_scale_bits=FP16, w_zero_bits=FP16)


PRESETS: dict[str, QuantConfig] = {c.name: c for c in [
    rptq(16, 16, name="W16A16"),
    rptq(4, 16),
    rptq(4, 8),
    rptq(4, 4),
    rptq(3, 3),
    rptq(4, 4, only_kv=True),
    rptq(4, 3, only_kv=True),
    rptq(3, 3, only_kv=True),
    qrazor(False),
    qrazor(True),
    gptq(3),
    gptq(4),
    gptq(4, group=128),
]}

#: The RPTQ Table 3 configurations, in the paper's order.
RPTQ_TABLE3 = ("W16A16", "W4A16", "W4A8", "W4A4", "W4A4KV", "W4A3KV", "W3A3KV")

_CUSTOM_KEYS = {
    "w": "w_bits", "a": "a_bits", "kv": "kv_bits", "ln": "ln_bits", "embed": "embed_bits",
    "lm_head": "lm_head_bits", "group": "w_group", "w_group": "w_group", "clusters": "clusters",
    "w_clusters": "w_clusters", "sdr_group": "sdr_group", "a_sdr_group": "a_sdr_group",
    "w_sdr_group": "w_sdr_group", "kv_sdr_group": "kv_sdr_group", "scale_bits": "w_scale_bits",
    "zero_bits": "w_zero_bits", "head_clusters": "head_clusters", "index_bits": "index_bits",
}


def custom(name: str = "custom", **kw) -> QuantConfig:
    """Explicit per-tensor bits: ``custom(w=3, a=8, kv=4, embed=16, lm_head=16, group=128)``.

    Keys: w, a, kv, ln (default: a), embed, lm_head (default 16), group (weights, 0 = per row),
    clusters, w_clusters, sdr_group (sets w/a/kv SDR groups), w_sdr_group, a_sdr_group, kv_sdr_group,
    scale_bits, zero_bits, head_clusters, index_bits.
    """
    vals: dict = {}
    for k, v in kw.items():
        if k not in _CUSTOM_KEYS:
            raise ValueError(f"config: unknown key {k!r}; allowed keys: {', '.join(sorted(_CUSTOM_KEYS))}")
        vals[_CUSTOM_KEYS[k]] = v
    sdr = vals.pop("sdr_group", 0)
    for k in ("w_sdr_group", "a_sdr_group", "kv_sdr_group"):
        vals.setdefault(k, sdr)
    vals.setdefault("ln_bits", vals.get("a_bits", 16))
    w = vals.get("w_bits", 16)
    if w >= 16:
        vals.setdefault("w_scale_bits", 0)
        vals.setdefault("w_zero_bits", 0)
    return QuantConfig(name=name, method="custom", **vals)


_WAKV = re.compile(r"^W(\d+(?:\.\d+)?)A(\d+(?:\.\d+)?)(KV(\d+(?:\.\d+)?)?)?$", re.IGNORECASE)


def parse_config(spec) -> QuantConfig:
    """A :class:`QuantConfig` from a preset name, ``W<w>A<a>[KV<k>]``, ``key=value,...`` or a QuantConfig."""
    if isinstance(spec, QuantConfig):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"config: expected a configuration name, got {spec!r}; known: {', '.join(PRESETS)}")
    s = spec.strip()
    if "=" in s:
        kw = {}
        for part in s.split(","):
            if "=" not in part:
                raise ValueError(f"config: {part!r} is not key=value in {s!r}")
            k, v = part.split("=", 1)
            try:
                kw[k.strip()] = float(v) if "." in v else int(v)
            except ValueError:
                raise ValueError(f"config: value of {k.strip()!r} must be a number, got {v!r}") from None
        return custom(name=s, **kw)
    # suffixes -g<N> (group) and -c<N> (clusters)
    group = clusters = None
    while True:
        m = re.search(r"-(g|c)(\d+)$", s)
        if not m:
            break
        if m.group(1) == "g":
            group = int(m.group(2))
        else:
            clusters = int(m.group(2))
        s = s[: m.start()]
    base = {k.lower(): v for k, v in PRESETS.items()}.get(s.lower())
    if base is None:
        m = _WAKV.match(s)
        if not m:
            raise ValueError(f"config: unknown configuration {spec!r}; known: {', '.join(PRESETS)}, "
                             f"or W<w>A<a>[KV<k>], or key=value,... "
                             f"(keys: {', '.join(sorted(_CUSTOM_KEYS))})")
        w, a = float(m.group(1)), float(m.group(2))
        kv = float(m.group(4)) if m.group(4) else a
        if m.group(3) and not m.group(4):  # RPTQ's "KV": only the cache quantized, at a bits
            base = rptq(w, a, only_kv=True)
        else:
            base = custom(name=s, w=w, a=a, kv=kv, ln=norm_output_bits(a))
            base = replace(base, method="uniform")
    name = spec.strip()
    if group is not None:
        if base.method == "qrazor":
            base = replace(base, w_sdr_group=group, a_sdr_group=group,
                           kv_sdr_group=group if base.kv_sdr_group else 0)
        else:
            base = replace(base, w_group=group)
    if clusters is not None:
        base = replace(base, clusters=clusters)
    if group is not None or clusters is not None:
        base = replace(base, name=name)
    # validation of the changed fields
    return QuantConfig(**{f.name: getattr(base, f.name) for f in fields(QuantConfig)})


def known_configs() -> list[str]:
    return list(PRESETS)
