"""``refsim spec PRESET``: a preset's full numerics spec as JSON (``refsim spec --list`` names them).

Two kinds of names are accepted: a numerics preset (``refsim.PRESETS``: onnx, torch, gptq, rptq,
qrazor, tflite, ...), printed as one ``NumericsSpec.to_dict()``; and a golden-bundle preset
(``refsim golden --list``), printed as ``{"preset", "config", "specs": {role: spec}}``, exactly
what that bundle's manifest records. Every knob is filled in: the JSON is the spec.
``refsim spec --preset NAME`` and ``refsim spec --spec FILE.json`` print the spec those options
resolve to in every other numerics command (refsim_cli.numerics), so a file can be checked first.
"""

from __future__ import annotations

import json

from refsim.outputs import UsageError
from refsim_cli.numerics import add_spec_arguments, spec_from_args


def register(subparsers) -> None:
    p = subparsers.add_parser("spec", help="print a preset's full numerics spec as JSON",
                              description=__doc__.split("\n\n")[0] + " Accepts numerics presets (refsim.PRESETS) "
                              "and golden-bundle presets (refsim golden --list).")
    p.add_argument("name", nargs="?", metavar="PRESET", help="a numerics or golden-bundle preset name")
    p.add_argument("--list", action="store_true", help="the names accepted, as JSON: numerics and golden presets")
    add_spec_arguments(p, default=None)
    p.set_defaults(func=run)


def names() -> dict:
    import refsim
    from golden.presets import PRESETS as GOLDEN

    return {"numerics": list(refsim.PRESETS), "golden": list(GOLDEN)}


def spec_document(name: str) -> dict:
    """The JSON document ``refsim spec NAME`` prints; a UsageError listing the names for an unknown one."""
    import refsim
    from golden.presets import PRESETS as GOLDEN

    if name in refsim.PRESETS:
        return refsim.PRESETS[name].to_dict()
    if name in GOLDEN:
        p = GOLDEN[name]
        return {"preset": name, "summary": p.summary, "config": dict(p.config),
                "specs": {role: s.to_dict() for role, s in p.specs.items()}}
    n = names()
    raise UsageError(f"PRESET {name!r} is not known; allowed: numerics presets {', '.join(n['numerics'])}; "
                     f"golden presets {', '.join(n['golden'])}")


def run(args) -> int:
    options = args.preset is not None or args.spec is not None  # --preset NAME / --spec FILE.json
    given = [what for what, on in (("PRESET", args.name is not None), ("--list", args.list),
                                   ("--preset/--spec", options)) if on]
    if len(given) > 1:
        raise UsageError(f"give one of PRESET, --list, --preset/--spec; got {' and '.join(given)}")
    if args.list:
        print(json.dumps(names(), indent=2))
        return 0
    if options:
        print(json.dumps(spec_from_args(args).to_dict(), indent=2))
        return 0
    if args.name is None:
        raise UsageError("PRESET is required (refsim spec --list names them)")
    print(json.dumps(spec_document(args.name), indent=2, sort_keys=False))
    return 0
