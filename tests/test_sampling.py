"""Balanced hierarchical sampling: exact sizes, caps, leaf strategies, the paper's rings toy."""

from __future__ import annotations

import numpy as np
import pytest

from sslcurate import (ClusterLevel, ClusterTree, CurationInputError, LevelConfig, hierarchical_kmeans,
                       hierarchical_sampling, water_fill)
from sslcurate.sampling import grouped_water_fill, row_keys


def test_water_fill_finds_the_largest_cap():
    sizes = np.array([5, 1, 10, 3, 100])
    alloc = water_fill(sizes, 20, seed=0)
    assert alloc.sum() == 20
    assert np.all(alloc <= sizes)
    # cap 5 takes 5+1+5+3+5 = 19: everything small taken whole, one extra to a cluster larger than the cap
    np.testing.assert_array_equal(alloc[[0, 1, 3]], [5, 1, 3])
    assert sorted(alloc[[2, 4]].tolist()) == [5, 6]


@pytest.mark.parametrize("target", [0, 1, 7, 50, 118, 119])
def test_water_fill_properties(target):
    """Sum equals the target; no item above its size; capped items differ by at most one."""
    rng = np.random.default_rng(target)
    sizes = rng.integers(0, 20, 12)
    target = min(target, int(sizes.sum()))
    alloc = water_fill(sizes, target, seed=target)
    assert alloc.sum() == target and np.all(alloc <= sizes) and np.all(alloc >= 0)
    capped = alloc < sizes
    if capped.any():
        assert alloc[capped].max() - alloc[capped].min() <= 1
        assert alloc[~capped].max(initial=0) <= alloc[capped].max()


def test_grouped_water_fill_matches_per_group():
    rng = np.random.default_rng(0)
    sizes = rng.integers(0, 30, 200)
    groups = rng.integers(0, 17, 200)
    totals = np.bincount(groups, weights=sizes, minlength=17).astype(int)
    quotas = (totals * rng.uniform(0, 1, 17)).astype(int)
    alloc = grouped_water_fill(sizes, groups, quotas, row_keys(np.arange(200), 5))
    np.testing.assert_array_equal(np.bincount(groups, weights=alloc, minlength=17).astype(int), quotas)
    for g in range(17):
        a, s = alloc[groups == g], sizes[groups == g]
        capped = a < s
        if capped.any():
            assert a[capped].max() - a[capped].min() <= 1


@pytest.fixture(scope="module")
def tree():
    x = np.random.default_rng(5).standard_normal((3000, 4)).astype(np.float32)
    x[:1500] *= 0.1  # a dense half
    return hierarchical_kmeans(x, [LevelConfig(60, 3, 10, n_iters=20), LevelConfig(12, 3, 2, n_iters=20)], seed=0)


@pytest.mark.parametrize("target", [1, 100, 1234, 3000])
def test_exact_target_size_and_caps(tree, target):
    idx = hierarchical_sampling(tree, target, seed=0)
    assert idx.size == target
    assert np.unique(idx).size == target  # multiplier 1: no repeats
    sizes = tree.point_counts(1)
    taken = np.bincount(tree.point_labels(1)[idx], minlength=sizes.size)
    assert np.all(taken <= sizes)


def test_multiplier_bounds_repeats(tree):
    """No cluster is sampled beyond size x multiplier; no point more than multiplier times."""
    idx = hierarchical_sampling(tree, 7000, multiplier=3, seed=0)
    assert idx.size == 7000
    assert np.bincount(idx).max() <= 3
    sizes = tree.point_counts(1)
    taken = np.bincount(tree.point_labels(1)[idx], minlength=sizes.size)
    assert np.all(taken <= 3 * sizes)


def test_target_larger_than_pool(tree):
    with pytest.raises(CurationInputError, match="larger than the pool"):
        hierarchical_sampling(tree, 3001)
    idx = hierarchical_sampling(tree, 5000, clamp=True)
    assert idx.size == 3000


def test_leaf_strategies_pick_by_distance():
    """closest takes the points nearest the centroid, furthest the farthest ones."""
    centroids = np.zeros((1, 1), dtype=np.float32)
    level = ClusterLevel(centroids, np.zeros(6, dtype=np.int64), np.array([5., 1., 4., 0., 3., 2.], dtype=np.float32))
    tree = ClusterTree([level], 6)
    np.testing.assert_array_equal(tree.levels[0].members(0), [3, 1, 5, 4, 2, 0])  # closest first
    np.testing.assert_array_equal(hierarchical_sampling(tree, 2, strategy="closest"), [1, 3])
    np.testing.assert_array_equal(hierarchical_sampling(tree, 2, strategy="furthest"), [0, 2])
    assert hierarchical_sampling(tree, 2, strategy="random", seed=0).size == 2


def test_same_seed_same_subset(tree):
    a = hierarchical_sampling(tree, 500, seed=11)
    np.testing.assert_array_equal(a, hierarchical_sampling(tree, 500, seed=11))
    assert not np.array_equal(a, hierarchical_sampling(tree, 500, seed=12))


def test_rings_toy_is_balanced(rings):
    """The paper's toy: 2 levels [1000, 300], r = [15, 2], target 1000 gives near-balanced rings, random does not."""
    x, ring = rings
    tree = hierarchical_kmeans(x, [LevelConfig(1000, 10, 15), LevelConfig(300, 10, 2)], seed=0)
    idx = hierarchical_sampling(tree, 1000, seed=0)
    curated = np.bincount(ring[idx], minlength=5)
    random = np.bincount(ring[np.random.default_rng(0).choice(len(x), 1000, replace=False)], minlength=5)
    assert curated.sum() == 1000
    # Ideal is 200 per ring; the smallest ring (200 points) is capped by its size.
    assert curated.min() >= 100 and curated.max() <= 350, curated
    assert random.max() >= 600 and random.min() <= 10, random
