"""Exact int_gemm throughput against named baselines, measured in one run.

    python benchmarks/bench_int_gemm.py [--n 2048] [--repeats 3]

Baselines on the same M = N = K shape: float32 BLAS (np.matmul on float32), numpy's own int32
matmul (exact but not BLAS), and torch._int_mm (int8, exact, oneDNN) where torch is installed.
Each figure is the best of ``--repeats`` runs; ratios are rates (higher is faster).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import refsim


def best_time(fn, repeats):
    fn()  # warm-up: BLAS threads, numba compilation, page faults
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--int32-n", type=int, default=512,
                    help="shape for numpy int32 matmul (it is ~1000x slower; its rate is size-independent)")
    args = ap.parse_args(argv)
    n = args.n
    rng = np.random.default_rng(0)
    ops = 2.0 * n**3

    f32a = rng.standard_normal((n, n), dtype=np.float32)
    f32b = rng.standard_normal((n, n), dtype=np.float32)
    t_f32 = best_time(lambda: np.matmul(f32a, f32b), args.repeats)
    m = args.int32_n
    i32a = rng.integers(-8, 8, (m, m), dtype=np.int32)
    i32b = rng.integers(-8, 8, (m, m), dtype=np.int32)
    t_i32 = best_time(lambda: np.matmul(i32a, i32b), 2)
    rate_f32 = ops / t_f32
    rate_i32 = 2.0 * m**3 / t_i32
    print(f"shape M=N=K={n}; baselines: float32 BLAS {rate_f32 / 1e9:.1f} GFLOP/s, "
          f"numpy int32 matmul ({m}^3) {rate_i32 / 1e9:.3f} GOPS")

    try:
        import torch
        ta = torch.randint(-128, 128, (n, n), dtype=torch.int8)
        tb = torch.randint(-128, 128, (n, n), dtype=torch.int8)
        rate_torch = ops / best_time(lambda: torch._int_mm(ta, tb), args.repeats)
        print(f"torch._int_mm int8: {rate_torch / 1e9:.1f} GOPS")
    except ImportError:
        rate_torch = None
        print("torch not installed: no torch._int_mm baseline")

    cases = [("int4 x int4", (-8, 8), (-8, 8)), ("int8 x int8", (-128, 128), (-128, 128)),
             ("int16 x int8", (-(1 << 15), 1 << 15), (-128, 128))]
    print(f"{'operands':<14}{'backend':<8}{'GOPS':>8}{'vs f32 BLAS':>13}{'vs np int32':>13}{'vs _int_mm':>12}")
    for name, (alo, ahi), (blo, bhi) in cases:
        a = rng.integers(alo, ahi, (n, n), dtype=np.int64)
        b = rng.integers(blo, bhi, (n, n), dtype=np.int64)
        backends = ["blas"] + (["torch"] if rate_torch and ahi <= 128 else [])  # auto picks torch here
        for backend in backends:
            rate = ops / best_time(lambda a=a, b=b, be=backend: refsim.int_gemm(a, b, backend=be), args.repeats)
            vs_torch = f"{rate / rate_torch:.2f}x" if rate_torch else "-"
            print(f"{name:<14}{backend:<8}{rate / 1e9:8.1f}{rate / rate_f32:12.2f}x{rate / rate_i32:12.0f}x"
                  f"{vs_torch:>12}")


if __name__ == "__main__":
    main()
