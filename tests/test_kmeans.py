"""k-means properties on seeded synthetic data, checked against faiss and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_blobs
from sslcurate import CurationInputError, kmeans
from sslcurate.kmeans import assign_source, init_costs, kmeans_plusplus, resolve_init, sample_per_cluster
from sslcurate.sources import ShardedNpySource

faiss = pytest.importorskip("faiss")


def brute_force_assign(x, c):
    d = ((x[:, None, :].astype(np.float64) - c[None, :, :]) ** 2).sum(-1)
    return d.argmin(1), d.min(1)


def test_objective_within_2_percent_of_faiss(rng):
    """Our k-means reaches faiss.Kmeans' objective (within 2%) on the same data, k and iteration count."""
    x = make_blobs(rng, n=20000, d=32, centers=60)
    ours = kmeans(x, 100, n_iters=20, seed=0)
    ref = faiss.Kmeans(32, 100, niter=20, seed=0)
    ref.train(x)
    ref_obj = float(ref.index.search(x, 1)[0].astype(np.float64).sum())
    assert ours.objective <= 1.02 * ref_obj


def test_result_is_consistent(rng):
    """Assignments are the nearest centroids; distances and objective match a float64 brute force."""
    x = make_blobs(rng, n=3000, d=8)
    res = kmeans(x, 25, n_iters=10, seed=3)
    idx, dist = brute_force_assign(x, res.centroids)
    assert (res.assignments == idx).mean() > 0.999
    np.testing.assert_allclose(res.distances, dist, rtol=1e-3, atol=1e-3)
    assert res.objective == pytest.approx(dist.sum(), rel=1e-4)
    assert res.centroids.shape == (25, 8) and res.assignments.dtype == np.int64


def test_same_seed_same_result_and_seed_matters(rng):
    x = make_blobs(rng, n=2000)
    a, b = kmeans(x, 30, n_iters=5, seed=7), kmeans(x, 30, n_iters=5, seed=7)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(a.assignments, b.assignments)
    c = kmeans(x, 30, n_iters=5, seed=8)
    assert not np.array_equal(a.centroids, c.centroids)


def test_generator_argument_is_used(rng):
    x = make_blobs(rng, n=1000)
    a = kmeans(x, 10, n_iters=3, seed=np.random.default_rng(5))
    b = kmeans(x, 10, n_iters=3, seed=np.random.default_rng(5))
    np.testing.assert_array_equal(a.centroids, b.centroids)


def test_objective_never_increases(rng):
    """Lloyd iterations are monotone in the objective."""
    x = make_blobs(rng, n=3000)
    res = kmeans(x, 40, n_iters=15, seed=0)
    h = np.array(res.history)
    assert np.all(np.diff(h) <= 1e-6 * h[:-1])


def test_kmeanspp_beats_random_init(rng):
    """On a well-separated mixture, k-means++ seeding lands closer to the optimum than uniform seeding."""
    x = make_blobs(rng, n=5000, d=8, centers=50, spread=20.0)
    pp = np.mean([kmeans(x, 50, n_iters=0, init="k-means++", seed=s).objective for s in range(3)])
    rand = np.mean([kmeans(x, 50, n_iters=0, init="random", seed=s).objective for s in range(3)])
    assert pp < 0.7 * rand


def test_kmeans_parallel_init_matches_kmeanspp_seeding(rng):
    """k-means|| (a few passes, then k-means++ over weighted candidates) seeds about as well as k-means++ and far
    better than uniform seeding, deterministically, in memory or streamed from a file in small chunks."""
    x = make_blobs(rng, n=6000, d=8, centers=60, spread=20.0)
    par = [kmeans(x, 60, n_iters=0, init="k-means||", seed=s).objective for s in range(3)]
    pp = [kmeans(x, 60, n_iters=0, init="k-means++", seed=s, init_sample_size=6000).objective for s in range(3)]
    rand = [kmeans(x, 60, n_iters=0, init="random", seed=s).objective for s in range(3)]
    assert np.mean(par) < 1.1 * np.mean(pp) and np.mean(par) < 0.7 * np.mean(rand)
    a = kmeans(x, 60, n_iters=2, init="k-means||", seed=4)
    b = kmeans(x, 60, n_iters=2, init="k-means||", seed=4, chunk_rows=777)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert not np.array_equal(a.centroids, kmeans(x, 60, n_iters=2, init="k-means||", seed=5).centroids)


def test_auto_init_picks_kmeans_parallel_only_where_kmeanspp_would_dominate(rng):
    """init="auto" is k-means++ unless its modelled cost exceeds the Lloyd iterations and k-means|| is cheaper;
    kmeans() then runs exactly what resolve_init names."""
    assert resolve_init("auto", 1_000_000, 10_000, 10) == "k-means||"   # 400k-row sample, 11 trials per centre
    assert resolve_init("auto", 1_000_000, 10_000, 50) == "k-means++"   # the same steps, 5x more Lloyd after
    assert resolve_init("auto", 1_000_000, 1000, 10) == "k-means++"     # 40k-row sample
    # k-means++ on every row costs KPP_STEP_COST x (2 + floor(ln k)) passes: 8 x 6 = 48 up to k = 148, 8 x 7 = 56
    # from k = 149 (ln k >= 5): the default 50 iterations outweigh it below that.
    assert resolve_init("auto", 10 ** 8, 148, 50, init_sample_size=10 ** 8) == "k-means++"
    assert resolve_init("auto", 10 ** 8, 149, 50, init_sample_size=10 ** 8) == "k-means||"
    assert resolve_init("auto", 1_000_000, 10_000, 10, init_sample_size=50_000) == "k-means++"
    assert resolve_init("k-means++", 1_000_000, 10_000, 10) == "k-means++"
    assert resolve_init("random", 100, 10, 0) == "random"
    # No Lloyd iteration at all: k-means++ on its 40k-row sample (~1 pass) still costs less than k-means|| (5+).
    cost = init_costs(1_000_000, 1000)
    assert 0 < cost["k-means++"] < cost["k-means||"] and resolve_init("auto", 1_000_000, 1000, 0) == "k-means++"
    x = make_blobs(rng, n=3000, d=8, centers=40)
    assert resolve_init("auto", 3000, 40, 2) == "k-means||"
    auto = kmeans(x, 40, n_iters=2, seed=3)
    np.testing.assert_array_equal(auto.centroids, kmeans(x, 40, n_iters=2, seed=3, init="k-means||").centroids)
    assert resolve_init("auto", 3000, 40, 50) == "k-means++"
    auto = kmeans(x, 40, n_iters=50, seed=3)
    np.testing.assert_array_equal(auto.centroids, kmeans(x, 40, n_iters=50, seed=3, init="k-means++").centroids)


def test_weighted_kmeanspp_never_picks_weightless_rows(rng):
    """Weights act as multiplicities: a row of weight 0 is never drawn while weighted rows remain."""
    x = torch.from_numpy(make_blobs(rng, n=400, d=4, centers=8))
    w = torch.zeros(400)
    w[::4] = torch.arange(1, 101, dtype=torch.float32)
    c = kmeans_plusplus(x, 20, np.random.default_rng(1), weights=w).numpy()
    allowed = {tuple(r) for r in x.numpy()[::4]}
    assert all(tuple(r) in allowed for r in c)
    with pytest.raises(CurationInputError, match="weights"):
        kmeans_plusplus(x, 5, np.random.default_rng(1), weights=-w)


def test_kmeanspp_picks_distinct_points_with_duplicates():
    x = np.repeat(np.eye(4, dtype=np.float32), 50, axis=0)  # only 4 distinct points
    c = kmeans_plusplus(torch.from_numpy(x), 4, np.random.default_rng(0))
    assert len({tuple(r) for r in c.numpy()}) == 4


def test_chunking_does_not_change_the_result(rng):
    """Memory-bounded chunked passes give the same clustering as one big chunk."""
    x = make_blobs(rng, n=3000)
    a = kmeans(x, 20, n_iters=5, seed=1, chunk_rows=100_000)
    b = kmeans(x, 20, n_iters=5, seed=1, chunk_rows=257)
    np.testing.assert_allclose(a.centroids, b.centroids, rtol=1e-4, atol=1e-4)
    assert (a.assignments == b.assignments).mean() > 0.999


def test_memmap_and_shards_match_in_memory(rng, tmp_path):
    x = make_blobs(rng, n=2000)
    np.save(tmp_path / "all.npy", x)
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    for i, part in enumerate(np.array_split(x, 3)):
        np.save(shard_dir / f"part{i:03d}.npy", part)
    ref = kmeans(x, 15, n_iters=4, seed=2)
    for src in (tmp_path / "all.npy", shard_dir, ShardedNpySource(shard_dir)):
        res = kmeans(src, 15, n_iters=4, seed=2, chunk_rows=300)
        np.testing.assert_allclose(res.centroids, ref.centroids, rtol=1e-4, atol=1e-4)


def test_cosine_metric_normalises(rng):
    x = make_blobs(rng, n=2000) * rng.uniform(0.1, 10, (2000, 1)).astype(np.float32)
    res = kmeans(x, 10, n_iters=5, seed=0, metric="cosine")
    np.testing.assert_allclose(np.linalg.norm(res.centroids, axis=1), 1.0, rtol=1e-5)
    assert res.distances.max() <= 4.0 + 1e-5


def test_faiss_backend_matches_torch_backend(rng):
    x = make_blobs(rng, n=3000)
    a = kmeans(x, 20, n_iters=5, seed=4, backend="torch")
    b = kmeans(x, 20, n_iters=5, seed=4, backend="faiss")
    assert (a.assignments == b.assignments).mean() > 0.999
    assert a.objective == pytest.approx(b.objective, rel=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_iteration_gives_cluster_means(rng, dtype):
    """After one Lloyd step from given centroids, each centroid is the mean of the points assigned to it."""
    x = make_blobs(rng, n=2000) + 50.0  # an offset, so sums are large compared with the spread
    init = x[:10].copy()
    res = kmeans(x, 10, n_iters=1, init_centroids=init, accumulate_dtype=dtype, chunk_rows=128)
    idx, _ = brute_force_assign(x, init)
    for j in range(10):
        np.testing.assert_allclose(res.centroids[j], x[idx == j].astype(np.float64).mean(0),
                                   rtol=0, atol=2e-3)


def test_empty_cluster_policies():
    """An initial centroid far from all data gets no points: keep it, re-seed it, or fail, as asked."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 2)).astype(np.float32)
    init = np.array([[0, 0], [1, 1], [-1, -1], [1000, 1000]], dtype=np.float32)
    kept = kmeans(x, 4, n_iters=3, init_centroids=init, empty_cluster="keep")
    np.testing.assert_array_equal(kept.centroids[3], init[3])
    assert kept.n_empty_clusters == 1
    reseeded = kmeans(x, 4, n_iters=3, init_centroids=init, empty_cluster="farthest")
    assert np.abs(reseeded.centroids[3]).max() < 100
    assert np.bincount(reseeded.assignments, minlength=4).min() > 0
    with pytest.raises(CurationInputError, match="empty cluster"):
        kmeans(x, 4, n_iters=3, init_centroids=init, empty_cluster="error")


def test_tolerance_stops_early(rng):
    x = make_blobs(rng, n=2000)
    res = kmeans(x, 10, n_iters=200, seed=0, tol=1e-4)
    assert res.n_iters < 200


@pytest.mark.parametrize("k", [0, -1, 2001])
def test_bad_k(rng, k):
    x = make_blobs(rng, n=2000)
    with pytest.raises(CurationInputError, match="number of clusters"):
        kmeans(x, k)


def test_assign_source_matches_brute_force(rng):
    x = make_blobs(rng, n=1500)
    c = x[rng.choice(1500, 37, replace=False)]
    idx, dist = assign_source(x, c, chunk_rows=100)
    ref_idx, ref_dist = brute_force_assign(x, c)
    assert (idx == ref_idx).mean() > 0.999
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-3, atol=1e-3)


def test_sample_per_cluster_closest_and_random():
    assignments = np.array([0, 0, 0, 1, 1, 2])
    distances = np.array([3.0, 1.0, 2.0, 5.0, 4.0, 0.0])
    np.testing.assert_array_equal(
        sample_per_cluster(assignments, distances, 3, 2, "closest", np.random.default_rng(0)), [1, 2, 3, 4, 5])
    picked = sample_per_cluster(assignments, distances, 3, 1, "random", np.random.default_rng(0))
    assert sorted(assignments[picked]) == [0, 1, 2]


def test_keywords_build_the_settings(rng):
    """kmeans()'s keyword arguments are KMeansSettings fields over its defaults: the same run as passing the
    settings, an unknown keyword is refused, and a bad value fails the settings' own check."""
    from sslcurate import KMeansSettings

    x = make_blobs(rng, n=800)
    a = kmeans(x, 12, n_iters=3, seed=2, backend="torch", chunk_rows=300)
    b = kmeans(x, 12, n_iters=3, seed=2, settings=KMeansSettings(backend="torch", chunk_rows=300))
    c = kmeans(x, 12, n_iters=3, seed=2, settings=KMeansSettings(backend="faiss"), backend="torch", chunk_rows=300)
    for other in (b, c):
        np.testing.assert_array_equal(a.centroids, other.centroids)
    with pytest.raises(TypeError, match="n_clustres"):
        kmeans(x, 12, n_clustres=3)
    with pytest.raises(CurationInputError, match="kmeans.init"):
        kmeans(x, 12, init="kmeans++")
    resolved = KMeansSettings().resolved("cpu", 128, 1000)
    assert "auto" not in (resolved.backend, resolved.precision) and resolved.resolved("cpu", 128, 1000) == resolved
