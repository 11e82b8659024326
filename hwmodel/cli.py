"""``refsim cost``: memory, traffic, throughput and energy of a model on a piece of hardware.

    refsim cost MODEL --hw H200 --config W4A4KV --batch 64 --seq 8192 [--json|--csv] [--plot DIR]

MODEL is a built-in name (``refsim cost --list``) or a local directory holding a ``config.json``.
``--config`` takes one or more comma-separated configurations. ``--layers`` adds the per-operation
table (prefill and decode). ``--sweep`` runs the co-design sweep on Dask (a local cluster, or
``--scheduler ADDRESS``); ``--plot DIR`` writes cost_memory.png, cost_savings.png,
cost_roofline.png and cost_pareto.png (the last runs the sweep).

Heavy imports (matplotlib, dask, refsim's quantizers) happen inside :func:`run`, not at import.
"""

from __future__ import annotations

import argparse
import sys


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {v}")
        return v

    return parse


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "cost", help="memory, traffic, throughput and energy of 3/4-bit LLM inference hardware",
        description=__doc__.split("\n\n")[0] + " Sizes are reported in GiB (2^30 bytes) and GB (10^9 bytes).",
    )
    p.add_argument("model", nargs="?", help="model name (see --list) or a directory holding a config.json")
    p.add_argument("--hw", default="H200", help="hardware name (see --list) or a JSON file (default: H200)")
    p.add_argument("--config", default="W16A16,W4A16,W4A4KV,W4A4",
                   help="comma-separated configurations: presets (see --list), W<w>A<a>[KV<k>] or, for one "
                        "custom configuration, key=value pairs joined by ':' (e.g. w=3:a=8:kv=4)")
    p.add_argument("--batch", type=_positive_int("batch"), default=1, help="sequences in flight (default 1)")
    p.add_argument("--seq", type=_positive_int("seq"), default=2048,
                   help="sequence length in tokens (default 2048)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON instead of tables")
    fmt.add_argument("--csv", action="store_true", help="print CSV instead of tables")
    p.add_argument("--layers", action="store_true", help="also print the per-operation roofline table")
    p.add_argument("--tensors", action="store_true",
                   help="also print every weight tensor: shape, copies, parameters")
    p.add_argument("--plot", metavar="DIR", help="write the cost_*.png plots into DIR")
    p.add_argument("--sweep", action="store_true", help="run the co-design sweep (errors measured by refsim)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler address for the sweep (default: a new local cluster; "
                        "'inline': no Dask)")
    p.add_argument("--grid", choices=("default", "small"), default="default",
                   help="sweep grid: default (264 points) or small (12 points, a quick look)")
    p.add_argument("--workers", type=_positive_int("workers"), default=2,
                   help="local-cluster workers (default 2)")
    p.add_argument("--calib", metavar="NPZ", help="calibration tensors x, w, k (default: synthetic, seed 0)")
    p.add_argument("--list", action="store_true", help="list known models, hardware and configurations")
    p.set_defaults(func=run)
    return p


def _configs(text: str):
    from .quantconfig import parse_config

    if "=" in text:
        return [parse_config(text.replace(":", ","))]
    return [parse_config(c) for c in text.split(",") if c.strip()]


def _list() -> str:
    from .energy import energy_table
    from .hardware import BUILTIN as HW
    from .quantconfig import PRESETS
    from .shapes import BUILTIN as MODELS

    lines = ["models:"] + [f"  {s.describe()}" for s in MODELS.values()]
    lines += ["hardware:"] + [f"  {h.describe()}\n      {h.notes}" for h in HW.values()]
    lines += ["configurations:"] + [f"  {c.name}" for c in PRESETS.values()]
    lines += ["  W<w>A<a>[KV<k>] (uniform), key=value pairs (see hwmodel.quantconfig.custom)"]
    lines += ["MAC energy (pJ, 45 nm):"]
    lines += [f"  W{r['w_bits']}A{r['a_bits']}: {r['mac_pj']:.3f}  {r['source']}"
              for r in energy_table() if r["w_bits"] == r["a_bits"]]
    return "\n".join(lines)


def run(args) -> int:
    from .calib import load_calibration, synthetic_calibration
    from .footprint import memory
    from .hardware import get_hardware
    from .report import layer_rows, summary_rows, table, to_csv, to_json
    from .shapes import get_shape
    from .traffic import STAGES, layer_table, mac_energy_notes, throughput

    if args.list:
        print(_list())
        return 0
    if not args.model:
        raise ValueError("model is required (a built-in name, see `refsim cost --list`, "
                         "or a directory holding a config.json)")
    shape = get_shape(args.model)
    hw = get_hardware(args.hw)
    configs = _configs(args.config)
    if not configs:
        raise ValueError("--config: give at least one configuration")
    results = []
    for cfg in configs:
        res = {"config": cfg, "memory": memory(shape, cfg, batch=args.batch, seq=args.seq),
               "throughput": throughput(shape, cfg, hw, batch=args.batch, seq=args.seq),
               "mac_energy": mac_energy_notes(shape, cfg, hw)}
        if args.layers or args.json or args.csv:
            res["layers"] = [row for st in STAGES
                             for row in layer_table(shape, cfg, hw, batch=args.batch, seq=args.seq, stage=st)]
        results.append(res)

    sweep = None
    if args.sweep or args.plot:
        from .sweep import GRIDS, run_sweep

        calib = load_calibration(args.calib) if args.calib else synthetic_calibration(0)
        sweep = run_sweep(shape, hw, batch=args.batch, seq=args.seq, calib=calib, scheduler=args.scheduler,
                          points=GRIDS[args.grid](),
                          n_workers=args.workers, progress=not (args.json or args.csv))

    if args.json:
        doc = {"model": shape.name, "hardware": hw.name, "batch": args.batch, "seq": args.seq,
               "units": {"bytes": "B", "gib": "2^30 B", "gb": "10^9 B", "energy": "J", "time": "s"},
               "results": [{"config": r["config"].to_dict(), "memory": r["memory"].to_dict(),
                            "throughput": r["throughput"], "mac_energy_pj": r["mac_energy"],
                            "layers": r["layers"]} for r in results],
               "tensors": [{"name": t.name, "kind": t.kind, "shape": list(t.shape), "count": t.count,
                            "params": t.numel} for t in shape.tensors()]}
        if sweep is not None:
            doc["sweep"] = {"calibration": sweep.calib_source, "rows": sweep.rows}
        print(to_json(doc))
    elif args.csv:
        rows = []
        for r in results:
            m = r["memory"].to_dict()
            m.pop("parts_bytes")
            for st in STAGES:
                rows.append({**m, "stage": st, "hardware": hw.name,
                             **{k: v for k, v in r["throughput"][st].items()}})
        print(to_csv(rows), end="")
        if args.layers:
            print()
            layer_rows_ = [{"config": r["config"].name, **row} for r in results for row in r["layers"]]
            print(to_csv(layer_rows_), end="")
        if sweep is not None:
            print()
            print(to_csv(sweep.rows), end="")
    else:
        print(f"{shape.describe()}")
        print(f"{hw.describe()}\n  {hw.notes}")
        print(f"batch {args.batch}, sequence {args.seq} tokens; GiB = 2^30 bytes, GB = 10^9 bytes; "
              f"decode = one step at context {args.seq}\n")
        header, rows = summary_rows(results, hw)
        print(table(rows, header))
        notes = {n["mac"]: n for r in results for n in r["mac_energy"]}
        print("energy (45 nm figures: compare configurations, not absolute joules): MAC "
              + ", ".join(f"{k} {n['pj']:.3g} pJ [{n['source']}]" for k, n in sorted(notes.items()))
              + f"; DRAM {hw.dram_pj_per_bit:g} pJ/bit")
        if args.tensors:
            print(f"\nweight tensors of {shape.name} (tied output layer listed once; parameters = elements):")
            print(table([[t.name, t.kind, "x".join(map(str, t.shape)), str(t.count), f"{t.numel:,}"]
                         for t in shape.tensors()], ["tensor", "kind", "shape", "copies", "parameters"]))
            print(f"total {shape.n_params:,} parameters")
        if args.layers:
            for r in results:
                print(f"\n{r['config'].name}: per operation (x = times per forward pass)")
                h2, rows2 = layer_rows(r["layers"])
                print(table(rows2, h2))
        if sweep is not None:
            front = sorted((r for r in sweep.rows if r["pareto_memory"]), key=lambda r: r["memory_gib"])
            print(f"\nco-design sweep: {len(sweep.rows)} points, calibration {sweep.calib_source}; "
                  f"Pareto front (memory vs SQNR, layer output and keys together):")
            rows3 = [[r["label"], f"{r['memory_gib']:.2f}", f"{r['sqnr_db']:.2f}",
                      f"{r['decode_tokens_per_s']:.4g}", f"{r['decode_energy_per_token_j']:.3g}"]
                     for r in front]
            print(table(rows3, ["point", "memory GiB", "SQNR dB", "decode tok/s", "decode J/token"]))

    if args.plot:
        from . import plots
        from .quantconfig import PRESETS, RPTQ_TABLE3

        names = list(RPTQ_TABLE3) + ["qrazor-W4A4", "qrazor-W4A4KV4"]
        plot_cfgs = [PRESETS[n] for n in names] + [c for c in configs if c.name not in names]
        batches, seqs = sorted({1, 8, 64, args.batch}), sorted({2048, 4096, 8192, args.seq})
        paths = [
            plots.plot_memory(shape, plot_cfgs, hw, batches, seqs, f"{args.plot}/cost_memory.png"),
            plots.plot_savings(shape, [c for c in plot_cfgs if c.name != "W16A16"], batches, seqs,
                               f"{args.plot}/cost_savings.png"),
            plots.plot_roofline(shape, configs[-1], hw, args.batch, args.seq,
                                f"{args.plot}/cost_roofline.png",
                                compare="W16A16" if configs[-1].name != "W16A16" else None),
            plots.plot_pareto(sweep, f"{args.plot}/cost_pareto.png"),
        ]
        print("\nwrote " + ", ".join(paths), file=sys.stderr)
    return 0
