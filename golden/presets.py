"""Bundle presets: one per hardware stage, each computing every stage with refsim.

A preset has two halves:

    inputs(rng, level, shape, config) -> [Stage]      the stimulus (golden.stimulus levels)
    derive(arrays, specs, config)     -> [Stage]      every later stage, from the inputs only

``derive`` reads nothing but the input arrays, the recorded numerics specs and the recorded
config, so ``refsim verify`` re-derives a bundle from its own manifest. Stage names are
stable (docs/golden.md lists them); a renamed or re-ordered stage is a schema change.

Stage fields (copied into the manifest): the array (C order), ``word_bits`` of its ``.hex``
words, ``signed`` (two's complement) and ``layout``: ``element`` (one value per word),
``ieee_binary16`` / ``ieee_binary32`` / ``ieee_binary64`` (a float's bit pattern), or a
refsim packing layout name (the word holds packed codes; see refsim.layouts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import refsim
from golden import hexio
from golden.stimulus import all_finite_float16, as_code, code_limits, cycle_fill, grid_points, int_patterns
from refsim.quantize import COMPUTE_DTYPES

FLOAT_LAYOUTS = {2: "ieee_binary16", 4: "ieee_binary32", 8: "ieee_binary64"}


@dataclass(frozen=True)
class Stage:
    name: str
    array: np.ndarray
    word_bits: int
    signed: bool
    layout: str
    role: str  # "input" or "derived"
    doc: str


def stage(name, array, *, doc, role="derived", word_bits=None, signed=None, layout="element") -> Stage:
    """A Stage; floats get their IEEE layout and width, integers need word_bits and signed."""
    a = np.ascontiguousarray(array)
    if a.dtype.kind == "f":
        a = a.astype(a.dtype.newbyteorder("<"))  # a fixed byte order: byte-identical .npy files
        return Stage(name, a, a.dtype.itemsize * 8, False, FLOAT_LAYOUTS[a.dtype.itemsize], role, doc)
    a = a.astype(a.dtype.newbyteorder("<"))
    if layout != "sign_magnitude":
        hexio.check_stage_range(a, int(word_bits), bool(signed), name=name)
    return Stage(name, a, int(word_bits), bool(signed), layout, role, doc)


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    specs: dict  # role -> refsim.NumericsSpec
    shape_names: tuple
    default_shape: tuple
    config: dict
    inputs: Callable
    derive: Callable
    exhaustive_shape: Callable | None = None  # config -> the shape level 2 fixes
    pattern_shape: Callable | None = None  # config -> the shape level 1 fixes (None: level 1 takes --shape)
    levels: tuple = (0, 1, 2)
    # False: generating the inputs depends on the platform's BLAS (the OPT block's float calibration run
    # and k-means); such presets are left out of the committed cross-machine digests.
    portable: bool = True
    notes: list = field(default_factory=list)
    # the highest power in which each shape dimension enters a stage's size (None: 1 for every one, the
    # stages are multilinear in the shape); golden.bundle's size check takes its upper bound from it
    size_degree: tuple | None = None


def _cdt(spec) -> np.dtype:
    return np.dtype(COMPUTE_DTYPES[spec.compute_dtype])


def contiguous_clusters(k: int, c: int) -> np.ndarray:
    """Cluster id of each of k channels: c contiguous clusters (RPTQ after reordering), as equal as k allows."""
    if not 1 <= c <= k:
        raise ValueError(f"clusters={c} is not allowed for K={k} channels; allowed: 1..{k}")
    return (np.arange(k) * c // k).astype(np.uint8)


def _cluster_minmax(x, cluster, c_count, dtype):
    """Per-cluster calibration range of x (tokens, channels): refsim's cluster_minmax of the channels'."""
    from refsim.rptq.cluster import cluster_minmax

    lo, hi = cluster_minmax(x.min(axis=0), x.max(axis=0), cluster, c_count)
    return lo.astype(dtype), hi.astype(dtype)


# Zero points the pattern levels give the per-cluster quantizers: 0, positive, negative, and
# one outside the code range (an RPTQ range that excludes 0 puts it there).
def _pattern_zero_points(bits, count):
    base = [0, 3, -(1 << (bits - 1)) + 3, (1 << bits) + 3]
    return np.array([base[i % len(base)] for i in range(count)], dtype=np.int64)


def _pow2_cluster_range(bits, za, sa, dtype):
    """(xmin, xmax) whose RPTQ parameters are exactly scale sa and zero point za (sa a power of two)."""
    lo, hi = code_limits(bits, True)
    return np.asarray((lo - za) * sa, dtype=dtype), np.asarray((hi + 1 - za) * sa, dtype=dtype)


# ---------------------------------------------------------------- quantize (RPTQ per cluster)

def _quant_inputs(rng, level, shape, cfg, specs):
    bits, c_count = cfg["bits"], cfg["clusters"]
    dt = _cdt(specs["act"])
    if level == 2:
        xs = all_finite_float16().astype(dt)
        x = np.repeat(xs[:, None], c_count, axis=1)
        cluster = np.arange(c_count, dtype=np.uint8)
    else:
        m, k = shape
        cluster = contiguous_clusters(k, c_count)
    if level == 0:
        # channel scales 2^-4 .. 2^4 built exactly (np.exp2 of a float differs between CPUs)
        chan_scale = np.ldexp(1.0 + rng.random(k), rng.integers(-4, 4, size=k))
        chan_shift = rng.standard_normal(k)
        x = (rng.standard_normal((m, k)) * chan_scale + chan_shift).astype(dt)
        xmin, xmax = _cluster_minmax(x, cluster, c_count, dt)
    else:
        za = _pattern_zero_points(bits, c_count)
        sa = np.ldexp(1.0, -(np.arange(c_count) % 4 + 2))
        ranges = [_pow2_cluster_range(bits, za[c], sa[c], dt) for c in range(c_count)]
        if level == 2 and c_count > 1:  # one range of no special form: scale and zero point rounded in fp16
            ranges[-1] = (np.asarray(-0.3, dt), np.asarray(1.7, dt))
        xmin = np.array([r[0] for r in ranges], dtype=dt)
        xmax = np.array([r[1] for r in ranges], dtype=dt)
    if level == 1:
        lo, hi = code_limits(bits, True)
        special = np.array([0.0, -0.0, 2.0**-24, -(2.0**-24), 65504.0, -65504.0], dtype=dt)
        x = np.empty((m, k), dtype=dt)
        for c in range(c_count):
            vals = np.concatenate([grid_points(sa[c], lo - za[c] - 2, hi - za[c] + 2, dt), special])
            cols = np.nonzero(cluster == c)[0]
            x[:, cols] = cycle_fill(vals, (cols.size, m), stride=5).T
    return [
        stage("x", x, role="input", doc="activations (M, K), channels already reordered so clusters are contiguous"),
        stage("cluster", cluster, role="input", word_bits=8, signed=False, doc="cluster id of each channel (K,)"),
        stage("xmin", xmin, role="input", doc="calibrated minimum of each cluster (C,)"),
        stage("xmax", xmax, role="input", doc="calibrated maximum of each cluster (C,)"),
    ]


def _quant_derive(a, specs, cfg):
    spec, bits = specs["act"], cfg["bits"]
    s, z = refsim.rptq_params(a["xmin"], a["xmax"], bits=bits, spec=spec)
    kw = dict(axis=1, clusters=a["cluster"])
    q = refsim.quantize(a["x"], s, z, bits=bits, spec=spec, **kw)
    deq = refsim.dequantize(q, s, z, dtype=_cdt(spec), **kw)
    signed = spec.signed
    return [
        stage("scale", s, doc="per-cluster scale s = clamp((xmax - xmin) / 2^bits, 1e-4, 1e4) (C,)"),
        stage("zero_point", z, word_bits=32, signed=True, doc="per-cluster zero point, int32 (C,)"),
        stage("codes", q.astype(np.int8), word_bits=bits, signed=signed,
              doc="codes q = clamp(round(x / s) + z) (M, K)"),
        stage("dequant", deq, doc="(q - z) * s in the compute dtype (M, K)"),
    ]


def _quant_preset(bits):
    return Preset(
        name=f"quant_rptq_int{bits}",
        summary=f"RPTQ per-cluster asymmetric quantization of fp16 activations to int{bits}",
        specs={"act": refsim.preset("rptq")},
        shape_names=("M", "K"),
        default_shape=(48, 16),
        config={"bits": bits, "clusters": 4},
        inputs=_quant_inputs,
        derive=_quant_derive,
        exhaustive_shape=lambda cfg: (63488, cfg["clusters"]),
        notes=["level 2: every finite float16 through every cluster's quantizer (one channel per cluster)"],
    )


# ---------------------------------------------------------------- pack (each layout)

def _pack_inputs(rng, level, shape, cfg, specs):
    bits, signed = cfg["bits"], cfg["signed"]
    lo, hi = code_limits(bits, signed)
    if level == 0:
        codes = rng.integers(lo, hi + 1, size=shape)
    elif level == 1:
        codes = cycle_fill(int_patterns(bits, signed), shape, stride=3)
    else:  # every pair of neighbours at every position of a 32-code block
        r = np.arange(1 << (2 * bits))[:, None]
        j = np.arange(32)[None, :]
        codes = as_code(np.where(j % 2 == 0, r >> bits, r) + j, bits, signed)
    return [stage("codes", codes.astype(np.int8), role="input", word_bits=bits, signed=signed,
                  doc="codes (R, N), one row packed at a time")]


def _packed_stage(codes, layout_name, *, signed, axis=-1, name="packed"):
    lay = refsim.LAYOUTS[layout_name]
    data = refsim.pack(codes, layout_name, axis=axis, signed=signed)
    if lay.block_bytes and lay.block_bytes % 4 == 0:  # a word layout: little-endian 32-bit words
        data = np.moveaxis(np.ascontiguousarray(np.moveaxis(data, axis, -1)).view("<u4"), -1, axis)
        return stage(name, data, word_bits=32, signed=False, layout=layout_name,
                     doc=f"{lay.description}; 32-bit words")
    return stage(name, data, word_bits=8, signed=False, layout=layout_name, doc=f"{lay.description}; bytes")


def _pack_derive(a, specs, cfg):
    return [_packed_stage(a["codes"], cfg["layout"], signed=cfg["signed"])]


PACK_LAYOUTS = ("int4_lo_first", "int4_word32", "int3_stream", "int3_gptq", "int3_planar")


def _pack_preset(layout_name):
    lay = refsim.LAYOUTS[layout_name]
    return Preset(
        name=f"pack_{layout_name}",
        summary=f"pack {lay.bits}-bit codes in layout {layout_name}: {lay.description}",
        specs={},
        shape_names=("R", "N"),
        default_shape=(4, 64),
        config={"layout": layout_name, "bits": lay.bits, "signed": lay.signed},
        inputs=_pack_inputs,
        derive=_pack_derive,
        exhaustive_shape=lambda cfg: (1 << (2 * cfg["bits"]), 32),
        notes=["level 2: every pair of neighbouring codes at every position of a 32-code block"],
    )


# ---------------------------------------------------------------- int GEMM with zero points

def _gemm_inputs(rng, level, shape, cfg, specs):
    bits, c_count = cfg["bits"], cfg["clusters"]
    adt = _cdt(specs["act"])
    if level == 2:
        n_codes = 1 << bits
        m, k, n = n_codes, c_count * n_codes, n_codes
    else:
        m, k, n = shape
    cluster = contiguous_clusters(k, c_count)
    if level == 0:
        chan_scale = np.ldexp(1.0 + rng.random(k), rng.integers(-2, 2, size=k))  # exact, on every CPU
        x = (rng.standard_normal((m, k)) * chan_scale + 0.25 * rng.standard_normal(k)).astype(adt)
        w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
        xmin, xmax = _cluster_minmax(x, cluster, c_count, adt)
        wmin, wmax = w.min(axis=0), w.max(axis=0)
    else:
        # Codes first, then floats that quantize back to exactly those codes: power-of-two
        # scales make x = (q - z) * s exact, so the GEMM sees the patterns unchanged.
        alo, ahi = code_limits(bits, True)
        maxq = (1 << bits) - 1
        if level == 1:
            qa = cycle_fill(int_patterns(bits, True), (m, k), stride=1)
            qw = cycle_fill(int_patterns(bits, False), (n, k), stride=3).T
            qa[0, :], qw[:, 0] = alo, maxq  # the largest accumulator magnitudes
            if m > 1 and n > 1:
                qa[1, :], qw[:, 1] = ahi, 0
        else:  # every (activation code, weight code) pair meets at every k
            qa = as_code(np.arange(m)[:, None] + np.arange(k)[None, :], bits, True)
            qw = (np.arange(n)[None, :] + 3 * np.arange(k)[:, None]) % (1 << bits)
        za = _pattern_zero_points(bits, c_count)
        sa = np.ldexp(1.0, -(np.arange(c_count) % 4 + 2))
        zw = (np.arange(n) * 5) % (maxq + 1)
        sw = np.ldexp(1.0, -(np.arange(n) % 4 + 3))
        x = ((qa - za[cluster]) * sa[cluster]).astype(adt)
        w = ((qw - zw) * sw).astype(np.float32)
        rng_a = [_pow2_cluster_range(bits, za[c], sa[c], adt) for c in range(c_count)]
        xmin = np.array([r[0] for r in rng_a], dtype=adt)
        xmax = np.array([r[1] for r in rng_a], dtype=adt)
        wmin = ((0 - zw) * sw).astype(np.float32)
        wmax = ((maxq - zw) * sw).astype(np.float32)
    return [
        stage("x", x, role="input", doc="activations (M, K), clusters contiguous (RPTQ reordered)"),
        stage("a_cluster", cluster, role="input", word_bits=8, signed=False, doc="cluster id of each K channel (K,)"),
        stage("a_xmin", xmin, role="input", doc="calibrated activation minimum per cluster (C,)"),
        stage("a_xmax", xmax, role="input", doc="calibrated activation maximum per cluster (C,)"),
        stage("w", w, role="input", doc="weights (K, N), float32"),
        stage("w_min", np.asarray(wmin, np.float32), role="input", doc="weight minimum per output channel (N,)"),
        stage("w_max", np.asarray(wmax, np.float32), role="input", doc="weight maximum per output channel (N,)"),
    ]


def _gemm_derive(a, specs, cfg):
    act, wsp, bits = specs["act"], specs["weight"], cfg["bits"]
    cluster = a["a_cluster"].astype(np.int64)
    c_count = int(a["a_xmin"].shape[0])
    sa, za = refsim.rptq_params(a["a_xmin"], a["a_xmax"], bits=bits, spec=act)
    qa = refsim.quantize(a["x"], sa, za, bits=bits, axis=1, clusters=cluster, spec=act)
    sw, zw = refsim.gptq_params(a["w_min"], a["w_max"], bits=bits, spec=wsp)
    qw = refsim.quantize(a["w"], sw, zw, bits=bits, axis=1, spec=wsp)
    acc = dict(spec=act)
    # isum is defined directly as sum (qa - za)(qw - zw) per cluster (refsim.cluster_int_gemm);
    # the RTL forms it as raw - zw*a_sum - za*w_sum + count*za*zw, equal modulo 2^acc_bits.
    # int64 as recorded (cluster_int_gemm now returns int32 for acc_bits <= 32; the values are the same)
    isum = refsim.cluster_int_gemm(qa, za, qw, zw, cluster, **acc).astype(np.int64)
    raw = refsim.cluster_int_gemm(qa, 0, qw, 0, cluster, **acc).astype(np.int64)
    onehot = (cluster[None, :] == np.arange(c_count)[:, None]).astype(np.int64)  # (C, K)
    count = onehot.sum(axis=1)
    a_sum = onehot @ qa.T.astype(np.int64)  # (C, M): small sums of codes, exact in int64
    w_sum = onehot @ qw.astype(np.int64)  # (C, N)
    y = refsim.float_epilogue(isum, sa.astype(np.float32), sw)
    acc_bits = act.acc_bits
    return [
        stage("a_scale", sa, doc="activation scale per cluster (C,)"),
        stage("a_zero", za, word_bits=32, signed=True, doc="activation zero point per cluster, int32 (C,)"),
        stage("a_codes", qa.astype(np.int8), word_bits=bits, signed=True, doc="activation codes (M, K)"),
        stage("w_scale", sw, doc="weight scale per output channel (N,)"),
        stage("w_zero", zw, word_bits=32, signed=True, doc="weight zero point per output channel, int32 (N,)"),
        stage("w_codes", qw.astype(np.uint8), word_bits=bits, signed=False, doc="weight codes (K, N), unsigned"),
        _packed_stage(qw, cfg["w_layout"], signed=False, axis=0, name="w_packed"),
        stage("cluster_size", count, word_bits=32, signed=True, doc="channels in each cluster (C,)"),
        stage("a_sum", a_sum, word_bits=32, signed=True, doc="sum of activation codes per cluster and row (C, M)"),
        stage("w_sum", w_sum, word_bits=32, signed=True, doc="sum of weight codes per cluster and column (C, N)"),
        stage("isum_raw", raw, word_bits=acc_bits, signed=True,
              doc="per-cluster sum of raw code products qa*qw, accumulator rule of specs.act (C, M, N)"),
        stage("isum", isum, word_bits=acc_bits, signed=True,
              doc="per-cluster zero-point-corrected sum of (qa - za)(qw - zw) (C, M, N)"),
        stage("y", y, doc="float32 epilogue: acc += (f32(isum[c]) * a_scale[c]) * w_scale[n], c ascending (M, N)"),
    ]


def _gemm_preset(bits):
    return Preset(
        name=f"gemm_w{bits}a{bits}",
        summary=f"int GEMM W{bits}A{bits}: RPTQ per-cluster activations x GPTQ per-channel weights, "
        "zero-point correction, float32 epilogue",
        specs={"act": refsim.preset("rptq"), "weight": refsim.preset("gptq")},
        shape_names=("M", "K", "N"),
        default_shape=(8, 64, 8),
        config={"bits": bits, "clusters": 2 if bits == 3 else 4,
                "w_layout": "int4_word32" if bits == 4 else "int3_gptq"},
        inputs=_gemm_inputs,
        derive=_gemm_derive,
        exhaustive_shape=lambda cfg: (1 << cfg["bits"], cfg["clusters"] << cfg["bits"], 1 << cfg["bits"]),
        notes=["level 2: every (activation code, weight code) pair meets at every k"],
    )


# ---------------------------------------------------------------- requantization

_EXHAUSTIVE_ACC_BITS = 13


def _requant_inputs(rng, level, shape, cfg, specs):
    imin, imax = -(1 << 31), (1 << 31) - 1
    if level == 2:
        acc = np.repeat(np.arange(-(1 << (_EXHAUSTIVE_ACC_BITS - 1)), 1 << (_EXHAUSTIVE_ACC_BITS - 1))[:, None], 8, 1)
        mult = np.array([0.5, 0.25, 0.125, 2.0**-4, 0.75, 0.3, 0.1, 0.999], dtype=np.float64)
    else:
        m, n = shape
        if level == 0:
            mag = np.ldexp(1.0, rng.integers(0, 24, size=(m, n)))
            acc = np.clip(np.rint(rng.standard_normal((m, n)) * mag), imin, imax).astype(np.int64)
            # multipliers in [2^-17, 1), built exactly (np.exp2 of a float differs between CPUs)
            mult = np.ldexp(0.5 + 0.499 * rng.random(n), -rng.integers(0, 16, size=n))
        else:
            e = np.arange(n) % 8 + 1
            mult = np.ldexp(1.0, -e)
            acc = np.empty((m, n), dtype=np.int64)
            pats = int_patterns(32, True)
            for j in range(n):  # every tie (2i + 1) * 2^(e - 1) near 0, then the 32-bit patterns
                i = np.arange(-8, 8)
                ties = (2 * i + 1) << (int(e[j]) - 1)
                acc[:, j] = cycle_fill(np.concatenate([ties, ties + 1, ties - 1, pats]), (1, m), stride=1)[0]
    return [
        stage("acc", acc.astype(np.int32), role="input", word_bits=32, signed=True, doc="int32 accumulators (M, N)"),
        stage("multiplier", mult, role="input", doc="real multiplier per output channel, float64 (N,)"),
        stage("out_zero", np.array([cfg["out_zero"]], np.int32), role="input", word_bits=32, signed=True,
              doc="output zero point (1,)"),
    ]


def _requant_derive(a, specs, cfg):
    spec, bits = specs["out"], cfg["bits"]
    single = spec.requant is refsim.Requant.SINGLE_ROUNDING
    pairs = [refsim.quantize_multiplier(float(mv), single_rounding=single) for mv in a["multiplier"]]
    qm = np.array([p[0] for p in pairs], dtype=np.int32)
    sh = np.array([p[1] for p in pairs], dtype=np.int8)
    out = refsim.requantize(a["acc"], a["multiplier"], zero_point=int(a["out_zero"][0]), bits=bits, spec=spec)
    return [
        stage("qmult", qm, word_bits=32, signed=True, doc="quantized multiplier Q (int32, Q31) per channel (N,)"),
        stage("shift", sh, word_bits=8, signed=True, doc="exponent e per channel: M = Q * 2^(e - 31) (N,)"),
        stage("out_codes", out.astype(np.int8), word_bits=bits, signed=spec.signed,
              doc="output codes sat(MultiplyByQuantizedMultiplier(acc, Q, e) + out_zero) (M, N)"),
    ]


def _requant_preset():
    return Preset(
        name="requant",
        summary="requantize int32 accumulators to int8: gemmlowp/TFLite fixed point, double rounding",
        specs={"out": refsim.preset("tflite")},
        shape_names=("M", "N"),
        default_shape=(64, 8),
        config={"bits": 8, "out_zero": -3},
        inputs=_requant_inputs,
        derive=_requant_derive,
        exhaustive_shape=lambda cfg: (1 << _EXHAUSTIVE_ACC_BITS, 8),
        notes=[f"level 2: every accumulator in [-2^{_EXHAUSTIVE_ACC_BITS - 1}, 2^{_EXHAUSTIVE_ACC_BITS - 1}) "
               "through 8 multipliers"],
    )


# ---------------------------------------------------------------- SDR (QRazor)

def _bitlen_values(limit_bits):
    """Every v with bit_length(|v|) <= limit_bits, ascending."""
    top = (1 << limit_bits) - 1
    return np.arange(-top, top + 1)


def _sdr_pattern_groups(base_bits, g, keep):
    """Level 1 groups: per leading-one position L, the overflow boundary 2^L - 1, every rounding
    tie (2j + 1) * 2^(f - 1) of the group's shift f, walking ones, alternating bits; plus the
    all-zero group and the paper's worked examples."""
    groups = [np.zeros(g, dtype=np.int64)]
    for L in range(1, base_bits):
        f = max(0, L - keep)
        vals = [(1 << L) - 1, -((1 << L) - 1), 1 << (L - 1)]
        if f > 0:
            ties = [(2 * j + 1) << (f - 1) for j in range(1 << (keep + 1))]
            vals += [t * (-1) ** j for j, t in enumerate(ties) if t < (1 << L)]
        vals += [1 << i for i in range(L)]
        alt = sum(1 << i for i in range(0, L, 2))
        vals += [alt, -(((1 << L) - 1) ^ alt)]
        vals = [v for v in vals if abs(v) < (1 << L)]
        for start in range(0, len(vals), g):
            chunk = vals[start:start + g]
            grp = np.zeros(g, dtype=np.int64)
            grp[:len(chunk)] = chunk
            grp[len(chunk):] = 0
            if not np.any(np.abs(grp) >= 1 << (L - 1)):
                grp[-1] = 1 << (L - 1)  # keep the group's leading one at L
            groups.append(grp)
    examples = [[1004, 180, -238, 284], [-108, 148, 226, 28], [-1350]] if base_bits == 16 else [[-23]]
    for ex in examples:
        grp = np.zeros(g, dtype=np.int64)
        grp[:len(ex)] = ex
        groups.append(grp)
    return np.stack(groups)


def _sdr_exhaustive_groups(base_bits, g):
    """Level 2 groups: for each leading-one position L (the group context that sets the flag),
    every value v with |v| < 2^L, g - 1 per group beside a leader 2^(L - 1)."""
    groups = [np.zeros(g, dtype=np.int64)]
    for L in range(1, base_bits):
        vals = _bitlen_values(L)
        n = -(-vals.size // (g - 1))
        body = np.zeros(n * (g - 1), dtype=np.int64)
        body[:vals.size] = vals
        grp = np.concatenate([np.full((n, 1), 1 << (L - 1)), body.reshape(n, g - 1)], axis=1)
        groups.append(grp)
    return np.concatenate([np.atleast_2d(x) for x in groups])


def _sdr_base_random(rng, shape, base_bits, g):
    r, d = shape
    top = (1 << (base_bits - 1)) - 1
    groups = -(-d // g)
    mag_bits = rng.integers(0, base_bits, size=(r, groups))  # each group its own range: flags vary
    lim = np.repeat((1 << mag_bits) - 1, g, axis=1)[:, :d]
    x = np.rint(rng.standard_normal((r, d)) * (lim / 2.0))
    return np.clip(x, -lim, lim).clip(-top, top).astype(np.int64)


def _int_dtype(bits):
    return np.int8 if bits <= 8 else np.int16


def _sdr_inputs(rng, level, shape, cfg, specs):
    b, g, keep = cfg["base_bits"], cfg["group_size"], cfg["keep"]
    if level == 0:
        x = _sdr_base_random(rng, shape, b, g)
    elif level == 1:
        x = _sdr_pattern_groups(b, g, keep)
    else:
        x = _sdr_exhaustive_groups(b, g)
    return [stage("base_int", x.astype(_int_dtype(b)), role="input", word_bits=b, signed=True,
                  doc=f"base-precision int{b} values (R, D), symmetric range, groups of {g} along D")]


def _sdr_encode_stages(x, spec, cfg, prefix="", axis=-1):
    b, g, keep = cfg["base_bits"], cfg["group_size"], cfg["keep"]
    codes, flags = refsim.sdr_encode(x, group_size=g, base_bits=b, keep=keep, axis=axis, spec=spec)
    dec = refsim.sdr_decode(codes, flags, group_size=g, axis=axis)
    return codes, flags, [
        stage(f"{prefix}sdr_codes", codes, word_bits=keep + 1, signed=True, layout="sign_magnitude",
              doc=f"SDR codes, {keep + 1}-bit sign-magnitude words (bit {keep} = sign)"),
        stage(f"{prefix}sdr_flags", flags, word_bits=4, signed=False, doc="SDR flag (shift) of each group"),
        stage(f"{prefix}sdr_decoded", dec.astype(_int_dtype(b)), word_bits=b, signed=True,
              doc="decoded value code << flag"),
    ]


def _sdr_derive(a, specs, cfg):
    codes, flags, stages = _sdr_encode_stages(a["base_int"], specs["sdr"], cfg)
    if cfg["keep"] == 3:
        stages.append(_packed_stage(codes, "sdr_code4", signed=True, name="sdr_codes_packed"))
        stages.append(_packed_stage(flags, "sdr_flags4", signed=False, name="sdr_flags_packed"))
    return stages


def _sdr_preset(base_bits, g):
    what = "activations" if base_bits == 16 else "weights"
    return Preset(
        name=f"sdr_{'a16' if base_bits == 16 else 'w8'}_g{g}",
        summary=f"SDR encode int{base_bits} {what} in groups of {g}: 4-bit sign-magnitude codes and 4-bit flags",
        specs={"sdr": refsim.preset("qrazor")},
        shape_names=("R", "D"),
        default_shape=(8, 4 * g),
        config={"base_bits": base_bits, "group_size": g, "keep": 3},
        inputs=_sdr_inputs,
        derive=_sdr_derive,
        exhaustive_shape=lambda cfg: tuple(_sdr_exhaustive_groups(cfg["base_bits"], cfg["group_size"]).shape),
        pattern_shape=lambda cfg: tuple(_sdr_pattern_groups(cfg["base_bits"], cfg["group_size"], cfg["keep"]).shape),
        notes=["level 1: one group per row (patterns per leading-one position, ties, overflow boundary, "
               "the paper's examples)",
               "level 2: every value in every group context (leading-one position), one group per row"],
    )


def _sdr_gemm_inputs(rng, level, shape, cfg, specs):
    g = cfg["group_size"]
    m, k, n = shape
    if k % g:
        raise ValueError(f"K={k} is not allowed for preset sdr_gemm (group {g}); allowed: a multiple of {g}")
    if level == 0:
        a = _sdr_base_random(rng, (m, k), 16, g)
        w = _sdr_base_random(rng, (n, k), 8, g).T
    else:
        pa = _sdr_pattern_groups(16, g, cfg["keep"])
        pw = _sdr_pattern_groups(8, g, cfg["keep"])
        a = cycle_fill(np.arange(pa.shape[0]), (m, k // g), stride=1)
        w = cycle_fill(np.arange(pw.shape[0]), (n, k // g), stride=3)
        a = pa[a].reshape(m, k)
        w = pw[w].reshape(n, k).T
    return [
        stage("a_base_int", a.astype(np.int16), role="input", word_bits=16, signed=True,
              doc="int16 activations (M, K), groups of g along K"),
        stage("w_base_int", np.ascontiguousarray(w).astype(np.int8), role="input", word_bits=8, signed=True,
              doc="int8 weights (K, N), groups of g along K"),
    ]


def _sdr_gemm_derive(a, specs, cfg):
    spec, g = specs["sdr"], cfg["group_size"]
    ac, af, a_st = _sdr_encode_stages(a["a_base_int"], spec, dict(cfg, base_bits=16), prefix="a_", axis=1)
    wc, wf, w_st = _sdr_encode_stages(a["w_base_int"], spec, dict(cfg, base_bits=8), prefix="w_", axis=0)
    groups = ac.shape[1] // g
    # Per group j: the small sum of code products (the group adder) and its shift f_a + f_w.
    wide = spec.replace(acc_bits=64, acc_overflow="wrap")  # the group adder: exact
    gsum = np.stack([refsim.int_gemm(ac[:, j * g:(j + 1) * g], wc[j * g:(j + 1) * g], spec=wide)
                     for j in range(groups)], axis=-1)
    gshift = af.astype(np.int64)[:, None, :] + wf.astype(np.int64).T[None, :, :]
    acc = refsim.sdr_gemm(ac, af, wc, wf, group_size=g, spec=spec).astype(np.int64)  # int64 as recorded
    gs_bits = max(2, int(np.ceil(np.log2(g * 49 + 1))) + 1)
    return a_st + w_st + [
        stage("group_sum", gsum, word_bits=gs_bits, signed=True,
              doc="per output and group j: sum of code products over the group (M, N, G)"),
        stage("group_shift", gshift.astype(np.uint8), word_bits=5, signed=False,
              doc="per output and group j: f_a[m, j] + f_w[j, n] (M, N, G)"),
        stage("acc", acc, word_bits=spec.acc_bits, signed=True,
              doc="sum over groups j ascending of group_sum << group_shift, accumulator rule of specs.sdr (M, N)"),
    ]


def _sdr_gemm_preset(g):
    return Preset(
        name=f"sdr_gemm_g{g}",
        summary=f"SDR decompression-free GEMM: int16 activations x int8 weights razored in groups of {g} along K",
        specs={"sdr": refsim.preset("qrazor")},
        shape_names=("M", "K", "N"),
        default_shape=(4, 4 * g, 4),
        config={"group_size": g, "keep": 3},
        inputs=_sdr_gemm_inputs,
        derive=_sdr_gemm_derive,
        exhaustive_shape=None,
        levels=(0, 1),
        notes=["level 1: the SDR pattern groups of both operands, cycled so that they meet"],
    )


# ---------------------------------------------------------------- a whole OPT decoder block (RPTQ)



def _param_stage_name(key: str) -> str:
    return "param_" + key.replace(".", "_").lower()


def _block_inputs(rng, level, shape, cfg, specs):
    """A random OPT layer, calibrated on its own float run, reordered (k-means, recorded), RTN weights.

    Everything downstream depends only on the recorded arrays (permutations, cluster ids,
    calibration ranges, weight codes), which are input stages of the bundle.
    """
    from refsim.rptq.synthetic import calibrated_block, random_opt_layer

    t, hidden, ffn = shape
    heads = cfg["heads"]
    if hidden % heads:
        raise ValueError(f"hidden={hidden} is not allowed with heads={heads}; allowed: a multiple of {heads}")
    layer = random_opt_layer(rng, hidden, ffn)
    calib = (rng.standard_normal((4 * t, hidden)) * 2).astype(np.float32)
    block, _, _ = calibrated_block(layer, calib, heads=heads, n_clusters=cfg["clusters"],
                                   head_clusters=cfg["head_clusters"], wbits=cfg["wbits"], seed=0)
    arrays = block.arrays
    x = (rng.standard_normal((t, hidden)) * 2).astype(np.float32)
    out = [stage("x", x, role="input", doc="the block input (T, hidden), float32 residual stream")]
    for key in sorted(arrays):
        a = arrays[key]
        if a.dtype.kind == "f":
            out.append(stage(_param_stage_name(key), a.astype(np.float32), role="input", doc=f"block array {key}"))
        elif key.endswith(".codes"):
            out.append(stage(_param_stage_name(key), a.astype(np.uint8), role="input", word_bits=cfg["wbits"],
                             signed=False, doc=f"block array {key}: GPTQ-form weight codes (out, in), unsigned"))
        else:
            signed = key.endswith(".zero")
            out.append(stage(_param_stage_name(key), a.astype(np.int32), role="input", word_bits=32, signed=signed,
                             doc=f"block array {key}"))
    return out


def _block_code_bits(name, cfg):
    abits, kvbits = cfg["abits"], cfg["kvbits"]
    return {"ln1_codes": max(8, abits), "ln2_codes": max(8, abits), "q_codes": abits, "attn_codes": abits,
            "fc2_in_codes": abits, "k_codes": kvbits, "v_codes": kvbits, "probs_codes": 8}[name]


def _block_derive(a, specs, cfg):
    from refsim.rptq.block import QuantizedOPTBlock, opt_block

    act = specs["act"]
    keys = {_param_stage_name(k): k for k in _block_keys()}
    arrays = {keys[n]: v for n, v in a.items() if n in keys}
    for r in ("R1", "R2", "R3", "R4", "R5"):
        for p in ("perm", "ids", "sizes"):
            arrays[f"{r}.{p}"] = arrays[f"{r}.{p}"].astype(np.int64)
    hidden = int(a["x"].shape[1])
    meta = {"hidden": hidden, "heads": cfg["heads"], "ffn": int(arrays["fc1.bias"].shape[0]), "eps": 1e-5,
            "wbits": cfg["wbits"], "layout": "physical"}
    st = opt_block(QuantizedOPTBlock(arrays, meta), a["x"],
                   config={"wbits": cfg["wbits"], "abits": cfg["abits"], "kvbits": cfg["kvbits"]},
                   acc_bits=act.acc_bits, overflow=act.acc_overflow.value)
    from refsim.rptq.block import STAGES

    out = []
    for name in STAGES:
        if name == "x" or name not in st:
            continue
        v = st[name]
        if name.endswith("_acc"):
            out.append(stage(name, v.astype(np.int64), word_bits=act.acc_bits, signed=True,
                             doc="per-cluster integer sums with zero-point correction (refsim.rptq.block)"))
        elif name.endswith("_codes"):
            signed = name != "probs_codes"
            out.append(stage(name, v.astype(np.int8 if signed else np.uint8), word_bits=_block_code_bits(name, cfg),
                             signed=signed, doc="activation codes (RPTQ per-cluster, physical order)"))
        else:
            out.append(stage(name, np.asarray(v, np.float32), doc="float32 stage (refsim.rptq.block)"))
    return out


def _block_keys():
    keys = ["ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias"]
    for lin in ("q", "k", "v", "out", "fc1", "fc2"):
        keys += [f"{lin}.weight", f"{lin}.bias", f"{lin}.codes", f"{lin}.scale", f"{lin}.zero"]
    for r in ("R1", "R2", "R3", "R4", "R5"):
        keys += [f"{r}.perm", f"{r}.ids", f"{r}.sizes"]
    from refsim.rptq.synthetic import CALIBRATION_STAGES

    for p, _ in CALIBRATION_STAGES:
        keys += [f"stat.{p}.min", f"stat.{p}.max"]
    return keys


def _block_preset():
    return Preset(
        name="opt_block_w4a4",
        summary="a whole OPT decoder block, RPTQ W4A4 integer dataflow: every stage (LayerNorm codes, "
        "per-cluster q/k/v/attention/out/fc1/fc2 sums, softmax codes, outputs)",
        specs={"act": refsim.preset("rptq")},
        shape_names=("T", "hidden", "ffn"),
        default_shape=(8, 32, 64),
        config={"wbits": 4, "abits": 4, "kvbits": 4, "heads": 2, "clusters": 4, "head_clusters": 2},
        inputs=_block_inputs,
        derive=_block_derive,
        levels=(0,),
        portable=False,
        size_degree=(2, 2, 1),  # T x T attention scores; hidden x hidden weights
        notes=["level 0 only: a random layer calibrated on a random sequence; the reorders (k-means) and weight "
               "codes (round to nearest, GPTQ form) are recorded as param_* input stages",
               "float stages (LayerNorm, softmax) follow refsim.rptq.block: correctly rounded sums and a correctly "
               "rounded float32 exp, so every derived stage is the same on any machine given the input stages; "
               "generating the inputs (a float calibration run through BLAS, then k-means) may differ in the last "
               "bit between BLAS builds, so a regenerated bundle is byte-identical on the same platform stack only"],
    )


# ---------------------------------------------------------------- registry

def _build():
    presets = [_gemm_preset(4), _gemm_preset(3), _quant_preset(4), _quant_preset(3)]
    presets += [_pack_preset(name) for name in PACK_LAYOUTS]
    presets += [_sdr_preset(16, 16), _sdr_preset(16, 32), _sdr_preset(8, 16), _sdr_preset(8, 32)]
    presets.append(_sdr_gemm_preset(16))
    presets.append(_requant_preset())
    presets.append(_block_preset())
    return {p.name: p for p in presets}


PRESETS: dict[str, Preset] = _build()
DEFAULT_PRESET = "gemm_w4a4"


def get_preset(name) -> Preset:
    if name is None:
        name = DEFAULT_PRESET
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"preset={name!r} is not known; allowed: {', '.join(PRESETS)}") from None
