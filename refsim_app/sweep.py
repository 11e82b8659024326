"""``refsim sweep`` with accuracy computed when asked: ``--eval MODEL`` runs ``refsim eval`` first.

    refsim sweep ... --eval MODEL[=SWEEPMODEL] (--eval-text FILE | --eval-token-ids FILE.npy)
                 [--eval-calib-text FILE | --eval-calib-token-ids FILE.npy] [--eval-configs LIST]
                 [--eval-seqlen N] [--eval-max-tokens N] [--eval-clusters K] ... [--eval-cache DIR]

The cost grid, the join and the outputs are hwmodel's (:mod:`hwmodel.sweep_cli`); the perplexities
are ``refsim eval``'s (:func:`refsim_app.eval.evaluate_command`, the same code path, checks and cache
as the command). They live in two layers that must not import each other's insides (hwmodel never
imports refsim.eval: pyproject.toml's import-linter contracts), so this application-layer module
joins them: it fills a ``refsim eval`` namespace from the ``--eval-*`` flags (every ``--eval-X`` is
``refsim eval --X``: its type, its default, its help), computes the ``refsim eval --json`` document
and hands it to :func:`hwmodel.sweep_cli.add_measured`, which checks and joins it exactly as a file
given with ``--accuracy`` (source ``measured (refsim eval)``).

Which configurations are evaluated: ``--eval-configs`` (any ``refsim eval --configs`` entry; one
not in ``--configs`` is reported as not joined, as for a file), by default every ``--configs`` entry
that ``refsim eval`` knows; the others are listed as not evaluated (stderr and the JSON summary).

Cache (``refsim.eval.ResultCache``, one file per configuration and window): ``--eval-cache DIR`` is
``refsim eval --out DIR`` (created, or resumed when an earlier refsim eval cache, never another
directory), kept across interrupted runs. Without it, with ``--out``: ``OUT/eval-cache``, seeded from
the earlier output's when ``--force`` replaces one (a rerun recomputes nothing); it is built in a
temporary sibling directory and copied into the new output with it, so an interrupted run leaves
nothing (and resumes nothing: give ``--eval-cache`` for that). Without either: no cache.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile

from refsim_cli import UsageError, to_json

#: ``refsim eval`` options offered as ``--eval-<name>`` (the model is ``--eval``, its --out ``--eval-cache``)
EVAL_OPTIONS = ("text", "token-ids", "calib-text", "calib-token-ids", "configs", "nsamples", "calib-seqlen",
                "calib-inputs", "seqlen", "max-tokens", "clusters", "head-clusters", "group-size", "head-dtype",
                "sqnr-tokens", "seed")
CACHE_DIR = "eval-cache"
EVAL_JSON = "eval.json"
EVAL_EPILOG = f"""\
accuracy computed here (--eval MODEL[=SWEEPMODEL], the [hf] extra): `refsim eval` runs on MODEL (a
  transformers directory or a .gguf file) with the --eval-* options (each is refsim eval's option of
  that name, same default), for --eval-configs (default: every --configs entry refsim eval knows; the
  others are listed as not evaluated), and its results join as an --accuracy file would (MODEL must be
  one of --models, or =SWEEPMODEL names the one it joins). With --out they are written to
  {EVAL_JSON} and cached in {CACHE_DIR}/ (a --force rerun recomputes nothing); --eval-cache DIR keeps
  the cache elsewhere (refsim eval --out DIR; resumed after an interrupted run).
"""


def _eval_parser() -> argparse.ArgumentParser:
    from . import eval as eval_cli

    sub = argparse.ArgumentParser(add_help=False).add_subparsers()
    eval_cli.register(sub)
    return sub.choices["eval"]


def _eval_actions() -> dict[str, argparse.Action]:
    """``refsim eval``'s option name (without ``--``) -> its argparse action, for :data:`EVAL_OPTIONS`."""
    out = {}
    for a in _eval_parser()._actions:
        for o in a.option_strings:
            if o.startswith("--") and o[2:] in EVAL_OPTIONS:
                out[o[2:]] = a
    missing = sorted(set(EVAL_OPTIONS) - set(out))
    if missing:  # refsim eval renamed an option: fail loudly here, not with a wrong namespace later
        raise RuntimeError(f"refsim eval has no option --{missing[0]}")
    return out


def _dest(name: str) -> str:
    return "eval_" + name.replace("-", "_")


def register(subparsers) -> argparse.ArgumentParser:
    from hwmodel import sweep_cli

    p = sweep_cli.register(subparsers)
    p.epilog += EVAL_EPILOG
    g = p.add_argument_group("accuracy computed here (refsim eval; see below)")
    g.add_argument("--eval", metavar="MODEL[=SWEEPMODEL]",
                   help="run refsim eval on MODEL (a transformers directory or .gguf file) and join its results")
    for name, a in _eval_actions().items():
        if name == "configs":
            help_ = ("refsim eval configurations (default: every --configs entry refsim eval knows); options "
                     "@cN @hN @rtn @gN")
        else:
            help_ = f"refsim eval --{name}: {a.help}"
        metavar = "LIST" if name == "configs" else a.metavar or (None if a.choices else "N")
        g.add_argument(f"--eval-{name}", dest=_dest(name), type=a.type, choices=a.choices, metavar=metavar,
                       default=None, help=help_)
    g.add_argument("--eval-cache", metavar="DIR",
                   help=f"the result cache of --eval (refsim eval --out DIR; default: {CACHE_DIR}/ in --out)")
    p.set_defaults(func=run)
    return p


#: an eval message's flag -> the sweep's flag of the same value
RENAMED = {"MODEL": "--eval MODEL", "--out": "--eval-cache", **{f"--{n}": f"--eval-{n}" for n in EVAL_OPTIONS}}
_FLAG = re.compile(r"(?<![\w-])(MODEL|--[a-z][a-z-]*[a-z])(?![\w-])")


def sweep_flags(message: str) -> str:
    """A ``refsim eval`` error message with each of its flags named as the sweep's (``--seqlen`` ->
    ``--eval-seqlen``), so the one line names what the user typed."""
    return _FLAG.sub(lambda m: RENAMED.get(m.group(1), m.group(1)), message)


def _check_eval_flags(args) -> tuple[str, str]:
    """(MODEL, SWEEPMODEL or '') of --eval, after the checks of flag combinations."""
    given = [f"--eval-{n}" for n in EVAL_OPTIONS if getattr(args, _dest(n)) is not None]
    given += ["--eval-cache"] if args.eval_cache is not None else []
    if args.eval is None:
        if given:
            raise UsageError(f"{given[0]} is an option of --eval MODEL (accuracy computed by refsim eval); "
                             "there is no --eval here")
        return "", ""
    spec = args.eval
    model, _, target = spec.rpartition("=") if "=" in spec and not os.path.exists(spec) else (spec, "", "")
    if not model.strip():
        raise UsageError(f"--eval {spec!r}: give a transformers model directory or a .gguf file")
    if not os.path.exists(model):
        raise UsageError(f"--eval {model}: no such model directory or .gguf file")
    if (args.eval_text is None) == (args.eval_token_ids is None):
        raise UsageError("--eval needs the evaluation tokens: give one of --eval-text FILE or --eval-token-ids "
                         "FILE.npy" + (", not both" if args.eval_text is not None else ""))
    if args.eval_calib_text is not None and args.eval_calib_token_ids is not None:
        raise UsageError("--eval-calib-text and --eval-calib-token-ids: give one calibration source, not both")
    if args.eval_cache is not None and args.out is not None:
        cache, out = os.path.abspath(args.eval_cache), os.path.abspath(args.out)
        if cache == out or cache.startswith(out + os.sep) or out.startswith(cache + os.sep):
            raise UsageError(f"--eval-cache {args.eval_cache}: must lie outside --out {args.out} (without "
                             f"--eval-cache the cache is {CACHE_DIR}/ in --out)")
    return model, target


def eval_configs(args) -> tuple[str, list[str]]:
    """(the --configs of refsim eval, the --configs entries not evaluated)."""
    from refsim.eval import parse_configs

    if args.eval_configs is not None:
        try:
            parse_configs(args.eval_configs)
        except UsageError as exc:
            raise UsageError(sweep_flags(str(exc))) from None
        return args.eval_configs, []
    names = [c.strip() for c in args.configs.split(",")]
    known, other = [], []
    for n in names:
        try:
            parse_configs(n)
            known.append(n)
        except UsageError:
            other.append(n)
    if not known:
        raise UsageError(f"--eval: none of --configs ({args.configs}) is a refsim eval configuration; "
                         "give --eval-configs (e.g. W16A16,W4A4,W4A4@c1)")
    return ",".join(known), other


def eval_namespace(args, model: str, configs: str, cache: str | None) -> argparse.Namespace:
    """The namespace ``refsim eval MODEL --configs CONFIGS --X ...`` would parse to: refsim eval's
    defaults, overridden by every --eval-X given, scheduled as the sweep is."""
    parser = _eval_parser()
    ns = argparse.Namespace(**{a.dest: a.default for a in parser._actions if a.dest != "help"})
    for name, a in _eval_actions().items():
        value = getattr(args, _dest(name))
        if value is not None:
            setattr(ns, a.dest, value)
    ns.model, ns.configs, ns.out = model, configs, cache
    ns.scheduler = "local" if args.scheduler is None else args.scheduler
    ns.workers = args.workers or ns.workers
    ns.json, ns.quiet = True, False
    return ns


def run(args) -> int:
    from hwmodel import sweep_cli
    from refsim.outputs import is_own_output

    from .eval import evaluate_command

    model, target = _check_eval_flags(args)
    if not model:
        return sweep_cli.run(args)
    ctx = sweep_cli.prepare(args)  # every sweep argument and --out, before the long part
    keys = sweep_cli.model_keys(ctx["models"])
    if target and sweep_cli.model_key(target) not in keys:
        raise UsageError(f"--eval {args.eval}: MODEL {target!r} is not one of --models ({args.models})")
    if not target and sweep_cli.model_key(model) not in keys:
        raise UsageError(f"--eval {args.eval}: the model is not one of --models ({args.models}); add it to "
                         f"--models, or join its results to one with --eval {model}=MODEL")
    configs, not_evaluated = eval_configs(args)
    for c in not_evaluated:
        print(f"refsim sweep: note: --configs {c} is not a refsim eval configuration: not evaluated",
              file=sys.stderr)
    work = None
    try:
        if args.eval_cache is not None:
            cache = args.eval_cache
        elif args.out is not None:
            out = os.path.abspath(args.out)
            os.makedirs(os.path.dirname(out), exist_ok=True)  # as staged_output will
            work = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.{CACHE_DIR}-", dir=os.path.dirname(out))
            cache = os.path.join(work, CACHE_DIR)
            earlier = os.path.join(out, CACHE_DIR)
            if os.path.isdir(earlier) and is_own_output(earlier, ("eval",)):  # prepare vetted out: --force given
                shutil.copytree(earlier, cache)
        else:
            cache = None
        try:
            doc = evaluate_command(eval_namespace(args, model, configs, cache))
        except UsageError as exc:
            raise UsageError(sweep_flags(str(exc))) from None
        reference = os.path.join(args.out, EVAL_JSON) if args.out else f"refsim eval {model} (not written: no --out)"
        sweep_cli.add_measured(ctx, doc, flag="--eval", spec=args.eval, target=target, reference=reference)
        ctx["eval"] = {"model": doc["model"], "configs": [r["config"] for r in doc["results"]],
                       "not_evaluated": not_evaluated, "text": doc["text"], "calibration": doc["calibration"],
                       "cache": os.path.join(args.out, CACHE_DIR) if work else cache}
        extra_files = {EVAL_JSON: to_json(doc) + "\n"} if args.out else None
        extra_dirs = {CACHE_DIR: cache} if work else None
        return sweep_cli.execute(args, ctx, extra_files=extra_files, extra_dirs=extra_dirs)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
