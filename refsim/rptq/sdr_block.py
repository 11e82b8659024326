"""The QRazor SDR path of the OPT block (DESIGN.md "SDR"; QRazor, arXiv 2501.13331).

Same dataflow and float steps as ``refsim.rptq.block`` (on the block's layout, so groups of g
consecutive channels are taken after reordering); every product is ``refsim.qrazor_matmul``:
static absmax base precision (``qrazor`` preset; weights int8 per output row, activations int16
per tensor, K/V int8 per tensor), SDR per group of ``group_size`` along the product's reduced
axis, the decompression-free ``refsim.sdr_gemm`` under acc_bits / overflow, and the float32
epilogue; the bias is then added in float32 (the order of ``refsim.float_epilogue``).

Static calibration: an activation's absmax is that of its recorded calibration range
(``stat.{point}.min/max``); probabilities have the range [0, 1] (s = 1/32767); weights use their
own rows. Configurations: ``refsim.qrazor.CONFIGS`` (W4A4: K/V stay int8, losslessly razored;
W4A4KV4: K/V razored to 4-bit codes; W4A8: activations keep 7 bits).

Stages: the names of ``block.STAGES``; "*_acc" are (M, N) int64 sums (attention ones per head,
stacked), activation codes are SDR codes with their "*_flags" ("q_codes", "k_codes", "v_codes",
"probs_codes" per head: (heads, ...)).
"""

from __future__ import annotations

import numpy as np

from refsim.qrazor import qrazor_config, qrazor_matmul
from refsim.rptq.block import QuantizedOPTBlock, layer_norm, softmax
from refsim.spec import preset

PROB_RANGE = np.array([0.0, 1.0], dtype=np.float32)


def _cal(block, point):
    return [np.concatenate([block[f"stat.{point}.min"], block[f"stat.{point}.max"]]).astype(np.float32)]


def opt_block_sdr(block: QuantizedOPTBlock, x, *, qrazor="W4A4", group_size=16, acc_bits=32,
                  overflow="wrap") -> dict:
    """QRazor configuration ``qrazor`` (a name in refsim.qrazor.CONFIGS) of the block on x (T, hidden)."""
    x = np.asarray(x)
    if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != block.hidden:
        raise ValueError(f"x must be float32 of shape (T, {block.hidden}), got {x.dtype} {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x has NaN or Inf values")
    cfg = qrazor_config(qrazor, group_size=group_size,
                        spec=preset("qrazor").replace(acc_bits=acc_bits, acc_overflow=overflow))
    acc = {}
    eps = float(block.meta["eps"])
    st = {"x": x}

    def linear(a, point, lin):
        r = qrazor_matmul(a, block[f"{lin}.weight"].T, config=cfg, x_calibration=_cal(block, point), **acc)
        st[f"{lin}_acc"] = r.acc
        st[f"{point}_codes"], st[f"{point}_flags"] = r.x.codes, r.x.flags
        return (r.output + block[f"{lin}.bias"]).astype(np.float32)

    st["ln1"] = layer_norm(x, block["ln1.weight"], block["ln1.bias"], eps=eps, perm=block["R1.perm"])
    scaling = np.float32((block.hidden // block.heads) ** -0.5)
    st["q"] = (linear(st["ln1"], "ln1", "q") * scaling).astype(np.float32)
    st["k"] = linear(st["ln1"], "ln1", "k")
    st["v"] = linear(st["ln1"], "ln1", "v")
    t, hidden = x.shape
    heads = block.heads
    d = hidden // heads
    scores = np.empty((heads, t, t), dtype=np.float32)
    attn = np.empty((t, hidden), dtype=np.float32)
    keep = {k: [] for k in ("scores_acc", "attn_acc", "q_codes", "q_flags", "k_codes", "k_flags", "probs_codes",
                            "probs_flags", "v_codes", "v_flags")}
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        r = qrazor_matmul(st["q"][:, sl], st["k"][:, sl].T, config=cfg, y_role="kv", x_calibration=_cal(block, "q"),
                          y_calibration=_cal(block, "k"), **acc)
        scores[h] = r.output
        keep["scores_acc"].append(r.acc)
        keep["q_codes"].append(r.x.codes)
        keep["q_flags"].append(r.x.flags)
        keep["k_codes"].append(r.y.codes)
        keep["k_flags"].append(r.y.flags)
    scores[:, np.triu(np.ones((t, t), dtype=bool), k=1)] = -np.inf
    probs = softmax(scores)
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        r = qrazor_matmul(probs[h], st["v"][:, sl], config=cfg, y_role="kv", x_calibration=[PROB_RANGE],
                          y_calibration=_cal(block, "v"), **acc)
        attn[:, sl] = r.output
        keep["attn_acc"].append(r.acc)
        keep["probs_codes"].append(r.x.codes)
        keep["probs_flags"].append(r.x.flags)
        keep["v_codes"].append(r.y.codes)
        keep["v_flags"].append(r.y.flags)
    st.update({k: np.stack(v) for k, v in keep.items()})
    st["scores"], st["probs"], st["attn"] = scores, probs, attn
    st["out_proj"] = linear(attn, "attn", "out")
    st["h1"] = (x + st["out_proj"]).astype(np.float32)
    st["ln2"] = layer_norm(st["h1"], block["ln2.weight"], block["ln2.bias"], eps=eps, perm=block["R4.perm"])
    st["fc1"] = linear(st["ln2"], "ln2", "fc1")
    st["relu"] = np.maximum(st["fc1"], np.float32(0))
    st["fc2"] = linear(st["relu"], "fc2_in", "fc2")
    st["out"] = (st["h1"] + st["fc2"]).astype(np.float32)
    return st
