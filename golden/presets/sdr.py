"""Preset family sdr_*: QRazor significant-data razoring (SDR) of int16 activations / int8 weights.

The level patterns (pattern_groups, exhaustive_groups, base_random) serve the sdr_gemm family
and golden.strategies too.
"""

from __future__ import annotations

import numpy as np

import refsim
from golden.presets import ops
from golden.presets.base import Preset, SpecUse, int_dtype, packed_stage, stage
from golden.presets.registry import register

LIST_ORDER = 40  # where `refsim golden --list` shows this family (golden.presets discovers it)

# The only field sdr_encode reads: the razoring's rounding. keep and group size are config.
SDR_FIELDS = ("sdr_rounding",)


def bitlen_values(limit_bits):
    """Every v with bit_length(|v|) <= limit_bits, ascending."""
    top = (1 << limit_bits) - 1
    return np.arange(-top, top + 1)


def pattern_values(base_bits, L, keep):
    """Level 1 values of leading-one position L: the overflow boundary 2^L - 1, every rounding tie
    (2j + 1) * 2^(f - 1) of the group's shift f = max(0, L - keep), walking ones, alternating bits."""
    f = max(0, L - keep)
    vals = [(1 << L) - 1, -((1 << L) - 1), 1 << (L - 1)]
    if f > 0:
        ties = [(2 * j + 1) << (f - 1) for j in range(1 << (keep + 1))]
        vals += [t * (-1) ** j for j, t in enumerate(ties) if t < (1 << L)]
    vals += [1 << i for i in range(L)]
    alt = sum(1 << i for i in range(0, L, 2))
    vals += [alt, -(((1 << L) - 1) ^ alt)]
    return [v for v in vals if abs(v) < (1 << L)]


def pattern_groups(base_bits, g, keep):
    """Level 1 groups: per leading-one position L, pattern_values in groups of g (the group's
    leading one kept at L); plus the all-zero group and the paper's worked examples."""
    groups = [np.zeros(g, dtype=np.int64)]
    for L in range(1, base_bits):
        vals = pattern_values(base_bits, L, keep)
        for start in range(0, len(vals), g):
            chunk = vals[start:start + g]
            grp = np.zeros(g, dtype=np.int64)
            grp[:len(chunk)] = chunk
            if not np.any(np.abs(grp) >= 1 << (L - 1)):
                grp[-1] = 1 << (L - 1)  # keep the group's leading one at L
            groups.append(grp)
    examples = [[1004, 180, -238, 284], [-108, 148, 226, 28], [-1350]] if base_bits == 16 else [[-23]]
    for ex in examples:
        grp = np.zeros(g, dtype=np.int64)
        grp[:len(ex)] = ex
        groups.append(grp)
    return np.stack(groups)


def exhaustive_groups(base_bits, g):
    """Level 2 groups: for each leading-one position L (the group context that sets the flag),
    every value v with |v| < 2^L, g - 1 per group beside a leader 2^(L - 1)."""
    groups = [np.zeros(g, dtype=np.int64)]
    for L in range(1, base_bits):
        vals = bitlen_values(L)
        n = -(-vals.size // (g - 1))
        body = np.zeros(n * (g - 1), dtype=np.int64)
        body[:vals.size] = vals
        grp = np.concatenate([np.full((n, 1), 1 << (L - 1)), body.reshape(n, g - 1)], axis=1)
        groups.append(grp)
    return np.concatenate([np.atleast_2d(x) for x in groups])


def base_random(rng, shape, base_bits, g):
    """Level 0: random base-precision ints, each group of g its own magnitude range (so flags vary)."""
    r, d = shape
    top = (1 << (base_bits - 1)) - 1
    groups = -(-d // g)
    mag_bits = rng.integers(0, base_bits, size=(r, groups))
    lim = np.repeat((1 << mag_bits) - 1, g, axis=1)[:, :d]
    x = np.rint(rng.standard_normal((r, d)) * (lim / 2.0))
    return np.clip(x, -lim, lim).clip(-top, top).astype(np.int64)


def _inputs(rng, level, shape, cfg, specs):
    b, g, keep = cfg["base_bits"], cfg["group_size"], cfg["keep"]
    if level == 0:
        x = base_random(rng, shape, b, g)
    elif level == 1:
        x = pattern_groups(b, g, keep)
    else:
        x = exhaustive_groups(b, g)
    return [stage("base_int", x.astype(int_dtype(b)), role="input", word_bits=b, signed=True,
                  doc=f"base-precision int{b} values (R, D), symmetric range, groups of {g} along D")]


def encode_stages(x, spec, cfg, prefix="", axis=-1, role="sdr"):
    """SDR codes, flags and the decoded values of x under ``spec`` (the role's), as stages."""
    b, g, keep = cfg["base_bits"], cfg["group_size"], cfg["keep"]
    codes, flags = ops.sdr_encode(x, group_size=g, base_bits=b, keep=keep, axis=axis, spec=spec)
    dec = ops.sdr_decode(codes, flags, group_size=g, axis=axis)
    return codes, flags, [
        stage(f"{prefix}sdr_codes", codes, word_bits=keep + 1, signed=True, layout="sign_magnitude", spec=role,
              doc=f"SDR codes, {keep + 1}-bit sign-magnitude words (bit {keep} = sign)"),
        stage(f"{prefix}sdr_flags", flags, word_bits=4, signed=False, spec=role, doc="SDR flag (shift) of each group"),
        stage(f"{prefix}sdr_decoded", dec.astype(int_dtype(b)), word_bits=b, signed=True,
              doc="decoded value code << flag"),
    ]


def _derive(a, specs, cfg):
    codes, flags, stages = encode_stages(a["base_int"], specs["sdr"], cfg)
    if cfg["keep"] == 3:
        stages.append(packed_stage(codes, "sdr_code4", signed=True, name="sdr_codes_packed"))
        stages.append(packed_stage(flags, "sdr_flags4", signed=False, name="sdr_flags_packed"))
    return stages


def sdr_preset(base_bits, g):
    what = "activations" if base_bits == 16 else "weights"
    return Preset(
        name=f"sdr_{'a16' if base_bits == 16 else 'w8'}_g{g}",
        summary=f"SDR encode int{base_bits} {what} in groups of {g}: 4-bit sign-magnitude codes and 4-bit flags",
        specs={"sdr": refsim.preset("qrazor")},
        spec_use={"sdr": SpecUse(SDR_FIELDS)},
        shape_names=("R", "D"),
        default_shape=(8, 4 * g),
        config={"base_bits": base_bits, "group_size": g, "keep": 3},
        inputs=_inputs,
        derive=_derive,
        exhaustive_shape=lambda cfg: tuple(exhaustive_groups(cfg["base_bits"], cfg["group_size"]).shape),
        pattern_shape=lambda cfg: tuple(pattern_groups(cfg["base_bits"], cfg["group_size"], cfg["keep"]).shape),
        # int16 level 2 (every value in every group context) is too big for the default suite
        slow_levels=(2,) if base_bits == 16 else (),
        notes=["level 1: one group per row (patterns per leading-one position, ties, overflow boundary, "
               "the paper's examples)",
               "level 2: every value in every group context (leading-one position), one group per row"],
    )


register(sdr_preset(16, 16), sdr_preset(16, 32), sdr_preset(8, 16), sdr_preset(8, 32))
