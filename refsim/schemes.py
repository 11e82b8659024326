"""Schemes: which tensor roles of a block are quantized, to what spec, bit width and quantizer.

A scheme maps each tensor role of a decoder block to a rule:

    role                 RPTQ (``RPTQScheme``)                       QRazor (``QRazorScheme``)
    weight               GPTQ codes per row x input cluster          int8 absmax per row, SDR keep w_keep
                         (``gptq`` preset), wbits
    act at a point       RPTQ min-max per cluster of the point's     int16 absmax per tensor (calibrated
                         reorder (``rptq`` preset), the topology's   range), SDR keep a_keep
                         bit rule (norm: max(8, abits), act: abits)
    K / V                the same, at kvbits                         int8 absmax per tensor, SDR keep kv_keep
    probabilities        unsigned 8-bit, s = fp16(1/255), z = 0      [0, 1] range (s = 1/32767), SDR

and provides each of them to the forward pass (``refsim.models.forward``) as an ``Operand``,
recording the code stages. ``CONFIGS`` (RPTQ Table 1/3) and ``SDR_CONFIGS`` (QRazor) name the
configurations; ``scheme(config)`` gives the scheme of a name or of {"wbits", "abits", "kvbits"}.
``NATIVE_CONFIGS`` (``NativeWeightsScheme``, docs/gguf.md): RPTQ activations with a GGUF model's own
Q4_1 weight blocks as exact integer codes (``refsim.qtensor.BlockOffsetTensor``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from refsim.checks import check_choice
from refsim.spec import NumericsSpec, preset

# name -> (wbits, abits, kvbits); None = not quantized (float). RPTQ Table 1/3 configurations:
# "KV" configurations quantize only the K/V cache, all other activations stay float.
CONFIGS = {
    "W16A16": (None, None, None),
    "W4A16": (4, None, None),
    "W4A8": (4, 8, 8),
    "W4A4": (4, 4, 4),
    "W4A4KV": (4, None, 4),
    "W4A3KV": (4, None, 3),
    "W3A3KV": (3, None, 3),
    # beyond RPTQ's tables: every GEMM operand at 3 bits (norm outputs at 8, the topology's bit rule), the
    # configuration a hypothetical int3 tensor core would run
    "W3A3": (3, 3, 3),
}
# QRazor base precision + SDR (refsim.qrazor): block config name -> refsim.qrazor.CONFIGS name
SDR_CONFIGS = {"QRAZOR": "W4A4", "QRAZOR_W4A4": "W4A4", "QRAZOR_W4A4KV4": "W4A4KV4", "QRAZOR_W4A8": "W4A8"}
SDR_CONFIG = "QRAZOR"

PROB_SCALE = np.float16(1.0 / 255.0)  # RPTQ "fix0to1": round(P * 255) / 255, in fp16
PROB_RANGE = np.array([0.0, 1.0], dtype=np.float32)  # QRazor: probabilities' static absmax range


def config_bits(config):
    """(wbits, abits, kvbits) of a configuration name or a dict with those keys (None = float)."""
    if isinstance(config, dict):
        unknown = set(config) - {"wbits", "abits", "kvbits"}
        if unknown:
            raise ValueError(f"config has unknown keys {sorted(unknown)}; allowed: 'wbits', 'abits', 'kvbits'")
        bits = tuple(config.get(k) for k in ("wbits", "abits", "kvbits"))
        for name, b in zip(("wbits", "abits", "kvbits"), bits, strict=True):
            if b is not None and (isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 2 <= b <= 8):
                raise ValueError(f"config {name}={b!r} is not allowed; allowed: None (float) or an integer in 2..8")
        return bits
    check_choice(config, tuple(CONFIGS) + tuple(SDR_CONFIGS), name="config")
    return CONFIGS[config]


def _slices(hidden, heads):
    d = hidden // heads
    return [slice(h * d, (h + 1) * d) for h in range(heads)]


@dataclass(frozen=True)
class RPTQScheme:
    """RPTQ (arXiv 2304.01089): GPTQ weights per row x input cluster, per-cluster min-max activations."""

    name: str
    wbits: int | None
    abits: int | None
    kvbits: int | None
    spec: NumericsSpec = field(default_factory=lambda: preset("rptq"))
    weight_spec: NumericsSpec = field(default_factory=lambda: preset("gptq"))

    def roles(self, topology) -> dict:
        """{role: (spec name or None, bits, quantizer)} for every tensor role of ``topology``."""
        out = {"weight": ("gptq", self.wbits, "gptq per row x input cluster")}
        for p in topology.points:
            out[f"act.{p.name}"] = ("rptq", topology.point_bits(p.name, self.abits, self.kvbits),
                                    f"rptq min-max per cluster of {p.reorder}")
        out["probs"] = ("rptq", None if self.abits is None else topology.prob_bits, "unsigned, s = fp16(1/255)")
        return out

    def activation(self, ctx, point, x):
        from refsim.models.forward import Operand
        from refsim.qtensor import cluster_ranges, rptq_quantize

        key = ("act", point)
        if key not in ctx.cache:
            bits = ctx.topology.point_bits(point, self.abits, self.kvbits)
            if bits is None:
                ctx.cache[key] = Operand(None, x)
            else:
                block, r = ctx.block, ctx.topology.point(point).reorder
                ids = block.ids(r)
                lo, hi = cluster_ranges(block[f"stat.{point}.min"], block[f"stat.{point}.max"], ids,
                                        block.n_clusters(r))
                qt = rptq_quantize(x, lo, hi, ids, bits=bits, axis=-1, spec=self.spec)
                ctx.stages[f"{point}_codes"], ctx.stages[f"{point}_scale"] = qt.codes, qt.scale
                ctx.stages[f"{point}_zero"] = qt.zero
                ctx.cache[key] = Operand(qt, qt.dequantize())
        return ctx.cache[key]

    def weight(self, ctx, lin):
        from refsim.models.forward import Operand
        from refsim.qtensor import weight_tensor

        block = ctx.block
        if self.wbits is None:
            return Operand(None, block[f"{lin}.weight"])
        if block.wbits != self.wbits:
            raise ValueError(f"config wbits={self.wbits} but the block's weights are quantized to "
                             f"wbits={block.wbits}")
        qt = weight_tensor(block[f"{lin}.codes"].astype(np.int32), block[f"{lin}.scale"], block[f"{lin}.zero"],
                           block.ids(ctx.topology.linear(lin).in_reorder), bits=self.wbits, spec=self.weight_spec)
        return Operand(qt, qt.dequantize())

    def heads(self, ctx, point, x, heads, *, side):
        """Per-head operands: q_h, k_h (T, d) sliced by the per-head reorder's clusters; v_h^T (d, T) with V's
        per-channel-cluster parameters on the output axis (PV reduces over tokens: one cluster)."""
        from refsim.models.forward import Operand
        from refsim.qtensor import Granularity, QuantizedTensor

        op = self.activation(ctx, point, x)
        out = []
        for sl in _slices(x.shape[1], heads):
            if side != "wT":
                out.append(Operand(None if op.qt is None else op.qt.head(sl), op.value[:, sl]))
                continue
            qt = None
            if op.qt is not None:
                ids = op.qt.clusters[sl]
                qt = QuantizedTensor(op.qt.codes[:, sl].T, op.qt.scale[ids], op.qt.zero[ids], Granularity.AXIS,
                                     op.qt.bits, op.qt.signed, op.qt.spec, axis=0)
            out.append(Operand(qt, op.value[:, sl].T))
        return out

    def probs(self, ctx, probs):
        from refsim.models.forward import Operand
        from refsim.qtensor import fixed_quantize

        if self.abits is None:
            return [Operand(None, p) for p in probs]
        qt = fixed_quantize(probs, PROB_SCALE, 0, bits=ctx.topology.prob_bits, signed=False, spec=self.spec)
        ctx.stages["probs_codes"] = qt.codes
        # the float value only where a product has a float operand (Operand dequantizes it then)
        return [Operand(replace(qt, codes=qt.codes[h]), None) for h in range(probs.shape[0])]

    def finish_attention(self, ctx):
        pass


@dataclass(frozen=True)
class QRazorScheme:
    """QRazor (arXiv 2501.13331): static absmax base precision, SDR per group along each product's K.

    Static calibration: an activation's absmax is that of its recorded calibration range
    (``stat.{point}.min/max``); probabilities have the range [0, 1]; weights use their own rows.
    SDR stages of a product's second operand (k, v) are recorded in the (K, N) orientation the
    QRazor product has always written ((d, T) for k, (T, d) for v), so bundles keep their bytes."""

    name: str
    config: object  # refsim.qrazor.QRazorConfig: its spec is the scheme's (one place for the numerics)

    @property
    def spec(self) -> NumericsSpec:
        return self.config.spec

    def roles(self, topology) -> dict:
        c = self.config
        return {"weight": ("qrazor", (c.w_bits, c.role("weight")[1]), "absmax per row + SDR"),
                "act": ("qrazor", (c.a_bits, c.role("activation")[1]), "absmax per tensor + SDR"),
                "kv": ("qrazor", (c.kv_bits, c.role("kv")[1]), "absmax per tensor + SDR"),
                "probs": ("qrazor", (c.a_bits, c.role("activation")[1]), "range [0, 1] + SDR")}

    def _scale(self, batches, role, axis=None):
        from refsim.qrazor import AbsmaxCalibrator

        cal = AbsmaxCalibrator(axis=axis)
        for b in batches:
            cal.update(b)
        return cal.scale(self.config.role(role)[0], spec=self.spec)

    def _cal(self, ctx, point):
        b = ctx.block
        return [np.concatenate([b[f"stat.{point}.min"], b[f"stat.{point}.max"]]).astype(np.float32)]

    def _razor(self, x, scale, role, scale_axis=None):
        from refsim.qtensor import sdr_quantize

        bits, keep = self.config.role(role)
        return sdr_quantize(x, scale, base_bits=bits, keep=keep, group_size=self.config.group_size, axis=1,
                            scale_axis=scale_axis, spec=self.spec)

    def activation(self, ctx, point, x):
        from refsim.models.forward import Operand

        key = ("act", point)
        if key not in ctx.cache:
            qt = self._razor(x, self._scale(self._cal(ctx, point), "activation"), "activation")
            ctx.stages[f"{point}_codes"], ctx.stages[f"{point}_flags"] = qt.codes, qt.sdr.flags
            ctx.cache[key] = Operand(qt, None)
        return ctx.cache[key]

    def weight(self, ctx, lin):
        from refsim.models.forward import Operand

        w = ctx.block[f"{lin}.weight"]
        return Operand(self._razor(w, self._scale([w], "weight", axis=0), "weight", scale_axis=0), None)

    def _keep(self, ctx, point, qt, transpose):
        lists = ctx.cache.setdefault("sdr_heads", {})
        c, f = (qt.codes.T, qt.sdr.flags.T) if transpose else (qt.codes, qt.sdr.flags)
        lists.setdefault(f"{point}_codes", []).append(c)
        lists.setdefault(f"{point}_flags", []).append(f)

    def heads(self, ctx, point, x, heads, *, side):
        from refsim.models.forward import Operand

        role = "activation" if side == "a" else "kv"
        s = self._scale(self._cal(ctx, point), role)
        out = []
        for sl in _slices(x.shape[1], heads):
            qt = self._razor(x[:, sl] if side != "wT" else x[:, sl].T, s, role)
            self._keep(ctx, point, qt, transpose=side != "a")
            out.append(Operand(qt, None))
        return out

    def probs(self, ctx, probs):
        from refsim.models.forward import Operand

        s = self._scale([PROB_RANGE], "activation")
        out = []
        for p in probs:
            qt = self._razor(p, s, "activation")
            self._keep(ctx, "probs", qt, transpose=False)
            out.append(Operand(qt, None))
        return out

    def finish_attention(self, ctx):
        ctx.stages.update({k: np.stack(v) for k, v in ctx.cache.pop("sdr_heads", {}).items()})


def scheme(config, *, group_size=16, spec: NumericsSpec | None = None):
    """The scheme of a configuration: a name in ``CONFIGS`` (RPTQ), ``NATIVE_CONFIGS`` (GGUF native weights)
    or ``SDR_CONFIGS`` (QRazor, at ``group_size``), or {"wbits", "abits", "kvbits"} (RPTQ; None = float).
    ``spec`` replaces the method's spec (activations, probabilities, every product's accumulator); None keeps
    its preset."""
    if isinstance(config, (RPTQScheme, QRazorScheme)):
        if spec is None:
            return config
        if isinstance(config, RPTQScheme):
            return replace(config, spec=spec)
        return replace(config, config=replace(config.config, spec=spec))
    if isinstance(config, str) and config in NATIVE_CONFIGS:
        return native_scheme(config, spec=spec)
    if isinstance(config, str) and config in SDR_CONFIGS:
        from refsim.qrazor import qrazor_config

        return QRazorScheme(config, qrazor_config(SDR_CONFIGS[config], group_size=group_size, spec=spec))
    bits = config_bits(config)
    out = RPTQScheme(config if isinstance(config, str) else "custom", *bits)
    return out if spec is None else replace(out, spec=spec)


def qrazor_scheme(name="W4A4", *, group_size=16, spec: NumericsSpec | None = None) -> QRazorScheme:
    """The QRazor scheme of a ``refsim.qrazor.CONFIGS`` name (W4A4, W4A4KV4, W4A8); ``spec`` None = ``qrazor``."""
    from refsim.qrazor import qrazor_config

    return QRazorScheme(f"QRAZOR_{name}", qrazor_config(name, group_size=group_size, spec=spec))


# ---------------------------------------------------------------------------------------------
# native GGUF weights (docs/gguf.md): the model's own 4-bit blocks as exact integer codes

# name -> (wbits, abits, kvbits), weights always the GGUF file's own codes (Q4_1: 4 bits). The
# activations are RPTQ's, on the block's calibrated reorders; ``refsim eval`` builds those reorders
# block-aligned (option (a) of docs/gguf.md: whole 32-channel blocks move, so each block's d and m serve
# one activation cluster); the scheme itself runs any layout (option (b): scattered blocks).
# NATIVE_W4A16 (and the KV-only configurations) multiply float activations by the dequantized GGUF
# weights: the W16A16 weights of a GGUF model, computed from the codes.
NATIVE_CONFIGS = {
    "NATIVE_W4A16": (4, None, None),
    "NATIVE_W4A8": (4, 8, 8),
    "NATIVE_W4A4": (4, 4, 4),
    "NATIVE_W4A4KV": (4, None, 4),
    "NATIVE_W4A3KV": (4, None, 3),
}


def native_weight(block, topology, lin, *, keep_sums=True):
    """The ``BlockOffsetTensor`` of one linear's native arrays (``refsim.formats.gguf.native_linear_arrays``),
    checked against the block's layout: the stored columns must be the block's input reorder and the
    rows its output reorder (a logical() copy of a physical block, say, must be given its own arrays)."""
    from refsim.qtensor import block_offset_weight

    spec = topology.linear(lin)
    arrays = getattr(block, "arrays", None)
    key = f"{lin}.native.codes"
    if arrays is not None and key not in arrays:
        raise ValueError(f"the block has no native weights for {lin!r} ({key}); add them with "
                         "refsim.formats.gguf.native_linear_arrays")
    cols = np.asarray(block[f"{lin}.native.cols"])
    if not np.array_equal(cols, np.asarray(block[f"{spec.in_reorder}.perm"])):
        raise ValueError(f"{lin}.native.cols is not this block's {spec.in_reorder}.perm: the native arrays are in "
                         "another layout; rebuild them with native_linear_arrays(col_perm=block's perm)")
    rows = np.asarray(block[f"{lin}.native.rows"])
    want = np.arange(rows.size) if spec.out_reorder is None else np.asarray(block[f"{spec.out_reorder}.perm"])
    if not np.array_equal(rows, want):
        raise ValueError(f"{lin}.native.rows is not this block's output reorder of {lin!r}; rebuild the native arrays")
    m_key = f"{lin}.native.m"
    m = block[m_key] if arrays is None or m_key in arrays else None
    return block_offset_weight(block[key], block[f"{lin}.native.d"], m, blocks=cols // 32, keep_sums=keep_sums)


@dataclass(frozen=True)
class NativeWeightsScheme(RPTQScheme):
    """RPTQ activations (per cluster of the block's reorders) with the GGUF file's own weight blocks as
    exact integer codes (``refsim.qtensor.BlockOffsetTensor``); every product with quantized activations
    is ``refsim.qtensor.block_offset_matmul``. ``keep_sums`` False: the *_acc stages are None (no
    per-(block x cluster) sums held; the outputs are the same bit for bit)."""

    keep_sums: bool = True

    def roles(self, topology) -> dict:
        out = super().roles(topology)
        out["weight"] = (None, self.wbits, "GGUF native codes, fp16 d and m per row x block of 32")
        return out

    def weight(self, ctx, lin):
        from refsim.models.forward import Operand

        return Operand(native_weight(ctx.block, ctx.topology, lin, keep_sums=self.keep_sums), None)


def native_scheme(name="NATIVE_W4A4", *, keep_sums=True, spec: NumericsSpec | None = None) -> NativeWeightsScheme:
    """The scheme of a ``NATIVE_CONFIGS`` name; ``spec`` replaces the activations' (and accumulators') ``rptq``."""
    check_choice(name, tuple(NATIVE_CONFIGS), name="config")
    out = NativeWeightsScheme(name, *NATIVE_CONFIGS[name], keep_sums=keep_sums)
    return out if spec is None else replace(out, spec=spec)
