"""Conformance of the ``ml_dtypes`` preset with ml_dtypes' float -> int2 / int4 / uint2 / uint4 cast.

ml_dtypes 0.7 converts a float to its sub-byte integers by truncation toward zero, and a value whose
truncation lies outside the type's range, NaN and +-Inf all become 0 (not the nearest end): refsim's
``rounding="trunc"``, ``saturation="zero"``, ``nonfinite="zero"``, scale 1, from float32 and float16.
Exhaustive over every float16 bit pattern, and over float32 values around every integer of the range.
"""

from __future__ import annotations

import numpy as np
import pytest

ml_dtypes = pytest.importorskip("ml_dtypes")

import refsim  # noqa: E402

ML = refsim.preset("ml_dtypes")
TYPES = {"int2": (2, True), "int4": (4, True), "uint2": (2, False), "uint4": (4, False)}


def cast(x, name):
    with np.errstate(invalid="ignore", over="ignore"):
        return x.astype(getattr(ml_dtypes, name)).astype(np.int64)


@pytest.mark.parametrize("name", sorted(TYPES))
def test_every_float16(name):
    bits, signed = TYPES[name]
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    q = refsim.quantize(x, 1.0, bits=bits, spec=ML.replace(compute_dtype="float16").replace(signed=signed))
    assert np.array_equal(cast(x, name), q.astype(np.int64))


@pytest.mark.parametrize("name", sorted(TYPES))
def test_float32_around_every_integer(name):
    bits, signed = TYPES[name]
    k = np.arange(-40, 41, dtype=np.float32)
    x = np.concatenate([k, k + 0.5, np.nextafter(k, np.float32(np.inf)), np.nextafter(k, np.float32(-np.inf)),
                        np.array([3e9, -3e9, 2.0**31, np.nan, np.inf, -np.inf, -0.0, 1e-45], np.float32)])
    q = refsim.quantize(x, 1.0, bits=bits, spec=ML.replace(signed=signed))
    assert np.array_equal(cast(x, name), q.astype(np.int64))
