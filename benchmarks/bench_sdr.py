"""SDR speed, as ratios against baselines measured in the same run (not a test).

    sdr_encode  64M int16 elements, group 16   vs  np.copy of the same array   target >= 0.2x
    sdr_gemm    M = N = K = 2048               vs  int_gemm on the decoded operands   target >= 0.5x

Each timing is the best of ``--repeat`` runs, baseline and candidate interleaved, so that load
from other processes on a shared machine hits both alike. Usage:

    python benchmarks/bench_sdr.py [--elements 67108864] [--gemm 2048] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from refsim.gemm import int_gemm
from refsim.qrazor import gaussian_weights, heavy_tailed_activations
from refsim.sdr import sdr_decode, sdr_encode, sdr_gemm
from refsim.spec import preset

QRAZOR = preset("qrazor")
WRAP32 = QRAZOR.replace(acc_bits=32, acc_overflow="wrap")  # a 32-bit wrapping accumulator, as timed before


def best_of(fns, repeat):
    """Interleaved best-of-``repeat`` seconds for each callable (after one warm-up call each)."""
    for f in fns:
        f()
    best = [float("inf")] * len(fns)
    for r in range(repeat):
        for i, f in enumerate(fns):
            t = time.perf_counter()
            f()
            best[i] = min(best[i], time.perf_counter() - t)
        print(f"  run {r + 1}/{repeat}", file=sys.stderr, flush=True)
    return best


def bench_encode(n, repeat):
    rng = np.random.default_rng(0)
    # int16 activations as QRazor's static absmax makes them: heavy-tailed, full range used
    x = np.clip(np.rint(rng.standard_t(3, size=n) * 2000), -32767, 32767).astype(np.int16)
    t_copy, t_enc, t_enc_te = best_of([
        lambda: np.copy(x),
        lambda: sdr_encode(x, group_size=16, base_bits=16, spec=QRAZOR),
        lambda: sdr_encode(x, group_size=16, base_bits=16, spec=QRAZOR.replace(sdr_rounding="ties_even")),
    ], repeat)
    mb = x.nbytes / 1e6
    print(f"sdr_encode, {n} int16 elements ({mb:.0f} MB), group 16, keep 3")
    print(f"  np.copy (baseline)      {t_copy * 1e3:8.1f} ms  {n / t_copy / 1e9:6.2f} Gelem/s  "
          f"{mb / t_copy / 1e3:6.2f} GB/s read")
    for name, t in (("sdr_encode half_up", t_enc), ("sdr_encode ties_even", t_enc_te)):
        print(f"  {name:23} {t * 1e3:8.1f} ms  {n / t / 1e9:6.2f} Gelem/s  ratio to copy {t_copy / t:5.2f}x "
              f"(target >= 0.2x)")


def bench_gemm(size, repeat):
    x = heavy_tailed_activations(size, size, seed=1)
    w = gaussian_weights(size, size, seed=2)
    a = np.clip(np.rint(x / (np.abs(x).max() / 32767)), -32767, 32767).astype(np.int16)
    b = np.clip(np.rint(w / (np.abs(w).max(axis=0) / 127)), -127, 127).astype(np.int8)
    ac, af = sdr_encode(a, group_size=16, base_bits=16, axis=1, spec=QRAZOR)
    bc, bf = sdr_encode(b, group_size=16, base_bits=8, axis=0, spec=QRAZOR)
    da = sdr_decode(ac, af, group_size=16, axis=1)
    db = sdr_decode(bc, bf, group_size=16, axis=0)
    got = sdr_gemm(ac, af, bc, bf, group_size=16, spec=WRAP32)
    assert np.array_equal(got, int_gemm(da, db, spec=WRAP32)), "sdr_gemm != int_gemm(decoded)"
    t_int, t_sdr = best_of([
        lambda: int_gemm(da, db, spec=WRAP32),
        lambda: sdr_gemm(ac, af, bc, bf, group_size=16, spec=WRAP32),
    ], repeat)
    print(f"sdr_gemm, M = N = K = {size}, int16 keep 3 x int8 keep 3, group 16, 32-bit wrap accumulator")
    print(f"  int_gemm(decoded) (baseline) {t_int * 1e3:8.1f} ms")
    print(f"  sdr_gemm                     {t_sdr * 1e3:8.1f} ms  ratio to int_gemm {t_int / t_sdr:5.2f}x "
          "(target >= 0.5x)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--elements", type=int, default=64 * 2**20)
    p.add_argument("--gemm", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    bench_encode(args.elements, args.repeat)
    bench_gemm(args.gemm, max(2, args.repeat // 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
