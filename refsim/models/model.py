"""The whole decoder-only model of any family: embedding, every layer, the final norm, lm_head.

A ``Model`` holds a family's topology (``refsim.models.<family>.TOPOLOGY``), the model-level arrays
(the family's ``model_arrays``), one block per decoder layer (``refsim.rptq.block.QuantizedOPTBlock``,
the container every topology's forward pass reads) and the meta. Its forward pass on token ids t:

    x_0 = embed[t] (@ project_in^T)  (+ pos_embed[p + pos_offset])     float32 (head dtype, below)
    x_i = forward(topology, block_i, x_{i-1}, scheme)["out"]             i = 1 .. layers (refsim.models.forward)
    h   = final_norm(x_L) (@ project_out^T)                             LayerNorm or RMSNorm (the topology's kind)
    logits = h @ lm_head^T                                               float64 sums, rounded once

Model-level arrays (keys a family's ``model_arrays`` returns): ``embed.weight`` (V, E), ``lm_head.weight``
(V, E; the same array when the embeddings are tied), ``norm.weight`` (the final norm; and ``norm.bias``
for LayerNorm), and optionally ``pos_embed.weight`` (learned positions, read at p + the family's
``POS_OFFSET``), ``project_in.weight`` (H, E) and ``project_out.weight`` (E, H) (OPT with
word_embed_proj_dim != hidden).

Embeddings and lm_head stay float, as RPTQ and QRazor keep them (neither paper quantizes them):
``head_dtype`` "float32" (default) uses them as loaded; "float16" rounds the embedding table, the
lm_head weights, the embedding output and the logits to IEEE half (the papers' fp16 models) and back.

The K/V cache: under a scheme that quantizes K and V (the KV configurations, W4A4, ...), the tensors
the attention reads are the kvbits codes with their per-cluster scales and zero points; ``forward(...,
kv_cache=True)`` returns them per layer (``{"k_codes", "k_scale", "k_zero", "v_codes", ...}``), which is
what an incremental decoder would store. Windowed perplexity runs each window as one full forward pass
from an empty context, so no incremental decoding is implemented here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from refsim.models.floatops import layer_norm
from refsim.models.forward import forward as block_forward
from refsim.models.topology import NormKind, Topology

HEAD_DTYPES = ("float32", "float16")
KV_STAGE_PARTS = ("codes", "scale", "zero")


def _round(x, head_dtype):
    x = np.asarray(x, np.float32)
    return x.astype(np.float16).astype(np.float32) if head_dtype == "float16" else x


def _matmul64(a, w64) -> np.ndarray:
    """fl32(a @ w^T) with float64 sums from float32 operands (w given in float64 already)."""
    return (np.asarray(a, np.float32).astype(np.float64) @ w64.T).astype(np.float32)


@dataclass
class Model:
    """A whole decoder-only model (module docstring). ``meta``: the block meta (hidden, heads, ffn, eps, ...)
    plus vocab, pos_offset, head_dtype, family."""

    topology: Topology
    arrays: dict
    blocks: list
    meta: dict
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        hd = self.meta.setdefault("head_dtype", "float32")
        if hd not in HEAD_DTYPES:
            raise ValueError(f"head_dtype={hd!r} is not allowed; allowed: {', '.join(HEAD_DTYPES)}")
        for key in ("embed.weight", "lm_head.weight", "norm.weight"):
            if key not in self.arrays:
                raise ValueError(f"model arrays are missing {key!r}")

    def __getstate__(self):  # the float64 copies are rebuilt where the model is used (Dask workers)
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    @property
    def head_dtype(self) -> str:
        return self.meta["head_dtype"]

    @property
    def tied(self) -> bool:
        head, emb = self.arrays["lm_head.weight"], self.arrays["embed.weight"]
        return head is emb or np.array_equal(head, emb)

    def with_blocks(self, blocks) -> "Model":
        return Model(self.topology, self.arrays, list(blocks), dict(self.meta))

    def _w64(self, key):
        if key not in self._cache:
            self._cache[key] = _round(self.arrays[key], self.head_dtype).astype(np.float64)
        return self._cache[key]

    # --- the steps --------------------------------------------------------------------------------
    def embed(self, ids, positions=None) -> np.ndarray:
        """x_0 (T, hidden) float32 of token ids (T,); positions default to 0 .. T-1."""
        ids = np.asarray(ids)
        vocab = self.arrays["embed.weight"].shape[0]
        if ids.ndim != 1 or ids.dtype.kind not in "iu" or ids.size == 0:
            raise ValueError(f"token ids must be a non-empty 1-d integer array, got {ids.dtype} {ids.shape}")
        if ids.min() < 0 or ids.max() >= vocab:
            raise ValueError(f"token ids must lie in 0..{vocab - 1} (the model's vocabulary)")
        x = _round(self.arrays["embed.weight"], self.head_dtype)[ids]
        if "project_in.weight" in self.arrays:
            x = _matmul64(x, self._w64("project_in.weight"))
        if "pos_embed.weight" in self.arrays:
            pos = np.arange(ids.size) if positions is None else np.asarray(positions)
            table = self.arrays["pos_embed.weight"]
            p = pos + int(self.meta.get("pos_offset", 0))
            if p.max() >= table.shape[0]:
                raise ValueError(f"position {int(pos.max())} exceeds the model's "
                                 f"{table.shape[0] - int(self.meta.get('pos_offset', 0))} learned positions")
            x = (x + table[p]).astype(np.float32)
        return _round(x, self.head_dtype)

    def final_hidden(self, x) -> np.ndarray:
        """The final norm (the topology's norm kind) and project_out, float32."""
        eps = float(self.meta.get("final_eps", self.meta["eps"]))
        if self.topology.norm_kind is NormKind.LAYER_NORM:
            h = layer_norm(x, self.arrays["norm.weight"], self.arrays["norm.bias"], eps=eps)
        else:
            from refsim.floatops import rms_norm

            h = rms_norm(x, self.arrays["norm.weight"], eps=eps)
        if "project_out.weight" in self.arrays:
            h = _matmul64(h, self._w64("project_out.weight"))
        return h

    def logits(self, h) -> np.ndarray:
        """h (T, E) @ lm_head^T: float64 sums of float32 operands, rounded once to float32 (head dtype)."""
        return _round(_matmul64(h, self._w64("lm_head.weight")), self.head_dtype)

    # --- the whole pass -------------------------------------------------------------------------
    def hidden(self, ids, scheme, *, keep=(), kv_cache=False, positions=None) -> dict:
        """{"h": final hidden (T, E), "layers": [{stage: array} of ``keep`` per layer], "kv": [...]}."""
        x = self.embed(ids, positions)
        kept, kv = [], []
        a = self.topology.attention
        # the per-cluster integer sums are stored only when a caller keeps an *_acc stage (they are the bulk
        # of a layer's memory: scores_acc alone is heads x clusters x T x T)
        record_sums = any(s.endswith("_acc") for s in keep)
        for block in self.blocks:
            st = block_forward(self.topology, block, x, scheme, record_sums=record_sums)
            x = st["out"]
            if keep:
                kept.append({s: st[s] for s in keep if s in st})
            if kv_cache:
                kv.append({f"{r}_{p}": st[f"{r}_{p}"] for r in (a.k, a.v) for p in KV_STAGE_PARTS
                           if f"{r}_{p}" in st})
        return {"h": self.final_hidden(x), "layers": kept, "kv": kv}

    def forward(self, ids, scheme, **kw) -> np.ndarray:
        """logits (T, V) float32 of token ids under ``scheme``."""
        return self.logits(self.hidden(ids, scheme, **kw)["h"])


def token_nll(model: Model, h, targets, *, rows=256) -> np.ndarray:
    """NLL (float64) of each target under logits = model.logits(h), computed ``rows`` positions at a time
    (the (T, V) logits are never held whole):

        nll[t] = logsumexp(l[t]) - l[t, y_t],   logsumexp(l) = m + log(sum exp(l - m)),  m = max(l)

    in float64 from the float32 logits (numpy's exp/log: not claimed identical across machines)."""
    targets = np.asarray(targets)
    out = np.empty(targets.size, dtype=np.float64)
    for r0 in range(0, targets.size, rows):
        lg = model.logits(h[r0:r0 + rows]).astype(np.float64)
        m = lg.max(axis=1)
        lse = m + np.log(np.exp(lg - m[:, None]).sum(axis=1))
        out[r0:r0 + rows] = lse - lg[np.arange(lg.shape[0]), targets[r0:r0 + rows]]
    return out


def reorder_widths(topology: Topology, layer: dict) -> dict:
    """{reorder: channels} read from the layer's weights: the input width of a linear it reorders the input of,
    else the output width of one it reorders the output of."""
    out = {}
    for lin in topology.linears:
        w = layer[f"{lin.name}.weight"]
        out.setdefault(lin.in_reorder, w.shape[1])
        if lin.out_reorder:
            out.setdefault(lin.out_reorder, w.shape[0])
    return {r.name: int(out[r.name]) for r in topology.reorders}


def float_block(topology: Topology, layer: dict, meta: dict):
    """A block of float weights in the original channel order (identity reorders, one cluster per tensor /
    per head of head_dim channels, no calibration ranges): what W16A16 and the calibration pass run."""
    from refsim.rptq.block import QuantizedOPTBlock
    from refsim.rptq.reorder import identity_reorder, reorder_arrays

    d = int(meta.get("head_dim") or int(meta["hidden"]) // int(meta["heads"]))
    widths = reorder_widths(topology, layer)
    reorders = {r.name: identity_reorder(widths[r.name], widths[r.name] // d if r.per_head else None)
                for r in topology.reorders}
    arrays = {k: np.asarray(v, np.float32) for k, v in layer.items()}
    arrays.update(reorder_arrays(reorders, topology))
    return QuantizedOPTBlock(arrays, {**meta, "wbits": None, "layout": "physical", "reorder": False})
