"""Preset family quant_rptq_intB: RPTQ per-cluster asymmetric quantization of fp16 activations."""

from __future__ import annotations

import numpy as np

import refsim
from golden.presets import ops
from golden.presets.base import (
    QUANTIZE_FIELDS,
    Preset,
    SpecUse,
    cluster_minmax,
    contiguous_clusters,
    pattern_zero_points,
    pow2_cluster_range,
    stage,
    zero_point_after_rounding_inert,
)
from golden.presets.registry import register
from golden.stimulus import all_finite_float16, code_limits, cycle_fill, grid_points

LIST_ORDER = 20  # where `refsim golden --list` shows this family (golden.presets discovers it)


def _inputs(rng, level, shape, cfg, specs):
    bits, c_count = cfg["bits"], cfg["clusters"]
    dt = ops.compute_dtype(specs["act"])
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
        xmin, xmax = cluster_minmax(x, cluster, c_count, dt)
    else:
        za = pattern_zero_points(bits, c_count)
        sa = np.ldexp(1.0, -(np.arange(c_count) % 4 + 2))
        ranges = [pow2_cluster_range(bits, za[c], sa[c], dt) for c in range(c_count)]
        if level == 2 and c_count > 1:  # one range of no special form: scale and zero point rounded in fp16
            ranges[-1] = (np.asarray(-0.3, dt), np.asarray(1.7, dt))
        xmin = np.array([r[0] for r in ranges], dtype=dt)
        xmax = np.array([r[1] for r in ranges], dtype=dt)
    if level == 1:
        lo, hi = code_limits(bits, True)
        x = np.empty((m, k), dtype=dt)
        for c in range(c_count):
            vals = np.concatenate([grid_points(sa[c], lo - za[c] - 2, hi - za[c] + 2, dt), special_values(dt)])
            cols = np.nonzero(cluster == c)[0]
            x[:, cols] = cycle_fill(vals, (cols.size, m), stride=5).T
    return [
        stage("x", x, role="input", doc="activations (M, K), channels already reordered so clusters are contiguous"),
        stage("cluster", cluster, role="input", word_bits=8, signed=False, doc="cluster id of each channel (K,)"),
        stage("xmin", xmin, role="input", doc="calibrated minimum of each cluster (C,)"),
        stage("xmax", xmax, role="input", doc="calibrated maximum of each cluster (C,)"),
    ]


def special_values(dt=np.float16) -> np.ndarray:
    """The float extremes level 1 adds to each cluster's grid: both zeros, the smallest float16
    subnormal, the largest finite float16, each signed."""
    return np.array([0.0, -0.0, 2.0**-24, -(2.0**-24), 65504.0, -65504.0], dtype=dt)


def _derive(a, specs, cfg):
    spec, bits = specs["act"], cfg["bits"]
    s, z = ops.rptq_params(a["xmin"], a["xmax"], bits=bits, spec=spec)
    kw = dict(axis=1, clusters=a["cluster"])
    q = ops.quantize(a["x"], s, z, bits=bits, spec=spec, **kw)
    deq = ops.dequantize(q, s, z, spec=spec, **kw)
    return [
        stage("scale", s, spec="act", doc="per-cluster scale s = clamp((xmax - xmin) / 2^bits, 1e-4, 1e4) (C,)"),
        stage("zero_point", z, word_bits=32, signed=True, spec="act", doc="per-cluster zero point, int32 (C,)"),
        stage("codes", q.astype(np.int8), word_bits=bits, signed=spec.signed, spec="act",
              doc="codes q = clamp(round(x / s) + z) (M, K)"),
        stage("dequant", deq, spec="act", doc="(q - z) * s in the compute dtype (M, K)"),
    ]


def quant_preset(bits):
    return Preset(
        name=f"quant_rptq_int{bits}",
        summary=f"RPTQ per-cluster asymmetric quantization of fp16 activations to int{bits}",
        specs={"act": refsim.preset("rptq")},
        # nonfinite is not used: every level's stimulus is finite (level 2: the finite float16s)
        spec_use={"act": SpecUse(QUANTIZE_FIELDS, inert={"zero_point_stage": zero_point_after_rounding_inert()})},
        shape_names=("M", "K"),
        default_shape=(48, 16),
        config={"bits": bits, "clusters": 4},
        inputs=_inputs,
        derive=_derive,
        exhaustive_shape=lambda cfg: (63488, cfg["clusters"]),
        slow_levels=(2,),  # every float16 through every cluster: 4 MB a bundle
        notes=["level 2: every finite float16 through every cluster's quantizer (one channel per cluster)"],
    )


register(quant_preset(4), quant_preset(3))
