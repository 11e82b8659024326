"""Layering: the reference package refsim/ imports nothing of golden, hwmodel or cukernels.

The reference (numerics, quantizers, GEMMs, the model dataflow) sits below the packages that
use it: golden writes vectors from it, hwmodel costs it, cukernels are checked against it. An
import the other way ties the reference to its users, and the cycle grows with every feature.

The scan reads each module's syntax tree (no import is run): ``import X`` / ``from X import``
statements anywhere in the file, inside functions too, and string constants that name a module
of those packages (``importlib.import_module("golden.cli")`` loads a module by name).
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("golden", "hwmodel", "cukernels")
_MODULE_NAME = re.compile(rf"^({'|'.join(FORBIDDEN)})(\.\w+)*$")

# Known violations, to be removed by issue 11 (the demo and the umbrella command line move to an
# application layer above refsim/). Nothing may be added here: a new entry is a new violation.
# An entry that no longer occurs must be deleted (test_allow_list_has_no_stale_entries).
ALLOWED = {
    ("refsim/demo.py", "golden"),  # the demo writes a golden bundle
    ("refsim/demo.py", "golden.bundle"),  # ... and checks that an existing --out is a bundle
    ("refsim/spec_cli.py", "golden"),  # `refsim spec` prints a golden preset's recorded specs too
    ("refsim/spec_cli.py", "golden.presets"),
    ("refsim/cli.py", "golden.cli"),  # the umbrella CLI loads every package's subcommands by name
    ("refsim/cli.py", "hwmodel.cli"),
    ("refsim/cli.py", "cukernels.cli"),
}


def _imported_names(tree: ast.AST):
    """Every module name the tree imports or names as a string, with its line."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, node.lineno
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_NAME.match(node.value):
            yield node.value, node.lineno


def violations(package: str = "refsim") -> dict[tuple[str, str], int]:
    """(file, module) -> first line, for each module of FORBIDDEN that ``package`` uses."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for name, line in _imported_names(ast.parse(path.read_text(), filename=rel)):
            if name.split(".")[0] in FORBIDDEN:
                found.setdefault((rel, name), line)
    return found


def test_refsim_imports_nothing_of_golden_hwmodel_or_cukernels():
    new = {key: line for key, line in violations().items() if key not in ALLOWED}
    assert not new, "refsim/ must not import golden, hwmodel or cukernels: " + ", ".join(
        f"{path}:{line} uses {name}" for (path, name), line in sorted(new.items()))


def test_allow_list_has_no_stale_entries():
    stale = ALLOWED - set(violations())
    assert not stale, f"these violations are gone: remove them from ALLOWED in tests/test_layering.py: {sorted(stale)}"


def test_the_scan_sees_every_form_of_import(tmp_path):
    """The scan itself, on a module that uses each form (so a pass is not a scan that sees nothing)."""
    src = ("import golden\nimport hwmodel.cli as h\nfrom cukernels import reference\n"
           "def f():\n    from golden.bundle import x\n    return importlib.import_module('hwmodel.cli')\n"
           "import numpy\nfrom . import sibling\nDOC = 'golden vectors are written by golden'\n")
    names = sorted({name for name, _ in _imported_names(ast.parse(src))})
    assert names == ["cukernels", "golden", "golden.bundle", "hwmodel.cli", "numpy"]
    assert [n for n in names if n.split(".")[0] in FORBIDDEN] == ["cukernels", "golden", "golden.bundle",
                                                                 "hwmodel.cli"]
