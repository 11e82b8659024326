"""``refsim cost``: memory, traffic, throughput and energy of a model on a piece of hardware.

    refsim cost MODEL --hw H200 --config W4A4KV --batch 64 --seq 8192 [--json|--csv|--csv-dir DIR] [--plot DIR]

MODEL is a built-in name (``refsim cost --list``) or a local directory holding a ``config.json``.
``--config`` takes one or more comma-separated configurations. ``--layers`` adds the per-operation
table (prefill and decode). ``--sweep`` runs the co-design sweep on Dask (a local cluster, or
``--scheduler ADDRESS``); ``--plot DIR`` writes cost_memory.png, cost_savings.png,
cost_roofline.png and cost_pareto.png (the last runs the sweep).

Every argument, input file and output location is checked before any work (:func:`prepare`).
Heavy imports (matplotlib, dask, refsim's quantizers) happen inside :func:`run`, not at import.
"""

from __future__ import annotations

import argparse
import os
import sys

from refsim_cli import UsageError, int_range, require_extra

from .outputs import CSV_TABLES

MAX_BATCH = 1 << 20  # sequences in flight
MAX_SEQ = 1 << 24  # tokens; beyond any model's context, and float64 sizes stay exact integers
MAX_WORKERS = 256

JSON_NULL = ("null: a ratio that is undefined or infinite: the arithmetic intensity of an operation that "
             "moves no DRAM bytes (on-chip), an SQNR of a tensor left unquantized (no noise)")

EPILOG = """\
output formats:
  (default)      tables for a reader
  --json         one JSON document: every configuration, its memory, throughput, per-operation rows,
                 the weight tensors (and the sweep); null where a ratio is undefined or infinite
                 (operations that move no DRAM bytes have intensity null; an unquantized tensor's
                 SQNR is null); strict JSON, no NaN or Infinity tokens
  --csv          the summary table (one row per configuration and stage) on stdout; one table only
  --csv-dir DIR  one CSV file per table in a new directory DIR:
""" + "".join(f"                   {n:12} {d}\n" for n, d in CSV_TABLES.items()) + """\
                 DIR is replaced only when an earlier --csv-dir made it and --force is given.
  --plot DIR     cost_memory.png, cost_savings.png, cost_roofline.png, cost_pareto.png into DIR
                 (created if missing); a file of those names that refsim did not write is refused.
--plot and --sweep need the [cost] extra (matplotlib, dask[distributed]; --scheduler inline needs
no Dask). Ctrl-C stops cleanly (exit 130) and leaves no partial output.
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "cost", help="memory, traffic, throughput and energy of 3/4-bit LLM inference hardware",
        description=__doc__.split("\n\n")[0] + " Sizes are reported in GiB (2^30 bytes) and GB (10^9 bytes).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", nargs="?", help="model name (see --list) or a directory holding a config.json")
    p.add_argument("--hw", default="H200", help="hardware name (see --list) or a JSON file (default: H200)")
    p.add_argument("--config", default="W16A16,W4A16,W4A4KV,W4A4",
                   help="comma-separated configurations: presets (see --list), W<w>A<a>[KV<k>] or, for one "
                        "custom configuration, key=value pairs joined by ':' (e.g. w=3:a=8:kv=4) "
                        "(default: W16A16,W4A16,W4A4KV,W4A4)")
    p.add_argument("--batch", type=int_range(1, MAX_BATCH), default=1,
                   help=f"sequences in flight, 1..{MAX_BATCH} (default 1)")
    p.add_argument("--seq", type=int_range(1, MAX_SEQ), default=2048,
                   help=f"sequence length in tokens, 1..{MAX_SEQ} (default 2048)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print one JSON document instead of tables (see below)")
    fmt.add_argument("--csv", action="store_true", help="print the summary table as CSV (one table; see below)")
    fmt.add_argument("--csv-dir", metavar="DIR", help="write one CSV file per table into the new directory DIR")
    p.add_argument("--force", action="store_true", help="replace an earlier --csv-dir output of refsim cost")
    p.add_argument("--layers", action="store_true", help="also print the per-operation roofline table")
    p.add_argument("--tensors", action="store_true",
                   help="also print every weight tensor: shape, copies, parameters")
    p.add_argument("--plot", metavar="DIR", help="write the cost_*.png plots into DIR (runs the sweep)")
    p.add_argument("--sweep", action="store_true",
                   help="run the co-design sweep of one model (SQNR measured by refsim on calibration tensors); "
                        "for cost against real perplexity over models x configurations x hardware, see "
                        "`refsim sweep`")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler address for the sweep, e.g. tcp://10.0.0.5:8786 (default: a new local "
                        "cluster; 'inline': in this process, no Dask)")
    p.add_argument("--grid", choices=("default", "small"),
                   help="sweep grid: default (264 points) or small (12 points, a quick look)")
    p.add_argument("--workers", type=int_range(1, MAX_WORKERS),
                   help=f"local-cluster workers for the sweep, 1..{MAX_WORKERS} (default 2)")
    p.add_argument("--calib", metavar="NPZ",
                   help="calibration tensors for the sweep: an .npz with arrays x (tokens, C), w (out, C), "
                        "k (tokens, Ck) (default: synthetic, seed 0)")
    p.add_argument("--list", action="store_true",
                   help="list known models, hardware and configurations (what is quantized at which bits)")
    p.set_defaults(func=run)
    # `refsim sweep` (hwmodel.sweep_cli) is registered by refsim_app.sweep, which adds --eval (refsim eval)
    return p


def _configs(text: str):
    from .quantconfig import parse_config

    try:
        if "=" in text:
            return [parse_config(text.replace(":", ","))]
        configs = [parse_config(c) for c in text.split(",") if c.strip()]
    except ValueError as exc:
        raise UsageError(f"--config {text}: {exc}") from None
    if not configs:
        raise UsageError(f"--config {text!r}: give at least one configuration (see `refsim cost --list`)")
    return configs


def _list() -> str:
    from .energy import energy_table
    from .hardware import BUILTIN as HW
    from .quantconfig import PRESETS
    from .shapes import BUILTIN as MODELS

    lines = ["models (dimensions from each model's published config.json):"]
    lines += [f"  {s.describe()}" for s in MODELS.values()]
    lines += ["  or a local directory holding a config.json (model_type opt, llama or mistral)"]
    lines += ["hardware (dense peaks in TOP/s per datapath W<weight bits>A<activation bits>):"]
    lines += [f"  {h.describe()}\n      {h.notes}" for h in HW.values()]
    lines += ["  or a JSON file describing an accelerator (keys: see hwmodel.hardware.Hardware.from_spec)"]
    lines += ["configurations (fp16 = not quantized; residual stream, norms and biases are always fp16):"]
    lines += [f"  {c.describe()}" for c in PRESETS.values()]
    lines += ["  W<w>A<a>[KV<k>]: uniform quantization, w-bit weights (scale+zero per row), a-bit activations "
              "(LayerNorm outputs at max(8, a)), k-bit KV cache (default a), embeddings and output layer fp16; "
              "W<w>A<a>KV: only the KV cache at a bits (RPTQ's --only_quant_kv)",
              "  suffixes: -g<N> weight group size (SDR group for qrazor-*), -c<N> RPTQ cluster count",
              "  key=value pairs joined by ':' (w=3:a=8:kv=4): explicit bits per tensor class "
              "(keys: see hwmodel.quantconfig.custom)"]
    lines += ["MAC energy (pJ, 45 nm):"]
    lines += [f"  W{r['w_bits']}A{r['a_bits']}: {r['mac_pj']:.3f}  {r['source']}"
              for r in energy_table() if r["w_bits"] == r["a_bits"]]
    return "\n".join(lines)


def prepare(args) -> dict:
    """Check every argument, input and output before any work; returns what :func:`run` needs."""
    from refsim.outputs import check_output

    from .calib import load_calibration, synthetic_calibration
    from .hardware import get_hardware
    from .shapes import get_shape

    if not args.model:
        raise UsageError("MODEL is required: a built-in name (see `refsim cost --list`) "
                         "or a directory holding a config.json")
    try:
        shape = get_shape(args.model)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"MODEL {args.model}: {exc}") from None
    try:
        hw = get_hardware(args.hw)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"--hw {args.hw}: {exc}") from None
    configs = _configs(args.config)
    sweeping = bool(args.sweep or args.plot)
    for flag, value in (("--scheduler", args.scheduler), ("--grid", args.grid), ("--workers", args.workers),
                        ("--calib", args.calib)):
        if value is not None and not sweeping:
            raise UsageError(f"{flag} is used only by the sweep: add --sweep or --plot DIR")
    if args.workers is not None and args.scheduler is not None:
        raise UsageError("--workers sizes a new local cluster; with --scheduler the cluster is already there")
    if args.scheduler is not None and not args.scheduler.strip():
        raise UsageError("--scheduler: give an address such as tcp://HOST:8786, or 'inline'")
    if args.csv and (args.layers or args.sweep or args.tensors):
        extra = ", ".join(f for f, v in (("--layers", args.layers), ("--tensors", args.tensors),
                                         ("--sweep", args.sweep)) if v)
        raise UsageError(f"--csv prints one table (the summary); with {extra} there are several tables: "
                         f"use --csv-dir DIR, which writes one CSV file per table")
    if args.force and not args.csv_dir:
        raise UsageError("--force replaces an earlier --csv-dir output; there is no --csv-dir here")
    inline = args.scheduler == "inline"
    if args.plot:
        require_extra("cost", "matplotlib", *(() if inline else ("distributed",)), what="refsim cost --plot")
    elif args.sweep and not inline:
        require_extra("cost", "distributed", what="refsim cost --sweep (without --scheduler inline)")
    plot_dir = csv_dir = None
    if args.plot:
        from .outputs import check_plot_dir

        plot_dir = check_plot_dir(args.plot)
    if args.csv_dir:
        from .outputs import CSV_KIND

        csv_dir = check_output(args.csv_dir, flag="--csv-dir", kinds=(CSV_KIND,), replace=args.force,
                               inputs={"MODEL": args.model if os.path.exists(args.model) else None,
                                       "--calib": args.calib, "--plot": args.plot})
    if plot_dir is not None and args.model and os.path.isdir(args.model):
        if os.path.abspath(args.model) == str(plot_dir):
            raise UsageError(f"--plot {args.plot} is the model directory MODEL {args.model}; "
                             f"choose another directory")
    calib = None
    if sweeping:
        try:
            calib = load_calibration(args.calib) if args.calib else synthetic_calibration(0)
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(f"--calib {args.calib}: {exc}") from None
    return {"shape": shape, "hw": hw, "configs": configs, "calib": calib, "plot_dir": plot_dir,
            "csv_dir": csv_dir, "sweeping": sweeping}


def run(args) -> int:
    if args.list:
        print(_list())
        return 0
    ctx = prepare(args)
    from .footprint import memory
    from .traffic import STAGES, layer_table, mac_energy_notes, throughput

    shape, hw, configs = ctx["shape"], ctx["hw"], ctx["configs"]
    want_layers = args.layers or args.json or args.csv_dir
    results = []
    for cfg in configs:
        res = {"config": cfg, "memory": memory(shape, cfg, batch=args.batch, seq=args.seq),
               "throughput": throughput(shape, cfg, hw, batch=args.batch, seq=args.seq),
               "mac_energy": mac_energy_notes(shape, cfg, hw)}
        if want_layers:
            res["layers"] = [row for st in STAGES
                             for row in layer_table(shape, cfg, hw, batch=args.batch, seq=args.seq, stage=st)]
        results.append(res)

    sweep = None
    if ctx["sweeping"]:
        from .sweep import GRIDS, run_sweep

        sweep = run_sweep(shape, hw, batch=args.batch, seq=args.seq, calib=ctx["calib"], scheduler=args.scheduler,
                          points=GRIDS[args.grid or "default"](), n_workers=args.workers or 2,
                          progress=not (args.json or args.csv))

    plot_paths = _plots(args, ctx, sweep) if ctx["plot_dir"] is not None else []
    if args.json:
        _print_json(args, shape, hw, results, sweep)
    elif args.csv:
        from .report import to_csv

        print(to_csv(_summary_csv_rows(results, hw)), end="")
    elif args.csv_dir:
        _write_csv_dir(ctx["csv_dir"], args, shape, hw, results, sweep)
    if not (args.json or args.csv):
        _print_tables(args, shape, hw, results, sweep)
    if plot_paths:
        print("\nwrote " + ", ".join(plot_paths), file=sys.stderr)
    return 0


def _summary_csv_rows(results, hw) -> list[dict]:
    from .traffic import STAGES

    rows = []
    for r in results:
        m = r["memory"].to_dict()
        m.pop("parts_bytes")
        for st in STAGES:
            rows.append({**m, "stage": st, "hardware": hw.name, **dict(r["throughput"][st])})
    return rows


def _print_json(args, shape, hw, results, sweep) -> None:
    from .report import to_json

    doc = {"model": shape.name, "hardware": hw.name, "batch": args.batch, "seq": args.seq,
           "units": {"bytes": "B", "gib": "2^30 B", "gb": "10^9 B", "energy": "J", "time": "s"},
           "null": JSON_NULL,
           "results": [{"config": r["config"].to_dict(), "memory": r["memory"].to_dict(),
                        "throughput": r["throughput"], "mac_energy_pj": r["mac_energy"],
                        "layers": r["layers"]} for r in results],
           "tensors": _tensor_rows(shape)}
    if sweep is not None:
        doc["sweep"] = {"calibration": sweep.calib_source, "rows": sweep.rows}
    print(to_json(doc))


def _tensor_rows(shape) -> list[dict]:
    return [{"name": t.name, "kind": t.kind, "shape": list(t.shape), "count": t.count, "params": t.numel}
            for t in shape.tensors()]


def _write_csv_dir(out, args, shape, hw, results, sweep) -> None:
    from refsim.outputs import staged_output

    from .outputs import CSV_KIND
    from .report import to_csv

    tables = {"summary.csv": _summary_csv_rows(results, hw),
              "layers.csv": [{"config": r["config"].name, **row} for r in results for row in r["layers"]],
              "tensors.csv": [{**t, "shape": "x".join(map(str, t["shape"]))} for t in _tensor_rows(shape)]}
    if sweep is not None:
        tables["sweep.csv"] = sweep.rows
    with staged_output(out, kind=CSV_KIND, model=shape.name, hardware=hw.name, tables=sorted(tables)) as tmp:
        for name, rows in tables.items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8", newline="") as f:
                f.write(to_csv(rows))
    print(f"wrote {', '.join(sorted(tables))} into {args.csv_dir}", file=sys.stderr)


def _print_tables(args, shape, hw, results, sweep) -> None:
    from .report import layer_rows, summary_rows, table

    say = print

    say(f"{shape.describe()}")
    say(f"{hw.describe()}\n  {hw.notes}")
    say(f"batch {args.batch}, sequence {args.seq} tokens; GiB = 2^30 bytes, GB = 10^9 bytes; "
        f"decode = one step at context {args.seq}\n")
    header, rows = summary_rows(results, hw)
    say(table(rows, header))
    notes = {n["mac"]: n for r in results for n in r["mac_energy"]}
    say("energy (45 nm figures: compare configurations, not absolute joules): MAC "
        + ", ".join(f"{k} {n['pj']:.3g} pJ [{n['source']}]" for k, n in sorted(notes.items()))
        + f"; DRAM {hw.dram_pj_per_bit:g} pJ/bit")
    if args.tensors:
        say(f"\nweight tensors of {shape.name} (tied output layer listed once; parameters = elements):")
        say(table([[t.name, t.kind, "x".join(map(str, t.shape)), str(t.count), f"{t.numel:,}"]
                   for t in shape.tensors()], ["tensor", "kind", "shape", "copies", "parameters"]))
        say(f"total {shape.n_params:,} parameters")
    if args.layers:
        for r in results:
            say(f"\n{r['config'].name}: per operation (x = times per forward pass)")
            h2, rows2 = layer_rows(r["layers"])
            say(table(rows2, h2))
    if sweep is not None:
        front = sorted((r for r in sweep.rows if r["pareto_memory"]), key=lambda r: r["memory_gib"])
        say(f"\nco-design sweep: {len(sweep.rows)} points, calibration {sweep.calib_source}; "
            f"Pareto front (memory vs SQNR, layer output and keys together):")
        rows3 = [[r["label"], f"{r['memory_gib']:.2f}", f"{r['sqnr_db']:.2f}",
                  f"{r['decode_tokens_per_s']:.4g}", f"{r['decode_energy_per_token_j']:.3g}"]
                 for r in front]
        say(table(rows3, ["point", "memory GiB", "SQNR dB", "decode tok/s", "decode J/token"]))


def _plots(args, ctx, sweep) -> list[str]:
    from . import plots
    from .outputs import staged_plots
    from .quantconfig import PRESETS, RPTQ_TABLE3

    shape, hw, configs = ctx["shape"], ctx["hw"], ctx["configs"]
    names = list(RPTQ_TABLE3) + ["qrazor-W4A4", "qrazor-W4A4KV4"]
    plot_cfgs = [PRESETS[n] for n in names] + [c for c in configs if c.name not in names]
    batches, seqs = sorted({1, 8, 64, args.batch}), sorted({2048, 4096, 8192, args.seq})
    with staged_plots(ctx["plot_dir"]) as temp:
        plots.plot_memory(shape, plot_cfgs, hw, batches, seqs, temp("cost_memory.png"))
        plots.plot_savings(shape, [c for c in plot_cfgs if c.name != "W16A16"], batches, seqs,
                           temp("cost_savings.png"))
        plots.plot_roofline(shape, configs[-1], hw, args.batch, args.seq, temp("cost_roofline.png"),
                            compare="W16A16" if configs[-1].name != "W16A16" else None)
        plots.plot_pareto(sweep, temp("cost_pareto.png"), capacity_gib=hw.capacity / 2**30)
    return [os.path.join(args.plot, n) for n in ("cost_memory.png", "cost_savings.png", "cost_roofline.png",
                                                 "cost_pareto.png")]
