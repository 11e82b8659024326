"""Layering: each package imports only the layers below it (import-linter, contracts in pyproject.toml).

    refsim_app                       the `refsim` command, the demo, the calibrate pipeline
    cukernels                        the kernels and their harness (it draws golden's level patterns)
    golden | hwmodel                 independent of each other (their cli.py front ends included)
    refsim_cli                       the command-line toolkit (argparse types, run_command, --preset/--spec)
    refsim                           the bit-exact reference

A lower layer never imports a higher one, directly or through another module, at module level or
inside a function; hwmodel's own modules use the reference only in ``hwmodel.errors`` (the error
figures of the sweep), for the model topologies (``refsim.models``: shapes and bit rules) and for the
shared output rules (``refsim.outputs``). ``lint-imports`` checks
the real tree; each contract is then shown to fail on a copy of the tree with one forbidden import
added, so a pass is not a checker that sees nothing. import-linter reads ``import`` statements only:
a module loaded by a string name is caught by the scan at the end.
"""

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("refsim", "refsim_cli", "golden", "hwmodel", "cukernels", "refsim_app")
LAYERS = "refsim_app above cukernels above golden | hwmodel"  # the start of the contracts' names
HWMODEL = "hwmodel uses the reference only for error figures"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        found = shutil.which("lint-imports")
        if found is None:
            pytest.fail("lint-imports is not installed: pip install 'refsim[test]' (import-linter)")
        exe = Path(found)
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([str(exe), "--no-cache", str(root / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_lint_imports_keeps_every_contract():
    r = lint_imports(ROOT)
    assert r.returncode == 0 and " 0 broken" in r.stdout, r.stdout + r.stderr
    for name in (LAYERS, HWMODEL):
        assert name in " ".join(r.stdout.split()), f"contract {name!r} was not checked:\n{r.stdout}"


# (file, line added, the contract it breaks, a word of the report naming the import)
FORBIDDEN = [
    ("refsim/gemm.py", "import golden.bundle", LAYERS, "refsim.gemm -> golden.bundle"),
    ("refsim/spec.py", "import refsim_cli", LAYERS, "refsim.spec -> refsim_cli"),
    ("refsim/quantize.py", "def _late():\n    from refsim_app import cli\n    return cli", LAYERS,
     "refsim.quantize -> refsim_app"),
    ("refsim_cli/argtypes.py", "import hwmodel.shapes", LAYERS, "refsim_cli.argtypes -> hwmodel.shapes"),
    ("golden/verify.py", "import refsim_app.cli", LAYERS, "golden.verify -> refsim_app.cli"),
    ("golden/cli.py", "import cukernels.reference", LAYERS, "golden.cli -> cukernels.reference"),
    ("cukernels/harness.py", "import refsim_app", LAYERS, "cukernels.harness -> refsim_app"),
    ("hwmodel/shapes.py", "from golden import presets", LAYERS, "hwmodel.shapes -> golden"),
    ("golden/stimulus.py", "import cukernels.harness", LAYERS, "golden.stimulus -> cukernels.harness"),
    ("hwmodel/traffic.py", "import refsim.gemm", HWMODEL, "hwmodel.traffic -> refsim.gemm"),
]


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory):
    """The packages and pyproject.toml, copied once (each test edits one file and restores it)."""
    root = tmp_path_factory.mktemp("tree")
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.cu", "*.cuh"))
    shutil.copy(ROOT / "pyproject.toml", root)
    return root


@pytest.mark.parametrize("path,line,contract,shown", FORBIDDEN, ids=[f"{p}:{s.split(' -> ')[1]}"
                                                                    for p, _, _, s in FORBIDDEN])
def test_each_contract_fails_on_a_forbidden_import(tree_copy, path, line, contract, shown):
    target = tree_copy / path
    original = target.read_text()
    try:
        target.write_text(original + "\n\n" + line + "\n")
        r = lint_imports(tree_copy)
    finally:
        target.write_text(original)
    report = " ".join(r.stdout.split())
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{contract}" in report and "BROKEN" in report, r.stdout
    assert shown in report, f"the report does not name {shown!r}:\n{r.stdout}"


def test_the_copy_itself_passes(tree_copy):
    """The failures above come from the added line, not from copying the tree."""
    r = lint_imports(tree_copy)
    assert r.returncode == 0, r.stdout + r.stderr


# --- modules loaded by name: invisible to import-linter ------------------------------------------

BELOW_APP = ("refsim", "refsim_cli", "golden", "hwmodel", "cukernels")
ABOVE = {"refsim": ("refsim_cli", "golden", "hwmodel", "cukernels", "refsim_app"),
         "refsim_cli": ("golden", "hwmodel", "cukernels", "refsim_app"),
         "golden": ("refsim_app", "hwmodel", "cukernels"), "hwmodel": ("refsim_app", "golden", "cukernels"),
         "cukernels": ("refsim_app",)}


def named_modules(tree: ast.AST, forbidden: tuple[str, ...]):
    """(name, line) of each string constant that is exactly a module name of ``forbidden``
    (``importlib.import_module("golden.cli")``)."""
    pattern = re.compile(rf"^({'|'.join(forbidden)})(\.\w+)*$")
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and pattern.match(node.value):
            yield node.value, node.lineno


@pytest.mark.parametrize("package", BELOW_APP)
def test_no_module_of_a_higher_layer_is_loaded_by_name(package):
    found = [f"{p.relative_to(ROOT)}:{line} names {name}" for p in sorted((ROOT / package).rglob("*.py"))
             for name, line in named_modules(ast.parse(p.read_text()), ABOVE[package])]
    assert not found, f"{package} may not load a higher layer by name: " + ", ".join(found)


def test_the_name_scan_sees_a_module_name():
    src = "import importlib\nm = importlib.import_module('refsim_app.cli')\nDOC = 'golden vectors'\nX = 'golden'\n"
    assert sorted(n for n, _ in named_modules(ast.parse(src), ABOVE["refsim"])) == ["golden", "refsim_app.cli"]
