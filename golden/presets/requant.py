"""Preset family requant: int32 accumulators to int8 codes, gemmlowp / TFLite fixed point."""

from __future__ import annotations

import numpy as np

import refsim
from golden.presets import ops
from golden.presets.base import Inert, Preset, SpecUse, stage
from golden.presets.registry import register
from golden.stimulus import cycle_fill, int_patterns

LIST_ORDER = 60  # where `refsim golden --list` shows this family (golden.presets discovers it)

EXHAUSTIVE_ACC_BITS = 13


def tie_accumulators(e: int) -> np.ndarray:
    """Every tie (2i + 1) * 2^(e - 1) near 0 of a multiplier 2^-e, its two neighbours, then the 32-bit patterns."""
    i = np.arange(-8, 8)
    ties = (2 * i + 1) << (int(e) - 1)
    return np.concatenate([ties, ties + 1, ties - 1, int_patterns(32, True)])


def _inputs(rng, level, shape, cfg, specs):
    imin, imax = -(1 << 31), (1 << 31) - 1
    if level == 2:
        half = 1 << (EXHAUSTIVE_ACC_BITS - 1)
        acc = np.repeat(np.arange(-half, half)[:, None], 8, 1)
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
            for j in range(n):
                acc[:, j] = cycle_fill(tie_accumulators(int(e[j])), (1, m), stride=1)[0]
    return [
        stage("acc", acc.astype(np.int32), role="input", word_bits=32, signed=True, doc="int32 accumulators (M, N)"),
        stage("multiplier", mult, role="input", doc="real multiplier per output channel, float64 (N,)"),
        stage("out_zero", np.array([cfg["out_zero"]], np.int32), role="input", word_bits=32, signed=True,
              doc="output zero point (1,)"),
    ]


def _derive(a, specs, cfg):
    spec, bits = specs["out"], cfg["bits"]
    pairs = [ops.quantize_multiplier(mv, spec=spec) for mv in a["multiplier"]]
    qm = np.array([p[0] for p in pairs], dtype=np.int32)
    sh = np.array([p[1] for p in pairs], dtype=np.int8)
    out = ops.requantize(a["acc"], a["multiplier"], zero_point=int(a["out_zero"][0]), bits=bits, spec=spec)
    return [
        stage("qmult", qm, word_bits=32, signed=True, spec="out",
              doc="quantized multiplier Q (int32, Q31) per channel (N,)"),
        stage("shift", sh, word_bits=8, signed=True, spec="out",
              doc="exponent e per channel: M = Q * 2^(e - 31) (N,)"),
        stage("out_codes", out.astype(np.int8), word_bits=bits, signed=spec.signed, spec="out",
              doc="output codes sat(MultiplyByQuantizedMultiplier(acc, Q, e) + out_zero) (M, N)"),
    ]


def requant_preset():
    return Preset(
        name="requant",
        summary="requantize int32 accumulators to int8: gemmlowp/TFLite fixed point, double rounding",
        specs={"out": refsim.preset("tflite")},
        spec_use={"out": SpecUse(
            ("requant", "rounding", "signed", "narrow", "saturation"),
            inert={"rounding": Inert("the fixed-point requantization rounds by gemmlowp's own rules (round half "
                                     "away in RoundingDivideByPOT); spec.rounding applies only to requant='float'",
                                     {"requant": "float"})})},
        shape_names=("M", "N"),
        default_shape=(64, 8),
        config={"bits": 8, "out_zero": -3},
        inputs=_inputs,
        derive=_derive,
        exhaustive_shape=lambda cfg: (1 << EXHAUSTIVE_ACC_BITS, 8),
        notes=[f"level 2: every accumulator in [-2^{EXHAUSTIVE_ACC_BITS - 1}, 2^{EXHAUSTIVE_ACC_BITS - 1}) "
               "through 8 multipliers"],
    )


register(requant_preset())
