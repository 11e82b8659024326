"""The one pool of threads the fast paths share, and the row split they run on it.

Compiled kernels (numba, ``nogil=True``) and numpy's BLAS calls release the GIL, so a few Python
threads run them in parallel. Every fast path splits its work into independent pieces (rows, tiles)
whose operations do not depend on which thread runs them, so results never depend on the count.

Why not numba's ``parallel=True``: it is a second thread mechanism (OpenMP) beside this one and BLAS's,
and its threads may keep spinning after a parallel region. Once, on the loaded 2-core machine, a GPTQ
call took 4.2 s after one parallel kernel against 0.38 s without, and 0.39 s with OMP_WAIT_POLICY=PASSIVE;
``benchmarks/bench_threads.py`` does not reproduce that in a fresh process (0.95x), so it is an
observation, not a measured rule. These threads sleep when idle. What is measured every run: small
products on multi-threaded BLAS are many times slower than on one thread (``benchmarks/bench_threads.py``),
so ``refsim.fused`` holds BLAS to one thread while its tiles run here.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor


@functools.cache
def _pool(pid: int) -> ThreadPoolExecutor:
    """The pool of process ``pid`` (a forked child has none of its parent's threads, so it makes its own)."""
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return ThreadPoolExecutor(max_workers=max(1, min(workers, 16)), thread_name_prefix="refsim")


def workers() -> int:
    return _pool(os.getpid())._max_workers


def run_all(func, items) -> list:
    """[func(item) for item in items], on the pool when there is more than one item and more than one thread."""
    items = list(items)
    if len(items) > 1 and workers() > 1:
        return list(_pool(os.getpid()).map(func, items))
    return [func(i) for i in items]


def row_spans(n: int, min_rows: int = 1) -> list[tuple[int, int]]:
    """[start, stop) spans that split n rows into one span per thread (at least ``min_rows`` rows each)."""
    parts = max(1, min(workers(), n // max(1, min_rows)))
    step = -(-n // parts) if n else 0
    return [(i, min(n, i + step)) for i in range(0, n, step)] if n else []
