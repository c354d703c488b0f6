"""The two-stage level-1 split (coarse k-means, each coarse cluster split into its share of k)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_blobs
from sslcurate import CurationConfig, CurationInputError, LevelConfig, hierarchical_kmeans, kmeans
from sslcurate.kmeans import split_kmeans, split_shares


def test_split_shares_exact_total_bounded_and_proportional():
    """Shares sum to k exactly, every non-empty cluster gets 1..size, empty ones 0, and each share is within 1
    of its proportional value (or at a bound)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = int(rng.integers(1, 40))
        sizes = rng.integers(0, 50, m) * (rng.random(m) < 0.9)
        total, nonempty = int(sizes.sum()), int((sizes > 0).sum())
        if total == 0:
            continue
        k = int(rng.integers(nonempty, total + 1))
        share = split_shares(sizes, k)
        assert share.sum() == k
        assert np.all(share[sizes == 0] == 0) and np.all((share[sizes > 0] >= 1) & (share <= sizes)[sizes > 0])
        exact = k * sizes / total
        free = (share > 1) & (share < sizes)
        assert np.all(np.abs(share - exact)[free] < 1 + 1e-9)
    with pytest.raises(CurationInputError, match="cannot split"):
        split_shares(np.array([3, 4, 5]), 2)


@pytest.fixture(scope="module")
def blobs():
    return make_blobs(np.random.default_rng(3), n=6000, d=12, centers=30)


def test_split_kmeans_assigns_every_point_inside_its_coarse_cluster(blobs):
    """Exactly k clusters, every point assigned to a fine cluster with a finite distance, and the fine clusters of
    one coarse cluster hold only that coarse cluster's points."""
    res = split_kmeans(blobs, 120, split=10, seed=0, n_iters=10)
    assert res.centroids.shape == (120, 12)
    assert res.assignments.shape == (6000,) and res.assignments.min() >= 0 and res.assignments.max() < 120
    assert np.all(np.isfinite(res.distances))
    recomputed = ((blobs - res.centroids[res.assignments]) ** 2).sum(1)
    np.testing.assert_allclose(res.distances, recomputed, rtol=1e-3, atol=1e-3)
    assert res.objective == pytest.approx(float(res.distances.astype(np.float64).sum()), rel=1e-9)


def test_split_kmeans_is_deterministic(blobs):
    a = split_kmeans(blobs, 120, split=10, seed=7, n_iters=8)
    b = split_kmeans(blobs, 120, split=10, seed=7, n_iters=8)
    np.testing.assert_array_equal(a.assignments, b.assignments)
    np.testing.assert_array_equal(a.centroids, b.centroids)


def test_split_objective_close_to_plain_kmeans(blobs):
    """The split trades a little objective for a k / split cheaper assignment: within 15% of plain k-means."""
    split = split_kmeans(blobs, 120, split=10, seed=1, n_iters=20)
    plain = kmeans(blobs, 120, seed=1, n_iters=20)
    assert split.objective <= 1.15 * plain.objective


def test_split_level_in_hierarchy_and_config(blobs):
    """``split`` is a level setting, accepted by the curation config (and so by Hydra's schema)."""
    cfg = CurationConfig(levels=[{"n_clusters": 100, "resampling_steps": 1, "sample_size": 20, "split": 10,
                                  "n_iters": 5}, {"n_clusters": 10, "resampling_steps": 0}], target_size=500)
    assert cfg.levels[0].split == 10
    tree = hierarchical_kmeans(blobs, cfg.levels, seed=0)
    assert tree.levels[0].n_clusters == 100 and tree.point_counts(1).sum() == 6000
    with pytest.raises(CurationInputError, match="split"):
        LevelConfig(100, split=1)
