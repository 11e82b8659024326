"""What a bundle preset is: its stages, its numerics metadata, and the helpers its families share.

A preset has two halves:

    inputs(rng, level, shape, config, specs) -> [Stage]   the stimulus (golden.stimulus levels)
    derive(arrays, specs, config)            -> [Stage]   every later stage, from the inputs only

``derive`` reads nothing but the input arrays, the recorded numerics specs and the recorded
config, so ``refsim verify`` re-derives a bundle from its own manifest. Stage names are
stable (docs/golden.md lists them); a renamed or re-ordered stage is a schema change.

Stage fields (copied into the manifest): the array (C order), ``word_bits`` of its ``.hex``
words, ``signed`` (two's complement), ``layout``: ``element`` (one value per word),
``ieee_binary16`` / ``ieee_binary32`` / ``ieee_binary64`` (a float's bit pattern), or a
refsim packing layout name (the word holds packed codes; see refsim.layouts), and ``spec``:
the role whose numerics spec the operation that makes the stage applies (None: no spec, e.g.
packing, a sum of codes in int64, the float32 epilogue; a stage's inputs carry their own roles).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from golden import hexio
from golden.stimulus import code_limits

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
    spec: str | None = None  # the spec role the stage's own operation applies (None: none)


def stage(name, array, *, doc, role="derived", word_bits=None, signed=None, layout="element", spec=None) -> Stage:
    """A Stage; floats get their IEEE layout and width, integers need word_bits and signed."""
    a = np.ascontiguousarray(array)
    if a.dtype.kind == "f":
        a = a.astype(a.dtype.newbyteorder("<"))  # a fixed byte order: byte-identical .npy files
        return Stage(name, a, a.dtype.itemsize * 8, False, FLOAT_LAYOUTS[a.dtype.itemsize], role, doc, spec)
    a = a.astype(a.dtype.newbyteorder("<"))
    if layout != "sign_magnitude":
        hexio.check_stage_range(a, int(word_bits), bool(signed), name=name)
    return Stage(name, a, int(word_bits), bool(signed), layout, role, doc, spec)


@dataclass(frozen=True)
class Inert:
    """A spec field a role's stages read that cannot change this preset's stages, and why.

    ``witness``: other field values of the same role under which the field does change the
    stages (tests/test_golden_spec_edit.py checks that it does), so the claim can fail.
    """

    reason: str
    witness: dict


@dataclass(frozen=True)
class SpecUse:
    """Which fields of one role's NumericsSpec the preset's stages depend on.

    fields: every field some stage's operation reads (the manifest records them as ``uses``);
        a field not listed is proven unused by the spec-edit test (any value re-derives the same).
    inert: fields of ``fields`` that cannot change this preset's stages (reason and witness).
    """

    fields: tuple
    inert: dict = field(default_factory=dict)

    def __post_init__(self):
        bad = sorted(set(self.inert) - set(self.fields))
        if bad:
            raise ValueError(f"inert fields {bad} are not among the used fields {list(self.fields)}")


# The NumericsSpec fields quantize() reads on a finite input (nonfinite only matters for NaN / Inf).
QUANTIZE_FIELDS = ("scale_op", "compute_dtype", "rounding", "zero_point_stage", "signed", "narrow", "saturation")
ACCUMULATOR_FIELDS = ("acc_bits", "acc_overflow")


def no_overflow_at(bits: int) -> Inert:
    return Inert(reason=f"no partial sum of this preset's stimulus leaves {bits} bits, so no overflow rule fires "
                 "(a smaller acc_bits makes it fire: the witness)", witness={"acc_bits": 8})


def zero_point_after_rounding_inert() -> Inert:
    return Inert(reason="z is an integer added to fl(x op s): under round-to-nearest-even the sum rounds as x op s "
                 "does unless it needs more significand bits than the compute dtype holds, which this level-0 "
                 "stimulus never needs; under a directed rounding (ceil) the order shows: the witness",
                 witness={"rounding": "ceil"})


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    specs: dict  # role -> refsim.NumericsSpec: the defaults a bundle records unless --spec replaces them
    shape_names: tuple
    default_shape: tuple
    config: dict
    inputs: Callable
    derive: Callable
    spec_use: dict = field(default_factory=dict)  # role -> SpecUse (every role of specs)
    exhaustive_shape: Callable | None = None  # config -> the shape level 2 fixes
    pattern_shape: Callable | None = None  # config -> the shape level 1 fixes (None: level 1 takes --shape)
    levels: tuple = (0, 1, 2)
    # levels whose bundles are too big for the default test suite (tests run them behind @pytest.mark.slow)
    # and for the committed canonical digests (tests/data/golden_digests.json)
    slow_levels: tuple = ()
    # False: generating the inputs depends on the platform's BLAS (the OPT block's float calibration run
    # and k-means); such presets are left out of the committed cross-machine digests.
    portable: bool = True
    notes: list = field(default_factory=list)
    # the highest power in which each shape dimension enters a stage's size (None: 1 for every one, the
    # stages are multilinear in the shape); golden.bundle's size check takes its upper bound from it
    size_degree: tuple | None = None

    def __post_init__(self):
        if set(self.spec_use) != set(self.specs):
            raise ValueError(f"preset {self.name}: spec_use roles {sorted(self.spec_use)} are not its spec roles "
                             f"{sorted(self.specs)}")
        if not set(self.slow_levels) <= set(self.levels):
            raise ValueError(f"preset {self.name}: slow_levels {self.slow_levels} are not among its levels "
                             f"{self.levels}")

    @property
    def fast_levels(self) -> tuple:
        """The levels the default test suite builds and verifies."""
        return tuple(lv for lv in self.levels if lv not in self.slow_levels)

    @property
    def digest_levels(self) -> tuple:
        """The levels whose canonical bundle digests are committed: the fast ones of a portable preset
        (one whose inputs regenerate byte for byte on any machine)."""
        return self.fast_levels if self.portable else ()


def contiguous_clusters(k: int, c: int) -> np.ndarray:
    """Cluster id of each of k channels: c contiguous clusters (RPTQ after reordering), as equal as k allows."""
    if not 1 <= c <= k:
        raise ValueError(f"clusters={c} is not allowed for K={k} channels; allowed: 1..{k}")
    return (np.arange(k) * c // k).astype(np.uint8)


def cluster_minmax(x, cluster, c_count, dtype):
    """Per-cluster calibration range of x (tokens, channels): refsim's cluster_minmax of the channels'."""
    from refsim.rptq.cluster import cluster_minmax as channel_cluster_minmax

    lo, hi = channel_cluster_minmax(x.min(axis=0), x.max(axis=0), cluster, c_count)
    return lo.astype(dtype), hi.astype(dtype)


# Zero points the pattern levels give the per-cluster quantizers: 0, positive, negative, and
# one outside the code range (an RPTQ range that excludes 0 puts it there).
def pattern_zero_points(bits, count):
    base = [0, 3, -(1 << (bits - 1)) + 3, (1 << bits) + 3]
    return np.array([base[i % len(base)] for i in range(count)], dtype=np.int64)


def pow2_cluster_range(bits, za, sa, dtype):
    """(xmin, xmax) whose RPTQ parameters are exactly scale sa and zero point za (sa a power of two)."""
    lo, hi = code_limits(bits, True)
    return np.asarray((lo - za) * sa, dtype=dtype), np.asarray((hi + 1 - za) * sa, dtype=dtype)


def int_dtype(bits):
    return np.int8 if bits <= 8 else np.int16


def packed_stage(codes, layout_name, *, signed, axis=-1, name="packed", spec=None):
    """The stage of ``codes`` packed in a refsim layout: 32-bit little-endian words for a word layout, else bytes."""
    import refsim
    from golden.presets import ops

    lay = refsim.LAYOUTS[layout_name]
    data = ops.pack(codes, layout_name, axis=axis, signed=signed)
    if lay.block_bytes and lay.block_bytes % 4 == 0:  # a word layout: little-endian 32-bit words
        data = np.moveaxis(np.ascontiguousarray(np.moveaxis(data, axis, -1)).view("<u4"), -1, axis)
        return stage(name, data, word_bits=32, signed=False, layout=layout_name, spec=spec,
                     doc=f"{lay.description}; 32-bit words")
    return stage(name, data, word_bits=8, signed=False, layout=layout_name, spec=spec,
                 doc=f"{lay.description}; bytes")
