"""``make docs-check``: every annotated figure in README.md and docs/*.md is re-computed and compared.

A figure is tied to the command that makes it by an HTML comment next to it (invisible when rendered)::

    <!-- docs-check: refsim cost opt-66b --batch 8 --json | py: j["results"][0]["memory"]["total_gib"] => 30.9 -->
    <!-- docs-check: refsim cost --list => 3x3-bit 0.0989 -->
    <!-- docs-check: python: hwmodel.memory("opt-175b", "gptq-W3", batch=1, seq=2048).weights_gib => 63.17 -->
    <!-- docs-check slow: refsim sdr sqnr --groups 8 16 32 64 128 | py: j["rows"][0]["sqnr_db"] => 13.4 -->

Forms (``COMMAND => EXPECTED``):

* ``refsim ARGS => TEXT``: the command's standard output must contain TEXT.
* ``refsim ARGS | py: EXPR => NUMBER``: ``EXPR`` is evaluated with ``j`` = the command's JSON output
  (the command needs ``--json``); the value is rounded to as many decimals as NUMBER shows and must
  equal it. A ``%`` or unit after the number is ignored.
* ``python: EXPR => NUMBER``: ``EXPR`` evaluated with ``hwmodel``, ``refsim`` and ``np`` (numpy) imported.

and, in every form, EXPECTED must also appear in the document within :data:`NEAR` lines of the
annotation: the figure the reader sees is the one checked. ``docs-check slow:`` marks an expensive
entry, skipped unless ``--slow`` is given (``make docs-check-slow``). Commands run in this process
through ``refsim_app.cli.main`` (no shell; the same command line is run once), so the whole default
check takes seconds.

Usage: ``python tools/docs_check.py [--slow] [FILES...]``; exit 1 on any difference, listing each as
``FILE:LINE: command: expected X, got Y``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NEAR = 8  # lines either side of the annotation in which the expected figure must appear
ANNOTATION = re.compile(r"<!--\s*docs-check(?P<slow>\s+slow)?:\s*(?P<body>.*?)\s*-->", re.S)
NUMBER = re.compile(r"^[-+]?\d+(?:\.(?P<dec>\d+))?")


@dataclass
class Entry:
    file: Path
    line: int
    slow: bool
    command: str  # "refsim ..." or "python: EXPR"
    expr: str | None  # the py: expression on the JSON output
    expected: str

    def where(self) -> str:
        try:
            rel = self.file.relative_to(ROOT)
        except ValueError:
            rel = self.file
        return f"{rel}:{self.line}"


def default_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def parse(path: Path) -> tuple[list[Entry], list[str]]:
    """The annotations of one markdown file, and the problems found in their syntax."""
    text = path.read_text(encoding="utf-8")
    entries, problems = [], []
    for m in ANNOTATION.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        body = " ".join(m.group("body").split())
        if " => " not in body:
            problems.append(f"{path}:{line}: docs-check annotation without ' => EXPECTED': {body!r}")
            continue
        command, expected = body.rsplit(" => ", 1)
        expr = None
        if " | py: " in command:
            command, expr = command.split(" | py: ", 1)
        if not (command.startswith("refsim ") or command.startswith("python: ")):
            problems.append(f"{path}:{line}: docs-check command must start with 'refsim ' or 'python: ': "
                            f"{command!r}")
            continue
        entries.append(Entry(path, line, bool(m.group("slow")), command.strip(), expr, expected.strip()))
    return entries, problems


def near(path: Path, line: int, expected: str) -> bool:
    """True when ``expected`` appears within NEAR text lines of ``line``, annotation lines not counted."""
    kept, at = [], 0  # the lines outside annotations; ``at``: where the annotation's line falls among them
    for i, raw in enumerate(path.read_text(encoding="utf-8").splitlines(keepends=True), start=1):
        if i == line:
            at = len(kept)
        if not ANNOTATION.fullmatch(raw.strip()):
            kept.append(raw)
    window = ANNOTATION.sub("", "".join(kept[max(0, at - NEAR): at + NEAR]))
    return expected in window


class Runner:
    """Runs each distinct refsim command line once, in this process; caches its stdout."""

    def __init__(self):
        self.cache: dict[str, tuple[int, str, str]] = {}

    def refsim(self, command: str) -> tuple[int, str, str]:
        if command not in self.cache:
            from refsim_app.cli import main

            argv = shlex.split(command)[1:]
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    rc = main(argv)
                except SystemExit as exc:  # argparse
                    rc = exc.code if isinstance(exc.code, int) else 2
            self.cache[command] = (rc, out.getvalue(), err.getvalue())
        return self.cache[command]


def rounded_equal(value, expected: str) -> tuple[bool, str]:
    """Compare ``value`` with the number that starts ``expected``, at the precision ``expected`` shows."""
    m = NUMBER.match(expected)
    if not m:
        return str(value) == expected, str(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False, repr(value)
    dec = len(m.group("dec") or "")
    got = f"{float(value):.{dec}f}"
    return got == m.group(0).lstrip("+") or got == m.group(0), got


def check(entry: Entry, runner: Runner) -> str | None:
    """None when the entry holds; else the one-line difference."""
    if not near(entry.file, entry.line, entry.expected):
        return f"{entry.where()}: the figure {entry.expected!r} is not in the text next to its annotation"
    if entry.command.startswith("python: "):
        import numpy as np

        import hwmodel
        import refsim

        try:
            value = eval(entry.command[len("python: "):], {"hwmodel": hwmodel, "refsim": refsim, "np": np})  # noqa: S307
        except Exception as exc:  # a broken expression is a failed check, reported as such
            return f"{entry.where()}: {entry.command}: raised {type(exc).__name__}: {exc}"
        ok, got = rounded_equal(value, entry.expected)
        return None if ok else f"{entry.where()}: {entry.command}: expected {entry.expected}, got {got}"
    rc, out, err = runner.refsim(entry.command)
    if rc != 0:
        last = (err.strip().splitlines() or ["(no message)"])[-1]
        return f"{entry.where()}: {entry.command}: exit {rc}: {last}"
    if entry.expr is None:
        return None if entry.expected in out else (
            f"{entry.where()}: {entry.command}: output does not contain {entry.expected!r}")
    try:
        j = json.loads(out)
        value = eval(entry.expr, {"j": j})  # noqa: S307
    except Exception as exc:
        return f"{entry.where()}: {entry.command} | py: {entry.expr}: {type(exc).__name__}: {exc}"
    ok, got = rounded_equal(value, entry.expected)
    return None if ok else f"{entry.where()}: {entry.command} | py: {entry.expr}: expected {entry.expected}, got {got}"


def run(files: list[Path], *, slow: bool = False, stream=sys.stdout) -> int:
    runner = Runner()
    failures, n_checked, n_slow = [], 0, 0
    for path in files:
        entries, problems = parse(path)
        failures += problems
        for e in entries:
            if e.slow and not slow:
                n_slow += 1
                continue
            n_checked += 1
            diff = check(e, runner)
            if diff:
                failures.append(diff)
    for f in failures:
        print(f, file=stream)
    print(f"docs-check: {n_checked} figures checked, {len(failures)} differ, {n_slow} slow ones skipped"
          + ("" if slow else " (--slow runs them)"), file=stream)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="docs_check", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", type=Path, help="markdown files (default: README.md and docs/*.md)")
    p.add_argument("--slow", action="store_true", help="also run the entries marked 'docs-check slow:'")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    return run(args.files or default_files(), slow=args.slow)


if __name__ == "__main__":
    sys.exit(main())
