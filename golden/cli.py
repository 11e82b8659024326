"""Subcommands ``refsim golden``, ``refsim verify`` and ``refsim compare`` (light at import).

Every argument is checked before any work (refsim_cli): the bundle directory of ``golden``
is replaced only when it is a bundle refsim wrote and ``--force`` is given; a user's directory is
refused whatever the flag. ``--json`` prints one JSON document instead of the text report.
"""

from __future__ import annotations

import json
import sys

from refsim_cli import UsageError, int_range, positive_int

SEED = int_range(0, 2**63 - 1)  # golden.stimulus.make_rng's range


def register(subparsers) -> None:
    g = subparsers.add_parser(
        "golden", help="write a golden-vector bundle (.npy + $readmemh .hex + manifest.json)",
        description="Write a golden-vector bundle for RTL teams. Without PRESET, the default bundle "
        "(gemm_w4a4). `refsim golden --list` lists the presets: what each quantizes at which bits, "
        "its shape and the levels it allows.")
    g.add_argument("preset", nargs="?", default=None, metavar="PRESET", help="bundle preset (see --list)")
    g.add_argument("--out", metavar="DIR", help="bundle directory to create (an earlier bundle is replaced only "
                   "with --force; any other directory is refused); default: ./golden-PRESET-levelL-seedS")
    g.add_argument("--seed", type=SEED, default=0, help="PCG64 seed, an integer in 0..2^63-1 (default 0)")
    g.add_argument("--level", type=int_range(0, 2), default=0,
                   help="stimulus: 0 random, 1 patterns, 2 exhaustive (default 0; --list shows each preset's)")
    g.add_argument("--shape", default=None, metavar="A,B[,C]",
                   help="preset shape as positive integers, e.g. 8,64,8 (names and defaults in --list); "
                   "a shape too big for the memory or disk is refused before any work")
    g.add_argument("--numerics", action="append", default=[], metavar="[ROLE=]NAME",
                   help="make the stages of spec ROLE (act, weight, out, sdr: --list shows each preset's) with the "
                   "numerics preset NAME (refsim spec --list), e.g. --numerics act=onnx; ROLE may be left out when "
                   "the bundle preset has one role; repeat for several roles")
    g.add_argument("--spec", action="append", default=[], metavar="[ROLE=]FILE.json",
                   help="make the stages of spec ROLE with the NumericsSpec in FILE.json (every field, as "
                   "`refsim spec NAME` prints it); ROLE as for --numerics. The manifest records the specs used")
    g.add_argument("--force", action="store_true", help="replace DIR when it is an earlier refsim bundle")
    g.add_argument("--list", action="store_true", help="list the presets and what each one holds")
    g.add_argument("--json", action="store_true", help="with --list: the presets as JSON (specs included)")
    g.add_argument("--quiet", action="store_true", help="no progress messages")
    g.set_defaults(func=run_golden)

    v = subparsers.add_parser("verify", help="check a bundle: checksums, schema, re-derive every stage",
                              description="Check every checksum and the schema, that the manifest's shape, "
                              "layouts and word widths agree with the stages, then re-derive every stage "
                              "from the inputs and the recorded spec. Exit status 1 on any failure.")
    v.add_argument("bundle", metavar="DIR", help="a bundle directory written by refsim golden")
    v.add_argument("--json", action="store_true", help="the report as JSON (ok, preset, one entry per check)")
    v.set_defaults(func=run_verify)

    c = subparsers.add_parser("compare", help="compare a DUT's words against one stage of a bundle",
                              description="Compare a device-under-test output (.hex or .npy) with a stage: "
                              "first mismatches (index, expected, received, XOR) and their count; exit 1 on any.")
    c.add_argument("bundle", metavar="DIR", help="a bundle directory written by refsim golden")
    c.add_argument("--stage", required=True, metavar="NAME", help="the stage to compare (manifest.json lists them)")
    c.add_argument("--dut", required=True, metavar="FILE", help="the DUT's words: .hex ($readmemh) or .npy")
    c.add_argument("--max", type=positive_int, default=10, dest="max_report",
                   help="mismatches to list, a positive integer (default 10)")
    c.add_argument("--json", action="store_true", help="the result as JSON")
    c.set_defaults(func=run_compare)


# What each config key means, in words, for --list.
CONFIG_WORDS = {
    "bits": "{}-bit codes", "wbits": "weights {}-bit", "abits": "activations {}-bit", "kvbits": "K/V {}-bit",
    "base_bits": "int{} input", "keep": "keeps {} significant bits", "group_size": "groups of {}",
    "clusters": "{} clusters", "head_clusters": "{} clusters per head", "heads": "{} heads",
    "layout": "layout {}", "w_layout": "weights packed as {}", "signed": "signed={}",
    "out_zero": "output zero point {}",
}


def describe_config(cfg: dict) -> str:
    return ", ".join(CONFIG_WORDS.get(k, k + "={}").format(v) for k, v in cfg.items())


# (fields, words) of each part of a spec's description; a part is shown when the stages use one of its fields
_SPEC_WORDS = [
    (("signed", "narrow"), lambda s: f"{'signed' if s['signed'] else 'unsigned'}{' narrow' if s['narrow'] else ''} "
     "codes"),
    (("rounding",), lambda s: f"round {s['rounding']}"),
    (("scale_op", "compute_dtype"), lambda s: f"{s['scale_op']} in {s['compute_dtype']}"),
    (("zero_point_stage",), lambda s: f"zero point {s['zero_point_stage']}"),
    (("saturation",), lambda s: s["saturation"]),
    (("acc_bits", "acc_overflow"), lambda s: f"int{s['acc_bits']} accumulator ({s['acc_overflow']})"),
    (("requant",), lambda s: f"requant {s['requant']}"),
    (("sdr_rounding",), lambda s: f"SDR rounding {s['sdr_rounding']}"),
    (("nonfinite",), lambda s: f"non-finite {s['nonfinite']}"),
]


def describe_spec(role: str, s: dict, uses=None) -> str:
    """The spec in words, only the parts the stages use (every part when ``uses`` is None)."""
    parts = [words(s) for fields, words in _SPEC_WORDS if uses is None or set(fields) & set(uses)]
    return f"{role}: " + ", ".join(parts)


def preset_info(name, p) -> dict:
    """What a preset holds, for --list: its quantizers and bits, shape, levels and numerics specs."""
    from golden.stimulus import LEVELS

    cfg = dict(p.config)
    bits = {k: v for k, v in cfg.items() if k.endswith("bits") or k in ("keep", "group_size")}
    return {
        "name": name,
        "summary": p.summary,
        "bits": bits,
        "config": cfg,
        "shape": dict(zip(p.shape_names, p.default_shape, strict=True)),
        "levels": {int(lv): LEVELS[int(lv)] for lv in p.levels},
        "level1_fixes_shape": p.pattern_shape is not None,
        "portable": bool(p.portable),
        "specs": {role: spec.to_dict() for role, spec in p.specs.items()},
        "spec_uses": {role: list(use.fields) for role, use in p.spec_use.items()},
    }


def _list(as_json: bool) -> int:
    from golden.presets import DEFAULT_PRESET, PRESETS

    infos = [preset_info(n, p) for n, p in PRESETS.items()]
    if as_json:
        print(json.dumps({"default": DEFAULT_PRESET, "presets": infos}, indent=2))
        return 0
    for info in infos:
        mark = "*" if info["name"] == DEFAULT_PRESET else " "
        shape = ",".join(f"{n}={v}" for n, v in info["shape"].items())
        levels = ", ".join(f"{lv} {nm}" for lv, nm in info["levels"].items())
        print(f"{mark} {info['name']}: {info['summary']}")
        print(f"    {describe_config(info['config'])}; shape [{shape}]; levels: {levels}"
              + (" (level 1 and 2 fix the shape)" if info["level1_fixes_shape"] else ""))
        for role, spec in info["specs"].items():
            print(f"    {describe_spec(role, spec, info['spec_uses'][role])}")
        if not info["specs"]:
            print("    no numerics spec: bit packing only")
    print("(* = the default bundle; --json for every field; refsim spec PRESET for a preset's full specs)")
    return 0


def run_golden(args) -> int:
    if args.list:
        return _list(args.json)
    if args.json:
        raise UsageError("--json goes with --list (a bundle's own record is its manifest.json)")
    from golden.bundle import write_bundle
    from golden.presets import DEFAULT_PRESET, PRESETS

    if args.preset is not None and args.preset not in PRESETS:
        raise UsageError(f"PRESET {args.preset!r} is not known; allowed: {', '.join(PRESETS)} (refsim golden --list)")
    specs = spec_options(PRESETS[args.preset or DEFAULT_PRESET], args.numerics, args.spec)
    if not args.out:
        args.out = f"golden-{args.preset or DEFAULT_PRESET}-level{args.level}-seed{args.seed}"
    progress = False if args.quiet else None
    try:
        write_bundle(args.preset, args.out, seed=args.seed, level=args.level, shape=args.shape,
                     force=args.force, progress=progress, specs=specs)
    except ValueError as exc:
        message = _as_flags(str(exc))
        if args.shape is not None and "--" not in message and "PRESET" not in message:
            message = f"--shape {args.shape}: {message}"  # a preset's own limit on a dimension
        raise UsageError(message) from None
    except OverflowError as exc:  # an accumulator whose overflow rule is "raise", under the spec given
        raise UsageError(f"the stages overflow the accumulator of the spec given (acc_overflow='raise'): {exc}; "
                         "choose a wider acc_bits or another acc_overflow") from None
    print(args.out)  # as the user typed it (write_bundle returns it absolute)
    return 0


def spec_options(preset, numerics: list, spec_files: list) -> dict:
    """{role: NumericsSpec} from ``--numerics [ROLE=]NAME`` and ``--spec [ROLE=]FILE.json`` (UsageError if bad)."""

    roles = list(preset.specs)
    shown = ", ".join(roles) if roles else "none (this preset applies no numerics spec)"
    out = {}
    for flag, values in (("--numerics", numerics), ("--spec", spec_files)):
        for text in values:
            if not roles:
                raise UsageError(f"{flag} {text}: preset {preset.name} applies no numerics spec (bit packing only); "
                                 "allowed: no --numerics or --spec")
            role, sep, value = text.partition("=")
            if not sep:
                if len(roles) != 1:
                    raise UsageError(f"{flag} {text}: preset {preset.name} has spec roles {shown}; name one as "
                                     f"{flag} ROLE={text}")
                role, value = roles[0], text
            if role not in roles:
                raise UsageError(f"{flag} {text}: role {role!r} is not one of preset {preset.name}'s; allowed: {shown}")
            if role in out:
                raise UsageError(f"{flag} {text}: role {role!r} is given twice (one --numerics or --spec per role)")
            out[role] = _numerics(value) if flag == "--numerics" else _spec_file(value)
    return out


def _numerics(name):
    import refsim

    if name not in refsim.PRESETS:
        raise UsageError(f"--numerics {name!r} is not a numerics preset; allowed: {', '.join(refsim.PRESETS)}")
    return refsim.preset(name)


def _spec_file(path):
    from refsim.spec import NumericsSpec

    try:
        d = json.loads(open(path, encoding="utf-8").read())
    except OSError as exc:
        raise UsageError(f"--spec {path}: cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"--spec {path}: not valid JSON ({exc})") from None
    if not isinstance(d, dict):
        raise UsageError(f"--spec {path}: not a JSON object of spec fields (refsim spec NAME prints one)")
    try:
        return NumericsSpec.from_dict(d)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--spec {path}: {exc}") from None


def _as_flags(message: str) -> str:
    """The library names its arguments (``shape=``, ``level=``); the command line names its flags."""
    for word, flag in (("shape=", "--shape "), ("level=", "--level "), ("seed=", "--seed "), ("preset=", "PRESET "),
                       ("shape is", "--shape is")):
        message = message.replace(word, flag)
    return message


def run_verify(args) -> int:
    from golden.verify import verify_bundle

    report = verify_bundle(args.bundle)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return 0 if report.ok else 1


def run_compare(args) -> int:
    from golden.compare import compare

    result = compare(args.bundle, args.stage, args.dut, max_report=args.max_report)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    from refsim_cli.running import package_main

    sys.exit(package_main(register, prog="python -m golden.cli"))
