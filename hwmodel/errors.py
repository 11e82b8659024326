"""Quantization error of a design point, measured with the bit-exact reference ``refsim``.

:func:`measure_error` is the one place where the co-design sweep touches ``refsim``; every figure is
an SQNR in dB (``refsim.sqnr_db``: 10 log10(sum ref^2 / sum (ref - test)^2)) of the dequantized
tensor against the float calibration tensor:

* ``sqnr_x_db``: activations x (a linear layer's input);
* ``sqnr_w_db``: its weight w;
* ``sqnr_k_db``: keys (the KV cache);
* ``sqnr_y_db``: the layer output y = x w^T computed from the dequantized x and w, against the float
  product;
* ``sqnr_db``: the headline error of the sweep, the layer-output and key errors together: their
  relative noise powers add (independent noise sources), sqnr = -10 log10(10^(-y/10) + 10^(-k/10)).
  Without the key term a sweep would always pick the narrowest KV cache, whose error y cannot see.

Methods:

``rptq``  activations: k-means (scikit-learn ``KMeans(n_clusters, n_init=10, random_state=seed)``)
          on each channel's [max, min] over the calibration tokens; per cluster RPTQ min-max
          (``refsim.qtensor.rptq_fake_quant``: ``rptq_params(min of mins, max of maxes, bits=a)``, codes
          with ``preset("rptq")``). Weights: round-to-nearest with
          ``refsim.gptq_params`` per output row (asymmetric) and ``preset("gptq")`` (RTN, not the GPTQ
          solver: an upper bound on GPTQ's weight error). Keys: RPTQ per-cluster parameters with
          ``head_clusters`` clusters.
``qrazor`` base precision by ``refsim.absmax_params`` (activations int16 per tensor, weights int8 per
          output row, keys int8 per tensor) and ``preset("qrazor")``, then ``refsim.sdr_encode`` with
          ``keep = bits - 1`` magnitude bits per group of ``group`` along the channel axis (the GEMM's
          reduction axis) and ``refsim.sdr_decode``; KV at 8 bits stays int8.

A width of 16 or more means "not quantized" (SQNR +inf).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .calib import Calibration

METHODS = ("rptq", "qrazor")


@lru_cache(maxsize=64)
def _kmeans_labels(feat_bytes: bytes, shape: tuple, n_clusters: int, seed: int) -> np.ndarray:
    # cached: the labels depend on the calibration features and the cluster count, not on the bits
    from sklearn.cluster import KMeans

    feats = np.frombuffer(feat_bytes, dtype=np.float64).reshape(shape)
    n_clusters = min(n_clusters, len(np.unique(feats, axis=0)))
    km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit(feats)
    return km.labels_.astype(np.int64)


def cluster_channels(x: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """Cluster id per channel (axis 1) from k-means on [max, min], numbered by refsim's one cluster order
    (``refsim.rptq.cluster.order_from_labels``: ascending cluster maximum, then minimum, then first
    channel), so the labelling does not depend on k-means' internal numbering. (The per-cluster
    parameters, hence every figure here, do not depend on the numbering at all.)"""
    if n_clusters <= 1:
        return np.zeros(x.shape[1], dtype=np.int64)
    from refsim.rptq.cluster import order_from_labels

    feats = np.stack([x.max(axis=0), x.min(axis=0)], axis=1).astype(np.float64)
    labels = _kmeans_labels(feats.tobytes(), feats.shape, int(n_clusters), int(seed))
    return order_from_labels(labels, feats[:, 0], feats[:, 1]).ids_old


def _rptq_act(refsim, x: np.ndarray, bits: int, n_clusters: int, seed: int) -> np.ndarray:
    """RPTQ per-cluster min-max of x (tokens, channels): refsim's one recipe (``refsim.qtensor.rptq_fake_quant``)."""
    from refsim.qtensor import rptq_fake_quant

    labels = cluster_channels(x, n_clusters, seed)
    return rptq_fake_quant(x, x.min(axis=0), x.max(axis=0), labels, bits=bits)


def _gptq_rows(refsim, w: np.ndarray, bits: int) -> np.ndarray:
    from refsim.qtensor import gptq_form_quantize

    scale, zp = refsim.gptq_params(w.min(axis=1), w.max(axis=1), bits=bits, spec=refsim.preset("gptq"))
    return gptq_form_quantize(w, scale, zp, bits=bits, axis=0).dequantize()


def _sdr(refsim, x: np.ndarray, *, bits: int, base_bits: int, group: int, axis) -> np.ndarray:
    """absmax base integers (per tensor or per ``axis``), razored to ``bits`` (1 sign + bits-1 magnitude)
    along the last axis: ``refsim.qtensor.absmax_quantize`` / ``sdr_quantize``, dequantized."""
    from refsim.qtensor import absmax_quantize, sdr_quantize

    scale = refsim.absmax_params(x, bits=base_bits, axis=axis, spec=refsim.preset("qrazor"))
    if bits < base_bits:
        qt = sdr_quantize(x, scale, base_bits=base_bits, keep=bits - 1, group_size=group, axis=-1, scale_axis=axis)
    else:
        qt = absmax_quantize(x, scale, bits=base_bits, axis=axis)
    return qt.dequantize()


_MEMO: dict = {}
_MEMO_MAX = 512


def _memo(calib: Calibration, key: tuple, fn):
    """Per-process memo of dequantized tensors: a tensor's error depends only on its own knobs (the
    activations' on (method, a_bits, clusters/group), not on w_bits), so a sweep computes each once.
    The entry holds the calibration object, so its id cannot be reused while the entry lives."""
    k = (id(calib), *key)
    hit = _MEMO.get(k)
    if hit is not None and hit[0] is calib:
        return hit[1]
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    val = fn()
    _MEMO[k] = (calib, val)
    return val


def measure_error(point: dict, calib: Calibration) -> dict[str, float]:
    """SQNR figures (dB) of one design point on ``calib``; see the module docstring.

    point keys: ``method`` (``rptq`` or ``qrazor``), ``w_bits``, ``a_bits``, ``kv_bits`` and
    ``clusters`` (rptq), ``head_clusters`` (rptq keys, default 4), ``group`` (qrazor SDR group),
    ``seed`` (k-means, default 0).
    """
    import refsim

    method = point["method"]
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    w_bits, a_bits, kv_bits = (int(point[k]) for k in ("w_bits", "a_bits", "kv_bits"))
    for name, v in (("w_bits", w_bits), ("a_bits", a_bits), ("kv_bits", kv_bits)):
        if v <= 0:
            raise ValueError(f"{name} must be positive, got {v}")
    seed = int(point.get("seed", 0))
    x, w, k = calib.x, calib.w, calib.k
    if method == "rptq":
        c, hc = int(point.get("clusters", 1)), int(point.get("head_clusters", 4))
        xh = x if a_bits >= 16 else _memo(calib, ("x", method, a_bits, c, seed),
                                          lambda: _rptq_act(refsim, x, a_bits, c, seed))
        wh = w if w_bits >= 16 else _memo(calib, ("w", method, w_bits), lambda: _gptq_rows(refsim, w, w_bits))
        kh = k if kv_bits >= 16 else _memo(calib, ("k", method, kv_bits, hc, seed),
                                           lambda: _rptq_act(refsim, k, kv_bits, hc, seed))
    else:
        g = int(point["group"])
        for name, v in (("w_bits", w_bits), ("a_bits", a_bits), ("kv_bits", kv_bits)):
            if not (2 <= v <= 8 or v >= 16):
                raise ValueError(f"qrazor {name} must be 2..8 (razored: 1 sign + 1..7 magnitude bits) or "
                                 f">= 16 (not quantized), got {v}")
        xh = x if a_bits >= 16 else _memo(calib, ("x", method, a_bits, g), lambda: _sdr(
            refsim, x, bits=a_bits, base_bits=16, group=g, axis=None))
        wh = w if w_bits >= 16 else _memo(calib, ("w", method, w_bits, g), lambda: _sdr(
            refsim, w, bits=min(w_bits, 8), base_bits=8, group=g, axis=0))
        kh = k if kv_bits >= 16 else _memo(calib, ("k", method, kv_bits, g), lambda: _sdr(
            refsim, k, bits=min(kv_bits, 8), base_bits=8, group=g, axis=None))
    y = _memo(calib, ("y",), lambda: x.astype(np.float64) @ w.astype(np.float64).T)
    yh = np.asarray(xh, dtype=np.float64) @ np.asarray(wh, dtype=np.float64).T
    out = {"sqnr_x_db": float(refsim.sqnr_db(x, xh)), "sqnr_w_db": float(refsim.sqnr_db(w, wh)),
           "sqnr_k_db": float(refsim.sqnr_db(k, kh)), "sqnr_y_db": float(refsim.sqnr_db(y, yh))}
    out["sqnr_db"] = combine_sqnr_db(out["sqnr_y_db"], out["sqnr_k_db"])
    return out


def combine_sqnr_db(*sqnrs_db: float) -> float:
    """SQNR of independent noise sources together: relative noise powers add (+inf for no noise)."""
    nsr = sum(10.0 ** (-s / 10.0) for s in sqnrs_db if s != float("inf"))
    return float("inf") if nsr == 0 else float(-10.0 * np.log10(nsr))
