"""GPU kernel benchmarks: each ratio against a baseline measured in the same run (docs/benchmarks.md).

    python benchmarks/bench_kernels.py            # needs cupy, torch (CUDA build) and a CUDA device
    python benchmarks/bench_kernels.py --quick    # smaller shapes, a smoke run

Measures:
  - copy bandwidth (device-to-device cupy copy): the memory ceiling;
  - W4A4 and W3A3 GEMM at M = N = K = 8192 (8 clusters, y only) against torch._int_mm (int8,
    same shape) and torch bf16 matmul; target W4A4 >= 0.7x torch._int_mm;
  - W4A16 and W3A16 at M = 1 and 16 on K = 8192, N = 28672 against torch fp16 matmul, with the
    achieved bandwidth as a fraction of the copy bandwidth; target W4A16 at M = 1 >= 2.5x fp16.
Each timing is the median of ``--repeat`` runs after 3 warm-ups, with CUDA events. Without a
GPU it prints why and exits 0 (nothing is measured; no figure is invented).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cukernels.compile import gpu_available  # noqa: E402


def timed(fn, repeat):
    import cupy as cp

    for _ in range(3):
        fn()
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(repeat):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop) * 1e-3)
    return float(np.median(times))


def copy_bandwidth(repeat):
    import cupy as cp

    src = cp.ones(1 << 30, dtype=cp.uint8)  # 1 GiB
    dst = cp.empty_like(src)
    t = timed(lambda: dst.__setitem__(slice(None), src), repeat)
    return 2 * src.nbytes / t  # read + write


def lowbit_case(bits, m, n, k, clusters):
    import cupy as cp

    from cukernels import host

    rng = np.random.default_rng(0)
    sizes = np.full(clusters, k // clusters)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    a = rng.integers(lo, hi, size=(m, k), endpoint=True, dtype=np.int8)
    w = rng.integers(lo, hi, size=(n, k), endpoint=True, dtype=np.int8)
    prep = host.prepare_lowbit_weights(w, sizes, bits)
    return dict(a_packed=cp.asarray(host.pack_lowbit_operand(a, sizes, bits)), w_packed=cp.asarray(prep["w_packed"]),
                a_zero=cp.asarray(rng.integers(-4, 4, clusters).astype(np.int32)),
                w_colsum=cp.asarray(prep["w_colsum"]), cluster_offsets=cp.asarray(prep["cluster_offsets"]),
                scale_a=cp.ones(clusters, cp.float32), scale_w=cp.ones(n, cp.float32),
                out_y=cp.empty((m, n), cp.float32), bits=bits, write_isums=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes (a smoke run, not the recorded figures)")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args(argv)
    if not gpu_available():
        print("bench_kernels: skipped: cupy or a CUDA device is missing; nothing measured")
        return 0
    import cupy as cp
    import torch

    from cukernels import host, launch

    dev = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    print(f"# bench_kernels {datetime.date.today().isoformat()} on {dev}; command: "
          f"python benchmarks/bench_kernels.py{' --quick' if args.quick else ''}")
    bw = copy_bandwidth(args.repeat)
    print(f"copy bandwidth: {bw / 1e12:.2f} TB/s")

    size = 2048 if args.quick else 8192
    m = n = k = size
    a8 = torch.randint(-8, 8, (m, k), dtype=torch.int8, device="cuda")
    b8 = torch.randint(-8, 8, (k, n), dtype=torch.int8, device="cuda")
    t_int = timed(lambda: torch._int_mm(a8, b8), args.repeat)
    abf, bbf = a8.to(torch.bfloat16), b8.to(torch.bfloat16)
    t_bf = timed(lambda: abf @ bbf, args.repeat)
    ops = 2.0 * m * n * k
    print(f"torch._int_mm {m}^3: {t_int * 1e3:.3f} ms ({ops / t_int / 1e12:.0f} TOPS); "
          f"torch bf16: {t_bf * 1e3:.3f} ms ({ops / t_bf / 1e12:.0f} TFLOP/s)")
    for bits in (4, 3):
        case = lowbit_case(bits, m, n, k, clusters=8)
        t = timed(lambda case=case: launch.lowbit_gemm(**case), args.repeat)
        print(f"W{bits}A{bits} {m}^3 (8 clusters, y only): {t * 1e3:.3f} ms ({ops / t / 1e12:.0f} TOPS), "
              f"{t_int / t:.2f}x torch._int_mm, {t_bf / t:.2f}x torch bf16"
              + ("  [target >= 0.7x _int_mm]" if bits == 4 else ""))

    kk, nn = (2048, 7168) if args.quick else (8192, 28672)
    rng = np.random.default_rng(1)
    for bits in (4, 3):
        w = rng.integers(0, (1 << bits) - 1, size=(nn, kk), endpoint=True, dtype=np.int8)
        wp = cp.asarray(host.prepare_wxa16_weights(w, bits))
        g = 128
        scales = cp.asarray((rng.uniform(0.5, 1, (nn, kk // g)) * 0.01).astype(np.float16))
        zeros = cp.asarray(rng.integers(0, (1 << bits) - 1, (nn, kk // g), endpoint=True).astype(np.int32))
        w16 = torch.randn(kk, nn, dtype=torch.float16, device="cuda")
        for mm in (1, 16):
            x = cp.asarray(rng.standard_normal((mm, kk)).astype(np.float16))
            out = cp.empty((mm, nn), cp.float32)
            t = timed(functools.partial(launch.wxa16, x=x, w_packed=wp, scales=scales, zeros=zeros,
                                        group_size=g, bits=bits, out=out), args.repeat)
            xt = torch.randn(mm, kk, dtype=torch.float16, device="cuda")
            t16 = timed(functools.partial(torch.matmul, xt, w16), args.repeat)
            moved = wp.nbytes + scales.nbytes + zeros.nbytes + x.nbytes + out.nbytes
            print(f"W{bits}A16 M={mm} {kk}x{nn}: {t * 1e6:.1f} us, {t16 / t:.2f}x torch fp16 ({t16 * 1e6:.1f} us), "
                  f"{moved / t / 1e12:.2f} TB/s = {moved / t / bw:.2f} of copy bandwidth"
                  + ("  [target >= 2.5x fp16]" if bits == 4 and mm == 1 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
