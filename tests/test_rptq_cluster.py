"""Clustering and permutations: convention new[j] = old[perm[j]], deterministic order, per head, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refsim.rptq.cluster import cluster_minmax, order_from_labels, reorder_index


@given(st.lists(st.integers(0, 4), min_size=1, max_size=30), st.integers(0, 2**31))
def test_order_from_labels_is_the_stated_order(labels, seed):
    labels = np.array(labels)
    rng = np.random.default_rng(seed)
    fmax = rng.integers(-5, 5, labels.size).astype(float)
    fmin = fmax - rng.integers(0, 3, labels.size)
    r = order_from_labels(labels, fmax, fmin)
    assert np.array_equal(np.sort(r.perm), np.arange(labels.size))
    # clusters contiguous after reordering, channels ascending within a cluster
    assert np.all(np.diff(r.ids_new) >= 0) and np.array_equal(np.bincount(r.ids_new), r.sizes)
    for c in range(r.n_clusters):
        ch = r.perm[r.ids_new == c]
        assert np.all(np.diff(ch) > 0) and np.unique(labels[ch]).size == 1
    # clusters ascending by (max of maxes, min of mins, lowest channel)
    keys = [(fmax[r.perm[r.ids_new == c]].max(), fmin[r.perm[r.ids_new == c]].min(), r.perm[r.ids_new == c][0])
            for c in range(r.n_clusters)]
    assert keys == sorted(keys)
    # logical ids: the same cluster on the original channel positions
    assert np.array_equal(r.ids_old[r.perm], r.ids_new)
    assert np.array_equal(r.perm[r.inverse], np.arange(labels.size))


def test_reorder_index_groups_channels_by_range_and_is_deterministic():
    rng = np.random.default_rng(0)
    scale = np.where(rng.random(64) < 0.1, 40.0, 1.0)  # a few outlier channels
    xmax = scale * (1 + 0.1 * rng.random(64))
    xmin = -scale * (1 + 0.1 * rng.random(64))
    r = reorder_index(xmax, xmin, 2, seed=0)
    outliers = np.nonzero(scale > 1)[0]
    assert np.array_equal(np.sort(r.perm[r.ids_new == 1]), outliers)  # the big-range cluster comes last
    again = reorder_index(xmax, xmin, 2, seed=0)
    assert np.array_equal(r.perm, again.perm) and np.array_equal(r.sizes, again.sizes)


@settings(max_examples=10)
@given(st.integers(1, 4), st.integers(1, 6), st.integers(1, 3), st.integers(0, 2**31))
def test_per_head_reorder_stays_within_heads(heads, d, clusters, seed):
    clusters = min(clusters, d)
    rng = np.random.default_rng(seed)
    qmax, kmax = rng.random(heads * d), rng.random(heads * d)
    r = reorder_index(qmax, -qmax, clusters, seed=0, n_heads=heads, joint=(kmax, -kmax))
    assert np.array_equal(r.perm // d, np.arange(heads * d) // d)
    for h in range(heads):
        ids = r.ids_new[h * d:(h + 1) * d]
        assert np.all(np.diff(ids) >= 0)
        if h:
            assert ids.min() > r.ids_new[h * d - 1]  # numbered head after head


def test_duplicate_channels_drop_empty_clusters():
    r = reorder_index(np.ones(6), np.zeros(6), 3)
    assert r.sizes.sum() == 6 and r.n_clusters >= 1


def test_cluster_minmax():
    lo, hi = cluster_minmax([0, -2, 1, -1], [1, 3, 2, 0], [0, 1, 0, 1], 2)
    assert np.array_equal(lo, [0, -2]) and np.array_equal(hi, [2, 3])


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="more than the 4 channels"):
        reorder_index(np.ones(4), np.zeros(4), 5)
    with pytest.raises(ValueError, match="per head"):
        reorder_index(np.arange(8.0), np.zeros(8), 5, n_heads=2)
    with pytest.raises(ValueError, match="n_heads"):
        reorder_index(np.arange(9.0), np.zeros(9), 2, n_heads=2)
    with pytest.raises(ValueError, match="finite"):
        reorder_index(np.array([1.0, np.nan]), np.zeros(2), 2)
    with pytest.raises(ValueError, match="n_clusters"):
        reorder_index(np.ones(4), np.zeros(4), 0)
