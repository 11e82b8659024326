"""argparse ``type`` callables shared by every command front end: the error names the range allowed.

argparse prefixes the flag (``argument --k: allowed: an integer in 1..2^40; got 0``) and exits 2.
"""

from __future__ import annotations

import argparse


def int_range(lo: int | None = None, hi: int | None = None):
    """An argparse ``type`` for an integer in [lo, hi]; argparse prefixes the flag's name."""
    def parse(text: str) -> int:
        try:
            v = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer{_range_text(lo, hi)}, got {text!r}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"allowed: an integer{_range_text(lo, hi)}; got {v}")
        return v
    parse.__name__ = "integer"
    return parse


def _range_text(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f" in {lo}..{hi}"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def positive_int(text: str) -> int:
    return int_range(1)(text)


def seed_int(text: str) -> int:
    """A PCG64 seed: an integer in 0..2**64-1."""
    return int_range(0, 2**64 - 1)(text)
