"""Preset family gemm_wBaB: RPTQ per-cluster activations x GPTQ per-channel weights, exact int GEMM
with zero-point correction, float32 epilogue."""

from __future__ import annotations

import numpy as np

import refsim
from golden.presets import ops
from golden.presets.base import (
    ACCUMULATOR_FIELDS,
    QUANTIZE_FIELDS,
    Inert,
    Preset,
    SpecUse,
    cluster_minmax,
    contiguous_clusters,
    no_overflow_at,
    packed_stage,
    pattern_zero_points,
    pow2_cluster_range,
    stage,
    zero_point_after_rounding_inert,
)
from golden.presets.registry import register
from golden.stimulus import as_code, code_limits, cycle_fill, int_patterns

LIST_ORDER = 10  # where `refsim golden --list` shows this family (golden.presets discovers it)


def _inputs(rng, level, shape, cfg, specs):
    bits, c_count = cfg["bits"], cfg["clusters"]
    adt = ops.compute_dtype(specs["act"])
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
        xmin, xmax = cluster_minmax(x, cluster, c_count, adt)
        wmin, wmax = w.min(axis=0), w.max(axis=0)
    else:
        # Codes first, then floats that quantize back to exactly those codes: power-of-two
        # scales make x = (q - z) * s exact, so the GEMM sees the patterns unchanged.
        maxq = (1 << bits) - 1
        if level == 1:
            qa, qw = pattern_operands(bits, m, k, n)
        else:  # every (activation code, weight code) pair meets at every k
            qa = as_code(np.arange(m)[:, None] + np.arange(k)[None, :], bits, True)
            qw = (np.arange(n)[None, :] + 3 * np.arange(k)[:, None]) % (1 << bits)
        za = pattern_zero_points(bits, c_count)
        sa = np.ldexp(1.0, -(np.arange(c_count) % 4 + 2))
        zw = (np.arange(n) * 5) % (maxq + 1)
        sw = np.ldexp(1.0, -(np.arange(n) % 4 + 3))
        x = ((qa - za[cluster]) * sa[cluster]).astype(adt)
        w = ((qw - zw) * sw).astype(np.float32)
        rng_a = [pow2_cluster_range(bits, za[c], sa[c], adt) for c in range(c_count)]
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


def pattern_operands(bits, m, k, n):
    """Level 1 codes: signed activation patterns (M, K) and unsigned weight patterns (K, N), cycled
    so that they meet, with the extreme rows / columns that give the largest accumulator magnitudes."""
    alo, ahi = code_limits(bits, True)
    maxq = (1 << bits) - 1
    qa = cycle_fill(int_patterns(bits, True), (m, k), stride=1)
    qw = cycle_fill(int_patterns(bits, False), (n, k), stride=3).T
    qa[0, :], qw[:, 0] = alo, maxq
    if m > 1 and n > 1:
        qa[1, :], qw[:, 1] = ahi, 0
    return qa, qw


def _derive(a, specs, cfg):
    act, wsp, bits = specs["act"], specs["weight"], cfg["bits"]
    cluster = a["a_cluster"].astype(np.int64)
    c_count = int(a["a_xmin"].shape[0])
    sa, za = ops.rptq_params(a["a_xmin"], a["a_xmax"], bits=bits, spec=act)
    qa = ops.quantize(a["x"], sa, za, bits=bits, axis=1, clusters=cluster, spec=act)
    sw, zw = ops.gptq_params(a["w_min"], a["w_max"], bits=bits, spec=wsp)
    qw = ops.quantize(a["w"], sw, zw, bits=bits, axis=1, spec=wsp)
    # isum is defined directly as sum (qa - za)(qw - zw) per cluster (refsim.cluster_int_gemm);
    # the RTL forms it as raw - zw*a_sum - za*w_sum + count*za*zw, equal modulo 2^acc_bits.
    isum = ops.cluster_int_gemm(qa, za, qw, zw, cluster, spec=act)
    raw = ops.cluster_int_gemm(qa, 0, qw, 0, cluster, spec=act)
    onehot = (cluster[None, :] == np.arange(c_count)[:, None]).astype(np.int64)  # (C, K)
    count = onehot.sum(axis=1)
    a_sum = onehot @ qa.T.astype(np.int64)  # (C, M): small sums of codes, exact in int64
    w_sum = onehot @ qw.astype(np.int64)  # (C, N)
    y = ops.float_epilogue(isum, sa.astype(np.float32), sw)
    acc_bits = act.acc_bits
    return [
        stage("a_scale", sa, spec="act", doc="activation scale per cluster (C,)"),
        stage("a_zero", za, word_bits=32, signed=True, spec="act", doc="activation zero point per cluster, int32 (C,)"),
        stage("a_codes", qa.astype(np.int8), word_bits=bits, signed=act.signed, spec="act",
              doc="activation codes (M, K)"),
        stage("w_scale", sw, doc="weight scale per output channel (N,)"),
        stage("w_zero", zw, word_bits=32, signed=True, doc="weight zero point per output channel, int32 (N,)"),
        stage("w_codes", qw.astype(np.uint8), word_bits=bits, signed=False, spec="weight",
              doc="weight codes (K, N), unsigned"),
        packed_stage(qw, cfg["w_layout"], signed=False, axis=0, name="w_packed"),
        stage("cluster_size", count, word_bits=32, signed=True, doc="channels in each cluster (C,)"),
        stage("a_sum", a_sum, word_bits=32, signed=True, doc="sum of activation codes per cluster and row (C, M)"),
        stage("w_sum", w_sum, word_bits=32, signed=True, doc="sum of weight codes per cluster and column (C, N)"),
        stage("isum_raw", raw, word_bits=acc_bits, signed=True, spec="act",
              doc="per-cluster sum of raw code products qa*qw, accumulator rule of specs.act (C, M, N)"),
        stage("isum", isum, word_bits=acc_bits, signed=True, spec="act",
              doc="per-cluster zero-point-corrected sum of (qa - za)(qw - zw) (C, M, N)"),
        stage("y", y, doc="float32 epilogue: acc += (f32(isum[c]) * a_scale[c]) * w_scale[n], c ascending (M, N)"),
    ]


# The weight role's fields. zero_point_stage is not among them: the GPTQ parameter rule computes in float32
# only (refsim.gptq_params refuses another compute dtype), and for codes of the very range the scale was taken
# from, fl(w / s) + z is exact in float32 (|w / s| < 2^bits, z a small integer), so adding z before or after
# rounding gives the same code for every weight this family can hold (the spec-edit test proves it unused).
WEIGHT_FIELDS = tuple(f for f in QUANTIZE_FIELDS if f != "zero_point_stage")


def _weight_inert(bits) -> dict:
    """The weight spec's fields this level-0 stimulus cannot move, each with a witness that moves it."""
    return {
        "saturation": Inert("the weights are quantized with the very range their scale was taken from, so no code "
                            "leaves [0, 2^bits - 1] under round to nearest; ceil pushes w_max's code past the top: "
                            "the witness", {"rounding": "ceil"}),
    }


def gemm_preset(bits):
    return Preset(
        name=f"gemm_w{bits}a{bits}",
        summary=f"int GEMM W{bits}A{bits}: RPTQ per-cluster activations x GPTQ per-channel weights, "
        "zero-point correction, float32 epilogue",
        specs={"act": refsim.preset("rptq"), "weight": refsim.preset("gptq")},
        spec_use={"act": SpecUse(QUANTIZE_FIELDS + ACCUMULATOR_FIELDS,
                                 inert={"acc_overflow": no_overflow_at(32),
                                        "zero_point_stage": zero_point_after_rounding_inert()}),
                  "weight": SpecUse(WEIGHT_FIELDS, inert=_weight_inert(bits))},
        shape_names=("M", "K", "N"),
        default_shape=(8, 64, 8),
        config={"bits": bits, "clusters": 2 if bits == 3 else 4,
                "w_layout": "int4_word32" if bits == 4 else "int3_gptq"},
        inputs=_inputs,
        derive=_derive,
        exhaustive_shape=lambda cfg: (1 << cfg["bits"], cfg["clusters"] << cfg["bits"], 1 << cfg["bits"]),
        notes=["level 2: every (activation code, weight code) pair meets at every k"],
    )


register(gemm_preset(4), gemm_preset(3))
