"""Calibration tensors for the co-design sweep's error figures.

No model hub is reachable, so by default the sweep measures quantization error on *synthetic*
calibration tensors with the structure that makes LLM activations hard to quantize (RPTQ Sec. 3,
LLM.int8 Sec. 3): per-channel ranges spread over two orders of magnitude (log-normal channel scales),
per-channel offsets (channels not centred on 0: RPTQ's point about min/max differing per channel),
heavy tails (Student-t, 5 degrees of freedom) and a few outlier channels (2 %, 20x). Weights are
Gaussian with a spread of row norms; keys carry their own outlier channels.

Real activations can be used instead: ``load_calibration(path)`` reads an ``.npz`` with arrays ``x``
(tokens x channels, a linear layer's input), ``w`` (out x channels, its weight) and ``k`` (tokens x
kv channels, keys). Every generator is numpy's PCG64 seeded with ``seed``: the same seed gives the
same tensors on any machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Calibration:
    """x: activations (tokens, channels); w: weight (out, channels); k: keys (tokens, kv channels).
    All float32 values exactly representable in fp16 (RPTQ's dataflow is fp16)."""

    x: np.ndarray
    w: np.ndarray
    k: np.ndarray
    source: str


def _fp16_exact(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float16).astype(np.float32)


def _channels(rng, tokens: int, channels: int, *, spread: float, outlier_frac: float, outlier_gain: float):
    scale = rng.lognormal(mean=0.0, sigma=spread, size=channels)
    n_out = max(1, int(round(outlier_frac * channels)))
    scale[rng.choice(channels, n_out, replace=False)] *= outlier_gain
    offset = rng.normal(0.0, 0.5, size=channels) * scale
    return offset + scale * rng.standard_t(5, size=(tokens, channels))


@lru_cache(maxsize=8)
def synthetic_calibration(seed: int = 0, tokens: int = 256, channels: int = 256, out: int = 128,
                          kv_channels: int = 128) -> Calibration:
    """Seeded synthetic calibration tensors (see the module docstring)."""
    for name, v in (("tokens", tokens), ("channels", channels), ("out", out), ("kv_channels", kv_channels)):
        if v <= 0:
            raise ValueError(f"{name} must be positive, got {v}")
    rng = np.random.Generator(np.random.PCG64(seed))
    x = _channels(rng, tokens, channels, spread=1.0, outlier_frac=0.02, outlier_gain=20.0)
    row = rng.lognormal(0.0, 0.3, size=(out, 1))
    w = row * rng.standard_normal((out, channels)) / np.sqrt(channels)
    k = _channels(rng, tokens, kv_channels, spread=0.7, outlier_frac=0.03, outlier_gain=8.0)
    return Calibration(_fp16_exact(x), _fp16_exact(w), _fp16_exact(k), source=f"synthetic(seed={seed})")


def load_calibration(path: str | os.PathLike) -> Calibration:
    """Calibration tensors from an ``.npz`` with arrays ``x``, ``w`` and ``k`` (see the module docstring)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"calib: no file {path!r}")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"calib file {path}: not a NumPy .npz archive of arrays x, w, k ({exc})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"calib file {path}: a single .npy array; expected an .npz archive of arrays x, w, k")
    with z:
        missing = [n for n in ("x", "w", "k") if n not in z]
        if missing:
            raise ValueError(f"calib file {path}: lacks arrays {missing} (needs x, w, k; has {sorted(z.files)})")
        arrays = {}
        for n in ("x", "w", "k"):
            try:
                a = z[n]
            except (OSError, ValueError, EOFError) as exc:
                raise ValueError(f"calib file {path}: array {n!r} cannot be read ({exc})") from None
            if a.dtype.kind not in "iuf":
                raise ValueError(f"calib file {path}: array {n!r} must hold integers or floats, got dtype {a.dtype}")
            arrays[n] = np.asarray(a, dtype=np.float32)
    x, w, k = arrays["x"], arrays["w"], arrays["k"]
    if x.ndim != 2 or w.ndim != 2 or k.ndim != 2 or w.shape[1] != x.shape[1] or 0 in x.shape + w.shape + k.shape:
        raise ValueError(f"calib file {path}: need non-empty x (tokens, C), w (out, C), k (tokens, Ck); "
                         f"got {x.shape}, {w.shape}, {k.shape}")
    out = {}
    for name, a in (("x", x), ("w", w), ("k", k)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"calib file {path}: array {name!r} has NaN or infinite values")
        with np.errstate(over="ignore"):
            out[name] = _fp16_exact(a)
        if not np.all(np.isfinite(out[name])):
            raise ValueError(f"calib file {path}: array {name!r} has values beyond the fp16 range (|v| <= 65504)")
    return Calibration(out["x"], out["w"], out["k"], source=os.path.basename(path))
