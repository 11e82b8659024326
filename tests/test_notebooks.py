"""Every notebook in notebooks/ runs from its jupytext source, top to bottom, without a cell error.

Each notebook ends in assertions on its own results, so a notebook whose numbers went wrong fails
here as surely as one that raises. Executed with nbclient in a fresh kernel, in a temporary working
directory, each within the two minutes a notebook is allowed on these 2-core machines (and no cell
over that). Nothing executed is written into the repository.
"""

import importlib.util
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[1] / "notebooks" / "run_notebooks.py"
_spec = importlib.util.spec_from_file_location("run_notebooks", RUNNER)
run_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_notebooks)

NOTEBOOK_LIMIT_S = 120


def test_there_are_notebooks():
    names = [p.stem for p in run_notebooks.sources()]
    assert {"01_rtl_engineer", "02_kernel_developer", "03_hardware_architect", "04_numerics",
            "05_rptq_seen"} <= set(names), names


@pytest.mark.parametrize("source", run_notebooks.sources(), ids=lambda p: p.stem)
def test_notebook_runs_and_its_assertions_hold(source):
    nb, seconds = run_notebooks.execute(source, timeout=NOTEBOOK_LIMIT_S)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), "a code cell did not run"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    assert seconds < NOTEBOOK_LIMIT_S, f"{source.stem} took {seconds:.0f} s (limit {NOTEBOOK_LIMIT_S} s)"


def test_sources_hold_no_outputs():
    """The sources are percent-format text: no notebook JSON or outputs are committed."""
    assert not list(RUNNER.parent.glob("*.ipynb"))
    for p in run_notebooks.sources():
        text = p.read_text()
        assert text.startswith("# ---\n# jupyter:") and "# %%" in text, p.name


def test_out_never_writes_into_a_users_directory(tmp_path, capsys, monkeypatch):
    """``--out`` is checked before any notebook runs: a directory the runner did not write is refused."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.ipynb").write_text("a user's notebook")
    ran = []
    monkeypatch.setattr(run_notebooks, "execute", lambda *a, **k: ran.append(a))
    assert run_notebooks.main(["--out", str(mine)]) == 2
    assert "is not an output this command wrote" in capsys.readouterr().err
    assert ran == [] and sorted(p.name for p in mine.iterdir()) == ["notes.ipynb"]
    assert (mine / "notes.ipynb").read_text() == "a user's notebook"
