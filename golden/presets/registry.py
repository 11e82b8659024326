"""The preset registry: each family module registers its presets when golden.presets imports it."""

from __future__ import annotations

from golden.presets.base import Preset

PRESETS: dict[str, Preset] = {}
DEFAULT_PRESET = "gemm_w4a4"


def register(*presets: Preset) -> None:
    for p in presets:
        if p.name in PRESETS:
            raise ValueError(f"preset {p.name!r} is registered twice")
        PRESETS[p.name] = p


def get_preset(name) -> Preset:
    if name is None:
        name = DEFAULT_PRESET
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"preset={name!r} is not known; allowed: {', '.join(PRESETS)}") from None
