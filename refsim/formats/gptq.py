"""GPTQ checkpoints: AutoGPTQ v1 and GPTQModel v2 ``QuantLinear`` tensors, to and from refsim codes.

For a linear layer with K inputs and N outputs, bits b in {3, 4} (AutoGPTQ ``QuantLinear.pack``):

    qweight  int32 (K * b / 32, N)   codes packed along K: 4 bits, eight per word, k at bits 4 (k % 8)
                                      (refsim ``int4_word32``); 3 bits, 32 codes in three words with
                                      codes 10 and 21 straddling words (``int3_gptq``)
    qzeros   int32 (G, N * b / 32)   zero points packed along N the same way; v1 stores zero - 1
                                      (AutoGPTQ), v2 the zero itself (GPTQModel ``format="gptq_v2"``)
    scales   float16 (G, N)
    g_idx    int32 (K,)               group of each input column (act-order: any order)

Dequantization: w[n, k] = scales[g, n] * (q[k, n] - zero[g, n]), g = g_idx[k]. A v1 file cannot hold a
zero point of 0 (zero - 1 = -1 does not fit b unsigned bits): ``write`` refuses it, v2 holds it.
``refsim.rptq.gptq.GPTQResult`` is (codes (N, K), scale (N, G), zero (N, G), g_idx (K,)).
"""

from __future__ import annotations

import numpy as np

from refsim.formats._words import bytes_to_words, words_to_bytes
from refsim.layouts import pack, unpack

LAYOUTS = {4: "int4_word32", 3: "int3_gptq"}
VERSIONS = (1, 2)


def _check(bits, version):
    if bits not in LAYOUTS:
        raise ValueError(f"bits={bits!r} is not allowed; allowed: 3, 4")
    if version not in VERSIONS:
        raise ValueError(f"version={version!r} is not allowed; allowed: 1 (AutoGPTQ), 2 (GPTQModel)")


def write(codes, scale, zero, g_idx, *, bits, version=1, scale_dtype=np.float16) -> dict:
    """The tensors of one QuantLinear from refsim codes (N, K), scale and zero (N, G), g_idx (K,)."""
    _check(bits, version)
    codes, zero = np.asarray(codes, np.int64), np.asarray(zero, np.int64)
    stored = zero - (1 if version == 1 else 0)
    if stored.min() < 0 or stored.max() > (1 << bits) - 1:
        allowed = f"1..{1 << bits}" if version == 1 else f"0..{(1 << bits) - 1}"
        raise ValueError(f"zero points {int(zero.min())}..{int(zero.max())} do not fit GPTQ v{version} qzeros; "
                         f"allowed: {allowed} (v1 stores zero - 1 in {bits} unsigned bits)")
    qweight = bytes_to_words(pack(codes.T, LAYOUTS[bits], axis=0, signed=False), axis=0)
    qzeros = bytes_to_words(pack(stored.T, LAYOUTS[bits], axis=1, signed=False), axis=1)
    return {"qweight": qweight, "qzeros": qzeros, "scales": np.asarray(scale).T.astype(scale_dtype),
            "g_idx": np.asarray(g_idx, dtype=np.int32)}


def read(tensors: dict, *, bits, version=1, in_features=None, out_features=None):
    """(codes (N, K) int64, scale (N, G) float32, zero (N, G) int64, g_idx (K,) int64) of a QuantLinear."""
    _check(bits, version)
    qweight, qzeros, scales = tensors["qweight"], tensors["qzeros"], np.asarray(tensors["scales"])
    k = in_features if in_features is not None else qweight.shape[0] * 32 // bits
    n = out_features if out_features is not None else scales.shape[1]
    codes = unpack(words_to_bytes(qweight, axis=0), LAYOUTS[bits], k, axis=0, signed=False).T
    stored = unpack(words_to_bytes(qzeros, axis=1), LAYOUTS[bits], n, axis=1, signed=False).T
    zero = stored.astype(np.int64) + (1 if version == 1 else 0)
    g_idx = np.asarray(tensors["g_idx"], dtype=np.int64) if "g_idx" in tensors else None
    return codes.astype(np.int64), scales.T.astype(np.float32), zero, g_idx
