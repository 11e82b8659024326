"""Golden-bundle writer speed: the $readmemh hex writer against np.save of the same arrays, one run.

    python benchmarks/bench_golden.py [--mib 64] [--repeats 3]

Writes the files of a bundle that holds ``--mib`` MiB of codes: ``codes`` (int4 codes, one per
int8 element, 4-bit hex words: one digit per line) and ``packed`` (the same codes in layout
int4_word32, 32-bit words: eight digits per line), through golden.bundle.write_stage_files,
which times its own np.save calls (the baseline) and its word conversion + hex writing on the
same arrays. Figures are the best of ``--repeats`` runs. Target (issue 5): hex <= 5x np.save.
A hex file is larger than the .npy (2 bytes per 4-bit code vs 1; 9 bytes per 32-bit word vs 4),
so part of the ratio is bytes written, not formatting.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import refsim
from golden.bundle import write_stage_files
from golden.presets import stage


def pack_int4_word32(codes: np.ndarray) -> np.ndarray:
    """Eight 4-bit codes per little-endian word, value j at bits 4j (layout int4_word32)."""
    nib = (codes.reshape(-1, 8).astype(np.uint32) & np.uint32(15))
    return np.bitwise_or.reduce(nib << (np.arange(8, dtype=np.uint32) * np.uint32(4)), axis=1).astype("<u4")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=64, help="MiB of int4 codes (one int8 each); default 64")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    n = args.mib << 20
    rng = np.random.default_rng(0)
    codes = rng.integers(-8, 8, size=n, dtype=np.int8)
    packed = pack_int4_word32(codes)
    # The benchmark's packer must be the layout: check it against refsim on a slice.
    ref = refsim.pack(codes[:4096], "int4_word32", signed=True).view("<u4")
    if not np.array_equal(ref, packed[:512]):
        print("pack_int4_word32 disagrees with refsim.pack", file=sys.stderr)
        return 1
    rows = 1024
    stages = [
        stage("codes", codes.reshape(rows, -1), word_bits=4, signed=True, doc="int4 codes"),
        stage("packed", packed.reshape(rows, -1), word_bits=32, signed=False, layout="int4_word32", doc="packed"),
    ]
    print(f"bundle: {args.mib} MiB of codes ({n} int4 codes) + {packed.nbytes >> 20} MiB of packed words; "
          f"best of {args.repeats}")
    best = {}
    with tempfile.TemporaryDirectory(prefix="bench-golden-") as tmp:
        for s in stages:
            for _ in range(args.repeats):
                t: dict = {}
                write_stage_files(Path(tmp), [s], timings=t)
                b = best.setdefault(s.name, dict(t))
                for k in t:
                    b[k] = min(b[k], t[k])
            hex_bytes = (Path(tmp) / f"{s.name}.hex").stat().st_size
            npy_bytes = (Path(tmp) / f"{s.name}.npy").stat().st_size
            b = best[s.name]
            print(f"  {s.name:<7} {s.word_bits:>2}-bit words: np.save {b['npy'] * 1e3:8.1f} ms ({npy_bytes >> 20} MiB)"
                  f"   hex writer {b['hex'] * 1e3:8.1f} ms ({hex_bytes >> 20} MiB)"
                  f"   ratio hex/np.save {b['hex'] / b['npy']:5.2f}x   sha256 {b['sha256'] * 1e3:7.1f} ms")
    tot_hex = sum(b["hex"] for b in best.values())
    tot_npy = sum(b["npy"] for b in best.values())
    print(f"total: hex writer {tot_hex * 1e3:.1f} ms, np.save {tot_npy * 1e3:.1f} ms, "
          f"ratio {tot_hex / tot_npy:.2f}x (target <= 5x)")
    # Context: the slow twin (Python formatting per word) on a 1 MiB slice, scaled.
    from golden.hexio import format_hex_scalar, words_from_array

    w = words_from_array(codes[:1 << 20], 4)
    t0 = time.perf_counter()
    format_hex_scalar(w, 4)
    per_word = (time.perf_counter() - t0) / w.size
    print(f"(a Python loop per word would take ~{per_word * n:.1f} s for the codes alone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
