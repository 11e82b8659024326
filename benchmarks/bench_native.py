"""Speed of the native-weights GEMM (``refsim.qtensor.block_offset_matmul``) against RPTQ's cluster GEMM.

    python benchmarks/bench_native.py [--tokens 512] [--clusters 32] [--repeat 2]

Baseline: ``refsim.qtensor.qmatmul`` of RPTQ activations (``clusters`` clusters over the input channels)
and GPTQ-form 4-bit weights per output row x input cluster (RPTQ W4A4), on SmolLM2-135M's shapes
(q_proj K = N = 576; down_proj K = 1536, N = 576), random codes. Against it, in the same run, the
native GGUF Q4_1 weights (one (d, m) per row x block of 32) with
  - block-aligned clusters (each block inside one cluster: P = K / 32 pairs), and
  - scattered clusters (RPTQ's channel clusters, blocks scattered over them: P up to min(K, B x C) pairs),
both with ``keep_sums=False`` (one pair at a time). Prints seconds and the ratio to the baseline per
shape; the last line is ``ratio: N.NNx`` (block-aligned native, the NATIVE configurations' layout,
/ baseline on down_proj).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from refsim.qtensor import (
    Granularity,
    QuantizedTensor,
    block_cluster_pairs,
    block_offset_weight,
    qmatmul,
    weight_tensor,
)
from refsim.spec import preset


def best_of(a, w, spec, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        qmatmul(a, w, spec=spec)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--clusters", type=int, default=32)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    spec = preset("rptq")
    last = None
    for name, k, n in (("q_proj", 576, 576), ("down_proj", 1536, 576)):
        c = args.clusters
        ids = np.sort(rng.integers(0, c, k))  # physical layout: clusters contiguous
        ids[:c] = np.arange(c)
        ids = np.sort(ids)
        sa = rng.uniform(0.01, 0.1, c).astype(np.float16)
        za = rng.integers(-8, 8, c)
        codes = rng.integers(-8, 8, (args.tokens, k))
        a = QuantizedTensor(codes, sa, za, Granularity.CLUSTER, 4, True, spec, axis=-1, clusters=ids)
        wq = rng.integers(0, 16, (n, k))
        gptq = weight_tensor(wq, rng.uniform(0.01, 0.1, (n, c)).astype(np.float32), rng.integers(0, 16, (n, c)), ids,
                             bits=4)
        d = rng.uniform(0.01, 0.1, (n, k // 32)).astype(np.float16)
        m = rng.uniform(-0.5, 0, (n, k // 32)).astype(np.float16)
        perm = rng.permutation(k)  # the RPTQ reorder scatters the file's blocks over the clusters
        scattered = block_offset_weight(wq, d, m, blocks=perm // 32, keep_sums=False)
        aligned_ids = np.arange(k) // 32 % c  # each block inside one cluster
        a_aligned = QuantizedTensor(codes, sa, za, Granularity.CLUSTER, 4, True, spec, axis=-1,
                                    clusters=aligned_ids)
        natural = block_offset_weight(wq, d, m, keep_sums=False)
        t_base = best_of(a, gptq, spec, args.repeat)
        t_al = best_of(a_aligned, natural, spec, args.repeat)
        t_sc = best_of(a, scattered, spec, args.repeat)
        pairs_sc = block_cluster_pairs(perm // 32, ids)[1].size
        print(f"{name}: M={args.tokens} K={k} N={n} C={c}: rptq cluster gemm {t_base:.3f} s; "
              f"native block-aligned (P={k // 32}) {t_al:.3f} s = {t_al / t_base:.2f}x; "
              f"native scattered (P={pairs_sc}) {t_sc:.3f} s = {t_sc / t_base:.2f}x")
        last = t_al / t_base
    print(f"ratio: {last:.2f}x")


if __name__ == "__main__":
    main()
