"""Why the fast paths run on refsim.threads with BLAS held to one thread (docs/numerics.md "Fast paths").

    python benchmarks/bench_threads.py [--products 2000] [--reps 3]

Two measurements, each a ratio taken in this run against a named baseline:

1. small products: ``--products`` float32 products (64 x 16) @ (16 x 2048), the shape of one tile of one
   cluster in ``refsim.fused``, with numpy's BLAS at its default thread count against BLAS held to one
   thread (``threadpoolctl``);
2. GPTQ after a numba ``parallel=True`` kernel: ``refsim.rptq.gptq.gptq_quantize`` of a random 576 x 576
   linear (torch at one thread, as calibration runs it), right after an OpenMP parallel region (its
   threads spin for a while), against the same call with no parallel kernel run in the process before.
   The second is measured first in a fresh child process, so the order cannot favour it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np


def _small_products(n: int) -> float:
    a = np.random.default_rng(0).random((64, 16), dtype=np.float32)
    b = np.random.default_rng(1).random((16, 2048), dtype=np.float32)
    t = time.perf_counter()
    for _ in range(n):
        np.matmul(a, b)
    return time.perf_counter() - t


def _gptq_seconds(after_parallel: bool) -> float:
    import numba
    import torch

    from refsim.rptq.gptq import gptq_quantize

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((576, 576)).astype(np.float32)
    x = rng.standard_normal((1024, 576)).astype(np.float32)
    h = x.T @ x
    groups = np.arange(576) // 18
    if after_parallel:
        @numba.njit(parallel=True)
        def touch(v):
            for i in numba.prange(v.size):
                v[i] += 1.0

        touch(np.zeros(1 << 16))
    t = time.perf_counter()
    gptq_quantize(w, h, bits=4, groups=groups)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gptq-child", choices=("plain", "after-parallel"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.gptq_child:
        print(_gptq_seconds(a.gptq_child == "after-parallel"))
        return 0
    from threadpoolctl import ThreadpoolController

    ctl = ThreadpoolController()
    default = min(_small_products(a.products) for _ in range(a.reps))
    with ctl.limit(limits=1, user_api="blas"):
        one = min(_small_products(a.products) for _ in range(a.reps))
    blas = [i["num_threads"] for i in ctl.info() if i["user_api"] == "blas"]
    print(f"{a.products} products (64x16)@(16x2048): BLAS at {blas} threads {default:.3f} s, one thread {one:.3f} s; "
          f"ratio {default / one:.2f}x")

    def child(mode):
        out = subprocess.run([sys.executable, __file__, "--gptq-child", mode], capture_output=True, text=True,
                             check=True)
        return float(out.stdout.strip().splitlines()[-1])

    plain = min(child("plain") for _ in range(a.reps))
    spun = min(child("after-parallel") for _ in range(a.reps))
    print(f"gptq_quantize 576x576: {plain:.3f} s alone, {spun:.3f} s after a numba parallel kernel; "
          f"ratio {spun / plain:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
