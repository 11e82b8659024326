"""Subcommands ``refsim golden``, ``refsim verify`` and ``refsim compare`` (light at import)."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    g = subparsers.add_parser(
        "golden", help="write a golden-vector bundle (.npy + $readmemh .hex + manifest.json)",
        description="Write a golden-vector bundle for RTL teams. Without PRESET, the default bundle "
        "(gemm_w4a4). `refsim golden --list` lists the presets.")
    g.add_argument("preset", nargs="?", default=None, metavar="PRESET", help="bundle preset (see --list)")
    g.add_argument("--out", metavar="DIR", help="bundle directory to create (must not exist unless --force); "
                   "default: ./golden-PRESET-levelL-seedS")
    g.add_argument("--seed", type=int, default=0, help="PCG64 seed (default 0)")
    g.add_argument("--level", type=int, default=0, choices=(0, 1, 2),
                   help="stimulus: 0 random, 1 patterns, 2 exhaustive (default 0)")
    g.add_argument("--shape", default=None, metavar="A,B[,C]", help="preset shape, e.g. 8,64,8 (see --list)")
    g.add_argument("--force", action="store_true", help="replace an existing bundle")
    g.add_argument("--list", action="store_true", help="list the presets, one line each")
    g.add_argument("--quiet", action="store_true", help="no progress messages")
    g.set_defaults(func=run_golden)

    v = subparsers.add_parser("verify", help="check a bundle: checksums, schema, re-derive every stage",
                              description="Check every checksum and the schema, then re-derive every stage "
                              "from the inputs and the recorded spec. Exit status 1 on any failure.")
    v.add_argument("bundle", metavar="DIR")
    v.set_defaults(func=run_verify)

    c = subparsers.add_parser("compare", help="compare a DUT's words against one stage of a bundle",
                              description="Compare a device-under-test output (.hex or .npy) with a stage: "
                              "first mismatches (index, expected, received, XOR) and their count; exit 1 on any.")
    c.add_argument("bundle", metavar="DIR")
    c.add_argument("--stage", required=True, metavar="NAME")
    c.add_argument("--dut", required=True, metavar="FILE", help=".hex ($readmemh) or .npy")
    c.add_argument("--max", type=int, default=10, dest="max_report", help="mismatches to list (default 10)")
    c.set_defaults(func=run_compare)


def run_golden(args) -> int:
    from golden.presets import DEFAULT_PRESET, PRESETS

    if args.list:
        width = max(map(len, PRESETS))
        for name, p in PRESETS.items():
            mark = "*" if name == DEFAULT_PRESET else " "
            shape = ",".join(f"{n}={v}" for n, v in zip(p.shape_names, p.default_shape, strict=True))
            print(f"{mark} {name:<{width}}  {p.summary}  [{shape}]")
        print("(* = the default bundle)")
        return 0
    from golden.bundle import write_bundle

    if not args.out:
        args.out = f"golden-{args.preset or DEFAULT_PRESET}-level{args.level}-seed{args.seed}"

    progress = False if args.quiet else None
    out = write_bundle(args.preset, args.out, seed=args.seed, level=args.level, shape=args.shape,
                       force=args.force, progress=progress)
    print(out)
    return 0


def run_verify(args) -> int:
    from golden.verify import verify_bundle

    report = verify_bundle(args.bundle)
    print(report)
    return 0 if report.ok else 1


def run_compare(args) -> int:
    from golden.compare import compare

    result = compare(args.bundle, args.stage, args.dut, max_report=args.max_report)
    print(result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    from refsim.cli import main

    sys.exit(main())
