"""Co-design sweep: memory, throughput and energy of each design point beside its quantization error.

A design point is a method (``rptq`` or ``qrazor``) with weight, activation and KV-cache bits and the
method's knob (RPTQ cluster count, QRazor SDR group size). For every point the sweep computes

* costs, vectorized over all points at once (:mod:`hwmodel.footprint`, :mod:`hwmodel.traffic`):
  total memory (GiB) at the given batch and sequence, decode and prefill throughput (tokens/s) and
  decode energy per token (J) on the given hardware;
* errors, with ``refsim`` on calibration tensors (:func:`hwmodel.errors.measure_error`), spread over a
  Dask cluster (``dask.distributed``): a ``LocalCluster`` by default, an existing scheduler when an
  address is given, or in-process (``scheduler="inline"``, no Dask). The result does not depend on
  where it ran: every task is a pure function of its points and the calibration tensors, k-means is
  seeded, and the rows come back in point order.

Pareto fronts: points not dominated in (memory, -SQNR) and in (energy per token, -SQNR), SQNR being
the headline ``sqnr_db`` (layer output and keys together, see :mod:`hwmodel.errors`).
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from dataclasses import dataclass

import numpy as np

from .calib import Calibration, synthetic_calibration
from .errors import measure_error
from .footprint import GIB, memory_parts
from .hardware import get_hardware
from .quantconfig import QuantConfig, qrazor, rptq, stack
from .shapes import get_shape
from .traffic import stage_totals

ERROR_KEYS = ("sqnr_db", "sqnr_y_db", "sqnr_x_db", "sqnr_w_db", "sqnr_k_db")


def default_grid(*, w_bits=(3, 4, 8), a_bits=(3, 4, 8, 16), kv_bits=(3, 4, 8, 16), clusters=(1, 4, 16, 32),
                 groups=(16, 32, 64, 128), methods=("rptq", "qrazor")) -> list[dict]:
    """Design points: RPTQ over bits x clusters (clusters only matter with quantized activations),
    QRazor over bits x SDR groups (activations and KV at 16 bits are not razored: skipped)."""
    pts: list[dict] = []
    if "rptq" in methods:
        for w, a, kv in itertools.product(w_bits, a_bits, kv_bits):
            for c in (clusters if a < 16 else clusters[:1]):
                pts.append({"method": "rptq", "w_bits": w, "a_bits": a, "kv_bits": kv, "clusters": c})
    if "qrazor" in methods:
        for w, a, kv in itertools.product(w_bits, a_bits, kv_bits):
            if a >= 16 or kv >= 16:
                continue
            for g in groups:
                pts.append({"method": "qrazor", "w_bits": w, "a_bits": a, "kv_bits": kv, "group": g})
    return pts


def small_grid() -> list[dict]:
    """A 12-point grid for a quick look (and the tests): 3/4/8-bit RPTQ and QRazor corners."""
    return (default_grid(w_bits=(3, 4), a_bits=(4, 8), kv_bits=(4,), clusters=(1, 16), methods=("rptq",))
            + default_grid(w_bits=(4,), a_bits=(4, 8), kv_bits=(4,), groups=(16, 128), methods=("qrazor",)))


GRIDS = {"default": default_grid, "small": small_grid}


def point_config(p: dict) -> QuantConfig:
    """The :class:`QuantConfig` whose costs a design point has."""
    label = point_label(p)
    if p["method"] == "rptq":
        return rptq(p["w_bits"], p["a_bits"], kv=p["kv_bits"], clusters=max(int(p.get("clusters", 1)), 1),
                    name=label)
    if p["method"] == "qrazor":
        return qrazor(w=p["w_bits"], a=p["a_bits"], kv=p["kv_bits"], group=int(p["group"]), name=label)
    raise ValueError(f"method must be 'rptq' or 'qrazor', got {p['method']!r}")


def point_label(p: dict) -> str:
    knob = f"c{p.get('clusters', 1)}" if p["method"] == "rptq" else f"g{p['group']}"
    return f"{p['method']} W{p['w_bits']}A{p['a_bits']}KV{p['kv_bits']} {knob}"


def _error_chunk(points: list[dict], calib: Calibration) -> list[dict]:
    return [measure_error(p, calib) for p in points]


def compute_errors(points: list[dict], calib: Calibration, *, scheduler: str | None = None,
                   n_workers: int = 2, chunk_size: int = 8, progress: bool = True) -> list[dict]:
    """``measure_error`` for every point: in-process (``scheduler="inline"``), on a new
    ``LocalCluster`` (``None``) or on the Dask scheduler at ``scheduler`` (an address such as
    ``tcp://10.0.0.5:8786``). Returns the rows in point order."""
    chunks = [points[i : i + chunk_size] for i in range(0, len(points), chunk_size)]
    results = map_tasks(_error_chunk, chunks, calib, scheduler=scheduler, n_workers=n_workers,
                        progress=progress, what="sweep errors", unit="chunks",
                        sizes=[len(c) for c in chunks], key="hwmodel-err")
    return [row for chunk in results for row in chunk]


def map_tasks(func, tasks: list, shared, *, scheduler: str | None = None, n_workers: int = 2,
              progress: bool = True, what: str = "sweep", unit: str = "tasks", sizes: list[int] | None = None,
              key: str = "hwmodel-task") -> list:
    """``[func(t, shared) for t in tasks]``, in task order, wherever it runs: in-process
    (``scheduler="inline"``), on a new ``LocalCluster`` of ``n_workers`` processes (``None``) or on
    the Dask scheduler at ``scheduler``. ``shared`` is scattered once to every worker. The results
    do not depend on where they ran as long as ``func`` is a pure function of its arguments.

    Progress goes to stderr (a live line on a terminal, about ten plain lines in a log); ``sizes``
    (points per task) lets it count points as well. Ctrl-C cancels the submitted work, closes the
    cluster quietly and re-raises KeyboardInterrupt."""
    tty = sys.stderr.isatty()
    step = max(1, len(tasks) // 10)
    total = sum(sizes) if sizes else None

    def report(done: int, t0: float):
        if progress and (tty or done % step == 0 or done == len(tasks)):
            pts = f" ({sum(sizes[:done])}/{total} points)" if sizes else ""
            print(f"{chr(13) if tty else ''}{what}: {done}/{len(tasks)} {unit}{pts} {time.time() - t0:.1f}s",
                  end="" if tty else "\n", file=sys.stderr, flush=True)

    t0 = time.time()
    if scheduler == "inline":
        out = []
        for i, task in enumerate(tasks):
            out.append(func(task, shared))
            report(i + 1, t0)
        if progress and tty:
            print(file=sys.stderr)
        return out

    cluster = None
    if scheduler is None:
        cluster = _local_cluster(n_workers)
    from distributed import Client, as_completed

    if cluster is not None:
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ValueError(f"--scheduler {scheduler}: cannot reach a Dask scheduler there ({exc})") from None
    futures: list = []
    try:
        shared_f = client.scatter(shared, broadcast=True)
        futures = [client.submit(func, task, shared_f, key=f"{key}-{i}-{id(tasks)}-{t0}")
                   for i, task in enumerate(tasks)]
        index = {f.key: i for i, f in enumerate(futures)}
        results: list = [None] * len(tasks)
        for done, fut in enumerate(as_completed(futures), start=1):
            results[index[fut.key]] = fut.result()
            report(done, t0)
        if progress and tty:
            print(file=sys.stderr)
    except KeyboardInterrupt:
        # Ctrl-C: cancel the work and shut the cluster down without distributed's shutdown noise
        _quiet_distributed()
        with contextlib.suppress(Exception):
            client.cancel(futures)
        raise
    finally:
        with contextlib.suppress(Exception):
            client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()
    return results


def _quiet_distributed() -> None:
    import logging

    for name in ("distributed", "tornado", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def _local_cluster(n_workers: int):
    """A ``LocalCluster`` whose worker processes ignore SIGINT.

    Ctrl-C in a terminal sends SIGINT to the whole foreground process group: without this every worker
    process prints its own KeyboardInterrupt traceback (about 130 lines for two workers). The workers
    are started with SIGINT ignored, a disposition that survives fork and exec (Python installs its
    KeyboardInterrupt handler only where SIGINT is at its default), so only this process sees Ctrl-C
    and shuts them down. The price: a Ctrl-C in the seconds the cluster takes to start is lost (the
    disposition is process-wide). Blocking SIGINT with a signal mask instead was tried: the workers
    still received it."""
    import logging
    import signal
    import threading

    from distributed import LocalCluster

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                            dashboard_address=None, silence_logs=logging.CRITICAL)
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def compute_costs(points: list[dict], model, hw, *, batch: int, seq: int) -> dict[str, np.ndarray]:
    """Memory, throughput and energy of every point, vectorized (one numpy evaluation for all points)."""
    return config_costs([point_config(p) for p in points], model, hw, batch=batch, seq=seq)


def config_costs(configs, model, hw, *, batch: int, seq: int) -> dict[str, np.ndarray]:
    """Memory (GiB), decode and prefill tokens/s and energy per token (J) of every configuration on
    ``hw`` at ``batch`` sequences of ``seq`` tokens: one vectorized evaluation of
    :func:`hwmodel.footprint.memory_parts` and :func:`hwmodel.traffic.stage_totals`."""
    shape, hw = get_shape(model), get_hardware(hw)
    f = stack(configs)
    mem = memory_parts(shape, f, batch, seq)
    dec = stage_totals(shape, f, hw, batch, seq, "decode")
    pre = stage_totals(shape, f, hw, batch, seq, "prefill")
    return {"memory_gib": mem["total"] / GIB, "weights_gib": mem["weights"] / GIB, "kv_gib": mem["kv"] / GIB,
            "decode_tokens_per_s": dec["tokens_per_s"], "prefill_tokens_per_s": pre["tokens_per_s"],
            "decode_energy_per_token_j": dec["energy_per_token_j"],
            "prefill_energy_per_token_j": pre["energy_per_token_j"]}


def pareto_mask(*objectives) -> np.ndarray:
    """True for points not dominated when every objective is minimized (ties do not dominate)."""
    obj = np.stack([np.asarray(o, dtype=np.float64) for o in objectives], axis=1)
    n = len(obj)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        le = np.all(obj <= obj[i], axis=1)
        lt = np.any(obj < obj[i], axis=1)
        if np.any(le & lt):
            mask[i] = False
    return mask


@dataclass
class SweepResult:
    model: str
    hardware: str
    batch: int
    seq: int
    calib_source: str
    rows: list[dict]

    def column(self, key: str) -> np.ndarray:
        return np.array([r[key] for r in self.rows])


def run_sweep(model, hw, *, batch: int, seq: int, points: list[dict] | None = None,
              calib: Calibration | None = None, scheduler: str | None = None, n_workers: int = 2,
              progress: bool = True) -> SweepResult:
    """The co-design sweep (see the module docstring)."""
    shape, hw = get_shape(model), get_hardware(hw)
    for name, v in (("batch", batch), ("seq", seq)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    points = default_grid() if points is None else list(points)
    if not points:
        raise ValueError("points: the sweep needs at least one design point")
    calib = calib or synthetic_calibration(0)
    costs = compute_costs(points, shape, hw, batch=batch, seq=seq)
    errors = compute_errors(points, calib, scheduler=scheduler, n_workers=n_workers, progress=progress)
    rows = []
    for i, (p, e) in enumerate(zip(points, errors, strict=True)):
        row = {"label": point_label(p), **p}
        row.setdefault("clusters", 0)
        row.setdefault("group", 0)
        row.update({k: float(v[i]) for k, v in costs.items()})
        row.update(e)
        rows.append(row)
    neg_sqnr = -np.array([r["sqnr_db"] for r in rows])
    mem = np.array([r["memory_gib"] for r in rows])
    energy = np.array([r["decode_energy_per_token_j"] for r in rows])
    for r, pm, pe in zip(rows, pareto_mask(mem, neg_sqnr), pareto_mask(energy, neg_sqnr), strict=True):
        r["pareto_memory"] = bool(pm)
        r["pareto_energy"] = bool(pe)
    return SweepResult(shape.name, hw.name, int(batch), int(seq), calib.source, rows)
