"""Long campaigns over whole small domains (run with `make test-slow`)."""

import numpy as np
import pytest
from strategies import acc_spec

import refsim
from refsim.scalar import quantize_scalar

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("rounding", ["ties_even", "ties_away", "half_up", "odd"])
@pytest.mark.parametrize("s", [1.0, 0.0999755859375, 3.14])
def test_every_float16_value_through_the_fp16_quantizer(rounding, s):
    """Every finite float16 x, the rptq preset (fp16 compute) at int8 codes, against the twin."""
    spec = refsim.preset("rptq").replace(rounding=rounding)
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    x = x[np.isfinite(x)].astype(np.float32)
    fast = refsim.quantize(x, s, 3, bits=8, spec=spec)
    slow = np.array([quantize_scalar(float(v), s, 3, bits=8, spec=spec) for v in x])
    assert np.array_equal(fast, slow)


def test_every_int16_by_int8_product():
    a = np.arange(-(1 << 15), 1 << 15)
    b = np.arange(-128, 128)
    got = refsim.int_gemm(a[:, None], b[None, :], spec=acc_spec(64))
    want = np.array([[x * y for y in range(-128, 128)] for x in range(-(1 << 15), 1 << 15)], dtype=np.int64)
    assert np.array_equal(got, want)
