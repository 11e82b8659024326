"""Preset family sdr_gemm_gG: QRazor's decompression-free GEMM on SDR codes of int16 x int8."""

from __future__ import annotations

import numpy as np

import refsim
from golden.presets import ops
from golden.presets.base import ACCUMULATOR_FIELDS, Preset, SpecUse, no_overflow_at, stage
from golden.presets.registry import register
from golden.presets.sdr import SDR_FIELDS, base_random, encode_stages, pattern_groups
from golden.stimulus import cycle_fill

LIST_ORDER = 50  # where `refsim golden --list` shows this family (golden.presets discovers it)


def _inputs(rng, level, shape, cfg, specs):
    g = cfg["group_size"]
    m, k, n = shape
    if k % g:
        raise ValueError(f"K={k} is not allowed for preset sdr_gemm (group {g}); allowed: a multiple of {g}")
    if level == 0:
        a = base_random(rng, (m, k), 16, g)
        w = base_random(rng, (n, k), 8, g).T
    else:
        pa = pattern_groups(16, g, cfg["keep"])
        pw = pattern_groups(8, g, cfg["keep"])
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


def _derive(a, specs, cfg):
    spec, g = specs["sdr"], cfg["group_size"]
    ac, af, a_st = encode_stages(a["a_base_int"], spec, dict(cfg, base_bits=16), prefix="a_", axis=1)
    wc, wf, w_st = encode_stages(a["w_base_int"], spec, dict(cfg, base_bits=8), prefix="w_", axis=0)
    groups = ac.shape[1] // g
    # Per group j: the small sum of code products (the group adder) and its shift f_a + f_w.
    gsum = np.stack([ops.exact_int_gemm(ac[:, j * g:(j + 1) * g], wc[j * g:(j + 1) * g]) for j in range(groups)],
                    axis=-1)
    gshift = af.astype(np.int64)[:, None, :] + wf.astype(np.int64).T[None, :, :]
    acc = ops.sdr_gemm(ac, af, wc, wf, group_size=g, spec=spec)
    gs_bits = max(2, int(np.ceil(np.log2(g * 49 + 1))) + 1)
    return a_st + w_st + [
        stage("group_sum", gsum, word_bits=gs_bits, signed=True,
              doc="per output and group j: sum of code products over the group (M, N, G)"),
        stage("group_shift", gshift.astype(np.uint8), word_bits=5, signed=False,
              doc="per output and group j: f_a[m, j] + f_w[j, n] (M, N, G)"),
        stage("acc", acc, word_bits=spec.acc_bits, signed=True, spec="sdr",
              doc="sum over groups j ascending of group_sum << group_shift, accumulator rule of specs.sdr (M, N)"),
    ]


def sdr_gemm_preset(g):
    return Preset(
        name=f"sdr_gemm_g{g}",
        summary=f"SDR decompression-free GEMM: int16 activations x int8 weights razored in groups of {g} along K",
        specs={"sdr": refsim.preset("qrazor")},
        spec_use={"sdr": SpecUse(SDR_FIELDS + ACCUMULATOR_FIELDS, inert={"acc_overflow": no_overflow_at(32)})},
        shape_names=("M", "K", "N"),
        default_shape=(4, 4 * g, 4),
        config={"group_size": g, "keep": 3},
        inputs=_inputs,
        derive=_derive,
        exhaustive_shape=None,
        levels=(0, 1),
        notes=["level 1: the SDR pattern groups of both operands, cycled so that they meet"],
    )


register(sdr_gemm_preset(16))
