"""GPTQ results (refsim.rptq.gptq) shared by the checkpoint-format tests."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from refsim.rptq.gptq import gptq_quantize  # noqa: E402


def gptq_result(n=16, k=64, bits=4, groupsize=32, act_order=False, sym=False, seed=0):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * rng.uniform(0.01, 1, size=(n, 1))).astype(np.float32)
    x = rng.standard_normal((4 * k, k)).astype(np.float32) * rng.uniform(0.1, 3, size=k).astype(np.float32)
    h = (2 / x.shape[0]) * (x.T.astype(np.float64) @ x).astype(np.float32)
    return gptq_quantize(w, h, bits=bits, sym=sym, groupsize=groupsize, act_order=act_order,
                         static_groups=act_order and groupsize is not None)
