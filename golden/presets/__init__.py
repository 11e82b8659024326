"""Bundle presets, one module per family, each registering its presets (golden.presets.registry).

    base        Stage, stage(), Preset, SpecUse (the numerics metadata), helpers the families share
    ops         every call into refsim's numerics primitives, each taking the role's spec
    registry    PRESETS, get_preset, DEFAULT_PRESET
    gemm, quantize, pack, sdr, sdr_gemm, requant, block    the families

A new preset is one family module in this package (found here by itself: every module other than
base, ops and registry is a family; its ``LIST_ORDER`` places it in ``refsim golden --list``), or a
new call of an existing family's constructor, plus its tests and its section of docs/golden.md.
"""

import importlib
import pkgutil

from golden.presets.base import FLOAT_LAYOUTS, Inert, Preset, SpecUse, Stage, contiguous_clusters, stage
from golden.presets.registry import DEFAULT_PRESET, PRESETS, get_preset

_SUPPORT = ("base", "ops", "registry")


def _families() -> dict:
    """Every family module of this package, imported (which registers its presets), in LIST_ORDER."""
    mods = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
            if m.name not in _SUPPORT and not m.name.startswith("_")]
    missing = [m.__name__ for m in mods if not isinstance(getattr(m, "LIST_ORDER", None), int)]
    if missing:
        raise ImportError(f"golden preset families {missing} have no integer LIST_ORDER")
    return {m.__name__.rsplit(".", 1)[1]: m for m in sorted(mods, key=lambda m: (m.LIST_ORDER, m.__name__))}


def _in_list_order(modules: dict) -> None:
    """Reorder the registry in place by family LIST_ORDER (modules import alphabetically), keeping each family's
    own registration order."""
    rank = {name: i for i, name in enumerate(modules)}
    family = {name: p.derive.__module__.rsplit(".", 1)[1] for name, p in PRESETS.items()}
    ordered = sorted(PRESETS, key=lambda name: rank.get(family[name], len(rank)))
    items = [(name, PRESETS[name]) for name in ordered]
    PRESETS.clear()
    PRESETS.update(items)


# Importing the families registers their presets; the order is `refsim golden --list`'s.
_MODULES = _families()
FAMILIES = tuple(_MODULES)
_in_list_order(_MODULES)
PACK_LAYOUTS = _MODULES["pack"].PACK_LAYOUTS

__all__ = ["DEFAULT_PRESET", "FAMILIES", "FLOAT_LAYOUTS", "Inert", "PACK_LAYOUTS", "PRESETS", "Preset", "SpecUse",
           "Stage", "contiguous_clusters", "get_preset", "stage"]
