"""The prepared device run (``make gpu-campaign``): GPU tests, a time-boxed harness campaign per kernel, the
benchmark, and the figures written into docs/benchmarks.md -- in one call of at most 8 minutes.

    PYTHONPATH=. python3 -m cukernels.campaign                       # everything, on a CUDA machine
    PYTHONPATH=. python3 -m cukernels.campaign --budget 60 --quick   # a short rehearsal
    PYTHONPATH=. python3 -m cukernels.campaign --dry-run             # the plan, no GPU needed

Steps, each under its own time limit (``--budget`` seconds in all, split as PLAN states):
  1. ``pytest -m gpu tests/test_cukernels_gpu.py`` (the GPU test suite);
  2. the harness campaign: worker processes (one per CPU core but one) each run
     ``harness.validate`` on fresh seeds until their deadline, workers shared among the targets
     in proportion to the cost of building their cases (the reference on the CPU dominates);
     a target passes with zero failing cases and at least ``--min-cases`` cases (10^4 for the
     bit-exact kernels);
  3. ``benchmarks/bench_kernels.py --json``;
  0. (first) every kernel module is compiled once, so that cupy's on-disk cache serves the rest;
  4. ``cukernels.gpu_report`` writes the campaign and benchmark figures into the marked GPU
     section of docs/benchmarks.md, with date, device and command.
Exit status 0 only if every step passed. Without cupy or a device every GPU step is reported as
skipped and the exit status is 77 (nothing is written into the docs).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPED = 77
# Relative cost of building one case of each target (measured on CPU: lowbit_gemm's reference is the
# dearest) -> share of the worker processes.
CASE_COST = {"lowbit_gemm": 6, "ln_quant": 2, "sdr_encode": 2, "sdr_gemm": 2, "wxa16": 1}
BIT_EXACT = ("lowbit_gemm", "ln_quant", "sdr_encode", "sdr_gemm")
MIN_CASES = 10_000
# Shares of the budget: tests, campaign, benchmark (the rest is start-up and the report).
PLAN = {"tests": 0.22, "campaign": 0.50, "bench": 0.18}


def assign_workers(workers: int, targets=tuple(CASE_COST)) -> dict[str, int]:
    """At least one worker per target, the rest by case cost (largest remainder)."""
    if workers < len(targets):
        raise ValueError(f"workers={workers} is not allowed; allowed: at least {len(targets)} (one per target)")
    out = {t: 1 for t in targets}
    spare = workers - len(targets)
    total = sum(CASE_COST[t] for t in targets)
    quotas = {t: spare * CASE_COST[t] / total for t in targets}
    for t in targets:
        out[t] += int(quotas[t])
    left = workers - sum(out.values())
    for t in sorted(targets, key=lambda t: quotas[t] - int(quotas[t]), reverse=True)[:left]:
        out[t] += 1
    return out


def _worker(target: str, index: int, deadline: float, queue, chunk: int, xp: str, kernel_spec) -> None:
    """Run campaigns of ``chunk`` cases on fresh seeds until the deadline; report through ``queue``."""
    try:
        from cukernels import harness

        if kernel_spec is None:
            from cukernels import launch

            kernel = launch.KERNELS[target][0]
        else:
            from cukernels.cli import load_kernel

            kernel = load_kernel(kernel_spec)
        cases, failures, seeds = 0, [], []
        seed = 1_000_000 * (1 + list(CASE_COST).index(target)) + index
        while True:  # at least one chunk, even when start-up ate the time
            rep = harness.validate(kernel, target, max_examples=chunk, seed=seed, xp=xp, shrink=False)
            cases += rep.cases_run
            seeds.append(seed)
            if not rep.ok:
                failures.append(rep.format())
            seed += 1000
            if failures or time.time() >= deadline:
                break
        queue.put({"target": target, "worker": index, "cases": cases, "seeds": seeds, "failures": failures})
    except Exception as exc:  # a worker that cannot run is a failure of its target, not a silent loss
        queue.put({"target": target, "worker": index, "cases": 0, "seeds": [],
                   "failures": [f"worker {index} of {target} failed: {type(exc).__name__}: {exc}"]})


def run_campaign(seconds: float, workers: int, chunk: int = 100, *, xp="cupy", kernels=None, targets=None,
                 grace: float | None = None) -> dict:
    """{target: {"cases", "failing", "reports", "workers"}} of a time-boxed multi-process campaign.

    ``kernels`` maps a target to a ``module:function`` kernel (default: the built-in launcher);
    ``targets`` restricts the campaign (default: every target). With ``xp="numpy"`` and numpy
    kernels it runs on any machine (the tests rehearse it so). Workers still running ``grace``
    seconds after the deadline (default: min(30, a quarter of the campaign + 5)) are stopped and
    counted as lost."""
    targets = tuple(targets or CASE_COST)
    ctx = mp.get_context("spawn")  # CUDA contexts do not survive fork
    queue = ctx.Queue()
    deadline = time.time() + seconds
    procs = []
    for target, n in assign_workers(workers, targets).items():
        for i in range(n):
            p = ctx.Process(target=_worker, args=(target, i, deadline, queue, chunk, xp, (kernels or {}).get(target)),
                            daemon=True)
            p.start()
            procs.append(p)
    results: dict = {t: {"cases": 0, "failing": 0, "reports": [], "workers": 0} for t in targets}
    got = 0
    # a worker finishes its last chunk after the deadline; give it some grace, then stop waiting
    grace = min(30.0, 0.25 * seconds + 5) if grace is None else grace
    while got < len(procs) and time.time() < deadline + grace:
        try:
            r = queue.get(timeout=1.0)
        except Exception:
            continue
        got += 1
        res = results[r["target"]]
        res["cases"] += r["cases"]
        res["workers"] += 1
        res["failing"] += len(r["failures"])
        res["reports"].extend(r["failures"])
    for p in procs:
        if p.is_alive():
            p.terminate()
    results["_lost_workers"] = len(procs) - got
    return results


def campaign_ok(results: dict, min_cases: int = MIN_CASES) -> bool:
    """Zero failures everywhere, no lost worker, and at least ``min_cases`` per bit-exact target."""
    if results.get("_lost_workers", 0):
        return False
    targets = [t for t in results if not t.startswith("_")]
    return all(results[t]["failing"] == 0 for t in targets) and all(
        results[t]["cases"] >= min_cases for t in BIT_EXACT if t in targets)


def _step(cmd: list[str], timeout: float, env=None) -> tuple[int, str]:
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        return proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return 124, out + f"\n(timed out after {timeout:.0f} s)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for the whole run (default 420)")
    ap.add_argument("--workers", type=int, default=max(len(CASE_COST), (os.cpu_count() or 2) - 1),
                    help="campaign worker processes (default: CPU cores - 1, at least one per target)")
    ap.add_argument("--min-cases", type=int, default=MIN_CASES,
                    help=f"cases each bit-exact kernel must reach (default {MIN_CASES})")
    ap.add_argument("--quick", action="store_true", help="benchmark at small shapes (a rehearsal; not recorded)")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"), help="the file the figures go into")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = ap.parse_args(argv)
    from cukernels.compile import gpu_available

    plan = {k: round(v * args.budget) for k, v in PLAN.items()}
    print(f"gpu-campaign: budget {args.budget:.0f} s: {plan}; workers {assign_workers(args.workers)}", flush=True)
    if args.dry_run:
        return 0
    if not gpu_available():
        print("gpu-campaign: skipped: cupy or a CUDA device is missing (tests, campaign, benchmark not run)")
        return SKIPPED
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.time()
    from cukernels import launch

    print(f"gpu-campaign: kernels compiled in {launch.warm_up():.0f} s (cupy's kernel cache now serves every "
          "later process)", flush=True)
    left = max(60.0, args.budget - (time.time() - t0))
    plan = {k: round(v * left / sum(PLAN.values())) for k, v in PLAN.items()}
    print(f"gpu-campaign: the remaining {left:.0f} s: {plan}", flush=True)
    rc_tests, out_tests = _step([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-x",
                                 "tests/test_cukernels_gpu.py", "-p", "no:cacheprovider"], plan["tests"], env)
    print(out_tests[-3000:], flush=True)
    print(f"gpu-campaign: tests rc={rc_tests} ({time.time() - t0:.0f} s)", flush=True)
    t1 = time.time()
    results = run_campaign(plan["campaign"], args.workers)
    for t in CASE_COST:
        r = results[t]
        print(f"  {t}: {r['cases']} cases, {r['failing']} failing ({r['workers']} workers)")
        for rep in r["reports"][:2]:
            print("    " + rep.replace("\n", "\n    "))
    ok_campaign = campaign_ok(results, args.min_cases)
    print(f"gpu-campaign: campaign {'ok' if ok_campaign else 'FAILED'} ({time.time() - t1:.0f} s)", flush=True)
    t2 = time.time()
    bench_json = ROOT / "build" / "bench_kernels.json"
    bench_json.parent.mkdir(exist_ok=True)
    cmd = [sys.executable, "benchmarks/bench_kernels.py", "--json", str(bench_json)]
    cmd += ["--quick"] if args.quick else []
    rc_bench, out_bench = _step(cmd, plan["bench"], env)
    print(out_bench[-4000:], flush=True)
    print(f"gpu-campaign: bench rc={rc_bench} ({time.time() - t2:.0f} s)", flush=True)
    from cukernels import gpu_report

    bench = json.loads(bench_json.read_text()) if rc_bench == 0 and bench_json.is_file() else None
    if not args.quick:
        gpu_report.write_section(args.doc, gpu_report.render(
            bench=bench, campaign=results, tests_rc=rc_tests, command="make gpu-campaign",
            seconds=time.time() - t0))
        print(f"gpu-campaign: figures written into {args.doc}")
    return 0 if (rc_tests == 0 and ok_campaign and rc_bench == 0) else 1


if __name__ == "__main__":
    sys.exit(main())
