"""Exact int_gemm throughput against named baselines, measured in one run.

    python benchmarks/bench_int_gemm.py [--n 2048] [--repeats 5] [--table] [--backends auto,blas,torch] [--overhead]

First (always): int4 x int4 and int8 x int8 ``refsim.int_gemm`` (32-bit accumulator, the ``onnx``
preset: an int32 result) side by side with ``torch._int_mm`` on the same int8 operands, as the
ratio of their rates (the issue-11 target: >= 0.9x), each result asserted equal (np.array_equal) to
_int_mm's and to the float-BLAS path's on the same run. Then what int_gemm's torch path costs around
the product (``_int_mm`` swapped for a stand-in returning a precomputed result), and that overhead
projected onto an _int_mm rate of ``--project-gops`` (a oneDNN figure: on a CPU without
AVX512-VNNI _int_mm is aten's scalar loop, which makes the measured ratio say little; see
docs/benchmarks.md). ``--table`` adds the older table below.

Baselines on the same M = N = K shape: torch._int_mm (int8 x int8 -> int32, exact; oneDNN where
the CPU has AVX512-VNNI, a scalar loop elsewhere), float32 BLAS (np.matmul on float32) and numpy's
own int32 matmul (exact but not BLAS; timed on a smaller shape, its rate does not depend on size).
Each figure is the median of ``--repeats`` timed runs after one warm-up (a baseline call slower
than ``--slow`` seconds is timed once: the warm-up is the sample). Ratios are rates (higher is
faster); the ratio to float32 BLAS is the median over back-to-back pairs, which a shared
machine's drifting load disturbs least.

The operands are held in three dtypes: the narrowest that holds them (int8: what _int_mm itself
takes), int32 (what ``refsim.quantize`` returns) and int64, since the checks and conversions
around the product cost more or less with the dtype. ``auto`` is the backend int_gemm picks by
default; a backend equal to auto's pick is not timed twice.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import refsim
from refsim.gemm import AUTO_TORCH_MIN_MACS, _torch_int8_is_fast, exact_matmul

SPEC = refsim.preset("onnx")  # a 32-bit wrapping accumulator, as _int_mm's int32


def median_time(fn, repeats, slow):
    t0 = time.perf_counter()
    fn()  # warm-up: BLAS threads, numba compilation, page faults
    first = time.perf_counter() - t0
    if first > slow:
        return first, 1
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), repeats


def paired_times(fn, base, repeats):
    """Median time of fn, and the median over pairs of time(base) / time(fn), each pair run back to
    back: on a shared machine the load drifts between pairs more than within one."""
    fn()
    base()
    t_fn, ratios = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        base()
        t1 = time.perf_counter()
        fn()
        t2 = time.perf_counter()
        t_fn.append(t2 - t1)
        ratios.append((t1 - t0) / (t2 - t1))
    return statistics.median(t_fn), statistics.median(ratios)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--slow", type=float, default=5.0, help="seconds above which a call is timed once")
    ap.add_argument("--backends", default="auto,blas", help="comma-separated: auto, blas, torch")
    ap.add_argument("--overhead", action="store_true",
                    help="also time the older overhead table over int8/int32/int64 operands (with --table)")
    ap.add_argument("--table", action="store_true",
                    help="also print the older table (every backend and operand dtype against float32 BLAS)")
    ap.add_argument("--project-gops", type=float, default=834.0,
                    help="an _int_mm rate to project the overhead onto (default: 834 GOPS, measured with oneDNN "
                         "on 2026-11-24, docs/benchmarks.md)")
    ap.add_argument("--int32-n", type=int, default=512,
                    help="shape for numpy int32 matmul (it is ~1000x slower; its rate is size-independent)")
    args = ap.parse_args(argv)
    backends = args.backends.split(",")
    n = args.n
    rng = np.random.default_rng(0)
    ops = 2.0 * n**3
    versus_int_mm(args, rng, ops)
    if not args.table:
        return

    f32a = rng.standard_normal((n, n), dtype=np.float32)
    f32b = rng.standard_normal((n, n), dtype=np.float32)
    t_f32, _ = median_time(lambda: np.matmul(f32a, f32b), args.repeats, args.slow)
    m = args.int32_n
    i32a = rng.integers(-8, 8, (m, m), dtype=np.int32)
    i32b = rng.integers(-8, 8, (m, m), dtype=np.int32)
    t_i32, _ = median_time(lambda: np.matmul(i32a, i32b), 2, args.slow)
    rate_f32 = ops / t_f32
    rate_i32 = 2.0 * m**3 / t_i32
    auto_pick = "torch" if n**3 >= AUTO_TORCH_MIN_MACS and _torch_int8_is_fast() else "blas"
    print(f"shape M=N=K={n}; baselines: float32 BLAS {rate_f32 / 1e9:.1f} GFLOP/s, "
          f"numpy int32 matmul ({m}^3) {rate_i32 / 1e9:.3f} GOPS; auto picks {auto_pick}")

    try:
        import torch
    except ImportError:
        rate_torch = None
        print("torch not installed: no torch._int_mm baseline")
    else:
        ta = torch.from_numpy(rng.integers(-128, 128, (n, n), dtype=np.int8))
        tb = torch.from_numpy(rng.integers(-128, 128, (n, n), dtype=np.int8))
        t, runs = median_time(lambda: torch._int_mm(ta, tb), args.repeats, args.slow)
        rate_torch = ops / t
        kernel = "oneDNN" if _torch_int8_is_fast() else "no oneDNN int8 kernel on this CPU: aten's scalar loop"
        print(f"torch._int_mm int8: {rate_torch / 1e9:.2f} GOPS ({kernel}; {runs} timed run(s))")

    cases = [("int4 x int4", (-8, 8), (-8, 8), (np.int8, np.int8)),
             ("int8 x int8", (-128, 128), (-128, 128), (np.int8, np.int8)),
             ("int16 x int8", (-(1 << 15), 1 << 15), (-128, 128), (np.int16, np.int8))]
    print(f"{'operands':<14}{'dtype':<12}{'backend':<14}{'GOPS':>8}{'vs _int_mm':>12}{'vs f32 BLAS':>13}"
          f"{'vs np int32':>13}{'runs':>6}")
    for name, (alo, ahi), (blo, bhi), narrow in cases:
        a64 = rng.integers(alo, ahi, (n, n), dtype=np.int64)
        b64 = rng.integers(blo, bhi, (n, n), dtype=np.int64)
        for dta, dtb in (narrow, (np.int32, np.int32), (np.int64, np.int64)):
            a, b = a64.astype(dta), b64.astype(dtb)
            dtype = np.dtype(dta).name if dta == dtb else f"{np.dtype(dta).name}/{np.dtype(dtb).name}"
            for backend in backends:
                if backend != "auto" and backend == auto_pick and "auto" in backends:
                    continue
                label = f"auto ({auto_pick})" if backend == "auto" else backend
                t, vs_f32 = paired_times(lambda a=a, b=b, be=backend: refsim.int_gemm(a, b, spec=SPEC, backend=be),
                                         lambda: np.matmul(f32a, f32b), args.repeats)
                rate = ops / t
                vs_torch = f"{rate / rate_torch:.2f}x" if rate_torch else "-"
                print(f"{name:<14}{dtype:<12}{label:<14}{rate / 1e9:8.1f}{vs_torch:>12}"
                      f"{vs_f32:12.2f}x{rate / rate_i32:12.0f}x{args.repeats:>6}")

    if args.overhead:
        overhead(args, rng, cases, ops)


def versus_int_mm(args, rng, ops):
    """int_gemm against torch._int_mm on the same int8 operands (the rates' ratio), results asserted exact."""
    try:
        import torch
    except ImportError:
        print("torch not installed: no torch._int_mm baseline")
        return
    n = args.n
    kernel = "oneDNN" if _torch_int8_is_fast() else "no oneDNN int8 kernel on this CPU: aten's scalar loop"
    print(f"int_gemm (spec 'onnx': 32-bit accumulator, int32 result) vs torch._int_mm ({kernel}), "
          f"same int8 operands, M=N=K={n}; ratio = rate(int_gemm) / rate(_int_mm), back-to-back pairs")
    print(f"{'operands':<14}{'backend':<14}{'_int_mm ms':>12}{'int_gemm ms':>13}{'vs _int_mm':>12}{'exact':>7}")
    projections = []
    for name, lim in (("int4 x int4", 8), ("int8 x int8", 128)):
        a = rng.integers(-lim, lim, (n, n), dtype=np.int8)
        b = rng.integers(-lim, lim, (n, n), dtype=np.int8)
        projections.append((name, _versus_case(torch, name, a, b, args)))
    t_proj = ops / (args.project_gops * 1e9)
    print(f"int_gemm's torch path without the product (_int_mm's result handed back by a stand-in), projected "
          f"onto _int_mm at {args.project_gops:.0f} GOPS ({t_proj * 1e3:.1f} ms; a projection, not a measurement):")
    for name, t_over in projections:
        print(f"{name:<14}overhead {t_over * 1e3:8.3f} ms   projected vs _int_mm {t_proj / (t_proj + t_over):.3f}x")


def _versus_case(torch, name, a, b, args) -> float:
    """Print one operand pair's rows; return the torch path's time without the product."""
    real = torch._int_mm
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    want = None
    for backend in ("auto", "torch"):
        t_mm, t_gemm, ratio, (mm, got) = paired(lambda: real(ta, tb).numpy(),
                                                lambda be=backend: refsim.int_gemm(a, b, spec=SPEC, backend=be),
                                                args.repeats, args.slow)
        if want is None:
            want = mm
            blas = exact_matmul(a, b, backend="blas")  # an independent exact path: float BLAS in chunks
            assert np.array_equal(want, blas), f"{name}: torch._int_mm differs from the float-BLAS product"
        assert got.dtype == np.int32 and np.array_equal(got, want), f"{name} {backend}: not exact"
        print(f"{name:<14}{backend:<14}{t_mm * 1e3:12.1f}{t_gemm * 1e3:13.1f}{ratio:11.2f}x{'yes':>7}")
    # the torch path around the product: _int_mm replaced by a stand-in that hands back the same result
    # (a tensor made beforehand), so what is timed is only what int_gemm adds
    done = torch.from_numpy(want)
    torch._int_mm = lambda x, y: done
    try:
        got = refsim.int_gemm(a, b, spec=SPEC, backend="torch")
        assert np.array_equal(got, want)
        t_over, _ = median_time(lambda: refsim.int_gemm(a, b, spec=SPEC, backend="torch"), args.repeats, args.slow)
    finally:
        torch._int_mm = real
    return t_over


def paired(base, fn, repeats, slow):
    """(median time of base, of fn, median over back-to-back pairs of time(base) / time(fn), the first
    calls' results). A first call slower than ``slow`` seconds is the only sample (no warm-up)."""
    t0 = time.perf_counter()
    out_base = base()
    t1 = time.perf_counter()
    out_fn = fn()
    t2 = time.perf_counter()
    first, first_fn = t1 - t0, t2 - t1
    if max(first, first_fn) > slow:
        return first, first_fn, first / first_fn, (out_base, out_fn)
    tb, tf, ratios = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        base()
        t1 = time.perf_counter()
        fn()
        t2 = time.perf_counter()
        tb.append(t1 - t0)
        tf.append(t2 - t1)
        ratios.append((t1 - t0) / (t2 - t1))
    return statistics.median(tb), statistics.median(tf), statistics.median(ratios), (out_base, out_fn)


def overhead(args, rng, cases, ops):
    """The torch path's checks and conversions, timed without the product.

    int_gemm(backend="torch") runs with torch._int_mm swapped for torch.zeros of the output's
    shape (a fresh int32 tensor written once, as _int_mm writes its output); the time of that
    stand-in alone is subtracted. What is left is everything int_gemm adds to the product:
    the range checks, the int8 conversion, the int64 widening. Projected onto an _int_mm
    that runs at --project-gops, the ratio int_gemm / _int_mm would be t / (t + overhead).
    """
    import torch

    n = args.n
    t_mm = ops / (args.project_gops * 1e9)
    real = torch._int_mm

    def stand_in(a, b):
        return torch.zeros((a.shape[0], b.shape[1]), dtype=torch.int32)

    t_stand, _ = median_time(lambda: stand_in(np.empty((n, 1)), np.empty((1, n))), args.repeats, args.slow)
    print(f"torch path without the product (torch._int_mm replaced by torch.zeros, {t_stand * 1e3:.1f} ms, "
          f"subtracted); projected onto _int_mm at {args.project_gops:.0f} GOPS ({t_mm * 1e3:.1f} ms):")
    print(f"{'operands':<14}{'dtype':<12}{'overhead ms':>12}{'projected vs _int_mm':>22}")
    torch._int_mm = stand_in
    try:
        for name, (alo, ahi), (blo, bhi), narrow in cases[:2]:
            a64 = rng.integers(alo, ahi, (n, n), dtype=np.int64)
            b64 = rng.integers(blo, bhi, (n, n), dtype=np.int64)
            for dta, dtb in (narrow, (np.int32, np.int32), (np.int64, np.int64)):
                a, b = a64.astype(dta), b64.astype(dtb)
                t, _ = median_time(lambda a=a, b=b: refsim.int_gemm(a, b, spec=SPEC, backend="torch"), args.repeats,
                                   args.slow)
                extra = max(t - t_stand, 0.0)
                print(f"{name:<14}{np.dtype(dta).name:<12}{extra * 1e3:12.1f}{t_mm / (t_mm + extra):21.2f}x")
    finally:
        torch._int_mm = real


if __name__ == "__main__":
    main()
