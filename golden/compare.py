"""``refsim compare DIR --stage NAME --dut FILE``: a device-under-test's words against a stage.

The DUT file is a ``$readmemh`` text (any name; read with the tolerant reader) or a ``.npy``
array (converted to words by the stage's own rule: two's complement, sign-magnitude or IEEE
bits in ``word_bits``). Words are compared in C order; the report lists the first mismatches
with their flat and multi-dimensional index, the expected and received words, and the XOR of
their bits, then the mismatch count. Any mismatch (or a length mismatch) is a failure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from golden import hexio
from golden.verify import BundleError, load_manifest


@dataclass
class Mismatch:
    index: int
    position: tuple
    expected: int
    received: int

    @property
    def xor(self) -> int:
        return self.expected ^ self.received


@dataclass
class CompareResult:
    stage: str
    word_bits: int
    shape: tuple
    expected_words: int
    received_words: int
    count: int
    first: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.count == 0 and self.expected_words == self.received_words

    def to_dict(self) -> dict:
        return {"stage": self.stage, "ok": self.ok, "word_bits": self.word_bits, "shape": list(self.shape),
                "expected_words": self.expected_words, "received_words": self.received_words,
                "mismatches": self.count,
                "first": [{"index": m.index, "position": list(m.position), "expected": m.expected,
                           "received": m.received, "xor": m.xor} for m in self.first]}

    def __str__(self):
        nd = hexio.hex_digits(self.word_bits)
        lines = [f"stage {self.stage}: {self.expected_words} words of {self.word_bits} bits, shape {list(self.shape)}"]
        if self.expected_words != self.received_words:
            lines.append(f"LENGTH MISMATCH: expected {self.expected_words} words, received {self.received_words}")
        if self.first:
            lines.append(f"{'index':>10}  {'position':<16} {'expected':>{nd + 2}} {'received':>{nd + 2}} "
                         f"{'xor':>{nd + 2}}")
        for m in self.first:
            lines.append(f"{m.index:>10}  {str(list(m.position)):<16} {m.expected:#0{nd + 2}x} "
                         f"{m.received:#0{nd + 2}x} {m.xor:#0{nd + 2}x}")
        lines.append("OK: all words match" if self.ok else f"FAILED: {self.count} mismatching words")
        return "\n".join(lines)


def read_dut(path, entry) -> np.ndarray:
    path = Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"--dut {path}: " + ("is a directory, not a file" if path.is_dir() else
                                                     "the DUT file does not exist"))
    wb = entry["word_bits"]
    try:
        if path.suffix == ".npy":
            a = np.load(path, allow_pickle=False)
            return hexio.words_from_array(a, wb, name=path.name,
                                          sign_magnitude=entry["layout"] == "sign_magnitude").astype(np.uint64)
        return hexio.read_hex(path, word_bits=wb)
    except (ValueError, EOFError, UnicodeDecodeError) as exc:
        raise ValueError(f"--dut {path}: not a readable {'.npy' if path.suffix == '.npy' else '$readmemh'} "
                         f"file of {wb}-bit words ({exc})") from None


def compare(bundle, stage: str, dut, *, max_report: int = 10) -> CompareResult:
    bundle = Path(os.fspath(bundle))
    manifest = load_manifest(bundle)
    entries = {e["name"]: e for e in manifest["stages"]}
    if stage not in entries:
        raise ValueError(f"--stage {stage!r} is not in bundle {bundle}; allowed: {', '.join(entries)}")
    e = entries[stage]
    expected = np.load(bundle / e["npy"], allow_pickle=False)
    want = hexio.words_from_array(expected, e["word_bits"], name=stage,
                                  sign_magnitude=e["layout"] == "sign_magnitude").astype(np.uint64)
    got = read_dut(dut, e)
    n = min(want.size, got.size)
    neq = np.nonzero(want[:n] != got[:n])[0]
    first = [Mismatch(int(i), tuple(int(j) for j in np.unravel_index(i, expected.shape)) if expected.ndim else (),
                      int(want[i]), int(got[i])) for i in neq[:max_report]]
    return CompareResult(stage, e["word_bits"], tuple(expected.shape), int(want.size), int(got.size),
                         int(neq.size), first)


__all__ = ["BundleError", "CompareResult", "Mismatch", "compare", "read_dut"]
