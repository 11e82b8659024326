"""The integer OPT decoder block in RPTQ's reordered dataflow (DESIGN.md "RPTQ: reordered dataflow").

``opt_block(block, x, config=...)`` computes one pre-LayerNorm OPT decoder layer
(OPT-125m ... 175B; not the post-LN 350m) on one sequence x (T, hidden) float32 and returns
every stage by name (``STAGES``, documented in docs/rptq.md) as plain numpy arrays.

Dataflow (physical layout; R1..R5 are the recorded permutations of RPTQ's Figure 3):

    ln1    = LayerNorm(x; gamma1[R1], beta1[R1])                  written in R1 order
    q      = (ln1 @ Wq[R2, R1]^T + bq[R2]) * head_dim^-0.5         R2 order (within each head)
    k      =  ln1 @ Wk[R2, R1]^T + bk[R2]                          R2 order, shared with q
    v      =  ln1 @ Wv[R3, R1]^T + bv[R3]                          R3 order
    scores = causal(q_h @ k_h^T)  per head;  probs = softmax(scores)
    attn   = probs_h @ v_h  per head                               R3 order
    h1     = x + (attn @ Wo[:, R3]^T + bo)                          residual: never reordered
    ln2    = LayerNorm(h1; gamma2[R4], beta2[R4])                  R4 order
    fc1    = ln2 @ W1[R5, R4]^T + b1[R5];  relu = max(fc1, 0)      R5 order
    out    = h1 + (relu @ W2[:, R5]^T + b2)

Quantized points (``config``; RPTQ's public bit widths): ln1/ln2 at max(8, abits), q, attn
(out_proj input) and relu (fc2 input) at abits, k and v at kvbits, probs unsigned 8-bit with
s = fp16(1/255), z = 0, whenever abits is set. Activation parameters are RPTQ min-max
(``refsim.rptq_params``, fp16) per cluster from the calibration min/max; codes come from
``refsim.quantize(..., clusters=ids, spec=preset("rptq"))``. Weights are GPTQ codes with
parameters per output row x per input cluster.

A product whose two operands are both quantized is an integer GEMM per cluster of the
reduced axis (``cluster_matmul``): exact int sums with zero-point correction, then the
float32 epilogue in ascending cluster order. Any other product runs in float64 on the
(dequantized) float32 operands and is rounded once to float32 (not bit-exact across BLAS
builds: such stages are compared with a tolerance).

Float steps, identical on every IEEE machine: LayerNorm in float64 with correctly rounded sums
(independent of the channel order), rounded once to float32; softmax with exp correctly rounded
to float32 and a correctly rounded sum; ReLU and residual adds in float32. Masked scores are -inf.
"""

from __future__ import annotations

import numpy as np

import refsim
from refsim.checks import check_choice
from refsim.floatops import exp_float32, fsum_rows
from refsim.rptq.cluster import Reorder, cluster_minmax

LINEARS = ("q", "k", "v", "out", "fc1", "fc2")
# the reorder of each linear's input channels and of its output channels (None: not reordered)
LINEAR_IN = {"q": "R1", "k": "R1", "v": "R1", "out": "R3", "fc1": "R4", "fc2": "R5"}
LINEAR_OUT = {"q": "R2", "k": "R2", "v": "R3", "out": None, "fc1": "R5", "fc2": None}
# the activation points whose min/max are calibrated, and the reorder whose clusters they use
POINTS = {"ln1": "R1", "q": "R2", "k": "R2", "v": "R3", "attn": "R3", "ln2": "R4", "fc2_in": "R5"}
REORDERS = ("R1", "R2", "R3", "R4", "R5")

# name -> (wbits, abits, kvbits); None = not quantized (float). RPTQ Table 1/3 configurations:
# "KV" configurations quantize only the K/V cache, all other activations stay float.
CONFIGS = {
    "W16A16": (None, None, None),
    "W4A16": (4, None, None),
    "W4A8": (4, 8, 8),
    "W4A4": (4, 4, 4),
    "W4A4KV": (4, None, 4),
    "W4A3KV": (4, None, 3),
    "W3A3KV": (3, None, 3),
}
# QRazor base precision + SDR (refsim.qrazor): block config name -> refsim.qrazor.CONFIGS name
SDR_CONFIGS = {"QRAZOR": "W4A4", "QRAZOR_W4A4": "W4A4", "QRAZOR_W4A4KV4": "W4A4KV4", "QRAZOR_W4A8": "W4A8"}
SDR_CONFIG = "QRAZOR"

PROB_BITS = 8
PROB_SCALE = np.float16(1.0 / 255.0)  # RPTQ "fix0to1": round(P * 255) / 255, in fp16

# Stage names, in dataflow order. "*_codes" are integer codes (int32), "*_acc" per-cluster
# int sums (C, M, N) int64 (attention ones per head: (heads, C, T, T|d)), the rest float32.
STAGES = (
    "x", "ln1", "ln1_codes", "q", "q_codes", "k", "k_codes", "v", "v_codes",
    "q_acc", "k_acc", "v_acc", "scores_acc", "scores", "probs", "probs_codes", "attn_acc", "attn",
    "attn_codes", "out_acc", "out_proj", "h1", "ln2", "ln2_codes", "fc1_acc", "fc1", "relu", "fc2_in_codes",
    "fc2_acc", "fc2", "out",
)


class QuantizedOPTBlock:
    """One reordered, quantized OPT decoder layer: plain numpy arrays plus JSON-able metadata.

    arrays (all in the block's layout, physical = reordered):
        ln1.weight, ln1.bias, ln2.weight, ln2.bias                  float32
        {lin}.weight (out, in) float32, {lin}.bias (out,)          for lin in LINEARS
        {lin}.codes (out, in) uint8, {lin}.scale (out, C) float32, {lin}.zero (out, C) int32
                                                                    GPTQ codes (when wbits is set)
        R{i}.perm, R{i}.ids, R{i}.sizes                             int64 (cluster.Reorder)
        stat.{point}.min, stat.{point}.max                          per-channel calibration range
    meta: hidden, heads, ffn, eps, wbits, layout ("physical" | "logical"), and build settings.
    """

    def __init__(self, arrays: dict, meta: dict):
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.meta = dict(meta)
        for key in ("hidden", "heads", "ffn", "eps", "wbits", "layout"):
            if key not in self.meta:
                raise ValueError(f"block meta is missing {key!r}")

    def __getitem__(self, key):
        try:
            return self.arrays[key]
        except KeyError:
            raise KeyError(f"the block has no array {key!r}") from None

    @property
    def hidden(self) -> int:
        return int(self.meta["hidden"])

    @property
    def heads(self) -> int:
        return int(self.meta["heads"])

    @property
    def wbits(self):
        return self.meta["wbits"]

    def ids(self, reorder: str) -> np.ndarray:
        return self.arrays[f"{reorder}.ids"]

    def n_clusters(self, reorder: str) -> int:
        return int(self.arrays[f"{reorder}.sizes"].size)

    def logical(self) -> "QuantizedOPTBlock":
        """The same block on the original channel order: cluster ids scattered over the original
        channel positions (``ids_old``), every array un-permuted. Its ``opt_block`` output equals
        the physical one bit for bit (``out``), stage by stage up to the permutation."""
        if self.meta["layout"] != "physical":
            raise ValueError("logical() needs a block in the physical layout")
        inv = {r: Reorder(*(self.arrays[f"{r}.{p}"] for p in ("perm", "ids", "sizes"))).inverse for r in REORDERS}
        a = dict(self.arrays)
        for ln, r in (("ln1", "R1"), ("ln2", "R4")):
            for p in ("weight", "bias"):
                a[f"{ln}.{p}"] = self.arrays[f"{ln}.{p}"][inv[r]]
        for lin in LINEARS:
            rin, rout = LINEAR_IN[lin], LINEAR_OUT[lin]
            for p in ("weight", "codes"):
                if f"{lin}.{p}" in a:
                    w = a[f"{lin}.{p}"][:, inv[rin]]
                    a[f"{lin}.{p}"] = w[inv[rout]] if rout else w
            if rout:
                for p in ("bias", "scale", "zero"):
                    if f"{lin}.{p}" in a:
                        a[f"{lin}.{p}"] = a[f"{lin}.{p}"][inv[rout]]
        for point, r in POINTS.items():
            for p in ("min", "max"):
                a[f"stat.{point}.{p}"] = self.arrays[f"stat.{point}.{p}"][inv[r]]
        for r in REORDERS:
            a[f"{r}.ids"] = self.arrays[f"{r}.ids"][inv[r]]
            a[f"{r}.perm"] = np.arange(self.arrays[f"{r}.perm"].size, dtype=np.int64)
        return QuantizedOPTBlock(a, {**self.meta, "layout": "logical"})


def config_bits(config):
    """(wbits, abits, kvbits) of a configuration name or a dict with those keys (None = float)."""
    if isinstance(config, dict):
        unknown = set(config) - {"wbits", "abits", "kvbits"}
        if unknown:
            raise ValueError(f"config has unknown keys {sorted(unknown)}; allowed: 'wbits', 'abits', 'kvbits'")
        bits = tuple(config.get(k) for k in ("wbits", "abits", "kvbits"))
        for name, b in zip(("wbits", "abits", "kvbits"), bits, strict=True):
            if b is not None and (isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 2 <= b <= 8):
                raise ValueError(f"config {name}={b!r} is not allowed; allowed: None (float) or an integer in 2..8")
        return bits
    check_choice(config, tuple(CONFIGS) + tuple(SDR_CONFIGS), name="config")
    return CONFIGS[config]


# ---------------------------------------------------------------------------------------------
# the operations


def layer_norm(x, gamma, beta, *, eps=1e-5, perm=None) -> np.ndarray:
    """y[j] = (x[perm[j]] - mean) / sqrt(var + eps) * gamma[j] + beta[j] over the last axis (biased
    variance): the LayerNorm reads the residual in its original order and writes permuted addresses
    (gamma and beta are given already permuted; perm=None is the identity).

    In float64 from float32 inputs, every operation IEEE-rounded, the two sums correctly rounded
    (``refsim.floatops.fsum_rows``: independent of channel order and of the machine):

        mean = fsum(x) / H;  d = x - mean;  var = fsum(d * d) / H
        y = fl32((d / sqrt(var + eps)) * gamma + beta)
    """
    x64 = np.asarray(x, dtype=np.float32).astype(np.float64)
    h = x64.shape[-1]
    mean = fsum_rows(x64)[..., None] / h
    d = x64 - mean
    if perm is not None:
        d = d[..., np.asarray(perm)]
    var = fsum_rows(d * d)[..., None] / h
    y = d / np.sqrt(var + eps) * np.asarray(gamma, np.float32).astype(np.float64) \
        + np.asarray(beta, np.float32).astype(np.float64)
    return y.astype(np.float32)


def softmax(scores) -> np.ndarray:
    """Softmax over the last axis, the same on every machine; -inf (masked) -> 0:

        t = fl32(s - max(s));  e = exp_float32(t) (correctly rounded);  p = fl32(e / fsum(e))

    (the quotient is taken in float64, then rounded to float32).
    """
    s = np.asarray(scores, dtype=np.float32)
    t = (s - s.max(axis=-1, keepdims=True)).astype(np.float32)
    e = exp_float32(t)
    return (e.astype(np.float64) / fsum_rows(e)[..., None]).astype(np.float32)


def float_matmul(a, b_nk, bias=None) -> np.ndarray:
    """fl32(a @ b_nk^T) computed in float64 from float32 operands, then + bias in float32."""
    y = (np.asarray(a, np.float32).astype(np.float64) @ np.asarray(b_nk, np.float32).astype(np.float64).T)
    y = y.astype(np.float32)
    if bias is not None:
        y = (y + np.asarray(bias, np.float32)).astype(np.float32)
    return y


def cluster_isums(qa, za, qb, zb, ids, n_clusters, *, acc_bits=32, overflow="wrap") -> np.ndarray:
    """Per-cluster exact integer sums (C, M, N), int64, by ``refsim.cluster_int_gemm``:

        isum[c, m, n] = sum_{k : ids[k] == c, ascending} (qa[m, k] - za[c]) * (qb[n, k] - zb[n, c])

    each cluster's sum under the accumulator rule (acc_bits, overflow) of ``refsim.int_gemm``.
    qa (M, K) and qb (N, K, the nn.Linear weight layout) are codes; za (C,); zb (N, C); ids (K,)
    the cluster of each k, in any order (physical: contiguous; logical: scattered).
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and int(ids.max()) + 1 != n_clusters:
        raise ValueError(f"ids name {int(ids.max()) + 1} clusters, expected n_clusters={n_clusters}")
    return refsim.cluster_int_gemm(np.asarray(qa), np.asarray(za).reshape(-1), np.asarray(qb).T, np.asarray(zb).T,
                                   ids, spec=refsim.preset("rptq").replace(acc_bits=acc_bits, acc_overflow=overflow))


def cluster_epilogue(isums, scale_a, scale_b, bias=None) -> np.ndarray:
    """float32 y[m, n] from per-cluster int sums, every op rounded to float32, clusters ascending:

        acc = 0.0f;  for c: acc = acc + (f32(isum[c, m, n]) * s_a[c]) * s_b[n, c];  y = acc + bias[n]

    ``refsim.float_epilogue`` with a weight scale that also varies by cluster (RPTQ's per output
    row x per input cluster weights); each cluster's term is that function's single-cluster value.
    """
    isums = np.asarray(isums)
    sa = np.asarray(scale_a, dtype=np.float32).reshape(-1)
    sb = np.asarray(scale_b, dtype=np.float32)
    acc = refsim.float_epilogue(isums[0], sa[0], sb[:, 0])
    for c in range(1, isums.shape[0]):
        acc = (acc + refsim.float_epilogue(isums[c], sa[c], sb[:, c])).astype(np.float32)
    if bias is not None:
        acc = (acc + np.asarray(bias, dtype=np.float32)).astype(np.float32)
    return acc


def cluster_matmul(qa, za, sa, qb, zb, sb, ids, n_clusters, *, bias=None, acc_bits=32, overflow="wrap"):
    """(isums, y): the per-cluster integer GEMM and its float32 epilogue (see the two functions above)."""
    isums = cluster_isums(qa, za, qb, zb, ids, n_clusters, acc_bits=acc_bits, overflow=overflow)
    return isums, cluster_epilogue(isums, sa, sb, bias)


# ---------------------------------------------------------------------------------------------
# the block


class _Act:
    """An activation: its float32 value, and (when quantized) codes, per-cluster params and ids."""

    def __init__(self, value, codes=None, scale=None, zero=None, ids=None):
        self.value, self.codes, self.scale, self.zero, self.ids = value, codes, scale, zero, ids


def _act_params(block, point, bits):
    r = POINTS[point]
    ids = block.ids(r)
    lo, hi = cluster_minmax(block[f"stat.{point}.min"], block[f"stat.{point}.max"], ids, block.n_clusters(r))
    s, z = refsim.rptq_params(lo, hi, bits=bits, spec=refsim.preset("rptq"))
    return s, z, ids


def _quant_act(block, point, x, bits, stages):
    if bits is None:
        return _Act(x)
    s, z, ids = _act_params(block, point, bits)
    spec = refsim.preset("rptq")
    codes = refsim.quantize(x, s, z, bits=bits, axis=-1, clusters=ids, spec=spec)
    deq = refsim.dequantize(codes, s, z, axis=-1, clusters=ids, dtype=np.float32)
    stages[f"{point}_codes"] = codes
    stages[f"{point}_scale"] = s
    stages[f"{point}_zero"] = z
    return _Act(deq, codes, s, z, ids)


def _weight(block, lin, wbits):
    w = block[f"{lin}.weight"]
    if wbits is None:
        return _Act(w)
    if block.wbits != wbits:
        raise ValueError(f"config wbits={wbits} but the block's weights are quantized to wbits={block.wbits}")
    codes = block[f"{lin}.codes"].astype(np.int32)
    s, z = block[f"{lin}.scale"], block[f"{lin}.zero"]
    ids = block.ids(LINEAR_IN[lin])
    deq = refsim.dequantize(codes, s, z, axis=1, clusters=ids, dtype=np.float32)
    return _Act(deq, codes, s, z, ids)


def _linear(block, lin, a: _Act, wbits, stages, name, acc):
    w = _weight(block, lin, wbits)
    bias = block[f"{lin}.bias"]
    if a.codes is None or w.codes is None:
        return float_matmul(a.value, w.value, bias)
    r = LINEAR_IN[lin]
    isums, y = cluster_matmul(a.codes, a.zero, a.scale, w.codes, w.zero, w.scale, w.ids, block.n_clusters(r),
                              bias=bias, **acc)
    stages[f"{name}_acc"] = isums
    return y


def _head_slice(ids, sl):
    """Local cluster ids of one head's channels and the global cluster range they cover."""
    cid = ids[sl]
    lo, hi = int(cid.min()), int(cid.max())
    return cid - lo, lo, hi + 1


def _attention(block, q: _Act, k: _Act, v: _Act, pbits, stages, acc):
    t, hidden = q.value.shape
    heads = block.heads
    d = hidden // heads
    causal = np.triu(np.ones((t, t), dtype=bool), k=1)
    scores = np.empty((heads, t, t), dtype=np.float32)
    s_acc, a_acc = [], []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        if q.codes is not None and k.codes is not None:
            loc, lo, hi = _head_slice(q.ids, sl)
            zk = np.broadcast_to(k.zero[lo:hi], (t, hi - lo))
            sk = np.broadcast_to(k.scale[lo:hi], (t, hi - lo))
            isums, scores[h] = cluster_matmul(q.codes[:, sl], q.zero[lo:hi], q.scale[lo:hi], k.codes[:, sl], zk, sk,
                                              loc, hi - lo, **acc)
            s_acc.append(isums)
        else:
            scores[h] = float_matmul(q.value[:, sl], k.value[:, sl])
    scores[:, causal] = -np.inf
    probs = softmax(scores)
    stages["scores"], stages["probs"] = scores, probs
    if s_acc:
        stages["scores_acc"] = np.stack(s_acc)
    if pbits is not None:
        spec = refsim.preset("rptq")
        p_codes = refsim.quantize(probs, PROB_SCALE, 0, bits=pbits, spec=spec.replace(signed=False))
        p_val = refsim.dequantize(p_codes, PROB_SCALE, 0, dtype=np.float32)
        stages["probs_codes"] = p_codes
    else:
        p_codes, p_val = None, probs
    attn = np.empty((t, hidden), dtype=np.float32)
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        if p_codes is not None and v.codes is not None:
            # PV reduces over tokens (one cluster); V's per-channel-cluster params sit on the output axis n
            zv = v.zero[v.ids[sl]][:, None]
            sv = v.scale[v.ids[sl]].astype(np.float32)[:, None]
            isums, attn[:, sl] = cluster_matmul(p_codes[h], np.zeros(1, np.int64), np.float32(PROB_SCALE).reshape(1),
                                                v.codes[:, sl].T, zv, sv, np.zeros(t, np.int64), 1, **acc)
            a_acc.append(isums)
        else:
            attn[:, sl] = float_matmul(p_val[h], v.value[:, sl].T)
    if a_acc:
        stages["attn_acc"] = np.stack(a_acc)
    return attn


def opt_block(block: QuantizedOPTBlock, x, *, config="W4A4", acc_bits=32, overflow="wrap") -> dict:
    """Run one OPT decoder layer on x (T, hidden) under ``config``; returns {stage: ndarray}.

    config: a name in ``CONFIGS`` or ``SDR_CONFIGS`` (QRazor, ``refsim.rptq.sdr_block``), or
    {"wbits", "abits", "kvbits"} (None = float).
    acc_bits, overflow: the accumulator rule of every integer GEMM (``refsim.int_gemm``).
    Stages absent from the result were not computed under this config (e.g. codes of a float stage).
    """
    if not isinstance(block, QuantizedOPTBlock):
        raise TypeError(f"block must be a QuantizedOPTBlock, got {type(block).__name__}")
    if isinstance(config, str) and config in SDR_CONFIGS:
        from refsim.rptq.sdr_block import opt_block_sdr

        return opt_block_sdr(block, x, qrazor=SDR_CONFIGS[config], acc_bits=acc_bits, overflow=overflow)
    wbits, abits, kvbits = config_bits(config)
    x = np.asarray(x)
    if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != block.hidden:
        raise ValueError(f"x must be float32 of shape (T, {block.hidden}), got {x.dtype} {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x has NaN or Inf values")
    acc = dict(acc_bits=acc_bits, overflow=overflow)
    eps = float(block.meta["eps"])
    lnbits = None if abits is None else max(8, abits)
    st = {"x": x}
    st["ln1"] = layer_norm(x, block["ln1.weight"], block["ln1.bias"], eps=eps, perm=block["R1.perm"])
    a1 = _quant_act(block, "ln1", st["ln1"], lnbits, st)
    scaling = np.float32((block.hidden // block.heads) ** -0.5)
    q_lin = _linear(block, "q", a1, wbits, st, "q", acc)
    st["q"] = (q_lin * scaling).astype(np.float32)
    st["k"] = _linear(block, "k", a1, wbits, st, "k", acc)
    st["v"] = _linear(block, "v", a1, wbits, st, "v", acc)
    qa = _quant_act(block, "q", st["q"], abits, st)
    ka = _quant_act(block, "k", st["k"], kvbits, st)
    va = _quant_act(block, "v", st["v"], kvbits, st)
    st["attn"] = _attention(block, qa, ka, va, None if abits is None else PROB_BITS, st, acc)
    aa = _quant_act(block, "attn", st["attn"], abits, st)
    st["out_proj"] = _linear(block, "out", aa, wbits, st, "out", acc)
    st["h1"] = (x + st["out_proj"]).astype(np.float32)
    st["ln2"] = layer_norm(st["h1"], block["ln2.weight"], block["ln2.bias"], eps=eps, perm=block["R4.perm"])
    a2 = _quant_act(block, "ln2", st["ln2"], lnbits, st)
    st["fc1"] = _linear(block, "fc1", a2, wbits, st, "fc1", acc)
    st["relu"] = np.maximum(st["fc1"], np.float32(0))
    a3 = _quant_act(block, "fc2_in", st["relu"], abits, st)
    st["fc2"] = _linear(block, "fc2", a3, wbits, st, "fc2", acc)
    st["out"] = (st["h1"] + st["fc2"]).astype(np.float32)
    return st
