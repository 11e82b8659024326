"""``refsim sweep``: cost against accuracy over model x configuration x hardware x batch x sequence.

    refsim sweep [--models opt-66b,opt-175b,llama-2-7b] [--configs W16A16,...,W3A3KV]
                 [--hw H200,H200-int4,H200-int3] [--batch 1,8,64] [--seq 2048,8192]
                 [--accuracy FILE.json[=MODEL] ...] [--paper wikitext2|ptb|c4|all|none]
                 [--scheduler ADDRESS|inline] [--workers N] [--out DIR [--force] [--no-plot]] [--json]

Every grid point is costed by :func:`hwmodel.sweep.config_costs` (memory, decode and prefill
tokens/s, energy per token on one device); one task per (model, hardware, batch, sequence) cell,
the configurations vectorized inside it, on Dask through :func:`hwmodel.sweep.map_tasks` (a new
local cluster by default). Accuracy is joined by (model, configuration) from two kinds of source,
never mixed: ``refsim eval --json`` results files (``source = "measured (refsim eval)"``) and the
papers' published tables (:mod:`hwmodel.paper_accuracy`, ``source = "paper: ..."``). A point with
several sources appears once per source; one without any has a null perplexity. ``--eval MODEL``
(accuracy computed when asked) is the application layer's (``refsim_app.sweep``: hwmodel does not
import refsim.eval): it runs ``refsim eval`` and hands the document to :func:`add_measured`, which
joins it exactly as a results file.

Pareto fronts, per (model, accuracy source and the model it was measured on, batch, sequence), among
the points that fit the device:
a point is on the decode front when no other point has at least its decode tokens/s and at most
its perplexity with one of the two strictly better (:func:`hwmodel.sweep.pareto_mask`); likewise
the prefill front (prefill tokens/s: where int4/int3 tensor cores show, decode being bandwidth-bound)
and the energy front (decode energy per token, lower is better).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from refsim_cli import UsageError, int_range, require_extra

from .cli import MAX_BATCH, MAX_SEQ, MAX_WORKERS

KIND = "sweep"
MEASURED = "measured (refsim eval)"
MAX_POINTS = 1_000_000  # cost rows; far beyond any grid an architect reads, well inside memory
DEFAULT_MODELS = "opt-66b,opt-175b,llama-2-7b"
DEFAULT_HW = "H200,H200-int4,H200-int3"
PAPER_CHOICES = ("wikitext2", "ptb", "c4", "all", "none")
JSON_NULL = ("null: not available: the perplexity of a point no accuracy source covers (and its source, "
             "dataset, tokens), a token count a paper does not state")
OUT_FILES = {
    "sweep.csv": "one row per grid point and accuracy source (perplexity empty where none covers it)",
    "sweep.json": "the same rows, the grid and the accuracy files, strict JSON (null where undefined)",
    "pareto.csv": "the rows on a Pareto front (decode or prefill tokens/s, or energy per token, vs perplexity)",
    "pareto.png": "perplexity against decode and prefill tokens/s per device, per model (unless --no-plot)",
}

EPILOG = """\
accuracy files (--accuracy FILE.json, repeatable) are what `refsim eval --json` prints:
  {"model": NAME, "results": [{"config": "W4A4", "perplexity": 12.3, "tokens": 4096}, ...]}
  (other keys are allowed and ignored). The file's model must be one of --models (compared
  case-insensitively, a path by its last component); FILE.json=MODEL joins it to MODEL's cost rows
  instead (a smaller model's measured perplexity standing in for a larger one's: the rows say so in
  accuracy_model). A configuration of the file that is not in --configs is listed as not joined.
paper rows (--paper): published perplexities for models that cannot run here, labelled
  "paper: RPTQ Table 1 (WikiText2)" etc. in the source column (see hwmodel/paper_accuracy.py for
  what is included and what could not be verified).
outputs (--out DIR, a new directory; replaced only when an earlier refsim sweep made it and --force
  is given):
""" + "".join(f"  {n:11} {d}\n" for n, d in OUT_FILES.items()) + """\
--json prints a summary (grid, counts, the Pareto fronts) on stdout. Progress goes to stderr.
Dask needs the [cost] extra (--scheduler inline needs none), the plot matplotlib (the same extra).
Ctrl-C stops cleanly (exit 130) and leaves no partial output.
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sweep", help="cost (memory, throughput, energy) against accuracy over models, configurations, hardware",
        description=__doc__.split("\n\n")[0], epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help="comma-separated models: built-in names (see `refsim cost --list`) or directories "
                        f"holding a config.json (default: {DEFAULT_MODELS})")
    p.add_argument("--configs", default=",".join(_table3()),
                   help="comma-separated configurations, as `refsim cost --config` takes them "
                        f"(default: RPTQ's Table 1/3 set {','.join(_table3())})")
    p.add_argument("--hw", default=DEFAULT_HW,
                   help="comma-separated hardware: built-in names (see `refsim cost --list`; H200-int4 and "
                        f"H200-int3 are hypothetical) or JSON files (default: {DEFAULT_HW})")
    p.add_argument("--batch", default="1,8,64",
                   help=f"comma-separated batch sizes (sequences in flight), each 1..{MAX_BATCH} (default 1,8,64)")
    p.add_argument("--seq", default="2048,8192",
                   help=f"comma-separated sequence lengths in tokens, each 1..{MAX_SEQ} (default 2048,8192)")
    p.add_argument("--accuracy", action="append", default=[], metavar="FILE.json[=MODEL]",
                   help="a `refsim eval --json` results file to join (repeatable); =MODEL joins it to "
                        "another model of --models")
    p.add_argument("--paper", choices=PAPER_CHOICES, default="wikitext2",
                   help="published perplexities to join, by dataset (default: wikitext2; none: no paper rows)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (default: a new local cluster; "
                        "'inline': in this process, no Dask)")
    p.add_argument("--workers", type=int_range(1, MAX_WORKERS),
                   help=f"local-cluster worker processes, 1..{MAX_WORKERS} (default 2)")
    p.add_argument("--out", metavar="DIR", help="write sweep.csv, sweep.json, pareto.csv, pareto.png into the "
                                                "new directory DIR")
    p.add_argument("--force", action="store_true", help="replace an earlier --out of refsim sweep")
    p.add_argument("--no-plot", action="store_true", help="with --out: skip pareto.png (no matplotlib needed)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout instead of the front table")
    p.set_defaults(func=run)
    return p


def _table3() -> tuple[str, ...]:
    from .quantconfig import RPTQ_TABLE3

    return RPTQ_TABLE3


# ---- argument checks --------------------------------------------------------------------------------
def _items(flag: str, text: str) -> list[str]:
    items = [t.strip() for t in str(text).split(",")]
    if not text or any(not t for t in items):
        raise UsageError(f"{flag} {text!r}: give a comma-separated list without empty items")
    dup = sorted({t for t in items if items.count(t) > 1})
    if dup:
        raise UsageError(f"{flag} {text}: {dup[0]} is given twice")
    return items


def _ints(flag: str, text: str, hi: int) -> list[int]:
    out = []
    for t in _items(flag, text):
        if not t.isdigit() or not (1 <= int(t) <= hi):
            raise UsageError(f"{flag} {text}: {t!r} is not an integer in 1..{hi}")
        out.append(int(t))
    return out


def model_key(name: str) -> str:
    """How an accuracy file's model names a model: case-insensitive, a path by its last component."""
    return os.path.basename(os.path.normpath(str(name))).lower()


def load_accuracy(path: str) -> tuple[str, list[dict]]:
    """Read one ``refsim eval --json`` results file: (model, [{config, perplexity, tokens}, ...]).

    Any problem is one ValueError naming the file and the key (``results[2].perplexity``); the
    document is checked by :func:`check_accuracy`."""
    where = f"--accuracy {path}"
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{where}: is a directory, not a results file") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not JSON (line {exc.lineno}: {exc.msg})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{where}: not UTF-8 text") from None
    return check_accuracy(doc, where)


def check_accuracy(doc, where: str) -> tuple[str, list[dict]]:
    """(model, [{config, perplexity, tokens}, ...]) of a ``refsim eval --json`` document, read from a
    file or computed by the sweep itself (refsim_app.sweep): one check for both.

    Checked: a JSON object with a non-empty string ``model`` and a non-empty list ``results`` of
    objects, each with a non-empty string ``config`` (unique in the file), a finite positive number
    ``perplexity`` and a positive integer ``tokens``. Any problem is one ValueError starting with
    ``where`` and naming the key."""
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: expected a JSON object with keys model and results, got {type(doc).__name__}")
    for key in ("model", "results"):
        if key not in doc:
            raise ValueError(f"{where}: missing key {key!r} (the format of `refsim eval --json`)")
    model = doc["model"]
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"{where}: key 'model' must be a non-empty string, got {model!r}")
    results = doc["results"]
    if not isinstance(results, list) or not results:
        raise ValueError(f"{where}: key 'results' must be a non-empty list, got {results!r:.60}")
    rows, seen = [], set()
    for i, r in enumerate(results):
        at = f"{where}: results[{i}]"
        if not isinstance(r, dict):
            raise ValueError(f"{at} must be an object with config, perplexity, tokens, got {r!r:.60}")
        for key in ("config", "perplexity", "tokens"):
            if key not in r:
                raise ValueError(f"{at}: missing key {key!r}")
        cfg, ppl, tok = r["config"], r["perplexity"], r["tokens"]
        if not isinstance(cfg, str) or not cfg.strip():
            raise ValueError(f"{at}.config must be a non-empty string, got {cfg!r}")
        if cfg.strip().lower() in seen:
            raise ValueError(f"{at}.config {cfg!r} appears twice in the file")
        seen.add(cfg.strip().lower())
        if isinstance(ppl, bool) or not isinstance(ppl, (int, float)) or not math.isfinite(ppl) or ppl <= 0:
            raise ValueError(f"{at}.perplexity must be a finite positive number, got {ppl!r}")
        if isinstance(tok, bool) or not isinstance(tok, int) or tok <= 0:
            raise ValueError(f"{at}.tokens must be a positive integer, got {tok!r}")
        rows.append({"config": cfg.strip(), "perplexity": float(ppl), "tokens": int(tok)})
    return model.strip(), rows


def model_keys(models: list[tuple]) -> dict[str, str]:
    """:func:`model_key` of each --models entry (as typed and by its shape's name) -> the entry."""
    keys = {model_key(name): name for name, _ in models}
    keys.update({model_key(s.name): name for name, s in models})
    return keys


def join_measured(measured: list, files: list, keys: dict, file_model: str, rows: list[dict], *, target: str,
                  flag: str, spec: str, reference: str, models_text: str) -> None:
    """Add the rows of one ``refsim eval --json`` document (a file of --accuracy, or one the sweep
    computed) to ``measured`` (joined by model and configuration) and its entry to ``files``.

    The document's model must be one of --models (:func:`model_key`), or ``target`` names the model it
    joins instead; a (model, configuration) measured twice is refused. Errors are UsageErrors that name
    ``flag`` and ``spec`` as typed."""
    path = reference
    if target:
        if model_key(target) not in keys:
            raise UsageError(f"{flag} {spec}: MODEL {target!r} is not one of --models ({models_text})")
        joined_to = keys[model_key(target)]
    elif model_key(file_model) in keys:
        joined_to = keys[model_key(file_model)]
    else:
        raise UsageError(f"{flag} {spec}: key 'model' is {file_model!r}, not one of --models "
                         f"({models_text}); add it to --models, or join it to one with {spec}=MODEL")
    for r in rows:
        dup = [m for m in measured if m["model"] == joined_to and m["config"].lower() == r["config"].lower()]
        if dup:
            raise UsageError(f"{flag} {spec}: {joined_to} {r['config']} is measured in "
                             f"{dup[0]['file']} too; give one file per configuration")
        measured.append({"model": joined_to, "config": r["config"], "perplexity": r["perplexity"],
                         "tokens": r["tokens"], "accuracy_model": file_model, "dataset": None,
                         "source": MEASURED, "reference": path, "file": path})
    files.append({"file": path, "model": file_model, "joined_to": joined_to, "configs": len(rows)})


def prepare(args) -> dict:
    """Check every argument, input and output before any work; returns what :func:`run` needs."""
    from refsim.outputs import check_output

    from .hardware import get_hardware
    from .paper_accuracy import DATASETS, paper_rows
    from .quantconfig import parse_config
    from .shapes import get_shape

    models = []
    for m in _items("--models", args.models):
        try:
            models.append((m, get_shape(m)))
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(f"--models {m}: {exc}") from None
    configs = []
    for c in _items("--configs", args.configs):
        try:
            configs.append(parse_config(c))
        except ValueError as exc:
            raise UsageError(f"--configs {c}: {exc}") from None
    hws = []
    for h in _items("--hw", args.hw):
        try:
            hws.append(get_hardware(h))
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(f"--hw {h}: {exc}") from None
    for flag, names in (("--models", [s.name.lower() for _, s in models]),
                        ("--configs", [c.name.lower() for c in configs]), ("--hw", [h.name.lower() for h in hws])):
        if len(set(names)) < len(names):
            raise UsageError(f"{flag}: two entries name the same {flag[2:].rstrip('s')} "
                             f"({sorted(n for n in names if names.count(n) > 1)[0]})")
    batches, seqs = _ints("--batch", args.batch, MAX_BATCH), _ints("--seq", args.seq, MAX_SEQ)
    n_points = len(models) * len(configs) * len(hws) * len(batches) * len(seqs)
    if n_points > MAX_POINTS:
        raise UsageError(f"--models x --configs x --hw x --batch x --seq make {n_points:,} points; "
                         f"at most {MAX_POINTS:,}: give shorter lists")
    if args.workers is not None and args.scheduler is not None:
        raise UsageError("--workers sizes a new local cluster; with --scheduler the cluster is already there")
    if args.scheduler is not None and not args.scheduler.strip():
        raise UsageError("--scheduler: give an address such as tcp://HOST:8786, or 'inline'")
    if args.force and not args.out:
        raise UsageError("--force replaces an earlier --out; there is no --out here")
    if args.no_plot and not args.out:
        raise UsageError("--no-plot skips pareto.png of --out; there is no --out here")

    keys = model_keys(models)
    measured, files = [], []
    for spec in args.accuracy:
        path, _, target = spec.rpartition("=") if "=" in spec and not os.path.exists(spec) else (spec, "", "")
        file_model, rows = load_accuracy(path)
        join_measured(measured, files, keys, file_model, rows, target=target, flag="--accuracy", spec=spec,
                      reference=path, models_text=args.models)
    datasets = () if args.paper == "none" else tuple(DATASETS) if args.paper == "all" else (args.paper,)
    names = {model_key(s.name): name for name, s in models}
    papers = []
    for r in paper_rows(datasets):
        if r["model"] in names:
            papers.append({**r, "model": names[r["model"]], "accuracy_model": r["model"]})

    inline = args.scheduler == "inline"
    if not inline:
        require_extra("cost", "distributed", what="refsim sweep (without --scheduler inline)")
    if args.out and not args.no_plot:
        require_extra("cost", "matplotlib", what="refsim sweep --out (pareto.png; --no-plot skips it)")
    out = None
    if args.out:
        # check_output names an input by its key: one key per file, so each is named as typed
        inputs = {f"--accuracy {f['file']}": f["file"] for f in files}
        inputs.update({f"--models {name}": name for name, _ in models if os.path.exists(name)})
        inputs.update({f"--hw {h}": h for h in _items("--hw", args.hw) if os.path.exists(h)})
        out = check_output(args.out, flag="--out", kinds=(KIND,), replace=args.force, inputs=inputs)
    return {"models": models, "configs": configs, "hws": hws, "batches": batches, "seqs": seqs,
            "measured": measured, "papers": papers, "accuracy": measured + papers, "files": files, "out": out,
            "n_points": n_points, "models_text": args.models}


def add_measured(ctx: dict, doc: dict, *, flag: str, spec: str, target: str, reference: str) -> None:
    """Join one more ``refsim eval --json`` document to ``ctx`` (:func:`prepare`) exactly as a file of
    --accuracy is joined (the same check, the same join, source ``measured (refsim eval)``): how
    refsim_app.sweep joins the results it computed. ``reference`` stands where a file's path would."""
    try:
        file_model, rows = check_accuracy(doc, f"{flag} {spec}")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    join_measured(ctx["measured"], ctx["files"], model_keys(ctx["models"]), file_model, rows, target=target,
                  flag=flag, spec=spec, reference=reference, models_text=ctx["models_text"])
    ctx["accuracy"] = ctx["measured"] + ctx["papers"]


# ---- the computation --------------------------------------------------------------------------------
def cost_cell(cell: tuple, configs: list) -> dict[str, list[float]]:
    """The costs of every configuration in one (model shape, hardware, batch, sequence) cell: a pure
    function of its arguments, so it gives the same floats wherever Dask runs it."""
    from .sweep import config_costs

    shape, hw, batch, seq = cell
    costs = config_costs(configs, shape, hw, batch=batch, seq=seq)
    return {k: [float(x) for x in v] for k, v in costs.items()}


def grid_cells(ctx: dict) -> list[tuple]:
    return [(shape, hw, b, s) for _, shape in ctx["models"] for hw in ctx["hws"]
            for b in ctx["batches"] for s in ctx["seqs"]]


def join_rows(ctx: dict, cells: list[tuple], costs: list[dict]) -> list[dict]:
    """One row per grid point and accuracy source (a point no source covers: one row, perplexity None),
    with the Pareto flags (see the module docstring)."""
    from .footprint import GIB

    by_key: dict[tuple, list[dict]] = {}
    for a in ctx["accuracy"]:
        by_key.setdefault((a["model"], a["config"].lower()), []).append(a)
    names = {id(shape): name for name, shape in ctx["models"]}
    rows = []
    for (shape, hw, b, s), cost in zip(cells, costs, strict=True):
        for i, cfg in enumerate(ctx["configs"]):
            base = {"model": names[id(shape)], "hardware": hw.name, "hypothetical": hw.hypothetical,
                    "batch": b, "seq": s, "config": cfg.name, "w_bits": cfg.w_bits, "a_bits": cfg.a_bits,
                    "kv_bits": cfg.kv_bits, **{k: v[i] for k, v in cost.items()}}
            base["fits"] = bool(base["memory_gib"] * GIB <= hw.capacity)
            accs = by_key.get((base["model"], cfg.name.lower()), [None])
            for a in accs:
                rows.append({**base, "perplexity": a and a["perplexity"], "tokens": a and a["tokens"],
                             "accuracy_model": a and a["accuracy_model"], "dataset": a and a["dataset"],
                             "source": a and a["source"], "reference": a and a["reference"]})
    mark_fronts(rows)
    return rows


#: front flag -> (cost column, True when higher is better): each front is cost against perplexity
FRONTS = {"pareto_decode": ("decode_tokens_per_s", True), "pareto_prefill": ("prefill_tokens_per_s", True),
          "pareto_energy": ("decode_energy_per_token_j", False)}


def on_any_front(r: dict) -> bool:
    return any(r[k] for k in FRONTS)


def front_group(r: dict) -> tuple:
    """The points that share a front: one model, one accuracy source and the model it was measured
    on (two results files joined to one model are two fronts), one batch and sequence."""
    return (r["model"], r["source"], r["accuracy_model"], r["batch"], r["seq"])


def mark_fronts(rows: list[dict]) -> None:
    """Set the :data:`FRONTS` flags on every row (False where not eligible: no perplexity, or the point
    does not fit its device), one front per :func:`front_group`."""
    import numpy as np

    from .sweep import pareto_mask

    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        r.update(dict.fromkeys(FRONTS, False))
        if r["perplexity"] is not None and r["fits"]:
            groups.setdefault(front_group(r), []).append(i)
    for idx in groups.values():
        ppl = np.array([rows[i]["perplexity"] for i in idx])
        for flag, (col, higher) in FRONTS.items():
            cost = np.array([rows[i][col] for i in idx])
            for i, on in zip(idx, pareto_mask(-cost if higher else cost, ppl), strict=True):
                rows[i][flag] = bool(on)


def unjoined(ctx: dict) -> list[dict]:
    """Accuracy rows of a model in the grid whose configuration is not in --configs."""
    names = {c.name.lower() for c in ctx["configs"]}
    return [{"model": a["model"], "config": a["config"], "source": a["source"]}
            for a in ctx["accuracy"] if a["config"].lower() not in names]


def run(args) -> int:
    return execute(args, prepare(args))


def execute(args, ctx: dict, *, extra_files: dict[str, str] | None = None,
            extra_dirs: dict[str, str] | None = None) -> int:
    """Cost the grid of ``ctx`` (:func:`prepare`), join its accuracy, print and write the outputs.

    extra_files (name -> text) and extra_dirs (name -> a directory, copied) are written into --out beside
    sweep.csv (refsim_app.sweep: the ``refsim eval`` results it computed, eval.json, and their cache)."""
    from .sweep import map_tasks

    cells = grid_cells(ctx)
    costs = map_tasks(cost_cell, cells, ctx["configs"], scheduler=args.scheduler, n_workers=args.workers or 2,
                      what="refsim sweep", unit="cells", sizes=[len(ctx["configs"])] * len(cells),
                      key="refsim-sweep")
    rows = join_rows(ctx, cells, costs)
    summary = make_summary(args, ctx, rows)
    for u in summary["accuracy"]["not_joined"]:
        print(f"refsim sweep: note: {u['model']} {u['config']} ({u['source']}) is not in --configs: not joined",
              file=sys.stderr)
    if ctx["out"] is not None:
        write_outputs(args, ctx, rows, summary, extra_files=extra_files, extra_dirs=extra_dirs)
    if args.json:
        from .report import to_json

        print(to_json(summary))
    else:
        print_front(summary)
    return 0


def grid_doc(ctx: dict) -> dict:
    return {"models": [n for n, _ in ctx["models"]], "configs": [c.name for c in ctx["configs"]],
            "hardware": [{"name": h.name, "hypothetical": h.hypothetical, "notes": h.notes} for h in ctx["hws"]],
            "batch": ctx["batches"], "seq": ctx["seqs"], "points": ctx["n_points"]}


FRONT_KEYS = ("model", "source", "batch", "seq", "hardware", "config", "memory_gib", "fits", "decode_tokens_per_s",
              "prefill_tokens_per_s", "decode_energy_per_token_j", "perplexity", "accuracy_model", *FRONTS)


def make_summary(args, ctx: dict, rows: list[dict]) -> dict:
    front = [r for r in rows if on_any_front(r)]
    return {"command": "refsim sweep", "grid": grid_doc(ctx), "rows": len(rows),
            "accuracy": {"files": ctx["files"], "measured": sum(a["source"] == MEASURED for a in ctx["accuracy"]),
                         "paper": sum(a["source"] != MEASURED for a in ctx["accuracy"]),
                         "rows_with_perplexity": sum(r["perplexity"] is not None for r in rows),
                         "not_joined": unjoined(ctx), **({"eval": ctx["eval"]} if "eval" in ctx else {})},
            "out": args.out, "null": JSON_NULL,
            "pareto": [{k: r[k] for k in FRONT_KEYS} for r in front]}


def write_outputs(args, ctx: dict, rows: list[dict], summary: dict, *, extra_files=None, extra_dirs=None) -> None:
    import shutil

    from refsim.outputs import staged_output

    from .report import to_csv, to_json

    doc = {**summary, "units": {"memory": "GiB (2^30 B)", "energy": "J per token", "throughput": "tokens/s"},
           "rows": rows}
    doc.pop("pareto")
    front = [r for r in rows if on_any_front(r)]
    with staged_output(ctx["out"], kind=KIND, models=[n for n, _ in ctx["models"]]) as tmp:
        for name, text in (("sweep.csv", to_csv(rows)), ("sweep.json", to_json(doc) + "\n"),
                           ("pareto.csv", to_csv(front) if front else ",".join(rows[0]) + "\n")):
            with open(os.path.join(tmp, name), "w", encoding="utf-8", newline="") as f:
                f.write(text)
        for name, text in (extra_files or {}).items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8", newline="") as f:
                f.write(text)
        for name, src in (extra_dirs or {}).items():
            shutil.copytree(src, os.path.join(tmp, name))
        if not args.no_plot:
            from .plots import plot_accuracy_pareto

            plot_accuracy_pareto(rows, os.path.join(tmp, "pareto.png"))
    written = [n for n in OUT_FILES if not (args.no_plot and n == "pareto.png")]
    written += [*(extra_files or {}), *(f"{d}/" for d in extra_dirs or {})]
    print(f"wrote {', '.join(written)} into {args.out}", file=sys.stderr)


def print_front(summary: dict) -> None:
    from .report import table

    g = summary["grid"]
    print(f"refsim sweep: {g['points']} points ({len(g['models'])} models x {len(g['configs'])} configurations x "
          f"{len(g['hardware'])} hardware x {len(g['batch'])} batch x {len(g['seq'])} sequence), "
          f"{summary['accuracy']['rows_with_perplexity']} rows with a perplexity")
    front = [r for r in summary["pareto"] if r["pareto_decode"]]
    if not front:
        print("no Pareto front: no point that fits its device has a perplexity (give --accuracy, or --paper)")
        return
    print("Pareto front, decode tokens/s per device against perplexity (per model, source, batch, sequence):")
    body = [[r["model"], r["source"], str(r["batch"]), str(r["seq"]), r["hardware"], r["config"],
             f"{r['decode_tokens_per_s']:.4g}", f"{r['decode_energy_per_token_j']:.3g}", f"{r['perplexity']:.2f}"]
            for r in front]
    print(table(body, ["model", "source", "batch", "seq", "hardware", "config", "decode tok/s", "J/token",
                       "perplexity"]))
