"""tools/docs_check.py: the annotated figures in README.md and docs/ agree with their commands."""

import importlib.util
import io
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("docs_check", ROOT / "tools" / "docs_check.py")
docs_check = importlib.util.module_from_spec(_spec)
sys.modules["docs_check"] = docs_check  # dataclasses look their module up there
_spec.loader.exec_module(docs_check)


def test_every_cheap_figure_in_the_docs_agrees_with_its_command():
    out = io.StringIO()
    rc = docs_check.run(docs_check.default_files(), stream=out)
    assert rc == 0, out.getvalue()
    checked = int(out.getvalue().split("docs-check: ")[1].split()[0])
    assert checked >= 25  # costmodel.md and sdr.md carry at least this many annotations


def _doc(tmp_path, text):
    p = tmp_path / "doc.md"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, message", [
    # a figure that disagrees with the model (the old "1.98x" of docs/costmodel.md)
    ("speed-up 1.98x\n<!-- docs-check: python: hwmodel.throughput('opt-66b', 'W4A4', 'H200', batch=8, seq=2048)"
     "['prefill']['tokens_per_s'] / hwmodel.throughput('opt-66b', 'W16A16', 'H200', batch=8, seq=2048)"
     "['prefill']['tokens_per_s'] => 1.98 -->\n", "expected 1.98, got 1.97"),
    # the annotation names a figure the text does not show
    ("nothing here\n<!-- docs-check: python: 1 + 1 => 2 -->\n", "is not in the text next to its annotation"),
    # a JSON path on a command's output
    ("total 999.9 GiB\n<!-- docs-check: refsim cost opt-125m --config W4A4 --json | py: "
     "j['results'][0]['memory']['total_gib'] => 999.9 -->\n", "expected 999.9, got 0.1"),
    # text output that no longer says it
    ("says: hello\n<!-- docs-check: refsim cost --list => hello -->\n", "output does not contain 'hello'"),
    # a command that fails
    ("x 1\n<!-- docs-check: refsim cost nosuch-model --json | py: j => 1 -->\n", "exit 2"),
    ("x 1\n<!-- docs-check: ls -l => 1 -->\n", "must start with 'refsim ' or 'python: '"),
    ("x 1\n<!-- docs-check: python: 1 -->\n", "without ' => EXPECTED'"),
])
def test_a_difference_fails_with_the_place_and_the_values(tmp_path, text, message):
    out = io.StringIO()
    assert docs_check.run([_doc(tmp_path, text)], stream=out) == 1
    assert message in out.getvalue() and "doc.md:" in out.getvalue()


def test_agreeing_entries_pass_and_slow_ones_are_skipped_unless_asked(tmp_path):
    doc = _doc(tmp_path, "two is 2.00 and\n<!-- docs-check: python: 1 + 1 => 2.00 -->\n"
                         "three 3\n<!-- docs-check slow: python: 1 / 0 => 3 -->\n")
    out = io.StringIO()
    assert docs_check.run([doc], stream=out) == 0
    assert "1 figures checked, 0 differ, 1 slow ones skipped" in out.getvalue()
    assert docs_check.run([doc], slow=True, stream=io.StringIO()) == 1  # the slow one runs, and fails
