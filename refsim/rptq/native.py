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
