"""Bundle presets, one module per family, each registering its presets (golden.presets.registry).

    base        Stage, stage(), Preset, SpecUse (the numerics metadata), helpers the families share
    ops         every call into refsim's numerics primitives, each taking the role's spec
    registry    PRESETS, get_preset, DEFAULT_PRESET
    gemm, quantize, pack, sdr, sdr_gemm, requant, block    the families

A new preset is one family module (or a new call of an existing family's constructor) imported
below, plus its tests and its section of docs/golden.md.
"""

import importlib

from golden.presets.base import FLOAT_LAYOUTS, Inert, Preset, SpecUse, Stage, contiguous_clusters, stage
from golden.presets.registry import DEFAULT_PRESET, PRESETS, get_preset

# The family modules, in the order `refsim golden --list` shows them; importing one registers its presets.
FAMILIES = ("gemm", "quantize", "pack", "sdr", "sdr_gemm", "requant", "block")
_MODULES = {family: importlib.import_module(f"golden.presets.{family}") for family in FAMILIES}
PACK_LAYOUTS = _MODULES["pack"].PACK_LAYOUTS

__all__ = ["DEFAULT_PRESET", "FAMILIES", "FLOAT_LAYOUTS", "Inert", "PACK_LAYOUTS", "PRESETS", "Preset", "SpecUse",
           "Stage", "contiguous_clusters", "get_preset", "stage"]
