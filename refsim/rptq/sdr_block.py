"""The QRazor SDR path of the OPT block (DESIGN.md "SDR"; QRazor, arXiv 2501.13331).

Same dataflow and float steps as ``refsim.rptq.block`` (on the block's layout, so groups of g
consecutive channels are taken after reordering), with QRazor's numerics at every product:

    base precision (absmax symmetric, narrow range, ``qrazor`` preset, static calibration):
        weights int8 per output row (absmax of the row), activations int16 per tensor
        (absmax of the calibration range), K and V int8 per tensor, probabilities int16 with
        s = 1/32767 (their range is [0, 1])
    SDR: ``refsim.sdr_encode(keep=3)`` in groups of ``group_size`` along the reduced axis of
        each product (hidden / head dim; tokens for probs @ V)
    product: ``refsim.sdr_gemm`` (decompression-free, exact under acc_bits / overflow), then
        ``refsim.float_epilogue(isum, s_a, s_w, bias)``.

LayerNorm outputs are activations like any other (int16 per tensor). Stage names follow
``block.STAGES``; codes are SDR codes with flags in "*_flags"; "*_acc" are the (M, N) sums.
"""

from __future__ import annotations

import numpy as np

import refsim
from refsim.rptq.block import QuantizedOPTBlock, layer_norm, softmax

ACT_BITS, W_BITS, KV_BITS = 16, 8, 8
PROB_SCALE = np.float32(1.0 / 32767.0)


def _absmax_scale(block, point, bits):
    lo, hi = block[f"stat.{point}.min"], block[f"stat.{point}.max"]
    amax = np.float32(max(float(np.abs(lo).max()), float(np.abs(hi).max())))
    return refsim.absmax_params(np.array([amax, -amax], dtype=np.float32), bits=bits)


def _encode(x, scale, bits, axis, g, stages, name):
    """int codes (narrow symmetric), then SDR along ``axis``; stages get codes and flags."""
    spec = refsim.preset("qrazor")
    base = refsim.quantize(x, scale, 0, bits=bits, axis=None if np.ndim(scale) == 0 else 0, spec=spec)
    codes, flags = refsim.sdr_encode(base, group_size=g, base_bits=bits, keep=3, axis=axis)
    if name:
        stages[f"{name}_codes"], stages[f"{name}_flags"] = codes, flags
    return codes, flags


def opt_block_sdr(block: QuantizedOPTBlock, x, *, group_size=16, acc_bits=32, overflow="wrap") -> dict:
    """QRazor W4A4 (SDR keep=3 on int8 weights, int16 activations, int8 KV) on x (T, hidden)."""
    x = np.asarray(x)
    if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != block.hidden:
        raise ValueError(f"x must be float32 of shape (T, {block.hidden}), got {x.dtype} {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x has NaN or Inf values")
    g = group_size
    acc = dict(group_size=g, acc_bits=acc_bits, overflow=overflow)
    spec = refsim.preset("qrazor")
    eps = float(block.meta["eps"])
    st = {"x": x}

    def linear(a, point, lin, name):
        sa = _absmax_scale(block, point, ACT_BITS)
        ac, af = _encode(a, sa, ACT_BITS, 1, g, st, point)
        w = block[f"{lin}.weight"]
        sw = refsim.absmax_params(w, bits=W_BITS, axis=0)
        wq = refsim.quantize(w, sw, 0, bits=W_BITS, axis=0, spec=spec)
        wc, wf = refsim.sdr_encode(wq, group_size=g, base_bits=W_BITS, keep=3, axis=1)
        isum = refsim.sdr_gemm(ac, af, wc.T, wf.T, **acc)
        st[f"{name}_acc"] = isum
        return refsim.float_epilogue(isum, sa, sw, bias=block[f"{lin}.bias"])

    st["ln1"] = layer_norm(x, block["ln1.weight"], block["ln1.bias"], eps=eps, perm=block["R1.perm"])
    scaling = np.float32((block.hidden // block.heads) ** -0.5)
    st["q"] = (linear(st["ln1"], "ln1", "q", "q") * scaling).astype(np.float32)
    st["k"] = linear(st["ln1"], "ln1", "k", "k")
    st["v"] = linear(st["ln1"], "ln1", "v", "v")
    t, hidden = x.shape
    heads = block.heads
    d = hidden // heads
    sq = _absmax_scale(block, "q", ACT_BITS)
    sk = _absmax_scale(block, "k", KV_BITS)
    sv = _absmax_scale(block, "v", KV_BITS)
    scores = np.empty((heads, t, t), dtype=np.float32)
    probs_codes, attn = [], np.empty((t, hidden), dtype=np.float32)
    s_acc, a_acc, q_codes, q_flags = [], [], [], []
    k_base = refsim.quantize(st["k"], sk, 0, bits=KV_BITS, spec=spec)
    v_base = refsim.quantize(st["v"], sv, 0, bits=KV_BITS, spec=spec)
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        qhc, qhf = refsim.sdr_encode(refsim.quantize(st["q"][:, sl], sq, 0, bits=ACT_BITS, spec=spec),
                                     group_size=g, base_bits=ACT_BITS, keep=3, axis=1)
        khc, khf = refsim.sdr_encode(k_base[:, sl], group_size=g, base_bits=KV_BITS, keep=3, axis=1)
        isum = refsim.sdr_gemm(qhc, qhf, khc.T, khf.T, **acc)
        s_acc.append(isum)
        q_codes.append(qhc)
        q_flags.append(qhf)
        scores[h] = refsim.float_epilogue(isum, sq, sk)
    scores[:, np.triu(np.ones((t, t), dtype=bool), k=1)] = -np.inf
    probs = softmax(scores)
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        pb = refsim.quantize(probs[h], PROB_SCALE, 0, bits=ACT_BITS, spec=spec)
        pc, pf = refsim.sdr_encode(pb, group_size=g, base_bits=ACT_BITS, keep=3, axis=1)
        vc, vf = refsim.sdr_encode(v_base[:, sl], group_size=g, base_bits=KV_BITS, keep=3, axis=0)
        isum = refsim.sdr_gemm(pc, pf, vc, vf, **acc)
        a_acc.append(isum)
        probs_codes.append(pc)
        attn[:, sl] = refsim.float_epilogue(isum, PROB_SCALE, sv)
    st["q_codes"], st["q_flags"] = np.stack(q_codes), np.stack(q_flags)  # per head: (heads, T, d)
    st["k_base"], st["v_base"] = k_base, v_base
    st["scores_acc"], st["scores"], st["probs"] = np.stack(s_acc), scores, probs
    st["probs_codes"], st["attn_acc"], st["attn"] = np.stack(probs_codes), np.stack(a_acc), attn
    st["out_proj"] = linear(attn, "attn", "out", "out")
    st["h1"] = (x + st["out_proj"]).astype(np.float32)
    st["ln2"] = layer_norm(st["h1"], block["ln2.weight"], block["ln2.bias"], eps=eps, perm=block["R4.perm"])
    st["fc1"] = linear(st["ln2"], "ln2", "fc1", "fc1")
    st["relu"] = np.maximum(st["fc1"], np.float32(0))
    st["fc2"] = linear(st["relu"], "fc2_in", "fc2", "fc2")
    st["out"] = (st["h1"] + st["fc2"]).astype(np.float32)
    return st
