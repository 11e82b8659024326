"""Block-aligned RPTQ reorders: activation clusters that are unions of whole GGUF weight blocks (docs/gguf.md).

The native-weights configurations (``refsim.schemes.NATIVE_CONFIGS``) keep a GGUF model's own 4-bit
blocks (32 consecutive input channels, one (d, m) per row and block). RPTQ's channel-level reorders
scatter those blocks over many activation clusters, and the exact product then needs one pair of
integer sums (S, A) and two float multiply-adds per (block x cluster) intersection
(``refsim.qtensor.block_offset_matmul``). A block-aligned reorder clusters *blocks* instead of
channels, so each block lies in one cluster: one (S, A) pair per block, as llama.cpp's
``vec_dot_q4_1_q8_1`` computes it, and the file's blocks move whole (their channel order inside
a block kept).

    block features   [max over the block of the channel maxima, min over the block of the minima]
    clusters         RPTQ's k-means on those features (``refsim.rptq.cluster.reorder_index``), per head
                     when ``n_heads`` is given, with at most the number of blocks (per head) clusters
    perm             the blocks in the k-means order, each block's 32 channels in file order
"""

from __future__ import annotations

import numpy as np

from refsim.rptq.cluster import Reorder, reorder_index

BLOCK = 32  # GGUF's QK4_1 = QK8_0


def block_reorder(xmax, xmin, n_clusters, *, seed=0, n_heads=None, block=BLOCK) -> Reorder:
    """A ``Reorder`` of the channels whose clusters are unions of whole blocks of ``block`` channels.

    xmax, xmin: per-channel calibration maxima and minima (C,), C a multiple of ``block`` (of
    ``n_heads * block`` per head). ``n_clusters`` is capped at the number of blocks (per head)."""
    xmax = np.asarray(xmax, np.float64).reshape(-1)
    xmin = np.asarray(xmin, np.float64).reshape(-1)
    heads = 1 if n_heads is None else int(n_heads)
    if xmax.shape != xmin.shape or heads < 1 or xmax.size % (heads * block):
        raise ValueError(f"xmax and xmin must have one shape with a multiple of n_heads * {block} = "
                         f"{heads * block} channels, got {xmax.shape} and {xmin.shape}")
    bmax = xmax.reshape(-1, block).max(axis=1)
    bmin = xmin.reshape(-1, block).min(axis=1)
    per_head = bmax.size // heads
    r = reorder_index(bmax, bmin, min(int(n_clusters), per_head), seed=seed, n_heads=n_heads)
    inner = np.arange(block, dtype=np.int64)
    return Reorder((r.perm[:, None] * block + inner).reshape(-1), np.repeat(r.ids_new, block),
                   np.asarray(r.sizes, np.int64) * block)


def column_reorders(topology) -> tuple:
    """The recorded reorders that permute some linear's input columns, directly or through a reorder derived
    from them (LLaMA: R1, R3 through R3o, R4, R5): the ones a native block must build block-aligned. The
    others (R2: q/k output rows) permute weight rows only, which never split a block."""
    used = {lin.in_reorder for lin in topology.linears}
    src = {r.group_of or r.name for r in topology.reorders if r.name in used}
    return tuple(r.name for r in topology.reorders if r.name in src and not r.group_of)


def native_reorders(topology, stats, *, heads, n_clusters=32, head_clusters=4, seed=0, reorder=True,
                    head_dim=None) -> dict:
    """Every recorded reorder of one layer for a native-weights block: RPTQ's own
    (``refsim.rptq.pipeline.find_reorders``, the same statistics and k-means) for the row-only reorders,
    and ``block_reorder`` for the column reorders (``column_reorders``), on the same features RPTQ
    clusters them on (``reorder_features``: several points reduced to max of the maxima, min of the
    minima). A per-head column reorder (R3) is block-aligned per KV head, a query-side statistic first
    reduced over the query heads of each group as ``group_reorder`` does; its derived reorder (R3o) is it
    repeated for every query head of the group (``expand_to_group``). ``reorder=False``: the identity
    (one cluster per tensor, per head), as for RPTQ."""
    from refsim.rptq.cluster import _group_envelope, expand_to_group
    from refsim.rptq.pipeline import find_reorders, reorder_features

    out = find_reorders(stats, heads=heads, n_clusters=n_clusters, head_clusters=head_clusters, seed=seed,
                        reorder=reorder, topology=topology, head_dim=head_dim)
    if not reorder:
        return out
    if not head_dim:  # find_reorders' rule: the query width over the heads
        q = [p.name for p in topology.points if p.dim == "q"] or [p.name for p in topology.points if p.dim == "hidden"]
        head_dim = np.asarray(stats[q[0]][0]).size // int(heads)
    d = int(head_dim)
    cols = column_reorders(topology)
    for r in topology.reorders:
        if r.name not in cols:
            continue
        feats = reorder_features(topology, r)
        if r.per_head:
            if d % BLOCK:
                raise ValueError(f"a block-aligned {r.name} needs head_dim to be a multiple of {BLOCK}, got {d}")
            kv = out[r.name].perm.size // d
            hi = np.max([_group_envelope(stats[p][1], kv, d, np.max) for p in feats], axis=0)
            lo = np.min([_group_envelope(stats[p][0], kv, d, np.min) for p in feats], axis=0)
            out[r.name] = block_reorder(hi, lo, head_clusters, seed=seed, n_heads=kv)
        else:
            hi = np.max([np.asarray(stats[p][1], np.float64) for p in feats], axis=0)
            lo = np.min([np.asarray(stats[p][0], np.float64) for p in feats], axis=0)
            out[r.name] = block_reorder(hi, lo, n_clusters, seed=seed)
    for r in topology.reorders:
        if r.group_of in cols:
            src = out[r.group_of]
            group = out[r.name].perm.size // src.perm.size
            out[r.name] = expand_to_group(src, kv_heads=src.perm.size // d, group=group)
    return out


def native_block(block, topology, tensors: dict):
    """``block`` with the native arrays of its linears in its own layout (``refsim.formats.gguf.native_block_arrays``;
    ``tensors``: {linear: BlockTensor in transformers' row order}, ``llama_layer_tensors``).

    The block's float weights must be the file's blocks dequantized, bit for bit, in the block's layout (a
    GGUF model's float weights are: transformers dequantizes the same blocks): a different file, or rows in
    another order, is refused here rather than evaluated."""
    from refsim.formats.gguf import dequantize_blocks, native_block_arrays

    arrays = native_block_arrays(block, topology, tensors)
    for lin in topology.linear_names:
        w = dequantize_blocks(arrays[f"{lin}.native.codes"], arrays[f"{lin}.native.d"], arrays.get(f"{lin}.native.m"),
                              blocks=arrays[f"{lin}.native.cols"] // BLOCK)
        ref = np.asarray(block[f"{lin}.weight"], np.float32)
        if w.shape != ref.shape or not np.array_equal(w.view(np.uint32), ref.view(np.uint32)):
            raise ValueError(f"the GGUF blocks of {lin!r} do not dequantize to the model's {lin} weights bit for bit "
                             "(another file, or its rows in another order)")
    return type(block)({**block.arrays, **arrays}, {**block.meta, "weight_quantizer": "gguf native"})


def block_clusters(topology, block, n_clusters, head_clusters) -> dict:
    """{column reorder: clusters it gets} when block-aligned: the requested count capped at the number of
    blocks (per head for a per-head reorder), which is what ``native_reorders`` builds."""
    d = int(block.meta.get("head_dim") or block.hidden // block.heads)
    out = {}
    for r in topology.reorders:
        if r.name in column_reorders(topology):
            units = d // BLOCK if r.per_head else np.asarray(block[f"{r.name}.perm"]).size // BLOCK
            out[r.name] = min(int(head_clusters if r.per_head else n_clusters), units)
    return out
