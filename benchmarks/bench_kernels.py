"""GPU kernel benchmarks: each ratio against a baseline measured in the same run (docs/benchmarks.md).

    python benchmarks/bench_kernels.py            # needs cupy, torch (CUDA build) and a CUDA device
    python benchmarks/bench_kernels.py --quick    # smaller shapes, a smoke run
    python benchmarks/bench_kernels.py --json build/bench_kernels.json   # also the figures as JSON

Measures:
  - copy bandwidth (cudaMemcpyAsync device to device, 1 GiB): the memory ceiling;
  - W4A4 and W3A3 GEMM at M = N = K = 8192 (8 clusters, y only) against torch._int_mm (int8,
    same shape) and torch bf16 matmul; target W4A4 >= 0.7x torch._int_mm;
  - W4A16 and W3A16 at M = 1 and 16 on K = 8192, N = 28672 against torch fp16 matmul, with the
    achieved bandwidth as a fraction of the copy bandwidth; target W4A16 at M = 1 >= 2.5x fp16.
Operands are random packed bytes made on the device (``random_packed``). Only the kernel is timed:
every operand is prepared on the device first (``launch.prepare_*``:
checks, packing, zero-point compaction), then CUDA events bracket ``--inner`` back-to-back launches
(no host copy, no synchronisation between them), and the time per launch is the median over
``--repeat`` such brackets after warm-ups. Baselines are timed the same way. Without a GPU it
prints why and exits 0 (nothing is measured; no figure is invented).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cukernels.compile import gpu_available  # noqa: E402


def event_time(fn, *, repeat, inner, events):
    """Median seconds per call of ``fn`` over ``repeat`` brackets of ``inner`` calls; ``events`` makes
    (start, stop) pairs with record() / synchronize() / elapsed (seconds)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        start, stop, elapsed = events()
        start.record()
        for _ in range(inner):
            fn()
        stop.record()
        stop.synchronize()
        times.append(elapsed(start, stop) / inner)
    return float(np.median(times))


def cupy_events():
    import cupy as cp

    return cp.cuda.Event(), cp.cuda.Event(), lambda a, b: cp.cuda.get_elapsed_time(a, b) * 1e-3


def torch_events():
    import torch

    return (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True),
            lambda a, b: a.elapsed_time(b) * 1e-3)


def copy_bandwidth(nbytes, repeat):
    import cupy as cp

    src = cp.ones(nbytes, dtype=cp.uint8)
    dst = cp.empty_like(src)

    def copy():
        cp.cuda.runtime.memcpyAsync(dst.data.ptr, src.data.ptr, nbytes, cp.cuda.runtime.memcpyDeviceToDevice,
                                    cp.cuda.get_current_stream().ptr)

    t = event_time(copy, repeat=repeat, inner=2, events=cupy_events)
    return 2 * nbytes / t  # read + write


def random_packed(rows, row_bytes):
    """Random packed rows on the device: every byte pattern is a valid set of int4 / int3_planar codes, and
    the kernels' speed does not depend on the values (the harness checks the values, not this script)."""
    import cupy as cp

    return cp.random.randint(0, 256, size=(rows, row_bytes), dtype=cp.uint8)


def lowbit_case(bits, m, n, k, clusters):
    import cupy as cp

    from cukernels import host

    sizes = np.full(clusters, k // clusters)
    offs = host.padded_cluster_offsets(sizes).astype(np.int32)
    row = host.packed_row_bytes(int(offs[-1]), host.LOWBIT_LAYOUTS[bits])
    return dict(a_packed=random_packed(m, row), w_packed=random_packed(n, row),
                a_zero=cp.asarray(np.arange(clusters, dtype=np.int32) - 4),
                w_colsum=cp.random.randint(-64, 64, size=(clusters, n), dtype=cp.int32),
                cluster_offsets=cp.asarray(offs), scale_a=cp.ones(clusters, cp.float32),
                scale_w=cp.ones(n, cp.float32), out_y=cp.empty((m, n), cp.float32), bits=bits, write_isums=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes (a smoke run, not the recorded figures)")
    ap.add_argument("--repeat", type=int, default=15, help="event brackets per timing; the median is kept")
    ap.add_argument("--inner", type=int, default=5, help="back-to-back launches inside one bracket")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    if not gpu_available():
        print("bench_kernels: skipped: cupy or a CUDA device is missing; nothing measured")
        return 0
    import cupy as cp
    import torch

    from cukernels import host, launch

    dev = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    command = f"python benchmarks/bench_kernels.py{' --quick' if args.quick else ''}"
    print(f"# bench_kernels {datetime.date.today().isoformat()} on {dev}; command: {command}")
    copy_bytes = (256 if args.quick else 1024) << 20
    bw = copy_bandwidth(copy_bytes, args.repeat)
    print(f"copy bandwidth: {bw / 1e12:.2f} TB/s")
    figures = {"device": dev, "date": datetime.date.today().isoformat(), "command": command,
               "copy_bandwidth": bw, "copy_bytes": copy_bytes, "repeat": args.repeat, "rows": []}
    timing = dict(repeat=args.repeat, inner=args.inner)

    def row(name, shape, t, baseline, tb, target=None):
        figures["rows"].append({"name": name, "shape": shape, "us": t * 1e6, "baseline": baseline,
                                "baseline_us": tb * 1e6, "ratio": tb / t, "target": target})

    size = 2048 if args.quick else 8192
    m = n = k = size
    a8 = torch.randint(-8, 8, (m, k), dtype=torch.int8, device="cuda")
    b8 = torch.randint(-8, 8, (n, k), dtype=torch.int8, device="cuda").t()  # column-major B: _int_mm's fast path
    t_int = event_time(lambda: torch._int_mm(a8, b8), events=torch_events, **timing)
    abf, bbf = a8.to(torch.bfloat16), b8.to(torch.bfloat16)
    t_bf = event_time(lambda: abf @ bbf, events=torch_events, **timing)
    ops = 2.0 * m * n * k
    print(f"torch._int_mm {m}^3: {t_int * 1e3:.3f} ms ({ops / t_int / 1e12:.0f} TOPS); "
          f"torch bf16: {t_bf * 1e3:.3f} ms ({ops / t_bf / 1e12:.0f} TFLOP/s)")
    for bits in (4, 3):
        prepared = launch.prepare_lowbit_gemm(**lowbit_case(bits, m, n, k, clusters=8))
        t = event_time(prepared.launch, events=cupy_events, **timing)
        target = ">= 0.7x _int_mm" if bits == 4 else None
        print(f"W{bits}A{bits} {m}^3 (8 clusters, y only): {t * 1e3:.3f} ms ({ops / t / 1e12:.0f} TOPS), "
              f"{t_int / t:.2f}x torch._int_mm, {t_bf / t:.2f}x torch bf16"
              + (f"  [target {target}]" if target else ""))
        row(f"W{bits}A{bits}", f"{m}^3, 8 clusters", t, "torch._int_mm", t_int, target)
        row(f"W{bits}A{bits}", f"{m}^3, 8 clusters", t, "torch bf16 matmul", t_bf)
        del prepared

    kk, nn = (2048, 7168) if args.quick else (8192, 28672)
    rng = np.random.default_rng(1)
    g = 128
    for bits in (4, 3):
        wp = random_packed(nn, host.packed_row_bytes(host.wxa16_padded_k(kk), host.WXA16_LAYOUTS[bits]))
        scales = cp.asarray((rng.uniform(0.5, 1, (nn, kk // g)) * 0.01).astype(np.float16))
        zeros = cp.asarray(rng.integers(0, (1 << bits) - 1, (nn, kk // g), endpoint=True).astype(np.int32))
        w16 = torch.randn(kk, nn, dtype=torch.float16, device="cuda")
        for mm in (1, 16):
            x = cp.asarray(rng.standard_normal((mm, kk)).astype(np.float16))
            out = cp.empty((mm, nn), cp.float32)
            prepared = launch.prepare_wxa16(x=x, w_packed=wp, scales=scales, zeros=zeros, group_size=g, bits=bits,
                                            out=out)
            t = event_time(prepared.launch, events=cupy_events, **timing)
            xt = torch.randn(mm, kk, dtype=torch.float16, device="cuda")
            t16 = event_time(lambda xt=xt, w16=w16: torch.matmul(xt, w16), events=torch_events, **timing)
            moved = wp.nbytes + scales.nbytes + zeros.size + x.nbytes + out.nbytes  # zero points: one byte each
            target = ">= 2.5x fp16" if bits == 4 and mm == 1 else None
            print(f"W{bits}A16 M={mm} {kk}x{nn}: {t * 1e6:.1f} us, {t16 / t:.2f}x torch fp16 ({t16 * 1e6:.1f} us), "
                  f"{moved / t / 1e12:.2f} TB/s = {moved / t / bw:.2f} of copy bandwidth"
                  + (f"  [target {target}]" if target else ""))
            row(f"W{bits}A16", f"M={mm}, K={kk}, N={nn}", t, "torch fp16 matmul", t16, target)
            del prepared
    if args.json:
        from refsim.outputs import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
