"""The test suite's own configuration: hypothesis is derandomized and bounded under CI."""

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]


def test_ci_profile_is_derandomized_and_bounded():
    ci = settings.get_profile("ci")
    assert ci.derandomize is True and ci.deadline is None and ci.print_blob is True
    assert ci.max_examples == 60


def test_ci_true_selects_the_ci_profile():
    code = ("import sys; sys.path.insert(0, 'tests'); import conftest; from hypothesis import settings; "
            "print(settings.default.derandomize)")
    for value, want in (("true", "True"), ("false", "False"), ("", "False")):
        env = {k: v for k, v in os.environ.items() if k not in ("HYPOTHESIS_PROFILE", "CI")}
        env["CI"] = value
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                             check=True).stdout.strip()
        assert out == want, value
