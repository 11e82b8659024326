"""A golden bundle read with numpy alone, as the memory words an RTL unit sees.

Deliberately independent of refsim (numpy and the standard library only), so that an RTL team
can copy the cocotb bench into its own tree: the rules are the ones ``manifest.json`` states and
docs/golden.md tabulates. For a stage of ``word_bits`` w, element i of the ``.npy`` in C order
is word i (line i of the ``.hex``):

    layout element, signed or not    word = v mod 2^w         (two's complement; -3 at 4 bits is 0xd)
    layout sign_magnitude            word = (v < 0) << (w-1) | |v|       (-2 at 4 bits is 0xa)

tests/test_cocotb.py checks these words equal refsim's own conversion (``golden.compare.read_dut``)
for every integer stage the benches read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class Bundle:
    """A bundle's manifest and its integer stages as memory words."""

    def __init__(self, path):
        self.path = Path(path)
        self.manifest = json.loads((self.path / "manifest.json").read_text())
        self.entries = {e["name"]: e for e in self.manifest["stages"]}

    def array(self, stage: str) -> np.ndarray:
        return np.load(self.path / self.entries[stage]["npy"], allow_pickle=False)

    def shape(self, stage: str) -> list[int]:
        return self.entries[stage]["shape"]

    def words(self, stage: str) -> np.ndarray:
        """The stage's words (uint64), flattened in C order."""
        entry = self.entries[stage]
        a = self.array(stage)
        if a.dtype.kind not in "iu" or a.dtype.itemsize > 8 or (a.dtype.kind == "u" and a.dtype.itemsize == 8):
            raise TypeError(f"stage {stage!r}: the benches read integer stages of at most 63 bits, got {a.dtype}")
        v = a.reshape(-1).astype(np.int64)
        w = entry["word_bits"]
        if entry["layout"] == "sign_magnitude":
            v = np.where(v < 0, -v | (1 << (w - 1)), v)
        elif entry["layout"] != "element":
            raise ValueError(f"stage {stage!r}: layout {entry['layout']!r}; the benches read element and "
                             "sign_magnitude stages")
        return (v & ((1 << w) - 1)).astype(np.uint64)
