#!/usr/bin/env python3
"""Execute the notebooks from their jupytext sources; exit 0 only if every cell of every one ran.

    python notebooks/run_notebooks.py [--out DIR] [--timeout 120] [NAME ...]

The sources are the percent-format ``notebooks/NN_*.py`` files (jupytext: ``# %%`` starts a code
cell, ``# %% [markdown]`` a text cell), so a diff shows code and prose, never JSON or outputs.
Each is converted with jupytext, executed top to bottom with nbclient in a fresh Python kernel
whose working directory is a new temporary directory (a notebook writes only there), and fails
on the first cell that raises, its own closing assertions included. With ``--out DIR`` the
executed notebooks, outputs and plots included, are written to DIR/NAME.ipynb for reading (the
repository never holds them). ``REFSIM_REPO`` tells each notebook where the checkout is.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CELL_TIMEOUT_S = 120


def sources() -> list[Path]:
    """The notebook sources, in their numbered order."""
    return sorted(p for p in HERE.glob("[0-9][0-9]_*.py"))


def execute(source: Path, *, timeout: int = CELL_TIMEOUT_S):
    """(executed notebook, seconds). Raises nbclient's CellExecutionError naming the failing cell."""
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    env_before = os.environ.get("REFSIM_REPO")
    os.environ["REFSIM_REPO"] = str(ROOT)  # the kernel inherits this process's environment
    try:
        with tempfile.TemporaryDirectory(prefix=f"refsim-nb-{source.stem}-") as work:
            client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                                    resources={"metadata": {"path": work}})
            start = time.perf_counter()
            try:
                client.execute()
            except Exception as e:
                e.notebook = nb  # executed up to the failing cell, for --out
                raise
            return nb, time.perf_counter() - start
    finally:
        if env_before is None:
            os.environ.pop("REFSIM_REPO", None)
        else:
            os.environ["REFSIM_REPO"] = env_before


OUTPUT_KIND = "notebooks"  # the refsim.outputs marker of an --out this script wrote


def write_executed(nb, path: Path) -> None:
    import nbformat

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)


def main(argv=None) -> int:
    from refsim.outputs import UsageError, check_output, staged_output

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="notebook names (e.g. 01_rtl_engineer); default: all")
    ap.add_argument("--out", default=None, help="write the executed notebooks into this directory (e.g. "
                    "build/notebooks); an earlier --out of this script is replaced, any other directory refused")
    ap.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S, help="seconds allowed per cell")
    args = ap.parse_args(argv)
    available = {p.stem: p for p in sources()}
    unknown = [n for n in args.names if n not in available]
    if unknown:
        print(f"run_notebooks: error: unknown notebook {', '.join(unknown)}; allowed: {', '.join(available)}",
              file=sys.stderr)
        return 2
    if args.out:
        try:  # checked before any notebook runs: a user's directory is never written into
            check_output(args.out, kinds=(OUTPUT_KIND,), replace=True, replace_flag=None)
        except UsageError as e:
            print(f"run_notebooks: error: {e}", file=sys.stderr)
            return 2
    failed = 0
    executed = {}
    for name in args.names or list(available):
        try:
            nb, seconds = execute(available[name], timeout=args.timeout)
        except Exception as e:  # a failing cell: report it and go on to the next notebook
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}")
            if getattr(e, "notebook", None) is not None:
                executed[f"{name}.failed.ipynb"] = e.notebook
            continue
        print(f"ok   {name}: {seconds:.1f} s")
        executed[f"{name}.ipynb"] = nb
    if args.out:
        with staged_output(args.out, kind=OUTPUT_KIND) as tmp:
            for filename, nb in executed.items():
                write_executed(nb, Path(tmp) / filename)
    print(f"{len(args.names or available) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
