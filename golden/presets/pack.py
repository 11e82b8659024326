"""Preset family pack_LAYOUT: bit packing of codes in each refsim layout (no numerics spec)."""

from __future__ import annotations

import numpy as np

import refsim
from golden.presets.base import Preset, packed_stage, stage
from golden.presets.registry import register
from golden.stimulus import as_code, code_limits, cycle_fill, int_patterns

LIST_ORDER = 30  # where `refsim golden --list` shows this family (golden.presets discovers it)

PACK_LAYOUTS = ("int4_lo_first", "int4_word32", "int3_stream", "int3_gptq", "int3_planar")


def _inputs(rng, level, shape, cfg, specs):
    bits, signed = cfg["bits"], cfg["signed"]
    lo, hi = code_limits(bits, signed)
    if level == 0:
        codes = rng.integers(lo, hi + 1, size=shape)
    elif level == 1:
        codes = cycle_fill(int_patterns(bits, signed), shape, stride=3)
    else:
        codes = neighbour_pairs(bits, signed)
    return [stage("codes", codes.astype(np.int8), role="input", word_bits=bits, signed=signed,
                  doc="codes (R, N), one row packed at a time")]


def neighbour_pairs(bits, signed) -> np.ndarray:
    """Level 2: every pair of neighbouring codes at every position of a 32-code block (2^(2 bits), 32)."""
    r = np.arange(1 << (2 * bits))[:, None]
    j = np.arange(32)[None, :]
    return as_code(np.where(j % 2 == 0, r >> bits, r) + j, bits, signed)


def _derive(a, specs, cfg):
    return [packed_stage(a["codes"], cfg["layout"], signed=cfg["signed"])]


def pack_preset(layout_name):
    lay = refsim.LAYOUTS[layout_name]
    return Preset(
        name=f"pack_{layout_name}",
        summary=f"pack {lay.bits}-bit codes in layout {layout_name}: {lay.description}",
        specs={},
        shape_names=("R", "N"),
        default_shape=(4, 64),
        config={"layout": layout_name, "bits": lay.bits, "signed": lay.signed},
        inputs=_inputs,
        derive=_derive,
        exhaustive_shape=lambda cfg: (1 << (2 * cfg["bits"]), 32),
        notes=["level 2: every pair of neighbouring codes at every position of a 32-code block"],
    )


register(*(pack_preset(name) for name in PACK_LAYOUTS))
