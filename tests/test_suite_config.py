"""The test suite's own configuration: hypothesis under CI, and the reach of the shared strategies."""

import dataclasses
import enum
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import Phase, find, settings
from strategies import SPEC_FIELD_STRATEGIES, float32_scales, specs

import refsim

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


def _allowed_values(name):
    value = getattr(refsim.preset("onnx"), name)
    if isinstance(value, enum.Enum):
        return list(type(value))
    if isinstance(value, bool):
        return [False, True]
    return [2, 64]  # acc_bits: both ends


# generate only: a found example needs no shrinking, and shrinking a spec costs seconds
FIND = settings(database=None, phases=[Phase.generate], max_examples=2000)


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(refsim.NumericsSpec)])
def test_the_spec_strategy_reaches_every_value_of_every_field(name):
    assert set(SPEC_FIELD_STRATEGIES) == {f.name for f in dataclasses.fields(refsim.NumericsSpec)}
    for value in _allowed_values(name):
        spec = find(specs, lambda s, v=value: getattr(s, name) == v, settings=FIND)
        assert getattr(spec, name) == value


def test_the_scale_strategy_spans_float32():
    tiny = find(float32_scales, lambda s: s < 2.0**-126, settings=FIND)
    huge = find(float32_scales, lambda s: s > 2.0**127, settings=FIND)
    assert 0 < tiny < 2.0**-126 and 2.0**127 < huge <= float(np.finfo(np.float32).max)
