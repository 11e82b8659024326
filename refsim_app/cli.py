"""The ``refsim`` command line: one entry point, one subcommand per capability.

This is the application layer's entry point (``refsim`` script, ``python -m refsim_app``). It sits
above every package, so it may load all of them; nothing below it imports it
(tests/test_layering.py). Each subcommand lives in the module that owns the command and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable taking the
parsed arguments and returning an exit status). Modules listed here must keep their import
light: heavy dependencies (torch, matplotlib, cupy) are imported inside the command itself.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, attribute) pairs; a module that is missing (a capability not built yet, or an
# optional dependency absent at import time) is skipped so the rest of the CLI still works.
SUBCOMMAND_MODULES = [
    "refsim_app.demo",
    "refsim_app.spec",
    "refsim_app.sdr",
    "refsim_app.calibrate",
    "refsim_app.eval",
    "golden.cli",
    "hwmodel.cli",
    "refsim_app.sweep",  # hwmodel.sweep_cli's `refsim sweep`, with --eval (refsim eval) joined in
    "cukernels.cli",
]


def build_parser() -> argparse.ArgumentParser:
    from refsim import __version__

    parser = argparse.ArgumentParser(
        prog="refsim",
        description="Bit-exact reference simulator and co-design testbench for low-bit LLM quantization.",
    )
    parser.add_argument("--version", action="version", version=f"refsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name or (exc.name and name.startswith(exc.name)):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse and run; argparse's own exits (``--help``, a bad flag) stay SystemExit, as argparse makes them."""
    from refsim_cli import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, quiet_broken_pipe, run_command

    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            quiet_broken_pipe()  # `refsim --help | head`
            raise
        if not getattr(args, "func", None):
            parser.print_help()
            return 0 if quiet_broken_pipe() else EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("\nrefsim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return run_command(args.func, args, args.command)


if __name__ == "__main__":
    sys.exit(main())
