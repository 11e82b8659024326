"""Benchmark: evaluate N design points of the memory and roofline model, vectorized over the points.

Each point draws weight / activation / KV bits, SDR group, RPTQ clusters, batch and sequence length at
random (seeded) and gets its full memory breakdown and the prefill and decode roofline (time, DRAM
bytes, energy) of one model on one piece of hardware: one numpy evaluation for all points, no
Python loop per point. Target: >= 100,000 points per second.

    .venv/bin/python benchmarks/bench_hwmodel.py [--points 100000] [--model opt-66b] [--hw H200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hwmodel.footprint import memory_parts
from hwmodel.hardware import get_hardware
from hwmodel.quantconfig import NUMERIC_FIELDS, PRESETS
from hwmodel.shapes import get_shape
from hwmodel.traffic import stage_totals


def random_points(n: int, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(seed))
    base = PRESETS["W4A4"].fields()
    f = {k: np.full(n, v) for k, v in base.items()}
    bits = np.array([2, 3, 4, 6, 8, 16], dtype=np.float64)
    f["w_bits"] = rng.choice(bits[:-1], n)
    f["a_bits"] = rng.choice(bits, n)
    f["kv_bits"] = rng.choice(bits, n)
    f["ln_bits"] = np.where(f["a_bits"] < 16, np.maximum(8, f["a_bits"]), 16)
    f["embed_bits"] = f["lm_head_bits"] = f["w_bits"]
    sdr = rng.random(n) < 0.5  # half QRazor-like (SDR flags), half RPTQ-like (clusters)
    group = rng.choice([16, 32, 64, 128], n).astype(np.float64)
    f["a_sdr_group"] = f["w_sdr_group"] = f["kv_sdr_group"] = np.where(sdr, group, 0)
    f["clusters"] = np.where(sdr, 0, rng.choice([1, 4, 16, 32, 64], n))
    f["w_group"] = rng.choice([0, 64, 128], n)
    assert set(f) == set(NUMERIC_FIELDS)
    batch = rng.choice([1, 4, 8, 16, 32, 64, 128], n).astype(np.float64)
    seq = rng.choice([512, 1024, 2048, 4096, 8192, 32768], n).astype(np.float64)
    return f, batch, seq


def evaluate(shape, hw, f, batch, seq) -> dict:
    mem = memory_parts(shape, f, batch, seq)
    pre = stage_totals(shape, f, hw, batch, seq, "prefill")
    dec = stage_totals(shape, f, hw, batch, seq, "decode")
    return {"memory": mem["total"], "prefill_s": pre["time_s"], "decode_s": dec["time_s"],
            "decode_j_per_token": dec["energy_per_token_j"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--model", default="opt-66b")
    ap.add_argument("--hw", default="H200")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    shape, hw = get_shape(args.model), get_hardware(args.hw)
    f, batch, seq = random_points(args.points)
    evaluate(shape, hw, {k: v[:16] for k, v in f.items()}, batch[:16], seq[:16])  # warm-up
    best = float("inf")
    for i in range(args.repeat):
        t0 = time.perf_counter()
        out = evaluate(shape, hw, f, batch, seq)
        dt = time.perf_counter() - t0
        best = min(best, dt)
        print(f"run {i + 1}/{args.repeat}: {args.points} points in {dt:.3f} s", flush=True)
    assert all(np.all(np.isfinite(v)) and v.shape == (args.points,) for v in out.values())
    rate = args.points / best
    print(f"{shape.name} on {hw.name}: {rate:,.0f} design points per second "
          f"(memory + prefill and decode roofline + energy; best of {args.repeat}; target >= 100,000)")
    print(f"median memory {np.median(out['memory']) / 2**30:.1f} GiB, median decode step "
          f"{np.median(out['decode_s']) * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
