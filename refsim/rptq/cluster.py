"""Channel clustering and reorder permutations (RPTQ, arXiv 2304.01089, Sec. 3.2).

Features per channel are [max, min] of its calibration values (Q and K jointly:
[q_max, k_max, q_min, k_min]); scikit-learn ``KMeans(n_clusters, n_init=10, random_state=seed)``
labels them. Everything after the labels is defined here, not by the clustering library:

    cluster order   ascending by the cluster's largest channel maximum (the max of the max
                    features), then its smallest channel minimum, then its lowest channel index
    permutation     clusters in that order, channels ascending within a cluster;
                    new[j] = old[perm[j]]
    cluster ids     ``ids_new[j]`` is the cluster of new position j (non-decreasing, contiguous);
                    ``ids_old[perm] = ids_new`` places the same ids on the original channel order

Per head (R2, R3), each head's channels are clustered on their own; the permutation keeps
every channel inside its head, and cluster ids are numbered head after head.

Grouped-query attention and RoPE (``group_reorder``, ``expand_to_group``; docs/rptq.md "The LLaMA
family"): a per-KV-head reorder is shared by the group's query heads, query-side statistics reduced
over the group (max of maxima, min of minima); under RoPE the unit clustered is the rotary pair
(j, j + d/2), its features the concatenation of both channels' features, and the pair permutation
is applied to both halves, so that RoPE commutes with it.
Empty clusters (k-means on fewer distinct points than clusters) are dropped: the recorded
sizes say how many clusters each head really has.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Reorder(NamedTuple):
    """A recorded reorder: perm (new[j] = old[perm[j]]), ids_new (cluster of new position j), sizes."""

    perm: np.ndarray
    ids_new: np.ndarray
    sizes: np.ndarray

    @property
    def ids_old(self) -> np.ndarray:
        """Cluster ids on the original channel order (the logical layout)."""
        out = np.empty_like(self.ids_new)
        out[self.perm] = self.ids_new
        return out

    @property
    def inverse(self) -> np.ndarray:
        inv = np.empty_like(self.perm)
        inv[self.perm] = np.arange(self.perm.size)
        return inv

    @property
    def n_clusters(self) -> int:
        return int(self.sizes.size)


def _check_clusters(n_clusters, channels, name, unit="channels"):
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters < 1:
        raise ValueError(f"{name}={n_clusters!r} is not allowed; allowed: a positive integer")
    if n_clusters > channels:
        raise ValueError(f"{name}={n_clusters} is more than the {channels} {unit} it clusters; "
                         f"allowed: 1..{channels}")
    return int(n_clusters)


def kmeans_labels(features, n_clusters, *, seed=0) -> np.ndarray:
    """Raw k-means labels of the rows of ``features`` (channels x features), scikit-learn, seeded."""
    from sklearn.cluster import KMeans

    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be 2-d (channels, features), got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError("features must be finite (a channel min/max is NaN or Inf)")
    n_clusters = _check_clusters(n_clusters, f.shape[0], "n_clusters")
    if n_clusters == 1:
        return np.zeros(f.shape[0], dtype=np.int64)
    import warnings

    with warnings.catch_warnings():
        # fewer distinct points than clusters: handled below by dropping empty clusters
        warnings.simplefilter("ignore")
        km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit(f)
    return km.labels_.astype(np.int64)


def order_from_labels(labels, fmax, fmin) -> Reorder:
    """The deterministic permutation of one group of channels from raw labels (see module docstring)."""
    labels = np.asarray(labels, dtype=np.int64)
    fmax = np.asarray(fmax, dtype=np.float64)
    fmin = np.asarray(fmin, dtype=np.float64)
    keys = []
    for lab in np.unique(labels):
        ch = np.nonzero(labels == lab)[0]  # ascending
        keys.append((float(fmax[ch].max()), float(fmin[ch].min()), int(ch[0]), ch))
    keys.sort(key=lambda t: t[:3])
    perm = np.concatenate([k[3] for k in keys]).astype(np.int64)
    sizes = np.array([k[3].size for k in keys], dtype=np.int64)
    ids_new = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)
    return Reorder(perm, ids_new, sizes)


def reorder_index(xmax, xmin, n_clusters, *, seed=0, n_heads=None, joint=None) -> Reorder:
    """Cluster channels on [max, min] and return the recorded ``Reorder``.

    xmax, xmin: per-channel maxima and minima (C,). ``joint=(xmax2, xmin2)`` adds a second
    tensor's statistics (Q/K jointly: features [q_max, k_max, q_min, k_min]).
    ``n_heads``: cluster each of the n_heads equal slices on its own with ``n_clusters`` each.
    """
    xmax = np.asarray(xmax, dtype=np.float64).reshape(-1)
    xmin = np.asarray(xmin, dtype=np.float64).reshape(-1)
    if xmax.shape != xmin.shape:
        raise ValueError(f"xmax and xmin must have the same shape, got {xmax.shape} and {xmin.shape}")
    cols_max, cols_min = [xmax], [xmin]
    if joint is not None:
        jmax, jmin = (np.asarray(a, dtype=np.float64).reshape(-1) for a in joint)
        if jmax.shape != xmax.shape or jmin.shape != xmax.shape:
            raise ValueError("joint statistics must have the same shape as xmax")
        cols_max.append(jmax)
        cols_min.append(jmin)
    features = np.stack(cols_max + cols_min, axis=1)
    fmax = np.max(np.stack(cols_max, axis=1), axis=1)
    fmin = np.min(np.stack(cols_min, axis=1), axis=1)
    return _cluster_heads(features, fmax, fmin, n_clusters, n_heads=n_heads, seed=seed)


def _cluster_heads(features, fmax, fmin, n_clusters, *, n_heads=None, seed=0, pairs=False) -> Reorder:
    """k-means per head on the rows of ``features`` (one row per channel, or per rotary pair when ``pairs``:
    row j of a head stands for its channels j and j + d/2), the deterministic order of each head, the
    head's permutation offset into place; with ``pairs`` the pair permutation sigma is applied to both
    halves (perm[j] = sigma[j], perm[j + d/2] = sigma[j] + d/2) and each cluster holds both channels of
    its pairs (its ids repeat in the second half)."""
    units = features.shape[0]
    heads = 1 if n_heads is None else int(n_heads)
    if heads < 1 or units % heads:
        raise ValueError(f"n_heads={n_heads!r} is not allowed; allowed: a positive divisor of "
                         f"{units * (2 if pairs else 1)}")
    u = units // heads
    d = 2 * u if pairs else u
    _check_clusters(n_clusters, u, "n_clusters" if heads == 1 else "n_clusters (per head)",
                    "rotary pairs" if pairs else "channels")
    perms, ids, sizes = [], [], []
    offset = 0
    for h in range(heads):
        sl = slice(h * u, (h + 1) * u)
        labels = kmeans_labels(features[sl], n_clusters, seed=seed)
        r = order_from_labels(labels, fmax[sl], fmin[sl])
        perm, ids_new, sz = r.perm, r.ids_new, r.sizes
        if pairs:
            perm, ids_new, sz = np.concatenate([perm, perm + u]), np.concatenate([ids_new, ids_new]), 2 * sz
        perms.append(perm + h * d)
        ids.append(ids_new + offset)
        sizes.append(sz)
        offset += r.n_clusters
    return Reorder(np.concatenate(perms), np.concatenate(ids), np.concatenate(sizes))


def _group_envelope(a, kv_heads, head_dim, reduce):
    """Per-channel statistics of a tensor of heads * head_dim channels reduced over the query heads of each
    KV group: (kv_heads * head_dim,) (a K/V-side tensor of kv_heads heads passes through)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if a.size % (kv_heads * head_dim):
        raise ValueError(f"statistics of {a.size} channels do not split into {kv_heads} KV groups of heads of "
                         f"{head_dim}")
    return reduce(a.reshape(kv_heads, -1, head_dim), axis=1).reshape(-1)


def group_reorder(stats, n_clusters, *, kv_heads, head_dim, pairs=False, seed=0) -> Reorder:
    """A per-KV-head reorder shared by every query head of the group (grouped-query attention).

    stats: [(xmax, xmin), ...] per-channel statistics of the tensors the reorder serves, each of
    kv_heads * head_dim channels (K, V) or heads * head_dim (Q, the attention output): a query-side
    tensor is first reduced over the query heads of each group, max of the maxima and min of the
    minima (the range a channel takes in any head of the group, which the shared clusters must hold).
    Features per channel are then [max_1 .. max_n, min_1 .. min_n] over the n tensors (OPT's
    [q_max, k_max, q_min, k_min] when n = 2 and every group has one query head).

    ``pairs`` (R2 under RoPE): the unit clustered is the rotary pair (j, j + d/2) of each head, its
    features the concatenation of both channels' features ([features(j), features(j + d/2)]), its
    ordering key the max / min over both; the permutation of pairs is applied to both halves
    (``_cluster_heads``), so RoPE on the reordered layout is the reordered RoPE.
    """
    if not stats:
        raise ValueError("stats must name at least one tensor's (max, min)")
    if head_dim < 1 or (pairs and head_dim % 2):
        raise ValueError(f"head_dim={head_dim!r} is not allowed; allowed: a positive (even, with pairs) integer")
    maxes = [_group_envelope(hi, kv_heads, head_dim, np.max) for hi, _ in stats]
    mins = [_group_envelope(lo, kv_heads, head_dim, np.min) for _, lo in stats]
    features = np.stack(maxes + mins, axis=1)
    fmax = np.max(np.stack(maxes, axis=1), axis=1)
    fmin = np.min(np.stack(mins, axis=1), axis=1)
    if pairs:
        h = head_dim // 2
        first = (np.arange(kv_heads * head_dim) % head_dim) < h
        features = np.concatenate([features[first], features[~first]], axis=1)
        fmax = np.maximum(fmax[first], fmax[~first])
        fmin = np.minimum(fmin[first], fmin[~first])
    return _cluster_heads(features, fmax, fmin, n_clusters, n_heads=kv_heads, seed=seed, pairs=pairs)


def expand_to_group(r: Reorder, *, kv_heads: int, group: int) -> Reorder:
    """The per-KV-head reorder ``r`` repeated for every query head of its group (R2 -> R2q, R3 -> R3o):
    query head h = g * group + i takes KV head g's permutation (offset to its own head) and its cluster
    structure, with cluster ids numbered head after head as for any per-head reorder."""
    perm = np.asarray(r.perm, np.int64)
    ids = np.asarray(r.ids_new, np.int64)
    d = perm.size // kv_heads
    perms, out_ids, sizes = [], [], []
    offset = 0
    for g in range(kv_heads):
        sl = slice(g * d, (g + 1) * d)
        lo, hi = int(ids[sl].min()), int(ids[sl].max()) + 1
        for i in range(group):
            h = g * group + i
            perms.append(perm[sl] - g * d + h * d)
            out_ids.append(ids[sl] - lo + offset)
            sizes.append(np.asarray(r.sizes[lo:hi], np.int64))
            offset += hi - lo
    return Reorder(np.concatenate(perms), np.concatenate(out_ids), np.concatenate(sizes))


def cluster_minmax(xmin, xmax, ids, n_clusters):
    """Per-cluster (min of mins, max of maxes); ids give each channel's cluster (any layout)."""
    xmin = np.asarray(xmin, dtype=np.float64)
    xmax = np.asarray(xmax, dtype=np.float64)
    ids = np.asarray(ids, dtype=np.int64)
    lo = np.full(n_clusters, np.inf)
    hi = np.full(n_clusters, -np.inf)
    np.minimum.at(lo, ids, xmin)
    np.maximum.at(hi, ids, xmax)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError("a cluster has no channels")
    return lo, hi
