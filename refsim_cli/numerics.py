"""``--preset NAME`` / ``--spec FILE.json``: how a numerics command is told its numerics spec.

Every command that computes numerics takes the same two options (``refsim demo``, ``refsim sdr``,
``refsim calibrate``, ``refsim spec``, and ``refsim golden`` through the same helper):

- ``--preset NAME``: one of ``refsim.PRESETS`` (``refsim spec --list`` names them);
- ``--spec FILE.json``: a full :class:`refsim.NumericsSpec` as JSON, every field named, no other key
  (``NumericsSpec.from_dict``; ``refsim spec NAME > FILE.json`` writes one to start from);
- neither: the command's method preset (rptq for calibrate, qrazor for sdr, ...).

The two are exclusive. A bad value is one line naming the option and what is allowed (exit 2 through
:func:`refsim_cli.run_command`): an unknown preset lists the presets; a file that cannot be read, is
not JSON, is not an object, or misses or adds fields names the file and those fields. The check runs
in :func:`spec_from_args`, before any work, rather than in argparse, so that the message is one line.
"""

from __future__ import annotations

import json

from refsim.outputs import UsageError
from refsim.spec import PRESETS, NumericsSpec


def add_spec_arguments(parser, *, default: str | None) -> None:
    """Add ``--preset`` and ``--spec`` to ``parser``; ``default`` is the command's method preset
    (None: the command needs one of them, as ``refsim spec`` does)."""
    if default is not None and default not in PRESETS:
        raise ValueError(f"default={default!r} is not a preset; allowed: {', '.join(PRESETS)}")
    shown = f"default {default}" if default else "no default"
    parser.add_argument("--preset", metavar="NAME", default=None,
                        help=f"numerics preset, one of {', '.join(PRESETS)} ({shown}); not with --spec")
    parser.add_argument("--spec", metavar="FILE.json", default=None,
                        help="a full numerics spec as JSON, every field named (`refsim spec NAME` prints one to "
                             "start from); not with --preset")
    parser.set_defaults(spec_default=default)


def spec_from_args(args, *, default: str | None = None) -> NumericsSpec:
    """The spec ``--preset`` / ``--spec`` name, else the preset ``default`` (else the one
    :func:`add_spec_arguments` recorded); a :class:`UsageError` in one line for a bad value."""
    name, path = getattr(args, "preset", None), getattr(args, "spec", None)
    if name is not None and path is not None:
        raise UsageError(f"--preset {name} and --spec {path}: give one of them, not both")
    if path is not None:
        return read_spec_file(path)
    name = name if name is not None else (default or getattr(args, "spec_default", None))
    if name is None:
        raise UsageError("--preset NAME or --spec FILE.json is required")
    if name not in PRESETS:
        raise UsageError(f"--preset {name}: not a numerics preset; allowed: {', '.join(PRESETS)}")
    return PRESETS[name]


def read_spec_file(path) -> NumericsSpec:
    """The :class:`NumericsSpec` in JSON file ``path`` (``NumericsSpec.to_dict``'s form)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"--spec {path}: cannot read it ({reason})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--spec {path}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(doc, dict):
        raise UsageError(f"--spec {path}: expected a JSON object with every NumericsSpec field, got "
                         f"{type(doc).__name__}")
    try:
        return NumericsSpec.from_dict(doc)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--spec {path}: {exc}") from None


def spec_source(args, *, default: str | None = None) -> str:
    """Where the spec came from, as a record says it: ``preset rptq`` or ``file PATH``."""
    if getattr(args, "spec", None) is not None:
        return f"file {args.spec}"
    return f"preset {getattr(args, 'preset', None) or default or getattr(args, 'spec_default', None)}"


def check_applied(spec: NumericsSpec, *, command: str, base: str, applied: tuple[str, ...]) -> NumericsSpec:
    """Refuse, in one line, a spec whose fields outside ``applied`` differ from preset ``base``.

    A command must not record numerics it does not apply (issue 11: the manifest's spec was never
    used by verify). Where the library a command calls still fixes some rules itself (they come from
    ``base``), a spec that changes them is refused instead of being recorded and ignored; ``applied``
    names the fields the command does take from the spec. Returns ``spec``."""
    ref = PRESETS[base].to_dict()
    mine = spec.to_dict()
    fixed = [f for f in ref if f != "spec_schema_version" and f not in applied and mine[f] != ref[f]]
    if fixed:
        shown = ", ".join(f"{f}={mine[f]!r}" for f in fixed)
        took = ", ".join(applied) if applied else "no field"
        raise UsageError(f"--preset/--spec: {command} takes {took} from the spec and computes every other rule as "
                         f"the {base} preset does; this spec changes {shown} (allowed: the {base} preset's "
                         + ", ".join(f"{f}={ref[f]!r}" for f in fixed) + ")")
    return spec
