"""The integer OPT decoder block in RPTQ's reordered dataflow (DESIGN.md "RPTQ: reordered dataflow").

``opt_block(block, x, config=...)`` computes one pre-LayerNorm OPT decoder layer
(OPT-125m ... 175B; not the post-LN 350m) on one sequence x (T, hidden) float32 and returns
every stage by name (``STAGES``, documented in docs/rptq.md) as plain numpy arrays. It is the
one forward pass (``refsim.models.forward``) over OPT's topology (``refsim.models.opt``, where the
structure below is written once) under the scheme of ``config`` (``refsim.schemes``); this module
keeps the block container, the stage names and the loose-array GEMM helpers the tests use.

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
``refsim.qtensor.rptq_quantize`` (the ``rptq`` preset). Weights are GPTQ codes with
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

from refsim.models.floatops import float_matmul, layer_norm, softmax
from refsim.models.forward import forward
from refsim.models.opt import OPT
from refsim.qtensor import Granularity, QuantizedTensor, epilogue, qgemm
from refsim.rptq.cluster import Reorder
from refsim.schemes import CONFIGS, PROB_SCALE, SDR_CONFIG, SDR_CONFIGS, config_bits, scheme

# The OPT block's structure, derived from its topology (refsim.models.opt)
LINEARS = OPT.linear_names
LINEAR_IN = OPT.linear_in  # the reorder of each linear's input channels
LINEAR_OUT = OPT.linear_out  # ... and of its output channels (None: not reordered)
POINTS = OPT.point_reorders  # calibrated activation points -> the reorder whose clusters they use
REORDERS = OPT.reorder_names
PROB_BITS = OPT.prob_bits

# Stage names, in dataflow order. "*_codes" are integer codes (int32), "*_acc" per-cluster
# int sums (C, M, N) int64 (attention ones per head: (heads, C, T, T|d)), the rest float32.
STAGES = OPT.stages

__all__ = ["CONFIGS", "SDR_CONFIG", "SDR_CONFIGS", "PROB_SCALE", "PROB_BITS", "STAGES", "LINEARS", "LINEAR_IN",
           "LINEAR_OUT", "POINTS", "REORDERS", "QuantizedOPTBlock", "opt_block", "config_bits", "layer_norm",
           "softmax", "float_matmul", "cluster_isums", "cluster_epilogue", "cluster_matmul"]


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

    def logical(self, topology=OPT) -> "QuantizedOPTBlock":
        """The same block on the original channel order: cluster ids scattered over the original
        channel positions (``ids_old``), every array un-permuted (where ``topology`` says each reorder
        goes). Its forward pass equals the physical one bit for bit (``out``), stage by stage up to
        the permutation."""
        if self.meta["layout"] != "physical":
            raise ValueError("logical() needs a block in the physical layout")
        inv = {r: Reorder(*(self.arrays[f"{r}.{p}"] for p in ("perm", "ids", "sizes"))).inverse
               for r in topology.reorder_names}
        a = dict(self.arrays)
        for ln, r in topology.norm_reorders:
            for p in ("weight", "bias"):
                if f"{ln}.{p}" in a:
                    a[f"{ln}.{p}"] = self.arrays[f"{ln}.{p}"][inv[r]]
        for lin in topology.linear_names:
            rin, rout = topology.linear_in[lin], topology.linear_out[lin]
            for p in ("weight", "codes"):
                if f"{lin}.{p}" in a:
                    w = a[f"{lin}.{p}"][:, inv[rin]]
                    a[f"{lin}.{p}"] = w[inv[rout]] if rout else w
            if rout:
                for p in ("bias", "scale", "zero"):
                    if f"{lin}.{p}" in a:
                        a[f"{lin}.{p}"] = a[f"{lin}.{p}"][inv[rout]]
        for point, r in topology.point_reorders.items():
            for p in ("min", "max"):
                a[f"stat.{point}.{p}"] = self.arrays[f"stat.{point}.{p}"][inv[r]]
        for r in topology.reorder_names:
            a[f"{r}.ids"] = self.arrays[f"{r}.ids"][inv[r]]
            a[f"{r}.perm"] = np.arange(self.arrays[f"{r}.perm"].size, dtype=np.int64)
        return QuantizedOPTBlock(a, {**self.meta, "layout": "logical"})


def cluster_isums(qa, za, qb, zb, ids, n_clusters, *, spec) -> np.ndarray:
    """Per-cluster exact integer sums (C, M, N) under spec's accumulator: ``refsim.qtensor.qgemm`` of loose arrays,

        isum[c, m, n] = sum_{k : ids[k] == c, ascending} (qa[m, k] - za[c]) * (qb[n, k] - zb[n, c])

    qa (M, K) and qb (N, K, the nn.Linear weight layout) are codes; za (C,); zb (N, C); ids (K,)
    the cluster of each k, in any order (physical: contiguous; logical: scattered).
    """
    ids = np.asarray(ids, dtype=np.int64)
    za = np.asarray(za).reshape(-1)
    zb = np.asarray(zb)
    a = QuantizedTensor(np.asarray(qa), np.ones(n_clusters, np.float32), np.broadcast_to(za, (n_clusters,)),
                        Granularity.CLUSTER, 32, True, None, axis=1, clusters=ids)
    w = QuantizedTensor(np.asarray(qb), np.ones((zb.shape[0], n_clusters), np.float32), zb, Granularity.CLUSTER, 32,
                        True, None, axis=1, clusters=ids)
    return qgemm(a, w, spec=spec)


def cluster_epilogue(isums, scale_a, scale_b, bias=None) -> np.ndarray:
    """float32 y[m, n] from per-cluster int sums, every op rounded to float32, clusters ascending
    (``refsim.qtensor.epilogue``):

        acc = 0.0f;  for c: acc = acc + (f32(isum[c, m, n]) * s_a[c]) * s_b[n, c];  y = acc + bias[n]
    """
    return epilogue(isums, scale_a, scale_b, bias)


def cluster_matmul(qa, za, sa, qb, zb, sb, ids, n_clusters, *, bias=None, spec):
    """(isums, y): the per-cluster integer GEMM and its float32 epilogue (see the two functions above)."""
    isums = cluster_isums(qa, za, qb, zb, ids, n_clusters, spec=spec)
    return isums, cluster_epilogue(isums, sa, sb, bias)


def opt_block(block: QuantizedOPTBlock, x, *, config="W4A4", spec=None) -> dict:
    """Run one OPT decoder layer on x (T, hidden) under ``config``; returns {stage: ndarray}.

    ``refsim.models.forward.forward`` over the OPT topology (``refsim.models.opt``) and the scheme of
    ``config`` (``refsim.schemes.scheme``): a name in ``CONFIGS`` (RPTQ) or ``SDR_CONFIGS`` (QRazor),
    {"wbits", "abits", "kvbits"} (None = float), or a scheme object.
    spec: the method's NumericsSpec (activations, probabilities and the accumulator of every integer
    product; weights keep the scheme's weight spec); None = the scheme's preset (``rptq`` or ``qrazor``).
    Stages absent from the result were not computed under this config (e.g. codes of a float stage).
    """
    if not isinstance(block, QuantizedOPTBlock):
        raise TypeError(f"block must be a QuantizedOPTBlock, got {type(block).__name__}")
    return forward(OPT, block, x, scheme(config, spec=spec))
